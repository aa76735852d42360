/* SPDX-License-Identifier: MIT */
/*
 * link_thread.c - a link's thread: one per link, started once the
 * handshake (link_hello.c) is done, runs the wake backend (io_uring or
 * epoll, wake.c) on the control socket and a kick eventfd: it reads
 * ATTACH messages into a FIFO that receivers take from, detects the peer's
 * death or hang-up (failing the link with -ECONNRESET), rejects anything
 * malformed (-EPROTO), and retries spilled sends while a lane has any.
 * The data path does not go through this thread. Past the fd budget
 * (link.c) it stops reading the socket; an orphaned link (no references
 * left, link.c) is freed here once its backlog is delivered.
 */
#include "link_int.h"

#include "ctl.h"
#include "wake.h"

#include "proto.h"

#include <cmesh/common.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A backlog's retry while the socket is throttled (no SPACE is read). */
#define THROTTLED_RETRY_NS 1000000
/* A drain owed: the first look again, and the longest wait between looks. */
#define DRAIN_RETRY_NS 1000000
#define DRAIN_RETRY_MAX_NS 256000000

static void on_sock(void *arg, int fd, uint32_t revents);

/* The FIFO holds its budget of fds: read no more ATTACHes for now. */
static bool over_budget(struct cmesh__link *l)
{
	bool over;

	pthread_mutex_lock(&l->att_lock);
	over = l->att_fds + ATTACH_MAX_FDS > l->fd_budget;
	pthread_mutex_unlock(&l->att_lock);
	return over;
}

/*
 * Link thread: watches the socket for `events`. False when it is not
 * watched (any more: the link failed).
 */
static bool watch_sock(struct cmesh__link *l, uint32_t events)
{
	if (!l->sock_watched)
		return false;
	if (l->sock_events == events)
		return true;
	cmesh__wake_del(l->wake, l->sock);
	if (cmesh__wake_add(l->wake, l->sock, events, on_sock, l)) {
		/* Cannot watch it any more: nothing else will tell. */
		l->sock_watched = false;
		cmesh__link_fail(l, -ECONNRESET);
		atomic_store_explicit(&l->sock_read, true,
				      memory_order_release);
		return false;
	}
	l->sock_events = events;
	return true;
}

/*
 * Link thread: stops (on) or resumes (off) reading the socket; throttled,
 * it is watched for its hang-up only. The fds still queued in the socket
 * are the kernel's, not in our fd table: a peer that sends fds faster
 * than our receiver takes their records waits, it cannot fill our table.
 */
static void throttle(struct cmesh__link *l, bool on)
{
	if (atomic_load_explicit(&l->sock_throttled, memory_order_relaxed) ==
		    on ||
	    !watch_sock(l, (on ? POLLRDHUP : POLLIN | POLLRDHUP) |
				   (l->sock_events & POLLOUT)))
		return;
	atomic_store_explicit(&l->sock_throttled, on, memory_order_relaxed);
}

/* Link thread: the socket polled readable or hung up. */
static void on_sock(void *arg, int fd, uint32_t revents)
{
	struct cmesh__link *l = arg;
	/* An ATTACH with every port a type may hold is the largest. */
	unsigned char buf[sizeof(struct cmesh_ctl_attach) +
			  CMESH_CTL_MAX_PORTS * sizeof(struct cmesh_ctl_port)];
	int fds[CMESH__CTL_MAX_FDS];

	for (;;) {
		uint32_t nfds = 0;
		int n;

		if (over_budget(l)) {
			throttle(l, true);
			break;
		}
		n = cmesh__ctl_recv_nb(fd, buf, sizeof(buf), fds,
				       CMESH__CTL_MAX_FDS, &nfds);

		if (n == -EAGAIN)
			break;
		/*
		 * A peer that closed with our data unread makes the next read
		 * fail with ECONNRESET, then its own queued messages still
		 * come: read them (their fds belong to records it published).
		 */
		if (n == -ECONNRESET) {
			revents |= POLLHUP;
			continue;
		}
		if (n < 0) {
			/* -EMFILE: fds of an ATTACH were lost to a full fd
			 * table; its record can never be delivered whole. */
			cmesh__link_fail(l, n == -EPROTO || n == -EMFILE ?
						    n :
						    -ECONNRESET);
			return;
		}
		n = cmesh__lanes_handle_ctl(l, buf, n, fds, nfds);
		if (n) {
			for (uint32_t i = 0; i < nfds; i++)
				close(fds[i]);
			cmesh__link_fail(l, n);
			return;
		}
	}
	if (revents & (POLLHUP | POLLERR | POLLRDHUP))
		cmesh__link_fail(l, -ECONNRESET);
}

static void on_kick(void *arg, int fd, uint32_t revents)
{
	(void)arg;
	(void)revents;
	cmesh__eventfd_drain(fd);
}

/* Link thread: the peer process exited (its pidfd polled readable). */
static void on_pidfd(void *arg, int fd, uint32_t revents)
{
	(void)fd;
	(void)revents;
	cmesh__link_fail(arg, -ECONNRESET);
}

/*
 * True once an orphaned link has nothing left to deliver: its spilled
 * sends (with a CLOSE record at their end) reached the ring, or the link
 * failed and they never will.
 */
static bool orphan_done(struct cmesh__link *l)
{
	return atomic_load_explicit(&l->orphan, memory_order_acquire) &&
	       (!cmesh__lanes_spilling(l) || cmesh__link_failed(l));
}

/*
 * The link thread's wake loop broke (the link failed with it): it waits
 * on its kick eventfd alone for what the loop would still have done, an
 * introduction's reference to drop (a kick follows its store), its own
 * last reference (the link then freed here), or its stop (joined). True
 * if it freed the link.
 */
static bool linger(struct cmesh__link *l)
{
	for (;;) {
		struct pollfd p = { .fd = l->kick_efd, .events = POLLIN };
		bool orphaned;

		cmesh__intro_release(l);
		pthread_mutex_lock(&l->orphan_lock);
		orphaned =
			atomic_load_explicit(&l->orphan, memory_order_acquire);
		pthread_mutex_unlock(&l->orphan_lock);
		if (orphaned) {
			pthread_detach(pthread_self());
			cmesh__link_free_resources(l);
			return true;
		}
		if (atomic_load_explicit(&l->stop, memory_order_acquire))
			return false;
		if (poll(&p, 1, -1) > 0)
			cmesh__eventfd_drain(l->kick_efd);
	}
}

static void *link_thread(void *arg)
{
	struct cmesh__link *l = arg;

	while (!atomic_load_explicit(&l->stop, memory_order_acquire)) {
		bool out;
		int r;

		int64_t deadline = CMESH_DEADLINE_NONE;

		/*
		 * No timer as a rule: a SPACE, a kick or the socket wakes us. But
		 * throttled (past our fd budget) we read no SPACE either: a
		 * backlog then looks again every THROTTLED_RETRY_NS.
		 */
		if (atomic_load_explicit(&l->sock_throttled,
					 memory_order_relaxed) &&
		    cmesh__lanes_spilling(l))
			deadline = cmesh_clock_now() + THROTTLED_RETRY_NS;
		/*
		 * A drain owed (a closed receiver's ring, a claim not yet
		 * written there) looks again after 1 ms, 2, 4 ... 256.
		 */
		if (l->drains_owed) {
			int64_t at;

			l->drain_gap = l->drain_gap ? l->drain_gap :
						      DRAIN_RETRY_NS;
			at = cmesh_clock_now() + l->drain_gap;
			if (at < deadline)
				deadline = at;
			if (l->drain_gap < DRAIN_RETRY_MAX_NS)
				l->drain_gap *= 2;
		} else {
			l->drain_gap = 0;
		}
		r = cmesh__wake_run(l->wake, deadline);
		if (r < 0 && r != -EINTR) {
			cmesh__link_fail(l, -ECONNRESET);
			cmesh__link_hooks_run(l);
			if (linger(l))
				return NULL; /* freed */
			break;
		}
		if (cmesh__link_failed(l) && l->pidfd_watched) {
			/* Readable for good once the process is gone. */
			cmesh__wake_del(l->wake, l->pidfd);
			l->pidfd_watched = false;
		}
		if (atomic_load_explicit(&l->sock_throttled,
					 memory_order_relaxed) &&
		    !over_budget(l)) {
			throttle(l, false);
			on_sock(l, l->sock, 0); /* what waited meanwhile */
		}
		if (cmesh__link_failed(l) && l->sock_watched &&
		    !atomic_load_explicit(&l->sock_throttled,
					  memory_order_relaxed)) {
			/* Take the ATTACHes already queued: their records were
			 * published before the failure (within the budget:
			 * throttled, the receiver's takes resume us). */
			on_sock(l, l->sock, 0);
			if (!atomic_load_explicit(&l->sock_throttled,
						  memory_order_relaxed)) {
				cmesh__wake_del(l->wake, l->sock);
				l->sock_watched = false;
				/* Pairs with failed_and_read()'s acquire. */
				atomic_store_explicit(&l->sock_read, true,
						      memory_order_release);
				cmesh__lanes_wake_all(l);
			}
		}
		if (cmesh__link_failed(l) ||
		    atomic_load_explicit(&l->holders_only,
					 memory_order_relaxed))
			cmesh__link_hooks_run(l); /* once */
		if (cmesh__link_failed(l)) {
			cmesh__intro_release(l);
			cmesh__wakes_peer_drop(l);
		}
		/* Backlogs, control messages, lanes that are done; what
		 * meets a full socket goes when it polls writable. */
		out = cmesh__lanes_sweep(l);
		if (l->sock_watched)
			watch_sock(l, (l->sock_events & ~(uint32_t)POLLOUT) |
					      (out ? POLLOUT : 0));
		/* Not before cmesh__link_put() is done with `l`. */
		pthread_mutex_lock(&l->orphan_lock);
		bool done = orphan_done(l);
		pthread_mutex_unlock(&l->orphan_lock);
		if (done) {
			/* Nobody will join us: free everything and leave. */
			pthread_detach(pthread_self());
			cmesh__link_free_resources(l);
			return NULL;
		}
	}
	return NULL;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

/*
 * A pidfd of the peer process, if we know which process it is: the
 * socket's peer (SO_PEERPIDFD, or pidfd_open() of the SO_PEERCRED pid)
 * or the child we forked. Never the HELLO's pid: a peer's word, and in
 * another pid namespace not even a pid of ours. -1 when there is none.
 */
static int peer_pidfd(const struct cmesh__link *l, bool from_cred)
{
	socklen_t len = sizeof(int);
	int fd = -1;

	if (!l->pid_known)
		return -1;
	if (from_cred &&
	    getsockopt(l->sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 &&
	    fd >= 0)
		return fd;
	fd = (int)syscall(SYS_pidfd_open, l->peer_pid, 0);
	return fd < 0 ? -1 : fd;
}

/*
 * The peer's death has two signals: the control socket's hang-up and,
 * where we know the process, its pidfd. The second one also covers a
 * peer whose end of the socket lives on elsewhere (passed back to us, or
 * inherited by a child) and an exit whose socket close the kernel defers
 * (a dying io_uring user's files are released by a worker later).
 */
static int watch_peer_process(struct cmesh__link *l)
{
	int r;

	l->pidfd = peer_pidfd(l, !l->pid_from_fork);
	if (l->pidfd < 0)
		return 0; /* the socket alone: no pidfd (old kernel, unknown) */
	r = cmesh__wake_add(l->wake, l->pidfd, POLLIN, on_pidfd, l);
	if (!r)
		l->pidfd_watched = true;
	return r;
}

/*
 * The link thread: every signal blocked (the application's handlers run
 * on its own threads, and no signal interrupts the loop) and named, so
 * that a VMM's operator sees whose thread it is.
 */
static int start_thread(struct cmesh__link *l)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&l->thread, NULL, link_thread, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return -r;
	pthread_setname_np(l->thread, "cmesh-link");
	return 0;
}

int cmesh__link_start(struct cmesh__link *l)
{
	int r, fl = fcntl(l->sock, F_GETFL);

	if (fl < 0 || fcntl(l->sock, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	l->kick_efd = cmesh__eventfd_new();
	if (l->kick_efd < 0)
		return l->kick_efd;
	r = cmesh__wake_new_default(&l->wake);
	if (r)
		return r;
	r = cmesh__wake_add(l->wake, l->sock, POLLIN | POLLRDHUP, on_sock, l);
	if (r)
		return r;
	l->sock_watched = true;
	l->sock_events = POLLIN | POLLRDHUP;
	r = cmesh__wake_add(l->wake, l->kick_efd, POLLIN, on_kick, l);
	if (r)
		return r;
	r = watch_peer_process(l);
	if (r)
		return r;
	r = start_thread(l);
	if (r)
		return r;
	l->thread_started = true;
	return 0;
}
