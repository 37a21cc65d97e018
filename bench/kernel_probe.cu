// kernel_probe.cu: checks and times the device headers directly (nvcc, no runtime, no JIT):
// QPP queries per pack, each pack's KV cut into SPLITS packs, merge, against a CPU reference.
// Build: nvcc -std=c++17 -O2 -arch=sm_90 -Ibuild/probe bench/kernel_probe.cu (see bench/probe.sh);
// with -DP_WGMMA=1 the wgmma kernel (decode_wgmma.cuh), built with
// -gencode arch=compute_90a,code=sm_90a (see bench/wgmma/run.sh); with -DP_HEAD_MAJOR=1 the
// CTAs in kv-head-fastest order (see bench/cta_order.sh); with -DP_WGMMA=3 the wgmma kernel with
// the TMA K/V loader of bench/wgmma/kv_tma.cuh; with -DP_WGMMA=4 the ping-pong kernel of
// bench/wgmma/decode_wgmma_pp.cuh (TMA loads, P_M 128).
// Run: kernel_probe NQ LEN SPLITS KVH QPP [TIMED [ALL_SHARE [FLUSH]]].
#include "probe_host.h"
#include "pat/decode.cuh"
#include "pat/decode_wgmma.cuh"
#include "pat/merge.cuh"
#if P_WGMMA >= 3
#include <cuda.h>  // CUtensorMap, cuTensorMapEncodeTiled's type (called through the runtime's entry point)
#include "wgmma/kv_tma.cuh"
#include "wgmma/decode_wgmma_pp.cuh"
#endif

#ifndef P_D
#define P_D 128
#endif
#ifndef P_G
#define P_G 4
#endif
#ifndef P_M
#define P_M 16
#endif
#ifndef P_N
#define P_N 64
#endif
#ifndef P_W
#define P_W 4
#endif
#ifndef P_S
#define P_S 3
#endif
#ifndef P_PAGE
#define P_PAGE 32
#endif
#ifndef P_WM
#define P_WM (P_M / 16)  // warps along the rows (P_M / P_WM rows each: 16 or 32)
#endif
#ifndef P_MINB
#define P_MINB 1  // __launch_bounds__ min blocks per SM
#endif
#ifndef P_QREG
#define P_QREG (P_D <= 128)  // Q fragments held in registers
#endif
#ifndef P_LATE
#define P_LATE 0  // wgmma: a step's K/V copies issued after its GEMMs (C::LATE_LOAD)
#endif
#ifndef P_LAZY
#define P_LAZY 0  // wgmma: O rescaled only when a row's max grows past a slack (C::LAZY_RESCALE)
#endif
#ifndef P_WGMMA
#define P_WGMMA 0  // 1: warpgroup mma (P_M 64 or 128, P_S >= 3; P_W and P_WM unused); 3: with TMA loads; 4: ping-pong
#endif

namespace {
struct cfg {
  typedef pat_fp16 Elem;
  static constexpr int HEAD_DIM = P_D, PAGE_SIZE = P_PAGE, GQA = P_G, TILE_M = P_M, TILE_N = P_N,
                       WARPS_M = P_WM, WARPS_N = P_W / P_WM, STAGES = P_S;
  static constexpr bool Q_IN_REGS = P_QREG;
  static constexpr bool LATE_LOAD = P_LATE;
  static constexpr bool LAZY_RESCALE = P_LAZY;
#if P_WGMMA == 3
  typedef pat_wgmma_kv_tma<cfg> KvLoader;
#endif
};
}  // namespace
#if P_WGMMA == 4
typedef pat_decode_wgmma_pp<cfg> K;
#elif P_WGMMA
typedef pat_decode_wgmma<cfg> K;
#else
typedef pat_decode<cfg> K;
#endif
#ifndef P_HEAD_MAJOR
#define P_HEAD_MAJOR 0  // 1: a 1-D grid, kv head fastest (the CTAs of one pack's heads run together)
#endif
#if P_WGMMA >= 3
// The TMA loader's descriptors of the K and V caches ride as kernel parameters.
extern "C" __global__ void __launch_bounds__(K::THREADS, P_MINB)
    fwd(const pat_fwd_params p, const __grid_constant__ CUtensorMap kmap, const __grid_constant__ CUtensorMap vmap)
{
  extern __shared__ __align__(1024) unsigned char smem[];
  K::run(p, smem, blockIdx.x, blockIdx.y, &kmap, &vmap);
}

// A cache [tokens][kvh][128] (fp16) as a tensor of boxes {64 dims, 1 head, 32 tokens}, 128-byte swizzle.
static CUtensorMap kv_map(void *base, int kvh, long long tokens)
{
  decltype(&cuTensorMapEncodeTiled) encode = nullptr;
  cudaDriverEntryPointQueryResult found;
  CK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", (void **)&encode, cudaEnableDefault, &found));
  if (found != cudaDriverEntryPointSuccess || !encode) { fprintf(stderr, "no cuTensorMapEncodeTiled\n"); exit(1); }
  const cuuint64_t dims[3] = {128, (cuuint64_t)kvh, (cuuint64_t)tokens};
  const cuuint64_t strides[2] = {256, (cuuint64_t)kvh * 256};  // bytes, of dims 1 and 2
  const cuuint32_t box[3] = {64, 1, 32}, elem_strides[3] = {1, 1, 1};
  CUtensorMap m;
  const CUresult r = encode(&m, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, base, dims, strides, box, elem_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) { fprintf(stderr, "cuTensorMapEncodeTiled: error %d\n", (int)r); exit(1); }
  return m;
}
#else
extern "C" __global__ void __launch_bounds__(K::THREADS, P_MINB) fwd(const pat_fwd_params p)
{
  extern __shared__ __align__(1024) unsigned char smem[];
#if P_HEAD_MAJOR
  K::run(p, smem, blockIdx.x / p.kv_heads, blockIdx.x % p.kv_heads);
#else
  K::run(p, smem, blockIdx.x, blockIdx.y);  // the library's order: packs x kv heads
#endif
}
#endif
extern "C" __global__ void merge(const pat_merge_params p) { pat_merge_run<pat_fp16, P_D>(p); }

int main(int argc, char **argv)
{
  int nq = argc > 1 ? atoi(argv[1]) : 64;       // queries
  int len = argc > 2 ? atoi(argv[2]) : 1000;    // tokens per query
  int splits = argc > 3 ? atoi(argv[3]) : 1;
  int kvh = argc > 4 ? atoi(argv[4]) : 8;
  int qpp = argc > 5 ? atoi(argv[5]) : 1;       // queries per pack (all share the same pages)
  int timed = argc > 6 ? atoi(argv[6]) : 0;
  const bool all_share = argc > 7 && atoi(argv[7]);  // every pack reads the same pages
  const bool flush = argc > 8 && atoi(argv[8]);      // timed runs start with L2 flushed
  const int D = P_D, P = P_PAGE, qh = kvh * P_G;
  const probe_inputs in = probe_make_inputs(nq, len, kvh, qpp, D, P_G, P, all_share);
  const int pages_per_q = in.pages_per_q, ngroups = in.ngroups;
  const std::vector<int> &perm = in.perm;
  const std::vector<unsigned short> &hq = in.q;
  const size_t kv_elems = in.k.size();
  // Packs: group g's queries share pages perm[g*ppq ...]; split in `splits` page-aligned chunks.
  std::vector<pat_pack> packs;
  std::vector<pat_pack_query> pq;
  std::vector<int> pages;
  std::vector<pat_merge_item> items;
  int chunk_pages = (pages_per_q + splits - 1) / splits;
  int slot = 0;
  for (int g = 0; g < ngroups; g++) {
    int q0 = g * qpp, q1 = std::min(nq, q0 + qpp);
    int nsp = 0;
    for (int s = 0; s * chunk_pages < pages_per_q; s++) nsp++;
    for (int s = 0; s < nsp; s++) {
      pat_pack pk;
      pk.query_begin = (int)pq.size();
      pk.num_queries = q1 - q0;
      pk.page_begin = (int)pages.size();
      int t0 = s * chunk_pages * P;
      pk.kv_len = std::min(len, t0 + chunk_pages * P) - t0;
      for (int i = 0; i < chunk_pages && s * chunk_pages + i < pages_per_q; i++)
        pages.push_back(perm[g * pages_per_q + s * chunk_pages + i]);
      for (int q = q0; q < q1; q++) pq.push_back({q, nsp == 1 ? -1 : slot + (q - q0) * nsp + s});
      packs.push_back(pk);
    }
    if (nsp > 1)
      for (int q = q0; q < q1; q++) items.push_back({q, slot + (q - q0) * nsp, nsp});
    if (nsp > 1) slot += (q1 - q0) * nsp;
  }
  const std::vector<float> ref = probe_reference(in);
  const float scale = 1.f / sqrtf((float)D);
  void *dq, *dk, *dv, *dout, *dpk, *dpq, *dpages, *ditems;
  void *dpo;  // partial outputs in the element type (2 bytes)
  float *dlse;
  CK(cudaMalloc(&dq, hq.size() * 2));
  CK(cudaMalloc(&dk, kv_elems * 2));
  CK(cudaMalloc(&dv, kv_elems * 2));
  CK(cudaMalloc(&dout, hq.size() * 2));
  CK(cudaMalloc(&dpk, packs.size() * sizeof(pat_pack)));
  CK(cudaMalloc(&dpq, pq.size() * sizeof(pat_pack_query)));
  CK(cudaMalloc(&dpages, pages.size() * 4));
  CK(cudaMalloc(&ditems, std::max<size_t>(1, items.size()) * sizeof(pat_merge_item)));
  CK(cudaMalloc(&dpo, std::max(1, slot) * (size_t)qh * D * 2));
  CK(cudaMalloc(&dlse, std::max(1, slot) * (size_t)qh * 4));
  CK(cudaMemcpy(dq, hq.data(), hq.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, in.k.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, in.v.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpk, packs.data(), packs.size() * sizeof(pat_pack), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpq, pq.data(), pq.size() * sizeof(pat_pack_query), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpages, pages.data(), pages.size() * 4, cudaMemcpyHostToDevice));
  if (!items.empty())
    CK(cudaMemcpy(ditems, items.data(), items.size() * sizeof(pat_merge_item), cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, hq.size() * 2));  // NaN poison
  pat_fwd_params p = {dq, dk, dv, dout, dpo, dlse, (const pat_pack *)dpk, (const pat_pack_query *)dpq,
                      (const int *)dpages, nullptr, (long long)qh * D, (long long)qh * D, qh, kvh,
                      scale * 1.4426950408889634f};
  pat_merge_params mp = {dpo, dlse, dout, (const pat_merge_item *)ditems, (long long)qh * D, qh};
  int smem = K::SMEM_BYTES;
  CK(cudaFuncSetAttribute(fwd, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid = P_HEAD_MAJOR ? dim3((unsigned)packs.size() * kvh) : dim3((unsigned)packs.size(), kvh);
#if P_WGMMA >= 3
  static_assert(P_PAGE == 32 && P_D == 128, "the TMA boxes are pages of 32 tokens x 128 dims");
  const long long tokens = (long long)(kv_elems / ((size_t)kvh * D));
  const CUtensorMap kmap = kv_map(dk, kvh, tokens), vmap = kv_map(dv, kvh, tokens);
  auto launch = [&] {
    fwd<<<grid, K::THREADS, smem>>>(p, kmap, vmap);
#else
  auto launch = [&] {
    fwd<<<grid, K::THREADS, smem>>>(p);
#endif
    if (!items.empty()) merge<<<dim3((unsigned)items.size(), (qh + 3) / 4), 128>>>(mp);
  };
  launch();
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<unsigned short> hout(hq.size());
  CK(cudaMemcpy(hout.data(), dout, hout.size() * 2, cudaMemcpyDeviceToHost));
  const probe_check c = probe_compare(hout, ref);
  printf("probe %s%s D=%d G=%d M=%d WM=%d N=%d W=%d S=%d page=%d nq=%d len=%d splits=%d kvh=%d qpp=%d: "
         "rel_err=%.2e max_abs=%.2e nonfinite=%zu %s\n", P_WGMMA == 4 ? "wgmma ping-pong" : P_WGMMA == 3 ? "wgmma+tma" : P_WGMMA ? "wgmma" : "mma.sync",
         P_HEAD_MAJOR ? " head-major" : "", D, P_G, P_M, P_WM,
         P_N, P_W, P_S, P, nq, len, splits,
         kvh, qpp, c.rel, c.max_abs, c.nonfinite, c.ok ? "PASS" : "FAIL");
  if (timed) {
    int per_sm = 0;  // what the shared memory and registers allow (the probe's only kernel)
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fwd, K::THREADS, smem));
    printf("  occupancy %d CTAs an SM\n", per_sm);
    probe_time(in, launch, flush);
  }
  return c.ok ? 0 : 1;
}
