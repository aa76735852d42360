/* SPDX-License-Identifier: MIT */
/*
 * queue.c - the in-process channel queue: its layout, its creation and
 * its sending side.
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
 *   claims in flight, never blocking: drain_claimed(), in queue_close.c;
 *   later claimers see the bit and drain their own). Neither side
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
 * inline space take the buffer the consumer last gave back (`spare`, an
 * atomic exchange on each side), or one malloc.
 *
 * Moved out of this file, and keeping the contract above: the receiving
 * side and a receiver's wait (spin, sleep) (queue_recv.c), a waitset's
 * arming (queue_arm.c), references, closes and the queue's end
 * (queue_close.c). queue_int.h lists the queue's files and holds the
 * state they share.
 */
#include "queue.h"
#include "queue_int.h"

#include "copy.h"
#include "hint.h"
#include "lane.h"
#include "park.h"
#include "slots.h"
#include "spin.h"
#include "type.h"
#include "wake.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

static uint64_t pow2_floor(uint64_t v)
{
	return v ? 1ull << (63 - __builtin_clzll(v)) : 0;
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
	q->spin_ns = q->spin_adapt     ? CMESH__SPIN_BASE_NS :
		     opts->spin_ns > 0 ? opts->spin_ns :
					 0;
	atomic_init(&q->spin_win, q->spin_ns);
	atomic_init(&q->spin_wake, CMESH__SPIN_WAKE_INIT_NS);
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

/*
 * A producer, having published position `pos` (head: the head it checked
 * space against), asks for the first and last lines of the slot
 * PFW_AHEAD positions on for writing, if the consumer is done with it
 * (within a lap of head): it read them a lap ago, and taken back now they
 * are ours by the time a send writes there, so a claim's locked CAS
 * (which waits for the previous send's stores) does not wait for a line
 * to cross too. A stream of 64-byte messages within a window (bench_inproc
 * 3, cm-win) went from about 20 to 40 M/s on two cores (0.5x to 1.0x of
 * the ck ring); 2 slots ahead gave 38, 1 gave 32. After the publish, as
 * the lane's ring does (cmesh__shmring_ahead()).
 */
static inline void prefetchw_slot(const struct cmesh__queue *q, uint64_t pos,
				  uint64_t head)
{
	struct slot *s;

	if (pos + PFW_AHEAD - head > q->mask)
		return;
	s = slot_at(q, pos + PFW_AHEAD);
	cmesh__prefetchw(s);
	if (q->slot_size > CACHE_LINE)
		cmesh__prefetchw(slot_byte(s, q->slot_size - CACHE_LINE));
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
	prefetchw_slot(q, pos, head);
	return 0;
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
/*
 * `lock` held: signals the receiver's waitset, if any, as `how` says: its
 * eventfd (ST_WS_ARMED), its futex word (ST_WS_FUTEX).
 */
static void ws_signal(struct cmesh__queue *q, uint32_t how)
{
	if (q->ws && (how & ST_WS_ARMED))
		cmesh__eventfd_signal(q->ws_efd);
	if (q->ws && (how & ST_WS_FUTEX)) {
		/* Pairs with the waitset's acquire load before it arms
		 * (waitset_wait.c). */
		atomic_fetch_add_explicit(q->ws_word, 1, memory_order_release);
		cmesh__park_wake(q->ws_word);
	}
}

void cmesh__queue_wake(struct cmesh__queue *q, uint32_t set)
{
	uint32_t old = atomic_load_explicit(&q->state, memory_order_relaxed);
	uint32_t nw;

	do {
		nw = (old | set) & ~ST_SLEEPERS;
	} while (!atomic_compare_exchange_weak_explicit(&q->state, &old, nw,
							memory_order_seq_cst,
							memory_order_relaxed));
	if (old & ST_RX_SLEEP) {
		/* For the sleeper's adaptive spin: when its message came. */
		atomic_store_explicit(&q->woke_at, cmesh_clock_now(),
				      memory_order_relaxed);
		cmesh__park_wake(&q->state);
	}
	if (old & (ST_WS_ARMED | ST_WS_FUTEX)) {
		pthread_mutex_lock(&q->lock);
		ws_signal(q, old);
		pthread_mutex_unlock(&q->lock);
	}
}

void cmesh__queue_lane_joined(struct cmesh__queue *q)
{
	atomic_store_explicit(
		&q->lanes_gen,
		atomic_load_explicit(&q->lanes_gen, memory_order_relaxed) + 1,
		memory_order_release);
	/* Armed or not: it sets the lane up at its next look. */
	ws_signal(q, ST_WS_ARMED | ST_WS_FUTEX);
}

uint32_t cmesh__queue_lanes_gen(struct cmesh__queue *q)
{
	return atomic_load_explicit(&q->lanes_gen, memory_order_acquire);
}

/* After a publish: drops it if the receiver closed meanwhile, else wakes. */
static __attribute__((noinline)) void notify(struct cmesh__queue *q,
					     uint32_t st)
{
	if (st & ST_RX_CLOSED)
		cmesh__queue_drain(q); /* closed meanwhile: drop, release */
	else
		cmesh__queue_wake(q, 0);
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

void *cmesh__queue_tbuf_get(struct cmesh__queue *q, size_t len)
{
	unsigned char *b = NULL;
	size_t cap;

	/* A relaxed look first: no RMW on a line the consumer writes. */
	if (atomic_load_explicit(&q->spare, memory_order_relaxed))
		b = atomic_exchange_explicit(&q->spare, NULL,
					     memory_order_acquire);
	if (b) {
		b -= TBUF_HDR;
		memcpy(&cap, b, sizeof(cap));
		if (cap >= len)
			return b + TBUF_HDR;
		free(b);
	}
	/* Rounded up: a stream of slightly different sizes reuses it. */
	cap = (len + 4095) & ~(size_t)4095;
	if (cap - len > cap / 4)
		cap = len; /* below a page or two: as asked */
	b = malloc(TBUF_HDR + cap);
	if (!b)
		return NULL;
	memcpy(b, &cap, sizeof(cap));
	return b + TBUF_HDR;
}

void cmesh__queue_tbuf_free(void *tb)
{
	if (tb)
		free((unsigned char *)tb - TBUF_HDR);
}

void cmesh__queue_tbuf_put(struct cmesh__queue *q, void *tb)
{
	size_t cap;

	if (!tb)
		return;
	memcpy(&cap, (unsigned char *)tb - TBUF_HDR, sizeof(cap));
	if (cap > TBUF_KEEP) {
		cmesh__queue_tbuf_free(tb);
		return;
	}
	/* Release: our reads of it are done before a producer writes it. */
	cmesh__queue_tbuf_free(
		atomic_exchange_explicit(&q->spare, tb, memory_order_acq_rel));
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
		     ST_RX_GONE)) {
		r = cmesh__queue_closed_err(q, ST_RX_FAILED);
		goto out_release;
	}
	if (unlikely(len > q->inline_cap)) {
		heap = cmesh__queue_tbuf_get(q, len);
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
			cmesh__queue_tbuf_put(q, heap);
			/* Endpoints must become ports: port.c sends again. */
			if (q->h.type->nfields &&
			    cmesh__type_has_endpoints(q->h.type))
				return -EXDEV;
			/*
			 * Seen under `lock`, but the receiver may have come
			 * home since (NULL), or its lane been sealed (-ESTALE,
			 * nothing taken): here then.
			 */
			bool in;
			struct cmesh__lane *ln = tx_enter(q, &in);

			r = ln ? cmesh__lane_send(ln, msg, trail, len) :
				 -ESTALE;
			tx_leave(q, in);
			return r == -ESTALE ? send_slow(q, msg, trail, len) : r;
		}
		if (r)
			goto out_free_heap;
	}
	published(q);
	return 0;

out_free_heap:
	cmesh__queue_tbuf_put(q, heap);
out_release:
	cmesh__type_release(q->h.type, msg);
	return r;
}

/* cmesh__queue_send() in reclaim mode: its lane read counted in. */
static __attribute__((noinline)) int send_counted(struct cmesh__queue *q,
						  const void *msg,
						  const void *trail, size_t len)
{
	bool in;
	struct cmesh__lane *ln = tx_enter(q, &in);
	int r = ln ? cmesh__lane_send_inline(ln, msg, trail, len) : -ESTALE;

	tx_leave(q, in);
	/* Sealed, or the receiver came home: nothing taken; here now. */
	return r == -ESTALE ? send_slow(q, msg, trail, len) : r;
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
		/* Reclaim mode: the lane is read again, counted in. */
		if (unlikely(atomic_load_explicit(&q->reclaim,
						  memory_order_relaxed)))
			return send_counted(q, msg, trail, len);
		r = cmesh__lane_send_inline(ln, msg, trail, len);
		/* Sealed: the receiver came home (nothing taken): here now. */
		if (unlikely(r == -ESTALE))
			return send_slow(q, msg, trail, len);
		return r;
	}
	if (unlikely(!q->fast_send) || unlikely(len > q->fast_trail) ||
	    unlikely(atomic_load_explicit(&q->state, memory_order_relaxed) &
		     ST_RX_GONE) ||
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
		bool in;

		ln = tx_enter(q, &in);
		if (ln && unlikely(atomic_load_explicit(&q->claim_retry_at,
							memory_order_relaxed)))
			cmesh__queue_claim_again(q); /* as a send does */
		if (ln) { /* endpoint fields are NULL here: see channel.c */
			r = cmesh__lane_try_send(ln, msg, trail, len);
			tx_leave(q, in);
			if (r != -ESTALE)
				return r;
			continue; /* the receiver came home: nothing taken */
		}
		tx_leave(q, in);
		if (q->h.type->nfields) {
			r = cmesh__type_prepare_move(q->h.type, msg);
			if (r)
				goto out_release;
		}
		r = -EMSGSIZE;
		if (len > q->max_trail)
			goto out_release;
		if (atomic_load_explicit(&q->state, memory_order_relaxed) &
		    ST_RX_GONE) {
			r = cmesh__queue_closed_err(q, ST_RX_FAILED);
			goto out_release;
		}
		/* Behind an overflow list: order says wait. */
		if (atomic_load_explicit(&q->ovf_mode, memory_order_acquire))
			return -EAGAIN;
		if (len > q->inline_cap) {
			heap = cmesh__queue_tbuf_get(q, len);
			r = -ENOMEM;
			if (!heap)
				goto out_release;
			memcpy(heap, trail, len);
		}
		if (ring_try_push(q, msg, trail, len, heap) == 0) {
			published(q);
			return 0;
		}
		cmesh__queue_tbuf_put(q, heap);
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

	for (;;) {
		bool in, done;

		ln = tx_enter(q, &in);
		if (!ln) {
			tx_leave_quiet(q, in);
			break;
		}
		r = cmesh__lane_rx_gone(ln);
		done = !r || !stale_lane(q, ln);
		tx_leave_quiet(q, in);
		if (done)
			return r;
	}
	st = atomic_load_explicit(&q->state, memory_order_acquire);
	return st & ST_RX_FAILED ? -ECONNRESET : !!(st & ST_RX_CLOSED);
}

void cmesh__queue_backlog(struct cmesh__queue *q, uint64_t *used,
			  uint64_t *room)
{
	bool in;
	struct cmesh__lane *ln = tx_enter(q, &in);
	uint64_t max = q->max_backlog;

	/* A stale lane's figures are only as old as the snapshot. */
	if (ln)
		cmesh__lane_backlog(ln, used, &max);
	tx_leave_quiet(q, in);
	if (!ln)
		*used = atomic_load_explicit(&q->ovf_bytes,
					     memory_order_relaxed);
	if (!max)
		*room = UINT64_MAX;
	else
		*room = *used < max ? max - *used : 0;
}

int cmesh__queue_flush(struct cmesh__queue *q, int64_t deadline)
{
	struct cmesh__lane *ln;
	int r;

	/* In one process a sent message is in the queue already. */
	for (;;) {
		bool in, done;

		ln = tx_enter(q, &in);
		if (!ln) {
			tx_leave(q, in);
			return 0;
		}
		r = cmesh__lane_flush(ln, deadline);
		done = !r || r == -ETIMEDOUT || r == -ECANCELED ||
		       !stale_lane(q, ln);
		tx_leave(q, in);
		if (done)
			return r;
	}
}
