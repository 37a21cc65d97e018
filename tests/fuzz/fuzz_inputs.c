/* fuzz_inputs.c: a libFuzzer target for everything pat reads from a user: specs, tuning
** tables, workload trees and decode batches. The first byte picks the reader, the rest is its
** input. Each must return a status (and a message) for any input, never crash, leak or touch
** memory it does not own; ASan and UBSan (the build below) turn any such fault into a report.
** Build and run: `make fuzz` (clang with libFuzzer; FUZZ_SECONDS, default 120). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "spec.h"
#include "tree.h"
#include "tuning.h"

enum { MAX_QUERIES = 9, MAX_STRIDE = 8 };

/* A small decode batch from the bytes: query count, row length, cache size and GQA from the
** first four, then seq_lens (negative and zero ones too) and page ids (out of range and
** repeated ones too), built with both scheduler modes on the default spec. */
static void build_batch(const uint8_t *d, size_t n)
{
  if (n < 4) return;
  const int nq = d[0] % MAX_QUERIES + 1, stride = d[1] % MAX_STRIDE + 1, pages = d[2] % 40 + 1;
  const int gqa = 1 << (d[3] % 5);
  d += 4;
  n -= 4;
  int32_t seq[MAX_QUERIES], table[MAX_QUERIES * MAX_STRIDE];
  for (int i = 0; i < nq; i++) seq[i] = n ? (int32_t)(int8_t)d[i % n] * 3 : 1;
  for (int i = 0; i < nq * stride; i++) table[i] = n ? (int32_t)(d[(i + nq) % n] % (pages + 3)) - 1 : 0;
  pat_spec spec;
  pat_spec_defaults(&spec);
  const pat_batch b = {nq, seq, table, stride, pages, spec.page_size, gqa};
  for (int mode = 0; mode < 2; mode++) {
    const pat_sched_opts o = {&spec, 132, 8, (pat_sched_mode)mode};
    pat_host_plan plan;
    char err[256];
    if (pat_sched_build(&b, &o, &plan, err, sizeof err) == 0) pat_host_plan_free(&plan);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1) return 0;
  const int which = data[0] % 4;
  data++;
  size--;
  char *text = malloc(size + 1);  /* the readers of text take a NUL-terminated copy */
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  char err[512];
  if (which == 0) {
    pat_spec spec;
    pat_spec_parse(text, size, "fuzz.yaml", &spec, err, sizeof err);
  } else if (which == 1) {
    pat_tuning table;
    if (pat_tuning_parse(text, size, "fuzz.tune.yaml", &table, err, sizeof err) == 0) {
      pat_spec spec;
      pat_spec_defaults(&spec);
      pat_tuning_apply(&table, &spec, err, sizeof err);
    }
  } else if (which == 2) {
    pat_workload w;
    if (pat_tree_parse(text, 16, 1, &w, err, sizeof err) == 0) pat_workload_free(&w);
  } else {
    build_batch(data, size);
  }
  free(text);
  return 0;
}
