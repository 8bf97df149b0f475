/*
 * examples/afl/target.c - a small stateful command parser to fuzz with AFL++.
 *
 * One input is a document of lines:
 *     set NAME VALUE   define or redefine NAME (a heap string)
 *     get NAME         look NAME up (through a small LRU cache)
 *     del NAME         free NAME's value
 *     inc NAME N       add N to NAME's numeric value
 *     cat NAME A B     NAME := A's value . B's value
 *     log TEXT         append TEXT to the request history
 *     dump             walk the symbol table
 * Like many real parsers it keeps process-wide state that was meant to be
 * per document but is not reset: the symbol table, the lookup cache, a
 * request counter driving periodic maintenance, and a history list that
 * grows with every input (per-input heap allocations, some leaked).
 * In a fresh process each document starts from empty tables; in persistent
 * mode without a reset, the next input sees the previous ones' state, which
 * changes its coverage (AFL++'s "stability") and can make it crash:
 *   - BUG 1 (a real one, reproducible alone): `del` frees a value but leaves
 *     the cache entry pointing at the symbol; a later `get` of that name
 *     through the cache dereferences the freed (NULL) value:
 *         set a 1 / get a / del a / get a   -> SIGSEGV
 *   - BUG 2 (only with leaked state): a document may define at most
 *     MAX_DEFS_PER_DOC symbols, so the table "cannot" overflow; it never
 *     shrinks across documents, so after a few inputs in one process it
 *     does, and the overflow check aborts.  Not reproducible alone.
 *
 * Builds (see Makefile): -DMODE_FORK (fork server, one input per process),
 * -DMODE_PERSIST (__AFL_LOOP, no reset), -DMODE_RESET (MMK_AFL_LOOP, mmkit
 * reset), -DMODE_NAIVE (__AFL_LOOP + a hand-written full copy of every
 * private writable mapping, naive_reset.h).  Without afl-clang-fast it reads
 * one document from stdin (a plain build for reproducing crashes).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef MODE_RESET
#include <mmkit/afl.h>
#endif
#ifdef MODE_NAIVE
#include "naive_reset.h"
#endif

#ifndef LOOP_N
#define LOOP_N 10000
#endif

#ifndef __AFL_FUZZ_TESTCASE_LEN
/* plain compiler: read the document from stdin */
static unsigned char plain_buf[1 << 16];
#define __AFL_FUZZ_INIT() extern int plain_unused
#define __AFL_INIT() do { } while (0)
#define __AFL_FUZZ_TESTCASE_BUF plain_buf
#define __AFL_FUZZ_TESTCASE_LEN ((int)read(0, plain_buf, sizeof plain_buf))
#define __AFL_LOOP(n) plain_once()
static inline __attribute__((unused)) int plain_once(void)
{
	static int done;
	return done ? 0 : (done = 1);
}
#endif

#define SYMTAB_CAP 64
#define MAX_DEFS_PER_DOC 24
#define CACHE_SLOTS 8
#define MAINT_EVERY 32

struct sym {
	char name[16];
	char *val;         /* heap, NULL after del */
	long num;
	unsigned uses;
};

/* ---- process-wide state (meant to be per document, never reset) ------------ */
static struct sym symtab[SYMTAB_CAP];
static int nsym;
static struct { char name[16]; struct sym *s; unsigned stamp; } cache[CACHE_SLOTS];
static unsigned clock_now;
static unsigned long nreq;
struct hist { struct hist *next; char *text; };
static struct hist *history;
static size_t history_len;
static unsigned long maint_runs;

/* read-only after setup */
static const char *keywords[] = { "set", "get", "del", "inc", "cat", "log", "dump" };
static unsigned char kw_hash[256];

static void setup(void)
{
	for (unsigned i = 0; i < sizeof keywords / sizeof *keywords; i++)
		kw_hash[(unsigned char)(keywords[i][0] ^ keywords[i][2])] = (unsigned char)(i + 1);
}

static struct sym *find(const char *name)
{
	for (int i = 0; i < nsym; i++)
		if (strcmp(symtab[i].name, name) == 0)
			return &symtab[i];
	return NULL;
}

static struct sym *cache_get(const char *name)
{
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].s && strcmp(cache[i].name, name) == 0) {
			cache[i].stamp = ++clock_now;
			return cache[i].s;
		}
	return NULL;
}

static void cache_put(const char *name, struct sym *s)
{
	int victim = 0;
	for (int i = 0; i < CACHE_SLOTS; i++) {
		if (!cache[i].s) {
			victim = i;
			break;
		}
		if (cache[i].stamp < cache[victim].stamp)
			victim = i;
	}
	snprintf(cache[victim].name, sizeof cache[victim].name, "%s", name);
	cache[victim].s = s;
	cache[victim].stamp = ++clock_now;
}

static void maintenance(void)
{
	maint_runs++;
	/* drop cold cache entries, trim the history */
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].s && clock_now - cache[i].stamp > 16)
			cache[i].s = NULL;
	while (history_len > 64) {
		struct hist *h = history;
		history = h->next;
		free(h->text);
		free(h);
		history_len--;
	}
}

static struct sym *define(const char *name, int *defs)
{
	struct sym *s = find(name);
	if (s)
		return s;
	if (++*defs > MAX_DEFS_PER_DOC)
		return NULL; /* per-document limit */
	if (nsym >= SYMTAB_CAP)
		abort(); /* "cannot happen": BUG 2 */
	s = &symtab[nsym++];
	snprintf(s->name, sizeof s->name, "%s", name);
	s->val = NULL;
	s->num = 0;
	s->uses = 0;
	return s;
}

static const char *lookup(const char *name, size_t *len)
{
	struct sym *s = cache_get(name);
	if (s) {
		s->uses++;
		*len = strlen(s->val); /* BUG 1: s->val may have been freed by del */
		return s->val;
	}
	s = find(name);
	if (!s || !s->val)
		return NULL;
	cache_put(name, s);
	s->uses++;
	*len = strlen(s->val);
	return s->val;
}

static void cmd(char **arg, int nargs, int *defs, unsigned long *out)
{
	unsigned char k = kw_hash[(unsigned char)(arg[0][0] ^ (arg[0][1] ? arg[0][2] : 0))];
	if (!k || strcmp(arg[0], keywords[k - 1]) != 0)
		return;
	if (++nreq % MAINT_EVERY == 0)
		maintenance();
	size_t len;
	struct sym *s;
	switch (k) {
	case 1: /* set */
		if (nargs < 3 || !(s = define(arg[1], defs)))
			return;
		free(s->val);
		s->val = strdup(arg[2]);
		s->num = strtol(arg[2], NULL, 10);
		break;
	case 2: /* get */
		if (nargs >= 2 && lookup(arg[1], &len))
			*out += len;
		break;
	case 3: /* del */
		if (nargs >= 2 && (s = find(arg[1])) && s->val) {
			free(s->val);
			s->val = NULL; /* the cache still points at s */
		}
		break;
	case 4: /* inc */
		if (nargs >= 3 && (s = find(arg[1]))) {
			long d = strtol(arg[2], NULL, 10);
			s->num += d;
			if (s->num > 1000000)
				s->num = 0; /* wrap */
			char tmp[32];
			snprintf(tmp, sizeof tmp, "%ld", s->num);
			free(s->val);
			s->val = strdup(tmp);
		}
		break;
	case 5: /* cat */
		if (nargs >= 4) {
			size_t la, lb;
			const char *a = lookup(arg[2], &la), *b = lookup(arg[3], &lb);
			if (!a || !b || !(s = define(arg[1], defs)))
				return;
			char *v = malloc(la + lb + 1);
			memcpy(v, a, la);
			memcpy(v + la, b, lb);
			v[la + lb] = 0;
			free(s->val);
			s->val = v;
		}
		break;
	case 6: { /* log */
		struct hist *h = malloc(sizeof *h);
		h->text = strdup(nargs >= 2 ? arg[1] : "");
		h->next = history;
		history = h;
		history_len++;
		break;
	}
	case 7: /* dump */
		for (int i = 0; i < nsym; i++)
			if (symtab[i].val && symtab[i].uses > 2)
				*out += symtab[i].num;
		break;
	}
}

/* one document; returns a digest so the work is not optimised away */
static unsigned long run(const unsigned char *data, int len)
{
	if (len <= 0)
		return 0;
	/* per-input heap copy, NUL-terminated, split into lines and words */
	char *doc = malloc((size_t)len + 1);
	memcpy(doc, data, (size_t)len);
	doc[len] = 0;
	unsigned long out = 0;
	int defs = 0;
	char *save_line = NULL;
	for (char *line = strtok_r(doc, "\n", &save_line); line; line = strtok_r(NULL, "\n", &save_line)) {
		char *arg[4], *save_word = NULL;
		int n = 0;
		for (char *w = strtok_r(line, " \t", &save_word); w && n < 4; w = strtok_r(NULL, " \t", &save_word))
			arg[n++] = w;
		if (n)
			cmd(arg, n, &defs, &out);
	}
	free(doc);
	return out;
}

__AFL_FUZZ_INIT();

#ifdef MODE_RESET
/* ---- reset-cost mode (bench_afl): MMK_AFL_COST=iterations[,pages] -------------
 * Runs the harness loop outside the fuzzer with a stand-in for AFL++'s loop
 * function, the coverage map moved to shared memory as under afl-fuzz, and
 * an input that dirties `pages` pages of the program's globals (0..4), or
 * with pages=-1 the parser on a fixed document.  Prints one CSV line
 * "ns_per_iter,pages_dirtied_by_last_restore,regions,pages_tracked,
 * untouched_pages,discards_while_timed,replans" (mmk_afl_stats_get).  Run it
 * with MMK_AFL_RESET=0 too: the difference is the cost of the reset.  Time
 * is the thread's CPU time (user + system, page faults included), so other
 * processes competing for the CPU do not inflate it. */
static char cost_pages[5][4096] __attribute__((aligned(4096)));
static unsigned long *cost_left; /* MAP_SHARED: not rolled back */

static int cost_loop(unsigned n)
{
	(void)n;
	return (*cost_left)-- > 0;
}

#include <dlfcn.h>
#include <time.h>
static int cost_mode(const char *arg)
{
	unsigned long iters = strtoul(arg, NULL, 10);
	const char *comma = strchr(arg, ',');
	int pages = comma ? atoi(comma + 1) : 1;
	if (pages > 5)
		pages = 5;
	cost_left = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned char **area = dlsym(NULL, "__afl_area_ptr");
	if (area) /* as under afl-fuzz: coverage goes to shared memory */
		*area = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	static const char doc[] = "set a 1\nget a\nset b 22\ncat c a b\nlog hello\ninc a 5\nget c\ndump\n";
	*cost_left = iters + 1000;
	unsigned long it = 0;
	struct timespec t0 = { 0, 0 }, t1;
	volatile unsigned long sink = 0;
	mmk_snap_stats st = { 0 };
	mmk_afl_stats as0 = { 0 }, as1 = { 0 };
	while (MMK_AFL_LOOP_WITH((unsigned)(iters + 1000), cost_loop)) {
		if (it == 1000)
			clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
		if (pages < 0)
			sink += run((const unsigned char *)doc, (int)sizeof doc - 1);
		for (int p = 0; p < pages; p++)
			cost_pages[p][it & 4095]++;
		if (it == 999 && mmk_afl_snap())
			mmk_snap_stats_get(mmk_afl_snap(), &st);
		if (it == 999)
			mmk_afl_stats_get(&as0);
		if (it + 1 == iters + 1000)
			mmk_afl_stats_get(&as1);
		it++;
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (double)(it - 1000);
	printf("%.1f,%zu,%zu,%zu,%zu,%llu,%llu\n", ns, st.pages_dirtied, st.regions, st.pages_tracked,
	       as0.untouched_pages, as1.discards - as0.discards, as1.replans);
	(void)sink;
	return 0;
}
#endif

/* input from a file named on the command line (afl-fuzz/afl-showmap @@):
 * opened and closed within the iteration, since descriptors are not reset */
static unsigned char file_buf[1 << 16];
static int read_input(const char *path, unsigned char **data)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, file_buf, sizeof file_buf);
	close(fd);
	*data = file_buf;
	return n < 0 ? 0 : (int)n;
}

#define INPUT(data, path) ((path) ? read_input((path), &(data)) : (int)__AFL_FUZZ_TESTCASE_LEN)

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : NULL;
	setup();
#ifdef MODE_RESET
	const char *cost = getenv("MMK_AFL_COST");
	if (cost)
		return cost_mode(cost);
#endif
	__AFL_INIT();
	unsigned char *buf = __AFL_FUZZ_TESTCASE_BUF;
	volatile unsigned long sink = 0;
	int len;
#if defined(MODE_FORK)
	len = INPUT(buf, path);
	sink += run(buf, len);
#elif defined(MODE_RESET)
	while (MMK_AFL_LOOP(LOOP_N)) {
		len = INPUT(buf, path);
		sink += run(buf, len);
	}
#elif defined(MODE_NAIVE)
	while (NAIVE_LOOP(LOOP_N)) {
		len = INPUT(buf, path);
		sink += run(buf, len);
	}
#else /* MODE_PERSIST */
	while (__AFL_LOOP(LOOP_N)) {
		len = INPUT(buf, path);
		sink += run(buf, len);
	}
#endif
	(void)sink;
	return 0;
}
