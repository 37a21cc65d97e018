/* patbench: pat on the paper's workloads: for each tree x head configuration, prefix-aware
** and direct (one query per CTA) latency, checked against the CPU reference, against the
** bandwidth floor measured in the same run. Beside the floor, what a plain copy moving the
** same bytes takes (or the FLOP floor, where larger), read from copies of 1 MiB - 1 GiB timed
** in the same run: a small tree's bytes do not reach the 1 GiB copy's rate. JSON lines to
** --out, a table last. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "pat.h"
#include "spec.h"
#include "tree.h"

static const int HEADS[][2] = {{32, 32}, {16, 8}, {32, 8}, {64, 8}};

typedef struct row {
  const char *tree;
  int qh, kvh, sharing;
  double floor_us, copy_ref_us, prefix_us, direct_us, read_ratio;  /* copy_ref: max(same-bytes copy, FLOP floor) */
  int ok;
} row;

static void usage(void)
{
  fprintf(stderr,
    "usage: patbench [--spec SPEC] [--trees T1;T2...] [--heads 32/8,64/8] [--iters N]\n"
    "                [--check N] [--out FILE.jsonl] [--mma-tflops R]\n"
    "  defaults: specs/default.yaml, the paper's 20 trees, heads 32/32,16/8,32/8,64/8, 100 iters,\n"
    "  16 checked queries per run, JSON lines to stdout only when --out is not given\n");
}

int main(int argc, char **argv)
{
  const char *spec_path = "specs/default.yaml", *out_path = NULL;
  const char *trees[64];
  int ntrees = 0, heads[16][2], nheads = 0, iters = 100, check = 16;
  double mma_tflops = 745; /* fp16 dense matmul rate measured on these GPUs (shared/PAT.md) */
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) { usage(); return 2; }
    if (!strcmp(argv[i], "--spec")) spec_path = argv[++i];
    else if (!strcmp(argv[i], "--out")) out_path = argv[++i];
    else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--check")) check = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--mma-tflops")) mma_tflops = atof(argv[++i]);
    else if (!strcmp(argv[i], "--trees")) {
      char *s = strdup(argv[++i]);
      for (char *t = strtok(s, ";"); t && ntrees < 64; t = strtok(NULL, ";")) trees[ntrees++] = t;
    } else if (!strcmp(argv[i], "--heads")) {
      char *s = strdup(argv[++i]);
      for (char *t = strtok(s, ","); t && nheads < 16; t = strtok(NULL, ","))
        if (sscanf(t, "%d/%d", &heads[nheads][0], &heads[nheads][1]) == 2) nheads++;
    } else { usage(); return 2; }
  }
  if (!ntrees) for (int i = 0; i < PAT_NUM_PAPER_TREES; i++) trees[ntrees++] = pat_paper_trees[i];
  if (!nheads) for (int i = 0; i < 4; i++) { heads[i][0] = HEADS[i][0]; heads[i][1] = HEADS[i][1]; nheads++; }

  char err[8192];
  pat_spec spec;
  if (pat_spec_load(spec_path, &spec, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
  pat_context_desc d = {.spec_path = spec_path, .progress = 1};
  pat_context *ctx = NULL;
  pat_status st = pat_context_create(&d, &ctx, err, sizeof err);
  if (st) { fprintf(stderr, "pat_context_create: %s: %s\n", pat_status_string(st), err); return 1; }
  char gpu[128];
  pat_context_device(ctx, NULL, NULL, gpu, sizeof gpu);
  FILE *out = out_path ? fopen(out_path, "w") : stdout;
  if (!out) { perror(out_path); return 1; }
  double bw = harness_copy_bandwidth(ctx, err, sizeof err);
  if (bw <= 0) {
    fprintf(stderr, "copy bandwidth: %s\n", err);
    return 1;
  }
  harness_copy_ramp ramp;
  if (harness_measure_copy_ramp(ctx, &ramp, err, sizeof err)) {
    fprintf(stderr, "copy ramp: %s\n", err);
    return 1;
  }
  fprintf(stderr, "copies (MiB read + written: us):");
  for (int i = 0; i < ramp.n; i++) fprintf(stderr, " %.0f: %.1f", ramp.bytes[i] / (1 << 20), ramp.us[i]);
  fprintf(stderr, "\n");
  time_t now = time(NULL);
  char date[32];
  strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
  fprintf(stderr, "%s: copy bandwidth %.2f TB/s; spec %s; %d trees x %d head configs\ntuning: %s\n", gpu,
          bw / 1e12, spec_path, ntrees, nheads, pat_context_tuning(ctx));

  row *rows = calloc((size_t)ntrees * nheads, sizeof *rows);
  if (!rows) { fprintf(stderr, "patbench: out of memory\n"); return 1; }
  int nrows = 0, failures = 0;
  for (int ti = 0; ti < ntrees; ti++) {
    pat_workload w;
    if (pat_tree_parse(trees[ti], spec.page_size, 1000 + ti, &w, err, sizeof err)) {
      fprintf(stderr, "patbench: %s\n", err);  /* the message names the tree */
      failures++;
      continue;
    }
    int sharing = strchr(trees[ti], ',') != NULL && strchr(trees[ti], ',') < strchr(trees[ti], '_');
    for (int hi = 0; hi < nheads; hi++) {
      int qh = heads[hi][0], kvh = heads[hi][1];
      harness *h = harness_create(ctx, &w, qh, kvh, 77 + ti * 8 + hi, err, sizeof err);
      if (!h) { fprintf(stderr, "%s %d/%d: %s\n", trees[ti], qh, kvh, err); failures++; continue; }
      row *r = &rows[nrows++];
      *r = (row){.tree = trees[ti], .qh = qh, .kvh = kvh, .sharing = sharing, .ok = 1};
      double bytes = harness_floor_bytes(h);
      long long tokens_read = 0; /* per query: its whole sequence */
      for (int q = 0; q < w.num_queries; q++) tokens_read += w.seq_lens[q];
      double flops = 4.0 * qh * spec.head_dim * (double)tokens_read;
      double bw_floor = bytes / bw * 1e6, flop_floor = flops / (mma_tflops * 1e12) * 1e6;
      r->floor_us = bw_floor > flop_floor ? bw_floor : flop_floor;
      const double copy_us = harness_copy_ramp_us(&ramp, bytes);
      r->copy_ref_us = copy_us > flop_floor ? copy_us : flop_floor;
      for (int mode = 0; mode < 2; mode++) {
        harness_result res;
        if (harness_run(h, (pat_mode)mode, check, iters, &res, err, sizeof err)) {
          fprintf(stderr, "%s %d/%d %s: %s\n", trees[ti], qh, kvh, mode ? "direct" : "prefix", err);
          r->ok = 0;
          failures++;
          continue;
        }
        int ok = res.nonfinite == 0 && res.rel_err < 5e-3;
        if (!ok) { r->ok = 0; failures++; }
        double ratio = (double)res.info.kv_tokens_read / (double)res.info.kv_tokens_unique;
        if (mode == 0) { r->prefix_us = res.median_us; r->read_ratio = ratio; }
        else r->direct_us = res.median_us;
        fprintf(out,
                "{\"gpu\":\"%s\",\"date\":\"%s\",\"spec\":\"%s\",\"tree\":\"%s\",\"q_heads\":%d,"
                "\"kv_heads\":%d,\"method\":\"pat_%s\",\"median_us\":%.2f,\"min_us\":%.2f,"
                "\"floor_us\":%.2f,\"bw_floor_us\":%.2f,\"flop_floor_us\":%.2f,\"x_floor\":%.3f,"
                "\"copy_tbps\":%.3f,\"copy_same_us\":%.2f,\"x_copy_same\":%.3f,\"plan_us\":%.1f,"
                "\"packs\":%d,\"ctas\":%d,\"launches\":%d,\"merges\":%d,\"kv_read_over_unique\":%.3f,"
                "\"rel_err\":%.3e,\"ok\":%s}\n",
                gpu, date, spec_path, trees[ti], qh, kvh, mode ? "direct" : "prefix", res.median_us,
                res.min_us, r->floor_us, bw_floor, flop_floor, res.median_us / r->floor_us, bw / 1e12,
                copy_us, res.median_us / r->copy_ref_us, res.plan_us, res.info.num_packs, res.info.num_ctas,
                res.info.num_launches, res.info.num_merges, ratio, res.rel_err, ok ? "true" : "false");
        fflush(out);
      }
      fprintf(stderr, "%-46s %2d/%-2d floor %8.1f us  prefix %8.1f (%5.2fx)  direct %8.1f (%5.2fx)%s\n",
              trees[ti], qh, kvh, r->floor_us, r->prefix_us, r->prefix_us / r->floor_us, r->direct_us,
              r->direct_us / r->floor_us, r->ok ? "" : "  WRONG");
      harness_destroy(h);
    }
    pat_workload_free(&w);
  }

  /* Summary: geometric means over sharing trees; worst cases. */
  double lp = 0, ld = 0, lsp = 0, lc = 0;
  int n = 0, nn = 0;
  double worst = 0;
  const row *worst_row = NULL;
  printf("\n%s, %s, copy %.2f TB/s\ntuning: %s\n%-46s %6s %9s %9s %7s %9s %7s %6s\n", gpu, spec_path, bw / 1e12,
         pat_context_tuning(ctx), "tree", "heads", "floor_us", "prefix", "x", "direct", "x", "read");
  for (int i = 0; i < nrows; i++) {
    const row *r = &rows[i];
    printf("%-46s %2d/%-3d %9.1f %9.1f %7.2f %9.1f %7.2f %6.2f%s\n", r->tree, r->qh, r->kvh,
           r->floor_us, r->prefix_us, r->prefix_us / r->floor_us, r->direct_us,
           r->direct_us / r->floor_us, r->read_ratio, r->ok ? "" : " WRONG");
    if (r->sharing) {
      lp += log(r->prefix_us / r->floor_us);
      lc += log(r->prefix_us / r->copy_ref_us);
      ld += log(r->direct_us / r->floor_us);
      lsp += log(r->direct_us / r->prefix_us);
      n++;
      if (r->prefix_us / r->floor_us > worst) { worst = r->prefix_us / r->floor_us; worst_row = r; }
    } else {
      nn++;
    }
  }
  if (n)
    printf("sharing trees (%d cases): prefix %.2fx floor (geomean), direct %.2fx; prefix is %.2fx "
           "faster than direct; worst %.2fx (%s %d/%d)\n", n, exp(lp / n), exp(ld / n), exp(lsp / n),
           worst, worst_row->tree, worst_row->qh, worst_row->kvh);
  if (n)
    printf("sharing trees against a plain copy of the same bytes (or the FLOP floor, where larger): "
           "prefix %.2fx (geomean)\n", exp(lc / n));
  if (nn)
    for (int i = 0; i < nrows; i++)
      if (!rows[i].sharing)
        printf("no sharing %s %d/%d: prefix %.0f%% of copy bandwidth, direct %.0f%%\n", rows[i].tree,
               rows[i].qh, rows[i].kvh, 100 * rows[i].floor_us / rows[i].prefix_us,
               100 * rows[i].floor_us / rows[i].direct_us);
  printf("%d failures\n", failures);
  if (out != stdout) fclose(out);
  free(rows);
  pat_context_destroy(ctx);
  return failures ? 1 : 0;
}
