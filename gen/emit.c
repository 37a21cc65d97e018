/* emit.c: the AOT output: kernel sources and a manifest, written only where they changed so
** that make and diff see real changes only. */
#include "emit.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tile.h"

int pat_mkdirs(const char *path)
{
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0755) && errno != EEXIST) return -1;
  return 0;
}

/* 1 if the file at path holds exactly text. */
static int same_content(const char *path, const char *text, size_t n)
{
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  int same = 1;
  char buf[8192];
  size_t at = 0, got;
  while (same && (got = fread(buf, 1, sizeof buf, f)) > 0) {
    if (at + got > n || memcmp(buf, text + at, got)) same = 0;
    at += got;
  }
  fclose(f);
  return same && at == n;
}

/* Writes via a temporary file and rename(), so a reader never sees half a file. */
static int write_if_different(const char *path, const char *text, int *written, char *err,
                              size_t errlen)
{
  size_t n = strlen(text);
  if (same_content(path, text, n)) return 0;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
    return -1;
  }
  const int wrote = fwrite(text, 1, n, f) == n;
  const int saved = errno;
  if (fclose(f) || !wrote) {  /* closed either way: a failed write no longer leaks the FILE */
    snprintf(err, errlen, "%s: %s", tmp, strerror(wrote ? errno : saved));
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, path)) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  (*written)++;
  return 0;
}

char *pat_manifest_text(const pat_spec *spec, const pat_kernel_set *set)
{
  size_t cap = 256 + (size_t)set->count * 400, at = 0;
  char *buf = malloc(cap);
  if (!buf) return NULL;
  at += (size_t)snprintf(buf + at, cap - at,
                         "# kernel\tfile\ttile\tm\tn\twarps\tstages\twarp_rows\tgqa\tthreads\tsmem_bytes\n");
  for (int i = 0; i < set->count; i++) {
    const pat_kernel_src *k = &set->kernels[i];
    const pat_tile *t = k->tile >= 0 ? &spec->tiles[k->tile] : NULL;
    at += (size_t)snprintf(buf + at, cap - at, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n",
                           k->name, k->file, k->tile, t ? t->m : 0, t ? t->n : 0, t ? t->warps : 0,
                           t ? t->stages : 0, t ? pat_tile_warp_rows(t) : 0, k->gqa, k->threads,
                           k->smem_bytes);
  }
  return buf;
}

/* 1 if name is one of the set's files or the manifest. */
static int belongs(const pat_kernel_set *set, const char *name)
{
  for (int i = 0; i < set->count; i++)
    if (strcmp(set->kernels[i].file, name) == 0) return 1;
  return 0;
}

int pat_emit_dir(const pat_spec *spec, const pat_kernel_set *set, const char *dir, int *written,
                 char *err, size_t errlen)
{
  *written = 0;
  if (pat_mkdirs(dir)) {
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    return -1;
  }
  char path[4096];
  for (int i = 0; i < set->count; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, set->kernels[i].file);
    if (write_if_different(path, set->kernels[i].source, written, err, errlen)) return -1;
  }
  char *manifest = pat_manifest_text(spec, set);
  if (!manifest) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  int rc = write_if_different(path, manifest, written, err, errlen);
  free(manifest);
  if (rc) return -1;
  /* Kernels of tiles no longer in the spec would otherwise linger. */
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len > 3 && strcmp(e->d_name + len - 3, ".cu") == 0 && !belongs(set, e->d_name)) {
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
  }
  closedir(d);
  return 0;
}
