/* tree.h: synthetic decode workloads as paged KV block tables: the PAT paper's tree format
** ("1,8,512_32,512,256") and seeded random trees for tests. Host only, deterministic. */
#ifndef PAT_TREE_H
#define PAT_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "sched.h"

/* The PAT paper's 20 benchmark trees (shared/workloads/paper-trees.txt), in its order. */
#define PAT_NUM_PAPER_TREES 20
extern const char *const pat_paper_trees[PAT_NUM_PAPER_TREES];

/* A batch with its own arrays (free with pat_workload_free). */
typedef struct pat_workload {
  int32_t num_queries;
  int32_t stride;         /* block table row length in pages (longest row) */
  int32_t num_pages;      /* pages in the KV cache; ids 0 .. num_pages - 1 */
  int32_t page_size;
  int32_t *seq_lens;      /* [num_queries] */
  int32_t *block_table;   /* [num_queries][stride]; entries past a row's pages are -1 */
  int64_t unique_tokens;  /* distinct (page, offset) tokens attended to */
} pat_workload;

/* Limits of pat_tree_random. Zero fields take the defaults in brackets. */
typedef struct pat_random_tree_opts {
  int max_depth;        /* levels, depth drawn in 1 .. max_depth [6] */
  int max_fanout;       /* children per inner node, drawn in 1 .. max_fanout [64] */
  int max_queries;      /* cap on leaves (queries) [256] */
  int max_pages;        /* cap on pages used (soft: a started leaf completes) [4096] */
  int max_node_pages;   /* full pages of an inner node, drawn in 1 .. this [8] */
  int max_leaf_tokens;  /* leaf length in tokens, drawn in 1 .. this [4 x page_size] */
  int spare_pages;      /* unused pages added to the cache (ids shuffled in) [16] */
} pat_random_tree_opts;

/* Parses a tree "C0,C1,..,Ck_L0,L1,..,Lk" (nodes per level _ tokens per node per level; each
** node of level l has C(l+1)/C(l) children) and builds its batch: every node gets its own
** pages, page ids shuffled by `seed` (seed 0: pages in tree order, no shuffle), one block
** table row per leaf. Inner-level lengths must
** be multiples of page_size; the leaf level may be ragged. Returns 0, or -1 with a message
** in err and *w zeroed. Reentrant. */
int pat_tree_parse(const char *text, int page_size, uint64_t seed, pat_workload *w,
                   char *err, size_t errlen);

/* Builds a random tree: random depth and fan-out per node, inner nodes of whole pages,
** ragged leaves, queries that end at inner nodes, shuffled page ids. opts may be NULL
** (defaults). Same seed and options, same workload. Returns 0, or -1 with a message. */
int pat_tree_random(uint64_t seed, const pat_random_tree_opts *opts, int page_size,
                    pat_workload *w, char *err, size_t errlen);

/* A pat_batch viewing w's arrays (valid while w lives) for a GQA ratio. */
pat_batch pat_workload_batch(const pat_workload *w, int gqa);

/* Frees the arrays of w and zeroes it; NULL or a zeroed workload is fine. */
void pat_workload_free(pat_workload *w);

#endif
