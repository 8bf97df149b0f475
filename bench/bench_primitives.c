/*
 * bench/bench_primitives.c - the machine's price list: the kernel primitives
 * mmkit is built from, measured now, beside the figures in
 * shared/notes/linux-mechanisms.md (measured on "this machine class" when the
 * issues' targets were set).
 *
 * Every target in the other tables is a consequence of these costs: a
 * whole-process snapshot cycle is two PAGEMAP_SCAN walks and two statm
 * reads, a 1 %-dirty region cycle is a write fault per page plus a scan, a
 * profiler sample is a /proc read.  Where this machine is slower than the
 * notes' by a factor, targets derived from them move by about that factor;
 * the ratio column says by how much (measured / notes; > 1 = slower here).
 *
 * Each figure: median of 5 runs of a loop of N operations.  CSV on stdout.
 * --quick: fewer operations.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_util.h"
#include "sys/compat.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096UL
#define REPS 5

static int g_scale = 1; /* divides the operation counts (--quick) */

static void row(const char *what, double us, const char *notes_us)
{
	char ratio[32] = "";
	double n = notes_us[0] ? atof(notes_us) : 0;
	if (n > 0)
		snprintf(ratio, sizeof ratio, "%.2f", us / n);
	printf("primitive,%s,%.3f,%s,%s\n", what, us, notes_us, ratio);
	fflush(stdout);
}

/* ---- plain system calls and copies ------------------------------------------------- */

static double t_getppid(void)
{
	int n = 200000 / g_scale;
	double t0 = bench_now();
	for (int i = 0; i < n; i++)
		(void)getppid();
	return (bench_now() - t0) / n * 1e6;
}

/* n preads of a kept /proc file */
static double t_pread(const char *path, int n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char buf[1024];
	n /= g_scale;
	double t0 = bench_now();
	for (int i = 0; i < n; i++)
		if (pread(fd, buf, sizeof buf, 0) <= 0)
			break;
	double us = (bench_now() - t0) / n * 1e6;
	close(fd);
	return us;
}

static double t_statm(void)
{
	return t_pread("/proc/self/statm", 50000);
}

static double t_procstat(void)
{
	return t_pread("/proc/self/stat", 20000);
}

static double t_memcpy_page(void)
{
	static char a[PG], b[PG];
	int n = 1000000 / g_scale;
	double t0 = bench_now();
	for (int i = 0; i < n; i++) {
		a[i & 63] = (char)i;
		memcpy(b, a, PG);
		__asm__ volatile("" : : "r"(b) : "memory");
	}
	return (bench_now() - t0) / n * 1e6;
}

/* ---- faults ------------------------------------------------------------------------ */

static size_t fault_pages(void)
{
	return 8192 / (size_t)g_scale;
}

static double t_minor_fault(void)
{
	size_t np = fault_pages();
	char *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	madvise(p, np * PG, MADV_NOHUGEPAGE);
	double t0 = bench_now();
	for (size_t i = 0; i < np; i++)
		p[i * PG] = 1;
	double us = (bench_now() - t0) / (double)np * 1e6;
	munmap(p, np * PG);
	return us;
}

static int uffd_open(uint64_t features)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int uffd_wp(int fd, void *p, size_t len, bool on)
{
	struct uffdio_writeprotect wp = { .range = { (uintptr_t)p, len },
					  .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };
	return ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
}

/* a populated, write-protected region of np pages under a new uffd */
static char *wp_region(int fd, size_t np)
{
	char *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, np * PG, MADV_NOHUGEPAGE);
	memset(p, 1, np * PG);
	struct uffdio_register reg = { .range = { (uintptr_t)p, np * PG }, .mode = UFFDIO_REGISTER_MODE_WP };
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0 || uffd_wp(fd, p, np * PG, true) < 0) {
		munmap(p, np * PG);
		return NULL;
	}
	return p;
}

/* async WP: the write fault on each protected page (wp_ioctl false), or
 * UFFDIO_WRITEPROTECT of each written page (true) */
static double t_async(bool wp_ioctl)
{
	int fd = uffd_open(UFFD_FEATURE_WP_ASYNC);
	if (fd < 0)
		return -1;
	size_t np = fault_pages();
	char *p = wp_region(fd, np);
	double us = -1;
	if (p) {
		double t0 = bench_now();
		for (size_t i = 0; i < np; i++)
			p[i * PG] = 2;
		if (wp_ioctl) {
			t0 = bench_now();
			for (size_t i = 0; i < np; i++)
				uffd_wp(fd, p + i * PG, PG, true);
		}
		us = (bench_now() - t0) / (double)np * 1e6;
		munmap(p, np * PG);
	}
	close(fd);
	return us;
}

static double t_async_fault(void)
{
	return t_async(false);
}

static double t_wp_ioctl(void)
{
	return t_async(true);
}

static int g_sig_fd = -1;
static volatile size_t g_sig_count;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	uintptr_t a = (uintptr_t)si->si_addr & ~(PG - 1);
	uffd_wp(g_sig_fd, (void *)a, PG, false);
	g_sig_count++;
}

static void on_sigsegv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	uintptr_t a = (uintptr_t)si->si_addr & ~(PG - 1);
	mprotect((void *)a, PG, PROT_READ | PROT_WRITE);
	g_sig_count++;
}

static double t_sigbus_fault(void)
{
	int fd = uffd_open(UFFD_FEATURE_SIGBUS);
	if (fd < 0)
		return -1;
	size_t np = fault_pages() / 4;
	char *p = wp_region(fd, np);
	double us = -1;
	if (p) {
		struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO }, old;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, &old);
		g_sig_fd = fd;
		g_sig_count = 0;
		double t0 = bench_now();
		for (size_t i = 0; i < np; i++)
			p[i * PG] = 2;
		us = (bench_now() - t0) / (double)np * 1e6;
		sigaction(SIGBUS, &old, NULL);
		if (g_sig_count != np)
			us = -1;
		munmap(p, np * PG);
	}
	close(fd);
	return us;
}

static double t_mprotect_fault(void)
{
	size_t np = fault_pages() / 4;
	char *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	memset(p, 1, np * PG);
	mprotect(p, np * PG, PROT_READ);
	struct sigaction sa = { .sa_sigaction = on_sigsegv, .sa_flags = SA_SIGINFO }, old;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	g_sig_count = 0;
	double t0 = bench_now();
	for (size_t i = 0; i < np; i++)
		p[i * PG] = 2;
	double us = (bench_now() - t0) / (double)np * 1e6;
	sigaction(SIGSEGV, &old, NULL);
	if (g_sig_count != np)
		us = -1;
	munmap(p, np * PG);
	return us;
}

/* PAGEMAP_SCAN for written pages over np pages of which `written` were
 * written; `wp` re-protects them in the same call */
static double t_scan(size_t np, bool written, bool wp)
{
	int ufd = uffd_open(UFFD_FEATURE_WP_ASYNC);
	int pfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (ufd < 0 || pfd < 0) {
		if (ufd >= 0)
			close(ufd);
		if (pfd >= 0)
			close(pfd);
		return -1;
	}
	char *p = wp_region(ufd, np);
	double us = -1;
	if (p) {
		static struct page_region vec[8192];
		int n = (written ? 40 : 2000) / g_scale;
		double total = 0;
		for (int k = 0; k < n; k++) {
			if (written)
				for (size_t i = 0; i < np; i++)
					p[i * PG] = (char)k;
			struct pm_scan_arg a = { .size = sizeof a,
						 .flags = wp ? PM_SCAN_WP_MATCHING : 0,
						 .start = (uintptr_t)p,
						 .end = (uintptr_t)p + np * PG,
						 .vec = (uintptr_t)vec,
						 .vec_len = 8192,
						 .category_mask = PAGE_IS_WRITTEN,
						 .return_mask = PAGE_IS_WRITTEN };
			double t0 = bench_now();
			if (ioctl(pfd, PAGEMAP_SCAN, &a) < 0) {
				total = -1;
				break;
			}
			total += bench_now() - t0;
			if (written && !wp)
				uffd_wp(ufd, p, np * PG, true);
		}
		us = total < 0 ? -1 : total / n * 1e6;
		munmap(p, np * PG);
	}
	close(ufd);
	close(pfd);
	return us;
}

static double t_scan_1(void)
{
	return t_scan(1, false, false);
}
static double t_scan_clean(void)
{
	return t_scan(8192, false, false);
}
static double t_scan_written(void)
{
	return t_scan(8192, true, false);
}
static double t_scan_written_wp(void)
{
	return t_scan(8192, true, true);
}

static double t_fork(void)
{
	int n = 400 / g_scale;
	double t0 = bench_now();
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid < 0 || waitpid(pid, NULL, 0) < 0)
			return -1;
	}
	return (bench_now() - t0) / n * 1e6;
}

static double med(double (*f)(void))
{
	double v[REPS];
	for (int r = 0; r < REPS; r++) {
		v[r] = f();
		if (v[r] < 0)
			return -1;
	}
	return bench_median(v, REPS);
}

int main(int argc, char **argv)
{
	bench_mode mode = bench_parse_mode(argc, argv);
	if (mode == BENCH_QUICK)
		g_scale = 8;
	static const struct {
		const char *what;
		double (*f)(void);
		const char *notes_us; /* linux-mechanisms.md (empty: not there) */
	} t[] = {
		{ "syscall floor (getppid)", t_getppid, "0.053" },
		{ "memcpy one hot 4 KiB page", t_memcpy_page, "0.040" },
		{ "pread /proc/self/statm", t_statm, "0.25" },
		{ "pread kept /proc/PID/stat", t_procstat, "0.85" },
		{ "minor write fault fresh anonymous page", t_minor_fault, "0.78" },
		{ "uffd WP async write fault", t_async_fault, "0.39" },
		{ "uffd WP + SIGBUS in-thread handler", t_sigbus_fault, "1.9" },
		{ "SIGSEGV + mprotect round trip", t_mprotect_fault, "1.9" },
		{ "UFFDIO_WRITEPROTECT 1 page", t_wp_ioctl, "0.29" },
		{ "PAGEMAP_SCAN 1 page", t_scan_1, "0.26" },
		{ "PAGEMAP_SCAN 8192 clean pages", t_scan_clean, "5.7" },
		{ "PAGEMAP_SCAN 8192 written pages", t_scan_written, "22" },
		{ "PAGEMAP_SCAN 8192 written + re-protect", t_scan_written_wp, "83" },
		{ "fork+exit+wait small process", t_fork, "68" },
	};
	printf("table,primitive,us_measured,us_notes,ratio_measured_to_notes\n");
	printf("# median of %d runs; notes = shared/notes/linux-mechanisms.md (the machine class the targets were set on)\n",
	       REPS);
	size_t nt = sizeof t / sizeof t[0];
	for (size_t i = 0; i < nt; i++) {
		bench_progress("primitives: %s", t[i].what);
		double us = med(t[i].f);
		if (us < 0) {
			printf("primitive,%s,,%s,n/a (%s)\n", t[i].what, t[i].notes_us, "unavailable here");
			continue;
		}
		row(t[i].what, us, t[i].notes_us);
	}
	bench_progress("");
	return 0;
}
