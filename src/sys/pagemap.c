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

/* After fork the cached descriptors are the child's copies of the parent's
 * /proc/<parent>/pagemap and maps (/proc/self resolved at open): the child
 * drops them in this pthread_atfork handler (registered by the state
 * constructor, self.c), so the hot paths need no getpid(). */
void mmk__sys_atfork_child(void)
{
	mmk__state *st = mmk__st();
	int fd = atomic_exchange(&st->pagemap_fd, -1);
	if (fd >= 0)
		close(fd);
	if (st->maps_fd >= 0)
		close(st->maps_fd);
	st->maps_fd = -1;
}

int mmk__pagemap_fd(void)
{
	mmk__state *st = mmk__st();
	int fd = atomic_load_explicit(&st->pagemap_fd, memory_order_acquire);
	if (__builtin_expect(fd >= 0, 1))
		return fd;
	int nfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	int expect = -1;
	if (atomic_compare_exchange_strong(&st->pagemap_fd, &expect, nfd))
		return nfd;
	close(nfd); /* another thread won */
	return expect;
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

