/*
 * mmkit/sfork.h - fork with shared regions, directional, surviving exec
 * (seed 001).
 *
 * sfork() forks and gives parent and child a region of memory that both
 * see at the same address: writes by one side are visible to the other.
 * Each side may or may not write; a side without write permission gets a
 * read-only view that
 *   - faults (SIGSEGV) on a write,
 *   - cannot be made writable: mprotect(PROT_WRITE) fails with EACCES,
 *     because the view is mapped from an O_RDONLY descriptor, and
 *   - holds no writable descriptor of the region (none at all, unless the
 *     region was created with MMK_SFORK_EXEC, and then a read-only one).
 * The backing object is a memfd (shmem), sealed against resizing and, when
 * no writer will ever need a new writable mapping, against new writable
 * mappings (F_SEAL_FUTURE_WRITE): re-opening a read-only descriptor
 * through /proc/self/fd with O_RDWR then gets no writable mapping either.
 *
 * NOT a security boundary: a process of the same user can still write
 * into a read-only side's memory through /proc/PID/mem or ptrace, or open
 * the writer's descriptor through /proc/PID/fd.  The read-only view
 * protects against mistakes, not against a hostile same-uid process.
 * mseal() is deliberately not used: it would make mprotect fail with EPERM
 * instead of EACCES and, worse, forbid munmap, so a region could not be
 * released before exit.
 *
 * Lifetime: the region is freed when the last process that maps it unmaps
 * it (munmap, mmk_shared_release) or exits, and no descriptor to it remains.
 * sfork keeps no descriptor in the parent and none in the child (except
 * the exec descriptor of MMK_SFORK_EXEC regions).
 *
 * Trees: a child may fork or sfork again; a grandchild inherits the region
 * with the view (read-only or writable) of the process it was forked from.
 *
 * Threads: sfork may be called from a multithreaded process (like fork,
 * only the calling thread exists in the child).  The descriptors sfork
 * creates are close-on-exec and, for regions without MMK_SFORK_EXEC,
 * closed before the fork, so the child never inherits them; a concurrent
 * plain fork() in another thread may briefly inherit them (as with any
 * descriptor).
 *
 * Huge pages (mmk_sfork_region.huge):
 *   MMK_HUGE_OFF       never.
 *   MMK_HUGE_REQUIRED  a hugetlb memfd when the 2 MiB pool has enough free
 *                      pages, otherwise shmem THP (MADV_HUGEPAGE) when
 *                      /sys/kernel/mm/transparent_hugepage/shmem_enabled
 *                      (or hugepages-2048kB/shmem_enabled) allows it
 *                      (advise, always, within_size, force); otherwise
 *                      the call fails with MMK_ENOFEAT.
 *   MMK_HUGE_AUTO      (the default) huge pages only for regions of at
 *                      least 2 MiB that are also MMK_SFORK_POPULATE: a
 *                      huge page costs a 2 MiB zero-fill on its first
 *                      touch, which makes sparse access several times
 *                      slower, and only a populated region declares that
 *                      it will be used densely.  hugetlb is used by AUTO
 *                      only when len is a multiple of 2 MiB (so that
 *                      munmap(addr, len) stays valid).
 *   The availability is read at each call (not cached), so an
 *   administrator's change applies to the next sfork.  To allow shmem THP:
 *       echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled
 *   or reserve a hugetlb pool: echo 512 > /proc/sys/vm/nr_hugepages.
 *
 * Exec survival (MMK_SFORK_EXEC): in the child, the region's descriptor
 * (read-only when the child may not write) stays open WITHOUT close-on-exec
 * and is returned in mmk_sfork_region.fd.  The child describes its regions
 * to the program it execs with mmk_shared_export(), in the environment
 * variable (or any argv element) of the form
 *
 *     MMKIT_SHARED=<name>:<fd>:<flags>:<len>[,<name>:<fd>:<flags>:<len>...]
 *
 * where <flags> is a string of letters: 'w' (the view is writable), 'r'
 * (read-only), 't' (THP), 'h' (hugetlb); <len> is the region's length in
 * bytes (decimal).  The exec'd program (linked with mmkit) calls
 * mmk_shared_attach(NULL, name, 0, &r) to map it again.  Direction rules
 * are enforced by the descriptor itself: a read-only descriptor can only
 * give a read-only view, whatever the flags say.  Regions without
 * MMK_SFORK_EXEC do not survive exec (the mapping disappears, as for any
 * memory).
 */
#ifndef MMKIT_SFORK_H
#define MMKIT_SFORK_H

#include <mmkit/common.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- seed compatibility: exactly the seed's interface ----------------- */
#ifndef CHILD_WRITE
#define CHILD_WRITE 0x1    /* the child may write the region */
#endif
#ifndef PARENT_WRITE
#define PARENT_WRITE 0x2   /* the parent may write the region */
#endif
#ifndef SFORK_POPULATE
#define SFORK_POPULATE 0x4 /* allocate every page of the region before fork */
#endif

/* Fork with a shared region of `len` bytes, zero-filled, at *addr in both
 * processes (huge pages: MMK_HUGE_AUTO).  Returns the child's pid in the
 * parent and 0 in the child.  On failure returns -1 and sets errno, and
 * then no child exists and nothing is leaked:
 *   EINVAL  len is 0, addr is NULL, or flags has a bit outside
 *           CHILD_WRITE|PARENT_WRITE|SFORK_POPULATE;
 *   ENOMEM  the region cannot be created, mapped or (SFORK_POPULATE)
 *           allocated (shmem is not reserved at mmap: populating more
 *           than the machine has may invoke the OOM killer instead, as
 *           MAP_POPULATE would);
 *   EAGAIN, ENOSYS, ...  fork's own errors;
 *   EMFILE, ENFILE  no descriptor available for the backing memfd.
 * Release the region with munmap(*addr, len) in each process (or exit).
 * Async-signal-safety: like fork, not guaranteed. */
MMK_API int sfork(size_t len, unsigned int flags, void **addr);

/* ---- native API --------------------------------------------------------- */
enum {
	MMK_SFORK_CHILD_WRITE  = 0x1, /* = CHILD_WRITE */
	MMK_SFORK_PARENT_WRITE = 0x2, /* = PARENT_WRITE */
	MMK_SFORK_POPULATE     = 0x4, /* = SFORK_POPULATE */
	MMK_SFORK_EXEC         = 0x8, /* the child keeps a descriptor for exec */
	MMK_SFORK_TWO_WAY      = MMK_SFORK_CHILD_WRITE | MMK_SFORK_PARENT_WRITE,
};

typedef enum mmk_huge_mode {
	MMK_HUGE_AUTO = 0,     /* see the file comment */
	MMK_HUGE_OFF = 1,
	MMK_HUGE_REQUIRED = 2,
} mmk_huge_mode;

/* What a region got (mmk_sfork_region.huge_kind). */
enum {
	MMK_HUGE_NONE = 0,     /* 4 KiB pages */
	MMK_HUGE_THP = 1,      /* shmem transparent huge pages (best effort per page) */
	MMK_HUGE_HUGETLB = 2,  /* 2 MiB hugetlb pages (guaranteed, reserved) */
};

/* One shared region: inputs, then outputs filled in both processes. */
typedef struct mmk_sfork_region {
	/* in */
	size_t len;            /* bytes, > 0 */
	unsigned flags;        /* MMK_SFORK_* */
	mmk_huge_mode huge;    /* MMK_HUGE_AUTO (0) unless set */
	const char *name;      /* for debugging: the memfd name shown in
	                          /proc/PID/maps as "/memfd:<name>" and the
	                          key of MMKIT_SHARED; NULL = "sfork".  At most
	                          63 characters from [A-Za-z0-9_.-]. */
	/* out */
	void *addr;            /* the region, at the same address in both */
	size_t map_len;        /* bytes mapped at addr (len rounded up to the
	                          page, or to 2 MiB for hugetlb) */
	int fd;                /* MMK_SFORK_EXEC, in the child: the inherited
	                          descriptor (not close-on-exec); else -1 */
	int huge_kind;         /* MMK_HUGE_NONE / _THP / _HUGETLB */
	bool writable;         /* this process's view is writable */
} mmk_sfork_region;

/* Fork with n (1..64) shared regions.  Returns the child's pid in the
 * parent, 0 in the child, or a negative error (and then no child exists,
 * no region is mapped and no descriptor is left open):
 *   -EINVAL       regions NULL, n out of range, a len of 0, unknown flags,
 *                 a bad huge mode or a bad name;
 *   -ENOMEM       a region cannot be created, mapped or populated;
 *   -EMFILE/-ENFILE  out of descriptors;
 *   MMK_ENOFEAT   MMK_HUGE_REQUIRED but no huge pages are allowed (shmem
 *                 THP is "never"/"deny" and the hugetlb pool lacks free
 *                 pages);
 *   -EAGAIN, ...  fork's own errors.
 * Not async-signal-safe. */
MMK_API pid_t mmk_sfork(mmk_sfork_region *regions, size_t n);

/* Unmap a region (sfork'd or attached) in this process and close its
 * descriptor if it holds one; *r is reset (addr NULL, fd -1).  Returns 0,
 * or -EINVAL if r is NULL or maps nothing. */
MMK_API int mmk_shared_release(mmk_sfork_region *r);

/* Write the MMKIT_SHARED description of the n regions that hold a
 * descriptor (fd >= 0; others are skipped) into buf as a NUL-terminated
 * "MMKIT_SHARED=..." string, ready for putenv() or an envp/argv array.
 * Returns the string's length, -EINVAL (bad arguments, or no region holds
 * a descriptor) or -ERANGE (buf too small).  Async-signal-safe (no
 * allocation), so it may be used between fork and exec. */
MMK_API int mmk_shared_export(const mmk_sfork_region *regions, size_t n, char *buf, size_t buflen);

enum {
	MMK_SHARED_KEEP_FD = 0x1, /* mmk_shared_attach: keep the descriptor
	                             (made close-on-exec) in r->fd; by default
	                             it is closed once the region is mapped */
};

/* Attach a region inherited across exec.  `spec` is a MMKIT_SHARED value
 * (with or without the "MMKIT_SHARED=" prefix, e.g. from argv); NULL reads
 * the environment variable.  `name` selects the entry; NULL takes the first.
 * The view is writable only if the descriptor was opened read-write.
 * Returns 0 and fills *r (addr, map_len, len, writable, huge_kind, fd),
 * or:
 *   -EINVAL   r NULL, bad flags, malformed spec, or the descriptor is not a
 *             shmem/hugetlbfs file;
 *   -ENOENT   no spec (variable unset) or no entry with that name;
 *   -EBADF    the entry's descriptor is not open;
 *   -ENOMEM   the mapping failed. */
MMK_API int mmk_shared_attach(const char *spec, const char *name, unsigned flags,
			      mmk_sfork_region *r);

/* Attach from a descriptor directly (any inheritance convention).  The
 * length is the file's size; writable iff fd is O_RDWR.  Errors as
 * mmk_shared_attach (without -ENOENT).  The descriptor is closed on success
 * unless MMK_SHARED_KEEP_FD. */
MMK_API int mmk_shared_attach_fd(int fd, unsigned flags, mmk_sfork_region *r);

#ifdef __cplusplus
}
#endif
#endif
