/*
 * prof/ring.c - the profiler's shared-memory ring (single writer, lock-free
 * readers).
 *
 * Invariants:
 *  - The ring lives in a sealed memfd (no grow/shrink): a header page, then
 *    `capacity` slots of 80 bytes: a sequence word and 9 payload words.  The
 *    writer's mapping is populated at creation (no page faults while
 *    sampling).
 *  - Record n (0-based, n = number of records written before it) goes to
 *    slot n % capacity.  While the writer fills it the slot's sequence is
 *    2n+1 (odd), afterwards 2n+2.  The header's `head` is n+1 once record n
 *    is complete (release), so head only ever names complete records.
 *  - A reader of record p loads the sequence (acquire), copies the payload
 *    with relaxed atomic loads, fences (acquire) and re-loads the sequence:
 *    the copy is valid only if both loads equal 2p+2.  Otherwise the slot was
 *    overwritten and the reader skips ahead, counting what it missed.
 *  - Every shared word is accessed atomically, so concurrent readers are
 *    free of data races in the C11 sense.
 */
#include <mmkit/prof.h>

#include "prof/prof_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RING_MAGIC 0x676e697266727077ULL /* "wprfring" */
#define RING_VERSION 1
#define RING_WORDS 9
#define RING_HDR 4096

typedef struct ring_hdr {
	uint64_t magic;
	uint32_t version, words;
	uint64_t capacity;
	uint64_t period_ns;
	uint64_t pad0[4];
	_Atomic uint64_t head; /* own cache line */
	uint64_t pad1[7];
} ring_hdr;

typedef struct ring_slot {
	_Atomic uint64_t seq;
	_Atomic uint64_t w[RING_WORDS];
} ring_slot;

_Static_assert(sizeof(mmk_prof_record) == RING_WORDS * 8, "record is 9 words");
_Static_assert(sizeof(ring_slot) == 80, "slot is 80 bytes");

struct mmk_prof_ring {
	int fd;             /* memfd (writer) or -1 (reader) */
	bool writer;
	void *base;
	size_t len;
	ring_hdr *hdr;
	ring_slot *slots;
	uint64_t cap;
};

static size_t ring_len(uint64_t cap)
{
	return MMK__PAGE_UP(RING_HDR + cap * sizeof(ring_slot));
}

int mmk_prof_ring_create(mmk_prof_ring **out, size_t records, uint64_t period_ns)
{
	if (!out)
		return -EINVAL;
	if (records == 0)
		records = MMK_PROF_RING_DEFAULT;
	if (records > (1u << 26))
		return -EINVAL;
	mmk_prof_ring *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->cap = records;
	r->len = ring_len(records);
	r->writer = true;
	r->fd = memfd_create("mmkit-prof-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int err;
	if (r->fd < 0) {
		err = -errno;
		goto fail;
	}
	if (ftruncate(r->fd, (off_t)r->len) < 0 ||
	    fcntl(r->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		err = -errno;
		goto fail;
	}
	/* populated: the writer never takes a page fault in a sample */
	r->base = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, 0);
	if (r->base == MAP_FAILED) {
		err = -errno;
		goto fail;
	}
	r->hdr = r->base;
	r->slots = (ring_slot *)((char *)r->base + RING_HDR);
	r->hdr->version = RING_VERSION;
	r->hdr->words = RING_WORDS;
	r->hdr->capacity = records;
	r->hdr->period_ns = period_ns;
	atomic_store_explicit(&r->hdr->head, 0, memory_order_relaxed);
	/* magic last: a reader that sees it sees the rest */
	__atomic_store_n(&r->hdr->magic, RING_MAGIC, __ATOMIC_RELEASE);
	*out = r;
	return 0;
fail:
	if (r->fd >= 0)
		close(r->fd);
	free(r);
	return err;
}

int mmk_prof_ring_attach(mmk_prof_ring **out, int fd)
{
	if (!out || fd < 0)
		return -EINVAL;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((size_t)st.st_size < RING_HDR)
		return -EINVAL;
	ring_hdr *h = mmap(NULL, RING_HDR, PROT_READ, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED)
		return -errno;
	uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
	uint64_t cap = h->capacity;
	bool ok = magic == RING_MAGIC && h->version == RING_VERSION && h->words == RING_WORDS &&
		  cap > 0 && cap <= (1u << 26) && ring_len(cap) <= (size_t)st.st_size;
	munmap(h, RING_HDR);
	if (!ok)
		return -EINVAL;
	mmk_prof_ring *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->fd = -1;
	r->cap = cap;
	r->len = ring_len(cap);
	r->base = mmap(NULL, r->len, PROT_READ, MAP_SHARED, fd, 0);
	if (r->base == MAP_FAILED) {
		int err = -errno;
		free(r);
		return err;
	}
	r->hdr = r->base;
	r->slots = (ring_slot *)((char *)r->base + RING_HDR);
	*out = r;
	return 0;
}

int mmk_prof_ring_fd_readonly(const mmk_prof_ring *r)
{
	if (!r || r->fd < 0)
		return -EINVAL;
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", r->fd);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

void mmk_prof_ring_destroy(mmk_prof_ring *r)
{
	if (!r)
		return;
	if (r->base)
		munmap(r->base, r->len);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

int mmk_prof_ring_write(mmk_prof_ring *r, const mmk_prof_record *rec)
{
	if (!r || !rec)
		return -EINVAL;
	if (!r->writer)
		return -EROFS;
	uint64_t n = atomic_load_explicit(&r->hdr->head, memory_order_relaxed);
	ring_slot *s = &r->slots[n % r->cap];
	uint64_t w[RING_WORDS];
	memcpy(w, rec, sizeof w);
	atomic_store_explicit(&s->seq, 2 * n + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (int i = 0; i < RING_WORDS; i++)
		atomic_store_explicit(&s->w[i], w[i], memory_order_relaxed);
	atomic_store_explicit(&s->seq, 2 * n + 2, memory_order_release);
	atomic_store_explicit(&r->hdr->head, n + 1, memory_order_release);
	return 0;
}

uint64_t mmk_prof_ring_head(const mmk_prof_ring *r)
{
	return atomic_load_explicit(&r->hdr->head, memory_order_acquire);
}

size_t mmk_prof_ring_capacity(const mmk_prof_ring *r)
{
	return (size_t)r->cap;
}

uint64_t mmk_prof_ring_period_ns(const mmk_prof_ring *r)
{
	return r->hdr->period_ns;
}

uint64_t mmk_prof_ring_oldest(const mmk_prof_ring *r)
{
	uint64_t h = mmk_prof_ring_head(r);
	return h > r->cap ? h - r->cap : 0;
}

int mmk_prof_ring_read(const mmk_prof_ring *r, uint64_t *pos, mmk_prof_record *out, uint64_t *missed)
{
	if (!r || !pos || !out)
		return -EINVAL;
	for (;;) {
		uint64_t p = *pos;
		uint64_t h = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
		if (p >= h)
			return 0;
		if (h - p > r->cap) { /* already overwritten: skip to the oldest held */
			uint64_t oldest = h - r->cap;
			if (missed)
				*missed += oldest - p;
			*pos = p = oldest;
		}
		ring_slot *s = &r->slots[p % r->cap];
		uint64_t s1 = atomic_load_explicit(&s->seq, memory_order_acquire);
		if (s1 != 2 * p + 2) {
			if (s1 > 2 * p + 2 && missed) /* lapped while we looked */
				*missed += 1;
			if (s1 > 2 * p + 2)
				*pos = p + 1;
			continue;
		}
		uint64_t w[RING_WORDS];
		for (int i = 0; i < RING_WORDS; i++)
			w[i] = atomic_load_explicit(&s->w[i], memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		uint64_t s2 = atomic_load_explicit(&s->seq, memory_order_relaxed);
		if (s2 != s1) {
			if (missed)
				*missed += 1;
			*pos = p + 1;
			continue;
		}
		memcpy(out, w, sizeof *out);
		*pos = p + 1;
		return 1;
	}
}
