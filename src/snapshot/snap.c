/*
 * snapshot/snap.c - snapshot objects: regions, the save-point stack, the
 * public API, page stores and the cross-object region registry.
 *
 * Invariants: (1) every region of every live object is in the registry
 * (sys/state.h snap_regions) exactly while it is attached, so overlapping
 * claims fail with -EBUSY and the SIGBUS handler can find lazy regions
 * without locks; (2) an operation on an object is applied to all its regions
 * or, on failure before any memory changed, to none: save pushes region by
 * region and unwinds the pushed ones on error; (3) s->depth is the number of
 * save points every region's backend holds.
 */
#include "snapshot/snap.h"
#include "sys/state.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- page stores -------------------------------------------------------------- */

static size_t pstore_bytes(size_t npages)
{
	return npages * MMK__PAGE + MMK__PAGE_UP((npages + 63) / 64 * 8) +
	       MMK__PAGE_UP(npages * sizeof(uint32_t));
}

int mmk__pstore_init(mmk__pstore *ps, size_t npages)
{
	memset(ps, 0, sizeof *ps);
	char *m = mmk__self_alloc(pstore_bytes(npages));
	if (!m)
		return -ENOMEM;
	ps->area = m;
	ps->bits = (uint64_t *)(m + npages * MMK__PAGE);
	ps->idx = (uint32_t *)((char *)ps->bits + MMK__PAGE_UP((npages + 63) / 64 * 8));
	ps->npages = npages;
	return 0;
}

void mmk__pstore_fini(mmk__pstore *ps)
{
	if (ps->area)
		mmk__self_free(ps->area, pstore_bytes(ps->npages));
	memset(ps, 0, sizeof *ps);
}

int mmk__pstore_put(mmk__pstore *ps, size_t i, const void *src)
{
	if (mmk__pstore_has(ps, i))
		return 0;
	mmk__copy(ps->area + i * MMK__PAGE, src, MMK__PAGE);
	ps->bits[i >> 6] |= 1ULL << (i & 63);
	ps->idx[ps->n++] = (uint32_t)i;
	return 1;
}

/* Release held pages to the kernel only past this many: small working sets
 * are reused by the next cycle and madvise costs ~0.1 us a page. */
#define PSTORE_KEEP_PAGES 256

void mmk__pstore_clear(mmk__pstore *ps, bool release_memory)
{
	for (size_t k = 0; k < ps->n; k++) {
		size_t i = ps->idx[k];
		ps->bits[i >> 6] &= ~(1ULL << (i & 63));
	}
	if (release_memory && ps->n > PSTORE_KEEP_PAGES)
		madvise(ps->area, ps->npages * MMK__PAGE, MADV_DONTNEED);
	ps->n = 0;
}

mmk__pstore *mmk__level(mmk__region *r, int i)
{
	if (!r->levels) {
		r->levels = mmk__self_calloc(MMK__SNAP_MAX_DEPTH + 1, sizeof *r->levels);
		if (!r->levels)
			return NULL;
	}
	mmk__pstore *ps = &r->levels[i];
	if (!ps->area && mmk__pstore_init(ps, r->npages) < 0)
		return NULL;
	return ps;
}

int mmk__snap_uffd(mmk__uffd *u, uint64_t features)
{
	if (u->fd >= 0)
		return 0;
	if (mmk_features_get()->uffd_wp_unpopulated)
		features |= UFFD_FEATURE_WP_UNPOPULATED;
	int rc = mmk__uffd_open(u, features, 0);
	return rc == -EOPNOTSUPP ? MMK_ENOFEAT : rc;
}

/* ---- registry ----------------------------------------------------------------- */

bool mmk__snap_overlaps(uintptr_t start, uintptr_t end)
{
	mmk__state *st = mmk__st();
	size_t n = atomic_load(&st->snap_nregions);
	for (size_t i = 0; i < n; i++) {
		mmk__region *r = atomic_load(&st->snap_regions[i]);
		if (r && start < r->end && end > r->start)
			return true;
	}
	return false;
}

int mmk__snap_claim(mmk__region *r)
{
	mmk__state *st = mmk__st();
	int rc = 0;
	pthread_mutex_lock(&st->snap_lock);
	size_t n = atomic_load(&st->snap_nregions);
	if (mmk__snap_overlaps(r->start, r->end)) {
		rc = -EBUSY;
	} else {
		size_t i;
		for (i = 0; i < n; i++)
			if (!atomic_load(&st->snap_regions[i]))
				break;
		if (i == MMK__SELF_MAX)
			rc = -ENOMEM;
		else {
			atomic_store(&st->snap_regions[i], r);
			if (i == n)
				atomic_store(&st->snap_nregions, n + 1);
		}
	}
	pthread_mutex_unlock(&st->snap_lock);
	return rc;
}

void mmk__snap_unclaim(mmk__region *r)
{
	mmk__state *st = mmk__st();
	pthread_mutex_lock(&st->snap_lock);
	size_t n = atomic_load(&st->snap_nregions);
	for (size_t i = 0; i < n; i++)
		if (atomic_load(&st->snap_regions[i]) == r)
			atomic_store(&st->snap_regions[i], NULL);
	while (n > 0 && !atomic_load(&st->snap_regions[n - 1]))
		n--;
	atomic_store(&st->snap_nregions, n);
	pthread_mutex_unlock(&st->snap_lock);
}

/* ---- backend choice --------------------------------------------------------------- */

#define COPY_MAX (64UL << 10)
#define LAZY_MIN (64UL << 20)

static bool can_async(void)
{
	const mmk_features *f = mmk_features_get();
	return f->uffd_wp_async && f->pagemap_scan;
}

/* Lazy (and mprotect) tracking makes a tracked page fault synchronously on
 * its first write after a save point.  A write by the kernel itself - read(2)
 * into the page, the rseq area in the thread's TCB, a robust-futex list -
 * cannot take that fault: the system call fails with EFAULT (or, for rseq,
 * the kernel kills the thread with SIGSEGV).  So these backends are never
 * chosen automatically; a caller opts in (opts.backend, or MMK_SNAP_LAZY_LARGE
 * for big anonymous regions), and even then never for the heap (malloc trims
 * it with brk, and only a full copy can re-grow it), file mappings (the
 * kernel refuses sync WP there) or the mapping holding this thread's TCB. */
static bool lazy_ok(uintptr_t start, uintptr_t end, unsigned map_flags)
{
	const mmk_features *f = mmk_features_get();
	uintptr_t tp = (uintptr_t)pthread_self();
	return f->uffd_wp && f->uffd_sigbus && !(map_flags & (MMK__MAP_FILE | MMK__MAP_HEAP)) &&
	       !(tp >= start && tp < end);
}

/* First choice for a region, before anything is known of its writes. */
static const mmk__backend *backend_for(mmk_snap *s, uintptr_t start, uintptr_t end,
				       unsigned map_flags, bool automatic, int *err)
{
	size_t len = end - start;
	const mmk_features *f = mmk_features_get();
	*err = 0;
	switch (s->opts.backend) {
	case MMK_SNAP_COPY:
		return &mmk__be_copy;
	case MMK_SNAP_ASYNC:
		if (!can_async())
			*err = MMK_ENOFEAT;
		return can_async() ? &mmk__be_async : NULL;
	case MMK_SNAP_LAZY:
		if (automatic)
			break; /* process scope: chosen as for AUTO (see lazy_ok) */
		if (lazy_ok(start, end, map_flags))
			return &mmk__be_lazy;
		*err = MMK_ENOFEAT;
		return NULL;
	case MMK_SNAP_MPROTECT:
		if (automatic)
			break;
		return &mmk__be_mprotect;
	case MMK_SNAP_AUTO:
		break;
	}
	if ((s->opts.flags & MMK_SNAP_LAZY_LARGE) && len >= LAZY_MIN && lazy_ok(start, end, map_flags))
		return &mmk__be_lazy;
	/* Process scope: every async region shares one scan per call, so even
	 * a one-page region costs almost nothing there, while a copy region
	 * costs two copies per save/restore cycle. */
	if (!automatic && len < COPY_MAX)
		return &mmk__be_copy;
	if (can_async())
		return &mmk__be_async;
	(void)f;
	return &mmk__be_copy;
}

/* ---- adaptive policy (AUTO objects) ---------------------------------------------------
 * After every restore at depth 1 the engine knows how many pages the region
 * had dirtied (copy regions: sampled every COPY_SAMPLE restores by comparing
 * pages).  From a moving average it picks the cheapest backend, by the
 * costs measured on this machine class (per page: ~2.5 us lazy fault + copy,
 * ~0.5 us async fault + copy, ~0.7 ns async scan of a clean page, ~0.25 us
 * copy), and switches after SWITCH_AFTER consecutive restores agree (at
 * once from async to copy when one restore found >= 3/4 of the pages dirty,
 * whatever the history).  The
 * switch happens right after a restore, when memory equals image(L_1), so
 * the new backend starts from exactly the saved image. */
#define COPY_SAMPLE 16
#define SWITCH_AFTER 4

static const mmk__backend *best_backend(const mmk__region *r)
{
	double d = r->ewma_dirty, n = (double)r->npages;
	const mmk__backend *cur = r->be;
	/* Small regions stay where they are: every choice is cheap there and
	 * switching is not.  Lazy regions were asked for (see lazy_ok). */
	if (r->end - r->start < COPY_MAX || cur == &mmk__be_lazy || cur == &mmk__be_mprotect)
		return cur;
	/* hysteresis bands, so a region does not flap between backends */
	if (cur == &mmk__be_copy ? d > 0.2 * n : d > 0.5 * n)
		return &mmk__be_copy;
	return can_async() ? &mmk__be_async : &mmk__be_copy;
}

static void adapt(mmk_snap *s, mmk__region *r)
{
	if (r->be == &mmk__be_copy && !r->copy_sampled)
		return; /* no observation this time */
	r->ewma_dirty = r->nobs ? 0.7 * r->ewma_dirty + 0.3 * (double)r->last_dirty
				: (double)r->last_dirty;
	r->nobs++;
	/* Overwhelming evidence needs no confirmation and outweighs the
	 * history: a restore that found at least three quarters of a large
	 * async region dirty has just paid a write fault per page; copying
	 * wins by far, and waiting SWITCH_AFTER restores would pay that again
	 * (4 x 100 ms for a dirty 256 MiB region). */
	bool sure = r->be == &mmk__be_async && r->end - r->start >= COPY_MAX &&
		    4 * r->last_dirty >= 3 * r->npages;
	const mmk__backend *want = sure ? &mmk__be_copy : best_backend(r);
	if (want == r->be) {
		r->want_count = 0;
		return;
	}
	if (++r->want_count < SWITCH_AFTER && !sure)
		return;
	r->want_count = 0;
	const mmk__backend *old = r->be;
	old->detach(s, r);
	for (int i = 0; r->levels && i <= MMK__SNAP_MAX_DEPTH; i++)
		if (r->levels[i].area)
			mmk__pstore_clear(&r->levels[i], true);
	r->be = want;
	s->async_dirty = true;
	if (want->attach(s, r) == 0 && want->push(s, r, 1) == 0)
		return;
	/* could not switch (e.g. out of memory): go back */
	want->detach(s, r);
	r->be = old;
	if (old->attach(s, r) < 0 || old->push(s, r, 1) < 0)
		r->broken = true;
}

/* ---- regions ------------------------------------------------------------------------ */

int mmk__snap_add_region(mmk_snap *s, uintptr_t start, uintptr_t end, unsigned map_flags,
			 unsigned prot, bool automatic)
{
	int err;
	const mmk__backend *be = backend_for(s, start, end, map_flags, automatic, &err);
	if (!be)
		return err;
	if (s->nregions == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 16;
		mmk__region **nv = mmk__self_realloc(s->regions, ncap * sizeof *nv);
		if (!nv)
			return -ENOMEM;
		s->regions = nv;
		s->cap = ncap;
	}
	mmk__region *r = mmk__self_calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->start = start;
	r->end = end;
	r->npages = (end - start) / MMK__PAGE;
	r->map_flags = map_flags;
	r->prot = prot;
	r->birth = s->depth + 1;
	r->automatic = automatic;
	r->owner = s;
	r->ustart = start;
	r->uend = end;
	r->be = be;
	int rc = mmk__snap_claim(r);
	if (rc < 0) {
		mmk__self_release(r);
		return rc;
	}
	rc = be->attach(s, r);
	if (rc < 0) {
		mmk__snap_unclaim(r);
		mmk__self_release(r);
		return rc;
	}
	s->regions[s->nregions++] = r;
	s->async_dirty = true;
	return 0;
}

static void free_levels(mmk__region *r)
{
	if (r->levels) {
		for (int i = 0; i <= MMK__SNAP_MAX_DEPTH; i++)
			mmk__pstore_fini(&r->levels[i]);
		mmk__self_release(r->levels);
		r->levels = NULL;
	}
}

void mmk__snap_remove_region(mmk_snap *s, size_t i)
{
	mmk__region *r = s->regions[i];
	r->be->detach(s, r);
	free_levels(r);
	mmk__snap_unclaim(r);
	mmk__self_release(r);
	s->regions[i] = s->regions[--s->nregions];
	s->async_dirty = true;
}

/* ---- API -------------------------------------------------------------------------------- */

const char *mmk_snap_backend_name(mmk_snap_backend b)
{
	switch (b) {
	case MMK_SNAP_AUTO:
		return "auto";
	case MMK_SNAP_COPY:
		return "copy";
	case MMK_SNAP_ASYNC:
		return "async";
	case MMK_SNAP_LAZY:
		return "lazy";
	case MMK_SNAP_MPROTECT:
		return "mprotect";
	}
	return "?";
}

static int backend_from_env(mmk_snap_backend *b)
{
	const char *e = getenv("MMK_SNAP_BACKEND");
	if (!e || !*e || !strcmp(e, "auto"))
		return 0;
	if (!strcmp(e, "copy"))
		*b = MMK_SNAP_COPY;
	else if (!strcmp(e, "async"))
		*b = MMK_SNAP_ASYNC;
	else if (!strcmp(e, "lazy"))
		*b = MMK_SNAP_LAZY;
	else if (!strcmp(e, "mprotect"))
		*b = MMK_SNAP_MPROTECT;
	else
		return -EINVAL;
	return 0;
}

int mmk_snap_create(mmk_snap **out, const mmk_snap_opts *opts)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	mmk_snap_opts o = { 0 };
	if (opts)
		o = *opts;
	if ((unsigned)o.backend > MMK_SNAP_MPROTECT ||
	    (o.flags & ~(unsigned)(MMK_SNAP_PARANOID | MMK_SNAP_LAZY_LARGE)))
		return -EINVAL;
	if (o.backend == MMK_SNAP_AUTO && backend_from_env(&o.backend) < 0)
		return -EINVAL;
	const mmk_features *f = mmk_features_get();
	if (o.backend == MMK_SNAP_ASYNC && !(f->uffd_wp_async && f->pagemap_scan))
		return MMK_ENOFEAT;
	if ((o.backend == MMK_SNAP_LAZY || (o.flags & MMK_SNAP_LAZY_LARGE)) &&
	    !(f->uffd_wp && f->uffd_sigbus))
		return MMK_ENOFEAT;
	mmk_snap *s = mmk__self_calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->opts = o;
	s->adaptive = o.backend == MMK_SNAP_AUTO;
	s->pid = getpid();
	s->uffd_async.fd = -1;
	s->uffd_lazy.fd = -1;
	s->statm_fd = -1;
	*out = s;
	return 0;
}

/* [a, e) is tracked by some object.  A process-scope object at depth 0
 * holds its regions loosely (they may even be stale: memory unmapped and
 * mapped again since its last look): an explicit add takes them over, and
 * that object re-reads the address space at its next save.  Anything else
 * is -EBUSY. */
static int steal(mmk_snap *s, uintptr_t a, uintptr_t e)
{
	mmk__state *st = mmk__st();
	size_t n = atomic_load(&st->snap_nregions);
	for (size_t i = 0; i < n; i++) {
		mmk__region *r = atomic_load(&st->snap_regions[i]);
		if (!r || a >= r->end || e <= r->start)
			continue;
		mmk_snap *o = r->owner;
		if (o == s || !r->automatic || o->depth > 0)
			return -EBUSY;
		for (size_t j = 0; j < o->nregions; j++)
			if (o->regions[j] == r) {
				mmk__snap_remove_region(o, j);
				break;
			}
		o->last_brk = 0; /* make it look again next time */
	}
	return 0;
}

int mmk_snap_add(mmk_snap *s, void *addr, size_t len)
{
	if (!s || len == 0)
		return -EINVAL;
	if (s->depth > 0)
		return -EBUSY;
	uintptr_t start = MMK__PAGE_DOWN(addr), end = MMK__PAGE_UP((uintptr_t)addr + len);
	if (end <= start)
		return -EINVAL;
	/* The whole range must be mapped private+writable; it may span several
	 * mappings, each becomes its own region. */
	uintptr_t a = start;
	size_t first = s->nregions;
	int rc = 0;
	/* another object's (or this one's) tracking first: -EBUSY even where
	 * that tracking has made the pages read-only (mprotect backend) */
	if (mmk__snap_overlaps(start, end) && (rc = steal(s, start, end)) < 0)
		return rc;
	while (a < end) {
		mmk__map m;
		rc = mmk__maps_find(a, &m);
		if (rc < 0 || m.start > a || !(m.prot & PROT_WRITE) || (m.flags & MMK__MAP_SHARED)) {
			rc = rc == -EBUSY ? rc : -EINVAL;
			break;
		}
		uintptr_t e = m.end < end ? m.end : end;
		if (mmk__snap_overlaps(a, e) && (rc = steal(s, a, e)) < 0)
			break;
		rc = mmk__snap_add_region(s, a, e, m.flags, m.prot, false);
		if (rc < 0)
			break;
		/* the copy backend keeps exactly the bytes asked for */
		mmk__region *r = s->regions[s->nregions - 1];
		if ((uintptr_t)addr > r->ustart)
			r->ustart = (uintptr_t)addr;
		if ((uintptr_t)addr + len < r->uend)
			r->uend = (uintptr_t)addr + len;
		a = e;
	}
	if (rc < 0)
		while (s->nregions > first)
			mmk__snap_remove_region(s, s->nregions - 1);
	return rc;
}

int mmk_snap_add_process(mmk_snap *s)
{
	if (!s)
		return -EINVAL;
	if (s->depth > 0 || s->process)
		return -EBUSY;
	s->process = true;
	int rc = mmk__proc_attach_all(s);
	if (rc < 0)
		s->process = false;
	return rc;
}

int mmk_snap_exclude(mmk_snap *s, void *addr, size_t len)
{
	if (!s || len == 0)
		return -EINVAL;
	if (s->depth > 0)
		return -EBUSY;
	void *n = mmk__self_realloc(s->excl, (s->nexcl + 1) * sizeof *s->excl);
	if (!n)
		return -ENOMEM;
	s->excl = n;
	s->excl[s->nexcl].start = MMK__PAGE_DOWN(addr);
	s->excl[s->nexcl].end = MMK__PAGE_UP((uintptr_t)addr + len);
	s->nexcl++;
	if (s->process)
		return mmk_snap_rescan(s);
	return 0;
}

int mmk_snap_rescan(mmk_snap *s)
{
	if (!s)
		return -EINVAL;
	if (!s->process)
		return 0;
	s->last_brk = 0; /* force */
	return mmk__proc_check(s, false, s->depth);
}

int mmk_snap_save(mmk_snap *s)
{
	if (!s)
		return -EINVAL;
	if (s->depth >= MMK__SNAP_MAX_DEPTH)
		return -E2BIG;
	if (s->process) {
		int rc = mmk__proc_check(s, false, s->depth);
		if (rc < 0)
			return rc;
		s->brk_at[s->depth + 1] = (uintptr_t)sbrk(0);
	}
	if (s->nregions == 0)
		return -EINVAL;
	int nd = s->depth + 1;
	size_t dirty = 0;
	int rc;
	for (size_t i = 0; i < s->nregions; i++)
		if (s->regions[i]->be == &mmk__be_lazy || s->regions[i]->be == &mmk__be_mprotect) {
			/* one sigaction query: is our fault handler still there? */
			rc = s->regions[i]->be == &mmk__be_lazy ? mmk__lazy_install_handler()
								: mmk__mprotect_install_handler();
			if (rc < 0)
				return rc;
			break;
		}
	rc = mmk__async_scan(s, 's', nd, true);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < s->nregions; i++) {
		mmk__region *r = s->regions[i];
		if (r->gone)
			continue;
		rc = r->be->push(s, r, nd);
		if (rc < 0) {
			/* unwind: the pushed ones drop the new level again */
			for (size_t j = 0; j < i; j++)
				if (!s->regions[j]->gone)
					s->regions[j]->be->drop(s, s->regions[j], nd);
			return rc;
		}
		dirty += r->last_dirty;
	}
	s->depth = nd;
	s->saves++;
	s->last_dirty = dirty;
	return nd;
}

int mmk_snap_restore(mmk_snap *s)
{
	return mmk__snap_restore(s, true);
}

int mmk__snap_restore(mmk_snap *s, bool reprotect)
{
	if (!s)
		return -EINVAL;
	if (s->depth == 0)
		return -EINVAL;
	if (s->process) {
		int rc = mmk__proc_check(s, true, s->depth);
		if (rc < 0)
			return rc;
	}
	size_t dirty = 0;
	int rc = mmk__async_scan(s, 'r', s->depth, reprotect);
	for (size_t i = 0; i < s->nregions; i++) {
		mmk__region *r = s->regions[i];
		if (r->birth > s->depth || r->gone)
			continue; /* not in this image: process scope unmapped it */
		r->copy_sampled = s->adaptive && r->be == &mmk__be_copy &&
				  r->end - r->start >= COPY_MAX && s->restores % COPY_SAMPLE == 0;
		int e = r->broken ? MMK_EFATAL : r->be->restore(s, r, s->depth);
		if (e < 0 && rc == 0)
			rc = e; /* keep going: restore as much as possible */
		dirty += r->last_dirty;
		if (s->adaptive && s->depth == 1 && e == 0)
			adapt(s, r);
	}
	s->restores++;
	s->last_dirty = dirty;
	return rc;
}

int mmk_snap_drop(mmk_snap *s)
{
	if (!s)
		return -EINVAL;
	if (s->depth == 0)
		return -EINVAL;
	int rc = 0;
	for (size_t i = 0; i < s->nregions; i++) {
		mmk__region *r = s->regions[i];
		if (r->birth > s->depth)
			continue; /* holds no state for this level */
		int e = r->be->drop(s, r, s->depth);
		if (e < 0 && rc == 0)
			rc = e;
	}
	s->depth--;
	return rc < 0 ? rc : s->depth;
}

int mmk_snap_changed(mmk_snap *s, mmk_snap_run_fn fn, void *arg)
{
	if (!s || !fn)
		return -EINVAL;
	if (s->depth == 0)
		return -EINVAL;
	for (size_t i = 0; i < s->nregions; i++) {
		mmk__region *r = s->regions[i];
		if (r->gone || r->birth > s->depth)
			continue;
		int rc = r->be->changed(s, r, s->depth, fn, arg);
		if (rc)
			return rc;
	}
	return 0;
}

const void *mmk_snap_saved_page(const mmk_snap *s, const void *addr)
{
	if (!s || s->depth < 1)
		return NULL;
	uintptr_t a = MMK__PAGE_DOWN(addr);
	for (size_t k = 0; k < s->nregions; k++) {
		const mmk__region *r = s->regions[k];
		if (a < r->start || a >= r->end || r->gone || r->birth > s->depth)
			continue;
		return r->be->saved_page(r, s->depth, (a - r->start) / MMK__PAGE);
	}
	return NULL;
}

int mmk_snap_depth(const mmk_snap *s)
{
	return s ? s->depth : -EINVAL;
}

int mmk_snap_stats_get(const mmk_snap *s, mmk_snap_stats *st)
{
	if (!s || !st)
		return -EINVAL;
	memset(st, 0, sizeof *st);
	st->regions = s->nregions;
	const mmk__backend *only = NULL;
	bool mixed = false;
	for (size_t i = 0; i < s->nregions; i++) {
		const mmk__region *r = s->regions[i];
		st->pages_tracked += r->npages;
		st->bytes_held += r->be->bytes(r);
		st->regions_by_backend[r->be->id]++;
		if (only && only != r->be)
			mixed = true;
		only = r->be;
	}
	st->pages_dirtied = s->last_dirty;
	st->saves = s->saves;
	st->restores = s->restores;
	st->rescans = s->rescans;
	st->backend = mixed ? "mixed" : only ? only->name : "none";
	return 0;
}

void mmk_snap_destroy(mmk_snap *s)
{
	if (!s)
		return;
	if (getpid() != s->pid) {
		/* In a forked child: the userfaultfds still belong to the
		 * parent's address space; unregistering through them would
		 * change the parent.  Drop them and free our copy only. */
		mmk__uffd_close(&s->uffd_async);
		mmk__uffd_close(&s->uffd_lazy);
		for (size_t i = 0; i < s->nregions; i++)
			s->regions[i]->gone = true;
	}
	while (s->nregions)
		mmk__snap_remove_region(s, s->nregions - 1);
	mmk__uffd_close(&s->uffd_async);
	mmk__uffd_close(&s->uffd_lazy);
	if (s->statm_fd >= 0)
		close(s->statm_fd);
	mmk__maplist_free(&s->maps);
	mmk__maplist_free(&s->cand);
	mmk__self_release(s->regions);
	mmk__self_release(s->async_sorted);
	mmk__self_release(s->excl);
	mmk__self_release(s);
}
