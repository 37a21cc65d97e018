// kv_copy.cuh: one pipeline step's K and V rows (TILE_N tokens of one kv head) from the paged
// caches into shared memory, one 16-byte cp.async per chunk; tokens past kv_len are
// zero-filled, and so are a masked pack's tokens past a page's valid count (a partial last
// page of a query inside the pack: whatever the cache holds there must not reach P V as NaN).
// Page ids come from the shared-memory window (global memory past it). Both forward kernels
// use it, each with its own shared-memory layout (`at`).
#pragma once

#include "pat/params.h"
#include "pat/mma.cuh"

template <int TILE_N, int THREADS, int CHUNKS, int PAGE_SIZE, int PAGE_WINDOW>
struct pat_kv_copy {
  static constexpr int LOAD_ITERS = (TILE_N * CHUNKS + THREADS - 1) / THREADS;  // per thread
  // A thread's copies are chunk tid % CHUNKS of rows tid / CHUNKS + k RS. When a step lies
  // within one page or starts on a page boundary, and RS and PAGE_SIZE divide one another
  // (powers of two), row k enters a new page exactly when k RS is a multiple of PAGE_SIZE.
  // Past 16 copies a thread, the unrolled pointers spill (1-warp tiles of head_dim 256).
  static constexpr int RS = THREADS / CHUNKS;
  static constexpr bool ROWS_BY_PAGE = THREADS % CHUNKS == 0 && LOAD_ITERS <= 16 &&
      (TILE_N % PAGE_SIZE == 0 || PAGE_SIZE % TILE_N == 0) && (PAGE_SIZE % RS == 0 || RS % PAGE_SIZE == 0);

  // Step `step` into the K tile at sK and the V tile at sV; at(r, c) is the byte offset of
  // chunk c of row r in a tile. page_elems: elements of one page (PAGE_SIZE x kv_heads x D).
  // s_masks: the masked pack's mask words (shared memory, all its pages), or nullptr.
  template <class At>
  static __device__ __forceinline__ void run(u32 sK, u32 sV, const u16 *kc, const u16 *vc, const int *s_pages,
                                             const int *pages, const u32 *s_masks, long long page_elems,
                                             int kv_heads, int kvh, int kv_len, int step, u32 tid, At at)
  {
    constexpr int D = CHUNKS * 8;
    if constexpr (ROWS_BY_PAGE) {
      // A page lookup where a thread's row enters a page (a compile-time k), a pointer step
      // of RS tokens otherwise: the address math was most of a short pack's instructions,
      // ahead of its first copy.
      const u32 c = tid % CHUNKS, r0 = tid / CHUNKS;
      const int row_step = RS * kv_heads * D;
      const u16 *src_k = kc, *src_v = vc;
      u32 valid = PAGE_SIZE;  // tokens of the current page that may be read
#pragma unroll
      for (int k = 0; k < LOAD_ITERS; k++) {
        const u32 r = r0 + k * RS;
        if (RS * LOAD_ITERS > TILE_N && r >= TILE_N) break;
        const u32 t = step * TILE_N + r;
        if (k == 0 || (k * RS) % PAGE_SIZE == 0) {
          const u32 pi = t / PAGE_SIZE;
          const bool in = t < (u32)kv_len;
          if (s_masks) valid = in ? PAT_MASK_VALID(s_masks[pi]) : 0;
          const int page = in ? (pi < PAGE_WINDOW ? s_pages[pi] : pages[pi]) : 0;
          const long long off = page * page_elems + (int)(((t % PAGE_SIZE) * kv_heads + kvh) * D + c * 8);
          src_k = kc + off;
          src_v = vc + off;
        } else {
          src_k += row_step;
          src_v += row_step;
        }
        const bool in = t < (u32)kv_len && t % PAGE_SIZE < valid;
        cp_async16(sK + at(r, c), in ? src_k : kc, in ? 16 : 0);
        cp_async16(sV + at(r, c), in ? src_v : vc, in ? 16 : 0);
      }
    } else {
      // Opaque to the compiler: the LOAD_ITERS addresses are recomputed in every call, not
      // hoisted out of the main loop into registers that the 1- and 2-warp tiles lack.
      u32 t0 = tid;
      asm volatile("" : "+r"(t0));
#pragma unroll
      for (int k = 0; k < LOAD_ITERS; k++) {
        const u32 i = t0 + k * THREADS, r = i / CHUNKS, c = i % CHUNKS;
        if (LOAD_ITERS * THREADS > TILE_N * CHUNKS && i >= TILE_N * CHUNKS) break;
        const u32 t = step * TILE_N + r;
        const u32 pi = t / PAGE_SIZE, tip = t % PAGE_SIZE;
        const u16 *src_k = kc, *src_v = vc;
        int bytes = 0;
        if (t < (u32)kv_len && (!s_masks || tip < (u32)PAT_MASK_VALID(s_masks[pi]))) {
          const int page = pi < PAGE_WINDOW ? s_pages[pi] : pages[pi];
          const long long off = page * page_elems + (int)((tip * kv_heads + kvh) * D + c * 8);
          src_k = kc + off;
          src_v = vc + off;
          bytes = 16;
        }
        cp_async16(sK + at(r, c), src_k, bytes);
        cp_async16(sV + at(r, c), src_v, bytes);
      }
    }
  }
};
