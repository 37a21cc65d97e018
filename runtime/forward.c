/* forward.c: pat_forward: one launch per tile group, then the merge. On sm_90+ they chain on
** the caller's stream with programmatic dependent launch; before, the groups spread over
** the context's streams (forked from and joined back to the caller's). Capacity plans
** launch fixed grids, so the same calls can be captured in a CUDA graph and replayed. */
#include <stdio.h>

#include "internal.h"
#include "tile.h"

/* Makes sure the context's own workspace holds n bytes (synchronises when it grows). */
static pat_status own_workspace(pat_context *ctx, size_t n, CUdeviceptr *ws)
{
  const pat_cuda *cu = ctx->cu;
  if (ctx->own_ws_bytes < n) {
    if (ctx->own_ws) {
      if (PAT_CU(cu, cu->cuCtxSynchronize(), ctx->err, sizeof ctx->err)) return PAT_ERR_CUDA;
      cu->cuMemFree(ctx->own_ws);
      ctx->own_ws = 0;
      ctx->own_ws_bytes = 0;
    }
    if (PAT_CU(cu, cu->cuMemAlloc(&ctx->own_ws, n), ctx->err, sizeof ctx->err)) return PAT_ERR_NO_MEMORY;
    ctx->own_ws_bytes = n;
  }
  *ws = ctx->own_ws;
  return PAT_OK;
}

/* One launch on `s`. A dependent one (programmatic stream serialisation) may start once every
** CTA of the launch before it on `s` has started or signalled (griddepcontrol). */
static CUresult launch(const pat_cuda *cu, CUfunction fn, unsigned gx, unsigned gy, unsigned threads,
                       unsigned smem, CUstream s, void **args, int dependent)
{
  if (!dependent) return cu->cuLaunchKernel(fn, gx, gy, 1, threads, 1, 1, smem, s, args, NULL);
  CUlaunchAttribute attr = {.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION};
  attr.value.programmaticStreamSerializationAllowed = 1;
  CUlaunchConfig cfg = {.gridDimX = gx, .gridDimY = gy, .gridDimZ = 1, .blockDimX = threads, .blockDimY = 1,
                        .blockDimZ = 1, .sharedMemBytes = smem, .hStream = s, .attrs = &attr, .numAttrs = 1};
  return cu->cuLaunchKernelEx(&cfg, fn, args, NULL);
}

PAT_API pat_status pat_forward(pat_context *ctx, const pat_plan *plan, const pat_tensors *t,
                               pat_devptr workspace, size_t workspace_bytes, pat_stream stream)
{
  if (!ctx) return PAT_ERR_INVALID_ARG;
  if (!plan || !t || plan->ctx != ctx)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_forward: plan (of this context) and tensors are required");
  if (!t->q || !t->k_cache || !t->v_cache || !t->out)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_forward: q, k_cache, v_cache and out are required");
  if ((t->q | t->k_cache | t->v_cache | t->out | workspace) & 15)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_forward: every pointer must be 16-byte aligned");
  const int D = ctx->spec.head_dim;
  long long dense = (long long)plan->q_heads * D;
  long long q_stride = t->q_stride ? t->q_stride : dense;
  long long o_stride = t->o_stride ? t->o_stride : dense;
  if (q_stride < dense || o_stride < dense || q_stride % 8 || o_stride % 8)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG,
                    "pat_forward: strides must be >= q_heads x head_dim (%lld) and multiples of 8", dense);
  const pat_cuda *cu = ctx->cu;
  char *e = ctx->err;
  size_t el = sizeof ctx->err;
  if (PAT_CU(cu, cu->cuCtxSetCurrent(ctx->cuctx), e, el)) return PAT_ERR_CUDA;

  size_t need = pat_plan_workspace_size(plan);
  CUdeviceptr ws = workspace;
  if (need && !ws && plan->own_ws) {
    ws = plan->own_ws;  /* a capacity plan's own: a fixed address, safe to capture */
  } else if (need && !ws) {
    pat_status st = own_workspace(ctx, need, &ws);
    if (st) return st;
  } else if (need > workspace_bytes) {
    return pat_fail(ctx, PAT_ERR_WORKSPACE, "pat_forward: workspace of %zu bytes, the plan needs %zu",
                    workspace_bytes, need);
  }
  void *part_o = (void *)(uintptr_t)ws;
  float *part_lse = (float *)(uintptr_t)(ws + pat_plan_ws_lse_offset(plan));

  pat_fwd_params fp = {
    .q = (const void *)(uintptr_t)t->q, .k_cache = (const void *)(uintptr_t)t->k_cache,
    .v_cache = (const void *)(uintptr_t)t->v_cache, .out = (void *)(uintptr_t)t->out,
    .part_o = part_o, .part_lse = part_lse,
    .pack_queries = (const pat_pack_query *)(uintptr_t)(plan->meta + plan->off_pack_queries),
    .pages = (const int *)(uintptr_t)(plan->meta + plan->off_pages),
    .page_masks = plan->off_page_masks ? (const unsigned *)(uintptr_t)(plan->meta + plan->off_page_masks) : NULL,
    .q_stride = q_stride, .o_stride = o_stride, .q_heads = plan->q_heads, .kv_heads = plan->kv_heads,
    .scale_log2 = (t->scale > 0 ? t->scale : 1.f / __builtin_sqrtf((float)D)) * 1.4426950408889634f,
  };

  /* Chained (sm_90+): every launch on the caller's stream, each after the first a dependent
  ** launch. The kernels signal their dependents first thing, so the tile groups overlap as
  ** on separate streams, without a fork or join, and the merge starts behind the forward
  ** kernels' tails. Completion stays in order: CTA 0 of a forward kernel ends only after
  ** the launch before it, and every merge CTA waits for the last forward launch before it
  ** reads a partial. Otherwise one launch alone runs on the caller's stream and several fork
  ** onto the context's streams. A capacity plan's launches are fixed: every call issues the
  ** same work (capturable). */
  CUstream caller = (CUstream)stream;
  const int nl = plan->num_launches;
  int forked = nl > 1 && !ctx->chain;
  int used = forked ? (nl < ctx->num_streams ? nl : ctx->num_streams) : 0;
  if (forked && PAT_CU(cu, cu->cuEventRecord(ctx->fork_event, caller), e, el)) return PAT_ERR_CUDA;
  for (int s = 0; s < used; s++)
    if (PAT_CU(cu, cu->cuStreamWaitEvent(ctx->streams[s], ctx->fork_event, 0), e, el)) return PAT_ERR_CUDA;

  for (int g = 0; g < nl; g++) {
    const pat_tile_group *grp = &plan->launches[g];
    int ki = pat_kernel_index(ctx, grp->tile, plan->gqa);
    if (!ctx->kernels[ki].module) {
      pat_status st = pat_jit_ensure(ctx, ki);
      if (st) return st;
    }
    const pat_kernel_src *k = &ctx->src.kernels[ki];
    /* A launch whose packs are all short takes only the ring slots they touch, so that more
    ** of its CTAs share an SM (1-page leaves: one slot). wgmma kernels keep theirs. */
    const pat_tile *tile = &ctx->spec.tiles[grp->tile];
    int smem = k->smem_bytes;
    if (grp->max_kv_len > 0 && !tile->wgmma)
      smem = pat_tile_smem_bytes_for(&ctx->spec, tile, (grp->max_kv_len + tile->n - 1) / tile->n);
    fp.packs = (const pat_pack *)(uintptr_t)(plan->meta + plan->off_packs + (size_t)grp->pack_begin * sizeof(pat_pack));
    void *args[] = {&fp};
    CUstream s = forked ? ctx->streams[g % used] : caller;
    if (PAT_CU(cu, launch(cu, ctx->kernels[ki].fn, (unsigned)grp->num_packs, (unsigned)plan->kv_heads,
                          (unsigned)k->threads, (unsigned)smem, s, args, ctx->chain && g > 0), e, el))
      return pat_fail(ctx, PAT_ERR_CUDA, "launching %s: %s", k->name, e[0] ? e : "");
  }
  for (int s = 0; s < used; s++) {
    if (PAT_CU(cu, cu->cuEventRecord(ctx->join_events[s], ctx->streams[s]), e, el) ||
        PAT_CU(cu, cu->cuStreamWaitEvent(caller, ctx->join_events[s], 0), e, el))
      return PAT_ERR_CUDA;
  }

  if (plan->merge_grid > 0) {
    int mi = ctx->src.count - 1;
    if (!ctx->kernels[mi].module) {
      pat_status st = pat_jit_ensure(ctx, mi);
      if (st) return st;
    }
    pat_merge_params mp = {.part_o = part_o, .part_lse = part_lse, .out = (void *)(uintptr_t)t->out,
                           .items = (const pat_merge_item *)(uintptr_t)(plan->meta + plan->off_merges),
                           .o_stride = o_stride, .q_heads = plan->q_heads};
    void *args[] = {&mp};
    const long long chunks = (long long)plan->q_heads * D / 8, per_cta = (long long)PAT_MERGE_THREADS * PAT_MERGE_VECS;
    const unsigned groups = (unsigned)((chunks + per_cta - 1) / per_cta);
    if (PAT_CU(cu, launch(cu, ctx->kernels[mi].fn, (unsigned)plan->merge_grid, groups, PAT_MERGE_THREADS, 0,
                          caller, args, ctx->chain && nl > 0), e, el))
      return PAT_ERR_CUDA;
  }
  return PAT_OK;
}
