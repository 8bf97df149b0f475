/*
 * ckpt/writer.c - the checkpointer handle: regions, starting a checkpoint
 * (the instant), the background writer thread, periodic mode and pruning.
 *
 * Invariants:
 *   - at most one checkpoint runs per handle (c->job); between checkpoints
 *     tracked pages are CLEAN (protected) or DIRTY (see ckpt_int.h);
 *   - the writer reads a page of the program only in state WRITING (still
 *     protected) and takes side-store copies only in state COPIED;
 *   - whatever happens to the image file, every page of the checkpoint
 *     leaves the checkpoint: written ones become CLEAN, abandoned ones DIRTY
 *     (so the next checkpoint includes them); if the image fails after
 *     pages were taken (write, fdatasync or rename error), those pages are
 *     made dirty again (CLEAN -> DIRTY_P) and a failed full image makes the
 *     next one full: no page changed since the last durable image is lost;
 *   - images are written as temp files and renamed when durable
 *     (mmk__ck_finish); a failure unlinks the temp file and nothing else.
 */
#include "ckpt/ckpt_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CK_BUF (2u << 20)     /* write batch */
#define CK_KICK (16u << 20)   /* start writeback every this many bytes */

static void *worker(void *arg);

/* ---- create / destroy ---------------------------------------------------------- */

static int clean_temps(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (!strncmp(e->d_name, ".ckpt-", 6) && l > 4 && !strcmp(e->d_name + l - 4, ".tmp"))
			(void)unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
	return 0;
}

int mmk_ckpt_create(mmk_ckpt **out, const char *dir, const mmk_ckpt_opts *opts)
{
	if (!out || !dir || !*dir || strlen(dir) >= PATH_MAX - 64)
		return -EINVAL;
	*out = NULL;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	struct stat sb;
	if (stat(dir, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return -ENOTDIR;
	if (access(dir, W_OK | X_OK) < 0)
		return -errno;
	mmk_ckpt *c = mmk__self_calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	strcpy(c->dir, dir);
	if (opts)
		c->opts = *opts;
	if (!c->opts.max_chain)
		c->opts.max_chain = 16;
	c->uffd.fd = -1;
	c->need_full = true;
	int rc = clean_temps(dir);
	uint64_t *g = NULL;
	size_t ng = 0;
	if (!rc)
		rc = mmk__ck_list(dir, &g, &ng);
	if (rc < 0) {
		mmk__self_release(c);
		return rc;
	}
	c->next_gen = ng ? g[ng - 1] + 1 : 1;
	free(g);
	c->buflen = CK_BUF;
	c->buf = mmk__self_alloc(c->buflen);
	if (!c->buf) {
		mmk__self_release(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cv, &ca);
	pthread_cond_init(&c->done_cv, &ca);
	pthread_condattr_destroy(&ca);
	/* the worker takes no asynchronous signals of the program's */
	sigset_t all, old;
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = -pthread_create(&c->thr, NULL, worker, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc < 0) {
		mmk__self_free(c->buf, c->buflen);
		pthread_mutex_destroy(&c->lock);
		pthread_cond_destroy(&c->cv);
		pthread_cond_destroy(&c->done_cv);
		mmk__self_release(c);
		return rc;
	}
	c->thr_started = true;
	*out = c;
	return 0;
}

static void region_free(mmk_ckpt *c, ck_region *r)
{
	if (r->registered) {
		(void)mmk__uffd_wp(&c->uffd, r->start, r->end - r->start, false);
		(void)mmk__uffd_unregister(&c->uffd, r->start, r->end - r->start);
	}
	mmk__ck_registry_remove(r);
	mmk__ck_registry_quiesce();
	if (r->st)
		mmk__self_free((void *)r->st, r->npages);
	if (r->side)
		mmk__self_free(r->side, r->npages * MMK__PAGE);
	if (r->runs)
		mmk__self_free(r->runs, (r->npages / 2 + 1) * 2 * sizeof(uint64_t));
	if (r->recheck)
		mmk__self_free(r->recheck, r->npages * sizeof(uint32_t));
	if (r->idx)
		mmk__self_free(r->idx, r->npages * sizeof(uint32_t));
	if (r->crc)
		mmk__self_free(r->crc, r->npages * sizeof(uint32_t));
	mmk__self_release(r);
}

void mmk_ckpt_destroy(mmk_ckpt *c)
{
	if (!c)
		return;
	(void)mmk_ckpt_wait(c);
	pthread_mutex_lock(&c->lock);
	c->quit = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	if (c->thr_started)
		pthread_join(c->thr, NULL);
	for (size_t i = 0; i < c->nregions; i++)
		region_free(c, c->regions[i]);
	mmk__self_release(c->regions);
	if (c->uffd.fd >= 0)
		mmk__uffd_close(&c->uffd);
	mmk__self_free(c->buf, c->buflen);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cv);
	pthread_cond_destroy(&c->done_cv);
	mmk__self_release(c);
}

/* ---- regions -------------------------------------------------------------------- */

/* [a, b) mapped and writable; *file set if any part is a private file mapping */
static int check_mapped(uintptr_t a, uintptr_t b, bool *file)
{
	*file = false;
	while (a < b) {
		mmk__map m;
		int rc = mmk__maps_find(a, &m);
		if (rc < 0)
			return rc == -ENOENT ? -EINVAL : rc;
		if (m.start > a || !(m.prot & 2 /* PROT_WRITE */))
			return -EINVAL;
		if ((m.flags & MMK__MAP_FILE) && !(m.flags & MMK__MAP_SHARED))
			*file = true;
		a = m.end;
	}
	return 0;
}

static int track(mmk_ckpt *c, ck_region *r)
{
	if (c->uffd_err)
		return c->uffd_err;
	const char *force = getenv("MMK_CKPT_COPY"); /* diagnostics: copy mode only */
	if (force && *force && *force != '0')
		return MMK_ENOFEAT;
	const mmk_features *f = mmk_features_get();
	if (c->uffd.fd < 0) {
		if (!f->uffd || !f->uffd_wp || !f->uffd_sigbus) {
			c->uffd_err = MMK_ENOFEAT;
			return c->uffd_err;
		}
		uint64_t feats = UFFD_FEATURE_SIGBUS;
		if (f->uffd_wp_unpopulated)
			feats |= UFFD_FEATURE_WP_UNPOPULATED;
		int rc = mmk__uffd_open(&c->uffd, feats, 0);
		if (rc < 0) {
			c->uffd.fd = -1;
			c->uffd_err = rc;
			return rc;
		}
	}
	int rc = mmk__ck_install_handler();
	if (rc < 0)
		return rc;
	rc = mmk__uffd_register(&c->uffd, r->start, r->end - r->start, UFFDIO_REGISTER_MODE_WP);
	if (rc < 0)
		return rc; /* -EBUSY: another userfaultfd has it; -EINVAL: file */
	r->registered = true;
	if ((rc = mmk__ck_registry_add(r)) < 0)
		return rc;
	if (!f->uffd_wp_unpopulated) {
		/* make every page present so the protection covers it */
		for (uintptr_t a = r->start; a < r->end; a += MMK__PAGE)
			(void)*(volatile char *)a;
	}
	return mmk__uffd_wp(&c->uffd, r->start, r->end - r->start, true);
}

int mmk_ckpt_add(mmk_ckpt *c, const char *name, void *addr, size_t len)
{
	if (!c || !name || !*name || strlen(name) >= CK_NAME_MAX || !addr || !len)
		return -EINVAL;
	uintptr_t a = MMK__PAGE_DOWN(addr), b = MMK__PAGE_UP((uintptr_t)addr + len);
	if (b <= a || (b - a) / MMK__PAGE > UINT32_MAX)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	int rc = 0;
	if (c->job)
		rc = -EBUSY;
	for (size_t i = 0; !rc && i < c->nregions; i++) {
		if (!strcmp(c->regions[i]->name, name))
			rc = -EEXIST;
		else if (a < c->regions[i]->end && c->regions[i]->start < b)
			rc = -EBUSY;
	}
	if (!rc && c->nregions >= CK_MAX_REGIONS)
		rc = -ENOSPC;
	bool file = false;
	if (!rc)
		rc = check_mapped(a, b, &file);
	ck_region *r = NULL;
	if (!rc && !(r = mmk__self_calloc(1, sizeof *r)))
		rc = -ENOMEM;
	ck_region **v = NULL;
	if (!rc && !(v = mmk__self_realloc(c->regions, (c->nregions + 1) * sizeof *v)))
		rc = -ENOMEM;
	if (rc) {
		if (r)
			mmk__self_release(r);
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
	c->regions = v;
	strcpy(r->name, name);
	r->start = a;
	r->end = b;
	r->npages = (b - a) / MMK__PAGE;
	r->owner = c;
	r->st = mmk__self_alloc(r->npages);
	r->side = mmk__self_alloc(r->npages * MMK__PAGE);
	r->runs = mmk__self_alloc((r->npages / 2 + 1) * 2 * sizeof(uint64_t));
	r->recheck = mmk__self_alloc(r->npages * sizeof(uint32_t));
	if (!r->st || !r->side || !r->runs || !r->recheck) {
		region_free(c, r);
		pthread_mutex_unlock(&c->lock);
		return -ENOMEM;
	}
	if (file || track(c, r) < 0) {
		/* copy mode */
		if (r->registered) {
			(void)mmk__uffd_unregister(&c->uffd, r->start, r->end - r->start);
			r->registered = false;
		}
		mmk__ck_registry_remove(r);
		r->copy_mode = true;
	}
	c->regions[c->nregions++] = r;
	c->need_full = true;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* ---- start ----------------------------------------------------------------------- */

static void peak_add(mmk_ckpt *c, size_t n)
{
	size_t h = atomic_fetch_add(&c->held_now, n) + n;
	size_t p = atomic_load(&c->held_peak);
	while (h > p && !atomic_compare_exchange_weak(&c->held_peak, &p, h))
		;
}

/* The instant, for region r: pages still protected (CLEAN for a full
 * image, DIRTY_P) become PENDING; pages dirtied since the last sweep pass
 * (DIRTY, unprotected) are copied aside now and become COPIED - a memcpy
 * (~0.3-1 us) instead of a re-protect ioctl (~1-20 us with the TLB
 * shoot-down), and the next sweep re-protects them.  Returns the number of
 * pages copied. */
static long prepare(mmk_ckpt *c, ck_region *r, bool full)
{
	if (r->copy_mode) {
		mmk__copy(r->side, (const void *)r->start, r->end - r->start);
		memset((void *)r->st, CK_COPIED, r->npages);
		peak_add(c, r->npages);
		atomic_fetch_add(&c->copied, r->npages);
		return (long)r->npages;
	}
	uint8_t *st = (uint8_t *)r->st; /* threads writing the region are quiesced */
	size_t ncopy = 0;
	size_t nw = r->npages / 8;
	const uint64_t pend8 = 0x0202020202020202ull;
	for (size_t w = 0; w <= nw; w++) {
		size_t i0 = w * 8, i1 = i0 + 8 < r->npages ? i0 + 8 : r->npages;
		if (i0 >= i1)
			break;
		if (i1 - i0 == 8) {
			uint64_t v;
			memcpy(&v, st + i0, 8);
			/* every byte CLEAN (0) or DIRTY_P (6): protected already */
			if ((v & 0xf9f9f9f9f9f9f9f9ull) == 0) {
				if (full) {
					memcpy(st + i0, &pend8, 8);
				} else if (v) {
					/* DIRTY_P (6) -> PENDING (2), CLEAN stays */
					v &= 0xfbfbfbfbfbfbfbfbull;
					memcpy(st + i0, &v, 8);
				}
				continue;
			}
		}
		for (size_t i = i0; i < i1; i++) {
			if (st[i] == CK_DIRTY) {
				mmk__copy(r->side + i * MMK__PAGE, (const void *)(r->start + i * MMK__PAGE),
					  MMK__PAGE);
				st[i] = CK_ICOPIED;
				ncopy++;
			} else if (st[i] == CK_DIRTY_P || (full && st[i] == CK_CLEAN)) {
				st[i] = CK_PENDING; /* protected already */
			}
		}
	}
	if (ncopy) {
		peak_add(c, ncopy);
		atomic_fetch_add(&c->copied, ncopy);
	}
	atomic_thread_fence(memory_order_seq_cst);
	return (long)ncopy;
}

/* ---- sweeping: re-protect dirty pages while the program runs -------------------- */

#define CK_SWEEP_WIN 256 /* pages per locked window: bounds how long a start waits */

static bool window_has_dirty(ck_region *r, size_t w0, size_t w1)
{
	for (size_t i = w0; i < w1; i++)
		if (atomic_load_explicit(&r->st[i], memory_order_relaxed) == CK_DIRTY)
			return true;
	return false;
}

/* one pass over r: DIRTY -> DIRTY_P + re-protect, window by window under
 * the lock, never during a checkpoint.  Returns pages re-protected. */
static long sweep_region(mmk_ckpt *c, ck_region *r)
{
	long total = 0;
	if (r->copy_mode)
		return 0;
	for (size_t w0 = 0; w0 < r->npages; w0 += CK_SWEEP_WIN) {
		size_t w1 = w0 + CK_SWEEP_WIN < r->npages ? w0 + CK_SWEEP_WIN : r->npages;
		if (!window_has_dirty(r, w0, w1))
			continue;
		pthread_mutex_lock(&c->lock);
		if (c->job || c->quit) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		uint64_t *runs = r->runs;
		size_t nr = 0, lo = SIZE_MAX, hi = 0;
		for (size_t i = w0; i < w1; i++) {
			uint8_t v = CK_DIRTY;
			if (!atomic_compare_exchange_strong(&r->st[i], &v, CK_DIRTY_P))
				continue;
			if (nr && runs[2 * (nr - 1)] + runs[2 * (nr - 1) + 1] == i) {
				runs[2 * (nr - 1) + 1]++;
			} else {
				runs[2 * nr] = i;
				runs[2 * nr + 1] = 1;
				nr++;
			}
			if (i < lo)
				lo = i;
			hi = i;
			total++;
		}
		int rc = 0;
		if (nr > 1 && nr * 10 > hi - lo + 1) {
			rc = mmk__uffd_wp(&c->uffd, r->start + lo * MMK__PAGE, (hi - lo + 1) * MMK__PAGE, true);
		} else {
			for (size_t k = 0; k < nr && !rc; k++)
				rc = mmk__uffd_wp(&c->uffd, r->start + runs[2 * k] * MMK__PAGE,
						  runs[2 * k + 1] * MMK__PAGE, true);
		}
		if (rc < 0) {
			/* not known to be protected: back to DIRTY (no fault can
			 * be in flight on an unprotected page) */
			for (size_t k = 0; k < nr; k++)
				for (size_t j = 0; j < runs[2 * k + 1]; j++) {
					uint8_t v = CK_DIRTY_P;
					atomic_compare_exchange_strong(&r->st[runs[2 * k] + j], &v, CK_DIRTY);
				}
			pthread_mutex_unlock(&c->lock);
			return rc;
		}
		pthread_mutex_unlock(&c->lock);
	}
	return total;
}

static long sweep_all(mmk_ckpt *c)
{
	long total = 0;
	for (size_t i = 0;; i++) {
		pthread_mutex_lock(&c->lock);
		ck_region *r = i < c->nregions ? c->regions[i] : NULL;
		pthread_mutex_unlock(&c->lock);
		if (!r)
			break;
		long n = sweep_region(c, r);
		if (n < 0)
			return n;
		total += n;
	}
	return total;
}

int mmk_ckpt_prepare(mmk_ckpt *c)
{
	if (!c)
		return -EINVAL;
	/* like pre-copy in live migration: each pass re-protects what the
	 * program dirtied during the previous one, until little is left */
	long total = 0;
	for (int pass = 0; pass < 8; pass++) {
		long n = sweep_all(c);
		if (n < 0)
			return (int)n;
		total += n;
		if (n < 16)
			break;
	}
	return total > INT32_MAX ? INT32_MAX : (int)total;
}

static int start_locked(mmk_ckpt *c, unsigned flags)
{
	if (c->job)
		return -EBUSY;
	if (!c->nregions)
		return -EINVAL;
	for (size_t i = 0; i < c->nregions; i++)
		if (!c->regions[i]->copy_mode) {
			int rc = mmk__ck_install_handler();
			if (rc < 0)
				return rc;
			break;
		}
	if (c->next_gen > INT32_MAX)
		return -EOVERFLOW;
	double t0 = mmk__ck_mono();
	bool full = (flags & MMK_CKPT_FULL) || c->need_full || !c->last_done_gen ||
		    c->chain_len + 1 > c->opts.max_chain;
	atomic_store(&c->held_peak, 0);
	atomic_store(&c->copied, 0);
	long copied = 0;
	int rc = 0;
	if (c->protect_all) {
		/* pages once meant to be protected may not be: protect all */
		for (size_t i = 0; i < c->nregions && !rc; i++)
			if (!c->regions[i]->copy_mode)
				rc = mmk__uffd_wp(&c->uffd, c->regions[i]->start,
						  c->regions[i]->end - c->regions[i]->start, true);
		if (rc)
			return rc;
		c->protect_all = false;
	}
	for (size_t i = 0; i < c->nregions; i++)
		copied += prepare(c, c->regions[i], full);
	c->job = true;
	c->job_full = full;
	c->job_gen = c->next_gen++;
	c->job_parent = full ? 0 : c->last_done_gen;
	c->job_t0 = t0;
	c->stats.generation = c->job_gen;
	c->stats.last_instant_copies = (size_t)copied;
	c->stats.last_start_us = (mmk__ck_mono() - t0) * 1e6;
	c->last_result = rc;
	pthread_cond_broadcast(&c->cv);
	return (int)c->job_gen;
}

/* with a quiesce hook: sweep first (program running), then the instant */
static int start_quiesced(mmk_ckpt *c, unsigned flags)
{
	double t0 = mmk__ck_mono();
	int rc = mmk_ckpt_prepare(c);
	double t1 = mmk__ck_mono();
	if (rc < 0)
		return rc;
	c->opts.quiesce(c->opts.quiesce_arg, 1);
	pthread_mutex_lock(&c->lock);
	rc = start_locked(c, flags);
	if (rc > 0)
		c->stats.last_prepare_us = (t1 - t0) * 1e6;
	pthread_mutex_unlock(&c->lock);
	c->opts.quiesce(c->opts.quiesce_arg, 0);
	return rc;
}

int mmk_ckpt_start(mmk_ckpt *c, unsigned flags)
{
	if (!c || (flags & ~(unsigned)(MMK_CKPT_FULL | MMK_CKPT_WAIT)))
		return -EINVAL;
	int rc;
	if (c->opts.quiesce) {
		rc = start_quiesced(c, flags);
	} else {
		pthread_mutex_lock(&c->lock);
		rc = start_locked(c, flags);
		if (rc > 0)
			c->stats.last_prepare_us = 0;
		pthread_mutex_unlock(&c->lock);
	}
	if (rc > 0 && (flags & MMK_CKPT_WAIT)) {
		int w = mmk_ckpt_wait(c);
		if (w < 0)
			return w;
	}
	return rc;
}

int mmk_ckpt_wait(mmk_ckpt *c)
{
	if (!c)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	while (c->job)
		pthread_cond_wait(&c->done_cv, &c->lock);
	int rc = c->last_result;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int mmk_ckpt_prewrite(mmk_ckpt *c, void *addr, size_t len)
{
	if (!c || !len)
		return -EINVAL;
	uintptr_t a = MMK__PAGE_DOWN(addr), b = MMK__PAGE_UP((uintptr_t)addr + len);
	/* regions are only added by the handle's thread, which is calling us */
	int rc = 0;
	for (uintptr_t p = a; p < b && !rc; p += MMK__PAGE) {
		ck_region *r = NULL;
		for (size_t i = 0; i < c->nregions && !r; i++)
			if (p >= c->regions[i]->start && p < c->regions[i]->end)
				r = c->regions[i];
		if (!r)
			rc = -EINVAL;
		else if (!r->copy_mode)
			rc = mmk__ck_handle(r, p);
	}
	return rc;
}

int mmk_ckpt_busy(mmk_ckpt *c)
{
	if (!c)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	int b = c->job;
	pthread_mutex_unlock(&c->lock);
	return b;
}

int mmk_ckpt_stats_get(mmk_ckpt *c, mmk_ckpt_stats *st)
{
	if (!c || !st)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	*st = c->stats;
	st->regions = c->nregions;
	st->regions_copy_mode = 0;
	st->pages_tracked = 0;
	for (size_t i = 0; i < c->nregions; i++) {
		st->regions_copy_mode += c->regions[i]->copy_mode;
		st->pages_tracked += c->regions[i]->npages;
	}
	st->faults = atomic_load(&c->faults);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* ---- the writer ------------------------------------------------------------------- */

/* Take page i out of the running checkpoint; its checkpoint-instant image
 * goes to dst (NULL: the checkpoint is abandoned, the page becomes dirty).
 * Returns 0 (read from the page), 1 (from the side store: release it) or
 * 2 (from the side store, copied at the instant: keep it for the recheck). */
static int take(ck_region *r, size_t i, char *dst)
{
	_Atomic uint8_t *s = &r->st[i];
	unsigned k = 0;
	for (;;) {
		uint8_t v = atomic_load_explicit(s, memory_order_acquire);
		switch (v) {
		case CK_PENDING:
			if (!dst) { /* still protected: dirty, protected */
				if (atomic_compare_exchange_weak(s, &v, CK_DIRTY_P))
					return 0;
				continue;
			}
			if (!atomic_compare_exchange_weak(s, &v, CK_WRITING))
				continue;
			mmk__copy(dst, (const void *)(r->start + i * MMK__PAGE), MMK__PAGE);
			atomic_store_explicit(s, CK_CLEAN, memory_order_release);
			return 0;
		case CK_COPYING:
			if (++k < 64)
				CK_CPU_RELAX();
			else
				sched_yield();
			continue;
		case CK_COPIED:
		case CK_ICOPIED:
			if (dst)
				memcpy(dst, r->side + i * MMK__PAGE, MMK__PAGE);
			atomic_store_explicit(s, CK_DIRTY, memory_order_release);
			return v == CK_ICOPIED && dst && !r->copy_mode ? 2 : 1;
		default:
			return 0; /* not in the checkpoint (cannot happen) */
		}
	}
}

static bool in_ckpt(uint8_t v)
{
	return v == CK_PENDING || v == CK_COPYING || v == CK_COPIED || v == CK_WRITING || v == CK_ICOPIED;
}

/* side-store pages to give back, merged into runs */
typedef struct side_runs {
	size_t lo, n, count;
} side_runs;

static void side_flush(mmk_ckpt *c, ck_region *r, side_runs *sr)
{
	if (sr->n) {
		(void)madvise(r->side + sr->lo * MMK__PAGE, sr->n * MMK__PAGE, MADV_DONTNEED);
		atomic_fetch_sub(&c->held_now, sr->n);
	}
	sr->n = 0;
}

static void side_release(mmk_ckpt *c, ck_region *r, side_runs *sr, size_t i)
{
	if (sr->n && i == sr->lo + sr->n) {
		sr->n++;
		return;
	}
	side_flush(c, r, sr);
	sr->lo = i;
	sr->n = 1;
}

/* After the image: pages copied at the instant that the program has not
 * written since are CLEAN again (re-protected, compared with their copy),
 * so the next delta does not hold them.  If the image failed (!ok) they
 * are only re-protected and stay dirty (DIRTY_P): their content is in no
 * image. */
static void recheck(mmk_ckpt *c, ck_region *r, bool ok)
{
	side_runs sr = { 0 };
	size_t k = 0;
	while (k < r->nrecheck) {
		/* claim a run of consecutive pages, protect it, compare */
		size_t j = k;
		while (j < r->nrecheck && (j == k || r->recheck[j] == r->recheck[j - 1] + 1) && j - k < 512)
			j++;
		size_t lo = r->recheck[k], n = j - k;
		bool claimed[512];
		for (size_t t = 0; t < n; t++) {
			uint8_t v = CK_DIRTY;
			claimed[t] = atomic_compare_exchange_strong(&r->st[lo + t], &v, CK_DIRTY_P);
		}
		int rc = mmk__uffd_wp(&c->uffd, r->start + lo * MMK__PAGE, n * MMK__PAGE, true);
		for (size_t t = 0; t < n; t++) {
			size_t i = lo + t;
			if (claimed[t]) {
				uint8_t v = CK_DIRTY_P;
				if (rc < 0)
					atomic_compare_exchange_strong(&r->st[i], &v, CK_DIRTY);
				else if (ok && !mmk__cmp((const void *)(r->start + i * MMK__PAGE), r->side + i * MMK__PAGE,
						   MMK__PAGE))
					atomic_compare_exchange_strong(&r->st[i], &v, CK_CLEAN);
			}
			side_release(c, r, &sr, i);
		}
		k = j;
	}
	side_flush(c, r, &sr);
	r->nrecheck = 0;
}

/* stream the pages of region r from data offset off; err: abandon mode */
static int write_region(mmk_ckpt *c, ck_region *r, int fd, uint64_t off, int err, uint64_t *kicked)
{
	size_t fill = 0;
	side_runs sr = { 0 };
	uint64_t boff = off;
	for (size_t k = 0; k < r->n; k++) {
		size_t i = r->dense ? k : r->idx[k];
		char *dst = err ? NULL : c->buf + fill;
		int from = take(r, i, dst);
		if (from == 1)
			side_release(c, r, &sr, i);
		else if (from == 2)
			r->recheck[r->nrecheck++] = (uint32_t)i;
		if (!err) {
			r->crc[k] = mmk__ck_crc32c(0, dst, MMK__PAGE);
			fill += MMK__PAGE;
		}
		if (fill == c->buflen || (k + 1 == r->n && fill)) {
			double tw = mmk__ck_mono();
			if (!err)
				err = mmk__ck_pwrite(fd, c->buf, fill, boff);
			boff += fill;
			fill = 0;
			side_flush(c, r, &sr);
			if (!err && boff - *kicked >= CK_KICK) {
				/* start writeback now: the disk works while we copy */
				(void)sync_file_range(fd, (off_t)*kicked, (off_t)(boff - *kicked),
						      SYNC_FILE_RANGE_WRITE);
				*kicked = boff;
			}
			c->ph_io.write += mmk__ck_mono() - tw;
		}
	}
	side_flush(c, r, &sr);
	return err;
}

static int write_image(mmk_ckpt *c)
{
	bool full = c->job_full;
	uint64_t gen = c->job_gen;
	char tmp[PATH_MAX + 64], final[PATH_MAX + 64];
	mmk__ck_name(tmp, sizeof tmp, c->dir, gen, true);
	mmk__ck_name(final, sizeof final, c->dir, gen, false);
	int err = c->last_result;
	double t0 = mmk__ck_mono();
	memset(&c->ph_io, 0, sizeof c->ph_io);
	/* pass 1: which pages (the handler only moves pages within the set) */
	uint64_t npages = 0;
	for (size_t ri = 0; ri < c->nregions; ri++) {
		ck_region *r = c->regions[ri];
		r->dense = full || r->copy_mode;
		if (!r->crc && !(r->crc = mmk__self_alloc(r->npages * sizeof(uint32_t))))
			err = err ? err : -ENOMEM;
		if (r->dense) {
			r->n = r->npages;
		} else {
			if (!r->idx && !(r->idx = mmk__self_alloc(r->npages * sizeof(uint32_t))))
				err = err ? err : -ENOMEM;
			size_t n = 0;
			for (size_t i = 0; i < r->npages; i++)
				if (in_ckpt(atomic_load_explicit(&r->st[i], memory_order_relaxed))) {
					if (r->idx)
						r->idx[n] = (uint32_t)i;
					n++;
				}
			r->n = r->idx ? n : 0;
			if (!r->idx) /* abandon the pages without an index */
				for (size_t i = 0; i < r->npages; i++)
					if (in_ckpt(atomic_load(&r->st[i])))
						take(r, i, NULL);
		}
		npages += r->n;
	}
	double t1 = mmk__ck_mono();
	c->ph_scan = t1 - t0;
	ck_rent *rt = calloc(c->nregions, sizeof *rt);
	ck_hdr h;
	memset(&h, 0, sizeof h);
	memcpy(h.magic, CK_MAGIC, 8);
	h.version = CK_VERSION;
	h.hdr_size = (uint32_t)MMK__PAGE_UP(sizeof h + c->nregions * sizeof(ck_rent));
	h.generation = gen;
	h.parent = c->job_parent;
	h.created_ns = mmk__ck_now_ns();
	h.nregions = (uint32_t)c->nregions;
	h.page_size = MMK__PAGE;
	h.npages = npages;
	h.meta_off = h.hdr_size;
	uint64_t m = 0, d = 0;
	for (size_t ri = 0; ri < c->nregions; ri++) {
		ck_region *r = c->regions[ri];
		if (!rt)
			break;
		strcpy(rt[ri].name, r->name);
		rt[ri].addr = r->start;
		rt[ri].len = r->end - r->start;
		rt[ri].npages = r->n;
		rt[ri].flags = r->dense ? CK_RENT_DENSE : 0;
		if (!r->dense) {
			rt[ri].idx_off = h.meta_off + m;
			m += 4 * r->n;
		}
		rt[ri].crc_off = h.meta_off + m;
		m += 4 * r->n;
		rt[ri].data_off = d; /* relative for now */
		d += r->n * MMK__PAGE;
	}
	h.meta_len = m;
	h.data_off = MMK__PAGE_UP(h.meta_off + m);
	h.file_len = h.data_off + d + sizeof(ck_trailer);
	char *meta = malloc(m ? m : 1);
	if ((!rt || !meta) && !err)
		err = -ENOMEM;
	int fd = -1;
	if (!err) {
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			err = -errno;
	}
	if (!err && fallocate(fd, 0, 0, (off_t)h.file_len) < 0 && errno != EOPNOTSUPP)
		err = -errno; /* ENOSPC up front, before touching anything */
	double t2 = mmk__ck_mono();
	c->ph_io.write += t2 - t1;
	/* pass 2: the pages, in order, in large sequential writes */
	uint64_t kicked = h.data_off;
	for (size_t ri = 0; ri < c->nregions; ri++) {
		ck_region *r = c->regions[ri];
		if (rt)
			rt[ri].data_off += h.data_off;
		err = write_region(c, r, fd, h.data_off + (rt ? rt[ri].data_off - h.data_off : 0), err,
				   &kicked);
	}
	if (!err) {
		for (size_t ri = 0; ri < c->nregions; ri++) {
			ck_region *r = c->regions[ri];
			if (!r->dense)
				memcpy(meta + (rt[ri].idx_off - h.meta_off), r->idx, 4 * r->n);
			memcpy(meta + (rt[ri].crc_off - h.meta_off), r->crc, 4 * r->n);
		}
		c->ph_copy = mmk__ck_mono() - t2 - c->ph_io.write + (t2 - t1);
		err = mmk__ck_finish(fd, &h, rt, meta, tmp, final, c->dir, &c->ph_io);
	} else {
		c->ph_copy = mmk__ck_mono() - t2 - c->ph_io.write + (t2 - t1);
	}
	if (fd >= 0)
		close(fd);
	if (err)
		(void)unlink(tmp);
	double t3 = mmk__ck_mono();
	if (err) {
		/* the pages taken for the abandoned image (CLEAN, still
		 * protected unless written since) are dirty again, so the next
		 * delta holds them; a failed full image makes the next full */
		for (size_t ri = 0; ri < c->nregions; ri++) {
			ck_region *r = c->regions[ri];
			if (r->dense || !r->idx)
				continue;
			for (size_t k = 0; k < r->n; k++) {
				uint8_t v = CK_CLEAN;
				atomic_compare_exchange_strong(&r->st[r->idx[k]], &v, CK_DIRTY_P);
			}
		}
	}
	for (size_t ri = 0; ri < c->nregions; ri++)
		recheck(c, c->regions[ri], !err);
	c->ph_recheck = mmk__ck_mono() - t3;
	/* give back index and checksum memory */
	for (size_t ri = 0; ri < c->nregions; ri++) {
		ck_region *r = c->regions[ri];
		if (r->idx)
			(void)madvise(r->idx, MMK__PAGE_UP(r->npages * 4), MADV_DONTNEED);
		if (r->crc)
			(void)madvise(r->crc, MMK__PAGE_UP(r->npages * 4), MADV_DONTNEED);
	}
	c->stats.last_pages = npages;
	c->stats.last_bytes = err ? 0 : h.file_len;
	free(meta);
	free(rt);
	return err;
}

/* ---- pruning: keep the newest `keep` generations restorable ---------------------- */

static void prune(mmk_ckpt *c)
{
	uint64_t *g;
	size_t ng;
	if (!c->opts.keep || mmk__ck_list(c->dir, &g, &ng) < 0)
		return;
	if (ng <= c->opts.keep) {
		free(g);
		return;
	}
	bool *need = calloc(ng, 1);
	if (!need) {
		free(g);
		return;
	}
	for (size_t k = ng - c->opts.keep; k < ng; k++) {
		need[k] = true;
		/* follow the chain through headers */
		char p[PATH_MAX + 64];
		mmk__ck_name(p, sizeof p, c->dir, g[k], false);
		ck_img im;
		if (mmk__ck_img_open(&im, p) < 0)
			continue;
		uint64_t par = im.h.parent;
		mmk__ck_img_close(&im);
		while (par) {
			size_t j = 0;
			while (j < ng && g[j] != par)
				j++;
			if (j == ng)
				break;
			need[j] = true;
			mmk__ck_name(p, sizeof p, c->dir, par, false);
			if (mmk__ck_img_open(&im, p) < 0)
				break;
			par = im.h.parent;
			mmk__ck_img_close(&im);
		}
	}
	bool gone = false;
	for (size_t k = 0; k < ng; k++)
		if (!need[k] && g[k] < c->last_done_gen) {
			char p[PATH_MAX + 64];
			mmk__ck_name(p, sizeof p, c->dir, g[k], false);
			gone |= unlink(p) == 0;
		}
	if (gone) /* only then: a directory sync is a journal commit */
		(void)mmk__ck_fsync_dir(c->dir);
	free(need);
	free(g);
}

/* ---- the worker thread: writes checkpoints, runs the periodic timer -------------- */

static void job_done(mmk_ckpt *c, int rc)
{
	c->job = false;
	c->last_result = rc;
	c->stats.last_write_s = mmk__ck_mono() - c->job_t0;
	c->stats.last_copied = atomic_load(&c->copied);
	c->stats.last_peak_held = atomic_load(&c->held_peak);
	if (rc == 0) {
		c->stats.last_phase.scan_us = c->ph_scan * 1e6;
		c->stats.last_phase.copy_us = c->ph_copy * 1e6;
		c->stats.last_phase.write_us = c->ph_io.write * 1e6;
		c->stats.last_phase.sync_us = c->ph_io.sync * 1e6;
		c->stats.last_phase.publish_us = c->ph_io.publish * 1e6;
		c->stats.last_phase.recheck_us = c->ph_recheck * 1e6;
		c->stats.completed++;
		c->stats.last_full = c->job_full;
		c->last_done_gen = c->job_gen;
		c->chain_len = c->job_full ? 0 : c->chain_len + 1;
		if (c->job_full)
			c->need_full = false;
	} else {
		c->stats.failed++;
		if (c->job_full)
			c->need_full = true;
	}
}

static void abs_ts(struct timespec *ts, double t)
{
	ts->tv_sec = (time_t)t;
	ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

static void *worker(void *arg)
{
	mmk_ckpt *c = arg;
	double next_due = 0, next_sweep = 0;
	pthread_mutex_lock(&c->lock);
	while (!c->quit) {
		if (c->job) {
			pthread_mutex_unlock(&c->lock);
			int rc = write_image(c); /* the handle's fields it reads are
						    stable while c->job is set */
			pthread_mutex_lock(&c->lock);
			job_done(c, rc);
			if (rc == 0 && c->opts.keep) {
				pthread_mutex_unlock(&c->lock);
				prune(c);
				pthread_mutex_lock(&c->lock);
			}
			pthread_cond_broadcast(&c->done_cv);
			continue;
		}
		double now = mmk__ck_mono();
		if (!c->period_ms)
			next_due = 0;
		else if (!next_due)
			next_due = now + c->period_ms / 1000.0;
		if (next_due && now >= next_due) {
			next_due = now + c->period_ms / 1000.0;
			if (c->period_flags & MMK_CKPT_SAFEPOINT) {
				atomic_store(&c->due, true);
			} else {
				c->timer_starting = true;
				pthread_mutex_unlock(&c->lock);
				if (c->opts.quiesce) {
					(void)start_quiesced(c, 0);
				} else {
					pthread_mutex_lock(&c->lock);
					(void)start_locked(c, 0);
					pthread_mutex_unlock(&c->lock);
				}
				pthread_mutex_lock(&c->lock);
				c->timer_starting = false;
				pthread_cond_broadcast(&c->done_cv);
			}
			continue;
		}
		if (c->opts.sweep_ms && now >= next_sweep) {
			/* background sweep: keeps the dirty set, hence the next
			 * instant, small */
			pthread_mutex_unlock(&c->lock);
			(void)sweep_all(c);
			pthread_mutex_lock(&c->lock);
			next_sweep = mmk__ck_mono() + c->opts.sweep_ms / 1000.0;
			continue;
		}
		double until = next_due;
		if (c->opts.sweep_ms && (!until || next_sweep < until))
			until = next_sweep;
		if (!until) {
			pthread_cond_wait(&c->cv, &c->lock);
		} else {
			struct timespec ts;
			abs_ts(&ts, until);
			pthread_cond_timedwait(&c->cv, &c->lock, &ts);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int mmk_ckpt_periodic(mmk_ckpt *c, unsigned interval_ms, unsigned flags)
{
	if (!c || (flags & ~(unsigned)MMK_CKPT_SAFEPOINT))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	c->period_ms = interval_ms;
	c->period_flags = flags;
	atomic_store(&c->due, false);
	pthread_cond_broadcast(&c->cv);
	/* a start the timer already began completes before we return: after
	 * mmk_ckpt_periodic(c, 0, 0) + mmk_ckpt_wait() nothing is running */
	while (c->timer_starting)
		pthread_cond_wait(&c->done_cv, &c->lock);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int mmk_ckpt_poll(mmk_ckpt *c)
{
	if (!c)
		return -EINVAL;
	if (!atomic_load_explicit(&c->due, memory_order_relaxed))
		return 0;
	pthread_mutex_lock(&c->lock);
	int rc = 0;
	if (atomic_exchange(&c->due, false) && !c->job)
		rc = start_locked(c, 0);
	pthread_mutex_unlock(&c->lock);
	return rc;
}
