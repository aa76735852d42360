/* SPDX-License-Identifier: MIT */
/*
 * waitset_wait.c - a waitset's looks and sleeps (its state and members:
 * waitset_int.h, waitset.c).
 *
 * A look scans the members round-robin; when none is ready it arms each
 * one, scans again (Dekker with each producer, see waitset.c), and the
 * wait sleeps. try_wait and the waitset's fd sleep in epoll on the fds
 * waitset.c watches: a look drains only what epoll reports readable.
 * cmesh_waitset_wait() itself sleeps another way where it can: in
 * futex_waitv on the waitset's own word (which in-process producers armed
 * with ST_WS_FUTEX, cancelled context members and additions increment)
 * and on every remote member's lane words (its producer's signal word,
 * armed with the WSFUTEX bit, and the lane's self_wakes): one syscall to
 * sleep, one (FUTEX_WAKE) for a producer to wake it, no fd to drain. With
 * too many words for one futex_waitv, or without futex_waitv, it sleeps
 * in epoll as above; try_wait and the exposed fd always use the fds.
 */
#include "waitset.h"
#include "waitset_int.h"

#include "cancel.h"
#include "ctl.h"
#include "lane.h"
#include "park.h"
#include "queue.h"
#include "wake.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441 /* the same number on every architecture */
#endif

static bool scan(cmesh_waitset *ws, uint64_t *out_key)
{
	for (uint32_t k = 0; k < ws->n; k++) {
		uint32_t i = (ws->next + k) % ws->n;

		if (cmesh__queue_ready(ws->m[i].q)) {
			*out_key = ws->m[i].key;
			ws->next = (i + 1) % ws->n;
			return true;
		}
	}
	/* Contexts that ended (round-robin too: they stay ended). */
	for (uint32_t k = 0; k < ws->ncm; k++) {
		uint32_t i = (ws->cnext + k) % ws->ncm;

		if (cmesh_ctx_check(ws->cm[i]->held)) {
			*out_key = ws->cm[i]->key;
			ws->cnext = (i + 1) % ws->ncm;
			return true;
		}
	}
	return false;
}
/* The earliest deadline of `deadline` and the context members'. */
static int64_t members_deadline(cmesh_waitset *ws, int64_t deadline)
{
	pthread_mutex_lock(&ws->lock);
	for (uint32_t i = 0; i < ws->ncm; i++) {
		int64_t d = cmesh_ctx_deadline(ws->cm[i]->held);

		if (d < deadline)
			deadline = d;
	}
	pthread_mutex_unlock(&ws->lock);
	return deadline;
}
/* Empties one watched fd that epoll reported readable. */
static void drain_fd(cmesh_waitset *ws, uint64_t data)
{
	int fd = (int)(uint32_t)data;

	if (data >> 32 == WFD_SOCK) {
		cmesh__ctl_wake_drain(fd);
	} else if (data >> 32 == WFD_TIMER) {
		/* Its expirations (8 bytes, as an eventfd's count). */
		cmesh__eventfd_drain(fd);
		/* The next deadline to come (a failure: no wake for it). */
		(void)cmesh__waitset_timer(ws);
	} else {
		cmesh__eventfd_drain(fd); /* WFD_SIGNAL, WFD_EVENTFD */
	}
}

/* Empties every watched fd: when a look could not say which are readable. */
static void drain_all(cmesh_waitset *ws)
{
	int fds[2];

	cmesh__eventfd_drain(ws->efd);
	/* Our wake sockets on links (ports' lanes): only we hold them. */
	for (uint32_t i = 0; i < ws->nwl; i++)
		cmesh__ctl_wake_drain(ws->wl[i].fd);
	for (uint32_t i = 0; i < ws->n; i++)
		for (int k = cmesh__queue_wake_fds(ws->m[i].q, fds); k--;)
			drain_fd(ws,
				 (uint64_t)(uint32_t)fds[k] |
					 (uint64_t)(k ? WFD_EVENTFD : WFD_SOCK)
						 << 32);
	if (ws->tfd >= 0)
		drain_fd(ws, (uint64_t)(uint32_t)ws->tfd | (uint64_t)WFD_TIMER
								   << 32);
}

/*
 * Consumes pending signals before the members are looked at (any that
 * arrive later stay). Only the fds epoll reports readable are read: `ev`
 * (`n` events, from a sleep that saw no member come or go since), else
 * what epoll says now. Level-triggered: a signal that lands after the
 * look keeps its fd readable for the next one.
 */
static int drain_signals(cmesh_waitset *ws, const struct epoll_event *ev, int n)
{
	struct epoll_event now[WS_EVENTS];

	if (!ev) {
		n = epoll_wait(ws->epfd, now, WS_EVENTS, 0);
		if (n < 0 && errno != EINTR)
			return -errno;
		ev = now;
	}
	if (n < 0 || n == WS_EVENTS) {
		drain_all(ws); /* interrupted, or maybe more than we took */
		return 0;
	}
	for (int i = 0; i < n; i++)
		drain_fd(ws, ev[i].data.u64);
	return 0;
}

/*
 * `ev`: see drain_signals(). `defer`: a wait's first look, which sleeps
 * in epoll next if it finds nothing: with the members not armed, stale
 * signals are left for that sleep to report (at worst it returns at once
 * and the next look drains them), not asked for here.
 */
static int try_wait_locked(cmesh_waitset *ws, uint64_t *out_key,
			   const struct epoll_event *ev, int nev, bool defer,
			   bool futex, bool *in_flight)
{
	int r;

	*in_flight = false;
	/*
	 * A busy loop: nothing armed since the last call, so nothing to
	 * drain; a ready member is taken without a syscall. A signal left
	 * pending (a member added, a context cancelled) keeps the fd
	 * readable: at worst one wait comes back at once and looks again.
	 */
	if (!ws->armed && scan(ws, out_key))
		return 0;
	/* A wait that sleeps in futex_waitv arms there (sleep_futex()). */
	if (futex && !ws->armed)
		return -EAGAIN;
	r = defer && !ws->armed ? 0 : drain_signals(ws, ev, nev);
	if (r)
		return r;
	/* Remote members: stop their wakes (their fds are drained above). */
	for (uint32_t i = 0; i < ws->n; i++)
		cmesh__queue_disarm(ws->m[i].q, false);
	ws->armed = false;
	if (scan(ws, out_key))
		return 0;
	if (futex)
		return -EAGAIN;
	/*
	 * Lanes that joined a member get their wake sockets before they are
	 * armed: after the drain (a lane joining from here on leaves the
	 * eventfd readable, so the sleep comes back and this runs again) and
	 * the disarm (no producer reads an id being set). One that could not
	 * be set up: look again soon, as for a claim in flight.
	 */
	if (!cmesh__waitset_refresh(ws))
		*in_flight = true;
	for (uint32_t i = 0; i < ws->n; i++)
		*in_flight |= cmesh__queue_arm(ws->m[i].q);
	ws->armed = true;
	if (scan(ws, out_key))
		return 0;
	/*
	 * *in_flight: an in-process producer between its claim and its
	 * publish may have looked before we armed and owes no signal
	 * (queue.c): the caller must look again soon, not sleep for good.
	 */
	return -EAGAIN;
}

int cmesh_waitset_try_wait(cmesh_waitset *ws, uint64_t *out_key)
{
	bool in_flight;
	int r;

	if (!ws || !out_key)
		return -EINVAL;
	pthread_mutex_lock(&ws->lock);
	r = try_wait_locked(ws, out_key, NULL, 0, false, false, &in_flight);
	pthread_mutex_unlock(&ws->lock);
	/* Keep the fd readable: the caller's loop looks again. */
	if (r == -EAGAIN && in_flight) {
		cmesh__waitset_signal(ws);
		sched_yield();
	}
	return r;
}

/*
 * A wait's look: its first (`ev` NULL, `first`), or after a sleep that
 * reported `ev` (n events) while the waitset was at generation `gen`.
 */
static int try_wait_after(cmesh_waitset *ws, uint64_t *out_key,
			  const struct epoll_event *ev, int n, uint64_t gen,
			  bool first, bool futex, bool *in_flight)
{
	int r;

	pthread_mutex_lock(&ws->lock);
	/* A member or link gone meanwhile: its fd may be another's now. */
	if (gen != ws->gen)
		ev = NULL;
	r = try_wait_locked(ws, out_key, ev, n, first, futex, in_flight);
	pthread_mutex_unlock(&ws->lock);
	return r;
}

/*
 * Sleeps in epoll until a watched fd is readable or `until` (NONE: no
 * end); the events it reports in `ev`. epoll_pwait2 takes the time to the
 * nanosecond; where the kernel lacks it, epoll_wait, rounded up to the ms.
 */
static int sleep_epoll(cmesh_waitset *ws, int64_t until, struct epoll_event *ev)
{
	static atomic_bool no_pwait2;
	struct timespec ts, *tsp = NULL;
	int64_t left = 0;
	int n;

	if (until != CMESH_DEADLINE_NONE) {
		left = until - cmesh_clock_now();
		if (left < 0)
			left = 0;
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		tsp = &ts;
	}
	if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
		n = (int)syscall(SYS_epoll_pwait2, ws->epfd, ev, WS_EVENTS, tsp,
				 NULL, (size_t)0);
		if (n >= 0 || errno != ENOSYS)
			return n;
		atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
	}
	left = (left + 999999) / 1000000;
	return epoll_wait(ws->epfd, ev, WS_EVENTS,
			  !tsp		 ? -1 :
			  left > INT_MAX ? INT_MAX :
					   (int)left);
}

/* Where futex_waitv failed with ENOSYS: every wait sleeps in epoll. */
static atomic_bool no_futex;

/*
 * A wait's sleep in futex_waitv (see top): loads the members' words, arms
 * every member for them, looks once more, sleeps until a word changes or
 * `until` (a nap's end while a claim is in flight, `looks` counting), and
 * disarms. `word`: the waitset's word as the caller loaded it before its
 * last look, its context check and its deadline (a cancel or an added
 * member after that changed it). 1 with *out_key: a member was ready; 0:
 * look again; -E2BIG (more words than one futex_waitv takes), -EFAULT or
 * -ENOSYS: sleep in epoll; -ECANCELED: the thread's context ended.
 */
static int sleep_futex(cmesh_waitset *ws, uint32_t word, int64_t until,
		       uint32_t *looks, uint64_t *out_key)
{
	struct cmesh__park_word w[CMESH__PARK_WAITN_MAX];
	bool in_flight = false;
	uint32_t n = 1;
	int r = 0;

	pthread_mutex_lock(&ws->lock);
	/*
	 * A lane that joined a member since its look bumped `word`, and its
	 * words are loaded below: futex arming names no wake socket, so its
	 * setup waits for a look that arms the fds (try_wait_locked()).
	 */
	/* Before arming: a wake after these loads changes a word. */
	w[0] = (struct cmesh__park_word){ &ws->word, word, false };
	for (uint32_t i = 0; i < ws->n; i++) {
		/* One word left for a thread's context (park.h). */
		uint32_t k = cmesh__queue_ws_words(
			ws->m[i].q, w + n, CMESH__PARK_WAITN_MAX - 1 - n);

		if (k == UINT32_MAX) {
			pthread_mutex_unlock(&ws->lock);
			return -E2BIG;
		}
		n += k;
	}
	for (uint32_t i = 0; i < ws->n; i++)
		in_flight |= cmesh__queue_arm_futex(ws->m[i].q, true);
	if (scan(ws, out_key))
		r = 1;
	pthread_mutex_unlock(&ws->lock);
	if (!r) {
		until = cmesh__park_in_flight_cap(in_flight, looks, until);
		if (until)
			r = cmesh__park_waitn(w, n, until);
		if (r == -ETIMEDOUT)
			r = 0; /* the next look tells */
	}
	pthread_mutex_lock(&ws->lock);
	for (uint32_t i = 0; i < ws->n; i++)
		cmesh__queue_arm_futex(ws->m[i].q, false);
	pthread_mutex_unlock(&ws->lock);
	return r;
}

/* Waits until a member is ready, `deadline`, or `ctx` is cancelled. */
static int wait_until(cmesh_waitset *ws, int64_t deadline, const cmesh_ctx *ctx,
		      uint64_t *out_key)
{
	struct epoll_event ev[WS_EVENTS];
	const struct epoll_event *got = NULL;
	uint64_t gen = 0;
	uint32_t looks = 0;
	bool first = true, in_flight;
	bool futex = !cmesh__lane_polling() &&
		     !atomic_load_explicit(&no_futex, memory_order_relaxed);
	int r, n = 0;

	for (;;) {
		/* Before the look, the context check and the deadline: what
		 * changes after them changes this word (sleep_futex()). */
		uint32_t word =
			atomic_load_explicit(&ws->word, memory_order_acquire);
		int64_t until;

		r = try_wait_after(ws, out_key, got, n, gen, first, futex,
				   &in_flight);
		first = false;
		if (r != -EAGAIN)
			return r;
		if (ctx && cmesh_ctx_check(ctx) == -ECANCELED)
			return -ECANCELED;
		/* A context member's deadline makes it ready: wake then. */
		until = members_deadline(ws, deadline);
		if (until != CMESH_DEADLINE_NONE && until == deadline &&
		    cmesh_clock_now() >= deadline)
			return -ETIMEDOUT;
		if (futex) {
			r = sleep_futex(ws, word, until, &looks, out_key);
			if (r == 1)
				return 0;
			if (r == -ECANCELED) /* the thread's context (park.h) */
				return r;
			if (r == -ENOSYS)
				atomic_store_explicit(&no_futex, true,
						      memory_order_relaxed);
			/* -EFAULT: a member's lane went; this wait only. */
			if (r == -ENOSYS || r == -E2BIG || r == -EFAULT)
				futex = false; /* the next look arms the fds */
			got = NULL;
			n = 0;
			continue;
		}
		looks = in_flight ? looks + 1 : 0;
		if (in_flight && looks < CMESH__IN_FLIGHT_YIELDS) {
			sched_yield();
			got = NULL;
			continue;
		}
		if (in_flight) {
			int64_t nap =
				cmesh_clock_now() + CMESH__IN_FLIGHT_NAP_NS;

			if (until == CMESH_DEADLINE_NONE || nap < until)
				until = nap;
		}
		pthread_mutex_lock(&ws->lock);
		gen = ws->gen;
		pthread_mutex_unlock(&ws->lock);
		n = sleep_epoll(ws, until, ev);
		if (n < 0 && errno != EINTR)
			return -errno;
		/* The events are what the next look drains (none: it asks). */
		got = n > 0 ? ev : NULL;
		if (n < 0)
			n = 0;
	}
}

int cmesh_waitset_wait(cmesh_waitset *ws, int64_t deadline, uint64_t *out_key)
{
	if (!ws || !out_key)
		return -EINVAL;
	return wait_until(ws, deadline, NULL, out_key);
}

int cmesh_waitset_wait_ctx(cmesh_waitset *ws, const cmesh_ctx *ctx,
			   uint64_t *out_key)
{
	struct cmesh__ctx_watcher w = { .fn = cmesh__waitset_on_cancel,
					.arg = ws };
	int r;

	if (!ws || !out_key)
		return -EINVAL;
	if (!ctx)
		return wait_until(ws, CMESH_DEADLINE_NONE, NULL, out_key);
	/* The waitset polls its fd, no futex: the cancel signals it. */
	cmesh__ctx_watch(ctx, &w);
	r = wait_until(ws, cmesh_ctx_deadline(ctx), ctx, out_key);
	cmesh__ctx_unwatch(&w);
	return r;
}
