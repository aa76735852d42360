/* SPDX-License-Identifier: MIT */
/*
 * queue_port.c - a queue whose endpoints moved to other processes.
 *
 * A sender sent to another process gives the receiver a lane (a port's in
 * lane, link_export.c): the receiver then takes from its own queue (the
 * local tier, or the lane its queue was made with) and from every such
 * lane, the first source first, the lanes round-robin. FIFO holds per
 * sender; between senders there is no order, in one process or several.
 * Each lane holds one sender reference, dropped once its CLOSE is taken
 * (or the peer dropped the endpoint): the receiver sees "closed" once
 * every sender, local or moved, is gone. A failed lane fails the
 * receiver for good, after what its peer published.
 *
 * A receiver sent to another process moves the queue's receiving side
 * (queue_move.c, with its coming home; claims: queue_claim.c):
 * cmesh__queue_move_rx()
 * seals the ring (TAIL_SEAL in `tail`: every claim then fails and its
 * sender takes the slow path, which waits on `lock`), waits for the
 * claims made before the seal to be published, forwards every queued
 * message in order onto the lane (which spills them until the peer's half
 * arrives), then, under `lock` and with the overflow list empty,
 * publishes tx_lane: later sends go to the lane, after everything the
 * queue held. Per-sender FIFO holds across the move. This file adds the
 * lanes a queue gains (a claimed lane, or one behind a sender's old one,
 * waits its turn), reads them and closes them; a receiver with lanes
 * spins and sleeps on them in queue_port_wait.c, and rpc calls' reply
 * lanes are kept in queue_reuse.c (both moved out of here).
 *
 * Memory ordering. Lanes are added under `lock` to `xl_add` and XL_NEW is
 * set with release; the consumer's acquire load sees them, takes them
 * under `lock` (cmesh__queue_xl_merge()). The sleep: queue_port_wait.c.
 */
#include "queue.h"
#include "queue_int.h"

#include "hint.h"
#include "lane.h"
#include "link.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cmesh__lane *cmesh__queue_tx_lane(struct cmesh__queue *q)
{
	/* Pairs with the release store of the move (or creation). */
	return atomic_load_explicit(&q->tx_lane, memory_order_acquire);
}

struct cmesh__lane *cmesh__queue_tx_enter(struct cmesh__queue *q, bool *in)
{
	return tx_enter(q, in);
}

void cmesh__queue_tx_hold(struct cmesh__queue *q)
{
	atomic_fetch_add_explicit(&q->inside, 1, memory_order_seq_cst);
	/* Before the acquire loads of tx_lane that follow (the retire's
	 * Dekker: tx_lane's store, then `inside`'s load, both seq_cst). */
	atomic_thread_fence(memory_order_seq_cst);
}

void cmesh__queue_tx_leave(struct cmesh__queue *q, bool in)
{
	tx_leave(q, in);
}

void cmesh__queue_tx_leave_quiet(struct cmesh__queue *q, bool in)
{
	tx_leave_quiet(q, in);
}

/* Makes the array *v (of *cap) hold `need` lanes: 0 or -ENOMEM. */
int cmesh__queue_reserve_lanes(struct cmesh__lane ***v, uint32_t *cap,
			       uint32_t need)
{
	uint32_t n = *cap ? *cap : 4;
	struct cmesh__lane **a;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	a = realloc(*v, n * sizeof(*a));
	if (!a)
		return -ENOMEM;
	*v = a;
	*cap = n;
	return 0;
}

/* A sender reference more, unless none is left (then the end is sent). */
bool cmesh__queue_sender_tryget(struct cmesh__queue *q)
{
	uint32_t n = atomic_load_explicit(&q->nsenders, memory_order_relaxed);

	do {
		if (!n)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(&q->nsenders, &n, n + 1,
							memory_order_seq_cst,
							memory_order_relaxed));
	return true;
}

int cmesh__queue_admit(struct cmesh__queue *q, uint64_t after, uint32_t mark,
		       struct cmesh__lane *ln, bool claimable)
{
	int r = 0;

	/*
	 * Before the consumer can see it (cmesh__queue_xl_merge() takes it
	 * under `lock`).
	 */
	ln->after = after;
	ln->after_mark = after ? mark : 0;
	pthread_mutex_lock(&q->lock);
	if (q->no_claims ||
	    (!after &&
	     atomic_load_explicit(&q->gate_serial, memory_order_relaxed))) {
		/*
		 * A sender of it sent away while the local tier waits (come
		 * home) would be read before what it queued here: forwarded.
		 */
		r = -EOPNOTSUPP;
	} else if (atomic_load_explicit(&q->state, memory_order_acquire) &
		   ST_RX_CLOSED) {
		/* Freed failed (a forwarder's whose far side failed): so is
		 * the sender that would have joined it. */
		r = cmesh__queue_closed_err(q, ST_RX_FAILED);
	} else if (atomic_load_explicit(&q->tx_lane, memory_order_relaxed) ||
		   (atomic_load_explicit(&q->tail, memory_order_relaxed) &
		    TAIL_SEAL)) {
		/* The receiver moved (or is moving): a second move. */
		r = -EOPNOTSUPP;
	} else {
		r = cmesh__queue_reserve_lanes(&q->xl_add, &q->xl_capadd,
					       q->xl_nadd + 1);
	}
	/*
	 * A claim's lane: the sender it stands for may have ended since
	 * (its old lane's CLOSE read, the last sender gone): no reference
	 * comes back from 0. A sender exported from here holds one.
	 */
	if (!r && after && !cmesh__queue_sender_tryget(q))
		r = -EPIPE;
	else if (!r && !after)
		cmesh__queue_sender_get(q);
	if (!r) {
		/* Before the consumer may drop it (which unlists it). */
		if (claimable)
			cmesh__link_lane_home_set(ln, q);
		q->xl_add[q->xl_nadd++] = ln;
		atomic_fetch_add_explicit(&q->st_lanes, 1,
					  memory_order_relaxed);
		cmesh__link_get(ln->link);
		/* Pairs with the consumer's acquire load of xl_flags. */
		atomic_fetch_or_explicit(&q->xl_flags, XL_ANY | XL_NEW,
					 memory_order_release);
		cmesh__queue_lane_joined(q);
	}
	pthread_mutex_unlock(&q->lock);
	if (!r)
		/* A receiver asleep waits on the old set: wake it. */
		cmesh__queue_wake(q, 0);
	return r;
}

/*
 * Consumer: whether the lane of serial `s` is still read (one a claimed
 * lane waits behind: cmesh__queue_admit()).
 */
static bool has_serial(const struct cmesh__queue *q, uint64_t s)
{
	if (q->rx_lane && !q->primary_done && q->rx_lane->serial == s)
		return true;
	if (q->next && q->next->serial == s)
		return true; /* waits behind rx_lane: has not ended */
	for (uint32_t i = 0; i < q->xl_n; i++)
		if (q->xl[i]->serial == s)
			return true;
	return false;
}

/* Consumer: the lane of serial `s` ended: the lanes behind it open. */
static void open_after(struct cmesh__queue *q, uint64_t s)
{
	for (uint32_t i = 0; i < q->xl_n; i++)
		if (q->xl[i]->after == s)
			q->xl[i]->after = 0;
}

static void open_local(struct cmesh__queue *q);

/*
 * Consumer: a sender of the lane the queue was made with came here with
 * clones left behind, and that lane passed its mark (queue_claim.c
 * cmesh__queue_gate_local()): the lane is read on as one of the queue's
 * lanes, beside the local tier, which becomes its first source. The lane
 * keeps the queue's link reference and takes a sender reference (the one
 * it held for claims, rx_ref, if any); a claimed lane behind it (next)
 * waits for its end among the lanes. -ENOMEM: not now (the mark stays).
 */
static int demote_primary(struct cmesh__queue *q)
{
	struct cmesh__lane *ln = q->rx_lane;
	int r;

	pthread_mutex_lock(&q->lock);
	r = cmesh__queue_reserve_lanes(&q->xl, &q->xl_cap,
				       q->xl_n + 1 + (q->next != NULL));
	if (!r) {
		q->rx_lane = NULL;
		atomic_store_explicit(&q->st_remote, false,
				      memory_order_relaxed);
		atomic_fetch_add_explicit(&q->st_lanes, 1,
					  memory_order_relaxed);
		/*
		 * Its reference for claims (a lane a sender comes home by is
		 * listed, and gives it up only at its end) is now the lane's,
		 * as any lane's: dropped when it ends (drop_lane()).
		 */
		if (!q->rx_ref)
			cmesh__queue_sender_get(q); /* never: see above */
		q->rx_ref = false;
		q->xl[q->xl_n++] = ln;
		if (q->next) {
			q->next->after = ln->serial;
			q->xl[q->xl_n++] = q->next;
			q->next = NULL;
		}
		/* A waitset sets its lanes up again (the same ones). */
		cmesh__queue_lane_joined(q);
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

/*
 * Consumer: lane `ln` passed MARK `mark` (everything a sender sent there
 * before it left is in): the lane its claim made opens. The claim was
 * admitted before the mark was written (the forwarder that writes it ends
 * once the claim's answer redirected its source), unless the claimer let
 * go of its sender first: then that lane is empty, and opens with the end
 * of `ln` (open_after()), which is when it would matter. False: not now
 * (no memory to take the lanes added since); the mark stays.
 */
static bool open_mark(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	if (cmesh__queue_xl_merge(q)) /* its claim's lane may be in xl_add */
		return false;
	for (uint32_t i = 0; i < q->xl_n; i++)
		if (q->xl[i]->after == ln->serial &&
		    q->xl[i]->after_mark == ln->mark_seen) {
			q->xl[i]->after = q->xl[i]->after_mark = 0;
			break;
		}
	/* A sender with clones left there came home: local again. */
	if (local_gated(q) &&
	    atomic_load_explicit(&q->gate_serial, memory_order_relaxed) ==
		    ln->serial &&
	    atomic_load_explicit(&q->gate_mark, memory_order_relaxed) ==
		    ln->mark_seen) {
		if (ln == q->rx_lane && demote_primary(q))
			return false;
		open_local(q);
	}
	ln->mark_seen = 0;
	return true;
}

/* Consumer: whether a lane took a MARK (HINTS) the queue has not acted on. */
static bool marks_taken(const struct cmesh__queue *q)
{
	if (q->rx_lane && cmesh__lane_control(q->rx_lane))
		return true;
	for (uint32_t i = 0; i < q->xl_n; i++)
		if (cmesh__lane_control(q->xl[i]))
			return true;
	return false;
}

/* Consumer: acts on what lane `ln` took (hints first); false: a mark left. */
static bool take_control(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	if (ln->nhints)
		cmesh__queue_claim_hints(q, ln);
	return !ln->mark_seen || open_mark(q, ln);
}

/* Consumer: acts on every mark (and hint) its lanes took; whether one is left. */
static bool take_marks(struct cmesh__queue *q)
{
	bool left = q->rx_lane && !take_control(q, q->rx_lane);

	for (uint32_t i = 0; i < q->xl_n; i++)
		left |= !take_control(q, q->xl[i]);
	return left;
}

/*
 * Consumer: a queue made with its lane (rx_lane), that lane ended, and a
 * sender of it came here (cmesh__queue_gate_local()): the local tier is
 * its first source from now on, as in a queue made here, and the lane
 * goes (its sender reference went with its end, cmesh__queue_rx_unref()).
 */
static void rx_lane_done(struct cmesh__queue *q)
{
	struct cmesh__lane *ln = q->rx_lane;
	struct cmesh__link *l = ln->link;

	/* Under `lock`: gate_local(), sole_lane() and the moves read it. */
	pthread_mutex_lock(&q->lock);
	q->rx_lane = NULL;
	q->primary_done = false;
	atomic_store_explicit(&q->st_remote, false, memory_order_relaxed);
	pthread_mutex_unlock(&q->lock);
	cmesh__link_lane_release(ln);
	cmesh__link_put(l);
}

/*
 * Consumer: the lane the local tier waited for has ended, or passed the
 * gate's mark (everything sent before is in): the local tier opens (its
 * senders queued, in order, behind the seal). In a queue made with its
 * lane that lane has ended (the gate is it, or a lane read after it),
 * unless the receiver goes, or it passed the mark and is one of the
 * queue's lanes now (demote_primary(): rx_lane is NULL then).
 */
static void open_local(struct cmesh__queue *q)
{
	/*
	 * The seal first, then the mark: no gate is set while gate_serial
	 * holds (cmesh__queue_gate_local()), and one set after this store
	 * sets its own seal and mark.
	 */
	atomic_fetch_and_explicit(&q->tail, ~TAIL_SEAL, memory_order_release);
	atomic_store_explicit(&q->gate_mark, 0, memory_order_relaxed);
	atomic_store_explicit(&q->gate_pre, 0, memory_order_relaxed);
	atomic_store_explicit(&q->gate_serial, 0, memory_order_release);
	/* Not when the receiver goes (receiver_close() ends the lane). */
	if (q->rx_lane && q->primary_done)
		rx_lane_done(q);
}

/* Consumer: takes the lanes added since it last looked. */
int cmesh__queue_xl_merge(struct cmesh__queue *q)
{
	uint64_t gate;
	int r = 0;

	if (!(atomic_load_explicit(&q->xl_flags, memory_order_acquire) &
	      XL_NEW))
		return 0;
	pthread_mutex_lock(&q->lock);
	/*
	 * With the lanes taken below: a gate set after the unlock may name
	 * a lane still in xl_add (its XL_NEW brings this look again).
	 */
	gate = atomic_load_explicit(&q->gate_serial, memory_order_relaxed);
	/* A claimed lane waiting (next) keeps its place (await_done()). */
	r = cmesh__queue_reserve_lanes(
		&q->xl, &q->xl_cap, q->xl_n + q->xl_nadd + (q->next != NULL));
	if (!r) {
		if (q->xl_nadd) /* a come home's XL_NEW may bring none */
			memcpy(q->xl + q->xl_n, q->xl_add,
			       q->xl_nadd * sizeof(q->xl_add[0]));
		q->xl_n += q->xl_nadd;
		q->xl_nadd = 0;
		atomic_fetch_and_explicit(&q->xl_flags, ~XL_NEW,
					  memory_order_relaxed);
	}
	pthread_mutex_unlock(&q->lock);
	/* A claimed lane whose predecessor ended before it came: open. */
	for (uint32_t i = 0; i < q->xl_n; i++)
		if (q->xl[i]->after && !has_serial(q, q->xl[i]->after))
			q->xl[i]->after = 0;
	/* The same for a sender that came home (cmesh__queue_gate_local). */
	if (!r && gate && !has_serial(q, gate))
		open_local(q);
	return r;
}

/* Consumer: lane i is done (CLOSE taken, or dropped): forget it. */
static void drop_lane(struct cmesh__queue *q, uint32_t i)
{
	struct cmesh__lane *ln = q->xl[i];

	q->xl[i] = q->xl[--q->xl_n];
	cmesh__queue_lane_gone(q, ln);
}

void cmesh__queue_lane_gone(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	struct cmesh__link *l = ln->link;

	/* Before what follows is received (a forwarder writes its mark). */
	if (q->end_fn)
		q->end_fn(q->end_ctx, ln->serial);
	atomic_fetch_sub_explicit(&q->st_lanes, 1, memory_order_relaxed);
	open_after(q, ln->serial);
	/* No claim may name it from here on (link_claim.c). */
	if (atomic_load_explicit(&ln->home_q, memory_order_relaxed))
		cmesh__link_lane_home_set(ln, NULL);
	if (ln->serial ==
	    atomic_load_explicit(&q->gate_serial, memory_order_acquire))
		open_local(q);
	cmesh__link_lane_release(ln);
	/* A kept rpc call's: its queue keeps the reference (hold_link). */
	if (q->hold_link && !q->held_link)
		q->held_link = l;
	else
		cmesh__link_put(l);
	/* Its sender reference: the last one closes the sending side. */
	cmesh__queue_sender_put(q);
}

/*
 * Consumer: the primary lane ended: a claimed lane (cmesh__queue_await())
 * is read from now on (room for it was made when it was set).
 */
static void await_done(struct cmesh__queue *q)
{
	if (!q->next)
		return;
	q->xl[q->xl_n++] = q->next;
	q->next = NULL;
}

/* A failure of the link a lane is on: the receiver's for good. */
static bool is_failure(int r)
{
	return r == -ECONNRESET || r == -EPROTO || r == -EMFILE;
}

/*
 * Consumer: a source failed (`r`), so the receiver did, for good (xl_err:
 * every later receive says so first): every lane's producer hears so now
 * (-ECONNRESET to its sends), not only once the receiver is freed, and
 * so does every local sender (ST_RX_FAILED: a send says -ECONNRESET, a
 * sender sent away arrives failed); no lane joins any more (no_claims);
 * the close fails the rest (rx_failed). Once.
 */
static void fail_sources(struct cmesh__queue *q, int r)
{
	q->xl_err = r;
	if (q->rx_failed)
		return;
	q->rx_failed = true;
	pthread_mutex_lock(&q->lock);
	q->no_claims = true;
	pthread_mutex_unlock(&q->lock);
	/* Its local senders' sends fail from now on (ST_RX_GONE). */
	atomic_fetch_or_explicit(&q->state, ST_RX_FAILED, memory_order_seq_cst);
	cmesh__queue_xl_merge(q); /* what joined before no_claims */
	for (uint32_t i = 0; i < q->xl_n; i++)
		cmesh__lane_fail_rx(q->xl[i]);
	if (q->next)
		cmesh__lane_fail_rx(q->next);
	if (q->rx_lane && !q->primary_done)
		cmesh__lane_fail_rx(q->rx_lane);
}

/*
 * A receive (or, with `peek`, the trailing length of what a receive would
 * take, without taking it): the first source, then the lanes from
 * xl_next on. A lane that closed is dropped on the way.
 */
static int walk(struct cmesh__queue *q, bool peek, void *out_msg,
		void *out_trail, size_t cap, struct cmesh__ports_in *pin)
{
	int r;

	if (q->xl_err)
		return q->xl_err;
	/* Its claim was refused: tried again when due. */
	if (unlikely(atomic_load_explicit(&q->claim_retry_at,
					  memory_order_relaxed)))
		cmesh__queue_claim_again_rx(q);
	r = cmesh__queue_xl_merge(q);
	if (r)
		return r;
again:
	/*
	 * Come home: what was sent before arrives first (gate_serial). A
	 * lane the queue was made with is read before the local tier.
	 */
	if (!q->primary_done && (!local_blocked(q) || q->rx_lane)) {
		r = peek ? cmesh__queue_peek_primary(q) :
			   cmesh__queue_try_primary(q, out_msg, out_trail, cap,
						    pin);
		if (r == CMESH__LANE_MARK) { /* only a lane gives one */
			if (take_marks(q))
				return -ENOMEM;
			goto again;
		}
		if (r != -EAGAIN && r != -EPIPE) {
			if (q->rx_lane && is_failure(r))
				fail_sources(q, r);
			return r;
		}
		/*
		 * The local tier says closed only once every sender, the
		 * lanes' included, is gone; a lane the queue was made with
		 * says so for its own producer.
		 */
		if (r == -EPIPE) {
			if (!q->rx_lane)
				return -EPIPE;
			q->primary_done = true;
			/* As drop_lane(): a forwarder writes its mark now. */
			if (q->end_fn)
				q->end_fn(q->end_ctx, q->rx_lane->serial);
			/*
			 * From now on every receive, peek, look and sleep
			 * takes this path: the lane's end is sticky, and a
			 * claim may still be joining (admit: its reference,
			 * then XL_NEW).
			 */
			atomic_fetch_or_explicit(&q->xl_flags, XL_ANY,
						 memory_order_release);
			open_after(q, q->rx_lane->serial);
			await_done(q);
			cmesh__queue_rx_unref(q);
			/* A sender that came home waited for it: local now. */
			if (atomic_load_explicit(&q->gate_serial,
						 memory_order_acquire) ==
			    q->rx_lane->serial) {
				open_local(q);
				goto again;
			}
		}
	}
	/* Behind a claim in flight here may wait what a lane's sender sent. */
	if (local_claim_waits(q))
		return -EAGAIN;
	for (uint32_t k = 0; k < q->xl_n; k++) {
		uint32_t i = (q->xl_next + k) % q->xl_n;

		if (q->xl[i]->after || gate_lane_waits(q, q->xl[i]->serial))
			continue; /* behind its sender's old lane, or local */
		r = peek ? cmesh__lane_peek(q->xl[i]) :
			   cmesh__lane_try_recv(q->xl[i], out_msg, out_trail,
						cap, pin);
		if (r == -EAGAIN)
			continue;
		if (r == -EPIPE) {
			drop_lane(q, i);
			goto again;
		}
		if (r == CMESH__LANE_MARK) {
			if (take_marks(q))
				return -ENOMEM;
			goto again;
		}
		if (is_failure(r)) {
			fail_sources(q, r);
			return r;
		}
		if (!peek)
			q->xl_next = i + 1;
		return r; /* a message (its length), or -EMSGSIZE / -ENOMEM */
	}
	/*
	 * Closed once no sender is left: a claim (cmesh__queue_admit()) takes
	 * its reference before it lists its lane (seq_cst both).
	 */
	return q->primary_done &&
			       !atomic_load_explicit(&q->nsenders,
						     memory_order_seq_cst) &&
			       !q->xl_n &&
			       !(atomic_load_explicit(&q->xl_flags,
						      memory_order_acquire) &
				 XL_NEW) ?
		       -EPIPE :
		       -EAGAIN;
}

void cmesh__queue_rx_unref(struct cmesh__queue *q)
{
	if (!q->rx_ref)
		return;
	q->rx_ref = false;
	/* No claim may name it from here on (link_claim.c). */
	cmesh__link_lane_home_set(q->rx_lane, NULL);
	cmesh__queue_sender_put(q);
}

int cmesh__queue_xl_try_recv(struct cmesh__queue *q, void *out_msg,
			     void *out_trail, size_t cap,
			     struct cmesh__ports_in *pin)
{
	return walk(q, false, out_msg, out_trail, cap, pin);
}

bool cmesh__queue_xl_ready(struct cmesh__queue *q)
{
again:
	if (q->xl_err ||
	    (atomic_load_explicit(&q->xl_flags, memory_order_acquire) & XL_NEW))
		return true;
	/* Behind a gate (come home) the local tier waits its turn. */
	if (!q->primary_done && (!local_blocked(q) || q->rx_lane) &&
	    (q->rx_lane ? cmesh__lane_ready(q->rx_lane) :
			  cmesh__queue_local_ready(q)))
		return true;
	/* Behind a claim in flight here may wait what a lane's sender sent. */
	if (!local_claim_waits(q))
		for (uint32_t i = 0; i < q->xl_n; i++)
			if (!q->xl[i]->after &&
			    !gate_lane_waits(q, q->xl[i]->serial) &&
			    cmesh__lane_ready(q->xl[i]))
				return true;
	/* Closed: a receive says -EPIPE (walk(), the same test). */
	if (q->primary_done &&
	    !atomic_load_explicit(&q->nsenders, memory_order_seq_cst) &&
	    !q->xl_n)
		return true;
	/* A look took a MARK: a lane it opened may hold something. */
	if (!marks_taken(q))
		return false;
	if (take_marks(q))
		return true; /* no memory: the receive says so */
	goto again;
}

int cmesh__queue_xl_peek(struct cmesh__queue *q)
{
	return walk(q, true, NULL, NULL, 0, NULL);
}

/* A lane of a receiver that closes: its producer sees how. */
static void close_rx(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	if (q->rx_failed)
		cmesh__lane_fail_rx(ln);
	else
		cmesh__lane_close_rx(ln);
}

void cmesh__queue_xl_close(struct cmesh__queue *q)
{
	/* ST_RX_CLOSED is set: xl_add grows no more (see cmesh__queue_admit()). */
	cmesh__queue_xl_merge(q);
	pthread_mutex_lock(&q->lock);
	/*
	 * What cmesh__queue_xl_merge() could not take (no memory): closed
	 * the same way.
	 */
	while (q->xl_nadd) {
		struct cmesh__lane *ln = q->xl_add[--q->xl_nadd];
		struct cmesh__link *l = ln->link;

		atomic_fetch_sub_explicit(&q->st_lanes, 1,
					  memory_order_relaxed);
		pthread_mutex_unlock(&q->lock);
		if (atomic_load_explicit(&ln->home_q, memory_order_relaxed))
			cmesh__link_lane_home_set(ln, NULL);
		close_rx(q, ln);
		cmesh__link_lane_release(ln);
		cmesh__link_put(l);
		cmesh__queue_sender_put(q);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	await_done(q); /* a claimed lane not read yet closes too */
	while (q->xl_n) {
		close_rx(q, q->xl[q->xl_n - 1]);
		drop_lane(q, q->xl_n - 1);
	}
	free(q->xl);
	free(q->xl_add);
	q->xl = q->xl_add = NULL;
	q->xl_cap = q->xl_capadd = 0;
}
