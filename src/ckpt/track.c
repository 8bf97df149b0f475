/*
 * ckpt/track.c - the SIGBUS side of checkpoints: a registry of tracked
 * regions (read lock-free by the handler) and the write-protect fault
 * handler that implements copy-before-write.
 *
 * Invariants:
 *   - the handler allocates nothing, takes no lock, and makes one
 *     UFFDIO_WRITEPROTECT ioctl (plus sched_yield while it waits for the
 *     writer thread to finish copying the same page): async-signal-safe;
 *   - it copies a PENDING page aside before un-protecting it, so the page's
 *     checkpoint-instant content is never lost (see ckpt_int.h);
 *   - faults arrive through mmkit's one SIGBUS handler (the snapshot
 *     engine's, which asks its lazy regions, then us, then treats the fault
 *     as foreign: mmk_try or the handler installed before mmkit's);
 *   - process-wide state: one block in mmkit's own memory, reached through
 *     a pointer set once by a constructor (like sys/state.h's).
 */
#include "ckpt/ckpt_int.h"
#include "snapshot/snap.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CK_REG_MAX 1024

typedef struct ck_registry {
	pthread_mutex_t lock;
	ck_region *_Atomic r[CK_REG_MAX];
	_Atomic size_t n;
	_Atomic long active;     /* handlers inside a region of ours */
} ck_registry;

static ck_registry *g_ck; /* set once by the constructor, never changed */

__attribute__((constructor)) static void ck_registry_init(void)
{
	if (g_ck)
		return;
	ck_registry *g = mmk__self_alloc(sizeof *g);
	if (!g)
		abort(); /* load time only */
	pthread_mutex_init(&g->lock, NULL);
	g_ck = g;
}

static ck_registry *reg(void)
{
	if (__builtin_expect(!g_ck, 0))
		ck_registry_init();
	return g_ck;
}

static ck_region *find(uintptr_t a)
{
	ck_registry *g = g_ck;
	if (!g)
		return NULL;
	size_t n = atomic_load_explicit(&g->n, memory_order_acquire);
	for (size_t i = 0; i < n; i++) {
		ck_region *r = atomic_load_explicit(&g->r[i], memory_order_acquire);
		if (r && a >= r->start && a < r->end)
			return r;
	}
	return NULL;
}


static inline void spin(unsigned *k)
{
	if (++*k < 64)
		CK_CPU_RELAX();
	else
		sched_yield();
}

/* handle a write fault at page `page` of r; 0 or -errno from the ioctl */
int mmk__ck_handle(ck_region *r, uintptr_t page)
{
	mmk_ckpt *c = r->owner;
	size_t i = (page - r->start) / MMK__PAGE;
	_Atomic uint8_t *s = &r->st[i];
	unsigned k = 0;
	int rc;
	atomic_fetch_add_explicit(&c->faults, 1, memory_order_relaxed);
	for (;;) {
		uint8_t v = atomic_load_explicit(s, memory_order_acquire);
		switch (v) {
		case CK_CLEAN:
		case CK_DIRTY_P:
		case CK_DIRTY: /* protected again by a sweep's span ioctl that
				* raced with an earlier fault: un-protect again */
			if (!atomic_compare_exchange_weak(s, &v, CK_UNPROT))
				continue;
			rc = mmk__uffd_wp(&c->uffd, page, MMK__PAGE, false);
			atomic_store_explicit(s, CK_DIRTY, memory_order_release);
			return rc;
		case CK_PENDING:
			if (!atomic_compare_exchange_weak(s, &v, CK_COPYING))
				continue;
			mmk__copy(r->side + i * MMK__PAGE, (const void *)page, MMK__PAGE);
			{
				size_t h = atomic_fetch_add(&c->held_now, 1) + 1;
				size_t p = atomic_load(&c->held_peak);
				while (h > p && !atomic_compare_exchange_weak(&c->held_peak, &p, h))
					;
				atomic_fetch_add(&c->copied, 1);
			}
			rc = mmk__uffd_wp(&c->uffd, page, MMK__PAGE, false);
			atomic_store_explicit(s, CK_COPIED, memory_order_release);
			return rc;
		case CK_UNPROT:
		case CK_WRITING:
		case CK_COPYING:
			spin(&k);
			continue;
		default: /* COPIED: un-protected by the handler that copied it;
			  * never protected again before the writer takes it */
			return mmk__uffd_wp(&c->uffd, page, MMK__PAGE, false);
		}
	}
}

/* Our write faults, claimed through mmkit's one SIGBUS handler (the
 * snapshot engine's, src/snapshot/lazy.c): it asks its own lazy regions,
 * then us, and only then treats the fault as foreign (mmk_try, or the
 * handler installed before mmkit's). */
static bool ck_claim(int sig, siginfo_t *si)
{
	(void)sig;
	ck_registry *g = g_ck;
	if (!g || si->si_code != BUS_ADRERR)
		return false;
	atomic_fetch_add(&g->active, 1);
	uintptr_t a = (uintptr_t)si->si_addr;
	ck_region *r = find(a);
	bool ok = r && mmk__ck_handle(r, MMK__PAGE_DOWN(a)) == 0;
	atomic_fetch_sub(&g->active, 1);
	return ok;
}

int mmk__ck_install_handler(void)
{
	reg();
	/* registers once; re-installs mmkit's handler on top if replaced */
	return mmk__fault_claimant_add(SIGBUS, ck_claim);
}

int mmk__ck_registry_add(ck_region *r)
{
	ck_registry *g = reg();
	int rc = -ENOSPC;
	pthread_mutex_lock(&g->lock);
	size_t n = atomic_load(&g->n);
	for (size_t i = 0; i < n; i++)
		if (!atomic_load(&g->r[i])) {
			atomic_store(&g->r[i], r);
			rc = 0;
			break;
		}
	if (rc && n < CK_REG_MAX) {
		atomic_store(&g->r[n], r);
		atomic_store_explicit(&g->n, n + 1, memory_order_release);
		rc = 0;
	}
	pthread_mutex_unlock(&g->lock);
	if (!rc)
		r->in_registry = true;
	return rc;
}

void mmk__ck_registry_remove(ck_region *r)
{
	if (!r->in_registry)
		return;
	ck_registry *g = reg();
	pthread_mutex_lock(&g->lock);
	size_t n = atomic_load(&g->n);
	for (size_t i = 0; i < n; i++)
		if (atomic_load(&g->r[i]) == r)
			atomic_store(&g->r[i], NULL);
	pthread_mutex_unlock(&g->lock);
	r->in_registry = false;
}

void mmk__ck_registry_quiesce(void)
{
	ck_registry *g = reg();
	while (atomic_load(&g->active) > 0)
		sched_yield();
}
