/*
 * snapshot/snap.h - internals of the snapshot engine.
 *
 * Model.  A snapshot object holds regions; each region has one backend
 * (a struct of function pointers, CRIU style) and a stack of save-point
 * "levels" 1..depth shared by all its regions.  Invariants every backend
 * keeps, for its region R and the object's depth d:
 *   - restore(d) makes R's memory byte-equal to image(L_d) and leaves the
 *     backend able to restore to L_d again;
 *   - drop(d) leaves memory untouched and makes the backend able to restore
 *     to image(L_{d-1});
 *   - push(d+1) makes the current memory image(L_{d+1});
 *   - between calls, every write to R is either trapped (async, lazy) or
 *     irrelevant (copy keeps full copies).
 * Backends that track writes keep R write-protected except for pages
 * written since the last push/restore ("unprotected" pages), so a push or
 * a restore costs O(pages written since the previous one).
 *
 * Page stores.  A "pstore" is a virtual copy area the size of the region
 * (MAP_NORESERVE: only pages actually stored use memory) plus a bitmap of
 * which pages it holds and a list of their indices, so clearing it is
 * O(pages held).  Its operations allocate nothing and make only
 * async-signal-safe system calls, because the lazy backend fills pstores
 * from its SIGBUS handler.
 */
#ifndef MMK_SNAPSHOT_SNAP_H
#define MMK_SNAPSHOT_SNAP_H

#include <mmkit/features.h>
#include <mmkit/snapshot.h>
#include "sys/sys.h"
#include <signal.h>

#define MMK__SNAP_MAX_DEPTH 64

typedef struct mmk__pstore {
	char *area;        /* npages * PAGE, MAP_NORESERVE, NULL until first use */
	uint64_t *bits;    /* npages bits */
	uint32_t *idx;     /* indices held, n of them */
	size_t n;
	size_t npages;
} mmk__pstore;

MMK_HIDDEN int mmk__pstore_init(mmk__pstore *ps, size_t npages);
MMK_HIDDEN void mmk__pstore_fini(mmk__pstore *ps);
/* AS-safe: copy page i from src if not held yet; returns 1 if stored. */
static inline int mmk__pstore_has(const mmk__pstore *ps, size_t i)
{
	return (ps->bits[i >> 6] >> (i & 63)) & 1;
}
MMK_HIDDEN int mmk__pstore_put(mmk__pstore *ps, size_t i, const void *src);
/* AS-safe: add page i to the set without data */
static inline void mmk__pstore_add(mmk__pstore *ps, size_t i)
{
	if (!mmk__pstore_has(ps, i)) {
		ps->bits[i >> 6] |= 1ULL << (i & 63);
		ps->idx[ps->n++] = (uint32_t)i;
	}
}
MMK_HIDDEN void mmk__pstore_clear(mmk__pstore *ps, bool release_memory);
static inline void *mmk__pstore_page(const mmk__pstore *ps, size_t i)
{
	return ps->area + i * MMK__PAGE;
}

struct mmk__region;
struct mmk_snap;

typedef struct mmk__backend {
	const char *name;
	mmk_snap_backend id;
	/* start tracking; memory at this moment is the base image */
	int (*attach)(struct mmk_snap *s, struct mmk__region *r);
	void (*detach)(struct mmk_snap *s, struct mmk__region *r);
	int (*push)(struct mmk_snap *s, struct mmk__region *r, int newdepth);
	int (*restore)(struct mmk_snap *s, struct mmk__region *r, int depth);
	int (*drop)(struct mmk_snap *s, struct mmk__region *r, int depth);
	/* report the runs of pages changed since L_depth (no side effects) */
	int (*changed)(struct mmk_snap *s, struct mmk__region *r, int depth,
		       mmk_snap_run_fn fn, void *arg);
	/* image(L_depth) of page i of r, or NULL if none is kept */
	const void *(*saved_page)(const struct mmk__region *r, int depth, size_t i);
	/* Optional: the mapping was re-created empty at [start, end); fill it
	 * with image(L_depth) and track it again.  NULL: the backend keeps no
	 * full copy and cannot (lazy). */
	int (*refill)(struct mmk_snap *s, struct mmk__region *r, int depth);
	size_t (*bytes)(const struct mmk__region *r);
} mmk__backend;

typedef struct mmk__region {
	uintptr_t start, end;
	size_t npages;
	unsigned map_flags;       /* MMK__MAP_* of the mapping when attached */
	unsigned prot;
	int birth;                /* first save-point level whose image holds it */
	bool automatic;           /* found by process scope (vs. mmk_snap_add) */
	bool seen;                /* reconcile mark */
	bool gone;                /* process scope: unmapped after a save point */
	uintptr_t ustart, uend;   /* copy backend: the exact bytes asked for */
	struct mmk_snap *owner;
	const mmk__backend *be;
	bool broken;              /* a backend switch failed both ways */
	/* adaptive policy (snap.c) */
	double ewma_dirty;        /* pages dirtied per restore, moving average */
	unsigned nobs, want_count;
	bool copy_sampled;        /* copy: this restore compares pages and counts */
	size_t last_dirty;        /* pages handled by the last push/restore */
	/* backend state */
	char *shadow;             /* async: image(L_depth) of the whole region */
	/* levels[0]: a page set (no data used): async "forced" pages that
	 * differ from the shadow although not written; lazy pages unprotected
	 * since the last push/restore.  levels[i], i >= 1: async: images at
	 * L_i of pages changed between L_i and L_i+1; lazy: images at L_i of
	 * pages first written after L_i.  Allocated on first use, kept. */
	mmk__pstore *levels;
	char **copies;            /* copy backend: one full copy per level */
} mmk__region;

struct mmk_snap {
	mmk_snap_opts opts;
	pid_t pid;                /* the process that created it */
	bool adaptive;            /* AUTO: regions may change backend */
	mmk__region **regions;
	size_t nregions, cap;
	int depth;
	bool process;
	/* userfaultfds: one async (WP_ASYNC), one sync (SIGBUS) per object */
	mmk__uffd uffd_async, uffd_lazy;
	/* process scope */
	uintptr_t brk_at[MMK__SNAP_MAX_DEPTH + 1];
	uintptr_t last_brk;
	unsigned long last_statm[2];
	int statm_fd;
	struct { uintptr_t start, end; } *excl;
	size_t nexcl;
	mmk__maplist maps;        /* scratch: the address space */
	mmk__maplist cand;        /* scratch: candidate pieces of it */
	mmk__region **async_sorted; /* async regions by address, for one combined scan */
	size_t nasync;
	bool async_dirty;         /* async_sorted must be rebuilt */
	/* stats */
	unsigned long long saves, restores, rescans;
	size_t last_dirty;
};

extern MMK_HIDDEN const mmk__backend mmk__be_copy, mmk__be_async, mmk__be_lazy, mmk__be_mprotect;

/* region registry (regions of all objects, for -EBUSY and the SIGBUS
 * handler); lazy.c owns the SIGBUS side */
MMK_HIDDEN int mmk__snap_claim(mmk__region *r);
MMK_HIDDEN void mmk__snap_unclaim(mmk__region *r);
MMK_HIDDEN bool mmk__snap_overlaps(uintptr_t start, uintptr_t end);

/* lazy.c: SIGBUS handling shared with mmk_try */
MMK_HIDDEN int mmk__lazy_install_handler(void);
MMK_HIDDEN int mmk__mprotect_install_handler(void);
/* AS-safe: handle a write fault on a lazy (SIGBUS) or mprotect (SIGSEGV)
 * region; false if the fault is not one of mmkit's */
MMK_HIDDEN bool mmk__lazy_fault(int sig, siginfo_t *si);
/* Another subsystem's write-fault handler (AS-safe; true = handled), asked
 * by mmkit's one SIGBUS/SIGSEGV handler before a fault is treated as
 * foreign (mmk_try, then the previous handler).  Installs the handler (or
 * re-installs it on top if replaced).  Up to 4 per signal. */
MMK_HIDDEN int mmk__fault_claimant_add(int sig, bool (*claim)(int sig, siginfo_t *si));
/* try.c: offered every crash signal that is not mmkit's own; does not
 * return if a mmk_try on this thread takes it */
MMK_HIDDEN void mmk__try_crash(int sig);
static inline size_t mmk__rlen(const mmk__region *r)
{
	return r->end - r->start;
}
/* Open u (once) with `features` plus WP_UNPOPULATED where the kernel has it;
 * MMK_ENOFEAT if a feature is missing. */
MMK_HIDDEN int mmk__snap_uffd(mmk__uffd *u, uint64_t features);
/* async.c: the combined scan; op 's' push, 'r' restore */
MMK_HIDDEN int mmk__async_scan(struct mmk_snap *s, int op, int depth, bool reprotect);
/* snap.c: restore; reprotect=false when the caller drops the level next and
 * the following call is expected to be a save (mmcontext, mmk_try) */
MMK_HIDDEN int mmk__snap_restore(struct mmk_snap *s, bool reprotect);
/* the level store i of r, allocated on first use */
MMK_HIDDEN mmk__pstore *mmk__level(mmk__region *r, int i);


/* process.c */
MMK_HIDDEN int mmk__proc_attach_all(struct mmk_snap *s);
MMK_HIDDEN int mmk__proc_check(struct mmk_snap *s, bool restoring, int target);
MMK_HIDDEN int mmk__snap_add_region(struct mmk_snap *s, uintptr_t start, uintptr_t end,
				    unsigned map_flags, unsigned prot, bool automatic);
MMK_HIDDEN void mmk__snap_remove_region(struct mmk_snap *s, size_t i);

#endif
