/*
 * prof/prof_internal.h - shared internals of the profiler (src/prof/).
 *
 * The control protocol: SOCK_SEQPACKET messages of one text line each, like
 * the original /proc/mp3/status: "R <pid>", "U <pid>", "L" (list), "M" (map
 * the ring: the reply carries a read-only fd), "S" (stats), "Q" (shutdown).
 * Replies start with "OK" or "ERR <errno>".
 */
#ifndef MMK_PROF_INTERNAL_H
#define MMK_PROF_INTERNAL_H

#include "sys/sys.h"
#include <mmkit/prof.h>

#define MMK__PROF_SOCK "prof.sock"
#define MMK__PROF_MSG 65536

/* Counters read from /proc/PID/stat (and schedstat). */
typedef struct mmk__procstat {
	uint64_t minflt, cminflt, majflt, cmajflt;
	uint64_t utime_ns, stime_ns, cutime_ns, cstime_ns;
	uint64_t run_ns; /* schedstat sum_exec_runtime (leader thread), 0 if not read */
	uint64_t pcount; /* schedstat: times the leader was switched in */
	unsigned nthreads;
	char state;
} mmk__procstat;

/* pread + parse a kept /proc/PID/stat descriptor.  -ESRCH once the process
 * has been reaped. */
MMK_HIDDEN int mmk__procstat_read(int fd, mmk__procstat *ps);
/* Run time (ns) and switch-in count of a kept /proc/PID/schedstat. */
MMK_HIDDEN int mmk__schedstat_read(int fd, uint64_t *run_ns, uint64_t *pcount);
/* Real, effective and saved uid of pid from /proc/PID/status. */
MMK_HIDDEN int mmk__proc_uids(pid_t pid, uid_t uids[3]);

/* How the sampler's samples were taken (for tests and benchmarks). */
typedef struct mmk__prof_counts {
	uint64_t full;          /* full reads (/proc/PID/stat) */
	uint64_t sched_carry;   /* carried over after a schedstat read */
	uint64_t perf_carry;    /* carried over on the switch records alone (no syscall) */
	uint64_t perf_dropped;  /* buffers dropped for switching too often */
	uint64_t perf_dead;     /* buffers closed because the watched thread exited */
	uint64_t perf_opens;    /* perf_event_open calls */
	uint64_t perf_map_failed; /* buffers that could not be mapped (mlock allowance) */
	unsigned perf_targets;  /* current targets watched through switch records */
	uint64_t cnt_sample;    /* samples from the perf counter group alone (one read) */
	uint64_t cnt_carry;     /* carried over because the counter group had not moved */
	uint64_t cnt_failed;    /* counter groups that could not be opened */
	unsigned cnt_targets;   /* current targets with a perf counter group */
} mmk__prof_counts;
MMK_HIDDEN void mmk__prof_sampler_counts(const mmk_prof_sampler *s, mmk__prof_counts *c);

/* Send a request and receive the reply (and an fd if one is passed). */
MMK_HIDDEN int mmk__prof_call(const char *dir, const char *req, char *reply, size_t len, int *fd);

#endif
