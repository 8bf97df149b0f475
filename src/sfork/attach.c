/*
 * sfork/attach.c - regions that survive exec: MMKIT_SHARED export and
 * attach.
 *
 * Invariants: the descriptor decides the direction (a read-only descriptor
 * only ever gives a read-only view, whatever the spec's flags say); the
 * spec is parsed without allocation; export is async-signal-safe (no
 * allocation, no locale, no stdio) so it can run between fork and exec.
 * On failure attach leaves the descriptor open and maps nothing.
 */
#include "sfork/sfork_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif

#define PREFIX "MMKIT_SHARED="

/* Append s to buf at *pos; false when it does not fit (NUL included). */
static bool put(char *buf, size_t len, size_t *pos, const char *s)
{
	size_t k = strlen(s);
	if (*pos + k + 1 > len)
		return false;
	memcpy(buf + *pos, s, k);
	*pos += k;
	buf[*pos] = 0;
	return true;
}

static void utoa(unsigned long long v, char *out)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (int i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = 0;
}

int mmk_shared_export(const mmk_sfork_region *regions, size_t n, char *buf, size_t buflen)
{
	if (!regions || !buf || buflen == 0)
		return -EINVAL;
	size_t with_fd = 0;
	for (size_t i = 0; i < n; i++)
		with_fd += regions[i].fd >= 0;
	if (!with_fd)
		return -EINVAL;
	size_t pos = 0;
	buf[0] = 0;
	if (!put(buf, buflen, &pos, PREFIX))
		return -ERANGE;
	size_t done = 0;
	for (size_t i = 0; i < n; i++) {
		const mmk_sfork_region *r = &regions[i];
		if (r->fd < 0)
			continue;
		char num[24], fl[4];
		int k = 0;
		fl[k++] = r->writable ? 'w' : 'r';
		if (r->huge_kind == MMK_HUGE_THP)
			fl[k++] = 't';
		else if (r->huge_kind == MMK_HUGE_HUGETLB)
			fl[k++] = 'h';
		fl[k] = 0;
		const char *name = r->name ? r->name : "sfork";
		if (!mmk__sfork_name_ok(name))
			return -EINVAL;
		if (done && !put(buf, buflen, &pos, ","))
			return -ERANGE;
		if (!put(buf, buflen, &pos, name) || !put(buf, buflen, &pos, ":"))
			return -ERANGE;
		utoa((unsigned long long)r->fd, num);
		if (!put(buf, buflen, &pos, num) || !put(buf, buflen, &pos, ":") ||
		    !put(buf, buflen, &pos, fl) || !put(buf, buflen, &pos, ":"))
			return -ERANGE;
		utoa((unsigned long long)(r->len ? r->len : r->map_len), num);
		if (!put(buf, buflen, &pos, num))
			return -ERANGE;
		done++;
	}
	return (int)pos;
}

static int attach(int fd, unsigned flags, size_t want_len, int want_kind, mmk_sfork_region *r)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -EBADF;
	struct stat st;
	struct statfs sf;
	if (fstat(fd, &st) != 0 || fstatfs(fd, &sf) != 0)
		return -errno;
	bool hugetlb = (unsigned long)sf.f_type == (unsigned long)HUGETLBFS_MAGIC;
	if (!S_ISREG(st.st_mode) || (!hugetlb && (unsigned long)sf.f_type != (unsigned long)TMPFS_MAGIC))
		return -EINVAL;
	size_t map_len = (size_t)st.st_size;
	if (map_len == 0)
		return -EINVAL;
	bool writable = (fl & O_ACCMODE) == O_RDWR;
	int prot = PROT_READ | (writable ? PROT_WRITE : 0);
	bool thp = !hugetlb && want_kind == MMK_HUGE_THP;
	void *p;
	if (hugetlb)
		p = mmap(NULL, map_len, prot, MAP_SHARED, fd, 0);
	else
		p = mmk__sfork_map_aligned(fd, map_len, prot,
					   thp && map_len >= MMK__HUGE_SZ ? MMK__HUGE_SZ : MMK__PAGE);
	if (p == MAP_FAILED)
		return errno == EACCES || errno == EPERM ? -errno : -ENOMEM;
	if (thp)
		(void)madvise(p, map_len, MADV_HUGEPAGE);
	memset(r, 0, sizeof *r);
	r->addr = p;
	r->map_len = map_len;
	r->len = want_len && want_len <= map_len ? want_len : map_len;
	r->writable = writable;
	r->huge_kind = hugetlb ? MMK_HUGE_HUGETLB : thp ? MMK_HUGE_THP : MMK_HUGE_NONE;
	r->flags = writable ? MMK_SFORK_CHILD_WRITE : 0;
	r->huge = MMK_HUGE_AUTO;
	if (flags & MMK_SHARED_KEEP_FD) {
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
		r->fd = fd;
	} else {
		close(fd);
		r->fd = -1;
	}
	return 0;
}

int mmk_shared_attach_fd(int fd, unsigned flags, mmk_sfork_region *r)
{
	if (!r || fd < 0 || (flags & ~(unsigned)MMK_SHARED_KEEP_FD))
		return -EINVAL;
	return attach(fd, flags, 0, MMK_HUGE_NONE, r);
}

/* Parse an unsigned decimal in [s, e); false if empty, malformed or too big. */
static bool parse_u(const char *s, const char *e, unsigned long long *out)
{
	if (s >= e || e - s > 19)
		return false;
	unsigned long long v = 0;
	for (; s < e; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned)(*s - '0');
	}
	*out = v;
	return true;
}

int mmk_shared_attach(const char *spec, const char *name, unsigned flags, mmk_sfork_region *r)
{
	if (!r || (flags & ~(unsigned)MMK_SHARED_KEEP_FD))
		return -EINVAL;
	if (!spec)
		spec = getenv("MMKIT_SHARED");
	if (!spec)
		return -ENOENT;
	if (!strncmp(spec, PREFIX, strlen(PREFIX)))
		spec += strlen(PREFIX);
	const char *s = spec;
	while (*s) {
		const char *end = strchr(s, ',');
		if (!end)
			end = s + strlen(s);
		/* name:fd:flags:len */
		const char *c1 = memchr(s, ':', (size_t)(end - s));
		const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
		const char *c3 = c2 ? memchr(c2 + 1, ':', (size_t)(end - c2 - 1)) : NULL;
		unsigned long long fd, len;
		if (!c3 || c1 == s || !parse_u(c1 + 1, c2, &fd) || !parse_u(c3 + 1, end, &len) ||
		    fd > 1u << 30)
			return -EINVAL;
		bool match = !name || ((size_t)(c1 - s) == strlen(name) && !memcmp(s, name, (size_t)(c1 - s)));
		if (match) {
			int kind = MMK_HUGE_NONE;
			for (const char *f = c2 + 1; f < c3; f++) {
				if (*f == 't')
					kind = MMK_HUGE_THP;
				else if (*f == 'h')
					kind = MMK_HUGE_HUGETLB;
				else if (*f != 'w' && *f != 'r')
					return -EINVAL;
			}
			return attach((int)fd, flags, (size_t)len, kind, r);
		}
		s = *end ? end + 1 : end;
	}
	return -ENOENT;
}
