/*
 * sys/sys.h - the Linux primitives layer (internal).
 *
 * Every raw kernel interface mmkit uses goes through this layer, so the
 * subsystems above it read as policy: userfaultfd (uffd.c), PAGEMAP_SCAN and
 * pagemap (pagemap.c), address-space enumeration (maps.c), perf events
 * (perf.c), the feature probe (probe.c) and memory that belongs to mmkit
 * itself (self.c).
 *
 * Conventions: functions return 0 / a count, or a negative errno; they keep
 * no hidden state except the few cached descriptors documented below; they
 * are async-signal-safe where marked (AS-safe), because the snapshot engine
 * calls some of them from a SIGBUS handler.
 */
#ifndef MMK_SYS_H
#define MMK_SYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "sys/compat.h"

#if defined(__GNUC__)
#define MMK_HIDDEN __attribute__((visibility("hidden")))
#else
#define MMK_HIDDEN
#endif

#define MMK__PAGE 4096UL
#define MMK__PAGE_DOWN(x) ((uintptr_t)(x) & ~(MMK__PAGE - 1))
#define MMK__PAGE_UP(x) (((uintptr_t)(x) + MMK__PAGE - 1) & ~(MMK__PAGE - 1))

/* ---- userfaultfd (uffd.c) ------------------------------------------------- */
typedef struct mmk__uffd {
	int fd;
	uint64_t features; /* features granted by UFFDIO_API */
} mmk__uffd;

/* Open a userfaultfd (UFFD_USER_MODE_ONLY first, then without it, so an
 * unprivileged process works where the kernel allows it) and negotiate
 * `features`.  -EPERM/-ENOSYS when unavailable, -EOPNOTSUPP when a requested
 * feature is missing.  flags: O_CLOEXEC is always set; pass O_NONBLOCK if
 * wanted. */
MMK_HIDDEN int mmk__uffd_open(mmk__uffd *u, uint64_t features, int flags);
MMK_HIDDEN void mmk__uffd_close(mmk__uffd *u);
/* All features this kernel offers (a throw-away handshake); 0 on error. */
MMK_HIDDEN int mmk__uffd_query_features(uint64_t *features, bool *user_mode_only);
/* Register [addr, addr+len) with UFFDIO_REGISTER_MODE_* `modes`. */
MMK_HIDDEN int mmk__uffd_register(mmk__uffd *u, uintptr_t addr, size_t len, uint64_t modes);
MMK_HIDDEN int mmk__uffd_unregister(mmk__uffd *u, uintptr_t addr, size_t len);
/* Write-protect (protect=true) or un-protect a range.  AS-safe. */
MMK_HIDDEN int mmk__uffd_wp(mmk__uffd *u, uintptr_t addr, size_t len, bool protect);

/* ---- pagemap (pagemap.c) -------------------------------------------------- */
/* The process's /proc/self/pagemap descriptor, opened once (O_CLOEXEC) and
 * kept; -errno if it cannot be opened.  Re-opened after fork. */
MMK_HIDDEN int mmk__pagemap_fd(void);
/* pthread_atfork child handler: drops the cached /proc/self descriptors */
MMK_HIDDEN void mmk__sys_atfork_child(void);

/* Called with each written range [start, end); return non-zero to stop. */
typedef int (*mmk__range_fn)(uintptr_t start, uintptr_t end, void *arg);

/* PAGEMAP_SCAN [start, end) for pages written since they were last
 * write-protected (async-WP registered ranges).  With `reprotect` the kernel
 * write-protects the matching pages in the same pass.  Partial results are
 * handled: the walk continues while the kernel fills the whole vector
 * (completion is judged by "fewer regions than the vector holds", never by
 * walk_end, which can be stale).  Returns the number of written pages, or
 * -errno, or the callback's non-zero value (as is).  AS-safe. */
MMK_HIDDEN long mmk__pagemap_scan_written(uintptr_t start, uintptr_t end, bool reprotect,
					  mmk__range_fn fn, void *arg);
/* General form: ranges of pages whose categories match
 * (cat ^ inverted) & mask == mask and, if anyof, & anyof != 0; `flags` are
 * PM_SCAN_* (WP_MATCHING re-protects what matched).  Same completion rule.
 * fn may be NULL (count, or re-protect, only). */
MMK_HIDDEN long mmk__pagemap_scan(uintptr_t start, uintptr_t end, uint64_t flags, uint64_t mask,
				  uint64_t anyof, mmk__range_fn fn, void *arg);
/* One raw PAGEMAP_SCAN call (used by the probe and tests). */
MMK_HIDDEN long mmk__pagemap_scan_raw(struct pm_scan_arg *arg);


/* ---- address space (maps.c) ----------------------------------------------- */
enum {
	MMK__MAP_SHARED  = 1u << 0, /* MAP_SHARED (writes reach other mappings) */
	MMK__MAP_FILE    = 1u << 1, /* backed by a file (including .data of ELF objects) */
	MMK__MAP_STACK   = 1u << 2, /* [stack] or a thread's stack */
	MMK__MAP_HEAP    = 1u << 3, /* [heap] (the brk area) */
	MMK__MAP_SPECIAL = 1u << 4, /* [vdso] [vvar] [vsyscall] ... */
	MMK__MAP_SELF    = 1u << 5, /* entirely mmkit's own (partly: see mmk__self_subtract) */
	MMK__MAP_NORESERVE_HUGE = 1u << 6, /* sanitizer-shadow-like giant reservations */
};

typedef struct mmk__map {
	uintptr_t start, end;
	unsigned prot;          /* PROT_READ|PROT_WRITE|PROT_EXEC */
	unsigned flags;         /* MMK__MAP_* */
	uint64_t offset, inode;
	unsigned dev_major, dev_minor;
	char name[128];         /* path or [tag], truncated; "" if anonymous */
} mmk__map;

typedef struct mmk__maplist {
	mmk__map *v;
	size_t n, cap;
} mmk__maplist;

enum { MMK__MAPS_AUTO = 0, MMK__MAPS_PROCFS = 1, MMK__MAPS_QUERY = 2 };

/* Enumerate the process's mappings in address order, classifying each.
 * `how`: AUTO uses PROCMAP_QUERY when the kernel has it, otherwise parses
 * /proc/self/maps; the other two force one method (-EOPNOTSUPP if absent). */
MMK_HIDDEN int mmk__maps_read(mmk__maplist *ml, int how);
MMK_HIDDEN void mmk__maplist_free(mmk__maplist *ml);
/* The mapping covering addr, or the next one above it (-ENOENT if none). */
MMK_HIDDEN int mmk__maps_find(uintptr_t addr, mmk__map *out);
/* Private, writable, not a stack, not special, not mmkit's own. */
MMK_HIDDEN bool mmk__map_is_snapshot_candidate(const mmk__map *m);

/* ---- mmkit's own memory (self.c) ------------------------------------------ */
/* Anonymous memory for mmkit's internal state, tagged so the address-space
 * enumeration marks it MMK__MAP_SELF and process-wide snapshots skip it.
 * mmk__self_alloc() returns page-aligned zeroed memory or NULL. */
MMK_HIDDEN void *mmk__self_alloc(size_t len);
MMK_HIDDEN void mmk__self_free(void *p, size_t len);
MMK_HIDDEN bool mmk__self_covers(uintptr_t start, uintptr_t end);   /* entirely */
/* Pages currently mapped by mmk__self_alloc (so that address-space
 * fingerprints can ignore mmkit's own mappings). */
MMK_HIDDEN size_t mmk__self_pages(void);
/* Call fn for each part of [a, b) that is not mmkit's own memory (the kernel
 * may have merged a self mapping with a neighbour); stops on non-zero. */
MMK_HIDDEN int mmk__self_subtract(uintptr_t a, uintptr_t b,
				  int (*fn)(uintptr_t, uintptr_t, void *), void *arg);
/* calloc/realloc/free work-alikes in mmkit's own memory (page-granular:
 * for structures, not for many tiny objects).  Not async-signal-safe. */
MMK_HIDDEN void *mmk__self_calloc(size_t n, size_t size);
MMK_HIDDEN void *mmk__self_realloc(void *p, size_t size);
MMK_HIDDEN void mmk__self_release(void *p);
/* [start,end) of the ELF object mmkit was loaded from (its .so), or zero if
 * linked statically. */
MMK_HIDDEN void mmk__self_object(const char **path);

/* ---- raw memory copies ---------------------------------------------------------
 * The snapshot engine copies the program's memory as bytes, including what
 * a sanitizer considers poisoned (redzones, freed blocks).  In sanitizer
 * builds these are uninstrumented loops; otherwise plain memcpy/memcmp.
 * AS-safe. */
#if defined(__SANITIZE_ADDRESS__)
#define MMK__RAW_ATTR __attribute__((no_sanitize("address"), noinline, unused, \
				     optimize("no-tree-loop-distribute-patterns")))
MMK__RAW_ATTR static void mmk__copy(void *d, const void *s, size_t n)
{
	volatile unsigned char *dd = d;
	const volatile unsigned char *ss = s;
	for (size_t i = 0; i < n; i++)
		dd[i] = ss[i];
}
MMK__RAW_ATTR static int mmk__cmp(const void *a, const void *b, size_t n)
{
	const volatile unsigned char *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}
#else
#include <string.h>
#define mmk__copy memcpy
#define mmk__cmp memcmp
#endif

/* ---- perf events (perf.c) ---------------------------------------------------- */
enum {
	MMK__PERF_DISABLED = 1u << 0, /* created stopped (a probe) */
	MMK__PERF_SWITCHES = 1u << 1, /* also write context-switch records, and
				       * FORK/EXIT records of the thread */
	MMK__PERF_THREADS = 1u << 2,  /* counters: also every thread the thread
				       * creates from now on (Linux >= 5.13:
				       * -EINVAL before) */
};
/* A software event (config PERF_COUNT_SW_*) of user-mode activity of thread
 * `tid` (0: the caller), any CPU, close-on-exec: the descriptor, or -errno. */
MMK_HIDDEN int mmk__perf_open_sw(uint64_t config, pid_t tid, unsigned flags);

/* A group of n <= MMK__PERF_MAX_COUNTERS counting software events (configs
 * PERF_COUNT_SW_*) of user-mode activity of thread `tid` (flags: 0 or
 * MMK__PERF_THREADS), read together in one system call: fds[0] is the
 * leader.  Returns 0 with every fds[i] set, or -errno with none open. */
#define MMK__PERF_MAX_COUNTERS 4
MMK_HIDDEN int mmk__perf_open_counters(pid_t tid, const uint64_t *configs, int n, int *fds, unsigned flags);
/* The n values of the group led by `leader`, in the order they were
 * opened: 0, or -ESRCH for a short read, or -errno.  A group whose thread
 * has exited keeps reading its final values (Linux 6.18), even after the
 * process was reaped. */
MMK_HIDDEN int mmk__perf_read_counters(int leader, uint64_t *vals, int n);
MMK_HIDDEN void mmk__perf_close_counters(int *fds, int n); /* closes those >= 0, sets -1 */

/* ---- misc ------------------------------------------------------------------- */
MMK_HIDDEN int mmk__read_file(const char *path, char *buf, size_t len); /* NUL-terminated, returns bytes */

#endif
