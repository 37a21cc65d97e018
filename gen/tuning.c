/* tuning.c: applying tuning tables to specs, their place beside the spec, and writing them. */
#include "tuning.h"

#include <ctype.h>
#include <string.h>

#include "tile.h"

int pat_row_class(int rows)
{
  for (int r = 0, lim = 16; r < PAT_ROW_CLASSES; r++, lim *= 2)
    if (rows <= lim) return r;
  return -1;
}

int pat_token_class(int tokens)
{
  return tokens <= 64 ? 0 : tokens <= 256 ? 1 : tokens <= 1024 ? 2 : 3;
}

int pat_tuning_apply(const pat_tuning *t, pat_spec *s, char *err, size_t errlen)
{
  if (strcmp(t->spec, s->name)) {
    snprintf(err, errlen, "%s: error: tuned for spec '%s', not '%s'", t->path, t->spec, s->name);
    return -1;
  }
  pat_spec n = *s;
  if (!n.num_model_tiles) n.num_model_tiles = n.num_tiles;
  if (t->has_split) n.split = t->split;
  for (int i = 0; i < t->num_choices; i++) {
    const pat_tuning_choice *c = &t->choices[i];
    int g = 0;
    while (g < n.num_gqa && n.gqa[g] != c->gqa) g++;
    if (g == n.num_gqa) {
      snprintf(err, errlen, "%s:%d: error: choices[%d]: spec '%s' has no GQA ratio %d", t->path,
               c->tile.mark.line, i, n.name, c->gqa);
      return -1;
    }
    char why[256];
    if (pat_tile_check(&n, &c->tile, why, sizeof why)) {
      snprintf(err, errlen, "%s:%d: error: choices[%d]: %s", t->path, c->tile.mark.line, i, why);
      return -1;
    }
    int k = 0;
    while (k < n.num_tiles && !pat_tile_same(&n.tiles[k], &c->tile)) k++;
    if (k == n.num_tiles) {
      if (n.num_tiles == PAT_MAX_TILES) {
        snprintf(err, errlen, "%s:%d: error: choices[%d]: more than %d tiles with the spec's own",
                 t->path, c->tile.mark.line, i, PAT_MAX_TILES);
        return -1;
      }
      n.tiles[n.num_tiles++] = c->tile;
    }
    unsigned char(*choice)[PAT_ROW_CLASSES][PAT_TOKEN_CLASSES] = c->masked ? n.masked_choice : n.tile_choice;
    choice[g][pat_row_class(c->rows)][pat_token_class(c->tokens)] = (unsigned char)(k + 1);
  }
  *s = n;
  return 0;
}

void pat_tuning_path(const char *spec_path, const char *gpu, char *out, size_t n)
{
  size_t len = strlen(spec_path);
  const char *ext = strrchr(spec_path, '.');
  const char *slash = strrchr(spec_path, '/');
  if (ext && (!slash || ext > slash) && (!strcmp(ext, ".yaml") || !strcmp(ext, ".yml")))
    len = (size_t)(ext - spec_path);
  char slug[96] = "";
  size_t k = 0;
  if (gpu && !strncmp(gpu, "NVIDIA ", 7)) gpu += 7;
  for (const char *c = gpu; c && *c && k + 2 < sizeof slug; c++) {
    if (isalnum((unsigned char)*c)) slug[k++] = (char)tolower((unsigned char)*c);
    else if (k && slug[k - 1] != '-') slug[k++] = '-';
  }
  while (k && slug[k - 1] == '-') k--;
  slug[k] = 0;
  snprintf(out, n, "%.*s.tune%s%s.yaml", (int)len, spec_path, k ? "." : "", slug);
}

int pat_tuning_write(FILE *f, const pat_tuning *t, const char *comment)
{
  for (const char *p = comment; p && *p;) {
    const char *e = strchr(p, '\n');
    int len = e ? (int)(e - p) : (int)strlen(p);
    fprintf(f, "# %.*s\n", len, p);
    p = e ? e + 1 : p + len;
  }
  fprintf(f, "spec: %s\ngpu: \"%s\"\n", t->spec, t->gpu);
  if (t->has_split)
    fprintf(f,
            "split: {min_kv_per_split: %d, max_splits: %d, ctas_per_sm: %d, mma_rows_per_token: %d, "
            "masked_packs: %d}\n",
            t->split.min_kv_per_split, t->split.max_splits, t->split.ctas_per_sm,
            t->split.mma_rows_per_token, t->split.masked_packs);
  fprintf(f, "choices:%s\n", t->num_choices ? "" : " []");
  for (int i = 0; i < t->num_choices; i++) {
    const pat_tuning_choice *c = &t->choices[i];
    fprintf(f, "  - {gqa: %d, rows: %d, tokens: %d, m: %d, n: %d, warps: %d, stages: %d", c->gqa, c->rows,
            c->tokens, c->tile.m, c->tile.n, c->tile.warps, c->tile.stages);
    if (pat_tile_warp_rows(&c->tile) != 16) fprintf(f, ", warp_rows: %d", pat_tile_warp_rows(&c->tile));
    if (c->tile.wgmma) fprintf(f, ", wgmma: 1");
    fprintf(f, c->masked ? ", masked: 1}\n" : "}\n");
  }
  return ferror(f) ? -1 : 0;
}
