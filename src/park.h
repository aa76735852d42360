/* SPDX-License-Identifier: MIT */
/*
 * park.h - sleeping on and waking a 32-bit word (futex), and the clock.
 */
#ifndef CMESH_PARK_H
#define CMESH_PARK_H

#include <stdatomic.h>
#include <stdint.h>

/*
 * Sleeps while *word == expected, until woken or until `deadline`
 * (CLOCK_MONOTONIC ns, CMESH_DEADLINE_NONE for none). Returns 0 when woken
 * or when the word already differs (callers re-check their condition: a
 * spurious return is allowed), -ETIMEDOUT once the deadline passed.
 */
int cmesh__park_wait(_Atomic uint32_t *word, uint32_t expected,
		     int64_t deadline);

/* Wakes every thread parked on `word`. */
void cmesh__park_wake(_Atomic uint32_t *word);

/* Spin-wait hint for busy loops. */
void cmesh__park_pause(void);

#endif
