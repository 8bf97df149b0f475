/*
 * mmkit/ckpt.h - checkpoints of memory regions to image files, written in
 * the background while the program runs (seeds 003 and 004).
 *
 *     mmk_ckpt *c;
 *     mmk_ckpt_create(&c, "/var/lib/app/ckpt", NULL);
 *     mmk_ckpt_add(c, "heap", base, len);     // tracked from now on
 *     ...
 *     mmk_ckpt_start(c, 0);   // returns at once: the image is the memory
 *                             // as of this instant; the program keeps writing
 *     ...
 *     mmk_ckpt_wait(c);       // (optional) the image is durable on disk
 *
 * Consistency.  mmk_ckpt_start() defines the checkpoint instant.  The image
 * written in the background equals the regions' memory at that instant,
 * although the program keeps writing: every page not yet saved is
 * write-protected, and the first write to it raises a synchronous fault
 * (userfaultfd write-protect with UFFD_FEATURE_SIGBUS) whose handler, in
 * the writing thread, copies the page aside before letting the write
 * proceed (copy-before-write, ~2 us).  Pages already saved are not held.
 * Extra memory during a checkpoint is therefore the pages written during it
 * that were not saved yet, plus the few pages copied at the instant (see
 * "Pause"), a 2 MiB write buffer and 4 bytes of checksum per page written.
 * Other threads may write the regions at any time except during the
 * instant: like a snapshot save, the threads that write tracked memory are
 * quiesced for it - by mmkit through opts.quiesce, or by the caller around
 * mmk_ckpt_start().  The background writer never blocks the program: a
 * fault on a page the writer is copying waits at most for that one page
 * copy.
 *
 * Incremental.  Between checkpoints the regions stay write-protected; the
 * first write to a page after a checkpoint faults once and marks it dirty.
 * A checkpoint after the first writes only the pages dirtied since the
 * previous one, as a delta image whose parent is the previous image.  Every
 * `max_chain` deltas (and after mmk_ckpt_add), the next image is full.
 * mmk_ckpt_compact() folds a chain into one full image.
 *
 * Pause.  The pages dirtied since the previous checkpoint must not change
 * the image: mmkit re-protects them *before* the instant, while the
 * program runs (mmk_ckpt_prepare(): one UFFDIO_WRITEPROTECT per run of
 * dirty pages, ~1-2.5 us each, more with TLB shoot-downs to other CPUs;
 * several passes, like pre-copy live migration; automatic with
 * opts.quiesce, and in the background with opts.sweep_ms).  The instant
 * itself - the part that needs the writers quiesced - marks the protected
 * pages of this checkpoint pending and copies aside the few pages dirtied
 * during the last pass (a memcpy each, no system call): a scan of one byte
 * per page (~40 us per GiB) plus those copies, independent of how much the
 * program wrote before.  mmk_ckpt_add() protects the whole region once (for
 * 4 KiB pages ~10-25 ms per GiB; ~0.1 ms for transparent-huge-page memory).
 *
 * Images.  DIR/ckpt-GGGGGGGGGGGGGGGG.img (G = generation, hexadecimal,
 * increasing).  An image is written to DIR/.ckpt-G.tmp, made durable
 * (fdatasync), renamed to its final name and the directory fsynced: a crash
 * at any point leaves the previous images untouched and at most a temp file,
 * which is ignored (and removed by the next mmk_ckpt_create on DIR).  Each
 * image holds: a header (magic, version, generation, parent generation,
 * region table with names, addresses and sizes) with its own checksum, per
 * region the indices of the pages it holds and a CRC-32C per page, the
 * pages, and a trailer with a checksum of header and metadata (which covers
 * the pages through their checksums) and the file length, so a truncated or
 * damaged file is detected.
 *
 * Regions.  Anonymous private or shared memory (the kernel refuses
 * synchronous write-protect on private file mappings).  A region that
 * cannot be tracked - file-backed, already registered with another
 * userfaultfd (e.g. a region tracked by a mmk_snap lazy or async backend, or
 * an mmk_rvm region built on one), or userfaultfd unavailable - is
 * checkpointed in "copy" mode: mmk_ckpt_start() copies it entirely (pause
 * proportional to its size) and every image holds all of its pages.
 * mmk_ckpt_stats_get() reports how many regions use each mode; the
 * environment variable MMK_CKPT_COPY=1 forces copy mode (diagnostics).
 *
 * Signals.  mmkit installs a SIGBUS handler (re-installed on each start if
 * someone replaced it) that handles write-protect faults on checkpointed
 * regions and passes every other SIGBUS to the previously installed handler.
 *
 * Threads.  A mmk_ckpt handle is used by one thread at a time; the
 * background writer and the periodic timer are internal threads.  A handle
 * does not survive fork(): the child has no writer thread and its copy of
 * the regions is not tracked (use it in the parent only).
 */
#ifndef MMKIT_CKPT_H
#define MMKIT_CKPT_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_ckpt mmk_ckpt;

typedef struct mmk_ckpt_opts {
	/* Deltas after a full image before the next full one (0: 16). */
	unsigned max_chain;
	/* After each checkpoint, delete images no longer needed to restore
	 * the newest `keep` generations (0: delete nothing). */
	unsigned keep;
	/* How mmkit stops the threads that write the regions: called with
	 * stop=1 right before the checkpoint instant and stop=0 right after.
	 * When set, mmk_ckpt_start() and the periodic timer first re-protect
	 * the dirty pages while the program runs (mmk_ckpt_prepare), then call
	 * it around the short instant, and callers need not quiesce.  NULL:
	 * callers of mmk_ckpt_start() quiesce themselves (see "Consistency"). */
	void (*quiesce)(void *arg, int stop);
	void *quiesce_arg;
	/* Background sweep every sweep_ms (0: off): re-protect the pages
	 * dirtied since, so the next checkpoint instant stays short.  Costs
	 * the program one more fault (~2 us) per page it writes again after a
	 * sweep. */
	unsigned sweep_ms;
} mmk_ckpt_opts;

/* Create a checkpointer writing images into the directory `dir` (created if
 * missing, mode 0700).  Generations continue after the newest image found
 * there; stale temp files are removed.  opts may be NULL.
 * Errors: -EINVAL; -ENOMEM; -errno from mkdir/open of dir. */
MMK_API int mmk_ckpt_create(mmk_ckpt **out, const char *dir, const mmk_ckpt_opts *opts);

/* Add [addr, addr+len) (rounded out to pages) under `name` (1-63 bytes,
 * unique in the handle; restart finds regions by name).  Write-protects the
 * region from now on (see "Regions" for the copy-mode fallback).  The next
 * checkpoint is full.
 * Errors: -EINVAL bad name or range, range not mapped writable; -EEXIST
 * name in use; -EBUSY overlaps a region of this handle, or a checkpoint is
 * running; -ENOMEM. */
MMK_API int mmk_ckpt_add(mmk_ckpt *c, const char *name, void *addr, size_t len);

enum {
	MMK_CKPT_FULL = 1u << 0, /* start: a full image even if a delta could do */
	MMK_CKPT_WAIT = 1u << 1, /* start: return when the image is durable */
};

/* Re-protect the pages dirtied since the previous checkpoint while the
 * program keeps running (any thread may write the regions meanwhile), in
 * passes until few are left, so that the next mmk_ckpt_start() - the part
 * that needs the writers quiesced - is short.  Call it right before
 * quiescing.  Returns the number of pages re-protected.  Does nothing while
 * a checkpoint is being written.  Errors: -errno of the ioctl. */
MMK_API int mmk_ckpt_prepare(mmk_ckpt *c);

/* Start a checkpoint of every region, as of now; the image is written by a
 * background thread.  With opts.quiesce: first mmk_ckpt_prepare() (the
 * program running), then quiesce(1), the instant, quiesce(0); without it
 * the call is the instant and the caller has quiesced the writers.
 * Returns its generation (> 0) - with MMK_CKPT_WAIT only once the image is
 * durable, else at once.
 * Errors: -EINVAL no region; -EBUSY a checkpoint is still being written
 * (mmk_ckpt_wait first); with MMK_CKPT_WAIT those of mmk_ckpt_wait. */
MMK_API int mmk_ckpt_start(mmk_ckpt *c, unsigned flags);

/* Wait for the running checkpoint (if any) and return the result of the
 * last one started: 0 when its image is durable; -ENOSPC (disk full),
 * -EIO, -errno of the write: the image was abandoned (its temp file
 * removed), the previous images are intact and the next checkpoint includes
 * every page this one held. */
MMK_API int mmk_ckpt_wait(mmk_ckpt *c);

/* System calls that write into a tracked region (read(2), recv(2),
 * process_vm_writev, ...) fail with EFAULT when they hit a page that is
 * write-protected at that moment: the kernel cannot take the SIGBUS path
 * for them.  Call this right before such a call: it does for
 * [addr, addr+len) what a write fault does (copies the page aside if a
 * checkpoint still needs it, marks it dirty, un-protects it).  The pages
 * stay writable until the next checkpoint instant (so do not let one run in
 * between: it is the caller's thread that is quiesced for it).  ~1-3 us per
 * page.  Errors: -EINVAL a page outside every region; -errno of the ioctl. */
MMK_API int mmk_ckpt_prewrite(mmk_ckpt *c, void *addr, size_t len);

/* 1 while a checkpoint is being written, else 0. */
MMK_API int mmk_ckpt_busy(mmk_ckpt *c);

enum {
	/* periodic: never start from the timer thread; only flag it due, and
	 * mmk_ckpt_poll() (called by the program at a consistent point)
	 * starts it */
	MMK_CKPT_SAFEPOINT = 1u << 2,
};

/* Periodic mode (PhantomOS style): every interval_ms a checkpoint is
 * started in the background (skipped while the previous one is still being
 * written); with opts.keep the last `keep` generations stay.  Who starts
 * it: with MMK_CKPT_SAFEPOINT, the program at its next mmk_ckpt_poll();
 * otherwise the timer thread, between opts.quiesce(arg,1) and (arg,0) if
 * given (without a quiesce hook the program must tolerate the start racing
 * with its writes: each page is saved as of some moment within the start
 * call).  interval_ms 0 stops periodic mode.  Errors: -EINVAL; -errno from
 * creating the thread. */
MMK_API int mmk_ckpt_periodic(mmk_ckpt *c, unsigned interval_ms, unsigned flags);

/* Safe point: start a checkpoint if the periodic timer says one is due.
 * Returns its generation, or 0 if none was due (one atomic load), or an
 * error of mmk_ckpt_start. */
MMK_API int mmk_ckpt_poll(mmk_ckpt *c);

typedef struct mmk_ckpt_stats {
	unsigned long long generation;  /* of the last checkpoint started */
	unsigned long long completed, failed;
	size_t regions, regions_copy_mode;
	size_t pages_tracked;
	/* last completed checkpoint */
	int last_full;                  /* 1 full image, 0 delta */
	size_t last_pages;              /* pages written into the image */
	size_t last_bytes;              /* image file size */
	double last_start_us;           /* the instant: writers quiesced */
	double last_prepare_us;         /* sweep passes before it (quiesce hook) */
	double last_write_s;            /* start to durable */
	size_t last_copied;             /* pages copied by the fault handler */
	size_t last_peak_held;          /* most pages held aside at once */
	size_t last_instant_copies;     /* pages copied at the instant */
	unsigned long long faults;      /* write-protect faults handled, total */
	/* where the last completed checkpoint's time went (microseconds;
	 * last_prepare_us + last_start_us + these ~ last_write_s) */
	struct {
		double scan_us;         /* finding the pages of the image */
		double copy_us;         /* taking the pages (+ checksums) */
		double write_us;        /* write(2)s of pages, metadata, header */
		double sync_us;         /* fdatasync of the image */
		double publish_us;      /* rename + directory fsync */
		double recheck_us;      /* re-protecting pages copied at the instant */
	} last_phase;
} mmk_ckpt_stats;

MMK_API int mmk_ckpt_stats_get(mmk_ckpt *c, mmk_ckpt_stats *st);

/* Wait for a running checkpoint, stop tracking (regions are left
 * unprotected, as they are) and free everything.  NULL ok. */
MMK_API void mmk_ckpt_destroy(mmk_ckpt *c);

/* ---- restart -------------------------------------------------------------- */

typedef struct mmk_ckpt_region {
	char name[64];
	uint64_t addr;   /* address at checkpoint time */
	uint64_t len;    /* bytes (whole pages) */
	void *base;      /* mmk_ckpt_restart: where it is mapped now */
} mmk_ckpt_region;

typedef struct mmk_ckpt_restored {
	unsigned long long generation;  /* of the newest image of the chain */
	unsigned chain;                 /* images in the chain (1 = one full) */
	size_t nregions;
	mmk_ckpt_region *regions;       /* malloc'd; mmk_ckpt_restored_free */
} mmk_ckpt_restored;

enum {
	MMK_CKPT_SAME_ADDR = 1u << 4,    /* restart: map at the recorded address if free */
	MMK_CKPT_REQUIRE_ADDR = 1u << 5, /* ...and fail with -EEXIST if it is not */
};

/* Map the regions of an image chain into this process (fresh private
 * anonymous mappings, read-write) and fill them.  `path` is an image file
 * (its chain: parents are found in the same directory) or a directory (its
 * newest image whose chain is complete and valid; damaged or incomplete
 * newer ones are skipped).  With MMK_CKPT_SAME_ADDR each region goes to its
 * recorded address when that range is free, else anywhere (see base); with
 * MMK_CKPT_REQUIRE_ADDR too, an occupied range fails the call.  Every page
 * is checked against its checksum.  On failure nothing stays mapped.
 * Errors: -ENOENT no image / missing parent; MMK_ECORRUPT a checksum,
 * length or format check failed; -EEXIST address taken (REQUIRE_ADDR);
 * -ENOMEM; -errno of reading. */
MMK_API int mmk_ckpt_restart(const char *path, unsigned flags, mmk_ckpt_restored *out);

/* base of the region called name, or NULL */
MMK_API void *mmk_ckpt_restored_find(const mmk_ckpt_restored *r, const char *name, size_t *len);

/* Free the region array (the memory stays mapped: it is the program's). */
MMK_API void mmk_ckpt_restored_free(mmk_ckpt_restored *r);

/* ---- images ----------------------------------------------------------------- */

typedef struct mmk_ckpt_info {
	unsigned long long generation, parent; /* parent 0: a full image */
	unsigned long long created_ns;         /* CLOCK_REALTIME */
	unsigned version;
	size_t nregions;
	size_t pages;                          /* pages stored in this image */
	size_t file_size;
} mmk_ckpt_info;

/* Read and check an image's header, metadata and trailer (not the pages).
 * regions may be NULL; at most max entries are filled (base = NULL).
 * Errors: -ENOENT; MMK_ECORRUPT; -errno. */
MMK_API int mmk_ckpt_info_read(const char *image, mmk_ckpt_info *info, mmk_ckpt_region *regions,
			       size_t max);

/* Check an image and its whole chain, every page against its checksum.
 * Returns the chain length.  Errors: as mmk_ckpt_restart. */
MMK_API int mmk_ckpt_verify(const char *path);

enum {
	MMK_CKPT_PRUNE = 1u << 6, /* compact: then delete older images */
};

/* Fold the chain ending at `image` into one full image of the same
 * generation, atomically replacing it (temp file, fsync, rename).  Newer
 * deltas that depend on it stay valid.  With MMK_CKPT_PRUNE, images of
 * older generations in the same directory are deleted afterwards.  Returns
 * the length of the chain folded (1: already full, nothing done).
 * Errors: as mmk_ckpt_verify; -ENOSPC and other write errors (the chain is
 * unchanged). */
MMK_API int mmk_ckpt_compact(const char *image, unsigned flags);

/* Path of the newest image in dir whose chain is valid (structural checks),
 * into buf.  Errors: -ENOENT none; -ENAMETOOLONG. */
MMK_API int mmk_ckpt_latest(const char *dir, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
