/* SPDX-License-Identifier: MIT */
/*
 * queue.c - the in-process channel queue.
 *
 * Layout: a power-of-two array of fixed-size slots (Vyukov's bounded
 * queue: each slot carries a free-running sequence number), an ordered
 * overflow list used only while the ring is full, and a state word that is
 * both the close flags and the receiver's futex.
 *
 * Memory-ordering contract
 * - Slot hand-off. A producer claims position `pos` with a relaxed CAS on
 *   `tail` once pos - head < capacity, where head is `head_cache` (acquire,
 *   pairs with the release store of the producer that refreshed it) or,
 *   when that looks full, `head_pub` (acquire, pairs with the consumer's
 *   release store after it copied the slot out). It fills the slot and
 *   publishes it with a release store of seq = pos + 1; the consumer's
 *   acquire load of seq == head + 1 pairs with that store. A slot's seq is
 *   only ever written by producers (pos + 1, one lap apart), so the
 *   consumer never writes a line that a producer is about to write: it
 *   publishes its head on a line of its own.
 * - Sleep/wake (Dekker on the claim). A producer's claim is a seq_cst CAS
 *   on `tail`; once it published, it loads `state` (seq_cst). A receiver
 *   going to sleep sets ST_RX_SLEEP with a seq_cst RMW, then loads `tail`
 *   (seq_cst, cmesh__queue_in_flight()). One of them sees the other:
 *   either the producer sees ST_RX_SLEEP and wakes it (futex on `state`),
 *   or the receiver sees the claim. Published, it takes the message;
 *   claimed but not yet published, the producer may have loaded `state`
 *   before the bit was set and owes no wake, so the receiver does not
 *   sleep on the futex: it yields and looks again (a nap, should the
 *   producer stay there). An overflowing producer fences (seq_cst) after
 *   its ovf_mode store, the receiver after its RMW. The same pairing covers
 *   ST_WS_ARMED (waitset) and ST_RX_CLOSED (receiver gone: the closer
 *   drains up to the tail it loaded after its RMW, yielding a little to
 *   claims in flight, never blocking: drain_claimed(); later claimers see
 *   the bit and drain their own). Neither side
 *   issues a process-wide barrier (membarrier interrupts every CPU running
 *   a thread of the process: in a VMM, its vCPUs): the price is a seq_cst
 *   claim, which on x86 is the lock cmpxchg a claim takes anyway.
 * - Close of the sending side. Each sender release is an acq_rel RMW on
 *   `nsenders`; the last one sets ST_TX_CLOSED with a seq_cst CAS, so a
 *   receiver whose acquire load sees ST_TX_CLOSED also sees every message.
 * - Overflow. ovf_mode and the list change only under `lock`. A sender
 *   whose message overflowed sees its own ovf_mode = 1 (coherence) and keeps
 *   overflowing until the consumer emptied the list (and its private batch
 *   taken from it), which keeps per-sender FIFO; the consumer takes from
 *   them only when the ring is empty and no claimed slot is unpublished
 *   (tail == head).
 * - A queue whose other end is in another process forwards send or receive
 *   to its lane (lane.c), which has its own contract.
 *
 * The fast path (ring not full, receiver awake) takes no lock, makes no
 * syscall and allocates nothing; trailing bytes larger than the slot's
 * inline space are the exception (one malloc).
 */
#include "queue.h"
#include "queue_int.h"

#include "copy.h"
#include "hint.h"
#include "lane.h"
#include "link.h"
#include "park.h"
#include "slots.h"
#include "spin.h"
#include "type.h"
#include "wake.h"

#include <cmesh/common.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

/* Copies `n` bytes to the slot from logical offset `off` on, per line. */
static inline void slot_put(struct slot *s, uint32_t off, const void *src,
			    size_t n)
{
	const unsigned char *p = src;

	while (n) {
		size_t m = CACHE_LINE - off % CACHE_LINE;

		if (m > n)
			m = n;
		cmesh__copy_small(slot_byte(s, off), p, m);
		p += m;
		off += (uint32_t)m;
		n -= m;
	}
}

/* Copies `n` bytes from the slot, logical offset `off` on, per line. */
static inline void slot_get(void *dst, struct slot *s, uint32_t off, size_t n)
{
	unsigned char *d = dst;

	while (n) {
		size_t m = CACHE_LINE - off % CACHE_LINE;

		if (m > n)
			m = n;
		cmesh__copy_small(d, slot_byte(s, off), m);
		d += m;
		off += (uint32_t)m;
		n -= m;
	}
}

/*
 * Reads ahead (a hint): the first and last lines of a slot. The scrambled
 * layout keeps the hardware from prefetching a stream of slots, so the
 * consumer does it, PF_AHEAD positions on: a stream of 64-byte messages
 * goes from 13 to about 55 M/s on two cores (23 M/s with contiguous slots
 * in position order); a ping-pong pays about 5-10 ns per round trip.
 */
static inline void prefetch_slot(const struct cmesh__queue *q, uint64_t pos)
{
	struct slot *s = slot_at(q, pos);

	cmesh__prefetch(s);
	cmesh__prefetch(slot_byte(s, q->slot_size - CACHE_LINE));
}

/* Logical offset of the inline trail (or heap pointer). */
static inline uint32_t slot_extra(const struct cmesh__queue *q)
{
	return SLOT_HDR + q->msg_span;
}

/*
 * The last word of a slot: never written (slot storage starts zero). The
 * spin loop loads it so that the slot's last line, which the producer also
 * writes, is fetched in parallel with the first (seq) instead of after it.
 */
static inline _Atomic uint64_t *slot_tail_word(const struct cmesh__queue *q,
					       uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)slot_byte(
		slot_at(q, pos), q->slot_size - (uint32_t)sizeof(uint64_t));
}

static uint64_t pow2_floor(uint64_t v)
{
	return v ? 1ull << (63 - __builtin_clzll(v)) : 0;
}

/*
 * Slot storage (slots.c) starts zero: a zero seq is "empty" at every lap (a
 * position's seq is pos + 1 once published) and the tail word is zero for
 * good, so nothing is written at creation and a ring costs memory only for
 * the slots it uses.
 */
static uint64_t slots_bytes(const struct cmesh__queue *q)
{
	return (q->mask + 1) * q->stride;
}

/*
 * Returns the slot storage. Producers wrote only the slots of positions
 * below `tail` (all of them past a lap); if the pool would keep the ring,
 * their seqs go back to zero, the one word a new owner reads before it is
 * written again. Nothing uses the queue any more.
 */
static void slots_reset(struct cmesh__queue *q)
{
	uint64_t cap = q->mask + 1;
	uint64_t used = atomic_load_explicit(&q->tail, memory_order_relaxed) &
			~TAIL_SEAL;

	if (used > cap)
		used = cap;
	for (uint64_t pos = 0; pos < used; pos++)
		atomic_store_explicit(&slot_at(q, pos)->seq, 0,
				      memory_order_relaxed);
}

static void slots_release(struct cmesh__queue *q)
{
	uint64_t cap = q->mask + 1;
	uint64_t used = atomic_load_explicit(&q->tail, memory_order_relaxed) &
			~TAIL_SEAL;
	bool clean = false;

	if (cmesh__slots_keepable(slots_bytes(q), q->stride,
				  used < cap ? used : cap)) {
		slots_reset(q);
		clean = true;
	}
	cmesh__slots_free(q->slots, slots_bytes(q), q->stride, clean);
}

int cmesh__queue_new(const cmesh_type *type,
		     const struct cmesh__queue_opts *opts,
		     struct cmesh__queue **out)
{
	struct cmesh__queue *q;
	uint64_t cap;
	uint32_t span, slot_size, stride;
	unsigned char *slots = NULL, *scratch = NULL;
	int r = cmesh_type_check(type);

	if (r)
		return r;
	span = (type->size + 7u) & ~7u;
	slot_size = (SLOT_HDR + span + (uint32_t)sizeof(void *) +
		     (uint32_t)sizeof(_Atomic uint64_t) + CACHE_LINE - 1) &
		    ~(CACHE_LINE - 1);
	stride = slot_size / CACHE_LINE * PAIR;
	cap = pow2_floor(opts->ring_bytes / stride);
	if (cap < 2)
		cap = 2;
	/* A queue this thread freed, of this geometry: its memory again. */
	q = cmesh__queue_cache_take(cap * stride, stride, type->size);
	if (q) {
		slots = q->slots;
		scratch = q->scratch;
	} else {
		q = aligned_alloc(PAIR, sizeof(*q));
		if (!q)
			return -ENOMEM;
	}
	memset(q, 0, sizeof(*q));
	q->h.type = type;
	q->h.has_ports = cmesh__type_has_endpoints(type);
	q->h.spare_tx = q;
	r = -ENOMEM;
	q->msg_size = type->size;
	q->msg_span = span;
	q->slot_size = slot_size;
	q->inline_cap = q->slot_size - SLOT_HDR - q->msg_span -
			(uint32_t)sizeof(_Atomic uint64_t);
	q->stride = stride;
	q->mask = cap - 1;
	q->scramble = (uint32_t)__builtin_ctzll(cap) / 2 + 1;
	q->spin_adapt = opts->spin_ns == CMESH_SPIN_ADAPTIVE;
	q->spin_ns = q->spin_adapt     ? CMESH_SPIN_ADAPTIVE_MAX_NS :
		     opts->spin_ns > 0 ? opts->spin_ns :
					 0;
	atomic_init(&q->spin_win, q->spin_ns);
	q->max_trail = opts->max_trail;
	q->max_backlog = opts->max_backlog;
	atomic_init(&q->tx_lane, opts->tx_lane);
	q->rx_lane = opts->rx_lane;
	atomic_init(&q->st_remote, opts->rx_lane != NULL);
	q->fast_send = !type->nfields;
	q->fast_trail = q->inline_cap < q->max_trail ? q->inline_cap :
						       q->max_trail;
	q->slots = slots ? slots :
			   cmesh__slots_alloc(slots_bytes(q), q->stride);
	if (!q->slots)
		goto out_free;
	q->scratch = scratch ? scratch : malloc(q->msg_size);
	if (!q->scratch)
		goto out_free_slots;
	atomic_init(&q->state, 0);
	atomic_init(&q->ovf_mode, 0);
	atomic_init(&q->ovf_bytes, 0);
	atomic_init(&q->nsenders, opts->nsenders);
	atomic_init(&q->refs, opts->tx_lane || opts->rx_lane ? 1 : 2);
	atomic_init(&q->tail, 0);
	atomic_init(&q->head_cache, 0);
	atomic_init(&q->head_pub, 0);
	q->head_slot = slot_at(q, 0);
	q->ovf_tailp = &q->ovf_head;
	if (pthread_mutex_init(&q->lock, NULL))
		goto out_free_scratch;
	if (pthread_mutex_init(&q->drain_lock, NULL))
		goto out_destroy_lock;
	*out = q;
	return 0;

out_destroy_lock:
	pthread_mutex_destroy(&q->lock);
out_free_scratch:
	free(q->scratch);
out_free_slots:
	cmesh__slots_free(q->slots, slots_bytes(q), q->stride, true);
out_free:
	free(q);
	return r;
}

/* ---- producer side ---- */

/* Copies the message, and its trail or heap pointer, into a node. */
static void fill_node(const struct cmesh__queue *q, struct ovf_node *n,
		      const void *msg, const void *trail, size_t len,
		      void *heap)
{
	cmesh__copy_small(n->data, msg, q->msg_size);
	if (heap)
		memcpy(n->data + q->msg_span, &heap, sizeof(heap));
	else if (len)
		memcpy(n->data + q->msg_span, trail, len);
}

static inline __attribute__((always_inline)) int
ring_try_push(struct cmesh__queue *q, const void *msg, const void *trail,
	      size_t len, void *heap)
{
	uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
	uint64_t cap = q->mask + 1, head;
	struct slot *s;

	for (;;) {
		/* Pairs with the release store of whoever refreshed it. */
		head = atomic_load_explicit(&q->head_cache,
					    memory_order_acquire);
		if (pos - head >= cap) { /* full, or pos is stale (< head) */
			/* Pairs with the consumer's release store of head. */
			head = atomic_load_explicit(&q->head_pub,
						    memory_order_acquire);
			atomic_store_explicit(&q->head_cache, head,
					      memory_order_release);
			if ((int64_t)(pos - head) < 0) {
				/* Our tail is older than the consumer. */
				pos = atomic_load_explicit(
					&q->tail, memory_order_relaxed);
				continue;
			}
			if (pos - head >= cap)
				return -EAGAIN; /* full */
		}
		/* Before the CAS: its latency then hides the slot_index(). */
		s = slot_at(q, pos);
		/* seq_cst: Dekker with the receiver's sleep, see top. */
		if (atomic_compare_exchange_weak_explicit(
			    &q->tail, &pos, pos + 1, memory_order_seq_cst,
			    memory_order_relaxed))
			break;
	}
	/*
	 * Write the slot's later lines first, then its first line (header,
	 * head of the message, seq) in one run of stores: stores commit in
	 * program order, so the first line is then needed only once, not
	 * lost to the polling consumer between two of our stores to it.
	 */
	if (q->msg_size > FIRST_LINE_MSG)
		slot_put(s, SLOT_HDR + FIRST_LINE_MSG,
			 (const unsigned char *)msg + FIRST_LINE_MSG,
			 q->msg_size - FIRST_LINE_MSG);
	if (heap)
		slot_put(s, slot_extra(q), &heap, sizeof(heap));
	else if (len)
		slot_put(s, slot_extra(q), trail, len);
	if (q->msg_size > FIRST_LINE_MSG)
		__builtin_memcpy(slot_byte(s, SLOT_HDR), msg, FIRST_LINE_MSG);
	else
		cmesh__copy_small(slot_byte(s, SLOT_HDR), msg, q->msg_size);
	s->trail_len = (uint32_t)len;
	s->flags = heap ? SLOT_HEAP : 0;
	/* Publish; pairs with the consumer's acquire (and Dekker, see top). */
	atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
	return 0;
}

/* Bytes an overflowed message holds: its node, and its heap trail. */
static uint64_t node_cost(const struct cmesh__queue *q, uint32_t len, bool heap)
{
	return sizeof(struct ovf_node) + q->msg_span +
	       (heap ? sizeof(void *) + len : len);
}

/*
 * Queues behind the ring (in order), or in it if it has room again.
 * -ENOBUFS once the list holds max_backlog bytes, -ENOMEM; then nothing
 * is queued and the caller still owns msg's resources and `heap`. 1: the
 * receiver moved to another process (the ring is sealed): nothing is
 * queued, tx_lane takes the message.
 */
static int overflow_push(struct cmesh__queue *q, const void *msg,
			 const void *trail, size_t len, void *heap)
{
	struct ovf_node *n;
	size_t extra = heap ? sizeof(void *) : len;
	uint64_t cost = node_cost(q, (uint32_t)len, heap);

	pthread_mutex_lock(&q->lock);
	/* The receiver moved (its move holds `lock`): the lane takes it. */
	if (atomic_load_explicit(&q->tx_lane, memory_order_relaxed)) {
		pthread_mutex_unlock(&q->lock);
		return 1;
	}
	if (!atomic_load_explicit(&q->ovf_mode, memory_order_relaxed) &&
	    ring_try_push(q, msg, trail, len, heap) == 0)
		goto out_unlock;
	if (q->max_backlog &&
	    atomic_load_explicit(&q->ovf_bytes, memory_order_relaxed) + cost >
		    q->max_backlog) {
		pthread_mutex_unlock(&q->lock);
		return -ENOBUFS;
	}
	n = malloc(sizeof(*n) + q->msg_span + extra);
	if (!n) {
		pthread_mutex_unlock(&q->lock);
		return -ENOMEM;
	}
	n->next = NULL;
	n->heap = heap;
	n->trail_len = (uint32_t)len;
	fill_node(q, n, msg, trail, len, heap);
	atomic_fetch_add_explicit(&q->ovf_bytes, cost, memory_order_relaxed);
	*q->ovf_tailp = n;
	q->ovf_tailp = &n->next;
	atomic_store_explicit(&q->ovf_mode, 1, memory_order_release);
out_unlock:
	pthread_mutex_unlock(&q->lock);
	/* Dekker with the receiver's sleep: published() loads `state`. */
	atomic_thread_fence(memory_order_seq_cst);
	return 0;
}

/*
 * Clears the sleeper bits (and sets `set`) in one seq_cst RMW, then wakes
 * whoever was sleeping: the parked receiver and/or the waitset.
 */
static void wake(struct cmesh__queue *q, uint32_t set)
{
	uint32_t old = atomic_load_explicit(&q->state, memory_order_relaxed);
	uint32_t nw;

	do {
		nw = (old | set) & ~ST_SLEEPERS;
	} while (!atomic_compare_exchange_weak_explicit(&q->state, &old, nw,
							memory_order_seq_cst,
							memory_order_relaxed));
	if (old & ST_RX_SLEEP)
		cmesh__park_wake(&q->state);
	if (old & (ST_WS_ARMED | ST_WS_FUTEX)) {
		pthread_mutex_lock(&q->lock);
		if (q->ws && (old & ST_WS_ARMED))
			cmesh__eventfd_signal(q->ws_efd);
		if (q->ws && (old & ST_WS_FUTEX)) {
			/* Pairs with the waitset's acquire load before it
			 * arms (waitset.c). */
			atomic_fetch_add_explicit(q->ws_word, 1,
						  memory_order_release);
			cmesh__park_wake(q->ws_word);
		}
		pthread_mutex_unlock(&q->lock);
	}
}

static void drain(struct cmesh__queue *q);

/* After a publish: drops it if the receiver closed meanwhile, else wakes. */
static __attribute__((noinline)) void notify(struct cmesh__queue *q,
					     uint32_t st)
{
	if (st & ST_RX_CLOSED)
		drain(q); /* the receiver closed meanwhile: drop, release */
	else
		wake(q, 0);
}

/* After a publish (ring or overflow list): who must hear of it? */
static inline void published(struct cmesh__queue *q)
{
	uint32_t st;

	/* Dekker with the receiver's sleep: after our seq_cst claim. */
	st = atomic_load_explicit(&q->state, memory_order_seq_cst);
	if (unlikely(st & (ST_SLEEPERS | ST_RX_CLOSED)))
		notify(q, st);
}

/* Every send the fast path below does not take. */
static __attribute__((noinline)) int send_slow(struct cmesh__queue *q,
					       const void *msg,
					       const void *trail, size_t len)
{
	void *heap = NULL;
	int r;

	if (unlikely(q->h.type->nfields)) {
		r = cmesh__type_prepare_move(q->h.type, msg);
		if (r)
			goto out_release;
	}
	if (unlikely(len > q->max_trail)) {
		r = -EMSGSIZE;
		goto out_release;
	}
	if (unlikely(atomic_load_explicit(&q->state, memory_order_relaxed) &
		     ST_RX_CLOSED)) {
		r = cmesh__queue_closed_err(q, ST_RX_FAILED);
		goto out_release;
	}
	if (unlikely(len > q->inline_cap)) {
		heap = malloc(len);
		if (!heap) {
			r = -ENOMEM;
			goto out_release;
		}
		memcpy(heap, trail, len);
	}
	if (unlikely(
		    atomic_load_explicit(&q->ovf_mode, memory_order_relaxed)) ||
	    unlikely(ring_try_push(q, msg, trail, len, heap))) {
		r = overflow_push(q, msg, trail, len, heap);
		if (r == 1) {
			free(heap);
			/* Endpoints must become ports: port.c sends again. */
			if (q->h.type->nfields &&
			    cmesh__type_has_endpoints(q->h.type))
				return -EXDEV;
			/*
			 * Seen under `lock`, but the receiver may have come
			 * home since (NULL), or its lane been sealed (-ESTALE,
			 * nothing taken): here then.
			 */
			struct cmesh__lane *ln = atomic_load_explicit(
				&q->tx_lane, memory_order_acquire);

			r = ln ? cmesh__lane_send(ln, msg, trail, len) :
				 -ESTALE;
			return r == -ESTALE ? send_slow(q, msg, trail, len) : r;
		}
		if (r)
			goto out_free_heap;
	}
	published(q);
	return 0;

out_free_heap:
	free(heap);
out_release:
	cmesh__type_release(q->h.type, msg);
	return r;
}

/*
 * A remote receiver: the lane's send. Else the fast path, kept small so
 * that it needs few registers and no calls: a type without resources, an
 * inline trail, a ring that is not full and not overflowing. Anything else
 * goes to send_slow(), which repeats the checks.
 */
int cmesh__queue_send(struct cmesh__queue *q, const void *msg,
		      const void *trail, size_t len)
{
	/* Pairs with the release store of a receiver's move (or creation). */
	struct cmesh__lane *ln =
		atomic_load_explicit(&q->tx_lane, memory_order_acquire);

	if (ln) {
		int r;

		/* Endpoints become ports (port.c), which looks again. */
		if (unlikely(q->h.has_ports))
			return -EXDEV;
		/* Its claim was refused: tried again when due. */
		if (unlikely(atomic_load_explicit(&q->claim_retry_at,
						  memory_order_relaxed)))
			cmesh__queue_claim_again(q);
		r = cmesh__lane_send_inline(ln, msg, trail, len);
		/* Sealed: the receiver came home (nothing taken): here now. */
		if (unlikely(r == -ESTALE))
			return send_slow(q, msg, trail, len);
		return r;
	}
	if (unlikely(!q->fast_send) || unlikely(len > q->fast_trail) ||
	    unlikely(atomic_load_explicit(&q->state, memory_order_relaxed) &
		     ST_RX_CLOSED) ||
	    unlikely(
		    atomic_load_explicit(&q->ovf_mode, memory_order_relaxed)) ||
	    unlikely(ring_try_push(q, msg, trail, len, NULL)))
		return send_slow(q, msg, trail, len);
	published(q);
	return 0;
}

int cmesh__queue_try_send(struct cmesh__queue *q, const void *msg,
			  const void *trail, size_t len)
{
	struct cmesh__lane *ln;
	void *heap = NULL;
	int r;

	for (;;) {
		ln = atomic_load_explicit(&q->tx_lane, memory_order_acquire);
		if (ln && unlikely(atomic_load_explicit(&q->claim_retry_at,
							memory_order_relaxed)))
			cmesh__queue_claim_again(q); /* as a send does */
		if (ln) { /* endpoint fields are NULL here: see channel.c */
			r = cmesh__lane_try_send(ln, msg, trail, len);
			if (r != -ESTALE)
				return r;
			continue; /* the receiver came home: nothing taken */
		}
		if (q->h.type->nfields) {
			r = cmesh__type_prepare_move(q->h.type, msg);
			if (r)
				goto out_release;
		}
		r = -EMSGSIZE;
		if (len > q->max_trail)
			goto out_release;
		if (atomic_load_explicit(&q->state, memory_order_relaxed) &
		    ST_RX_CLOSED) {
			r = cmesh__queue_closed_err(q, ST_RX_FAILED);
			goto out_release;
		}
		/* Behind an overflow list: order says wait. */
		if (atomic_load_explicit(&q->ovf_mode, memory_order_acquire))
			return -EAGAIN;
		if (len > q->inline_cap) {
			heap = malloc(len);
			r = -ENOMEM;
			if (!heap)
				goto out_release;
			memcpy(heap, trail, len);
		}
		if (ring_try_push(q, msg, trail, len, heap) == 0) {
			published(q);
			return 0;
		}
		free(heap);
		heap = NULL;
		/* Full, or sealed while the receiver moves: not now. Moved:
		 * its lane, from the top. */
		if (!atomic_load_explicit(&q->tx_lane, memory_order_acquire))
			return -EAGAIN;
	}

out_release:
	cmesh__type_release(q->h.type, msg);
	return r;
}

/* ---- consumer side ---- */

static bool head_ready(const struct cmesh__queue *q, memory_order mo)
{
	return atomic_load_explicit(&q->head_slot->seq, mo) == q->head + 1;
}

/* Copies the trail out (unless discarding) and frees a heap trail. */
static void take_trail(void *out, const void *inl, void *heap, uint32_t len,
		       bool discard)
{
	if (!discard && len)
		memcpy(out, heap ? heap : inl, len);
	if (heap)
		free(heap);
}

static inline __attribute__((always_inline)) int
take_ring(struct cmesh__queue *q, void *out_msg, void *out_trail, size_t cap,
	  bool discard)
{
	struct slot *s = q->head_slot;
	uint32_t len = s->trail_len;
	void *heap = NULL;

	if (!discard && len > cap)
		return -EMSGSIZE;
	slot_get(out_msg, s, SLOT_HDR, q->msg_size);
	if (s->flags & SLOT_HEAP) {
		slot_get(&heap, s, slot_extra(q), sizeof(heap));
		take_trail(out_trail, heap, heap, len, discard);
	} else if (!discard && len) {
		slot_get(out_trail, s, slot_extra(q), len);
	}
	/* Free the slot; pairs with a producer's acquire load of head_pub. */
	atomic_store_explicit(&q->head_pub, ++q->head, memory_order_release);
	q->head_slot = slot_at(q, q->head);
	prefetch_slot(q, q->head + PF_AHEAD);
	return (int)len;
}

/* The next overflowed message: the batch first, else the shared list. */
static struct ovf_node *ovf_first(const struct cmesh__queue *q)
{
	return q->ovf_batch ? q->ovf_batch : q->ovf_head;
}

/*
 * Takes the next overflowed message. The consumer moves the whole shared
 * list into its private batch under one lock, so a stream that overflows
 * costs one lock per batch on this side. ovf_mode stays 1 until both are
 * empty, which keeps every sender that overflowed on the list (FIFO).
 */
static int take_overflow(struct cmesh__queue *q, void *out_msg, void *out_trail,
			 size_t cap, bool discard)
{
	struct ovf_node *n;
	uint32_t len;

	if (!q->ovf_batch) {
		pthread_mutex_lock(&q->lock);
		if (head_ready(q, memory_order_acquire)) {
			pthread_mutex_unlock(&q->lock);
			return take_ring(q, out_msg, out_trail, cap, discard);
		}
		/*
		 * A gate set since the consumer looked (a sender came home,
		 * queue_move.c): what is queued now waits for it.
		 */
		if (!discard && atomic_load_explicit(&q->gate_serial,
						     memory_order_relaxed)) {
			pthread_mutex_unlock(&q->lock);
			return -EAGAIN;
		}
		q->ovf_batch = q->ovf_head;
		q->ovf_head = NULL;
		q->ovf_tailp = &q->ovf_head;
		if (!q->ovf_batch)
			atomic_store_explicit(&q->ovf_mode, 0,
					      memory_order_relaxed);
		pthread_mutex_unlock(&q->lock);
		if (!q->ovf_batch)
			return -EAGAIN;
	}
	/* A claimed, unpublished slot precedes the batch: wait for it. */
	n = q->ovf_batch;
	if ((atomic_load_explicit(&q->tail, memory_order_relaxed) &
	     ~TAIL_SEAL) != q->head)
		return -EAGAIN;
	if (!discard && n->trail_len > cap)
		return -EMSGSIZE;
	q->ovf_batch = n->next;
	if (!q->ovf_batch) {
		pthread_mutex_lock(&q->lock);
		if (!q->ovf_head)
			atomic_store_explicit(&q->ovf_mode, 0,
					      memory_order_relaxed);
		pthread_mutex_unlock(&q->lock);
	}
	len = n->trail_len;
	atomic_fetch_sub_explicit(&q->ovf_bytes,
				  node_cost(q, len, n->heap != NULL),
				  memory_order_relaxed);
	memcpy(out_msg, n->data, q->msg_size);
	take_trail(out_trail, n->data + q->msg_span, n->heap, len, discard);
	free(n);
	return (int)len;
}

static int pop(struct cmesh__queue *q, void *out_msg, void *out_trail,
	       size_t cap, bool discard)
{
	/* Pairs with the producer's publishing store. */
	if (likely(head_ready(q, memory_order_acquire)))
		return take_ring(q, out_msg, out_trail, cap, discard);
	if (likely(!atomic_load_explicit(&q->ovf_mode, memory_order_acquire)))
		return -EAGAIN;
	return take_overflow(q, out_msg, out_trail, cap, discard);
}

int cmesh__queue_pop(struct cmesh__queue *q, void *out_msg, void *out_trail,
		     size_t cap)
{
	return pop(q, out_msg, out_trail, cap, false);
}

int cmesh__queue_try_primary(struct cmesh__queue *q, void *out_msg,
			     void *out_trail, size_t cap,
			     struct cmesh__ports_in *pin)
{
	int r;

	if (q->rx_lane)
		return cmesh__lane_try_recv(q->rx_lane, out_msg, out_trail, cap,
					    pin);
	r = pop(q, out_msg, out_trail, cap, false);

	if (r != -EAGAIN)
		return r;
	/* Pairs with the last sender's CAS setting ST_TX_CLOSED. */
	if (!(atomic_load_explicit(&q->state, memory_order_acquire) &
	      ST_TX_CLOSED))
		return -EAGAIN;
	r = pop(q, out_msg, out_trail, cap, false);
	return r == -EAGAIN ? cmesh__queue_closed_err(q, ST_TX_FAILED) : r;
}

static int try_recv(struct cmesh__queue *q, void *out_msg, void *out_trail,
		    size_t cap, struct cmesh__ports_in *pin)
{
	int r;

	if (unlikely(atomic_load_explicit(&q->xl_flags, memory_order_acquire)))
		return cmesh__queue_xl_try_recv(q, out_msg, out_trail, cap,
						pin);
	r = cmesh__queue_try_primary(q, out_msg, out_trail, cap, pin);
	/*
	 * A lane listed for claims ends on the lanes' path (rx_ref), and a
	 * claim's mark is acted on there.
	 */
	if (unlikely(r == -EPIPE && q->rx_ref) ||
	    unlikely(r == CMESH__LANE_MARK))
		return cmesh__queue_xl_try_recv(q, out_msg, out_trail, cap,
						pin);
	return r;
}

static bool overflow_ready(struct cmesh__queue *q)
{
	bool ready;

	pthread_mutex_lock(&q->lock);
	ready = head_ready(q, memory_order_acquire) ||
		(ovf_first(q) &&
		 (atomic_load_explicit(&q->tail, memory_order_relaxed) &
		  ~TAIL_SEAL) == q->head);
	pthread_mutex_unlock(&q->lock);
	return ready;
}

const _Atomic uint64_t *cmesh__queue_head_word(const struct cmesh__queue *q,
					       uint64_t *want)
{
	*want = q->head + 1;
	return &q->head_slot->seq;
}

bool cmesh__queue_local_ready(struct cmesh__queue *q)
{
	if (head_ready(q, memory_order_acquire))
		return true;
	if (atomic_load_explicit(&q->ovf_mode, memory_order_acquire) &&
	    overflow_ready(q))
		return true;
	return atomic_load_explicit(&q->state, memory_order_acquire) &
	       ST_TX_CLOSED;
}

/* Would a receive return something other than -EAGAIN? seq_cst: Dekker. */
bool cmesh__queue_ready(struct cmesh__queue *q)
{
	if (unlikely(atomic_load_explicit(&q->xl_flags, memory_order_acquire)))
		return cmesh__queue_xl_ready(q);
	if (q->rx_lane)
		return cmesh__lane_ready(q->rx_lane);
	return cmesh__queue_local_ready(q);
}

/*
 * Cheap hint for the spin loop, besides the head slot's seq: overflowed
 * messages, or every sender gone (a local queue; a lane polls).
 */
static bool maybe_ready(const struct cmesh__queue *q)
{
	return atomic_load_explicit(&q->ovf_mode, memory_order_relaxed) ||
	       (atomic_load_explicit(&q->state, memory_order_relaxed) &
		ST_TX_CLOSED);
}

/*
 * Spins until something may be ready, or for `spin_ns` (at most until
 * `deadline`). The clock is first read after a round of polls: a message
 * already on its way is caught without paying for a clock read.
 */
static void spin(struct cmesh__queue *q, int64_t spin_ns, int64_t deadline)
{
	/* A local queue's next slot: its seq, and its last line's word. */
	const _Atomic uint64_t *seq = NULL, *tw = NULL;
	const uint64_t want = q->head + 1;
	uint64_t sink = 0;
	int64_t until = 0;

	if (!q->rx_lane) {
		seq = &q->head_slot->seq;
		tw = slot_tail_word(q, q->head);
	}

	for (;;) {
		int64_t now;

		if (unlikely(atomic_load_explicit(&q->xl_flags,
						  memory_order_relaxed))) {
			/* Several sources: poll each one's word. */
			if (cmesh__queue_xl_spin(q, SPIN_CLOCK_EVERY))
				break;
		} else if (q->rx_lane) {
			uint64_t lw = 0;
			const _Atomic uint64_t *ls =
				cmesh__lane_spin_word(q->rx_lane, &lw);

			for (int i = 0; i < SPIN_CLOCK_EVERY; i++) {
				/* A hint: the receive validates the record. */
				if (ls &&
				    cmesh__lane_spin_match(
					    atomic_load_explicit(
						    ls, memory_order_relaxed),
					    lw)) {
					cmesh__lane_spin_hit(q->rx_lane);
					goto out;
				}
				cmesh__park_pause();
			}
			/*
			 * Once per round: a failure, a close, an attachment,
			 * or a seq no honest producer leaves.
			 */
			if (cmesh__lane_ready(q->rx_lane))
				break;
		} else {
			for (int i = 0; i < SPIN_CLOCK_EVERY; i++) {
				/* Hints only: pop() looks again (acquire). */
				if (atomic_load_explicit(
					    seq, memory_order_relaxed) ==
					    want ||
				    maybe_ready(q))
					goto out;
				sink += atomic_load_explicit(
					tw, memory_order_relaxed);
				cmesh__park_pause();
			}
		}
		now = cmesh_clock_now();
		if (!until)
			until = deadline - now > spin_ns ? now + spin_ns :
							   deadline;
		if (now >= until)
			break;
	}
out:
	__asm__ volatile("" : : "r"(sink));
}

bool cmesh__queue_in_flight(struct cmesh__queue *q)
{
	uint64_t tail;

	/* After the caller's seq_cst RMW; orders the ovf_mode load too. */
	atomic_thread_fence(memory_order_seq_cst);
	tail = atomic_load_explicit(&q->tail, memory_order_seq_cst) &
	       ~TAIL_SEAL;
	return tail != atomic_load_explicit(&q->head_pub,
					    memory_order_relaxed) &&
	       !head_ready(q, memory_order_acquire);
}

/* A claim in flight: yield to its producer, then nap (park.h). */
int64_t cmesh__queue_sleep_cap(struct cmesh__queue *q, int64_t deadline)
{
	return cmesh__park_in_flight_cap(cmesh__queue_in_flight(q),
					 &q->in_flight_looks, deadline);
}

/* Parks until a sender wakes us or the deadline passes. */
static int sleep_until(struct cmesh__queue *q, int64_t deadline)
{
	int64_t until;
	uint32_t st;
	int r = 0;

	if (unlikely(atomic_load_explicit(&q->xl_flags, memory_order_acquire)))
		return cmesh__queue_xl_sleep(q, deadline);
	if (q->rx_lane)
		return cmesh__lane_sleep(q->rx_lane, deadline);
	/* Dekker with the producer's claim + state load, see top. */
	st = atomic_fetch_or_explicit(&q->state, ST_RX_SLEEP,
				      memory_order_seq_cst) |
	     ST_RX_SLEEP;
	until = cmesh__queue_sleep_cap(q, deadline);
	if (until && !cmesh__queue_ready(q))
		r = cmesh__park_wait(&q->state, st, until);
	atomic_fetch_and_explicit(&q->state, ~ST_RX_SLEEP,
				  memory_order_relaxed);
	/* A nap's end is not the caller's deadline. */
	return r == -ETIMEDOUT && until < deadline ? 0 : r;
}

/* A consumer's counter: one writer, so no atomic RMW. */
static void count(_Atomic uint64_t *c)
{
	atomic_store_explicit(c,
			      atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

void cmesh__queue_stats(struct cmesh__queue *q, cmesh_receiver_stats *out)
{
	uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed) &
			~TAIL_SEAL;
	uint64_t head =
		atomic_load_explicit(&q->head_pub, memory_order_relaxed);

	out->ring_slots = q->mask + 1;
	out->ring_used = tail > head ? tail - head : 0;
	out->overflow_bytes =
		atomic_load_explicit(&q->ovf_bytes, memory_order_relaxed);
	out->remote = atomic_load_explicit(&q->st_remote, memory_order_relaxed);
	out->lanes = atomic_load_explicit(&q->st_lanes, memory_order_relaxed);
	out->waits = atomic_load_explicit(&q->st_waits, memory_order_relaxed);
	out->caught = atomic_load_explicit(&q->st_caught, memory_order_relaxed);
	out->sleeps = atomic_load_explicit(&q->st_sleeps, memory_order_relaxed);
	out->spin_ns = atomic_load_explicit(&q->spin_win, memory_order_relaxed);
}

/* Every receive the fast path below does not finish. */
static __attribute__((noinline)) int recv_slow(struct cmesh__queue *q,
					       int64_t deadline, void *out_msg,
					       void *out_trail, size_t cap,
					       struct cmesh__ports_in *pin)
{
	int64_t budget =
		atomic_load_explicit(&q->spin_win, memory_order_relaxed);
	bool spun = budget == 0 || deadline <= 0, waited = false;
	bool slept = false;
	int64_t t0 = 0;
	int r;

	for (;;) {
		r = try_recv(q, out_msg, out_trail, cap, pin);
		if (r != -EAGAIN)
			break;
		if (unlikely(cmesh__park_cancelled()))
			return -ECANCELED; /* its context ended: no wait */
		if (!waited && deadline > 0) {
			waited = true;
			count(&q->st_waits);
			if (q->spin_adapt)
				t0 = cmesh_clock_now();
		}
		if (!spun) {
			spun = true;
			spin(q, budget, deadline);
			continue;
		}
		if (cmesh_clock_now() >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		slept = true;
		count(&q->st_sleeps);
		r = sleep_until(q, deadline);
		if (r == -ETIMEDOUT || r == -ECANCELED) {
			int e = r;

			r = try_recv(q, out_msg, out_trail, cap, pin);
			if (r == -EAGAIN)
				r = e;
			break;
		}
	}
	if (waited && r >= 0 && !slept && budget)
		count(&q->st_caught);
	/*
	 * Adaptive: learn from a wait that slept and got a message, or that
	 * timed out past the maximum (slept or not: a preempted spin may run
	 * into the deadline). A shorter timeout says nothing either way.
	 */
	if (waited && q->spin_adapt && ((r >= 0 && slept) || r == -ETIMEDOUT)) {
		int64_t end = cmesh_clock_now(), w;

		/* A timeout tells of the time up to its deadline only. */
		w = (r == -ETIMEDOUT && end > deadline ? deadline : end) - t0;

		if (r >= 0 || w > q->spin_ns)
			atomic_store_explicit(&q->spin_win,
					      cmesh__spin_learn(budget,
								q->spin_ns, w),
					      memory_order_relaxed);
	}
	return r;
}

/* The fast path: a local queue whose next slot is published. */
int cmesh__queue_recv(struct cmesh__queue *q, int64_t deadline, void *out_msg,
		      void *out_trail, size_t cap)
{
	/* Pairs with the producer's publishing store. */
	if (likely(!q->rx_lane) && likely(head_ready(q, memory_order_acquire)))
		return take_ring(q, out_msg, out_trail, cap, false);
	return recv_slow(q, deadline, out_msg, out_trail, cap, NULL);
}

int cmesh__queue_recv_ports(struct cmesh__queue *q, int64_t deadline,
			    void *out_msg, void *out_trail, size_t cap,
			    struct cmesh__ports_in *pin)
{
	return recv_slow(q, deadline, out_msg, out_trail, cap, pin);
}

int cmesh__queue_local_len(struct cmesh__queue *q)
{
	int r = -EAGAIN;

	if (head_ready(q, memory_order_acquire))
		return (int)q->head_slot->trail_len;
	if (atomic_load_explicit(&q->ovf_mode, memory_order_acquire)) {
		pthread_mutex_lock(&q->lock);
		if (head_ready(q, memory_order_acquire))
			r = (int)q->head_slot->trail_len;
		else if (ovf_first(q) &&
			 (atomic_load_explicit(&q->tail, memory_order_relaxed) &
			  ~TAIL_SEAL) == q->head)
			r = (int)ovf_first(q)->trail_len;
		pthread_mutex_unlock(&q->lock);
	}
	return r;
}

int cmesh__queue_peek(struct cmesh__queue *q)
{
	int r;

	if (unlikely(atomic_load_explicit(&q->xl_flags, memory_order_acquire)))
		return cmesh__queue_xl_peek(q);
	r = cmesh__queue_peek_primary(q);
	/* As try_recv(). */
	return unlikely(r == -EPIPE && q->rx_ref) ||
			       unlikely(r == CMESH__LANE_MARK) ?
		       cmesh__queue_xl_peek(q) :
		       r;
}

int cmesh__queue_peek_primary(struct cmesh__queue *q)
{
	int r;

	if (q->rx_lane)
		return cmesh__lane_peek(q->rx_lane);
	r = cmesh__queue_local_len(q);
	if (r != -EAGAIN)
		return r;
	/* Pairs with the last sender's CAS setting ST_TX_CLOSED. */
	if (!(atomic_load_explicit(&q->state, memory_order_acquire) &
	      ST_TX_CLOSED))
		return -EAGAIN;
	/* Everything sent is visible now: look once more. */
	r = cmesh__queue_local_len(q);
	return r == -EAGAIN ? cmesh__queue_closed_err(q, ST_TX_FAILED) : r;
}

struct cmesh__lane *cmesh__queue_rx_lane(struct cmesh__queue *q)
{
	return q->rx_lane;
}

/*
 * Whether an answer about `ln`, the lane tx_lane held, is stale: the
 * receiver came home meanwhile (`ln` sealed, tx_lane moved on).
 */
static bool stale_lane(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	return cmesh__lane_sealed(ln) &&
	       atomic_load_explicit(&q->tx_lane, memory_order_acquire) != ln;
}

int cmesh__queue_rx_gone(struct cmesh__queue *q)
{
	struct cmesh__lane *ln;
	uint32_t st;
	int r;

	while ((ln = atomic_load_explicit(&q->tx_lane, memory_order_acquire))) {
		r = cmesh__lane_rx_gone(ln);
		if (!r || !stale_lane(q, ln))
			return r;
	}
	st = atomic_load_explicit(&q->state, memory_order_acquire);
	return st & ST_RX_FAILED ? -ECONNRESET : !!(st & ST_RX_CLOSED);
}

int cmesh__queue_flush(struct cmesh__queue *q, int64_t deadline)
{
	struct cmesh__lane *ln;
	int r;

	/* In one process a sent message is in the queue already. */
	while ((ln = atomic_load_explicit(&q->tx_lane, memory_order_acquire))) {
		r = cmesh__lane_flush(ln, deadline);
		if (!r || r == -ETIMEDOUT || r == -ECANCELED ||
		    !stale_lane(q, ln))
			return r;
	}
	return 0;
}

int cmesh__queue_wake_fds(struct cmesh__queue *q, int out[2])
{
	return q->rx_lane ? cmesh__lane_wake_fds(q->rx_lane, out) : 0;
}

void cmesh__queue_disarm(struct cmesh__queue *q, bool drain)
{
	if (q->rx_lane)
		cmesh__lane_arm(q->rx_lane, false, drain);
	cmesh__queue_xl_arm(q, false, false);
}

bool cmesh__queue_arm_futex(struct cmesh__queue *q, bool on)
{
	bool lanes = cmesh__queue_xl_arm(q, on, true);

	if (q->rx_lane)
		return cmesh__lane_arm_futex(q->rx_lane, on) || lanes;
	if (!on) {
		atomic_fetch_and_explicit(&q->state, ~ST_WS_FUTEX,
					  memory_order_relaxed);
		return false;
	}
	/* Dekker with the producer's claim, as cmesh__queue_arm(). */
	atomic_fetch_or_explicit(&q->state, ST_WS_FUTEX, memory_order_seq_cst);
	return cmesh__queue_in_flight(q) || lanes;
}

bool cmesh__queue_arm(struct cmesh__queue *q)
{
	/* A receiver's lanes (its senders sent away) too: queue_port.c. */
	bool lanes = cmesh__queue_xl_arm(q, true, false);

	if (q->rx_lane)
		return cmesh__lane_arm(q->rx_lane, true, false) || lanes;
	/* Dekker with the producer's claim, see top; the caller re-checks
	 * ready. */
	atomic_fetch_or_explicit(&q->state, ST_WS_ARMED, memory_order_seq_cst);
	return cmesh__queue_in_flight(q) || lanes;
}

int cmesh__queue_set_waitset(struct cmesh__queue *q, struct cmesh_waitset *ws,
			     int efd, _Atomic uint32_t *word)
{
	int r = 0;

	pthread_mutex_lock(&q->lock);
	if (ws && q->ws) {
		r = -EBUSY;
	} else {
		q->ws = ws;
		q->ws_efd = efd;
		q->ws_word = word;
		if (!ws)
			atomic_fetch_and_explicit(&q->state,
						  ~(ST_WS_ARMED | ST_WS_FUTEX),
						  memory_order_relaxed);
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

struct cmesh_waitset *cmesh__queue_waitset(struct cmesh__queue *q)
{
	struct cmesh_waitset *ws;

	pthread_mutex_lock(&q->lock);
	ws = q->ws;
	pthread_mutex_unlock(&q->lock);
	return ws;
}

/* ---- lifetime ---- */

/* Drops every queued message, releasing its resources (receiver gone). */
static void drain(struct cmesh__queue *q)
{
	pthread_mutex_lock(&q->drain_lock);
	while (pop(q, q->scratch, NULL, 0, true) >= 0)
		cmesh__type_release(q->h.type, q->scratch);
	pthread_mutex_unlock(&q->drain_lock);
}

/*
 * After the receiver's close (its seq_cst RMW, see top): drops every
 * message claimed before it, yielding a few times to those still being
 * written. Later claimers saw ST_RX_CLOSED and drain their own. One that
 * stays between claim and publish longer (descheduled, stopped in a
 * signal handler) is not waited for: the close never blocks; its message
 * goes with its producer's next send or with the queue's last reference.
 */
static void drain_claimed(struct cmesh__queue *q)
{
	uint64_t tail;

	atomic_thread_fence(memory_order_seq_cst);
	tail = atomic_load_explicit(&q->tail, memory_order_seq_cst) &
	       ~TAIL_SEAL;
	for (int i = 0;; i++) {
		drain(q);
		if (atomic_load_explicit(&q->head_pub, memory_order_acquire) >=
			    tail ||
		    i == CMESH__IN_FLIGHT_YIELDS)
			return;
		sched_yield();
	}
}

static void destroy(struct cmesh__queue *q)
{
	pthread_mutex_destroy(&q->drain_lock);
	pthread_mutex_destroy(&q->lock);
	/* Small rings: kept whole by this thread for its next queue. */
	if (slots_bytes(q) <= CMESH__SLOTS_HEAP_MAX) {
		slots_reset(q);
		if (cmesh__queue_cache_put(q))
			return;
	}
	cmesh__queue_free_mem(q);
}

void cmesh__queue_free_mem(struct cmesh__queue *q)
{
	free(q->scratch);
	slots_release(q);
	free(q);
}

uint64_t cmesh__queue_fingerprint(struct cmesh__queue *q)
{
	/* Pairs with the release store below (of this or another thread). */
	uint64_t fp = atomic_load_explicit(&q->h.fp, memory_order_acquire);

	if (!fp) {
		/* The type was checked at creation: this cannot fail. */
		(void)cmesh_type_fingerprint(q->h.type, &fp);
		atomic_store_explicit(&q->h.fp, fp, memory_order_release);
	}
	return fp;
}

void cmesh__queue_discard(struct cmesh__queue *q)
{
	destroy(q);
}

/* The queue's own lane goes: to its link, or freed (failed alone). */
static void lane_put(struct cmesh__lane *ln)
{
	struct cmesh__link *l = ln->link;

	/* A port's lane stays with its link until the peer is done too
	 * (the link may free it at once: `ln` is not used after this). */
	if (ln->failed_alone)
		cmesh__lane_free(ln);
	else if (ln->dynamic)
		cmesh__link_lane_release(ln);
	cmesh__link_put(l);
}

/*
 * An imported reply port's queue (port.c) at its last put, whose one use
 * ended with its LAST record on its kept lane, and nothing else: no
 * receiver here, no local message, no claim, no failure.
 */
static bool parkable(struct cmesh__queue *q, struct cmesh__lane *ln)
{
	return ln && ln->poolable && ln->is_out && ln->dynamic &&
	       !ln->failed_alone &&
	       atomic_load_explicit(&ln->last_sent, memory_order_relaxed) &&
	       atomic_load_explicit(&q->tx_lane, memory_order_relaxed) == ln &&
	       q->closed_out && !q->rx_lane && !q->xl_n && !q->old_lanes &&
	       !q->claim_out && q->mask == 1 &&
	       !atomic_load_explicit(&q->tx_failed, memory_order_relaxed) &&
	       !atomic_load_explicit(&q->xl_flags, memory_order_relaxed) &&
	       !atomic_load_explicit(&q->ovf_mode, memory_order_relaxed) &&
	       !q->ovf_head && !q->ovf_batch &&
	       atomic_load_explicit(&q->tail, memory_order_relaxed) == q->head;
}

void cmesh__queue_put(struct cmesh__queue *q)
{
	struct cmesh__lane *ln, *old, *next_old, *claim;

	if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
		return;
	/* Ours alone now: a claim may have moved tx_lane until the last put. */
	ln = atomic_load_explicit(&q->tx_lane, memory_order_acquire);
	if (!ln)
		ln = q->rx_lane;
	/* Its receiver can come home no more (cmesh__queue_tryget()). */
	if (ln && ln->is_out &&
	    atomic_load_explicit(&ln->home_q, memory_order_relaxed) == q)
		cmesh__link_lane_home_set(ln, NULL);
	/* A reply port whose use ended with its LAST: kept for the next. */
	if (parkable(q, ln) && cmesh__queue_park(q, ln->serial)) {
		lane_put(ln);
		return;
	}
	old = q->old_lanes;   /* the lanes it left, sealed */
	claim = q->claim_out; /* a sender's claim that never took */
	if (claim) {
		cmesh__link_lane_home_set(claim, NULL);
		/* The receiver's process may read it: it ends, empty. */
		if (!atomic_load_explicit(&claim->dropped,
					  memory_order_acquire))
			cmesh__lane_close_tx(claim);
	}
	drain(q);
	destroy(q);
	if (claim)
		lane_put(claim);
	if (ln)
		lane_put(ln);
	for (; old; old = next_old) {
		next_old = old->old_next;
		lane_put(old);
	}
}

void cmesh__queue_wake(struct cmesh__queue *q, uint32_t set)
{
	wake(q, set);
}

void cmesh__queue_sender_get(struct cmesh__queue *q)
{
	atomic_fetch_add_explicit(&q->nsenders, 1, memory_order_relaxed);
}

void cmesh__queue_sender_put(struct cmesh__queue *q)
{
	struct cmesh__lane *ln;
	bool close_lane = false, failed;

	/* seq_cst: Dekker with the receiver's move, below. */
	if (atomic_fetch_sub_explicit(&q->nsenders, 1, memory_order_seq_cst) !=
	    1)
		return;
	failed = atomic_load_explicit(&q->tx_failed, memory_order_relaxed);
	/*
	 * The receiver may be moving (cmesh__queue_move_rx()): it stores the
	 * lane, then loads `nsenders`, both seq_cst. Whoever sees both the
	 * lane and no sender left sends its CLOSE, once (`closed_out`, under
	 * `lock`). No lane here: the move, if any, sees our decrement and
	 * sends it; a local queue's last sender takes no lock.
	 */
	ln = atomic_load_explicit(&q->tx_lane, memory_order_seq_cst);
	if (ln) {
		pthread_mutex_lock(&q->lock);
		/* The receiver may have come home (queue_move.c): local. */
		ln = atomic_load_explicit(&q->tx_lane, memory_order_relaxed);
		if (ln && !q->closed_out)
			close_lane = q->closed_out = true;
		pthread_mutex_unlock(&q->lock);
	}
	if (close_lane && failed)
		cmesh__lane_fail_tx(ln);
	else if (close_lane)
		cmesh__lane_close_tx(ln);
	else if (!ln)
		wake(q, ST_TX_CLOSED | (failed ? ST_TX_FAILED : 0));
	cmesh__queue_put(q);
}

void cmesh__queue_sender_fail(struct cmesh__queue *q)
{
	/* Read by the last sender's put, after the acq_rel decrement. */
	atomic_store_explicit(&q->tx_failed, true, memory_order_relaxed);
	cmesh__queue_sender_put(q);
}

void cmesh__queue_receiver_fail(struct cmesh__queue *q)
{
	q->rx_failed = true; /* the receiver's: read by the close */
	cmesh__queue_receiver_close(q);
}

void cmesh__queue_senders_done(struct cmesh__queue *q)
{
	q->senders_done = true;
}

void cmesh__queue_receiver_close(struct cmesh__queue *q)
{
	/*
	 * First: from here on no lane is added (cmesh__queue_add_rx_lane()
	 * checks it under `lock`, which the close of the lanes takes).
	 */
	uint32_t st = atomic_fetch_or_explicit(
		&q->state, ST_RX_CLOSED | (q->rx_failed ? ST_RX_FAILED : 0),
		memory_order_seq_cst);

	cmesh__queue_xl_close(q);
	if (q->rx_lane) {
		if (q->rx_failed)
			cmesh__lane_fail_rx(q->rx_lane);
		else
			cmesh__lane_close_rx(q->rx_lane);
		cmesh__queue_rx_unref(q); /* its sender reference, if any */
		/* A sender that came here queued behind the lane: theirs go. */
		if (atomic_load_explicit(&q->gate_serial, memory_order_acquire))
			drain_claimed(q);
		cmesh__queue_put(q);
		return;
	}
	/*
	 * Dekker with a producer's claim + state load, see top. Every sender
	 * gone (the RMW read ST_TX_CLOSED, set after their last publish):
	 * nobody races with the drain: a oneshot whose value came, an rpc's
	 * reply.
	 */
	if (!(st & ST_TX_CLOSED) && !q->senders_done)
		drain_claimed(q);
	else
		drain(q);
	cmesh__queue_put(q);
}
