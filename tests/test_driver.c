/* test_driver.c: the run-time loaded CUDA driver: a clear "no CUDA driver" where libcuda is
** absent; where it is present, devices, memory, a failing call's message, and an NVRTC kernel
** launched directly, timed with events and replayed from a captured graph; the
** PAT_SMEM_CARVEOUT setting that contexts pass to the driver. */
#include <criterion/criterion.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "internal.h"
#include "nvrtc.h"
#include "pat.h"

/* Whether this machine has a driver library at all, asked without pat. */
static int libcuda_present(void)
{
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h)
    dlclose(h);
  return h != NULL;
}

Test(driver, load)
{
  const pat_cuda *cu = (const pat_cuda *)1;
  char err[512] = "";
  int rc = pat_cuda_load(&cu, err, sizeof err);
  if (rc != 0) {
    cr_log_info("driver: no GPU branch: %s", err);
    cr_assert_eq(rc, -1);
    cr_assert_null(cu);
    if (!libcuda_present())
      cr_assert(strstr(err, "no CUDA driver"), "%s", err);
    else
      cr_assert(strstr(err, "no CUDA driver") || strstr(err, "no usable CUDA device"), "%s",
                err);
    /* The failure is remembered, message included. */
    char again[512] = "";
    cr_assert_eq(pat_cuda_load(&cu, again, sizeof again), -1);
    cr_assert_str_eq(again, err);
    return;
  }

  cr_assert_not_null(cu);
  int count = 0;
  cr_assert_eq(PAT_CU(cu, cu->cuDeviceGetCount(&count), err, sizeof err), 0, "%s", err);
  cr_assert_gt(count, 0);
  CUdevice dev;
  char name[256] = "";
  int major = 0, minor = 0;
  cr_assert_eq(PAT_CU(cu, cu->cuDeviceGet(&dev, 0), err, sizeof err), 0, "%s", err);
  cr_assert_eq(PAT_CU(cu, cu->cuDeviceGetName(name, sizeof name, dev), err, sizeof err), 0);
  cr_assert_eq(PAT_CU(cu, cu->cuDeviceGetAttribute(
                              &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
                      err, sizeof err), 0);
  cr_assert_eq(PAT_CU(cu, cu->cuDeviceGetAttribute(
                              &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
                      err, sizeof err), 0);
  cr_log_info("driver: GPU branch: %d device(s), %s (sm_%d%d), driver %d", count, name, major,
              minor, cu->driver_version);

  /* A context, an allocation, a copy round trip, and a failing call's message. */
  CUcontext ctx;
  cr_assert_eq(PAT_CU(cu, cu->cuDevicePrimaryCtxRetain(&ctx, dev), err, sizeof err), 0, "%s",
               err);
  cr_assert_eq(PAT_CU(cu, cu->cuCtxSetCurrent(ctx), err, sizeof err), 0, "%s", err);
  CUdeviceptr d;
  unsigned int in[4] = {1, 2, 3, 4}, out[4] = {0};
  cr_assert_eq(PAT_CU(cu, cu->cuMemAlloc(&d, sizeof in), err, sizeof err), 0, "%s", err);
  cr_assert_eq(PAT_CU(cu, cu->cuMemcpyHtoD(d, in, sizeof in), err, sizeof err), 0, "%s", err);
  cr_assert_eq(PAT_CU(cu, cu->cuMemsetD32(d, 7, 2), err, sizeof err), 0, "%s", err);
  cr_assert_eq(PAT_CU(cu, cu->cuMemcpyDtoH(out, d, sizeof out), err, sizeof err), 0, "%s", err);
  cr_assert_eq(PAT_CU(cu, cu->cuCtxSynchronize(), err, sizeof err), 0, "%s", err);
  cr_assert(out[0] == 7 && out[1] == 7 && out[2] == 3 && out[3] == 4);
  cr_assert_eq(PAT_CU(cu, cu->cuMemFree(d), err, sizeof err), 0, "%s", err);

  CUmodule mod;
  cr_assert_eq(PAT_CU(cu, cu->cuModuleLoadData(&mod, "not a cubin"), err, sizeof err), -1);
  cr_log_info("driver: expected failure: %s", err);
  cr_assert(strstr(err, "cuModuleLoadData(&mod, \"not a cubin\") failed: CUDA_ERROR_"), "%s",
            err);
  cr_assert(strstr(err, "test_driver.c:"), "%s", err);
  cr_assert_eq(PAT_CU(cu, cu->cuDevicePrimaryCtxRelease(dev), err, sizeof err), 0, "%s", err);
}

Test(driver, check_formats_without_a_driver)
{
  char err[256] = "";
  cr_assert_eq(pat_cu_check(NULL, CUDA_SUCCESS, "cuInit(0)", "x.c", 1, err, sizeof err), 0);
  cr_assert_str_eq(err, "");
  cr_assert_eq(pat_cu_check(NULL, CUDA_ERROR_INVALID_VALUE, "cu->cuMemAlloc(&d, n)", "x.c", 12,
                            err, sizeof err), -1);
  cr_assert_str_eq(err, "cuMemAlloc(&d, n) failed: CUDA_ERROR_<unknown> (no description) at "
                        "x.c:12");
  cr_assert_str_eq(pat_cuda_error_name(NULL, CUDA_ERROR_INVALID_VALUE), "CUDA_ERROR_<unknown>");
  cr_assert_eq(pat_cu_check(NULL, CUDA_ERROR_INVALID_VALUE, "cuInit(0)", "x.c", 1, NULL, 0), -1);
}

/* PAT_SMEM_CARVEOUT's values; a bad one is refused by pat_context_create before the spec or
** the driver is read (so on any machine), with the variable named. */
Test(driver, smem_carveout_setting)
{
  static const struct { const char *s; int percent; } good[] = {
    {NULL, -1}, {"", -1}, {"default", -1}, {"max", 100}, {"0", 0}, {"64", 64}, {"100", 100},
  };
  char err[256];
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    int v = -7;
    err[0] = 0;
    cr_assert_eq(pat_carveout_parse(good[i].s, &v, err, sizeof err), 0, "%s: %s", good[i].s, err);
    cr_assert_eq(v, good[i].percent, "%s: %d", good[i].s, v);
  }
  static const char *const bad[] = {"101", "-1", "lots", "50%", "5 ", "MAX", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int v = 7;
    cr_assert_eq(pat_carveout_parse(bad[i], &v, err, sizeof err), -1, "%s accepted", bad[i]);
    cr_assert(strstr(err, "PAT_SMEM_CARVEOUT=") && strstr(err, bad[i]), "%s", err);
  }

  setenv("PAT_SMEM_CARVEOUT", "lots", 1);
  pat_context_desc d = {.spec_path = "no/such/spec.yaml", .lazy = 1};
  pat_context *ctx = (pat_context *)&d;
  char msg[512] = "";
  cr_assert_eq(pat_context_create(&d, &ctx, msg, sizeof msg), PAT_ERR_INVALID_ARG, "%s", msg);
  cr_assert_null(ctx);
  cr_assert_str_eq(msg, "PAT_SMEM_CARVEOUT=lots: expected default, max or a percentage 0-100");
  unsetenv("PAT_SMEM_CARVEOUT");
}

static const char add_source[] =
    "extern \"C\" __global__ void pat_add(float *x, float v, int n)\n"
    "{\n"
    "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  if (i < n) x[i] += v;\n"
    "}\n";

Test(driver, launch_and_graph)
{
  const pat_cuda *cu;
  char err[8192] = "";
  if (pat_cuda_load(&cu, err, sizeof err)) {
    cr_log_info("driver: launch skipped: %s", err);
    cr_skip_test("%s", err);
  }
#define CHECK(call) cr_assert_eq(PAT_CU(cu, call, err, sizeof err), 0, "%s", err)
  CUdevice dev;
  CUcontext ctx;
  int major = 0, minor = 0;
  CHECK(cu->cuDeviceGet(&dev, 0));
  CHECK(cu->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
  CHECK(cu->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
  CHECK(cu->cuDevicePrimaryCtxRetain(&ctx, dev));
  CHECK(cu->cuCtxSetCurrent(ctx));

  pat_nvrtc_job job = {.source = add_source, .kernel_name = "pat_add", .arch = major * 10 + minor};
  pat_nvrtc_result res;
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), 0, "%s", err);
  CUmodule mod;
  CUfunction fn;
  CHECK(cu->cuModuleLoadData(&mod, res.cubin));
  pat_nvrtc_result_free(&res);
  CHECK(cu->cuModuleGetFunction(&fn, mod, "pat_add"));
  int regs = 0;
  CHECK(cu->cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn));
  cr_assert_gt(regs, 0);
  CHECK(cu->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 0));

  enum { N = 1000 };
  float *host = NULL;
  CUdeviceptr d;
  CUstream s;
  CUevent e0, e1;
  CHECK(cu->cuMemAllocHost((void **)&host, N * sizeof *host));
  CHECK(cu->cuMemAlloc(&d, N * sizeof *host));
  CHECK(cu->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  CHECK(cu->cuEventCreate(&e0, CU_EVENT_DEFAULT));
  CHECK(cu->cuEventCreate(&e1, CU_EVENT_DEFAULT));
  for (int i = 0; i < N; i++)
    host[i] = (float)i;
  CHECK(cu->cuMemsetD8(d, 0, N * sizeof *host));
  CHECK(cu->cuMemcpyHtoDAsync(d, host, N * sizeof *host, s));

  float v = 1.0f;
  int n = N;
  void *args[] = {&d, &v, &n};
  CHECK(cu->cuEventRecord(e0, s));
  CHECK(cu->cuLaunchKernel(fn, (N + 127) / 128, 1, 1, 128, 1, 1, 0, s, args, NULL));
  CHECK(cu->cuEventRecord(e1, s));
  CHECK(cu->cuStreamWaitEvent(s, e1, 0));

  /* Capture two more launches into a graph and replay it twice: +1 + 2 * (2 + 2). */
  CUgraph graph;
  CUgraphExec exec;
  float v2 = 2.0f;
  void *args2[] = {&d, &v2, &n};
  CHECK(cu->cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
  CHECK(cu->cuLaunchKernel(fn, (N + 127) / 128, 1, 1, 128, 1, 1, 0, s, args2, NULL));
  CHECK(cu->cuLaunchKernel(fn, (N + 127) / 128, 1, 1, 128, 1, 1, 0, s, args2, NULL));
  CHECK(cu->cuStreamEndCapture(s, &graph));
  CHECK(cu->cuGraphInstantiate(&exec, graph, 0));
  CHECK(cu->cuGraphLaunch(exec, s));
  CHECK(cu->cuGraphLaunch(exec, s));
  CHECK(cu->cuMemcpyDtoHAsync(host, d, N * sizeof *host, s));
  CHECK(cu->cuStreamSynchronize(s));
  CHECK(cu->cuEventSynchronize(e1));
  float ms = -1.0f;
  CHECK(cu->cuEventElapsedTime(&ms, e0, e1));
  cr_assert_geq(ms, 0.0f);
  for (int i = 0; i < N; i++)
    cr_assert_float_eq(host[i], (float)i + 9.0f, 0.0f, "x[%d] = %f", i, (double)host[i]);

  CUdeviceptr d2;
  CHECK(cu->cuMemAlloc(&d2, N * sizeof *host));
  CHECK(cu->cuMemcpyDtoD(d2, d, N * sizeof *host));
  CHECK(cu->cuCtxSynchronize());
  CUcontext cur;
  CHECK(cu->cuCtxGetCurrent(&cur));
  cr_assert_eq(cur, ctx);
  cr_log_info("driver: sm_%d%d kernel launched, graph replayed, first launch %.3f ms", major,
              minor, (double)ms);

  CHECK(cu->cuGraphExecDestroy(exec));
  CHECK(cu->cuGraphDestroy(graph));
  CHECK(cu->cuEventDestroy(e0));
  CHECK(cu->cuEventDestroy(e1));
  CHECK(cu->cuStreamDestroy(s));
  CHECK(cu->cuMemFree(d));
  CHECK(cu->cuMemFree(d2));
  CHECK(cu->cuMemFreeHost(host));
  CHECK(cu->cuModuleUnload(mod));
  CHECK(cu->cuDevicePrimaryCtxRelease(dev));
#undef CHECK
}
