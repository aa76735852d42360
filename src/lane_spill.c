/* SPDX-License-Identifier: MIT */
/*
 * lane_spill.c - an out lane's spill backlog (lane.c has the lane and the
 * memory-ordering contract this file keeps, lane_send.c the send): records
 * queued in order behind a full ring (or an unbound lane, or a control
 * socket too full for their ATTACH), at most max_backlog bytes, and their
 * flush into the ring under `lock`, by the next send or by the link
 * thread (kicked by the first spill, woken by the consumer's SPACE or a
 * writable socket), or their drop (the receiver gone, the link failed).
 */
#include "lane.h"
#include "lane_int.h"

#include "link.h"
#include "park.h"

#include "proto.h"
#include "ring.h"

#include <cmesh/common.h>

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * A spilled record: its payload, then its fds (nfds ints at spill_fds()),
 * in one allocation of spill_cost() bytes, which count against the lane's
 * max_backlog.
 */
struct spill {
	struct spill *next;
	uint32_t kind;
	uint32_t len; /* record payload bytes */
	uint32_t nfds;
	uint32_t nports;
	struct cmesh__port_out *ports;	/* inside this allocation, or NULL */
	alignas(8) unsigned char rec[]; /* payload; a MSG starts with
					   cmesh_rec_msg */
};

static size_t spill_fds_off(uint32_t len)
{
	return ((size_t)len + alignof(int) - 1) & ~(alignof(int) - 1);
}

static size_t spill_ports_off(uint32_t len, uint32_t nfds)
{
	size_t a = alignof(struct cmesh__port_out);

	return (spill_fds_off(len) + nfds * sizeof(int) + a - 1) & ~(a - 1);
}

static size_t spill_cost(uint32_t len, uint32_t nfds, uint32_t nports)
{
	return sizeof(struct spill) + spill_ports_off(len, nfds) +
	       nports * sizeof(struct cmesh__port_out);
}

static int *spill_fds(struct spill *s)
{
	return (int *)(void *)(s->rec + spill_fds_off(s->len));
}

/* What becomes of the head of the backlog (`lock` held). */
enum spill_end {
	SPILL_SENT,    /* published: the kernel holds copies of its fds */
	SPILL_DROPPED, /* never sent: its ports' lanes are dropped */
	SPILL_DISCARD  /* the link is being freed with every lane */
};

static void pop_spill(struct cmesh__lane *ln, enum spill_end how)
{
	struct spill *s = ln->spill_head;

	ln->spill_head = s->next;
	ln->spill_bytes -= spill_cost(s->len, s->nfds, s->nports);
	atomic_store_explicit(&ln->backlog, ln->spill_bytes,
			      memory_order_relaxed);
	cmesh__lane_close_fds(spill_fds(s), s->nfds); /* ports' too */
	if (how == SPILL_DROPPED) /* lost to a failure: their peers fail */
		cmesh__lane_ports_unsent(s->ports, s->nports,
					 cmesh__lane_lost_to_failure(ln));
	free(s);
}

static void drop_spill(struct cmesh__lane *ln)
{
	pop_spill(ln, SPILL_DROPPED);
}

void cmesh__lane_backlog(const struct cmesh__lane *ln, uint64_t *used,
			 uint64_t *max)
{
	*used = atomic_load_explicit(&ln->backlog, memory_order_relaxed);
	*max = ln->max_backlog;
}

void cmesh__lane_spill_free(struct cmesh__lane *ln)
{
	while (ln->spill_head)
		pop_spill(ln, SPILL_DISCARD);
}

/*
 * Queues a record behind the ring, in order; the caller holds `lock`.
 * -ENOBUFS past max_backlog (a CLOSE record always fits: it is the last),
 * -ENOMEM; on failure nothing is queued and the fds are the caller's.
 * Only the first spill of a backlog kicks the link thread, which retries
 * while one is queued: a spilled send makes no syscall.
 */
int cmesh__lane_spill(struct cmesh__lane *ln, uint32_t kind,
		      const struct cmesh__iov *iov, uint32_t niov,
		      const int *fds, uint32_t nfds,
		      const struct cmesh__port_out *ports, uint32_t nports)
{
	struct spill *s;
	uint32_t len = 0, off = 0;
	size_t cost;

	for (uint32_t i = 0; i < niov; i++)
		len += iov[i].len;
	cost = spill_cost(len, nfds, nports);
	/* An end or a mark always goes: a claim waits for it. */
	if (kind != CMESH_REC_CLOSE && kind != CMESH_REC_FAIL &&
	    kind != CMESH_REC_MARK && ln->spill_bytes + cost > ln->max_backlog)
		return -ENOBUFS;
	s = malloc(cost);
	if (!s)
		return -ENOMEM;
	s->next = NULL;
	s->kind = kind;
	s->len = len;
	s->nfds = nfds;
	s->nports = nports;
	s->ports =
		nports ?
			(struct cmesh__port_out *)(void *)(s->rec +
							   spill_ports_off(
								   len, nfds)) :
			NULL;
	if (nports)
		memcpy(s->ports, ports, nports * sizeof(*ports));
	for (uint32_t i = 0; i < niov; i++) {
		if (iov[i].len)
			memcpy(s->rec + off, iov[i].base, iov[i].len);
		off += iov[i].len;
	}
	if (nfds)
		memcpy(spill_fds(s), fds, nfds * sizeof(int));
	ln->spill_bytes += cost;
	atomic_store_explicit(&ln->backlog, ln->spill_bytes,
			      memory_order_relaxed);
	*ln->spill_tailp = s;
	ln->spill_tailp = &s->next;
	if (!atomic_exchange_explicit(&ln->spilling, 1, memory_order_relaxed))
		cmesh__link_kick(ln->link);
	return 0;
}

/* Moves spilled records into the ring; the caller holds `lock`. */
int cmesh__lane_flush_locked(struct cmesh__lane *ln)
{
	struct spill *s = NULL;
	int r = 0, sent = 0, sent_at_ask = -1;
	uint64_t bulk_at = 0;

again:
	/*
	 * Pairs with the consumer's store of closed; seq_cst: after a space
	 * request a consumer that closed either answers it or is seen here.
	 */
	if (atomic_load_explicit(&ln->peer_wake->closed, memory_order_seq_cst))
		while (ln->spill_head) /* nobody will read them */
			drop_spill(ln);
	/* A port's lane spills until the consumer's half is mapped. */
	if (ln->dynamic && !cmesh__lane_bound(ln))
		return 0;
	if (ln->spill_head && !cmesh__lane_attach_may_go(ln))
		return 0;
	while ((s = ln->spill_head)) {
		struct cmesh__iov iov = { s->rec, s->len };

		ln->attach_blocked = false; /* the socket may take one */
		if (s->kind == CMESH_REC_BULK)
			r = cmesh__lane_bulk_publish(ln, s->rec,
						     s->rec + ln->type->size,
						     s->len - ln->type->size,
						     &bulk_at);
		else
			r = cmesh__lane_publish(
				ln, s->kind, &iov, 1, spill_fds(s), s->nfds,
				s->ports, s->nports,
				s->rec + offsetof(struct cmesh_rec_msg,
						  attach_seq));
		if (r == -EINVAL) { /* its fds went bad: drop it alone */
			drop_spill(ln);
			r = 0;
			continue;
		}
		if ((r == -EPIPE || r == -ECONNRESET) &&
		    cmesh__lane_peer_closed(ln)) {
			r = 0;
			goto again; /* its receiver closed: all of it goes */
		}
		if (r)
			break;
		sent++;
		pop_spill(ln, SPILL_SENT);
	}
	if (r == -EAGAIN && !ln->attach_blocked && sent != sent_at_ask) {
		/*
		 * The ring is full: ask the consumer to say when it has made
		 * room (shm/ring.h, signal line; Dekker with its head store),
		 * then look once more: it may have made it already. Asked
		 * again after a look that moved records: the position asked
		 * for may have been passed already.
		 */
		sent_at_ask = sent;
		atomic_store_explicit(&ln->own_signal->space_at,
				      s->kind == CMESH_REC_BULK ?
					      bulk_at :
					      cmesh__shmring_space_at(&ln->prod,
								      s->len),
				      memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		goto again;
	}
	if (!ln->spill_head) {
		ln->spill_tailp = &ln->spill_head;
		/*
		 * Pairs with the acquire loads in enqueue_plain() and
		 * cmesh__lane_send_inline().
		 */
		atomic_store_explicit(&ln->spilling, 0, memory_order_release);
	}
	if (sent)
		cmesh__lane_signal(ln);
	return r == -EAGAIN ? 0 : r;
}

/* How often cmesh__lane_flush() looks again while the ring is full. */
#define FLUSH_POLL_NS 100000

int cmesh__lane_flush(struct cmesh__lane *ln, int64_t deadline)
{
	for (;;) {
		int64_t now, left;
		struct timespec ts;
		int f;

		/* As in cmesh__lane_send(): a receiver gone stays gone. */
		f = cmesh__lane_peer_closed(ln);
		if (f)
			return f;
		f = cmesh__lane_failed(ln);
		if (f)
			return f;
		if (!cmesh__lane_flush_spill(ln))
			return 0;
		f = cmesh__park_cancelled(); /* its context ended (park.h) */
		if (f)
			return f;
		now = cmesh_clock_now();
		if (now >= deadline)
			return -ETIMEDOUT;
		left = cmesh__park_nap_cap(deadline) - now;
		if (left > FLUSH_POLL_NS)
			left = FLUSH_POLL_NS;
		ts.tv_sec = 0;
		ts.tv_nsec = left;
		nanosleep(&ts, NULL);
	}
}

void cmesh__lane_drop_spill(struct cmesh__lane *ln)
{
	pthread_mutex_lock(&ln->lock);
	while (ln->spill_head)
		drop_spill(ln);
	ln->spill_tailp = &ln->spill_head;
	/*
	 * Pairs with the acquire loads of the senders (see
	 * cmesh__lane_flush_locked).
	 */
	atomic_store_explicit(&ln->spilling, 0, memory_order_release);
	pthread_mutex_unlock(&ln->lock);
}

enum cmesh__spill_wait cmesh__lane_flush_spill(struct cmesh__lane *ln)
{
	enum cmesh__spill_wait w = CMESH__SPILL_DONE;

	if (!atomic_load_explicit(&ln->spilling, memory_order_relaxed))
		return w;
	pthread_mutex_lock(&ln->lock);
	if (cmesh__lane_flush_locked(ln))
		cmesh__link_fail(ln->link, -EPROTO);
	if (ln->spill_head)
		w = ln->attach_blocked ? CMESH__SPILL_SOCK : CMESH__SPILL_SPACE;
	pthread_mutex_unlock(&ln->lock);
	return w;
}
