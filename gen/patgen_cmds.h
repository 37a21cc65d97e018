/* patgen_cmds.h: the patgen subcommands that need the runtime (run, plan). */
#ifndef PAT_PATGEN_CMDS_H
#define PAT_PATGEN_CMDS_H

/* `patgen run [SPEC] [options]`: argv without "patgen run". Returns the exit status. */
int patgen_cmd_run(int argc, char **argv);

/* `patgen plan TREE [options]`. Returns the exit status. */
int patgen_cmd_plan(int argc, char **argv);

#endif
