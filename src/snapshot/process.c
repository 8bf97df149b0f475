/*
 * snapshot/process.c - process scope: which mappings a whole-process
 * snapshot tracks, and noticing changes to the address space.
 *
 * Invariants: after mmk__proc_check() returns 0 for a save, the regions
 * cover exactly the candidate mappings (private, writable, readable, not a
 * stack, not special, not mmkit's, not a giant reservation, not excluded,
 * not tracked by another object); for a restore to level t, the address
 * space holds exactly the tracked mappings of image(L_t): the program break
 * is back at its value at L_t, private writable memory that appeared since is
 * unmapped, and tracked memory that vanished is re-created from a full copy.
 * All checks are done before any memory is changed, so a restore that cannot
 * be completed (a vanished lazy region) fails with -EFAULT and changes
 * nothing.  The fingerprint (program break + /proc/self/statm size and data)
 * decides when the address space must be re-read at all.
 */
#include "snapshot/snap.h"

#include <sys/syscall.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- fingerprint ------------------------------------------------------------------ */

static int read_statm(mmk_snap *s, unsigned long v[2])
{
	if (s->statm_fd < 0) {
		s->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
		if (s->statm_fd < 0)
			return -errno;
	}
	char buf[128];
	/* the raw system call: glibc's pread() is a cancellation point and
	 * writes the thread's TCB, which process scope tracks — one spurious
	 * dirty page (a fault, a copy, an ioctl) per call otherwise */
	ssize_t n = syscall(SYS_pread64, s->statm_fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	buf[n] = 0;
	/* seven decimal fields; parsed by hand (sscanf costs more than the
	 * system call) */
	unsigned long f[6] = { 0 };
	const char *p = buf;
	for (int i = 0; i < 6; i++) {
		while (*p == ' ')
			p++;
		if (*p < '0' || *p > '9')
			return -EIO;
		while (*p >= '0' && *p <= '9')
			f[i] = f[i] * 10 + (unsigned long)(*p++ - '0');
	}
	/* total virtual size and data + stack, less mmkit's own mappings
	 * (the engine maps and unmaps shadows and page stores itself) */
	size_t self = mmk__self_pages();
	v[0] = f[0] - self;
	v[1] = f[5] - self;
	return 0;
}

static int fingerprint(mmk_snap *s, bool *changed)
{
	uintptr_t brk = (uintptr_t)sbrk(0);
	unsigned long v[2] = { 0, 0 };
	int rc = read_statm(s, v);
	if (rc < 0)
		return rc;
	*changed = (s->opts.flags & MMK_SNAP_PARANOID) || brk != s->last_brk ||
		   v[0] != s->last_statm[0] || v[1] != s->last_statm[1];
	s->last_brk = brk;
	s->last_statm[0] = v[0];
	s->last_statm[1] = v[1];
	return 0;
}

/* ---- other threads' stacks ----------------------------------------------------------- */

/* Stack pointers of the other threads that are blocked in a system call
 * (/proc/self/task/TID/syscall ends with "sp pc").  A running thread has no
 * readable SP; such threads must be quiesced by the caller anyway. */
static size_t thread_sps(uintptr_t *sp, size_t max)
{
	/* getdents64 on a stack buffer: no malloc here, because a restore
	 * calls this after putting the program break back, when malloc's
	 * state may describe a heap that is not mapped any more. */
	int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	pid_t me = gettid();
	size_t n = 0;
	char dbuf[4096];
	long got;
	while (n < max && (got = syscall(SYS_getdents64, fd, dbuf, sizeof dbuf)) > 0) {
	    for (long off = 0; off < got && n < max;) {
		struct linux_dirent64 {
			uint64_t d_ino;
			int64_t d_off;
			unsigned short d_reclen;
			unsigned char d_type;
			char d_name[];
		} *e = (void *)(dbuf + off);
		off += e->d_reclen;
		pid_t tid = atoi(e->d_name);
		if (tid <= 0 || tid == me)
			continue;
		char path[64], buf[256];
		snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
		if (mmk__read_file(path, buf, sizeof buf) <= 0)
			continue;
		/* "nr a1 a2 a3 a4 a5 a6 sp pc": the second-to-last field */
		char *last = strrchr(buf, ' ');
		if (!last)
			continue;
		*last = 0;
		char *prev = strrchr(buf, ' ');
		if (prev)
			sp[n++] = (uintptr_t)strtoull(prev + 1, NULL, 16);
	    }
	}
	close(fd);
	return n;
}

/* ---- candidates ---------------------------------------------------------------------------- */

static bool own_region(const mmk_snap *s, uintptr_t a, uintptr_t b)
{
	for (size_t i = 0; i < s->nregions; i++)
		if (a < s->regions[i]->end && b > s->regions[i]->start)
			return true;
	return false;
}

struct pieces {
	mmk_snap *s;
	mmk__map m;
	mmk__maplist out;
	int err;
};

static int keep_piece(uintptr_t a, uintptr_t b, void *arg);

/* [a, b) less the excluded ranges, piece by piece (page-granular: the rest
 * of a mapping that is partly excluded stays tracked) */
static int without_excluded(mmk_snap *s, uintptr_t a, uintptr_t b, void *arg)
{
	while (a < b) {
		/* the excluded range that starts first among those ending after a */
		uintptr_t es = b, ee = b;
		for (size_t i = 0; i < s->nexcl; i++)
			if (s->excl[i].end > a && s->excl[i].start < b && s->excl[i].start < es) {
				es = s->excl[i].start;
				ee = s->excl[i].end;
			}
		if (es > a) {
			int rc = keep_piece(a, es, arg);
			if (rc)
				return rc;
		}
		if (es >= b)
			break;
		a = ee > a ? ee : a + MMK__PAGE;
	}
	return 0;
}

static int self_piece(uintptr_t a, uintptr_t b, void *arg)
{
	struct pieces *p = arg;
	return without_excluded(p->s, a, b, arg);
}

/* keep a piece unless another object tracks it */
static int keep_piece(uintptr_t a, uintptr_t b, void *arg)
{
	struct pieces *p = arg;
	mmk_snap *s = p->s;
	if (!own_region(s, a, b) && mmk__snap_overlaps(a, b))
		return 0; /* tracked by another object: leave it to that one */
	mmk__map piece = p->m;
	piece.start = a;
	piece.end = b;
	mmk__maplist *o = &p->out;
	if (o->n == o->cap) {
		size_t ncap = o->cap ? o->cap * 2 : 64;
		mmk__map *nv = mmk__self_realloc(o->v, ncap * sizeof *nv);
		if (!nv) {
			p->err = -ENOMEM;
			return 1;
		}
		o->v = nv;
		o->cap = ncap;
	}
	o->v[o->n++] = piece;
	return 0;
}

static int read_candidates(mmk_snap *s)
{
	int rc = mmk__maps_read(&s->maps, MMK__MAPS_AUTO);
	if (rc < 0)
		return rc;
	uintptr_t sps[64];
	size_t nsp = thread_sps(sps, 64);
	struct pieces p = { .s = s, .out = s->cand };
	p.out.n = 0;
	for (size_t i = 0; i < s->maps.n && !p.err; i++) {
		mmk__map *m = &s->maps.v[i];
		for (size_t j = 0; j < nsp; j++)
			if (sps[j] >= m->start && sps[j] < m->end)
				m->flags |= MMK__MAP_STACK;
		if (!mmk__map_is_snapshot_candidate(m) || !(m->prot & PROT_READ))
			continue;
		p.m = *m;
		/* the kernel may have merged mmkit's memory into a neighbour;
		 * exclusions cut pages out of a mapping */
		mmk__self_subtract(m->start, m->end, self_piece, &p);
	}
	s->cand = p.out;
	s->rescans++;
	return p.err;
}

/* Is [a, b) entirely covered by candidate mappings? */
static bool covered(const mmk__maplist *ml, uintptr_t a, uintptr_t b)
{
	for (size_t i = 0; i < ml->n && a < b; i++) {
		if (ml->v[i].end <= a)
			continue;
		if (ml->v[i].start > a)
			return false;
		a = ml->v[i].end;
	}
	return a >= b;
}

/* Parts of the candidate mappings not covered by live regions (nor, with
 * gone_covers, by vanished ones about to be re-created): fn(a, b). */
static int for_each_uncovered(mmk_snap *s, bool gone_covers,
			      int (*fn)(mmk_snap *, const mmk__map *, uintptr_t, uintptr_t))
{
	for (size_t i = 0; i < s->cand.n; i++) {
		const mmk__map *m = &s->cand.v[i];
		uintptr_t a = m->start;
		while (a < m->end) {
			/* the live region covering a, or the nearest one above */
			uintptr_t next = m->end;
			bool in = false;
			for (size_t j = 0; j < s->nregions; j++) {
				const mmk__region *r = s->regions[j];
				if (r->gone && !gone_covers)
					continue;
				if (a >= r->start && a < r->end) {
					in = true;
					a = r->end;
					break;
				}
				if (r->start > a && r->start < next)
					next = r->start;
			}
			if (in)
				continue;
			int rc = fn(s, m, a, next);
			if (rc < 0)
				return rc;
			a = next;
		}
	}
	return 0;
}

static int attach_new(mmk_snap *s, const mmk__map *m, uintptr_t a, uintptr_t b)
{
	int rc = mmk__snap_add_region(s, a, b, m->flags, m->prot, true);
	/* A mapping no backend can take (e.g. lazy forced on .data) is
	 * skipped rather than failing the whole process scope. */
	return rc == MMK_ENOFEAT ? 0 : rc;
}

static int unmap_new(mmk_snap *s, const mmk__map *m, uintptr_t a, uintptr_t b)
{
	(void)s;
	(void)m;
	return munmap((void *)a, b - a) < 0 ? -errno : 0;
}

int mmk__proc_attach_all(mmk_snap *s)
{
	bool changed;
	int rc = fingerprint(s, &changed);
	if (rc < 0)
		return rc;
	if ((rc = read_candidates(s)) < 0)
		return rc;
	rc = for_each_uncovered(s, false, attach_new);
	if (rc < 0) {
		while (s->nregions)
			mmk__snap_remove_region(s, s->nregions - 1);
		return rc;
	}
	return fingerprint(s, &changed); /* attaching may have mapped memory */
}

static int brk_to(uintptr_t want)
{
	uintptr_t cur = (uintptr_t)sbrk(0);
	if (cur == want || want == 0)
		return 0;
	return brk((void *)want) < 0 ? -ENOMEM : 0;
}

int mmk__proc_check(mmk_snap *s, bool restoring, int target)
{
	bool changed;
	int rc = fingerprint(s, &changed);
	if (rc < 0)
		return rc;
	if (!changed)
		return 0;
	if ((rc = read_candidates(s)) < 0)
		return rc;
	/* Which live regions vanished (no longer wholly candidate memory)? */
	for (size_t i = 0; i < s->nregions; i++) {
		mmk__region *r = s->regions[i];
		if (!r->gone && !covered(&s->cand, r->start, r->end)) {
			r->gone = true;
			mmk__snap_unclaim(r); /* its range may be reused meanwhile */
		}
	}
	if (!restoring) {
		/* Save: forget vanished regions that no save point holds;
		 * keep the others (gone) for a later restore to re-create. */
		for (size_t i = s->nregions; i-- > 0;) {
			mmk__region *r = s->regions[i];
			if (r->gone && (s->depth == 0 || r->birth > s->depth))
				mmk__snap_remove_region(s, i);
		}
		rc = for_each_uncovered(s, false, attach_new);
		if (rc == 0)
			rc = fingerprint(s, &changed);
		return rc;
	}
	/* Restore to `target`: check first, change nothing if impossible. */
	for (size_t i = 0; i < s->nregions; i++) {
		mmk__region *r = s->regions[i];
		if (r->gone && r->birth <= target && !r->be->refill)
			return -EFAULT;
	}
	if ((rc = brk_to(s->brk_at[target])) < 0)
		return rc;
	/* Regions born after the target and memory that appeared since the
	 * last look are not part of image(L_target): unmap them. */
	for (size_t i = s->nregions; i-- > 0;) {
		mmk__region *r = s->regions[i];
		if (r->birth > target && r->automatic) {
			if (!r->gone)
				munmap((void *)r->start, r->end - r->start);
			r->gone = true;
			mmk__snap_remove_region(s, i);
		}
	}
	if ((rc = read_candidates(s)) < 0)
		return rc;
	if ((rc = for_each_uncovered(s, true, unmap_new)) < 0)
		return rc;
	/* Re-create vanished regions from their full copies. */
	for (size_t i = 0; i < s->nregions; i++) {
		mmk__region *r = s->regions[i];
		if (!r->gone)
			continue;
		/* the brk area re-grown by brk_to() may already be there */
		void *p = mmap((void *)r->start, r->end - r->start, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (p == MAP_FAILED)
			return -errno;
		if ((rc = mmk__snap_claim(r)) < 0)
			return rc;
		r->gone = false;
		if ((rc = r->be->refill(s, r, target)) < 0)
			return rc;
	}
	return fingerprint(s, &changed);
}
