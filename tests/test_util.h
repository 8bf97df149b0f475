/*
 * tests/test_util.h - helpers shared by the cmocka tests.
 *
 * MMK_TEST_SCALE (float, default 1) scales randomized test lengths, e.g.
 * 0.1 under QEMU; assertions never change with it.  MMK_TEST_SEED fixes the
 * random seed (printed at start so a failure can be replayed).
 */
#ifndef MMK_TEST_UTIL_H
#define MMK_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cmocka.h>

static inline double mmk_test_scale(void)
{
	const char *s = getenv("MMK_TEST_SCALE");
	double v = s ? atof(s) : 1.0;
	return v > 0 ? v : 1.0;
}

/* n scaled, at least min */
static inline size_t mmk_test_n(size_t n, size_t min)
{
	double v = (double)n * mmk_test_scale();
	return v < (double)min ? min : (size_t)v;
}

static inline uint64_t mmk_test_seed(void)
{
	static uint64_t seed;
	if (!seed) {
		const char *s = getenv("MMK_TEST_SEED");
		seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
		if (!seed)
			seed = 1;
		fprintf(stderr, "# MMK_TEST_SEED=%llu\n", (unsigned long long)seed);
	}
	return seed;
}

/* xorshift64* */
static inline uint64_t mmk_test_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* Skip with a reason printed (cmocka's skip() prints no reason). */
#define MMK_SKIP(...)                                      \
	do {                                               \
		fprintf(stderr, "# SKIP: " __VA_ARGS__);    \
		fprintf(stderr, "\n");                     \
		skip();                                    \
	} while (0)

#endif
