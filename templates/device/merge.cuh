// merge.cuh: combines a query's partial results (one per split) by their log2-sum-exp2.
// One CTA per merge item; each thread produces 4 consecutive elements of one head.
#pragma once

#include "pat/params.h"
#include "pat/mma.cuh"

template <class E, int HEAD_DIM>
__device__ __forceinline__ void pat_merge_run(const pat_merge_params &p)
{
  const pat_merge_item item = p.items[blockIdx.x];
  if (item.num_splits == 0) return;  // padding of a fixed-size grid
  const int n = p.q_heads * (HEAD_DIM / 4);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int head = i / (HEAD_DIM / 4), c = (i % (HEAD_DIM / 4)) * 4;
    float m = __int_as_float(0xff800000);
    for (int s = 0; s < item.num_splits; s++)
      m = fmaxf(m, p.part_lse[(long long)(item.slot_begin + s) * p.q_heads + head]);
    float l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s = 0; s < item.num_splits; s++) {
      const long long at = (long long)(item.slot_begin + s) * p.q_heads + head;
      const float w = fast_exp2(p.part_lse[at] - m);
      const float4 v = *reinterpret_cast<const float4 *>(p.part_o + at * HEAD_DIM + c);
      l += w;
      acc.x += v.x * w; acc.y += v.y * w; acc.z += v.z * w; acc.w += v.w * w;
    }
    const float inv = 1.f / l;
    store4<E>(static_cast<u16 *>(p.out) + item.query * p.o_stride + head * HEAD_DIM + c,
              acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  }
}
