/* SPDX-License-Identifier: MIT */
/*
 * lane_rx.c - the consumer side of a lane (lane.c has the lane,
 * lane_send.c and lane_spill.c its producer side; the consumer's end, its
 * close and a pooled lane's next use, is lane_rx_close.c): records taken
 * from the ring, validated, delivered with their fds and ports.
 *
 * Trust: a record is copied out of the ring into `buf` (private) before
 * any field of it is used (a PLAIN record is read once, straight into the
 * caller's buffers, after its length was validated); everything in it is
 * validated against the channel's type: lengths, flags, which fields carry
 * fds and ports, the attachment's fd and port counts and the ports'
 * kinds. Pointer-sized endpoint fields are never taken from the peer:
 * they arrive NULL and port_import.c fills them from the ports. A bad record
 * fails the link with -EPROTO.
 */
#include "lane.h"
#include "lane_int.h"

#include "hint.h"
#include "link.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FDS CMESH__LANE_MAX_FDS

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
 * After each move of our head: the producer asked to hear when it reaches
 * space_at (shm/ring.h, signal line). Each value is answered once: a
 * producer that keeps asking gets at most one SPACE per record we take.
 * No fence here (the head's store is a release): a request made just now
 * may be missed by this look, not by the one a consumer makes when it
 * finds its ring empty (space_look_empty()), nor by the one after the
 * seq_cst fence of its sleeping or armed bit (cmesh__lane_space_look()).
 */
static cmesh__inline void space_check(struct cmesh__lane *ln)
{
	uint64_t at = atomic_load_explicit(&ln->peer_signal->space_at,
					   memory_order_seq_cst);

	if (likely(at == ln->space_answered) ||
	    (int64_t)(ln->cons.head_pos - at) < 0)
		return;
	ln->space_answered = at;
	cmesh__link_space(ln->link);
}

/*
 * The ring found empty (or the head moved inside a readiness look): if
 * the head moved since the last time, it is stored again, seq_cst, then
 * space_check(): the Dekker half of the producer's request (its seq_cst
 * store of space_at, fence, load of the head), once per drain to empty
 * rather than per record. Not at every empty poll: space_at shares the
 * producer's signal line with the words a kept reply lane's producer
 * writes at each use's end (idle_*), which a look per poll would pull
 * away from it on every call.
 */
static cmesh__inline void space_look_empty(struct cmesh__lane *ln)
{
	if (ln->cons.head_pos == ln->space_looked)
		return;
	ln->space_looked = ln->cons.head_pos;
	atomic_exchange_explicit(ln->cons.head, ln->cons.head_pos,
				 memory_order_seq_cst);
	space_check(ln);
}

void cmesh__lane_space_look(struct cmesh__lane *ln)
{
	if (ln->peer_signal && (!ln->dynamic || cmesh__lane_bound(ln)))
		space_check(ln);
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
	space_check(ln);
	cmesh__lane_took_plain(ln);
	return len;
}

/* Closes received ports nobody takes, answering each DROPPED. */
static void drop_ports(struct cmesh__lane *ln, struct cmesh__ports_in *pin)
{
	for (uint32_t i = 0; i < pin->n; i++)
		cmesh__link_port_drop(ln->link, &pin->desc[i], pin->fds[i],
				      ln->att_drop_failed);
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
		want = kind == CMESH_FIELD_KIND_CTX ? CMESH_PORT_CTX :
		       kind == CMESH_FIELD_KIND_SENDER ||
				       kind == CMESH_FIELD_KIND_ONESHOT_SENDER ?
						      CMESH_PORT_WRITE :
						      CMESH_PORT_READ;
		if (pin->desc[k++].kind != want)
			return false;
	}
	return true;
}

/*
 * The REUSE1 record held in buf (shm/proto.h): as a MSG record with
 * F_PORTS and that one descriptor, delivered as deliver() does.
 */
static int deliver_reuse1(struct cmesh__lane *ln, void *out_msg,
			  void *out_trail, size_t cap,
			  struct cmesh__ports_in *pin)
{
	const uint32_t msz = ln->type->size;
	struct cmesh__ports_in none;
	struct cmesh_rec_reuse1 h;
	uint32_t trail, kind;

	if ((uint32_t)ln->pending < sizeof(h) + msz)
		return proto_error(ln);
	memcpy(&h, ln->buf, sizeof(h));
	trail = (uint32_t)ln->pending - (uint32_t)sizeof(h) - msz;
	if (trail > ln->max_trail || h.field >= ln->type->nfields)
		return proto_error(ln);
	/* A reply port (only a oneshot sender's lane is kept). */
	kind = ln->type->fields[h.field].kind;
	if (kind != CMESH_FIELD_KIND_ONESHOT_SENDER)
		return proto_error(ln);
	if (trail > cap)
		return -EMSGSIZE;
	if (!pin)
		pin = &none;
	pin->lane = ln;
	pin->n = 1;
	pin->mask = 1ull << h.field;
	pin->desc[0] = (struct cmesh_ctl_port){ .id = h.id,
						.kind = CMESH_PORT_WRITE,
						.ring_cap = h.ring_cap,
						.flags = CMESH_PORT_F_REUSE };
	pin->fds[0] = -1;
	if (trail)
		memcpy(out_trail, ln->buf + sizeof(h) + msz, trail);
	memcpy(out_msg, ln->buf + sizeof(h), msz);
	set_fields(ln, out_msg, 0, NULL);
	ln->pending = -1;
	if (pin == &none)
		drop_ports(ln, pin);
	return (int)trail;
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
	uint32_t nfds, nports, nfd_fields, ool, arena, at;
	bool inl;
	uint64_t want;
	int r;

	if (ln->pending_kind == CMESH_REC_REUSE1)
		return deliver_reuse1(ln, out_msg, out_trail, cap, pin);
	if ((uint32_t)ln->pending < sizeof(h))
		return proto_error(ln);
	memcpy(&h, ln->buf, sizeof(h));
	ool = !!(h.flags & CMESH_REC_F_OOL);
	arena = !!(h.flags & CMESH_REC_F_ARENA);
	inl = !!(h.flags & CMESH_REC_F_PORTS);
	nfd_fields = (uint32_t)__builtin_popcountll(h.fd_mask);
	nports = (uint32_t)__builtin_popcountll(h.port_mask);
	/* The ports' arenas come on top; a bulk arena only without ports. */
	nfds = nfd_fields + ool + arena;
	/* The message starts after the descriptors a record carries. */
	at = sizeof(h) +
	     (inl ? nports * (uint32_t)sizeof(struct cmesh_ctl_port) : 0);
	want = at + msz + (ool ? 0 : (uint64_t)h.trail_len);
	if ((h.flags & ~CMESH_REC_F_ALL) || (uint64_t)ln->pending != want ||
	    h.trail_len > ln->max_trail || (h.fd_mask & ~ln->fd_fields) ||
	    (h.port_mask & ~ln->ep_fields) || (arena && nports) ||
	    (inl ? (nfds || !nports || (h.flags & CMESH_REC_F_ATTACH)) :
		   !(nfds + nports) != !(h.flags & CMESH_REC_F_ATTACH)))
		return proto_error(ln);
	/* Its attachment not here yet: nothing to take (as the peek says). */
	if ((h.flags & CMESH_REC_F_ATTACH) && !cmesh__link_attach_here(ln))
		return -EAGAIN;
	if (h.trail_len > cap)
		return -EMSGSIZE;
	if (!pin)
		pin = &none;
	pin->lane = ln;
	pin->n = 0;
	pin->mask = h.port_mask;
	if (inl) {
		/* Kept lanes only (REUSE): no fd, nothing in the FIFO. */
		memcpy(pin->desc, ln->buf + sizeof(h),
		       nports * sizeof(pin->desc[0]));
		for (uint32_t i = 0; i < nports; i++) {
			pin->fds[i] = -1;
			if (pin->desc[i].flags != CMESH_PORT_F_REUSE ||
			    pin->desc[i].kind != CMESH_PORT_WRITE)
				return proto_error(ln);
		}
		pin->n = nports;
		if (!ports_match(ln, pin)) {
			drop_ports(ln, pin);
			return proto_error(ln);
		}
	} else if (nfds + nports) {
		uint32_t k = nfd_fields;

		r = cmesh__link_take_attach(ln, h.attach_seq, fds, nfds, pin,
					    nports);
		if (r)
			return r;
		/*
		 * [fd fields][an arena per port that has one][OOL memfd]
		 * [bulk arena]
		 */
		for (uint32_t i = 0; i < nports; i++)
			pin->fds[i] = cmesh__port_has_fd(&pin->desc[i]) ?
					      fds[k++] :
					      -1;
		nfds = k + ool + arena;
		pin->n = nports;
		if (!ports_match(ln, pin)) {
			cmesh__lane_close_fds(fds, nfd_fields);
			cmesh__lane_close_fds(fds + k, ool + arena);
			drop_ports(ln, pin);
			return proto_error(ln);
		}
	}
	if (arena && cmesh__lane_bulk_map(ln, fds[nfds - 1])) {
		cmesh__lane_close_fds(fds, nfds - 1);
		drop_ports(ln, pin);
		return proto_error(ln);
	}
	if (ool) {
		r = read_ool(fds[nfds - 1 - arena], out_trail, h.trail_len);
		close(fds[nfds - 1 - arena]);
		if (r) {
			cmesh__lane_close_fds(fds, nfd_fields);
			drop_ports(ln, pin);
			return proto_error(ln);
		}
	} else if (h.trail_len) {
		memcpy(out_trail, ln->buf + at + msz, h.trail_len);
	}
	memcpy(out_msg, ln->buf + at, msz);
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
 * once the peer dropped the endpoint (or never got it) -EPIPE, or
 * -ECONNRESET if it was lost to a failure; else the link's failure.
 */
static int unbound_state(struct cmesh__lane *ln)
{
	int f = cmesh__lane_dropped_err(ln);

	if (f)
		return f;
	f = cmesh__lane_failed(ln);
	return f ? f : -EAGAIN;
}

/*
 * The HINTS record held in buf (`len` bytes, checked: a whole number of
 * entries, at most the limit, the lane's only one, on a channel receiver
 * port's lane), copied and checked once:
 * in hints for the queue (CMESH__LANE_MARK), or -EPROTO. Without memory
 * for it, it is dropped: its senders stay forwarded.
 */
static int take_hints(struct cmesh__lane *ln, uint32_t len)
{
	uint32_t n = len / (uint32_t)sizeof(struct cmesh_rec_hint);
	struct cmesh_rec_hint *h = malloc(len);

	ln->pending = -1;
	ln->hints_seen = true;
	if (!h)
		return CMESH__LANE_MARK; /* nothing to act on: look again */
	memcpy(h, ln->buf, len);
	for (uint32_t i = 0; i < n; i++)
		if (!h[i].node || !(h[i].token[0] | h[i].token[1]) ||
		    !h[i].mark || h[i].zero) {
			free(h);
			return proto_error(ln);
		}
	ln->hints = h;
	ln->nhints = n;
	return CMESH__LANE_MARK;
}

/*
 * Makes the next record pending: a PLAIN one stays at the head of the
 * ring (deliver_plain() copies it out), any other is copied into buf and
 * taken. -EAGAIN, -EPIPE (closed) or failure.
 */
static cmesh__inline int fetch(struct cmesh__lane *ln)
{
	uint64_t head = ln->cons.head_pos;
	uint32_t kind;
	int r, f;

	/* A protocol error is final, even after a CLOSE. */
	if (cmesh__lane_failed(ln) == -EPROTO)
		return -EPROTO;
	/*
	 * Past its end (CLOSE, FAIL or a LAST) nothing is read: an honest
	 * producer may still write there (a split's FAIL goes at once while
	 * its senders here, not knowing yet, still send on that lane), and
	 * a hostile one gains nothing by it (the ring is left unread).
	 */
	if (unlikely(ln->closed))
		return ln->close_err;
	r = cmesh__shmring_peek(&ln->cons, &kind);
	if (unlikely(ln->cons.head_pos != head))
		space_check(ln); /* it stepped over fillers */
	if (r == -EAGAIN) {
		space_look_empty(ln);
		f = cmesh__lane_failed(ln);
		/*
		 * The peer dropped the port (a reused reply port: DROPPED),
		 * or the message carrying it was never delivered.
		 */
		if (!f) {
			f = cmesh__lane_dropped_err(ln);
			return f ? f : -EAGAIN;
		}
		/* Deliver what the peer published before it failed. */
		r = cmesh__shmring_peek(&ln->cons, &kind);
		if (r == -EAGAIN)
			return f;
	}
	if (likely(r >= 0) &&
	    likely(kind == CMESH_REC_PLAIN || kind == CMESH_REC_BULK ||
		   kind == CMESH_REC_LAST)) {
		/* Only a kept lane's use ends with a LAST (shm/proto.h). */
		if (unlikely(kind == CMESH_REC_LAST) && !ln->poolable)
			return proto_error(ln);
		/* Stays in the ring: deliver_plain(), bulk_deliver(). */
		ln->pending = r;
		ln->pending_kind = kind == CMESH_REC_LAST ? CMESH_REC_PLAIN :
							    kind;
		ln->pending_last = kind == CMESH_REC_LAST;
		return 0;
	}
	if (r < 0)
		return proto_error(ln);
	if (((kind == CMESH_REC_CLOSE || kind == CMESH_REC_FAIL) && r != 0) ||
	    (kind == CMESH_REC_MARK &&
	     (r != (int)sizeof(struct cmesh_rec_mark) || ln->poolable)) ||
	    (kind == CMESH_REC_HINTS &&
	     (!r || r % (int)sizeof(struct cmesh_rec_hint) ||
	      r > (int)(CMESH_REC_HINTS_MAX * sizeof(struct cmesh_rec_hint)) ||
	      !ln->hintable || ln->hints_seen)) ||
	    (kind != CMESH_REC_CLOSE && kind != CMESH_REC_FAIL &&
	     kind != CMESH_REC_MSG && kind != CMESH_REC_PLAIN &&
	     kind != CMESH_REC_REUSE1 && kind != CMESH_REC_MARK &&
	     kind != CMESH_REC_HINTS) ||
	    ((kind == CMESH_REC_MSG || kind == CMESH_REC_REUSE1) &&
	     (uint32_t)r > ln->buf_limit))
		return proto_error(ln);
	/* The record stays peeked: a later try finds it again. */
	if ((uint32_t)r > ln->buf_cap && grow_buf(ln, (uint32_t)r))
		return -ENOMEM;
	ln->pending = r;
	ln->pending_kind = kind;
	cmesh__shmring_read(&ln->cons, 0, ln->buf, (uint32_t)r);
	cmesh__shmring_consume(&ln->cons);
	space_check(ln);
	if (kind == CMESH_REC_CLOSE || kind == CMESH_REC_FAIL) {
		ln->pending = -1;
		ln->closed = true;
		ln->close_err = kind == CMESH_REC_FAIL ? -ECONNRESET : -EPIPE;
		return ln->close_err;
	}
	if (kind == CMESH_REC_MARK) {
		struct cmesh_rec_mark m;

		ln->pending = -1;
		memcpy(&m, ln->buf, sizeof(m));
		if (!m.mark || m.zero)
			return proto_error(ln);
		ln->mark_seen = m.mark;
		return CMESH__LANE_MARK;
	}
	if (kind == CMESH_REC_HINTS)
		return take_hints(ln, (uint32_t)r);
	return 0;
}

/* fetch() out of line, for the drain of a closing receiver. */
int cmesh__lane_fetch(struct cmesh__lane *ln)
{
	return fetch(ln);
}

int cmesh__lane_try_recv(struct cmesh__lane *ln, void *out_msg, void *out_trail,
			 size_t cap, struct cmesh__ports_in *pin)
{
	int r;

	if (ln->dynamic && !cmesh__lane_bound(ln))
		return unbound_state(ln);
	if (ln->pending < 0) {
		/* The queue acts on a mark taken before the next one. */
		if (unlikely(cmesh__lane_control(ln)))
			return CMESH__LANE_MARK;
		r = fetch(ln);
		if (r)
			return r;
	}
	/* PLAIN without deliver()'s frame: it is on the round trip. */
	if (likely(ln->pending_kind == CMESH_REC_PLAIN))
		return deliver_plain(ln, out_msg, out_trail, cap);
	if (ln->pending_kind == CMESH_REC_BULK) {
		r = cmesh__lane_bulk_deliver(ln, out_msg, out_trail, cap);
		if (r == -EPROTO)
			return proto_error(ln);
		if (r < 0)
			return r;
		/* As a PLAIN record's: no fd numbers from the peer's bytes. */
		if (ln->type->nfields)
			set_fields(ln, out_msg, 0, NULL);
		space_check(ln);
		return r;
	}
	return deliver(ln, out_msg, out_trail, cap, pin);
}

int cmesh__lane_peek(struct cmesh__lane *ln)
{
	struct cmesh_rec_msg h;
	int r;

	if (ln->dynamic && !cmesh__lane_bound(ln))
		return unbound_state(ln);
	if (ln->pending < 0) {
		if (cmesh__lane_control(ln)) /* as cmesh__lane_try_recv() */
			return CMESH__LANE_MARK;
		r = fetch(ln);
		if (r)
			return r;
	}
	if (ln->pending_kind == CMESH_REC_PLAIN)
		return plain_len(ln);
	if (ln->pending_kind == CMESH_REC_BULK) {
		r = cmesh__lane_bulk_len(ln);
		return r < 0 ? proto_error(ln) : r;
	}
	if (ln->pending_kind == CMESH_REC_REUSE1) {
		uint32_t hdr = (uint32_t)sizeof(struct cmesh_rec_reuse1) +
			       ln->type->size;

		/* deliver_reuse1() checks the rest. */
		return (uint32_t)ln->pending < hdr ||
				       (uint32_t)ln->pending - hdr >
					       ln->max_trail ?
			       proto_error(ln) :
			       (int)((uint32_t)ln->pending - hdr);
	}
	if ((uint32_t)ln->pending < sizeof(h))
		return proto_error(ln);
	memcpy(&h, ln->buf, sizeof(h));
	if (h.trail_len > ln->max_trail)
		return proto_error(ln);
	/*
	 * As deliver(): its attachment not here yet, a receive takes
	 * nothing from this lane and goes on to the next source, so the
	 * peek does too (a forwarder sizes its buffer by the peek).
	 */
	if ((h.flags & CMESH_REC_F_ATTACH) && !cmesh__link_attach_here(ln))
		return -EAGAIN;
	return (int)h.trail_len;
}

/* After a MARK (HINTS) taken: anything behind it? Empty: as fetch()'s. */
static bool ready_after_mark(struct cmesh__lane *ln)
{
	if (cmesh__shmring_pop_ready(&ln->cons))
		return true;
	space_look_empty(ln); /* the MARK moved the head */
	return false;
}

bool cmesh__lane_ready(struct cmesh__lane *ln)
{
	struct cmesh_rec_msg h;
	uint32_t kind;

	if (ln->closed || cmesh__lane_failed(ln))
		return true;
	if (ln->dynamic && !cmesh__lane_bound(ln))
		return atomic_load_explicit(&ln->dropped, memory_order_acquire);
	if (ln->pending < 0) {
		uint64_t head = ln->cons.head_pos;
		int r;

		/* The queue acts on a MARK (HINTS) taken before the next. */
		if (cmesh__lane_control(ln))
			return ready_after_mark(ln);
		r = cmesh__shmring_peek(&ln->cons, &kind);
		if (ln->cons.head_pos != head)
			space_check(ln); /* it stepped over fillers */
		if (r == -EAGAIN) {
			space_look_empty(ln);
			/* As fetch(): dropped (a kept reply lane's DROPPED)
			 * and empty, its receive says -EPIPE. */
			return atomic_load_explicit(&ln->dropped,
						    memory_order_acquire);
		}
		/* Something, or a bad record: the receive says which. */
		if (r < 0 ||
		    (kind != CMESH_REC_MARK && kind != CMESH_REC_HINTS))
			return true;
		/*
		 * A MARK (HINTS) is nothing to receive: taken here (for the
		 * queue, which opens what waited for it, or claims), then
		 * what follows.
		 */
		if (fetch(ln) != CMESH__LANE_MARK)
			return true;
		return ready_after_mark(ln);
	}
	if (ln->pending_kind == CMESH_REC_PLAIN ||
	    ln->pending_kind == CMESH_REC_BULK ||
	    ln->pending_kind == CMESH_REC_REUSE1 ||
	    (uint32_t)ln->pending < sizeof(h))
		return true; /* deliver_plain() or deliver() has something */
	memcpy(&h, ln->buf, sizeof(h));
	return !(h.flags & CMESH_REC_F_ATTACH) || cmesh__link_attach_here(ln);
}
