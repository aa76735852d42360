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
 * The spin after a wait that slept and lasted `waited` ns in all, given
 * the spin `win` it had and the maximum `max`. Within the maximum, a
 * spin a little longer than the wait would have caught it: widen to
 * that, at least doubling, at most `max`. Longer: spinning did not pay:
 * halve, and below CMESH__SPIN_MIN_NS none. The sleep's own wakeup is part
 * of `waited`, so a spin widens only for a message that came well within
 * the maximum. (A wait the spin caught keeps the spin: not called.)
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

#endif
