/* cache.h: the on-disk kernel cache. Entries live at DIR/<pat version>/sm_XX/<key>.cubin,
** keyed by an XXH3-128 hash of everything that shapes the CUBIN, and are written atomically
** and checked (magic, format, size, key, XXH3-64 checksum) on every load. */
#ifndef PAT_CACHE_H
#define PAT_CACHE_H

#include <stddef.h>

#include "../gen/version.h"  /* PAT_VERSION: part of every key and of the cache path */

#define PAT_CACHE_KEY_LEN 32  /* hex digits in a key (XXH3-128) */

/* Everything that decides the CUBIN. Strings are NUL-terminated; NULL counts as "". */
typedef struct pat_cache_key_input {
  const char *pat_version;  /* NULL: PAT_VERSION */
  const char *source;       /* the full CUDA C source */
  const char *const *header_names;    /* [num_headers] include names, in NVRTC order */
  const char *const *header_sources;  /* [num_headers] their contents */
  int num_headers;
  const char *options;      /* every NVRTC option, e.g. from pat_nvrtc_options_string */
  int nvrtc_major;          /* from pat_nvrtc_version */
  int nvrtc_minor;
  int arch;                 /* 80, 90 */
} pat_cache_key_input;

/* Hashes in (each field length-prefixed, so no two inputs run together) into a key of
** PAT_CACHE_KEY_LEN lower-case hex digits plus a NUL, written to key. Returns 0, or -1 if
** in or key is NULL or num_headers < 0 (key is then ""). Pure; thread-safe. */
int pat_cache_key(const pat_cache_key_input *in, char key[PAT_CACHE_KEY_LEN + 1]);

/* The default cache directory: $PAT_CACHE_DIR, else $XDG_CACHE_HOME/pat (absolute paths
** only, as XDG asks), else $HOME/.cache/pat. Returns 0, or -1 when none is set or the path
** does not fit in n bytes (buf is then ""). Reads the environment: do not call while another
** thread runs setenv. */
int pat_cache_dir_default(char *buf, size_t n);

/* Looks key up under dir for sm_<arch>. Returns 0 on a hit, with a malloc'd copy of the
** payload in *data (the caller frees it) and its size in *size; 1 on a miss (no entry, or an
** entry that is truncated, corrupt or from another format: such a file is deleted so that
** it is rebuilt); -1 on an I/O error other than "no such file", with a message in err. On 1
** and -1, *data is NULL and *size 0. Thread- and process-safe against concurrent stores. */
int pat_cache_load(const char *dir, int arch, const char *key, void **data, size_t *size,
                   char *err, size_t errlen);

/* Stores size bytes of data as key under dir for sm_<arch>, creating the directories
** (0755) as needed. Writes a uniquely named temporary file (pid and a mkstemp suffix) in the
** same directory, fsyncs it and renames it over the entry, so a reader sees either the old
** entry or the whole new one, and concurrent stores of the same key are safe (the last
** rename wins). Returns 0, or -1 with a message in err. Thread- and process-safe. */
int pat_cache_store(const char *dir, int arch, const char *key, const void *data, size_t size,
                    char *err, size_t errlen);

/* Writes the path of key's entry (DIR/<ver>/sm_XX/<key>.cubin) to buf, as snprintf does;
** returns 0, or -1 if it does not fit or the key is not PAT_CACHE_KEY_LEN hex digits.
** Thread-safe. */
int pat_cache_path(const char *dir, int arch, const char *key, char *buf, size_t n);

#endif
