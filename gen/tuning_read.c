/* tuning_read.c: YAML tuning table -> struct pat_tuning (spec.h), through yaml_doc.c. Its spec
** name and split policy go through the spec reader's own parsers, so a table is refused with
** the same messages as a spec. The caller's struct is written only on success. */
#include "spec.h"
#include "spec_parse.h"
#include "yaml_doc.h"

#include <stdio.h>
#include <string.h>

static const char *const tuning_keys[] = {"spec", "gpu", "split", "choices"};
static const char *const choice_keys[] = {"gqa", "rows", "tokens", "m", "n", "warps", "stages",
                                          "warp_rows", "wgmma", "masked"};

static int parse_choice(const yd_ctx *c, const yaml_node_t *n, int index, pat_tuning_choice *ch)
{
  char where[32];
  snprintf(where, sizeof where, "choices[%d]: ", index);
  if (n->type != YAML_MAPPING_NODE)
    return yd_fail_type(c, n, "choices[]",
                        "a mapping with keys gqa, rows, tokens, m, n, warps, stages (and warp_rows, wgmma, masked)");
  int have[10] = {0};
  int *fields[10] = {&ch->gqa, &ch->rows, &ch->tokens, &ch->tile.m, &ch->tile.n, &ch->tile.warps,
                     &ch->tile.stages, &ch->tile.warp_rows, &ch->tile.wgmma, &ch->masked};
  for (int i = 0; i < yd_mapping_size(n); i++) {
    int which = 0;
    if (yd_map_key(c, n, i, where, choice_keys, YD_NKEYS(choice_keys), &which))
      return -1;
    char what[48];
    snprintf(what, sizeof what, "choices[%d]: %s", index, choice_keys[which]);
    const int lo = which >= 8 ? 0 : 1, hi = which >= 8 ? 1 : 65536;  /* wgmma, masked: 0 or 1 */
    if (yd_get_int_range(c, yd_node_at(c, n->data.mapping.pairs.start[i].value), what, lo, hi, fields[which]))
      return -1;
    have[which] = 1;
  }
  for (int i = 0; i < 7; i++)  /* all but warp_rows (default 16) and wgmma (default 0) */
    if (!have[i])
      return yd_fail_node(c, n, "choices[%d]: missing required key '%s'", index, choice_keys[i]);
  if (!have[7])
    ch->tile.warp_rows = 16;
  if (!have[8])
    ch->tile.wgmma = 0;
  if (!have[9])
    ch->masked = 0;
  if (ch->masked && ch->tile.wgmma)
    return yd_fail_node(c, n, "choices[%d]: a masked pack takes an mma.sync tile, not a wgmma one", index);
  if (ch->rows != 16 && ch->rows != 32 && ch->rows != 64 && ch->rows != 128 && ch->rows != 256)
    return yd_fail_node(c, n, "choices[%d]: rows must be 16, 32, 64, 128 or 256, got %d", index, ch->rows);
  if (ch->tokens != 64 && ch->tokens != 256 && ch->tokens != 1024 && ch->tokens != 65536)
    return yd_fail_node(c, n, "choices[%d]: tokens must be 64, 256, 1024 or 65536 (longer), got %d", index,
                        ch->tokens);
  if (ch->tile.m < ch->rows)
    return yd_fail_node(c, n, "choices[%d]: a tile of m %d cannot hold %d rows", index, ch->tile.m, ch->rows);
  ch->tile.mark = yd_mark_of(n);
  return 0;
}

static int tuning_root(const yd_ctx *c, void *tmp)
{
  pat_tuning *t = tmp;
  memset(t, 0, sizeof *t);
  yd_copy_str(t->path, sizeof t->path, c->file);
  const yaml_node_t *root;
  if (yd_root_mapping(c, &root))
    return -1;
  int have_spec = 0;
  for (int i = 0; i < yd_mapping_size(root); i++) {
    int which = 0;
    if (yd_map_key(c, root, i, "", tuning_keys, YD_NKEYS(tuning_keys), &which))
      return -1;
    const yaml_node_t *v = yd_node_at(c, root->data.mapping.pairs.start[i].value);
    if (which == 0) {
      pat_spec named;
      if (spec_parse_name(c, v, &named))
        return -1;
      yd_copy_str(t->spec, sizeof t->spec, named.name);
      have_spec = 1;
    } else if (which == 1) {
      if (v->type != YAML_SCALAR_NODE || yd_is_null(v) || v->data.scalar.length >= sizeof t->gpu)
        return yd_fail_type(c, v, "gpu", "the device name (a string)");
      memcpy(t->gpu, v->data.scalar.value, v->data.scalar.length);
      t->gpu[v->data.scalar.length] = '\0';
    } else if (which == 2) {
      pat_spec sp;
      pat_spec_defaults(&sp);
      if (spec_parse_split(c, v, &sp))
        return -1;
      t->split = sp.split;
      t->has_split = 1;
    } else {
      if (v->type != YAML_SEQUENCE_NODE)
        return yd_fail_type(c, v, "choices", "a sequence of choice mappings");
      int count = yd_sequence_size(v);
      for (int k = 0; k < count; k++) {
        const yaml_node_t *item = yd_node_at(c, v->data.sequence.items.start[k]);
        if (k >= (int)YD_NKEYS(t->choices))
          return yd_fail_node(c, item, "choices[%d]: too many choices (at most %d)", k, (int)YD_NKEYS(t->choices));
        if (parse_choice(c, item, k, &t->choices[k]))
          return -1;
        for (int j = 0; j < k; j++)
          if (t->choices[j].gqa == t->choices[k].gqa && t->choices[j].rows == t->choices[k].rows &&
              t->choices[j].tokens == t->choices[k].tokens && t->choices[j].masked == t->choices[k].masked)
            return yd_fail_node(c, item, "choices[%d]: gqa %d, rows %d, tokens %d%s already chosen at choices[%d]", k,
                                t->choices[k].gqa, t->choices[k].rows, t->choices[k].tokens,
                                t->choices[k].masked ? " (masked)" : "", j);
      }
      t->num_choices = count;
    }
  }
  if (!have_spec)
    return yd_fail_node(c, root, "missing required key 'spec'");
  return 0;
}

int pat_tuning_parse(const char *text, size_t len, const char *filename, pat_tuning *t, char *err,
                     size_t errlen)
{
  pat_tuning tmp;
  return yd_parse_text(text, len, filename, tuning_root, &tmp, t, sizeof tmp, err, errlen);
}

int pat_tuning_load(const char *path, pat_tuning *t, char *err, size_t errlen)
{
  pat_tuning tmp;
  return yd_load_text(path, tuning_root, &tmp, t, sizeof tmp, err, errlen);
}
