/* spec.h: a validated kernel spec, parsed from YAML (specs/README.md documents every field).
** A spec is plain data: it owns no heap memory and may be copied by value. */
#ifndef PAT_SPEC_H
#define PAT_SPEC_H

#include <stddef.h>

#define PAT_MAX_TILES 16
#define PAT_ROW_CLASSES 5    /* tuned tile choices by pack rows: <= 16, 32, 64, 128, 256 */
#define PAT_TOKEN_CLASSES 4  /* .. and by a CTA's KV tokens: <= 64, 256, 1024, longer */
#define PAT_MAX_GQA   16   /* distinct GQA ratios a spec may build */
#define PAT_MAX_ARCHS 4
#define PAT_NAME_MAX  64
#define PAT_PATH_MAX  512

typedef enum pat_dtype { PAT_FP16 = 0, PAT_BF16 = 1 } pat_dtype;

/* A 1-based position in the spec file; line 0 means "not given in the file" (a default). */
typedef struct pat_mark {
  int line;
  int column;
} pat_mark;

typedef struct pat_tile {
  int m;          /* query rows per CTA (pack queries x GQA ratio), multiple of 16 */
  int n;          /* KV tokens per pipeline step */
  int warps;      /* warps per CTA: M/warp_rows along the rows times a split of N along the tokens */
  int stages;     /* cp.async pipeline depth (K and V tiles in flight), >= 2 */
  int warp_rows;  /* query rows per warp: 16, or 32 (each K/V fragment feeds two mma row
                  ** blocks); 0 means 16 */
  int wgmma;      /* 1: warpgroup mma (sm_90a only; 64 or 128 rows, head_dim 128), 0: mma.sync */
  pat_mark mark;  /* where the tile's mapping starts */
} pat_tile;

typedef struct pat_split_policy {
  int min_kv_per_split;  /* tokens: a split is never shorter than this */
  int max_splits;        /* per query */
  int ctas_per_sm;       /* split further until the grid has this many CTAs per SM */
  int mma_rows_per_token; /* planner cost: query rows of tensor-core work that cost as much as
                          ** reading one KV token (docs/scheduler.md) */
  int masked_packs;      /* 1: the planner may hold a whole subtree in one masked pack; 0: never */
} pat_split_policy;

typedef struct pat_spec {
  char name[PAT_NAME_MAX];  /* [a-z0-9_]+, used in kernel names */
  char path[PAT_PATH_MAX];  /* the file it came from, for messages ("<string>" if none) */
  pat_dtype dtype;          /* q, k, v and out */
  int head_dim;             /* 64, 128 or 256 */
  int page_size;            /* tokens per KV page: 8, 16, 32, 64 or 128 */
  int num_gqa;
  int gqa[PAT_MAX_GQA];     /* q heads per kv head, 1..16, strictly increasing */
  int num_tiles;
  pat_tile tiles[PAT_MAX_TILES];
  pat_split_policy split;
  int num_archs;
  int archs[PAT_MAX_ARCHS]; /* compute capability x 10: 80, 86, 89, 90 */
  /* Set by a tuning table (gen/tuning.h), zero in a parsed spec: tile_choice[g][r][t] = k + 1
  ** picks tiles[k] for packs of GQA gqa[g] whose rows fall in row class r and whose KV chunk
  ** in token class t; 0 leaves the choice to the cost model, which looks at the first
  ** num_model_tiles tiles only (0: all; tiles a table adds are used where it names them). */
  unsigned char tile_choice[PAT_MAX_GQA][PAT_ROW_CLASSES][PAT_TOKEN_CLASSES];
  /* The same for masked packs (a subtree in one pack) only; 0 there: the class's tile_choice. */
  unsigned char masked_choice[PAT_MAX_GQA][PAT_ROW_CLASSES][PAT_TOKEN_CLASSES];
  int num_model_tiles;

  /* Where each field was written, for messages from later checks (templates, runtime). */
  pat_mark name_mark, dtype_mark, head_dim_mark, page_size_mark, gqa_mark,
           tiles_mark, split_mark, archs_mark;
} pat_spec;

/* Fills *spec with every default (see specs/README.md). */
void pat_spec_defaults(pat_spec *spec);

/* Parses and validates a YAML spec held in memory. `filename` is used in messages only.
** Returns 0 on success. On failure returns -1, leaves *spec untouched (never half-applied)
** and writes "FILE:LINE:COLUMN: error: MESSAGE" into err (always NUL-terminated). */
int pat_spec_parse(const char *text, size_t len, const char *filename, pat_spec *spec,
                   char *err, size_t errlen);

/* Reads the file at path and parses it as pat_spec_parse does. */
int pat_spec_load(const char *path, pat_spec *spec, char *err, size_t errlen);

const char *pat_dtype_name(pat_dtype dtype);   /* "fp16" or "bf16" */

/* A tuning table as read from YAML (bench/tune.c writes them; specs/README.md shows one):
** which spec and GPU it was measured for, a split policy, and tile choices per (GQA, row
** class, token class), for all packs or for masked packs only. Plain data. */
typedef struct pat_tuning_choice {
  int gqa;
  int rows;       /* the row class's upper bound: 16, 32, 64, 128 or 256 */
  int tokens;     /* the token class's upper bound: 64, 256, 1024, or 65536 for all longer */
  int masked;     /* 1: for the class's masked packs only (an mma.sync tile); 0: for all its packs,
                  ** masked ones too where no masked choice is given */
  pat_tile tile;
} pat_tuning_choice;

typedef struct pat_tuning {
  char spec[PAT_NAME_MAX];   /* name of the spec it was tuned for */
  char gpu[128];             /* device name it was measured on */
  char path[PAT_PATH_MAX];   /* the file it came from */
  int has_split;
  pat_split_policy split;
  int num_choices;
  pat_tuning_choice choices[2 * PAT_MAX_GQA * PAT_ROW_CLASSES * PAT_TOKEN_CLASSES];  /* plain, masked */
} pat_tuning;

/* Parses a tuning table (keys: spec, gpu, split, choices; others such as date are kept as
** comments by the writer and refused here) with the spec parser's messages. */
int pat_tuning_parse(const char *text, size_t len, const char *filename, pat_tuning *t,
                     char *err, size_t errlen);
int pat_tuning_load(const char *path, pat_tuning *t, char *err, size_t errlen);

#endif
