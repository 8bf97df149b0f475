/*
 * mmkit/rvm.h - recoverable virtual memory (seed 004; after LRVM,
 * Satyanarayanan et al., SOSP 1993).
 *
 * A store is a region of memory of a fixed size that survives crashes:
 *
 *     mmk_rvm *r;
 *     mmk_rvm_open(&r, "/var/lib/app/store", 1 << 20, NULL);
 *     struct account *a = mmk_rvm_base(r);
 *     mmk_rvm_begin(r, 0);
 *     a[1].balance -= 10; a[2].balance += 10;   // any writes to the region
 *     mmk_rvm_commit(r, 0);                     // durable when it returns 0
 *     mmk_rvm_close(r);
 *
 * Modes (opts.mode):
 *   MMK_RVM_PAGED (default)  writes between begin and commit are found by
 *       write-protection faults (the snapshot engine, mmkit/snapshot.h): no
 *       set_range needed.  At commit each written page is compared with its
 *       image at begin (kept by the engine) and only the changed 8-byte
 *       words are logged (runs closer than 32 bytes merged); a page whose
 *       image is unavailable is logged whole.  Cost per transaction: one
 *       protection fault per page first written (~2-10 us with the lazy
 *       backend) plus a few system calls.
 *   MMK_RVM_EXPLICIT  the caller declares every range before writing it
 *       with mmk_rvm_set_range (LRVM style); only those bytes are logged and
 *       their old values are kept in memory for abort.  Writes outside
 *       declared ranges are neither logged nor undone (a caller bug).
 * In both modes the region must be written only inside a transaction.
 *
 * Durability contract.
 *   - mmk_rvm_commit(r, MMK_RVM_FLUSH) (or 0 with the default opts) returns 0
 *     only after the transaction's log record is on stable storage
 *     (fdatasync returned): it survives a crash of the process, of the
 *     kernel, or a power cut.
 *   - MMK_RVM_NO_FLUSH commits are atomic and ordered but only buffered;
 *     they become durable at the next mmk_rvm_flush, FLUSH commit,
 *     truncate or close.  After a crash, a prefix of them (in commit order)
 *     survives.
 *   - After any crash, reopening yields exactly the state after some commit
 *     c with c >= the last commit known durable: a transaction is all or
 *     nothing.
 *   - mmk_rvm_abort, and a failed commit, leave memory exactly as it was at
 *     begin.  A commit that failed may still be found durable after a
 *     reopen (its record may have reached the disk before the error).
 *   - Every error leaves the store on disk recoverable.  An I/O error while
 *     writing or syncing the log or the data file is fatal for the handle:
 *     later calls return MMK_EFATAL (no retry that could lie about
 *     durability: after a failed fsync the page cache may have dropped the
 *     data).  Close it and open the store again.
 *
 * On disk.  PATH is a directory (created mode 0700) holding:
 *   data  a header (magic, size, store id; checksummed), a CRC-32C per page
 *         of the region, then the region image as of the last truncate
 *         (checkpoint);
 *   log   two alternating 4 KiB headers (generation, first sequence number,
 *         checksum) and a preallocated area of redo records, overwritten in
 *         place.  Each record carries its generation, sequence number, the
 *         byte ranges it redoes and a CRC-32C over all of it (the commit
 *         marker: a record counts only if complete and intact).  A group of
 *         records made durable by one fdatasync starts on a 512-byte
 *         boundary so a later write never touches a sector already durable.
 *   Files are mode 0600; the directory is fsynced after creates and
 *   renames; a new store is built in a temporary directory and renamed into
 *   place.
 * Recovery (mmk_rvm_open): the data image is read, the log's records are
 *   applied in order until the first torn or corrupt one, every page is
 *   checked (pages the log does not cover against their CRC; pages it
 *   covers against their CRC before redo, or, after an interrupted
 *   truncation, against the new CRCs its intent record listed), then the
 *   result is written
 *   back (a checkpoint) and the log restarted under a new generation.  A
 *   crash at any point of this repeats it (idempotent: records are absolute
 *   values applied in order).  A corrupt record followed by an intact later
 *   group, a data page failing its check, a truncated file or a damaged
 *   header make open fail with MMK_ECORRUPT without applying anything.
 *   (A bit flip in the very last durable group is indistinguishable from a
 *   torn write and loses that group: the same limit as LMDB's and SQLite's
 *   logs.)
 * Truncation (mmk_rvm_truncate, and automatically when the log is full):
 *   append an intent record (each page about to be written and its new CRC)
 *   behind the buffered records and fdatasync the log; write the pages
 *   changed since the last truncate into the data file with their CRCs,
 *   fdatasync it, then write the other log header with the next
 *   generation and fdatasync the log.  A crash before that header is durable
 *   replays the old log over the new data: the same result.
 *
 * Memory.  The region is anonymous memory filled from the data file at open
 * (so the lazy snapshot backend, userfaultfd WP + SIGBUS, works on kernels
 * since 4.14; on 6.7+ the async backend can be forced), plus the log buffer
 * (opts.buffer_size) and per-page bookkeeping (~4.1 bytes per page).
 *
 * Locking.  A store is opened by one handle at a time: open takes an
 * exclusive flock(2) on the directory (released by close or by the death
 * of the process); a second open, from this or another process, fails
 * with -EBUSY.
 *
 * Threads.  A handle is not thread-safe; one thread uses it at a time, and
 * one transaction is open at a time.  In paged mode other threads must not
 * write the region during begin, commit and abort (see mmkit/snapshot.h).
 */
#ifndef MMKIT_RVM_H
#define MMKIT_RVM_H

#include <mmkit/common.h>
#include <mmkit/snapshot.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_rvm mmk_rvm;

enum {
	MMK_RVM_PAGED = 0,    /* opts.mode: page-tracked (default) */
	MMK_RVM_EXPLICIT = 1, /* opts.mode: declared ranges only */
};

/* commit flags (exactly one, or 0 for opts.commit_default) */
enum {
	MMK_RVM_FLUSH = 1,    /* durable when commit returns */
	MMK_RVM_NO_FLUSH = 2, /* atomic now, durable at the next flush */
};

/* Fault injection, for crash tests (in the spirit of SQLite's crash-test
 * VFS).  Every write (pwrite/pwritev) and sync (fdatasync/fsync) to the
 * store's files is an "op", numbered from 1 in the order issued, counted
 * in `ops` from open on.  When set, the store's syncs are simulated: the
 * library remembers the content of every sector (512 bytes) written since
 * the file's last sync and no real fsync is issued. */
typedef struct mmk_rvm_fault {
	/* Power cut just before op number crash_at (0: never): the writes not
	 * yet synced are, per crash_mode, all dropped, all kept, or torn (each
	 * 512-byte sector independently kept or put back); then this and every
	 * later op fails with -EIO (the handle is dead; close it, reopen). */
	unsigned long long crash_at;
	int crash_mode;              /* MMK_RVM_CRASH_* */
	/* Return -EIO from op number eio_at instead of doing it (0: never);
	 * only ops of the kinds in eio_kinds (MMK_RVM_OP_*; 0 = any). */
	unsigned long long eio_at;
	unsigned eio_kinds;
	/* raise(SIGKILL) just before op number kill_at (0: never). */
	unsigned long long kill_at;
	unsigned long long seed;     /* for torn mode's choices */
	/* out */
	unsigned long long ops;      /* ops issued so far */
	bool crashed;                /* the simulated power cut happened */
} mmk_rvm_fault;

enum {
	MMK_RVM_CRASH_RANDOM = 0, /* one of the three below, chosen by seed */
	MMK_RVM_CRASH_DROP = 1,
	MMK_RVM_CRASH_KEEP = 2,
	MMK_RVM_CRASH_TEAR = 3,
};
enum { MMK_RVM_OP_WRITE = 1u << 0, MMK_RVM_OP_SYNC = 1u << 1 };

typedef struct mmk_rvm_opts {
	unsigned mode;            /* MMK_RVM_PAGED or MMK_RVM_EXPLICIT */
	unsigned commit_default;  /* what commit flags 0 means: 0 = FLUSH */
	/* Log file size when creating the store (0: min(2 x size + 1 MiB,
	 * 64 MiB)); an existing store keeps its own.  One transaction's record
	 * must fit in it (else commit fails with -ENOSPC, nothing changed). */
	size_t log_size;
	size_t buffer_size;       /* NO_FLUSH buffer (0: 1 MiB) */
	/* Paged mode: snapshot backend.  AUTO tracks regions of >= 64 MiB
	 * lazily (userfaultfd write faults handled in the writing thread:
	 * each transaction costs O(pages it writes), whatever the region's
	 * size), smaller ones with async write-protect.  Caveat of lazy
	 * tracking: the kernel cannot write into a region page the program
	 * has not itself written since begin, so read(2) straight into the
	 * region fails with EFAULT there; read into a buffer and copy, or use
	 * explicit mode, or force MMK_SNAP_ASYNC here. */
	mmk_snap_backend backend;
	mmk_rvm_fault *fault;     /* testing: fault injection, NULL: none */
} mmk_rvm_opts;

/* Open the store at path (a directory), creating it if absent, recovering
 * it if its log holds records.  size: the region size in bytes (> 0, rounded
 * up to 4 KiB); 0 opens an existing store at its own size.  opts may be
 * NULL.  On success *out is the handle and mmk_rvm_base() the region.
 * Errors: -EINVAL bad arguments, or size differs from the existing store's
 * (nothing changed); -ENOENT size 0 and no store; -EBUSY the store is open
 * (this or another process); MMK_ECORRUPT the store failed its checks (see
 * Recovery; nothing changed); MMK_ENOFEAT paged mode with a forced snapshot
 * backend the kernel lacks; -ENOMEM; -EIO and other -errno from the file
 * system (the store stays recoverable). */
MMK_API int mmk_rvm_open(mmk_rvm **out, const char *path, size_t size, const mmk_rvm_opts *opts);

/* The recoverable region (page-aligned, mmk_rvm_size() bytes). */
MMK_API void *mmk_rvm_base(mmk_rvm *r);
MMK_API size_t mmk_rvm_size(const mmk_rvm *r);

/* Start a transaction.  flags: 0 (reserved).
 * Errors: -EINVAL flags != 0; -EBUSY a transaction is open; MMK_EFATAL;
 * -ENOMEM/-errno from the snapshot engine (paged mode). */
MMK_API int mmk_rvm_begin(mmk_rvm *r, unsigned flags);

/* Declare [addr, addr+len) about to be written (explicit mode; in paged mode
 * it only checks the range).  Ranges may overlap.
 * Errors: -EINVAL not inside the region or len 0; -EPROTO no transaction;
 * -ENOMEM. */
MMK_API int mmk_rvm_set_range(mmk_rvm *r, void *addr, size_t len);

/* Commit the open transaction.  flags: MMK_RVM_FLUSH, MMK_RVM_NO_FLUSH or 0
 * (opts.commit_default).  May truncate the log first when it is full.
 * Errors (memory is then as at begin and the transaction is closed):
 * -EINVAL bad flags (the transaction stays open); -EPROTO no transaction;
 * -ENOSPC the record cannot fit in the log; -EIO/-errno I/O failure (fatal
 * for the handle). */
MMK_API int mmk_rvm_commit(mmk_rvm *r, unsigned flags);

/* Undo the open transaction: memory as at begin.
 * Errors: -EPROTO no transaction; MMK_EFATAL; -errno from the snapshot
 * engine (then fatal: memory may differ from the store; reopen). */
MMK_API int mmk_rvm_abort(mmk_rvm *r);

/* Make every NO_FLUSH commit durable.  Errors: -EIO/-errno (fatal). */
MMK_API int mmk_rvm_flush(mmk_rvm *r);

/* Fold the log into the data file (see Truncation).  Not inside a
 * transaction (-EBUSY).  Errors: -EIO/-errno (fatal). */
MMK_API int mmk_rvm_truncate(mmk_rvm *r);

/* Abort an open transaction, flush NO_FLUSH commits, release everything
 * and the lock.  Returns the first error (the handle is freed anyway).
 * NULL ok. */
MMK_API int mmk_rvm_close(mmk_rvm *r);

typedef struct mmk_rvm_stats {
	unsigned long long commits, aborts, flushes, truncates;
	unsigned long long log_bytes;     /* bytes written to the log */
	unsigned long long data_bytes;    /* bytes written to the data file */
	unsigned long long syncs;         /* fdatasync/fsync issued */
	unsigned long long recovered;     /* records applied by the last open */
	size_t log_size, log_used;        /* log area and its used part */
	const char *backend;              /* paged mode: snapshot backend */
} mmk_rvm_stats;

MMK_API int mmk_rvm_stats_get(const mmk_rvm *r, mmk_rvm_stats *st);

/* ---- inspection (mmkit rvm check|dump) ------------------------------------------- */

typedef struct mmk_rvm_info {
	size_t size, log_size;
	uint64_t store_id;
	uint64_t gen, start_seq;          /* the log header in use */
	int header_slot;                  /* 0 or 1; -1 none valid */
	bool header_other_valid;
	unsigned long long records;       /* intact records in order */
	unsigned long long record_bytes;
	uint64_t last_seq;                /* of the last intact record */
	uint64_t log_end;                 /* offset after it */
	bool torn_tail;                   /* junk after the last intact record */
	bool log_corrupt;                 /* a later intact group exists */
	size_t pages_bad;                 /* data pages failing their CRC (not
					     covered by the log) */
	size_t first_bad_page;
	int status;                       /* 0 or the error open would return */
	char problem[160];                /* first problem found, "" if none */
} mmk_rvm_info;

/* Called for each intact record: seq, offset in the log, total length,
 * number of ranges. */
typedef void (*mmk_rvm_record_fn)(uint64_t seq, uint64_t off, size_t len, size_t nranges,
				  void *arg);

/* Check the store at path without changing it (takes a shared lock: -EBUSY
 * while a handle has it open).  Fills *info (also on MMK_ECORRUPT) and
 * calls fn (may be NULL) per intact record.  Returns 0 if the store would
 * open cleanly, MMK_ECORRUPT if not, -errno if it cannot be read. */
MMK_API int mmk_rvm_check(const char *path, mmk_rvm_info *info, mmk_rvm_record_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
