/* yaml_doc.c: libyaml documents read with messages that point into the file (yaml_doc.h).
** Every error reads "FILE:LINE:COLUMN: error: MESSAGE"; the caller's struct is written only on
** success. No global state: safe to call from several threads at once. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "yaml_doc.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOC_FILE_MAX (1 << 20)   /* larger files are refused by yd_load_text */

void yd_copy_str(char *dst, size_t n, const char *src)
{
  size_t i = 0;
  for (; src[i] && i + 1 < n; i++)
    dst[i] = src[i];
  dst[i] = '\0';
}

int yd_fail_at(const yd_ctx *c, size_t line, size_t column, const char *fmt, ...)
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

void yd_quote(const yaml_node_t *n, char *buf, size_t size)
{
  const unsigned char *s = n->data.scalar.value;
  size_t len = n->data.scalar.length, o = 0;
  buf[o++] = '\'';
  for (size_t i = 0; i < len; i++) {
    if (o + 8 >= size || i >= YD_QUOTE_MAX) {
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

int yd_is_null(const yaml_node_t *n)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return 0;
  const char *v = (const char *)n->data.scalar.value;
  return !strcmp(v, "") || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
         !strcmp(v, "NULL");
}

void yd_describe(const yaml_node_t *n, char *buf, size_t size)
{
  if (n->type == YAML_SEQUENCE_NODE) {
    yd_copy_str(buf, size, "a sequence");
  } else if (n->type == YAML_MAPPING_NODE) {
    yd_copy_str(buf, size, "a mapping");
  } else if (yd_is_null(n)) {
    yd_copy_str(buf, size, "an empty value");
  } else if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
    char q[YD_QUOTED_SIZE];
    yd_quote(n, q, sizeof q);
    snprintf(buf, size, "the quoted string %s", q);
  } else {
    yd_quote(n, buf, size);
  }
}

int yd_fail_type(const yd_ctx *c, const yaml_node_t *n, const char *what, const char *expected)
{
  char got[YD_DESC_SIZE];
  yd_describe(n, got, sizeof got);
  return yd_fail_node(c, n, "%s: expected %s, got %s", what, expected, got);
}

int yd_scalar_is(const yaml_node_t *n, const char *s)
{
  size_t len = strlen(s);
  return n->type == YAML_SCALAR_NODE && n->data.scalar.length == len &&
         !memcmp(n->data.scalar.value, s, len);
}

int yd_get_int(const yd_ctx *c, const yaml_node_t *n, const char *what, int *out)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
      yd_is_null(n))
    return yd_fail_type(c, n, what, "an integer");
  const unsigned char *s = n->data.scalar.value;
  size_t len = n->data.scalar.length, i = 0;
  int neg = 0;
  if (i < len && s[i] == '-') {
    neg = 1;
    i++;
  }
  if (i == len)
    return yd_fail_type(c, n, what, "a decimal integer");
  for (size_t j = i; j < len; j++)
    if (s[j] < '0' || s[j] > '9')
      return yd_fail_type(c, n, what, "a decimal integer");
  if (s[i] == '0' && len - i > 1) {
    char q[YD_QUOTED_SIZE];
    yd_quote(n, q, sizeof q);
    return yd_fail_node(c, n, "%s: expected a decimal integer without leading zeros, got %s", what,
                        q);
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
    char q[YD_QUOTED_SIZE];
    yd_quote(n, q, sizeof q);
    return yd_fail_node(c, n, "%s: integer out of range, got %s", what, q);
  }
  *out = (int)v;
  return 0;
}

int yd_get_int_range(const yd_ctx *c, const yaml_node_t *n, const char *what, int lo, int hi,
                     int *out)
{
  int v;
  if (yd_get_int(c, n, what, &v))
    return -1;
  if (v < lo || v > hi)
    return yd_fail_node(c, n, "%s: must be %d..%d, got %d", what, lo, hi, v);
  *out = v;
  return 0;
}

int yd_get_int_choice(const yd_ctx *c, const yaml_node_t *n, const char *what,
                      const int *allowed, int nallowed, int *out)
{
  int v;
  if (yd_get_int(c, n, what, &v))
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
  return yd_fail_node(c, n, "%s: expected %s, got %d", what, list, v);
}

int yd_map_key(const yd_ctx *c, const yaml_node_t *map, int i, const char *where,
               const char *const *keys, int nkeys, int *which)
{
  yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
  const yaml_node_t *k = yd_node_at(c, pairs[i].key);
  if (k->type != YAML_SCALAR_NODE) {
    char got[YD_DESC_SIZE];
    yd_describe(k, got, sizeof got);
    return yd_fail_node(c, k, "%sexpected a key name, got %s", where, got);
  }
  char q[YD_QUOTED_SIZE];
  yd_quote(k, q, sizeof q);
  for (int j = 0; j < i; j++) {
    const yaml_node_t *prev = yd_node_at(c, pairs[j].key);
    if (prev->type == YAML_SCALAR_NODE && prev->data.scalar.length == k->data.scalar.length &&
        !memcmp(prev->data.scalar.value, k->data.scalar.value, k->data.scalar.length))
      return yd_fail_node(c, k, "%sduplicate key %s (first given at line %zu, column %zu)", where,
                          q, prev->start_mark.line + 1, prev->start_mark.column + 1);
  }
  for (int j = 0; j < nkeys; j++) {
    if (yd_scalar_is(k, keys[j])) {
      *which = j;
      return 0;
    }
  }
  char list[256];
  size_t o = 0;
  for (int j = 0; j < nkeys && o < sizeof list; j++)
    o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "", keys[j]);
  return yd_fail_node(c, k, "%sunknown key %s (valid keys: %s)", where, q, list);
}

int yd_root_mapping(const yd_ctx *c, const yaml_node_t **root)
{
  *root = yaml_document_get_root_node(c->doc);
  if (!*root)
    return yd_fail_at(c, 1, 1, "expected a mapping at the top level, got an empty document");
  if ((*root)->type != YAML_MAPPING_NODE)
    return yd_fail_type(c, *root, "top level", "a mapping");
  return 0;
}

/* Reports a libyaml error (reader, scanner, parser or composer) with libyaml's own text. */
static int fail_yaml(const yd_ctx *c, const yaml_parser_t *p)
{
  const char *problem = p->problem ? p->problem : "cannot parse the YAML document";
  if (p->error == YAML_MEMORY_ERROR)
    return yd_fail_at(c, 1, 1, "out of memory while parsing");
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
      return yd_fail_at(c, line, column, "%s (byte 0x%02X)", problem, (unsigned)p->problem_value);
    return yd_fail_at(c, line, column, "%s", problem);
  }
  if (p->context)
    return yd_fail_mark(c, p->problem_mark, "%s (%s at line %zu, column %zu)", problem, p->context,
                        p->context_mark.line + 1, p->context_mark.column + 1);
  return yd_fail_mark(c, p->problem_mark, "%s", problem);
}

int yd_parse_text(const char *text, size_t len, const char *filename, yd_root_fn root, void *tmp,
                  void *out, size_t size, char *err, size_t errlen)
{
  if (err && errlen)
    err[0] = '\0';
  yd_ctx c = {.file = filename ? filename : "<string>", .text = (const unsigned char *)text,
              .len = text ? len : 0, .err = err, .errlen = errlen};
  if (!out)
    return yd_fail_at(&c, 1, 1, "no output given");

  yaml_parser_t parser;
  yaml_document_t doc, extra;
  if (!yaml_parser_initialize(&parser))
    return yd_fail_at(&c, 1, 1, "out of memory while parsing");
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
        rc = yd_fail_node(&c, r, "expected a single YAML document, found a second one");
      yaml_document_delete(&extra);
    }
  }
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  if (rc == 0)
    memcpy(out, tmp, size);  /* never half-applied */
  return rc;
}

/* Reads a whole file of at most DOC_FILE_MAX bytes; *text is malloc'd and NUL-terminated. */
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
  char *t = malloc(DOC_FILE_MAX + 2);
  size_t n = t ? fread(t, 1, DOC_FILE_MAX + 1, f) : 0;
  int rc = -1;
  if (!t) {
    if (err && errlen) snprintf(err, errlen, "%s: error: out of memory", path);
  } else if (ferror(f)) {
    if (err && errlen) snprintf(err, errlen, "%s: error: cannot read", path);
  } else if (n > DOC_FILE_MAX) {
    if (err && errlen) snprintf(err, errlen, "%s: error: file is larger than %d bytes", path, DOC_FILE_MAX);
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

int yd_load_text(const char *path, yd_root_fn root, void *tmp, void *out, size_t size, char *err,
                 size_t errlen)
{
  if (err && errlen)
    err[0] = '\0';
  char *text;
  size_t len;
  if (read_file(path, &text, &len, err, errlen))
    return -1;
  int rc = yd_parse_text(text, len, path, root, tmp, out, size, err, errlen);
  free(text);
  return rc;
}
