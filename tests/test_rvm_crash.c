/*
 * tests/test_rvm_crash.c - crash harnesses for mmk_rvm.
 *
 * Workload: the region is an array of uint64 slots; slot 0 is the number
 * of committed transactions (a stamp), the others are balances.  Attempt i
 * of a run is a pure function of (seed, i): transfers between random slots
 * (sum of balances stays 0), sometimes many of them (many pages), then
 * abort or commit with FLUSH or NO_FLUSH, sometimes followed by flush or
 * truncate.  The writer publishes in shared memory `durable` (stamp of the
 * last commit known durable: after a FLUSH commit, flush or truncate
 * returned) and `attempted` (stamp of the commit in progress).
 * Oracle after every crash: reopen; the stamp j must satisfy
 * durable <= j <= attempted, the whole region must equal the replayed
 * state after j commits, and balances must sum to 0.
 *
 *   test_kill      SIGKILL: the writer runs in a child killed by the parent
 *                  after a random delay, or killing itself before its Nth
 *                  write/sync (mmk_rvm_fault.kill_at), including during
 *                  the recovery of its own open.  1000 kill points at
 *                  MMK_TEST_SCALE=1.
 *   test_powercut  power loss simulated by the fault layer at the Nth
 *                  write/sync (unsynced sectors dropped, kept or torn),
 *                  including during recovery.  1000 crash points at scale 1.
 *   test_eio       EIO at the Nth write or sync: failed commit leaves memory
 *                  as at begin, then the same oracle.
 *   test_bitflip   a random bit flipped in the log or the data file: open
 *                  refuses (MMK_ECORRUPT) or yields exactly a committed
 *                  state of the run; never a wrong byte.
 * Modes and snapshot backends are chosen at random per run.
 */
#include "test_util.h"

#include <mmkit.h>
#include <mmkit/rvm.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGES 24
#define SIZE (PAGES * 4096)
#define NSLOTS (SIZE / 8)

static char tmpdir[256], store[320];

typedef struct plan {
	int abort;
	unsigned flags;
	int after; /* 0 nothing, 1 flush, 2 truncate */
	int nw;
	struct {
		uint32_t a, b;
		uint64_t amt;
	} w[96];
} plan;

static void make_plan(uint64_t seed, uint64_t i, plan *p)
{
	uint64_t s = seed ^ (i * 0x9e3779b97f4a7c15ULL) ^ 0x5bd1e995;
	if (!s)
		s = 1;
	for (int k = 0; k < 3; k++)
		mmk_test_rand(&s);
	uint64_t r = mmk_test_rand(&s);
	p->abort = r % 8 == 0;
	p->flags = (r >> 8) % 3 == 0 ? MMK_RVM_NO_FLUSH : ((r >> 8) % 3 == 1 ? 0 : MMK_RVM_FLUSH);
	p->after = (r >> 16) % 16 == 0 ? 1 : ((r >> 16) % 16 == 1 ? 2 : 0);
	p->nw = (r >> 24) % 16 == 0 ? 96 : 1 + (int)((r >> 32) % 6);
	for (int k = 0; k < p->nw; k++) {
		p->w[k].a = 1 + (uint32_t)(mmk_test_rand(&s) % (NSLOTS - 1));
		p->w[k].b = 1 + (uint32_t)(mmk_test_rand(&s) % (NSLOTS - 1));
		p->w[k].amt = mmk_test_rand(&s);
	}
}

/* the memory writes of a plan (with set_range when r is given) */
static void do_writes(mmk_rvm *r, uint64_t *m, const plan *p, uint64_t stamp)
{
	for (int k = 0; k < p->nw; k++) {
		if (r) {
			mmk_rvm_set_range(r, &m[p->w[k].a], 8);
			mmk_rvm_set_range(r, &m[p->w[k].b], 8);
		}
		m[p->w[k].a] -= p->w[k].amt;
		m[p->w[k].b] += p->w[k].amt;
	}
	if (r)
		mmk_rvm_set_range(r, &m[0], 8);
	m[0] = stamp;
}

typedef struct shared {
	volatile uint64_t durable, attempted;
} shared;

typedef struct run_cfg {
	unsigned mode;
	mmk_snap_backend be;
	mmk_rvm_fault *fault;
	uint64_t seed;
	uint64_t max_attempts;
} run_cfg;

/* The writer.  Returns 0 when it ran all attempts, else the first error.
 * After an error *failed_plan tells whether memory must equal pre (checked
 * here: memory as at begin). */
static int writer(const run_cfg *c, shared *sh, int *verified_undo)
{
	mmk_rvm_opts o = { .mode = c->mode, .backend = c->be, .fault = c->fault,
			   .log_size = 96 << 10, .buffer_size = 16384 };
	mmk_rvm *r;
	int rc = mmk_rvm_open(&r, store, SIZE, &o);
	if (rc)
		return rc;
	uint64_t *m = mmk_rvm_base(r);
	uint64_t stamp = m[0];
	static uint64_t pre[NSLOTS];
	plan p;
	for (uint64_t i = 0; i < c->max_attempts; i++) {
		make_plan(c->seed, i, &p);
		memcpy(pre, m, SIZE);
		rc = mmk_rvm_begin(r, 0);
		if (rc)
			break;
		do_writes(c->mode == MMK_RVM_EXPLICIT ? r : NULL, m, &p, stamp + 1);
		if (p.abort) {
			rc = mmk_rvm_abort(r);
			if (rc)
				break;
			if (memcmp(pre, m, SIZE))
				return -1000; /* abort did not restore */
			continue;
		}
		sh->attempted = stamp + 1;
		rc = mmk_rvm_commit(r, p.flags);
		if (rc) {
			if (verified_undo)
				*verified_undo = memcmp(pre, m, SIZE) == 0 ? 1 : -1;
			break;
		}
		stamp++;
		if (p.flags != MMK_RVM_NO_FLUSH)
			sh->durable = stamp;
		if (p.after) {
			rc = p.after == 1 ? mmk_rvm_flush(r) : mmk_rvm_truncate(r);
			if (rc)
				break;
			sh->durable = stamp;
		}
	}
	int rc2 = mmk_rvm_close(r);
	if (!rc && !rc2)
		sh->durable = stamp;
	return rc ? rc : rc2;
}

/* model: the verified state and the seeds of runs since */
static uint64_t model[NSLOTS], scratch[NSLOTS];

/* check the store against the model after a run with seed; on success the
 * model becomes the recovered state */
static void verify(uint64_t seed, const shared *sh, const char *what)
{
	mmk_rvm *r;
	mmk_rvm_fault nosync = { 0 }; /* simulated syncs: fast, same code path */
	mmk_rvm_opts o = { .fault = &nosync };
	int rc = mmk_rvm_open(&r, store, SIZE, &o);
	if (rc) {
		mmk_rvm_info info;
		mmk_rvm_check(store, &info, NULL, NULL);
		fail_msg("%s: reopen failed: %s (%s)", what, mmk_strerror(rc), info.problem);
	}
	const uint64_t *m = mmk_rvm_base(r);
	uint64_t j = m[0], base = model[0];
	if (j < sh->durable || j > sh->attempted || j < base) {
		mmk_rvm_close(r);
		fail_msg("%s: recovered stamp %llu outside [durable %llu, attempted %llu]", what,
			 (unsigned long long)j, (unsigned long long)sh->durable,
			 (unsigned long long)sh->attempted);
	}
	memcpy(scratch, model, SIZE);
	plan p;
	uint64_t stamp = base;
	for (uint64_t i = 0; stamp < j; i++) {
		make_plan(seed, i, &p);
		if (p.abort)
			continue;
		do_writes(NULL, scratch, &p, ++stamp);
	}
	if (memcmp(scratch, m, SIZE)) {
		size_t k = 0;
		while (scratch[k] == m[k])
			k++;
		mmk_rvm_close(r);
		fail_msg("%s: state at stamp %llu (durable %llu attempted %llu base %llu) differs from the replay (slot %zu: %llx vs %llx)", what,
			 (unsigned long long)j, (unsigned long long)sh->durable, (unsigned long long)sh->attempted, (unsigned long long)base, k, (unsigned long long)m[k], (unsigned long long)scratch[k]);
	}
	uint64_t sum = 0;
	for (size_t k = 1; k < NSLOTS; k++)
		sum += m[k];
	assert_true(sum == 0);
	memcpy(model, m, SIZE);
	assert_int_equal(mmk_rvm_close(r), 0);
}

static void fresh_store(void)
{
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", store);
	assert_int_equal(system(cmd), 0);
	memset(model, 0, sizeof model);
	mmk_rvm *r;
	assert_int_equal(mmk_rvm_open(&r, store, SIZE, NULL), 0);
	assert_int_equal(mmk_rvm_close(r), 0);
}

static mmk_snap_backend pick_backend(uint64_t *s, unsigned mode)
{
	if (mode == MMK_RVM_EXPLICIT)
		return MMK_SNAP_AUTO;
	static const mmk_snap_backend bes[] = { MMK_SNAP_AUTO, MMK_SNAP_COPY, MMK_SNAP_ASYNC,
						MMK_SNAP_LAZY };
	const mmk_features *f = mmk_features_get();
	for (;;) {
		mmk_snap_backend b = bes[mmk_test_rand(s) % 4];
		if (b == MMK_SNAP_ASYNC && !(f->uffd && f->uffd_wp_async && f->pagemap_scan))
			continue;
		if (b == MMK_SNAP_LAZY && !(f->uffd && f->uffd_wp && f->uffd_sigbus))
			continue;
		return b;
	}
}

static void test_kill(void **st)
{
	(void)st;
	fresh_store();
	shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	uint64_t s = mmk_test_seed();
	size_t want = mmk_test_n(1000, 30), kills = 0, runs = 0, timer_kills = 0;
	while (kills < want) {
		runs++;
		assert_true(runs < want * 20); /* liveness guard: most runs reach the fault */
		run_cfg c = { .mode = (unsigned)(mmk_test_rand(&s) % 2), .seed = mmk_test_rand(&s),
			      .max_attempts = 5 + mmk_test_rand(&s) % 60 };
		c.be = pick_backend(&s, c.mode);
		bool by_timer = mmk_test_rand(&s) % 3 == 0;
		mmk_rvm_fault f = { .kill_at = by_timer ? 0 : 1 + mmk_test_rand(&s) % 150 };
		c.fault = &f;
		unsigned delay_us = (unsigned)(mmk_test_rand(&s) % 3000);
		sh->durable = sh->attempted = model[0];
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			int rc = writer(&c, sh, NULL);
			_exit(rc ? 3 : 0);
		}
		if (by_timer) {
			usleep(delay_us);
			kill(pid, SIGKILL);
		}
		int ws;
		assert_int_equal(waitpid(pid, &ws, 0), pid);
		if (WIFSIGNALED(ws)) {
			assert_int_equal(WTERMSIG(ws), SIGKILL);
			kills++;
			timer_kills += by_timer;
		} else {
			assert_true(WIFEXITED(ws));
			if (WEXITSTATUS(ws) != 0)
				fail_msg("writer failed without a crash (exit %d)", WEXITSTATUS(ws));
		}
		char what[96];
		snprintf(what, sizeof what, "kill run %zu (mode %u, %s)", runs, c.mode,
			 by_timer ? "timer" : "kill_at");
		verify(c.seed, sh, what);
	}
	fprintf(stderr, "# %zu SIGKILL crash points (%zu by timer) in %zu runs, final stamp %llu\n",
		kills, timer_kills, runs, (unsigned long long)model[0]);
	munmap(sh, 4096);
}

static void test_powercut(void **st)
{
	(void)st;
	fresh_store();
	shared sh;
	uint64_t s = mmk_test_seed() ^ 0xabcdef;
	size_t want = mmk_test_n(1000, 30), cuts = 0, runs = 0, in_open = 0;
	size_t modes[4] = { 0 };
	while (cuts < want) {
		runs++;
		assert_true(runs < want * 20); /* liveness guard: most runs reach the fault */
		run_cfg c = { .mode = (unsigned)(mmk_test_rand(&s) % 2), .seed = mmk_test_rand(&s),
			      .max_attempts = 5 + mmk_test_rand(&s) % 60 };
		c.be = pick_backend(&s, c.mode);
		mmk_rvm_fault f = { .crash_at = 1 + mmk_test_rand(&s) % 120,
				    .crash_mode = (int)(mmk_test_rand(&s) % 4),
				    .seed = mmk_test_rand(&s) };
		c.fault = &f;
		sh.durable = sh.attempted = model[0];
		int rc = writer(&c, &sh, NULL);
		if (f.crashed) {
			cuts++;
			modes[f.crash_mode]++;
			if (f.crash_at <= 4)
				in_open++;
			assert_int_equal(rc, -EIO);
		} else {
			assert_int_equal(rc, 0);
		}
		char what[96];
		snprintf(what, sizeof what, "power-cut run %zu (mode %u, op %llu, crash mode %d)",
			 runs, c.mode, f.crash_at, f.crash_mode);
		verify(c.seed, &sh, what);
	}
	fprintf(stderr,
		"# %zu power cuts in %zu runs (random %zu, drop %zu, keep %zu, tear %zu; "
		"%zu in open's recovery), final stamp %llu\n",
		cuts, runs, modes[0], modes[1], modes[2], modes[3], in_open,
		(unsigned long long)model[0]);
}

static void test_eio(void **st)
{
	(void)st;
	fresh_store();
	shared sh;
	uint64_t s = mmk_test_seed() ^ 0x1234;
	size_t want = mmk_test_n(300, 20), errs = 0, runs = 0, undo_checked = 0;
	while (errs < want) {
		runs++;
		assert_true(runs < want * 20); /* liveness guard: most runs reach the fault */
		run_cfg c = { .mode = (unsigned)(mmk_test_rand(&s) % 2), .seed = mmk_test_rand(&s),
			      .max_attempts = 5 + mmk_test_rand(&s) % 60 };
		c.be = pick_backend(&s, c.mode);
		mmk_rvm_fault f = { .eio_at = 1 + mmk_test_rand(&s) % 120,
				    .eio_kinds = 1 + (unsigned)(mmk_test_rand(&s) % 3) };
		c.fault = &f;
		sh.durable = sh.attempted = model[0];
		int undo = 0;
		int rc = writer(&c, &sh, &undo);
		if (rc) {
			assert_int_equal(rc, -EIO);
			errs++;
			assert_true(undo >= 0); /* a failed commit left memory as at begin */
			undo_checked += undo;
		}
		char what[96];
		snprintf(what, sizeof what, "eio run %zu (mode %u, op %llu)", runs, c.mode,
			 f.eio_at);
		verify(c.seed, &sh, what);
	}
	fprintf(stderr, "# %zu EIO failures in %zu runs (%zu failed commits checked for undo)\n",
		errs, runs, undo_checked);
}

/* read or write back a whole file of the store */
static unsigned char *slurp(const char *name, size_t *len)
{
	char f[400];
	snprintf(f, sizeof f, "%s/%s", store, name);
	FILE *fp = fopen(f, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	*len = (size_t)ftell(fp);
	fseek(fp, 0, SEEK_SET);
	unsigned char *b = malloc(*len);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, *len, fp), *len);
	fclose(fp);
	return b;
}

static void spill(const char *name, const unsigned char *b, size_t len)
{
	char f[400];
	snprintf(f, sizeof f, "%s/%s", store, name);
	FILE *fp = fopen(f, "r+b");
	assert_non_null(fp);
	assert_int_equal(fwrite(b, 1, len, fp), len);
	fclose(fp);
}

/* Random bit flips in the log (headers and used part) and the data file:
 * open must either refuse with MMK_ECORRUPT or give exactly the state
 * after some commit of the run (a flip in the last sync group looks like a
 * torn tail: that group is lost, but a wrong byte is never applied). */
static void test_bitflip(void **st)
{
	(void)st;
	fresh_store();
	uint64_t s = mmk_test_seed() ^ 0x77;
	size_t want = mmk_test_n(300, 20), detected = 0, harmless = 0, lost = 0;
	for (size_t it = 0; it < want; it++) {
		shared sh;
		run_cfg c = { .mode = (unsigned)(mmk_test_rand(&s) % 2), .seed = mmk_test_rand(&s),
			      .max_attempts = 3 + mmk_test_rand(&s) % 30 };
		c.be = pick_backend(&s, c.mode);
		mmk_rvm_fault nosync = { 0 };
		c.fault = &nosync;
		uint64_t base = model[0];
		sh.durable = sh.attempted = base;
		assert_int_equal(writer(&c, &sh, NULL), 0);
		mmk_rvm_info info;
		assert_int_equal(mmk_rvm_check(store, &info, NULL, NULL), 0);
		size_t dl, ll;
		unsigned char *data = slurp("data", &dl), *log = slurp("log", &ll);
		bool in_log = mmk_test_rand(&s) % 3 != 0;
		size_t len = in_log ? ll : dl;
		size_t span = in_log ? (size_t)info.log_end + 512 : dl;
		size_t off = (size_t)(mmk_test_rand(&s) % (span < len ? span : len));
		unsigned char *bad = malloc(len);
		assert_non_null(bad);
		memcpy(bad, in_log ? log : data, len);
		bad[off] ^= (unsigned char)(1u << (mmk_test_rand(&s) % 8));
		spill(in_log ? "log" : "data", bad, len);
		free(bad);
		mmk_rvm *r;
		mmk_rvm_fault f2 = { 0 };
		mmk_rvm_opts o = { .fault = &f2 };
		int rc = mmk_rvm_open(&r, store, SIZE, &o);
		if (rc == MMK_ECORRUPT) {
			detected++;
		} else {
			assert_int_equal(rc, 0);
			const uint64_t *m = mmk_rvm_base(r);
			uint64_t j = m[0];
			if (j < base || j > sh.attempted)
				fail_msg("bit flip at %s+%zu: stamp %llu outside [%llu, %llu]",
					 in_log ? "log" : "data", off, (unsigned long long)j,
					 (unsigned long long)base, (unsigned long long)sh.attempted);
			memcpy(scratch, model, SIZE);
			plan p;
			uint64_t stamp = base;
			for (uint64_t i = 0; stamp < j; i++) {
				make_plan(c.seed, i, &p);
				if (!p.abort)
					do_writes(NULL, scratch, &p, ++stamp);
			}
			if (memcmp(scratch, m, SIZE))
				fail_msg("bit flip at %s+%zu applied a wrong state (stamp %llu)",
					 in_log ? "log" : "data", off, (unsigned long long)j);
			if (j < sh.attempted) {
				assert_true(in_log); /* only a log flip can lose commits */
				lost++;
			} else {
				harmless++;
			}
			assert_int_equal(mmk_rvm_close(r), 0);
		}
		/* put the intact store back and continue from its full state */
		spill("data", data, dl);
		spill("log", log, ll);
		free(data);
		free(log);
		verify(c.seed, &sh, "after restoring the intact files");
	}
	fprintf(stderr,
		"# %zu bit flips: %zu refused (MMK_ECORRUPT), %zu harmless, %zu lost a "
		"torn-looking last group, none applied a wrong state\n",
		want, detected, harmless, lost);
}

static int setup(void **st)
{
	(void)st;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(tmpdir, sizeof tmpdir, "%s/test_rvm_crash.XXXXXX", base);
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(store, sizeof store, "%s/store", tmpdir);
	return 0;
}

static int teardown(void **st)
{
	(void)st;
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	mmk_test_seed();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill),
		cmocka_unit_test(test_powercut),
		cmocka_unit_test(test_eio),
		cmocka_unit_test(test_bitflip),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
