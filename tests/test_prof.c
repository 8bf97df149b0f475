/*
 * tests/test_prof.c - the profiler: ring (wrap, concurrent readers, no torn
 * records, read-only mapping), sampler (accuracy against wait4 rusage, exit
 * while registered, PID reuse, idle shortcuts: stale-carry checks while
 * idle, running, switching often, with a second thread, after the leader
 * thread exits and after an exec from a non-leader thread, no buffer for
 * a multi-threaded target; the perf mlock allowance used up), timer (no drift), the daemon's control
 * protocol and its errors, CSV round trip.
 */
#include "test_util.h"

#include <mmkit.h>
#include <mmkit/prof.h>
#include "prof/prof_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- ring ---------------------------------------------------------------- */
static void fill(mmk_prof_record *r, uint64_t i)
{
	memset(r, 0, sizeof *r);
	r->tick = i;
	r->t_ns = i * 3 + 1;
	r->pid = (int32_t)(i & 0x3fffffff);
	r->minflt = i * 7;
	r->majflt = i ^ 0x5555;
	r->utime_ns = ~i;
	r->stime_ns = i * i;
	r->d_minflt = (uint32_t)i;
	r->d_majflt = (uint32_t)(i >> 3);
	r->util_ppm = (uint32_t)(i * 11);
	r->d_cpu_us = (uint32_t)(i + 5);
}

static bool check(const mmk_prof_record *r)
{
	mmk_prof_record e;
	fill(&e, r->tick);
	return !memcmp(&e, r, sizeof e);
}

static void test_ring_basic(void **state)
{
	(void)state;
	mmk_prof_ring *w, *rd;
	assert_int_equal(mmk_prof_ring_create(&w, 100, 50000000), 0);
	assert_int_equal(mmk_prof_ring_capacity(w), 100);
	int fd = mmk_prof_ring_fd_readonly(w);
	assert_true(fd >= 0);
	assert_int_equal(mmk_prof_ring_attach(&rd, fd), 0);
	assert_int_equal(mmk_prof_ring_period_ns(rd), 50000000);
	/* the read-only mapping cannot be made writable */
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(m == MAP_FAILED);
	close(fd);
	mmk_prof_record r;
	uint64_t pos = 0, missed = 0;
	assert_int_equal(mmk_prof_ring_read(rd, &pos, &r, &missed), 0);
	for (uint64_t i = 0; i < 250; i++) {
		fill(&r, i);
		assert_int_equal(mmk_prof_ring_write(w, &r), 0);
	}
	assert_int_equal(mmk_prof_ring_write(rd, &r), -EROFS);
	assert_int_equal(mmk_prof_ring_head(rd), 250);
	assert_int_equal(mmk_prof_ring_oldest(rd), 150);
	/* a late reader from 0 is told it missed 150 and gets 150..249 */
	uint64_t n = 0;
	while (mmk_prof_ring_read(rd, &pos, &r, &missed) == 1) {
		assert_true(check(&r));
		assert_int_equal(r.tick, 150 + n);
		n++;
	}
	assert_int_equal(n, 100);
	assert_int_equal(missed, 150);
	/* not an mmkit ring */
	int bad = memfd_create("x", MFD_CLOEXEC);
	assert_int_equal(ftruncate(bad, 65536), 0);
	mmk_prof_ring *other;
	assert_int_equal(mmk_prof_ring_attach(&other, bad), -EINVAL);
	close(bad);
	mmk_prof_ring_destroy(rd);
	mmk_prof_ring_destroy(w);
}

typedef struct stress {
	mmk_prof_ring *ring;
	_Atomic bool done;
	uint64_t total;
} stress;

typedef struct reader_res {
	stress *st;
	_Atomic uint64_t read;
	uint64_t torn, missed, order_errors;
} reader_res;

static void *reader(void *arg)
{
	reader_res *rr = arg;
	uint64_t pos = 0, last = 0;
	bool first = true;
	mmk_prof_record r;
	for (;;) {
		bool done = atomic_load(&rr->st->done);
		int got = mmk_prof_ring_read(rr->st->ring, &pos, &r, &rr->missed);
		if (got == 1) {
			atomic_fetch_add_explicit(&rr->read, 1, memory_order_relaxed);
			if (!check(&r))
				rr->torn++;
			if (!first && r.tick <= last)
				rr->order_errors++;
			first = false;
			last = r.tick;
		} else if (done) {
			break;
		}
	}
	return NULL;
}

/* One writer at full speed (paced a little) on a 64-slot ring, two readers:
 * runs until each reader has read `want` records (or 20 s), so a loaded
 * machine that starves a reader for a while still tests the race. */
static void test_ring_stress(void **state)
{
	(void)state;
	stress st = {0};
	uint64_t want = mmk_test_n(50000, 5000);
	assert_int_equal(mmk_prof_ring_create(&st.ring, 64, 0), 0); /* small: wraps constantly */
	pthread_t th[2];
	reader_res rr[2] = { { .st = &st }, { .st = &st } };
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader, &rr[i]), 0);
	mmk_prof_record r;
	uint64_t i = 0, t0 = mmk_prof_now_ns();
	while ((atomic_load(&rr[0].read) < want || atomic_load(&rr[1].read) < want) &&
	       mmk_prof_now_ns() - t0 < 20000000000ull) {
		for (int b = 0; b < 1000; b++, i++) {
			fill(&r, i);
			mmk_prof_ring_write(st.ring, &r);
			/* pace the writer a little so readers keep up part of the time
			 * and race with it the rest (a reader preempted mid-copy must
			 * notice) */
			for (volatile int k = 0; k < (int)(i % 97) * 8; k++)
				;
		}
	}
	st.total = i;
	atomic_store(&st.done, true);
	for (int k = 0; k < 2; k++) {
		pthread_join(th[k], NULL);
		uint64_t rd = atomic_load(&rr[k].read);
		fprintf(stderr, "# reader %d: read %llu missed %llu torn %llu of %llu\n", k, (unsigned long long)rd,
			(unsigned long long)rr[k].missed, (unsigned long long)rr[k].torn, (unsigned long long)st.total);
		assert_int_equal(rr[k].torn, 0);
		assert_int_equal(rr[k].order_errors, 0);
		assert_true(rd >= want);
		/* every record was either read or counted as missed */
		assert_int_equal(rd + rr[k].missed, st.total);
	}
	mmk_prof_ring_destroy(st.ring);
}

/* ---- sampler --------------------------------------------------------------- */
/* Fork a child that waits for a byte on a pipe, touches `pages` fresh pages
 * and then waits for a second byte before exiting. */
static pid_t toucher(size_t pages, int *go)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[1]);
		char c;
		if (read(p[0], &c, 1) != 1)
			_exit(2);
		char *m = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			_exit(3);
		madvise(m, pages * 4096, MADV_NOHUGEPAGE);
		for (size_t i = 0; i < pages; i++)
			m[i * 4096] = 1;
		if (read(p[0], &c, 1) != 1)
			_exit(4);
		_exit(0);
	}
	close(p[0]);
	*go = p[1];
	return pid;
}

static void test_sampler_accuracy(void **state)
{
	(void)state;
	mmk_prof_sampler *s;
	assert_int_equal(mmk_prof_sampler_create(&s, NULL), 0);
	size_t pages = mmk_test_n(5000, 500);
	int go;
	pid_t pid = toucher(pages, &go);
	assert_int_equal(mmk_prof_sampler_add(s, pid, -1, MMK_PROF_ADD_ABSOLUTE), 0);
	assert_int_equal(mmk_prof_sampler_add(s, pid, -1, 0), -EEXIST);
	/* ticks 15 ms apart while the child sleeps (idle shortcut), then touches
	 * its pages, then sleeps again: every fault must show up */
	mmk_prof_record r0, r1;
	for (int i = 1; i <= 3; i++) {
		usleep(15000);
		assert_int_equal(mmk_prof_sampler_tick(s, (uint64_t)i), 1);
	}
	assert_int_equal(mmk_prof_sampler_last(s, pid, &r0), 0);
	assert_int_equal(write(go, "g", 1), 1);
	usleep(100000);
	for (int i = 4; i <= 8; i++) {
		usleep(15000);
		assert_int_equal(mmk_prof_sampler_tick(s, (uint64_t)i), 1);
	}
	assert_int_equal(mmk_prof_sampler_last(s, pid, &r1), 0);
	assert_true(r1.minflt >= r0.minflt + pages);
	assert_int_equal(write(go, "g", 1), 1);
	close(go);
	siginfo_t si;
	assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
	mmk_prof_record fin;
	assert_int_equal(mmk_prof_sampler_finish(s, pid, &fin), 0);
	assert_int_equal(fin.kind, MMK_PROF_EXIT);
	struct rusage ru;
	int status;
	assert_int_equal(wait4(pid, &status, 0, &ru), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	fprintf(stderr, "# touched %zu pages: sampler minflt %llu majflt %llu, rusage %ld %ld\n", pages,
		(unsigned long long)fin.minflt, (unsigned long long)fin.majflt, ru.ru_minflt, ru.ru_majflt);
	assert_int_equal(fin.minflt, (uint64_t)ru.ru_minflt);
	assert_int_equal(fin.majflt, (uint64_t)ru.ru_majflt);
	assert_true(fin.minflt >= pages);
	assert_true(fin.minflt < pages + 2000);
	assert_int_equal(mmk_prof_sampler_list(s, NULL, 0), 0);
	mmk_prof_sampler_destroy(s);
}

typedef struct collect {
	mmk_prof_record r[256];
	size_t n;
} collect;

static void collect_emit(const mmk_prof_record *r, void *arg)
{
	collect *c = arg;
	if (c->n < 256)
		c->r[c->n++] = *r;
}

static void test_sampler_exit(void **state)
{
	(void)state;
	collect c = {0};
	mmk_prof_sampler_opts o = { .emit = collect_emit, .arg = &c };
	mmk_prof_sampler *s;
	assert_int_equal(mmk_prof_sampler_create(&s, &o), 0);
	assert_int_equal(mmk_prof_sampler_add(s, 0, -1, 0), -EINVAL);
	assert_int_equal(mmk_prof_sampler_add(s, -3, -1, 0), -EINVAL);
	assert_int_equal(mmk_prof_sampler_remove(s, 12345), -ENOENT);
	/* a zombie: dropped at the next tick with an EXIT record */
	int go1, go2;
	pid_t a = toucher(100, &go1), b = toucher(200, &go2);
	assert_int_equal(mmk_prof_sampler_add(s, a, -1, 0), 0);
	assert_int_equal(mmk_prof_sampler_add(s, b, -1, 0), 0);
	pid_t l[4];
	assert_int_equal(mmk_prof_sampler_list(s, l, 4), 2);
	assert_int_equal(write(go1, "gg", 2), 2);
	close(go1);
	siginfo_t si;
	assert_int_equal(waitid(P_PID, (id_t)a, &si, WEXITED | WNOWAIT), 0);
	/* the exit fd reports it */
	assert_int_equal(mmk_prof_sampler_reap(s, 1), 1);
	assert_int_equal(mmk_prof_sampler_list(s, l, 4), 1);
	assert_int_equal(l[0], b);
	bool saw_exit = false;
	for (size_t i = 0; i < c.n; i++)
		if (c.r[i].pid == a && c.r[i].kind == MMK_PROF_EXIT) {
			saw_exit = true;
			assert_true(c.r[i].minflt >= 100); /* final totals since registration */
		}
	assert_true(saw_exit);
	waitpid(a, NULL, 0);
	/* reaped before the sampler noticed: tick drops it via ESRCH */
	assert_int_equal(write(go2, "gg", 2), 2);
	close(go2);
	waitpid(b, NULL, 0);
	c.n = 0;
	mmk_prof_sampler_tick(s, 2);
	assert_int_equal(mmk_prof_sampler_list(s, l, 4), 0);
	assert_true(c.n >= 1);
	assert_int_equal(c.r[c.n - 1].kind, MMK_PROF_EXIT);
	assert_int_equal(c.r[c.n - 1].pid, b);
	/* an exited process cannot be added */
	assert_int_equal(mmk_prof_sampler_add(s, b, -1, 0), -ESRCH);
	/* remove emits UNREGISTER */
	pid_t me = getpid();
	assert_int_equal(mmk_prof_sampler_add(s, me, -1, 0), 0);
	c.n = 0;
	assert_int_equal(mmk_prof_sampler_remove(s, me), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.r[0].kind, MMK_PROF_UNREGISTER);
	mmk_prof_sampler_destroy(s);
}

static pid_t fork_with_pid(pid_t want)
{
	struct clone_args ca = { .exit_signal = SIGCHLD };
	pid_t tid[1] = { want };
	ca.set_tid = (uint64_t)(uintptr_t)tid;
	ca.set_tid_size = 1;
	return (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
}

static void test_sampler_pid_reuse(void **state)
{
	(void)state;
	collect c = {0};
	mmk_prof_sampler_opts o = { .emit = collect_emit, .arg = &c };
	mmk_prof_sampler *s;
	assert_int_equal(mmk_prof_sampler_create(&s, &o), 0);
	int go;
	pid_t a = toucher(10, &go);
	assert_int_equal(mmk_prof_sampler_add(s, a, -1, 0), 0);
	/* asleep: its samples are carried over (idle shortcut; a tick that
	 * sees it finish starting takes the counter group's estimate, and the
	 * next a full read that makes the estimate exact) */
	for (int i = 0; i < 4; i++) {
		usleep(15000);
		mmk_prof_sampler_tick(s, 0);
	}
	mmk__prof_counts k;
	mmk__prof_sampler_counts(s, &k);
	assert_true(k.sched_carry + k.perf_carry + k.cnt_carry >= 2);
	c.n = 0;
	assert_int_equal(write(go, "gg", 2), 2);
	close(go);
	waitpid(a, NULL, 0);
	/* a new process with the same PID (clone3 set_tid needs CAP_SYS_ADMIN) */
	int p[2], q[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(q), 0);
	pid_t b = fork_with_pid(a);
	if (b < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		close(q[0]);
		close(q[1]);
		mmk_prof_sampler_destroy(s);
		MMK_SKIP("clone3 with set_tid: %s (needs root)", strerror(e));
	}
	if (b == 0) {
		close(p[1]);
		char *m = mmap(NULL, 3000 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		/* one fault per page even where THP is "always" (Debian kernels) */
		madvise(m, 3000 * 4096, MADV_NOHUGEPAGE);
		for (int i = 0; i < 3000; i++)
			m[i * 4096] = 1;
		/* tell the parent the pages are touched (no sleep: emulated
		 * kernels are ~12x slower at faults) */
		if (write(q[1], "t", 1) != 1)
			_exit(1);
		char ch;
		if (read(p[0], &ch, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(p[0]);
	close(q[1]);
	assert_int_equal(b, a);
	char ready;
	assert_int_equal(read(q[0], &ready, 1), 1);
	close(q[0]);
	c.n = 0;
	mmk_prof_sampler_tick(s, 1);
	/* the old target is reported gone, not confused with the new process */
	assert_int_equal(c.n, 1);
	assert_int_equal(c.r[0].kind, MMK_PROF_EXIT);
	assert_true(c.r[0].minflt < 1000);
	assert_int_equal(mmk_prof_sampler_list(s, NULL, 0), 0);
	/* registering the PID again profiles the new process from zero */
	assert_int_equal(mmk_prof_sampler_add(s, b, -1, MMK_PROF_ADD_ABSOLUTE), 0);
	c.n = 0;
	mmk_prof_sampler_tick(s, 2);
	assert_int_equal(c.n, 1);
	assert_true(c.r[0].minflt >= 3000);
	close(p[1]);
	waitpid(b, NULL, 0);
	mmk_prof_sampler_destroy(s);
}

/* ---- idle shortcuts ------------------------------------------------------- */
/* A child driven over a socket: 't' touch 1000 new pages, 's' spin 200 ms
 * touching pages (no system calls), 'y' sleep 20 us at a time for 400 ms,
 * 'T' start a thread that sleeps, 'L' hand over to a new thread and end
 * the leader thread, 'E' a new thread calls execve (exec_child below
 * answers), 'x' exit; each command but 's' (answered when done) and 'x' is answered with
 * one byte once done. */
static void *sleeper_thread(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* The driven child's state (each child has its own copy). */
static struct {
	int fd;
	char *m;
	size_t npages, used;
} dc;

/* After 'E': this program again, as "--exec-child FD".  It answers 'E',
 * sleeps 100 ms (idle right after the exec), touches pages for 600 ms
 * without a system call in between (running), answers 'e' and waits for
 * the socket to close. */
static void *exec_thread(void *arg)
{
	(void)arg;
	char fd[16];
	snprintf(fd, sizeof fd, "%d", dup(dc.fd)); /* without CLOEXEC */
	execl("/proc/self/exe", "test_prof", "--exec-child", fd, (char *)NULL);
	_exit(6);
}

static int exec_child(int fd)
{
	if (write(fd, "E", 1) != 1)
		return 4;
	usleep(100000);
	size_t n = 20000;
	char *m = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 3;
	madvise(m, n * 4096, MADV_NOHUGEPAGE);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	size_t i = 0;
	do {
		m[i++ % n * 4096] = 1;
		if (i % n == 0)
			madvise(m, n * 4096, MADV_DONTNEED);
		clock_gettime(CLOCK_MONOTONIC, &b); /* vDSO */
	} while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 600000000L);
	char c = 'e';
	if (write(fd, &c, 1) != 1)
		return 4;
	while (read(fd, &c, 1) == 1)
		;
	return 0;
}

static void *toucher_thread(void *arg)
{
	for (size_t i = 0; i < 1000 && dc.used < dc.npages; i++)
		dc.m[dc.used++ * 4096] = 1;
	return arg;
}

static void *serve(void *arg)
{
	char c;
	if (arg && write(dc.fd, "L", 1) != 1) /* taking over after 'L' */
		_exit(4);
	while (read(dc.fd, &c, 1) == 1) {
		if (c == 't') {
			for (size_t i = 0; i < 1000 && dc.used < dc.npages; i++)
				dc.m[dc.used++ * 4096] = 1;
		} else if (c == 's') {
			struct timespec a, b;
			clock_gettime(CLOCK_MONOTONIC, &a);
			do {
				if (dc.used < dc.npages)
					dc.m[dc.used++ * 4096] = 1;
				for (volatile int k = 0; k < 20000; k++)
					;
				clock_gettime(CLOCK_MONOTONIC, &b);
			} while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 200000000L);
		} else if (c == 'y') {
			/* 400 ms of short sleeps: thousands of switches a second */
			struct timespec a, b, nap = { 0, 20000 };
			clock_gettime(CLOCK_MONOTONIC, &a);
			do {
				nanosleep(&nap, NULL);
				clock_gettime(CLOCK_MONOTONIC, &b);
			} while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 400000000L);
		} else if (c == 'T') {
			pthread_t th;
			if (pthread_create(&th, NULL, sleeper_thread, NULL) != 0)
				_exit(5);
		} else if (c == 'L') {
			/* a thread takes over and the leader exits: the process
			 * lives on with one thread and a zombie leader */
			pthread_t th;
			if (pthread_create(&th, NULL, serve, &dc) != 0)
				_exit(5);
			pthread_exit(NULL);
		} else if (c == 'E') {
			pthread_t th;
			if (pthread_create(&th, NULL, exec_thread, NULL) != 0)
				_exit(5);
			for (;;)
				pause(); /* until the exec retires this thread */
		} else if (c == 'k') {
			/* 1000 faults taken in kernel mode: read() copies into
			 * pages not touched yet */
			int pp[2];
			if (pipe(pp) != 0)
				_exit(5);
			for (size_t i = 0; i < 1000 && dc.used < dc.npages; i++) {
				if (write(pp[1], "k", 1) != 1 || read(pp[0], dc.m + dc.used++ * 4096, 1) != 1)
					_exit(5);
			}
			close(pp[0]);
			close(pp[1]);
		} else if (c == 'R') {
			/* 300 ms of faults taken in kernel mode (read() into
			 * pages dropped again every 64 reads) */
			int pp[2];
			char *m2 = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m2 == MAP_FAILED || pipe(pp) != 0)
				_exit(5);
			struct timespec a, b;
			clock_gettime(CLOCK_MONOTONIC, &a);
			size_t i = 0;
			do {
				if (i % 64 == 0)
					madvise(m2, 64 * 4096, MADV_DONTNEED);
				if (write(pp[1], "r", 1) != 1 || read(pp[0], m2 + i++ % 64 * 4096, 1) != 1)
					_exit(5);
				clock_gettime(CLOCK_MONOTONIC, &b);
			} while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 300000000L);
			munmap(m2, 64 * 4096);
			close(pp[0]);
			close(pp[1]);
		} else if (c == 'P') {
			/* a thread touches 1000 pages and ends */
			pthread_t th;
			if (pthread_create(&th, NULL, toucher_thread, NULL) != 0 || pthread_join(th, NULL) != 0)
				_exit(5);
		} else if (c == 'x') {
			_exit(0);
		} else if (c == 'D') {
			/* user-mode faults until a CLOCK_MONOTONIC deadline (8
			 * bytes of ns follow), then straight back to read():
			 * no answer, nothing run after it */
			uint64_t dl;
			struct timespec b;
			if (read(dc.fd, &dl, sizeof dl) != sizeof dl)
				_exit(4);
			for (size_t i = 0;; i++) {
				if (i % 64 == 0)
					madvise(dc.m, 64 * 4096, MADV_DONTNEED);
				dc.m[i % 64 * 4096] = 1;
				clock_gettime(CLOCK_MONOTONIC, &b);
				if ((uint64_t)b.tv_sec * 1000000000ull + (uint64_t)b.tv_nsec >= dl)
					break;
			}
			continue;
		}
		if (write(dc.fd, &c, 1) != 1)
			_exit(4);
	}
	_exit(0);
}

static pid_t driven_child(int *sock)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dc.fd = sv[1];
		dc.npages = 20000;
		dc.m = mmap(NULL, dc.npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (dc.m == MAP_FAILED)
			_exit(3);
		madvise(dc.m, dc.npages * 4096, MADV_NOHUGEPAGE);
		serve(NULL);
	}
	close(sv[1]);
	*sock = sv[0];
	return pid;
}

static void command(int sock, char c)
{
	assert_int_equal(write(sock, &c, 1), 1);
	if (c != 's' && c != 'x' && c != 'L' && c != 'R') {
		char r;
		assert_int_equal(read(sock, &r, 1), 1);
		assert_int_equal(r, c);
	}
}

static void stat_read(pid_t pid, mmk__procstat *ps)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(mmk__procstat_read(fd, ps), 0);
	close(fd);
}

/* A new sampler (emitting into *c when c is not NULL) with a driven child
 * registered (ABSOLUTE) after its first 't'. */
static pid_t driven_target(collect *c, mmk_prof_sampler **s, int *sock)
{
	mmk_prof_sampler_opts o = { .emit = collect_emit, .arg = c };
	assert_int_equal(mmk_prof_sampler_create(s, c ? &o : NULL), 0);
	pid_t a = driven_child(sock);
	command(*sock, 't');
	assert_int_equal(mmk_prof_sampler_add(*s, a, -1, MMK_PROF_ADD_ABSOLUTE), 0);
	return a;
}

/* The sampler destroyed, the driven child told to exit and reaped. */
static void driven_end(mmk_prof_sampler *s, int sock, pid_t a)
{
	mmk_prof_sampler_destroy(s);
	command(sock, 'x');
	close(sock);
	waitpid(a, NULL, 0);
}

/* The driven child told to exit: its final record (taken while it is a
 * zombie) must equal its wait4 rusage. */
static void driven_exit_exact(mmk_prof_sampler *s, int sock, pid_t a)
{
	command(sock, 'x');
	close(sock);
	siginfo_t si;
	assert_int_equal(waitid(P_PID, (id_t)a, &si, WEXITED | WNOWAIT), 0);
	mmk_prof_record fin;
	assert_int_equal(mmk_prof_sampler_finish(s, a, &fin), 0);
	struct rusage ru;
	assert_int_equal(wait4(a, NULL, 0, &ru), a);
	assert_int_equal(fin.minflt, (uint64_t)ru.ru_minflt);
	assert_int_equal(fin.majflt, (uint64_t)ru.ru_majflt);
}

/* fn run in a forked child must exit 0; 77 skips the test with `why`. */
static void in_child(int (*fn)(void), const char *why)
{
	pid_t c = fork();
	assert_true(c >= 0);
	if (c == 0)
		_exit(fn());
	int st;
	assert_int_equal(waitpid(c, &st, 0), c);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		MMK_SKIP("%s", why);
	assert_int_equal(WEXITSTATUS(st), 0);
}

static uint64_t stat_minflt(pid_t pid)
{
	mmk__procstat ps;
	stat_read(pid, &ps);
	return ps.minflt;
}

/* Tick once, 15 ms after the previous tick; the record must not be older
 * than the kernel's counter read just before the tick (a wrong shortcut
 * would carry a stale value over).  A sample from the counter group alone
 * (the target ran since the last sample) may lack the faults the group
 * cannot see, taken in kernel mode (a clone's writes to the new thread's
 * stack, copy-on-write faults of write()...): a few, until the next full
 * read, while every command of these tests faults 1000 times; the next
 * sample of a sleeping target is exact again. */
static mmk_prof_record check_tick(mmk_prof_sampler *s, pid_t pid, uint64_t *tick)
{
	usleep(15000);
	uint64_t before = stat_minflt(pid);
	mmk__prof_counts k0, k1;
	mmk__prof_sampler_counts(s, &k0);
	mmk_prof_record prev;
	assert_int_equal(mmk_prof_sampler_last(s, pid, &prev), 0);
	assert_true(mmk_prof_sampler_tick(s, ++*tick) >= 1);
	mmk__prof_sampler_counts(s, &k1);
	mmk_prof_record r;
	assert_int_equal(mmk_prof_sampler_last(s, pid, &r), 0);
	assert_true(r.minflt >= prev.minflt);
	if (r.minflt < before)
		fprintf(stderr, "# tick %llu: record %llu, /proc before the tick %llu (%s)\n", (unsigned long long)*tick,
			(unsigned long long)r.minflt, (unsigned long long)before,
			k1.cnt_sample > k0.cnt_sample ? "counter group estimate" : "full read or carried over");
	if (k1.cnt_sample > k0.cnt_sample) /* ~20 for a thread's creation under ASan */
		assert_true(r.minflt + 64 >= before);
	else
		assert_true(r.minflt >= before);
	return r;
}

/* The counter group: samples of a running target from one perf read, exact
 * for user-mode faults (of every thread on Linux >= 5.13), the kernel-mode
 * ones caught up by the full read that follows once it sleeps; exact at
 * exit; cumulative values never go back. */
static void test_sampler_counter_group(void **state)
{
	(void)state;
	collect c = {0};
	mmk_prof_sampler *s;
	int sock;
	pid_t a = driven_target(&c, &s, &sock);
	mmk__prof_counts k0, k1;
	mmk__prof_sampler_counts(s, &k0);
	if (k0.cnt_targets != 1) {
		driven_end(s, sock, a);
		MMK_SKIP("no perf counter group (perf_event_open of software counters failed, or MMK_PROF_NO_PERF set)");
	}
	struct utsname u;
	int maj = 0, min = 0;
	if (uname(&u) == 0)
		sscanf(u.release, "%d.%d", &maj, &min);
	bool threads = maj > 5 || (maj == 5 && min >= 13);
	uint64_t tick = 0;
	for (int i = 0; i < 3; i++)
		check_tick(s, a, &tick);
	/* user-mode faults: one counter read, exact */
	command(sock, 't');
	mmk__prof_sampler_counts(s, &k0);
	mmk_prof_record r = check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k1);
	assert_int_equal(k1.cnt_sample, k0.cnt_sample + 1);
	assert_int_equal(k1.full, k0.full);
	assert_int_equal(r.minflt, stat_minflt(a));
	/* kernel-mode faults: the estimate lacks them (the group counts
	 * user-mode faults only, unprivileged or not: no GUP either) ... */
	command(sock, 'k');
	usleep(15000);
	assert_true(mmk_prof_sampler_tick(s, ++tick) >= 1);
	assert_int_equal(mmk_prof_sampler_last(s, a, &r), 0);
	uint64_t exact = stat_minflt(a);
	fprintf(stderr, "# after 1000 kernel-mode faults: estimate %llu, /proc %llu\n", (unsigned long long)r.minflt,
		(unsigned long long)exact);
	/* ... until the full read of the next sample (asleep again) */
	mmk__prof_sampler_counts(s, &k0);
	r = check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k1);
	assert_int_equal(r.minflt, stat_minflt(a));
	assert_true(k1.full == k0.full + 1 || r.minflt == exact);
	/* and carried over from then on */
	mmk__prof_sampler_counts(s, &k0);
	for (int i = 0; i < 3; i++)
		check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k1);
	assert_true(k1.cnt_carry + k1.perf_carry >= k0.cnt_carry + k0.perf_carry + 3);
	/* a thread's user-mode faults: in the group from its creation on */
	command(sock, 'P');
	r = check_tick(s, a, &tick);
	uint64_t st = stat_minflt(a);
	fprintf(stderr, "# a thread touched 1000 pages: estimate %llu, /proc %llu (group %s new threads)\n",
		(unsigned long long)r.minflt, (unsigned long long)st, threads ? "follows" : "does not follow");
	if (threads)
		assert_true(r.minflt + 16 >= st);
	for (int i = 0; i < 3; i++)
		check_tick(s, a, &tick);
	/* faulting in kernel mode all along: after the first full read that
	 * finds faults the group missed, full reads (exact) every sample */
	command(sock, 'R');
	mmk__prof_sampler_counts(s, &k0);
	for (int i = 0; i < 12; i++)
		check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k1);
	char ch;
	assert_int_equal(read(sock, &ch, 1), 1);
	fprintf(stderr, "# 300 ms of kernel-mode faults: %llu estimates, %llu full reads in 12 samples\n",
		(unsigned long long)(k1.cnt_sample - k0.cnt_sample), (unsigned long long)(k1.full - k0.full));
	assert_true(k1.cnt_sample - k0.cnt_sample <= 2);
	/* CPU time: a system-time phase (above), then a user-time one; user
	 * and system time are never above the kernel's, and exact once it
	 * sleeps (the group counts their sum, not the split) */
	for (int i = 0; i < 3; i++)
		check_tick(s, a, &tick);
	r = check_tick(s, a, &tick);
	mmk__procstat ps;
	stat_read(a, &ps);
	assert_int_equal(r.utime_ns, ps.utime_ns);
	assert_int_equal(r.stime_ns, ps.stime_ns);
	command(sock, 's');
	for (int i = 0; i < 12; i++) {
		r = check_tick(s, a, &tick);
		stat_read(a, &ps);
		assert_true(r.utime_ns <= ps.utime_ns && r.stime_ns <= ps.stime_ns);
	}
	assert_int_equal(read(sock, &ch, 1), 1);
	for (int i = 0; i < 3; i++)
		check_tick(s, a, &tick);
	r = check_tick(s, a, &tick);
	stat_read(a, &ps);
	assert_int_equal(r.utime_ns, ps.utime_ns);
	assert_int_equal(r.stime_ns, ps.stime_ns);
	/* cumulative records never went back; the final one is exact */
	for (size_t i = 1; i < c.n; i++)
		if (c.r[i].pid == a && c.r[i - 1].pid == a) {
			assert_true(c.r[i].minflt >= c.r[i - 1].minflt);
			assert_true(c.r[i].utime_ns + c.r[i].stime_ns >= c.r[i - 1].utime_ns + c.r[i - 1].stime_ns);
		}
	driven_exit_exact(s, sock, a);
	mmk_prof_sampler_destroy(s);
}

/* Registration and the counter group: a target that faults while it is
 * registered and stops before the group is opened must not have its
 * registration values carried over (the group "unchanged" since it was
 * opened says nothing about the faults between the registration's stat
 * read and the open).  The child faults until a deadline swept across the
 * registration, then sleeps; 15 ms later a tick must not report fewer
 * faults than /proc had before it: never for a carry, and for an estimate
 * not fewer user-mode faults (the child takes no kernel-mode ones here). */
static void test_sampler_counter_registration(void **state)
{
	(void)state;
	mmk_prof_sampler *s;
	int sock;
	pid_t a = driven_target(NULL, &s, &sock);
	mmk__prof_counts k0, k1;
	mmk__prof_sampler_counts(s, &k0);
	assert_int_equal(mmk_prof_sampler_remove(s, a), 0);
	if (k0.cnt_targets != 1) {
		driven_end(s, sock, a);
		MMK_SKIP("no perf counter group (perf_event_open of software counters failed, or MMK_PROF_NO_PERF set)");
	}
	/* the child on one CPU, this thread on another: the child faults
	 * while the registration runs */
	cpu_set_t self0, one;
	assert_int_equal(sched_getaffinity(0, sizeof self0, &self0), 0);
	bool pinned = CPU_COUNT(&self0) >= 2;
	if (pinned) {
		int cpus[2], k = 0;
		for (int i = 0; i < CPU_SETSIZE && k < 2; i++)
			if (CPU_ISSET(i, &self0))
				cpus[k++] = i;
		CPU_ZERO(&one);
		CPU_SET(cpus[1], &one);
		assert_int_equal(sched_setaffinity(a, sizeof one, &one), 0);
		CPU_ZERO(&one);
		CPU_SET(cpus[0], &one);
		assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
	}
	int stale_carry = 0, short_est = 0, short_full = 0, carries = 0, ests = 0;
	uint64_t worst = 0;
	for (int trial = 0; trial < 60; trial++) {
		uint64_t start = mmk_prof_now_ns() + 2000000ull;
		uint64_t dl = start + (uint64_t)(trial % 30) * 10000ull; /* 0-290 us into the registration */
		char c = 'D';
		assert_int_equal(write(sock, &c, 1), 1);
		assert_int_equal(write(sock, &dl, sizeof dl), (ssize_t)sizeof dl);
		while (mmk_prof_now_ns() < start)
			;
		assert_int_equal(mmk_prof_sampler_add(s, a, -1, MMK_PROF_ADD_ABSOLUTE), 0);
		usleep(15000);
		uint64_t before = stat_minflt(a);
		mmk__prof_sampler_counts(s, &k0);
		assert_true(mmk_prof_sampler_tick(s, (uint64_t)trial + 1) >= 1);
		mmk__prof_sampler_counts(s, &k1);
		mmk_prof_record r;
		assert_int_equal(mmk_prof_sampler_last(s, a, &r), 0);
		bool carry = k1.cnt_carry + k1.perf_carry > k0.cnt_carry + k0.perf_carry;
		bool est = k1.cnt_sample > k0.cnt_sample;
		carries += carry;
		ests += est;
		if (r.minflt < before) {
			if (before - r.minflt > worst)
				worst = before - r.minflt;
			fprintf(stderr, "# deadline +%llu us: %s %llu faults behind /proc\n",
				(unsigned long long)(dl - start) / 1000, carry ? "carried over" : est ? "estimate" : "full read",
				(unsigned long long)(before - r.minflt));
			stale_carry += carry;
			short_est += est;
			short_full += !carry && !est;
		}
		assert_int_equal(mmk_prof_sampler_remove(s, a), 0);
	}
	fprintf(stderr, "# %d carries, %d estimates, %d full reads; %d stale carries, %d short estimates, %d short full reads (worst %llu faults)\n",
		carries, ests, 60 - carries - ests, stale_carry, short_est, short_full, (unsigned long long)worst);
	if (pinned)
		assert_int_equal(sched_setaffinity(0, sizeof self0, &self0), 0);
	mmk_prof_sampler_destroy(s);
	command(sock, 'x');
	close(sock);
	waitpid(a, NULL, 0);
	/* whichever way the first sample is taken (a new target is read in
	 * full until a full read shows the group sees all its faults, so
	 * today it is a full read), it is never behind /proc */
	assert_int_equal(stale_carry, 0);
	assert_int_equal(short_est, 0);
	assert_int_equal(short_full, 0);
}

/* A target that lost its switch-record buffer (switching too often) and
 * then went multi-threaded must not get one back when the counter group
 * finds it idle: the records cover the leader only, and the rate check
 * that would drop the buffer again looks at single-threaded targets only. */
static void test_sampler_counter_no_buffer_threads(void **state)
{
	(void)state;
	mmk_prof_sampler *s;
	int sock;
	pid_t a = driven_target(NULL, &s, &sock);
	mmk__prof_counts k;
	mmk__prof_sampler_counts(s, &k);
	if (k.cnt_targets != 1 || k.perf_targets != 1) {
		driven_end(s, sock, a);
		MMK_SKIP("no perf counter group or no switch-record buffer");
	}
	uint64_t tick = 0;
	command(sock, 'y');
	for (int i = 0; i < 4; i++)
		check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k);
	assert_int_equal(k.perf_dropped, 1);
	assert_int_equal(k.perf_targets, 0);
	command(sock, 'T');
	/* 1.5 s: a full read finds two threads; idle from then on (the
	 * buffer's second, the counter group carrying it over) */
	int watched = 0, multi = 0;
	for (int i = 0; i < 100; i++) {
		mmk_prof_record r = check_tick(s, a, &tick);
		mmk__prof_sampler_counts(s, &k);
		multi += r.nthreads == 2;
		watched += r.nthreads == 2 && k.perf_targets;
	}
	fprintf(stderr, "# %d of %d samples of two threads with the leader's switch records watched (%llu opens)\n", watched,
		multi, (unsigned long long)k.perf_opens);
	assert_true(multi > 50);
	assert_int_equal(watched, 0);
	driven_end(s, sock, a);
}

/* The primitive's counter group counts every member from the open on, on a
 * thread that runs (and faults) without a context switch: members that join
 * a group already counting start only at the next switch (6.18). */
static void test_counter_group_counts_at_once(void **state)
{
	(void)state;
	if (getenv("MMK_PROF_NO_PERF"))
		MMK_SKIP("MMK_PROF_NO_PERF is set: no perf events");
	pid_t c = fork();
	assert_true(c >= 0);
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		char *m = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		for (size_t i = 0;; i++) {
			if (i % 64 == 0)
				madvise(m, 64 * 4096, MADV_DONTNEED);
			m[i % 64 * 4096] = 1;
		}
	}
	usleep(100000);
	static const uint64_t cfg[3] = { PERF_COUNT_SW_TASK_CLOCK, PERF_COUNT_SW_PAGE_FAULTS_MIN,
					 PERF_COUNT_SW_PAGE_FAULTS_MAJ };
	int missed = 0, opened = 0;
	for (int k = 0; k < 10; k++) {
		int fds[3];
		if (mmk__perf_open_counters(c, cfg, 3, fds, MMK__PERF_THREADS) < 0 &&
		    mmk__perf_open_counters(c, cfg, 3, fds, 0) < 0)
			break;
		opened++;
		uint64_t a[3], b[3];
		usleep(1000);
		assert_int_equal(mmk__perf_read_counters(fds[0], a, 3), 0);
		usleep(3000);
		assert_int_equal(mmk__perf_read_counters(fds[0], b, 3), 0);
		missed += b[0] > a[0] && b[1] == a[1];
		mmk__perf_close_counters(fds, 3);
	}
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	if (!opened)
		MMK_SKIP("perf_event_open of software counters failed here");
	fprintf(stderr, "# %d of %d groups counted time but no faults on a faulting thread\n", missed, opened);
	assert_int_equal(missed, 0);
}

/* Counter groups (three descriptors each) never cost a target its
 * registration: out of descriptors, a new target takes a group's. */
static int descriptors_child(void)
{
	struct rlimit rl = { 256, 256 };
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 77;
	enum { N = 120 };
	pid_t k[N];
	for (int i = 0; i < N; i++) {
		k[i] = fork();
		if (k[i] < 0)
			return 77;
		if (k[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			for (;;)
				pause();
		}
	}
	int n[2] = { 0, 0 };
	for (int mode = 0; mode < 2; mode++) {
		mmk_prof_sampler *s;
		if (mmk_prof_sampler_create(&s, NULL) != 0)
			return 1;
		for (int i = 0; i < N; i++) {
			if (mmk_prof_sampler_add(s, k[i], -1, mode ? MMK_PROF_ADD_NO_PERF : 0) < 0)
				break;
			n[mode]++;
		}
		mmk_prof_sampler_destroy(s);
	}
	for (int i = 0; i < N; i++) {
		kill(k[i], SIGKILL);
		waitpid(k[i], NULL, 0);
	}
	fprintf(stderr, "# descriptor limit 256: %d targets with perf events, %d without\n", n[0], n[1]);
	/* with perf each target keeps one more descriptor (its switch-record
	 * buffer): 5 against 4 */
	return n[0] * 5 >= n[1] * 4 - 5 ? 0 : 2;
}

static void test_sampler_counter_descriptors(void **state)
{
	(void)state;
	in_child(descriptors_child, "cannot lower the descriptor limit or fork 120 processes");
}

static void test_sampler_idle_shortcuts(void **state)
{
	(void)state;
	collect c = {0};
	mmk_prof_sampler *s;
	int sock;
	pid_t a = driven_target(&c, &s, &sock); /* started and blocked in read() */
	mmk__prof_counts k0, k1;
	mmk__prof_sampler_counts(s, &k0);
	bool perf = k0.perf_targets == 1;
	if (!perf)
		fprintf(stderr, "# switch records unavailable (perf_event_open of a dummy event failed, or MMK_PROF_NO_PERF set): "
				"only the schedstat rule is tested\n");
	uint64_t tick = 0;
	/* asleep: carried over, by schedstat or the counter group first, then
	 * by the switch records (one more tick: see test_sampler_pid_reuse) */
	for (int i = 0; i < 5; i++)
		check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k1);
	assert_true(k1.sched_carry + k1.perf_carry + k1.cnt_carry >= 3);
	if (perf)
		assert_true(k1.perf_carry >= 2);
	/* ran and slept again: one full read that sees every fault */
	mmk_prof_record r0 = check_tick(s, a, &tick);
	command(sock, 't');
	mmk__prof_sampler_counts(s, &k0);
	mmk_prof_record r1 = check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k1);
	/* a full read, or one read of the counter group (user-mode faults:
	 * the group sees every one of them) */
	assert_int_equal(k1.full + k1.cnt_sample, k0.full + k0.cnt_sample + 1);
	assert_true(r1.minflt >= r0.minflt + 1000);
	assert_int_equal(r1.minflt, stat_minflt(a));
	for (int i = 0; i < 3; i++)
		check_tick(s, a, &tick);
	mmk__prof_sampler_counts(s, &k0);
	if (perf)
		assert_true(k0.perf_carry >= k1.perf_carry + 2);
	/* running without a switch (a spin that faults): never stale */
	cpu_set_t all, one;
	bool pinned = false;
	if (sched_getaffinity(0, sizeof all, &all) == 0 && CPU_COUNT(&all) >= 2) {
		/* the spinner and this thread on different CPUs, so that the
		 * spinner is not switched out when this thread wakes up */
		int cpus[2], n = 0;
		for (int i = 0; i < CPU_SETSIZE && n < 2; i++)
			if (CPU_ISSET(i, &all))
				cpus[n++] = i;
		CPU_ZERO(&one);
		CPU_SET(cpus[1], &one);
		pinned = sched_setaffinity(a, sizeof one, &one) == 0;
		CPU_ZERO(&one);
		CPU_SET(cpus[0], &one);
		pinned = pinned && sched_setaffinity(0, sizeof one, &one) == 0;
	}
	command(sock, 's');
	for (int i = 0; i < 10; i++)
		check_tick(s, a, &tick);
	if (pinned)
		sched_setaffinity(0, sizeof all, &all);
	char ch;
	assert_int_equal(read(sock, &ch, 1), 1);
	usleep(5000);
	r1 = check_tick(s, a, &tick);
	assert_int_equal(r1.minflt, stat_minflt(a));
	if (perf) {
		/* switching thousands of times a second: the buffer is dropped
		 * (it costs the target at every switch) ... */
		command(sock, 'y');
		for (int i = 0; i < 12; i++)
			check_tick(s, a, &tick);
		mmk__prof_sampler_counts(s, &k1);
		assert_int_equal(k1.perf_dropped, 1);
		assert_int_equal(k1.perf_targets, 0);
		/* ... and comes back once it has been idle for a second */
		for (int i = 0; i < 100 && k1.perf_targets == 0; i++) {
			check_tick(s, a, &tick);
			mmk__prof_sampler_counts(s, &k1);
		}
		assert_int_equal(k1.perf_targets, 1);
		mmk__prof_sampler_counts(s, &k0);
		for (int i = 0; i < 4; i++)
			check_tick(s, a, &tick);
		mmk__prof_sampler_counts(s, &k1);
		assert_true(k1.perf_carry >= k0.perf_carry + 2);
		command(sock, 't');
		r1 = check_tick(s, a, &tick);
		assert_int_equal(r1.minflt, stat_minflt(a));
	}
	/* killed while carried over: the kill runs it, so the next tick (no
	 * reap) reports the exit */
	for (int i = 0; i < 3; i++)
		check_tick(s, a, &tick);
	assert_int_equal(kill(a, SIGKILL), 0);
	assert_int_equal(waitpid(a, NULL, 0), a);
	close(sock);
	c.n = 0;
	mmk_prof_sampler_tick(s, ++tick);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.r[0].kind, MMK_PROF_EXIT);
	assert_int_equal(mmk_prof_sampler_list(s, NULL, 0), 0);
	/* a second thread: no switch records from the next full read on (at
	 * most a second later), and no shortcut but the counter group's
	 * (which counts the new thread too where the kernel can: 5.13+) */
	pid_t b = driven_child(&sock);
	command(sock, 't');
	assert_int_equal(mmk_prof_sampler_add(s, b, -1, MMK_PROF_ADD_ABSOLUTE), 0);
	for (int i = 0; i < 3; i++)
		check_tick(s, b, &tick);
	command(sock, 'T');
	check_tick(s, b, &tick);
	mmk__prof_sampler_counts(s, &k0);
	for (int i = 0; i < 100 && k0.perf_targets; i++) {
		check_tick(s, b, &tick);
		mmk__prof_sampler_counts(s, &k0);
	}
	assert_int_equal(k0.perf_targets, 0);
	for (int i = 0; i < 3; i++)
		check_tick(s, b, &tick);
	command(sock, 't');
	mmk__prof_sampler_counts(s, &k0);
	r1 = check_tick(s, b, &tick);
	mmk__prof_sampler_counts(s, &k1);
	assert_int_equal(k1.sched_carry, k0.sched_carry);
	assert_int_equal(k1.perf_carry, k0.perf_carry);
	assert_int_equal(r1.minflt, stat_minflt(b));
	driven_exit_exact(s, sock, b);
	/* the leader thread exits and one other thread lives on (the zombie
	 * leader still counts in num_threads here, but the sampler must not
	 * rely on that): the leader's switches and schedstat stopped for good */
	int sock2;
	pid_t d = driven_child(&sock2);
	command(sock2, 't');
	assert_int_equal(mmk_prof_sampler_add(s, d, -1, MMK_PROF_ADD_ABSOLUTE), 0);
	for (int i = 0; i < 3; i++)
		check_tick(s, d, &tick);
	char ch2 = 'L';
	assert_int_equal(write(sock2, &ch2, 1), 1);
	assert_int_equal(read(sock2, &ch2, 1), 1); /* answered by the new thread */
	for (int i = 0; i < 4; i++)
		check_tick(s, d, &tick);
	for (int k = 0; k < 3; k++) {
		command(sock2, 't');
		r1 = check_tick(s, d, &tick);
		assert_int_equal(r1.minflt, stat_minflt(d));
	}
	command(sock2, 'x');
	close(sock2);
	assert_int_equal(waitpid(d, NULL, 0), d);
	/* a thread other than the leader calls execve between two samples:
	 * the watched leader thread is retired (its buffer never moves again)
	 * and the new image, idle for a few samples and then running, must
	 * never be carried over on the dead buffer */
	pid_t e = driven_child(&sock2);
	command(sock2, 't');
	assert_int_equal(mmk_prof_sampler_add(s, e, -1, MMK_PROF_ADD_ABSOLUTE), 0);
	mmk__prof_counts k2;
	mmk__prof_sampler_counts(s, &k0);
	for (int i = 0; i < 4; i++)
		check_tick(s, e, &tick);
	mmk__prof_sampler_counts(s, &k1);
	if (perf)
		assert_true(k1.perf_carry >= k0.perf_carry + 2);
	r0 = check_tick(s, e, &tick);
	ch2 = 'E';
	assert_int_equal(write(sock2, &ch2, 1), 1);
	assert_int_equal(read(sock2, &ch2, 1), 1); /* answered by the new image */
	assert_int_equal(ch2, 'E');
	bool ran = false;
	for (int i = 0; i < 200 && !ran; i++) {
		r1 = check_tick(s, e, &tick);
		struct pollfd pf = { sock2, POLLIN, 0 };
		ran = poll(&pf, 1, 0) == 1;
	}
	assert_true(ran);
	assert_int_equal(read(sock2, &ch2, 1), 1);
	assert_int_equal(ch2, 'e');
	r1 = check_tick(s, e, &tick);
	assert_true(r1.minflt >= r0.minflt + 10000);
	assert_int_equal(r1.minflt, stat_minflt(e));
	mmk__prof_sampler_counts(s, &k2);
	if (perf)
		assert_int_equal(k2.perf_dead, k1.perf_dead + 1);
	close(sock2);
	assert_int_equal(waitpid(e, NULL, 0), e);
	/* two threads at registration: no buffer is opened at all */
	pid_t f = driven_child(&sock2);
	command(sock2, 'T');
	mmk__prof_sampler_counts(s, &k0);
	assert_int_equal(mmk_prof_sampler_add(s, f, -1, MMK_PROF_ADD_ABSOLUTE), 0);
	check_tick(s, f, &tick);
	mmk__prof_sampler_counts(s, &k1);
	assert_int_equal(k1.perf_opens, k0.perf_opens);
	assert_int_equal(k1.perf_targets, 0);
	command(sock2, 'x');
	close(sock2);
	assert_int_equal(waitpid(f, NULL, 0), f);
	mmk_prof_sampler_destroy(s);
}

/* The user's perf mlock allowance used up (run in a child as an
 * unprivileged user with RLIMIT_MEMLOCK 0, the allowance filled by buffers
 * of its own): one sampler-wide attempt after 1 s, 3 s, ... instead of one
 * per target per second; buffers come back once the allowance is free.
 * Returns 0, 77 (cannot be set up) or the number of the failed check. */
static int allowance_child(void)
{
	if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
		return 77;
	prctl(PR_SET_DUMPABLE, 1); /* the uid change cleared it: perf needs it */
	struct rlimit rl = { 0, 0 };
	if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0)
		return 77;
	long pg = sysconf(_SC_PAGESIZE);
	struct {
		int fd;
		void *m;
		size_t len;
	} hog[256];
	int nh = 0;
	for (int k = 12; k >= 0 && nh < 256; k--) {
		for (;;) {
			int fd = mmk__perf_open_sw(PERF_COUNT_SW_DUMMY, 0, 0);
			if (fd < 0)
				return 77; /* no perf for this user */
			size_t len = (size_t)pg * ((1u << k) + 1);
			void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
			if (m == MAP_FAILED || nh == 256) {
				if (m != MAP_FAILED)
					munmap(m, len);
				close(fd);
				break;
			}
			hog[nh].fd = fd;
			hog[nh].m = m;
			hog[nh++].len = len;
		}
	}
	pid_t kid[3];
	for (int i = 0; i < 3; i++) {
		kid[i] = fork();
		if (kid[i] < 0)
			return 77;
		if (kid[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			for (;;)
				pause();
		}
	}
	int ret = 0;
	mmk_prof_sampler *s;
	if (mmk_prof_sampler_create(&s, NULL) != 0)
		return 1;
	for (int i = 0; i < 3; i++)
		if (mmk_prof_sampler_add(s, kid[i], -1, 0) != 0)
			ret = ret ? ret : 2;
	mmk__prof_counts k;
	mmk__prof_sampler_counts(s, &k);
	fprintf(stderr, "# allowance used up: %d buffers of this user, at add: %llu opens, %llu maps failed\n", nh,
		(unsigned long long)k.perf_opens, (unsigned long long)k.perf_map_failed);
	if (!ret && (k.perf_opens != 1 || k.perf_map_failed != 1 || k.perf_targets != 0))
		ret = 3;
	uint64_t t0 = mmk_prof_now_ns(), tick = 0;
	while (!ret && mmk_prof_now_ns() - t0 < 2500000000ull) {
		usleep(20000);
		mmk_prof_sampler_tick(s, ++tick);
	}
	mmk__prof_sampler_counts(s, &k);
	fprintf(stderr, "# after 2.5 s of 50 Hz samples: %llu opens, %llu maps failed\n",
		(unsigned long long)k.perf_opens, (unsigned long long)k.perf_map_failed);
	/* add, ~1 s (and ~3 s): one per sampler, not 3 per second */
	if (!ret && (k.perf_opens < 2 || k.perf_opens > 3 || k.perf_map_failed != k.perf_opens || k.perf_targets != 0))
		ret = 4;
	for (int i = 0; i < nh; i++) {
		munmap(hog[i].m, hog[i].len);
		close(hog[i].fd);
	}
	t0 = mmk_prof_now_ns();
	while (!ret && k.perf_targets < 3 && mmk_prof_now_ns() - t0 < 6000000000ull) {
		usleep(20000);
		mmk_prof_sampler_tick(s, ++tick);
		mmk__prof_sampler_counts(s, &k);
	}
	fprintf(stderr, "# allowance free again: %u of 3 targets watched after %.1f s\n", k.perf_targets,
		(double)(mmk_prof_now_ns() - t0) / 1e9);
	if (!ret && k.perf_targets != 3)
		ret = 5;
	mmk_prof_sampler_destroy(s);
	for (int i = 0; i < 3; i++) {
		kill(kid[i], SIGKILL);
		waitpid(kid[i], NULL, 0);
	}
	return ret;
}

static void test_sampler_perf_allowance(void **state)
{
	(void)state;
	if (getenv("MMK_PROF_NO_PERF"))
		MMK_SKIP("MMK_PROF_NO_PERF is set: no switch-record buffers to run out of");
	in_child(allowance_child, "cannot use up a perf mlock allowance here (no unprivileged perf, or no uid 65534)");
}

static void test_timer_no_drift(void **state)
{
	(void)state;
	mmk_prof_timer t;
	assert_int_equal(mmk_prof_timer_start(&t, 10), -EINVAL);
	assert_int_equal(mmk_prof_timer_start(&t, 2000000), 0); /* 500 Hz */
	int64_t late, worst = 0;
	for (int i = 0; i < 100; i++) {
		assert_int_equal(mmk_prof_timer_wait(&t, &late), 0);
		assert_true(late >= 0);
		if (late > worst)
			worst = late;
		if (i == 50)
			usleep(5000); /* miss ~2 periods: they are counted, the schedule holds */
	}
	uint64_t now = mmk_prof_now_ns();
	uint64_t due = t.start_ns + t.tick * t.period_ns;
	fprintf(stderr, "# 100 waits: tick %llu skipped %llu worst lateness %lld us\n", (unsigned long long)t.tick,
		(unsigned long long)t.skipped, (long long)worst / 1000);
	assert_true(t.skipped >= 1);
	assert_int_equal(t.tick, 100 + t.skipped);
	assert_true(now >= due);
	assert_true(now - due < 2000000); /* still on the absolute grid */
	mmk_prof_timer_stop(&t);
}

/* ---- daemon ------------------------------------------------------------------ */
typedef struct dmn {
	char dir[128];
	pid_t pid;
} dmn;

static void daemon_start(dmn *d, uid_t as_uid, double rate)
{
	snprintf(d->dir, sizeof d->dir, "/tmp/mmkit-test-prof-XXXXXX");
	assert_non_null(mkdtemp(d->dir));
	if (as_uid)
		assert_int_equal(chown(d->dir, as_uid, as_uid), 0);
	int p[2];
	assert_int_equal(pipe(p), 0);
	d->pid = fork();
	assert_true(d->pid >= 0);
	if (d->pid == 0) {
		close(p[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
		if (as_uid && (setgid(as_uid) < 0 || setuid(as_uid) < 0))
			_exit(3);
		mmk_prof_daemon_opts o = { .dir = d->dir, .rate_hz = rate, .ready_fd = p[1], .records = 1000 };
		int err = mmk_prof_daemon_run(&o);
		_exit(err < 0 ? 1 : 0);
	}
	close(p[1]);
	char c;
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
}

static void daemon_stop(dmn *d)
{
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	char path[200];
	snprintf(path, sizeof path, "%s/%s", d->dir, MMK__PROF_SOCK);
	unlink(path);
	rmdir(d->dir);
}

static void test_daemon_control(void **state)
{
	(void)state;
	dmn d;
	daemon_start(&d, 0, 100);
	struct stat st;
	char path[200];
	snprintf(path, sizeof path, "%s/%s", d.dir, MMK__PROF_SOCK);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 077, 0);
	/* a second daemon on the same directory is refused */
	mmk_prof_daemon_opts o2 = { .dir = d.dir, .ready_fd = -1 };
	assert_int_equal(mmk_prof_daemon_run(&o2), -EADDRINUSE);
	char rep[256];
	assert_int_equal(mmk__prof_call(d.dir, "R abc", rep, sizeof rep, NULL), -EINVAL);
	assert_int_equal(mmk__prof_call(d.dir, "R -4", rep, sizeof rep, NULL), -EINVAL);
	assert_int_equal(mmk__prof_call(d.dir, "X", rep, sizeof rep, NULL), -EINVAL);
	assert_int_equal(mmk_prof_register(d.dir, -4), -EINVAL);
	assert_int_equal(mmk_prof_register(d.dir, 0x3ffffff0), -ESRCH);
	assert_int_equal(mmk_prof_unregister(d.dir, getpid()), -ENOENT);
	int go;
	pid_t c = toucher(300, &go);
	assert_int_equal(mmk_prof_register(d.dir, c), 0);
	assert_int_equal(mmk_prof_register(d.dir, c), -EEXIST);
	assert_int_equal(mmk_prof_register(d.dir, 0), 0); /* self */
	pid_t l[8];
	assert_int_equal(mmk_prof_list(d.dir, l, 8), 2);
	assert_int_equal(mmk_prof_unregister(d.dir, 0), 0);
	assert_int_equal(mmk_prof_list(d.dir, l, 8), 1);
	assert_int_equal(l[0], c);
	/* the ring: read-only, has the REGISTER record and samples */
	mmk_prof_ring *ring;
	assert_int_equal(mmk_prof_ring_open(d.dir, &ring), 0);
	assert_int_equal(write(go, "g", 1), 1);
	usleep(100000);
	uint64_t pos = mmk_prof_ring_oldest(ring), missed = 0;
	mmk_prof_record r;
	int regs = 0, samples = 0;
	uint64_t maxmin = 0;
	while (mmk_prof_ring_read(ring, &pos, &r, &missed) == 1) {
		if (r.pid != c)
			continue;
		regs += r.kind == MMK_PROF_REGISTER;
		samples += r.kind == MMK_PROF_SAMPLE;
		if (r.minflt > maxmin)
			maxmin = r.minflt;
	}
	assert_int_equal(regs, 1);
	assert_true(samples >= 3);
	assert_true(maxmin >= 300);
	/* exit while registered: dropped automatically (zombie, not reaped yet) */
	assert_int_equal(write(go, "g", 1), 1);
	close(go);
	siginfo_t si;
	assert_int_equal(waitid(P_PID, (id_t)c, &si, WEXITED | WNOWAIT), 0);
	int n = -1;
	for (int i = 0; i < 100 && n != 0; i++) {
		usleep(10000);
		n = mmk_prof_list(d.dir, l, 8);
	}
	assert_int_equal(n, 0);
	bool exit_rec = false;
	while (mmk_prof_ring_read(ring, &pos, &r, &missed) == 1)
		exit_rec |= r.pid == c && r.kind == MMK_PROF_EXIT;
	assert_true(exit_rec);
	waitpid(c, NULL, 0);
	mmk_prof_stats sts;
	assert_int_equal(mmk_prof_stats_get(d.dir, &sts), 0);
	assert_true(sts.ticks > 5);
	assert_true(sts.rate_hz > 99 && sts.rate_hz < 101);
	mmk_prof_ring_destroy(ring);
	assert_int_equal(mmk_prof_shutdown(d.dir), 0);
	int status;
	assert_int_equal(waitpid(d.pid, &status, 0), d.pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(mmk_prof_list(d.dir, l, 8) < 0, 1); /* gone */
	rmdir(d.dir);
}

static void test_daemon_credentials(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		/* unprivileged: the daemon refuses root's processes */
		dmn d;
		daemon_start(&d, 0, 20);
		assert_int_equal(mmk_prof_register(d.dir, 1), -EPERM);
		daemon_stop(&d);
		return;
	}
	const uid_t nobody = 65534;
	/* 1. another user cannot even connect to root's daemon */
	dmn d;
	daemon_start(&d, 0, 20);
	pid_t c = fork();
	if (c == 0) {
		if (setgid(nobody) < 0 || setuid(nobody) < 0)
			_exit(3);
		int err = mmk_prof_register(d.dir, 0);
		_exit(err == -EACCES ? 0 : 10 + (-err & 0xff));
	}
	int status;
	waitpid(c, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	daemon_stop(&d);
	/* 2. a user's daemon: the user may register its own processes, not root's */
	daemon_start(&d, nobody, 20);
	c = fork();
	if (c == 0) {
		if (setgid(nobody) < 0 || setuid(nobody) < 0)
			_exit(3);
		if (mmk_prof_register(d.dir, 1) != -EPERM)
			_exit(4);
		if (mmk_prof_register(d.dir, 0) != 0)
			_exit(5);
		if (mmk_prof_unregister(d.dir, 0) != 0)
			_exit(6);
		_exit(0);
	}
	waitpid(c, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* root may register anything with it */
	assert_int_equal(mmk_prof_register(d.dir, 1), 0);
	daemon_stop(&d);
}

static void test_csv_roundtrip(void **state)
{
	(void)state;
	uint64_t seed = mmk_test_seed();
	for (int i = 0; i < 1000; i++) {
		mmk_prof_record r = { .t_ns = mmk_test_rand(&seed) % 100000000000000ull,
				      .pid = (int32_t)(mmk_test_rand(&seed) % 4000000) + 1,
				      .minflt = mmk_test_rand(&seed) >> 8,
				      .majflt = mmk_test_rand(&seed) % 100000,
				      .utime_ns = (mmk_test_rand(&seed) % 1000000) * 10000000ull,
				      .stime_ns = (mmk_test_rand(&seed) % 1000000) * 10000000ull,
				      .util_ppm = (uint32_t)(mmk_test_rand(&seed) % 2000001) };
		r.t_ns -= r.t_ns % 1000; /* CSV keeps microseconds */
		char line[256];
		assert_true(mmk_prof_csv_format(&r, line, sizeof line) > 0);
		mmk_prof_record b;
		assert_int_equal(mmk_prof_csv_parse(line, &b), 0);
		assert_int_equal(b.pid, r.pid);
		assert_int_equal(b.minflt, r.minflt);
		assert_int_equal(b.majflt, r.majflt);
		assert_true(b.t_ns / 1000 == r.t_ns / 1000);
		assert_int_equal(b.utime_ns, r.utime_ns);
		assert_int_equal(b.stime_ns, r.stime_ns);
		assert_int_equal(b.util_ppm, r.util_ppm);
	}
	mmk_prof_record b;
	assert_int_equal(mmk_prof_csv_parse("1.0,2,3,4,5.0,6.0", &b), -EINVAL);
	assert_int_equal(mmk_prof_csv_parse("1.0,2,3,4,5.0,6.0,0.5,extra", &b), -EINVAL);
	assert_int_equal(mmk_prof_csv_parse("t_s,pid,minflt,majflt,utime_s,stime_s,util", &b), -EINVAL);
	assert_int_equal(mmk_prof_csv_parse("1.5,2,3,4,5.0,6.0,0.5\n", &b), 0);
}

static void test_procstat_parse(void **state)
{
	(void)state;
	/* a command name with spaces and parentheses */
	int fd = memfd_create("stat", MFD_CLOEXEC);
	const char *line = "123 (a) b (c) S 1 2 3 4 5 6 70 8 90 10 300 400 5 6 20 0 3 0 99 1 1\n";
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	mmk__procstat ps;
	assert_int_equal(mmk__procstat_read(fd, &ps), 0);
	assert_int_equal(ps.state, 'S');
	assert_int_equal(ps.minflt, 70);
	assert_int_equal(ps.cminflt, 8);
	assert_int_equal(ps.majflt, 90);
	assert_int_equal(ps.cmajflt, 10);
	assert_int_equal(ps.nthreads, 3);
	uint64_t tk = 1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK);
	assert_int_equal(ps.utime_ns, 300 * tk);
	assert_int_equal(ps.stime_ns, 400 * tk);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--exec-child"))
		return exec_child(atoi(argv[2]));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ring_basic),
		cmocka_unit_test(test_ring_stress),
		cmocka_unit_test(test_procstat_parse),
		cmocka_unit_test(test_sampler_accuracy),
		cmocka_unit_test(test_sampler_exit),
		cmocka_unit_test(test_sampler_pid_reuse),
		cmocka_unit_test(test_sampler_idle_shortcuts),
		cmocka_unit_test(test_sampler_counter_group),
		cmocka_unit_test(test_sampler_counter_descriptors),
		cmocka_unit_test(test_counter_group_counts_at_once),
		cmocka_unit_test(test_sampler_counter_registration),
		cmocka_unit_test(test_sampler_counter_no_buffer_threads),
		cmocka_unit_test(test_sampler_perf_allowance),
		cmocka_unit_test(test_timer_no_drift),
		cmocka_unit_test(test_daemon_control),
		cmocka_unit_test(test_daemon_credentials),
		cmocka_unit_test(test_csv_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
