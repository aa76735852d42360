/* SPDX-License-Identifier: MIT */
/*
 * ctl.c - control-path messages over SOCK_SEQPACKET unix sockets, with fds.
 *
 * Received fds are the one resource a peer can push into this process, so
 * cmesh__ctl_recv() either hands every fd of a message to the caller or
 * closes every one: the caller never has to clean up after a failed
 * receive. The control buffer is sized from the caller's fd_cap, so a peer
 * that sends more fds than the caller can take gets MSG_CTRUNC from the
 * kernel (which then installs only what fits: those are closed here).
 * Received fds arrive with FD_CLOEXEC (MSG_CMSG_CLOEXEC), so a concurrent
 * fork() and exec() elsewhere in the process cannot leak them.
 *
 * Sends use MSG_NOSIGNAL: a closed peer is -EPIPE, never SIGPIPE.
 */
#include "ctl.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

union cmsg_buf {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int) * CMESH__CTL_MAX_FDS)];
};

/* The fds in an SCM_RIGHTS header, bounded by the control buffer. */
static size_t cmsg_nfds(const struct msghdr *msg, const struct cmsghdr *c)
{
	const char *end = (const char *)msg->msg_control + msg->msg_controllen;
	const char *data = (const char *)CMSG_DATA(c);
	size_t n;

	if (c->cmsg_len < CMSG_LEN(0) || data > end)
		return 0;
	n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	if (n > (size_t)(end - data) / sizeof(int))
		n = (size_t)(end - data) / sizeof(int);
	return n;
}

static int cmsg_fd(const struct cmsghdr *c, size_t k)
{
	int fd;

	memcpy(&fd, (const char *)CMSG_DATA(c) + k * sizeof(int), sizeof(fd));
	return fd;
}

/* Closes every fd that came with `msg`. */
static void close_received(struct msghdr *msg)
{
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t k = 0, n = cmsg_nfds(msg, c); k < n; k++)
			close(cmsg_fd(c, k));
	}
}

int cmesh__ctl_socketpair(int out[2])
{
	if (!out)
		return -EINVAL;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, out) < 0)
		return -errno;
	return 0;
}

static int ctl_send(int sock, const void *buf, size_t len, const int *fds,
		    uint32_t nfds, int flags)
{
	union cmsg_buf cb;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	ssize_t n;

	if (sock < 0 || !buf || !len || (nfds && !fds))
		return -EINVAL;
	if (nfds > CMESH__CTL_MAX_FDS || len > INT_MAX)
		return -EMSGSIZE;
	for (uint32_t i = 0; i < nfds; i++) {
		if (fds[i] < 0)
			return -EINVAL;
	}
	if (nfds) {
		memset(&cb, 0, sizeof(cb));
		msg.msg_control = cb.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return (size_t)n == len ? 0 : -EIO; /* SEQPACKET: all or nothing */
}

static int ctl_recv(int sock, void *buf, size_t cap, int *fds, uint32_t fd_cap,
		    uint32_t *out_nfds, int flags)
{
	union cmsg_buf cb;
	struct iovec iov = { .iov_base = buf,
			     .iov_len = cap > INT_MAX ? INT_MAX : cap };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	uint32_t got = 0;
	bool foreign = false;
	ssize_t n;

	if (out_nfds)
		*out_nfds = 0;
	if (sock < 0 || !buf || !cap || !out_nfds || (fd_cap && !fds))
		return -EINVAL;
	if (fd_cap > CMESH__CTL_MAX_FDS)
		fd_cap = CMESH__CTL_MAX_FDS;
	if (fd_cap) {
		msg.msg_control = cb.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * fd_cap);
	}
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;

	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			foreign = true;
			continue;
		}
		for (size_t k = 0, nk = cmsg_nfds(&msg, c); k < nk; k++) {
			if (got < fd_cap)
				fds[got] = cmsg_fd(c, k);
			got++;
		}
	}
	if (foreign || got > fd_cap || (n == 0 && got) ||
	    (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
		int r = -EPROTO;

		/*
		 * The kernel also truncates when it cannot install an fd (our
		 * fd table is full): the control buffer had room for fd_cap
		 * fds, so fewer than that with MSG_CTRUNC means it stopped
		 * installing them, not that the peer sent too many.
		 */
		if ((msg.msg_flags & MSG_CTRUNC) && !foreign && got < fd_cap)
			r = -EMFILE;
		close_received(&msg);
		return r;
	}
	if (n == 0)
		return -EPIPE; /* end of file: messages are never empty */
	*out_nfds = got;
	return (int)n;
}

int cmesh__ctl_send(int sock, const void *buf, size_t len, const int *fds,
		    uint32_t nfds)
{
	return ctl_send(sock, buf, len, fds, nfds, 0);
}

int cmesh__ctl_send_nb(int sock, const void *buf, size_t len, const int *fds,
		       uint32_t nfds)
{
	return ctl_send(sock, buf, len, fds, nfds, MSG_DONTWAIT);
}

int cmesh__ctl_recv(int sock, void *buf, size_t cap, int *fds, uint32_t fd_cap,
		    uint32_t *out_nfds)
{
	return ctl_recv(sock, buf, cap, fds, fd_cap, out_nfds, 0);
}

int cmesh__ctl_recv_nb(int sock, void *buf, size_t cap, int *fds,
		       uint32_t fd_cap, uint32_t *out_nfds)
{
	return ctl_recv(sock, buf, cap, fds, fd_cap, out_nfds, MSG_DONTWAIT);
}

int cmesh__ctl_peer_uid(int sock, uid_t *out)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (sock < 0 || !out)
		return -EINVAL;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -errno;
	if (len != sizeof(uc))
		return -EPROTO;
	*out = uc.uid;
	return 0;
}

/* ---- wake sockets ---- */

bool cmesh__ctl_is_unix(int fd, int type)
{
	int v = 0;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) || v != AF_UNIX)
		return false;
	len = sizeof(v);
	return !getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) && v == type;
}

bool cmesh__ctl_is_wake_socket(int fd)
{
	return cmesh__ctl_is_unix(fd, SOCK_DGRAM);
}

int cmesh__ctl_wake_pair(int out[2])
{
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
		       out))
		return -errno;
	return 0;
}

void cmesh__ctl_wake_send(int fd)
{
	/* A full socket (EAGAIN) has a wake queued already. */
	(void)send(fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/*
 * WAKE_BATCH datagrams per call with MSG_DONTWAIT, until empty or after
 * WAKE_CALLS calls (more than a socket buffer holds): a peer that floods
 * it costs a bounded number of calls per wake.
 */
#define WAKE_BATCH 32
#define WAKE_CALLS 64

void cmesh__ctl_wake_drain(int fd)
{
	struct mmsghdr msgs[WAKE_BATCH];
	struct iovec iov[WAKE_BATCH];
	char b[WAKE_BATCH];

	if (fd < 0)
		return;
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < WAKE_BATCH; i++) {
		iov[i].iov_base = &b[i];
		iov[i].iov_len = 1;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	for (int calls = 0; calls < WAKE_CALLS;) {
		int n = recvmmsg(fd, msgs, WAKE_BATCH, MSG_DONTWAIT, NULL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < WAKE_BATCH)
			break; /* empty now (or an error: nothing to wait for) */
		calls++;
	}
}
