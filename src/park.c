/* SPDX-License-Identifier: MIT */
/*
 * park.c - futex wrappers, the monotonic clock (and the version).
 *
 * The futex word is an _Atomic uint32_t owned by the caller; the kernel
 * compares it under its own lock, so a waker that changes the word before
 * calling cmesh__park_wake() can never be missed by a waiter that passed
 * the old value (the usual futex contract).
 */
#include "park.h"

#include <cmesh/common.h>

#include <ck_pr.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const char *cmesh_version(void)
{
	return CMESH_VERSION_STRING;
}

int64_t cmesh_clock_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int cmesh__park_ms_until(int64_t deadline)
{
	int64_t left;

	if (deadline == CMESH_DEADLINE_NONE)
		return -1;
	left = deadline - cmesh_clock_now();
	if (left <= 0)
		return 0;
	if (left / 1000000 >= INT_MAX)
		return INT_MAX;
	return (int)((left + 999999) / 1000000);
}

int64_t cmesh_deadline_after(int64_t ns)
{
	int64_t now = cmesh_clock_now();

	if (ns > 0 && ns >= CMESH_DEADLINE_NONE - now)
		return CMESH_DEADLINE_NONE;
	return now + ns;
}

/*
 * `deadline` as an absolute CLOCK_MONOTONIC timespec in *ts (*tsp = ts),
 * or *tsp = NULL for none. -1 if it has passed already.
 */
static int abs_timeout(int64_t deadline, struct timespec *ts,
		       struct timespec **tsp)
{
	*tsp = NULL;
	if (deadline == CMESH_DEADLINE_NONE)
		return 0;
	if (deadline <= cmesh_clock_now())
		return -1;
	ts->tv_sec = deadline / 1000000000;
	ts->tv_nsec = deadline % 1000000000;
	*tsp = ts;
	return 0;
}

/* The calling thread's cancellation context (cmesh__ctx_begin()). */
static _Thread_local const struct cmesh__park_cancel *tl_cancel;

/* Waits on the context's word too: 1 ms naps where that cannot be. */
#define CANCEL_NAP_NS 1000000

void cmesh__park_set_cancel(const struct cmesh__park_cancel *c)
{
	tl_cancel = c;
}

int cmesh__park_cancelled(void)
{
	const struct cmesh__park_cancel *c = tl_cancel;

	return c && atomic_load_explicit(c->ended, memory_order_acquire) ?
		       -ECANCELED :
		       0;
}

int64_t cmesh__park_nap_cap(int64_t deadline)
{
	int64_t cap;

	if (!tl_cancel)
		return deadline;
	cap = cmesh_clock_now() + CANCEL_NAP_NS;
	return cap < deadline ? cap : deadline;
}

int64_t cmesh__park_in_flight_cap(bool in_flight, uint32_t *looks,
				  int64_t deadline)
{
	int64_t cap;

	if (!in_flight) {
		*looks = 0;
		return deadline;
	}
	if (++*looks < CMESH__IN_FLIGHT_YIELDS) {
		sched_yield();
		return 0;
	}
	cap = cmesh_clock_now() + CMESH__IN_FLIGHT_NAP_NS;
	return cap < deadline ? cap : deadline;
}

static int wait_one(_Atomic uint32_t *word, uint32_t expected, int64_t deadline)
{
	struct timespec ts, *tsp;
	long r;

	if (abs_timeout(deadline, &ts, &tsp))
		return -ETIMEDOUT;
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
	r = syscall(SYS_futex, (uint32_t *)word,
		    FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp, NULL,
		    FUTEX_BITSET_MATCH_ANY);
	if (r == -1 && errno == ETIMEDOUT)
		return -ETIMEDOUT;
	return 0; /* woken, EAGAIN (value changed) or EINTR: re-check */
}

int cmesh__park_wait(_Atomic uint32_t *word, uint32_t expected,
		     int64_t deadline)
{
	struct cmesh__park_word w = { word, expected, false };
	int r;

	if (!tl_cancel)
		return wait_one(word, expected, deadline);
	r = cmesh__park_waitn(&w, 1, deadline);
	if (r != -ENOSYS)
		return r;
	/* No futex_waitv: nap, and look at the context after each. */
	r = wait_one(word, expected, cmesh__park_nap_cap(deadline));
	if (cmesh__park_cancelled())
		return -ECANCELED;
	return r == -ETIMEDOUT && cmesh_clock_now() < deadline ? 0 : r;
}

void cmesh__park_wake(_Atomic uint32_t *word)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG,
		INT_MAX, NULL, NULL, 0);
}

void cmesh__park_wake_shared(const _Atomic uint32_t *word)
{
	syscall(SYS_futex, (const uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL,
		NULL, 0);
}

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* the same number on every architecture */
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif

/* As <linux/futex.h> has it since Linux 5.16 (kept here for older ones). */
struct park_waitv {
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t reserved;
};

static int waitn(const struct cmesh__park_word *words, uint32_t n,
		 int64_t deadline)
{
	struct park_waitv w[CMESH__PARK_WAITN_MAX];
	struct timespec ts, *tsp;
	long r;

	if (n == 0 || n > CMESH__PARK_WAITN_MAX)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		w[i].val = words[i].val;
		w[i].uaddr = (uint64_t)(uintptr_t)words[i].word;
		w[i].flags = FUTEX_32 |
			     (words[i].shared ? 0 : FUTEX_PRIVATE_FLAG);
		w[i].reserved = 0;
	}
	if (abs_timeout(deadline, &ts, &tsp))
		return -ETIMEDOUT;
	/* An absolute CLOCK_MONOTONIC timeout. */
	r = syscall(SYS_futex_waitv, w, n, 0, tsp, CLOCK_MONOTONIC);
	if (r >= 0 || errno == EAGAIN || errno == EINTR)
		return 0; /* woken, a value changed, a signal: re-check */
	if (errno == ETIMEDOUT)
		return -ETIMEDOUT;
	if (errno == EFAULT)
		return -EFAULT; /* a word's mapping went meanwhile */
	/*
	 * Absent, or refused (a seccomp profile older than the call says
	 * EPERM), or anything else: never look again at once, which would
	 * make a blocking receive spin; the caller sleeps another way.
	 */
	return -ENOSYS;
}

int cmesh__park_waitn(const struct cmesh__park_word *words, uint32_t n,
		      int64_t deadline)
{
	const struct cmesh__park_cancel *c = tl_cancel;
	struct cmesh__park_word w[CMESH__PARK_WAITN_MAX];
	int r;

	if (!c)
		return waitn(words, n, deadline);
	if (n == 0 || n >= CMESH__PARK_WAITN_MAX)
		return -EINVAL;
	memcpy(w, words, n * sizeof(*w));
	/* The word before `ended`: a cancel after this load changes it. */
	w[n] = (struct cmesh__park_word){
		c->word, atomic_load_explicit(c->word, memory_order_acquire),
		false
	};
	if (cmesh__park_cancelled())
		return -ECANCELED;
	r = waitn(w, n + 1, deadline);
	return cmesh__park_cancelled() ? -ECANCELED : r;
}

int cmesh__park_wait2(const _Atomic uint32_t *shared, uint32_t shared_val,
		      const _Atomic uint32_t *own, uint32_t own_val,
		      int64_t deadline)
{
	struct cmesh__park_word w[2] = {
		{ shared, shared_val, true },
		{ own, own_val, false },
	};

	return cmesh__park_waitn(w, 2, deadline);
}
