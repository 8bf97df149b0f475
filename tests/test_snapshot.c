/*
 * tests/test_snapshot.c - the snapshot engine (seed 000): randomized
 * differential tests of every backend against a stack of full copies,
 * nesting, mmk_try on every crash kind, mmcontext's rules, process scope
 * (heap scribbling, mappings created and removed after a save, the program
 * break), coexisting objects and threads.
 */
#include "test_util.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit.h>

#define PG 4096

static bool under_asan(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return true;
#endif
#endif
	return false;
}

static bool backend_usable(mmk_snap_backend b)
{
	const mmk_features *f = mmk_features_get();
	switch (b) {
	case MMK_SNAP_ASYNC:
		return f->uffd_wp_async && f->pagemap_scan;
	case MMK_SNAP_LAZY:
		return f->uffd_wp && f->uffd_sigbus;
	default:
		return true;
	}
}

static const char *why_not(mmk_snap_backend b)
{
	return b == MMK_SNAP_ASYNC ? "kernel lacks uffd WP_ASYNC + PAGEMAP_SCAN (6.7+) or uffd is refused"
				   : "kernel lacks uffd WP + SIGBUS for this user";
}

/* ---- differential test ------------------------------------------------------------- */

typedef struct model {
	unsigned char *stack[65];
	int depth;
	size_t len;
} model;

static void random_writes(unsigned char *p, size_t len, uint64_t *seed, bool allow_dontneed)
{
	size_t npages = (len + PG - 1) / PG;
	int kind = (int)(mmk_test_rand(seed) % 5);
	size_t n = kind == 0 ? 1 : kind == 1 ? npages : 1 + mmk_test_rand(seed) % (npages / 8 + 2);
	for (size_t k = 0; k < n; k++) {
		size_t off = mmk_test_rand(seed) % len;
		size_t run = 1 + mmk_test_rand(seed) % 64;
		if (off + run > len)
			run = len - off;
		for (size_t j = 0; j < run; j++)
			p[off + j] = (unsigned char)mmk_test_rand(seed);
	}
	if (allow_dontneed && npages > 2 && mmk_test_rand(seed) % 8 == 0 && ((uintptr_t)p % PG) == 0) {
		size_t pg = mmk_test_rand(seed) % (len / PG ? len / PG : 1);
		madvise(p + pg * PG, PG, MADV_DONTNEED);
	}
}

static void differential(mmk_snap_backend b, size_t iterations)
{
	if (!backend_usable(b))
		MMK_SKIP("%s", why_not(b));
	/* for the kernel matrix's per-kernel list of backends exercised */
	fprintf(stderr, "# backend: snapshot %s\n", mmk_snap_backend_name(b));
	uint64_t seed = mmk_test_seed() ^ (uint64_t)b * 0x9E3779B97F4A7C15ULL;
	size_t sizes[] = { 32, 100, PG, 3 * PG, 64 * 1024, 257 * PG, 2 << 20 };
	for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
		size_t len = sizes[si];
		if (b != MMK_SNAP_COPY && len < PG)
			continue;
		size_t maplen = (len + PG - 1) / PG * PG;
		unsigned char *p = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(p != MAP_FAILED);
		for (size_t i = 0; i < len; i += 7)
			p[i] = (unsigned char)i;
		mmk_snap *s;
		mmk_snap_opts o = { .backend = b };
		assert_int_equal(mmk_snap_create(&s, &o), 0);
		assert_int_equal(mmk_snap_add(s, p, len), 0);
		mmk_snap_stats st;
		assert_int_equal(mmk_snap_stats_get(s, &st), 0);
		if (b != MMK_SNAP_AUTO)
			assert_string_equal(st.backend, mmk_snap_backend_name(b));
		model m = { .len = len };
		const char *env = getenv("MMK_SNAP_BACKEND");
		bool forced_fault = env && (!strcmp(env, "lazy") || !strcmp(env, "mprotect"));
		bool dontneed = b != MMK_SNAP_LAZY && b != MMK_SNAP_MPROTECT &&
				!(b == MMK_SNAP_AUTO && forced_fault);
		size_t iters = mmk_test_n(iterations, 50);
		for (size_t it = 0; it < iters; it++) {
			int op = (int)(mmk_test_rand(&seed) % 10);
			if (op < 4) {
				random_writes(p, len, &seed, dontneed);
			} else if (op < 6 && m.depth < 12) {
				int d = mmk_snap_save(s);
				assert_int_equal(d, m.depth + 1);
				if (!m.stack[m.depth + 1])
					m.stack[m.depth + 1] = malloc(len);
				memcpy(m.stack[++m.depth], p, len);
			} else if (op < 8 && m.depth > 0) {
				assert_int_equal(mmk_snap_restore(s), 0);
				assert_memory_equal(p, m.stack[m.depth], len);
			} else if (m.depth > 0) {
				assert_int_equal(mmk_snap_drop(s), m.depth - 1);
				m.depth--;
			}
			assert_int_equal(mmk_snap_depth(s), m.depth);
		}
		/* unwind everything and verify each level on the way down */
		while (m.depth > 0) {
			random_writes(p, len, &seed, dontneed);
			assert_int_equal(mmk_snap_restore(s), 0);
			assert_memory_equal(p, m.stack[m.depth], len);
			mmk_snap_drop(s);
			m.depth--;
		}
		mmk_snap_destroy(s);
		/* after destroy the memory is an ordinary mapping again */
		memset(p, 0x5a, maplen);
		assert_int_equal(p[maplen - 1], 0x5a);
		munmap(p, maplen);
		for (int i = 0; i <= 64; i++) {
			free(m.stack[i]);
			m.stack[i] = NULL;
		}
	}
}

static void test_diff_copy(void **state)
{
	(void)state;
	differential(MMK_SNAP_COPY, 3000);
}
static void test_diff_async(void **state)
{
	(void)state;
	differential(MMK_SNAP_ASYNC, 3000);
}
static void test_diff_lazy(void **state)
{
	(void)state;
	differential(MMK_SNAP_LAZY, 3000);
}
static void test_diff_mprotect(void **state)
{
	(void)state;
	differential(MMK_SNAP_MPROTECT, 3000);
}
static void test_diff_auto(void **state)
{
	(void)state;
	differential(MMK_SNAP_AUTO, 1500);
}

static char *g_buf;

struct runs {
	unsigned char seen[64];
	int calls;
};

static int collect_run(void *addr, size_t len, void *arg)
{
	struct runs *r = arg;
	r->calls++;
	for (size_t off = 0; off < len; off += PG) {
		size_t i = ((uintptr_t)addr + off - (uintptr_t)g_buf) / PG;
		assert_true(i < 64);
		r->seen[i]++;
	}
	return 0;
}

/* mmk_snap_changed reports exactly the pages changed since the save point,
 * on every backend, nested or not */
static void changed_with(mmk_snap_backend b)
{
	if (!backend_usable(b))
		MMK_SKIP("%s", why_not(b));
	g_buf = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(g_buf, 1, 64 * PG);
	mmk_snap *s;
	mmk_snap_opts o = { .backend = b };
	assert_int_equal(mmk_snap_create(&s, &o), 0);
	assert_int_equal(mmk_snap_add(s, g_buf, 64 * PG), 0);
	struct runs r = { 0 };
	assert_int_equal(mmk_snap_changed(s, collect_run, &r), -EINVAL); /* depth 0 */
	assert_int_equal(mmk_snap_save(s), 1);
	int want[] = { 0, 1, 2, 7, 40, 63 };
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		g_buf[want[i] * PG + 5] = 9;
	g_buf[20 * PG] = 1; /* written with the same value: reported (written) or not (copy) */
	assert_int_equal(mmk_snap_changed(s, collect_run, &r), 0);
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		assert_int_equal(r.seen[want[i]], 1);
	int total = 0;
	for (int i = 0; i < 64; i++)
		total += r.seen[i];
	assert_true(total == 6 || (total == 7 && r.seen[20] == 1));
	/* the saved image of a changed page is what it held at the save */
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const unsigned char *img = mmk_snap_saved_page(s, g_buf + want[i] * PG + 100);
		assert_non_null(img);
		for (int k = 0; k < PG; k++)
			assert_int_equal(img[k], 1);
	}
	assert_null(mmk_snap_saved_page(s, &r)); /* not tracked */
	/* a nested level sees only its own changes */
	assert_int_equal(mmk_snap_save(s), 2);
	g_buf[30 * PG] = 3;
	memset(&r, 0, sizeof r);
	assert_int_equal(mmk_snap_changed(s, collect_run, &r), 0);
	assert_int_equal(r.seen[30], 1);
	assert_int_equal(r.seen[0] + r.seen[63], 0);
	/* after a restore to it, nothing */
	assert_int_equal(mmk_snap_restore(s), 0);
	memset(&r, 0, sizeof r);
	assert_int_equal(mmk_snap_changed(s, collect_run, &r), 0);
	total = 0;
	for (int i = 0; i < 64; i++)
		total += r.seen[i];
	assert_int_equal(total, 0);
	mmk_snap_destroy(s);
	munmap(g_buf, 64 * PG);
}

static void test_changed_copy(void **state)
{
	(void)state;
	changed_with(MMK_SNAP_COPY);
}
static void test_changed_async(void **state)
{
	(void)state;
	changed_with(MMK_SNAP_ASYNC);
}
static void test_changed_mprotect(void **state)
{
	(void)state;
	changed_with(MMK_SNAP_MPROTECT);
}
static void test_changed_lazy(void **state)
{
	(void)state;
	changed_with(MMK_SNAP_LAZY);
}

/* The documented caveat of the fault-based backends, pinned: the kernel
 * cannot write into a tracked page the program has not written since the
 * save point (EFAULT), and can once the program has. */
static void kernel_write_with(mmk_snap_backend b)
{
	if (!backend_usable(b))
		MMK_SKIP("%s", why_not(b));
	char *p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(p, 1, 4 * PG);
	mmk_snap *s;
	mmk_snap_opts o = { .backend = b };
	assert_int_equal(mmk_snap_create(&s, &o), 0);
	assert_int_equal(mmk_snap_add(s, p, 4 * PG), 0);
	assert_int_equal(mmk_snap_save(s), 1);
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "abcd", 4), 4);
	errno = 0;
	assert_int_equal(read(fds[0], p + PG, 4), -1);
	assert_int_equal(errno, EFAULT);
	p[PG] = 0; /* the program's own write unprotects the page */
	assert_int_equal(read(fds[0], p + PG, 4), 4);
	assert_memory_equal(p + PG, "abcd", 4);
	assert_int_equal(mmk_snap_restore(s), 0);
	assert_int_equal(p[PG], 1);
	close(fds[0]);
	close(fds[1]);
	mmk_snap_destroy(s);
	munmap(p, 4 * PG);
}

static void test_kernel_write_lazy(void **state)
{
	(void)state;
	kernel_write_with(MMK_SNAP_LAZY);
}
static void test_kernel_write_mprotect(void **state)
{
	(void)state;
	kernel_write_with(MMK_SNAP_MPROTECT);
}
/* async (and copy) have no such caveat */
static void test_kernel_write_async(void **state)
{
	(void)state;
	if (!backend_usable(MMK_SNAP_ASYNC))
		MMK_SKIP("%s", why_not(MMK_SNAP_ASYNC));
	char *p = mmap(NULL, 32 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(p, 1, 32 * PG);
	mmk_snap *s;
	mmk_snap_opts o = { .backend = MMK_SNAP_ASYNC };
	assert_int_equal(mmk_snap_create(&s, &o), 0);
	assert_int_equal(mmk_snap_add(s, p, 32 * PG), 0);
	assert_int_equal(mmk_snap_save(s), 1);
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "abcd", 4), 4);
	assert_int_equal(read(fds[0], p + PG, 4), 4);
	assert_int_equal(mmk_snap_restore(s), 0);
	assert_int_equal(p[PG], 1);
	close(fds[0]);
	close(fds[1]);
	mmk_snap_destroy(s);
	munmap(p, 32 * PG);
}

/* AUTO switches a region's backend by the writes it sees, and stays exact */
static void test_adaptive(void **state)
{
	(void)state;
	if (getenv("MMK_SNAP_BACKEND"))
		MMK_SKIP("MMK_SNAP_BACKEND forces a backend");
	if (!backend_usable(MMK_SNAP_ASYNC))
		MMK_SKIP("%s", why_not(MMK_SNAP_ASYNC));
	size_t len = 4 << 20, np = len / PG;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (size_t i = 0; i < len; i += 64)
		p[i] = (unsigned char)(i >> 6);
	unsigned char *ref = malloc(len);
	memcpy(ref, p, len);
	mmk_snap *s;
	assert_int_equal(mmk_snap_create(&s, NULL), 0);
	assert_int_equal(mmk_snap_add(s, p, len), 0);
	mmk_snap_stats st;
	mmk_snap_stats_get(s, &st);
	assert_string_equal(st.backend, "async");
	assert_int_equal(mmk_snap_save(s), 1);
	/* a history of sparse restores first */
	for (int c = 0; c < 6; c++) {
		p[(size_t)c * PG] ^= 0x33;
		assert_int_equal(mmk_snap_restore(s), 0);
	}
	assert_memory_equal(p, ref, len);
	/* 60 % dirty: copy is cheaper, but the evidence must be confirmed by
	 * a few restores first */
	for (size_t i = 0; i < np * 6 / 10; i++)
		p[i * PG] ^= 0xff;
	assert_int_equal(mmk_snap_restore(s), 0);
	assert_memory_equal(p, ref, len);
	mmk_snap_stats_get(s, &st);
	assert_string_equal(st.backend, "async");
	/* every page dirty: overwhelming, the switch follows at once, whatever
	 * the history */
	for (size_t i = 0; i < np; i++)
		p[i * PG + 1] ^= 0xff;
	assert_int_equal(mmk_snap_restore(s), 0);
	assert_memory_equal(p, ref, len);
	mmk_snap_stats_get(s, &st);
	assert_string_equal(st.backend, "copy");
	for (int c = 0; c < 12; c++) {
		for (size_t i = 0; i < np; i++)
			p[i * PG + (c & 63)] ^= 0xff;
		assert_int_equal(mmk_snap_restore(s), 0);
		assert_memory_equal(p, ref, len);
	}
	mmk_snap_stats_get(s, &st);
	assert_string_equal(st.backend, "copy");
	/* one page dirty: back to a tracking backend (after sampled restores) */
	for (int c = 0; c < 200; c++) {
		p[(size_t)(c % np) * PG] ^= 0x55;
		assert_int_equal(mmk_snap_restore(s), 0);
		assert_memory_equal(p + (size_t)(c % np) * PG, ref + (size_t)(c % np) * PG, PG);
	}
	assert_memory_equal(p, ref, len);
	mmk_snap_stats_get(s, &st);
	assert_string_not_equal(st.backend, "copy");
	mmk_snap_destroy(s);
	munmap(p, len);
	free(ref);
}

/* lazy memory is proportional to the pages written, not to the region */
static void test_lazy_memory(void **state)
{
	(void)state;
	if (!backend_usable(MMK_SNAP_LAZY))
		MMK_SKIP("%s", why_not(MMK_SNAP_LAZY));
	size_t len = 256UL << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(p != MAP_FAILED);
	mmk_snap *s;
	mmk_snap_opts o = { .backend = MMK_SNAP_LAZY };
	assert_int_equal(mmk_snap_create(&s, &o), 0);
	assert_int_equal(mmk_snap_add(s, p, len), 0);
	assert_int_equal(mmk_snap_save(s), 1);
	for (int i = 0; i < 10; i++)
		p[(size_t)i * 1000 * PG] = 1;
	mmk_snap_stats st;
	mmk_snap_stats_get(s, &st);
	assert_int_equal(st.bytes_held, 10 * PG);
	assert_int_equal(mmk_snap_restore(s), 0);
	mmk_snap_stats_get(s, &st);
	assert_int_equal(st.pages_dirtied, 10);
	for (int i = 0; i < 10; i++)
		assert_int_equal(p[(size_t)i * 1000 * PG], 0);
	mmk_snap_destroy(s);
	munmap(p, len);
}

/* ---- API errors and coexistence ------------------------------------------------------ */

static void test_errors(void **state)
{
	(void)state;
	mmk_snap *s;
	mmk_snap_opts bad = { .backend = (mmk_snap_backend)9 };
	assert_int_equal(mmk_snap_create(&s, &bad), -EINVAL);
	bad = (mmk_snap_opts){ .flags = 0x80 };
	assert_int_equal(mmk_snap_create(&s, &bad), -EINVAL);
	assert_int_equal(mmk_snap_create(NULL, NULL), -EINVAL);
	assert_int_equal(mmk_snap_create(&s, NULL), 0);
	assert_int_equal(mmk_snap_save(s), -EINVAL);    /* nothing tracked */
	assert_int_equal(mmk_snap_restore(s), -EINVAL); /* depth 0 */
	assert_int_equal(mmk_snap_drop(s), -EINVAL);
	char *p = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_int_equal(mmk_snap_add(s, p, 0), -EINVAL);
	/* read-only memory cannot be tracked */
	mprotect(p + 4 * PG, 4 * PG, PROT_READ);
	assert_int_equal(mmk_snap_add(s, p, 8 * PG), -EINVAL);
	mmk_snap_stats st;
	assert_int_equal(mmk_snap_stats_get(s, &st), 0);
	assert_int_equal(st.regions, 0); /* the failed add left nothing behind */
	/* unmapped memory */
	munmap(p + 6 * PG, 2 * PG);
	assert_int_equal(mmk_snap_add(s, p + 6 * PG, PG), -EINVAL);
	assert_int_equal(mmk_snap_add(s, p, 4 * PG), 0);
	assert_int_equal(mmk_snap_add(s, p + PG, PG), -EBUSY); /* overlap, same object */
	/* a second object on the same memory: -EBUSY; on other memory: fine */
	mmk_snap *t;
	assert_int_equal(mmk_snap_create(&t, NULL), 0);
	assert_int_equal(mmk_snap_add(t, p + 2 * PG, PG), -EBUSY);
	char *q = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_int_equal(mmk_snap_add(t, q, 4 * PG), 0);
	assert_int_equal(mmk_snap_save(s), 1);
	assert_int_equal(mmk_snap_add(s, q, PG), -EBUSY); /* depth > 0 */
	assert_int_equal(mmk_snap_save(t), 1);
	p[0] = 1;
	q[0] = 2;
	assert_int_equal(mmk_snap_restore(s), 0);
	assert_int_equal(p[0], 0);
	assert_int_equal(q[0], 2); /* t untouched by s */
	assert_int_equal(mmk_snap_restore(t), 0);
	assert_int_equal(q[0], 0);
	mmk_snap_destroy(s);
	mmk_snap_destroy(t);
	mmk_snap_destroy(NULL);
	munmap(p, 6 * PG);
	munmap(q, 4 * PG);
	assert_string_equal(mmk_snap_backend_name(MMK_SNAP_LAZY), "lazy");
}

/* ---- mmk_try ----------------------------------------------------------------------------- */

static int fn_ok(void *a)
{
	(void)a;
	g_buf[0] = 'K';
	return 7;
}
static int fn_err(void *a)
{
	(void)a;
	g_buf[0] = 'E';
	return -42;
}
static int fn_segv(void *a)
{
	(void)a;
	g_buf[1] = 'S';
	volatile uintptr_t bad = 8;
	*(volatile int *)bad = 1;
	return 0;
}
static int fn_abort(void *a)
{
	(void)a;
	g_buf[2] = 'A';
	abort();
}
static int fn_fpe(void *a)
{
	(void)a;
	g_buf[3] = 'F';
	raise(SIGFPE);
	return 0;
}
static int fn_ill(void *a)
{
	(void)a;
	g_buf[4] = 'I';
	__builtin_trap();
}
static int fn_bus(void *a)
{
	(void)a;
	g_buf[5] = 'B';
	raise(SIGBUS);
	return 0;
}
static int fn_spin(void *a)
{
	(void)a;
	g_buf[6] = 'T';
	for (volatile unsigned long i = 0;; i++)
		;
	return 0;
}
static int fn_nested(void *a)
{
	mmk_snap *s = a;
	g_buf[7] = 'N';
	mmk_try_opts o = { 0 };
	int rc = mmk_try(s, fn_segv, NULL, &o);
	assert_int_equal(rc, MMK_ECRASHED);
	assert_int_equal(g_buf[1], 0);
	assert_int_equal(g_buf[7], 'N'); /* the outer try's change survives the inner one */
	return -1;
}

static void try_with(mmk_snap_backend b)
{
	if (!backend_usable(b))
		MMK_SKIP("%s", why_not(b));
	size_t len = b == MMK_SNAP_COPY ? 16 * PG : 128 * PG;
	g_buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mmk_snap *s;
	mmk_snap_opts so = { .backend = b };
	assert_int_equal(mmk_snap_create(&s, &so), 0);
	assert_int_equal(mmk_snap_add(s, g_buf, len), 0);
	struct sigaction before;
	sigaction(SIGSEGV, NULL, &before);
	mmk_try_opts o = { 0 };
	assert_int_equal(mmk_try(s, fn_ok, NULL, &o), 0);
	assert_int_equal(o.fn_result, 7);
	assert_int_equal(g_buf[0], 'K'); /* success keeps the changes */
	assert_int_equal(mmk_snap_depth(s), 0);
	assert_int_equal(mmk_try(s, fn_err, NULL, &o), MMK_EFAILED);
	assert_int_equal(o.fn_result, -42);
	assert_int_equal(g_buf[0], 'K');
	struct {
		int (*fn)(void *);
		int sig, idx;
	} crashes[] = { { fn_segv, SIGSEGV, 1 }, { fn_abort, SIGABRT, 2 }, { fn_fpe, SIGFPE, 3 },
			{ fn_ill, SIGILL, 4 },   { fn_bus, SIGBUS, 5 } };
	for (size_t i = 0; i < sizeof crashes / sizeof crashes[0]; i++) {
		o.signo = 0;
		assert_int_equal(mmk_try(s, crashes[i].fn, NULL, &o), MMK_ECRASHED);
		assert_int_equal(o.signo, crashes[i].sig);
		assert_int_equal(g_buf[crashes[i].idx], 0);
		assert_int_equal(mmk_snap_depth(s), 0);
	}
	o = (mmk_try_opts){ .timeout_ms = 30 };
	assert_int_equal(mmk_try(s, fn_spin, NULL, &o), MMK_ETIMEDOUT);
	assert_int_equal(g_buf[6], 0);
	o = (mmk_try_opts){ 0 };
	assert_int_equal(mmk_try(s, fn_nested, s, &o), MMK_EFAILED);
	assert_int_equal(g_buf[7], 0);
	assert_int_equal(mmk_snap_depth(s), 0);
	/* the handlers are put back */
	struct sigaction cur;
	sigaction(SIGSEGV, NULL, &cur);
	assert_true(cur.sa_handler == before.sa_handler);
	mmk_snap_destroy(s);
	munmap(g_buf, len);
}

static void test_try_copy(void **state)
{
	(void)state;
	try_with(MMK_SNAP_COPY);
}
static void test_try_async(void **state)
{
	(void)state;
	try_with(MMK_SNAP_ASYNC);
}
static void test_try_mprotect(void **state)
{
	(void)state;
	try_with(MMK_SNAP_MPROTECT);
}
static void test_try_lazy(void **state)
{
	(void)state;
	try_with(MMK_SNAP_LAZY);
}

/* ---- process scope: mmcontext ---------------------------------------------------------- */

static void test_mmcontext_rules(void **state)
{
	(void)state;
	errno = 0;
	assert_int_equal(mmcontext(1), -1); /* restore without save */
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mmcontext(2), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mmcontext(-1), -1);
	assert_int_equal(mmcontext(0), 0);
	assert_int_equal(mmcontext(0), -1); /* second save */
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mmcontext(1), 0);
	assert_int_equal(mmcontext(1), -1);
	assert_int_equal(errno, EINVAL);
}

static int g_counter = 5;             /* .data */
static char g_bss[3 * PG];            /* .bss */

/* A heap that verifies: many live blocks with known contents. */
#define NBLK 512
static unsigned char *blk[NBLK];
static size_t blksz[NBLK];

static void heap_fill(uint64_t *seed)
{
	for (int i = 0; i < NBLK; i++) {
		blksz[i] = 1 + mmk_test_rand(seed) % 3000;
		blk[i] = malloc(blksz[i]);
		memset(blk[i], i & 0xff, blksz[i]);
	}
}

static void heap_verify(void)
{
	for (int i = 0; i < NBLK; i++)
		for (size_t j = 0; j < blksz[i]; j++)
			assert_int_equal(blk[i][j], i & 0xff);
}

static void scribble(uint64_t *seed)
{
	/* unsafe code: frees, mallocs, overwrites blocks, grows the heap */
	for (int i = 0; i < NBLK; i += 3) {
		free(blk[i]);
		blk[i] = NULL;
	}
	void *big = malloc(8 << 20); /* mmapped by malloc */
	memset(big, 1, 8 << 20);
	for (int k = 0; k < 2000; k++) {
		void *x = malloc(1 + mmk_test_rand(seed) % 5000);
		memset(x, 0xee, 1);
		if (k % 3)
			free(x);
	}
	for (int i = 1; i < NBLK; i += 3)
		memset(blk[i], 0xab, blksz[i]);
	g_counter = 99;
	memset(g_bss, 7, sizeof g_bss);
	sbrk(1 << 20); /* move the break by hand too */
}

static void test_mmcontext_heap(void **state)
{
	(void)state;
	if (under_asan())
		MMK_SKIP("ASan's heap lives in its giant reservation, which process scope skips by design");
	uint64_t seed = mmk_test_seed();
	heap_fill(&seed);
	unsigned char *saved[NBLK];
	memcpy(saved, blk, sizeof blk);
	size_t rounds = mmk_test_n(20, 3);
	for (size_t r = 0; r < rounds; r++) {
		void *brk0 = sbrk(0);
		assert_int_equal(mmcontext(0), 0);
		scribble(&seed);
		assert_int_equal(mmcontext(1), 0);
		/* everything as before: pointers, contents, globals, the break */
		assert_memory_equal(saved, blk, sizeof blk);
		heap_verify();
		assert_int_equal(g_counter, 5);
		for (size_t i = 0; i < sizeof g_bss; i++)
			assert_int_equal(g_bss[i], 0);
		assert_ptr_equal(sbrk(0), brk0);
		/* malloc keeps working and the heap is consistent */
		void *x[100];
		for (int i = 0; i < 100; i++) {
			x[i] = malloc(100 + i * 50);
			memset(x[i], 3, 100 + i * 50);
		}
		for (int i = 0; i < 100; i++)
			free(x[i]);
		heap_verify();
	}
	for (int i = 0; i < NBLK; i++)
		free(blk[i]);
	malloc_trim(0);
}

/* nested save points on the whole process, with the heap and mappings
 * changing at every level */
static void test_process_nested(void **state)
{
	(void)state;
	if (under_asan())
		MMK_SKIP("ASan's heap lives in its giant reservation, which process scope skips by design");
	mmk_snap *s = mmk_context();
	assert_non_null(s);
	uint64_t seed = mmk_test_seed();
	char *a = malloc(1000);
	memset(a, 'A', 1000);
	g_counter = 1;
	void *brk1 = sbrk(0);
	assert_int_equal(mmk_snap_save(s), 1);
	char *b = malloc(200000); /* mmapped */
	memset(b, 'B', 200000);
	memset(a, 'a', 500);
	g_counter = 2;
	void *brk2 = sbrk(0);
	assert_int_equal(mmk_snap_save(s), 2);
	char *c = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	c[0] = 'C';
	char *volatile laundered = b; /* freed here, alive again after the restore */
	free(laundered);
	memset(a, 'x', 1000);
	g_counter = 3;
	sbrk(64 << 10);
	for (int i = 0; i < 100; i++)
		free(malloc(1 + mmk_test_rand(&seed) % 9000));
	/* back to level 2: b exists again, c is gone */
	assert_int_equal(mmk_snap_restore(s), 0);
	assert_int_equal(g_counter, 2);
	assert_ptr_equal(sbrk(0), brk2);
	for (int i = 0; i < 200000; i++)
		assert_int_equal(b[i], 'B');
	for (int i = 0; i < 1000; i++)
		assert_int_equal(a[i], i < 500 ? 'a' : 'A');
	unsigned char vec[5];
	assert_int_equal(mincore(c, 5 * PG, vec), -1);
	/* drop level 2, then back to level 1 */
	assert_int_equal(mmk_snap_drop(s), 1);
	memset(a, 'y', 1000);
	assert_int_equal(mmk_snap_restore(s), 0);
	assert_int_equal(g_counter, 1);
	assert_ptr_equal(sbrk(0), brk1);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(a[i], 'A');
	assert_int_equal(mmk_snap_drop(s), 0);
	free(a);
	void *x = malloc(300000);
	free(x);
}

/* mappings created after the save are unmapped by the restore; tracked
 * mappings unmapped after the save come back with their contents */
static char g_big[64 * PG] __attribute__((aligned(4096)));

static void process_mappings_child(void **state)
{
	(void)state;
	mmk_snap *s;
	/* with lazy tracking of big anonymous mappings where the kernel has it,
	 * so that the "vanished lazy region" path is exercised too */
	mmk_snap_opts o = { .flags = backend_usable(MMK_SNAP_LAZY) ? MMK_SNAP_LAZY_LARGE : 0 };
	assert_int_equal(mmk_snap_create(&s, &o), 0);
	/* big and keep separated by a PROT_NONE page, so that the kernel
	 * cannot merge them into one mapping */
	size_t bl = 96UL << 20;
	char *area = mmap(NULL, bl + 17 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(area != MAP_FAILED);
	char *big = mmap(area, bl, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	char *keep = mmap(area + bl + PG, 16 * PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	assert_true(big == area && keep == area + bl + PG);
	memset(keep, 'k', 16 * PG);
	big[5 * PG] = 'b';
	/* exclusion cuts pages, not whole mappings: g_big's page 3 survives
	 * restores, the rest of .bss (g_counter's neighbours, g_big's other
	 * pages) is rolled back */
	assert_int_equal(mmk_snap_exclude(s, g_big + 3 * PG, PG), 0);
	assert_int_equal(mmk_snap_add_process(s), 0);
	mmk_snap_stats st;
	mmk_snap_stats_get(s, &st);
	assert_true(st.regions >= 3);
	assert_int_equal(mmk_snap_save(s), 1);
	/* (mapped before the unmap so that it cannot reuse keep's addresses) */
	char *fresh = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fresh[0] = 1;
	munmap(keep, 16 * PG);
	g_big[3 * PG] = 'e';
	g_big[4 * PG] = 'r';
	g_big[2 * PG] = 'r';
	big[5 * PG] = 'c';
	assert_int_equal(mmk_snap_restore(s), 0);
	for (int i = 0; i < 16 * PG; i++)
		assert_int_equal(keep[i], 'k');
	assert_int_equal(big[5 * PG], 'b');
	assert_int_equal(g_big[3 * PG], 'e'); /* excluded */
	assert_int_equal(g_big[4 * PG], 0);
	assert_int_equal(g_big[2 * PG], 0);
	/* `fresh` is gone: mincore on an unmapped range fails with ENOMEM */
	unsigned char vec[8];
	assert_int_equal(mincore(fresh, 8 * PG, vec), -1);
	assert_int_equal(errno, ENOMEM);
	/* a lazily tracked mapping that vanished cannot come back: -EFAULT
	 * and nothing changed */
	mmk_snap_stats_get(s, &st);
	if (st.regions_by_backend[MMK_SNAP_LAZY] > 0) {
		keep[0] = 'x';
		munmap(big, 96UL << 20);
		assert_int_equal(mmk_snap_restore(s), -EFAULT);
		assert_int_equal(keep[0], 'x');
	} else {
		munmap(big, 96UL << 20);
	}
	mmk_snap_drop(s);
	mmk_snap_destroy(s);
	munmap(keep, 16 * PG);
}

static void test_process_mappings(void **state)
{
	(void)state;
	if (under_asan())
		MMK_SKIP("process scope under ASan does not track ASan's heap; covered by the normal build");
	/* runs first, in a child: no process-wide mmcontext object exists yet
	 * (two objects never track the same memory) */
	pid_t pid = fork();
	if (pid == 0) {
		/* its own cmocka run: a failure ends the child, not the suite */
		const struct CMUnitTest t[] = { cmocka_unit_test(process_mappings_child) };
		_exit(cmocka_run_group_tests_name("process scope (child)", t, NULL, NULL));
	}
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status))
		fail_msg("child killed by signal %d", WTERMSIG(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_exit_with_saved_context(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* a fresh context in the child; exit while saved (LSan checks
		 * for leaks at exit in the sanitizer build) */
		if (mmcontext(0) != 0)
			_exit(3);
		char *p = malloc(1000);
		p[0] = 1;
		exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- threads ----------------------------------------------------------------------------- */

struct thr {
	pthread_barrier_t b;
	char *mem;
};

static void *writer(void *arg)
{
	struct thr *t = arg;
	pthread_barrier_wait(&t->b); /* 1: after save */
	for (int i = 0; i < 64; i++)
		t->mem[i * PG + 1] = 'w';
	pthread_barrier_wait(&t->b); /* 2: done writing; main restores */
	pthread_barrier_wait(&t->b); /* 3: main verified */
	return NULL;
}

static void threads_with(mmk_snap_backend b)
{
	if (!backend_usable(b))
		MMK_SKIP("%s", why_not(b));
	struct thr t;
	pthread_barrier_init(&t.b, NULL, 2);
	t.mem = mmap(NULL, 128 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(t.mem, 'o', 128 * PG);
	mmk_snap *s;
	mmk_snap_opts o = { .backend = b };
	assert_int_equal(mmk_snap_create(&s, &o), 0);
	assert_int_equal(mmk_snap_add(s, t.mem, 128 * PG), 0);
	pthread_t th;
	pthread_create(&th, NULL, writer, &t);
	assert_int_equal(mmk_snap_save(s), 1);
	pthread_barrier_wait(&t.b);
	pthread_barrier_wait(&t.b);
	assert_int_equal(t.mem[PG + 1], 'w');
	assert_int_equal(mmk_snap_restore(s), 0); /* the writer is quiesced */
	for (int i = 0; i < 128 * PG; i++)
		assert_int_equal(t.mem[i], 'o');
	pthread_barrier_wait(&t.b);
	pthread_join(th, NULL);
	mmk_snap_destroy(s);
	munmap(t.mem, 128 * PG);
	pthread_barrier_destroy(&t.b);
}

static void test_threads_async(void **state)
{
	(void)state;
	threads_with(MMK_SNAP_ASYNC);
}
static void test_threads_mprotect(void **state)
{
	(void)state;
	threads_with(MMK_SNAP_MPROTECT);
}
static void test_threads_lazy(void **state)
{
	(void)state;
	threads_with(MMK_SNAP_LAZY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_process_mappings),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_diff_copy),
		cmocka_unit_test(test_diff_async),
		cmocka_unit_test(test_diff_lazy),
		cmocka_unit_test(test_diff_mprotect),
		cmocka_unit_test(test_diff_auto),
		cmocka_unit_test(test_lazy_memory),
		cmocka_unit_test(test_adaptive),
		cmocka_unit_test(test_kernel_write_lazy),
		cmocka_unit_test(test_kernel_write_mprotect),
		cmocka_unit_test(test_kernel_write_async),
		cmocka_unit_test(test_changed_copy),
		cmocka_unit_test(test_changed_async),
		cmocka_unit_test(test_changed_lazy),
		cmocka_unit_test(test_changed_mprotect),
		cmocka_unit_test(test_try_mprotect),
		cmocka_unit_test(test_try_copy),
		cmocka_unit_test(test_try_async),
		cmocka_unit_test(test_try_lazy),
		cmocka_unit_test(test_mmcontext_rules),
		cmocka_unit_test(test_mmcontext_heap),
		cmocka_unit_test(test_process_nested),
		cmocka_unit_test(test_exit_with_saved_context),
		cmocka_unit_test(test_threads_async),
		cmocka_unit_test(test_threads_lazy),
		cmocka_unit_test(test_threads_mprotect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
