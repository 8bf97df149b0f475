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

static mmk__state *g_state; /* set once by the constructor, never changed */

static void register_range(uintptr_t s, uintptr_t e)
{
	mmk__state *st = g_state;
	pthread_mutex_lock(&st->self_lock);
	if (st->self_n < MMK__SELF_MAX) {
		st->self[st->self_n].start = s;
		st->self[st->self_n].end = e;
		st->self_n++;
	}
	pthread_mutex_unlock(&st->self_lock);
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
	atomic_init(&st->pagemap_pid, 0);
	st->maps_fd = -1;
	pthread_mutex_init(&st->self_lock, NULL);
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
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	mmk__st();
	register_range((uintptr_t)p, (uintptr_t)p + len);
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
}

bool mmk__self_contains(uintptr_t start, uintptr_t end)
{
	mmk__state *st = mmk__st();
	bool hit = false;
	pthread_mutex_lock(&st->self_lock);
	for (size_t i = 0; i < st->self_n && !hit; i++)
		hit = start < st->self[i].end && end > st->self[i].start;
	pthread_mutex_unlock(&st->self_lock);
	return hit;
}

void mmk__self_object(const char **path)
{
	*path = mmk__st()->self_path;
}
