/* test_nvrtc.c: NVRTC compiles to a CUBIN with an embedded header (no GPU needed), reports
** resources from the ptxas log, and fails with the log in the message. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvrtc.h"

static const char *const header_names[] = {"pat/tiny.cuh"};
static const char *const header_sources[] = {
    "#pragma once\n"
    "__device__ inline float pat_tiny_twice(float v) { return 2.0f * v + 1.0f; }\n"};

static const char tiny_source[] =
    "#include \"pat/tiny.cuh\"\n"
    "extern \"C\" __global__ void pat_tiny(float *x)\n"
    "{\n"
    "  __shared__ float s[64];\n"
    "  s[threadIdx.x] = x[threadIdx.x];\n"
    "  __syncthreads();\n"
    "  x[threadIdx.x] = pat_tiny_twice(s[63 - threadIdx.x]);\n"
    "}\n";

static pat_nvrtc_job tiny_job(int arch)
{
  pat_nvrtc_job job = {
      .source = tiny_source,
      .program_name = "pat_tiny.cu",
      .kernel_name = "pat_tiny",
      .arch = arch,
      .header_names = header_names,
      .header_sources = header_sources,
      .num_headers = 1,
  };
  return job;
}

static void compile_tiny_once(int arch)
{
  pat_nvrtc_job job = tiny_job(arch);
  pat_nvrtc_result res;
  char err[8192] = "";
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), 0, "%s", err);
  cr_assert_not_null(res.cubin);
  cr_assert_gt(res.cubin_size, 4);
  cr_assert_arr_eq(res.cubin, "\177ELF", 4, "a CUBIN is an ELF image");
  cr_assert_not_null(res.log);
  cr_assert(strstr(res.log, "ptxas"), "the log carries the ptxas report: %s", res.log);
  cr_assert_gt(res.registers, 0, "%s", res.log);
  cr_assert_eq(res.static_smem_bytes, 64 * 4, "%s", res.log);
  cr_assert_eq(res.spill_store_bytes, 0, "%s", res.log);
  cr_assert_eq(res.spill_load_bytes, 0, "%s", res.log);
  cr_assert_geq(res.stack_frame_bytes, 0, "%s", res.log);
  cr_log_info("sm_%d: %zu-byte CUBIN, %d registers, %d bytes smem", arch, res.cubin_size,
              res.registers, res.static_smem_bytes);
  pat_nvrtc_result_free(&res);
  cr_assert_null(res.cubin);
  pat_nvrtc_result_free(&res);  /* twice is fine */
}

static void compile_tiny(int arch)
{
  /* Twice: a second, identical compilation must still run ptxas and report resources. */
  for (int round = 0; round < 2; round++)
    compile_tiny_once(arch);
}

Test(nvrtc, compiles_sm80)
{
  compile_tiny(80);
}

Test(nvrtc, compiles_sm90)
{
  compile_tiny(90);
}

Test(nvrtc, extra_options_are_passed)
{
  pat_nvrtc_job job = tiny_job(90);
  const char *opts[] = {"-DPAT_UNUSED=1", "--maxrregcount=32"};
  job.options = opts;
  job.num_options = 2;
  pat_nvrtc_result res;
  char err[8192] = "";
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), 0, "%s", err);
  cr_assert_leq(res.registers, 32);
  pat_nvrtc_result_free(&res);

  const char *bad[] = {"--no-such-option"};
  job.options = bad;
  job.num_options = 1;
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), -1);
  cr_assert(strstr(err, "--no-such-option"), "%s", err);
  cr_assert_null(res.cubin);
}

Test(nvrtc, syntax_error_reports_the_log)
{
  pat_nvrtc_job job = tiny_job(90);
  job.source = "#include \"pat/tiny.cuh\"\n"
               "extern \"C\" __global__ void pat_tiny(float *x)\n"
               "{\n"
               "  int y = ;\n"
               "}\n";
  pat_nvrtc_result res;
  char err[8192] = "";
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), -1);
  cr_assert_null(res.cubin);
  cr_assert_null(res.log);
  cr_assert(strstr(err, "pat_tiny"), "names the kernel: %s", err);
  cr_assert(strstr(err, "sm_90"), "names the arch: %s", err);
  cr_assert(strstr(err, "--ptxas-options=-v"), "lists the options: %s", err);
  cr_assert(strstr(err, "pat_tiny.cu(4): error"), "carries the log: %s", err);
  cr_assert(strstr(err, "int y = ;"), "carries the source line: %s", err);

  /* A short buffer gets a truncated, terminated message. */
  char small[40];
  memset(small, 'x', sizeof small);
  cr_assert_eq(pat_nvrtc_compile(&job, &res, small, sizeof small), -1);
  cr_assert_eq(strlen(small), sizeof small - 1);
}

Test(nvrtc, missing_header_is_an_error)
{
  pat_nvrtc_job job = tiny_job(80);
  job.num_headers = 0;
  pat_nvrtc_result res;
  char err[8192] = "";
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), -1);
  cr_assert(strstr(err, "pat/tiny.cuh"), "%s", err);
}

Test(nvrtc, invalid_jobs)
{
  pat_nvrtc_job job = tiny_job(0);
  pat_nvrtc_result res;
  char err[256] = "";
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), -1);
  cr_assert(strstr(err, "arch"), "%s", err);
  job = tiny_job(90);
  job.source = NULL;
  cr_assert_eq(pat_nvrtc_compile(&job, &res, err, sizeof err), -1);
  cr_assert_eq(pat_nvrtc_compile(NULL, &res, err, sizeof err), -1);
}

Test(nvrtc, options_string)
{
  pat_nvrtc_job job = tiny_job(80);
  const char *opts[] = {"-DX=1"};
  job.options = opts;
  job.num_options = 1;
  char buf[512];
  size_t n = pat_nvrtc_options_string(&job, buf, sizeof buf);
  cr_assert_str_eq(buf, "--gpu-architecture=sm_80 -std=c++17 -default-device "
                        "--ptxas-options=-v -lineinfo --no-cache -DX=1");
  cr_assert_eq(n, strlen(buf));
  char small[10];
  cr_assert_eq(pat_nvrtc_options_string(&job, small, sizeof small), n);
  cr_assert_str_eq(small, "--gpu-arc");
  cr_assert_eq(pat_nvrtc_options_string(&job, NULL, 0), n);
}

Test(nvrtc, version)
{
  int major = 0, minor = -1;
  cr_assert_eq(pat_nvrtc_version(&major, &minor), 0);
  cr_assert_geq(major, 12);
  cr_assert_geq(minor, 0);
  cr_log_info("NVRTC %d.%d", major, minor);
}

/* A log of four entries and a non-inlined device function, as NVRTC 13 writes it. */
static const char sample_log[] =
    "ptxas info    : 0 bytes gmem\n"
    "ptxas info    : Compiling entry function 'k4' for 'sm_90'\n"
    "ptxas info    : Function properties for k4\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 4 registers, used 0 barriers\n"
    "ptxas info    : Compile time = 1.490 ms\n"
    "ptxas info    : Compiling entry function '_Z2k3ILi4EEvPf' for 'sm_90'\n"
    "ptxas info    : Function properties for _Z2k3ILi4EEvPf\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 8 registers, used 0 barriers\n"
    "ptxas info    : Compiling entry function 'k2' for 'sm_90'\n"
    "ptxas info    : Function properties for k2\n"
    "ptxas         .     912 bytes stack frame, 716 bytes spill stores, 784 bytes spill loads\n"
    "ptxas info    : Used 24 registers, used 1 barriers, 912 bytes cumulative stack size, "
    "800 bytes smem\n"
    "ptxas info    : Compile time = 24.850 ms\n"
    "ptxas info    : Compiling entry function 'k1' for 'sm_80'\n"
    "ptxas info    : Function properties for _Z1fPfi\n"
    "ptxas         .     64 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
    "ptxas info    : Function properties for k1\n"
    "ptxas         .     128 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 24 registers, used 0 barriers, 128 bytes cumulative stack size, "
    "360 bytes cmem[0]\n"
    "ptxas info    : Function properties for _Z1gPfi\n"
    "ptxas         .     32 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n";

Test(nvrtc, parse_resources)
{
  pat_nvrtc_result r;
  pat_nvrtc_parse_resources(sample_log, "k2", &r);
  cr_assert_eq(r.registers, 24);
  cr_assert_eq(r.stack_frame_bytes, 912);
  cr_assert_eq(r.spill_store_bytes, 716);
  cr_assert_eq(r.spill_load_bytes, 784);
  cr_assert_eq(r.static_smem_bytes, 800);

  pat_nvrtc_parse_resources(sample_log, "k1", &r);
  cr_assert_eq(r.registers, 24);
  cr_assert_eq(r.stack_frame_bytes, 128);
  cr_assert_eq(r.spill_store_bytes, 0);
  cr_assert_eq(r.spill_load_bytes, 0);
  cr_assert_eq(r.static_smem_bytes, 0);

  pat_nvrtc_parse_resources(sample_log, NULL, &r);  /* the first entry */
  cr_assert_eq(r.registers, 4);
  cr_assert_eq(r.static_smem_bytes, 0);

  pat_nvrtc_parse_resources(sample_log, "_Z2k3ILi4EEvPf", &r);
  cr_assert_eq(r.registers, 8);

  pat_nvrtc_parse_resources(sample_log, "nope", &r);
  cr_assert_eq(r.registers, -1);
  cr_assert_eq(r.stack_frame_bytes, -1);
  cr_assert_eq(r.spill_store_bytes, -1);
  cr_assert_eq(r.spill_load_bytes, -1);
  cr_assert_eq(r.static_smem_bytes, -1);

  pat_nvrtc_parse_resources("", NULL, &r);
  cr_assert_eq(r.registers, -1);
  pat_nvrtc_parse_resources(NULL, NULL, &r);
  cr_assert_eq(r.static_smem_bytes, -1);
}
