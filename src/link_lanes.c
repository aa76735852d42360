/* SPDX-License-Identifier: MIT */
/*
 * link_lanes.c - the lanes on a link: their ids and table, the lanes that
 * endpoints create and their lifetime, and the control messages that set
 * them up (LANE) and end them (END); ATTACHes are link_attach.c's. Wire
 * format: shm/proto.h.
 *
 * Ids. Each side gives ids of its own parity (from the HELLOs' node ids),
 * so the two never collide; 0 and 1 are the HELLO's lanes. Every lane the
 * peer may name is in `lanes` (ck_ht, under att_lock): an ATTACH names an
 * in lane of ours, a LANE answer an unanswered lane we created, an END an
 * in lane whose producer it is. Anything else, or a port descriptor whose
 * id is in use, fails the link with -EPROTO and touches no other lane:
 * a peer can name only lanes of its own link.
 *
 * Lifetime of a dynamic lane. Created by a port (cmesh__link_lane_export
 * for an endpoint we send, cmesh__link_lane_import for one we receive),
 * registered, owned by the link. Its queue releases it when done; the
 * link thread frees it once the peer can no longer name it: an out lane
 * once its backlog is delivered and END sent (or it was dropped, or the
 * link failed); an in lane once END arrived (or it was dropped, or the
 * link failed). Only the link thread (and the link's destruction) frees
 * lanes, so it uses them without the lock; others only add to the list.
 *
 * Every port descriptor we receive is answered exactly once: LANE with
 * our half when a receiver takes the endpoint, or DROPPED when its
 * ATTACH is dropped (the receiving lane's receiver is gone). Control
 * messages that meet a full socket wait, in order, in `ctl_head`.
 */
#include "link_int.h"

#include "arena.h"
#include "ctl.h"
#include "log.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Dynamic lanes one link may hold (a peer's ports cannot make us hold
 * more): each maps two or three areas, and a process may map 65,530.
 */
#define MAX_LANES 16384u
/* Bytes of the peer's halves one link may map (address space). */
#define MAX_PEER_MAPPED (1ull << 40)

/* ---- the table (att_lock held) ---- */

struct cmesh__lane *cmesh__lanes_lookup(struct cmesh__link *l, uint32_t id)
{
	return cmesh__idmap_get(&l->lanes, id);
}

static int insert(struct cmesh__link *l, struct cmesh__lane *ln)
{
	return cmesh__idmap_put(&l->lanes, ln->id, ln);
}

int cmesh__lanes_init(struct cmesh__link *l, uint64_t our_node,
		      uint64_t peer_node)
{
	l->parity = our_node < peer_node ? 0 : 1;
	l->next_id = l->parity + 2;
	l->out.id = l->parity;
	l->in.id = l->parity ^ 1u;
	l->out.is_out = true;
	if (cmesh__idmap_init(&l->lanes, our_node ^ peer_node))
		return -ENOMEM;
	if (insert(l, &l->out) || insert(l, &l->in))
		return -ENOMEM;
	return 0;
}

void cmesh__lanes_destroy(struct cmesh__link *l)
{
	struct cmesh__lane *ln = l->dyn;

	while (ln) {
		struct cmesh__lane *next = ln->next;

		cmesh__lanes_free_fifo(ln);
		cmesh__lane_free(ln);
		ln = next;
	}
	l->dyn = NULL;
	cmesh__lanes_free_fifo(&l->in);
	while (l->ctl_head) {
		struct ctl_pending *p = l->ctl_head;

		l->ctl_head = p->next;
		if (p->fd >= 0)
			close(p->fd);
		free(p);
	}
	cmesh__idmap_destroy(&l->lanes);
}

/* ---- control messages we send ---- */

void cmesh__ctl_hdr_fill(struct cmesh_ctl_hdr *h, uint16_t type, uint32_t len)
{
	h->magic = CMESH_PROTO_MAGIC;
	h->version = CMESH_PROTO_VERSION;
	h->type = type;
	h->len = len;
	h->reserved = 0;
}

/*
 * Sends what waited, in order; att_lock held. Returns what the socket
 * said when it is gone: the caller fails the link once it has unlocked
 * (failing wakes every lane, which takes att_lock).
 */
static int ctl_flush_locked(struct cmesh__link *l)
{
	struct ctl_pending *p;
	int err = 0;

	while ((p = l->ctl_head)) {
		int r = cmesh__ctl_send(l->sock, p->buf, p->len, &p->fd,
					p->fd >= 0 ? 1 : 0);

		if (r == -EAGAIN || r == -ENOBUFS)
			break;
		if (r) {
			err = r;
			break;
		}
		l->ctl_head = p->next;
		if (p->fd >= 0)
			close(p->fd);
		free(p);
	}
	if (!l->ctl_head)
		l->ctl_tailp = &l->ctl_head;
	atomic_store_explicit(&l->ctl_pending, l->ctl_head != NULL,
			      memory_order_relaxed);
	return err;
}

/*
 * Sends a LANE or END (taking `fd`, or -1), now or, behind a full
 * socket, from the link thread later: never lost while the link lives.
 */
void cmesh__lanes_ctl_send(struct cmesh__link *l, const void *buf, uint32_t len,
			   int fd)
{
	struct ctl_pending *p = malloc(sizeof(*p));
	int err;

	if (!p) {
		if (fd >= 0)
			close(fd);
		cmesh__link_fail(l, -ENOMEM);
		return;
	}
	p->next = NULL;
	p->len = len;
	p->fd = fd;
	memcpy(p->buf, buf, len);
	pthread_mutex_lock(&l->att_lock);
	if (!l->ctl_tailp)
		l->ctl_tailp = &l->ctl_head;
	*l->ctl_tailp = p;
	l->ctl_tailp = &p->next;
	err = cmesh__link_failed(l) ? 0 : ctl_flush_locked(l);
	pthread_mutex_unlock(&l->att_lock);
	if (err) /* the socket is gone: nothing waits for it */
		cmesh__link_fail(l, -ECONNRESET);
	else if (atomic_load_explicit(&l->ctl_pending, memory_order_relaxed))
		cmesh__link_kick(l);
}

/* Sends a SPACE now: 0, or -EAGAIN when the socket is full. */
static int space_send(struct cmesh__link *l)
{
	struct cmesh_ctl_hdr h;
	int r;

	if (cmesh__link_failed(l))
		return 0;
	cmesh__ctl_hdr_fill(&h, CMESH_CTL_SPACE, sizeof(h));
	/* No order to keep: past what waits in ctl_head, no allocation. */
	r = cmesh__ctl_send(l->sock, &h, sizeof(h), NULL, 0);
	/* Any other error: the link thread sees the socket's end itself. */
	return r == -EAGAIN || r == -ENOBUFS ? -EAGAIN : 0;
}

void cmesh__link_space(struct cmesh__link *l)
{
	/* The link thread sends it once the socket polls writable. */
	if (space_send(l) == -EAGAIN &&
	    !atomic_exchange_explicit(&l->space_owed, true,
				      memory_order_relaxed))
		cmesh__link_kick(l);
}

void cmesh__lanes_unpool(struct cmesh__link *l, struct cmesh__lane *ln)
{
	if (!ln->poolable)
		return;
	ln->poolable = false;
	if (ln->is_out)
		l->npool_out--;
	else
		l->npool_in--;
}

static void send_lane(struct cmesh__link *l, uint32_t id, uint32_t flags,
		      uint64_t size, const uint64_t *token, int fd)
{
	struct cmesh_ctl_lane m = { 0 };

	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_LANE, sizeof(m));
	m.id = id;
	m.flags = flags;
	m.arena_size = size;
	if (token) {
		m.token[0] = token[0];
		m.token[1] = token[1];
	}
	cmesh__lanes_ctl_send(l, &m, sizeof(m), fd);
}

static void send_end(struct cmesh__link *l, uint32_t id)
{
	struct cmesh_ctl_end m = { 0 };

	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_END, sizeof(m));
	m.id = id;
	cmesh__lanes_ctl_send(l, &m, sizeof(m), -1);
}

void cmesh__link_port_drop(struct cmesh__link *l,
			   const struct cmesh_ctl_port *d, int fd)
{
	if (fd >= 0)
		close(fd);
	if (d->kind == CMESH_PORT_CTX) {
		cmesh__link_ctx_drop(l, d);
		return;
	}
	if (d->flags & CMESH_PORT_F_REUSE) {
		struct cmesh__lane *ln;

		/* Not reused after all: both sides let the lane go. */
		pthread_mutex_lock(&l->att_lock);
		ln = cmesh__lanes_lookup(l, d->id);
		if (ln && ln->dynamic && ln->is_out && ln->poolable &&
		    ln->idle) {
			ln->idle = false;
			cmesh__lanes_unpool(l, ln);
			cmesh__lane_set_dropped(ln);
		} else if (ln && ln->dynamic && ln->is_out && ln->poolable) {
			/* Named before its last use let go (a LAST): then. */
			ln->drop_at_idle = true;
		}
		pthread_mutex_unlock(&l->att_lock);
	}
	/* A failed port has no lane: nobody waits for an answer. */
	if (!cmesh__link_failed(l) && !(d->flags & CMESH_PORT_F_FAILED))
		send_lane(l, d->id, CMESH_LANE_F_DROPPED, 0, NULL, -1);
}

/* ---- control messages we receive (link thread) ---- */

static int on_lane(struct cmesh__link *l, const unsigned char *buf, int len,
		   const int *fds, uint32_t nfds)
{
	struct cmesh_ctl_lane m;
	struct cmesh__lane *ln;
	bool dropped;
	int r;

	if (len != (int)sizeof(m))
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	dropped = m.flags == CMESH_LANE_F_DROPPED;
	if ((m.flags != 0 && m.flags != CMESH_LANE_F_DROPPED &&
	     m.flags != CMESH_LANE_F_POOLED) ||
	    nfds != (dropped ? 0u : 1u) || (m.id & 1u) != l->parity ||
	    m.hdr.len != sizeof(m))
		return -EPROTO;
	pthread_mutex_lock(&l->att_lock);
	ln = cmesh__lanes_lookup(l, m.id);
	r = !ln || !ln->dynamic || ln->answered ? -EPROTO : 0;
	/* POOLED answers only a POOLABLE port (ours asked: poolable). */
	if (!r && (m.flags & CMESH_LANE_F_POOLED) && !ln->poolable)
		r = -EPROTO;
	/* Bound already (a reused one): only DROPPED may answer it. */
	if (!r && !dropped && cmesh__lane_bound(ln))
		r = -EPROTO;
	/*
	 * A token answers a claim of ours (link_claim.c), a receiver's port
	 * (our out lane: the in lane it reads there, for a claim by a sender
	 * of ours sent on) or a sender's (our in lane: the lane it writes
	 * there, for a claim by our receiver sent on). Never a reply port's.
	 */
	if (!r && (m.token[0] | m.token[1]) && (dropped || ln->poolable))
		r = -EPROTO;
	/* A token of ours it was to list its end under: that one, echoed. */
	if (!r && !dropped && ln->peer_early &&
	    (m.token[0] != ln->peer_token[0] ||
	     m.token[1] != ln->peer_token[1]))
		r = -EPROTO;
	if (!r && !(m.flags & CMESH_LANE_F_POOLED))
		cmesh__lanes_unpool(l,
				    ln); /* not kept there: not here either */
	if (!r && !dropped &&
	    (m.arena_size > MAX_PEER_MAPPED - l->peer_mapped ||
	     m.arena_size < CMESH_SHM_ARENA_MIN_SIZE))
		r = -EPROTO;
	if (!r) {
		ln->answered = true;
		if (!dropped)
			l->peer_mapped += m.arena_size;
		/* Read by its queue once bound (acquire, cmesh__lane_bound). */
		if (!ln->peer_early &&
		    (ln->claiming || (m.token[0] | m.token[1]))) {
			ln->peer_token[0] = m.token[0];
			ln->peer_token[1] = m.token[1];
			ln->peer_node = l->peer_proc;
		}
	}
	pthread_mutex_unlock(&l->att_lock);
	if (r)
		return r;
	/* Ours alone from here on: only this thread binds or frees lanes. */
	if (dropped) {
		cmesh__lane_set_dropped(ln);
	} else {
		r = cmesh__lane_bind(ln, fds[0], m.arena_size, ln->ring_cap);
		if (r)
			return r == -ENOMEM ? r : -EPROTO;
	}
	if (!ln->is_out)
		cmesh__lane_wake(ln);
	if (ln->claiming && dropped)
		cmesh__claims_refused(ln); /* it may try again */
	else if (ln->claiming && ln->is_out)
		cmesh__claims_answered(ln); /* a sender's claim held */
	return 0;
}

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
		cmesh__lane_set_dropped(ln);
		return false;
	}
	ln->idle = true;
	cmesh__lane_tx_idle(ln);
	return true;
}

static int on_end(struct cmesh__link *l, const unsigned char *buf, int len,
		  uint32_t nfds)
{
	struct cmesh_ctl_end m;
	struct cmesh__lane *ln;
	int r = 0;

	if (len != (int)sizeof(m) || nfds)
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	if (m.hdr.len != sizeof(m) || m.reserved)
		return -EPROTO;
	pthread_mutex_lock(&l->att_lock);
	ln = cmesh__lanes_lookup(l, m.id);
	/* A kept lane is never ended: it is the peer's to reuse. */
	if (!ln || !ln->dynamic || ln->is_out || ln->end_seen || ln->poolable ||
	    !cmesh__lane_bound(ln))
		r = -EPROTO;
	else
		ln->end_seen = true;
	pthread_mutex_unlock(&l->att_lock);
	return r;
}

int cmesh__lanes_handle_ctl(struct cmesh__link *l, const void *buf, int len,
			    const int *fds, uint32_t nfds)
{
	struct cmesh_ctl_hdr h;

	if (len < (int)sizeof(h))
		return -EPROTO;
	memcpy(&h, buf, sizeof(h));
	if (h.magic != CMESH_PROTO_MAGIC || h.version != CMESH_PROTO_VERSION)
		return -EPROTO;
	switch (h.type) {
	case CMESH_CTL_ATTACH:
		return cmesh__lanes_on_attach(l, buf, len, fds, nfds);
	case CMESH_CTL_LANE:
		return on_lane(l, buf, len, fds, nfds);
	case CMESH_CTL_END:
		return on_end(l, buf, len, nfds);
	case CMESH_CTL_WAKESOCK:
	case CMESH_CTL_WAKECLOSE:
		return cmesh__wakes_on_ctl(l, h.type, buf, len, fds, nfds);
	case CMESH_CTL_CANCEL:
	case CMESH_CTL_CTXDROP:
		return cmesh__ctx_on_ctl(l, h.type, buf, len, nfds);
	case CMESH_CTL_CLAIM:
		return cmesh__claims_on_ctl(l, buf, len, fds, nfds);
	case CMESH_CTL_INTRO:
		return cmesh__intro_on_ctl(l, buf, len, fds, nfds);
	case CMESH_CTL_SPACE:
		/* The round after this batch flushes every backlog. */
		return h.len == sizeof(h) && len == (int)sizeof(h) && !nfds &&
				       !h.reserved ?
			       0 :
			       -EPROTO;
	default:
		return -EPROTO;
	}
}

/* ---- dynamic lanes ---- */

/* Adds a new dynamic lane to the table and the list. */
static int add_lane(struct cmesh__link *l, struct cmesh__lane *ln)
{
	int r = 0;

	pthread_mutex_lock(&l->att_lock);
	if (l->ndyn >= MAX_LANES)
		r = -ENOSPC;
	else if (cmesh__lanes_lookup(l, ln->id))
		r = -EPROTO; /* an id the peer used twice */
	else
		r = insert(l, ln);
	if (!r) {
		ln->next = l->dyn;
		l->dyn = ln;
		l->ndyn++;
	}
	pthread_mutex_unlock(&l->att_lock);
	return r;
}

static uint64_t out_trail(const struct cmesh__link *l)
{
	return l->out.max_trail; /* ours, lowered to the peer's in HELLO */
}

int cmesh__link_lane_export(struct cmesh__link *l, bool is_out,
			    const cmesh_type *type, uint32_t ring_cap,
			    uint64_t max_backlog, int64_t spin_ns,
			    struct cmesh__port_out *out)
{
	struct cmesh__lane *ln;
	uint32_t id;
	int r, fd;

	pthread_mutex_lock(&l->att_lock);
	id = l->next_id;
	l->next_id += 2;
	pthread_mutex_unlock(&l->att_lock);
	if (id < 2)
		return -ENOSPC; /* 2^31 lanes on one link */
	r = cmesh__lane_new(l, id, is_out, type,
			    is_out ? out_trail(l) : l->in.max_trail,
			    max_backlog, spin_ns, &ln);
	if (r)
		return r;
	r = cmesh__lane_own_half(ln, ring_cap, &fd);
	/* Kept until its descriptor is sent (or not): see lane_done(). */
	atomic_store_explicit(&ln->inflight, true, memory_order_relaxed);
	if (!r) {
		r = add_lane(l, ln);
		if (r)
			close(fd);
	}
	if (r) {
		cmesh__lane_free(ln);
		return r;
	}
	memset(out, 0, sizeof(*out));
	out->desc.id = id;
	/* What the peer's endpoint does: the opposite of us. */
	out->desc.kind = is_out ? CMESH_PORT_READ : CMESH_PORT_WRITE;
	out->link = l;
	out->desc.ring_cap = ring_cap;
	out->desc.arena_size = cmesh__arena_layout(ln->own_half)->size;
	out->fd = fd;
	out->lane = ln;
	return 0;
}

int cmesh__link_lane_import(struct cmesh__link *l,
			    const struct cmesh_ctl_port *d, int fd,
			    const cmesh_type *type, uint64_t max_backlog,
			    int64_t spin_ns, const uint64_t *token,
			    struct cmesh__lane **out)
{
	return cmesh__lanes_import(l, d, fd, type, max_backlog, spin_ns, token,
				   NULL, out);
}

int cmesh__lanes_import(struct cmesh__link *l, const struct cmesh_ctl_port *d,
			int fd, const cmesh_type *type, uint64_t max_backlog,
			int64_t spin_ns, const uint64_t *token, int *answer_fd,
			struct cmesh__lane **out)
{
	bool is_out = d->kind == CMESH_PORT_WRITE;
	struct cmesh__lane *ln = NULL;
	int r, own_fd = -1;

	if (d->flags & CMESH_PORT_F_REUSE)
		return cmesh__lanes_import_reuse(l, d, type, out);

	pthread_mutex_lock(&l->att_lock);
	r = d->arena_size > MAX_PEER_MAPPED - l->peer_mapped ? -EPROTO : 0;
	if (!r)
		l->peer_mapped += d->arena_size;
	pthread_mutex_unlock(&l->att_lock);
	if (r) {
		close(fd);
		return r;
	}
	r = cmesh__lane_new(l, d->id, is_out, type,
			    is_out ? out_trail(l) : l->in.max_trail,
			    max_backlog, spin_ns, &ln);
	if (!r)
		r = cmesh__lane_own_half(ln, d->ring_cap, &own_fd);
	if (!r) {
		r = cmesh__lane_bind(ln, fd, d->arena_size, d->ring_cap);
		fd = -1;
		if (r && r != -ENOMEM)
			r = -EPROTO;
	}
	if (!r) {
		ln->answered = true;
		/* Bound from the start: no backlog to wait behind. */
		atomic_store_explicit(&ln->spilling, 0, memory_order_relaxed);
		r = add_lane(l, ln);
	}
	if (!r && (d->flags & CMESH_PORT_F_POOLABLE) && is_out) {
		/* Kept for the sender's reuse, up to our bound. */
		pthread_mutex_lock(&l->att_lock);
		if (l->npool_out < MAX_POOLED) {
			l->npool_out++;
			ln->poolable = true;
			ln->use = 1;
			ln->use_tail = cmesh__shmring_tail(&ln->prod);
		}
		pthread_mutex_unlock(&l->att_lock);
	}
	if (r) {
		if (fd >= 0)
			close(fd);
		if (own_fd >= 0)
			close(own_fd);
		cmesh__lane_free(ln);
		pthread_mutex_lock(&l->att_lock);
		l->peer_mapped -= d->arena_size;
		pthread_mutex_unlock(&l->att_lock);
		/* Nobody takes it here: the peer hears so (a bad half or id
		 * fails the link instead, in the caller). */
		if (r != -EPROTO)
			cmesh__link_port_drop(l, d, -1);
		return r;
	}
	*out = ln;
	if (answer_fd) {
		*answer_fd = own_fd; /* cmesh__lanes_answer() sends it */
		return 0;
	}
	send_lane(l, d->id, ln->poolable ? CMESH_LANE_F_POOLED : 0,
		  cmesh__arena_layout(ln->own_half)->size, token, own_fd);
	return 0;
}

void cmesh__lanes_answer(struct cmesh__link *l, struct cmesh__lane *ln,
			 const uint64_t *token, int fd, bool take)
{
	if (take) {
		send_lane(l, ln->id, 0, cmesh__arena_layout(ln->own_half)->size,
			  token, fd);
		return;
	}
	close(fd);
	/* Nobody here uses it: the sweep frees it (answered: at import). */
	cmesh__lane_set_dropped(ln);
	atomic_store_explicit(&ln->released, true, memory_order_release);
	send_lane(l, ln->id, CMESH_LANE_F_DROPPED, 0, NULL, -1);
	cmesh__link_kick(l);
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

void cmesh__link_lane_unsent(struct cmesh__lane *ln)
{
	struct cmesh__link *l = ln->link;

	cmesh__lane_set_dropped(ln);
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
 * ends its lanes holds a few bytes each, not mappings. att_lock held.
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
			send_end(l, ln->id);
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
	    space_send(l) == -EAGAIN)
		atomic_store_explicit(&l->space_owed, true,
				      memory_order_relaxed);
	cmesh__ctx_sweep(l); /* CANCELs of contexts cancelled here */

	if (atomic_load_explicit(&l->ctl_pending, memory_order_relaxed)) {
		int err = 0;

		pthread_mutex_lock(&l->att_lock);
		if (!cmesh__link_failed(l))
			err = ctl_flush_locked(l);
		pthread_mutex_unlock(&l->att_lock);
		if (err)
			cmesh__link_fail(l, -ECONNRESET);
	}
	more = sweep_out(l, &l->out);
	pthread_mutex_lock(&l->att_lock);
	ln = l->dyn;
	pthread_mutex_unlock(&l->att_lock);
	/* Others only push at the head: the rest of the list is ours. */
	for (; ln; ln = ln->next)
		if (ln->is_out && sweep_out(l, ln))
			more = true;
	pthread_mutex_lock(&l->att_lock);
	for (pp = &l->dyn; (ln = *pp);) {
		if (!lane_done(l, ln)) {
			pp = &ln->next;
			/* Answered: nothing will bind it any more (a
			 * pooled one is bound for its next use). */
			if (!ln->is_out && !ln->pins && ln->answered &&
			    !ln->poolable &&
			    atomic_load_explicit(&ln->released,
						 memory_order_acquire))
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
		cmesh__lanes_free_fifo(done);
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
