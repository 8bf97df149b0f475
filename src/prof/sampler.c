/*
 * prof/sampler.c - the set of profiled processes and one sample of each.
 *
 * Invariants:
 *  - Each target holds a pidfd and a /proc/PID/stat descriptor that were
 *    proven to name the same process (the pidfd was opened first and was
 *    still alive after the stat open), so a reused PID never reads as the
 *    old target: a reaped target's stat descriptor fails with ESRCH.
 *  - /proc/PID/stat with the thread-group leader's PID sums every thread,
 *    live and exited: faults are per process.  CPU times are in clock ticks
 *    (sysconf(_SC_CLK_TCK)); schedstat adds ns resolution for the
 *    utilisation of single-threaded targets.  That "full read" is exact and
 *    costs ~3 us; a process registered single-threaded also gets a perf
 *    counter group (task clock, minor and major faults; following the
 *    threads it creates on Linux >= 5.13), one ~0.5 us read, that samples it
 *    between full reads (see "counter group" below for what it cannot see
 *    and how full reads make up for it: at least every 1-2 s, at the first
 *    sample that finds it asleep after running, and at exit).
 *  - Idle shortcut: fault and CPU counters of a process change only while one
 *    of its threads runs (faults are charged to the faulting task; exited
 *    children's counters are added when the process reaps them).  For a
 *    single-threaded target without MMK_PROF_ADD_CHILDREN whose leader is
 *    not a zombie (a new thread needs the leader to run clone) two rules say "did not run since the
 *    last full read", and its record is then carried over:
 *    1. switch records (perf dummy event with context_switch=1 and task=1
 *       on the leader, buffer mapped read-only): the head was read before
 *       a full read, the leader was off-CPU at that moment (last record a
 *       switch-out, or nothing recorded since the buffer was opened and
 *       the stat read found it asleep, state not 'R'), and the head has
 *       not moved since: it was never switched in again.  No system call.
 *       A full read still happens every 10 s as a safety net.  A rule-2
 *       decision arms it only on a buffer with nothing recorded, and only
 *       until rule 2's own full read is due (1 s): schedstat can miss a
 *       running task (see rule 2).  The watched thread's exit writes a
 *       PERF_RECORD_EXIT, so a dead buffer (the leader retired by an exec
 *       from another thread, which keeps the process single-threaded) is
 *       never read as "off-CPU"; it is closed when seen and the new leader
 *       is watched again once rule 2 finds it idle 1 s later.
 *    2. schedstat: the leader's run time and switch-in count are unchanged
 *       since the last full read, at least 4 ms ago (one scheduler tick at
 *       HZ=250, which updates the run time of a running task); a full read
 *       at least once a second.  On a kernel with HZ < 250 a process that
 *       ran without a tick or a switch for 4-10 ms can have its update
 *       deferred to the next sample (on nohz_full CPUs: up to the 1 s full
 *       read); cumulative counters are never lost.
 *    An exit runs do_exit, so it is never carried over.  Watching costs
 *    the watched thread 1-3 us per context switch (perf context switch and
 *    record): a target that switches more than 1000 times a second (over
 *    200 ms windows) loses its buffer and gets it back once rule 2 finds
 *    it idle at least 1 s later.  When the user's perf mlock allowance is
 *    used up, no buffer is tried again before one of this sampler's is
 *    closed or a sampler-wide wait (1 s doubling to 64 s) has passed.  A
 *    target gets a buffer only if its first stat read shows one thread;
 *    once a full read shows more than one thread the switch records are
 *    dropped for good (they cover the leader only).
 *  - Order of a sample: rule 1 (memory only), else the counter group (one
 *    read: unchanged = carried over, changed = estimate), else rule 2 /
 *    a full read.  Exits are reaped first, at every tick (one epoll_wait on
 *    the pidfds), since an exited process's counters stay frozen.
 *  - A target whose stat shows state 'Z' (zombie) while its pidfd is readable
 *    (the whole thread group exited), or whose stat fails with ESRCH, is
 *    dropped with one EXIT record; a zombie's counters are final and exact.
 *  - Counters are reported relative to the values at registration
 *    (ABSOLUTE: relative to zero).  Records are emitted in target order,
 *    after the EXIT records of the targets a tick finds exited.
 *  - Process-wide state: none (everything hangs off the handle).
 */
#include "prof/prof_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/perf_event.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* The counter group: the leader's task clock, minor and major faults. */
enum { CNT_TC, CNT_MIN, CNT_MAJ, NCNT };
static const uint64_t cnt_configs[NCNT] = { PERF_COUNT_SW_TASK_CLOCK, PERF_COUNT_SW_PAGE_FAULTS_MIN,
					    PERF_COUNT_SW_PAGE_FAULTS_MAJ };
#define CNT_FULL_MIN_NS 1000000000ull    /* counter group of the leader alone: a full read this often */
#define CNT_FULL_MAX_NS 2000000000ull    /* counter group following threads: this often */
#define CNT_MAX_THREADS 16               /* no counter group for processes with more threads */

typedef struct target {
	pid_t pid;
	int pidfd, statfd, schedfd, perffd;
	unsigned flags;
	struct perf_event_mmap_page *pm; /* switch records of the leader, or NULL */
	uint64_t off_head;    /* pm's data_head when the leader was last known off-CPU */
	bool off_known;       /* off_head is valid: no switch-in since => it did not run */
	bool off_weak;        /* armed by rule 2 alone: carry no longer than rule 2 would */
	bool perf_ok;         /* switch records may be (re)opened for this target */
	uint64_t rate_head, rate_t_ns; /* head and time at the start of the rate window */
	uint64_t rearm_ns;    /* no switch records again before this time */
	mmk__procstat base;   /* values at registration (zero when ABSOLUTE) */
	mmk__procstat last;   /* last successful read */
	uint64_t last_t_ns;   /* time of the last sample */
	uint64_t full_t_ns;   /* time of the last full (stat) read */
	mmk_prof_record rec;  /* last record */
	bool dead;            /* pidfd reported exit */
	int cfd[NCNT];        /* perf counter group of the leader (cfd[0] leads), or -1 */
	bool cnt_ok;          /* a counter group may be opened for this target */
	bool cnt_threads;     /* the group also counts threads created after it */
	uint64_t c_full[NCNT]; /* its values right after the last full read's stat read */
	uint64_t c_full0[NCNT]; /* ... and right before it */
	uint64_t c_last[NCNT]; /* its values at the last sample */
	bool est;             /* rec is a counter-group estimate (not a full read's) */
	uint64_t cnt_every_ns; /* a full read at least this often (counter group) */
	bool cnt_quiet;       /* the group did not move around the last full read */
	bool cnt_missed;      /* the last full read found faults the group missed */
} target;

struct mmk_prof_sampler {
	mmk_prof_sampler_opts o;
	target *t;
	size_t n, cap;
	int epfd;
	uint64_t tick_ns; /* ns per clock tick */
	size_t page;
	uint64_t perf_block_ns;   /* mlock allowance used up: no buffer mapped before this */
	uint64_t perf_backoff_ns; /* the next wait after a failed map (doubles) */
	mmk__prof_counts cnt;
};

uint64_t mmk_prof_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- /proc readers ----------------------------------------------------------- */
static uint64_t tick_ns(void)
{
	long hz = sysconf(_SC_CLK_TCK);
	return hz > 0 ? 1000000000ull / (uint64_t)hz : 10000000ull;
}

int mmk__procstat_read(int fd, mmk__procstat *ps)
{
	char buf[1024];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ESRCH;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return -EIO;
	p += 2;
	ps->state = *p;
	/* fields after ')': 0 state ... 7 minflt 8 cminflt 9 majflt 10 cmajflt
	 * 11 utime 12 stime 13 cutime 14 cstime ... 17 num_threads */
	uint64_t v[18] = {0};
	int idx = 0;
	while (*p && idx < 18) {
		while (*p == ' ')
			p++;
		if (idx > 0) {
			bool neg = *p == '-';
			if (neg)
				p++;
			uint64_t x = 0;
			while (*p >= '0' && *p <= '9')
				x = x * 10 + (uint64_t)(*p++ - '0');
			v[idx] = neg ? 0 : x;
		}
		while (*p && *p != ' ')
			p++;
		idx++;
	}
	if (idx < 18)
		return -EIO;
	uint64_t tk = tick_ns();
	ps->minflt = v[7];
	ps->cminflt = v[8];
	ps->majflt = v[9];
	ps->cmajflt = v[10];
	ps->utime_ns = v[11] * tk;
	ps->stime_ns = v[12] * tk;
	ps->cutime_ns = v[13] * tk;
	ps->cstime_ns = v[14] * tk;
	ps->nthreads = (unsigned)v[17];
	return 0;
}

int mmk__schedstat_read(int fd, uint64_t *run_ns, uint64_t *pcount)
{
	char buf[128];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return n < 0 ? -errno : -ESRCH;
	buf[n] = 0;
	char *e;
	*run_ns = strtoull(buf, &e, 10);
	strtoull(e, &e, 10); /* run_delay */
	*pcount = strtoull(e, NULL, 10);
	return 0;
}

int mmk__proc_uids(pid_t pid, uid_t uids[3])
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	int n = mmk__read_file(path, buf, sizeof buf);
	if (n < 0)
		return n == -ENOENT ? -ESRCH : n;
	char *u = strstr(buf, "\nUid:");
	if (!u)
		return -EIO;
	unsigned long a, b, c;
	if (sscanf(u + 5, "%lu %lu %lu", &a, &b, &c) != 3)
		return -EIO;
	uids[0] = (uid_t)a;
	uids[1] = (uid_t)b;
	uids[2] = (uid_t)c;
	return 0;
}

/* ---- sampler ------------------------------------------------------------------ */
int mmk_prof_sampler_create(mmk_prof_sampler **out, const mmk_prof_sampler_opts *opts)
{
	if (!out)
		return -EINVAL;
	mmk_prof_sampler *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	if (opts)
		s->o = *opts;
	if (!s->o.max_targets)
		s->o.max_targets = 4096;
	if (!s->o.start_ns)
		s->o.start_ns = mmk_prof_now_ns();
	s->tick_ns = tick_ns();
	long pg = sysconf(_SC_PAGESIZE);
	s->page = pg > 0 ? (size_t)pg : 4096;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0) {
		int err = -errno;
		free(s);
		return err;
	}
	*out = s;
	return 0;
}

#define PERF_SWITCH_MAX_HZ 1000        /* a target switching more often loses its buffer */
#define PERF_RATE_WINDOW_NS 200000000ull /* over windows of this length */
#define PERF_REARM_NS 1000000000ull    /* and gets it back when idle this much later */
#define PERF_BACKOFF_MAX_NS 64000000000ull /* longest wait for mlock allowance */

/* ---- switch records ------------------------------------------------------------ */
/* A dummy software perf event on the target's leader thread (not inherited)
 * with context_switch=1 writes an 8-byte PERF_RECORD_SWITCH into a one-page
 * buffer at every switch-in and switch-out of that thread.  The buffer is
 * mapped read-only, so the kernel overwrites it (nobody consumes it); only
 * data_head, which grows by 8 per switch, and the last record are looked at.
 * Works unprivileged (perf_event_paranoid <= 2: the event samples nothing and
 * excludes the kernel); each buffer costs 2 pages of the user's perf mlock
 * allowance (perf_event_mlock_kb, then RLIMIT_MEMLOCK).  Optional: without
 * it the schedstat rule below decides. */
static void perf_close(mmk_prof_sampler *s, target *t)
{
	if (t->pm) {
		munmap(t->pm, 2 * s->page);
		s->perf_block_ns = 0; /* allowance given back: the next map may fit */
	}
	if (t->perffd >= 0)
		close(t->perffd);
	t->pm = NULL;
	t->perffd = -1;
	t->off_known = false;
}

/* Open the switch-record buffer.  An event the kernel refuses (perf_event_paranoid
 * 3, no perf, not permitted) is not asked for again; a buffer it cannot map
 * (the user's perf mlock allowance is used up) is retried later: no target
 * tries again before a buffer of this sampler is closed or a sampler-wide
 * wait has passed (1 s, doubling after each failure up to 64 s). */
static void perf_open_target(mmk_prof_sampler *s, target *t, uint64_t now)
{
	/* the task records include a PERF_RECORD_EXIT when the watched thread
	 * exits: a dead buffer never reads as "nothing recorded" or as "last
	 * record a switch-out" */
	s->cnt.perf_opens++;
	t->perffd = mmk__perf_open_sw(PERF_COUNT_SW_DUMMY, t->pid, MMK__PERF_SWITCHES);
	if (t->perffd < 0) {
		t->perffd = -1;
		t->perf_ok = false;
		return;
	}
	void *m = mmap(NULL, 2 * s->page, PROT_READ, MAP_SHARED, t->perffd, 0);
	if (m == MAP_FAILED) {
		perf_close(s, t);
		if (s->perf_backoff_ns < PERF_REARM_NS)
			s->perf_backoff_ns = PERF_REARM_NS;
		s->perf_block_ns = now + s->perf_backoff_ns;
		if (s->perf_backoff_ns < PERF_BACKOFF_MAX_NS)
			s->perf_backoff_ns *= 2;
		s->cnt.perf_map_failed++;
		return;
	}
	s->perf_backoff_ns = 0;
	t->pm = m;
	t->rate_head = 0;
	t->rate_t_ns = now;
	/* the event was opened by PID: it names the target if the target was
	 * still alive (or a zombie) afterwards */
	if (syscall(SYS_pidfd_send_signal, t->pidfd, 0, NULL, 0) < 0 && errno != EPERM)
		perf_close(s, t);
}

/* What the buffer's last record says about the leader. */
enum {
	PERF_LAST_UNREAD, /* the head was not read */
	PERF_LAST_NONE,   /* nothing recorded since the buffer was opened */
	PERF_LAST_IN,     /* switched in: on a CPU (or dead without EXIT: never here) */
	PERF_LAST_OUT,    /* switched out: any run from now on moves the head */
	PERF_LAST_EXIT,   /* the watched thread exited (an exec from another thread) */
	PERF_LAST_OTHER,  /* a FORK record, or overwritten while it was read */
};

static void perf_copy(const target *t, uint64_t pos, void *dst, size_t len)
{
	uint64_t size = t->pm->data_size;
	const char *data = (const char *)t->pm + t->pm->data_offset;
	for (size_t i = 0; i < len; i++)
		((char *)dst)[i] = data[(pos + i) % size];
}

/* The buffer's head, and what its last record is.  Switch records are 8
 * bytes; EXIT (and FORK) records are 32 (header, pid, ppid, tid, ptid,
 * time: no sample_id_all).  The EXIT check comes first: the 8 bytes before
 * the head of an EXIT record are its time stamp. */
static uint64_t perf_head(const target *t, int *last)
{
	uint64_t h = __atomic_load_n(&t->pm->data_head, __ATOMIC_ACQUIRE);
	if (h == 0) {
		*last = PERF_LAST_NONE;
		return h;
	}
	*last = PERF_LAST_OTHER;
	struct {
		struct perf_event_header h;
		uint32_t pid, ppid, tid, ptid;
		uint64_t time;
	} x;
	struct perf_event_header c;
	if (h >= sizeof x)
		perf_copy(t, h - sizeof x, &x, sizeof x);
	perf_copy(t, h - 8, &c, sizeof c);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	/* overwritten while we looked: the leader switched again */
	if (__atomic_load_n(&t->pm->data_head, __ATOMIC_ACQUIRE) != h)
		return h;
	if (h >= sizeof x && x.h.type == PERF_RECORD_EXIT && x.h.size == sizeof x && x.pid == (uint32_t)t->pid)
		*last = PERF_LAST_EXIT;
	else if (c.type == PERF_RECORD_SWITCH && c.size == 8)
		*last = (c.misc & PERF_RECORD_MISC_SWITCH_OUT) ? PERF_LAST_OUT : PERF_LAST_IN;
	return h;
}

/* ---- counter group ----------------------------------------------------------- */
/* Three counting software events on the leader thread, read in one system
 * call (~0.5 us hot, ~1 us cache-cold, against ~3-6 us for /proc/PID/stat):
 * task clock (ns on a CPU), minor and major faults.  Opened with inherit +
 * inherit_thread (Linux >= 5.13) they also count the threads the process
 * creates later, never its child processes; before 5.13 they follow the
 * leader alone and a full read that shows more than one thread closes them
 * for good (as one that shows more than CNT_MAX_THREADS does: each thread
 * adds ~0.12 us to a read).  They count user-mode faults only (unprivileged:
 * exclude_kernel), and no event counts faults taken inside get_user_pages
 * (an access on the target's behalf: process_vm_writev, O_DIRECT, ...),
 * which /proc/PID/stat does count.  So between two full reads a sample adds
 * the group's increase since the last full read to that read's exact fault
 * counts (the base is the group read just after the stat read: never above
 * the kernel's values), and utime / stime stay the last full read's (their
 * split is not counted; the task clock gives d_cpu_us and util exactly).
 * Full reads complete the estimates: at least every CNT_FULL_MAX_NS
 * (CNT_FULL_MIN_NS on a kernel without inherit_thread), at the first sample
 * that finds the target asleep after estimates (so a sleeping target's
 * record is exact), and at exit (exact; a target its parent reaped first
 * ends with the group's final values, short of kernel-mode faults since the
 * last full read).  A target whose last full read found faults the group
 * missed (and a new one) is read in full at every sample, until a full read
 * finds none: estimates are for processes whose faults the group sees.  Carries
 * need the group unchanged since the last sample and around the last full
 * read (cnt_quiet).  Each group costs three descriptors: one is opened only
 * while the descriptor limit leaves room for seven per target, and a target
 * that cannot get its own descriptors takes another target's group's. */
static void cnt_close(target *t)
{
	mmk__perf_close_counters(t->cfd, NCNT);
}

static void cnt_open(mmk_prof_sampler *s, target *t)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (s->n + 1) * 7 + 64 > rl.rlim_cur)
		return; /* keep the descriptors for targets */
	t->cnt_threads = true;
	int err = mmk__perf_open_counters(t->pid, cnt_configs, NCNT, t->cfd, MMK__PERF_THREADS);
	if (err == -EINVAL) { /* before Linux 5.13: the leader alone */
		t->cnt_threads = false;
		err = mmk__perf_open_counters(t->pid, cnt_configs, NCNT, t->cfd, 0);
	}
	if (err == 0 && mmk__perf_read_counters(t->cfd[0], t->c_last, NCNT) < 0)
		err = -ESRCH;
	/* a thread created between the caller's stat read and the open
	 * would be invisible to the group */
	mmk__procstat ps;
	if (err == 0 && (mmk__procstat_read(t->statfd, &ps) < 0 || ps.nthreads != 1))
		err = -EBUSY;
	/* opened by PID: they name the target if it still lived afterwards */
	if (err == 0 && syscall(SYS_pidfd_send_signal, t->pidfd, 0, NULL, 0) < 0 && errno != EPERM)
		err = -ESRCH;
	if (err < 0) {
		cnt_close(t);
		t->cnt_ok = false;
		s->cnt.cnt_failed++;
		return;
	}
	/* the registration's values are this stat read's, which follows the
	 * group's first read (the caller's earlier one would leave what the
	 * target did until the open in neither) */
	ps.run_ns = t->last.run_ns;
	ps.pcount = t->last.pcount;
	t->last = ps;
	memcpy(t->c_full, t->c_last, sizeof t->c_full);
	memcpy(t->c_full0, t->c_last, sizeof t->c_full0);
	t->cnt_every_ns = CNT_FULL_MIN_NS;
	t->cnt_missed = true; /* until a full read shows the group sees all */
}

static uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* The record from the counter group alone (see above): the last full read
 * plus what the group counted since. */
static void cnt_sample(mmk_prof_sampler *s, target *t, const uint64_t *v, uint64_t tick, uint64_t now)
{
	mmk_prof_record r = t->rec; /* utime and stime: the last full read's */
	r.kind = MMK_PROF_SAMPLE;
	r.tick = tick;
	r.t_ns = now - s->o.start_ns;
	r.minflt = max64(sub0(t->last.minflt + sub0(v[CNT_MIN], t->c_full[CNT_MIN]), t->base.minflt), t->rec.minflt);
	r.majflt = max64(sub0(t->last.majflt + sub0(v[CNT_MAJ], t->c_full[CNT_MAJ]), t->base.majflt), t->rec.majflt);
	uint64_t dmin = r.minflt - t->rec.minflt, dmaj = r.majflt - t->rec.majflt;
	r.d_minflt = dmin > UINT32_MAX ? UINT32_MAX : (uint32_t)dmin;
	r.d_majflt = dmaj > UINT32_MAX ? UINT32_MAX : (uint32_t)dmaj;
	uint64_t dcpu = sub0(v[CNT_TC], t->c_last[CNT_TC]), dt = now - t->last_t_ns;
	r.d_cpu_us = (uint32_t)((dcpu / 1000) > UINT32_MAX ? UINT32_MAX : dcpu / 1000);
	double u = dt ? (double)dcpu / (double)dt : 0;
	r.util_ppm = (uint32_t)(u * 1e6 > 4e9 ? 4e9 : u * 1e6 + 0.5);
	memcpy(t->c_last, v, sizeof t->c_last);
	t->last_t_ns = now;
	t->rec = r;
	t->est = true;
}

static void target_close(target *t)
{
	if (t->pidfd >= 0)
		close(t->pidfd);
	if (t->statfd >= 0)
		close(t->statfd);
	if (t->schedfd >= 0)
		close(t->schedfd);
	cnt_close(t);
}

void mmk_prof_sampler_destroy(mmk_prof_sampler *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++) {
		perf_close(s, &s->t[i]);
		target_close(&s->t[i]);
	}
	free(s->t);
	close(s->epfd);
	free(s);
}

static target *find(const mmk_prof_sampler *s, pid_t pid)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->t[i].pid == pid)
			return &s->t[i];
	return NULL;
}

static void emit(mmk_prof_sampler *s, const mmk_prof_record *r)
{
	if (s->o.ring)
		mmk_prof_ring_write(s->o.ring, r);
	if (s->o.emit)
		s->o.emit(r, s->o.arg);
}

/* Out of descriptors: a target's counter group (three) makes room for the
 * descriptors a new target needs; true if one was closed. */
static bool give_up_group(mmk_prof_sampler *s)
{
	for (size_t i = s->n; i-- > 0;)
		if (s->t[i].cfd[0] >= 0) {
			cnt_close(&s->t[i]);
			s->t[i].cnt_ok = false;
			return true;
		}
	return false;
}

int mmk_prof_sampler_add(mmk_prof_sampler *s, pid_t pid, int pidfd, unsigned flags)
{
	int err;
	if (!s || pid <= 0) {
		err = -EINVAL;
		goto fail_fd;
	}
	if (find(s, pid)) {
		err = -EEXIST;
		goto fail_fd;
	}
	if (s->n >= s->o.max_targets) {
		err = -ENOSPC;
		goto fail_fd;
	}
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 16;
		target *nt = realloc(s->t, nc * sizeof *nt);
		if (!nt) {
			err = -ENOMEM;
			goto fail_fd;
		}
		s->t = nt;
		s->cap = nc;
	}
	if (pidfd < 0) {
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pidfd < 0 && errno == EMFILE && give_up_group(s))
			pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pidfd < 0)
			return errno == EINVAL ? -ESRCH : -errno;
	}
	target t = { .pid = pid, .pidfd = pidfd, .statfd = -1, .schedfd = -1, .perffd = -1, .flags = flags,
		     .cfd = { -1, -1, -1 } };
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	t.statfd = open(path, O_RDONLY | O_CLOEXEC);
	if (t.statfd < 0 && errno == EMFILE && give_up_group(s))
		t.statfd = open(path, O_RDONLY | O_CLOEXEC);
	if (t.statfd < 0) {
		err = errno == ENOENT ? -ESRCH : -errno;
		goto fail;
	}
	if (!(flags & MMK_PROF_ADD_STAT_ONLY)) {
		snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
		t.schedfd = open(path, O_RDONLY | O_CLOEXEC); /* optional */
		/* MMK_PROF_NO_PERF in the environment: as MMK_PROF_ADD_NO_PERF
		 * for every target (e.g. under QEMU TCG, where enabling the
		 * kernel's context-switch hooks live-patches __schedule) */
		t.perf_ok = !(flags & (MMK_PROF_ADD_NO_PERF | MMK_PROF_ADD_CHILDREN)) &&
			    !getenv("MMK_PROF_NO_PERF");
		t.cnt_ok = t.perf_ok;
	}
	/* The pidfd still names a live (or zombie) process, so the /proc files
	 * just opened belong to it and not to a successor with the same PID. */
	if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 && errno != EPERM) {
		err = -ESRCH;
		goto fail;
	}
	err = mmk__procstat_read(t.statfd, &t.last);
	if (err < 0 || t.last.state == 'Z' || t.last.state == 'X') {
		err = -ESRCH;
		goto fail;
	}
	if (t.schedfd >= 0 && mmk__schedstat_read(t.schedfd, &t.last.run_ns, &t.last.pcount) < 0)
		t.last.run_ns = 0;
	/* switch records (optional) only for a single-threaded target: the
	 * first full read would drop them for any other */
	uint64_t now = mmk_prof_now_ns();
	if (t.perf_ok && t.last.nthreads == 1 && now >= s->perf_block_ns)
		perf_open_target(s, &t, now);
	if (t.cnt_ok && t.last.nthreads == 1)
		cnt_open(s, &t);
	if (!(flags & MMK_PROF_ADD_ABSOLUTE))
		t.base = t.last;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)pid };
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, pidfd, &ev) < 0) {
		err = -errno;
		goto fail;
	}
	now = mmk_prof_now_ns();
	t.last_t_ns = t.full_t_ns = now;
	t.rec = (mmk_prof_record){ .t_ns = now - s->o.start_ns, .pid = pid, .kind = MMK_PROF_REGISTER,
				   .nthreads = (uint16_t)t.last.nthreads };
	if (flags & MMK_PROF_ADD_ABSOLUTE) { /* show what it already has */
		t.rec.minflt = t.last.minflt + ((flags & MMK_PROF_ADD_CHILDREN) ? t.last.cminflt : 0);
		t.rec.majflt = t.last.majflt + ((flags & MMK_PROF_ADD_CHILDREN) ? t.last.cmajflt : 0);
	}
	s->t[s->n++] = t;
	emit(s, &s->t[s->n - 1].rec);
	return 0;
fail:
	perf_close(s, &t);
	target_close(&t);
	return err;
fail_fd:
	if (pidfd >= 0)
		close(pidfd);
	return err;
}

static void drop(mmk_prof_sampler *s, target *t)
{
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, t->pidfd, NULL);
	perf_close(s, t);
	target_close(t);
	size_t i = (size_t)(t - s->t);
	memmove(&s->t[i], &s->t[i + 1], (s->n - i - 1) * sizeof *t);
	s->n--;
}

int mmk_prof_sampler_remove(mmk_prof_sampler *s, pid_t pid)
{
	target *t = s ? find(s, pid) : NULL;
	if (!t)
		return -ENOENT;
	t->rec.kind = MMK_PROF_UNREGISTER;
	t->rec.t_ns = mmk_prof_now_ns() - s->o.start_ns;
	t->rec.d_minflt = t->rec.d_majflt = t->rec.d_cpu_us = t->rec.util_ppm = 0;
	emit(s, &t->rec);
	drop(s, t);
	return 0;
}

int mmk_prof_sampler_list(const mmk_prof_sampler *s, pid_t *pids, size_t max)
{
	for (size_t i = 0; i < s->n && i < max; i++)
		pids[i] = s->t[i].pid;
	return (int)s->n;
}

/* The record of a target that did not run since its last full read: same
 * counters, nothing used over the interval. */
static void carry(mmk_prof_sampler *s, target *t, uint64_t tick, uint64_t now)
{
	t->rec.kind = MMK_PROF_SAMPLE;
	t->rec.tick = tick;
	t->rec.t_ns = now - s->o.start_ns;
	t->rec.d_minflt = t->rec.d_majflt = t->rec.d_cpu_us = t->rec.util_ppm = 0;
	t->last_t_ns = now;
}

#define CARRY_MAX_NS 1000000000ull       /* schedstat rule: a full read at least this often */
#define PERF_CARRY_MAX_NS 10000000000ull  /* switch-record rule: the same, as a safety net */
#define SCHED_TICK_NS 4000000ull   /* one scheduler tick at HZ=250 */

/* A sample from the counter group alone (see cnt_sample): true when done,
 * false when a full read must follow (not possible, the group failed, or
 * the target fell asleep after estimates: one full read then makes its
 * record exact, faults the group does not see included, for as long as it
 * sleeps). */
static bool by_counters(mmk_prof_sampler *s, target *t, bool force, uint64_t now, uint64_t tick)
{
	if (t->cfd[0] < 0 || t->cnt_missed || now - t->full_t_ns >= t->cnt_every_ns || force || t->last.state == 'Z' ||
	    t->rec.kind == MMK_PROF_EXIT ||
	    (!t->cnt_threads && t->last.nthreads != 1))
		return false;
	/* Arming rule 1 from here needs the head before the counter read,
	 * and that no thread ran since the last full read (so no thread
	 * the leader's records cannot see was created): every sample since
	 * found the group unchanged, and so did that full read around its
	 * stat read. */
	uint64_t head = 0;
	int last = PERF_LAST_UNREAD;
	bool arm = t->pm && t->last.nthreads == 1 && !t->off_known && !t->est && t->cnt_quiet;
	if (arm)
		head = perf_head(t, &last);
	uint64_t v[NCNT];
	uint64_t at = mmk_prof_now_ns();
	int err = mmk__perf_read_counters(t->cfd[0], v, NCNT);
	if (err < 0) {
		cnt_close(t);
		t->cnt_ok = false;
		return false;
	}
	if (memcmp(v, t->c_last, sizeof v)) {
		cnt_sample(s, t, v, tick, at);
		s->cnt.cnt_sample++;
		return true;
	}
	/* after estimates: a full read (asleep now).  The group moved around
	 * the last full read's stat read (c_last is the read after it): a
	 * full read too, since what the group counted after the stat read is
	 * in neither that record nor any later "unchanged" */
	if (t->est || !t->cnt_quiet)
		return false;
	/* no thread used CPU time since the last sample */
	carry(s, t, tick, at);
	s->cnt.cnt_carry++;
	if (arm && (last == PERF_LAST_NONE || last == PERF_LAST_OUT)) {
		t->off_known = true;
		t->off_weak = false;
		t->off_head = head;
	}
	/* idle again after losing its buffer: watch it again (as the
	 * schedstat rule does: single-threaded only) */
	if (!t->pm && t->perf_ok && t->last.nthreads == 1 && at >= t->rearm_ns && at >= s->perf_block_ns)
		perf_open_target(s, t, at);
	return true;
}

/* Read one target; fill t->rec.  Returns 0, or 1 when the target is gone
 * (rec then holds its final values and kind EXIT).  `now` is the tick's
 * time (0: read the clock and take a full read, for final values). */
static int sample_one(mmk_prof_sampler *s, target *t, uint64_t tick, uint64_t now)
{
	mmk__procstat ps = {0};
	bool force = !now; /* final values wanted: always a full read */
	if (!now)
		now = mmk_prof_now_ns();
	/* idle shortcuts (see the invariants): single-threaded, no children */
	bool single = !force && t->last.nthreads == 1 && t->last.state != 'Z' && !(t->flags & MMK_PROF_ADD_CHILDREN) &&
		      t->rec.kind != MMK_PROF_EXIT;
	bool fresh = now - t->full_t_ns < CARRY_MAX_NS;
	uint64_t head = 0;
	int last = PERF_LAST_UNREAD;
	if (t->pm && single && now - t->rate_t_ns >= PERF_RATE_WINDOW_NS) {
		/* every switch of a watched thread costs it 1-3 us more (perf
		 * context switch + record): not for threads that switch a lot
		 * (2 records per switch) */
		uint64_t recs = (__atomic_load_n(&t->pm->data_head, __ATOMIC_ACQUIRE) - t->rate_head) / 8;
		if ((double)recs * 1e9 / (double)(now - t->rate_t_ns) > 2.0 * PERF_SWITCH_MAX_HZ) {
			perf_close(s, t);
			t->rearm_ns = now + PERF_REARM_NS;
			s->cnt.perf_dropped++;
		} else {
			t->rate_head += recs * 8;
			t->rate_t_ns = now;
		}
	}
	/* rule 1: the head alone (one cache line) */
	if (t->pm && single && t->off_known) {
		if (__atomic_load_n(&t->pm->data_head, __ATOMIC_ACQUIRE) == t->off_head &&
		    now - t->full_t_ns < (t->off_weak ? CARRY_MAX_NS : PERF_CARRY_MAX_NS)) {
			carry(s, t, tick, now);
			s->cnt.perf_carry++;
			return 0;
		}
		t->off_known = false; /* it ran since, or the safety net is due */
	}
	/* counter group: one read says whether it ran, and what it used */
	if (by_counters(s, t, force, now, tick))
		return 0;
	/* what the last record says, for rule 2 and for a full read */
	if (t->pm && single) {
		head = perf_head(t, &last);
		if (last == PERF_LAST_EXIT) {
			/* the watched thread is gone while the process lives on
			 * (a thread other than the leader called execve): watch
			 * the new leader once it is found idle, a second on */
			perf_close(s, t);
			t->rearm_ns = now + PERF_REARM_NS;
			s->cnt.perf_dead++;
			last = PERF_LAST_UNREAD;
			head = 0;
		}
	}
	uint64_t run = 0, pc = 0;
	bool have_sched = t->cfd[0] < 0 && t->schedfd >= 0 && mmk__schedstat_read(t->schedfd, &run, &pc) == 0;
	if (last != PERF_LAST_OUT && single && have_sched && t->last.run_ns && run == t->last.run_ns && pc == t->last.pcount &&
	    now - t->last_t_ns >= SCHED_TICK_NS && fresh) {
		carry(s, t, tick, now);
		s->cnt.sched_carry++;
		/* it did not run while the head was read: off-CPU there.  Only
		 * for a buffer with nothing recorded (a dead one holds its
		 * EXIT, a live one that switched says so itself), and only as
		 * long as this rule would carry: schedstat can miss a running
		 * task (no tick: HZ < 250, nohz_full) */
		t->off_known = t->pm && last == PERF_LAST_NONE;
		t->off_weak = true;
		t->off_head = 0;
		/* idle again after losing its buffer: watch it again (from the
		 * next sample on: this one's schedstat read came first) */
		if (!t->pm && t->perf_ok && now >= t->rearm_ns && now >= s->perf_block_ns)
			perf_open_target(s, t, now);
		return 0;
	}
	s->cnt.full++;
	now = mmk_prof_now_ns();
	/* the counter group just before and just after the stat read (see
	 * cnt_sample) */
	uint64_t v0[NCNT], v[NCNT];
	bool have_cnt = t->cfd[0] >= 0 && !force && mmk__perf_read_counters(t->cfd[0], v0, NCNT) == 0;
	int err = mmk__procstat_read(t->statfd, &ps);
	if (err < 0) { /* reaped: the last values are final */
		/* ... with what the counter group counted since (it keeps
		 * its final values after the exit): user-mode faults and the
		 * last interval's CPU use, short of kernel-mode faults (and
		 * of the utime / stime split) since the last full read */
		uint64_t fv[NCNT];
		if (t->cfd[0] >= 0 && (t->cnt_threads || t->last.nthreads == 1) &&
		    mmk__perf_read_counters(t->cfd[0], fv, NCNT) == 0 && memcmp(fv, t->c_last, sizeof fv)) {
			cnt_sample(s, t, fv, tick, now);
			t->rec.kind = MMK_PROF_EXIT;
			return 1;
		}
		t->rec.kind = MMK_PROF_EXIT;
		t->rec.tick = tick;
		t->rec.t_ns = now - s->o.start_ns;
		t->rec.d_minflt = t->rec.d_majflt = t->rec.d_cpu_us = t->rec.util_ppm = 0;
		return 1;
	}
	bool gone = ps.state == 'Z' || ps.state == 'X';
	if (gone) { /* a zombie leader may still have live threads: the pidfd
		     * turns readable only once the whole group has exited */
		struct pollfd pf = { t->pidfd, POLLIN, 0 };
		gone = poll(&pf, 1, 0) == 1;
	}
	if (have_sched && !gone) {
		ps.run_ns = run;
		ps.pcount = pc;
	}
	if (t->cfd[0] >= 0 && !gone) {
		have_cnt = have_cnt && mmk__perf_read_counters(t->cfd[0], v, NCNT) == 0;
		/* threads the group does not see; or so many that reading
		 * it costs more than the stat file (~0.12 us per thread
		 * against ~0.02) */
		if (!have_cnt || (ps.nthreads != 1 && !t->cnt_threads) || ps.nthreads > CNT_MAX_THREADS) {
			cnt_close(t);
			t->cnt_ok = false;
		}
	}
	have_cnt = have_cnt && !gone;
	bool ch = t->flags & MMK_PROF_ADD_CHILDREN;
	mmk_prof_record r = { .tick = tick, .t_ns = now - s->o.start_ns, .pid = t->pid,
			      .kind = gone ? MMK_PROF_EXIT : MMK_PROF_SAMPLE,
			      .nthreads = (uint16_t)(ps.nthreads > 65535 ? 65535 : ps.nthreads) };
	r.minflt = sub0(ps.minflt + (ch ? ps.cminflt : 0), t->base.minflt + (ch ? t->base.cminflt : 0));
	r.majflt = sub0(ps.majflt + (ch ? ps.cmajflt : 0), t->base.majflt + (ch ? t->base.cmajflt : 0));
	r.utime_ns = sub0(ps.utime_ns + (ch ? ps.cutime_ns : 0), t->base.utime_ns + (ch ? t->base.cutime_ns : 0));
	r.stime_ns = sub0(ps.stime_ns + (ch ? ps.cstime_ns : 0), t->base.stime_ns + (ch ? t->base.cstime_ns : 0));
	if (!force && !gone) {
		/* cumulative values never go back (estimates are not above
		 * the kernel's values; this only guards that), except in the
		 * final record, which holds the kernel's values */
		r.minflt = max64(r.minflt, t->rec.minflt);
		r.majflt = max64(r.majflt, t->rec.majflt);
		r.utime_ns = max64(r.utime_ns, t->rec.utime_ns);
		r.stime_ns = max64(r.stime_ns, t->rec.stime_ns);
	}
	uint64_t dmin = sub0(r.minflt, t->rec.minflt), dmaj = sub0(r.majflt, t->rec.majflt);
	r.d_minflt = dmin > UINT32_MAX ? UINT32_MAX : (uint32_t)dmin;
	r.d_majflt = dmaj > UINT32_MAX ? UINT32_MAX : (uint32_t)dmaj;
	/* CPU used over the interval: own threads only (children have rows). */
	uint64_t dcpu;
	if (have_cnt)
		dcpu = sub0(v[CNT_TC], t->c_last[CNT_TC]);
	else if (ps.run_ns && t->last.run_ns && ps.nthreads == 1 && t->last.nthreads == 1)
		dcpu = sub0(ps.run_ns, t->last.run_ns);
	else
		dcpu = sub0(ps.utime_ns + ps.stime_ns, t->last.utime_ns + t->last.stime_ns);
	uint64_t dt = now - t->last_t_ns;
	r.d_cpu_us = (uint32_t)((dcpu / 1000) > UINT32_MAX ? UINT32_MAX : dcpu / 1000);
	double u = dt ? (double)dcpu / (double)dt : 0;
	r.util_ppm = (uint32_t)(u * 1e6 > 4e9 ? 4e9 : u * 1e6 + 0.5);
	if (have_cnt) {
		/* faults the group missed since the last full read (kernel
		 * mode, GUP; its reads from just before the last stat read
		 * to just after this one cover the interval): the target is
		 * read in full every sample until a full read finds none.
		 * A group of the leader alone (before Linux 5.13) keeps full
		 * reads every second: only they find a thread created since */
		t->cnt_missed = ps.minflt > t->last.minflt + sub0(v[CNT_MIN], t->c_full0[CNT_MIN]) ||
				ps.majflt > t->last.majflt + sub0(v[CNT_MAJ], t->c_full0[CNT_MAJ]);
		t->cnt_every_ns = t->cnt_threads ? CNT_FULL_MAX_NS : CNT_FULL_MIN_NS;
		t->cnt_quiet = !memcmp(v0, v, sizeof v);
		memcpy(t->c_full0, v0, sizeof v0);
		memcpy(t->c_full, v, sizeof v);
		memcpy(t->c_last, v, sizeof v);
	}
	t->last = ps;
	t->last_t_ns = t->full_t_ns = now;
	t->rec = r;
	t->est = false;
	if (t->pm) {
		if (ps.nthreads != 1) {
			/* the leader's records no longer cover the process, and
			 * a non-leader exec could retire the watched thread */
			perf_close(s, t);
			t->perf_ok = false;
		} else {
			/* switched out before the stat read, or nothing recorded
			 * since the buffer was opened and asleep at the stat
			 * read (not 'R': off-CPU, and a run needs a switch-in):
			 * these counters hold until the head moves */
			t->off_known = last == PERF_LAST_OUT || (last == PERF_LAST_NONE && !gone && ps.state != 'R');
			t->off_weak = false;
			t->off_head = head;
		}
	}
	return gone;
}

/* Add live children of t (all its threads' children) as targets. */
static void add_children(mmk_prof_sampler *s, pid_t pid, unsigned flags)
{
	char path[320];
	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		char buf[4096];
		snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)pid, de->d_name);
		if (mmk__read_file(path, buf, sizeof buf) <= 0)
			continue;
		for (char *p = buf, *e; *p; p = e) {
			long c = strtol(p, &e, 10);
			if (e == p)
				break;
			if (c > 0 && !find(s, (pid_t)c))
				mmk_prof_sampler_add(s, (pid_t)c, -1, flags | MMK_PROF_ADD_ABSOLUTE);
		}
	}
	closedir(d);
}

int mmk_prof_sampler_tick(mmk_prof_sampler *s, uint64_t tick)
{
	if (!s)
		return -EINVAL;
	/* exits first (one epoll_wait): the counter group of a process that
	 * exited reads its frozen values like that of one asleep */
	int n = mmk_prof_sampler_reap(s, tick);
	if (n < 0)
		n = 0;
	uint64_t now = mmk_prof_now_ns();
	for (size_t i = 0; i < s->n; i++) {
		target *t = &s->t[i];
		int gone = sample_one(s, t, tick, now);
		emit(s, &t->rec);
		n++;
		if (gone) {
			drop(s, t);
			i--;
		}
	}
	/* descendants (after sampling, so new targets start next period) */
	size_t n0 = s->n;
	for (size_t i = 0; i < n0 && i < s->n; i++)
		if (s->t[i].flags & MMK_PROF_ADD_CHILDREN)
			add_children(s, s->t[i].pid, s->t[i].flags);
	return n;
}

int mmk_prof_sampler_finish(mmk_prof_sampler *s, pid_t pid, mmk_prof_record *final)
{
	target *t = s ? find(s, pid) : NULL;
	if (!t)
		return -ENOENT;
	sample_one(s, t, t->rec.tick, 0);
	t->rec.kind = MMK_PROF_EXIT;
	emit(s, &t->rec);
	if (final)
		*final = t->rec;
	drop(s, t);
	return 0;
}

int mmk_prof_sampler_last(const mmk_prof_sampler *s, pid_t pid, mmk_prof_record *rec)
{
	target *t = s ? find(s, pid) : NULL;
	if (!t)
		return -ENOENT;
	*rec = t->rec;
	return 0;
}

void mmk__prof_sampler_counts(const mmk_prof_sampler *s, mmk__prof_counts *c)
{
	*c = s->cnt;
	c->perf_targets = 0;
	c->cnt_targets = 0;
	for (size_t i = 0; i < s->n; i++) {
		c->perf_targets += s->t[i].pm != NULL;
		c->cnt_targets += s->t[i].cfd[0] >= 0;
	}
}

int mmk_prof_sampler_exit_fd(const mmk_prof_sampler *s)
{
	return s ? s->epfd : -EINVAL;
}

int mmk_prof_sampler_reap(mmk_prof_sampler *s, uint64_t tick)
{
	struct epoll_event ev[64];
	int n = epoll_wait(s->epfd, ev, 64, 0);
	if (n < 0)
		return -errno;
	int dropped = 0;
	for (int i = 0; i < n; i++) {
		target *t = find(s, (pid_t)ev[i].data.u64);
		if (!t)
			continue;
		sample_one(s, t, tick, 0);
		t->rec.kind = MMK_PROF_EXIT;
		emit(s, &t->rec);
		drop(s, t);
		dropped++;
	}
	return dropped;
}

/* ---- timer --------------------------------------------------------------------- */
#include <sys/timerfd.h>

int mmk_prof_timer_start(mmk_prof_timer *t, uint64_t period_ns)
{
	if (!t || period_ns < 100000)
		return -EINVAL;
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint64_t start = mmk_prof_now_ns();
	uint64_t first = start + period_ns;
	struct itimerspec its = {
		.it_value = { (time_t)(first / 1000000000ull), (long)(first % 1000000000ull) },
		.it_interval = { (time_t)(period_ns / 1000000000ull), (long)(period_ns % 1000000000ull) },
	};
	if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	*t = (mmk_prof_timer){ .fd = fd, .start_ns = start, .period_ns = period_ns };
	return 0;
}

int mmk_prof_timer_wait(mmk_prof_timer *t, int64_t *late_ns)
{
	uint64_t exp;
	ssize_t n = read(t->fd, &exp, sizeof exp);
	if (n < 0)
		return -errno;
	if (n != sizeof exp || exp == 0)
		return -EIO;
	uint64_t now = mmk_prof_now_ns();
	t->tick += exp;
	t->skipped += exp - 1;
	if (late_ns)
		*late_ns = (int64_t)(now - (t->start_ns + t->tick * t->period_ns));
	return 0;
}

void mmk_prof_timer_stop(mmk_prof_timer *t)
{
	if (t && t->fd >= 0) {
		close(t->fd);
		t->fd = -1;
	}
}
