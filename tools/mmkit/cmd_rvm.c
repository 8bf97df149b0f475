/*
 * tools/mmkit/cmd_rvm.c - `mmkit rvm check|recover|dump PATH`: inspect a
 * recoverable-memory store (mmkit/rvm.h).  check and dump never change the
 * store (they take a shared lock, so they fail with "busy" while a program
 * has it open); recover opens it (applying the log) and closes it.
 */
#include "cmd.h"

#include <mmkit.h>
#include <mmkit/rvm.h>

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
	fprintf(out, "usage: mmkit rvm check PATH    verify headers, log records and page CRCs\n"
		     "       mmkit rvm recover PATH  apply the log to the data file (checkpoint)\n"
		     "       mmkit rvm dump PATH     headers and every intact log record\n"
		     "Exit status: 0 clean, 1 damaged or failed, 2 usage.  See mmkit-rvm(1).\n");
}

static void print_info(const char *path, const mmk_rvm_info *in)
{
	printf("store        %s\n", path);
	printf("size         %zu bytes (%zu pages)\n", in->size, in->size / 4096);
	printf("store id     %016llx\n", (unsigned long long)in->store_id);
	printf("log          %zu bytes, header slot %d (other slot %s), generation %llu\n",
	       in->log_size, in->header_slot, in->header_other_valid ? "valid" : "invalid",
	       (unsigned long long)in->gen);
	printf("records      %llu intact (%llu bytes), seq %llu..%llu, log end %llu\n",
	       in->records, in->record_bytes, (unsigned long long)in->start_seq,
	       (unsigned long long)in->last_seq, (unsigned long long)in->log_end);
	printf("torn tail    %s\n", in->torn_tail ? "yes (an incomplete last group: normal after a crash)" : "no");
	printf("log corrupt  %s\n", in->log_corrupt ? "YES" : "no");
	printf("bad pages    %zu", in->pages_bad);
	if (in->pages_bad)
		printf(" (first: page %zu)", in->first_bad_page);
	printf("\n");
}

static void rec_cb(uint64_t seq, uint64_t off, size_t len, size_t nranges, void *arg)
{
	(void)arg;
	printf("  seq %-10llu offset %-10llu %8zu bytes  %zu range(s)\n", (unsigned long long)seq,
	       (unsigned long long)off, len, nranges);
}

int mmk_cmd_rvm(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc != 3) {
		usage(stderr);
		return 2;
	}
	const char *op = argv[1], *path = argv[2];
	if (!strcmp(op, "check") || !strcmp(op, "dump")) {
		mmk_rvm_info in;
		bool dump = !strcmp(op, "dump");
		if (dump)
			printf("records:\n");
		int rc = mmk_rvm_check(path, &in, dump ? rec_cb : NULL, NULL);
		if (rc && rc != MMK_ECORRUPT && !in.size)
			return mmk_tool_fail(path, rc);
		print_info(path, &in);
		if (rc) {
			printf("status       DAMAGED: %s (%s)\n", in.problem[0] ? in.problem : "",
			       mmk_strerror(rc));
			return 1;
		}
		printf("status       ok%s\n", in.records ? " (the log will be applied at the next open)" : "");
		return 0;
	}
	if (!strcmp(op, "recover")) {
		mmk_rvm *r;
		mmk_rvm_opts o = { .mode = MMK_RVM_EXPLICIT }; /* no tracking needed */
		int rc = mmk_rvm_open(&r, path, 0, &o);
		if (rc)
			return mmk_tool_fail(path, rc);
		mmk_rvm_stats st;
		mmk_rvm_stats_get(r, &st);
		rc = mmk_rvm_close(r);
		if (rc)
			return mmk_tool_fail(path, rc);
		printf("%s: recovered, %llu log record(s) applied to the data file\n", path,
		       st.recovered);
		return 0;
	}
	usage(stderr);
	return 2;
}
