/* harness.c: random inputs, reference check and timing of pat_forward for one workload. */
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_driver.h"
#include "internal.h"

struct harness {
  pat_context *ctx;
  const pat_cuda *cu;
  const pat_workload *w;
  int q_heads, kv_heads, head_dim, bf16;
  int32_t max_queries, max_pages, page_size;  /* what the buffers hold */
  size_t q_elems, kv_elems;
  uint16_t *hq, *hk, *hv, *hout;  /* host copies of the inputs (dtype bits) and the output */
  CUdeviceptr q, k, v, out, flush;
  size_t flush_bytes;
  int skip_plan_timing;  /* harness_time_plans(h, 0) */
  int borrows_kv, borrows_flush;  /* buffers of another harness (harness_create_sharing) */
};

static float half_to_float(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* Round to nearest even; inputs here are in (-2, 2), far from overflow and subnormals. */
static uint16_t float_to_half(float f)
{
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int exp = (int)((x >> 23) & 0xff) - 127 + 15;
  uint32_t man = x & 0x7fffff;
  if (exp <= 0) return (uint16_t)sign; /* flush tiny values: not produced here */
  uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
  uint32_t rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)h;
}

static float bf16_to_float(uint16_t b)
{
  uint32_t x = (uint32_t)b << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static uint16_t float_to_bf16(float f)
{
  uint32_t x;
  memcpy(&x, &f, 4);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

static float to_float(const harness *h, uint16_t v) { return h->bf16 ? bf16_to_float(v) : half_to_float(v); }

/* Uniform in [-1, 1) from a splitmix64 stream. */
static float next_uniform(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

typedef struct fill_job {
  uint16_t *dst;
  size_t n;
  uint64_t seed;
  int bf16;
} fill_job;

static void *fill_chunk(void *arg)
{
  fill_job *j = arg;
  uint64_t s = j->seed;
  for (size_t i = 0; i < j->n; i++) {
    float f = next_uniform(&s);
    j->dst[i] = j->bf16 ? float_to_bf16(f) : float_to_half(f);
  }
  return NULL;
}

/* Fresh uniform values in [-1, 1): one independent stream per chunk, chunks in parallel
** (caches of several GB take seconds on one core). Deterministic for a seed. */
static void fill_random(const harness *h, uint16_t *dst, size_t n, uint64_t seed)
{
  enum { CHUNKS = 64 };
  fill_job jobs[CHUNKS];
  pthread_t th[CHUNKS];
  size_t per = (n + CHUNKS - 1) / CHUNKS;
  int started[CHUNKS] = {0};
  for (int c = 0; c < CHUNKS; c++) {
    size_t at = (size_t)c * per;
    jobs[c] = (fill_job){dst + (at < n ? at : n), at < n ? (n - at < per ? n - at : per) : 0,
                         seed * 0x9e3779b97f4a7c15ull + (uint64_t)c * 0x632be59bd9b4e019ull, h->bf16};
    started[c] = pthread_create(&th[c], NULL, fill_chunk, &jobs[c]) == 0;
    if (!started[c]) fill_chunk(&jobs[c]);
  }
  for (int c = 0; c < CHUNKS; c++)
    if (started[c]) pthread_join(th[c], NULL);
}

#define CK(call) PAT_CU(h->cu, call, err, errlen)

/* The host side: sizes and random q, K, V (no device, no context). With share (same
** workload and kv heads), K and V are share's, not drawn again. */
static harness *create_host(const pat_workload *w, int32_t max_queries, int32_t max_pages, int32_t page_size,
                            int q_heads, int kv_heads, int head_dim, int bf16, uint64_t seed,
                            const harness *share, char *err, size_t errlen)
{
  harness *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  h->w = w;
  h->q_heads = q_heads;
  h->kv_heads = kv_heads;
  h->head_dim = head_dim;
  h->bf16 = bf16;
  h->max_queries = max_queries;
  h->max_pages = max_pages;
  h->page_size = page_size;
  h->q_elems = (size_t)max_queries * q_heads * h->head_dim;
  h->kv_elems = (size_t)max_pages * page_size * kv_heads * h->head_dim;
  h->borrows_kv = share != NULL;
  h->hq = malloc(h->q_elems * 2);
  h->hout = malloc(h->q_elems * 2);
  h->hk = share ? share->hk : malloc(h->kv_elems * 2);
  h->hv = share ? share->hv : malloc(h->kv_elems * 2);
  if (!h->hq || !h->hout || !h->hk || !h->hv) {
    snprintf(err, errlen, "out of host memory for %zu KV elements", h->kv_elems);
    harness_destroy(h);
    return NULL;
  }
  fill_random(h, h->hq, h->q_elems, seed * 3 + 1);
  if (!share) {
    fill_random(h, h->hk, h->kv_elems, seed * 3 + 2);
    fill_random(h, h->hv, h->kv_elems, seed * 3 + 3);
  }
  return h;
}

/* Host buffers for max_queries queries and max_pages pages, then their device copies. With
** share: its flush buffer, and its K and V when share_kv. */
static harness *create_sized(pat_context *ctx, const pat_workload *w, int32_t max_queries, int32_t max_pages,
                             int32_t page_size, int q_heads, int kv_heads, uint64_t seed, const harness *share,
                             int share_kv, char *err, size_t errlen)
{
  harness *h = create_host(w, max_queries, max_pages, page_size, q_heads, kv_heads, ctx->spec.head_dim,
                           ctx->spec.dtype == PAT_BF16, seed, share_kv ? share : NULL, err, errlen);
  if (!h) return NULL;
  h->ctx = ctx;
  h->cu = ctx->cu;
  h->flush_bytes = (size_t)256 << 20; /* several times any L2 */
  if (share) {
    h->flush = share->flush;
    h->borrows_flush = 1;
  }
  if (share_kv) {
    h->k = share->k;
    h->v = share->v;
  }
  if (CK(h->cu->cuCtxSetCurrent(ctx->cuctx)) || CK(h->cu->cuMemAlloc(&h->q, h->q_elems * 2)) ||
      CK(h->cu->cuMemAlloc(&h->out, h->q_elems * 2)) ||
      (!share_kv && (CK(h->cu->cuMemAlloc(&h->k, h->kv_elems * 2)) || CK(h->cu->cuMemAlloc(&h->v, h->kv_elems * 2)) ||
                     CK(h->cu->cuMemcpyHtoD(h->k, h->hk, h->kv_elems * 2)) ||
                     CK(h->cu->cuMemcpyHtoD(h->v, h->hv, h->kv_elems * 2)))) ||
      (!share && CK(h->cu->cuMemAlloc(&h->flush, h->flush_bytes))) ||
      CK(h->cu->cuMemcpyHtoD(h->q, h->hq, h->q_elems * 2))) {
    harness_destroy(h);
    return NULL;
  }
  return h;
}

harness *harness_create_host(const pat_workload *w, int q_heads, int kv_heads, int head_dim, int bf16,
                             uint64_t seed, char *err, size_t errlen)
{
  return create_host(w, w->num_queries, w->num_pages, w->page_size, q_heads, kv_heads, head_dim, bf16, seed, NULL,
                     err, errlen);
}

uint16_t *harness_host_out(harness *h)
{
  return h->hout;
}

void harness_store(const harness *h, float f, uint16_t *dst)
{
  *dst = h->bf16 ? float_to_bf16(f) : float_to_half(f);
}

harness *harness_create(pat_context *ctx, const pat_workload *w, int q_heads, int kv_heads,
                        uint64_t seed, char *err, size_t errlen)
{
  return create_sized(ctx, w, w->num_queries, w->num_pages, w->page_size, q_heads, kv_heads, seed, NULL, 0, err,
                      errlen);
}

harness *harness_create_sharing(pat_context *ctx, const pat_workload *w, int q_heads, int kv_heads, uint64_t seed,
                                const harness *share, char *err, size_t errlen)
{
  if (!share) return harness_create(ctx, w, q_heads, kv_heads, seed, err, errlen);
  if (share->ctx != ctx) {
    snprintf(err, errlen, "harness_create_sharing: the harness shared is of another context");
    return NULL;
  }
  const int share_kv = share->w == w && share->kv_heads == kv_heads;
  return create_sized(ctx, w, w->num_queries, w->num_pages, w->page_size, q_heads, kv_heads, seed, share, share_kv,
                      err, errlen);
}

harness *harness_create_sized(pat_context *ctx, int32_t max_queries, int32_t max_pages, int q_heads,
                              int kv_heads, uint64_t seed, char *err, size_t errlen)
{
  if (max_queries < 1 || max_pages < 1) {
    snprintf(err, errlen, "harness_create_sized: %d queries, %d pages", max_queries, max_pages);
    return NULL;
  }
  return create_sized(ctx, NULL, max_queries, max_pages, ctx->spec.page_size, q_heads, kv_heads, seed, NULL, 0,
                      err, errlen);
}

int harness_set_workload(harness *h, const pat_workload *w, char *err, size_t errlen)
{
  if (w->num_queries > h->max_queries || w->num_pages > h->max_pages || w->page_size != h->page_size) {
    snprintf(err, errlen, "workload of %d queries, %d pages of %d tokens; the harness holds %d, %d of %d",
             w->num_queries, w->num_pages, w->page_size, h->max_queries, h->max_pages, h->page_size);
    return -1;
  }
  h->w = w;
  return 0;
}

void harness_tensors(const harness *h, pat_tensors *t)
{
  memset(t, 0, sizeof *t);
  t->q = h->q;
  t->k_cache = h->k;
  t->v_cache = h->v;
  t->out = h->out;
}

int harness_poison(harness *h, char *err, size_t errlen)
{
  /* 0xffff is a NaN in fp16 and bf16. */
  if (CK(h->cu->cuCtxSetCurrent(h->ctx->cuctx)) || CK(h->cu->cuMemsetD8(h->out, 0xff, h->q_elems * 2)) ||
      CK(h->cu->cuCtxSynchronize()))
    return -1;
  return 0;
}

void harness_time_plans(harness *h, int on)
{
  h->skip_plan_timing = !on;
}

void harness_destroy(harness *h)
{
  if (!h) return;
  if (h->cu) {
    h->cu->cuCtxSetCurrent(h->ctx->cuctx);
    CUdeviceptr bufs[] = {h->q, h->out, h->borrows_kv ? 0 : h->k, h->borrows_kv ? 0 : h->v,
                          h->borrows_flush ? 0 : h->flush};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
      if (bufs[i]) h->cu->cuMemFree(bufs[i]);
  }
  free(h->hq);
  if (!h->borrows_kv) {
    free(h->hk);
    free(h->hv);
  }
  free(h->hout);
  free(h);
}

/* fp32 attention of one query (all heads) over its tokens, in double accumulation. */
void harness_reference(const harness *h, int qi, float *out)
{
  const pat_workload *w = h->w;
  const int D = h->head_dim, G = h->q_heads / h->kv_heads, len = w->seq_lens[qi];
  const double scale = 1.0 / sqrt((double)D);
  double *s = malloc(sizeof(double) * (size_t)len);
  double *o = malloc(sizeof(double) * (size_t)D);
  if (!s || !o) {  /* no reference to compare with: NaN fails every check, loudly */
    for (int i = 0; i < h->q_heads * D; i++) out[i] = NAN;
    free(s);
    free(o);
    return;
  }
  for (int head = 0; head < h->q_heads; head++) {
    const uint16_t *q = h->hq + ((size_t)qi * h->q_heads + head) * D;
    const int kvh = head / G;
    double mx = -INFINITY;
    for (int t = 0; t < len; t++) {
      int32_t page = w->block_table[(size_t)qi * w->stride + t / w->page_size];
      size_t off = (((size_t)page * w->page_size + t % w->page_size) * h->kv_heads + kvh) * D;
      double acc = 0;
      for (int d = 0; d < D; d++) acc += (double)to_float(h, q[d]) * to_float(h, h->hk[off + d]);
      s[t] = acc * scale;
      if (s[t] > mx) mx = s[t];
    }
    double l = 0;
    for (int d = 0; d < D; d++) o[d] = 0;
    for (int t = 0; t < len; t++) {
      int32_t page = w->block_table[(size_t)qi * w->stride + t / w->page_size];
      size_t off = (((size_t)page * w->page_size + t % w->page_size) * h->kv_heads + kvh) * D;
      double p = exp(s[t] - mx);
      l += p;
      for (int d = 0; d < D; d++) o[d] += p * to_float(h, h->hv[off + d]);
    }
    for (int d = 0; d < D; d++) out[(size_t)head * D + d] = (float)(o[d] / l);
  }
  free(s);
  free(o);
}

static double now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* One thread's share of a check: queries tid, tid + T, ... (every query is scanned for
** non-finite outputs; every step-th is compared with the reference). */
typedef struct check_job {
  const harness *h;
  int tid, threads, step;
  double num, den, max_abs;
  long long nonfinite;
  int checked;
} check_job;

static void *check_part(void *arg)
{
  check_job *j = arg;
  const harness *h = j->h;
  const int D = h->head_dim, HD = h->q_heads * D;
  float *ref = malloc(sizeof(float) * (size_t)HD);
  for (int qi = j->tid; qi < h->w->num_queries; qi += j->threads) {
    const uint16_t *o = h->hout + (size_t)qi * HD;
    for (int i = 0; i < HD; i++)
      if (!isfinite(to_float(h, o[i]))) j->nonfinite++;
    if (qi % j->step || !ref) continue;
    harness_reference(h, qi, ref);
    j->checked++;
    for (int i = 0; i < HD; i++) {
      double e = fabs((double)to_float(h, o[i]) - ref[i]);
      if (!isfinite(e)) continue;
      if (e > j->max_abs) j->max_abs = e;
      j->num += e * e;
      j->den += (double)ref[i] * ref[i];
    }
  }
  if (!ref) j->checked = -1;  /* out of memory: reported by the caller */
  free(ref);
  return NULL;
}

int harness_check(harness *h, int max_check, harness_result *r, char *err, size_t errlen)
{
  r->rel_err = r->max_abs_err = 0;
  r->nonfinite = 0;
  r->checked_queries = 0;
  if (CK(h->cu->cuCtxSetCurrent(h->ctx->cuctx)) || CK(h->cu->cuCtxSynchronize()) ||
      CK(h->cu->cuMemcpyDtoH(h->hout, h->out, h->q_elems * 2)))
    return -1;
  return harness_check_host(h, max_check, r, err, errlen);
}

int harness_check_host(harness *h, int max_check, harness_result *r, char *err, size_t errlen)
{
  r->rel_err = r->max_abs_err = 0;
  r->nonfinite = 0;
  r->checked_queries = 0;
  const int nq = h->w->num_queries;
  int step = (max_check > 0 && nq > max_check) ? (nq + max_check - 1) / max_check : 1;
  /* The fp64 reference is the slow part of a GPU test run: one thread per core. */
  enum { MAX_THREADS = 32 };
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int threads = cores < 1 ? 1 : cores > MAX_THREADS ? MAX_THREADS : (int)cores;
  check_job jobs[MAX_THREADS];
  pthread_t th[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (int t = 0; t < threads; t++) {
    jobs[t] = (check_job){.h = h, .tid = t, .threads = threads, .step = step};
    started[t] = pthread_create(&th[t], NULL, check_part, &jobs[t]) == 0;
    if (!started[t]) check_part(&jobs[t]);
  }
  double num = 0, den = 0;
  int oom = 0;
  for (int t = 0; t < threads; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    num += jobs[t].num;
    den += jobs[t].den;
    if (jobs[t].max_abs > r->max_abs_err) r->max_abs_err = jobs[t].max_abs;
    r->nonfinite += jobs[t].nonfinite;
    if (jobs[t].checked < 0) oom = 1;
    else r->checked_queries += jobs[t].checked;
  }
  if (oom) {
    snprintf(err, errlen, "harness_check: out of host memory");
    return -1;
  }
  r->rel_err = den > 0 ? sqrt(num / den) : 0;
  return 0;
}

/* Plan build time: the median of 9 rebuilds (host only). */
static double median_plan_build_us(harness *h, const pat_batch_desc *b)
{
  double best[9];
  for (int i = 0; i < 9; i++) {
    pat_plan *p2 = NULL;
    double t0 = now_us();
    pat_plan_create(h->ctx, b, NULL, &p2);
    best[i] = now_us() - t0;
    pat_plan_info pi;
    if (p2 && !pat_plan_get_info(p2, &pi)) best[i] = pi.build_us;
    pat_plan_destroy(p2);
  }
  for (int i = 0; i < 9; i++)
    for (int j = i + 1; j < 9; j++)
      if (best[j] < best[i]) {
        double x = best[i];
        best[i] = best[j];
        best[j] = x;
      }
  return best[4];
}

int harness_run(harness *h, pat_mode mode, int max_check, int iters, harness_result *r, char *err,
                size_t errlen)
{
  memset(r, 0, sizeof *r);
  const pat_workload *w = h->w;
  pat_batch_desc b = {.num_queries = w->num_queries, .seq_lens = w->seq_lens,
                      .block_table = w->block_table, .block_table_stride = w->stride,
                      .num_pages = w->num_pages, .q_heads = h->q_heads, .kv_heads = h->kv_heads,
                      .mode = mode};
  pat_plan *plan = NULL;
  pat_status st = pat_plan_create(h->ctx, &b, NULL, &plan);
  if (st) {
    snprintf(err, errlen, "pat_plan_create: %s: %s", pat_status_string(st), pat_last_error(h->ctx));
    return -1;
  }
  pat_plan_get_info(plan, &r->info);
  r->plan_us = r->info.build_us;
  pat_tensors t = {.q = h->q, .k_cache = h->k, .v_cache = h->v, .out = h->out};
  CUevent e0 = NULL, e1 = NULL;
  float *times = NULL;
  int rc = -1;
  /* Poison: 0xffff is a NaN in fp16 and bf16. */
  if (CK(h->cu->cuMemsetD8(h->out, 0xff, h->q_elems * 2))) goto done;
  st = pat_forward(h->ctx, plan, &t, 0, 0, NULL);
  if (st) {
    snprintf(err, errlen, "pat_forward: %s: %s", pat_status_string(st), pat_last_error(h->ctx));
    goto done;
  }
  if (harness_check(h, max_check, r, err, errlen)) goto done;

  if (iters > 0) {
    times = malloc(sizeof(float) * (size_t)iters);
    if (CK(h->cu->cuEventCreate(&e0, CU_EVENT_DEFAULT)) || CK(h->cu->cuEventCreate(&e1, CU_EVENT_DEFAULT)))
      goto done;
    for (int i = 0; i < 5; i++)
      if (pat_forward(h->ctx, plan, &t, 0, 0, NULL)) goto done;
    for (int i = 0; i < iters; i++) {
      /* Evict the KV cache from L2 so every run reads HBM, as a real decode step does. */
      if (CK(h->cu->cuMemsetD32(h->flush, (unsigned)i, h->flush_bytes / 4)) ||
          CK(h->cu->cuEventRecord(e0, NULL)))
        goto done;
      if (pat_forward(h->ctx, plan, &t, 0, 0, NULL)) goto done;
      if (CK(h->cu->cuEventRecord(e1, NULL)) || CK(h->cu->cuEventSynchronize(e1)) ||
          CK(h->cu->cuEventElapsedTime(&times[i], e0, e1)))
        goto done;
    }
    qsort(times, (size_t)iters, sizeof *times, cmp_float);
    r->median_us = times[iters / 2] * 1e3;
    r->min_us = times[0] * 1e3;
    /* The plan after its timed runs (state such as the merge counts carried over): poisoned
    ** and checked again; the result keeps the worse of the two checks. */
    harness_result again = *r;
    if (CK(h->cu->cuMemsetD8(h->out, 0xff, h->q_elems * 2)) || pat_forward(h->ctx, plan, &t, 0, 0, NULL) ||
        harness_check(h, max_check, &again, err, errlen))
      goto done;
    r->rel_err = again.rel_err > r->rel_err ? again.rel_err : r->rel_err;
    r->max_abs_err = again.max_abs_err > r->max_abs_err ? again.max_abs_err : r->max_abs_err;
    r->nonfinite += again.nonfinite;
    if (!h->skip_plan_timing) r->plan_us = median_plan_build_us(h, &b);
  }
  rc = 0;
done:
  if (e0) h->cu->cuEventDestroy(e0);
  if (e1) h->cu->cuEventDestroy(e1);
  free(times);
  pat_plan_destroy(plan);
  return rc;
}

double harness_floor_bytes(const harness *h)
{
  double kv = (double)h->w->unique_tokens * h->kv_heads * h->head_dim * 2 * 2;
  return kv + 2.0 * (double)h->q_elems * 2;
}
