/* plan_pad.c: a host plan laid out at fixed capacities (fixed launch grids for CUDA graphs):
** per-tile pack regions padded with empty packs, merge items padded with empty items. */
#include "plan_pad.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pat_pad_layout_init(pat_pad_layout *l, char *err, size_t errlen)
{
  if (l->num_tiles < 1 || l->num_tiles > PAT_MAX_TILES) {
    snprintf(err, errlen, "capacity: %d tiles (1 .. %d)", l->num_tiles, PAT_MAX_TILES);
    return -1;
  }
  if (l->max_pack_queries < 0 || l->max_pages < 0 || l->max_merges < 0 || l->max_slots < 0) {
    snprintf(err, errlen, "capacity: max_pack_queries, max_pages, max_merges and max_slots must be >= 0");
    return -1;
  }
  int64_t total = 0;
  for (int t = 0; t < l->num_tiles; t++) {
    if (l->tile_packs[t] < 0) {
      snprintf(err, errlen, "capacity: tile %d has %d packs", t, l->tile_packs[t]);
      return -1;
    }
    l->tile_begin[t] = (int32_t)total;
    total += l->tile_packs[t];
    if (total > INT32_MAX) {
      snprintf(err, errlen, "capacity: %lld packs in all tiles, more than %d", (long long)total, INT32_MAX);
      return -1;
    }
  }
  if (total == 0) {
    snprintf(err, errlen, "capacity: no tile has packs (max_packs and tile_packs are all 0 or < 0)");
    return -1;
  }
  l->total_packs = (int32_t)total;
  return 0;
}

/* The region with room for a pack of `rows` rows: the smallest M >= rows, lowest index; an
** mma.sync tile for a masked pack. */
static int spill_target(const pat_pad_layout *l, const int32_t *fill, int32_t rows, int masked)
{
  int best = -1;
  for (int t = 0; t < l->num_tiles; t++)
    if (fill[t] < l->tile_packs[t] && l->tile_m[t] >= rows && !(masked && l->tile_wgmma[t]) &&
        (best < 0 || l->tile_m[t] < l->tile_m[best]))
      best = t;
  return best;
}

int pat_plan_pad(const pat_host_plan *h, int gqa, const pat_pad_layout *l, pat_pack *packs,
                 pat_pack_query *pack_queries, int32_t *pages, uint32_t *page_masks, pat_merge_item *merges,
                 char *err, size_t errlen)
{
  static const char *const names[] = {"max_pack_queries", "max_pages", "max_merges", "max_slots"};
  const int32_t have[] = {h->num_pack_queries, h->num_pages, h->num_merges, h->num_slots};
  const int32_t cap[] = {l->max_pack_queries, l->max_pages, l->max_merges, l->max_slots};
  for (int i = 0; i < 4; i++) {
    if (have[i] > cap[i]) {
      snprintf(err, errlen, "capacity: the batch needs %s %d, the plan has %d", names[i], have[i], cap[i]);
      return -1;
    }
  }
  int32_t *dest = malloc((size_t)(h->num_packs ? h->num_packs : 1) * sizeof *dest);
  if (!dest) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  /* Placement first (nothing written until everything fits): each group into its own tile's
  ** region, then what overflows into the closest larger tile with room. */
  int32_t fill[PAT_MAX_TILES] = {0};
  int moved = 0;
  for (int g = 0; g < h->num_groups; g++) {
    const pat_tile_group *grp = &h->groups[g];
    int t = grp->tile;
    if (t < 0 || t >= l->num_tiles) {
      snprintf(err, errlen, "capacity: the plan uses tile %d, the layout has %d", t, l->num_tiles);
      free(dest);
      return -1;
    }
    for (int32_t i = grp->pack_begin; i < grp->pack_begin + grp->num_packs; i++)
      dest[i] = fill[t] < l->tile_packs[t] ? l->tile_begin[t] + fill[t]++ : -1;
  }
  for (int g = 0; g < h->num_groups; g++) {
    const pat_tile_group *grp = &h->groups[g];
    for (int32_t i = grp->pack_begin; i < grp->pack_begin + grp->num_packs; i++) {
      if (dest[i] >= 0) continue;
      int32_t rows = h->packs[i].num_queries * gqa;
      int u = spill_target(l, fill, rows, h->packs[i].masked);
      if (u < 0) {
        int t = grp->tile;
        snprintf(err, errlen,
                 "capacity: the batch has %d packs for tile %d (M %d), its launch has %d (max_packs / "
                 "tile_packs), and no tile with M >= %d has room left",
                 grp->num_packs, t, l->tile_m[t], l->tile_packs[t], rows);
        free(dest);
        return -1;
      }
      dest[i] = l->tile_begin[u] + fill[u]++;
      moved++;
    }
  }
  for (int t = 0; t < l->num_tiles; t++)
    if (fill[t] < l->tile_packs[t])
      memset(packs + l->tile_begin[t] + fill[t], 0, (size_t)(l->tile_packs[t] - fill[t]) * sizeof *packs);
  for (int32_t i = 0; i < h->num_packs; i++) packs[dest[i]] = h->packs[i];
  free(dest);
  if (h->num_pack_queries) memcpy(pack_queries, h->pack_queries, (size_t)h->num_pack_queries * sizeof *pack_queries);
  if (h->num_pages) memcpy(pages, h->pages, (size_t)h->num_pages * sizeof *pages);
  if (page_masks && h->page_masks && h->num_pages)
    memcpy(page_masks, h->page_masks, (size_t)h->num_pages * sizeof *page_masks);
  if (h->num_merges) memcpy(merges, h->merges, (size_t)h->num_merges * sizeof *merges);
  if (l->max_merges > h->num_merges)
    memset(merges + h->num_merges, 0, (size_t)(l->max_merges - h->num_merges) * sizeof *merges);
  return moved;
}
