/*
 * rvm/store.c - an rvm store's life: create, lock, load + recover,
 * checkpoint (truncate), close, and the read-only check.
 *
 * Invariants:
 *   - a store directory appears only complete: it is built under a
 *     temporary name (files written and fsynced, directory fsynced) and
 *     renamed into place, then the parent directory is fsynced;
 *   - open applies log records to memory only; the files are changed only
 *     by the checkpoint that follows, after every check passed, so a
 *     failing open changes nothing;
 *   - a checkpoint first makes the log durable and complete (buffered
 *     records and an intent record listing the new CRC of every page it
 *     will write, synced: the log then covers every page the checkpoint
 *     writes), then makes the data file hold the memory image
 *     (pages and CRCs), syncs it, and only then starts a new log generation in the
 *     other header slot and syncs the log: at every instant the durable
 *     data file + the durable log replay to the last durable state;
 *   - every open ends with a checkpoint, so records of an older generation
 *     (including a torn tail) can never be mistaken for new ones.
 */
#include "rvm/rvm_int.h"
#include <mmkit/features.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BUF (1u << 20)

int mmk__rvm_fail(mmk_rvm *h, int err)
{
	if (!h->fatal)
		h->fatal = err ? err : -EIO;
	return err;
}

static void mark_page(mmk_rvm *h, size_t pg)
{
	uint64_t bit = 1ULL << (pg & 63);
	if (!(h->dirty[pg >> 6] & bit)) {
		h->dirty[pg >> 6] |= bit;
		h->dirty_idx[h->ndirty++] = (uint32_t)pg;
	}
}

void mmk__rvm_mark(mmk_rvm *h, uint64_t off, uint64_t len)
{
	if (!len)
		return;
	for (uint64_t pg = off / RVM_PAGE; pg <= (off + len - 1) / RVM_PAGE; pg++)
		mark_page(h, (size_t)pg);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void fill_log_hdr(const mmk_rvm *h, rvm_log_hdr *lh, uint64_t gen, uint64_t start)
{
	memset(lh, 0, sizeof *lh);
	lh->magic = RVM_LOG_MAGIC;
	lh->version = RVM_VERSION;
	lh->gen = gen;
	lh->start_seq = start;
	lh->log_size = h->log_size;
	lh->size = h->size;
	lh->store_id = h->store_id;
	lh->crc = mmk__rvm_hdr_crc(lh, sizeof *lh, &lh->crc);
}

/* Append the intent record for the (sorted) dirty set, whose CRCs are in
 * h->crcs, behind the buffered records: written by the flush that follows.
 * The commit path keeps room for it in the log and the buffer may be
 * exceeded (then it is written out first). */
static int write_intent(mmk_rvm *h)
{
	uint64_t len = rvm_intent_len(h->ndirty);
	unsigned char *rec = mmk__self_alloc((size_t)rvm_round(len, RVM_PAGE));
	if (!rec)
		return -ENOMEM;
	rvm_rec_hdr hdr;
	memset(&hdr, 0, sizeof hdr);
	hdr.magic = RVM_REC_MAGIC;
	hdr.gen = h->gen;
	hdr.seq = h->next_seq;
	hdr.group = h->group ? h->group : h->next_seq;
	hdr.len = len;
	hdr.nranges = (uint32_t)h->ndirty;
	hdr.type = RVM_REC_INTENT;
	for (size_t k = 0; k < h->ndirty; k++) {
		rvm_intent_ent e = { h->dirty_idx[k], h->crcs[h->dirty_idx[k]] };
		memcpy(rec + sizeof hdr + 8 * k, &e, sizeof e);
	}
	memcpy(rec, &hdr, sizeof hdr);
	hdr.crc = mmk__crc32c(0, rec, (size_t)len);
	memcpy(rec, &hdr, sizeof hdr);
	int rc = 0;
	if (h->log_pos + h->buf_len + len > h->log_size) {
		rc = -ENOSPC; /* cannot happen: commits keep room for it */
	} else {
		struct iovec v[2] = { { h->buf, h->buf_len }, { rec, (size_t)len } };
		rc = mmk__rvm_io_writev(&h->io, h->logfd, h->buf_len ? v : v + 1,
					h->buf_len ? 2 : 1, h->log_pos);
		if (!rc) {
			h->st.log_bytes += h->buf_len + len;
			h->log_pos += h->buf_len + len;
			h->buf_len = 0;
			h->unsynced = true;
			h->group = h->group ? h->group : h->next_seq;
			h->next_seq++;
		}
	}
	mmk__self_free(rec, (size_t)rvm_round(len, RVM_PAGE));
	return rc;
}

int mmk__rvm_checkpoint(mmk_rvm *h)
{
	if (h->fatal)
		return MMK_EFATAL;
	/* the log must cover every page about to be written: buffered NO_FLUSH
	 * records go to the log first, with the intent record, synced */
	int rc;
	if (h->ndirty) {
		qsort(h->dirty_idx, h->ndirty, sizeof *h->dirty_idx, cmp_u32);
		for (size_t k = 0; k < h->ndirty; k++)
			h->crcs[h->dirty_idx[k]] =
				mmk__crc32c(0, h->base + (size_t)h->dirty_idx[k] * RVM_PAGE, RVM_PAGE);
		if (!h->have_intent) {
			rc = write_intent(h);
			if (rc)
				return mmk__rvm_fail(h, rc);
		}
	}
	rc = mmk_rvm_flush(h);
	if (rc)
		return rc;
	if (h->ndirty) {
		size_t i = 0;
		while (i < h->ndirty) {
			size_t j = i + 1;
			while (j < h->ndirty && h->dirty_idx[j] == h->dirty_idx[j - 1] + 1 &&
			       j - i < 256)
				j++;
			uint64_t pg = h->dirty_idx[i];
			size_t len = (j - i) * RVM_PAGE;
			rc = mmk__rvm_io_write(&h->io, h->datafd, h->base + pg * RVM_PAGE, len,
					       h->region_off + pg * RVM_PAGE);
			if (rc)
				return mmk__rvm_fail(h, rc);
			h->st.data_bytes += len;
			i = j;
		}
		/* the table pages holding changed CRCs */
		const size_t per = RVM_PAGE / sizeof(uint32_t);
		size_t last = SIZE_MAX;
		for (i = 0; i < h->ndirty; i++) {
			size_t t = h->dirty_idx[i] / per;
			if (t == last)
				continue;
			last = t;
			size_t n = h->npages - t * per < per ? h->npages - t * per : per;
			rc = mmk__rvm_io_write(&h->io, h->datafd, h->crcs + t * per,
					       n * sizeof(uint32_t),
					       h->table_off + t * RVM_PAGE);
			if (rc)
				return mmk__rvm_fail(h, rc);
			h->st.data_bytes += n * sizeof(uint32_t);
		}
		rc = mmk__rvm_io_sync(&h->io, h->datafd, true);
		h->st.syncs++;
		if (rc)
			return mmk__rvm_fail(h, rc);
	}
	/* new generation in the other slot */
	unsigned char page[RVM_PAGE];
	memset(page, 0, sizeof page);
	rvm_log_hdr lh;
	fill_log_hdr(h, &lh, h->gen + 1, h->next_seq);
	memcpy(page, &lh, sizeof lh);
	int slot = h->slot ^ 1;
	rc = mmk__rvm_io_write(&h->io, h->logfd, page, sizeof page, (uint64_t)slot * RVM_PAGE);
	if (!rc) {
		h->st.log_bytes += sizeof page;
		rc = mmk__rvm_io_sync(&h->io, h->logfd, true);
		h->st.syncs++;
	}
	if (rc)
		return mmk__rvm_fail(h, rc);
	h->slot = slot;
	h->gen++;
	h->start_seq = h->next_seq;
	h->log_pos = RVM_LOG_START;
	h->buf_len = 0;
	h->group = 0;
	h->unsynced = false;
	for (size_t i = 0; i < h->ndirty; i++)
		h->dirty[h->dirty_idx[i] >> 6] = 0;
	h->ndirty = 0;
	h->have_intent = false;
	h->st.truncates++;
	return 0;
}

/* ---- creation ---------------------------------------------------------------- */

static int fsync_dir_of(mmk__rvm_io *io, const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if (slash == path)
		snprintf(dir, sizeof dir, "/");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = mmk__rvm_io_sync(io, fd, false);
	close(fd);
	return rc;
}

static int create_store(mmk__rvm_io *io, const char *path, size_t size, size_t log_size)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path) >= (int)sizeof tmp)
		return -ENAMETOOLONG;
	if (!mkdtemp(tmp))
		return -errno;
	int dfd = -1, datafd = -1, logfd = -1, rc = 0;
	uint32_t *table = NULL;
	unsigned char *zero = NULL;
	size_t npages = size / RVM_PAGE;
	size_t table_bytes = rvm_round(npages * sizeof(uint32_t), RVM_PAGE);
	uint64_t store_id = 0;

	dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		rc = -errno;
		goto out;
	}
	if (getrandom(&store_id, sizeof store_id, 0) != sizeof store_id)
		store_id = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)time(NULL);
	datafd = openat(dfd, "data", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	logfd = openat(dfd, "log", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (datafd < 0 || logfd < 0) {
		rc = -errno;
		goto out;
	}
	/* data: header, CRC table of zero pages, sparse region */
	rvm_data_hdr dh;
	memset(&dh, 0, sizeof dh);
	dh.magic = RVM_DATA_MAGIC;
	dh.version = RVM_VERSION;
	dh.page = RVM_PAGE;
	dh.size = size;
	dh.store_id = store_id;
	dh.table_off = RVM_DATA_HDR;
	dh.region_off = RVM_DATA_HDR + table_bytes;
	dh.crc = mmk__rvm_hdr_crc(&dh, sizeof dh, &dh.crc);
	if (ftruncate(datafd, (off_t)(dh.region_off + size)) < 0) {
		rc = -errno;
		goto out;
	}
	zero = mmk__self_alloc(1u << 20);
	table = mmk__self_alloc(table_bytes);
	if (!zero || !table) {
		rc = -ENOMEM;
		goto out;
	}
	uint32_t zc = mmk__crc32c(0, zero, RVM_PAGE);
	for (size_t i = 0; i < npages; i++)
		table[i] = zc;
	memcpy(zero, &dh, sizeof dh);
	rc = mmk__rvm_io_write(io, datafd, zero, RVM_DATA_HDR, 0);
	memset(zero, 0, sizeof dh);
	if (!rc)
		rc = mmk__rvm_io_write(io, datafd, table, table_bytes, RVM_DATA_HDR);
	if (!rc)
		rc = mmk__rvm_io_sync(io, datafd, false);
	/* log: written zeros (real blocks, so overwrites need no metadata) */
	for (uint64_t off = 0; !rc && off < log_size; off += 1u << 20) {
		size_t n = log_size - off < (1u << 20) ? (size_t)(log_size - off) : (1u << 20);
		rc = mmk__rvm_io_write(io, logfd, zero, n, off);
	}
	if (!rc) {
		rvm_log_hdr lh;
		mmk_rvm tmph;
		memset(&tmph, 0, sizeof tmph);
		tmph.log_size = log_size;
		tmph.size = size;
		tmph.store_id = store_id;
		fill_log_hdr(&tmph, &lh, 1, 1);
		rc = mmk__rvm_io_write(io, logfd, &lh, sizeof lh, 0);
	}
	if (!rc)
		rc = mmk__rvm_io_sync(io, logfd, false);
	if (!rc)
		rc = mmk__rvm_io_sync(io, dfd, false);
	if (rc)
		goto out;
	if (rename(tmp, path) < 0) {
		rc = errno == EEXIST || errno == ENOTEMPTY ? 1 : -errno;
		goto out;
	}
	rc = fsync_dir_of(io, path);
	tmp[0] = 0;
out:
	if (zero)
		mmk__self_free(zero, 1u << 20);
	if (table)
		mmk__self_free(table, table_bytes);
	if (datafd >= 0)
		close(datafd);
	if (logfd >= 0)
		close(logfd);
	if (dfd >= 0)
		close(dfd);
	if (tmp[0] && rc) { /* failed or lost the race: remove our attempt */
		char p[PATH_MAX + 8];
		snprintf(p, sizeof p, "%s/data", tmp);
		unlink(p);
		snprintf(p, sizeof p, "%s/log", tmp);
		unlink(p);
		rmdir(tmp);
	}
	return rc == 1 ? 0 : rc;
}

/* ---- loading (open and check) --------------------------------------------- */

typedef struct load_ctx {
	mmk_rvm *h;
	mmk_rvm_info *info;
	mmk_rvm_record_fn fn;
	void *arg;
	size_t prebad, prefirst;      /* covered pages failing their CRC before redo */
	const unsigned char *intent;  /* the last intent record, or NULL */
} load_ctx;

/* first time a record touches page pg: before redo it must still be the
 * page of the last checkpoint (unless an intent follows: checked later) */
static void mark_cb(void *arg, size_t pg)
{
	load_ctx *c = arg;
	mmk_rvm *h = c->h;
	if ((h->dirty[pg >> 6] >> (pg & 63)) & 1)
		return;
	if (mmk__crc32c(0, h->base + pg * RVM_PAGE, RVM_PAGE) != h->crcs[pg] && !c->prebad++)
		c->prefirst = pg;
	mark_page(h, pg);
}

static int apply_cb(const unsigned char *rec, const rvm_rec_hdr *hdr, uint64_t off, void *arg)
{
	load_ctx *c = arg;
	if (hdr->type == RVM_REC_INTENT)
		c->intent = rec;
	else
		mmk__rvm_apply(rec, c->h->base, mark_cb, c);
	if (c->fn)
		c->fn(hdr->seq, off, hdr->len, hdr->nranges, c->arg);
	return 0;
}

static int problem(mmk_rvm_info *info, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int problem(mmk_rvm_info *info, int err, const char *fmt, ...)
{
	if (info && !info->problem[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(info->problem, sizeof info->problem, fmt, ap);
		va_end(ap);
	}
	if (info && !info->status)
		info->status = err;
	return err;
}

static int load(mmk_rvm *h, size_t want, mmk_rvm_info *info, mmk_rvm_record_fn fn, void *arg)
{
	rvm_data_hdr dh;
	struct stat st;
	int rc = mmk__rvm_io_read(h->datafd, &dh, sizeof dh, 0);
	if (rc == -EIO || (!rc && !mmk__rvm_data_hdr_ok(&dh)))
		return problem(info, MMK_ECORRUPT, "data: header missing or damaged");
	if (rc)
		return rc;
	if (want && want != dh.size)
		return problem(info, -EINVAL, "size %zu asked, store has %llu", want,
			       (unsigned long long)dh.size);
	h->size = dh.size;
	h->npages = dh.size / RVM_PAGE;
	h->store_id = dh.store_id;
	h->table_off = dh.table_off;
	h->region_off = dh.region_off;
	if (info) {
		info->size = h->size;
		info->store_id = h->store_id;
	}
	if (fstat(h->datafd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < h->region_off + h->size ||
	    h->region_off < h->table_off + h->npages * sizeof(uint32_t))
		return problem(info, MMK_ECORRUPT, "data: file truncated (%lld bytes, need %llu)",
			       (long long)st.st_size,
			       (unsigned long long)(h->region_off + h->size));
	h->crcs = mmk__self_alloc(rvm_round(h->npages * 4, RVM_PAGE));
	h->dirty = mmk__self_alloc(rvm_round((h->npages + 63) / 64 * 8, RVM_PAGE));
	h->dirty_idx = mmk__self_alloc(rvm_round(h->npages * 4, RVM_PAGE));
	h->base = mmap(NULL, h->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (h->base == MAP_FAILED)
		h->base = NULL;
	if (!h->crcs || !h->dirty || !h->dirty_idx || !h->base)
		return -ENOMEM;
	rc = mmk__rvm_io_read(h->datafd, h->crcs, h->npages * 4, h->table_off);
	if (!rc)
		rc = mmk__rvm_io_read(h->datafd, h->base, h->size, h->region_off);
	if (rc)
		return rc;
	/* the log */
	if (fstat(h->logfd, &st) < 0)
		return -errno;
	uint64_t lsize = (uint64_t)st.st_size;
	if (lsize < RVM_LOG_START + RVM_SECTOR)
		return problem(info, MMK_ECORRUPT, "log: file truncated (%llu bytes)",
			       (unsigned long long)lsize);
	unsigned char *lp = mmap(NULL, lsize, PROT_READ, MAP_SHARED, h->logfd, 0);
	if (lp == MAP_FAILED)
		return -errno;
	rvm_log_hdr lh;
	bool other = false;
	int slot = mmk__rvm_pick_header(lp, lsize, &lh, &other);
	if (info) {
		info->header_slot = slot;
		info->header_other_valid = other;
	}
	if (slot < 0) {
		rvm_log_hdr raw;
		memcpy(&raw, lp, sizeof raw);
		munmap(lp, lsize);
		if (raw.magic == RVM_LOG_MAGIC && raw.log_size != lsize)
			return problem(info, MMK_ECORRUPT,
				       "log: file is %llu bytes, header says %llu (truncated?)",
				       (unsigned long long)lsize,
				       (unsigned long long)raw.log_size);
		return problem(info, MMK_ECORRUPT, "log: no intact header");
	}
	if (lh.size != h->size || lh.store_id != h->store_id) {
		munmap(lp, lsize);
		return problem(info, MMK_ECORRUPT, "log: belongs to another store");
	}
	h->log_size = lsize;
	h->gen = lh.gen;
	h->slot = slot;
	h->start_seq = lh.start_seq;
	if (info) {
		info->log_size = lsize;
		info->gen = lh.gen;
		info->start_seq = lh.start_seq;
	}
	load_ctx c = { h, info, fn, arg, 0, 0, NULL };
	rvm_scan sc;
	rc = mmk__rvm_scan(lp, lsize, &lh, apply_cb, &c, &sc);
	/* the pages the log covers */
	size_t bad = 0, first = 0;
	h->have_intent = false;
	if (!rc && c.intent) {
		/* an interrupted checkpoint: every covered page must now (after
		 * redo) have the content it was about to write */
		rvm_rec_hdr ih;
		memcpy(&ih, c.intent, sizeof ih);
		size_t listed = 0;
		for (uint32_t i = 0; i < ih.nranges; i++) {
			rvm_intent_ent e;
			memcpy(&e, c.intent + sizeof ih + 8 * (size_t)i, sizeof e);
			if (!((h->dirty[e.page >> 6] >> (e.page & 63)) & 1))
				continue;
			listed++;
			if (mmk__crc32c(0, h->base + (size_t)e.page * RVM_PAGE, RVM_PAGE) != e.crc &&
			    !bad++)
				first = e.page;
		}
		if (listed != h->ndirty && !bad++) /* a covered page it does not list */
			first = 0;
		h->have_intent = !bad && ih.nranges == h->ndirty && sc.last_seq == ih.seq;
	} else {
		bad = c.prebad;
		first = c.prefirst;
	}
	munmap(lp, lsize);
	if (rc)
		return rc;
	h->next_seq = sc.last_seq + 1;
	h->st.recovered = sc.records;
	if (info) {
		info->records = sc.records;
		info->record_bytes = sc.bytes;
		info->last_seq = sc.last_seq;
		info->log_end = sc.end;
		info->torn_tail = sc.torn_tail;
		info->log_corrupt = sc.corrupt;
	}
	if (sc.corrupt)
		rc = problem(info, MMK_ECORRUPT,
			     "log: damaged record at offset %llu (seq %llu) precedes intact ones",
			     (unsigned long long)sc.end, (unsigned long long)h->next_seq);
	/* pages the log does not cover must match their CRC */
	for (size_t i = 0; i < h->npages; i++) {
		if ((h->dirty[i >> 6] >> (i & 63)) & 1)
			continue;
		if (mmk__crc32c(0, h->base + i * RVM_PAGE, RVM_PAGE) != h->crcs[i]) {
			if (!bad++)
				first = i;
		}
	}
	if (info) {
		info->pages_bad = bad;
		info->first_bad_page = first;
	}
	if (bad)
		rc = problem(info, MMK_ECORRUPT, "data: %zu page(s) fail their CRC, first %zu",
			     bad, first);
	return rc;
}

static void release(mmk_rvm *h)
{
	if (h->snap)
		mmk_snap_destroy(h->snap);
	if (h->base)
		munmap(h->base, h->size);
	if (h->crcs)
		mmk__self_free(h->crcs, rvm_round(h->npages * 4, RVM_PAGE));
	if (h->dirty)
		mmk__self_free(h->dirty, rvm_round((h->npages + 63) / 64 * 8, RVM_PAGE));
	if (h->dirty_idx)
		mmk__self_free(h->dirty_idx, rvm_round(h->npages * 4, RVM_PAGE));
	if (h->buf)
		mmk__self_free(h->buf, h->buf_cap);
	mmk__self_release(h->ranges);
	mmk__self_release(h->undo);
	mmk__self_release(h->iov);
	mmk__self_release(h->rh);
	mmk__rvm_io_fini(&h->io);
	if (h->datafd >= 0)
		close(h->datafd);
	if (h->logfd >= 0)
		close(h->logfd);
	if (h->dirfd >= 0)
		close(h->dirfd); /* releases the lock */
	mmk__self_release(h);
}

static int open_files(mmk_rvm *h, const char *path, int lock, int oflags)
{
	h->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->dirfd < 0)
		return -errno;
	if (flock(h->dirfd, lock | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EBUSY : -errno;
	h->datafd = openat(h->dirfd, "data", oflags | O_CLOEXEC);
	h->logfd = openat(h->dirfd, "log", oflags | O_CLOEXEC);
	if (h->datafd < 0 || h->logfd < 0)
		return errno == ENOENT ? MMK_ECORRUPT : -errno;
	return 0;
}

static mmk_rvm *new_handle(void)
{
	mmk_rvm *h = mmk__self_calloc(1, sizeof *h);
	if (h)
		h->dirfd = h->datafd = h->logfd = -1;
	return h;
}

int mmk_rvm_open(mmk_rvm **out, const char *path, size_t size, const mmk_rvm_opts *opts)
{
	mmk_rvm_opts o = { 0 };
	if (opts)
		o = *opts;
	if (!out || !path || !*path || o.mode > MMK_RVM_EXPLICIT ||
	    o.commit_default > MMK_RVM_NO_FLUSH || size > (1ULL << 44))
		return -EINVAL;
	*out = NULL;
	size = (size_t)rvm_round(size, RVM_PAGE);
	mmk_rvm *h = new_handle();
	if (!h)
		return -ENOMEM;
	h->mode = o.mode;
	h->commit_default = o.commit_default ? o.commit_default : MMK_RVM_FLUSH;
	h->backend = o.backend;
	mmk__rvm_io_init(&h->io, o.fault);
	int rc = open_files(h, path, LOCK_EX, O_RDWR);
	if (rc == -ENOENT) {
		if (!size) {
			release(h);
			return -ENOENT;
		}
		size_t ls = o.log_size;
		if (!ls) {
			ls = 2 * size + (1u << 20);
			if (ls > (64u << 20))
				ls = 64u << 20;
		}
		ls = (size_t)rvm_round(ls, RVM_PAGE);
		if (ls < RVM_LOG_START + 4 * RVM_PAGE)
			ls = RVM_LOG_START + 4 * RVM_PAGE;
		rc = create_store(&h->io, path, size, ls);
		if (!rc) {
			if (h->dirfd >= 0)
				close(h->dirfd);
			h->dirfd = -1;
			rc = open_files(h, path, LOCK_EX, O_RDWR);
		}
	}
	if (!rc)
		rc = load(h, size, NULL, NULL, NULL);
	if (!rc) {
		h->buf_cap = o.buffer_size ? rvm_round(o.buffer_size, RVM_PAGE) : DEFAULT_BUF;
		h->buf = mmk__self_alloc(h->buf_cap);
		if (!h->buf)
			rc = -ENOMEM;
	}
	if (!rc) /* recovery: write back what the log held, new generation */
		rc = mmk__rvm_checkpoint(h);
	if (!rc && h->mode == MMK_RVM_PAGED) {
		/* big regions tracked lazily (O(pages written) per transaction,
		 * independent of the region's size); see the caveat in rvm.h */
		mmk_snap_opts so = { .backend = h->backend,
				     .flags = h->backend == MMK_SNAP_AUTO &&
						      mmk_features_get()->uffd_wp &&
						      mmk_features_get()->uffd_sigbus
					      ? MMK_SNAP_LAZY_LARGE
					      : 0 };
		rc = mmk_snap_create(&h->snap, &so);
		if (!rc)
			rc = mmk_snap_add(h->snap, h->base, h->size);
	}
	if (rc) {
		release(h);
		return rc;
	}
	h->st.truncates = 0;
	h->st.syncs = 0;
	h->st.log_bytes = h->st.data_bytes = 0;
	*out = h;
	return 0;
}

void *mmk_rvm_base(mmk_rvm *h)
{
	return h ? h->base : NULL;
}

size_t mmk_rvm_size(const mmk_rvm *h)
{
	return h ? h->size : 0;
}

int mmk_rvm_truncate(mmk_rvm *h)
{
	if (!h)
		return -EINVAL;
	if (h->fatal)
		return MMK_EFATAL;
	if (h->in_tx)
		return -EBUSY;
	return mmk__rvm_checkpoint(h);
}

int mmk_rvm_close(mmk_rvm *h)
{
	if (!h)
		return 0;
	int rc = 0;
	if (h->in_tx && !h->fatal)
		rc = mmk_rvm_abort(h);
	if (!h->fatal && (h->buf_len || h->unsynced)) {
		int r2 = mmk_rvm_flush(h);
		if (!rc)
			rc = r2;
	}
	release(h);
	return rc;
}

int mmk_rvm_stats_get(const mmk_rvm *h, mmk_rvm_stats *st)
{
	if (!h || !st)
		return -EINVAL;
	*st = h->st;
	st->log_size = h->log_size;
	st->log_used = h->log_pos + h->buf_len - RVM_LOG_START;
	st->backend = "explicit";
	if (h->snap) {
		mmk_snap_stats ss;
		if (!mmk_snap_stats_get(h->snap, &ss))
			st->backend = ss.backend;
	}
	return 0;
}

int mmk_rvm_check(const char *path, mmk_rvm_info *info, mmk_rvm_record_fn fn, void *arg)
{
	mmk_rvm_info local;
	if (!info)
		info = &local;
	memset(info, 0, sizeof *info);
	info->header_slot = -1;
	if (!path)
		return -EINVAL;
	mmk_rvm *h = new_handle();
	if (!h)
		return -ENOMEM;
	mmk__rvm_io_init(&h->io, NULL);
	int rc = open_files(h, path, LOCK_SH, O_RDONLY);
	if (rc == MMK_ECORRUPT)
		problem(info, rc, "data or log file missing");
	if (!rc)
		rc = load(h, 0, info, fn, arg);
	if (rc && !info->status)
		info->status = rc;
	release(h);
	return rc;
}
