/* sched_split.c: KV splitting. Long packs are cut to a balanced share of the grid, then the
** longest chunk is split again while the grid is short of CTAs; a query never exceeds the
** spec's max_splits partial results, a chunk never falls below min_kv_per_split tokens. */
#include "sched_internal.h"

#include <limits.h>

static int can_split(const ctx *c, const bpack *p, const int32_t *cnt, int max_splits)
{
  if (p->splits >= p->max_s) return 0;
  for (int32_t i = 0; i < p->nq; i++)
    if (cnt[c->order[p->q_lo + i]] >= max_splits) return 0;
  return 1;
}

static void add_splits(const ctx *c, bpack *p, int32_t *cnt, int32_t d)
{
  p->splits += d;
  for (int32_t i = 0; i < p->nq; i++) cnt[c->order[p->q_lo + i]] += d;
}

static double chunk_len(const bpack *p) { return (double)p->kv_len / p->splits; }

static void heap_down(const ctx *c, int32_t *h, int32_t n, int32_t i)
{
  for (;;) {
    int32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && chunk_len(&c->bp[h[l]]) > chunk_len(&c->bp[h[m]])) m = l;
    if (r < n && chunk_len(&c->bp[h[r]]) > chunk_len(&c->bp[h[m]])) m = r;
    if (m == i) return;
    int32_t t = h[i]; h[i] = h[m]; h[m] = t;
    i = m;
  }
}

/* Most chunks at page boundaries with every chunk >= min_kv tokens (the last chunk is the
** shortest: it holds the partial page). */
static void set_max_splits(const ctx *c, bpack *p, int32_t min_kv)
{
  int32_t shortfall = p->npages * c->ps - p->kv_len;
  int32_t mp = (min_kv + shortfall + c->ps - 1) / c->ps;
  p->max_s = p->npages / mp > 1 ? p->npages / mp : 1;
}

int sched_split_packs(ctx *c, int32_t *cnt)
{
  const pat_split_policy *sp = &c->s->split;
  int max_splits = sp->max_splits > 0 ? sp->max_splits : 1;
  int64_t min_kv = sp->min_kv_per_split > 0 ? sp->min_kv_per_split : 1;
  int64_t ctas = (int64_t)(sp->ctas_per_sm > 0 ? sp->ctas_per_sm : 1) * c->o->num_sms;
  int64_t target = (ctas + c->o->kv_heads - 1) / c->o->kv_heads;
  int64_t total = 0, packs = c->nbp;
  for (int32_t i = 0; i < c->nbp; i++) total += c->bp[i].kv_len;
  /* 1. long packs: nothing longer than a balanced share of the grid */
  int64_t lcap = (total + target - 1) / target;
  if (lcap < min_kv) lcap = min_kv;
  for (int32_t i = 0; i < c->nbp; i++) {
    bpack *p = &c->bp[i];
    p->max_s = 0;  /* not computed yet */
    /* masked packs are sized for the grid already, and a split of one costs every query in
    ** it a merge (measured: 5 splits of 32-query packs, 30-40% slower) */
    if (p->mask_at >= 0 || p->kv_len <= lcap) continue;
    set_max_splits(c, p, (int32_t)min_kv);
    if (p->max_s <= 1) continue;
    int64_t want = (p->kv_len + lcap - 1) / lcap;
    if (want > p->max_s) want = p->max_s;
    int32_t room = INT_MAX;
    for (int32_t j = 0; j < p->nq; j++) {
      int32_t r = max_splits - cnt[c->order[p->q_lo + j]];
      room = r < room ? r : room;
    }
    if (want > 1 + (int64_t)room) want = 1 + room;
    if (want > 1) { add_splits(c, p, cnt, (int32_t)want - 1); packs += want - 1; }
  }
  /* 2. fill the GPU: split the longest chunk while the grid is short of CTAs */
  if (packs >= target) return 0;
  int32_t *h = sched_scratch(c, SB_HEAP, (size_t)c->nbp * sizeof *h);
  if (!h) return -1;
  int32_t hn = 0;
  for (int32_t i = 0; i < c->nbp; i++) {
    if (c->bp[i].max_s == 0) set_max_splits(c, &c->bp[i], (int32_t)min_kv);
    if (c->bp[i].mask_at < 0 && can_split(c, &c->bp[i], cnt, max_splits)) h[hn++] = i;
  }
  for (int32_t i = hn / 2 - 1; i >= 0; i--) heap_down(c, h, hn, i);
  while (packs < target && hn > 0) {
    bpack *p = &c->bp[h[0]];
    if (!can_split(c, p, cnt, max_splits)) { h[0] = h[--hn]; heap_down(c, h, hn, 0); continue; }
    add_splits(c, p, cnt, 1);
    packs++;
    if (p->splits >= p->max_s) h[0] = h[--hn];
    heap_down(c, h, hn, 0);
  }
  return 0;
}
