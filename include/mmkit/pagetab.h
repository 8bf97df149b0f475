/*
 * mmkit/pagetab.h - a map from page-aligned virtual addresses to
 * caller-owned records, with a dirty set.
 *
 * A mmk_pagetab maps a page-aligned address (uintptr_t; address 0 and the
 * last page of the address space are valid keys) to a non-NULL record
 * pointer.  Records belong to the caller: the table stores the pointer only,
 * never copies, moves or frees what it points to, so records keep stable
 * addresses.  Any number of pages may be stored (the table grows; it never
 * drops or overwrites an entry).  Page size is sysconf(_SC_PAGESIZE), read
 * once by mmk_pagetab_create().
 *
 * Each entry can also be marked dirty.  The dirty pages can be counted,
 * iterated and cleared in time proportional to the number of dirty pages,
 * not to the size of the table (see "Dirty set" below).
 *
 * Errors follow <mmkit/common.h>: 0 or a negative errno.
 *
 * Thread-safety: a table is NOT thread-safe.  At any time there may be
 * either one thread calling functions that modify it (insert, remove,
 * reserve, the dirty-mark functions, the foreach functions) or any number of
 * threads calling only read-only functions (lookup, is_dirty, count,
 * dirty_count, bytes, stats), never both.  The caller provides the
 * synchronisation (e.g. a rwlock).  Builds without NDEBUG assert that no two
 * threads modify a table at the same time and that no other thread reads it
 * while one modifies it (a best-effort check, not a guarantee).
 *
 * Design (for the curious; none of it is part of the API contract):
 * open addressing with Robin Hood linear probing over 16-byte slots
 * {key, record}; the key word holds the address plus a dirty flag and the
 * entry's probe displacement in its 12 low bits.  The home slot of a page
 * keeps groups of 16 consecutive pages in 16 consecutive slots, so
 * neighbouring pages share cache lines.  A table created or reserved for n
 * pages is sized for 70% load at n; it grows by ~1.25x when it is 85% full,
 * so it uses at most ~24 bytes per stored page once it holds more than a
 * few hundred pages (16 / 0.68 for the slots, plus ~0.2 byte for the dirty
 * index).  Arrays of 2 MiB or more are mmap()ed and advised
 * MADV_HUGEPAGE.
 *
 * Dirty set: a bitmap with one bit per block of 32 slots ("this block may
 * hold dirty entries") and a list of the blocks whose bit is set.  Walking
 * the dirty set scans the listed blocks only: at most 32 slots per dirty
 * page, plus blocks left stale by clear_dirty()/remove(), which the next
 * dirty walk drops (their cost is paid once, by the marks that made them).
 */
#ifndef MMKIT_PAGETAB_H
#define MMKIT_PAGETAB_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_pagetab mmk_pagetab;

/*
 * Iteration callback: called with each entry's address and record.  Return
 *   0                    to continue,
 *   MMK_PAGETAB_REMOVE   to remove this entry and continue (the record is
 *                        not freed; free it in the callback if you own it),
 *   a negative value     to stop; the foreach function returns that value.
 * Other positive values are treated as 0.
 *
 * During an iteration the callback may call the read-only functions and
 * mmk_pagetab_mark_dirty() / mmk_pagetab_clear_dirty() on the same table.
 * It must NOT insert, remove (other than by returning MMK_PAGETAB_REMOVE),
 * reserve, clear_all_dirty or start another iteration of the same table:
 * that is undefined behaviour (asserted in builds without NDEBUG).
 */
typedef int (*mmk_pagetab_fn)(uintptr_t addr, void *rec, void *arg);

#define MMK_PAGETAB_REMOVE 1

/*
 * Create an empty table sized for expected_pages entries without growing
 * (0 is fine: the table starts small and grows).
 * Returns 0 and *out, or -EINVAL (out NULL), -ENOMEM.
 */
MMK_API int mmk_pagetab_create(mmk_pagetab **out, size_t expected_pages);

/*
 * Free the table and everything it allocated.  The records are NOT freed:
 * they belong to the caller (walk them with mmk_pagetab_foreach() first if
 * they need freeing).  NULL is a no-op.
 */
MMK_API void mmk_pagetab_destroy(mmk_pagetab *pt);

/*
 * Make room for n entries in total, so that inserts up to that count do not
 * allocate.  Never shrinks.  Returns 0, -EINVAL (pt NULL) or -ENOMEM (the
 * table is unchanged).
 */
MMK_API int mmk_pagetab_reserve(mmk_pagetab *pt, size_t n);

/*
 * Map addr to rec.
 * Returns 0, or
 *   -EINVAL  pt or rec NULL, or addr not a multiple of the page size;
 *   -EEXIST  addr is already present (its record is kept, never overwritten);
 *   -ENOMEM  growing the table failed (the table is unchanged).
 * May move entries (not records) and so must not be called during an
 * iteration.
 */
MMK_API int mmk_pagetab_insert(mmk_pagetab *pt, uintptr_t addr, void *rec);

/* The record of addr, or NULL if addr is absent (or unaligned, or pt NULL). */
MMK_API void *mmk_pagetab_lookup(const mmk_pagetab *pt, uintptr_t addr);

/*
 * Remove addr (and its dirty mark).  If rec_out is not NULL, *rec_out gets
 * the record (left untouched on error).
 * Returns 0, -EINVAL (pt NULL or addr unaligned) or -ENOENT (absent).
 */
MMK_API int mmk_pagetab_remove(mmk_pagetab *pt, uintptr_t addr, void **rec_out);

/* Number of entries (0 for NULL). */
MMK_API size_t mmk_pagetab_count(const mmk_pagetab *pt);

/*
 * Mark addr dirty (marking a dirty page again is a no-op).
 * Returns 0, -EINVAL (pt NULL or addr unaligned) or -ENOENT (absent).
 */
MMK_API int mmk_pagetab_mark_dirty(mmk_pagetab *pt, uintptr_t addr);

/*
 * Clear addr's dirty mark (no-op if clean).
 * Returns 0, -EINVAL (pt NULL or addr unaligned) or -ENOENT (absent).
 */
MMK_API int mmk_pagetab_clear_dirty(mmk_pagetab *pt, uintptr_t addr);

/* True if addr is present and dirty. */
MMK_API bool mmk_pagetab_is_dirty(const mmk_pagetab *pt, uintptr_t addr);

/* Number of dirty entries, O(1). */
MMK_API size_t mmk_pagetab_dirty_count(const mmk_pagetab *pt);

/*
 * Clear every dirty mark, in O(dirty pages) (at most 32 slots per dirty page
 * and per stale block).  Not allowed from an iteration callback.
 */
MMK_API void mmk_pagetab_clear_all_dirty(mmk_pagetab *pt);

/*
 * Call fn(addr, rec, arg) once for every entry, in NO particular order (not
 * address order; the order changes as the table changes).  See
 * mmk_pagetab_fn for the return value and what the callback may do; with
 * MMK_PAGETAB_REMOVE every entry is still visited exactly once.
 * Returns 0, fn's negative return value if it stopped the walk, or -EINVAL
 * (pt or fn NULL).  O(table slots).
 */
MMK_API int mmk_pagetab_foreach(mmk_pagetab *pt, mmk_pagetab_fn fn, void *arg);

/*
 * Like mmk_pagetab_foreach(), but only the dirty entries, in O(dirty pages)
 * (at most 32 slots scanned per dirty page; blocks left stale by
 * clear_dirty() or remove() are scanned once more and then dropped).
 * NOT in address order either.  An entry removed with
 * MMK_PAGETAB_REMOVE disappears at once for lookups and counts; its slot is
 * reclaimed when the walk ends.  Entries that the callback marks dirty
 * during the walk may or may not be visited; each entry that was dirty when
 * the walk started and is still dirty when reached is visited exactly once.
 */
MMK_API int mmk_pagetab_foreach_dirty(mmk_pagetab *pt, mmk_pagetab_fn fn,
				      void *arg);

/* Bytes the table has allocated (slots, dirty index, the handle itself),
 * excluding the records.  0 for NULL.  The table never shrinks: removing
 * entries does not lower this (destroy and rebuild to give memory back). */
MMK_API size_t mmk_pagetab_bytes(const mmk_pagetab *pt);

/* The page size the table uses (alignment required of addresses). */
MMK_API size_t mmk_pagetab_page_size(const mmk_pagetab *pt);

/* Internal statistics, for tests and benchmarks; O(table slots). */
typedef struct mmk_pagetab_stats {
	size_t count;        /* entries */
	size_t dirty;        /* dirty entries */
	size_t slots;        /* slots allocated */
	size_t bytes;        /* == mmk_pagetab_bytes() */
	size_t max_disp;     /* longest probe displacement, in slots */
	double mean_disp;    /* mean probe displacement of the entries */
	size_t dirty_blocks; /* 32-slot blocks listed in the dirty index */
} mmk_pagetab_stats;

/* Fill *st.  Returns 0 or -EINVAL (pt or st NULL). */
MMK_API int mmk_pagetab_stats_get(const mmk_pagetab *pt, mmk_pagetab_stats *st);

#ifdef __cplusplus
}
#endif
#endif
