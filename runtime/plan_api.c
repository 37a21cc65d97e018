/* plan_api.c: pat_plan_*: schedule a batch on the host, stage its metadata in page-locked
** memory and upload it with asynchronous copies; capacity plans keep fixed launches and
** fixed device addresses across pat_plan_update (CUDA graphs, docs/graphs.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "plan_pad.h"
#include "sched.h"

_Static_assert(PAT_CAPS_MAX_TILES == PAT_MAX_TILES, "pat.h and spec.h disagree on the tile limit");

static double now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Checks the batch's heads and mode against the spec; sets *gqa. */
static pat_status check_batch(pat_context *ctx, const pat_batch_desc *b, int *gqa)
{
  if (b->kv_heads <= 0 || b->q_heads <= 0 || b->q_heads % b->kv_heads)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "q_heads %d is not a multiple of kv_heads %d",
                    b->q_heads, b->kv_heads);
  *gqa = b->q_heads / b->kv_heads;
  if (pat_kernel_index(ctx, 0, *gqa) < 0)
    return pat_fail(ctx, PAT_ERR_SPEC, "spec '%s' is not built for GQA ratio %d (%d q / %d kv heads)",
                    ctx->spec.name, *gqa, b->q_heads, b->kv_heads);
  if (b->mode != PAT_MODE_PREFIX && b->mode != PAT_MODE_DIRECT)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "unknown mode %d", (int)b->mode);
  return PAT_OK;
}

/* Schedules b on the host into *host (zeroed on failure). */
static pat_status schedule(pat_context *ctx, const pat_batch_desc *b, int gqa, pat_sched_scratch *scratch,
                           pat_host_plan *host, double *build_us)
{
  pat_batch batch = {.num_queries = b->num_queries, .seq_lens = b->seq_lens,
                     .block_table = b->block_table, .block_table_stride = b->block_table_stride,
                     .num_pages_total = b->num_pages, .page_size = ctx->spec.page_size, .gqa = gqa};
  pat_sched_opts opts = {.spec = &ctx->spec, .num_sms = ctx->num_sms, .kv_heads = b->kv_heads,
                         .mode = b->mode == PAT_MODE_DIRECT ? PAT_SCHED_DIRECT : PAT_SCHED_PREFIX};
  double t0 = now_us();
  int rc = scratch ? pat_sched_build_with(&batch, &opts, scratch, host, ctx->err, sizeof ctx->err)
                   : pat_sched_build(&batch, &opts, host, ctx->err, sizeof ctx->err);
  if (rc) return PAT_ERR_INVALID_ARG;
  *build_us = now_us() - t0;
  return PAT_OK;
}

/* The context's scheduler scratch for one build, or NULL (fresh buffers) while another
** thread's build holds it. Plans built one after another on a context, each destroyed
** before the next or soon after, reuse memory instead of taking fresh pages every step. */
static pat_sched_scratch *take_scratch(pat_context *ctx)
{
  pat_sched_scratch *s = NULL;
  pthread_mutex_lock(&ctx->plan_lock);
  if (!ctx->plan_scratch_busy) {
    ctx->plan_scratch_busy = 1;
    s = &ctx->plan_scratch;
  }
  pthread_mutex_unlock(&ctx->plan_lock);
  return s;
}

static void give_back_scratch(pat_context *ctx, pat_sched_scratch *s)
{
  if (!s) return;
  pthread_mutex_lock(&ctx->plan_lock);
  ctx->plan_scratch_busy = 0;
  pthread_mutex_unlock(&ctx->plan_lock);
}

/* A destroyed plan's host arrays go to the context's scratch (when no build holds it). */
static void recycle_host_plan(pat_context *ctx, pat_host_plan *h)
{
  pthread_mutex_lock(&ctx->plan_lock);
  if (ctx->plan_scratch_busy) pat_host_plan_free(h);
  else pat_sched_scratch_recycle(&ctx->plan_scratch, h);
  pthread_mutex_unlock(&ctx->plan_lock);
}

/* A new plan shell for ctx and b's heads. */
static pat_plan *plan_new(pat_context *ctx, const pat_batch_desc *b, int gqa)
{
  pat_plan *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->ctx = ctx;
  p->gqa = gqa;
  p->q_heads = b->q_heads;
  p->kv_heads = b->kv_heads;
  return p;
}

/* Allocates the plan's pinned staging, device metadata (meta_bytes) and upload event. */
static pat_status plan_alloc(pat_plan *p)
{
  pat_context *ctx = p->ctx;
  const pat_cuda *cu = ctx->cu;
  char *e = ctx->err;
  size_t el = sizeof ctx->err;
  if (PAT_CU(cu, cu->cuCtxSetCurrent(ctx->cuctx), e, el) ||
      PAT_CU(cu, cu->cuMemAllocHost(&p->pinned, p->meta_bytes), e, el) ||
      PAT_CU(cu, cu->cuMemAlloc(&p->meta, p->meta_bytes), e, el) ||
      PAT_CU(cu, cu->cuEventCreate(&p->uploaded, CU_EVENT_DISABLE_TIMING), e, el))
    return PAT_ERR_CUDA;
  return PAT_OK;
}

PAT_API pat_status pat_plan_create(pat_context *ctx, const pat_batch_desc *b, pat_stream stream,
                                   pat_plan **out)
{
  if (!ctx) return PAT_ERR_INVALID_ARG;
  if (!out || !b) return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_plan_create: batch and out are required");
  *out = NULL;
  int gqa = 0;
  pat_status st = check_batch(ctx, b, &gqa);
  if (st) return st;
  pat_plan *p = plan_new(ctx, b, gqa);
  if (!p) return pat_fail(ctx, PAT_ERR_NO_MEMORY, "out of memory");
  pat_sched_scratch *sc = take_scratch(ctx);
  st = schedule(ctx, b, gqa, sc, &p->host, &p->build_us);
  give_back_scratch(ctx, sc);
  if (st) {
    free(p);
    return st;
  }

  const pat_host_plan *h = &p->host;
  p->off_packs = 0;
  p->off_pack_queries = align16(p->off_packs + (size_t)h->num_packs * sizeof(pat_pack));
  p->off_pages = align16(p->off_pack_queries + (size_t)h->num_pack_queries * sizeof(pat_pack_query));
  p->off_page_masks = align16(p->off_pages + (size_t)h->num_pages * sizeof(int32_t));
  p->off_merges = align16(p->off_page_masks + (h->page_masks ? (size_t)h->num_pages * sizeof(uint32_t) : 0));
  if (!h->page_masks) p->off_page_masks = 0;
  p->meta_bytes = align16(p->off_merges + (size_t)h->num_merges * sizeof(pat_merge_item));
  p->num_launches = h->num_groups;
  memcpy(p->launches, h->groups, (size_t)h->num_groups * sizeof *h->groups);
  p->merge_grid = h->num_merges;
  p->ws_slots = h->num_slots;

  const pat_cuda *cu = ctx->cu;
  char *e = ctx->err;
  size_t el = sizeof ctx->err;
  if (plan_alloc(p)) goto fail;
  char *s = p->pinned;
  memcpy(s + p->off_packs, h->packs, (size_t)h->num_packs * sizeof(pat_pack));
  memcpy(s + p->off_pack_queries, h->pack_queries, (size_t)h->num_pack_queries * sizeof(pat_pack_query));
  memcpy(s + p->off_pages, h->pages, (size_t)h->num_pages * sizeof(int32_t));
  if (h->page_masks) memcpy(s + p->off_page_masks, h->page_masks, (size_t)h->num_pages * sizeof(uint32_t));
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

/* ---- capacity plans ---- */

/* The padded layout of caps on ctx's spec. */
static pat_status make_layout(pat_context *ctx, const pat_plan_caps *c, pat_pad_layout *l)
{
  memset(l, 0, sizeof *l);
  if (c->max_packs < 0)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "capacity: max_packs %d is negative", c->max_packs);
  if (c->max_pack_queries < 1 || c->max_pages < 1)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "capacity: max_pack_queries (%d) and max_pages (%d) must be >= 1",
                    c->max_pack_queries, c->max_pages);
  l->num_tiles = ctx->spec.num_tiles;
  for (int t = 0; t < l->num_tiles; t++) {
    l->tile_m[t] = ctx->spec.tiles[t].m;
    l->tile_wgmma[t] = ctx->spec.tiles[t].wgmma;
    l->tile_packs[t] = c->tile_packs[t] > 0 ? c->tile_packs[t] : c->tile_packs[t] == 0 ? c->max_packs : 0;
  }
  l->max_pack_queries = c->max_pack_queries;
  l->max_pages = c->max_pages;
  l->max_merges = c->max_merges;
  l->max_slots = c->max_slots;
  if (pat_pad_layout_init(l, ctx->err, sizeof ctx->err)) return PAT_ERR_INVALID_ARG;
  return PAT_OK;
}

/* Writes p->host padded into the pinned buffer (p's previous upload must be done) and uploads
** what changed on `stream`: packs and merges whole (padding included), the used prefix of
** pack_queries and pages. Fails with "capacity: ..." without writing when it does not fit. */
static pat_status pad_and_upload(pat_plan *p, const pat_host_plan *h, const pat_pad_layout *l,
                                 pat_stream stream)
{
  pat_context *ctx = p->ctx;
  const pat_cuda *cu = ctx->cu;
  char *e = ctx->err;
  size_t el = sizeof ctx->err;
  char *s = p->pinned;
  if (pat_plan_pad(h, p->gqa, l, (pat_pack *)(s + p->off_packs), (pat_pack_query *)(s + p->off_pack_queries),
                   (int32_t *)(s + p->off_pages), (uint32_t *)(s + p->off_page_masks),
                   (pat_merge_item *)(s + p->off_merges), e, el) < 0)
    return PAT_ERR_INVALID_ARG;
  CUstream cs = (CUstream)stream;
  size_t npq = (size_t)h->num_pack_queries * sizeof(pat_pack_query), npg = (size_t)h->num_pages * sizeof(int32_t);
  size_t nmw = h->page_masks ? (size_t)h->num_pages * sizeof(uint32_t) : 0;
  if (PAT_CU(cu, cu->cuMemcpyHtoDAsync(p->meta, p->pinned, p->off_pack_queries, cs), e, el) ||
      (npq && PAT_CU(cu, cu->cuMemcpyHtoDAsync(p->meta + p->off_pack_queries, s + p->off_pack_queries, npq, cs), e, el)) ||
      (npg && PAT_CU(cu, cu->cuMemcpyHtoDAsync(p->meta + p->off_pages, s + p->off_pages, npg, cs), e, el)) ||
      (nmw && PAT_CU(cu, cu->cuMemcpyHtoDAsync(p->meta + p->off_page_masks, s + p->off_page_masks, nmw, cs), e, el)) ||
      PAT_CU(cu, cu->cuEventRecord(p->uploaded, cs), e, el))
    return PAT_ERR_CUDA;
  return PAT_OK;
}

PAT_API pat_status pat_plan_create_capacity(pat_context *ctx, const pat_batch_desc *b,
                                            const pat_plan_caps *caps, pat_stream stream, pat_plan **out)
{
  if (!ctx) return PAT_ERR_INVALID_ARG;
  if (!out || !b || !caps)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_plan_create_capacity: batch, caps and out are required");
  *out = NULL;
  int gqa = 0;
  pat_status st = check_batch(ctx, b, &gqa);
  if (st) return st;
  pat_pad_layout l;
  if ((st = make_layout(ctx, caps, &l))) return st;
  pat_plan *p = plan_new(ctx, b, gqa);
  if (!p) return pat_fail(ctx, PAT_ERR_NO_MEMORY, "out of memory");
  p->capacity = 1;
  p->caps = *caps;
  if ((st = schedule(ctx, b, gqa, &p->scratch, &p->host, &p->build_us))) {
    pat_sched_scratch_free(&p->scratch);
    free(p);
    return st;
  }
  /* Layout: packs | merges (uploaded whole: padding matters) | pack_queries | pages | page
  ** masks (a fixed address whether or not a step has masked packs). */
  p->off_packs = 0;
  p->off_merges = align16((size_t)l.total_packs * sizeof(pat_pack));
  p->off_pack_queries = align16(p->off_merges + (size_t)l.max_merges * sizeof(pat_merge_item));
  p->off_pages = align16(p->off_pack_queries + (size_t)l.max_pack_queries * sizeof(pat_pack_query));
  p->off_page_masks = align16(p->off_pages + (size_t)l.max_pages * sizeof(int32_t));
  p->meta_bytes = align16(p->off_page_masks + (size_t)l.max_pages * sizeof(uint32_t));
  /* Fixed launches, larger tiles first: the prefix packs, the long poles, start at once (the
  ** order pat_sched_build gives a plan's groups, by tile alone). */
  for (int t = 0; t < l.num_tiles; t++) {
    if (l.tile_packs[t] <= 0) continue;
    int h = p->num_launches++;
    for (; h > 0 && ctx->spec.tiles[p->launches[h - 1].tile].m < ctx->spec.tiles[t].m; h--)
      p->launches[h] = p->launches[h - 1];
    p->launches[h] = (pat_tile_group){t, l.tile_begin[t], l.tile_packs[t], 0};  /* any length */
  }
  p->merge_grid = l.max_merges;
  p->ws_slots = l.max_slots;

  if ((st = plan_alloc(p))) goto fail;
  if (!caps->external_workspace) {
    p->own_ws_bytes = pat_plan_workspace_size(p);
    if (p->own_ws_bytes &&
        PAT_CU(ctx->cu, ctx->cu->cuMemAlloc(&p->own_ws, p->own_ws_bytes), ctx->err, sizeof ctx->err)) {
      st = PAT_ERR_NO_MEMORY;
      goto fail;
    }
  }
  /* Every kernel the plan launches is loaded now: pat_forward never compiles for it. */
  for (int i = 0; i < p->num_launches; i++)
    if ((st = pat_jit_ensure(ctx, pat_kernel_index(ctx, p->launches[i].tile, gqa)))) goto fail;
  if (p->merge_grid > 0 && (st = pat_jit_ensure(ctx, ctx->src.count - 1))) goto fail;
  if ((st = pad_and_upload(p, &p->host, &l, stream))) goto fail;
  *out = p;
  return PAT_OK;

fail:
  pat_plan_destroy(p);
  return st;
}

PAT_API pat_status pat_plan_update(pat_plan *p, const pat_batch_desc *b, pat_stream stream)
{
  if (!p) return PAT_ERR_INVALID_ARG;
  pat_context *ctx = p->ctx;
  if (!p->capacity)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_plan_update: the plan was not made by pat_plan_create_capacity");
  if (!b) return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_plan_update: batch is required");
  if (b->q_heads != p->q_heads || b->kv_heads != p->kv_heads)
    return pat_fail(ctx, PAT_ERR_INVALID_ARG, "pat_plan_update: %d q / %d kv heads, the plan was created for %d / %d",
                    b->q_heads, b->kv_heads, p->q_heads, p->kv_heads);
  int gqa = 0;
  pat_status st = check_batch(ctx, b, &gqa);
  if (st) return st;
  pat_pad_layout l;
  if ((st = make_layout(ctx, &p->caps, &l))) return st;
  pat_host_plan h;
  double build_us = 0;
  if ((st = schedule(ctx, b, gqa, &p->scratch, &h, &build_us))) return st;
  const pat_cuda *cu = ctx->cu;
  /* The pinned buffer is rewritten: the previous upload from it must have run. */
  if (PAT_CU(cu, cu->cuCtxSetCurrent(ctx->cuctx), ctx->err, sizeof ctx->err) ||
      PAT_CU(cu, cu->cuEventSynchronize(p->uploaded), ctx->err, sizeof ctx->err)) {
    pat_host_plan_free(&h);
    return PAT_ERR_CUDA;
  }
  if ((st = pad_and_upload(p, &h, &l, stream))) {
    pat_host_plan_free(&h);
    return st;
  }
  pat_sched_scratch_recycle(&p->scratch, &p->host);  /* its arrays serve the next update */
  p->host = h;
  p->build_us = build_us;
  return PAT_OK;
}

static int32_t scaled(int64_t n, double headroom)
{
  double x = (double)n * headroom;
  if (x >= (double)INT32_MAX) return INT32_MAX;
  int32_t v = (int32_t)x;
  if ((double)v < x) v++;
  return v < 1 ? 1 : v;
}

PAT_API pat_status pat_plan_caps_from(const pat_plan *p, double headroom, pat_plan_caps *caps)
{
  if (!p || !caps || !(headroom >= 1.0)) return PAT_ERR_INVALID_ARG;
  const pat_host_plan *h = &p->host;
  memset(caps, 0, sizeof *caps);
  caps->max_packs = scaled(h->num_packs, headroom);
  caps->max_pack_queries = scaled(h->num_pack_queries, headroom);
  caps->max_pages = scaled(h->num_pages, headroom);
  caps->max_merges = scaled(h->num_merges, headroom);
  caps->max_slots = scaled(h->num_slots, headroom);
  return PAT_OK;
}

PAT_API void pat_plan_caps_max(pat_plan_caps *c, const pat_plan_caps *o)
{
  if (!c || !o) return;
#define WIDEN(f) c->f = o->f > c->f ? o->f : c->f
  WIDEN(max_packs);
  WIDEN(max_pack_queries);
  WIDEN(max_pages);
  WIDEN(max_merges);
  WIDEN(max_slots);
#undef WIDEN
  for (int t = 0; t < PAT_CAPS_MAX_TILES; t++)
    c->tile_packs[t] = (c->tile_packs[t] == 0 || o->tile_packs[t] == 0) ? 0
                       : o->tile_packs[t] > c->tile_packs[t] ? o->tile_packs[t] : c->tile_packs[t];
  c->external_workspace = c->external_workspace && o->external_workspace;
}

PAT_API int pat_plan_get_caps(const pat_plan *p, pat_plan_caps *caps)
{
  if (!p || !p->capacity) return 0;
  if (caps) *caps = p->caps;
  return 1;
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
  if (p->own_ws) cu->cuMemFree(p->own_ws);
  if (p->meta) cu->cuMemFree(p->meta);
  if (p->pinned) cu->cuMemFreeHost(p->pinned);
  if (p->capacity) pat_host_plan_free(&p->host);
  else recycle_host_plan(p->ctx, &p->host);
  pat_sched_scratch_free(&p->scratch);
  free(p);
}

PAT_API pat_status pat_plan_get_info(const pat_plan *p, pat_plan_info *info)
{
  if (!p || !info) return PAT_ERR_INVALID_ARG;
  info->num_packs = p->host.num_packs;
  info->num_ctas = p->host.num_packs * p->kv_heads;
  info->num_launches = p->num_launches + (p->merge_grid > 0);
  info->num_merges = p->host.num_merges;
  info->num_slots = p->host.num_slots;
  info->kv_tokens_read = p->host.kv_tokens_read;
  info->kv_tokens_unique = p->host.kv_tokens_unique;
  info->build_us = p->build_us;
  info->num_masked_packs = 0;
  for (int32_t i = 0; i < p->host.num_packs; i++) info->num_masked_packs += p->host.packs[i].masked != 0;
  return PAT_OK;
}

/* The workspace: partial outputs in the element type (fp16/bf16: 2 bytes) for ws_slots x
** q_heads, then their fp32 LSEs at this offset. */
size_t pat_plan_ws_lse_offset(const pat_plan *p)
{
  return align16((size_t)p->ws_slots * (size_t)p->q_heads * (size_t)p->ctx->spec.head_dim * 2);
}

PAT_API size_t pat_plan_workspace_size(const pat_plan *p)
{
  if (!p) return 0;
  return pat_plan_ws_lse_offset(p) + align16((size_t)p->ws_slots * (size_t)p->q_heads * sizeof(float));
}
