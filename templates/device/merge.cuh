// merge.cuh: combines a query's partial results (one per split) by their log2-sum-exp2, in the
// merge kernel or at the end of the forward kernels (the fused merge).
//
// The merge is latency-bound (a few KB a query): a round issues the partial outputs and LSEs
// of PAT_MERGE_SPLITS splits for all of a thread's chunks before it uses any, so a query
// with up to that many splits costs one dependent read. Further rounds rescale the running
// sums, as the forward kernels' online softmax does.
#pragma once

#include "pat/params.h"
#include "pat/mma.cuh"

enum { PAT_MERGE_SPLITS = 2 };  // splits loaded per round

// One 16-byte chunk (8 elements) of a query's q_heads x HEAD_DIM outputs and the query's
// splits; splits 0: nothing to do.
struct pat_merge_chunk {
  int query, first_slot, splits, chunk;
};

// Merges a thread's K chunks. Partials are read from L2 (ld.global.cg): the fused merge reads
// what other CTAs wrote while this kernel runs.
template <class E, int HEAD_DIM, int K>
__device__ __forceinline__ void pat_merge_chunks(const void *part_o, const float *part_lse, void *out,
                                                 long long o_stride, int q_heads, const pat_merge_chunk (&w)[K])
{
  constexpr int VEC = 8, R = PAT_MERGE_SPLITS;
  static_assert(HEAD_DIM % VEC == 0, "a head is whole chunks");
  const long long split_stride = (long long)q_heads * HEAD_DIM;  // elements
  const float neg_inf = __int_as_float(0xff800000);
  int splits = 0;
#pragma unroll
  for (int k = 0; k < K; k++) splits = max(splits, w[k].splits);

  float m[K], l[K], acc[K][VEC];
#pragma unroll
  for (int k = 0; k < K; k++) {
    m[k] = neg_inf;
    l[k] = 0.f;
#pragma unroll
    for (int e = 0; e < VEC; e++) acc[k][e] = 0.f;
  }
  for (int s0 = 0; s0 < splits; s0 += R) {
    uint4 v[R][K];
    float x[R][K];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
      for (int k = 0; k < K; k++) {
        const int s = s0 + r;
        v[r][k] = make_uint4(0u, 0u, 0u, 0u);
        x[r][k] = neg_inf;  // weight 0
        if (s < w[k].splits) {
          const long long slot = w[k].first_slot + s;
          const u16 *po = static_cast<const u16 *>(part_o) + slot * split_stride + w[k].chunk * VEC;
          v[r][k] = __ldcg(reinterpret_cast<const uint4 *>(po));
          x[r][k] = __ldcg(part_lse + slot * q_heads + w[k].chunk / (HEAD_DIM / VEC));
        }
      }
    }
#pragma unroll
    for (int k = 0; k < K; k++) {
      float mx = m[k];
#pragma unroll
      for (int r = 0; r < R; r++) mx = fmaxf(mx, x[r][k]);
      const float base = mx == neg_inf ? 0.f : mx;  // nothing finite yet: no inf - inf
      const float f = fast_exp2(m[k] - base);      // rescales the earlier rounds (0 at first)
      l[k] *= f;
#pragma unroll
      for (int e = 0; e < VEC; e++) acc[k][e] *= f;
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float wt = fast_exp2(x[r][k] - base);
        const u32 u[4] = {v[r][k].x, v[r][k].y, v[r][k].z, v[r][k].w};
        l[k] += wt;
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const float2 a = E::unpack(u[j]);
          acc[k][2 * j] += wt * a.x;
          acc[k][2 * j + 1] += wt * a.y;
        }
      }
      m[k] = mx;
    }
  }
#pragma unroll
  for (int k = 0; k < K; k++) {
    if (w[k].splits == 0) continue;
    const float inv = 1.f / l[k];
    uint4 o;
    o.x = E::pack(acc[k][0] * inv, acc[k][1] * inv);
    o.y = E::pack(acc[k][2] * inv, acc[k][3] * inv);
    o.z = E::pack(acc[k][4] * inv, acc[k][5] * inv);
    o.w = E::pack(acc[k][6] * inv, acc[k][7] * inv);
    *reinterpret_cast<uint4 *>(static_cast<u16 *>(out) + w[k].query * o_stride + w[k].chunk * VEC) = o;
  }
}

// The merge kernel: block (item, chunk group) of PAT_MERGE_THREADS threads; a thread owns
// PAT_MERGE_VECS chunks of the item's query, PAT_MERGE_THREADS chunks apart, so that a warp's
// loads are contiguous.
template <class E, int HEAD_DIM>
__device__ __forceinline__ void pat_merge_run(const pat_merge_params &p)
{
  constexpr int K = PAT_MERGE_VECS;
  const pat_merge_item item = p.items[blockIdx.x];  // plan metadata: ready before the chain began
  pdl_wait_previous();               // the partials: written by the forward launches
  if (item.num_splits == 0) return;  // padding of a fixed grid
  const int chunks = p.q_heads * (HEAD_DIM / 8);
  const int first = blockIdx.y * (PAT_MERGE_THREADS * K) + threadIdx.x;
  pat_merge_chunk w[K];
#pragma unroll
  for (int k = 0; k < K; k++) {
    const int c = first + k * PAT_MERGE_THREADS;
    w[k] = pat_merge_chunk{item.query, item.slot_begin, c < chunks ? item.num_splits : 0, c};
  }
  pat_merge_chunks<E, HEAD_DIM, K>(p.part_o, p.part_lse, p.out, p.o_stride, p.q_heads, w);
}

// The fused merge, at the end of a forward CTA of THREADS threads for kv head kvh, once its
// outputs are written; every thread calls it. Thread t < the pack's queries passes pack
// query t as `pq` (read early), the others a query of 1 split. Each split query counts one
// arrival; the CTA merges (GQA heads of kvh) the queries whose count it completes, all at
// once: a query needs no second kernel, and the CTA that completes many (a shared prefix's)
// merges them in parallel rounds. `scratch`: shared memory for THREADS / 32 + 3 x queries
// ints, free to reuse.
template <class E, int HEAD_DIM, int GQA, int THREADS>
__device__ __forceinline__ void pat_merge_fused(const pat_fwd_params &p, int kvh, const pat_pack_query &pq,
                                                int *scratch)
{
  constexpr int WARPS = THREADS / 32, CH = GQA * HEAD_DIM / 8, K = PAT_MERGE_VECS;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __threadfence();  // this thread's partial stores, device-wide before the arrival is counted
  __syncthreads();
  bool last = false;
  if (pq.splits > 1) {
    unsigned *count = p.merge_counts + (long long)pq.first_slot * p.kv_heads + kvh;
    last = atomicInc(count, (unsigned)pq.splits - 1) == (unsigned)pq.splits - 1;  // wraps to 0
    if (last) __threadfence();  // the other arrivals' partials, before this CTA reads them
  }
  // Compaction: the queries this CTA merges, in pack order.
  int *warp_count = scratch, *list = scratch + WARPS;
  const unsigned ballot = __ballot_sync(0xffffffffu, last);
  if (lane == 0) warp_count[warp] = __popc(ballot);
  __syncthreads();
  int at = 0, total = 0;
#pragma unroll
  for (int w = 0; w < WARPS; w++) {
    at += w < warp ? warp_count[w] : 0;
    total += warp_count[w];
  }
  if (last) {
    at += __popc(ballot & ((1u << lane) - 1u));
    list[3 * at] = pq.query;
    list[3 * at + 1] = pq.first_slot;
    list[3 * at + 2] = pq.splits;
  }
  __syncthreads();
  for (int base = 0; base < total * CH; base += THREADS * K) {
    pat_merge_chunk w[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int i = base + threadIdx.x + k * THREADS, f = i / CH;
      w[k] = i < total * CH ? pat_merge_chunk{list[3 * f], list[3 * f + 1], list[3 * f + 2], kvh * CH + i % CH}
                            : pat_merge_chunk{0, 0, 0, 0};
    }
    pat_merge_chunks<E, HEAD_DIM, K>(p.part_o, p.part_lse, p.out, p.o_stride, p.q_heads, w);
  }
}
