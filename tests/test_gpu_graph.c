/* test_gpu_graph.c: pat_forward captured once in a CUDA graph with a capacity plan, then
** replayed for different random batches (pat_plan_update between replays), each checked
** against the CPU reference with the output poisoned first. Skips without a CUDA driver. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "harness.h"
#include "pat.h"
#include "tree.h"

#define TOL_FP16 5e-3
enum { NTREES = 6 };

static const pat_cuda *skip_without_gpu(void)
{
  const pat_cuda *cu = NULL;
  char err[512];
  if (pat_cuda_load(&cu, err, sizeof err)) {
    fprintf(stderr, "[SKIP] gpu_graph::%s: %s\n", criterion_current_test->name, err);
    cr_skip_test("GPU test skipped: %s", err);
  }
  return cu;
}

static const char *write_spec(const char *name, int page, const char *gqa, const char *tiles)
{
  static char path[256];
  cr_assert_eq(system("mkdir -p build/gpu_specs"), 0);
  snprintf(path, sizeof path, "build/gpu_specs/%s.yaml", name);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fprintf(f, "name: %s\ndtype: fp16\nhead_dim: 128\npage_size: %d\ngqa: %s\ntiles: %s\n"
             "split: {min_kv_per_split: 64, max_splits: 16, ctas_per_sm: 2}\narchs: [sm_90]\n",
          name, page, gqa, tiles);
  fclose(f);
  return path;
}

#define CU_OK(call) cr_assert_eq(PAT_CU(cu, call, err, sizeof err), 0, "%s", err)

/* Captures pat_forward with a capacity plan covering NTREES random trees (prefix and direct
** mode alternately), replays it for each tree in a shuffled order and checks the output;
** then checks that a batch beyond the capacities is refused and leaves the plan usable.
** small_tile_packs > 0 limits tile 0's launch, so that its packs move to a larger tile.
** trees (NTREES of them, or NULL: random trees) names the batches; with names, some prefix
** plan must hold masked packs. */
static void replay(const char *spec_path, int page, int gqa, int kv_heads, int external_ws, int small_tile_packs,
                   const char *const *trees)
{
  const pat_cuda *cu = skip_without_gpu();
  char err[8192];
  pat_context_desc cd = {.spec_path = spec_path, .cache_dir = "build/gpu_cache", .lazy = 1};
  pat_context *ctx = NULL;
  pat_status st = pat_context_create(&cd, &ctx, err, sizeof err);
  cr_assert_eq(st, PAT_OK, "pat_context_create(%s): %s: %s", spec_path, pat_status_string(st), err);
  const int q_heads = gqa * kv_heads;

  pat_workload w[NTREES];
  pat_batch_desc b[NTREES];
  int32_t maxq = 0, maxp = 0;
  for (int i = 0; i < NTREES; i++) {
    pat_random_tree_opts o = {.max_depth = 4, .max_fanout = 12, .max_queries = 16 + 8 * i,
                              .max_pages = 120 + 40 * i, .max_node_pages = 6, .max_leaf_tokens = 3 * page};
    if (trees)
      cr_assert_eq(pat_tree_parse(trees[i], page, 7000 + (uint64_t)i, &w[i], err, sizeof err), 0, "%s", err);
    else
      cr_assert_eq(pat_tree_random(7000 + (uint64_t)i, &o, page, &w[i], err, sizeof err), 0, "%s", err);
    b[i] = (pat_batch_desc){.num_queries = w[i].num_queries, .seq_lens = w[i].seq_lens,
                            .block_table = w[i].block_table, .block_table_stride = w[i].stride,
                            .num_pages = w[i].num_pages, .q_heads = q_heads, .kv_heads = kv_heads,
                            .mode = (pat_mode)(i % 2)};
    maxq = w[i].num_queries > maxq ? w[i].num_queries : maxq;
    maxp = w[i].num_pages > maxp ? w[i].num_pages : maxp;
  }
  /* Capacities: the element-wise maximum over the batches' own plans. */
  pat_plan_caps caps;
  memset(&caps, 0, sizeof caps);
  for (int i = 0; i < NTREES; i++) {
    pat_plan *p = NULL;
    cr_assert_eq(pat_plan_create(ctx, &b[i], NULL, &p), PAT_OK, "%s", pat_last_error(ctx));
    pat_plan_caps c;
    cr_assert_eq(pat_plan_caps_from(p, 1.0, &c), PAT_OK);
    if (i == 0) caps = c;
    else pat_plan_caps_max(&caps, &c);
    pat_plan_destroy(p);
  }
  caps.external_workspace = external_ws;
  if (small_tile_packs > 0) caps.tile_packs[0] = small_tile_packs;
  cr_log_info("caps: packs %d per tile (tile 0: %d), pack queries %d, pages %d, merges %d, slots %d\n",
              caps.max_packs, caps.tile_packs[0], caps.max_pack_queries, caps.max_pages, caps.max_merges,
              caps.max_slots);

  harness *h = harness_create_sized(ctx, maxq, maxp, q_heads, kv_heads, 4242, err, sizeof err);
  cr_assert_not_null(h, "%s", err);
  pat_tensors t;
  harness_tensors(h, &t);
  CUstream s = NULL;
  CU_OK(cu->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

  pat_plan *plan = NULL;
  st = pat_plan_create_capacity(ctx, &b[0], &caps, (pat_stream)s, &plan);
  cr_assert_eq(st, PAT_OK, "pat_plan_create_capacity: %s: %s", pat_status_string(st), pat_last_error(ctx));
  pat_plan_info info;
  cr_assert_eq(pat_plan_get_info(plan, &info), PAT_OK);
  pat_plan_caps got;
  cr_assert_eq(pat_plan_get_caps(plan, &got), 1);
  size_t ws_bytes = pat_plan_workspace_size(plan);
  CUdeviceptr ws = 0;
  if (external_ws && ws_bytes) CU_OK(cu->cuMemAlloc(&ws, ws_bytes));
  cr_log_info("%s: %d launches, workspace %zu bytes (%s)\n", spec_path, info.num_launches, ws_bytes,
              external_ws ? "caller's" : "the plan's");

  /* Warm-up, outside any graph: the capacity plan runs as it is. */
  harness_result r;
  cr_assert_eq(harness_set_workload(h, &w[0], err, sizeof err), 0, "%s", err);
  cr_assert_eq(harness_poison(h, err, sizeof err), 0, "%s", err);
  st = pat_forward(ctx, plan, &t, ws, ws_bytes, (pat_stream)s);
  cr_assert_eq(st, PAT_OK, "pat_forward: %s", pat_last_error(ctx));
  cr_assert_eq(harness_check(h, 0, &r, err, sizeof err), 0, "%s", err);
  cr_assert(r.nonfinite == 0 && r.rel_err < TOL_FP16, "warm-up: %lld nonfinite, rel_err %.3e", r.nonfinite, r.rel_err);

  /* Capture. */
  CUgraph graph = NULL;
  CUgraphExec exec = NULL;
  CU_OK(cu->cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
  st = pat_forward(ctx, plan, &t, ws, ws_bytes, (pat_stream)s);
  CUresult end = cu->cuStreamEndCapture(s, &graph);
  cr_assert_eq(st, PAT_OK, "pat_forward under capture: %s", pat_last_error(ctx));
  CU_OK(end);
  CU_OK(cu->cuGraphInstantiate(&exec, graph, 0));

  /* Replay: every tree, in a shuffled order, the first one last. */
  int last = 0, masked = 0;
  for (int round = 0; round < NTREES; round++) {
    int i = (round * 5 + 1) % NTREES;
    cr_assert_eq(harness_set_workload(h, &w[i], err, sizeof err), 0, "%s", err);
    cr_assert_eq(harness_poison(h, err, sizeof err), 0, "%s", err);
    st = pat_plan_update(plan, &b[i], (pat_stream)s);
    cr_assert_eq(st, PAT_OK, "pat_plan_update(tree %d): %s: %s", i, pat_status_string(st), pat_last_error(ctx));
    CU_OK(cu->cuGraphLaunch(exec, s));
    CU_OK(cu->cuStreamSynchronize(s));
    cr_assert_eq(harness_check(h, 0, &r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(pat_plan_get_info(plan, &info), PAT_OK);
    cr_expect_eq(r.nonfinite, 0, "tree %d: %lld outputs not written or not finite", i, r.nonfinite);
    cr_expect(r.rel_err < TOL_FP16, "tree %d: rel_err %.3e (max abs %.3e)", i, r.rel_err, r.max_abs_err);
    cr_log_info("replay tree %d (%s): %d queries, %d packs (%d masked), %d merges, %d slots, rel_err %.2e\n", i,
                i % 2 ? "direct" : "prefix", w[i].num_queries, info.num_packs, info.num_masked_packs, info.num_merges,
                info.num_slots, r.rel_err);
    masked += info.num_masked_packs;
    last = i;
  }
  if (trees) cr_expect_gt(masked, 0, "no replayed plan had masked packs");

  /* A batch beyond the capacities is refused; the plan keeps the last batch. */
  pat_workload big;
  cr_assert_eq(pat_tree_parse("1,16,512_256,128,32", page, 99, &big, err, sizeof err), 0, "%s", err);
  pat_batch_desc bb = {.num_queries = big.num_queries, .seq_lens = big.seq_lens, .block_table = big.block_table,
                       .block_table_stride = big.stride, .num_pages = big.num_pages, .q_heads = q_heads,
                       .kv_heads = kv_heads};
  st = pat_plan_update(plan, &bb, (pat_stream)s);
  cr_assert_eq(st, PAT_ERR_INVALID_ARG, "a batch of %d queries fit the capacities", big.num_queries);
  cr_assert(strstr(pat_last_error(ctx), "capacity: "), "%s", pat_last_error(ctx));
  cr_log_info("refused: %s\n", pat_last_error(ctx));
  cr_assert_eq(harness_poison(h, err, sizeof err), 0, "%s", err);
  CU_OK(cu->cuGraphLaunch(exec, s));
  CU_OK(cu->cuStreamSynchronize(s));
  cr_assert_eq(harness_check(h, 0, &r, err, sizeof err), 0, "%s", err);
  cr_expect(r.nonfinite == 0 && r.rel_err < TOL_FP16, "after a refused update (tree %d): %lld nonfinite, rel_err %.3e",
            last, r.nonfinite, r.rel_err);
  pat_workload_free(&big);

  CU_OK(cu->cuGraphExecDestroy(exec));
  CU_OK(cu->cuGraphDestroy(graph));
  pat_plan_destroy(plan);
  if (ws) cu->cuMemFree(ws);
  cu->cuStreamDestroy(s);
  harness_destroy(h);
  for (int i = 0; i < NTREES; i++) pat_workload_free(&w[i]);
  pat_context_destroy(ctx);
}

/* Two tiles (two forked launches) and the merge in the graph; the caller's workspace. */
Test(gpu_graph, replay_random_trees, .timeout = 600)
{
  skip_without_gpu();
  const char *p = write_spec("graph_d128_p16", 16, "[1, 4, 8]",
                             "[{m: 16, n: 64, warps: 4, stages: 3}, {m: 64, n: 64, warps: 4, stages: 2}]");
  replay(p, 16, 4, 4, 1, 0, NULL);
}

/* The default spec, the plan's own workspace, and a small launch for the small tile, so
** that packs move to the larger tile's launch. */
Test(gpu_graph, replay_moved_packs_own_workspace, .timeout = 600)
{
  skip_without_gpu();
  replay("specs/default.yaml", 32, 8, 4, 0, 3, NULL);
}

/* Masked packs (a subtree in one pack) in a captured graph: their mask words sit at the
** capacity plan's fixed address and change with every update. */
Test(gpu_graph, replay_masked_packs, .timeout = 600)
{
  skip_without_gpu();
  /* prefix plans (even entries) with masked packs, direct plans between them; none as large
  ** as the 512-query batch the capacities must refuse */
  static const char *const trees[NTREES] = {"1,256_256,32", "1,4,256_32,256,32", "2,8,16,256_256,256,32,32",
                                            "1,64_256,40", "1,256_256,32", "1,128_256,20"};
  replay("specs/default.yaml", 32, 8, 8, 0, 0, trees);
}

/* Capacity plans refuse what they cannot replay: other head counts, plain plans. */
Test(gpu_graph, update_refusals, .timeout = 300)
{
  skip_without_gpu();
  char err[8192];
  pat_context_desc cd = {.spec_path = "specs/default.yaml", .cache_dir = "build/gpu_cache", .lazy = 1};
  pat_context *ctx = NULL;
  cr_assert_eq(pat_context_create(&cd, &ctx, err, sizeof err), PAT_OK, "%s", err);
  int32_t lens[2] = {40, 70}, table[2][4] = {{0, 1, -1, -1}, {2, 3, 4, -1}};
  pat_batch_desc b = {.num_queries = 2, .seq_lens = lens, .block_table = &table[0][0],
                      .block_table_stride = 4, .num_pages = 5, .q_heads = 32, .kv_heads = 8};
  pat_plan *plain = NULL, *cap = NULL;
  cr_assert_eq(pat_plan_create(ctx, &b, NULL, &plain), PAT_OK, "%s", pat_last_error(ctx));
  cr_assert_eq(pat_plan_update(plain, &b, NULL), PAT_ERR_INVALID_ARG);
  cr_assert(strstr(pat_last_error(ctx), "pat_plan_create_capacity"), "%s", pat_last_error(ctx));
  pat_plan_caps caps = {.max_packs = 1, .max_pack_queries = 1, .max_pages = 1};
  cr_assert_eq(pat_plan_create_capacity(ctx, &b, &caps, NULL, &cap), PAT_ERR_INVALID_ARG);
  cr_assert(strstr(pat_last_error(ctx), "capacity: "), "%s", pat_last_error(ctx));
  cr_assert_null(cap);
  cr_assert_eq(pat_plan_caps_from(plain, 2.0, &caps), PAT_OK);
  cr_assert_eq(pat_plan_create_capacity(ctx, &b, &caps, NULL, &cap), PAT_OK, "%s", pat_last_error(ctx));
  pat_batch_desc other = b;
  other.q_heads = 16;
  cr_assert_eq(pat_plan_update(cap, &other, NULL), PAT_ERR_INVALID_ARG);
  cr_assert(strstr(pat_last_error(ctx), "heads"), "%s", pat_last_error(ctx));
  cr_assert_eq(pat_plan_update(cap, &b, NULL), PAT_OK, "%s", pat_last_error(ctx));
  pat_plan_destroy(cap);
  pat_plan_destroy(plain);
  pat_context_destroy(ctx);
}
