/*
 * tools/mmkit/cmd.h - the subcommand table of the mmkit tool.
 *
 * Each subcommand lives in its own cmd_*.c and is listed once in main.c.
 * A command returns the process exit status (0 ok, 1 failure, 2 usage).
 */
#ifndef MMK_TOOL_CMD_H
#define MMK_TOOL_CMD_H

#include <stdio.h>

typedef struct mmk_cmd {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the command name */
	const char *summary;
} mmk_cmd;

int mmk_cmd_features(int argc, char **argv);
int mmk_cmd_prof(int argc, char **argv);
int mmk_cmd_work(int argc, char **argv);
int mmk_cmd_rvm(int argc, char **argv);
int mmk_cmd_ckpt(int argc, char **argv);

/* Print "mmkit: <what>: <mmk_strerror(err)>" to stderr; returns 1. */
int mmk_tool_fail(const char *what, int err);

#endif
