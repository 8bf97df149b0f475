/*
 * rvm/io.c - every write and sync of an rvm store, with fault injection.
 *
 * Plain mode (no mmk_rvm_fault): pwritev loops and fdatasync/fsync.
 * Fault mode: each write and sync is an "op" (numbered from 1); at op
 * kill_at the process SIGKILLs itself, at op eio_at the op fails with -EIO,
 * at op crash_at a power cut is simulated.  Syncs are simulated: before a
 * sector (512 bytes) is first written after its file's last sync, its old
 * content is saved in a table; a sync forgets the file's saved sectors.  A
 * power cut puts back all saved sectors (drop), none (keep) or a random
 * subset (tear), then marks the I/O layer dead: every later op fails with
 * -EIO without touching the files, so what is on disk is exactly what a
 * machine losing power at that instant could have left.
 * Invariant: in fault mode, for every file, (current content with the
 * table's saved sectors put back) == content as of the file's last sync.
 */
#include "rvm/rvm_int.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void mmk__rvm_io_init(mmk__rvm_io *io, mmk_rvm_fault *f)
{
	memset(io, 0, sizeof *io);
	io->f = f;
	if (f) {
		f->ops = 0;
		f->crashed = false;
		io->rng = f->seed * 0x9e3779b97f4a7c15ULL + 0x1234567;
		if (!io->rng)
			io->rng = 1;
	}
}

void mmk__rvm_io_fini(mmk__rvm_io *io)
{
	if (io->tab)
		mmk__self_release(io->tab);
	io->tab = NULL;
	io->cap = io->n = 0;
}

static uint64_t rnd(mmk__rvm_io *io)
{
	uint64_t x = io->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	io->rng = x;
	return x * 2685821657736338717ULL;
}

static size_t slot_of(const mmk__rvm_io *io, uint64_t key)
{
	size_t i = (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 20) & (io->cap - 1);
	while (io->tab[i].key && io->tab[i].key != key)
		i = (i + 1) & (io->cap - 1);
	return i;
}

static int grow(mmk__rvm_io *io)
{
	size_t ncap = io->cap ? io->cap * 2 : 256;
	rvm_psec *nt = mmk__self_calloc(ncap, sizeof *nt);
	if (!nt)
		return -ENOMEM;
	rvm_psec *old = io->tab;
	size_t ocap = io->cap;
	io->tab = nt;
	io->cap = ncap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].key)
			io->tab[slot_of(io, old[i].key)] = old[i];
	if (old)
		mmk__self_release(old);
	return 0;
}

/* save the pre-write content of the sectors [off, off+len) of fd */
static int save_sectors(mmk__rvm_io *io, int fd, uint64_t off, size_t len)
{
	if (!len)
		return 0;
	uint64_t s0 = off / RVM_SECTOR, s1 = (off + len - 1) / RVM_SECTOR;
	for (uint64_t s = s0; s <= s1; s++) {
		if ((io->n + 1) * 2 > io->cap) {
			int rc = grow(io);
			if (rc)
				return rc;
		}
		uint64_t key = ((uint64_t)fd << 40) | (s + 1);
		size_t i = slot_of(io, key);
		if (io->tab[i].key)
			continue;
		io->tab[i].key = key;
		memset(io->tab[i].old, 0, RVM_SECTOR);
		ssize_t got = pread(fd, io->tab[i].old, RVM_SECTOR, (off_t)(s * RVM_SECTOR));
		if (got < 0) {
			io->tab[i].key = 0;
			return -errno;
		}
		io->n++;
	}
	return 0;
}

static void forget_fd(mmk__rvm_io *io, int fd)
{
	if (!io->n)
		return;
	/* rebuild without fd's entries (open addressing: no tombstones) */
	rvm_psec *old = io->tab;
	size_t ocap = io->cap;
	rvm_psec *nt = mmk__self_calloc(ocap, sizeof *nt);
	if (!nt) { /* keep them: a later crash then drops more than needed,
		      which only makes the simulation harsher */
		return;
	}
	io->tab = nt;
	io->n = 0;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].key && (int)(old[i].key >> 40) != fd) {
			io->tab[slot_of(io, old[i].key)] = old[i];
			io->n++;
		}
	mmk__self_release(old);
}

static void power_cut(mmk__rvm_io *io)
{
	mmk_rvm_fault *f = io->f;
	int mode = f->crash_mode;
	if (mode == MMK_RVM_CRASH_RANDOM)
		mode = 1 + (int)(rnd(io) % 3);
	for (size_t i = 0; i < io->cap; i++) {
		rvm_psec *p = &io->tab[i];
		if (!p->key)
			continue;
		bool put_back = mode == MMK_RVM_CRASH_DROP ||
				(mode == MMK_RVM_CRASH_TEAR && (rnd(io) & 1));
		if (put_back) {
			int fd = (int)(p->key >> 40);
			uint64_t s = (p->key & ((1ULL << 40) - 1)) - 1;
			ssize_t w = pwrite(fd, p->old, RVM_SECTOR, (off_t)(s * RVM_SECTOR));
			(void)w; /* best effort: the files are the test's scratch */
		}
	}
	mmk__rvm_io_fini(io);
	io->dead = true;
	f->crashed = true;
}

/* Returns 1 if the op may proceed, or a negative error. */
static int op_begin(mmk__rvm_io *io, unsigned kind)
{
	if (!io->f)
		return 1;
	if (io->dead)
		return -EIO;
	mmk_rvm_fault *f = io->f;
	unsigned long long n = ++f->ops;
	if (f->kill_at && n == f->kill_at)
		raise(SIGKILL);
	if (f->crash_at && n == f->crash_at) {
		power_cut(io);
		return -EIO;
	}
	if (f->eio_at && n == f->eio_at && (!f->eio_kinds || (f->eio_kinds & kind)))
		return -EIO;
	return 1;
}

int mmk__rvm_io_writev(mmk__rvm_io *io, int fd, const struct iovec *iov, int n, uint64_t off)
{
	int rc = op_begin(io, MMK_RVM_OP_WRITE);
	if (rc < 0)
		return rc;
	if (io->f) {
		size_t total = 0;
		for (int i = 0; i < n; i++)
			total += iov[i].iov_len;
		rc = save_sectors(io, fd, off, total);
		if (rc)
			return rc;
	}
	/* copy of the vector we can advance over short writes */
	struct iovec local[64];
	while (n > 0) {
		int k = n < 64 ? n : 64;
		memcpy(local, iov, (size_t)k * sizeof *iov);
		int first = 0;
		while (first < k) {
			ssize_t w = pwritev(fd, local + first, k - first, (off_t)off);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (w == 0)
				return -EIO;
			off += (uint64_t)w;
			while (first < k && (size_t)w >= local[first].iov_len) {
				w -= (ssize_t)local[first].iov_len;
				first++;
			}
			if (first < k) {
				local[first].iov_base = (char *)local[first].iov_base + w;
				local[first].iov_len -= (size_t)w;
			}
		}
		iov += k;
		n -= k;
	}
	return 0;
}

int mmk__rvm_io_write(mmk__rvm_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
	struct iovec v = { (void *)buf, len };
	return mmk__rvm_io_writev(io, fd, &v, 1, off);
}

int mmk__rvm_io_sync(mmk__rvm_io *io, int fd, bool data)
{
	int rc = op_begin(io, MMK_RVM_OP_SYNC);
	if (rc < 0)
		return rc;
	if (io->f) {
		forget_fd(io, fd);
		return 0;
	}
	if ((data ? fdatasync(fd) : fsync(fd)) < 0)
		return -errno;
	return 0;
}

int mmk__rvm_io_read(int fd, void *buf, size_t len, uint64_t off)
{
	return mmk__pread_all(fd, buf, len, off, -EIO);
}
