/*
 * snapshot/try.c - mmk_try: run a function under a save point; roll back on
 * error, crash or time-out.
 *
 * Invariants: a frame is linked into this thread's frame list *before* the
 * save point is pushed, so a process-wide restore (which may roll back the
 * thread's TLS) puts back a list that still contains the frame; the crash
 * path siglongjmps to the innermost frame of the faulting thread only; on
 * every exit path the previous signal dispositions and the frame list are
 * put back and the timer is deleted.  Crash handlers are installed only for
 * the duration of the call (SIGBUS is the lazy backend's handler, which
 * offers foreign faults here first).
 */
#include "snapshot/snap.h"
#include "sys/state.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct try_frame {
	sigjmp_buf env;
	struct try_frame *prev;
	volatile int signo;
	/* kept in the frame (memory), not in registers, across siglongjmp */
	mmk_snap *snap;
	timer_t timer;
	bool have_timer;
	int depth0;
} try_frame;

static __thread try_frame *tls_top;

#define TIMER_SIG (SIGRTMIN + 7)

static const int crash_sigs[] = { SIGSEGV, SIGFPE, SIGILL, SIGABRT };
#define NCRASH (sizeof crash_sigs / sizeof crash_sigs[0])

void mmk__try_crash(int sig)
{
	try_frame *f = tls_top;
	if (!f)
		return;
	f->signo = sig;
	siglongjmp(f->env, 1);
}

static void on_crash(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	/* a write to an mprotect-tracked page is not a crash */
	if (sig == SIGSEGV && mmk__lazy_fault(sig, si))
		return;
	mmk__try_crash(sig);
	/* not inside a try on this thread: default action */
	signal(sig, SIG_DFL);
	if (sig == SIGABRT || sig == TIMER_SIG)
		raise(sig);
}

/* The part that lives across sigsetjmp: everything it needs after a
 * siglongjmp is in the frame (memory), nothing in registers. */
static __attribute__((noinline)) int run(try_frame *f, int (*fn)(void *), void *arg,
					 mmk_try_opts *opts)
{
	if (sigsetjmp(f->env, 1) == 0) {
		int r = fn(arg);
		if (f->have_timer) {
			timer_delete(f->timer);
			f->have_timer = false;
		}
		if (opts)
			opts->fn_result = r;
		if (r >= 0) {
			mmk_snap_drop(f->snap);
			return 0;
		}
		mmk__snap_restore(f->snap, false);
		mmk_snap_drop(f->snap);
		return MMK_EFAILED;
	}
	/* crashed or timed out: this thread's frame is current again */
	if (f->have_timer) {
		timer_delete(f->timer);
		f->have_timer = false;
	}
	/* the crash may have happened inside nested save points */
	while (f->snap->depth > f->depth0 + 1)
		mmk_snap_drop(f->snap);
	mmk_snap_restore(f->snap);
	mmk_snap_drop(f->snap);
	if (opts)
		opts->signo = f->signo;
	return f->signo == TIMER_SIG ? MMK_ETIMEDOUT : MMK_ECRASHED;
}

int mmk_try(mmk_snap *s, int (*fn)(void *arg), void *arg, mmk_try_opts *opts)
{
	if (!fn)
		return -EINVAL;
	if (!s) {
		extern MMK_HIDDEN mmk_snap *mmk__mmcontext_snap(int *err);
		int err = 0;
		s = mmk__mmcontext_snap(&err);
		if (!s)
			return err;
	}
	int rc = mmk__lazy_install_handler();
	if (rc < 0)
		return rc;
	struct sigaction sa, old[NCRASH], old_timer;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_crash;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NCRASH; i++)
		sigaction(crash_sigs[i], &sa, &old[i]);
	sigaction(TIMER_SIG, &sa, &old_timer);

	try_frame frame;
	frame.prev = tls_top;
	frame.signo = 0;
	frame.snap = s;
	frame.have_timer = false;
	frame.depth0 = s->depth;
	tls_top = &frame;
	int result = mmk_snap_save(s);
	if (result < 0)
		goto out;
	if (opts && opts->timeout_ms) {
		struct sigevent ev;
		memset(&ev, 0, sizeof ev);
		ev.sigev_notify = SIGEV_THREAD_ID;
		ev.sigev_signo = TIMER_SIG;
		ev._sigev_un._tid = gettid();
		if (timer_create(CLOCK_MONOTONIC, &ev, &frame.timer) < 0) {
			result = -errno;
			mmk_snap_drop(s);
			goto out;
		}
		frame.have_timer = true;
		struct itimerspec its = { 0 };
		its.it_value.tv_sec = opts->timeout_ms / 1000;
		its.it_value.tv_nsec = (long)(opts->timeout_ms % 1000) * 1000000L;
		timer_settime(frame.timer, 0, &its, NULL);
	}
	result = run(&frame, fn, arg, opts);
out:
	tls_top = frame.prev;
	for (size_t i = 0; i < NCRASH; i++)
		sigaction(crash_sigs[i], &old[i], NULL);
	sigaction(TIMER_SIG, &old_timer, NULL);
	return result;
}
