/* harness.h: runs a workload through libpat on the GPU with random inputs: checks the output
** against the CPU reference, times it, and measures the copy bandwidth for the floor. Used by
** the GPU tests, `patgen run` and the benchmark. */
#ifndef PAT_HARNESS_H
#define PAT_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "pat.h"
#include "tree.h"

typedef struct harness harness;  /* device buffers for one workload and head shape */

typedef struct harness_result {
  double median_us, min_us;   /* pat_forward, CUDA events, L2 flushed before each run */
  double rel_err;             /* ||out - ref|| / ||ref|| over the checked queries */
  double max_abs_err;
  long long nonfinite;        /* outputs still poisoned (NaN) or inf: must be 0 */
  int checked_queries;
  pat_plan_info info;
  double plan_us;             /* pat_plan_create host time (median of the plans built) */
} harness_result;

/* Uploads random q and KV caches (fresh, seeded) for workload w with the given heads into
** ctx's device. Returns NULL with a message in err on failure. */
harness *harness_create(pat_context *ctx, const pat_workload *w, int q_heads, int kv_heads,
                        uint64_t seed, char *err, size_t errlen);
void harness_destroy(harness *h);

/* Like harness_create, with fresh q but share's flush buffer and, when w is share's workload
** with the same kv_heads, share's K and V caches: several head shapes of a large workload then
** fit the device together. share (NULL: harness_create), and the harnesses whose buffers it
** borrows, must outlive the harness made. */
harness *harness_create_sharing(pat_context *ctx, const pat_workload *w, int q_heads, int kv_heads, uint64_t seed,
                                const harness *share, char *err, size_t errlen);

/* Like harness_create, for any workload of at most max_queries queries and max_pages pages
** of the spec's page size: set one with harness_set_workload before checking. */
harness *harness_create_sized(pat_context *ctx, int32_t max_queries, int32_t max_pages, int q_heads,
                              int kv_heads, uint64_t seed, char *err, size_t errlen);

/* Makes w (kept by pointer, not owned) the workload that harness_check and harness_run use;
** the inputs stay as they are. Returns 0, or -1 with a message when w does not fit. */
int harness_set_workload(harness *h, const pat_workload *w, char *err, size_t errlen);

/* The device tensors (q, caches, out; default strides and scale) for running pat_forward
** outside the harness. */
void harness_tensors(const harness *h, pat_tensors *t);

/* Fills out with NaN (0xffff) and waits for it. Returns 0, or -1 with a message. */
int harness_poison(harness *h, char *err, size_t errlen);

/* Waits for the device, downloads out and checks the workload's queries (an evenly spread
** sample of max_check, 0 = all) against the CPU reference: fills rel_err, max_abs_err,
** nonfinite and checked_queries of r. Returns 0, or -1 with a message. */
int harness_check(harness *h, int max_check, harness_result *r, char *err, size_t errlen);

/* Host side only, for tests without a GPU: the same random inputs as harness_create (for the
** given head_dim and dtype), and host output rows [num_queries][q_heads][head_dim] to fill. */
harness *harness_create_host(const pat_workload *w, int q_heads, int kv_heads, int head_dim, int bf16,
                             uint64_t seed, char *err, size_t errlen);
uint16_t *harness_host_out(harness *h);

/* Rounds f to the harness's dtype into *dst. */
void harness_store(const harness *h, float f, uint16_t *dst);

/* The fp32 reference of query qi, all heads: out[q_heads][head_dim] (fp64 accumulation). */
void harness_reference(const harness *h, int qi, float *out);

/* harness_check on the host output as it is (no download). */
int harness_check_host(harness *h, int max_check, harness_result *r, char *err, size_t errlen);

/* Plans w in `mode`, poisons out with NaN, runs pat_forward once and checks every query
** (or an evenly spread sample of max_check queries, 0 = all) against the CPU reference;
** then, when iters > 0, times iters runs after a warm-up and poisons, runs and checks once
** more (r keeps the worse check). Returns 0, or -1 with a message. */
int harness_run(harness *h, pat_mode mode, int max_check, int iters, harness_result *r,
                char *err, size_t errlen);

/* Whether harness_run times 9 plan rebuilds after the timed runs (default on); off, plan_us
** is the one build's time. The tuner turns it off: it runs thousands of configurations. */
void harness_time_plans(harness *h, int on);

/* Device-to-device copy bandwidth in bytes/s (read + written) over a 1 GiB buffer; 0 with a
** message in err when a copy could not be made or timed. */
double harness_copy_bandwidth(pat_context *ctx, char *err, size_t errlen);

/* How long a plain device-to-device copy takes against the bytes it moves (read + written),
** cold in L2: the floor's 1 GiB rate is not reached by a transfer of a small tree's size. */
enum { HARNESS_RAMP_SIZES = 11 };
typedef struct harness_copy_ramp {
  int n;                                /* sizes measured */
  double bytes[HARNESS_RAMP_SIZES];     /* read + written: 1 MiB, 2 MiB, ... 1 GiB */
  double us[HARNESS_RAMP_SIZES];        /* median time of each */
} harness_copy_ramp;

/* Times copies that move 1 MiB to 1 GiB (read + written, doubling), each run from a slice of
** a 1 GiB pool that the run before did not read, median of 20 runs after 3 warm-ups. Returns
** 0, or -1 with a message. */
int harness_measure_copy_ramp(pat_context *ctx, harness_copy_ramp *r, char *err, size_t errlen);

/* A copy's time for `bytes` (read + written) by r: log-log interpolation between its sizes;
** below the smallest, the smallest's time (a transfer's fixed cost dominates there); past the
** largest, at the largest's rate. */
double harness_copy_ramp_us(const harness_copy_ramp *r, double bytes);

/* Unique bytes the workload must move: unique KV tokens x kv heads x head_dim x 2 (K, V) x
** element size, plus q and out. */
double harness_floor_bytes(const harness *h);

#endif
