/* pat.h: the public API of libpat, prefix-aware decode attention for paged KV caches.
** A function not declared here is not part of the API.
**
** Use: pat_context_create (one per spec and device: JIT-compiles and caches the kernels),
** then per decode step pat_plan_create (host scheduling, one upload), then pat_forward for
** every layer with that plan. All device pointers are CUdeviceptr values (driver API);
** streams are CUstream (a cudaStream_t is the same handle). */
#ifndef PAT_H
#define PAT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PAT_API __attribute__((visibility("default")))
#else
#define PAT_API
#endif

typedef enum pat_status {
  PAT_OK = 0,
  PAT_ERR_INVALID_ARG,  /* a bad argument or batch; nothing was launched */
  PAT_ERR_NO_MEMORY,    /* host or device allocation failed */
  PAT_ERR_SPEC,         /* the spec could not be loaded or does not support the request */
  PAT_ERR_COMPILE,      /* generation or NVRTC failed (the log is in pat_last_error) */
  PAT_ERR_NO_DRIVER,    /* no CUDA driver or device on this machine */
  PAT_ERR_CUDA,         /* a CUDA driver call failed */
  PAT_ERR_WORKSPACE,    /* the caller's workspace is too small or misaligned */
  PAT_ERR_CACHE_IO      /* the kernel cache directory could not be used */
} pat_status;

typedef struct pat_context pat_context;  /* one spec on one device; owns kernels and streams */
typedef struct pat_plan pat_plan;        /* one batch's schedule, reused by every layer */
typedef struct CUstream_st *pat_stream;  /* = CUstream = cudaStream_t */
typedef unsigned long long pat_devptr;   /* = CUdeviceptr */

typedef struct pat_context_desc {
  const char *spec_path;  /* YAML spec file (specs/README.md) */
  int device;             /* CUDA device ordinal */
  const char *cache_dir;  /* NULL: $PAT_CACHE_DIR, else $XDG_CACHE_HOME/pat, else ~/.cache/pat;
                             "": no disk cache */
  int lazy;               /* 0: compile every kernel at create, in parallel (default);
                             1: compile a kernel on its first use */
  int progress;           /* 1: a progress line on stderr while compiling (when a terminal) */
  int num_streams;        /* streams tile groups fork onto (before sm_90, or PAT_PDL=off); 0: 4 */
} pat_context_desc;

/* Creates a context: loads the spec, loads the CUDA driver, retains the device's primary
** context, generates and compiles (or loads from the disk cache) the kernels, creates the
** forward streams and events. On failure returns a status, *out is NULL, and when msg is
** not NULL writes the reason there (msglen bytes, NUL-terminated). Reads PAT_SMEM_CARVEOUT
** (README.md: the shared-memory carveout its kernels ask for; a bad value is
** PAT_ERR_INVALID_ARG). Thread-safe. */
PAT_API pat_status pat_context_create(const pat_context_desc *desc, pat_context **out,
                                      char *msg, size_t msglen);

/* Destroys a context and everything it owns. NULL is a no-op. Plans made from it must be
** destroyed first. Not concurrently with other calls on ctx. */
PAT_API void pat_context_destroy(pat_context *ctx);

/* A static description of a status ("invalid argument", ...). Thread-safe. */
PAT_API const char *pat_status_string(pat_status s);

/* The detail of the last failed call on ctx (NVRTC log, CUDA error, the bad query, ...), or
** "" . Valid until the next call on ctx. Read it from the thread that made the call. */
PAT_API const char *pat_last_error(const pat_context *ctx);

/* Device facts: multiprocessors, compute capability x10, name. Any pointer may be NULL. */
PAT_API pat_status pat_context_device(const pat_context *ctx, int *num_sms, int *arch,
                                      char *name, size_t namelen);

/* What a context's spec builds, for callers that check tensors against it. */
typedef struct pat_spec_info {
  char name[64];   /* the spec's name */
  int dtype;       /* 0: fp16, 1: bf16 (q, k, v and out) */
  int head_dim;
  int page_size;   /* tokens per KV page */
  int num_gqa;
  int gqa[16];     /* the GQA ratios (q heads per kv head) kernels exist for */
  int num_tiles;
} pat_spec_info;

/* Fills *info from ctx's spec. Thread-safe. */
PAT_API pat_status pat_context_spec_info(const pat_context *ctx, pat_spec_info *info);

/* One line on the tuning table the context uses: the file beside the spec
** ("specs/x.tune.yaml" for "specs/x.yaml", or $PAT_TUNING's path; PAT_TUNING=off: none),
** applied when it was measured on this GPU, else left unused with the reason. Valid while
** ctx lives. */
PAT_API const char *pat_context_tuning(const pat_context *ctx);

typedef enum pat_mode {
  PAT_MODE_PREFIX = 0,  /* queries that share pages share CTAs (the PAT schedule) */
  PAT_MODE_DIRECT = 1   /* one query per CTA, KV split by the spec's policy (flash-decoding) */
} pat_mode;

/* One decode step, as the engine sees it. Arrays are host memory, read during the call. */
typedef struct pat_batch_desc {
  int32_t num_queries;         /* >= 1 */
  const int32_t *seq_lens;     /* [num_queries] tokens each query attends to (its own too) */
  const int32_t *block_table;  /* [num_queries][block_table_stride] page ids, vLLM style */
  int32_t block_table_stride;  /* entries per row */
  int32_t num_pages;           /* pages in the KV cache; ids must be below this */
  int32_t q_heads;             /* must be kv_heads x a GQA ratio the spec builds */
  int32_t kv_heads;
  pat_mode mode;
} pat_batch_desc;

/* Schedules a batch on the host (prefix tree, packs, splits, tiles) and uploads the plan's
** metadata with one asynchronous copy on `stream`. The batch is validated: bad page ids, a
** seq_len beyond its block-table row, zero queries, head counts the spec does not build
** return PAT_ERR_INVALID_ARG with the detail in pat_last_error(ctx).
** A context may be shared by threads for plan creation if each thread uses its own plans,
** but pat_last_error is then per context, not per thread. The context keeps the scheduler's
** working buffers (of the largest batch so far) and the host arrays of the last destroyed
** plan for the next pat_plan_create, so that a plan per step reuses memory; a build that
** finds them in use by another thread takes fresh ones. */
PAT_API pat_status pat_plan_create(pat_context *ctx, const pat_batch_desc *batch, pat_stream stream,
                                   pat_plan **out);

/* Destroys a plan (waits for its upload); its host arrays serve the context's next
** pat_plan_create. NULL is a no-op. */
PAT_API void pat_plan_destroy(pat_plan *plan);

/* Plan facts for reports: packs, CTAs of the forward launches, launches, queries with
** merges, KV tokens read (per kv head) and unique KV tokens, masked packs (a subtree in one
** pack: docs/scheduler.md). Any pointer may be NULL.
** For a capacity plan: the current batch's packs and CTAs (its launches also hold empty
** padding packs), and its fixed launches. */
typedef struct pat_plan_info {
  int num_packs;
  int num_ctas;
  int num_launches;
  int num_merges;
  int num_slots;
  long long kv_tokens_read;
  long long kv_tokens_unique;
  double build_us;  /* host time of the schedule */
  int num_masked_packs;
} pat_plan_info;
PAT_API pat_status pat_plan_get_info(const pat_plan *plan, pat_plan_info *info);

/* Device workspace bytes pat_forward needs for this plan (partial outputs and LSEs). */
PAT_API size_t pat_plan_workspace_size(const pat_plan *plan);

/* ---- Fixed-capacity plans, for CUDA graphs (docs/graphs.md) ----
** A capacity plan launches the same grids with the same kernel arguments for every batch
** that fits its capacities: each tile of the spec gets one launch of a fixed number of packs
** (real packs, then empty packs that return at once), the merge a fixed number of items,
** and the metadata and workspace stay at fixed device addresses. pat_plan_update reschedules
** it for the next decode step in place, so a graph captured around pat_forward stays valid.
** Recipe: pat_plan_create_capacity; pat_forward once (warm-up); cuStreamBeginCapture on the
** engine's stream; pat_forward (for every layer); cuStreamEndCapture; cuGraphInstantiate.
** Per step: pat_plan_update(plan, next batch, stream), then cuGraphLaunch on that stream. */

#define PAT_CAPS_MAX_TILES 16  /* tiles a spec may have */

typedef struct pat_plan_caps {
  int32_t max_packs;          /* packs of each tile's launch (its grid.x), unless tile_packs */
  int32_t tile_packs[PAT_CAPS_MAX_TILES];  /* per spec tile: > 0 that many packs, 0: max_packs,
                                  < 0: no launch for that tile (its packs move to a larger tile) */
  int32_t max_pack_queries;   /* (query, split) entries over all packs, >= 1 */
  int32_t max_pages;          /* page-id entries over all packs, >= 1 */
  int32_t max_merges;         /* merge items (queries with several splits); grid.x of the merge */
  int32_t max_slots;          /* workspace slots; fixes pat_plan_workspace_size */
  int external_workspace;     /* 0: the plan allocates its workspace at create, used when
                                 pat_forward gets workspace 0; 1: the caller always passes one */
} pat_plan_caps;

/* Capacities from an existing plan's counts times headroom (>= 1; e.g. 1.5): max_packs is the
** plan's packs x headroom for every tile, so any tile may take all of them. Rounds up, at
** least 1 each. Merge them with pat_plan_caps_max to cover several batches. Thread-safe. */
PAT_API pat_status pat_plan_caps_from(const pat_plan *plan, double headroom, pat_plan_caps *caps);

/* Widens *caps to cover *other too: element-wise maximum; a tile_packs entry is 0 (max_packs)
** where either is 0, else the larger. Thread-safe. */
PAT_API void pat_plan_caps_max(pat_plan_caps *caps, const pat_plan_caps *other);

/* Like pat_plan_create, for a plan that pat_plan_update can reschedule in place: device
** metadata (and, unless caps->external_workspace, the workspace) are allocated at capacity,
** the kernels of every launch are compiled or loaded now (so pat_forward never compiles), and
** the batch is uploaded on `stream`. q_heads and kv_heads are fixed for the plan's life.
** A batch that does not fit the capacities returns PAT_ERR_INVALID_ARG and pat_last_error
** names the capacity ("capacity: ..."). Same thread-safety as pat_plan_create. */
PAT_API pat_status pat_plan_create_capacity(pat_context *ctx, const pat_batch_desc *batch,
                                            const pat_plan_caps *caps, pat_stream stream,
                                            pat_plan **out);

/* Reschedules a capacity plan for a new batch (same q_heads and kv_heads; the mode may
** change) and uploads its metadata on `stream` into the same device buffer, so launches,
** grids and kernel arguments stay as they were. Waits (on the host) for the plan's previous
** upload, never for kernels. The new metadata overwrites the old in stream order: issue it
** on the stream that runs pat_forward or the graph (or order the two streams), after the
** previous step's work. When the batch is refused (PAT_ERR_INVALID_ARG; "capacity: ..." in
** pat_last_error when it does not fit) the plan, host and device, is left as it was. The plan
** keeps the scheduler's working buffers from one update to the next (no fresh pages a step).
** Not concurrently with other calls on the same plan, nor with pat_forward reading it on the host. */
PAT_API pat_status pat_plan_update(pat_plan *plan, const pat_batch_desc *batch, pat_stream stream);

/* The capacities a plan was created with (1), or 0 for a plan of pat_plan_create. caps may
** be NULL. */
PAT_API int pat_plan_get_caps(const pat_plan *plan, pat_plan_caps *caps);

typedef struct pat_tensors {
  pat_devptr q;        /* [num_queries][q_heads][head_dim], spec dtype */
  pat_devptr k_cache;  /* [num_pages][page_size][kv_heads][head_dim] */
  pat_devptr v_cache;  /* same layout */
  pat_devptr out;      /* [num_queries][q_heads][head_dim] */
  long long q_stride;  /* elements between queries in q; 0: q_heads x head_dim */
  long long o_stride;  /* elements between queries in out; 0: q_heads x head_dim */
  float scale;         /* softmax scale; 0: 1/sqrt(head_dim) */
} pat_tensors;

/* Runs forward and merge for plan on `stream`, ordered after everything already on `stream`
** and before anything queued after. On sm_90+ the tile groups and the merge chain on
** `stream` with programmatic dependent launch, so that they overlap (PAT_PDL=off, read at
** context creation, forks them onto the context's streams instead, as before sm_90, and joins
** them back before the merge). No host synchronisation, no allocation when
** workspace is given (workspace_bytes >= pat_plan_workspace_size; 16-byte aligned). With
** workspace 0 the context uses (and grows, synchronising once) its own buffer; a capacity
** plan made without external_workspace uses its own instead.
** Pointers must be 16-byte aligned. One thread at a time per context.
** Stream capture (CUDA graphs): capturable with a capacity plan after one warm-up call, and
** with a workspace the graph may keep: the caller's, or the capacity plan's own (workspace 0).
** The context's own buffer is not safe to capture: a later, larger plan frees it. The graph
** records the tensor pointers and strides in `t`, and the plan's current metadata address. */
PAT_API pat_status pat_forward(pat_context *ctx, const pat_plan *plan, const pat_tensors *t,
                               pat_devptr workspace, size_t workspace_bytes, pat_stream stream);

#ifdef __cplusplus
}
#endif
#endif
