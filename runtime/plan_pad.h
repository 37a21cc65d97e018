/* plan_pad.h: lays a host plan out at fixed capacities, so that every decode step launches
** the same grids (CUDA graphs): each tile's packs in a fixed region padded with empty packs,
** merge items padded with empty items. Host only, no CUDA. */
#ifndef PAT_PLAN_PAD_H
#define PAT_PLAN_PAD_H

#include <stddef.h>
#include <stdint.h>

#include "../gen/spec.h"
#include "plan.h"

/* Capacities resolved against a spec's tiles. */
typedef struct pat_pad_layout {
  int32_t num_tiles;
  int32_t tile_m[PAT_MAX_TILES];      /* rows of a CTA of each tile (spec tiles[t].m) */
  int32_t tile_wgmma[PAT_MAX_TILES];  /* 1: a wgmma tile, which takes no masked pack */
  int32_t tile_packs[PAT_MAX_TILES];  /* packs of each tile's region; 0: no launch */
  int32_t tile_begin[PAT_MAX_TILES];  /* first pack of each region (set by pat_pad_layout_init) */
  int32_t total_packs;                /* sum of tile_packs (set by pat_pad_layout_init) */
  int32_t max_pack_queries, max_pages, max_merges, max_slots;
} pat_pad_layout;

/* Fills tile_begin and total_packs from num_tiles and tile_packs. Returns 0, or -1 with a
** message in err when a count is negative, no tile has a region, or the total overflows. */
int pat_pad_layout_init(pat_pad_layout *l, char *err, size_t errlen);

/* Writes plan h (scheduled for GQA ratio gqa) laid out at l: packs[l->total_packs] with tile
** t's packs at tile_begin[t] .. and the rest of each region empty (all fields 0); packs of a
** tile whose region is full move to the region of the tile with the smallest M >= the pack's
** rows that has room (not a wgmma tile for a masked pack); page_masks (when not NULL) get the
** plan's mask words, if it has any; merges[l->max_merges] with empty items (num_splits 0) after the real
** ones; pack_queries and pages copied as they are (entries past the plan's counts untouched).
** Pack fields keep indexing pack_queries and pages, so the layout runs as the plan does.
** Returns the number of packs moved to another tile's region (>= 0), or -1 when the plan
** does not fit, with "capacity: ..." naming the capacity in err; then nothing is written.
** Reentrant. */
int pat_plan_pad(const pat_host_plan *h, int gqa, const pat_pad_layout *l, pat_pack *packs,
                 pat_pack_query *pack_queries, int32_t *pages, uint32_t *page_masks, pat_merge_item *merges,
                 char *err, size_t errlen);

#endif
