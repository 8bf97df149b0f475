/*
 * sfork/huge.c - huge-page availability for shared regions, and aligned
 * shared mappings.
 *
 * Invariants: availability is read from sysfs at each call (no cache), so
 * a change by an administrator applies to the next sfork; nothing here
 * changes system settings.  mmk__sfork_map_aligned leaves no reservation
 * behind, whether it succeeds or fails.
 */
#include "sfork/sfork_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The selected "[mode]" of a sysfs THP control into out; false if absent. */
static bool selected_mode(const char *path, char *out, size_t outlen)
{
	char buf[256];
	if (mmk__read_file(path, buf, sizeof buf) <= 0)
		return false;
	const char *l = strchr(buf, '['), *r = l ? strchr(l, ']') : NULL;
	if (!l || !r || (size_t)(r - l - 1) >= outlen)
		return false;
	memcpy(out, l + 1, (size_t)(r - l - 1));
	out[r - l - 1] = 0;
	return true;
}

static bool mode_allows(const char *m)
{
	return !strcmp(m, "always") || !strcmp(m, "within_size") || !strcmp(m, "advise") ||
	       !strcmp(m, "force");
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
	if (!dst || !dstlen)
		return;
	size_t k = strlen(src);
	if (k >= dstlen)
		k = dstlen - 1;
	memcpy(dst, src, k);
	dst[k] = 0;
}

bool mmk__sfork_thp_allowed(char *why, size_t whylen)
{
	char m[32] = "";
	if (selected_mode("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled",
			  m, sizeof m) && strcmp(m, "inherit") != 0) {
		copy_str(why, whylen, m);
		return mode_allows(m);
	}
	if (!selected_mode("/sys/kernel/mm/transparent_hugepage/shmem_enabled", m, sizeof m))
		strcpy(m, "absent");
	copy_str(why, whylen, m);
	return mode_allows(m);
}

static long read_long(const char *path)
{
	char buf[64];
	if (mmk__read_file(path, buf, sizeof buf) <= 0)
		return -1;
	return strtol(buf, NULL, 10);
}

long mmk__sfork_hugetlb_avail(void)
{
	long f = read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
	long r = read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages");
	if (f < 0)
		return 0;
	if (r < 0)
		r = 0;
	return f > r ? f - r : 0;
}

void *mmk__sfork_map_aligned(int fd, size_t len, int prot, size_t align)
{
	if (align <= MMK__PAGE)
		return mmap(NULL, len, prot, MAP_SHARED, fd, 0);
	size_t span = len + align;
	char *res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return MAP_FAILED;
	char *at = (char *)(((uintptr_t)res + align - 1) & ~(uintptr_t)(align - 1));
	void *p = mmap(at, len, prot, MAP_SHARED | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED) {
		int e = errno;
		munmap(res, span);
		errno = e;
		return MAP_FAILED;
	}
	if (at > res)
		munmap(res, (size_t)(at - res));
	size_t tail = (size_t)((res + span) - (at + len));
	if (tail)
		munmap(at + len, tail);
	return p;
}

bool mmk__sfork_name_ok(const char *name)
{
	size_t n = 0;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return n >= 1 && n <= MMK__SFORK_NAME_MAX;
}
