/* decode_step.c: pat from a C (or C++) engine, in one file: a context for a spec, a plan for
** one decode step whose requests share a system prompt, pat_forward on the engine's stream,
** and a check of two requests' outputs against a plain CPU attention. Only pat.h and the CUDA
** runtime API are used; memory and streams are the engine's (cudaMalloc, cudaStream_t).
**
** Build: `make examples` (or: cc -std=c11 decode_step.c -Iruntime build/libpat.a
**        -l:liblua5.4.a -l:libyaml.a -lnvrtc -lcudart_static -lpthread -ldl -lm -lrt).
** Run:   build/examples/decode_step [SPEC.yaml]   (default specs/default.yaml)
** Exit:  0 when the outputs match (or there is no GPU: it says so), 1 otherwise. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "pat.h"

enum {
  REQUESTS = 16,        /* decode requests in the batch */
  PROMPT_TOKENS = 512,  /* the system prompt every request starts with */
  Q_HEADS = 32,
  KV_HEADS = 8,
};

#define CUDA_OK(call)                                                              \
  do {                                                                             \
    cudaError_t e_ = (call);                                                       \
    if (e_ != cudaSuccess) {                                                       \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                     \
    }                                                                              \
  } while (0)

/* fp16 and bf16 bits <-> float, round to nearest even (inputs here are small and normal). The
** example's own (bench/harness.c has the same): it uses nothing of pat but pat.h, so that it
** can be copied out of the tree as it is. */
static uint16_t to_half(float f)
{
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000, man = x & 0x7fffff;
  const int exp = (int)((x >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return (uint16_t)sign;
  uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
  const uint32_t rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)h;
}
static float from_half(uint16_t h)
{
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits = sign;
  if (exp == 31) bits |= 0x7f800000 | (man << 13);             /* inf, NaN (the poison) */
  else if (exp) bits |= ((exp + 127 - 15) << 23) | (man << 13);  /* zero and tiny values: 0 */
  float f;
  memcpy(&f, &bits, 4);
  return f;
}
static uint16_t to_bf16(float f)
{
  uint32_t x;
  memcpy(&x, &f, 4);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}
static float from_bf16(uint16_t b)
{
  const uint32_t x = (uint32_t)b << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

/* Uniform in [-1, 1), deterministic. */
static float uniform(uint64_t *s)
{
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((*s >> 40) & 0xffffff) / (float)(1 << 23) - 1.f;
}

int main(int argc, char **argv)
{
  const char *spec_path = argc > 1 ? argv[1] : "specs/default.yaml";

  /* 1. A context: the spec's kernels, compiled by NVRTC on first use or loaded from the disk
  **    cache. One per spec and device, for the engine's lifetime. */
  pat_context_desc desc = {.spec_path = spec_path, .progress = 1};
  pat_context *ctx = NULL;
  char msg[1024];
  pat_status st = pat_context_create(&desc, &ctx, msg, sizeof msg);
  if (st == PAT_ERR_NO_DRIVER) {
    printf("decode_step: no GPU here (%s); nothing to run\n", msg);
    return 0;
  }
  if (st != PAT_OK) {
    fprintf(stderr, "decode_step: pat_context_create: %s: %s\n", pat_status_string(st), msg);
    return 1;
  }
  pat_spec_info spec;
  pat_context_spec_info(ctx, &spec);
  const int D = spec.head_dim, P = spec.page_size, bf16 = spec.dtype == 1;
  if (PROMPT_TOKENS % P) {  /* a partial page is never shared */
    fprintf(stderr, "decode_step: the %d-token prompt is not whole pages of %d tokens\n", PROMPT_TOKENS, P);
    return 1;
  }

  /* 2. The engine's paged KV cache and one decode step's block tables, vLLM style: the system
  **    prompt's pages are shared (the same ids in every row), each request then has its own
  **    pages; page ids come from a shuffled free list, as in a cache that has been running. */
  const int prompt_pages = PROMPT_TOKENS / P;
  int32_t seq_lens[REQUESTS], stride = 0, num_pages = prompt_pages;
  for (int r = 0; r < REQUESTS; r++) {
    seq_lens[r] = PROMPT_TOKENS + 20 + 37 * r;  /* its own tokens: 20 .. 575 */
    const int pages = (seq_lens[r] + P - 1) / P;
    stride = pages > stride ? pages : stride;
    num_pages += pages - prompt_pages;
  }
  int32_t *free_list = malloc(sizeof(int32_t) * (size_t)num_pages);
  int32_t *table = malloc(sizeof(int32_t) * (size_t)REQUESTS * (size_t)stride);
  if (!free_list || !table) return 1;
  uint64_t seed = 7;
  for (int i = 0; i < num_pages; i++) free_list[i] = i;
  for (int i = num_pages - 1; i > 0; i--) {
    const int j = (int)((uniform(&seed) + 1.f) * 0.5f * (float)(i + 1)) % (i + 1);
    const int32_t t = free_list[i];
    free_list[i] = free_list[j];
    free_list[j] = t;
  }
  int next = prompt_pages;
  for (int r = 0; r < REQUESTS; r++) {
    int32_t *row = table + (size_t)r * stride;
    for (int p = 0; p < stride; p++) row[p] = -1;
    for (int p = 0; p < prompt_pages; p++) row[p] = free_list[p];
    for (int p = prompt_pages; p < (seq_lens[r] + P - 1) / P; p++) row[p] = free_list[next++];
  }

  /* Random q and K/V on the host (the element type's bits), then on the device. */
  const size_t q_elems = (size_t)REQUESTS * Q_HEADS * D, kv_elems = (size_t)num_pages * P * KV_HEADS * D;
  uint16_t *hq = malloc(q_elems * 2), *hk = malloc(kv_elems * 2), *hv = malloc(kv_elems * 2);
  uint16_t *hout = malloc(q_elems * 2);
  if (!hq || !hk || !hv || !hout) return 1;
  for (size_t i = 0; i < q_elems; i++) hq[i] = bf16 ? to_bf16(uniform(&seed)) : to_half(uniform(&seed));
  for (size_t i = 0; i < kv_elems; i++) {
    hk[i] = bf16 ? to_bf16(uniform(&seed)) : to_half(uniform(&seed));
    hv[i] = bf16 ? to_bf16(uniform(&seed)) : to_half(uniform(&seed));
  }
  void *q, *k, *v, *out;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  CUDA_OK(cudaMalloc(&q, q_elems * 2));
  CUDA_OK(cudaMalloc(&k, kv_elems * 2));
  CUDA_OK(cudaMalloc(&v, kv_elems * 2));
  CUDA_OK(cudaMalloc(&out, q_elems * 2));
  CUDA_OK(cudaMemcpy(q, hq, q_elems * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(k, hk, kv_elems * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(v, hv, kv_elems * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(out, 0xff, q_elems * 2));  /* NaN in both types: a row not written shows */

  /* 3. A plan per decode step (host scheduling, one upload on the stream), used by every
  **    layer of that step. */
  pat_batch_desc batch = {.num_queries = REQUESTS, .seq_lens = seq_lens, .block_table = table,
                          .block_table_stride = stride, .num_pages = num_pages,
                          .q_heads = Q_HEADS, .kv_heads = KV_HEADS, .mode = PAT_MODE_PREFIX};
  pat_plan *plan = NULL;
  if ((st = pat_plan_create(ctx, &batch, (pat_stream)stream, &plan)) != PAT_OK) {
    fprintf(stderr, "decode_step: pat_plan_create: %s: %s\n", pat_status_string(st), pat_last_error(ctx));
    return 1;
  }
  pat_plan_info info;
  pat_plan_get_info(plan, &info);
  printf("plan: %d packs, %d CTAs, %d launches, %d merges; KV read %lld tokens for %lld unique (%.2fx); "
         "built in %.0f us\n", info.num_packs, info.num_ctas, info.num_launches, info.num_merges,
         info.kv_tokens_read, info.kv_tokens_unique, (double)info.kv_tokens_read / (double)info.kv_tokens_unique,
         info.build_us);

  /* 4. One layer's attention: pat_forward on the engine's stream (workspace 0: the context's
  **    own buffer; an engine that captures CUDA graphs passes its own, see docs/graphs.md). */
  pat_tensors t = {.q = (pat_devptr)(uintptr_t)q, .k_cache = (pat_devptr)(uintptr_t)k,
                   .v_cache = (pat_devptr)(uintptr_t)v, .out = (pat_devptr)(uintptr_t)out};
  if ((st = pat_forward(ctx, plan, &t, 0, 0, (pat_stream)stream)) != PAT_OK) {
    fprintf(stderr, "decode_step: pat_forward: %s: %s\n", pat_status_string(st), pat_last_error(ctx));
    return 1;
  }
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemcpy(hout, out, q_elems * 2, cudaMemcpyDeviceToHost));

  /* 5. The check: the first and the last request, every head, against softmax(q K^T / sqrt(D)) V
  **    in double precision; relative L2 error of each. */
  const double tol = bf16 ? 3e-2 : 5e-3;
  int bad = 0;
  double *s = malloc(sizeof(double) * (size_t)seq_lens[REQUESTS - 1]);
  double *o = malloc(sizeof(double) * (size_t)D);
  if (!s || !o) return 1;
  const int check[2] = {0, REQUESTS - 1};
  for (int c = 0; c < 2; c++) {
    const int r = check[c];
    double err2 = 0, ref2 = 0;
    for (int h = 0; h < Q_HEADS; h++) {
      const uint16_t *qh = hq + ((size_t)r * Q_HEADS + h) * D;
      const int kvh = h / (Q_HEADS / KV_HEADS);
      double mx = -INFINITY, l = 0;
      for (int tok = 0; tok < seq_lens[r]; tok++) {
        const size_t at = (((size_t)table[(size_t)r * stride + tok / P] * P + tok % P) * KV_HEADS + kvh) * D;
        double dot = 0;
        for (int d = 0; d < D; d++)
          dot += (double)(bf16 ? from_bf16(qh[d]) * from_bf16(hk[at + d]) : from_half(qh[d]) * from_half(hk[at + d]));
        s[tok] = dot / sqrt((double)D);
        mx = s[tok] > mx ? s[tok] : mx;
      }
      for (int d = 0; d < D; d++) o[d] = 0;
      for (int tok = 0; tok < seq_lens[r]; tok++) {
        const size_t at = (((size_t)table[(size_t)r * stride + tok / P] * P + tok % P) * KV_HEADS + kvh) * D;
        const double w = exp(s[tok] - mx);
        l += w;
        for (int d = 0; d < D; d++) o[d] += w * (bf16 ? from_bf16(hv[at + d]) : from_half(hv[at + d]));
      }
      const uint16_t *got = hout + ((size_t)r * Q_HEADS + h) * D;
      for (int d = 0; d < D; d++) {
        const double want = o[d] / l, g = bf16 ? from_bf16(got[d]) : from_half(got[d]);
        err2 += (g - want) * (g - want);
        ref2 += want * want;
      }
    }
    const double rel = sqrt(err2 / ref2);  /* NaN (an unwritten row) fails below too */
    const int ok = rel <= tol;
    bad += !ok;
    printf("request %2d (%d tokens): relative L2 error %.2e (tolerance %.0e): %s\n", r, seq_lens[r], rel, tol,
           ok ? "ok" : "WRONG");
  }

  pat_plan_destroy(plan);
  pat_context_destroy(ctx);
  CUDA_OK(cudaFree(q));
  CUDA_OK(cudaFree(k));
  CUDA_OK(cudaFree(v));
  CUDA_OK(cudaFree(out));
  CUDA_OK(cudaStreamDestroy(stream));
  free(s);
  free(o);
  free(hq);
  free(hk);
  free(hv);
  free(hout);
  free(table);
  free(free_list);
  return bad ? 1 : 0;
}
