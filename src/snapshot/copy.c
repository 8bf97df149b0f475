/*
 * snapshot/copy.c - the copy backend: a full copy of the region per save
 * point.
 *
 * Invariants: copies[i] holds image(L_i) of [ustart, uend) for 1 <= i <=
 * depth; copies are allocated on first use of a level and kept until the
 * region is detached (a save/restore loop allocates nothing).  Exact bytes:
 * an explicit sub-page region copies only the bytes asked for.  Fastest for
 * small regions (< 64 KiB) and mostly-dirty ones; needs no kernel feature.
 */
#include "snapshot/snap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t ulen(const mmk__region *r)
{
	return r->uend - r->ustart;
}

static int c_attach(mmk_snap *s, mmk__region *r)
{
	(void)s;
	r->copies = mmk__self_calloc(MMK__SNAP_MAX_DEPTH + 1, sizeof *r->copies);
	return r->copies ? 0 : -ENOMEM;
}

static void c_detach(mmk_snap *s, mmk__region *r)
{
	(void)s;
	if (!r->copies)
		return;
	for (int i = 0; i <= MMK__SNAP_MAX_DEPTH; i++)
		mmk__self_free(r->copies[i], ulen(r));
	mmk__self_release(r->copies);
	r->copies = NULL;
}

static int c_push(mmk_snap *s, mmk__region *r, int nd)
{
	(void)s;
	if (!r->copies[nd] && !(r->copies[nd] = mmk__self_alloc(ulen(r))))
		return -ENOMEM;
	mmk__copy(r->copies[nd], (void *)r->ustart, ulen(r));
	r->last_dirty = r->npages;
	return 0;
}

static int c_restore(mmk_snap *s, mmk__region *r, int d)
{
	(void)s;
	if (!r->copy_sampled) {
		mmk__copy((void *)r->ustart, r->copies[d], ulen(r));
		r->last_dirty = r->npages;
		return 0;
	}
	/* sampling restore for the adaptive policy: copy only the pages that
	 * differ, and count them (about the cost of one copy) */
	size_t n = 0, len = ulen(r);
	char *mem = (char *)r->ustart, *cp = r->copies[d];
	for (size_t off = 0; off < len; off += MMK__PAGE) {
		size_t l = len - off < MMK__PAGE ? len - off : MMK__PAGE;
		if (mmk__cmp(mem + off, cp + off, l)) {
			mmk__copy(mem + off, cp + off, l);
			n++;
		}
	}
	r->last_dirty = n;
	return 0;
}

static int c_drop(mmk_snap *s, mmk__region *r, int d)
{
	(void)s;
	(void)r;
	(void)d;
	return 0;
}

static int c_changed(mmk_snap *s, mmk__region *r, int d, mmk_snap_run_fn fn, void *arg)
{
	(void)s;
	/* whole pages of the region that differ from the copy, in runs */
	uintptr_t run = 0, runend = 0;
	for (uintptr_t a = r->start; a < r->end; a += MMK__PAGE) {
		uintptr_t lo = a > r->ustart ? a : r->ustart;
		uintptr_t hi = a + MMK__PAGE < r->uend ? a + MMK__PAGE : r->uend;
		bool diff = lo < hi && mmk__cmp((void *)lo, r->copies[d] + (lo - r->ustart), hi - lo);
		if (diff && runend == a) {
			runend = a + MMK__PAGE;
			continue;
		}
		if (runend > run) {
			int rc = fn((void *)run, runend - run, arg);
			if (rc)
				return rc;
		}
		run = a;
		runend = diff ? a + MMK__PAGE : a;
	}
	return runend > run ? fn((void *)run, runend - run, arg) : 0;
}

static const void *c_saved_page(const mmk__region *r, int d, size_t i)
{
	/* a sub-page explicit region's copy does not hold whole pages */
	if (!r->copies[d] || r->ustart != r->start || r->uend != r->end)
		return NULL;
	return r->copies[d] + i * MMK__PAGE;
}

static int c_refill(mmk_snap *s, mmk__region *r, int d)
{
	return c_restore(s, r, d);
}

static size_t c_bytes(const mmk__region *r)
{
	size_t n = 0;
	for (int i = 0; r->copies && i <= MMK__SNAP_MAX_DEPTH; i++)
		if (r->copies[i])
			n += MMK__PAGE_UP(ulen(r));
	return n;
}

const mmk__backend mmk__be_copy = {
	.name = "copy",
	.id = MMK_SNAP_COPY,
	.attach = c_attach,
	.detach = c_detach,
	.push = c_push,
	.restore = c_restore,
	.drop = c_drop,
	.changed = c_changed,
	.saved_page = c_saved_page,
	.refill = c_refill,
	.bytes = c_bytes,
};
