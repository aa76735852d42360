/* SPDX-License-Identifier: MIT */
/*
 * link_pool.c - lanes kept for reuse (reply ports, shm/proto.h POOLABLE
 * and REUSE): marking a new one poolable, taking a kept one for a reply
 * port's next use (from the link's pool, or the one a kept rpc call holds),
 * and, on the producing side, taking a REUSE for the next use of a lane we
 * keep. Their lifetime is link_sweep.c's, the LANE answers link_lanes.c's.
 *
 * A use ends with a LAST record (the reply, taken or not: the consumer is
 * then sure the producer is idle) or with the producer's idle_use in its
 * signal line (any other end). The two sides count uses alike.
 */
#include "link_int.h"

#include "park.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

void cmesh__link_lane_poolable(struct cmesh__port_out *out)
{
	struct cmesh__link *l = out->link;
	struct cmesh__lane *ln = out->lane;

	pthread_mutex_lock(&l->att_lock);
	if (!ln->is_out && l->npool_in < MAX_POOLED) {
		l->npool_in++;
		ln->poolable = true; /* until the answer says otherwise */
		ln->use = 1;
		out->desc.flags |= CMESH_PORT_F_POOLABLE;
	}
	pthread_mutex_unlock(&l->att_lock);
}

/*
 * The next use of kept in lane `ln`, reopened (att_lock held): *out is its
 * REUSE descriptor; ATTACHes up to `att` are an earlier use's.
 */
static void next_use(struct cmesh__lane *ln, uint64_t att,
		     struct cmesh__port_out *out)
{
	ln->use++;
	ln->answered = false; /* a DROPPED may answer this use */
	/* Late ATTACHes of the use that ended are answered as it ended. */
	ln->att_stale_failed = ln->att_drop && ln->att_drop_failed;
	ln->att_drop = false;
	ln->att_drop_failed = false;
	ln->att_stale = att;
	/* until its descriptor is sent */
	atomic_store_explicit(&ln->inflight, true, memory_order_relaxed);
	atomic_store_explicit(&ln->released, false, memory_order_relaxed);
	memset(out, 0, sizeof(*out));
	out->desc.id = ln->id;
	out->desc.kind = CMESH_PORT_WRITE;
	out->desc.ring_cap = ln->ring_cap;
	out->desc.flags = CMESH_PORT_F_REUSE;
	out->fd = -1;
	out->lane = ln;
	out->link = ln->link;
}

int cmesh__link_lane_reuse(struct cmesh__link *l, const cmesh_type *type,
			   uint32_t ring_cap, struct cmesh__port_out *out)
{
	struct cmesh__lane *ln;
	int r = -ENOENT;

	pthread_mutex_lock(&l->att_lock);
	for (ln = l->dyn; ln && r == -ENOENT; ln = ln->next) {
		uint64_t tail, att;

		/*
		 * Its last receiver gone, its producer done with that use: it
		 * sent a LAST record, which we took (nothing of the
		 * producer's to read), or its signal line says so.
		 */
		if (ln->is_out || !ln->poolable || ln->type != type ||
		    ln->ring_cap != ring_cap || ln->pins || ln->inflight ||
		    !atomic_load_explicit(&ln->released,
					  memory_order_relaxed) ||
		    !cmesh__lane_bound(ln) || cmesh__link_failed(l) ||
		    atomic_load_explicit(&ln->dropped, memory_order_relaxed) ||
		    (!cmesh__lane_rx_last_seen(ln) &&
		     atomic_load_explicit(&ln->peer_signal->idle_use,
					  memory_order_acquire) != ln->use))
			continue;
		if (ln->peer_idle) {
			/* It ended where we are, with no ATTACH since. */
			tail = ln->cons.head_pos;
			att = ln->att_stale;
			r = cmesh__lane_rx_reuse(ln, tail);
		} else {
			tail = ln->peer_signal->idle_tail;  /* once: checked */
			att = ln->peer_signal->idle_attach; /* once */
			/* Not before what came; past it only what is in
			 * flight. */
			r = att < ln->att_next_in || att - ln->att_next_in >
							     ln->att_max ?
				    -EPROTO :
				    cmesh__lane_rx_reuse(ln, tail);
		}
		if (r) {
			cmesh__lanes_unpool(
				l, ln); /* a bad tail: it goes, as done */
			r = -ENOENT;
			continue;
		}
		next_use(ln, att, out);
		break;
	}
	pthread_mutex_unlock(&l->att_lock);
	return r;
}

int cmesh__link_lane_rebind(struct cmesh__lane *ln, struct cmesh__port_out *out)
{
	struct cmesh__link *l = ln->link;
	int r = -ENOENT;

	pthread_mutex_lock(&l->att_lock);
	/*
	 * Not `inflight`: the LAST it took proves its last descriptor came
	 * (the sender may not have marked it sent yet).
	 */
	if (!ln->is_out && ln->poolable && ln->peer_idle && !ln->pins &&
	    cmesh__lane_bound(ln) && !cmesh__link_failed(l) &&
	    !atomic_load_explicit(&ln->dropped, memory_order_relaxed) &&
	    !cmesh__lane_rx_reuse(ln, ln->cons.head_pos)) {
		next_use(ln, ln->att_stale, out);
		r = 0;
	}
	pthread_mutex_unlock(&l->att_lock);
	return r;
}

/*
 * A REUSE port's lane, att_lock held: 0 (taken for its next use), -EBUSY
 * (its last use is ending: it published that use's record, its idle
 * follows), or -EPROTO (not a lane we kept, or one in use).
 */
static int take_kept(struct cmesh__link *l, const struct cmesh_ctl_port *d,
		     const cmesh_type *type, struct cmesh__lane **out)
{
	struct cmesh__lane *ln = cmesh__lanes_lookup(l, d->id);

	/* First: the failure may have freed the lane we waited for. */
	if (cmesh__link_failed(l))
		return -ECONNRESET; /* it arrives failed (port_import.c) */
	if (!ln || !ln->dynamic || !ln->is_out || d->kind != CMESH_PORT_WRITE ||
	    !ln->poolable || ln->ring_cap != d->ring_cap ||
	    !cmesh__lane_bound(ln))
		return -EPROTO;
	if (!ln->idle)
		/*
		 * Its LAST record lets the consumer name the lane before our
		 * sender's release makes it idle, a few instructions later,
		 * or before the link thread that flushed it from the backlog
		 * (a lane spills until it is bound) clears `spilling`: only
		 * then (the LAST sent, in the ring), wait; both are ours.
		 */
		return atomic_load_explicit(&ln->last_sent,
					    memory_order_relaxed) &&
				       cmesh__shmring_tail(&ln->prod) !=
					       ln->use_tail &&
				       !atomic_load_explicit(
					       &ln->dropped,
					       memory_order_relaxed) ?
			       -EBUSY :
			       -EPROTO;
	ln->idle = false;
	ln->use++;
	atomic_store_explicit(&ln->released, false, memory_order_relaxed);
	cmesh__lane_tx_reuse(ln, type);
	*out = ln;
	return 0;
}

/* How long a REUSE waits for the end of the lane's last use, per look. */
#define REUSE_SPINS 64
#define REUSE_NAP_NS 20000

int cmesh__lanes_import_reuse(struct cmesh__link *l,
			      const struct cmesh_ctl_port *d,
			      const cmesh_type *type, struct cmesh__lane **out)
{
	for (unsigned looks = 0;; looks++) {
		int r;

		pthread_mutex_lock(&l->att_lock);
		r = take_kept(l, d, type, out);
		pthread_mutex_unlock(&l->att_lock);
		if (r != -EBUSY)
			return r;
		if (looks < REUSE_SPINS) {
			cmesh__park_pause();
		} else if (looks < 2 * REUSE_SPINS) {
			sched_yield();
		} else {
			struct timespec ts = { 0, REUSE_NAP_NS };

			nanosleep(&ts, NULL);
		}
	}
}
