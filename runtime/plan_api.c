/* plan_api.c: pat_plan_*: schedule a batch on the host, stage its metadata in page-locked
** memory and upload it with one asynchronous copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "sched.h"

static double now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

PAT_API pat_status pat_plan_create(pat_context *ctx, const pat_batch_desc *b, pat_stream stream,
                                   pat_plan **out)
{
  if (!ctx) return PAT_ERR_INVALID_ARG;
  if (!out || !b) return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_plan_create: batch and out are required");
  *out = NULL;
  if (b->kv_heads <= 0 || b->q_heads <= 0 || b->q_heads % b->kv_heads)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "q_heads %d is not a multiple of kv_heads %d",
                    b->q_heads, b->kv_heads);
  int gqa = b->q_heads / b->kv_heads;
  if (pat_kernel_index(ctx, 0, gqa) < 0)
    return pat_fail(ctx, PAT_ERR_SPEC, "spec '%s' is not built for GQA ratio %d (%d q / %d kv heads)",
                    ctx->spec.name, gqa, b->q_heads, b->kv_heads);
  if (b->mode != PAT_MODE_PREFIX && b->mode != PAT_MODE_DIRECT)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "unknown mode %d", (int)b->mode);

  pat_plan *p = calloc(1, sizeof *p);
  if (!p) return pat_fail(ctx, PAT_ERR_NO_MEMORY, "out of memory");
  p->ctx = ctx;
  p->gqa = gqa;
  p->q_heads = b->q_heads;
  p->kv_heads = b->kv_heads;
  pat_batch batch = {.num_queries = b->num_queries, .seq_lens = b->seq_lens,
                     .block_table = b->block_table, .block_table_stride = b->block_table_stride,
                     .num_pages_total = b->num_pages, .page_size = ctx->spec.page_size, .gqa = gqa};
  pat_sched_opts opts = {.spec = &ctx->spec, .num_sms = ctx->num_sms, .kv_heads = b->kv_heads,
                         .mode = b->mode == PAT_MODE_DIRECT ? PAT_SCHED_DIRECT : PAT_SCHED_PREFIX};
  double t0 = now_us();
  if (pat_sched_build(&batch, &opts, &p->host, ctx->err, sizeof ctx->err)) {
    free(p);
    return PAT_ERR_INVALID_ARG;
  }
  p->build_us = now_us() - t0;

  const pat_host_plan *h = &p->host;
  p->off_packs = 0;
  p->off_pack_queries = align16(p->off_packs + (size_t)h->num_packs * sizeof(pat_pack));
  p->off_pages = align16(p->off_pack_queries + (size_t)h->num_pack_queries * sizeof(pat_pack_query));
  p->off_merges = align16(p->off_pages + (size_t)h->num_pages * sizeof(int32_t));
  p->meta_bytes = align16(p->off_merges + (size_t)h->num_merges * sizeof(pat_merge_item));

  const pat_cuda *cu = ctx->cu;
  char *e = ctx->err;
  size_t el = sizeof ctx->err;
  if (PAT_CU(cu, cu->cuCtxSetCurrent(ctx->cuctx), e, el) ||
      PAT_CU(cu, cu->cuMemAllocHost(&p->pinned, p->meta_bytes), e, el) ||
      PAT_CU(cu, cu->cuMemAlloc(&p->meta, p->meta_bytes), e, el) ||
      PAT_CU(cu, cu->cuEventCreate(&p->uploaded, CU_EVENT_DISABLE_TIMING), e, el))
    goto fail;
  char *s = p->pinned;
  memcpy(s + p->off_packs, h->packs, (size_t)h->num_packs * sizeof(pat_pack));
  memcpy(s + p->off_pack_queries, h->pack_queries, (size_t)h->num_pack_queries * sizeof(pat_pack_query));
  memcpy(s + p->off_pages, h->pages, (size_t)h->num_pages * sizeof(int32_t));
  if (h->num_merges)
    memcpy(s + p->off_merges, h->merges, (size_t)h->num_merges * sizeof(pat_merge_item));
  if (PAT_CU(cu, cu->cuMemcpyHtoDAsync(p->meta, p->pinned, p->meta_bytes, (CUstream)stream), e, el) ||
      PAT_CU(cu, cu->cuEventRecord(p->uploaded, (CUstream)stream), e, el))
    goto fail;
  *out = p;
  return PAT_OK;

fail:
  pat_plan_destroy(p);
  return PAT_ERR_CUDA;
}

PAT_API void pat_plan_destroy(pat_plan *p)
{
  if (!p) return;
  const pat_cuda *cu = p->ctx->cu;
  cu->cuCtxSetCurrent(p->ctx->cuctx);
  if (p->uploaded) {
    cu->cuEventSynchronize(p->uploaded);
    cu->cuEventDestroy(p->uploaded);
  }
  if (p->meta) cu->cuMemFree(p->meta);
  if (p->pinned) cu->cuMemFreeHost(p->pinned);
  pat_host_plan_free(&p->host);
  free(p);
}

PAT_API pat_status pat_plan_get_info(const pat_plan *p, pat_plan_info *info)
{
  if (!p || !info) return PAT_ERR_INVALID_ARG;
  info->num_packs = p->host.num_packs;
  info->num_ctas = p->host.num_packs * p->kv_heads;
  info->num_launches = p->host.num_groups + (p->host.num_merges > 0);
  info->num_merges = p->host.num_merges;
  info->num_slots = p->host.num_slots;
  info->kv_tokens_read = p->host.kv_tokens_read;
  info->kv_tokens_unique = p->host.kv_tokens_unique;
  info->build_us = p->build_us;
  return PAT_OK;
}

PAT_API size_t pat_plan_workspace_size(const pat_plan *p)
{
  if (!p) return 0;
  size_t slots = (size_t)p->host.num_slots, per = (size_t)p->q_heads;
  return align16(slots * per * (size_t)p->ctx->spec.head_dim * sizeof(float)) +
         align16(slots * per * sizeof(float));
}
