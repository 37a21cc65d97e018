/* sched_scratch.c: the scheduler's working buffers, kept from one build to the next
** (pat_sched_scratch), and the arrays of a recycled plan that the next plan takes over. */
#include "sched_internal.h"

#include <stdlib.h>
#include <string.h>

void *sched_scratch(ctx *c, int id, size_t bytes)
{
  pat_sched_scratch *s = c->sc;
  if (bytes == 0) bytes = 1;
  if (s->cap[id] < bytes) {
    void *p = realloc(s->buf[id], bytes);
    if (!p) return NULL;
    s->buf[id] = p;
    s->cap[id] = bytes;
  }
  return s->buf[id];
}

void pat_sched_scratch_free(pat_sched_scratch *s)
{
  if (!s) return;
  for (int i = 0; i < PAT_SCHED_SCRATCH_BUFS; i++) free(s->buf[i]);
  memset(s, 0, sizeof *s);
}

/* A plan array of `bytes`: the recycled one of buffer `id` when large enough (the plan owns
** it from now on), else a new one. NULL when out of memory. */
void *sched_plan_array(ctx *c, int id, size_t bytes)
{
  pat_sched_scratch *s = c->sc;
  void *p = s->buf[id];
  if (p && s->cap[id] >= bytes) {
    s->buf[id] = NULL;
    s->cap[id] = 0;
    return p;
  }
  return malloc(bytes);
}

static void keep_array(pat_sched_scratch *s, int id, void *p, size_t bytes)
{
  free(s->buf[id]);
  s->buf[id] = p;
  s->cap[id] = p ? bytes : 0;
}

void pat_sched_scratch_recycle(pat_sched_scratch *s, pat_host_plan *plan)
{
  keep_array(s, SB_PLAN_PACKS, plan->packs, (size_t)plan->num_packs * sizeof *plan->packs);
  keep_array(s, SB_PLAN_PACK_QUERIES, plan->pack_queries, (size_t)plan->num_pack_queries * sizeof *plan->pack_queries);
  keep_array(s, SB_PLAN_PAGES, plan->pages, (size_t)plan->num_pages * sizeof *plan->pages);
  keep_array(s, SB_PLAN_PAGE_MASKS, plan->page_masks, (size_t)plan->num_pages * sizeof *plan->page_masks);
  keep_array(s, SB_PLAN_MERGES, plan->merges, (size_t)plan->num_merges * sizeof *plan->merges);
  keep_array(s, SB_PLAN_GROUPS, plan->groups, (size_t)plan->num_groups * sizeof *plan->groups);
  memset(plan, 0, sizeof *plan);
}

void pat_host_plan_free(pat_host_plan *plan)
{
  if (!plan) return;
  free(plan->packs);
  free(plan->pack_queries);
  free(plan->pages);
  free(plan->page_masks);
  free(plan->merges);
  free(plan->groups);
  memset(plan, 0, sizeof *plan);
}

