/*
 * rvm/log.c - the redo log's formats: headers, record building, the scan.
 *
 * A redo record is [rvm_rec_hdr][rvm_range_hdr][bytes, padded to 8]... ; an
 * intent record [rvm_rec_hdr][rvm_intent_ent]...; the CRC covers all of it
 * with the crc field zero.  The scan accepts a record only
 * if magic, generation, sequence number (exactly the next expected), length
 * and every range (inside the region, lengths adding up to the record) are
 * right and the CRC matches; only then is it applied.  It stops at the
 * first record that is not accepted, after one retry at the next 512-byte
 * boundary (where the next sync group starts).  Then it looks for proof of
 * corruption: an intact record of this generation at a later 512-byte
 * boundary whose sync group started after the failing sequence number
 * means a durable record was damaged (a torn tail never has one).
 * No state; the mapped log is only read.
 */
#include "rvm/rvm_int.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

static const unsigned char zeros8[8];

uint32_t mmk__rvm_hdr_crc(const void *hdr, size_t len, uint32_t *field)
{
	uint32_t saved = *field;
	*field = 0;
	uint32_t c = mmk__crc32c(0, hdr, len);
	*field = saved;
	return c;
}

bool mmk__rvm_data_hdr_ok(const rvm_data_hdr *d)
{
	rvm_data_hdr t = *d;
	return t.magic == RVM_DATA_MAGIC && t.version == RVM_VERSION && t.page == RVM_PAGE &&
	       t.size > 0 && t.size % RVM_PAGE == 0 &&
	       t.crc == mmk__rvm_hdr_crc(&t, sizeof t, &t.crc);
}

static bool log_hdr_ok(const rvm_log_hdr *h, uint64_t size)
{
	rvm_log_hdr t = *h;
	return t.magic == RVM_LOG_MAGIC && t.version == RVM_VERSION && t.log_size == size &&
	       t.crc == mmk__rvm_hdr_crc(&t, sizeof t, &t.crc);
}

int mmk__rvm_pick_header(const unsigned char *p, uint64_t size, rvm_log_hdr *out,
			 bool *other_valid)
{
	rvm_log_hdr a, b;
	if (size < RVM_LOG_START)
		return -1;
	memcpy(&a, p, sizeof a);
	memcpy(&b, p + RVM_PAGE, sizeof b);
	bool va = log_hdr_ok(&a, size), vb = log_hdr_ok(&b, size);
	int slot = -1;
	if (va && vb)
		slot = b.gen > a.gen ? 1 : 0;
	else if (va)
		slot = 0;
	else if (vb)
		slot = 1;
	if (slot >= 0)
		*out = slot ? b : a;
	if (other_valid)
		*other_valid = slot >= 0 && (slot ? va : vb);
	return slot;
}

/* grow-on-demand arrays (mmkit's own memory) */
int mmk__rvm_reserve(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 16;
	while (nc < need)
		nc *= 2;
	void *np = mmk__self_realloc(*p, nc * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = nc;
	return 0;
}

long mmk__rvm_build(mmk_rvm *h, rvm_rec_hdr *hdr, uint64_t seq, uint64_t group)
{
	size_t n = h->nranges;
	if (mmk__rvm_reserve((void **)&h->iov, &h->iovcap, 2 + 3 * n, sizeof *h->iov) ||
	    mmk__rvm_reserve((void **)&h->rh, &h->rhcap, n ? n : 1, sizeof *h->rh))
		return -ENOMEM;
	memset(hdr, 0, sizeof *hdr);
	uint64_t len = sizeof *hdr;
	size_t k = 1; /* iov[0] is left for the caller (the buffered records) */
	h->iov[0] = (struct iovec){ NULL, 0 };
	h->iov[k++] = (struct iovec){ hdr, sizeof *hdr };
	for (size_t i = 0; i < n; i++) {
		const rvm_range *r = &h->ranges[i];
		h->rh[i] = (rvm_range_hdr){ r->off, r->len };
		h->iov[k++] = (struct iovec){ &h->rh[i], sizeof h->rh[i] };
		h->iov[k++] = (struct iovec){ h->base + r->off, r->len };
		size_t pad = (size_t)(rvm_round(r->len, 8) - r->len);
		if (pad)
			h->iov[k++] = (struct iovec){ (void *)zeros8, pad };
		len += sizeof h->rh[i] + r->len + pad;
	}
	hdr->magic = RVM_REC_MAGIC;
	hdr->gen = h->gen;
	hdr->seq = seq;
	hdr->group = group;
	hdr->len = len;
	hdr->nranges = (uint32_t)n;
	uint32_t c = 0;
	for (size_t i = 1; i < k; i++)
		c = mmk__crc32c(c, h->iov[i].iov_base, h->iov[i].iov_len);
	hdr->crc = c;
	h->niov = k;
	return (long)len;
}

/* A complete check of the record at p (avail bytes readable). */
static bool rec_ok(const unsigned char *p, uint64_t avail, const rvm_log_hdr *lh,
		   uint64_t seq, bool any_seq, rvm_rec_hdr *out)
{
	rvm_rec_hdr h;
	if (avail < sizeof h)
		return false;
	memcpy(&h, p, sizeof h);
	if (h.magic != RVM_REC_MAGIC || h.gen != lh->gen || (!any_seq && h.seq != seq) ||
	    h.len < sizeof h || h.len > avail || h.len % 8 || h.group > h.seq ||
	    h.group < lh->start_seq)
		return false;
	if (h.type == RVM_REC_INTENT) {
		if (h.len != rvm_intent_len(h.nranges))
			return false;
		for (uint32_t i = 0; i < h.nranges; i++) {
			rvm_intent_ent e;
			memcpy(&e, p + sizeof h + 8 * (size_t)i, sizeof e);
			if ((uint64_t)e.page >= lh->size / RVM_PAGE)
				return false;
		}
		goto crc;
	}
	if (h.type != RVM_REC_REDO)
		return false;
	/* ranges */
	uint64_t pos = sizeof h;
	for (uint32_t i = 0; i < h.nranges; i++) {
		rvm_range_hdr r;
		if (h.len - pos < sizeof r)
			return false;
		memcpy(&r, p + pos, sizeof r);
		pos += sizeof r;
		if (r.len > lh->size || r.off > lh->size - r.len)
			return false;
		uint64_t padded = rvm_round(r.len, 8);
		if (h.len - pos < padded)
			return false;
		pos += padded;
	}
	if (pos != h.len)
		return false;
crc:;
	uint32_t c = mmk__crc32c(0, p, offsetof(rvm_rec_hdr, crc));
	c = mmk__crc32c(c, zeros8, 4);
	c = mmk__crc32c(c, p + offsetof(rvm_rec_hdr, crc) + 4,
			h.len - offsetof(rvm_rec_hdr, crc) - 4);
	if (c != h.crc)
		return false;
	*out = h;
	return true;
}

int mmk__rvm_scan(const unsigned char *p, uint64_t size, const rvm_log_hdr *lh,
		  rvm_apply_fn fn, void *arg, rvm_scan *out)
{
	memset(out, 0, sizeof *out);
	uint64_t pos = RVM_LOG_START, seq = lh->start_seq;
	out->last_seq = seq - 1;
	for (;;) {
		rvm_rec_hdr h;
		bool ok = pos < size && rec_ok(p + pos, size - pos, lh, seq, false, &h);
		if (!ok && pos % RVM_SECTOR) {
			uint64_t a = rvm_round(pos, RVM_SECTOR);
			if (a < size && rec_ok(p + a, size - a, lh, seq, false, &h))
				pos = a, ok = true;
		}
		if (!ok)
			break;
		if (fn) {
			int rc = fn(p + pos, &h, pos, arg);
			if (rc)
				return rc;
		}
		out->records++;
		out->bytes += h.len;
		out->last_seq = seq;
		pos += h.len;
		seq++;
	}
	out->end = pos;
	/* anything but zeros / stale generations after the end? */
	for (uint64_t a = rvm_round(pos, RVM_SECTOR); a + sizeof(rvm_rec_hdr) <= size;
	     a += RVM_SECTOR) {
		rvm_rec_hdr h;
		memcpy(&h, p + a, sizeof h);
		if (h.magic != RVM_REC_MAGIC)
			continue;
		if (h.gen > lh->gen) {
			/* an intact record of a newer generation: the header that
			 * started it was damaged */
			rvm_log_hdr t = *lh;
			t.gen = h.gen;
			t.start_seq = 0;
			if (rec_ok(p + a, size - a, &t, 0, true, &h)) {
				out->corrupt = true;
				break;
			}
			continue;
		}
		if (h.gen != lh->gen)
			continue;
		if (h.seq >= seq)
			out->torn_tail = true;
		if (h.seq > seq && h.group > seq && rec_ok(p + a, size - a, lh, 0, true, &h)) {
			out->corrupt = true;
			break;
		}
	}
	if (!out->torn_tail && pos < size) {
		/* a partial record header at the end itself */
		rvm_rec_hdr h;
		if (size - pos >= sizeof h) {
			memcpy(&h, p + pos, sizeof h);
			if (h.magic == RVM_REC_MAGIC && h.gen == lh->gen)
				out->torn_tail = true;
		}
	}
	return 0;
}

void mmk__rvm_apply(const unsigned char *rec, unsigned char *base,
		    void (*mark)(void *arg, size_t page), void *arg)
{
	rvm_rec_hdr h;
	memcpy(&h, rec, sizeof h);
	uint64_t pos = sizeof h;
	for (uint32_t i = 0; i < h.nranges; i++) {
		rvm_range_hdr r;
		memcpy(&r, rec + pos, sizeof r);
		pos += sizeof r;
		if (mark && r.len)
			for (uint64_t pg = r.off / RVM_PAGE; pg <= (r.off + r.len - 1) / RVM_PAGE; pg++)
				mark(arg, (size_t)pg);
		memcpy(base + r.off, rec + pos, r.len);
		pos += rvm_round(r.len, 8);
	}
}
