// decode_wgmma_pp.cuh: the m128 wgmma forward kernel of decode_wgmma.cuh with its two
// warpgroups taking turns on the tensor cores (FlashAttention-3's ping-pong): a warpgroup
// issues its S = Q K^T and P V of a step only after the other has issued its own, so that one
// runs its softmax while the other's GEMMs run, instead of both doing the same thing at once.
// For that the warpgroups must not meet at a CTA-wide barrier every step, so K/V come by TMA
// (kv_tma.cuh) with a "full" mbarrier a ring slot, and each slot gets an "empty" mbarrier that
// every warp arrives on when its wgmmas on the slot completed; the slot is refilled by thread
// 128 (the second warpgroup, which runs behind the first, so it seldom waits).
//
// Why: the all-share probe runs ~2500 clocks a 64-token step against ~1024 for its tensor-core
// work (bench/NOTES.md, 2026-12-07); the per-step __syncthreads keeps both warpgroups in the
// same phase. Measured slower on 2026-12-08 with the unrolled loop, in which ptxas ran the
// softmax after P V (NOTES); the loop is now the library's rotated one.
// For bench/kernel_probe.cu -DP_WGMMA=4 only; the same outputs as decode_wgmma.cuh.
// S, P V, the softmax and the epilogue are the library kernel's own (pat_decode_wgmma's
// static members); only the loop's order and its synchronisation differ.
#pragma once

#include "pat/decode_wgmma.cuh"
#include "wgmma/kv_tma.cuh"

__device__ __forceinline__ void mbar_init(u32 bar, int count)
{
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(u32 bar)
{
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity)
{
  u32 done = 0;
  while (!done)
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}

template <class C>
struct pat_decode_wgmma_pp {
  typedef pat_decode_wgmma<C> K;  // the library kernel: its S, P V, softmax and epilogue
  typedef pat_wgmma_kv_tma<C> tma;
  static constexpr int D = C::HEAD_DIM, M = C::TILE_M, N = C::TILE_N, STAGES = C::STAGES;
  static constexpr int THREADS = 2 * M, CHUNKS = D / 8, PAGE_WINDOW = PAT_PAGE_WINDOW;
  static constexpr bool Q_REGS = pat_wgmma_q_regs<C>::value;
  static constexpr int Q_BYTES = M * D * 2, KV_BYTES = N * D * 2;
  static constexpr int PRODUCER = 128, WARPS = THREADS / 32;
  // The page window, Q, the ring, the full barriers (tma's EXTRA_BYTES), the empty barriers.
  static constexpr int SMEM_BYTES = PAGE_WINDOW * 4 + Q_BYTES + STAGES * 2 * KV_BYTES + tma::EXTRA_BYTES + 8 * STAGES;
  typedef typename K::pfrag pfrag;
  static_assert(M == 128, "two warpgroups take turns");

  static __device__ __forceinline__ void run(const pat_fwd_params &p, unsigned char *smem, u32 pack, int kvh,
                                             const void *kmap, const void *vmap)
  {
    const pat_pack pk = p.packs[pack];
    if (pk.num_queries == 0) return;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp / 4;
    const int rows = pk.num_queries * C::GQA;

    const pat_wgmma_kv_args kv = K::begin(p, pk, smem, kvh, rows, tid, kmap, vmap);
    cp_async_commit();
    const u32 ring = kv.ring, sQ = ring - Q_BYTES;
    const int kv_len = pk.kv_len;
    const u32 empty0 = kv.extra + tma::EXTRA_BYTES;
    if (tid == 0)
      for (int s = 0; s < STAGES; s++) mbar_init(empty0 + 8 * s, WARPS);
    tma::init(kv);  // the full barriers, and the fence that publishes all barriers' init
    __syncthreads();

    const int steps = (kv_len + N - 1) / N;
    if (tid == PRODUCER)
      for (int s = 0; s < STAGES && s < steps; s++) tma::issue(kv, s, s);
    cp_async_wait<0>();  // Q, for the last time a CTA-wide barrier: the turns start after it
    fence_proxy_async();
    __syncthreads();

    pat_pack_query dst[2];
    K::read_dst(p, pk, dst, rows, warp, lane);
    float o[64];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.f;
    float row_max[2] = {K::neg_inf(), K::neg_inf()};
    float row_sum[2] = {0.f, 0.f};
    float s[N / 2];
    float scale[2];
    pfrag pa;  // P of the step whose P V comes next
    const u32 qa = sQ + __shfl_sync(0xffffffffu, wg, 0) * 64 * 128;  // warp-uniform to ptxas
    typename K::qfrag qf;
    K::load_q(qf, sQ, warp, lane);

    // The turns: warpgroup w waits on named barrier 1 + w, then lets the other go (2 - w).
    // The second warpgroup lets the first go once up front, and skips its last pass (no one
    // waits for it).
    int passes_left = steps + 1;  // turns a warpgroup takes: S(0), steps - 1 steps, the last P V
    auto my_turn = [&] { asm volatile("bar.sync %0, 256;" ::"r"(1 + wg) : "memory"); };
    auto pass_turn = [&] {
      if (--passes_left > 0 || wg == 0) asm volatile("bar.arrive %0, 256;" ::"r"(2 - wg) : "memory");
    };
    if (wg == 1) asm volatile("bar.arrive 1, 256;" ::: "memory");

    // Step `st` landed (its slot's full barrier); in the last step each warpgroup zeroes V's
    // rows past kv_len itself (the same zeros) and syncs only its own 128 threads.
    auto wait_full = [&](int st) {
      mbar_wait(kv.extra + 8 * (st % STAGES), (st / STAGES) & 1);
      const int valid = kv_len - st * N;
      if (st == steps - 1 && valid < N) {
        const u32 sV = ring + (st % STAGES) * 2 * KV_BYTES + KV_BYTES;
        for (int i = tid & 127; i < (N - valid) * 16; i += 128)
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(sV + sw128(valid + i / 16, i % 16, N)), "r"(0)
                       : "memory");
        fence_proxy_async();
        asm volatile("bar.sync %0, 128;" ::"r"(3 + wg) : "memory");
      }
    };
    // This warp's wgmmas on step st's slot completed; the producer refills the slot with step
    // st + STAGES once every warp has said so.
    auto release = [&](int st) {
      if (lane == 0) mbar_arrive(empty0 + 8 * (st % STAGES));
      if (tid == PRODUCER && st + STAGES < steps) {
        mbar_wait(empty0 + 8 * (st % STAGES), (st / STAGES) & 1);
        tma::issue(kv, st % STAGES, st + STAGES);
      }
    };

    // The library kernel's rotated loop (decode_wgmma.cuh), with turns: an iteration waits for
    // P V of it-1 and releases its slot, packs P of it, rescales O, then issues S of it+1 and
    // P V of it in its turn and runs the softmax of it+1 beside P V. Not unrolled, so that
    // ptxas keeps the wait for P V below the exponentials (unrolled, it hoisted it).
    wait_full(0);
    my_turn();
    K::issue_s(s, qf, qa, ring);
    pass_turn();
    wgmma_wait<0>();
    fence_regs(s);
    K::softmax(s, row_max, row_sum, scale, 0, kv_len, p.scale_log2, lane);
    int it = 0;
#pragma unroll 1
    for (; it + 1 < steps; it++) {
      wgmma_wait<0>();
      fence_regs(o);
      if (it > 0) release(it - 1);
      K::pack_p(s, pa);
      K::rescale_o(o, scale);
      wait_full(it + 1);
      my_turn();
      K::issue_s(s, qf, qa, ring + (it + 1) % STAGES * 2 * KV_BYTES);
      K::issue_pv(o, pa, ring + it % STAGES * 2 * KV_BYTES + KV_BYTES);
      pass_turn();
      wgmma_wait<1>();
      fence_regs(s);
      K::softmax(s, row_max, row_sum, scale, it + 1, kv_len, p.scale_log2, lane);
    }
    wgmma_wait<0>();
    fence_regs(o);
    if (it > 0) release(it - 1);
    K::pack_p(s, pa);
    K::rescale_o(o, scale);
    my_turn();
    K::issue_pv(o, pa, ring + it % STAGES * 2 * KV_BYTES + KV_BYTES);  // the last step's
    pass_turn();
    wgmma_wait<0>();
    fence_regs(o);

    K::store(p, o, row_max, row_sum, dst, rows, kvh, warp, lane);
  }
};
