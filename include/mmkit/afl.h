/*
 * mmkit/afl.h - AFL++ persistent mode with the process's memory reset
 * between inputs (header only, over the public snapshot API).
 *
 * AFL++ runs a persistent harness as `while (__AFL_LOOP(N)) { ... }`: one
 * process runs N inputs, so whatever one input leaves in memory (global
 * tables, caches, heap, counters) changes how the next one runs.  AFL++
 * reports that as low "stability", and a crash that needs earlier inputs'
 * state does not reproduce on its own.  MMK_AFL_LOOP(N) is a drop-in
 * replacement for __AFL_LOOP(N) that puts the process's memory back, after
 * every input, to what it was when the first input started:
 *
 *     #include <mmkit/afl.h>
 *     __AFL_FUZZ_INIT();
 *     int main(void)
 *     {
 *             setup();                         // tables, config, ...
 *             __AFL_INIT();                    // fork server starts here
 *             unsigned char *buf = __AFL_FUZZ_TESTCASE_BUF;
 *             while (MMK_AFL_LOOP(10000)) {
 *                     int len = __AFL_FUZZ_TESTCASE_LEN;
 *                     parse(buf, len);         // may scribble, leak, crash
 *             }                                // memory is reset here
 *             return 0;
 *     }
 *
 * Build with afl-clang-fast and link libmmkit (`pkg-config --libs mmkit`).
 * Without afl-clang-fast (no __AFL_LOOP), MMK_AFL_LOOP(N) runs the body
 * once, like AFL++'s runtime does outside the fuzzer.
 *
 * How.  The first time the AFL++ loop lets an input run (in the forked child,
 * after the fork server), the harness creates a process-scope snapshot
 * (mmk_snap_add_process) and saves it; after every input it calls
 * mmk_snap_restore (snapshot.h).  The save point is taken once per child
 * and kept.  A small process (<= MMK_AFL_COPY_MAX_PAGES tracked pages, the
 * usual fuzzing target once AFL++'s big buffers are excluded) uses the copy
 * backend, less the pages nobody has touched yet: those are left out of the
 * copy and checked instead (see mmk_afl__plan), so a reset copies only the
 * touched pages (18 of 82 on the example target) plus two system calls (a
 * /proc/self/statm read, getrusage) when no untouched page was touched.  Lazily bound PLT slots keep
 * their resolved values (see mmk_afl__got_object).
 *
 * What is reset: every private writable mapping of the process - the heap
 * (including the program break: memory malloc'd by an input is gone), the
 * .data/.bss of the program and of its libraries (libc's stdio buffers and
 * malloc state included), thread-local storage of the main thread,
 * anonymous mmaps (ones mapped by an input are unmapped).
 * What is NOT reset: the stack of the harness (process scope never tracks
 * stacks, so local variables of the function running the loop survive),
 * shared memory (AFL++'s coverage map and test-case buffer are System V
 * shared memory: never tracked, so coverage is never erased), file
 * descriptors and file offsets, files, other threads, other processes,
 * kernel state (signal handlers, timers, rlimits), the slots of lazily
 * bound PLT entries (the dynamic linker's cache: either value calls the same
 * function), and memory the harness asked to keep (mmk_afl_preserve).  Output buffered in stdio and not
 * flushed before the end of the iteration is discarded with the rest of
 * memory: fflush() in the iteration if it matters.  Use mmk_afl_on_reset()
 * to reset what memory does not cover (rewind a file, close descriptors an
 * input opened, ...).
 *
 * AFL++'s own state.  The fork server runs in the parent, which is never
 * snapshotted.  AFL++'s runtime keeps its loop counter and first-pass flag
 * in the target's .bss: the reset rolls them back to the values they had
 * after the first pass, so AFL++'s own counter never reaches zero.  The
 * harness therefore counts iterations itself, in memory the snapshot does
 * not track (a MAP_SHARED page of its own), and ends the loop after N
 * inputs by returning 0 without calling into AFL++ again; the process then
 * exits and the fork server forks a fresh child, exactly as when AFL++'s
 * counter runs out.  The harness's own configuration is written before the
 * save point, so a reset leaves it as it is.
 *
 * Crashes.  No signal handler is installed: an input that crashes kills
 * the child with its signal, which the fork server reports.  (mmkit's lazy
 * backend, used for anonymous regions >= 64 MiB, installs a SIGBUS handler
 * that re-raises faults that are not its own with the default action.)
 * A crash found with the reset on runs from the same memory state as a
 * fresh process, so it reproduces when the input is run alone.
 *
 * Coverage.  The harness's code carries AFL++'s "ign." prefix (no coverage
 * of its own) and the loop condition is one call site (see
 * MMK_AFL__ONE_SITE): a child's first input gives AFL++ the same map as any
 * later one, so a reset target can reach 100 % stability.
 *
 * Environment: MMK_AFL_RESET=0 turns the reset off at run time (plain
 * __AFL_LOOP semantics, same binary); MMK_SNAP_BACKEND=copy|async|lazy forces
 * a snapshot backend (snapshot.h); MMK_AFL_UNTOUCHED=0 copies untouched
 * pages too; MMK_AFL_KEEP_PLT=0 rolls lazily bound PLT slots back as well.
 *
 * Blind spot of the untouched-page check (mmk_afl__plan): in one input, a
 * page untouched at the save point made present by someone other than the
 * loop's thread (another thread, a vfork child, a kernel worker, another
 * process) while an untracked anonymous page present at the save point
 * leaves memory without a fault of the loop's thread and without a change
 * to the address space (swapped out, or MADV_DONTNEED/MADV_FREE on a buffer
 * excluded with mmk_afl_exclude): the two cancel out in the resident count.
 * Set MMK_AFL_UNTOUCHED=0 where that can happen.  The check needs exact
 * counts in /proc/self/statm (Linux 6.16+, probed at the save point);
 * otherwise every page is copied.
 *
 * Failure: if the snapshot cannot be created or restored (e.g. no
 * userfaultfd and no memory), the harness writes the reason to stderr and
 * calls abort(): fuzzing with a silently missing reset would give false
 * results.
 *
 * Threads: the loop must run in the main thread with no other thread
 * writing memory during a reset (snapshot.h, "Threads").  Each translation
 * unit that uses MMK_AFL_LOOP has its own harness state; use it in one.
 */
#ifndef MMKIT_AFL_H
#define MMKIT_AFL_H

#include <mmkit/snapshot.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMK_AFL_MAX_PRESERVE   16   /* ranges kept across resets */
#define MMK_AFL_PRESERVE_BYTES 4096 /* their total size */
#define MMK_AFL_MAX_HOOKS      8
#define MMK_AFL_MAX_EXCLUDE    8
/* at most this many tracked pages: copy backend (see mmk_afl__begin) */
#ifndef MMK_AFL_COPY_MAX_PAGES
#define MMK_AFL_COPY_MAX_PAGES 128
#endif
/* runs of untouched anonymous pages left out of the copy (see
 * mmk_afl__plan) */
#define MMK_AFL_MAX_UNTOUCHED 32
#define MMK_AFL_MAX_REPLANS 16
#define MMK_AFL_MAX_GOT 16 /* loaded objects with lazily bound PLT slots */

typedef void (*mmk_afl_hook)(void *arg);

/* The harness's own code must add no coverage of its own: AFL++'s
 * instrumentation (4.x) skips functions whose symbol starts with "ign.",
 * and the code runs out of line so nothing of it is inlined into the
 * instrumented loop.  (The first input of a child takes the save point and
 * the others do not: instrumented, that would make every child's first
 * input look different to AFL++.) */
#define MMK_AFL__FN(ret, name, args) \
	static ret name args __asm__("ign." #name) __attribute__((noinline, unused)); \
	static ret name args

/* AFL++'s runtime exports its coverage map pointer (__afl_area_ptr) and
 * the number of instrumented edges (__afl_final_loc) dynamically; they are
 * looked up with dlsym because a declaration in an instrumented unit would
 * clash with the one the instrumentation pass creates. */
#define MMK_AFL__DUMMY_MAP (8u << 20)
/* the page size (pagemap has one entry per page), read once per loop */
#define MMK_AFL__PG (mmk_afl__self()->pg)

/* PROCMAP_QUERY (Linux 6.11, linux/fs.h), under names of its own (older
 * headers lack it; newer ones must not clash) */
struct mmk_afl__procmap_query {
	uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags;
	uint64_t vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define MMK_AFL__PROCMAP_QUERY _IOWR('f', 17, struct mmk_afl__procmap_query)

/* Mutable state of a running loop: in a MAP_SHARED anonymous mapping of its
 * own, which process scope never tracks, so a reset does not roll it back. */
typedef struct mmk_afl__live {
	mmk_snap *snap;
	unsigned long long iter;   /* inputs finished in this loop */
	unsigned long long resets; /* restores done */
	unsigned long long discards; /* resets that discarded the untouched runs */
	unsigned long long replans;  /* ... and moved touched pages to the copy */
	unsigned long long repairs;  /* resets that re-created unmapped or
				      * re-protected runs */
	unsigned long long rescans;  /* the engine's count at the last check */
	size_t plt_kept;           /* PLT slots with an accepted value */
	long faults;               /* this thread's faults after the last reset */
	long anon_rss;             /* resident anonymous pages after it */
	int pagemap_fd;            /* /proc/self/pagemap while there are runs */
	int maps_fd;               /* /proc/self/maps while there are runs */
	int statm_fd;              /* /proc/self/statm while there are runs */
	int query_ok;              /* PROCMAP_QUERY works (else maps text) */
	size_t nrun, untouched;    /* untouched runs, their pages */
	struct { uintptr_t start, end; } run[MMK_AFL_MAX_UNTOUCHED];
	uint64_t pm[512];          /* pagemap entries being read */
	uintptr_t *gotbuf;         /* PLT slots before a restore, then the values
				    * accepted per slot (shared memory) */
	unsigned char scratch[MMK_AFL_PRESERVE_BYTES];
} mmk_afl__live;

/* Configuration, one per translation unit, in the program's .bss; written
 * only before the save point (so a reset restores it unchanged), except
 * `live`, which is set before the save and cleared after the loop. */
typedef struct mmk_afl__cfg {
	struct { void *addr; size_t len; } keep[MMK_AFL_MAX_PRESERVE];
	size_t nkeep, keep_bytes;
	struct { mmk_afl_hook fn; void *arg; } hook[MMK_AFL_MAX_HOOKS];
	size_t nhook;
	struct { void *addr; size_t len; } excl[MMK_AFL_MAX_EXCLUDE];
	size_t nexcl;
	int off;               /* MMK_AFL_RESET=0: no reset */
	int checked_env;
	struct {
		uintptr_t addr;              /* first lazy PLT slot */
		size_t len;                  /* bytes of slots */
		const unsigned char *jmprel; /* their relocations (DT_JMPREL) */
		size_t relent;               /* sizeof Rela or Rel */
		const ElfW(Sym) *symtab;
		const char *strtab;
	} got[MMK_AFL_MAX_GOT];
	size_t ngot, got_bytes;
	int keep_plt;             /* MMK_AFL_KEEP_PLT is not 0 */
	uintptr_t pg;             /* page size */
	unsigned char **area_ptr; /* &__afl_area_ptr, NULL without AFL++ */
	unsigned char *dummy_map; /* coverage after the last input goes here */
	mmk_afl__live *live;   /* NULL outside a running loop */
} mmk_afl__cfg;

static inline mmk_afl__cfg *mmk_afl__self(void)
{
	static mmk_afl__cfg cfg;
	return &cfg;
}

MMK_AFL__FN(void, mmk_afl__die, (const char *what, int rc))
{
	fprintf(stderr, "mmkit afl: %s: %s\n", what, mmk_strerror(rc));
	abort();
}

/* Keep [addr, addr+len) across resets: its bytes are copied aside before
 * each restore and written back after it (only if they differ, so an
 * unchanged range costs no page fault).  For counters or logs a harness
 * wants to accumulate over inputs.  Call before the loop starts.
 * Errors: -EINVAL len 0, more than MMK_AFL_MAX_PRESERVE ranges or
 * MMK_AFL_PRESERVE_BYTES bytes in all; -EBUSY the loop is running. */
static inline int mmk_afl_preserve(void *addr, size_t len)
{
	mmk_afl__cfg *c = mmk_afl__self();
	if (c->live)
		return -EBUSY;
	if (!len || c->nkeep == MMK_AFL_MAX_PRESERVE || c->keep_bytes + len > MMK_AFL_PRESERVE_BYTES)
		return -EINVAL;
	c->keep[c->nkeep].addr = addr;
	c->keep[c->nkeep].len = len;
	c->nkeep++;
	c->keep_bytes += len;
	return 0;
}

/* Call fn(arg) after every reset (after memory is restored and preserved
 * ranges written back): reset what memory does not cover, e.g. seek a
 * descriptor back, close descriptors an input opened.  Call before the loop
 * starts.  Errors: -EINVAL too many hooks or fn NULL; -EBUSY running. */
static inline int mmk_afl_on_reset(mmk_afl_hook fn, void *arg)
{
	mmk_afl__cfg *c = mmk_afl__self();
	if (c->live)
		return -EBUSY;
	if (!fn || c->nhook == MMK_AFL_MAX_HOOKS)
		return -EINVAL;
	c->hook[c->nhook].fn = fn;
	c->hook[c->nhook].arg = arg;
	c->nhook++;
	return 0;
}

/* Never track the whole pages inside [addr, addr+len) (a big buffer whose
 * contents need no reset, e.g. an input buffer every input rewrites).  The
 * snapshot engine excludes whole mappings, so the harness first makes those
 * pages a mapping of their own (madvise MADV_DONTDUMP, which also keeps them
 * out of core dumps); partial pages at either end stay tracked.  AFL++'s own
 * 2 MiB coverage map and 1 MiB test-case buffer are excluded this way
 * automatically.  Call before the loop starts.
 * Errors: -EINVAL len 0 or too many; -EBUSY running. */
static inline int mmk_afl_exclude(void *addr, size_t len)
{
	mmk_afl__cfg *c = mmk_afl__self();
	if (c->live)
		return -EBUSY;
	if (!len || c->nexcl == MMK_AFL_MAX_EXCLUDE)
		return -EINVAL;
	c->excl[c->nexcl].addr = addr;
	c->excl[c->nexcl].len = len;
	c->nexcl++;
	return 0;
}

/* The snapshot object of the running loop (for mmk_snap_stats_get), or NULL
 * outside the loop or with the reset off. */
static inline mmk_snap *mmk_afl_snap(void)
{
	mmk_afl__live *l = mmk_afl__self()->live;
	return l ? l->snap : NULL;
}

/* Inputs finished in the running loop (0 outside it or with the reset off). */
static inline unsigned long long mmk_afl_iterations(void)
{
	mmk_afl__live *l = mmk_afl__self()->live;
	return l ? l->iter : 0;
}

typedef struct mmk_afl_stats {
	unsigned long long iterations; /* inputs finished in the running loop */
	unsigned long long resets;     /* restores done */
	size_t untouched_pages;        /* pages left out of the copy (mmk_afl__plan) */
	size_t untouched_runs;         /* ... in this many runs */
	unsigned long long discards;   /* resets that saw a change and discarded the runs */
	unsigned long long replans;    /* ... and found pages touched: now copied */
	size_t plt_slots_kept;         /* lazily bound PLT slots kept across resets
					* (values accepted so far) */
	unsigned long long repairs;    /* resets that re-created untouched runs an
					* input unmapped or re-protected */
} mmk_afl_stats;

/* Statistics of the running loop (see "How" above).  Errors: -ENOENT no
 * loop running, or the reset is off. */
static inline int mmk_afl_stats_get(mmk_afl_stats *st)
{
	mmk_afl__live *l = mmk_afl__self()->live;
	if (!l)
		return -ENOENT;
	st->iterations = l->iter;
	st->resets = l->resets;
	st->untouched_pages = l->untouched;
	st->untouched_runs = l->nrun;
	st->discards = l->discards;
	st->replans = l->replans;
	st->plt_slots_kept = l->plt_kept;
	st->repairs = l->repairs;
	return 0;
}

/* ---- the loop (internal; use MMK_AFL_LOOP) ---------------------------------- */

/* Exclude the whole pages inside [addr, addr+len) from the snapshot.  The
 * engine excludes whole mappings, so the pages are first made a mapping of
 * their own: madvise(MADV_DONTDUMP) changes only the core-dump flag, which
 * makes the kernel split them from their neighbours (.bss variables on the
 * partial pages at either end stay tracked). */
MMK_AFL__FN(int, mmk_afl__split_exclude, (mmk_snap *s, void *addr, size_t len))
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)addr + pg - 1) & ~(pg - 1);
	uintptr_t b = ((uintptr_t)addr + len) & ~(pg - 1);
	if (b <= a)
		return 0;
	if (madvise((void *)a, b - a, MADV_DONTDUMP) != 0)
		return -errno;
	return mmk_snap_exclude(s, (void *)a, b - a);
}

MMK_AFL__FN(int, mmk_afl__first_object, (struct dl_phdr_info *info, size_t size, void *arg))
{
	(void)size;
	*(uintptr_t *)arg = (uintptr_t)info->dlpi_addr;
	return 1; /* the first object is the program */
}

/* AFL++'s big buffers in the program's .bss: the 2 MiB initial coverage map
 * (__afl_area_initial: unused once the map is AFL++'s shared memory; written
 * only when no fuzzer is attached, where rolling it back is pointless) and
 * the 1 MiB test-case buffer (__afl_fuzz_alt: only for input read from stdin,
 * rewritten by every input).  Tracking them would make every restore scan
 * ~770 pages instead of a few dozen, so they are found by name in the
 * program's symbol table and excluded.  A stripped program keeps them
 * tracked (correct, slower). */
MMK_AFL__FN(void, mmk_afl__exclude_afl_buffers, (mmk_afl__cfg *c))
{
	static const char *const names[] = { "__afl_area_initial", "__afl_fuzz_alt" };
	if (!c->area_ptr)
		return; /* no AFL++ runtime */
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	struct stat st;
	void *map = MAP_FAILED;
	if (fstat(fd, &st) == 0 && (size_t)st.st_size > sizeof(Elf64_Ehdr))
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return;
	const unsigned char *f = (const unsigned char *)map;
	size_t fsz = (size_t)st.st_size;
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)f;
	uintptr_t bias = 0;
	dl_iterate_phdr(mmk_afl__first_object, &bias);
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
	    eh->e_shoff && eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) <= fsz) {
		const Elf64_Shdr *sh = (const Elf64_Shdr *)(f + eh->e_shoff);
		for (unsigned i = 0; i < eh->e_shnum; i++) {
			if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum)
				continue;
			const Elf64_Shdr *str = &sh[sh[i].sh_link];
			if (sh[i].sh_offset + sh[i].sh_size > fsz || str->sh_offset + str->sh_size > fsz)
				break;
			const Elf64_Sym *sym = (const Elf64_Sym *)(f + sh[i].sh_offset);
			size_t n = sh[i].sh_size / sizeof *sym;
			for (size_t k = 0; k < n; k++) {
				if (sym[k].st_name >= str->sh_size || ELF64_ST_TYPE(sym[k].st_info) != STT_OBJECT)
					continue;
				const char *nm = (const char *)(f + str->sh_offset + sym[k].st_name);
				for (size_t j = 0; j < sizeof names / sizeof *names; j++)
					if (strcmp(nm, names[j]) == 0 && sym[k].st_size >= 65536 &&
					    c->nexcl < MMK_AFL_MAX_EXCLUDE) {
						c->excl[c->nexcl].addr = (void *)(bias + sym[k].st_value);
						c->excl[c->nexcl].len = sym[k].st_size;
						c->nexcl++;
					}
			}
			break;
		}
	}
	munmap(map, fsz);
}

/* One /proc/self/maps line ("start-end perms offset dev inode [name]",
 * NUL-terminated): its range, permissions, inode and name (or ""). */
MMK_AFL__FN(void, mmk_afl__maps_line, (char *line, uintptr_t *start, uintptr_t *end, const char **perm,
				       unsigned long long *ino, const char **name))
{
	char *e;
	*start = (uintptr_t)strtoull(line, &e, 16);
	*end = (uintptr_t)strtoull(e + 1, &e, 16);
	*perm = e + 1;
	char *q = e + 6;
	(void)strtoull(q, &q, 16); /* offset */
	while (*q == ' ')
		q++;
	while (*q && *q != ' ')
		q++; /* dev */
	*ino = strtoull(q, &q, 10);
	while (*q == ' ')
		q++;
	*name = q;
}

/* Could a huge page ever back [a, b) without a fault of ours (khugepaged
 * collapses a 2 MiB range, filling untouched pages)?  Only if the mapping
 * holds an aligned 2 MiB range and THP is not off. */
MMK_AFL__FN(int, mmk_afl__thp_possible, (uintptr_t a, uintptr_t b))
{
	uintptr_t h = 2u << 20;
	if (((a + h - 1) & ~(h - 1)) + h > b)
		return 0;
	char buf[128] = "";
	int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
		close(fd);
	}
	return fd < 0 || !strstr(buf, "[never]");
}

/* Is the page at a inside a range kept across resets? */
MMK_AFL__FN(int, mmk_afl__kept, (const mmk_afl__cfg *c, uintptr_t a))
{
	for (size_t i = 0; i < c->nkeep; i++) {
		uintptr_t k = (uintptr_t)c->keep[i].addr;
		if (a < k + c->keep[i].len && a + MMK_AFL__PG > k)
			return 1;
	}
	return 0;
}

/* Untouched pages.  Most private writable memory of a small program is
 * never touched: the top of the heap, big static buffers, the .bss of
 * libraries.  The copy backend would copy every one of those pages back
 * after every input although they are all zero, and stay zero unless an
 * input touches them.  So the tracked pages of anonymous mappings that are
 * neither present nor swapped (/proc/self/pagemap: zero-fill-on-demand)
 * are recorded as runs and excluded from the snapshot.  A page of a run
 * that becomes present, whoever touches it (the loop's thread, another
 * thread, a vfork child sharing the memory, an io_uring worker, another
 * process), adds one to the process's resident anonymous pages
 * (/proc/self/statm, per address space).  So after each restore, when that
 * count, the loop thread's page faults (a page the input dropped and the
 * restore brought back is a fault: a drop cannot hide a touch) and the
 * engine's address-space re-reads are all as after the last reset, no
 * run was touched; otherwise every run is discarded with MADV_DONTNEED,
 * which makes its pages untouched (zero) again, exactly their image (runs
 * an input unmapped or re-protected are re-created first, see
 * mmk_afl__fix_runs).  "Tracked" = what process scope tracks: `probe` is a
 * copy-backend object with process scope at depth 0; it is saved here
 * (after pagemap was read: its save reads every page, which maps the zero
 * page into untouched ones) and asked page by page.  Mappings a huge page
 * could back (khugepaged fills untouched pages without a fault of ours)
 * and ranges kept across resets are left to the copy.  Returns the number
 * of runs. */
MMK_AFL__FN(size_t, mmk_afl__plan, (mmk_afl__cfg *c, mmk_afl__live *l, mmk_snap *probe))
{
	size_t bufsz = 1u << 20;
	l->nrun = l->untouched = 0;
	/* scratch in shared memory: process scope never tracks it */
	char *buf = (char *)mmap(NULL, bufsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 0;
	int mfd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	int pfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	size_t third = bufsz / 4, n = 0;
	ssize_t got;
	while (mfd >= 0 && n < third - 1 && (got = read(mfd, buf + n, third - 1 - n)) > 0)
		n += (size_t)got;
	buf[n] = 0;
	uint64_t *pm = (uint64_t *)(void *)(buf + third);
	size_t pm_max = third / sizeof *pm;
	/* candidate runs: untouched pages of private anonymous mappings */
	uintptr_t *cand = (uintptr_t *)(void *)(buf + 2 * third);
	size_t ncand = 0, cand_max = 2 * third / sizeof *cand / 2;
	for (char *line = buf; pfd >= 0 && mfd >= 0 && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		uintptr_t a, b;
		const char *perm, *q;
		unsigned long long ino;
		mmk_afl__maps_line(line, &a, &b, &perm, &ino, &q);
		/* anonymous = inode 0, no name other than [heap] or [anon:...] */
		int anon = ino == 0 && (!*q || !strcmp(q, "[heap]") || !strncmp(q, "[anon:", 6));
		if (perm[0] == 'r' && perm[1] == 'w' && perm[3] == 'p' && anon && b > a &&
		    b - a <= ((size_t)64 << 20) && !mmk_afl__thp_possible(a, b)) {
			for (uintptr_t base = a; base < b && ncand < cand_max;) {
				size_t np = (b - base) / MMK_AFL__PG;
				if (np > pm_max)
					np = pm_max;
				ssize_t want = (ssize_t)(np * sizeof *pm);
				if (pread(pfd, pm, (size_t)want, (off_t)(base / MMK_AFL__PG * sizeof *pm)) != want)
					break;
				for (size_t i = 0; i < np && ncand < cand_max; i++) {
					uintptr_t pg = base + i * MMK_AFL__PG;
					if (pm[i] >> 62) /* bit 63 present, bit 62 swapped */
						continue;
					if (ncand && cand[2 * ncand - 1] == pg)
						cand[2 * ncand - 1] = pg + MMK_AFL__PG;
					else {
						cand[2 * ncand] = pg;
						cand[2 * ncand + 1] = pg + MMK_AFL__PG;
						ncand++;
					}
				}
				base += np * MMK_AFL__PG;
			}
		}
		if (!nl)
			break;
		line = nl + 1;
	}
	if (mfd >= 0)
		close(mfd);
	if (pfd >= 0)
		close(pfd);
	/* keep the pages process scope tracks */
	if (ncand && mmk_snap_save(probe) >= 1)
		for (size_t k = 0; k < ncand && l->nrun < MMK_AFL_MAX_UNTOUCHED; k++)
			for (uintptr_t pg = cand[2 * k]; pg < cand[2 * k + 1]; pg += MMK_AFL__PG) {
				if (!mmk_snap_saved_page(probe, (void *)pg) || mmk_afl__kept(c, pg))
					continue;
				if (l->nrun && l->run[l->nrun - 1].end == pg)
					l->run[l->nrun - 1].end = pg + MMK_AFL__PG;
				else if (l->nrun < MMK_AFL_MAX_UNTOUCHED) {
					l->run[l->nrun].start = pg;
					l->run[l->nrun].end = pg + MMK_AFL__PG;
					l->nrun++;
				} else
					break;
				l->untouched++;
			}
	munmap(buf, bufsz);
	return l->nrun;
}

/* Which pages of the untouched runs are present (or swapped) now?  The
 * runs less those pages go to out[] (at most MMK_AFL_MAX_UNTOUCHED runs;
 * pages beyond that are left out, to be copied).  Returns the number of
 * touched pages, -1 if pagemap cannot be read. */
MMK_AFL__FN(long, mmk_afl__touched, (mmk_afl__live *l, uintptr_t (*out)[2], size_t *nout, size_t *pages))
{
	long touched = 0;
	size_t nn = 0, np_all = 0;
	if (l->pagemap_fd < 0)
		return -1;
	for (size_t r = 0; r < l->nrun; r++)
		for (uintptr_t base = l->run[r].start; base < l->run[r].end;) {
			size_t np = (l->run[r].end - base) / MMK_AFL__PG;
			if (np > sizeof l->pm / sizeof *l->pm)
				np = sizeof l->pm / sizeof *l->pm;
			ssize_t want = (ssize_t)(np * sizeof *l->pm);
			if (pread(l->pagemap_fd, l->pm, (size_t)want, (off_t)(base / MMK_AFL__PG * sizeof *l->pm)) != want)
				return -1;
			for (size_t i = 0; i < np; i++) {
				uintptr_t pg = base + i * MMK_AFL__PG;
				if (l->pm[i] >> 62) { /* bit 63 present, bit 62 swapped */
					touched++;
					continue;
				}
				if (nn && out[nn - 1][1] == pg)
					out[nn - 1][1] = pg + MMK_AFL__PG;
				else if (nn < MMK_AFL_MAX_UNTOUCHED) {
					out[nn][0] = pg;
					out[nn][1] = pg + MMK_AFL__PG;
					nn++;
				} else
					continue;
				np_all++;
			}
			base += np * MMK_AFL__PG;
		}
	*nout = nn;
	*pages = np_all;
	return touched;
}

/* Faults of this thread so far (minor + major): every page this thread
 * makes present - by its own access, or the kernel's on its behalf (read(2)
 * into a buffer) - counts. */
MMK_AFL__FN(long, mmk_afl__faults, (void))
{
	struct rusage ru;
	return getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_minflt + ru.ru_majflt : -1;
}

/* Anonymous pages resident in the process's memory (mm-wide: /proc/self/statm
 * resident less shared, i.e. file and shmem pages), -1 if unreadable.  A
 * run's page made present by anyone - another thread, a vfork child sharing
 * the memory, an io_uring worker, another process (process_vm_writev) -
 * adds one. */
MMK_AFL__FN(long, mmk_afl__anon_rss, (int statm_fd))
{
	char buf[160];
	ssize_t n = statm_fd >= 0 ? pread(statm_fd, buf, sizeof buf - 1, 0) : -1;
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *e;
	(void)strtol(buf, &e, 10); /* size */
	long res = strtol(e, &e, 10);
	long shared = strtol(e, &e, 10);
	return res - shared;
}

/* Does /proc/self/statm give exact counts?  Since Linux 6.16 it sums the
 * per-CPU parts of the memory counters; 6.2-6.15 read only their shared
 * part (a page added on a CPU shows once that CPU's part reaches its batch
 * of 32+), earlier kernels cached them per thread (synced every 64 events).
 * The untouched-page check needs exact counts, so it is probed: each of
 * three pages touched must add exactly one; otherwise every page is copied
 * (as MMK_AFL_UNTOUCHED=0). */
MMK_AFL__FN(int, mmk_afl__statm_exact, (void))
{
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	char *p = (char *)mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int ok = fd >= 0 && p != MAP_FAILED;
	for (int i = 0; ok && i < 3; i++) {
		long before = mmk_afl__anon_rss(fd);
		((volatile char *)p)[i * 4096] = 1;
		ok = before >= 0 && mmk_afl__anon_rss(fd) == before + 1;
	}
	if (p != MAP_FAILED)
		munmap(p, 3 * 4096);
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Is [a, b) covered by private read-write anonymous mappings?  (What the
 * runs were at the save point.)  1 yes, 0 no, 2 mmkit's own memory is
 * there (placed by the engine in a hole an input made), -1 cannot tell.
 * PROCMAP_QUERY (Linux 6.11+), else the text of /proc/self/maps. */
MMK_AFL__FN(int, mmk_afl__anon_rw, (mmk_afl__live *l, uintptr_t a, uintptr_t b))
{
	if (l->maps_fd < 0)
		return -1;
	while (l->query_ok && a < b) {
		struct mmk_afl__procmap_query q;
		char name[32] = "";
		memset(&q, 0, sizeof q);
		q.size = sizeof q;
		q.query_addr = a;
		q.vma_name_addr = (uint64_t)(uintptr_t)name;
		q.vma_name_size = sizeof name;
		if (ioctl(l->maps_fd, MMK_AFL__PROCMAP_QUERY, &q) != 0) {
			if (errno == ENOENT)
				return 0; /* unmapped */
			l->query_ok = 0;
			break;
		}
		if (q.vma_start <= a && !strcmp(name, "[anon:mmkit]"))
			return 2;
		/* readable, writable, not shared, not file-backed */
		if ((q.vma_flags & 0x0b) != 0x03 || q.inode || q.vma_start > a)
			return 0;
		a = (uintptr_t)q.vma_end;
	}
	if (l->query_ok)
		return 1;
	char buf[4096];
	size_t have = 0;
	off_t off = 0;
	for (;;) {
		ssize_t got = pread(l->maps_fd, buf + have, sizeof buf - 1 - have, off);
		if (got <= 0)
			return a >= b;
		off += got;
		have += (size_t)got;
		buf[have] = 0;
		char *line = buf, *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			uintptr_t s0, e0;
			const char *perm, *q;
			unsigned long long ino;
			mmk_afl__maps_line(line, &s0, &e0, &perm, &ino, &q);
			if (e0 > a && s0 < b) {
				if (s0 <= a && !strcmp(q, "[anon:mmkit]"))
					return 2;
				if (s0 > a || perm[0] != 'r' || perm[1] != 'w' || perm[3] != 'p' || ino)
					return 0;
				a = e0;
				if (a >= b)
					return 1;
			}
			line = nl + 1;
		}
		have = (size_t)(buf + have - line);
		memmove(buf, line, have);
		if (have == sizeof buf - 1)
			return -1;
	}
}

/* The address space changed since the last look (the engine re-read it):
 * an input may have unmapped or re-protected a mapping holding untouched
 * runs.  The restore re-creates only the tracked parts (the runs are
 * excluded from the snapshot), so re-create each run that is no longer a
 * private read-write anonymous mapping: a fresh one is zero, exactly its
 * image.  A run where mmkit's own memory now lies is dropped (never
 * discarded: that memory is the engine's).  Returns the number of runs
 * re-created or dropped. */
MMK_AFL__FN(size_t, mmk_afl__fix_runs, (mmk_afl__live *l))
{
	size_t fixed = 0;
	for (size_t r = 0; r < l->nrun; r++) {
		int ok = mmk_afl__anon_rw(l, l->run[r].start, l->run[r].end);
		if (ok == 1)
			continue;
		if (ok == 2) {
			l->untouched -= (l->run[r].end - l->run[r].start) / MMK_AFL__PG;
			l->run[r] = l->run[--l->nrun];
			r--;
			fixed++;
			continue;
		}
		if (mmap((void *)l->run[r].start, l->run[r].end - l->run[r].start, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
			mmk_afl__die("mmap", -errno);
		fixed++;
	}
	return fixed;
}

/* The engine's count of address-space re-reads (see "How changes to the
 * address space are noticed" in snapshot.h). */
MMK_AFL__FN(unsigned long long, mmk_afl__rescans, (mmk_snap *s))
{
	mmk_snap_stats st;
	return mmk_snap_stats_get(s, &st) == 0 ? st.rescans : ~0ull;
}

/* Lazy binding.  Unless a program is linked with -z now, the dynamic linker
 * fills a function's PLT slot (.got.plt, private writable memory of the
 * program and of each lazily bound library) on its first call.  A slot
 * first used by an input would be rolled back by every reset and resolved
 * again by the next input (~0.2-1 us each, several per input for a
 * parser calling into libc).  The slots are the linker's cache, not program
 * state - either value calls the same function, and the linker is not
 * instrumented - so a slot keeps its value across a reset when that value
 * is exactly what the linker binds it to (dlsym of the slot's relocation
 * symbol, checked once per slot and remembered); any other value (an input
 * that corrupted the slot) is rolled back with the rest of memory.  The
 * check runs on the restored memory (never on what an input left, which may
 * be corrupt) and changes it (dlerror state, malloc, even on success), so a
 * reset that checked a slot restores a second time before writing the
 * accepted values back (once per slot in a child's life). */
MMK_AFL__FN(int, mmk_afl__got_object, (struct dl_phdr_info *info, size_t size, void *arg))
{
	mmk_afl__cfg *c = (mmk_afl__cfg *)arg;
	(void)size;
	const ElfW(Dyn) *dyn = NULL;
	for (unsigned i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
	if (!dyn || c->ngot == MMK_AFL_MAX_GOT)
		return 0;
	uintptr_t pltgot = 0, jmprel = 0, symtab = 0, strtab = 0;
	size_t relsz = 0;
	long pltrel = DT_RELA;
	int now = 0;
	for (; dyn->d_tag != DT_NULL; dyn++)
		switch (dyn->d_tag) {
		case DT_PLTGOT:
			pltgot = dyn->d_un.d_ptr;
			break;
		case DT_JMPREL:
			jmprel = dyn->d_un.d_ptr;
			break;
		case DT_SYMTAB:
			symtab = dyn->d_un.d_ptr;
			break;
		case DT_STRTAB:
			strtab = dyn->d_un.d_ptr;
			break;
		case DT_PLTRELSZ:
			relsz = dyn->d_un.d_val;
			break;
		case DT_PLTREL:
			pltrel = (long)dyn->d_un.d_val;
			break;
		case DT_BIND_NOW:
			now = 1;
			break;
		case DT_FLAGS:
			now |= (dyn->d_un.d_val & DF_BIND_NOW) != 0;
			break;
		case DT_FLAGS_1:
			now |= (dyn->d_un.d_val & DF_1_NOW) != 0;
			break;
		}
	if (now || !pltgot || !relsz || !jmprel || !symtab || !strtab)
		return 0;
	/* glibc relocates d_ptr in place on most targets; not on all */
	uintptr_t base = info->dlpi_addr;
	pltgot += pltgot < base ? base : 0;
	jmprel += jmprel < base ? base : 0;
	symtab += symtab < base ? base : 0;
	strtab += strtab < base ? base : 0;
	size_t ent = pltrel == DT_REL ? sizeof(ElfW(Rel)) : sizeof(ElfW(Rela));
	/* slots 0-2 are the linker's own; then one per PLT relocation */
	c->got[c->ngot].addr = pltgot + 3 * sizeof(void *);
	c->got[c->ngot].len = relsz / ent * sizeof(void *);
	c->got[c->ngot].jmprel = (const unsigned char *)jmprel;
	c->got[c->ngot].relent = ent;
	c->got[c->ngot].symtab = (const ElfW(Sym) *)symtab;
	c->got[c->ngot].strtab = (const char *)strtab;
	c->got_bytes += c->got[c->ngot].len;
	c->ngot++;
	return 0;
}

/* Is v what the dynamic linker binds slot k of object o to?  The slot's
 * relocation names the symbol; the global lookup (as lazy binding does for
 * a normal object; an IFUNC's implementation, too) must give exactly v.
 * Anything else - a slot an input corrupted, a symbol bound another way -
 * is not kept: the restore rolls it back. */
MMK_AFL__FN(int, mmk_afl__slot_ok, (const mmk_afl__cfg *c, size_t o, size_t k, uintptr_t v))
{
	uintptr_t slot = c->got[o].addr + k * sizeof(void *);
	const unsigned char *rel = c->got[o].jmprel + k * c->got[o].relent;
	uintptr_t off;
	unsigned long info;
	if (c->got[o].relent == sizeof(ElfW(Rela))) {
		off = ((const ElfW(Rela) *)(const void *)rel)->r_offset;
		info = (unsigned long)((const ElfW(Rela) *)(const void *)rel)->r_info;
	} else {
		off = ((const ElfW(Rel) *)(const void *)rel)->r_offset;
		info = (unsigned long)((const ElfW(Rel) *)(const void *)rel)->r_info;
	}
	(void)off;
#if defined(__x86_64__) || defined(__aarch64__)
	unsigned long sym = (unsigned long)ELF64_R_SYM(info);
#else
	unsigned long sym = (unsigned long)ELF32_R_SYM(info);
#endif
	if (!sym)
		return 0;
	const char *name = c->got[o].strtab + c->got[o].symtab[sym].st_name;
	void *want = dlsym((void *)0 /* RTLD_DEFAULT */, name);
	/* the relocation must be this slot's (r_offset is link-time, the
	 * slot is run-time: compare the distance from the first slot) */
	uintptr_t first = c->got[o].addr;
	const unsigned char *rel0 = c->got[o].jmprel;
	uintptr_t off0 = c->got[o].relent == sizeof(ElfW(Rela)) ? ((const ElfW(Rela) *)(const void *)rel0)->r_offset
								: ((const ElfW(Rel) *)(const void *)rel0)->r_offset;
	return want && (uintptr_t)want == v && off - off0 == slot - first;
}

/* A process-scope snapshot object without AFL++'s buffers, the harness's
 * exclusions and the untouched runs; backend AUTO honours MMK_SNAP_BACKEND. */
MMK_AFL__FN(mmk_snap *, mmk_afl__snap_new, (mmk_afl__cfg *c, mmk_afl__live *l, mmk_snap_backend be))
{
	mmk_snap_opts o = { be, 0 };
	mmk_snap *s;
	int rc = mmk_snap_create(&s, be == MMK_SNAP_AUTO ? NULL : &o);
	if (rc < 0)
		mmk_afl__die("mmk_snap_create", rc);
	for (size_t i = 0; i < c->nexcl; i++)
		if ((rc = mmk_afl__split_exclude(s, c->excl[i].addr, c->excl[i].len)) < 0)
			mmk_afl__die("mmk_snap_exclude", rc);
	for (size_t i = 0; i < l->nrun; i++)
		if ((rc = mmk_snap_exclude(s, (void *)l->run[i].start, l->run[i].end - l->run[i].start)) < 0)
			mmk_afl__die("mmk_snap_exclude", rc);
	if ((rc = mmk_snap_add_process(s)) < 0)
		mmk_afl__die("mmk_snap_add_process", rc);
	return s;
}

/* First input about to run: take the save point. */
MMK_AFL__FN(void, mmk_afl__begin, (mmk_afl__cfg *c))
{
	void *p = mmap(NULL, sizeof(mmk_afl__live), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		mmk_afl__die("mmap", -ENOMEM);
	mmk_afl__live *l = (mmk_afl__live *)p;
	c->pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	if (!c->dummy_map && (c->area_ptr = (unsigned char **)dlsym((void *)0, "__afl_area_ptr"))) {
		unsigned *final_loc = (unsigned *)dlsym((void *)0, "__afl_final_loc");
		size_t sz = MMK_AFL__DUMMY_MAP;
		if (final_loc && *final_loc + 4096u > sz)
			sz = *final_loc + 4096u;
		p = mmap(NULL, sz, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			mmk_afl__die("mmap", -ENOMEM);
		c->dummy_map = (unsigned char *)p;
	}
	mmk_afl__exclude_afl_buffers(c);
	const char *lz = getenv("MMK_AFL_KEEP_PLT");
	c->ngot = c->got_bytes = 0;
	c->keep_plt = !(lz && lz[0] == '0');
	dl_iterate_phdr(mmk_afl__got_object, c);
	if (c->got_bytes && c->keep_plt) {
		p = mmap(NULL, 2 * c->got_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			mmk_afl__die("mmap", -ENOMEM);
		l->gotbuf = (uintptr_t *)p;
	}
	int rc;
	/* Small process (AFL++'s buffers excluded): a full copy per restore
	 * beats the tracking backends, whose restore has a fixed cost (one
	 * PAGEMAP_SCAN walking every mapping in the tracked span) and ~1-3 us
	 * per written page (fault, re-protect) - see README.  MMK_SNAP_BACKEND
	 * still decides when set.  (Counted with a copy object: attaching one
	 * touches no memory, while async write-protection maps the zero page
	 * into every untouched page.) */
	const char *be = getenv("MMK_SNAP_BACKEND");
	int forced = be && *be;
	mmk_snap_stats st;
	mmk_snap *s = mmk_afl__snap_new(c, l, forced ? MMK_SNAP_AUTO : MMK_SNAP_COPY);
	if (!forced && mmk_snap_stats_get(s, &st) == 0 && st.pages_tracked > MMK_AFL_COPY_MAX_PAGES) {
		mmk_snap_destroy(s);
		s = mmk_afl__snap_new(c, l, MMK_SNAP_AUTO);
	}
	/* Copy backend: leave the untouched pages out of the copy
	 * (mmk_afl__plan).  MMK_AFL_UNTOUCHED=0 copies them too. */
	const char *ut = getenv("MMK_AFL_UNTOUCHED");
	if (mmk_snap_stats_get(s, &st) == 0 && !strcmp(st.backend, "copy") && !(ut && ut[0] == '0') &&
	    mmk_afl__statm_exact()) {
		mmk_afl__plan(c, l, s);
		mmk_snap_destroy(s); /* the probe: a fresh object saves below */
		/* the probe's save read the untouched pages, which maps the
		 * shared zero page there: unmap it again (content stays zero) */
		for (size_t i = 0; i < l->nrun; i++)
			madvise((void *)l->run[i].start, l->run[i].end - l->run[i].start, MADV_DONTNEED);
		s = mmk_afl__snap_new(c, l, MMK_SNAP_COPY);
	}
	l->snap = s;
	c->live = l; /* before the save: every restore keeps it */
	if ((rc = mmk_snap_save(l->snap)) < 0)
		mmk_afl__die("mmk_snap_save", rc);
	l->pagemap_fd = l->nrun ? open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC) : -1;
	l->maps_fd = l->nrun ? open("/proc/self/maps", O_RDONLY | O_CLOEXEC) : -1;
	l->statm_fd = l->nrun ? open("/proc/self/statm", O_RDONLY | O_CLOEXEC) : -1;
	l->query_ok = 1;
	uintptr_t nr[MMK_AFL_MAX_UNTOUCHED][2];
	size_t nn, np;
	if (l->nrun && mmk_afl__touched(l, nr, &nn, &np) != 0) {
		/* cannot read pagemap, or something touched them meanwhile:
		 * copy everything */
		mmk_snap_destroy(l->snap);
		l->nrun = l->untouched = 0;
		l->snap = mmk_afl__snap_new(c, l, MMK_SNAP_COPY);
		if ((rc = mmk_snap_save(l->snap)) < 0)
			mmk_afl__die("mmk_snap_save", rc);
	}
	l->rescans = mmk_afl__rescans(l->snap);
	l->anon_rss = mmk_afl__anon_rss(l->statm_fd);
	l->faults = mmk_afl__faults();
}

/* The loop is over: memory has been reset; stop tracking. */
MMK_AFL__FN(void, mmk_afl__end, (mmk_afl__cfg *c))
{
	mmk_afl__live *l = c->live;
	c->live = NULL;
	c->checked_env = 0; /* the next loop looks at MMK_AFL_RESET again */
	mmk_snap_destroy(l->snap);
	if (l->pagemap_fd >= 0)
		close(l->pagemap_fd);
	if (l->maps_fd >= 0)
		close(l->maps_fd);
	if (l->statm_fd >= 0)
		close(l->statm_fd);
	if (l->gotbuf)
		munmap(l->gotbuf, 2 * c->got_bytes);
	munmap(l, sizeof *l);
}

/* An input finished: put memory back. */
MMK_AFL__FN(void, mmk_afl__reset, (mmk_afl__cfg *c))
{
	mmk_afl__live *l = c->live;
	unsigned char *p = l->scratch;
	size_t i;
	for (i = 0; i < c->nkeep; i++) {
		memcpy(p, c->keep[i].addr, c->keep[i].len);
		p += c->keep[i].len;
	}
	uintptr_t *g = l->gotbuf;
	for (i = 0; g && i < c->ngot; i++) {
		memcpy(g, (void *)c->got[i].addr, c->got[i].len);
		g += c->got[i].len / sizeof *g;
	}
	int rc = mmk_snap_restore(l->snap);
	if (rc < 0)
		mmk_afl__die("mmk_snap_restore", rc);
	/* PLT slots: keep a slot's value if it is the one the linker binds.
	 * Memory is the image now, so a slot differing from it was written by
	 * the input; a value is checked once per slot (dlsym) and remembered.
	 * The check runs on the image, not on the input's memory (which may be
	 * corrupt), but it changes memory (dlerror state, malloc): when one
	 * ran, restore again.  Then write the accepted values back. */
	g = l->gotbuf;
	uintptr_t *acc = g ? l->gotbuf + c->got_bytes / sizeof *g : NULL;
	int checked = 0;
	for (i = 0; g && i < c->ngot; i++) {
		const uintptr_t *slot = (const uintptr_t *)c->got[i].addr;
		size_t n = c->got[i].len / sizeof *g;
		for (size_t k = 0; k < n; k++)
			if (g[k] != slot[k] && acc[k] == 0) {
				int ok = mmk_afl__slot_ok(c, i, k, g[k]);
				acc[k] = ok ? g[k] : 1; /* 1: rolled back from now on */
				l->plt_kept += ok != 0;
				checked = 1;
			}
		g += n;
		acc += n;
	}
	if (checked && (rc = mmk_snap_restore(l->snap)) < 0)
		mmk_afl__die("mmk_snap_restore", rc);
	g = l->gotbuf;
	acc = g ? l->gotbuf + c->got_bytes / sizeof *g : NULL;
	for (i = 0; g && i < c->ngot; i++) {
		uintptr_t *slot = (uintptr_t *)c->got[i].addr;
		size_t n = c->got[i].len / sizeof *g;
		for (size_t k = 0; k < n; k++)
			if (g[k] != slot[k] && acc[k] == g[k])
				slot[k] = g[k];
		g += n;
		acc += n;
	}
	if (l->nrun) {
		/* Has a page of a run become present (or swapped)?  Not if
		 * since the last reset (same memory state: after a restore)
		 * the process has the same number of resident anonymous pages
		 * (whoever made a run's page present: a thread, a vfork child,
		 * a kernel worker), this thread faulted in no page (the restore
		 * re-faults any tracked page an input dropped: a drop cannot
		 * hide a touch) and the address space was not re-read by the
		 * engine (an unmapped or new mapping).  Otherwise make every
		 * run untouched again (cheap where they are); pages found
		 * touched move to the copy for good (an input that touches a
		 * page will likely touch it again): memory is exactly the image
		 * now, so a new save point is the same one. */
		unsigned long long rs = mmk_afl__rescans(l->snap);
		long rss = mmk_afl__anon_rss(l->statm_fd), f = mmk_afl__faults();
		if (rs != l->rescans || rss != l->anon_rss || f != l->faults || rss < 0 || f < 0) {
			/* an input that unmapped or re-protected memory holding
			 * runs: the restore re-created only the tracked parts */
			if (rs != l->rescans && mmk_afl__fix_runs(l))
				l->repairs++;
			uintptr_t nr[MMK_AFL_MAX_UNTOUCHED][2];
			size_t nn = 0, np = 0;
			long t = mmk_afl__touched(l, nr, &nn, &np);
			for (i = 0; i < l->nrun; i++)
				if (madvise((void *)l->run[i].start, l->run[i].end - l->run[i].start,
					    MADV_DONTNEED) != 0) {
					/* a change the engine did not notice */
					l->repairs += mmk_afl__fix_runs(l) != 0;
					if (madvise((void *)l->run[i].start, l->run[i].end - l->run[i].start,
						    MADV_DONTNEED) != 0)
						mmk_afl__die("madvise", -errno);
				}
			l->discards++;
			if (t > 0 && l->replans < MMK_AFL_MAX_REPLANS) {
				for (i = 0; i < nn; i++) {
					l->run[i].start = nr[i][0];
					l->run[i].end = nr[i][1];
				}
				l->nrun = nn;
				l->untouched = np;
				mmk_snap_destroy(l->snap);
				l->snap = mmk_afl__snap_new(c, l, MMK_SNAP_COPY);
				if ((rc = mmk_snap_save(l->snap)) < 0)
					mmk_afl__die("mmk_snap_save", rc);
				l->replans++;
			}
			l->rescans = mmk_afl__rescans(l->snap);
			l->anon_rss = mmk_afl__anon_rss(l->statm_fd);
			l->faults = mmk_afl__faults();
		}
	}
	p = l->scratch;
	for (i = 0; i < c->nkeep; i++) {
		if (memcmp(c->keep[i].addr, p, c->keep[i].len) != 0)
			memcpy(c->keep[i].addr, p, c->keep[i].len);
		p += c->keep[i].len;
	}
	l->resets++;
	for (i = 0; i < c->nhook; i++)
		c->hook[i].fn(c->hook[i].arg);
}

typedef int (*mmk_afl_loop_fn)(unsigned n);

/* The loop condition must be ONE call site in the harness.  Compilers
 * rotate `while (cond) body` into `if (cond) do body while (cond)`: two
 * calls, the first in the loop's pre-header.  A child's first input then
 * enters the body through the edge from the pre-header and every later
 * input through the edge from the latch - a different coverage byte for the
 * first input of every fork-server child, which AFL++ counts as a variable
 * byte whenever a calibration spans a child restart (after each crash, and
 * every n inputs): stability 97.5 % instead of 100 % on the example target,
 * and plain __AFL_LOOP has the same asymmetry (afl-showmap shows it).  Clang
 * does not duplicate a call to a `noduplicate` function, so the loop is not
 * rotated; (clang inlines a static noduplicate function despite noinline
 * unless it is also optnone: it is tiny, so unoptimised code costs nothing
 * measurable).  GCC has no such attribute. */
#if defined(__clang__)
#define MMK_AFL__ONE_SITE __attribute__((optnone, noduplicate))
#else
#define MMK_AFL__ONE_SITE
#endif

/* One turn of the loop: reset after an input, then ask the loop function
 * (AFL++'s __afl_persistent_loop) for the next input.  A single call per
 * turn, so the instrumented loop condition in the harness is one basic
 * block that every input, including a child's first and last, passes
 * through the same way.  The loop ends after n inputs without calling
 * AFL++ again: its own counter is rolled back by every reset. */
static int mmk_afl__step(unsigned n, mmk_afl_loop_fn loop) __asm__("ign.mmk_afl__step")
	__attribute__((noinline, unused)) MMK_AFL__ONE_SITE;
static int mmk_afl__step(unsigned n, mmk_afl_loop_fn loop)
{
	mmk_afl__cfg *c = mmk_afl__self();
	if (!c->checked_env) {
		const char *e = getenv("MMK_AFL_RESET");
		c->off = e && e[0] == '0';
		c->checked_env = 1;
	}
	if (c->off) {
		int r = loop(n);
		if (!r)
			c->checked_env = 0; /* the next loop looks again */
		return r;
	}
	if (c->live) {
		mmk_afl__reset(c);
		if (++c->live->iter >= n) {
			/* As AFL++'s runtime does when its counter runs out:
			 * what runs after the loop is no input's coverage. */
			if (c->area_ptr && c->dummy_map)
				*c->area_ptr = c->dummy_map;
			mmk_afl__end(c);
			return 0;
		}
	}
	int r = loop(n);
	if (!r) {
		if (c->live)
			mmk_afl__end(c);
		return 0;
	}
	if (!c->live)
		mmk_afl__begin(c);
	return r;
}

/* Outside afl-clang-fast: one input, like AFL++'s runtime outside the
 * fuzzer.  (Its flag is reset with the rest of memory to its value at the
 * save point, which is after the first call: still "done".) */
MMK_AFL__FN(int, mmk_afl__once, (unsigned n))
{
	static int done;
	(void)n;
	return done ? 0 : (done = 1);
}

/* MMK_AFL_LOOP_WITH(n, loop): the same loop over any AFL++-like loop
 * function int loop(unsigned n) (returns non-zero while an input is ready;
 * for tests and for other fuzzers' persistent loops). */
#define MMK_AFL_LOOP_WITH(n, loop) mmk_afl__step((n), (loop))

#ifdef __AFL_LOOP
/* afl-clang-fast: AFL++'s loop function, and the persistent-mode signature
 * afl-fuzz looks for in the binary (what __AFL_LOOP would embed). */
int mmk_afl__rt_loop(unsigned int) __asm__("__afl_persistent_loop");
#define MMK_AFL_LOOP(n)                                                              \
	({                                                                           \
		static const char mmk_afl__sig[] __attribute__((used)) =             \
			"##SIG_AFL_PERSISTENT##";                                    \
		(void)mmk_afl__sig;                                                  \
		mmk_afl__step((n), mmk_afl__rt_loop);                                \
	})
#else
#define MMK_AFL_LOOP(n) mmk_afl__step((n), mmk_afl__once)
#endif

#ifdef __cplusplus
}
#endif
#endif
