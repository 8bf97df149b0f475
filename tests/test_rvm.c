/*
 * tests/test_rvm.c - mmk_rvm: the API contract on a real file system
 * (real fsyncs): both modes, every snapshot backend, abort, NO_FLUSH and
 * flush, truncation and log wrap-around, locking, size checks, file modes,
 * corruption detection (bit flips, truncated files, damaged headers) and
 * EIO on write and sync.  The crash harnesses are in test_rvm_crash.c.
 */
#include "test_util.h"

#include <mmkit.h>
#include <mmkit/rvm.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

static void mkpath(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

static void rmstore(const char *p)
{
	char b[700];
	snprintf(b, sizeof b, "rm -rf '%s' '%s'.tmp-*", p, p);
	if (system(b) != 0)
		fprintf(stderr, "# could not remove %s\n", p);
}

static int setup(void **st)
{
	(void)st;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(tmpdir, sizeof tmpdir, "%s/test_rvm.XXXXXX", base);
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **st)
{
	(void)st;
	rmstore(tmpdir);
	return 0;
}

/* open with a mode and (paged) backend; returns the rc */
static int open_mode(mmk_rvm **r, const char *p, size_t size, unsigned mode, mmk_snap_backend be)
{
	mmk_rvm_opts o = { .mode = mode, .backend = be };
	return mmk_rvm_open(r, p, size, &o);
}

/* write v into [off, off+len) inside a transaction (set_range first) */
static void put(mmk_rvm *r, size_t off, int v, size_t len)
{
	unsigned char *b = mmk_rvm_base(r);
	assert_int_equal(mmk_rvm_set_range(r, b + off, len), 0);
	memset(b + off, v, len);
}

static bool all(const unsigned char *p, int v, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != (unsigned char)v)
			return false;
	return true;
}

static void basic_one(unsigned mode, mmk_snap_backend be)
{
	char p[300];
	mkpath(p, sizeof p, "basic");
	rmstore(p);
	mmk_rvm *r;
	int rc = open_mode(&r, p, 64 * 4096, mode, be);
	if (rc == MMK_ENOFEAT || rc == -EPERM || rc == -ENOSYS) {
		fprintf(stderr, "# backend %s unavailable here: %s\n", mmk_snap_backend_name(be),
			mmk_strerror(rc));
		return;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(mmk_rvm_size(r), 64 * 4096);
	unsigned char *b = mmk_rvm_base(r);
	assert_true(all(b, 0, 64 * 4096));
	/* commit */
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	put(r, 100, 0xaa, 5000);
	put(r, 40000, 0xbb, 10);
	assert_int_equal(mmk_rvm_commit(r, 0), 0);
	/* abort */
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	put(r, 100, 0xcc, 20);
	put(r, 200000, 0xdd, 300);
	put(r, 110, 0xee, 20); /* overlapping */
	assert_int_equal(mmk_rvm_abort(r), 0);
	assert_true(all(b + 100, 0xaa, 5000));
	assert_true(all(b + 200000, 0, 300));
	/* misuse */
	assert_int_equal(mmk_rvm_commit(r, 0), -EPROTO);
	assert_int_equal(mmk_rvm_abort(r), -EPROTO);
	assert_int_equal(mmk_rvm_set_range(r, b, 1), -EPROTO);
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	assert_int_equal(mmk_rvm_begin(r, 0), -EBUSY);
	assert_int_equal(mmk_rvm_set_range(r, b + 64 * 4096 - 1, 2), -EINVAL);
	assert_int_equal(mmk_rvm_set_range(r, b - 1, 1), -EINVAL);
	assert_int_equal(mmk_rvm_commit(r, 3), -EINVAL);
	assert_int_equal(mmk_rvm_truncate(r), -EBUSY);
	put(r, 64 * 4096 - 8, 0x11, 8);
	assert_int_equal(mmk_rvm_commit(r, MMK_RVM_NO_FLUSH), 0);
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	put(r, 0, 0x22, 1);
	assert_int_equal(mmk_rvm_commit(r, MMK_RVM_NO_FLUSH), 0);
	assert_int_equal(mmk_rvm_flush(r), 0);
	/* empty transaction */
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	assert_int_equal(mmk_rvm_commit(r, 0), 0);
	mmk_rvm_stats st;
	assert_int_equal(mmk_rvm_stats_get(r, &st), 0);
	assert_int_equal(st.commits, 4);
	assert_int_equal(st.aborts, 1);
	assert_true(st.log_used > 0);
	/* a second handle on the same store */
	mmk_rvm *r2;
	assert_int_equal(mmk_rvm_open(&r2, p, 64 * 4096, NULL), -EBUSY);
	assert_int_equal(mmk_rvm_close(r), 0);
	/* reopen: recovered from the log */
	assert_int_equal(open_mode(&r, p, 0, mode, be), 0);
	b = mmk_rvm_base(r);
	assert_int_equal(mmk_rvm_stats_get(r, &st), 0);
	assert_int_equal(st.recovered, 3);
	assert_true(all(b + 1, 0, 99));
	assert_int_equal(b[0], 0x22);
	assert_true(all(b + 100, 0xaa, 5000));
	assert_true(all(b + 40000, 0xbb, 10));
	assert_true(all(b + 200000, 0, 300));
	assert_true(all(b + 64 * 4096 - 8, 0x11, 8));
	/* truncate, reopen again */
	assert_int_equal(mmk_rvm_truncate(r), 0);
	assert_int_equal(mmk_rvm_close(r), 0);
	assert_int_equal(open_mode(&r, p, 64 * 4096, mode, be), 0);
	b = mmk_rvm_base(r);
	assert_int_equal(mmk_rvm_stats_get(r, &st), 0);
	assert_int_equal(st.recovered, 0);
	assert_true(all(b + 100, 0xaa, 5000));
	assert_int_equal(b[0], 0x22);
	assert_int_equal(mmk_rvm_close(r), 0);
	rmstore(p);
}

static void test_basic_explicit(void **st)
{
	(void)st;
	basic_one(MMK_RVM_EXPLICIT, MMK_SNAP_AUTO);
}

static void test_basic_paged(void **st)
{
	(void)st;
	basic_one(MMK_RVM_PAGED, MMK_SNAP_AUTO);
	basic_one(MMK_RVM_PAGED, MMK_SNAP_COPY);
	basic_one(MMK_RVM_PAGED, MMK_SNAP_ASYNC);
	basic_one(MMK_RVM_PAGED, MMK_SNAP_LAZY);
}

/* paged mode needs no set_range */
static void test_paged_no_set_range(void **st)
{
	(void)st;
	char p[300];
	mkpath(p, sizeof p, "paged");
	rmstore(p);
	mmk_rvm *r;
	assert_int_equal(mmk_rvm_open(&r, p, 1 << 20, NULL), 0);
	unsigned char *b = mmk_rvm_base(r);
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	for (size_t i = 0; i < (1 << 20); i += 8192)
		b[i] = (unsigned char)(i >> 13);
	assert_int_equal(mmk_rvm_commit(r, 0), 0);
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	b[5] = 9;
	assert_int_equal(mmk_rvm_abort(r), 0);
	assert_int_equal(b[5], 0);
	assert_int_equal(mmk_rvm_close(r), 0);
	assert_int_equal(mmk_rvm_open(&r, p, 1 << 20, NULL), 0);
	b = mmk_rvm_base(r);
	for (size_t i = 0; i < (1 << 20); i += 8192)
		assert_int_equal(b[i], (unsigned char)(i >> 13));
	assert_int_equal(b[5], 0);
	assert_int_equal(mmk_rvm_close(r), 0);
	rmstore(p);
}

static void test_open_rules(void **st)
{
	(void)st;
	char p[300];
	mkpath(p, sizeof p, "rules");
	rmstore(p);
	mmk_rvm *r;
	assert_int_equal(mmk_rvm_open(&r, p, 0, NULL), -ENOENT);
	assert_int_equal(mmk_rvm_open(NULL, p, 4096, NULL), -EINVAL);
	mmk_rvm_opts bad = { .mode = 7 };
	assert_int_equal(mmk_rvm_open(&r, p, 4096, &bad), -EINVAL);
	assert_int_equal(mmk_rvm_open(&r, p, 10000, NULL), 0); /* rounded up */
	assert_int_equal(mmk_rvm_size(r), 12288);
	unsigned char *b = mmk_rvm_base(r);
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	b[7] = 7;
	assert_int_equal(mmk_rvm_commit(r, 0), 0);
	/* another process cannot open it either */
	pid_t pid = fork();
	if (pid == 0) {
		mmk_rvm *x;
		_exit(mmk_rvm_open(&x, p, 0, NULL) == -EBUSY ? 0 : 1);
	}
	int ws;
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	assert_int_equal(mmk_rvm_close(r), 0);
	/* modes */
	struct stat sb;
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	char f[400];
	snprintf(f, sizeof f, "%s/data", p);
	assert_int_equal(stat(f, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(f, sizeof f, "%s/log", p);
	assert_int_equal(stat(f, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	/* size mismatch: refused, nothing changed */
	assert_int_equal(mmk_rvm_open(&r, p, 4096, NULL), -EINVAL);
	assert_int_equal(mmk_rvm_open(&r, p, 0, NULL), 0);
	assert_int_equal(mmk_rvm_size(r), 12288);
	assert_int_equal(((unsigned char *)mmk_rvm_base(r))[7], 7);
	assert_int_equal(mmk_rvm_close(r), 0);
	mmk_rvm_info info;
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), 0);
	assert_int_equal(info.size, 12288);
	assert_int_equal(info.status, 0);
	rmstore(p);
}

/* many commits through a small log: wrap-around truncations */
static void test_wrap(void **st)
{
	(void)st;
	for (unsigned mode = 0; mode < 2; mode++) {
		char p[300];
		mkpath(p, sizeof p, "wrap");
		rmstore(p);
		mmk_rvm *r;
		mmk_rvm_opts o = { .mode = mode, .log_size = 128 << 10, .buffer_size = 8192 };
		assert_int_equal(mmk_rvm_open(&r, p, 16 * 4096, &o), 0);
		uint64_t *v = mmk_rvm_base(r);
		size_t n = 16 * 4096 / 8, rounds = mmk_test_n(3000, 300);
		uint64_t s = mmk_test_seed();
		mmk_rvm_stats sts = { 0 };
		/* at least the scaled count, and until the log wrapped 3 times */
		for (size_t i = 0; i < rounds || (sts.truncates < 3 && i < 200000); i++) {
			assert_int_equal(mmk_rvm_stats_get(r, &sts), 0);
			assert_int_equal(mmk_rvm_begin(r, 0), 0);
			for (int k = 0; k < 3; k++) {
				size_t j = mmk_test_rand(&s) % n;
				assert_int_equal(mmk_rvm_set_range(r, &v[j], 8), 0);
				v[j] += i;
			}
			/* a big one now and then: several pages */
			if (i % 97 == 0)
				for (size_t j = 0; j < n; j += 64) {
					assert_int_equal(mmk_rvm_set_range(r, &v[j], 8), 0);
					v[j]++;
				}
			assert_int_equal(mmk_rvm_commit(r, i % 3 ? MMK_RVM_NO_FLUSH : MMK_RVM_FLUSH), 0);
		}
		/* a transaction larger than the log: -ENOSPC, memory unchanged */
		if (mode == MMK_RVM_EXPLICIT) {
			uint64_t keep = v[0];
			assert_int_equal(mmk_rvm_begin(r, 0), 0);
			for (int k = 0; k < 2; k++) {
				assert_int_equal(mmk_rvm_set_range(r, v, 16 * 4096), 0);
				v[0]++;
			}
			assert_int_equal(mmk_rvm_commit(r, 0), -ENOSPC);
			assert_int_equal(v[0], keep);
		}
		assert_int_equal(mmk_rvm_stats_get(r, &sts), 0);
		assert_true(sts.truncates > 2);
		uint64_t *copy = malloc(16 * 4096);
		memcpy(copy, v, 16 * 4096);
		assert_int_equal(mmk_rvm_close(r), 0);
		assert_int_equal(mmk_rvm_open(&r, p, 0, &o), 0);
		assert_memory_equal(mmk_rvm_base(r), copy, 16 * 4096);
		assert_int_equal(mmk_rvm_close(r), 0);
		free(copy);
		rmstore(p);
	}
}

/* ---- corruption ---------------------------------------------------------------- */

static void flip(const char *store, const char *file, off_t off, int bit)
{
	char f[400];
	snprintf(f, sizeof f, "%s/%s", store, file);
	int fd = open(f, O_RDWR);
	assert_true(fd >= 0);
	unsigned char c;
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= (unsigned char)(1u << bit);
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void shorten(const char *store, const char *file, off_t by)
{
	char f[400];
	struct stat sb;
	snprintf(f, sizeof f, "%s/%s", store, file);
	assert_int_equal(stat(f, &sb), 0);
	assert_int_equal(truncate(f, sb.st_size - by), 0);
}

/* a store with n FLUSH commits (each its own sync group) in its log */
static void make_logged(const char *p, int n)
{
	rmstore(p);
	mmk_rvm *r;
	mmk_rvm_opts o = { .mode = MMK_RVM_EXPLICIT };
	assert_int_equal(mmk_rvm_open(&r, p, 8 * 4096, &o), 0);
	assert_int_equal(mmk_rvm_begin(r, 0), 0);
	put(r, 0, 1, 8 * 4096);
	assert_int_equal(mmk_rvm_commit(r, 0), 0);
	assert_int_equal(mmk_rvm_truncate(r), 0); /* data pages now non-zero */
	for (int i = 0; i < n; i++) {
		assert_int_equal(mmk_rvm_begin(r, 0), 0);
		put(r, (size_t)i * 100, 0x40 + i, 100);
		assert_int_equal(mmk_rvm_commit(r, 0), 0);
	}
	/* close without the open-time checkpoint of a reopen: the log keeps them */
	assert_int_equal(mmk_rvm_close(r), 0);
}

static int try_open(const char *p)
{
	mmk_rvm *r;
	int rc = mmk_rvm_open(&r, p, 0, NULL);
	if (!rc)
		mmk_rvm_close(r);
	return rc;
}

static void test_corruption(void **st)
{
	(void)st;
	char p[300];
	mkpath(p, sizeof p, "corrupt");
	mmk_rvm_info info;
	/* intact */
	make_logged(p, 4);
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), 0);
	assert_int_equal(info.records, 4);
	/* bit flip in a data page outside the log */
	make_logged(p, 4);
	flip(p, "data", 4096 + 4096 + 7 * 4096 + 100, 3); /* hdr, table, page 7 */
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), MMK_ECORRUPT);
	assert_int_equal(info.pages_bad, 1);
	assert_int_equal(info.first_bad_page, 7);
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	assert_int_equal(try_open(p), MMK_ECORRUPT); /* nothing was changed */
	/* in a data page the log covers: caught too (checked before redo) */
	make_logged(p, 4);
	flip(p, "data", 4096 + 4096 + 4000, 1); /* page 0, outside the logged bytes */
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	/* bit flip in the first of four records: later groups prove corruption */
	make_logged(p, 4);
	flip(p, "log", 8192 + 60, 0);
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), MMK_ECORRUPT);
	assert_true(info.log_corrupt);
	assert_int_equal(info.records, 0);
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	/* in the last record: indistinguishable from a torn tail; 3 survive */
	make_logged(p, 4);
	{
		mmk_rvm_info i0;
		assert_int_equal(mmk_rvm_check(p, &i0, NULL, NULL), 0);
		flip(p, "log", (off_t)i0.log_end - 20, 5);
	}
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), 0);
	assert_int_equal(info.records, 3);
	assert_true(info.torn_tail);
	/* damaged log header in use */
	make_logged(p, 2);
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), 0);
	flip(p, "log", (off_t)info.header_slot * 4096 + 20, 2);
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), MMK_ECORRUPT);
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	/* data header */
	make_logged(p, 2);
	flip(p, "data", 12, 0);
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	/* CRC table */
	make_logged(p, 2);
	flip(p, "data", 4096 + 4 * 6, 0);
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	/* truncated files */
	make_logged(p, 2);
	shorten(p, "log", 4096);
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), MMK_ECORRUPT);
	assert_non_null(strstr(info.problem, "truncated"));
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	make_logged(p, 2);
	shorten(p, "data", 1);
	assert_int_equal(try_open(p), MMK_ECORRUPT);
	rmstore(p);
}

/* EIO on write and on sync: commit fails, memory as at begin, handle fatal,
 * the store reopens to the state before or after the failed commit */
static void test_eio(void **st)
{
	(void)st;
	char p[300];
	mkpath(p, sizeof p, "eio");
	for (int kind = 0; kind < 2; kind++) {
		for (unsigned mode = 0; mode < 2; mode++) {
			rmstore(p);
			mmk_rvm_fault f = { 0 };
			mmk_rvm_opts o = { .mode = mode, .fault = &f };
			mmk_rvm *r;
			assert_int_equal(mmk_rvm_open(&r, p, 8 * 4096, &o), 0);
			unsigned char *b = mmk_rvm_base(r);
			assert_int_equal(mmk_rvm_begin(r, 0), 0);
			put(r, 0, 5, 10);
			assert_int_equal(mmk_rvm_commit(r, 0), 0);
			f.eio_at = f.ops + (kind == 0 ? 1 : 2);
			f.eio_kinds = kind == 0 ? MMK_RVM_OP_WRITE : MMK_RVM_OP_SYNC;
			assert_int_equal(mmk_rvm_begin(r, 0), 0);
			put(r, 0, 6, 10);
			put(r, 5000, 6, 10);
			assert_int_equal(mmk_rvm_commit(r, 0), -EIO);
			assert_true(all(b, 5, 10));
			assert_true(all(b + 5000, 0, 10));
			assert_int_equal(mmk_rvm_begin(r, 0), MMK_EFATAL);
			assert_int_equal(mmk_rvm_flush(r), MMK_EFATAL);
			mmk_rvm_close(r);
			assert_int_equal(mmk_rvm_open(&r, p, 0, NULL), 0);
			b = mmk_rvm_base(r);
			if (kind == 0) {
				assert_true(all(b, 5, 10)); /* the write never happened */
			} else {
				assert_true((all(b, 5, 10) && all(b + 5000, 0, 10)) ||
					    (all(b, 6, 10) && all(b + 5000, 6, 10)));
			}
			assert_int_equal(mmk_rvm_close(r), 0);
		}
	}
	rmstore(p);
}


/* mmkit rvm check|dump|recover (the tool, from MMKIT_TOOL) */
static int tool(const char *args, const char *p)
{
	const char *t = getenv("MMKIT_TOOL");
	char cmd[900];
	snprintf(cmd, sizeof cmd, "'%s' rvm %s '%s' >/dev/null", t, args, p);
	int ws = system(cmd);
	return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

static void test_tool(void **st)
{
	(void)st;
	if (!getenv("MMKIT_TOOL"))
		MMK_SKIP("MMKIT_TOOL not set (run through ctest)");
	char p[300];
	mkpath(p, sizeof p, "tool");
	make_logged(p, 3);
	assert_int_equal(tool("check", p), 0);
	assert_int_equal(tool("dump", p), 0);
	mmk_rvm_info info;
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), 0);
	assert_int_equal(info.records, 3);
	assert_int_equal(tool("recover", p), 0);
	assert_int_equal(mmk_rvm_check(p, &info, NULL, NULL), 0);
	assert_int_equal(info.records, 0); /* applied, new generation */
	flip(p, "data", 4096 + 4096 + 5 * 4096, 0);
	assert_int_equal(tool("check", p), 1);
	assert_int_equal(tool("recover", p), 1);
	assert_int_equal(tool("bogus", p), 2);
	/* busy while open */
	mmk_rvm *r;
	make_logged(p, 1);
	assert_int_equal(mmk_rvm_open(&r, p, 0, NULL), 0);
	assert_int_equal(tool("check", p), 1);
	assert_int_equal(mmk_rvm_close(r), 0);
	rmstore(p);
}

int main(void)
{
	mmk_test_seed();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic_explicit),
		cmocka_unit_test(test_basic_paged),
		cmocka_unit_test(test_paged_no_set_range),
		cmocka_unit_test(test_open_rules),
		cmocka_unit_test(test_wrap),
		cmocka_unit_test(test_corruption),
		cmocka_unit_test(test_eio),
		cmocka_unit_test(test_tool),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
