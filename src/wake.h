/* SPDX-License-Identifier: MIT */
/*
 * wake.h - the wake backend: one event loop over many fds (the eventfds of
 * remote consumers, the control sockets), with io_uring or epoll behind it,
 * plus the eventfd helpers that producers use to wake a consumer.
 *
 * Threading: a struct cmesh__wake belongs to one thread at a time; add, del,
 * run and free must not race (signalling a registered eventfd from any
 * thread or process is of course fine: that is the point).
 *
 * Callback contract (the same on every backend): a callback runs after its
 * fd became ready for one of the requested events. It must consume what it
 * can (read the eventfd, read the socket until -EAGAIN): a new call is only
 * guaranteed after new activity on the fd. It may also run when nothing is
 * left to consume (spurious calls are allowed), so registered fds should be
 * non-blocking. A callback may call cmesh__wake_add() and cmesh__wake_del()
 * on its own wake object (deleting any fd, its own included: a deleted fd's
 * callback never runs again, even for events already collected), but not
 * cmesh__wake_run() (-EBUSY) or cmesh__wake_free().
 */
#ifndef CMESH_WAKE_H
#define CMESH_WAKE_H

#include <cmesh/env.h>

#include <stdint.h>

struct cmesh__wake;

/* Called with the fd's ready events (POLLIN, POLLOUT, POLLHUP, ...). */
typedef void (*cmesh__wake_cb)(void *arg, int fd, uint32_t revents);

/*
 * Backend flag for tests: with CMESH_WAKE_URING, re-arm one-shot polls
 * instead of using multishot polls (the path taken on kernels without
 * multishot poll, before 5.13).
 */
#define CMESH__WAKE_ONESHOT (1u << 16)

/*
 * Creates a wake object. `backend` is CMESH_WAKE_AUTO (io_uring, else
 * epoll when io_uring is absent or forbidden: ENOSYS, EPERM, EACCES, the
 * io_uring_disabled sysctl), CMESH_WAKE_URING (io_uring or the setup error:
 * -ENOSYS when it is absent or forbidden), or CMESH_WAKE_EPOLL, optionally ORed with
 * CMESH__WAKE_ONESHOT (no effect on epoll). Other values: -EINVAL.
 * Returns 0 and an owned object in *out, or -errno with nothing allocated.
 */
int cmesh__wake_new(uint32_t backend, struct cmesh__wake **out);

/*
 * Same, with the backend the environment asks for (CMESH_WAKE, see
 * <cmesh/env.h>), AUTO when unset. -EINVAL if the environment is bad.
 */
int cmesh__wake_new_default(struct cmesh__wake **out);

/* The backend in use: CMESH_WAKE_URING or CMESH_WAKE_EPOLL. */
uint32_t cmesh__wake_backend(const struct cmesh__wake *w);

/*
 * An fd that polls readable when cmesh__wake_run() has work, for an
 * embedder's own event loop (then call run with a past deadline). Borrowed:
 * valid until cmesh__wake_free().
 */
int cmesh__wake_fd(const struct cmesh__wake *w);

/*
 * Watches `fd` (borrowed: the caller keeps it open until it has deleted it;
 * it must support poll: an eventfd, socket, pipe, ...) for `events`, a
 * non-empty set of POLLIN, POLLPRI, POLLOUT, POLLRDHUP (POLLERR and
 * POLLHUP are always reported). Returns 0, -EINVAL (NULL w or
 * cb, bad events), -EBADF (fd not open), -EPERM (a regular file or
 * directory: always ready, nothing to wait for), -EBUSY (fd already
 * watched here), -ENOMEM, or a kernel error. On failure nothing is
 * registered.
 */
int cmesh__wake_add(struct cmesh__wake *w, int fd, uint32_t events,
		    cmesh__wake_cb cb, void *arg);

/*
 * Stops watching `fd`; its callback never runs again. Call it before
 * closing the fd. Returns 0, -EINVAL (NULL w) or -ENOENT (not watched).
 */
int cmesh__wake_del(struct cmesh__wake *w, int fd);

/*
 * Waits until at least one callback has run or `deadline` passes
 * (CLOCK_MONOTONIC ns as from cmesh_clock_now(); CMESH_DEADLINE_NONE: no
 * limit; a past deadline: run what is ready without blocking). Signals
 * (EINTR) do not end the wait. Returns the number of callbacks run, 0 when
 * the deadline passed first (the clock is then at or after it), -EBUSY
 * when called from a callback, -EINVAL for a NULL w, or a kernel error.
 * Allocates nothing.
 */
int cmesh__wake_run(struct cmesh__wake *w, int64_t deadline);

/* Frees `w` (NULL: no-op). Registered fds are not closed. */
void cmesh__wake_free(struct cmesh__wake *w);

/* An eventfd (EFD_CLOEXEC | EFD_NONBLOCK, count 0): the fd, or -errno. */
int cmesh__eventfd_new(void);

/*
 * Adds 1 to the eventfd's count, waking its watcher. An eventfd already at
 * its maximum count is signalled already: 0. Returns 0 or -errno.
 */
int cmesh__eventfd_signal(int fd);

/*
 * Resets an eventfd's count to 0 without ever blocking (RWF_NOWAIT).
 * Returns 1 if it was signalled, 0 if not, or -errno.
 */
int cmesh__eventfd_drain(int fd);

#endif
