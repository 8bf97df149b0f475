/*
 * mmkit/features.h - what the running kernel offers, probed once.
 *
 * mmk_features() probes the kernel the first time it is called (a few
 * hundred microseconds; one short-lived child process for the soft-dirty
 * check) and returns the same immutable result afterwards.  Thread-safe.
 * Every subsystem picks its mechanism from this probe, so a feature the
 * kernel lacks is never assumed: it is a fallback, reported here.
 */
#ifndef MMKIT_FEATURES_H
#define MMKIT_FEATURES_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_features {
	/* uname -r parsed; e.g. 6, 18, 44 */
	unsigned kernel_major, kernel_minor, kernel_patch;
	char kernel_release[65];

	/* userfaultfd */
	bool uffd;                /* a userfaultfd could be opened by this process */
	bool uffd_user_mode_only; /* ...with UFFD_USER_MODE_ONLY (5.11+) */
	int uffd_errno;           /* why not, when !uffd (EPERM, ENOSYS, ...) */
	uint64_t uffd_features;   /* UFFD_FEATURE_* bits the kernel reports */
	bool uffd_wp;             /* write-protect mode on anonymous memory */
	bool uffd_wp_async;       /* UFFD_FEATURE_WP_ASYNC (6.7+) */
	bool uffd_sigbus;         /* UFFD_FEATURE_SIGBUS */
	bool uffd_wp_unpopulated; /* UFFD_FEATURE_WP_UNPOPULATED (6.4+) */
	bool uffd_wp_shmem;       /* WP on shmem/hugetlb (UFFD_FEATURE_WP_HUGETLBFS_SHMEM) */

	/* /proc/self/pagemap and maps */
	bool pagemap_scan;        /* PAGEMAP_SCAN ioctl (6.7+) */
	bool procmap_query;       /* PROCMAP_QUERY ioctl on /proc/self/maps (6.11+) */
	bool soft_dirty;          /* clear_refs "4" + pagemap bit 55 really report writes */

	/* memory objects */
	bool memfd;               /* memfd_create */
	bool memfd_noexec_seal;   /* MFD_NOEXEC_SEAL accepted (6.3+) */
	bool mseal;               /* mseal(2) (6.10+) */
	char shmem_thp[16];       /* /sys/kernel/mm/transparent_hugepage/shmem_enabled
	                             selected mode: always|within_size|advise|never|deny|force|"" */
	long hugetlb_total;       /* 2 MiB hugetlb pool pages, -1 if unknown */
	long hugetlb_free;

	/* profiling */
	bool perf_events;         /* perf_event_open of a software counter on self
	                           * (false, not tried, when MMK_PROF_NO_PERF is set
	                           * in the environment) */
	int perf_paranoid;        /* /proc/sys/kernel/perf_event_paranoid, -99 unknown */
	bool pidfd;               /* pidfd_open (5.3+) */
	long clk_tck;             /* sysconf(_SC_CLK_TCK) */

	size_t page_size;
	bool is_root;             /* effective uid 0 */
} mmk_features;

/* The probe result; never NULL. */
MMK_API const mmk_features *mmk_features_get(void);

/* One line per feature, for tools: name, present?, what it enables and, when
 * absent, what the fallback costs. idx from 0; returns false past the end. */
typedef struct mmk_feature_line {
	const char *name;
	bool present;
	const char *value;      /* extra value text (may be "") */
	const char *enables;    /* what mmkit uses it for */
	const char *fallback;   /* what happens without it */
} mmk_feature_line;
MMK_API bool mmk_features_line(size_t idx, mmk_feature_line *out);

#ifdef __cplusplus
}
#endif
#endif
