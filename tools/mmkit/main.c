/*
 * tools/mmkit/main.c - the mmkit command-line tool: dispatch only.
 */
#include "cmd.h"

#include <mmkit.h>
#include <string.h>

static const mmk_cmd commands[] = {
	{ "features", mmk_cmd_features, "print what this kernel offers and what mmkit uses it for" },
	{ "prof", mmk_cmd_prof, "page-fault and CPU profiler: daemon, monitor, run, plots, case studies" },
	{ "work", mmk_cmd_work, "synthetic memory workload for the profiler case studies" },
	{ "rvm", mmk_cmd_rvm, "recoverable memory stores: check, recover, dump" },
	{ "ckpt", mmk_cmd_ckpt, "checkpoint images: info, verify, compact (and write/restore a demo)" },
};

int mmk_tool_fail(const char *what, int err)
{
	fprintf(stderr, "mmkit: %s: %s\n", what, mmk_strerror(err));
	return 1;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: mmkit COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\n  --version    print the version\n  --help       this text\n"
		     "See mmkit(1).\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("mmkit %s\n", mmk_version());
		return 0;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "mmkit: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
