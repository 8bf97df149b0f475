/*
 * rvm/rvm_int.h - internals of recoverable virtual memory (mmk_rvm).
 *
 * Files (see include/mmkit/rvm.h for the contract):
 *   io.c     every write and sync to the store's files, with fault
 *            injection (power cut, EIO, SIGKILL at the Nth op)
 *   log.c    on-disk formats, record building and the log scan shared by
 *            recovery and mmk_rvm_check
 *   store.c  open (create, lock, load, recover), checkpoint, close, check
 *   txn.c    begin, set_range, commit, abort, flush
 *   snapdiff.c  a page's image at the save point (paged commits log only
 *            the changed bytes)
 *
 * Invariants of an open handle h (no transaction open):
 *   - h->base holds image(data file) + every record of the current log
 *     generation + every NO_FLUSH record still in h->buf;
 *   - h->dirty marks exactly the pages covered by those records (the pages
 *     a checkpoint must write);
 *   - the log on disk holds, from LOG_START, the records start_seq ..
 *     next_seq-1 minus the ones still buffered, contiguous except that
 *     every synced group is followed by padding to a 512-byte boundary;
 *     log_pos is where the next byte goes;
 *   - within one generation a log byte is written at most once (after a
 *     failure the handle is fatal and the next open starts a new
 *     generation), so a record with the right generation, sequence number
 *     and CRC can only be the genuine one.
 */
#ifndef MMK_RVM_INT_H
#define MMK_RVM_INT_H

#include <mmkit/rvm.h>
#include "sys/sys.h"

#include <stdint.h>
#include <sys/uio.h>

#define RVM_SECTOR 512u
#define RVM_PAGE 4096u
#define RVM_LOG_START 8192u      /* after the two 4 KiB header slots */
#define RVM_DATA_HDR 4096u
#define RVM_VERSION 1u
#define RVM_DATA_MAGIC 0x3144524b4d4d4b4dULL /* "MKMMKRD1" */
#define RVM_LOG_MAGIC 0x314c524b4d4d4b4dULL  /* "MKMMKRL1" */
#define RVM_REC_MAGIC 0x52564d52u            /* "RMVR" */

/* CRC-32C: core/crc32c.c */
#include "core/core.h"

/* ---- on-disk formats (little endian, x86_64 only) ---- */
typedef struct rvm_data_hdr {
	uint64_t magic;
	uint32_t version, page;
	uint64_t size;           /* region bytes */
	uint64_t store_id;
	uint64_t table_off;      /* CRC-32C per page, uint32 each */
	uint64_t region_off;
	uint32_t crc;            /* over this struct with crc = 0 */
	uint32_t pad;
} rvm_data_hdr;

typedef struct rvm_log_hdr {
	uint64_t magic;
	uint32_t version, pad0;
	uint64_t gen;
	uint64_t start_seq;      /* sequence number of the first record */
	uint64_t log_size;       /* file size */
	uint64_t size;           /* region bytes */
	uint64_t store_id;
	uint32_t crc;
	uint32_t pad1;
} rvm_log_hdr;

typedef struct rvm_rec_hdr {
	uint32_t magic;
	uint32_t crc;            /* over the whole record with crc = 0 */
	uint64_t gen;
	uint64_t seq;
	uint64_t group;          /* seq of the first record of its sync group */
	uint64_t len;            /* whole record, multiple of 8 */
	uint32_t nranges;        /* redo: ranges; intent: entries */
	uint32_t type;           /* RVM_REC_REDO or RVM_REC_INTENT */
} rvm_rec_hdr;

/* A checkpoint's intent record, written and synced before it touches the
 * data file: for every page it is about to write, (page, CRC-32C of the
 * page's new content).  Recovery checks pages the log covers against it
 * when present (the data file may then hold old, new or sector-mixed
 * pages, all of which redo to the new content), and against the data
 * file's CRC table before redo when absent (the pages are then untouched
 * since the last checkpoint), so a bit flip in a logged page outside the
 * logged bytes is caught too. */
enum { RVM_REC_REDO = 0, RVM_REC_INTENT = 1 };
typedef struct rvm_intent_ent {
	uint32_t page, crc;
} rvm_intent_ent;
static inline uint64_t rvm_intent_len(size_t n)
{
	return sizeof(rvm_rec_hdr) + 8 * (uint64_t)n;
}

typedef struct rvm_range_hdr {
	uint64_t off;            /* in the region */
	uint64_t len;            /* bytes; followed by them, padded to 8 */
} rvm_range_hdr;

static inline uint64_t rvm_round(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/* ---- io.c ---- */
typedef struct rvm_psec {
	uint64_t key;            /* fd << 40 | sector + 1; 0 = empty */
	unsigned char old[RVM_SECTOR];
} rvm_psec;

typedef struct mmk__rvm_io {
	mmk_rvm_fault *f;        /* NULL: plain I/O */
	rvm_psec *tab;           /* simulated: sectors written since last sync */
	size_t cap, n;
	uint64_t rng;
	bool dead;
} mmk__rvm_io;

MMK_HIDDEN void mmk__rvm_io_init(mmk__rvm_io *io, mmk_rvm_fault *f);
MMK_HIDDEN void mmk__rvm_io_fini(mmk__rvm_io *io);
/* Write all of iov at off (chunked, short writes retried).  An op. */
MMK_HIDDEN int mmk__rvm_io_writev(mmk__rvm_io *io, int fd, const struct iovec *iov, int n,
				  uint64_t off);
MMK_HIDDEN int mmk__rvm_io_write(mmk__rvm_io *io, int fd, const void *buf, size_t len,
				 uint64_t off);
/* fdatasync (data=true) or fsync.  An op. */
MMK_HIDDEN int mmk__rvm_io_sync(mmk__rvm_io *io, int fd, bool data);
/* Read exactly len bytes (not an op): -EIO on a short read. */
MMK_HIDDEN int mmk__rvm_io_read(int fd, void *buf, size_t len, uint64_t off);

/* ---- the handle ---- */
typedef struct rvm_range {
	uint64_t off, len;
	size_t undo;             /* explicit mode: offset of old bytes in h->undo */
} rvm_range;

struct mmk_rvm {
	int dirfd, datafd, logfd;
	unsigned mode, commit_default;
	size_t size, npages;
	unsigned char *base;
	mmk__rvm_io io;
	mmk_snap *snap;
	mmk_snap_backend backend;
	/* data file */
	uint64_t store_id, table_off, region_off;
	uint32_t *crcs;          /* per page, as in the data file */
	uint64_t *dirty;         /* bitmap: pages covered by the log */
	uint32_t *dirty_idx;
	size_t ndirty;
	/* log */
	uint64_t log_size, gen, start_seq, next_seq, log_pos;
	int slot;                /* header slot in use */
	uint64_t group;          /* first seq of the unsynced group, 0 none */
	bool unsynced;           /* log bytes written since the last sync */
	unsigned char *buf;      /* buffered NO_FLUSH records */
	size_t buf_len, buf_cap;
	/* transaction */
	bool in_tx;
	rvm_range *ranges;
	size_t nranges, rcap;
	unsigned char *undo;
	size_t undo_len, undo_cap;
	/* record building scratch */
	struct iovec *iov;
	size_t niov, iovcap;
	rvm_range_hdr *rh;
	size_t rhcap;
	bool have_intent;        /* the log ends with an intent for the current
				    dirty set (recovery: no need to write another) */
	int fatal;               /* 0 or the error that made the handle unusable */
	mmk_rvm_stats st;
};

/* ---- log.c ---- */
MMK_HIDDEN uint32_t mmk__rvm_hdr_crc(const void *hdr, size_t len, uint32_t *field);
/* Build the iovecs of one record from h->ranges into h->iov[1..niov) (iov[0]
 * is left empty for the caller); returns the record length or -ENOMEM.  hdr
 * is filled (crc included); the data iovecs point into h->base. */
MMK_HIDDEN long mmk__rvm_build(mmk_rvm *h, rvm_rec_hdr *hdr, uint64_t seq, uint64_t group);
/* grow *p (cap elements of elem bytes, mmkit's own memory) to hold need */
MMK_HIDDEN int mmk__rvm_reserve(void **p, size_t *cap, size_t need, size_t elem);

/* Result of scanning a log (mapped read-only at p, size bytes). */
typedef struct rvm_scan {
	unsigned long long records, bytes;
	uint64_t last_seq, end;
	bool torn_tail, corrupt;
} rvm_scan;
/* Apply callback: the record at rec (validated) */
typedef int (*rvm_apply_fn)(const unsigned char *rec, const rvm_rec_hdr *hdr, uint64_t off,
			    void *arg);
MMK_HIDDEN int mmk__rvm_scan(const unsigned char *p, uint64_t size, const rvm_log_hdr *lh,
			     rvm_apply_fn fn, void *arg, rvm_scan *out);
/* Copy a validated redo record's ranges into base, calling mark(page) for
 * each page of a range just before the range is copied. */
MMK_HIDDEN void mmk__rvm_apply(const unsigned char *rec, unsigned char *base,
			       void (*mark)(void *arg, size_t page), void *arg);
/* Pick the valid header with the highest generation: slot or -1. */
MMK_HIDDEN int mmk__rvm_pick_header(const unsigned char *p, uint64_t size, rvm_log_hdr *out,
				    bool *other_valid);
MMK_HIDDEN bool mmk__rvm_data_hdr_ok(const rvm_data_hdr *d);

/* ---- store.c ---- */
MMK_HIDDEN int mmk__rvm_checkpoint(mmk_rvm *h);
MMK_HIDDEN void mmk__rvm_mark(mmk_rvm *h, uint64_t off, uint64_t len);
MMK_HIDDEN int mmk__rvm_fail(mmk_rvm *h, int err);

#endif
