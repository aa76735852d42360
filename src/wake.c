/* SPDX-License-Identifier: MIT */
/*
 * wake.c - the wake backend: io_uring poll requests, or epoll.
 *
 * Why multishot poll. The loop waits on a set of fds (consumer eventfds,
 * control sockets) that changes rarely and fires often. A multishot
 * IORING_OP_POLL_ADD is armed once per fd and posts one completion per
 * wakeup for as long as it stays armed, so the steady state is one
 * io_uring_enter() per wait: nothing to submit, no re-arm, a batch of
 * completions to reap, and the deadline passed in the same call (EXT_ARG)
 * rather than as a timeout request.
 *
 * Fallbacks. (1) A kernel without multishot poll (before 5.13) fails the
 * first multishot request with -EINVAL; the object then uses one-shot
 * polls, re-armed after each completion (CMESH__WAKE_ONESHOT forces this
 * for tests). A multishot request that ends without IORING_CQE_F_MORE (the
 * kernel ends it, for instance, when the CQ overflows; the overflowed
 * completions themselves are kept, IORING_FEAT_NODROP) is re-armed the
 * same way, as is one the kernel cancels on its own (-ECANCELED while the
 * fd is still registered). (2) No io_uring (ENOSYS, EPERM from seccomp or the
 * io_uring_disabled sysctl, EACCES, no IORING_FEAT_NODROP): epoll with
 * EPOLLET, whose one event per wakeup matches multishot poll, so callbacks
 * get the same contract from both (see wake.h).
 *
 * Stale events. An event names its registration by user_data (epoll: the
 * data word) = generation << 32 | slot. Deleting an fd bumps its slot's
 * generation, so completions still queued (the -ECANCELED of a removed
 * poll, events collected in the same batch) find another generation and
 * are dropped: a deleted fd's callback never runs.
 *
 * Memory ordering. No atomics here: the object belongs to one thread and
 * liburing orders its own SQ/CQ ring accesses. Across threads and
 * processes the eventfd is the synchronisation: its write() and read() are
 * system calls serialised by the eventfd's lock, so what a producer stored
 * before cmesh__eventfd_signal() (the release side) is visible to a
 * consumer after the cmesh__eventfd_drain() that sees the signal (the
 * acquire side). A consumer re-checks its ring after draining.
 *
 * Allocation: only cmesh__wake_add() grows the slot table; run allocates
 * nothing. Only this file includes liburing.
 */
#include "wake.h"
#include "env.h"
#include "log.h"
#include "park.h"

#include <cmesh/error.h>

#include <cmesh/common.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SQ_ENTRIES 64u
#define CQ_ENTRIES 256u
#define BATCH 64u /* events handled per wait */
#define MAX_SLOTS (1u << 20)
#define UD_IGNORE 0ull /* user_data of poll removals; no slot has gen 0 */
#define WATCHABLE (POLLIN | POLLPRI | POLLOUT | POLLRDHUP | POLLERR | POLLHUP)

_Static_assert(POLLIN == EPOLLIN && POLLPRI == EPOLLPRI &&
		       POLLOUT == EPOLLOUT && POLLRDHUP == EPOLLRDHUP &&
		       POLLERR == EPOLLERR && POLLHUP == EPOLLHUP,
	       "poll and epoll event bits are passed through unchanged");

enum {
	SLOT_FREE,
	SLOT_LIVE,
	SLOT_CANCEL
};

struct slot {
	int fd;
	uint32_t events;
	uint32_t gen;  /* never 0; bumped when the fd is deleted */
	uint8_t state; /* SLOT_*; CANCEL: freed, its poll removal unsent */
	bool armed;    /* uring: a poll request is (or is about to be) live */
	bool pending;  /* uring: an arm or a removal waits for an SQE */
	cmesh__wake_cb cb;
	void *arg;
	uint64_t cancel_ud; /* SLOT_CANCEL: the request to remove */
};

struct backend {
	int (*watch)(struct cmesh__wake *w, uint32_t i);
	void (*unwatch)(struct cmesh__wake *w, uint32_t i);
	/* Callbacks run (> 0), 0 to wait again, -ETIMEDOUT, -errno. */
	int (*wait)(struct cmesh__wake *w, int64_t deadline);
	void (*fini)(struct cmesh__wake *w);
};

struct cmesh__wake {
	const struct backend *ops;
	uint32_t backend; /* CMESH_WAKE_URING or CMESH_WAKE_EPOLL */
	bool running;
	struct slot *slots;
	uint32_t nslots;
	union {
		struct {
			int fd;
			struct epoll_event evs[BATCH];
		} ep;
		struct {
			struct io_uring ring;
			bool multishot;
			uint32_t pending; /* slots with .pending set */
		} ur;
	};
};

/* ---- registrations, shared by both backends ---- */

static uint64_t slot_ud(const struct cmesh__wake *w, uint32_t i)
{
	return (uint64_t)w->slots[i].gen << 32 | i;
}

/* The live registration an event names, or NULL if it was deleted. */
static struct slot *slot_of(struct cmesh__wake *w, uint64_t ud, uint32_t *i)
{
	uint32_t idx = (uint32_t)ud;

	if (idx >= w->nslots || w->slots[idx].state != SLOT_LIVE ||
	    w->slots[idx].gen != (uint32_t)(ud >> 32))
		return NULL;
	*i = idx;
	return &w->slots[idx];
}

static int slot_find(const struct cmesh__wake *w, int fd)
{
	for (uint32_t i = 0; i < w->nslots; i++) {
		if (w->slots[i].state == SLOT_LIVE && w->slots[i].fd == fd)
			return (int)i;
	}
	return -1;
}

static int slot_get(struct cmesh__wake *w, uint32_t *out)
{
	struct slot *p;
	uint32_t i, n;

	for (i = 0; i < w->nslots; i++) {
		if (w->slots[i].state == SLOT_FREE) {
			*out = i;
			return 0;
		}
	}
	n = w->nslots ? w->nslots * 2 : 16;
	if (n > MAX_SLOTS)
		return -ENOMEM;
	p = realloc(w->slots, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	for (i = w->nslots; i < n; i++)
		p[i] = (struct slot){ .fd = -1, .gen = 1, .state = SLOT_FREE };
	w->slots = p;
	*out = w->nslots;
	w->nslots = n;
	return 0;
}

/* Ends a registration; events that still name it will miss. */
static void slot_retire(struct cmesh__wake *w, uint32_t i)
{
	struct slot *s = &w->slots[i];

	if (++s->gen == 0)
		s->gen = 1;
	if (s->state == SLOT_LIVE)
		s->state = SLOT_FREE;
	s->fd = -1;
	s->cb = NULL;
	s->arg = NULL;
}

static int deadline_passed(int64_t deadline)
{
	return deadline != CMESH_DEADLINE_NONE && cmesh_clock_now() >= deadline;
}

/* ---- epoll ---- */

static int ep_watch(struct cmesh__wake *w, uint32_t i)
{
	struct epoll_event ev = { .events = w->slots[i].events | EPOLLET,
				  .data.u64 = slot_ud(w, i) };

	if (epoll_ctl(w->ep.fd, EPOLL_CTL_ADD, w->slots[i].fd, &ev) < 0)
		return -errno;
	return 0;
}

static void ep_unwatch(struct cmesh__wake *w, uint32_t i)
{
	/*
	 * Fails only if the caller closed the fd first; if the file lives
	 * on elsewhere its events carry the old generation and are dropped.
	 */
	(void)epoll_ctl(w->ep.fd, EPOLL_CTL_DEL, w->slots[i].fd, NULL);
}

static int ep_wait(struct cmesh__wake *w, int64_t deadline)
{
	int n, ran = 0;
	uint32_t i;

	n = epoll_wait(w->ep.fd, w->ep.evs, (int)BATCH,
		       cmesh__park_ms_until(deadline));
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int k = 0; k < n; k++) {
		struct slot *s = slot_of(w, w->ep.evs[k].data.u64, &i);

		if (s) {
			s->cb(s->arg, s->fd, w->ep.evs[k].events);
			ran++;
		}
	}
	if (!ran && deadline_passed(deadline))
		return -ETIMEDOUT;
	return ran;
}

static void ep_fini(struct cmesh__wake *w)
{
	close(w->ep.fd);
}

static const struct backend epoll_backend = {
	.watch = ep_watch,
	.unwatch = ep_unwatch,
	.wait = ep_wait,
	.fini = ep_fini,
};

static int ep_init(struct cmesh__wake *w)
{
	w->ep.fd = epoll_create1(EPOLL_CLOEXEC);
	if (w->ep.fd < 0)
		return -errno;
	w->ops = &epoll_backend;
	w->backend = CMESH_WAKE_EPOLL;
	return 0;
}

/* ---- io_uring ---- */

static struct io_uring_sqe *ur_sqe(struct cmesh__wake *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ur.ring);

	if (!sqe) {
		/* SQ full: hand it to the kernel; a transient failure
		 * (-EBUSY, -EAGAIN) leaves it full and the caller defers. */
		(void)io_uring_submit(&w->ur.ring);
		sqe = io_uring_get_sqe(&w->ur.ring);
	}
	return sqe;
}

static void ur_defer(struct cmesh__wake *w, struct slot *s)
{
	if (!s->pending) {
		s->pending = true;
		w->ur.pending++;
	}
}

static void ur_prep_poll(struct cmesh__wake *w, struct io_uring_sqe *sqe,
			 uint32_t i)
{
	struct slot *s = &w->slots[i];

	if (w->ur.multishot)
		io_uring_prep_poll_multishot(sqe, s->fd, s->events);
	else
		io_uring_prep_poll_add(sqe, s->fd, s->events);
	io_uring_sqe_set_data64(sqe, slot_ud(w, i));
	s->armed = true;
}

static void ur_prep_remove(struct io_uring_sqe *sqe, uint64_t ud)
{
	io_uring_prep_poll_remove(sqe, ud);
	io_uring_sqe_set_data64(sqe, UD_IGNORE);
}

/* Queues a poll for slot i, or defers it to the next wait. */
static void ur_arm(struct cmesh__wake *w, uint32_t i)
{
	struct io_uring_sqe *sqe = ur_sqe(w);

	if (sqe)
		ur_prep_poll(w, sqe, i);
	else
		ur_defer(w, &w->slots[i]);
}

/* Queues the arms and removals that found the SQ full. */
static void ur_flush_deferred(struct cmesh__wake *w)
{
	for (uint32_t i = 0; i < w->nslots && w->ur.pending; i++) {
		struct slot *s = &w->slots[i];
		struct io_uring_sqe *sqe;

		if (!s->pending)
			continue;
		sqe = ur_sqe(w);
		if (!sqe)
			return;
		s->pending = false;
		w->ur.pending--;
		if (s->state == SLOT_CANCEL) {
			ur_prep_remove(sqe, s->cancel_ud);
			s->state = SLOT_FREE;
		} else {
			ur_prep_poll(w, sqe, i);
		}
	}
}

static int ur_watch(struct cmesh__wake *w, uint32_t i)
{
	ur_arm(w, i);
	/*
	 * Submit now, so that cmesh__wake_fd() reflects the new fd at once.
	 * A failure leaves the request queued for the next wait, which
	 * reports any error.
	 */
	(void)io_uring_submit(&w->ur.ring);
	return 0;
}

static void ur_unwatch(struct cmesh__wake *w, uint32_t i)
{
	struct slot *s = &w->slots[i];
	struct io_uring_sqe *sqe;

	if (s->pending) { /* never armed */
		s->pending = false;
		w->ur.pending--;
		return;
	}
	if (!s->armed)
		return;
	s->armed = false;
	sqe = ur_sqe(w);
	if (!sqe) {
		s->state = SLOT_CANCEL;
		s->cancel_ud = slot_ud(w, i);
		ur_defer(w, s);
		return;
	}
	ur_prep_remove(sqe, slot_ud(w, i));
	/* Now: the request holds a reference to the file until removed. */
	(void)io_uring_submit(&w->ur.ring);
}

/* Handles one completion; 1 if a callback ran. */
static int ur_complete(struct cmesh__wake *w, uint64_t ud, int32_t res,
		       uint32_t flags)
{
	struct slot *s;
	uint32_t i;
	int ran = 0;

	if (ud == UD_IGNORE)
		return 0;
	s = slot_of(w, ud, &i);
	if (!s)
		return 0; /* deleted: -ECANCELED or a late event */
	if (!(flags & IORING_CQE_F_MORE))
		s->armed = false;
	if (res == -EINVAL && w->ur.multishot) {
		w->ur.multishot = false; /* kernel before 5.13 */
	} else if (res < 0 && res != -ECANCELED) {
		/* The fd cannot be polled: say so once, do not re-arm. */
		s->cb(s->arg, s->fd, POLLERR);
		return 1;
	} else if (res > 0) {
		s->cb(s->arg, s->fd, (uint32_t)res);
		ran = 1;
	}
	/* The callback may have deleted the fd or grown the table. */
	s = slot_of(w, ud, &i);
	if (s && !s->armed && !s->pending)
		ur_arm(w, i);
	return ran;
}

static int ur_reap(struct cmesh__wake *w)
{
	struct io_uring_cqe *cqes[BATCH];
	struct {
		uint64_t ud;
		int32_t res;
		uint32_t flags;
	} got[BATCH];
	unsigned n;
	int ran = 0;

	/* Copy out first: callbacks may then add, delete and submit. */
	n = io_uring_peek_batch_cqe(&w->ur.ring, cqes, BATCH);
	for (unsigned k = 0; k < n; k++) {
		got[k].ud = cqes[k]->user_data;
		got[k].res = cqes[k]->res;
		got[k].flags = cqes[k]->flags;
	}
	io_uring_cq_advance(&w->ur.ring, n);
	for (unsigned k = 0; k < n; k++)
		ran += ur_complete(w, got[k].ud, got[k].res, got[k].flags);
	return ran;
}

static int ur_wait(struct cmesh__wake *w, int64_t deadline)
{
	struct io_uring *ring = &w->ur.ring;
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	int64_t now;
	int r = 0, ran;

	if (w->ur.pending)
		ur_flush_deferred(w);
	if (!io_uring_cq_ready(ring)) {
		if (io_uring_cq_has_overflow(ring)) {
			/* Completions wait in the kernel's overflow list. */
			r = io_uring_get_events(ring);
		} else if (deadline == CMESH_DEADLINE_NONE) {
			r = io_uring_submit_and_wait_timeout(ring, &cqe, 1,
							     NULL, NULL);
		} else if ((now = cmesh_clock_now()) >= deadline) {
			r = io_uring_submit(ring);
		} else {
			ts.tv_sec = (deadline - now) / 1000000000;
			ts.tv_nsec = (deadline - now) % 1000000000;
			r = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts,
							     NULL);
		}
		/* -EBUSY/-EAGAIN: completions must be reaped first. */
		if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY &&
		    r != -EAGAIN)
			return r;
	}
	ran = ur_reap(w);
	/* Re-arms queued by the completions: submit before returning, so
	 * an embedder polling cmesh__wake_fd() sees their events. */
	if (io_uring_sq_ready(ring))
		(void)io_uring_submit(ring);
	if (!ran && deadline_passed(deadline))
		return -ETIMEDOUT;
	return ran;
}

static void ur_fini(struct cmesh__wake *w)
{
	/*
	 * Remove the polls before tearing the ring down: the removal drops
	 * the requests' file references now, the ring's own teardown only
	 * later, from a kernel worker.
	 */
	for (uint32_t i = 0; i < w->nslots; i++) {
		if (w->slots[i].state == SLOT_LIVE)
			ur_unwatch(w, i);
	}
	(void)io_uring_submit(&w->ur.ring);
	io_uring_queue_exit(&w->ur.ring);
}

static const struct backend uring_backend = {
	.watch = ur_watch,
	.unwatch = ur_unwatch,
	.wait = ur_wait,
	.fini = ur_fini,
};

static int ur_init(struct cmesh__wake *w, bool oneshot)
{
	struct io_uring_params p;
	int r;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
	p.cq_entries = CQ_ENTRIES;
	r = io_uring_queue_init_params(SQ_ENTRIES, &w->ur.ring, &p);
	if (r < 0)
		return r;
	if (!(p.features & IORING_FEAT_NODROP)) {
		/* Before 5.5 an overflowing CQ loses wakeups. */
		io_uring_queue_exit(&w->ur.ring);
		return -ENOSYS;
	}
	w->ur.multishot = !oneshot;
	w->ur.pending = 0;
	w->ops = &uring_backend;
	w->backend = CMESH_WAKE_URING;
	return 0;
}

/* io_uring_disabled = 2: io_uring_setup() fails for everyone (EPERM). */
static bool uring_disabled(void)
{
	char c = '0';
	int fd = open("/proc/sys/kernel/io_uring_disabled",
		      O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	if (read(fd, &c, 1) != 1)
		c = '0';
	close(fd);
	return c == '2';
}

/* ---- the interface ---- */

/* The epoll fallback is logged once per process. */
static atomic_bool fallback_logged;

int cmesh__wake_new(uint32_t backend, struct cmesh__wake **out)
{
	uint32_t kind = backend & ~CMESH__WAKE_ONESHOT;
	struct cmesh__wake *w;
	int r;

	if (!out || kind > CMESH_WAKE_EPOLL)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	if (kind == CMESH_WAKE_URING ||
	    (kind == CMESH_WAKE_AUTO && !uring_disabled())) {
		r = ur_init(w, backend & CMESH__WAKE_ONESHOT);
		if (!r)
			goto out_done;
		/*
		 * Absent (ENOSYS) or forbidden (EPERM, EACCES: seccomp, the
		 * io_uring_disabled sysctl, an LSM): "not available here".
		 * Reported as -ENOSYS when io_uring was asked for: -EPERM
		 * means refused credentials everywhere else in cmesh.
		 */
		if (r == -EPERM || r == -EACCES)
			r = -ENOSYS;
		if (kind == CMESH_WAKE_URING || r != -ENOSYS)
			goto out_free;
		if (!atomic_exchange(&fallback_logged, true))
			cmesh__log(CMESH__LOG_WARN,
				   "io_uring is not available here (%s): "
				   "wake loops use epoll",
				   cmesh_strerror(r));
	}
	r = ep_init(w);
	if (r)
		goto out_free;
out_done:
	*out = w;
	return 0;
out_free:
	free(w);
	return r;
}

int cmesh__wake_new_default(struct cmesh__wake **out)
{
	const cmesh_env *env;
	int r;

	if (!out)
		return -EINVAL;
	r = cmesh__env_get(&env);
	if (r)
		return r;
	return cmesh__wake_new(env->wake, out);
}

uint32_t cmesh__wake_backend(const struct cmesh__wake *w)
{
	return w->backend;
}

int cmesh__wake_fd(const struct cmesh__wake *w)
{
	return w->backend == CMESH_WAKE_URING ? w->ur.ring.ring_fd : w->ep.fd;
}

int cmesh__wake_add(struct cmesh__wake *w, int fd, uint32_t events,
		    cmesh__wake_cb cb, void *arg)
{
	struct stat st;
	uint32_t i;
	int r;

	if (!w || !cb || !(events & ~(uint32_t)(POLLERR | POLLHUP)) ||
	    (events & ~(uint32_t)WATCHABLE))
		return -EINVAL;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -EBADF;
	if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
		return -EPERM;
	if (slot_find(w, fd) >= 0)
		return -EBUSY;
	r = slot_get(w, &i);
	if (r)
		return r;
	w->slots[i].fd = fd;
	w->slots[i].events = events;
	w->slots[i].state = SLOT_LIVE;
	w->slots[i].armed = false;
	w->slots[i].pending = false;
	w->slots[i].cb = cb;
	w->slots[i].arg = arg;
	r = w->ops->watch(w, i);
	if (r)
		slot_retire(w, i);
	return r;
}

int cmesh__wake_del(struct cmesh__wake *w, int fd)
{
	int i;

	if (!w)
		return -EINVAL;
	i = slot_find(w, fd);
	if (i < 0)
		return -ENOENT;
	w->ops->unwatch(w, (uint32_t)i);
	slot_retire(w, (uint32_t)i);
	return 0;
}

int cmesh__wake_run(struct cmesh__wake *w, int64_t deadline)
{
	int r;

	if (!w)
		return -EINVAL;
	if (w->running)
		return -EBUSY;
	w->running = true;
	do {
		r = w->ops->wait(w, deadline);
	} while (r == 0);
	w->running = false;
	return r == -ETIMEDOUT ? 0 : r;
}

void cmesh__wake_free(struct cmesh__wake *w)
{
	if (!w)
		return;
	w->ops->fini(w);
	free(w->slots);
	free(w);
}

/* ---- eventfds ---- */

int cmesh__eventfd_new(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	return fd < 0 ? -errno : fd;
}

int cmesh__eventfd_signal(int fd)
{
	uint64_t one = 1;
	ssize_t n;

	do {
		n = write(fd, &one, sizeof(one));
	} while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(one))
		return 0;
	if (n < 0 && errno == EAGAIN)
		return 0; /* count at its maximum: signalled already */
	return n < 0 ? -errno : -EIO;
}

int cmesh__eventfd_drain(int fd)
{
	uint64_t count;
	struct iovec iov = { .iov_base = &count, .iov_len = sizeof(count) };
	ssize_t n;

	/*
	 * RWF_NOWAIT: non-blocking for this call whatever the description's
	 * flags say (eventfds take it since Linux 5.12), so even a process
	 * that inherited the fd cannot make this read block.
	 */
	do {
		n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
		if (n < 0 && errno == EOPNOTSUPP)
			n = read(fd, &count, sizeof(count));
	} while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(count))
		return 1;
	if (n < 0 && errno == EAGAIN)
		return 0;
	return n < 0 ? -errno : -EIO;
}
