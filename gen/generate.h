/* generate.h: spec -> CUDA C sources, through the Lua templates. One code path serves the
** patgen CLI (AOT, generated/) and the runtime (JIT). */
#ifndef PAT_GENERATE_H
#define PAT_GENERATE_H

#include "spec.h"

typedef struct pat_kernel_src {
  char name[128];   /* extern "C" kernel name */
  char file[160];   /* file name in generated/: <name>.cu */
  char *source;     /* CUDA C, malloc'd, NUL-terminated */
  int tile;         /* index into spec->tiles; -1 for the merge kernel */
  int gqa;          /* GQA ratio; 0 for the merge kernel */
  int threads;      /* block size */
  int smem_bytes;   /* dynamic shared memory */
  int sm90a;        /* 1: wgmma, built for sm_90a only (arch-specific features) */
} pat_kernel_src;

typedef struct pat_kernel_set {
  int count;
  pat_kernel_src *kernels;  /* forward kernels (tile-major, then GQA), then the merge kernel */
} pat_kernel_set;

/* Renders every kernel of a spec. Returns 0, or -1 with "template:line: message" in err.
** Thread-safe: each call runs its own Lua state. */
int pat_generate(const pat_spec *spec, pat_kernel_set *out, char *err, size_t errlen);
void pat_kernel_set_free(pat_kernel_set *set);

/* The device headers the generated sources #include, for NVRTC: parallel arrays of names
** ("pat/mma.cuh") and NUL-terminated contents, valid for the life of the process. */
int pat_device_headers(const char *const **names, const char *const **sources);

#endif
