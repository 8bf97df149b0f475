/*
 * snapshot/mmcontext.c - the seed's interface: mmcontext(0) saves the whole
 * process, mmcontext(1) restores it.
 *
 * Invariants: one process-wide snapshot object with process scope, created
 * on first use and kept (its pointer lives in mmkit's state block, never in
 * .data, so a restore cannot forget it); at most one save point through this
 * interface (the seed's rules: a second save without restore and a restore
 * without save are EINVAL).  After a fork the child has its own copy of the
 * object but the userfaultfds registered the parent's memory; the child's
 * first call therefore releases that copy without touching the parent and
 * starts a fresh object (a context saved by the parent is not the child's).
 */
#include "snapshot/snap.h"
#include "sys/state.h"

#include <errno.h>
#include <unistd.h>

/* Released at exit so that a program exiting with a saved context leaks
 * nothing (leak checkers run after destructors). */
__attribute__((destructor)) static void mmcontext_fini(void)
{
	mmk__state *st = mmk__st();
	struct mmctx {
		mmk_snap *snap;
	} *c = st->mmcontext;
	if (c && c->snap) {
		mmk_snap_destroy(c->snap);
		c->snap = NULL;
	}
}

typedef struct mmctx {
	mmk_snap *snap;
	bool inherited; /* set in a forked child (pthread_atfork) */
	bool saved;
} mmctx;

static void mmctx_atfork_child(void)
{
	mmctx *c = mmk__st()->mmcontext;
	if (c)
		c->inherited = true;
}

static mmctx *ctx(int *err)
{
	mmk__state *st = mmk__st();
	mmctx *c = st->mmcontext;
	if (!c) {
		c = mmk__self_alloc(sizeof *c);
		if (!c) {
			*err = -ENOMEM;
			return NULL;
		}
		st->mmcontext = c;
		pthread_atfork(NULL, NULL, mmctx_atfork_child);
	}
	if (c->snap && c->inherited) {
		/* inherited from the parent: release our copy (destroy knows not
		 * to touch the parent's registrations) and start afresh */
		mmk_snap_destroy(c->snap);
		c->snap = NULL;
		c->saved = false;
		c->inherited = false;
	}
	if (!c->snap) {
		int rc = mmk_snap_create(&c->snap, NULL);
		if (rc == 0 && (rc = mmk_snap_add_process(c->snap)) < 0) {
			mmk_snap_destroy(c->snap);
			c->snap = NULL;
		}
		if (rc < 0) {
			*err = rc;
			return NULL;
		}
	}
	return c;
}

MMK_HIDDEN mmk_snap *mmk__mmcontext_snap(int *err)
{
	mmctx *c = ctx(err);
	return c ? c->snap : NULL;
}

mmk_snap *mmk_context(void)
{
	int err = 0;
	mmctx *c = ctx(&err);
	return c ? c->snap : NULL;
}

int mmcontext(int op)
{
	int err = 0;
	if (op != 0 && op != 1) {
		errno = EINVAL;
		return -1;
	}
	mmctx *c = ctx(&err);
	if (!c) {
		errno = -err;
		return -1;
	}
	if (op == 0) {
		if (c->saved) {
			errno = EINVAL;
			return -1;
		}
		int rc = mmk_snap_save(c->snap);
		if (rc < 0) {
			errno = rc < -4095 ? EIO : -rc;
			return -1;
		}
		c->saved = true;
		return 0;
	}
	if (!c->saved) {
		errno = EINVAL;
		return -1;
	}
	int rc = mmk__snap_restore(c->snap, false); /* a save comes next */
	mmk_snap_drop(c->snap);
	c->saved = false;
	if (rc < 0) {
		errno = rc < -4095 ? EIO : -rc;
		return -1;
	}
	return 0;
}
