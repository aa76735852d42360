/* SPDX-License-Identifier: MIT */
/*
 * ctl.h - the control path's socket helpers: one message per call over a
 * SOCK_SEQPACKET unix socket, with file descriptors (SCM_RIGHTS).
 *
 * A message carries at least one byte: a 0-byte read means the peer closed
 * its end (SEQPACKET cannot tell an empty message from end of file). Whether
 * a call blocks is the socket's O_NONBLOCK setting. No call raises SIGPIPE.
 */
#ifndef CMESH_CTL_H
#define CMESH_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Most fds one message may carry. */
#define CMESH__CTL_MAX_FDS 128u

/*
 * A connected pair of SOCK_SEQPACKET | SOCK_CLOEXEC unix sockets, blocking,
 * returned owned in out[0] and out[1]. Returns 0, -EINVAL (NULL out) or a
 * kernel error (-EMFILE, ...).
 */
int cmesh__ctl_socketpair(int out[2]);

/*
 * Sends one message of `len` (>= 1) bytes from `buf` with `nfds` fds
 * (borrowed: the caller still owns and closes them; the peer gets copies).
 * All or nothing. Returns 0, or: -EINVAL (sock < 0, len 0, NULL buf or
 * NULL fds with nfds > 0, a negative fd), -EMSGSIZE (more than
 * CMESH__CTL_MAX_FDS fds, or larger than the socket allows), -EAGAIN
 * (non-blocking socket full), -EPIPE (peer closed), -ECONNRESET, or another
 * kernel error. Retries EINTR.
 */
int cmesh__ctl_send(int sock, const void *buf, size_t len, const int *fds,
		    uint32_t nfds);

/*
 * Receives one message into buf (cap >= 1 bytes) and its fds into
 * fds[0..*out_nfds) (returned owned, each with FD_CLOEXEC set). Returns the
 * message's length (>= 1), or, with *out_nfds = 0 and every fd that came
 * with the message closed:
 *   -EINVAL      sock < 0, NULL buf, cap 0, NULL out_nfds, or NULL fds with
 *                fd_cap > 0;
 *   -EPROTO      the message did not fit (more than `cap` bytes: the rest
 *                is discarded; more than `fd_cap` fds: MSG_CTRUNC), came
 *                with a control message other than SCM_RIGHTS (e.g.
 *                credentials, if SO_PASSCRED is on), or was empty with fds;
 *   -EMFILE      its fds were cut off (MSG_CTRUNC) because our fd table
 *                is full (the message is lost, as with -EPROTO);
 *   -EPIPE       the peer closed its end and every message was read;
 *   -EAGAIN      non-blocking socket with nothing to read;
 *   -ECONNRESET or another kernel error.
 * Retries EINTR.
 */
int cmesh__ctl_recv(int sock, void *buf, size_t cap, int *fds, uint32_t fd_cap,
		    uint32_t *out_nfds);

/*
 * As cmesh__ctl_send() and cmesh__ctl_recv(), but never blocking, whatever
 * the socket's O_NONBLOCK (MSG_DONTWAIT): -EAGAIN instead. For a link's
 * socket, whose file description a peer may share (it made the pair: a
 * supervisor, an introducer) and make blocking.
 */
int cmesh__ctl_send_nb(int sock, const void *buf, size_t len, const int *fds,
		       uint32_t nfds);
int cmesh__ctl_recv_nb(int sock, void *buf, size_t cap, int *fds,
		       uint32_t fd_cap, uint32_t *out_nfds);

/*
 * The uid of the process that created the peer socket (SO_PEERCRED), in
 * *out. Returns 0, -EINVAL (sock < 0, NULL out), or a kernel error
 * (-ENOTSOCK, ...).
 */
int cmesh__ctl_peer_uid(int sock, uid_t *out);

/* True if `fd` is a unix socket of `type` (checked, not trusted). */
bool cmesh__ctl_is_unix(int fd, int type);

/* ---- wake sockets: SOCK_DGRAM unix pairs, one byte per wake ---- */

/* True if `fd` is a unix datagram socket (checked, not trusted). */
bool cmesh__ctl_is_wake_socket(int fd);

/* A non-blocking, close-on-exec datagram pair. 0 or -errno. */
int cmesh__ctl_wake_pair(int out[2]);

/* One wake, MSG_DONTWAIT (per call: the peer may share the description). */
void cmesh__ctl_wake_send(int fd);

/*
 * Empties a wake socket only this process holds, without ever blocking,
 * in a bounded number of calls. -1 is a no-op.
 */
void cmesh__ctl_wake_drain(int fd);

#endif
