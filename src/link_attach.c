/* SPDX-License-Identifier: MIT */
/*
 * link_attach.c - the ATTACH messages of a link: a record's fds and port
 * descriptors, sent before the record is published (the lane's producer
 * lock keeps one order), read by the link thread into the FIFO of the in
 * lane they name, taken by that lane's receiver with the record.
 *
 * Bounds: the ATTACHes pending on an in lane are at most what its ring
 * can reference (a record per slot, plus the one being delivered), and
 * the fds all FIFOs of a link hold are budgeted by link.c (the thread
 * stops reading the socket past it). An ATTACH naming a lane the peer
 * may not name, out of sequence, or whose port descriptors fail their
 * checks fails the link with -EPROTO. An ATTACH for a lane whose
 * receiver is gone is closed on arrival, its ports answered DROPPED.
 */
#include "link_int.h"

#include "ctl.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void close_attach(struct cmesh__attach *a)
{
	for (uint32_t i = 0; i < a->nfds; i++)
		close(a->fds[i]);
	free(a);
}

void cmesh__lanes_free_fifo(struct cmesh__lane *ln)
{
	while (ln->att_head) {
		struct cmesh__attach *a = ln->att_head;

		ln->att_head = a->next;
		/* Contexts hold the link: none is left when it goes. */
		for (uint32_t i = 0; i < a->nports; i++)
			if (a->ports[i].kind == CMESH_PORT_CTX)
				cmesh__link_ctx_drop(ln->link, &a->ports[i]);
		close_attach(a);
	}
	ln->att_tailp = &ln->att_head;
	ln->att_count = 0;
}

/*
 * Drops an ATTACH nobody will take: its ports are answered DROPPED (and
 * FAILED: lost to its receiver's failure).
 */
static void drop_attach(struct cmesh__link *l, struct cmesh__attach *a,
			bool failed)
{
	for (uint32_t i = 0; i < a->nports; i++)
		cmesh__link_port_drop(l, &a->ports[i], -1, failed);
	close_attach(a);
}

/* ---- attachments ---- */

bool cmesh__port_has_fd(const struct cmesh_ctl_port *d)
{
	return !(d->flags & (CMESH_PORT_F_FAILED | CMESH_PORT_F_REUSE)) &&
	       d->kind != CMESH_PORT_CTX;
}

/* Ports that bring an arena fd. */
static uint32_t ports_with_fds(const struct cmesh_ctl_port *d, uint32_t n)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < n; i++)
		k += cmesh__port_has_fd(&d[i]);
	return k;
}

int cmesh__link_send_attach(struct cmesh__lane *ln, const int *fds,
			    uint32_t nfds, const struct cmesh__port_out *ports,
			    uint32_t nports, uint64_t *out_seq)
{
	unsigned char buf[sizeof(struct cmesh_ctl_attach) +
			  CMESH_CTL_MAX_PORTS * sizeof(struct cmesh_ctl_port)];
	struct cmesh_ctl_attach m = { 0 };
	struct cmesh__link *l = ln->link;
	uint32_t len = sizeof(m) + nports * sizeof(struct cmesh_ctl_port);
	int r;

	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_ATTACH, len);
	m.seq = ln->att_next_out + 1;
	m.lane = ln->id;
	m.nfds = (uint16_t)nfds;
	m.nports = (uint16_t)nports;
	memcpy(buf, &m, sizeof(m));
	for (uint32_t i = 0; i < nports; i++) {
		struct cmesh_ctl_port d = ports[i].desc;

		if (d.kind == CMESH_PORT_CTX) /* its deadline as time left */
			cmesh__ctx_port_wire(&d);
		memcpy(buf + sizeof(m) + i * sizeof(struct cmesh_ctl_port), &d,
		       sizeof(d));
	}
	r = cmesh__ctl_send_nb(l->sock, buf, len, fds, nfds);
	switch (r) {
	case 0:
		ln->att_next_out = m.seq;
		*out_seq = m.seq;
		/* From here on a CANCEL may follow it (never before). */
		for (uint32_t i = 0; i < nports; i++)
			if (ports[i].desc.kind == CMESH_PORT_CTX)
				cmesh__link_ctx_sent(l, ports[i].desc.id);
		return 0;
	case -EAGAIN: /* socket full: the caller spills, the thread retries */
	case -ENOBUFS:
		return -EAGAIN;
	case -EBADF: /* a bad fd from the caller: nothing was sent */
	case -EINVAL:
		return -EINVAL;
	default:
		cmesh__link_fail(l, -ECONNRESET);
		return cmesh__link_failed(l);
	}
}

/*
 * The link failed and its socket has been read to the end (or it failed
 * for a protocol error): an ATTACH not in the FIFO now never comes. While
 * the socket still holds some (the thread stopped reading at the fd
 * budget), records of a dead peer wait for them: what it published is
 * delivered before its failure.
 */
static bool failed_and_read(struct cmesh__link *l)
{
	int f = cmesh__link_failed(l);

	/* A protocol error is final at once: nothing more is delivered. */
	return f && (f == -EPROTO ||
		     atomic_load_explicit(&l->sock_read, memory_order_acquire));
}

bool cmesh__link_attach_here(struct cmesh__lane *ln)
{
	struct cmesh__link *l = ln->link;
	bool ready;

	pthread_mutex_lock(&l->att_lock);
	ready = ln->att_head != NULL;
	pthread_mutex_unlock(&l->att_lock);
	return ready || failed_and_read(l);
}

int cmesh__link_take_attach(struct cmesh__lane *ln, uint64_t seq, int *fds,
			    uint32_t nfds, struct cmesh__ports_in *ports,
			    uint32_t nports)
{
	struct cmesh__link *l = ln->link;
	struct cmesh__attach *a;
	int r = 0;

	pthread_mutex_lock(&l->att_lock);
	a = ln->att_head;
	if (!a) {
		r = failed_and_read(l) ? cmesh__link_failed(l) : -EAGAIN;
	} else if (a->seq != seq || a->nports != nports ||
		   a->nfds != nfds + ports_with_fds(a->ports, a->nports)) {
		r = -EPROTO;
	} else {
		ln->att_head = a->next;
		if (!ln->att_head)
			ln->att_tailp = &ln->att_head;
		ln->att_count--;
		l->att_fds -= a->nfds;
	}
	pthread_mutex_unlock(&l->att_lock);
	if (r == -EPROTO)
		cmesh__link_fail(l, -EPROTO);
	if (r)
		return r;
	memcpy(fds, a->fds, a->nfds * sizeof(int));
	if (nports) {
		ports->n = nports;
		memcpy(ports->desc, a->ports, nports * sizeof(a->ports[0]));
	}
	free(a);
	/* Room again: the link thread reads the socket again. */
	if (atomic_load_explicit(&l->sock_throttled, memory_order_relaxed))
		cmesh__link_kick(l);
	return 0;
}

void cmesh__link_drop_attachments(struct cmesh__lane *ln, bool failed)
{
	struct cmesh__link *l = ln->link;
	struct cmesh__attach *a;

	pthread_mutex_lock(&l->att_lock);
	ln->att_drop = true;
	ln->att_drop_failed = failed;
	a = ln->att_head;
	ln->att_head = NULL;
	ln->att_tailp = &ln->att_head;
	ln->att_count = 0;
	for (struct cmesh__attach *b = a; b; b = b->next)
		l->att_fds -= b->nfds;
	/* A throttled thread reads on (closing what arrives): peers' fds in
	 * flight are not held in the socket until the link dies. */
	if (atomic_load_explicit(&l->sock_throttled, memory_order_relaxed))
		cmesh__link_kick(l);
	pthread_mutex_unlock(&l->att_lock);
	while (a) {
		struct cmesh__attach *next = a->next;

		drop_attach(l, a, failed);
		a = next;
	}
}

/* ---- ATTACHes we receive (link thread) ---- */

bool cmesh__lanes_port_ok(const struct cmesh__link *l,
			  const struct cmesh_ctl_port *d)
{
	/* `home`: a lane of ours coming home, or a sender's mark. */
	if (d->reserved || (!(d->flags & CMESH_PORT_F_HOME) && d->home &&
			    !((d->flags & CMESH_PORT_F_REDIRECT) &&
			      d->kind == CMESH_PORT_WRITE)))
		return false;
	/* A claim's token goes with a channel's lane, not kept. */
	if (!(d->flags & CMESH_PORT_F_REDIRECT) ?
		    (d->node | d->token[0] | d->token[1] | d->list[0] |
		     d->list[1]) != 0 :
		    !d->node || !(d->token[0] | d->token[1]) ||
			    (d->flags & CMESH_PORT_F_POOLABLE))
		return false;
	/* `list`: only for the sender's own end, named by its REDIRECT. */
	if ((d->list[0] | d->list[1]) &&
	    (d->node != l->peer_proc || (d->flags & CMESH_PORT_F_HOME)))
		return false;
	if (d->kind == CMESH_PORT_CTX)
		return cmesh__ctx_port_ok(d);
	if (d->kind != CMESH_PORT_WRITE && d->kind != CMESH_PORT_READ)
		return false;
	/*
	 * A receiver coming home names an out lane of ours: made by us, or
	 * by a claim (the claimer's parity then); never one of the first two.
	 */
	if ((d->flags & CMESH_PORT_F_HOME) &&
	    (d->kind != CMESH_PORT_READ || (d->flags & CMESH_PORT_F_POOLABLE) ||
	     d->home < 2))
		return false;
	if (d->flags == CMESH_PORT_F_FAILED)
		return d->id == 0 && d->ring_cap == 0 && d->arena_size == 0;
	/* A kept lane the peer's sender reuses: we write it. */
	if (d->flags == CMESH_PORT_F_REUSE)
		return d->kind == CMESH_PORT_WRITE &&
		       (d->id & 1u) != l->parity &&
		       cmesh_shm_ring_cap_ok(d->ring_cap) && d->arena_size == 0;
	if (d->flags == CMESH_PORT_F_POOLABLE && d->kind != CMESH_PORT_WRITE)
		return false;
	return (d->flags & ~(CMESH_PORT_F_POOLABLE | CMESH_PORT_F_HOME |
			     CMESH_PORT_F_REDIRECT)) == 0 &&
	       (d->id & 1u) != l->parity &&
	       cmesh_shm_ring_cap_ok(d->ring_cap) &&
	       d->arena_size >= CMESH_SHM_ARENA_MIN_SIZE &&
	       d->arena_size <= CMESH_SHM_ARENA_MAX_SIZE;
}

int cmesh__lanes_on_attach(struct cmesh__link *l, const unsigned char *buf,
			   int len, const int *fds, uint32_t nfds)
{
	struct cmesh_ctl_attach m;
	struct cmesh__attach *a;
	struct cmesh__lane *ln;

	if (len < (int)sizeof(m))
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	if (m.nports > CMESH_CTL_MAX_PORTS || m.nfds != nfds ||
	    (nfds == 0 && m.nports == 0) || nfds > ATTACH_MAX_FDS ||
	    (uint32_t)len !=
		    sizeof(m) + m.nports * sizeof(struct cmesh_ctl_port) ||
	    m.hdr.len != (uint32_t)len)
		return -EPROTO;
	a = malloc(sizeof(*a) + m.nports * sizeof(struct cmesh_ctl_port));
	if (!a)
		return -ENOMEM;
	a->next = NULL;
	a->seq = m.seq;
	a->nfds = nfds;
	a->nports = m.nports;
	memcpy(a->ports, buf + sizeof(m),
	       m.nports * sizeof(struct cmesh_ctl_port));
	for (uint32_t i = 0; i < a->nports; i++)
		if (!cmesh__lanes_port_ok(l, &a->ports[i])) {
			free(a);
			return -EPROTO;
		}
	/* Each port but a failed one brings its arena. */
	if (ports_with_fds(a->ports, a->nports) > nfds) {
		free(a);
		return -EPROTO;
	}
	memcpy(a->fds, fds, nfds * sizeof(int));
	pthread_mutex_lock(&l->att_lock);
	ln = cmesh__lanes_lookup(l, m.lane);
	if (!ln || ln->is_out || ln->end_seen || m.seq != ln->att_next_in + 1) {
		pthread_mutex_unlock(&l->att_lock);
		free(a); /* the caller closes the fds of a refused message */
		return -EPROTO;
	}
	ln->att_next_in = m.seq;
	/* Contexts first: a CANCEL after this ATTACH must find them. */
	for (uint32_t i = 0; i < a->nports; i++) {
		int r = a->ports[i].kind == CMESH_PORT_CTX ?
				cmesh__link_ctx_arrive(l, &a->ports[i]) :
				0;
		/* (its deadline is a local one from here on) */

		if (r) {
			pthread_mutex_unlock(&l->att_lock);
			while (i--)
				if (a->ports[i].kind == CMESH_PORT_CTX)
					cmesh__link_ctx_drop(l, &a->ports[i]);
			free(a);
			return r;
		}
	}
	/* The receiver is gone, or it is an earlier use's (a kept lane). */
	if (ln->att_drop || m.seq <= ln->att_stale) {
		bool failed = m.seq <= ln->att_stale ? ln->att_stale_failed :
						       ln->att_drop_failed;

		pthread_mutex_unlock(&l->att_lock);
		drop_attach(l, a, failed);
		return 0;
	}
	/*
	 * Every ATTACH belongs to a record the peer has claimed in the
	 * lane's ring and we have not delivered yet: more of them than the
	 * ring holds records (plus the one being delivered) is no honest
	 * peer.
	 */
	if (ln->att_count >= ln->att_max) {
		pthread_mutex_unlock(&l->att_lock);
		for (uint32_t i = 0; i < a->nports; i++)
			if (a->ports[i].kind == CMESH_PORT_CTX)
				cmesh__link_ctx_drop(l, &a->ports[i]);
		free(a);
		return -EPROTO;
	}
	*ln->att_tailp = a;
	ln->att_tailp = &a->next;
	ln->att_count++;
	l->att_fds += nfds;
	pthread_mutex_unlock(&l->att_lock);
	cmesh__lane_wake(ln);
	return 0;
}
