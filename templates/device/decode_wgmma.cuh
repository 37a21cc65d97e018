// decode_wgmma.cuh: the forward kernel body on warpgroup mma (sm_90a), for tiles of 64 or 128
// rows. One CTA runs one (pack, kv head) like decode.cuh and writes the same outputs (final
// rows, or normalised partials plus their log2-sum-exp2); each warpgroup (4 warps) owns 64
// query rows and all the tokens of a step.
//
// Q and K go to the tensor cores straight from shared memory (S = Q K^T, m64nNk16); with
// C::Q_IN_REGS, Q is read once into registers instead (each warp's 16 rows as m16n8k16 A
// fragments, 32 registers), so that a k-slice of S reads only K's bytes from shared memory,
// whose bandwidth the two warpgroups' GEMMs and the ring's copies share. The online softmax
// runs on the accumulators; P stays in registers for O += P V (m64n128k16, V read from
// shared memory as the transposed operand). Shared tiles use the 128-byte swizzle wgmma's
// descriptors describe. The loop runs in the FlashAttention-3 order: S of step it+1
// and P V of step it are in flight on the tensor cores while the warpgroup computes the
// softmax of step it+1, so the K/V ring holds one step more.
#pragma once

#include "pat/params.h"
#include "pat/kv_copy.cuh"
#include "pat/wgmma.cuh"

// What a K/V loader of the wgmma kernel gets from its CTA.
struct pat_wgmma_kv_args {
  const u16 *kc, *vc;          // the caches
  const int *s_pages, *pages;  // the pack's page ids: the shared window, then global memory
  long long page_elems;        // elements of one page (PAGE_SIZE x kv_heads x D)
  int kv_heads, kvh, kv_len;
  u32 ring;                    // the K/V ring (slot s: K at ring + 2 s KV_BYTES, V after it)
  u32 extra;                   // the loader's EXTRA_BYTES of shared memory, after the ring
  const void *kmap, *vmap;     // the loader's own (TMA descriptors); nullptr here
};

// The library's loader: every thread copies its 16-byte chunks with cp.async (kv_copy.cuh),
// one commit group a step. A loader provides EXTRA_BYTES, init (before the CTA's first
// barrier), load (step `step` into ring slot `slot`) and wait (step `it` of `steps` landed
// for this thread; the caller then fences and syncs the CTA).
template <class C>
struct pat_wgmma_cp_async {
  static constexpr int EXTRA_BYTES = 0;
  static constexpr int N = C::TILE_N, THREADS = 2 * C::TILE_M, CHUNKS = C::HEAD_DIM / 8;
  static constexpr int KV_BYTES = N * C::HEAD_DIM * 2, LOOKAHEAD = C::STAGES - 2;
  typedef pat_kv_copy<N, THREADS, CHUNKS, C::PAGE_SIZE, PAT_PAGE_WINDOW> kv_copy;
  static __device__ __forceinline__ void init(const pat_wgmma_kv_args &) {}
  static __device__ __forceinline__ void load(const pat_wgmma_kv_args &a, int slot, int step)
  {
    const u32 sK = a.ring + slot * 2 * KV_BYTES;
    // Masked packs (page_masks) never come here: the scheduler gives them mma.sync tiles.
    kv_copy::run(sK, sK + KV_BYTES, a.kc, a.vc, a.s_pages, a.pages, nullptr, a.page_elems, a.kv_heads, a.kvh,
                 a.kv_len, step, threadIdx.x, [](u32 r, u32 c) { return sw128(r, c, N); });
  }
  static __device__ __forceinline__ void wait(const pat_wgmma_kv_args &, int, int) { cp_async_wait<LOOKAHEAD - 1>(); }
};

// C::KvLoader when C names one, else pat_wgmma_cp_async<C>.
template <class T> struct pat_void { typedef void type; };
template <class C, class = void> struct pat_wgmma_loader { typedef pat_wgmma_cp_async<C> type; };
template <class C> struct pat_wgmma_loader<C, typename pat_void<typename C::KvLoader>::type> {
  typedef typename C::KvLoader type;
};

// NAME<C>::value: C::MEMBER when C names it, else false (the kernel's optional switches).
#define PAT_WGMMA_SWITCH(NAME, MEMBER)                                                        \
  template <class C, class = void> struct NAME { static constexpr bool value = false; };     \
  template <class C> struct NAME<C, typename pat_void<decltype(C::MEMBER)>::type> {          \
    static constexpr bool value = C::MEMBER;                                                  \
  };
PAT_WGMMA_SWITCH(pat_wgmma_q_regs, Q_IN_REGS)
PAT_WGMMA_SWITCH(pat_wgmma_late_load, LATE_LOAD)
PAT_WGMMA_SWITCH(pat_wgmma_lazy_rescale, LAZY_RESCALE)
#undef PAT_WGMMA_SWITCH

// C provides: Elem, HEAD_DIM (128), PAGE_SIZE, GQA, TILE_M (64 or 128), TILE_N (64 or 128),
// STAGES (>= 3); optionally KvLoader (above), Q_IN_REGS (S's A operand from registers),
// LATE_LOAD (a step's K/V copies issued after its GEMMs, not before) and LAZY_RESCALE (a
// row's max moves only when it grows by more than LAZY_SLACK, so most steps skip O's rescale).
template <class C>
struct pat_decode_wgmma {
  typedef typename C::Elem E;
  static constexpr int D = C::HEAD_DIM, M = C::TILE_M, N = C::TILE_N, STAGES = C::STAGES;
  static constexpr int THREADS = 2 * M;  // a warpgroup (128 threads) per 64 rows
  static constexpr int CHUNKS = D / 8;   // 16-byte chunks in one row
  static constexpr int PAGE_WINDOW = PAT_PAGE_WINDOW;  // page ids staged in shared memory
  typedef typename pat_wgmma_loader<C>::type loader;
  static constexpr bool Q_REGS = pat_wgmma_q_regs<C>::value;
  static constexpr bool LATE_LOAD = pat_wgmma_late_load<C>::value;
  static constexpr bool LAZY = pat_wgmma_lazy_rescale<C>::value;
  // LAZY: how far (log2 units) scores may pass the max in use before it moves; P then stays
  // below 2^8 = 256, far inside fp16 and bf16, and O, the row sum and the LSE all use the same
  // max, so the result is the same up to rounding.
  static constexpr float LAZY_SLACK = 8.f;
  static constexpr int Q_BYTES = M * D * 2, KV_BYTES = N * D * 2;  // KV_BYTES: one K or V tile
  // Dynamic shared memory: the page-id window (1 KiB, so the tiles after it stay 1 KiB-aligned
  // for the swizzle), the Q tile, the K/V ring, the loader's own. gen/tile.c computes the
  // same number (the library's loader has no bytes of its own).
  static constexpr int SMEM_BYTES = PAGE_WINDOW * 4 + Q_BYTES + STAGES * 2 * KV_BYTES + loader::EXTRA_BYTES;
  // Steps loaded ahead of the one waited for: two are in use (V of step it, K of step it+1).
  static constexpr int LOOKAHEAD = STAGES - 2;
  typedef u32 pfrag[N / 16][4];  // P of one step: m16n8k16 A fragments of 16-token slices

  static_assert(D == 128, "the wgmma tile covers head_dim 128 (O is m64n128)");
  static_assert(M == 64 || M == 128, "64 or 128 rows: one or two warpgroups");
  static_assert(N == 64 || N == 128, "S is m64n64 or m64n128");
  static_assert(STAGES >= 3, "the overlapped loop needs three K/V stages");
  static_assert(PAGE_WINDOW * 4 % 1024 == 0, "the tiles must stay 1 KiB-aligned");

  static __device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

  typedef u32 qfrag[Q_REGS ? D / 16 : 1][4];  // Q_REGS: a warp's 16 rows of Q, an A fragment a k-slice

  // Stage: the pack's first PAGE_WINDOW page ids, and its Q rows (query x GQA + head) by
  // cp.async (not committed).
  static __device__ __forceinline__ void stage(const pat_fwd_params &p, const pat_pack &pk, int *s_pages,
                                               const int *pages, u32 sQ, const u16 *q, int kvh, int rows, int tid)
  {
    const int npages = (pk.kv_len + C::PAGE_SIZE - 1) / C::PAGE_SIZE;
    for (int i = tid; i < npages && i < PAGE_WINDOW; i += THREADS) s_pages[i] = pages[i];
    for (int i = tid; i < M * CHUNKS; i += THREADS) {
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
  }

  // This thread's rows: lane/4 and lane/4 + 8 of its warp's 16 (accumulator layout); dst:
  // where each goes ({0, -1} past the pack's rows).
  static __device__ __forceinline__ void read_dst(const pat_fwd_params &p, const pat_pack &pk,
                                                  pat_pack_query (&dst)[2], int rows, int warp, int lane)
  {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = warp * 16 + (lane >> 2) + 8 * h;
      dst[h] = r < rows ? p.pack_queries[pk.query_begin + r / C::GQA] : pat_pack_query{0, -1};
    }
  }
  // Q_REGS: the warp's 16 rows of Q (landed) into registers, lanes 16-31 taking dims 8-15 of
  // each 16-dim slice; nothing otherwise.
  static __device__ __forceinline__ void load_q(qfrag &qf, u32 sQ, int warp, int lane)
  {
    if constexpr (Q_REGS) {
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(qf[kk], sQ + sw128(warp * 16 + (lane & 15), 2 * kk + (lane >> 4), M));
    }
  }

  // The math of a warpgroup's KV loop, on a thread's registers: run() below drives it, and so
  // does the ping-pong probe (bench/wgmma/decode_wgmma_pp.cuh) in another order.

  // S = Q K^T into s, issued and committed, not waited for: 8 k-slices of 16 dims, a slice 32
  // bytes into a half's 128-byte rows (8-row swizzle atoms 1 KiB apart). qa: the warpgroup's
  // rows in each Q half (Q in shared memory); sK: the ring slot's K.
  static __device__ __forceinline__ void issue_s(float (&s)[N / 2], const qfrag &qf, u32 qa, u32 sK)
  {
    const wgmma_desc_words dq = wgmma_desc_split(qa, 16, 1024), dk = wgmma_desc_split(sK, 16, 1024);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const u32 at = (kk >> 2) * (M * 128) + (kk & 3) * 32, bt = (kk >> 2) * (N * 128) + (kk & 3) * 32;
      if constexpr (Q_REGS)
        wgmma_rs_k<E>(s, qf[kk], wgmma_desc_at(dk, bt), kk > 0);
      else
        wgmma_ss<E>(s, wgmma_desc_at(dq, at), wgmma_desc_at(dk, bt), kk > 0);
    }
    wgmma_commit();
  }
  // O += P V, issued and committed: 16 tokens (2 KiB of V rows) a k-slice; the two 64-dim
  // halves N x 128 bytes apart (leading byte offset), 8-token atoms 1 KiB apart.
  static __device__ __forceinline__ void issue_pv(float (&o)[64], const pfrag &pv, u32 sV)
  {
    const wgmma_desc_words dv = wgmma_desc_split(sV, N * 128, 1024);
    fence_regs(o);
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < N / 16; kc++) wgmma_rs<E>(o, pv[kc], wgmma_desc_at(dv, kc * 16 * 128));
    wgmma_commit();
  }
  // Online softmax of step `step` on s: tokens past kv_len masked, the row max and sum
  // updated, the factor O must be scaled by in `scale`, P (unpacked) left in s. The max is
  // taken over raw scores (scale_log2 > 0 keeps the order); the scale folds into the
  // exponent's FFMA.
  static __device__ __forceinline__ void softmax(float (&s)[N / 2], float (&row_max)[2], float (&row_sum)[2],
                                                 float (&scale)[2], int step, int kv_len, float scale_log2,
                                                 int lane)
  {
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
      float m_new = fmaxf(row_max[h], mx[h] * scale_log2);
      if constexpr (LAZY)
        if (m_new <= row_max[h] + LAZY_SLACK) m_new = row_max[h];  // scale 1: O stays as it is
      // A row with no valid token yet keeps max -inf: subtract 0 so no inf - inf appears.
      const float base = m_new == neg_inf() ? 0.f : m_new;
      scale[h] = LAZY && m_new == row_max[h] ? 1.f : fast_exp2(row_max[h] - base);
      row_max[h] = m_new;
      row_sum[h] *= scale[h];
      mx[h] = base;
    }
#pragma unroll
    for (int j = 0; j < N / 8; j++)
#pragma unroll
      for (int x = 0; x < 4; x++) {
        s[4 * j + x] = fast_exp2(fmaf(s[4 * j + x], scale_log2, -mx[x >> 1]));
        row_sum[x >> 1] += s[4 * j + x];
      }
  }
  // P from softmax() into P V's A fragments: the S accumulator layout is already theirs.
  static __device__ __forceinline__ void pack_p(const float (&s)[N / 2], pfrag &pout)
  {
#pragma unroll
    for (int kc = 0; kc < N / 16; kc++)
#pragma unroll
      for (int r = 0; r < 4; r++) pout[kc][r] = E::pack(s[8 * kc + 2 * r], s[8 * kc + 2 * r + 1]);
  }
  static __device__ __forceinline__ void rescale_o(float (&o)[64], const float (&scale)[2])
  {
    // LAZY: skipped when no row of the warp moved its max (the branch is warp-uniform).
    if constexpr (LAZY)
      if (!__any_sync(0xffffffffu, scale[0] != 1.f || scale[1] != 1.f)) return;
#pragma unroll
    for (int j = 0; j < 16; j++) {
      o[4 * j] *= scale[0]; o[4 * j + 1] *= scale[0];
      o[4 * j + 2] *= scale[1]; o[4 * j + 3] *= scale[1];
    }
  }
  // Epilogue, straight from the accumulators: a quad of lanes holds 8 dims of a row in each
  // n8 block. Rows r < rows go to dst (a final row, or a partial and its log2-sum-exp2).
  static __device__ __forceinline__ void store(const pat_fwd_params &p, const float (&o)[64], const float (&row_max)[2],
                                               float (&row_sum)[2], const pat_pack_query (&dst)[2], int rows, int kvh,
                                               int warp, int lane)
  {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
      row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
      const int r = warp * 16 + (lane >> 2) + 8 * h;
      if (r >= rows) continue;
      const float inv = fast_rcp(row_sum[h]);  // >= 1: the row's largest score contributes exp2(0)
      const pat_pack_query pq = dst[h];
      const int head = kvh * C::GQA + r % C::GQA;
      u16 *out = pq.slot < 0 ? static_cast<u16 *>(p.out) + pq.query * p.o_stride + head * D
                             : static_cast<u16 *>(p.part_o) + ((long long)pq.slot * p.q_heads + head) * D;
#pragma unroll
      for (int j = 0; j < 16; j++)
        *reinterpret_cast<u32 *>(out + 8 * j + 2 * (lane & 3)) = E::pack(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
      if (pq.slot >= 0 && (lane & 3) == 0)
        p.part_lse[(long long)pq.slot * p.q_heads + head] = row_max[h] + fast_log2(row_sum[h]);
    }
  }

  // A CTA's start: the pack's page ids and Q rows staged (stage, not committed), and what the
  // loader needs (loader::load(kv, slot, step) puts K and V of step `step` into ring slot
  // `slot`). Shared memory: the page window, Q at kv.ring - Q_BYTES, the ring, the loader's.
  static __device__ __forceinline__ pat_wgmma_kv_args begin(const pat_fwd_params &p, const pat_pack &pk,
                                                            unsigned char *smem, int kvh, int rows, int tid,
                                                            const void *kmap, const void *vmap)
  {
    int *s_pages = reinterpret_cast<int *>(smem);
    const u32 sQ = smem_u32(smem) + PAGE_WINDOW * 4, ring = sQ + Q_BYTES;
    const int *pages = p.pages + pk.page_begin;
    stage(p, pk, s_pages, pages, sQ, static_cast<const u16 *>(p.q), kvh, rows, tid);
    return {static_cast<const u16 *>(p.k_cache), static_cast<const u16 *>(p.v_cache), s_pages, pages,
            (long long)C::PAGE_SIZE * p.kv_heads * D, p.kv_heads, kvh, pk.kv_len, ring,
            ring + STAGES * 2 * KV_BYTES, kmap, vmap};
  }

  // One CTA: pack `pack` of the launch against kv head `kvh` (the kernel's wrapper maps its
  // block index to the two). kmap, vmap: the loader's descriptors, when it has any.
  static __device__ __forceinline__ void run(const pat_fwd_params &p, unsigned char *smem, u32 pack, int kvh,
                                             const void *kmap = nullptr, const void *vmap = nullptr)
  {
    const pat_pack pk = p.packs[pack];
    // An empty pack pads a launch to a fixed grid (CUDA graphs replay fixed grids).
    if (pk.num_queries == 0) return;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int rows = pk.num_queries * C::GQA;

    const pat_wgmma_kv_args kv = begin(p, pk, smem, kvh, rows, tid, kmap, vmap);
    const u32 ring = kv.ring, sQ = ring - Q_BYTES;
    const int kv_len = pk.kv_len;
    loader::init(kv);
    __syncthreads();  // the page window is written (and the loader set up)

    // Stage: pipeline prologue (Q rides in the first group).
    const int steps = (kv_len + N - 1) / N;
    for (int s = 0; s < LOOKAHEAD; s++) {
      if (s < steps) loader::load(kv, s, s);
      cp_async_commit();
    }
    // Waits until step `it` landed for every thread (and every thread's wgmmas of step it - 2
    // completed); then refill loads step it + LOOKAHEAD into the slot that no issued or
    // coming wgmma reads any more.
    auto ready = [&](int it) {
      loader::wait(kv, it, steps);
      fence_proxy_async();
      __syncthreads();
    };
    auto refill = [&](int it) {
      if (it + LOOKAHEAD < steps) loader::load(kv, (it + LOOKAHEAD) % STAGES, it + LOOKAHEAD);
      cp_async_commit();
    };

    // Their destinations are read now, so that the loads' latency hides behind the main loop.
    pat_pack_query dst[2];
    read_dst(p, pk, dst, rows, warp, lane);
    float o[64];  // O: 64 rows x 128 dims a warpgroup; dims 8j + 2 (lane % 4) + {0, 1} in o[4j ..]
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.f;
    float row_max[2] = {neg_inf(), neg_inf()};  // log2 domain
    float row_sum[2] = {0.f, 0.f};              // this thread's share; quad-summed at the end
    float s[N / 2];                             // S of one step: tokens 8j + 2 (lane % 4) + {0, 1}
    float scale[2];
    pfrag pa;  // P of the step whose P V comes next
    // This warpgroup's rows in each Q half. Taken from lane 0, the value is warp-uniform to
    // ptxas, which then builds Q's descriptors in uniform registers (not 16 vector ones).
    const u32 qa = sQ + __shfl_sync(0xffffffffu, warp / 4, 0) * 64 * 128;
    qfrag qf;

    // Stage: the KV loop. An iteration packs P of step it once P V of it-1 completed (P's
    // registers are that wgmma's A operand), issues S of it+1 and P V of it, and runs the
    // softmax of it+1 while P V runs. The loop is not unrolled: its back edge, between that
    // softmax and the next wait for P V, keeps ptxas from hoisting the wait above the
    // exponentials (unrolled, it did, and the softmax ran after P V instead of beside it).
    ready(0);  // Q landed with step 0
    refill(0);
    load_q(qf, sQ, warp, lane);
    issue_s(s, qf, qa, ring);
    wgmma_wait<0>();
    fence_regs(s);
    softmax(s, row_max, row_sum, scale, 0, kv_len, p.scale_log2, lane);
    int it = 0;
#pragma unroll 1
    for (; it + 1 < steps; it++) {
      wgmma_wait<0>();
      fence_regs(o);
      pack_p(s, pa);
      rescale_o(o, scale);
      ready(it + 1);
      if constexpr (!LATE_LOAD) refill(it + 1);
      issue_s(s, qf, qa, ring + (it + 1) % STAGES * 2 * KV_BYTES);
      issue_pv(o, pa, ring + it % STAGES * 2 * KV_BYTES + KV_BYTES);
      if constexpr (LATE_LOAD) refill(it + 1);  // the copies follow the GEMMs
      wgmma_wait<1>();
      fence_regs(s);
      softmax(s, row_max, row_sum, scale, it + 1, kv_len, p.scale_log2, lane);
    }
    wgmma_wait<0>();
    fence_regs(o);
    pack_p(s, pa);
    rescale_o(o, scale);
    issue_pv(o, pa, ring + it % STAGES * 2 * KV_BYTES + KV_BYTES);  // the last step's
    wgmma_wait<0>();
    fence_regs(o);
    cp_async_wait<0>();

    // Stage: epilogue.
    store(p, o, row_max, row_sum, dst, rows, kvh, warp, lane);
  }
};
