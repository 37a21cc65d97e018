/* sched_check.c: the scheduler's input checks: the batch's plain fields per query, then, on
** the radix tree, the page rules (ids in range, each page once per query, a shared page at
** one position in every row, partial last pages never shared). The fast path keeps one
** "seen" flag per page; only a batch that trips it takes the exact path that words the
** message. */
#include "sched_internal.h"

#include <string.h>

/* ---- validation of the plain fields, per query ---- */
int sched_check_batch(const pat_batch *b, const pat_sched_opts *o, char *err, size_t errlen)
{
  if (!b || !o || !o->spec) { pat_set_err(err, errlen, "batch, options and spec are required"); return -1; }
  const pat_spec *s = o->spec;
  if (b->num_queries < 1) { pat_set_err(err, errlen, "batch has %d queries (need at least 1)", (int)b->num_queries); return -1; }
  if (!b->seq_lens || !b->block_table) { pat_set_err(err, errlen, "batch has no seq_lens or block_table"); return -1; }
  if (b->page_size < 1) { pat_set_err(err, errlen, "page size %d is not positive", (int)b->page_size); return -1; }
  if (s->page_size > 0 && s->page_size != b->page_size) {
    pat_set_err(err, errlen, "batch page size %d differs from the spec's %d", (int)b->page_size, s->page_size);
    return -1;
  }
  if (b->block_table_stride < 1) { pat_set_err(err, errlen, "block table stride %d is not positive", (int)b->block_table_stride); return -1; }
  if (b->num_pages_total < 1) { pat_set_err(err, errlen, "KV cache has %d pages", (int)b->num_pages_total); return -1; }
  if (b->gqa < 1) { pat_set_err(err, errlen, "GQA ratio %d is not positive", (int)b->gqa); return -1; }
  if (s->num_gqa > 0) {
    int ok = 0;
    for (int i = 0; i < s->num_gqa; i++) ok |= s->gqa[i] == b->gqa;
    if (!ok) { pat_set_err(err, errlen, "GQA ratio %d is not built by spec '%s'", (int)b->gqa, s->name); return -1; }
  }
  if (s->num_tiles < 1) { pat_set_err(err, errlen, "spec '%s' has no tiles", s->name); return -1; }
  int mmax = largest_m(s, 0);
  if (mmax < b->gqa) {
    pat_set_err(err, errlen, "GQA ratio %d exceeds the largest tile M %d", (int)b->gqa, mmax);
    return -1;
  }
  if (o->num_sms < 1 || o->kv_heads < 1) {
    pat_set_err(err, errlen, "num_sms (%d) and kv_heads (%d) must be positive", o->num_sms, o->kv_heads);
    return -1;
  }
  if (o->mode != PAT_SCHED_PREFIX && o->mode != PAT_SCHED_DIRECT) {
    pat_set_err(err, errlen, "unknown scheduler mode %d", (int)o->mode);
    return -1;
  }
  int64_t cap_tokens = (int64_t)b->block_table_stride * b->page_size;
  for (int32_t q = 0; q < b->num_queries; q++) {
    int32_t len = b->seq_lens[q];
    if (len < 1) { pat_set_err(err, errlen, "query %d: seq_len %d (need at least 1)", (int)q, (int)len); return -1; }
    if (len > cap_tokens) {
      pat_set_err(err, errlen, "query %d: seq_len %d exceeds its block table row (%d pages x %d tokens)",
              (int)q, (int)len, (int)b->block_table_stride, (int)b->page_size);
      return -1;
    }
  }
  return 0;
}

/* ---- page checks: ids in range, each page once per query, shared pages at one position,
** partial last pages never shared. One table entry per distinct page of the tree (a page
** shared by a node is looked at once, not once per query). Codes: position x 2 + partial. */

/* Slow path, only on error: finds who uses `page` and says what is wrong. */
static void report_conflict(const ctx *c, int32_t page, char *err, size_t errlen)
{
  int32_t fq = -1, fpos = -1, fpart = 0;
  for (int32_t q = 0; q < c->n; q++) {
    const int32_t *row = row_of(c, q);
    int32_t np = num_pages_of(c, q), first = -1;
    for (int32_t i = 0; i < np; i++) {
      if (row[i] != page) continue;
      if (first >= 0) {
        pat_set_err(err, errlen, "query %d: page %d appears twice (positions %d and %d)",
                (int)q, (int)page, (int)first, (int)i);
        return;
      }
      first = i;
    }
    if (first < 0) continue;
    int part = first == c->nf[q];  /* the partial last page */
    if (fq < 0) { fq = q; fpos = first; fpart = part; continue; }
    if (part || fpart) {
      int32_t pq = part ? q : fq, ppos = part ? first : fpos;
      int32_t oq = part ? fq : q, opos = part ? fpos : first;
      pat_set_err(err, errlen,
              "query %d: page %d is its partial last page (position %d) and is also used by "
              "query %d at position %d; a partial page cannot be shared",
              (int)pq, (int)page, (int)ppos, (int)oq, (int)opos);
      return;
    }
    if (first != fpos) {
      pat_set_err(err, errlen,
              "query %d: page %d at position %d is also used by query %d at position %d; a "
              "shared page must hold the same tokens (same position) in every query",
              (int)q, (int)page, (int)first, (int)fq, (int)fpos);
      return;
    }
  }
  pat_set_err(err, errlen, "page %d: inconsistent use", (int)page);
}

typedef struct ptab {  /* page id -> code: a direct array, or an open-addressing map */
  int direct;
  size_t cap;
  int32_t *key, *code;
} ptab;

/* Returns the slot of `page` (inserting it with code -1 when absent). */
static int32_t *ptab_slot(ptab *t, int32_t page)
{
  if (t->direct) return &t->code[page];
  size_t h = hash32((uint32_t)page) & (t->cap - 1);
  while (t->code[h] != -1 && t->key[h] != page) h = (h + 1) & (t->cap - 1);
  t->key[h] = page;
  return &t->code[h];
}

/* The message for a page id outside the cache; returns -1. */
static int out_of_range(int32_t q, int32_t page, int32_t pos, int32_t npt, char *err, size_t errlen)
{
  pat_set_err(err, errlen, "query %d: page id %d at position %d is out of range [0, %d)",
              (int)q, (int)page, (int)pos, (int)npt);
  return -1;
}

static int check_pages_exact(ctx *c, int64_t *unique_tokens, char *err, size_t errlen)
{
  size_t total = (size_t)c->n;
  for (int32_t v = 0; v < c->num_nodes; v++) total += (size_t)c->nodes[v].npages;
  int32_t npt = c->b->num_pages_total;
  ptab t = {0, 0, NULL, NULL};
  if ((size_t)npt <= 4 * total) {
    t.direct = 1;
    t.cap = (size_t)npt;
  } else {
    t.cap = pow2_at_least(total * 2);
    t.key = sched_scratch(c, SB_PT_KEY, t.cap * sizeof *t.key);
  }
  t.code = sched_scratch(c, SB_PT_CODE, t.cap * sizeof *t.code);
  if (!t.code || (!t.direct && !t.key)) {
    pat_set_err(err, errlen, "out of memory");
    return -1;
  }
  memset(t.code, 0xff, t.cap * sizeof *t.code);
  int64_t full = 0, tails = 0;
  int rc = 0;
  for (int32_t v = 0; v < c->num_nodes && rc == 0; v++) {
    const node *nd = &c->nodes[v];
    int32_t q = c->order[nd->q_lo];
    const int32_t *row = row_of(c, q);
    for (int32_t i = 0; i < nd->npages; i++) {
      int32_t page = row[nd->pos + i], pos = nd->pos + i;
      if (page < 0 || page >= npt) { rc = out_of_range(q, page, pos, npt, err, errlen); break; }
      int32_t *code = ptab_slot(&t, page);
      if (*code == -1) { *code = pos * 2; full++; }
      else if (*code != pos * 2) { report_conflict(c, page, err, errlen); rc = -1; break; }
    }
  }
  for (int32_t q = 0; q < c->n && rc == 0; q++) {
    int32_t tt = c->tl[q];
    if (tt == 0) continue;
    int32_t pos = c->nf[q], page = row_of(c, q)[pos];
    if (page < 0 || page >= npt) { rc = out_of_range(q, page, pos, npt, err, errlen); break; }
    int32_t *code = ptab_slot(&t, page);
    if (*code != -1) { report_conflict(c, page, err, errlen); rc = -1; break; }
    *code = pos * 2 + 1;
    tails += tt;
  }
  *unique_tokens = full * c->ps + tails;
  return rc;
}

/* The page checks of a valid batch: every page id of the tree's runs and partial pages is in
** range and distinct. Returns 0 (and the distinct tokens) when so, 1 when some page is out of
** range or met twice (which may still be valid: the same page at the same position under two
** different prefixes; check_pages_exact decides and words the message), -1 when out of
** memory. Only "seen" flags are kept: a byte per page id when the cache is small enough to
** clear cheaply, else an open-addressing set of the ids met. */
static int check_pages_fast(ctx *c, int64_t *unique_tokens)
{
  const uint32_t npt = (uint32_t)c->b->num_pages_total;
  const int64_t total = c->tree_pages + c->ntails;
  int rc = 0;
  if ((int64_t)npt <= 64 * total + 4096) {
    unsigned char *seen = sched_scratch(c, SB_SEEN, npt);
    if (!seen) return -1;
    memset(seen, 0, npt);
    unsigned acc = 0;
    for (int32_t v = 0; v < c->num_nodes && acc == 0; v++) {
      const node *nd = &c->nodes[v];
      const int32_t *row = row_of(c, c->order[nd->q_lo]) + nd->pos;
      const int32_t np = nd->npages;
#pragma GCC unroll 4
      for (int32_t i = 0; i < np; i++) {
        uint32_t p = (uint32_t)row[i];
        if (p >= npt) { acc = 1; break; }
        acc |= seen[p];
        seen[p] = 1;
      }
    }
    for (int32_t q = 0; q < c->n && acc == 0; q++) {
      if (c->tl[q] == 0) continue;
      uint32_t p = (uint32_t)row_of(c, q)[c->nf[q]];
      if (p >= npt) { acc = 1; break; }
      acc |= seen[p];
      seen[p] = 1;
    }
    rc = acc != 0;
  } else {
    size_t cap = pow2_at_least((size_t)total * 2), mask = cap - 1;
    int32_t *key = sched_scratch(c, SB_SEEN, cap * sizeof *key);
    if (!key) return -1;
    memset(key, 0xff, cap * sizeof *key);  /* -1: empty (valid ids are >= 0) */
    for (int32_t v = 0; v < c->num_nodes && rc == 0; v++) {
      const node *nd = &c->nodes[v];
      const int32_t *row = row_of(c, c->order[nd->q_lo]) + nd->pos;
      for (int32_t i = 0; i < nd->npages && rc == 0; i++) {
        int32_t p = row[i];
        if ((uint32_t)p >= npt) { rc = 1; break; }
        size_t h = hash32((uint32_t)p) & mask;
        while (key[h] >= 0 && key[h] != p) h = (h + 1) & mask;
        if (key[h] == p) rc = 1;
        key[h] = p;
      }
    }
    for (int32_t q = 0; q < c->n && rc == 0; q++) {
      if (c->tl[q] == 0) continue;
      int32_t p = row_of(c, q)[c->nf[q]];
      if ((uint32_t)p >= npt) { rc = 1; break; }
      size_t h = hash32((uint32_t)p) & mask;
      while (key[h] >= 0 && key[h] != p) h = (h + 1) & mask;
      if (key[h] == p) rc = 1;
      key[h] = p;
    }
  }
  if (rc == 0) *unique_tokens = c->tree_pages * c->ps + c->tail_tokens;
  return rc;
}

int sched_check_pages(ctx *c, int64_t *unique_tokens, char *err, size_t errlen)
{
  int rc = check_pages_fast(c, unique_tokens);
  if (rc < 0) { pat_set_err(err, errlen, "out of memory"); return -1; }
  return rc == 0 ? 0 : check_pages_exact(c, unique_tokens, err, errlen);
}
