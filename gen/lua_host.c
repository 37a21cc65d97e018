/* lua_host.c: a sandboxed Lua 5.4 state for the templates; templates come from the binary. */
#include "lua_host.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded.h"

/* Loads the embedded templates/<name>.lua as text only, named for error messages. */
static int load_chunk(lua_State *L, const char *name)
{
  char path[256];
  snprintf(path, sizeof path, "templates/%s.lua", name);
  const pat_embedded_file *f = pat_embedded_find(path);
  if (!f) {
    lua_pushfstring(L, "no template '%s'", path);
    return LUA_ERRFILE;
  }
  char chunkname[260];
  snprintf(chunkname, sizeof chunkname, "@%s", path);
  return luaL_loadbufferx(L, f->data, f->size, chunkname, "t");
}

/* require(name): the embedded module, run once and kept in package-less registry table. */
static int l_require(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, "pat.loaded");
  if (lua_getfield(L, -1, name) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  if (load_chunk(L, name) != LUA_OK) return lua_error(L);
  lua_call(L, 0, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, name);
  return 1;
}

lua_State *pat_lua_new(void)
{
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
  static const luaL_Reg libs[] = {
    {LUA_GNAME, luaopen_base}, {LUA_STRLIBNAME, luaopen_string},
    {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math}, {NULL, NULL}};
  for (const luaL_Reg *lib = libs; lib->func; lib++) {
    luaL_requiref(L, lib->name, lib->func, 1);
    lua_pop(L, 1);
  }
  /* Templates read nothing from disk and compile no strings. */
  static const char *const removed[] = {"dofile", "loadfile", "load", "collectgarbage", "print"};
  for (size_t i = 0; i < sizeof removed / sizeof *removed; i++) {
    lua_pushnil(L);
    lua_setglobal(L, removed[i]);
  }
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "pat.loaded");
  lua_pushcfunction(L, l_require);
  lua_setglobal(L, "require");
  return L;
}

int pat_lua_load_template(lua_State *L, const char *name, char *err, size_t errlen)
{
  if (load_chunk(L, name) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
    lua_pop(L, 1);
    return -1;
  }
  if (!lua_isfunction(L, -1)) {
    snprintf(err, errlen, "templates/%s.lua: must return a function", name);
    lua_pop(L, 1);
    return -1;
  }
  return 0;
}

int pat_lua_call_render(lua_State *L, char **out, char *err, size_t errlen)
{
  lua_pushvalue(L, -2); /* the template function */
  lua_insert(L, -2);    /* ... fn, fn, arg -> fn(arg) below */
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
    lua_pop(L, 1);
    return -1;
  }
  size_t n = 0;
  const char *s = lua_tolstring(L, -1, &n);
  if (!s || lua_type(L, -1) != LUA_TSTRING) {
    snprintf(err, errlen, "template returned %s, not a string", luaL_typename(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  *out = malloc(n + 1);
  if (!*out) {
    snprintf(err, errlen, "out of memory");
    lua_pop(L, 1);
    return -1;
  }
  memcpy(*out, s, n + 1);
  lua_pop(L, 1);
  return 0;
}
