/* SPDX-License-Identifier: MIT */
/*
 * spin.h - the adaptive spin's rule (CMESH_SPIN_ADAPTIVE), apart from the
 * queue that applies it so that it can be checked on its own.
 */
#ifndef CMESH_SPIN_H
#define CMESH_SPIN_H

#include <stdint.h>

/* Below this an adaptive spin is none: not worth a clock read. */
#define CMESH__SPIN_MIN_NS 1000

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
