/* SPDX-License-Identifier: MIT */
/*
 * lane.c - one direction of a link: channel messages encoded as records in
 * a shared-memory ring (shmring.c), their fds carried by ATTACH control
 * messages (link.c), large trailing bytes out of line in a sealed memfd.
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
 *
 * Trust: a record is copied out of the ring into `buf` (private) before
 * any field of it is used; everything in it is validated against the
 * channel's type: lengths, flags, which fields carry fds, the fd count of
 * the attachment. Pointer-sized endpoint fields are never taken from the
 * peer (set to NULL). A bad record fails the link with -EPROTO.
 */
#include "lane.h"

#include "hint.h"
#include "link.h"
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

#define MAX_FDS (CMESH_TYPE_MAX_FIELDS + 1)

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

int cmesh__lane_init(struct cmesh__lane *ln, struct cmesh__link *link,
		     const cmesh_type *type, uint64_t max_trail,
		     uint64_t max_backlog, int64_t spin_ns)
{
	memset(ln, 0, sizeof(*ln));
	ln->link = link;
	ln->failed = cmesh__link_failed_word(link);
	ln->type = type;
	ln->max_trail = max_trail;
	ln->max_backlog = max_backlog;
	ln->spin_ns = spin_ns;
	ln->peer_wake_sock = -1;
	ln->wake_sock = -1;
	ln->efd = -1;
	ln->pending = -1;
	ln->spill_tailp = &ln->spill_head;
	ln->att_tailp = &ln->att_head;
	for (uint32_t i = 0; i < type->nfields; i++)
		if (type->fields[i].kind == CMESH_FIELD_KIND_FD)
			ln->fd_fields |= 1ull << i;
		else
			ln->ep_fields |= 1ull << i;
	if (!type->nfields && type->size <= CMESH__SHMRING_SMALL)
		ln->small = (uint32_t)type->size;
	return pthread_mutex_init(&ln->lock, NULL) ? -ENOMEM : 0;
}

static void close_fds(const int *fds, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		close(fds[i]);
}

/* What becomes of the head of the backlog (`lock` held). */
enum spill_end {
	SPILL_SENT,    /* published: the kernel holds copies of its fds */
	SPILL_DROPPED, /* never sent: its ports' lanes are dropped */
	SPILL_DISCARD  /* the link is being freed with every lane */
};

static void pop_spill(struct cmesh__lane *ln, enum spill_end how)
{
	struct spill *s = ln->spill_head;

	ln->spill_head = s->next;
	ln->spill_bytes -= spill_cost(s->len, s->nfds, s->nports);
	atomic_store_explicit(&ln->backlog, ln->spill_bytes,
			      memory_order_relaxed);
	close_fds(spill_fds(s), s->nfds);
	if (how == SPILL_DROPPED)
		for (uint32_t i = 0; i < s->nports; i++)
			if (s->ports[i].lane)
				cmesh__link_lane_unsent(s->ports[i].lane);
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
	free(ln->buf);
	cmesh__wake_free(ln->sleeper);
	if (ln->efd >= 0)
		close(ln->efd);
	if (ln->wake_sock >= 0)
		close(ln->wake_sock);
	if (ln->peer_wake_sock >= 0)
		close(ln->peer_wake_sock);
}

/* ---- producer ---- */

/* A sealed memfd holding the trailing bytes (sent as the last fd). */
static int make_ool(const void *trail, size_t len)
{
	int fd = memfd_create("cmesh-msg", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	size_t done = 0;
	int r;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, (const char *)trail + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			goto out_close;
		}
		done += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)) {
		r = -errno;
		goto out_close;
	}
	return fd;

out_close:
	close(fd);
	return r;
}

/*
 * Claims the record's slots, sends the ATTACH (if any), writes its number
 * into the record's header (the 8 bytes at `seq_at`, inside the record's
 * first piece), and publishes the record; the caller holds `lock`.
 * -EAGAIN (ring or socket full) publishes nothing but maybe a filler.
 */
static int publish(struct cmesh__lane *ln, uint32_t kind,
		   const struct cmesh__iov *iov, uint32_t niov, const int *fds,
		   uint32_t nfds, const struct cmesh__port_out *ports,
		   uint32_t nports, unsigned char *seq_at)
{
	uint64_t seq, pos;
	uint32_t len = 0;
	int r;

	if (!nfds && !nports)
		return cmesh__shmring_pushv(&ln->prod, kind, iov, niov);
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
	if (kind != CMESH_REC_CLOSE && ln->spill_bytes + cost > ln->max_backlog)
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
	struct spill *s;
	int r = 0, sent = 0;

	/* Pairs with the consumer's release store of closed. */
	if (atomic_load_explicit(&ln->peer_wake->closed, memory_order_acquire))
		while (ln->spill_head) /* nobody will read them */
			drop_spill(ln);
	/* A port's lane spills until the consumer's half is mapped. */
	if (ln->dynamic && !cmesh__lane_bound(ln))
		return 0;
	if (ln->spill_head && !attach_may_go(ln))
		return 0;
	while ((s = ln->spill_head)) {
		struct cmesh__iov iov = { s->rec, s->len };

		r = publish(ln, s->kind, &iov, 1, spill_fds(s), s->nfds,
			    s->ports, s->nports,
			    s->rec +
				    offsetof(struct cmesh_rec_msg, attach_seq));
		if (r == -EINVAL) { /* its fds went bad: drop it alone */
			drop_spill(ln);
			continue;
		}
		if (r)
			break;
		sent++;
		pop_spill(ln, SPILL_SENT);
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

		/* As in cmesh__lane_send(): a receiver gone stays -EPIPE.
		 * Pairs with the consumer's release store of closed. */
		if (atomic_load_explicit(&ln->peer_wake->closed,
					 memory_order_acquire))
			return -EPIPE;
		f = cmesh__lane_failed(ln);
		if (f)
			return f;
		if (!cmesh__lane_flush_spill(ln))
			return 0;
		now = cmesh_clock_now();
		if (now >= deadline)
			return -ETIMEDOUT;
		left = deadline - now < FLUSH_POLL_NS ? deadline - now :
							FLUSH_POLL_NS;
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

bool cmesh__lane_flush_spill(struct cmesh__lane *ln)
{
	bool more;

	if (!atomic_load_explicit(&ln->spilling, memory_order_relaxed))
		return false;
	pthread_mutex_lock(&ln->lock);
	if (flush_locked(ln))
		cmesh__link_fail(ln->link, -EPROTO);
	more = ln->spill_head != NULL;
	pthread_mutex_unlock(&ln->lock);
	return more;
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
	if (!ln->spill_head && (!ln->dynamic || cmesh__lane_bound(ln)))
		r = publish(ln, kind, iov, niov, fds, nfds, ports, nports,
			    h ? (unsigned char *)&h->attach_seq : NULL);
	if (r == -EAGAIN && !try)
		r = spill(ln, kind, iov, niov, fds, nfds, ports, nports);
	else if (r == 0) /* the kernel holds the copies in flight */
		close_fds(fds, nfds);
	pthread_mutex_unlock(&ln->lock);
	if (r == -EPROTO) /* the consumer's head was corrupt */
		cmesh__link_fail(ln->link, -EPROTO);
	if (r == 0)
		cmesh__lane_signal(ln);
	return r;
}

/*
 * A record without fds: pushed without `lock` unless a backlog is queued
 * (then in order behind it).
 */
static cmesh__inline int enqueue_plain(struct cmesh__lane *ln, uint32_t kind,
				       const struct cmesh__iov *iov,
				       uint32_t niov, bool try)
{
	int r;

	/* Pairs with the release store in flush_locked(). */
	if (atomic_load_explicit(&ln->spilling, memory_order_acquire))
		return try ? -EAGAIN :
			     enqueue(ln, kind, iov, niov, NULL, 0, NULL, 0,
				     NULL);
	r = cmesh__shmring_pushv(&ln->prod, kind, iov, niov);
	if (r == -EAGAIN)
		return try ? -EAGAIN :
			     enqueue(ln, kind, iov, niov, NULL, 0, NULL, 0,
				     NULL);
	if (r == -EPROTO) /* the consumer's head was corrupt */
		cmesh__link_fail(ln->link, -EPROTO);
	if (r == 0)
		cmesh__lane_signal(ln);
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

/* Ports that will not be sent: their fds closed, their lanes dropped. */
static void unsend_ports(const struct cmesh__port_out *ports, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (ports[i].fd >= 0)
			close(ports[i].fd);
		if (ports[i].lane)
			cmesh__link_lane_unsent(ports[i].lane);
	}
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
	struct cmesh__iov iov[3];
	int fds[MAX_FDS];
	uint32_t nfds = 0, niov = 2;
	uint64_t fd_mask = 0;
	int r, ool = -1;

	r = -EPIPE;
	/*
	 * Pairs with the consumer's release store of closed. First: a
	 * receiver that is gone stays gone (-EPIPE) when its process exits
	 * later, the wake line stays mapped.
	 */
	if (atomic_load_explicit(&ln->peer_wake->closed, memory_order_acquire))
		goto out_release;
	r = cmesh__lane_failed(ln);
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
		r = enqueue_plain(ln, CMESH_REC_PLAIN, iov, len ? 2 : 1, try);
		if (r == 0 || (try && r == -EAGAIN))
			return r;
		goto out_release;
	}
	r = -EINVAL;
	for (uint32_t i = 0; i < nfds; i++)
		if (fcntl(fds[i], F_GETFD) < 0) /* not an open fd */
			goto out_release;
	for (uint32_t i = 0; i < nports; i++)
		if (ports[i].fd >= 0) /* none for a FAILED port */
			fds[nfds++] = ports[i].fd;
	h.fd_mask = fd_mask;
	h.port_mask = port_mask;
	h.trail_len = (uint32_t)len;
	iov[0] = (struct cmesh__iov){ &h, sizeof(h) };
	iov[1] = (struct cmesh__iov){ msg, ln->type->size };
	if (sizeof(h) + ln->type->size + len > ln->prod.limit) {
		ool = make_ool(trail, len);
		if (ool < 0) {
			r = ool;
			goto out_release;
		}
		fds[nfds++] = ool;
		h.flags |= CMESH_REC_F_OOL;
	} else if (len) {
		iov[niov++] = (struct cmesh__iov){ trail, (uint32_t)len };
	}
	h.flags |= CMESH_REC_F_ATTACH; /* fds or ports here */
	r = enqueue_try(ln, CMESH_REC_MSG, iov, niov, fds, nfds, ports, nports,
			&h, try);
	if (r == 0)
		return 0;
	if (ool >= 0)
		close(ool);
	if (try && r == -EAGAIN)
		return r; /* nothing taken: the caller keeps its message */
	/* enqueue() failed before taking the fds: release them below. */
out_release:
	unsend_ports(ports, nports);
	cmesh__type_release(ln->type, msg);
	return r;
}

int cmesh__lane_send(struct cmesh__lane *ln, const void *msg, const void *trail,
		     size_t len)
{
	return cmesh__lane_send_ports(ln, msg, trail, len, NULL, 0, 0);
}

int cmesh__lane_rx_gone(const struct cmesh__lane *ln)
{
	/* Pairs with the consumer's release store of closed (or DROPPED's). */
	if (atomic_load_explicit(&ln->peer_wake->closed, memory_order_acquire))
		return 1;
	return cmesh__lane_failed(ln);
}

void cmesh__lane_close_tx(struct cmesh__lane *ln)
{
	struct cmesh__iov none = { NULL, 0 };

	if (cmesh__lane_failed(ln))
		return;
	if (enqueue(ln, CMESH_REC_CLOSE, &none, 1, NULL, 0, NULL, 0, NULL))
		cmesh__link_fail(ln->link, -ENOMEM);
}

/* ---- consumer ---- */

static int proto_error(struct cmesh__lane *ln)
{
	cmesh__link_fail(ln->link, -EPROTO);
	return -EPROTO;
}

/*
 * Reads an out-of-line trail from a peer's memfd, without mapping it. Only
 * a sealed memfd of the right size is accepted (no FIFO, socket or file on
 * a slow mount that could block us).
 */
static int read_ool(int fd, void *out, uint32_t len)
{
	uint32_t done = 0;
	struct stat st;
	int fl = fcntl(fd, F_GETFL), seals = fcntl(fd, F_GET_SEALS);

	if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY ||
	    seals < 0 || !(seals & F_SEAL_SHRINK) || fstat(fd, &st) ||
	    !S_ISREG(st.st_mode) || st.st_size < (off_t)len)
		return -EPROTO;

	while (done < len) {
		ssize_t n = pread(fd, (char *)out + done, len - done, done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPROTO;
		done += (uint32_t)n;
	}
	return 0;
}

/* Writes the fd and endpoint fields of a received message. */
static void set_fields(const struct cmesh__lane *ln, void *out_msg,
		       uint64_t fd_mask, const int *fds)
{
	const cmesh_type *t = ln->type;
	uint32_t k = 0;

	for (uint32_t i = 0; i < t->nfields; i++) {
		char *at = (char *)out_msg + t->fields[i].offset;

		if (t->fields[i].kind == CMESH_FIELD_KIND_FD) {
			int fd = fd_mask & (1ull << i) ? fds[k++] : -1;

			memcpy(at, &fd, sizeof(fd));
		} else {
			void *none = NULL;

			memcpy(at, &none, sizeof(none));
		}
	}
}

/* Length of the trail of the PLAIN record in buf, or -EPROTO. */
static int plain_len(struct cmesh__lane *ln)
{
	const uint32_t msz = ln->type->size;

	if ((uint32_t)ln->pending < msz ||
	    (uint32_t)ln->pending - msz > ln->max_trail)
		return proto_error(ln);
	return ln->pending - (int32_t)msz;
}

/*
 * A PLAIN record, still at the head of the ring: the message, then its
 * trailing bytes, copied straight to the caller (its length was validated
 * by plain_len(); the bytes are opaque and only copied once).
 */
static inline int deliver_plain(struct cmesh__lane *ln, void *out_msg,
				void *out_trail, size_t cap)
{
	const uint32_t msz = ln->type->size;
	int len = plain_len(ln);

	if (len < 0)
		return len;
	if ((size_t)len > cap)
		return -EMSGSIZE;
	cmesh__shmring_read(&ln->cons, 0, out_msg, msz);
	if (len)
		cmesh__shmring_read(&ln->cons, msz, out_trail, (uint32_t)len);
	if (ln->type->nfields)
		set_fields(ln, out_msg, 0, NULL);
	cmesh__shmring_consume(&ln->cons);
	ln->pending = -1;
	return len;
}

/* Drops the pending record, if any (a PLAIN one leaves the ring). */
static void drop_pending(struct cmesh__lane *ln)
{
	if (ln->pending >= 0 && ln->pending_kind == CMESH_REC_PLAIN)
		cmesh__shmring_consume(&ln->cons);
	ln->pending = -1;
}

/* Closes received ports nobody takes, answering each DROPPED. */
static void drop_ports(struct cmesh__lane *ln, struct cmesh__ports_in *pin)
{
	for (uint32_t i = 0; i < pin->n; i++)
		cmesh__link_port_drop(ln->link, &pin->desc[i], pin->fds[i]);
	pin->n = 0;
}

/* Each port's kind must be what its field's endpoint does. */
static bool ports_match(const struct cmesh__lane *ln,
			const struct cmesh__ports_in *pin)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < ln->type->nfields; i++) {
		uint32_t kind = ln->type->fields[i].kind, want;

		if (!(pin->mask & (1ull << i)))
			continue;
		want = kind == CMESH_FIELD_KIND_SENDER ||
				       kind == CMESH_FIELD_KIND_ONESHOT_SENDER ?
			       CMESH_PORT_WRITE :
			       CMESH_PORT_READ;
		if (pin->desc[k++].kind != want)
			return false;
	}
	return true;
}

/*
 * Validates the MSG record held in buf and delivers it; its ports go to
 * *pin (NULL: nobody takes ports, they are dropped). Leaves it pending on
 * -EMSGSIZE and while its attachment has not arrived (-EAGAIN).
 */
static int deliver(struct cmesh__lane *ln, void *out_msg, void *out_trail,
		   size_t cap, struct cmesh__ports_in *pin)
{
	const uint32_t msz = ln->type->size;
	struct cmesh__ports_in none;
	struct cmesh_rec_msg h;
	int fds[MAX_FDS];
	uint32_t nfds, nports, nfd_fields, ool;
	uint64_t want;
	int r;

	if ((uint32_t)ln->pending < sizeof(h))
		return proto_error(ln);
	memcpy(&h, ln->buf, sizeof(h));
	ool = !!(h.flags & CMESH_REC_F_OOL);
	want = sizeof(h) + msz + (ool ? 0 : (uint64_t)h.trail_len);
	nfd_fields = (uint32_t)__builtin_popcountll(h.fd_mask);
	nports = (uint32_t)__builtin_popcountll(h.port_mask);
	nfds = nfd_fields + ool; /* the ports' arenas come on top */
	if ((h.flags & ~CMESH_REC_F_ALL) || (uint64_t)ln->pending != want ||
	    h.trail_len > ln->max_trail || (h.fd_mask & ~ln->fd_fields) ||
	    (h.port_mask & ~ln->ep_fields) ||
	    !(nfds + nports) != !(h.flags & CMESH_REC_F_ATTACH))
		return proto_error(ln);
	if (h.trail_len > cap)
		return -EMSGSIZE;
	if (!pin)
		pin = &none;
	pin->lane = ln;
	pin->n = 0;
	pin->mask = h.port_mask;
	if (nfds + nports) {
		uint32_t k = nfd_fields;

		r = cmesh__link_take_attach(ln, h.attach_seq, fds, nfds, pin,
					    nports);
		if (r)
			return r;
		/* [fd fields][an arena per port not FAILED][OOL memfd] */
		for (uint32_t i = 0; i < nports; i++)
			pin->fds[i] = pin->desc[i].flags & CMESH_PORT_F_FAILED ?
					      -1 :
					      fds[k++];
		nfds = k + ool;
		pin->n = nports;
		if (!ports_match(ln, pin)) {
			close_fds(fds, nfd_fields);
			if (ool)
				close(fds[nfds - 1]);
			drop_ports(ln, pin);
			return proto_error(ln);
		}
	}
	if (ool) {
		r = read_ool(fds[nfds - 1], out_trail, h.trail_len);
		close(fds[nfds - 1]);
		if (r) {
			close_fds(fds, nfd_fields);
			drop_ports(ln, pin);
			return proto_error(ln);
		}
	} else if (h.trail_len) {
		memcpy(out_trail, ln->buf + sizeof(h) + msz, h.trail_len);
	}
	memcpy(out_msg, ln->buf + sizeof(h), msz);
	set_fields(ln, out_msg, h.fd_mask, fds);
	ln->pending = -1;
	if (pin == &none)
		drop_ports(ln, pin);
	return (int)h.trail_len;
}

/*
 * Makes buf hold `need` bytes (at most buf_limit): doubling, so a stream
 * of growing records costs few reallocations, and never more than the
 * largest record seen needs (a ring's limit may be hundreds of MiB).
 */
static int grow_buf(struct cmesh__lane *ln, uint32_t need)
{
	uint64_t cap = (uint64_t)ln->buf_cap * 2;
	unsigned char *b;

	if (cap < need)
		cap = need;
	if (cap < 256)
		cap = 256;
	if (cap > ln->buf_limit)
		cap = ln->buf_limit;
	b = realloc(ln->buf, cap);
	if (!b)
		return -ENOMEM;
	ln->buf = b;
	ln->buf_cap = (uint32_t)cap;
	return 0;
}

/*
 * A port's in lane before the producer's half is mapped: nothing to read;
 * -EPIPE once the peer dropped the endpoint, or the link's failure.
 */
static int unbound_state(struct cmesh__lane *ln)
{
	int f;

	if (atomic_load_explicit(&ln->dropped, memory_order_acquire))
		return -EPIPE;
	f = cmesh__lane_failed(ln);
	return f ? f : -EAGAIN;
}

/*
 * Makes the next record pending: a PLAIN one stays at the head of the
 * ring (deliver_plain() copies it out), any other is copied into buf and
 * taken. -EAGAIN, -EPIPE (closed) or failure.
 */
static cmesh__inline int fetch(struct cmesh__lane *ln)
{
	uint32_t kind;
	int r, f;

	/* A protocol error is final, even after a CLOSE. */
	if (cmesh__lane_failed(ln) == -EPROTO)
		return -EPROTO;
	r = cmesh__shmring_peek(&ln->cons, &kind);
	if (r == -EAGAIN) {
		if (ln->closed)
			return -EPIPE;
		f = cmesh__lane_failed(ln);
		if (!f)
			return -EAGAIN;
		/* Deliver what the peer published before it failed. */
		r = cmesh__shmring_peek(&ln->cons, &kind);
		if (r == -EAGAIN)
			return f;
	}
	if (likely(r >= 0) && likely(kind == CMESH_REC_PLAIN) &&
	    likely(!ln->closed)) {
		ln->pending = r; /* stays in the ring: deliver_plain() */
		ln->pending_kind = kind;
		return 0;
	}
	if (r < 0)
		return proto_error(ln);
	if (ln->closed || (kind == CMESH_REC_CLOSE && r != 0) ||
	    (kind != CMESH_REC_CLOSE && kind != CMESH_REC_MSG &&
	     kind != CMESH_REC_PLAIN) ||
	    (kind == CMESH_REC_MSG && (uint32_t)r > ln->buf_limit))
		return proto_error(ln);
	/* The record stays peeked: a later try finds it again. */
	if ((uint32_t)r > ln->buf_cap && grow_buf(ln, (uint32_t)r))
		return -ENOMEM;
	ln->pending = r;
	ln->pending_kind = kind;
	cmesh__shmring_read(&ln->cons, 0, ln->buf, (uint32_t)r);
	cmesh__shmring_consume(&ln->cons);
	if (kind == CMESH_REC_CLOSE) {
		ln->pending = -1;
		ln->closed = true;
		return -EPIPE;
	}
	return 0;
}

int cmesh__lane_try_recv(struct cmesh__lane *ln, void *out_msg, void *out_trail,
			 size_t cap, struct cmesh__ports_in *pin)
{
	int r;

	if (ln->dynamic && !cmesh__lane_bound(ln))
		return unbound_state(ln);
	if (ln->pending < 0) {
		r = fetch(ln);
		if (r)
			return r;
	}
	/* PLAIN without deliver()'s frame: it is on the round trip. */
	if (likely(ln->pending_kind == CMESH_REC_PLAIN))
		return deliver_plain(ln, out_msg, out_trail, cap);
	return deliver(ln, out_msg, out_trail, cap, pin);
}

int cmesh__lane_peek(struct cmesh__lane *ln)
{
	struct cmesh_rec_msg h;
	int r;

	if (ln->dynamic && !cmesh__lane_bound(ln))
		return unbound_state(ln);
	if (ln->pending < 0) {
		r = fetch(ln);
		if (r)
			return r;
	}
	if (ln->pending_kind == CMESH_REC_PLAIN)
		return plain_len(ln);
	if ((uint32_t)ln->pending < sizeof(h))
		return proto_error(ln);
	memcpy(&h, ln->buf, sizeof(h));
	return h.trail_len > ln->max_trail ? proto_error(ln) : (int)h.trail_len;
}

bool cmesh__lane_ready(struct cmesh__lane *ln)
{
	struct cmesh_rec_msg h;

	if (ln->closed || cmesh__lane_failed(ln))
		return true;
	if (ln->dynamic && !cmesh__lane_bound(ln))
		return atomic_load_explicit(&ln->dropped, memory_order_acquire);
	if (ln->pending < 0)
		return cmesh__shmring_pop_ready(&ln->cons);
	if (ln->pending_kind == CMESH_REC_PLAIN ||
	    (uint32_t)ln->pending < sizeof(h))
		return true; /* deliver_plain() or deliver() has something */
	memcpy(&h, ln->buf, sizeof(h));
	return !(h.flags & CMESH_REC_F_ATTACH) ||
	       cmesh__link_attach_ready(ln, h.attach_seq);
}

void cmesh__lane_close_rx(struct cmesh__lane *ln)
{
	/* Pairs with the producer's acquire load before each send. */
	if (ln->own_wake) /* none on a lane that arrived failed */
		atomic_store_explicit(&ln->own_wake->closed, 1,
				      memory_order_release);
	/*
	 * Drop what is queued. Its fds (and those of records still in
	 * flight) are closed by the link: from now on it closes every
	 * ATTACH as it arrives. The records themselves hold nothing of
	 * ours and nobody reads this ring again: they are left where they
	 * are, so a peer that keeps publishing cannot keep us here.
	 */
	cmesh__link_drop_attachments(ln);
	drop_pending(ln);
}
