/*
 * sys/self.c - mmkit's own memory and the process-wide state block.
 *
 * Invariants: see sys/state.h.  The state block is allocated by a
 * constructor (before main, single-threaded) and registered as the first
 * self range.  The registry is a sorted-free small array under a mutex;
 * lookups are linear (it holds a handful of ranges: state, shadows, rings).
 */
#include "sys/state.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

static mmk__state *g_state; /* set once by the constructor, never changed */

static bool register_range(uintptr_t s, uintptr_t e)
{
	mmk__state *st = g_state;
	bool ok = false;
	pthread_mutex_lock(&st->self_lock);
	if (st->self_n < MMK__SELF_MAX) {
		st->self[st->self_n].start = s;
		st->self[st->self_n].end = e;
		st->self_n++;
		ok = true;
	}
	pthread_mutex_unlock(&st->self_lock);
	return ok;
}

__attribute__((constructor)) static void mmk__state_init(void)
{
	if (g_state)
		return;
	size_t len = MMK__PAGE_UP(sizeof(mmk__state));
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		abort(); /* cannot run without it; happens only at load time */
	mmk__state *st = p;
	st->probe_once = (pthread_once_t)PTHREAD_ONCE_INIT;
	atomic_init(&st->pagemap_fd, -1);
	st->maps_fd = -1;
	pthread_mutex_init(&st->self_lock, NULL);
	pthread_mutex_init(&st->snap_lock, NULL);
	Dl_info info;
	if (dladdr((void *)&mmk__state_init, &info) && info.dli_fname) {
		/* Only a shared object counts as "self": when linked statically
		 * the name is the program's, whose data must be snapshotted. */
		Dl_info main_info;
		void *main_sym = dlsym(RTLD_DEFAULT, "main");
		bool is_main = main_sym && dladdr(main_sym, &main_info) &&
			       main_info.dli_fbase == info.dli_fbase;
		if (!is_main && strstr(info.dli_fname, "libmmkit")) {
			strncpy(st->self_path_buf, info.dli_fname, sizeof st->self_path_buf - 1);
			st->self_path = st->self_path_buf;
		}
	}
	g_state = st;
	register_range((uintptr_t)p, (uintptr_t)p + len);
	pthread_atfork(NULL, NULL, mmk__sys_atfork_child);
}

mmk__state *mmk__st(void)
{
	if (__builtin_expect(!g_state, 0))
		mmk__state_init(); /* a constructor of another object ran first */
	return g_state;
}

void *mmk__self_alloc(size_t len)
{
	len = MMK__PAGE_UP(len);
	/* NORESERVE: large sparse areas (page stores) use memory only for the
	 * pages actually written. */
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	mmk__st();
	/* A name keeps the kernel from merging this mapping with the
	 * program's neighbouring anonymous memory (5.17+; harmless if
	 * absent: process scope subtracts self ranges anyway) and shows it as
	 * [anon:mmkit] in /proc/PID/maps. */
	prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)p, len, (unsigned long)"mmkit");
	if (!register_range((uintptr_t)p, (uintptr_t)p + len)) {
		munmap(p, len);
		return NULL;
	}
	atomic_fetch_add(&mmk__st()->self_pages, len / MMK__PAGE);
	return p;
}

void mmk__self_free(void *p, size_t len)
{
	if (!p)
		return;
	len = MMK__PAGE_UP(len);
	mmk__state *st = mmk__st();
	pthread_mutex_lock(&st->self_lock);
	for (size_t i = 0; i < st->self_n; i++) {
		if (st->self[i].start == (uintptr_t)p) {
			st->self[i] = st->self[--st->self_n];
			break;
		}
	}
	pthread_mutex_unlock(&st->self_lock);
	munmap(p, len);
	atomic_fetch_sub(&st->self_pages, len / MMK__PAGE);
}

int mmk__self_subtract(uintptr_t a, uintptr_t b, int (*fn)(uintptr_t, uintptr_t, void *), void *arg)
{
	/* Collect the self ranges inside [a, b) (sorted), then emit the gaps.
	 * Bounded stack use: at most MMK__SELF_MAX ranges are examined. */
	mmk__state *st = mmk__st();
	uintptr_t cur = a;
	for (;;) {
		uintptr_t ns = b, ne = b;
		pthread_mutex_lock(&st->self_lock);
		for (size_t i = 0; i < st->self_n; i++) {
			uintptr_t s0 = st->self[i].start, e0 = st->self[i].end;
			if (e0 > cur && s0 < b && (s0 < ns || (s0 <= cur && e0 > ne))) {
				ns = s0 < cur ? cur : s0;
				ne = e0;
			}
		}
		pthread_mutex_unlock(&st->self_lock);
		if (ns > cur) {
			int rc = fn(cur, ns < b ? ns : b, arg);
			if (rc)
				return rc;
		}
		if (ne >= b)
			return 0;
		cur = ne;
	}
}

bool mmk__self_covers(uintptr_t start, uintptr_t end)
{
	mmk__state *st = mmk__st();
	uintptr_t cur = start;
	bool progress = true;
	pthread_mutex_lock(&st->self_lock);
	while (cur < end && progress) {
		progress = false;
		for (size_t i = 0; i < st->self_n; i++)
			if (st->self[i].start <= cur && st->self[i].end > cur) {
				cur = st->self[i].end;
				progress = true;
			}
	}
	pthread_mutex_unlock(&st->self_lock);
	return cur >= end;
}

size_t mmk__self_pages(void)
{
	return atomic_load(&mmk__st()->self_pages);
}

void mmk__self_object(const char **path)
{
	*path = mmk__st()->self_path;
}

/* Small objects in mmkit's own memory: one mapping each, with a 16-byte
 * header holding the mapping's length.  Used for every structure a
 * whole-process snapshot must not roll back (snapshot objects, region
 * lists, scratch lists used across a restore). */
struct self_hdr {
	size_t len;
	size_t pad;
};

void *mmk__self_calloc(size_t n, size_t size)
{
	if (size && n > (SIZE_MAX - sizeof(struct self_hdr)) / size)
		return NULL;
	size_t len = MMK__PAGE_UP(n * size + sizeof(struct self_hdr));
	struct self_hdr *h = mmk__self_alloc(len);
	if (!h)
		return NULL;
	h->len = len;
	return h + 1;
}

void mmk__self_release(void *p)
{
	if (!p)
		return;
	struct self_hdr *h = (struct self_hdr *)p - 1;
	mmk__self_free(h, h->len);
}

void *mmk__self_realloc(void *p, size_t size)
{
	if (!p)
		return mmk__self_calloc(1, size);
	struct self_hdr *h = (struct self_hdr *)p - 1;
	size_t have = h->len - sizeof *h;
	if (size <= have)
		return p;
	void *n = mmk__self_calloc(1, size + size / 2);
	if (!n)
		return NULL;
	memcpy(n, p, have);
	mmk__self_release(p);
	return n;
}
