/* test_plan_pad.c: fixed-capacity plan layouts (runtime/plan_pad.c): every pack placed once
** in a region whose tile fits it, padding empty, overflow refused with nothing written, and
** the padded plan still computes attention. Criterion suite "plan_pad". */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_exec.h"
#include "plan_pad.h"
#include "sched.h"
#include "tree.h"

static uint64_t mix(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Tiles M 16, 32, 64 (N 32, 64, 64), GQA 1 and 4. */
static void make_spec(pat_spec *s, int page_size)
{
  memset(s, 0, sizeof *s);
  strcpy(s->name, "pad");
  strcpy(s->path, "<test>");
  s->dtype = PAT_FP16;
  s->head_dim = 64;
  s->page_size = page_size;
  s->num_gqa = 2;
  s->gqa[0] = 1;
  s->gqa[1] = 4;
  static const int ms[] = {16, 32, 64}, ns[] = {32, 64, 64};
  for (int i = 0; i < 3; i++) s->tiles[s->num_tiles++] = (pat_tile){.m = ms[i], .n = ns[i], .warps = ms[i] / 16, .stages = 2};
  s->split = (pat_split_policy){.min_kv_per_split = 32, .max_splits = 8, .ctas_per_sm = 2, .mma_rows_per_token = 128,
                                .masked_packs = 1};
  s->num_archs = 1;
  s->archs[0] = 90;
}

static void build(const pat_spec *s, const pat_workload *w, int gqa, pat_sched_mode mode, pat_host_plan *p)
{
  pat_batch b = pat_workload_batch(w, gqa);
  pat_sched_opts o = {.spec = s, .num_sms = 16, .kv_heads = 2, .mode = mode};
  char err[256];
  cr_assert_eq(pat_sched_build(&b, &o, p, err, sizeof err), 0, "%s", err);
}

/* A layout with per-tile regions, the other capacities `extra` above the plan's counts. */
static pat_pad_layout layout(const pat_spec *s, const int32_t *tile_packs, const pat_host_plan *p, int extra)
{
  pat_pad_layout l;
  memset(&l, 0, sizeof l);
  l.num_tiles = s->num_tiles;
  for (int t = 0; t < s->num_tiles; t++) {
    l.tile_m[t] = s->tiles[t].m;
    l.tile_wgmma[t] = s->tiles[t].wgmma;
    l.tile_packs[t] = tile_packs[t];
  }
  l.max_pack_queries = p->num_pack_queries + extra;
  l.max_pages = p->num_pages + extra;
  l.max_merges = p->num_merges + extra;
  l.max_slots = p->num_slots + extra;
  char err[256];
  cr_assert_eq(pat_pad_layout_init(&l, err, sizeof err), 0, "%s", err);
  return l;
}

typedef struct padded {
  pat_pack *packs;
  pat_pack_query *pq;
  int32_t *pages;
  uint32_t *masks;
  pat_merge_item *merges;
} padded;

static padded alloc_padded(const pat_pad_layout *l)
{
  padded d = {calloc((size_t)l->total_packs, sizeof(pat_pack)), calloc((size_t)l->max_pack_queries + 1, sizeof(pat_pack_query)),
              calloc((size_t)l->max_pages + 1, sizeof(int32_t)), calloc((size_t)l->max_pages + 1, sizeof(uint32_t)),
              calloc((size_t)l->max_merges + 1, sizeof(pat_merge_item))};
  cr_assert(d.packs && d.pq && d.pages && d.masks && d.merges);
  /* Garbage first: padding must be written, not inherited from calloc. */
  memset(d.packs, 0x5a, (size_t)l->total_packs * sizeof(pat_pack));
  memset(d.merges, 0x5a, (size_t)l->max_merges * sizeof(pat_merge_item));
  return d;
}

static void free_padded(padded *d)
{
  free(d->packs);
  free(d->pq);
  free(d->pages);
  free(d->masks);
  free(d->merges);
}

/* Every real pack once, in a region whose tile has M >= its rows; the rest of each region
** all zero; merges then zero items; pack_queries and pages as the plan's. Returns the packs
** found outside their own tile's region. */
static int check_padded(const pat_host_plan *p, const pat_pad_layout *l, const padded *d, int gqa, const char *what)
{
  int *seen = calloc((size_t)p->num_packs, sizeof *seen);
  int moved = 0;
  for (int t = 0; t < l->num_tiles; t++) {
    int empty_seen = 0;
    for (int32_t i = l->tile_begin[t]; i < l->tile_begin[t] + l->tile_packs[t]; i++) {
      const pat_pack *x = &d->packs[i];
      if (x->num_queries == 0) {
        cr_assert(x->query_begin == 0 && x->page_begin == 0 && x->kv_len == 0, "%s: padding pack %d not zeroed", what, i);
        empty_seen = 1;
        continue;
      }
      cr_assert(!empty_seen, "%s: tile %d region has a real pack after padding", what, t);
      cr_assert_leq(x->num_queries * gqa, l->tile_m[t], "%s: pack in tile %d (M %d) has %d rows", what, t,
                    l->tile_m[t], x->num_queries * gqa);
      cr_assert(!(x->masked && l->tile_wgmma[t]), "%s: masked pack in wgmma tile %d", what, t);
      int found = -1;
      for (int32_t j = 0; j < p->num_packs && found < 0; j++)
        if (p->packs[j].query_begin == x->query_begin) found = j;
      cr_assert_geq(found, 0, "%s: pack at %d is not in the plan", what, i);
      cr_assert(memcmp(&p->packs[found], x, sizeof *x) == 0, "%s: pack %d changed", what, found);
      cr_assert_eq(seen[found], 0, "%s: pack %d placed twice", what, found);
      seen[found] = 1;
      int own = -1;
      for (int g = 0; g < p->num_groups; g++)
        if (found >= p->groups[g].pack_begin && found < p->groups[g].pack_begin + p->groups[g].num_packs) own = p->groups[g].tile;
      moved += own != t;
    }
  }
  for (int32_t j = 0; j < p->num_packs; j++) cr_assert(seen[j], "%s: pack %d lost", what, j);
  free(seen);
  cr_assert(memcmp(d->pq, p->pack_queries, (size_t)p->num_pack_queries * sizeof *d->pq) == 0, "%s", what);
  cr_assert(memcmp(d->pages, p->pages, (size_t)p->num_pages * sizeof *d->pages) == 0, "%s", what);
  if (p->page_masks)
    cr_assert(memcmp(d->masks, p->page_masks, (size_t)p->num_pages * sizeof *d->masks) == 0, "%s: masks", what);
  if (p->num_merges) cr_assert(memcmp(d->merges, p->merges, (size_t)p->num_merges * sizeof *d->merges) == 0, "%s", what);
  for (int32_t i = p->num_merges; i < l->max_merges; i++)
    cr_assert(d->merges[i].num_splits == 0 && d->merges[i].query == 0 && d->merges[i].slot_begin == 0,
              "%s: padding merge %d not zeroed", what, i);
  return moved;
}

static void random_workload(uint64_t seed, int page, pat_workload *w)
{
  pat_random_tree_opts o = {.max_depth = 4, .max_fanout = 10, .max_queries = 40, .max_pages = 300,
                            .max_node_pages = 5, .max_leaf_tokens = 3 * page};
  char err[256];
  cr_assert_eq(pat_tree_random(seed, &o, page, w, err, sizeof err), 0, "%s", err);
}

/* Regions as large as each tile's group plus slack: nothing moves. */
Test(plan_pad, packs_keep_their_tiles)
{
  pat_spec s;
  make_spec(&s, 16);
  for (int it = 0; it < 60; it++) {
    uint64_t st = 300 + (uint64_t)it;
    int gqa = s.gqa[mix(&st) % 2];
    pat_workload w;
    random_workload(st, 16, &w);
    for (int mode = 0; mode < 2; mode++) {
      pat_host_plan p;
      build(&s, &w, gqa, (pat_sched_mode)mode, &p);
      int32_t caps[PAT_MAX_TILES] = {0};
      for (int g = 0; g < p.num_groups; g++) caps[p.groups[g].tile] += p.groups[g].num_packs;
      for (int t = 0; t < s.num_tiles; t++) caps[t] += (int32_t)(mix(&st) % 5);
      if (caps[0] + caps[1] + caps[2] == 0) caps[0] = 1;
      pat_pad_layout l = layout(&s, caps, &p, (int)(mix(&st) % 4));
      padded d = alloc_padded(&l);
      char err[256], what[64];
      snprintf(what, sizeof what, "tree %d %s gqa %d", it, mode ? "direct" : "prefix", gqa);
      int moved = pat_plan_pad(&p, gqa, &l, d.packs, d.pq, d.pages, d.masks, d.merges, err, sizeof err);
      cr_assert_eq(moved, 0, "%s: %d (%s)", what, moved, err);
      cr_assert_eq(check_padded(&p, &l, &d, gqa, what), 0, "%s", what);
      free_padded(&d);
      pat_host_plan_free(&p);
    }
    pat_workload_free(&w);
  }
}

/* Small regions for the small tiles: their packs move to larger tiles, still valid. */
Test(plan_pad, overflow_moves_to_a_larger_tile)
{
  pat_spec s;
  make_spec(&s, 16);
  int moved_total = 0;
  for (int it = 0; it < 40; it++) {
    uint64_t st = 900 + (uint64_t)it;
    pat_workload w;
    random_workload(st, 16, &w);
    pat_host_plan p;
    build(&s, &w, 1, PAT_SCHED_DIRECT, &p);
    int32_t caps[PAT_MAX_TILES] = {1, 0, p.num_packs};
    pat_pad_layout l = layout(&s, caps, &p, 0);
    padded d = alloc_padded(&l);
    char err[256], what[64];
    snprintf(what, sizeof what, "tree %d", it);
    int moved = pat_plan_pad(&p, 1, &l, d.packs, d.pq, d.pages, d.masks, d.merges, err, sizeof err);
    cr_assert_geq(moved, 0, "%s: %s", what, err);
    cr_assert_eq(check_padded(&p, &l, &d, 1, what), moved, "%s", what);
    moved_total += moved;
    free_padded(&d);
    pat_host_plan_free(&p);
    pat_workload_free(&w);
  }
  cr_assert_gt(moved_total, 0, "no pack ever moved");
}

/* Every capacity refused by name, with nothing written. */
Test(plan_pad, overflow_is_refused)
{
  pat_spec s;
  make_spec(&s, 16);
  pat_workload w;
  cr_assert_eq(pat_tree_parse("1,8_256,40", 16, 3, &w, NULL, 0), 0);
  pat_host_plan p;
  build(&s, &w, 4, PAT_SCHED_PREFIX, &p);
  cr_assert_gt(p.num_merges, 0, "the tree should split");
  int32_t big[PAT_MAX_TILES] = {p.num_packs, p.num_packs, p.num_packs};
  static const char *const names[] = {"max_pack_queries", "max_pages", "max_merges", "max_slots"};
  for (int k = 0; k < 5; k++) {
    pat_pad_layout l = layout(&s, big, &p, 0);
    if (k == 0) l.max_pack_queries--;
    if (k == 1) l.max_pages--;
    if (k == 2) l.max_merges--;
    if (k == 3) l.max_slots--;
    if (k == 4) { /* no room anywhere for one pack */
      int32_t tight[PAT_MAX_TILES] = {0, 0, p.num_packs - 1};
      l = layout(&s, tight, &p, 0);
    }
    padded d = alloc_padded(&l);
    char err[256] = "";
    cr_assert_eq(pat_plan_pad(&p, 4, &l, d.packs, d.pq, d.pages, d.masks, d.merges, err, sizeof err), -1, "case %d", k);
    cr_assert(strncmp(err, "capacity: ", 10) == 0, "case %d: %s", k, err);
    if (k < 4) cr_assert(strstr(err, names[k]), "case %d: %s", k, err);
    else cr_assert(strstr(err, "no tile with M >= "), "%s", err);
    for (int32_t i = 0; i < l.total_packs; i++) cr_assert_eq(d.packs[i].num_queries, 0x5a5a5a5a, "case %d: written", k);
    free_padded(&d);
  }
  pat_pad_layout bad;
  memset(&bad, 0, sizeof bad);
  bad.num_tiles = 3;
  char err[256];
  cr_assert_eq(pat_pad_layout_init(&bad, err, sizeof err), -1);
  cr_assert(strstr(err, "no tile has packs"), "%s", err);
  bad.tile_packs[1] = -2;
  cr_assert_eq(pat_pad_layout_init(&bad, err, sizeof err), -1);
  pat_host_plan_free(&p);
  pat_workload_free(&w);
}

/* The padded plan (empty packs dropped, as the kernels skip them) computes attention. */
Test(plan_pad, padded_plan_computes_attention)
{
  pat_spec s;
  make_spec(&s, 8);
  for (int it = 0; it < 8; it++) {
    uint64_t st = 4000 + (uint64_t)it;
    int gqa = s.gqa[it % 2], kvh = 2, D = s.head_dim;
    pat_workload w;
    random_workload(st, 8, &w);
    pat_host_plan p;
    build(&s, &w, gqa, (pat_sched_mode)(it % 2), &p);
    int32_t caps[PAT_MAX_TILES] = {2, 3, p.num_packs};
    pat_pad_layout l = layout(&s, caps, &p, 3);
    padded d = alloc_padded(&l);
    char err[256];
    cr_assert_geq(pat_plan_pad(&p, gqa, &l, d.packs, d.pq, d.pages, d.masks, d.merges, err, sizeof err), 0, "%s", err);
    pat_host_plan v = p;  /* a view of the padded arrays */
    pat_pack *real = malloc((size_t)l.total_packs * sizeof *real);
    v.num_packs = 0;
    for (int32_t i = 0; i < l.total_packs; i++)
      if (d.packs[i].num_queries) real[v.num_packs++] = d.packs[i];
    v.packs = real;
    v.pack_queries = d.pq;
    v.pages = d.pages;
    v.merges = d.merges;
    size_t nq = (size_t)w.num_queries * kvh * gqa * D, nkv = (size_t)w.num_pages * 8 * kvh * D;
    float *q = malloc(nq * 4), *k = malloc(nkv * 4), *vv = malloc(nkv * 4), *out = malloc(nq * 4), *ref = malloc(nq * 4);
    for (size_t i = 0; i < nq; i++) q[i] = (float)(mix(&st) % 2001) / 1000.f - 1.f;
    for (size_t i = 0; i < nkv; i++) k[i] = (float)(mix(&st) % 2001) / 1000.f - 1.f;
    for (size_t i = 0; i < nkv; i++) vv[i] = (float)(mix(&st) % 2001) / 1000.f - 1.f;
    pat_cpu_attn a = {.num_queries = w.num_queries, .q_heads = kvh * gqa, .kv_heads = kvh, .head_dim = D,
                      .page_size = 8, .q = q, .k_cache = k, .v_cache = vv, .scale = 1.f / sqrtf((float)D)};
    cr_assert_eq(pat_cpu_exec_plan(&v, &a, out), 0);
    pat_batch b = pat_workload_batch(&w, gqa);
    pat_cpu_reference(&b, &a, ref);
    double worst = 0;
    for (size_t i = 0; i < nq; i++) worst = fmax(worst, fabs((double)out[i] - ref[i]));
    cr_assert(worst < 1e-4, "tree %d: max abs error %g", it, worst);
    free(q); free(k); free(vv); free(out); free(ref); free(real);
    free_padded(&d);
    pat_host_plan_free(&p);
    pat_workload_free(&w);
  }
}
