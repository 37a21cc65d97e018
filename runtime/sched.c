/* sched.c: the pack scheduler's entry points: one build runs the stages of
** sched_internal.h in order (batch checks, radix tree, page checks, packs, KV splits,
** assembly) on working buffers carved from the scratch. See docs/scheduler.md. Work is
** per page and per tree node, never per token. */
#include "sched_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void pat_set_err(char *err, size_t errlen, const char *fmt, ...)
{
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

const char *pat_sched_mode_name(pat_sched_mode mode)
{
  return mode == PAT_SCHED_DIRECT ? "direct" : mode == PAT_SCHED_PREFIX ? "prefix" : "unknown";
}

/* Carves the per-call arrays out of one scratch buffer. Returns -1 when out of memory. */
static int alloc_scratch(ctx *c)
{
  size_t n = (size_t)c->n, nn = 2 * n + 1;
  c->hcap = pow2_at_least(n * 2);
  size_t bytes = nn * sizeof(node)
               + (8 * n + 1 + 2 * c->hcap + (size_t)c->cap + 1 + 2 * nn) * sizeof(int32_t);
  char *p = sched_scratch(c, SB_BLOCK, bytes);
  if (!p) return -1;
  c->block = p;
  c->nodes = (node *)(void *)p;           p += nn * sizeof(node);
  int32_t *w = (int32_t *)(void *)p;
  c->nf = w;    w += n;
  c->tl = w;    w += n;
  c->order = w; w += n;
  c->cnt = w;   w += n;
  c->gid = w;   w += n;
  c->gcnt = w;  w += n + 1;
  c->tmp = w;   w += n;
  c->gslot = w; w += n;
  c->hkey = w;  w += c->hcap;
  c->hval = w;  w += c->hcap;
  c->mr = w;    w += (size_t)c->cap + 1;
  /* inh and sa of emit_prefix: the last 2 x nn entries */
  return 0;
}

int pat_sched_build(const pat_batch *b, const pat_sched_opts *o, pat_host_plan *plan,
                    char *err, size_t errlen)
{
  pat_sched_scratch sc = {0};
  int rc = pat_sched_build_with(b, o, &sc, plan, err, errlen);
  pat_sched_scratch_free(&sc);
  return rc;
}

int pat_sched_build_with(const pat_batch *b, const pat_sched_opts *o, pat_sched_scratch *scratch_bufs,
                         pat_host_plan *plan, char *err, size_t errlen)
{
  if (err && errlen) err[0] = '\0';
  if (!plan) { pat_set_err(err, errlen, "no plan to fill"); return -1; }
  memset(plan, 0, sizeof *plan);
  if (!scratch_bufs) { pat_set_err(err, errlen, "no scratch buffers"); return -1; }
  if (sched_check_batch(b, o, err, errlen)) return -1;

  ctx c;
  memset(&c, 0, sizeof c);
  c.sc = scratch_bufs;
  c.b = b;
  c.o = o;
  c.s = o->spec;
  c.bt = b->block_table;
  c.stride = (size_t)b->block_table_stride;
  c.n = b->num_queries;
  c.ps = b->page_size;
  c.gqa = b->gqa;
  c.cap = largest_m(c.s, 0) / c.gqa;
  c.ctok1 = ctok(&c, mfit(c.s, c.gqa, 0));
  c.cpack1 = cpack(mfit(c.s, c.gqa, 0));
  /* merge: a partial O written and read back per q head, against 4 x head_dim bytes of K and
  ** V per token: 2 x 4 x D x gqa / (4 x D) = 2 x gqa tokens for fp32 partials, plus the LSE.
  ** Partials are 2-byte now; 0.5 to 4 x gqa + 1 measured the same (H200, bench/NOTES.md), so
  ** the weight is kept. */
  c.cmerge = 2.0 * c.gqa + 1.0;
  /* Masked packs: mma.sync tiles only; lo and hi of a mask word are 8-bit. They aim at
  ** ctas_per_sm CTAs an SM were every query in one: more queries a pack re-read fewer shared
  ** pages, fewer leave SMs idle, more start a second wave. The split policy leaves them
  ** alone (split_packs). */
  c.mcap = largest_m(c.s, 1) / c.gqa < 255 ? largest_m(c.s, 1) / c.gqa : 255;
  if (!c.s->split.masked_packs) c.mcap = 0; /* the spec turned them off */
  {
    int64_t ctas = (int64_t)(c.s->split.ctas_per_sm > 0 ? c.s->split.ctas_per_sm : 1) * (o->num_sms > 0 ? o->num_sms : 1);
    /* whole waves: one pack more than fits starts a second wave of kv_heads CTAs */
    int64_t packs = ctas / o->kv_heads > 1 ? ctas / o->kv_heads : 1;
    c.grid_packs = (int32_t)packs;
    int64_t q = (c.n + packs - 1) / packs;
    c.mchunk = (int32_t)(q < 2 ? 2 : q > c.mcap ? c.mcap : q);
  }

  size_t n = (size_t)c.n;
  c.bpcap = c.n + 16;
  c.bp = sched_scratch(&c, SB_BPACKS, (size_t)c.bpcap * sizeof *c.bp);
  int rc = -1;
  int64_t unique = 0;
  if (!c.bp || alloc_scratch(&c)) { pat_set_err(err, errlen, "out of memory"); goto out; }
  int32_t *inh = c.mr + c.cap + 1, *sa = inh + (2 * n + 1);
  c.mf = mfit(c.s, c.cap * c.gqa, 0);
  for (int32_t r = 0; r <= c.cap; r++) c.mr[r] = mfit(c.s, r * c.gqa, 0);
  memset(c.hval, 0xff, c.hcap * sizeof *c.hval);  /* -1: empty */
  {
    const int32_t *sl = b->seq_lens;
    int32_t ps = c.ps, ntails = 0;
    int64_t tail_sum = 0;
    if ((ps & (ps - 1)) == 0) {
      int sh = __builtin_ctz((unsigned)ps);
      for (int32_t q = 0; q < c.n; q++) {
        c.nf[q] = sl[q] >> sh;
        c.tl[q] = sl[q] & (ps - 1);
      }
    } else {
      for (int32_t q = 0; q < c.n; q++) {
        c.nf[q] = sl[q] / ps;
        c.tl[q] = sl[q] - c.nf[q] * ps;
      }
    }
    for (int32_t q = 0; q < c.n; q++) {
      c.order[q] = q;
      ntails += c.tl[q] > 0;
      tail_sum += c.tl[q];
    }
    c.ntails = ntails;
    c.tail_tokens = tail_sum;
  }
  sched_build_tree(&c);
  if (sched_check_pages(&c, &unique, err, errlen)) goto out;

  if (o->mode == PAT_SCHED_PREFIX) {
    c.stack = sched_scratch(&c, SB_STACK, (size_t)c.num_nodes * sizeof *c.stack);
    if (!c.stack) { pat_set_err(err, errlen, "out of memory"); goto out; }
    sched_compute_costs(&c);
    if (sched_emit_prefix(&c, inh, sa)) { pat_set_err(err, errlen, "out of memory"); goto out; }
  } else {
    for (int32_t i = 0; i < c.n; i++) {
      int32_t q = c.order[i];
      push_bpack(&c, i, 1, 0, num_pages_of(&c, q), b->seq_lens[q]);
      c.cnt[q] = 1;
    }
  }
  if (sched_split_packs(&c, c.cnt) || sched_assemble(&c, c.cnt, plan)) {
    pat_host_plan_free(plan);
    pat_set_err(err, errlen, "out of memory or plan too large");
    goto out;
  }
  plan->kv_tokens_unique = unique;
  rc = 0;
out:
  /* every working buffer stays in the scratch */
  return rc;
}
