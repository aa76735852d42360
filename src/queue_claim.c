/* SPDX-License-Identifier: MIT */
/*
 * queue_claim.c - the queue's side of claims (link_claim.c), after the
 * moves that make them (queue_move.c):
 *
 * - the senders redirected to the lane a receiver claimed
 *   (cmesh__queue_redirect), a claimed lane read after the one the queue
 *   was made with (cmesh__queue_await), a sender's claim made
 *   (cmesh__queue_claim_out), a sender come home gating the local tier
 *   (cmesh__queue_gate_local);
 * - an endpoint's claim of its peer (cmesh__queue_claim_peer), refused
 *   and tried again later: a sender's by its sends
 *   (cmesh__queue_claim_again), a receiver's by its receives and peeks
 *   (cmesh__queue_claim_again_rx);
 * - the mark a forwarder writes on its sender's lane when it ends
 *   (cmesh__queue_mark_*), and a forwarder's REROUTE: the offer that the
 *   writer of its one source claim the far receiver itself
 *   (cmesh__queue_reroute_offer), and the writer's side of it
 *   (cmesh__queue_reroute).
 *
 * The first KEEP_OLD out lanes a receiver leaves are kept, sealed, until
 * the queue goes (old_lanes): a sender may still be inside a send on one.
 * Past them the queue is in reclaim mode: a lane left then goes once no
 * use of tx_lane is inside it (queue_int.h tx_enter(), queue_close.c
 * cmesh__queue_retire()).
 */
#include "queue.h"
#include "queue_int.h"

#include "env.h"
#include "lane.h"
#include "link.h"

#include <cmesh/common.h>

#include <errno.h>
#include <stdlib.h>

int cmesh__queue_redirect(struct cmesh__queue *q, struct cmesh__lane *from,
			  uint64_t serial, struct cmesh__lane *to)
{
	pthread_mutex_lock(&q->lock);
	/*
	 * Its last sender closed `from` (or will: it waits on `lock`); or
	 * `from` failed (the channel with it: no claim mends it); or it was
	 * left and put (cmesh__queue_retire()): another lane may be where it
	 * was (its serial tells).
	 */
	if (atomic_load_explicit(&q->tx_lane, memory_order_relaxed) != from ||
	    from->serial != serial || q->closed_out ||
	    cmesh__lane_failed(from)) {
		pthread_mutex_unlock(&q->lock);
		return -EOPNOTSUPP;
	}
	/* Before any sender sees it (the store below publishes it). */
	to->sealable = true;
	cmesh__queue_reclaimable(q, to, !from->reclaimable);
	if (q->claim_out == to) {
		q->claim_out = NULL;   /* the tx lane now, with its reference */
		q->reroute_serial = 0; /* a REROUTE's claim held */
	} else
		cmesh__link_get(to->link); /* the queue's, for its tx lane */
	/*
	 * A send that meets `from` sealed goes on through the slow path: the
	 * queue's own ring must not take it (nobody reads it). Sealed by the
	 * receiver's move already, unless the queue was made by a sender's
	 * port: then now, before `from` is (a claim of that sender's).
	 */
	atomic_fetch_or_explicit(&q->tail, TAIL_SEAL, memory_order_acq_rel);
	/*
	 * seq_cst: Dekker with the last sender's put (queue_close.c), which
	 * looks again under `lock` and ends whichever lane it then finds.
	 */
	atomic_store_explicit(&q->tx_lane, to, memory_order_seq_cst);
	pthread_mutex_unlock(&q->lock);
	cmesh__link_lane_home_set(from, NULL);
	/* Its receiver may come home over `to`, or be claimed again. */
	cmesh__link_lane_home_set(to, q);
	/* A send inside `from` now sends again, on `to`; then its end. */
	cmesh__lane_seal_tx(from);
	cmesh__queue_retire(q, from);
	return 0;
}

void cmesh__queue_reclaimable(struct cmesh__queue *q, struct cmesh__lane *ln,
			      bool keeps_one)
{
	/* Past KEEP_OLD kept lanes (the one to be left counted in). */
	if (!atomic_load_explicit(&q->reclaim, memory_order_relaxed) &&
	    q->nold + keeps_one >= KEEP_OLD)
		/* seq_cst: before `ln` is published (tx_enter()). */
		atomic_store_explicit(&q->reclaim, 1, memory_order_seq_cst);
	ln->reclaimable =
		atomic_load_explicit(&q->reclaim, memory_order_relaxed);
}

struct cmesh__lane *cmesh__queue_sole_sender(struct cmesh__queue *q)
{
	struct cmesh__lane *tx;

	pthread_mutex_lock(&q->lock);
	tx = atomic_load_explicit(&q->tx_lane, memory_order_relaxed);
	/*
	 * Its claim unanswered: the claimed lane, whose far end it named
	 * already (protocol 20), unless refused.
	 */
	if (q->claim_out)
		tx = q->claim_out->peer_early && !atomic_load_explicit(
							 &q->claim_out->dropped,
							 memory_order_acquire) ?
			     q->claim_out :
			     NULL;
	if (!tx || !tx->dynamic || q->closed_out ||
	    atomic_load_explicit(&q->nsenders, memory_order_relaxed) != 1)
		tx = NULL;
	pthread_mutex_unlock(&q->lock);
	return tx;
}

int cmesh__queue_gate_local(struct cmesh__queue *q, uint64_t serial,
			    uint32_t mark)
{
	int r = 0;

	pthread_mutex_lock(&q->lock);
	/*
	 * Its receiver is here and reads lanes (a queue made with its lane:
	 * that one, or the claimed one behind it, so that the local tier
	 * opens once the queue's first source has ended: the queue is a
	 * local one from then on, queue_port.c); no other come home waits;
	 * the sender the lane stands for is still one of its senders. Not
	 * once the receiver went on naming its lane (no_claims): a claim of
	 * that lane's senders from further on would read what the sender
	 * sent before it came here after what it sends from here. After a
	 * mark (its clones still write the lane), the local tier is read
	 * beside the lane from then on: in a queue made with its lane, that
	 * lane becomes one of its lanes at the mark (queue_port.c
	 * demote_primary()); not one with a claimed lane, read behind it.
	 */
	if (q->no_claims ||
	    (mark && q->rx_lane &&
	     (serial != q->rx_lane->serial || q->next_serial)) ||
	    (q->rx_lane ?
		     serial != q->rx_lane->serial && serial != q->next_serial :
		     !(atomic_load_explicit(&q->xl_flags, memory_order_relaxed) &
		       XL_ANY)) ||
	    atomic_load_explicit(&q->tx_lane, memory_order_relaxed) ||
	    atomic_load_explicit(&q->gate_serial, memory_order_acquire) ||
	    (atomic_load_explicit(&q->state, memory_order_relaxed) &
	     ST_RX_CLOSED) ||
	    !cmesh__queue_sender_tryget(q)) {
		r = -EOPNOTSUPP;
	} else {
		uint32_t pre = 0;

		/* Every claim after this fails: the sends queue in order. */
		atomic_fetch_or_explicit(&q->tail, TAIL_SEAL,
					 memory_order_acq_rel);
		/* What is queued now was sent before it came: read first. */
		for (struct ovf_node *n = q->ovf_head; n; n = n->next)
			pre++;
		atomic_store_explicit(&q->gate_pre, pre, memory_order_relaxed);
		atomic_store_explicit(&q->gate_mark, mark,
				      memory_order_relaxed);
		atomic_store_explicit(&q->gate_serial, serial,
				      memory_order_release);
		/*
		 * The consumer looks (cmesh__queue_xl_merge()): the lane may
		 * have ended. A queue made with its lane takes the lanes' path
		 * from now on.
		 */
		atomic_fetch_or_explicit(&q->xl_flags, XL_ANY | XL_NEW,
					 memory_order_release);
	}
	pthread_mutex_unlock(&q->lock);
	if (!r)
		cmesh__queue_wake(q, 0);
	return r;
}

int cmesh__queue_claim_out(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	struct cmesh__lane *tx;
	int r = 0;

	pthread_mutex_lock(&q->lock);
	tx = atomic_load_explicit(&q->tx_lane, memory_order_relaxed);
	/* A REROUTE's claim, only from the lane it named (rerouted()). */
	if (q->claim_out || !tx || !tx->dynamic || q->closed_out ||
	    (q->reroute_serial && tx->serial != q->reroute_serial)) {
		r = -EINVAL;
	} else {
		q->claim_out = ln;
		ln->claim_from = tx;
		ln->claim_from_serial = tx->serial;
		/* Before its handle is out: sends of endpoints look at the seal. */
		tx->sealable = true;
	}
	pthread_mutex_unlock(&q->lock);
	/* The claim's answer finds the queue by it (link_claim.c). */
	if (!r)
		cmesh__link_lane_home_set(ln, q);
	return r;
}

/*
 * Tries of a refused claim, and the first wait (x4 each time after, about
 * 1.4 s in all). One refused LATER goes on past them, CLAIM_LATER_NS
 * apart at most: its lane is listed once a split's forwarder ends, which
 * lasts as long as a sender elsewhere lives (each try makes a lane: two
 * memfds and a CLAIM).
 */
#define CLAIM_TRIES 6u
#define CLAIM_RETRY_NS 1000000
#define CLAIM_LATER_NS 1000000000

static int claim_out(void *q, struct cmesh__lane *ln)
{
	return cmesh__queue_claim_out(q, ln);
}

static int await(void *q, struct cmesh__lane *ln)
{
	return cmesh__queue_await(q, ln);
}

int cmesh__queue_claim_peer(struct cmesh__queue *q, struct cmesh__link *to,
			    const uint64_t tok[2], uint64_t node, uint32_t mark,
			    bool sending)
{
	const cmesh_env *env;
	uint64_t list[2] = { 0, 0 };
	uint32_t cap;
	int r;

	pthread_mutex_lock(&q->lock);
	/* A retry (the same claim) names the peer's end as its first try. */
	if (q->claim_tries && q->claim_tok[0] == tok[0] &&
	    q->claim_tok[1] == tok[1] && q->claim_node == node) {
		list[0] = q->claim_list[0];
		list[1] = q->claim_list[1];
	}
	/* Kept for a retry should it be refused (its end not taken yet). */
	q->claim_tok[0] = tok[0];
	q->claim_tok[1] = tok[1];
	q->claim_node = node;
	q->claim_mark = mark;
	pthread_mutex_unlock(&q->lock);
	r = cmesh__env_get(&env);
	if (!r)
		r = cmesh__lane_ring_cap(q->h.type, false, env->ring_size,
					 &cap);
	if (!r)
		r = cmesh__link_claim(to, tok, mark, sending, q->h.type, cap,
				      env->max_backlog, env->spin_ns, list,
				      sending ? claim_out : await, q);
	if (!r) {
		pthread_mutex_lock(&q->lock);
		q->claim_list[0] = list[0];
		q->claim_list[1] = list[1];
		pthread_mutex_unlock(&q->lock);
	}
	return r;
}

void cmesh__queue_claim_refused(struct cmesh__queue *q, struct cmesh__lane *ln,
				bool later)
{
	uint32_t k;
	int64_t wait;

	pthread_mutex_lock(&q->lock);
	if (!ln->is_out) /* the receiver's (a hint's too): `lock` */
		atomic_store_explicit(
			&q->st_refused,
			atomic_load_explicit(&q->st_refused,
					     memory_order_relaxed) +
				1,
			memory_order_relaxed);
	/* A sender's claim, or a receiver's (its serial outlives `next`). */
	if ((ln->is_out ? q->claim_out == ln && !q->closed_out :
			  q->next_serial == ln->serial) &&
	    q->claim_node && (later || q->claim_tries < CLAIM_TRIES)) {
		k = q->claim_tries < CLAIM_TRIES ? q->claim_tries :
						   CLAIM_TRIES - 1;
		wait = (int64_t)CLAIM_RETRY_NS << (2 * k);
		if (later && wait > CLAIM_LATER_NS)
			wait = CLAIM_LATER_NS;
		atomic_store_explicit(&q->claim_retry_at,
				      cmesh_clock_now() + wait,
				      memory_order_relaxed);
	}
	pthread_mutex_unlock(&q->lock);
}

/* The time of a refused claim's retry if it is due now, else 0. */
static int64_t retry_at(struct cmesh__queue *q)
{
	int64_t at =
		atomic_load_explicit(&q->claim_retry_at, memory_order_relaxed);

	return at && cmesh_clock_now() >= at ? at : 0;
}

/*
 * `lock` held: takes a due retry (one caller does: a later refusal's,
 * set under `lock` too, is another's); false if none was due.
 */
static bool retry_due(struct cmesh__queue *q, int64_t at)
{
	if (atomic_load_explicit(&q->claim_retry_at, memory_order_relaxed) !=
	    at)
		return false;
	atomic_store_explicit(&q->claim_retry_at, 0, memory_order_relaxed);
	return true;
}

/* `lock` held: what the claim named, for its next try (counted). */
static void next_try(struct cmesh__queue *q, uint64_t tok[2], uint64_t *node,
		     uint32_t *mark)
{
	if (q->claim_tries < UINT32_MAX)
		q->claim_tries++;
	tok[0] = q->claim_tok[0];
	tok[1] = q->claim_tok[1];
	*node = q->claim_node;
	*mark = q->claim_mark;
}

/* The claim goes again (the refused one is done with); 0 if it went. */
static int claim_anew(struct cmesh__queue *q, const uint64_t tok[2],
		      uint64_t node, uint32_t mark, bool sending)
{
	struct cmesh__link *to = cmesh__link_by_proc(node);
	int r = to ? 0 : -ENOTCONN;

	/* Its reference goes to the queue if the claim goes. */
	if (to) {
		r = cmesh__queue_claim_peer(q, to, tok, node, mark, sending);
		if (r)
			cmesh__link_put(to);
	}
	return r;
}

int cmesh__queue_reroute(struct cmesh__queue *q, struct cmesh__lane *ln,
			 uint64_t serial, uint64_t node, const uint64_t tok[2],
			 uint32_t mark)
{
	int r = -EAGAIN;

	pthread_mutex_lock(&q->lock);
	if (atomic_load_explicit(&q->tx_lane, memory_order_relaxed) == ln &&
	    ln->serial == serial && !q->claim_out && !q->closed_out &&
	    !atomic_load_explicit(&q->claim_retry_at, memory_order_relaxed) &&
	    !cmesh__lane_failed(ln)) {
		q->claim_tok[0] = tok[0];
		q->claim_tok[1] = tok[1];
		q->claim_node = node;
		q->claim_mark = mark;
		q->claim_list[0] = q->claim_list[1] = 0;
		q->claim_tries = 0;
		q->reroute = true;
		q->reroute_serial = serial;
		atomic_store_explicit(&q->claim_retry_at, cmesh_clock_now(),
				      memory_order_relaxed);
		r = 0;
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

bool cmesh__queue_tx_steady(struct cmesh__queue *q)
{
	bool r;

	pthread_mutex_lock(&q->lock);
	r = !q->claim_out && !q->closed_out &&
	    !atomic_load_explicit(&q->claim_retry_at, memory_order_relaxed);
	pthread_mutex_unlock(&q->lock);
	return r;
}

/*
 * `lock` held: a REROUTE's claim (reroute_serial set) goes only from the
 * lane it named; any other claim of the queue's goes.
 */
static bool on_named_lane(struct cmesh__queue *q)
{
	struct cmesh__lane *tx =
		atomic_load_explicit(&q->tx_lane, memory_order_relaxed);

	return !q->reroute_serial || (tx && tx->serial == q->reroute_serial);
}

/* A rerouted claim that could not go yet: again after a while. */
static void reroute_later(struct cmesh__queue *q)
{
	pthread_mutex_lock(&q->lock);
	if (q->claim_tries < CLAIM_TRIES && !q->claim_out && !q->closed_out &&
	    on_named_lane(q) &&
	    !atomic_load_explicit(&q->claim_retry_at, memory_order_relaxed)) {
		q->reroute = true;
		atomic_store_explicit(&q->claim_retry_at,
				      cmesh_clock_now() +
					      ((int64_t)CLAIM_RETRY_NS
					       << (2 * (q->claim_tries - 1))),
				      memory_order_relaxed);
	}
	pthread_mutex_unlock(&q->lock);
}

void cmesh__queue_claim_again(struct cmesh__queue *q)
{
	int64_t at = retry_at(q);
	struct cmesh__lane *dead = NULL;
	uint64_t tok[2] = { 0, 0 }, node = 0;
	uint32_t mark = 0;
	bool rerouted = false, again = false;
	struct cmesh__link *l;

	if (!at)
		return;
	pthread_mutex_lock(&q->lock);
	if (retry_due(q, at) && !q->closed_out) {
		/* The refused lane, answered, is done with. */
		if (q->claim_out &&
		    atomic_load_explicit(&q->claim_out->dropped,
					 memory_order_acquire)) {
			dead = q->claim_out;
			q->claim_out = NULL;
			again = on_named_lane(q);
			if (again)
				next_try(q, tok, &node, &mark);
		} else if (q->reroute && !q->claim_out && on_named_lane(q)) {
			rerouted = true;
			next_try(q, tok, &node, &mark);
		}
		q->reroute = false;
	}
	pthread_mutex_unlock(&q->lock);
	if (rerouted) {
		/* Not linked with that process yet (an INTRO is on its way):
		 * again later, as a refused claim is. */
		if (claim_anew(q, tok, node, mark, true) == -ENOTCONN)
			reroute_later(q);
		return;
	}
	if (!dead)
		return;
	l = dead->link;
	cmesh__link_lane_home_set(dead, NULL);
	cmesh__link_lane_release(dead);
	cmesh__link_put(l);
	if (again)
		(void)claim_anew(q, tok, node, mark, true);
}

void cmesh__queue_claim_again_rx(struct cmesh__queue *q)
{
	int64_t at = retry_at(q);
	struct cmesh__lane *dead = NULL;
	uint64_t tok[2] = { 0, 0 }, node = 0;
	uint32_t mark = 0;

	if (!at)
		return;
	pthread_mutex_lock(&q->lock);
	/*
	 * Still waiting behind the lane the queue was made with, which has
	 * not failed (its error is the receiver's: no sender is to be
	 * redirected to a lane never read).
	 */
	if (retry_due(q, at) && q->next && !q->primary_done &&
	    !cmesh__lane_failed(q->rx_lane) &&
	    !(atomic_load_explicit(&q->state, memory_order_relaxed) &
	      ST_RX_CLOSED) &&
	    atomic_load_explicit(&q->next->dropped, memory_order_acquire)) {
		dead = q->next;
		q->next = NULL; /* for await(), which sets it again */
		next_try(q, tok, &node, &mark); /* a receiver's: no mark */
	}
	pthread_mutex_unlock(&q->lock);
	if (!dead)
		return;
	/*
	 * The new claim's sender reference before the refused one's goes:
	 * the sending side never closes in between.
	 */
	if (claim_anew(q, tok, node, mark, false)) {
		pthread_mutex_lock(&q->lock);
		q->next = dead; /* read once the primary ends, as before */
		q->next_serial = dead->serial;
		pthread_mutex_unlock(&q->lock);
		return;
	}
	cmesh__queue_lane_gone(q, dead);
}

/* `lock` held: a sender reference more for a queue that may have none. */
static void sender_ref_first(struct cmesh__queue *q)
{
	/*
	 * The first sender reference of a queue made with its lane (which
	 * holds none) brings the sending side's queue reference, which the
	 * last one's put drops (queue_close.c).
	 */
	if (!atomic_fetch_add_explicit(&q->nsenders, 1, memory_order_seq_cst))
		atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
}

int cmesh__queue_claimable_rx(struct cmesh__queue *q)
{
	pthread_mutex_lock(&q->lock);
	if (!q->rx_lane || q->rx_ref) {
		pthread_mutex_unlock(&q->lock);
		return -EINVAL;
	}
	q->rx_ref = true;
	sender_ref_first(q);
	pthread_mutex_unlock(&q->lock);
	cmesh__link_lane_home_set(q->rx_lane, q);
	return 0;
}

int cmesh__queue_await(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	int r;

	pthread_mutex_lock(&q->lock);
	/* The consumer's array has room for it when the primary ends. */
	r = q->next || !q->rx_lane ?
		    -EINVAL :
		    cmesh__queue_reserve_lanes(&q->xl, &q->xl_cap, q->xl_n + 1);
	if (!r) {
		q->next = ln;
		q->next_serial = ln->serial;
		atomic_fetch_add_explicit(&q->st_lanes, 1,
					  memory_order_relaxed);
		sender_ref_first(q);
		/* Its receives take the lanes' path (walk()), XL_NEW aside. */
		atomic_fetch_or_explicit(&q->xl_flags, XL_ANY,
					 memory_order_release);
		/* A retry's, from a receive in a waitset: its wake socket. */
		cmesh__queue_lane_joined(q);
	}
	pthread_mutex_unlock(&q->lock);
	/*
	 * A sender of it sent on from the senders' process may claim it
	 * here, behind `ln` (the CLAIM takes its token there).
	 */
	if (!r)
		cmesh__link_lane_home_set(ln, q);
	return r;
}

/* ---- marks a forwarder writes when it ends; REROUTE ---- */

struct cmesh__queue_mark {
	struct cmesh__queue *q; /* held by the forwarder's sender */
	struct cmesh__lane *ln;
	uint64_t serial;
	uint32_t mark;
};

/* A new mark of `ln` (counted in, or its queue's lock held). */
static void mark_set(struct cmesh__queue_mark *m, struct cmesh__queue *q,
		     struct cmesh__lane *ln)
{
	m->q = q;
	m->ln = ln;
	m->serial = ln->serial;
	m->mark = cmesh__lane_mark_new(ln);
}

/*
 * Only if the token `ln` carries is its own (not one handed on from
 * upstream, with a lane further on or a mark of its own: the mark would
 * land on the wrong lane).
 */
struct cmesh__queue_mark *cmesh__queue_mark_for(struct cmesh__queue *q,
						struct cmesh__lane *ln,
						uint64_t node)
{
	struct cmesh__queue_mark *m;

	if (!node || node != cmesh__link_peer_proc(ln->link) || ln->peer_mark)
		return NULL;
	m = malloc(sizeof(*m));
	if (m)
		mark_set(m, q, ln);
	return m;
}

uint32_t cmesh__queue_mark_id(const struct cmesh__queue_mark *m)
{
	return m->mark;
}

void cmesh__queue_mark_at_end(void *arg)
{
	struct cmesh__queue_mark *m = arg;
	bool in;
	struct cmesh__lane *ln = cmesh__queue_tx_enter(m->q, &in);

	/* Left since (sealed: no mark would go) and maybe put: nothing. */
	if (ln == m->ln && ln->serial == m->serial)
		cmesh__lane_mark_tx(ln, m->mark);
	cmesh__queue_tx_leave_quiet(m->q, in);
	free(m);
}

int cmesh__queue_reroute_offer(struct cmesh__queue *qr, struct cmesh__queue *qt,
			       void (**at_end)(void *arg), void **at_end_arg)
{
	struct cmesh__queue_mark *m = NULL;
	struct cmesh__lane *ln, *src = NULL;
	uint64_t node = 0, tok[2] = { 0, 0 };
	bool in;

	/*
	 * Its lane, counted in (reclaim mode may put a lane left behind):
	 * with a token of its own and no mark (as cmesh__queue_mark_for()
	 * wants), no claim of its own under way or due (the forwarder's
	 * thread is the one that sends on it). Then the receiver's source,
	 * which commits it (no claim from then on), then the mark.
	 */
	ln = cmesh__queue_tx_enter(qt, &in);
	if (ln && ln->dynamic && ln->is_out && cmesh__lane_bound(ln) &&
	    !cmesh__lane_failed(ln) && cmesh__queue_tx_steady(qt) &&
	    (ln->peer_token[0] | ln->peer_token[1]) && !ln->peer_mark &&
	    ln->peer_node == cmesh__link_peer_proc(ln->link) &&
	    (m = malloc(sizeof(*m))) != NULL) {
		node = ln->peer_node;
		tok[0] = ln->peer_token[0];
		tok[1] = ln->peer_token[1];
		src = cmesh__queue_reroute_source(qr, node);
		if (src)
			mark_set(m, qt, ln);
	}
	cmesh__queue_tx_leave_quiet(qt, in);
	if (!src) {
		free(m);
		return -EAGAIN;
	}
	/* Linked with that process, it links the writer of `src` with it. */
	cmesh__link_introduce(src->link, node);
	cmesh__link_reroute(src->link, src->id, node, tok, m->mark);
	*at_end = cmesh__queue_mark_at_end;
	*at_end_arg = m;
	return 0;
}
