/*
 * sys/perf.c - perf events, the one shape mmkit uses: a software event
 * (PERF_COUNT_SW_*) that counts user-mode activity only, so it opens
 * unprivileged up to perf_event_paranoid 2.
 *
 * Invariants: descriptors are close-on-exec; an event follows one thread on
 * any CPU (a counter group may also follow the threads it creates, never its
 * child processes); nothing is cached here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sys/sys.h"

#include <errno.h>
#include <linux/perf_event.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A software event of user-mode activity, everything else zero. */
static void sw_attr(struct perf_event_attr *a, uint64_t config)
{
	memset(a, 0, sizeof *a);
	a->size = sizeof *a;
	a->type = PERF_TYPE_SOFTWARE;
	a->config = config;
	a->exclude_kernel = 1;
	a->exclude_hv = 1;
}

static int open_attr(struct perf_event_attr *a, pid_t tid, int group)
{
	int fd = (int)syscall(SYS_perf_event_open, a, tid, -1, group, PERF_FLAG_FD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int mmk__perf_open_sw(uint64_t config, pid_t tid, unsigned flags)
{
	struct perf_event_attr a;
	sw_attr(&a, config);
	a.disabled = !!(flags & MMK__PERF_DISABLED);
	if (flags & MMK__PERF_SWITCHES) {
		a.context_switch = 1;
		a.task = 1;
	}
	return open_attr(&a, tid, -1);
}

int mmk__perf_open_counters(pid_t tid, const uint64_t *configs, int n, int *fds, unsigned flags)
{
	if (n < 1 || n > MMK__PERF_MAX_COUNTERS)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		fds[i] = -1;
	int err = 0;
	for (int i = 0; i < n && !err; i++) {
		struct perf_event_attr a;
		sw_attr(&a, configs[i]);
		a.read_format = PERF_FORMAT_GROUP;
		/* the leader opens stopped: siblings that join a group already
		 * counting on a running thread count only from its next context
		 * switch (measured on 6.18: up to a scheduler tick of faults
		 * missing while the task clock counted); enabling the complete
		 * group below schedules all of it in at once */
		a.disabled = i == 0;
		if (flags & MMK__PERF_THREADS) {
			/* Linux 5.13: threads created later (not processes)
			 * get a copy; reading the group adds theirs in */
			a.inherit = 1;
			a.inherit_thread = 1;
		}
		int fd = open_attr(&a, tid, i ? fds[0] : -1);
		if (fd < 0)
			err = fd;
		else
			fds[i] = fd;
	}
	if (!err && ioctl(fds[0], PERF_EVENT_IOC_ENABLE, 0) < 0)
		err = -errno;
	if (err)
		mmk__perf_close_counters(fds, n);
	return err;
}

int mmk__perf_read_counters(int leader, uint64_t *vals, int n)
{
	uint64_t buf[1 + MMK__PERF_MAX_COUNTERS];
	if (n < 1 || n > MMK__PERF_MAX_COUNTERS)
		return -EINVAL;
	ssize_t r = read(leader, buf, sizeof buf);
	if (r < 0)
		return -errno;
	/* (a group whose thread exited reads its final values, even after
	 * the process was reaped: Linux 6.18) */
	if ((size_t)r < (size_t)(1 + n) * sizeof *buf || buf[0] != (uint64_t)n)
		return -ESRCH;
	memcpy(vals, buf + 1, (size_t)n * sizeof *vals);
	return 0;
}

void mmk__perf_close_counters(int *fds, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}
