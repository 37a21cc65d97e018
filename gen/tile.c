/* tile.c: resources and names of a forward-kernel tile; mirrors templates/decode.cu.lua and the
** device headers it instantiates (decode.cuh, decode_wgmma.cuh). */
#include "tile.h"

#include "../templates/device/pat_params.h"

#include <stdio.h>

int pat_tile_warp_rows(const pat_tile *t) { return t->warp_rows ? t->warp_rows : 16; }
int pat_tile_warps_m(const pat_tile *t) { return t->m / pat_tile_warp_rows(t); }
int pat_tile_warps_n(const pat_tile *t) { return t->warps / pat_tile_warps_m(t); }
int pat_tile_threads(const pat_tile *t) { return 32 * t->warps; }

static int dtype_bytes(pat_dtype d) { (void)d; return 2; }

enum { PAGE_WINDOW_BYTES = PAT_PAGE_WINDOW * 4 };  /* the staged page ids (and mask words) */

/*
** Layout of the forward kernel's dynamic shared memory:
**   page ids    the first 256 page ids of the pack (int32); a masked pack's 128 at most,
**               then their mask words;
**   Q tile      M x HEAD_DIM elements, loaded once;
**   K, V ring   STAGES x 2 x N x HEAD_DIM elements, the cp.async pipeline;
** and, reusing the ring once the KV loop is over, the epilogue that combines the warps that
** split N: per warp (warp rows) x HEAD_DIM fp32 partial outputs plus 2 fp32 a row (row max,
** row sum).
*/
int pat_tile_smem_bytes(const pat_spec *s, const pat_tile *t)
{
  return pat_tile_smem_bytes_for(s, t, t->stages);
}

int pat_tile_smem_bytes_for(const pat_spec *s, const pat_tile *t, int slots)
{
  if (slots < 1 || slots > t->stages) slots = t->stages;
  int e = dtype_bytes(s->dtype);
  int q = t->m * s->head_dim * e;
  int ring = slots * 2 * t->n * s->head_dim * e;
  if (t->wgmma)  /* the output leaves from the accumulators: no epilogue buffer */
    return PAGE_WINDOW_BYTES + q + ring;
  int epilogue = t->warps * pat_tile_warp_rows(t) * (s->head_dim + 2) * 4;
  return PAGE_WINDOW_BYTES + q + (ring > epilogue ? ring : epilogue);
}

int pat_arch_smem_limit(int arch)
{
  switch (arch) {
  case 80: return 163 * 1024;
  case 86: case 89: return 99 * 1024;
  case 90: return 227 * 1024;
  default: return 0;
  }
}

/* The wgmma tile's own limits (decode_wgmma.cuh): one or two warpgroups of 64 rows, S as
** m64n64 or m64n128, O as m64n128, a ring one step deeper than the overlapped loop holds. */
static int wgmma_check(const pat_spec *s, const pat_tile *t, char *err, size_t errlen)
{
  if (t->wgmma != 0 && t->wgmma != 1) {
    snprintf(err, errlen, "wgmma: must be 0 or 1, got %d", t->wgmma);
    return -1;
  }
  if (!t->wgmma) return 0;
  if (t->m != 64 && t->m != 128) {
    snprintf(err, errlen, "wgmma: m must be 64 or 128 (warpgroups of 64 rows), got %d", t->m);
    return -1;
  }
  if (t->warps != t->m / 16 || pat_tile_warp_rows(t) != 16) {
    snprintf(err, errlen, "wgmma: warps must be m/16 = %d (4 a warpgroup) with 16 rows a warp, got "
             "%d warps of %d rows", t->m / 16, t->warps, pat_tile_warp_rows(t));
    return -1;
  }
  if (t->n != 64 && t->n != 128) {
    snprintf(err, errlen, "wgmma: n must be 64 or 128, got %d", t->n);
    return -1;
  }
  if (t->stages < 3) {
    snprintf(err, errlen, "wgmma: stages must be at least 3 (the overlapped loop holds two), got %d",
             t->stages);
    return -1;
  }
  if (s->head_dim != 128) {
    snprintf(err, errlen, "wgmma: needs head_dim 128, got %d", s->head_dim);
    return -1;
  }
  int runs = 0;
  for (int i = 0; i < s->num_archs; i++) runs |= pat_tile_runs_on(t, s->archs[i]);
  if (!runs) {
    snprintf(err, errlen, "wgmma: runs on sm_90 only; add sm_90 to archs");
    return -1;
  }
  return 0;
}

int pat_tile_check(const pat_spec *s, const pat_tile *t, char *err, size_t errlen)
{
  if (t->m < 16 || t->m > 128 || t->m % 16) {
    snprintf(err, errlen, "m: must be 16, 32, 48, ... 128 (a multiple of the 16-row mma), got %d", t->m);
    return -1;
  }
  int wr = pat_tile_warp_rows(t);
  if (wr != 16 && wr != 32) {
    snprintf(err, errlen, "warp_rows: must be 16 or 32, got %d", t->warp_rows);
    return -1;
  }
  if (t->m % wr) {
    snprintf(err, errlen, "warp_rows: m=%d is not a multiple of %d rows a warp", t->m, wr);
    return -1;
  }
  if (wr == 32 && s->head_dim > 128) {  /* two row blocks of outputs: 2 x head_dim / 4 registers */
    snprintf(err, errlen, "warp_rows: 32 rows a warp need head_dim <= 128 (registers), got %d",
             s->head_dim);
    return -1;
  }
  if (t->warps < 1 || t->warps > 16) {
    snprintf(err, errlen, "warps: must be 1..16, got %d", t->warps);
    return -1;
  }
  if (t->warps % (t->m / wr)) {
    snprintf(err, errlen, "warps: %d warps cannot cover m=%d rows (need a multiple of m/%d = %d)",
             t->warps, t->m, wr, t->m / wr);
    return -1;
  }
  if (t->n < 16 || t->n > 256 || t->n % 16) {
    snprintf(err, errlen, "n: must be a multiple of 16 in 16..256, got %d", t->n);
    return -1;
  }
  int wn = pat_tile_warps_n(t);
  if (t->n % (16 * wn)) {
    snprintf(err, errlen, "n: %d tokens cannot be split over %d warps in slices of 16", t->n, wn);
    return -1;
  }
  if (t->stages < 2 || t->stages > 8) {
    snprintf(err, errlen, "stages: must be 2..8, got %d", t->stages);
    return -1;
  }
  if (wgmma_check(s, t, err, errlen)) return -1;
  int smem = pat_tile_smem_bytes(s, t);
  for (int i = 0; i < s->num_archs; i++) {
    if (!pat_tile_runs_on(t, s->archs[i])) continue;  /* never built for that arch */
    int limit = pat_arch_smem_limit(s->archs[i]);
    if (smem > limit) {
      snprintf(err, errlen, "tile m=%d n=%d stages=%d needs %d bytes of shared memory, "
               "more than sm_%d allows (%d)", t->m, t->n, t->stages, smem, s->archs[i], limit);
      return -1;
    }
  }
  for (int i = 0; i < s->num_gqa; i++) {
    if (s->gqa[i] > t->m) {
      snprintf(err, errlen, "tile m=%d is smaller than GQA ratio %d: one query's heads must fit a tile",
               t->m, s->gqa[i]);
      return -1;
    }
  }
  return 0;
}

int pat_tile_label(const pat_tile *t, char *buf, size_t n)
{
  return snprintf(buf, n, "m%dn%dw%ds%d%s%s", t->m, t->n, t->warps, t->stages,
                  pat_tile_warp_rows(t) == 32 ? "r32" : "", t->wgmma ? "wg" : "");
}

int pat_tile_kernel_name(const pat_spec *s, const pat_tile *t, int gqa, char *buf, size_t n)
{
  char label[48];
  pat_tile_label(t, label, sizeof label);
  return snprintf(buf, n, "pat_fwd_%s_%s_g%d", s->name, label, gqa);
}

int pat_merge_kernel_name(const pat_spec *s, char *buf, size_t n)
{
  return snprintf(buf, n, "pat_merge_%s", s->name);
}

int pat_tile_same(const pat_tile *a, const pat_tile *b)
{
  return a->m == b->m && a->n == b->n && a->warps == b->warps && a->stages == b->stages &&
         pat_tile_warp_rows(a) == pat_tile_warp_rows(b) && a->wgmma == b->wgmma;
}

int pat_tile_runs_on(const pat_tile *t, int arch)
{
  return !t->wgmma || arch == 90;
}

/* Whether tile i of s is a mma.sync tile that a wgmma tile of the same m and n replaces on
** this arch. */
static int replaced(const pat_spec *s, int i, int arch)
{
  if (s->tiles[i].wgmma) return 0;
  for (int j = 0; j < s->num_tiles; j++)
    if (s->tiles[j].wgmma && pat_tile_runs_on(&s->tiles[j], arch) && s->tiles[j].m == s->tiles[i].m &&
        s->tiles[j].n == s->tiles[i].n)
      return 1;
  return 0;
}

int pat_spec_keep_arch(pat_spec *s, int arch, char *err, size_t errlen)
{
  pat_spec n = *s;
  int map[PAT_MAX_TILES], kept = 0, model = s->num_model_tiles ? s->num_model_tiles : s->num_tiles;
  n.num_model_tiles = 0;
  for (int i = 0; i < s->num_tiles; i++) {
    map[i] = -1;
    if (!pat_tile_runs_on(&s->tiles[i], arch) || replaced(s, i, arch)) continue;
    map[i] = kept;
    n.tiles[kept++] = s->tiles[i];
    if (i < model) n.num_model_tiles = kept;
  }
  if (kept == s->num_tiles) return 0;
  if (kept == 0 || n.num_model_tiles == 0) {
    snprintf(err, errlen, "spec '%s': none of its %stiles runs on sm_%d (wgmma tiles need sm_90)",
             s->name, kept == 0 ? "" : "cost-model ", arch);
    return -1;
  }
  n.num_tiles = kept;
  if (!s->num_model_tiles) n.num_model_tiles = 0;  /* still all of them */
  for (int g = 0; g < PAT_MAX_GQA; g++)
    for (int r = 0; r < PAT_ROW_CLASSES; r++)
      for (int t = 0; t < PAT_TOKEN_CLASSES; t++)
        for (int m = 0; m < 2; m++) {
          unsigned char *c = m ? &n.masked_choice[g][r][t] : &n.tile_choice[g][r][t];
          if (*c) *c = map[*c - 1] < 0 ? 0 : (unsigned char)(map[*c - 1] + 1);
        }
  int dropped = s->num_tiles - kept;
  *s = n;
  return dropped;
}
