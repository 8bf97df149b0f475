/*
 * bench/bench_afl.c - AFL++ persistent mode with mmkit's memory reset
 * (mmkit/afl.h) against the fork server, persistent mode without reset,
 * and a naive full copy of the writable memory, on the stateful example
 * target (examples/afl).  AFL++ itself is the judge: execs/s and stability
 * come from its fuzzer_stats.
 *
 * Tables (CSV, blank line between them):
 *   1. fuzzing: per mode, afl-fuzz from the same seeds for the same time,
 *      repeated (modes interleaved so machine noise hits all alike):
 *      median execs/s, ratio to the fork server, median stability, execs
 *      per CPU second of afl-fuzz + target (robust to other load on the
 *      machine) and its ratio, crashes found and how many reproduce when
 *      run alone (uninstrumented build, one input, fresh process).
 *   2. coverage: every input of the reset run's queue run in sequence in one
 *      persistent process (afl-showmap -i) vs. the same input alone in a
 *      fresh process, where it is the child's first input - maps must be
 *      identical.
 *   3. reset cost: the reset build outside the fuzzer with the coverage map
 *      in shared memory as under afl-fuzz, an input dirtying 0/1/2 pages of
 *      globals or the parser on a fixed document; per-iteration CPU time
 *      with the reset on minus off (MMK_AFL_RESET=0), median of runs, and
 *      the same with every tracked page copied (MMK_AFL_UNTOUCHED=0
 *      MMK_AFL_KEEP_PLT=0, the harness before untouched pages and PLT
 *      slots were left out).
 * Needs afl-clang-fast, afl-fuzz, afl-showmap (Debian afl++; scripts/deps.sh
 * bench installs it); without them it prints a note and exits 0.
 * Flags: --quick (3 s runs, 1 rep), default (6 s runs, 2 reps), --full
 * (60 s runs, 3 reps); --cost: table 3 only (with --full: its full grid).
 */
#include <errno.h>
#include <stdarg.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#define NMODES 5
static const char *modes[NMODES] = { "fork", "persist", "reset", "naive", "reset-copyall" };
static const char *mode_desc[NMODES] = {
	"fork server (one process per input)",
	"persistent __AFL_LOOP - no reset",
	"persistent MMK_AFL_LOOP - mmkit reset",
	"persistent __AFL_LOOP + naive full copy of writable memory",
	"the reset build with MMK_AFL_UNTOUCHED=0 MMK_AFL_KEEP_PLT=0 (copies every tracked page; PLT slots rolled back)",
};
/* binary and environment of each mode */
static const char *mode_bin[NMODES] = { "fork", "persist", "reset", "naive", "reset" };
static const char *mode_env[NMODES] = { "", "", "", "", "MMK_AFL_UNTOUCHED=0 MMK_AFL_KEEP_PLT=0 " };
/* the figures on this machine class (stateful parser) */
static const char *seed_eps[NMODES] = { "12600", "115000", ">=88200 (7x fork)", "57000-63000 (hand resets)", "" };
static const char *seed_stab[NMODES] = { "", "48-55%", ">=98%", "98%", "" };

static char src[PATH_MAX], bld[PATH_MAX], work[PATH_MAX];

static void too_long(void)
{
	fprintf(stderr, "bench_afl: path too long\n");
	exit(1);
}
/* snprintf into an array, failing on truncation */
#define FMT(buf, ...)                                                      \
	do {                                                               \
		if (snprintf(buf, sizeof buf, __VA_ARGS__) >= (int)sizeof buf) \
			too_long();                                        \
	} while (0)

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	if (vsnprintf(cmd, sizeof cmd, fmt, ap) >= (int)sizeof cmd)
		too_long();
	va_end(ap);
	int rc = system(cmd);
	return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

static int have(const char *prog)
{
	return sh("command -v %s >/dev/null 2>&1", prog) == 0;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_dbl);
	return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* value of "key : value" in fuzzer_stats */
static double stat_of(const char *dir, const char *key)
{
	char path[PATH_MAX + 64], line[512];
	FMT(path, "%s/default/fuzzer_stats", dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	double v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
			char *c = strchr(line, ':');
			if (c)
				v = atof(c + 1);
			break;
		}
	fclose(f);
	return v;
}

static int build(const char *mode)
{
	char up[16];
	size_t i;
	for (i = 0; mode[i] && i < sizeof up - 1; i++)
		up[i] = (char)(mode[i] - 32);
	up[i] = 0;
	return sh("AFL_QUIET=1 afl-clang-fast -O2 -D_GNU_SOURCE -I'%s/include' -DMODE_%s -o '%s/t_%s' "
		  "'%s/examples/afl/target.c' '%s/libmmkit.a' -lpthread -ldl >'%s/build_%s.log' 2>&1",
		  src, up, work, mode, src, bld, work, mode);
}

#define AFL_ENV "AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 " \
		"AFL_NO_AFFINITY=1 AFL_NO_AUTODICT=1 "

/* crashes in out/default/crashes: found, and reproduced by the plain build alone */
static void crashes(const char *out, int *found, int *repro)
{
	char dir[PATH_MAX + 32];
	FMT(dir, "%s/default/crashes", out);
	DIR *d = opendir(dir);
	*found = *repro = 0;
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "id:", 3) != 0)
			continue;
		(*found)++;
		int rc = sh("'%s/t_plain' <'%s/%s' >/dev/null 2>&1", work, dir, e->d_name);
		if (rc > 128) /* killed by a signal: the shell reports 128+sig */
			(*repro)++;
	}
	closedir(d);
}

static int list_queue(const char *qdir, char names[][256], int max)
{
	DIR *d = opendir(qdir);
	int n = 0;
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < max)
		if (strncmp(e->d_name, "id:", 3) == 0)
			snprintf(names[n++], 256, "%s", e->d_name);
	closedir(d);
	return n;
}

static int same_file(const char *a, const char *b)
{
	return sh("cmp -s '%s' '%s'", a, b) == 0;
}

#define MAXQ 400
static char qnames[MAXQ][256];

/* Table 2 for one build: identical maps / inputs */
static void coverage_check(const char *mode, const char *qdir, int nq, int *same)
{
	*same = 0;
	sh("rm -rf '%s/seq' '%s/seq_%s' && mkdir -p '%s/seq' && printf '\\n' >'%s/seq/0000-neutral'",
	   work, work, mode, work, work);
	for (int i = 0; i < nq; i++)
		sh("cp '%s/%s' '%s/seq/'", qdir, qnames[i], work);
	sh(AFL_ENV "afl-showmap -q -t 1000 -i '%s/seq' -o '%s/seq_%s' -- '%s/t_%s' >/dev/null 2>&1",
	   work, work, mode, work, mode);
	for (int i = 0; i < nq; i++) {
		sh("rm -rf '%s/one' '%s/one_out' && mkdir -p '%s/one' && cp '%s/%s' '%s/one/'", work, work, work, qdir,
		   qnames[i], work);
		sh(AFL_ENV "afl-showmap -q -t 1000 -i '%s/one' -o '%s/one_out' -- '%s/t_%s' >/dev/null 2>&1",
		   work, work, work, mode);
		char a[PATH_MAX + 300], b[PATH_MAX + 300];
		FMT(a, "%s/seq_%s/%s", work, mode, qnames[i]);
		FMT(b, "%s/one_out/%s", work, qnames[i]);
		if (access(a, R_OK) == 0 && same_file(a, b))
			(*same)++;
	}
}

/* Table 3: ns per iteration (CPU time) of the reset build's cost mode;
 * v[] gets the other fields of its line (pages dirtied by the last restore,
 * regions, pages tracked, untouched pages, discards, replans) */
static double cost_run(const char *env, const char *arg, int reset, double v[6])
{
	char cmd[PATH_MAX + 256];
	FMT(cmd, "%sMMK_AFL_RESET=%d MMK_AFL_COST=%s '%s/t_reset'", env, reset, arg, work);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	double ns = -1, w[6] = { 0 };
	if (fscanf(p, "%lf,%lf,%lf,%lf,%lf,%lf,%lf", &ns, &w[0], &w[1], &w[2], &w[3], &w[4], &w[5]) != 7)
		ns = -1;
	pclose(p);
	if (reset)
		memcpy(v, w, sizeof w);
	return ns;
}

int main(int argc, char **argv)
{
	int secs = 6, reps = 2, qmax = 150; /* default: the main job stays near 5 min */
	unsigned long cost_iters = 100000;
	int cost_reps = 5, cost_only = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cost"))
			cost_only = 1;
		if (!strcmp(argv[i], "--quick")) {
			secs = 3;
			reps = 1;
			qmax = 40;
			cost_iters = 20000;
			cost_reps = 3;
		} else if (!strcmp(argv[i], "--full")) {
			secs = 60;
			reps = 3;
			qmax = MAXQ;
			cost_iters = 300000;
			cost_reps = 7;
		}
	}
	/* the source tree from this file's path, the build dir from ours */
	char here[PATH_MAX];
	FMT(here, "%s", __FILE__);
	FMT(src, "%s", dirname(dirname(here)));
	char self[PATH_MAX];
	ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
	if (sl <= 0) {
		perror("readlink");
		return 1;
	}
	self[sl] = 0;
	FMT(bld, "%s", dirname(self));
	FMT(work, "%s/afl-bench", bld);

	printf("mode,execs_per_s,ratio_vs_fork,stability_pct,runs_execs_per_s,runs_stability,"
	       "execs_per_cpu_s,ratio_vs_fork_cpu,runs_execs_per_cpu_s,crashes_found,crashes_reproduced_alone,seed_execs_per_s,"
	       "seed_stability,what\n");
	if (!have("afl-clang-fast") || !have("afl-fuzz") || !have("afl-showmap")) {
		printf("# skipped: AFL++ (afl-clang-fast, afl-fuzz, afl-showmap) not installed; "
		       "scripts/deps.sh bench installs Debian's afl++\n");
		return 0;
	}
	char lib[PATH_MAX + 16];
	FMT(lib, "%s/libmmkit.a", bld);
	if (access(lib, R_OK) != 0) {
		fprintf(stderr, "bench_afl: %s missing\n", lib);
		return 1;
	}
	sh("rm -rf '%s' && mkdir -p '%s'", work, work);
	for (int m = 0; m < NMODES; m++)
		if (!strcmp(modes[m], mode_bin[m]) && build(modes[m]) != 0) {
			fprintf(stderr, "bench_afl: building %s failed, see %s/build_%s.log\n", modes[m], work, modes[m]);
			return 1;
		}
	if (sh("cc -O2 -D_GNU_SOURCE -DMODE_FORK -o '%s/t_plain' '%s/examples/afl/target.c' >'%s/build_plain.log' 2>&1",
	       work, src, work) != 0) {
		fprintf(stderr, "bench_afl: building the plain target failed\n");
		return 1;
	}

	if (cost_only) {
		printf("# --cost: tables 1 and 2 skipped\n");
		goto cost;
	}
	/* ---- table 1: fuzzing ------------------------------------------------ */
	double eps[NMODES][8], stab[NMODES][8], epc[NMODES][8];
	int found[NMODES] = { 0 }, repro[NMODES] = { 0 };
	for (int r = 0; r < reps; r++)
		for (int m = 0; m < NMODES; m++) {
			fprintf(stderr, "bench_afl: afl-fuzz %s, run %d/%d, %d s\n", modes[m], r + 1, reps, secs);
			char out[PATH_MAX + 64];
			FMT(out, "%s/out_%s_%d", work, modes[m], r);
			struct rusage ru0, ru1;
			getrusage(RUSAGE_CHILDREN, &ru0);
			int rc = sh(AFL_ENV "%stimeout %d afl-fuzz -V %d -i '%s/examples/afl/seeds' -o '%s' -- '%s/t_%s' "
				    ">'%s.log' 2>&1", mode_env[m], secs + 120, secs, src, out, work, mode_bin[m], out);
			getrusage(RUSAGE_CHILDREN, &ru1);
			/* CPU seconds of afl-fuzz, the fork server and every child
			 * (all waited for): execs per CPU second does not depend on
			 * how much CPU other work on the machine left us */
			double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
				     (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
				     ((double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
				      (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec)) / 1e6;
			double done = stat_of(out, "execs_done");
			epc[m][r] = cpu > 0 && done > 0 ? done / cpu : -1;
			eps[m][r] = stat_of(out, "execs_per_sec");
			stab[m][r] = stat_of(out, "stability");
			if (rc != 0 || eps[m][r] < 0)
				fprintf(stderr, "bench_afl: afl-fuzz %s failed (rc %d), see %s.log\n", modes[m], rc, out);
			int f, p;
			crashes(out, &f, &p);
			found[m] += f;
			repro[m] += p;
		}
	double fork_eps = 0, fork_epc = 0;
	for (int m = 0; m < NMODES; m++) {
		char runs_e[256] = "", runs_s[256] = "", runs_c[256] = "";
		for (int r = 0; r < reps; r++) {
			size_t le = strlen(runs_e), ls = strlen(runs_s), lc = strlen(runs_c);
			snprintf(runs_e + le, sizeof runs_e - le, "%s%.0f", r ? " " : "", eps[m][r]);
			snprintf(runs_s + ls, sizeof runs_s - ls, "%s%.2f", r ? " " : "", stab[m][r]);
			snprintf(runs_c + lc, sizeof runs_c - lc, "%s%.0f", r ? " " : "", epc[m][r]);
		}
		double e[8], s[8];
		memcpy(e, eps[m], sizeof e);
		memcpy(s, stab[m], sizeof s);
		double c[8];
		memcpy(c, epc[m], sizeof c);
		double me = median(e, reps), ms = median(s, reps), mc = median(c, reps);
		if (m == 0) {
			fork_eps = me;
			fork_epc = mc;
		}
		printf("%s,%.0f,%.2f,%.2f,%s,%s,%.0f,%.2f,%s,%d,%d,%s,%s,%s\n", modes[m], me,
		       fork_eps > 0 ? me / fork_eps : 0, ms, runs_e, runs_s, mc, fork_epc > 0 ? mc / fork_epc : 0, runs_c,
		       found[m], repro[m], seed_eps[m], seed_stab[m], mode_desc[m]);
	}
	printf("# %d s per afl-fuzz run, %d run(s) per mode interleaved, same seeds (examples/afl/seeds); "
	       "execs/s and stability from AFL++ %s fuzzer_stats; medians\n", secs, reps, "4.x");
	printf("# execs_per_cpu_s: execs_done / CPU seconds of afl-fuzz + fork server + children (getrusage "
	       "RUSAGE_CHILDREN around each run): less sensitive than execs/s to other load on the machine\n");
	printf("# crashes_reproduced_alone: the crashing input run once in a fresh uninstrumented process "
	       "(examples/afl target-plain) dies by a signal\n");

	/* ---- table 2: coverage identity ---------------------------------------- */
	printf("\nbuild,inputs,identical_to_fresh_process,different,target\n");
	char qdir[PATH_MAX + 64];
	FMT(qdir, "%s/out_reset_0/default/queue", work);
	int nq = list_queue(qdir, qnames, qmax);
	for (int m = 1; m <= 2; m++) {
		int same;
		fprintf(stderr, "bench_afl: afl-showmap %s, %d inputs\n", modes[m], nq);
		coverage_check(modes[m], qdir, nq, &same);
		printf("%s,%d,%d,%d,%s\n", modes[m], nq, same, nq - same, m == 2 ? "all identical" : "");
	}
	printf("# inputs: the queue of the first reset run, run in sequence by one persistent process "
	       "(afl-showmap -i, after a neutral first input) vs each alone in a fresh process (its first "
	       "input)\n");

	/* ---- table 3: reset cost ------------------------------------------------- */
cost:
	printf("\ninput,pages_dirtied_per_restore,us_per_iter_reset,us_per_iter_no_reset,reset_cost_us,"
	       "regions,pages_tracked,untouched_pages,discards,replans,reset_cost_us_copy_all,pages_tracked_copy_all,"
	       "seed_target_us\n");
	static const struct { const char *name; int pages; } cases[] = {
		{ "writes 0 pages", 0 }, { "writes 1 page", 1 }, { "writes 2 pages", 2 }, { "parser on a fixed document", -1 },
	};
	static const char copy_all[] = "MMK_AFL_UNTOUCHED=0 MMK_AFL_KEEP_PLT=0 ";
	for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
		char arg[64];
		FMT(arg, "%lu,%d", cases[c].pages < 0 ? cost_iters / 4 : cost_iters, cases[c].pages);
		double on[16], off[16], all[16], v[6] = { 0 }, va[6] = { 0 };
		for (int r = 0; r < cost_reps; r++) {
			on[r] = cost_run("", arg, 1, v);
			off[r] = cost_run("", arg, 0, v);
			all[r] = cost_run(copy_all, arg, 1, va);
		}
		double mon = median(on, cost_reps), moff = median(off, cost_reps), mall = median(all, cost_reps);
		printf("%s,%.0f,%.2f,%.2f,%.2f,%.0f,%.0f,%.0f,%.0f,%.0f,%.2f,%.0f,%s\n", cases[c].name, v[0], mon / 1e3,
		       moff / 1e3, (mon - moff) / 1e3, v[1], v[2], v[3], v[4], v[5], (mall - moff) / 1e3, va[2],
		       cases[c].pages >= 0 && cases[c].pages <= 2 ? "2" : "");
	}
	printf("# reset cost: the example target's process scope outside the fuzzer, coverage map in shared "
	       "memory as under afl-fuzz; per-iteration thread CPU time (user+system: other processes on the "
	       "machine do not inflate it) with the reset on minus off; pages_dirtied counts every page the "
	       "restore put back (the copy backend: every tracked page); untouched_pages are left out of the copy "
	       "(checked by the resident anonymous count, statm, and the thread's faults), discards = resets that "
	       "saw a change and discarded them while timed, replans = pages found "
	       "touched and moved to the copy; copy_all = MMK_AFL_UNTOUCHED=0 MMK_AFL_KEEP_PLT=0 (every tracked "
	       "page copied, lazily bound PLT slots rolled back); median of %d runs x %lu iterations\n",
	       cost_reps, cost_iters);
	printf("# parser row: without the reset the document runs on leaked state (a different path), so its "
	       "reset_cost is indicative only\n");
	return 0;
}
