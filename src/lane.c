/* SPDX-License-Identifier: MIT */
/*
 * lane.c - one direction of a link: channel messages encoded as records in
 * a shared-memory ring (shmring.c), their fds and ports carried by ATTACH
 * control messages (link_attach.c), large trailing bytes out of line in a
 * sealed memfd. This file: the lane itself (its setup, its type, a pooled
 * lane's uses, its teardown) and the records its producer writes besides
 * messages (its end: CLOSE, FAIL, the seal; MARK, HINTS). The send of a
 * message is lane_send.c, the spill backlog and its flush lane_spill.c
 * (lane_int.h: what the lane's files share); the consumer side is
 * lane_rx.c, its end lane_rx_close.c.
 *
 * Memory-ordering contract (on top of shmring.c's; lane_send.c,
 * lane_spill.c and lane_rx_close.c keep it too)
 * - Sleep/wake: lane_wake.c.
 * - Receiver gone. The consumer stores closed = 1 (seq_cst) in its own
 *   line; a producer loads it (acquire) before each send and then fails
 *   with -EPIPE. A record already in flight stays in the ring, its fds
 *   closed by the link; but for a type with reply-port fields the closing
 *   receiver then takes the records claimed before its look at the tail
 *   and answers their kept reply ports (REUSE) DROPPED (drain_ports(),
 *   lane_rx_close.c: bounded, a bad record fails the link), and a
 *   producer that claims a record carrying its REUSE ports (no ATTACH)
 *   after the close sees it and writes a filler instead (lane_send.c,
 *   push_ports_inline(); shm/ring.h, `closed`).
 * - Senders without fds (PLAIN, the common case) push lock-free while
 *   `spilling` is 0. Once the ring was full, a send spills under `lock`
 *   and sets `spilling` (a sender sees its own store, so it keeps
 *   spilling: per-sender FIFO) until the link thread (or a later sender)
 *   has flushed the backlog and stores 0 with release; a sender's acquire
 *   load of that 0 pairs with it, so its claim comes after the flushed
 *   records' claims.
 * - Order of fds. A producer holding `lock` claims a record's slots, sends
 *   its ATTACH, then writes and publishes the record, so ATTACHes arrive in
 *   record order (positions are claimed in the order of the ATTACHes). If
 *   the ATTACH cannot be sent, the claimed slots are published as a filler
 *   and the message is spilled; the backlog is retried only once the
 *   control socket polls writable, so a stalled peer costs few fillers.
 */
#include "lane.h"
#include "lane_int.h"

#include "link.h"
#include "wake.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the lane derives from its message type. */
static void set_type(struct cmesh__lane *ln, const cmesh_type *type)
{
	ln->type = type;
	ln->fd_fields = ln->ep_fields = 0;
	ln->reply_fields = false;
	for (uint32_t i = 0; i < type->nfields; i++) {
		if (type->fields[i].kind == CMESH_FIELD_KIND_FD)
			ln->fd_fields |= 1ull << i;
		else
			ln->ep_fields |= 1ull << i;
		if (type->fields[i].kind == CMESH_FIELD_KIND_ONESHOT_SENDER)
			ln->reply_fields = true;
	}
	ln->small = !type->nfields && type->size <= CMESH__SHMRING_SMALL ?
			    (uint32_t)type->size :
			    0;
}

void cmesh__lane_tx_idle(struct cmesh__lane *ln)
{
	/* A LAST record said it already: the consumer reads nothing here. */
	if (atomic_load_explicit(&ln->last_sent, memory_order_relaxed))
		return;
	ln->own_signal->idle_tail = cmesh__shmring_tail(&ln->prod);
	ln->own_signal->idle_attach = ln->att_next_out;
	/* Pairs with the consumer's acquire load before it reuses it. */
	atomic_store_explicit(&ln->own_signal->idle_use, ln->use,
			      memory_order_release);
}

void cmesh__lane_tx_reuse(struct cmesh__lane *ln, const cmesh_type *type)
{
	set_type(ln, type);
	ln->attach_blocked = false;
	ln->use_tail = cmesh__shmring_tail(&ln->prod);
	atomic_store_explicit(&ln->last_sent, false, memory_order_relaxed);
	/* A use that ended with a FAIL failed that use only. */
	atomic_store_explicit(&ln->tx_failed, false, memory_order_relaxed);
	/* Bound, no backlog (its last use ended with one delivered). */
	atomic_store_explicit(&ln->spilling, 0, memory_order_relaxed);
}

/* Serials of lanes (claims name a lane by it: never reused). */
static _Atomic uint64_t lane_serials;

int cmesh__lane_init(struct cmesh__lane *ln, struct cmesh__link *link,
		     const cmesh_type *type, uint64_t max_trail,
		     uint64_t max_backlog, int64_t spin_ns)
{
	pthread_rwlockattr_t ra;
	int r;

	memset(ln, 0, sizeof(*ln));
	ln->serial = atomic_fetch_add_explicit(&lane_serials, 1,
					       memory_order_relaxed) +
		     1;
	ln->link = link;
	ln->failed = cmesh__link_failed_word(link);
	ln->max_trail = max_trail;
	ln->max_backlog = max_backlog;
	ln->spin_ns = spin_ns;
	ln->peer_wake_sock = -1;
	ln->wake_sock = -1;
	ln->efd = -1;
	ln->pending = -1;
	ln->spill_tailp = &ln->spill_head;
	ln->att_tailp = &ln->att_head;
	set_type(ln, type);
	atomic_init(&ln->home_q, NULL);
	/* Writer first: a stream of endpoint sends must not starve a seal. */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(
		&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	r = pthread_rwlock_init(&ln->port_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (r)
		return -ENOMEM;
	if (pthread_mutex_init(&ln->lock, NULL)) {
		pthread_rwlock_destroy(&ln->port_lock);
		return -ENOMEM;
	}
	return 0;
}

void cmesh__lane_destroy(struct cmesh__lane *ln)
{
	cmesh__lane_spill_free(ln);
	pthread_mutex_destroy(&ln->lock);
	pthread_rwlock_destroy(&ln->port_lock);
	cmesh__lane_bulk_free(ln);
	free(ln->buf);
	free(ln->hints);
	cmesh__wake_free(ln->sleeper);
	if (ln->efd >= 0)
		close(ln->efd);
	if (ln->wake_sock >= 0)
		close(ln->wake_sock);
	if (ln->peer_wake_sock >= 0)
		close(ln->peer_wake_sock);
}

int cmesh__lane_rx_gone(const struct cmesh__lane *ln)
{
	/* The consumer's store of closed (or DROPPED's) first. */
	int r = cmesh__lane_tx_err(ln);

	return r == -EPIPE ? 1 : r;
}

static void close_tx(struct cmesh__lane *ln, uint32_t kind)
{
	struct cmesh__iov none = { NULL, 0 };

	/* A LAST record ended the use: the consumer needs no CLOSE. */
	if (cmesh__lane_failed(ln) ||
	    atomic_load_explicit(&ln->last_sent, memory_order_relaxed))
		return;
	/* Its receiver is gone: nobody reads a CLOSE (none is spilled,
	 * which would keep the link for its thread to drop). Pairs with the
	 * consumer's store of closed. */
	if (atomic_load_explicit(&ln->peer_wake->closed, memory_order_acquire))
		return;
	/* Before the FAIL's publish (release): later sends fail. */
	if (kind == CMESH_REC_FAIL)
		atomic_store_explicit(&ln->tx_failed, true,
				      memory_order_relaxed);
	if (cmesh__lane_enqueue(ln, kind, &none, 1, NULL, 0, NULL, 0, NULL))
		cmesh__link_fail(ln->link, -ENOMEM);
}

void cmesh__lane_close_tx(struct cmesh__lane *ln)
{
	close_tx(ln, CMESH_REC_CLOSE);
}

uint32_t cmesh__lane_mark_new(struct cmesh__lane *ln)
{
	uint32_t m;

	do
		m = atomic_fetch_add_explicit(&ln->marks, 1,
					      memory_order_relaxed) +
		    1;
	while (!m); /* 0 says "none" */
	return m;
}

void cmesh__lane_mark_tx(struct cmesh__lane *ln, uint32_t mark)
{
	struct cmesh_rec_mark m = { mark, 0 };
	struct cmesh__iov iov = { &m, sizeof(m) };
	int r;

	/* Its receiver gone: nobody reads it. */
	if (cmesh__lane_failed(ln) ||
	    atomic_load_explicit(&ln->peer_wake->closed, memory_order_acquire))
		return;
	r = cmesh__lane_enqueue(ln, CMESH_REC_MARK, &iov, 1, NULL, 0, NULL, 0,
				NULL);
	/* Sealed: its end comes later (and opens the claim too). */
	if (r && r != -ESTALE)
		cmesh__link_fail(ln->link, -ENOMEM);
}

int cmesh__lane_hints_tx(struct cmesh__lane *ln, const struct cmesh_rec_hint *h,
			 uint32_t n)
{
	struct cmesh__iov iov = { h, n * sizeof(*h) };

	if (!n || n > CMESH_REC_HINTS_MAX)
		return -EINVAL;
	if (cmesh__lane_failed(ln))
		return -ECONNRESET;
	return cmesh__lane_enqueue(ln, CMESH_REC_HINTS, &iov, 1, NULL, 0, NULL,
				   0, NULL);
}

void cmesh__lane_seal_tx(struct cmesh__lane *ln)
{
	/* No send of endpoints is between its look and its record. */
	pthread_rwlock_wrlock(&ln->port_lock);
	pthread_mutex_lock(&ln->lock);
	cmesh__shmring_seal(&ln->prod);
	pthread_mutex_unlock(&ln->lock);
	pthread_rwlock_unlock(&ln->port_lock);
	/* After every record claimed before: the consumer's end. */
	close_tx(ln, CMESH_REC_CLOSE);
}

void cmesh__lane_fail_tx(struct cmesh__lane *ln)
{
	close_tx(ln, CMESH_REC_FAIL);
}
