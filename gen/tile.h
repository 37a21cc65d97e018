/* tile.h: what a tile of the forward kernel costs (threads, shared memory) and its name.
** These formulas mirror templates/decode.cu.lua; spec validation and the manifest use them. */
#ifndef PAT_TILE_H
#define PAT_TILE_H

#include "spec.h"

/* Warps along the query rows (M/16) and along the KV tokens of a step (warps / (M/16)). */
int pat_tile_warps_m(const pat_tile *t);
int pat_tile_warps_n(const pat_tile *t);
int pat_tile_threads(const pat_tile *t);

/* Dynamic shared memory of the forward kernel, in bytes. */
int pat_tile_smem_bytes(const pat_spec *s, const pat_tile *t);

/* Largest dynamic shared memory per block for an arch (80 -> 166912, 90 -> 232448, ...). */
int pat_arch_smem_limit(int arch);

/* Checks a tile against the spec (M multiple of 16, warps cover M, token slice per warp a
** multiple of 16, stages >= 2, smem within every target arch). Returns 0, or -1 with a
** message (no file position) in err. */
int pat_tile_check(const pat_spec *s, const pat_tile *t, char *err, size_t errlen);

/* Whether two tiles have the same shape (m, n, warps, stages). */
int pat_tile_same(const pat_tile *a, const pat_tile *b);

/* Kernel name: pat_fwd_<spec>_m<M>n<N>w<W>s<S>_g<G>. Returns snprintf's result. */
int pat_tile_kernel_name(const pat_spec *s, const pat_tile *t, int gqa, char *buf, size_t n);
int pat_merge_kernel_name(const pat_spec *s, char *buf, size_t n);

#endif
