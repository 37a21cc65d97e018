/* embedded.c: lookup in the table of files compiled into the binary (build/embedded.c). */
#include "embedded.h"

#include <string.h>

const pat_embedded_file *pat_embedded_find(const char *path)
{
  for (const pat_embedded_file *f = pat_embedded_files; f->path; f++)
    if (strcmp(f->path, path) == 0) return f;
  return NULL;
}
