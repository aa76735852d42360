/* SPDX-License-Identifier: MIT */
/*
 * queue_port_wait.c - a receiver with lanes waits (moved out of
 * queue_port.c, which adds and reads the lanes): it spins polling every
 * source's word, sleeps in one futex_waitv on all of them, and a waitset
 * arms its lanes or lists their words and the lanes themselves.
 *
 * Memory ordering. The sleeping receiver waits in one futex_waitv on its
 * state word (local sends and added lanes wake it there, as in queue.c)
 * and each lane's producer signal word and self_wakes (lane_wake.c's
 * Dekker, per lane: sleeping bit, seq_cst fence, check).
 */
#include "queue.h"
#include "queue_int.h"

#include "lane.h"
#include "park.h"

#include <cmesh/common.h>

#include <errno.h>
#include <stdatomic.h>

/* Words a spinning receiver polls: its first source and every lane. */
#define SPIN_WORDS 16

bool cmesh__queue_xl_spin(struct cmesh__queue *q, int rounds)
{
	const _Atomic uint64_t *w[SPIN_WORDS];
	uint64_t want[SPIN_WORDS];
	uint32_t n = 0;
	/* The local queue's word, if polled, is w[0]: an exact match. */
	bool local;

	if (cmesh__queue_xl_merge(q))
		return true;
	local = !q->primary_done && !q->rx_lane && !local_blocked(q);
	if (!q->primary_done && (!local_blocked(q) || q->rx_lane)) {
		w[n] = q->rx_lane ?
			       cmesh__lane_spin_word(q->rx_lane, &want[n]) :
			       cmesh__queue_head_word(q, &want[n]);
		n += w[n] != NULL;
	}
	for (uint32_t i = 0; i < q->xl_n && n < SPIN_WORDS; i++) {
		if (q->xl[i]->after || gate_lane_waits(q, q->xl[i]->serial))
			continue;
		w[n] = cmesh__lane_spin_word(q->xl[i], &want[n]);
		n += w[n] != NULL;
	}
	for (int k = 0; k < rounds; k++) {
		/* Hints only: the receive validates what it finds. */
		for (uint32_t i = 0; i < n; i++) {
			uint64_t v = atomic_load_explicit(w[i],
							  memory_order_relaxed);

			if (i == 0 && local ?
				    v == want[i] :
				    cmesh__lane_spin_match(v, want[i]))
				return true;
		}
		cmesh__park_pause();
	}
	/* Once per round: overflow, closes, failures, attachments. */
	return cmesh__queue_xl_ready(q);
}

/*
 * A lane a sleep or a waitset neither waits on nor arms: one read after
 * another's end. One that waits for a MARK is armed: a look that takes
 * the MARK (cmesh__lane_ready()) opens it after the arming.
 */
static bool behind(const struct cmesh__lane *ln)
{
	return ln->after && !ln->after_mark;
}

/* The words a sleeping receiver with lanes waits on, at most `max`. */
/* Every lane's words (lane_wake.c): their count, UINT32_MAX past max. */
static uint32_t lanes_words(struct cmesh__queue *q, struct cmesh__park_word *w,
			    uint32_t max)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i <= q->xl_n; i++) {
		struct cmesh__lane *ln = i < q->xl_n ? q->xl[i] : q->rx_lane;

		if (!ln || (i == q->xl_n && q->primary_done) || behind(ln))
			continue;
		if (n + 2 > max)
			return UINT32_MAX;
		/* Before `sleeping`: a wake after these loads changes one. */
		n += cmesh__lane_wait_words(ln, w + n);
	}
	return n;
}

/* The words a sleeping receiver with lanes waits on (0: too many). */
static uint32_t wait_words(struct cmesh__queue *q, struct cmesh__park_word *w,
			   uint32_t max)
{
	uint32_t n;

	/* Local sends, added lanes: cmesh__queue_wake() on `state`. */
	w[0] = (struct cmesh__park_word){
		&q->state,
		atomic_load_explicit(&q->state, memory_order_acquire) |
			ST_RX_SLEEP,
		false
	};
	n = lanes_words(q, w + 1, max - 1);
	return n == UINT32_MAX ? 0 : n + 1; /* too many: the caller naps */
}

uint32_t cmesh__queue_ws_words(struct cmesh__queue *q,
			       struct cmesh__park_word *w, uint32_t max)
{
	if (atomic_load_explicit(&q->xl_flags, memory_order_acquire))
		cmesh__queue_xl_merge(q);
	return lanes_words(q, w, max);
}

/* Marks (or unmarks) every lane asleep; marking: any claim in flight? */
static bool mark_lanes(struct cmesh__queue *q, bool on)
{
	bool in_flight = false;

	for (uint32_t i = 0; i < q->xl_n; i++) {
		if (behind(q->xl[i]))
			continue;
		cmesh__lane_mark_sleep(q->xl[i], on);
		in_flight |= on && cmesh__lane_in_flight(q->xl[i]);
	}
	if (q->rx_lane && !q->primary_done) {
		cmesh__lane_mark_sleep(q->rx_lane, on);
		in_flight |= on && cmesh__lane_in_flight(q->rx_lane);
	}
	return in_flight;
}

static int64_t earliest(int64_t best, int64_t at, int64_t since)
{
	return at >= since && (!best || at < best) ? at : best;
}

int64_t cmesh__queue_woke_since(struct cmesh__queue *q, int64_t since)
{
	int64_t best = earliest(
		0, atomic_load_explicit(&q->woke_at, memory_order_relaxed),
		since);

	if (q->rx_lane && !q->primary_done)
		best = earliest(best, cmesh__lane_woke_at(q->rx_lane), since);
	if (atomic_load_explicit(&q->xl_flags, memory_order_acquire))
		for (uint32_t i = 0; i < q->xl_n; i++)
			best = earliest(best, cmesh__lane_woke_at(q->xl[i]),
					since);
	return best;
}

/* Where futex_waitv cannot take them all: look again every NAP_NS. */
#define NAP_NS 1000000

int cmesh__queue_xl_sleep(struct cmesh__queue *q, int64_t deadline)
{
	struct cmesh__park_word w[CMESH__PARK_WAITN_MAX];
	int64_t until;
	bool lanes;
	uint32_t n;
	int r = 0;

	if (cmesh__queue_xl_merge(q))
		return 0;
	atomic_fetch_or_explicit(&q->state, ST_RX_SLEEP, memory_order_seq_cst);
	n = cmesh__lane_polling() ? 0 :
				    wait_words(q, w, CMESH__PARK_WAITN_MAX - 1);
	lanes = mark_lanes(q, true);
	/* Dekker with local producers and each lane's (lane_wake.c): each
	 * bit set above, a seq_cst fence, then the looks. */
	until = cmesh__park_in_flight_cap(cmesh__queue_in_flight(q) || lanes,
					  &q->in_flight_looks, deadline);
	if (until && !cmesh__queue_xl_ready(q)) {
		if (n)
			r = cmesh__park_waitn(w, n, until);
		if (!n || r == -ENOSYS || r == -EFAULT) {
			int64_t nap = cmesh_clock_now() + NAP_NS;

			r = cmesh__park_wait(
				&q->state,
				atomic_load_explicit(&q->state,
						     memory_order_acquire),
				nap < until ? nap : until);
			if (r == -ETIMEDOUT && nap < until)
				r = 0;
		}
	}
	mark_lanes(q, false);
	atomic_fetch_and_explicit(&q->state, ~ST_RX_SLEEP,
				  memory_order_relaxed);
	/* A nap's end is not the caller's deadline. */
	return r == -ETIMEDOUT && until < deadline ? 0 : r;
}

bool cmesh__queue_xl_arm(struct cmesh__queue *q, bool on, bool futex)
{
	bool in_flight = false;

	if (!atomic_load_explicit(&q->xl_flags, memory_order_acquire))
		return false;
	cmesh__queue_xl_merge(q);
	for (uint32_t i = 0; i < q->xl_n; i++) /* dynamic: no fds */
		if (!behind(q->xl[i]))
			in_flight |=
				futex ? cmesh__lane_arm_futex(q->xl[i], on) :
					cmesh__lane_arm(q->xl[i], on, true);
	return in_flight;
}

uint32_t cmesh__queue_lanes(struct cmesh__queue *q, struct cmesh__lane **out,
			    uint32_t max)
{
	uint32_t n = 0;

	if (q->rx_lane && q->rx_lane->dynamic && n < max)
		out[n++] = q->rx_lane;
	/* Its waitset's wake socket is set up before it is read. */
	if (q->next && n < max)
		out[n++] = q->next;
	if (atomic_load_explicit(&q->xl_flags, memory_order_acquire)) {
		cmesh__queue_xl_merge(q);
		for (uint32_t i = 0; i < q->xl_n; i++) {
			if (n == max)
				return UINT32_MAX;
			out[n++] = q->xl[i];
		}
	}
	return n;
}
