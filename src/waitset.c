/* SPDX-License-Identifier: MIT */
/*
 * waitset.c - wait for the first ready of many receivers: the members
 * and what a wake of each needs (its looks and sleeps: waitset_wait.c).
 *
 * Each member's queue holds a pointer to the waitset (under the queue's
 * lock). Waiting scans the members; when none is ready it arms each one
 * (ST_WS_ARMED in the queue's state word), scans again (the Dekker pairing
 * of queue.c makes a send that raced with arming visible to one side), and
 * sleeps on the waitset's eventfd. A producer that finds its queue armed
 * writes the eventfd. The scan is O(members) per wait.
 *
 * A receiver whose senders are in another process is woken through its
 * wake fds (lane_wake.c): its wake socket, on which the peer sends, and its
 * private eventfd, which its link thread signals. The waitset's fd is
 * therefore an epoll instance holding the waitset's eventfd and those
 * receivers' wake fds (and a timerfd for context members' deadlines): it
 * polls readable when any of them is signalled.
 * Every fd it reads is one that only this process holds, and none is read
 * blocking: nothing a peer does to a file description stalls a wait.
 */
#include "waitset.h"
#include "waitset_int.h"

#include "cancel.h"
#include "endpoint.h"
#include "lane.h"
#include "link.h"
#include "park.h"
#include "queue.h"
#include "wake.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Lanes of ports a member's first listing has room for (it grows). */
#define MEMBER_LANES 16u

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
	ws->tfd = -1;
	ws->tfd_at = CMESH_DEADLINE_NONE;
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
 * The ports' lanes of queue `q` (cmesh__queue_lanes()) in *out, an array
 * of *cap (grown as needed; the caller frees it): their count, or -ENOMEM.
 */
static int64_t list_lanes(struct cmesh__queue *q, struct cmesh__lane ***out,
			  uint32_t *cap)
{
	for (;;) {
		uint32_t n = cmesh__queue_lanes(q, *out, *cap);
		struct cmesh__lane **v;

		if (n != UINT32_MAX)
			return n;
		v = realloc(*out, 2 * (size_t)*cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		*out = v;
		*cap *= 2;
	}
}

/*
 * The wake sockets the ports' lanes of queue `q` need, one per link:
 * each lane learns its socket's id (it writes it with its SOCK bit).
 * The generation first: a lane that joins after it is listed again.
 */
static int member_links(cmesh_waitset *ws, struct member *m)
{
	uint32_t cap = MEMBER_LANES;
	struct cmesh__lane **lanes = malloc(cap * sizeof(*lanes));
	int64_t n;
	int r = 0;

	m->links = NULL;
	m->nlinks = 0;
	m->lanes_gen = cmesh__queue_lanes_gen(m->q);
	n = lanes ? list_lanes(m->q, &lanes, &cap) : -ENOMEM;
	if (n > 0 && !(m->links = calloc((size_t)n, sizeof(*m->links))))
		n = -ENOMEM;
	for (int64_t k = 0; k < n; k++) {
		struct wlink *w = wlink_get(ws, lanes[k]->link);

		if (!w) {
			member_links_put(ws, m);
			n = -ENOMEM;
			break;
		}
		atomic_store_explicit(&lanes[k]->ws_id, w->id,
				      memory_order_relaxed);
		m->links[m->nlinks++] = lanes[k]->link;
	}
	if (n < 0)
		r = (int)n;
	free(lanes);
	return r;
}

bool cmesh__waitset_refresh(cmesh_waitset *ws)
{
	bool done = true;

	for (uint32_t i = 0; i < ws->n; i++) {
		struct member *m = &ws->m[i], fresh = *m;

		if (cmesh__queue_lanes_gen(m->q) == m->lanes_gen)
			continue;
		/*
		 * The new references first: a socket its old lanes share
		 * stays open. Without memory (or an fd) the old set stays,
		 * and the caller looks again soon.
		 */
		if (member_links(ws, &fresh)) {
			done = false;
			continue;
		}
		member_links_put(ws, m);
		*m = fresh;
	}
	return done;
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
	if (ws->tfd >= 0)
		close(ws->tfd);
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
	/* First: a lane that joins from here on signals us (queue.c). */
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

int cmesh__waitset_hand_over(struct cmesh__queue *from,
			     struct cmesh_receiver *to)
{
	cmesh_waitset *ws = cmesh__queue_waitset(from);
	uint64_t key = 0;
	bool member = false;
	int r;

	if (!ws)
		return 0;
	pthread_mutex_lock(&ws->lock);
	for (uint32_t i = 0; i < ws->n && !member; i++)
		if (ws->m[i].q == from) {
			key = ws->m[i].key;
			member = true;
		}
	pthread_mutex_unlock(&ws->lock);
	if (!member)
		return 0;
	r = cmesh_waitset_add_receiver(ws, to, key);
	if (!r)
		remove_queue(ws, from);
	return r;
}
/* A context's cancel makes the waitset's fd readable. */
void cmesh__waitset_on_cancel(void *arg)
{
	cmesh__waitset_signal(arg);
}

int cmesh__waitset_timer(cmesh_waitset *ws)
{
	int64_t now = cmesh_clock_now(), at = CMESH_DEADLINE_NONE;
	struct itimerspec its = { 0 };
	int fd, r;

	/* Passed ones ended: their members are ready, no timer needed. */
	for (uint32_t i = 0; i < ws->ncm; i++) {
		int64_t d = cmesh_ctx_deadline(ws->cm[i]->held);

		if (d > now && d < at)
			at = d;
	}
	if (at == ws->tfd_at || (ws->tfd < 0 && at == CMESH_DEADLINE_NONE))
		return 0;
	if (ws->tfd < 0) {
		fd = timerfd_create(CLOCK_MONOTONIC,
				    TFD_CLOEXEC | TFD_NONBLOCK);
		if (fd < 0)
			return -errno;
		r = watch(ws, fd, WFD_TIMER, true);
		if (r) {
			close(fd);
			return r;
		}
		ws->tfd = fd;
	}
	/* The deadlines' clock (cmesh_clock_now()); 0 disarms. */
	if (at != CMESH_DEADLINE_NONE) {
		its.it_value.tv_sec = (time_t)(at / 1000000000);
		its.it_value.tv_nsec = (long)(at % 1000000000);
	}
	if (timerfd_settime(ws->tfd, TFD_TIMER_ABSTIME, &its, NULL))
		return -errno;
	ws->tfd_at = at;
	return 0;
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
	c->w.fn = cmesh__waitset_on_cancel;
	c->w.arg = ws;
	/*
	 * Watched before it is a member: a remove from another thread may
	 * free it as soon as it is (an early cancel only signals ws). Not
	 * under ws->lock: a cancel signals under the contexts' lock.
	 */
	cmesh__ctx_watch(c->held, &c->w);
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
	if (!r) {
		ws->cm[ws->ncm++] = c;
		/* Its deadline makes the fd readable: taken back without. */
		r = cmesh__waitset_timer(ws);
		if (r)
			ws->ncm--;
	}
	pthread_mutex_unlock(&ws->lock);
	if (r) {
		ctx_member_free(c);
		return r;
	}
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
	/*
	 * Not for its deadline any more (a failure: at worst an early wake).
	 * Unless the armed one passed: its expiry, unread, keeps the fd
	 * readable (a settime would clear it); the look that drains it arms
	 * the next.
	 */
	if (c && ws->tfd_at > cmesh_clock_now())
		(void)cmesh__waitset_timer(ws);
	pthread_mutex_unlock(&ws->lock);
	if (!c)
		return -ENOENT;
	ctx_member_free(c);
	return 0;
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
