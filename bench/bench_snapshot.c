/*
 * bench/bench_snapshot.c - the snapshot engine against fork and the seed
 * (000 mmcontext).
 *
 * Table "seed": the seed's harness.  Whole process (mmcontext), a buffer of
 * 4*2^n bytes malloc'd and initialised, then ops of {mmcontext(0); write one
 * int at a random place; mmcontext(1)}; beside it the fork loop {fork; the
 * child writes one int and exits; the parent waits}.  Columns: the seed's
 * published ops/s for fork and for its in-kernel mmcontext, both measured
 * here, the speedups.  The seed's figures were measured on other hardware:
 * the fork column measured here is the like-for-like baseline.
 *
 * Table "region": the native API on one region of SIZE bytes, a save point
 * kept, cycles of {write one byte in every page (full) or in 1 % of the
 * pages; mmk_snap_restore}, per backend (auto, copy, async, lazy, mprotect), beside a
 * plain memcpy of the region and a fork per cycle.  Also the memory held.
 *
 * Each figure is the median of REPS runs of at least T seconds each.
 * CSV on stdout; progress on stderr.
 */
#include "bench_util.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <mmkit.h>

static double g_t = 0.15; /* seconds per run */
static int g_reps = 3;


/* ---- the seed harness ------------------------------------------------------------------ */

/* one operation of the seed harness on a buffer of nints ints */
typedef struct harness {
	int *buf;
	size_t nints;
	mmk_snap *s; /* native-API variant */
	int ops;
} harness;

/* median over g_reps runs of >= g_t seconds of op(h), in ops/s; the clock
 * is read every `batch` operations; an op returning < 0 ends the program */
static double rate(int (*op)(harness *), harness *h, int batch)
{
	double v[16];
	for (int r = 0; r < g_reps; r++) {
		size_t n = 0;
		double t0 = bench_now(), t;
		do {
			for (int k = 0; k < batch; k++, n++, h->ops++)
				if (op(h) < 0) {
					fprintf(stderr, "operation failed: %s\n", strerror(errno));
					exit(1);
				}
		} while ((t = bench_now() - t0) < g_t);
		v[r] = (double)n / t;
	}
	return bench_median(v, g_reps);
}

/* {save; write one int; restore} through the seed's interface */
static int op_mmcontext(harness *h)
{
	if (mmcontext(0) != 0)
		return -1;
	h->buf[rnd() % h->nints] = h->ops;
	return mmcontext(1);
}

/* the same through the native API (save, write, restore, drop) */
static int op_native(harness *h)
{
	int rc = mmk_snap_save(h->s);
	h->buf[rnd() % h->nints] = h->ops;
	if (rc >= 0)
		rc = mmk_snap_restore(h->s);
	if (rc >= 0)
		rc = mmk_snap_drop(h->s);
	if (rc < 0)
		errno = rc > -4096 ? -rc : EIO;
	return rc;
}

/* the fork baseline: the child writes one int and exits, the parent waits */
static int op_fork(harness *h)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		h->buf[rnd() % h->nints] = 1;
		_exit(0);
	}
	return waitpid(pid, NULL, 0) < 0 ? -1 : 0;
}

/* The native API on a process-scope object created with
 * MMK_SNAP_LAZY_LARGE (big anonymous mappings tracked lazily: restore cost
 * independent of their size; opt-in because the kernel cannot write into a
 * lazily tracked page the program has not written since the save).  Runs in
 * a child that never used mmcontext(): two process-scope objects cannot
 * share a process. */
static double lazy_large_ops(int n)
{
	int fds[2];
	if (pipe(fds) < 0)
		return 0;
	pid_t pid = fork();
	if (pid == 0) {
		harness h = { .nints = ((size_t)4 << n) / sizeof(int) };
		h.buf = malloc(h.nints * sizeof(int));
		for (size_t k = 0; k < h.nints; k++)
			h.buf[k] = (int)k;
		mmk_snap_opts o = { .flags = MMK_SNAP_LAZY_LARGE };
		double res = 0;
		if (mmk_snap_create(&h.s, &o) == 0 && mmk_snap_add_process(h.s) == 0)
			res = rate(op_native, &h, 64);
		if (write(fds[1], &res, sizeof res) != sizeof res)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	double res = 0;
	if (read(fds[0], &res, sizeof res) != sizeof res)
		res = 0;
	close(fds[0]);
	waitpid(pid, NULL, 0);
	return res;
}

static void seed_table(bench_mode mode)
{
	static const struct {
		int n;
		double fork, ctx; /* the seed's Table, ops/s */
	} rows[] = { { 5, 14192, 539896 }, { 10, 14196, 365425 }, { 15, 8272, 31245 },
		     { 20, 513, 791 },     { 25, 17, 20 },         { 28, 0, 0 } };
	printf("table,n,bytes,seed_fork_ops,seed_mmcontext_ops,fork_ops,mmkit_ops,"
	       "mmkit_vs_fork,mmkit_vs_seed_mmcontext,backends,mmkit_lazy_large_ops,lazy_large_vs_fork\n");
	size_t nrows = sizeof rows / sizeof rows[0];
	double forks[16] = { 0 }, lazies[16] = { 0 };
	/* the fork baseline first, before mmkit has mapped anything, so that
	 * mmkit's own memory cannot slow the forks down */
	for (size_t i = 0; i < nrows; i++) {
		int n = rows[i].n;
		if (mode == BENCH_QUICK && n > 20)
			continue;
		size_t bytes = (size_t)4 << n, nints = bytes / sizeof(int);
		bench_progress("seed harness n=%d: fork", n);
		int *buf = malloc(bytes);
		for (size_t k = 0; k < nints; k++)
			buf[k] = (int)k;
		forks[i] = rate(op_fork, &(harness){ .buf = buf, .nints = nints }, 1);
		free(buf);
	}
	for (size_t i = 0; i < nrows; i++) {
		if (mode == BENCH_QUICK && rows[i].n > 20)
			continue;
		bench_progress("seed harness n=%d: native API, MMK_SNAP_LAZY_LARGE", rows[i].n);
		lazies[i] = lazy_large_ops(rows[i].n);
	}
	for (size_t i = 0; i < nrows; i++) {
		int n = rows[i].n;
		if (mode == BENCH_QUICK && n > 20)
			continue;
		size_t bytes = (size_t)4 << n, nints = bytes / sizeof(int);
		bench_progress("seed harness n=%d: mmcontext", n);
		int *buf = malloc(bytes);
		for (size_t k = 0; k < nints; k++)
			buf[k] = (int)k;
		double f = forks[i];
		double m = rate(op_mmcontext, &(harness){ .buf = buf, .nints = nints }, 64);
		char seedf[32] = "", seedm[32] = "", vs_seed[32] = "";
		if (rows[i].fork > 0) {
			snprintf(seedf, sizeof seedf, "%.0f", rows[i].fork);
			snprintf(seedm, sizeof seedm, "%.0f", rows[i].ctx);
			snprintf(vs_seed, sizeof vs_seed, "%.1f", m / rows[i].ctx);
		}
		/* which backends the process scope used */
		mmk_snap_stats st = { 0 };
		char be[64] = "";
		if (mmk_snap_stats_get(mmk_context(), &st) == 0)
			snprintf(be, sizeof be, "copy=%zu async=%zu lazy=%zu", st.regions_by_backend[1],
				 st.regions_by_backend[2], st.regions_by_backend[3]);
		printf("seed,%d,%zu,%s,%s,%.0f,%.0f,%.1f,%s,%s,%.0f,%.1f\n", n, bytes, seedf, seedm, f, m,
		       m / f, vs_seed, be, lazies[i], lazies[i] / f);
		fflush(stdout);
		free(buf);
	}
}

/* ---- region API grid ------------------------------------------------------------------------ */

static void write_pattern(char *p, size_t len, bool full, unsigned salt)
{
	size_t pages = (len + 4095) / 4096;
	if (len < 4096) {
		p[salt % len] = (char)salt;
		return;
	}
	if (full) {
		for (size_t i = 0; i < pages; i++)
			p[i * 4096 + (salt & 63)] = (char)salt;
	} else {
		size_t n = pages / 100 ? pages / 100 : 1;
		for (size_t k = 0; k < n; k++)
			p[(rnd() % pages) * 4096 + (salt & 63)] = (char)salt;
	}
}

static double run_cycles(char *p, size_t len, bool full, mmk_snap *s, char *copy, int kind)
{
	double v[16];
	for (int r = 0; r < g_reps; r++) {
		size_t cycles = 0;
		double t0 = bench_now(), t;
		do {
			write_pattern(p, len, full, (unsigned)cycles);
			if (kind == 0) {
				if (mmk_snap_restore(s) < 0)
					exit(1);
			} else if (kind == 1 && copy) {
				memcpy(p, copy, len);
			} else {
				pid_t pid = fork();
				if (pid == 0) {
					write_pattern(p, len, full, 7);
					_exit(0);
				}
				waitpid(pid, NULL, 0);
			}
			cycles++;
		} while ((t = bench_now() - t0) < g_t || cycles < 3);
		v[r] = (double)cycles / t;
	}
	return bench_median(v, g_reps);
}

static void region_table(bench_mode mode)
{
	size_t sizes[] = { 32, 4096, 32768, 1 << 20, 32 << 20, 256 << 20 };
	size_t nsizes = mode == BENCH_QUICK ? 4 : 6;
	static const mmk_snap_backend bes[] = { MMK_SNAP_AUTO, MMK_SNAP_COPY, MMK_SNAP_ASYNC, MMK_SNAP_LAZY,
						MMK_SNAP_MPROTECT };
	printf("table,bytes,pattern,variant,cycles_per_s,bytes_held,vs_memcpy,vs_best_backend,target\n");
	enum { NB = sizeof bes / sizeof bes[0] };
	for (size_t si = 0; si < nsizes; si++) {
		size_t len = sizes[si];
		for (int full = 1; full >= 0; full--) {
			const char *pat = full ? "full" : "1pct";
			const char *target = "";
			if (len <= 4096)
				target = ">=15M";
			else if (len == 32768)
				target = full ? "" : ">=4M";
			else if (len == 1 << 20 && !full)
				target = ">=350k";
			else if (len == 32 << 20 && !full)
				target = ">=10k";
			if (full && len > 4096)
				target = ">=0.67x memcpy";
			size_t maplen = (len + 4095) / 4096 * 4096;
			char *p = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			memset(p, 1, maplen);
			char *copy = malloc(len);
			memcpy(copy, p, len);
			bench_progress("region %zu bytes %s: memcpy", len, pat);
			double base = run_cycles(p, len, full, NULL, copy, 1);
			double c[NB] = { 0 };
			size_t held[NB] = { 0 };
			char label[NB][32], err[NB][64];
			double best = 0;
			for (size_t b = 0; b < NB; b++) {
				const char *name = mmk_snap_backend_name(bes[b]);
				bench_progress("region %zu bytes %s: %s", len, pat, name);
				snprintf(label[b], sizeof label[b], "%s", name);
				err[b][0] = 0;
				mmk_snap *s;
				mmk_snap_opts o = { .backend = bes[b] };
				int rc = mmk_snap_create(&s, &o);
				if (rc == 0)
					rc = mmk_snap_add(s, p, len);
				if (rc == 0)
					rc = mmk_snap_save(s);
				if (rc < 0) {
					snprintf(err[b], sizeof err[b], "n/a: %s", mmk_strerror(rc));
					mmk_snap_destroy(s);
					continue;
				}
				c[b] = run_cycles(p, len, full, s, NULL, 0);
				mmk_snap_stats st;
				mmk_snap_stats_get(s, &st);
				held[b] = st.bytes_held;
				if (bes[b] == MMK_SNAP_AUTO)
					snprintf(label[b], sizeof label[b], "auto=%s", st.backend);
				else if (c[b] > best)
					best = c[b];
				mmk_snap_destroy(s);
			}
			printf("region,%zu,%s,memcpy,%.0f,%zu,1.00,,\n", len, pat, base, len);
			for (size_t b = 0; b < NB; b++) {
				if (err[b][0]) {
					printf("region,%zu,%s,%s,,,,,%s (%s)\n", len, pat, label[b], target, err[b]);
					continue;
				}
				char vb[16] = "";
				if (bes[b] == MMK_SNAP_AUTO && best > 0)
					snprintf(vb, sizeof vb, "%.2f", c[b] / best);
				printf("region,%zu,%s,%s,%.0f,%zu,%.2f,%s,%s\n", len, pat, label[b], c[b],
				       held[b], c[b] / base, vb, bes[b] == MMK_SNAP_AUTO ? target : "");
			}
			if (mode != BENCH_QUICK && len <= (32 << 20)) {
				bench_progress("region %zu bytes %s: fork", len, pat);
				double f = run_cycles(p, len, full, NULL, NULL, 2);
				printf("region,%zu,%s,fork,%.0f,,%.2f,,\n", len, pat, f, f / base);
			}
			fflush(stdout);
			free(copy);
			munmap(p, maplen);
		}
	}
}

int main(int argc, char **argv)
{
	bench_mode mode = bench_parse_mode(argc, argv);
	if (mode == BENCH_QUICK) {
		g_t = 0.05;
		g_reps = 1;
	} else if (mode == BENCH_FULL) {
		g_t = 1.0;
		g_reps = 5;
	}
	printf("# snapshot engine (seed 000 mmcontext); %s; runs of >= %.2f s, median of %d\n",
	       mmk_features_get()->kernel_release, g_t, g_reps);
	seed_table(mode);
	printf("\n");
	region_table(mode);
	bench_progress("");
	return 0;
}
