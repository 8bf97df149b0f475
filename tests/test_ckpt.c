/*
 * tests/test_ckpt.c - region checkpoints: consistency under concurrent
 * writers (image == memory at the start instant, checked against a model
 * copy taken at that instant), incremental chains and compaction, restart
 * at the same and at another address (in a new process too), damaged and
 * truncated images, SIGKILL during a checkpoint, disk full, periodic mode,
 * copy-mode fallback for regions another userfaultfd owns.
 */
#include "test_util.h"

#include <mmkit.h>
#include "ckpt/ckpt_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096u

static char g_dir[256];

static void mkdir_fresh(char *dir, size_t len, const char *tag)
{
	snprintf(dir, len, "/tmp/mmk-test-ckpt-%d-%s", (int)getpid(), tag);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void rm_dir(const char *dir)
{
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	(void)!system(cmd);
}

static bool tracked(void)
{
	const mmk_features *f = mmk_features_get();
	return f->uffd && f->uffd_wp && f->uffd_sigbus;
}

static char *map(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static void fill_rand(char *p, size_t len, uint64_t *s)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = mmk_test_rand(s);
		memcpy(p + i, &v, 8);
	}
}

static size_t count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name), s = strlen(suffix);
		if (l > s && !strcmp(e->d_name + l - s, suffix))
			n++;
	}
	closedir(d);
	return n;
}

/* restart `path` into fresh memory and compare region `name` with model */
static void expect_image(const char *path, const char *name, const char *model, size_t len)
{
	mmk_ckpt_restored rs;
	int rc = mmk_ckpt_restart(path, 0, &rs);
	assert_int_equal(rc, 0);
	size_t l = 0;
	char *b = mmk_ckpt_restored_find(&rs, name, &l);
	assert_non_null(b);
	assert_int_equal(l, len);
	assert_memory_equal(b, model, len);
	for (size_t i = 0; i < rs.nregions; i++)
		munmap(rs.regions[i].base, rs.regions[i].len);
	mmk_ckpt_restored_free(&rs);
}

static void test_crc(void **state)
{
	(void)state;
	assert_int_equal(mmk__ck_crc32c(0, "123456789", 9), 0xE3069283u);
	/* incremental == one shot */
	char buf[8192];
	uint64_t s = 7;
	fill_rand(buf, sizeof buf, &s);
	uint32_t a = mmk__ck_crc32c(0, buf, sizeof buf);
	uint32_t b = mmk__ck_crc32c(mmk__ck_crc32c(0, buf, 1001), buf + 1001, sizeof buf - 1001);
	assert_int_equal(a, b);
	buf[77] ^= 1;
	assert_int_not_equal(a, mmk__ck_crc32c(0, buf, sizeof buf));
}

static void test_args(void **state)
{
	(void)state;
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "args");
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, "", NULL), -EINVAL);
	assert_int_equal(mmk_ckpt_create(&c, dir, NULL), 0);
	assert_int_equal(mmk_ckpt_start(c, 0), -EINVAL); /* no region */
	char *p = map(4 * PG);
	assert_int_equal(mmk_ckpt_add(c, "", p, PG), -EINVAL);
	assert_int_equal(mmk_ckpt_add(c, "a", p, 0), -EINVAL);
	assert_int_equal(mmk_ckpt_add(c, "a", p, 2 * PG), 0);
	assert_int_equal(mmk_ckpt_add(c, "a", p + 2 * PG, PG), -EEXIST);
	assert_int_equal(mmk_ckpt_add(c, "b", p + PG, PG), -EBUSY);
	munmap(p + 3 * PG, PG);
	assert_int_equal(mmk_ckpt_add(c, "c", p + 2 * PG, 2 * PG), -EINVAL); /* partly unmapped */
	assert_int_equal(mmk_ckpt_restart("/nonexistent/x.img", 0, &(mmk_ckpt_restored){ 0 }), -ENOENT);
	mmk_ckpt_restored rs;
	assert_int_equal(mmk_ckpt_restart(dir, 0, &rs), -ENOENT); /* empty dir */
	mmk_ckpt_destroy(c);
	munmap(p, 3 * PG);
	rm_dir(dir);
}

/* ---- consistency under concurrent writers ------------------------------------------ */

typedef struct cw {
	char *mem;
	size_t npages;
	int nthreads;
	atomic_int stop_req;   /* 1: park at the barrier */
	atomic_int parked;
	atomic_int quit;
	atomic_ullong writes;
	char *shadow;          /* what each thread wrote, to check no write is lost */
} cw;

typedef struct cw_arg {
	cw *w;
	int id;
} cw_arg;

static void *cw_thread(void *arg)
{
	cw_arg *a = arg;
	cw *w = a->w;
	uint64_t s = mmk_test_seed() + 977u * (unsigned)a->id + 1;
	while (!atomic_load(&w->quit)) {
		if (atomic_load(&w->stop_req)) {
			atomic_fetch_add(&w->parked, 1);
			while (atomic_load(&w->stop_req) && !atomic_load(&w->quit))
				sched_yield();
			atomic_fetch_sub(&w->parked, 1);
			continue;
		}
		/* each thread owns the pages p with p % nthreads == id */
		size_t p = (mmk_test_rand(&s) % (w->npages / (size_t)w->nthreads)) * (size_t)w->nthreads +
			   (size_t)a->id;
		size_t off = p * PG + (mmk_test_rand(&s) % (PG / 8)) * 8;
		uint64_t v = mmk_test_rand(&s);
		memcpy(w->mem + off, &v, 8);
		memcpy(w->shadow + off, &v, 8);
		atomic_fetch_add_explicit(&w->writes, 1, memory_order_relaxed);
	}
	return NULL;
}

static void quiesce(cw *w, bool stop)
{
	if (stop) {
		atomic_store(&w->stop_req, 1);
		while (atomic_load(&w->parked) < w->nthreads)
			sched_yield();
	} else {
		atomic_store(&w->stop_req, 0);
	}
}

typedef struct hook_ctx {
	cw *w;
	char *model;
} hook_ctx;

/* the instant, as mmkit calls it: park the writers, take the model */
static void model_hook(void *arg, int stop)
{
	hook_ctx *h = arg;
	quiesce(h->w, stop != 0);
	if (stop)
		memcpy(h->model, h->w->mem, h->w->npages * PG);
}

/* hook: mmkit quiesces through opts.quiesce after sweeping, with a
 * background sweeper racing the writers too */
static void consistency(bool hook)
{
	char dir[256];
	mkdir_fresh(dir, sizeof dir, hook ? "cons-hook" : "cons");
	size_t np = mmk_test_n(8192, 512); /* 32 MiB at scale 1 */
	np -= np % 2;
	cw w = { 0 };
	w.mem = map(np * PG);
	w.shadow = malloc(np * PG);
	w.npages = np;
	w.nthreads = 2;
	uint64_t s = mmk_test_seed();
	fill_rand(w.mem, np * PG, &s);
	memcpy(w.shadow, w.mem, np * PG);
	mmk_ckpt *c;
	char *model = malloc(np * PG);
	hook_ctx hc = { &w, model };
	mmk_ckpt_opts o = { .max_chain = 3 };
	if (hook) {
		o.quiesce = model_hook;
		o.quiesce_arg = &hc;
		o.sweep_ms = 1;
	}
	assert_int_equal(mmk_ckpt_create(&c, dir, &o), 0);
	assert_int_equal(mmk_ckpt_add(c, "data", w.mem, np * PG), 0);
	pthread_t th[2];
	cw_arg args[2] = { { &w, 0 }, { &w, 1 } };
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, cw_thread, &args[i]), 0);
	int rounds = (int)mmk_test_n(6, 3);
	unsigned long long faults0 = 0;
	size_t copied = 0;
	for (int r = 0; r < rounds; r++) {
		usleep(20000); /* let the writers dirty pages */
		int gen;
		if (hook) {
			assert_true(mmk_ckpt_prepare(c) >= 0);
			gen = mmk_ckpt_start(c, 0);
		} else {
			quiesce(&w, true);
			memcpy(model, w.mem, np * PG); /* the start instant */
			gen = mmk_ckpt_start(c, 0);
			quiesce(&w, false);
		}
		assert_true(gen > 0);
		assert_int_equal(mmk_ckpt_wait(c), 0);
		mmk_ckpt_stats st;
		assert_int_equal(mmk_ckpt_stats_get(c, &st), 0);
		copied += st.last_copied;
		char img[400];
		mmk__ck_name(img, sizeof img, dir, (uint64_t)gen, false);
		expect_image(img, "data", model, np * PG);
		mmk_ckpt_info info;
		assert_int_equal(mmk_ckpt_info_read(img, &info, NULL, 0), 0);
		if (st.regions_copy_mode == 0) {
			/* round 0 full, then deltas up to max_chain, then full */
			assert_int_equal(info.parent == 0, r % 4 == 0);
		}
		faults0 = st.faults;
	}
	atomic_store(&w.quit, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	/* no write of the program was lost */
	assert_memory_equal(w.mem, w.shadow, np * PG);
	mmk_ckpt_stats stf;
	mmk_ckpt_stats_get(c, &stf);
	if (stf.regions_copy_mode == 0)
		assert_true(faults0 > 0);
	fprintf(stderr, "# consistency%s: %d rounds, %llu writes, %llu faults, %zu pages copied aside\n",
		hook ? " (quiesce hook, sweeps)" : "", rounds, (unsigned long long)atomic_load(&w.writes), faults0, copied);
	assert_int_equal(mmk_ckpt_verify(dir) >= 1, 1);
	mmk_ckpt_destroy(c);
	munmap(w.mem, np * PG);
	free(w.shadow);
	free(model);
	rm_dir(dir);
}

static void test_consistency(void **state)
{
	(void)state;
	consistency(false);
}

static void test_consistency_sweeps(void **state)
{
	(void)state;
	consistency(true);
}

/* ---- incremental chains and compaction ------------------------------------------------ */

static void test_incremental(void **state)
{
	(void)state;
	if (!tracked())
		MMK_SKIP("no userfaultfd write-protect with SIGBUS: every image is full (copy mode)");
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "inc");
	size_t np = 256;
	char *m = map(np * PG);
	uint64_t s = mmk_test_seed() ^ 0x55;
	fill_rand(m, np * PG, &s);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, &(mmk_ckpt_opts){ .max_chain = 100 }), 0);
	assert_int_equal(mmk_ckpt_add(c, "r", m, np * PG), 0);
	mmk_ckpt_stats st0;
	mmk_ckpt_stats_get(c, &st0);
	if (st0.regions_copy_mode) {
		mmk_ckpt_destroy(c);
		munmap(m, np * PG);
		rm_dir(dir);
		MMK_SKIP("the region could not be write-protected here (copy mode): every image is full");
	}
	int g1 = mmk_ckpt_start(c, MMK_CKPT_WAIT);
	assert_int_equal(g1, 1);
	char *models[8];
	int gens[8];
	models[0] = malloc(np * PG);
	memcpy(models[0], m, np * PG);
	gens[0] = g1;
	for (int k = 1; k < 8; k++) {
		/* change k pages (one twice) */
		for (int j = 0; j < k; j++) {
			size_t p = (size_t)(mmk_test_rand(&s) % np);
			m[p * PG + (size_t)j] ^= 0x5a;
			m[p * PG + 100] ^= 1;
		}
		gens[k] = mmk_ckpt_start(c, MMK_CKPT_WAIT);
		assert_int_equal(gens[k], g1 + k);
		models[k] = malloc(np * PG);
		memcpy(models[k], m, np * PG);
		size_t diff = 0;
		for (size_t p = 0; p < np; p++)
			diff += memcmp(models[k] + p * PG, models[k - 1] + p * PG, PG) != 0;
		char img[400];
		mmk__ck_name(img, sizeof img, dir, (uint64_t)gens[k], false);
		mmk_ckpt_info info;
		assert_int_equal(mmk_ckpt_info_read(img, &info, NULL, 0), 0);
		assert_int_equal(info.parent, (unsigned long long)gens[k - 1]);
		/* exactly the pages written (none of ours was written back to
		 * its old value) */
		assert_int_equal(info.pages, diff);
	}
	/* nothing changed: an empty delta */
	int ge = mmk_ckpt_start(c, MMK_CKPT_WAIT);
	mmk_ckpt_stats st;
	mmk_ckpt_stats_get(c, &st);
	assert_int_equal(st.last_pages, 0);
	assert_int_equal(st.last_full, 0);
	/* every generation restores to its model */
	for (int k = 0; k < 8; k++) {
		char img[400];
		mmk__ck_name(img, sizeof img, dir, (uint64_t)gens[k], false);
		expect_image(img, "r", models[k], np * PG);
		assert_int_equal(mmk_ckpt_verify(img), k + 1);
	}
	char img[400];
	mmk__ck_name(img, sizeof img, dir, (uint64_t)ge, false);
	assert_int_equal(mmk_ckpt_verify(img), 9);
	/* compaction of gen 5 (chain of 6): full, same content; gen 8's
	 * chain now goes through it */
	mmk__ck_name(img, sizeof img, dir, (uint64_t)gens[5], false);
	assert_int_equal(mmk_ckpt_compact(img, 0), 6);
	mmk_ckpt_info info;
	assert_int_equal(mmk_ckpt_info_read(img, &info, NULL, 0), 0);
	assert_int_equal(info.parent, 0);
	assert_int_equal(info.pages, np);
	assert_int_equal(mmk_ckpt_verify(img), 1);
	expect_image(img, "r", models[5], np * PG);
	mmk__ck_name(img, sizeof img, dir, (uint64_t)ge, false);
	assert_int_equal(mmk_ckpt_verify(img), 4);
	expect_image(dir, "r", models[7], np * PG); /* the directory: newest */
	/* compact the newest with prune: one image left */
	assert_int_equal(mmk_ckpt_compact(img, MMK_CKPT_PRUNE), 4);
	assert_int_equal(count_files(dir, ".img"), 1);
	expect_image(dir, "r", models[7], np * PG);
	assert_int_equal(mmk_ckpt_compact(img, 0), 1); /* already full */
	/* after the chain is folded, checkpoints continue */
	m[5] ^= 1;
	int gn = mmk_ckpt_start(c, MMK_CKPT_WAIT);
	assert_true(gn > ge);
	mmk_ckpt_stats_get(c, &st);
	assert_int_equal(st.last_pages, 1);
	mmk_ckpt_destroy(c);
	for (int k = 0; k < 8; k++)
		free(models[k]);
	munmap(m, np * PG);
	rm_dir(dir);
}

/* ---- restart at the same and at another address, in a new process ------------------- */

static void test_restart_addresses(void **state)
{
	(void)state;
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "addr");
	size_t len = 64 * PG;
	char *a = map(len), *b = map(3 * PG);
	uint64_t s = mmk_test_seed() ^ 0xabc;
	fill_rand(a, len, &s);
	fill_rand(b, 3 * PG, &s);
	char *ma = malloc(len), *mb = malloc(3 * PG);
	memcpy(ma, a, len);
	memcpy(mb, b, 3 * PG);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, NULL), 0);
	assert_int_equal(mmk_ckpt_add(c, "alpha", a, len), 0);
	assert_int_equal(mmk_ckpt_add(c, "beta", b, 3 * PG), 0);
	assert_true(mmk_ckpt_start(c, MMK_CKPT_WAIT) > 0);
	a[0] ^= 1;
	assert_true(mmk_ckpt_start(c, MMK_CKPT_WAIT) > 0); /* a delta */
	ma[0] ^= 1;
	mmk_ckpt_destroy(c);
	/* original still mapped: SAME_ADDR falls back, REQUIRE fails */
	mmk_ckpt_restored rs;
	assert_int_equal(mmk_ckpt_restart(dir, MMK_CKPT_SAME_ADDR | MMK_CKPT_REQUIRE_ADDR, &rs), -EEXIST);
	assert_int_equal(mmk_ckpt_restart(dir, MMK_CKPT_SAME_ADDR, &rs), 0);
	assert_int_equal(rs.nregions, 2);
	assert_int_equal(rs.chain, 2);
	size_t l;
	char *ra = mmk_ckpt_restored_find(&rs, "alpha", &l);
	assert_true(ra && ra != a && l == len);
	assert_memory_equal(ra, ma, len);
	assert_int_equal(rs.regions[0].addr, (uint64_t)(uintptr_t)a);
	char *rb = mmk_ckpt_restored_find(&rs, "beta", &l);
	assert_memory_equal(rb, mb, 3 * PG);
	for (size_t i = 0; i < rs.nregions; i++)
		munmap(rs.regions[i].base, rs.regions[i].len);
	mmk_ckpt_restored_free(&rs);
	/* a new process without the mappings: same addresses */
	munmap(a, len);
	munmap(b, 3 * PG);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		mmk_ckpt_restored r2;
		if (mmk_ckpt_restart(dir, MMK_CKPT_SAME_ADDR | MMK_CKPT_REQUIRE_ADDR, &r2) != 0)
			_exit(10);
		if (mmk_ckpt_restored_find(&r2, "alpha", NULL) != a || memcmp(a, ma, len))
			_exit(11);
		if (mmk_ckpt_restored_find(&r2, "beta", NULL) != b || memcmp(b, mb, 3 * PG))
			_exit(12);
		/* and it continues: checkpoint the restored memory */
		mmk_ckpt *c2;
		if (mmk_ckpt_create(&c2, dir, NULL) || mmk_ckpt_add(c2, "alpha", a, len) ||
		    mmk_ckpt_add(c2, "beta", b, 3 * PG))
			_exit(13);
		a[1] = 42;
		if (mmk_ckpt_start(c2, MMK_CKPT_WAIT) != 3)
			_exit(14);
		mmk_ckpt_destroy(c2);
		_exit(0);
	}
	int stt;
	assert_int_equal(waitpid(pid, &stt, 0), pid);
	assert_true(WIFEXITED(stt));
	assert_int_equal(WEXITSTATUS(stt), 0);
	ma[1] = 42;
	expect_image(dir, "alpha", ma, len);
	free(ma);
	free(mb);
	rm_dir(dir);
}

/* ---- damaged images -------------------------------------------------------------------- */

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char ch;
	assert_int_equal(pread(fd, &ch, 1, off), 1);
	ch ^= 0x10;
	assert_int_equal(pwrite(fd, &ch, 1, off), 1);
	close(fd);
}

static off_t fsize(const char *p)
{
	struct stat sb;
	assert_int_equal(stat(p, &sb), 0);
	return sb.st_size;
}

static void copy_file(const char *from, const char *to)
{
	char cmd[1000];
	snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
	assert_int_equal(system(cmd), 0);
}

static void test_corrupt(void **state)
{
	(void)state;
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "bad");
	size_t len = 32 * PG;
	char *m = map(len);
	uint64_t s = mmk_test_seed() ^ 0xbad;
	fill_rand(m, len, &s);
	char *m1 = malloc(len);
	memcpy(m1, m, len);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, &(mmk_ckpt_opts){ .max_chain = 1 }), 0);
	assert_int_equal(mmk_ckpt_add(c, "r", m, len), 0);
	assert_int_equal(mmk_ckpt_start(c, MMK_CKPT_WAIT), 1);
	m[3 * PG] ^= 1;
	assert_int_equal(mmk_ckpt_start(c, MMK_CKPT_WAIT), 2); /* delta of gen 1 */
	mmk_ckpt_destroy(c);
	char i1[400], i2[400], save[400];
	mmk__ck_name(i1, sizeof i1, dir, 1, false);
	mmk__ck_name(i2, sizeof i2, dir, 2, false);
	snprintf(save, sizeof save, "%s/saved", dir);
	copy_file(i2, save);
	mmk_ckpt_info info;
	assert_int_equal(mmk_ckpt_info_read(i2, &info, NULL, 0), 0);
	off_t sz = fsize(i2);
	struct {
		const char *what;
		off_t off;     /* byte to flip, or -1: truncate to `trunc` */
		off_t trunc;
	} cases[] = {
		{ "magic", 0, 0 },
		{ "generation", 16, 0 },
		{ "region table", 200, 0 },
		{ "page data", sz - 64 - 100, 0 },
		{ "trailer", sz - 20, 0 },
		{ "truncated mid-data", -1, sz - 64 - 2000 },
		{ "truncated trailer", -1, sz - 10 },
		{ "header only", -1, 4096 },
		{ "empty", -1, 0 },
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		copy_file(save, i2);
		if (cases[k].off >= 0)
			flip_byte(i2, cases[k].off);
		else
			assert_int_equal(truncate(i2, cases[k].trunc), 0);
		int v = mmk_ckpt_verify(i2);
		if (v != MMK_ECORRUPT)
			fprintf(stderr, "case %s: verify %d\n", cases[k].what, v);
		assert_int_equal(v, MMK_ECORRUPT);
		mmk_ckpt_restored rs;
		assert_int_equal(mmk_ckpt_restart(i2, 0, &rs), MMK_ECORRUPT);
		/* the directory falls back to the intact older chain */
		expect_image(dir, "r", m1, len);
	}
	/* a damaged parent breaks the child's chain */
	copy_file(save, i2);
	flip_byte(i1, (off_t)(fsize(i1) - 64 - 5000));
	assert_int_equal(mmk_ckpt_verify(i2), MMK_ECORRUPT);
	mmk_ckpt_restored rs;
	if (info.pages == len / PG) {
		/* copy mode: gen 2 holds every page, gen 1's are never read */
		assert_int_equal(mmk_ckpt_restart(dir, 0, &rs), 0);
		munmap(rs.regions[0].base, rs.regions[0].len);
		mmk_ckpt_restored_free(&rs);
	} else {
		assert_int_equal(mmk_ckpt_restart(dir, 0, &rs), MMK_ECORRUPT);
	}
	/* a missing parent */
	unlink(i1);
	assert_int_equal(mmk_ckpt_verify(i2), -ENOENT);
	munmap(m, len);
	free(m1);
	rm_dir(dir);
}

/* ---- SIGKILL during a checkpoint ------------------------------------------------------- */

static void pattern(char *m, size_t np, unsigned v)
{
	for (size_t p = 0; p < np; p++)
		for (size_t i = 0; i < PG; i += 512)
			memcpy(m + p * PG + i, &v, sizeof v);
}

static void test_sigkill(void **state)
{
	(void)state;
	size_t np = mmk_test_n(16384, 1024); /* 64 MiB */
	int reps = (int)mmk_test_n(4, 2);
	for (int rep = 0; rep < reps; rep++) {
		char dir[256];
		mkdir_fresh(dir, sizeof dir, "kill");
		int pfd[2];
		assert_int_equal(pipe(pfd), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			char *m = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			mmk_ckpt *c;
			if (m == MAP_FAILED || mmk_ckpt_create(&c, dir, NULL) || mmk_ckpt_add(c, "r", m, np * PG))
				_exit(10);
			pattern(m, np, 1);
			if (mmk_ckpt_start(c, MMK_CKPT_WAIT) != 1)
				_exit(11);
			pattern(m, np, 2);
			if (mmk_ckpt_start(c, 0) != 2)
				_exit(12);
			if (write(pfd[1], "x", 1) != 1)
				_exit(13);
			pattern(m, np, 3); /* copy-before-write while it writes */
			mmk_ckpt_wait(c);
			pause();
			_exit(0);
		}
		close(pfd[1]);
		char ch;
		assert_int_equal(read(pfd[0], &ch, 1), 1);
		close(pfd[0]);
		uint64_t s = mmk_test_seed() + (uint64_t)rep;
		usleep((useconds_t)(mmk_test_rand(&s) % 150000));
		kill(pid, SIGKILL);
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st));
		/* gen 1 intact; gen 2 either complete or absent */
		mmk_ckpt_restored rs;
		assert_int_equal(mmk_ckpt_restart(dir, 0, &rs), 0);
		unsigned want = rs.generation == 2 ? 2 : 1;
		char *b = rs.regions[0].base;
		size_t bad = 0;
		for (size_t p = 0; p < np; p++) {
			unsigned v;
			memcpy(&v, b + p * PG + 512, sizeof v);
			bad += v != want;
		}
		fprintf(stderr, "# sigkill rep %d: restored generation %llu, temp files %zu\n", rep,
			rs.generation, count_files(dir, ".tmp"));
		assert_int_equal(bad, 0);
		munmap(b, rs.regions[0].len);
		mmk_ckpt_restored_free(&rs);
		char i1[400];
		mmk__ck_name(i1, sizeof i1, dir, 1, false);
		assert_int_equal(mmk_ckpt_verify(i1), 1);
		/* a new checkpointer cleans the half-written temp file */
		mmk_ckpt *c;
		assert_int_equal(mmk_ckpt_create(&c, dir, NULL), 0);
		assert_int_equal(count_files(dir, ".tmp"), 0);
		mmk_ckpt_destroy(c);
		rm_dir(dir);
	}
}

/* ---- disk full --------------------------------------------------------------------------- */

static int enospc_child(const char *dir)
{
	/* a private mount namespace, so the parent never sees the tmpfs;
	 * unprivileged: in a user namespace where we are root (mapped), so
	 * files can be created (an unmapped uid gets EOVERFLOW) */
	if (unshare(CLONE_NEWNS) < 0) {
		uid_t uid = getuid();
		gid_t gid = getgid();
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			return 77;
		char buf[64];
		int fd = open("/proc/self/setgroups", O_WRONLY);
		if (fd >= 0) {
			(void)!write(fd, "deny", 4);
			close(fd);
		}
		snprintf(buf, sizeof buf, "0 %u 1", (unsigned)uid);
		fd = open("/proc/self/uid_map", O_WRONLY);
		if (fd < 0 || write(fd, buf, strlen(buf)) < 0)
			return 77;
		close(fd);
		snprintf(buf, sizeof buf, "0 %u 1", (unsigned)gid);
		fd = open("/proc/self/gid_map", O_WRONLY);
		if (fd < 0 || write(fd, buf, strlen(buf)) < 0)
			return 77;
		close(fd);
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return 77;
	if (mount("tmpfs", dir, "tmpfs", 0, "size=256k") < 0)
		return 77;
	size_t small = 16 * PG, big = 128 * PG;
	char *a = mmap(NULL, small, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *b = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(a, 0x11, small);
	memset(b, 0x22, big);
	mmk_ckpt *c;
	if (mmk_ckpt_create(&c, dir, NULL) || mmk_ckpt_add(c, "a", a, small))
		return 1;
	if (mmk_ckpt_start(c, MMK_CKPT_WAIT) != 1)
		return 2;
	if (mmk_ckpt_add(c, "b", b, big))
		return 3;
	a[0] = 0x33;
	int rc = mmk_ckpt_start(c, 0);
	if (rc != 2)
		return 4;
	if (mmk_ckpt_wait(c) != -ENOSPC)
		return 5;
	if (count_files(dir, ".tmp") != 0 || count_files(dir, ".img") != 1)
		return 6;
	mmk_ckpt_stats st;
	mmk_ckpt_stats_get(c, &st);
	if (st.failed != 1)
		return 7;
	/* the old image still restores, with the old content */
	char m[16 * PG];
	memset(m, 0x11, sizeof m);
	mmk_ckpt_restored rs;
	if (mmk_ckpt_restart(dir, 0, &rs) || rs.generation != 1 || memcmp(rs.regions[0].base, m, small))
		return 8;
	/* room again: the next checkpoint is full and holds a's change */
	mmk_ckpt_destroy(c);
	if (mmk_ckpt_create(&c, dir, NULL) || mmk_ckpt_add(c, "a", a, small))
		return 9;
	int g = mmk_ckpt_start(c, MMK_CKPT_WAIT);
	if (g != 2) /* the failed generation left nothing behind */
		return 10;
	mmk_ckpt_destroy(c);
	return 0;
}

static void test_enospc(void **state)
{
	(void)state;
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "full");
	assert_int_equal(mkdir(dir, 0700), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(enospc_child(dir));
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	rm_dir(dir);
	if (WEXITSTATUS(st) == 77)
		MMK_SKIP("cannot mount a small tmpfs (not root and no user namespaces)");
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* A delta that fails after its pages were taken (here: the rename, blocked
 * by a directory with the image's name) must not lose them: the next
 * checkpoint still holds every page changed since the last durable image. */
static void test_failed_delta(void **state)
{
	(void)state;
	char dir[256], blocker[400], inner[450];
	mkdir_fresh(dir, sizeof dir, "faildelta");
	size_t np = 64;
	char *m = map(np * PG);
	uint64_t seed = mmk_test_seed() ^ 0x5eed;
	fill_rand(m, np * PG, &seed);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, NULL), 0);
	assert_int_equal(mmk_ckpt_add(c, "r", m, np * PG), 0);
	assert_int_equal(mmk_ckpt_start(c, MMK_CKPT_WAIT), 1);
	int gen = 2;
	/* round 0: the changed pages are copied at the instant; round 1:
	 * re-protected first (mmk_ckpt_prepare), so the writer reads them from
	 * the program's memory and marks them clean before the failure */
	for (int round = 0; round < 2; round++) {
		snprintf(blocker, sizeof blocker, "%s/ckpt-%016llx.img", dir, (unsigned long long)gen);
		snprintf(inner, sizeof inner, "%s/x", blocker);
		assert_int_equal(mkdir(blocker, 0700), 0);
		assert_int_equal(mkdir(inner, 0700), 0);
		m[(3 + round) * PG + 5] ^= 0x5a; /* in the image that fails */
		m[(40 + round) * PG] ^= 0x33;
		if (round == 1 && tracked())
			assert_true(mmk_ckpt_prepare(c) >= 0);
		assert_int_equal(mmk_ckpt_start(c, 0), gen);
		assert_true(mmk_ckpt_wait(c) < 0);
		mmk_ckpt_stats st;
		mmk_ckpt_stats_get(c, &st);
		assert_int_equal(st.failed, (unsigned long long)round + 1);
		assert_int_equal(count_files(dir, ".tmp"), 0);
		assert_int_equal(rmdir(inner), 0);
		assert_int_equal(rmdir(blocker), 0);
		m[(7 + round) * PG] ^= 0x11; /* after it */
		assert_int_equal(mmk_ckpt_start(c, MMK_CKPT_WAIT), gen + 1);
		mmk_ckpt_stats_get(c, &st);
		assert_int_equal(st.last_full, 0); /* still a delta: nothing lost */
		expect_image(dir, "r", m, np * PG);
		gen += 2;
	}
	assert_true(mmk_ckpt_verify(dir) >= 1);
	mmk_ckpt_destroy(c);
	munmap(m, np * PG);
	rm_dir(dir);
}

/* ---- periodic mode ----------------------------------------------------------------------- */

static void q_hook(void *arg, int stop)
{
	quiesce(arg, stop != 0);
}

static void test_periodic(void **state)
{
	(void)state;
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "per");
	size_t np = 512;
	char *m = map(np * PG);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, &(mmk_ckpt_opts){ .keep = 2, .max_chain = 2 }), 0);
	assert_int_equal(mmk_ckpt_add(c, "r", m, np * PG), 0);
	/* safepoint mode: the program starts them at mmk_ckpt_poll() */
	assert_int_equal(mmk_ckpt_periodic(c, 10, MMK_CKPT_SAFEPOINT), 0);
	int started = 0;
	double t0 = mmk__ck_mono();
	unsigned v = 0;
	while (mmk__ck_mono() - t0 < 0.4 || (started < 3 && mmk__ck_mono() - t0 < 30)) {
		v++;
		memcpy(m + (v % np) * PG, &v, sizeof v);
		int g = mmk_ckpt_poll(c);
		assert_true(g >= 0);
		started += g > 0;
		usleep(500);
	}
	assert_int_equal(mmk_ckpt_periodic(c, 0, 0), 0);
	assert_int_equal(mmk_ckpt_wait(c), 0);
	mmk_ckpt_stats st;
	mmk_ckpt_stats_get(c, &st);
	assert_true(started >= 3);
	assert_true(st.completed >= 3);
	/* keep 2: at most the two newest chains (max_chain 2 -> <= 6 files) */
	size_t nimg = count_files(dir, ".img");
	assert_true(nimg >= 2 && nimg <= 6);
	char *model = malloc(np * PG);
	memcpy(model, m, np * PG);
	assert_int_equal(mmk_ckpt_start(c, MMK_CKPT_WAIT) > 0, 1);
	expect_image(dir, "r", model, np * PG);

	/* timer mode with a quiesce hook and a concurrent writer */
	cw w = { 0 };
	w.mem = m;
	w.npages = np;
	w.nthreads = 1;
	w.shadow = malloc(np * PG);
	memcpy(w.shadow, m, np * PG);
	mmk_ckpt_destroy(c);
	assert_int_equal(mmk_ckpt_create(&c, dir, &(mmk_ckpt_opts){ .keep = 3, .quiesce = q_hook, .quiesce_arg = &w }), 0);
	assert_int_equal(mmk_ckpt_add(c, "r", m, np * PG), 0);
	pthread_t th;
	cw_arg a0 = { &w, 0 };
	assert_int_equal(pthread_create(&th, NULL, cw_thread, &a0), 0);
	assert_int_equal(mmk_ckpt_periodic(c, 15, 0), 0);
	/* at least 3 timer checkpoints (slow emulators: up to 30 s) */
	t0 = mmk__ck_mono();
	do {
		usleep(20000);
		mmk_ckpt_stats_get(c, &st);
	} while (st.completed < 3 && mmk__ck_mono() - t0 < 30);
	assert_int_equal(mmk_ckpt_periodic(c, 0, 0), 0);
	mmk_ckpt_wait(c);
	mmk_ckpt_stats_get(c, &st);
	assert_true(st.completed >= 3);
	quiesce(&w, true);
	memcpy(model, m, np * PG);
	assert_int_equal(mmk_ckpt_start(c, MMK_CKPT_WAIT) > 0, 1);
	atomic_store(&w.quit, 1);
	quiesce(&w, false);
	pthread_join(th, NULL);
	expect_image(dir, "r", model, np * PG);
	assert_memory_equal(m, w.shadow, np * PG);
	assert_true(mmk_ckpt_verify(dir) >= 1);
	mmk_ckpt_destroy(c);
	free(w.shadow);
	free(model);
	munmap(m, np * PG);
	rm_dir(dir);
}

/* ---- copy mode: a region the snapshot engine tracks, next to a tracked one -------------- */

/* the other order: the snapshot engine installs its SIGBUS handler on top
 * of ours, then ours goes on top again at the next start; faults of both
 * and a genuine SIGBUS elsewhere still go where they belong */
static void test_handler_order(void **state)
{
	(void)state;
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "order");
	size_t len = 32 * PG;
	char *t = map(len), *s1 = map(len);
	memset(t, 2, len);
	memset(s1, 1, len);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, NULL), 0);
	assert_int_equal(mmk_ckpt_add(c, "plain", t, len), 0);
	mmk_snap *sn;
	int rc = mmk_snap_create(&sn, &(mmk_snap_opts){ .backend = MMK_SNAP_LAZY });
	if (rc == 0 && (rc = mmk_snap_add(sn, s1, len)) != 0)
		mmk_snap_destroy(sn);
	if (rc == MMK_ENOFEAT) {
		mmk_ckpt_destroy(c);
		rm_dir(dir);
		MMK_SKIP("snapshot lazy backend unavailable on this kernel");
	}
	assert_int_equal(rc, 0);
	assert_true(mmk_snap_save(sn) > 0);
	for (int round = 0; round < 3; round++) {
		t[round * PG] = (char)(10 + round);  /* ours */
		s1[round * PG] = (char)(20 + round); /* the snapshot's */
		char *mt = malloc(len);
		memcpy(mt, t, len);
		assert_true(mmk_ckpt_start(c, 0) > 0); /* ours on top again */
		t[(round + 8) * PG] = 7;
		s1[(round + 8) * PG] = 7;
		assert_int_equal(mmk_ckpt_wait(c), 0);
		expect_image(dir, "plain", mt, len);
		free(mt);
		assert_int_equal(mmk_snap_restore(sn), 0);
		assert_int_equal(s1[round * PG], 1);
		assert_int_equal(s1[(round + 8) * PG], 1);
	}
	/* a genuine SIGBUS (past the end of a file mapping) still kills */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGBUS, SIG_DFL);
		mmk_ckpt *c2;
		char d2[300];
		snprintf(d2, sizeof d2, "%s/child", dir);
		char *u = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mmk_ckpt_create(&c2, d2, NULL) || mmk_ckpt_add(c2, "u", u, PG))
			_exit(3);
		char path[320];
		snprintf(path, sizeof path, "%s/empty", dir);
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		char *f = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (f == MAP_FAILED)
			_exit(4);
		f[0] = 1; /* SIGBUS: no page behind it */
		_exit(5);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGBUS);
	mmk_snap_destroy(sn);
	mmk_ckpt_destroy(c);
	munmap(t, len);
	munmap(s1, len);
	rm_dir(dir);
}

static void test_snapshot_region(void **state)
{
	(void)state;
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "snap");
	size_t len = 64 * PG;
	char *s1 = map(len), *t = map(len);
	memset(s1, 1, len);
	memset(t, 2, len);
	mmk_snap *sn;
	int rc = mmk_snap_create(&sn, &(mmk_snap_opts){ .backend = MMK_SNAP_LAZY });
	if (rc == MMK_ENOFEAT)
		MMK_SKIP("snapshot lazy backend unavailable on this kernel");
	assert_int_equal(rc, 0);
	rc = mmk_snap_add(sn, s1, len);
	if (rc == MMK_ENOFEAT) {
		mmk_snap_destroy(sn);
		MMK_SKIP("snapshot lazy backend unavailable on this kernel");
	}
	assert_int_equal(rc, 0);
	assert_true(mmk_snap_save(sn) > 0);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, NULL), 0);
	assert_int_equal(mmk_ckpt_add(c, "snapped", s1, len), 0);
	assert_int_equal(mmk_ckpt_add(c, "plain", t, len), 0);
	mmk_ckpt_stats st;
	mmk_ckpt_stats_get(c, &st);
	assert_true(st.regions_copy_mode >= 1); /* the snapshot's region */
	/* both SIGBUS users work side by side: the snapshot's faults and ours */
	s1[5] = 9;
	t[5] = 9;
	char *ms = malloc(len), *mt = malloc(len);
	memcpy(ms, s1, len);
	memcpy(mt, t, len);
	assert_true(mmk_ckpt_start(c, 0) > 0);
	s1[PG * 7] = 3; /* after the instant */
	t[PG * 7] = 3;
	assert_int_equal(mmk_ckpt_wait(c), 0);
	expect_image(dir, "snapped", ms, len);
	expect_image(dir, "plain", mt, len);
	assert_int_equal(mmk_snap_restore(sn), 0);
	assert_int_equal(s1[5], 1); /* the snapshot rolled its region back */
	assert_int_equal(t[PG * 7], 3);
	mmk_ckpt_destroy(c);
	mmk_snap_destroy(sn);
	free(ms);
	free(mt);
	munmap(s1, len);
	munmap(t, len);
	rm_dir(dir);
}

/* ---- system calls writing into a tracked region ------------------------------------------ */

static void test_prewrite(void **state)
{
	(void)state;
	if (!tracked())
		MMK_SKIP("no userfaultfd WP+SIGBUS: regions are not write-protected (copy mode)");
	char dir[256];
	mkdir_fresh(dir, sizeof dir, "prewrite");
	size_t len = 16 * PG;
	char *m = map(len);
	memset(m, 7, len);
	char *model = malloc(len);
	memcpy(model, m, len);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, dir, NULL), 0);
	assert_int_equal(mmk_ckpt_add(c, "r", m, len), 0);
	mmk_ckpt_stats st0;
	mmk_ckpt_stats_get(c, &st0);
	if (st0.regions_copy_mode) {
		mmk_ckpt_destroy(c);
		munmap(m, len);
		rm_dir(dir);
		MMK_SKIP("the region could not be write-protected here (copy mode)");
	}
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	/* the kernel cannot take the SIGBUS path: EFAULT on a protected page */
	errno = 0;
	assert_int_equal(read(fd, m + 2 * PG, 100), -1);
	assert_int_equal(errno, EFAULT);
	assert_int_equal(mmk_ckpt_prewrite(c, m + 2 * PG, 100), 0);
	assert_int_equal(read(fd, m + 2 * PG, 100), 100);
	assert_int_equal(mmk_ckpt_prewrite(c, m + len, 1), -EINVAL);
	/* during a checkpoint: the page's instant content is kept */
	assert_true(mmk_ckpt_start(c, MMK_CKPT_FULL) > 0);
	memset(model + 2 * PG, 0, 100);
	assert_int_equal(mmk_ckpt_prewrite(c, m + 5 * PG, 2 * PG), 0);
	assert_int_equal(read(fd, m + 5 * PG, 2 * PG), (ssize_t)(2 * PG));
	assert_int_equal(mmk_ckpt_wait(c), 0);
	expect_image(dir, "r", model, len);
	/* and the next delta holds the pages the kernel wrote */
	memcpy(model, m, len);
	int g = mmk_ckpt_start(c, MMK_CKPT_WAIT);
	assert_true(g > 0);
	mmk_ckpt_stats st;
	mmk_ckpt_stats_get(c, &st);
	assert_int_equal(st.last_full, 0);
	assert_int_equal(st.last_pages, 2);
	expect_image(dir, "r", model, len);
	close(fd);
	mmk_ckpt_destroy(c);
	free(model);
	munmap(m, len);
	rm_dir(dir);
}

/* ---- an mmk_rvm store's region, in both modes ---------------------------------------- */

static void rvm_region(unsigned mode)
{
	char dir[256], store[300];
	mkdir_fresh(dir, sizeof dir, mode == MMK_RVM_PAGED ? "rvm-paged" : "rvm-explicit");
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(store, sizeof store, "%s/store", dir);
	char ck[300];
	snprintf(ck, sizeof ck, "%s/ckpt", dir);
	size_t len = 64 * PG;
	mmk_rvm *r;
	int rc = mmk_rvm_open(&r, store, len, &(mmk_rvm_opts){ .mode = mode });
	if (rc == MMK_ENOFEAT || rc == -EPERM) {
		rm_dir(dir);
		MMK_SKIP("mmk_rvm paged mode unavailable here: %s", mmk_strerror(rc));
	}
	assert_int_equal(rc, 0);
	char *base = mmk_rvm_base(r);
	mmk_ckpt *c;
	assert_int_equal(mmk_ckpt_create(&c, ck, NULL), 0);
	assert_int_equal(mmk_ckpt_add(c, "rvm", base, len), 0);
	for (int t = 0; t < 3; t++) {
		assert_int_equal(mmk_rvm_begin(r, 0), 0);
		if (mode == MMK_RVM_EXPLICIT)
			assert_int_equal(mmk_rvm_set_range(r, base + t * 5000, 100), 0);
		memset(base + t * 5000, 'a' + t, 100);
		assert_int_equal(mmk_rvm_commit(r, 0), 0);
		char *model = malloc(len);
		memcpy(model, base, len);
		int g = mmk_ckpt_start(c, 0);
		assert_true(g > 0);
		/* the next transaction runs while the image is written */
		assert_int_equal(mmk_rvm_begin(r, 0), 0);
		if (mode == MMK_RVM_EXPLICIT)
			assert_int_equal(mmk_rvm_set_range(r, base + 60000, 8), 0);
		memset(base + 60000, 'z', 8);
		assert_int_equal(mmk_rvm_commit(r, 0), 0);
		assert_int_equal(mmk_ckpt_wait(c), 0);
		char img[400];
		mmk__ck_name(img, sizeof img, ck, (uint64_t)g, false);
		expect_image(img, "rvm", model, len);
		free(model);
	}
	mmk_ckpt_stats st;
	mmk_ckpt_stats_get(c, &st);
	fprintf(stderr, "# rvm %s region: %s mode\n", mode == MMK_RVM_PAGED ? "paged" : "explicit",
		st.regions_copy_mode ? "copy" : "tracked");
	mmk_ckpt_destroy(c);
	assert_int_equal(mmk_rvm_close(r), 0);
	rm_dir(dir);
}

static void test_rvm_paged(void **state)
{
	(void)state;
	rvm_region(MMK_RVM_PAGED);
}

static void test_rvm_explicit(void **state)
{
	(void)state;
	rvm_region(MMK_RVM_EXPLICIT);
}

int main(void)
{
	(void)g_dir;
	mmk_test_seed();
	if (!tracked())
		fprintf(stderr, "# no userfaultfd WP+SIGBUS (%s): regions use copy mode\n",
			strerror(mmk_features_get()->uffd_errno));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc),
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_consistency),
		cmocka_unit_test(test_consistency_sweeps),
		cmocka_unit_test(test_incremental),
		cmocka_unit_test(test_restart_addresses),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_sigkill),
		cmocka_unit_test(test_enospc),
		cmocka_unit_test(test_failed_delta),
		cmocka_unit_test(test_periodic),
		cmocka_unit_test(test_snapshot_region),
		cmocka_unit_test(test_handler_order),
		cmocka_unit_test(test_prewrite),
		cmocka_unit_test(test_rvm_paged),
		cmocka_unit_test(test_rvm_explicit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
