/* harness_copy.c: the copy bandwidth the floors are measured against: the best rate of a
** 1 GiB device-to-device copy (bytes read + written), and the ramp of smaller copies (the
** time a copy of a small tree's bytes takes, for x_copy_same). */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "internal.h"

#define CK(call) PAT_CU(t->cu, call, err, errlen)

static int cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* A source pool, a destination and two events for timing device-to-device copies. */
typedef struct copy_timer {
  const pat_cuda *cu;
  CUdeviceptr src, dst;
  CUevent e0, e1;
} copy_timer;

static void copy_timer_close(copy_timer *t)
{
  if (t->src) t->cu->cuMemFree(t->src);
  if (t->dst) t->cu->cuMemFree(t->dst);
  if (t->e0) t->cu->cuEventDestroy(t->e0);
  if (t->e1) t->cu->cuEventDestroy(t->e1);
}

/* src_bytes of source (every byte set, so no page is first touched while timed) and
** dst_bytes of destination. Returns 0, or -1 with a message (t closed). */
static int copy_timer_open(copy_timer *t, pat_context *ctx, size_t src_bytes, size_t dst_bytes, char *err,
                           size_t errlen)
{
  *t = (copy_timer){.cu = ctx->cu};
  if (CK(t->cu->cuCtxSetCurrent(ctx->cuctx)) || CK(t->cu->cuMemAlloc(&t->src, src_bytes)) ||
      CK(t->cu->cuMemAlloc(&t->dst, dst_bytes)) || CK(t->cu->cuEventCreate(&t->e0, 0)) ||
      CK(t->cu->cuEventCreate(&t->e1, 0)) || CK(t->cu->cuMemsetD8(t->src, 1, src_bytes))) {
    copy_timer_close(t);
    return -1;
  }
  return 0;
}

/* One copy of `bytes` from src + offset to dst, timed with events: its time in *us. */
static int copy_timer_run(copy_timer *t, size_t offset, size_t bytes, float *us, char *err, size_t errlen)
{
  float ms = 0;
  if (CK(t->cu->cuEventRecord(t->e0, NULL)) || CK(t->cu->cuMemcpyDtoD(t->dst, t->src + offset, bytes)) ||
      CK(t->cu->cuEventRecord(t->e1, NULL)) || CK(t->cu->cuEventSynchronize(t->e1)) ||
      CK(t->cu->cuEventElapsedTime(&ms, t->e0, t->e1)))
    return -1;
  *us = ms * 1000.f;
  return 0;
}

double harness_copy_bandwidth(pat_context *ctx, char *err, size_t errlen)
{
  const size_t n = (size_t)1 << 30;
  copy_timer t;
  double best = 0;
  if (copy_timer_open(&t, ctx, n, n, err, errlen)) return 0;
  for (int i = 0; i < 12; i++) {
    float us;
    if (copy_timer_run(&t, 0, n, &us, err, errlen)) {
      best = 0;  /* a failed copy: no rate from the ones before it either */
      break;
    }
    double bw = 2.0 * (double)n / (us * 1e-6);
    if (i >= 2 && bw > best) best = bw;
  }
  copy_timer_close(&t);
  return best;
}

int harness_measure_copy_ramp(pat_context *ctx, harness_copy_ramp *r, char *err, size_t errlen)
{
  enum { WARMUP = 3, RUNS = 20 };
  const size_t pool_bytes = (size_t)1 << 30;
  copy_timer t;
  memset(r, 0, sizeof *r);
  if (copy_timer_open(&t, ctx, pool_bytes, pool_bytes / 2, err, errlen)) return -1;
  for (int i = 0; i < HARNESS_RAMP_SIZES; i++) {
    const size_t copy = ((size_t)1 << 20 << i) / 2, slices = pool_bytes / copy;
    float us[RUNS];
    for (int k = 0; k < WARMUP + RUNS; k++) {
      /* Slices in turn: the one read last run is never read again next run. */
      float u;
      if (copy_timer_run(&t, (size_t)k % slices * copy, copy, &u, err, errlen)) {
        copy_timer_close(&t);
        return -1;
      }
      if (k >= WARMUP) us[k - WARMUP] = u;
    }
    qsort(us, RUNS, sizeof *us, cmp_float);
    r->bytes[i] = 2.0 * (double)copy;
    r->us[i] = us[RUNS / 2];
    r->n = i + 1;
  }
  copy_timer_close(&t);
  return 0;
}

double harness_copy_ramp_us(const harness_copy_ramp *r, double bytes)
{
  if (r->n <= 0 || bytes <= 0) return 0;
  if (bytes <= r->bytes[0]) return r->us[0];
  for (int i = 1; i < r->n; i++)
    if (bytes <= r->bytes[i]) {
      const double f = log(bytes / r->bytes[i - 1]) / log(r->bytes[i] / r->bytes[i - 1]);
      return r->us[i - 1] * pow(r->us[i] / r->us[i - 1], f);
    }
  return r->us[r->n - 1] * bytes / r->bytes[r->n - 1];
}
