/* nvrtc.h: CUDA C -> CUBIN through NVRTC, with the program log and the ptxas resource
** report (registers, spills, stack, static shared memory) parsed out of it. */
#ifdef PAT_NVRTC_H
/* Reached again as <nvrtc.h> because -Iruntime precedes CUDA's include directory on the
** search path: CUDA's header of the same name is the one wanted, so pass it on. */
#include_next <nvrtc.h>
#else
#define PAT_NVRTC_H

#include <stddef.h>

/* One compilation. Nothing here is copied or freed by pat_nvrtc_compile. */
typedef struct pat_nvrtc_job {
  const char *source;        /* CUDA C, NUL-terminated */
  const char *program_name;  /* name in messages and #line, e.g. "kernel.cu"; NULL: "kernel.cu" */
  const char *kernel_name;   /* the extern "C" kernel whose resources are reported; NULL: the
                                first entry function in the log */
  int arch;                  /* compute capability x10: 80, 90 -> --gpu-architecture=sm_80 */
  int arch_specific;         /* 1: the arch-specific target (sm_90a: wgmma), runs on that arch only */
  const char *const *options;  /* [num_options] extra NVRTC options, after the fixed ones */
  int num_options;
  const char *const *header_names;    /* [num_headers] include names, "pat/mma.cuh" */
  const char *const *header_sources;  /* [num_headers] their NUL-terminated contents */
  int num_headers;
} pat_nvrtc_job;

/* What a successful compilation gives back. Resource fields are -1 where the log does not
** report them. */
typedef struct pat_nvrtc_result {
  void *cubin;             /* ELF image, malloc'd, owned by the caller */
  size_t cubin_size;       /* bytes in cubin */
  char *log;               /* the full program log, malloc'd, NUL-terminated (may be "") */
  int registers;           /* registers per thread */
  int spill_store_bytes;   /* bytes of spill stores */
  int spill_load_bytes;    /* bytes of spill loads */
  int stack_frame_bytes;   /* bytes of stack frame per thread */
  int static_smem_bytes;   /* bytes of static shared memory per block */
} pat_nvrtc_result;

/* Options every compilation gets, ahead of job->options and after --gpu-architecture.
** --ptxas-options=-v puts the resource report in the log. --no-cache (NVRTC 12.9+) turns off
** NVRTC's use of the driver's compute cache (~/.nv/ComputeCache, only where libcuda is
** present): a hit there skips ptxas and leaves the log empty, and pat caches CUBINs itself. */
#define PAT_NVRTC_FIXED_OPTIONS \
  "-std=c++17", "-default-device", "--ptxas-options=-v", "-lineinfo", "--no-cache"

/* Compiles job->source for sm_<arch> to a CUBIN. On success fills *res (release it with
** pat_nvrtc_result_free) and returns 0. On failure returns -1, leaves *res empty (nothing
** to free) and writes to err, truncated to errlen: the kernel, the arch, the options used
** and the full NVRTC log. Thread-safe: concurrent calls compile independent programs. */
int pat_nvrtc_compile(const pat_nvrtc_job *job, pat_nvrtc_result *res, char *err, size_t errlen);

/* Frees what pat_nvrtc_compile put in res and clears it. NULL, or an empty result, is fine. */
void pat_nvrtc_result_free(pat_nvrtc_result *res);

/* Writes every option a compilation of job uses, space-separated, in the order NVRTC gets
** them (e.g. "--gpu-architecture=sm_90 -std=c++17 ... <job options>"), as snprintf does:
** returns the full length, writes at most n bytes including the NUL. Use it for cache keys
** and messages. Thread-safe. */
size_t pat_nvrtc_options_string(const pat_nvrtc_job *job, char *buf, size_t n);

/* The linked NVRTC's version, e.g. 13 and 0. Returns 0, or -1 if NVRTC fails.
** Thread-safe. */
int pat_nvrtc_version(int *major, int *minor);

/* Parses the ptxas -v lines of an NVRTC log into the resource fields of res (the other
** fields are not touched), for kernel (NULL: the first entry function). Fields the log does
** not report are set to -1. Exposed for tests. Thread-safe. */
void pat_nvrtc_parse_resources(const char *log, const char *kernel, pat_nvrtc_result *res);

#endif
