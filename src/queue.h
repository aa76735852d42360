/* SPDX-License-Identifier: MIT */
/*
 * queue.h - the in-process channel queue: a bounded lock-free MPSC ring of
 * fixed-size slots, an ordered overflow list behind it, and the receiver's
 * sleep/wake word. Both channels and oneshots are built on it.
 */
#ifndef CMESH_QUEUE_H
#define CMESH_QUEUE_H

#include <cmesh/channel.h>
#include <cmesh/type.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cmesh__queue;
struct cmesh__lane;
struct cmesh__link;
struct cmesh_waitset;

struct cmesh__queue_opts {
	uint64_t ring_bytes;  /* slots' bytes, power of two */
	int64_t spin_ns;      /* receiver spin before sleeping, <= 0: none;
				 CMESH_SPIN_ADAPTIVE: learnt (queue_recv.c) */
	uint64_t max_trail;   /* largest trailing bytes */
	uint64_t max_backlog; /* overflow bytes before -ENOBUFS; 0: none */
	uint32_t nsenders;    /* initial sender count */
	bool oneshot;	      /* its first sender handle is spare_tx */
	/*
	 * The other end is in a peer process (at most one is set): sends go
	 * out through tx_lane, or receives come in through rx_lane. The
	 * queue then holds one reference (its local side) and its creator
	 * gives it one on the lane's link, dropped when it is freed.
	 */
	struct cmesh__lane *tx_lane;
	struct cmesh__lane *rx_lane;
};

/*
 * Creates a queue with one receiver reference and `nsenders` sender
 * references. `type` must be valid (cmesh_type_check) and outlive it.
 */
int cmesh__queue_new(const cmesh_type *type,
		     const struct cmesh__queue_opts *opts,
		     struct cmesh__queue **out);

/* Frees a queue that was never handed out (no handles, no messages). */
void cmesh__queue_discard(struct cmesh__queue *q);

/*
 * The first member of every queue: what handles read on each send, so
 * they can read it without a call. Set at creation, read-only afterwards
 * (but `fp`, set once by cmesh__queue_fingerprint()).
 */
struct cmesh__queue_head {
	const cmesh_type *type;
	_Atomic uint64_t fp; /* the type's fingerprint, once asked; 0 before */
	bool has_ports;	     /* the type has endpoint fields (port.c) */
	/*
	 * A oneshot's sender handle lives here (it holds this queue: it is
	 * a handle's bytes), so a oneshot costs one handle allocation, not
	 * two, and a sender freed in another thread frees no memory there.
	 * Used by one sender at a time: a oneshot has one, and a re-armed one
	 * (cmesh__queue_rearm()) gets it only after the last let go.
	 */
	struct cmesh__queue *spare_tx;
};

static inline const cmesh_type *cmesh__queue_type(const struct cmesh__queue *q)
{
	return ((const struct cmesh__queue_head *)(const void *)q)->type;
}

/*
 * The type's fingerprint, computed at the first call (XXH3 over the whole
 * descriptor: not worth it for a oneshot that never leaves its process).
 */
uint64_t cmesh__queue_fingerprint(struct cmesh__queue *q);

/* The handle that lives in `q` (spare_tx above). */
static inline void *cmesh__queue_spare_tx(struct cmesh__queue *q)
{
	return &((struct cmesh__queue_head *)(void *)q)->spare_tx;
}

/*
 * Whether handle `h` on `q` is its spare_tx, which is freed with the
 * queue, not by itself. Address arithmetic only: callers ask before they
 * drop the handle's reference, which may free the queue.
 */
static inline bool cmesh__queue_is_spare(struct cmesh__queue *q, const void *h)
{
	return h == cmesh__queue_spare_tx(q);
}

/* Messages of the queue's type may carry endpoints: see port.h. */
static inline bool cmesh__queue_has_ports(const struct cmesh__queue *q)
{
	return ((const struct cmesh__queue_head *)(const void *)q)->has_ports;
}

/* Another sender reference; the caller already holds one. */
void cmesh__queue_sender_get(struct cmesh__queue *q);

/* Drops a sender reference; the last one closes the sending side. */
void cmesh__queue_sender_put(struct cmesh__queue *q);

/* A sender reference more, unless none is left (then the end is sent). */
bool cmesh__queue_sender_tryget(struct cmesh__queue *q);

/*
 * Closes the receiving side: later sends fail with -EPIPE, queued
 * messages' resources are released, the queue leaves its waitset, and
 * the receiver's reference is dropped.
 */
void cmesh__queue_receiver_close(struct cmesh__queue *q);

/*
 * As cmesh__queue_sender_put(), but the channel failed: when the last
 * sender is gone the receiver gets -ECONNRESET after what was sent (a
 * forwarder whose source failed, bridge.c).
 */
void cmesh__queue_sender_fail(struct cmesh__queue *q);

/*
 * As cmesh__queue_receiver_close(), but the senders get -ECONNRESET, not
 * -EPIPE (a forwarder whose destination failed).
 */
void cmesh__queue_receiver_fail(struct cmesh__queue *q);

/*
 * Receiver: no sender will publish again (a oneshot's value was taken),
 * though some may not have let go yet: the close needs no heavy fence.
 */
void cmesh__queue_senders_done(struct cmesh__queue *q);
/* Receiver: senders_done() was said (reset when the queue is re-armed). */
bool cmesh__queue_senders_are_done(const struct cmesh__queue *q);

/*
 * Frees the queues this thread kept for reuse (queue_reuse.c: destroyed
 * queues with small rings, whose memory the thread's next queues take).
 */
void cmesh__queue_cache_trim(void);

/*
 * A oneshot's receiver whose queue never took a lane: it and its sender
 * are in this process, and always were. A queue that moved or holds a
 * lane is never re-armed (its lanes hold their link).
 */
bool cmesh__queue_local_oneshot(struct cmesh__queue *q);

/*
 * Receiver of a oneshot (queue_reuse.c), never in a waitset (its holder
 * never exposed it): if its value was taken and its sender is gone (the
 * receiver's holder is the queue's only user), makes
 * it a fresh oneshot again (one sender reference to give out, the
 * receiver's kept) and returns true; else changes nothing (false).
 */
bool cmesh__queue_rearm(struct cmesh__queue *q);

/*
 * Kept rpc calls across processes (queue_reuse.c). A oneshot's receiver
 * whose value came through a kept reply lane that ended that use (a LAST
 * record), with nothing else in the queue and no other user, keeps the
 * lane: _reply_link() says on which link (0), that its link failed or the
 * peer dropped it (-ECONNRESET: free it), or that it holds no such lane
 * (-ENOENT). _rearm_lane() is cmesh__queue_rearm() for such a queue: one
 * sender reference to give out, whose export (the same thread, before
 * anything else) takes the lane back with _rebind().
 */
int cmesh__queue_reply_link(struct cmesh__queue *q, struct cmesh__link **out);

/*
 * Receiver (its thread): from now on a lane of `q` that goes leaves its
 * link reference with `q` until `q` goes (an rpc call kept with its reply
 * lane hooks that link, rpc.c: the link must outlive the hook, which the
 * call takes off before it frees its receiver).
 */
void cmesh__queue_hold_link(struct cmesh__queue *q);
bool cmesh__queue_rearm_lane(struct cmesh__queue *q);
struct cmesh__lane *cmesh__queue_rebind(struct cmesh__queue *q);

/*
 * Parked reply ports (queue_reuse.c). _park(): the last put of an
 * imported reply port's queue whose use ended with its LAST keeps it for
 * this thread under its lane's `serial` (false: destroy it). _unpark():
 * that queue for the next use of lane `ln` imported by this thread, with
 * one sender (its spare handle) and the reference the import gives out;
 * NULL if this thread parked none for `ln` and `type`.
 */
bool cmesh__queue_park(struct cmesh__queue *q, uint64_t serial);
struct cmesh__queue *cmesh__queue_unpark(struct cmesh__lane *ln,
					 const cmesh_type *type);

/* The link a message sent on `q` takes (its receiver's), or NULL. */
struct cmesh__link *cmesh__queue_tx_link(struct cmesh__queue *q);

/*
 * A hint: fetches, for writing, the line of `state`, `nsenders` and
 * `refs`: cmesh__queue_rearm() writes it, and a oneshot's sender, right
 * after its publish, loads it and then releases itself there with RMWs.
 * A shared copy would cost those a second transfer (the upgrade); fetched
 * early, the transfer overlaps the caller's wait or the sender's claim.
 */
void cmesh__queue_prefetch_state(struct cmesh__queue *q);

/* See cmesh_sender_send(): takes the message's resources in every case. */
int cmesh__queue_send(struct cmesh__queue *q, const void *msg,
		      const void *trail, size_t trail_len);

/*
 * Receives like cmesh_receiver_recv_deadline(); `deadline` 0 or in the
 * past means try once (-EAGAIN when nothing is ready), CMESH_DEADLINE_NONE
 * means no limit. Consumer side: one thread at a time.
 */
int cmesh__queue_recv(struct cmesh__queue *q, int64_t deadline, void *out_msg,
		      void *out_trail, size_t trail_cap);

struct cmesh__ports_in;

/*
 * cmesh__queue_recv() for a type with endpoint fields: ports that arrive
 * with a message from another process go to *pin (pin->n of them, which
 * the caller sets to 0 first) for the caller to make endpoints of.
 */
int cmesh__queue_recv_ports(struct cmesh__queue *q, int64_t deadline,
			    void *out_msg, void *out_trail, size_t cap,
			    struct cmesh__ports_in *pin);

/*
 * The receiver may be remote: its lane (acquire), or NULL. Sends with
 * endpoints take it through port.c. A send of such a message into the
 * local queue returns -EXDEV when the receiver moved meanwhile (nothing
 * is taken): look again. Used only between cmesh__queue_tx_enter() (or
 * _hold()) and cmesh__queue_tx_leave(): a lane the receiver left behind
 * may be put then (a channel whose receiver left many: queue_claim.c).
 */
struct cmesh__lane *cmesh__queue_tx_lane(struct cmesh__queue *q);
/* The same, for a use that ends with cmesh__queue_tx_leave(q, *in). */
struct cmesh__lane *cmesh__queue_tx_enter(struct cmesh__queue *q, bool *in);
/* A use of cmesh__queue_tx_lane() begins; ends with _tx_leave(q, true). */
void cmesh__queue_tx_hold(struct cmesh__queue *q);
/*
 * Ends a use; may put lanes left behind (and their links' references):
 * with no lock held. _quiet: leaves that to a later leave (or retire),
 * for a use under other locks.
 */
void cmesh__queue_tx_leave(struct cmesh__queue *q, bool in);
void cmesh__queue_tx_leave_quiet(struct cmesh__queue *q, bool in);

/*
 * The receiver of `q` (held by the caller) moves to another process over
 * `ln`, a port's out lane: the ring is sealed, every queued message is
 * passed, in order, to forward() (which sends it on `ln` and takes its
 * resources), later sends go to `ln`, and the receiver's reference is
 * dropped. The caller has taken a reference on ln's link for the queue.
 * With `home` (a channel's receiver), `q` stays the lane's home: the
 * receiver may come back to it (cmesh__queue_come_home()).
 * -EOPNOTSUPP: the receiver has lanes of its own (its senders are in
 * other processes) or is remote itself.
 */
int cmesh__queue_move_rx(struct cmesh__queue *q, struct cmesh__lane *ln,
			 int (*forward)(void *ctx, struct cmesh__lane *ln,
					void *msg, void *trail, size_t len),
			 void *ctx, bool home);

/*
 * The same for a receiver whose senders are here and in other processes
 * (lanes): what the local tier holds goes to `ln` and the local senders
 * write `ln` from now on, while the lanes stay, read through the
 * receiver's handle, which keeps the receiving side's reference, by a
 * forwarder (port.c, bridge.c) that sends what they bring on `ln` too,
 * through a sender of `q`, until they have all ended
 * (cmesh__queue_lanes_done()), then cmesh__queue_split_end(). No home
 * until then. -EOPNOTSUPP: remote itself, or a sender that came home
 * waits in the local tier behind a lane.
 */
int cmesh__queue_move_rx_split(struct cmesh__queue *q, struct cmesh__lane *ln,
			       int (*forward)(void *ctx, struct cmesh__lane *ln,
					      void *msg, void *trail,
					      size_t len),
			       void *ctx);

/* Split: every lane of `q` ended (none is added after the split). */
bool cmesh__queue_lanes_done(struct cmesh__queue *q);

/*
 * Split, the forwarder's end with the lanes done: the receiving side's
 * reference goes (the lane is the receiver), which may now come home.
 * The caller frees the handle's shell, after it left its waitset.
 */
void cmesh__queue_split_end(struct cmesh__queue *q);

/*
 * Split, a lane failed (its sender's process died): the receiver's lane
 * fails at once, whatever local senders still write (they see it).
 */
void cmesh__queue_fail_out(struct cmesh__queue *q);

/*
 * The receiver comes home (sent by port.c, taken back by port_home.c;
 * shm/proto.h CMESH_PORT_F_HOME).
 * sole_lane: for a receiver about to leave, the lane its senders all
 * write, if there is one: the only lane it reads, or the lane it claimed
 * and reads once the one it was made with ends (no local sender, no other
 * lane, no waitset). If it goes back over that lane's link, the peer may
 * take the receiver back into its senders' queue; elsewhere, it may claim
 * them (the lane's token); else NULL. Consumer side.
 * tryget: a reference on `home` (a queue) if it has any left (a lane's
 * home, cmesh__link_lane_home_take()); unget drops it.
 * come_home: `q` (held by the caller, for the receiver it becomes) is
 * the queue whose receiver left over its out lane `home`, and `fwd` the
 * lane that brings that receiver's stream back: `fwd` is read to its end
 * (everything sent before, forwarded by the peer), then the local tier,
 * where every send goes from now on; `home` is sealed and ended (a send
 * inside it then sends again, here) and kept until `q` goes, or put once
 * no send is inside it (queue_claim.c). 0, or -EOPNOTSUPP (nothing done):
 * `q` is not waiting for it any more (its senders are gone, it came back
 * once already, or `home`, of serial `serial`, was claimed since), -ENOMEM.
 */
struct cmesh__lane *cmesh__queue_sole_lane(struct cmesh__queue *q);
bool cmesh__queue_tryget(void *home);
void cmesh__queue_unget(void *home);
int cmesh__queue_come_home(struct cmesh__queue *q, struct cmesh__lane *home,
			   uint64_t serial, struct cmesh__lane *fwd);

/*
 * Claims (link_claim.c). redirect: the receiver of `q` (a home, held by
 * the caller), remote over out lane `from`, claimed its senders over new
 * out lane `to`: every later send goes to `to`; `from` is sealed and
 * ended (a send inside it sends again), kept until `q` goes or put once
 * no send is inside it (queue_claim.c), and `to` is the home now. 0, or
 * -EOPNOTSUPP (nothing done): `from` (of serial `serial`) is not its
 * lane any more (the receiver came home, or it was claimed since), or
 * its senders are all gone.
 * await: the receiver of `q` (an imported one, reading its rx_lane)
 * claimed its senders over in lane `ln`: `ln` is read once rx_lane has
 * ended (what was sent before the claim), with a sender reference of its
 * own. The caller's reference on ln's link goes to the queue.
 */
int cmesh__queue_redirect(struct cmesh__queue *q, struct cmesh__lane *from,
			  uint64_t serial, struct cmesh__lane *to);
int cmesh__queue_await(struct cmesh__queue *q, struct cmesh__lane *ln);

/*
 * A receiver made with its lane (`rx_lane`, whose token the caller set):
 * that lane takes a sender reference and `q` becomes its home, so that a
 * sender of it sent on may claim it (cmesh__queue_admit(), after that
 * lane). Before the receiver is handed out. 0, or -EINVAL (no lane).
 */
int cmesh__queue_claimable_rx(struct cmesh__queue *q);

/*
 * The receiver cmesh__queue_sole_lane() named a lane for (or
 * cmesh__queue_sources() lanes) did not go after all (its export failed):
 * claims may add lanes to it again.
 */
void cmesh__queue_claims_reopen(struct cmesh__queue *q);

/*
 * A receiver about to go on through a forwarder: up to `max` of the lanes
 * its senders in other processes write (dynamic in lanes, bound, each
 * with the token their process gave in its LANE answer, none behind
 * another nor with a claimed lane behind it; the lane it was made
 * with first, if still read), into `out`.
 * The rest of its sources (senders here) stay forwarded. Its forwarder
 * hears of each lane's end (cmesh__queue_on_lane_end()), that lane's
 * too. From then on no claim adds a lane
 * (as cmesh__queue_sole_lane()). Consumer side (the receiver's holder).
 */
uint32_t cmesh__queue_sources(struct cmesh__queue *q, struct cmesh__lane **out,
			      uint32_t max);

/*
 * Consumer side, before the consumer that reads on (a forwarder) starts:
 * fn(ctx, serial) runs on the consumer when a lane of `q` has been read to
 * its end, before anything after it is received (NULL: none).
 */
void cmesh__queue_on_lane_end(struct cmesh__queue *q,
			      void (*fn)(void *ctx, uint64_t serial),
			      void *ctx);

/*
 * Claims of senders (link_claim.c), and senders sent away (after 0).
 * admit: the receiver of `q` gets in lane `ln`, a port's in lane, which
 * holds a sender reference and a reference on its link from then on (in
 * a waitset too: cmesh__queue_lanes_gen()), read once its lane of serial
 * `after` (0: none) has ended, or (`mark` not 0) passed that MARK record,
 * and with
 * `claimable` `q` is its home (a token: the sender may claim again);
 * -EPIPE (its receiver is gone), -ECONNRESET (it was freed failed),
 * -EOPNOTSUPP (it moved, or is in a waitset), -ENOMEM.
 * claim_out: the sender `q` (remote receiver over its tx lane) claimed its
 * receiver's process over out lane `ln` (the caller's link reference goes
 * to the queue): when the claim holds, cmesh__queue_redirect() makes `ln`
 * the tx lane (ln->claim_from is the one it replaces); if it never does,
 * `ln` ends empty when the queue goes. -EINVAL: no tx lane to replace.
 */
int cmesh__queue_admit(struct cmesh__queue *q, uint64_t after, uint32_t mark,
		       struct cmesh__lane *ln, bool claimable);
int cmesh__queue_claim_out(struct cmesh__queue *q, struct cmesh__lane *ln);

/*
 * A channel endpoint's claim of its peer, and its retries. claim_peer:
 * `q` claims, in process `node` over `to` (token `tok`: a port's
 * CMESH_PORT_F_REDIRECT), its receiver (`sending`, with the port's mark
 * `mark`: cmesh__queue_claim_out()) or its sender (cmesh__queue_await()),
 * kept for a retry; 0 (`to`'s reference is the queue's then), or why
 * not. claim_refused: the claim on lane `ln` was refused (DROPPED, link
 * thread): it goes again later, with backoff, a few times; `later` (the
 * peer's lane is claimable later: a split's), again and again, at most a
 * second apart, while the endpoint is used. claim_again:
 * a send's look (cmesh__queue_send(), port.c) once claim_retry_at is set;
 * claim_again_rx the consumer's (a receive): if the retry is due, the
 * refused lane goes and the claim goes again.
 */
int cmesh__queue_claim_peer(struct cmesh__queue *q, struct cmesh__link *to,
			    const uint64_t tok[2], uint64_t node, uint32_t mark,
			    bool sending);
void cmesh__queue_claim_refused(struct cmesh__queue *q, struct cmesh__lane *ln,
				bool later);
void cmesh__queue_claim_again(struct cmesh__queue *q);
void cmesh__queue_claim_again_rx(struct cmesh__queue *q);

/*
 * A forwarder's hop that can end (shm/proto.h REROUTE; queue_claim.c).
 * reroute_offer: the forwarder (bridge.c) of receiver queue `qr` into
 * sender queue `qt` asks: `qr` reads one lane only, from another process
 * that lists its end of it, and `qt` writes a lane to its receiver's
 * process that names that receiver's end by a token of the lane's own,
 * with no claim of its own under way or due. Then that process is told to
 * claim the receiver there (REROUTE), read after a mark of `qt`'s lane,
 * and `qr` takes no claim from then on. 0 with *at_end(*at_end_arg), what
 * the forwarder runs once it has forwarded everything (writes that mark,
 * frees the arg); -EAGAIN: not now (nothing done).
 * reroute: the senders of `q` that write out lane `ln` (of serial
 * `serial`) claim, with their next send, the receiver in process `node`
 * that token `tok` names, read there after MARK `mark`: 0, or -EAGAIN
 * (they write another lane now, or a claim of theirs is under way or due:
 * nothing done).
 */
int cmesh__queue_reroute_offer(struct cmesh__queue *qr, struct cmesh__queue *qt,
			       void (**at_end)(void *arg), void **at_end_arg);
int cmesh__queue_reroute(struct cmesh__queue *q, struct cmesh__lane *ln,
			 uint64_t serial, uint64_t node, const uint64_t tok[2],
			 uint32_t mark);

/*
 * A mark a forwarder writes on out lane `ln` of queue `q` when it ends
 * (queue_claim.c), for a claim of `ln`'s receiver in process `node` (its
 * sender sent on while clones of it still write `ln`, or a REROUTE): NULL
 * (no claim) unless the token `ln` carries is its own. _id: the mark the
 * claim names. _at_end: the forwarder's end runs it (writes the mark if
 * `ln` is still the one its queue writes; frees it); else free() it.
 */
struct cmesh__queue_mark;
struct cmesh__queue_mark *cmesh__queue_mark_for(struct cmesh__queue *q,
						struct cmesh__lane *ln,
						uint64_t node);
uint32_t cmesh__queue_mark_id(const struct cmesh__queue_mark *m);
void cmesh__queue_mark_at_end(void *arg);

/*
 * sole_sender: for a sender about to leave, its tx lane if it is the only
 * sender of its queue (so the lane ends once it has left), or the lane of
 * its own claim in flight (named by the token it gave, protocol 20, unless
 * refused); else NULL.
 */
struct cmesh__lane *cmesh__queue_sole_sender(struct cmesh__queue *q);

/*
 * A sender of `q` comes home (port_home.c): the one that wrote its receiver's
 * in lane of serial `serial` from elsewhere. A sender reference is taken
 * for its new handle here, and the local tier is sealed and not read
 * until that lane has ended (what it sent from there comes first): local
 * sends queue in order meanwhile. A queue made with its lane takes it for
 * that lane or the claimed one behind it, and is a local queue once that
 * lane has ended. With `mark` (not 0: clones of the sender still write
 * that lane), until the receiver took that MARK of it, in a queue whose
 * first source is its local tier only. 0, or -EOPNOTSUPP (nothing done:
 * the receiver is not here reading lanes, is in a waitset or sent on,
 * another come home waits, the lane is another one of a queue made with
 * its lane, or the senders are gone).
 */
int cmesh__queue_gate_local(struct cmesh__queue *q, uint64_t serial,
			    uint32_t mark);

/* Trailing length of the next message, -EAGAIN or -EPIPE. Consumer side. */
int cmesh__queue_peek(struct cmesh__queue *q);

/*
 * Waitset support (consumer side). ready: a receive would not return
 * -EAGAIN. arm: the next send or close signals the queue's waitset;
 * returns true when an in-process producer is between its claim and its
 * publish and may not signal (queue.c): the caller must look again soon
 * rather than sleep. Lanes order their arming themselves, in shared memory.
 */
bool cmesh__queue_ready(struct cmesh__queue *q);
bool cmesh__queue_arm(struct cmesh__queue *q);

/*
 * Remote receivers only (else 0 / no-op): the fds that poll readable on a
 * wake while armed, which a waitset polls (into out[], their count); and
 * disarming, which stops the wakes and, with `drain`, drains those fds
 * (never blocks). out[0] is a datagram socket, out[1] an eventfd.
 */
int cmesh__queue_wake_fds(struct cmesh__queue *q, int out[2]);
void cmesh__queue_disarm(struct cmesh__queue *q, bool drain);

/*
 * A waitset that sleeps in futex_waitv (waitset_wait.c): the words a wake of
 * the receiver's lanes changes, with their values now (load them before
 * arming), at most `max` into w: their count, or UINT32_MAX if more (a
 * local queue has none: its wakes change the waitset's own word). Arming
 * for them (on) sets ST_WS_FUTEX, or each lane's WSFUTEX bit, and returns
 * what cmesh__queue_arm() does; disarming (off) clears them.
 */
struct cmesh__park_word;
uint32_t cmesh__queue_ws_words(struct cmesh__queue *q,
			       struct cmesh__park_word *w, uint32_t max);
bool cmesh__queue_arm_futex(struct cmesh__queue *q, bool on);

/*
 * Waitsets, consumer side: the lanes of ports among the receiver's
 * sources (a lane it was made with, its senders' lanes), at most `max`
 * in out[]: their count, or UINT32_MAX if there are more. A lane may join
 * them while the receiver is in a waitset (a sender sent away, a claim):
 * lanes_gen then changes (acquire load; the waitset, having signalled
 * itself, lists them again before it arms them).
 */
uint32_t cmesh__queue_lanes_gen(struct cmesh__queue *q);
uint32_t cmesh__queue_lanes(struct cmesh__queue *q, struct cmesh__lane **out,
			    uint32_t max);

/* The lane a remote receiver reads, or NULL (local queue). */
struct cmesh__lane *cmesh__queue_rx_lane(struct cmesh__queue *q);

/* Consumer side: the receiver read its rx lane to its end (its CLOSE). */
bool cmesh__queue_rx_lane_ended(const struct cmesh__queue *q);

/*
 * See cmesh_sender_try_send(): -EAGAIN and nothing taken when the message
 * does not go into the ring at once. The message holds no endpoint.
 */
int cmesh__queue_try_send(struct cmesh__queue *q, const void *msg,
			  const void *trail, size_t len);

/* cmesh_receiver_stats_get()'s fields but `size` and `flags`. */
void cmesh__queue_stats(struct cmesh__queue *q, cmesh_receiver_stats *out);

/* Sending side: see cmesh_sender_is_closed(). */
int cmesh__queue_rx_gone(struct cmesh__queue *q);

/*
 * Sending side: *used gets the bytes a send's backlog holds now (the
 * overflow list, or the lane's spill), *room what it takes more before a
 * send fails with -ENOBUFS (UINT64_MAX: no bound). A snapshot: other
 * senders may change it. Any thread.
 */
void cmesh__queue_backlog(struct cmesh__queue *q, uint64_t *used,
			  uint64_t *room);

/* Sending side: see cmesh_sender_flush(). */
int cmesh__queue_flush(struct cmesh__queue *q, int64_t deadline);

/*
 * Links the queue to `ws` (NULL unlinks), whose eventfd `efd` a send to
 * the armed queue signals, or whose futex word `word` it increments and
 * wakes when armed for that (the queue needs nothing of waitset.c).
 * -EBUSY if linked elsewhere.
 */
int cmesh__queue_set_waitset(struct cmesh__queue *q, struct cmesh_waitset *ws,
			     int efd, _Atomic uint32_t *word);

struct cmesh_waitset *cmesh__queue_waitset(struct cmesh__queue *q);

#endif
