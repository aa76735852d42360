/* SPDX-License-Identifier: MIT */
/*
 * waitset.c - wait for the first ready of many receivers.
 *
 * Each member's queue holds a pointer to the waitset (under the queue's
 * lock). Waiting scans the members; when none is ready it arms each one
 * (ST_WS_ARMED in the queue's state word), scans again (the Dekker pairing
 * of queue.c makes a send that raced with arming visible to one side), and
 * sleeps on the waitset's eventfd. A producer that finds its queue armed
 * writes the eventfd. The scan is O(members) per wait.
 *
 * A receiver whose senders are in another process is woken through its
 * wake fds (lane.c): its wake socket, on which the peer sends, and its
 * private eventfd, which its link thread signals. The waitset's fd is
 * therefore an epoll instance holding the waitset's eventfd and those
 * receivers' wake fds: it polls readable when any of them is signalled.
 * Every fd it reads is one that only this process holds, and none is read
 * blocking: nothing a peer does to a file description stalls a wait.
 *
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

#include "cancel.h"
#include "ctl.h"
#include "endpoint.h"
#include "lane.h"
#include "link.h"
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
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441 /* the same number on every architecture */
#endif

/* Lanes of ports one member may have (its senders sent away, ...). */
#define MEMBER_LANES 64u

struct member {
	struct cmesh__queue *q;
	uint64_t key;
	/* The links of its ports' lanes, one wake socket reference each. */
	struct cmesh__link **links;
	uint32_t nlinks;
};

/* Our wake socket on a link (link_wake.c), shared by the members there. */
struct wlink {
	struct cmesh__link *l;
	int fd;
	uint32_t id;
	uint32_t refs;
};

/* A context member: ready once it ended; its cancel signals the efd. */
struct ctx_member {
	const cmesh_ctx *user; /* the caller's handle: its name here */
	cmesh_ctx *held;       /* our clone: the caller may free theirs */
	uint64_t key;
	struct cmesh__ctx_watcher w;
};

struct cmesh_waitset {
	int epfd; /* exposed fd: efd + remote members' eventfds */
	int efd;
	/*
	 * The members. A member may be freed, or sent away, by another
	 * thread while a wait runs: every access holds `lock`, which a wait
	 * drops while it sleeps.
	 */
	pthread_mutex_t lock;
	uint32_t n;
	uint32_t cap;
	uint32_t next; /* round-robin scan start */
	struct member *m;
	struct wlink *wl;
	uint32_t nwl, capwl;
	struct ctx_member **cm; /* context members */
	uint32_t ncm, capcm, cnext;
	/*
	 * The members were armed by the last try_wait that found nothing
	 * (producers signal us): the next one disarms them, draining what
	 * they sent. While false, a try_wait that finds a member ready makes
	 * no syscall. Under `lock`.
	 */
	bool armed;
	/* Bumped when a watched fd goes (under `lock`): see try_wait_after. */
	uint64_t gen;
	/*
	 * The futex word of a wait asleep in futex_waitv: incremented
	 * (release) and woken by cmesh__waitset_signal() and by queue.c's
	 * wake() of a member armed with ST_WS_FUTEX; the wait loads it
	 * (acquire) before it arms the members.
	 */
	_Atomic uint32_t word;
};

/*
 * What a watched fd is, in its epoll data beside the fd: how a look that
 * epoll reports readable empties it (drain_ready()).
 */
enum {
	WFD_SIGNAL = 1,
	WFD_SOCK,
	WFD_EVENTFD
};

/* Events a look takes from epoll at once; more: every fd is drained. */
#define WS_EVENTS 16

/* Watches `fd` (level-triggered) or stops watching it. */
static int watch(cmesh_waitset *ws, int fd, uint32_t kind, bool on)
{
	struct epoll_event ev = {
		.events = EPOLLIN,
		.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)kind << 32,
	};

	if (epoll_ctl(ws->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev))
		return -errno;
	return 0;
}

int cmesh_waitset_new(cmesh_waitset **out_ws)
{
	cmesh_waitset *ws;
	int r;

	if (!out_ws)
		return -EINVAL;
	ws = calloc(1, sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	if (pthread_mutex_init(&ws->lock, NULL)) {
		free(ws);
		return -ENOMEM;
	}
	ws->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ws->epfd < 0) {
		r = -errno;
		goto out_free;
	}
	ws->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ws->efd < 0) {
		r = -errno;
		goto out_close_ep;
	}
	r = watch(ws, ws->efd, WFD_SIGNAL, true);
	if (r)
		goto out_close_efd;
	*out_ws = ws;
	return 0;

out_close_efd:
	close(ws->efd);
out_close_ep:
	close(ws->epfd);
out_free:
	pthread_mutex_destroy(&ws->lock);
	free(ws);
	return r;
}

/* Watches (or stops watching) the wake fds of a remote member. */
static int watch_member(cmesh_waitset *ws, struct cmesh__queue *q, bool on)
{
	int fds[2], n = cmesh__queue_wake_fds(q, fds), r = 0;

	/* fds[0]: its wake socket, fds[1]: its eventfd (lane_wake.c). */
	for (int i = 0; i < n; i++) {
		r = watch(ws, fds[i], i ? WFD_EVENTFD : WFD_SOCK, on);
		if (r && on) {
			while (i--)
				watch(ws, fds[i], 0, false);
			return r;
		}
	}
	return 0;
}

/* Our wake socket on link `l`, opened on first use; a reference more. */
static struct wlink *wlink_get(cmesh_waitset *ws, struct cmesh__link *l)
{
	struct wlink *w;

	for (uint32_t i = 0; i < ws->nwl; i++)
		if (ws->wl[i].l == l) {
			ws->wl[i].refs++;
			return &ws->wl[i];
		}
	if (ws->nwl == ws->capwl) {
		uint32_t cap = ws->capwl ? ws->capwl * 2 : 4;

		w = realloc(ws->wl, cap * sizeof(*w));
		if (!w)
			return NULL;
		ws->wl = w;
		ws->capwl = cap;
	}
	w = &ws->wl[ws->nwl];
	if (cmesh__link_wake_open(l, &w->fd, &w->id))
		return NULL;
	if (watch(ws, w->fd, WFD_SOCK, true)) {
		close(w->fd);
		cmesh__link_wake_close(l, w->id);
		return NULL;
	}
	cmesh__link_get(l);
	w->l = l;
	w->refs = 1;
	ws->nwl++;
	return w;
}

static void wlink_put(cmesh_waitset *ws, struct cmesh__link *l)
{
	for (uint32_t i = 0; i < ws->nwl; i++) {
		struct wlink w = ws->wl[i];

		if (w.l != l)
			continue;
		if (--ws->wl[i].refs)
			return;
		ws->wl[i] = ws->wl[--ws->nwl];
		watch(ws, w.fd, 0, false);
		ws->gen++;
		close(w.fd);
		cmesh__link_wake_close(l, w.id);
		cmesh__link_put(l);
		return;
	}
}

static void member_links_put(cmesh_waitset *ws, struct member *m)
{
	for (uint32_t k = 0; k < m->nlinks; k++)
		wlink_put(ws, m->links[k]);
	free(m->links);
	m->links = NULL;
	m->nlinks = 0;
}

/*
 * The wake sockets the ports' lanes of queue `q` need, one per link:
 * each lane learns its socket's id (it writes it with its SOCK bit).
 */
static int member_links(cmesh_waitset *ws, struct member *m)
{
	struct cmesh__lane *lanes[MEMBER_LANES];
	uint32_t n = cmesh__queue_lanes(m->q, lanes, MEMBER_LANES);

	m->links = NULL;
	m->nlinks = 0;
	if (n == UINT32_MAX)
		return -EOPNOTSUPP;
	if (!n)
		return 0;
	m->links = calloc(n, sizeof(*m->links));
	if (!m->links)
		return -ENOMEM;
	for (uint32_t k = 0; k < n; k++) {
		struct wlink *w = wlink_get(ws, lanes[k]->link);

		if (!w) {
			member_links_put(ws, m);
			return -ENOMEM;
		}
		lanes[k]->ws_id = w->id;
		m->links[m->nlinks++] = lanes[k]->link;
	}
	return 0;
}

static void remove_at(cmesh_waitset *ws, uint32_t i)
{
	cmesh__queue_disarm(ws->m[i].q, true);
	cmesh__queue_arm_futex(ws->m[i].q, false);
	watch_member(ws, ws->m[i].q, false);
	ws->gen++;
	cmesh__queue_set_waitset(ws->m[i].q, NULL, -1, NULL);
	member_links_put(ws, &ws->m[i]);
	ws->m[i] = ws->m[--ws->n];
	if (ws->next >= ws->n)
		ws->next = 0;
}

static void ctx_member_free(struct ctx_member *c)
{
	cmesh__ctx_unwatch(&c->w);
	cmesh_ctx_free(c->held);
	free(c);
}

void cmesh_waitset_free(cmesh_waitset *ws)
{
	if (!ws)
		return;
	pthread_mutex_lock(&ws->lock);
	while (ws->n)
		remove_at(ws, ws->n - 1);
	pthread_mutex_unlock(&ws->lock);
	for (uint32_t i = 0; i < ws->ncm; i++)
		ctx_member_free(ws->cm[i]);
	free(ws->cm);
	close(ws->efd);
	close(ws->epfd);
	free(ws->wl);
	pthread_mutex_destroy(&ws->lock);
	free(ws->m);
	free(ws);
}

void cmesh__waitset_signal(cmesh_waitset *ws)
{
	(void)cmesh__eventfd_signal(ws->efd); /* full: readable anyway */
	/* A wait asleep in futex_waitv (loaded before it armed). */
	atomic_fetch_add_explicit(&ws->word, 1, memory_order_release);
	cmesh__park_wake(&ws->word);
}

static int add_locked(cmesh_waitset *ws, struct cmesh__queue *q, uint64_t key)
{
	int r;

	if (ws->n == ws->cap) {
		uint32_t cap = ws->cap ? ws->cap * 2 : 8;
		struct member *m = realloc(ws->m, cap * sizeof(*m));

		if (!m)
			return -ENOMEM;
		ws->m = m;
		ws->cap = cap;
	}
	/* First: from here on the receiver gains no lane (queue_port.c). */
	r = cmesh__queue_set_waitset(q, ws, ws->efd, &ws->word);
	if (r)
		return r;
	ws->m[ws->n].q = q;
	ws->m[ws->n].key = key;
	r = member_links(ws, &ws->m[ws->n]);
	if (!r) {
		r = watch_member(ws, q, true);
		if (r)
			member_links_put(ws, &ws->m[ws->n]);
	}
	if (r) {
		cmesh__queue_set_waitset(q, NULL, -1, NULL);
		return r;
	}
	ws->n++;
	/* The new member may be ready already: let the loop look. */
	cmesh__waitset_signal(ws);
	return 0;
}

static int add(cmesh_waitset *ws, struct cmesh__queue *q, uint64_t key)
{
	int r;

	pthread_mutex_lock(&ws->lock);
	r = add_locked(ws, q, key);
	pthread_mutex_unlock(&ws->lock);
	return r;
}

int cmesh_waitset_add_receiver(cmesh_waitset *ws, cmesh_receiver *rx,
			       uint64_t key)
{
	if (!ws || !rx)
		return -EINVAL;
	return add(ws, rx->q, key);
}

int cmesh_waitset_add_oneshot(cmesh_waitset *ws, cmesh_oneshot_receiver *rx,
			      uint64_t key)
{
	if (!ws || !rx)
		return -EINVAL;
	return add(ws, rx->q, key);
}

static int remove_queue(cmesh_waitset *ws, struct cmesh__queue *q)
{
	int r = -ENOENT;

	pthread_mutex_lock(&ws->lock);
	for (uint32_t i = 0; i < ws->n; i++) {
		if (ws->m[i].q == q) {
			remove_at(ws, i);
			r = 0;
			break;
		}
	}
	pthread_mutex_unlock(&ws->lock);
	return r;
}

int cmesh_waitset_remove_receiver(cmesh_waitset *ws, cmesh_receiver *rx)
{
	if (!ws || !rx)
		return -EINVAL;
	return remove_queue(ws, rx->q);
}

int cmesh_waitset_remove_oneshot(cmesh_waitset *ws, cmesh_oneshot_receiver *rx)
{
	if (!ws || !rx)
		return -EINVAL;
	return remove_queue(ws, rx->q);
}

void cmesh__waitset_leave(struct cmesh__queue *q)
{
	cmesh_waitset *ws = cmesh__queue_waitset(q);

	if (ws)
		remove_queue(ws, q);
}

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

/* A context's cancel makes the waitset's fd readable. */
static void on_cancel(void *arg)
{
	cmesh__waitset_signal(arg);
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

int cmesh_waitset_add_ctx(cmesh_waitset *ws, const cmesh_ctx *ctx, uint64_t key)
{
	struct ctx_member *c;
	int r = 0;

	if (!ws || !ctx)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	r = cmesh_ctx_clone(ctx, &c->held);
	if (r) {
		free(c);
		return r;
	}
	c->user = ctx;
	c->key = key;
	c->w.fn = on_cancel;
	c->w.arg = ws;
	pthread_mutex_lock(&ws->lock);
	for (uint32_t i = 0; i < ws->ncm && !r; i++)
		if (ws->cm[i]->user == ctx)
			r = -EBUSY;
	if (!r && ws->ncm == ws->capcm) {
		uint32_t cap = ws->capcm ? 2 * ws->capcm : 4;
		struct ctx_member **v = realloc(ws->cm, cap * sizeof(*v));

		if (v) {
			ws->cm = v;
			ws->capcm = cap;
		} else {
			r = -ENOMEM;
		}
	}
	if (!r)
		ws->cm[ws->ncm++] = c;
	pthread_mutex_unlock(&ws->lock);
	if (r) {
		cmesh_ctx_free(c->held);
		free(c);
		return r;
	}
	/* Outside ws->lock: a cancel signals under the contexts' lock. */
	cmesh__ctx_watch(c->held, &c->w);
	cmesh__waitset_signal(ws); /* a wait in progress looks again */
	return 0;
}

int cmesh_waitset_remove_ctx(cmesh_waitset *ws, const cmesh_ctx *ctx)
{
	struct ctx_member *c = NULL;

	if (!ws || !ctx)
		return -EINVAL;
	pthread_mutex_lock(&ws->lock);
	for (uint32_t i = 0; i < ws->ncm; i++)
		if (ws->cm[i]->user == ctx) {
			c = ws->cm[i];
			ws->cm[i] = ws->cm[--ws->ncm];
			if (ws->cnext >= ws->ncm)
				ws->cnext = 0;
			break;
		}
	pthread_mutex_unlock(&ws->lock);
	if (!c)
		return -ENOENT;
	ctx_member_free(c);
	return 0;
}

/* Empties one watched fd that epoll reported readable. */
static void drain_fd(uint64_t data)
{
	int fd = (int)(uint32_t)data;

	if (data >> 32 == WFD_SOCK)
		cmesh__ctl_wake_drain(fd);
	else
		cmesh__eventfd_drain(fd); /* WFD_SIGNAL, WFD_EVENTFD */
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
			drain_fd((uint64_t)(uint32_t)fds[k] |
				 (uint64_t)(k ? WFD_EVENTFD : WFD_SOCK) << 32);
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
		drain_fd(ev[i].data.u64);
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
	struct cmesh__ctx_watcher w = { .fn = on_cancel, .arg = ws };
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

int cmesh_waitset_fd(const cmesh_waitset *ws)
{
	return ws ? ws->epfd : -EINVAL;
}

uint32_t cmesh_waitset_size(const cmesh_waitset *ws)
{
	cmesh_waitset *w = (cmesh_waitset *)ws;
	uint32_t n;

	if (!w)
		return 0;
	pthread_mutex_lock(&w->lock);
	n = w->n + w->ncm;
	pthread_mutex_unlock(&w->lock);
	return n;
}
