/* jit.c: generated source -> cubin (disk cache or NVRTC) -> loaded CUfunction. NVRTC work runs
** on worker threads; modules are loaded on the calling thread, in the context. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "internal.h"
#include "nvrtc.h"

typedef struct jit_job {
  const pat_context *ctx;
  int index;
  void *cubin;
  size_t size;
  int from_cache;
  int failed;
  char err[8192];
} jit_job;

/* Cubin of one kernel: from the disk cache when a valid entry exists, else compiled and
** stored. Pure CPU work: safe on any thread. */
static void build_cubin(jit_job *j)
{
  const pat_context *ctx = j->ctx;
  const pat_kernel_src *k = &ctx->src.kernels[j->index];
  const char *const *hn, *const *hs;
  int nh = pat_device_headers(&hn, &hs);
  pat_nvrtc_job job = {.source = k->source, .program_name = k->file, .kernel_name = k->name,
                       .arch = ctx->arch, .arch_specific = k->sm90a, .header_names = hn, .header_sources = hs,
                       .num_headers = nh};
  char options[1024], key[PAT_CACHE_KEY_LEN + 1];
  pat_nvrtc_options_string(&job, options, sizeof options);
  int major = 0, minor = 0;
  pat_nvrtc_version(&major, &minor);
  pat_cache_key_input in = {.source = k->source, .header_names = hn, .header_sources = hs,
                            .num_headers = nh, .options = options, .nvrtc_major = major,
                            .nvrtc_minor = minor, .arch = ctx->arch};
  pat_cache_key(&in, key);
  if (ctx->cache_dir[0]) {
    int rc = pat_cache_load(ctx->cache_dir, ctx->arch, key, &j->cubin, &j->size, j->err,
                            sizeof j->err);
    if (rc == 0) {
      j->from_cache = 1;
      return;
    }
    /* An unreadable cache costs a compile, not a failure. */
  }
  pat_nvrtc_result res;
  if (pat_nvrtc_compile(&job, &res, j->err, sizeof j->err)) {
    j->failed = 1;
    return;
  }
  j->cubin = res.cubin;
  j->size = res.cubin_size;
  res.cubin = NULL;
  pat_nvrtc_result_free(&res);
  if (ctx->cache_dir[0]) {
    char err[512];
    if (pat_cache_store(ctx->cache_dir, ctx->arch, key, j->cubin, j->size, err, sizeof err))
      fprintf(stderr, "pat: warning: kernel cache not written: %s\n", err);
  }
}

/* Loads a cubin into the context and looks up its kernel; raises its shared-memory limit and
** sets the carveout the context asks for (PAT_SMEM_CARVEOUT): one carveout for every kernel
** lets CTAs of different launches share an SM, which the driver's per-kernel choice may not. */
static pat_status load_kernel(pat_context *ctx, int i, const void *cubin)
{
  const pat_cuda *cu = ctx->cu;
  const pat_kernel_src *k = &ctx->src.kernels[i];
  pat_kernel *kk = &ctx->kernels[i];
  char err[1024];
  if (PAT_CU(cu, cu->cuCtxSetCurrent(ctx->cuctx), err, sizeof err) ||
      PAT_CU(cu, cu->cuModuleLoadData(&kk->module, cubin), err, sizeof err) ||
      PAT_CU(cu, cu->cuModuleGetFunction(&kk->fn, kk->module, k->name), err, sizeof err) ||
      PAT_CU(cu, cu->cuFuncSetAttribute(kk->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        k->smem_bytes), err, sizeof err) ||
      (ctx->carveout >= 0 &&
       PAT_CU(cu, cu->cuFuncSetAttribute(kk->fn, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                                         ctx->carveout), err, sizeof err))) {
    if (kk->module) cu->cuModuleUnload(kk->module);
    kk->module = NULL;
    return pat_fail(ctx, PAT_ERR_CUDA, "loading kernel %s: %s", k->name, err);
  }
  return PAT_OK;
}

pat_status pat_jit_ensure(pat_context *ctx, int i)
{
  pthread_mutex_lock(&ctx->jit_lock);
  pat_status st = PAT_OK;
  if (!ctx->kernels[i].module) {
    jit_job j = {.ctx = ctx, .index = i};
    build_cubin(&j);
    if (j.failed) st = pat_fail(ctx, PAT_ERR_COMPILE, "%s", j.err);
    else st = load_kernel(ctx, i, j.cubin);
    free(j.cubin);
  }
  pthread_mutex_unlock(&ctx->jit_lock);
  return st;
}

typedef struct jit_pool {
  jit_job *jobs;
  int count;
  int next;  /* next job to take */
  int done;
  pthread_mutex_t lock;
  int progress;
} jit_pool;

static void *worker(void *arg)
{
  jit_pool *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->lock);
    int i = p->next < p->count ? p->next++ : -1;
    pthread_mutex_unlock(&p->lock);
    if (i < 0) return NULL;
    build_cubin(&p->jobs[i]);
    pthread_mutex_lock(&p->lock);
    p->done++;
    if (p->progress) {
      fprintf(stderr, "\rpat: kernels %d/%d", p->done, p->count);
      fflush(stderr);
    }
    pthread_mutex_unlock(&p->lock);
  }
}

pat_status pat_jit_all(pat_context *ctx)
{
  int n = ctx->src.count;
  jit_pool pool = {.count = n, .progress = ctx->progress && isatty(2)};
  pool.jobs = calloc((size_t)n, sizeof *pool.jobs);
  if (!pool.jobs) return pat_fail(ctx, PAT_ERR_NO_MEMORY, "out of memory");
  for (int i = 0; i < n; i++) {
    pool.jobs[i].ctx = ctx;
    pool.jobs[i].index = i;
  }
  pthread_mutex_init(&pool.lock, NULL);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int nthreads = (int)(cores < 1 ? 1 : cores > 64 ? 64 : cores);
  if (nthreads > n) nthreads = n;
  pthread_t threads[64];
  int started = 0;
  for (; started < nthreads; started++)
    if (pthread_create(&threads[started], NULL, worker, &pool)) break;
  if (started == 0) worker(&pool);
  for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
  if (pool.progress) fprintf(stderr, "\n");
  pthread_mutex_destroy(&pool.lock);

  pat_status st = PAT_OK;
  for (int i = 0; i < n && st == PAT_OK; i++) {
    if (pool.jobs[i].failed) st = pat_fail(ctx, PAT_ERR_COMPILE, "%s", pool.jobs[i].err);
    else if (!ctx->kernels[i].module) st = load_kernel(ctx, i, pool.jobs[i].cubin);
  }
  for (int i = 0; i < n; i++) free(pool.jobs[i].cubin);
  free(pool.jobs);
  return st;
}
