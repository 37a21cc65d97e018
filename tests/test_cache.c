/* test_cache.c: the on-disk kernel cache: keys, round trips, damaged entries, and many
** processes storing the same key at once. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"

#define KEY_A "0123456789abcdef0123456789abcdef"
#define KEY_B "fedcba9876543210fedcba9876543210"

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static void make_tmpdir(void)
{
  snprintf(tmpdir, sizeof tmpdir, "/tmp/pat-cache-test-XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
  nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void entry_path(int arch, const char *key, char *buf, size_t n)
{
  cr_assert_eq(pat_cache_path(tmpdir, arch, key, buf, n), 0);
}

static off_t file_size(const char *path)
{
  struct stat sb;
  return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* Overwrites one byte of a file. */
static void poke(const char *path, off_t at, unsigned char v)
{
  FILE *f = fopen(path, "r+b");
  cr_assert_not_null(f);
  cr_assert_eq(fseeko(f, at, SEEK_SET), 0);
  cr_assert_eq(fputc(v, f), v);
  cr_assert_eq(fclose(f), 0);
}

static int peek(const char *path, off_t at)
{
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f);
  cr_assert_eq(fseeko(f, at, SEEK_SET), 0);
  int c = fgetc(f);
  fclose(f);
  return c;
}

/* Stores a 1000-byte payload under KEY_A for sm_90 and returns the entry's path. */
static void store_sample(char *path, size_t n)
{
  unsigned char payload[1000];
  char err[256] = "";
  for (size_t i = 0; i < sizeof payload; i++)
    payload[i] = (unsigned char)(i * 7 + 3);
  cr_assert_eq(pat_cache_store(tmpdir, 90, KEY_A, payload, sizeof payload, err, sizeof err), 0,
               "%s", err);
  entry_path(90, KEY_A, path, n);
}

/* Loads KEY_A for sm_90 and expects a miss that removed the file. */
static void expect_rebuilt(const char *path)
{
  void *data = (void *)1;
  size_t size = 99;
  char err[256] = "";
  cr_assert_eq(pat_cache_load(tmpdir, 90, KEY_A, &data, &size, err, sizeof err), 1, "%s", err);
  cr_assert_null(data);
  cr_assert_eq(size, 0);
  cr_assert_eq(access(path, F_OK), -1, "a damaged entry must be deleted");
}

TestSuite(cache, .init = make_tmpdir, .fini = remove_tmpdir);

Test(cache, round_trip)
{
  char err[256] = "", path[512];
  void *data = NULL;
  size_t size = 0;
  cr_assert_eq(pat_cache_load(tmpdir, 90, KEY_A, &data, &size, err, sizeof err), 1, "%s", err);

  const char msg[] = "\177ELF and then some bytes";
  cr_assert_eq(pat_cache_store(tmpdir, 90, KEY_A, msg, sizeof msg, err, sizeof err), 0, "%s",
               err);
  cr_assert_eq(pat_cache_load(tmpdir, 90, KEY_A, &data, &size, err, sizeof err), 0, "%s", err);
  cr_assert_eq(size, sizeof msg);
  cr_assert_arr_eq(data, msg, sizeof msg);
  free(data);

  /* Same key, other arch or other key: misses. */
  cr_assert_eq(pat_cache_load(tmpdir, 80, KEY_A, &data, &size, err, sizeof err), 1);
  cr_assert_eq(pat_cache_load(tmpdir, 90, KEY_B, &data, &size, err, sizeof err), 1);

  /* A second store replaces the entry; an empty payload is an entry too. */
  cr_assert_eq(pat_cache_store(tmpdir, 90, KEY_A, "", 0, err, sizeof err), 0, "%s", err);
  cr_assert_eq(pat_cache_load(tmpdir, 90, KEY_A, &data, &size, err, sizeof err), 0, "%s", err);
  cr_assert_eq(size, 0);
  free(data);

  entry_path(90, KEY_A, path, sizeof path);
  char want[512];
  snprintf(want, sizeof want, "%s/%s/sm_90/%s.cubin", tmpdir, PAT_VERSION, KEY_A);
  cr_assert_str_eq(path, want);
}

Test(cache, nested_dir_is_created)
{
  char dir[256], err[256] = "";
  void *data = NULL;
  size_t size = 0;
  snprintf(dir, sizeof dir, "%s/a/b//c/", tmpdir);
  cr_assert_eq(pat_cache_store(dir, 80, KEY_B, "xyz", 3, err, sizeof err), 0, "%s", err);
  cr_assert_eq(pat_cache_load(dir, 80, KEY_B, &data, &size, err, sizeof err), 0, "%s", err);
  cr_assert_eq(size, 3);
  free(data);
}

Test(cache, bad_keys_are_rejected)
{
  char err[256] = "";
  void *data = NULL;
  size_t size = 0;
  const char *bad[] = {"../../../../etc/passwd", "0123456789ABCDEF0123456789ABCDEF",
                       "0123456789abcdef", "0123456789abcdef0123456789abcdef0", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_eq(pat_cache_store(tmpdir, 90, bad[i], "x", 1, err, sizeof err), -1, "%s", bad[i]);
    cr_assert(strstr(err, "cache:"), "%s", err);
    cr_assert_eq(pat_cache_load(tmpdir, 90, bad[i], &data, &size, err, sizeof err), -1);
  }
}

Test(cache, unreadable_dir_is_an_error)
{
  char err[256] = "", file[256];
  snprintf(file, sizeof file, "%s/plainfile", tmpdir);
  FILE *f = fopen(file, "w");
  cr_assert_not_null(f);
  fclose(f);
  /* The cache directory is a regular file: creating directories below it fails. */
  cr_assert_eq(pat_cache_store(file, 90, KEY_A, "x", 1, err, sizeof err), -1);
  cr_assert(strstr(err, "plainfile"), "%s", err);
}

Test(cache, truncated_file_is_a_miss_and_removed)
{
  char path[512];
  store_sample(path, sizeof path);
  cr_assert_eq(file_size(path), 64 + 1000);
  cr_assert_eq(truncate(path, 64 + 999), 0);
  expect_rebuilt(path);

  store_sample(path, sizeof path);
  cr_assert_eq(truncate(path, 20), 0);  /* shorter than the header */
  expect_rebuilt(path);

  store_sample(path, sizeof path);
  cr_assert_eq(truncate(path, 0), 0);
  expect_rebuilt(path);
}

Test(cache, appended_bytes_are_a_miss)
{
  char path[512];
  store_sample(path, sizeof path);
  FILE *f = fopen(path, "ab");
  cr_assert_not_null(f);
  fputc(0, f);
  fclose(f);
  expect_rebuilt(path);
}

Test(cache, flipped_payload_byte_is_a_miss)
{
  char path[512];
  store_sample(path, sizeof path);
  poke(path, 64 + 500, (unsigned char)(peek(path, 64 + 500) ^ 0x10));
  expect_rebuilt(path);
}

Test(cache, flipped_checksum_is_a_miss)
{
  char path[512];
  store_sample(path, sizeof path);
  poke(path, 24, (unsigned char)(peek(path, 24) ^ 1));
  expect_rebuilt(path);
}

Test(cache, wrong_magic_is_a_miss)
{
  char path[512];
  store_sample(path, sizeof path);
  poke(path, 0, 'X');
  expect_rebuilt(path);
}

Test(cache, wrong_format_version_is_a_miss)
{
  char path[512];
  store_sample(path, sizeof path);
  poke(path, 8, (unsigned char)(peek(path, 8) + 1));
  expect_rebuilt(path);
}

Test(cache, entry_under_the_wrong_key_is_a_miss)
{
  char path[512], other[512];
  store_sample(path, sizeof path);
  entry_path(90, KEY_B, other, sizeof other);
  cr_assert_eq(rename(path, other), 0);
  void *data = NULL;
  size_t size = 0;
  char err[256] = "";
  cr_assert_eq(pat_cache_load(tmpdir, 90, KEY_B, &data, &size, err, sizeof err), 1);
  cr_assert_eq(access(other, F_OK), -1);
}

/* --- many processes, one key --- */

#define WRITERS 8
#define ROUNDS 50

static size_t payload_len(uint32_t id)
{
  return 8 + (size_t)(id * 2654435761u % 20000u);
}

/* A payload that says who wrote it and can be checked on its own: id, then a pattern. */
static unsigned char *make_payload(uint32_t id, size_t *n)
{
  *n = payload_len(id);
  unsigned char *p = malloc(*n);
  if (!p)
    return NULL;
  memcpy(p, &id, sizeof id);
  for (size_t i = sizeof id; i < *n; i++)
    p[i] = (unsigned char)(id * 31u + i);
  return p;
}

static int payload_ok(const unsigned char *p, size_t n)
{
  uint32_t id;
  if (n < sizeof id)
    return 0;
  memcpy(&id, p, sizeof id);
  if (id >= WRITERS * ROUNDS || n != payload_len(id))
    return 0;
  for (size_t i = sizeof id; i < n; i++)
    if (p[i] != (unsigned char)(id * 31u + i))
      return 0;
  return 1;
}

static int writer(int w)
{
  char err[256];
  for (int r = 0; r < ROUNDS; r++) {
    size_t n;
    unsigned char *p = make_payload((uint32_t)(w * ROUNDS + r), &n);
    if (!p || pat_cache_store(tmpdir, 90, KEY_A, p, n, err, sizeof err)) {
      fprintf(stderr, "writer %d: %s\n", w, err);
      return 1;
    }
    free(p);
    void *data = NULL;
    size_t size = 0;
    /* Every writer stored at least once, so a load must always hit with a whole payload. */
    int rc = pat_cache_load(tmpdir, 90, KEY_A, &data, &size, err, sizeof err);
    if (rc != 0 || !payload_ok(data, size)) {
      fprintf(stderr, "writer %d round %d: load %d, size %zu\n", w, r, rc, size);
      free(data);
      return 1;
    }
    free(data);
  }
  return 0;
}

Test(cache, concurrent_stores_of_one_key)
{
  pid_t pids[WRITERS];
  for (int w = 0; w < WRITERS; w++) {
    pids[w] = fork();
    cr_assert_neq(pids[w], -1);
    if (pids[w] == 0)
      _exit(writer(w));
  }
  for (int w = 0; w < WRITERS; w++) {
    int st = 0;
    cr_assert_eq(waitpid(pids[w], &st, 0), pids[w]);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d failed (status %d)", w, st);
  }

  void *data = NULL;
  size_t size = 0;
  char err[256] = "", dir[512];
  cr_assert_eq(pat_cache_load(tmpdir, 90, KEY_A, &data, &size, err, sizeof err), 0, "%s", err);
  cr_assert(payload_ok(data, size));
  free(data);

  /* Nothing but the entry is left: no temporary files. */
  snprintf(dir, sizeof dir, "%s/%s/sm_90", tmpdir, PAT_VERSION);
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  int files = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      files++;
      cr_assert_str_eq(e->d_name, KEY_A ".cubin");
    }
  }
  closedir(d);
  cr_assert_eq(files, 1);
}

/* --- keys --- */

static const char *const hnames[] = {"pat/a.cuh", "pat/b.cuh"};
static const char *const hsrcs[] = {"#define A 1\n", "#define B 2\n"};

static pat_cache_key_input base_input(void)
{
  pat_cache_key_input in = {
      .pat_version = "1.2.3",
      .source = "extern \"C\" __global__ void k() {}\n",
      .header_names = hnames,
      .header_sources = hsrcs,
      .num_headers = 2,
      .options = "--gpu-architecture=sm_90 -std=c++17",
      .nvrtc_major = 13,
      .nvrtc_minor = 0,
      .arch = 90,
  };
  return in;
}

static void key_of(const pat_cache_key_input *in, char key[PAT_CACHE_KEY_LEN + 1])
{
  cr_assert_eq(pat_cache_key(in, key), 0);
  cr_assert_eq(strlen(key), PAT_CACHE_KEY_LEN);
  cr_assert_eq(strspn(key, "0123456789abcdef"), PAT_CACHE_KEY_LEN, "%s", key);
}

Test(cache, key_depends_on_every_input)
{
  char base[PAT_CACHE_KEY_LEN + 1], again[PAT_CACHE_KEY_LEN + 1];
  char keys[12][PAT_CACHE_KEY_LEN + 1];
  pat_cache_key_input in = base_input();
  key_of(&in, base);
  key_of(&in, again);
  cr_assert_str_eq(base, again, "the key must be deterministic");

  const char *const other_src[] = {"#define A 1\n", "#define B 3\n"};
  const char *const other_name[] = {"pat/a.cuh", "pat/c.cuh"};
  /* Moving bytes from one field to the next must change the key. */
  const char *const split_names[] = {"pat/a.cuh#", "pat/b.cuh"};
  const char *const split_srcs[] = {"define A 1\n", "#define B 2\n"};
  int k = 0;
  in = base_input(), in.arch = 80, key_of(&in, keys[k++]);
  in = base_input(), in.options = "--gpu-architecture=sm_90 -std=c++20", key_of(&in, keys[k++]);
  in = base_input(), in.source = "extern \"C\" __global__ void k2() {}\n", key_of(&in, keys[k++]);
  in = base_input(), in.header_sources = other_src, key_of(&in, keys[k++]);
  in = base_input(), in.header_names = other_name, key_of(&in, keys[k++]);
  in = base_input(), in.num_headers = 1, key_of(&in, keys[k++]);
  in = base_input(), in.nvrtc_minor = 1, key_of(&in, keys[k++]);
  in = base_input(), in.nvrtc_major = 12, key_of(&in, keys[k++]);
  in = base_input(), in.pat_version = "1.2.4", key_of(&in, keys[k++]);
  in = base_input(), in.header_names = split_names, in.header_sources = split_srcs,
  key_of(&in, keys[k++]);
  for (int i = 0; i < k; i++) {
    cr_assert_str_neq(keys[i], base, "variant %d", i);
    for (int j = 0; j < i; j++)
      cr_assert_str_neq(keys[i], keys[j], "variants %d and %d", i, j);
  }

  cr_assert_eq(pat_cache_key(NULL, again), -1);
  in = base_input(), in.num_headers = -1;
  cr_assert_eq(pat_cache_key(&in, again), -1);
}

Test(cache, default_dir)
{
  char buf[256];
  setenv("PAT_CACHE_DIR", "/x/pc", 1);
  setenv("XDG_CACHE_HOME", "/x/xdg", 1);
  setenv("HOME", "/x/home", 1);
  cr_assert_eq(pat_cache_dir_default(buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "/x/pc");
  unsetenv("PAT_CACHE_DIR");
  cr_assert_eq(pat_cache_dir_default(buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "/x/xdg/pat");
  setenv("XDG_CACHE_HOME", "relative", 1);  /* XDG: relative paths are ignored */
  cr_assert_eq(pat_cache_dir_default(buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "/x/home/.cache/pat");
  unsetenv("XDG_CACHE_HOME");
  cr_assert_eq(pat_cache_dir_default(buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "/x/home/.cache/pat");
  cr_assert_eq(pat_cache_dir_default(buf, 8), -1);
  cr_assert_str_eq(buf, "");
  unsetenv("HOME");
  cr_assert_eq(pat_cache_dir_default(buf, sizeof buf), -1);
}
