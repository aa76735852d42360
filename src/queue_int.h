/* SPDX-License-Identifier: MIT */
/*
 * queue_int.h - the in-process queue's state, shared by the files of the
 * queue module: queue.c (the ring's layout, creation, send, the overflow
 * list's push, the receiver's wake), queue_recv.c (receive: the ring and
 * the overflow list read, readiness, peek, and a receiver's wait: spin,
 * sleep), queue_arm.c (waitset arming, counters), queue_close.c (references, closes,
 * the queue's end), queue_port.c (lanes added to a receiver whose senders
 * moved to other processes, and read), queue_port_wait.c (a receiver with
 * lanes spins and sleeps on them), queue_move.c (the move of a receiver:
 * sealing the ring and forwarding what it holds; its coming home),
 * queue_claim.c (claims: the queue's side and an endpoint's own)
 * and queue_reuse.c (queues kept and re-armed; kept rpc reply lanes).
 */
#ifndef CMESH_QUEUE_INT_H
#define CMESH_QUEUE_INT_H

#include "queue.h"

#include "hint.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define ST_RX_SLEEP 1u	/* receiver parked on `state` */
#define ST_WS_ARMED 2u	/* receiver's waitset wants a signal */
#define ST_RX_CLOSED 4u /* receiver freed */
#define ST_TX_CLOSED 8u /* every sender freed */
/*
 * With ST_RX_CLOSED / ST_TX_CLOSED: that side failed (bridge.c); ST_RX_FAILED
 * alone: the receiver failed and lives on (ST_RX_GONE).
 */
#define ST_RX_FAILED 16u
#define ST_TX_FAILED 32u
#define ST_WS_FUTEX 64u /* its waitset sleeps on its futex word */
#define ST_SLEEPERS (ST_RX_SLEEP | ST_WS_ARMED | ST_WS_FUTEX)
/*
 * What a send looks at: the receiver freed, or failed (a source's process
 * died: queue_port.c fail_sources() sets ST_RX_FAILED alone, and sends
 * say -ECONNRESET from then on, the message released).
 */
#define ST_RX_GONE (ST_RX_CLOSED | ST_RX_FAILED)

#define SLOT_HEAP 1u /* trailing bytes live in a malloc'd buffer */
#define CACHE_LINE 64u
/*
 * Fields written by different threads sit 128 bytes apart, and slots start
 * on a 128-byte boundary: x86 cores fetch aligned pairs of lines (the
 * adjacent-line prefetcher), so 64 bytes apart still share traffic.
 */
#define PAIR 128u
#define SPIN_CLOCK_EVERY 32
#define PF_AHEAD 8  /* slots the consumer reads ahead (prefetch_slot) */
#define PFW_AHEAD 3 /* slots a producer takes ahead (prefetchw_slot) */

struct slot {
	_Atomic uint64_t seq; /* pos + 1 once position pos is published */
	uint32_t trail_len;
	uint32_t flags; /* SLOT_HEAP */
	/* message bytes, then the inline trail or the heap pointer */
};

#define SLOT_HDR ((uint32_t)sizeof(struct slot))
/* Message bytes that share a slot's first line. */
#define FIRST_LINE_MSG (CACHE_LINE - SLOT_HDR)

/*
 * Slot geometry. A slot is `lines` logical 64-byte lines: struct slot, the
 * message, the inline trail (or the heap pointer), and last the tail word.
 * Logical line L of a slot is stored at byte L * PAIR of the slot's
 * storage, so every line is alone in its aligned 128-byte pair (the other
 * line of the pair is never used), and positions map to slots in a
 * scrambled order (slot_index()). Both keep the hardware prefetchers (the
 * adjacent-line one, and the stride and stream ones) from pulling lines
 * that the other core polls or is about to write. Measured on two cores
 * with a 64-byte ping-pong: contiguous 2-line slots in position order
 * cost about 30 ns more per round trip than this layout (170 vs 140 ns
 * in a bare harness, where one reused line takes 130).
 */

struct ovf_node {
	struct ovf_node *next;
	void *heap; /* trail if it did not fit inline, or NULL */
	uint32_t trail_len;
	alignas(16) unsigned char data[]; /* message, then inline trail */
};

struct cmesh__queue {
	/* Set at creation, read-only afterwards. */
	struct cmesh__queue_head h; /* first: queue.h reads it */
	unsigned char *slots;
	uint64_t mask;	    /* capacity - 1 */
	uint32_t slot_size; /* logical bytes: 64 per line */
	uint32_t stride;    /* bytes of storage per slot: PAIR per line */
	uint32_t scramble;  /* slot_index()'s shift */
	uint32_t msg_size;
	uint32_t msg_span;   /* msg_size rounded up to 8 */
	uint32_t inline_cap; /* trailing bytes that fit in a slot */
	/* Local sends that take the fast path: no resource fields, ... */
	bool fast_send;
	uint64_t fast_trail; /* ... and no more trailing bytes than this */
	int64_t spin_ns;     /* fixed spin, or the adaptive one's first */
	bool spin_adapt;     /* CMESH_SPIN_ADAPTIVE: spin_win is learnt */
	uint64_t max_trail;
	uint64_t max_backlog;	     /* ovf_bytes' bound (0: none): -ENOBUFS */
	unsigned char *scratch;	     /* one message, for drains (drain_lock) */
	struct cmesh__lane *rx_lane; /* the senders are remote */
	/*
	 * The receiver is remote: set at creation, or once when the
	 * receiver moved (queue_move.c), under `lock`; acquire loads.
	 */
	_Atomic(struct cmesh__lane *) tx_lane;
	/* A refused claim's retry is due from then (claim_tok, below). */
	_Atomic int64_t claim_retry_at;
	/*
	 * Reclaim mode: set once (under `lock`, seq_cst, before the first
	 * reclaimable lane is published) when the receiver has left KEEP_OLD
	 * lanes behind. From then on a use of tx_lane counts itself in
	 * `inside` (tx_enter()), and a lane left behind goes once `inside`
	 * was seen 0 after it was replaced (queue_close.c).
	 */
	_Atomic uint32_t reclaim;

	/* Read by every send, written rarely. */
	alignas(PAIR) _Atomic uint32_t state;
	_Atomic uint32_t ovf_mode;  /* 1: overflow list in use (see top) */
	_Atomic uint64_t ovf_bytes; /* node_cost() of the list and batch */
	_Atomic uint32_t nsenders;
	_Atomic uint32_t refs; /* sending side (1) + receiving side (1) */
	/*
	 * A recent head_pub, <= head: producers', beside what every send
	 * reads anyway (a re-armed oneshot's is set with its state).
	 */
	_Atomic uint64_t head_cache;

	/* Producers only. */
	alignas(PAIR) _Atomic uint64_t tail;
	/* Reclaim mode: uses of tx_lane under way (tx_enter()). */
	_Atomic uint32_t inside;

	/* Consumer only (the drain_lock holder once the receiver closed). */
	alignas(PAIR) uint64_t head;
	struct slot *head_slot;	    /* slot_at(head), kept with head */
	_Atomic uint64_t head_pub;  /* head, for producers checking space */
	struct ovf_node *ovf_batch; /* taken from the list, not yet received */

	/* Slow paths. */
	alignas(PAIR) pthread_mutex_t lock; /* ovf list, ws */
	struct ovf_node *ovf_head;
	struct ovf_node **ovf_tailp;
	struct cmesh_waitset *ws;
	int ws_efd; /* ws's eventfd: a send to an armed queue signals it */
	_Atomic uint32_t *ws_word;  /* ws's futex word (ST_WS_FUTEX) */
	pthread_mutex_t drain_lock; /* consumer role after close */
	bool closed_out;	    /* the CLOSE of tx_lane is sent (`lock`) */
	/* A side was failed, not freed (cmesh__queue_*_fail): ST_*_FAILED. */
	_Atomic bool tx_failed;
	bool rx_failed; /* ... or a source failed (consumer: queue_port.c) */

	/*
	 * Lanes whose senders moved to other processes (queue_port.c): added
	 * under `lock` to `xl_add`, taken by the consumer into its own array.
	 */
	_Atomic uint32_t xl_flags; /* XL_ANY: lanes exist; XL_NEW: xl_add */
	/*
	 * Bumped (under `lock`) when a lane joins the receiver's sources
	 * (xl_add, next): its waitset sets up their wake sockets again
	 * (cmesh__queue_lanes_gen()).
	 */
	_Atomic uint32_t lanes_gen;
	struct cmesh__lane **xl_add; /* under `lock` */
	uint32_t xl_nadd, xl_capadd;
	struct cmesh__lane **xl; /* consumer only */
	uint32_t xl_n, xl_cap, xl_next;
	int xl_err;	   /* a lane's failure: the receiver's, for good */
	bool primary_done; /* rx_lane saw CLOSE while lanes remain */
	/*
	 * A kept rpc call's queue (cmesh__queue_hold_link(), consumer): a
	 * lane that goes leaves its link reference in held_link, put when
	 * the queue goes (the call's hook is on that link until then).
	 */
	bool hold_link;
	struct cmesh__link *held_link;
	/*
	 * rx_lane holds a sender reference and is listed for claims
	 * (cmesh__queue_claimable_rx()) until it ends or the receiver goes
	 * (consumer; set before the receiver is handed out).
	 */
	bool rx_ref;
	/*
	 * The receiver goes on through a forwarder reading its one source
	 * (cmesh__queue_sole_lane()): no claim may add a lane (`lock`).
	 */
	bool no_claims;
	/*
	 * Consumer: told when a lane of its own ends (drop_lane()), before
	 * the lane goes: a forwarder whose sources were hinted on (port.c).
	 */
	void (*end_fn)(void *ctx, uint64_t serial);
	void *end_ctx;
	/*
	 * The out lanes the receiver left (coming home, or claimed
	 * elsewhere), sealed, kept until the queue goes (a sender may still
	 * be inside a send on one; `lock`).
	 */
	struct cmesh__lane *old_lanes; /* by old_next */
	/*
	 * Reclaim mode: reclaimable lanes left behind, by old_next, put once
	 * `inside` is seen 0 (pushed and taken under `lock`; seq_cst).
	 */
	_Atomic(struct cmesh__lane *) pend;
	/*
	 * An endpoint came home: the local tier is sealed and not read until
	 * the lane of this serial has ended (set under `lock`, cleared by the
	 * consumer; 0: none). The receiver came home
	 * (cmesh__queue_come_home()): the lane that brings what was sent
	 * before; a sender (cmesh__queue_gate_local()): the lane it wrote
	 * from elsewhere.
	 */
	_Atomic uint64_t gate_serial;
	/*
	 * With gate_serial, a sender's whose clones still write that lane:
	 * the local tier opens once the consumer took this MARK of it (set
	 * under `lock` before gate_serial, cleared by the consumer first).
	 */
	_Atomic uint32_t gate_mark;
	/*
	 * With gate_serial, a sender's come home: how many messages at the
	 * head of the overflow list were queued before the gate (set under
	 * `lock` with it, cleared by the consumer). They were sent before
	 * the lane's, by senders here, the one that came home included
	 * (before it left): read before the gate's lane, as the ring's are.
	 */
	_Atomic uint32_t gate_pre;
	uint32_t nold; /* lanes in old_lanes (`lock`) */
	/*
	 * A claimed lane (cmesh__queue_await()), read once rx_lane ended
	 * (consumer; written under `lock`: before the receiver is handed
	 * out, and by a retry of its claim in a receive).
	 */
	struct cmesh__lane *next;
	uint64_t next_serial; /* its serial, kept after it is read (`lock`) */
	/*
	 * A sender's claim in flight (cmesh__queue_claim_out()): the out
	 * lane it made, which becomes tx_lane when the claim holds (`lock`).
	 */
	struct cmesh__lane *claim_out;
	/*
	 * What the claim of the peer named (`lock`): a sender's (claim_out)
	 * or the receiver's (next). Once the peer's process refused it (its
	 * end not taken there yet, say), a send (a receive) tries it again
	 * at claim_retry_at (ns; 0: none), claim_tries times at most, but
	 * for as long as it is answered LATER (a split's lane, the endpoint's
	 * own claim: queue_claim.c, cmesh__queue_claim_again(),
	 * claim_again_rx()).
	 * claim_list: a receiver's claim's token for the peer's end of its
	 * lane (protocol 20), kept for its retries: the receiver may have
	 * gone on naming it.
	 */
	uint64_t claim_tok[2], claim_node, claim_list[2];
	uint32_t claim_mark, claim_tries;
	/*
	 * The claim named above came in a REROUTE (cmesh__queue_reroute()),
	 * not a refusal: it goes with the next send, no lane to drop first,
	 * if tx_lane is still the lane of serial reroute_serial it named.
	 */
	bool reroute;
	uint64_t reroute_serial;
	/*
	 * A kept rpc call's reply lane, re-armed (cmesh__queue_rearm_lane()):
	 * the export of its new sender names it again (cmesh__queue_rebind()).
	 */
	struct cmesh__lane *rebind;
	/* Consumer's counters: one writer, relaxed loads by any thread. */
	_Atomic uint64_t st_waits, st_caught, st_sleeps;
	/* Claims of its senders refused (the link thread, under `lock`). */
	_Atomic uint64_t st_refused;
	_Atomic uint32_t st_lanes; /* lanes added and not dropped yet */
	_Atomic bool st_remote;	   /* rx_lane is set */
	bool senders_done;	   /* receiver: nobody publishes any more */
	uint32_t in_flight_looks;  /* consumer: cmesh__queue_sleep_cap() */
	_Atomic int64_t spin_win;  /* consumer writes: the spin it uses */
	/*
	 * Adaptive (spin.h; the consumer writes): its wakeups' cost, the gap
	 * between the starts of its waits, and when the last one began.
	 */
	_Atomic int64_t spin_wake;
	int64_t spin_gap, spin_last;
	/* When a producer last woke the sleeping receiver (clock ns). */
	_Atomic int64_t woke_at;
	/*
	 * A trail buffer the consumer is done with, for the next send of a
	 * trail over inline_cap (tbuf_get(), tbuf_put()); NULL: none. Its own
	 * pair: both sides write it once per such message.
	 */
	alignas(PAIR) _Atomic(void *) spare;
};

/*
 * Trailing bytes over a slot's inline space travel in a heap buffer (a
 * tbuf): TBUF_HDR bytes in front of the trail hold its capacity. The
 * consumer hands each one it has copied out to its queue's `spare` (one
 * at a time, TBUF_KEEP bytes at most; the one it replaces is freed),
 * where the next such send takes it: a stream of large messages then
 * allocates nothing once warm, and each buffer stays in the two caches.
 */
#define TBUF_HDR 16u
#define TBUF_KEEP (64u << 10)

/* A buffer of at least `len` trailing bytes (the spare, or new); NULL. */
void *cmesh__queue_tbuf_get(struct cmesh__queue *q, size_t len);
/* Done with `tb`: the queue's spare, or freed. NULL: nothing. */
void cmesh__queue_tbuf_put(struct cmesh__queue *q, void *tb);
/* Frees `tb` (and nothing else). NULL: nothing. */
void cmesh__queue_tbuf_free(void *tb);

/*
 * Lanes a channel's receiver leaves behind that are kept until the
 * channel goes (a send may be inside one: its senders pay nothing to say
 * so); past them the queue is in reclaim mode (`reclaim`).
 */
#define KEEP_OLD 32u

void cmesh__queue_reclaim(struct cmesh__queue *q);
/*
 * Lane `ln`, which tx_lane no longer names, left behind by the receiver
 * (a claim of it, its coming home): kept until the queue goes, or, if
 * reclaimable, put once no use of tx_lane is inside it (maybe at once).
 * `lock` not held; after the caller's last use of `ln`.
 */
void cmesh__queue_retire(struct cmesh__queue *q, struct cmesh__lane *ln);
/*
 * `lock` held, before `ln` is published as tx_lane: it is reclaimable if
 * the queue is in reclaim mode, which it enters once KEEP_OLD lanes are
 * kept, counting the one `ln` replaces if `keeps_one`.
 */
void cmesh__queue_reclaimable(struct cmesh__queue *q, struct cmesh__lane *ln,
			      bool keeps_one);

/*
 * tx_lane for a use that ends with tx_leave(q, *in): a lane that a queue
 * in reclaim mode leaves behind is not put while a use is inside it. Out
 * of reclaim mode (*in false), a lane read is one of the kept ones.
 * Never with `lock` held (a retire may take it).
 */
static inline struct cmesh__lane *tx_enter(struct cmesh__queue *q, bool *in)
{
	struct cmesh__lane *ln =
		atomic_load_explicit(&q->tx_lane, memory_order_acquire);

	/* After the lane (acquire): a reclaimable lane's mode is seen. */
	*in = unlikely(atomic_load_explicit(&q->reclaim, memory_order_relaxed));
	if (likely(!*in))
		return ln;
	/* Counted, then read again: a retire that saw 0 replaced it. */
	atomic_fetch_add_explicit(&q->inside, 1, memory_order_seq_cst);
	return atomic_load_explicit(&q->tx_lane, memory_order_seq_cst);
}

static inline void tx_leave(struct cmesh__queue *q, bool in)
{
	if (likely(!in))
		return;
	if (atomic_fetch_sub_explicit(&q->inside, 1, memory_order_seq_cst) ==
		    1 &&
	    atomic_load_explicit(&q->pend, memory_order_seq_cst))
		cmesh__queue_reclaim(q);
}

/*
 * tx_leave() that leaves lanes to put to the next one (or retire): for
 * looks that may run under other locks (a forwarder's under its list's,
 * an export's under a lane's port_lock), where the put of a lane, and
 * maybe of its link's last reference, must not run.
 */
static inline void tx_leave_quiet(struct cmesh__queue *q, bool in)
{
	if (unlikely(in))
		atomic_fetch_sub_explicit(&q->inside, 1, memory_order_seq_cst);
}

#define XL_ANY 1u
#define XL_NEW 2u
/*
 * The two sides of cmesh__queue_reroute_offer() (queue.h). reroute_source
 * (queue_move.c): the one lane that every sender of receiver queue `q`
 * writes (its forwarder's: the consumer's side), bound, from a process
 * other than `node` that lists its end of it (a token of the lane's,
 * peer_token); from now on `q` takes no claim (a claimed lane would be
 * read beside the rerouted one, out of order). NULL: none (nothing done).
 * tx_steady: no claim of its senders' is under way or due, none closed.
 */
struct cmesh__lane *cmesh__queue_reroute_source(struct cmesh__queue *q,
						uint64_t node);
bool cmesh__queue_tx_steady(struct cmesh__queue *q);

/* Set in `tail` once the receiver moved: every claim then fails. */
#define TAIL_SEAL (1ull << 62)

struct cmesh__ports_in;

/* ---- inline, for the hot paths of several files (no call) ---- */

/*
 * The slot of position `pos`: a bijection of pos mod capacity (multiply
 * by an odd constant, xorshift, twice; every step is invertible on
 * log2(capacity)-bit values), so positions less than a lap apart never
 * share a slot, and consecutive ones land far apart without a fixed
 * stride.
 */
static inline uint64_t slot_index(const struct cmesh__queue *q, uint64_t pos)
{
	uint64_t y = (pos * 0x9e3779b97f4a7c15ull) & q->mask;

	y ^= y >> q->scramble;
	y = (y * 0xbf58476d1ce4e5b9ull) & q->mask;
	return y ^ (y >> q->scramble);
}

static inline struct slot *slot_at(const struct cmesh__queue *q, uint64_t pos)
{
	return (struct slot *)(q->slots + slot_index(q, pos) * q->stride);
}

/* Where logical byte `off` of slot `s` is stored. */
static inline unsigned char *slot_byte(struct slot *s, uint32_t off)
{
	return (unsigned char *)s + off / CACHE_LINE * PAIR + off % CACHE_LINE;
}

/* Logical offset of the inline trail (or heap pointer). */
static inline uint32_t slot_extra(const struct cmesh__queue *q)
{
	return SLOT_HDR + q->msg_span;
}

/*
 * Slot storage (slots.c) starts zero: a zero seq is "empty" at every lap (a
 * position's seq is pos + 1 once published) and the tail word is zero for
 * good, so nothing is written at creation and a ring costs memory only for
 * the slots it uses.
 */
static inline uint64_t slots_bytes(const struct cmesh__queue *q)
{
	return (q->mask + 1) * q->stride;
}

/* Bytes an overflowed message holds: its node, and its heap trail. */
static inline uint64_t node_cost(const struct cmesh__queue *q, uint32_t len,
				 bool heap)
{
	return sizeof(struct ovf_node) + q->msg_span +
	       (heap ? sizeof(void *) + len : len);
}

/* Consumer: the slot at `head` is published (`mo`: its seq's load). */
static inline bool head_ready(const struct cmesh__queue *q, memory_order mo)
{
	return atomic_load_explicit(&q->head_slot->seq, mo) == q->head + 1;
}

/* The local tier waits behind a lane (come home: a receiver, a sender). */
static inline bool local_gated(const struct cmesh__queue *q)
{
	return atomic_load_explicit(&q->gate_serial, memory_order_acquire);
}

/*
 * Consumer: the local tier waits behind its gate's lane, and holds nothing
 * queued before the gate was set (the sealed ring's messages, the batch
 * taken from the list, the list's first gate_pre): those come first. The
 * ring's are every position below the sealed tail, published or not: a
 * slot claimed before the seal and not yet published keeps those behind
 * it (a sender's that came home among them) before the gate's lane.
 * After local_gated()'s acquire, which pairs with the gate's release
 * store after its seal: the tail moves no more.
 */
static inline bool local_blocked(const struct cmesh__queue *q)
{
	return local_gated(q) && !q->ovf_batch &&
	       !atomic_load_explicit(&q->gate_pre, memory_order_relaxed) &&
	       (atomic_load_explicit(&q->tail, memory_order_relaxed) &
		~TAIL_SEAL) == q->head;
}

/*
 * Consumer: whether the lane of serial `serial` waits for the local tier:
 * it is the come-home gate's lane (that sender's messages from elsewhere),
 * and the local tier still holds what was queued before the gate (which
 * that sender may have sent before it left), even while that waits for a
 * slot claimed before the seal.
 */
static inline bool gate_lane_waits(const struct cmesh__queue *q,
				   uint64_t serial)
{
	return !q->rx_lane && local_gated(q) && !local_blocked(q) &&
	       atomic_load_explicit(&q->gate_serial, memory_order_relaxed) ==
		       serial;
}

/*
 * Consumer: the local tier's head is a slot claimed and not yet published
 * (its producer is between its claim and its publish). What was queued
 * behind it, ring or overflow list, may be a sender's that went away
 * since and now writes a lane: no lane is read until it is published.
 */
static inline bool local_claim_waits(const struct cmesh__queue *q)
{
	return !q->rx_lane && !q->primary_done &&
	       (atomic_load_explicit(&q->tail, memory_order_relaxed) &
		~TAIL_SEAL) != q->head &&
	       !head_ready(q, memory_order_acquire);
}

/* -EPIPE, or -ECONNRESET if the side whose ST_*_FAILED is `bit` failed. */
static inline int cmesh__queue_closed_err(const struct cmesh__queue *q,
					  uint32_t bit)
{
	return atomic_load_explicit(&q->state, memory_order_acquire) & bit ?
		       -ECONNRESET :
		       -EPIPE;
}

/* ---- queue.c, for the other files of the queue ---- */

/* Sets `set` in the state word and wakes the receiver or its waitset. */
void cmesh__queue_wake(struct cmesh__queue *q, uint32_t set);

/* ---- queue_recv.c, for the other files of the queue ---- */

/* Local tier: the next message (ring, then overflow), or -EAGAIN. */
int cmesh__queue_pop(struct cmesh__queue *q, void *out_msg, void *out_trail,
		     size_t cap);

/* Local tier: trailing length of the next message, or -EAGAIN. */
int cmesh__queue_local_len(struct cmesh__queue *q);

/* Local tier: the word a publication of the next message changes. */
const _Atomic uint64_t *cmesh__queue_head_word(const struct cmesh__queue *q,
					       uint64_t *want);

/* Local tier: a receive of it would not return -EAGAIN. */
bool cmesh__queue_local_ready(struct cmesh__queue *q);

/* Peek of one source: the local tier, or rx_lane if set. */
int cmesh__queue_peek_primary(struct cmesh__queue *q);

/* Receives of one source: the local tier, or rx_lane if set. */
int cmesh__queue_try_primary(struct cmesh__queue *q, void *out_msg,
			     void *out_trail, size_t cap,
			     struct cmesh__ports_in *pin);

/*
 * Drops every queued message, releasing its resources (receiver gone):
 * the consumer's role, under `drain_lock` (queue.c, queue_close.c).
 */
void cmesh__queue_drain(struct cmesh__queue *q);

/* ---- queue_recv.c, for queue_arm.c and queue_port_wait.c ---- */

/*
 * After a sleeper's seq_cst RMW on `state` (queue.c, top): is the next
 * slot claimed but not yet published? Its producer owes no wake then.
 */
bool cmesh__queue_in_flight(struct cmesh__queue *q);

/*
 * After setting ST_RX_SLEEP: until when the consumer may sleep on its
 * local source. `deadline`; or 0 (do not sleep: it yielded to a producer
 * between claim and publish); or, should one stay there, a short nap's end.
 */
int64_t cmesh__queue_sleep_cap(struct cmesh__queue *q, int64_t deadline);

/* ---- queue_close.c, for the other files of the queue ---- */

/* Drops a reference (sending or receiving side); the last frees. */
void cmesh__queue_put(struct cmesh__queue *q);

/* Frees a destroyed queue's memory: scratch, slot storage, itself. */
void cmesh__queue_free_mem(struct cmesh__queue *q);

/* ---- queue_reuse.c, for queue.c and queue_close.c ---- */

/*
 * A queue this thread destroyed (its locks destroyed, its seqs zero) whose
 * slot storage is `bytes` with slots `stride` apart and whose scratch
 * holds `msg_size` bytes, taken from the thread's cache; NULL if none.
 */
struct cmesh__queue *cmesh__queue_cache_take(uint64_t bytes, uint32_t stride,
					     uint32_t msg_size);

/* Keeps destroyed queue `q` in the thread's cache; false: cache full. */
bool cmesh__queue_cache_put(struct cmesh__queue *q);

/* ---- queue_port.c, for queue_move.c ---- */

/* Makes the array *v (of *cap) hold `need` lanes: 0 or -ENOMEM. */
int cmesh__queue_reserve_lanes(struct cmesh__lane ***v, uint32_t *cap,
			       uint32_t need);

/*
 * `lock` held: a lane joined the receiver's sources (xl_add, next): the
 * generation moves on and its waitset, if any, looks again (it sets up
 * the lane's wake socket before it arms it: waitset.c).
 */
void cmesh__queue_lane_joined(struct cmesh__queue *q);

/*
 * Consumer: lane `ln`, out of the queue's sources (xl, next), is done
 * with: its count, listing, lane, link and sender references go.
 */
void cmesh__queue_lane_gone(struct cmesh__queue *q, struct cmesh__lane *ln);

/* ---- queue_port.c, for queue_recv.c, queue_close.c, queue_port_wait.c ---- */

/* Receivers with lanes (XL_ANY): the whole receive, readiness, peek. */
int cmesh__queue_xl_try_recv(struct cmesh__queue *q, void *out_msg,
			     void *out_trail, size_t cap,
			     struct cmesh__ports_in *pin);
bool cmesh__queue_xl_ready(struct cmesh__queue *q);
int cmesh__queue_xl_peek(struct cmesh__queue *q);

/*
 * Consumer: takes the lanes added since it last looked (XL_NEW) into its
 * own array; 0 or -ENOMEM (they stay added: the next look tries again).
 */
int cmesh__queue_xl_merge(struct cmesh__queue *q);

/* The receiver closes: every lane closed and released. */
void cmesh__queue_xl_close(struct cmesh__queue *q);

/*
 * Consumer: rx_lane ended, or the receiver goes: its listing and sender
 * reference (cmesh__queue_claimable_rx()), if it has them, go.
 */
void cmesh__queue_rx_unref(struct cmesh__queue *q);

/* ---- queue_move.c, for queue_port.c ---- */

/*
 * Consumer: lane `ln` of `q` took a HINTS record (lane.h): its senders
 * elsewhere are claimed (the hints go).
 */
void cmesh__queue_claim_hints(struct cmesh__queue *q, struct cmesh__lane *ln);

/* ---- queue_port_wait.c, for queue_recv.c and queue_arm.c ---- */

/*
 * Spinning: polls every source's word `rounds` times, then asks each one
 * once (cmesh__queue_xl_ready()). True when something may be ready.
 */
bool cmesh__queue_xl_spin(struct cmesh__queue *q, int rounds);
int cmesh__queue_xl_sleep(struct cmesh__queue *q, int64_t deadline);

/*
 * After a sleep that began at `since` and ended with a message: the
 * earliest time at or after `since` at which a source of `q` (local
 * senders, any lane) last woke it, 0 if none did since then. (A wake
 * that ended an earlier sleep of the same wait brought no message: it is
 * before `since`.) A hint from possibly hostile peers: the caller bounds
 * it (cmesh__spin_waited()).
 */
int64_t cmesh__queue_woke_since(struct cmesh__queue *q, int64_t since);

/*
 * Waitsets: arms (or disarms) every lane of the receiver, for its fds or
 * (`futex`) its futex words; arming returns whether one has a claim in
 * flight (cmesh__lane_in_flight()).
 */
bool cmesh__queue_xl_arm(struct cmesh__queue *q, bool on, bool futex);

#endif
