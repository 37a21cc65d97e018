// probe_host.h: the host side of the kernel probes (kernel_probe.cu, wgmma/wgmma_probe.cu):
// seeded random inputs over shuffled KV pages, the fp64 CPU reference, the output check and
// the CUDA-event timing. Header-only, for nvcc programs that include it once.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <algorithm>
#include <thread>
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)

static float h2f(unsigned short h) { __half x; memcpy(&x, &h, 2); return __half2float(x); }
static unsigned short f2h(float f) { __half x = __float2half(f); unsigned short h; memcpy(&h, &x, 2); return h; }

// nq queries in groups of qpp that share len tokens of pages; group g's pages are
// perm[g * pages_per_q ...], the page order shuffled as a real cache has it. With all_share,
// every group reads the same pages (one prefix under all queries: the FLOP-bound case).
struct probe_inputs {
  int nq, len, kvh, qpp, D, G, page, qh, pages_per_q, ngroups, npages;
  std::vector<int> perm;
  std::vector<unsigned short> q, k, v;  // q [nq][qh][D]; k, v [npages][page][kvh][D]
};

// Fresh random inputs in [-1, 1] (seed 1234: every probe build sees the same data).
static probe_inputs probe_make_inputs(int nq, int len, int kvh, int qpp, int D, int G, int page,
                                      bool all_share = false)
{
  probe_inputs in;
  in.nq = nq; in.len = len; in.kvh = kvh; in.qpp = qpp; in.D = D; in.G = G; in.page = page;
  in.qh = kvh * G;
  in.pages_per_q = (len + page - 1) / page;
  in.ngroups = (nq + qpp - 1) / qpp;
  in.npages = (all_share ? 1 : in.ngroups) * in.pages_per_q;
  srand(1234);
  in.perm.resize(in.npages);
  for (int i = 0; i < in.npages; i++) in.perm[i] = i;
  for (int i = in.npages - 1; i > 0; i--) std::swap(in.perm[i], in.perm[rand() % (i + 1)]);
  for (int g = 1; all_share && g < in.ngroups; g++)
    in.perm.insert(in.perm.end(), in.perm.begin(), in.perm.begin() + in.pages_per_q);
  const size_t kv_elems = (size_t)in.npages * page * kvh * D;
  in.q.resize((size_t)nq * in.qh * D);
  in.k.resize(kv_elems);
  in.v.resize(kv_elems);
  auto rnd = [] { return (float)rand() / RAND_MAX * 2.f - 1.f; };
  for (auto &x : in.q) x = f2h(rnd());
  for (auto &x : in.k) x = f2h(rnd());
  for (auto &x : in.v) x = f2h(rnd());
  return in;
}

// Attention of every query and head over its group's len tokens, fp64 sums over the fp16
// inputs, softmax scale 1/sqrt(D). Queries are spread over the host's cores: the large probe
// workloads take minutes on one.
static std::vector<float> probe_reference(const probe_inputs &in)
{
  const int D = in.D;
  std::vector<float> ref((size_t)in.nq * in.qh * D), qf(in.q.size()), kf(in.k.size()), vf(in.v.size());
  for (size_t i = 0; i < qf.size(); i++) qf[i] = h2f(in.q[i]);
  for (size_t i = 0; i < kf.size(); i++) kf[i] = h2f(in.k[i]);
  for (size_t i = 0; i < vf.size(); i++) vf[i] = h2f(in.v[i]);
  const double scale = 1.0 / sqrt((double)D);
  auto one_query = [&](int qi) {
    std::vector<double> sc(in.len), o(D);
    const int g = qi / in.qpp;
    for (int h = 0; h < in.qh; h++) {
      auto kv_at = [&](int t) {
        return (((size_t)in.perm[g * in.pages_per_q + t / in.page] * in.page + t % in.page) * in.kvh + h / in.G) * D;
      };
      const float *qv = &qf[((size_t)qi * in.qh + h) * D];
      double mx = -1e300, l = 0;
      for (int t = 0; t < in.len; t++) {
        const float *kv = &kf[kv_at(t)];
        double a = 0;
        for (int d = 0; d < D; d++) a += (double)qv[d] * kv[d];
        sc[t] = a * scale;
        mx = std::max(mx, sc[t]);
      }
      std::fill(o.begin(), o.end(), 0.0);
      for (int t = 0; t < in.len; t++) {
        const double w = exp(sc[t] - mx);
        const float *vv = &vf[kv_at(t)];
        l += w;
        for (int d = 0; d < D; d++) o[d] += w * vv[d];
      }
      for (int d = 0; d < D; d++) ref[((size_t)qi * in.qh + h) * D + d] = (float)(o[d] / l);
    }
  };
  const int nthreads = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int t = 0; t < nthreads; t++)
    pool.emplace_back([&, t] { for (int qi = t; qi < in.nq; qi += nthreads) one_query(qi); });
  for (auto &th : pool) th.join();
  return ref;
}

// The device output against the reference: relative L2 error, largest absolute error, and
// the outputs left poisoned (NaN) or not finite. ok: rel < 5e-3 and every output finite.
struct probe_check {
  double rel, max_abs;
  size_t nonfinite;
  bool ok;
};
static probe_check probe_compare(const std::vector<unsigned short> &out, const std::vector<float> &ref)
{
  double num = 0, den = 0, max_abs = 0;
  size_t bad = 0;
  for (size_t i = 0; i < out.size(); i++) {
    const float x = h2f(out[i]);
    if (!std::isfinite(x)) { bad++; continue; }
    const double e = fabs(x - ref[i]);
    max_abs = std::max(max_abs, e);
    num += e * e;
    den += (double)ref[i] * ref[i];
  }
  const double rel = sqrt(num / den);
  return probe_check{rel, max_abs, bad, rel < 5e-3 && bad == 0};
}

// Median of 50 timed calls of launch() after 10 warm-up calls (CUDA events), printed with the
// unique KV + q + out bytes per second and the attention FLOP rate it means.
template <class F> static void probe_time(const probe_inputs &in, F launch, bool flush = false)
{
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  // With flush, a 256 MiB write before each timed run evicts the inputs from L2 (50 MB on
  // these GPUs), as patbench does: small workloads otherwise run from L2.
  const size_t flush_bytes = (size_t)256 << 20;
  void *fl = nullptr;
  if (flush) CK(cudaMalloc(&fl, flush_bytes));
  for (int i = 0; i < 10; i++) launch();
  std::vector<float> ts;
  for (int i = 0; i < 50; i++) {
    if (flush) CK(cudaMemsetAsync(fl, i & 0xff, flush_bytes));
    CK(cudaEventRecord(e0));
    launch();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    ts.push_back(ms);
  }
  std::sort(ts.begin(), ts.end());
  const double s = ts[25] * 1e-3;
  const double bytes = (double)in.npages * in.page * in.kvh * in.D * 2 * 2 + in.q.size() * 4.0;
  const double flop = 4.0 * in.nq * in.qh * (double)in.len * in.D;
  printf("  time median %.1f us, %.0f GB/s of unique KV+q+out, %.0f TFLOP/s\n", s * 1e6, bytes / s / 1e9,
         flop / s / 1e12);
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  if (fl) CK(cudaFree(fl));
}
