/*
 * bench/bench_sfork.c - seed 001: sfork against SysV shm + fork (the seed's
 * baseline), POSIX shm, a temporary file (the seed's file-backed variant),
 * and mmkit's sfork lazy / populated / with huge pages.
 *
 * The seed's four workloads at 4 MiB, 64 MiB and 1 GiB (--quick: 4 and
 * 64 MiB): abundant (parent and child write every page), sparse (each
 * writes 3 pages), random (each writes a random quarter of the pages, in
 * random order, seeded differently per process) and multiprocess (5
 * processes: the parent and 4 children, a random quarter each).  One write
 * of 8 bytes per touched 4 KiB page.  The time runs from before the call
 * that creates the region until the last child is reaped; unmapping happens
 * after.  Each repetition runs every variant once, in a fresh random order, and
 * the table reports medians.
 *
 * Huge pages: when neither shmem THP nor a hugetlb pool is allowed and the
 * benchmark runs as root, it switches
 * /sys/kernel/mm/transparent_hugepage/shmem_enabled to "advise" for its own
 * run, restores the old value at exit (also on SIGINT/SIGTERM) and says so;
 * --no-switch keeps the system as it is (the huge column is then "n/a",
 * with the reason).
 *
 * CSV on stdout (times in ms), notes as '#' lines, progress on stderr.
 * The seed gives no numbers (its figures are not in the text), so the
 * seed column is "n/a".
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mmkit.h>

enum { W_ABUNDANT, W_SPARSE, W_RANDOM, W_MULTI, NW };
static const char *wname[NW] = { "abundant", "sparse", "random", "multiprocess" };

enum { V_SYSV, V_POSIX, V_FILE, V_LAZY, V_POP, V_HUGE, NV };
static const char *vname[NV] = { "sysv_shm", "posix_shm", "tmpfile", "mmkit_lazy", "mmkit_populate",
				 "mmkit_huge" };

static const char *tmpdir = "/var/tmp";

/* ---- huge-page setting (restored at exit) ------------------------------------ */
#define SHMEM_ENABLED "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
static char saved_mode[32];
static volatile sig_atomic_t switched;

static bool read_mode(const char *path, char *out, size_t len)
{
	char buf[256];
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	bool ok = fgets(buf, sizeof buf, f) != NULL;
	fclose(f);
	char *l = ok ? strchr(buf, '[') : NULL, *r = l ? strchr(l, ']') : NULL;
	if (!l || !r || (size_t)(r - l) >= len)
		return false;
	memcpy(out, l + 1, (size_t)(r - l - 1));
	out[r - l - 1] = 0;
	return true;
}

static bool write_mode(const char *mode)
{
	int fd = open(SHMEM_ENABLED, O_WRONLY);
	if (fd < 0)
		return false;
	bool ok = write(fd, mode, strlen(mode)) == (ssize_t)strlen(mode);
	close(fd);
	return ok;
}

static void restore_mode(void)
{
	if (switched) {
		write_mode(saved_mode);
		switched = 0;
	}
}

static void on_signal(int sig)
{
	restore_mode();
	signal(sig, SIG_DFL);
	raise(sig);
}

static bool mode_allows(const char *m)
{
	return !strcmp(m, "always") || !strcmp(m, "within_size") || !strcmp(m, "advise") ||
	       !strcmp(m, "force");
}

static long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, key, strlen(key)))
			v = strtol(line + strlen(key), NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* ---- workloads ------------------------------------------------------------------ */
static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* A random bijection on [0, 2^k): odd multiply, xor-shift, add, twice. */
typedef struct perm {
	unsigned k;
	uint64_t mask, m1, m2, a1, a2;
} perm;

static void perm_init(perm *p, uint64_t n, uint64_t seed)
{
	p->k = 0;
	while ((1ULL << p->k) < n)
		p->k++;
	p->mask = (1ULL << p->k) - 1;
	p->m1 = rng(&seed) | 1;
	p->m2 = rng(&seed) | 1;
	p->a1 = rng(&seed);
	p->a2 = rng(&seed);
}

static uint64_t perm_at(const perm *p, uint64_t x)
{
	unsigned s = p->k / 2 + 1;
	x = (x * p->m1 + p->a1) & p->mask;
	x ^= x >> s;
	x = (x * p->m2 + p->a2) & p->mask;
	x ^= x >> s;
	return x;
}

static void work(int w, volatile char *m, size_t len, uint64_t seed)
{
	size_t pages = len / 4096;
	switch (w) {
	case W_ABUNDANT:
		for (size_t i = 0; i < pages; i++)
			*(volatile uint64_t *)(m + i * 4096) = i;
		break;
	case W_SPARSE:
		for (int i = 0; i < 3; i++)
			*(volatile uint64_t *)(m + (rng(&seed) % pages) * 4096) = seed;
		break;
	case W_RANDOM:
	case W_MULTI: {
		perm p;
		perm_init(&p, pages, seed);
		size_t want = pages / 4, done = 0;
		for (uint64_t x = 0; done < want; x++) {
			uint64_t pg = perm_at(&p, x);
			if (pg >= pages)
				continue; /* cycle-walk (pages not a power of two) */
			*(volatile uint64_t *)(m + pg * 4096) = x;
			done++;
		}
		break;
	}
	}
}

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Run one (variant, workload, size); returns ms, or -1 when unavailable,
 * -2 on error (message on stderr). */
static double run_one(int v, int w, size_t len, uint64_t seed)
{
	int nchild = w == W_MULTI ? 4 : 1;
	pid_t kids[4];
	int nk = 0;
	char *m = NULL;
	mmk_sfork_region r;
	int shmid = -1;

	double t0 = now_ns();
	pid_t pid;
	switch (v) {
	case V_SYSV: {
		shmid = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
		if (shmid < 0)
			goto err;
		m = shmat(shmid, NULL, 0);
		shmctl(shmid, IPC_RMID, NULL);
		if (m == (void *)-1)
			goto err;
		pid = fork();
		break;
	}
	case V_POSIX:
	case V_FILE: {
		char name[256];
		int fd;
		if (v == V_POSIX) {
			snprintf(name, sizeof name, "/bench_sfork.%d", (int)getpid());
			fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
			if (fd >= 0)
				shm_unlink(name);
		} else {
			snprintf(name, sizeof name, "%s/bench_sfork.%d.tmp", tmpdir, (int)getpid());
			fd = open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
			if (fd >= 0)
				unlink(name);
		}
		if (fd < 0)
			goto err;
		if (ftruncate(fd, (off_t)len) != 0) {
			close(fd);
			goto err;
		}
		m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		if (m == MAP_FAILED)
			goto err;
		pid = fork();
		break;
	}
	case V_LAZY:
	case V_POP: {
		void *a;
		pid = sfork(len, CHILD_WRITE | PARENT_WRITE | (v == V_POP ? SFORK_POPULATE : 0), &a);
		if (pid < 0)
			goto err;
		m = a;
		break;
	}
	case V_HUGE:
	default: {
		memset(&r, 0, sizeof r);
		r.len = len;
		r.flags = MMK_SFORK_TWO_WAY;
		r.huge = MMK_HUGE_REQUIRED;
		r.name = "bench";
		pid = mmk_sfork(&r, 1);
		if (pid == MMK_ENOFEAT)
			return -1;
		if (pid < 0) {
			errno = -pid;
			goto err;
		}
		m = r.addr;
		break;
	}
	}
	if (pid < 0)
		goto err;
	if (pid == 0) {
		work(w, m, len, seed * 31 + 1);
		_exit(0);
	}
	kids[nk++] = pid;
	for (int i = 1; i < nchild; i++) {
		pid = fork();
		if (pid == 0) {
			work(w, m, len, seed * 31 + 1 + (uint64_t)i);
			_exit(0);
		}
		if (pid > 0)
			kids[nk++] = pid;
	}
	work(w, m, len, seed * 31);
	int bad = 0;
	for (int i = 0; i < nk; i++) {
		int st;
		while (waitpid(kids[i], &st, 0) < 0 && errno == EINTR)
			;
		bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	double t1 = now_ns();
	if (v == V_SYSV)
		shmdt(m);
	else if (v == V_HUGE)
		mmk_shared_release(&r);
	else
		munmap(m, len);
	if (bad || nk != nchild) {
		fprintf(stderr, "bench_sfork: %s/%s: a child failed\n", vname[v], wname[w]);
		return -2;
	}
	return (t1 - t0) / 1e6;
err:
	fprintf(stderr, "bench_sfork: %s/%s/%zu: %s\n", vname[v], wname[w], len, strerror(errno));
	return -2;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void fmt(char *buf, size_t len, double v)
{
	if (v == -1)
		snprintf(buf, len, "n/a");
	else if (v < 0)
		snprintf(buf, len, "error");
	else
		snprintf(buf, len, "%.3f", v);
}

int main(int argc, char **argv)
{
	int mode = 1; /* 0 quick, 1 default, 2 full */
	static double t[NV][64];
	bool no_switch = false;
	const char *only = NULL; /* run one workload (diagnostics) */
	int reps_override = 0;   /* force the repetition count (1..63) */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			mode = 0;
		else if (!strcmp(argv[i], "--full"))
			mode = 2;
		else if (!strcmp(argv[i], "--no-switch"))
			no_switch = true;
		else if (!strcmp(argv[i], "--tmpdir") && i + 1 < argc)
			tmpdir = argv[++i];
		else if (!strcmp(argv[i], "--only") && i + 1 < argc)
			only = argv[++i];
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps_override = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--quick|--full] [--no-switch] [--tmpdir DIR] [--only WORKLOAD] [--reps N]\n", argv[0]);
			return 2;
		}
	}
	size_t sizes[] = { 4UL << 20, 64UL << 20, 1UL << 30 };
	int nsizes = mode == 0 ? 2 : 3;
	/* repetitions per size: quick / default / full */
	static const int reps_tab[3][3] = { { 3, 3, 0 }, { 31, 7, 3 }, { 41, 15, 7 } };

	/* Huge pages: allowed now?  Otherwise, as root, switch shmem THP to
	 * advise for this run. */
	char thp[32] = "absent", thp2m[32] = "absent";
	read_mode(SHMEM_ENABLED, thp, sizeof thp);
	read_mode("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled", thp2m, sizeof thp2m);
	long pool = meminfo("HugePages_Free:");
	bool per_size_blocks = strcmp(thp2m, "absent") && strcmp(thp2m, "inherit") && !mode_allows(thp2m);
	bool thp_ok = strcmp(thp2m, "absent") && strcmp(thp2m, "inherit") ? mode_allows(thp2m) : mode_allows(thp);
	char huge_note[512] = "";
	if (!thp_ok && pool < 512) {
		if (!no_switch && geteuid() == 0 && !per_size_blocks && strcmp(thp, "absent") &&
		    write_mode("advise")) {
			snprintf(saved_mode, sizeof saved_mode, "%s", thp);
			switched = 1;
			atexit(restore_mode);
			signal(SIGINT, on_signal);
			signal(SIGTERM, on_signal);
			signal(SIGHUP, on_signal);
			thp_ok = true;
			snprintf(huge_note, sizeof huge_note,
				 "# huge pages: switched %s from '%s' to 'advise' for this run (restored at exit)",
				 SHMEM_ENABLED, saved_mode);
		} else {
			snprintf(huge_note, sizeof huge_note,
				 "# huge pages NOT allowed: shmem_enabled='%s' (2048kB: '%s'), hugetlb pool free=%ld%s; "
				 "an administrator enables them with 'echo advise > %s' or 'echo N > /proc/sys/vm/nr_hugepages'",
				 thp, thp2m, pool,
				 no_switch ? " (--no-switch)" : geteuid() ? " (not root: not switching)" : "",
				 SHMEM_ENABLED);
		}
	} else {
		snprintf(huge_note, sizeof huge_note,
			 "# huge pages allowed: shmem_enabled='%s' (2048kB: '%s'), hugetlb pool free=%ld", thp,
			 thp2m, pool);
	}
	fprintf(stderr, "%s\n", huge_note + 2);

	printf("workload,size_mib,reps");
	for (int v = 0; v < NV; v++)
		printf(",%s_ms", vname[v]);
	printf(",lazy_vs_sysv,populate_vs_sysv,huge_speedup_vs_sysv,seed_figure\n");

	uint64_t seed = 0x5f0c4b1d2e3a4958ULL;
	int status = 0;
	int fails_default = 0, fails_huge = 0, fails_sparse = 0, huge_rows = 0;
	char notes[64][160];
	int nnotes = 0;
	double t_start = now_ns();
	for (int si = 0; si < nsizes; si++) {
		size_t len = sizes[si];
		for (int w = 0; w < NW; w++) {
			if (only && strcmp(only, wname[w]))
				continue;
			/* sparse is cheap (except populating 1 GiB) and noisy:
			 * it gets the small-size repetition count at every size */
			int reps = reps_override > 0 && reps_override < 64 ? reps_override
				   : w == W_SPARSE ? reps_tab[mode][0] : reps_tab[mode][si];
			double med[NV];
			/* warm-up (not recorded): first faults of the page cache,
			 * shm ids, lazy kernel allocations */
			if (len <= (64UL << 20))
				for (int v = 0; v < NV; v++)
					run_one(v, w, len, seed);
			uint64_t order_seed = seed ^ (len * 131 + (uint64_t)w);
			/* A variant with a cheap base run (< 150 ms) gets up to
			 * 3x the repetitions when the row has only 3: its
			 * median then resists the occasional slow run (a loaded
			 * machine, guest memory the host reclaimed) at little cost. */
			int maxrep = reps_override || reps > 3 ? reps : reps * 3;
			int nrep[NV] = { 0 };
			for (int rep = 0; rep < maxrep; rep++) {
				/* a fresh random order each repetition: a variant's
				 * after-effects (the tmpfile's journal work, freeing
				 * 1 GiB) must not always land on the same neighbour */
				int order[NV];
				for (int k = 0; k < NV; k++)
					order[k] = k;
				for (int k = NV - 1; k > 0; k--) {
					int j = (int)(rng(&order_seed) % (uint64_t)(k + 1));
					int x = order[k];
					order[k] = order[j];
					order[j] = x;
				}
				for (int k = 0; k < NV; k++) {
					int v = order[k];
					if (rep >= reps) { /* extra: only if one base run was cheap */
						double mn = 1e300;
						for (int i = 0; i < reps; i++)
							mn = t[v][i] >= 0 && t[v][i] < mn ? t[v][i] : mn;
						if (mn >= 150)
							continue;
					}
					t[v][nrep[v]++] = run_one(v, w, len, seed + (uint64_t)rep * 977);
				}
			}
			for (int v = 0; v < NV; v++) {
				fprintf(stderr, "  %s %s %zu MiB:", wname[w], vname[v], len >> 20);
				for (int i = 0; i < nrep[v]; i++)
					fprintf(stderr, " %.3f", t[v][i]);
				fprintf(stderr, "\n");
			}
			for (int v = 0; v < NV; v++) {
				bool err = false, na = false;
				for (int i = 0; i < nrep[v]; i++) {
					err |= t[v][i] == -2;
					na |= t[v][i] == -1;
				}
				med[v] = err ? -2 : na ? -1 : median(t[v], nrep[v]);
				if (err)
					status = 1;
			}
			char c[NV][32], r1[32], r2[32], r3[32];
			for (int v = 0; v < NV; v++)
				fmt(c[v], sizeof c[v], med[v]);
			double lazy = med[V_SYSV] > 0 && med[V_LAZY] > 0 ? med[V_LAZY] / med[V_SYSV] : -1;
			double popr = med[V_SYSV] > 0 && med[V_POP] > 0 ? med[V_POP] / med[V_SYSV] : -1;
			double huge = med[V_SYSV] > 0 && med[V_HUGE] > 0 ? med[V_SYSV] / med[V_HUGE] : -1;
			snprintf(r1, sizeof r1, lazy < 0 ? "n/a" : "%.2f", lazy);
			snprintf(r2, sizeof r2, popr < 0 ? "n/a" : "%.2f", popr);
			snprintf(r3, sizeof r3, huge < 0 ? "n/a" : "%.2fx", huge);
			printf("%s,%zu,%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,n/a\n", wname[w], len >> 20, reps, c[0], c[1],
			       c[2], c[3], c[4], c[5], r1, r2, r3);
			fflush(stdout);
			fprintf(stderr, "[%5.1f s] %s %zu MiB done\n", (now_ns() - t_start) / 1e9, wname[w],
				len >> 20);
			/* targets */
			if (lazy > 1.10 && nnotes < 64) {
				fails_default++;
				snprintf(notes[nnotes++], sizeof notes[0],
					 "# target missed: mmkit default %.2fx SysV on %s %zu MiB (limit 1.10)", lazy,
					 wname[w], len >> 20);
			}
			if (w == W_SPARSE && lazy > 2.0)
				fails_sparse++;
			if (huge > 0 && len >= (64UL << 20) && w != W_SPARSE) {
				double want = w == W_ABUNDANT ? 5.0 : 2.0;
				huge_rows++;
				if (huge < want && nnotes < 64) {
					fails_huge++;
					snprintf(notes[nnotes++], sizeof notes[0],
						 "# target missed: huge mode %.2fx faster than SysV on %s %zu MiB (target %.0fx)",
						 huge, wname[w], len >> 20, want);
				}
			}
		}
	}
	printf("%s\n", huge_note);
	printf("# targets: mmkit default (lazy, huge=auto) <= 1.10x SysV on every row: %s; "
	       "auto on sparse <= 2x SysV: %s; huge >= 5x (abundant) / >= 2x (random, multiprocess) at >= 64 MiB: %s\n",
	       fails_default ? "MISSED" : "met", fails_sparse ? "MISSED" : "met",
	       huge_rows == 0 ? "not measurable (huge pages not allowed)" : fails_huge ? "MISSED" : "met");
	for (int i = 0; i < nnotes; i++)
		printf("%s\n", notes[i]);
	printf("# time: create region -> last child reaped, median of reps (variants under 150 ms: up to 3x reps);"
	       " 8-byte write per touched 4 KiB page;"
	       " tmpfile in %s; seed figures: none in the seed text (n/a)\n", tmpdir);
	restore_mode();
	if (saved_mode[0])
		fprintf(stderr, "huge pages: restored %s to '%s'\n", SHMEM_ENABLED, saved_mode);
	return status;
}
