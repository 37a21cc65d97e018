/* lua_host.h: the embedded Lua 5.4 interpreter that runs the templates, sandboxed. */
#ifndef PAT_LUA_HOST_H
#define PAT_LUA_HOST_H

#include <stddef.h>

typedef struct lua_State lua_State;

/* A fresh state with only base (minus file and load functions), string, table and math, and
** a `require` that loads templates/NAME.lua from the embedded files. NULL if out of memory.
** Close with lua_close(). One state per thread. */
lua_State *pat_lua_new(void);

/* Loads templates/<name>.lua (a chunk returning a function) and leaves that function on the
** stack. Returns 0, or -1 with "templates/x.lua:LINE: message" in err. */
int pat_lua_load_template(lua_State *L, const char *name, char *err, size_t errlen);

/* Calls the function below the argument on the stack with one argument (the table on top)
** and stores its string result, malloc'd, in *out. Returns 0, or -1 with the Lua error
** ("templates/x.lua:LINE: message") in err. The stack is left as before the function. */
int pat_lua_call_render(lua_State *L, char **out, char *err, size_t errlen);

#endif
