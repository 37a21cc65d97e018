/* test_spec.c: spec parsing (gen/spec.c): every field, the defaults, the shipped specs/ files,
** and every error path, one tests/bad_specs/NAME.yaml per case with its exact NAME.err. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"
#include "tile.h"
#include "tuning.h"

#define BAD_DIR "tests/bad_specs"

/* Parses a NUL-terminated string; returns pat_spec_parse's result. */
static int parse_str(const char *yaml, pat_spec *s, char *err, size_t errlen)
{
  return pat_spec_parse(yaml, strlen(yaml), "t.yaml", s, err, errlen);
}

/* Reads a whole small file into a malloc'd, NUL-terminated buffer (NULL if absent). */
static char *read_text(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  char *buf = malloc(65536);
  size_t n = buf ? fread(buf, 1, 65535, f) : 0;
  fclose(f);
  if (buf)
    buf[n] = '\0';
  return buf;
}

static int cmp_str(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of the files in dir ending with ext, sorted; returns the count (at most max). */
static int list_dir(const char *dir, const char *ext, char **names, int max)
{
  DIR *d = opendir(dir);
  cr_assert_not_null(d, "cannot open %s (tests run from the repository root)", dir);
  int count = 0;
  struct dirent *e;
  size_t el = strlen(ext);
  while ((e = readdir(d)) != NULL) {
    size_t nl = strlen(e->d_name);
    if (nl > el && !strcmp(e->d_name + nl - el, ext) && count < max)
      names[count++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)count, sizeof names[0], cmp_str);
  return count;
}

Test(spec, dtype_name)
{
  cr_expect_str_eq(pat_dtype_name(PAT_FP16), "fp16");
  cr_expect_str_eq(pat_dtype_name(PAT_BF16), "bf16");
}

Test(spec, defaults)
{
  pat_spec s;
  memset(&s, 0x5a, sizeof s);
  pat_spec_defaults(&s);
  cr_expect_str_eq(s.name, "default");
  cr_expect_eq(s.dtype, PAT_FP16);
  cr_expect_eq(s.head_dim, 128);
  cr_expect_eq(s.page_size, 32);
  cr_assert_eq(s.num_gqa, 4);
  cr_expect(s.gqa[0] == 1 && s.gqa[1] == 2 && s.gqa[2] == 4 && s.gqa[3] == 8);
  cr_assert_eq(s.num_tiles, 6);
  cr_expect(s.tiles[0].m == 16 && s.tiles[0].n == 32 && s.tiles[0].warps == 2 &&
            s.tiles[0].stages == 2 && !s.tiles[0].wgmma);
  cr_expect(s.tiles[1].m == 16 && s.tiles[1].n == 64 && s.tiles[1].warps == 4 &&
            s.tiles[1].stages == 3);
  cr_expect(s.tiles[4].m == 128 && s.tiles[4].n == 64 && s.tiles[4].warps == 8 &&
            s.tiles[4].stages == 3 && s.tiles[4].wgmma == 1);
  cr_expect(s.tiles[5].m == 128 && s.tiles[5].n == 64 && s.tiles[5].warps == 8 &&
            s.tiles[5].stages == 2 && !s.tiles[5].wgmma);
  cr_expect_eq(s.split.min_kv_per_split, 256);
  cr_expect_eq(s.split.max_splits, 64);
  cr_expect_eq(s.split.ctas_per_sm, 2);
  cr_expect_eq(s.split.mma_rows_per_token, 128);
  cr_expect_eq(s.split.masked_packs, 1);
  cr_assert_eq(s.num_archs, 2);
  cr_expect(s.archs[0] == 80 && s.archs[1] == 90);
  cr_expect_eq(s.name_mark.line, 0);
  cr_expect_eq(s.tiles[0].mark.line, 0);
  char err[256];
  for (int i = 0; i < s.num_tiles; i++)
    cr_expect_eq(pat_tile_check(&s, &s.tiles[i], err, sizeof err), 0, "default tile %d: %s", i, err);
}

Test(spec, every_field_read)
{
  const char *yaml =
      "name: every_field_9\n"
      "dtype: bf16\n"
      "head_dim: 64\n"
      "page_size: 128\n"
      "gqa: [1, 3, 16]\n"
      "tiles:\n"
      "  - {m: 16, n: 32, warps: 2, stages: 4}\n"
      "  - m: 48\n"
      "    n: 16\n"
      "    warps: 3\n"
      "    stages: 2\n"
      "  - {m: 64, n: 64, warps: 4, stages: 2, warp_rows: 32}\n"
      "split:\n"
      "  min_kv_per_split: 16\n"
      "  max_splits: 1024\n"
      "  ctas_per_sm: 64\n"
      "  mma_rows_per_token: 4096\n"
      "  masked_packs: 0\n"
      "archs: [sm_90, sm_89, sm_86, sm_80]\n";
  pat_spec s;
  char err[512];
  int rc = pat_spec_parse(yaml, strlen(yaml), "specs/every.yaml", &s, err, sizeof err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_expect_str_eq(err, "");
  cr_expect_str_eq(s.name, "every_field_9");
  cr_expect_str_eq(s.path, "specs/every.yaml");
  cr_expect_eq(s.dtype, PAT_BF16);
  cr_expect_eq(s.head_dim, 64);
  cr_expect_eq(s.page_size, 128);
  cr_assert_eq(s.num_gqa, 3);
  cr_expect(s.gqa[0] == 1 && s.gqa[1] == 3 && s.gqa[2] == 16);
  cr_assert_eq(s.num_tiles, 3);
  cr_expect(s.tiles[0].m == 16 && s.tiles[0].n == 32 && s.tiles[0].warps == 2 &&
            s.tiles[0].stages == 4 && s.tiles[0].warp_rows == 16);
  cr_expect(s.tiles[1].m == 48 && s.tiles[1].n == 16 && s.tiles[1].warps == 3 &&
            s.tiles[1].stages == 2);
  cr_expect(s.tiles[2].m == 64 && s.tiles[2].warps == 4 && s.tiles[2].warp_rows == 32);
  /* 32 rows a warp: 2 warps along the rows, 2 along the tokens; the name says r32 */
  cr_expect_eq(pat_tile_warps_m(&s.tiles[2]), 2);
  cr_expect_eq(pat_tile_warps_n(&s.tiles[2]), 2);
  char name[128];
  pat_tile_kernel_name(&s, &s.tiles[2], 3, name, sizeof name);
  cr_expect_str_eq(name, "pat_fwd_every_field_9_m64n64w4s2r32_g3");
  pat_tile_kernel_name(&s, &s.tiles[0], 3, name, sizeof name);
  cr_expect_str_eq(name, "pat_fwd_every_field_9_m16n32w2s4_g3");
  /* the epilogue holds 32 fp32 rows (+ max and sum) per warp: 4 x 32 x 66 x 4 bytes */
  cr_expect_eq(pat_tile_smem_bytes(&s, &s.tiles[2]), 1024 + 64 * 64 * 2 + 4 * 32 * 66 * 4);
  /* a launch of short packs: fewer ring slots (4 x K and V of 32 x 64 x 2 bytes in full), but
  ** never less than the epilogue (2 warps x 16 rows x 66 x 4) that reuses the ring */
  cr_expect_eq(pat_tile_smem_bytes(&s, &s.tiles[0]), 1024 + 16 * 64 * 2 + 4 * 2 * 32 * 64 * 2);
  cr_expect_eq(pat_tile_smem_bytes_for(&s, &s.tiles[0], 2), 1024 + 16 * 64 * 2 + 2 * 2 * 32 * 64 * 2);
  cr_expect_eq(pat_tile_smem_bytes_for(&s, &s.tiles[0], 1), 1024 + 16 * 64 * 2 + 2 * 16 * 66 * 4);
  cr_expect_eq(pat_tile_smem_bytes_for(&s, &s.tiles[0], 0), pat_tile_smem_bytes(&s, &s.tiles[0]));
  cr_expect_eq(pat_tile_smem_bytes_for(&s, &s.tiles[0], 5), pat_tile_smem_bytes(&s, &s.tiles[0]));
  cr_expect_eq(s.split.min_kv_per_split, 16);
  cr_expect_eq(s.split.max_splits, 1024);
  cr_expect_eq(s.split.ctas_per_sm, 64);
  cr_expect_eq(s.split.mma_rows_per_token, 4096);
  cr_expect_eq(s.split.masked_packs, 0);
  cr_assert_eq(s.num_archs, 4);
  cr_expect(s.archs[0] == 90 && s.archs[1] == 89 && s.archs[2] == 86 && s.archs[3] == 80);

  /* marks: 1-based, at the value (tiles: at the start of each tile's mapping) */
  cr_expect(s.name_mark.line == 1 && s.name_mark.column == 7);
  cr_expect(s.dtype_mark.line == 2 && s.dtype_mark.column == 8);
  cr_expect(s.head_dim_mark.line == 3 && s.head_dim_mark.column == 11);
  cr_expect(s.page_size_mark.line == 4 && s.page_size_mark.column == 12);
  cr_expect(s.gqa_mark.line == 5 && s.gqa_mark.column == 6);
  cr_expect(s.tiles_mark.line == 7 && s.tiles_mark.column == 3);
  cr_expect(s.tiles[0].mark.line == 7 && s.tiles[0].mark.column == 5);
  cr_expect(s.tiles[1].mark.line == 8 && s.tiles[1].mark.column == 5);
  cr_expect(s.split_mark.line == 14 && s.split_mark.column == 3);
  cr_expect(s.archs_mark.line == 19 && s.archs_mark.column == 8);
}

Test(spec, absent_keys_take_defaults)
{
  pat_spec s, d;
  char err[256];
  cr_assert_eq(parse_str("name: only_name\n", &s, err, sizeof err), 0, "%s", err);
  pat_spec_defaults(&d);
  cr_expect_str_eq(s.name, "only_name");
  cr_expect_str_eq(s.path, "t.yaml");
  /* everything but name, path and name_mark equals the defaults */
  memcpy(d.name, s.name, sizeof d.name);
  memcpy(d.path, s.path, sizeof d.path);
  d.name_mark = s.name_mark;
  cr_expect(memcmp(&s, &d, sizeof s) == 0);
  cr_expect_eq(s.head_dim_mark.line, 0);
  cr_expect_eq(s.tiles_mark.line, 0);
}

Test(spec, tile_and_split_defaults)
{
  pat_spec s;
  char err[256];
  int rc = parse_str("name: t\n"
                     "tiles:\n"
                     "  - {m: 32, n: 64}\n"
                     "  - {m: 64, n: 64, stages: 3}\n"
                     "split: {max_splits: 8}\n",
                     &s, err, sizeof err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_eq(s.num_tiles, 2);
  cr_expect_eq(s.tiles[0].warps, 2);   /* m/16 */
  cr_expect_eq(s.tiles[0].stages, 2);
  cr_expect_eq(s.tiles[1].warps, 4);
  cr_expect_eq(s.tiles[1].stages, 3);
  cr_expect_eq(s.split.min_kv_per_split, 256);
  cr_expect_eq(s.split.max_splits, 8);
  cr_expect_eq(s.split.ctas_per_sm, 2);
}

Test(spec, scalar_forms)
{
  pat_spec s;
  char err[256];
  cr_assert_eq(parse_str("name: g\ngqa: 8\narchs: sm_90\n", &s, err, sizeof err), 0, "%s", err);
  cr_expect_eq(s.num_gqa, 1);
  cr_expect_eq(s.gqa[0], 8);
  cr_expect_eq(s.num_archs, 1);
  cr_expect_eq(s.archs[0], 90);
  /* flow style at the top, quoted strings, aliases, an explicit document */
  cr_assert_eq(parse_str("---\n{name: 'q_1', dtype: \"bf16\", gqa: &g [2, 4]}\n...\n", &s, err,
                         sizeof err), 0, "%s", err);
  cr_expect_str_eq(s.name, "q_1");
  cr_expect_eq(s.dtype, PAT_BF16);
  cr_expect_eq(s.num_gqa, 2);
  cr_assert_eq(parse_str("name: z\nsplit: {ctas_per_sm: -0}\n", &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "t.yaml:2:22: error: split: ctas_per_sm: must be 1..64, got 0");
  cr_assert_eq(parse_str("name: z\nsplit: {mma_rows_per_token: 4}\n", &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "t.yaml:2:29: error: split: mma_rows_per_token: must be 8..4096, got 4");
  cr_assert_eq(parse_str("name: z\nsplit: {masked_packs: 2}\n", &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "t.yaml:2:23: error: split: masked_packs: must be 0..1, got 2");
}

Test(spec, no_filename_and_no_text)
{
  pat_spec s;
  char err[256];
  cr_assert_eq(pat_spec_parse(NULL, 0, NULL, &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "<string>:1:1: error: expected a mapping at the top level, got an empty document");
  cr_assert_eq(pat_spec_parse("name: n", 7, NULL, &s, err, sizeof err), 0, "%s", err);
  cr_expect_str_eq(s.path, "<string>");
  /* len bounds the text: what follows is never read */
  cr_assert_eq(pat_spec_parse("name: n\nhead_dim: 96", 7, NULL, &s, err, sizeof err), 0, "%s", err);
  cr_expect_eq(s.head_dim, 128);
}

Test(spec, failure_leaves_output_untouched)
{
  static const char *const bad[] = {
      "name: x\nhead_dim: 96\n",                          /* a value */
      "name: x\ntiles:\n  - {m: 64, n: 64, warps: 2}\n",   /* a late tile check */
      "name: x\ndtype: bf16\ngqa: [1, 1]\n",               /* after fields were read */
      "name: x\ndtype: bf16\n---\nname: y\n",              /* after a whole valid document */
      "name: x\ngqa: [1, 2\n",                            /* a syntax error */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    pat_spec s, before;
    memset(&s, 0xA5, sizeof s);
    memcpy(&before, &s, sizeof s);
    char err[256];
    cr_expect_eq(parse_str(bad[i], &s, err, sizeof err), -1, "case %zu", i);
    cr_expect(memcmp(&s, &before, sizeof s) == 0, "case %zu wrote the spec", i);
    cr_expect_neq(err[0], '\0');
  }
}

Test(spec, small_error_buffers)
{
  pat_spec s;
  char err[8];
  memset(err, 'x', sizeof err);
  cr_assert_eq(parse_str("name: x\nhead_dim: 96\n", &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "t.yaml:");
  cr_expect_eq(parse_str("name: x\nhead_dim: 96\n", &s, NULL, 0), -1);
  cr_expect_eq(parse_str("name: x\n", &s, NULL, 0), 0);
  char one[1] = {'x'};
  cr_expect_eq(parse_str("name: x\nhead_dim: 96\n", &s, one, 1), -1);
  cr_expect_eq(one[0], '\0');
}

Test(spec, long_values_are_cut_in_messages)
{
  char yaml[600], err[1024];
  strcpy(yaml, "name: x\ndtype: ");
  size_t o = strlen(yaml);
  for (int i = 0; i < 300; i++)
    yaml[o++] = 'q';
  strcpy(yaml + o, "\n");
  pat_spec s;
  cr_assert_eq(parse_str(yaml, &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "t.yaml:2:8: error: dtype: expected fp16 or bf16, got "
                        "'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq...'");
  /* control characters from escapes are shown, never printed raw */
  cr_assert_eq(parse_str("name: \"a\\nb\\0\"\n", &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "t.yaml:1:7: error: name: expected [a-z0-9_]+ of at most 63 characters, "
                        "got 'a\\x0Ab\\x00'");
}

Test(spec, load_missing_file)
{
  pat_spec s;
  char err[256];
  cr_assert_eq(pat_spec_load("tests/bad_specs/no_such_file.yaml", &s, err, sizeof err), -1);
  cr_expect_str_eq(err, "tests/bad_specs/no_such_file.yaml: error: cannot open: No such file or directory");
}

/* Every spec under specs/ loads, is named after its file and has tiles that pass pat_tile_check;
** every tuning table there (NAME.tune[.GPU].yaml) loads and applies to the spec it names. */
Test(spec, shipped_specs_load)
{
  char *names[64];
  int count = list_dir("specs", ".yaml", names, 64);
  cr_expect_geq(count, 6);
  for (int i = 0; i < count; i++) {
    char path[256], err[512], stem[128];
    snprintf(path, sizeof path, "specs/%s", names[i]);
    if (strstr(names[i], ".tune.")) {
      pat_tuning t;
      pat_spec s;
      char spec_path[256];
      cr_expect_eq(pat_tuning_load(path, &t, err, sizeof err), 0, "%s", err);
      snprintf(spec_path, sizeof spec_path, "specs/%s.yaml", t.spec);
      cr_expect_eq(pat_spec_load(spec_path, &s, err, sizeof err), 0, "%s", err);
      cr_expect_eq(pat_tuning_apply(&t, &s, err, sizeof err), 0, "%s", err);
      free(names[i]);
      continue;
    }
    snprintf(stem, sizeof stem, "%.*s", (int)(strlen(names[i]) - 5), names[i]);
    pat_spec s;
    cr_expect_eq(pat_spec_load(path, &s, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(s.name, stem);
    cr_expect_str_eq(s.path, path);
    free(names[i]);
  }
}

Test(spec, shipped_spec_contents)
{
  pat_spec s, d;
  char err[512];
  cr_assert_eq(pat_spec_load("specs/default.yaml", &s, err, sizeof err), 0, "%s", err);
  pat_spec_defaults(&d);
  cr_expect_str_eq(s.name, d.name);
  cr_expect(s.dtype == d.dtype && s.head_dim == d.head_dim && s.page_size == d.page_size);
  cr_expect(s.num_gqa == d.num_gqa && !memcmp(s.gqa, d.gqa, sizeof s.gqa));
  cr_assert_eq(s.num_tiles, d.num_tiles);
  for (int i = 0; i < s.num_tiles; i++)
    cr_expect(s.tiles[i].m == d.tiles[i].m && s.tiles[i].n == d.tiles[i].n &&
              s.tiles[i].warps == d.tiles[i].warps && s.tiles[i].stages == d.tiles[i].stages);
  cr_expect(!memcmp(&s.split, &d.split, sizeof s.split));
  cr_expect(s.num_archs == d.num_archs && !memcmp(s.archs, d.archs, sizeof s.archs));

  cr_assert_eq(pat_spec_load("specs/llama3_8b.yaml", &s, err, sizeof err), 0, "%s", err);
  cr_expect(s.dtype == PAT_FP16 && s.head_dim == 128 && s.num_gqa == 1 && s.gqa[0] == 4);
  cr_assert_eq(pat_spec_load("specs/qwen2_7b_bf16.yaml", &s, err, sizeof err), 0, "%s", err);
  cr_expect(s.dtype == PAT_BF16 && s.head_dim == 128 && s.num_gqa == 1 && s.gqa[0] == 7);
  cr_assert_eq(pat_spec_load("specs/hd64.yaml", &s, err, sizeof err), 0, "%s", err);
  cr_expect(s.dtype == PAT_FP16 && s.head_dim == 64 && s.num_gqa == 2 && s.gqa[0] == 1 &&
            s.gqa[1] == 4);
  cr_assert_eq(pat_spec_load("specs/gemma_hd256.yaml", &s, err, sizeof err), 0, "%s", err);
  cr_expect(s.dtype == PAT_BF16 && s.head_dim == 256 && s.num_gqa == 2 && s.gqa[0] == 2 &&
            s.gqa[1] == 8);
  for (int i = 0; i < s.num_tiles; i++)
    cr_expect_eq(s.tiles[i].stages, 2);

  /* the paper's set: M 16/32/64 with 1/2/4 warps x N 16..128, 2 stages, all fitting sm_80 */
  cr_assert_eq(pat_spec_load("specs/paper.yaml", &s, err, sizeof err), 0, "%s", err);
  cr_expect(s.dtype == PAT_FP16 && s.head_dim == 128 && s.page_size == 32 && s.num_gqa == 4);
  cr_assert_eq(s.num_tiles, 12);
  for (int i = 0; i < 12; i++) {
    const pat_tile *t = &s.tiles[i];
    cr_expect_eq(t->m, 16 << (i / 4));
    cr_expect_eq(t->warps, t->m / 16);
    cr_expect_eq(t->n, 16 << (i % 4));
    cr_expect_eq(t->stages, 2);
    cr_expect_leq(pat_tile_smem_bytes(&s, t), pat_arch_smem_limit(80));
  }
}

/* Each tests/bad_specs/NAME.yaml must fail with exactly the one line in NAME.err. */
Test(spec, bad_specs)
{
  char *names[256];
  int count = list_dir(BAD_DIR, ".yaml", names, 256);
  cr_expect_geq(count, 20, "only %d bad-spec cases", count);
  for (int i = 0; i < count; i++) {
    char path[512], err_path[512], err[1024];
    snprintf(path, sizeof path, BAD_DIR "/%s", names[i]);
    snprintf(err_path, sizeof err_path, BAD_DIR "/%.*s.err", (int)(strlen(names[i]) - 5), names[i]);
    pat_spec s;
    memset(&s, 0xA5, sizeof s);
    pat_spec before = s;
    int rc = pat_spec_load(path, &s, err, sizeof err);
    cr_expect_eq(rc, -1, "%s: loaded, but should fail", path);
    cr_expect(memcmp(&s, &before, sizeof s) == 0, "%s: spec written on failure", path);
    char *want = read_text(err_path);
    cr_expect_not_null(want, "%s: missing", err_path);
    if (want) {
      size_t n = strlen(want);
      while (n && (want[n - 1] == '\n' || want[n - 1] == '\r'))
        want[--n] = '\0';
      cr_expect_str_eq(err, want, "%s", path);
      cr_expect_null(strchr(err, '\n'), "%s: message is not one line", path);
    }
    free(want);
    free(names[i]);
  }
  /* and no .err is left without its .yaml */
  count = list_dir(BAD_DIR, ".err", names, 256);
  for (int i = 0; i < count; i++) {
    char yaml_path[512];
    snprintf(yaml_path, sizeof yaml_path, BAD_DIR "/%.*s.yaml", (int)(strlen(names[i]) - 4), names[i]);
    FILE *f = fopen(yaml_path, "rb");
    cr_expect_not_null(f, "%s has no .yaml", names[i]);
    if (f)
      fclose(f);
    free(names[i]);
  }
}

/* A wgmma tile: parsed, named ...wg, sized without an epilogue buffer; on a device other than
** sm_90 it leaves the spec and a tuning choice of it goes back to the cost model. */
Test(spec, wgmma_tile_and_arch_filter)
{
  const char *yaml =
      "name: wg\n"
      "gqa: [8]\n"
      "tiles:\n"
      "  - {m: 16, n: 64, warps: 4, stages: 3}\n"
      "  - {m: 128, n: 64, warps: 8, stages: 3, wgmma: 1}\n"
      "  - {m: 64, n: 64, warps: 8, stages: 3}\n"
      "  - {m: 128, n: 64, warps: 8, stages: 2}\n";
  pat_spec s;
  char err[512];
  cr_assert_eq(parse_str(yaml, &s, err, sizeof err), 0, "%s", err);
  cr_assert_eq(s.num_tiles, 4);
  cr_expect_eq(s.tiles[0].wgmma, 0);
  cr_expect_eq(s.tiles[1].wgmma, 1);
  char name[128];
  pat_tile_kernel_name(&s, &s.tiles[1], 8, name, sizeof name);
  cr_expect_str_eq(name, "pat_fwd_wg_m128n64w8s3wg_g8");
  /* page ids 1 KiB + Q 128 x 128 x 2 + 3 stages x K and V 64 x 128 x 2 */
  cr_expect_eq(pat_tile_smem_bytes(&s, &s.tiles[1]), 1024 + 32768 + 3 * 2 * 16384);
  cr_expect_eq(pat_tile_threads(&s.tiles[1]), 256);
  cr_expect(!pat_tile_same(&s.tiles[1], &(pat_tile){.m = 128, .n = 64, .warps = 8, .stages = 3}));

  /* sm_90: the wgmma tile replaces the mma.sync tile of its m and n */
  pat_spec on90 = s;
  cr_expect_eq(pat_spec_keep_arch(&on90, 90, err, sizeof err), 1);
  cr_assert_eq(on90.num_tiles, 3);
  cr_expect(on90.tiles[1].wgmma && on90.tiles[2].m == 64);

  /* sm_80: the wgmma tile goes, the mma.sync m128 tile stays */
  s.num_model_tiles = 3;       /* as a tuning table that added tiles[3] leaves it */
  s.tile_choice[0][3][2] = 2;  /* the wgmma tile */
  s.tile_choice[0][3][3] = 4;  /* the table's own tile, which moves to index 2 */
  s.tile_choice[0][2][1] = 3;  /* the m64 tile, which moves to index 1 */
  s.masked_choice[0][2][1] = 4;  /* masked packs' choices move the same way */
  cr_assert_eq(pat_spec_keep_arch(&s, 80, err, sizeof err), 1, "%s", err);
  cr_assert_eq(s.num_tiles, 3);
  cr_expect(s.tiles[0].m == 16 && s.tiles[1].m == 64 && s.tiles[2].m == 128 && !s.tiles[2].wgmma);
  cr_expect_eq(s.num_model_tiles, 2);
  cr_expect_eq(s.tile_choice[0][3][2], 0);
  cr_expect_eq(s.tile_choice[0][3][3], 3);
  cr_expect_eq(s.tile_choice[0][2][1], 2);
  cr_expect_eq(s.masked_choice[0][2][1], 3);

  const char *only = "name: wgonly\ngqa: [8]\ntiles: [{m: 64, n: 64, warps: 4, stages: 3, wgmma: 1}]\n";
  cr_assert_eq(parse_str(only, &s, err, sizeof err), 0, "%s", err);
  cr_expect_eq(pat_spec_keep_arch(&s, 80, err, sizeof err), -1);
  cr_expect(strstr(err, "none of its tiles runs on sm_80 (wgmma tiles need sm_90)"), "%s", err);
  cr_expect_eq(s.num_tiles, 1, "a refused filter leaves the spec as it was");
}
