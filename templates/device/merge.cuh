// merge.cuh: combines a query's partial results (one per split) by their log2-sum-exp2.
// One warp per (query, head): block (item, group of 4 heads), lanes over the head's elements.
//
// The merge is latency-bound (a few KB per warp), so it issues its loads in wide rounds:
// lane s reads the LSE of split s (one round for up to 32 splits), the weights travel by
// shuffle, and the partial outputs of MERGE_BATCH splits are loaded before any is summed.
#pragma once

#include "pat/params.h"
#include "pat/mma.cuh"

enum { PAT_MERGE_HEADS_PER_CTA = 4 };  // blockDim.x = 32 x this
enum { PAT_MERGE_BATCH = 8 };          // partial outputs in flight per lane and column

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class E, int HEAD_DIM>
__device__ __forceinline__ void pat_merge_run(const pat_merge_params &p)
{
  constexpr int COLS = (HEAD_DIM + 127) / 128;  // float4 columns per lane
  const pat_merge_item item = p.items[blockIdx.x];
  const int head = blockIdx.y * PAT_MERGE_HEADS_PER_CTA + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (item.num_splits == 0 || head >= p.q_heads) return;  // warp-uniform: padding of a fixed grid
  const int n = item.num_splits;
  const float *lse = p.part_lse + (long long)item.slot_begin * p.q_heads + head;
  const u16 *po =
      static_cast<const u16 *>(p.part_o) + ((long long)item.slot_begin * p.q_heads + head) * HEAD_DIM;
  const long long split_stride = (long long)p.q_heads * HEAD_DIM;

  // The largest LSE keeps exp2 in range; a head with no finite LSE subtracts 0 (no inf - inf).
  float m = __int_as_float(0xff800000);
  for (int s = lane; s < n; s += 32) m = fmaxf(m, lse[(long long)s * p.q_heads]);
  m = warp_max(m);
  if (m == __int_as_float(0xff800000)) m = 0.f;

  float l = 0.f;
  float4 acc[COLS];
#pragma unroll
  for (int k = 0; k < COLS; k++) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s0 = 0; s0 < n; s0 += 32) {
    const int cnt = n - s0 < 32 ? n - s0 : 32;
    const float w = lane < cnt ? fast_exp2(lse[(long long)(s0 + lane) * p.q_heads] - m) : 0.f;
    l += w;
    for (int j = 0; j < cnt; j += PAT_MERGE_BATCH) {
      float wj[PAT_MERGE_BATCH];
      float4 v[PAT_MERGE_BATCH][COLS];
#pragma unroll
      for (int u = 0; u < PAT_MERGE_BATCH; u++) {
        wj[u] = __shfl_sync(0xffffffffu, w, (j + u) & 31);  // every lane shuffles: no divergence
#pragma unroll
        for (int k = 0; k < COLS; k++) {
          const int c = lane * 4 + k * 128;
          v[u][k] = make_float4(0.f, 0.f, 0.f, 0.f);
          if (j + u < cnt && c < HEAD_DIM)
            v[u][k] = load4<E>(po + (s0 + j + u) * split_stride + c);
        }
      }
#pragma unroll
      for (int u = 0; u < PAT_MERGE_BATCH; u++) {
        const float f = j + u < cnt ? wj[u] : 0.f;
#pragma unroll
        for (int k = 0; k < COLS; k++) {
          acc[k].x += v[u][k].x * f; acc[k].y += v[u][k].y * f;
          acc[k].z += v[u][k].z * f; acc[k].w += v[u][k].w * f;
        }
      }
    }
  }
  const float inv = 1.f / warp_sum(l);
#pragma unroll
  for (int k = 0; k < COLS; k++) {
    const int c = lane * 4 + k * 128;
    if (c < HEAD_DIM)
      store4<E>(static_cast<u16 *>(p.out) + item.query * p.o_stride + head * HEAD_DIM + c,
                acc[k].x * inv, acc[k].y * inv, acc[k].z * inv, acc[k].w * inv);
  }
}
