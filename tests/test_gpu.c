/* test_gpu.c: every kernel path on the GPU against the CPU fp32 reference, on fresh random
** data with the output poisoned first. Without a CUDA driver every test skips, saying why. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "harness.h"
#include "internal.h"
#include "pat.h"
#include "tree.h"
#include "tuning.h"

/* Tolerances on ||out - ref|| / ||ref||: the output is rounded to the dtype, and P is rounded
** to the dtype before the P.V product, so bf16 (8 mantissa bits) gets the looser bound. */
#define TOL_FP16 5e-3
#define TOL_BF16 3e-2

static void skip_without_gpu(void)
{
  const pat_cuda *cu;
  char err[512];
  if (pat_cuda_load(&cu, err, sizeof err)) {
    /* Printed as well as reported: a non-verbose run shows no skip messages. */
    fprintf(stderr, "[SKIP] gpu::%s: %s\n", criterion_current_test->name, err);
    cr_skip_test("GPU test skipped: %s", err);
  }
}

/* Writes build/gpu_specs/NAME.yaml: "name: NAME" then body; returns its path (static buffer). */
static const char *write_spec_text(const char *name, const char *body)
{
  static char path[256];
  cr_assert_eq(system("mkdir -p build/gpu_specs"), 0);
  snprintf(path, sizeof path, "build/gpu_specs/%s.yaml", name);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fprintf(f, "name: %s\n%sarchs: [sm_90]\n", name, body);
  fclose(f);
  return path;
}

/* A spec with the suites' usual split policy. */
static const char *write_spec(const char *name, const char *dtype, int head_dim, int page,
                              const char *gqa, const char *tiles)
{
  char body[1024];
  snprintf(body, sizeof body, "dtype: %s\nhead_dim: %d\npage_size: %d\ngqa: %s\ntiles: %s\n"
           "split: {min_kv_per_split: 64, max_splits: 16, ctas_per_sm: 2}\n", dtype, head_dim, page, gqa, tiles);
  return write_spec_text(name, body);
}

/* fp16, head_dim 128, page 16, GQA 4, one tile: the body of the single-path specs, before their split. */
#define ONE_TILE_P16 "page_size: 16\ngqa: [4]\ntiles: [{m: 16, n: 64, warps: 4, stages: 3}]\n"

static pat_context *open_ctx_mode(const char *spec_path, int lazy)
{
  pat_context_desc d = {.spec_path = spec_path, .cache_dir = "build/gpu_cache", .lazy = lazy};
  pat_context *ctx = NULL;
  char err[8192];
  pat_status st = pat_context_create(&d, &ctx, err, sizeof err);
  cr_assert_eq(st, PAT_OK, "pat_context_create(%s): %s: %s", spec_path, pat_status_string(st), err);
  return ctx;
}

static pat_context *open_ctx(const char *spec_path) { return open_ctx_mode(spec_path, 0); }

/* A tree of the patgen notation, its page order shuffled by seed; the test fails on a bad tree. */
static pat_workload parse_tree(const char *tree, int page, uint64_t seed)
{
  pat_workload w;
  char err[512];
  cr_assert_eq(pat_tree_parse(tree, page, seed, &w, err, sizeof err), 0, "%s: %s", tree, err);
  return w;
}

/* Runs one workload in both modes and checks it; returns the number of checks made. */
static int check_workload(pat_context *ctx, const pat_workload *w, int q_heads, int kv_heads,
                          double tol, const char *what, int max_check)
{
  char err[4096];
  harness *h = harness_create(ctx, w, q_heads, kv_heads, (uint64_t)w->num_queries * 131 + q_heads, err, sizeof err);
  cr_assert_not_null(h, "%s: %s", what, err);
  for (int mode = 0; mode < 2; mode++) {
    harness_result r;
    cr_assert_eq(harness_run(h, (pat_mode)mode, max_check, 0, &r, err, sizeof err), 0, "%s: %s", what, err);
    cr_expect_eq(r.nonfinite, 0, "%s %s: %lld outputs not written or not finite", what,
                 mode ? "direct" : "prefix", r.nonfinite);
    cr_expect(r.rel_err < tol, "%s %s: rel_err %.3e >= %.1e (max abs %.3e)", what,
              mode ? "direct" : "prefix", r.rel_err, tol, r.max_abs_err);
    cr_log_info("%s %s: %d queries, %d packs, %d merges, rel_err %.2e\n", what,
                mode ? "direct" : "prefix", w->num_queries, r.info.num_packs, r.info.num_merges, r.rel_err);
  }
  harness_destroy(h);
  return 2;
}

/* Random trees (ragged leaves, shuffled pages) for every GQA ratio of a spec. */
static void random_trees(const char *spec_path, int page, const int *gqas, int ngqa, double tol,
                         int trees_per_gqa)
{
  pat_context *ctx = open_ctx(spec_path);
  for (int g = 0; g < ngqa; g++) {
    for (int t = 0; t < trees_per_gqa; t++) {
      pat_random_tree_opts o = {.max_depth = 4, .max_fanout = 12, .max_queries = 48,
                                .max_pages = 400, .max_node_pages = 6, .max_leaf_tokens = 3 * page};
      pat_workload w;
      char err[512], what[128];
      uint64_t seed = 1000u * (uint64_t)gqas[g] + (uint64_t)t;
      cr_assert_eq(pat_tree_random(seed, &o, page, &w, err, sizeof err), 0, "%s", err);
      int kv_heads = gqas[g] >= 8 ? 2 : 4;
      snprintf(what, sizeof what, "%s gqa %d tree %d", spec_path, gqas[g], t);
      check_workload(ctx, &w, kv_heads * gqas[g], kv_heads, tol, what, 0);
      pat_workload_free(&w);
    }
  }
  pat_context_destroy(ctx);
}

static const int ALL_GQA[] = {1, 2, 4, 5, 7, 8, 16};
#define DTYPE_CASE(NAME, DT, HD, PG, TILES, TOL)                                            \
  Test(gpu, NAME, .timeout = 600)                                                           \
  {                                                                                         \
    skip_without_gpu();                                                                     \
    const char *p = write_spec(#NAME, DT, HD, PG, "[1, 2, 4, 5, 7, 8, 16]", TILES);         \
    random_trees(p, PG, ALL_GQA, 7, TOL, 2);                                                \
  }

#define TILES_64_128 "[{m: 16, n: 64, warps: 4, stages: 3}, {m: 64, n: 64, warps: 4, stages: 2}, " \
                     "{m: 128, n: 32, warps: 4, stages: 3, warp_rows: 32}]"
#define TILES_256 "[{m: 16, n: 64, warps: 4, stages: 2}, {m: 64, n: 32, warps: 4, stages: 2}]"

DTYPE_CASE(fp16_d64_p16, "fp16", 64, 16, TILES_64_128, TOL_FP16)
DTYPE_CASE(fp16_d64_p32, "fp16", 64, 32, TILES_64_128, TOL_FP16)
DTYPE_CASE(fp16_d128_p16, "fp16", 128, 16, TILES_64_128, TOL_FP16)
DTYPE_CASE(fp16_d128_p32, "fp16", 128, 32, TILES_64_128, TOL_FP16)
DTYPE_CASE(fp16_d256_p16, "fp16", 256, 16, TILES_256, TOL_FP16)
DTYPE_CASE(fp16_d256_p32, "fp16", 256, 32, TILES_256, TOL_FP16)
DTYPE_CASE(bf16_d64_p16, "bf16", 64, 16, TILES_64_128, TOL_BF16)
DTYPE_CASE(bf16_d64_p32, "bf16", 64, 32, TILES_64_128, TOL_BF16)
DTYPE_CASE(bf16_d128_p16, "bf16", 128, 16, TILES_64_128, TOL_BF16)
DTYPE_CASE(bf16_d128_p32, "bf16", 128, 32, TILES_64_128, TOL_BF16)
DTYPE_CASE(bf16_d256_p16, "bf16", 256, 16, TILES_256, TOL_BF16)
DTYPE_CASE(bf16_d256_p32, "bf16", 256, 32, TILES_256, TOL_BF16)

/* The page sizes the dtype suites leave out (8, 64, 128): the K/V copy looks a page up where
** a thread's row enters one, which depends on the page size against the tile's N and the
** rows a thread steps by (templates/device/kv_copy.cuh). A leaf tile (4 rows a step), a
** 64-row tile (16) and, on sm_90, the wgmma tile; GQA 1 and 8. */
Test(gpu, page_sizes_rest, .timeout = 900)
{
  skip_without_gpu();
  static const int gq[] = {1, 8};
  static const int pages[] = {8, 64, 128};
  for (int i = 0; i < 3; i++) {
    char name[64];
    snprintf(name, sizeof name, "page_%d", pages[i]);
    random_trees(write_spec(name, "fp16", 128, pages[i], "[1, 8]",
                            "[{m: 16, n: 32, warps: 2, stages: 2}, {m: 64, n: 64, warps: 8, stages: 3}, "
                            "{m: 128, n: 64, warps: 8, stages: 3, wgmma: 1}]"),
                 pages[i], gq, 2, TOL_FP16, 2);
  }
}

/* Every tile of specs/paper.yaml alone (so the scheduler must use it), GQA 1, 2, 4, 8. */
Test(gpu, paper_tiles_each, .timeout = 900)
{
  skip_without_gpu();
  static const int ms[] = {16, 32, 64}, ns[] = {16, 32, 64, 128};
  static const int gq[] = {1, 2, 4, 8};
  for (int i = 0; i < 3; i++) {
    for (int j = 0; j < 4; j++) {
      char name[64], tiles[128];
      snprintf(name, sizeof name, "paper_m%d_n%d", ms[i], ns[j]);
      snprintf(tiles, sizeof tiles, "[{m: %d, n: %d, warps: %d, stages: 2}]", ms[i], ns[j], ms[i] / 16);
      random_trees(write_spec(name, "fp16", 128, 32, "[1, 2, 4, 8]", tiles), 32, gq, 4, TOL_FP16, 1);
    }
  }
}

/* Tiles of 32 rows a warp alone (2 x 2, 2 x 1, 4 x 1 and 4 x 2 warps), GQA 1, 2, 4, 8. */
Test(gpu, warp_rows_32_each, .timeout = 900)
{
  skip_without_gpu();
  static const char *const tiles[] = {
    "[{m: 64, n: 64, warps: 4, stages: 3, warp_rows: 32}]",
    "[{m: 64, n: 32, warps: 2, stages: 2, warp_rows: 32}]",
    "[{m: 128, n: 32, warps: 4, stages: 3, warp_rows: 32}]",
    "[{m: 128, n: 64, warps: 8, stages: 2, warp_rows: 32}]",
  };
  static const int gq[] = {1, 2, 4, 8};
  for (int i = 0; i < 4; i++) {
    char name[64];
    snprintf(name, sizeof name, "warp_rows_32_%d", i);
    random_trees(write_spec(name, "fp16", 128, 32, "[1, 2, 4, 8]", tiles[i]), 32, gq, 4, TOL_FP16, 1);
  }
}

/* The device's compute capability x 10, from a lazily made context (nothing compiled). */
static int device_arch(void)
{
  pat_context *ctx = open_ctx_mode("specs/default.yaml", 1);
  int arch = 0;
  cr_assert_eq(pat_context_device(ctx, NULL, &arch, NULL, 0), PAT_OK);
  pat_context_destroy(ctx);
  return arch;
}

/* wgmma tiles alone (64 and 128 rows, 64 and 128 tokens a step, 3 and 4 stages) in fp16 and
** bf16 over pages of 16 and 32, GQA 1, 2, 4, 8, 16; then a 10000-token pack past the page-id
** window. Off sm_90 the context must refuse a spec with wgmma tiles only, saying why. */
Test(gpu, wgmma_tiles_each, .timeout = 900)
{
  skip_without_gpu();
  static const char *const tiles[] = {
    "[{m: 128, n: 64, warps: 8, stages: 3, wgmma: 1}]",
    "[{m: 64, n: 64, warps: 4, stages: 3, wgmma: 1}]",
    "[{m: 128, n: 128, warps: 8, stages: 3, wgmma: 1}]",
    "[{m: 128, n: 64, warps: 8, stages: 4, wgmma: 1}]",
  };
  static const int gq[] = {1, 2, 4, 8, 16};
  if (device_arch() != 90) {
    pat_context_desc d = {.spec_path = write_spec("wgmma_off_sm90", "fp16", 128, 32, "[8]", tiles[0]),
                          .cache_dir = "build/gpu_cache", .lazy = 1};
    pat_context *ctx = NULL;
    char err[1024];
    cr_assert_eq(pat_context_create(&d, &ctx, err, sizeof err), PAT_ERR_SPEC);
    cr_assert(strstr(err, "wgmma tiles need sm_90"), "%s", err);
    fprintf(stderr, "[NOTE] gpu::wgmma_tiles_each: not sm_90; checked the refusal only\n");
    return;
  }
  for (int i = 0; i < 4; i++) {
    for (int b = 0; b < 2; b++) {
      for (int page = 16; page <= 32; page += 16) {
        char name[64];
        snprintf(name, sizeof name, "wgmma_%d_%s_p%d", i, b ? "bf16" : "fp16", page);
        random_trees(write_spec(name, b ? "bf16" : "fp16", 128, page, "[1, 2, 4, 8, 16]", tiles[i]),
                     page, gq, 5, b ? TOL_BF16 : TOL_FP16, 1);
      }
    }
  }
  pat_context *ctx = open_ctx(write_spec_text(
      "wgmma_one_split", "page_size: 16\ngqa: [4]\ntiles: [{m: 64, n: 64, warps: 4, stages: 3, wgmma: 1}]\n"
                         "split: {min_kv_per_split: 16384, max_splits: 1, ctas_per_sm: 1}\n"));
  pat_workload w = parse_tree("2_10000", 16, 9);
  check_workload(ctx, &w, 32, 8, TOL_FP16, "wgmma 10000-token packs", 0);
  pat_workload_free(&w);
  pat_context_destroy(ctx);
}

/* The paper's 20 trees x 4 head configurations with the paper spec (checked on a sample of
** up to 24 queries each; every output is checked for being written). */

Test(gpu, paper_trees_all_heads, .timeout = 1200)
{
  skip_without_gpu();
  pat_context *ctx = open_ctx("specs/paper.yaml");
  static const int heads[][2] = {{32, 32}, {16, 8}, {32, 8}, {64, 8}};
  for (int i = 0; i < PAT_NUM_PAPER_TREES; i++) {
    pat_workload w = parse_tree(pat_paper_trees[i], 32, 5 + (uint64_t)i);
    for (int c = 0; c < 4; c++) {
      char what[160];
      snprintf(what, sizeof what, "%s %d/%d", pat_paper_trees[i], heads[c][0], heads[c][1]);
      check_workload(ctx, &w, heads[c][0], heads[c][1], TOL_FP16, what, 24);
    }
    pat_workload_free(&w);
  }
  pat_context_destroy(ctx);
}

/* Two contexts (two specs) side by side in one process, used alternately; the second
** compiles its kernels lazily, on first use. */
Test(gpu, two_contexts_side_by_side, .timeout = 600)
{
  skip_without_gpu();
  pat_context *a = open_ctx("specs/llama3_8b.yaml");
  pat_context *b = open_ctx_mode("specs/qwen2_7b_bf16.yaml", 1);
  pat_workload w = parse_tree("1,8_512,100", 16, 3);
  check_workload(a, &w, 32, 8, TOL_FP16, "llama3_8b", 0);
  check_workload(b, &w, 28, 4, TOL_BF16, "qwen2_7b_bf16", 0);
  check_workload(a, &w, 32, 8, TOL_FP16, "llama3_8b again", 0);
  pat_workload_free(&w);
  pat_context_destroy(b);
  pat_context_destroy(a);
}

/* Bad input gets a status and a message, and nothing runs. */
Test(gpu, bad_batches_are_refused, .timeout = 300)
{
  skip_without_gpu();
  pat_context *ctx = open_ctx("specs/default.yaml");
  int32_t lens[2] = {40, 70}, table[2][4] = {{0, 1, -1, -1}, {2, 3, 4, -1}};
  pat_batch_desc b = {.num_queries = 2, .seq_lens = lens, .block_table = &table[0][0],
                      .block_table_stride = 4, .num_pages = 5, .q_heads = 32, .kv_heads = 8};
  pat_plan *p = NULL;
  cr_assert_eq(pat_plan_create(ctx, &b, NULL, &p), PAT_OK, "%s", pat_last_error(ctx));
  pat_plan_destroy(p);
  pat_batch_desc bad = b;
  bad.num_pages = 4; /* page 4 out of range */
  cr_expect_eq(pat_plan_create(ctx, &bad, NULL, &p), PAT_ERR_INVALID_ARG);
  cr_expect(strstr(pat_last_error(ctx), "query 1: page id 4") != NULL, "got: %s", pat_last_error(ctx));
  bad = b;
  bad.q_heads = 24; /* GQA 3: not built */
  cr_expect_eq(pat_plan_create(ctx, &bad, NULL, &p), PAT_ERR_SPEC);
  bad = b;
  bad.num_queries = 0;
  cr_expect_eq(pat_plan_create(ctx, &bad, NULL, &p), PAT_ERR_INVALID_ARG);
  int32_t long_lens[2] = {40, 200}; /* beyond 3 x 32 tokens of its row */
  bad = b;
  bad.seq_lens = long_lens;
  cr_expect_eq(pat_plan_create(ctx, &bad, NULL, &p), PAT_ERR_INVALID_ARG);
  cr_expect(strstr(pat_last_error(ctx), "query 1: seq_len 200") != NULL, "names the query: %s",
            pat_last_error(ctx));

  /* A plan with splits needs workspace: too little, or misaligned, is refused before launch. */
  int32_t one_len = 2048, one_row[64];
  for (int i = 0; i < 64; i++) one_row[i] = i;
  pat_batch_desc split = {.num_queries = 1, .seq_lens = &one_len, .block_table = one_row,
                          .block_table_stride = 64, .num_pages = 64, .q_heads = 32, .kv_heads = 8,
                          .mode = PAT_MODE_DIRECT};
  cr_assert_eq(pat_plan_create(ctx, &split, NULL, &p), PAT_OK, "%s", pat_last_error(ctx));
  size_t need = pat_plan_workspace_size(p);
  cr_expect(need > 0, "a 2048-token query is split");
  pat_tensors t = {.q = 256, .k_cache = 256, .v_cache = 256, .out = 256};
  cr_expect_eq(pat_forward(ctx, p, &t, 4096, need - 16, NULL), PAT_ERR_WORKSPACE);
  cr_expect_eq(pat_forward(ctx, p, &t, 4100, need, NULL), PAT_ERR_INVALID_ARG);
  pat_plan_destroy(p);
  pat_context_destroy(ctx);
}

/* A pack longer than the kernel's shared-memory page window (256 page ids): the page ids
** past the window are read from global memory. One query of 10000 tokens in 16-token pages
** (625 pages), never split. */
Test(gpu, long_pack_beyond_page_window, .timeout = 300)
{
  skip_without_gpu();
  pat_context *ctx = open_ctx(write_spec_text(
      "one_split", ONE_TILE_P16 "split: {min_kv_per_split: 16384, max_splits: 1, ctas_per_sm: 1}\n"));
  pat_workload w = parse_tree("2_10000", 16, 9);
  check_workload(ctx, &w, 32, 8, TOL_FP16, "10000-token packs", 0);
  pat_workload_free(&w);
  pat_context_destroy(ctx);
}

/* 64 splits per query: the merge's second round of 32 LSEs and its partial batches. */
Test(gpu, merge_of_many_splits, .timeout = 300)
{
  skip_without_gpu();
  pat_context *ctx = open_ctx(write_spec_text(
      "many_splits", ONE_TILE_P16 "split: {min_kv_per_split: 16, max_splits: 64, ctas_per_sm: 4}\n"));
  pat_workload w = parse_tree("2_2000", 16, 21);
  char err[4096];
  harness *h = harness_create(ctx, &w, 8, 2, 5, err, sizeof err);
  cr_assert_not_null(h, "%s", err);
  harness_result r;
  cr_assert_eq(harness_run(h, PAT_MODE_PREFIX, 0, 0, &r, err, sizeof err), 0, "%s", err);
  cr_assert_eq(r.info.num_merges, 2);
  cr_assert_gt(r.info.num_slots / r.info.num_merges, 32, "%d slots for %d merges", r.info.num_slots,
               r.info.num_merges);
  cr_expect_eq(r.nonfinite, 0);
  cr_expect(r.rel_err < TOL_FP16, "rel_err %.3e", r.rel_err);
  harness_destroy(h);
  pat_workload_free(&w);
  pat_context_destroy(ctx);
}

/* Harnesses that share caches (pattune's way to hold every head shape of the paper's trees):
** one with the same kv heads reads the same K and V, one with other kv heads its own; all
** three check against their references. */
Test(gpu, harnesses_sharing_caches, .timeout = 300)
{
  skip_without_gpu();
  pat_context *ctx = open_ctx("specs/default.yaml");
  pat_workload w = parse_tree("1,8_256,40", 32, 17);
  static const int heads[3][2] = {{32, 8}, {16, 8}, {32, 32}};
  harness *h[3] = {NULL, NULL, NULL};
  pat_tensors t[3];
  char err[4096];
  for (int i = 0; i < 3; i++) {
    h[i] = harness_create_sharing(ctx, &w, heads[i][0], heads[i][1], 40 + (uint64_t)i, h[0], err, sizeof err);
    cr_assert_not_null(h[i], "%d/%d: %s", heads[i][0], heads[i][1], err);
    harness_tensors(h[i], &t[i]);
  }
  cr_assert_eq(t[1].k_cache, t[0].k_cache, "16/8 should read the 32/8 harness's K");
  cr_assert_eq(t[1].v_cache, t[0].v_cache, "16/8 should read the 32/8 harness's V");
  cr_assert_neq(t[2].k_cache, t[0].k_cache, "32/32 needs caches of its own");
  for (int i = 0; i < 3; i++) {
    harness_result r;
    cr_assert_eq(harness_run(h[i], PAT_MODE_PREFIX, 0, 0, &r, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.nonfinite, 0, "%d/%d", heads[i][0], heads[i][1]);
    cr_expect(r.rel_err < TOL_FP16, "%d/%d: rel_err %.3e", heads[i][0], heads[i][1], r.rel_err);
  }
  for (int i = 2; i >= 0; i--) harness_destroy(h[i]);
  pat_workload_free(&w);
  pat_context_destroy(ctx);
}

/* Masked packs (a subtree in one pack): the default spec's tiles, KV split down to 64
** tokens. 1,256_256,32: a 256-token prefix and its 32-token leaves in packs of 8 queries, no
** merge; 1,64_256,40 (32/32): leaves of 40 tokens, partial pages inside the packs; a deep
** tree whose lower levels go into masked packs beside own packs and merges. */
#define MASKED_TILES "[{m: 16, n: 32, warps: 2, stages: 2}, {m: 32, n: 64, warps: 4, stages: 3}, " \
                     "{m: 64, n: 64, warps: 8, stages: 3}, {m: 128, n: 64, warps: 8, stages: 3, wgmma: 1}]"
Test(gpu, masked_packs, .timeout = 300)
{
  skip_without_gpu();
  pat_context *ctx = open_ctx(write_spec_text(
      "masked_splits", "page_size: 32\ngqa: [1, 2, 8]\ntiles: " MASKED_TILES "\n"
      "split: {min_kv_per_split: 64, max_splits: 8, ctas_per_sm: 2}\n"));
  static const struct { const char *tree; int q, kv, merges; } cases[] = {
      {"1,256_256,32", 64, 8, 0}, {"1,256_256,32", 16, 8, 0}, {"1,256_256,32", 32, 32, 0},
      {"1,64_256,40", 32, 32, 0}, {"1,16,32,64,128,1024_256,128,64,32,32,32", 64, 8, 1},
      {"1,16,32,64,128,1024_256,128,64,32,32,32", 16, 8, 1}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pat_workload w = parse_tree(cases[i].tree, 32, 40 + (uint64_t)i);
    char err[4096], what[96];
    snprintf(what, sizeof what, "%s %d/%d", cases[i].tree, cases[i].q, cases[i].kv);
    harness *h = harness_create(ctx, &w, cases[i].q, cases[i].kv, 77, err, sizeof err);
    cr_assert_not_null(h, "%s: %s", what, err);
    harness_result r;
    cr_assert_eq(harness_run(h, PAT_MODE_PREFIX, 0, 0, &r, err, sizeof err), 0, "%s: %s", what, err);
    cr_expect_gt(r.info.num_masked_packs, 0, "%s: no masked pack", what);
    cr_expect_eq(r.info.num_merges > 0, cases[i].merges, "%s: %d merges", what, r.info.num_merges);
    cr_expect_eq(r.nonfinite, 0, "%s: %lld outputs not finite", what, r.nonfinite);
    cr_expect(r.rel_err < TOL_FP16, "%s: rel_err %.3e", what, r.rel_err);
    cr_log_info("%s: %d packs (%d masked), %d merges, rel_err %.2e\n", what, r.info.num_packs,
                r.info.num_masked_packs, r.info.num_merges, r.rel_err);
    harness_destroy(h);
    pat_workload_free(&w);
  }
  pat_context_destroy(ctx);
}

/* Plans of one context made by two threads at once: a build holds the context's scheduler
** buffers, a build beside it takes fresh ones, and destroyed plans hand their arrays back;
** every plan must equal the plan of the same batch made alone. */
enum { SHARED_TREES = 3, SHARED_ROUNDS = 20 };
typedef struct plan_job {
  pat_context *ctx;
  const pat_batch_desc *batch;  /* SHARED_TREES */
  const pat_plan_info *want;    /* SHARED_TREES */
  int first;                    /* tree to start from: the threads interleave */
  int bad;
  char why[256];
} plan_job;

static void *make_plans(void *arg)
{
  plan_job *j = arg;
  for (int r = 0; r < SHARED_ROUNDS * SHARED_TREES; r++) {
    int i = (j->first + r) % SHARED_TREES;
    pat_plan *p = NULL;
    pat_plan_info pi;
    if (pat_plan_create(j->ctx, &j->batch[i], NULL, &p) || pat_plan_get_info(p, &pi)) {
      snprintf(j->why, sizeof j->why, "tree %d: plan failed", i);
      j->bad++;
    } else if (pi.num_packs != j->want[i].num_packs || pi.num_merges != j->want[i].num_merges ||
               pi.num_slots != j->want[i].num_slots || pi.kv_tokens_read != j->want[i].kv_tokens_read ||
               pi.num_masked_packs != j->want[i].num_masked_packs) {
      snprintf(j->why, sizeof j->why, "tree %d: %d packs %d merges %lld read, alone %d %d %lld", i, pi.num_packs,
               pi.num_merges, pi.kv_tokens_read, j->want[i].num_packs, j->want[i].num_merges,
               j->want[i].kv_tokens_read);
      j->bad++;
    }
    pat_plan_destroy(p);
  }
  return NULL;
}

Test(gpu, plans_from_two_threads, .timeout = 300)
{
  skip_without_gpu();
  pat_context *ctx = open_ctx("specs/default.yaml");
  static const char *const trees[SHARED_TREES] = {"1,1024_2048,32", "1,256_256,32",
                                                  "1,16,32,64,128,1024_256,128,64,32,32,32"};
  pat_workload w[SHARED_TREES];
  pat_batch_desc b[SHARED_TREES];
  pat_plan_info want[SHARED_TREES];
  for (int i = 0; i < SHARED_TREES; i++) {
    w[i] = parse_tree(trees[i], 32, 90 + (uint64_t)i);
    b[i] = (pat_batch_desc){.num_queries = w[i].num_queries, .seq_lens = w[i].seq_lens,
                            .block_table = w[i].block_table, .block_table_stride = w[i].stride,
                            .num_pages = w[i].num_pages, .q_heads = 32, .kv_heads = 8, .mode = PAT_MODE_PREFIX};
    pat_plan *p = NULL;
    cr_assert_eq(pat_plan_create(ctx, &b[i], NULL, &p), PAT_OK, "%s: %s", trees[i], pat_last_error(ctx));
    cr_assert_eq(pat_plan_get_info(p, &want[i]), PAT_OK);
    pat_plan_destroy(p);
  }
  plan_job job[2] = {{ctx, b, want, 0, 0, ""}, {ctx, b, want, 1, 0, ""}};
  pthread_t th[2];
  for (int t = 0; t < 2; t++) cr_assert_eq(pthread_create(&th[t], NULL, make_plans, &job[t]), 0);
  for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < 2; t++) cr_expect_eq(job[t].bad, 0, "thread %d: %d bad plans; last: %s", t, job[t].bad, job[t].why);
  /* and a forward after all that, on recycled arrays */
  check_workload(ctx, &w[1], 32, 8, TOL_FP16, "after the threads", 0);
  for (int i = 0; i < SHARED_TREES; i++) pat_workload_free(&w[i]);
  pat_context_destroy(ctx);
}

/* PAT_PDL=off: the tile groups fork onto the context's streams and join back before the
** merge (the launch path before sm_90; every other suite on sm_90 runs the PDL chain).
** Three tiles, so that random trees launch several groups and merge most queries. */
Test(gpu, multi_stream_launches, .timeout = 600)
{
  skip_without_gpu();
  static const int gq[] = {1, 4, 8};
  const char *p = write_spec("multi_stream", "fp16", 128, 32, "[1, 4, 8]", TILES_64_128);
  setenv("PAT_PDL", "off", 1);
  random_trees(p, 32, gq, 3, TOL_FP16, 3);
  unsetenv("PAT_PDL");
}

/* PAT_SMEM_CARVEOUT=max: every kernel asks the driver for the largest shared-memory carveout
** (read back from it), and the outputs stay correct with the launches sharing SMs. Three
** tiles, so that random trees launch several groups and merge most queries. */
Test(gpu, smem_carveout_max, .timeout = 600)
{
  skip_without_gpu();
  static const int gq[] = {1, 8};
  const char *p = write_spec("carveout", "fp16", 128, 32, "[1, 8]", TILES_64_128);
  setenv("PAT_SMEM_CARVEOUT", "max", 1);
  pat_context *ctx = open_ctx(p);
  char err[512];
  for (int i = 0; i < ctx->src.count; i++) {
    int v = -2;
    cr_assert_eq(PAT_CU(ctx->cu, ctx->cu->cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                                                             ctx->kernels[i].fn), err, sizeof err), 0, "%s", err);
    cr_assert_eq(v, 100, "%s: carveout %d", ctx->src.kernels[i].name, v);
  }
  pat_context_destroy(ctx);
  random_trees(p, 32, gq, 2, TOL_FP16, 3);
  unsetenv("PAT_SMEM_CARVEOUT");
}

/* A tuning table beside the spec: applied on this GPU (its extra tile runs and is correct),
** left unused when written for another GPU, passed over for this GPU's own table, ignored
** with PAT_TUNING=off. */
Test(gpu, tuning_table_beside_the_spec, .timeout = 300)
{
  skip_without_gpu();
  unsetenv("PAT_TUNING");                      /* the caller's setting would change every note */
  remove("build/gpu_specs/tuned.tune.yaml");  /* a table left by an interrupted run */
  const char *spec = write_spec("tuned", "fp16", 128, 32, "[2, 8]",
                                "[{m: 16, n: 64, warps: 4, stages: 3}, {m: 32, n: 64, warps: 4, stages: 3}]");
  pat_context *probe = open_ctx(spec);
  char gpu[128];
  cr_assert_eq(pat_context_device(probe, NULL, NULL, gpu, sizeof gpu), PAT_OK);
  cr_assert(strstr(pat_context_tuning(probe), "none (no build/gpu_specs/tuned.tune.yaml)"), "%s",
            pat_context_tuning(probe));
  pat_context_destroy(probe);

  const char *names[] = {gpu, "Some Other GPU"};
  for (int k = 0; k < 2; k++) {
    FILE *f = fopen("build/gpu_specs/tuned.tune.yaml", "w");
    cr_assert_not_null(f);
    fprintf(f, "spec: tuned\ngpu: \"%s\"\nsplit: {min_kv_per_split: 32, max_splits: 8, ctas_per_sm: 4}\n"
               "choices:\n", names[k]);
    for (int tok = 64; tok <= 65536; tok = tok == 1024 ? 65536 : tok * 4)
      fprintf(f, "  - {gqa: 8, rows: 32, tokens: %d, m: 32, n: 32, warps: 2, stages: 2}\n", tok);
    fclose(f);
    pat_context *ctx = open_ctx(spec);
    pat_spec_info si;
    cr_assert_eq(pat_context_spec_info(ctx, &si), PAT_OK);
    const char *note = pat_context_tuning(ctx);
    if (k == 0) {
      cr_assert(strstr(note, "4 tile choices, split 32 tokens / 8 per query / 4 CTAs per SM"), "%s", note);
      cr_assert_eq(si.num_tiles, 3, "the table's tile is added");
    } else {
      cr_assert(strstr(note, "this is") && strstr(note, "not used"), "%s", note);
      cr_assert_eq(si.num_tiles, 2);
    }
    /* 4 queries x GQA 8 = 32 rows share 512 tokens: the packs the table sends to m32n32. */
    pat_workload w = parse_tree("2,8_512,40", 32, 17);
    check_workload(ctx, &w, 16, 2, TOL_FP16, k ? "tuning table, other GPU" : "tuning table applied", 0);
    pat_workload_free(&w);
    pat_context_destroy(ctx);
  }
  /* This GPU's own table (NAME.tune.GPU.yaml) comes before NAME.tune.yaml (another GPU's now). */
  char own[512];
  pat_tuning_path(spec, gpu, own, sizeof own);
  FILE *f = fopen(own, "w");
  cr_assert_not_null(f, "%s", own);
  fprintf(f, "spec: tuned\ngpu: \"%s\"\nsplit: {min_kv_per_split: 64, max_splits: 4, ctas_per_sm: 2}\n", gpu);
  fclose(f);
  pat_context *mine = open_ctx(spec);
  cr_assert(strstr(pat_context_tuning(mine), own) && strstr(pat_context_tuning(mine), "split 64 tokens / 4 per query"),
            "%s", pat_context_tuning(mine));
  pat_context_destroy(mine);
  remove(own);
  setenv("PAT_TUNING", "off", 1);
  pat_context *off = open_ctx(spec);
  cr_assert(strstr(pat_context_tuning(off), "PAT_TUNING=off"), "%s", pat_context_tuning(off));
  pat_context_destroy(off);
  unsetenv("PAT_TUNING");
  remove("build/gpu_specs/tuned.tune.yaml");
}
