/* patgen_run.c: `patgen run` (the default job: generate, compile, run a decode workload on
** the GPU, check it and time it) and `patgen plan` (print a workload's pack plan, no GPU). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "pat.h"
#include "patgen_cmds.h"
#include "sched.h"
#include "spec.h"
#include "tile.h"
#include "tree.h"
#include "tuning.h"

#define DEFAULT_SPEC "specs/default.yaml"
#define DEFAULT_TREE "1,64_2048,256" /* a 2048-token system prompt shared by 64 requests */

typedef struct run_args {
  const char *spec, *tree, *tuning;
  int q_heads, kv_heads, num_sms, iters, ordered, arch;
} run_args;

static int parse_args(int argc, char **argv, run_args *a, int tree_positional)
{
  for (int i = 0; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--tree") && v) a->tree = argv[++i];
    else if (!strcmp(argv[i], "--spec") && v) a->spec = argv[++i];
    else if (!strcmp(argv[i], "--sms") && v) a->num_sms = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && v) a->iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ordered-pages")) a->ordered = 1;
    else if (!strcmp(argv[i], "--tuning") && v && tree_positional) a->tuning = argv[++i];
    else if (!strcmp(argv[i], "--arch") && v && tree_positional) {
      if (sscanf(argv[++i], "sm_%d", &a->arch) != 1 || a->arch < 80) {
        fprintf(stderr, "patgen: --arch wants sm_80, sm_90, ...\n");
        return -1;
      }
    }
    else if (!strcmp(argv[i], "--heads") && v) {
      if (sscanf(argv[++i], "%d/%d", &a->q_heads, &a->kv_heads) != 2 || a->q_heads <= 0 ||
          a->kv_heads <= 0 || a->q_heads % a->kv_heads) {
        fprintf(stderr, "patgen: --heads wants Q/KV with Q a multiple of KV, e.g. 32/8\n");
        return -1;
      }
    } else if (argv[i][0] != '-' && tree_positional && !a->tree) a->tree = argv[i];
    else if (argv[i][0] != '-' && !tree_positional && !a->spec) a->spec = argv[i];
    else {
      fprintf(stderr, "patgen: unknown argument '%s' (see patgen --help)\n", argv[i]);
      return -1;
    }
  }
  return 0;
}

static void print_result(const char *label, const harness_result *r, double floor_us)
{
  printf("  %-7s %9.1f us (min %8.1f)  %5.2fx floor  packs %6d  CTAs %7d  launches %d  merges %6d  "
         "KV read/unique %.2f  plan %.0f us  rel_err %.1e  %s\n",
         label, r->median_us, r->min_us, r->median_us / floor_us, r->info.num_packs, r->info.num_ctas,
         r->info.num_launches, r->info.num_merges,
         (double)r->info.kv_tokens_read / (double)r->info.kv_tokens_unique, r->plan_us, r->rel_err,
         (r->nonfinite == 0 && r->rel_err < 2e-2) ? "ok" : "WRONG");
}

int patgen_cmd_run(int argc, char **argv)
{
  run_args a = {.q_heads = 32, .kv_heads = 8, .iters = 100};
  if (parse_args(argc, argv, &a, 0)) return 2;
  if (!a.spec) a.spec = DEFAULT_SPEC;
  if (!a.tree) a.tree = DEFAULT_TREE;
  pat_spec spec;
  char err[4096];
  if (pat_spec_load(a.spec, &spec, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  printf("spec %s: %s, head_dim %d, page %d, %d tiles x %d GQA ratios\n", a.spec,
         pat_dtype_name(spec.dtype), spec.head_dim, spec.page_size, spec.num_tiles, spec.num_gqa);
  pat_context_desc d = {.spec_path = a.spec, .progress = 1};
  pat_context *ctx = NULL;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pat_status st = pat_context_create(&d, &ctx, err, sizeof err);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (st == PAT_ERR_NO_DRIVER) {
    printf("%s: %s\n", pat_status_string(st), err);
    printf("no GPU here: nothing to run; 'patgen %s -o DIR' and 'patgen compile %s' work "
           "without one\n", a.spec, a.spec);
    return 0;
  }
  if (st) {
    fprintf(stderr, "pat_context_create: %s: %s\n", pat_status_string(st), err);
    return 1;
  }
  char name[128];
  int sms = 0, arch = 0;
  pat_context_device(ctx, &sms, &arch, name, sizeof name);
  pat_spec_info si;
  pat_context_spec_info(ctx, &si);
  printf("device: %s (sm_%d, %d SMs); context with %d kernels ready in %.0f ms (NVRTC or disk cache)\n"
         "tuning: %s\n",
         name, arch, sms, si.num_tiles * si.num_gqa + 1,
         (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6, pat_context_tuning(ctx));
  pat_workload w;
  if (pat_tree_parse(a.tree, spec.page_size, a.ordered ? 0 : 42, &w, err, sizeof err)) {
    fprintf(stderr, "patgen: %s\n", err);  /* the message names the tree */
    pat_context_destroy(ctx);
    return 2;
  }
  int rc = 1;
  harness *h = harness_create(ctx, &w, a.q_heads, a.kv_heads, 7, err, sizeof err);
  if (!h) {
    fprintf(stderr, "patgen: %s\n", err);
    goto out;
  }
  double bw = harness_copy_bandwidth(ctx, err, sizeof err);
  if (bw <= 0) {
    fprintf(stderr, "patgen: copy bandwidth: %s\n", err);
    goto out;
  }
  double floor_us = harness_floor_bytes(h) / bw * 1e6;
  printf("workload %s, %d/%d heads: %d queries, %lld unique KV tokens, floor %.1f us "
         "(%.1f MB at %.2f TB/s copy bandwidth)\n", a.tree, a.q_heads, a.kv_heads, w.num_queries,
         (long long)w.unique_tokens, floor_us, harness_floor_bytes(h) / 1e6, bw / 1e12);
  harness_result rp, rd;
  if (harness_run(h, PAT_MODE_PREFIX, 64, a.iters, &rp, err, sizeof err) ||
      harness_run(h, PAT_MODE_DIRECT, 64, a.iters, &rd, err, sizeof err)) {
    fprintf(stderr, "patgen: %s\n", err);
    goto out;
  }
  print_result("prefix", &rp, floor_us);
  print_result("direct", &rd, floor_us);
  rc = (rp.nonfinite || rd.nonfinite || rp.rel_err > 2e-2 || rd.rel_err > 2e-2) ? 1 : 0;
  printf("prefix-aware is %.2fx faster than one query per CTA\n", rd.median_us / rp.median_us);
out:
  harness_destroy(h);
  pat_workload_free(&w);
  pat_context_destroy(ctx);
  return rc;
}

int patgen_cmd_plan(int argc, char **argv)
{
  run_args a = {.q_heads = 32, .kv_heads = 8, .num_sms = 132, .arch = 90};
  if (parse_args(argc, argv, &a, 1)) return 2;
  if (!a.tree) {
    fprintf(stderr, "patgen plan: a tree is required, e.g. patgen plan 1,8,512_32,512,256\n");
    return 2;
  }
  pat_spec spec;
  char err[4096];
  if (pat_spec_load(a.spec ? a.spec : DEFAULT_SPEC, &spec, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (a.tuning) {  /* a preview: applied whatever GPU it was measured on */
    pat_tuning t;
    if (pat_tuning_load(a.tuning, &t, err, sizeof err) || pat_tuning_apply(&t, &spec, err, sizeof err)) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    printf("tuning table %s (measured on %s): %d tile choices\n", a.tuning, t.gpu, t.num_choices);
  }
  if (pat_spec_keep_arch(&spec, a.arch, err, sizeof err) < 0) {  /* as a context on that GPU */
    fprintf(stderr, "patgen plan: %s\n", err);
    return 1;
  }
  pat_workload w;
  if (pat_tree_parse(a.tree, spec.page_size, a.ordered ? 0 : 42, &w, err, sizeof err)) {
    fprintf(stderr, "patgen plan: %s\n", err);
    return 2;
  }
  int gqa = a.q_heads / a.kv_heads, rc = 0;
  pat_batch b = pat_workload_batch(&w, gqa);
  for (int mode = 0; mode < 2; mode++) {
    pat_sched_opts o = {.spec = &spec, .num_sms = a.num_sms, .kv_heads = a.kv_heads,
                        .mode = (pat_sched_mode)mode};
    pat_host_plan p;
    if (pat_sched_build(&b, &o, &p, err, sizeof err)) {
      fprintf(stderr, "patgen plan: %s\n", err);
      rc = 1;
      break;
    }
    int max_splits = 0;
    for (int i = 0; i < p.num_merges; i++)
      if (p.merges[i].num_splits > max_splits) max_splits = p.merges[i].num_splits;
    printf("%s plan of %s (%d queries, %d/%d heads, %d SMs): %d packs, %d CTAs, %d merges "
           "(max %d splits), KV read %lld tokens = %.3fx unique\n",
           pat_sched_mode_name((pat_sched_mode)mode), a.tree, w.num_queries, a.q_heads,
           a.kv_heads, a.num_sms, p.num_packs, p.num_packs * a.kv_heads, p.num_merges,
           max_splits ? max_splits : 1, (long long)p.kv_tokens_read,
           (double)p.kv_tokens_read / (double)p.kv_tokens_unique);
    for (int g = 0; g < p.num_groups; g++) {
      const pat_tile *t = &spec.tiles[p.groups[g].tile];
      long long tokens = 0, queries = 0;
      int masked = 0;
      for (int i = 0; i < p.groups[g].num_packs; i++) {
        tokens += p.packs[p.groups[g].pack_begin + i].kv_len;
        queries += p.packs[p.groups[g].pack_begin + i].num_queries;
        masked += p.packs[p.groups[g].pack_begin + i].masked;
      }
      char label[48], note[48] = "";
      pat_tile_label(t, label, sizeof label);
      if (masked) snprintf(note, sizeof note, " (%d masked)", masked);
      printf("  tile %s: %6d packs, %8.1f queries/pack, %8.1f tokens/pack%s\n", label, p.groups[g].num_packs,
             (double)queries / p.groups[g].num_packs, (double)tokens / p.groups[g].num_packs, note);
    }
    pat_host_plan_free(&p);
  }
  pat_workload_free(&w);
  return rc;
}
