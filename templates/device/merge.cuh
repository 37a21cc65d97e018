// merge.cuh: combines a query's partial results (one per split) by their log2-sum-exp2, a warp
// per (query, head), lanes over the head's elements: inside the forward kernel (the CTA that
// writes a query's last partial) or as a kernel of its own. The merge is latency-bound (a few
// KB per warp), so it issues its loads in wide rounds.
#pragma once

#include "pat/params.h"
#include "pat/mma.cuh"

enum { PAT_MERGE_HEADS_PER_CTA = 4 };  // blockDim.x = 32 x this
enum { PAT_MERGE_BATCH = 8 };          // partial outputs in flight per lane (head_dim <= 128)

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

// One warp merges one head of one item: lane s reads the LSE of split s (one round for up to
// 32 splits), the weights travel by shuffle, and the partial outputs of PAT_MERGE_BATCH
// splits are loaded before any is summed. Loads go through L2: the partials may come from
// other CTAs of the same kernel (the merge inside the forward kernel).
template <class E, int HEAD_DIM>
__device__ __forceinline__ void pat_merge_head(const void *part_o, const float *part_lse, void *out,
                                               long long o_stride, int q_heads,
                                               const pat_merge_item &item, int head, int lane)
{
  constexpr int COLS = (HEAD_DIM + 127) / 128;  // float4 columns per lane
  constexpr int BATCH = PAT_MERGE_BATCH / COLS;  // the same registers for any head_dim
  const int n = item.num_splits;
  const float *lse = part_lse + (long long)item.slot_begin * q_heads + head;
  const u16 *po = static_cast<const u16 *>(part_o) + ((long long)item.slot_begin * q_heads + head) * HEAD_DIM;
  const long long split_stride = (long long)q_heads * HEAD_DIM;

  // The largest LSE keeps exp2 in range; a head with no finite LSE subtracts 0 (no inf - inf).
  float m = __int_as_float(0xff800000);
  for (int s = lane; s < n; s += 32) m = fmaxf(m, __ldcg(lse + (long long)s * q_heads));
  m = warp_max(m);
  if (m == __int_as_float(0xff800000)) m = 0.f;

  float l = 0.f;
  float4 acc[COLS];
#pragma unroll
  for (int k = 0; k < COLS; k++) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s0 = 0; s0 < n; s0 += 32) {
    const int cnt = n - s0 < 32 ? n - s0 : 32;
    const float w = lane < cnt ? fast_exp2(__ldcg(lse + (long long)(s0 + lane) * q_heads) - m) : 0.f;
    l += w;
    for (int j = 0; j < cnt; j += BATCH) {
      float wj[BATCH];
      float4 v[BATCH][COLS];
#pragma unroll
      for (int u = 0; u < BATCH; u++) {
        wj[u] = __shfl_sync(0xffffffffu, w, (j + u) & 31);  // every lane shuffles: no divergence
#pragma unroll
        for (int k = 0; k < COLS; k++) {
          const int c = lane * 4 + k * 128;
          v[u][k] = make_float4(0.f, 0.f, 0.f, 0.f);
          if (j + u < cnt && c < HEAD_DIM)
            v[u][k] = load4_l2<E>(po + (s0 + j + u) * split_stride + c);
        }
      }
#pragma unroll
      for (int u = 0; u < BATCH; u++) {
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
      store4<E>(static_cast<u16 *>(out) + item.query * o_stride + head * HEAD_DIM + c,
                acc[k].x * inv, acc[k].y * inv, acc[k].z * inv, acc[k].w * inv);
  }
}

// The merge kernel: block (item, group of PAT_MERGE_HEADS_PER_CTA heads), a warp per head.
template <class E, int HEAD_DIM>
__device__ __forceinline__ void pat_merge_run(const pat_merge_params &p)
{
  const pat_merge_item item = p.items[blockIdx.x];
  const int head = blockIdx.y * PAT_MERGE_HEADS_PER_CTA + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (item.num_splits == 0 || head >= p.q_heads) return;  // warp-uniform: padding of a fixed grid
  pat_merge_head<E, HEAD_DIM>(p.part_o, p.part_lse, p.out, p.o_stride, p.q_heads, item, head, lane);
}
