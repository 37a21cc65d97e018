/* sched.h: the pack scheduler. Turns a decode batch (block tables, sequence lengths) into a
** pack-forward-merge plan (runtime/plan.h): prefix tree, packs, KV splits, tiles, slots.
** docs/scheduler.md describes the algorithm and its cost model. Host only, no CUDA. */
#ifndef PAT_SCHED_H
#define PAT_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "../gen/spec.h"
#include "plan.h"

/* One decode step as the engine sees it. The scheduler only reads these arrays. */
typedef struct pat_batch {
  int32_t num_queries;         /* >= 1 */
  const int32_t *seq_lens;     /* [num_queries] tokens each query attends to, >= 1 */
  const int32_t *block_table;  /* row-major [num_queries][block_table_stride] page ids */
  int32_t block_table_stride;  /* entries per row: the most pages one query may use */
  int32_t num_pages_total;     /* pages in the KV cache: valid ids are 0 .. this - 1 */
  int32_t page_size;           /* tokens per page; must equal spec->page_size */
  int32_t gqa;                 /* q heads per kv head */
} pat_batch;

typedef enum pat_sched_mode {
  PAT_SCHED_PREFIX = 0,  /* packs share prefixes (the PAT schedule) */
  PAT_SCHED_DIRECT = 1   /* one query per pack, KV split by the split policy (flash-decoding) */
} pat_sched_mode;

typedef struct pat_sched_opts {
  const pat_spec *spec;  /* tiles, page size and split policy; not owned */
  int num_sms;           /* multiprocessors of the GPU (132 on H100 SXM) */
  int kv_heads;          /* CTAs = packs x kv_heads */
  pat_sched_mode mode;
} pat_sched_opts;

/* Working buffers of pat_sched_build_with, kept from one build to the next so that a plan
** rebuilt every step (pat_plan_update) reuses memory instead of taking fresh pages from the
** allocator each time; also the arrays of a plan handed back by pat_sched_scratch_recycle,
** which the next plan takes over. Zero-initialise; release with pat_sched_scratch_free. One
** scratch per thread at a time. */
enum { PAT_SCHED_SCRATCH_BUFS = 16 };
typedef struct pat_sched_scratch {
  void *buf[PAT_SCHED_SCRATCH_BUFS];
  size_t cap[PAT_SCHED_SCRATCH_BUFS];  /* bytes */
} pat_sched_scratch;

/* Frees every buffer the scratch holds and zeroes it (it can be used again). NULL: nothing. */
void pat_sched_scratch_free(pat_sched_scratch *s);

/* Hands a plan that is no longer needed to the scratch (instead of pat_host_plan_free): the
** next pat_sched_build_with on it fills its arrays where they are large enough. Leaves
** *plan zeroed. */
void pat_sched_scratch_recycle(pat_sched_scratch *s, pat_host_plan *plan);

/* Builds the plan of one batch. On success returns 0 and fills *plan (arrays owned by the
** plan: free with pat_host_plan_free). On a bad batch or options returns -1, writes a
** message naming the query (and position) at fault into err (always NUL-terminated when
** errlen > 0) and leaves *plan zeroed. Packs come grouped by tile (plan->groups), each
** query's slots are contiguous, a query with one split has slot -1 and no merge item.
** Thread-safety: reentrant; no shared state, concurrent calls on distinct plans are safe. */
int pat_sched_build(const pat_batch *b, const pat_sched_opts *o, pat_host_plan *plan,
                    char *err, size_t errlen);

/* pat_sched_build with its working buffers taken from (and left in) *scratch; the plan is
** the same. */
int pat_sched_build_with(const pat_batch *b, const pat_sched_opts *o, pat_sched_scratch *scratch,
                         pat_host_plan *plan, char *err, size_t errlen);

/* printf into err (errlen bytes, NUL-terminated; nothing when err is NULL or errlen 0): the
** message writer of the scheduler and the workload builders. */
__attribute__((format(printf, 3, 4)))
void pat_set_err(char *err, size_t errlen, const char *fmt, ...);

/* Returns the name of a mode ("prefix", "direct"); a static string. */
const char *pat_sched_mode_name(pat_sched_mode mode);

#endif
