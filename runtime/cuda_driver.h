/* cuda_driver.h: the CUDA driver API, opened at run time from libcuda.so.1 (never linked),
** so that the library and the CPU tests work on machines without a GPU driver. */
#ifndef PAT_CUDA_DRIVER_H
#define PAT_CUDA_DRIVER_H

#include <stddef.h>
#include <cuda.h>

/* The driver entry points pat uses. Member names are the cuda.h names; cuda.h maps some of
** them to their current ABI with macros (cuMemAlloc -> cuMemAlloc_v2, cuGraphInstantiate ->
** cuGraphInstantiateWithFlags, ...), which renames the member the same way in every file
** that includes this header, so `cu->cuMemAlloc(&p, n)` calls the ABI that cuda.h declares.
** Stream functions are the legacy-default-stream variants: pat always passes a stream. */
typedef struct pat_cuda {
  void *lib;  /* dlopen handle of libcuda.so.1, open for the life of the process */
  int driver_version;  /* cuDriverGetVersion, e.g. 13000 */

  CUresult (*cuInit)(unsigned int flags);
  CUresult (*cuDriverGetVersion)(int *version);
  CUresult (*cuGetErrorName)(CUresult r, const char **name);
  CUresult (*cuGetErrorString)(CUresult r, const char **desc);

  CUresult (*cuDeviceGet)(CUdevice *dev, int ordinal);
  CUresult (*cuDeviceGetCount)(int *count);
  CUresult (*cuDeviceGetAttribute)(int *value, CUdevice_attribute attrib, CUdevice dev);
  CUresult (*cuDeviceGetName)(char *name, int len, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice dev);
  CUresult (*cuCtxSetCurrent)(CUcontext ctx);
  CUresult (*cuCtxGetCurrent)(CUcontext *ctx);
  CUresult (*cuCtxSynchronize)(void);

  CUresult (*cuModuleLoadData)(CUmodule *mod, const void *image);
  CUresult (*cuModuleUnload)(CUmodule mod);
  CUresult (*cuModuleGetFunction)(CUfunction *fn, CUmodule mod, const char *name);
  CUresult (*cuFuncSetAttribute)(CUfunction fn, CUfunction_attribute attrib, int value);
  CUresult (*cuFuncGetAttribute)(int *value, CUfunction_attribute attrib, CUfunction fn);
  CUresult (*cuLaunchKernel)(CUfunction fn, unsigned int gx, unsigned int gy, unsigned int gz,
                             unsigned int bx, unsigned int by, unsigned int bz,
                             unsigned int smem_bytes, CUstream stream, void **params,
                             void **extra);
  CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *config, CUfunction fn, void **params, void **extra);

  CUresult (*cuMemAlloc)(CUdeviceptr *dptr, size_t bytes);
  CUresult (*cuMemFree)(CUdeviceptr dptr);
  CUresult (*cuMemAllocHost)(void **pp, size_t bytes);
  CUresult (*cuMemFreeHost)(void *p);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr dst, const void *src, size_t bytes);
  CUresult (*cuMemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes);
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t bytes, CUstream s);
  CUresult (*cuMemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t bytes, CUstream s);
  CUresult (*cuMemcpyDtoD)(CUdeviceptr dst, CUdeviceptr src, size_t bytes);
  CUresult (*cuMemsetD8)(CUdeviceptr dst, unsigned char value, size_t count);
  CUresult (*cuMemsetD32)(CUdeviceptr dst, unsigned int value, size_t count);

  CUresult (*cuStreamCreate)(CUstream *s, unsigned int flags);
  CUresult (*cuStreamDestroy)(CUstream s);
  CUresult (*cuStreamSynchronize)(CUstream s);
  CUresult (*cuStreamWaitEvent)(CUstream s, CUevent e, unsigned int flags);
  CUresult (*cuStreamBeginCapture)(CUstream s, CUstreamCaptureMode mode);
  CUresult (*cuStreamEndCapture)(CUstream s, CUgraph *graph);
  CUresult (*cuGraphInstantiate)(CUgraphExec *exec, CUgraph graph, unsigned long long flags);
  CUresult (*cuGraphLaunch)(CUgraphExec exec, CUstream s);
  CUresult (*cuGraphExecDestroy)(CUgraphExec exec);
  CUresult (*cuGraphDestroy)(CUgraph graph);

  CUresult (*cuEventCreate)(CUevent *e, unsigned int flags);
  CUresult (*cuEventDestroy)(CUevent e);
  CUresult (*cuEventRecord)(CUevent e, CUstream s);
  CUresult (*cuEventSynchronize)(CUevent e);
  CUresult (*cuEventElapsedTime)(float *ms, CUevent start, CUevent end);
} pat_cuda;

/* Opens libcuda.so.1, resolves every entry point above and calls cuInit(0), once per
** process. On success *out points to the shared, read-only table (never freed) and 0 is
** returned. On failure returns -1 and writes a message to err (always NUL-terminated when
** errlen > 0): "no CUDA driver: libcuda.so.1 not found (<dlerror>)", "no CUDA driver:
** <symbol> missing in libcuda.so.1" or "no usable CUDA device: cuInit(0) failed: NAME
** (description)". A failure is also remembered: later calls fail the same way.
** Thread-safe (pthread_once). */
int pat_cuda_load(const pat_cuda **out, char *err, size_t errlen);

/* The name of a driver status ("CUDA_ERROR_OUT_OF_MEMORY"), or "CUDA_ERROR_<unknown>" when
** the driver does not know it or cu is NULL. The string is static. Thread-safe. */
const char *pat_cuda_error_name(const pat_cuda *cu, CUresult r);

/* Returns 0 when r is CUDA_SUCCESS; otherwise writes "<expr> failed: NAME (description) at
** file:line" to err (NUL-terminated when errlen > 0) and returns -1. A leading "cu->" style
** handle is dropped from expr, so the message starts with the driver function's name.
** Thread-safe. */
int pat_cu_check(const pat_cuda *cu, CUresult r, const char *expr, const char *file, int line,
                 char *err, size_t errlen);

/* Checks one driver call: `if (PAT_CU(cu, cu->cuMemAlloc(&d, n), err, errlen)) goto fail;`.
** Evaluates to 0 on success, -1 (message in err) on failure. */
#define PAT_CU(cu, call, err, errlen) \
  pat_cu_check((cu), (call), #call, __FILE__, __LINE__, (err), (errlen))

#endif
