/*
 * tests/test_sfork.c - sfork (seed 001): visibility for every direction,
 * read-only views (SIGSEGV on write, EACCES on mprotect, no writable
 * descriptor, seals), populate residency, exec survival (the test re-execs
 * itself through /proc/self/exe with a marker argument), process trees,
 * leak-freedom over 1000 sforks, bad arguments, huge-page fallback.
 *
 * Children report failures through their exit status (a distinct code per
 * check, 0 = success); the parent asserts on it.
 */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit.h>

#define EXEC_MARKER "--sfork-exec-helper"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- helpers ---------------------------------------------------------------- */

static int wait_status(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return st;
}

/* exit code of a child, or 1000+signal */
static int wait_code(pid_t pid)
{
	int st = wait_status(pid);
	if (st < 0)
		return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 1000 + WTERMSIG(st);
	return -2;
}

/* Fork a probe that writes one byte at p: returns its wait code
 * (1000+SIGSEGV when the view is read-only). */
static int probe_write(volatile char *p)
{
	pid_t pid = fork();
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		p[0] = 42;
		_exit(0);
	}
	return wait_code(pid);
}

static void sync_write(int fd)
{
	char c = 1;
	while (write(fd, &c, 1) < 0 && errno == EINTR)
		;
}

static bool sync_read(int fd)
{
	char c;
	ssize_t n;
	while ((n = read(fd, &c, 1)) < 0 && errno == EINTR)
		;
	return n == 1;
}

/* Descriptors of this process that refer to a memfd named `name`; counts
 * the writable ones in *rw. */
static int count_memfd_fds(const char *name, int *rw)
{
	char want[96];
	snprintf(want, sizeof want, "/memfd:%s ", name);
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	if (rw)
		*rw = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[300], link[256];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, link, sizeof link - 1);
		if (k <= 0)
			continue;
		link[k] = 0;
		if (strncmp(link, want, strlen(want)) != 0)
			continue;
		n++;
		int fl = fcntl(atoi(e->d_name), F_GETFL);
		if (rw && fl >= 0 && (fl & O_ACCMODE) == O_RDWR)
			(*rw)++;
	}
	closedir(d);
	return n;
}

static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n++;
	closedir(d);
	return n;
}

static int count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int n = 0, c;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static long meminfo_kb(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return -1;
	char line[256];
	long v = -1;
	size_t k = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, k)) {
			v = strtol(line + k, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Resident pages of [p, p+len) by mincore (page-cache residency for shmem). */
static size_t resident_pages(void *p, size_t len)
{
	size_t n = (len + 4095) / 4096, r = 0;
	unsigned char *v = malloc(n);
	if (!v || mincore(p, len, v) != 0) {
		free(v);
		return (size_t)-1;
	}
	for (size_t i = 0; i < n; i++)
		r += v[i] & 1;
	free(v);
	return r;
}

/* kB of the smaps field `key` for the mapping starting at addr. */
static long smaps_field(void *addr, const char *key)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	char line[512];
	bool in = false;
	long v = -1;
	size_t k = strlen(key);
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s == (uintptr_t)addr;
			continue;
		}
		if (in && !strncmp(line, key, k)) {
			v = strtol(line + k, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

static void assert_no_children(void)
{
	errno = 0;
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

/* ---- visibility, every direction ---------------------------------------------- */

/* Parent writes 0xA1 at [0, half) if it may; child checks, writes 0xB2 at
 * [half, len) if it may; parent checks.  Child exit codes: 10+ check fails. */
static void visibility_case(unsigned flags)
{
	const size_t len = 64 * 1024 + 100; /* not a page multiple on purpose */
	const size_t half = len / 2;
	bool pw = flags & PARENT_WRITE, cw = flags & CHILD_WRITE;
	int p2c[2], c2p[2];
	assert_int_equal(pipe(p2c), 0);
	assert_int_equal(pipe(c2p), 0);
	void *addr = NULL;
	int pid = sfork(len, flags, &addr);
	assert_true(pid >= 0);
	volatile unsigned char *m = addr;
	if (pid == 0) {
		close(p2c[1]);
		close(c2p[0]);
		if (!sync_read(p2c[0]))
			_exit(9);
		for (size_t i = 0; i < half; i++)
			if (m[i] != (pw ? 0xA1 : 0))
				_exit(10);
		if (cw)
			for (size_t i = half; i < len; i++)
				m[i] = 0xB2;
		else if (mprotect((void *)m, len, PROT_READ | PROT_WRITE) != -1 || errno != EACCES)
			_exit(11);
		if (!cw && probe_write((volatile char *)m + half) != 1000 + SIGSEGV)
			_exit(12);
		int rw;
		if (count_memfd_fds("sfork", &rw) != 0)
			_exit(13);
		sync_write(c2p[1]);
		_exit(0);
	}
	assert_non_null(addr);
	if (pw)
		memset((void *)m, 0xA1, half);
	else {
		assert_int_equal(mprotect((void *)m, len, PROT_READ | PROT_WRITE), -1);
		assert_int_equal(errno, EACCES);
		assert_int_equal(probe_write((volatile char *)m), 1000 + SIGSEGV);
	}
	assert_int_equal(count_memfd_fds("sfork", NULL), 0);
	close(p2c[0]);
	close(c2p[1]);
	sync_write(p2c[1]);
	if (!sync_read(c2p[0]))
		fail_msg("flags %#x: child failed with code %d", flags, wait_code(pid));
	for (size_t i = half; i < len; i++)
		if (m[i] != (cw ? 0xB2 : 0))
			fail_msg("flags %#x: parent sees %#x at %zu", flags, m[i], i);
	assert_int_equal(wait_code(pid), 0);
	assert_int_equal(munmap(addr, len), 0);
	close(p2c[1]);
	close(c2p[0]);
}

static void test_visibility_all_flags(void **state)
{
	(void)state;
	for (unsigned f = 0; f < 4; f++) {
		visibility_case(f);
		visibility_case(f | SFORK_POPULATE);
	}
	assert_no_children();
}

/* ---- read-only views: seals, several regions, names -------------------------- */

static void test_readonly_seal_and_multi(void **state)
{
	(void)state;
	mmk_sfork_region r[3];
	memset(r, 0, sizeof r);
	r[0] = (mmk_sfork_region){ .len = 8192, .flags = MMK_SFORK_PARENT_WRITE, .name = "to-child" };
	r[1] = (mmk_sfork_region){ .len = 3 * 4096, .flags = MMK_SFORK_CHILD_WRITE, .name = "to-parent" };
	r[2] = (mmk_sfork_region){ .len = 4096, .flags = MMK_SFORK_TWO_WAY | MMK_SFORK_POPULATE,
				   .name = "both", .huge = MMK_HUGE_OFF };
	int sync[2];
	assert_int_equal(pipe(sync), 0);
	pid_t pid = mmk_sfork(r, 3);
	assert_true(pid >= 0);
	if (pid == 0) {
		if (r[0].writable || !r[1].writable || !r[2].writable)
			_exit(10);
		if (r[0].fd != -1 || r[1].fd != -1)
			_exit(11);
		((char *)r[1].addr)[5] = 'c';
		((char *)r[2].addr)[7] = 'x';
		/* Re-opening the region writable through /proc (root only) must
		 * not give a writable mapping: F_SEAL_FUTURE_WRITE. */
		char path[128];
		snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)r[0].addr,
			 (unsigned long)r[0].addr + r[0].map_len);
		int fd = open(path, O_RDWR);
		if (fd < 0 && geteuid() == 0)
			_exit(13);
		if (fd >= 0) {
			void *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			close(fd);
			if (w != MAP_FAILED)
				_exit(12);
		}
		sync_write(sync[1]);
		_exit(0);
	}
	close(sync[1]);
	assert_false(r[1].writable);
	assert_true(r[0].writable);
	/* the names show in /proc/self/maps */
	FILE *f = fopen("/proc/self/maps", "r");
	assert_non_null(f);
	char line[512];
	int seen = 0;
	while (fgets(line, sizeof line, f))
		seen += strstr(line, "/memfd:to-child") || strstr(line, "/memfd:to-parent") ||
			strstr(line, "/memfd:both ");
	fclose(f);
	assert_int_equal(seen, 3);
	assert_int_equal(mprotect(r[1].addr, r[1].map_len, PROT_READ | PROT_WRITE), -1);
	assert_int_equal(errno, EACCES);
	if (!sync_read(sync[0]))
		fail_msg("child failed with code %d", wait_code(pid));
	assert_int_equal(((char *)r[1].addr)[5], 'c');
	assert_int_equal(((char *)r[2].addr)[7], 'x');
	assert_int_equal(wait_code(pid), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(mmk_shared_release(&r[i]), 0);
	assert_int_equal(mmk_shared_release(&r[0]), -EINVAL);
	close(sync[0]);
}

/* ---- populate ----------------------------------------------------------------- */

/* Residency: mincore reports page-cache residency for shmem (the same in
 * parent and child).  For hugetlb (AUTO picks it for populated 2 MiB
 * multiples when a pool exists) mincore reports page-table entries, which
 * fork does not copy, so the pool's free count is checked instead. */
static void test_populate_residency(void **state)
{
	(void)state;
	const size_t len = 4 << 20;
	for (int pop = 0; pop < 2; pop++) {
		for (unsigned dir = 0; dir < 4; dir++) {
			void *addr;
			long free0 = meminfo_kb("HugePages_Free:");
			int pid = sfork(len, dir | (pop ? SFORK_POPULATE : 0), &addr);
			assert_true(pid >= 0);
			bool hugetlb = smaps_field(addr, "KernelPageSize:") == 2048;
			size_t want = pop ? len / 4096 : 0;
			if (pid == 0)
				_exit(hugetlb || resident_pages(addr, len) == want ? 0 : 10);
			if (hugetlb) {
				long used = free0 - meminfo_kb("HugePages_Free:");
				if (used != (pop ? (long)(len >> 21) : 0))
					fail_msg("populate=%d dir=%u hugetlb: %ld pool pages used", pop, dir, used);
			} else {
				size_t got = resident_pages(addr, len);
				if (got != want)
					fail_msg("populate=%d dir=%u: %zu resident pages, want %zu", pop, dir, got, want);
			}
			assert_int_equal(wait_code(pid), 0);
			munmap(addr, len);
		}
	}
}

/* ---- exec survival -------------------------------------------------------------- */

/* Runs in the re-exec'd test binary: attach both regions, check them, reply. */
static int exec_helper(void)
{
	mmk_sfork_region rw, ro;
	if (mmk_shared_attach(NULL, "exec-rw", 0, &rw) != 0)
		return 20;
	if (mmk_shared_attach(getenv("MMK_TEST_ARGSPEC"), "exec-ro", 0, &ro) != 0)
		return 21;
	if (!rw.writable || ro.writable || rw.len != 10000 || ro.len != 5000)
		return 22;
	if (strcmp((char *)rw.addr, "from parent rw") || strcmp((char *)ro.addr, "from parent ro"))
		return 23;
	if (mprotect(ro.addr, ro.map_len, PROT_READ | PROT_WRITE) != -1 || errno != EACCES)
		return 24;
	if (probe_write(ro.addr) != 1000 + SIGSEGV)
		return 25;
	/* attach closed the inherited descriptors */
	if (count_memfd_fds("exec-rw", NULL) != 0 || count_memfd_fds("exec-ro", NULL) != 0)
		return 26;
	mmk_sfork_region none;
	if (mmk_shared_attach(NULL, "nope", 0, &none) != -ENOENT)
		return 27;
	strcpy((char *)rw.addr + 100, "reply from exec'd child");
	mmk_shared_release(&rw);
	mmk_shared_release(&ro);
	return 0;
}

static void test_exec_survival(void **state)
{
	(void)state;
	mmk_sfork_region r[2];
	memset(r, 0, sizeof r);
	r[0] = (mmk_sfork_region){ .len = 10000, .flags = MMK_SFORK_TWO_WAY | MMK_SFORK_EXEC, .name = "exec-rw" };
	r[1] = (mmk_sfork_region){ .len = 5000, .flags = MMK_SFORK_PARENT_WRITE | MMK_SFORK_EXEC, .name = "exec-ro" };
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t pid = mmk_sfork(r, 2);
	assert_true(pid >= 0);
	if (pid == 0) {
		int rw;
		/* exactly one descriptor per region, the read-only one not writable */
		if (r[0].fd < 0 || r[1].fd < 0)
			_exit(10);
		if (count_memfd_fds("exec-ro", &rw) != 1 || rw != 0)
			_exit(11);
		if (count_memfd_fds("exec-rw", &rw) != 1 || rw != 1)
			_exit(12);
		static char env[512], env2[600];
		if (mmk_shared_export(r, 2, env, sizeof env) <= 0)
			_exit(13);
		if (mmk_shared_export(r, 2, env2, 8) != -ERANGE)
			_exit(14);
		/* the argv convention: the same string passed as an argument
		 * (here through a variable the helper reads, standing for argv) */
		snprintf(env2, sizeof env2, "MMK_TEST_ARGSPEC=%s", env);
		if (!sync_read(go[0]))
			_exit(15);
		char *argv[] = { "test_sfork", EXEC_MARKER, NULL };
		char *envp[] = { env, env2, NULL };
		execve("/proc/self/exe", argv, envp);
		_exit(16);
	}
	strcpy(r[0].addr, "from parent rw");
	strcpy(r[1].addr, "from parent ro");
	sync_write(go[1]);
	int code = wait_code(pid);
	if (code != 0)
		fail_msg("exec'd helper failed with code %d", code);
	assert_string_equal((char *)r[0].addr + 100, "reply from exec'd child");
	assert_int_equal(count_memfd_fds("exec-rw", NULL), 0);
	mmk_shared_release(&r[0]);
	mmk_shared_release(&r[1]);
	close(go[0]);
	close(go[1]);
}

/* ---- trees ------------------------------------------------------------------------ */

static void test_tree(void **state)
{
	(void)state;
	/* Region 1: parent writes, child reads.  The child forks a grandchild
	 * (read-only like the child) and sforks a second region with it. */
	void *a1;
	int sync[2];
	assert_int_equal(pipe(sync), 0);
	int pid = sfork(4096, PARENT_WRITE, &a1);
	assert_true(pid >= 0);
	volatile char *m1 = a1;
	if (pid == 0) {
		if (!sync_read(sync[0]))
			_exit(9);
		if (m1[0] != 'P')
			_exit(10);
		void *a2;
		int g = sfork(4096, CHILD_WRITE | PARENT_WRITE, &a2);
		if (g < 0)
			_exit(11);
		volatile char *m2 = a2;
		if (g == 0) {
			/* grandchild: region 1 still read-only and visible */
			if (m1[0] != 'P')
				_exit(20);
			if (mprotect(a1, 4096, PROT_READ | PROT_WRITE) != -1 || errno != EACCES)
				_exit(21);
			if (probe_write(m1) != 1000 + SIGSEGV)
				_exit(22);
			m2[0] = 'G';
			/* a great-grandchild by plain fork keeps the writable view of region 2 */
			pid_t gg = fork();
			if (gg == 0) {
				m2[1] = 'H';
				_exit(0);
			}
			_exit(wait_code(gg) == 0 ? 0 : 23);
		}
		int c = wait_code(g);
		if (c != 0)
			_exit(c);
		if (m2[0] != 'G' || m2[1] != 'H')
			_exit(12);
		munmap(a2, 4096);
		_exit(0);
	}
	/* A second child forked plainly from the parent keeps write access. */
	pid_t w = fork();
	if (w == 0) {
		m1[0] = 'P';
		_exit(0);
	}
	assert_int_equal(wait_code(w), 0);
	assert_int_equal(m1[0], 'P');
	sync_write(sync[1]);
	int code = wait_code(pid);
	if (code != 0)
		fail_msg("tree child failed with code %d", code);
	munmap(a1, 4096);
	close(sync[0]);
	close(sync[1]);
}

/* ---- leaks ---------------------------------------------------------------------- */

static void test_loop_no_leak(void **state)
{
	(void)state;
	const int n = 1000;
	int fds0 = count_dir("/proc/self/fd");
	int maps0 = count_lines("/proc/self/maps");
	int shm0 = count_dir("/dev/shm");
	int sysv0 = count_lines("/proc/sysvipc/shm");
	long shmem0 = meminfo_kb("Shmem:");
	for (int i = 0; i < n; i++) {
		void *addr;
		unsigned flags = (unsigned)i % 4 | SFORK_POPULATE;
		int pid = sfork(1 << 20, flags, &addr);
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(0);
		assert_int_equal(munmap(addr, 1 << 20), 0);
		assert_int_equal(wait_code(pid), 0);
		/* failing calls must not leak either */
		mmk_sfork_region bad = { .len = 4096, .name = "bad name" };
		assert_int_equal(mmk_sfork(&bad, 1), -EINVAL);
	}
	assert_int_equal(count_dir("/proc/self/fd"), fds0);
	assert_int_equal(count_lines("/proc/self/maps"), maps0);
	assert_int_equal(count_dir("/dev/shm"), shm0);
	assert_int_equal(count_lines("/proc/sysvipc/shm"), sysv0);
	/* 1000 leaked 1 MiB regions would be ~1 GiB of shmem; other processes
	 * on the machine may move the counter a little. */
	long grew = meminfo_kb("Shmem:") - shmem0;
	if (grew > 256 * 1024)
		fail_msg("Shmem grew by %ld kB over %d sforks", grew, n);
	assert_no_children();
}

/* ---- bad arguments ----------------------------------------------------------------- */

static void test_bad_args(void **state)
{
	(void)state;
	void *addr = (void *)1;
	errno = 0;
	assert_int_equal(sfork(0, CHILD_WRITE, &addr), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(sfork(4096, 0x8, &addr), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(sfork(4096, 0x100, &addr), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(sfork(4096, CHILD_WRITE, NULL), -1);
	assert_int_equal(errno, EINVAL);
	assert_ptr_equal(addr, (void *)1);

	mmk_sfork_region r = { .len = 4096 };
	assert_int_equal(mmk_sfork(NULL, 1), -EINVAL);
	assert_int_equal(mmk_sfork(&r, 0), -EINVAL);
	assert_int_equal(mmk_sfork(&r, 65), -EINVAL);
	r.flags = 0x40;
	assert_int_equal(mmk_sfork(&r, 1), -EINVAL);
	r.flags = 0;
	r.huge = (mmk_huge_mode)7;
	assert_int_equal(mmk_sfork(&r, 1), -EINVAL);
	r.huge = MMK_HUGE_AUTO;
	r.name = "a:b";
	assert_int_equal(mmk_sfork(&r, 1), -EINVAL);
	r.name = "";
	assert_int_equal(mmk_sfork(&r, 1), -EINVAL);
	r.name = NULL;
	r.len = 0;
	assert_int_equal(mmk_sfork(&r, 1), -EINVAL);

	/* attach argument errors */
	mmk_sfork_region a;
	assert_int_equal(mmk_shared_attach("x:notanfd:w:10", NULL, 0, &a), -EINVAL);
	assert_int_equal(mmk_shared_attach("MMKIT_SHARED=x:9999:w:10", NULL, 0, &a), -EBADF);
	assert_int_equal(mmk_shared_attach("x:0:w:10", "y", 0, &a), -ENOENT);
	assert_int_equal(mmk_shared_attach("x:0:w:10", NULL, 0x80, &a), -EINVAL);
	assert_int_equal(mmk_shared_attach_fd(0, 0, &a), -EINVAL); /* stdin: not shmem */
	r.fd = -1;
	assert_int_equal(mmk_shared_export(&r, 1, (char[64]){ 0 }, 64), -EINVAL); /* no fd */

	/* ENOMEM: an address-space limit makes the mapping fail (not under
	 * ASan, which reserves terabytes of shadow). */
	if (!UNDER_ASAN) {
		pid_t pid = fork();
		if (pid == 0) {
			struct rlimit rl = { 256UL << 20, 256UL << 20 };
			FILE *f = fopen("/proc/self/status", "r");
			char line[256];
			long vm = 0;
			while (f && fgets(line, sizeof line, f))
				if (!strncmp(line, "VmSize:", 7))
					vm = strtol(line + 7, NULL, 10);
			if (f)
				fclose(f);
			rl.rlim_cur = rl.rlim_max = (rlim_t)vm * 1024 + (64UL << 20);
			if (setrlimit(RLIMIT_AS, &rl) != 0)
				_exit(10);
			void *p;
			errno = 0;
			int rc = sfork(1UL << 30, CHILD_WRITE | PARENT_WRITE, &p);
			if (rc == 0)
				_exit(0); /* (a grandchild: should not exist) */
			if (rc != -1 || errno != ENOMEM)
				_exit(11);
			errno = 0;
			if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
				_exit(12);
			_exit(0);
		}
		assert_int_equal(wait_code(pid), 0);
	}
	assert_no_children();
}

/* ---- huge pages ------------------------------------------------------------------- */

static bool thp_allowed_now(void)
{
	char buf[256] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled", "r");
	if (f) {
		if (!fgets(buf, sizeof buf, f))
			buf[0] = 0;
		fclose(f);
	}
	if (!strstr(buf, "[inherit]") && buf[0])
		return strstr(buf, "[always]") || strstr(buf, "[advise]") || strstr(buf, "[within_size]");
	f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
	buf[0] = 0;
	if (f) {
		if (!fgets(buf, sizeof buf, f))
			buf[0] = 0;
		fclose(f);
	}
	return strstr(buf, "[always]") || strstr(buf, "[advise]") || strstr(buf, "[within_size]") ||
	       strstr(buf, "[force]");
}

static long hugetlb_avail_now(void)
{
	long f = meminfo_kb("HugePages_Free:"), r = meminfo_kb("HugePages_Rsvd:");
	return f < 0 ? 0 : f - (r < 0 ? 0 : r);
}

static void test_huge_fallback(void **state)
{
	(void)state;
	const size_t len = 8 << 20;
	bool thp = thp_allowed_now();
	long pool = hugetlb_avail_now();
	fprintf(stderr, "# shmem THP allowed: %d, hugetlb pages available: %ld\n", thp, pool);

	/* AUTO with populate: whatever is allowed, never fails for lack of
	 * huge pages; with an empty pool it is never hugetlb. */
	mmk_sfork_region r = { .len = len, .flags = MMK_SFORK_TWO_WAY | MMK_SFORK_POPULATE };
	pid_t pid = mmk_sfork(&r, 1);
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(((volatile char *)r.addr)[len - 1] == 0 ? 0 : 10);
	assert_int_equal(wait_code(pid), 0);
	if (pool < 4)
		assert_int_not_equal(r.huge_kind, MMK_HUGE_HUGETLB);
	if (!thp && pool < 4)
		assert_int_equal(r.huge_kind, MMK_HUGE_NONE);
	mmk_shared_release(&r);

	/* AUTO without populate never uses huge pages (sparse access stays cheap). */
	r = (mmk_sfork_region){ .len = len, .flags = MMK_SFORK_TWO_WAY };
	pid = mmk_sfork(&r, 1);
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(wait_code(pid), 0);
	assert_int_equal(r.huge_kind, MMK_HUGE_NONE);
	mmk_shared_release(&r);

	/* REQUIRED: a clear error when nothing is allowed. */
	if (!thp && pool < 4) {
		r = (mmk_sfork_region){ .len = len, .flags = MMK_SFORK_TWO_WAY, .huge = MMK_HUGE_REQUIRED };
		assert_int_equal(mmk_sfork(&r, 1), MMK_ENOFEAT);
		assert_no_children();
	}
}

/* REQUIRED where huge pages are allowed: really huge mappings. */
static void test_huge_required(void **state)
{
	(void)state;
	const size_t len = 8 << 20;
	bool thp = thp_allowed_now();
	long pool = hugetlb_avail_now();
	if (!thp && pool < 4) {
		MMK_SKIP("no shared huge pages allowed (shmem_enabled never/deny, hugetlb pool empty); "
			 "the fallback and MMK_ENOFEAT are checked by test_huge_fallback");
		return;
	}
	mmk_sfork_region r = { .len = len, .flags = MMK_SFORK_TWO_WAY, .huge = MMK_HUGE_REQUIRED };
	pid_t pid = mmk_sfork(&r, 1);
	assert_true(pid >= 0);
	if (pid == 0) {
		memset(r.addr, 1, len);
		_exit(0);
	}
	assert_int_equal(wait_code(pid), 0);
	assert_int_not_equal(r.huge_kind, MMK_HUGE_NONE);
	if (pool < 4)
		assert_int_equal(r.huge_kind, MMK_HUGE_THP);
	memset(r.addr, 2, len);
	if (r.huge_kind == MMK_HUGE_THP) {
		long pmd = smaps_field(r.addr, "FilePmdMapped:");
		long shm = smaps_field(r.addr, "ShmemPmdMapped:");
		fprintf(stderr, "# THP region: FilePmdMapped %ld kB, ShmemPmdMapped %ld kB\n", pmd, shm);
		assert_true(pmd > 0 || shm > 0);
	} else {
		assert_int_equal(r.huge_kind, MMK_HUGE_HUGETLB);
		assert_int_equal(smaps_field(r.addr, "KernelPageSize:"), 2048);
		assert_int_equal(r.map_len % (2 << 20), 0);
	}
	mmk_shared_release(&r);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], EXEC_MARKER))
		return exec_helper();
	(void)mmk_test_seed();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_visibility_all_flags),
		cmocka_unit_test(test_readonly_seal_and_multi),
		cmocka_unit_test(test_populate_residency),
		cmocka_unit_test(test_exec_survival),
		cmocka_unit_test(test_tree),
		cmocka_unit_test(test_loop_no_leak),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_huge_fallback),
		cmocka_unit_test(test_huge_required),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
