/*
 * mmkit/prof.h - page-fault and CPU profiler (seed 002, "MP3"), from user space.
 *
 * Four pieces, usable separately:
 *
 *  - the ring (mmk_prof_ring_*): a shared-memory ring of fixed-size records
 *    in a sealed memfd.  One writer; any number of lock-free readers, which
 *    map it read-only and never see a torn record (each slot carries a
 *    sequence counter; a reader re-checks it after copying).  A reader that
 *    fell behind is told how many records it missed.
 *  - the sampler (mmk_prof_sampler_*): a set of target processes, each held
 *    by a pidfd (so a reused PID is never confused with the old process) and
 *    a kept /proc/PID/stat descriptor (faults of all threads, user and
 *    system CPU time) and a kept /proc/PID/schedstat descriptor (nanosecond
 *    CPU time of single-threaded targets, for utilisation).  One call samples
 *    every target and emits one record each; targets that exited are dropped
 *    with a final EXIT record.  Idle shortcut: a process's fault and CPU
 *    counters change only while one of its threads runs, so a
 *    single-threaded target that did not run since its last full read has
 *    its counters carried over.  "Did not run" is seen without a system
 *    call through a perf switch-record buffer on the target's thread (last
 *    record a switch-out, none since; a full read every 10 s anyway; it
 *    costs the watched thread 1-3 us per context switch, so a target
 *    switching more than 1000 times a second goes without until it is idle
 *    again), or,
 *    where perf is not available, after one schedstat read (0.5 us instead
 *    of 1-4 us: run time and switch count unchanged over at least 4 ms, one
 *    scheduler tick at HZ=250; a full read at least once a second).
 *    A target that ran since the last sample is read through a perf counter
 *    group on it (task clock, minor and major faults; it also counts the
 *    threads the process creates later, on Linux >= 5.13), one read instead
 *    of the ~3 us stat read, for processes registered single-threaded (and
 *    while they have at most 16 threads).  The group does not see faults
 *    taken in kernel mode (a read() into a page not touched yet,
 *    copy-on-write by the kernel) or on the process's behalf by others
 *    (get_user_pages), nor the user/system split of CPU time: such a sample
 *    adds the faults the group counted since the last full stat read to that
 *    read's exact values and keeps its utime / stime (d_cpu_us and util_ppm
 *    come from the task clock, exact), and full reads complete it: at least
 *    every 1-2 s (every second once one finds faults the group missed), at
 *    the first sample that finds the process asleep again, and at exit, so a
 *    sleeping process's record and the final one are exact (but for a
 *    process its parent reaped before the final read: the group's final
 *    values, short of kernel-mode faults since the last full read).
 *    Cumulative values never decrease, except that the final record takes
 *    the kernel's values.
 *  - the timer (mmk_prof_timer_*): an absolute, drift-free schedule on a
 *    CLOCK_MONOTONIC timerfd; reports each wake-up's lateness (jitter) and
 *    skipped periods.
 *  - the daemon and its control client (mmk_prof_daemon_run,
 *    mmk_prof_register, ...): a Unix SOCK_SEQPACKET socket in a private
 *    directory (mode 0700) that checks each caller's credentials
 *    (SO_PEERCRED): a caller may register only processes whose real,
 *    effective and saved uids are its own, unless it is root.
 *
 * Directory: $MMKIT_PROF_DIR if set, else $XDG_RUNTIME_DIR/mmkit, else
 * /run/user/UID/mmkit when /run/user/UID exists, else /tmp/mmkit-UID.  It is
 * created with mode 0700 and refused (-EPERM) if another user owns it or it
 * is accessible to group/others.
 *
 * Thread-safety: a ring may be read from any number of threads and processes
 * while one thread writes; a sampler, a timer and a ring writer are not
 * thread-safe; the client calls are.
 */
#ifndef MMKIT_PROF_H
#define MMKIT_PROF_H

#include <mmkit/common.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Record kinds. */
enum {
	MMK_PROF_SAMPLE = 0,     /* a periodic sample */
	MMK_PROF_REGISTER = 1,   /* the target was added (counters are zero) */
	MMK_PROF_EXIT = 2,       /* the target exited; counters are its final totals
	                          * (exact when it was still a zombie, otherwise the
	                          * last sample) */
	MMK_PROF_UNREGISTER = 3, /* the target was removed on request */
};

/* One record: 72 bytes.  Counters are cumulative since registration
 * (or since the process started, with MMK_PROF_ADD_ABSOLUTE). */
typedef struct mmk_prof_record {
	uint64_t tick;       /* sampling period index since the sampler started */
	uint64_t t_ns;       /* CLOCK_MONOTONIC ns since the sampler started */
	int32_t pid;
	uint16_t kind;       /* MMK_PROF_* */
	uint16_t nthreads;   /* threads of the target at this sample */
	uint64_t minflt;     /* minor faults, all threads */
	uint64_t majflt;     /* major faults, all threads */
	uint64_t utime_ns;   /* user CPU time (kernel clock-tick resolution) */
	uint64_t stime_ns;   /* system CPU time (same) */
	uint32_t d_minflt;   /* minor faults since this target's previous record */
	uint32_t d_majflt;   /* major faults since the previous record */
	uint32_t util_ppm;   /* CPU used over the interval / interval, 1000000 =
	                      * one CPU fully busy (may exceed it with threads) */
	uint32_t d_cpu_us;   /* CPU time used since the previous record, us */
} mmk_prof_record;

/* ---- ring ------------------------------------------------------------------ */
typedef struct mmk_prof_ring mmk_prof_ring;

/* Create a ring of `records` slots (0 = MMK_PROF_RING_DEFAULT) in a new
 * sealed memfd, mapped read-write; the caller is its single writer.
 * `period_ns` is stored for readers (informational).  -EINVAL (records >
 * 2^26), -ENOMEM, -errno of memfd_create/mmap. */
#define MMK_PROF_RING_DEFAULT 12000
MMK_API int mmk_prof_ring_create(mmk_prof_ring **ring, size_t records, uint64_t period_ns);
/* Map an existing ring read-only from a descriptor (the mapping cannot be
 * made writable when `fd` was opened read-only).  The descriptor is not
 * kept.  -EINVAL when the memory is not an mmkit ring of a known version. */
MMK_API int mmk_prof_ring_attach(mmk_prof_ring **ring, int fd);
/* A new read-only descriptor (O_CLOEXEC) for the ring, to hand to readers.
 * Returns the fd or -errno. */
MMK_API int mmk_prof_ring_fd_readonly(const mmk_prof_ring *ring);
MMK_API void mmk_prof_ring_destroy(mmk_prof_ring *ring);

/* Append one record (writer only; -EROFS on an attached ring).  Wait-free. */
MMK_API int mmk_prof_ring_write(mmk_prof_ring *ring, const mmk_prof_record *rec);
/* Number of records ever written (the next record's position). */
MMK_API uint64_t mmk_prof_ring_head(const mmk_prof_ring *ring);
MMK_API size_t mmk_prof_ring_capacity(const mmk_prof_ring *ring);
MMK_API uint64_t mmk_prof_ring_period_ns(const mmk_prof_ring *ring);
/* Position of the oldest record still held. */
MMK_API uint64_t mmk_prof_ring_oldest(const mmk_prof_ring *ring);

/* Read the record at *pos into *out and advance *pos.  Returns 1 when a
 * record was read, 0 when *pos has not been written yet.  If the record at
 * *pos was already overwritten, *pos jumps to the oldest record still held
 * and the number of skipped records is added to *missed (may be NULL).
 * Never returns a torn record.  Lock-free; safe from any reader. */
MMK_API int mmk_prof_ring_read(const mmk_prof_ring *ring, uint64_t *pos, mmk_prof_record *out,
			       uint64_t *missed);

/* ---- sampler ---------------------------------------------------------------- */
typedef struct mmk_prof_sampler mmk_prof_sampler;

/* Called for every record the sampler produces (after it went to the ring). */
typedef void (*mmk_prof_emit_fn)(const mmk_prof_record *rec, void *arg);

typedef struct mmk_prof_sampler_opts {
	mmk_prof_ring *ring;   /* records are written here (may be NULL) */
	mmk_prof_emit_fn emit; /* and passed here (may be NULL) */
	void *arg;
	size_t max_targets;    /* 0 = 4096 */
	uint64_t start_ns;     /* CLOCK_MONOTONIC origin of t_ns (0 = now) */
} mmk_prof_sampler_opts;

/* Flags for mmk_prof_sampler_add. */
enum {
	MMK_PROF_ADD_ABSOLUTE = 1u << 0,  /* counters since the process started, not
	                                   * since registration */
	MMK_PROF_ADD_CHILDREN = 1u << 1,  /* include reaped children's faults and CPU
	                                   * (cminflt...) and add live descendants as
	                                   * targets of their own at every sample */
	MMK_PROF_ADD_STAT_ONLY = 1u << 2, /* read only /proc/PID/stat: no schedstat,
	                                   * so no idle shortcut (below) and
	                                   * utilisation at clock-tick resolution */
	MMK_PROF_ADD_NO_PERF = 1u << 3,   /* no perf events (switch-record watch,
	                                   * counter group): the idle shortcut then
	                                   * costs one schedstat read per sample and
	                                   * a running target a full stat read;
	                                   * MMK_PROF_NO_PERF set in the environment
	                                   * does the same for every target */
};

MMK_API int mmk_prof_sampler_create(mmk_prof_sampler **s, const mmk_prof_sampler_opts *opts);
MMK_API void mmk_prof_sampler_destroy(mmk_prof_sampler *s);
/* Add a target.  `pidfd` >= 0 is a pidfd of `pid` the sampler takes over
 * (closed on error too); -1 opens one.  Emits a REGISTER record.
 * Errors: -EINVAL pid <= 0; -ESRCH no such process (or it exited);
 * -EEXIST already a target; -ENOSPC max_targets reached; -errno otherwise. */
MMK_API int mmk_prof_sampler_add(mmk_prof_sampler *s, pid_t pid, int pidfd, unsigned flags);
/* Remove a target, emitting an UNREGISTER record.  -ENOENT if not a target. */
MMK_API int mmk_prof_sampler_remove(mmk_prof_sampler *s, pid_t pid);
/* Copy up to `max` target pids; returns the number of targets. */
MMK_API int mmk_prof_sampler_list(const mmk_prof_sampler *s, pid_t *pids, size_t max);
/* Sample every target now as period `tick`; targets that exited emit an
 * EXIT record and are dropped.  Returns the number of records emitted. */
MMK_API int mmk_prof_sampler_tick(mmk_prof_sampler *s, uint64_t tick);
/* Take a last sample of `pid` (exact if it is an unreaped zombie), emit its
 * EXIT record, copy it into *final (may be NULL) and drop it.  -ENOENT if
 * not a target, including when a tick or reap already saw the zombie and
 * emitted its (equally exact) EXIT record: a caller that wants the final
 * totals in every case keeps EXIT records from its emit callback. */
MMK_API int mmk_prof_sampler_finish(mmk_prof_sampler *s, pid_t pid, mmk_prof_record *final);
/* The latest record of a target.  -ENOENT if not a target. */
MMK_API int mmk_prof_sampler_last(const mmk_prof_sampler *s, pid_t pid, mmk_prof_record *rec);
/* A pollable descriptor that becomes readable when a target exits (an
 * epoll set of the pidfds); call mmk_prof_sampler_reap() then. */
MMK_API int mmk_prof_sampler_exit_fd(const mmk_prof_sampler *s);
/* Drop every target that exited (final sample, EXIT record).  Returns the
 * number dropped. */
MMK_API int mmk_prof_sampler_reap(mmk_prof_sampler *s, uint64_t tick);

/* ---- timer ------------------------------------------------------------------- */
typedef struct mmk_prof_timer {
	int fd;               /* CLOCK_MONOTONIC timerfd (pollable) */
	uint64_t start_ns;    /* CLOCK_MONOTONIC time of tick 0 */
	uint64_t period_ns;
	uint64_t tick;        /* index of the last period waited for */
	uint64_t skipped;     /* periods that passed without a wake-up */
} mmk_prof_timer;

/* Start an absolute schedule: tick k is due at start_ns + k * period_ns
 * (start_ns = now).  -EINVAL period_ns < 100 us (10 kHz). */
MMK_API int mmk_prof_timer_start(mmk_prof_timer *t, uint64_t period_ns);
/* Block until the next due tick (or consume the one that is due when the fd
 * polled readable).  *late_ns = how late the wake-up was relative to the
 * most recent due time.  Periods missed entirely are added to t->skipped.
 * Returns 0, -EINTR, or -errno. */
MMK_API int mmk_prof_timer_wait(mmk_prof_timer *t, int64_t *late_ns);
MMK_API void mmk_prof_timer_stop(mmk_prof_timer *t);
/* CLOCK_MONOTONIC now, in ns. */
MMK_API uint64_t mmk_prof_now_ns(void);

/* ---- daemon and control ---------------------------------------------------- */
typedef struct mmk_prof_daemon_opts {
	const char *dir;          /* NULL = the default directory (above) */
	double rate_hz;           /* 0 = 20 */
	size_t records;           /* ring slots, 0 = MMK_PROF_RING_DEFAULT */
	size_t max_targets;       /* 0 = 4096 */
	bool stat_only;           /* register targets with MMK_PROF_ADD_STAT_ONLY */
	bool no_rt;               /* do not try SCHED_FIFO (by default the daemon
	                           * asks for SCHED_FIFO priority 1, which keeps its
	                           * wake-ups on time on a saturated machine; it
	                           * silently stays SCHED_OTHER when not permitted) */
	int ready_fd;             /* >= 0: write "1" here once listening, then close;
	                           * the caller must keep the read end open or
	                           * ignore SIGPIPE */
	volatile int *stop;       /* checked after every wake-up (set it from a
	                           * signal handler installed without SA_RESTART) */
	bool no_perf;             /* register targets with MMK_PROF_ADD_NO_PERF */
} mmk_prof_daemon_opts;

/* Run the daemon until *stop, a shutdown request, or an error.
 * -EADDRINUSE when a daemon already serves the directory; -EPERM for an
 * unsafe directory; -EINVAL bad rate (must be 0.1 .. 10000 Hz). */
MMK_API int mmk_prof_daemon_run(const mmk_prof_daemon_opts *opts);

/* Resolve (and create, mode 0700) the profiler directory into buf. */
MMK_API int mmk_prof_dir(char *buf, size_t len);

/* Control calls; dir NULL = default.  They connect, ask, and disconnect.
 * Errors: -ENOENT/-ECONNREFUSED no daemon; -EACCES socket not accessible;
 * and from the daemon: -EINVAL bad PID; -ESRCH no such process; -EPERM the
 * caller may not trace that process; -EEXIST already registered; -ENOENT
 * not registered; -ENOSPC too many targets. */
MMK_API int mmk_prof_register(const char *dir, pid_t pid);   /* pid 0 = self */
MMK_API int mmk_prof_unregister(const char *dir, pid_t pid); /* pid 0 = self */
/* Registered pids; returns the count (may exceed max). */
MMK_API int mmk_prof_list(const char *dir, pid_t *pids, size_t max);
/* Map the daemon's ring read-only (the fd is passed over the socket). */
MMK_API int mmk_prof_ring_open(const char *dir, mmk_prof_ring **ring);
/* Ask the daemon to exit (same uid or root). */
MMK_API int mmk_prof_shutdown(const char *dir);

typedef struct mmk_prof_stats {
	double rate_hz;
	uint64_t ticks;           /* periods sampled */
	uint64_t skipped;         /* periods with no wake-up (overload) */
	uint64_t records;         /* records written */
	uint32_t targets;         /* currently registered */
	double cpu_s;             /* the daemon's own user+system CPU */
	double wall_s;            /* since it started */
	int64_t jitter_p50_ns, jitter_p99_ns, jitter_max_ns; /* wake-up lateness */
	bool realtime;            /* the daemon runs SCHED_FIFO */
} mmk_prof_stats;
MMK_API int mmk_prof_stats_get(const char *dir, mmk_prof_stats *st);

/* CSV output shared by the tool and other programs. */
#define MMK_PROF_CSV_HEADER "t_s,pid,minflt,majflt,utime_s,stime_s,util"
/* Format one record as a CSV line (no newline) into buf; returns the length
 * (snprintf semantics). */
MMK_API int mmk_prof_csv_format(const mmk_prof_record *rec, char *buf, size_t len);
/* Parse one CSV data line into *rec (only the CSV's fields are set; kind =
 * SAMPLE).  -EINVAL on a malformed line. */
MMK_API int mmk_prof_csv_parse(const char *line, mmk_prof_record *rec);

#ifdef __cplusplus
}
#endif
#endif
