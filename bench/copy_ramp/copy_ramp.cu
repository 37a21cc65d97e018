// copy_ramp.cu: how long the GPU takes to move a given number of bytes, from a few MB to 1 GiB.
// The benchmarks' floor divides a workload's unique bytes by the rate of a 1 GiB copy; a small
// tree reads only 30-70 MB, and this says what a plain device-to-device copy (cudaMemcpyAsync)
// and a plain read of that many bytes (a grid-stride sum of 16-byte loads, one or four in flight
// a thread) take: the part of a small tree's distance to the floor that no kernel of any design
// removes.
// Each run reads a new slice of a 4 GiB pool (L2 holds none of it); the read kernel's sum is
// checked against the host's. Times: CUDA events, 5 warm-up runs, median of 50.
// Build: nvcc -std=c++17 -O2 -arch=sm_90 bench/copy_ramp/copy_ramp.cu -o build/copy_ramp
// Run:   build/copy_ramp [MB ...]   (default 8 16 33 67 134 268 536 1024)
#include "../probe_host.h"  // CK, the CUDA headers, the C++ library

namespace {
constexpr long long POOL = 4ll << 30;  // bytes; slices of it rotate so that L2 never helps
constexpr int RUNS = 50, WARMUP = 5;

// Every 16-byte word holds its own index in each 4-byte lane (never zero but for word 0).
__global__ void fill(uint4 *p, long long n)
{
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    p[i] = make_uint4((unsigned)i, (unsigned)i + 1, (unsigned)i + 2, (unsigned)i + 3);
}

// Adds the CTA's threads' s to *out. One atomic a CTA, not a warp: thousands of same-address
// atomics would take microseconds of their own at the small sizes this is meant to read.
__device__ void cta_add(unsigned long long s, unsigned long long *out)
{
  __shared__ unsigned long long warp_sum[32];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) warp_sum[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < blockDim.x / 32; w++) s += warp_sum[w];
    atomicAdd(out, s);
  }
}

// Sum of every 4-byte lane of n words from p, into *out (wrapping 64-bit integer sum).
__global__ void read_sum(const uint4 *__restrict__ p, long long n, unsigned long long *out)
{
  unsigned long long s = 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const uint4 w = __ldcs(p + i);
    s += (unsigned long long)w.x + w.y + w.z + w.w;
  }
  cta_add(s, out);
}

// The same sum with four independent 16-byte loads in flight a thread: a CTA takes chunks of
// 4 x blockDim words (word k x blockDim + tid of its chunk in load k), so that even an 8 MB
// read has all of its loads issued at once, and its time is the GPU's, not the loop's.
__global__ void read_sum4(const uint4 *__restrict__ p, long long n, unsigned long long *out)
{
  const long long chunk = 4ll * blockDim.x, chunks = (n + chunk - 1) / chunk;
  unsigned long long s = 0;
  for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
    const long long i = c * chunk + threadIdx.x;
    uint4 w[4];
#pragma unroll
    for (int k = 0; k < 4; k++) w[k] = i + k * blockDim.x < n ? __ldcs(p + i + k * blockDim.x) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int k = 0; k < 4; k++) s += (unsigned long long)w[k].x + w[k].y + w[k].z + w[k].w;
  }
  cta_add(s, out);
}

float median(std::vector<float> v)
{
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char **argv)
{
  std::vector<long long> mbs;
  for (int i = 1; i < argc; i++) mbs.push_back(atoll(argv[i]));
  if (mbs.empty()) mbs = {8, 16, 33, 67, 134, 268, 536, 1024};
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  uint4 *pool, *dst;
  unsigned long long *sum;
  CK(cudaMalloc(&pool, POOL));
  CK(cudaMalloc(&dst, 1ll << 30));
  CK(cudaMalloc(&sum, sizeof *sum));
  fill<<<4 * prop.multiProcessorCount, 256>>>(pool, POOL / 16);
  CK(cudaGetLastError());
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  const int grid = 8 * prop.multiProcessorCount;  // enough loads in flight to cover DRAM latency
  printf("%s: %d SMs; times: median of %d runs, us\n", prop.name, prop.multiProcessorCount, RUNS);
  printf("%8s %12s %10s %12s %10s %12s %10s\n", "MB", "memcpy us", "TB/s r+w", "read us", "TB/s read",
         "read4 us", "TB/s read4");
  for (long long mb : mbs) {
    const long long bytes = mb << 20, words = bytes / 16, slices = POOL / bytes;
    if (mb <= 0 || mb > 1024) { fprintf(stderr, "copy_ramp: %lld MB: sizes go from 1 to 1024\n", mb); return 1; }
    std::vector<float> tc, tr, tr4;
    // One read of `words` words from src by `kernel`, timed into t (after the warm-up); the
    // first timed run's sum is checked: lanes i..i+3 of words first..first+words-1, mod 2^64.
    auto timed_read = [&](decltype(&read_sum) kernel, const uint4 *src, int r, std::vector<float> &t) {
      float ms;
      CK(cudaMemsetAsync(sum, 0, sizeof *sum));
      CK(cudaEventRecord(a));
      kernel<<<grid, 256>>>(src, words, sum);
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      CK(cudaGetLastError());
      CK(cudaEventElapsedTime(&ms, a, b));
      if (r >= WARMUP) t.push_back(ms * 1000.f);
      if (r == WARMUP) {
        unsigned long long got, want = 0;
        CK(cudaMemcpy(&got, sum, sizeof got, cudaMemcpyDeviceToHost));
        const long long first = (src - pool);
        for (long long i = first; i < first + words; i++) want += 4ull * (unsigned)i + 6;
        if (got != want) {
          fprintf(stderr, "copy_ramp: %lld MB: read sum %llu, expected %llu\n", mb, got, want);
          exit(1);
        }
      }
    };
    for (int r = 0; r < WARMUP + RUNS; r++) {
      const long long slice = r % slices;  // a slice not read in the run before
      const uint4 *src = pool + slice * words;
      float ms;
      CK(cudaEventRecord(a));
      CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      CK(cudaEventElapsedTime(&ms, a, b));
      if (r >= WARMUP) tc.push_back(ms * 1000.f);
      // the reads take slices the copy and each other did not just touch
      timed_read(read_sum, pool + ((slice + slices / 2) % slices) * words, r, tr);
      timed_read(read_sum4, pool + ((slice + 3 * slices / 4) % slices) * words, r, tr4);
    }
    const float c = median(tc), rd = median(tr), rd4 = median(tr4);
    printf("%8lld %12.1f %10.2f %12.1f %10.2f %12.1f %10.2f\n", mb, c, 2e-6 * bytes / c, rd, 1e-6 * bytes / rd,
           rd4, 1e-6 * bytes / rd4);
  }
  return 0;
}
