/*
 * bench/bench_util.h - small helpers shared by the benchmarks: a monotonic
 * clock, medians, the run mode (--quick / default / --full) and a progress
 * line on stderr when it is a terminal.
 */
#ifndef MMK_BENCH_UTIL_H
#define MMK_BENCH_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef enum { BENCH_QUICK, BENCH_DEFAULT, BENCH_FULL } bench_mode;

/* xorshift64: the benchmarks' fixed-seed pseudo-random sequence (the same
 * inputs on every run) */
static uint64_t bench_rng = 88172645463325252ULL;
static inline uint64_t rnd(void)
{
	bench_rng ^= bench_rng << 13;
	bench_rng ^= bench_rng >> 7;
	bench_rng ^= bench_rng << 17;
	return bench_rng;
}

static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* median of v[0..n) (sorts v) */
static inline double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline bench_mode bench_parse_mode(int argc, char **argv)
{
	bench_mode m = BENCH_DEFAULT;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			m = BENCH_QUICK;
		else if (!strcmp(argv[i], "--full"))
			m = BENCH_FULL;
		else {
			fprintf(stderr, "usage: %s [--quick|--full]\n", argv[0]);
			exit(2);
		}
	}
	return m;
}

/* "\r<text>" on a terminal, nothing otherwise */
static inline void bench_progress(const char *fmt, ...)
{
	if (!isatty(2))
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "\r\033[K");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

#endif
