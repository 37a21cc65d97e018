/* patgen_run.c: `patgen run` and `patgen plan`, the subcommands built on the runtime. */
#include <stdio.h>

#include "patgen_cmds.h"

int patgen_cmd_run(int argc, char **argv)
{
  (void)argc; (void)argv;
  fprintf(stderr, "patgen run: not built yet\n");
  return 1;
}

int patgen_cmd_plan(int argc, char **argv)
{
  (void)argc; (void)argv;
  fprintf(stderr, "patgen plan: not built yet\n");
  return 1;
}
