/* SPDX-License-Identifier: MIT */
/*
 * link.h - a connection to one peer process: the control socket, the two
 * arenas, the two lanes (one ring each way), the fds in flight, failure,
 * and the background thread that reads the socket.
 */
#ifndef CMESH_LINK_H
#define CMESH_LINK_H

#include <cmesh/type.h>

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct cmesh__link;
struct cmesh__lane;

struct cmesh__link_opts {
	uint32_t ring_cap;    /* bytes of the ring this side writes */
	int64_t spin_ns;      /* receiver spin before sleeping, 0: none */
	uint64_t max_trail;   /* CMESH_MAX_MESSAGE */
	uint64_t max_backlog; /* bytes the out lane may queue past its ring */
	int64_t deadline;     /* handshake deadline, CLOCK_MONOTONIC ns */
	pid_t peer_pid;	      /* known peer (we forked it), or 0 */
	bool cred_is_peer;    /* the socket's SO_PEERCRED names the peer */
};

/*
 * Handshakes over `sock` (taken in every case) and starts the link's
 * thread. The caller gets one reference. Errors: -EBADMSG (the sides
 * disagree on a type), -EPROTO, -ETIMEDOUT, -ECONNRESET, -ENOMEM, -errno.
 */
int cmesh__link_new(int sock, const cmesh_type *out_type,
		    const cmesh_type *in_type,
		    const struct cmesh__link_opts *opts,
		    struct cmesh__link **out);

void cmesh__link_get(struct cmesh__link *l);

/* Drops a reference; the last one stops the thread and frees it all. */
void cmesh__link_put(struct cmesh__link *l);

/* The lane that writes to the peer, and the one that reads from it. */
struct cmesh__lane *cmesh__link_out(struct cmesh__link *l);
struct cmesh__lane *cmesh__link_in(struct cmesh__link *l);

pid_t cmesh__link_peer_pid(const struct cmesh__link *l);

/*
 * The receiving side is gone: closes every fd in the FIFO, and every fd
 * that arrives from now on.
 */
void cmesh__link_drop_attachments(struct cmesh__link *l);

/* Our own arena (tests use it to play a hostile peer). */
struct cmesh__arena *cmesh__link_own_arena(struct cmesh__link *l);

/* True when ATTACH number `seq` is next in the FIFO (or the link failed). */
bool cmesh__link_attach_ready(struct cmesh__link *l, uint64_t seq);
int cmesh__link_sock(const struct cmesh__link *l);

/* 0 while healthy, else the failure every port sees (-ECONNRESET, ...). */
int cmesh__link_failed(const struct cmesh__link *l);

/* The word cmesh__link_failed() loads, for callers on a fast path. */
const _Atomic int *cmesh__link_failed_word(const struct cmesh__link *l);

/*
 * Fails the link (first error wins): shuts the socket down so the peer
 * sees it too, and wakes every receiver and waitset on it.
 */
void cmesh__link_fail(struct cmesh__link *l, int err);

/*
 * Sends an ATTACH carrying `fds` (borrowed: the caller closes its copies)
 * and returns its sequence number in *out_seq. Callers serialize (the
 * lane's producer lock) so ATTACHes and records keep one order.
 */
int cmesh__link_send_attach(struct cmesh__link *l, const int *fds,
			    uint32_t nfds, uint64_t *out_seq);

/*
 * Takes the fds of ATTACH number `seq` (exactly `nfds` of them) into fds[]
 * (owned by the caller afterwards). Returns 0, -EAGAIN (not read from the
 * socket yet), -EPROTO (the next ATTACH is another one: the link fails),
 * or the link's failure.
 */
int cmesh__link_take_attach(struct cmesh__link *l, uint64_t seq, int *fds,
			    uint32_t nfds);

/* Asks the link thread to retry spilled sends soon (lane.c). */
void cmesh__link_kick(struct cmesh__link *l);

#endif
