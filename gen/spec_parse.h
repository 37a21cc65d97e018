/* spec_parse.h: the parts of the spec reader (spec.c) that the tuning-table reader
** (tuning_read.c) reuses, so that a table's spec name and split policy are checked, and
** refused, with the spec's own messages. Internal to gen/. */
#ifndef PAT_SPEC_PARSE_H
#define PAT_SPEC_PARSE_H

#include "spec.h"
#include "yaml_doc.h"

/* name: [a-z0-9_]+, shorter than PAT_NAME_MAX, into s->name. */
int spec_parse_name(const yd_ctx *c, const yaml_node_t *n, pat_spec *s);

/* split: a mapping of split-policy fields, each range-checked, into s->split; fields it does
** not give keep their values in *s. */
int spec_parse_split(const yd_ctx *c, const yaml_node_t *n, pat_spec *s);

#endif
