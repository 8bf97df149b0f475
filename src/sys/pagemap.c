/*
 * sys/pagemap.c - /proc/self/pagemap and the PAGEMAP_SCAN ioctl.
 *
 * Invariants: one cached descriptor per process (re-opened when the pid
 * changes, i.e. after fork, since /proc/self resolves at open time);
 * scans never trust walk_end to decide completion (it can be stale on 6.18
 * after the kernel flushed its internal buffer) — a scan is complete when
 * the kernel returned fewer regions than the vector holds; the written
 * category is PAGE_IS_WRITTEN (1<<1), never PAGE_IS_PRESENT (1<<3).
 * The scan path allocates nothing (a stack vector), so it is AS-safe.
 */
#include "sys/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "sys/state.h"

int mmk__pagemap_fd(void)
{
	mmk__state *st = mmk__st();
	pid_t me = getpid();
	int fd = atomic_load(&st->pagemap_fd);
	if (fd >= 0 && atomic_load(&st->pagemap_pid) == me)
		return fd;
	int nfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	int expect = fd;
	if (atomic_compare_exchange_strong(&st->pagemap_fd, &expect, nfd)) {
		atomic_store(&st->pagemap_pid, me);
		/* After fork the old descriptor is the parent's view of
		 * /proc/<parent>/pagemap: close our inherited copy. */
		if (fd >= 0)
			close(fd);
		return nfd;
	}
	close(nfd);
	return atomic_load(&st->pagemap_fd);
}

long mmk__pagemap_scan_raw(struct pm_scan_arg *arg)
{
	int fd = mmk__pagemap_fd();
	if (fd < 0)
		return fd;
	long n = ioctl(fd, PAGEMAP_SCAN, arg);
	return n < 0 ? -errno : n;
}

#define SCAN_VEC 256

long mmk__pagemap_scan_written(uintptr_t start, uintptr_t end, bool reprotect,
			       mmk__range_fn fn, void *arg)
{
	return mmk__pagemap_scan(start, end,
				 reprotect ? (PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC) : 0,
				 PAGE_IS_WRITTEN, 0, fn, arg);
}

long mmk__pagemap_scan(uintptr_t start, uintptr_t end, uint64_t flags, uint64_t mask,
		       uint64_t anyof, mmk__range_fn fn, void *arg)
{
	struct page_region vec[SCAN_VEC];
	long pages = 0;
	while (start < end) {
		struct pm_scan_arg a = {
			.size = sizeof a,
			.flags = flags,
			.start = start,
			.end = end,
			.vec = (uintptr_t)vec,
			.vec_len = SCAN_VEC,
			.category_mask = mask,
			.category_anyof_mask = anyof,
			.return_mask = mask | anyof,
		};
		long n = mmk__pagemap_scan_raw(&a);
		if (n < 0)
			return n;
		for (long i = 0; i < n; i++) {
			pages += (long)((vec[i].end - vec[i].start) / MMK__PAGE);
			if (fn) {
				int rc = fn(vec[i].start, vec[i].end, arg);
				if (rc)
					return rc;
			}
		}
		if (n < SCAN_VEC)
			break;
		/* The vector was full: there may be more.  Continue after the
		 * last region returned (a region cut at the vector's end is
		 * continued, never lost). */
		start = vec[n - 1].end;
	}
	return pages;
}

int mmk__pagemap_entry(uintptr_t addr, uint64_t *entry)
{
	int fd = mmk__pagemap_fd();
	if (fd < 0)
		return fd;
	ssize_t n = pread(fd, entry, sizeof *entry, (off_t)(addr / MMK__PAGE * 8));
	if (n < 0)
		return -errno;
	return n == 8 ? 0 : -EIO;
}
