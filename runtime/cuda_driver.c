/* cuda_driver.c: opens libcuda.so.1 with dlopen and fills the pat_cuda table, once per
** process. Versioned entry points come from cuGetProcAddress_v2 at the ABI version whose
** signature cuda.h declares; plain dlsym of the exported name is the fallback. */
#include "cuda_driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef CUresult (*get_proc_fn)(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                CUdriverProcAddressQueryResult *status);

/* One entry point: where it goes, the name and ABI version for cuGetProcAddress, and the
** exported symbol to dlsym when cuGetProcAddress is absent or does not know it. */
typedef struct entry {
  size_t offset;     /* offsetof(pat_cuda, member) */
  const char *name;  /* base name for cuGetProcAddress, "cuMemAlloc" */
  int version;       /* ABI version of the signature in pat_cuda, 3020 */
  const char *sym;   /* exported symbol, "cuMemAlloc_v2" */
  int alt_version;   /* older ABI with the same signature, tried second; 0 if none */
  const char *alt_sym;  /* its exported symbol; NULL if none */
} entry;

/* The member names go through cuda.h's macros (cuMemAlloc -> cuMemAlloc_v2) exactly as
** they did in the struct definition, so offsetof finds the renamed member. */
#define E(member, name, ver, sym) {offsetof(pat_cuda, member), name, ver, sym, 0, NULL}
#define E2(member, name, ver, sym, alt_ver, alt_sym) \
  {offsetof(pat_cuda, member), name, ver, sym, alt_ver, alt_sym}

static const entry entries[] = {
  E(cuInit, "cuInit", 2000, "cuInit"),
  E(cuDriverGetVersion, "cuDriverGetVersion", 2020, "cuDriverGetVersion"),
  E(cuGetErrorName, "cuGetErrorName", 6000, "cuGetErrorName"),
  E(cuGetErrorString, "cuGetErrorString", 6000, "cuGetErrorString"),
  E(cuDeviceGet, "cuDeviceGet", 2000, "cuDeviceGet"),
  E(cuDeviceGetCount, "cuDeviceGetCount", 2000, "cuDeviceGetCount"),
  E(cuDeviceGetAttribute, "cuDeviceGetAttribute", 2000, "cuDeviceGetAttribute"),
  E(cuDeviceGetName, "cuDeviceGetName", 2000, "cuDeviceGetName"),
  E(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", 7000, "cuDevicePrimaryCtxRetain"),
  E(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease", 11000,
    "cuDevicePrimaryCtxRelease_v2"),
  E(cuCtxSetCurrent, "cuCtxSetCurrent", 4000, "cuCtxSetCurrent"),
  E(cuCtxGetCurrent, "cuCtxGetCurrent", 4000, "cuCtxGetCurrent"),
  /* 13000 brought a cuCtxSynchronize(CUcontext); pat_cuda declares the (void) one. */
  E(cuCtxSynchronize, "cuCtxSynchronize", 2000, "cuCtxSynchronize"),
  E(cuModuleLoadData, "cuModuleLoadData", 2000, "cuModuleLoadData"),
  E(cuModuleUnload, "cuModuleUnload", 2000, "cuModuleUnload"),
  E(cuModuleGetFunction, "cuModuleGetFunction", 2000, "cuModuleGetFunction"),
  E(cuFuncSetAttribute, "cuFuncSetAttribute", 9000, "cuFuncSetAttribute"),
  E(cuFuncGetAttribute, "cuFuncGetAttribute", 2020, "cuFuncGetAttribute"),
  E(cuLaunchKernel, "cuLaunchKernel", 4000, "cuLaunchKernel"),
  E(cuLaunchKernelEx, "cuLaunchKernelEx", 12000, "cuLaunchKernelEx"),
  E(cuMemAlloc, "cuMemAlloc", 3020, "cuMemAlloc_v2"),
  E(cuMemFree, "cuMemFree", 3020, "cuMemFree_v2"),
  E(cuMemAllocHost, "cuMemAllocHost", 3020, "cuMemAllocHost_v2"),
  E(cuMemFreeHost, "cuMemFreeHost", 2000, "cuMemFreeHost"),
  E(cuMemcpyHtoD, "cuMemcpyHtoD", 3020, "cuMemcpyHtoD_v2"),
  E(cuMemcpyDtoH, "cuMemcpyDtoH", 3020, "cuMemcpyDtoH_v2"),
  E(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync", 3020, "cuMemcpyHtoDAsync_v2"),
  E(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync", 3020, "cuMemcpyDtoHAsync_v2"),
  E(cuMemcpyDtoD, "cuMemcpyDtoD", 3020, "cuMemcpyDtoD_v2"),
  E(cuMemsetD8, "cuMemsetD8", 3020, "cuMemsetD8_v2"),
  E(cuMemsetD32, "cuMemsetD32", 3020, "cuMemsetD32_v2"),
  E(cuStreamCreate, "cuStreamCreate", 2000, "cuStreamCreate"),
  E(cuStreamDestroy, "cuStreamDestroy", 4000, "cuStreamDestroy_v2"),
  E(cuStreamSynchronize, "cuStreamSynchronize", 2000, "cuStreamSynchronize"),
  E(cuStreamWaitEvent, "cuStreamWaitEvent", 3020, "cuStreamWaitEvent"),
  E(cuStreamBeginCapture, "cuStreamBeginCapture", 10010, "cuStreamBeginCapture_v2"),
  E(cuStreamEndCapture, "cuStreamEndCapture", 10000, "cuStreamEndCapture"),
  E(cuGraphInstantiate, "cuGraphInstantiateWithFlags", 11040, "cuGraphInstantiateWithFlags"),
  E(cuGraphLaunch, "cuGraphLaunch", 10000, "cuGraphLaunch"),
  E(cuGraphExecDestroy, "cuGraphExecDestroy", 10000, "cuGraphExecDestroy"),
  E(cuGraphDestroy, "cuGraphDestroy", 10000, "cuGraphDestroy"),
  E(cuEventCreate, "cuEventCreate", 2000, "cuEventCreate"),
  E(cuEventDestroy, "cuEventDestroy", 4000, "cuEventDestroy_v2"),
  E(cuEventRecord, "cuEventRecord", 2000, "cuEventRecord"),
  E(cuEventSynchronize, "cuEventSynchronize", 2000, "cuEventSynchronize"),
  /* _v2 (12.8) is what cuda.h 13 declares; drivers before 12.8 have only the first one. */
  E2(cuEventElapsedTime, "cuEventElapsedTime", 12080, "cuEventElapsedTime_v2", 2000,
     "cuEventElapsedTime"),
};

#undef E
#undef E2

/* The process-wide driver table and the outcome of loading it: written only inside
** load_once (under pthread_once), read-only afterwards. */
static pthread_once_t load_guard = PTHREAD_ONCE_INIT;
static pat_cuda driver;
static int load_status = -1;
static char load_error[512];

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(load_error, sizeof load_error, fmt, ap);
  va_end(ap);
}

/* Resolves one entry into the table; 0, or -1 if neither lookup finds it. */
static int resolve(void *lib, get_proc_fn get_proc, int driver_version, const entry *e)
{
  void *fn = NULL;
  int versions[2] = {e->version, e->alt_version};
  const char *syms[2] = {e->sym, e->alt_sym};
  for (int i = 0; i < 2 && !fn; i++) {
    if (!syms[i])
      continue;
    if (get_proc && versions[i] <= driver_version) {
      CUdriverProcAddressQueryResult qs = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
      if (get_proc(e->name, &fn, versions[i], CU_GET_PROC_ADDRESS_LEGACY_STREAM, &qs) !=
              CUDA_SUCCESS ||
          qs != CU_GET_PROC_ADDRESS_SUCCESS)
        fn = NULL;
    }
    if (!fn)
      fn = dlsym(lib, syms[i]);
  }
  if (!fn)
    return -1;
  memcpy((char *)&driver + e->offset, &fn, sizeof fn);
  return 0;
}

static void load_once(void)
{
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    set_error("no CUDA driver: libcuda.so.1 not found (%s)", why ? why : "dlopen failed");
    return;
  }
  driver.lib = lib;

  /* cuInit first (by its exported name), so cuGetProcAddress runs on an initialised
  ** driver; the error-name functions are needed to report a cuInit failure. */
  CUresult (*init)(unsigned int) = NULL;
  CUresult (*version)(int *) = NULL;
  void *p = dlsym(lib, "cuInit");
  memcpy(&init, &p, sizeof p);
  p = dlsym(lib, "cuDriverGetVersion");
  memcpy(&version, &p, sizeof p);
  p = dlsym(lib, "cuGetErrorName");
  memcpy(&driver.cuGetErrorName, &p, sizeof p);
  p = dlsym(lib, "cuGetErrorString");
  memcpy(&driver.cuGetErrorString, &p, sizeof p);
  if (!init || !version) {
    set_error("no CUDA driver: %s missing in libcuda.so.1", init ? "cuDriverGetVersion" : "cuInit");
    goto fail;
  }
  CUresult r = init(0);
  if (r != CUDA_SUCCESS) {
    const char *name = pat_cuda_error_name(&driver, r);
    const char *desc = NULL;
    if (!driver.cuGetErrorString || driver.cuGetErrorString(r, &desc) != CUDA_SUCCESS || !desc)
      desc = "no description";
    set_error("no usable CUDA device: cuInit(0) failed: %s (%s)", name, desc);
    goto fail;
  }
  r = version(&driver.driver_version);
  if (r != CUDA_SUCCESS) {
    set_error("no CUDA driver: cuDriverGetVersion failed: %s", pat_cuda_error_name(&driver, r));
    goto fail;
  }

  get_proc_fn get_proc = NULL;
  p = dlsym(lib, "cuGetProcAddress_v2");
  memcpy(&get_proc, &p, sizeof p);
  for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
    if (resolve(lib, get_proc, driver.driver_version, &entries[i])) {
      set_error("no CUDA driver: %s (ABI %d) missing in libcuda.so.1 (driver version %d)",
                entries[i].name, entries[i].version, driver.driver_version);
      goto fail;
    }
  }
  load_status = 0;
  return;

fail:
  dlclose(lib);
  memset(&driver, 0, sizeof driver);
}

int pat_cuda_load(const pat_cuda **out, char *err, size_t errlen)
{
  pthread_once(&load_guard, load_once);
  if (load_status != 0) {
    if (out)
      *out = NULL;
    if (err && errlen)
      snprintf(err, errlen, "%s", load_error);
    return -1;
  }
  if (out)
    *out = &driver;
  return 0;
}

const char *pat_cuda_error_name(const pat_cuda *cu, CUresult r)
{
  const char *name = NULL;
  if (cu && cu->cuGetErrorName && cu->cuGetErrorName(r, &name) == CUDA_SUCCESS && name)
    return name;
  return "CUDA_ERROR_<unknown>";
}

int pat_cu_check(const pat_cuda *cu, CUresult r, const char *expr, const char *file, int line,
                 char *err, size_t errlen)
{
  if (r == CUDA_SUCCESS)
    return 0;
  if (!err || !errlen)
    return -1;
  if (!expr)
    expr = "CUDA driver call";
  /* "cu->cuMemAlloc(&d, n)" reads better as "cuMemAlloc(&d, n)". */
  const char *arrow = strstr(expr, "->");
  const char *paren = strchr(expr, '(');
  if (arrow && (!paren || arrow < paren))
    expr = arrow + 2;
  const char *desc = NULL;
  if (!cu || !cu->cuGetErrorString || cu->cuGetErrorString(r, &desc) != CUDA_SUCCESS || !desc)
    desc = "no description";
  snprintf(err, errlen, "%s failed: %s (%s) at %s:%d", expr, pat_cuda_error_name(cu, r), desc,
           file ? file : "?", line);
  return -1;
}
