/* embedded.h: the templates and device headers compiled into the binary (build/embedded.c). */
#ifndef PAT_EMBEDDED_H
#define PAT_EMBEDDED_H

#include <stddef.h>

typedef struct pat_embedded_file {
  const char *path;  /* as in the source tree: "templates/decode.cu.lua" */
  const char *data;  /* NUL-terminated */
  size_t size;       /* bytes, without the NUL */
} pat_embedded_file;

extern const pat_embedded_file pat_embedded_files[];  /* ends with a {0} entry */

/* The embedded file at path ("templates/prelude.lua"), or NULL. Thread-safe (read-only). */
const pat_embedded_file *pat_embedded_find(const char *path);

#endif
