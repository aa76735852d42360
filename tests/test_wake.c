/* SPDX-License-Identifier: MIT */
/*
 * test_wake.c - the wake backend (src/wake.c) on real eventfds and sockets.
 *
 * Every behaviour runs on each backend: epoll, io_uring with multishot
 * polls, and io_uring with re-armed one-shot polls (the fallback for
 * kernels without multishot poll).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "park.h"
#include "wake.h"
#include "testutil.h"

#include <cmesh.h>

#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(wake, .init = tu_suite_init, .fini = tu_suite_fini);

#define MAX_FDS 512

/* What the callbacks saw. */
struct rec {
	struct cmesh__wake *w;
	int fds[MAX_FDS];
	int calls[MAX_FDS];
	uint32_t revents[MAX_FDS];
	int n;
	int total;
	int pair[2]; /* on_del_other: the first to run deletes the other */
	bool deleted;
	int run_rc; /* on_run: what a nested run returned */
};

static int rec_index(struct rec *r, int fd)
{
	for (int i = 0; i < r->n; i++) {
		if (r->fds[i] == fd)
			return i;
	}
	cr_assert_fail("callback for fd %d, which the test never added", fd);
	return -1;
}

static void on_ready(void *arg, int fd, uint32_t revents)
{
	struct rec *r = arg;
	int i = rec_index(r, fd);

	if (revents & POLLIN)
		(void)cmesh__eventfd_drain(fd);
	r->calls[i]++;
	r->revents[i] |= revents;
	r->total++;
}

static void on_del_self(void *arg, int fd, uint32_t revents)
{
	struct rec *r = arg;

	on_ready(arg, fd, revents);
	cr_assert_eq(cmesh__wake_del(r->w, fd), 0);
}

static void on_del_other(void *arg, int fd, uint32_t revents)
{
	struct rec *r = arg;

	on_ready(arg, fd, revents);
	if (!r->deleted) {
		int other = fd == r->pair[0] ? r->pair[1] : r->pair[0];

		cr_assert_eq(cmesh__wake_del(r->w, other), 0);
		r->deleted = true;
	}
}

static void on_run(void *arg, int fd, uint32_t revents)
{
	struct rec *r = arg;

	on_ready(arg, fd, revents);
	r->run_rc = cmesh__wake_run(r->w, cmesh_clock_now());
}

static int rec_new_eventfd(struct rec *r)
{
	int fd = cmesh__eventfd_new();

	cr_assert_geq(fd, 0, "cmesh__eventfd_new: %s", strerror(-fd));
	cr_assert_lt(r->n, MAX_FDS);
	r->fds[r->n++] = fd;
	return fd;
}

static void rec_close_all(struct rec *r)
{
	for (int i = 0; i < r->n; i++)
		close(r->fds[i]);
	r->n = 0;
}

static bool is_uring(uint32_t backend)
{
	return (backend & ~CMESH__WAKE_ONESHOT) == CMESH_WAKE_URING;
}

/* A wake object on `backend`; skips only if the kernel has no io_uring. */
static struct cmesh__wake *wake_new(uint32_t backend)
{
	struct cmesh__wake *w = NULL;
	int r = cmesh__wake_new(backend, &w);

	if (is_uring(backend) && r == -ENOSYS)
		cr_skip("io_uring unavailable: io_uring_queue_init failed "
			"with %s",
			strerror(-r));
	cr_assert_eq(r, 0, "cmesh__wake_new(%#x): %s", backend, strerror(-r));
	cr_assert_eq(cmesh__wake_backend(w),
		     is_uring(backend) ? CMESH_WAKE_URING : CMESH_WAKE_EPOLL);
	return w;
}

/* Runs until `want` callbacks in all ran (or 5 s passed). */
static void run_until(struct cmesh__wake *w, struct rec *r, int want)
{
	int64_t deadline = cmesh_deadline_after(TU_MS(5000));

	while (r->total < want) {
		int n = cmesh__wake_run(w, deadline);

		cr_assert_geq(n, 0, "cmesh__wake_run: %s", strerror(-n));
		cr_assert_neq(n, 0, "timed out: %d of %d callbacks", r->total,
			      want);
	}
}

/* Asserts that nothing is left to run within `ms`. */
static void assert_quiet(struct cmesh__wake *w, unsigned ms)
{
	int n = cmesh__wake_run(w, cmesh_deadline_after(TU_MS(ms)));

	cr_assert_eq(n, 0, "run after the last expected callback returned %d",
		     n);
}

/* One test per backend for each behaviour. */
#define ON_EACH_BACKEND(name)                                                  \
	static void name(uint32_t backend);                                    \
	Test(wake, name##_with_epoll)                                          \
	{                                                                      \
		name(CMESH_WAKE_EPOLL);                                        \
	}                                                                      \
	Test(wake, name##_with_uring_multishot)                                \
	{                                                                      \
		name(CMESH_WAKE_URING);                                        \
	}                                                                      \
	Test(wake, name##_with_uring_oneshot)                                  \
	{                                                                      \
		name(CMESH_WAKE_URING | CMESH__WAKE_ONESHOT);                  \
	}                                                                      \
	static void name(uint32_t backend)

static void *signal_later(void *arg)
{
	tu_sleep_ms(20);
	cr_assert_eq(cmesh__eventfd_signal(*(int *)arg), 0);
	return NULL;
}

ON_EACH_BACKEND(an_eventfd_signalled_by_another_thread_runs_its_callback)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r);
	pthread_t t;

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	tu_thread_start(&t, signal_later, &fd);
	cr_assert_eq(cmesh__wake_run(w, cmesh_deadline_after(TU_MS(5000))), 1);
	tu_thread_join(t);
	cr_assert_eq(r.calls[0], 1);
	cr_assert(r.revents[0] & POLLIN);
	assert_quiet(w, 20);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(an_eventfd_signalled_by_a_forked_child_runs_its_callback)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r), status;
	pid_t pid;

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		tu_sleep_ms(20);
		_exit(cmesh__eventfd_signal(fd) == 0 ? 0 : 1);
	}
	cr_assert_eq(cmesh__wake_run(w, cmesh_deadline_after(TU_MS(5000))), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_eq(r.calls[0], 1);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

/* Signals a random subset of `n` eventfds; each callback runs once. */
static void signal_random_subset(uint32_t backend, int n, uint64_t seed)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec *r = calloc(1, sizeof(*r));
	bool sig[MAX_FDS] = { false };
	int want = 0;

	cr_assert_not_null(r);
	r->w = w;
	for (int i = 0; i < n; i++) {
		int fd = rec_new_eventfd(r);

		cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, r), 0);
	}
	for (int i = 0; i < n; i++) {
		sig[i] = tu_rand(&seed) & 1;
		if (sig[i]) {
			cr_assert_eq(cmesh__eventfd_signal(r->fds[i]), 0);
			want++;
		}
	}
	run_until(w, r, want);
	assert_quiet(w, 20);
	for (int i = 0; i < n; i++)
		cr_assert_eq(r->calls[i], sig[i] ? 1 : 0,
			     "eventfd %d (signalled: %d) ran %d callbacks", i,
			     sig[i], r->calls[i]);
	cmesh__wake_free(w);
	rec_close_all(r);
	free(r);
}

ON_EACH_BACKEND(each_signalled_eventfd_of_100_runs_its_callback_once)
{
	signal_random_subset(backend, 100, 0x9e3779b97f4a7c15ull);
}

/* 400 ready fds overflow io_uring's 256-entry completion queue. */
ON_EACH_BACKEND(more_ready_fds_than_the_completion_queue_holds_run_once_each)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec *r = calloc(1, sizeof(*r));
	const int n = 400;

	cr_assert_not_null(r);
	r->w = w;
	for (int i = 0; i < n; i++) {
		int fd = rec_new_eventfd(r);

		cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, r), 0);
		cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	}
	run_until(w, r, n);
	assert_quiet(w, 20);
	for (int i = 0; i < n; i++)
		cr_assert_eq(r->calls[i], 1, "eventfd %d ran %d callbacks", i,
			     r->calls[i]);
	/* Every fd is still watched after the overflow. */
	for (int i = 0; i < n; i++)
		cr_assert_eq(cmesh__eventfd_signal(r->fds[i]), 0);
	run_until(w, r, 2 * n);
	assert_quiet(w, 20);
	for (int i = 0; i < n; i++)
		cr_assert_eq(r->calls[i], 2, "eventfd %d ran %d callbacks", i,
			     r->calls[i]);
	cmesh__wake_free(w);
	rec_close_all(r);
	free(r);
}

ON_EACH_BACKEND(run_returns_0_after_the_deadline_when_nothing_is_ready)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r);
	int64_t deadline, t0;

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	deadline = cmesh_deadline_after(TU_MS(30));
	cr_assert_eq(cmesh__wake_run(w, deadline), 0);
	cr_assert_geq(cmesh_clock_now(), deadline);
	/* A past deadline does not block. */
	t0 = cmesh_clock_now();
	cr_assert_eq(cmesh__wake_run(w, t0 - TU_MS(1000)), 0);
	cr_assert_lt(cmesh_clock_now() - t0, TU_MS(500));
	cr_assert_eq(r.total, 0);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(a_past_deadline_still_runs_the_callbacks_that_are_ready)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r);

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	cr_assert_eq(cmesh__wake_run(w, cmesh_clock_now()), 1);
	cr_assert_eq(r.calls[0], 1);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(a_deleted_fd_never_runs_its_callback_again)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r);

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	run_until(w, &r, 1);
	cr_assert_eq(cmesh__wake_del(w, fd), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	assert_quiet(w, 30);
	/* Deleted while an event was already pending: dropped too. */
	cr_assert_eq(cmesh__eventfd_drain(fd), 1);
	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	cr_assert_eq(cmesh__wake_del(w, fd), 0);
	assert_quiet(w, 30);
	cr_assert_eq(r.calls[0], 1);
	cr_assert_eq(cmesh__wake_del(w, fd), -ENOENT);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(an_event_collected_for_a_deleted_fd_never_reaches_its_successor)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int a = rec_new_eventfd(&r), b = rec_new_eventfd(&r);
	struct pollfd p = { .fd = cmesh__wake_fd(w), .events = POLLIN };

	cr_assert_eq(cmesh__wake_add(w, a, POLLIN, on_ready, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(a), 0);
	/* The event is queued (CQE or ready list) before the delete. */
	cr_assert_eq(poll(&p, 1, 5000), 1);
	cr_assert_eq(cmesh__wake_del(w, a), 0);
	cr_assert_eq(cmesh__wake_add(w, b, POLLIN, on_ready, &r), 0);
	assert_quiet(w, 30);
	cr_assert_eq(r.total, 0, "a ran %d, b ran %d", r.calls[0], r.calls[1]);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(a_callback_may_delete_its_own_fd)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r);

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_del_self, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	run_until(w, &r, 1);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	assert_quiet(w, 30);
	cr_assert_eq(r.calls[0], 1);
	/* The fd can be watched again. */
	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	run_until(w, &r, 2);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(a_callback_that_deletes_another_ready_fd_stops_its_callback)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int a = rec_new_eventfd(&r), b = rec_new_eventfd(&r);

	/* Both ready in one batch: whichever runs first deletes the other. */
	r.pair[0] = a;
	r.pair[1] = b;
	cr_assert_eq(cmesh__wake_add(w, a, POLLIN, on_del_other, &r), 0);
	cr_assert_eq(cmesh__wake_add(w, b, POLLIN, on_del_other, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(a), 0);
	cr_assert_eq(cmesh__eventfd_signal(b), 0);
	run_until(w, &r, 1);
	assert_quiet(w, 30);
	cr_assert_eq(r.calls[0] + r.calls[1], 1, "a ran %d, b ran %d",
		     r.calls[0], r.calls[1]);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(a_socket_whose_peer_closes_reports_pollhup)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX,
				SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK,
				0, sv),
		     0);
	r.fds[r.n++] = sv[0];
	cr_assert_eq(
		cmesh__wake_add(w, sv[0], POLLIN | POLLRDHUP, on_ready, &r), 0);
	assert_quiet(w, 10);
	close(sv[1]);
	run_until(w, &r, 1);
	cr_assert(r.revents[0] & POLLHUP, "revents %#x", r.revents[0]);
	cr_assert(r.revents[0] & POLLRDHUP, "revents %#x", r.revents[0]);
	cr_assert_eq(cmesh__wake_del(w, sv[0]), 0);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(a_socket_deleted_then_closed_is_closed_for_its_peer)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	struct pollfd p;
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	cr_assert_eq(cmesh__wake_add(w, sv[0], POLLIN, on_ready, &r), 0);
	cr_assert_eq(cmesh__wake_del(w, sv[0]), 0);
	close(sv[0]);
	/* No run in between: the watch held no reference past the del. */
	p = (struct pollfd){ .fd = sv[1], .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 1000), 1, "the peer did not see the close");
	cr_assert(p.revents & POLLHUP);
	close(sv[1]);
	cmesh__wake_free(w);
}

ON_EACH_BACKEND(a_socket_still_watched_at_free_is_closed_for_its_peer)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	struct pollfd p;
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	cr_assert_eq(cmesh__wake_add(w, sv[0], POLLIN, on_ready, &r), 0);
	cmesh__wake_free(w);
	close(sv[0]);
	p = (struct pollfd){ .fd = sv[1], .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 1000), 1, "the peer did not see the close");
	cr_assert(p.revents & POLLHUP);
	close(sv[1]);
}

ON_EACH_BACKEND(run_called_from_a_callback_fails_with_ebusy)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w, .run_rc = 1 };
	int fd = rec_new_eventfd(&r);

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_run, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	run_until(w, &r, 1);
	cr_assert_eq(r.run_rc, -EBUSY);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(bad_fds_and_arguments_are_refused_and_register_nothing)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r), closed = cmesh__eventfd_new();
	int file = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);

	cr_assert_geq(closed, 0);
	cr_assert_geq(file, 0);
	close(closed);
	cr_assert_eq(cmesh__wake_add(w, -1, POLLIN, on_ready, &r), -EBADF);
	cr_assert_eq(cmesh__wake_add(w, closed, POLLIN, on_ready, &r), -EBADF);
	cr_assert_eq(cmesh__wake_add(w, file, POLLIN, on_ready, &r), -EPERM);
	cr_assert_eq(cmesh__wake_add(w, fd, 0, on_ready, &r), -EINVAL);
	cr_assert_eq(cmesh__wake_add(w, fd, POLLHUP, on_ready, &r), -EINVAL);
	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN | 0x40000000u, on_ready, &r),
		     -EINVAL);
	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, NULL, &r), -EINVAL);
	cr_assert_eq(cmesh__wake_add(NULL, fd, POLLIN, on_ready, &r), -EINVAL);
	cr_assert_eq(cmesh__wake_del(w, fd), -ENOENT);
	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	cr_assert_eq(cmesh__wake_add(w, fd, POLLOUT, on_ready, &r), -EBUSY);
	cr_assert_eq(cmesh__wake_del(NULL, fd), -EINVAL);
	cr_assert_eq(cmesh__wake_run(NULL, 0), -EINVAL);
	cr_assert_eq(cmesh__wake_del(w, fd), 0);
	assert_quiet(w, 10);
	close(file);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

ON_EACH_BACKEND(free_leaves_the_process_fd_count_unchanged)
{
	int before = tu_fd_count();
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };

	for (int i = 0; i < 10; i++) {
		int fd = rec_new_eventfd(&r);

		cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
		cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	}
	run_until(w, &r, 10);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(cmesh__wake_del(w, r.fds[i]), 0);
	cmesh__wake_free(w); /* five fds still registered */
	cmesh__wake_free(NULL);
	rec_close_all(&r);
	cr_assert_eq(tu_fd_count(), before);
}

ON_EACH_BACKEND(the_wake_fd_polls_readable_when_a_watched_fd_is_ready)
{
	struct cmesh__wake *w = wake_new(backend);
	struct rec r = { .w = w };
	int fd = rec_new_eventfd(&r);
	struct pollfd p = { .fd = cmesh__wake_fd(w), .events = POLLIN };

	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	cr_assert_eq(poll(&p, 1, 0), 0);
	/* Twice: the second round needs the poll re-armed by the first. */
	for (int i = 1; i <= 2; i++) {
		cr_assert_eq(cmesh__eventfd_signal(fd), 0);
		cr_assert_eq(poll(&p, 1, 5000), 1, "round %d", i);
		cr_assert_eq(cmesh__wake_run(w, cmesh_clock_now()), 1);
		cr_assert_eq(r.calls[0], i);
	}
	cmesh__wake_free(w);
	rec_close_all(&r);
}

/* ---- backend selection ---- */

static int try_default(uint32_t *backend)
{
	struct cmesh__wake *w;
	int r = cmesh__wake_new_default(&w);

	if (r == 0) {
		*backend = cmesh__wake_backend(w);
		cmesh__wake_free(w);
	}
	return r;
}

Test(wake, cmesh_wake_epoll_in_the_environment_forces_epoll)
{
	uint32_t backend;

	cr_assert_eq(setenv("CMESH_WAKE", "epoll", 1), 0);
	cr_assert_eq(try_default(&backend), 0);
	cr_assert_eq(backend, CMESH_WAKE_EPOLL);
}

Test(wake, cmesh_wake_uring_in_the_environment_forces_io_uring)
{
	uint32_t backend;
	int r;

	cr_assert_eq(setenv("CMESH_WAKE", "uring", 1), 0);
	r = try_default(&backend);
	if (r == -ENOSYS || r == -EPERM)
		cr_skip("io_uring unavailable: io_uring_queue_init failed "
			"with %s",
			strerror(-r));
	cr_assert_eq(r, 0, "%s", strerror(-r));
	cr_assert_eq(backend, CMESH_WAKE_URING);
}

Test(wake, a_bad_cmesh_wake_value_fails_with_einval)
{
	uint32_t backend;

	cr_assert_eq(setenv("CMESH_WAKE", "kqueue", 1), 0);
	cr_assert_eq(try_default(&backend), -EINVAL);
}

Test(wake, auto_uses_io_uring_when_the_kernel_allows_it_else_epoll)
{
	struct cmesh__wake *w = NULL;
	uint32_t backend;
	int r = cmesh__wake_new(CMESH_WAKE_URING, &w);

	cmesh__wake_free(w);
	tu_env_clear();
	cr_assert_eq(try_default(&backend), 0);
	if (r == 0)
		cr_assert_eq(backend, CMESH_WAKE_URING);
	else
		cr_assert_eq(backend, CMESH_WAKE_EPOLL, "uring failed: %s",
			     strerror(-r));
}

/* Makes io_uring_setup() fail with `err` in this process, as a seccomp
 * profile does (each Criterion test runs in its own process). */
static void forbid_io_uring(int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K,
			 SECCOMP_RET_ERRNO |
				 ((uint32_t)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]),
				   .filter = f };

	cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0,
		     "seccomp: %s", strerror(errno));
}

static void check_fallback(int err)
{
	struct cmesh__wake *w = NULL;
	struct rec r = { 0 };
	int fd;

	forbid_io_uring(err);
	/* Forbidden is "not available here", never "refused credentials". */
	cr_assert_eq(cmesh__wake_new(CMESH_WAKE_URING, &w), -ENOSYS);
	cr_assert_null(w);
	cr_assert_eq(cmesh__wake_new(CMESH_WAKE_AUTO, &w), 0);
	cr_assert_eq(cmesh__wake_backend(w), CMESH_WAKE_EPOLL);
	r.w = w;
	fd = rec_new_eventfd(&r);
	cr_assert_eq(cmesh__wake_add(w, fd, POLLIN, on_ready, &r), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	run_until(w, &r, 1);
	cmesh__wake_free(w);
	rec_close_all(&r);
}

Test(wake, auto_falls_back_to_epoll_when_seccomp_makes_io_uring_eperm)
{
	check_fallback(EPERM);
}

Test(wake, auto_falls_back_to_epoll_when_io_uring_is_enosys)
{
	check_fallback(ENOSYS);
}

Test(wake, auto_falls_back_to_epoll_when_io_uring_is_eacces)
{
	check_fallback(EACCES);
}

Test(wake, auto_does_not_hide_other_io_uring_errors)
{
	struct cmesh__wake *w = NULL;

	forbid_io_uring(ENOMEM);
	cr_assert_eq(cmesh__wake_new(CMESH_WAKE_AUTO, &w), -ENOMEM);
	cr_assert_null(w);
}

Test(wake, unknown_backends_and_null_out_are_refused)
{
	struct cmesh__wake *w = NULL;

	cr_assert_eq(cmesh__wake_new(3, &w), -EINVAL);
	cr_assert_eq(cmesh__wake_new(1u << 17, &w), -EINVAL);
	cr_assert_eq(cmesh__wake_new(CMESH_WAKE_EPOLL, NULL), -EINVAL);
	cr_assert_eq(cmesh__wake_new_default(NULL), -EINVAL);
	cr_assert_null(w);
}

/* ---- eventfd helpers ---- */

Test(wake, an_eventfd_is_cloexec_and_non_blocking)
{
	int fd = cmesh__eventfd_new();

	cr_assert_geq(fd, 0);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	close(fd);
}

Test(wake, drain_says_whether_the_eventfd_was_signalled)
{
	int fd = cmesh__eventfd_new();

	cr_assert_geq(fd, 0);
	cr_assert_eq(cmesh__eventfd_drain(fd), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	cr_assert_eq(cmesh__eventfd_drain(fd), 1);
	cr_assert_eq(cmesh__eventfd_drain(fd), 0);
	close(fd);
	cr_assert_eq(cmesh__eventfd_signal(fd), -EBADF);
	cr_assert_eq(cmesh__eventfd_drain(fd), -EBADF);
}

Test(wake, signalling_an_eventfd_at_its_maximum_count_succeeds)
{
	uint64_t max = UINT64_MAX - 1;
	int fd = cmesh__eventfd_new();

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, &max, sizeof(max)), (ssize_t)sizeof(max));
	cr_assert_eq(cmesh__eventfd_signal(fd), 0);
	cr_assert_eq(cmesh__eventfd_drain(fd), 1);
	close(fd);
}

/*
 * The poll timeout every wait derives from a deadline
 * (cmesh__park_ms_until): never early (rounded up), -1 for none, 0 once
 * passed, and clamped, not wrapped, for deadlines past INT_MAX ms (about
 * 24.8 days), which an int cast would turn negative (forever) or small.
 */
Test(wake, a_deadline_becomes_a_poll_timeout_rounded_up_and_clamped)
{
	int64_t now = cmesh_clock_now();
	int ms;

	cr_assert_eq(cmesh__park_ms_until(CMESH_DEADLINE_NONE), -1);
	cr_assert_eq(cmesh__park_ms_until(now - 1), 0);
	cr_assert_eq(cmesh__park_ms_until(0), 0);
	/* 1 us left is a whole ms: never woken before the deadline. */
	ms = cmesh__park_ms_until(cmesh_clock_now() + 1000);
	cr_assert(ms == 1 || ms == 0, "%d", ms);
	ms = cmesh__park_ms_until(cmesh_clock_now() + TU_MS(1500));
	cr_assert(ms >= 1499 && ms <= 1500, "%d", ms);
	/* 30 and 40 days: INT_MAX, not a wrapped value. */
	cr_assert_eq(cmesh__park_ms_until(now + 30ll * 86400 * 1000000000),
		     INT_MAX);
	cr_assert_eq(cmesh__park_ms_until(now + 40ll * 86400 * 1000000000),
		     INT_MAX);
	cr_assert_eq(cmesh__park_ms_until(CMESH_DEADLINE_NONE - 1), INT_MAX);
}
