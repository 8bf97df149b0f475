/*
 * tools/mmkit/cmd_prof.c - `mmkit prof ...`: the page-fault and CPU profiler
 * (seed 002).  Subcommands: daemon, register, unregister, list, stats, stop,
 * monitor, run, plot, case-study.  See mmkit-prof(1).
 *
 * `run` and `case-study` need no daemon: they drive a sampler of their own on
 * an absolute timerfd schedule, start the commands (each waits on a pipe
 * until it is a target, so no fault escapes), and when a command exits take
 * its final sample while it is still a zombie (exact totals), then reap it
 * with wait4 and compare with the kernel's rusage.
 *
 * Case studies as root set up a swap file and a memory cgroup limit, and undo
 * both on every exit path (normal, error, SIGINT/SIGTERM/SIGHUP).
 */
#include "cmd.h"

#include <mmkit.h>
#include <mmkit/prof.h>
#include "prof/prof_internal.h" /* mmk__procstat_read */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/swap.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int g_stop; /* set by signal handlers (tool only, not the library) */

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: wake up syscalls */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static const char *opt_val(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		fprintf(stderr, "mmkit prof: %s needs a value\n", argv[*i]);
		exit(2);
	}
	return argv[++*i];
}

static int parse_pid(const char *s, pid_t *pid)
{
	char *e;
	errno = 0;
	long v = strtol(s, &e, 10);
	if (*e || e == s || errno || v <= 0 || v > INT_MAX)
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

/* ---- daemon ---------------------------------------------------------------- */
static int cmd_daemon(int argc, char **argv)
{
	mmk_prof_daemon_opts o = { .ready_fd = -1, .stop = &g_stop };
	bool detach = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rate"))
			o.rate_hz = atof(opt_val(argc, argv, &i));
		else if (!strcmp(argv[i], "--records"))
			o.records = strtoul(opt_val(argc, argv, &i), NULL, 10);
		else if (!strcmp(argv[i], "--max-procs"))
			o.max_targets = strtoul(opt_val(argc, argv, &i), NULL, 10);
		else if (!strcmp(argv[i], "--dir"))
			o.dir = opt_val(argc, argv, &i);
		else if (!strcmp(argv[i], "--stat-only"))
			o.stat_only = true;
		else if (!strcmp(argv[i], "--no-rt"))
			o.no_rt = true;
		else if (!strcmp(argv[i], "--no-perf"))
			o.no_perf = true;
		else if (!strcmp(argv[i], "--detach"))
			detach = true;
		else {
			fprintf(stderr, "usage: mmkit prof daemon [--rate HZ] [--records N] [--max-procs N] "
					"[--stat-only] [--no-perf] [--no-rt] [--dir DIR] [--detach]\n");
			return 2;
		}
	}
	catch_signals();
	signal(SIGPIPE, SIG_IGN);
	int pfd[2] = { -1, -1 };
	if (detach && pipe2(pfd, O_CLOEXEC) < 0)
		return mmk_tool_fail("pipe", -errno);
	if (detach) {
		pid_t p = fork();
		if (p < 0)
			return mmk_tool_fail("fork", -errno);
		if (p > 0) {
			close(pfd[1]);
			char c;
			ssize_t n = read(pfd[0], &c, 1);
			if (n == 1) {
				printf("%d\n", (int)p);
				return 0;
			}
			int st;
			waitpid(p, &st, 0);
			return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
		}
		setsid();
		int nul = open("/dev/null", O_RDWR);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			if (nul > 2)
				close(nul);
		}
	}
	if (detach)
		close(pfd[0]);
	o.ready_fd = pfd[1];
	int err = mmk_prof_daemon_run(&o);
	if (err < 0)
		return mmk_tool_fail("prof daemon", err);
	return 0;
}

static const char *dir_opt(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--dir"))
			return argv[i + 1];
	return NULL;
}

static int cmd_pid(int argc, char **argv, bool reg)
{
	pid_t pid;
	if (argc < 2 || parse_pid(argv[1], &pid) < 0) {
		fprintf(stderr, "usage: mmkit prof %s PID [--dir DIR]\n", argv[0]);
		return 2;
	}
	int err = reg ? mmk_prof_register(dir_opt(argc, argv), pid) : mmk_prof_unregister(dir_opt(argc, argv), pid);
	if (err < 0) {
		fprintf(stderr, "mmkit: prof %s %d: %s\n", argv[0], (int)pid, mmk_strerror(err));
		return 1;
	}
	return 0;
}

static int cmd_list(int argc, char **argv)
{
	pid_t pids[4096];
	int n = mmk_prof_list(dir_opt(argc, argv), pids, 4096);
	if (n < 0)
		return mmk_tool_fail("prof list", n);
	for (int i = 0; i < n && i < 4096; i++)
		printf("%d\n", (int)pids[i]);
	return 0;
}

static int cmd_stats(int argc, char **argv)
{
	mmk_prof_stats st;
	int err = mmk_prof_stats_get(dir_opt(argc, argv), &st);
	if (err < 0)
		return mmk_tool_fail("prof stats", err);
	printf("rate_hz %.3f\nticks %llu\nskipped %llu\nrecords %llu\ntargets %u\ncpu_s %.6f\nwall_s %.3f\n"
	       "overhead_pct_of_one_cpu %.4f\njitter_p50_us %.1f\njitter_p99_us %.1f\njitter_max_us %.1f\nrealtime %d\n",
	       st.rate_hz, (unsigned long long)st.ticks, (unsigned long long)st.skipped,
	       (unsigned long long)st.records, st.targets, st.cpu_s, st.wall_s,
	       st.wall_s > 0 ? 100.0 * st.cpu_s / st.wall_s : 0, (double)st.jitter_p50_ns / 1e3,
	       (double)st.jitter_p99_ns / 1e3, (double)st.jitter_max_ns / 1e3, st.realtime);
	return 0;
}

static int cmd_stop(int argc, char **argv)
{
	int err = mmk_prof_shutdown(dir_opt(argc, argv));
	return err < 0 ? mmk_tool_fail("prof stop", err) : 0;
}

/* ---- monitor ----------------------------------------------------------------- */
static const char *kind_name(unsigned k)
{
	static const char *n[] = { "sample", "register", "exit", "unregister" };
	return k < 4 ? n[k] : "?";
}

static int cmd_monitor(int argc, char **argv)
{
	bool follow = false, csv = false, mp3 = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--follow") || !strcmp(argv[i], "-f"))
			follow = true;
		else if (!strcmp(argv[i], "--csv"))
			csv = true;
		else if (!strcmp(argv[i], "--mp3"))
			mp3 = true;
		else if (!strcmp(argv[i], "--dir"))
			i++;
		else {
			fprintf(stderr, "usage: mmkit prof monitor [--follow] [--csv] [--mp3] [--dir DIR]\n");
			return 2;
		}
	}
	mmk_prof_ring *ring;
	int err = mmk_prof_ring_open(dir_opt(argc, argv), &ring);
	if (err < 0)
		return mmk_tool_fail("prof monitor", err);
	catch_signals();
	uint64_t pos = mmk_prof_ring_oldest(ring), missed = 0, reported = 0;
	uint64_t period = mmk_prof_ring_period_ns(ring);
	if (mp3)
		printf("t_s,minflt,majflt,cpu_s,util\n");
	else if (csv)
		printf("%s\n", MMK_PROF_CSV_HEADER);
	else
		printf("%10s %7s %-10s %10s %8s %9s %9s %6s\n", "t_s", "pid", "kind", "minflt", "majflt", "utime_s",
		       "stime_s", "util");
	/* MP3 view: sums per period (tick) over registered processes */
	uint64_t cur_tick = UINT64_MAX, ctime = 0;
	unsigned long long smin = 0, smaj = 0, scpu = 0, sutil = 0;
	bool have = false;
	while (!g_stop) {
		mmk_prof_record r;
		int got = mmk_prof_ring_read(ring, &pos, &r, &missed);
		if (missed != reported) {
			if (csv || mp3)
				printf("# missed %llu records (reader too slow)\n", (unsigned long long)(missed - reported));
			else
				printf("-- missed %llu records (reader too slow)\n", (unsigned long long)(missed - reported));
			reported = missed;
		}
		if (got == 1) {
			if (mp3) {
				if (r.kind != MMK_PROF_SAMPLE && r.kind != MMK_PROF_EXIT)
					continue;
				if (have && r.tick != cur_tick) {
					printf("%.6f,%llu,%llu,%.6f,%.6f\n", (double)ctime / 1e9, smin, smaj, (double)scpu / 1e6,
					       (double)sutil / 1e6);
					smin = smaj = scpu = sutil = 0;
				}
				have = true;
				cur_tick = r.tick;
				ctime = r.t_ns;
				smin += r.d_minflt;
				smaj += r.d_majflt;
				scpu += r.d_cpu_us;
				sutil += r.util_ppm;
			} else if (csv) {
				char line[256];
				mmk_prof_csv_format(&r, line, sizeof line);
				printf("%s\n", line);
			} else {
				printf("%10.3f %7d %-10s %10llu %8llu %9.3f %9.3f %6.3f\n", (double)r.t_ns / 1e9, (int)r.pid,
				       kind_name(r.kind), (unsigned long long)r.minflt, (unsigned long long)r.majflt,
				       (double)r.utime_ns / 1e9, (double)r.stime_ns / 1e9, (double)r.util_ppm / 1e6);
			}
			continue;
		}
		if (!follow)
			break;
		fflush(stdout);
		struct timespec ts = { 0, (long)(period / 4 > 1000000 ? period / 4 : 1000000) };
		if (ts.tv_nsec > 100000000)
			ts.tv_nsec = 100000000;
		nanosleep(&ts, NULL);
	}
	if (mp3 && have)
		printf("%.6f,%llu,%llu,%.6f,%.6f\n", (double)ctime / 1e9, smin, smaj, (double)scpu / 1e6,
		       (double)sutil / 1e6);
	mmk_prof_ring_destroy(ring);
	return 0;
}

/* ---- sessions: profile commands we start ------------------------------------- */
typedef struct proc_sum {
	pid_t pid;
	char label[64];
	bool done;
	double start_s, end_s;
	double peak_rate;  /* faults/s over one interval */
	uint64_t last_faults, last_t;
	mmk_prof_record fin;
	struct rusage ru;
	int status;
	int statfd;              /* /proc/PID/stat, read once more as a zombie */
	uint64_t cmin, cmaj;     /* faults of its reaped children (in rusage) */
	bool exact_min, exact_maj;
} proc_sum;

typedef struct session {
	mmk_prof_sampler *smp;
	FILE *csv;
	proc_sum *p;
	size_t np;
	uint64_t period_ns;
	unsigned flags;
	double end_s;
	const char *cgroup_procs[2]; /* if set, children join these cgroups */
} session;

static proc_sum *find_sum(session *s, pid_t pid)
{
	for (size_t i = 0; i < s->np; i++)
		if (s->p[i].pid == pid)
			return &s->p[i];
	return NULL;
}

static void session_emit(const mmk_prof_record *r, void *arg)
{
	session *s = arg;
	if (s->csv) {
		char line[256];
		mmk_prof_csv_format(r, line, sizeof line);
		fprintf(s->csv, "%s\n", line);
	}
	proc_sum *p = find_sum(s, r->pid);
	if (p && r->kind == MMK_PROF_EXIT) /* final totals, read from the zombie */
		p->fin = *r;
	if (p && r->kind != MMK_PROF_REGISTER) {
		uint64_t f = r->minflt + r->majflt;
		if (r->t_ns > p->last_t) {
			double rate = (double)(f - (f > p->last_faults ? p->last_faults : f)) /
				      ((double)(r->t_ns - p->last_t) / 1e9);
			if (rate > p->peak_rate)
				p->peak_rate = rate;
		}
		p->last_faults = f;
		p->last_t = r->t_ns;
	}
}

/* Start argv as a child that waits until it is a sampler target. */
static int session_spawn(session *s, char **argv, const char *label)
{
	int sync[2];
	if (pipe2(sync, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(sync[1]);
		for (int k = 0; k < 2; k++) {
			if (!s->cgroup_procs[k])
				continue;
			int fd = open(s->cgroup_procs[k], O_WRONLY);
			if (fd >= 0) {
				char b[32];
				int n = snprintf(b, sizeof b, "%d\n", (int)getpid());
				if (write(fd, b, (size_t)n) < 0)
					_exit(126);
				close(fd);
			}
		}
		char c;
		if (read(sync[0], &c, 1) != 1)
			_exit(127);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execvp(argv[0], argv);
		fprintf(stderr, "mmkit prof: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(sync[0]);
	proc_sum *np = realloc(s->p, (s->np + 1) * sizeof *np);
	if (!np)
		return -ENOMEM;
	s->p = np;
	proc_sum *p = &s->p[s->np++];
	memset(p, 0, sizeof *p);
	p->pid = pid;
	snprintf(p->label, sizeof p->label, "%s", label);
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid); /* our unreaped child: cannot be reused */
	p->statfd = open(path, O_RDONLY | O_CLOEXEC);
	int err = mmk_prof_sampler_add(s->smp, pid, -1, MMK_PROF_ADD_ABSOLUTE | s->flags);
	p->start_s = (double)mmk_prof_now_ns() / 1e9;
	if (write(sync[1], "g", 1) != 1)
		err = err ? err : -EPIPE;
	close(sync[1]);
	return err;
}

static int session_open(session *s, double rate, const char *csv_path, unsigned flags)
{
	memset(s, 0, sizeof *s);
	s->flags = flags;
	s->period_ns = (uint64_t)(1e9 / rate + 0.5);
	if (csv_path) {
		s->csv = !strcmp(csv_path, "-") ? stdout : fopen(csv_path, "w");
		if (!s->csv)
			return -errno;
		fprintf(s->csv, "%s\n", MMK_PROF_CSV_HEADER);
	}
	mmk_prof_sampler_opts o = { .emit = session_emit, .arg = s };
	return mmk_prof_sampler_create(&s->smp, &o);
}

/* Sample until every spawned command exited. */
static int session_loop(session *s)
{
	mmk_prof_timer tm;
	int err = mmk_prof_timer_start(&tm, s->period_ns);
	if (err < 0)
		return err;
	size_t left = s->np;
	bool killed = false;
	uint64_t t0 = mmk_prof_now_ns();
	while (left) {
		if (g_stop && !killed) {
			for (size_t i = 0; i < s->np; i++)
				if (!s->p[i].done)
					kill(s->p[i].pid, SIGTERM);
			killed = true;
		}
		struct pollfd pf[2] = { { tm.fd, POLLIN, 0 }, { mmk_prof_sampler_exit_fd(s->smp), POLLIN, 0 } };
		int n = poll(pf, 2, 1000);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (pf[0].revents & POLLIN) {
			int64_t late;
			if (mmk_prof_timer_wait(&tm, &late) == 0)
				mmk_prof_sampler_tick(s->smp, tm.tick);
		}
		/* our children: final sample as zombies, then reap */
		for (size_t i = 0; i < s->np; i++) {
			proc_sum *p = &s->p[i];
			if (p->done)
				continue;
			siginfo_t si = {0};
			if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid != p->pid)
				continue;
			/* -ENOENT: a tick already saw the zombie and emitted its EXIT
			 * record (kept in p->fin by session_emit) */
			mmk_prof_sampler_finish(s->smp, p->pid, &p->fin);
			/* wait4's rusage also counts the children it reaped; without
			 * --children the record does not, so add them for the check */
			mmk__procstat ps;
			if (!(s->flags & MMK_PROF_ADD_CHILDREN) && p->statfd >= 0 &&
			    mmk__procstat_read(p->statfd, &ps) == 0) {
				p->cmin = ps.cminflt;
				p->cmaj = ps.cmajflt;
			}
			if (p->statfd >= 0)
				close(p->statfd);
			p->statfd = -1;
			wait4(p->pid, &p->status, 0, &p->ru);
			p->done = true;
			p->end_s = (double)mmk_prof_now_ns() / 1e9;
			p->exact_min = p->fin.minflt + p->cmin == (uint64_t)p->ru.ru_minflt;
			p->exact_maj = p->fin.majflt + p->cmaj == (uint64_t)p->ru.ru_majflt;
			left--;
		}
		mmk_prof_sampler_reap(s->smp, tm.tick); /* descendants that exited */
	}
	s->end_s = (double)(mmk_prof_now_ns() - t0) / 1e9;
	mmk_prof_timer_stop(&tm);
	if (s->csv)
		fflush(s->csv);
	return 0;
}

static void session_close(session *s)
{
	if (s->csv && s->csv != stdout)
		fclose(s->csv);
	for (size_t i = 0; i < s->np; i++)
		if (s->p[i].statfd >= 0)
			close(s->p[i].statfd);
	mmk_prof_sampler_destroy(s->smp);
	free(s->p);
}

static double tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void print_summary(FILE *out, session *s)
{
	for (size_t i = 0; i < s->np; i++) {
		proc_sum *p = &s->p[i];
		double wall = p->end_s - p->start_s;
		double cpu = tv_s(p->ru.ru_utime) + tv_s(p->ru.ru_stime);
		fprintf(out,
			"%s pid %d: %.3f s, minflt %llu, majflt %llu, utime %.3f s, stime %.3f s, util %.3f, "
			"peak fault rate %.0f/s, avg fault rate %.0f/s\n",
			p->label, (int)p->pid, wall, (unsigned long long)p->fin.minflt, (unsigned long long)p->fin.majflt,
			tv_s(p->ru.ru_utime), tv_s(p->ru.ru_stime), wall > 0 ? cpu / wall : 0, p->peak_rate,
			wall > 0 ? (double)(p->fin.minflt + p->fin.majflt) / wall : 0);
		fprintf(out, "  accuracy vs wait4 rusage: minflt %s (%llu vs %ld), majflt %s (%llu vs %ld)",
			p->exact_min ? "exact" : "DIFFERS", (unsigned long long)(p->fin.minflt + p->cmin), p->ru.ru_minflt,
			p->exact_maj ? "exact" : "DIFFERS", (unsigned long long)(p->fin.majflt + p->cmaj), p->ru.ru_majflt);
		if (p->cmin || p->cmaj)
			fprintf(out, "; includes %llu minor / %llu major faults of reaped children (use --children "
				     "to profile them)", (unsigned long long)p->cmin, (unsigned long long)p->cmaj);
		fputc('\n', out);
	}
}

/* ---- plots (gnuplot) ------------------------------------------------------------ */
static bool have_gnuplot(void)
{
	return system("gnuplot --version >/dev/null 2>&1") == 0;
}

static const char *terminal_for(const char *out)
{
	size_t n = strlen(out);
	if (n > 4 && !strcmp(out + n - 4, ".svg"))
		return "svg size 900,600 dynamic";
	return "pngcairo size 900,600";
}

static int run_gnuplot(const char *script_path, const char *out)
{
	char cmd[8192];
	snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", script_path);
	if (system(cmd) == 0)
		return 0;
	/* pngcairo missing: the gd terminal */
	FILE *f = fopen(script_path, "r+");
	if (!f)
		return -EIO;
	(void)out;
	fclose(f);
	if (snprintf(cmd, sizeof cmd,
		     "sed -i 's/^set terminal pngcairo/set terminal png/' '%s' && gnuplot '%s'",
		     script_path, script_path) >= (int)sizeof cmd)
		return -ENAMETOOLONG;
	return system(cmd) == 0 ? 0 : -EIO;
}

typedef struct label_map {
	pid_t pid;
	const char *label;
} label_map;

/* Faults over time per process from a CSV file. */
static int plot_faults(const char *csv, const char *out, const char *title, const label_map *lm, size_t nlm)
{
	FILE *in = fopen(csv, "r");
	if (!in)
		return -errno;
	char line[512];
	pid_t pids[64];
	size_t np = 0;
	mmk_prof_record *rec = NULL;
	size_t nr = 0, cr = 0;
	bool anymaj = false;
	int bad = 0;
	while (fgets(line, sizeof line, in)) {
		if (line[0] == '#' || !strncmp(line, "t_s,", 4))
			continue;
		mmk_prof_record r;
		if (mmk_prof_csv_parse(line, &r) < 0) {
			bad++;
			continue;
		}
		if (nr == cr) {
			cr = cr ? cr * 2 : 1024;
			mmk_prof_record *n = realloc(rec, cr * sizeof *n);
			if (!n) {
				free(rec);
				fclose(in);
				return -ENOMEM;
			}
			rec = n;
		}
		rec[nr++] = r;
		anymaj |= r.majflt > 0;
		size_t k = 0;
		while (k < np && pids[k] != r.pid)
			k++;
		if (k == np && np < 64)
			pids[np++] = r.pid;
	}
	fclose(in);
	if (!nr) {
		free(rec);
		return -ENODATA;
	}
	char dat[4200], gp[4200];
	if (snprintf(dat, sizeof dat, "%s.dat", out) >= (int)sizeof dat ||
	    snprintf(gp, sizeof gp, "%s.gp", out) >= (int)sizeof gp) {
		free(rec);
		return -ENAMETOOLONG;
	}
	FILE *d = fopen(dat, "w"), *g = fopen(gp, "w");
	if (!d || !g) {
		if (d)
			fclose(d);
		if (g)
			fclose(g);
		free(rec);
		return -EIO;
	}
	for (size_t k = 0; k < np; k++) {
		for (size_t i = 0; i < nr; i++)
			if (rec[i].pid == pids[k])
				fprintf(d, "%.6f %llu %llu %llu\n", (double)rec[i].t_ns / 1e9,
					(unsigned long long)rec[i].minflt, (unsigned long long)rec[i].majflt,
					(unsigned long long)(rec[i].minflt + rec[i].majflt));
		fprintf(d, "\n\n");
	}
	fclose(d);
	free(rec);
	fprintf(g, "set terminal %s\nset output '%s'\nset title \"%s\"\nset xlabel 'time (s)'\n"
		   "set ylabel 'accumulated page faults'\nset key left top\nset grid\nset format y '%%.0s%%c'\n",
		terminal_for(out), out, title ? title : "page faults over time");
	fprintf(g, "plot ");
	for (size_t k = 0; k < np; k++) {
		const char *lab = NULL;
		for (size_t j = 0; j < nlm; j++)
			if (lm[j].pid == pids[k])
				lab = lm[j].label;
		char name[160];
		if (lab)
			snprintf(name, sizeof name, "%s (pid %d)", lab, (int)pids[k]);
		else
			snprintf(name, sizeof name, "pid %d", (int)pids[k]);
		fprintf(g, "%s'%s' index %zu using 1:2 with lines lw 2 title \"%s minor\"", k ? ", " : "", dat, k, name);
		if (anymaj)
			fprintf(g, ", '%s' index %zu using 1:3 with lines dt 2 lw 2 title \"%s major\"", dat, k, name);
	}
	fprintf(g, "\n");
	fclose(g);
	int err = run_gnuplot(gp, out);
	(void)bad;
	return err;
}

static int plot_util(const char *dat, const char *out, const char *title)
{
	char gp[4200];
	snprintf(gp, sizeof gp, "%s.gp", out);
	FILE *g = fopen(gp, "w");
	if (!g)
		return -errno;
	fprintf(g, "set terminal %s\nset output '%s'\nset title \"%s\"\nset xlabel 'N (copies of work)'\n"
		   "set ylabel 'total CPU utilisation (CPUs)'\nset grid\nset key left top\nset yrange [0:*]\n"
		   "set y2label 'completion time (s)'\nset y2tics\nset ytics nomirror\n"
		   "plot '%s' using 1:2 with linespoints lw 2 pt 7 title 'utilisation', "
		   "'%s' using 1:3 axes x1y2 with linespoints lw 2 pt 5 dt 2 title 'mean completion time'\n",
		terminal_for(out), out, title, dat, dat);
	fclose(g);
	return run_gnuplot(gp, out);
}

static int cmd_plot(int argc, char **argv)
{
	const char *in = NULL, *out = NULL, *title = NULL;
	bool util = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o"))
			out = opt_val(argc, argv, &i);
		else if (!strcmp(argv[i], "--title"))
			title = opt_val(argc, argv, &i);
		else if (!strcmp(argv[i], "--util"))
			util = true;
		else if (argv[i][0] != '-' && !in)
			in = argv[i];
		else
			in = NULL, i = argc;
	}
	if (!in || !out) {
		fprintf(stderr, "usage: mmkit prof plot FILE.csv -o FILE.png|svg [--title T]\n"
				"       mmkit prof plot --util FILE.dat -o FILE.png|svg   (columns: N util completion_s)\n");
		return 2;
	}
	if (!have_gnuplot()) {
		fprintf(stderr, "mmkit prof plot: gnuplot not found (apt-get install gnuplot-nox)\n");
		return 1;
	}
	int err = util ? plot_util(in, out, title ? title : "CPU utilisation vs N") : plot_faults(in, out, title, NULL, 0);
	return err < 0 ? mmk_tool_fail("prof plot", err) : 0;
}

/* ---- run ------------------------------------------------------------------------ */
static int cmd_run(int argc, char **argv)
{
	double rate = 20;
	const char *csv = NULL, *png = NULL;
	unsigned flags = 0;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if (!strcmp(argv[i], "--rate"))
			rate = atof(opt_val(argc, argv, &i));
		else if (!strcmp(argv[i], "--csv"))
			csv = opt_val(argc, argv, &i);
		else if (!strcmp(argv[i], "--plot"))
			png = opt_val(argc, argv, &i);
		else if (!strcmp(argv[i], "--children"))
			flags |= MMK_PROF_ADD_CHILDREN;
		else if (argv[i][0] == '-')
			i = argc + 1;
		else
			break;
	}
	if (i >= argc || rate < 0.1 || rate > 10000) {
		fprintf(stderr, "usage: mmkit prof run [--rate HZ] [--csv FILE|-] [--plot FILE.png] [--children] -- CMD ARGS...\n");
		return 2;
	}
	char tmpcsv[64] = "";
	if (png && !csv) { /* a plot needs the series: keep it in a temp file */
		snprintf(tmpcsv, sizeof tmpcsv, "/tmp/mmkit-prof-run-%d.csv", (int)getpid());
		csv = tmpcsv;
	}
	catch_signals();
	signal(SIGINT, SIG_IGN); /* the terminal's ^C goes to the command; we follow it */
	session s;
	int err = session_open(&s, rate, csv, flags);
	if (err < 0)
		return mmk_tool_fail("prof run", err);
	const char *base = strrchr(argv[i], '/');
	err = session_spawn(&s, argv + i, base ? base + 1 : argv[i]);
	if (err < 0) {
		session_close(&s);
		return mmk_tool_fail("prof run: start", err);
	}
	err = session_loop(&s);
	FILE *out = csv && !strcmp(csv, "-") ? stderr : stdout;
	fprintf(out, "# mmkit prof run: %.0f Hz, %.3f s\n", rate, s.end_s);
	print_summary(out, &s);
	int st = s.p[0].status;
	session_close(&s);
	if (png) {
		if (!have_gnuplot())
			fprintf(stderr, "mmkit prof run: gnuplot not found; no plot\n");
		else if ((err = plot_faults(csv, png, "mmkit prof run", NULL, 0)) < 0)
			mmk_tool_fail("prof run: plot", err);
		else
			fprintf(out, "plot: %s\n", png);
	}
	if (tmpcsv[0])
		unlink(tmpcsv);
	if (err < 0)
		return 1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- case studies ------------------------------------------------------------------ */
typedef struct env_setup {
	char swapfile[4200];
	bool swap_on;
	char cgdir[4200];
	char procs[4300];
	bool cg;
	char blkdir[4200];       /* blkio cgroup throttling the swap device */
	char blkprocs[4300];
	bool blk;
	char note[12288];
} env_setup;

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, s, strlen(s));
	int err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}

static void env_restore(env_setup *e)
{
	if (e->blk) {
		rmdir(e->blkdir);
		e->blk = false;
	}
	if (e->cg) {
		rmdir(e->cgdir);
		e->cg = false;
	}
	if (e->swap_on) {
		swapoff(e->swapfile);
		e->swap_on = false;
	}
	if (e->swapfile[0]) {
		unlink(e->swapfile);
		e->swapfile[0] = 0;
	}
}

/* The first active swap area's path (/proc/swaps), or "". */
static void first_swap(char *out, size_t len)
{
	char buf[4096];
	out[0] = 0;
	FILE *f = fopen("/proc/swaps", "r");
	if (!f)
		return;
	if (fgets(buf, sizeof buf, f) && fgets(buf, sizeof buf, f)) {
		buf[strcspn(buf, " \t\n")] = 0;
		snprintf(out, len, "%s", buf);
	}
	fclose(f);
}

static bool swap_active(void)
{
	char buf[4096];
	FILE *f = fopen("/proc/swaps", "r");
	if (!f)
		return false;
	int lines = 0;
	while (fgets(buf, sizeof buf, f))
		lines++;
	fclose(f);
	return lines > 1;
}

/* As root: a swap file (unless swap exists) and a memory cgroup limited to
 * limit_mb.  Every step is recorded in e so env_restore undoes exactly it. */
static void env_prepare(env_setup *e, long swap_mb, long limit_mb, long iops, bool want)
{
	memset(e, 0, sizeof *e);
	if (!want) {
		snprintf(e->note, sizeof e->note, "no swap/cgroup set up (--no-swap): major faults cannot appear");
		return;
	}
	if (limit_mb <= 0) {
		snprintf(e->note, sizeof e->note, "no memory limit (use --mem-limit MB for memory pressure)");
		return;
	}
	if (geteuid() != 0) {
		snprintf(e->note, sizeof e->note,
			 "not root: no swap and no memory limit set up, so major faults cannot appear");
		return;
	}
	char what[10240] = "";
	if (swap_active()) {
		snprintf(what, sizeof what, "existing swap used");
	} else {
		/* on disk (/var/tmp): swap files cannot live on tmpfs */
		snprintf(e->swapfile, sizeof e->swapfile, "/var/tmp/mmkit-case-swap-%d", (int)getpid());
		char cmd[20000];
		snprintf(cmd, sizeof cmd,
			 "rm -f '%s' && fallocate -l %ldM '%s' && chmod 600 '%s' && mkswap '%s' >/dev/null 2>&1",
			 e->swapfile, swap_mb, e->swapfile, e->swapfile, e->swapfile);
		if (system(cmd) != 0) {
			snprintf(what, sizeof what, "swap file could not be created");
			unlink(e->swapfile);
			e->swapfile[0] = 0;
		} else if (swapon(e->swapfile, 0) < 0) {
			snprintf(what, sizeof what, "swapon failed (%s)", strerror(errno));
			unlink(e->swapfile);
			e->swapfile[0] = 0;
		} else {
			e->swap_on = true;
			snprintf(what, sizeof what, "swap file %s (%ld MiB) enabled", e->swapfile, swap_mb);
		}
	}
	size_t wl = strlen(what);
	if (limit_mb > 0) {
		char lim[64];
		snprintf(lim, sizeof lim, "%lld", (long long)limit_mb << 20);
		struct stat st;
		if (stat("/sys/fs/cgroup/memory/memory.limit_in_bytes", &st) == 0) { /* cgroup v1 */
			snprintf(e->cgdir, sizeof e->cgdir, "/sys/fs/cgroup/memory/mmkit-case-%d", (int)getpid());
			if (mkdir(e->cgdir, 0755) == 0) {
				e->cg = true;
				char p[4400];
				snprintf(p, sizeof p, "%s/memory.limit_in_bytes", e->cgdir);
				if (write_str(p, lim) < 0)
					env_restore(e), e->cg = false;
				snprintf(e->procs, sizeof e->procs, "%s/cgroup.procs", e->cgdir);
			}
		} else if (stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0) { /* v2 */
			snprintf(e->cgdir, sizeof e->cgdir, "/sys/fs/cgroup/mmkit-case-%d", (int)getpid());
			if (mkdir(e->cgdir, 0755) == 0) {
				e->cg = true;
				char p[4400];
				snprintf(p, sizeof p, "%s/memory.max", e->cgdir);
				if (write_str(p, lim) < 0)
					rmdir(e->cgdir), e->cg = false;
				snprintf(e->procs, sizeof e->procs, "%s/cgroup.procs", e->cgdir);
			}
		}
		snprintf(what + wl, sizeof what - wl, "; %s", e->cg ? "" : "memory cgroup could not be set up");
		if (e->cg) {
			wl = strlen(what);
			snprintf(what + wl, sizeof what - wl, "memory cgroup %s limited to %ld MiB", e->cgdir, limit_mb);
		}
	}
	char swapdev[4096] = "";
	if (iops > 0) /* the swap area in use: ours, or the first active one */
		first_swap(swapdev, sizeof swapdev);
	if (iops > 0 && swapdev[0]) { /* emulate a slow (seed-era) disk for swap I/O */
		struct stat st;
		char rule[64], p[4400];
		dev_t dev = 0;
		wl = strlen(what);
		if (stat("/sys/fs/cgroup/blkio/blkio.throttle.read_iops_device", &st) == 0 && stat(swapdev, &st) == 0) {
			dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
			snprintf(e->blkdir, sizeof e->blkdir, "/sys/fs/cgroup/blkio/mmkit-case-%d", (int)getpid());
			snprintf(rule, sizeof rule, "%u:%u %ld", major(dev), minor(dev), iops);
			if (mkdir(e->blkdir, 0755) == 0) {
				e->blk = true;
				snprintf(p, sizeof p, "%s/blkio.throttle.read_iops_device", e->blkdir);
				int r1 = write_str(p, rule);
				snprintf(p, sizeof p, "%s/blkio.throttle.write_iops_device", e->blkdir);
				int r2 = write_str(p, rule);
				if (r1 < 0 || r2 < 0) {
					rmdir(e->blkdir);
					e->blk = false;
				}
				snprintf(e->blkprocs, sizeof e->blkprocs, "%s/cgroup.procs", e->blkdir);
			}
		}
		if (e->blk)
			snprintf(what + wl, sizeof what - wl, "; swap device %u:%u throttled to %ld IOPS (blkio cgroup %s)",
				 major(dev), minor(dev), iops, e->blkdir);
		else
			snprintf(what + wl, sizeof what - wl, "; swap I/O throttling not available");
	} else if (iops > 0) {
		wl = strlen(what);
		snprintf(what + wl, sizeof what - wl, "; swap I/O throttling not available (no swap)");
	}
	snprintf(e->note, sizeof e->note, "%s (all undone at exit)", what);
}

typedef struct work_args {
	char b[4][32];
	char m[2];
	char *av[12];
} work_args;

static void work_argv(work_args *w, const char *exe, long mb, char mode, long acc, long iters, long period_ms)
{
	snprintf(w->b[0], sizeof w->b[0], "%ld", mb);
	snprintf(w->b[1], sizeof w->b[1], "%ld", acc);
	snprintf(w->b[2], sizeof w->b[2], "%ld", iters);
	snprintf(w->b[3], sizeof w->b[3], "%ld", period_ms);
	w->m[0] = mode;
	w->m[1] = 0;
	char **av = w->av;
	int k = 0;
	av[k++] = (char *)exe;
	av[k++] = "work";
	av[k++] = w->b[0];
	av[k++] = w->m;
	av[k++] = w->b[1];
	av[k++] = "--iterations";
	av[k++] = w->b[2];
	av[k++] = "--period-ms";
	av[k++] = w->b[3];
	av[k++] = "--no-register";
	av[k] = NULL;
}

typedef struct work_spec {
	long mb;
	char mode;
	long acc;
} work_spec;

/* Run several work programs concurrently under one sampler. */
static int run_group(const char *exe, const work_spec *w, size_t n, long iters, long period_ms, const char *csv,
		     env_setup *env, session *s)
{
	int err = session_open(s, 20, csv, 0);
	if (err < 0)
		return err;
	s->cgroup_procs[0] = env->cg ? env->procs : NULL;
	s->cgroup_procs[1] = env->blk ? env->blkprocs : NULL;
	for (size_t i = 0; i < n && !err; i++) {
		work_args wa;
		char label[64];
		work_argv(&wa, exe, w[i].mb, w[i].mode, w[i].acc, iters, period_ms);
		snprintf(label, sizeof label, "work %ld %c %ld", w[i].mb, w[i].mode, w[i].acc);
		err = session_spawn(s, wa.av, label);
	}
	if (err < 0)
		return err;
	return session_loop(s);
}

static int case1(const char *exe, const char *out, bool quick, env_setup *env)
{
	long mb = quick ? 64 : 1024, big = quick ? 5000 : 50000, small = quick ? 1000 : 10000;
	long iters = quick ? 4 : 20, period = quick ? 250 : 1000;
	work_spec pairs[2][2] = { { { mb, 'R', big }, { mb, 'R', small } }, { { mb, 'R', big }, { mb, 'L', small } } };
	printf("== case study 1: page-fault rates of two concurrent work programs (%s)\n", quick ? "quick" : "full");
	printf("   setup: %s\n", env->note);
	for (int k = 0; k < 2; k++) {
		char csv[4200], png[4200], title[256];
		snprintf(csv, sizeof csv, "%s/case1_pair%d.csv", out, k + 1);
		snprintf(png, sizeof png, "%s/case1_pair%d.png", out, k + 1);
		snprintf(title, sizeof title, "case 1, pair %d: work %ld R %ld + work %ld %c %ld", k + 1, mb, big, mb,
			 pairs[k][1].mode, small);
		session s;
		int err = run_group(exe, pairs[k], 2, iters, period, csv, env, &s);
		if (err < 0) {
			session_close(&s);
			return err;
		}
		printf("-- pair %d (%.1f s)\n", k + 1, s.end_s);
		print_summary(stdout, &s);
		label_map lm[2] = { { s.p[0].pid, s.p[0].label }, { s.p[1].pid, s.p[1].label } };
		double r0 = (double)(s.p[0].fin.minflt + s.p[0].fin.majflt) / (s.p[0].end_s - s.p[0].start_s);
		double r1 = (double)(s.p[1].fin.minflt + s.p[1].fin.majflt) / (s.p[1].end_s - s.p[1].start_s);
		printf("   interpretation: %s faults at %.0f/s, %s at %.0f/s (ratio %.1f); completion %.1f s vs %.1f s\n",
		       s.p[0].label, r0, s.p[1].label, r1, r1 > 0 ? r0 / r1 : 0, s.p[0].end_s - s.p[0].start_s,
		       s.p[1].end_s - s.p[1].start_s);
		if (!have_gnuplot())
			printf("   plot skipped: gnuplot not found\n");
		else if ((err = plot_faults(csv, png, title, lm, 2)) == 0)
			printf("   plot: %s\n   data: %s\n", png, csv);
		session_close(&s); /* after the plot: lm points into s */
		if (err < 0)
			return err;
	}
	printf("   reading: random access over %ld MiB faults on nearly every access until the region is resident,\n"
	       "   so fault counts grow with the access rate; the locality program touches a 1 MiB window that\n"
	       "   moves slowly, so it faults far less for the same number of accesses.\n", mb);
	return 0;
}

static int case2(const char *exe, const char *out, bool quick, env_setup *env)
{
	static const long full_n[] = { 1, 5, 11, 16, 20, 22 };
	static const long quick_n[] = { 1, 2, 4, 6 };
	const long *ns = quick ? quick_n : full_n;
	size_t nn = quick ? 4 : 6;
	long mb = quick ? 32 : 200, acc = quick ? 8000 : 10000, iters = quick ? 3 : 20, period = quick ? 200 : 1000;
	printf("== case study 2: total CPU utilisation of N copies of work %ld R %ld (%s)\n", mb, acc,
	       quick ? "quick" : "full");
	printf("   setup: %s\n", env->note);
	char dat[4200], png[4200];
	snprintf(dat, sizeof dat, "%s/case2_util.dat", out);
	snprintf(png, sizeof png, "%s/case2_util.png", out);
	FILE *d = fopen(dat, "w");
	if (!d)
		return -errno;
	fprintf(d, "# N total_util mean_completion_s minflt majflt\n");
	printf("   %4s %10s %14s %12s %12s %10s\n", "N", "util", "completion_s", "minflt", "majflt", "exact");
	double best = 0, ut[8] = {0}, comps[8] = {0};
	unsigned long long majs[8] = {0};
	long bestn = 0;
	for (size_t k = 0; k < nn && !g_stop; k++) {
		work_spec w[32];
		for (long i = 0; i < ns[k]; i++)
			w[i] = (work_spec){ mb, 'R', acc };
		char csv[4200];
		snprintf(csv, sizeof csv, "%s/case2_n%ld.csv", out, ns[k]);
		session s;
		int err = run_group(exe, w, (size_t)ns[k], iters, period, csv, env, &s);
		if (err < 0) {
			session_close(&s);
			fclose(d);
			return err;
		}
		double cpu = 0, comp = 0;
		unsigned long long mi = 0, ma = 0;
		bool exact = true;
		for (size_t i = 0; i < s.np; i++) {
			cpu += tv_s(s.p[i].ru.ru_utime) + tv_s(s.p[i].ru.ru_stime);
			comp += s.p[i].end_s - s.p[i].start_s;
			mi += s.p[i].fin.minflt;
			ma += s.p[i].fin.majflt;
			exact &= s.p[i].exact_min && s.p[i].exact_maj;
		}
		comp /= (double)s.np;
		double util = s.end_s > 0 ? cpu / s.end_s : 0;
		ut[k] = util;
		comps[k] = comp;
		majs[k] = ma;
		if (util > best)
			best = util, bestn = ns[k];
		fprintf(d, "%ld %.6f %.3f %llu %llu\n", ns[k], util, comp, mi, ma);
		printf("   %4ld %10.4f %14.2f %12llu %12llu %10s\n", ns[k], util, comp, mi, ma, exact ? "yes" : "NO");
		fflush(stdout);
		session_close(&s);
	}
	fclose(d);
	/* where does the curve collapse: first N after the peak with < 70 % of it */
	long collapse = 0;
	double cut = 0;
	bool after = false;
	for (size_t k = 0; k < nn; k++) {
		if (ns[k] == bestn)
			after = true;
		else if (after && ut[k] < 0.7 * best) {
			collapse = ns[k];
			cut = ut[k];
			break;
		}
	}
	long majn = 0;
	for (size_t k = 0; k < nn && !majn; k++)
		if (majs[k] > 100 * (unsigned long long)ns[k])
			majn = ns[k];
	if (majn)
		printf("   major faults appear from N = %ld (the working sets exceed the memory limit); mean completion "
		       "time goes from %.2f s (N = %ld) to %.2f s (N = %ld).\n",
		       majn, comps[0], ns[0], comps[nn - 1], ns[nn - 1]);
	else
		printf("   no significant major faults (%s).\n",
		       env->cg ? "the working sets fit the limit" : "no swap/memory limit");
	printf("   interpretation: utilisation peaks at %.3f CPUs with N = %ld; ", best, bestn);
	if (collapse)
		printf("it collapses at N = %ld (%.3f CPUs): the working sets exceed memory and the processes wait "
		       "on major faults (thrashing).\n", collapse, cut);
	else
		printf("no collapse in this range (%s).\n",
		       majn ? (env->blk ? "the faulting processes spend CPU on reclaim and swap-in"
					: "the faulting processes spend CPU on reclaim and swap-in, and swap I/O on this "
					  "disk is fast, so utilisation keeps rising while the work gets slower; "
					  "--slow-disk 150 emulates the seed's hard disk")
			    : env->cg ? "memory was not exhausted" : "no memory limit: no thrashing");
	if (!have_gnuplot()) {
		printf("   plot skipped: gnuplot not found\n");
		return 0;
	}
	char title[128];
	snprintf(title, sizeof title, "case 2: N x work %ld R %ld", mb, acc);
	int err = plot_util(dat, png, title);
	if (err < 0)
		return err;
	printf("   plot: %s\n   data: %s\n", png, dat);
	return 0;
}

static int cmd_case(int argc, char **argv)
{
	int which = 0;
	const char *out = ".";
	bool quick = false, want_env = true;
	long limit = -1, swap_mb = -1, iops = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--out"))
			out = opt_val(argc, argv, &i);
		else if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--no-swap"))
			want_env = false;
		else if (!strcmp(argv[i], "--mem-limit"))
			limit = strtol(opt_val(argc, argv, &i), NULL, 10);
		else if (!strcmp(argv[i], "--swap-mb"))
			swap_mb = strtol(opt_val(argc, argv, &i), NULL, 10);
		else if (!strcmp(argv[i], "--slow-disk"))
			iops = strtol(opt_val(argc, argv, &i), NULL, 10);
		else if (!strcmp(argv[i], "1") || !strcmp(argv[i], "2"))
			which = argv[i][0] - '0';
		else
			which = -1, i = argc;
	}
	if (which <= 0) {
		fprintf(stderr, "usage: mmkit prof case-study 1|2 [--out DIR] [--quick] [--no-swap] [--mem-limit MB] "
				"[--swap-mb MB] [--slow-disk IOPS]\n");
		return 2;
	}
	if (mkdir(out, 0755) < 0 && errno != EEXIST)
		return mmk_tool_fail(out, -errno);
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		return mmk_tool_fail("readlink /proc/self/exe", -errno);
	exe[n] = 0;
	char absout[4096];
	if (!realpath(out, absout))
		return mmk_tool_fail(out, -errno);
	if (limit < 0) /* case 2: 16 x 200 MiB just exceed 3 GiB; case 1 runs unconstrained */
		limit = which == 2 ? (quick ? 96 : 3072) : 0;
	if (swap_mb < 0)
		swap_mb = quick ? 512 : 4096;
	catch_signals();
	env_setup env;
	env_prepare(&env, swap_mb, limit, iops, want_env);
	int err = which == 1 ? case1(exe, absout, quick, &env) : case2(exe, absout, quick, &env);
	env_restore(&env);
	if (g_stop)
		fprintf(stderr, "mmkit prof case-study: interrupted; environment restored\n");
	if (err < 0)
		return mmk_tool_fail("prof case-study", err);
	return g_stop ? 130 : 0;
}

/* ---- dispatch ------------------------------------------------------------------------ */
int mmk_cmd_prof(int argc, char **argv)
{
	static const char *usage_text =
		"usage: mmkit prof SUBCOMMAND ...\n"
		"  daemon [--rate HZ] [--records N] [--max-procs N] [--stat-only] [--no-perf] [--no-rt] [--detach] [--dir DIR]\n"
		"  register PID | unregister PID | list | stats | stop      [--dir DIR]\n"
		"  monitor [--follow] [--csv] [--mp3] [--dir DIR]\n"
		"  run [--rate HZ] [--csv FILE|-] [--plot FILE.png] [--children] -- CMD ARGS...\n"
		"  plot FILE.csv -o FILE.png|svg [--title T]    plot --util FILE.dat -o FILE.png\n"
		"  case-study 1|2 [--out DIR] [--quick] [--no-swap] [--mem-limit MB] [--swap-mb MB] [--slow-disk IOPS]\n"
		"See mmkit-prof(1).\n";
	if (argc < 2) {
		fputs(usage_text, stderr);
		return 2;
	}
	const char *c = argv[1];
	argc--, argv++;
	if (!strcmp(c, "daemon"))
		return cmd_daemon(argc, argv);
	if (!strcmp(c, "register"))
		return cmd_pid(argc, argv, true);
	if (!strcmp(c, "unregister"))
		return cmd_pid(argc, argv, false);
	if (!strcmp(c, "list"))
		return cmd_list(argc, argv);
	if (!strcmp(c, "stats"))
		return cmd_stats(argc, argv);
	if (!strcmp(c, "stop"))
		return cmd_stop(argc, argv);
	if (!strcmp(c, "monitor"))
		return cmd_monitor(argc, argv);
	if (!strcmp(c, "run"))
		return cmd_run(argc, argv);
	if (!strcmp(c, "plot"))
		return cmd_plot(argc, argv);
	if (!strcmp(c, "case-study"))
		return cmd_case(argc, argv);
	if (!strcmp(c, "--help") || !strcmp(c, "help")) {
		fputs(usage_text, stdout);
		return 0;
	}
	fputs(usage_text, stderr);
	return 2;
}
