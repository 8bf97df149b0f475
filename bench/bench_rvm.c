/*
 * bench/bench_rvm.c - recoverable memory (seed 004) vs LMDB and SQLite.
 *
 * Workload (the issue's): a 256 MiB region = 4 Mi records of 64 bytes;
 * each transaction updates K random records (K = 1, 10, 100) and commits
 * durably.  Systems, measured side by side in this run on the same file
 * system:
 *   mmkit paged     mmk_rvm, page-tracked (write-protection faults)
 *   mmkit explicit  mmk_rvm, set_range per record (byte-granular log)
 *   LMDB            default durable mode (liblmdb.so.0, dlopen)
 *   SQLite          WAL, synchronous=FULL, UPDATE by rowid (libsqlite3.so.0)
 * LMDB and SQLite are loaded at run time; "n/a (package missing)" if absent
 * (make bench installs liblmdb-dev and libsqlite3-dev).  Each cell is the
 * median of REPS timed runs; tx/s include log truncations/checkpoints when
 * they happen.  bytes/tx: device sectors written (/sys/dev/block/M:m/stat,
 * x 512) during the timed runs / transactions -- the whole device, so
 * concurrent writers on the machine inflate it.
 * Second table: NO_FLUSH commits (durable at the final flush, included).
 * --quick: 16 MiB region, short runs.  --full: longer runs, 5 repeats.
 */
#include "bench_util.h"

#include <mmkit.h>
#include <mmkit/rvm.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define REC 64

static size_t g_size, g_nrec;
static double g_secs;
static int g_reps;
static char g_dir[256];
static dev_t g_dev;


static long long dev_sectors(void)
{
	char p[128], buf[512];
	snprintf(p, sizeof p, "/sys/dev/block/%u:%u/stat", major(g_dev), minor(g_dev));
	FILE *f = fopen(p, "r");
	if (!f) { /* a partition's parent may be needed; try the whole disk */
		snprintf(p, sizeof p, "/sys/dev/block/%u:%u/../stat", major(g_dev), minor(g_dev));
		f = fopen(p, "r");
	}
	if (!f)
		return -1;
	long long v[8] = { 0 };
	if (!fgets(buf, sizeof buf, f) ||
	    sscanf(buf, "%lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4],
		   &v[5], &v[6]) != 7) {
		fclose(f);
		return -1;
	}
	fclose(f);
	return v[6];
}

typedef struct result {
	double txs;   /* tx/s, median */
	double bytes; /* bytes written per tx, median; < 0 unknown */
	bool ok;
	const char *why;
} result;

/* a system under test: one transaction of k updates */
typedef struct sut {
	const char *name;
	int (*tx)(void *ctx, int k);
	int (*finish)(void *ctx); /* after a timed run (NO_FLUSH: flush) */
	void *ctx;
} sut;

/* One timed run of s at k updates per transaction, accumulated into r
 * (tx[], bytes[]); r->ok false on error. */
static void measure_one(const sut *s, int k, result *r, double *tx, double *by, int rep)
{
	long long s0 = dev_sectors();
	double t0 = bench_now(), t;
	long n = 0;
	do {
		for (int i = 0; i < 16; i++, n++)
			if (s->tx(s->ctx, k)) {
				r->ok = false;
				r->why = "error";
				return;
			}
		t = bench_now();
	} while (t - t0 < g_secs);
	if (s->finish && s->finish(s->ctx)) {
		r->ok = false;
		r->why = "error";
		return;
	}
	t = bench_now();
	long long s1 = dev_sectors();
	tx[rep] = (double)n / (t - t0);
	by[rep] = s0 >= 0 && s1 >= 0 ? (double)(s1 - s0) * 512.0 / (double)n : -1;
	bench_progress("%s K=%d rep %d: %.0f tx/s", s->name, k, rep, tx[rep]);
}

typedef struct acc {
	result r;
	double tx[16], by[16];
} acc;

static void acc_finish(acc *a)
{
	if (a->r.ok) {
		a->r.txs = bench_median(a->tx, g_reps);
		a->r.bytes = bench_median(a->by, g_reps);
	}
}

/* ---- mmkit -------------------------------------------------------------------- */

typedef struct rvm_ctx {
	mmk_rvm *r;
	unsigned char *base;
	unsigned mode, flags;
	uint64_t counter;
} rvm_ctx;

static int rvm_tx(void *c_, int k)
{
	rvm_ctx *c = c_;
	if (mmk_rvm_begin(c->r, 0))
		return -1;
	for (int i = 0; i < k; i++) {
		unsigned char *p = c->base + (rnd() % g_nrec) * REC;
		if (c->mode == MMK_RVM_EXPLICIT && mmk_rvm_set_range(c->r, p, REC))
			return -1;
		c->counter++;
		memcpy(p, &c->counter, 8);
		memset(p + 8, (int)c->counter, REC - 8);
	}
	return mmk_rvm_commit(c->r, c->flags) ? -1 : 0;
}

static int rvm_finish(void *c_)
{
	rvm_ctx *c = c_;
	return mmk_rvm_flush(c->r) ? -1 : 0;
}

static char rvm_path[300];

static int rvm_populate(void)
{
	mmk_rvm *r;
	mmk_rvm_opts o = { .mode = MMK_RVM_EXPLICIT };
	int rc = mmk_rvm_open(&r, rvm_path, g_size, &o);
	if (rc)
		return rc;
	unsigned char *b = mmk_rvm_base(r);
	size_t chunk = 8u << 20;
	for (size_t off = 0; off < g_size && !rc; off += chunk) {
		size_t n = g_size - off < chunk ? g_size - off : chunk;
		rc = mmk_rvm_begin(r, 0);
		rc = rc ? rc : mmk_rvm_set_range(r, b + off, n);
		for (size_t i = 0; !rc && i < n; i += REC)
			memset(b + off + i, (int)(i / REC), REC);
		rc = rc ? rc : mmk_rvm_commit(r, MMK_RVM_NO_FLUSH);
	}
	rc = rc ? rc : mmk_rvm_truncate(r);
	int rc2 = mmk_rvm_close(r);
	return rc ? rc : rc2;
}

/* one timed run of mmk_rvm (opened and closed around it, untimed) */
static void run_rvm(unsigned mode, unsigned flags, int k, acc *a, int rep, mmk_rvm_stats *sum)
{
	rvm_ctx c = { .mode = mode, .flags = flags };
	mmk_rvm_opts o = { .mode = mode };
	int rc = mmk_rvm_open(&c.r, rvm_path, g_size, &o);
	if (rc) {
		fprintf(stderr, "bench_rvm: open: %s\n", mmk_strerror(rc));
		a->r.ok = false;
		a->r.why = "open failed";
		return;
	}
	c.base = mmk_rvm_base(c.r);
	sut s = { mode == MMK_RVM_PAGED ? "mmkit-paged" : "mmkit-explicit", rvm_tx,
		  flags == MMK_RVM_NO_FLUSH ? rvm_finish : NULL, &c };
	measure_one(&s, k, &a->r, a->tx, a->by, rep);
	mmk_rvm_stats st;
	if (sum && !mmk_rvm_stats_get(c.r, &st)) {
		sum->commits += st.commits;
		sum->log_bytes += st.log_bytes;
		sum->data_bytes += st.data_bytes;
		sum->truncates += st.truncates;
	}
	mmk_rvm_close(c.r);
}

/* ---- LMDB (dlopen) --------------------------------------------------------- */

typedef struct {
	size_t mv_size;
	void *mv_data;
} MDB_val;

static struct {
	void *lib;
	int (*env_create)(void **);
	int (*env_set_mapsize)(void *, size_t);
	int (*env_open)(void *, const char *, unsigned, unsigned);
	int (*txn_begin)(void *, void *, unsigned, void **);
	int (*dbi_open)(void *, const char *, unsigned, unsigned *);
	int (*put)(void *, unsigned, MDB_val *, MDB_val *, unsigned);
	int (*txn_commit)(void *);
	void (*env_close)(void *);
	void *env;
	unsigned dbi;
} L;

#define MDB_NOSUBDIR 0x4000
#define MDB_INTEGERKEY 0x08
#define MDB_CREATE 0x40000
#define MDB_APPEND 0x20000

static int lmdb_tx(void *ctx, int k)
{
	(void)ctx;
	void *txn;
	if (L.txn_begin(L.env, NULL, 0, &txn))
		return -1;
	static uint64_t counter;
	unsigned char v[REC];
	for (int i = 0; i < k; i++) {
		size_t key = rnd() % g_nrec;
		counter++;
		memcpy(v, &counter, 8);
		memset(v + 8, (int)counter, REC - 8);
		MDB_val kv = { sizeof key, &key }, dv = { REC, v };
		if (L.put(txn, L.dbi, &kv, &dv, 0))
			return -1;
	}
	return L.txn_commit(txn) ? -1 : 0;
}

static const char *lmdb_setup(void)
{
	L.lib = dlopen("liblmdb.so.0", RTLD_NOW);
	if (!L.lib)
		return "n/a (package missing)";
#define SYM(f, n) *(void **)&L.f = dlsym(L.lib, n)
	SYM(env_create, "mdb_env_create");
	SYM(env_set_mapsize, "mdb_env_set_mapsize");
	SYM(env_open, "mdb_env_open");
	SYM(txn_begin, "mdb_txn_begin");
	SYM(dbi_open, "mdb_dbi_open");
	SYM(put, "mdb_put");
	SYM(txn_commit, "mdb_txn_commit");
	SYM(env_close, "mdb_env_close");
	if (!L.env_create || !L.put || !L.env_close)
		return "n/a (symbols missing)";
	char p[300];
	snprintf(p, sizeof p, "%s/lmdb", g_dir);
	void *txn;
	if (L.env_create(&L.env) || L.env_set_mapsize(L.env, g_size * 4 + (64u << 20)) ||
	    L.env_open(L.env, p, MDB_NOSUBDIR, 0600) || L.txn_begin(L.env, NULL, 0, &txn) ||
	    L.dbi_open(txn, NULL, MDB_INTEGERKEY | MDB_CREATE, &L.dbi))
		return "n/a (setup failed)";
	unsigned char v[REC];
	for (size_t i = 0; i < g_nrec; i++) {
		memset(v, (int)i, REC);
		MDB_val kv = { sizeof i, &i }, dv = { REC, v };
		if (L.put(txn, L.dbi, &kv, &dv, MDB_APPEND))
			return "n/a (populate failed)";
	}
	if (L.txn_commit(txn))
		return "n/a (commit failed)";
	return NULL;
}

/* ---- SQLite (dlopen) ------------------------------------------------------- */

static struct {
	void *lib;
	int (*open)(const char *, void **);
	int (*exec)(void *, const char *, void *, void *, char **);
	int (*prepare)(void *, const char *, int, void **, const char **);
	int (*bind_int64)(void *, int, long long);
	int (*bind_blob)(void *, int, const void *, int, void (*)(void *));
	int (*step)(void *);
	int (*reset)(void *);
	int (*finalize)(void *);
	int (*close)(void *);
	void *db, *upd;
} S;

#define SQLITE_DONE 101

static int sqlite_tx(void *ctx, int k)
{
	(void)ctx;
	static uint64_t counter;
	unsigned char v[REC];
	if (S.exec(S.db, "BEGIN", NULL, NULL, NULL))
		return -1;
	for (int i = 0; i < k; i++) {
		long long key = (long long)(rnd() % g_nrec) + 1;
		counter++;
		memcpy(v, &counter, 8);
		memset(v + 8, (int)counter, REC - 8);
		S.bind_blob(S.upd, 1, v, REC, NULL);
		S.bind_int64(S.upd, 2, key);
		if (S.step(S.upd) != SQLITE_DONE)
			return -1;
		S.reset(S.upd);
	}
	return S.exec(S.db, "COMMIT", NULL, NULL, NULL) ? -1 : 0;
}

static const char *sqlite_setup(void)
{
	S.lib = dlopen("libsqlite3.so.0", RTLD_NOW);
	if (!S.lib)
		return "n/a (package missing)";
#define SSYM(f, n) *(void **)&S.f = dlsym(S.lib, n)
	SSYM(open, "sqlite3_open");
	SSYM(exec, "sqlite3_exec");
	SSYM(prepare, "sqlite3_prepare_v2");
	SSYM(bind_int64, "sqlite3_bind_int64");
	SSYM(bind_blob, "sqlite3_bind_blob");
	SSYM(step, "sqlite3_step");
	SSYM(reset, "sqlite3_reset");
	SSYM(finalize, "sqlite3_finalize");
	SSYM(close, "sqlite3_close");
	if (!S.open || !S.exec || !S.prepare || !S.step || !S.close)
		return "n/a (symbols missing)";
	char p[300];
	snprintf(p, sizeof p, "%s/sqlite.db", g_dir);
	if (S.open(p, &S.db) ||
	    S.exec(S.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
			 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); BEGIN;",
		   NULL, NULL, NULL))
		return "n/a (setup failed)";
	void *ins;
	if (S.prepare(S.db, "INSERT INTO t(id, v) VALUES(?1, ?2)", -1, &ins, NULL))
		return "n/a (prepare failed)";
	unsigned char v[REC];
	for (size_t i = 0; i < g_nrec; i++) {
		memset(v, (int)i, REC);
		S.bind_int64(ins, 1, (long long)i + 1);
		S.bind_blob(ins, 2, v, REC, NULL);
		if (S.step(ins) != SQLITE_DONE)
			return "n/a (populate failed)";
		S.reset(ins);
	}
	S.finalize(ins);
	if (S.exec(S.db, "COMMIT; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA synchronous=FULL;",
		   NULL, NULL, NULL) ||
	    S.prepare(S.db, "UPDATE t SET v = ?1 WHERE id = ?2", -1, &S.upd, NULL))
		return "n/a (setup failed)";
	return NULL;
}

/* ---- main ------------------------------------------------------------------------ */

static void fmt_txs(char *b, size_t n, const result *r, const char *why)
{
	if (why)
		snprintf(b, n, "%s", why);
	else if (!r->ok)
		snprintf(b, n, "%s", r->why ? r->why : "error");
	else
		snprintf(b, n, "%.0f", r->txs);
}

static void fmt_bytes(char *b, size_t n, const result *r, const char *why)
{
	if (why || !r->ok || r->bytes < 0)
		snprintf(b, n, "n/a");
	else
		snprintf(b, n, "%.0f", r->bytes);
}

static void fmt_ratio(char *b, size_t n, const result *a, const result *x, const char *why)
{
	if (why || !a->ok || !x->ok || x->txs <= 0)
		snprintf(b, n, "n/a");
	else
		snprintf(b, n, "%.2f", a->txs / x->txs);
}

/* bytes mmkit itself wrote (log + data, truncations included) per commit */
static double own_bytes(const mmk_rvm_stats *st)
{
	return st->commits ? (double)(st->log_bytes + st->data_bytes) / (double)st->commits : 0;
}

int main(int argc, char **argv)
{
	bench_mode mode = bench_parse_mode(argc, argv);
	g_size = mode == BENCH_QUICK ? (16u << 20) : (256u << 20);
	g_secs = mode == BENCH_QUICK ? 0.2 : (mode == BENCH_FULL ? 2.0 : 0.7);
	g_reps = mode == BENCH_FULL ? 5 : 3;
	g_nrec = g_size / REC;
	const char *base = getenv("MMK_BENCH_DIR") ? getenv("MMK_BENCH_DIR") : "/var/tmp";
	snprintf(g_dir, sizeof g_dir, "%s/bench_rvm.XXXXXX", base);
	if (!mkdtemp(g_dir)) {
		perror("mkdtemp");
		return 1;
	}
	struct stat sb;
	stat(g_dir, &sb);
	g_dev = sb.st_dev;
	snprintf(rvm_path, sizeof rvm_path, "%s/store", g_dir);

	fprintf(stderr, "bench_rvm: populating %zu MiB (%zu records) in %s\n", g_size >> 20,
		g_nrec, g_dir);
	int rc = rvm_populate();
	if (rc) {
		fprintf(stderr, "bench_rvm: populate: %s\n", mmk_strerror(rc));
		return 1;
	}
	const char *lmdb_why = lmdb_setup();
	const char *sqlite_why = sqlite_setup();
	sut lm = { "lmdb", lmdb_tx, NULL, NULL }, sq = { "sqlite", sqlite_tx, NULL, NULL };

	static const int ks[] = { 1, 10, 100 };
	static const char *ref_lmdb[] = { "13.4k", "4.4k", "564" };
	static const char *ref_sqlite[] = { "25k", "7.4k", "946" };
	printf("K,paged_tx_s,explicit_tx_s,lmdb_tx_s,sqlite_tx_s,paged/lmdb,explicit/lmdb,"
	       "paged/sqlite,explicit/sqlite,paged_B_tx,explicit_B_tx,lmdb_B_tx,sqlite_B_tx,"
	       "paged_own_B_tx,explicit_own_B_tx,target(2x lmdb and >= sqlite),notes_lmdb_tx_s,"
	       "notes_sqlite_tx_s\n");
	for (int i = 0; i < 3; i++) {
		int k = ks[i];
		mmk_rvm_stats pst = { 0 }, est = { 0 };
		acc pa = { .r.ok = true }, ea = { .r.ok = true }, la = { .r.ok = true },
		    sa = { .r.ok = true };
		/* round robin, so that every system sees the same machine load */
		for (int rep = 0; rep < g_reps; rep++) {
			run_rvm(MMK_RVM_PAGED, MMK_RVM_FLUSH, k, &pa, rep, &pst);
			run_rvm(MMK_RVM_EXPLICIT, MMK_RVM_FLUSH, k, &ea, rep, &est);
			if (!lmdb_why && la.r.ok)
				measure_one(&lm, k, &la.r, la.tx, la.by, rep);
			if (!sqlite_why && sa.r.ok)
				measure_one(&sq, k, &sa.r, sa.tx, sa.by, rep);
		}
		acc_finish(&pa);
		acc_finish(&ea);
		acc_finish(&la);
		acc_finish(&sa);
		result pg = pa.r, ex = ea.r, l = la.r, s = sa.r;
		char c[14][64];
		fmt_txs(c[0], 64, &pg, NULL);
		fmt_txs(c[1], 64, &ex, NULL);
		fmt_txs(c[2], 64, &l, lmdb_why);
		fmt_txs(c[3], 64, &s, sqlite_why);
		fmt_ratio(c[4], 64, &pg, &l, lmdb_why);
		fmt_ratio(c[5], 64, &ex, &l, lmdb_why);
		fmt_ratio(c[6], 64, &pg, &s, sqlite_why);
		fmt_ratio(c[7], 64, &ex, &s, sqlite_why);
		fmt_bytes(c[8], 64, &pg, NULL);
		fmt_bytes(c[9], 64, &ex, NULL);
		fmt_bytes(c[10], 64, &l, lmdb_why);
		fmt_bytes(c[11], 64, &s, sqlite_why);
		const char *met = "n/a";
		if (!lmdb_why && !sqlite_why && l.ok && s.ok) {
			bool pm = pg.ok && pg.txs >= 2 * l.txs && pg.txs >= s.txs;
			bool em = ex.ok && ex.txs >= 2 * l.txs && ex.txs >= s.txs;
			met = pm && em ? "both modes" : em ? "explicit only" : pm ? "paged only" : "no";
		}
		printf("%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%.0f,%.0f,%s,%s,%s\n", k, c[0], c[1],
		       c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11],
		       own_bytes(&pst), own_bytes(&est), met, ref_lmdb[i], ref_sqlite[i]);
		fflush(stdout);
	}
	printf("\nK,mode,commit,tx_s,target_tx_s,ratio,own_B_tx,truncates\n");
	for (unsigned m = 0; m < 2; m++) {
		mmk_rvm_stats st = { 0 };
		acc a = { .r.ok = true };
		for (int rep = 0; rep < g_reps; rep++)
			run_rvm(m == 0 ? MMK_RVM_EXPLICIT : MMK_RVM_PAGED, MMK_RVM_NO_FLUSH, 1, &a, rep,
				&st);
		acc_finish(&a);
		result r = a.r;
		char t[64], q[64] = "-";
		fmt_txs(t, sizeof t, &r, NULL);
		if (m == 0 && r.ok)
			snprintf(q, sizeof q, "%.2f", r.txs / 1e6);
		printf("1,%s,NO_FLUSH,%s,%s,%s,%.0f,%llu\n", m == 0 ? "explicit" : "paged", t,
		       m == 0 ? "1000000" : "-", q, own_bytes(&st), st.truncates);
	}
	printf("# %zu MiB region, %d-byte records, median of %d runs of %.1f s; tx/s include "
	       "truncations; *_B_tx = device bytes written per transaction (whole device: other writers "
	       "on the machine inflate it); *_own_B_tx = bytes mmkit wrote to its log and data files per "
	       "transaction (exact)\n",
	       g_size >> 20, REC, g_reps, g_secs);
	printf("# notes_*: the peers as measured earlier on this machine class "
	       "(shared/notes/linux-mechanisms.md)\n");
	if (L.env)
		L.env_close(L.env);
	if (S.db) {
		S.finalize(S.upd);
		S.close(S.db);
	}
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_rvm: could not remove %s\n", g_dir);
	return 0;
}
