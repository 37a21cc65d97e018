/* internal.h: what the runtime's files share: the context and plan structs. Not public. */
#ifndef PAT_INTERNAL_H
#define PAT_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>

#include "cuda_driver.h"
#include "generate.h"
#include "pat.h"
#include "plan.h"
#include "sched.h"
#include "spec.h"

enum { PAT_MAX_STREAMS = 8, PAT_ERR_LEN = 65536 };

typedef struct pat_kernel {
  CUmodule module;  /* NULL until compiled and loaded */
  CUfunction fn;
} pat_kernel;

struct pat_context {
  const pat_cuda *cu;      /* the driver table (process-wide) */
  CUdevice dev;
  CUcontext cuctx;         /* the device's primary context, retained */
  int device, arch, num_sms;
  char device_name[128];
  pat_spec spec;
  char tuning[PAT_ERR_LEN];  /* what became of the tuning table (pat_context_tuning) */
  pat_kernel_set src;      /* generated sources; kernels[i] matches src.kernels[i] */
  pat_kernel *kernels;
  char cache_dir[1024];    /* "" when the disk cache is off */
  int progress;
  pthread_mutex_t jit_lock;  /* guards lazy compilation */
  pthread_mutex_t plan_lock;  /* guards plan_scratch and plan_scratch_busy */
  pat_sched_scratch plan_scratch;  /* pat_plan_create's working buffers and the arrays of
                                      destroyed plans, for the next build (its largest kept) */
  int plan_scratch_busy;     /* a build is using plan_scratch: others take fresh buffers */
  int chain;               /* 1: pat_forward's launches chain on the caller's stream with
                              programmatic dependent launch (sm_90+, unless PAT_PDL=off) */
  int num_streams;         /* else tile groups fork onto these and join back */
  int carveout;            /* PAT_SMEM_CARVEOUT: the shared-memory carveout every kernel
                              asks for, in percent; -1: the driver's choice */
  CUstream streams[PAT_MAX_STREAMS];
  CUevent fork_event;
  CUevent join_events[PAT_MAX_STREAMS];
  CUdeviceptr own_ws;      /* the context's workspace when the caller passes none */
  size_t own_ws_bytes;
  char err[PAT_ERR_LEN];   /* detail of the last failure */
};

struct pat_plan {
  pat_context *ctx;
  pat_host_plan host;
  int gqa, q_heads, kv_heads;
  void *pinned;            /* host staging of the metadata (page-locked) */
  CUdeviceptr meta;        /* device copy: packs | pack_queries | pages | page masks | merges */
  size_t meta_bytes;
  size_t off_packs, off_pack_queries, off_pages, off_page_masks, off_merges;  /* off_page_masks: 0 when none */
  CUevent uploaded;
  double build_us;
  pat_sched_scratch scratch; /* the scheduler's working buffers, kept between pat_plan_update calls */
  /* What pat_forward launches: one entry per tile launch (tile, first pack in the device
  ** packs, grid.x), then a merge of merge_grid items (none when 0); the workspace layout is
  ** sized for ws_slots. A plan of pat_plan_create: its groups, num_merges, num_slots. */
  int num_launches;
  pat_tile_group launches[PAT_MAX_TILES];
  int merge_grid;
  int ws_slots;
  /* Capacity plans (pat_plan_create_capacity): fixed launches, padded metadata. */
  int capacity;            /* 1 for a capacity plan */
  pat_plan_caps caps;
  CUdeviceptr own_ws;      /* the plan's workspace (0 when caps.external_workspace) */
  size_t own_ws_bytes;
};

/* Records a formatted message as ctx's last error and returns status. */
/* pat_context_create with a spec in memory, used as given (no tuning table is read); for
** tools that change the spec, such as the tuner. d->spec_path may be NULL. */
pat_status pat_context_create_spec(const pat_context_desc *d, const pat_spec *spec, pat_context **out,
                                   char *msg, size_t msglen);

pat_status pat_fail(pat_context *ctx, pat_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* PAT_SMEM_CARVEOUT's value s (NULL: unset) as a carveout in percent: unset, "" or "default":
** -1 (the driver picks each kernel's own); "max": 100; an integer 0-100. Returns -1 with a
** message in err for anything else. */
int pat_carveout_parse(const char *s, int *percent, char *err, size_t errlen);

/* Index into ctx->src.kernels of the forward kernel for (tile, gqa), or -1. */
int pat_kernel_index(const pat_context *ctx, int tile, int gqa);

/* Makes sure kernel i is compiled and loaded (lazy path); thread-safe. */
pat_status pat_jit_ensure(pat_context *ctx, int i);

/* Compiles (or loads from the disk cache) every kernel not yet loaded, one thread per core. */
pat_status pat_jit_all(pat_context *ctx);

/* Byte offset of the fp32 LSEs in a plan's workspace (after the partial outputs). */
size_t pat_plan_ws_lse_offset(const pat_plan *p);

#endif
