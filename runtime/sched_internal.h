/* sched_internal.h: what the scheduler's files share: the per-build state (ctx), the radix
** tree's nodes, packs before splitting, the scratch's buffer ids, the cost model's constants
** and small helpers. Not installed; the scheduler's API is sched.h.
** The stages, in build order (pat_sched_build_with in sched.c runs them):
**   sched_check.c   check_batch, then check_pages after the tree (ids, sharing rules)
**   sched_tree.c    build_tree: the radix tree over the block tables
**   sched_pack.c    compute_costs and emit_prefix: own / push down / absorb per node, packs
**   sched_split.c   split_packs: KV splits of long packs and to fill the grid
**   sched_assemble.c assemble: tiles, slots, merge items, launch groups
**   sched_scratch.c the working buffers kept between builds */
#ifndef PAT_SCHED_INTERNAL_H
#define PAT_SCHED_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sched.h"

/* ---- Cost model constants, in units of "one KV token read for one kv head" (K and V rows,
** 4 x head_dim bytes in fp16). docs/scheduler.md explains where they come from. */
#define COST_CTA    48.0           /* fixed cost of one CTA: launch, prologue, epilogue */
#define COST_STEP   8.0            /* one pipeline step: barriers, softmax rescale */
#define COST_INF    1e300

typedef struct node {
  int32_t pos;        /* page position of its first page in every row below it */
  int32_t npages;     /* full pages of its run (0 only for the root) */
  int32_t q_lo, q_hi; /* its queries: order[q_lo .. q_hi) */
  int32_t nterm;      /* order[q_lo .. q_lo + nterm): queries whose full pages end here */
  int32_t child_lo;   /* children: nodes child_lo .. child_lo + nchild - 1 */
  int32_t nchild;
  int32_t tails_pos;     /* terminal queries with a partial last page */
  double tails_sum;      /* their partial tokens */
  double own_b, own_s;   /* cost of "own packs" as a line in the inherited prefix tokens */
  double push_b, push_s; /* cost of "push down" (tangent at 0 inherited tokens) */
  double ab_b, ab_s;     /* cost of "absorb": masked packs hold the whole subtree */
  int32_t sub_pages;     /* pages of its subtree: its run, its children's, partial last pages */
  double sub_tok;        /* tokens of those pages */
} node;

typedef struct bpack {   /* a pack before KV splitting */
  int32_t q_lo, nq;      /* its queries: order[q_lo .. q_lo + nq) */
  int32_t pos0, npages;  /* page positions pos0 .. pos0 + npages - 1 of its queries' rows */
  int32_t kv_len;        /* tokens */
  int32_t splits, max_s; /* KV chunks chosen, most allowed by min_kv_per_split */
  int32_t page_begin;    /* its page ids in plan->pages */
  int32_t mask_at;       /* masked: its pages and mask words from mpage/mword[mask_at ..]; else -1 */
} bpack;

/* Per-call state. All per-query and per-node scratch lives in one allocation (`block`). */
typedef struct ctx {
  const pat_batch *b;
  const pat_sched_opts *o;
  const pat_spec *s;
  const int32_t *bt;  /* block table */
  size_t stride;      /* its row length */
  int32_t n, ps, gqa, cap;
  int32_t *nf;        /* full pages per query */
  int32_t *tl;        /* tokens of its partial last page per query (0: none) */
  int32_t *order;     /* queries in tree order */
  int32_t *cnt;       /* partial results per query */
  node *nodes;
  int32_t num_nodes;
  int64_t tree_pages; /* full pages over all nodes */
  int32_t ntails;     /* queries with a partial last page */
  int64_t tail_tokens;
  bpack *bp;
  int32_t nbp, bpcap;
  int32_t mf;         /* smallest M holding a full chunk (cap queries) */
  int32_t *mr;        /* [cap + 1]: smallest M holding r queries */
  double ctok1, cpack1, cmerge;
  int32_t mcap;       /* most queries a masked pack holds (0: no absorbing: no mma.sync tile, or
                      ** the spec's split.masked_packs is 0) */
  int32_t mchunk;     /* queries a masked pack aims at: enough packs to fill the GPU */
  int32_t grid_packs; /* packs that fill the GPU: ctas_per_sm x SMs / kv_heads */
  int32_t *mpage;     /* masked packs' page ids, growing (mpcap entries) */
  uint32_t *mword;    /* and their mask words */
  int32_t nmp, mpcap;
  int32_t *stack;     /* depth-first walk of a subtree (emit_chunk) */
  /* radix tree scratch */
  size_t hcap;
  int32_t *hkey, *hval, *gid, *gcnt, *tmp, *gslot;
  void *block;
  pat_sched_scratch *sc; /* where every working buffer comes from (and stays) */
} ctx;

/* The scratch's buffers, one per use. */
enum { SB_BLOCK, SB_BPACKS, SB_STACK, SB_MPAGE, SB_MWORD, SB_SEEN, SB_PT_KEY, SB_PT_CODE, SB_HEAP, SB_FINAL,
       /* a recycled plan's arrays, each handed over whole to the next plan */
       SB_PLAN_PACKS, SB_PLAN_PACK_QUERIES, SB_PLAN_PAGES, SB_PLAN_PAGE_MASKS, SB_PLAN_MERGES, SB_PLAN_GROUPS,
       SB_COUNT };
_Static_assert((int)SB_COUNT <= (int)PAT_SCHED_SCRATCH_BUFS, "pat_sched_scratch holds too few buffers");

/* ---- the stages (each file's header says more) ---- */

/* sched_scratch.c: buffer `id` of the scratch, at least `bytes` long; what it held is kept
** when it grows. NULL when out of memory (the old buffer stays in the scratch). */
void *sched_scratch(ctx *c, int id, size_t bytes);
/* A plan array of `bytes`: the recycled one of buffer `id` when large enough (the plan owns
** it from now on), else a new one. NULL when out of memory. */
void *sched_plan_array(ctx *c, int id, size_t bytes);

/* sched_check.c: the batch's plain fields, per query; -1 with a message on the first fault. */
int sched_check_batch(const pat_batch *b, const pat_sched_opts *o, char *err, size_t errlen);
/* After build_tree: page ids in range, each page once per query, a shared page at one
** position, partial pages never shared. 0 and the distinct tokens, or -1 with a message. */
int sched_check_pages(ctx *c, int64_t *unique_tokens, char *err, size_t errlen);

/* sched_tree.c: the radix tree of the batch into c->nodes (and c->order, c->tree_pages). */
void sched_build_tree(ctx *c);

/* sched_pack.c: the cost lines of every node, bottom-up. */
void sched_compute_costs(ctx *c);
/* Top-down: own / push down / absorb per node, the packs into c->bp and the packs of each
** query into c->cnt. inh, sa: 2 x num_nodes scratch entries. -1 when out of memory. */
int sched_emit_prefix(ctx *c, int32_t *inh, int32_t *sa);

/* sched_split.c: KV splits of c->bp (cnt: partial results per query, updated). -1 when out
** of memory. */
int sched_split_packs(ctx *c, int32_t *cnt);

/* sched_assemble.c: the final plan from c->bp and cnt. -1 when out of memory or too large. */
int sched_assemble(ctx *c, const int32_t *cnt, pat_host_plan *plan);

/* ---- small helpers ---- */

static inline const int32_t *row_of(const ctx *c, int32_t q)
{
  return c->bt + (size_t)q * c->stride;
}

static inline int32_t num_pages_of(const ctx *c, int32_t q)
{
  return c->nf[q] + (c->tl[q] > 0);
}

/* A pack of whole rows: its queries' pages pos0 .. pos0 + npages - 1, unsplit, unmasked.
** The caller has made room (c->bpcap). */
static inline void push_bpack(ctx *c, int32_t q_lo, int32_t nq, int32_t pos0, int32_t npages, int32_t kv_len)
{
  c->bp[c->nbp++] = (bpack){q_lo, nq, pos0, npages, kv_len, 1, 1, 0, -1};
}

/* Tiles the cost model chooses from: the spec's own, not those a tuning table added. */
static inline int model_tiles(const pat_spec *s)
{
  return s->num_model_tiles > 0 && s->num_model_tiles < s->num_tiles ? s->num_model_tiles : s->num_tiles;
}

/* Smallest tile M holding `rows` query rows, or 0 if none; mma_sync: among the mma.sync
** tiles only (those a masked pack can take). */
static inline int mfit(const pat_spec *s, int rows, int mma_sync)
{
  int best = 0;
  for (int i = 0; i < model_tiles(s); i++)
    if (!(mma_sync && s->tiles[i].wgmma) && s->tiles[i].m >= rows && (best == 0 || s->tiles[i].m < best))
      best = s->tiles[i].m;
  return best;
}

/* Largest tile M (of the mma.sync tiles with mma_sync), or 0 if none. */
static inline int largest_m(const pat_spec *s, int mma_sync)
{
  int m = 0;
  for (int i = 0; i < model_tiles(s); i++)
    if (!(mma_sync && s->tiles[i].wgmma) && s->tiles[i].m > m) m = s->tiles[i].m;
  return m;
}

/* Tensor-core work of one (padded) row x token, in KV-token reads: the spec's weight. */
static inline double mma_weight(const pat_spec *s)
{
  return 1.0 / (s->split.mma_rows_per_token > 0 ? s->split.mma_rows_per_token : 128);
}
/* Cost of one token on a tile of M rows, and of one CTA of it. */
static inline double ctok(const ctx *c, int m) { return 1.0 + mma_weight(c->s) * m; }
static inline double cpack(int m) { return COST_CTA + 0.5 * m; }

static inline uint32_t hash32(uint32_t x)
{
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}

/* Smallest power of two >= x (at least 16): open-addressing table sizes. */
static inline size_t pow2_at_least(size_t x)
{
  size_t p = 16;
  while (p < x) p <<= 1;
  return p;
}

#endif
