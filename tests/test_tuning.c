/* test_tuning.c: tuning tables: parsing and its messages, applying to a spec, the path beside
** the spec, write/read round trip, and the scheduler following a table's tile choices while
** the cost model keeps to the spec's own tiles. Criterion suite "tuning". */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "tree.h"
#include "tuning.h"

static const char good[] =
    "# a comment\n"
    "spec: default\n"
    "gpu: \"NVIDIA H200\"\n"
    "split: {min_kv_per_split: 128, max_splits: 32, ctas_per_sm: 4, mma_rows_per_token: 64}\n"
    "choices:\n"
    "  - {gqa: 4, rows: 16, tokens: 256, m: 16, n: 128, warps: 4, stages: 2}\n"
    "  - {gqa: 8, rows: 64, tokens: 65536, m: 64, n: 32, warps: 4, stages: 2}\n"
    "  - {gqa: 8, rows: 128, tokens: 1024, m: 128, n: 32, warps: 4, stages: 3, warp_rows: 32}\n";

static pat_tuning parse_ok(const char *text)
{
  pat_tuning t;
  char err[512];
  cr_assert_eq(pat_tuning_parse(text, strlen(text), "t.yaml", &t, err, sizeof err), 0, "%s", err);
  return t;
}

Test(tuning, parses_every_field)
{
  pat_tuning t = parse_ok(good);
  cr_assert_str_eq(t.spec, "default");
  cr_assert_str_eq(t.gpu, "NVIDIA H200");
  cr_assert_str_eq(t.path, "t.yaml");
  cr_assert(t.has_split);
  cr_assert_eq(t.split.min_kv_per_split, 128);
  cr_assert_eq(t.split.max_splits, 32);
  cr_assert_eq(t.split.ctas_per_sm, 4);
  cr_assert_eq(t.split.mma_rows_per_token, 64);
  cr_assert_eq(t.num_choices, 3);
  cr_assert_eq(t.choices[0].gqa, 4);
  cr_assert_eq(t.choices[0].rows, 16);
  cr_assert_eq(t.choices[0].tokens, 256);
  cr_assert_eq(t.choices[1].tokens, 65536);
  cr_assert_eq(t.choices[0].tile.n, 128);
  cr_assert_eq(t.choices[1].tile.m, 64);
  cr_assert_eq(t.choices[1].tile.stages, 2);
  cr_assert_eq(t.choices[1].tile.mark.line, 7);
  cr_assert_eq(t.choices[1].tile.warp_rows, 16);  /* the default */
  cr_assert_eq(t.choices[2].tile.warp_rows, 32);
}

Test(tuning, bad_tables_name_the_place)
{
  static const struct { const char *text, *msg; } cases[] = {
    {"gpu: x\n", "t.yaml:1:1: error: missing required key 'spec'"},
    {"spec: default\nsize: 3\n", "t.yaml:2:1: error: unknown key 'size' (valid keys: spec, gpu, split, choices)"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 24, tokens: 64, m: 32, n: 64, warps: 2, stages: 2}\n",
     "t.yaml:3:5: error: choices[0]: rows must be 16, 32, 64, 128 or 256, got 24"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 16, tokens: 100, m: 32, n: 64, warps: 2, stages: 2}\n",
     "t.yaml:3:5: error: choices[0]: tokens must be 64, 256, 1024 or 65536 (longer), got 100"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 64, tokens: 64, m: 32, n: 64, warps: 2, stages: 2}\n",
     "t.yaml:3:5: error: choices[0]: a tile of m 32 cannot hold 64 rows"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 16, tokens: 64, m: 16, n: 64, stages: 2}\n",
     "t.yaml:3:5: error: choices[0]: missing required key 'warps'"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 16, m: 16, n: 64, warps: 1, stages: 2}\n",
     "t.yaml:3:5: error: choices[0]: missing required key 'tokens'"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 16, tokens: 64, m: 16, n: 64, warps: 1, stages: 2}\n"
     "  - {gqa: 4, rows: 16, tokens: 64, m: 16, n: 32, warps: 1, stages: 2}\n",
     "t.yaml:4:5: error: choices[1]: gqa 4, rows 16, tokens 64 already chosen at choices[0]"},
    {"spec: Default\n", "t.yaml:1:7: error: name: expected [a-z0-9_]+ of at most 63 characters, got 'Default'"},
    {"spec: default\nsplit: {ctas_per_sm: 0}\n", "t.yaml:2:22: error: split: ctas_per_sm: must be 1..64, got 0"},
    {"spec: default\nchoices:\n  - {gqa: 8, rows: 128, tokens: 64, m: 128, n: 64, warps: 8, stages: 3, wgmma: 1, masked: 1}\n",
     "t.yaml:3:5: error: choices[0]: a masked pack takes an mma.sync tile, not a wgmma one"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 16, tokens: 64, m: 16, n: 64, warps: 1, stages: 2, masked: 2}\n",
     "t.yaml:3:79: error: choices[0]: masked: must be 0..1, got 2"},
    {"spec: default\nchoices:\n  - {gqa: 4, rows: 16, tokens: 64, m: 16, n: 64, warps: 1, stages: 2, masked: 1}\n"
     "  - {gqa: 4, rows: 16, tokens: 64, m: 16, n: 32, warps: 1, stages: 2, masked: 1}\n",
     "t.yaml:4:5: error: choices[1]: gqa 4, rows 16, tokens 64 (masked) already chosen at choices[0]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    pat_tuning t;
    memset(&t, 0x5a, sizeof t);
    char err[512];
    cr_assert_eq(pat_tuning_parse(cases[i].text, strlen(cases[i].text), "t.yaml", &t, err, sizeof err), -1,
                 "case %zu parsed", i);
    cr_assert(!strncmp(err, cases[i].msg, strlen(cases[i].msg)), "case %zu: got '%s', want '%s'", i, err,
              cases[i].msg);
    cr_assert_eq(((unsigned char *)&t)[0], 0x5a, "case %zu wrote the table", i);
  }
}

/* Classes with a choice in one of a spec's choice arrays. */
static int classes_chosen(const unsigned char choice[PAT_MAX_GQA][PAT_ROW_CLASSES][PAT_TOKEN_CLASSES])
{
  int n = 0;
  for (int g = 0; g < PAT_MAX_GQA; g++)
    for (int r = 0; r < PAT_ROW_CLASSES; r++)
      for (int k = 0; k < PAT_TOKEN_CLASSES; k++) n += choice[g][r][k] != 0;
  return n;
}

Test(tuning, apply_sets_split_choices_and_appends_tiles)
{
  pat_spec s;
  pat_spec_defaults(&s);
  const pat_spec before = s;
  pat_tuning t = parse_ok(good);
  char err[512];
  cr_assert_eq(pat_tuning_apply(&t, &s, err, sizeof err), 0, "%s", err);
  cr_assert_eq(s.split.min_kv_per_split, 128);
  cr_assert_eq(s.split.mma_rows_per_token, 64);
  cr_assert_eq(s.num_model_tiles, before.num_tiles, "the cost model keeps to the spec's tiles");
  cr_assert_eq(s.num_tiles, before.num_tiles + 2,
               "m16n128w4s2 and m128n32w4s3r32 are new, m64n32w4s2 is the spec's");
  cr_assert_eq(s.tiles[before.num_tiles].n, 128);
  cr_assert_eq(s.tiles[before.num_tiles + 1].warp_rows, 32);
  cr_assert_eq(s.tile_choice[3][3][2], before.num_tiles + 2, "gqa 8, rows <= 128, tokens <= 1024: the r32 tile");
  cr_assert_eq(s.tile_choice[2][0][1], before.num_tiles + 1, "gqa 4 (index 2), rows <= 16, tokens <= 256: the new tile");
  cr_assert_eq(s.tile_choice[3][2][3], 3 + 1, "gqa 8 (index 3), rows <= 64, longest tokens: the spec's tiles[3]");
  cr_assert_eq(classes_chosen(s.tile_choice), 3);
}

Test(tuning, apply_refuses_mismatches_and_leaves_the_spec)
{
  static const struct { const char *text, *msg; } cases[] = {
    {"spec: other\n", "t.yaml: error: tuned for spec 'other', not 'default'"},
    {"spec: default\nchoices:\n  - {gqa: 3, rows: 16, tokens: 64, m: 16, n: 64, warps: 4, stages: 2}\n",
     "t.yaml:3: error: choices[0]: spec 'default' has no GQA ratio 3"},
    {"spec: default\nchoices:\n  - {gqa: 2, rows: 16, tokens: 64, m: 16, n: 24, warps: 1, stages: 2}\n",
     "t.yaml:3: error: choices[0]: "},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    pat_spec s;
    pat_spec_defaults(&s);
    const pat_spec before = s;
    pat_tuning t = parse_ok(cases[i].text);
    char err[512];
    cr_assert_eq(pat_tuning_apply(&t, &s, err, sizeof err), -1, "case %zu applied", i);
    cr_assert(!strncmp(err, cases[i].msg, strlen(cases[i].msg)), "case %zu: got '%s'", i, err);
    cr_assert(!memcmp(&s, &before, sizeof s), "case %zu changed the spec", i);
  }
}

Test(tuning, classes)
{
  cr_assert_eq(pat_row_class(1), 0);
  cr_assert_eq(pat_row_class(16), 0);
  cr_assert_eq(pat_row_class(17), 1);
  cr_assert_eq(pat_row_class(256), 4);
  cr_assert_eq(pat_row_class(257), -1);
  cr_assert_eq(pat_token_class(1), 0);
  cr_assert_eq(pat_token_class(64), 0);
  cr_assert_eq(pat_token_class(65), 1);
  cr_assert_eq(pat_token_class(1024), 2);
  cr_assert_eq(pat_token_class(1025), 3);
  cr_assert_eq(pat_token_class(1 << 20), 3);
}

Test(tuning, path_beside_the_spec)
{
  char p[256];
  pat_tuning_path("specs/default.yaml", NULL, p, sizeof p);
  cr_assert_str_eq(p, "specs/default.tune.yaml");
  pat_tuning_path("a.b/spec.yml", NULL, p, sizeof p);
  cr_assert_str_eq(p, "a.b/spec.tune.yaml");
  pat_tuning_path("a.b/spec", NULL, p, sizeof p);
  cr_assert_str_eq(p, "a.b/spec.tune.yaml");
}

Test(tuning, path_of_one_gpu)
{
  char p[256];
  pat_tuning_path("specs/default.yaml", "NVIDIA H100 80GB HBM3", p, sizeof p);
  cr_assert_str_eq(p, "specs/default.tune.h100-80gb-hbm3.yaml");
  pat_tuning_path("specs/default.yaml", "NVIDIA H200", p, sizeof p);
  cr_assert_str_eq(p, "specs/default.tune.h200.yaml");
  pat_tuning_path("x.yaml", "  A100-SXM4 (40GB) ", p, sizeof p);
  cr_assert_str_eq(p, "x.tune.a100-sxm4-40gb.yaml");
  pat_tuning_path("x.yaml", "", p, sizeof p);
  cr_assert_str_eq(p, "x.tune.yaml");
}

/* The table as pat_tuning_write writes it, with `comment`: a malloc'd string. */
static char *written(const pat_tuning *t, const char *comment)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  cr_assert_eq(pat_tuning_write(f, t, comment), 0);
  fclose(f);
  return buf;
}

Test(tuning, write_then_read_gives_the_same_table)
{
  pat_tuning t = parse_ok(good);
  char *buf = written(&t, "line one\nline two");
  cr_assert(!strncmp(buf, "# line one\n# line two\n", 22), "%s", buf);
  pat_tuning back = parse_ok(buf);
  cr_assert_str_eq(back.gpu, t.gpu);
  cr_assert_eq(back.num_choices, t.num_choices);
  cr_assert(!memcmp(&back.split, &t.split, sizeof t.split));
  for (int i = 0; i < t.num_choices; i++) {
    cr_assert_eq(back.choices[i].gqa, t.choices[i].gqa);
    cr_assert_eq(back.choices[i].rows, t.choices[i].rows);
    cr_assert_eq(back.choices[i].tokens, t.choices[i].tokens);
    cr_assert_eq(back.choices[i].tile.m, t.choices[i].tile.m);
    cr_assert_eq(back.choices[i].tile.n, t.choices[i].tile.n);
    cr_assert_eq(back.choices[i].tile.warps, t.choices[i].tile.warps);
    cr_assert_eq(back.choices[i].tile.stages, t.choices[i].tile.stages);
    cr_assert_eq(back.choices[i].tile.warp_rows, t.choices[i].tile.warp_rows);
  }
  cr_assert(strstr(buf, "stages: 3, warp_rows: 32}\n"), "%s", buf);
  cr_assert(strstr(buf, "warps: 4, stages: 2}\n"), "16 rows a warp is not written: %s", buf);
  free(buf);
}

/* A wgmma choice is written with its key and read back; the key takes 0 or 1 only. */
Test(tuning, wgmma_choice_round_trip)
{
  pat_tuning t = parse_ok("spec: default\ngpu: \"G\"\nchoices:\n"
                          "  - {gqa: 8, rows: 128, tokens: 65536, m: 128, n: 64, warps: 8, stages: 3, wgmma: 1}\n"
                          "  - {gqa: 8, rows: 64, tokens: 65536, m: 64, n: 64, warps: 4, stages: 3, wgmma: 0}\n");
  cr_assert_eq(t.choices[0].tile.wgmma, 1);
  cr_assert_eq(t.choices[1].tile.wgmma, 0);
  char *buf = written(&t, "x");
  cr_assert(strstr(buf, "warps: 8, stages: 3, wgmma: 1}\n"), "%s", buf);
  cr_assert(strstr(buf, "warps: 4, stages: 3}\n"), "wgmma 0 is not written: %s", buf);
  pat_tuning back = parse_ok(buf);
  cr_assert_eq(back.choices[0].tile.wgmma, 1);
  cr_assert_eq(back.choices[1].tile.wgmma, 0);
  free(buf);
  pat_tuning bad;
  char err[512];
  const char *two = "spec: default\nchoices:\n"
                    "  - {gqa: 8, rows: 128, tokens: 64, m: 128, n: 64, warps: 8, stages: 3, wgmma: 2}\n";
  cr_assert_eq(pat_tuning_parse(two, strlen(two), "t.yaml", &bad, err, sizeof err), -1);
  cr_assert(strstr(err, "wgmma"), "%s", err);
}

/* Tile of every pack of a plan, in pack order. */
static int *pack_tiles(const pat_host_plan *p)
{
  int *tile = malloc(sizeof(int) * (size_t)(p->num_packs ? p->num_packs : 1));
  for (int g = 0; g < p->num_groups; g++)
    for (int i = 0; i < p->groups[g].num_packs; i++) tile[p->groups[g].pack_begin + i] = p->groups[g].tile;
  return tile;
}

static void build(const pat_workload *w, const pat_spec *s, int gqa, pat_host_plan *p)
{
  pat_batch b = {.num_queries = w->num_queries, .seq_lens = w->seq_lens, .block_table = w->block_table,
                 .block_table_stride = w->stride, .num_pages_total = w->num_pages,
                 .page_size = w->page_size, .gqa = gqa};
  pat_sched_opts o = {.spec = s, .num_sms = 132, .kv_heads = 8, .mode = PAT_SCHED_PREFIX};
  char err[512];
  cr_assert_eq(pat_sched_build(&b, &o, p, err, sizeof err), 0, "%s", err);
}

Test(tuning, scheduler_follows_choices_and_the_model_keeps_its_tiles)
{
  pat_spec s;
  pat_spec_defaults(&s);
  pat_workload w;
  char err[512];
  cr_assert_eq(pat_tree_parse("1,8,512_32,512,256", 32, 3, &w, err, sizeof err), 0, "%s", err);
  const int gqa = 4, gi = 2;
  pat_host_plan base, extra, forced;
  build(&w, &s, gqa, &base);

  /* A table that only adds a tile: plans are unchanged (the cost model does not see it). */
  const char *add = "spec: default\nchoices:\n  - {gqa: 1, rows: 16, tokens: 64, m: 16, n: 128, warps: 4, stages: 2}\n";
  pat_tuning t = parse_ok(add);
  pat_spec s2 = s;
  cr_assert_eq(pat_tuning_apply(&t, &s2, err, sizeof err), 0, "%s", err);
  build(&w, &s2, gqa, &extra);
  cr_assert_eq(extra.num_packs, base.num_packs);
  int *tb = pack_tiles(&base), *te = pack_tiles(&extra);
  for (int i = 0; i < base.num_packs; i++) cr_assert_eq(te[i], tb[i], "pack %d changed tile", i);

  /* Force the new tile for gqa 4, rows <= 16, 64 < tokens <= 256: every such pack takes it,
  ** no other pack does. */
  s2.tile_choice[gi][0][1] = (unsigned char)(s2.num_tiles);  /* the appended tile, index num_tiles - 1 */
  build(&w, &s2, gqa, &forced);
  int *tf = pack_tiles(&forced), n16 = 0;
  for (int g = 0; g < forced.num_groups; g++)
    for (int i = 0; i < forced.groups[g].num_packs; i++) {
      const int at = forced.groups[g].pack_begin + i;
      const pat_pack *pk = &forced.packs[at];
      int rows = pk->num_queries * gqa;
      if (rows <= 16 && pk->kv_len > 64 && pk->kv_len <= 256) {
        n16++;
        cr_assert_eq(tf[at], s2.num_tiles - 1, "pack of %d rows, %d tokens on tile %d", rows, pk->kv_len, tf[at]);
      } else {
        cr_assert_neq(tf[at], s2.num_tiles - 1, "pack of %d rows, %d tokens took the forced tile", rows, pk->kv_len);
      }
    }
  cr_assert_gt(n16, 0, "the tree has packs of <= 16 rows and 65..256 tokens");
  free(tb);
  free(te);
  free(tf);
  pat_host_plan_free(&base);
  pat_host_plan_free(&extra);
  pat_host_plan_free(&forced);
  pat_workload_free(&w);
}

/* A masked choice: read, written back with its key, applied to masked_choice only; the same
** class may hold a plain choice beside it. */
Test(tuning, masked_choice_round_trip_and_apply)
{
  pat_tuning t = parse_ok("spec: default\ngpu: \"G\"\nchoices:\n"
                          "  - {gqa: 2, rows: 32, tokens: 1024, m: 32, n: 32, warps: 2, stages: 2}\n"
                          "  - {gqa: 2, rows: 32, tokens: 1024, m: 32, n: 64, warps: 4, stages: 3, masked: 1}\n");
  cr_assert_eq(t.num_choices, 2);
  cr_assert_eq(t.choices[0].masked, 0);
  cr_assert_eq(t.choices[1].masked, 1);
  char *buf = written(&t, "x");
  cr_assert(strstr(buf, "warps: 4, stages: 3, masked: 1}\n"), "%s", buf);
  cr_assert(strstr(buf, "warps: 2, stages: 2}\n"), "masked 0 is not written: %s", buf);
  pat_tuning back = parse_ok(buf);
  cr_assert_eq(back.choices[1].masked, 1);
  free(buf);

  pat_spec s;
  pat_spec_defaults(&s);
  char err[512];
  cr_assert_eq(pat_tuning_apply(&back, &s, err, sizeof err), 0, "%s", err);
  const int gi = 1, rc = 1, tc = 2;  /* gqa 2, rows <= 32, tokens <= 1024 */
  cr_assert_gt(s.tile_choice[gi][rc][tc], 0);
  cr_assert_gt(s.masked_choice[gi][rc][tc], 0);
  const pat_tile *plain = &s.tiles[s.tile_choice[gi][rc][tc] - 1], *masked = &s.tiles[s.masked_choice[gi][rc][tc] - 1];
  cr_assert_eq(plain->n, 32);
  cr_assert_eq(masked->n, 64);
  cr_assert_eq(masked->stages, 3);
  cr_assert_eq(classes_chosen(s.masked_choice), 1);
  cr_assert_eq(classes_chosen(s.tile_choice), 1);
}

/* Masked packs follow their class's masked choice where there is one, the plain choice where
** there is not; plain packs never take the masked choice. */
Test(tuning, scheduler_gives_masked_packs_their_own_choice)
{
  pat_spec s;
  pat_spec_defaults(&s);
  cr_assert(s.split.masked_packs, "the default plans masked packs");
  pat_workload w;
  char err[512];
  cr_assert_eq(pat_tree_parse("1,4,16,512_1024,256,128,32", 32, 5, &w, err, sizeof err), 0, "%s", err);
  const int gqa = 2, gi = 1;
  /* Two mma.sync tiles of 32 rows not in the spec: one for the plain choice, one masked. */
  pat_tuning t = parse_ok("spec: default\nchoices:\n"
                          "  - {gqa: 2, rows: 32, tokens: 1024, m: 32, n: 16, warps: 2, stages: 2}\n"
                          "  - {gqa: 2, rows: 32, tokens: 1024, m: 32, n: 128, warps: 2, stages: 2, masked: 1}\n");
  cr_assert_eq(pat_tuning_apply(&t, &s, err, sizeof err), 0, "%s", err);
  const int tp = s.tile_choice[gi][1][2] - 1, tm = s.masked_choice[gi][1][2] - 1;
  cr_assert(tp >= 0 && tm >= 0 && tp != tm);
  pat_spec plain_only = s;
  memset(plain_only.masked_choice, 0, sizeof plain_only.masked_choice);

  pat_host_plan both, fallback;
  build(&w, &s, gqa, &both);
  build(&w, &plain_only, gqa, &fallback);
  int nmasked = 0;
  for (int v = 0; v < 2; v++) {
    const pat_host_plan *p = v ? &fallback : &both;
    int *tiles = pack_tiles(p);
    for (int i = 0; i < p->num_packs; i++) {
      const pat_pack *pk = &p->packs[i];
      int rows = pk->num_queries * gqa;
      if (rows <= 16 || rows > 32 || pk->kv_len <= 256 || pk->kv_len > 1024) continue;
      if (pk->masked) {
        nmasked += !v;
        cr_assert_eq(tiles[i], v ? tp : tm, "masked pack %d (%s): tile %d", i, v ? "no masked choice" : "masked choice",
                     tiles[i]);
      } else {
        cr_assert_eq(tiles[i], tp, "plain pack %d: tile %d", i, tiles[i]);
      }
    }
    free(tiles);
  }
  cr_assert_gt(nmasked, 0, "the tree has masked packs of 17-32 rows and 257-1024 tokens");
  pat_host_plan_free(&both);
  pat_host_plan_free(&fallback);
  pat_workload_free(&w);
}
