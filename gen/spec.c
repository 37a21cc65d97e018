/* spec.c: YAML spec -> validated struct pat_spec, and tuning table -> struct pat_tuning,
** through libyaml's document API.
** Every error reads "FILE:LINE:COLUMN: error: MESSAGE"; the caller's struct is written only on
** success. No global state: safe to call from several threads at once. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "spec.h"
#include "tile.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define SPEC_FILE_MAX (1 << 20)   /* larger files are refused by pat_spec_load */
#define QUOTE_MAX     48          /* characters of a scalar quoted in a message */
#define QUOTED_SIZE   (QUOTE_MAX * 4 + 16)  /* buffer for quote(): every byte may take 4 */
#define DESC_SIZE     (QUOTED_SIZE + 32)    /* buffer for describe() */

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

typedef struct parse_ctx {
  const char *file;         /* name used in messages */
  const unsigned char *text; /* the input, for marks of reader errors */
  size_t len;
  yaml_document_t *doc;
  char *err;                /* caller's message buffer, may be NULL */
  size_t errlen;
} parse_ctx;

static const char *const top_keys[] = {"name", "dtype", "head_dim", "page_size",
                                       "gqa", "tiles", "split", "archs"};
static const char *const tile_keys[] = {"m", "n", "warps", "stages", "warp_rows", "wgmma"};
static const char *const split_keys[] = {"min_kv_per_split", "max_splits", "ctas_per_sm",
                                         "mma_rows_per_token", "masked_packs"};
static const char *const tuning_keys[] = {"spec", "gpu", "split", "choices"};
static const char *const choice_keys[] = {"gqa", "rows", "tokens", "m", "n", "warps", "stages",
                                          "warp_rows", "wgmma", "masked"};
#define NKEYS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const int valid_archs[] = {80, 86, 89, 90};

const char *pat_dtype_name(pat_dtype dtype)
{
  return dtype == PAT_BF16 ? "bf16" : "fp16";
}

/* Copies a NUL-terminated string into a fixed buffer, truncating. */
static void copy_str(char *dst, size_t n, const char *src)
{
  size_t i = 0;
  for (; src[i] && i + 1 < n; i++)
    dst[i] = src[i];
  dst[i] = '\0';
}

void pat_spec_defaults(pat_spec *spec)
{
  memset(spec, 0, sizeof *spec);
  copy_str(spec->name, sizeof spec->name, "default");
  copy_str(spec->path, sizeof spec->path, "<string>");
  spec->dtype = PAT_FP16;
  spec->head_dim = 128;
  spec->page_size = 32;
  spec->num_gqa = 4;
  spec->gqa[0] = 1;
  spec->gqa[1] = 2;
  spec->gqa[2] = 4;
  spec->gqa[3] = 8;
  /* Measured on the paper's trees (bench/NOTES.md): a short-KV tile for leaf packs, a
  ** 4-warp N split for small packs, and 32/64/128-row tiles for shared prefixes; on sm_90
  ** the 128-row tile runs on wgmma (it replaces the mma.sync one there). */
  spec->num_tiles = 6;
  spec->tiles[0] = (pat_tile){.m = 16, .n = 32, .warps = 2, .stages = 2};
  spec->tiles[1] = (pat_tile){.m = 16, .n = 64, .warps = 4, .stages = 3};
  spec->tiles[2] = (pat_tile){.m = 32, .n = 64, .warps = 4, .stages = 3};
  spec->tiles[3] = (pat_tile){.m = 64, .n = 32, .warps = 4, .stages = 2};
  spec->tiles[4] = (pat_tile){.m = 128, .n = 64, .warps = 8, .stages = 3, .wgmma = 1};
  spec->tiles[5] = (pat_tile){.m = 128, .n = 64, .warps = 8, .stages = 2};
  spec->split.min_kv_per_split = 256;
  spec->split.max_splits = 64;
  spec->split.ctas_per_sm = 2;
  spec->split.mma_rows_per_token = 128;
  spec->split.masked_packs = 1;
  spec->num_archs = 2;
  spec->archs[0] = 80;
  spec->archs[1] = 90;
}

/* Writes "FILE:LINE:COLUMN: error: MESSAGE" (1-based position) into the caller's buffer.
** Always returns -1 so that callers can `return fail_at(...)`. */
static int fail_at(const parse_ctx *c, size_t line, size_t column, const char *fmt, ...)
    PRINTF_LIKE(4, 5);
static int fail_at(const parse_ctx *c, size_t line, size_t column, const char *fmt, ...)
{
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c->err && c->errlen)
    snprintf(c->err, c->errlen, "%s:%zu:%zu: error: %s", c->file, line, column, msg);
  return -1;
}

/* As fail_at, at a libyaml mark (0-based). */
#define fail_mark(c, mk, ...) fail_at((c), (mk).line + 1, (mk).column + 1, __VA_ARGS__)
/* As fail_at, at the start of a node. */
#define fail_node(c, node, ...) fail_mark((c), (node)->start_mark, __VA_ARGS__)

/* Quotes a scalar for a message: 'text', control bytes as \xNN, long values cut with "...". */
static void quote(const yaml_node_t *n, char *buf, size_t size)
{
  const unsigned char *s = n->data.scalar.value;
  size_t len = n->data.scalar.length, o = 0;
  buf[o++] = '\'';
  for (size_t i = 0; i < len; i++) {
    if (o + 8 >= size || i >= QUOTE_MAX) {
      /* do not cut a UTF-8 sequence in the middle */
      while (o > 1 && ((unsigned char)buf[o - 1] & 0xC0) == 0x80)
        o--;
      if (o > 1 && ((unsigned char)buf[o - 1] & 0xC0) == 0xC0)
        o--;
      memcpy(buf + o, "...", 3);
      o += 3;
      break;
    }
    unsigned char ch = s[i];
    if (ch < 0x20 || ch == 0x7f || ch == '\\') {
      o += (size_t)snprintf(buf + o, size - o, "\\x%02X", ch);
    } else {
      buf[o++] = (char)ch;
    }
  }
  buf[o++] = '\'';
  buf[o] = '\0';
}

/* A plain scalar that YAML reads as null: empty, "~" or "null". */
static int is_null(const yaml_node_t *n)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return 0;
  const char *v = (const char *)n->data.scalar.value;
  return !strcmp(v, "") || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
         !strcmp(v, "NULL");
}

/* Describes what a node is, for "expected X, got Y" messages. */
static void describe(const yaml_node_t *n, char *buf, size_t size)
{
  if (n->type == YAML_SEQUENCE_NODE) {
    copy_str(buf, size, "a sequence");
  } else if (n->type == YAML_MAPPING_NODE) {
    copy_str(buf, size, "a mapping");
  } else if (is_null(n)) {
    copy_str(buf, size, "an empty value");
  } else if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
    char q[QUOTED_SIZE];
    quote(n, q, sizeof q);
    snprintf(buf, size, "the quoted string %s", q);
  } else {
    quote(n, buf, size);
  }
}

/* "WHAT: expected EXPECTED, got <description of n>" at n. */
static int fail_type(const parse_ctx *c, const yaml_node_t *n, const char *what,
                     const char *expected)
{
  char got[DESC_SIZE];
  describe(n, got, sizeof got);
  return fail_node(c, n, "%s: expected %s, got %s", what, expected, got);
}

static int scalar_is(const yaml_node_t *n, const char *s)
{
  size_t len = strlen(s);
  return n->type == YAML_SCALAR_NODE && n->data.scalar.length == len &&
         !memcmp(n->data.scalar.value, s, len);
}

/* Reads a decimal integer (optional '-', digits, no leading zeros) that fits an int. */
static int get_int(const parse_ctx *c, const yaml_node_t *n, const char *what, int *out)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || is_null(n))
    return fail_type(c, n, what, "an integer");
  const unsigned char *s = n->data.scalar.value;
  size_t len = n->data.scalar.length, i = 0;
  int neg = 0;
  if (i < len && s[i] == '-') {
    neg = 1;
    i++;
  }
  if (i == len)
    return fail_type(c, n, what, "a decimal integer");
  for (size_t j = i; j < len; j++)
    if (s[j] < '0' || s[j] > '9')
      return fail_type(c, n, what, "a decimal integer");
  if (s[i] == '0' && len - i > 1) {
    char q[QUOTED_SIZE];
    quote(n, q, sizeof q);
    return fail_node(c, n, "%s: expected a decimal integer without leading zeros, got %s", what, q);
  }
  long long v = 0;
  for (; i < len; i++) {
    v = v * 10 + (s[i] - '0');
    if (v > (long long)INT_MAX + 1)
      break;
  }
  if (neg)
    v = -v;
  if (v > INT_MAX || v < INT_MIN) {
    char q[QUOTED_SIZE];
    quote(n, q, sizeof q);
    return fail_node(c, n, "%s: integer out of range, got %s", what, q);
  }
  *out = (int)v;
  return 0;
}

/* get_int, then a lo..hi range check. */
static int get_int_range(const parse_ctx *c, const yaml_node_t *n, const char *what, int lo, int hi,
                         int *out)
{
  int v;
  if (get_int(c, n, what, &v))
    return -1;
  if (v < lo || v > hi)
    return fail_node(c, n, "%s: must be %d..%d, got %d", what, lo, hi, v);
  *out = v;
  return 0;
}

/* get_int, then a check against a short list of allowed values ("64, 128 or 256"). */
static int get_int_choice(const parse_ctx *c, const yaml_node_t *n, const char *what,
                          const int *allowed, int nallowed, int *out)
{
  int v;
  if (get_int(c, n, what, &v))
    return -1;
  for (int i = 0; i < nallowed; i++) {
    if (allowed[i] == v) {
      *out = v;
      return 0;
    }
  }
  char list[128];
  size_t o = 0;
  for (int i = 0; i < nallowed && o < sizeof list; i++)
    o += (size_t)snprintf(list + o, sizeof list - o, "%s%d",
                          i == 0 ? "" : i == nallowed - 1 ? " or " : ", ", allowed[i]);
  return fail_node(c, n, "%s: expected %s, got %d", what, list, v);
}

static yaml_node_t *node_at(const parse_ctx *c, int index)
{
  return yaml_document_get_node(c->doc, index);
}

static pat_mark mark_of(const yaml_node_t *n)
{
  return (pat_mark){(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};
}

/*
** Checks the key of pair `i` of mapping `map`: a scalar, not given earlier in the mapping, one
** of `keys`. Sets *which to its index in `keys`. `where` prefixes messages ("" at top level,
** "tiles[0]: ", "split: ").
*/
static int map_key(const parse_ctx *c, const yaml_node_t *map, int i, const char *where,
                   const char *const *keys, int nkeys, int *which)
{
  yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
  const yaml_node_t *k = node_at(c, pairs[i].key);
  if (k->type != YAML_SCALAR_NODE) {
    char got[DESC_SIZE];
    describe(k, got, sizeof got);
    return fail_node(c, k, "%sexpected a key name, got %s", where, got);
  }
  char q[QUOTED_SIZE];
  quote(k, q, sizeof q);
  for (int j = 0; j < i; j++) {
    const yaml_node_t *prev = node_at(c, pairs[j].key);
    if (prev->type == YAML_SCALAR_NODE && prev->data.scalar.length == k->data.scalar.length &&
        !memcmp(prev->data.scalar.value, k->data.scalar.value, k->data.scalar.length))
      return fail_node(c, k, "%sduplicate key %s (first given at line %zu, column %zu)", where, q,
                       prev->start_mark.line + 1, prev->start_mark.column + 1);
  }
  for (int j = 0; j < nkeys; j++) {
    if (scalar_is(k, keys[j])) {
      *which = j;
      return 0;
    }
  }
  char list[256];
  size_t o = 0;
  for (int j = 0; j < nkeys && o < sizeof list; j++)
    o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "", keys[j]);
  return fail_node(c, k, "%sunknown key %s (valid keys: %s)", where, q, list);
}

static int mapping_size(const yaml_node_t *map)
{
  return (int)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

static int sequence_size(const yaml_node_t *seq)
{
  return (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

static int parse_name(const parse_ctx *c, const yaml_node_t *n, pat_spec *s)
{
  if (n->type != YAML_SCALAR_NODE || is_null(n))
    return fail_type(c, n, "name", "a name matching [a-z0-9_]+");
  const unsigned char *v = n->data.scalar.value;
  size_t len = n->data.scalar.length;
  int ok = len >= 1 && len < PAT_NAME_MAX;
  for (size_t i = 0; ok && i < len; i++)
    ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '_';
  if (!ok) {
    char q[QUOTED_SIZE];
    quote(n, q, sizeof q);
    return fail_node(c, n, "name: expected [a-z0-9_]+ of at most %d characters, got %s",
                     PAT_NAME_MAX - 1, q);
  }
  memcpy(s->name, v, len);
  s->name[len] = '\0';
  return 0;
}

static int parse_dtype(const parse_ctx *c, const yaml_node_t *n, pat_spec *s)
{
  if (scalar_is(n, "fp16"))
    s->dtype = PAT_FP16;
  else if (scalar_is(n, "bf16"))
    s->dtype = PAT_BF16;
  else
    return fail_type(c, n, "dtype", "fp16 or bf16");
  return 0;
}

/* gqa: one integer, or a sequence of strictly increasing integers in 1..16. */
static int parse_gqa(const parse_ctx *c, const yaml_node_t *n, pat_spec *s)
{
  if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
    if (get_int_range(c, n, "gqa", 1, 16, &s->gqa[0]))
      return -1;
    s->num_gqa = 1;
    return 0;
  }
  if (n->type != YAML_SEQUENCE_NODE)
    return fail_type(c, n, "gqa", "an integer or a sequence of integers");
  int count = sequence_size(n);
  if (count == 0)
    return fail_node(c, n, "gqa: must list at least one ratio");
  s->num_gqa = 0;
  for (int i = 0; i < count; i++) {
    const yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
    char what[32];
    snprintf(what, sizeof what, "gqa[%d]", i);
    if (i >= PAT_MAX_GQA)
      return fail_node(c, item, "gqa: at most %d ratios", PAT_MAX_GQA);
    int v = 0;
    if (get_int_range(c, item, what, 1, 16, &v))
      return -1;
    for (int j = 0; j < i; j++)
      if (s->gqa[j] == v)
        return fail_node(c, item, "%s: duplicate ratio %d (also gqa[%d])", what, v, j);
    if (i > 0 && v < s->gqa[i - 1])
      return fail_node(c, item, "%s: ratios must be strictly increasing, got %d after %d", what, v,
                       s->gqa[i - 1]);
    s->gqa[s->num_gqa++] = v;
  }
  return 0;
}

/* One tile mapping; warp_rows defaults to 16, warps to m/warp_rows, stages to 2, wgmma to 0. */
static int parse_tile(const parse_ctx *c, const yaml_node_t *n, int index, pat_tile *t)
{
  char where[32];
  snprintf(where, sizeof where, "tiles[%d]: ", index);
  if (n->type != YAML_MAPPING_NODE) {
    char got[DESC_SIZE];
    describe(n, got, sizeof got);
    return fail_node(c, n, "tiles[%d]: expected a mapping with keys m, n, warps, stages, warp_rows, "
                     "wgmma, got %s", index, got);
  }
  int have[6] = {0, 0, 0, 0, 0, 0};
  int *fields[6] = {&t->m, &t->n, &t->warps, &t->stages, &t->warp_rows, &t->wgmma};
  for (int i = 0; i < mapping_size(n); i++) {
    int which = 0;
    if (map_key(c, n, i, where, tile_keys, NKEYS(tile_keys), &which))
      return -1;
    char what[48];
    snprintf(what, sizeof what, "tiles[%d]: %s", index, tile_keys[which]);
    if (get_int(c, node_at(c, n->data.mapping.pairs.start[i].value), what, fields[which]))
      return -1;
    have[which] = 1;
  }
  for (int i = 0; i < 2; i++)
    if (!have[i])
      return fail_node(c, n, "tiles[%d]: missing required key '%s'", index, tile_keys[i]);
  if (!have[4])
    t->warp_rows = 16;
  if (!have[5])
    t->wgmma = 0;
  if (!have[2])
    t->warps = t->warp_rows > 0 ? t->m / t->warp_rows : 0;  /* 0: pat_tile_check explains */
  if (!have[3])
    t->stages = 2;
  t->mark = mark_of(n);
  return 0;
}

static int parse_tiles(const parse_ctx *c, const yaml_node_t *n, pat_spec *s)
{
  if (n->type != YAML_SEQUENCE_NODE)
    return fail_type(c, n, "tiles", "a sequence of tile mappings");
  int count = sequence_size(n);
  if (count == 0)
    return fail_node(c, n, "tiles: must list at least one tile");
  for (int i = 0; i < count; i++) {
    const yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
    if (i >= PAT_MAX_TILES)
      return fail_node(c, item, "tiles[%d]: too many tiles (at most %d)", i, PAT_MAX_TILES);
    if (parse_tile(c, item, i, &s->tiles[i]))
      return -1;
  }
  s->num_tiles = count;
  return 0;
}

static int parse_split(const parse_ctx *c, const yaml_node_t *n, pat_spec *s)
{
  if (n->type != YAML_MAPPING_NODE)
    return fail_type(c, n, "split", "a mapping");
  static const int lo[] = {16, 1, 1, 8, 0}, hi[] = {1048576, 1024, 64, 4096, 1};
  int *fields[5] = {&s->split.min_kv_per_split, &s->split.max_splits, &s->split.ctas_per_sm,
                    &s->split.mma_rows_per_token, &s->split.masked_packs};
  for (int i = 0; i < mapping_size(n); i++) {
    int which = 0;
    if (map_key(c, n, i, "split: ", split_keys, NKEYS(split_keys), &which))
      return -1;
    char what[48];
    snprintf(what, sizeof what, "split: %s", split_keys[which]);
    if (get_int_range(c, node_at(c, n->data.mapping.pairs.start[i].value), what, lo[which],
                      hi[which], fields[which]))
      return -1;
  }
  return 0;
}

/* One arch name, "sm_80" etc., to 80. */
static int parse_arch(const parse_ctx *c, const yaml_node_t *n, const char *what, int *out)
{
  for (int i = 0; i < NKEYS(valid_archs); i++) {
    char name[16];
    snprintf(name, sizeof name, "sm_%d", valid_archs[i]);
    if (scalar_is(n, name)) {
      *out = valid_archs[i];
      return 0;
    }
  }
  return fail_type(c, n, what, "sm_80, sm_86, sm_89 or sm_90");
}

/* archs: a sequence of distinct arch names (a single name is accepted too). */
static int parse_archs(const parse_ctx *c, const yaml_node_t *n, pat_spec *s)
{
  if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
    if (parse_arch(c, n, "archs", &s->archs[0]))
      return -1;
    s->num_archs = 1;
    return 0;
  }
  if (n->type != YAML_SEQUENCE_NODE)
    return fail_type(c, n, "archs", "a sequence of archs");
  int count = sequence_size(n);
  if (count == 0)
    return fail_node(c, n, "archs: must list at least one arch");
  s->num_archs = 0;
  for (int i = 0; i < count; i++) {
    const yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
    char what[32];
    snprintf(what, sizeof what, "archs[%d]", i);
    int v = 0;
    if (parse_arch(c, item, what, &v))
      return -1;
    for (int j = 0; j < i; j++)
      if (s->archs[j] == v)
        return fail_node(c, item, "%s: duplicate arch sm_%d (also archs[%d])", what, v, j);
    if (i >= PAT_MAX_ARCHS)
      return fail_node(c, item, "archs: at most %d archs", PAT_MAX_ARCHS);
    s->archs[s->num_archs++] = v;
  }
  return 0;
}

/* Checks every tile against the finished spec, in order; a default tile is reported at `root`. */
static int check_tiles(const parse_ctx *c, const pat_spec *s, const yaml_node_t *root)
{
  for (int i = 0; i < s->num_tiles; i++) {
    const pat_tile *t = &s->tiles[i];
    char msg[400];
    size_t line = (size_t)t->mark.line, column = (size_t)t->mark.column;
    const char *tag = "", *note = "";
    if (line == 0) {
      line = root->start_mark.line + 1;
      column = root->start_mark.column + 1;
      tag = " (default)";
      note = "; give this spec a 'tiles' list";
    }
    if (pat_tile_check(s, t, msg, sizeof msg))
      return fail_at(c, line, column, "tiles[%d]%s: %s%s", i, tag, msg, note);
    for (int j = 0; j < i; j++) {
      const pat_tile *u = &s->tiles[j];
      if (pat_tile_same(u, t))
        return fail_at(c, line, column,
                       "tiles[%d]: duplicate of tiles[%d] (m=%d n=%d warps=%d stages=%d warp_rows=%d wgmma=%d)",
                       i, j, t->m, t->n, t->warps, t->stages, pat_tile_warp_rows(t), t->wgmma);
    }
  }
  return 0;
}

/* The document's root node in *root when it is a mapping; else -1 with a message. */
static int root_mapping(const parse_ctx *c, const yaml_node_t **root)
{
  *root = yaml_document_get_root_node(c->doc);
  if (!*root)
    return fail_at(c, 1, 1, "expected a mapping at the top level, got an empty document");
  if ((*root)->type != YAML_MAPPING_NODE)
    return fail_type(c, *root, "top level", "a mapping");
  return 0;
}

/* Reads the root mapping of a loaded document into *s (which holds the defaults). */
static int parse_root(const parse_ctx *c, pat_spec *s)
{
  const yaml_node_t *root;
  if (root_mapping(c, &root))
    return -1;
  int have_name = 0;
  for (int i = 0; i < mapping_size(root); i++) {
    int which = 0;
    if (map_key(c, root, i, "", top_keys, NKEYS(top_keys), &which))
      return -1;
    const yaml_node_t *v = node_at(c, root->data.mapping.pairs.start[i].value);
    pat_mark m = mark_of(v);
    int rc = 0;
    switch (which) {
    case 0:
      rc = parse_name(c, v, s);
      s->name_mark = m;
      have_name = 1;
      break;
    case 1:
      rc = parse_dtype(c, v, s);
      s->dtype_mark = m;
      break;
    case 2: {
      static const int allowed[] = {64, 128, 256};
      rc = get_int_choice(c, v, "head_dim", allowed, NKEYS(allowed), &s->head_dim);
      s->head_dim_mark = m;
      break;
    }
    case 3: {
      static const int allowed[] = {8, 16, 32, 64, 128};
      rc = get_int_choice(c, v, "page_size", allowed, NKEYS(allowed), &s->page_size);
      s->page_size_mark = m;
      break;
    }
    case 4:
      rc = parse_gqa(c, v, s);
      s->gqa_mark = m;
      break;
    case 5:
      rc = parse_tiles(c, v, s);
      s->tiles_mark = m;
      break;
    case 6:
      rc = parse_split(c, v, s);
      s->split_mark = m;
      break;
    default:
      rc = parse_archs(c, v, s);
      s->archs_mark = m;
      break;
    }
    if (rc)
      return -1;
  }
  if (!have_name)
    return fail_node(c, root, "missing required key 'name'");
  return check_tiles(c, s, root);
}

/* Reports a libyaml error (reader, scanner, parser or composer) with libyaml's own text. */
static int fail_yaml(const parse_ctx *c, const yaml_parser_t *p)
{
  const char *problem = p->problem ? p->problem : "cannot parse the YAML document";
  if (p->error == YAML_MEMORY_ERROR)
    return fail_at(c, 1, 1, "out of memory while parsing");
  if (p->error == YAML_READER_ERROR) {
    /* reader errors carry a byte offset, not a mark */
    size_t line = 1, column = 1;
    for (size_t i = 0; i < p->problem_offset && i < c->len; i++) {
      if (c->text[i] == '\n') {
        line++;
        column = 1;
      } else if ((c->text[i] & 0xC0) != 0x80) {
        column++;
      }
    }
    if (p->problem_value >= 0)
      return fail_at(c, line, column, "%s (byte 0x%02X)", problem, (unsigned)p->problem_value);
    return fail_at(c, line, column, "%s", problem);
  }
  if (p->context)
    return fail_mark(c, p->problem_mark, "%s (%s at line %zu, column %zu)", problem, p->context,
                     p->context_mark.line + 1, p->context_mark.column + 1);
  return fail_mark(c, p->problem_mark, "%s", problem);
}

/* Parses one YAML document held in memory: `root` fills tmp (size bytes), which is copied to
** out only when the whole stream is good (one document, nothing after it). */
typedef int (*root_fn)(const parse_ctx *c, void *tmp);

static int parse_text(const char *text, size_t len, const char *filename, root_fn root, void *tmp,
                      void *out, size_t size, char *err, size_t errlen)
{
  if (err && errlen)
    err[0] = '\0';
  parse_ctx c = {.file = filename ? filename : "<string>", .text = (const unsigned char *)text,
                 .len = text ? len : 0, .err = err, .errlen = errlen};
  if (!out)
    return fail_at(&c, 1, 1, "no output given");

  yaml_parser_t parser;
  yaml_document_t doc, extra;
  if (!yaml_parser_initialize(&parser))
    return fail_at(&c, 1, 1, "out of memory while parsing");
  yaml_parser_set_input_string(&parser, c.len ? c.text : (const unsigned char *)"", c.len);
  if (!yaml_parser_load(&parser, &doc)) {
    fail_yaml(&c, &parser);
    yaml_parser_delete(&parser);
    return -1;
  }
  c.doc = &doc;
  int rc = root(&c, tmp);

  /* The rest of the stream must be empty: no second document, no syntax error after the first. */
  if (rc == 0) {
    if (!yaml_parser_load(&parser, &extra)) {
      rc = fail_yaml(&c, &parser);
    } else {
      const yaml_node_t *r = yaml_document_get_root_node(&extra);
      if (r)
        rc = fail_node(&c, r, "expected a single YAML document, found a second one");
      yaml_document_delete(&extra);
    }
  }
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  if (rc == 0)
    memcpy(out, tmp, size);  /* never half-applied */
  return rc;
}

static int spec_root(const parse_ctx *c, void *tmp)
{
  pat_spec *s = tmp;
  pat_spec_defaults(s);
  copy_str(s->path, sizeof s->path, c->file);
  return parse_root(c, s);
}

int pat_spec_parse(const char *text, size_t len, const char *filename, pat_spec *spec,
                   char *err, size_t errlen)
{
  pat_spec tmp;
  return parse_text(text, len, filename, spec_root, &tmp, spec, sizeof tmp, err, errlen);
}

/* Reads a whole file of at most SPEC_FILE_MAX bytes; *text is malloc'd and NUL-terminated. */
static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
  *text = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    char buf[128];
    const char *why = strerror_r(errno, buf, sizeof buf);
    if (err && errlen)
      snprintf(err, errlen, "%s: error: cannot open: %s", path, why);
    return -1;
  }
  char *t = malloc(SPEC_FILE_MAX + 2);
  size_t n = t ? fread(t, 1, SPEC_FILE_MAX + 1, f) : 0;
  int rc = -1;
  if (!t) {
    if (err && errlen) snprintf(err, errlen, "%s: error: out of memory", path);
  } else if (ferror(f)) {
    if (err && errlen) snprintf(err, errlen, "%s: error: cannot read", path);
  } else if (n > SPEC_FILE_MAX) {
    if (err && errlen) snprintf(err, errlen, "%s: error: file is larger than %d bytes", path, SPEC_FILE_MAX);
  } else {
    t[n] = '\0';
    *text = t;
    *len = n;
    rc = 0;
  }
  if (rc) free(t);
  fclose(f);
  return rc;
}

/* Reads the file at path and parses it as parse_text does. */
static int load_text(const char *path, root_fn root, void *tmp, void *out, size_t size, char *err,
                     size_t errlen)
{
  if (err && errlen)
    err[0] = '\0';
  char *text;
  size_t len;
  if (read_file(path, &text, &len, err, errlen))
    return -1;
  int rc = parse_text(text, len, path, root, tmp, out, size, err, errlen);
  free(text);
  return rc;
}

int pat_spec_load(const char *path, pat_spec *spec, char *err, size_t errlen)
{
  pat_spec tmp;
  return load_text(path, spec_root, &tmp, spec, sizeof tmp, err, errlen);
}

/* ---- tuning tables ---- */

static int parse_choice(const parse_ctx *c, const yaml_node_t *n, int index, pat_tuning_choice *ch)
{
  char where[32];
  snprintf(where, sizeof where, "choices[%d]: ", index);
  if (n->type != YAML_MAPPING_NODE)
    return fail_type(c, n, "choices[]",
                     "a mapping with keys gqa, rows, tokens, m, n, warps, stages (and warp_rows, wgmma, masked)");
  int have[10] = {0};
  int *fields[10] = {&ch->gqa, &ch->rows, &ch->tokens, &ch->tile.m, &ch->tile.n, &ch->tile.warps,
                     &ch->tile.stages, &ch->tile.warp_rows, &ch->tile.wgmma, &ch->masked};
  for (int i = 0; i < mapping_size(n); i++) {
    int which = 0;
    if (map_key(c, n, i, where, choice_keys, NKEYS(choice_keys), &which))
      return -1;
    char what[48];
    snprintf(what, sizeof what, "choices[%d]: %s", index, choice_keys[which]);
    const int lo = which >= 8 ? 0 : 1, hi = which >= 8 ? 1 : 65536;  /* wgmma, masked: 0 or 1 */
    if (get_int_range(c, node_at(c, n->data.mapping.pairs.start[i].value), what, lo, hi, fields[which]))
      return -1;
    have[which] = 1;
  }
  for (int i = 0; i < 7; i++)  /* all but warp_rows (default 16) and wgmma (default 0) */
    if (!have[i])
      return fail_node(c, n, "choices[%d]: missing required key '%s'", index, choice_keys[i]);
  if (!have[7])
    ch->tile.warp_rows = 16;
  if (!have[8])
    ch->tile.wgmma = 0;
  if (!have[9])
    ch->masked = 0;
  if (ch->masked && ch->tile.wgmma)
    return fail_node(c, n, "choices[%d]: a masked pack takes an mma.sync tile, not a wgmma one", index);
  if (ch->rows != 16 && ch->rows != 32 && ch->rows != 64 && ch->rows != 128 && ch->rows != 256)
    return fail_node(c, n, "choices[%d]: rows must be 16, 32, 64, 128 or 256, got %d", index, ch->rows);
  if (ch->tokens != 64 && ch->tokens != 256 && ch->tokens != 1024 && ch->tokens != 65536)
    return fail_node(c, n, "choices[%d]: tokens must be 64, 256, 1024 or 65536 (longer), got %d", index,
                     ch->tokens);
  if (ch->tile.m < ch->rows)
    return fail_node(c, n, "choices[%d]: a tile of m %d cannot hold %d rows", index, ch->tile.m, ch->rows);
  ch->tile.mark = mark_of(n);
  return 0;
}

static int tuning_root(const parse_ctx *c, void *tmp)
{
  pat_tuning *t = tmp;
  memset(t, 0, sizeof *t);
  copy_str(t->path, sizeof t->path, c->file);
  const yaml_node_t *root;
  if (root_mapping(c, &root))
    return -1;
  int have_spec = 0;
  for (int i = 0; i < mapping_size(root); i++) {
    int which = 0;
    if (map_key(c, root, i, "", tuning_keys, NKEYS(tuning_keys), &which))
      return -1;
    const yaml_node_t *v = node_at(c, root->data.mapping.pairs.start[i].value);
    if (which == 0) {
      pat_spec named;
      if (parse_name(c, v, &named))
        return -1;
      copy_str(t->spec, sizeof t->spec, named.name);
      have_spec = 1;
    } else if (which == 1) {
      if (v->type != YAML_SCALAR_NODE || is_null(v) || v->data.scalar.length >= sizeof t->gpu)
        return fail_type(c, v, "gpu", "the device name (a string)");
      memcpy(t->gpu, v->data.scalar.value, v->data.scalar.length);
      t->gpu[v->data.scalar.length] = '\0';
    } else if (which == 2) {
      pat_spec sp;
      pat_spec_defaults(&sp);
      if (parse_split(c, v, &sp))
        return -1;
      t->split = sp.split;
      t->has_split = 1;
    } else {
      if (v->type != YAML_SEQUENCE_NODE)
        return fail_type(c, v, "choices", "a sequence of choice mappings");
      int count = sequence_size(v);
      for (int k = 0; k < count; k++) {
        const yaml_node_t *item = node_at(c, v->data.sequence.items.start[k]);
        if (k >= (int)NKEYS(t->choices))
          return fail_node(c, item, "choices[%d]: too many choices (at most %d)", k, (int)NKEYS(t->choices));
        if (parse_choice(c, item, k, &t->choices[k]))
          return -1;
        for (int j = 0; j < k; j++)
          if (t->choices[j].gqa == t->choices[k].gqa && t->choices[j].rows == t->choices[k].rows &&
              t->choices[j].tokens == t->choices[k].tokens && t->choices[j].masked == t->choices[k].masked)
            return fail_node(c, item, "choices[%d]: gqa %d, rows %d, tokens %d%s already chosen at choices[%d]", k,
                             t->choices[k].gqa, t->choices[k].rows, t->choices[k].tokens,
                             t->choices[k].masked ? " (masked)" : "", j);
      }
      t->num_choices = count;
    }
  }
  if (!have_spec)
    return fail_node(c, root, "missing required key 'spec'");
  return 0;
}

int pat_tuning_parse(const char *text, size_t len, const char *filename, pat_tuning *t, char *err,
                     size_t errlen)
{
  pat_tuning tmp;
  return parse_text(text, len, filename, tuning_root, &tmp, t, sizeof tmp, err, errlen);
}

int pat_tuning_load(const char *path, pat_tuning *t, char *err, size_t errlen)
{
  pat_tuning tmp;
  return load_text(path, tuning_root, &tmp, t, sizeof tmp, err, errlen);
}
