/* cpu_exec.h: a CPU fp32 executor of pack-forward-merge plans (the kernels' arithmetic,
** one pack at a time) and a naive double-precision reference attention, for tests. */
#ifndef PAT_CPU_EXEC_H
#define PAT_CPU_EXEC_H

#include "plan.h"
#include "sched.h"

/* Tensors of one decode step, all host fp32, not owned. */
typedef struct pat_cpu_attn {
  int num_queries;
  int q_heads;          /* kv_heads x GQA */
  int kv_heads;
  int head_dim;
  int page_size;
  const float *q;       /* [num_queries][q_heads][head_dim] */
  const float *k_cache; /* [num_pages][page_size][kv_heads][head_dim] */
  const float *v_cache; /* same layout */
  float scale;          /* softmax scale, e.g. 1/sqrt(head_dim) */
} pat_cpu_attn;

/* Runs every pack of the plan as the forward kernel does (per kv head, online softmax in
** base 2 over the pack's tokens, normalised partial O and log2-sum-exp2 LSE to its slot or
** the final output for slot -1), then the merge items. out is [num_queries][q_heads][head_dim].
** Returns 0, or -1 if a slot or page index is out of range or memory runs out. Reentrant. */
int pat_cpu_exec_plan(const pat_host_plan *plan, const pat_cpu_attn *a, float *out);

/* Naive attention: per query and q head, gathers its seq_len tokens through its block table
** and takes a softmax in double. out as above. Reentrant. */
void pat_cpu_reference(const pat_batch *b, const pat_cpu_attn *a, float *out);

#endif
