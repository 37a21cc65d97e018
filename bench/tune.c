/* tune.c: bin/pattune, the tuning script. Sweeps the split policy, the planner's tensor-core
** weight (split.mma_rows_per_token), masked packs on or off and, per GQA ratio, row class and
** token class, the tile (from the spec's tiles plus a candidate spec's), then masked packs'
** own tile, over a set of workloads on the GPU, and writes the winners as a tuning table
** beside the spec, which pat_context_create then applies on the same GPU (gen/tuning.h; docs
** in specs/README.md).
**
** A configuration is scored by the geometric mean of its median latencies over the workloads;
** every run's output is checked against the CPU reference first, and a configuration with a
** wrong result is never chosen. Data seeds are fixed; the table records GPU, date and seed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "internal.h"
#include "sched.h"
#include "tile.h"
#include "tree.h"
#include "tuning.h"

enum { MAX_TREES = 32, ITERS_DEFAULT = 20 };

typedef struct tuner {
  pat_context *ctx;
  int iters, check;
  int ntrees;
  const char *trees[MAX_TREES];
  pat_workload work[MAX_TREES];
  harness *h[PAT_MAX_GQA][MAX_TREES];  /* one per (GQA ratio, tree) */
  long runs;
} tuner;

static void usage(void)
{
  fprintf(stderr,
    "usage: pattune [--spec SPEC] [--candidates SPEC2] [--trees T1;T2...] [--iters N] [--seed S]\n"
    "               [--out FILE]\n"
    "  sweeps split policies, the planner's mma weight and tile choices for SPEC (default\n"
    "  specs/default.yaml) with the tiles of SPEC and SPEC2 (default specs/paper.yaml) on the\n"
    "  paper's 20 trees, and writes the tuning table for this GPU (default: SPEC's name with\n"
    "  .tune.GPU.yaml, e.g. specs/default.tune.h100-80gb-hbm3.yaml, which contexts on this GPU\n"
    "  model read before SPEC's .tune.yaml)\n");
}

/* Heads of the paper's configurations for a GQA ratio: 32/32, 16/8, 32/8, 64/8; else 8g/8. */
static void heads_for(int g, int *qh, int *kvh)
{
  *kvh = g == 1 ? 32 : 8;
  *qh = g * *kvh;
}

/* Geometric mean of the median latency over the trees at GQA index gi (those with use[i]
** set; all when use is NULL) under ctx's current spec; +inf when any run fails or is wrong. */
static double score_of(tuner *t, int gi, const char *use)
{
  double lsum = 0;
  int n = 0;
  for (int i = 0; i < t->ntrees; i++) {
    if (use && !use[i]) continue;
    harness_result r;
    char err[4096];
    if (harness_run(t->h[gi][i], PAT_MODE_PREFIX, t->check, t->iters, &r, err, sizeof err)) {
      fprintf(stderr, "pattune: %s: %s\n", t->trees[i], err);
      return INFINITY;
    }
    t->runs++;
    if (r.nonfinite || !(r.rel_err < 5e-3)) {
      fprintf(stderr, "pattune: %s: wrong result (rel_err %.2e): configuration refused\n", t->trees[i], r.rel_err);
      return INFINITY;
    }
    lsum += log(r.median_us);
    n++;
  }
  return n ? exp(lsum / n) : INFINITY;
}

static double score(tuner *t, int gi) { return score_of(t, gi, NULL); }

/* Packs per (masked or not, row class, token class) in tree i's prefix plan at GQA index gi.
** Tile choices do not change packs or splits, so this holds for every candidate of the tile
** sweep. */
static int class_counts(tuner *t, int gi, int i, int counts[2][PAT_ROW_CLASSES][PAT_TOKEN_CLASSES])
{
  const pat_spec *s = &t->ctx->spec;
  const pat_workload *w = &t->work[i];
  int qh, kvh;
  heads_for(s->gqa[gi], &qh, &kvh);
  pat_batch b = {.num_queries = w->num_queries, .seq_lens = w->seq_lens, .block_table = w->block_table,
                 .block_table_stride = w->stride, .num_pages_total = w->num_pages,
                 .page_size = w->page_size, .gqa = s->gqa[gi]};
  pat_sched_opts o = {.spec = s, .num_sms = t->ctx->num_sms, .kv_heads = kvh, .mode = PAT_SCHED_PREFIX};
  pat_host_plan p;
  char err[512];
  if (pat_sched_build(&b, &o, &p, err, sizeof err)) {
    fprintf(stderr, "pattune: %s: %s\n", t->trees[i], err);
    return -1;
  }
  memset(counts, 0, sizeof(int) * 2 * PAT_ROW_CLASSES * PAT_TOKEN_CLASSES);
  for (int k = 0; k < p.num_packs; k++) {
    int rc = pat_row_class(p.packs[k].num_queries * s->gqa[gi]);
    if (rc >= 0) counts[p.packs[k].masked != 0][rc][pat_token_class(p.packs[k].kv_len)]++;
  }
  pat_host_plan_free(&p);
  return 0;
}

static double score_all(tuner *t)
{
  double l = 0;
  const pat_spec *s = &t->ctx->spec;
  for (int gi = 0; gi < s->num_gqa; gi++) l += log(score(t, gi));
  return exp(l / s->num_gqa);
}

/* The spec's tiles plus the candidate spec's that are valid for it (at most PAT_MAX_TILES). */
/* What the table's header says: the run, its scores, and how far it got. */
typedef struct run_info {
  const char *spec_path, *cand_path, *gpu;
  char date[32];
  unsigned long long seed;
  double before, after_split;
  char summary[4096];
  size_t so;
} run_info;

/* Writes the table (temp file + rename: a reader never sees half a table). `done` says
** where the sweep stands; an interrupted run leaves the classes it finished. */
static int write_table(const char *path, const pat_tuning *tab, const run_info *ri, const tuner *t,
                       const char *done)
{
  char comment[8192], tmp[PAT_PATH_MAX + 32];
  snprintf(comment, sizeof comment,
           "Tuning table for %s, written by bin/pattune on %s, %s.\n"
           "Candidates: %s; seed %llu; %d iters per run; %d trees (the paper's sharing trees unless --trees).\n"
           "Geomean latency, spec as written: %.1f us; after the split sweep: %.1f us.\n%s%s\n"
           "Applied by pat_context_create on this GPU only; PAT_TUNING=off ignores it.",
           ri->spec_path, ri->gpu, ri->date, ri->cand_path, ri->seed, t->iters, t->ntrees, ri->before,
           ri->after_split, ri->summary, done);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f || pat_tuning_write(f, tab, comment) || fclose(f) || rename(tmp, path)) {
    perror(path);
    return -1;
  }
  return 0;
}

static void add_candidates(pat_spec *s, const pat_spec *cand)
{
  s->num_model_tiles = s->num_tiles;
  for (int i = 0; i < cand->num_tiles && s->num_tiles < PAT_MAX_TILES; i++) {
    const pat_tile *c = &cand->tiles[i];
    int dup = 0;
    for (int k = 0; k < s->num_tiles; k++) dup |= pat_tile_same(&s->tiles[k], c);
    char err[256];
    if (!dup && !pat_tile_check(s, c, err, sizeof err)) s->tiles[s->num_tiles++] = *c;
  }
}

int main(int argc, char **argv)
{
  const char *spec_path = "specs/default.yaml", *cand_path = "specs/paper.yaml", *out_path = NULL;
  tuner t = {.iters = ITERS_DEFAULT, .check = 1};
  unsigned long long seed = 1;
  char *tree_arg = NULL;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) { usage(); return 2; }
    if (!strcmp(argv[i], "--spec")) spec_path = argv[++i];
    else if (!strcmp(argv[i], "--candidates")) cand_path = argv[++i];
    else if (!strcmp(argv[i], "--out")) out_path = argv[++i];
    else if (!strcmp(argv[i], "--iters")) t.iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--trees")) tree_arg = argv[++i];
    else { usage(); return 2; }
  }
  if (t.iters < 1) { fprintf(stderr, "pattune: --iters must be positive\n"); return 2; }
  if (tree_arg) {
    for (char *s = strtok(tree_arg, ";"); s && t.ntrees < MAX_TREES; s = strtok(NULL, ";")) t.trees[t.ntrees++] = s;
  } else {
    for (int i = 0; i < PAT_NUM_PAPER_TREES && t.ntrees < MAX_TREES; i++) t.trees[t.ntrees++] = pat_paper_trees[i];
  }

  char err[8192], path[PAT_PATH_MAX + 16];
  pat_spec spec, cand;
  if (pat_spec_load(spec_path, &spec, err, sizeof err) || pat_spec_load(cand_path, &cand, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (cand.dtype != spec.dtype || cand.head_dim != spec.head_dim || cand.page_size != spec.page_size) {
    fprintf(stderr, "pattune: %s and %s differ in dtype, head_dim or page_size\n", spec_path, cand_path);
    return 1;
  }
  const pat_spec base = spec;
  add_candidates(&spec, &cand);

  pat_context_desc d = {.spec_path = spec_path, .progress = 1};
  pat_status st = pat_context_create_spec(&d, &spec, &t.ctx, err, sizeof err);
  if (st) { fprintf(stderr, "pattune: %s: %s\n", pat_status_string(st), err); return 1; }
  pat_spec *live = &t.ctx->spec;  /* what plans are built from: changed between runs */
  char gpu[128];
  pat_context_device(t.ctx, NULL, NULL, gpu, sizeof gpu);
  if (!out_path) { pat_tuning_path(spec_path, gpu, path, sizeof path); out_path = path; }
  fprintf(stderr, "pattune: %s, spec %s + %d candidate tiles, %d trees, %d iters, seed %llu\n", gpu, spec_path,
          spec.num_tiles - base.num_tiles, t.ntrees, t.iters, seed);

  for (int i = 0; i < t.ntrees; i++) {
    if (pat_tree_parse(t.trees[i], spec.page_size, seed * 1000 + (unsigned)i + 1, &t.work[i], err, sizeof err)) {
      fprintf(stderr, "pattune: %s\n", err);  /* the message names the tree */
      return 1;
    }
    for (int gi = 0; gi < spec.num_gqa; gi++) {
      int qh, kvh;
      heads_for(spec.gqa[gi], &qh, &kvh);
      /* One flush buffer for all, and one K/V cache per tree and kv head count: the paper's
      ** trees at four head shapes are ~70 GB of caches otherwise, more than an H100 holds. */
      const harness *share = i || gi ? t.h[0][0] : NULL;
      for (int gj = 0; gj < gi; gj++) {
        int qj, kvj;
        heads_for(spec.gqa[gj], &qj, &kvj);
        if (kvj == kvh) { share = t.h[gj][i]; break; }
      }
      t.h[gi][i] = harness_create_sharing(t.ctx, &t.work[i], qh, kvh, seed * 7919 + (unsigned)(i * 16 + gi), share,
                                          err, sizeof err);
      if (!t.h[gi][i]) {
        fprintf(stderr, "pattune: %s %d/%d: %s (--trees and a spec of fewer gqa ratios tune on less)\n", t.trees[i],
                qh, kvh, err);
        return 1;
      }
      harness_time_plans(t.h[gi][i], 0);
    }
  }

  /* 1. Split policy, over every GQA ratio together (the table holds one). */
  static const int min_kv[] = {128, 256, 512}, per_sm[] = {1, 2, 4};
  pat_split_policy best_split = base.split;
  double before = score_all(&t), best = before;
  fprintf(stderr, "pattune: spec as written: %.1f us (geomean)\n", before);
  for (size_t a = 0; a < sizeof min_kv / sizeof *min_kv; a++) {
    for (size_t b = 0; b < sizeof per_sm / sizeof *per_sm; b++) {
      live->split = base.split;
      live->split.min_kv_per_split = min_kv[a];
      live->split.ctas_per_sm = per_sm[b];
      if (live->split.min_kv_per_split == base.split.min_kv_per_split && live->split.ctas_per_sm == base.split.ctas_per_sm)
        continue;
      double sc = score_all(&t);
      fprintf(stderr, "pattune: split %4d tokens, %d CTAs/SM: %.1f us\n", min_kv[a], per_sm[b], sc);
      if (sc < best * 0.99) { best = sc; best_split = live->split; }
    }
  }
  live->split = best_split;

  /* 1b. The planner's tensor-core weight (rows of mma work worth one KV token read). It
  ** changes packs and tiles, so it is settled before the tile classes are counted. */
  static const int mma_rows[] = {32, 64, 128, 256};
  for (size_t a = 0; a < sizeof mma_rows / sizeof *mma_rows; a++) {
    if (mma_rows[a] == best_split.mma_rows_per_token) continue;
    live->split = best_split;
    live->split.mma_rows_per_token = mma_rows[a];
    double sc = score_all(&t);
    fprintf(stderr, "pattune: mma weight 1/%d: %.1f us\n", mma_rows[a], sc);
    if (sc < best * 0.99) { best = sc; best_split = live->split; }
  }
  live->split = best_split;

  /* 1c. Masked packs (whole subtrees in one pack) on or off. */
  live->split.masked_packs = !best_split.masked_packs;
  {
    double sc = score_all(&t);
    fprintf(stderr, "pattune: masked packs %s: %.1f us\n", live->split.masked_packs ? "on" : "off", sc);
    if (sc < best * 0.99) { best = sc; best_split = live->split; }
  }
  live->split = best_split;

  /* 2. Per GQA ratio, row class and token class: the tile, one class at a time (greedy, kept
  ** when >= 1% better on the trees that have packs of the class); then, where the class has
  ** masked packs, their own tile (an mma.sync one; kept on the same rule against the class's).
  ** The table is rewritten after every class, so an interrupted run keeps what it measured. */
  pat_tuning tab = {.has_split = 1, .split = best_split};
  snprintf(tab.spec, sizeof tab.spec, "%s", base.name);
  snprintf(tab.gpu, sizeof tab.gpu, "%s", gpu);
  run_info ri = {.spec_path = spec_path, .cand_path = cand_path, .gpu = gpu, .seed = seed, .before = before,
                 .after_split = best};
  time_t now = time(NULL);
  strftime(ri.date, sizeof ri.date, "%Y-%m-%d", gmtime(&now));
  char done[128];
  if (write_table(out_path, &tab, &ri, &t, "Partial: split policy and mma weight only, no tile class swept yet.")) return 1;
  static const int token_bound[PAT_TOKEN_CLASSES] = {64, 256, 1024, 65536};
  for (int gi = 0; gi < spec.num_gqa; gi++) {
    const int g = spec.gqa[gi];
    int counts[MAX_TREES][2][PAT_ROW_CLASSES][PAT_TOKEN_CLASSES];
    for (int i = 0; i < t.ntrees; i++)
      if (class_counts(&t, gi, i, counts[i])) return 1;
    double start = score(&t, gi);
    for (int rc = 0, rows = 16; rc < PAT_ROW_CLASSES; rc++, rows *= 2) {
      for (int tc = 0; tc < PAT_TOKEN_CLASSES; tc++) {
        for (int masked = 0; masked < 2; masked++) {
          /* Only the trees with packs in this class (masked ones, in the masked pass) can
          ** change: score on those. */
          char use[MAX_TREES];
          int nuse = 0;
          for (int i = 0; i < t.ntrees; i++)
            nuse += use[i] = counts[i][1][rc][tc] > 0 || (!masked && counts[i][0][rc][tc] > 0);
          if (!nuse) continue;
          unsigned char *slot = masked ? &live->masked_choice[gi][rc][tc] : &live->tile_choice[gi][rc][tc];
          double cur = score_of(&t, gi, use);
          int choice = 0;
          /* The context's tiles: those this GPU runs (pat_spec_keep_arch), in its order. */
          for (int k = 0; k < live->num_tiles; k++) {
            const pat_tile *tl = &live->tiles[k];
            if (tl->m < rows || tl->m > (rows < 32 ? 32 : 2 * rows) || (masked && tl->wgmma)) continue;
            *slot = (unsigned char)(k + 1);
            double sc = score_of(&t, gi, use);
            char label[48];
            pat_tile_label(tl, label, sizeof label);
            fprintf(stderr, "pattune: gqa %d rows <= %3d tokens <= %5d%s (%d trees): %s %.1f us (now %.1f)\n", g, rows,
                    token_bound[tc], masked ? " masked" : "", nuse, label, sc, cur);
            if (sc < cur * 0.99) { cur = sc; choice = k + 1; }
          }
          *slot = (unsigned char)choice;
          if (choice)
            tab.choices[tab.num_choices++] = (pat_tuning_choice){.gqa = g, .rows = rows, .tokens = token_bound[tc],
                                                                 .masked = masked, .tile = live->tiles[choice - 1]};
          snprintf(done, sizeof done, "Partial: swept up to gqa %d, rows <= %d, tokens <= %d%s.", g, rows,
                   token_bound[tc], masked ? " (masked)" : "");
          if (write_table(out_path, &tab, &ri, &t, done)) return 1;
        }
      }
    }
    double end = score(&t, gi);
    ri.so += (size_t)snprintf(ri.summary + ri.so, sizeof ri.summary - ri.so, "gqa %d: %.1f -> %.1f us\n", g, start, end);
    if (ri.so >= sizeof ri.summary) ri.so = sizeof ri.summary - 1;
  }
  if (write_table(out_path, &tab, &ri, &t, "Complete: every GQA ratio, row class and token class swept, masked packs apart.")) return 1;

  /* Check the table reads back and applies to the spec as written. */
  pat_tuning back;
  pat_spec applied = base;
  if (pat_tuning_load(out_path, &back, err, sizeof err) || pat_tuning_apply(&back, &applied, err, sizeof err)) {
    fprintf(stderr, "pattune: the table written does not read back: %s\n", err);
    return 1;
  }
  fprintf(stderr, "pattune: %ld timed configurations; wrote %s (%d tile choices)\n%s", t.runs, out_path,
          tab.num_choices, ri.summary);
  for (int gi = spec.num_gqa - 1; gi >= 0; gi--) /* borrowers before the harnesses they borrow from */
    for (int i = t.ntrees - 1; i >= 0; i--) harness_destroy(t.h[gi][i]);
  for (int i = 0; i < t.ntrees; i++) pat_workload_free(&t.work[i]);
  pat_context_destroy(t.ctx);
  return 0;
}
