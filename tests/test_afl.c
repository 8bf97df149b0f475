/*
 * tests/test_afl.c - the AFL++ harness layer (mmkit/afl.h) without AFL++:
 * MMK_AFL_LOOP_WITH over a stand-in for AFL++'s loop function.  Checks that
 * every iteration starts from the memory of the first one (globals, static
 * locals, heap), that the loop runs exactly n inputs and ends without
 * calling the loop function again, that preserved ranges and excluded
 * buffers survive resets while their neighbours do not, that reset hooks
 * run, that MMK_AFL_RESET=0 turns the reset off, and that a crash in an
 * input still kills the process with its signal.  Untouched pages (left out
 * of the copy) must come back zero whoever wrote them (the loop's thread,
 * the kernel, another thread, a vfork child) and after an input unmapped or
 * write-protected their mapping; the PLT-slot check must leave no trace
 * (dlerror state) in the next input; plt_slots_kept counts accepted values.
 * Loop bodies only record into stack variables (the stack is never reset);
 * assertions come after the loop.
 */
/* the copy backend (where untouched pages are left out) for this program's
 * own test buffers on top of what a small target tracks */
#define MMK_AFL_COPY_MAX_PAGES 256
#include <mmkit/afl.h>

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define HEAP_RESET 0 /* sanitizer: process scope skips its heap */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEAP_RESET 0
#endif
#endif
#ifndef HEAP_RESET
#define HEAP_RESET 1
#endif

/* the stand-in for __afl_persistent_loop: its call count lives in shared
 * memory (a reset does not roll it back); returns 1 while inputs remain */
static unsigned long *calls, *inputs_left;

static int fake_loop(unsigned n)
{
	(void)n;
	++*calls;
	if (*inputs_left == 0)
		return 0;
	--*inputs_left;
	return 1;
}

static int setup(void **state)
{
	(void)state;
	if (!calls) {
		unsigned long *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return -1;
		calls = p;
		inputs_left = p + 1;
	}
	*calls = 0;
	*inputs_left = 100000; /* a bound, should a loop not end by itself */
	return 0;
}

static int g_counter;
static char g_table[3 * 4096];
static char *g_list;

static int touch_state(unsigned long it)
{
	static int s_local;
	int seen_dirty = g_counter != 0 || s_local != 0 || g_table[4096] != 0 || g_list != NULL;
	g_counter += (int)it + 1;
	s_local++;
	memset(g_table, (int)(it & 0x7f) + 1, sizeof g_table);
	char *p = malloc(100 + it * 64); /* leaked on purpose */
	if (p) {
		p[0] = 'x';
		g_list = p;
	}
	return seen_dirty;
}

static void loop_resets_everything(void **state)
{
	(void)state;
	unsigned long it = 0, dirty = 0;
	void *heap_top = NULL;
	int heap_moved = 0;
	const unsigned n = 200;
	while (MMK_AFL_LOOP_WITH(n, fake_loop)) {
		if (it == 0)
			heap_top = sbrk(0);
		else if (sbrk(0) != heap_top)
			heap_moved++;
		dirty += (unsigned long)touch_state(it);
		it++;
	}
	assert_int_equal(it, n);
	/* the loop function: first pass + one call per further input; the
	 * n-th input ends the loop without asking it again */
	assert_int_equal(*calls, n);
	assert_int_equal(dirty, 0);
	if (HEAP_RESET)
		assert_int_equal(heap_moved, 0);
	/* after the loop, memory is as before the first input */
	assert_int_equal(g_counter, 0);
	assert_null(g_list);
	assert_int_equal(g_table[0], 0);
	assert_null(mmk_afl_snap());
}

static void loop_ends_when_loop_function_says_so(void **state)
{
	(void)state;
	*inputs_left = 3;
	unsigned long it = 0, dirty = 0;
	while (MMK_AFL_LOOP_WITH(1000, fake_loop)) {
		dirty += (unsigned long)touch_state(it);
		it++;
	}
	assert_int_equal(it, 3);
	assert_int_equal(*calls, 4);
	assert_int_equal(dirty, 0);
	assert_int_equal(g_counter, 0);
}

static void loop_n1_runs_once(void **state)
{
	(void)state;
	unsigned long it = 0;
	while (MMK_AFL_LOOP_WITH(1, fake_loop)) {
		touch_state(it);
		it++;
	}
	assert_int_equal(it, 1);
	assert_int_equal(*calls, 1);
	assert_int_equal(g_counter, 0);
}

static unsigned long kept_sum;
static int not_kept;
static char big[8 * 4096] __attribute__((aligned(4096)));
static char near_big; /* shares no page with big's interior */
static void hook(void *arg)
{
	++*(unsigned long *)arg;
}

static void preserve_exclude_and_hooks(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* configuration is per process (before the first loop runs) */
		unsigned long hooks = 0;
		if (mmk_afl_preserve(&kept_sum, sizeof kept_sum) != 0 || mmk_afl_on_reset(hook, &hooks) != 0 ||
		    mmk_afl_exclude(big + 100, sizeof big - 200) != 0)
			_exit(10);
		if (mmk_afl_preserve(&kept_sum, 0) != -EINVAL)
			_exit(11);
		unsigned long it = 0, bad = 0;
		const unsigned n = 50;
		while (MMK_AFL_LOOP_WITH(n, fake_loop)) {
			if (kept_sum != it * (it + 1) / 2)
				bad |= 1; /* preserved: accumulates */
			if (not_kept != 0 || near_big != 0)
				bad |= 2; /* reset */
			if (big[4096 * 3] != (char)it)
				bad |= 4; /* excluded interior: keeps the last value */
			if (big[10] != 0)
				bad |= 8; /* partial first page: still tracked */
			if (it > 0 && hooks != it)
				bad |= 16;
			kept_sum += it + 1;
			not_kept += 5;
			near_big = 1;
			big[4096 * 3] = (char)(it + 1);
			big[10] = 1;
			it++;
			if (mmk_afl_iterations() != it - 1)
				bad |= 32;
		}
		if (mmk_afl_preserve(&not_kept, 4) != 0) /* not running any more */
			bad |= 64;
		_exit(bad == 0 && it == n && hooks == n ? 0 : 20 + (int)bad);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void reset_off_by_environment(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setenv("MMK_AFL_RESET", "0", 1);
		*inputs_left = 5;
		unsigned long it = 0, dirty = 0;
		while (MMK_AFL_LOOP_WITH(1000, fake_loop)) {
			dirty += (unsigned long)touch_state(it);
			it++;
		}
		/* no reset: the loop function decides, state leaks */
		_exit(it == 5 && dirty == 4 && mmk_afl_snap() == NULL ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* untouched before the loop: pages the harness leaves to the fault counter */
static char u_buf[2][16 * 4096] __attribute__((aligned(4096)));

/* Pages untouched at the save point are not copied: a fault since the last
 * reset makes them discarded (zero again), and pages found touched move to
 * the copy.  Every iteration must see them zero, whether written by the
 * program or by the kernel (read(2) from a pipe), read only (zero page
 * mapped), or touched again after a replan; MMK_AFL_UNTOUCHED=0 copies them
 * and must give the same memory. */
static void untouched_pages_reset(void **state)
{
	(void)state;
	for (int mode = 0; mode < 2; mode++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			if (mode == 1)
				setenv("MMK_AFL_UNTOUCHED", "0", 1);
			char *u = u_buf[mode];
			int pfd[2];
			if (pipe(pfd) != 0)
				_exit(9);
			unsigned long it = 0, bad = 0;
			mmk_afl_stats st0 = { 0 }, st = { 0 };
			const unsigned n = 60;
			while (MMK_AFL_LOOP_WITH(n, fake_loop)) {
				if (it == 0 && mmk_afl_stats_get(&st0) != 0)
					bad |= 1;
				for (size_t off = 0; off < sizeof u_buf[0]; off += 512)
					if (u[off] != 0)
						bad |= 2; /* a write of an earlier input survived */
				u[(it % 5) * 4096 + 8] = 1;           /* program writes */
				if (write(pfd[1], "k", 1) != 1 || read(pfd[0], u + (5 + it % 5) * 4096 + 512, 1) != 1)
					bad |= 4;                     /* kernel writes */
				if (it % 7 == 3)
					u[15 * 4096] = 2;             /* now and then */
				mmk_afl_stats_get(&st);
				it++;
			}
			if (it != n)
				bad |= 8;
			if (mode == 1 && st0.untouched_pages != 0)
				bad |= 16; /* copied on request */
#if HEAP_RESET
			/* the copy backend runs here (small process): u_buf's pages
			 * were found untouched, then moved to the copy once touched */
			if (mode == 0 && mmk_afl__statm_exact() &&
			    (st0.untouched_pages < 16 || st.replans == 0 || st.discards == 0))
				bad |= 32;
#endif
			if (bad)
				fprintf(stderr, "untouched: mode %d bad %lu untouched %zu discards %llu replans %llu\n",
					mode, bad, st0.untouched_pages, st.discards, st.replans);
			_exit((int)bad);
		}
		int wst;
		assert_int_equal(waitpid(pid, &wst, 0), pid);
		assert_true(WIFEXITED(wst));
		assert_int_equal(WEXITSTATUS(wst), 0);
	}
}


/* Run fn in a child; it must exit 0 (not crash). */
static void in_child(int (*fn)(int mode), int mode)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* a crash kills the child (cmocka catches crash signals in
		 * its own process) */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		_exit(fn(mode));
	}
	int wst;
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	if (WIFSIGNALED(wst))
		fprintf(stderr, "child (mode %d) killed by signal %d\n", mode, WTERMSIG(wst));
	assert_true(WIFEXITED(wst));
	assert_int_equal(WEXITSTATUS(wst), 0);
}

/* untouched at the save point; written by other threads / vfork children */
static char o_buf[24 * 4096] __attribute__((aligned(4096)));
static char o_stack[16 * 1024] __attribute__((aligned(4096)));
static unsigned long *o_bad; /* shared memory: counts across resets */

static void o_check_and_write(size_t k)
{
	if (o_buf[k * 4096] != 0)
		++*o_bad; /* an earlier input's write survived */
	o_buf[k * 4096] = 7;
}

static void *o_writer(void *arg)
{
	o_check_and_write((size_t)arg);
	return NULL;
}

/* a vfork child (sharing the memory) writes */
__attribute__((noinline)) static void o_vfork_write(size_t k)
{
	pid_t c = vfork();
	if (c == 0) {
		o_check_and_write(k);
		_exit(0);
	}
	if (c < 0 || waitpid(c, NULL, 0) != c)
		*o_bad += 1000;
}

/* A page untouched at the save point that an input makes present from
 * another thread (joined) or a vfork child (waited for) - not a fault of
 * the thread running the loop - must be zero again for the next input.
 * The thread runs on a stack in tracked memory touched before the loop, so
 * the input creates no mapping (which would make the engine re-read the
 * address space, hiding the bug); more pages are written than the harness
 * moves to the copy (MMK_AFL_MAX_REPLANS), so some stay untouched runs. */
static int other_writers_child(int mode)
{
	unsigned long *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 99;
	o_bad = sh;
	memset(o_stack, 1, sizeof o_stack);
	pthread_attr_t at;
	pthread_attr_init(&at);
	if (pthread_attr_setstack(&at, o_stack, sizeof o_stack) != 0)
		return 98;
	unsigned long it = 0, bad = 0;
	mmk_afl_stats st0 = { 0 }, st = { 0 };
	const unsigned n = 60;
	while (MMK_AFL_LOOP_WITH(n, fake_loop)) {
		size_t k = it % 24;
		if (it == 0)
			mmk_afl_stats_get(&st0);
		mmk_afl_stats_get(&st);
		if (mode == 0) {
			pthread_t th;
			if (pthread_create(&th, &at, o_writer, (void *)k) == 0)
				pthread_join(th, NULL);
			else
				*o_bad += 1000;
		} else {
			o_vfork_write(k);
		}
		it++;
	}
	if (it != n)
		bad |= 1;
	if (*o_bad)
		bad |= 2;
#if HEAP_RESET
	if (mmk_afl__statm_exact() && st0.untouched_pages < 24)
		bad |= 4; /* o_buf was not left to the check: proves nothing */
#endif
	if (bad || getenv("MMK_TEST_VERBOSE"))
		fprintf(stderr, "other writers: mode %d bad %lu stale %lu untouched %zu discards %llu replans %llu\n",
			mode, bad, *o_bad, st0.untouched_pages, st.discards, st.replans);
	return (int)bad;
}

static void untouched_written_by_thread_or_vfork_child(void **state)
{
	(void)state;
	in_child(other_writers_child, 0);
	in_child(other_writers_child, 1);
}

/* An input that unmaps (mode 0) or write-protects (mode 1) a mapping whose
 * untouched pages are left out of the copy: the next inputs must find it
 * as it was (mapped, writable, zero where it was untouched), not crash. */
static int layout_child(int mode)
{
	unsigned long *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *buf = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || buf == MAP_FAILED)
		return 99;
	buf[0] = 1;
	buf[4096] = 2;
	unsigned long it = 0, bad = 0;
	mmk_afl_stats st0 = { 0 }, st = { 0 };
	const unsigned n = 6;
	while (MMK_AFL_LOOP_WITH(n, fake_loop)) {
		if (it == 0) {
			mmk_snap_stats ss;
			mmk_afl_stats_get(&st0);
			if (mmk_afl_snap() && mmk_snap_stats_get(mmk_afl_snap(), &ss) == 0)
				sh[1] = ss.pages_tracked;
		}
		if (buf[0] != 1 || buf[4096] != 2)
			sh[0]++;
		/* a write into the untouched part (a page no input touched before:
		 * a touched page is moved to the copy) */
		if (buf[(2 + it % 6) * 4096] != 0)
			sh[0]++;
		buf[(2 + it % 6) * 4096] = 5;
		if (it % 3 == 1) {
			if (mode == 0)
				munmap(buf, 8 * 4096);
			else
				mprotect(buf, 8 * 4096, PROT_READ);
		}
		mmk_afl_stats_get(&st);
		it++;
	}
	if (it != n)
		bad |= 1;
	if (sh[0])
		bad |= 2;
#if HEAP_RESET
	if (mmk_afl__statm_exact() && (st0.untouched_pages < 6 || st.repairs == 0))
		bad |= 4; /* the runs were not in play: proves nothing */
#endif
	if (bad)
		fprintf(stderr, "layout: mode %d bad %lu wrong %lu untouched %zu repairs %llu tracked %zu\n", mode, bad,
			sh[0], st0.untouched_pages, st.repairs, (size_t)sh[1]);
	return (int)bad;
}

static void untouched_mapping_unmapped_or_protected(void **state)
{
	(void)state;
	in_child(layout_child, 0);
	in_child(layout_child, 1);
}

/* the lazily bound PLT slot of `name`, from the harness's own table */
static uintptr_t *plt_slot(const char *name)
{
	mmk_afl__cfg *c = mmk_afl__self();
	for (size_t o = 0; o < c->ngot; o++)
		for (size_t k = 0; k < c->got[o].len / sizeof(uintptr_t); k++) {
			const ElfW(Rela) *r = (const ElfW(Rela) *)(const void *)(c->got[o].jmprel + k * c->got[o].relent);
			const char *nm = c->got[o].strtab + c->got[o].symtab[ELF64_R_SYM(r->r_info)].st_name;
			if (!strcmp(nm, name))
				return (uintptr_t *)c->got[o].addr + k;
		}
	return NULL;
}

/* PLT slots an input's calls resolved keep their value across resets (no
 * new lookup per input); a slot an input corrupted is rolled back; with
 * MMK_AFL_KEEP_PLT=0 every slot is rolled back.  getppid is first called in
 * the loop; getpgrp's slot (never called) is the one corrupted. */
static void plt_slots_kept_unless_corrupted(void **state)
{
	(void)state;
	for (int mode = 0; mode < 2; mode++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			if (mode == 1)
				setenv("MMK_AFL_KEEP_PLT", "0", 1);
			unsigned long it = 0, bad = 0;
			uintptr_t img = 0, resolved = 0, corrupt = 0x1000;
			mmk_afl_stats st = { 0 };
			while (MMK_AFL_LOOP_WITH(30, fake_loop)) {
				uintptr_t *s = plt_slot("getppid"), *t = plt_slot("getpgrp");
				if (!s || !t) {
					bad |= 1;
					it++;
					continue;
				}
				if (it == 0)
					img = *s;
				else if (*s != (mode == 0 ? resolved : img))
					bad |= 2; /* kept (mode 0) / rolled back (mode 1) */
				if (*t == corrupt)
					bad |= 4; /* a corrupted slot survived */
				if (getppid() <= 0)
					bad |= 8;
				resolved = *s;
				if (resolved == img)
					bad |= 16; /* lazy binding did not happen: the test proves nothing */
				if (it % 3 == 1)
					*t = corrupt;
				mmk_afl_stats_get(&st);
				it++;
			}
			if (it != 30 || (mode == 0) != (st.plt_slots_kept > 0))
				bad |= 32;
			/* accepted values, not candidate slots: getpgrp's is not */
			if (st.plt_slots_kept >= mmk_afl__self()->got_bytes / sizeof(uintptr_t))
				bad |= 64;
			if (bad)
				fprintf(stderr, "plt: mode %d bad %lu kept %zu\n", mode, bad, st.plt_slots_kept);
			_exit((int)bad);
		}
		int wst;
		assert_int_equal(waitpid(pid, &wst, 0), pid);
		assert_true(WIFEXITED(wst));
		assert_int_equal(WEXITSTATUS(wst), 0);
	}
	if (getpgrp() < 0) /* referenced, so the program has its PLT slot */
		fail();
}


/* never defined: its PLT slot's symbol cannot be looked up (dlsym fails) */
extern int mmk_test_afl_nowhere(int) __attribute__((weak));
static int plt_dummy(int x)
{
	return x;
}

/* The PLT check (dlsym) must not change the memory an input starts from: an
 * input that corrupts a slot whose symbol dlsym cannot find (a failed
 * lookup sets dlerror state and mallocs) - every input must see the
 * dlerror state of the save point. */
static int plt_check_child(int mode)
{
	(void)mode;
	char *msgs = mmap(NULL, 8 * 256, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (msgs == MAP_FAILED)
		return 99;
	unsigned long it = 0, bad = 0;
	uintptr_t *s = plt_slot("mmk_test_afl_nowhere");
	if (!s)
		return 98; /* no lazily bound slot: the test proves nothing */
	while (MMK_AFL_LOOP_WITH(6, fake_loop)) {
		const char *e = dlerror();
		snprintf(msgs + it * 256, 256, "%s", e ? e : "(none)");
		if (it == 1)
			*s = (uintptr_t)plt_dummy; /* a value the linker never binds */
		it++;
	}
	for (unsigned long i = 1; i < it; i++)
		if (strcmp(msgs, msgs + i * 256) != 0) {
			fprintf(stderr, "plt check: input %lu saw dlerror \"%s\", input 0 \"%s\"\n", i, msgs + i * 256,
				msgs);
			bad |= 1;
		}
	if (it != 6)
		bad |= 2;
	if (getpid() == 0)
		bad |= (unsigned long)mmk_test_afl_nowhere(0); /* the call that makes the slot */
	return (int)bad;
}

static void plt_check_leaves_no_trace(void **state)
{
	(void)state;
	in_child(plt_check_child, 0);
}

static volatile int *volatile bad_ptr; /* NULL: a write faults */

static void crash_is_not_swallowed(void **state)
{
	(void)state;
#if HEAP_RESET
	static const int sigs[] = { SIGSEGV, SIGABRT, SIGBUS };
#else
	/* ASan/UBSan turn SIGSEGV and SIGBUS into a report and exit(1) */
	static const int sigs[] = { SIGABRT };
#endif
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			/* as in a fuzzing target: default dispositions (cmocka
			 * catches crash signals in its own process) */
			for (size_t k = 0; k < sizeof sigs / sizeof *sigs; k++)
				signal(sigs[k], SIG_DFL);
			unsigned long it = 0;
			while (MMK_AFL_LOOP_WITH(100, fake_loop)) {
				touch_state(it);
				if (it++ == 3) { /* after some resets */
					if (sigs[i] == SIGSEGV)
						*bad_ptr = 1;
					else if (sigs[i] == SIGABRT)
						abort();
					else
						raise(SIGBUS);
				}
			}
			_exit(0);
		}
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st));
		assert_int_equal(WTERMSIG(st), sigs[i]);
	}
}

int main(void)
{
	unsetenv("MMK_AFL_RESET");   /* reset_off_by_environment sets it */
	unsetenv("MMK_SNAP_BACKEND"); /* every backend must pass; the default is tested */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(loop_resets_everything, setup),
		cmocka_unit_test_setup(loop_ends_when_loop_function_says_so, setup),
		cmocka_unit_test_setup(loop_n1_runs_once, setup),
		cmocka_unit_test_setup(preserve_exclude_and_hooks, setup),
		cmocka_unit_test_setup(reset_off_by_environment, setup),
		cmocka_unit_test_setup(untouched_pages_reset, setup),
		cmocka_unit_test_setup(plt_slots_kept_unless_corrupted, setup),
		cmocka_unit_test_setup(untouched_written_by_thread_or_vfork_child, setup),
		cmocka_unit_test_setup(untouched_mapping_unmapped_or_protected, setup),
		cmocka_unit_test_setup(plt_check_leaves_no_trace, setup),
		cmocka_unit_test_setup(crash_is_not_swallowed, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
