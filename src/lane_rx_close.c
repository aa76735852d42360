/* SPDX-License-Identifier: MIT */
/*
 * lane_rx_close.c - the end of a lane's consumer (lane_rx.c reads it): a
 * receiver that closes tells the producer (its `closed` word, a SPACE to a
 * producer waiting for room), drops its pending record and the fds still
 * to come, and answers the REUSE ports in the records claimed before it
 * closed (drain_ports(), taking them as a receive does, lane_rx.c); and a
 * pooled lane's use that ended, and its next (cmesh__lane_rx_last_seen(),
 * cmesh__lane_rx_reuse()). Records are validated as lane_rx.c says.
 */
#include "lane.h"
#include "lane_int.h"

#include "link.h"
#include "park.h"

#include "proto.h"
#include "ring.h"

#include <cmesh/common.h>

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/*
 * A pending record copied out (MSG, REUSE1) nobody takes: the REUSE ports
 * its bytes name are answered DROPPED, so the caller waiting on each sees
 * it closed (a port with an fd is the ATTACH FIFO's to drop). Only
 * descriptors it names in full are dropped; the peer's link checks them.
 */
static void drop_inline_ports(struct cmesh__lane *ln)
{
	struct cmesh_ctl_port d = { .kind = CMESH_PORT_WRITE,
				    .flags = CMESH_PORT_F_REUSE };
	uint32_t len = (uint32_t)ln->pending;

	if (ln->pending_kind == CMESH_REC_REUSE1) {
		struct cmesh_rec_reuse1 h;

		if (len < sizeof(h))
			return;
		memcpy(&h, ln->buf, sizeof(h));
		d.id = h.id;
		d.ring_cap = h.ring_cap;
		cmesh__link_port_drop(ln->link, &d, -1, ln->att_drop_failed);
	} else if (ln->pending_kind == CMESH_REC_MSG) {
		struct cmesh_rec_msg h;
		uint32_t n;

		if (len < sizeof(h))
			return;
		memcpy(&h, ln->buf, sizeof(h));
		n = (uint32_t)__builtin_popcountll(h.port_mask);
		if (!(h.flags & CMESH_REC_F_PORTS) ||
		    sizeof(h) + (uint64_t)n * sizeof(d) > len)
			return;
		for (uint32_t i = 0; i < n; i++) {
			memcpy(&d, ln->buf + sizeof(h) + i * sizeof(d),
			       sizeof(d));
			/* A kept reply lane's, as deliver() checks (lane_rx.c):
			 * nothing else (a context's, say) is taken from a
			 * record. */
			if (d.flags == CMESH_PORT_F_REUSE &&
			    d.kind == CMESH_PORT_WRITE)
				cmesh__link_port_drop(ln->link, &d, -1,
						      ln->att_drop_failed);
		}
	}
}

/* Drops the pending record, if any (a PLAIN one leaves the ring). */
static void drop_pending(struct cmesh__lane *ln)
{
	if (ln->pending >= 0)
		drop_inline_ports(ln);
	if (ln->pending >= 0 && (ln->pending_kind == CMESH_REC_PLAIN ||
				 ln->pending_kind == CMESH_REC_BULK))
		cmesh__shmring_consume(&ln->cons);
	if (ln->pending >= 0 && ln->pending_kind == CMESH_REC_PLAIN)
		cmesh__lane_took_plain(ln);
	ln->pending = -1;
}

/* How long a closing receiver waits for a record claimed to be written. */
#define DRAIN_WAIT_NS 1000000
/* Records it takes at most (each may send a DROPPED): a peer's bound. */
#define DRAIN_MAX 4096u

/*
 * Takes the records up to drain_end, answering their REUSE ports: true
 * when done (all taken, the lane's end or failure, a bad record, or
 * DRAIN_MAX), false at a claim not yet written.
 */
static bool drain_step(struct cmesh__lane *ln)
{
	while ((int64_t)(ln->drain_end - ln->cons.head_pos) > 0 &&
	       ln->drain_taken < DRAIN_MAX) {
		int r = cmesh__lane_fetch(ln);

		if (r == -EAGAIN)
			return false;
		if (r == CMESH__LANE_MARK)
			continue;
		if (r)
			return true; /* its end, its failure, a bad record */
		drop_pending(ln);
		ln->drain_taken++;
	}
	return true;
}

/*
 * The receiver closed (after its seq_cst store of closed): the records
 * claimed before this look at the tail are taken, and the REUSE ports in
 * them answered DROPPED (drop_inline_ports()); a sender whose claim came
 * later sees the close and sends nothing (lane_send.c, push_ports_inline()).
 * So a call whose request waits here ends (-EPIPE). Only for a type with
 * reply-port fields. The tail is the peer's word: at most a ring's worth,
 * and DRAIN_MAX records, are taken; a bad record fails the link as a
 * receive does. A lane not yet bound (its answer on its way) drains
 * nothing. A claim not yet written (its producer preempted between claim
 * and publish) is waited for DRAIN_WAIT_NS; then a dynamic lane leaves
 * the rest to its link thread (drain_owed: cmesh__lane_drain_more(), from
 * its sweep, which keeps the lane and its ring until done), so every such
 * port is answered however long the producer takes; any other lane gives
 * up (a kept reply lane, the link's first: no type of ours puts reply
 * ports there).
 */
static void drain_ports(struct cmesh__lane *ln)
{
	uint64_t start = ln->cons.head_pos, end;
	int64_t give_up = 0;

	if (!ln->reply_fields || !ln->own_wake || cmesh__lane_failed(ln) ||
	    (ln->dynamic && !cmesh__lane_bound(ln)))
		return;
	end = cmesh__shmring_claimed(&ln->cons);
	if ((int64_t)(end - start) <= 0)
		return;
	if (end - start > ln->cons.mask + 1)
		end = start + ln->cons.mask + 1;
	ln->drain_end = end;
	ln->drain_taken = 0;
	while (!drain_step(ln)) {
		int64_t now = cmesh_clock_now();

		if (!give_up) {
			give_up = now + DRAIN_WAIT_NS;
		} else if (now >= give_up) {
			ln->drain_owed = ln->dynamic && !ln->poolable;
			return;
		}
		cmesh__park_pause();
	}
}

bool cmesh__lane_drain_more(struct cmesh__lane *ln)
{
	if (ln->drain_owed && (cmesh__lane_failed(ln) || drain_step(ln)))
		ln->drain_owed = false;
	return !ln->drain_owed;
}

static void close_rx(struct cmesh__lane *ln, uint32_t how)
{
	/* Failed: the ports it drops are lost to that failure. */
	bool failed = how == CMESH_SHM_CLOSED_FAILED;

	/*
	 * After a LAST record the producer sends nothing more this use and
	 * looks at nothing of ours: neither word is for it (a REUSE of the
	 * lane finds `closed` still 0).
	 */
	if (ln->peer_idle) {
		cmesh__link_drop_attachments(ln, failed);
		drop_pending(ln);
		return;
	}
	/* Pairs with the producer's acquire load before each send. */
	if (ln->own_wake) /* none on a lane that arrived failed */
		atomic_store_explicit(&ln->own_wake->closed, how,
				      memory_order_seq_cst);
	/*
	 * A producer waiting for space (a backlog behind a full ring) would
	 * wait for good: a SPACE makes its link thread look, see `closed`
	 * and drop the backlog. (seq_cst: Dekker with its request, as for
	 * the head.)
	 */
	if (ln->peer_signal) {
		uint64_t at = atomic_load_explicit(&ln->peer_signal->space_at,
						   memory_order_seq_cst);

		if (at && at != ln->space_answered) {
			ln->space_answered = at;
			cmesh__link_space(ln->link);
		}
	}
	/*
	 * Drop what is queued. Its fds (and those of records still in
	 * flight) are closed by the link: from now on it closes every
	 * ATTACH as it arrives. The records themselves hold nothing of
	 * ours and nobody reads this ring again: they are left where they
	 * are, so a peer that keeps publishing cannot keep us here; but
	 * the REUSE ports in them, which no ATTACH names, are answered
	 * (drain_ports(): what was claimed before the close, bounded).
	 */
	cmesh__link_drop_attachments(ln, failed);
	drop_pending(ln);
	drain_ports(ln);
}

void cmesh__lane_close_rx(struct cmesh__lane *ln)
{
	close_rx(ln, CMESH_SHM_CLOSED);
}

void cmesh__lane_fail_rx(struct cmesh__lane *ln)
{
	close_rx(ln, CMESH_SHM_CLOSED_FAILED);
}

bool cmesh__lane_rx_last_seen(struct cmesh__lane *ln)
{
	uint32_t kind;

	if (ln->peer_idle || ln->pending >= 0)
		return ln->peer_idle;
	/* The reply came after its receiver went: no idle_use says so. */
	if (cmesh__shmring_peek(&ln->cons, &kind) < 0 || kind != CMESH_REC_LAST)
		return false;
	cmesh__shmring_consume(&ln->cons);
	ln->peer_idle = true;
	return true;
}

int cmesh__lane_rx_reuse(struct cmesh__lane *ln, uint64_t tail)
{
	/* What the last use left unread (a CLOSE, a value never taken). */
	if (cmesh__shmring_skip_to(&ln->cons, tail))
		return -EPROTO;
	ln->pending = -1;
	ln->pending_last = false;
	ln->closed = false;
	ln->peer_idle = false;
	/* Open again; the producer reads it after our REUSE. */
	if (atomic_load_explicit(&ln->own_wake->closed, memory_order_relaxed))
		atomic_store_explicit(&ln->own_wake->closed, 0,
				      memory_order_release);
	return 0;
}
