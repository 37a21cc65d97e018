// wgmma_probe.cu: a forward kernel for the large tiles on wgmma (sm_90a), checked against a
// CPU reference and timed, outside the generator and runtime (nvcc, no JIT). One CTA runs
// one (pack, kv head) like templates/device/decode.cuh, with WG warpgroups of 64 rows each:
// S = Q K^T with Q and K read by the tensor cores from shared memory (m64n64k16), the online
// softmax on the accumulators, then O += P V with P from registers and V from shared memory
// (m64n128k16, V transposed). Every pack is one split: the output is written directly.
// Build: bench/wgmma/run.sh (nvcc -gencode arch=compute_90a,code=sm_90a -Ibuild/probe -Ibench
//        -Ibench/wgmma; build/probe holds the device headers as pat/*, see run.sh)
// Run:   wgmma_probe QUERIES LEN KV_HEADS QUERIES_PER_PACK [TIMED [ALL_SHARE]]
#include "probe_host.h"
#include "pat/params.h"
#include "wgmma.cuh"

#ifndef P_G
#define P_G 8  // q heads per kv head
#endif
#ifndef P_WG
#define P_WG 2  // warpgroups: 64 rows each
#endif
#ifndef P_S
#define P_S 3  // K/V stages
#endif
#ifndef P_N
#define P_N 64  // tokens a step
#endif
#ifndef P_OVERLAP
#define P_OVERLAP 1  // S of the next step and P V overlap the softmax
#endif
#ifndef P_DIAG
#define P_DIAG 0  // 2: no K/V loads after the first stages (timing only; results wrong)
#endif

constexpr int D = 128, PAGE = 32, G = P_G, WG = P_WG, M = 64 * WG, N = P_N, STAGES = P_S;
constexpr int THREADS = 128 * WG, CHUNKS = D / 8;
// K/V steps loaded ahead of the one being waited for: the overlapped loop holds two steps in
// use (V of step it, K of step it + 1), the plain one one.
constexpr int LOOKAHEAD = P_OVERLAP ? STAGES - 2 : STAGES - 1;
static_assert(LOOKAHEAD >= 1, "too few K/V stages");
constexpr int Q_BYTES = M * D * 2, KV_BYTES = N * D * 2;  // one K (or V) tile
constexpr int PAGE_WINDOW = 256;
// Q, then the K/V ring (1 KiB-aligned for the swizzle atoms), then the page-id window.
constexpr int SMEM_BYTES = Q_BYTES + STAGES * 2 * KV_BYTES + PAGE_WINDOW * 4;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

extern "C" __global__ void __launch_bounds__(THREADS, 1) fwd(const pat_fwd_params p)
{
  extern __shared__ __align__(1024) unsigned char smem[];
  const pat_pack pk = p.packs[blockIdx.x];
  if (pk.num_queries == 0) return;
  const int kvh = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2, wr = warp & 3;  // warpgroup; warp within it (16 rows each)
  const int rows = pk.num_queries * G;
  const u32 sQ = smem_u32(smem), ring = sQ + Q_BYTES;
  int *s_pages = reinterpret_cast<int *>(smem + Q_BYTES + STAGES * 2 * KV_BYTES);
  const u16 *q = static_cast<const u16 *>(p.q);
  const u16 *kc = static_cast<const u16 *>(p.k_cache), *vc = static_cast<const u16 *>(p.v_cache);
  const int kv_len = pk.kv_len;
  const int *pages = p.pages + pk.page_begin;
  const int npages = (kv_len + PAGE - 1) / PAGE;
  for (int i = tid; i < npages && i < PAGE_WINDOW; i += THREADS) s_pages[i] = pages[i];
  for (int i = tid; i < M * CHUNKS; i += THREADS) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const u16 *src = q;
    int bytes = 0;
    if (r < rows) {
      const int query = p.pack_queries[pk.query_begin + r / G].query;
      src = q + query * p.q_stride + (kvh * G + r % G) * D + c * 8;
      bytes = 16;
    }
    cp_async16(sQ + sw128(r, c, M), src, bytes);
  }
  const long long page_elems = (long long)PAGE * p.kv_heads * D;
  auto load_kv = [&](int slot, int step) {
    const u32 sK = ring + slot * 2 * KV_BYTES, sV = sK + KV_BYTES;
    for (int i = tid; i < N * CHUNKS; i += THREADS) {
      const int r = i / CHUNKS, c = i % CHUNKS, t = step * N + r;
      const u16 *src_k = kc, *src_v = vc;
      int bytes = 0;
      if (t < kv_len) {
        const int pi = t / PAGE, page = pi < PAGE_WINDOW ? s_pages[pi] : pages[pi];
        const long long off = page * page_elems + ((t % PAGE) * p.kv_heads + kvh) * D + c * 8;
        src_k = kc + off;
        src_v = vc + off;
        bytes = 16;
      }
      cp_async16(sK + sw128(r, c, N), src_k, bytes);
      cp_async16(sV + sw128(r, c, N), src_v, bytes);
    }
  };
  __syncthreads();
  const int steps = (kv_len + N - 1) / N;
  for (int s = 0; s < LOOKAHEAD; s++) {
    if (s < steps) load_kv(s, s);
    cp_async_commit();
  }

  float o[64];  // O: 64 rows x 128 dims over the warpgroup; n8 block j in o[4j .. 4j+3]
  for (int i = 0; i < 64; i++) o[i] = 0.f;
  float row_max[2] = {neg_inf(), neg_inf()}, row_sum[2] = {0.f, 0.f};
  const u32 qa = sQ + wg * 64 * 128;  // this warpgroup's 64 rows in each Q half
  float s[N / 2];                     // S of one step: n8 block j in s[4j .. 4j+3]
  u32 pa[2][N / 16][4];  // P of a step as m16n8k16 A fragments, per warp; two: P V of one
                         // step still reads its P while the next step's is written
  float scale[2];

  // S = Q K^T, issued (not waited for): 8 k-slices of 16 dims, a slice 32 bytes into a
  // half's 128-byte rows.
  auto issue_s = [&](int slot) {
    const u32 sK = ring + slot * 2 * KV_BYTES;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const u32 at = (kk >> 2) * (M * 128) + (kk & 3) * 32, bt = (kk >> 2) * (N * 128) + (kk & 3) * 32;
      wgmma_ss(s, wgmma_desc(qa + at, 16, 1024), wgmma_desc(sK + bt, 16, 1024), kk > 0);
    }
    wgmma_commit();
  };
  // O += P V: V is [tokens][dims], MN-major for this product; 16 tokens = 2 KiB of rows,
  // the two 64-dim halves N x 128 bytes apart (leading byte offset), 8-token groups 1 KiB.
  auto issue_pv = [&](int slot, const u32 (&pv)[N / 16][4]) {
    const u32 sV = ring + slot * 2 * KV_BYTES + KV_BYTES;
    fence_regs(o);
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < N / 16; kc++)
      wgmma_m64n128k16_rs(o, pv[kc], wgmma_desc(sV + kc * 16 * 128, N * 128, 1024));
    wgmma_commit();
  };
  // Online softmax of step `step` on s (this thread holds rows lane/4 and lane/4 + 8 of its
  // warp's 16): new row max and sum, the factor O must be scaled by (scale), P into pa.
  auto softmax = [&](int step, u32 (&pout)[N / 16][4]) {
    const int tok0 = step * N + 2 * (lane & 3);
    float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int j = 0; j < N / 8; j++)
#pragma unroll
      for (int x = 0; x < 4; x++) {
        if (tok0 + j * 8 + (x & 1) >= kv_len) s[4 * j + x] = neg_inf();
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
      for (int r = 0; r < 4; r++) pout[kc][r] = pat_fp16::pack(s[8 * kc + 2 * r], s[8 * kc + 2 * r + 1]);
  };
  auto rescale_o = [&] {
#pragma unroll
    for (int j = 0; j < 16; j++) {
      o[4 * j] *= scale[0]; o[4 * j + 1] *= scale[0];
      o[4 * j + 2] *= scale[1]; o[4 * j + 3] *= scale[1];
    }
  };
  // Waits until step `it`'s K/V landed for every thread, then loads step it + LOOKAHEAD into
  // the slot no issued or coming wgmma reads any more.
  auto next_stage = [&](int it) {
    cp_async_wait<LOOKAHEAD - 1>();
    fence_proxy_async();
    __syncthreads();
    const int next = it + LOOKAHEAD;
    if (next < steps && (P_DIAG != 2 || next < STAGES)) load_kv(next % STAGES, next);
    cp_async_commit();
  };

#if P_OVERLAP
  // S of step it+1 and P V of step it run on the tensor cores while this warpgroup does the
  // softmax of step it+1 (the FA3 order).
  next_stage(0);
  issue_s(0);
  wgmma_wait<0>();
  fence_regs(s);
  softmax(0, pa[0]);
  // One step: S of it + 1 and P V of it issued, then the softmax of it + 1 beside them.
  auto step = [&](int it, const u32 (&pcur)[N / 16][4], u32 (&pnext)[N / 16][4]) {
    next_stage(it + 1);
    issue_s((it + 1) % STAGES);
    issue_pv(it % STAGES, pcur);
    wgmma_wait<1>();
    fence_regs(s);
    softmax(it + 1, pnext);
    wgmma_wait<0>();
    fence_regs(o);
    rescale_o();
  };
  int it = 0;
  for (; it + 2 < steps; it += 2) {  // by two: the P buffers stay in registers
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
#else
  for (int it = 0; it < steps; it++) {
    next_stage(it);
    issue_s(it % STAGES);
    wgmma_wait<0>();
    fence_regs(s);
    softmax(it, pa[0]);
    rescale_o();
    issue_pv(it % STAGES, pa[0]);
    wgmma_wait<0>();
    fence_regs(o);
  }
#endif
  cp_async_wait<0>();

#pragma unroll
  for (int h = 0; h < 2; h++) {
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int r = wg * 64 + wr * 16 + (lane >> 2) + 8 * h;
    if (r >= rows) continue;
    const float inv = 1.f / row_sum[h];
    const pat_pack_query pq = p.pack_queries[pk.query_begin + r / G];
    u16 *dst = static_cast<u16 *>(p.out) + pq.query * p.o_stride + (kvh * G + r % G) * D + 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < 16; j++)
      *reinterpret_cast<u32 *>(dst + 8 * j) = pat_fp16::pack(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
  }
}

int main(int argc, char **argv)
{
  int nq = argc > 1 ? atoi(argv[1]) : 256, len = argc > 2 ? atoi(argv[2]) : 1000;
  int kvh = argc > 3 ? atoi(argv[3]) : 8, qpp = argc > 4 ? atoi(argv[4]) : M / G;
  int timed = argc > 5 ? atoi(argv[5]) : 0;
  const bool all_share = argc > 6 && atoi(argv[6]);  // every pack reads the same pages
  if (qpp * G > M) { fprintf(stderr, "%d queries x GQA %d > %d rows\n", qpp, G, M); return 2; }
  const probe_inputs in = probe_make_inputs(nq, len, kvh, qpp, D, G, PAGE, all_share);
  const int qh = in.qh;
  std::vector<pat_pack> packs;
  std::vector<pat_pack_query> pq;
  std::vector<int> pages;
  for (int g = 0; g < in.ngroups; g++) {
    int q0 = g * qpp, q1 = std::min(nq, q0 + qpp);
    packs.push_back({(int)pq.size(), q1 - q0, (int)pages.size(), len});
    for (int i = 0; i < in.pages_per_q; i++) pages.push_back(in.perm[g * in.pages_per_q + i]);
    for (int qi = q0; qi < q1; qi++) pq.push_back({qi, -1});
  }
  const std::vector<float> ref = probe_reference(in);
  void *dq, *dk, *dv, *dout, *dpk, *dpq, *dpages;
  CK(cudaMalloc(&dq, in.q.size() * 2));
  CK(cudaMalloc(&dk, in.k.size() * 2));
  CK(cudaMalloc(&dv, in.v.size() * 2));
  CK(cudaMalloc(&dout, in.q.size() * 2));
  CK(cudaMalloc(&dpk, packs.size() * sizeof(pat_pack)));
  CK(cudaMalloc(&dpq, pq.size() * sizeof(pat_pack_query)));
  CK(cudaMalloc(&dpages, pages.size() * 4));
  CK(cudaMemcpy(dq, in.q.data(), in.q.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, in.k.data(), in.k.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, in.v.data(), in.v.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpk, packs.data(), packs.size() * sizeof(pat_pack), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpq, pq.data(), pq.size() * sizeof(pat_pack_query), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpages, pages.data(), pages.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, in.q.size() * 2));  // NaN poison
  pat_fwd_params p = {};
  p.q = dq; p.k_cache = dk; p.v_cache = dv; p.out = dout;
  p.packs = (const pat_pack *)dpk; p.pack_queries = (const pat_pack_query *)dpq; p.pages = (const int *)dpages;
  p.q_stride = p.o_stride = (long long)qh * D;
  p.q_heads = qh; p.kv_heads = kvh;
  p.scale_log2 = 1.f / sqrtf((float)D) * 1.4426950408889634f;
  CK(cudaFuncSetAttribute(fwd, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
  const dim3 grid((unsigned)packs.size(), kvh);
  auto launch = [&] { fwd<<<grid, THREADS, SMEM_BYTES>>>(p); };
  launch();
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<unsigned short> hout(in.q.size());
  CK(cudaMemcpy(hout.data(), dout, hout.size() * 2, cudaMemcpyDeviceToHost));
  const probe_check c = probe_compare(hout, ref);
  printf("wgmma probe G=%d M=%d N=%d S=%d overlap=%d diag=%d nq=%d len=%d kvh=%d qpp=%d: rel_err=%.2e max_abs=%.2e "
         "nonfinite=%zu %s\n", G, M, N, STAGES, P_OVERLAP, P_DIAG, nq, len, kvh, qpp, c.rel, c.max_abs, c.nonfinite,
         c.ok ? "PASS" : "FAIL");
  if (timed && (c.ok || P_DIAG)) probe_time(in, launch);
  return c.ok ? 0 : 1;
}
