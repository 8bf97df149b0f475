/*
 * snapshot/lazy.c - the lazy backend: copy-on-first-write through
 * synchronous userfaultfd write-protect faults delivered as SIGBUS.
 *
 * Invariants, for region r at object depth d:
 *   - every page of r is write-protected except the pages in levels[0]
 *     (written since the last push/restore);
 *   - at d >= 1 (and r born), levels[d] holds image(L_d) of exactly the
 *     pages written since L_d, so memory and time are proportional to the
 *     pages written, never to the region;
 *   - the SIGBUS handler only reads the lock-free region registry, copies
 *     into preallocated page stores and makes one ioctl: it allocates
 *     nothing and takes no lock (async-signal-safe).
 * A SIGBUS that is not a write fault on a lazy region goes to mmk_try (if a
 * try is running on this thread) or to the handler installed before
 * mmkit's; SIG_DFL/SIG_IGN there means the default action (the fault is
 * re-raised with the default disposition).
 * Anonymous and shmem mappings only (the kernel refuses sync WP on private
 * file mappings).  The mprotect backend at the end of this file reuses all
 * of it with mprotect + SIGSEGV as the protection mechanism.  Without UFFD_FEATURE_WP_UNPOPULATED, untouched pages are
 * read-populated first so that the protection covers them.
 */
#include "snapshot/snap.h"
#include "sys/state.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int ensure_uffd(mmk_snap *s)
{
	return mmk__snap_uffd(&s->uffd_lazy, UFFD_FEATURE_SIGBUS);
}

/* ---- fault handling ------------------------------------------------------------------
 * Two fault sources share this code: userfaultfd WP faults delivered as
 * SIGBUS (BUS_ADRERR) for lazy regions, and access faults on pages made
 * read-only with mprotect (SIGSEGV, SEGV_ACCERR) for mprotect regions. */

enum { K_BUS = 0, K_SEGV = 1 };

static bool is_mprot(const mmk__region *r)
{
	return r->be == &mmk__be_mprotect;
}

static mmk__region *find_region(uintptr_t a, int kind)
{
	mmk__state *st = mmk__st();
	size_t n = atomic_load(&st->snap_nregions);
	for (size_t i = 0; i < n; i++) {
		mmk__region *r = atomic_load(&st->snap_regions[i]);
		if (r && a >= r->start && a < r->end &&
		    ((kind == K_BUS && r->be == &mmk__be_lazy) || (kind == K_SEGV && is_mprot(r))))
			return r;
	}
	return NULL;
}

/* AS-safe: (un)protect [a, a+len) of r with the region's mechanism */
static int set_protection(mmk__region *r, uintptr_t a, size_t len, bool protect)
{
	if (is_mprot(r))
		return mprotect((void *)a, len, protect ? (int)(r->prot & ~PROT_WRITE) : (int)r->prot) < 0
			       ? -errno
			       : 0;
	return mmk__uffd_wp(&r->owner->uffd_lazy, a, len, protect);
}

bool mmk__lazy_fault(int sig, siginfo_t *si)
{
	int kind = sig == SIGBUS ? K_BUS : K_SEGV;
	if ((kind == K_BUS && si->si_code != BUS_ADRERR) || (kind == K_SEGV && si->si_code != SEGV_ACCERR))
		return false;
	uintptr_t a = (uintptr_t)si->si_addr;
	mmk__region *r = find_region(a, kind);
	if (!r)
		return false;
	mmk_snap *s = r->owner;
	uintptr_t page = MMK__PAGE_DOWN(a);
	size_t i = (page - r->start) / MMK__PAGE;
	if (kind == K_SEGV && mmk__pstore_has(&r->levels[0], i))
		return false; /* already writable: a real access fault */
	if (s->depth >= 1 && r->birth <= s->depth && r->levels[s->depth].area)
		mmk__pstore_put(&r->levels[s->depth], i, (void *)page);
	mmk__pstore_add(&r->levels[0], i);
	/* cannot unprotect: not a state we can continue from; treat it as a
	 * foreign fault */
	return set_protection(r, page, MMK__PAGE, false) == 0;
}

static void chain(int sig, siginfo_t *si, void *uc)
{
	mmk__try_crash(sig); /* does not return if a mmk_try takes it */
	struct sigaction *old = &mmk__st()->snap_old_action[sig == SIGBUS ? K_BUS : K_SEGV];
	if (old->sa_flags & SA_SIGINFO) {
		if (old->sa_sigaction) {
			old->sa_sigaction(sig, si, uc);
			return;
		}
	} else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
		old->sa_handler(sig);
		return;
	}
	/* default action: restore it and let the fault happen again */
	signal(sig, SIG_DFL);
}

static int install(int sig);

static bool claimed(int sig, siginfo_t *si)
{
	mmk__state *st = mmk__st();
	int k = sig == SIGBUS ? K_BUS : K_SEGV;
	for (int i = 0; i < 4; i++) {
		bool (*fn)(int, siginfo_t *) = atomic_load(&st->fault_claim[k][i]);
		if (fn && fn(sig, si))
			return true;
	}
	return false;
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	int saved_errno = errno;
	if (!mmk__lazy_fault(sig, si) && !claimed(sig, si))
		chain(sig, si, uc);
	errno = saved_errno;
}

int mmk__fault_claimant_add(int sig, bool (*claim)(int sig, siginfo_t *si))
{
	mmk__state *st = mmk__st();
	int k = sig == SIGBUS ? K_BUS : K_SEGV;
	int rc = -ENOSPC;
	pthread_mutex_lock(&st->snap_lock);
	for (int i = 0; i < 4; i++) {
		bool (*cur)(int, siginfo_t *) = atomic_load(&st->fault_claim[k][i]);
		if (cur == claim) {
			rc = 0;
			break;
		}
		if (!cur) {
			atomic_store(&st->fault_claim[k][i], claim);
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&st->snap_lock);
	return rc < 0 ? rc : install(sig);
}

static int install(int sig)
{
	mmk__state *st = mmk__st();
	int k = sig == SIGBUS ? K_BUS : K_SEGV, rc = 0;
	pthread_mutex_lock(&st->snap_lock);
	if (st->snap_installed[k]) {
		/* Someone may have replaced it since (test frameworks, crash
		 * reporters): take it back, chaining to theirs. */
		struct sigaction cur;
		if (sigaction(sig, NULL, &cur) == 0 &&
		    (!(cur.sa_flags & SA_SIGINFO) || cur.sa_sigaction != on_fault))
			st->snap_installed[k] = false;
	}
	if (!st->snap_installed[k]) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_fault;
		sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
		sigemptyset(&sa.sa_mask);
		if (sigaction(sig, &sa, &st->snap_old_action[k]) < 0)
			rc = -errno;
		else
			st->snap_installed[k] = true;
	}
	pthread_mutex_unlock(&st->snap_lock);
	return rc;
}

int mmk__lazy_install_handler(void)
{
	return install(SIGBUS);
}

int mmk__mprotect_install_handler(void)
{
	return install(SIGSEGV);
}

/* ---- backend ------------------------------------------------------------------------ */

static int protect_all(mmk_snap *s, mmk__region *r)
{
	if (!mmk_features_get()->uffd_wp_unpopulated) {
		/* make every page present (zero page for untouched ones) so the
		 * protection covers it */
		for (uintptr_t a = r->start; a < r->end; a += MMK__PAGE)
			(void)*(volatile char *)a;
	}
	return mmk__uffd_wp(&s->uffd_lazy, r->start, mmk__rlen(r), true);
}

static int l_attach(mmk_snap *s, mmk__region *r)
{
	int rc = ensure_uffd(s);
	if (rc < 0)
		return rc;
	if ((rc = mmk__lazy_install_handler()) < 0)
		return rc;
	if (!mmk__level(r, 0))
		return -ENOMEM;
	rc = mmk__uffd_register(&s->uffd_lazy, r->start, mmk__rlen(r), UFFDIO_REGISTER_MODE_WP);
	if (rc == -EINVAL && (r->map_flags & MMK__MAP_FILE))
		return MMK_ENOFEAT; /* sync WP refuses private file mappings */
	if (rc < 0)
		return rc;
	rc = protect_all(s, r);
	if (rc < 0)
		mmk__uffd_unregister(&s->uffd_lazy, r->start, mmk__rlen(r));
	return rc;
}

static void l_detach(mmk_snap *s, mmk__region *r)
{
	if (!r->gone)
		mmk__uffd_unregister(&s->uffd_lazy, r->start, mmk__rlen(r));
}

/* re-protect the pages written since the last push/restore, in runs */
static int reprotect(mmk__region *r)
{
	mmk__pstore *u = &r->levels[0];
	int rc = 0;
	size_t k = 0;
	while (k < u->n) {
		size_t i = u->idx[k], j = k + 1;
		while (j < u->n && u->idx[j] == u->idx[j - 1] + 1)
			j++;
		int e = set_protection(r, r->start + i * MMK__PAGE, (j - k) * MMK__PAGE, true);
		if (e < 0 && !rc)
			rc = e;
		k = j;
	}
	r->last_dirty = u->n;
	mmk__pstore_clear(u, false);
	return rc;
}

static int l_push(mmk_snap *s, mmk__region *r, int nd)
{
	(void)s;
	mmk__pstore *st = mmk__level(r, nd);
	if (!st)
		return -ENOMEM;
	mmk__pstore_clear(st, false);
	return reprotect(r);
}

static int l_restore(mmk_snap *s, mmk__region *r, int d)
{
	(void)s;
	mmk__pstore *st = &r->levels[d];
	for (size_t k = 0; k < st->n; k++) {
		size_t i = st->idx[k];
		mmk__copy((char *)r->start + i * MMK__PAGE, mmk__pstore_page(st, i), MMK__PAGE);
	}
	mmk__pstore_clear(st, true);
	return reprotect(r);
}

static int l_drop(mmk_snap *s, mmk__region *r, int d)
{
	(void)s;
	mmk__pstore *st = &r->levels[d];
	if (d >= 2 && st->n) {
		/* pages first written after L_d but not after L_{d-1} had the
		 * same content at both: their L_d image is their L_{d-1} image */
		mmk__pstore *below = mmk__level(r, d - 1);
		if (!below)
			return -ENOMEM;
		for (size_t k = 0; k < st->n; k++) {
			size_t i = st->idx[k];
			mmk__pstore_put(below, i, mmk__pstore_page(st, i));
		}
	}
	mmk__pstore_clear(st, true);
	return 0;
}

/* in runs of consecutive indices, as they were first written */
static int report_set(mmk__region *r, mmk__pstore *ps, mmk_snap_run_fn fn, void *arg)
{
	size_t k = 0;
	while (k < ps->n) {
		size_t j = k + 1;
		while (j < ps->n && ps->idx[j] == ps->idx[j - 1] + 1)
			j++;
		int rc = fn((char *)r->start + ps->idx[k] * MMK__PAGE, (j - k) * MMK__PAGE, arg);
		if (rc)
			return rc;
		k = j;
	}
	return 0;
}

static int l_changed(mmk_snap *s, mmk__region *r, int d, mmk_snap_run_fn fn, void *arg)
{
	(void)s;
	return report_set(r, &r->levels[d], fn, arg);
}

static const void *l_saved_page(const mmk__region *r, int d, size_t i)
{
	if (!r->levels || !mmk__pstore_has(&r->levels[d], i))
		return NULL;
	return mmk__pstore_page(&r->levels[d], i);
}

static size_t l_bytes(const mmk__region *r)
{
	size_t n = 0;
	for (int i = 1; r->levels && i <= MMK__SNAP_MAX_DEPTH; i++)
		n += r->levels[i].n * MMK__PAGE;
	return n;
}

const mmk__backend mmk__be_lazy = {
	.name = "lazy",
	.id = MMK_SNAP_LAZY,
	.attach = l_attach,
	.detach = l_detach,
	.push = l_push,
	.restore = l_restore,
	.drop = l_drop,
	.changed = l_changed,
	.saved_page = l_saved_page,
	.bytes = l_bytes,
};

/* ---- the mprotect backend ---------------------------------------------------------------
 * The same copy-on-first-write as lazy, for kernels (or users) without
 * userfaultfd: pages are made read-only with mprotect and the first write
 * raises SIGSEGV (SEGV_ACCERR), handled here.  mprotect splits the mapping
 * at every unprotected page (a process has at most vm.max_map_count
 * mappings), so this is used for explicit regions only, never for process
 * scope, and only when userfaultfd WP is unavailable (or forced). */

static int m_attach(mmk_snap *s, mmk__region *r)
{
	(void)s;
	int rc = mmk__mprotect_install_handler();
	if (rc < 0)
		return rc;
	if (!mmk__level(r, 0))
		return -ENOMEM;
	return set_protection(r, r->start, mmk__rlen(r), true);
}

static void m_detach(mmk_snap *s, mmk__region *r)
{
	(void)s;
	if (!r->gone)
		mprotect((void *)r->start, mmk__rlen(r), (int)r->prot);
}

const mmk__backend mmk__be_mprotect = {
	.name = "mprotect",
	.id = MMK_SNAP_MPROTECT,
	.attach = m_attach,
	.detach = m_detach,
	.push = l_push,
	.restore = l_restore,
	.drop = l_drop,
	.changed = l_changed,
	.saved_page = l_saved_page,
	.bytes = l_bytes,
};
