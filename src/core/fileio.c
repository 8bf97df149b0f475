/*
 * core/fileio.c - whole-buffer positional reads and writes.
 *
 * Invariants: a call returns 0 only when every byte was transferred; EINTR
 * is retried; a write that makes no progress is -EIO; a read that meets end
 * of file early returns the caller's chosen error (a truncated image and a
 * truncated log mean different things to their callers).  Requests are cut
 * into chunks of at most 1 GiB (Linux transfers at most ~2 GiB per call).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core/core.h"

#include <errno.h>
#include <unistd.h>

#define CHUNK ((size_t)1 << 30)

int mmk__pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t w = pwrite(fd, p, len > CHUNK ? CHUNK : len, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		p += w;
		len -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

int mmk__pread_all(int fd, void *buf, size_t len, uint64_t off, int eof_err)
{
	char *p = buf;
	while (len) {
		ssize_t r = pread(fd, p, len > CHUNK ? CHUNK : len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return eof_err;
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}
