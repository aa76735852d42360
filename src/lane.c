/* SPDX-License-Identifier: MIT */
/*
 * lane.c - one direction of a link: channel messages encoded as records in
 * a shared-memory ring (shmring.c), their fds and ports carried by ATTACH
 * control messages (link_lanes.c), large trailing bytes out of line in a
 * sealed memfd. This file: the lane itself and its producer side (send,
 * spill backlog, flush); the consumer side is lane_rx.c, its end
 * lane_rx_close.c.
 *
 * Memory-ordering contract (on top of shmring.c's)
 * - Sleep/wake: lane_wake.c.
 * - Receiver gone. The consumer stores closed = 1 (release) in its own
 *   line; a producer loads it (acquire) before each send and then fails
 *   with -EPIPE. A record already in flight stays unread in the ring
 *   (the close does not drain it); its fds are closed by the link.
 * - Senders without fds (PLAIN, the common case) push lock-free while
 *   `spilling` is 0. Once the ring was full, a send spills under `lock`
 *   and sets `spilling` (a sender sees its own store, so it keeps
 *   spilling: per-sender FIFO) until the link thread (or a later sender)
 *   has flushed the backlog and stores 0 with release; a sender's acquire
 *   load of that 0 pairs with it, so its claim comes after the flushed
 *   records' claims.
 * - Order of fds. A producer holding `lock` claims a record's slots, sends
 *   its ATTACH, then writes and publishes the record, so ATTACHes arrive in
 *   record order (positions are claimed in the order of the ATTACHes). If
 *   the ATTACH cannot be sent, the claimed slots are published as a filler
 *   and the message is spilled; the backlog is retried only once the
 *   control socket polls writable, so a stalled peer costs few fillers.
 */
#include "lane.h"

#include "hint.h"
#include "link.h"
#include "park.h"
#include "type.h"
#include "wake.h"

#include "proto.h"
#include "ring.h"

#include <cmesh/common.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS CMESH__LANE_MAX_FDS

/*
 * A spilled record: its payload, then its fds (nfds ints at spill_fds()),
 * in one allocation of spill_cost() bytes, which count against the lane's
 * max_backlog.
 */
struct spill {
	struct spill *next;
	uint32_t kind;
	uint32_t len; /* record payload bytes */
	uint32_t nfds;
	uint32_t nports;
	struct cmesh__port_out *ports;	/* inside this allocation, or NULL */
	alignas(8) unsigned char rec[]; /* payload; a MSG starts with
					   cmesh_rec_msg */
};

static size_t spill_fds_off(uint32_t len)
{
	return ((size_t)len + alignof(int) - 1) & ~(alignof(int) - 1);
}

static size_t spill_ports_off(uint32_t len, uint32_t nfds)
{
	size_t a = alignof(struct cmesh__port_out);

	return (spill_fds_off(len) + nfds * sizeof(int) + a - 1) & ~(a - 1);
}

static size_t spill_cost(uint32_t len, uint32_t nfds, uint32_t nports)
{
	return sizeof(struct spill) + spill_ports_off(len, nfds) +
	       nports * sizeof(struct cmesh__port_out);
}

static int *spill_fds(struct spill *s)
{
	return (int *)(void *)(s->rec + spill_fds_off(s->len));
}

/* What the lane derives from its message type. */
static void set_type(struct cmesh__lane *ln, const cmesh_type *type)
{
	ln->type = type;
	ln->fd_fields = ln->ep_fields = 0;
	ln->reply_fields = false;
	for (uint32_t i = 0; i < type->nfields; i++) {
		if (type->fields[i].kind == CMESH_FIELD_KIND_FD)
			ln->fd_fields |= 1ull << i;
		else
			ln->ep_fields |= 1ull << i;
		if (type->fields[i].kind == CMESH_FIELD_KIND_ONESHOT_SENDER)
			ln->reply_fields = true;
	}
	ln->small = !type->nfields && type->size <= CMESH__SHMRING_SMALL ?
			    (uint32_t)type->size :
			    0;
}

void cmesh__lane_tx_idle(struct cmesh__lane *ln)
{
	/* A LAST record said it already: the consumer reads nothing here. */
	if (atomic_load_explicit(&ln->last_sent, memory_order_relaxed))
		return;
	ln->own_signal->idle_tail = cmesh__shmring_tail(&ln->prod);
	ln->own_signal->idle_attach = ln->att_next_out;
	/* Pairs with the consumer's acquire load before it reuses it. */
	atomic_store_explicit(&ln->own_signal->idle_use, ln->use,
			      memory_order_release);
}

void cmesh__lane_tx_reuse(struct cmesh__lane *ln, const cmesh_type *type)
{
	set_type(ln, type);
	ln->attach_blocked = false;
	ln->use_tail = cmesh__shmring_tail(&ln->prod);
	atomic_store_explicit(&ln->last_sent, false, memory_order_relaxed);
	/* Bound, no backlog (its last use ended with one delivered). */
	atomic_store_explicit(&ln->spilling, 0, memory_order_relaxed);
}

/* Serials of lanes (claims name a lane by it: never reused). */
static _Atomic uint64_t lane_serials;

int cmesh__lane_init(struct cmesh__lane *ln, struct cmesh__link *link,
		     const cmesh_type *type, uint64_t max_trail,
		     uint64_t max_backlog, int64_t spin_ns)
{
	pthread_rwlockattr_t ra;
	int r;

	memset(ln, 0, sizeof(*ln));
	ln->serial = atomic_fetch_add_explicit(&lane_serials, 1,
					       memory_order_relaxed) +
		     1;
	ln->link = link;
	ln->failed = cmesh__link_failed_word(link);
	ln->max_trail = max_trail;
	ln->max_backlog = max_backlog;
	ln->spin_ns = spin_ns;
	ln->peer_wake_sock = -1;
	ln->wake_sock = -1;
	ln->efd = -1;
	ln->pending = -1;
	ln->spill_tailp = &ln->spill_head;
	ln->att_tailp = &ln->att_head;
	set_type(ln, type);
	atomic_init(&ln->home_q, NULL);
	/* Writer first: a stream of endpoint sends must not starve a seal. */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(
		&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	r = pthread_rwlock_init(&ln->port_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (r)
		return -ENOMEM;
	if (pthread_mutex_init(&ln->lock, NULL)) {
		pthread_rwlock_destroy(&ln->port_lock);
		return -ENOMEM;
	}
	return 0;
}

/* What becomes of the head of the backlog (`lock` held). */
enum spill_end {
	SPILL_SENT,    /* published: the kernel holds copies of its fds */
	SPILL_DROPPED, /* never sent: its ports' lanes are dropped */
	SPILL_DISCARD  /* the link is being freed with every lane */
};

/* Ports whose message will not be sent: their lanes, their contexts. */
static void ports_unsent(const struct cmesh__port_out *ports, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (ports[i].lane)
			cmesh__link_lane_unsent(ports[i].lane);
		if (ports[i].desc.kind == CMESH_PORT_CTX)
			cmesh__link_ctx_unexport(ports[i].link,
						 ports[i].desc.id);
	}
}

static void pop_spill(struct cmesh__lane *ln, enum spill_end how)
{
	struct spill *s = ln->spill_head;

	ln->spill_head = s->next;
	ln->spill_bytes -= spill_cost(s->len, s->nfds, s->nports);
	atomic_store_explicit(&ln->backlog, ln->spill_bytes,
			      memory_order_relaxed);
	cmesh__lane_close_fds(spill_fds(s), s->nfds); /* ports' too */
	if (how == SPILL_DROPPED)
		ports_unsent(s->ports, s->nports);
	free(s);
}

static void drop_spill(struct cmesh__lane *ln)
{
	pop_spill(ln, SPILL_DROPPED);
}

void cmesh__lane_destroy(struct cmesh__lane *ln)
{
	while (ln->spill_head)
		pop_spill(ln, SPILL_DISCARD);
	pthread_mutex_destroy(&ln->lock);
	pthread_rwlock_destroy(&ln->port_lock);
	cmesh__lane_bulk_free(ln);
	free(ln->buf);
	free(ln->hints);
	cmesh__wake_free(ln->sleeper);
	if (ln->efd >= 0)
		close(ln->efd);
	if (ln->wake_sock >= 0)
		close(ln->wake_sock);
	if (ln->peer_wake_sock >= 0)
		close(ln->peer_wake_sock);
}

/* ---- producer ---- */

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
static int publish(struct cmesh__lane *ln, uint32_t kind,
		   const struct cmesh__iov *iov, uint32_t niov, const int *fds,
		   uint32_t nfds, const struct cmesh__port_out *ports,
		   uint32_t nports, unsigned char *seq_at)
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
 * Queues a record behind the ring, in order; the caller holds `lock`.
 * -ENOBUFS past max_backlog (a CLOSE record always fits: it is the last),
 * -ENOMEM; on failure nothing is queued and the fds are the caller's.
 * Only the first spill of a backlog kicks the link thread, which retries
 * while one is queued: a spilled send makes no syscall.
 */
static int spill(struct cmesh__lane *ln, uint32_t kind,
		 const struct cmesh__iov *iov, uint32_t niov, const int *fds,
		 uint32_t nfds, const struct cmesh__port_out *ports,
		 uint32_t nports)
{
	struct spill *s;
	uint32_t len = 0, off = 0;
	size_t cost;

	for (uint32_t i = 0; i < niov; i++)
		len += iov[i].len;
	cost = spill_cost(len, nfds, nports);
	/* An end or a mark always goes: a claim waits for it. */
	if (kind != CMESH_REC_CLOSE && kind != CMESH_REC_FAIL &&
	    kind != CMESH_REC_MARK && ln->spill_bytes + cost > ln->max_backlog)
		return -ENOBUFS;
	s = malloc(cost);
	if (!s)
		return -ENOMEM;
	s->next = NULL;
	s->kind = kind;
	s->len = len;
	s->nfds = nfds;
	s->nports = nports;
	s->ports =
		nports ?
			(struct cmesh__port_out *)(void *)(s->rec +
							   spill_ports_off(
								   len, nfds)) :
			NULL;
	if (nports)
		memcpy(s->ports, ports, nports * sizeof(*ports));
	for (uint32_t i = 0; i < niov; i++) {
		if (iov[i].len)
			memcpy(s->rec + off, iov[i].base, iov[i].len);
		off += iov[i].len;
	}
	if (nfds)
		memcpy(spill_fds(s), fds, nfds * sizeof(int));
	ln->spill_bytes += cost;
	atomic_store_explicit(&ln->backlog, ln->spill_bytes,
			      memory_order_relaxed);
	*ln->spill_tailp = s;
	ln->spill_tailp = &s->next;
	if (!atomic_exchange_explicit(&ln->spilling, 1, memory_order_relaxed))
		cmesh__link_kick(ln->link);
	return 0;
}

/*
 * May the ATTACH that met a full socket be tried again? Each try claims
 * slots first and leaves a filler when it fails, so wait for the socket to
 * say it is writable (it may still be too full for the datagram: rare).
 */
static bool attach_may_go(struct cmesh__lane *ln)
{
	struct pollfd pfd = { .fd = cmesh__link_sock(ln->link),
			      .events = POLLOUT };

	if (!ln->attach_blocked)
		return true;
	return poll(&pfd, 1, 0) != 0; /* writable, an error, or a hangup */
}

/* Moves spilled records into the ring; the caller holds `lock`. */
static int flush_locked(struct cmesh__lane *ln)
{
	struct spill *s = NULL;
	int r = 0, sent = 0, sent_at_ask = -1;
	uint64_t bulk_at = 0;

again:
	/*
	 * Pairs with the consumer's store of closed; seq_cst: after a space
	 * request a consumer that closed either answers it or is seen here.
	 */
	if (atomic_load_explicit(&ln->peer_wake->closed, memory_order_seq_cst))
		while (ln->spill_head) /* nobody will read them */
			drop_spill(ln);
	/* A port's lane spills until the consumer's half is mapped. */
	if (ln->dynamic && !cmesh__lane_bound(ln))
		return 0;
	if (ln->spill_head && !attach_may_go(ln))
		return 0;
	while ((s = ln->spill_head)) {
		struct cmesh__iov iov = { s->rec, s->len };

		ln->attach_blocked = false; /* the socket may take one */
		if (s->kind == CMESH_REC_BULK)
			r = cmesh__lane_bulk_publish(ln, s->rec,
						     s->rec + ln->type->size,
						     s->len - ln->type->size,
						     &bulk_at);
		else
			r = publish(ln, s->kind, &iov, 1, spill_fds(s), s->nfds,
				    s->ports, s->nports,
				    s->rec + offsetof(struct cmesh_rec_msg,
						      attach_seq));
		if (r == -EINVAL) { /* its fds went bad: drop it alone */
			drop_spill(ln);
			r = 0;
			continue;
		}
		if ((r == -EPIPE || r == -ECONNRESET) &&
		    cmesh__lane_peer_closed(ln)) {
			r = 0;
			goto again; /* its receiver closed: all of it goes */
		}
		if (r)
			break;
		sent++;
		pop_spill(ln, SPILL_SENT);
	}
	if (r == -EAGAIN && !ln->attach_blocked && sent != sent_at_ask) {
		/*
		 * The ring is full: ask the consumer to say when it has made
		 * room (shm/ring.h, signal line; Dekker with its head store),
		 * then look once more: it may have made it already. Asked
		 * again after a look that moved records: the position asked
		 * for may have been passed already.
		 */
		sent_at_ask = sent;
		atomic_store_explicit(&ln->own_signal->space_at,
				      s->kind == CMESH_REC_BULK ?
					      bulk_at :
					      cmesh__shmring_space_at(&ln->prod,
								      s->len),
				      memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		goto again;
	}
	if (!ln->spill_head) {
		ln->spill_tailp = &ln->spill_head;
		/*
		 * Pairs with the acquire loads in enqueue_plain() and
		 * cmesh__lane_send_inline().
		 */
		atomic_store_explicit(&ln->spilling, 0, memory_order_release);
	}
	if (sent)
		cmesh__lane_signal(ln);
	return r == -EAGAIN ? 0 : r;
}

/* How often cmesh__lane_flush() looks again while the ring is full. */
#define FLUSH_POLL_NS 100000

int cmesh__lane_flush(struct cmesh__lane *ln, int64_t deadline)
{
	for (;;) {
		int64_t now, left;
		struct timespec ts;
		int f;

		/* As in cmesh__lane_send(): a receiver gone stays gone. */
		f = cmesh__lane_peer_closed(ln);
		if (f)
			return f;
		f = cmesh__lane_failed(ln);
		if (f)
			return f;
		if (!cmesh__lane_flush_spill(ln))
			return 0;
		f = cmesh__park_cancelled(); /* its context ended (park.h) */
		if (f)
			return f;
		now = cmesh_clock_now();
		if (now >= deadline)
			return -ETIMEDOUT;
		left = cmesh__park_nap_cap(deadline) - now;
		if (left > FLUSH_POLL_NS)
			left = FLUSH_POLL_NS;
		ts.tv_sec = 0;
		ts.tv_nsec = left;
		nanosleep(&ts, NULL);
	}
}

void cmesh__lane_drop_spill(struct cmesh__lane *ln)
{
	pthread_mutex_lock(&ln->lock);
	while (ln->spill_head)
		drop_spill(ln);
	ln->spill_tailp = &ln->spill_head;
	/* Pairs with the acquire loads of the senders (see flush_locked). */
	atomic_store_explicit(&ln->spilling, 0, memory_order_release);
	pthread_mutex_unlock(&ln->lock);
}

enum cmesh__spill_wait cmesh__lane_flush_spill(struct cmesh__lane *ln)
{
	enum cmesh__spill_wait w = CMESH__SPILL_DONE;

	if (!atomic_load_explicit(&ln->spilling, memory_order_relaxed))
		return w;
	pthread_mutex_lock(&ln->lock);
	if (flush_locked(ln))
		cmesh__link_fail(ln->link, -EPROTO);
	if (ln->spill_head)
		w = ln->attach_blocked ? CMESH__SPILL_SOCK : CMESH__SPILL_SPACE;
	pthread_mutex_unlock(&ln->lock);
	return w;
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

static int enqueue(struct cmesh__lane *ln, uint32_t kind,
		   const struct cmesh__iov *iov, uint32_t niov, const int *fds,
		   uint32_t nfds, const struct cmesh__port_out *ports,
		   uint32_t nports, struct cmesh_rec_msg *h)
{
	return enqueue_try(ln, kind, iov, niov, fds, nfds, ports, nports, h,
			   false);
}

/*
 * enqueue(); with `try`, what does not go into the ring at once is not
 * spilled: -EAGAIN, the fds still the caller's.
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
		flush_locked(ln);
	/* Sealed: only its end goes; a sender's record goes elsewhere. */
	if (cmesh__lane_sealed(ln) && kind != CMESH_REC_CLOSE &&
	    kind != CMESH_REC_FAIL) {
		pthread_mutex_unlock(&ln->lock);
		return -ESTALE;
	}
	/* A try behind a full socket would only leave fillers: wait. */
	if (!ln->spill_head && (!ln->dynamic || cmesh__lane_bound(ln)) &&
	    (!try || !nfds || attach_may_go(ln)))
		r = publish(ln, kind, iov, niov, fds, nfds, ports, nports,
			    h ? (unsigned char *)&h->attach_seq : NULL);
	if (r == -EAGAIN && !try)
		r = spill(ln, kind, iov, niov, fds, nfds, ports, nports);
	else if (r == 0) /* the kernel holds the copies in flight */
		cmesh__lane_close_fds(fds, nfds);
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

	/* Pairs with the release store in flush_locked(). */
	if (!atomic_load_explicit(&ln->spilling, memory_order_acquire))
		r = nports ? push_ports_inline(ln, kind, iov, niov, false) :
			     cmesh__shmring_pushv(&ln->prod, kind, iov, niov);
	if (r == -EAGAIN)
		return try ? -EAGAIN :
			     enqueue(ln, kind, iov, niov, NULL, 0, ports,
				     nports, NULL);
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
		r = spill(ln, CMESH_REC_BULK, iov, 2, NULL, 0, NULL, 0);
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

void cmesh__lane_unsend_ports(const struct cmesh__port_out *ports, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (ports[i].fd >= 0)
			close(ports[i].fd);
	ports_unsent(ports, n);
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
 * The send of lane.c. With `try` (no ports then), what does not fit at
 * once is -EAGAIN and takes nothing; every other result takes it all.
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
	r = cmesh__lane_peer_closed(ln);
	if (!r)
		r = cmesh__lane_failed(ln);
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
	/* enqueue() failed before taking the fds: release them below. */
out_release:
	cmesh__lane_unsend_ports(ports, nports);
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

int cmesh__lane_rx_gone(const struct cmesh__lane *ln)
{
	/* The consumer's store of closed (or DROPPED's). */
	int c = cmesh__lane_peer_closed(ln);

	if (c)
		return c == -EPIPE ? 1 : c;
	return cmesh__lane_failed(ln);
}

static void close_tx(struct cmesh__lane *ln, uint32_t kind)
{
	struct cmesh__iov none = { NULL, 0 };

	/* A LAST record ended the use: the consumer needs no CLOSE. */
	if (cmesh__lane_failed(ln) ||
	    atomic_load_explicit(&ln->last_sent, memory_order_relaxed))
		return;
	/* Its receiver is gone: nobody reads a CLOSE (none is spilled,
	 * which would keep the link for its thread to drop). Pairs with the
	 * consumer's store of closed. */
	if (atomic_load_explicit(&ln->peer_wake->closed, memory_order_acquire))
		return;
	if (enqueue(ln, kind, &none, 1, NULL, 0, NULL, 0, NULL))
		cmesh__link_fail(ln->link, -ENOMEM);
}

void cmesh__lane_close_tx(struct cmesh__lane *ln)
{
	close_tx(ln, CMESH_REC_CLOSE);
}

uint32_t cmesh__lane_mark_new(struct cmesh__lane *ln)
{
	uint32_t m;

	do
		m = atomic_fetch_add_explicit(&ln->marks, 1,
					      memory_order_relaxed) +
		    1;
	while (!m); /* 0 says "none" */
	return m;
}

void cmesh__lane_mark_tx(struct cmesh__lane *ln, uint32_t mark)
{
	struct cmesh_rec_mark m = { mark, 0 };
	struct cmesh__iov iov = { &m, sizeof(m) };
	int r;

	/* Its receiver gone: nobody reads it. */
	if (cmesh__lane_failed(ln) ||
	    atomic_load_explicit(&ln->peer_wake->closed, memory_order_acquire))
		return;
	r = enqueue(ln, CMESH_REC_MARK, &iov, 1, NULL, 0, NULL, 0, NULL);
	/* Sealed: its end comes later (and opens the claim too). */
	if (r && r != -ESTALE)
		cmesh__link_fail(ln->link, -ENOMEM);
}

int cmesh__lane_hints_tx(struct cmesh__lane *ln, const struct cmesh_rec_hint *h,
			 uint32_t n)
{
	struct cmesh__iov iov = { h, n * sizeof(*h) };

	if (!n || n > CMESH_REC_HINTS_MAX)
		return -EINVAL;
	if (cmesh__lane_failed(ln))
		return -ECONNRESET;
	return enqueue(ln, CMESH_REC_HINTS, &iov, 1, NULL, 0, NULL, 0, NULL);
}

void cmesh__lane_seal_tx(struct cmesh__lane *ln)
{
	/* No send of endpoints is between its look and its record. */
	pthread_rwlock_wrlock(&ln->port_lock);
	pthread_mutex_lock(&ln->lock);
	cmesh__shmring_seal(&ln->prod);
	pthread_mutex_unlock(&ln->lock);
	pthread_rwlock_unlock(&ln->port_lock);
	/* After every record claimed before: the consumer's end. */
	close_tx(ln, CMESH_REC_CLOSE);
}

void cmesh__lane_fail_tx(struct cmesh__lane *ln)
{
	close_tx(ln, CMESH_REC_FAIL);
}
