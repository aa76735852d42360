/* SPDX-License-Identifier: MIT */
/*
 * link_lanes.c - the lanes on a link: their ids and table, and the control
 * messages that set them up (LANE) and end them (END), with those that
 * wait for a full socket. The lanes that endpoints create are
 * link_export.c's, their lifetime and the link thread's sweep
 * link_sweep.c's, ATTACHes link_attach.c's. Wire format: shm/proto.h.
 *
 * Ids. Each side gives ids of its own parity (from the HELLOs' node ids),
 * so the two never collide; 0 and 1 are the HELLO's lanes. Every lane the
 * peer may name is in `lanes` (ck_ht, under att_lock): an ATTACH names an
 * in lane of ours, a LANE answer an unanswered lane we created, an END an
 * in lane whose producer it is. Anything else, or a port descriptor whose
 * id is in use, fails the link with -EPROTO and touches no other lane:
 * a peer can name only lanes of its own link.
 *
 * Every port descriptor we receive is answered exactly once: LANE with
 * our half when a receiver takes the endpoint, or DROPPED when its
 * ATTACH is dropped (the receiving lane's receiver is gone). Control
 * messages that meet a full socket wait, in order, in `ctl_head`.
 */
#include "link_int.h"

#include "ctl.h"

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

/* ---- the table (att_lock held) ---- */

struct cmesh__lane *cmesh__lanes_lookup(struct cmesh__link *l, uint32_t id)
{
	return cmesh__idmap_get(&l->lanes, id);
}

static int insert(struct cmesh__link *l, struct cmesh__lane *ln)
{
	return cmesh__idmap_put(&l->lanes, ln->id, ln);
}

/* Adds a new dynamic lane to the table and the list. */
int cmesh__lanes_add(struct cmesh__link *l, struct cmesh__lane *ln)
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
		cmesh__link_lane_token_forget(ln);
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
int cmesh__lanes_ctl_flush_locked(struct cmesh__link *l)
{
	struct ctl_pending *p;
	int err = 0;

	while ((p = l->ctl_head)) {
		int r = cmesh__ctl_send_nb(l->sock, p->buf, p->len, &p->fd,
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
 * Sends a control message (LANE, END, and the other files' CLAIM, INTRO,
 * WAKESOCK...; taking `fd`, or -1), now or, behind a full socket, from
 * the link thread later: never lost while the link lives.
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
	err = cmesh__link_failed(l) ? 0 : cmesh__lanes_ctl_flush_locked(l);
	pthread_mutex_unlock(&l->att_lock);
	if (err) /* the socket is gone: nothing waits for it */
		cmesh__link_fail(l, -ECONNRESET);
	else if (atomic_load_explicit(&l->ctl_pending, memory_order_relaxed))
		cmesh__link_kick(l);
}

/* Sends a SPACE now: 0, or -EAGAIN when the socket is full. */
int cmesh__lanes_space_send(struct cmesh__link *l)
{
	struct cmesh_ctl_hdr h;
	int r;

	if (cmesh__link_failed(l))
		return 0;
	cmesh__ctl_hdr_fill(&h, CMESH_CTL_SPACE, sizeof(h));
	/* No order to keep: past what waits in ctl_head, no allocation. */
	r = cmesh__ctl_send_nb(l->sock, &h, sizeof(h), NULL, 0);
	/* Any other error: the link thread sees the socket's end itself. */
	return r == -EAGAIN || r == -ENOBUFS ? -EAGAIN : 0;
}

void cmesh__link_space(struct cmesh__link *l)
{
	/* The link thread sends it once the socket polls writable. */
	if (cmesh__lanes_space_send(l) == -EAGAIN &&
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

void cmesh__lanes_send_lane(struct cmesh__link *l, uint32_t id, uint32_t flags,
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

void cmesh__lanes_send_end(struct cmesh__link *l, uint32_t id)
{
	struct cmesh_ctl_end m = { 0 };

	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_END, sizeof(m));
	m.id = id;
	cmesh__lanes_ctl_send(l, &m, sizeof(m), -1);
}

void cmesh__link_port_drop(struct cmesh__link *l,
			   const struct cmesh_ctl_port *d, int fd, bool failed)
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
			cmesh__lane_set_dropped(ln, false);
		} else if (ln && ln->dynamic && ln->is_out && ln->poolable) {
			/* Named before its last use let go (a LAST): then. */
			ln->drop_at_idle = true;
		}
		pthread_mutex_unlock(&l->att_lock);
	}
	/* A failed port has no lane: nobody waits for an answer. */
	if (!cmesh__link_failed(l) && !(d->flags & CMESH_PORT_F_FAILED))
		cmesh__lanes_send_lane(l, d->id,
				       CMESH_LANE_F_DROPPED |
					       (failed ? CMESH_LANE_F_FAILED :
							 0),
				       0, NULL, -1);
}

void cmesh__link_claim_later(struct cmesh__link *l,
			     const struct cmesh_ctl_port *d, int fd)
{
	if (fd >= 0)
		close(fd);
	if (!cmesh__link_failed(l))
		cmesh__lanes_send_lane(
			l, d->id, CMESH_LANE_F_DROPPED | CMESH_LANE_F_LATER, 0,
			NULL, -1);
}

/* ---- control messages we receive (link thread) ---- */

static int on_lane(struct cmesh__link *l, const unsigned char *buf, int len,
		   const int *fds, uint32_t nfds)
{
	struct cmesh_ctl_lane m;
	struct cmesh__lane *ln;
	bool dropped, later, failed;
	int r;

	if (len != (int)sizeof(m))
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	later = m.flags == (CMESH_LANE_F_DROPPED | CMESH_LANE_F_LATER);
	failed = m.flags == (CMESH_LANE_F_DROPPED | CMESH_LANE_F_FAILED);
	dropped = m.flags == CMESH_LANE_F_DROPPED || later || failed;
	if ((m.flags != 0 && !dropped && m.flags != CMESH_LANE_F_POOLED) ||
	    nfds != (dropped ? 0u : 1u) || (m.id & 1u) != l->parity ||
	    m.hdr.len != sizeof(m))
		return -EPROTO;
	pthread_mutex_lock(&l->att_lock);
	ln = cmesh__lanes_lookup(l, m.id);
	r = !ln || !ln->dynamic || ln->answered ? -EPROTO : 0;
	/* LATER answers a receiver's claim of ours only (an in lane). */
	if (!r && later && (!ln->claiming || ln->is_out))
		r = -EPROTO;
	/* FAILED answers a port only, never a claim. */
	if (!r && failed && ln->claiming)
		r = -EPROTO;
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
		cmesh__lane_set_dropped(ln, failed);
	} else {
		r = cmesh__lane_bind(ln, fds[0], m.arena_size, ln->ring_cap);
		if (r)
			return r == -ENOMEM ? r : -EPROTO;
	}
	if (!ln->is_out)
		cmesh__lane_wake(ln);
	if (ln->claiming && dropped)
		cmesh__claims_refused(ln, later); /* it may try again */
	else if (ln->claiming && ln->is_out)
		cmesh__claims_answered(ln); /* a sender's claim held */
	return 0;
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
	case CMESH_CTL_REROUTE:
		return cmesh__reroute_on_ctl(l, buf, len, nfds);
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
