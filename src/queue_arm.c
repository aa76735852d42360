/* SPDX-License-Identifier: MIT */
/*
 * queue_arm.c - a waitset's arming of the receiver (ST_WS_ARMED,
 * ST_WS_FUTEX) and the receiver's counters (moved out of queue.c). A
 * receive's own wait (spin, sleep, the adaptive spin) is queue_recv.c's,
 * beside the looks it makes, which it inlines.
 *
 * Memory ordering: the sleep/wake pairing of queue.c (top). An arming
 * waitset (or a sleeper) sets its bit in `state` with a seq_cst RMW, then
 * looks at the claims (cmesh__queue_in_flight(), queue_recv.c): a
 * producer either sees the bit and wakes it (cmesh__queue_wake(),
 * queue.c), or has claimed and the waitset sees that. A receiver with
 * lanes arms them too (queue_port_wait.c).
 */
#include "queue.h"
#include "queue_int.h"

#include "lane.h"

#include <stdatomic.h>

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
	out->wake_ns = q->spin_adapt ?
			       atomic_load_explicit(&q->spin_wake,
						    memory_order_relaxed) :
			       0;
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
