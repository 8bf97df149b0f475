/*
 * mmkit/snapshot.h - save and restore memory in place (seed 000, mmcontext).
 *
 * A snapshot object (mmk_snap) tracks a set of memory regions - explicit
 * ranges, or "the whole process" - and keeps a stack of save points:
 *
 *     mmk_snap_save(s)     push a save point (the memory as it is now)
 *     mmk_snap_restore(s)  put the memory back as it was at the top save
 *                          point; the save point stays, so a program can
 *                          restore to it again and again
 *     mmk_snap_drop(s)     discard the top save point, keeping the memory
 *                          as it is (the changes become part of the level
 *                          below): save/drop pairs nest for backtracking
 *
 * Cost model.  Nothing is copied at save time beyond the pages written
 * since the previous save or restore: the engine write-protects the regions
 * once and from then on learns which pages change.  A save right after a
 * restore therefore costs O(1); a restore costs O(pages written since the
 * save point) for the tracking backends.
 *
 * Backends (chosen per region; force one with opts.backend or the
 * environment variable MMK_SNAP_BACKEND=copy|async|lazy|mprotect):
 *   copy   full copy of the region per save point; for small regions (where
 *          it is fastest), mostly-dirty regions, and any kernel.
 *   async  userfaultfd write-protect in async mode (Linux 6.7+) with the
 *          PAGEMAP_SCAN ioctl and an eager shadow copy of the region: a
 *          write costs one kernel-resolved fault (~0.4 us), a restore one
 *          scan plus the copies.  Works on any private mapping, including
 *          programs' and libraries' .data.  Memory: one shadow per region.
 *   lazy   userfaultfd write-protect in sync mode with UFFD_FEATURE_SIGBUS
 *          (Linux 4.14+ for anonymous memory): the first write to a page
 *          after a save point raises SIGBUS in the writing thread; mmkit's
 *          handler copies the page aside and unprotects it (~2 us).  Memory
 *          and time are proportional to the pages written, not to the
 *          region.  Anonymous (and shmem) mappings only.  mmkit installs a
 *          SIGBUS handler and chains to the previous one for faults that
 *          are not its own.
 *   mprotect  the same copy-on-first-write with mprotect(PROT_READ) and
 *          SIGSEGV, for kernels or users without userfaultfd (any kernel;
 *          ~2 us a fault; splits the mapping at every written page, so at
 *          most ~32000 written pages per save point under the default
 *          vm.max_map_count).  Explicit regions only.
 * Policy (MMK_SNAP_AUTO): explicit regions < 64 KiB -> copy; everything
 * else -> async, or copy where the kernel lacks async WP (< 6.7).  After that
 * each region follows its observed dirty pages between copy and async (see
 * snap.c, "adaptive policy").  Lazy and mprotect are never chosen
 * automatically: with them the kernel cannot write into a tracked page that
 * the program has not written since the save point (read(2) into it fails
 * with EFAULT; the rseq area in a thread's TCB cannot be updated), so they
 * are opt-in (opts.backend, or the MMK_SNAP_LAZY_LARGE flag), for memory
 * the caller knows only user code writes.  Forcing them does not apply to a
 * process scope (chosen as for AUTO there; only MMK_SNAP_LAZY_LARGE brings
 * lazy tracking to its big anonymous mappings).
 *
 * Process scope (mmk_snap_add_process).  Tracks every private writable
 * mapping - heap, anonymous mmaps, .data/.bss of the program and of every
 * loaded library - except: thread stacks (the caller's frame must survive a
 * restore; [stack] and any mapping holding the current stack pointer), the
 * vdso/vvar, shared mappings (their writes are visible to others and are not
 * rolled back), mmkit's own memory and giant reservations of >= 1 TiB
 * (sanitizer shadow: see "Sanitizers" below).  A restore also puts the
 * program break back, unmaps private writable mappings created after the
 * save point, and re-creates tracked anonymous mappings that were unmapped
 * (when their backend holds a full copy; otherwise the restore fails with
 * -EFAULT before changing anything).
 * How changes to the address space are noticed: each save and restore reads
 * the program break (sbrk(0), ~2 ns) and /proc/self/statm (one pread,
 * ~0.3 us: total and private-writable virtual size).  Only when either
 * differs from the last look does the engine re-read the address space
 * (PROCMAP_QUERY or /proc/self/maps, ~3 us).  Async-tracked mappings are
 * additionally checked by every restore's PAGEMAP_SCAN (a tracked range no
 * longer registered fails the scan).  Blind spot, documented: an
 * unmap + map of exactly the same total size between two calls, of a
 * lazily-tracked region, is not noticed; call mmk_snap_rescan() after such
 * address-space surgery, or set MMK_SNAP_PARANOID in opts.flags to re-read
 * the address space on every call.
 *
 * What cannot be rolled back: file descriptors and file contents, shared
 * memory, other processes, kernel state (signal handlers, timers, ...),
 * and other threads' stacks and registers.
 *
 * Threads.  A snapshot object is not thread-safe: one thread calls its
 * functions.  Other threads may run while regions are tracked (their writes
 * are tracked like any other), but during mmk_snap_save/restore/drop every
 * other thread that might write tracked memory must be quiesced (stopped at
 * a barrier) by the caller: a write racing with a restore may be lost or
 * survive the restore, and with the async backend it may also leave that
 * page untracked for every later restore of the save point (the restore
 * re-protects the pages it copied back in one pass at its end, which can
 * cover a page another thread wrote meanwhile).  Process scope never restores other threads' stacks
 * only if they are excluded with mmk_snap_exclude(); with them quiesced in
 * user code, restoring their stacks too is what a rollback means.
 *
 * Sanitizers.  ASan/TSan/MSan keep their heap and shadow in giant
 * reservations that process scope skips, so under a sanitizer process scope
 * does not roll back the sanitizer's heap; explicit regions work normally.
 *
 * Several snapshot objects may coexist, on disjoint memory: adding a range
 * already tracked by another object fails with -EBUSY.
 */
#ifndef MMKIT_SNAPSHOT_H
#define MMKIT_SNAPSHOT_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_snap mmk_snap;

typedef enum mmk_snap_backend {
	MMK_SNAP_AUTO = 0,
	MMK_SNAP_COPY = 1,
	MMK_SNAP_ASYNC = 2,
	MMK_SNAP_LAZY = 3,
	MMK_SNAP_MPROTECT = 4,
} mmk_snap_backend;

enum {
	/* Re-read the address space on every process-scope save/restore. */
	MMK_SNAP_PARANOID = 1u << 0,
	/* AUTO may use the lazy backend for anonymous regions of >= 64 MiB
	 * (not the heap, not the mapping holding the thread's TCB): restore
	 * cost independent of the region's size.  Caveat (why it is opt-in):
	 * the kernel cannot take a lazy page's write fault itself, so a
	 * system call that writes into a tracked page not yet written by the
	 * program since the save point (read(2) into it, ...) fails with
	 * EFAULT. */
	MMK_SNAP_LAZY_LARGE = 1u << 1,
};

typedef struct mmk_snap_opts {
	mmk_snap_backend backend; /* AUTO: per-region policy (see above) */
	unsigned flags;           /* MMK_SNAP_* */
} mmk_snap_opts;

/* Create an empty snapshot object.  opts may be NULL (defaults; the
 * MMK_SNAP_BACKEND environment variable is honoured).
 * Errors: -EINVAL bad opts; -ENOMEM; MMK_ENOFEAT a forced backend the kernel
 * lacks (see mmkit features). */
MMK_API int mmk_snap_create(mmk_snap **out, const mmk_snap_opts *opts);

/* Track [addr, addr+len).  addr and len are rounded out to pages.  Only
 * before the first save point (depth 0).
 * Errors: -EINVAL len 0, or the range is not entirely mapped private and
 * writable; -EBUSY depth > 0, or the range overlaps one already tracked by
 * this or another snapshot object; -ENOMEM; MMK_ENOFEAT forced backend
 * unusable for this mapping (e.g. lazy on a file-backed mapping). */
MMK_API int mmk_snap_add(mmk_snap *s, void *addr, size_t len);

/* Track the whole process (see "Process scope").  Only at depth 0.
 * Errors: -EBUSY depth > 0 or already process scope; -ENOMEM; -errno from
 * reading the address space. */
MMK_API int mmk_snap_add_process(mmk_snap *s);

/* Process scope: never track [addr, addr+len) (e.g. another thread's stack,
 * a buffer that must survive restores).  Only at depth 0. */
MMK_API int mmk_snap_exclude(mmk_snap *s, void *addr, size_t len);

/* Push a save point.  Returns the new depth (>= 1).
 * Errors: -EINVAL no region tracked; -ENOMEM; -EFAULT a tracked mapping
 * disappeared (process scope re-reads and retries once). */
MMK_API int mmk_snap_save(mmk_snap *s);

/* Restore memory to the top save point (which stays).
 * Errors: -EINVAL depth 0; -EFAULT a tracked region was unmapped and cannot
 * be re-created (nothing was changed); -ENOMEM. */
MMK_API int mmk_snap_restore(mmk_snap *s);

/* Discard the top save point, keeping memory as it is.  Returns the new
 * depth.  Errors: -EINVAL depth 0. */
MMK_API int mmk_snap_drop(mmk_snap *s);

/* Current number of save points. */
MMK_API int mmk_snap_depth(const mmk_snap *s);

/* Process scope: re-read the address space now. */
MMK_API int mmk_snap_rescan(mmk_snap *s);

/* Call fn(addr, len, arg) for each run of pages that changed since the top
 * save point (for the tracking backends exactly the pages written since it,
 * or since the last restore to it; for copy regions the pages that differ
 * from the saved copy).  Runs are page-aligned, in no particular order
 * across regions, and do not overlap.  fn returning non-zero stops the walk
 * and is returned.  Memory is not changed and nothing is re-protected, so
 * the pages stay reported until the next save, restore or drop.  This is
 * what a redo log needs at commit time (see mmk_rvm).
 * Errors: -EINVAL depth 0; -errno from the kernel scan. */
typedef int (*mmk_snap_run_fn)(void *addr, size_t len, void *arg);
MMK_API int mmk_snap_changed(mmk_snap *s, mmk_snap_run_fn fn, void *arg);

/* The image at the top save point of the page holding addr, read-only, or
 * NULL when the engine keeps none (depth 0, the address is not tracked,
 * or the page is unchanged since the save point in a backend that copies
 * only written pages — then the page itself is its image).  Valid until the
 * next save, restore or drop.  With mmk_snap_changed this lets a caller diff
 * a changed page against its saved image (a redo log of changed bytes). */
MMK_API const void *mmk_snap_saved_page(const mmk_snap *s, const void *addr);

typedef struct mmk_snap_stats {
	size_t regions;          /* tracked regions */
	size_t pages_tracked;    /* pages in tracked regions */
	size_t pages_dirtied;    /* pages restored or saved by the last restore/save */
	size_t bytes_held;       /* memory held for save points (shadows, copies) */
	size_t regions_by_backend[5]; /* index = mmk_snap_backend */
	unsigned long long saves, restores, rescans;
	const char *backend;     /* "copy", "async", "lazy" or "mixed" */
} mmk_snap_stats;

MMK_API int mmk_snap_stats_get(const mmk_snap *s, mmk_snap_stats *st);

/* Stop tracking, release everything.  Memory is left as it is.  NULL ok. */
MMK_API void mmk_snap_destroy(mmk_snap *s);

/* Name of a backend ("copy", "async", "lazy", "auto"). */
MMK_API const char *mmk_snap_backend_name(mmk_snap_backend b);

/* ---- mmk_try: run a function, roll back on failure ------------------------- */

typedef struct mmk_try_opts {
	unsigned timeout_ms;   /* 0 = no limit; else CPU-independent wall time */
	int fn_result;         /* out: fn's return value (when it returned) */
	int signo;             /* out: the signal that stopped fn (MMK_ECRASHED) */
} mmk_try_opts;

/* Push a save point on s (NULL: the process-wide context of mmcontext(),
 * created with process scope on first use), run fn(arg) and:
 *   - fn returns >= 0: drop the save point (keep fn's changes), return 0;
 *   - fn returns < 0: restore, return MMK_EFAILED (opts->fn_result = value);
 *   - fn raises SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT (abort()) in this
 *     thread: restore, return MMK_ECRASHED (opts->signo);
 *   - fn runs longer than opts->timeout_ms: it is interrupted (a timer signal,
 *     SIGRTMIN+7, directed at this thread), memory restored, MMK_ETIMEDOUT.
 * In every failing case the save point is dropped after the restore, so the
 * depth is as before the call.  fn's memory writes are rolled back; nothing
 * else is (see "What cannot be rolled back").  Handlers for the five crash
 * signals and the timer signal are installed for the duration of the call
 * and the previous ones put back.  A crash with the signal blocked, or in
 * another thread, is not caught.  Nested mmk_try calls are allowed.
 * Errors before fn runs: those of mmk_snap_save. */
MMK_API int mmk_try(mmk_snap *s, int (*fn)(void *arg), void *arg, mmk_try_opts *opts);

/* ---- seed compatibility ------------------------------------------------------ */

/* mmcontext(0) saves the whole process's memory (process scope, see above),
 * mmcontext(1) restores it and forgets the saved context.  Returns 0, or -1
 * with errno: EINVAL for a second save without restore, a restore without
 * save, or another op; ENOMEM and others from the engine.  A program may exit
 * with a context saved: everything is released with the process. */
MMK_API int mmcontext(int op);

/* The process-wide snapshot object behind mmcontext() and mmk_try(NULL, ...),
 * created (process scope) on first use; NULL if it cannot be created.  For
 * statistics and exclusions (mmk_snap_exclude before the first save); do not
 * push or drop save points on it while mmcontext() holds one. */
MMK_API mmk_snap *mmk_context(void);

#ifdef __cplusplus
}
#endif
#endif
