/* SPDX-License-Identifier: MIT */
/*
 * queue_recv.c - the in-process queue's receiving side (moved out of
 * queue.c): taking the next message from the ring or the overflow list,
 * readiness and peek, the receive's fast path, and the drain of a queue
 * whose receiver is gone. The consumer owns `head`; the memory-ordering
 * contract is queue.c's (top). A receive that does not finish at once
 * waits here too (recv_slow(): it spins, then sleeps; the adaptive spin
 * learns from the waits that slept), in one unit with the looks it makes
 * so that they are inlined; a receiver with lanes reads and waits on them
 * through queue_port.c and queue_port_wait.c.
 *
 * Memory ordering of a sleep: a sleeper sets ST_RX_SLEEP in `state` with
 * a seq_cst RMW, then looks at the claims (cmesh__queue_in_flight()): a
 * producer either sees the bit and wakes it (cmesh__queue_wake(),
 * queue.c), or has claimed and the sleeper sees that.
 */
#include "queue.h"
#include "queue_int.h"

#include "copy.h"
#include "hint.h"
#include "lane.h"
#include "park.h"
#include "spin.h"
#include "type.h"

#include <cmesh/common.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- consumer side ---- */

/*
 * Copies the trail out (unless discarding); a heap trail's buffer then
 * goes back to the queue for its next large send.
 */
static void take_trail(struct cmesh__queue *q, void *out, const void *inl,
		       void *heap, uint32_t len, bool discard)
{
	if (!discard && len)
		memcpy(out, heap ? heap : inl, len);
	cmesh__queue_tbuf_put(q, heap);
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
		take_trail(q, out_trail, heap, heap, len, discard);
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
		 * queue_claim.c): what is queued now waits for it.
		 */
		if (!discard && atomic_load_explicit(&q->gate_serial,
						     memory_order_relaxed)) {
			/* But what was queued before the gate is not. */
			uint32_t pre = atomic_load_explicit(
				&q->gate_pre, memory_order_relaxed);
			struct ovf_node *last = q->ovf_head;

			if (!pre || !last) {
				pthread_mutex_unlock(&q->lock);
				return -EAGAIN;
			}
			while (--pre && last->next)
				last = last->next;
			q->ovf_batch = q->ovf_head;
			q->ovf_head = last->next;
			last->next = NULL;
			if (!q->ovf_head)
				q->ovf_tailp = &q->ovf_head;
			atomic_store_explicit(&q->gate_pre, 0,
					      memory_order_relaxed);
			pthread_mutex_unlock(&q->lock);
			goto take;
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
take:
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
	take_trail(q, out_trail, n->data + q->msg_span, n->heap, len, discard);
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

/* One receive, no wait, of every source (each look of a wait). */
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

/* ---- waiting ---- */

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
			/*
			 * Once per round, first: the state line is the
			 * senders' to write (a oneshot's sender that leaves
			 * writes it right after its publish), and a read on
			 * every poll takes it back from them mid-write, while
			 * the reply waits to be seen. An overflow list in use
			 * at the start is taken at once; one that starts
			 * while we spin (a full ring: rare, we read it empty)
			 * waits a round.
			 */
			if (maybe_ready(q))
				goto out;
			for (int i = 0; i < SPIN_CLOCK_EVERY; i++) {
				/* Hints only: pop() looks again (acquire). */
				if (atomic_load_explicit(
					    seq, memory_order_relaxed) == want)
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
	/* Dekker with the producer's claim + state load, see queue.c, top. */
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
	int64_t t0 = 0,
		nap = 0; /* adaptive: the wait's start, its last sleep's */
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
			if (q->spin_adapt) {
				t0 = cmesh_clock_now();
				if (q->spin_last)
					q->spin_gap = cmesh__spin_avg(
						q->spin_gap, t0 - q->spin_last);
				q->spin_last = t0;
			}
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
		if (q->spin_adapt)
			nap = cmesh_clock_now();
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
		int64_t end = cmesh_clock_now(), w, max;
		int64_t wake = atomic_load_explicit(&q->spin_wake,
						    memory_order_relaxed);

		/* A timeout tells of the time up to its deadline only. */
		if (r == -ETIMEDOUT) {
			w = (end > deadline ? deadline : end) - t0;
		} else { /* a message: when its producer woke our last sleep */
			int64_t woke = cmesh__queue_woke_since(q, nap);

			w = cmesh__spin_waited(t0, end, woke);
			/* That sleep's wakeup took the rest. */
			if (woke >= nap && woke <= end) {
				wake = cmesh__spin_avg(wake, end - woke);
				atomic_store_explicit(&q->spin_wake, wake,
						      memory_order_relaxed);
			}
		}
		max = cmesh__spin_max(wake, q->spin_gap);
		if (r >= 0 || w > max)
			atomic_store_explicit(&q->spin_win,
					      cmesh__spin_learn(budget, max, w),
					      memory_order_relaxed);
	}
	return r;
}

/* The fast path: a local queue whose next slot is published. */
int cmesh__queue_recv(struct cmesh__queue *q, int64_t deadline, void *out_msg,
		      void *out_trail, size_t cap)
{
	/* Pairs with the producer's publishing store. */
	if (likely(!q->rx_lane)) {
		if (likely(head_ready(q, memory_order_acquire)))
			return take_ring(q, out_msg, out_trail, cap, false);
	} else if (likely(!atomic_load_explicit(&q->xl_flags,
						memory_order_acquire))) {
		/*
		 * A lane's message: try_recv()'s first look, without the
		 * slow path's frame. Anything else (nothing yet, a mark,
		 * the end, a failure) is looked at again there.
		 */
		int r = cmesh__lane_try_recv(q->rx_lane, out_msg, out_trail,
					     cap, NULL);

		if (likely(r >= 0))
			return r;
	}
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

bool cmesh__queue_rx_lane_ended(const struct cmesh__queue *q)
{
	return q->primary_done;
}

/* Drops every queued message, releasing its resources (receiver gone). */
void cmesh__queue_drain(struct cmesh__queue *q)
{
	pthread_mutex_lock(&q->drain_lock);
	while (pop(q, q->scratch, NULL, 0, true) >= 0)
		cmesh__type_release(q->h.type, q->scratch);
	pthread_mutex_unlock(&q->drain_lock);
}
