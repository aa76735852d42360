/* SPDX-License-Identifier: MIT */
/*
 * queue_close.c - the ends of a queue (moved out of queue.c): sender
 * references and the close of the sending side, the receiver's close
 * (and a side's failure), the drains they make, and the last reference's
 * put: a reply port parked (queue_reuse.c), or the queue destroyed, its
 * slot storage kept by the thread (small rings), pooled or freed, and its
 * lanes given back to their links; and the out lanes its receiver left,
 * kept until then, or put once no send is inside them (reclaim mode:
 * cmesh__queue_retire(), cmesh__queue_reclaim()).
 *
 * Memory ordering: queue.c's contract (top), "Close of the sending side"
 * and ST_RX_CLOSED. The receiver's close is a seq_cst RMW on `state`;
 * a producer that claimed before it is drained by the closer
 * (drain_claimed()), one that claimed after sees the bit and drains its
 * own (queue.c's notify()).
 */
#include "queue.h"
#include "queue_int.h"

#include "lane.h"
#include "link.h"
#include "park.h"
#include "slots.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

/* ---- storage ---- */

/*
 * Returns the slot storage. Producers wrote only the slots of positions
 * below `tail` (all of them past a lap); if the pool would keep the ring,
 * their seqs go back to zero, the one word a new owner reads before it is
 * written again. Nothing uses the queue any more.
 */
static void slots_reset(struct cmesh__queue *q)
{
	uint64_t cap = q->mask + 1;
	uint64_t used = atomic_load_explicit(&q->tail, memory_order_relaxed) &
			~TAIL_SEAL;

	if (used > cap)
		used = cap;
	for (uint64_t pos = 0; pos < used; pos++)
		atomic_store_explicit(&slot_at(q, pos)->seq, 0,
				      memory_order_relaxed);
}

static void slots_release(struct cmesh__queue *q)
{
	uint64_t cap = q->mask + 1;
	uint64_t used = atomic_load_explicit(&q->tail, memory_order_relaxed) &
			~TAIL_SEAL;
	bool clean = false;

	if (cmesh__slots_keepable(slots_bytes(q), q->stride,
				  used < cap ? used : cap)) {
		slots_reset(q);
		clean = true;
	}
	cmesh__slots_free(q->slots, slots_bytes(q), q->stride, clean);
}

static void destroy(struct cmesh__queue *q)
{
	/* Alone now: nobody sends or receives. */
	cmesh__queue_tbuf_free(atomic_exchange_explicit(&q->spare, NULL,
							memory_order_relaxed));
	pthread_mutex_destroy(&q->drain_lock);
	pthread_mutex_destroy(&q->lock);
	/* Small rings: kept whole by this thread for its next queue. */
	if (slots_bytes(q) <= CMESH__SLOTS_HEAP_MAX) {
		slots_reset(q);
		if (cmesh__queue_cache_put(q))
			return;
	}
	cmesh__queue_free_mem(q);
}

void cmesh__queue_free_mem(struct cmesh__queue *q)
{
	free(q->scratch);
	slots_release(q);
	free(q);
}

void cmesh__queue_discard(struct cmesh__queue *q)
{
	destroy(q);
}

/* ---- references and closes ---- */

/*
 * After the receiver's close (its seq_cst RMW, see queue.c, top): drops
 * every message claimed before it, yielding a few times to those still
 * being written. Later claimers saw ST_RX_CLOSED and drain their own.
 * One that stays between claim and publish longer (descheduled, stopped
 * in a signal handler) is not waited for: the close never blocks; its
 * message goes with its producer's next send or with the queue's last
 * reference.
 */
static void drain_claimed(struct cmesh__queue *q)
{
	uint64_t tail;

	atomic_thread_fence(memory_order_seq_cst);
	tail = atomic_load_explicit(&q->tail, memory_order_seq_cst) &
	       ~TAIL_SEAL;
	for (int i = 0;; i++) {
		cmesh__queue_drain(q);
		if (atomic_load_explicit(&q->head_pub, memory_order_acquire) >=
			    tail ||
		    i == CMESH__IN_FLIGHT_YIELDS)
			return;
		sched_yield();
	}
}

/* The queue's own lane goes: to its link, or freed (failed alone). */
static void lane_put(struct cmesh__lane *ln)
{
	struct cmesh__link *l = ln->link;

	/* A port's lane stays with its link until the peer is done too
	 * (the link may free it at once: `ln` is not used after this). */
	if (ln->failed_alone)
		cmesh__lane_free(ln);
	else if (ln->dynamic)
		cmesh__link_lane_release(ln);
	cmesh__link_put(l);
}

static void lanes_put(struct cmesh__lane *ln)
{
	for (struct cmesh__lane *next; ln; ln = next) {
		next = ln->old_next;
		lane_put(ln);
	}
}

/*
 * Reclaim mode (queue_int.h tx_enter()). A use of tx_lane counts itself
 * in `inside`, then reads tx_lane again; a retired lane was replaced in
 * tx_lane before it joined `pend`. So once `inside` is read 0 after a
 * lane joined `pend`, every use that may have read it has ended, and a
 * use counted later reads a newer lane. Seen under `lock`, which pushes
 * and takes `pend`: the lanes taken all joined before that read.
 */
void cmesh__queue_reclaim(struct cmesh__queue *q)
{
	struct cmesh__lane *ln = NULL;

	pthread_mutex_lock(&q->lock);
	if (!atomic_load_explicit(&q->inside, memory_order_seq_cst))
		ln = atomic_exchange_explicit(&q->pend, NULL,
					      memory_order_seq_cst);
	pthread_mutex_unlock(&q->lock);
	lanes_put(ln);
}

void cmesh__queue_retire(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	bool put;

	pthread_mutex_lock(&q->lock);
	put = ln->reclaimable; /* once in pend, a leave may put it */
	if (put) {
		ln->old_next =
			atomic_load_explicit(&q->pend, memory_order_relaxed);
		/* seq_cst: the last use's leave, which reads it after. */
		atomic_store_explicit(&q->pend, ln, memory_order_seq_cst);
	} else {
		ln->old_next = q->old_lanes;
		q->old_lanes = ln;
		q->nold++;
	}
	pthread_mutex_unlock(&q->lock);
	/* None inside: at once; else the last use's leave puts it. */
	if (put)
		cmesh__queue_reclaim(q);
}

/*
 * An imported reply port's queue (port_import.c) at its last put, whose one use
 * ended with its LAST record on its kept lane, and nothing else: no
 * receiver here, no local message, no claim, no failure.
 */
static bool parkable(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	return ln && ln->poolable && ln->is_out && ln->dynamic &&
	       !ln->failed_alone &&
	       atomic_load_explicit(&ln->last_sent, memory_order_relaxed) &&
	       atomic_load_explicit(&q->tx_lane, memory_order_relaxed) == ln &&
	       q->closed_out && !q->rx_lane && !q->xl_n && !q->old_lanes &&
	       !atomic_load_explicit(&q->pend, memory_order_relaxed) &&
	       !q->claim_out && q->mask == 1 &&
	       !atomic_load_explicit(&q->tx_failed, memory_order_relaxed) &&
	       !atomic_load_explicit(&q->xl_flags, memory_order_relaxed) &&
	       !atomic_load_explicit(&q->ovf_mode, memory_order_relaxed) &&
	       !q->ovf_head && !q->ovf_batch &&
	       atomic_load_explicit(&q->tail, memory_order_relaxed) == q->head;
}

void cmesh__queue_put(struct cmesh__queue *q)
{
	struct cmesh__lane *ln, *old, *pend, *claim;
	struct cmesh__link *held;

	if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
		return;
	/* A gone lane's link reference, kept for an rpc call's hook. */
	held = q->held_link;
	q->held_link = NULL;
	/* Ours alone now: a claim may have moved tx_lane until the last put. */
	ln = atomic_load_explicit(&q->tx_lane, memory_order_acquire);
	if (!ln)
		ln = q->rx_lane;
	/* Its receiver can come home no more (cmesh__queue_tryget()). */
	if (ln && ln->is_out &&
	    atomic_load_explicit(&ln->home_q, memory_order_relaxed) == q)
		cmesh__link_lane_home_set(ln, NULL);
	/* A split's lane never listed (its forwarder ended otherwise). */
	if (ln && ln->is_out)
		cmesh__link_lane_token_forget(ln);
	/* A reply port whose use ended with its LAST: kept for the next. */
	if (parkable(q, ln) && cmesh__queue_park(q, ln->serial)) {
		lane_put(ln);
		if (held)
			cmesh__link_put(held);
		return;
	}
	old = q->old_lanes; /* the lanes it left, sealed */
	/* and the reclaimable ones not put yet: no use is inside any now */
	pend = atomic_load_explicit(&q->pend, memory_order_relaxed);
	claim = q->claim_out; /* a sender's claim that never took */
	if (claim) {
		cmesh__link_lane_home_set(claim, NULL);
		/* The receiver's process may read it: it ends, empty. */
		if (!atomic_load_explicit(&claim->dropped,
					  memory_order_acquire))
			cmesh__lane_close_tx(claim);
	}
	cmesh__queue_drain(q);
	destroy(q);
	if (claim)
		lane_put(claim);
	if (ln)
		lane_put(ln);
	lanes_put(old);
	lanes_put(pend);
	if (held)
		cmesh__link_put(held);
}

void cmesh__queue_sender_get(struct cmesh__queue *q)
{
	atomic_fetch_add_explicit(&q->nsenders, 1, memory_order_relaxed);
}

void cmesh__queue_sender_put(struct cmesh__queue *q)
{
	struct cmesh__lane *ln;
	bool close_lane = false, failed;

	/* seq_cst: Dekker with the receiver's move, below. */
	if (atomic_fetch_sub_explicit(&q->nsenders, 1, memory_order_seq_cst) !=
	    1)
		return;
	failed = atomic_load_explicit(&q->tx_failed, memory_order_relaxed);
	/*
	 * The receiver may be moving (cmesh__queue_move_rx()): it stores the
	 * lane, then loads `nsenders`, both seq_cst. Whoever sees both the
	 * lane and no sender left sends its CLOSE, once (`closed_out`, under
	 * `lock`). No lane here: the move, if any, sees our decrement and
	 * sends it; a local queue's last sender takes no lock.
	 */
	ln = atomic_load_explicit(&q->tx_lane, memory_order_seq_cst);
	if (ln) {
		pthread_mutex_lock(&q->lock);
		/* The receiver may have come home (queue_move.c): local. */
		ln = atomic_load_explicit(&q->tx_lane, memory_order_relaxed);
		if (ln && !q->closed_out)
			close_lane = q->closed_out = true;
		pthread_mutex_unlock(&q->lock);
	}
	if (close_lane && failed)
		cmesh__lane_fail_tx(ln);
	else if (close_lane)
		cmesh__lane_close_tx(ln);
	else if (!ln)
		cmesh__queue_wake(q,
				  ST_TX_CLOSED | (failed ? ST_TX_FAILED : 0));
	cmesh__queue_put(q);
}

void cmesh__queue_sender_fail(struct cmesh__queue *q)
{
	/* Read by the last sender's put, after the acq_rel decrement. */
	atomic_store_explicit(&q->tx_failed, true, memory_order_relaxed);
	cmesh__queue_sender_put(q);
}

void cmesh__queue_receiver_fail(struct cmesh__queue *q)
{
	q->rx_failed = true; /* the receiver's: read by the close */
	cmesh__queue_receiver_close(q);
}

void cmesh__queue_senders_done(struct cmesh__queue *q)
{
	q->senders_done = true;
}

bool cmesh__queue_senders_are_done(const struct cmesh__queue *q)
{
	return q->senders_done;
}

void cmesh__queue_receiver_close(struct cmesh__queue *q)
{
	/*
	 * First: from here on no lane is added (cmesh__queue_admit()
	 * checks it under `lock`, which the close of the lanes takes).
	 */
	uint32_t st = atomic_fetch_or_explicit(
		&q->state, ST_RX_CLOSED | (q->rx_failed ? ST_RX_FAILED : 0),
		memory_order_seq_cst);

	cmesh__queue_xl_close(q);
	if (q->rx_lane) {
		if (q->rx_failed)
			cmesh__lane_fail_rx(q->rx_lane);
		else
			cmesh__lane_close_rx(q->rx_lane);
		cmesh__queue_rx_unref(q); /* its sender reference, if any */
		/* A sender that came here queued behind the lane: theirs go. */
		if (atomic_load_explicit(&q->gate_serial, memory_order_acquire))
			drain_claimed(q);
		cmesh__queue_put(q);
		return;
	}
	/*
	 * Dekker with a producer's claim + state load, see queue.c, top.
	 * Every sender gone (the RMW read ST_TX_CLOSED, set after their last
	 * publish): nobody races with the drain: a oneshot whose value came,
	 * an rpc's reply.
	 */
	if (!(st & ST_TX_CLOSED) && !q->senders_done)
		drain_claimed(q);
	else
		cmesh__queue_drain(q);
	cmesh__queue_put(q);
}
