/* plan.h: the pack-forward-merge schedule of one batch on the host. The element types are
** the kernels' own (templates/device/pat_params.h), so the plan uploads as it is. */
#ifndef PAT_PLAN_H
#define PAT_PLAN_H

#include <stdint.h>
#include "../templates/device/pat_params.h"

/* The packs of one tile shape: one launch. */
typedef struct pat_tile_group {
  int32_t tile;        /* index into spec.tiles */
  int32_t pack_begin;  /* index of its first pack in pat_host_plan.packs */
  int32_t num_packs;
  int32_t max_kv_len;  /* its longest pack's kv_len (sizes the launch's K/V ring); 0: unknown */
} pat_tile_group;

/* A whole plan on the host; the arrays are owned by the plan (pat_host_plan_free). */
typedef struct pat_host_plan {
  int32_t num_queries;
  int32_t num_packs;         pat_pack       *packs;        /* grouped by tile */
  int32_t num_pack_queries;  pat_pack_query *pack_queries;
  int32_t num_pages;         int32_t        *pages;        /* page ids, per pack */
  uint32_t *page_masks;      /* [num_pages] mask words (PAT_MASK_WORD), NULL when no pack is masked */
  int32_t num_merges;        pat_merge_item *merges;
  int32_t num_slots;         /* workspace slots (partial results) in use */
  int32_t num_groups;        pat_tile_group *groups;
  int64_t kv_tokens_read;    /* sum over packs of kv_len (per kv head) */
  int64_t kv_tokens_unique;  /* distinct (page, offset) tokens attended to */
} pat_host_plan;

void pat_host_plan_free(pat_host_plan *plan);

#endif
