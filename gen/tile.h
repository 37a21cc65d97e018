/* tile.h: what a tile of the forward kernel costs (threads, shared memory) and its name.
** These formulas mirror templates/decode.cu.lua; spec validation and the manifest use them. */
#ifndef PAT_TILE_H
#define PAT_TILE_H

#include "spec.h"

/* Query rows per warp (16 or 32; a zero field means 16). */
int pat_tile_warp_rows(const pat_tile *t);
/* Warps along the query rows (M / warp rows) and along the KV tokens of a step (the rest). */
int pat_tile_warps_m(const pat_tile *t);
int pat_tile_warps_n(const pat_tile *t);
int pat_tile_threads(const pat_tile *t);

/* Dynamic shared memory of the forward kernel, in bytes. */
int pat_tile_smem_bytes(const pat_spec *s, const pat_tile *t);

/* The same with only `slots` (1 .. stages; other values: stages) K/V ring slots: what a
** launch needs when none of its packs has more than `slots` tiles of N tokens, since a pack
** of k tiles only ever touches ring slots 0 .. k-1. Less shared memory per CTA lets more
** CTAs share an SM (1-page leaves: one slot). */
int pat_tile_smem_bytes_for(const pat_spec *s, const pat_tile *t, int slots);

/* Largest dynamic shared memory per block for an arch (80 -> 166912, 90 -> 232448, ...). */
int pat_arch_smem_limit(int arch);

/* Checks a tile against the spec (M multiple of 16, warps cover M, token slice per warp a
** multiple of 16, stages >= 2, smem within every target arch; a wgmma tile: 64 or 128 rows,
** n 64 or 128, stages >= 3, head_dim 128, sm_90 among the archs, smem within sm_90's).
** Returns 0, or -1 with a message (no file position) in err. */
int pat_tile_check(const pat_spec *s, const pat_tile *t, char *err, size_t errlen);

/* Whether the tile's kernels run on a device of compute capability `arch` x 10 (a wgmma tile
** needs exactly sm_90, built as sm_90a). */
int pat_tile_runs_on(const pat_tile *t, int arch);
/* Drops from *s the tiles that do not run on `arch`, and the mma.sync tiles that a wgmma tile
** of the same m and n replaces where it runs (so a spec may list both: sm_90 gets the wgmma
** tile, other archs the mma.sync one). Tuning choices follow their tiles (a choice of a
** dropped tile goes back to the cost model). Returns the number dropped, or -1 with a
** message in err when no tile would be left. */
int pat_spec_keep_arch(pat_spec *s, int arch, char *err, size_t errlen);

/* Whether two tiles have the same shape (m, n, warps, stages, warp rows, wgmma). */
int pat_tile_same(const pat_tile *a, const pat_tile *b);

/* The tile's short label, m<M>n<N>w<W>s<S>[r32][wg] (r32: 32 rows a warp; wg: warpgroup mma).
** Returns snprintf's result. */
int pat_tile_label(const pat_tile *t, char *buf, size_t n);

/* Kernel name: pat_fwd_<spec>_<label>_g<G>. Returns snprintf's result. */
int pat_tile_kernel_name(const pat_spec *s, const pat_tile *t, int gqa, char *buf, size_t n);
int pat_merge_kernel_name(const pat_spec *s, char *buf, size_t n);

#endif
