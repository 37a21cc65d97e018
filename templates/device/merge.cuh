// merge.cuh: combines a query's partial results (one per split) by their log2-sum-exp2.
// One warp per (query, head): block (item, group of 4 heads), lanes over the head's elements.
#pragma once

#include "pat/params.h"
#include "pat/mma.cuh"

enum { PAT_MERGE_HEADS_PER_CTA = 4 };  // blockDim.x = 32 x this

template <class E, int HEAD_DIM>
__device__ __forceinline__ void pat_merge_run(const pat_merge_params &p)
{
  const pat_merge_item item = p.items[blockIdx.x];
  const int head = blockIdx.y * PAT_MERGE_HEADS_PER_CTA + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (item.num_splits == 0 || head >= p.q_heads) return;  // padding of a fixed-size grid
  const float *lse = p.part_lse + (long long)item.slot_begin * p.q_heads + head;
  const float *po = p.part_o + ((long long)item.slot_begin * p.q_heads + head) * HEAD_DIM;
  const long long split_stride = (long long)p.q_heads * HEAD_DIM;
  // Every lane reads the same LSEs (broadcast loads); the max keeps exp2 in range.
  float m = __int_as_float(0xff800000);
#pragma unroll 4
  for (int s = 0; s < item.num_splits; s++) m = fmaxf(m, lse[(long long)s * p.q_heads]);
#pragma unroll
  for (int c = lane * 4; c < HEAD_DIM; c += 128) {
    float l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int s = 0; s < item.num_splits; s++) {
      const float w = fast_exp2(lse[(long long)s * p.q_heads] - m);
      const float4 v = *reinterpret_cast<const float4 *>(po + s * split_stride + c);
      l += w;
      acc.x += v.x * w; acc.y += v.y * w; acc.z += v.z * w; acc.w += v.w * w;
    }
    const float inv = 1.f / l;
    store4<E>(static_cast<u16 *>(p.out) + item.query * p.o_stride + head * HEAD_DIM + c,
              acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  }
}
