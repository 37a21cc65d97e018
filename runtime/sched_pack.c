/* sched_pack.c: the pack choice per tree node. Bottom-up, each node's three options (its own
** packs, pushing its pages down to its children, absorbing its subtree into masked packs)
** as cost lines in the prefix tokens it inherits; top-down, with the inheritance known, the
** cheapest option is taken and its packs are emitted. docs/scheduler.md has the model. */
#include "sched_internal.h"

#include <string.h>

/* Longest shared part a masked pack re-reads (tokens): 256 measured faster (1,256_256,32),
** 2048 40% slower (1,1024_2048,32 at 32/32) than own packs on the wgmma tile. */
#define MASKED_SHARED_MAX 1024

typedef struct chunking { /* what absorbing a node's subtree into masked packs takes */
  int32_t packs;          /* masked packs; 0: the subtree cannot be absorbed */
  double cost_b, cost_s;  /* their cost as a line in the inherited tokens */
} chunking;

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

void sched_compute_costs(ctx *c)
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
  bpack *nb = sched_scratch(c, SB_BPACKS, (size_t)ncap * sizeof *nb);
  if (!nb) return -1;
  c->bp = nb;
  c->bpcap = ncap;
  return 0;
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
    int32_t *np = sched_scratch(c, SB_MPAGE, (size_t)ncap * sizeof *np);
    if (!np) return -1;
    c->mpage = np;
    uint32_t *nw = sched_scratch(c, SB_MWORD, (size_t)ncap * sizeof *nw);
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
int sched_emit_prefix(ctx *c, int32_t *inh, int32_t *sa)
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
