/*
 * sys/uffd.c - userfaultfd: open, feature negotiation, register, write-protect.
 *
 * Invariants: a mmk__uffd holds exactly one descriptor (fd < 0 when closed);
 * the UFFDIO_API handshake is done once per descriptor, with the exact
 * feature set the caller asked for, so the kernel enables nothing unasked
 * (e.g. WP_ASYNC changes fault semantics for every registered range).
 * Opening tries UFFD_USER_MODE_ONLY first: with vm.unprivileged_userfaultfd=0
 * (the default) it is the only way an unprivileged process gets a uffd, and
 * mmkit never needs kernel-mode faults.
 */
#include "sys/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int raw_open(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, flags | O_CLOEXEC | UFFD_USER_MODE_ONLY);
	if (fd < 0 && (errno == EINVAL || errno == EPERM)) {
		/* Pre-5.11 kernels reject the flag (EINVAL); privileged callers
		 * may still open a full uffd. */
		int e = errno;
		fd = (int)syscall(SYS_userfaultfd, flags | O_CLOEXEC);
		if (fd < 0 && errno == EPERM && e == EPERM)
			errno = EPERM;
	}
	return fd < 0 ? -errno : fd;
}

int mmk__uffd_open(mmk__uffd *u, uint64_t features, int flags)
{
	u->fd = -1;
	u->features = 0;
	int fd = raw_open(flags & O_NONBLOCK);
	if (fd < 0)
		return fd;
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;
		close(fd);
		return e == EINVAL ? -EOPNOTSUPP : -e;
	}
	if ((api.features & features) != features) {
		close(fd);
		return -EOPNOTSUPP;
	}
	u->fd = fd;
	u->features = api.features;
	return 0;
}

void mmk__uffd_close(mmk__uffd *u)
{
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
}

int mmk__uffd_query_features(uint64_t *features, bool *user_mode_only)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	*user_mode_only = fd >= 0;
	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int rc = ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : 0;
	close(fd);
	*features = rc == 0 ? api.features : 0;
	return rc;
}

int mmk__uffd_register(mmk__uffd *u, uintptr_t addr, size_t len, uint64_t modes)
{
	struct uffdio_register reg = {
		.range = { .start = addr, .len = len },
		.mode = modes,
	};
	return ioctl(u->fd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int mmk__uffd_unregister(mmk__uffd *u, uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };
	return ioctl(u->fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

int mmk__uffd_wp(mmk__uffd *u, uintptr_t addr, size_t len, bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = addr, .len = len },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};
	return ioctl(u->fd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

