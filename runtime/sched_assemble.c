/* sched_assemble.c: the plan from the packs: each pack's KV chunks, their tiles (a tuning
** table's choice or the cost model's), grouped by tile into launches (longest first), the
** queries' slots for partial results and their merge items. */
#include "sched_internal.h"

#include <string.h>

#include "tuning.h"

typedef struct fpack {   /* a final pack (one KV chunk of a bpack) */
  int32_t base, page_off, kv_len, tile;
} fpack;

/* Expected run time of a group's longest CTA: its first pack is among its longest. */
static double group_key(const ctx *c, const pat_host_plan *p, const pat_tile_group *g)
{
  return p->packs[g->pack_begin].kv_len * ctok(c, c->s->tiles[g->tile].m);
}

/* Launch order: the group with the longest-running CTAs first, so that the long poles start
** at once and the shorter CTAs of the other launches fill the SMs around them (the block
** scheduler dispatches concurrent kernels in launch order). Stable insertion sort. */
static void order_groups(const ctx *c, pat_host_plan *plan)
{
  for (int32_t g = 1; g < plan->num_groups; g++) {
    const pat_tile_group x = plan->groups[g];
    const double kx = group_key(c, plan, &x);
    int32_t h = g;
    for (; h > 0 && group_key(c, plan, &plan->groups[h - 1]) < kx; h--) plan->groups[h] = plan->groups[h - 1];
    plan->groups[h] = x;
  }
}

/* The tile a tuning table chose for `rows` rows and T tokens at GQA index gi (for a masked
** pack, its masked choice first); else the tile with the least cost for `rows` query rows and
** `T` tokens, smallest M on ties. A masked pack takes an mma.sync tile (the wgmma kernel has
** no masks). */
static int pick_tile(const pat_spec *s, int gi, int rows, int T, int masked)
{
  int rc = pat_row_class(rows), tc = pat_token_class(T);
  for (int m = masked; gi >= 0 && rc >= 0 && m >= 0; m--) {
    int k = (m ? s->masked_choice : s->tile_choice)[gi][rc][tc] - 1;
    if (k >= 0 && k < s->num_tiles && s->tiles[k].m >= rows && !(masked && s->tiles[k].wgmma)) return k;
  }
  int best = -1;
  double bc = 0;
  for (int i = 0; i < model_tiles(s); i++) {
    const pat_tile *t = &s->tiles[i];
    if (t->m < rows || t->n < 1 || (masked && t->wgmma)) continue;
    double steps = (double)((T + t->n - 1) / t->n);
    double cost = mma_weight(s) * ((double)t->m * steps * t->n - (double)rows * T) + COST_STEP * steps;
    if (best < 0 || cost < bc - 1e-9 || (cost < bc + 1e-9 && t->m < s->tiles[best].m)) {
      best = i;
      bc = cost;
    }
  }
  return best;
}

#define TILE_CACHE 256

static int ilog2(int32_t x)
{
  return 31 - __builtin_clz((unsigned)x);
}

/* ---- assembly of the plan ---- */
int sched_assemble(ctx *c, const int32_t *cnt, pat_host_plan *plan)
{
  const pat_spec *s = c->s;
  int32_t n = c->n, nt = s->num_tiles;
  int64_t nf = 0, npq = 0, npages = 0, nslots = 0, nmerge = 0, read = 0;
  for (int32_t i = 0; i < c->nbp; i++) {
    bpack *p = &c->bp[i];
    p->page_begin = (int32_t)npages;
    npages += p->npages;
    nf += p->splits;
    npq += (int64_t)p->splits * p->nq;
    read += p->kv_len;
  }
  for (int32_t q = 0; q < n; q++)
    if (cnt[q] > 1) { nslots += cnt[q]; nmerge++; }
  if (nf > INT32_MAX || npq > INT32_MAX || npages > INT32_MAX || nslots > INT32_MAX) return -1;

  /* scratch: final packs, sort keys and permutation, slot bases and counters, buckets */
  size_t nb = (size_t)nt * 32 + 1;
  fpack *fp = sched_scratch(c, SB_FINAL, (size_t)nf * sizeof *fp + ((size_t)nf * 2 + (size_t)n * 2 + nb) * sizeof(int32_t));
  plan->packs = sched_plan_array(c, SB_PLAN_PACKS, (size_t)nf * sizeof *plan->packs);
  plan->pack_queries = sched_plan_array(c, SB_PLAN_PACK_QUERIES, (size_t)npq * sizeof *plan->pack_queries);
  plan->pages = sched_plan_array(c, SB_PLAN_PAGES, (size_t)(npages ? npages : 1) * sizeof *plan->pages);
  if (c->nmp > 0) {  /* words of unmasked packs' pages stay 0 */
    size_t bytes = (size_t)(npages ? npages : 1) * sizeof *plan->page_masks;
    plan->page_masks = sched_plan_array(c, SB_PLAN_PAGE_MASKS, bytes);
    if (plan->page_masks) memset(plan->page_masks, 0, bytes);
  }
  plan->merges = sched_plan_array(c, SB_PLAN_MERGES, (size_t)(nmerge ? nmerge : 1) * sizeof *plan->merges);
  plan->groups = sched_plan_array(c, SB_PLAN_GROUPS, (size_t)nt * sizeof *plan->groups);
  int rc = -1;
  if (!fp || !plan->packs || !plan->pack_queries || !plan->pages || !plan->merges || !plan->groups ||
      (c->nmp > 0 && !plan->page_masks))
    goto out;
  int32_t *key = (int32_t *)(void *)(fp + nf);
  int32_t *perm = key + nf, *next = perm + nf, *bucket = next + (size_t)n * 2;
  memset(bucket, 0, nb * sizeof *bucket);

  /* pick_tile depends on (queries, tokens) only: a small direct-mapped cache of its answers */
  int gi = 0;
  while (gi < s->num_gqa && s->gqa[gi] != c->gqa) gi++;
  if (gi == s->num_gqa) gi = -1;
  struct { int32_t nq, t, masked, tile; } tc[TILE_CACHE];
  for (int i = 0; i < TILE_CACHE; i++) tc[i].nq = -1;

  /* chunks of each base pack at page boundaries; the last holds the partial page */
  int32_t f = 0;
  for (int32_t i = 0; i < c->nbp; i++) {
    const bpack *p = &c->bp[i];
    const int masked = p->mask_at >= 0;
    const int32_t *row = masked ? c->mpage + p->mask_at : row_of(c, c->order[p->q_lo]) + p->pos0;
    int32_t *dst = plan->pages + p->page_begin;
    if (masked) memcpy(plan->page_masks + p->page_begin, c->mword + p->mask_at, (size_t)p->npages * sizeof(uint32_t));
    if (p->npages <= 8) {
      for (int32_t k = 0; k < p->npages; k++) dst[k] = row[k];
    } else {
      memcpy(dst, row, (size_t)p->npages * sizeof *row);
    }
    int32_t base = p->npages, extra = 0, off = 0;
    if (p->splits > 1) { base = p->npages / p->splits; extra = p->npages % p->splits; }
    int32_t shortfall = p->npages * c->ps - p->kv_len;
    for (int32_t j = 0; j < p->splits; j++) {
      int32_t pg = base + (j < extra ? 1 : 0);
      int32_t T = pg * c->ps - (j + 1 == p->splits ? shortfall : 0);
      uint32_t h = hash32((uint32_t)T * 62u + (uint32_t)p->nq * 2u + (uint32_t)masked) & (TILE_CACHE - 1);
      if (tc[h].nq != p->nq || tc[h].t != T || tc[h].masked != masked) {
        tc[h].nq = p->nq;
        tc[h].t = T;
        tc[h].masked = masked;
        tc[h].tile = pick_tile(s, gi, p->nq * c->gqa, T, masked);
      }
      int tile = tc[h].tile;
      fp[f] = (fpack){i, off, T, tile};
      key[f] = tile * 32 + (31 - ilog2(T));
      bucket[key[f] + 1]++;
      off += pg;
      f++;
    }
  }
  /* counting sort: by tile, then longest first (by powers of two), stable */
  for (int32_t k = 0; k < nt * 32; k++) bucket[k + 1] += bucket[k];
  for (int32_t i = 0; i < f; i++) perm[bucket[key[i]]++] = i;

  /* slots: contiguous per query, in query order */
  int32_t *slot_base = next, *slot_next = next + n;
  int32_t sl = 0, m = 0;
  for (int32_t q = 0; q < n; q++) {
    slot_next[q] = 0;
    if (cnt[q] > 1) {
      slot_base[q] = sl;
      plan->merges[m++] = (pat_merge_item){q, sl, cnt[q]};
      sl += cnt[q];
    } else {
      slot_base[q] = -1;
    }
  }
  int32_t pq = 0, ng = 0;
  for (int32_t i = 0; i < f; i++) {
    const fpack *x = &fp[perm[i]];
    const bpack *p = &c->bp[x->base];
    if (ng == 0 || plan->groups[ng - 1].tile != x->tile)
      plan->groups[ng++] = (pat_tile_group){x->tile, i, 0, 0};
    plan->groups[ng - 1].num_packs++;
    if (x->kv_len > plan->groups[ng - 1].max_kv_len) plan->groups[ng - 1].max_kv_len = x->kv_len;
    plan->packs[i] = (pat_pack){pq, p->nq, p->page_begin + x->page_off, x->kv_len, p->mask_at >= 0};
    for (int32_t j = 0; j < p->nq; j++) {
      int32_t q = c->order[p->q_lo + j];
      int32_t slot = slot_base[q] < 0 ? -1 : slot_base[q] + slot_next[q]++;
      plan->pack_queries[pq++] = (pat_pack_query){q, slot};
    }
  }
  plan->num_queries = n;
  plan->num_packs = f;
  plan->num_pack_queries = pq;
  plan->num_pages = (int32_t)npages;
  plan->num_merges = m;
  plan->num_slots = sl;
  plan->num_groups = ng;
  plan->kv_tokens_read = read;
  order_groups(c, plan);
  rc = 0;
out:
  return rc;
}
