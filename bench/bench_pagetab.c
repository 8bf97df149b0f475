/*
 * bench/bench_pagetab.c - mmk_pagetab throughput, memory, dirty set, and the
 * seed comparison (PhantomOS vm_map: 2^20 buckets of 8 fixed slots indexed
 * by addr % 2^20, round-robin overwrite when full).
 *
 * Single thread.  Each measurement is repeated (5 runs by default) and the
 * median reported.  CSV on stdout, one row per measurement:
 *   table,metric,layout,pages,inserted,found,lost,bytes_per_page,value,unit,target,baseline
 * table     mmk_pagetab, or seed_vm_map for the seed model's rows
 * found     entries still findable after the inserts (lost = inserted-found)
 * value     the measurement in unit; target: the goal (empty if none);
 * baseline  the same measurement on a generic open-addressing hash map
 *           (linear probing, strong 64-bit hash, power-of-two size, grows
 *           2x at 75% load; its functions are compiled noinline, like a
 *           library call) or, for the dirty walks, a plain walk of every
 *           entry (mmk_pagetab_foreach with an empty callback): the least a
 *           walk without a dirty index costs.
 * bytes_per_page_max is the worst point of a build from empty (just after a
 * growth), _final that table at the end, _reserved the table created for n
 * pages and filled to n (the one the lookup, churn and remove rows use).
 * Insert/remove rows: building the table in address or random order into
 * a table created empty (expected0: it grows ~1.25x at a time at 85 % load,
 * each entry is moved ~4.2 times on the way) or sized in advance (reserved:
 * created for n pages, which mmk_pagetab sizes for 70 % load at n); removing
 * every page; and churn: at ~n resident pages (the reserved table), remove a
 * random resident page and insert a random absent one (the steady state of
 * a long-lived table).
 * Layouts: realistic (a program image, a big heap, 8 mmaps of 0.5..20% of the
 * pages near 0x7f.., a stack, 5% sparse pages, all with small holes) and
 * sparse (uniformly random pages of the 47-bit user space).
 *
 * Options: --quick (~2 s smoke run: 256 Ki pages, 3 runs), --full (pages
 * 64 Ki..4 Mi, 7 runs), --runs N, --pages N.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mmkit/pagetab.h>

#define PG ((uintptr_t)4096)
#define USER_TOP ((uintptr_t)0x7ffffffff000ull)
#define RUN 64 /* clustered lookups: runs of 64 neighbouring resident pages */

static int g_runs = 5;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 2685821657736338717ull;
}

static int cmp_u(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void shuffle(uintptr_t *a, size_t n)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)(rnd() % (i + 1));
		uintptr_t t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	return p;
}

/* ---- layouts ---------------------------------------------------------- */

/* Sorted unique page addresses.  n is exact. */
static size_t sort_unique(uintptr_t *a, size_t n)
{
	qsort(a, n, sizeof(*a), cmp_u);
	size_t w = 0;
	for (size_t i = 0; i < n; i++)
		if (!w || a[w - 1] != a[i])
			a[w++] = a[i];
	return w;
}

static void fill_sparse(uintptr_t *a, size_t from, size_t n)
{
	for (size_t i = from; i < n; i++)
		a[i] = (uintptr_t)(rnd() & USER_TOP);
}

/* a run of `len` pages from base going up, with a 1..4 page hole every
 * ~2000 pages (guard pages, unmapped bits) */
static size_t add_run(uintptr_t *a, size_t k, size_t max, uintptr_t base, size_t len)
{
	uintptr_t p = base;
	for (size_t i = 0; i < len && k < max; i++) {
		a[k++] = p;
		p += PG;
		if (rnd() % 2000 == 0)
			p += (1 + rnd() % 4) * PG;
	}
	return k;
}

static uintptr_t *make_realistic(size_t n)
{
	uintptr_t *a = xmalloc(n * sizeof(*a));
	size_t k = 0;
	k = add_run(a, k, n, 0x555555554000ull, n / 1000 + 1); /* image */
	k = add_run(a, k, n, 0x555555600000ull, n * 35 / 100); /* heap */
	static const unsigned pct10[] = {200, 150, 100, 60, 40, 20, 10, 5};
	uintptr_t top = 0x7ffff7fff000ull;
	for (int i = 0; i < 8; i++) { /* mmaps, downwards from below the stack */
		size_t len = n * pct10[i] / 1000;
		top -= (len + 16 + rnd() % 256) * PG;
		k = add_run(a, k, n, top, len);
	}
	k = add_run(a, k, n, 0x7ffffffde000ull - 2048 * PG, n / 500); /* stack */
	size_t have;
	do { /* the rest: sparse pages */
		fill_sparse(a, k, n);
		have = sort_unique(a, n);
		k = have;
	} while (have < n);
	return a;
}

static uintptr_t *make_sparse(size_t n)
{
	uintptr_t *a = xmalloc(n * sizeof(*a));
	size_t k = 0;
	do {
		fill_sparse(a, k, n);
		k = sort_unique(a, n);
	} while (k < n);
	return a;
}

/* ---- baseline: a generic hash map ------------------------------------- */

typedef struct {
	uintptr_t *keys; /* 1 = empty (never a page address) */
	void **recs;
	size_t cap, count;
} gmap;

#define GEMPTY ((uintptr_t)1)

static inline uint64_t fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	k ^= k >> 33;
	return k;
}

static void gmap_init(gmap *m, size_t expect)
{
	size_t cap = 16;
	while (cap * 3 / 4 < expect)
		cap *= 2;
	m->cap = cap;
	m->count = 0;
	m->keys = xmalloc(cap * sizeof(uintptr_t));
	m->recs = xmalloc(cap * sizeof(void *));
	for (size_t i = 0; i < cap; i++)
		m->keys[i] = GEMPTY;
}

static void gmap_free(gmap *m)
{
	free(m->keys);
	free(m->recs);
}

__attribute__((noinline)) static int gmap_insert(gmap *m, uintptr_t k, void *r);

static void gmap_grow(gmap *m)
{
	gmap o = *m;
	gmap_init(m, o.cap); /* doubles: cap*3/4 < cap */
	for (size_t i = 0; i < o.cap; i++)
		if (o.keys[i] != GEMPTY)
			gmap_insert(m, o.keys[i], o.recs[i]);
	gmap_free(&o);
}

__attribute__((noinline)) static int gmap_insert(gmap *m, uintptr_t k, void *r)
{
	if ((m->count + 1) * 4 > m->cap * 3)
		gmap_grow(m);
	size_t mask = m->cap - 1, i = (size_t)fmix64(k) & mask;
	while (m->keys[i] != GEMPTY) {
		if (m->keys[i] == k)
			return -EEXIST;
		i = (i + 1) & mask;
	}
	m->keys[i] = k;
	m->recs[i] = r;
	m->count++;
	return 0;
}

__attribute__((noinline)) static void *gmap_lookup(const gmap *m, uintptr_t k)
{
	size_t mask = m->cap - 1, i = (size_t)fmix64(k) & mask;
	for (;;) {
		uintptr_t x = m->keys[i];
		if (x == k)
			return m->recs[i];
		if (x == GEMPTY)
			return NULL;
		i = (i + 1) & mask;
	}
}

__attribute__((noinline)) static int gmap_remove(gmap *m, uintptr_t k)
{
	size_t mask = m->cap - 1, i = (size_t)fmix64(k) & mask;
	while (m->keys[i] != k) {
		if (m->keys[i] == GEMPTY)
			return -ENOENT;
		i = (i + 1) & mask;
	}
	/* Knuth's algorithm R: backward shift */
	size_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (m->keys[j] == GEMPTY)
			break;
		size_t h = (size_t)fmix64(m->keys[j]) & mask;
		if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
			m->keys[i] = m->keys[j];
			m->recs[i] = m->recs[j];
			i = j;
		}
	}
	m->keys[i] = GEMPTY;
	m->count--;
	return 0;
}

static size_t gmap_bytes(const gmap *m)
{
	return m->cap * (sizeof(uintptr_t) + sizeof(void *)) + sizeof(*m);
}

/* ---- the seed's vm_map model ------------------------------------------ */

#define SEED_BUCKETS (1u << 20)
#define SEED_SLOTS 8

typedef struct {
	struct {
		uintptr_t key;
		void *rec;
	} slot[SEED_SLOTS];
	unsigned used, next;
} seed_bucket;

static seed_bucket *seed_create(void)
{
	seed_bucket *b = calloc(SEED_BUCKETS, sizeof(*b));
	if (!b) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	return b;
}

static void seed_insert(seed_bucket *t, uintptr_t addr, void *rec)
{
	seed_bucket *b = &t[addr % SEED_BUCKETS];
	unsigned s;
	if (b->used < SEED_SLOTS)
		s = b->used++;
	else
		s = b->next++ % SEED_SLOTS; /* full: overwrite, the old one is lost */
	b->slot[s].key = addr;
	b->slot[s].rec = rec;
}

static void *seed_lookup(const seed_bucket *t, uintptr_t addr)
{
	const seed_bucket *b = &t[addr % SEED_BUCKETS];
	for (unsigned s = 0; s < b->used; s++)
		if (b->slot[s].key == addr)
			return b->slot[s].rec;
	return NULL;
}

/* ---- output ------------------------------------------------------------ */

static void row(const char *table, const char *metric, const char *layout,
		size_t pages, size_t inserted, size_t found, double bpp,
		double value, const char *unit, const char *target, double baseline)
{
	printf("%s,%s,%s,%zu,%zu,%zu,%zu,%.2f,", table, metric, layout, pages,
	       inserted, found, inserted - found, bpp);
	if (value >= 100)
		printf("%.0f", value);
	else
		printf("%.3g", value);
	printf(",%s,%s,", unit, target);
	if (baseline == baseline) { /* not NaN */
		if (baseline >= 100)
			printf("%.0f", baseline);
		else
			printf("%.3g", baseline);
	}
	printf("\n");
	fflush(stdout);
}

/* ---- measurements ------------------------------------------------------ */

static int die(const char *what, int err)
{
	fprintf(stderr, "bench_pagetab: %s: %d\n", what, err);
	exit(1);
}

static volatile uintptr_t sink;

static int count_cb(uintptr_t a, void *r, void *arg)
{
	(void)a;
	(void)r;
	(*(size_t *)arg)++;
	return 0;
}


static int remove_cb(uintptr_t a, void *r, void *arg)
{
	(void)a;
	(void)r;
	(*(size_t *)arg)++;
	return MMK_PAGETAB_REMOVE;
}


/* Insert keys[0..n) into a new table; Mops/s.  Leaves the table in *out
 * (or destroys it if out is NULL). */
static double time_inserts(const uintptr_t *keys, size_t n, size_t expect,
			   void *rec, mmk_pagetab **out)
{
	mmk_pagetab *pt;
	int e;
	if ((e = mmk_pagetab_create(&pt, expect)))
		die("create", e);
	double t0 = now();
	for (size_t i = 0; i < n; i++)
		if ((e = mmk_pagetab_insert(pt, keys[i], rec)))
			die("insert", e);
	double mops = (double)n / (now() - t0) / 1e6;
	if (out)
		*out = pt;
	else
		mmk_pagetab_destroy(pt);
	return mops;
}

static double time_gmap_inserts(const uintptr_t *keys, size_t n, size_t expect,
				void *rec, gmap *out)
{
	gmap gm;
	gmap_init(&gm, expect);
	double t0 = now();
	for (size_t i = 0; i < n; i++)
		gmap_insert(&gm, keys[i], rec);
	double mops = (double)n / (now() - t0) / 1e6;
	if (out)
		*out = gm;
	else
		gmap_free(&gm);
	return mops;
}

static double time_lookups(const mmk_pagetab *pt, const uintptr_t *q, size_t nq,
			   uintptr_t expect_sum)
{
	uintptr_t acc = 0;
	double t0 = now();
	for (size_t i = 0; i < nq; i++)
		acc += (uintptr_t)mmk_pagetab_lookup(pt, q[i]);
	double mops = (double)nq / (now() - t0) / 1e6;
	sink = acc;
	if (acc != expect_sum)
		die("lookup results", -1);
	return mops;
}

static double time_gmap_lookups(const gmap *gm, const uintptr_t *q, size_t nq)
{
	uintptr_t acc = 0;
	double t0 = now();
	for (size_t i = 0; i < nq; i++)
		acc += (uintptr_t)gmap_lookup(gm, q[i]);
	double mops = (double)nq / (now() - t0) / 1e6;
	sink = acc;
	return mops;
}

enum {
	M_CLU, M_RND, M_MISS, M_INS_R0, M_INS_RR, M_INS_A0, M_INS_AR, M_REM,
	M_MARK, M_FD, M_FDREM, M_CLR, M_FULL, M_FD_SMALL, M_CHURN, M_N
};

static void bench_layout(const char *lname, size_t n, const uintptr_t *sorted,
			 size_t nq)
{
	int R = g_runs;
	double t[M_N][16], g[M_N][16];
	double worst_bpp = 0, final_bpp = 0, g_bpp = 0, res_bpp = 0;
	static char recbuf[1];
	void *rec = recbuf;
	memset(g, 0, sizeof(g));

	uintptr_t *order = xmalloc(n * sizeof(uintptr_t)); /* random order */
	memcpy(order, sorted, n * sizeof(uintptr_t));
	shuffle(order, n);

	/* queries: resident pages at random; runs of RUN neighbouring
	 * resident pages from random positions; absent pages near resident
	 * ones */
	uintptr_t *q_rnd = xmalloc(nq * sizeof(uintptr_t));
	uintptr_t *q_clu = xmalloc(nq * sizeof(uintptr_t));
	uintptr_t *q_miss = xmalloc(nq * sizeof(uintptr_t));
	for (size_t i = 0; i < nq; i++)
		q_rnd[i] = sorted[rnd() % n];
	for (size_t i = 0; i < nq; i += RUN) {
		size_t st = (size_t)(rnd() % (n - RUN));
		for (size_t j = 0; j < RUN && i + j < nq; j++)
			q_clu[i + j] = sorted[st + j];
	}
	/* absent pages: half just past the end of a run of resident pages,
	 * half anywhere in the user address space */
	size_t ngap = 0;
	for (size_t i = 0; i < n; i++)
		if (i + 1 == n || sorted[i + 1] != sorted[i] + PG)
			q_miss[ngap++ % nq] = sorted[i] + PG;
	if (ngap > nq)
		ngap = nq;
	uintptr_t *gaps = xmalloc(ngap * sizeof(uintptr_t));
	memcpy(gaps, q_miss, ngap * sizeof(uintptr_t));
	for (size_t i = 0; i < nq; i++) {
		uintptr_t a;
		if (i & 1) {
			a = gaps[rnd() % ngap];
		} else {
			do
				a = (uintptr_t)(rnd() & USER_TOP);
			while (bsearch(&a, sorted, n, sizeof(a), cmp_u));
		}
		q_miss[i] = a;
	}
	free(gaps);
	size_t ndirty = n / 100, nsmall = n / 10000 ? n / 10000 : 1;
	uintptr_t hit_sum = (uintptr_t)rec * nq;

	for (int r = 0; r < R; r++) {
		mmk_pagetab *pt;
		int e;
		t[M_INS_A0][r] = time_inserts(sorted, n, 0, rec, NULL);
		t[M_INS_AR][r] = time_inserts(sorted, n, n, rec, NULL);
		t[M_INS_R0][r] = time_inserts(order, n, 0, rec, NULL);
		t[M_INS_RR][r] = time_inserts(order, n, n, rec, &pt);
		res_bpp = (double)mmk_pagetab_bytes(pt) / (double)n;

		t[M_RND][r] = time_lookups(pt, q_rnd, nq, hit_sum);
		t[M_CLU][r] = time_lookups(pt, q_clu, nq, hit_sum);
		t[M_MISS][r] = time_lookups(pt, q_miss, nq, 0);

		/* dirty set: mark 1% (random pages), walk, walk removing,
		 * clear all */
		const uintptr_t *dk = order;
		double t0 = now();
		for (size_t i = 0; i < ndirty; i++)
			mmk_pagetab_mark_dirty(pt, dk[i]);
		t[M_MARK][r] = (double)ndirty / (now() - t0) / 1e6;
		size_t cnt = 0;
		t0 = now();
		mmk_pagetab_foreach_dirty(pt, count_cb, &cnt);
		t[M_FD][r] = (now() - t0) * 1e6;
		if (cnt != ndirty)
			die("foreach_dirty count", (int)cnt);
		/* baseline: a walk of every entry, which is what finding the
		 * dirty pages costs without an index (a lower bound: the
		 * callback does nothing) */
		cnt = 0;
		t0 = now();
		mmk_pagetab_foreach(pt, count_cb, &cnt);
		t[M_FULL][r] = (now() - t0) * 1e6;
		if (cnt != n)
			die("full walk count", (int)cnt);
		t0 = now();
		mmk_pagetab_clear_all_dirty(pt);
		t[M_CLR][r] = (now() - t0) * 1e6;
		for (size_t i = 0; i < ndirty; i++)
			mmk_pagetab_mark_dirty(pt, dk[i]);
		cnt = 0;
		t0 = now();
		mmk_pagetab_foreach_dirty(pt, remove_cb, &cnt);
		t[M_FDREM][r] = (now() - t0) * 1e6;
		if (cnt != ndirty || mmk_pagetab_count(pt) != n - ndirty)
			die("foreach_dirty remove", (int)cnt);
		for (size_t i = 0; i < ndirty; i++)
			if ((e = mmk_pagetab_insert(pt, dk[i], rec)))
				die("re-insert", e);
		/* a small dirty set: 0.01% */
		for (size_t i = 0; i < nsmall; i++)
			mmk_pagetab_mark_dirty(pt, dk[i]);
		cnt = 0;
		t0 = now();
		mmk_pagetab_foreach_dirty(pt, count_cb, &cnt);
		t[M_FD_SMALL][r] = (now() - t0) * 1e6;
		if (cnt != nsmall)
			die("foreach_dirty small count", (int)cnt);
		mmk_pagetab_clear_all_dirty(pt);

		/* churn at ~n resident pages: remove a random resident page,
		 * insert a random absent one (n/16 pages stay out), 2n ops */
		size_t W = n / 16 ? n / 16 : 1;
		for (size_t i = 0; i < W; i++)
			mmk_pagetab_remove(pt, order[i], NULL);
		t0 = now();
		for (size_t i = 0; i < n; i++) {
			if ((e = mmk_pagetab_remove(pt, order[(i + W) % n], NULL)))
				die("churn remove", e);
			if ((e = mmk_pagetab_insert(pt, order[i], rec)))
				die("churn insert", e);
		}
		t[M_CHURN][r] = 2.0 * (double)n / (now() - t0) / 1e6;
		for (size_t i = 0; i < W; i++)
			if ((e = mmk_pagetab_insert(pt, order[(n + i) % n], rec)))
				die("churn refill", e);
		if (mmk_pagetab_count(pt) != n)
			die("churn count", (int)mmk_pagetab_count(pt));

		/* removes, in another random order */
		t0 = now();
		for (size_t i = 0; i < n; i++)
			if ((e = mmk_pagetab_remove(pt, order[n - 1 - i], NULL)))
				die("remove", e);
		t[M_REM][r] = (double)n / (now() - t0) / 1e6;
		mmk_pagetab_destroy(pt);

		/* baseline */
		gmap gm;
		g[M_INS_A0][r] = time_gmap_inserts(sorted, n, 0, rec, NULL);
		g[M_INS_AR][r] = time_gmap_inserts(sorted, n, n, rec, NULL);
		g[M_INS_R0][r] = time_gmap_inserts(order, n, 0, rec, NULL);
		g[M_INS_RR][r] = time_gmap_inserts(order, n, n, rec, &gm);
		g_bpp = (double)gmap_bytes(&gm) / (double)n;
		g[M_RND][r] = time_gmap_lookups(&gm, q_rnd, nq);
		g[M_CLU][r] = time_gmap_lookups(&gm, q_clu, nq);
		g[M_MISS][r] = time_gmap_lookups(&gm, q_miss, nq);
		for (size_t i = 0; i < W; i++)
			gmap_remove(&gm, order[i]);
		t0 = now();
		for (size_t i = 0; i < n; i++) {
			gmap_remove(&gm, order[(i + W) % n]);
			gmap_insert(&gm, order[i], rec);
		}
		g[M_CHURN][r] = 2.0 * (double)n / (now() - t0) / 1e6;
		for (size_t i = 0; i < W; i++)
			gmap_insert(&gm, order[i], rec);
		t0 = now();
		for (size_t i = 0; i < n; i++)
			gmap_remove(&gm, order[n - 1 - i]);
		g[M_REM][r] = (double)n / (now() - t0) / 1e6;
		if (gm.count)
			die("baseline remove", (int)gm.count);
		gmap_free(&gm);
	}

	/* memory at every fill level, growing from empty; and all findable */
	size_t found;
	{
		mmk_pagetab *pt;
		mmk_pagetab_create(&pt, 0);
		size_t last = 0;
		for (size_t i = 0; i < n; i++) {
			mmk_pagetab_insert(pt, order[i], rec);
			size_t b = mmk_pagetab_bytes(pt);
			if (i + 1 >= 4096 && b != last) { /* just grew */
				double bpp = (double)b / (double)(i + 1);
				if (bpp > worst_bpp)
					worst_bpp = bpp;
			}
			last = b;
		}
		final_bpp = (double)mmk_pagetab_bytes(pt) / (double)n;
		found = 0;
		for (size_t i = 0; i < n; i++)
			found += mmk_pagetab_lookup(pt, sorted[i]) == rec;
		mmk_pagetab_stats st;
		mmk_pagetab_stats_get(pt, &st);
		printf("# %s with %zu pages: %zu slots (load %.3f); mean probe displacement %.2f; max %zu\n",
		       lname, st.count, st.slots, (double)st.count / (double)st.slots,
		       st.mean_disp, st.max_disp);
		mmk_pagetab_destroy(pt);
	}

	const char *T = "mmk_pagetab";
	double nan = 0.0 / 0.0;
#define ROW(metric, m, unit, target) \
	row(T, metric, lname, n, n, found, final_bpp, median(t[m], R), unit, target, \
	    g[m][0] ? median(g[m], R) : nan)
	ROW("lookup_clustered", M_CLU, "Mops/s", ">=50");
	ROW("lookup_random", M_RND, "Mops/s", ">=15");
	ROW("lookup_absent", M_MISS, "Mops/s", "");
	ROW("insert_random_order_expected0", M_INS_R0, "Mops/s", ">=20");
	ROW("insert_random_order_reserved", M_INS_RR, "Mops/s", ">=20");
	ROW("insert_address_order_expected0", M_INS_A0, "Mops/s", ">=20");
	ROW("insert_address_order_reserved", M_INS_AR, "Mops/s", ">=20");
	ROW("remove_random_order", M_REM, "Mops/s", ">=20");
	ROW("insert_remove_churn_at_n", M_CHURN, "Mops/s", ">=20");
	row(T, "bytes_per_page_max", lname, n, n, found, final_bpp, worst_bpp, "B/page", "<=24", g_bpp);
	row(T, "bytes_per_page_final", lname, n, n, found, final_bpp, final_bpp, "B/page", "<=24", g_bpp);
	row(T, "bytes_per_page_reserved", lname, n, n, found, final_bpp, res_bpp, "B/page", "<=24", g_bpp);
	ROW("mark_dirty_1pct", M_MARK, "Mops/s", "");
	row(T, "foreach_dirty_1pct", lname, n, n, found, final_bpp, median(t[M_FD], R), "us", "", median(t[M_FULL], R));
	row(T, "foreach_dirty_1pct_per_page", lname, n, n, found, final_bpp,
	    median(t[M_FD], R) * 1e3 / (double)ndirty, "ns/dirty page", "",
	    median(t[M_FULL], R) * 1e3 / (double)ndirty);
	row(T, "foreach_dirty_0.01pct", lname, n, n, found, final_bpp, median(t[M_FD_SMALL], R), "us", "", median(t[M_FULL], R));
	row(T, "foreach_dirty_remove_1pct", lname, n, n, found, final_bpp, median(t[M_FDREM], R), "us", "", nan);
	row(T, "clear_all_dirty_1pct", lname, n, n, found, final_bpp, median(t[M_CLR], R), "us", "", median(t[M_FULL], R));
#undef ROW

	free(order);
	free(q_rnd);
	free(q_clu);
	free(q_miss);
}

static void seed_compare(const uintptr_t *realistic, size_t navail)
{
	static const size_t sizes[] = {4096, 65536, 1048576};
	char recbuf[1];
	for (size_t s = 0; s < 3; s++) {
		size_t n = sizes[s];
		if (n > navail)
			n = navail;
		/* n pages of the realistic layout: the first n of a random order */
		uintptr_t *k = xmalloc(n * sizeof(uintptr_t));
		uintptr_t *all = xmalloc(navail * sizeof(uintptr_t));
		memcpy(all, realistic, navail * sizeof(uintptr_t));
		shuffle(all, navail);
		memcpy(k, all, n * sizeof(uintptr_t));
		free(all);

		seed_bucket *sb = seed_create();
		for (size_t i = 0; i < n; i++)
			seed_insert(sb, k[i], recbuf + 0);
		size_t sf = 0;
		for (size_t i = 0; i < n; i++)
			sf += seed_lookup(sb, k[i]) == recbuf;
		free(sb);
		double sbytes = (double)SEED_BUCKETS * sizeof(seed_bucket);

		mmk_pagetab *pt;
		int e = mmk_pagetab_create(&pt, 0);
		if (e)
			die("create", e);
		for (size_t i = 0; i < n; i++)
			if ((e = mmk_pagetab_insert(pt, k[i], recbuf)))
				die("insert", e);
		size_t mf = 0;
		for (size_t i = 0; i < n; i++)
			mf += mmk_pagetab_lookup(pt, k[i]) == recbuf;
		double mbpp = (double)mmk_pagetab_bytes(pt) / (double)n;
		mmk_pagetab_destroy(pt);

		double nan = 0.0 / 0.0;
		row("seed_vm_map", "found_after_insert", "realistic", n, n, sf,
		    sbytes / (double)n, (double)sf, "pages", "", nan);
		row("mmk_pagetab", "found_after_insert", "realistic", n, n, mf,
		    mbpp, (double)mf, "pages", "all", nan);
		if (mf != n)
			die("mmk_pagetab lost entries", (int)(n - mf));
		free(k);
	}
}

int main(int argc, char **argv)
{
	size_t pages = 1u << 20;
	size_t nq = 1u << 20; /* lookups per measurement */
	int full = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			pages = 1u << 18;
			nq = 1u << 18;
			g_runs = 3;
		} else if (!strcmp(argv[i], "--full")) {
			full = 1;
			g_runs = 7;
		} else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
			g_runs = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--pages") && i + 1 < argc) {
			pages = (size_t)strtoull(argv[++i], NULL, 0);
		} else {
			fprintf(stderr, "usage: %s [--quick|--full] [--runs N] [--pages N]\n", argv[0]);
			return 2;
		}
	}
	if (g_runs < 1)
		g_runs = 1;
	if (g_runs > 16)
		g_runs = 16;
	if (pages < 4 * RUN)
		pages = 4 * RUN;

	printf("table,metric,layout,pages,inserted,found,lost,bytes_per_page,value,unit,target,baseline\n");
	printf("# single thread; median of %d runs; baseline = generic linear-probing map "
	       "(fmix64 hash; 2^k slots; <=75%% load; not inlined) or for dirty walks a plain foreach over all entries\n",
	       g_runs);

	size_t grid_full[] = {1u << 16, 1u << 18, 1u << 20, 1u << 22};
	size_t *grid = full ? grid_full : &pages;
	size_t ng = full ? 4 : 1;
	uintptr_t *seedkeys = NULL;
	size_t nseed = 0;
	for (size_t g = 0; g < ng; g++) {
		size_t n = grid[g];
		uintptr_t *real = make_realistic(n);
		bench_layout("realistic", n, real, nq);
		uintptr_t *sp = make_sparse(n);
		bench_layout("sparse", n, sp, nq);
		free(sp);
		if (n >= nseed) {
			free(seedkeys);
			seedkeys = real;
			nseed = n;
		} else {
			free(real);
		}
	}
	if (nseed < (1u << 20)) { /* the seed comparison wants 1 Mi pages */
		free(seedkeys);
		nseed = 1u << 20;
		seedkeys = make_realistic(nseed);
	}
	seed_compare(seedkeys, nseed);
	free(seedkeys);
	return 0;
}
