/* emit.h: writes a generated kernel set to a directory (AOT output, generated/NAME). */
#ifndef PAT_EMIT_H
#define PAT_EMIT_H

#include <stddef.h>

#include "generate.h"

/* Writes <dir>/<kernel>.cu for each kernel, only where the content changed, plus
** <dir>/manifest.tsv (kernel, file, tile, m, n, warps, stages, warp_rows, gqa, threads,
** smem_bytes), and removes other *.cu files left in dir. Creates dir (and parents). Returns 0, or -1 with
** a message naming the path. *written counts files whose content changed. */
int pat_emit_dir(const pat_spec *spec, const pat_kernel_set *set, const char *dir, int *written,
                 char *err, size_t errlen);

/* The manifest text of a set (what pat_emit_dir writes), malloc'd. NULL if out of memory. */
char *pat_manifest_text(const pat_spec *spec, const pat_kernel_set *set);

/* mkdir -p with mode 0755. Returns 0, or -1 with errno set. */
int pat_mkdirs(const char *path);

#endif
