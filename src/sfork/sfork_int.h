/*
 * sfork/sfork_int.h - internals shared by the sfork files (internal).
 *
 * huge.c decides and reports huge-page availability (read fresh from sysfs
 * at each call, never cached: an administrator or the benchmark may change
 * it at run time); sfork.c creates and forks regions; attach.c re-attaches
 * regions after exec.
 */
#ifndef MMK_SFORK_INT_H
#define MMK_SFORK_INT_H

#include <mmkit/sfork.h>
#include "sys/sys.h"

#define MMK__HUGE_SZ (2UL << 20)
#define MMK__SFORK_MAX_REGIONS 64
#define MMK__SFORK_NAME_MAX 63

/* Shmem THP allowed for 2 MiB pages: the hugepages-2048kB/shmem_enabled
 * mode (or, when it says "inherit" or is absent, the global
 * transparent_hugepage/shmem_enabled) is always, within_size, advise or
 * force.  `why` (may be NULL) receives the selected mode string. */
MMK_HIDDEN bool mmk__sfork_thp_allowed(char *why, size_t whylen);

/* 2 MiB hugetlb pages free and not reserved (free_hugepages -
 * resv_hugepages), 0 when unknown. */
MMK_HIDDEN long mmk__sfork_hugetlb_avail(void);

/* Map `len` bytes of fd at an address aligned to `align` (a power of two,
 * >= the page size), with prot and MAP_SHARED.  Returns the address or
 * MAP_FAILED with errno set. */
MMK_HIDDEN void *mmk__sfork_map_aligned(int fd, size_t len, int prot, size_t align);

/* A name is valid when 1..63 characters from [A-Za-z0-9_.-]. */
MMK_HIDDEN bool mmk__sfork_name_ok(const char *name);

#endif
