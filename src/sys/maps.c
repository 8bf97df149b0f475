/*
 * sys/maps.c - the process's address space as a list of classified mappings.
 *
 * Two sources, same result: the PROCMAP_QUERY ioctl on /proc/self/maps
 * (6.11+, no text parsing, ~0.1 us per mapping) and parsing the text of
 * /proc/self/maps (any kernel).  Invariants: the list is sorted by address
 * and non-overlapping (the kernel reports VMAs in order); classification is
 * purely a function of one mapping plus the process's stack pointer(s) and
 * mmkit's self registry, so both sources classify identically (a test checks
 * it).  Giant NORESERVE-style reservations (sanitizer shadow, > 1 TiB) are
 * flagged so process-wide snapshots can skip them deliberately.
 */
#include "sys/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sys/state.h"

#define GIANT_RESERVATION (1ULL << 40)

static int ml_push(mmk__maplist *ml, const mmk__map *m)
{
	if (ml->n == ml->cap) {
		size_t ncap = ml->cap ? ml->cap * 2 : 64;
		/* mmkit's own memory: a process snapshot may restore the heap
		 * while the engine still holds this list */
		mmk__map *nv = mmk__self_realloc(ml->v, ncap * sizeof *nv);
		if (!nv)
			return -ENOMEM;
		ml->v = nv;
		ml->cap = ncap;
	}
	ml->v[ml->n++] = *m;
	return 0;
}

void mmk__maplist_free(mmk__maplist *ml)
{
	mmk__self_release(ml->v);
	ml->v = NULL;
	ml->n = ml->cap = 0;
}

static void classify(mmk__map *m, uintptr_t sp)
{
	const char *nm = m->name;
	if (m->inode != 0 || (nm[0] == '/' ))
		m->flags |= MMK__MAP_FILE;
	if (strcmp(nm, "[heap]") == 0)
		m->flags |= MMK__MAP_HEAP;
	else if (strncmp(nm, "[stack", 6) == 0)
		m->flags |= MMK__MAP_STACK;
	else if (nm[0] == '[' && strncmp(nm, "[anon", 5) != 0)
		m->flags |= MMK__MAP_SPECIAL; /* [vdso] [vvar] [vsyscall] [uprobes] */
	if (sp >= m->start && sp < m->end)
		m->flags |= MMK__MAP_STACK;
	if (mmk__self_covers(m->start, m->end))
		m->flags |= MMK__MAP_SELF;
	else {
		const char *self = NULL;
		mmk__self_object(&self);
		if (self && strcmp(self, nm) == 0)
			m->flags |= MMK__MAP_SELF;
	}
	if (m->end - m->start >= GIANT_RESERVATION)
		m->flags |= MMK__MAP_NORESERVE_HUGE;
}

bool mmk__map_is_snapshot_candidate(const mmk__map *m)
{
	return (m->prot & PROT_WRITE) &&
	       !(m->flags & (MMK__MAP_SHARED | MMK__MAP_STACK | MMK__MAP_SPECIAL |
			     MMK__MAP_SELF | MMK__MAP_NORESERVE_HUGE));
}

/* ---- /proc/self/maps text ---------------------------------------------------- */

static int parse_line(const char *line, mmk__map *m)
{
	unsigned long start, end, off, ino;
	unsigned maj, min;
	char perms[5];
	int pos = 0;
	memset(m, 0, sizeof *m);
	if (sscanf(line, "%lx-%lx %4s %lx %x:%x %lu %n", &start, &end, perms, &off, &maj, &min,
		   &ino, &pos) < 7)
		return -EIO;
	m->start = start;
	m->end = end;
	m->offset = off;
	m->inode = ino;
	m->dev_major = maj;
	m->dev_minor = min;
	m->prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
		  (perms[2] == 'x' ? PROT_EXEC : 0);
	if (perms[3] == 's')
		m->flags |= MMK__MAP_SHARED;
	const char *name = line + pos;
	size_t len = strcspn(name, "\n");
	if (len >= sizeof m->name)
		len = sizeof m->name - 1;
	memcpy(m->name, name, len);
	m->name[len] = 0;
	return 0;
}

static int read_procfs(mmk__maplist *ml, uintptr_t sp)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Read the whole text first: reading while we allocate could change
	 * the address space between chunks. */
	size_t cap = 16384, len = 0;
	/* mmkit's own memory, not malloc: process snapshots call this while
	 * malloc's state may be about to be rolled back */
	char *buf = mmk__self_calloc(1, cap);
	int rc = 0;
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (cap - len < 4096) {
			char *nb = mmk__self_realloc(buf, cap * 2);
			if (!nb) {
				rc = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = 0;
	for (char *line = buf; *line;) {
		char *nl = strchr(line, '\n');
		mmk__map m;
		if ((rc = parse_line(line, &m)) < 0)
			goto out;
		classify(&m, sp);
		if ((rc = ml_push(ml, &m)) < 0)
			goto out;
		if (!nl)
			break;
		line = nl + 1;
	}
out:
	mmk__self_release(buf);
	close(fd);
	return rc;
}

/* ---- PROCMAP_QUERY --------------------------------------------------------------- */

static int query_one(int fd, uintptr_t addr, mmk__map *m)
{
	struct procmap_query q;
	memset(&q, 0, sizeof q);
	memset(m, 0, sizeof *m);
	q.size = sizeof q;
	q.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA;
	q.query_addr = addr;
	q.vma_name_addr = (uintptr_t)m->name;
	q.vma_name_size = sizeof m->name;
	if (ioctl(fd, PROCMAP_QUERY, &q) < 0) {
		if (errno == ENAMETOOLONG) {
			/* Name longer than our buffer: query again without it
			 * and keep a truncated marker. */
			q.vma_name_addr = 0;
			q.vma_name_size = 0;
			if (ioctl(fd, PROCMAP_QUERY, &q) < 0)
				return -errno;
			strcpy(m->name, "/<long path>");
		} else {
			return -errno;
		}
	}
	m->start = q.vma_start;
	m->end = q.vma_end;
	m->offset = q.vma_offset;
	m->inode = q.inode;
	m->dev_major = q.dev_major;
	m->dev_minor = q.dev_minor;
	m->prot = (q.vma_flags & PROCMAP_QUERY_VMA_READABLE ? PROT_READ : 0) |
		  (q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE ? PROT_WRITE : 0) |
		  (q.vma_flags & PROCMAP_QUERY_VMA_EXECUTABLE ? PROT_EXEC : 0);
	if (q.vma_flags & PROCMAP_QUERY_VMA_SHARED)
		m->flags |= MMK__MAP_SHARED;
	return 0;
}

static int maps_fd_cached(void)
{
	/* Not thread-safe on first use per process; callers hold their own
	 * subsystem lock.  /proc/self resolves at open, so a forked child must
	 * not keep the parent's: mmk__sys_atfork_child drops it. */
	mmk__state *st = mmk__st();
	if (st->maps_fd >= 0)
		return st->maps_fd; /* a forked child drops it (mmk__sys_atfork_child) */
	int nfd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	st->maps_fd = nfd;
	return nfd;
}

static int read_query(mmk__maplist *ml, uintptr_t sp)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = 0;
	uintptr_t addr = 0;
	for (;;) {
		mmk__map m;
		rc = query_one(fd, addr, &m);
		if (rc == -ENOENT) {
			rc = 0;
			break;
		}
		if (rc < 0)
			break;
		classify(&m, sp);
		if ((rc = ml_push(ml, &m)) < 0)
			break;
		addr = m.end;
	}
	close(fd);
	return rc;
}

int mmk__maps_read(mmk__maplist *ml, int how)
{
	ml->n = 0;
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	bool have_query = mmk_features_get()->procmap_query;
	if (how == MMK__MAPS_QUERY && !have_query)
		return -EOPNOTSUPP;
	if (how == MMK__MAPS_QUERY || (how == MMK__MAPS_AUTO && have_query))
		return read_query(ml, sp);
	return read_procfs(ml, sp);
}

int mmk__maps_find(uintptr_t addr, mmk__map *out)
{
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	if (mmk_features_get()->procmap_query) {
		int fd = maps_fd_cached();
		if (fd < 0)
			return fd;
		int rc = query_one(fd, addr, out);
		if (rc == 0)
			classify(out, sp);
		return rc;
	}
	mmk__maplist ml = { 0 };
	int rc = read_procfs(&ml, sp);
	if (rc == 0) {
		rc = -ENOENT;
		for (size_t i = 0; i < ml.n; i++)
			if (ml.v[i].end > addr) {
				*out = ml.v[i];
				rc = 0;
				break;
			}
	}
	mmk__maplist_free(&ml);
	return rc;
}
