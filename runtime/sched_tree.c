/* sched_tree.c: the radix tree over the batch's block tables, built breadth first in place
** (queries reordered so that every subtree is a contiguous range). */
#include "sched_internal.h"

#include <string.h>

/* Length of the common prefix of a[0 .. lim) and b[0 .. lim). */
static inline int32_t common_prefix(const int32_t *a, const int32_t *b, int32_t lim)
{
  int32_t r = 0;
  if (lim > 16) {
    if (memcmp(a, b, (size_t)lim * sizeof *a) == 0) return lim;
  }
  for (; r + 2 <= lim; r += 2) {
    uint64_t x, y;
    memcpy(&x, a + r, sizeof x);
    memcpy(&y, b + r, sizeof y);
    if (x != y) break;
  }
  while (r < lim && a[r] == b[r]) r++;
  return r;
}

/* ---- radix tree: nodes in breadth-first order, children contiguous, subtrees contiguous
** ranges of order[]. A node's run extends while every query has the leader's page at the next
** position; its queries are then split, stably, into those that end there and groups by the
** next page id (in order of first appearance; open-addressing map reset per use). When the
** groups already come in that order (the usual case) order[] is left as it is. */
void sched_build_tree(ctx *c)
{
  int32_t n = c->n;
  size_t hcap = c->hcap;
  int32_t *hkey = c->hkey, *hval = c->hval, *gid = c->gid, *gcnt = c->gcnt;
  int32_t *tmp = c->tmp, *gslot = c->gslot, *order = c->order;
  const int32_t *nf = c->nf, *tl = c->tl;
  node *nodes = c->nodes;
  int64_t tree_pages = 0;
  int32_t nn = 1;
  memset(&nodes[0], 0, sizeof nodes[0]);
  nodes[0].q_hi = n;
  for (int32_t v = 0; v < nn; v++) {
    node *nd = &nodes[v];
    int32_t lo = nd->q_lo, hi = nd->q_hi, e = nd->pos;
    int32_t leader = order[lo];
    nd->child_lo = nn;
    if (hi - lo == 1) {  /* one query: its whole row, then it ends here */
      int32_t t = tl[leader];
      nd->npages = nf[leader] - e;
      nd->nterm = 1;
      nd->nchild = 0;
      nd->tails_pos = t > 0;
      nd->tails_sum = t;
      tree_pages += nd->npages;
      continue;
    }
    int32_t run = nf[leader] - e;
    /* a child's queries were grouped by the page at `e`: the first page is shared */
    int32_t skip = v > 0 ? 1 : 0;
    const int32_t *rl = row_of(c, leader) + e;
    for (int32_t i = lo + 1; i < hi && run > skip; i++) {
      int32_t q = order[i];
      int32_t lim = nf[q] - e < run ? nf[q] - e : run;
      run = skip + common_prefix(row_of(c, q) + e + skip, rl + skip, lim - skip);
    }
    nd->npages = run;
    tree_pages += run;
    int32_t end = e + run;
    /* partition: queries ending here first, then groups by the page at `end` */
    int32_t nterm = 0, ng = 0, last_key = 0, last_gid = 0, maxg = -1, tails_pos = 0;
    int sorted = 1, small = hi - lo <= 16;
    double tails_sum = 0;
    for (int32_t i = lo; i < hi; i++) {
      int32_t q = order[i];
      if (nf[q] == end) {
        gid[i - lo] = -1;
        nterm++;
        tails_pos += tl[q] > 0;
        tails_sum += tl[q];
        sorted &= maxg < 0;
        continue;
      }
      int32_t key = row_of(c, q)[end];
      if (ng > 0 && key == last_key) {  /* rows sharing a prefix are usually adjacent */
        gid[i - lo] = last_gid;
        gcnt[last_gid]++;
        continue;
      }
      int32_t g;
      if (small) {  /* few queries: look the key up among the groups so far */
        g = ng - 1;
        while (g >= 0 && gslot[g] != key) g--;
        if (g < 0) { g = ng; gslot[ng] = key; gcnt[ng++] = 0; }
      } else {
        size_t h = hash32((uint32_t)key) & (hcap - 1);
        while (hval[h] >= 0 && hkey[h] != key) h = (h + 1) & (hcap - 1);
        if (hval[h] < 0) { hkey[h] = key; hval[h] = ng; gslot[ng] = (int32_t)h; gcnt[ng++] = 0; }
        g = hval[h];
      }
      gid[i - lo] = g;
      gcnt[g]++;
      sorted &= g >= maxg;
      maxg = g > maxg ? g : maxg;
      last_key = key;
      last_gid = g;
    }
    if (!small)
      for (int32_t g = 0; g < ng; g++) hval[gslot[g]] = -1;  /* reset the map */
    nd->nterm = nterm;
    nd->nchild = ng;
    nd->tails_pos = tails_pos;
    nd->tails_sum = tails_sum;
    if (ng == 0) continue;
    /* exclusive prefix sums: where each group starts */
    int32_t at = lo + nterm;
    for (int32_t g = 0; g < ng; g++) {
      int32_t cnt = gcnt[g];
      node *ch = &nodes[nn + g];
      ch->pos = end;
      ch->q_lo = at;
      ch->q_hi = at + cnt;
      gcnt[g] = at;
      at += cnt;
    }
    if (!sorted) {
      int32_t t = lo;
      for (int32_t i = lo; i < hi; i++) {
        int32_t q = order[i];
        if (gid[i - lo] < 0) tmp[t++ - lo] = q;
        else tmp[gcnt[gid[i - lo]]++ - lo] = q;
      }
      memcpy(order + lo, tmp, (size_t)(hi - lo) * sizeof *tmp);
    }
    nn += ng;
  }
  c->num_nodes = nn;
  c->tree_pages = tree_pages;
}
