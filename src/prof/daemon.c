/*
 * prof/daemon.c - the profiler daemon: absolute-schedule sampling into the
 * shared ring, and the control socket.
 *
 * Invariants:
 *  - One thread, one epoll loop: the timerfd (sampling), the sampler's exit
 *    fd (targets that exited are dropped at once), the listening socket and
 *    the connected clients.  Requests are answered inline (they are short),
 *    so no request can interleave with a sample.
 *  - The socket lives in a directory of mode 0700 and is itself mode 0600:
 *    only the owner (and root) can connect.  Every connection's peer
 *    credentials (SO_PEERCRED at accept) decide what it may do: a non-root
 *    peer may (un)register only processes whose real, effective and saved
 *    uids all equal its uid (what ptrace would require of an unprivileged
 *    tracer, minus the dumpable/capability checks).
 *  - The ring is handed out only as a read-only descriptor (SCM_RIGHTS).
 *  - The daemon asks for SCHED_FIFO priority 1 (unless no_rt): its work per
 *    wake-up is bounded (one pread per target), and on a saturated machine a
 *    SCHED_OTHER sampler wakes up milliseconds late.  SCHED_RESET_ON_FORK
 *    keeps children out of it.
 *  - Jitter is the wake-up time minus the due time of the latest tick of the
 *    absolute schedule; kept as a 1 us histogram up to 100 ms (+ max).
 *  - No process-wide state: all of it is local to mmk_prof_daemon_run.
 */
#include "prof/prof_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define JIT_BUCKETS 100000 /* 1 us each */
#define MAX_CLIENTS 256

typedef struct client {
	int fd;
	uid_t uid;
	pid_t pid;
} client;

typedef struct daemon_st {
	mmk_prof_daemon_opts o;
	char dir[4096];
	char sock[4200];
	int lfd, epfd;
	mmk_prof_ring *ring;
	mmk_prof_sampler *smp;
	mmk_prof_timer tm;
	uint32_t *jit;
	int64_t jit_max;
	uint64_t jit_n;
	uint64_t start_ns;
	client cl[MAX_CLIENTS];
	bool quit, rt;
	double rate;
} daemon_st;

static int ensure_dir(const char *path, bool create)
{
	if (create && mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	struct stat st;
	if (lstat(path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (st.st_uid != geteuid() || (st.st_mode & 077))
		return -EPERM;
	return 0;
}

int mmk_prof_dir(char *buf, size_t len)
{
	const char *env = getenv("MMKIT_PROF_DIR");
	int n;
	if (env && *env) {
		n = snprintf(buf, len, "%s", env);
	} else if ((env = getenv("XDG_RUNTIME_DIR")) && *env) {
		n = snprintf(buf, len, "%s/mmkit", env);
	} else {
		char run[64];
		struct stat st;
		snprintf(run, sizeof run, "/run/user/%u", (unsigned)geteuid());
		if (stat(run, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid())
			n = snprintf(buf, len, "%s/mmkit", run);
		else
			n = snprintf(buf, len, "/tmp/mmkit-%u", (unsigned)geteuid());
	}
	if (n < 0 || (size_t)n >= len || (size_t)n > 100)
		return -ENAMETOOLONG;
	return ensure_dir(buf, true);
}

static int sock_path(const char *dir, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", dir, MMK__PROF_SOCK);
	return n < 0 || (size_t)n >= sizeof sa->sun_path ? -ENAMETOOLONG : 0;
}

/* ---- client side ---------------------------------------------------------------- */
int mmk__prof_call(const char *dir, const char *req, char *reply, size_t len, int *fdout)
{
	char dbuf[4096];
	if (!dir) {
		int err = mmk_prof_dir(dbuf, sizeof dbuf);
		if (err < 0)
			return err;
		dir = dbuf;
	}
	struct sockaddr_un sa;
	int err = sock_path(dir, &sa);
	if (err < 0)
		return err;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { reply, len - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof cbuf };
	ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	err = n < 0 ? -errno : 0;
	close(fd);
	if (err < 0)
		return err;
	if (n == 0)
		return -ECONNRESET;
	reply[n] = 0;
	int rfd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&rfd, CMSG_DATA(c), sizeof rfd);
	if (fdout)
		*fdout = rfd;
	else if (rfd >= 0)
		close(rfd);
	if (!strncmp(reply, "OK", 2))
		return 0;
	int e = 0;
	if (sscanf(reply, "ERR %d", &e) == 1 && e > 0)
		return -e;
	return -EPROTO;
}

static int pid_call(const char *dir, char op, pid_t pid)
{
	if (pid == 0)
		pid = getpid();
	if (pid < 0)
		return -EINVAL;
	char req[32], rep[256];
	snprintf(req, sizeof req, "%c %d", op, (int)pid);
	return mmk__prof_call(dir, req, rep, sizeof rep, NULL);
}

int mmk_prof_register(const char *dir, pid_t pid)
{
	return pid_call(dir, 'R', pid);
}

int mmk_prof_unregister(const char *dir, pid_t pid)
{
	return pid_call(dir, 'U', pid);
}

int mmk_prof_list(const char *dir, pid_t *pids, size_t max)
{
	char *rep = malloc(MMK__PROF_MSG);
	if (!rep)
		return -ENOMEM;
	int err = mmk__prof_call(dir, "L", rep, MMK__PROF_MSG, NULL);
	if (err < 0) {
		free(rep);
		return err;
	}
	char *p = rep + 2, *e;
	long cnt = strtol(p, &e, 10);
	p = e;
	for (long i = 0; i < cnt; i++) {
		long v = strtol(p, &e, 10);
		if (e == p)
			break;
		p = e;
		if ((size_t)i < max && pids)
			pids[i] = (pid_t)v;
	}
	free(rep);
	return (int)cnt;
}

int mmk_prof_ring_open(const char *dir, mmk_prof_ring **ring)
{
	char rep[64];
	int fd = -1;
	int err = mmk__prof_call(dir, "M", rep, sizeof rep, &fd);
	if (err < 0)
		return err;
	if (fd < 0)
		return -EPROTO;
	err = mmk_prof_ring_attach(ring, fd);
	close(fd);
	return err;
}

int mmk_prof_shutdown(const char *dir)
{
	char rep[64];
	return mmk__prof_call(dir, "Q", rep, sizeof rep, NULL);
}

int mmk_prof_stats_get(const char *dir, mmk_prof_stats *st)
{
	char rep[512];
	int err = mmk__prof_call(dir, "S", rep, sizeof rep, NULL);
	if (err < 0)
		return err;
	unsigned long long ticks, skipped, records;
	long long p50, p99, mx;
	unsigned targets;
	int rt = 0;
	if (sscanf(rep, "OK %lf %llu %llu %llu %u %lf %lf %lld %lld %lld %d", &st->rate_hz, &ticks, &skipped,
		   &records, &targets, &st->cpu_s, &st->wall_s, &p50, &p99, &mx, &rt) != 11)
		return -EPROTO;
	st->realtime = rt;
	st->ticks = ticks;
	st->skipped = skipped;
	st->records = records;
	st->targets = targets;
	st->jitter_p50_ns = p50;
	st->jitter_p99_ns = p99;
	st->jitter_max_ns = mx;
	return 0;
}

/* ---- daemon side ---------------------------------------------------------------- */
static int64_t jit_pct(const daemon_st *d, double q)
{
	if (!d->jit_n)
		return 0;
	uint64_t want = (uint64_t)(q * (double)d->jit_n + 0.999999), acc = 0;
	if (want == 0)
		want = 1;
	for (size_t i = 0; i < JIT_BUCKETS; i++) {
		acc += d->jit[i];
		if (acc >= want)
			return (int64_t)i * 1000;
	}
	return d->jit_max;
}

static int may_trace(uid_t peer, pid_t pid)
{
	uid_t u[3];
	int err = mmk__proc_uids(pid, u);
	if (err < 0)
		return err;
	if (peer == 0)
		return 0;
	return (u[0] == peer && u[1] == peer && u[2] == peer) ? 0 : -EPERM;
}

static void reply(int fd, const char *msg, int passfd)
{
	struct iovec iov = { (void *)msg, strlen(msg) };
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (passfd >= 0) {
		memset(cbuf, 0, sizeof cbuf);
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof cbuf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &passfd, sizeof passfd);
	}
	sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void handle(daemon_st *d, client *c, char *req)
{
	char rep[256];
	int err = 0;
	long v = 0;
	char *e = NULL;
	switch (req[0]) {
	case 'R':
	case 'U':
		errno = 0;
		v = strtol(req + 1, &e, 10);
		if (e == req + 1 || (*e && *e != '\n') || errno || v <= 0 || v > 0x3fffffff) {
			err = -EINVAL;
		} else if (req[0] == 'R') {
			err = may_trace(c->uid, (pid_t)v);
			if (!err)
				err = mmk_prof_sampler_add(d->smp, (pid_t)v, -1,
							   (d->o.stat_only ? MMK_PROF_ADD_STAT_ONLY : 0) |
								   (d->o.no_perf ? MMK_PROF_ADD_NO_PERF : 0));
		} else {
			mmk_prof_record r;
			if (mmk_prof_sampler_last(d->smp, (pid_t)v, &r) < 0)
				err = -ENOENT;
			else if ((err = may_trace(c->uid, (pid_t)v)) == -ESRCH)
				err = 0; /* exiting: nothing left to protect */
			if (!err)
				err = mmk_prof_sampler_remove(d->smp, (pid_t)v);
		}
		break;
	case 'L': {
		char *big = malloc(MMK__PROF_MSG);
		pid_t *p = malloc(4096 * sizeof *p);
		if (!big || !p) {
			free(big);
			free(p);
			err = -ENOMEM;
			break;
		}
		int n = mmk_prof_sampler_list(d->smp, p, 4096);
		size_t off = (size_t)snprintf(big, MMK__PROF_MSG, "OK %d", n < 4096 ? n : 4096);
		for (int i = 0; i < n && i < 4096 && off < MMK__PROF_MSG - 16; i++)
			off += (size_t)snprintf(big + off, MMK__PROF_MSG - off, " %d", (int)p[i]);
		reply(c->fd, big, -1);
		free(big);
		free(p);
		return;
	}
	case 'M': {
		int fd = mmk_prof_ring_fd_readonly(d->ring);
		if (fd < 0) {
			err = fd;
			break;
		}
		reply(c->fd, "OK", fd);
		close(fd);
		return;
	}
	case 'S': {
		struct rusage ru;
		getrusage(RUSAGE_SELF, &ru);
		double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		snprintf(rep, sizeof rep, "OK %.6f %llu %llu %llu %d %.6f %.6f %lld %lld %lld %d", d->rate,
			 (unsigned long long)d->tm.tick, (unsigned long long)d->tm.skipped,
			 (unsigned long long)mmk_prof_ring_head(d->ring),
			 mmk_prof_sampler_list(d->smp, NULL, 0), cpu,
			 (double)(mmk_prof_now_ns() - d->start_ns) / 1e9, (long long)jit_pct(d, 0.5),
			 (long long)jit_pct(d, 0.99), (long long)d->jit_max, d->rt);
		reply(c->fd, rep, -1);
		return;
	}
	case 'Q':
		if (c->uid != 0 && c->uid != geteuid())
			err = -EPERM;
		else
			d->quit = true;
		break;
	default:
		err = -EINVAL;
	}
	if (err)
		snprintf(rep, sizeof rep, "ERR %d %s", -err, mmk_strerror(err));
	else
		snprintf(rep, sizeof rep, "OK");
	reply(c->fd, rep, -1);
}

static void client_close(daemon_st *d, client *c)
{
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
}

static void on_accept(daemon_st *d)
{
	for (;;) {
		int fd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		struct ucred cr;
		socklen_t cl = sizeof cr;
		int slot = -1;
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (d->cl[i].fd < 0) {
				slot = i;
				break;
			}
		if (slot < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) {
			close(fd);
			continue;
		}
		d->cl[slot] = (client){ fd, cr.uid, cr.pid };
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 16 + (uint64_t)slot };
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			client_close(d, &d->cl[slot]);
	}
}

static int listen_on(daemon_st *d)
{
	struct sockaddr_un sa;
	int err = sock_path(d->dir, &sa);
	if (err < 0)
		return err;
	int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (probe < 0)
		return -errno;
	if (connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
		close(probe);
		return -EADDRINUSE;
	}
	close(probe);
	unlink(sa.sun_path); /* stale */
	d->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (d->lfd < 0)
		return -errno;
	mode_t old = umask(0177);
	int r = bind(d->lfd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (r < 0 || chmod(sa.sun_path, 0600) < 0 || listen(d->lfd, 64) < 0)
		return -errno;
	snprintf(d->sock, sizeof d->sock, "%s", sa.sun_path);
	return 0;
}

int mmk_prof_daemon_run(const mmk_prof_daemon_opts *opts)
{
	if (!opts)
		return -EINVAL;
	daemon_st *d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	d->o = *opts;
	d->lfd = d->epfd = -1;
	d->tm.fd = -1;
	for (int i = 0; i < MAX_CLIENTS; i++)
		d->cl[i].fd = -1;
	d->rate = opts->rate_hz > 0 ? opts->rate_hz : 20.0;
	int err = 0;
	if (d->rate < 0.1 || d->rate > 10000) {
		err = -EINVAL;
		goto out;
	}
	if (opts->dir) {
		if ((size_t)snprintf(d->dir, sizeof d->dir, "%s", opts->dir) >= sizeof d->dir) {
			err = -ENAMETOOLONG;
			goto out;
		}
		err = ensure_dir(d->dir, true);
	} else {
		err = mmk_prof_dir(d->dir, sizeof d->dir);
	}
	if (err < 0)
		goto out;
	d->jit = calloc(JIT_BUCKETS, sizeof *d->jit);
	if (!d->jit) {
		err = -ENOMEM;
		goto out;
	}
	uint64_t period = (uint64_t)(1e9 / d->rate + 0.5);
	if ((err = listen_on(d)) < 0)
		goto out;
	if ((err = mmk_prof_ring_create(&d->ring, opts->records, period)) < 0)
		goto out;
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake up on time, not +50 us */
	struct rlimit rl; /* four descriptors per target (seven with a counter group): raise the soft limit */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (!opts->no_rt) {
		struct sched_param sp = { .sched_priority = 1 };
		d->rt = sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp) == 0;
	}
	if ((err = mmk_prof_timer_start(&d->tm, period)) < 0)
		goto out;
	d->start_ns = d->tm.start_ns;
	mmk_prof_sampler_opts so = { .ring = d->ring, .max_targets = opts->max_targets,
				     .start_ns = d->tm.start_ns };
	if ((err = mmk_prof_sampler_create(&d->smp, &so)) < 0)
		goto out;
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->epfd < 0) {
		err = -errno;
		goto out;
	}
	struct epoll_event ev = { .events = EPOLLIN };
	ev.data.u64 = 1;
	epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->tm.fd, &ev);
	ev.data.u64 = 2;
	epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->lfd, &ev);
	ev.data.u64 = 3;
	epoll_ctl(d->epfd, EPOLL_CTL_ADD, mmk_prof_sampler_exit_fd(d->smp), &ev);
	if (opts->ready_fd >= 0) {
		if (write(opts->ready_fd, "1", 1) < 0) {
			/* the parent went away; keep serving */
		}
		close(opts->ready_fd);
	}
	char *msg = malloc(4096);
	if (!msg) {
		err = -ENOMEM;
		goto out;
	}
	while (!d->quit && !(opts->stop && *opts->stop)) {
		struct epoll_event evs[32];
		int n = epoll_wait(d->epfd, evs, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		/* the timer first, so a busy socket cannot delay a sample */
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 != 1)
				continue;
			int64_t late = 0;
			if (mmk_prof_timer_wait(&d->tm, &late) == 0) {
				if (late < 0)
					late = 0;
				d->jit[late / 1000 < JIT_BUCKETS ? late / 1000 : JIT_BUCKETS - 1]++;
				d->jit_n++;
				if (late > d->jit_max)
					d->jit_max = late;
				mmk_prof_sampler_tick(d->smp, d->tm.tick);
			}
		}
		for (int i = 0; i < n; i++) {
			uint64_t k = evs[i].data.u64;
			if (k == 2) {
				on_accept(d);
			} else if (k == 3) {
				mmk_prof_sampler_reap(d->smp, d->tm.tick);
			} else if (k >= 16) {
				client *c = &d->cl[k - 16];
				if (c->fd < 0)
					continue;
				ssize_t m = recv(c->fd, msg, 4095, MSG_DONTWAIT);
				if (m <= 0) {
					if (m == 0 || (errno != EAGAIN && errno != EINTR))
						client_close(d, c);
					continue;
				}
				msg[m] = 0;
				handle(d, c, msg);
			}
		}
	}
	free(msg);
out:
	if (d->sock[0])
		unlink(d->sock);
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (d->cl[i].fd >= 0)
			close(d->cl[i].fd);
	if (d->lfd >= 0)
		close(d->lfd);
	if (d->epfd >= 0)
		close(d->epfd);
	mmk_prof_timer_stop(&d->tm);
	mmk_prof_sampler_destroy(d->smp);
	mmk_prof_ring_destroy(d->ring);
	free(d->jit);
	free(d);
	return err;
}

/* ---- CSV ------------------------------------------------------------------------- */
int mmk_prof_csv_format(const mmk_prof_record *r, char *buf, size_t len)
{
	return snprintf(buf, len, "%.6f,%d,%llu,%llu,%.6f,%.6f,%.6f", (double)r->t_ns / 1e9, (int)r->pid,
			(unsigned long long)r->minflt, (unsigned long long)r->majflt,
			(double)r->utime_ns / 1e9, (double)r->stime_ns / 1e9, (double)r->util_ppm / 1e6);
}

int mmk_prof_csv_parse(const char *line, mmk_prof_record *r)
{
	double t, ut, st, u;
	int pid;
	unsigned long long mi, ma;
	int used = 0;
	if (sscanf(line, "%lf,%d,%llu,%llu,%lf,%lf,%lf%n", &t, &pid, &mi, &ma, &ut, &st, &u, &used) != 7)
		return -EINVAL;
	const char *rest = line + used;
	while (*rest == '\r' || *rest == '\n' || *rest == ' ')
		rest++;
	if (*rest || t < 0 || ut < 0 || st < 0 || u < 0)
		return -EINVAL;
	*r = (mmk_prof_record){ .t_ns = (uint64_t)(t * 1e9 + 0.5), .pid = pid, .kind = MMK_PROF_SAMPLE,
				.minflt = mi, .majflt = ma, .utime_ns = (uint64_t)(ut * 1e9 + 0.5),
				.stime_ns = (uint64_t)(st * 1e9 + 0.5), .util_ppm = (uint32_t)(u * 1e6 + 0.5) };
	return 0;
}
