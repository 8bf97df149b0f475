/*
 * pagetab.c - page address -> record map: Robin Hood linear probing.
 *
 * Invariants (checked by the tests through the public API):
 *  - slots[] has nslots entries, nslots a multiple of 16 and >= MIN_SLOTS;
 *    count <= maxload = 0.85 * nslots < nslots, so every probe sequence
 *    reaches an empty slot.  A table created or reserved for n entries
 *    gets nslots >= n / 0.70 (slots_for()); growth is by ~1.25x (grow()).
 *  - Fast paths (insert, remove) touch the home slot, and for remove the
 *    next one, and change nothing else: an empty home slot means the page
 *    is absent (an entry with that home would lie there or after it with
 *    no gap) and can take it at displacement 0; an entry found at its home
 *    can be cleared without a backward shift when the next slot is empty
 *    or holds an entry at its own home (never for the last slot, whose
 *    successor is slot 0).  Everything else takes the general code.
 *  - A slot is empty iff its key word is 0.  An occupied slot's key word is
 *    addr | field << 2 | flags with field = min(disp + 1, FSAT) >= 1, where
 *    disp = (slot - home(addr)) mod nslots.  field == FSAT means "disp is at
 *    least FSAT - 1: recompute it from the hash".  Flags: DIRTY (bit 0) and
 *    PENDING (bit 1, only inside mmk_pagetab_foreach_dirty: the entry has
 *    been removed logically; lookups never match it since the bit is part of
 *    the compared address bits).
 *  - Robin Hood order: along a cluster, homes never decrease, i.e. for an
 *    entry at slot p with home h, every slot from h to p - 1 holds an entry
 *    whose displacement there is >= its distance from h.  Hence a probe for
 *    addr at distance d may stop at the first slot whose resident has disp < d
 *    (or is empty).  Insertion shifts the tail of the cluster forward by one;
 *    deletion shifts it back by one until an empty slot or an entry at its
 *    home (backward shift, no tombstones).
 *  - home(addr) = fastrange(hash(vpn >> 4), nslots / 16) * 16 + (vpn & 15):
 *    the 16 pages of an aligned 64 KiB group share a 16-slot bucket.
 *  - Dirty index: every DIRTY or PENDING slot lies in a 32-slot block whose
 *    bit is set in dbits, and the blocks with their bit set are exactly
 *    dlist[0 .. dlen), each once.  A set bit may be stale (no dirty slot in
 *    the block).  ndirty is the exact number of DIRTY slots.  Entries that
 *    move (insertion/deletion shifts) carry their DIRTY flag and mark their
 *    new block.  pbits is zero
 *    outside foreach_dirty; inside it marks listed blocks found empty, to be
 *    dropped from the list when the walk ends (set before a block is
 *    scanned, so a mark_dirty() by the callback anywhere in it keeps it).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <mmkit/pagetab.h>

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef NDEBUG
#include <stdatomic.h>
#endif

typedef struct {
	uintptr_t key;
	void *rec;
} slot_t;

#define F_DIRTY ((uintptr_t)1)
#define F_PENDING ((uintptr_t)2)
#define FSHIFT 2
#define FMASK ((uintptr_t)0xFFC)
#define FSAT ((uintptr_t)0x3FF)
#define FSATW (FSAT << FSHIFT)
#define LOWMASK ((uintptr_t)0xFFF)
/* Bits compared against an address: PENDING is kept so it never matches. */
#define MATCHMASK (~(FMASK | F_DIRTY))
#define MIN_SLOTS 64
/* 32 slots per dirty block: a walk scans 512 bytes per listed block; with
 * 64-slot blocks, walks of tables sized for load 0.70 took 1.9-2.6x as
 * long as at 0.85 (bench_pagetab, 1 % dirty); with 32, 1.3-1.7x, and
 * clearing is as fast as before.  Costs ~0.13 byte per slot. */
#define BSHIFT 5
#define HASH_MUL 0x9E3779B97F4A7C15ull

struct mmk_pagetab {
	slot_t *slots;
	size_t nslots;
	uint64_t nbuckets; /* nslots / 16 */
	size_t count;
	size_t maxload;
	unsigned shift;    /* log2(page size) */
	uintptr_t pmask;   /* page size - 1 */
	void *raw;         /* allocation holding slots, dbits, pbits, dlist */
	size_t rawbytes;
	uint64_t *dbits;
	uint64_t *pbits;
	uint32_t *dlist;
	size_t dlen;
	size_t nblocks;
	size_t ndirty;
	size_t npending;
	size_t npbits;     /* number of bits set in pbits */
	unsigned iter;     /* nonzero inside a foreach */
#ifndef NDEBUG
	unsigned long mods;      /* bumped by every structural change */
	atomic_uintptr_t writer; /* thread currently modifying, or 0 */
	unsigned wdepth;
#endif
};

/* ---- debug-only single-writer check ---------------------------------- */

#ifndef NDEBUG
static _Thread_local char tls_self;
#define SELF ((uintptr_t)&tls_self)

static void writer_enter(mmk_pagetab *pt)
{
	uintptr_t cur = atomic_load(&pt->writer);
	if (cur != SELF) {
		uintptr_t zero = 0;
		bool ok = atomic_compare_exchange_strong(&pt->writer, &zero, SELF);
		assert(ok && "mmk_pagetab: two threads modify the table at once");
		(void)ok;
	}
	pt->wdepth++;
}

static void writer_exit(mmk_pagetab *pt)
{
	if (--pt->wdepth == 0)
		atomic_store(&pt->writer, 0);
}

static void reader_check(const mmk_pagetab *pt)
{
	uintptr_t cur = atomic_load_explicit(
		&((mmk_pagetab *)pt)->writer, memory_order_relaxed);
	assert((cur == 0 || cur == SELF) &&
	       "mmk_pagetab: read while another thread modifies the table");
	(void)cur;
}
#define WRITER_ENTER(pt) writer_enter(pt)
#define WRITER_EXIT(pt) writer_exit(pt)
#define READER_CHECK(pt) reader_check(pt)
#define MODIFIED(pt) ((pt)->mods++)
#else
#define WRITER_ENTER(pt) ((void)0)
#define WRITER_EXIT(pt) ((void)0)
#define READER_CHECK(pt) ((void)0)
#define MODIFIED(pt) ((void)0)
#endif

/* ---- hashing ---------------------------------------------------------- */

static inline uint64_t mulhi64(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
	return (uint64_t)(((unsigned __int128)a * b) >> 64);
#else
	uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
	uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
	uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
	return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
#endif
}

static inline size_t home_of(const mmk_pagetab *pt, uintptr_t addr)
{
	uint64_t vpn = (uint64_t)addr >> pt->shift;
	uint64_t h = (vpn >> 4) * HASH_MUL;
	return (size_t)(mulhi64(h, pt->nbuckets) << 4) + (size_t)(vpn & 15);
}

static inline size_t next_slot(const mmk_pagetab *pt, size_t i)
{
	return i + 1 == pt->nslots ? 0 : i + 1;
}

/* True displacement of key word k stored at slot i (needed only for
 * displacements >= FSAT - 1, which the key word cannot hold). */
__attribute__((noinline, cold))
static size_t disp_slow(const mmk_pagetab *pt, uintptr_t k, size_t i)
{
	size_t h = home_of(pt, k & ~LOWMASK);
	return i >= h ? i - h : i + pt->nslots - h;
}

static inline size_t disp_at(const mmk_pagetab *pt, uintptr_t k, size_t i)
{
	uintptr_t f = (k & FMASK) >> FSHIFT;
	return f < FSAT ? (size_t)f - 1 : disp_slow(pt, k, i);
}

static inline uintptr_t field_for(size_t disp)
{
	return (disp + 1 < FSAT ? (uintptr_t)disp + 1 : FSAT) << FSHIFT;
}

/* ---- dirty blocks ----------------------------------------------------- */

static inline void mark_block(mmk_pagetab *pt, size_t slot)
{
	size_t b = slot >> BSHIFT;
	uint64_t bit = (uint64_t)1 << (b & 63);
	uint64_t *w = &pt->dbits[b >> 6];
	if (!(*w & bit)) {
		*w |= bit;
		pt->dlist[pt->dlen++] = (uint32_t)b;
	} else if (pt->npbits && (pt->pbits[b >> 6] & bit)) {
		/* a block about to be dropped from the list gets a dirty entry */
		pt->pbits[b >> 6] &= ~bit;
		pt->npbits--;
	}
}

/* ---- probing ---------------------------------------------------------- */

/*
 * Look for addr.  Returns true with *pos = its slot, or false with *pos =
 * the slot where it belongs and *dist = its displacement there.
 */
static inline bool probe_from(const mmk_pagetab *pt, uintptr_t addr, size_t i,
			      size_t d, size_t *pos, size_t *dist)
{
	const slot_t *s = pt->slots;
	size_t n = pt->nslots;
	uintptr_t t = (uintptr_t)(d + 1) << FSHIFT;
	for (;;) {
		uintptr_t k = s[i].key;
		uintptr_t f = k & FMASK;
		if (f < t && (f != FSATW ||
			      disp_slow(pt, k, i) < (size_t)(t >> FSHIFT) - 1)) {
			*pos = i;
			*dist = (size_t)(t >> FSHIFT) - 1;
			return false;
		}
		if ((k & MATCHMASK) == addr) {
			*pos = i;
			return true;
		}
		t += (uintptr_t)1 << FSHIFT;
		if (++i == n)
			i = 0;
	}
}

static inline bool probe(const mmk_pagetab *pt, uintptr_t addr, size_t *pos,
			 size_t *dist)
{
	return probe_from(pt, addr, home_of(pt, addr), 0, pos, dist);
}

/* The rest of a lookup that met a saturated displacement field. */
__attribute__((noinline, cold))
static void *lookup_slow(const mmk_pagetab *pt, uintptr_t addr, size_t i, size_t d)
{
	size_t pos, dist;
	return probe_from(pt, addr, i, d, &pos, &dist) ? pt->slots[pos].rec : NULL;
}

/*
 * Store key word k (address and flags, field included) at slot i; if i is
 * occupied, the rest of the cluster moves forward by one slot (a single
 * pass carrying each displaced entry to the next slot).  Returns the slot
 * that was empty before: i, or the end of the shifted run.
 */
static size_t put_at(mmk_pagetab *pt, size_t i, uintptr_t k, void *rec)
{
	slot_t *s = pt->slots;
	size_t n = pt->nslots;
	if (k & F_DIRTY)
		mark_block(pt, i);
	for (;;) {
		uintptr_t ok = s[i].key;
		void *orec = s[i].rec;
		s[i].key = k;
		s[i].rec = rec;
		if (!ok)
			return i;
		if ((ok & FMASK) != FSATW)
			ok += (uintptr_t)1 << FSHIFT;
		k = ok;
		rec = orec;
		if (++i == n)
			i = 0;
		if ((k & F_DIRTY) && !(i & ((1u << BSHIFT) - 1)))
			mark_block(pt, i); /* moved into the next block */
	}
}

/* Delete the entry at slot i (backward shift). */
static void delete_at(mmk_pagetab *pt, size_t i)
{
	slot_t *s = pt->slots;
	size_t hole = i;
	size_t j = next_slot(pt, i);
	for (;;) {
		uintptr_t k = s[j].key;
		uintptr_t f = k & FMASK;
		if (f <= ((uintptr_t)1 << FSHIFT))
			break; /* empty, or at its home */
		if (f != FSATW)
			k -= (uintptr_t)1 << FSHIFT;
		else
			k = (k & ~FMASK) | field_for(disp_slow(pt, k, j) - 1);
		s[hole].key = k;
		s[hole].rec = s[j].rec;
		if ((k & F_DIRTY) && (hole >> BSHIFT) != (j >> BSHIFT))
			mark_block(pt, hole);
		hole = j;
		j = next_slot(pt, j);
	}
	s[hole].key = 0;
	s[hole].rec = NULL;
}

/* An empty slot (one exists since count < nslots). */
static size_t find_empty(const mmk_pagetab *pt)
{
	size_t i = 0;
	while (pt->slots[i].key)
		i++;
	return i;
}

/* ---- allocation ------------------------------------------------------- */

/* Arrays of at least this size are mapped directly and asked for
 * transparent huge pages: fewer TLB misses on random probes, and fresh
 * zeroed memory without a memset. */
#define BIG_ALLOC ((size_t)1 << 21)

/* Zeroed memory of *bytes bytes (rounded up to what is really taken). */
static void *alloc_zeroed(size_t *bytes)
{
	if (*bytes < BIG_ALLOC)
		return calloc(1, *bytes);
	size_t len = (*bytes + 4095) & ~(size_t)4095;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	(void)madvise(p, len, MADV_HUGEPAGE); /* a hint: failure is fine */
#endif
	*bytes = len;
	return p;
}

static void free_zeroed(void *p, size_t bytes)
{
	if (!p)
		return;
	if (bytes < BIG_ALLOC)
		free(p);
	else
		munmap(p, bytes);
}

/*
 * Slots for a table created or reserved for n entries: load 0.70 at n
 * (22.9 bytes per page), well inside the 24-byte bound, because the
 * probe and shift lengths of linear probing grow fast with the load
 * (churn at n resident pages: 1.5-1.8x faster than at 0.85).  Growth
 * still waits for 0.85 (maxload): from there 1.25x is all the bound allows.
 */
static size_t slots_for(size_t n)
{
	/* smallest multiple of 16 with n <= 0.70 * slots (n * 100 must not
	 * wrap: a wrapped product gave a small table for a huge n) */
	if (n > SIZE_MAX / 128)
		return 0;
	size_t s = (n * 100 + 69) / 70;
	s = (s + 15) & ~(size_t)15;
	return s < MIN_SLOTS ? MIN_SLOTS : s;
}

/* ---- rehash ----------------------------------------------------------- */

/*
 * Place an entry with new home h during a rehash.  State: every slot from
 * lim on is empty, and every slot from last_h to lim - 1 is occupied, where
 * last_h is the largest home placed so far by the direct path.  An entry
 * with h >= last_h then belongs at max(h, lim): appending it keeps the
 * Robin Hood order.  Others (out of order, or wrapping round the end) take
 * the general path.
 */
struct rehash_state {
	size_t lim, last_h;
};

static inline void rehash_place(mmk_pagetab *pt, size_t h, uintptr_t nk,
				void *rec, struct rehash_state *st)
{
	if (h >= st->last_h) {
		size_t p = h >= st->lim ? h : st->lim;
		if (p < pt->nslots) {
			pt->slots[p].key = nk | field_for(p - h);
			pt->slots[p].rec = rec;
			if (nk & F_DIRTY)
				mark_block(pt, p);
			st->lim = p + 1;
			st->last_h = h;
			return;
		}
	}
	size_t pos, d = 0;
	bool found = probe(pt, nk & ~LOWMASK, &pos, &d);
	assert(!found);
	(void)found;
	size_t e = put_at(pt, pos, nk | field_for(d), rec);
	if (e < pos)
		st->lim = st->last_h = SIZE_MAX; /* wrapped: no more shortcuts */
	else if (e >= st->lim)
		st->lim = e + 1;
}

/*
 * Insert every entry of old[0 .. oldn) into the (empty) new arrays.  The
 * old table is walked from its first empty slot, in cluster order: since
 * fastrange() is monotone in the hash, entries come nearly sorted by their
 * new home (only entries of one old bucket that land in different new
 * buckets come out of order), so most take the append path.
 */
static void reinsert_all(mmk_pagetab *pt, const slot_t *old, size_t oldn)
{
	struct rehash_state st = {0, 0};
	size_t s0 = 0;
	while (old[s0].key)
		s0++;
	size_t i = s0;
	for (size_t step = 1; step < oldn; step++) {
		if (++i == oldn)
			i = 0;
		uintptr_t k = old[i].key;
		if (!k)
			continue;
		uintptr_t nk = k & ~(LOWMASK & ~F_DIRTY); /* address | dirty */
		rehash_place(pt, home_of(pt, k & ~LOWMASK), nk, old[i].rec, &st);
	}
}

/*
 * Replace the arrays with ones of nslots slots and re-insert every entry.
 * On -ENOMEM the table is unchanged.
 */
static int rehash(mmk_pagetab *pt, size_t nslots)
{
	size_t nblocks = (nslots + ((size_t)1 << BSHIFT) - 1) >> BSHIFT;
	size_t nwords = (nblocks + 63) >> 6;
	if (nslots == 0 || nblocks > UINT32_MAX ||
	    nslots > (SIZE_MAX - 4096) / sizeof(slot_t) / 2)
		return -ENOMEM;
	size_t sbytes = nslots * sizeof(slot_t);
	size_t bytes = 64 + sbytes + 2 * nwords * 8 + nblocks * 4;
	void *raw = alloc_zeroed(&bytes);
	if (!raw)
		return -ENOMEM;

	slot_t *old = pt->slots;
	size_t oldn = pt->nslots;
	void *oldraw = pt->raw;
	size_t oldbytes = pt->rawbytes;

	uintptr_t base = ((uintptr_t)raw + 63) & ~(uintptr_t)63;
	pt->raw = raw;
	pt->rawbytes = bytes;
	pt->slots = (slot_t *)base;
	pt->dbits = (uint64_t *)(base + sbytes);
	pt->pbits = pt->dbits + nwords;
	pt->dlist = (uint32_t *)(pt->pbits + nwords);
	pt->dlen = 0;
	pt->npbits = 0;
	pt->nblocks = nblocks;
	pt->nslots = nslots;
	pt->nbuckets = nslots >> 4;
	pt->maxload = (size_t)((unsigned long long)nslots * 17 / 20);
	MODIFIED(pt);

	if (old && pt->count)
		reinsert_all(pt, old, oldn);
	free_zeroed(oldraw, oldbytes);
	return 0;
}

static int grow(mmk_pagetab *pt)
{
	size_t add = pt->nslots / 4;
	if (add < 64)
		add = 64;
	if (pt->nslots > SIZE_MAX - add - 16)
		return -ENOMEM;
	return rehash(pt, (pt->nslots + add + 15) & ~(size_t)15);
}

/* ---- public API ------------------------------------------------------- */

int mmk_pagetab_create(mmk_pagetab **out, size_t expected_pages)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	size_t n = slots_for(expected_pages);
	if (!n)
		return -ENOMEM;
	mmk_pagetab *pt = calloc(1, sizeof(*pt));
	if (!pt)
		return -ENOMEM;
	long ps = sysconf(_SC_PAGESIZE);
	if (ps < 4096 || (ps & (ps - 1)))
		ps = 4096;
	pt->pmask = (uintptr_t)ps - 1;
	pt->shift = (unsigned)__builtin_ctzl((unsigned long)ps);
#ifndef NDEBUG
	atomic_init(&pt->writer, 0);
#endif
	int r = rehash(pt, n);
	if (r) {
		free(pt);
		return r;
	}
	*out = pt;
	return 0;
}

void mmk_pagetab_destroy(mmk_pagetab *pt)
{
	if (!pt)
		return;
	assert(!pt->iter && "mmk_pagetab_destroy during an iteration");
	free_zeroed(pt->raw, pt->rawbytes);
	free(pt);
}

int mmk_pagetab_reserve(mmk_pagetab *pt, size_t n)
{
	if (!pt)
		return -EINVAL;
	assert(!pt->iter && "mmk_pagetab_reserve during an iteration");
	if (n <= pt->maxload)
		return 0;
	size_t s = slots_for(n);
	if (!s)
		return -ENOMEM;
	WRITER_ENTER(pt);
	int r = rehash(pt, s);
	WRITER_EXIT(pt);
	return r;
}

/* The general insert: probe, grow if needed, shift. */
__attribute__((noinline))
static int insert_slow(mmk_pagetab *pt, uintptr_t addr, void *rec)
{
	size_t pos, d = 0;
	int r = 0;
	if (probe(pt, addr, &pos, &d)) {
		r = -EEXIST;
	} else if (pt->count >= pt->maxload) {
		r = grow(pt);
		if (!r) {
			probe(pt, addr, &pos, &d);
			put_at(pt, pos, addr | field_for(d), rec);
			pt->count++;
		}
	} else {
		put_at(pt, pos, addr | field_for(d), rec);
		pt->count++;
		MODIFIED(pt);
	}
	return r;
}

int mmk_pagetab_insert(mmk_pagetab *pt, uintptr_t addr, void *rec)
{
	if (__builtin_expect(!pt || !rec || (addr & pt->pmask), 0))
		return -EINVAL;
	assert(!pt->iter && "mmk_pagetab_insert during an iteration");
	WRITER_ENTER(pt);
	/* Fast path: the home slot is empty (then addr is absent: a probe
	 * for it would stop there) and no growth is due.  Few instructions
	 * and one branch after the miss (well predicted while most home
	 * slots are free), so consecutive inserts overlap their misses. */
	slot_t *s = &pt->slots[home_of(pt, addr)];
	int r = 0;
	/* the lines a probe or a shift goes on to, fetched in parallel with
	 * the home line (a hint: past the end of the array is harmless) */
	__builtin_prefetch((const void *)((uintptr_t)s + 64), 1);
	__builtin_prefetch((const void *)((uintptr_t)s + 128), 1);
	if (__builtin_expect(s->key == 0, 1) && pt->count < pt->maxload) {
		s->key = addr | ((uintptr_t)1 << FSHIFT);
		s->rec = rec;
		pt->count++;
		MODIFIED(pt);
	} else {
		r = insert_slow(pt, addr, rec);
	}
	WRITER_EXIT(pt);
	return r;
}

void *mmk_pagetab_lookup(const mmk_pagetab *pt, uintptr_t addr)
{
	if (!pt || (addr & pt->pmask))
		return NULL;
	READER_CHECK(pt);
	/* probe() specialised: keep the loop small, as many lookups as
	 * possible in flight */
	const slot_t *s = pt->slots;
	size_t n = pt->nslots;
	size_t i = home_of(pt, addr);
	uintptr_t t = (uintptr_t)1 << FSHIFT;
	for (;;) {
		uintptr_t k = s[i].key;
		uintptr_t f = k & FMASK;
		if (f < t) {
			if (f == FSATW)
				return lookup_slow(pt, addr, i, (size_t)(t >> FSHIFT) - 1);
			return NULL;
		}
		if ((k & MATCHMASK) == addr)
			return s[i].rec;
		t += (uintptr_t)1 << FSHIFT;
		if (++i == n)
			i = 0;
	}
}

__attribute__((noinline))
static int remove_slow(mmk_pagetab *pt, uintptr_t addr, void **rec_out)
{
	size_t pos, d = 0;
	if (!probe(pt, addr, &pos, &d))
		return -ENOENT;
	slot_t *s = &pt->slots[pos];
	if (rec_out)
		*rec_out = s->rec;
	if (s->key & F_DIRTY)
		pt->ndirty--;
	delete_at(pt, pos);
	pt->count--;
	MODIFIED(pt);
	return 0;
}

int mmk_pagetab_remove(mmk_pagetab *pt, uintptr_t addr, void **rec_out)
{
	if (__builtin_expect(!pt || (addr & pt->pmask), 0))
		return -EINVAL;
	assert(!pt->iter && "mmk_pagetab_remove during an iteration "
			    "(return MMK_PAGETAB_REMOVE instead)");
	WRITER_ENTER(pt);
	/* Fast path: addr sits at its home and the next slot needs no
	 * backward shift (empty or at its own home). */
	size_t i = home_of(pt, addr);
	slot_t *s = &pt->slots[i];
	__builtin_prefetch((const void *)((uintptr_t)s + 64), 1);
	uintptr_t k = s->key;
	int r = 0;
	/* at its home: displacement field 1 (an empty slot has field 0) */
	if (__builtin_expect((k & ~F_DIRTY) == (addr | ((uintptr_t)1 << FSHIFT)), 1) &&
	    i + 1 < pt->nslots &&
	    (s[1].key & FMASK) <= ((uintptr_t)1 << FSHIFT)) {
		if (rec_out)
			*rec_out = s->rec;
		pt->ndirty -= k & F_DIRTY;
		s->key = 0;
		s->rec = NULL;
		pt->count--;
		MODIFIED(pt);
	} else {
		r = remove_slow(pt, addr, rec_out);
	}
	WRITER_EXIT(pt);
	return r;
}

size_t mmk_pagetab_count(const mmk_pagetab *pt)
{
	return pt ? pt->count : 0;
}

int mmk_pagetab_mark_dirty(mmk_pagetab *pt, uintptr_t addr)
{
	if (!pt || (addr & pt->pmask))
		return -EINVAL;
	WRITER_ENTER(pt);
	size_t pos, d = 0;
	int r = -ENOENT;
	if (probe(pt, addr, &pos, &d)) {
		slot_t *s = &pt->slots[pos];
		if (!(s->key & F_DIRTY)) {
			s->key |= F_DIRTY;
			pt->ndirty++;
			mark_block(pt, pos);
		}
		r = 0;
	}
	WRITER_EXIT(pt);
	return r;
}

int mmk_pagetab_clear_dirty(mmk_pagetab *pt, uintptr_t addr)
{
	if (!pt || (addr & pt->pmask))
		return -EINVAL;
	WRITER_ENTER(pt);
	size_t pos, d = 0;
	int r = -ENOENT;
	if (probe(pt, addr, &pos, &d)) {
		slot_t *s = &pt->slots[pos];
		if (s->key & F_DIRTY) {
			s->key &= ~F_DIRTY;
			pt->ndirty--;
		}
		r = 0;
	}
	WRITER_EXIT(pt);
	return r;
}

bool mmk_pagetab_is_dirty(const mmk_pagetab *pt, uintptr_t addr)
{
	if (!pt || (addr & pt->pmask))
		return false;
	READER_CHECK(pt);
	size_t pos, d = 0;
	return probe(pt, addr, &pos, &d) && (pt->slots[pos].key & F_DIRTY);
}

size_t mmk_pagetab_dirty_count(const mmk_pagetab *pt)
{
	return pt ? pt->ndirty : 0;
}

static inline size_t block_end(const mmk_pagetab *pt, size_t b)
{
	size_t e = (b + 1) << BSHIFT;
	return e < pt->nslots ? e : pt->nslots;
}

static void drop_all_blocks(mmk_pagetab *pt)
{
	for (size_t p = 0; p < pt->dlen; p++) {
		size_t b = pt->dlist[p];
		pt->dbits[b >> 6] &= ~((uint64_t)1 << (b & 63));
	}
	pt->dlen = 0;
}

void mmk_pagetab_clear_all_dirty(mmk_pagetab *pt)
{
	if (!pt)
		return;
	assert(!pt->iter && "mmk_pagetab_clear_all_dirty during an iteration");
	WRITER_ENTER(pt);
	slot_t *s = pt->slots;
	for (size_t p = 0; p < pt->dlen && pt->ndirty; p++) {
		size_t b = pt->dlist[p];
		size_t e = block_end(pt, b);
		for (size_t i = b << BSHIFT; i < e; i++)
			s[i].key &= ~F_DIRTY;
	}
	pt->ndirty = 0;
	drop_all_blocks(pt);
	WRITER_EXIT(pt);
}

int mmk_pagetab_foreach(mmk_pagetab *pt, mmk_pagetab_fn fn, void *arg)
{
	if (!pt || !fn)
		return -EINVAL;
	assert(!pt->iter && "nested mmk_pagetab iteration");
	if (!pt->count)
		return 0;
	WRITER_ENTER(pt);
	pt->iter = 1;
	/*
	 * Walk circularly from an empty slot s0.  Removing the entry at i
	 * shifts the entries after i (up to an empty slot or an entry at its
	 * home, so never past s0) back by one: visited entries stay before i,
	 * unvisited ones at or after i, so re-examining i visits each entry
	 * exactly once.
	 */
	slot_t *s = pt->slots;
	size_t n = pt->nslots;
	size_t i = find_empty(pt);
	size_t left = n - 1; /* slots still to examine */
	int rc = 0;
	if (++i == n)
		i = 0;
	while (left) {
		uintptr_t k = s[i].key;
		if (!k) {
			left--;
			if (++i == n)
				i = 0;
			continue;
		}
#ifndef NDEBUG
		unsigned long mods = pt->mods;
#endif
		int r = fn(k & ~LOWMASK, s[i].rec, arg);
		assert(pt->mods == mods &&
		       "mmk_pagetab modified during an iteration");
		if (r < 0) {
			rc = r;
			break;
		}
		if (r == MMK_PAGETAB_REMOVE) {
			if (s[i].key & F_DIRTY)
				pt->ndirty--;
			delete_at(pt, i);
			pt->count--;
			MODIFIED(pt);
			continue; /* re-examine i */
		}
		left--;
		if (++i == n)
			i = 0;
	}
	pt->iter = 0;
	WRITER_EXIT(pt);
	return rc;
}

/*
 * Remove every PENDING entry of the cluster part that starts at slot i
 * (which is PENDING), shifting the others back as far as their homes allow.
 * PENDING entries are dropped where they lie, never moved.
 */
static void compact_from(mmk_pagetab *pt, size_t i)
{
	slot_t *s = pt->slots;
	size_t n = pt->nslots;
	size_t w = i, j = i; /* [w, j) is free */
	for (;;) {
		uintptr_t k = s[j].key;
		if (!k)
			break;
		if (k & F_PENDING) {
			pt->npending--;
			j = next_slot(pt, j);
			continue;
		}
		if (w == j)
			break; /* nothing to shift any more */
		size_t d = disp_at(pt, k, j);
		size_t g = j >= w ? j - w : j + n - w;
		size_t m = d < g ? d : g;
		size_t dst = j >= m ? j - m : j + n - m;
		while (w != dst) {
			s[w].key = 0;
			s[w].rec = NULL;
			w = next_slot(pt, w);
		}
		if (m) {
			k = (k & ~FMASK) | field_for(d - m);
			s[dst].key = k;
			s[dst].rec = s[j].rec;
			if ((k & F_DIRTY) && (dst >> BSHIFT) != (j >> BSHIFT))
				mark_block(pt, dst);
		}
		w = next_slot(pt, dst);
		j = next_slot(pt, j);
	}
	while (w != j) {
		s[w].key = 0;
		s[w].rec = NULL;
		w = next_slot(pt, w);
	}
}

int mmk_pagetab_foreach_dirty(mmk_pagetab *pt, mmk_pagetab_fn fn, void *arg)
{
	if (!pt || !fn)
		return -EINVAL;
	assert(!pt->iter && "nested mmk_pagetab iteration");
	WRITER_ENTER(pt);
	if (!pt->ndirty) {
		drop_all_blocks(pt);
		WRITER_EXIT(pt);
		return 0;
	}
	pt->iter = 1;
	/*
	 * Nothing moves while the callback runs: removals only set PENDING
	 * (the entry stops matching lookups at once) and are carried out by
	 * compact_from() after the walk.  So the walk over the block list is
	 * a plain scan, and blocks appended meanwhile are scanned too.
	 */
	slot_t *s = pt->slots;
	int rc = 0;
	size_t p;
	for (p = 0; p < pt->dlen && rc == 0; p++) {
		size_t b = pt->dlist[p];
		size_t e = block_end(pt, b);
		bool keep = false;
		/* Tentatively "found empty": a mark_dirty() by the callback in
		 * this block, even on a slot already passed over, clears the
		 * bit again (mark_block()), so the block stays listed. */
		uint64_t bit = (uint64_t)1 << (b & 63);
		pt->pbits[b >> 6] |= bit;
		pt->npbits++;
		for (size_t i = b << BSHIFT; i < e; i++) {
			uintptr_t k = s[i].key;
			if (!(k & F_DIRTY))
				continue;
#ifndef NDEBUG
			unsigned long mods = pt->mods;
#endif
			int r = fn(k & ~LOWMASK, s[i].rec, arg);
			assert(pt->mods == mods &&
			       "mmk_pagetab modified during an iteration");
			k = s[i].key; /* the callback may have changed flags */
			if (r == MMK_PAGETAB_REMOVE) {
				if (k & F_DIRTY)
					pt->ndirty--;
				k = (k & ~F_DIRTY) | F_PENDING;
				s[i].key = k;
				pt->count--;
				pt->npending++;
			}
			if (k & F_DIRTY)
				keep = true;
			if (r < 0) {
				rc = r;
				keep = true; /* the rest of the block is unseen */
				break;
			}
		}
		if (keep && (pt->pbits[b >> 6] & bit)) {
			pt->pbits[b >> 6] &= ~bit;
			pt->npbits--;
		}
	}
	/* Carry out the removals.  Every PENDING entry lies in a listed block
	 * (blocks found empty leave the list only below); PENDING entries
	 * never move, so scanning every listed block finds them all. */
	for (p = 0; p < pt->dlen && pt->npending; p++) {
		size_t b = pt->dlist[p];
		size_t e = block_end(pt, b);
		for (size_t i = b << BSHIFT; i < e && pt->npending; i++)
			if (s[i].key & F_PENDING)
				compact_from(pt, i);
	}
	assert(pt->npending == 0);
	/* Drop the blocks found empty. */
	if (pt->npbits) {
		size_t w = 0;
		for (p = 0; p < pt->dlen; p++) {
			uint32_t b = pt->dlist[p];
			uint64_t bit = (uint64_t)1 << (b & 63);
			if (pt->pbits[b >> 6] & bit) {
				pt->pbits[b >> 6] &= ~bit;
				pt->dbits[b >> 6] &= ~bit;
			} else {
				pt->dlist[w++] = b;
			}
		}
		pt->dlen = w;
		pt->npbits = 0;
	}
	pt->iter = 0;
	MODIFIED(pt);
	WRITER_EXIT(pt);
	return rc;
}

size_t mmk_pagetab_bytes(const mmk_pagetab *pt)
{
	return pt ? pt->rawbytes + sizeof(*pt) : 0;
}

size_t mmk_pagetab_page_size(const mmk_pagetab *pt)
{
	return pt ? (size_t)pt->pmask + 1 : 0;
}

int mmk_pagetab_stats_get(const mmk_pagetab *pt, mmk_pagetab_stats *st)
{
	if (!pt || !st)
		return -EINVAL;
	READER_CHECK(pt);
	memset(st, 0, sizeof(*st));
	st->count = pt->count;
	st->dirty = pt->ndirty;
	st->slots = pt->nslots;
	st->bytes = mmk_pagetab_bytes(pt);
	st->dirty_blocks = pt->dlen;
	double sum = 0;
	for (size_t i = 0; i < pt->nslots; i++) {
		uintptr_t k = pt->slots[i].key;
		if (!k)
			continue;
		size_t d = disp_at(pt, k, i);
		sum += (double)d;
		if (d > st->max_disp)
			st->max_disp = d;
	}
	st->mean_disp = pt->count ? sum / (double)pt->count : 0;
	return 0;
}

