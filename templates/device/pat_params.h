/* pat_params.h: what the host passes to the forward and merge kernels. Shared by the
** runtime (C11) and the kernels (NVRTC): plain C, int = 32 bits, no library headers. */
#ifndef PAT_PARAMS_H
#define PAT_PARAMS_H

/* One pack: queries that share a run of KV pages. One CTA per (pack, kv head). Tokens are
** counted from the first token of the pack's first page. A masked pack holds a subtree: its
** shared pages and below them the pages of its queries' branches; each page's mask word
** (page_masks, at the page's index) says which of the pack's queries see it and how many of
** its tokens are valid. */
typedef struct pat_pack {
  int query_begin;  /* index of its first entry in pack_queries */
  int num_queries;  /* num_queries x GQA <= tile M; 0: an empty pack (padding), skipped */
  int page_begin;   /* index of its first page id in pages */
  int kv_len;       /* tokens attended to, 1 .. pages x PAGE_SIZE */
  int masked;       /* 1: page_masks apply (at most PAT_MASKED_PAGES pages; mma.sync tiles) */
} pat_pack;

/* Page mask word: pack queries lo .. hi-1 (indices within the pack) see tokens 0 .. valid-1
** of the page. */
#define PAT_MASK_WORD(lo, hi, valid) ((unsigned)(lo) | (unsigned)(hi) << 8 | (unsigned)(valid) << 16)
#define PAT_MASK_LO(w) ((int)((w) & 255u))
#define PAT_MASK_HI(w) ((int)(((w) >> 8) & 255u))
#define PAT_MASK_VALID(w) ((int)((w) >> 16))

/* Page ids a forward CTA stages in shared memory. A masked pack has at most half as many
** pages: its mask words take the window's second half (no shared memory added, so that two
** CTAs of the 113 KB tiles still share an SM). */
enum { PAT_PAGE_WINDOW = 256, PAT_MASKED_PAGES = PAT_PAGE_WINDOW / 2 };

/* One query in a pack and where its partial result goes. */
typedef struct pat_pack_query {
  int query;  /* row of q and out */
  int slot;   /* workspace slot, or -1: the query's only split, written straight to out */
} pat_pack_query;

/* A query with several splits: merge combines slots slot_begin .. slot_begin+num_splits-1. */
typedef struct pat_merge_item {
  int query;
  int slot_begin;
  int num_splits;  /* 0: padding, skipped */
} pat_merge_item;

typedef struct pat_fwd_params {
  const void *q;          /* [queries][q_heads][HEAD_DIM], q_stride elements between queries, device */
  const void *k_cache;    /* [pages][PAGE_SIZE][kv_heads][HEAD_DIM], device */
  const void *v_cache;    /* same layout as k_cache, device */
  void *out;              /* [queries][q_heads][HEAD_DIM], o_stride elements between queries, device */
  void *part_o;           /* [slots][q_heads][HEAD_DIM] normalised partial outputs in the element
                          ** type (convex combinations of V rows: V's type holds them), device */
  float *part_lse;        /* [slots][q_heads] log2-sum-exp2 of the scaled scores, device */
  const pat_pack *packs;  /* this launch's packs, grid.x of them, device */
  const pat_pack_query *pack_queries;  /* device */
  const int *pages;       /* page ids, device */
  const unsigned *page_masks;  /* mask words by page index (PAT_MASK_WORD), device; NULL: no
                               ** pack of the plan is masked */
  long long q_stride;     /* elements */
  long long o_stride;     /* elements */
  int q_heads;            /* kv_heads x GQA */
  int kv_heads;
  float scale_log2;       /* softmax scale x log2(e) */
} pat_fwd_params;

/* The merge kernel's block: PAT_MERGE_THREADS threads of PAT_MERGE_VECS 16-byte output chunks
** each; grid (merge items, chunk groups covering q_heads x HEAD_DIM / 8 chunks). */
enum { PAT_MERGE_THREADS = 128, PAT_MERGE_VECS = 2 };

typedef struct pat_merge_params {
  const void *part_o;     /* as in pat_fwd_params, device */
  const float *part_lse;  /* device */
  void *out;              /* device */
  const pat_merge_item *items;  /* grid.x of them, device */
  long long o_stride;     /* elements */
  int q_heads;
} pat_merge_params;

#endif
