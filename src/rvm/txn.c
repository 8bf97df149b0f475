/*
 * rvm/txn.c - transactions: begin, set_range, commit, abort, flush.
 *
 * Invariants:
 *   - between begin and commit/abort, memory differs from the committed
 *     state only inside the transaction's write set, and that set can be
 *     undone (paged: the snapshot's save point; explicit: the old bytes
 *     copied at set_range, undone in reverse order);
 *   - a commit appends exactly one record (or none for an empty write
 *     set); FLUSH writes the buffered NO_FLUSH records and its own in one
 *     write followed by one fdatasync, and returns 0 only after both
 *     succeeded; a failure undoes the transaction in memory and makes the
 *     handle fatal;
 *   - when the log cannot hold the record, the transaction is undone in
 *     memory, the log truncated (memory is then exactly the committed
 *     state), the record re-applied and appended to the fresh log.
 */
#include "rvm/rvm_int.h"

#include <errno.h>
#include <string.h>

int mmk_rvm_begin(mmk_rvm *h, unsigned flags)
{
	if (!h || flags)
		return -EINVAL;
	if (h->fatal)
		return MMK_EFATAL;
	if (h->in_tx)
		return -EBUSY;
	if (h->snap) {
		int rc = mmk_snap_save(h->snap);
		if (rc < 0)
			return rc;
	}
	h->nranges = 0;
	h->undo_len = 0;
	h->in_tx = true;
	return 0;
}

int mmk_rvm_set_range(mmk_rvm *h, void *addr, size_t len)
{
	if (!h)
		return -EINVAL;
	if (h->fatal)
		return MMK_EFATAL;
	if (!h->in_tx)
		return -EPROTO;
	uintptr_t a = (uintptr_t)addr, b = (uintptr_t)h->base;
	if (!len || a < b || a - b > h->size || len > h->size - (a - b))
		return -EINVAL;
	if (h->mode == MMK_RVM_PAGED)
		return 0;
	if (mmk__rvm_reserve((void **)&h->ranges, &h->rcap, h->nranges + 1, sizeof *h->ranges) ||
	    mmk__rvm_reserve((void **)&h->undo, &h->undo_cap, h->undo_len + len, 1))
		return -ENOMEM;
	h->ranges[h->nranges++] = (rvm_range){ a - b, len, h->undo_len };
	memcpy(h->undo + h->undo_len, addr, len);
	h->undo_len += len;
	return 0;
}

/* memory back to the state at begin; the transaction stays open (paged:
 * at the save point) */
static int undo_mem(mmk_rvm *h)
{
	if (h->snap)
		return mmk_snap_restore(h->snap);
	for (size_t i = h->nranges; i-- > 0;) {
		const rvm_range *r = &h->ranges[i];
		memcpy(h->base + r->off, h->undo + r->undo, r->len);
	}
	return 0;
}

static int end_tx(mmk_rvm *h)
{
	int rc = 0;
	if (h->snap) {
		rc = mmk_snap_drop(h->snap);
		rc = rc < 0 ? rc : 0;
	}
	h->in_tx = false;
	h->nranges = 0;
	h->undo_len = 0;
	return rc;
}

/* undo + close the transaction after a failure err (fatal if fatal) */
static int fail_tx(mmk_rvm *h, int err, bool fatal)
{
	int rc = undo_mem(h);
	int r2 = end_tx(h);
	if (rc < 0 || r2 < 0 || fatal)
		mmk__rvm_fail(h, err);
	return err;
}

int mmk_rvm_abort(mmk_rvm *h)
{
	if (!h)
		return -EINVAL;
	if (h->fatal)
		return MMK_EFATAL;
	if (!h->in_tx)
		return -EPROTO;
	int rc = undo_mem(h);
	int r2 = end_tx(h);
	h->st.aborts++;
	if (rc < 0 || r2 < 0)
		return mmk__rvm_fail(h, rc < 0 ? rc : r2);
	return 0;
}

static int add_range(mmk_rvm *h, uint64_t off, uint64_t len)
{
	if (h->nranges && h->ranges[h->nranges - 1].off + h->ranges[h->nranges - 1].len == off) {
		h->ranges[h->nranges - 1].len += len;
		return 0;
	}
	if (mmk__rvm_reserve((void **)&h->ranges, &h->rcap, h->nranges + 1, sizeof *h->ranges))
		return -ENOMEM;
	h->ranges[h->nranges++] = (rvm_range){ off, len, 0 };
	return 0;
}

/* Ranges of 8-byte words where page p differs from old; differences closer
 * than GAP bytes are merged (a range header costs 16 bytes). */
#define GAP 32
static int diff_page(mmk_rvm *h, const unsigned char *p, const unsigned char *old)
{
	uint64_t base = (uint64_t)(p - h->base);
	const uint64_t *a = (const uint64_t *)p, *b = (const uint64_t *)old;
	size_t n = RVM_PAGE / 8, i = 0;
	long start = -1, last = -1;
	while (i < n) {
		if (a[i] != b[i]) {
			if (start >= 0 && (long)i * 8 - (last + 8) >= GAP) {
				int rc = add_range(h, base + (uint64_t)start,
						   (uint64_t)(last + 8 - start));
				if (rc)
					return rc;
				start = -1;
			}
			if (start < 0)
				start = (long)i * 8;
			last = (long)i * 8;
		}
		i++;
	}
	if (start >= 0)
		return add_range(h, base + (uint64_t)start, (uint64_t)(last + 8 - start));
	return 0;
}

static int collect(void *addr, size_t len, void *arg)
{
	mmk_rvm *h = arg;
	unsigned char *p = addr;
	for (size_t k = 0; k < len; k += RVM_PAGE) {
		const unsigned char *old = mmk_snap_saved_page(h->snap, p + k);
		int rc = old ? diff_page(h, p + k, old)
			     : add_range(h, (uint64_t)(p + k - h->base), RVM_PAGE);
		if (rc)
			return rc;
	}
	return 0;
}

/* write the buffered records (and iov[1..n) if n > 1) at log_pos; sync if asked */
static int put(mmk_rvm *h, size_t n, uint64_t reclen, bool sync)
{
	struct iovec one = { h->buf, h->buf_len };
	struct iovec *v = n > 1 ? h->iov : &one; /* h->iov is NULL before the first record */
	if (n > 1)
		h->iov[0] = one;
	size_t k = n;
	if (!h->buf_len) {
		v++;
		k--;
	}
	uint64_t total = h->buf_len + reclen;
	int rc = 0;
	if (total) {
		rc = mmk__rvm_io_writev(&h->io, h->logfd, v, (int)k, h->log_pos);
		if (rc)
			return rc;
		h->st.log_bytes += total;
		h->log_pos += total;
		h->unsynced = true;
	}
	h->buf_len = 0;
	if (sync && h->unsynced) {
		rc = mmk__rvm_io_sync(&h->io, h->logfd, true);
		h->st.syncs++;
		if (rc)
			return rc;
		h->unsynced = false;
		h->group = 0;
		h->log_pos = rvm_round(h->log_pos, RVM_SECTOR);
		h->st.flushes++;
	}
	return 0;
}

int mmk_rvm_flush(mmk_rvm *h)
{
	if (!h)
		return -EINVAL;
	if (h->fatal)
		return MMK_EFATAL;
	if (!h->buf_len && !h->unsynced)
		return 0;
	h->niov = 1;
	int rc = put(h, 1, 0, true);
	return rc ? mmk__rvm_fail(h, rc) : 0;
}

/* the log is full: truncate with memory at the committed state, then
 * rebuild the record in the new generation */
static long wrap(mmk_rvm *h, rvm_rec_hdr *hdr, long len)
{
	unsigned char *flat = mmk__self_alloc((size_t)len);
	if (!flat)
		return -ENOMEM;
	size_t pos = 0;
	for (size_t i = 1; i < h->niov; i++) {
		memcpy(flat + pos, h->iov[i].iov_base, h->iov[i].iov_len);
		pos += h->iov[i].iov_len;
	}
	int rc = undo_mem(h);
	if (rc < 0) {
		mmk__self_free(flat, (size_t)len);
		return mmk__rvm_fail(h, rc);
	}
	rc = mmk__rvm_checkpoint(h);
	mmk__rvm_apply(flat, h->base, NULL, NULL); /* the transaction again */
	mmk__self_free(flat, (size_t)len);
	if (rc)
		return rc;
	return mmk__rvm_build(h, hdr, h->next_seq, h->next_seq);
}

int mmk_rvm_commit(mmk_rvm *h, unsigned flags)
{
	if (!h)
		return -EINVAL;
	if (h->fatal)
		return MMK_EFATAL;
	if (!h->in_tx)
		return -EPROTO;
	if (!flags)
		flags = h->commit_default;
	if (flags != MMK_RVM_FLUSH && flags != MMK_RVM_NO_FLUSH)
		return -EINVAL;
	bool sync = flags == MMK_RVM_FLUSH;
	int rc;
	if (h->snap) {
		h->nranges = 0;
		rc = mmk_snap_changed(h->snap, collect, h);
		if (rc)
			return fail_tx(h, rc < 0 ? rc : -ENOMEM, false);
	}
	if (!h->nranges) {
		rc = end_tx(h);
		if (rc)
			return mmk__rvm_fail(h, rc);
		h->st.commits++;
		return sync ? mmk_rvm_flush(h) : 0;
	}
	uint64_t seq = h->next_seq;
	rvm_rec_hdr hdr;
	long len = mmk__rvm_build(h, &hdr, seq, h->group ? h->group : seq);
	if (len < 0)
		return fail_tx(h, (int)len, false);
	/* room for the record and for the intent record of the checkpoint that
	 * may follow it (every page of the record newly dirty, at worst) */
	uint64_t newpages = 0;
	for (size_t i = 0; i < h->nranges; i++)
		newpages += h->ranges[i].len / RVM_PAGE + 2;
	uint64_t intent = rvm_intent_len(h->ndirty + newpages) + RVM_SECTOR;
	if ((uint64_t)len + rvm_intent_len(newpages < h->npages ? newpages : h->npages) +
		    RVM_SECTOR > h->log_size - RVM_LOG_START)
		return fail_tx(h, -ENOSPC, false);
	if (h->log_pos + h->buf_len + (uint64_t)len + intent > h->log_size) {
		len = wrap(h, &hdr, len);
		if (len < 0)
			return fail_tx(h, (int)len, true);
	}
	size_t n = h->niov;
	if (sync) {
		rc = put(h, n, (uint64_t)len, true);
	} else {
		rc = 0;
		if (h->buf_len + (size_t)len > h->buf_cap && h->buf_len) {
			h->niov = 1;
			rc = put(h, 1, 0, false);
			h->niov = n;
		}
		if (!rc && (size_t)len > h->buf_cap) {
			rc = put(h, n, (uint64_t)len, false);
		} else if (!rc) {
			for (size_t i = 1; i < n; i++) {
				memcpy(h->buf + h->buf_len, h->iov[i].iov_base, h->iov[i].iov_len);
				h->buf_len += h->iov[i].iov_len;
			}
		}
		if (!rc && !h->group)
			h->group = seq;
	}
	if (rc)
		return fail_tx(h, rc, true);
	for (size_t i = 0; i < h->nranges; i++)
		mmk__rvm_mark(h, h->ranges[i].off, h->ranges[i].len);
	h->next_seq++;
	h->st.commits++;
	rc = end_tx(h);
	return rc ? mmk__rvm_fail(h, rc) : 0;
}
