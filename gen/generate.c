/* generate.c: spec -> CUDA C for every (tile, GQA ratio) plus the merge kernel, by running
** templates/decode.cu.lua and templates/merge.cu.lua in an embedded Lua state. */
#include "generate.h"

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL /* header-only: nothing to link */
#include <xxhash.h>

#include "../templates/device/pat_params.h"
#include "embedded.h"
#include "lua_host.h"
#include "tile.h"
#include "version.h"

/* The spec as one deterministic line: what a kernel depends on, and nothing else. */
static void canonical_spec(const pat_spec *s, char *buf, size_t n)
{
  size_t at = (size_t)snprintf(buf, n, "name=%s dtype=%s head_dim=%d page=%d gqa=", s->name,
                               pat_dtype_name(s->dtype), s->head_dim, s->page_size);
  for (int i = 0; i < s->num_gqa && at < n; i++)
    at += (size_t)snprintf(buf + at, n - at, "%d,", s->gqa[i]);
  for (int i = 0; i < s->num_tiles && at < n; i++)
    at += (size_t)snprintf(buf + at, n - at, " tile=%d/%d/%d/%d%s%s", s->tiles[i].m, s->tiles[i].n,
                           s->tiles[i].warps, s->tiles[i].stages,
                           pat_tile_warp_rows(&s->tiles[i]) == 32 ? "/r32" : "",
                           s->tiles[i].wgmma ? "/wg" : "");
}

/* Hash of the spec, the templates and device headers, and the version: line 2 of each file. */
static void generation_key(const pat_spec *s, char out[33])
{
  char canon[2048];
  canonical_spec(s, canon, sizeof canon);
  XXH3_state_t *st = XXH3_createState();
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, PAT_VERSION, sizeof PAT_VERSION);
  XXH3_128bits_update(st, canon, strlen(canon) + 1);
  for (const pat_embedded_file *f = pat_embedded_files; f->path; f++) {
    XXH3_128bits_update(st, f->path, strlen(f->path) + 1);
    XXH3_128bits_update(st, f->data, f->size);
  }
  XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

static void set_int(lua_State *L, const char *k, int v)
{
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* Pushes the spec as a Lua table: {name, dtype, head_dim, page_size, gqa = {...}, tiles = {...}}. */
static void push_spec(lua_State *L, const pat_spec *s)
{
  lua_createtable(L, 0, 8);
  set_str(L, "name", s->name);
  set_str(L, "dtype", pat_dtype_name(s->dtype));
  set_int(L, "head_dim", s->head_dim);
  set_int(L, "page_size", s->page_size);
  lua_createtable(L, s->num_gqa, 0);
  for (int i = 0; i < s->num_gqa; i++) {
    lua_pushinteger(L, s->gqa[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "gqa");
  lua_createtable(L, s->num_tiles, 0);
  for (int i = 0; i < s->num_tiles; i++) {
    lua_createtable(L, 0, 6);
    set_int(L, "m", s->tiles[i].m);
    set_int(L, "n", s->tiles[i].n);
    set_int(L, "warps", s->tiles[i].warps);
    set_int(L, "stages", s->tiles[i].stages);
    set_int(L, "warp_rows", pat_tile_warp_rows(&s->tiles[i]));
    set_int(L, "wgmma", s->tiles[i].wgmma);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "tiles");
}

/* "specs/<basename>": the spec's name in banners, free of machine paths. */
static void spec_file_label(const pat_spec *s, char *buf, size_t n)
{
  const char *base = strrchr(s->path, '/');
  snprintf(buf, n, "specs/%s", base ? base + 1 : s->path);
}

/* Renders one kernel with the template function on the stack top. */
static int render(lua_State *L, const pat_spec *s, const char *key, pat_kernel_src *k, char *err,
                  size_t errlen)
{
  char label[PAT_PATH_MAX + 8];
  spec_file_label(s, label, sizeof label);
  lua_createtable(L, 0, 10);
  push_spec(L, s);
  lua_setfield(L, -2, "spec");
  if (k->tile >= 0) {
    lua_getfield(L, -1, "spec");
    lua_getfield(L, -1, "tiles");
    lua_rawgeti(L, -1, k->tile + 1);
    lua_setfield(L, -4, "tile");
    lua_pop(L, 2);
  }
  set_int(L, "gqa", k->gqa);
  set_str(L, "kernel", k->name);
  set_int(L, "smem_bytes", k->smem_bytes);
  set_int(L, "threads", k->threads);
  set_str(L, "version", PAT_VERSION);
  set_str(L, "spec_file", label);
  set_str(L, "key", key);
  return pat_lua_call_render(L, &k->source, err, errlen);
}

int pat_generate(const pat_spec *s, pat_kernel_set *out, char *err, size_t errlen)
{
  memset(out, 0, sizeof *out);
  int count = s->num_tiles * s->num_gqa + 1;
  pat_kernel_src *ks = calloc((size_t)count, sizeof *ks);
  lua_State *L = pat_lua_new();
  char key[33];
  if (!ks || !L) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  generation_key(s, key);
  for (int t = 0; t < s->num_tiles; t++) {
    for (int g = 0; g < s->num_gqa; g++) {
      pat_kernel_src *k = &ks[t * s->num_gqa + g];
      k->tile = t;
      k->gqa = s->gqa[g];
      k->threads = pat_tile_threads(&s->tiles[t]);
      k->smem_bytes = pat_tile_smem_bytes(s, &s->tiles[t]);
      k->sm90a = s->tiles[t].wgmma;
      pat_tile_kernel_name(s, &s->tiles[t], k->gqa, k->name, sizeof k->name);
    }
  }
  pat_kernel_src *mk = &ks[count - 1];
  mk->tile = -1;
  mk->threads = PAT_MERGE_THREADS;
  pat_merge_kernel_name(s, mk->name, sizeof mk->name);
  for (int i = 0; i < count; i++) snprintf(ks[i].file, sizeof ks[i].file, "%s.cu", ks[i].name);

  if (pat_lua_load_template(L, "decode.cu", err, errlen)) goto fail;
  for (int i = 0; i < count - 1; i++)
    if (render(L, s, key, &ks[i], err, errlen)) goto fail;
  lua_pop(L, 1);
  if (pat_lua_load_template(L, "merge.cu", err, errlen)) goto fail;
  if (render(L, s, key, mk, err, errlen)) goto fail;
  lua_close(L);
  out->count = count;
  out->kernels = ks;
  return 0;

fail:
  if (L) lua_close(L);
  if (ks) {
    pat_kernel_set set = {count, ks};
    pat_kernel_set_free(&set);
  }
  return -1;
}

void pat_kernel_set_free(pat_kernel_set *set)
{
  if (!set || !set->kernels) return;
  for (int i = 0; i < set->count; i++) free(set->kernels[i].source);
  free(set->kernels);
  set->kernels = NULL;
  set->count = 0;
}

/* Device headers as NVRTC sees them: templates/device/X -> "pat/X" (pat_params.h -> params.h). */
enum { MAX_HEADERS = 16 };
static const char *header_names[MAX_HEADERS];
static const char *header_sources[MAX_HEADERS];
static char header_name_buf[MAX_HEADERS][64];
static int header_count;
static pthread_once_t header_once = PTHREAD_ONCE_INIT;

static void collect_headers(void)
{
  static const char prefix[] = "templates/device/";
  for (const pat_embedded_file *f = pat_embedded_files; f->path && header_count < MAX_HEADERS; f++) {
    if (strncmp(f->path, prefix, sizeof prefix - 1) != 0) continue;
    const char *base = f->path + sizeof prefix - 1;
    if (strcmp(base, "pat_params.h") == 0) base = "params.h";
    snprintf(header_name_buf[header_count], sizeof header_name_buf[0], "pat/%s", base);
    header_names[header_count] = header_name_buf[header_count];
    header_sources[header_count] = f->data;
    header_count++;
  }
}

int pat_device_headers(const char *const **names, const char *const **sources)
{
  pthread_once(&header_once, collect_headers);
  *names = header_names;
  *sources = header_sources;
  return header_count;
}
