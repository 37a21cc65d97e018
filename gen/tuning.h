/* tuning.h: tuning tables (written by bench/tune.c, read by the runtime): applying one to a
** spec, where it lives next to its spec, writing one. The YAML reader is in tuning_read.c. */
#ifndef PAT_TUNING_H
#define PAT_TUNING_H

#include <stdio.h>

#include "spec.h"

/* Row class of a pack of `rows` query rows: 0 for <= 16, 1 for <= 32, .. 4 for <= 256;
** -1 past that. */
int pat_row_class(int rows);

/* Token class of a CTA's KV chunk: 0 for <= 64 tokens, 1 for <= 256, 2 for <= 1024, 3 longer. */
int pat_token_class(int tokens);

/* Applies t to *s: its split policy, its tile choices; tiles it names that s lacks are
** appended (the cost model keeps to s's own tiles). Checks that t is for s (same spec name),
** that every GQA ratio is one of s's and every tile is valid for s. Returns 0, or -1 with a
** message naming t's file, leaving *s untouched. */
int pat_tuning_apply(const pat_tuning *t, pat_spec *s, char *err, size_t errlen);

/* The table beside a spec file: "specs/x.yaml" -> "specs/x.tune.yaml"; with a GPU name, that
** GPU's own: "NVIDIA H100 80GB HBM3" -> "specs/x.tune.h100-80gb-hbm3.yaml" (lower case, the
** vendor dropped, runs of other characters as one '-'). */
void pat_tuning_path(const char *spec_path, const char *gpu, char *out, size_t n);

/* Writes t as YAML, with `comment` (lines, may be NULL) as '#' lines at the top. Returns 0,
** or -1 with errno set. */
int pat_tuning_write(FILE *f, const pat_tuning *t, const char *comment);

#endif
