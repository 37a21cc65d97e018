// decode.cuh: the forward kernel body. One CTA runs one (pack, kv head): the pack's query rows
// (queries x GQA heads) against its run of KV pages, streamed through shared memory.
//
// Warps: WARPS_M along the rows (WARP_ROWS = 16 or 32 rows each) x WARPS_N along the tokens
// of a step (SLICE_N tokens each). A warp with 32 rows reuses each K and V fragment it reads
// from shared memory for two mma row blocks, halving the ldmatrix traffic per mma. Every warp
// keeps its own online-softmax state; the epilogue combines the WARPS_N warps of a row block
// through shared memory and writes either the final output or a normalised partial output
// (element type) plus its log2-sum-exp2 for the merge kernel.
//
// A masked pack (a subtree: shared pages, then its queries' own branches) masks each score by
// its page's mask word: the pack queries that see the page and its valid tokens. A warp skips
// a step whose token slice no query of its rows sees, so a branch costs only the warps that
// hold its queries.
#pragma once

#include "pat/params.h"
#include "pat/kv_copy.cuh"
#include "pat/mma.cuh"

// C provides: Elem (pat_fp16 / pat_bf16), HEAD_DIM, PAGE_SIZE, GQA, TILE_M, TILE_N, WARPS_M,
// WARPS_N, STAGES, Q_IN_REGS.
template <class C>
struct pat_decode {
  typedef typename C::Elem E;
  static constexpr int D = C::HEAD_DIM;
  static constexpr int CHUNKS = D / 8;            // 16-byte chunks in one row
  static constexpr int THREADS = 32 * C::WARPS_M * C::WARPS_N;
  static constexpr int SLICE_N = C::TILE_N / C::WARPS_N;
  static constexpr int KV_TILE = C::TILE_N * D;   // elements of one K (or V) tile
  static constexpr int PAGE_WINDOW = PAT_PAGE_WINDOW;  // page ids staged in shared memory
  typedef pat_kv_copy<C::TILE_N, THREADS, CHUNKS, C::PAGE_SIZE, PAGE_WINDOW> kv_copy;
  // Dynamic shared memory: the page-id window (a masked pack's mask words in its second half),
  // the Q tile, then the K/V ring, which the epilogue reuses for per-warp fp32 outputs and row
  // statistics. gen/tile.c computes the same number.
  static constexpr int RING_BYTES = C::STAGES * 2 * KV_TILE * 2;
  static constexpr int WARP_ROWS = C::TILE_M / C::WARPS_M;  // 16 or 32
  static constexpr int MB = WARP_ROWS / 16;                  // mma row blocks per warp
  static constexpr int EPILOGUE_BYTES = THREADS / 32 * WARP_ROWS * (D + 2) * 4;
  static constexpr int WINDOWS_BYTES = PAGE_WINDOW * 4;
  static constexpr int SMEM_BYTES = WINDOWS_BYTES + C::TILE_M * D * 2 +
      (RING_BYTES > EPILOGUE_BYTES ? RING_BYTES : EPILOGUE_BYTES);

  static_assert(C::TILE_M == WARP_ROWS * C::WARPS_M && (MB == 1 || MB == 2),
                "a warp takes 16 or 32 rows");
  static_assert(SLICE_N % 16 == 0, "a warp's token slice is a multiple of 16");
  static_assert(CHUNKS >= 8, "the swizzle needs rows of at least 8 chunks");
  static_assert(C::STAGES >= 2, "the pipeline needs two stages");

  static constexpr int ROW_BYTES = D * 2;          // one row of a Q, K or V tile
  static constexpr int KV_TILE_BYTES = KV_TILE * 2;
  static constexpr int WARPS = THREADS / 32;

  // Byte offset of chunk c of row r in a [rows][D] tile. The XOR swizzle puts the 8 rows an
  // ldmatrix reads in 8 different bank groups.
  static __device__ __forceinline__ u32 swz(u32 r, u32 c) { return r * ROW_BYTES + ((c ^ (r & 7)) << 4); }

  // ldmatrix addresses of one lane. Every ldmatrix of a warp reads rows whose low 3 bits are
  // lane & 7, so the swizzled chunk of column slab k (chunk 2k + bit) is 8 (k / 4) +
  // (2 (k % 4) ^ y) for a per-lane y: a row offset and y per operand, the rest of each
  // address a compile-time constant.
  struct operand {
    u32 row;  // byte offset of the lane's row in the tile
    u32 y;    // (bit ^ (row & 7)) << 4
  };
  static __device__ __forceinline__ operand lane_operand(u32 row, u32 bit)
  {
    return operand{row * ROW_BYTES, (bit ^ (row & 7)) << 4};
  }
  // Byte offset of column slab k (16 columns) of the lane's row.
  static __device__ __forceinline__ u32 slab(const operand &op, int k)
  {
    return op.row + ((((k & 3) * 2) << 4) ^ op.y) + (k >> 2) * 128;
  }

  static __device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

  // One CTA: pack `pack` of the launch against kv head `kvh` (the kernel's wrapper maps its
  // block index to the two).
  static __device__ __forceinline__ void run(const pat_fwd_params &p, unsigned char *smem, u32 pack, int kvh)
  {
    const pat_pack pk = p.packs[pack];
    // An empty pack pads a launch to a fixed grid (CUDA graphs replay fixed grids).
    if (pk.num_queries == 0) return;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp % C::WARPS_M, warp_n = warp / C::WARPS_M;
    const int rows = pk.num_queries * C::GQA;
    const bool warp_active = warp_m * WARP_ROWS < rows;  // warp-uniform: rows past the pack are padding

    // Shared memory as 32-bit addresses: the page-id window, the Q tile, the K/V ring.
    int *s_pages = reinterpret_cast<int *>(smem);
    u32 *s_mask_words = reinterpret_cast<u32 *>(smem) + PAT_MASKED_PAGES;  // masked: <= 128 pages
    const u32 *s_masks = pk.masked ? s_mask_words : nullptr;  // block-uniform
    const u32 sQ = smem_u32(smem) + WINDOWS_BYTES;
    const u32 ring = sQ + C::TILE_M * ROW_BYTES;
    const u16 *q = static_cast<const u16 *>(p.q);
    const u16 *kc = static_cast<const u16 *>(p.k_cache);
    const u16 *vc = static_cast<const u16 *>(p.v_cache);

    // Stage: the pack's first PAGE_WINDOW page ids into shared memory, so that issuing a
    // tile's copies never waits on a page-table read.
    const int kv_len = pk.kv_len;
    const int *pages = p.pages + pk.page_begin;
    const int npages = (kv_len + C::PAGE_SIZE - 1) / C::PAGE_SIZE;
    for (int i = tid; i < npages && i < PAGE_WINDOW; i += THREADS) s_pages[i] = pages[i];
    if (s_masks)  // a masked pack has at most PAT_MASKED_PAGES pages
      for (int i = tid; i < npages; i += THREADS) s_mask_words[i] = p.page_masks[pk.page_begin + i];

    // Stage: Q rows of the pack (row = query x GQA + head in group) into shared memory.
    for (u32 i = tid; i < C::TILE_M * CHUNKS; i += THREADS) {
      const u32 r = i / CHUNKS, c = i % CHUNKS;
      const u16 *src = q;
      int bytes = 0;
      if (r < (u32)rows) {
        const int query = p.pack_queries[pk.query_begin + r / C::GQA].query;
        src = q + query * p.q_stride + (kvh * C::GQA + r % C::GQA) * D + c * 8;
        bytes = 16;
      }
      cp_async16(sQ + swz(r, c), src, bytes);
    }

    // K and V tile `step` into ring slot `slot`.
    const long long page_elems = (long long)C::PAGE_SIZE * p.kv_heads * D;
    auto load_kv = [&](int slot, int step) {
      const u32 sK = ring + slot * 2 * KV_TILE_BYTES;
      kv_copy::run(sK, sK + KV_TILE_BYTES, kc, vc, s_pages, pages, s_masks, page_elems, p.kv_heads, kvh, kv_len, step, tid,
                   [](u32 r, u32 c) { return swz(r, c); });
    };

    __syncthreads();  // the page window is written

    // Stage: pipeline prologue, STAGES-1 tiles in flight (Q rides in the first group).
    const int steps = (kv_len + C::TILE_N - 1) / C::TILE_N;
#pragma unroll
    for (int s = 0; s < C::STAGES - 1; s++) {
      if (s < steps) load_kv(s, s);
      cp_async_commit();
    }

    // ldmatrix lanes 8i..8i+7 address matrix i: K takes rows from bit 4, chunks from bit 3;
    // V (transposed) and Q the other way round.
    const u32 b3 = (lane >> 3) & 1, b4 = lane >> 4, row8 = lane & 7;
    const operand opk = lane_operand(warp_n * SLICE_N + row8 + (b4 << 3), b3);
    const operand opv = lane_operand(warp_n * SLICE_N + row8 + (b3 << 3), b4);
    const operand opq = lane_operand(warp_m * WARP_ROWS + (lane & 15), b4);  // row block 0
    float o[MB][D / 8][4];
    float row_max[MB][2], row_sum[MB][2];  // rows lane/4 and lane/4 + 8 of each row block
#pragma unroll
    for (int mb = 0; mb < MB; mb++) {
#pragma unroll
      for (int j = 0; j < D / 8; j++) o[mb][j][0] = o[mb][j][1] = o[mb][j][2] = o[mb][j][3] = 0.f;
      row_max[mb][0] = row_max[mb][1] = neg_inf();  // log2 domain
      row_sum[mb][0] = row_sum[mb][1] = 0.f;        // this thread's share; quad-summed at the end
    }
    u32 qf[Q_REG_STEPS][4];

    // The (query, slot) of this warp's first epilogue row, read now so that its latency hides
    // behind the main loop; the epilogue's later rows of the same query reuse it.
    int pq_at = warp / C::GQA;
    pat_pack_query pq = warp < rows ? p.pack_queries[pk.query_begin + pq_at] : pat_pack_query{0, -1};

    for (int it = 0; it < steps; it++) {
      // Stage: wait for tile `it`; the barrier also frees the slot read in step it-1.
      cp_async_wait<C::STAGES - 2>();
      __syncthreads();
      const int next = it + C::STAGES - 1;
      if (next < steps) load_kv(next % C::STAGES, next);
      cp_async_commit();

      if constexpr (Q_REGS) {
        if (it == 0) {
#pragma unroll
          for (int kk = 0; kk < Q_REG_STEPS; kk++) ldmatrix_x4(qf[kk], sQ + slab(opq, kk));
        }
      }
      if (!warp_active) continue;
      if (s_masks && !slice_seen(s_masks, it, warp_m, warp_n, rows, kv_len)) continue;

      const u32 sK = ring + (it % C::STAGES) * 2 * KV_TILE_BYTES;
      const u32 sV = sK + KV_TILE_BYTES;

      // Stage: S = Q K^T for this warp's WARP_ROWS rows x SLICE_N tokens (fp32 accumulators).
      // The K fragments run PREFETCH ldmatrix ahead of the mma that reads them, so the tensor
      // cores do not wait on shared memory.
      auto k_addr = [&](int n) { return sK + slab(opk, n / KJ) + (n % KJ) * 16 * ROW_BYTES; };
      u32 kf[PREFETCH + 1][4];
#pragma unroll
      for (int n = 0; n < PREFETCH; n++) ldmatrix_x4(kf[n], k_addr(n));
      float s[MB][SLICE_N / 8][4];
#pragma unroll
      for (int mb = 0; mb < MB; mb++)
#pragma unroll
        for (int j = 0; j < SLICE_N / 8; j++) s[mb][j][0] = s[mb][j][1] = s[mb][j][2] = s[mb][j][3] = 0.f;
      u32 a[MB][4];
#pragma unroll
      for (int n = 0; n < D / 16 * KJ; n++) {
        if (n + PREFETCH < D / 16 * KJ)
          ldmatrix_x4(kf[(n + PREFETCH) % (PREFETCH + 1)], k_addr(n + PREFETCH));
        const int kk = n / KJ, jj = n % KJ;
        if constexpr (Q_REGS) {
#pragma unroll
          for (int x = 0; x < 4; x++) a[0][x] = qf[kk][x];
        } else if (jj == 0) {
#pragma unroll
          for (int mb = 0; mb < MB; mb++) ldmatrix_x4(a[mb], sQ + slab(opq, kk) + mb * 16 * ROW_BYTES);
        }
        const u32 (&b)[4] = kf[n % (PREFETCH + 1)];
#pragma unroll
        for (int mb = 0; mb < MB; mb++) {
          E::mma(s[mb][2 * jj], a[mb], b[0], b[1]);
          E::mma(s[mb][2 * jj + 1], a[mb], b[2], b[3]);
        }
      }
      // The first V fragments load while the softmax runs.
      auto v_addr = [&](int n) { return sV + slab(opv, n % VJ) + (n / VJ) * 16 * ROW_BYTES; };
      u32 vf[PREFETCH + 1][4];
#pragma unroll
      for (int n = 0; n < PREFETCH; n++) ldmatrix_x4_trans(vf[n], v_addr(n));

      // Stage: online softmax. The max is taken over raw scores (scale_log2 > 0 keeps the
      // order) and the scale folds into the exponent's FFMA; tokens past kv_len are masked.
      const int tok_base = it * C::TILE_N + warp_n * SLICE_N + 2 * (lane & 3);
      const bool tail = (it + 1) * C::TILE_N > kv_len;
      if (s_masks) mask_scores(s, s_masks, tok_base, warp_m * WARP_ROWS + (lane >> 2), kv_len);
      u32 pa[MB][SLICE_N / 16][4];
#pragma unroll
      for (int mb = 0; mb < MB; mb++) {
        float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
        for (int j = 0; j < SLICE_N / 8; j++) {
#pragma unroll
          for (int x = 0; x < 4; x++) {
            if (tail && tok_base + j * 8 + (x & 1) >= kv_len) s[mb][j][x] = neg_inf();
            mx[x >> 1] = fmaxf(mx[x >> 1], s[mb][j][x]);
          }
        }
        float scale[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
          mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
          mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
          const float m_new = fmaxf(row_max[mb][h], mx[h] * p.scale_log2);  // log2 domain
          // A row with no valid token yet keeps max -inf: subtract 0 so no inf - inf appears.
          const float base = m_new == neg_inf() ? 0.f : m_new;
          scale[h] = fast_exp2(row_max[mb][h] - base);
          row_max[mb][h] = m_new;
          row_sum[mb][h] *= scale[h];
          mx[h] = base;
        }
#pragma unroll
        for (int j = 0; j < SLICE_N / 8; j++) {
#pragma unroll
          for (int x = 0; x < 4; x++) {
            s[mb][j][x] = fast_exp2(fmaf(s[mb][j][x], p.scale_log2, -mx[x >> 1]));
            row_sum[mb][x >> 1] += s[mb][j][x];
          }
        }
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
          o[mb][j][0] *= scale[0]; o[mb][j][1] *= scale[0];
          o[mb][j][2] *= scale[1]; o[mb][j][3] *= scale[1];
        }
        // P's accumulator layout is already the A-operand layout of P V.
#pragma unroll
        for (int kc = 0; kc < SLICE_N / 16; kc++) {
          pa[mb][kc][0] = E::pack(s[mb][2 * kc][0], s[mb][2 * kc][1]);
          pa[mb][kc][1] = E::pack(s[mb][2 * kc][2], s[mb][2 * kc][3]);
          pa[mb][kc][2] = E::pack(s[mb][2 * kc + 1][0], s[mb][2 * kc + 1][1]);
          pa[mb][kc][3] = E::pack(s[mb][2 * kc + 1][2], s[mb][2 * kc + 1][3]);
        }
      }

      // Stage: O += P V.
#pragma unroll
      for (int n = 0; n < SLICE_N / 16 * VJ; n++) {
        if (n + PREFETCH < SLICE_N / 16 * VJ)
          ldmatrix_x4_trans(vf[(n + PREFETCH) % (PREFETCH + 1)], v_addr(n + PREFETCH));
        const int kc = n / VJ, dp = n % VJ;
        const u32 (&b)[4] = vf[n % (PREFETCH + 1)];
#pragma unroll
        for (int mb = 0; mb < MB; mb++) {
          E::mma(o[mb][2 * dp], pa[mb][kc], b[0], b[1]);
          E::mma(o[mb][2 * dp + 1], pa[mb][kc], b[2], b[3]);
        }
      }
    }

    // Stage: epilogue. Drain the pipeline; the ring becomes per-warp fp32 partial results.
    cp_async_wait<0>();
    __syncthreads();
    // [warps][WARP_ROWS][D] outputs, then [warps][WARP_ROWS] row maxima and sums
    float *sO = reinterpret_cast<float *>(smem + WINDOWS_BYTES + C::TILE_M * ROW_BYTES);
    float *sM = sO + WARPS * WARP_ROWS * D;  // [warps][WARP_ROWS]
    float *sL = sM + WARPS * WARP_ROWS;      // [warps][WARP_ROWS]
#pragma unroll
    for (int mb = 0; mb < MB; mb++) {
      const int g = mb * 16 + (lane >> 2), c = 2 * (lane & 3);
      float *w = sO + warp * WARP_ROWS * D;
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
        *reinterpret_cast<float2 *>(w + g * D + j * 8 + c) = make_float2(o[mb][j][0], o[mb][j][1]);
        *reinterpret_cast<float2 *>(w + (g + 8) * D + j * 8 + c) = make_float2(o[mb][j][2], o[mb][j][3]);
      }
#pragma unroll
      for (int h = 0; h < 2; h++) {
        row_sum[mb][h] += __shfl_xor_sync(0xffffffffu, row_sum[mb][h], 1);
        row_sum[mb][h] += __shfl_xor_sync(0xffffffffu, row_sum[mb][h], 2);
      }
      if ((lane & 3) == 0) {
        sM[warp * WARP_ROWS + g] = row_max[mb][0];
        sM[warp * WARP_ROWS + g + 8] = row_max[mb][1];
        sL[warp * WARP_ROWS + g] = row_sum[mb][0];
        sL[warp * WARP_ROWS + g + 8] = row_sum[mb][1];
      }
    }
    __syncthreads();

    // Stage: combine the WARPS_N token slices of each row; a warp takes one row at a time
    // (its query, weights and destination are warp-uniform), lanes along the head dimension.
    for (int r = warp; r < rows; r += WARPS) {
      const int wm = r / WARP_ROWS, rr = r % WARP_ROWS;
      float m = neg_inf();
#pragma unroll
      for (int wn = 0; wn < C::WARPS_N; wn++) m = fmaxf(m, sM[(wm + wn * C::WARPS_M) * WARP_ROWS + rr]);
      // A row that saw no token has m = -inf: subtract 0 so that no inf - inf appears; its l
      // is 0, its output 0 and its LSE -inf (weight 0 in the merge) rather than NaN. Plans do
      // not make such rows today (masked packs are not split); this keeps one from poisoning
      // a merge.
      const float base = m == neg_inf() ? 0.f : m;
      float f[C::WARPS_N], l = 0.f;
#pragma unroll
      for (int wn = 0; wn < C::WARPS_N; wn++) {
        const int w = (wm + wn * C::WARPS_M) * WARP_ROWS + rr;
        f[wn] = fast_exp2(sM[w] - base);
        l += sL[w] * f[wn];
      }
      // l >= 1 where the row saw a token: its largest score contributes exp2(0)
      const float inv = l > 0.f ? fast_rcp(l) : 0.f;
      if (r / C::GQA != pq_at) {
        pq_at = r / C::GQA;
        pq = p.pack_queries[pk.query_begin + pq_at];
      }
      const int head = kvh * C::GQA + r % C::GQA;
#pragma unroll
      for (int c = lane * 4; c < D; c += 128) {
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int wn = 0; wn < C::WARPS_N; wn++) {
          const float4 v = *reinterpret_cast<const float4 *>(sO + ((wm + wn * C::WARPS_M) * WARP_ROWS + rr) * D + c);
          acc.x += v.x * f[wn]; acc.y += v.y * f[wn]; acc.z += v.z * f[wn]; acc.w += v.w * f[wn];
        }
        if (pq.slot < 0) {
          store4<E>(static_cast<u16 *>(p.out) + pq.query * p.o_stride + head * D + c,
                    acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
        } else {
          const long long at = (long long)pq.slot * p.q_heads + head;
          store4<E>(static_cast<u16 *>(p.part_o) + at * D + c, acc.x * inv, acc.y * inv, acc.z * inv,
                    acc.w * inv);
        }
      }
      if (pq.slot >= 0 && lane == 0) p.part_lse[(long long)pq.slot * p.q_heads + head] = m + fast_log2(l);
    }
  }

  // Masked packs: whether any query of this warp's rows sees a page of its token slice in
  // step `it` (warp-uniform: every lane reads the same words).
  static __device__ __forceinline__ bool slice_seen(const u32 *s_masks, int it, int warp_m, int warp_n, int rows,
                                                    int kv_len)
  {
    const int r0 = warp_m * WARP_ROWS, r1 = min(r0 + WARP_ROWS, rows) - 1;
    const int q0 = r0 / C::GQA, q1 = r1 / C::GQA;
    const int t0 = it * C::TILE_N + warp_n * SLICE_N;
    constexpr int SLICE_PAGES = SLICE_N > C::PAGE_SIZE ? SLICE_N / C::PAGE_SIZE : 1;
    bool seen = false;
#pragma unroll
    for (int k = 0; k < SLICE_PAGES; k++) {
      const int t = t0 + k * C::PAGE_SIZE;
      const u32 w = t < kv_len ? s_masks[t / C::PAGE_SIZE] : 0u;
      seen |= PAT_MASK_LO(w) <= q1 && PAT_MASK_HI(w) > q0;
    }
    return seen;
  }

  // Masked packs: -inf for the scores of tokens the row's query does not see. row0 is the
  // row of this lane's first accumulator; tok_base the token of its first column.
  static __device__ __forceinline__ void mask_scores(float (&s)[MB][SLICE_N / 8][4], const u32 *s_masks,
                                                     int tok_base, int row0, int kv_len)
  {
#pragma unroll
    for (int j = 0; j < SLICE_N / 8; j++) {
      const int t = tok_base + j * 8;  // and t + 1: the same page (pages hold >= 8 tokens)
      const u32 w = t < kv_len ? s_masks[t / C::PAGE_SIZE] : 0u;
      const int lo = PAT_MASK_LO(w), hi = PAT_MASK_HI(w), valid = PAT_MASK_VALID(w), tip = t % C::PAGE_SIZE;
#pragma unroll
      for (int mb = 0; mb < MB; mb++) {
#pragma unroll
        for (int x = 0; x < 4; x++) {
          const int q = (row0 + mb * 16 + (x >> 1) * 8) / C::GQA;
          if (q < lo || q >= hi || tip + (x & 1) >= valid) s[mb][j][x] = neg_inf();
        }
      }
    }
  }

  static constexpr bool Q_REGS = C::Q_IN_REGS && MB == 1;  // two row blocks: no room
  static constexpr int Q_REG_STEPS = Q_REGS ? D / 16 : 1;
  static constexpr int KJ = SLICE_N / 16;  // K fragments (ldmatrix x4) per 16-column slab
  static constexpr int VJ = D / 16;        // V fragments per 16 tokens
  // Fragments loaded ahead of their mma; with two row blocks each fragment feeds four mma.
  static constexpr int PREFETCH = MB == 1 ? 3 : 1;
};
