/*
 * sys/probe.c - the feature probe: what this kernel really offers.
 *
 * Invariants: computed once per process (pthread_once in the state block)
 * and immutable afterwards; every bit is established by trying the
 * mechanism, never by version numbers alone (distribution kernels backport
 * and compile things out — soft-dirty here is writable but inert).  The
 * probe leaves nothing behind: every descriptor and mapping it creates is
 * released, and the soft-dirty check (which clears the soft-dirty bits of
 * the whole address space) runs in a short-lived child.
 */
#include "sys/state.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

int mmk__read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t got = 0;
	while (got + 1 < len) {
		ssize_t n = read(fd, buf + got, len - 1 - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			return -e;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	close(fd);
	return (int)got;
}

static long meminfo_value(const char *key)
{
	char buf[8192];
	if (mmk__read_file("/proc/meminfo", buf, sizeof buf) < 0)
		return -1;
	const char *p = strstr(buf, key);
	if (!p)
		return -1;
	return strtol(p + strlen(key), NULL, 10);
}

static bool probe_pagemap_scan(void)
{
	void *p = mmap(NULL, MMK__PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return false;
	struct page_region vec[1];
	struct pm_scan_arg a = {
		.size = sizeof a,
		.start = (uintptr_t)p,
		.end = (uintptr_t)p + MMK__PAGE,
		.vec = (uintptr_t)vec,
		.vec_len = 1,
		.category_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	long n = mmk__pagemap_scan_raw(&a);
	munmap(p, MMK__PAGE);
	return n >= 0;
}

static bool probe_procmap_query(void)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	struct procmap_query q;
	memset(&q, 0, sizeof q);
	q.size = sizeof q;
	q.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA;
	q.query_addr = 0;
	bool ok = ioctl(fd, PROCMAP_QUERY, &q) == 0;
	close(fd);
	return ok;
}

/* Soft-dirty "really working": write a page, clear soft-dirty, write it
 * again, and read bit 55.  A kernel without CONFIG_MEM_SOFT_DIRTY accepts the
 * clear_refs write but never sets the bit.  Done in a child because
 * clear_refs "4" resets the bits of the whole process. */
static bool probe_soft_dirty(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		volatile char *p = mmap(NULL, MMK__PAGE, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if ((void *)p == MAP_FAILED)
			_exit(2);
		p[0] = 1;
		int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "4", 1) != 1)
			_exit(3);
		close(fd);
		p[0] = 2;
		fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		uint64_t e = 0;
		if (fd < 0 || pread(fd, &e, 8, (off_t)((uintptr_t)p / MMK__PAGE * 8)) != 8)
			_exit(4);
		_exit((e >> 55) & 1 ? 0 : 1);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* MMK_PROF_NO_PERF in the environment: no perf event is opened at all, not
 * even this probe's (a task-bound event enables the scheduler's perf hooks
 * by live-patching __schedule, which panicked kernels under QEMU's software
 * emulation; see scripts/kernels/guest-init.sh). */
static bool perf_refused(void)
{
	const char *e = getenv("MMK_PROF_NO_PERF");
	return e && *e;
}

static bool probe_perf(void)
{
	if (perf_refused())
		return false;
	int fd = mmk__perf_open_sw(PERF_COUNT_SW_PAGE_FAULTS_MIN, 0, MMK__PERF_DISABLED);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static bool probe_mseal(void)
{
	void *p = mmap(NULL, MMK__PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return false;
	bool ok = syscall(SYS_mseal, p, MMK__PAGE, 0) == 0;
	/* A sealed mapping cannot be unmapped: leave the one read-only page
	 * (4 KiB, once per process) rather than fail. */
	if (!ok)
		munmap(p, MMK__PAGE);
	return ok;
}

static bool probe_memfd(unsigned flags)
{
	int fd = memfd_create("mmkit-probe", MFD_CLOEXEC | flags);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static void run_probe(void)
{
	mmk_features *f = &mmk__st()->features;
	memset(f, 0, sizeof *f);
	struct utsname u;
	if (uname(&u) == 0) {
		snprintf(f->kernel_release, sizeof f->kernel_release, "%s", u.release);
		sscanf(u.release, "%u.%u.%u", &f->kernel_major, &f->kernel_minor, &f->kernel_patch);
	}
	f->page_size = (size_t)sysconf(_SC_PAGESIZE);
	f->clk_tck = sysconf(_SC_CLK_TCK);
	f->is_root = geteuid() == 0;

	uint64_t feats = 0;
	bool umo = false;
	int rc = mmk__uffd_query_features(&feats, &umo);
	f->uffd = rc == 0;
	f->uffd_errno = rc < 0 ? -rc : 0;
	f->uffd_user_mode_only = rc == 0 && umo;
	f->uffd_features = feats;
	f->uffd_wp = f->uffd && (feats & UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	f->uffd_wp_async = f->uffd_wp && (feats & UFFD_FEATURE_WP_ASYNC);
	f->uffd_sigbus = f->uffd && (feats & UFFD_FEATURE_SIGBUS);
	f->uffd_wp_unpopulated = f->uffd_wp && (feats & UFFD_FEATURE_WP_UNPOPULATED);
	f->uffd_wp_shmem = f->uffd_wp && (feats & UFFD_FEATURE_WP_HUGETLBFS_SHMEM);

	f->pagemap_scan = probe_pagemap_scan();
	f->procmap_query = probe_procmap_query();
	f->soft_dirty = probe_soft_dirty();
	f->memfd = probe_memfd(0);
	f->memfd_noexec_seal = f->memfd && probe_memfd(MFD_NOEXEC_SEAL);
	f->mseal = probe_mseal();

	char buf[256];
	if (mmk__read_file("/sys/kernel/mm/transparent_hugepage/shmem_enabled", buf, sizeof buf) > 0) {
		char *l = strchr(buf, '['), *r = l ? strchr(l, ']') : NULL;
		if (l && r && (size_t)(r - l - 1) < sizeof f->shmem_thp) {
			memcpy(f->shmem_thp, l + 1, (size_t)(r - l - 1));
			f->shmem_thp[r - l - 1] = 0;
		}
	}
	f->hugetlb_total = meminfo_value("HugePages_Total:");
	f->hugetlb_free = meminfo_value("HugePages_Free:");

	f->perf_events = probe_perf();
	f->perf_paranoid = -99;
	if (mmk__read_file("/proc/sys/kernel/perf_event_paranoid", buf, sizeof buf) > 0)
		f->perf_paranoid = atoi(buf);
	int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	f->pidfd = pfd >= 0;
	if (pfd >= 0)
		close(pfd);
}

const mmk_features *mmk_features_get(void)
{
	mmk__state *st = mmk__st();
	pthread_once(&st->probe_once, run_probe);
	return &st->features;
}

/* ---- presentation -------------------------------------------------------------- */

bool mmk_features_line(size_t idx, mmk_feature_line *out)
{
	const mmk_features *f = mmk_features_get();
	static __thread char val[96];
	val[0] = 0;
	switch (idx) {
	case 0:
		*out = (mmk_feature_line){ "kernel", true, f->kernel_release,
			"version-specific notes; every feature below is probed, not inferred", "" };
		return true;
	case 1:
		if (!f->uffd)
			snprintf(val, sizeof val, "%s", strerror(f->uffd_errno));
		else
			snprintf(val, sizeof val, "%s", f->uffd_user_mode_only ? "user-mode-only" : "full");
		*out = (mmk_feature_line){ "userfaultfd", f->uffd, val,
			"page-tracking snapshots, RVM page-tracked mode, checkpoints",
			"mprotect + SIGSEGV backend (slower faults, splits mappings)" };
		return true;
	case 2:
		*out = (mmk_feature_line){ "uffd_wp", f->uffd_wp, "",
			"write-protect tracking of anonymous memory",
			"mprotect + SIGSEGV backend" };
		return true;
	case 3:
		*out = (mmk_feature_line){ "uffd_wp_async", f->uffd_wp_async, "",
			"kernel-resolved WP faults (~0.4 us) for the async snapshot backend; any mapping type",
			"sync WP faults (SIGBUS, ~2 us each) and no private-file (.data) tracking: copy backend for those" };
		return true;
	case 4:
		*out = (mmk_feature_line){ "uffd_sigbus", f->uffd_sigbus, "",
			"lazy copy-on-first-write snapshots handled in the faulting thread",
			"a fault-handler thread (~3-14 us per fault) or mprotect backend" };
		return true;
	case 5:
		*out = (mmk_feature_line){ "uffd_wp_unpopulated", f->uffd_wp_unpopulated, "",
			"write-protect pages never touched (no pre-faulting needed)",
			"populate ranges before protecting them" };
		return true;
	case 6:
		*out = (mmk_feature_line){ "pagemap_scan", f->pagemap_scan, "",
			"list written pages in O(written) and re-protect them in one ioctl",
			"track dirty pages by faults (sync WP or mprotect)" };
		return true;
	case 7:
		*out = (mmk_feature_line){ "procmap_query", f->procmap_query, "",
			"address-space enumeration without text parsing",
			"parse /proc/self/maps (~1.5x slower)" };
		return true;
	case 8:
		*out = (mmk_feature_line){ "soft_dirty", f->soft_dirty, "",
			"(informational) soft-dirty page tracking really works",
			"not used by mmkit: userfaultfd WP instead" };
		return true;
	case 9:
		*out = (mmk_feature_line){ "memfd", f->memfd, f->memfd_noexec_seal ? "noexec_seal" : "",
			"sfork regions, read-only views that mprotect cannot upgrade, exec survival",
			"POSIX shm objects under /dev/shm" };
		return true;
	case 10:
		*out = (mmk_feature_line){ "mseal", f->mseal, "",
			"seal read-only views of shared regions",
			"O_RDONLY descriptor views only (mprotect still refused with EACCES)" };
		return true;
	case 11:
		snprintf(val, sizeof val, "%s", f->shmem_thp[0] ? f->shmem_thp : "unknown");
		*out = (mmk_feature_line){ "shmem_thp",
			strcmp(f->shmem_thp, "never") != 0 && strcmp(f->shmem_thp, "deny") != 0 && f->shmem_thp[0],
			val, "huge pages for sfork regions (7-12x faster dense access)",
			"4 KiB pages (admin: echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled)" };
		return true;
	case 12:
		snprintf(val, sizeof val, "total=%ld free=%ld", f->hugetlb_total, f->hugetlb_free);
		*out = (mmk_feature_line){ "hugetlb_pool", f->hugetlb_free > 0, val,
			"MFD_HUGETLB sfork regions",
			"shmem THP or 4 KiB pages (admin: sysctl vm.nr_hugepages=N)" };
		return true;
	case 13:
		snprintf(val, sizeof val, "paranoid=%d%s", f->perf_paranoid,
			 perf_refused() ? ", not probed: MMK_PROF_NO_PERF set" : "");
		*out = (mmk_feature_line){ "perf_events", f->perf_events, val,
			"profiler fault/CPU counters read as one perf group",
			"/proc/PID/stat via kept descriptors (~0.85 us per sample)" };
		return true;
	case 14:
		*out = (mmk_feature_line){ "pidfd", f->pidfd, "",
			"profiler never confuses a reused PID with the registered process",
			"start-time check from /proc/PID/stat" };
		return true;
	default:
		return false;
	}
}
