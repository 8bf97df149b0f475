/*
 * examples/afl/naive_reset.h - the reference reset for the benchmark: a
 * hand-written full copy of every private writable mapping (the program's
 * and libraries' .data/.bss, the heap, anonymous memory; not the stack),
 * taken once after AFL++'s first pass and copied back whole after every
 * input, plus the program break.  This is what "save the process's memory"
 * costs without knowing which pages an input wrote: it pays for AFL++'s
 * 2 MiB initial coverage map and 1 MiB test-case buffer in .bss on every
 * input.  The loop counter lives in a MAP_SHARED page (never copied), for
 * the same reason as in mmkit/afl.h.  Single-threaded, example quality.
 */
#ifndef NAIVE_RESET_H
#define NAIVE_RESET_H

#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct naive_img {
	struct { uintptr_t start, end; size_t off; } seg[512];
	int nseg;
	void *brk;
	size_t total;
	unsigned long iter; /* (lives in the shared header page) */
	char *data;
};
static struct naive_img *naive; /* set before the copy: restores keep it */
static unsigned char **naive_area_ptr, *naive_dummy;

/* uninstrumented, like mmkit/afl.h (AFL++ skips "ign." functions) */
#define NAIVE_FN(ret, name, args) \
	static ret name args __asm__("ign." #name) __attribute__((noinline)); \
	static ret name args

NAIVE_FN(void, naive_die, (const char *what))
{
	static const char m[] = "naive reset failed: ";
	(void)!write(2, m, sizeof m - 1);
	(void)!write(2, what, strlen(what));
	(void)!write(2, "\n", 1);
	abort();
}

NAIVE_FN(void, naive_save, (void))
{
	struct naive_img *im = mmap(NULL, sizeof *im, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (im == MAP_FAILED)
		naive_die("mmap");
	static char maps[1 << 16];
	int fd = open("/proc/self/maps", O_RDONLY);
	if (fd < 0)
		naive_die("open maps");
	size_t n = 0;
	ssize_t got;
	while ((got = read(fd, maps + n, sizeof maps - 1 - n)) > 0)
		n += (size_t)got;
	close(fd);
	maps[n] = 0;
	uintptr_t sp = (uintptr_t)&im;
	for (char *l = maps; *l;) {
		char *nl = strchr(l, '\n');
		if (nl)
			*nl = 0;
		char *end;
		uintptr_t a = strtoull(l, &end, 16), b = strtoull(end + 1, &end, 16);
		const char *perm = end + 1;
		int stack = strstr(l, "[stack]") || (sp >= a && sp < b);
		int special = strstr(l, "[vvar]") || strstr(l, "[vdso]") || strstr(l, "[vsyscall]");
		if (perm[0] == 'r' && perm[1] == 'w' && perm[3] == 'p' && !stack && !special &&
		    b - a < (1ull << 32) && im->nseg < 512) {
			im->seg[im->nseg].start = a;
			im->seg[im->nseg].end = b;
			im->seg[im->nseg].off = im->total;
			im->total += b - a;
			im->nseg++;
		}
		if (!nl)
			break;
		l = nl + 1;
	}
	im->data = mmap(NULL, im->total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (im->data == MAP_FAILED)
		naive_die("mmap copy");
	naive_area_ptr = dlsym(NULL, "__afl_area_ptr");
	naive_dummy = mmap(NULL, 8u << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	im->brk = sbrk(0);
	naive = im; /* before the copy */
	for (int i = 0; i < im->nseg; i++)
		memcpy(im->data + im->seg[i].off, (void *)im->seg[i].start, im->seg[i].end - im->seg[i].start);
}

NAIVE_FN(void, naive_restore, (void))
{
	struct naive_img *im = naive;
	/* the break first: the heap may have shrunk below the saved extent */
	if (sbrk(0) != im->brk && brk(im->brk) != 0)
		naive_die("brk");
	for (int i = 0; i < im->nseg; i++)
		memcpy((void *)im->seg[i].start, im->data + im->seg[i].off, im->seg[i].end - im->seg[i].start);
}

NAIVE_FN(int, naive_pre, (unsigned n))
{
	if (!naive)
		return 1;
	naive_restore();
	if (++naive->iter >= n) {
		if (naive_area_ptr && naive_dummy != MAP_FAILED)
			*naive_area_ptr = naive_dummy; /* as AFL++ does at the end */
		return 0;
	}
	return 1;
}

NAIVE_FN(int, naive_post, (int r))
{
	if (r && !naive)
		naive_save();
	return r;
}

#define NAIVE_LOOP(n) (naive_pre(n) && naive_post(__AFL_LOOP(n)))

#endif
