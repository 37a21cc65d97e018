// decode_wgmma_ws.cuh: EXPERIMENT, not yet run on a GPU. The wgmma forward kernel of
// templates/device/decode_wgmma.cuh with warp specialisation (the FlashAttention-3 layout):
// a producer warpgroup issues every cp.async (page ids, Q, the K/V ring) and signals
// per-slot "full" mbarriers as its copies land; the consumer warpgroups (64 rows each) wait
// on those instead of __syncthreads and free slots through "empty" mbarriers, so they never
// issue copies or wait for each other. The producer gives registers to the consumers
// (setmaxnreg). Same parameters, outputs and config as pat_decode_wgmma; built by
// bench/kernel_probe.cu with -DP_WGMMA=2 (bench/wgmma/run.sh).
//
// Why (bench/NOTES.md): the library kernel reaches 286 TFLOP/s on the FLOP-bound probe case
// and 392 with no K/V loads at all; the loads' issue and the CTA-wide barrier are the gap.
#pragma once

#include "pat/params.h"
#include "pat/wgmma.cuh"

__device__ __forceinline__ void mbar_init(u32 bar, u32 count)
{
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar)
{
  asm volatile("{ .reg .b64 st; mbarrier.arrive.shared::cta.b64 st, [%0]; }\n" ::"r"(bar) : "memory");
}
// Arrives on bar once every cp.async this thread issued before has landed.
__device__ __forceinline__ void mbar_arrive_cp_async(u32 bar)
{
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase of bar with the given parity has completed.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity)
{
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(bar), "r"(parity) : "memory");
}
template <int R> __device__ __forceinline__ void regs_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R)); }
template <int R> __device__ __forceinline__ void regs_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R)); }

template <class C>
struct pat_decode_wgmma_ws {
  typedef typename C::Elem E;
  static constexpr int D = C::HEAD_DIM, M = C::TILE_M, N = C::TILE_N, STAGES = C::STAGES;
  static constexpr int CONSUMERS = 2 * M;             // a warpgroup per 64 rows
  static constexpr int THREADS = CONSUMERS + 128;     // + the producer warpgroup
  static constexpr int CHUNKS = D / 8;
  static constexpr int PAGE_WINDOW = 256;
  static constexpr int Q_BYTES = M * D * 2, KV_BYTES = N * D * 2;
  // page ids, Q, the ring, then the mbarriers: full[STAGES], empty[STAGES], q_full.
  static constexpr int BAR_OFFSET = PAGE_WINDOW * 4 + Q_BYTES + STAGES * 2 * KV_BYTES;
  static constexpr int SMEM_BYTES = BAR_OFFSET + (2 * STAGES + 1) * 8;
  typedef u32 pfrag[N / 16][4];

  static_assert(D == 128 && (M == 64 || M == 128) && (N == 64 || N == 128), "as pat_decode_wgmma");
  static_assert(STAGES >= 2, "the producer runs STAGES steps ahead at most");

  static __device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

  static __device__ __forceinline__ void run(const pat_fwd_params &p, unsigned char *smem)
  {
    const pat_pack pk = p.packs[blockIdx.x];
    if (pk.num_queries == 0) return;
    const int kvh = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int rows = pk.num_queries * C::GQA;
    int *s_pages = reinterpret_cast<int *>(smem);
    const u32 sQ = smem_u32(smem) + PAGE_WINDOW * 4, ring = sQ + Q_BYTES;
    const u32 bars = smem_u32(smem) + BAR_OFFSET;
    auto full = [&](int slot) { return bars + 8 * slot; };
    auto empty = [&](int slot) { return bars + 8 * (STAGES + slot); };
    const u32 q_full = bars + 8 * 2 * STAGES;
    const int kv_len = pk.kv_len;
    const int steps = (kv_len + N - 1) / N;

    if (tid == 0) {
      for (int s = 0; s < STAGES; s++) {
        mbar_init(full(s), 128);       // every producer thread, once its copies land
        mbar_init(empty(s), CONSUMERS);  // every consumer thread, once its wgmma read the slot
      }
      mbar_init(q_full, 128);
    }
    __syncthreads();  // the barriers are initialised; no CTA-wide barrier after this

    if (tid >= CONSUMERS) {  // ---- producer warpgroup ----
      regs_dec<40>();
      const int pt = tid - CONSUMERS;
      const u16 *q = static_cast<const u16 *>(p.q);
      const u16 *kc = static_cast<const u16 *>(p.k_cache), *vc = static_cast<const u16 *>(p.v_cache);
      const int *pages = p.pages + pk.page_begin;
      const int npages = (kv_len + C::PAGE_SIZE - 1) / C::PAGE_SIZE;
      for (int i = pt; i < npages && i < PAGE_WINDOW; i += 128) s_pages[i] = pages[i];
      asm volatile("bar.sync 1, 128;\n" ::: "memory");  // the window, among the producers only
      for (int i = pt; i < M * CHUNKS; i += 128) {
        const int r = i / CHUNKS, c = i % CHUNKS;
        const u16 *src = q;
        int bytes = 0;
        if (r < rows) {
          const int query = p.pack_queries[pk.query_begin + r / C::GQA].query;
          src = q + query * p.q_stride + (kvh * C::GQA + r % C::GQA) * D + c * 8;
          bytes = 16;
        }
        cp_async16(sQ + sw128(r, c, M), src, bytes);
      }
      mbar_arrive_cp_async(q_full);
      const long long page_elems = (long long)C::PAGE_SIZE * p.kv_heads * D;
      for (int it = 0; it < steps; it++) {
        const int slot = it % STAGES;
        mbar_wait(empty(slot), ((it / STAGES) & 1) ^ 1);  // a fresh slot passes at once
        const u32 sK = ring + slot * 2 * KV_BYTES, sV = sK + KV_BYTES;
        for (int i = pt; i < N * CHUNKS; i += 128) {
          const int r = i / CHUNKS, c = i % CHUNKS, t = it * N + r;
          const u16 *src_k = kc, *src_v = vc;
          int bytes = 0;
          if (t < kv_len) {
            const int pi = t / C::PAGE_SIZE, page = pi < PAGE_WINDOW ? s_pages[pi] : pages[pi];
            const long long off = page * page_elems + ((t % C::PAGE_SIZE) * p.kv_heads + kvh) * D + c * 8;
            src_k = kc + off;
            src_v = vc + off;
            bytes = 16;
          }
          cp_async16(sK + sw128(r, c, N), src_k, bytes);
          cp_async16(sV + sw128(r, c, N), src_v, bytes);
        }
        mbar_arrive_cp_async(full(slot));
      }
      cp_async_wait<0>();
      return;
    }

    // ---- consumer warpgroups ----
    regs_inc<232>();
    float o[64];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.f;
    float row_max[2] = {neg_inf(), neg_inf()}, row_sum[2] = {0.f, 0.f}, s[N / 2], scale[2];
    pfrag pa[2];
    const u32 qa = sQ + (warp / 4) * 64 * 128;

    // Step `it`'s K and V have landed (the async-proxy fence: they were written by cp.async).
    auto wait_full = [&](int it) {
      mbar_wait(full(it % STAGES), (it / STAGES) & 1);
      fence_proxy_async();
    };
    auto issue_s = [&](int slot) {
      const u32 sK = ring + slot * 2 * KV_BYTES;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        const u32 at = (kk >> 2) * (M * 128) + (kk & 3) * 32, bt = (kk >> 2) * (N * 128) + (kk & 3) * 32;
        wgmma_ss<E>(s, wgmma_desc(qa + at, 16, 1024), wgmma_desc(sK + bt, 16, 1024), kk > 0);
      }
      wgmma_commit();
    };
    auto issue_pv = [&](int slot, const pfrag &pv) {
      const u32 sV = ring + slot * 2 * KV_BYTES + KV_BYTES;
      fence_regs(o);
      wgmma_fence();
#pragma unroll
      for (int kc = 0; kc < N / 16; kc++) wgmma_rs<E>(o, pv[kc], wgmma_desc(sV + kc * 16 * 128, N * 128, 1024));
      wgmma_commit();
    };
    auto softmax = [&](int step, pfrag &pout) {
      const int tok0 = step * N + 2 * (lane & 3);
      const bool tail = (step + 1) * N > kv_len;
      float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
      for (int j = 0; j < N / 8; j++)
#pragma unroll
        for (int x = 0; x < 4; x++) {
          if (tail && tok0 + j * 8 + (x & 1) >= kv_len) s[4 * j + x] = neg_inf();
          mx[x >> 1] = fmaxf(mx[x >> 1], s[4 * j + x]);
        }
#pragma unroll
      for (int h = 0; h < 2; h++) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        const float m_new = fmaxf(row_max[h], mx[h] * p.scale_log2);
        const float base = m_new == neg_inf() ? 0.f : m_new;
        scale[h] = fast_exp2(row_max[h] - base);
        row_max[h] = m_new;
        row_sum[h] *= scale[h];
        mx[h] = base;
      }
#pragma unroll
      for (int j = 0; j < N / 8; j++)
#pragma unroll
        for (int x = 0; x < 4; x++) {
          s[4 * j + x] = fast_exp2(fmaf(s[4 * j + x], p.scale_log2, -mx[x >> 1]));
          row_sum[x >> 1] += s[4 * j + x];
        }
#pragma unroll
      for (int kc = 0; kc < N / 16; kc++)
#pragma unroll
        for (int r = 0; r < 4; r++) pout[kc][r] = E::pack(s[8 * kc + 2 * r], s[8 * kc + 2 * r + 1]);
    };
    auto rescale_o = [&] {
#pragma unroll
      for (int j = 0; j < 16; j++) {
        o[4 * j] *= scale[0]; o[4 * j + 1] *= scale[0];
        o[4 * j + 2] *= scale[1]; o[4 * j + 3] *= scale[1];
      }
    };
    // One step: S of it+1 and P V of it in flight beside the softmax of it+1; slot it is
    // free once P V of it is done.
    auto step = [&](int it, const pfrag &pcur, pfrag &pnext) {
      wait_full(it + 1);
      issue_s((it + 1) % STAGES);
      issue_pv(it % STAGES, pcur);
      wgmma_wait<1>();
      fence_regs(s);
      softmax(it + 1, pnext);
      wgmma_wait<0>();
      fence_regs(o);
      mbar_arrive(empty(it % STAGES));
      rescale_o();
    };

    mbar_wait(q_full, 0);
    fence_proxy_async();
    wait_full(0);
    issue_s(0);
    wgmma_wait<0>();
    fence_regs(s);
    softmax(0, pa[0]);
    int it = 0;
    for (; it + 2 < steps; it += 2) {
      step(it, pa[0], pa[1]);
      step(it + 1, pa[1], pa[0]);
    }
    if (it + 1 < steps) {  // it is even here: the last P lands in pa[1]
      step(it, pa[0], pa[1]);
      issue_pv((it + 1) % STAGES, pa[1]);
    } else {
      issue_pv(it % STAGES, pa[0]);
    }
    wgmma_wait<0>();
    fence_regs(o);

#pragma unroll
    for (int h = 0; h < 2; h++) {
      row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
      row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
      const int r = warp * 16 + (lane >> 2) + 8 * h;
      if (r >= rows) continue;
      const float inv = fast_rcp(row_sum[h]);
      const pat_pack_query pq = p.pack_queries[pk.query_begin + r / C::GQA];
      const int head = kvh * C::GQA + r % C::GQA;
      u16 *dst = pq.slot < 0 ? static_cast<u16 *>(p.out) + pq.query * p.o_stride + head * D
                             : static_cast<u16 *>(p.part_o) + ((long long)pq.slot * p.q_heads + head) * D;
#pragma unroll
      for (int j = 0; j < 16; j++)
        *reinterpret_cast<u32 *>(dst + 8 * j + 2 * (lane & 3)) = E::pack(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
      if (pq.slot >= 0 && (lane & 3) == 0)
        p.part_lse[(long long)pq.slot * p.q_heads + head] = row_max[h] + fast_log2(row_sum[h]);
    }
  }
};
