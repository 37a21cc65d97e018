/* plan_time.c: times pat_sched_build (median of 200 builds; fresh buffers, then one scratch
** kept across the builds as pat_plan_update does) on the paper's trees and on random-shaped
** batches of 64/256/1024 queries; prints microseconds and read/unique KV.
** Build: cc -std=c11 -D_GNU_SOURCE -O2 -Igen -Iruntime runtime/sched*.c runtime/tree.c \
**        gen/tuning.c gen/tile.c bench/plan_time.c -o build/plan_time */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched.h"
#include "tree.h"

#define REPS 200


static double now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void make_spec(pat_spec *s)
{
  memset(s, 0, sizeof *s);
  strcpy(s->name, "bench");
  s->head_dim = 128;
  s->page_size = 32;
  const int mn[4][3] = {{16, 32, 1}, {32, 64, 2}, {64, 64, 4}, {64, 128, 4}};
  for (int i = 0; i < 4; i++) {
    s->tiles[i].m = mn[i][0];
    s->tiles[i].n = mn[i][1];
    s->tiles[i].warps = mn[i][2];
    s->tiles[i].stages = 2;
  }
  s->num_tiles = 4;
  s->split = (pat_split_policy){256, 16, 2, 128, 1};
}

/* Median of REPS builds into *t_us: fresh buffers each time (pat_sched_build, as
** pat_plan_create) or one scratch kept across them, each plan recycled into it (as
** pat_plan_update). */
static void time_builds(const pat_batch *b, const pat_sched_opts *o, int reuse, const char *label, double *t_us,
                        pat_host_plan *last)
{
  double t[REPS];
  char err[256];
  pat_sched_scratch sc = {0};
  for (int r = 0; r < REPS; r++) {
    double t0 = now_us();
    int rc = reuse ? pat_sched_build_with(b, o, &sc, last, err, sizeof err) : pat_sched_build(b, o, last, err, sizeof err);
    if (rc) { fprintf(stderr, "%s: %s\n", label, err); exit(1); }
    t[r] = now_us() - t0;
    if (r + 1 < REPS) {
      if (reuse)
        pat_sched_scratch_recycle(&sc, last);
      else
        pat_host_plan_free(last);
    }
  }
  pat_sched_scratch_free(&sc);
  qsort(t, REPS, sizeof t[0], cmp_double);
  *t_us = t[REPS / 2];
}

static void run(const char *label, const pat_workload *w, const pat_spec *spec, int gqa, int kvh)
{
  pat_batch b = pat_workload_batch(w, gqa);
  pat_sched_opts o;
  memset(&o, 0, sizeof o);
  o.spec = spec;
  o.num_sms = 132;
  o.kv_heads = kvh;
  o.mode = PAT_SCHED_PREFIX;
  pat_host_plan p;
  double fresh, reused;
  time_builds(&b, &o, 0, label, &fresh, &p);
  pat_host_plan_free(&p);
  time_builds(&b, &o, 1, label, &reused, &p);
  printf("%-48s q=%5d gqa=%d  %8.1f us  %8.1f us reused  packs=%5d merges=%5d  read/unique=%.3f\n", label,
         w->num_queries, gqa, fresh, reused, p.num_packs, p.num_merges,
         (double)p.kv_tokens_read / (double)p.kv_tokens_unique);
  pat_host_plan_free(&p);
}

int main(void)
{
  pat_spec spec;
  make_spec(&spec);
  char err[256];
  for (int i = 0; i < PAT_NUM_PAPER_TREES; i++) {
    pat_workload w;
    if (pat_tree_parse(pat_paper_trees[i], 32, 1, &w, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    run(pat_paper_trees[i], &w, &spec, 1, 32);
    run(pat_paper_trees[i], &w, &spec, 8, 8);
    pat_workload_free(&w);
  }
  static const int sizes[] = {64, 256, 1024};
  for (int i = 0; i < 3; i++) {
    pat_random_tree_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.max_depth = 4;
    ro.max_fanout = 32;
    ro.max_queries = sizes[i];
    ro.max_pages = 1 << 20;
    ro.max_node_pages = 16;
    ro.max_leaf_tokens = 512;
    pat_workload w;
    uint64_t seed = 1;
    for (;;) {  /* a random tree that reaches the query count */
      if (pat_tree_random(seed++, &ro, 32, &w, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
      if (w.num_queries == sizes[i] || seed > 10000) break;
      pat_workload_free(&w);
    }
    char label[64];
    snprintf(label, sizeof label, "random tree, %d queries", sizes[i]);
    run(label, &w, &spec, 4, 8);
    pat_workload_free(&w);
    /* no sharing, 2048 tokens each */
    snprintf(label, sizeof label, "%d_2048", sizes[i]);
    if (pat_tree_parse(label, 32, 1, &w, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    run(label, &w, &spec, 4, 8);
    pat_workload_free(&w);
  }
  return 0;
}
