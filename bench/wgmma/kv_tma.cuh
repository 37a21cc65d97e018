// kv_tma.cuh: a K/V loader for the wgmma kernel (decode_wgmma.cuh's KvLoader) that copies with
// the tensor memory accelerator instead of every thread's cp.async: one thread issues a
// step's boxes (a page's 32 tokens x 64 dims of one kv head, K and V, both 64-dim halves) and
// an mbarrier a ring slot counts their bytes. The 128-byte swizzle of the tensor maps writes
// the layout sw128() describes, so the kernel's wgmma descriptors stay as they are.
//
// Why: the m128 wgmma tile reads 286 TFLOP/s with its copies and 392 without them
// (bench/NOTES.md); its 256 threads spend issue slots and registers on 16 copies a step each.
// For bench/kernel_probe.cu -DP_WGMMA=3 only; the host side builds the two maps over the
// caches as [tokens][kv heads][128] (cuTensorMapEncodeTiled, box {64, 1, 32}).
#pragma once

#include "pat/wgmma.cuh"

template <class C>
struct pat_wgmma_kv_tma {
  static constexpr int N = C::TILE_N, STAGES = C::STAGES, PAGE = C::PAGE_SIZE;
  static constexpr int ROW_BYTES = C::HEAD_DIM * 2, KV_BYTES = N * ROW_BYTES, BOX_BYTES = PAGE * 128;
  static constexpr int EXTRA_BYTES = 8 * STAGES;  // an mbarrier a ring slot
  static_assert(C::HEAD_DIM == 128 && PAGE == 32 && N % PAGE == 0, "boxes of one page, two halves a row");

  static __device__ __forceinline__ u32 bar(const pat_wgmma_kv_args &a, int slot) { return a.extra + 8 * slot; }

  static __device__ __forceinline__ void init(const pat_wgmma_kv_args &a)
  {
    if (threadIdx.x == 0) {
      for (int s = 0; s < STAGES; s++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar(a, s)));
      asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
  }

  // Thread 0: the step's pages into the slot (issue, below).
  static __device__ __forceinline__ void load(const pat_wgmma_kv_args &a, int slot, int step)
  {
    if (threadIdx.x == 0) issue(a, slot, step);
  }

  // The calling thread: the step's pages (tokens past kv_len: none) into the slot, their bytes
  // expected on the slot's barrier first.
  static __device__ __forceinline__ void issue(const pat_wgmma_kv_args &a, int slot, int step)
  {
    const int first = step * (N / PAGE), npages = (a.kv_len + PAGE - 1) / PAGE;
    const int count = npages - first < N / PAGE ? npages - first : N / PAGE;
    const u32 b = bar(a, slot), sK = a.ring + slot * 2 * KV_BYTES, sV = sK + KV_BYTES;
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}" ::"r"(b),
                 "r"(count * 4 * BOX_BYTES) : "memory");
    for (int j = 0; j < count; j++) {
      const int pi = first + j;
      const int page = pi < PAT_PAGE_WINDOW ? a.s_pages[pi] : a.pages[pi];
      for (int h = 0; h < 2; h++) {
        const u32 at = h * N * 128 + j * BOX_BYTES;  // sw128: halves N rows apart, a page 32 rows
        box(sK + at, a.kmap, h * 64, a.kvh, page * PAGE, b);
        box(sV + at, a.vmap, h * 64, a.kvh, page * PAGE, b);
      }
    }
  }

  // Step `it` of `steps` landed: the slot's barrier, in its (it / STAGES)-th phase. In the last
  // step, V's rows past kv_len are zeroed (P is 0 there, but whatever the cache holds past a
  // query's end, or a slot held before, must not reach P V as NaN); the caller's fence orders
  // these stores before the wgmma reads.
  static __device__ __forceinline__ void wait(const pat_wgmma_kv_args &a, int it, int steps)
  {
    cp_async_wait<0>();  // Q (cp.async, the first group)
    const u32 b = bar(a, it % STAGES), parity = (it / STAGES) & 1;
    u32 done = 0;
    while (!done)
      asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                   : "=r"(done) : "r"(b), "r"(parity) : "memory");
    const int valid = a.kv_len - it * N;
    if (it == steps - 1 && valid < N) {
      const u32 sV = a.ring + (it % STAGES) * 2 * KV_BYTES + KV_BYTES;
      for (int i = threadIdx.x; i < (N - valid) * 16; i += blockDim.x) {  // 16 chunks a row, 8 a half
        const int r = valid + i / 16, c = i % 16;
        asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(sV + sw128(r, c, N)), "r"(0) : "memory");
      }
    }
  }

  // One box: dims {64 from d0, head kvh, 32 tokens from t0} of the map's tensor.
  static __device__ __forceinline__ void box(u32 dst, const void *map, int d0, int kvh, int t0, u32 b)
  {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];"
        ::"r"(dst), "l"(map), "r"(d0), "r"(kvh), "r"(t0), "r"(b) : "memory");
  }
};
