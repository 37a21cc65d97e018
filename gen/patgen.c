/* patgen: the command-line face of pat. Generates kernels from a spec, validates specs,
** compiles every kernel with NVRTC and reports its resources, and runs the default job. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "emit.h"
#include "generate.h"
#include "nvrtc.h"
#include "spec.h"
#include "tile.h"
#include "version.h"
#include "patgen_cmds.h"

static void usage(FILE *f)
{
  fprintf(f,
    "usage: patgen SPEC.yaml -o DIR      generate the spec's kernels into DIR\n"
    "       patgen --check SPEC.yaml     validate a spec only\n"
    "       patgen compile SPEC.yaml [--arch sm_XX]... [--cubin-dir DIR]\n"
    "                                    compile every kernel with NVRTC (no GPU needed) and\n"
    "                                    print registers, spills and shared memory;\n"
    "                                    --cubin-dir writes the cubins (for cuobjdump -sass)\n"
    "       patgen run [SPEC.yaml] [--tree TREE] [--heads Q/KV] [--iters N] [--ordered-pages]\n"
    "                                    generate, compile and run a decode workload on the\n"
    "                                    GPU (default spec: specs/default.yaml; page ids are\n"
    "                                    shuffled unless --ordered-pages)\n"
    "       patgen plan TREE [--spec SPEC.yaml] [--heads Q/KV] [--sms N] [--arch sm_XX] [--tuning TABLE.yaml]\n"
    "                                    print the pack plan of a workload tree (\"1,8,512_32,512,256\");\n"
    "                                    --tuning previews a tuning table (on any GPU)\n"
    "       patgen --help | --version\n");
}

static int load_spec(const char *path, pat_spec *spec)
{
  char err[1024];
  if (pat_spec_load(path, spec, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return 0;
}

static int cmd_generate(const char *spec_path, const char *dir)
{
  pat_spec spec;
  if (load_spec(spec_path, &spec)) return 1;
  pat_kernel_set set;
  char err[4096];
  if (pat_generate(&spec, &set, err, sizeof err)) {
    fprintf(stderr, "%s: %s\n", spec_path, err);
    return 1;
  }
  int written = 0;
  int rc = pat_emit_dir(&spec, &set, dir, &written, err, sizeof err);
  if (rc) fprintf(stderr, "patgen: %s\n", err);
  else printf("%s: %d kernels in %s (%d files changed)\n", spec.name, set.count, dir, written);
  pat_kernel_set_free(&set);
  return rc ? 1 : 0;
}

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Writes a compiled kernel's cubin to DIR/NAME.TARGET.cubin (for cuobjdump -sass). */
static int write_cubin(const char *dir, const char *name, const char *target, const pat_nvrtc_result *res)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.%s.cubin", dir, name, target);
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(res->cubin, 1, res->cubin_size, f) == res->cubin_size;
  if (f && fclose(f)) ok = 0;
  if (!ok) fprintf(stderr, "patgen: cannot write %s: %s\n", path, strerror(errno));
  return ok ? 0 : -1;
}

/* Compiles every kernel of the spec for each arch; prints one row per (kernel, arch). wgmma
** kernels build for sm_90 only (as sm_90a). Fails if any kernel does not compile or spills.
** cubin_dir: when not NULL, each kernel's cubin is written there too. */
static int cmd_compile(const char *spec_path, const int *archs, int num_archs, const char *cubin_dir)
{
  if (cubin_dir && access(cubin_dir, W_OK)) {
    fprintf(stderr, "patgen: cannot write cubins to %s: %s\n", cubin_dir, strerror(errno));
    return 1;
  }
  pat_spec spec;
  if (load_spec(spec_path, &spec)) return 1;
  if (num_archs == 0) {
    archs = spec.archs;
    num_archs = spec.num_archs;
  }
  pat_kernel_set set;
  static char err[65536];
  if (pat_generate(&spec, &set, err, sizeof err)) {
    fprintf(stderr, "%s: %s\n", spec_path, err);
    return 1;
  }
  const char *const *hn, *const *hs;
  int nh = pat_device_headers(&hn, &hs);
  int failures = 0, built = 0;
  printf("%-44s %-6s %5s %6s %6s %7s %8s\n", "kernel", "arch", "regs", "spillB", "stackB",
         "smemB", "ms");
  for (int a = 0; a < num_archs; a++) {
    for (int i = 0; i < set.count; i++) {
      const pat_kernel_src *k = &set.kernels[i];
      if (k->tile >= 0 && !pat_tile_runs_on(&spec.tiles[k->tile], archs[a])) continue;
      pat_nvrtc_job job = {.source = k->source, .program_name = k->file, .kernel_name = k->name,
                           .arch = archs[a], .arch_specific = k->sm90a, .header_names = hn,
                           .header_sources = hs, .num_headers = nh};
      built++;
      pat_nvrtc_result res;
      double t0 = now_ms();
      if (pat_nvrtc_compile(&job, &res, err, sizeof err)) {
        /* The first failure in full; later ones would mostly repeat it. */
        if (failures == 0) fprintf(stderr, "%s\n", err);
        else fprintf(stderr, "FAILED %s sm_%d\n", k->name, archs[a]);
        failures++;
        continue;
      }
      int spills = res.spill_store_bytes + res.spill_load_bytes;
      char target[16];
      snprintf(target, sizeof target, "sm_%d%s", archs[a], k->sm90a ? "a" : "");
      printf("%-44s %-6s %5d %6d %6d %7d %8.0f%s\n", k->name, target, res.registers, spills,
             res.stack_frame_bytes, k->smem_bytes, now_ms() - t0, spills > 0 ? "  SPILLS" : "");
      if (spills > 0) failures++;
      if (cubin_dir && write_cubin(cubin_dir, k->name, target, &res)) failures++;
      pat_nvrtc_result_free(&res);
    }
  }
  printf("%s: %d kernel builds (%d kernels, %d archs), %d failures\n", spec.name, built, set.count,
         num_archs, failures);
  pat_kernel_set_free(&set);
  return failures ? 1 : 0;
}

static int parse_arch(const char *s, int *arch)
{
  if (strncmp(s, "sm_", 3) == 0) s += 3;
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v < 80 || v > 120) return -1;
  *arch = (int)v;
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version")) {
    printf("patgen %s\n", PAT_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "--check")) {
    if (argc != 3) {
      usage(stderr);
      return 2;
    }
    pat_spec spec;
    if (load_spec(argv[2], &spec)) return 1;
    printf("%s: ok (%s, head_dim %d, %d tiles, %d GQA ratios)\n", argv[2], pat_dtype_name(spec.dtype),
           spec.head_dim, spec.num_tiles, spec.num_gqa);
    return 0;
  }
  if (!strcmp(cmd, "compile")) {
    if (argc < 3) {
      usage(stderr);
      return 2;
    }
    int archs[8], n = 0;
    const char *cubin_dir = NULL;
    for (int i = 3; i < argc; i++) {
      if (!strcmp(argv[i], "--cubin-dir") && i + 1 < argc) {
        cubin_dir = argv[++i];
      } else if (!strcmp(argv[i], "--arch") && i + 1 < argc && n < 8) {
        if (parse_arch(argv[++i], &archs[n])) {
          fprintf(stderr, "patgen: bad arch '%s' (want sm_80, sm_90, ...)\n", argv[i]);
          return 2;
        }
        n++;
      } else {
        fprintf(stderr, "patgen: unknown argument '%s'\n", argv[i]);
        return 2;
      }
    }
    return cmd_compile(argv[2], archs, n, cubin_dir);
  }
  if (!strcmp(cmd, "run")) return patgen_cmd_run(argc - 2, argv + 2);
  if (!strcmp(cmd, "plan")) return patgen_cmd_plan(argc - 2, argv + 2);
  /* patgen SPEC -o DIR */
  if (argc == 4 && !strcmp(argv[2], "-o")) return cmd_generate(argv[1], argv[3]);
  fprintf(stderr, "patgen: unknown command or arguments\n");
  usage(stderr);
  return 2;
}
