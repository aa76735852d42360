/* SPDX-License-Identifier: MIT */
/*
 * test_ctl.c - control-path messages (src/ctl.c) over real SOCK_SEQPACKET
 * socket pairs, in one process and across fork().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ctl.h"
#include "testutil.h"

#include <cmesh.h>

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(ctl, .init = tu_suite_init, .fini = tu_suite_fini);

static void pair(int sv[2])
{
	int r = cmesh__ctl_socketpair(sv);

	cr_assert_eq(r, 0, "cmesh__ctl_socketpair: %s", strerror(-r));
}

/* The child's side of the fork test; returns its exit status. */
static int child_main(int sock)
{
	static const char want[] = "three fds for you";
	static const char note[] = "written by the child";
	char buf[64];
	int fds[4], flags;
	uint32_t nfds = 0;
	int n = cmesh__ctl_recv(sock, buf, sizeof(buf), fds, 4, &nfds);

	if (n != (int)sizeof(want) || memcmp(buf, want, sizeof(want)) != 0)
		return 10;
	if (nfds != 3)
		return 11;
	for (uint32_t i = 0; i < nfds; i++) {
		flags = fcntl(fds[i], F_GETFD);
		if (flags < 0 || !(flags & FD_CLOEXEC))
			return 12;
	}
	/* fds[0]: a pipe's write end; fds[1]: an eventfd; fds[2]: /dev/null. */
	if (write(fds[0], note, sizeof(note)) != (ssize_t)sizeof(note))
		return 13;
	if (cmesh__ctl_send(sock, "done", 5, &fds[1], 1) != 0)
		return 14;
	for (uint32_t i = 0; i < nfds; i++)
		close(fds[i]);
	return 0;
}

Test(ctl, bytes_and_three_fds_cross_fork_and_the_child_writes_through_them)
{
	static const char msg[] = "three fds for you";
	static const char note[] = "written by the child";
	int sv[2], p[2], efd, null, fds[3], back, status;
	char buf[64];
	uint32_t nfds;
	pid_t pid;

	pair(sv);
	tu_pipe(p);
	efd = tu_eventfd();
	fds[0] = p[1];
	fds[1] = efd;
	null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	cr_assert_geq(null, 0);
	fds[2] = null;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		close(p[0]);
		close(p[1]);
		close(efd);
		close(null);
		_exit(child_main(sv[1]));
	}
	close(sv[1]);
	cr_assert_eq(cmesh__ctl_send(sv[0], msg, sizeof(msg), fds, 3), 0);
	close(p[1]); /* the child's received copy is the only writer now */

	cr_assert_eq(read(p[0], buf, sizeof(buf)), (ssize_t)sizeof(note));
	cr_assert_str_eq(buf, note);
	cr_assert_eq(cmesh__ctl_recv(sv[0], buf, sizeof(buf), &back, 1, &nfds),
		     5);
	cr_assert_str_eq(buf, "done");
	cr_assert_eq(nfds, 1);
	/* The eventfd made the round trip: same object, new number. */
	cr_assert_neq(back, efd);
	cr_assert_eq(write(back, &(uint64_t){ 7 }, 8), 8);
	cr_assert_eq(read(efd, &(uint64_t){ 0 }, 8), 8);
	close(back);

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "child died");
	cr_assert_eq(WEXITSTATUS(status), 0, "child failed at step %d",
		     WEXITSTATUS(status));
	cr_assert(tu_pipe_sees_eof(p[0], 1000), "the child kept a write end");
	cr_assert_eq(cmesh__ctl_recv(sv[0], buf, sizeof(buf), NULL, 0, &nfds),
		     -EPIPE);
	close(p[0]);
	close(efd);
	close(null);
	close(sv[0]);
}

Test(ctl, received_fds_arrive_with_fd_cloexec_set)
{
	int sv[2], p[2], got[2];
	uint32_t nfds;
	char c;

	pair(sv);
	cr_assert_eq(pipe(p), 0); /* no O_CLOEXEC on the originals */
	cr_assert_eq(fcntl(p[0], F_GETFD) & FD_CLOEXEC, 0);
	cr_assert_eq(cmesh__ctl_send(sv[0], "x", 1, p, 2), 0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], &c, 1, got, 2, &nfds), 1);
	cr_assert_eq(nfds, 2);
	for (int i = 0; i < 2; i++)
		cr_assert(fcntl(got[i], F_GETFD) & FD_CLOEXEC, "fd %d", i);
	/* In order, and the same pipe. */
	cr_assert_eq(write(got[1], "y", 1), 1);
	cr_assert_eq(read(p[0], &c, 1), 1);
	cr_assert_eq(c, 'y');
	for (int i = 0; i < 2; i++) {
		close(got[i]);
		close(p[i]);
	}
	close(sv[0]);
	close(sv[1]);
}

/* Sends "abc" with n fds: the write ends of n fresh pipes. */
static void send_pipes(int sock, int n, int rd[3])
{
	int wr[3], p[2];

	for (int i = 0; i < n; i++) {
		tu_pipe(p);
		rd[i] = p[0];
		wr[i] = p[1];
	}
	cr_assert_eq(cmesh__ctl_send(sock, "abc", 3, wr, (uint32_t)n), 0);
	for (int i = 0; i < n; i++)
		close(wr[i]);
}

/* The only other copies of the write ends were in the message: if every
 * received one was closed, every read end sees EOF. */
static void assert_all_closed(int n, int rd[3])
{
	for (int i = 0; i < n; i++) {
		cr_assert(tu_pipe_sees_eof(rd[i], 1000), "write end %d open",
			  i);
		close(rd[i]);
	}
}

Test(ctl, more_fds_than_fd_cap_fail_with_eproto_and_close_every_received_fd)
{
	/* {sent, fd_cap}: the kernel truncates (MSG_CTRUNC) the first three;
	 * the last fits the control buffer's padding but not fd_cap. */
	const int cases[][2] = { { 3, 0 }, { 3, 1 }, { 3, 2 }, { 2, 1 } };
	int sv[2], rd[3], fds[2];
	uint32_t nfds;
	char buf[8];

	pair(sv);
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		int sent = cases[k][0], cap = cases[k][1], before;

		send_pipes(sv[0], sent, rd);
		before = tu_fd_count();
		nfds = 99;
		cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf),
					     cap ? fds : NULL, (uint32_t)cap,
					     &nfds),
			     -EPROTO, "%d fds, fd_cap %d", sent, cap);
		cr_assert_eq(nfds, 0);
		cr_assert_eq(tu_fd_count(), before, "%d fds, fd_cap %d", sent,
			     cap);
		assert_all_closed(sent, rd);
	}
	/* The failed messages were consumed; the next one is intact. */
	cr_assert_eq(cmesh__ctl_send(sv[0], "ok", 3, NULL, 0), 0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     3);
	cr_assert_str_eq(buf, "ok");
	close(sv[0]);
	close(sv[1]);
}

/*
 * With every fd number below the limit taken, the kernel installs none of
 * a message's fds and sets MSG_CTRUNC: that is -EMFILE, not a peer's
 * -EPROTO, and nothing is left open once the limit is back. With room for
 * one of three, the one installed is closed too.
 */
Test(ctl, fds_cut_off_by_a_full_fd_table_fail_with_emfile_and_leak_nothing)
{
	struct rlimit old, lim;
	int sv[2], rd[3], fds[3];
	uint32_t nfds;
	char buf[8];

	pair(sv);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	for (int room = 0; room < 2; room++) {
		int before, lowest;

		send_pipes(sv[0], 3, rd);
		before = tu_fd_count();
		lowest = dup(0); /* the lowest free fd number */
		cr_assert_geq(lowest, 0);
		close(lowest);
		lim = old;
		lim.rlim_cur = (rlim_t)lowest + (rlim_t)room;
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
		nfds = 99;
		cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), fds, 3,
					     &nfds),
			     -EMFILE, "room for %d", room);
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
		cr_assert_eq(nfds, 0);
		cr_assert_eq(tu_fd_count(), before, "room for %d", room);
		assert_all_closed(3, rd);
	}
	/* The failed messages were consumed; the next one is intact. */
	cr_assert_eq(cmesh__ctl_send(sv[0], "ok", 3, NULL, 0), 0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     3);
	close(sv[0]);
	close(sv[1]);
}

Test(ctl, a_message_longer_than_cap_fails_with_eproto_and_closes_its_fds)
{
	int sv[2], rd[3], fds[3];
	uint32_t nfds;
	char buf[2];
	int before;

	pair(sv);
	send_pipes(sv[0], 3, rd);
	before = tu_fd_count();
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), fds, 3, &nfds),
		     -EPROTO);
	cr_assert_eq(nfds, 0);
	cr_assert_eq(tu_fd_count(), before);
	assert_all_closed(3, rd);
	close(sv[0]);
	close(sv[1]);
}

Test(ctl, a_control_message_other_than_scm_rights_fails_with_eproto)
{
	int sv[2], rd[3], fds[CMESH__CTL_MAX_FDS], on = 1, before;
	uint32_t nfds;
	char buf[8];

	pair(sv);
	/* The kernel then adds SCM_CREDENTIALS to every message. */
	cr_assert_eq(
		setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
	send_pipes(sv[0], 3, rd);
	before = tu_fd_count();
	/* Room for the credentials and the fds: the kernel installs both. */
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), fds,
				     CMESH__CTL_MAX_FDS, &nfds),
		     -EPROTO);
	cr_assert_eq(nfds, 0);
	cr_assert_eq(tu_fd_count(), before);
	assert_all_closed(3, rd);
	close(sv[0]);
	close(sv[1]);
}

Test(ctl, recv_after_the_peer_closed_returns_epipe)
{
	int sv[2];
	uint32_t nfds = 7;
	char buf[8];

	pair(sv);
	cr_assert_eq(cmesh__ctl_send(sv[0], "last", 5, NULL, 0), 0);
	close(sv[0]);
	/* What was sent before the close is still delivered first. */
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     5);
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     -EPIPE);
	cr_assert_eq(nfds, 0);
	close(sv[1]);
}

Test(ctl, send_to_a_closed_peer_returns_epipe_without_raising_sigpipe)
{
	int sv[2], efd = tu_eventfd();

	sigset_t pipe_only;

	/* Default action, unblocked: a SIGPIPE would kill this process. */
	cr_assert_neq(signal(SIGPIPE, SIG_DFL), SIG_ERR);
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	cr_assert_eq(sigprocmask(SIG_UNBLOCK, &pipe_only, NULL), 0);
	pair(sv);
	close(sv[1]);
	cr_assert_eq(cmesh__ctl_send(sv[0], "x", 1, NULL, 0), -EPIPE);
	cr_assert_eq(cmesh__ctl_send(sv[0], "x", 1, &efd, 1), -EPIPE);
	cr_assert(tu_fd_is_open(efd), "send closed a borrowed fd");
	close(sv[0]);
	/* Linux raises no SIGPIPE for SEQPACKET; a stream socket, where it
	 * does, shows that the send itself suppresses it. */
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	cr_assert_eq(cmesh__ctl_send(sv[0], "x", 1, &efd, 1), -EPIPE);
	close(efd);
	close(sv[0]);
}

Test(ctl, a_full_non_blocking_socket_returns_eagain)
{
	char buf[1024] = { 0 };
	int sv[2], r = 0;
	uint32_t nfds;

	pair(sv);
	cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     -EAGAIN);
	for (int i = 0; i < 100000 && r == 0; i++)
		r = cmesh__ctl_send(sv[0], buf, sizeof(buf), NULL, 0);
	cr_assert_eq(r, -EAGAIN);
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     (int)sizeof(buf));
	close(sv[0]);
	close(sv[1]);
}

Test(ctl, so_peercred_gives_our_uid)
{
	int sv[2], efd = tu_eventfd();
	uid_t uid = (uid_t)-1;

	pair(sv);
	cr_assert_eq(cmesh__ctl_peer_uid(sv[0], &uid), 0);
	cr_assert_eq(uid, getuid());
	cr_assert_eq(cmesh__ctl_peer_uid(efd, &uid), -ENOTSOCK);
	close(efd);
	close(sv[0]);
	close(sv[1]);
}

Test(ctl, the_socketpair_is_seqpacket_and_cloexec_and_keeps_boundaries)
{
	int sv[2], type = 0;
	socklen_t len = sizeof(type);
	uint32_t nfds;
	char buf[16];

	pair(sv);
	cr_assert_eq(getsockopt(sv[0], SOL_SOCKET, SO_TYPE, &type, &len), 0);
	cr_assert_eq(type, SOCK_SEQPACKET);
	cr_assert(fcntl(sv[0], F_GETFD) & FD_CLOEXEC);
	cr_assert(fcntl(sv[1], F_GETFD) & FD_CLOEXEC);
	cr_assert_eq(cmesh__ctl_send(sv[0], "one", 3, NULL, 0), 0);
	cr_assert_eq(cmesh__ctl_send(sv[0], "three", 5, NULL, 0), 0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     3);
	cr_assert_eq(cmesh__ctl_recv(sv[1], buf, sizeof(buf), NULL, 0, &nfds),
		     5);
	close(sv[0]);
	close(sv[1]);
}

Test(ctl, a_message_carries_at_most_64_fds)
{
	int sv[2], efd = tu_eventfd(), out[CMESH__CTL_MAX_FDS + 1];
	int in[CMESH__CTL_MAX_FDS + 1];
	uint32_t nfds;
	char c;

	pair(sv);
	for (uint32_t i = 0; i <= CMESH__CTL_MAX_FDS; i++)
		out[i] = efd;
	cr_assert_eq(cmesh__ctl_send(sv[0], "m", 1, out,
				     CMESH__CTL_MAX_FDS + 1),
		     -EMSGSIZE);
	cr_assert_eq(cmesh__ctl_send(sv[0], "m", 1, out, CMESH__CTL_MAX_FDS),
		     0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], &c, 1, in, CMESH__CTL_MAX_FDS + 1,
				     &nfds),
		     1);
	cr_assert_eq(nfds, CMESH__CTL_MAX_FDS);
	for (uint32_t i = 0; i < nfds; i++)
		close(in[i]);
	close(efd);
	close(sv[0]);
	close(sv[1]);
}

Test(ctl, null_and_invalid_arguments_fail_with_einval)
{
	int sv[2], fds[1] = { -1 };
	uint32_t nfds = 5;
	uid_t uid;
	char c = 'x';

	cr_assert_eq(cmesh__ctl_socketpair(NULL), -EINVAL);
	pair(sv);
	cr_assert_eq(cmesh__ctl_send(-1, &c, 1, NULL, 0), -EINVAL);
	cr_assert_eq(cmesh__ctl_send(sv[0], NULL, 1, NULL, 0), -EINVAL);
	cr_assert_eq(cmesh__ctl_send(sv[0], &c, 0, NULL, 0), -EINVAL);
	cr_assert_eq(cmesh__ctl_send(sv[0], &c, 1, NULL, 1), -EINVAL);
	cr_assert_eq(cmesh__ctl_send(sv[0], &c, 1, fds, 1), -EINVAL);
	cr_assert_eq(cmesh__ctl_recv(-1, &c, 1, NULL, 0, &nfds), -EINVAL);
	cr_assert_eq(nfds, 0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], NULL, 1, NULL, 0, &nfds), -EINVAL);
	cr_assert_eq(cmesh__ctl_recv(sv[1], &c, 0, NULL, 0, &nfds), -EINVAL);
	cr_assert_eq(cmesh__ctl_recv(sv[1], &c, 1, NULL, 1, &nfds), -EINVAL);
	cr_assert_eq(cmesh__ctl_recv(sv[1], &c, 1, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(cmesh__ctl_peer_uid(-1, &uid), -EINVAL);
	cr_assert_eq(cmesh__ctl_peer_uid(sv[0], NULL), -EINVAL);
	/* Nothing was sent by the refused calls. */
	cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(cmesh__ctl_recv(sv[1], &c, 1, NULL, 0, &nfds), -EAGAIN);
	close(sv[0]);
	close(sv[1]);
}
