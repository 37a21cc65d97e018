/* tree.c: synthetic workloads as paged block tables: the paper's tree strings and seeded
** random trees. Page ids are shuffled with splitmix64 (deterministic, no global state). */
#include "tree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const pat_paper_trees[PAT_NUM_PAPER_TREES] = {
  "1,10_4096,416", "1,256_256,32", "1,1024_2048,32", "1,2,64_1024,256,256", "1,4,256_32,256,32",
  "1,8,512_32,512,256", "1,8,512_32,2048,256", "1,8,512_512,512,256", "1,4,8,256_32,256,256,32",
  "1,4,16,512_1024,256,128,32", "1,4,16,64,256,1024_256,32,256,64,32,256",
  "1,16,32,64,128,1024_256,128,64,32,32,32", "1,16,32,64,256,1024_256,128,64,32,32,32",
  "1,8,16,32,64,128,1024_256,128,64,32,32,32,32", "1,8,16,32,64,256,1024_256,128,64,32,32,32,32",
  "2,8,16,256_256,256,32,32", "4,16,256,512_512,32,128,32", "8,16,32,256_512,512,256,32",
  "256_1024", "256_4096"};

#define TREE_MAX_LEVELS 16

static uint64_t splitmix64(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int rand_in(uint64_t *s, int lo, int hi)
{
  if (hi <= lo) return lo;
  return lo + (int)(splitmix64(s) % (uint64_t)(hi - lo + 1));
}

/* perm[i] for i < n: a seeded permutation of 0 .. n-1 (Fisher-Yates); seed 0: identity. */
static int32_t *shuffled_ids(int32_t n, uint64_t *s)
{
  int32_t *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  if (!p) return NULL;
  for (int32_t i = 0; i < n; i++) p[i] = i;
  for (int32_t i = n - 1; i > 0 && *s; i--) {
    int32_t j = (int32_t)(splitmix64(s) % (uint64_t)(i + 1));
    int32_t t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}

static int parse_list(const char *s, const char *stop, long *out, int *count)
{
  int n = 0;
  while (s < stop) {
    if (n == TREE_MAX_LEVELS) return -1;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 1 || v > (1L << 24)) return -1;
    out[n++] = v;
    s = end;
    if (s < stop) {
      if (*s != ',') return -1;
      s++;
      if (s == stop) return -1;
    }
  }
  *count = n;
  return n > 0 ? 0 : -1;
}

void pat_workload_free(pat_workload *w)
{
  if (!w) return;
  free(w->seq_lens);
  free(w->block_table);
  memset(w, 0, sizeof *w);
}

pat_batch pat_workload_batch(const pat_workload *w, int gqa)
{
  pat_batch b;
  memset(&b, 0, sizeof b);
  b.num_queries = w->num_queries;
  b.seq_lens = w->seq_lens;
  b.block_table = w->block_table;
  b.block_table_stride = w->stride;
  b.num_pages_total = w->num_pages;
  b.page_size = w->page_size;
  b.gqa = gqa;
  return b;
}

int pat_tree_parse(const char *text, int page_size, uint64_t seed, pat_workload *w,
                   char *err, size_t errlen)
{
  if (!w) { pat_set_err(err, errlen, "no workload to fill"); return -1; }
  memset(w, 0, sizeof *w);
  if (!text) { pat_set_err(err, errlen, "no tree string"); return -1; }
  if (page_size < 1) { pat_set_err(err, errlen, "page size %d is not positive", page_size); return -1; }
  const char *us = strchr(text, '_');
  if (!us) { pat_set_err(err, errlen, "tree '%s': expected COUNTS_LENGTHS", text); return -1; }
  long cnt[TREE_MAX_LEVELS], len[TREE_MAX_LEVELS];
  int nc = 0, nl = 0;
  if (parse_list(text, us, cnt, &nc) || parse_list(us + 1, us + 1 + strlen(us + 1), len, &nl)) {
    pat_set_err(err, errlen, "tree '%s': counts and lengths must be lists of positive integers", text);
    return -1;
  }
  if (nc != nl) {
    pat_set_err(err, errlen, "tree '%s': %d counts but %d lengths", text, nc, nl);
    return -1;
  }
  int64_t total_pages = 0, stride = 0, prefix_tokens = 0;
  long pages[TREE_MAX_LEVELS];
  for (int l = 0; l < nc; l++) {
    if (l + 1 < nc && cnt[l + 1] % cnt[l]) {
      pat_set_err(err, errlen, "tree '%s': level %d has %ld nodes, not a multiple of level %d's %ld",
              text, l + 1, cnt[l + 1], l, cnt[l]);
      return -1;
    }
    if (l + 1 < nc && len[l] % page_size) {
      pat_set_err(err, errlen, "tree '%s': level %d node length %ld is not a multiple of the page "
              "size %d (only the last level may be ragged)", text, l, len[l], page_size);
      return -1;
    }
    pages[l] = (len[l] + page_size - 1) / page_size;
    total_pages += (int64_t)cnt[l] * pages[l];
    stride += pages[l];
    if (l + 1 < nc) prefix_tokens += len[l];
  }
  /* A synthetic workload is built in host memory, page table and all: at most 2^26 pages
  ** and 2^26 block-table entries (256 MiB each), far more KV than a GPU holds (2^26 pages of
  ** 16 tokens x 8 kv heads x head_dim 128 in fp16 are 2 TiB of K and V). */
  const int64_t limit = 1LL << 26, entries = (int64_t)cnt[nc - 1] * stride;
  if (total_pages > limit || entries > limit) {
    pat_set_err(err, errlen, "tree '%s' is too large: %lld pages and %lld block-table entries (at most %lld each)",
                text, (long long)total_pages, (long long)entries, (long long)limit);
    return -1;
  }
  uint64_t st = seed;
  int32_t *perm = shuffled_ids((int32_t)total_pages, &st);
  int32_t nq = (int32_t)cnt[nc - 1];
  w->seq_lens = malloc((size_t)nq * sizeof *w->seq_lens);
  w->block_table = malloc((size_t)nq * (size_t)stride * sizeof *w->block_table);
  if (!perm || !w->seq_lens || !w->block_table) {
    free(perm);
    pat_workload_free(w);
    pat_set_err(err, errlen, "out of memory");
    return -1;
  }
  int64_t off[TREE_MAX_LEVELS], o = 0;
  for (int l = 0; l < nc; l++) { off[l] = o; o += (int64_t)cnt[l] * pages[l]; }
  for (int32_t q = 0; q < nq; q++) {
    int32_t *row = w->block_table + (size_t)q * (size_t)stride;
    int32_t at = 0;
    for (int l = 0; l < nc; l++) {
      long node = q / (cnt[nc - 1] / cnt[l]);
      for (long i = 0; i < pages[l]; i++) row[at++] = perm[off[l] + node * pages[l] + i];
    }
    w->seq_lens[q] = (int32_t)(prefix_tokens + len[nc - 1]);
  }
  int64_t unique = 0;
  for (int l = 0; l < nc; l++) unique += (int64_t)cnt[l] * len[l];
  free(perm);
  w->num_queries = nq;
  w->stride = (int32_t)stride;
  w->num_pages = (int32_t)total_pages;
  w->page_size = page_size;
  w->unique_tokens = unique;
  return 0;
}

/* ---- random trees ---- */
typedef struct rgen {
  uint64_t s;
  pat_random_tree_opts o;
  int ps, depth;
  int32_t next_page;                 /* pages handed out so far (ids before shuffling) */
  int32_t *path;                     /* page ids of the current root-to-node path */
  int32_t path_cap;
  int32_t nq, qcap;                  /* queries made */
  int32_t *row_off, *row_len, *seq;  /* per query: its pages in rows[], count, tokens */
  int32_t *rows;
  int32_t rows_n, rows_cap;
  int oom;
} rgen;

static int grow(void **p, int32_t *cap, int32_t need, size_t elem)
{
  if (need <= *cap) return 0;
  int32_t nc = *cap ? *cap : 64;
  while (nc < need) nc *= 2;
  void *np = realloc(*p, (size_t)nc * elem);
  if (!np) return -1;
  *p = np;
  *cap = nc;
  return 0;
}

static void add_query(rgen *g, int32_t plen, int32_t tail_tokens)
{
  int32_t extra = tail_tokens > 0 ? (tail_tokens + g->ps - 1) / g->ps : 0;
  int32_t qc = g->qcap;
  if (grow((void **)&g->row_off, &qc, g->nq + 1, sizeof(int32_t))) { g->oom = 1; return; }
  qc = g->qcap;
  if (grow((void **)&g->row_len, &qc, g->nq + 1, sizeof(int32_t))) { g->oom = 1; return; }
  if (grow((void **)&g->seq, &g->qcap, g->nq + 1, sizeof(int32_t))) { g->oom = 1; return; }
  if (grow((void **)&g->rows, &g->rows_cap, g->rows_n + plen + extra, sizeof(int32_t))) { g->oom = 1; return; }
  g->row_off[g->nq] = g->rows_n;
  g->row_len[g->nq] = plen + extra;
  g->seq[g->nq] = plen * g->ps + tail_tokens;
  if (plen > 0) memcpy(g->rows + g->rows_n, g->path, (size_t)plen * sizeof *g->path);
  for (int32_t i = 0; i < extra; i++) g->rows[g->rows_n + plen + i] = g->next_page++;
  g->rows_n += plen + extra;
  g->nq++;
}

static void gen_node(rgen *g, int d, int32_t plen)
{
  if (g->oom || g->nq >= g->o.max_queries) return;
  int leaf = d >= g->depth - 1 || (d > 0 && rand_in(&g->s, 0, 9) == 0) ||
             g->next_page >= g->o.max_pages;
  if (leaf) {
    add_query(g, plen, rand_in(&g->s, 1, g->o.max_leaf_tokens));
    return;
  }
  int32_t np = rand_in(&g->s, 1, g->o.max_node_pages);
  if (d == 0 && rand_in(&g->s, 0, 3) == 0) np = 0;  /* several roots: no shared first node */
  int32_t pc = g->path_cap;
  if (grow((void **)&g->path, &pc, plen + np, sizeof(int32_t))) { g->oom = 1; return; }
  g->path_cap = pc;
  for (int32_t i = 0; i < np; i++) g->path[plen + i] = g->next_page++;
  plen += np;
  if (plen > 0 && rand_in(&g->s, 0, 5) == 0)  /* a query ending inside the tree */
    add_query(g, plen, rand_in(&g->s, 0, g->ps - 1));
  int k = rand_in(&g->s, 1, g->o.max_fanout);
  if (rand_in(&g->s, 0, 2) == 0) k = rand_in(&g->s, 1, 4);  /* many narrow nodes too */
  for (int i = 0; i < k && !g->oom && g->nq < g->o.max_queries; i++) {
    if (i > 0 && g->next_page >= g->o.max_pages) break;
    gen_node(g, d + 1, plen);
  }
}

int pat_tree_random(uint64_t seed, const pat_random_tree_opts *opts, int page_size,
                    pat_workload *w, char *err, size_t errlen)
{
  if (!w) { pat_set_err(err, errlen, "no workload to fill"); return -1; }
  memset(w, 0, sizeof *w);
  if (page_size < 1) { pat_set_err(err, errlen, "page size %d is not positive", page_size); return -1; }
  rgen g;
  memset(&g, 0, sizeof g);
  if (opts) g.o = *opts;
  if (g.o.max_depth < 1) g.o.max_depth = 6;
  if (g.o.max_fanout < 1) g.o.max_fanout = 64;
  if (g.o.max_queries < 1) g.o.max_queries = 256;
  if (g.o.max_pages < 1) g.o.max_pages = 4096;
  if (g.o.max_node_pages < 1) g.o.max_node_pages = 8;
  if (g.o.max_leaf_tokens < 1) g.o.max_leaf_tokens = 4 * page_size;
  if (g.o.spare_pages < 0) g.o.spare_pages = 0;
  g.s = seed;
  g.ps = page_size;
  g.depth = rand_in(&g.s, 1, g.o.max_depth);
  gen_node(&g, 0, 0);
  int32_t total = g.next_page + g.o.spare_pages;
  int32_t *perm = g.oom ? NULL : shuffled_ids(total, &g.s);
  int32_t stride = 1;
  for (int32_t q = 0; q < g.nq; q++) stride = g.row_len[q] > stride ? g.row_len[q] : stride;
  if (perm) {
    w->seq_lens = malloc((size_t)g.nq * sizeof *w->seq_lens);
    w->block_table = malloc((size_t)g.nq * (size_t)stride * sizeof *w->block_table);
  }
  int rc = -1;
  if (!perm || !w->seq_lens || !w->block_table) {
    pat_workload_free(w);
    pat_set_err(err, errlen, "out of memory");
    goto out;
  }
  for (int32_t q = 0; q < g.nq; q++) {
    int32_t *row = w->block_table + (size_t)q * (size_t)stride;
    for (int32_t i = 0; i < stride; i++)
      row[i] = i < g.row_len[q] ? perm[g.rows[g.row_off[q] + i]] : -1;
    w->seq_lens[q] = g.seq[q];
  }
  w->num_queries = g.nq;
  w->stride = stride;
  w->num_pages = total;
  w->page_size = page_size;
  /* distinct tokens: full pages once each, partial last pages are private */
  {
    unsigned char *seen = calloc((size_t)(g.next_page > 0 ? g.next_page : 1), 1);
    if (!seen) { pat_workload_free(w); pat_set_err(err, errlen, "out of memory"); goto out; }
    int64_t unique = 0;
    for (int32_t q = 0; q < g.nq; q++) {
      int32_t full = g.seq[q] / page_size;
      for (int32_t i = 0; i < full; i++) {
        int32_t id = g.rows[g.row_off[q] + i];
        if (!seen[id]) { seen[id] = 1; unique += page_size; }
      }
      unique += g.seq[q] % page_size;
    }
    free(seen);
    w->unique_tokens = unique;
  }
  rc = 0;
out:
  free(perm);
  free(g.path); free(g.row_off); free(g.row_len); free(g.seq); free(g.rows);
  return rc;
}
