/*
 * tests/test_sys.c - the Linux primitives layer: probe, userfaultfd,
 * PAGEMAP_SCAN (including partial results), address-space enumeration.
 */
#include "test_util.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mmkit.h>
#include "sys/sys.h"

static void test_probe_consistent(void **state)
{
	(void)state;
	const mmk_features *a = mmk_features_get(), *b = mmk_features_get();
	assert_ptr_equal(a, b);
	assert_true(a->kernel_major >= 3);
	assert_int_equal(a->page_size, 4096);
	/* Internal consistency: a sub-feature implies its parent. */
	if (a->uffd_wp_async)
		assert_true(a->uffd_wp);
	if (a->uffd_wp)
		assert_true(a->uffd);
	mmk_feature_line l;
	size_t n = 0;
	while (mmk_features_line(n, &l)) {
		assert_non_null(l.name);
		assert_non_null(l.enables);
		assert_non_null(l.fallback);
		n++;
	}
	assert_true(n >= 14);
}

/* The probe must agree with a direct attempt at each mechanism. */
static void test_probe_matches_reality(void **state)
{
	(void)state;
	const mmk_features *f = mmk_features_get();
	mmk__uffd u;
	int rc = mmk__uffd_open(&u, 0, 0);
	assert_int_equal(rc == 0, f->uffd);
	if (rc == 0)
		mmk__uffd_close(&u);
	if (f->uffd) {
		rc = mmk__uffd_open(&u, UFFD_FEATURE_WP_ASYNC, 0);
		assert_int_equal(rc == 0, f->uffd_wp_async);
		if (rc == 0)
			mmk__uffd_close(&u);
	}
}

static void *map_pages(size_t n)
{
	void *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

struct collect {
	size_t n;
	uintptr_t base;
	unsigned char *seen; /* per page */
	size_t calls;
};

static int collect_fn(uintptr_t s, uintptr_t e, void *arg)
{
	struct collect *c = arg;
	c->calls++;
	for (uintptr_t a = s; a < e; a += 4096) {
		size_t i = (a - c->base) / 4096;
		assert_true(i < c->n);
		c->seen[i]++;
	}
	return 0;
}

/* Async WP + PAGEMAP_SCAN: exactly the written pages are reported, even
 * when they form more regions than one ioctl's vector holds (1000 separate
 * regions > 256), and re-protection resets them. */
static void test_scan_written_partial(void **state)
{
	(void)state;
	const mmk_features *f = mmk_features_get();
	if (!f->uffd_wp_async || !f->pagemap_scan)
		MMK_SKIP("kernel lacks WP_ASYNC or PAGEMAP_SCAN (needs 6.7+)");
	const size_t n = 3000;
	char *p = map_pages(n);
	mmk__uffd u;
	assert_int_equal(mmk__uffd_open(&u, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, 0), 0);
	assert_int_equal(mmk__uffd_register(&u, (uintptr_t)p, n * 4096, UFFDIO_REGISTER_MODE_WP), 0);
	assert_int_equal(mmk__uffd_wp(&u, (uintptr_t)p, n * 4096, true), 0);

	uint64_t seed = mmk_test_seed();
	unsigned char *want = calloc(n, 1);
	for (int round = 0; round < 5; round++) {
		memset(want, 0, n);
		/* every third page (1000 regions) plus random others */
		for (size_t i = 0; i < n; i += 3)
			want[i] = 1;
		for (int k = 0; k < 200; k++)
			want[mmk_test_rand(&seed) % n] = 1;
		size_t nw = 0;
		for (size_t i = 0; i < n; i++)
			if (want[i]) {
				p[i * 4096 + round] = 1;
				nw++;
			}
		struct collect c = { .n = n, .base = (uintptr_t)p, .seen = calloc(n, 1) };
		long got = mmk__pagemap_scan_written((uintptr_t)p, (uintptr_t)p + n * 4096, true,
						     collect_fn, &c);
		assert_int_equal(got, (long)nw);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(c.seen[i], want[i]);
		/* re-protected: a second scan finds nothing */
		got = mmk__pagemap_scan_written((uintptr_t)p, (uintptr_t)p + n * 4096, false, NULL, NULL);
		assert_int_equal(got, 0);
		free(c.seen);
	}
	free(want);
	mmk__uffd_close(&u);
	munmap(p, n * 4096);
}

/* The trap: PAGE_IS_PRESENT is not PAGE_IS_WRITTEN.  Populated but
 * unwritten (after protect) pages must not be reported. */
static void test_scan_present_not_written(void **state)
{
	(void)state;
	const mmk_features *f = mmk_features_get();
	if (!f->uffd_wp_async || !f->pagemap_scan)
		MMK_SKIP("kernel lacks WP_ASYNC or PAGEMAP_SCAN (needs 6.7+)");
	const size_t n = 64;
	char *p = map_pages(n);
	memset(p, 1, n * 4096); /* all present */
	mmk__uffd u;
	assert_int_equal(mmk__uffd_open(&u, UFFD_FEATURE_WP_ASYNC, 0), 0);
	assert_int_equal(mmk__uffd_register(&u, (uintptr_t)p, n * 4096, UFFDIO_REGISTER_MODE_WP), 0);
	assert_int_equal(mmk__uffd_wp(&u, (uintptr_t)p, n * 4096, true), 0);
	assert_int_equal(mmk__pagemap_scan_written((uintptr_t)p, (uintptr_t)p + n * 4096, false, NULL, NULL), 0);
	p[5 * 4096] = 2;
	assert_int_equal(mmk__pagemap_scan_written((uintptr_t)p, (uintptr_t)p + n * 4096, false, NULL, NULL), 1);
	mmk__uffd_close(&u);
	munmap(p, n * 4096);
}

static void test_uffd_register_errors(void **state)
{
	(void)state;
	if (!mmk_features_get()->uffd)
		MMK_SKIP("no userfaultfd for this process");
	mmk__uffd u;
	assert_int_equal(mmk__uffd_open(&u, 0, 0), 0);
	/* unaligned range */
	assert_true(mmk__uffd_register(&u, 4095, 4096, UFFDIO_REGISTER_MODE_MISSING) < 0);
	mmk__uffd_close(&u);
	/* a feature bit the kernel has never had */
	assert_int_equal(mmk__uffd_open(&u, 1ULL << 62, 0), -EOPNOTSUPP);
}

static int find(const mmk__maplist *ml, uintptr_t a)
{
	for (size_t i = 0; i < ml->n; i++)
		if (a >= ml->v[i].start && a < ml->v[i].end)
			return (int)i;
	return -1;
}

static int some_data = 42; /* .data of this program */

static void test_maps_classify_and_agree(void **state)
{
	(void)state;
	char *anon = map_pages(4);
	void *heap = malloc(100);
	mmk__maplist a = { 0 }, b = { 0 };
	assert_int_equal(mmk__maps_read(&a, MMK__MAPS_PROCFS), 0);
	assert_true(a.n > 5);
	for (size_t i = 1; i < a.n; i++)
		assert_true(a.v[i].start >= a.v[i - 1].end);
	int i = find(&a, (uintptr_t)anon);
	assert_true(i >= 0);
	assert_true(mmk__map_is_snapshot_candidate(&a.v[i]));
	i = find(&a, (uintptr_t)&some_data);
	assert_true(i >= 0);
	assert_true(a.v[i].flags & MMK__MAP_FILE);
	assert_true(mmk__map_is_snapshot_candidate(&a.v[i]));
	int local;
	i = find(&a, (uintptr_t)&local);
	assert_true(i >= 0);
	assert_true(a.v[i].flags & MMK__MAP_STACK);
	assert_false(mmk__map_is_snapshot_candidate(&a.v[i]));
	void *self = mmk__self_alloc(8192);
	assert_non_null(self);
	mmk__maplist c = { 0 };
	assert_int_equal(mmk__maps_read(&c, MMK__MAPS_PROCFS), 0);
	i = find(&c, (uintptr_t)self);
	assert_true(i >= 0);
	assert_true(c.v[i].flags & MMK__MAP_SELF);
	assert_false(mmk__map_is_snapshot_candidate(&c.v[i]));
	mmk__self_free(self, 8192);

	if (mmk_features_get()->procmap_query) {
		assert_int_equal(mmk__maps_read(&b, MMK__MAPS_QUERY), 0);
		/* Both sources see the same mappings, classified the same (the
		 * lists were read at different instants: compare the anon map
		 * and the program's data, which did not change). */
		int ia = find(&a, (uintptr_t)anon), ib = find(&b, (uintptr_t)anon);
		assert_true(ib >= 0);
		assert_int_equal(a.v[ia].start, b.v[ib].start);
		assert_int_equal(a.v[ia].end, b.v[ib].end);
		assert_int_equal(a.v[ia].flags, b.v[ib].flags);
		ia = find(&a, (uintptr_t)&some_data);
		ib = find(&b, (uintptr_t)&some_data);
		assert_int_equal(a.v[ia].flags, b.v[ib].flags);
		assert_string_equal(a.v[ia].name, b.v[ib].name);
		mmk__map m;
		assert_int_equal(mmk__maps_find((uintptr_t)anon + 100, &m), 0);
		assert_int_equal(m.start, a.v[find(&a, (uintptr_t)anon)].start);
	} else {
		assert_int_equal(mmk__maps_read(&b, MMK__MAPS_QUERY), -EOPNOTSUPP);
	}
	assert_int_equal(mmk__maps_find(~(uintptr_t)0 - 4096, &(mmk__map){ 0 }), -ENOENT);
	mmk__maplist_free(&a);
	mmk__maplist_free(&b);
	mmk__maplist_free(&c);
	free(heap);
	munmap(anon, 4 * 4096);
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(mmk_strerror(0), "success");
	assert_string_equal(mmk_strerror(-EINVAL), "Invalid argument");
	assert_non_null(strstr(mmk_strerror(MMK_ECRASHED), "crashed"));
	assert_string_equal(mmk_strerror(12345), "unknown error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probe_consistent),
		cmocka_unit_test(test_probe_matches_reality),
		cmocka_unit_test(test_scan_written_partial),
		cmocka_unit_test(test_scan_present_not_written),
		cmocka_unit_test(test_uffd_register_errors),
		cmocka_unit_test(test_maps_classify_and_agree),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
