/*
 * sys/state.h - the one place mmkit keeps process-wide mutable state.
 *
 * Invariant: mmkit keeps NO mutable state in its own .data/.bss except the
 * pointer to this block, which a constructor sets before main() and never
 * changes.  The block lives in anonymous memory registered as mmkit's own
 * (MMK__MAP_SELF), so a process-wide snapshot never rolls it back: a restore
 * cannot make mmkit forget a descriptor it opened or a context it saved.
 * Subsystems add their fields here rather than using static variables.
 */
#ifndef MMK_SYS_STATE_H
#define MMK_SYS_STATE_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include "sys/sys.h"
#include <mmkit/features.h>

#define MMK__SELF_MAX 4096

typedef struct mmk__state {
	/* features probe (probe.c) */
	pthread_once_t probe_once;
	mmk_features features;

	/* cached descriptors (pagemap.c, maps.c), re-opened after fork */
	_Atomic int pagemap_fd;    /* dropped in a forked child (pagemap.c) */
	int maps_fd;               /* likewise */

	/* mmkit's own anonymous memory (self.c) */
	pthread_mutex_t self_lock;
	_Atomic size_t self_pages;  /* total size of self mappings, in pages */
	size_t self_n;
	struct { uintptr_t start, end; } self[MMK__SELF_MAX];
	const char *self_path; /* libmmkit.so path, or NULL when linked statically */
	char self_path_buf[256];

	/* snapshot engine (snapshot/): every tracked region of every object,
	 * read lock-free by the SIGBUS handler; writers hold snap_lock */
	pthread_mutex_t snap_lock;
	void *_Atomic snap_regions[MMK__SELF_MAX];
	_Atomic size_t snap_nregions;
	struct sigaction snap_old_action[2]; /* SIGBUS (lazy), SIGSEGV (mprotect) */
	bool snap_installed[2];
	/* other subsystems' write-fault handlers (checkpoints), asked before the
	 * fault is treated as foreign: one process-wide handler per signal */
	bool (*_Atomic fault_claim[2][4])(int sig, siginfo_t *si);
	void *mmcontext;       /* snapshot/mmcontext.c: the process-wide context */
} mmk__state;

MMK_HIDDEN mmk__state *mmk__st(void);

#endif
