/*
 * snapshot/async.c - the async backend: userfaultfd write-protect in async
 * mode + PAGEMAP_SCAN + an eager shadow copy.
 *
 * Invariants, for region r at object depth d (see snap.h for the levels):
 *   - r->shadow == image(L_d) (at depth 0: image of the last push/restore);
 *   - every page of r differs from the shadow only if it is "written" (the
 *     kernel cleared its WP bit on a write: PAGE_IS_WRITTEN) or in the
 *     forced set levels[0];
 *   - after a push or restore every page of r is write-protected again and
 *     the forced set is empty.
 * One combined scan per object covers all its async regions: the kernel
 * skips VMAs that are not async-WP registered at the VMA level
 * (category mask PAGE_IS_WPALLOWED), so gaps, stacks, code and lazy regions
 * cost nothing; ranges that belong to another object's regions are ignored.
 * Order that works (see the notes): scan -> copy -> re-protect; re-protecting
 * in the scan and then copying into the pages would mark them written again.
 */
#include "snapshot/snap.h"
#include "sys/state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int ensure_uffd(mmk_snap *s)
{
	return mmk__snap_uffd(&s->uffd_async, UFFD_FEATURE_WP_ASYNC);
}

struct fill {
	mmk__region *r;
};

static int copy_present(uintptr_t a, uintptr_t b, void *arg)
{
	mmk__region *r = ((struct fill *)arg)->r;
	mmk__copy(r->shadow + (a - r->start), (void *)a, b - a);
	return 0;
}

/* register + protect + shadow := memory (only populated pages are copied:
 * the fresh shadow reads as zero elsewhere, like the region) */
static int track(mmk_snap *s, mmk__region *r)
{
	int rc = mmk__uffd_register(&s->uffd_async, r->start, mmk__rlen(r), UFFDIO_REGISTER_MODE_WP);
	if (rc < 0)
		return rc;
	rc = mmk__uffd_wp(&s->uffd_async, r->start, mmk__rlen(r), true);
	if (rc < 0)
		goto fail;
	struct fill f = { r };
	long n = mmk__pagemap_scan(r->start, r->end, 0, 0, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
				   copy_present, &f);
	if (n < 0) {
		rc = (int)n;
		goto fail;
	}
	return 0;
fail:
	mmk__uffd_unregister(&s->uffd_async, r->start, mmk__rlen(r));
	return rc;
}

static int a_attach(mmk_snap *s, mmk__region *r)
{
	int rc = ensure_uffd(s);
	if (rc < 0)
		return rc;
	if (!mmk__level(r, 0))
		return -ENOMEM;
	r->shadow = mmk__self_alloc(mmk__rlen(r));
	if (!r->shadow)
		return -ENOMEM;
	rc = track(s, r);
	if (rc < 0) {
		mmk__self_free(r->shadow, mmk__rlen(r));
		r->shadow = NULL;
	}
	return rc;
}

static void a_detach(mmk_snap *s, mmk__region *r)
{
	if (!r->gone)
		mmk__uffd_unregister(&s->uffd_async, r->start, mmk__rlen(r));
	mmk__self_free(r->shadow, mmk__rlen(r));
	r->shadow = NULL;
}

/* ---- the combined scan ------------------------------------------------------------ */


static int rebuild_sorted(mmk_snap *s)
{
	if (!s->async_dirty)
		return 0;
	mmk__self_release(s->async_sorted);
	s->async_sorted = NULL;
	s->nasync = 0;
	size_t n = 0;
	for (size_t i = 0; i < s->nregions; i++)
		n += s->regions[i]->be == &mmk__be_async;
	if (n) {
		s->async_sorted = mmk__self_calloc(1, n * sizeof *s->async_sorted);
		if (!s->async_sorted)
			return -ENOMEM;
		for (size_t i = 0; i < s->nregions; i++)
			if (s->regions[i]->be == &mmk__be_async)
				s->async_sorted[s->nasync++] = s->regions[i];
		/* insertion sort: qsort may malloc, and this runs during a
		 * restore, when malloc's state may be stale */
		for (size_t i = 1; i < n; i++) {
			mmk__region *x = s->async_sorted[i];
			size_t j = i;
			for (; j > 0 && s->async_sorted[j - 1]->start > x->start; j--)
				s->async_sorted[j] = s->async_sorted[j - 1];
			s->async_sorted[j] = x;
		}
	}
	s->async_dirty = false;
	return 0;
}

struct scan_ctx {
	mmk_snap *s;
	int op, depth;
	bool wp_done;   /* the scan itself re-protected (PM_SCAN_WP_MATCHING) */
	bool reprotect; /* restore: re-protect what was copied back */
	bool defer_wp;  /* restore: re-protect [wlo, whi) by one scan afterwards */
	uintptr_t wlo, whi;
	size_t hint;
	int err;
};

static void on_written(struct scan_ctx *c, mmk__region *r, uintptr_t a, uintptr_t b)
{
	size_t off = a - r->start, len = b - a;
	if (c->op == 's') {
		if (c->depth >= 2) {
			/* keep image(L_{d-1}) of pages that change in L_d */
			mmk__pstore *st = mmk__level(r, c->depth - 1);
			if (!st) {
				c->err = -ENOMEM;
				return;
			}
			for (size_t i = off / MMK__PAGE; i < (off + len) / MMK__PAGE; i++)
				mmk__pstore_put(st, i, r->shadow + i * MMK__PAGE);
		}
		mmk__copy(r->shadow + off, (void *)a, len);
	} else {
		mmk__copy((void *)a, r->shadow + off, len);
	}
	if (c->defer_wp) {
		if (c->whi == 0)
			c->wlo = a;
		c->whi = b;
	} else if (!c->wp_done && (c->op == 's' || c->reprotect)) {
		int rc = mmk__uffd_wp(&c->s->uffd_async, a, len, true);
		if (rc < 0 && !c->err)
			c->err = rc;
	}
	r->last_dirty += len / MMK__PAGE;
}

static int scan_range(uintptr_t a, uintptr_t b, void *arg)
{
	struct scan_ctx *c = arg;
	mmk_snap *s = c->s;
	/* ranges arrive in address order: advance the hint */
	while (a < b) {
		while (c->hint < s->nasync && s->async_sorted[c->hint]->end <= a)
			c->hint++;
		if (c->hint == s->nasync)
			return 0;
		mmk__region *r = s->async_sorted[c->hint];
		if (r->start >= b)
			return 0; /* not ours (another object's region) */
		uintptr_t lo = a > r->start ? a : r->start, hi = b < r->end ? b : r->end;
		if (!r->gone && r->birth <= c->depth)
			on_written(c, r, lo, hi);
		a = hi;
	}
	return 0;
}

/* Does any other object have async regions in [lo, hi)?  Then a scan with
 * PM_SCAN_WP_MATCHING would re-protect its written pages too. */
static bool foreign_async(mmk_snap *s, uintptr_t lo, uintptr_t hi)
{
	mmk__state *st = mmk__st();
	size_t n = atomic_load(&st->snap_nregions);
	for (size_t i = 0; i < n; i++) {
		mmk__region *r = atomic_load(&st->snap_regions[i]);
		if (r && r->owner != s && r->be == &mmk__be_async && r->start < hi && r->end > lo)
			return true;
	}
	return false;
}

/* op 's' (push): written pages go to the shadow and are re-protected, in the
 * scan itself when no other object shares the span.  op 'r' (restore):
 * written pages are copied back from the shadow; re-protected only with
 * `reprotect` — after mmcontext(1) or a failed mmk_try the next call is a
 * save, which re-protects in its scan anyway, so the restore saves one
 * ioctl per range (the pages stay "written" until then, which is correct:
 * they equal the shadow). */
static int scan_all(mmk_snap *s, int op, int depth, bool reprotect)
{
	int rc = rebuild_sorted(s);
	if (rc < 0 || s->nasync == 0)
		return rc;
	for (size_t i = 0; i < s->nasync; i++)
		s->async_sorted[i]->last_dirty = 0;
	struct scan_ctx c = { .s = s, .op = op, .depth = depth, .reprotect = reprotect };
	uintptr_t lo = s->async_sorted[0]->start, hi = 0;
	for (size_t i = 0; i < s->nasync; i++)
		if (s->async_sorted[i]->end > hi)
			hi = s->async_sorted[i]->end;
	uint64_t flags = 0;
	bool foreign = foreign_async(s, lo, hi);
	if (op == 's' && !foreign) {
		flags = PM_SCAN_WP_MATCHING;
		c.wp_done = true;
	} else if (op == 'r' && reprotect && !foreign) {
		/* Copying back into a protected page would mark it written
		 * again, so re-protection must follow the copies: one more
		 * scan with WP_MATCHING over the span of what was copied
		 * instead of one UFFDIO_WRITEPROTECT per range - unless a
		 * written range in that span is skipped (a region not in
		 * this image), which must stay marked written. */
		c.defer_wp = true;
		for (size_t i = 0; i < s->nasync; i++)
			if (s->async_sorted[i]->gone || s->async_sorted[i]->birth > depth)
				c.defer_wp = false;
	}
	long n = mmk__pagemap_scan(lo, hi, flags, PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN, 0, scan_range, &c);
	if (n < 0)
		return (int)n;
	if (c.defer_wp && c.whi > c.wlo && !c.err) {
		n = mmk__pagemap_scan(c.wlo, c.whi, PM_SCAN_WP_MATCHING, PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN, 0,
				      NULL, NULL);
		if (n < 0)
			return (int)n;
	}
	return c.err;
}

int mmk__async_scan(mmk_snap *s, int op, int depth, bool reprotect)
{
	return scan_all(s, op, depth, reprotect);
}


/* ---- per region: forced pages and levels ----------------------------------------- */

static int a_push(mmk_snap *s, mmk__region *r, int nd)
{
	(void)s;
	mmk__pstore *forced = &r->levels[0];
	mmk__pstore *st = NULL;
	if (nd >= 2 && forced->n && !(st = mmk__level(r, nd - 1)))
		return -ENOMEM;
	for (size_t k = 0; k < forced->n; k++) {
		size_t i = forced->idx[k];
		if (st)
			mmk__pstore_put(st, i, r->shadow + i * MMK__PAGE);
		mmk__copy(r->shadow + i * MMK__PAGE, (char *)r->start + i * MMK__PAGE, MMK__PAGE);
	}
	r->last_dirty += forced->n;
	mmk__pstore_clear(forced, false);
	return 0;
}

static int a_restore(mmk_snap *s, mmk__region *r, int d)
{
	(void)d;
	mmk__pstore *forced = &r->levels[0];
	int rc = 0;
	for (size_t k = 0; k < forced->n; k++) {
		size_t i = forced->idx[k];
		uintptr_t a = r->start + i * MMK__PAGE;
		mmk__copy((void *)a, r->shadow + i * MMK__PAGE, MMK__PAGE);
		int e = mmk__uffd_wp(&s->uffd_async, a, MMK__PAGE, true);
		if (e < 0 && !rc)
			rc = e;
	}
	r->last_dirty += forced->n;
	mmk__pstore_clear(forced, false);
	return rc;
}

static int a_drop(mmk_snap *s, mmk__region *r, int d)
{
	(void)s;
	if (d < 2 || !r->levels || !r->levels[d - 1].area)
		return 0;
	/* shadow := image(L_{d-1}); those pages may now differ from memory */
	mmk__pstore *st = &r->levels[d - 1], *forced = &r->levels[0];
	for (size_t k = 0; k < st->n; k++) {
		size_t i = st->idx[k];
		mmk__copy(r->shadow + i * MMK__PAGE, mmk__pstore_page(st, i), MMK__PAGE);
		mmk__pstore_add(forced, i);
	}
	mmk__pstore_clear(st, true);
	return 0;
}

static int a_refill(mmk_snap *s, mmk__region *r, int d)
{
	(void)d;
	mmk__copy((void *)r->start, r->shadow, mmk__rlen(r));
	mmk__pstore_clear(&r->levels[0], false);
	int rc = mmk__uffd_register(&s->uffd_async, r->start, mmk__rlen(r), UFFDIO_REGISTER_MODE_WP);
	if (rc == 0)
		rc = mmk__uffd_wp(&s->uffd_async, r->start, mmk__rlen(r), true);
	s->async_dirty = true;
	return rc;
}

struct changed_ctx {
	mmk_snap_run_fn fn;
	void *arg;
	int rc;
};

static int changed_range(uintptr_t a, uintptr_t b, void *arg)
{
	struct changed_ctx *c = arg;
	c->rc = c->fn((void *)a, b - a, c->arg);
	return c->rc ? 1 : 0; /* non-zero stops the scan */
}

static bool page_written(uintptr_t a)
{
	struct page_region v;
	struct pm_scan_arg q = { .size = sizeof q, .start = a, .end = a + MMK__PAGE,
				 .vec = (uintptr_t)&v, .vec_len = 1,
				 .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN };
	return mmk__pagemap_scan_raw(&q) == 1;
}

static int a_changed(mmk_snap *s, mmk__region *r, int d, mmk_snap_run_fn fn, void *arg)
{
	(void)s;
	(void)d;
	/* forced pages (they differ from the shadow without being written),
	 * unless written too: the scan below reports those */
	mmk__pstore *forced = &r->levels[0];
	for (size_t k = 0; k < forced->n; k++) {
		uintptr_t a = r->start + forced->idx[k] * MMK__PAGE;
		if (page_written(a))
			continue;
		int rc = fn((void *)a, MMK__PAGE, arg);
		if (rc)
			return rc;
	}
	struct changed_ctx c = { fn, arg, 0 };
	long n = mmk__pagemap_scan(r->start, r->end, 0, PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN, 0,
				   changed_range, &c);
	if (c.rc)
		return c.rc;
	return n < 0 ? (int)n : 0;
}

static const void *a_saved_page(const mmk__region *r, int d, size_t i)
{
	(void)d;
	return r->shadow ? r->shadow + i * MMK__PAGE : NULL;
}

static size_t a_bytes(const mmk__region *r)
{
	size_t n = MMK__PAGE_UP(mmk__rlen(r)); /* the shadow (virtual; populated as used) */
	for (int i = 1; r->levels && i <= MMK__SNAP_MAX_DEPTH; i++)
		n += r->levels[i].n * MMK__PAGE;
	return n;
}

const mmk__backend mmk__be_async = {
	.name = "async",
	.id = MMK_SNAP_ASYNC,
	.attach = a_attach,
	.detach = a_detach,
	.push = a_push,
	.restore = a_restore,
	.drop = a_drop,
	.changed = a_changed,
	.saved_page = a_saved_page,
	.refill = a_refill,
	.bytes = a_bytes,
};
