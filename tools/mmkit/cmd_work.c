/*
 * tools/mmkit/cmd_work.c - `mmkit work MB R|L ACCESSES [options]`: the
 * synthetic workload of the profiler's case studies (seed 002's work.c).
 *
 * It maps MB of anonymous memory (THP disabled with MADV_NOHUGEPAGE, so one
 * first touch = one 4 KiB minor fault, as on the original's kernel), then for
 * N iterations (default 20) performs ACCESSES single-byte WRITES and sleeps
 * until the iteration's period (default 1 s, absolute schedule) has passed.
 * Every access really touches memory (the original's locality mode did not).
 *
 * Access models (page p chosen per access, byte offset uniform in the page):
 *   R  random:   p uniform over the whole region.
 *   L  locality: with probability LOCAL (default 0.95) p is uniform inside a
 *                window of WINDOW pages (default 256 = 1 MiB) starting at
 *                `start`; otherwise uniform over the region.  The window
 *                slides forward by one page every STEP accesses (default 64)
 *                and wraps at the end of the region: a small, slowly moving
 *                working set.
 * It registers itself with a running profiler daemon (mmk_prof_register;
 * skipped silently when none runs, or with --no-register) and unregisters
 * at the end.  With --stats it prints how many distinct pages it touched.
 */
#include "cmd.h"

#include <mmkit.h>
#include <mmkit/prof.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t xs(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void)
{
	fprintf(stderr, "usage: mmkit work MB R|L ACCESSES [--iterations N] [--period-ms MS] [--window PAGES]\n"
			"                  [--local P] [--step N] [--seed S] [--no-register] [--stats]\n");
	return 2;
}

int mmk_cmd_work(int argc, char **argv)
{
	if (argc < 4)
		return usage();
	char *e;
	long mb = strtol(argv[1], &e, 10);
	if (*e || mb <= 0 || mb > (1L << 20))
		return usage();
	char mode = argv[2][0];
	if ((mode != 'R' && mode != 'L') || argv[2][1])
		return usage();
	long acc = strtol(argv[3], &e, 10);
	if (*e || acc < 0)
		return usage();
	long iters = 20, period_ms = 1000, window = 256, step = 64;
	double local = 0.95;
	uint64_t seed = 0;
	bool reg = true, stats = false;
	for (int i = 4; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--no-register")) {
			reg = false;
		} else if (!strcmp(a, "--stats")) {
			stats = true;
		} else if (v && !strcmp(a, "--iterations")) {
			iters = strtol(v, NULL, 10), i++;
		} else if (v && !strcmp(a, "--period-ms")) {
			period_ms = strtol(v, NULL, 10), i++;
		} else if (v && !strcmp(a, "--window")) {
			window = strtol(v, NULL, 10), i++;
		} else if (v && !strcmp(a, "--step")) {
			step = strtol(v, NULL, 10), i++;
		} else if (v && !strcmp(a, "--local")) {
			local = strtod(v, NULL), i++;
		} else if (v && !strcmp(a, "--seed")) {
			seed = strtoull(v, NULL, 0), i++;
		} else {
			return usage();
		}
	}
	if (iters < 0 || period_ms < 0 || window <= 0 || step <= 0 || local < 0 || local > 1)
		return usage();
	size_t len = (size_t)mb << 20, pages = len / 4096;
	if ((size_t)window > pages)
		window = (long)pages;
	char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (buf == MAP_FAILED)
		return mmk_tool_fail("mmap", -errno);
	madvise(buf, len, MADV_NOHUGEPAGE);
	uint8_t *seen = stats ? calloc(pages / 8 + 1, 1) : NULL;
	if (!seed)
		seed = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(now_s() * 1e9);
	uint64_t rs = seed | 1;
	bool registered = false;
	if (reg)
		registered = mmk_prof_register(NULL, 0) == 0;
	uint64_t lp = (uint64_t)(local * 4294967296.0);
	size_t wstart = (size_t)(xs(&rs) % pages), since_move = 0;
	double t0 = now_s();
	struct timespec due;
	clock_gettime(CLOCK_MONOTONIC, &due);
	for (long it = 0; it < iters; it++) {
		for (long j = 0; j < acc; j++) {
			uint64_t r = xs(&rs);
			size_t p;
			if (mode == 'R') {
				p = (size_t)(r % pages);
			} else {
				if ((r >> 32) < lp)
					p = (wstart + (size_t)((r & 0xffffffffu) % (uint64_t)window)) % pages;
				else
					p = (size_t)(xs(&rs) % pages);
				if (++since_move == (size_t)step) {
					since_move = 0;
					wstart = (wstart + 1) % pages;
				}
			}
			buf[p * 4096 + (xs(&rs) & 4095)] = (char)j;
			if (seen)
				seen[p / 8] |= (uint8_t)(1u << (p % 8));
		}
		if (period_ms) {
			due.tv_nsec += (period_ms % 1000) * 1000000L;
			due.tv_sec += period_ms / 1000 + due.tv_nsec / 1000000000L;
			due.tv_nsec %= 1000000000L;
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
				;
		}
	}
	double el = now_s() - t0;
	if (registered)
		mmk_prof_unregister(NULL, 0);
	size_t touched = 0;
	if (seen)
		for (size_t i = 0; i < pages; i++)
			touched += (seen[i / 8] >> (i % 8)) & 1;
	if (stats)
		printf("work pid=%d mb=%ld mode=%c accesses=%ld iterations=%ld elapsed_s=%.3f touched_pages=%zu "
		       "registered=%d\n",
		       (int)getpid(), mb, mode, acc, iters, el, touched, registered);
	free(seen);
	munmap(buf, len);
	return 0;
}
