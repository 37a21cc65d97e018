/* test_harness.c: the output check that every GPU test and benchmark relies on, on the host:
** a correct output passes, NaNs are counted, wrong values raise the error, sampling checks
** the queries it says. Criterion suite "harness". */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tree.h"

enum { QH = 8, KVH = 2, HD = 64 };

/* A harness whose host output is the reference, rounded to the dtype. */
static harness *with_reference_output(pat_workload *w, int bf16)
{
  char err[512];
  cr_assert_eq(pat_tree_parse("1,6_64,40", 16, 11, w, err, sizeof err), 0, "%s", err);
  harness *h = harness_create_host(w, QH, KVH, HD, bf16, 3, err, sizeof err);
  cr_assert_not_null(h, "%s", err);
  float ref[QH * HD];
  uint16_t *out = harness_host_out(h);
  for (int q = 0; q < w->num_queries; q++) {
    harness_reference(h, q, ref);
    for (int i = 0; i < QH * HD; i++) harness_store(h, ref[i], &out[(size_t)q * QH * HD + i]);
  }
  return h;
}

Test(harness, reference_output_passes)
{
  for (int bf16 = 0; bf16 < 2; bf16++) {
    pat_workload w;
    harness *h = with_reference_output(&w, bf16);
    harness_result r;
    char err[512];
    cr_assert_eq(harness_check_host(h, 0, &r, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.checked_queries, 6);
    cr_expect_eq(r.nonfinite, 0);
    cr_expect(r.rel_err > 0 && r.rel_err < (bf16 ? 1e-2 : 1e-3), "bf16 %d: rel_err %.3e", bf16, r.rel_err);
    cr_assert_eq(harness_check_host(h, 2, &r, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.checked_queries, 2, "every third query of six");
    harness_destroy(h);
    pat_workload_free(&w);
  }
}

Test(harness, nans_and_wrong_values_are_caught)
{
  pat_workload w;
  harness *h = with_reference_output(&w, 0);
  uint16_t *out = harness_host_out(h);
  out[3 * QH * HD + 17] = 0xffff;  /* a NaN left by the poison in query 3 */
  out[4 * QH * HD + 5] = 0x7c00;   /* +inf in query 4 */
  harness_result r;
  char err[512];
  cr_assert_eq(harness_check_host(h, 0, &r, err, sizeof err), 0, "%s", err);
  cr_expect_eq(r.nonfinite, 2);

  /* Query 5's heads swapped pairwise: finite, but wrong. */
  uint16_t *q5 = out + (size_t)5 * QH * HD;
  for (int head = 0; head + 1 < QH; head += 2)
    for (int d = 0; d < HD; d++) {
      uint16_t t = q5[head * HD + d];
      q5[head * HD + d] = q5[(head + 1) * HD + d];
      q5[(head + 1) * HD + d] = t;
    }
  cr_assert_eq(harness_check_host(h, 0, &r, err, sizeof err), 0, "%s", err);
  cr_expect(r.rel_err > 0.05, "rel_err %.3e", r.rel_err);
  cr_expect(r.max_abs_err > 0.01, "max abs %.3e", r.max_abs_err);
  harness_destroy(h);
  pat_workload_free(&w);
}

/* The copy ramp's reading between, below and past its sizes (patbench's same-bytes copy). */
Test(harness, copy_ramp_interpolates)
{
  const double MiB = 1 << 20;
  harness_copy_ramp r = {.n = 3, .bytes = {MiB, 2 * MiB, 4 * MiB}, .us = {10, 12, 16}};
  cr_expect_float_eq(harness_copy_ramp_us(&r, MiB / 2), 10, 1e-9, "below the smallest: its time");
  cr_expect_float_eq(harness_copy_ramp_us(&r, MiB), 10, 1e-9);
  cr_expect_float_eq(harness_copy_ramp_us(&r, 2 * MiB), 12, 1e-9);
  cr_expect_float_eq(harness_copy_ramp_us(&r, 4 * MiB), 16, 1e-9);
  /* Halfway in log bytes is halfway in log time: sqrt(12 x 16). */
  cr_expect_float_eq(harness_copy_ramp_us(&r, sqrt(8.0) * MiB), sqrt(12.0 * 16.0), 1e-9);
  cr_expect_float_eq(harness_copy_ramp_us(&r, 8 * MiB), 32, 1e-9, "past the largest: at its rate");
  const double mid = harness_copy_ramp_us(&r, 3 * MiB);
  cr_expect(mid > 12 && mid < 16, "3 MiB: %f", mid);
  harness_copy_ramp empty = {0};
  cr_expect_float_eq(harness_copy_ramp_us(&empty, MiB), 0, 0, "no sizes measured");
}
