/*
 * tests/test_pagetab_paths.c - mmk_pagetab: the insert/remove fast paths
 * (an empty home slot; an entry at its home whose successor needs no
 * backward shift) against the cases they must leave to the general code
 * (the last slot, whose successor is slot 0; a displaced successor; dirty
 * entries), growth step boundaries with keys at both ends of the address
 * space, and the size a table created or reserved for n pages gets.
 *
 * White box where it must be: bucket_of() mirrors home_of() in
 * src/pagetab/pagetab.c (the 16 pages of an aligned group share a 16-slot
 * bucket), so that the tests can build exact slot layouts.  If the hash
 * changes, the layout assertions (max_disp) fail loudly rather than pass.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test_util.h"

#include <errno.h>
#include <string.h>

#include <mmkit/pagetab.h>

static uint64_t bucket_of(uint64_t group, uint64_t nbuckets)
{
	uint64_t h = group * 0x9E3779B97F4A7C15ull;
	return (uint64_t)(((unsigned __int128)h * nbuckets) >> 64);
}

struct tab {
	mmk_pagetab *pt;
	uint64_t nb;
	unsigned shift;
};

static void tab_open(struct tab *t, size_t expected)
{
	assert_int_equal(mmk_pagetab_create(&t->pt, expected), 0);
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(t->pt, &st), 0);
	assert_int_equal(st.slots % 16, 0);
	t->nb = st.slots / 16;
	t->shift = (unsigned)__builtin_ctzl(mmk_pagetab_page_size(t->pt));
}

/* The n-th group (n = 0, 1, ...) whose bucket is b; groups start at 1. */
static uint64_t group_in(const struct tab *t, uint64_t b, unsigned n)
{
	for (uint64_t g = 1;; g++)
		if (bucket_of(g, t->nb) == b && n-- == 0)
			return g;
}

static uintptr_t page(const struct tab *t, uint64_t group, unsigned k)
{
	return (uintptr_t)((group << 4) + k) << t->shift;
}

static size_t max_disp(const struct tab *t)
{
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(t->pt, &st), 0);
	assert_int_equal(st.slots / 16, t->nb); /* no growth: layout known */
	return st.max_disp;
}

static int count_cb(uintptr_t a, void *r, void *arg)
{
	(void)a;
	(void)r;
	(*(size_t *)arg)++;
	return 0;
}

/* The home of page 15 of a group in the last bucket is the last slot:
 * its successor is slot 0, which the remove fast path must not assume. */
static void test_last_slot_wrap(void **state)
{
	(void)state;
	struct tab t;
	tab_open(&t, 100);
	static int ra, rb;
	uintptr_t a = page(&t, group_in(&t, t.nb - 1, 0), 15);
	uintptr_t b = page(&t, group_in(&t, t.nb - 1, 1), 15);
	void *out = NULL;

	assert_int_equal(mmk_pagetab_insert(t.pt, a, &ra), 0);
	assert_int_equal(mmk_pagetab_insert(t.pt, b, &rb), 0); /* wraps to slot 0 */
	assert_int_equal(max_disp(&t), 1);
	assert_int_equal(mmk_pagetab_insert(t.pt, b, &ra), -EEXIST);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, b), &rb);

	/* removing a (at home, the last slot) must shift b back from slot 0 */
	assert_int_equal(mmk_pagetab_remove(t.pt, a, &out), 0);
	assert_ptr_equal(out, &ra);
	assert_int_equal(max_disp(&t), 0);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, b), &rb);
	assert_null(mmk_pagetab_lookup(t.pt, a));

	/* and the other way round, with a dirty entry moving */
	assert_int_equal(mmk_pagetab_insert(t.pt, a, &ra), 0);
	assert_int_equal(mmk_pagetab_mark_dirty(t.pt, a), 0);
	assert_int_equal(max_disp(&t), 1);
	assert_int_equal(mmk_pagetab_remove(t.pt, b, &out), 0);
	assert_ptr_equal(out, &rb);
	assert_int_equal(max_disp(&t), 0);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, a), &ra);
	assert_true(mmk_pagetab_is_dirty(t.pt, a));
	size_t n = 0;
	assert_int_equal(mmk_pagetab_foreach_dirty(t.pt, count_cb, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(mmk_pagetab_remove(t.pt, a, NULL), 0);
	assert_int_equal(mmk_pagetab_count(t.pt), 0);
	assert_int_equal(mmk_pagetab_dirty_count(t.pt), 0);
	mmk_pagetab_destroy(t.pt);
}

/* An entry at its home followed by a displaced one (backward shift needed)
 * or by one at its own home (nothing moves). */
static void test_successor_cases(void **state)
{
	(void)state;
	struct tab t;
	tab_open(&t, 100);
	static int rc, rd, re;
	uint64_t bk = 5;
	uintptr_t c = page(&t, group_in(&t, bk, 0), 3);
	uintptr_t d = page(&t, group_in(&t, bk, 1), 3); /* same home as c */
	uintptr_t e = page(&t, group_in(&t, bk, 2), 4); /* home = c's + 1 */
	void *out = NULL;

	/* c at home, d displaced by one: removing c shifts d back */
	assert_int_equal(mmk_pagetab_insert(t.pt, c, &rc), 0);
	assert_int_equal(mmk_pagetab_insert(t.pt, d, &rd), 0);
	assert_int_equal(mmk_pagetab_mark_dirty(t.pt, d), 0);
	assert_int_equal(max_disp(&t), 1);
	assert_int_equal(mmk_pagetab_remove(t.pt, c, &out), 0);
	assert_ptr_equal(out, &rc);
	assert_int_equal(max_disp(&t), 0);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, d), &rd);
	assert_true(mmk_pagetab_is_dirty(t.pt, d));
	assert_int_equal(mmk_pagetab_remove(t.pt, d, NULL), 0);
	assert_int_equal(mmk_pagetab_dirty_count(t.pt), 0);

	/* c at home, e at its own home right after: removing c moves nothing;
	 * a dirty c leaves the dirty count with it */
	assert_int_equal(mmk_pagetab_insert(t.pt, c, &rc), 0);
	assert_int_equal(mmk_pagetab_insert(t.pt, e, &re), 0);
	assert_int_equal(max_disp(&t), 0);
	assert_int_equal(mmk_pagetab_mark_dirty(t.pt, c), 0);
	assert_int_equal(mmk_pagetab_dirty_count(t.pt), 1);
	assert_int_equal(mmk_pagetab_remove(t.pt, c, &out), 0);
	assert_ptr_equal(out, &rc);
	assert_int_equal(mmk_pagetab_dirty_count(t.pt), 0);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, e), &re);
	assert_null(mmk_pagetab_lookup(t.pt, c));
	assert_int_equal(mmk_pagetab_remove(t.pt, c, NULL), -ENOENT);
	size_t n = 0;
	assert_int_equal(mmk_pagetab_foreach_dirty(t.pt, count_cb, &n), 0);
	assert_int_equal(n, 0);

	/* e's home is occupied by d (displaced from c's home, itself taken):
	 * inserting e must not take the fast path, and e ends up after d */
	assert_int_equal(mmk_pagetab_remove(t.pt, e, NULL), 0);
	assert_int_equal(mmk_pagetab_insert(t.pt, c, &rc), 0);
	assert_int_equal(mmk_pagetab_insert(t.pt, d, &rd), 0);
	assert_int_equal(mmk_pagetab_insert(t.pt, e, &re), 0);
	assert_int_equal(max_disp(&t), 1);
	assert_int_equal(mmk_pagetab_insert(t.pt, e, &rc), -EEXIST);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, c), &rc);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, d), &rd);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, e), &re);
	/* removing d (displaced, not at home) shifts e back to its home */
	assert_int_equal(mmk_pagetab_remove(t.pt, d, &out), 0);
	assert_ptr_equal(out, &rd);
	assert_int_equal(max_disp(&t), 0);
	assert_ptr_equal(mmk_pagetab_lookup(t.pt, e), &re);
	assert_int_equal(mmk_pagetab_count(t.pt), 2);
	mmk_pagetab_destroy(t.pt);
}

/* Address 0 and the last page: an empty slot's key word is 0, so a fast
 * path comparing address bits alone would "find" page 0 in any empty
 * home slot. */
static void test_edge_keys_absent(void **state)
{
	(void)state;
	mmk_pagetab *pt;
	assert_int_equal(mmk_pagetab_create(&pt, 0), 0);
	size_t ps = mmk_pagetab_page_size(pt);
	uintptr_t top = ~(uintptr_t)(ps - 1);
	static int r0, rt, rx;
	void *out = &rx;
	for (int round = 0; round < 2; round++) {
		assert_int_equal(mmk_pagetab_remove(pt, 0, &out), -ENOENT);
		assert_ptr_equal(out, &rx); /* untouched on error */
		assert_int_equal(mmk_pagetab_remove(pt, top, NULL), -ENOENT);
		assert_null(mmk_pagetab_lookup(pt, 0));
		assert_null(mmk_pagetab_lookup(pt, top));
		assert_int_equal(mmk_pagetab_mark_dirty(pt, 0), -ENOENT);
		assert_false(mmk_pagetab_is_dirty(pt, 0));
		assert_int_equal(mmk_pagetab_count(pt), (size_t)round);
		/* round 1: with a neighbour present */
		assert_int_equal(mmk_pagetab_insert(pt, ps, &rx), round ? -EEXIST : 0);
	}
	assert_int_equal(mmk_pagetab_insert(pt, 0, &r0), 0);
	assert_int_equal(mmk_pagetab_insert(pt, top, &rt), 0);
	assert_int_equal(mmk_pagetab_insert(pt, 0, &rt), -EEXIST);
	assert_int_equal(mmk_pagetab_mark_dirty(pt, top), 0);
	assert_ptr_equal(mmk_pagetab_lookup(pt, 0), &r0);
	assert_ptr_equal(mmk_pagetab_lookup(pt, top), &rt);
	assert_int_equal(mmk_pagetab_remove(pt, 0, &out), 0);
	assert_ptr_equal(out, &r0);
	assert_int_equal(mmk_pagetab_remove(pt, 0, NULL), -ENOENT);
	assert_int_equal(mmk_pagetab_dirty_count(pt), 1);
	assert_int_equal(mmk_pagetab_remove(pt, top, &out), 0);
	assert_ptr_equal(out, &rt);
	assert_int_equal(mmk_pagetab_dirty_count(pt), 0);
	assert_int_equal(mmk_pagetab_remove(pt, top, NULL), -ENOENT);
	assert_int_equal(mmk_pagetab_count(pt), 1);
	mmk_pagetab_destroy(pt);
}

static uint64_t rng_next(uint64_t *s)
{
	return mmk_test_rand(s);
}

/*
 * Growing from empty with keys at both ends of the 64-bit address space
 * (0, 1, 2 .. pages and the last pages below UINTPTR_MAX) mixed with random
 * 64-bit page addresses: at every growth step, every key inserted so far is
 * still found with its own record, removed keys stay absent, and the table
 * is within 24 bytes per page just after the step (past 2048 pages).
 */
static void test_growth_steps(void **state)
{
	(void)state;
	mmk_pagetab *pt;
	assert_int_equal(mmk_pagetab_create(&pt, 0), 0);
	size_t ps = mmk_pagetab_page_size(pt);
	size_t n = mmk_test_n(200000, 40000); /* past 2 MiB arrays (mmap path) */
	uintptr_t *keys = calloc(n, sizeof(*keys));
	unsigned char *gone = calloc(n, 1);
	assert_true(keys && gone);
	uint64_t rng = mmk_test_seed() ^ 0x6b6579;
	for (size_t i = 0; i < n; i++) {
		switch (i % 3) {
		case 0: keys[i] = (uintptr_t)(i / 3) * ps; break;
		case 1: keys[i] = ~(uintptr_t)(ps - 1) - (uintptr_t)(i / 3) * ps; break;
		default: keys[i] = (uintptr_t)rng_next(&rng) & ~(uintptr_t)(ps - 1); break;
		}
	}
	/* random keys may repeat one of the others: keep the first */
	size_t steps = 0, prev_slots = 0;
	size_t bytes = mmk_pagetab_bytes(pt);
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(pt, &st), 0);
	prev_slots = st.slots;
	size_t have = 0;
	for (size_t i = 0; i < n; i++) {
		int r = mmk_pagetab_insert(pt, keys[i], &keys[i]);
		if (r == -EEXIST) {
			gone[i] = 2; /* a duplicate key: never inserted */
			continue;
		}
		assert_int_equal(r, 0);
		have++;
		/* every 7th key is removed again later, so growth also
		 * happens in a table with holes */
		if (i % 7 == 3 && i > 3 && !gone[i - 3]) {
			void *out;
			assert_int_equal(mmk_pagetab_remove(pt, keys[i - 3], &out), 0);
			assert_ptr_equal(out, &keys[i - 3]);
			gone[i - 3] = 1;
			have--;
		}
		size_t b = mmk_pagetab_bytes(pt);
		if (b == bytes)
			continue;
		/* a growth step just happened */
		steps++;
		bytes = b;
		assert_int_equal(mmk_pagetab_stats_get(pt, &st), 0);
		assert_int_equal(st.count, have);
		assert_true(st.slots > prev_slots);
		assert_true(st.slots * 100 >= prev_slots * 120); /* a real step */
		prev_slots = st.slots;
		if (have >= 2048 && (double)b / (double)have > 24.0)
			fail_msg("%.2f bytes/page at %zu pages", (double)b / (double)have, have);
		for (size_t j = 0; j <= i; j++) {
			void *rec = mmk_pagetab_lookup(pt, keys[j]);
			if (gone[j] == 0)
				assert_ptr_equal(rec, &keys[j]);
			else if (gone[j] == 1)
				assert_null(rec);
		}
	}
	assert_true(steps >= 10);
	assert_int_equal(mmk_pagetab_count(pt), have);
	/* remove everything in another order: each key exactly once */
	for (size_t j = n; j-- > 0;) {
		if (gone[j] == 2)
			continue; /* its key belongs to an earlier index */
		int r = mmk_pagetab_remove(pt, keys[j], NULL);
		if (gone[j] == 0)
			assert_int_equal(r, 0);
		else if (gone[j] == 1)
			assert_int_equal(r, -ENOENT);
		if (gone[j] == 0)
			gone[j] = 1;
	}
	assert_int_equal(mmk_pagetab_count(pt), 0);
	free(keys);
	free(gone);
	mmk_pagetab_destroy(pt);
}

/*
 * A table created or reserved for n pages takes n inserts without growing,
 * within 24 bytes per page (past trivially small n), and holds them at a
 * load of at most ~0.7 (what keeps churn at n resident pages fast).
 */
static void test_reserved_sizes(void **state)
{
	(void)state;
	static int dummy;
	for (size_t n = 1; n < 40000; n = n * 5 / 3 + 1) {
		for (int how = 0; how < 2; how++) {
			mmk_pagetab *pt;
			assert_int_equal(mmk_pagetab_create(&pt, how ? 0 : n), 0);
			if (how)
				assert_int_equal(mmk_pagetab_reserve(pt, n), 0);
			size_t b = mmk_pagetab_bytes(pt), ps = mmk_pagetab_page_size(pt);
			for (size_t i = 0; i < n; i++)
				assert_int_equal(mmk_pagetab_insert(pt, (uintptr_t)(i * 977 + 5) * ps, &dummy), 0);
			assert_int_equal(mmk_pagetab_bytes(pt), b);
			mmk_pagetab_stats st;
			assert_int_equal(mmk_pagetab_stats_get(pt, &st), 0);
			if (n >= 2048) {
				if ((double)b / (double)n > 24.0)
					fail_msg("%zu pages: %.2f bytes/page", n, (double)b / (double)n);
				if ((double)n / (double)st.slots > 0.705)
					fail_msg("%zu pages: load %.3f", n, (double)n / (double)st.slots);
			}
			mmk_pagetab_destroy(pt);
		}
	}
}

/*
 * Review tests.
 *
 * A size whose n * 100 wraps round SIZE_MAX (n just above SIZE_MAX / 100)
 * must be refused (-ENOMEM), never turned into a small table: reserve
 * never shrinks and create does not promise room it has not got.
 */
static void test_huge_sizes_refused(void **state)
{
	(void)state;
	static int dummy;
	size_t huge = SIZE_MAX / 100 + 1; /* huge * 100 wraps to a small value */
	mmk_pagetab *pt = NULL;
	assert_int_equal(mmk_pagetab_create(&pt, huge), -ENOMEM);
	assert_null(pt);
	assert_int_equal(mmk_pagetab_create(&pt, 10000), 0);
	size_t ps = mmk_pagetab_page_size(pt);
	for (size_t i = 0; i < 100; i++)
		assert_int_equal(mmk_pagetab_insert(pt, (uintptr_t)(i + 1) * ps, &dummy), 0);
	mmk_pagetab_stats st0, st1;
	assert_int_equal(mmk_pagetab_stats_get(pt, &st0), 0);
	assert_int_equal(mmk_pagetab_reserve(pt, huge), -ENOMEM);
	assert_int_equal(mmk_pagetab_stats_get(pt, &st1), 0);
	assert_int_equal(st1.slots, st0.slots); /* unchanged, never shrunk */
	for (size_t i = 0; i < 100; i++)
		assert_ptr_equal(mmk_pagetab_lookup(pt, (uintptr_t)(i + 1) * ps), &dummy);
	mmk_pagetab_destroy(pt);
}

struct mark_earlier {
	mmk_pagetab *pt;
	uintptr_t a, b;
	int how; /* 0: clear b, 1: remove b */
	size_t visits;
};

static int mark_earlier_cb(uintptr_t addr, void *rec, void *arg)
{
	(void)rec;
	struct mark_earlier *m = arg;
	m->visits++;
	if (addr != m->b)
		return 0;
	assert_int_equal(mmk_pagetab_mark_dirty(m->pt, m->a), 0);
	if (m->how == 0) {
		assert_int_equal(mmk_pagetab_clear_dirty(m->pt, m->b), 0);
		return 0;
	}
	return MMK_PAGETAB_REMOVE;
}

/*
 * The callback of a dirty walk marks dirty an entry that lies earlier in
 * the block being scanned (already passed over as clean), and the block's
 * only dirty entry is cleared or removed: the newly dirty entry must stay
 * in the dirty set (found by the next walk, cleared by clear_all_dirty).
 */
static void test_dirty_walk_marks_earlier_slot(void **state)
{
	(void)state;
	static int ra, rb;
	for (int how = 0; how < 2; how++) {
		struct tab t;
		tab_open(&t, 0);
		/* bucket 0: slots 0 and 1, one 32-slot block */
		uint64_t g = group_in(&t, 0, 0);
		struct mark_earlier m = {t.pt, page(&t, g, 0), page(&t, g, 1), how, 0};
		assert_int_equal(mmk_pagetab_insert(t.pt, m.a, &ra), 0);
		assert_int_equal(mmk_pagetab_insert(t.pt, m.b, &rb), 0);
		assert_int_equal(max_disp(&t), 0);
		assert_int_equal(mmk_pagetab_mark_dirty(t.pt, m.b), 0);
		assert_int_equal(mmk_pagetab_foreach_dirty(t.pt, mark_earlier_cb, &m), 0);
		assert_int_equal(m.visits, 1); /* b only: a was clean when passed */
		assert_true(mmk_pagetab_is_dirty(t.pt, m.a));
		assert_int_equal(mmk_pagetab_dirty_count(t.pt), 1);
		m.visits = 0;
		assert_int_equal(mmk_pagetab_foreach_dirty(t.pt, mark_earlier_cb, &m), 0);
		assert_int_equal(m.visits, 1); /* a must still be listed */
		mmk_pagetab_clear_all_dirty(t.pt);
		assert_false(mmk_pagetab_is_dirty(t.pt, m.a));
		assert_int_equal(mmk_pagetab_dirty_count(t.pt), 0);
		assert_int_equal(mmk_pagetab_remove(t.pt, m.a, NULL), 0);
		assert_int_equal(mmk_pagetab_dirty_count(t.pt), 0);
		mmk_pagetab_destroy(t.pt);
	}
}

/* ---- randomized differential test against a flat reference ---- */

#define DU 3000 /* key universe */

struct diff {
	mmk_pagetab *pt;
	uintptr_t key[DU];
	int rec[DU];
	unsigned char present[DU], dirty[DU];
	size_t count, ndirty;
	/* walk state */
	unsigned char want[DU], seen[DU]; /* dirty at the start, visited */
	uint64_t rng;
	int mode;
};

static size_t diff_idx(struct diff *d, void *rec)
{
	size_t k = (size_t)((int *)rec - d->rec);
	assert_true(k < DU);
	return k;
}

static void diff_check_all(struct diff *d)
{
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(d->pt, &st), 0);
	/* growth is never skipped: load at most 0.85 */
	assert_true(st.count * 20 <= st.slots * 17);
	assert_true(st.dirty_blocks <= (st.slots + 31) / 32);
	assert_int_equal(mmk_pagetab_count(d->pt), d->count);
	assert_int_equal(mmk_pagetab_dirty_count(d->pt), d->ndirty);
	for (size_t k = 0; k < DU; k++) {
		void *r = mmk_pagetab_lookup(d->pt, d->key[k]);
		if (d->present[k])
			assert_ptr_equal(r, &d->rec[k]);
		else
			assert_null(r);
		assert_int_equal(mmk_pagetab_is_dirty(d->pt, d->key[k]),
				 d->present[k] && d->dirty[k]);
	}
}

static int diff_walk_cb(uintptr_t addr, void *rec, void *arg)
{
	struct diff *d = arg;
	size_t k = diff_idx(d, rec);
	assert_int_equal(addr, d->key[k]);
	assert_true(d->present[k]);
	if (d->mode == 1)
		assert_true(d->dirty[k]); /* foreach_dirty: only dirty ones */
	assert_false(d->seen[k]);
	d->seen[k] = 1;
	d->want[k] = 0;
	/* side actions allowed during a walk: mark / clear others */
	unsigned nact = (unsigned)(rng_next(&d->rng) % 3);
	for (unsigned a = 0; a < nact; a++) {
		size_t o = (size_t)(rng_next(&d->rng) % DU);
		if (rng_next(&d->rng) & 1) {
			o = (k & ~(size_t)31) + (size_t)(rng_next(&d->rng) % 32);
			if (o >= DU)
				o = k;
		}
		int r;
		if (rng_next(&d->rng) & 1) {
			r = mmk_pagetab_mark_dirty(d->pt, d->key[o]);
			if (d->present[o] && !d->dirty[o]) {
				d->dirty[o] = 1;
				d->ndirty++;
			}
		} else {
			r = mmk_pagetab_clear_dirty(d->pt, d->key[o]);
			if (d->present[o] && d->dirty[o]) {
				d->dirty[o] = 0;
				d->ndirty--;
				d->want[o] = 0; /* no longer owed a visit */
			}
		}
		assert_int_equal(r, d->present[o] ? 0 : -ENOENT);
	}
	uint64_t x = rng_next(&d->rng) % 16;
	if (x < 6) {
		d->present[k] = 0;
		if (d->dirty[k])
			d->ndirty--;
		d->dirty[k] = 0;
		d->count--;
		return MMK_PAGETAB_REMOVE;
	}
	if (x == 6)
		return -7;
	return 0;
}

static void diff_walk(struct diff *d, int mode)
{
	memset(d->seen, 0, sizeof(d->seen));
	for (size_t k = 0; k < DU; k++)
		d->want[k] = d->present[k] && (mode == 0 || d->dirty[k]);
	d->mode = mode;
	int r = mode ? mmk_pagetab_foreach_dirty(d->pt, diff_walk_cb, d)
		     : mmk_pagetab_foreach(d->pt, diff_walk_cb, d);
	assert_true(r == 0 || r == -7);
	if (r == 0)
		for (size_t k = 0; k < DU; k++)
			if (d->want[k])
				fail_msg("entry %zu (%#lx) owed a visit, not visited (mode %d)",
					 k, (unsigned long)d->key[k], mode);
}

static void test_differential(void **state)
{
	(void)state;
	struct diff *d = calloc(1, sizeof(*d));
	assert_non_null(d);
	d->rng = mmk_test_seed() ^ 0xd1ff;
	size_t rounds = mmk_test_n(6, 2);
	for (size_t round = 0; round < rounds; round++) {
		assert_int_equal(mmk_pagetab_create(&d->pt, round % 2 ? 0 : 700), 0);
		size_t ps = mmk_pagetab_page_size(d->pt);
		memset(d->present, 0, sizeof(d->present));
		memset(d->dirty, 0, sizeof(d->dirty));
		d->count = d->ndirty = 0;
		uint64_t base = rng_next(&d->rng) >> 20;
		for (size_t k = 0; k < DU; k++) {
			switch (k % 4) {
			case 0: d->key[k] = (uintptr_t)(k / 4) * ps; break; /* near 0 */
			case 1: d->key[k] = ~(uintptr_t)(ps - 1) - (uintptr_t)(k / 4) * ps; break;
			case 2: d->key[k] = (uintptr_t)(base + k / 4) * ps; break; /* dense */
			default: d->key[k] = (uintptr_t)(rng_next(&d->rng) | ((uint64_t)k << 40)) & ~(uintptr_t)(ps - 1);
			}
		}
		/* target populations vary: dense and nearly empty phases */
		size_t ops = mmk_test_n(60000, 5000);
		size_t peak = 0;
		for (size_t op = 0; op < ops; op++) {
			size_t k = (size_t)(rng_next(&d->rng) % DU);
			uint64_t what = rng_next(&d->rng) % 1000;
			int bias = (op / 5000) % 2; /* growing or shrinking phase */
			int r;
			if (what < (bias ? 300u : 500u)) {
				r = mmk_pagetab_insert(d->pt, d->key[k], &d->rec[k]);
				assert_int_equal(r, d->present[k] ? -EEXIST : 0);
				if (!d->present[k]) {
					d->present[k] = 1;
					d->count++;
				}
			} else if (what < 800) {
				void *out = NULL;
				r = mmk_pagetab_remove(d->pt, d->key[k], &out);
				assert_int_equal(r, d->present[k] ? 0 : -ENOENT);
				if (d->present[k]) {
					assert_ptr_equal(out, &d->rec[k]);
					d->present[k] = 0;
					d->count--;
					if (d->dirty[k])
						d->ndirty--;
					d->dirty[k] = 0;
				}
			} else if (what < 900) {
				r = mmk_pagetab_mark_dirty(d->pt, d->key[k]);
				assert_int_equal(r, d->present[k] ? 0 : -ENOENT);
				if (d->present[k] && !d->dirty[k]) {
					d->dirty[k] = 1;
					d->ndirty++;
				}
			} else if (what < 960) {
				r = mmk_pagetab_clear_dirty(d->pt, d->key[k]);
				assert_int_equal(r, d->present[k] ? 0 : -ENOENT);
				if (d->present[k] && d->dirty[k]) {
					d->dirty[k] = 0;
					d->ndirty--;
				}
			} else if (what < 985) {
				diff_walk(d, 1);
			} else if (what < 990) {
				diff_walk(d, 0);
			} else if (what < 995) {
				mmk_pagetab_clear_all_dirty(d->pt);
				memset(d->dirty, 0, sizeof(d->dirty));
				d->ndirty = 0;
			} else if (what < 996) {
				/* every entry dirty: every block listed */
				for (size_t o = 0; o < DU; o++) {
					if (!d->present[o])
						continue;
					assert_int_equal(mmk_pagetab_mark_dirty(d->pt, d->key[o]), 0);
					if (!d->dirty[o]) {
						d->dirty[o] = 1;
						d->ndirty++;
					}
				}
			} else if (what < 997) {
				assert_int_equal(mmk_pagetab_reserve(d->pt, d->count + (size_t)(rng_next(&d->rng) % 2000)), 0);
			} else {
				diff_check_all(d);
			}
			assert_int_equal(mmk_pagetab_count(d->pt), d->count);
			assert_int_equal(mmk_pagetab_dirty_count(d->pt), d->ndirty);
			if (d->count > peak) { /* at each new peak: load bound */
				peak = d->count;
				mmk_pagetab_stats st;
				assert_int_equal(mmk_pagetab_stats_get(d->pt, &st), 0);
				assert_true(st.count * 20 <= st.slots * 17);
			}
		}
		diff_check_all(d);
		mmk_pagetab_clear_all_dirty(d->pt);
		memset(d->dirty, 0, sizeof(d->dirty));
		d->ndirty = 0;
		diff_check_all(d);
		mmk_pagetab_destroy(d->pt);
	}
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_last_slot_wrap),
		cmocka_unit_test(test_successor_cases),
		cmocka_unit_test(test_edge_keys_absent),
		cmocka_unit_test(test_growth_steps),
		cmocka_unit_test(test_reserved_sizes),
		cmocka_unit_test(test_huge_sizes_refused),
		cmocka_unit_test(test_dirty_walk_marks_earlier_slot),
		cmocka_unit_test(test_differential),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
