/* SPDX-License-Identifier: MIT */
/*
 * park.h - sleeping on and waking a 32-bit word (futex), and the clock.
 */
#ifndef CMESH_PARK_H
#define CMESH_PARK_H

#include <ck_pr.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Sleeps while *word == expected, until woken or until `deadline`
 * (CLOCK_MONOTONIC ns, CMESH_DEADLINE_NONE for none). Returns 0 when woken
 * or when the word already differs (callers re-check their condition: a
 * spurious return is allowed), -ETIMEDOUT once the deadline passed, or
 * -ECANCELED (the thread's context ended, below).
 */
int cmesh__park_wait(_Atomic uint32_t *word, uint32_t expected,
		     int64_t deadline);

/* Wakes every thread parked on `word`. */
void cmesh__park_wake(_Atomic uint32_t *word);

/*
 * Wakes every thread of any process parked on `word`, a word of shared
 * memory (a memfd: the futex is keyed by file and offset, so a waiter
 * that maps it elsewhere, even read-only, is found). Never blocks.
 */
void cmesh__park_wake_shared(const _Atomic uint32_t *word);

/*
 * Sleeps until `shared` (a word of shared memory, as above) differs from
 * `shared_val` or `own` (a word of this process) differs from `own_val`,
 * a wake on either, or `deadline` (futex_waitv, Linux 5.16). Both words
 * are only read: `shared` may be mapped read-only. Returns 0 (callers
 * re-check their condition: a spurious return is allowed), -ETIMEDOUT,
 * or -ENOSYS where futex_waitv is missing, refused or failed otherwise
 * (the caller then sleeps another way, never retries at once).
 */
/* One futex word of a multi-wait, and the value it is expected to hold. */
struct cmesh__park_word {
	const _Atomic uint32_t *word;
	uint32_t val;
	bool shared; /* in shared memory (else private to this process) */
};

/* What futex_waitv takes at most. */
#define CMESH__PARK_WAITN_MAX 128u

/*
 * Sleeps until one of `n` words differs from its value, a wake, or
 * `deadline`: 0 (look again), -ETIMEDOUT, -EINVAL (n out of range),
 * -ECANCELED, -EFAULT (a word's memory was unmapped: look again, and
 * sleep another way if it stays so) or -ENOSYS (futex_waitv absent or
 * refused: sleep another way). With a context set (below), n may be
 * CMESH__PARK_WAITN_MAX - 1.
 */
int cmesh__park_waitn(const struct cmesh__park_word *words, uint32_t n,
		      int64_t deadline);

int cmesh__park_wait2(const _Atomic uint32_t *shared, uint32_t shared_val,
		      const _Atomic uint32_t *own, uint32_t own_val,
		      int64_t deadline);

/*
 * A cancellation context's words (cancel.c): `word` changes when it ends,
 * `ended` is non-zero once it has. While a thread has one set, each park
 * below also wakes when `word` changes and returns -ECANCELED once
 * `ended` is set (checked before it sleeps and after), whatever it waits
 * for: a blocking call with a context gives up wherever it sleeps.
 * Without futex_waitv the waits nap 1 ms at a time instead.
 */
struct cmesh__park_cancel {
	_Atomic uint32_t *word;
	const _Atomic uint32_t *ended;
};

/* Sets (or with NULL clears) the calling thread's context. */
void cmesh__park_set_cancel(const struct cmesh__park_cancel *c);

/* -ECANCELED if the calling thread's context has ended, else 0. */
int cmesh__park_cancelled(void);

/*
 * A poll()/epoll_wait() timeout for `deadline`: -1 for
 * CMESH_DEADLINE_NONE, 0 once it passed, else the milliseconds left,
 * rounded up (never early), at most INT_MAX.
 */
int cmesh__park_ms_until(int64_t deadline);

/*
 * For a wait that no futex word can end (poll, nanosleep): `deadline`,
 * or 1 ms from now if that is earlier and the thread has a context.
 */
int64_t cmesh__park_nap_cap(int64_t deadline);

/*
 * A claim in flight (a producer between taking a position and publishing
 * it, which may owe its consumer no wake: queue.c, lane_wake.c): its
 * waiter yields to the producer this many looks, then sleeps at most this
 * long per look (queue_recv.c, queue_port_wait.c, lane_wake.c,
 * waitset_wait.c).
 */
#define CMESH__IN_FLIGHT_YIELDS 64u
#define CMESH__IN_FLIGHT_NAP_NS 200000

/*
 * Where a sleeper that found a claim in flight (`in_flight`) may sleep
 * until: `deadline` if none (and *looks is reset), 0 (it yielded: look
 * again at once) for its first CMESH__IN_FLIGHT_YIELDS looks, then a nap's
 * end (no core burnt while the producer stays descheduled or stopped).
 */
int64_t cmesh__park_in_flight_cap(bool in_flight, uint32_t *looks,
				  int64_t deadline);

/* Spin-wait hint for busy loops (pause on x86). Inline: no call per poll. */
static inline void cmesh__park_pause(void)
{
	ck_pr_stall();
}

#endif
