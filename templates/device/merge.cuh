// merge.cuh: combines a query's partial results (one per split) by their log2-sum-exp2.
// Block (item, chunk group) of PAT_MERGE_THREADS threads; a thread owns PAT_MERGE_VECS
// 16-byte chunks (8 elements) of the query's q_heads x HEAD_DIM outputs, PAT_MERGE_THREADS
// chunks apart, so that a warp's loads are contiguous.
//
// The merge is latency-bound (a few KB a CTA): a round issues the partial outputs and LSEs
// of PAT_MERGE_SPLITS splits for all of a thread's chunks before it uses any, so a query
// with up to that many splits costs two dependent reads (its item, then everything else).
// Further rounds rescale the running sums, as the forward kernels' online softmax does.
#pragma once

#include "pat/params.h"
#include "pat/mma.cuh"

enum { PAT_MERGE_SPLITS = 2 };  // splits loaded per round

template <class E, int HEAD_DIM>
__device__ __forceinline__ void pat_merge_run(const pat_merge_params &p)
{
  constexpr int VEC = 8;  // elements a chunk
  constexpr int K = PAT_MERGE_VECS, R = PAT_MERGE_SPLITS;
  static_assert(HEAD_DIM % VEC == 0, "a head is whole chunks");
  const pat_merge_item item = p.items[blockIdx.x];  // plan metadata: ready before the chain began
  pdl_wait_previous();               // the partials: written by the forward launches
  if (item.num_splits == 0) return;  // padding of a fixed grid
  const int chunks = p.q_heads * (HEAD_DIM / VEC);
  const int first = blockIdx.y * (PAT_MERGE_THREADS * K) + threadIdx.x;
  const long long split_stride = (long long)p.q_heads * HEAD_DIM;  // elements
  const u16 *po = static_cast<const u16 *>(p.part_o) + item.slot_begin * split_stride;
  const float *lse = p.part_lse + (long long)item.slot_begin * p.q_heads;
  const float neg_inf = __int_as_float(0xff800000);

  float m[K], l[K], acc[K][VEC];
#pragma unroll
  for (int k = 0; k < K; k++) {
    m[k] = neg_inf;
    l[k] = 0.f;
#pragma unroll
    for (int e = 0; e < VEC; e++) acc[k][e] = 0.f;
  }
  for (int s0 = 0; s0 < item.num_splits; s0 += R) {
    uint4 v[R][K];
    float x[R][K];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
      for (int k = 0; k < K; k++) {
        const int c = first + k * PAT_MERGE_THREADS, s = s0 + r;
        v[r][k] = make_uint4(0u, 0u, 0u, 0u);
        x[r][k] = neg_inf;  // weight 0
        if (s < item.num_splits && c < chunks) {
          v[r][k] = *reinterpret_cast<const uint4 *>(po + s * split_stride + c * VEC);
          x[r][k] = lse[(long long)s * p.q_heads + c / (HEAD_DIM / VEC)];
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
        const float w = fast_exp2(x[r][k] - base);
        const u32 u[4] = {v[r][k].x, v[r][k].y, v[r][k].z, v[r][k].w};
        l[k] += w;
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const float2 a = E::unpack(u[j]);
          acc[k][2 * j] += w * a.x;
          acc[k][2 * j + 1] += w * a.y;
        }
      }
      m[k] = mx;
    }
  }
#pragma unroll
  for (int k = 0; k < K; k++) {
    const int c = first + k * PAT_MERGE_THREADS;
    if (c >= chunks) continue;
    const float inv = 1.f / l[k];
    uint4 o;
    o.x = E::pack(acc[k][0] * inv, acc[k][1] * inv);
    o.y = E::pack(acc[k][2] * inv, acc[k][3] * inv);
    o.z = E::pack(acc[k][4] * inv, acc[k][5] * inv);
    o.w = E::pack(acc[k][6] * inv, acc[k][7] * inv);
    *reinterpret_cast<uint4 *>(static_cast<u16 *>(p.out) + item.query * p.o_stride + c * VEC) = o;
  }
}
