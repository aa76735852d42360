/* SPDX-License-Identifier: MIT */
/*
 * listen.c - cmesh_listen / cmesh_listener_accept / cmesh_connect: unix
 * socket rendezvous for unrelated processes, funnelled into node.c's
 * join (cmesh__node_join).
 */
#include "node.h"

#include "cancel.h"
#include "ctl.h"
#include "link.h"
#include "opts.h"
#include "park.h"
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * Connections accepted whose handshake has not begun: at most this many
 * wait (a flood of clients that never say HELLO evicts only its own), each
 * until its handshake limit.
 */
#define LISTEN_PENDING 64

struct pending_conn {
	int sock;
	int64_t expires;
};

struct cmesh_listener {
	int sock;
	int ep; /* epoll: the socket and every pending connection */
	uid_t uid;
	uint32_t flags;
	uint32_t npend;
	struct pending_conn pend[LISTEN_PENDING];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

/* ---- listen / accept / connect ---- */

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	size_t n;

	if (!path)
		return -EINVAL;
	n = strlen(path);
	if (n == 0)
		return -EINVAL;
	if (n >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, n);
	return 0;
}

/*
 * Binds `sock` to `sa` (path `path`) and listens, so that the path names
 * the socket only once it listens: bound under a name of its own beside
 * it first, then linked to `path` (never replacing a file there: a stale
 * socket file was removed before), its own name removed. A client that
 * waits for the path to appear and connects at once finds a listener, not
 * -ECONNREFUSED. A path too long for a name beside it is bound directly.
 */
static int bind_listening(int sock, const struct sockaddr_un *sa,
			  const char *path)
{
	static _Atomic uint32_t seq;
	struct sockaddr_un t = *sa;
	size_t n = strlen(path);
	int k, r = 0;

	k = snprintf(t.sun_path + n, sizeof(t.sun_path) - n, ".%d.%u.tmp",
		     (int)getpid(), (unsigned)atomic_fetch_add(&seq, 1));
	if (k < 0 || (size_t)k >= sizeof(t.sun_path) - n) {
		if (bind(sock, (const struct sockaddr *)sa, sizeof(*sa)) ||
		    listen(sock, 16))
			return -errno;
		return 0;
	}
	if (bind(sock, (const struct sockaddr *)&t, sizeof(t))) {
		struct stat st;

		if (errno != EADDRINUSE)
			return -errno;
		/* A socket file of a process that died in between: ours. */
		if (lstat(t.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(t.sun_path);
		if (bind(sock, (const struct sockaddr *)&t, sizeof(t)))
			return -errno;
	}
	if (listen(sock, 16) || link(t.sun_path, path))
		r = -errno;
	unlink(t.sun_path);
	return r == -EEXIST ? -EADDRINUSE : r;
}

int cmesh_listen(const char *path, const cmesh_listen_opts *opts,
		 cmesh_listener **out)
{
	struct sockaddr_un sa;
	cmesh_listen_opts o;
	cmesh_listener *l;
	struct stat st;
	int r;

	if (!out)
		return -EINVAL;
	r = unix_addr(path, &sa);
	if (!r)
		r = cmesh__opts_copy(&o, sizeof(o), opts);
	if (r)
		return r;
	if ((o.flags & ~CMESH_LISTEN_ANY_UID) || o.reserved)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->flags = o.flags;
	l->uid = o.uid ? (uid_t)o.uid : geteuid();
	memcpy(l->path, sa.sun_path, sizeof(l->path));
	l->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (l->sock < 0) {
		r = -errno;
		goto out_free;
	}
	/* Replace a stale socket file, never any other kind of file. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	r = bind_listening(l->sock, &sa, path);
	if (r)
		goto out_close;
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	if (l->ep < 0) {
		r = -errno;
		goto out_unlink;
	}
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->sock,
		      &(struct epoll_event){ .events = EPOLLIN,
					     .data.fd = l->sock })) {
		r = -errno;
		close(l->ep);
		goto out_unlink;
	}
	*out = l;
	return 0;

out_unlink:
	unlink(l->path);
out_close:
	close(l->sock);
out_free:
	free(l);
	return r;
}

/* Stops waiting for pending connection i (closes it). */
static void pend_drop(cmesh_listener *l, uint32_t i, bool close_it)
{
	epoll_ctl(l->ep, EPOLL_CTL_DEL, l->pend[i].sock, NULL);
	if (close_it)
		close(l->pend[i].sock);
	l->pend[i] = l->pend[--l->npend];
}

/* A connection accepted now: waits for its HELLO, within `limit` ns. */
static void pend_add(cmesh_listener *l, int s, int64_t limit)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP,
				  .data.fd = s };

	if (l->npend == LISTEN_PENDING) {
		uint32_t oldest = 0;

		for (uint32_t i = 1; i < l->npend; i++)
			if (l->pend[i].expires < l->pend[oldest].expires)
				oldest = i;
		pend_drop(l, oldest, true);
	}
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, s, &ev)) {
		close(s);
		return;
	}
	l->pend[l->npend++] = (struct pending_conn){ s, limit };
}

/* Closes the pending connections past their limit; the next limit. */
static int64_t pend_expire(cmesh_listener *l, int64_t now)
{
	int64_t next = CMESH_DEADLINE_NONE;

	for (uint32_t i = 0; i < l->npend;) {
		if (l->pend[i].expires <= now) {
			pend_drop(l, i, true);
			continue;
		}
		if (l->pend[i].expires < next)
			next = l->pend[i].expires;
		i++;
	}
	return next;
}

/*
 * Whether pending connection `s` that polled readable has said something
 * (1), hung up without a word (0: nothing to join, it holds no accept
 * up), or has nothing yet (-1).
 */
static int pend_spoke(int s)
{
	char c;
	ssize_t n = recv(s, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n > 0)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return -1;
	return 0;
}

/*
 * epoll_wait() on `ep` for up to `ms`, or until `cancel_fd` (-1: none)
 * polls readable: -ECANCELED. Returns the events' count or -errno.
 */
static int epoll_wait_or_cancel(int ep, struct epoll_event *ev, int max, int ms,
				int cancel_fd)
{
	struct pollfd p[2] = { { .fd = ep, .events = POLLIN },
			       { .fd = cancel_fd, .events = POLLIN } };
	int n;

	if (cancel_fd >= 0) {
		n = poll(p, 2, ms);
		if (n < 0)
			return -errno;
		if (p[1].revents)
			return -ECANCELED;
		if (n == 0)
			return 0;
		ms = 0;
	}
	n = epoll_wait(ep, ev, max, ms);
	return n < 0 ? -errno : n;
}

/*
 * Waits in the listener's epoll (and on `cancel_fd`, -1: none) until a
 * pending connection has spoken, then joins it: the body of
 * cmesh_listener_accept().
 */
static int accept_wait(cmesh_listener *l, int64_t deadline, int64_t limit,
		       int cancel_fd, const cmesh_type *out_type,
		       const cmesh_type *in_type, const cmesh_node_opts *opts,
		       cmesh_node **out_node, cmesh_sender **out_tx,
		       cmesh_receiver **out_rx)
{
	int r;

	for (;;) {
		struct epoll_event ev[8];
		int64_t now = cmesh_clock_now(), next = pend_expire(l, now);
		int n;

		if (deadline < next)
			next = deadline;
		n = epoll_wait_or_cancel(l->ep, ev, 8,
					 cmesh__park_ms_until(next), cancel_fd);
		if (n < 0 && n != -EINTR)
			return n;
		for (int i = 0; i < n; i++) {
			uid_t uid;
			int s;

			if (ev[i].data.fd != l->sock) {
				/* Its HELLO is there, or it hung up unheard. */
				for (uint32_t k = 0; k < l->npend; k++) {
					int spoke;

					if (l->pend[k].sock != ev[i].data.fd)
						continue;
					s = l->pend[k].sock;
					spoke = pend_spoke(s);
					if (spoke < 0)
						break; /* nothing yet */
					pend_drop(l, k, !spoke);
					if (!spoke)
						break;
					return cmesh__node_join(
						s, out_type, in_type, opts, 0,
						true, out_node, out_tx, out_rx);
				}
				continue;
			}
			s = accept4(l->sock, NULL, NULL, SOCK_CLOEXEC);
			if (s < 0) {
				if (errno == EAGAIN || errno == EINTR ||
				    errno == ECONNABORTED)
					continue;
				return -errno;
			}
			r = cmesh__ctl_peer_uid(s, &uid);
			if (r || (!(l->flags & CMESH_LISTEN_ANY_UID) &&
				  uid != l->uid)) {
				close(s);
				return r ? r : -EPERM;
			}
			pend_add(l, s, cmesh_deadline_after(limit));
		}
		/* Every round: clients that keep connecting hold up nothing. */
		if (cmesh_clock_now() >= deadline)
			return -ETIMEDOUT;
	}
}

/*
 * New connections wait in `pend` until their first message (the peer's
 * HELLO) is there: a client that connects and says nothing holds no
 * accept, and the handshake of one that spoke does not wait on it.
 */
int cmesh_listener_accept(cmesh_listener *l, int64_t deadline,
			  const cmesh_type *out_type, const cmesh_type *in_type,
			  const cmesh_node_opts *opts, cmesh_node **out_node,
			  cmesh_sender **out_tx, cmesh_receiver **out_rx)
{
	struct cmesh__queue_opts qo;
	struct cmesh__link_opts lo;
	struct cmesh__ctx_fd cf;
	const cmesh_ctx *ctx;
	int64_t limit;
	int r;

	if (!l)
		return -EINVAL;
	/* The handshake limit of the opts, for connections waiting. */
	r = cmesh__node_opts(opts, 0, &lo, &qo, &ctx);
	if (r)
		return r;
	/* Connections waiting keep the handshake's limit, not the context's. */
	limit = lo.deadline - cmesh_clock_now();
	deadline = cmesh__node_ctx_deadline(ctx, deadline);
	r = cmesh__ctx_fd_open(ctx, &cf);
	if (r)
		return r;
	r = accept_wait(l, deadline, limit, cf.fd, out_type, in_type, opts,
			out_node, out_tx, out_rx);
	cmesh__ctx_fd_close(&cf);
	return r;
}

int cmesh_listener_fd(const cmesh_listener *l)
{
	return l ? l->ep : -EINVAL;
}

void cmesh_listener_free(cmesh_listener *l)
{
	if (!l)
		return;
	while (l->npend)
		pend_drop(l, l->npend - 1, true);
	close(l->ep);
	close(l->sock);
	unlink(l->path);
	free(l);
}

/* Retries of a connect to a listener whose backlog is full, at most. */
#define CONNECT_RETRY_MS 10

/*
 * Connects the non-blocking unix socket `s` to `sa`, until `deadline` or
 * until `cancel_fd` (-1: none) polls readable (-ECANCELED): a listener
 * whose backlog is full (-EAGAIN at once, for a unix socket) is tried
 * again every CONNECT_RETRY_MS at most. Leaves `s` blocking again.
 */
static int connect_wait(int s, const struct sockaddr_un *sa, int64_t deadline,
			int cancel_fd)
{
	for (;;) {
		struct pollfd p = { .fd = cancel_fd, .events = POLLIN };
		int64_t left;
		int ms;

		if (connect(s, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			break;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		left = deadline - cmesh_clock_now();
		if (left <= 0)
			return -ETIMEDOUT;
		ms = left / 1000000 < CONNECT_RETRY_MS ?
			     (int)(left / 1000000) + 1 :
			     CONNECT_RETRY_MS;
		if (poll(&p, cancel_fd >= 0 ? 1 : 0, ms) > 0 && p.revents)
			return -ECANCELED;
	}
	if (fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK))
		return -errno;
	return 0;
}

int cmesh_connect(const char *path, const cmesh_type *out_type,
		  const cmesh_type *in_type, const cmesh_node_opts *opts,
		  cmesh_node **out_node, cmesh_sender **out_tx,
		  cmesh_receiver **out_rx)
{
	struct cmesh__queue_opts qo;
	struct cmesh__link_opts lo;
	struct cmesh__ctx_fd cf;
	const cmesh_ctx *ctx;
	struct sockaddr_un sa;
	int s, r;

	r = unix_addr(path, &sa);
	if (!r) /* options and an ended context: before anything starts */
		r = cmesh__node_opts(opts, 0, &lo, &qo, &ctx);
	if (r)
		return r;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -errno;
	r = cmesh__ctx_fd_open(ctx, &cf);
	if (!r) {
		r = connect_wait(s, &sa,
				 cmesh__node_ctx_deadline(ctx, lo.deadline),
				 cf.fd);
		cmesh__ctx_fd_close(&cf);
	}
	if (r) {
		close(s);
		return r;
	}
	/*
	 * Not the socket's creds: they name whoever called listen(), and a
	 * server may accept in a child it forked after.
	 */
	return cmesh__node_join(s, out_type, in_type, opts, 0, false, out_node,
				out_tx, out_rx);
}
