/*
 * tests/test_pagetab.c - mmk_pagetab: error cases, a randomized differential
 * test against a trivially correct model, iteration with removal, forced
 * collisions and saturated probe displacements.
 *
 * The model: a sorted array ("universe") of candidate page addresses; the
 * table's state is mirrored by per-index present/dirty flags.  Every record
 * is a struct rec in an array, so a callback's record pointer gives the
 * universe index directly (and records never move: the table must return
 * exactly the pointer it was given).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <mmkit/pagetab.h>

#define PG 4096u

struct rec {
	uintptr_t addr;
	size_t idx;
};

struct model {
	size_t n;          /* universe size */
	uintptr_t *addr;   /* sorted, unique, page-aligned */
	struct rec *recs;
	unsigned char *present, *dirty;
	unsigned *seen;    /* visit stamps */
	unsigned stamp;
	size_t count, ndirty;
	mmk_pagetab *pt;
	uint64_t rng;
};

static int cmp_uptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

static size_t sort_unique(uintptr_t *a, size_t n)
{
	qsort(a, n, sizeof(*a), cmp_uptr);
	size_t w = 0;
	for (size_t i = 0; i < n; i++)
		if (w == 0 || a[w - 1] != a[i])
			a[w++] = a[i];
	return w;
}

static long find_idx(const struct model *m, uintptr_t a)
{
	const uintptr_t *p = bsearch(&a, m->addr, m->n, sizeof(a), cmp_uptr);
	return p ? (long)(p - m->addr) : -1;
}

/* ---- address patterns ------------------------------------------------- */

enum pattern { PAT_SPARSE, PAT_CLUSTERED, PAT_STRIDED, PAT_RANDOM64, PAT_MIX, PAT_N };
static const char *pat_name[] = {"sparse", "clustered", "strided", "random64", "mix"};

#define USER_TOP ((uintptr_t)0x7ffffffff000ull)

static size_t gen_sparse(uintptr_t *a, size_t want, uint64_t *rng)
{
	size_t n = 0;
	a[n++] = 0;
	a[n++] = USER_TOP;
	a[n++] = ~(uintptr_t)(PG - 1);
	uintptr_t heap = 0x555555554000ull, mm = 0x7f0000000000ull;
	while (n < want) {
		uint64_t r = mmk_test_rand(rng);
		switch (r % 4) {
		case 0: /* heap pages, small gaps */
			heap += (1 + (r >> 8) % 3) * PG;
			a[n++] = heap;
			break;
		case 1: /* mmap region pages going down, random gaps */
			mm -= (1 + (r >> 8) % 64) * PG;
			a[n++] = mm;
			break;
		case 2: { /* random gap up to 2^40 from a random earlier address */
			uintptr_t base = a[(r >> 8) % n];
			uintptr_t gap = (mmk_test_rand(rng) & ((1ull << 40) - 1)) & ~(uintptr_t)(PG - 1);
			a[n++] = (base + gap) & USER_TOP;
			break;
		}
		default: /* anywhere in the 47-bit user space */
			a[n++] = (uintptr_t)(mmk_test_rand(rng) & USER_TOP);
			break;
		}
	}
	return n;
}

static size_t gen_clustered(uintptr_t *a, size_t want, uint64_t *rng)
{
	size_t n = 0;
	while (n < want) {
		uint64_t r = mmk_test_rand(rng);
		uintptr_t base = (uintptr_t)(mmk_test_rand(rng) & USER_TOP);
		if (r & 1)
			base = 0x555555554000ull + ((r >> 8) % 4096) * 64 * PG;
		size_t len = 1 + (size_t)((r >> 20) % (r & 2 ? 5000 : 100));
		for (size_t i = 0; i < len && n < want; i++)
			a[n++] = base + i * PG;
	}
	return n;
}

static size_t gen_strided(uintptr_t *a, size_t want, uint64_t *rng)
{
	static const unsigned strides[] = {2, 16, 17};
	size_t n = 0;
	while (n < want) {
		uint64_t r = mmk_test_rand(rng);
		uintptr_t base = (uintptr_t)(mmk_test_rand(rng) & USER_TOP);
		unsigned st = strides[r % 3];
		size_t len = 1 + (size_t)((r >> 8) % 20000);
		for (size_t i = 0; i < len && n < want; i++)
			a[n++] = base + (uintptr_t)i * st * PG;
	}
	return n;
}

static size_t gen_random64(uintptr_t *a, size_t want, uint64_t *rng)
{
	size_t n = 0;
	a[n++] = 0;
	while (n < want)
		a[n++] = (uintptr_t)mmk_test_rand(rng) & ~(uintptr_t)(PG - 1);
	return n;
}

static void model_init(struct model *m, enum pattern pat, size_t want, uint64_t seed)
{
	memset(m, 0, sizeof(*m));
	m->rng = seed;
	m->addr = malloc(want * sizeof(uintptr_t));
	assert_non_null(m->addr);
	size_t n;
	switch (pat) {
	case PAT_SPARSE: n = gen_sparse(m->addr, want, &m->rng); break;
	case PAT_CLUSTERED: n = gen_clustered(m->addr, want, &m->rng); break;
	case PAT_STRIDED: n = gen_strided(m->addr, want, &m->rng); break;
	case PAT_RANDOM64: n = gen_random64(m->addr, want, &m->rng); break;
	default: {
		size_t q = want / 4;
		n = gen_sparse(m->addr, q, &m->rng);
		n += gen_clustered(m->addr + n, q, &m->rng);
		n += gen_strided(m->addr + n, q, &m->rng);
		n += gen_random64(m->addr + n, want - n, &m->rng);
	}
	}
	m->n = sort_unique(m->addr, n);
	m->recs = calloc(m->n, sizeof(*m->recs));
	m->present = calloc(m->n, 1);
	m->dirty = calloc(m->n, 1);
	m->seen = calloc(m->n, sizeof(unsigned));
	assert_true(m->recs && m->present && m->dirty && m->seen);
	for (size_t i = 0; i < m->n; i++) {
		m->recs[i].addr = m->addr[i];
		m->recs[i].idx = i;
	}
}

static void model_free(struct model *m)
{
	mmk_pagetab_destroy(m->pt);
	free(m->addr);
	free(m->recs);
	free(m->present);
	free(m->dirty);
	free(m->seen);
}

/* ---- full comparisons ------------------------------------------------- */

static void check_all_lookups(struct model *m)
{
	assert_int_equal(mmk_pagetab_count(m->pt), m->count);
	assert_int_equal(mmk_pagetab_dirty_count(m->pt), m->ndirty);
	size_t c = 0, d = 0;
	for (size_t i = 0; i < m->n; i++) {
		void *r = mmk_pagetab_lookup(m->pt, m->addr[i]);
		if (m->present[i]) {
			assert_ptr_equal(r, &m->recs[i]);
			c++;
		} else {
			assert_null(r);
		}
		assert_int_equal(mmk_pagetab_is_dirty(m->pt, m->addr[i]), m->dirty[i]);
		d += m->dirty[i];
	}
	assert_int_equal(c, m->count);
	assert_int_equal(d, m->ndirty);
}

enum iter_mode {
	IT_PLAIN,        /* just check the visited set */
	IT_REMOVE_ALT,   /* remove every other entry */
	IT_REMOVE_ALL,   /* remove everything */
	IT_REMOVE_RAND,  /* remove a random ~third */
	IT_MARK,         /* mark_dirty / clear_dirty from the callback */
	IT_STOP          /* stop after some entries */
};

struct iter_ctx {
	struct model *m;
	enum iter_mode mode;
	bool dirty_walk;
	size_t visits;
	size_t stop_after;
	size_t marked; /* other entries marked dirty by the callback */
};

static int iter_cb(uintptr_t addr, void *rec, void *arg)
{
	struct iter_ctx *c = arg;
	struct model *m = c->m;
	struct rec *r = rec;
	assert_true(r >= m->recs && r < m->recs + m->n);
	assert_int_equal(r->addr, addr);
	size_t i = r->idx;
	if (!m->present[i] || m->seen[i] == m->stamp)
		fail_msg("entry %#lx visited twice or absent", (unsigned long)addr);
	if (c->dirty_walk)
		assert_true(m->dirty[i]);
	m->seen[i] = m->stamp;
	c->visits++;
	bool rm = false;
	switch (c->mode) {
	case IT_PLAIN: break;
	case IT_REMOVE_ALT: rm = c->visits & 1; break;
	case IT_REMOVE_ALL: rm = true; break;
	case IT_REMOVE_RAND: rm = mmk_test_rand(&m->rng) % 3 == 0; break;
	case IT_MARK: {
		uint64_t x = mmk_test_rand(&m->rng);
		if (x % 4 == 0) { /* clear this entry's mark */
			assert_int_equal(mmk_pagetab_clear_dirty(m->pt, addr), 0);
			m->ndirty -= m->dirty[i];
			m->dirty[i] = 0;
		} else if (x % 4 == 1 && !c->dirty_walk) { /* mark this one */
			assert_int_equal(mmk_pagetab_mark_dirty(m->pt, addr), 0);
			m->ndirty += !m->dirty[i];
			m->dirty[i] = 1;
		} else if (x % 4 == 3) {
			/* mark another present entry: in a dirty walk it may or
			 * may not be visited */
			size_t j = (size_t)((x >> 8) % m->n);
			if (m->present[j] && j != i) {
				assert_int_equal(mmk_pagetab_mark_dirty(m->pt, m->addr[j]), 0);
				m->ndirty += !m->dirty[j];
				m->dirty[j] = 1;
				c->marked++;
			}
		}
		if (x % 8 == 2) /* and remove it */
			rm = true;
		assert_ptr_equal(mmk_pagetab_lookup(m->pt, addr), rec);
		break;
	}
	case IT_STOP:
		if (c->visits == c->stop_after)
			return -1234;
		break;
	}
	if (rm) {
		m->present[i] = 0;
		m->count--;
		m->ndirty -= m->dirty[i];
		m->dirty[i] = 0;
		return MMK_PAGETAB_REMOVE;
	}
	return 0;
}

static void check_iteration(struct model *m, bool dirty_walk, enum iter_mode mode)
{
	struct iter_ctx c = {.m = m, .mode = mode, .dirty_walk = dirty_walk};
	size_t expect = dirty_walk ? m->ndirty : m->count;
	if (mode == IT_STOP) {
		if (expect == 0)
			mode = c.mode = IT_PLAIN;
		else
			c.stop_after = 1 + (size_t)(mmk_test_rand(&m->rng) % expect);
	}
	/* Remember which entries must be visited (the set at the start). */
	unsigned char *must = NULL;
	if (mode != IT_STOP) {
		must = malloc(m->n ? m->n : 1);
		assert_non_null(must);
		for (size_t i = 0; i < m->n; i++)
			must[i] = dirty_walk ? m->dirty[i] : m->present[i];
	}
	m->stamp++;
	int r = dirty_walk ? mmk_pagetab_foreach_dirty(m->pt, iter_cb, &c)
			   : mmk_pagetab_foreach(m->pt, iter_cb, &c);
	if (mode == IT_STOP) {
		assert_int_equal(r, -1234);
		assert_int_equal(c.visits, c.stop_after);
	} else {
		assert_int_equal(r, 0);
		/* Everything in the start set was visited, except (IT_MARK,
		 * dirty walk) entries whose mark was cleared before being
		 * reached -- the callback only clears its own entry, so none. */
		for (size_t i = 0; i < m->n; i++)
			if (must[i] && m->seen[i] != m->stamp)
				fail_msg("entry %#lx not visited (dirty walk %d, mode %d)",
					 (unsigned long)m->addr[i], dirty_walk, mode);
		if (mode != IT_MARK)
			assert_int_equal(c.visits, expect);
		else
			assert_true(c.visits >= expect && c.visits <= expect + c.marked);
		free(must);
	}
	if (mode == IT_REMOVE_ALL && !dirty_walk)
		assert_int_equal(mmk_pagetab_count(m->pt), 0);
	assert_int_equal(mmk_pagetab_count(m->pt), m->count);
	assert_int_equal(mmk_pagetab_dirty_count(m->pt), m->ndirty);
}

/* ---- random operations ------------------------------------------------ */

static void do_random_ops(struct model *m, size_t nops)
{
	size_t check_every = m->n / 2 + 1000;
	unsigned insert_bias = 55; /* percent of insert among insert/remove */
	for (size_t op = 0; op < nops; op++) {
		uint64_t r = mmk_test_rand(&m->rng);
		size_t i = (size_t)((r >> 16) % m->n);
		uintptr_t a = m->addr[i];
		unsigned kind = (unsigned)(r % 100);
		if (op % 50000 == 0) /* phases: fill up, drain, steady */
			insert_bias = (unsigned[]){80, 20, 55, 95, 5}[(r >> 8) % 5];
		if (kind < 40) {
			if ((r >> 8) % 100 < insert_bias) {
				int e = mmk_pagetab_insert(m->pt, a, &m->recs[i]);
				if (m->present[i]) {
					assert_int_equal(e, -EEXIST);
				} else {
					assert_int_equal(e, 0);
					m->present[i] = 1;
					m->count++;
				}
			} else {
				void *out = NULL;
				int e = mmk_pagetab_remove(m->pt, a, &out);
				if (m->present[i]) {
					assert_int_equal(e, 0);
					assert_ptr_equal(out, &m->recs[i]);
					m->present[i] = 0;
					m->count--;
					m->ndirty -= m->dirty[i];
					m->dirty[i] = 0;
				} else {
					assert_int_equal(e, -ENOENT);
				}
			}
		} else if (kind < 75) {
			void *got = mmk_pagetab_lookup(m->pt, a);
			assert_ptr_equal(got, m->present[i] ? &m->recs[i] : NULL);
			/* and an address outside the universe (usually) */
			uintptr_t b = (uintptr_t)(mmk_test_rand(&m->rng) & ~(uint64_t)(PG - 1));
			if (kind & 1)
				b = a + PG;
			long bi = find_idx(m, b);
			got = mmk_pagetab_lookup(m->pt, b);
			if (bi >= 0 && m->present[bi])
				assert_ptr_equal(got, &m->recs[bi]);
			else
				assert_null(got);
		} else if (kind < 87) {
			int e = mmk_pagetab_mark_dirty(m->pt, a);
			if (m->present[i]) {
				assert_int_equal(e, 0);
				m->ndirty += !m->dirty[i];
				m->dirty[i] = 1;
			} else {
				assert_int_equal(e, -ENOENT);
			}
		} else if (kind < 93) {
			int e = mmk_pagetab_clear_dirty(m->pt, a);
			if (m->present[i]) {
				assert_int_equal(e, 0);
				m->ndirty -= m->dirty[i];
				m->dirty[i] = 0;
			} else {
				assert_int_equal(e, -ENOENT);
			}
		} else {
			assert_int_equal(mmk_pagetab_is_dirty(m->pt, a), m->dirty[i]);
			assert_int_equal(mmk_pagetab_count(m->pt), m->count);
			assert_int_equal(mmk_pagetab_dirty_count(m->pt), m->ndirty);
		}

		if (op % check_every == check_every - 1) {
			uint64_t x = mmk_test_rand(&m->rng);
			bool dw = x & 1;
			enum iter_mode mode = (enum iter_mode)((x >> 1) % 6);
			if (mode == IT_REMOVE_ALL && (x >> 8) % 4 != 0)
				mode = IT_REMOVE_RAND; /* keep the table fuller */
			check_iteration(m, dw, mode);
			if ((x >> 16) % 8 == 0) {
				mmk_pagetab_clear_all_dirty(m->pt);
				memset(m->dirty, 0, m->n);
				m->ndirty = 0;
			}
			if ((x >> 20) % 4 == 0)
				check_all_lookups(m);
		}
	}
	check_iteration(m, false, IT_PLAIN);
	check_iteration(m, true, IT_PLAIN);
	check_all_lookups(m);
}

static void test_differential(void **state)
{
	(void)state;
	uint64_t seed = mmk_test_seed();
	/* {universe size, ops}: ~10.4 M operations at scale 1. */
	static const struct { size_t u, ops; } rounds[] = {
		{64, 200000}, {1000, 600000}, {20000, 1600000}, {150000, 2000000},
	};
	size_t total = 0;
	for (int pat = 0; pat < PAT_N; pat++) {
		for (size_t k = 0; k < sizeof(rounds) / sizeof(rounds[0]); k++) {
			struct model m;
			model_init(&m, (enum pattern)pat, rounds[k].u,
				   seed * 31 + (uint64_t)pat * 7 + k + 1);
			size_t expected = (k & 1) ? 0 : m.n / 2;
			assert_int_equal(mmk_pagetab_create(&m.pt, expected), 0);
			size_t ops = mmk_test_n(rounds[k].ops / 2, 2000);
			do_random_ops(&m, ops);
			total += ops;
			model_free(&m);
		}
		(void)pat_name;
	}
	fprintf(stderr, "# differential: %zu operations\n", total);
}

/* ---- targeted iteration tests ----------------------------------------- */

static void fill_model(struct model *m, size_t expected)
{
	assert_int_equal(mmk_pagetab_create(&m->pt, expected), 0);
	for (size_t i = 0; i < m->n; i++) {
		assert_int_equal(mmk_pagetab_insert(m->pt, m->addr[i], &m->recs[i]), 0);
		m->present[i] = 1;
		if (i % 3 == 0) {
			assert_int_equal(mmk_pagetab_mark_dirty(m->pt, m->addr[i]), 0);
			m->dirty[i] = 1;
			m->ndirty++;
		}
	}
	m->count = m->n;
}

static void test_iteration_removal(void **state)
{
	(void)state;
	for (int pat = 0; pat < PAT_N; pat++) {
		for (int mode = 0; mode < 6; mode++) {
			for (int dw = 0; dw < 2; dw++) {
				struct model m;
				model_init(&m, (enum pattern)pat, mmk_test_n(30000, 3000),
					   mmk_test_seed() + (uint64_t)(pat * 100 + mode * 2 + dw));
				fill_model(&m, 0);
				check_iteration(&m, dw, (enum iter_mode)mode);
				check_all_lookups(&m);
				/* and once more over what is left */
				check_iteration(&m, !dw, IT_REMOVE_ALT);
				check_iteration(&m, dw, IT_PLAIN);
				check_all_lookups(&m);
				model_free(&m);
			}
		}
	}
}

static int remove_all_cb(uintptr_t addr, void *rec, void *arg)
{
	(void)addr;
	(void)rec;
	(*(size_t *)arg)++;
	return MMK_PAGETAB_REMOVE;
}

static void test_remove_all_and_reuse(void **state)
{
	(void)state;
	mmk_pagetab *pt;
	static struct rec recs[5000];
	assert_int_equal(mmk_pagetab_create(&pt, 0), 0);
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < 5000; i++) {
			recs[i].addr = 0x7f0000000000ull + i * 3 * PG;
			assert_int_equal(mmk_pagetab_insert(pt, recs[i].addr, &recs[i]), 0);
			if (i % 2)
				assert_int_equal(mmk_pagetab_mark_dirty(pt, recs[i].addr), 0);
		}
		size_t n = 0;
		assert_int_equal(mmk_pagetab_foreach_dirty(pt, remove_all_cb, &n), 0);
		assert_int_equal(n, 2500);
		assert_int_equal(mmk_pagetab_count(pt), 2500);
		assert_int_equal(mmk_pagetab_dirty_count(pt), 0);
		for (size_t i = 0; i < 5000; i++)
			assert_ptr_equal(mmk_pagetab_lookup(pt, recs[i].addr),
					 i % 2 ? NULL : &recs[i]);
		n = 0;
		assert_int_equal(mmk_pagetab_foreach(pt, remove_all_cb, &n), 0);
		assert_int_equal(n, 2500);
		assert_int_equal(mmk_pagetab_count(pt), 0);
		n = 0;
		assert_int_equal(mmk_pagetab_foreach(pt, remove_all_cb, &n), 0);
		assert_int_equal(n, 0);
	}
	mmk_pagetab_destroy(pt);
}

/* ---- error cases ------------------------------------------------------ */

static int never_cb(uintptr_t a, void *r, void *arg)
{
	(void)a, (void)r, (void)arg;
	fail_msg("callback on an empty table");
	return 0;
}

static void test_errors(void **state)
{
	(void)state;
	mmk_pagetab *pt = NULL;
	int r1 = 1, r2 = 2;
	assert_int_equal(mmk_pagetab_create(NULL, 0), -EINVAL);
	assert_int_equal(mmk_pagetab_create(&pt, 0), 0);
	assert_non_null(pt);
	size_t ps = mmk_pagetab_page_size(pt);
	assert_true(ps >= 4096 && (ps & (ps - 1)) == 0);

	/* unaligned and NULL record */
	assert_int_equal(mmk_pagetab_insert(pt, 0x1000 + 1, &r1), -EINVAL);
	assert_int_equal(mmk_pagetab_insert(pt, ps / 2, &r1), -EINVAL);
	assert_int_equal(mmk_pagetab_insert(pt, ps, NULL), -EINVAL);
	assert_int_equal(mmk_pagetab_insert(NULL, ps, &r1), -EINVAL);
	assert_int_equal(mmk_pagetab_count(pt), 0);
	assert_null(mmk_pagetab_lookup(pt, 8));
	assert_int_equal(mmk_pagetab_remove(pt, 8, NULL), -EINVAL);
	assert_int_equal(mmk_pagetab_mark_dirty(pt, 8), -EINVAL);
	assert_int_equal(mmk_pagetab_clear_dirty(pt, 8), -EINVAL);

	/* absent */
	void *out = &r2;
	assert_int_equal(mmk_pagetab_remove(pt, ps, &out), -ENOENT);
	assert_ptr_equal(out, &r2);
	assert_int_equal(mmk_pagetab_mark_dirty(pt, ps), -ENOENT);
	assert_int_equal(mmk_pagetab_clear_dirty(pt, ps), -ENOENT);
	assert_false(mmk_pagetab_is_dirty(pt, ps));
	assert_int_equal(mmk_pagetab_foreach(pt, never_cb, NULL), 0);
	assert_int_equal(mmk_pagetab_foreach_dirty(pt, never_cb, NULL), 0);
	assert_int_equal(mmk_pagetab_foreach(pt, NULL, NULL), -EINVAL);
	assert_int_equal(mmk_pagetab_foreach_dirty(NULL, never_cb, NULL), -EINVAL);

	/* address 0 and the very last page are ordinary keys */
	uintptr_t last = ~(uintptr_t)(ps - 1);
	assert_null(mmk_pagetab_lookup(pt, 0));
	assert_int_equal(mmk_pagetab_insert(pt, 0, &r1), 0);
	assert_int_equal(mmk_pagetab_insert(pt, last, &r2), 0);
	assert_ptr_equal(mmk_pagetab_lookup(pt, 0), &r1);
	assert_ptr_equal(mmk_pagetab_lookup(pt, last), &r2);

	/* duplicate: -EEXIST, original kept */
	assert_int_equal(mmk_pagetab_insert(pt, 0, &r2), -EEXIST);
	assert_ptr_equal(mmk_pagetab_lookup(pt, 0), &r1);
	assert_int_equal(mmk_pagetab_count(pt), 2);

	/* dirty bookkeeping */
	assert_int_equal(mmk_pagetab_mark_dirty(pt, 0), 0);
	assert_int_equal(mmk_pagetab_mark_dirty(pt, 0), 0);
	assert_int_equal(mmk_pagetab_dirty_count(pt), 1);
	assert_true(mmk_pagetab_is_dirty(pt, 0));
	assert_false(mmk_pagetab_is_dirty(pt, last));
	assert_int_equal(mmk_pagetab_insert(pt, 0, &r2), -EEXIST);
	assert_true(mmk_pagetab_is_dirty(pt, 0));
	assert_int_equal(mmk_pagetab_clear_dirty(pt, 0), 0);
	assert_int_equal(mmk_pagetab_clear_dirty(pt, 0), 0);
	assert_int_equal(mmk_pagetab_dirty_count(pt), 0);
	assert_int_equal(mmk_pagetab_mark_dirty(pt, last), 0);
	assert_int_equal(mmk_pagetab_remove(pt, last, &out), 0);
	assert_ptr_equal(out, &r2);
	assert_int_equal(mmk_pagetab_dirty_count(pt), 0);
	assert_int_equal(mmk_pagetab_foreach_dirty(pt, never_cb, NULL), 0);
	assert_int_equal(mmk_pagetab_remove(pt, last, NULL), -ENOENT);
	assert_int_equal(mmk_pagetab_remove(pt, 0, NULL), 0);
	assert_int_equal(mmk_pagetab_count(pt), 0);

	/* stats and bytes */
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(pt, NULL), -EINVAL);
	assert_int_equal(mmk_pagetab_stats_get(pt, &st), 0);
	assert_int_equal(st.count, 0);
	assert_int_equal(st.bytes, mmk_pagetab_bytes(pt));
	assert_true(st.bytes > 0);

	/* NULL handles */
	assert_int_equal(mmk_pagetab_count(NULL), 0);
	assert_int_equal(mmk_pagetab_bytes(NULL), 0);
	assert_int_equal(mmk_pagetab_reserve(NULL, 1), -EINVAL);
	assert_null(mmk_pagetab_lookup(NULL, 0));
	mmk_pagetab_clear_all_dirty(NULL);
	mmk_pagetab_destroy(NULL);

	/* reserve: no growth afterwards */
	assert_int_equal(mmk_pagetab_reserve(pt, 100000), 0);
	size_t b = mmk_pagetab_bytes(pt);
	assert_true(b <= 100000 * 24);
	static struct rec recs[100000];
	for (size_t i = 0; i < 100000; i++)
		assert_int_equal(mmk_pagetab_insert(pt, i * 5 * ps, &recs[i]), 0);
	assert_int_equal(mmk_pagetab_bytes(pt), b);
	assert_int_equal(mmk_pagetab_reserve(pt, 10), 0);
	assert_int_equal(mmk_pagetab_bytes(pt), b);
	mmk_pagetab_destroy(pt);

	/* absurd sizes */
	assert_int_equal(mmk_pagetab_create(&pt, SIZE_MAX / 2), -ENOMEM);
	assert_null(pt);
}

/* ---- memory bound ------------------------------------------------------ */

static void test_memory_bound(void **state)
{
	(void)state;
	/* <= 24 bytes per page at every fill level past trivially small ones,
	 * growing from an empty table. */
	size_t n = mmk_test_n(400000, 50000);
	static int dummy;
	mmk_pagetab *pt;
	assert_int_equal(mmk_pagetab_create(&pt, 0), 0);
	double worst = 0;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(mmk_pagetab_insert(pt, (uintptr_t)i * 7 * PG, &dummy), 0);
		if (i + 1 >= 2048) {
			double bpp = (double)mmk_pagetab_bytes(pt) / (double)(i + 1);
			if (bpp > worst)
				worst = bpp;
		}
	}
	fprintf(stderr, "# memory: max %.2f bytes/page for 2048..%zu pages\n", worst, n);
	assert_true(worst <= 24.0);
	mmk_pagetab_destroy(pt);
}

/*
 * A table created for n pages (or reserved for n) holds n pages without
 * growing, and within the same 24 bytes/page bound.
 */
static void test_reserved_bound(void **state)
{
	(void)state;
	static int dummy;
	static const size_t sizes[] = {4096, 10007, 100000, 400000};
	for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		size_t n = sizes[z];
		for (int how = 0; how < 2; how++) {
			mmk_pagetab *pt;
			assert_int_equal(mmk_pagetab_create(&pt, how ? 0 : n), 0);
			if (how)
				assert_int_equal(mmk_pagetab_reserve(pt, n), 0);
			size_t b = mmk_pagetab_bytes(pt);
			for (size_t i = 0; i < n; i++)
				assert_int_equal(mmk_pagetab_insert(pt, (uintptr_t)i * 3 * PG, &dummy), 0);
			assert_int_equal(mmk_pagetab_bytes(pt), b); /* no growth */
			double bpp = (double)b / (double)n;
			if (bpp > 24.0)
				fail_msg("%zu pages %s: %.2f bytes/page", n,
					 how ? "reserved" : "expected", bpp);
			mmk_pagetab_destroy(pt);
		}
	}
}

/* ---- never loses an entry: the seed's worst case ---------------------- */

static void test_seed_collisions(void **state)
{
	(void)state;
	/* In the seed every one of these keys fell into one 8-slot bucket
	 * (addresses differing only by multiples of 2^20 bytes). */
	size_t n = mmk_test_n(1u << 20, 1u << 17);
	struct rec *recs = calloc(n, sizeof(*recs));
	assert_non_null(recs);
	mmk_pagetab *pt;
	assert_int_equal(mmk_pagetab_create(&pt, 0), 0);
	uintptr_t base = 0x7f1234500000ull & ~(uintptr_t)((1u << 20) - 1);
	for (size_t i = 0; i < n; i++) {
		recs[i].addr = (i == 0) ? 0 : base + (uintptr_t)i * (1u << 20);
		assert_int_equal(mmk_pagetab_insert(pt, recs[i].addr, &recs[i]), 0);
	}
	assert_int_equal(mmk_pagetab_count(pt), n);
	for (size_t i = 0; i < n; i++)
		assert_ptr_equal(mmk_pagetab_lookup(pt, recs[i].addr), &recs[i]);
	for (size_t i = 0; i < n; i += 2)
		assert_int_equal(mmk_pagetab_remove(pt, recs[i].addr, NULL), 0);
	for (size_t i = 0; i < n; i++)
		assert_ptr_equal(mmk_pagetab_lookup(pt, recs[i].addr),
				 i % 2 ? &recs[i] : NULL);
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(pt, &st), 0);
	fprintf(stderr, "# collisions: %zu pages, slots %zu, mean disp %.2f, max %zu, %.1f B/page\n",
		st.count, st.slots, st.mean_disp, st.max_disp,
		(double)st.bytes / (double)st.count);
	mmk_pagetab_destroy(pt);
	free(recs);
}

/* ---- saturated displacements (white box) ------------------------------ */

/* Mirrors home_of() in src/pagetab/pagetab.c: bucket of a 16-page group. */
static uint64_t bucket_of(uint64_t group, uint64_t nbuckets)
{
	uint64_t h = group * 0x9E3779B97F4A7C15ull;
	return (uint64_t)(((unsigned __int128)h * nbuckets) >> 64);
}

/*
 * A model whose pages fill 100 whole 16-page groups hashing to the last
 * bucket (so the cluster wraps round to slot 0) and 100 hashing to bucket 3:
 * one cluster of 3200 entries with displacements far beyond 1022 (the
 * largest one stored inline).  The table is sized so that it never grows.
 */
static void long_cluster_model(struct model *m, uint64_t seed)
{
	memset(m, 0, sizeof(*m));
	assert_int_equal(mmk_pagetab_create(&m->pt, 6000), 0);
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(m->pt, &st), 0);
	uint64_t nb = st.slots / 16;
	size_t ps = mmk_pagetab_page_size(m->pt);
	unsigned shift = (unsigned)__builtin_ctzl(ps);
	size_t cap = 3200;
	m->rng = seed;
	m->addr = calloc(cap, sizeof(uintptr_t));
	assert_non_null(m->addr);
	size_t na = 0, nlast = 0, n3 = 0;
	for (uint64_t g = 1; na < cap; g++) {
		uint64_t b = bucket_of(g, nb);
		if ((b == nb - 1 && nlast < 100) || (b == 3 && n3 < 100)) {
			nlast += b == nb - 1;
			n3 += b == 3;
			for (unsigned k = 0; k < 16; k++)
				m->addr[na++] = (uintptr_t)((g << 4) + k) << shift;
		}
	}
	m->n = sort_unique(m->addr, na);
	m->recs = calloc(m->n, sizeof(*m->recs));
	m->present = calloc(m->n, 1);
	m->dirty = calloc(m->n, 1);
	m->seen = calloc(m->n, sizeof(unsigned));
	assert_true(m->recs && m->present && m->dirty && m->seen);
	for (size_t i = 0; i < m->n; i++) {
		m->recs[i].addr = m->addr[i];
		m->recs[i].idx = i;
	}
	/* insert in random order */
	size_t *perm = malloc(m->n * sizeof(size_t));
	assert_non_null(perm);
	for (size_t i = 0; i < m->n; i++)
		perm[i] = i;
	for (size_t i = m->n - 1; i > 0; i--) {
		size_t j = (size_t)(mmk_test_rand(&m->rng) % (i + 1));
		size_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (size_t k = 0; k < m->n; k++) {
		size_t i = perm[k];
		assert_int_equal(mmk_pagetab_insert(m->pt, m->addr[i], &m->recs[i]), 0);
		m->present[i] = 1;
		m->count++;
	}
	free(perm);
	assert_int_equal(mmk_pagetab_stats_get(m->pt, &st), 0);
	assert_int_equal(st.slots / 16, nb); /* no growth: the test is valid */
	assert_true(st.max_disp > 1100);
}

static void test_long_clusters(void **state)
{
	(void)state;
	struct model m;
	long_cluster_model(&m, mmk_test_seed() ^ 0x5a5a);
	for (size_t i = 0; i < m.n; i += 5) {
		assert_int_equal(mmk_pagetab_mark_dirty(m.pt, m.addr[i]), 0);
		m.dirty[i] = 1;
		m.ndirty++;
	}
	mmk_pagetab_stats st;
	assert_int_equal(mmk_pagetab_stats_get(m.pt, &st), 0);
	fprintf(stderr, "# long clusters: %zu entries, max disp %zu, mean %.1f\n",
		st.count, st.max_disp, st.mean_disp);
	check_all_lookups(&m);
	check_iteration(&m, true, IT_REMOVE_RAND);
	check_all_lookups(&m);
	check_iteration(&m, false, IT_REMOVE_ALT);
	check_all_lookups(&m);
	do_random_ops(&m, mmk_test_n(300000, 20000));
	model_free(&m);
}

/*
 * Few dirty pages in long clusters: removals move dirty entries into blocks
 * that hold no other dirty entry, which the dirty index must then list.
 */
static void test_sparse_dirty_moves(void **state)
{
	(void)state;
	struct model m;
	long_cluster_model(&m, mmk_test_seed() ^ 0xa5a5);
	size_t rounds = mmk_test_n(200, 40);
	for (size_t r = 0; r < rounds; r++) {
		mmk_pagetab_clear_all_dirty(m.pt);
		memset(m.dirty, 0, m.n);
		m.ndirty = 0;
		for (size_t i = 0; i < m.n; i++) {
			if (m.present[i] && mmk_test_rand(&m.rng) % 100 == 0) {
				assert_int_equal(mmk_pagetab_mark_dirty(m.pt, m.addr[i]), 0);
				m.dirty[i] = 1;
				m.ndirty++;
			}
		}
		/* remove some dirty entries: from the dirty walk, the full walk,
		 * or mmk_pagetab_remove() */
		int how = (int)(r % 3);
		if (how == 0) {
			check_iteration(&m, true, IT_REMOVE_RAND);
		} else if (how == 1) {
			check_iteration(&m, false, IT_REMOVE_RAND);
		} else {
			for (size_t i = 0; i < m.n; i++) {
				if (m.present[i] && mmk_test_rand(&m.rng) % 8 == 0) {
					assert_int_equal(mmk_pagetab_remove(m.pt, m.addr[i], NULL), 0);
					m.present[i] = 0;
					m.count--;
					m.ndirty -= m.dirty[i];
					m.dirty[i] = 0;
				}
			}
		}
		check_iteration(&m, true, IT_PLAIN);
		/* put everything back (long clusters again; insertion moves
		 * dirty entries forward) */
		for (size_t i = 0; i < m.n; i++) {
			if (!m.present[i]) {
				assert_int_equal(mmk_pagetab_insert(m.pt, m.addr[i], &m.recs[i]), 0);
				m.present[i] = 1;
				m.count++;
			}
		}
		check_iteration(&m, true, IT_PLAIN);
		assert_int_equal(mmk_pagetab_count(m.pt), m.n);
	}
	check_all_lookups(&m);
	model_free(&m);
}

/* ---- debug-build misuse checks ---------------------------------------- */

#ifndef NDEBUG
static int insert_in_cb(uintptr_t addr, void *rec, void *arg)
{
	(void)rec;
	mmk_pagetab_insert(arg, addr + 1024 * PG, rec); /* forbidden */
	return 0;
}

static pthread_barrier_t g_bar;

static int wait_in_cb(uintptr_t addr, void *rec, void *arg)
{
	(void)addr, (void)rec, (void)arg;
	pthread_barrier_wait(&g_bar); /* the other thread may go */
	sleep(5);                     /* it must abort before this ends */
	return 0;
}

static void *second_writer(void *arg)
{
	pthread_barrier_wait(&g_bar);
	mmk_pagetab_mark_dirty(arg, 0); /* while the first thread iterates */
	return NULL;
}

/* Run fn in a child; true if it died of SIGABRT (a failed assert). */
static bool aborts(void (*fn)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, 2); /* keep the assert message out of the log */
		fn();
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void child_insert_during_foreach(void)
{
	mmk_pagetab *pt;
	static int r;
	mmk_pagetab_create(&pt, 0);
	mmk_pagetab_insert(pt, 0, &r);
	mmk_pagetab_foreach(pt, insert_in_cb, pt);
}

static void child_two_writers(void)
{
	mmk_pagetab *pt;
	static int r;
	pthread_t th;
	mmk_pagetab_create(&pt, 0);
	mmk_pagetab_insert(pt, 0, &r);
	pthread_barrier_init(&g_bar, NULL, 2);
	pthread_create(&th, NULL, second_writer, pt);
	mmk_pagetab_foreach(pt, wait_in_cb, NULL);
	pthread_join(th, NULL);
}

static void child_ok(void)
{
	mmk_pagetab *pt;
	static int r;
	mmk_pagetab_create(&pt, 0);
	mmk_pagetab_insert(pt, 0, &r);
	mmk_pagetab_destroy(pt);
}
#endif

static void test_debug_checks(void **state)
{
	(void)state;
#ifdef NDEBUG
	MMK_SKIP("built with NDEBUG: the misuse assertions are compiled out");
#else
	assert_false(aborts(child_ok));
	assert_true(aborts(child_insert_during_foreach));
	assert_true(aborts(child_two_writers));
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_remove_all_and_reuse),
		cmocka_unit_test(test_iteration_removal),
		cmocka_unit_test(test_long_clusters),
		cmocka_unit_test(test_sparse_dirty_moves),
		cmocka_unit_test(test_memory_bound),
		cmocka_unit_test(test_reserved_bound),
		cmocka_unit_test(test_seed_collisions),
		cmocka_unit_test(test_differential),
		cmocka_unit_test(test_debug_checks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
