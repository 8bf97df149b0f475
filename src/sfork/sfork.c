/*
 * sfork/sfork.c - fork with shared, directional regions (seed 001).
 *
 * Invariants:
 *   - A region is a memfd (shmem, or hugetlbfs for MMK_HUGE_HUGETLB).
 *     Before fork the parent maps, at the region's final address A, the
 *     CHILD's view (read-write from the memfd, or read-only from an
 *     O_RDONLY re-open of /proc/self/fd/N, which clears VM_MAYWRITE so
 *     mprotect(PROT_WRITE) fails with EACCES).  When the parent's view
 *     differs it is prepared at another address B marked MADV_DONTFORK.
 *   - After fork the child only closes descriptors (it cannot fail); every
 *     fallible step after fork happens in the parent (moving B onto A with
 *     mremap).  If one fails, the parent kills and reaps the child and
 *     undoes everything, so on failure no child exists and nothing leaks.
 *   - Descriptors of regions without MMK_SFORK_EXEC are closed before fork
 *     (the mappings keep the memfd alive), so the child never inherits
 *     them.  After a successful call the parent holds no descriptor; the
 *     child holds one only for MMK_SFORK_EXEC regions, and never a
 *     writable one when it may not write.  The memfd is sealed against resizing and,
 *     unless an exec'd writer must map it again, against new writable
 *     mappings (F_SEAL_FUTURE_WRITE).
 *   - No process-wide state: everything lives in the caller's structs and
 *     on the stack.
 */
#include "sfork/sfork_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#endif
#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define KNOWN_FLAGS (MMK_SFORK_CHILD_WRITE | MMK_SFORK_PARENT_WRITE | MMK_SFORK_POPULATE | MMK_SFORK_EXEC)

/* Per-region work state between creation and the end of sfork. */
typedef struct prep {
	int rw_fd, ro_fd;  /* -1 when not open */
	void *a;           /* the child's view, at the final address */
	void *b;           /* the parent's view before fork when it differs, else NULL */
	size_t map_len;
	int kind;          /* MMK_HUGE_* kind */
	bool pw, cw;
} prep;

static void prep_init(prep *p)
{
	p->rw_fd = p->ro_fd = -1;
	p->a = p->b = NULL;
	p->map_len = 0;
	p->kind = MMK_HUGE_NONE;
	p->pw = p->cw = false;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		int e = errno;
		close(*fd);
		errno = e;
		*fd = -1;
	}
}

static void prep_undo(prep *p)
{
	if (p->a)
		munmap(p->a, p->map_len);
	if (p->b)
		munmap(p->b, p->map_len);
	p->a = p->b = NULL;
	close_fd(&p->rw_fd);
	close_fd(&p->ro_fd);
}

static int create_memfd(const char *name, bool hugetlb)
{
	unsigned base = MFD_CLOEXEC | MFD_ALLOW_SEALING | (hugetlb ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
	/* MFD_NOEXEC_SEAL (6.3+) keeps the kernel from warning about an
	 * executable memfd; older kernels reject the bit with EINVAL. */
	int fd = (int)syscall(SYS_memfd_create, name, base | MFD_NOEXEC_SEAL);
	if (fd < 0 && errno == EINVAL)
		fd = (int)syscall(SYS_memfd_create, name, base);
	return fd < 0 ? -errno : fd;
}

static int reopen_ro(int fd)
{
	char path[40];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int r = open(path, O_RDONLY | O_CLOEXEC);
	return r < 0 ? -errno : r;
}

static int map_errno(int e)
{
	/* mmap/madvise failures that mean "no memory for this region" */
	if (e == EAGAIN || e == EFAULT || e == ENOSPC || e == EHWPOISON || e == EBUSY)
		return -ENOMEM;
	return -e;
}

/* Create the memfd and both views of one region (before fork). */
static int prep_one(const mmk_sfork_region *r, prep *p)
{
	const char *name = r->name ? r->name : "sfork";
	bool populate = (r->flags & MMK_SFORK_POPULATE) != 0;
	p->pw = (r->flags & MMK_SFORK_PARENT_WRITE) != 0;
	p->cw = (r->flags & MMK_SFORK_CHILD_WRITE) != 0;

	/* Choose the page kind. */
	size_t page_len = MMK__PAGE_UP(r->len);
	size_t huge_len = (r->len + MMK__HUGE_SZ - 1) & ~(MMK__HUGE_SZ - 1);
	bool try_hugetlb = false, thp = false;
	if (r->huge == MMK_HUGE_REQUIRED ||
	    (r->huge == MMK_HUGE_AUTO && populate && r->len >= MMK__HUGE_SZ)) {
		bool auto_mode = r->huge == MMK_HUGE_AUTO;
		if ((!auto_mode || r->len % MMK__HUGE_SZ == 0) &&
		    mmk__sfork_hugetlb_avail() >= (long)(huge_len / MMK__HUGE_SZ))
			try_hugetlb = true;
		thp = mmk__sfork_thp_allowed(NULL, 0);
		if (!try_hugetlb && !thp && !auto_mode)
			return MMK_ENOFEAT;
	}

	int rc;
	if (try_hugetlb) {
		rc = create_memfd(name, true);
		if (rc >= 0) {
			p->rw_fd = rc;
			p->map_len = huge_len;
			p->kind = MMK_HUGE_HUGETLB;
			if (ftruncate(p->rw_fd, (off_t)huge_len) != 0)
				rc = -errno;
		}
		if (rc >= 0) {
			/* hugetlb reserves the pages at mmap: ENOMEM when the pool
			 * was emptied meanwhile.  Map the child's view now. */
			int prot = PROT_READ | (p->cw ? PROT_WRITE : 0);
			int vfd = p->rw_fd;
			if (!p->cw || !p->pw) {
				rc = reopen_ro(p->rw_fd);
				if (rc >= 0)
					p->ro_fd = rc;
				if (rc >= 0 && !p->cw)
					vfd = p->ro_fd;
			}
			if (rc >= 0) {
				void *a = mmap(NULL, huge_len, prot, MAP_SHARED, vfd, 0);
				if (a == MAP_FAILED)
					rc = -errno;
				else
					p->a = a;
			}
		}
		if (rc < 0) {
			/* fall back (pool emptied, hugetlbfs unavailable) */
			prep_undo(p);
			p->kind = MMK_HUGE_NONE;
			if (!thp && r->huge == MMK_HUGE_REQUIRED)
				return MMK_ENOFEAT;
		}
	}
	if (p->kind != MMK_HUGE_HUGETLB) {
		p->kind = thp ? MMK_HUGE_THP : MMK_HUGE_NONE;
		p->map_len = page_len;
		rc = create_memfd(name, false);
		if (rc < 0)
			return rc;
		p->rw_fd = rc;
		if (ftruncate(p->rw_fd, (off_t)page_len) != 0)
			return map_errno(errno);
		if (!p->cw || !p->pw) {
			rc = reopen_ro(p->rw_fd);
			if (rc < 0)
				return rc;
			p->ro_fd = rc;
		}
		size_t align = thp && page_len >= MMK__HUGE_SZ ? MMK__HUGE_SZ : MMK__PAGE;
		void *a = mmk__sfork_map_aligned(p->cw ? p->rw_fd : p->ro_fd, page_len,
						 PROT_READ | (p->cw ? PROT_WRITE : 0), align);
		if (a == MAP_FAILED)
			return map_errno(errno);
		p->a = a;
		if (thp && madvise(a, page_len, MADV_HUGEPAGE) != 0)
			return map_errno(errno);
	}

	/* The parent's own view, when it differs from the child's. */
	if (p->pw != p->cw) {
		int vfd = p->pw ? p->rw_fd : p->ro_fd;
		int prot = PROT_READ | (p->pw ? PROT_WRITE : 0);
		void *b;
		if (p->kind == MMK_HUGE_HUGETLB)
			b = mmap(NULL, p->map_len, prot, MAP_SHARED, vfd, 0);
		else
			b = mmk__sfork_map_aligned(vfd, p->map_len, prot,
						   p->kind == MMK_HUGE_THP && p->map_len >= MMK__HUGE_SZ
							   ? MMK__HUGE_SZ : MMK__PAGE);
		if (b == MAP_FAILED)
			return map_errno(errno);
		p->b = b;
		if (p->kind == MMK_HUGE_THP && madvise(b, p->map_len, MADV_HUGEPAGE) != 0)
			return map_errno(errno);
		if (madvise(b, p->map_len, MADV_DONTFORK) != 0)
			return map_errno(errno);
	}

	/* Populate: allocate every page now, through a writable view when there
	 * is one (the parent's, so its page tables are filled too). */
	if (populate) {
		void *w = p->pw ? (p->b ? p->b : p->a) : (p->cw ? p->a : NULL);
		int adv = w ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
		void *v = w ? w : p->a;
		if (madvise(v, p->map_len, adv) != 0) {
			int e = errno;
			if (e != EINVAL)
				return map_errno(e);
			/* pre-5.14 kernel: allocate the pages in the file (this
			 * reports ENOMEM/ENOSPC), then zero-fill them through a
			 * temporary MAP_POPULATE mapping: shmem leaves fallocated
			 * pages not up to date until first touched */
			if (fallocate(p->rw_fd, 0, 0, (off_t)p->map_len) != 0)
				return map_errno(errno);
			void *t = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE,
				       MAP_SHARED | MAP_POPULATE, p->rw_fd, 0);
			if (t == MAP_FAILED)
				return map_errno(errno);
			munmap(t, p->map_len);
		}
	}

	/* Seals: the size never changes (a truncation would SIGBUS the other
	 * side); no new writable mapping unless an exec'd writer needs one.
	 * Best effort: hugetlbfs on old kernels rejects some seals. */
	int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	if (!((r->flags & MMK_SFORK_EXEC) && p->cw))
		seals |= F_SEAL_FUTURE_WRITE;
	if (fcntl(p->rw_fd, F_ADD_SEALS, seals) != 0)
		(void)fcntl(p->rw_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	return 0;
}

static int validate(const mmk_sfork_region *regions, size_t n)
{
	if (!regions || n == 0 || n > MMK__SFORK_MAX_REGIONS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const mmk_sfork_region *r = &regions[i];
		if (r->len == 0 || r->len > ((size_t)1 << 46) || (r->flags & ~(unsigned)KNOWN_FLAGS))
			return -EINVAL;
		if (r->huge != MMK_HUGE_AUTO && r->huge != MMK_HUGE_OFF && r->huge != MMK_HUGE_REQUIRED)
			return -EINVAL;
		if (r->name && !mmk__sfork_name_ok(r->name))
			return -EINVAL;
	}
	return 0;
}

pid_t mmk_sfork(mmk_sfork_region *regions, size_t n)
{
	int rc = validate(regions, n);
	if (rc < 0)
		return rc;
	prep p[MMK__SFORK_MAX_REGIONS];
	for (size_t i = 0; i < n; i++)
		prep_init(&p[i]);
	size_t made = 0;
	for (; made < n; made++) {
		rc = prep_one(&regions[made], &p[made]);
		if (rc < 0) {
			made++;
			goto undo;
		}
	}

	/* Regions that need no descriptor after fork drop them now: the child
	 * then never inherits a descriptor (writable or not), and fork has
	 * fewer files to duplicate.  The mappings keep the memfd alive. */
	for (size_t i = 0; i < n; i++) {
		if (!(regions[i].flags & MMK_SFORK_EXEC)) {
			close_fd(&p[i].rw_fd);
			close_fd(&p[i].ro_fd);
		}
	}

	pid_t pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto undo;
	}
	if (pid == 0) {
		/* Child: nothing here can fail. */
		for (size_t i = 0; i < n; i++) {
			mmk_sfork_region *r = &regions[i];
			r->fd = -1;
			if (r->flags & MMK_SFORK_EXEC) {
				int *keep = p[i].cw ? &p[i].rw_fd : &p[i].ro_fd;
				r->fd = *keep;
				*keep = -1;
				(void)fcntl(r->fd, F_SETFD, 0);
			}
			close_fd(&p[i].rw_fd);
			close_fd(&p[i].ro_fd);
			r->addr = p[i].a;
			r->map_len = p[i].map_len;
			r->huge_kind = p[i].kind;
			r->writable = p[i].cw;
		}
		return 0;
	}

	/* Parent: put its own view in place. */
	for (size_t i = 0; i < n; i++) {
		if (!p[i].b)
			continue;
		void *m = mremap(p[i].b, p[i].map_len, p[i].map_len, MREMAP_MAYMOVE | MREMAP_FIXED, p[i].a);
		if (m == MAP_FAILED) {
			rc = map_errno(errno);
			goto kill_child;
		}
		p[i].b = NULL; /* A now is the parent's view; the old A is gone */
		if (madvise(p[i].a, p[i].map_len, MADV_DOFORK) != 0) {
			rc = map_errno(errno);
			goto kill_child;
		}
	}
	for (size_t i = 0; i < n; i++) {
		mmk_sfork_region *r = &regions[i];
		close_fd(&p[i].rw_fd);
		close_fd(&p[i].ro_fd);
		r->addr = p[i].a;
		r->map_len = p[i].map_len;
		r->fd = -1;
		r->huge_kind = p[i].kind;
		r->writable = p[i].pw;
	}
	return pid;

kill_child:
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
undo:
	for (size_t i = 0; i < made; i++)
		prep_undo(&p[i]);
	return rc;
}

int sfork(size_t len, unsigned int flags, void **addr)
{
	if (!addr || len == 0 || (flags & ~(unsigned)(CHILD_WRITE | PARENT_WRITE | SFORK_POPULATE))) {
		errno = EINVAL;
		return -1;
	}
	mmk_sfork_region r;
	memset(&r, 0, sizeof r);
	r.len = len;
	r.flags = flags;
	r.huge = MMK_HUGE_AUTO;
	pid_t pid = mmk_sfork(&r, 1);
	if (pid < 0) {
		errno = pid > -4096 ? -pid : ENOMEM;
		return -1;
	}
	*addr = r.addr;
	return pid;
}

int mmk_shared_release(mmk_sfork_region *r)
{
	if (!r || !r->addr || !r->map_len)
		return -EINVAL;
	int rc = munmap(r->addr, r->map_len) == 0 ? 0 : -errno;
	if (r->fd >= 0)
		close(r->fd);
	r->addr = NULL;
	r->map_len = 0;
	r->fd = -1;
	return rc;
}
