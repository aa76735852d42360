/* SPDX-License-Identifier: MIT */
/*
 * lane_send.c - the send of a message on an out lane (lane.c has the lane
 * and the memory-ordering contract this file keeps): the message encoded
 * as a record (PLAIN, or LAST on a kept reply lane; REUSE1 or MSG with its
 * reply ports in it; MSG with its fds and ports in an ATTACH; BULK, or its
 * trail out of line in a memfd), pushed lock-free when it has no fds and
 * nothing is spilled, else under `lock`: published in order with its
 * ATTACH, or spilled behind the ring (lane_spill.c).
 */
#include "lane.h"
#include "lane_int.h"

#include "hint.h"
#include "link.h"
#include "type.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define MAX_FDS CMESH__LANE_MAX_FDS

/* Ports whose message will not be sent: their lanes, their contexts. */
void cmesh__lane_ports_unsent(const struct cmesh__port_out *ports, uint32_t n,
			      bool failed)
{
	for (uint32_t i = 0; i < n; i++) {
		if (ports[i].lane)
			cmesh__link_lane_unsent(ports[i].lane, failed);
		if (ports[i].desc.kind == CMESH_PORT_CTX)
			cmesh__link_ctx_unexport(ports[i].link,
						 ports[i].desc.id);
	}
}

/* Ports that travel in the record (CMESH_REC_F_PORTS): all REUSE ones. */
static bool ports_inline(const struct cmesh__port_out *ports, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (!(ports[i].desc.flags & CMESH_PORT_F_REUSE))
			return false;
	return n != 0;
}

/*
 * A record whose ports travel in it (REUSE descriptors: no ATTACH names
 * them, so nobody but the consumer could answer them) goes only while its
 * receiver is there: closed after our claim, the claim is a filler and
 * the send -EPIPE (or -ECONNRESET), nothing sent. A receiver that closes
 * answers DROPPED to the ports of every record claimed before it looked
 * (lane_rx_close.c, drain_ports()): so each is answered once, by one side.
 */
static int push_ports_inline(struct cmesh__lane *ln, uint32_t kind,
			     const struct cmesh__iov *iov, uint32_t niov,
			     bool force)
{
	uint32_t how = 0;
	int r = cmesh__shmring_pushv_unless(&ln->prod, kind, iov, niov, force,
					    &ln->peer_wake->closed, &how);

	/* How it closed, as that one look saw it. */
	return r == -EPIPE && how == CMESH_SHM_CLOSED_FAILED ? -ECONNRESET : r;
}

/*
 * Claims the record's slots, sends the ATTACH (if any), writes its number
 * into the record's header (the 8 bytes at `seq_at`, inside the record's
 * first piece), and publishes the record; the caller holds `lock`.
 * -EAGAIN (ring or socket full) publishes nothing but maybe a filler, as
 * does -EPIPE or -ECONNRESET (ports in the record, its receiver gone).
 */
int cmesh__lane_publish(struct cmesh__lane *ln, uint32_t kind,
			const struct cmesh__iov *iov, uint32_t niov,
			const int *fds, uint32_t nfds,
			const struct cmesh__port_out *ports, uint32_t nports,
			unsigned char *seq_at)
{
	uint64_t seq, pos;
	uint32_t len = 0;
	int r;

	/*
	 * Forced past a seal: the caller holds `lock`, under which the seal
	 * is set and a sender looks at it first (enqueue_try()); a spilled
	 * record was queued before it.
	 */
	if (!nfds && !nports)
		return cmesh__shmring_pushv_forced(&ln->prod, kind, iov, niov);
	if (!nfds && ports_inline(ports, nports)) {
		/* The descriptors are in the record: no ATTACH. */
		r = push_ports_inline(ln, kind, iov, niov, true);
		if (!r)
			for (uint32_t i = 0; i < nports; i++)
				cmesh__link_lane_sent(ports[i].lane);
		return r;
	}
	for (uint32_t i = 0; i < niov; i++)
		len += iov[i].len;
	r = cmesh__shmring_claim(&ln->prod, len, &pos);
	if (r)
		return r;
	r = cmesh__link_send_attach(ln, fds, nfds, ports, nports, &seq);
	ln->attach_blocked = r == -EAGAIN;
	if (r) {
		cmesh__shmring_cancel(&ln->prod, pos, len);
		/* The consumer may wait on this position. */
		cmesh__lane_signal(ln);
		return r;
	}
	memcpy(seq_at, &seq, sizeof(seq));
	cmesh__shmring_commit(&ln->prod, pos, kind, iov, niov);
	for (uint32_t i = 0; i < nports; i++)
		if (ports[i].lane)
			cmesh__link_lane_sent(ports[i].lane);
	return 0;
}

/*
 * May the ATTACH that met a full socket be tried again? Each try claims
 * slots first and leaves a filler when it fails, so wait for the socket to
 * say it is writable (it may still be too full for the datagram: rare).
 */
bool cmesh__lane_attach_may_go(struct cmesh__lane *ln)
{
	struct pollfd pfd = { .fd = cmesh__link_sock(ln->link),
			      .events = POLLOUT };

	if (!ln->attach_blocked)
		return true;
	return poll(&pfd, 1, 0) != 0; /* writable, an error, or a hangup */
}

/*
 * Publishes a record, or spills it when the ring is full (or a spill is
 * already queued: order). Takes `fds` in every case.
 */
static int enqueue_try(struct cmesh__lane *ln, uint32_t kind,
		       const struct cmesh__iov *iov, uint32_t niov,
		       const int *fds, uint32_t nfds,
		       const struct cmesh__port_out *ports, uint32_t nports,
		       struct cmesh_rec_msg *h, bool try);

int cmesh__lane_enqueue(struct cmesh__lane *ln, uint32_t kind,
			const struct cmesh__iov *iov, uint32_t niov,
			const int *fds, uint32_t nfds,
			const struct cmesh__port_out *ports, uint32_t nports,
			struct cmesh_rec_msg *h)
{
	return enqueue_try(ln, kind, iov, niov, fds, nfds, ports, nports, h,
			   false);
}

/*
 * cmesh__lane_enqueue(); with `try`, what does not go into the ring at
 * once is not spilled: -EAGAIN, the fds still the caller's.
 */
static int enqueue_try(struct cmesh__lane *ln, uint32_t kind,
		       const struct cmesh__iov *iov, uint32_t niov,
		       const int *fds, uint32_t nfds,
		       const struct cmesh__port_out *ports, uint32_t nports,
		       struct cmesh_rec_msg *h, bool try)
{
	int r = -EAGAIN;

	pthread_mutex_lock(&ln->lock);
	if (ln->spill_head)
		cmesh__lane_flush_locked(ln);
	/* Sealed: only its end goes; a sender's record goes elsewhere. */
	if (cmesh__lane_sealed(ln) && kind != CMESH_REC_CLOSE &&
	    kind != CMESH_REC_FAIL) {
		pthread_mutex_unlock(&ln->lock);
		return -ESTALE;
	}
	/*
	 * Ended (a split's failure, or its last sender's FAIL while a
	 * forwarder still owes a mark): nothing for the consumer follows,
	 * a mark included (its claim opens at the lane's end anyway).
	 */
	if (ln->tail_ended &&
	    (kind == CMESH_REC_MARK || kind == CMESH_REC_HINTS)) {
		pthread_mutex_unlock(&ln->lock);
		return -ESTALE;
	}
	/* A try behind a full socket would only leave fillers: wait. */
	if (!ln->spill_head && (!ln->dynamic || cmesh__lane_bound(ln)) &&
	    (!try || !nfds || cmesh__lane_attach_may_go(ln)))
		r = cmesh__lane_publish(
			ln, kind, iov, niov, fds, nfds, ports, nports,
			h ? (unsigned char *)&h->attach_seq : NULL);
	if (r == -EAGAIN && !try)
		r = cmesh__lane_spill(ln, kind, iov, niov, fds, nfds, ports,
				      nports);
	else if (r == 0) /* the kernel holds the copies in flight */
		cmesh__lane_close_fds(fds, nfds);
	if (r == 0 && (kind == CMESH_REC_CLOSE || kind == CMESH_REC_FAIL))
		ln->tail_ended = true;
	pthread_mutex_unlock(&ln->lock);
	if (r == -EPROTO) /* the consumer's head was corrupt */
		cmesh__link_fail(ln->link, -EPROTO);
	if (r == 0)
		cmesh__lane_signal(ln);
	return r;
}

/*
 * A record without fds (its ports, if any, all inline REUSE descriptors):
 * pushed without `lock` unless a backlog is queued (then in order behind
 * it; a locked instruction after the record would also wait for its
 * stores to reach the lines the peer polls), then its ports marked sent.
 */
static cmesh__inline int enqueue_plain(struct cmesh__lane *ln, uint32_t kind,
				       const struct cmesh__iov *iov,
				       uint32_t niov,
				       const struct cmesh__port_out *ports,
				       uint32_t nports, bool try)
{
	int r = -EAGAIN;

	/* Pairs with the release store in cmesh__lane_flush_locked(). */
	if (!atomic_load_explicit(&ln->spilling, memory_order_acquire))
		r = nports ? push_ports_inline(ln, kind, iov, niov, false) :
			     cmesh__shmring_pushv(&ln->prod, kind, iov, niov);
	if (r == -EAGAIN)
		return try ? -EAGAIN :
			     cmesh__lane_enqueue(ln, kind, iov, niov, NULL, 0,
						 ports, nports, NULL);
	if (r == -EPROTO) /* the consumer's head was corrupt */
		cmesh__link_fail(ln->link, -EPROTO);
	if (r == 0) {
		for (uint32_t i = 0; i < nports; i++)
			cmesh__link_lane_sent(ports[i].lane);
		cmesh__lane_signal(ln);
	}
	return r;
}

/*
 * A BULK record now, or (no room, or a backlog queued) spilled to be
 * published by the flush; with `try`, -EAGAIN then and nothing taken.
 */
static int send_bulk(struct cmesh__lane *ln, const void *msg, const void *trail,
		     size_t len, bool try)
{
	struct cmesh__iov iov[2] = { { msg, ln->type->size },
				     { trail, (uint32_t)len } };
	uint64_t at;
	int r = -EAGAIN;

	pthread_mutex_lock(&ln->lock);
	if (cmesh__lane_sealed(ln)) {
		pthread_mutex_unlock(&ln->lock);
		return -ESTALE;
	}
	if (!atomic_load_explicit(&ln->spilling, memory_order_relaxed))
		r = cmesh__lane_bulk_publish(ln, msg, trail, len, &at);
	if (r == -EAGAIN && !try)
		r = cmesh__lane_spill(ln, CMESH_REC_BULK, iov, 2, NULL, 0, NULL,
				      0);
	pthread_mutex_unlock(&ln->lock);
	return r;
}

static bool has_endpoint(const cmesh_type *t, const void *msg)
{
	for (uint32_t i = 0; i < t->nfields; i++) {
		void *p;

		if (!cmesh__field_is_endpoint(t->fields[i].kind))
			continue;
		memcpy(&p, (const char *)msg + t->fields[i].offset, sizeof(p));
		if (p)
			return true;
	}
	return false;
}

static uint32_t collect_fds(const struct cmesh__lane *ln, const void *msg,
			    int *fds, uint64_t *out_mask)
{
	const cmesh_type *t = ln->type;
	uint32_t n = 0;

	*out_mask = 0;
	for (uint32_t i = 0; i < t->nfields; i++) {
		int fd;

		if (!(ln->fd_fields & (1ull << i)))
			continue;
		memcpy(&fd, (const char *)msg + t->fields[i].offset,
		       sizeof(fd));
		if (fd < 0)
			continue;
		fds[n++] = fd;
		*out_mask |= 1ull << i;
	}
	return n;
}

void cmesh__lane_unsend_ports(const struct cmesh__port_out *ports, uint32_t n,
			      bool failed)
{
	for (uint32_t i = 0; i < n; i++)
		if (ports[i].fd >= 0)
			close(ports[i].fd);
	cmesh__lane_ports_unsent(ports, n, failed);
}

static int send_msg(struct cmesh__lane *ln, const void *msg, const void *trail,
		    size_t len, const struct cmesh__port_out *ports,
		    uint32_t nports, uint64_t port_mask, bool try);

int cmesh__lane_send_ports(struct cmesh__lane *ln, const void *msg,
			   const void *trail, size_t len,
			   const struct cmesh__port_out *ports, uint32_t nports,
			   uint64_t port_mask)
{
	return send_msg(ln, msg, trail, len, ports, nports, port_mask, false);
}

int cmesh__lane_try_send(struct cmesh__lane *ln, const void *msg,
			 const void *trail, size_t len)
{
	return send_msg(ln, msg, trail, len, NULL, 0, 0, true);
}

/*
 * The send of this file (cmesh__lane_send(), _send_ports(), _try_send()).
 * With `try` (no ports then), what does not fit at once is -EAGAIN and
 * takes nothing; every other result takes it all.
 */
static int send_msg(struct cmesh__lane *ln, const void *msg, const void *trail,
		    size_t len, const struct cmesh__port_out *ports,
		    uint32_t nports, uint64_t port_mask, bool try)
{
	struct cmesh_rec_msg h = { 0 };
	struct cmesh_ctl_port descs[CMESH_CTL_MAX_PORTS];
	struct cmesh__iov iov[4];
	int fds[MAX_FDS];
	uint32_t nfds = 0, niov = 2;
	uint64_t fd_mask = 0;
	int r, ool = -1, arena = -1;

	/*
	 * First: a receiver that is gone stays gone (-EPIPE) when its process
	 * exits later, the wake line stays mapped. Unless the lane was sealed
	 * (its receiver came home): the receiver that closed it then is the
	 * old one, after our seal's CLOSE, and the message goes home.
	 */
	r = cmesh__lane_tx_err(ln);
	if (r && !nports && cmesh__lane_sealed(ln))
		return -ESTALE;
	if (r)
		goto out_release;
	if (ln->type->nfields) {
		/* Endpoints cross as ports (port.c), never as pointers. */
		r = -EOPNOTSUPP;
		if (has_endpoint(ln->type, msg))
			goto out_release;
		/* -EINVAL: the same fd twice */
		r = cmesh__type_prepare_move(ln->type, msg);
		if (r)
			goto out_release;
		nfds = collect_fds(ln, msg, fds, &fd_mask);
	}
	r = -EMSGSIZE;
	if (len > ln->max_trail)
		goto out_release;
	if (!nfds && !nports &&
	    sizeof(h) + ln->type->size + len <= ln->prod.limit) {
		/* The common case: a PLAIN record, no header but the ring's. */
		iov[0] = (struct cmesh__iov){ msg, ln->type->size };
		iov[1] = (struct cmesh__iov){ trail, (uint32_t)len };
		/* Before the LAST record can be seen (lane.h, last_sent). */
		if (ln->poolable)
			atomic_store_explicit(&ln->last_sent, true,
					      memory_order_relaxed);
		r = enqueue_plain(ln, cmesh__lane_plain_kind(ln), iov,
				  len ? 2 : 1, NULL, 0, try);
		if (r && ln->poolable)
			atomic_store_explicit(&ln->last_sent, false,
					      memory_order_relaxed);
		if (r == 0 || (try && r == -EAGAIN) || r == -ESTALE)
			return r;
		goto out_release;
	}
	if (!nfds && !nports && cmesh__lane_bulk_fits(len) &&
	    cmesh__lane_bulk_ready(ln)) {
		/* Too large for a record: through the bulk arena. */
		r = send_bulk(ln, msg, trail, len, try);
		if (r == 0 || (try && r == -EAGAIN) || r == -ESTALE)
			return r;
		goto out_release;
	}
	r = -EINVAL;
	for (uint32_t i = 0; i < nfds; i++)
		if (fcntl(fds[i], F_GETFD) < 0) /* not an open fd */
			goto out_release;
	h.fd_mask = fd_mask;
	h.port_mask = port_mask;
	h.trail_len = (uint32_t)len;
	iov[0] = (struct cmesh__iov){ &h, sizeof(h) };
	if (!nfds && nports == 1 && ports_inline(ports, nports) &&
	    sizeof(struct cmesh_rec_reuse1) + ln->type->size + len <=
		    ln->prod.limit) {
		/* One reply port kept from before: the short header. */
		struct cmesh_rec_reuse1 h1 = {
			ports[0].desc.id, ports[0].desc.ring_cap,
			(uint32_t)__builtin_ctzll(port_mask)
		};

		iov[0] = (struct cmesh__iov){ &h1, sizeof(h1) };
		iov[1] = (struct cmesh__iov){ msg, ln->type->size };
		iov[2] = (struct cmesh__iov){ trail, (uint32_t)len };
		r = enqueue_plain(ln, CMESH_REC_REUSE1, iov, len ? 3 : 2, ports,
				  nports, try);
		if (r == 0 || (try && r == -EAGAIN))
			return r;
		goto out_release;
	}
	if (!nfds && ports_inline(ports, nports) &&
	    sizeof(h) + nports * sizeof(descs[0]) + ln->type->size + len <=
		    ln->prod.limit) {
		/* Reply ports kept from before: all in one record. */
		for (uint32_t i = 0; i < nports; i++)
			descs[i] = ports[i].desc;
		h.flags = CMESH_REC_F_PORTS;
		iov[1] = (struct cmesh__iov){
			descs, nports * (uint32_t)sizeof(descs[0])
		};
		iov[2] = (struct cmesh__iov){ msg, ln->type->size };
		iov[3] = (struct cmesh__iov){ trail, (uint32_t)len };
		r = enqueue_plain(ln, CMESH_REC_MSG, iov, len ? 4 : 3, ports,
				  nports, try);
		if (r == 0 || (try && r == -EAGAIN))
			return r;
		goto out_release;
	}
	for (uint32_t i = 0; i < nports; i++)
		if (ports[i].fd >= 0) /* none for a FAILED port */
			fds[nfds++] = ports[i].fd;
	iov[1] = (struct cmesh__iov){ msg, ln->type->size };
	if (sizeof(h) + ln->type->size + len > ln->prod.limit) {
		/* The arena only beside no fd of the caller's: such a record
		 * is never dropped alone from a backlog (-EINVAL below). */
		bool arena_may = !nfds && !nports;

		ool = cmesh__lane_make_ool(trail, len);
		if (ool < 0) {
			r = ool;
			goto out_release;
		}
		fds[nfds++] = ool;
		h.flags |= CMESH_REC_F_OOL;
		/* The first such message carries the bulk arena, for the
		 * next ones (lane_bulk.c); without one, they go like this. */
		if (arena_may && cmesh__lane_bulk_fits(len) &&
		    (arena = cmesh__lane_bulk_arena_fd(ln)) >= 0) {
			fds[nfds++] = arena;
			h.flags |= CMESH_REC_F_ARENA;
		}
	} else if (len) {
		iov[niov++] = (struct cmesh__iov){ trail, (uint32_t)len };
	}
	h.flags |= CMESH_REC_F_ATTACH; /* fds or ports here */
	r = enqueue_try(ln, CMESH_REC_MSG, iov, niov, fds, nfds, ports, nports,
			&h, try);
	if (arena >= 0)
		cmesh__lane_bulk_arena_sent(ln, r == 0);
	if (r == 0)
		return 0;
	if (ool >= 0)
		close(ool);
	if (arena >= 0)
		close(arena);
	if (try && r == -EAGAIN)
		return r; /* nothing taken: the caller keeps its message */
	if (r == -ESTALE && !nports)
		return r; /* sealed: nothing taken, the caller sends again */
	/* cmesh__lane_enqueue() failed before taking the fds: release them
	 * below. */
out_release:
	/* Lost with a failed receiver or link: their peers fail too. */
	cmesh__lane_unsend_ports(ports, nports,
				 cmesh__lane_lost_to_failure(ln));
	cmesh__type_release(ln->type, msg);
	return r;
}

uint32_t cmesh__lane_trail_inline_max(const struct cmesh__lane *ln)
{
	uint64_t used = sizeof(struct cmesh_rec_msg) + ln->type->size;

	/* The same bound as cmesh__lane_send()'s PLAIN record. */
	return ln->prod.limit > used ? (uint32_t)(ln->prod.limit - used) : 0;
}

int cmesh__lane_send(struct cmesh__lane *ln, const void *msg, const void *trail,
		     size_t len)
{
	return cmesh__lane_send_ports(ln, msg, trail, len, NULL, 0, 0);
}
