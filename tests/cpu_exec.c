/* cpu_exec.c: CPU fp32 executor of plans and naive reference attention (tests only). */
#include "cpu_exec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const float *kv_row(const pat_cpu_attn *a, const float *cache, int page, int off, int h)
{
  size_t at = (((size_t)page * (size_t)a->page_size + (size_t)off) * (size_t)a->kv_heads + (size_t)h) *
              (size_t)a->head_dim;
  return cache + at;
}

int pat_cpu_exec_plan(const pat_host_plan *plan, const pat_cpu_attn *a, float *out)
{
  const int D = a->head_dim, gqa = a->q_heads / a->kv_heads;
  const float scale_log2 = a->scale * 1.4426950408889634f;
  size_t nslots = (size_t)(plan->num_slots > 0 ? plan->num_slots : 1);
  float *part_o = calloc(nslots * (size_t)a->q_heads * (size_t)D, sizeof *part_o);
  float *part_lse = calloc(nslots * (size_t)a->q_heads, sizeof *part_lse);
  float *acc = malloc((size_t)D * sizeof *acc);
  if (!part_o || !part_lse || !acc) { free(part_o); free(part_lse); free(acc); return -1; }
  int rc = 0;
  for (int p = 0; p < plan->num_packs && rc == 0; p++) {
    const pat_pack *pk = &plan->packs[p];
    if (pk->query_begin < 0 || pk->query_begin + pk->num_queries > plan->num_pack_queries ||
        pk->page_begin < 0 || pk->kv_len < 1 ||
        pk->page_begin + (pk->kv_len + a->page_size - 1) / a->page_size > plan->num_pages) {
      rc = -1;
      break;
    }
    for (int h = 0; h < a->kv_heads; h++) {
      for (int r = 0; r < pk->num_queries * gqa; r++) {
        const pat_pack_query pq = plan->pack_queries[pk->query_begin + r / gqa];
        if (pq.query < 0 || pq.query >= a->num_queries || pq.slot >= plan->num_slots) { rc = -1; break; }
        const int head = h * gqa + r % gqa;
        const float *qv = a->q + ((size_t)pq.query * (size_t)a->q_heads + (size_t)head) * (size_t)D;
        float m = -INFINITY, l = 0.f;
        memset(acc, 0, (size_t)D * sizeof *acc);
        for (int t = 0; t < pk->kv_len; t++) {
          if (pk->masked) {  /* the page's queries and valid tokens */
            if (!plan->page_masks) { rc = -1; break; }
            const uint32_t w = plan->page_masks[pk->page_begin + t / a->page_size];
            const int j = r / gqa;
            if (j < PAT_MASK_LO(w) || j >= PAT_MASK_HI(w) || t % a->page_size >= PAT_MASK_VALID(w)) continue;
          }
          const int page = plan->pages[pk->page_begin + t / a->page_size];
          const float *k = kv_row(a, a->k_cache, page, t % a->page_size, h);
          const float *v = kv_row(a, a->v_cache, page, t % a->page_size, h);
          float s = 0.f;
          for (int d = 0; d < D; d++) s += qv[d] * k[d];
          s *= scale_log2;
          const float mn = s > m ? s : m;
          const float corr = exp2f(m - mn), w = exp2f(s - mn);
          l = l * corr + w;
          for (int d = 0; d < D; d++) acc[d] = acc[d] * corr + w * v[d];
          m = mn;
        }
        /* a split of a masked pack may hold none of a query's tokens: weight 0 in the merge */
        const float inv = l > 0.f ? 1.f / l : 0.f;
        float *dst;
        if (pq.slot < 0) {
          dst = out + ((size_t)pq.query * (size_t)a->q_heads + (size_t)head) * (size_t)D;
        } else {
          const size_t at = (size_t)pq.slot * (size_t)a->q_heads + (size_t)head;
          dst = part_o + at * (size_t)D;
          part_lse[at] = l > 0.f ? m + log2f(l) : -INFINITY;
        }
        for (int d = 0; d < D; d++) dst[d] = acc[d] * inv;
      }
    }
  }
  for (int i = 0; i < plan->num_merges && rc == 0; i++) {
    const pat_merge_item *it = &plan->merges[i];
    if (it->slot_begin < 0 || it->slot_begin + it->num_splits > plan->num_slots) { rc = -1; break; }
    for (int head = 0; head < a->q_heads; head++) {
      float mx = -INFINITY, sum = 0.f;
      for (int s = 0; s < it->num_splits; s++) {
        const float lse = part_lse[(size_t)(it->slot_begin + s) * (size_t)a->q_heads + (size_t)head];
        mx = lse > mx ? lse : mx;
      }
      memset(acc, 0, (size_t)D * sizeof *acc);
      for (int s = 0; s < it->num_splits; s++) {
        const size_t at = (size_t)(it->slot_begin + s) * (size_t)a->q_heads + (size_t)head;
        const float w = exp2f(part_lse[at] - mx);
        sum += w;
        for (int d = 0; d < D; d++) acc[d] += w * part_o[at * (size_t)D + (size_t)d];
      }
      float *dst = out + ((size_t)it->query * (size_t)a->q_heads + (size_t)head) * (size_t)D;
      for (int d = 0; d < D; d++) dst[d] = acc[d] / sum;
    }
  }
  free(part_o);
  free(part_lse);
  free(acc);
  return rc;
}

void pat_cpu_reference(const pat_batch *b, const pat_cpu_attn *a, float *out)
{
  const int D = a->head_dim, gqa = a->q_heads / a->kv_heads;
  int maxlen = 1;
  for (int q = 0; q < b->num_queries; q++) maxlen = b->seq_lens[q] > maxlen ? b->seq_lens[q] : maxlen;
  double *sc = malloc((size_t)maxlen * sizeof *sc);
  double *o = malloc((size_t)D * sizeof *o);
  if (!sc || !o) { free(sc); free(o); return; }
  for (int q = 0; q < b->num_queries; q++) {
    const int32_t *row = b->block_table + (size_t)q * (size_t)b->block_table_stride;
    for (int head = 0; head < a->q_heads; head++) {
      const int h = head / gqa;
      const float *qv = a->q + ((size_t)q * (size_t)a->q_heads + (size_t)head) * (size_t)D;
      double mx = -INFINITY;
      for (int t = 0; t < b->seq_lens[q]; t++) {
        const float *k = kv_row(a, a->k_cache, row[t / a->page_size], t % a->page_size, h);
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)qv[d] * k[d];
        sc[t] = s * a->scale;
        mx = sc[t] > mx ? sc[t] : mx;
      }
      double sum = 0;
      memset(o, 0, (size_t)D * sizeof *o);
      for (int t = 0; t < b->seq_lens[q]; t++) {
        const double w = exp(sc[t] - mx);
        const float *v = kv_row(a, a->v_cache, row[t / a->page_size], t % a->page_size, h);
        sum += w;
        for (int d = 0; d < D; d++) o[d] += w * v[d];
      }
      float *dst = out + ((size_t)q * (size_t)a->q_heads + (size_t)head) * (size_t)D;
      for (int d = 0; d < D; d++) dst[d] = (float)(o[d] / sum);
    }
  }
  free(sc);
  free(o);
}
