/*
 * ckpt/ckpt_int.h - internals of region checkpoints (see mmkit/ckpt.h).
 *
 * Per-page state machine (one atomic byte per page of a tracked region):
 *
 *   CLEAN   write-protected, unchanged since the last image that holds it
 *   DIRTY   written since, and NOT protected: goes into the next image
 *   DIRTY_P written since, protected again by a sweep (mmk_ckpt_prepare or
 *           the background sweeper) so that the instant need not do it
 *   UNPROT  transient: a fault handler is un-protecting it
 *   PENDING in the running checkpoint, still protected, not saved yet
 *   WRITING the writer thread is copying it (it is still protected)
 *   COPYING a fault handler is copying it aside, then un-protecting it
 *   COPIED  its checkpoint-instant content is in the side store; the page
 *           itself is unprotected and being written by the program
 *   ICOPIED the same, copied at the instant itself (it was DIRTY then): after
 *           the image is written the writer re-protects it and compares it
 *           with that copy, so an unchanged page is CLEAN again and stays
 *           out of the next delta
 *
 * Transitions.  Start (writers quiesced): DIRTY->ICOPIED (copied aside
 * at the instant, no system call), DIRTY_P->PENDING, and for a full image
 * CLEAN->PENDING.  Writer:
 * PENDING->WRITING->CLEAN, COPIED|ICOPIED->DIRTY; abandoning an image:
 * PENDING->DIRTY_P, COPIED|ICOPIED->DIRTY.  Recheck (writer, after the
 * image, still inside the checkpoint so no sweep or instant runs): each
 * former ICOPIED page DIRTY->DIRTY_P, re-protect, compare with its instant
 * copy, equal: DIRTY_P->CLEAN (the CAS fails if a write fault intervened).  Fault handler: CLEAN|DIRTY_P|DIRTY->UNPROT->
 * (un-protect)->DIRTY, PENDING->COPYING->(copy, un-protect)->COPIED; on
 * UNPROT, WRITING or COPYING it spins until the other side is done.
 * Sweeper (not during a checkpoint, under the handle lock, program running):
 * DIRTY->DIRTY_P, then re-protect.
 * Rules that make this race-free: a page is never read for an image after
 * it was un-protected (the writer reads only in WRITING, the handler copies
 * before un-protecting); DIRTY and COPIED are only ever stored after the
 * un-protect is complete, so a sweeper's claim (DIRTY->DIRTY_P + protect)
 * can never be undone by a late un-protect.  A sweep may re-protect a
 * whole span (cheaper than many runs when dirty pages are dense): that can
 * protect a page whose handler is between its un-protect and its DIRTY
 * store, leaving it DIRTY but protected; the next write then faults once
 * more and the handler un-protects it again (DIRTY is handled like CLEAN).
 * Between checkpoints only
 * CLEAN, DIRTY, DIRTY_P and UNPROT exist.
 */
#ifndef MMK_CKPT_INT_H
#define MMK_CKPT_INT_H

#include <mmkit/ckpt.h>
#include <mmkit/features.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include "sys/sys.h"

#if defined(__x86_64__) || defined(__i386__)
#define CK_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CK_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CK_CPU_RELAX() ((void)0)
#endif

enum {
	CK_CLEAN = 0, CK_DIRTY = 1, CK_PENDING = 2, CK_WRITING = 3, CK_COPYING = 4, CK_COPIED = 5,
	CK_DIRTY_P = 6, CK_UNPROT = 7, CK_ICOPIED = 8
};

/* ---- on-disk format (little-endian, this machine's layout) ---------------- */
#define CK_MAGIC "MMKCKPT1"
#define CK_TMAGIC "MMKCKEND"
#define CK_VERSION 1u
#define CK_NAME_MAX 64
#define CK_MAX_REGIONS 256

enum { CK_RENT_DENSE = 1u << 0 }; /* holds pages 0..n-1: no index stored */

typedef struct ck_hdr {
	char magic[8];
	uint32_t version;
	uint32_t hdr_size;       /* header + region table, padded to a page */
	uint64_t generation;
	uint64_t parent;         /* 0: a full image */
	uint64_t created_ns;
	uint32_t nregions;
	uint32_t page_size;
	uint64_t npages;         /* pages stored, all regions */
	uint64_t meta_off, meta_len; /* indices and checksums */
	uint64_t data_off;       /* first page, page aligned */
	uint64_t file_len;       /* including the trailer */
	uint32_t flags;
	uint32_t hdr_crc;        /* of hdr_size bytes with this field 0 */
} ck_hdr;

typedef struct ck_rent {
	char name[CK_NAME_MAX];
	uint64_t addr, len;
	uint64_t npages;         /* pages of this region stored here */
	uint64_t idx_off;        /* u32 page numbers (0 if dense) */
	uint64_t crc_off;        /* u32 CRC-32C per stored page */
	uint64_t data_off;
	uint32_t flags;          /* CK_RENT_* */
	uint32_t pad;
	uint64_t pad2;
} ck_rent;

typedef struct ck_trailer {
	char magic[8];
	uint64_t generation;
	uint64_t file_len;
	uint32_t meta_crc;       /* header block, then metadata */
	uint32_t zero[7];
	uint32_t trailer_crc;    /* of the 60 bytes before it */
} ck_trailer;

_Static_assert(sizeof(ck_rent) == 128, "ck_rent layout");
_Static_assert(sizeof(ck_trailer) == 64, "ck_trailer layout");

/* ---- image access (image.c) ------------------------------------------------- */
MMK_HIDDEN uint32_t mmk__ck_crc32c(uint32_t crc, const void *p, size_t n);

typedef struct ck_img {
	int fd;
	char path[PATH_MAX];
	ck_hdr h;
	ck_rent *rt;             /* nregions */
	char *meta;              /* meta_len bytes */
	uint64_t size;
} ck_img;

MMK_HIDDEN int mmk__ck_img_open(ck_img *im, const char *path);
MMK_HIDDEN void mmk__ck_img_close(ck_img *im);
static inline const uint32_t *ck_idx(const ck_img *im, size_t r)
{
	return im->rt[r].flags & CK_RENT_DENSE
		       ? NULL
		       : (const uint32_t *)(im->meta + (im->rt[r].idx_off - im->h.meta_off));
}
static inline const uint32_t *ck_crc(const ck_img *im, size_t r)
{
	return (const uint32_t *)(im->meta + (im->rt[r].crc_off - im->h.meta_off));
}
static inline uint32_t ck_page_of(const ck_img *im, size_t r, size_t k)
{
	const uint32_t *ix = ck_idx(im, r);
	return ix ? ix[k] : (uint32_t)k;
}

/* file names */
MMK_HIDDEN void mmk__ck_name(char *buf, size_t len, const char *dir, uint64_t gen, bool tmp);
/* generations of the images in dir, ascending (malloc'd; *n may be 0) */
MMK_HIDDEN int mmk__ck_list(const char *dir, uint64_t **gens, size_t *n);
/* the chain ending at path, newest first (chain[0] is path's image); checks
 * structure and that every image has the same region table */
MMK_HIDDEN int mmk__ck_chain_open(const char *path, ck_img **chain, size_t *n);
/* same, for a path that may be a directory (newest valid chain) */
MMK_HIDDEN int mmk__ck_chain_resolve(const char *path, ck_img **chain, size_t *n);
MMK_HIDDEN void mmk__ck_chain_close(ck_img *chain, size_t n);
MMK_HIDDEN int mmk__ck_fsync_dir(const char *dir);
MMK_HIDDEN void mmk__ck_dirname(const char *path, char *dir, size_t len);
/* pwrite all of it; -errno */
MMK_HIDDEN int mmk__ck_pwrite(int fd, const void *p, size_t n, uint64_t off);
MMK_HIDDEN int mmk__ck_pread(int fd, void *p, size_t n, uint64_t off);
/* seconds spent in each durable step (accumulated; see mmk_ckpt_stats) */
typedef struct ck_times {
	double write, sync, publish;
} ck_times;
/* finish an image file: metadata, header, trailer, fdatasync, rename, fsync
 * dir; tm (may be NULL) accumulates the time of each step */
MMK_HIDDEN int mmk__ck_finish(int fd, ck_hdr *h, const ck_rent *rt, const void *meta,
			      const char *tmp, const char *final, const char *dir, ck_times *tm);
MMK_HIDDEN uint64_t mmk__ck_now_ns(void);

/* ---- tracking (track.c, writer.c) ---------------------------------------------- */
typedef struct ck_region {
	char name[CK_NAME_MAX];
	uintptr_t start, end;
	size_t npages;
	bool copy_mode;          /* not write-protect tracked: copied at start */
	bool registered;         /* with the handle's userfaultfd */
	bool in_registry;        /* visible to the SIGBUS handler */
	_Atomic uint8_t *st;     /* npages states */
	char *side;              /* npages * PAGE, NORESERVE: pages copied aside */
	struct mmk_ckpt *owner;
	/* running checkpoint (worker) */
	uint32_t *idx;           /* pages in it (not for dense) */
	uint32_t *crc;
	size_t n;
	bool dense;
	/* sweep scratch: runs to re-protect */
	uint64_t *runs;          /* pairs (first, count), npages/2+1 */
	/* pages copied at the instant, to re-check after the image */
	uint32_t *recheck;       /* npages, NORESERVE */
	size_t nrecheck;
} ck_region;

struct mmk_ckpt {
	char dir[PATH_MAX];
	mmk_ckpt_opts opts;
	mmk__uffd uffd;
	int uffd_err;            /* 0, or why there is no userfaultfd */
	ck_region **regions;
	size_t nregions;
	pthread_mutex_t lock;
	pthread_cond_t cv;       /* job posted, quit, periodic change */
	pthread_cond_t done_cv;  /* job finished */
	pthread_t thr;
	bool thr_started, quit;
	/* the running checkpoint */
	bool job, job_full;
	uint64_t job_gen, job_parent;
	double job_t0;
	int last_result;
	/* chain */
	uint64_t next_gen, last_done_gen;
	unsigned chain_len;
	bool need_full;
	bool protect_all;        /* an instant's re-protect failed: the next
				    instant protects every tracked page */
	/* periodic */
	unsigned period_ms, period_flags;
	bool timer_starting;     /* the worker is starting a periodic checkpoint */
	_Atomic bool due;
	/* buffers */
	char *buf;
	size_t buflen;
	/* stats */
	mmk_ckpt_stats stats;
	double ph_scan, ph_copy, ph_recheck; /* the running checkpoint's phases */
	ck_times ph_io;
	_Atomic size_t held_now, held_peak, copied;
	_Atomic unsigned long long faults;
	_Atomic long handlers;   /* SIGBUS handlers running on our regions */
};

MMK_HIDDEN int mmk__ck_install_handler(void);
/* what a write fault on page of r does (AS-safe); also mmk_ckpt_prewrite */
MMK_HIDDEN int mmk__ck_handle(ck_region *r, uintptr_t page);
MMK_HIDDEN int mmk__ck_registry_add(ck_region *r);
MMK_HIDDEN void mmk__ck_registry_remove(ck_region *r);
MMK_HIDDEN void mmk__ck_registry_quiesce(void);
MMK_HIDDEN double mmk__ck_mono(void);

#endif
