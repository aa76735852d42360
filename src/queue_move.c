/* SPDX-License-Identifier: MIT */
/*
 * queue_move.c - a queue whose receiver or senders move between processes
 * (the other half of queue_port.c, which reads the lanes they leave):
 *
 * - the receiver moves: cmesh__queue_move_rx() seals the ring, forwards
 *   what it holds onto the new out lane, and the senders write that lane;
 *   split (cmesh__queue_move_rx_split()), its lanes stay, read by a
 *   forwarder until they end (cmesh__queue_split_end());
 * - the receiver comes home (CMESH_PORT_F_HOME): the old out lane sealed,
 *   the lane it comes back on read to its end before the local tier;
 * - claims: queue_claim.c.
 *
 * An old out lane is kept, sealed, until the queue goes, or put once no
 * send is inside it (reclaim mode): queue_claim.c.
 */
#include "queue.h"
#include "queue_int.h"

#include "env.h"
#include "lane.h"
#include "link.h"
#include "log.h"
#include "park.h"

#include <cmesh/common.h>
#include <cmesh/error.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- the receiver moves ---- */

/*
 * The receiver's move (see queue.h): with `split`, its lanes stay, read
 * by the caller's forwarder, and the receiving side's reference with
 * them (cmesh__queue_move_rx_split()).
 */
static int move_rx(struct cmesh__queue *q, struct cmesh__lane *ln,
		   int (*forward)(void *ctx, struct cmesh__lane *ln, void *msg,
				  void *trail, size_t len),
		   void *ctx, bool home, bool split)
{
	uint64_t sealed, saved = ln->max_backlog;
	void *msg;
	bool close_lane = false;

	msg = malloc(q->msg_size);
	if (!msg)
		return -ENOMEM;
	/*
	 * Under `lock`: a lane added (a sender of it sent away) is either
	 * seen here, or sees the seal (cmesh__queue_admit()). Split: no
	 * sender that came home waits in the local tier behind a lane (its
	 * older messages there would come after its newer ones).
	 */
	pthread_mutex_lock(&q->lock);
	if (q->rx_lane ||
	    (!split &&
	     atomic_load_explicit(&q->xl_flags, memory_order_acquire)) ||
	    (split &&
	     atomic_load_explicit(&q->gate_serial, memory_order_acquire)) ||
	    atomic_load_explicit(&q->tx_lane, memory_order_acquire)) {
		pthread_mutex_unlock(&q->lock);
		free(msg);
		return -EOPNOTSUPP;
	}
	/* Every claim from now on fails; earlier ones are below `sealed`. */
	sealed = atomic_fetch_or_explicit(&q->tail, TAIL_SEAL,
					  memory_order_acq_rel) &
		 ~TAIL_SEAL;
	/*
	 * Split: no sender comes home now (cmesh__queue_gate_local() sees
	 * XL_ANY and no tx_lane yet): its later messages, sent here while
	 * what it sent before waits in its old lane, would overtake them on
	 * the new lane. cmesh__queue_split_end() opens claims again.
	 */
	if (split)
		q->no_claims = true;
	pthread_mutex_unlock(&q->lock);
	/* What the queue held was within its own bounds: it all goes. */
	ln->max_backlog = UINT64_MAX;
	for (;;) {
		int len = cmesh__queue_local_len(q), r;
		void *trail = NULL;

		if (len == -EAGAIN) {
			if (q->head < sealed) {
				cmesh__park_pause(); /* claimed, not published */
				continue;
			}
			pthread_mutex_lock(&q->lock);
			if (!q->ovf_head && !q->ovf_batch)
				break; /* with `lock` held */
			pthread_mutex_unlock(&q->lock);
			continue;
		}
		if (len > 0) {
			trail = malloc((size_t)len);
			if (!trail) {
				/* Nothing is lost: it stays queued, we wait. */
				cmesh__park_pause();
				continue;
			}
		}
		r = cmesh__queue_pop(q, msg, trail, (size_t)len);
		if (r >= 0)
			r = forward(ctx, ln, msg, trail, (size_t)r);
		if (r < 0)
			/* Its resources are released; the peer never sees it. */
			cmesh__log(CMESH__LOG_WARN,
				   "a message queued for a receiver that moved "
				   "could not follow it: %s",
				   cmesh_strerror(r));
		free(trail);
	}
	/* `lock` held: a slow-path sender waits, then sees the lane. */
	ln->max_backlog = saved;
	/* Before any sender sees the lane (the store below publishes it). */
	if ((home || split) && ln->dynamic)
		ln->sealable = true;
	/*
	 * closed_out is tx_lane's: one set for an earlier lane (the receiver
	 * came home, cmesh__queue_come_home()) must not keep this lane's
	 * CLOSE from being sent (its last sender's put, or just below).
	 */
	q->closed_out = false;
	cmesh__queue_reclaimable(q, ln, false);
	/* seq_cst: Dekker with the last sender's put (queue_close.c). */
	atomic_store_explicit(&q->tx_lane, ln, memory_order_seq_cst);
	if (!atomic_load_explicit(&q->nsenders, memory_order_seq_cst) &&
	    !q->closed_out)
		close_lane = q->closed_out = true;
	pthread_mutex_unlock(&q->lock);
	/*
	 * The receiver may come back to us (cmesh__queue_come_home()); its
	 * port is not sent yet, so the peer cannot name the lane before.
	 */
	if (home && ln->dynamic && !close_lane)
		cmesh__link_lane_home_set(ln, q);
	if (close_lane &&
	    atomic_load_explicit(&q->tx_failed, memory_order_relaxed))
		cmesh__lane_fail_tx(ln); /* its last sender failed it */
	else if (close_lane)
		cmesh__lane_close_tx(ln);
	free(msg);
	/* The receiving side's reference: the lane is the receiver now. */
	if (!split)
		cmesh__queue_put(q);
	return 0;
}

int cmesh__queue_move_rx(struct cmesh__queue *q, struct cmesh__lane *ln,
			 int (*forward)(void *ctx, struct cmesh__lane *ln,
					void *msg, void *trail, size_t len),
			 void *ctx, bool home)
{
	return move_rx(q, ln, forward, ctx, home, false);
}

int cmesh__queue_move_rx_split(struct cmesh__queue *q, struct cmesh__lane *ln,
			       int (*forward)(void *ctx, struct cmesh__lane *ln,
					      void *msg, void *trail,
					      size_t len),
			       void *ctx)
{
	return move_rx(q, ln, forward, ctx, false, true);
}

bool cmesh__queue_lanes_done(struct cmesh__queue *q)
{
	/* None is added after the seal (cmesh__queue_admit()). */
	return !atomic_load_explicit(&q->st_lanes, memory_order_acquire);
}

void cmesh__queue_split_end(struct cmesh__queue *q)
{
	struct cmesh__lane *ln;

	cmesh__queue_xl_close(q); /* none left: their ends were read */
	pthread_mutex_lock(&q->lock);
	/*
	 * No lane, none to come (sealed), no consumer: a queue that never
	 * had lanes, whose receiver moved (it may come home, move again).
	 */
	if (!q->xl_n && !q->xl_nadd) {
		atomic_store_explicit(&q->xl_flags, 0, memory_order_release);
		q->no_claims = false; /* set by the split, and its hints */
	}
	ln = atomic_load_explicit(&q->tx_lane, memory_order_relaxed);
	/*
	 * From now on an ordinary moved receiver's: it may come home, and
	 * its senders here be claimed (its token, pending, is listed).
	 * Failed: nobody will claim them (a claim is refused for good).
	 */
	if (ln && ln->dynamic && !q->closed_out)
		cmesh__link_lane_home_set(ln, q);
	else if (ln)
		cmesh__link_lane_token_forget(ln);
	pthread_mutex_unlock(&q->lock);
	cmesh__queue_put(q); /* the receiving side's: the lane's now */
}

void cmesh__queue_fail_out(struct cmesh__queue *q)
{
	struct cmesh__lane *ln;
	bool fail = false;

	pthread_mutex_lock(&q->lock);
	ln = atomic_load_explicit(&q->tx_lane, memory_order_relaxed);
	if (ln && !q->closed_out)
		fail = q->closed_out = true;
	pthread_mutex_unlock(&q->lock);
	if (fail) {
		cmesh__lane_fail_tx(ln);
		cmesh__link_lane_token_forget(ln); /* a split's: never listed */
	}
}

/* ---- the receiver comes home ---- */

struct cmesh__lane *cmesh__queue_sole_lane(struct cmesh__queue *q)
{
	struct cmesh__lane *ln = NULL;
	uint32_t senders = 0;

	pthread_mutex_lock(&q->lock);
	/*
	 * The lane that all its senders write now: a claimed one (waiting
	 * behind the lane the queue was made with, whose end will come:
	 * the claim sealed what feeds it), or the only one read.
	 */
	if (q->ws ||
	    atomic_load_explicit(&q->gate_serial, memory_order_relaxed) ||
	    q->xl_err) {
		ln = NULL;
	} else if (q->next) {
		/* A refused claim's lane is no sender's (the primary is). */
		ln = q->xl_n || q->xl_nadd ||
				     atomic_load_explicit(
					     &q->next->dropped,
					     memory_order_acquire) ?
			     NULL :
			     q->next;
		senders = 1 + q->rx_ref;
	} else if (q->rx_lane && !q->primary_done) {
		/*
		 * Made with its lane: that lane holds no sender reference,
		 * unless it is listed for claims (cmesh__queue_claimable_rx()).
		 */
		ln = q->xl_n || q->xl_nadd ? NULL : q->rx_lane;
		senders = q->rx_ref;
	} else if (q->xl_n + q->xl_nadd == 1) {
		/*
		 * Claimed or added (not yet taken by a receive: xl_add):
		 * one sender reference; in a queue made here, no sender left
		 * here (what they sent goes first).
		 */
		ln = q->xl_n ? q->xl[0] : q->xl_add[0];
		senders = 1;
	}
	if (ln && (!ln->dynamic || ln->is_out ||
		   atomic_load_explicit(&q->nsenders, memory_order_relaxed) !=
			   senders))
		ln = NULL;
	/* Its port names that lane alone: a claimed lane would be missed. */
	if (ln)
		q->no_claims = true;
	pthread_mutex_unlock(&q->lock);
	return ln;
}

/* Lane i of xl, then of xl_add (`lock` held). */
static struct cmesh__lane *xl_at(const struct cmesh__queue *q, uint32_t i)
{
	return i < q->xl_n ? q->xl[i] : q->xl_add[i - q->xl_n];
}

/*
 * A source lane of `q` whose senders' process a claim may name: a port's
 * in lane, bound (or with the token we gave it early), with the token
 * that process gave; and no claimed lane waits behind it (its end, or a
 * MARK of it). The sender of that waiting lane may still have messages
 * on their way into this one (through a forwarder there): a claim of this
 * lane's senders redirects them and seals it, those messages go on the
 * claimed lane, while the waiting lane opens at this one's end (the MARK,
 * meeting the seal, is dropped), before them. `lock` held.
 */
static bool nameable(const struct cmesh__queue *q, struct cmesh__lane *ln)
{
	if (!ln->dynamic || ln->is_out ||
	    !(cmesh__lane_bound(ln) ||
	      (ln->peer_early &&
	       !atomic_load_explicit(&ln->dropped, memory_order_acquire))) ||
	    !ln->peer_node || !(ln->peer_token[0] | ln->peer_token[1]))
		return false;
	for (uint32_t i = 0; i < q->xl_n + q->xl_nadd; i++)
		if (xl_at(q, i)->after == ln->serial)
			return false;
	return true;
}

uint32_t cmesh__queue_sources(struct cmesh__queue *q, struct cmesh__lane **out,
			      uint32_t max)
{
	uint32_t n = 0;

	pthread_mutex_lock(&q->lock);
	if (!q->ws &&
	    !atomic_load_explicit(&q->gate_serial, memory_order_relaxed) &&
	    !q->xl_err && !q->next) {
		/*
		 * The lane it was made with first, while it is read: its end
		 * calls end_fn too (queue_port.c).
		 */
		if (q->rx_lane && !q->primary_done && n < max &&
		    nameable(q, q->rx_lane))
			out[n++] = q->rx_lane;
		for (uint32_t i = 0; i < q->xl_n + q->xl_nadd && n < max; i++) {
			struct cmesh__lane *ln = xl_at(q, i);

			if (!ln->after && nameable(q, ln))
				out[n++] = ln;
		}
	}
	/* Its port names them: a claimed lane would be missed. */
	if (n)
		q->no_claims = true;
	pthread_mutex_unlock(&q->lock);
	return n;
}

struct cmesh__lane *cmesh__queue_reroute_source(struct cmesh__queue *q,
						uint64_t node)
{
	struct cmesh__lane *ln = NULL;

	pthread_mutex_lock(&q->lock);
	/*
	 * Made here (no lane of its own), its only source one lane, which
	 * holds its only sender reference: no local sender, no claim taken,
	 * none waiting behind another lane, nothing gated.
	 */
	if (!q->no_claims && !q->rx_lane && !q->next && !q->xl_err &&
	    !atomic_load_explicit(&q->gate_serial, memory_order_relaxed) &&
	    q->xl_n + q->xl_nadd == 1 &&
	    atomic_load_explicit(&q->nsenders, memory_order_relaxed) == 1) {
		ln = xl_at(q, 0);
		/*
		 * Its writer lists its end (the token it gave, peer_token): a
		 * REROUTE naming it finds the queue behind it there.
		 */
		if (!ln->dynamic || ln->is_out || !cmesh__lane_bound(ln) ||
		    !(ln->peer_token[0] | ln->peer_token[1]) ||
		    cmesh__lane_failed(ln) ||
		    atomic_load_explicit(&ln->dropped, memory_order_acquire) ||
		    cmesh__link_peer_proc(ln->link) == node)
			ln = NULL;
		else
			q->no_claims = true;
	}
	pthread_mutex_unlock(&q->lock);
	return ln;
}

void cmesh__queue_on_lane_end(struct cmesh__queue *q,
			      void (*fn)(void *ctx, uint64_t serial), void *ctx)
{
	q->end_fn = fn;
	q->end_ctx = ctx;
}

/* A sender's claim a HINTS record named (cmesh__queue_claim_hints()). */
struct hinted {
	struct cmesh__queue *q;
	uint64_t after; /* the lane that brought the hint: read it first */
	uint32_t mark;	/* its mark there */
};

/* The claim's lane, before its CLAIM goes (cmesh__link_claim()). */
static int admit_hinted(void *ctx, struct cmesh__lane *ln)
{
	const struct hinted *h = ctx;

	return cmesh__queue_admit(h->q, h->after, h->mark, ln, true);
}

/*
 * Consumer: lane `ln` brought HINTS (its receiver had senders in other
 * processes when it was sent on here, shm/proto.h): each is claimed
 * where it is, if we are linked with that process, and its claimed lane
 * is read once `ln` passed the hint's MARK (or ended). A hint we cannot
 * act on (no link; the queue sent on: admit refuses, no CLAIM goes)
 * leaves that sender forwarded. A sender in this process is
 * not claimed: it stays forwarded too.
 */
void cmesh__queue_claim_hints(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	struct cmesh_rec_hint *h = ln->hints;
	uint32_t n = ln->nhints, cap = 0;
	const cmesh_env *env;

	ln->hints = NULL;
	ln->nhints = 0;
	/* Our own ring size for the lanes we make, not the peer's. */
	if (cmesh__env_get(&env) ||
	    cmesh__lane_ring_cap(q->h.type, false, env->ring_size, &cap))
		n = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct hinted ctx = { q, ln->serial, h[i].mark };
		struct cmesh__link *to;

		/* A sender here stays forwarded (a peer may take our name). */
		if (h[i].node == cmesh__proc_id())
			continue;
		to = cmesh__link_by_proc(h[i].node);
		if (!to)
			continue;
		/* admit() takes the lane's own reference on the link. */
		(void)cmesh__link_claim(to, h[i].token, 0, false, q->h.type,
					cap, env->max_backlog, env->spin_ns,
					NULL, admit_hinted, &ctx);
		cmesh__link_put(to);
	}
	free(h);
}

void cmesh__queue_claims_reopen(struct cmesh__queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->no_claims = false;
	pthread_mutex_unlock(&q->lock);
}

bool cmesh__queue_tryget(void *home)
{
	struct cmesh__queue *q = home;
	uint32_t n = atomic_load_explicit(&q->refs, memory_order_relaxed);

	do {
		if (!n)
			return false; /* on its way out */
	} while (!atomic_compare_exchange_weak_explicit(&q->refs, &n, n + 1,
							memory_order_acquire,
							memory_order_relaxed));
	return true;
}

void cmesh__queue_unget(void *home)
{
	cmesh__queue_put(home);
}

int cmesh__queue_come_home(struct cmesh__queue *q, struct cmesh__lane *home,
			   uint64_t serial, struct cmesh__lane *fwd)
{
	int r = 0;

	pthread_mutex_lock(&q->lock);
	/* A put lane's memory may be another's (its serial tells). */
	if (atomic_load_explicit(&q->tx_lane, memory_order_relaxed) != home ||
	    home->serial != serial || q->closed_out || q->ws ||
	    atomic_load_explicit(&q->xl_flags, memory_order_relaxed))
		r = -EOPNOTSUPP;
	if (!r)
		r = cmesh__queue_reserve_lanes(&q->xl_add, &q->xl_capadd,
					       q->xl_nadd + 1);
	/* fwd's sender reference; none left: its last sender closes home. */
	if (!r && !cmesh__queue_sender_tryget(q))
		r = -EOPNOTSUPP;
	if (r) {
		pthread_mutex_unlock(&q->lock);
		return r;
	}
	q->xl_add[q->xl_nadd++] = fwd;
	atomic_fetch_add_explicit(&q->st_lanes, 1, memory_order_relaxed);
	cmesh__link_get(fwd->link);
	/*
	 * A sender's queue made by its port (no receiver ever here) has an
	 * open ring: sealed as if its receiver had left from here.
	 */
	atomic_fetch_or_explicit(&q->tail, TAIL_SEAL, memory_order_relaxed);
	/* No consumer yet (the caller makes it): fwd is read first. */
	atomic_store_explicit(&q->gate_serial, fwd->serial,
			      memory_order_relaxed);
	q->closed_out = true; /* home's end is ours to send, below */
	/* Pairs with the consumer's acquire load of xl_flags. */
	atomic_fetch_or_explicit(&q->xl_flags, XL_ANY | XL_NEW,
				 memory_order_release);
	/*
	 * Sends go to the local tier from now on: its ring is still sealed
	 * (since the receiver left), so they queue, in order, in the
	 * overflow list until fwd ends (drop_lane()). seq_cst: Dekker with
	 * the last sender's put (queue_close.c), which looks again under
	 * `lock`.
	 */
	atomic_store_explicit(&q->tx_lane, NULL, memory_order_seq_cst);
	pthread_mutex_unlock(&q->lock);
	cmesh__link_lane_home_set(home, NULL); /* once only */
	/* A send inside `home` now sends again, here; then its end. */
	cmesh__lane_seal_tx(home);
	cmesh__queue_retire(q, home);
	return 0;
}
