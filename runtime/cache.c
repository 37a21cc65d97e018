/* cache.c: keys (XXH3-128), and CUBIN entries on disk behind a checked header, written
** through a temporary file and rename() so that readers never see a partial entry. */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#define XXH_INLINE_ALL /* header-only: nothing to link */
#include <xxhash.h>

/* Entry layout, little-endian:
**   0  magic "PATCUBIN"      8 bytes
**   8  format version        u32
**  12  arch                  u32
**  16  payload size          u64
**  24  XXH3-64 of payload    u64
**  32  key                   32 hex digits
**  64  payload */
#define MAGIC "PATCUBIN"
#define FORMAT_VERSION 1u
#define HEADER_SIZE 64
#define PATH_MAX_LEN 4096

static void put_u32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static uint64_t get_u64(const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* Formats "cache: <what> <path>: <strerror(errnum)>" into err. */
static void io_error(char *err, size_t errlen, const char *what, const char *path, int errnum)
{
  char buf[128];
  if (!err || !errlen)
    return;
  const char *msg = strerror_r(errnum, buf, sizeof buf);
  snprintf(err, errlen, "cache: %s %s: %s", what, path, msg);
}

/* --- keys --- */

/* Feeds a length-prefixed string (NULL counts as ""). */
static void hash_str(XXH3_state_t *st, const char *s)
{
  unsigned char len[8];
  size_t n = s ? strlen(s) : 0;
  put_u64(len, (uint64_t)n);
  XXH3_128bits_update(st, len, sizeof len);
  if (n)
    XXH3_128bits_update(st, s, n);
}

static void hash_int(XXH3_state_t *st, int64_t v)
{
  unsigned char b[8];
  put_u64(b, (uint64_t)v);
  XXH3_128bits_update(st, b, sizeof b);
}

int pat_cache_key(const pat_cache_key_input *in, char key[PAT_CACHE_KEY_LEN + 1])
{
  if (key)
    key[0] = '\0';
  if (!in || !key || in->num_headers < 0 ||
      (in->num_headers && (!in->header_names || !in->header_sources)))
    return -1;
  XXH3_state_t *st = XXH3_createState();
  if (!st || XXH3_128bits_reset(st) != XXH_OK) {
    XXH3_freeState(st);
    return -1;
  }
  hash_str(st, "pat cache key 1");  /* bump when the key's recipe changes */
  hash_str(st, in->pat_version ? in->pat_version : PAT_VERSION);
  hash_str(st, in->source);
  hash_int(st, in->num_headers);
  for (int i = 0; i < in->num_headers; i++) {
    hash_str(st, in->header_names[i]);
    hash_str(st, in->header_sources[i]);
  }
  hash_str(st, in->options);
  hash_int(st, in->nvrtc_major);
  hash_int(st, in->nvrtc_minor);
  hash_int(st, in->arch);
  XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);

  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < sizeof c.digest; i++) {
    key[2 * i] = hex[c.digest[i] >> 4];
    key[2 * i + 1] = hex[c.digest[i] & 15];
  }
  key[PAT_CACHE_KEY_LEN] = '\0';
  return 0;
}

int pat_cache_dir_default(char *buf, size_t n)
{
  const char *v;
  int len;
  if (!buf || !n)
    return -1;
  buf[0] = '\0';
  if ((v = getenv("PAT_CACHE_DIR")) && *v)
    len = snprintf(buf, n, "%s", v);
  else if ((v = getenv("XDG_CACHE_HOME")) && v[0] == '/')
    len = snprintf(buf, n, "%s/pat", v);
  else if ((v = getenv("HOME")) && *v)
    len = snprintf(buf, n, "%s/.cache/pat", v);
  else
    return -1;
  if (len < 0 || (size_t)len >= n) {
    buf[0] = '\0';
    return -1;
  }
  return 0;
}

/* --- paths --- */

static int valid_key(const char *key)
{
  if (!key)
    return 0;
  for (int i = 0; i < PAT_CACHE_KEY_LEN; i++)
    if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
      return 0;
  return key[PAT_CACHE_KEY_LEN] == '\0';
}

/* DIR/<ver>/sm_XX into buf; 0, or -1 if it does not fit. */
static int entry_dir(const char *dir, int arch, char *buf, size_t n)
{
  int len = snprintf(buf, n, "%s/%s/sm_%d", dir, PAT_VERSION, arch);
  return len < 0 || (size_t)len >= n ? -1 : 0;
}

int pat_cache_path(const char *dir, int arch, const char *key, char *buf, size_t n)
{
  if (!dir || !buf || !n || arch <= 0 || !valid_key(key))
    return -1;
  int len = snprintf(buf, n, "%s/%s/sm_%d/%s.cubin", dir, PAT_VERSION, arch, key);
  return len < 0 || (size_t)len >= n ? -1 : 0;
}

/* mkdir -p path with mode 0755; 0, or -1 with a message. Racing creators are fine. */
static int make_dirs(const char *path, char *err, size_t errlen)
{
  char buf[PATH_MAX_LEN];
  size_t n = strlen(path);
  if (n >= sizeof buf) {
    io_error(err, errlen, "create directory", path, ENAMETOOLONG);
    return -1;
  }
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0')
      continue;
    if (buf[i - 1] == '/')
      continue;  /* "a//b" */
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
      int e = errno;
      io_error(err, errlen, "create directory", buf, e);
      return -1;
    }
    buf[i] = c;
  }
  struct stat sb;
  if (stat(path, &sb) != 0) {
    int e = errno;
    io_error(err, errlen, "create directory", path, e);
    return -1;
  }
  if (!S_ISDIR(sb.st_mode)) {
    io_error(err, errlen, "create directory", path, ENOTDIR);
    return -1;
  }
  return 0;
}

/* --- load --- */

/* Reads exactly n bytes; returns the count read (short only at end of file), or -1. */
static ssize_t read_full(int fd, void *buf, size_t n)
{
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    if (r == 0)
      break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* Deletes a bad entry, unless another process has already replaced it with a new file. */
static void remove_bad_entry(const char *path, const struct stat *bad)
{
  struct stat now;
  if (stat(path, &now) == 0 && now.st_dev == bad->st_dev && now.st_ino == bad->st_ino)
    unlink(path);
}

int pat_cache_load(const char *dir, int arch, const char *key, void **data, size_t *size,
                   char *err, size_t errlen)
{
  char path[PATH_MAX_LEN];
  unsigned char hdr[HEADER_SIZE];
  unsigned char *payload = NULL;
  struct stat sb;
  int fd;

  if (data)
    *data = NULL;
  if (size)
    *size = 0;
  if (!data || !size || pat_cache_path(dir, arch, key, path, sizeof path)) {
    if (err && errlen)
      snprintf(err, errlen, "cache: invalid load arguments (dir, arch %d, key or path length)",
               arch);
    return -1;
  }

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      return 1;
    io_error(err, errlen, "open", path, errno);
    return -1;
  }
  if (fstat(fd, &sb) != 0) {
    io_error(err, errlen, "stat", path, errno);
    close(fd);
    return -1;
  }
  if (!S_ISREG(sb.st_mode)) {
    io_error(err, errlen, "open", path, EISDIR);
    close(fd);
    return -1;
  }

  ssize_t got = read_full(fd, hdr, sizeof hdr);
  if (got < 0) {
    io_error(err, errlen, "read", path, errno);
    close(fd);
    return -1;
  }
  uint64_t psize = got == HEADER_SIZE ? get_u64(hdr + 16) : 0;
  if (got != HEADER_SIZE || memcmp(hdr, MAGIC, 8) != 0 || get_u32(hdr + 8) != FORMAT_VERSION ||
      get_u32(hdr + 12) != (uint32_t)arch || memcmp(hdr + 32, key, PAT_CACHE_KEY_LEN) != 0 ||
      (uint64_t)sb.st_size < HEADER_SIZE || psize != (uint64_t)sb.st_size - HEADER_SIZE ||
      psize > SIZE_MAX - 1)
    goto corrupt;

  payload = malloc(psize ? (size_t)psize : 1);
  if (!payload) {
    io_error(err, errlen, "read (out of memory)", path, ENOMEM);
    close(fd);
    return -1;
  }
  got = read_full(fd, payload, (size_t)psize);
  if (got < 0) {
    io_error(err, errlen, "read", path, errno);
    free(payload);
    close(fd);
    return -1;
  }
  /* An entry is never changed after its rename, so a short read or a checksum mismatch is
  ** damage, never a write in progress. */
  if ((uint64_t)got != psize || XXH3_64bits(payload, (size_t)psize) != get_u64(hdr + 24))
    goto corrupt;
  close(fd);
  *data = payload;
  *size = (size_t)psize;
  return 0;

corrupt:
  free(payload);
  close(fd);
  remove_bad_entry(path, &sb);
  return 1;
}

/* --- store --- */

static int write_full(int fd, const void *buf, size_t n)
{
  size_t put = 0;
  while (put < n) {
    ssize_t w = write(fd, (const char *)buf + put, n - put);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -1;
    put += (size_t)w;
  }
  return 0;
}

int pat_cache_store(const char *dir, int arch, const char *key, const void *data, size_t size,
                    char *err, size_t errlen)
{
  char ddir[PATH_MAX_LEN], path[PATH_MAX_LEN], tmp[PATH_MAX_LEN];
  unsigned char hdr[HEADER_SIZE];

  if ((!data && size) || pat_cache_path(dir, arch, key, path, sizeof path) ||
      entry_dir(dir, arch, ddir, sizeof ddir)) {
    if (err && errlen)
      snprintf(err, errlen, "cache: invalid store arguments (dir, arch %d, key or path length)",
               arch);
    return -1;
  }
  int len = snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld.XXXXXX", ddir, key, (long)getpid());
  if (len < 0 || (size_t)len >= sizeof tmp) {
    io_error(err, errlen, "create temporary file in", ddir, ENAMETOOLONG);
    return -1;
  }
  if (make_dirs(ddir, err, errlen))
    return -1;

  memcpy(hdr, MAGIC, 8);
  put_u32(hdr + 8, FORMAT_VERSION);
  put_u32(hdr + 12, (uint32_t)arch);
  put_u64(hdr + 16, (uint64_t)size);
  put_u64(hdr + 24, XXH3_64bits(data, size));
  memcpy(hdr + 32, key, PAT_CACHE_KEY_LEN);

  /* mkstemp's suffix makes the name unique among threads and processes alike. */
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    io_error(err, errlen, "create temporary file", tmp, errno);
    return -1;
  }
  const char *what = NULL;
  if (fchmod(fd, 0644) != 0)
    what = "chmod";
  else if (write_full(fd, hdr, sizeof hdr) || (size && write_full(fd, data, size)))
    what = "write";
  else if (fsync(fd) != 0)
    what = "fsync";
  if (what) {
    int e = errno;
    close(fd);
    unlink(tmp);
    io_error(err, errlen, what, tmp, e);
    return -1;
  }
  if (close(fd) != 0) {
    int e = errno;
    unlink(tmp);
    io_error(err, errlen, "close", tmp, e);
    return -1;
  }
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    io_error(err, errlen, "rename to", path, e);
    return -1;
  }
  /* Make the rename itself durable; a failure here loses at most a cache entry. */
  int dfd = open(ddir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return 0;
}
