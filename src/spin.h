/* SPDX-License-Identifier: MIT */
/*
 * spin.h - the adaptive spin's rule (CMESH_SPIN_ADAPTIVE), apart from the
 * queue that applies it so that it can be checked on its own.
 */
#ifndef CMESH_SPIN_H
#define CMESH_SPIN_H

#include <cmesh/channel.h>

#include <stdint.h>

/* Below this an adaptive spin is none: not worth a clock read. */
#define CMESH__SPIN_MIN_NS 1000

/*
 * The maximum every adaptive receiver's spin has (a forwarder's fixed
 * spin, bridge.c, too); a longer one, up to CMESH_SPIN_ADAPTIVE_MAX_NS,
 * is cmesh__spin_max()'s.
 */
#define CMESH__SPIN_BASE_NS 50000

/* A receiver's wakeup cost before it has measured one. */
#define CMESH__SPIN_WAKE_INIT_NS (CMESH__SPIN_BASE_NS / 2)

/*
 * The adaptive spin's maximum for a receiver whose wakeups cost `wake` ns
 * and whose waits begin `gap` ns apart (both moving averages, below):
 * CMESH__SPIN_BASE_NS, or as long as two wakeups cost where that is
 * longer, at most CMESH_SPIN_ADAPTIVE_MAX_NS and a quarter of the gap.
 * A spin-then-sleep that spins as long as two wakeups loses at most a
 * wakeup's worth to one that knew when the message would come: on a host
 * whose wakeups are slow, a receiver that waits seldom (a client waiting
 * for its reply) spins long enough to catch a peer woken as slowly, and
 * spends at most a quarter of a core on it; one that waits often (a
 * server between requests) keeps the base.
 */
static inline int64_t cmesh__spin_max(int64_t wake, int64_t gap)
{
	int64_t m = wake < CMESH_SPIN_ADAPTIVE_MAX_NS / 2 ?
			    2 * wake :
			    CMESH_SPIN_ADAPTIVE_MAX_NS;

	if (m > gap / 4)
		m = gap / 4;
	return m > CMESH__SPIN_BASE_NS ? m : CMESH__SPIN_BASE_NS;
}

/*
 * A moving average (wakeup cost, gap between waits) after a new sample:
 * a quarter of it. Samples are clamped to [0, 4 * the cap]: past that
 * neither changes cmesh__spin_max(), and one preempted wakeup or an idle
 * spell must not outweigh the next few.
 */
static inline int64_t cmesh__spin_avg(int64_t avg, int64_t sample)
{
	if (sample < 0)
		sample = 0;
	if (sample > 4 * (int64_t)CMESH_SPIN_ADAPTIVE_MAX_NS)
		sample = 4 * (int64_t)CMESH_SPIN_ADAPTIVE_MAX_NS;
	return avg + (sample - avg) / 4;
}

/*
 * The spin after a wait that slept and waited `waited` ns for its
 * message (cmesh__spin_waited(): until its producer woke it, not until
 * it woke: a sleep's wakeup may itself outlast the maximum), given the
 * spin `win` it had and the maximum `max`. Within the maximum, a spin a
 * little longer than the wait would have caught it: widen to that, at
 * least doubling, at most `max`. Longer: spinning did not pay: halve,
 * and below CMESH__SPIN_MIN_NS none. (A wait the spin caught keeps the
 * spin: not called.)
 */
static inline int64_t cmesh__spin_learn(int64_t win, int64_t max,
					int64_t waited)
{
	if (waited <= max) {
		int64_t want = waited + waited / 4;

		if (want < 2 * win)
			want = 2 * win;
		if (want < CMESH__SPIN_MIN_NS)
			want = CMESH__SPIN_MIN_NS;
		return want < max ? want : max;
	}
	win /= 2;
	return win < CMESH__SPIN_MIN_NS ? 0 : win;
}

/*
 * How long a wait that began at `t0` and ended at `end` waited for its
 * message: until `woke` (when the producer woke the sleeper: the sleep's
 * own wakeup is not the message's lateness), or until `end` where that is
 * unknown (0) or outside the wait (a peer's clock or value is not ours to
 * trust).
 */
static inline int64_t cmesh__spin_waited(int64_t t0, int64_t end, int64_t woke)
{
	return (woke >= t0 && woke <= end ? woke : end) - t0;
}

#endif
