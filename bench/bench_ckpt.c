/*
 * bench/bench_ckpt.c - region checkpoints (seeds 003 + 004) beside the
 * usual answer, fork-based BGSAVE, and beside dd, in the same run.
 *
 * A region of SIZE bytes (1 GiB by default, 64 MiB with --quick) is written
 * by a "program" thread at a steady rate (RATE random page writes per
 * second, 8 bytes each) while it is checkpointed to a file on the same file
 * system:
 *   dd        the region's bytes written with 1 MiB write()s + one
 *             fdatasync (what `dd bs=1M conv=fdatasync` does; the same data,
 *             because this virtual disk writes zeros several times faster)
 *   fork      BGSAVE: fork(); the child writes the region with 1 MiB
 *             write()s + fdatasync and exits; the parent keeps writing
 *   mmkit     mmk_ckpt_start() (the writer threads quiesced for the call,
 *             as the API asks) and the background writer; full image, and
 *             deltas while the program keeps writing between checkpoints
 * for 4 KiB pages (MADV_NOHUGEPAGE) and, with --full, transparent huge
 * pages (MADV_HUGEPAGE).
 *
 * The incremental target (delta after 1 % of the pages changed <= 5 % of a
 * full image's time) is measured at SIZE as back-to-back pairs with the
 * program idle (parked): a full image, then 1 % of the pages changed, then
 * the delta (exactly those pages), each timed from mmk_ckpt_start() to
 * durable, re-protect passes included; the ratio is the median of the
 * per-pair ratios (a pair sees the same disk weather), with where the
 * delta's time went (prepare, instant, scan, copy, write, fdatasync,
 * rename + directory fsync, recheck).  A second table repeats the pair at
 * 16 and 64 MiB (and 256 MiB with --full), where fixed costs weigh more.
 *
 * Columns: start_ms - how long the call that starts the checkpoint blocks
 * its caller: fork(), or for mmkit the instant (the part of
 * mmk_ckpt_start() run with the program quiesced through opts.quiesce);
 * prepare_ms - mmkit's re-protect passes before the instant, while the
 * program runs; stall_ms - the program thread's longest delay of one write
 * during the checkpoint (beyond its schedule: the pause the program sees);
 * seconds - start to durable; MB/s and pct_of_dd - image bytes / seconds
 * vs dd's; extra_mib - memory the checkpoint added: fork: the pages the
 * parent wrote while the child lived (each one a copy-on-write copy) plus
 * the copied page tables; mmkit: the most pages held aside at once
 * (measured) plus its 2 MiB write buffer and 4 B of checksum per page;
 * written_mib - distinct pages the program wrote during the checkpoint.
 * Each figure is the median of REPS runs.  Seed figure: Redis measures
 * fork at 9-23 ms per GB of memory on common hosts (issue 7).
 *
 * Environment: MMK_BENCH_DIR (default /var/tmp) for the files.
 */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <mmkit.h>

#define PG 4096u

static size_t g_size = 1ul << 30;
static int g_reps = 3;
static double g_rate = 50000; /* page writes per second */
static char g_dir[512];

/* ---- the program: a thread writing at a steady rate ------------------------------------ */

typedef struct prog {
	char *mem;
	size_t npages;
	atomic_int quit, park_req, parked;
	atomic_int window;          /* 1: record stalls and pages written */
	_Atomic double max_stall;   /* seconds */
	uint8_t *touched;           /* pages written in the window */
	atomic_size_t ntouched;
	atomic_ullong writes;
	uint64_t rng;
	double stall_at[64], stall_len[64]; /* MMK_BENCH_DEBUG: stalls > 0.5 ms */
	atomic_int nstall;
	double prev;  /* the loop's previous pass */
	bool niced;
	_Atomic double window_t0; /* gaps count from here */
} prog;

static bool g_debug;

static void *prog_thread(void *arg)
{
	prog *p = arg;
	/* other processes share this machine: nice -20 (when allowed) keeps
	 * them from taking CPU 0 away from the program for whole ticks */
	p->niced = setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -20) == 0;
	double next = bench_now();
	double dt = 1.0 / g_rate;
	p->prev = next;
	while (!atomic_load(&p->quit)) {
		if (atomic_load(&p->park_req) > 0) {
			/* parked time counts as a stall (it is the instant) */
			atomic_store(&p->parked, 1);
			while (atomic_load(&p->park_req) > 0 && !atomic_load(&p->quit))
				;
			atomic_store(&p->parked, 0);
		}
		/* a stall: the longest time between two passes of this loop
		 * (blocked in a fault, a lock, parked, or kept off the CPU) */
		double now = bench_now();
		double gap = now - (p->prev > p->window_t0 ? p->prev : p->window_t0);
		p->prev = now;
		if (atomic_load_explicit(&p->window, memory_order_relaxed)) {
			if (gap > atomic_load(&p->max_stall))
				atomic_store(&p->max_stall, gap);
			if (gap > 5e-4 && atomic_load(&p->nstall) < 64) {
				int k = atomic_fetch_add(&p->nstall, 1);
				if (k < 64) {
					p->stall_at[k] = now - gap;
					p->stall_len[k] = gap;
				}
			}
		}
		if (now < next)
			continue;
		p->rng ^= p->rng << 13;
		p->rng ^= p->rng >> 7;
		p->rng ^= p->rng << 17;
		size_t pg = p->rng % p->npages;
		uint64_t v = p->rng;
		memcpy(p->mem + pg * PG + (v >> 52) * 8 % PG, &v, 8);
		if (atomic_load_explicit(&p->window, memory_order_relaxed) && !p->touched[pg]) {
			p->touched[pg] = 1;
			atomic_fetch_add(&p->ntouched, 1);
		}
		atomic_fetch_add_explicit(&p->writes, 1, memory_order_relaxed);
		next += dt;
		if (now - next > 0.01)
			next = now; /* after a long stall, do not burst to catch up */
	}
	return NULL;
}

static void window_open(prog *p)
{
	memset(p->touched, 0, p->npages);
	atomic_store(&p->nstall, 0);
	atomic_store(&p->ntouched, 0);
	atomic_store(&p->max_stall, 0.0);
	atomic_store(&p->window_t0, bench_now());
	atomic_store(&p->window, 1);
}

/* nestable: the program thread runs again when every park is undone */
static void park(prog *p, bool on)
{
	if (on) {
		atomic_fetch_add(&p->park_req, 1);
		while (!atomic_load(&p->parked))
			;
	} else {
		atomic_fetch_sub(&p->park_req, 1);
	}
}

static void park_hook(void *arg, int stop)
{
	park(arg, stop != 0);
}

/* ---- baselines --------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t len)
{
	for (size_t off = 0; off < len;) {
		size_t n = len - off < (1u << 20) ? len - off : (1u << 20);
		ssize_t w = write(fd, p + off, n);
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	return fdatasync(fd);
}

static double run_dd(const char *mem)
{
	char path[600];
	static int seq;
	snprintf(path, sizeof path, "%s/dd-%d.out", g_dir, seq++);
	double t0 = bench_now();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		perror("dd open");
		exit(1);
	}
	if (write_all(fd, mem, g_size) < 0) {
		perror("dd write");
		exit(1);
	}
	close(fd);
	double t = bench_now() - t0;
	return t; /* files stay until the phase ends: no discard of freed
		     blocks (this fs is mounted -o discard) during a measurement */
}

typedef struct result {
	double start_ms, stall_ms, secs, bytes, extra, written, prep_ms;
	/* where mmkit's time went (ms): prepare, instant, scan, copy, write,
	 * fdatasync, rename + directory fsync, recheck */
	double ph[8];
	double pages; /* pages in the image */
} result;

static void phases(result *r, const mmk_ckpt_stats *st)
{
	r->ph[0] = st->last_prepare_us / 1e3;
	r->ph[1] = st->last_start_us / 1e3;
	r->ph[2] = st->last_phase.scan_us / 1e3;
	r->ph[3] = st->last_phase.copy_us / 1e3;
	r->ph[4] = st->last_phase.write_us / 1e3;
	r->ph[5] = st->last_phase.sync_us / 1e3;
	r->ph[6] = st->last_phase.publish_us / 1e3;
	r->ph[7] = st->last_phase.recheck_us / 1e3;
}

static result run_fork(prog *p)
{
	result r = { 0 };
	char path[600];
	static int seq;
	snprintf(path, sizeof path, "%s/bgsave-%d.out", g_dir, seq++);
	window_open(p);
	double t0 = bench_now();
	pid_t pid = fork();
	double t1 = bench_now();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || write_all(fd, p->mem, g_size) < 0)
			_exit(1);
		close(fd);
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	double t2 = bench_now();
	atomic_store(&p->window, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "bgsave child failed\n");
		exit(1);
	}
	r.start_ms = (t1 - t0) * 1e3;
	r.stall_ms = atomic_load(&p->max_stall) * 1e3;
	r.secs = t2 - t0;
	r.bytes = (double)g_size;
	r.written = (double)atomic_load(&p->ntouched) * PG;
	r.extra = r.written + (double)g_size / 512; /* COW copies + page tables */
	return r;
}

/* the handle quiesces the program itself (opts.quiesce = park_hook), after
 * re-protecting dirty pages while it runs */
static result run_mmkit(prog *p, mmk_ckpt *c, unsigned flags, bool quiet_writer)
{
	result r = { 0 };
	window_open(p);
	if (quiet_writer)
		park(p, true);
	double t0 = bench_now();
	int g = mmk_ckpt_start(c, flags);
	double t1 = bench_now();
	if (g <= 0) {
		fprintf(stderr, "mmk_ckpt_start: %s\n", mmk_strerror(g));
		exit(1);
	}
	int rc = mmk_ckpt_wait(c);
	double t2 = bench_now();
	if (quiet_writer)
		park(p, false);
	atomic_store(&p->window, 0);
	if (rc < 0) {
		fprintf(stderr, "mmk_ckpt_wait: %s\n", mmk_strerror(rc));
		exit(1);
	}
	mmk_ckpt_stats st;
	mmk_ckpt_stats_get(c, &st);
	if (g_debug) {
		fprintf(stderr, "mmkit: call %.3f ms (prepare %.3f, instant %.3f, copied %zu), total %.3f s\n",
			(t1 - t0) * 1e3, st.last_prepare_us / 1e3, st.last_start_us / 1e3, st.last_instant_copies,
			t2 - t0);
		fprintf(stderr, "  phases ms: scan %.3f copy %.3f write %.3f sync %.3f publish %.3f recheck %.3f (pages %zu)\n",
			st.last_phase.scan_us / 1e3, st.last_phase.copy_us / 1e3, st.last_phase.write_us / 1e3,
			st.last_phase.sync_us / 1e3, st.last_phase.publish_us / 1e3, st.last_phase.recheck_us / 1e3,
			st.last_pages);
		for (int k = 0; k < atomic_load(&p->nstall) && k < 64; k++)
			fprintf(stderr, "  stall at +%.3f ms: %.3f ms\n", (p->stall_at[k] - t0) * 1e3,
				p->stall_len[k] * 1e3);
	}
	r.start_ms = st.last_start_us / 1e3; /* the instant, program quiesced */
	r.prep_ms = st.last_prepare_us / 1e3;
	r.stall_ms = atomic_load(&p->max_stall) * 1e3;
	if (quiet_writer)
		r.stall_ms = r.start_ms; /* the writer was parked: count only the call */
	r.secs = t2 - t0;
	r.bytes = (double)st.last_bytes;
	r.written = (double)atomic_load(&p->ntouched) * PG;
	r.extra = (double)st.last_peak_held * PG + (2u << 20) + 4.0 * (double)st.last_pages;
	phases(&r, &st);
	r.pages = (double)st.last_pages;
	return r;
}

/* ---- table ----------------------------------------------------------------------------------- */

static double med(result *v, int n, size_t field)
{
	double x[32];
	for (int i = 0; i < n; i++)
		x[i] = *(double *)((char *)&v[i] + field);
	return bench_median(x, n);
}

static double g_dd_secs;

static void row(const char *name, const char *page, result *v, int n, double fork_stall, const char *seed)
{
	double start = med(v, n, offsetof(result, start_ms)), stall = med(v, n, offsetof(result, stall_ms));
	double secs = med(v, n, offsetof(result, secs)), bytes = med(v, n, offsetof(result, bytes));
	double extra = med(v, n, offsetof(result, extra)), wr = med(v, n, offsetof(result, written));
	double mbps = bytes / secs / 1e6, ddmbps = (double)g_size / g_dd_secs / 1e6;
	char ratio[32] = "";
	if (fork_stall > 0)
		snprintf(ratio, sizeof ratio, "%.3f", stall / fork_stall);
	double prep = med(v, n, offsetof(result, prep_ms));
	printf("%s,%s,%zu,%.3f,%.3f,%.1f,%.3f,%.0f,%.0f,%.1f,%.1f,%s,%s\n", name, page, g_size >> 20, start, stall,
	       prep, secs, mbps, 100 * mbps / ddmbps, extra / 1048576, wr / 1048576, seed, ratio);
	fflush(stdout);
}

static void phase_note(const char *pname, const char *what, result *v, int n)
{
	double x[8];
	for (int k = 0; k < 8; k++)
		x[k] = med(v, n, offsetof(result, ph) + (size_t)k * sizeof(double));
	printf("# %s %s phases, ms (medians): prepare %.3f, instant %.3f, scan %.3f, copy+checksum %.3f, "
	       "open+write %.3f, fdatasync %.3f, rename+dir fsync %.3f, recheck %.3f\n",
	       pname, what, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]);
}

/* ---- the 1 % delta vs full at several sizes (program idle) ------------------------------- */

static const char g_grid_hdr[] =
	"size_mib,pages_changed,full_ms,delta_ms,delta_pct_of_full,target,prepare_ms,instant_ms,scan_ms,"
	"copy_ms,write_ms,fdatasync_ms,publish_ms,recheck_ms";

typedef struct pair_res {
	size_t size;
	double full_ms, delta_ms, pages, ph[8];
	double pct; /* median over repetitions of delta / full (each pair run back to back) */
} pair_res;

static pair_res g_big; /* the main pass's pair (size 0: none) */

static pair_res pair_store(size_t size, result *fq, result *d1, int n)
{
	pair_res g = { .size = size };
	g.full_ms = med(fq, n, offsetof(result, secs)) * 1e3;
	g.delta_ms = med(d1, n, offsetof(result, secs)) * 1e3;
	g.pages = med(d1, n, offsetof(result, pages));
	for (int k = 0; k < 8; k++)
		g.ph[k] = med(d1, n, offsetof(result, ph) + (size_t)k * sizeof(double));
	double q[32];
	for (int r = 0; r < n; r++)
		q[r] = 100 * d1[r].secs / fq[r].secs;
	g.pct = bench_median(q, n);
	return g;
}

static void pair_row(const pair_res *g)
{
	double pct = g->pct;
	printf("%zu,%.0f,%.3f,%.3f,%.2f,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", g->size >> 20, g->pages,
	       g->full_ms, g->delta_ms, pct, pct <= 5 ? "met" : "NOT met", g->ph[0], g->ph[1], g->ph[2], g->ph[3],
	       g->ph[4], g->ph[5], g->ph[6], g->ph[7]);
	fflush(stdout);
}

static void noop_quiesce(void *arg, int stop)
{
	(void)arg;
	(void)stop;
}

/* full then 1 % delta of a fresh region of `size` bytes, `reps` times,
 * through the same path as the main pass (quiesce hook: re-protect passes,
 * then the instant); nothing else writes the region */
static pair_res grid_pair(size_t size, int reps)
{
	pair_res g = { .size = size };
	size_t np = size / PG;
	char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(m, size, MADV_NOHUGEPAGE);
	for (size_t o = 0; o < size; o += 64)
		*(uint64_t *)(m + o) = o * 0x9E3779B97F4A7C15ull;
	char dir[700];
	snprintf(dir, sizeof dir, "%s/grid-%zu", g_dir, size >> 20);
	mmk_ckpt *c;
	if (mmk_ckpt_create(&c, dir, &(mmk_ckpt_opts){ .max_chain = 1000, .quiesce = noop_quiesce }) < 0 ||
	    mmk_ckpt_add(c, "region", m, size) < 0) {
		fprintf(stderr, "grid: cannot create the checkpointer\n");
		exit(1);
	}
	double fv[32], dv[32], pv[32], ph[8][32], q[32];
	for (int r = 0; r < reps; r++) {
		mmk_ckpt_stats st;
		double t0 = bench_now();
		int rc = mmk_ckpt_start(c, MMK_CKPT_FULL | MMK_CKPT_WAIT);
		double t1 = bench_now();
		size_t n = np / 100;
		for (size_t k = 0; k < n; k++)
			m[((k * 7919 + 13) % np) * PG + 64] ^= 1;
		double t2 = bench_now();
		if (rc > 0)
			rc = mmk_ckpt_start(c, MMK_CKPT_WAIT);
		double t3 = bench_now();
		if (rc <= 0) {
			fprintf(stderr, "grid: mmk_ckpt_start: %s\n", mmk_strerror(rc));
			exit(1);
		}
		mmk_ckpt_stats_get(c, &st);
		result tmp;
		phases(&tmp, &st);
		fv[r] = (t1 - t0) * 1e3;
		dv[r] = (t3 - t2) * 1e3;
		pv[r] = (double)st.last_pages;
		q[r] = 100 * dv[r] / fv[r];
		for (int k = 0; k < 8; k++)
			ph[k][r] = tmp.ph[k];
	}
	g.full_ms = bench_median(fv, reps);
	g.delta_ms = bench_median(dv, reps);
	g.pages = bench_median(pv, reps);
	g.pct = bench_median(q, reps);
	for (int k = 0; k < 8; k++)
		g.ph[k] = bench_median(ph[k], reps);
	mmk_ckpt_destroy(c);
	char cmd[800];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	(void)!system(cmd);
	munmap(m, size);
	return g;
}

static char *region(bool thp)
{
	char *m = mmap(NULL, g_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(m, g_size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	for (size_t o = 0; o < g_size; o += 64)
		*(uint64_t *)(m + o) = o * 0x9E3779B97F4A7C15ull;
	return m;
}

static double thp_fraction(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	double anon = 0, huge = 0;
	while (f && fgets(line, sizeof line, f)) {
		double v;
		if (sscanf(line, "Anonymous: %lf", &v) == 1)
			anon = v;
		if (sscanf(line, "AnonHugePages: %lf", &v) == 1)
			huge = v;
	}
	if (f)
		fclose(f);
	return anon > 0 ? huge / anon : 0;
}

static void change_pages(prog *p, double frac)
{
	size_t n = (size_t)((double)p->npages * frac);
	for (size_t k = 0; k < n; k++) {
		size_t pg = (k * 7919 + 13) % p->npages; /* distinct while n < npages */
		p->mem[pg * PG + 64] ^= 1;
	}
}

int main(int argc, char **argv)
{
	bench_mode mode = bench_parse_mode(argc, argv);
	g_debug = getenv("MMK_BENCH_DEBUG") != NULL;
	/* default (the main job's ~5 min budget): 1 GiB, 4 KiB pages, 2
	 * repetitions; --full adds the THP pass and 5 repetitions */
	bool thp_pass = false;
	if (mode == BENCH_QUICK) {
		g_size = 64ul << 20;
		g_reps = 2;
	} else if (mode == BENCH_FULL) {
		g_reps = 5;
		thp_pass = true;
	} else {
		g_reps = 2;
	}
	const char *base = getenv("MMK_BENCH_DIR");
	snprintf(g_dir, sizeof g_dir, "%s/mmk-bench-ckpt-%d", base ? base : "/var/tmp", (int)getpid());
	if (mkdir(g_dir, 0700) < 0) {
		perror(g_dir);
		return 1;
	}
	const mmk_features *f = mmk_features_get();
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	bool tracked = f->uffd && f->uffd_wp && f->uffd_sigbus;

	printf("case,page,region_mib,start_ms,stall_ms,prepare_ms,seconds,mb_per_s,pct_of_dd,extra_mib,written_mib,seed_fig,stall_vs_fork\n");
	printf("# stall: the program thread's longest time between two passes of its loop (blocked in a fault, a\n"
	       "# lock, parked for the instant, or kept off its CPU by kernel work such as TLB shoot-downs)\n");
	printf("# program thread: %.0f random page writes/s, alone on CPU 0 (%d CPUs); %d repetitions, medians; "
	       "files in %s\n", g_rate, ncpu, g_reps, base ? base : "/var/tmp");
	if (!tracked)
		printf("# no userfaultfd WP+SIGBUS here (%s): mmkit uses copy mode (pause ~ region size)\n",
		       strerror(f->uffd_errno));

	double ddv[32];
	const char *only = getenv("MMK_BENCH_PAGES"); /* 4k or thp: one pass only */
	if (!thp_pass && !only)
		printf("# huge pages (THP) pass: --full or MMK_BENCH_PAGES=thp\n");
	for (int pass = 0; pass < 2; pass++) {
		bool thp = pass == 1;
		const char *pname = thp ? "thp" : "4k";
		if (only ? strcmp(only, pname) != 0 : (thp && !thp_pass))
			continue;
		bool do_dd = g_dd_secs == 0; /* in the first pass that runs */
		bench_progress("%s: filling %zu MiB", pname, g_size >> 20);
		prog p = { 0 };
		p.mem = region(thp);
		p.npages = g_size / PG;
		p.touched = calloc(p.npages, 1);
		p.rng = 0x1234567 + (uint64_t)pass;
		double thpf = thp_fraction();
		usleep(1000);
		if (pass == 0)
			printf("# program thread nice -20: %s\n", p.niced ? "yes" : "no (not permitted)");
		/* the program thread alone on CPU 0; the rest (main, mmkit's
		 * writer thread, the fork child) on the others, so a stall is the
		 * checkpoint's doing and not the scheduler's */
		pthread_t th;
		pthread_create(&th, NULL, prog_thread, &p);
		if (ncpu >= 2) {
			cpu_set_t cs;
			CPU_ZERO(&cs);
			CPU_SET(0, &cs);
			pthread_setaffinity_np(th, sizeof cs, &cs);
			CPU_ZERO(&cs);
			for (int i = 1; i < ncpu && i < CPU_SETSIZE; i++)
				CPU_SET(i, &cs);
			sched_setaffinity(0, sizeof cs, &cs);
		}

		/* dd, fork, mmkit full: interleaved repetitions */
		result fk[32], full[32];
		char cdir[700];
		snprintf(cdir, sizeof cdir, "%s/ck-%s", g_dir, pname);
		mmk_ckpt *c;
		if (mmk_ckpt_create(&c, cdir,
				    &(mmk_ckpt_opts){ .max_chain = 1000, .quiesce = park_hook, .quiesce_arg = &p }) < 0)
			return 1;
		park(&p, true);
		double ta = bench_now();
		if (mmk_ckpt_add(c, "region", p.mem, g_size) < 0)
			return 1;
		double add_ms = (bench_now() - ta) * 1e3;
		park(&p, false);
		uint64_t order_rng = 0x9e3779b97f4a7c15ull + (uint64_t)pass;
		for (int r = 0; r < g_reps; r++) {
			/* a random order per repetition: no method always runs
			 * after the same one */
			int ord[3] = { 0, 1, 2 };
			for (int i = 2; i > 0; i--) {
				order_rng ^= order_rng << 13;
				order_rng ^= order_rng >> 7;
				order_rng ^= order_rng << 17;
				int j = (int)(order_rng % (uint64_t)(i + 1)), t = ord[i];
				ord[i] = ord[j];
				ord[j] = t;
			}
			for (int i = 0; i < 3; i++) {
				if (ord[i] == 0 && do_dd) {
					bench_progress("%s: rep %d/%d dd", pname, r + 1, g_reps);
					ddv[r] = run_dd(p.mem);
				} else if (ord[i] == 1) {
					bench_progress("%s: rep %d/%d fork", pname, r + 1, g_reps);
					fk[r] = run_fork(&p);
				} else if (ord[i] == 2) {
					bench_progress("%s: rep %d/%d mmkit full", pname, r + 1, g_reps);
					full[r] = run_mmkit(&p, c, MMK_CKPT_FULL, false);
				}
			}
		}
		if (do_dd) {
			g_dd_secs = bench_median(ddv, g_reps);
			printf("dd bs=1M conv=fdatasync,-,%zu,,,,%.3f,%.0f,100,,,,\n", g_size >> 20, g_dd_secs,
			       (double)g_size / g_dd_secs / 1e6);
		}
		/* control: the same program, no checkpoint, as long as a full
		 * one takes: the stall floor this machine gives anyway */
		result ctl[32];
		for (int r = 0; r < g_reps; r++) {
			bench_progress("%s: rep %d/%d control", pname, r + 1, g_reps);
			memset(&ctl[r], 0, sizeof ctl[r]);
			window_open(&p);
			usleep((useconds_t)(full[r].secs * 1e6));
			atomic_store(&p.window, 0);
			ctl[r].stall_ms = atomic_load(&p.max_stall) * 1e3;
			ctl[r].secs = full[r].secs;
			ctl[r].bytes = 0;
			ctl[r].written = (double)atomic_load(&p.ntouched) * PG;
		}
		row("control: no checkpoint", pname, ctl, g_reps, 0, "");
		double fork_stall = med(fk, g_reps, offsetof(result, stall_ms));
		row("fork BGSAVE", pname, fk, g_reps, 0, "9-23 ms/GB (Redis)");
		row("mmkit full", pname, full, g_reps, fork_stall, "");
		double full_secs = med(full, g_reps, offsetof(result, secs));
		double full_stall = med(full, g_reps, offsetof(result, stall_ms));
		double full_pct = 100 * ((double)g_size / full_secs) / ((double)g_size / g_dd_secs);
		double full_extra = med(full, g_reps, offsetof(result, extra));
		double full_wr = med(full, g_reps, offsetof(result, written));

		/* the incremental target: a full image, then a delta after 1 % of
		 * the pages changed, both with the program idle (parked), so that
		 * the delta holds exactly those pages and both are timed alike
		 * (mmk_ckpt_start to durable, including the re-protect passes) */
		result fq[32], d1[32];
		int preps = g_reps < 3 ? 3 : g_reps;
		for (int r = 0; r < preps; r++) {
			bench_progress("%s: rep %d/%d full + delta 1%%, program idle", pname, r + 1, preps);
			park(&p, true);
			(void)mmk_ckpt_prepare(c); /* what the program wrote since the last one */
			fq[r] = run_mmkit(&p, c, MMK_CKPT_FULL, true);
			change_pages(&p, 0.01);
			d1[r] = run_mmkit(&p, c, 0, true);
			park(&p, false);
		}
		row("mmkit full (program idle)", pname, fq, preps, 0, "");
		row("mmkit delta 1% changed", pname, d1, preps, 0, "");
		pair_res pr = pair_store(g_size, fq, d1, preps);
		if (!thp)
			g_big = pr;

		/* deltas back to back while the program keeps writing */
		result ds[32];
		for (int r = 0; r < g_reps; r++) {
			bench_progress("%s: rep %d/%d delta steady", pname, r + 1, g_reps);
			usleep(200000);
			ds[r] = run_mmkit(&p, c, 0, false);
		}
		row("mmkit delta steady writes", pname, ds, g_reps, fork_stall, "");
		double ds_stall = med(ds, g_reps, offsetof(result, stall_ms));
		printf("# %s: mmk_ckpt_add (protect the whole region once) %.2f ms; THP share of the region %.0f%%\n",
		       pname, add_ms, 100 * thpf);
		double full_start = med(full, g_reps, offsetof(result, start_ms));
		double ds_start = med(ds, g_reps, offsetof(result, start_ms));
		double fork_start = med(fk, g_reps, offsetof(result, start_ms));
		double ctl_stall = med(ctl, g_reps, offsetof(result, stall_ms));
		printf("# %s target pause <= 1 ms (program stopped for the instant): full %.3f ms, steady delta %.3f ms "
		       "(fork() %.3f ms): %s\n",
		       pname, full_start, ds_start, fork_start, full_start <= 1 && ds_start <= 1 ? "met" : "NOT met");
		printf("# %s longest stall of the program during the checkpoint: full %.3f ms, steady delta %.3f ms, "
		       "fork %.3f ms; with no checkpoint at all (control) %.3f ms\n",
		       pname, full_stall, ds_stall, fork_stall, ctl_stall);
		printf("# %s target extra memory <= pages written during it: %.1f MiB vs %.1f MiB written: %s\n",
		       pname, full_extra / 1048576, full_wr / 1048576, full_extra <= full_wr ? "met" : "NOT met");
		printf("# %s target throughput >= 80%% of dd: %.0f%%: %s\n", pname, full_pct,
		       full_pct >= 80 ? "met" : "NOT met");
		printf("# %s target delta(1%%) <= 5%% of full (%zu MiB, program idle for both): delta %.1f ms "
		       "(%.0f pages) / full %.1f ms (medians); delta/full per back-to-back pair, median of %d: %.1f%%: %s\n",
		       pname, g_size >> 20, pr.delta_ms, pr.pages, pr.full_ms, preps, pr.pct,
		       pr.pct <= 5 ? "met" : "NOT met");
		phase_note(pname, "delta(1%)", d1, preps);
		phase_note(pname, "full (program idle)", fq, preps);

		atomic_store(&p.quit, 1);
		pthread_join(th, NULL);
		mmk_ckpt_destroy(c);
		char cmd[1400];
		snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'/*.out", cdir, g_dir);
		(void)!system(cmd);
		munmap(p.mem, g_size);
		free(p.touched);
	}
	/* the same target at smaller sizes: fixed costs weigh more there */
	size_t gsz[] = { 16ul << 20, 64ul << 20, 256ul << 20 };
	int ngrid = mode == BENCH_FULL ? 3 : mode == BENCH_QUICK ? 1 : 2;
	int greps = mode == BENCH_FULL ? 11 : mode == BENCH_QUICK ? 3 : 7;
	printf("\n%s\n", g_grid_hdr);
	for (int i = 0; i < ngrid; i++) {
		if (gsz[i] >= g_size)
			break;
		bench_progress("grid: %zu MiB, %d repetitions", gsz[i] >> 20, greps);
		pair_res g = grid_pair(gsz[i], greps);
		pair_row(&g);
	}
	if (g_big.size)
		pair_row(&g_big);
	printf("# grid: a full image, then a delta after 1%% of the pages changed (4 KiB pages, program idle, "
	       "%d repetitions at the small sizes; per-pair ratio, medians)%s\n",
	       greps, g_big.size ? "; the last row is the main pass (its program thread parked)" : "");
	rmdir(g_dir);
	bench_progress("");
	return 0;
}
