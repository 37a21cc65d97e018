/* sched.c: the pack scheduler: batch validation, radix tree over block tables, per-node
** own/push-down choice by a cost model, KV splitting, tile choice, slots and merge items.
** See docs/scheduler.md. Work is per page and per tree node, never per token. */
#include "sched.h"
#include "tuning.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Cost model constants, in units of "one KV token read for one kv head" (K and V rows,
** 4 x head_dim bytes in fp16). docs/scheduler.md explains where they come from. */
#define COST_CTA    48.0           /* fixed cost of one CTA: launch, prologue, epilogue */
#define COST_STEP   8.0            /* one pipeline step: barriers, softmax rescale */
#define COST_INF    1e300
/* Longest shared part a masked pack re-reads (tokens): 256 measured faster (1,256_256,32),
** 2048 40% slower (1,1024_2048,32 at 32/32) than own packs on the wgmma tile. */
#define MASKED_SHARED_MAX 1024

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

typedef struct fpack {   /* a final pack (one KV chunk of a bpack) */
  int32_t base, page_off, kv_len, tile;
} fpack;

typedef struct chunking { /* what absorbing a node's subtree into masked packs takes */
  int32_t packs;          /* masked packs; 0: the subtree cannot be absorbed */
  double cost_b, cost_s;  /* their cost as a line in the inherited tokens */
} chunking;

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

/* Buffer `id` of the scratch, at least `bytes` long; what it held is kept when it grows.
** NULL when out of memory (the old buffer stays in the scratch). */
static void *scratch(ctx *c, int id, size_t bytes)
{
  pat_sched_scratch *s = c->sc;
  if (bytes == 0) bytes = 1;
  if (s->cap[id] < bytes) {
    void *p = realloc(s->buf[id], bytes);
    if (!p) return NULL;
    s->buf[id] = p;
    s->cap[id] = bytes;
  }
  return s->buf[id];
}

void pat_sched_scratch_free(pat_sched_scratch *s)
{
  if (!s) return;
  for (int i = 0; i < PAT_SCHED_SCRATCH_BUFS; i++) free(s->buf[i]);
  memset(s, 0, sizeof *s);
}

/* A plan array of `bytes`: the recycled one of buffer `id` when large enough (the plan owns
** it from now on), else a new one. NULL when out of memory. */
static void *plan_array(ctx *c, int id, size_t bytes)
{
  pat_sched_scratch *s = c->sc;
  void *p = s->buf[id];
  if (p && s->cap[id] >= bytes) {
    s->buf[id] = NULL;
    s->cap[id] = 0;
    return p;
  }
  return malloc(bytes);
}

static void keep_array(pat_sched_scratch *s, int id, void *p, size_t bytes)
{
  free(s->buf[id]);
  s->buf[id] = p;
  s->cap[id] = p ? bytes : 0;
}

void pat_sched_scratch_recycle(pat_sched_scratch *s, pat_host_plan *plan)
{
  keep_array(s, SB_PLAN_PACKS, plan->packs, (size_t)plan->num_packs * sizeof *plan->packs);
  keep_array(s, SB_PLAN_PACK_QUERIES, plan->pack_queries, (size_t)plan->num_pack_queries * sizeof *plan->pack_queries);
  keep_array(s, SB_PLAN_PAGES, plan->pages, (size_t)plan->num_pages * sizeof *plan->pages);
  keep_array(s, SB_PLAN_PAGE_MASKS, plan->page_masks, (size_t)plan->num_pages * sizeof *plan->page_masks);
  keep_array(s, SB_PLAN_MERGES, plan->merges, (size_t)plan->num_merges * sizeof *plan->merges);
  keep_array(s, SB_PLAN_GROUPS, plan->groups, (size_t)plan->num_groups * sizeof *plan->groups);
  memset(plan, 0, sizeof *plan);
}

void pat_set_err(char *err, size_t errlen, const char *fmt, ...)
{
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const int32_t *row_of(const ctx *c, int32_t q)
{
  return c->bt + (size_t)q * c->stride;
}

static int32_t tail_tokens(const ctx *c, int32_t q)
{
  return c->tl[q];
}

static int32_t num_pages_of(const ctx *c, int32_t q)
{
  return c->nf[q] + (c->tl[q] > 0);
}

/* Tiles the cost model chooses from: the spec's own, not those a tuning table added. */
static int model_tiles(const pat_spec *s)
{
  return s->num_model_tiles > 0 && s->num_model_tiles < s->num_tiles ? s->num_model_tiles : s->num_tiles;
}

/* Smallest tile M holding `rows` query rows, or 0 if none; mma_sync: among the mma.sync
** tiles only (those a masked pack can take). */
static int mfit(const pat_spec *s, int rows, int mma_sync)
{
  int best = 0;
  for (int i = 0; i < model_tiles(s); i++)
    if (!(mma_sync && s->tiles[i].wgmma) && s->tiles[i].m >= rows && (best == 0 || s->tiles[i].m < best))
      best = s->tiles[i].m;
  return best;
}

/* Largest tile M (of the mma.sync tiles with mma_sync), or 0 if none. */
static int largest_m(const pat_spec *s, int mma_sync)
{
  int m = 0;
  for (int i = 0; i < model_tiles(s); i++)
    if (!(mma_sync && s->tiles[i].wgmma) && s->tiles[i].m > m) m = s->tiles[i].m;
  return m;
}

/* Tensor-core work of one (padded) row x token, in KV-token reads: the spec's weight. */
static double mma_weight(const pat_spec *s)
{
  return 1.0 / (s->split.mma_rows_per_token > 0 ? s->split.mma_rows_per_token : 128);
}
static double ctok(const ctx *c, int m) { return 1.0 + mma_weight(c->s) * m; }
static double cpack(int m) { return COST_CTA + 0.5 * m; }

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

static uint32_t hash32(uint32_t x)
{
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}

static size_t pow2_at_least(size_t x)
{
  size_t p = 16;
  while (p < x) p <<= 1;
  return p;
}

/* ---- validation of the plain fields, per query ---- */
static int check_batch(const pat_batch *b, const pat_sched_opts *o, char *err, size_t errlen)
{
  if (!b || !o || !o->spec) { pat_set_err(err, errlen, "batch, options and spec are required"); return -1; }
  const pat_spec *s = o->spec;
  if (b->num_queries < 1) { pat_set_err(err, errlen, "batch has %d queries (need at least 1)", (int)b->num_queries); return -1; }
  if (!b->seq_lens || !b->block_table) { pat_set_err(err, errlen, "batch has no seq_lens or block_table"); return -1; }
  if (b->page_size < 1) { pat_set_err(err, errlen, "page size %d is not positive", (int)b->page_size); return -1; }
  if (s->page_size > 0 && s->page_size != b->page_size) {
    pat_set_err(err, errlen, "batch page size %d differs from the spec's %d", (int)b->page_size, s->page_size);
    return -1;
  }
  if (b->block_table_stride < 1) { pat_set_err(err, errlen, "block table stride %d is not positive", (int)b->block_table_stride); return -1; }
  if (b->num_pages_total < 1) { pat_set_err(err, errlen, "KV cache has %d pages", (int)b->num_pages_total); return -1; }
  if (b->gqa < 1) { pat_set_err(err, errlen, "GQA ratio %d is not positive", (int)b->gqa); return -1; }
  if (s->num_gqa > 0) {
    int ok = 0;
    for (int i = 0; i < s->num_gqa; i++) ok |= s->gqa[i] == b->gqa;
    if (!ok) { pat_set_err(err, errlen, "GQA ratio %d is not built by spec '%s'", (int)b->gqa, s->name); return -1; }
  }
  if (s->num_tiles < 1) { pat_set_err(err, errlen, "spec '%s' has no tiles", s->name); return -1; }
  int mmax = largest_m(s, 0);
  if (mmax < b->gqa) {
    pat_set_err(err, errlen, "GQA ratio %d exceeds the largest tile M %d", (int)b->gqa, mmax);
    return -1;
  }
  if (o->num_sms < 1 || o->kv_heads < 1) {
    pat_set_err(err, errlen, "num_sms (%d) and kv_heads (%d) must be positive", o->num_sms, o->kv_heads);
    return -1;
  }
  if (o->mode != PAT_SCHED_PREFIX && o->mode != PAT_SCHED_DIRECT) {
    pat_set_err(err, errlen, "unknown scheduler mode %d", (int)o->mode);
    return -1;
  }
  int64_t cap_tokens = (int64_t)b->block_table_stride * b->page_size;
  for (int32_t q = 0; q < b->num_queries; q++) {
    int32_t len = b->seq_lens[q];
    if (len < 1) { pat_set_err(err, errlen, "query %d: seq_len %d (need at least 1)", (int)q, (int)len); return -1; }
    if (len > cap_tokens) {
      pat_set_err(err, errlen, "query %d: seq_len %d exceeds its block table row (%d pages x %d tokens)",
              (int)q, (int)len, (int)b->block_table_stride, (int)b->page_size);
      return -1;
    }
  }
  return 0;
}

/* Length of the common prefix of a[0 .. lim) and b[0 .. lim). */
static inline int32_t common_prefix(const int32_t *a, const int32_t *b, int32_t lim)
{
  int32_t r = 0;
  if (lim > 16) {
    if (memcmp(a, b, (size_t)lim * sizeof *a) == 0) return lim;
  }
  for (; r + 2 <= lim; r += 2) {
    uint64_t x, y;
    memcpy(&x, a + r, sizeof x);
    memcpy(&y, b + r, sizeof y);
    if (x != y) break;
  }
  while (r < lim && a[r] == b[r]) r++;
  return r;
}

/* ---- radix tree: nodes in breadth-first order, children contiguous, subtrees contiguous
** ranges of order[]. A node's run extends while every query has the leader's page at the next
** position; its queries are then split, stably, into those that end there and groups by the
** next page id (in order of first appearance; open-addressing map reset per use). When the
** groups already come in that order (the usual case) order[] is left as it is. */
static void build_tree(ctx *c)
{
  int32_t n = c->n;
  size_t hcap = c->hcap;
  int32_t *hkey = c->hkey, *hval = c->hval, *gid = c->gid, *gcnt = c->gcnt;
  int32_t *tmp = c->tmp, *gslot = c->gslot, *order = c->order;
  const int32_t *nf = c->nf, *tl = c->tl;
  node *nodes = c->nodes;
  int64_t tree_pages = 0;
  int32_t nn = 1;
  memset(&nodes[0], 0, sizeof nodes[0]);
  nodes[0].q_hi = n;
  for (int32_t v = 0; v < nn; v++) {
    node *nd = &nodes[v];
    int32_t lo = nd->q_lo, hi = nd->q_hi, e = nd->pos;
    int32_t leader = order[lo];
    nd->child_lo = nn;
    if (hi - lo == 1) {  /* one query: its whole row, then it ends here */
      int32_t t = tl[leader];
      nd->npages = nf[leader] - e;
      nd->nterm = 1;
      nd->nchild = 0;
      nd->tails_pos = t > 0;
      nd->tails_sum = t;
      tree_pages += nd->npages;
      continue;
    }
    int32_t run = nf[leader] - e;
    /* a child's queries were grouped by the page at `e`: the first page is shared */
    int32_t skip = v > 0 ? 1 : 0;
    const int32_t *rl = row_of(c, leader) + e;
    for (int32_t i = lo + 1; i < hi && run > skip; i++) {
      int32_t q = order[i];
      int32_t lim = nf[q] - e < run ? nf[q] - e : run;
      run = skip + common_prefix(row_of(c, q) + e + skip, rl + skip, lim - skip);
    }
    nd->npages = run;
    tree_pages += run;
    int32_t end = e + run;
    /* partition: queries ending here first, then groups by the page at `end` */
    int32_t nterm = 0, ng = 0, last_key = 0, last_gid = 0, maxg = -1, tails_pos = 0;
    int sorted = 1, small = hi - lo <= 16;
    double tails_sum = 0;
    for (int32_t i = lo; i < hi; i++) {
      int32_t q = order[i];
      if (nf[q] == end) {
        gid[i - lo] = -1;
        nterm++;
        tails_pos += tl[q] > 0;
        tails_sum += tl[q];
        sorted &= maxg < 0;
        continue;
      }
      int32_t key = row_of(c, q)[end];
      if (ng > 0 && key == last_key) {  /* rows sharing a prefix are usually adjacent */
        gid[i - lo] = last_gid;
        gcnt[last_gid]++;
        continue;
      }
      int32_t g;
      if (small) {  /* few queries: look the key up among the groups so far */
        g = ng - 1;
        while (g >= 0 && gslot[g] != key) g--;
        if (g < 0) { g = ng; gslot[ng] = key; gcnt[ng++] = 0; }
      } else {
        size_t h = hash32((uint32_t)key) & (hcap - 1);
        while (hval[h] >= 0 && hkey[h] != key) h = (h + 1) & (hcap - 1);
        if (hval[h] < 0) { hkey[h] = key; hval[h] = ng; gslot[ng] = (int32_t)h; gcnt[ng++] = 0; }
        g = hval[h];
      }
      gid[i - lo] = g;
      gcnt[g]++;
      sorted &= g >= maxg;
      maxg = g > maxg ? g : maxg;
      last_key = key;
      last_gid = g;
    }
    if (!small)
      for (int32_t g = 0; g < ng; g++) hval[gslot[g]] = -1;  /* reset the map */
    nd->nterm = nterm;
    nd->nchild = ng;
    nd->tails_pos = tails_pos;
    nd->tails_sum = tails_sum;
    if (ng == 0) continue;
    /* exclusive prefix sums: where each group starts */
    int32_t at = lo + nterm;
    for (int32_t g = 0; g < ng; g++) {
      int32_t cnt = gcnt[g];
      node *ch = &nodes[nn + g];
      ch->pos = end;
      ch->q_lo = at;
      ch->q_hi = at + cnt;
      gcnt[g] = at;
      at += cnt;
    }
    if (!sorted) {
      int32_t t = lo;
      for (int32_t i = lo; i < hi; i++) {
        int32_t q = order[i];
        if (gid[i - lo] < 0) tmp[t++ - lo] = q;
        else tmp[gcnt[gid[i - lo]]++ - lo] = q;
      }
      memcpy(order + lo, tmp, (size_t)(hi - lo) * sizeof *tmp);
    }
    nn += ng;
  }
  c->num_nodes = nn;
  c->tree_pages = tree_pages;
}

/* ---- page checks: ids in range, each page once per query, shared pages at one position,
** partial last pages never shared. One table entry per distinct page of the tree (a page
** shared by a node is looked at once, not once per query). Codes: position x 2 + partial. */

/* Slow path, only on error: finds who uses `page` and says what is wrong. */
static void report_conflict(const ctx *c, int32_t page, char *err, size_t errlen)
{
  int32_t fq = -1, fpos = -1, fpart = 0;
  for (int32_t q = 0; q < c->n; q++) {
    const int32_t *row = row_of(c, q);
    int32_t np = num_pages_of(c, q), first = -1;
    for (int32_t i = 0; i < np; i++) {
      if (row[i] != page) continue;
      if (first >= 0) {
        pat_set_err(err, errlen, "query %d: page %d appears twice (positions %d and %d)",
                (int)q, (int)page, (int)first, (int)i);
        return;
      }
      first = i;
    }
    if (first < 0) continue;
    int part = first == c->nf[q];  /* the partial last page */
    if (fq < 0) { fq = q; fpos = first; fpart = part; continue; }
    if (part || fpart) {
      int32_t pq = part ? q : fq, ppos = part ? first : fpos;
      int32_t oq = part ? fq : q, opos = part ? fpos : first;
      pat_set_err(err, errlen,
              "query %d: page %d is its partial last page (position %d) and is also used by "
              "query %d at position %d; a partial page cannot be shared",
              (int)pq, (int)page, (int)ppos, (int)oq, (int)opos);
      return;
    }
    if (first != fpos) {
      pat_set_err(err, errlen,
              "query %d: page %d at position %d is also used by query %d at position %d; a "
              "shared page must hold the same tokens (same position) in every query",
              (int)q, (int)page, (int)first, (int)fq, (int)fpos);
      return;
    }
  }
  pat_set_err(err, errlen, "page %d: inconsistent use", (int)page);
}

typedef struct ptab {  /* page id -> code: a direct array, or an open-addressing map */
  int direct;
  size_t cap;
  int32_t *key, *code;
} ptab;

/* Returns the slot of `page` (inserting it with code -1 when absent). */
static int32_t *ptab_slot(ptab *t, int32_t page)
{
  if (t->direct) return &t->code[page];
  size_t h = hash32((uint32_t)page) & (t->cap - 1);
  while (t->code[h] != -1 && t->key[h] != page) h = (h + 1) & (t->cap - 1);
  t->key[h] = page;
  return &t->code[h];
}

static int check_pages_exact(ctx *c, int64_t *unique_tokens, char *err, size_t errlen)
{
  size_t total = (size_t)c->n;
  for (int32_t v = 0; v < c->num_nodes; v++) total += (size_t)c->nodes[v].npages;
  int32_t npt = c->b->num_pages_total;
  ptab t = {0, 0, NULL, NULL};
  if ((size_t)npt <= 4 * total) {
    t.direct = 1;
    t.cap = (size_t)npt;
  } else {
    t.cap = pow2_at_least(total * 2);
    t.key = scratch(c, SB_PT_KEY, t.cap * sizeof *t.key);
  }
  t.code = scratch(c, SB_PT_CODE, t.cap * sizeof *t.code);
  if (!t.code || (!t.direct && !t.key)) {
    pat_set_err(err, errlen, "out of memory");
    return -1;
  }
  memset(t.code, 0xff, t.cap * sizeof *t.code);
  int64_t full = 0, tails = 0;
  int rc = 0;
  for (int32_t v = 0; v < c->num_nodes && rc == 0; v++) {
    const node *nd = &c->nodes[v];
    int32_t q = c->order[nd->q_lo];
    const int32_t *row = row_of(c, q);
    for (int32_t i = 0; i < nd->npages; i++) {
      int32_t page = row[nd->pos + i], pos = nd->pos + i;
      if (page < 0 || page >= npt) {
        pat_set_err(err, errlen, "query %d: page id %d at position %d is out of range [0, %d)",
                (int)q, (int)page, (int)pos, (int)npt);
        rc = -1;
        break;
      }
      int32_t *code = ptab_slot(&t, page);
      if (*code == -1) { *code = pos * 2; full++; }
      else if (*code != pos * 2) { report_conflict(c, page, err, errlen); rc = -1; break; }
    }
  }
  for (int32_t q = 0; q < c->n && rc == 0; q++) {
    int32_t tt = tail_tokens(c, q);
    if (tt == 0) continue;
    int32_t pos = c->nf[q], page = row_of(c, q)[pos];
    if (page < 0 || page >= npt) {
      pat_set_err(err, errlen, "query %d: page id %d at position %d is out of range [0, %d)",
              (int)q, (int)page, (int)pos, (int)npt);
      rc = -1;
      break;
    }
    int32_t *code = ptab_slot(&t, page);
    if (*code != -1) { report_conflict(c, page, err, errlen); rc = -1; break; }
    *code = pos * 2 + 1;
    tails += tt;
  }
  *unique_tokens = full * c->ps + tails;
  return rc;
}

/* The page checks of a valid batch: every page id of the tree's runs and partial pages is in
** range and distinct. Returns 0 (and the distinct tokens) when so, 1 when some page is out of
** range or met twice (which may still be valid: the same page at the same position under two
** different prefixes; check_pages_exact decides and words the message), -1 when out of
** memory. Only "seen" flags are kept: a byte per page id when the cache is small enough to
** clear cheaply, else an open-addressing set of the ids met. */
static int check_pages_fast(ctx *c, int64_t *unique_tokens)
{
  const uint32_t npt = (uint32_t)c->b->num_pages_total;
  const int64_t total = c->tree_pages + c->ntails;
  int rc = 0;
  if ((int64_t)npt <= 64 * total + 4096) {
    unsigned char *seen = scratch(c, SB_SEEN, npt);
    if (!seen) return -1;
    memset(seen, 0, npt);
    unsigned acc = 0;
    for (int32_t v = 0; v < c->num_nodes && acc == 0; v++) {
      const node *nd = &c->nodes[v];
      const int32_t *row = row_of(c, c->order[nd->q_lo]) + nd->pos;
      const int32_t np = nd->npages;
#pragma GCC unroll 4
      for (int32_t i = 0; i < np; i++) {
        uint32_t p = (uint32_t)row[i];
        if (p >= npt) { acc = 1; break; }
        acc |= seen[p];
        seen[p] = 1;
      }
    }
    for (int32_t q = 0; q < c->n && acc == 0; q++) {
      if (c->tl[q] == 0) continue;
      uint32_t p = (uint32_t)row_of(c, q)[c->nf[q]];
      if (p >= npt) { acc = 1; break; }
      acc |= seen[p];
      seen[p] = 1;
    }
    rc = acc != 0;
  } else {
    size_t cap = pow2_at_least((size_t)total * 2), mask = cap - 1;
    int32_t *key = scratch(c, SB_SEEN, cap * sizeof *key);
    if (!key) return -1;
    memset(key, 0xff, cap * sizeof *key);  /* -1: empty (valid ids are >= 0) */
    for (int32_t v = 0; v < c->num_nodes && rc == 0; v++) {
      const node *nd = &c->nodes[v];
      const int32_t *row = row_of(c, c->order[nd->q_lo]) + nd->pos;
      for (int32_t i = 0; i < nd->npages && rc == 0; i++) {
        int32_t p = row[i];
        if ((uint32_t)p >= npt) { rc = 1; break; }
        size_t h = hash32((uint32_t)p) & mask;
        while (key[h] >= 0 && key[h] != p) h = (h + 1) & mask;
        if (key[h] == p) rc = 1;
        key[h] = p;
      }
    }
    for (int32_t q = 0; q < c->n && rc == 0; q++) {
      if (c->tl[q] == 0) continue;
      int32_t p = row_of(c, q)[c->nf[q]];
      if ((uint32_t)p >= npt) { rc = 1; break; }
      size_t h = hash32((uint32_t)p) & mask;
      while (key[h] >= 0 && key[h] != p) h = (h + 1) & mask;
      if (key[h] == p) rc = 1;
      key[h] = p;
    }
  }
  if (rc == 0) *unique_tokens = c->tree_pages * c->ps + c->tail_tokens;
  return rc;
}

static int check_pages(ctx *c, int64_t *unique_tokens, char *err, size_t errlen)
{
  int rc = check_pages_fast(c, unique_tokens);
  if (rc < 0) { pat_set_err(err, errlen, "out of memory"); return -1; }
  return rc == 0 ? 0 : check_pages_exact(c, unique_tokens, err, errlen);
}

/* ---- cost model ---- */
/* The cheapest of a node's options (own, push down, absorb) with x inherited tokens; *slope
** (if not NULL) gets that option's slope. */
static double best_at(const node *nd, double x, double *slope)
{
  double v = nd->push_b + nd->push_s * x, sl = nd->push_s;
  double a = nd->own_b + nd->own_s * x, b = nd->ab_b + nd->ab_s * x;
  if (a < v) { v = a; sl = nd->own_s; }
  if (b < v) { v = b; sl = nd->ab_s; }
  if (slope) *slope = sl;
  return v;
}

static double line_min(const node *nd, double x) { return best_at(nd, x, NULL); }

/* The last packs of a node's terminal queries when `x` inherited tokens reach them: one pack
** per query of x + its partial page (none where that is empty). */
static double tails_cost(const ctx *c, const node *nd, double x)
{
  if (x > 0) return (nd->nterm * x + nd->tails_sum) * c->ctok1 + nd->nterm * c->cpack1;
  return nd->tails_sum * c->ctok1 + nd->tails_pos * c->cpack1;
}

/* Chunks of a node of nq queries: k packs, k - 1 full ones on tile mf, the rest on tile mr. */
static inline void own_chunks(const ctx *c, int32_t nq, int32_t *k, int *mf, int *mr)
{
  *k = nq <= c->cap ? 1 : (nq + c->cap - 1) / c->cap;
  int32_t r = nq - (*k - 1) * c->cap;
  *mf = c->mf;
  *mr = c->mr[r];
}

/* ---- absorbing: a node's whole subtree in masked packs. Its members (terminal queries
** with their partial last pages, then its children's subtrees, in order[]) are cut greedily
** into chunks: a member joins the open chunk while that stays within mchunk queries and the
** masked-page limit; a member alone may take up to mcap queries. Every chunk is one masked pack:
** the node's shared pages (seen by all its queries) and its members' pages (each seen by the
** queries below it), so that no query of the subtree needs another split. */

/* Member i of node nd: its first query (index into order[]), queries, pages and tokens. */
static void member(const ctx *c, const node *nd, int32_t i, int32_t *q_lo, int32_t *nq, int32_t *pages,
                   double *tokens)
{
  if (i < nd->nterm) {
    int32_t q = c->order[nd->q_lo + i];
    *q_lo = nd->q_lo + i;
    *nq = 1;
    *pages = c->tl[q] > 0;
    *tokens = c->tl[q];
  } else {
    const node *ch = &c->nodes[nd->child_lo + (i - nd->nterm)];
    *q_lo = ch->q_lo;
    *nq = ch->q_hi - ch->q_lo;
    *pages = ch->sub_pages;
    *tokens = ch->sub_tok;
  }
}

static int emit_chunk(ctx *c, const node *nd, int32_t shared_pos, int32_t i0, int32_t i1, int32_t qc,
                      int32_t pages);

/* The chunks of absorbing nd under `shared` pages of shared prefix (its run and what it
** inherits). With emit_pos >= 0 also pushes them as masked packs whose shared pages start at
** page position emit_pos. packs = 0: the subtree cannot be absorbed (or out of memory when
** emitting: *oom set). */
static chunking absorb_chunks(ctx *c, const node *nd, int32_t shared, int32_t emit_pos, int *oom)
{
  chunking r = {0, 0, 0};
  if (c->mcap < 2 || nd->q_hi - nd->q_lo < 2) return r;
  const int32_t room = PAT_MASKED_PAGES - shared, nm = nd->nterm + nd->nchild;
  const double L = (double)nd->npages * c->ps;
  int32_t qc = 0, pc = 0, i0 = 0;
  double tc = 0;
  /* Each chunk re-reads the shared pages, at the rows of an mma.sync tile: where they are
  ** more than the branches' tokens (a long prefix over short leaves), the own packs on the
  ** larger (wgmma) tile and a merge cost less than the model's weights say (measured:
  ** 1,1024_2048,32). */
  if (emit_pos < 0) {
    int64_t branch_tok = (int64_t)(nd->sub_tok - L);
    int32_t k = (nd->q_hi - nd->q_lo + c->mchunk - 1) / c->mchunk;
    if ((int64_t)shared * c->ps * k > branch_tok || shared * c->ps > MASKED_SHARED_MAX) return r;
  }
  for (int32_t i = 0; i <= nm; i++) {
    int32_t lo, mq = 0, mp = 0;
    double mt = 0;
    if (i < nm) {
      member(c, nd, i, &lo, &mq, &mp, &mt);
      if (mq > c->mcap || mp > room) return (chunking){0, 0, 0};
    }
    if (qc > 0 && (i == nm || qc + mq > c->mchunk || pc + mp > room)) {
      int m = mfit(c->s, qc * c->gqa, 1);
      r.cost_b += cpack(m) + ctok(c, m) * (L + tc);
      r.cost_s += ctok(c, m);
      r.packs++;
      if (emit_pos >= 0 && emit_chunk(c, nd, emit_pos, i0, i, qc, shared + pc)) {
        *oom = 1;
        return (chunking){0, 0, 0};
      }
      qc = pc = 0;
      tc = 0;
      i0 = i;
    }
    qc += mq;
    pc += mp;
    tc += mt;
  }
  /* Chunks this large over the whole batch would leave more than half of the grid empty, and
  ** masked packs are not split (measured: 2,8,16,256_256,256,32,32 at 16/8, 30% slower). */
  if (emit_pos < 0 && 2 * (int64_t)c->n * r.packs < (int64_t)c->grid_packs * (nd->q_hi - nd->q_lo))
    return (chunking){0, 0, 0};
  return r;
}

static void compute_costs(ctx *c)
{
  for (int32_t v = c->num_nodes - 1; v >= 0; v--) {
    node *nd = &c->nodes[v];
    double L = (double)nd->npages * c->ps;
    int32_t nq = nd->q_hi - nd->q_lo;
    double below0 = 0, pb = 0, psl = 0;
    nd->sub_pages = nd->npages + nd->tails_pos;
    nd->sub_tok = L + nd->tails_sum;
    for (int32_t i = 0; i < nd->nchild; i++) {
      const node *ch = &c->nodes[nd->child_lo + i];
      double sl;
      below0 += line_min(ch, 0);
      pb += best_at(ch, L, &sl);
      psl += sl;
      nd->sub_pages += ch->sub_pages;
      nd->sub_tok += ch->sub_tok;
    }
    below0 += tails_cost(c, nd, 0);
    pb += tails_cost(c, nd, L);
    psl += nd->nterm * c->ctok1;
    nd->push_b = pb;
    nd->push_s = psl;
    if (nq >= 2 && nd->npages > 0) {
      int32_t k; int mf, mr;
      own_chunks(c, nq, &k, &mf, &mr);
      double s = (k - 1) * ctok(c, mf) + ctok(c, mr);
      nd->own_s = s;
      nd->own_b = L * s + (k - 1) * cpack(mf) + cpack(mr) + c->cmerge * nq + below0;
    } else {
      nd->own_s = 0;
      nd->own_b = COST_INF;
    }
    chunking ab = absorb_chunks(c, nd, nd->npages, -1, NULL);
    nd->ab_b = ab.packs ? ab.cost_b : COST_INF;
    nd->ab_s = ab.packs ? ab.cost_s : 0;
  }
}

static int grow_bpacks(ctx *c, int32_t need)
{
  if (c->nbp + need <= c->bpcap) return 0;
  int32_t ncap = c->bpcap * 2;
  while (ncap < c->nbp + need) ncap *= 2;
  bpack *nb = scratch(c, SB_BPACKS, (size_t)ncap * sizeof *nb);
  if (!nb) return -1;
  c->bp = nb;
  c->bpcap = ncap;
  return 0;
}

static inline void push_bpack(ctx *c, int32_t q_lo, int32_t nq, int32_t pos0, int32_t npages, int32_t kv_len)
{
  c->bp[c->nbp++] = (bpack){q_lo, nq, pos0, npages, kv_len, 1, 1, 0, -1};
}

/* Writes page k of a masked pack; returns k + 1. (A count in a local, not in ctx: the page
** stores could alias it, and the compiler would reload it for every page.) */
static inline int32_t put_masked_page(int32_t *pg, uint32_t *wd, int32_t k, int32_t page, int32_t lo, int32_t hi,
                                      int32_t valid)
{
  pg[k] = page;
  wd[k] = PAT_MASK_WORD(lo, hi, valid);
  return k + 1;
}

/* One masked pack: queries order[q_lo ..] of members i0 .. i1-1 of nd (qc of them, `pages`
** pages in all): nd's shared pages from position shared_pos, then each member's subtree,
** depth first, each page with the pack's queries below it. */
static int emit_chunk(ctx *c, const node *nd, int32_t shared_pos, int32_t i0, int32_t i1, int32_t qc,
                      int32_t pages)
{
  if (grow_bpacks(c, 1)) return -1;
  if (c->nmp + pages > c->mpcap) {
    int32_t ncap = c->mpcap ? c->mpcap : 1024;
    while (ncap < c->nmp + pages) ncap *= 2;
    int32_t *np = scratch(c, SB_MPAGE, (size_t)ncap * sizeof *np);
    if (!np) return -1;
    c->mpage = np;
    uint32_t *nw = scratch(c, SB_MWORD, (size_t)ncap * sizeof *nw);
    if (!nw) return -1;
    c->mword = nw;
    c->mpcap = ncap;
  }
  int32_t q_lo, nq0, mp0;
  double mt0;
  member(c, nd, i0, &q_lo, &nq0, &mp0, &mt0);
  const int32_t at = c->nmp, end = nd->pos + nd->npages, ps = c->ps;
  int32_t *pg = c->mpage + at, k = 0;
  uint32_t *wd = c->mword + at;
  const int32_t *row = row_of(c, c->order[q_lo]);
  for (int32_t pos = shared_pos; pos < end; pos++) k = put_masked_page(pg, wd, k, row[pos], 0, qc, ps);
  for (int32_t i = i0; i < i1; i++) {
    if (i < nd->nterm) {
      int32_t q = c->order[nd->q_lo + i], r = nd->q_lo + i - q_lo;
      if (c->tl[q] > 0) k = put_masked_page(pg, wd, k, row_of(c, q)[end], r, r + 1, c->tl[q]);
      continue;
    }
    /* the child's subtree, depth first: the stack holds node indices */
    int32_t sp = 0;
    c->stack[sp++] = nd->child_lo + (i - nd->nterm);
    while (sp > 0) {
      const node *u = &c->nodes[c->stack[--sp]];
      const int32_t *ur = row_of(c, c->order[u->q_lo]), ue = u->pos + u->npages;
      const int32_t lo = u->q_lo - q_lo, hi = u->q_hi - q_lo;
      for (int32_t pos = u->pos; pos < ue; pos++) k = put_masked_page(pg, wd, k, ur[pos], lo, hi, ps);
      for (int32_t t = 0; t < u->nterm; t++) {
        int32_t q = c->order[u->q_lo + t];
        if (c->tl[q] > 0) k = put_masked_page(pg, wd, k, row_of(c, q)[ue], lo + t, lo + t + 1, c->tl[q]);
      }
      for (int32_t j = u->nchild - 1; j >= 0; j--) c->stack[sp++] = u->child_lo + j;
    }
  }
  c->nmp = at + k;
  const int32_t kv_len = (k - 1) * ps + PAT_MASK_VALID(wd[k - 1]);
  c->bp[c->nbp++] = (bpack){q_lo, qc, -1, k, kv_len, 1, 1, 0, at};
  return 0;
}

/* Top-down: decide own/push with the inherited prefix known, emit the packs. Also counts the
** packs of each query: one per owning node on its path, plus its last pack if not empty.
** inh and sa: per node, the first page position not yet in a pack, and the owning ancestors. */
static int emit_prefix(ctx *c, int32_t *inh, int32_t *sa)
{
  int max_splits = c->s->split.max_splits > 0 ? c->s->split.max_splits : 1;
  int32_t *cnt = c->cnt;
  inh[0] = 0;
  sa[0] = 0;
  for (int32_t v = 0; v < c->num_nodes; v++) {
    const node *nd = &c->nodes[v];
    if (sa[v] < 0) {  /* absorbed by an ancestor's masked packs */
      for (int32_t i = 0; i < nd->nchild; i++) sa[nd->child_lo + i] = -1;
      continue;
    }
    int32_t end = nd->pos + nd->npages;
    double P = (double)(nd->pos - inh[v]) * c->ps;
    double L = (double)nd->npages * c->ps;
    double pe = 0;
    for (int32_t i = 0; i < nd->nchild; i++) pe += line_min(&c->nodes[nd->child_lo + i], P + L);
    pe += tails_cost(c, nd, P + L);
    double ov = nd->own_b < COST_INF && sa[v] + 2 <= max_splits ? nd->own_b + nd->own_s * P : COST_INF;
    if (nd->ab_b < COST_INF && sa[v] + 1 <= max_splits) {
      int oom = 0;
      chunking ab = absorb_chunks(c, nd, end - inh[v], -1, &oom);
      double av = ab.packs ? ab.cost_b + ab.cost_s * P : COST_INF;
      if (av < ov && av < pe) {
        absorb_chunks(c, nd, end - inh[v], inh[v], &oom);
        if (oom) return -1;
        for (int32_t i = nd->q_lo; i < nd->q_hi; i++) cnt[c->order[i]] = sa[v] + 1;
        for (int32_t i = 0; i < nd->nchild; i++) sa[nd->child_lo + i] = -1;
        continue;
      }
    }
    int own = ov < pe;
    int32_t next = inh[v], nsa = sa[v];
    if (own) {
      int32_t nq = nd->q_hi - nd->q_lo, k; int mf, mr;
      own_chunks(c, nq, &k, &mf, &mr);
      if (grow_bpacks(c, k + nd->nterm)) return -1;
      for (int32_t j = 0; j < k; j++) {
        int32_t lo = nd->q_lo + j * c->cap;
        int32_t cnt_j = j + 1 < k ? c->cap : nd->q_hi - lo;
        push_bpack(c, lo, cnt_j, inh[v], end - inh[v], (end - inh[v]) * c->ps);
      }
      next = end;
      nsa++;
    } else if (grow_bpacks(c, nd->nterm)) {
      return -1;
    }
    for (int32_t i = 0; i < nd->nterm; i++) {
      int32_t q = c->order[nd->q_lo + i];
      int32_t tail = c->tl[q] ? 1 : 0;
      int32_t np = end + tail - next;
      cnt[q] = nsa + (np > 0);
      if (np > 0) push_bpack(c, nd->q_lo + i, 1, next, np, c->b->seq_lens[q] - next * c->ps);
    }
    for (int32_t i = 0; i < nd->nchild; i++) {
      inh[nd->child_lo + i] = next;
      sa[nd->child_lo + i] = nsa;
    }
  }
  return 0;
}

/* ---- KV splitting ---- */
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

static int split_packs(ctx *c, int32_t *cnt)
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
  int32_t *h = scratch(c, SB_HEAP, (size_t)c->nbp * sizeof *h);
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
static int assemble(ctx *c, int32_t *cnt, pat_host_plan *plan)
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
  fpack *fp = scratch(c, SB_FINAL, (size_t)nf * sizeof *fp + ((size_t)nf * 2 + (size_t)n * 2 + nb) * sizeof(int32_t));
  int32_t *key = fp ? (int32_t *)(void *)(fp + nf) : NULL;
  int32_t *perm = key + nf, *next = perm + nf, *bucket = next + (size_t)n * 2;
  plan->packs = plan_array(c, SB_PLAN_PACKS, (size_t)nf * sizeof *plan->packs);
  plan->pack_queries = plan_array(c, SB_PLAN_PACK_QUERIES, (size_t)npq * sizeof *plan->pack_queries);
  plan->pages = plan_array(c, SB_PLAN_PAGES, (size_t)(npages ? npages : 1) * sizeof *plan->pages);
  if (c->nmp > 0) {  /* words of unmasked packs' pages stay 0 */
    size_t bytes = (size_t)(npages ? npages : 1) * sizeof *plan->page_masks;
    plan->page_masks = plan_array(c, SB_PLAN_PAGE_MASKS, bytes);
    if (plan->page_masks) memset(plan->page_masks, 0, bytes);
  }
  plan->merges = plan_array(c, SB_PLAN_MERGES, (size_t)(nmerge ? nmerge : 1) * sizeof *plan->merges);
  plan->groups = plan_array(c, SB_PLAN_GROUPS, (size_t)nt * sizeof *plan->groups);
  int rc = -1;
  if (!fp || !plan->packs || !plan->pack_queries || !plan->pages || !plan->merges || !plan->groups ||
      (c->nmp > 0 && !plan->page_masks))
    goto out;
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

const char *pat_sched_mode_name(pat_sched_mode mode)
{
  return mode == PAT_SCHED_DIRECT ? "direct" : mode == PAT_SCHED_PREFIX ? "prefix" : "unknown";
}

void pat_host_plan_free(pat_host_plan *plan)
{
  if (!plan) return;
  free(plan->packs);
  free(plan->pack_queries);
  free(plan->pages);
  free(plan->page_masks);
  free(plan->merges);
  free(plan->groups);
  memset(plan, 0, sizeof *plan);
}

/* Carves the per-call arrays out of one scratch buffer. Returns -1 when out of memory. */
static int alloc_scratch(ctx *c)
{
  size_t n = (size_t)c->n, nn = 2 * n + 1;
  c->hcap = pow2_at_least(n * 2);
  size_t bytes = nn * sizeof(node)
               + (8 * n + 1 + 2 * c->hcap + (size_t)c->cap + 1 + 2 * nn) * sizeof(int32_t);
  char *p = scratch(c, SB_BLOCK, bytes);
  if (!p) return -1;
  c->block = p;
  c->nodes = (node *)(void *)p;           p += nn * sizeof(node);
  int32_t *w = (int32_t *)(void *)p;
  c->nf = w;    w += n;
  c->tl = w;    w += n;
  c->order = w; w += n;
  c->cnt = w;   w += n;
  c->gid = w;   w += n;
  c->gcnt = w;  w += n + 1;
  c->tmp = w;   w += n;
  c->gslot = w; w += n;
  c->hkey = w;  w += c->hcap;
  c->hval = w;  w += c->hcap;
  c->mr = w;    w += (size_t)c->cap + 1;
  /* inh and sa of emit_prefix: the last 2 x nn entries */
  return 0;
}

int pat_sched_build(const pat_batch *b, const pat_sched_opts *o, pat_host_plan *plan,
                    char *err, size_t errlen)
{
  pat_sched_scratch sc = {0};
  int rc = pat_sched_build_with(b, o, &sc, plan, err, errlen);
  pat_sched_scratch_free(&sc);
  return rc;
}

int pat_sched_build_with(const pat_batch *b, const pat_sched_opts *o, pat_sched_scratch *scratch_bufs,
                         pat_host_plan *plan, char *err, size_t errlen)
{
  if (err && errlen) err[0] = '\0';
  if (!plan) { pat_set_err(err, errlen, "no plan to fill"); return -1; }
  memset(plan, 0, sizeof *plan);
  if (!scratch_bufs) { pat_set_err(err, errlen, "no scratch buffers"); return -1; }
  if (check_batch(b, o, err, errlen)) return -1;

  ctx c;
  memset(&c, 0, sizeof c);
  c.sc = scratch_bufs;
  c.b = b;
  c.o = o;
  c.s = o->spec;
  c.bt = b->block_table;
  c.stride = (size_t)b->block_table_stride;
  c.n = b->num_queries;
  c.ps = b->page_size;
  c.gqa = b->gqa;
  c.cap = largest_m(c.s, 0) / c.gqa;
  c.ctok1 = ctok(&c, mfit(c.s, c.gqa, 0));
  c.cpack1 = cpack(mfit(c.s, c.gqa, 0));
  /* merge: a partial O written and read back per q head, against 4 x head_dim bytes of K and
  ** V per token: 2 x 4 x D x gqa / (4 x D) = 2 x gqa tokens for fp32 partials, plus the LSE.
  ** Partials are 2-byte now; 0.5 to 4 x gqa + 1 measured the same (H200, bench/NOTES.md), so
  ** the weight is kept. */
  c.cmerge = 2.0 * c.gqa + 1.0;
  /* Masked packs: mma.sync tiles only; lo and hi of a mask word are 8-bit. They aim at
  ** ctas_per_sm CTAs an SM were every query in one: more queries a pack re-read fewer shared
  ** pages, fewer leave SMs idle, more start a second wave. The split policy leaves them
  ** alone (split_packs). */
  c.mcap = largest_m(c.s, 1) / c.gqa < 255 ? largest_m(c.s, 1) / c.gqa : 255;
  if (!c.s->split.masked_packs) c.mcap = 0; /* the spec turned them off */
  {
    int64_t ctas = (int64_t)(c.s->split.ctas_per_sm > 0 ? c.s->split.ctas_per_sm : 1) * (o->num_sms > 0 ? o->num_sms : 1);
    /* whole waves: one pack more than fits starts a second wave of kv_heads CTAs */
    int64_t packs = ctas / o->kv_heads > 1 ? ctas / o->kv_heads : 1;
    c.grid_packs = (int32_t)packs;
    int64_t q = (c.n + packs - 1) / packs;
    c.mchunk = (int32_t)(q < 2 ? 2 : q > c.mcap ? c.mcap : q);
  }

  size_t n = (size_t)c.n;
  c.bpcap = c.n + 16;
  c.bp = scratch(&c, SB_BPACKS, (size_t)c.bpcap * sizeof *c.bp);
  int rc = -1;
  int64_t unique = 0;
  if (!c.bp || alloc_scratch(&c)) { pat_set_err(err, errlen, "out of memory"); goto out; }
  int32_t *inh = c.mr + c.cap + 1, *sa = inh + (2 * n + 1);
  c.mf = mfit(c.s, c.cap * c.gqa, 0);
  for (int32_t r = 0; r <= c.cap; r++) c.mr[r] = mfit(c.s, r * c.gqa, 0);
  memset(c.hval, 0xff, c.hcap * sizeof *c.hval);  /* -1: empty */
  {
    const int32_t *sl = b->seq_lens;
    int32_t ps = c.ps, ntails = 0;
    int64_t tail_sum = 0;
    if ((ps & (ps - 1)) == 0) {
      int sh = __builtin_ctz((unsigned)ps);
      for (int32_t q = 0; q < c.n; q++) {
        c.nf[q] = sl[q] >> sh;
        c.tl[q] = sl[q] & (ps - 1);
      }
    } else {
      for (int32_t q = 0; q < c.n; q++) {
        c.nf[q] = sl[q] / ps;
        c.tl[q] = sl[q] - c.nf[q] * ps;
      }
    }
    for (int32_t q = 0; q < c.n; q++) {
      c.order[q] = q;
      ntails += c.tl[q] > 0;
      tail_sum += c.tl[q];
    }
    c.ntails = ntails;
    c.tail_tokens = tail_sum;
  }
  build_tree(&c);
  if (check_pages(&c, &unique, err, errlen)) goto out;

  if (o->mode == PAT_SCHED_PREFIX) {
    c.stack = scratch(&c, SB_STACK, (size_t)c.num_nodes * sizeof *c.stack);
    if (!c.stack) { pat_set_err(err, errlen, "out of memory"); goto out; }
    compute_costs(&c);
    if (emit_prefix(&c, inh, sa)) { pat_set_err(err, errlen, "out of memory"); goto out; }
  } else {
    for (int32_t i = 0; i < c.n; i++) {
      int32_t q = c.order[i];
      push_bpack(&c, i, 1, 0, num_pages_of(&c, q), b->seq_lens[q]);
      c.cnt[q] = 1;
    }
  }
  if (split_packs(&c, c.cnt) || assemble(&c, c.cnt, plan)) {
    pat_host_plan_free(plan);
    pat_set_err(err, errlen, "out of memory or plan too large");
    goto out;
  }
  plan->kv_tokens_unique = unique;
  rc = 0;
out:
  /* every working buffer stays in the scratch */
  return rc;
}
