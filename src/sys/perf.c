/*
 * sys/perf.c - perf events, the one shape mmkit uses: a software event
 * (PERF_COUNT_SW_*) that counts user-mode activity only, so it opens
 * unprivileged up to perf_event_paranoid 2.
 *
 * Invariants: the descriptor is close-on-exec; the event follows one thread
 * (not inherited) on any CPU; nothing is cached here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sys/sys.h"

#include <errno.h>
#include <linux/perf_event.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int mmk__perf_open_sw(uint64_t config, pid_t tid, unsigned flags)
{
	struct perf_event_attr a;
	memset(&a, 0, sizeof a);
	a.size = sizeof a;
	a.type = PERF_TYPE_SOFTWARE;
	a.config = config;
	a.exclude_kernel = 1;
	a.exclude_hv = 1;
	a.disabled = !!(flags & MMK__PERF_DISABLED);
	if (flags & MMK__PERF_SWITCHES) {
		a.context_switch = 1;
		a.task = 1;
	}
	int fd = (int)syscall(SYS_perf_event_open, &a, tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}
