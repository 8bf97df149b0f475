/*
 * rvm/snapdiff.c - where the snapshot engine keeps a page's image at the
 * top save point, so that a paged-mode commit can log only the bytes that
 * changed instead of whole pages (write amplification 4 KiB -> tens of
 * bytes for a small update).
 *
 * This reads the engine's internals (snapshot/snap.h) for the three
 * backends: lazy keeps images of the pages first written after L_d in
 * levels[d]; async keeps image(L_d) of the whole region in shadow; copy
 * keeps image(L_d) in copies[d].  Invariant: the returned page is
 * image(L_depth) of the page at addr, or NULL when unknown (the caller then
 * logs the whole page, which is always correct).  Only valid between
 * mmk_snap_changed's report and the next save/restore/drop.
 */
#include "rvm/rvm_int.h"
#include "snapshot/snap.h"

const unsigned char *mmk__rvm_saved_page(mmk_snap *s, const void *addr)
{
	uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(MMK__PAGE - 1);
	int d = s->depth;
	if (d < 1)
		return NULL;
	for (size_t k = 0; k < s->nregions; k++) {
		mmk__region *r = s->regions[k];
		if (a < r->start || a >= r->end || r->gone || r->birth > d)
			continue;
		size_t i = (a - r->start) / MMK__PAGE;
		switch (r->be->id) {
		case MMK_SNAP_LAZY:
			if (r->levels && mmk__pstore_has(&r->levels[d], i))
				return (const unsigned char *)mmk__pstore_page(&r->levels[d], i);
			return NULL;
		case MMK_SNAP_ASYNC:
			return r->shadow ? (const unsigned char *)r->shadow + (a - r->start) : NULL;
		case MMK_SNAP_COPY:
			if (r->copies && r->copies[d] && r->ustart == r->start && r->uend == r->end)
				return (const unsigned char *)r->copies[d] + (a - r->start);
			return NULL;
		default:
			return NULL;
		}
	}
	return NULL;
}
