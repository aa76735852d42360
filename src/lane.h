/* SPDX-License-Identifier: MIT */
/*
 * lane.h - one direction of a link: a shared-memory ring that this process
 * either writes (out lane: senders here, receiver in the peer) or reads
 * (in lane: receiver here, senders in the peer). Queues whose other end
 * is remote forward their operations here (queue.c).
 */
#ifndef CMESH_LANE_H
#define CMESH_LANE_H

#include "proto.h"
#include "ring.h"
#include "shmring.h"
#include "wake.h"

#include <cmesh/type.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

struct cmesh__link;
struct cmesh__wake;
struct cmesh_shm_ring_wake;
struct cmesh_shm_ring_signal;

/*
 * fds one record may carry: its fd or port fields, an OOL memfd and the
 * lane's bulk arena (only with no ports).
 */
#define CMESH__LANE_MAX_FDS (CMESH_TYPE_MAX_FIELDS + 2)

static inline void cmesh__lane_close_fds(const int *fds, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		close(fds[i]);
}

struct spill;
struct cmesh__attach;
struct cmesh__arena;
struct cmesh_ctl_port;

/*
 * A port crossing the link in a message, as lane_send.c carries it: the
 * descriptor for the ATTACH and the arena fd that goes with it.
 */
struct cmesh__port_out {
	struct cmesh_ctl_port desc;
	int fd;			  /* our half's arena (borrowed) */
	struct cmesh__lane *lane; /* the lane the port created here */
	struct cmesh__link *link; /* the link it goes over */
};

/* Port descriptors and arenas taken with a received record. */
struct cmesh__ports_in {
	struct cmesh__lane *lane; /* the lane that delivered them */
	uint32_t n;
	uint64_t mask; /* the record's port_mask */
	struct cmesh_ctl_port desc[CMESH_CTL_MAX_PORTS];
	int fds[CMESH_CTL_MAX_PORTS];
};

struct cmesh__lane {
	struct cmesh__link *link;
	/*
	 * On the link (link_lanes.c): its id, and for lanes that endpoints
	 * created (dynamic) their lifetime (link_sweep.c), under the link's
	 * lanes lock.
	 */
	uint32_t id;
	bool is_out;	   /* we produce */
	bool dynamic;	   /* created by a port, owned by the link's table */
	bool failed_alone; /* arrived failed: no table, its queue frees it */
	bool answered;	   /* its port descriptor was answered */
	_Atomic bool released; /* its owner (a queue) is done with it */
	bool end_seen;	       /* in: the producer sent END */
	bool end_sent;	       /* out: we sent END */
	uint32_t ring_cap;     /* dynamic: its ring's capacity */
	_Atomic bool inflight; /* its port descriptor is not sent yet */
	bool poolable;	       /* a reply port's lane, kept for reuse */
	bool idle;	       /* out, pooled: between two uses */
	/*
	 * Out, pooled: where this use's records start (a REUSE that comes
	 * after one of them is the next use's, not a peer's mistake), and
	 * whether a LAST record ended it (no CLOSE, no idle_use then). Set
	 * before that record can be seen (relaxed, ordered by its publish;
	 * cleared again if the push failed): the consumer's REUSE, sent once
	 * it read the record, must find it set (link_pool.c take_kept()).
	 */
	uint64_t use_tail;
	_Atomic bool last_sent;
	/*
	 * Out lane, under `lock`: its end (CLOSE or FAIL) is enqueued; a
	 * MARK or HINTS after it would be a record past the lane's end,
	 * which the consumer takes for a protocol violation (lane.c).
	 */
	bool tail_ended;
	bool drop_at_idle; /* a REUSE of it was dropped before it went idle */
	/* In, pooled: a LAST record ended the use; the producer is idle. */
	bool peer_idle;
	uint64_t use;  /* pooled: the use it is in (from 1) */
	uint32_t pins; /* callers using it outside the link's lock */
	/* In, dynamic: its waitset's wake socket on the link (relaxed). */
	_Atomic uint32_t ws_id;
	_Atomic bool bound; /* both halves mapped: the ring is usable */
	/*
	 * The peer dropped the port, or will never have it: closed for
	 * good (LANE_DROPPED, with LANE_DROP_FAILED when lost to a failure).
	 */
	_Atomic uint8_t dropped;
	struct cmesh__arena *own_half, *peer_half; /* dynamic lanes */
	struct cmesh__lane *next; /* the link's list of dynamic lanes */
	/* peer_wake until the consumer's half is mapped (closed on DROPPED) */
	struct cmesh_shm_ring_wake unbound_wake;

	/* In lane: its ATTACH FIFO, under the link's att_lock. */
	struct cmesh__attach *att_head;
	struct cmesh__attach **att_tailp;
	uint64_t att_next_in;  /* seq the next ATTACH read must carry */
	uint32_t att_count;    /* ATTACHes in the FIFO */
	uint32_t att_max;      /* records the peer's ring can hold, + 1 */
	bool att_drop;	       /* the receiver is gone: close on arrival */
	bool att_drop_failed;  /* ... failed: its ports answered FAILED */
	bool att_stale_failed; /* the same for ATTACHes up to att_stale */
	uint64_t att_stale;    /* ATTACHes up to this one: an earlier use's */
	/* Out lane: seq of the next ATTACH sent (`lock`). */
	uint64_t att_next_out;

	const _Atomic int *failed; /* the link's failure (cmesh__link_failed) */
	const cmesh_type *type;
	uint64_t max_trail;
	uint64_t fd_fields; /* bit i: type field i is an fd field */
	uint64_t ep_fields; /* bit i: type field i is an endpoint field */
	/*
	 * The type's size if a message of it may take the inline send (no
	 * fd or endpoint fields, fits an inline record), else 0.
	 */
	uint32_t small;
	/* The type has reply-port fields: REUSE ports may come in records. */
	bool reply_fields;

	/* Out lane (producer). */
	pthread_mutex_t lock; /* senders with fds, and the spill backlog */
	struct cmesh__shmring_producer prod;
	const struct cmesh_shm_ring_wake *peer_wake; /* sleeping, closed */
	int peer_wake_sock; /* to the peer consumer's wake socket */
	struct cmesh_shm_ring_signal *own_signal; /* its futex, our arena */
	uint64_t max_backlog;	  /* spill_bytes' bound: -ENOBUFS past it */
	uint64_t spill_bytes;	  /* bytes of the backlog (`lock`) */
	_Atomic uint64_t backlog; /* spill_bytes, for readers without `lock` */
	struct spill *spill_head; /* ordered backlog while the ring is full */
	struct spill **spill_tailp;
	_Atomic uint32_t spilling; /* backlog queued: senders take `lock` */
	/*
	 * Our side ended it with a FAIL (cmesh__lane_fail_tx()): nothing
	 * sent after is read, so every later send says -ECONNRESET (a split
	 * receiver's senders here, whose forwarder's source failed). Set
	 * before the FAIL is published: whoever saw the FAIL sees it too. A
	 * send that looked just before may still land after the FAIL and
	 * return 0, unread, as a send racing a receiver's close may.
	 */
	_Atomic bool tx_failed;
	bool attach_blocked; /* an ATTACH met a full socket (`lock`) */
	struct cmesh__lane_bulk *bulk_out; /* large trails' arena (`lock`) */
	_Atomic bool bulk_ready; /* its fd went out: BULK records may follow */

	/* In lane (consumer). */
	struct cmesh__shmring_consumer cons;
	struct cmesh_shm_ring_wake *own_wake;
	int wake_sock; /* our wake socket: the peer's datagrams */
	int efd;       /* private eventfd: the link thread's wakes */
	struct cmesh__wake *sleeper; /* waits on both: io_uring or epoll */
	const struct cmesh_shm_ring_signal *peer_signal; /* producer's futex */
	uint64_t space_answered; /* the last space_at we sent a SPACE for */
	uint64_t space_looked;	 /* head at the last look at an empty ring */
	_Atomic uint32_t self_wakes; /* futex: the link thread's wakes */
	int64_t spin_ns;
	unsigned char *buf; /* one record, copied out of the ring */
	uint32_t buf_cap;   /* bytes of buf: grows to the largest record */
	uint32_t buf_limit; /* the ring's record limit: buf's bound */
	int32_t pending;    /* length of a record held in buf, or -1 */
	uint32_t in_flight_looks; /* cmesh__park_in_flight_cap() */
	uint32_t pending_kind;	  /* its kind: CMESH_REC_MSG or _PLAIN */
	bool pending_last;	  /* the pending PLAIN record was a LAST */
	bool closed;		  /* CLOSE (or LAST) record seen */
	int close_err;		  /* then: -EPIPE, or -ECONNRESET (a FAIL) */
	/*
	 * A closed receiver's drain of reply ports (lane_rx_close.c): the
	 * end of the records claimed before the close, how many it took,
	 * and whether the link thread still owes the rest (a claim was not
	 * yet written): set by the closer before the release, then the link
	 * thread's (after its acquire of `released`).
	 */
	uint64_t drain_end;
	uint32_t drain_taken;
	bool drain_owed;
	uint32_t mark_seen; /* a MARK taken, for the queue (fetch()) */
	/*
	 * A HINTS taken, for the queue (fetch()); at most one per lane, and
	 * only on the lane of a channel receiver's port (`hintable`).
	 */
	struct cmesh_rec_hint *hints;
	uint32_t nhints;
	bool hints_seen;
	bool hintable;
	const unsigned char *bulk_in; /* the peer's bulk arena, read-only */
	uint64_t bulk_in_size;	      /* its bytes (0: none mapped) */

	/* Out lane, cold: the seal and the receiver's home (queue_move.c). */
	/*
	 * Read: a send of endpoints (port.c), from its look at the seal to
	 * its record. Write: the seal (cmesh__lane_seal_tx()), so that no
	 * such send makes ports for a record the seal then refuses.
	 */
	pthread_rwlock_t port_lock;
	/*
	 * May be sealed: the out lane of a receiver that moved away and may
	 * come home (cmesh__queue_move_rx()), or of a sender that came from
	 * its receiver's process (port_import.c import()): set before any
	 * sender sees the lane. Only such a lane's sends of endpoints take
	 * port_lock.
	 */
	bool sealable;
	/*
	 * Out lane of a receiver that moved away: its queue, whose senders
	 * are here (queue_move.c, queue_claim.c; opaque below it), until the queue goes or
	 * the receiver came back to it (or claimed its senders elsewhere);
	 * out lane a sender's claim made: that sender's queue (on answer, and
	 * while it is its tx lane); out lane of a sender that came from its
	 * receiver's process: that sender's queue (its receiver may come
	 * home to it, or claim it from elsewhere); in lane of a sender that moved from here
	 * to elsewhere: its receiver's queue (a sender's claim). Weak: set and cleared under a leaf lock
	 * of link_claim.c (cmesh__link_lane_home_set()), which a lookup
	 * holds with the link's (cmesh__link_lane_home_take()), or alone (a
	 * claim: the lane is its queue's while it has a home).
	 */
	void *_Atomic home_q;
	/*
	 * Claims (link_claim.c). `token`: with a home, the token that names
	 * this lane of ours in a CLAIM (0: none), in a table of the
	 * claimable lanes (`claim_next`) while home_q is set, or
	 * token_pending (below). `peer_token`:
	 * the token the peer gave for this lane (a port's
	 * CMESH_PORT_F_REDIRECT, or the LANE answering a claim or an
	 * endpoint's port), handed on
	 * when its endpoint moves again (port.c). `claiming`: made for a
	 * CLAIM we sent, whose LANE answer may carry a token. `peer_early`:
	 * a lane made for a channel endpoint's port whose token (ours) the
	 * peer lists its end under: peer_token and peer_node are set before
	 * the port goes, so valid before the answer (which echoes them).
	 */
	uint64_t token[2];
	uint64_t peer_token[2];
	uint64_t peer_node; /* the process that gave peer_token */
	/* With peer_token, a sender's: the mark its claim waits for. */
	uint32_t peer_mark;
	/*
	 * Out lane: the marks given out (a sender of it sent on while others
	 * still write it: its forwarder's end writes that MARK record).
	 */
	_Atomic uint32_t marks;
	uint32_t marked_claims; /* in lane: its marked claims (home_lock) */
	/*
	 * Its token was taken by an unmarked claim (or a come-home) still
	 * deciding (home_lock): listed, but no other claim finds it; spent
	 * once that one holds, listed again if its home refused it for now
	 * (link_claim.c claim_done()).
	 */
	bool claim_busy;
	struct cmesh__lane *claim_next;
	bool claiming;
	bool peer_early;
	/*
	 * Out lane: its token is in the table without a home: a split's,
	 * claimable later (cmesh__link_lane_token_unlisted()). Changed under
	 * home_lock; a relaxed load outside it is exact once the lane is
	 * one thread's (its queue's last put, its free).
	 */
	_Atomic bool token_pending;
	/*
	 * In lane of a receiver, claimed by a sender that moved on: not read
	 * until the lane of that serial (its producer's old one) has ended
	 * (queue_port.c; 0: read it). `serial`: this lane's, unique.
	 */
	uint64_t after;
	uint32_t after_mark; /* with `after`: or once it passed this mark */
	uint64_t serial;
	/*
	 * Out lane claimed for a sender: the lane it replaces, on answer,
	 * and its serial (it may be put before: queue_close.c).
	 */
	struct cmesh__lane *claim_from;
	uint64_t claim_from_serial;
	/*
	 * Out lane left behind by its receiver, sealed: its queue's list
	 * (old_lanes, or pend once it may go: queue_claim.c).
	 */
	struct cmesh__lane *old_next;
	/*
	 * Published as tx_lane by a queue in reclaim mode (under its lock,
	 * before it is published; read under that lock): once left behind,
	 * it goes when no send is inside it, not with the queue.
	 */
	bool reclaimable;
};

/* Set up by the link after the handshake; freed with it. */
int cmesh__lane_init(struct cmesh__lane *ln, struct cmesh__link *link,
		     const cmesh_type *type, uint64_t max_trail,
		     uint64_t max_backlog, int64_t spin_ns);
void cmesh__lane_destroy(struct cmesh__lane *ln);

/*
 * Trailing bytes too large for a ring record (lane_bulk.c). Producer:
 * make_ool() returns a sealed memfd holding them (sent as a record's last
 * fd, CMESH_REC_F_OOL), or -errno. The bulk arena: bulk_fits() says whether `len` may take it;
 * bulk_arena_fd() makes the arena if needed and returns a new fd of it
 * to send (F_ARENA) with an out-of-line message, -EEXIST once sent, or an
 * error (-EEXIST: another message carries it, or did); bulk_arena_sent()
 * says whether that message went (after which bulk_ready()) or not.
 * bulk_publish() (under `lock`) copies the trail into the arena and pushes
 * a BULK record: 0, -EAGAIN (no room in the arena or the ring: nothing
 * taken; *space_at is the ring position the consumer must pass first), or
 * the ring's -EPROTO. Consumer: bulk_map() maps the peer's
 * arena (closes fd; -EPROTO if it is not one, or a second one);
 * bulk_len() / bulk_deliver() read the pending BULK record (-EPROTO,
 * -EMSGSIZE; deliver consumes it). bulk_free(): both sides, at destroy.
 */
int cmesh__lane_make_ool(const void *trail, size_t len);
bool cmesh__lane_bulk_fits(size_t len);
int cmesh__lane_bulk_arena_fd(struct cmesh__lane *ln);
void cmesh__lane_bulk_arena_sent(struct cmesh__lane *ln, bool sent);
bool cmesh__lane_bulk_ready(const struct cmesh__lane *ln);
int cmesh__lane_bulk_publish(struct cmesh__lane *ln, const void *msg,
			     const void *trail, size_t len, uint64_t *space_at);
int cmesh__lane_bulk_map(struct cmesh__lane *ln, int fd);
int cmesh__lane_bulk_len(struct cmesh__lane *ln);
int cmesh__lane_bulk_deliver(struct cmesh__lane *ln, void *out_msg,
			     void *out_trail, size_t cap);
void cmesh__lane_bulk_free(struct cmesh__lane *ln);

/*
 * Out lane: see cmesh_sender_send(); takes the message's resources.
 * A message may not hold endpoints: they cross as ports (port.c).
 */
int cmesh__lane_send(struct cmesh__lane *ln, const void *msg, const void *trail,
		     size_t len);

/*
 * Out lane: the most trailing bytes a message without fds or endpoints
 * carries inside one ring record; longer ones go out of line, in a memfd
 * of their own per message. 0 if none fit.
 */
uint32_t cmesh__lane_trail_inline_max(const struct cmesh__lane *ln);

/*
 * Out lane: cmesh_sender_try_send(): -EAGAIN (nothing taken) when the
 * message cannot go into the ring at once (full, or a backlog waits).
 */
int cmesh__lane_try_send(struct cmesh__lane *ln, const void *msg,
			 const void *trail, size_t len);

/*
 * Ports that will not be sent: their fds closed, their lanes dropped (a
 * FAILED port has neither), as lost to a failure when `failed`
 * (cmesh__lane_set_dropped()).
 */
void cmesh__lane_unsend_ports(const struct cmesh__port_out *ports, uint32_t n,
			      bool failed);

/*
 * Out lane: sends a message whose endpoint fields are NULL (`msg`, a
 * copy) with the ports made for them (`ports`, `nports`, bit i of
 * `port_mask`: field i). Takes the message's fds and the ports' fds in
 * every case; a port whose message is not sent (a failure now, or a
 * backlog dropped later) has its lane dropped.
 */
int cmesh__lane_send_ports(struct cmesh__lane *ln, const void *msg,
			   const void *trail, size_t len,
			   const struct cmesh__port_out *ports, uint32_t nports,
			   uint64_t port_mask);

/* Out lane: 1 if the receiver is gone, 0, or the link's failure. */
int cmesh__lane_rx_gone(const struct cmesh__lane *ln);

/* Out lane: its spill backlog's bytes, and its bound (max_backlog). */
void cmesh__lane_backlog(const struct cmesh__lane *ln, uint64_t *used,
			 uint64_t *max);

/* Out lane: the last local sender is gone (CLOSE record, after data). */
void cmesh__lane_close_tx(struct cmesh__lane *ln);

/*
 * Out lane: mark_new() gives out a mark for a sender of it sent on while
 * others still write it (never 0); mark_tx() writes its MARK record once
 * that sender's forwarder ends, after everything it forwarded (nothing
 * if the lane was sealed or failed: its end follows, which is later).
 */
uint32_t cmesh__lane_mark_new(struct cmesh__lane *ln);
void cmesh__lane_mark_tx(struct cmesh__lane *ln, uint32_t mark);

/*
 * Out lane of a receiver sent on through a forwarder: its HINTS record
 * (shm/proto.h), before any MARK it names. 0, or why not (-ESTALE sealed,
 * -ECONNRESET failed, -ENOMEM): then nobody is told, and the senders it
 * names stay forwarded.
 */
int cmesh__lane_hints_tx(struct cmesh__lane *ln, const struct cmesh_rec_hint *h,
			 uint32_t n);

/*
 * In lane: a receive or peek took a MARK record (its mark in mark_seen,
 * which the caller clears once it acted on it, queue_port.c) or a HINTS
 * record (in hints, nhints: the caller frees them once it acted), or one
 * taken before (by cmesh__lane_ready(), which takes either at the head)
 * is still there: the caller acts on it and looks again.
 */
#define CMESH__LANE_MARK (-ERESTART)

/* Default ring of a oneshot's lane: one message (larger trails go OOL). */
#define CMESH__LANE_ONESHOT_RING 4096u

/*
 * The ring of a port's lane for an endpoint of type `t` (a oneshot's, or
 * a channel's with the environment's `ring_size`), doubled until a record
 * holds the message struct. 0 with *out, or -EMSGSIZE.
 */
static inline int cmesh__lane_ring_cap(const cmesh_type *t, bool oneshot,
				       uint64_t ring_size, uint32_t *out)
{
	uint64_t cap = oneshot ? CMESH__LANE_ONESHOT_RING : ring_size;

	if (cap < CMESH_SHM_RING_MIN_CAP)
		cap = CMESH_SHM_RING_MIN_CAP;
	if (cap > CMESH_SHM_RING_MAX_CAP)
		cap = CMESH_SHM_RING_MAX_CAP;
	while (cmesh_shm_ring_rec_limit(cap) <
	       sizeof(struct cmesh_rec_msg) + t->size) {
		if (cap >= CMESH_SHM_RING_MAX_CAP)
			return -EMSGSIZE;
		cap *= 2;
	}
	*out = (uint32_t)cap;
	return 0;
}

/* In lane: a MARK or HINTS record taken, not yet acted on. */
static inline bool cmesh__lane_control(const struct cmesh__lane *ln)
{
	return ln->mark_seen || ln->nhints;
}

/*
 * The same, but the consumer sees the channel failed (-ECONNRESET) after
 * what was sent: a forwarder whose source failed.
 */
void cmesh__lane_fail_tx(struct cmesh__lane *ln);

/* What a backlog that is left waits for. */
enum cmesh__spill_wait {
	CMESH__SPILL_DONE,  /* nothing is left */
	CMESH__SPILL_SPACE, /* the consumer's SPACE (it was asked), a binding */
	CMESH__SPILL_SOCK   /* the control socket to poll writable */
};

/*
 * Out lane: moves spilled messages into the ring; when it is full, asks
 * the consumer for a SPACE message (shm/ring.h, signal line).
 */
enum cmesh__spill_wait cmesh__lane_flush_spill(struct cmesh__lane *ln);

/* Out lane, link thread, the link failed: frees the backlog, closes fds. */
void cmesh__lane_drop_spill(struct cmesh__lane *ln);

/*
 * Out lane: returns once nothing is left in the backlog (everything sent
 * is in the ring, where the peer reads it even after we exit), polling
 * every 100 us while the ring is full. 0, -ETIMEDOUT at `deadline`, the
 * link's failure, or -EPIPE (the receiver is gone: nothing will be read).
 */
int cmesh__lane_flush(struct cmesh__lane *ln, int64_t deadline);

/*
 * In lane: receive once; as cmesh_receiver_try_recv(), plus failures. The
 * message's ports go to *pin (pin->lane is set); NULL drops them.
 */
int cmesh__lane_try_recv(struct cmesh__lane *ln, void *out_msg, void *out_trail,
			 size_t cap, struct cmesh__ports_in *pin);
int cmesh__lane_peek(struct cmesh__lane *ln);

/* In lane: something to report (a record, close or failure)? */
bool cmesh__lane_ready(struct cmesh__lane *ln);

/* ---- lanes that endpoints create (lane_shm.c) ---- */

/*
 * A lane for a port (not bound yet: an out lane spills, an in lane has
 * nothing to read). The caller registers it with the link.
 */
int cmesh__lane_new(struct cmesh__link *link, uint32_t id, bool is_out,
		    const cmesh_type *type, uint64_t max_trail,
		    uint64_t max_backlog, int64_t spin_ns,
		    struct cmesh__lane **out);

/*
 * A lane for a port that arrived FAILED: on no link's table, unbound for
 * good, every operation on it reports -ECONNRESET. Its queue frees it.
 */
int cmesh__lane_new_failed(struct cmesh__link *link, bool is_out,
			   const cmesh_type *type, struct cmesh__lane **out);

/* Frees a lane from cmesh__lane_new() (the link's table does). */
void cmesh__lane_free(struct cmesh__lane *ln);

/*
 * Creates our half: an out lane's ring of `ring_cap` bytes and signal
 * line, or an in lane's head and wake lines. Its memfd goes to the caller
 * in *out_fd (to send; the mapping stays the lane's).
 */
int cmesh__lane_own_half(struct cmesh__lane *ln, uint32_t ring_cap,
			 int *out_fd);

/*
 * Maps the peer's half (`fd`, untrusted: `size` bytes announced, an in
 * lane's ring of `ring_cap` bytes) and makes the ring usable. Takes `fd`
 * in every case. -EPROTO for a bad arena or a lane bound already, else
 * -errno.
 */
int cmesh__lane_bind(struct cmesh__lane *ln, int fd, uint64_t size,
		     uint32_t ring_cap);

/* The ring is usable (both halves mapped). */
static inline bool cmesh__lane_bound(const struct cmesh__lane *ln)
{
	return atomic_load_explicit(&ln->bound, memory_order_acquire);
}

/*
 * The peer will never use this lane (it dropped the endpoint, or the
 * message carrying it was never delivered): an out lane reports the
 * receiver gone (-EPIPE; -ECONNRESET when `failed`: lost to a failure,
 * once its link is bound its consumer's word says), an in lane its
 * sender gone (its receive says -EPIPE once it is empty; -ECONNRESET,
 * which fails the receiver, when `failed`). Lost to a failure once, it
 * stays so.
 */
void cmesh__lane_set_dropped(struct cmesh__lane *ln, bool failed);

/* cmesh__lane_set_dropped()'s bits in `dropped`. */
#define LANE_DROPPED 1u
#define LANE_DROP_FAILED 2u

/*
 * In lane: what its receive says once it is empty: 0 (not dropped),
 * -EPIPE, or -ECONNRESET (lost to a failure). Acquire: pairs with the
 * store in cmesh__lane_set_dropped().
 */
static inline int cmesh__lane_dropped_err(const struct cmesh__lane *ln)
{
	uint8_t d = atomic_load_explicit(&ln->dropped, memory_order_acquire);

	return !d ? 0 : (d & LANE_DROP_FAILED) ? -ECONNRESET : -EPIPE;
}

/* ---- a pooled lane's uses (lane.c: out lanes; lane_rx_close.c: in) ---- */

/*
 * A pooled lane's next use (the link's lock held by the caller). In lane
 * (rx_reuse): steps over what the last use left unread (to idle_tail) and
 * opens the ring again: 0, or -EPROTO (a bad tail: not reused). Out lane
 * (tx_reuse): takes on the type of its new endpoint (the same wire type).
 */
int cmesh__lane_rx_reuse(struct cmesh__lane *ln, uint64_t tail);
void cmesh__lane_tx_reuse(struct cmesh__lane *ln, const cmesh_type *type);

/*
 * In lane, pooled, its receiver gone (the link's lock held): whether the
 * producer is idle because its use ended with a LAST record, taken or not
 * (one its receiver left unread at the head is taken now).
 */
bool cmesh__lane_rx_last_seen(struct cmesh__lane *ln);

/*
 * A pooled lane's producer is done with this use (every record of it in
 * the ring): says so in its signal line (shm/ring.h idle_use).
 */
void cmesh__lane_tx_idle(struct cmesh__lane *ln);

/* ---- sleeping and waking (lane_wake.c) ---- */

/*
 * In lane: the object the receiver sleeps in where futex_waitv is
 * missing, watching our wake socket and private eventfd through the wake
 * backend that CMESH_WAKE selects (io_uring, else epoll). 0 or -errno.
 */
int cmesh__lane_sleeper_init(struct cmesh__lane *ln);

/*
 * In lane: announce that we sleep (CMESH_SHM_WAKE_FUTEX: the peer then
 * wakes the futex of its signal line; CMESH_SHM_WAKE_POLL where the
 * kernel has no futex_waitv: it sends on our wake socket), check again,
 * sleep until a wake or `deadline` (or a nap's end, while a claim is in
 * flight). -ETIMEDOUT or 0.
 */
int cmesh__lane_sleep(struct cmesh__lane *ln, int64_t deadline);

/*
 * In lane: when its producer last woke us (its signal line's `woke_at`,
 * read once, unchecked: a hint for the adaptive spin), 0 if unknown.
 */
int64_t cmesh__lane_woke_at(const struct cmesh__lane *ln);

/*
 * In lane, its consumer, after the seq_cst fence of a sleeping or armed
 * bit: answers a space request the producer made (shm/ring.h space_at),
 * the fenced half of that Dekker (lane_rx.c space_check()).
 */
void cmesh__lane_space_look(struct cmesh__lane *ln);

/*
 * In lane, after its sleeping bit is set (the wake Dekker, lane_wake.c):
 * true if a producer claimed our head position and has not published it
 * (it may owe us no wake): the caller looks again soon instead of
 * sleeping for good. A corrupt tail fails the ring (and answers true: the
 * receive finds -EPROTO and fails the link, as for any corrupt record).
 */
bool cmesh__lane_in_flight(struct cmesh__lane *ln);

/*
 * In lane of a receiver that waits on several sources at once
 * (queue_port_wait.c builds the futex_waitv): sets (on) or clears its
 * FUTEX sleeping bit, then a seq_cst fence; the caller then checks again
 * and sleeps on the peer's signal word and self_wakes.
 */
void cmesh__lane_mark_sleep(struct cmesh__lane *ln, bool on);

/* True where receivers cannot sleep in futex_waitv (forced or absent). */
bool cmesh__lane_polling(void);

/*
 * Tests: every receiver of this process (and of children forked later)
 * sleeps as where the kernel has no futex_waitv (on), or as it can (off).
 */
void cmesh__lane_force_polling(bool on);

/*
 * In lane, spinning: the word a publication changes and, in *want, what it
 * then holds (compare with cmesh__lane_spin_match()), polled without a
 * call. A match is a hint (the receive validates what it finds); then call
 * cmesh__lane_spin_hit(). NULL
 * when there is nothing to poll (not attached yet, a record pending, the
 * ring failed): cmesh__lane_ready() tells what there is.
 */
static inline const _Atomic uint64_t *
cmesh__lane_spin_word(const struct cmesh__lane *ln, uint64_t *want)
{
	if (ln->pending >= 0 || (ln->dynamic && !cmesh__lane_bound(ln)))
		return NULL;
	return cmesh__shmring_head_word(&ln->cons, want);
}

/* In lane: 1 if `v`, loaded from the spin word, matches `want`. */
static inline bool cmesh__lane_spin_match(uint64_t v, uint64_t want)
{
	return cmesh__shmring_word_match(v, want);
}

/* In lane: the polled word matched; fetch the rest of the record early. */
static inline void cmesh__lane_spin_hit(const struct cmesh__lane *ln)
{
	cmesh__shmring_prefetch_next(&ln->cons);
}

/* The link's failure, without a call: on every send and receive. */
static inline int cmesh__lane_failed(const struct cmesh__lane *ln)
{
	return atomic_load_explicit(ln->failed, memory_order_acquire);
}

/*
 * Out lane: the consumer's `closed` word as a send's error: 0, -EPIPE, or
 * -ECONNRESET when it failed (a forwarder whose receiver's process died).
 * Acquire: pairs with the consumer's store.
 */
static inline int cmesh__lane_peer_closed(const struct cmesh__lane *ln)
{
	uint32_t c = atomic_load_explicit(&ln->peer_wake->closed,
					  memory_order_acquire);

	return !c ? 0 : c == CMESH_SHM_CLOSED_FAILED ? -ECONNRESET : -EPIPE;
}

/*
 * Out lane: what a send on it says now: 0; the consumer's word first (a
 * close seen is a close: -EPIPE; failed: -ECONNRESET), then the link's
 * failure, then our own FAIL that ended it (tx_failed: -ECONNRESET).
 */
static inline int cmesh__lane_tx_err(const struct cmesh__lane *ln)
{
	int r = cmesh__lane_peer_closed(ln);

	if (!r)
		r = cmesh__lane_failed(ln);
	if (!r && atomic_load_explicit(&ln->tx_failed, memory_order_relaxed))
		r = -ECONNRESET;
	return r;
}

/*
 * Out lane: whether what it could not deliver was lost to a failure (its
 * receiver failed, its link did, or our side failed it) rather than to
 * its receiver's close.
 */
static inline bool cmesh__lane_lost_to_failure(const struct cmesh__lane *ln)
{
	int r = cmesh__lane_tx_err(ln);

	return r && r != -EPIPE;
}

/*
 * Out lane (lane.c): seals it (its receiver came home or was claimed,
 * queue_move.c): every send that has not claimed its record by then
 * returns -ESTALE, taking nothing, and its caller sends again where its
 * queue now says; then the end (CLOSE) follows everything sent before,
 * backlog included. Once.
 */
void cmesh__lane_seal_tx(struct cmesh__lane *ln);

/* Out lane: 1 once sealed. */
static inline bool cmesh__lane_sealed(const struct cmesh__lane *ln)
{
	return cmesh__shmring_sealed(&ln->prod);
}

/* Out lane: wakes the consumer as its wake line's `how` says; never blocks. */
void cmesh__lane_signal_slow(struct cmesh__lane *ln, uint32_t how);

/*
 * Out lane, after a publish: signal the consumer if it said it sleeps.
 * Only after this thread's claim of the record (its seq_cst CAS on the
 * tail): the Dekker with the consumer's sleep (lane_wake.c) needs no fence
 * here.
 */
static inline void cmesh__lane_signal(struct cmesh__lane *ln)
{
	uint32_t how = atomic_load_explicit(&ln->peer_wake->sleeping,
					    memory_order_seq_cst);

	if (how)
		cmesh__lane_signal_slow(ln, how);
}

/*
 * Out lane: the kind of a message record without fds or ports: PLAIN, or
 * LAST on a kept reply lane, whose one message ends its use (shm/proto.h).
 * `poolable` changes only while the lane is idle (no sender uses it).
 */
static inline uint32_t cmesh__lane_plain_kind(const struct cmesh__lane *ln)
{
	return ln->poolable ? CMESH_REC_LAST : CMESH_REC_PLAIN;
}

/*
 * Out lane: cmesh__lane_send() with its common case inline, so that the
 * send of a small message makes no call: a type without fd or endpoint
 * fields (`small`), no trailing bytes, the link healthy, the receiver
 * there, no backlog queued, room at once. It pushes the same PLAIN (or
 * LAST) record cmesh__lane_send() would, under the same contract
 * (lane.c): the link refuses a type whose MSG header and struct exceed
 * the ring's record limit, so cmesh__lane_send() too sends such a message
 * as PLAIN. Anything else goes to cmesh__lane_send().
 */
static inline int cmesh__lane_send_inline(struct cmesh__lane *ln,
					  const void *msg, const void *trail,
					  size_t len)
{
	if (likely(len == 0 && ln->small) && likely(!cmesh__lane_failed(ln)) &&
	    likely(!atomic_load_explicit(&ln->tx_failed,
					 memory_order_relaxed)) &&
	    /* Pairs with the consumer's release store of closed. */
	    likely(!atomic_load_explicit(&ln->peer_wake->closed,
					 memory_order_acquire)) &&
	    /* Pairs with the release store in cmesh__lane_flush_locked(). */
	    likely(!atomic_load_explicit(&ln->spilling,
					 memory_order_acquire))) {
		/* Before the LAST record can be seen (its comment, above). */
		if (unlikely(ln->poolable))
			atomic_store_explicit(&ln->last_sent, true,
					      memory_order_relaxed);
		if (likely(cmesh__shmring_push_small(&ln->prod,
						     cmesh__lane_plain_kind(ln),
						     msg, ln->small) == 0)) {
			cmesh__lane_signal(ln);
			return 0;
		}
		if (unlikely(ln->poolable))
			atomic_store_explicit(&ln->last_sent, false,
					      memory_order_relaxed);
	}
	return cmesh__lane_send(ln, msg, trail, len);
}

/*
 * In lane, waitsets: set or clear the sleeping flag (the peer then sends
 * on our wake socket). Clearing with `drain` also drains both wake fds,
 * without ever blocking (only we hold them); a waitset that knows which
 * are readable drains those itself. Setting it returns
 * cmesh__lane_in_flight(): the waitset then naps, not sleeps for good.
 */
bool cmesh__lane_arm(struct cmesh__lane *ln, bool on, bool drain);

/*
 * In lane, a waitset sleeping in futex_waitv (waitset_wait.c): sets or clears
 * its WSFUTEX sleeping bit (the producer then wakes the signal word, as
 * for a sleeping receiver); setting returns cmesh__lane_in_flight().
 */
bool cmesh__lane_arm_futex(struct cmesh__lane *ln, bool on);

/*
 * In lane: the words a wake of it changes (its producer's signal word,
 * once bound, and self_wakes), with their values now, into w (at most
 * 2): their count. Load them before setting a sleeping bit.
 */
struct cmesh__park_word;
uint32_t cmesh__lane_wait_words(struct cmesh__lane *ln,
				struct cmesh__park_word *w);

/* In lane, waitsets: the fds that poll readable on a wake: 2 of them. */
int cmesh__lane_wake_fds(const struct cmesh__lane *ln, int out[2]);

/* In lane, link thread: a failure or an attachment: wake the receiver. */
void cmesh__lane_wake(struct cmesh__lane *ln);

/* ---- a receiver's end (lane_rx_close.c) ---- */

/*
 * In lane: the receiver is gone; drop what is queued (answering the REUSE
 * ports of the records claimed before), tell the peer.
 */
void cmesh__lane_close_rx(struct cmesh__lane *ln);

/* The same, telling the producer it failed (-ECONNRESET to its sends). */
void cmesh__lane_fail_rx(struct cmesh__lane *ln);

/*
 * Link thread, on a released in lane whose close left a drain owed (a
 * record claimed before the close not yet written): takes what is written
 * now. True once nothing more is owed (all taken, or the lane failed).
 */
bool cmesh__lane_drain_more(struct cmesh__lane *ln);

#endif
