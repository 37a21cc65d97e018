/* yaml_doc.h: reading a YAML document through libyaml's document API, with messages that
** point into the file: "FILE:LINE:COLUMN: error: MESSAGE". Internal to gen/: the spec reader
** (spec.c) and the tuning-table reader (tuning_read.c) share it, so both speak alike. */
#ifndef PAT_YAML_DOC_H
#define PAT_YAML_DOC_H

#include <stddef.h>
#include <yaml.h>

#include "spec.h"

#define YD_QUOTE_MAX   48                       /* characters of a scalar quoted in a message */
#define YD_QUOTED_SIZE (YD_QUOTE_MAX * 4 + 16)  /* buffer for yd_quote(): every byte may take 4 */
#define YD_DESC_SIZE   (YD_QUOTED_SIZE + 32)    /* buffer for yd_describe() */

#define YD_NKEYS(a) ((int)(sizeof(a) / sizeof((a)[0])))

#if defined(__GNUC__)
#define YD_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define YD_PRINTF_LIKE(f, a)
#endif

/* One document being read. No global state: each parse has its own. */
typedef struct yd_ctx {
  const char *file;          /* name used in messages */
  const unsigned char *text; /* the input, for marks of reader errors */
  size_t len;
  yaml_document_t *doc;
  char *err;                 /* caller's message buffer, may be NULL */
  size_t errlen;
} yd_ctx;

/* Copies a NUL-terminated string into a fixed buffer, truncating. */
void yd_copy_str(char *dst, size_t n, const char *src);

/* Writes "FILE:LINE:COLUMN: error: MESSAGE" (1-based position) into the caller's buffer.
** Always returns -1 so that callers can `return yd_fail_at(...)`. */
int yd_fail_at(const yd_ctx *c, size_t line, size_t column, const char *fmt, ...)
    YD_PRINTF_LIKE(4, 5);

/* As yd_fail_at, at a libyaml mark (0-based). */
#define yd_fail_mark(c, mk, ...) yd_fail_at((c), (mk).line + 1, (mk).column + 1, __VA_ARGS__)
/* As yd_fail_at, at the start of a node. */
#define yd_fail_node(c, node, ...) yd_fail_mark((c), (node)->start_mark, __VA_ARGS__)

/* Quotes a scalar for a message: 'text', control bytes as \xNN, long values cut with "...". */
void yd_quote(const yaml_node_t *n, char *buf, size_t size);

/* A plain scalar that YAML reads as null: empty, "~" or "null". */
int yd_is_null(const yaml_node_t *n);

/* Describes what a node is, for "expected X, got Y" messages. */
void yd_describe(const yaml_node_t *n, char *buf, size_t size);

/* "WHAT: expected EXPECTED, got <description of n>" at n. */
int yd_fail_type(const yd_ctx *c, const yaml_node_t *n, const char *what, const char *expected);

int yd_scalar_is(const yaml_node_t *n, const char *s);

/* Reads a decimal integer (optional '-', digits, no leading zeros) that fits an int. */
int yd_get_int(const yd_ctx *c, const yaml_node_t *n, const char *what, int *out);

/* yd_get_int, then a lo..hi range check. */
int yd_get_int_range(const yd_ctx *c, const yaml_node_t *n, const char *what, int lo, int hi,
                     int *out);

/* yd_get_int, then a check against a short list of allowed values ("64, 128 or 256"). */
int yd_get_int_choice(const yd_ctx *c, const yaml_node_t *n, const char *what,
                      const int *allowed, int nallowed, int *out);

static inline yaml_node_t *yd_node_at(const yd_ctx *c, int index)
{
  return yaml_document_get_node(c->doc, index);
}

static inline pat_mark yd_mark_of(const yaml_node_t *n)
{
  return (pat_mark){(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};
}

static inline int yd_mapping_size(const yaml_node_t *map)
{
  return (int)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

static inline int yd_sequence_size(const yaml_node_t *seq)
{
  return (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

/*
** Checks the key of pair `i` of mapping `map`: a scalar, not given earlier in the mapping, one
** of `keys`. Sets *which to its index in `keys`. `where` prefixes messages ("" at top level,
** "tiles[0]: ", "split: ").
*/
int yd_map_key(const yd_ctx *c, const yaml_node_t *map, int i, const char *where,
               const char *const *keys, int nkeys, int *which);

/* The document's root node in *root when it is a mapping; else -1 with a message. */
int yd_root_mapping(const yd_ctx *c, const yaml_node_t **root);

/* Reads the loaded document into tmp; 0, or -1 with a message. */
typedef int (*yd_root_fn)(const yd_ctx *c, void *tmp);

/* Parses one YAML document held in memory: `root` fills tmp (size bytes), which is copied to
** out only when the whole stream is good (one document, nothing after it). */
int yd_parse_text(const char *text, size_t len, const char *filename, yd_root_fn root, void *tmp,
                  void *out, size_t size, char *err, size_t errlen);

/* Reads the file at path (1 MiB at most) and parses it as yd_parse_text does. */
int yd_load_text(const char *path, yd_root_fn root, void *tmp, void *out, size_t size, char *err,
                 size_t errlen);

#endif
