/* test_sched.c: pack scheduler invariants on random and paper trees, CPU execution of plans
** against naive attention, batch validation errors, direct mode. Criterion suite "sched". */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_exec.h"
#include "sched.h"
#include "tree.h"


static const int gqas[] = {1, 4, 7, 8};

static uint64_t mix(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void add_tile(pat_spec *s, int m, int n, int warps)
{
  pat_tile *t = &s->tiles[s->num_tiles++];
  memset(t, 0, sizeof *t);
  t->m = m;
  t->n = n;
  t->warps = warps;
  t->stages = 2;
}

/* Specs built by hand: tile set 0 = the authors' M in {16, 32, 64}; 1 = one big tile;
** 2 = small and very large M; split policies vary with `policy`. */
static void make_spec(pat_spec *s, int tileset, int policy, int page_size)
{
  memset(s, 0, sizeof *s);
  strcpy(s->name, "test");
  strcpy(s->path, "<test>");
  s->dtype = PAT_FP16;
  s->head_dim = 128;
  s->page_size = page_size;
  s->num_gqa = 4;
  for (int i = 0; i < 4; i++) s->gqa[i] = gqas[i];
  switch (tileset) {
  case 0: add_tile(s, 16, 32, 1); add_tile(s, 32, 64, 2); add_tile(s, 64, 64, 4); add_tile(s, 64, 128, 4); break;
  case 1: add_tile(s, 64, 64, 4); break;
  default: add_tile(s, 128, 64, 8); add_tile(s, 16, 16, 1); add_tile(s, 48, 32, 3); break;
  }
  switch (policy) {
  case 0: s->split = (pat_split_policy){64, 8, 2, 128, 1}; break;
  case 1: s->split = (pat_split_policy){16, 2, 1, 128, 1}; break;
  case 2: s->split = (pat_split_policy){256, 16, 4, 128, 1}; break;
  default: s->split = (pat_split_policy){32, 1, 2, 128, 1}; break;
  }
  s->num_archs = 1;
  s->archs[0] = 80;
}

static int max_m(const pat_spec *s)
{
  int m = 0;
  for (int i = 0; i < s->num_tiles; i++) m = s->tiles[i].m > m ? s->tiles[i].m : m;
  return m;
}

static int pos_of(const pat_batch *b, int q, int page)
{
  const int32_t *row = b->block_table + (size_t)q * (size_t)b->block_table_stride;
  int np = (b->seq_lens[q] + b->page_size - 1) / b->page_size;
  for (int i = 0; i < np; i++)
    if (row[i] == page) return i;
  return -1;
}

/* A masked pack: an mma.sync tile, within the page window; each page's mask names pack
** queries that hold the page (at any position) and valid tokens that are theirs. Counts the
** tokens each query sees into cov. */
static void check_masked_pack(const pat_batch *b, const pat_spec *s, const pat_host_plan *p, int i,
                              const pat_tile *t, unsigned char *cov, const int64_t *qoff, const char *what)
{
  const pat_pack *pk = &p->packs[i];
  const int ps = b->page_size, np = (pk->kv_len + ps - 1) / ps;
  (void)s;
  cr_assert(!t->wgmma, "%s: masked pack %d on a wgmma tile", what, i);
  cr_assert(p->page_masks, "%s: masked pack %d without mask words", what, i);
  cr_assert(np <= PAT_MASKED_PAGES, "%s: masked pack %d has %d pages", what, i, np);
  /* every query of the pack sees a token of it: no row ends with an empty softmax */
  unsigned char *sees = calloc((size_t)pk->num_queries, 1);
  for (int k = 0; k < np; k++) {
    const uint32_t w = p->page_masks[pk->page_begin + k];
    int lo = PAT_MASK_LO(w), hi = PAT_MASK_HI(w), valid = PAT_MASK_VALID(w);
    if (k == np - 1 && pk->kv_len - k * ps < valid) valid = pk->kv_len - k * ps;
    cr_assert(lo < hi && hi <= pk->num_queries && valid >= 1 && valid <= ps,
              "%s: pack %d page %d mask lo %d hi %d valid %d", what, i, k, lo, hi, valid);
    for (int j = lo; j < hi; j++) {
      int q = p->pack_queries[pk->query_begin + j].query;
      int pos = pos_of(b, q, p->pages[pk->page_begin + k]);
      cr_assert(pos >= 0, "%s: masked pack %d: query %d does not hold page %d", what, i, q, k);
      cr_assert(pos * ps + valid <= b->seq_lens[q], "%s: masked pack %d page %d past query %d's end", what, i, k, q);
      for (int x = 0; x < valid; x++) cov[qoff[q] + pos * ps + x]++;
      sees[j] = 1;
    }
  }
  for (int j = 0; j < pk->num_queries; j++)
    cr_assert(sees[j], "%s: masked pack %d: its query %d sees none of its tokens", what, i, j);
  free(sees);
}

/* Every structural invariant of a plan. Returns the number of packs that hold more than one
** query (0 in direct mode). */
static int check_plan(const pat_batch *b, const pat_spec *s, const pat_host_plan *p,
                      int64_t unique, const char *what)
{
  const int ps = b->page_size, n = b->num_queries;
  const size_t sn = n > 0 ? (size_t)n : 1;
  cr_assert_eq(p->num_queries, n, "%s", what);
  cr_assert_gt(p->num_packs, 0, "%s", what);
  /* groups: contiguous pack ranges, together every pack once, one group per tile */
  int at = 0, tile_seen[PAT_MAX_TILES] = {0};
  int *pack_tile = malloc((size_t)p->num_packs * sizeof *pack_tile);
  for (int i = 0; i < p->num_packs; i++) pack_tile[i] = -1;
  for (int g = 0; g < p->num_groups; g++) {
    const pat_tile_group *gr = &p->groups[g];
    cr_assert(gr->tile >= 0 && gr->tile < s->num_tiles, "%s: group tile %d", what, gr->tile);
    cr_assert(!tile_seen[gr->tile], "%s: tile %d in two groups", what, gr->tile);
    tile_seen[gr->tile] = 1;
    cr_assert_gt(gr->num_packs, 0, "%s", what);
    cr_assert(gr->pack_begin >= 0 && gr->pack_begin + gr->num_packs <= p->num_packs, "%s: group range", what);
    int longest = 0;
    for (int i = 0; i < gr->num_packs; i++) {
      cr_assert_eq(pack_tile[gr->pack_begin + i], -1, "%s: pack %d in two groups", what, gr->pack_begin + i);
      pack_tile[gr->pack_begin + i] = gr->tile;
      if (p->packs[gr->pack_begin + i].kv_len > longest) longest = p->packs[gr->pack_begin + i].kv_len;
    }
    /* the launch sizes its K/V ring by this: an understatement would overrun shared memory */
    cr_assert_eq(gr->max_kv_len, longest, "%s: group %d max_kv_len", what, g);
    at += gr->num_packs;
  }
  /* launch order: groups by the expected run time of their first (longest) CTA, descending */
  const double wm = 1.0 / (s->split.mma_rows_per_token > 0 ? s->split.mma_rows_per_token : 128);
  for (int g = 1; g < p->num_groups; g++) {
    const pat_tile_group *ga = &p->groups[g - 1], *gb = &p->groups[g];
    double ka = p->packs[ga->pack_begin].kv_len * (1.0 + wm * s->tiles[ga->tile].m);
    double kb = p->packs[gb->pack_begin].kv_len * (1.0 + wm * s->tiles[gb->tile].m);
    cr_assert_geq(ka, kb, "%s: group %d (tile %d) launches before a longer one (tile %d)", what, g - 1,
                  ga->tile, gb->tile);
  }
  cr_assert_eq(at, p->num_packs, "%s: groups cover %d of %d packs", what, at, p->num_packs);

  int64_t total_tokens = 0;
  for (int q = 0; q < n; q++) total_tokens += b->seq_lens[q];
  int64_t *qoff = malloc((sn + 1) * sizeof *qoff);
  qoff[0] = 0;
  for (int q = 0; q < n; q++) qoff[q + 1] = qoff[q] + b->seq_lens[q];
  unsigned char *cov = calloc((size_t)total_tokens, 1);
  int *nsplit = calloc(sn, sizeof *nsplit);
  int *slot_min = malloc(sn * sizeof *slot_min), *slot_max = malloc(sn * sizeof *slot_max);
  int *neg = calloc(sn, sizeof *neg);
  for (int q = 0; q < n; q++) { slot_min[q] = 1 << 30; slot_max[q] = -1; }
  int64_t read = 0;
  int shared = 0;
  int pq_next = 0;
  for (int i = 0; i < p->num_packs; i++) {
    const pat_pack *pk = &p->packs[i];
    const pat_tile *t = &s->tiles[pack_tile[i]];
    cr_assert(pk->num_queries >= 1 && pk->num_queries <= t->m / b->gqa,
              "%s: pack %d has %d queries for M=%d gqa=%d", what, i, pk->num_queries, t->m, b->gqa);
    cr_assert_eq(pk->query_begin, pq_next, "%s: pack queries not in order", what);
    pq_next += pk->num_queries;
    cr_assert(pk->kv_len >= 1, "%s", what);
    int np = (pk->kv_len + ps - 1) / ps;
    cr_assert(pk->page_begin >= 0 && pk->page_begin + np <= p->num_pages, "%s: pages", what);
    read += pk->kv_len;
    if (pk->num_queries > 1) shared++;
    if (pk->masked) {
      check_masked_pack(b, s, p, i, t, cov, qoff, what);
      for (int j = 0; j < pk->num_queries; j++) {
        const pat_pack_query pq = p->pack_queries[pk->query_begin + j];
        nsplit[pq.query]++;
        if (pq.slot < 0) neg[pq.query]++;
        else {
          slot_min[pq.query] = pq.slot < slot_min[pq.query] ? pq.slot : slot_min[pq.query];
          slot_max[pq.query] = pq.slot > slot_max[pq.query] ? pq.slot : slot_max[pq.query];
        }
      }
      continue;
    }
    int start = -1;
    for (int j = 0; j < pk->num_queries; j++) {
      const pat_pack_query pq = p->pack_queries[pk->query_begin + j];
      cr_assert(pq.query >= 0 && pq.query < n, "%s", what);
      int q = pq.query;
      int s0 = pos_of(b, q, p->pages[pk->page_begin]);
      cr_assert(s0 >= 0, "%s: pack %d query %d does not attend to its first page", what, i, q);
      if (j == 0) start = s0;
      cr_assert_eq(s0, start, "%s: pack %d queries at different positions", what, i);
      const int32_t *row = b->block_table + (size_t)q * (size_t)b->block_table_stride;
      for (int k = 0; k < np; k++)
        cr_assert_eq(row[s0 + k], p->pages[pk->page_begin + k], "%s: pack %d query %d page %d", what, i, q, k);
      cr_assert(s0 * ps + pk->kv_len <= b->seq_lens[q], "%s: pack %d past query %d's end", what, i, q);
      for (int k = 0; k < pk->kv_len; k++) cov[qoff[q] + s0 * ps + k]++;
      nsplit[q]++;
      if (pq.slot < 0) neg[q]++;
      else {
        slot_min[q] = pq.slot < slot_min[q] ? pq.slot : slot_min[q];
        slot_max[q] = pq.slot > slot_max[q] ? pq.slot : slot_max[q];
      }
    }
  }
  cr_assert_eq(pq_next, p->num_pack_queries, "%s", what);
  for (int64_t k = 0; k < total_tokens; k++)
    if (cov[k] != 1) {
      int q = 0;
      while (qoff[q + 1] <= k) q++;
      cr_assert_fail("%s: query %d token %lld covered %d times", what, q, (long long)(k - qoff[q]), cov[k]);
    }
  cr_assert_eq(read, p->kv_tokens_read, "%s: kv_tokens_read", what);
  cr_assert_eq(p->kv_tokens_unique, unique, "%s: kv_tokens_unique %lld, expected %lld", what,
               (long long)p->kv_tokens_unique, (long long)unique);
  /* slots: -1 iff one split; otherwise dense, contiguous, one merge item */
  int *merged = calloc(sn, sizeof *merged);
  unsigned char *slot_used = calloc((size_t)p->num_slots + 1, 1);
  int64_t slots = 0;
  for (int i = 0; i < p->num_merges; i++) {
    const pat_merge_item *m = &p->merges[i];
    cr_assert(m->query >= 0 && m->query < n, "%s", what);
    cr_assert(!merged[m->query], "%s: query %d merged twice", what, m->query);
    merged[m->query] = 1;
    cr_assert_eq(m->num_splits, nsplit[m->query], "%s: query %d merge splits", what, m->query);
    cr_assert_eq(m->slot_begin, slot_min[m->query], "%s", what);
    cr_assert(m->slot_begin >= 0 && m->slot_begin + m->num_splits <= p->num_slots, "%s", what);
    for (int k = 0; k < m->num_splits; k++) {
      cr_assert(!slot_used[m->slot_begin + k], "%s: slot reused", what);
      slot_used[m->slot_begin + k] = 1;
    }
    slots += m->num_splits;
  }
  cr_assert_eq(slots, p->num_slots, "%s: slots not dense", what);
  for (int q = 0; q < n; q++) {
    cr_assert(nsplit[q] >= 1, "%s: query %d in no pack", what, q);
    cr_assert(nsplit[q] <= (s->split.max_splits > 0 ? s->split.max_splits : 1),
              "%s: query %d has %d splits (max %d)", what, q, nsplit[q], s->split.max_splits);
    if (nsplit[q] == 1) {
      cr_assert(neg[q] == 1 && !merged[q], "%s: query %d single split must use slot -1", what, q);
    } else {
      cr_assert(neg[q] == 0 && merged[q], "%s: query %d has %d splits, slot -1 used", what, q, nsplit[q]);
      cr_assert_eq(slot_max[q] - slot_min[q] + 1, nsplit[q], "%s: query %d slots not contiguous", what, q);
    }
  }
  free(merged); free(slot_used); free(pack_tile); free(qoff); free(cov); free(nsplit);
  free(slot_min); free(slot_max); free(neg);
  return shared;
}

static float *randn(size_t n, uint64_t *st)
{
  float *x = malloc(n * sizeof *x);
  for (size_t i = 0; i < n; i += 2) {
    double u1 = ((mix(st) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (mix(st) >> 11) / 9007199254740992.0;
    double r = sqrt(-2.0 * log(u1));
    x[i] = (float)(r * cos(6.283185307179586 * u2));
    if (i + 1 < n) x[i + 1] = (float)(r * sin(6.283185307179586 * u2));
  }
  return x;
}

/* Runs the plan on the CPU executor and compares with naive attention. */
static void check_numerics(const pat_batch *b, const pat_host_plan *p, int kv_heads, int head_dim,
                           uint64_t seed, const char *what)
{
  uint64_t st = seed;
  pat_cpu_attn a = {0};
  a.num_queries = b->num_queries;
  a.kv_heads = kv_heads;
  a.q_heads = kv_heads * b->gqa;
  a.head_dim = head_dim;
  a.page_size = b->page_size;
  a.scale = 1.0f / sqrtf((float)head_dim);
  size_t nq = (size_t)a.num_queries * (size_t)a.q_heads * (size_t)head_dim;
  size_t nkv = (size_t)b->num_pages_total * (size_t)b->page_size * (size_t)kv_heads * (size_t)head_dim;
  float *q = randn(nq, &st), *k = randn(nkv, &st), *v = randn(nkv, &st);
  a.q = q; a.k_cache = k; a.v_cache = v;
  float *out = malloc(nq * sizeof *out), *ref = malloc(nq * sizeof *ref);
  for (size_t i = 0; i < nq; i++) out[i] = NAN;
  cr_assert_eq(pat_cpu_exec_plan(p, &a, out), 0, "%s: executor failed", what);
  pat_cpu_reference(b, &a, ref);
  double worst = 0;
  for (size_t i = 0; i < nq; i++) {
    double e = fabs((double)out[i] - ref[i]);
    if (!(e <= worst)) worst = e;  /* NaN counts as a failure */
  }
  cr_assert(worst < 1e-4, "%s: max abs error %g", what, worst);
  free(q); free(k); free(v); free(out); free(ref);
}

static pat_sched_opts make_opts(const pat_spec *s, int num_sms, int kv_heads, pat_sched_mode mode)
{
  pat_sched_opts o;
  memset(&o, 0, sizeof o);
  o.spec = s;
  o.num_sms = num_sms;
  o.kv_heads = kv_heads;
  o.mode = mode;
  return o;
}

Test(sched, random_trees_invariants)
{
  static const int page_sizes[] = {8, 16, 32};
  int shared_total = 0;
  for (int it = 0; it < 240; it++) {
    uint64_t st = 1000 + (uint64_t)it;
    int ps = page_sizes[mix(&st) % 3];
    int gqa = gqas[mix(&st) % 4];
    pat_spec spec;
    make_spec(&spec, (int)(mix(&st) % 3), (int)(mix(&st) % 4), ps);
    if (max_m(&spec) < gqa) continue;
    pat_random_tree_opts ro = {0};
    ro.max_depth = 6;
    ro.max_fanout = 64;
    ro.max_queries = 1 + (int)(mix(&st) % 300);
    ro.max_pages = 2000;
    ro.max_node_pages = 1 + (int)(mix(&st) % 8);
    pat_workload w;
    char err[256];
    cr_assert_eq(pat_tree_random(77 * (uint64_t)it + 5, &ro, ps, &w, err, sizeof err), 0, "%s", err);
    pat_batch b = pat_workload_batch(&w, gqa);
    int sms = (int)(mix(&st) % 2) ? 132 : 8;
    int kvh = 1 + (int)(mix(&st) % 8);
    for (int mode = 0; mode < 2; mode++) {
      pat_sched_opts o = make_opts(&spec, sms, kvh, (pat_sched_mode)mode);
      pat_host_plan p;
      char what[96];
      snprintf(what, sizeof what, "tree %d (%s)", it, pat_sched_mode_name(o.mode));
      int rc = pat_sched_build(&b, &o, &p, err, sizeof err);
      cr_assert_eq(rc, 0, "%s: %s", what, err);
      int shared = check_plan(&b, &spec, &p, w.unique_tokens, what);
      if (mode == PAT_SCHED_DIRECT) {
        cr_assert_eq(shared, 0, "%s: direct mode shared a pack", what);
        cr_assert_eq(p.num_pack_queries, p.num_packs, "%s", what);
      } else {
        shared_total += shared;
        cr_assert(p.kv_tokens_read >= p.kv_tokens_unique, "%s", what);
      }
      pat_host_plan_free(&p);
    }
    pat_workload_free(&w);
  }
  cr_assert_gt(shared_total, 0, "random trees never produced a shared pack");
}

Test(sched, random_trees_numerics)
{
  for (int it = 0; it < 60; it++) {
    uint64_t st = 5000 + (uint64_t)it;
    int ps = (int)(mix(&st) % 2) ? 16 : 8;
    int gqa = gqas[mix(&st) % 4];
    pat_spec spec;
    make_spec(&spec, (int)(mix(&st) % 3), (int)(mix(&st) % 4), ps);
    pat_random_tree_opts ro = {0};
    ro.max_depth = 6;
    ro.max_fanout = 12;
    ro.max_queries = 40;
    ro.max_pages = 200;
    ro.max_node_pages = 4;
    pat_workload w;
    char err[256];
    cr_assert_eq(pat_tree_random(31 * (uint64_t)it + 7, &ro, ps, &w, err, sizeof err), 0, "%s", err);
    pat_batch b = pat_workload_batch(&w, gqa);
    for (int mode = 0; mode < 2; mode++) {
      pat_sched_opts o = make_opts(&spec, (int)(mix(&st) % 2) ? 132 : 4, 2, (pat_sched_mode)mode);
      pat_host_plan p;
      char what[64];
      snprintf(what, sizeof what, "numerics tree %d (%s)", it, pat_sched_mode_name(o.mode));
      cr_assert_eq(pat_sched_build(&b, &o, &p, err, sizeof err), 0, "%s: %s", what, err);
      check_plan(&b, &spec, &p, w.unique_tokens, what);
      check_numerics(&b, &p, 2, 16, 99 + (uint64_t)it, what);
      pat_host_plan_free(&p);
    }
    pat_workload_free(&w);
  }
}

/* Paper trees scaled down (lengths / 16, counts / 8 where large) for the CPU executor. */
Test(sched, paper_trees_small_numerics)
{
  static const char *const small[] = {
    "1,10_256,26", "1,32_16,2", "1,128_128,2", "1,2,8_64,16,16", "1,4,32_2,16,2",
    "1,4,8,32_2,16,16,2", "1,4,16,64_16,4,2,2", "2,8,16,32_16,16,2,2", "4,16,64_32,2,2",
    "32_64", "16_256",
  };
  for (int i = 0; i < (int)(sizeof small / sizeof small[0]); i++) {
    for (int gi = 0; gi < 4; gi++) {
      pat_spec spec;
      make_spec(&spec, 0, gi % 3, 2);
      pat_workload w;
      char err[256];
      cr_assert_eq(pat_tree_parse(small[i], 2, 11 + (uint64_t)i, &w, err, sizeof err), 0, "%s", err);
      pat_batch b = pat_workload_batch(&w, gqas[gi]);
      pat_sched_opts o = make_opts(&spec, 16, 2, PAT_SCHED_PREFIX);
      pat_host_plan p;
      cr_assert_eq(pat_sched_build(&b, &o, &p, err, sizeof err), 0, "%s: %s", small[i], err);
      check_plan(&b, &spec, &p, w.unique_tokens, small[i]);
      check_numerics(&b, &p, 2, 16, 3 + (uint64_t)i, small[i]);
      pat_host_plan_free(&p);
      pat_workload_free(&w);
    }
  }
}

/* Lower bound on KV reads: a node's tokens are read at least once per pack of its queries. */
static int64_t read_lower_bound(const char *tree, int cap)
{
  long cnt[16], len[16];
  int nl = 0;
  const char *us = strchr(tree, '_');
  const char *s = tree;
  while (s < us) { cnt[nl++] = strtol(s, (char **)&s, 10); if (*s == ',') s++; }
  int k = 0;
  s = us + 1;
  while (*s) { len[k++] = strtol(s, (char **)&s, 10); if (*s == ',') s++; }
  int64_t lb = 0;
  long nq = cnt[nl - 1];
  for (int l = 0; l < nl; l++) lb += (int64_t)cnt[l] * len[l] * ((nq / cnt[l] + cap - 1) / cap);
  return lb;
}

Test(sched, paper_trees_reads)
{
  for (int i = 0; i < PAT_NUM_PAPER_TREES; i++) {
    pat_spec spec;
    make_spec(&spec, 0, 0, 32);
    pat_workload w;
    char err[256];
    cr_assert_eq(pat_tree_parse(pat_paper_trees[i], 32, 42, &w, err, sizeof err), 0, "%s", err);
    pat_batch b = pat_workload_batch(&w, 1);
    pat_sched_opts o = make_opts(&spec, 132, 8, PAT_SCHED_PREFIX);
    pat_host_plan p;
    cr_assert_eq(pat_sched_build(&b, &o, &p, err, sizeof err), 0, "%s: %s", pat_paper_trees[i], err);
    check_plan(&b, &spec, &p, w.unique_tokens, pat_paper_trees[i]);
    int64_t lb = read_lower_bound(pat_paper_trees[i], max_m(&spec));
    /* Masked packs re-read their shared pages once per pack; they aim at 2 CTAs an SM:
    ** packs of num_queries / ceil(2 x 132 / 8) queries (at least 2). */
    int masked = 0;
    for (int k = 0; k < p.num_packs; k++) masked |= p.packs[k].masked;
    if (masked) {
      int chunk = w.num_queries / 33 < 2 ? 2 : w.num_queries / 33;
      lb = read_lower_bound(pat_paper_trees[i], chunk < max_m(&spec) ? chunk : max_m(&spec));
    }
    cr_assert(p.kv_tokens_read <= lb + lb * 15 / 100,
              "%s: reads %lld tokens, lower bound %lld (unique %lld)", pat_paper_trees[i],
              (long long)p.kv_tokens_read, (long long)lb, (long long)p.kv_tokens_unique);
    /* Where one pack can hold every query of a node, that bound is the unique tokens. */
    if (lb == p.kv_tokens_unique)
      cr_assert(p.kv_tokens_read <= p.kv_tokens_unique + p.kv_tokens_unique / 10, "%s", pat_paper_trees[i]);
    pat_host_plan_free(&p);
    pat_workload_free(&w);
  }
}

Test(sched, direct_mode_splits_long_queries)
{
  pat_spec spec;
  make_spec(&spec, 0, 0, 32);
  pat_workload w;
  char err[256];
  cr_assert_eq(pat_tree_parse("1,4_4096,100", 32, 1, &w, err, sizeof err), 0, "%s", err);
  pat_batch b = pat_workload_batch(&w, 4);
  pat_sched_opts o = make_opts(&spec, 132, 8, PAT_SCHED_DIRECT);
  pat_host_plan p;
  cr_assert_eq(pat_sched_build(&b, &o, &p, err, sizeof err), 0, "%s", err);
  check_plan(&b, &spec, &p, w.unique_tokens, "direct");
  cr_assert_eq(p.num_pack_queries, p.num_packs);
  cr_assert_eq(p.num_packs, 4 * spec.split.max_splits, "4 long queries, 33 CTAs wanted per query");
  cr_assert_eq(p.kv_tokens_read, 4 * 4196);
  for (int i = 0; i < p.num_packs; i++) cr_assert_geq(p.packs[i].kv_len, spec.split.min_kv_per_split);
  pat_host_plan_free(&p);
  pat_workload_free(&w);
}

Test(sched, deterministic)
{
  pat_spec spec;
  make_spec(&spec, 0, 0, 16);
  pat_workload w;
  char err[256];
  cr_assert_eq(pat_tree_random(9, NULL, 16, &w, err, sizeof err), 0, "%s", err);
  pat_batch b = pat_workload_batch(&w, 4);
  pat_sched_opts o = make_opts(&spec, 132, 8, PAT_SCHED_PREFIX);
  pat_host_plan p1, p2;
  cr_assert_eq(pat_sched_build(&b, &o, &p1, err, sizeof err), 0, "%s", err);
  cr_assert_eq(pat_sched_build(&b, &o, &p2, err, sizeof err), 0, "%s", err);
  cr_assert_eq(p1.num_packs, p2.num_packs);
  cr_assert_eq(memcmp(p1.packs, p2.packs, (size_t)p1.num_packs * sizeof *p1.packs), 0);
  cr_assert_eq(memcmp(p1.pack_queries, p2.pack_queries, (size_t)p1.num_pack_queries * sizeof *p1.pack_queries), 0);
  pat_host_plan_free(&p1);
  pat_host_plan_free(&p2);
  pat_workload_free(&w);
}

/* ---- validation: each error path once ---- */
#define ROWS 3
#define STRIDE 4
typedef struct small_batch {
  int32_t seq[ROWS];
  int32_t bt[ROWS * STRIDE];
  pat_batch b;
  pat_spec spec;
} small_batch;

/* Three queries, page size 16: q0 = [0 1 2], q1 = [0 1 3], q2 = [0 4] (partial last pages). */
static void small_init(small_batch *s)
{
  static const int32_t bt[ROWS * STRIDE] = {0, 1, 2, -1, 0, 1, 3, -1, 0, 4, -1, -1};
  static const int32_t seq[ROWS] = {40, 45, 20};
  memcpy(s->bt, bt, sizeof bt);
  memcpy(s->seq, seq, sizeof seq);
  make_spec(&s->spec, 0, 0, 16);
  memset(&s->b, 0, sizeof s->b);
  s->b.num_queries = ROWS;
  s->b.seq_lens = s->seq;
  s->b.block_table = s->bt;
  s->b.block_table_stride = STRIDE;
  s->b.num_pages_total = 8;
  s->b.page_size = 16;
  s->b.gqa = 4;
}

static void expect_error(small_batch *s, const char *needle)
{
  pat_sched_opts o = make_opts(&s->spec, 132, 8, PAT_SCHED_PREFIX);
  pat_host_plan p;
  char err[256];
  memset(&p, 0xab, sizeof p);
  int rc = pat_sched_build(&s->b, &o, &p, err, sizeof err);
  cr_assert_eq(rc, -1, "expected an error mentioning '%s'", needle);
  cr_assert(strstr(err, needle), "message '%s' does not mention '%s'", err, needle);
  pat_host_plan zero;
  memset(&zero, 0, sizeof zero);
  cr_assert_eq(memcmp(&p, &zero, sizeof p), 0, "plan not zeroed on error");
}

Test(sched, valid_small_batch)
{
  small_batch s;
  small_init(&s);
  pat_sched_opts o = make_opts(&s.spec, 132, 8, PAT_SCHED_PREFIX);
  pat_host_plan p;
  char err[256];
  cr_assert_eq(pat_sched_build(&s.b, &o, &p, err, sizeof err), 0, "%s", err);
  check_plan(&s.b, &s.spec, &p, 16 * 2 + 8 + 13 + 4, "small");
  pat_host_plan_free(&p);
}

Test(sched, error_no_queries)
{
  small_batch s;
  small_init(&s);
  s.b.num_queries = 0;
  expect_error(&s, "0 queries");
}

Test(sched, error_seq_len_zero)
{
  small_batch s;
  small_init(&s);
  s.seq[2] = 0;
  expect_error(&s, "query 2");
}

Test(sched, error_seq_len_beyond_row)
{
  small_batch s;
  small_init(&s);
  s.seq[1] = STRIDE * 16 + 1;
  expect_error(&s, "query 1");
}

Test(sched, error_page_out_of_range)
{
  small_batch s;
  small_init(&s);
  s.bt[1 * STRIDE + 2] = 8;
  expect_error(&s, "query 1: page id 8 at position 2");
}

Test(sched, error_page_negative)
{
  small_batch s;
  small_init(&s);
  s.bt[2 * STRIDE + 1] = -3;
  expect_error(&s, "query 2: page id -3");
}

Test(sched, error_page_twice_in_query)
{
  small_batch s;
  small_init(&s);
  s.bt[0 * STRIDE + 2] = 0;  /* q0 = [0 1 0] */
  expect_error(&s, "query 0: page 0 appears twice");
}

Test(sched, error_partial_page_shared)
{
  small_batch s;
  small_init(&s);
  s.bt[1 * STRIDE + 2] = 2;  /* q1's partial page is q0's partial page */
  expect_error(&s, "partial last page");
}

Test(sched, error_partial_page_shared_full)
{
  small_batch s;
  small_init(&s);
  s.seq[1] = 48;             /* q1 = [0 1 3] full, its page 3 ... */
  s.bt[2 * STRIDE + 1] = 3;  /* ... is q2's partial last page */
  expect_error(&s, "query 2: page 3 is its partial last page (position 1)");
}

Test(sched, error_shared_page_other_position)
{
  small_batch s;
  small_init(&s);
  s.seq[2] = 32;             /* q2 = [4 1]: page 1 at position 1 in q0, q1 ... */
  s.bt[2 * STRIDE + 0] = 4;
  s.bt[2 * STRIDE + 1] = 1;
  s.seq[0] = 48;
  s.bt[0 * STRIDE + 0] = 5;  /* q0 = [5 1 2]: still position 1 */
  s.bt[1 * STRIDE + 0] = 1;  /* q1 = [1 0 3]: page 1 at position 0 */
  s.bt[1 * STRIDE + 1] = 0;
  expect_error(&s, "same position");
}

Test(sched, error_gqa_too_large)
{
  small_batch s;
  small_init(&s);
  s.spec.num_gqa = 0;
  s.b.gqa = 65;
  expect_error(&s, "GQA ratio 65");
}

Test(sched, error_tree_strings)
{
  pat_workload w;
  char err[256];
  cr_assert_eq(pat_tree_parse("1,3_32,16", 16, 1, &w, err, sizeof err), 0, "%s", err);
  pat_workload_free(&w);
  cr_assert_eq(pat_tree_parse("1,3_30,16", 16, 1, &w, err, sizeof err), -1);
  cr_assert(strstr(err, "multiple of the page size"), "%s", err);
  cr_assert_eq(pat_tree_parse("2,3_32,16", 16, 1, &w, err, sizeof err), -1);
  cr_assert_eq(pat_tree_parse("1,2_32", 16, 1, &w, err, sizeof err), -1);
  cr_assert_eq(pat_tree_parse("1,x_32,16", 16, 1, &w, err, sizeof err), -1);
  cr_assert_eq(pat_tree_parse("1,2", 16, 1, &w, err, sizeof err), -1);
  cr_assert_eq(w.seq_lens, NULL);
  /* refused before anything is allocated: 2^28 block-table entries would be 1 GiB */
  cr_assert_eq(pat_tree_parse("1547_5554512", 32, 1, &w, err, sizeof err), -1);
  cr_assert(strstr(err, "is too large: 268526713 pages"), "%s", err);
  cr_assert_eq(w.seq_lens, NULL);
}

/* The tile of the one-query packs of `tree` at GQA `gqa` under the default tiles, with the
** planner's mma weight set to 1/rows_per_token: n of that tile, or -1. */
static int leaf_tile_n(const char *tree, int gqa, int rows_per_token)
{
  pat_spec spec;
  pat_spec_defaults(&spec);
  spec.split.mma_rows_per_token = rows_per_token;
  pat_workload w;
  char err[256];
  cr_assert_eq(pat_tree_parse(tree, spec.page_size, 42, &w, err, sizeof err), 0, "%s", err);
  pat_batch b = pat_workload_batch(&w, gqa);
  pat_sched_opts o = make_opts(&spec, 132, 8, PAT_SCHED_PREFIX);
  pat_host_plan p;
  cr_assert_eq(pat_sched_build(&b, &o, &p, err, sizeof err), 0, "%s", err);
  check_plan(&b, &spec, &p, w.unique_tokens, tree);
  int n = -1;
  for (int g = 0; g < p.num_groups; g++)
    if (p.packs[p.groups[g].pack_begin].num_queries == 1) n = spec.tiles[p.groups[g].tile].n;
  pat_host_plan_free(&p);
  pat_workload_free(&w);
  return n;
}

/* The weight prices the padded rows x tokens of a tile's last step: where tensor-core work is
** dear (8 rows per token read) a 416-token, 2-row leaf takes the 32-token tile (less padding),
** at the default weight the 64-token tile (fewer steps). */
Test(sched, mma_weight_changes_tile_choice)
{
  cr_expect_eq(leaf_tile_n("1,10_4096,416", 2, 8), 32);
  cr_expect_eq(leaf_tile_n("1,10_4096,416", 2, 128), 64);
}

/* A spec of mma.sync tiles of 16, 32 and 64 rows and a wgmma tile of 128 (sm_90). */
static void make_masked_spec(pat_spec *s)
{
  make_spec(s, 0, 0, 32);
  s->num_tiles = 0;
  add_tile(s, 16, 32, 1);
  add_tile(s, 32, 64, 2);
  add_tile(s, 64, 64, 4);
  add_tile(s, 128, 64, 8);
  s->tiles[3].wgmma = 1;
  s->tiles[3].stages = 3;
  s->archs[0] = 90;
}

/* Parses `tree`, schedules it at GQA gqa on `sms` SMs and 8 kv heads, checks the plan. */
static void plan_tree(const pat_spec *spec, const char *tree, uint64_t seed, int gqa, int sms, pat_workload *w,
                      pat_batch *b, pat_host_plan *p)
{
  char err[256];
  cr_assert_eq(pat_tree_parse(tree, 32, seed, w, err, sizeof err), 0, "%s", err);
  *b = pat_workload_batch(w, gqa);
  pat_sched_opts o = make_opts(spec, sms, 8, PAT_SCHED_PREFIX);
  cr_assert_eq(pat_sched_build(b, &o, p, err, sizeof err), 0, "%s: %s", tree, err);
  check_plan(b, spec, p, w->unique_tokens, tree);
}

/* 64 leaves of 40 tokens (a partial last page each) under a 256-token prefix, GQA 8: the prefix
** and its leaves go into masked packs of 8 queries (the largest mma.sync tile, 64 rows), so
** no query needs a merge; the partial pages sit inside the packs. */
Test(sched, masked_packs_hold_subtrees)
{
  pat_spec spec;
  make_masked_spec(&spec);
  pat_workload w;
  pat_batch b;
  pat_host_plan p;
  plan_tree(&spec, "1,64_256,40", 7, 8, 16, &w, &b, &p);
  int masked = 0;
  for (int i = 0; i < p.num_packs; i++) {
    masked += p.packs[i].masked;
    if (p.packs[i].masked) cr_assert_eq(p.packs[i].num_queries, 8, "pack %d", i);
  }
  cr_assert_eq(masked, 8, "%d masked packs of %d", masked, p.num_packs);
  cr_assert_eq(p.num_merges, 0);
  check_numerics(&b, &p, 2, 64, 11, "1,64_256,40 masked");
  pat_host_plan_free(&p);
  pat_workload_free(&w);
}

/* No masked packs without an mma.sync tile (the wgmma tile alone), nor where the spec's
** split.masked_packs is 0: the same tree then plans own packs and merges, numerics intact. */
Test(sched, no_masked_packs_without_mma_sync_tiles_or_when_off)
{
  for (int off = 0; off < 2; off++) {
    pat_spec spec;
    make_masked_spec(&spec);
    if (off) {
      spec.split.masked_packs = 0;
    } else {
      spec.tiles[0] = spec.tiles[3];
      spec.num_tiles = 1;
    }
    pat_workload w;
    pat_batch b;
    pat_host_plan p;
    plan_tree(&spec, "1,64_256,40", 7, 8, 16, &w, &b, &p);
    for (int i = 0; i < p.num_packs; i++) cr_assert(!p.packs[i].masked, "case %d: pack %d masked", off, i);
    cr_assert_null(p.page_masks);
    cr_assert_gt(p.num_merges, 0, "case %d", off);
    check_numerics(&b, &p, 2, 64, 11, off ? "1,64_256,40 masked packs off" : "1,64_256,40 wgmma tile only");
    pat_host_plan_free(&p);
    pat_workload_free(&w);
  }
}

/* Two plans are the same, array by array. */
static void expect_same_plan(const pat_host_plan *a, const pat_host_plan *b, const char *what)
{
  cr_assert_eq(a->num_packs, b->num_packs, "%s", what);
  cr_assert_eq(a->num_pack_queries, b->num_pack_queries, "%s", what);
  cr_assert_eq(a->num_pages, b->num_pages, "%s", what);
  cr_assert_eq(a->num_merges, b->num_merges, "%s", what);
  cr_assert_eq(a->num_groups, b->num_groups, "%s", what);
  cr_assert_eq(a->num_slots, b->num_slots, "%s", what);
  cr_assert_eq(memcmp(a->packs, b->packs, (size_t)a->num_packs * sizeof *a->packs), 0, "%s", what);
  cr_assert_eq(memcmp(a->pack_queries, b->pack_queries, (size_t)a->num_pack_queries * sizeof *a->pack_queries), 0,
               "%s", what);
  cr_assert_eq(memcmp(a->pages, b->pages, (size_t)a->num_pages * sizeof *a->pages), 0, "%s", what);
  cr_assert_eq(!a->page_masks, !b->page_masks, "%s", what);
  if (a->page_masks)
    cr_assert_eq(memcmp(a->page_masks, b->page_masks, (size_t)a->num_pages * sizeof *a->page_masks), 0, "%s", what);
  cr_assert_eq(memcmp(a->merges, b->merges, (size_t)a->num_merges * sizeof *a->merges), 0, "%s", what);
  cr_assert_eq(memcmp(a->groups, b->groups, (size_t)a->num_groups * sizeof *a->groups), 0, "%s", what);
}

/* One scratch through batches of every size and shape (masked packs, direct mode, a bad
** batch in between), each plan recycled into it after use: each plan is the one a fresh
** build gives, whatever the scratch held. */
Test(sched, reused_scratch_gives_the_same_plans)
{
  pat_spec spec;
  make_masked_spec(&spec);
  pat_sched_scratch sc = {0};
  static const char *const trees[] = {"1,256_256,32", "1,64_256,40", "256_1024", "1,4,16,512_1024,256,128,32",
                                      "1,10_4096,416", "1,2,64_1024,256,256"};
  char err[256];
  for (int it = 0; it < 24; it++) {
    pat_workload w;
    if (it % 4 == 3) {  /* a random tree, larger or smaller than the last */
      pat_random_tree_opts ro;
      memset(&ro, 0, sizeof ro);
      ro.max_depth = 1 + it % 5;
      ro.max_fanout = 4 + it;
      ro.max_queries = 8 << (it % 7);
      ro.max_pages = 1 << 20;
      ro.max_node_pages = 16;
      ro.max_leaf_tokens = 200;
      cr_assert_eq(pat_tree_random(100 + (uint64_t)it, &ro, 32, &w, err, sizeof err), 0, "%s", err);
    } else {
      cr_assert_eq(pat_tree_parse(trees[it % 6], 32, (uint64_t)it, &w, err, sizeof err), 0, "%s", err);
    }
    pat_batch b = pat_workload_batch(&w, it % 2 ? 8 : 1);
    pat_sched_opts o = make_opts(&spec, 132, 8, it % 5 == 4 ? PAT_SCHED_DIRECT : PAT_SCHED_PREFIX);
    pat_host_plan fresh, reused;
    cr_assert_eq(pat_sched_build(&b, &o, &fresh, err, sizeof err), 0, "%s", err);
    cr_assert_eq(pat_sched_build_with(&b, &o, &sc, &reused, err, sizeof err), 0, "%s", err);
    char what[64];
    snprintf(what, sizeof what, "batch %d", it);
    expect_same_plan(&fresh, &reused, what);
    pat_host_plan_free(&fresh);
    pat_sched_scratch_recycle(&sc, &reused);
    cr_assert_null(reused.packs);
    if (it == 10) {  /* a refused batch leaves the scratch usable */
      pat_batch bad = b;
      bad.num_pages_total = 1;
      cr_assert_eq(pat_sched_build_with(&bad, &o, &sc, &reused, err, sizeof err), -1);
    }
    pat_workload_free(&w);
  }
  pat_sched_scratch_free(&sc);
  pat_sched_scratch_free(&sc);  /* twice is harmless */
}

/* Long shared prefixes stay in own packs (on the larger tile, with a merge): a 2048-token
** prefix over 32-token leaves is not absorbed, a 256-token one is. */
Test(sched, long_prefixes_are_not_absorbed)
{
  pat_spec spec;
  make_masked_spec(&spec);
  static const struct { const char *tree; int masked; } cases[] = {{"1,256_2048,32", 0}, {"1,256_256,32", 1}};
  for (int c = 0; c < 2; c++) {
    pat_workload w;
    pat_batch b;
    pat_host_plan p;
    plan_tree(&spec, cases[c].tree, 5, 8, 132, &w, &b, &p);
    int masked = 0;
    for (int i = 0; i < p.num_packs; i++) masked += p.packs[i].masked;
    cr_assert_eq(masked > 0, cases[c].masked, "%s: %d masked packs", cases[c].tree, masked);
    check_numerics(&b, &p, 2, 64, 13, cases[c].tree);
    pat_host_plan_free(&p);
    pat_workload_free(&w);
  }
}
