/* SPDX-License-Identifier: MIT */
/*
 * lane.h - one direction of a link: a shared-memory ring that this process
 * either writes (out lane: senders here, receiver in the peer) or reads
 * (in lane: receiver here, senders in the peer). Queues whose other end
 * is remote forward their operations here (queue.c).
 */
#ifndef CMESH_LANE_H
#define CMESH_LANE_H

#include "shmring.h"

#include <cmesh/type.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cmesh__link;
struct cmesh__wake;
struct cmesh_shm_ring_wake;

struct spill;

struct cmesh__lane {
	struct cmesh__link *link;
	const _Atomic int *failed; /* the link's failure (cmesh__link_failed) */
	const cmesh_type *type;
	uint64_t max_trail;
	uint64_t fd_fields; /* bit i: type field i is an fd field */

	/* Out lane (producer). */
	pthread_mutex_t lock; /* senders with fds, and the spill backlog */
	struct cmesh__shmring_producer prod;
	const struct cmesh_shm_ring_wake *peer_wake; /* sleeping, closed */
	int peer_efd;		  /* the peer consumer's eventfd */
	struct spill *spill_head; /* ordered backlog while the ring is full */
	struct spill **spill_tailp;
	_Atomic uint32_t spilling; /* backlog queued: senders take `lock` */
	bool attach_blocked;	   /* an ATTACH met a full socket (`lock`) */

	/* In lane (consumer). */
	struct cmesh__shmring_consumer cons;
	struct cmesh_shm_ring_wake *own_wake;
	int efd; /* our consumer eventfd (the peer signals) */
	struct cmesh__wake *sleeper; /* waits on efd: io_uring or epoll */
	int64_t spin_ns;
	unsigned char *buf; /* one record, copied out of the ring */
	uint32_t buf_cap;
	int32_t pending;       /* length of a record held in buf, or -1 */
	uint32_t pending_kind; /* its kind: CMESH_REC_MSG or _PLAIN */
	bool closed;	       /* CLOSE record seen */
};

/* Set up by the link after the handshake; freed with it. */
int cmesh__lane_init(struct cmesh__lane *ln, struct cmesh__link *link,
		     const cmesh_type *type, uint64_t max_trail,
		     int64_t spin_ns);
void cmesh__lane_destroy(struct cmesh__lane *ln);

/* Out lane: see cmesh_sender_send(); takes the message's resources. */
int cmesh__lane_send(struct cmesh__lane *ln, const void *msg, const void *trail,
		     size_t len);

/* Out lane: the last local sender is gone (CLOSE record, after data). */
void cmesh__lane_close_tx(struct cmesh__lane *ln);

/* Out lane, link thread: moves spilled messages into the ring. */
bool cmesh__lane_flush_spill(struct cmesh__lane *ln);

/* In lane: receive once; as cmesh_receiver_try_recv(), plus failures. */
int cmesh__lane_try_recv(struct cmesh__lane *ln, void *out_msg, void *out_trail,
			 size_t cap);
int cmesh__lane_peek(struct cmesh__lane *ln);

/* In lane: something to report (a record, close or failure)? */
bool cmesh__lane_ready(struct cmesh__lane *ln);

/*
 * In lane: the object the receiver sleeps in, watching efd through the wake
 * backend that CMESH_WAKE selects (io_uring, else epoll). 0 or -errno.
 */
int cmesh__lane_sleeper_init(struct cmesh__lane *ln);

/*
 * In lane: announce that we sleep (the peer then signals efd), check
 * again, sleep on efd until `deadline`. -ETIMEDOUT or 0.
 */
int cmesh__lane_sleep(struct cmesh__lane *ln, int64_t deadline);

/*
 * In lane, spinning: true if the ring may hold a record (the caller then
 * receives). Inline: the spin loop calls it once per pause. Failures and a
 * pending record are cmesh__lane_ready()'s to report.
 *
 * A record of two slots has its second line in the next slot. Reading that
 * line while spinning would pull it away from the producer between its
 * stores (measured: +5-10 ns per round trip); it is fetched once the first
 * slot is published instead, in parallel with the receive path rather than
 * after it (measured: -7 ns per round trip).
 */
static inline bool cmesh__lane_poll(const struct cmesh__lane *ln)
{
	const struct cmesh__shmring_consumer *c = &ln->cons;

	if (!cmesh__shmring_pop_ready(c))
		return false;
	if (c->slots)
		cmesh__prefetch(&c->slots[(c->head_pos + 1) & c->mask]);
	return true;
}

/* In lane, waitsets: set or clear the sleeping flag. */
void cmesh__lane_arm(struct cmesh__lane *ln, bool on);

/* In lane: the receiver is gone; drop what is queued, tell the peer. */
void cmesh__lane_close_rx(struct cmesh__lane *ln);

/* In lane, link thread: a failure or an attachment: wake the receiver. */
void cmesh__lane_wake(struct cmesh__lane *ln);

#endif
