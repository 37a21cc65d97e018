// leaf_heads.cu: how fast 1-page leaf packs stream when a CTA takes one kv head (the library's
// grid today: packs x kv heads) or H heads of its page (H = kv heads: the design in
// bench/NOTES.md). Every variant keeps the library's metadata chain (pack -> page id -> K/V,
// three dependent reads) and replaces the attention math by a sum of the head's K and V, so
// it reads the memory side only: an upper bound on what fewer, longer leaf CTAs can gain.
// Each (query, head) sum is checked against the host's; inputs are a hash of the element
// index (never zero), pages drawn at random from a 2 GiB pool, a new slice of pages per run
// so that L2 holds none of them.
// Build: nvcc -std=c++17 -O2 -arch=sm_90 bench/leaf_heads/leaf_heads.cu -o build/leaf_heads
// Run:   build/leaf_heads [NQ ...]   (default 256 1024 2048; 8 kv heads, head_dim 128, page 32)
#include "../probe_host.h"  // CK, the CUDA headers, the C++ library

namespace {
constexpr int D = 128, PAGE = 32, KVH = 8, GROUP = 64;  // GROUP: threads per head, as the m16 tile
constexpr int HEAD_BYTES = PAGE * D * 2;                // one head's K (or V) of a page: 8 KB
constexpr int CHUNKS = HEAD_BYTES / 16;                 // 16-byte copies per head's K (or V)
constexpr long long POOL_PAGES = 16384;                 // 1 GiB of K, 1 GiB of V
constexpr int RUNS = 50, WARMUP = 5, SLICES = 8;

// The value of element i of K (salt 0) or V (salt 1): a hash in [-1, 1), never 0.
__host__ __device__ inline float elem_value(long long i, unsigned salt)
{
  unsigned x = (unsigned)i * 2654435761u ^ (unsigned)(i >> 32) * 40503u ^ salt * 0x9e3779b9u;
  x ^= x >> 15; x *= 2246822519u; x ^= x >> 13;
  return ((x >> 9) + 0.5f) * (2.f / 8388608.f) - 1.f;
}

__global__ void fill(__half *p, long long n, unsigned salt)
{
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    p[i] = __float2half(elem_value(i, salt));
}

__device__ inline void cp_async16(unsigned dst, const void *src)
{
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}

// H heads a CTA: grid (packs, KVH / H), GROUP threads a head. packs[p] -> index into pages ->
// the page id, then K and V of the CTA's heads into shared memory at once, then sums.
template <int H>
__global__ void __launch_bounds__(GROUP * H) leaf(const int *packs, const int *pages, const __half *k,
                                                  const __half *v, float *out)
{
  extern __shared__ __align__(16) unsigned char smem[];
  const int t = threadIdx.x % GROUP, hh = threadIdx.x / GROUP, h = blockIdx.y * H + hh;
  const int page = pages[packs[blockIdx.x]];
  const unsigned sk = (unsigned)__cvta_generic_to_shared(smem) + hh * 2 * HEAD_BYTES, sv = sk + HEAD_BYTES;
  for (int i = t; i < CHUNKS; i += GROUP) {
    const long long at = (((long long)page * PAGE + i / (D / 8)) * KVH + h) * D + i % (D / 8) * 8;  // elements
    cp_async16(sk + i * 16, k + at);
    cp_async16(sv + i * 16, v + at);
  }
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
  __syncthreads();
  const __half2 *hk = reinterpret_cast<const __half2 *>(smem + hh * 2 * HEAD_BYTES);
  float s = 0.f;
  for (int i = t; i < HEAD_BYTES / 4; i += GROUP) {  // K and V, half2 pairs
    const float2 a = __half22float2(hk[i]), b = __half22float2(hk[i + HEAD_BYTES / 4]);
    s += a.x + a.y + b.x + b.y;
  }
  for (int o = 16; o; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  __shared__ float part[H][GROUP / 32];
  if (threadIdx.x % 32 == 0) part[hh][t / 32] = s;
  __syncthreads();
  if (t == 0) {
    float total = 0.f;
    for (int w = 0; w < GROUP / 32; w++) total += part[hh][w];
    out[blockIdx.x * KVH + h] = total;
  }
}

// The host's sums of slice 0: query q reads page pages[q].
std::vector<double> reference(int nq, const std::vector<int> &pages)
{
  std::vector<double> want((size_t)nq * KVH);
  for (int q = 0; q < nq; q++)
    for (int h = 0; h < KVH; h++) {
      double s = 0;
      for (int r = 0; r < PAGE; r++)
        for (int d = 0; d < D; d++) {
          const long long at = (((long long)pages[q] * PAGE + r) * KVH + h) * D + d;
          s += (double)__half2float(__float2half(elem_value(at, 0))) + __half2float(__float2half(elem_value(at, 1)));
        }
      want[(size_t)q * KVH + h] = s;
    }
  return want;
}

template <int H>
void run(int nq, const int *d_packs, const int *d_pages, const __half *dk, const __half *dv, float *d_out,
         const std::vector<double> &want, double copy_tbps)
{
  const int smem = H * 2 * HEAD_BYTES;
  CK(cudaFuncSetAttribute(leaf<H>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(nq, KVH / H);
  // Check slice 0 against the host's sums, the output poisoned first.
  CK(cudaMemset(d_out, 0xff, (size_t)nq * KVH * sizeof(float)));
  leaf<H><<<grid, GROUP * H, smem>>>(d_packs, d_pages, dk, dv, d_out);
  CK(cudaGetLastError());
  std::vector<float> got((size_t)nq * KVH);
  CK(cudaMemcpy(got.data(), d_out, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
  int bad = 0;
  for (size_t i = 0; i < got.size(); i++)
    if (!(std::fabs(got[i] - want[i]) <= 1e-3 * (std::fabs(want[i]) + 64))) bad++;
  // Time: each run on the next slice of packs (fresh pages), CUDA events around each launch.
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> us;
  for (int i = 0; i < WARMUP + RUNS; i++) {
    const int *packs = d_packs + (size_t)(i % SLICES) * nq;
    CK(cudaEventRecord(e0));
    leaf<H><<<grid, GROUP * H, smem>>>(packs, d_pages, dk, dv, d_out);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (i >= WARMUP) us.push_back(ms * 1000.f);
  }
  std::sort(us.begin(), us.end());
  const double bytes = (double)nq * KVH * 2 * HEAD_BYTES, med = us[us.size() / 2];
  printf("%5d queries  %d head%s a CTA  %6d CTAs  %7.1f us (min %7.1f)  %5.2f TB/s  %3.0f%% of copy  %s\n", nq, H,
         H > 1 ? "s" : " ", nq * (KVH / H), med, us[0], bytes / med / 1e6, 100 * bytes / med / 1e6 / copy_tbps,
         bad ? "WRONG" : "ok");
  if (bad) printf("  %d of %d sums wrong\n", bad, nq * KVH);
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
}
}  // namespace

int main(int argc, char **argv)
{
  std::vector<int> nqs;
  for (int i = 1; i < argc; i++) nqs.push_back(atoi(argv[i]));
  if (nqs.empty()) nqs = {256, 1024, 2048};
  const long long elems = POOL_PAGES * PAGE * KVH * D;
  __half *dk, *dv;
  CK(cudaMalloc(&dk, elems * 2));
  CK(cudaMalloc(&dv, elems * 2));
  fill<<<1024, 256>>>(dk, elems, 0);
  fill<<<1024, 256>>>(dv, elems, 1);
  CK(cudaDeviceSynchronize());
  // Copy bandwidth (read + written) of a 1 GiB device-to-device copy, median of 5.
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms(5);
  for (auto &m : ms) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpy(dv, dk, elems * 2, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&m, e0, e1));
  }
  fill<<<1024, 256>>>(dv, elems, 1);
  std::sort(ms.begin(), ms.end());
  const double copy_tbps = 2.0 * elems * 2 / (ms[2] * 1e-3) / 1e12;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("%s, copy %.2f TB/s; 1-page leaves, %d kv heads, head_dim %d, fp16: K and V of a head 16 KB\n", prop.name,
         copy_tbps, KVH, D);
  for (int nq : nqs) {
    if ((long long)nq * SLICES > POOL_PAGES) { fprintf(stderr, "leaf_heads: at most %lld queries\n", POOL_PAGES / SLICES); return 2; }
    // pages: a random permutation of the pool; slice s of packs points at its own nq pages
    std::vector<int> perm(POOL_PAGES), packs((size_t)nq * SLICES);
    for (int i = 0; i < POOL_PAGES; i++) perm[i] = i;
    srand(1234);
    for (long long i = POOL_PAGES - 1; i > 0; i--) std::swap(perm[i], perm[rand() % (i + 1)]);
    for (size_t i = 0; i < packs.size(); i++) packs[i] = (int)i;
    int *d_packs, *d_pages;
    float *d_out;
    CK(cudaMalloc(&d_packs, packs.size() * sizeof(int)));
    CK(cudaMalloc(&d_pages, packs.size() * sizeof(int)));
    CK(cudaMalloc(&d_out, (size_t)nq * KVH * sizeof(float)));
    CK(cudaMemcpy(d_packs, packs.data(), packs.size() * sizeof(int), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_pages, perm.data(), packs.size() * sizeof(int), cudaMemcpyHostToDevice));
    const std::vector<double> want = reference(nq, perm);
    run<1>(nq, d_packs, d_pages, dk, dv, d_out, want, copy_tbps);
    run<2>(nq, d_packs, d_pages, dk, dv, d_out, want, copy_tbps);
    run<4>(nq, d_packs, d_pages, dk, dv, d_out, want, copy_tbps);
    run<8>(nq, d_packs, d_pages, dk, dv, d_out, want, copy_tbps);
    CK(cudaFree(d_packs));
    CK(cudaFree(d_pages));
    CK(cudaFree(d_out));
  }
  CK(cudaFree(dk));
  CK(cudaFree(dv));
  return 0;
}
