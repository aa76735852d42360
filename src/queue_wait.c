/* SPDX-License-Identifier: MIT */
/*
 * queue_wait.c - a receiver's wait (moved out of queue.c): every receive
 * that does not finish at once (cmesh__queue_recv_slow(), local or
 * remote) spins, then sleeps; the adaptive spin learns from the waits
 * that slept; the consumer's counters. And a waitset's arming of the
 * receiver (ST_WS_ARMED, ST_WS_FUTEX), and the look at a claim in flight
 * that both a sleep and an arming make.
 *
 * Memory ordering: the sleep/wake pairing of queue.c (top). A sleeper (or
 * an arming waitset) sets its bit in `state` with a seq_cst RMW, then
 * looks at the claims (cmesh__queue_in_flight()): a producer either sees
 * the bit and wakes it (cmesh__queue_wake(), queue.c), or has claimed and
 * the sleeper sees that. A receiver with lanes waits on them too
 * (queue_port_wait.c).
 */
#include "queue.h"
#include "queue_int.h"

#include "hint.h"
#include "lane.h"
#include "park.h"
#include "spin.h"

#include <cmesh/common.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

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
	out->claims_refused =
		atomic_load_explicit(&q->st_refused, memory_order_relaxed);
	out->lanes = atomic_load_explicit(&q->st_lanes, memory_order_relaxed);
	out->waits = atomic_load_explicit(&q->st_waits, memory_order_relaxed);
	out->caught = atomic_load_explicit(&q->st_caught, memory_order_relaxed);
	out->sleeps = atomic_load_explicit(&q->st_sleeps, memory_order_relaxed);
	out->spin_ns = atomic_load_explicit(&q->spin_win, memory_order_relaxed);
}

/* Every receive the fast path (queue_recv.c) does not finish. */
__attribute__((noinline)) int
cmesh__queue_recv_slow(struct cmesh__queue *q, int64_t deadline, void *out_msg,
		       void *out_trail, size_t cap, struct cmesh__ports_in *pin)
{
	int64_t budget =
		atomic_load_explicit(&q->spin_win, memory_order_relaxed);
	bool spun = budget == 0 || deadline <= 0, waited = false;
	bool slept = false;
	int64_t t0 = 0;
	int r;

	for (;;) {
		r = cmesh__queue_try_recv(q, out_msg, out_trail, cap, pin);
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

			r = cmesh__queue_try_recv(q, out_msg, out_trail, cap,
						  pin);
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

/* ---- waitsets ---- */

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
	/* Dekker with the producer's claim, see queue.c, top; the caller
	 * re-checks ready. */
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
