/* SPDX-License-Identifier: MIT */
/*
 * link_sweep.c - what becomes of a dynamic lane (link_export.c makes
 * them): its message sent, its release, a kept one's idle; and the link
 * thread's round over a link's lanes (backlogs, END, lanes that are done
 * freed), cmesh_node_flush()'s flush and the wake of every receiver.
 *
 * Lifetime of a dynamic lane. Created by a port (cmesh__link_lane_export
 * for an endpoint we send, cmesh__link_lane_import for one we receive),
 * registered, owned by the link. Its queue releases it when done; the
 * link thread frees it once the peer can no longer name it: an out lane
 * once its backlog is delivered and END sent (or it was dropped, or the
 * link failed); an in lane once END arrived (or it was dropped, or the
 * link failed). Only the link thread (and the link's destruction) frees
 * lanes, so it uses them without the lock; others only add to the list.
 */
#include "link_int.h"

#include "arena.h"

#include <errno.h>
#include <stdlib.h>

/* ---- sent, unsent, released ---- */

/*
 * A pooled out lane whose use ended here (released, every record of it in
 * the ring) goes idle and says so in its signal line; the consumer sees
 * it there when it next wants the lane (att_lock held). True if it did.
 */
static bool idle_now(struct cmesh__link *l, struct cmesh__lane *ln)
{
	if (!ln->poolable || !ln->is_out || ln->idle || ln->inflight ||
	    ln->pins || cmesh__link_failed(l) ||
	    atomic_load_explicit(&ln->dropped, memory_order_relaxed) ||
	    /* acquire: its senders' att_next_out, for tx_idle() */
	    !atomic_load_explicit(&ln->released, memory_order_acquire) ||
	    atomic_load_explicit(&ln->spilling, memory_order_acquire))
		return false;
	if (ln->drop_at_idle) {
		/* Its REUSE was dropped: both sides let it go. */
		ln->drop_at_idle = false;
		cmesh__lanes_unpool(l, ln);
		cmesh__lane_set_dropped(ln, false);
		return false;
	}
	ln->idle = true;
	cmesh__lane_tx_idle(ln);
	return true;
}

void cmesh__link_lane_sent(struct cmesh__lane *ln)
{
	/*
	 * No lock: a locked instruction here would wait for the record's
	 * stores to reach the lines the peer polls. Readers hold att_lock
	 * (acquire: what we did with the lane before this).
	 */
	atomic_store_explicit(&ln->inflight, false, memory_order_release);
}

void cmesh__link_lane_unsent(struct cmesh__lane *ln, bool failed)
{
	struct cmesh__link *l = ln->link;

	cmesh__lane_set_dropped(ln, failed);
	if (!ln->is_out)
		cmesh__lane_wake(ln);
	pthread_mutex_lock(&l->att_lock);
	/* The peer never saw it: it will not answer, nor name it. */
	ln->answered = true;
	/* the sweep may free it from here on */
	atomic_store_explicit(&ln->inflight, false, memory_order_relaxed);
	pthread_mutex_unlock(&l->att_lock);
	cmesh__link_kick(l);
}

void cmesh__link_lane_release(struct cmesh__lane *ln)
{
	struct cmesh__link *l = ln->link;
	bool kick;

	if (!ln->poolable) {
		/* The link may free `ln` from this store on. */
		atomic_store_explicit(&ln->released, true,
				      memory_order_release);
		cmesh__link_kick(l);
		return;
	}
	/*
	 * A kept lane goes idle here and now, with no round of the link
	 * thread and no message (a wake-up per rpc otherwise): an out lane
	 * says so in its signal line, an in lane is seen idle when a reply
	 * port wants it. With a backlog left, the link thread ends it.
	 */
	pthread_mutex_lock(&l->att_lock);
	atomic_store_explicit(&ln->released, true, memory_order_release);
	kick = ln->is_out && !idle_now(l, ln);
	pthread_mutex_unlock(&l->att_lock);
	if (kick)
		cmesh__link_kick(l);
}

/* ---- the link thread's round ---- */

/*
 * A released lane the peer will not name again, given what it told us:
 * freed by the sweep. An out lane first delivers its backlog and sends
 * END (done by the sweep before it asks this).
 */
static bool lane_done(struct cmesh__link *l, struct cmesh__lane *ln)
{
	/* A message that still names it, or a flush (att_lock held). */
	if (ln->inflight || ln->pins ||
	    !atomic_load_explicit(&ln->released, memory_order_acquire))
		return false;
	if (cmesh__link_failed(l))
		return true;
	if (ln->drain_owed)
		return false; /* its ring still has reply ports to answer */
	if (!ln->answered)
		return false; /* its answer is on the way */
	if (atomic_load_explicit(&ln->dropped, memory_order_acquire))
		return true;
	if (ln->poolable)
		return false; /* kept for its next use */
	return ln->is_out ? ln->end_sent : ln->end_seen;
}

bool cmesh__lanes_spilling(struct cmesh__link *l)
{
	bool any;

	if (atomic_load_explicit(&l->out.spilling, memory_order_relaxed))
		return true;
	pthread_mutex_lock(&l->att_lock);
	any = false;
	for (struct cmesh__lane *ln = l->dyn; ln && !any; ln = ln->next)
		any = ln->is_out && cmesh__lane_bound(ln) &&
		      atomic_load_explicit(&ln->spilling, memory_order_relaxed);
	pthread_mutex_unlock(&l->att_lock);
	return any;
}

/*
 * A released in lane waiting for its END keeps only its id and FIFO: its
 * memory goes now (nobody reads its ring again), so a peer that never
 * ends its lanes holds a few bytes each, not mappings; but not while it
 * owes a drain (a producer that never writes a claim there holds that
 * lane's mappings until the link ends). att_lock held.
 */
static void unmap_halves(struct cmesh__link *l, struct cmesh__lane *ln)
{
	if (ln->peer_half)
		l->peer_mapped -= cmesh__arena_layout(ln->peer_half)->size;
	cmesh__lane_bulk_free(ln); /* the peer's bulk arena, if it sent one */
	/* Nothing may read through them now (cmesh__lane_wake checks). */
	ln->own_wake = NULL;
	ln->peer_signal = NULL;
	cmesh__arena_free(ln->peer_half);
	cmesh__arena_free(ln->own_half);
	ln->peer_half = ln->own_half = NULL;
}

/*
 * One out lane's part of the round. True while its backlog waits for the
 * socket to poll writable (a SPACE or a binding wakes us otherwise).
 */
static bool sweep_out(struct cmesh__link *l, struct cmesh__lane *ln)
{
	enum cmesh__spill_wait w;
	bool released;

	if (cmesh__link_failed(l) ||
	    atomic_load_explicit(&ln->dropped, memory_order_acquire)) {
		/* Nothing will take it: no backlog, no retry timer. */
		cmesh__lane_drop_spill(ln);
		return false;
	}
	if (ln->dynamic && !cmesh__lane_bound(ln))
		return false; /* its backlog waits for the binding */
	/*
	 * Before the flush: its owner releases it (no lock) after its last
	 * send, whose spill this acquire then shows the flush. Seen only
	 * after a flush that found the backlog empty, a release could come
	 * with records spilled in between: END would go ahead of them and
	 * the lane be freed with them (the peer waits for good).
	 */
	released = atomic_load_explicit(&ln->released, memory_order_acquire);
	w = cmesh__lane_flush_spill(ln);
	if (w == CMESH__SPILL_DONE && ln->dynamic) {
		/*
		 * Everything it had is in the ring: it is done here (END),
		 * or a kept one (whose release found a backlog) goes idle.
		 * Under att_lock: a release may end it from another thread.
		 */
		bool end = false;

		pthread_mutex_lock(&l->att_lock);
		if (!idle_now(l, ln) && !ln->poolable && !ln->end_sent &&
		    released)
			end = ln->end_sent = true;
		pthread_mutex_unlock(&l->att_lock);
		if (end)
			cmesh__lanes_send_end(l, ln->id);
	}
	return w == CMESH__SPILL_SOCK;
}

bool cmesh__lanes_sweep(struct cmesh__link *l)
{
	struct cmesh__lane *ln, *done = NULL, **pp;
	bool more;

	/* Still full: owed again, and the round's POLLOUT watch retries. */
	if (atomic_exchange_explicit(&l->space_owed, false,
				     memory_order_relaxed) &&
	    cmesh__lanes_space_send(l) == -EAGAIN)
		atomic_store_explicit(&l->space_owed, true,
				      memory_order_relaxed);
	cmesh__ctx_sweep(l); /* CANCELs of contexts cancelled here */

	if (atomic_load_explicit(&l->ctl_pending, memory_order_relaxed)) {
		int err = 0;

		pthread_mutex_lock(&l->att_lock);
		if (!cmesh__link_failed(l))
			err = cmesh__lanes_ctl_flush_locked(l);
		pthread_mutex_unlock(&l->att_lock);
		if (err)
			cmesh__link_fail(l, -ECONNRESET);
	}
	more = sweep_out(l, &l->out);
	pthread_mutex_lock(&l->att_lock);
	ln = l->dyn;
	pthread_mutex_unlock(&l->att_lock);
	/* Others only push at the head: the rest of the list is ours. */
	l->drains_owed = 0;
	for (; ln; ln = ln->next) {
		if (ln->is_out && sweep_out(l, ln))
			more = true;
		/* Its owner is done with it (acquire: its close's drain). */
		if (!ln->is_out &&
		    atomic_load_explicit(&ln->released, memory_order_acquire) &&
		    !cmesh__lane_drain_more(ln))
			l->drains_owed++;
	}
	pthread_mutex_lock(&l->att_lock);
	for (pp = &l->dyn; (ln = *pp);) {
		if (!lane_done(l, ln)) {
			pp = &ln->next;
			/* Answered: nothing will bind it any more (a
			 * pooled one is bound for its next use). Its
			 * release (acquire) first, then drain_owed, which
			 * its closer set before that release: read the
			 * other way round, a drain owed could be missed
			 * and the ring unmapped under
			 * cmesh__lane_drain_more(). */
			if (!ln->is_out && !ln->pins && ln->answered &&
			    !ln->poolable &&
			    atomic_load_explicit(&ln->released,
						 memory_order_acquire) &&
			    !ln->drain_owed)
				unmap_halves(l, ln);
			continue;
		}
		*pp = ln->next;
		cmesh__idmap_del(&l->lanes, ln->id);
		l->ndyn--;
		if (ln->claiming)
			l->nclaims--;
		cmesh__lanes_unpool(l, ln);
		if (ln->peer_half)
			l->peer_mapped -=
				cmesh__arena_layout(ln->peer_half)->size;
		ln->next = done;
		done = ln;
	}
	pthread_mutex_unlock(&l->att_lock);
	while (done) {
		ln = done->next;
		pthread_mutex_lock(&l->att_lock);
		for (struct cmesh__attach *a = done->att_head; a; a = a->next)
			l->att_fds -= a->nfds;
		pthread_mutex_unlock(&l->att_lock);
		/*
		 * A backlog left (the lane dropped since its sweep_out(),
		 * say): its records are dropped, not discarded, so the ports
		 * in them are unsent (their lanes would wait for good).
		 */
		if (done->is_out)
			cmesh__lane_drop_spill(done);
		cmesh__lanes_free_fifo(done);
		cmesh__link_lane_token_forget(done);
		cmesh__lane_free(done);
		done = ln;
	}
	return more ||
	       atomic_load_explicit(&l->ctl_pending, memory_order_relaxed) ||
	       atomic_load_explicit(&l->space_owed, memory_order_relaxed);
}

int cmesh__link_flush(struct cmesh__link *l, int64_t deadline)
{
	struct cmesh__lane **v = NULL;
	uint32_t n = 0, cap = 0;
	int r = cmesh__lane_flush(&l->out, deadline), r2 = 0;

	/* The lanes with a backlog, pinned: the thread frees none of them. */
	pthread_mutex_lock(&l->att_lock);
	for (struct cmesh__lane *ln = l->dyn; ln; ln = ln->next) {
		if (!ln->is_out ||
		    !atomic_load_explicit(&ln->backlog, memory_order_relaxed))
			continue;
		if (n == cap) {
			struct cmesh__lane **w;

			cap = cap ? cap * 2 : 16;
			w = realloc(v, cap * sizeof(*v));
			if (!w) {
				r2 = -ENOMEM;
				break;
			}
			v = w;
		}
		ln->pins++;
		v[n++] = ln;
	}
	pthread_mutex_unlock(&l->att_lock);
	for (uint32_t i = 0; i < n; i++) {
		int e = cmesh__lane_flush(v[i], deadline);

		/* A receiver that is gone reads nothing more: done. */
		if (e && e != -EPIPE && !r2)
			r2 = e;
	}
	pthread_mutex_lock(&l->att_lock);
	for (uint32_t i = 0; i < n; i++)
		v[i]->pins--;
	pthread_mutex_unlock(&l->att_lock);
	free(v);
	if (n)
		cmesh__link_kick(l); /* lanes it kept may be done now */
	return r ? r : r2;
}

void cmesh__lanes_wake_all(struct cmesh__link *l)
{
	cmesh__lane_wake(&l->in);
	pthread_mutex_lock(&l->att_lock);
	for (struct cmesh__lane *ln = l->dyn; ln; ln = ln->next)
		if (!ln->is_out)
			cmesh__lane_wake(ln);
	pthread_mutex_unlock(&l->att_lock);
}
