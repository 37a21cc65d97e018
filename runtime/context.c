/* context.c: contexts (spec + device + kernels + streams), statuses and error detail. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "internal.h"
#include "tile.h"
#include "tuning.h"

PAT_API const char *pat_status_string(pat_status s)
{
  switch (s) {
  case PAT_OK: return "ok";
  case PAT_ERR_INVALID_ARG: return "invalid argument";
  case PAT_ERR_NO_MEMORY: return "out of memory";
  case PAT_ERR_SPEC: return "spec error";
  case PAT_ERR_COMPILE: return "kernel compilation failed";
  case PAT_ERR_NO_DRIVER: return "no CUDA driver or device";
  case PAT_ERR_CUDA: return "CUDA driver error";
  case PAT_ERR_WORKSPACE: return "workspace too small or misaligned";
  case PAT_ERR_CACHE_IO: return "kernel cache error";
  }
  return "unknown status";
}

pat_status pat_fail(pat_context *ctx, pat_status status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
  va_end(ap);
  return status;
}

PAT_API const char *pat_last_error(const pat_context *ctx)
{
  return ctx ? ctx->err : "no context";
}

int pat_kernel_index(const pat_context *ctx, int tile, int gqa)
{
  for (int g = 0; g < ctx->spec.num_gqa; g++)
    if (ctx->spec.gqa[g] == gqa) return tile * ctx->spec.num_gqa + g;
  return -1;
}

PAT_API pat_status pat_context_device(const pat_context *ctx, int *num_sms, int *arch, char *name,
                                      size_t namelen)
{
  if (!ctx) return PAT_ERR_INVALID_ARG;
  if (num_sms) *num_sms = ctx->num_sms;
  if (arch) *arch = ctx->arch;
  if (name && namelen) snprintf(name, namelen, "%s", ctx->device_name);
  return PAT_OK;
}

PAT_API pat_status pat_context_spec_info(const pat_context *ctx, pat_spec_info *info)
{
  if (!ctx || !info) return PAT_ERR_INVALID_ARG;
  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "%s", ctx->spec.name);
  info->dtype = ctx->spec.dtype == PAT_BF16 ? 1 : 0;
  info->head_dim = ctx->spec.head_dim;
  info->page_size = ctx->spec.page_size;
  info->num_gqa = ctx->spec.num_gqa;
  for (int i = 0; i < ctx->spec.num_gqa && i < 16; i++) info->gqa[i] = ctx->spec.gqa[i];
  info->num_tiles = ctx->spec.num_tiles;
  return PAT_OK;
}

/* Copies a create-time failure out to the caller's buffer, destroys the half-made context. */
static pat_status create_failed(pat_context *ctx, pat_status st, char *msg, size_t msglen)
{
  if (msg && msglen) snprintf(msg, msglen, "%s", ctx->err);
  pat_context_destroy(ctx);
  return st;
}

/* Applies the tuning table beside the spec, or $PAT_TUNING's ("off": none): this GPU's own
** (NAME.tune.GPU.yaml) when there is one, else NAME.tune.yaml. A table measured on another
** GPU is left unused (the note says so); a broken or mismatched one is an error. */
static pat_status apply_tuning(pat_context *ctx, const char *spec_path)
{
  const char *env = getenv("PAT_TUNING");
  char path[PAT_PATH_MAX + 16];
  size_t nl = sizeof ctx->tuning;
  if (env && !strcmp(env, "off")) {
    snprintf(ctx->tuning, nl, "none ($PAT_TUNING=off): cost model");
    return PAT_OK;
  }
  if (env && *env) {
    snprintf(path, sizeof path, "%s", env);
  } else {
    pat_tuning_path(spec_path, ctx->device_name, path, sizeof path);
    if (access(path, F_OK) != 0) pat_tuning_path(spec_path, NULL, path, sizeof path);
  }
  if (!(env && *env) && access(path, F_OK) != 0) {
    snprintf(ctx->tuning, nl, "none (no %s): cost model", path);
    return PAT_OK;
  }
  pat_tuning t;
  if (pat_tuning_load(path, &t, ctx->err, sizeof ctx->err)) return PAT_ERR_SPEC;
  if (strcmp(t.gpu, ctx->device_name)) {
    snprintf(ctx->tuning, nl, "%s was tuned on %s, this is %s: not used (cost model)", path, t.gpu,
             ctx->device_name);
    return PAT_OK;
  }
  if (pat_tuning_apply(&t, &ctx->spec, ctx->err, sizeof ctx->err)) return PAT_ERR_SPEC;
  snprintf(ctx->tuning, nl,
           "%s (tuned on %s): %d tile choices, split %d tokens / %d per query / %d CTAs per SM, "
           "mma weight 1/%d, masked packs %s",
           path, t.gpu, t.num_choices, ctx->spec.split.min_kv_per_split, ctx->spec.split.max_splits,
           ctx->spec.split.ctas_per_sm, ctx->spec.split.mma_rows_per_token,
           ctx->spec.split.masked_packs ? "on" : "off");
  return PAT_OK;
}

PAT_API const char *pat_context_tuning(const pat_context *ctx)
{
  return ctx ? ctx->tuning : "";
}

static pat_status create(const pat_context_desc *d, const pat_spec *spec, pat_context **out, char *msg,
                         size_t msglen);

PAT_API pat_status pat_context_create(const pat_context_desc *d, pat_context **out, char *msg,
                                      size_t msglen)
{
  return create(d, NULL, out, msg, msglen);
}

pat_status pat_context_create_spec(const pat_context_desc *d, const pat_spec *spec, pat_context **out,
                                   char *msg, size_t msglen)
{
  if (!spec) {
    if (out) *out = NULL;
    if (msg && msglen) snprintf(msg, msglen, "pat_context_create_spec: no spec");
    return PAT_ERR_INVALID_ARG;
  }
  return create(d, spec, out, msg, msglen);
}

int pat_carveout_parse(const char *s, int *percent, char *err, size_t errlen)
{
  *percent = -1;
  if (!s || !*s || !strcmp(s, "default")) return 0;
  if (!strcmp(s, "max")) {
    *percent = 100;
    return 0;
  }
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > 100) {
    snprintf(err, errlen, "PAT_SMEM_CARVEOUT=%s: expected default, max or a percentage 0-100", s);
    return -1;
  }
  *percent = (int)v;
  return 0;
}

/* With spec NULL: loads d->spec_path and its tuning table; else takes *spec as it is. */
static pat_status create(const pat_context_desc *d, const pat_spec *spec, pat_context **out, char *msg,
                         size_t msglen)
{
  if (out) *out = NULL;
  if (!d || !out || (!d->spec_path && !spec)) {
    if (msg && msglen) snprintf(msg, msglen, "pat_context_create: desc, desc->spec_path and out are required");
    return PAT_ERR_INVALID_ARG;
  }
  pat_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    if (msg && msglen) snprintf(msg, msglen, "out of memory");
    return PAT_ERR_NO_MEMORY;
  }
  pthread_mutex_init(&ctx->jit_lock, NULL);
  pthread_mutex_init(&ctx->plan_lock, NULL);
  ctx->device = d->device;
  ctx->progress = d->progress;
  ctx->num_streams = d->num_streams > 0 ? d->num_streams : 4;
  if (ctx->num_streams > PAT_MAX_STREAMS) ctx->num_streams = PAT_MAX_STREAMS;

  if (pat_carveout_parse(getenv("PAT_SMEM_CARVEOUT"), &ctx->carveout, ctx->err, sizeof ctx->err))
    return create_failed(ctx, PAT_ERR_INVALID_ARG, msg, msglen);
  if (spec) ctx->spec = *spec;
  else if (pat_spec_load(d->spec_path, &ctx->spec, ctx->err, sizeof ctx->err))
    return create_failed(ctx, PAT_ERR_SPEC, msg, msglen);
  if (!d->cache_dir) {
    if (pat_cache_dir_default(ctx->cache_dir, sizeof ctx->cache_dir)) ctx->cache_dir[0] = 0;
  } else {
    snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%s", d->cache_dir);
  }

  if (pat_cuda_load(&ctx->cu, ctx->err, sizeof ctx->err))
    return create_failed(ctx, PAT_ERR_NO_DRIVER, msg, msglen);
  const pat_cuda *cu = ctx->cu;
  char *e = ctx->err;
  size_t el = sizeof ctx->err;
  int count = 0;
  if (PAT_CU(cu, cu->cuDeviceGetCount(&count), e, el))
    return create_failed(ctx, PAT_ERR_CUDA, msg, msglen);
  if (d->device < 0 || d->device >= count) {
    pat_fail(ctx, PAT_ERR_INVALID_ARG, "device %d does not exist (%d devices)", d->device, count);
    return create_failed(ctx, PAT_ERR_INVALID_ARG, msg, msglen);
  }
  int major = 0, minor = 0;
  if (PAT_CU(cu, cu->cuDeviceGet(&ctx->dev, d->device), e, el) ||
      PAT_CU(cu, cu->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, ctx->dev), e, el) ||
      PAT_CU(cu, cu->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, ctx->dev), e, el) ||
      PAT_CU(cu, cu->cuDeviceGetAttribute(&ctx->num_sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, ctx->dev), e, el) ||
      PAT_CU(cu, cu->cuDeviceGetName(ctx->device_name, sizeof ctx->device_name, ctx->dev), e, el) ||
      PAT_CU(cu, cu->cuDevicePrimaryCtxRetain(&ctx->cuctx, ctx->dev), e, el))
    return create_failed(ctx, PAT_ERR_CUDA, msg, msglen);
  ctx->arch = major * 10 + minor;
  if (ctx->arch < 80) {
    pat_fail(ctx, PAT_ERR_NO_DRIVER, "device %d (%s) is sm_%d; pat needs sm_80 or newer",
             d->device, ctx->device_name, ctx->arch);
    return create_failed(ctx, PAT_ERR_NO_DRIVER, msg, msglen);
  }
  if (PAT_CU(cu, cu->cuCtxSetCurrent(ctx->cuctx), e, el))
    return create_failed(ctx, PAT_ERR_CUDA, msg, msglen);
  const char *pdl = getenv("PAT_PDL");
  ctx->chain = ctx->arch >= 90 && !(pdl && !strcmp(pdl, "off"));
  if (spec) {
    snprintf(ctx->tuning, sizeof ctx->tuning, "as given by the caller (no table read)");
  } else {
    pat_status tst = apply_tuning(ctx, d->spec_path);
    if (tst) return create_failed(ctx, tst, msg, msglen);
  }
  /* Tiles this device cannot run (wgmma off sm_90) leave the spec before generation, so
  ** neither the planner nor the JIT sees them. */
  if (pat_spec_keep_arch(&ctx->spec, ctx->arch, ctx->err, sizeof ctx->err) < 0)
    return create_failed(ctx, PAT_ERR_SPEC, msg, msglen);

  if (pat_generate(&ctx->spec, &ctx->src, ctx->err, sizeof ctx->err))
    return create_failed(ctx, PAT_ERR_COMPILE, msg, msglen);
  ctx->kernels = calloc((size_t)ctx->src.count, sizeof *ctx->kernels);
  if (!ctx->kernels) {
    pat_fail(ctx, PAT_ERR_NO_MEMORY, "out of memory");
    return create_failed(ctx, PAT_ERR_NO_MEMORY, msg, msglen);
  }
  if (!d->lazy) {
    pat_status st = pat_jit_all(ctx);
    if (st) return create_failed(ctx, st, msg, msglen);
  }
  for (int i = 0; i < ctx->num_streams; i++) {
    if (PAT_CU(cu, cu->cuStreamCreate(&ctx->streams[i], CU_STREAM_NON_BLOCKING), e, el) ||
        PAT_CU(cu, cu->cuEventCreate(&ctx->join_events[i], CU_EVENT_DISABLE_TIMING), e, el))
      return create_failed(ctx, PAT_ERR_CUDA, msg, msglen);
  }
  if (PAT_CU(cu, cu->cuEventCreate(&ctx->fork_event, CU_EVENT_DISABLE_TIMING), e, el))
    return create_failed(ctx, PAT_ERR_CUDA, msg, msglen);
  ctx->err[0] = 0;
  *out = ctx;
  return PAT_OK;
}

PAT_API void pat_context_destroy(pat_context *ctx)
{
  if (!ctx) return;
  const pat_cuda *cu = ctx->cu;
  if (cu && ctx->cuctx) {
    cu->cuCtxSetCurrent(ctx->cuctx);
    cu->cuCtxSynchronize();
    for (int i = 0; i < PAT_MAX_STREAMS; i++) {
      if (ctx->streams[i]) cu->cuStreamDestroy(ctx->streams[i]);
      if (ctx->join_events[i]) cu->cuEventDestroy(ctx->join_events[i]);
    }
    if (ctx->fork_event) cu->cuEventDestroy(ctx->fork_event);
    if (ctx->own_ws) cu->cuMemFree(ctx->own_ws);
    for (int i = 0; ctx->kernels && i < ctx->src.count; i++)
      if (ctx->kernels[i].module) cu->cuModuleUnload(ctx->kernels[i].module);
    cu->cuDevicePrimaryCtxRelease(ctx->dev);
  }
  free(ctx->kernels);
  pat_kernel_set_free(&ctx->src);
  pthread_mutex_destroy(&ctx->jit_lock);
  pat_sched_scratch_free(&ctx->plan_scratch);
  pthread_mutex_destroy(&ctx->plan_lock);
  free(ctx);
}
