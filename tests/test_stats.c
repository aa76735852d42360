/* SPDX-License-Identifier: MIT */
/*
 * test_stats.c - cmesh_receiver_stats_get() and cmesh_node_stats_get():
 * what they report in one process and across two, their argument checks
 * and their size-versioned output.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(stats, .init = tu_suite_init, .fini = tu_suite_fini);

struct item {
	uint64_t seq;
	uint64_t pad;
};
CMESH_TYPE_DEFINE_PLAIN(item_type, struct item);

struct holder {
	int op;
	int pad;
	cmesh_sender *tx;
};
CMESH_TYPE_DEFINE(holder_type, struct holder,
		  CMESH_FIELD_SENDER(struct holder, tx, item_type));

static cmesh_receiver_stats rstats(cmesh_receiver *rx)
{
	cmesh_receiver_stats s = { .size = sizeof(s) };

	TU_ASSERT_RC(cmesh_receiver_stats_get(rx, &s), 0);
	cr_assert_eq(s.size, sizeof(s));
	return s;
}

Test(stats, receiver_in_process_ring_and_overflow)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_receiver_stats s;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct item m = { 0 };
	uint64_t slots;

	o.ring_size = 4096;
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, &tx, &rx), 0);
	/* A 16-byte message and its slot header fit one line, stored in a
	 * 128-byte pair (ARCHITECTURE.md, queue.c). */
	slots = 4096 / 128;
	s = rstats(rx);
	cr_assert_eq(s.ring_slots, slots);
	cr_assert_eq(s.ring_used, 0);
	cr_assert_eq(s.overflow_bytes, 0);
	cr_assert_eq(s.remote, 0);
	cr_assert_eq(s.lanes, 0);
	cr_assert_eq(s.claims_refused, 0, "in one process: no claim");
	for (uint64_t i = 0; i < slots + 3; i++)
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	s = rstats(rx);
	cr_assert_eq(s.ring_used, slots);
	cr_assert_gt(s.overflow_bytes, 3 * sizeof(m) - 1);
	for (int i = 0; i < 5; i++)
		TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), 0);
	s = rstats(rx);
	cr_assert_eq(s.ring_used, slots - 5);
	cr_assert_eq(s.waits, 0, "try_recv never waits");
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(stats, receiver_counts_waits_and_sleeps)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_receiver_stats s;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct item m;

	o.spin_ns = -1; /* no spin: every wait sleeps */
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, &tx, &rx), 0);
	for (int i = 0; i < 3; i++)
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(
				     rx, cmesh_deadline_after(TU_MS(1)), &m,
				     NULL, 0),
			     -ETIMEDOUT);
	s = rstats(rx);
	cr_assert_eq(s.waits, 3);
	cr_assert_eq(s.caught, 0);
	cr_assert_geq(s.sleeps, 3);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

struct late {
	cmesh_sender *tx;
	pid_t tid;
};

static void *late_send(void *arg)
{
	struct late *l = arg;
	struct item m = { .seq = 9 };

	tu_sleep_ms(20);
	cr_assert_eq(cmesh_sender_send(l->tx, &m, NULL, 0), 0);
	return NULL;
}

Test(stats, receiver_counts_a_spin_that_caught_the_message)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	struct late l;
	cmesh_receiver_stats s;
	cmesh_receiver *rx;
	struct item m;
	pthread_t t;

	o.spin_ns = 10000000000LL; /* spins for the whole test */
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, &l.tx, &rx), 0);
	tu_thread_start(&t, late_send, &l);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &m, NULL, 0), 0);
	tu_thread_join(t);
	s = rstats(rx);
	/* It waited (unless the thread was late to start it) and never slept. */
	cr_assert_eq(s.caught, s.waits);
	cr_assert_eq(s.sleeps, 0);
	cmesh_sender_free(l.tx);
	cmesh_receiver_free(rx);
}

Test(stats, bad_arguments_and_older_sizes)
{
	cmesh_receiver_stats s;
	cmesh_node_stats ns = { .size = sizeof(ns) };
	cmesh_sender *tx;
	cmesh_receiver *rx;

	TU_ASSERT_RC(cmesh_channel_new(&item_type, NULL, &tx, &rx), 0);
	memset(&s, 0, sizeof(s));
	s.size = sizeof(s);
	TU_ASSERT_RC(cmesh_receiver_stats_get(NULL, &s), -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_stats_get(rx, NULL), -EINVAL);
	s.flags = 1;
	TU_ASSERT_RC(cmesh_receiver_stats_get(rx, &s), -EINVAL);
	s.flags = 0;
	s.size = 8;
	TU_ASSERT_RC(cmesh_receiver_stats_get(rx, &s), -EINVAL);
	/* A caller built against a header that ended before `waits`. */
	memset(&s, 0xab, sizeof(s));
	s.size = offsetof(cmesh_receiver_stats, waits);
	s.flags = 0;
	TU_ASSERT_RC(cmesh_receiver_stats_get(rx, &s), 0);
	cr_assert_eq(s.size, offsetof(cmesh_receiver_stats, waits));
	cr_assert_eq(s.ring_used, 0);
	cr_assert_eq(s.waits, 0xababababababababull, "written past `size`");
	/* ... and one that ended before `claims_refused`. */
	memset(&s, 0xab, sizeof(s));
	s.size = offsetof(cmesh_receiver_stats, claims_refused);
	s.flags = 0;
	TU_ASSERT_RC(cmesh_receiver_stats_get(rx, &s), 0);
	cr_assert_eq(s.spin_ns, rstats(rx).spin_ns);
	cr_assert_eq(s.claims_refused, 0xababababababababull,
		     "written past `size`");
	TU_ASSERT_RC(cmesh_node_stats_get(NULL, &ns), -EINVAL);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/* ---- across two processes ----------------------------------------------- */

/* The child: holds what it is sent until told to drop it, then exits. */
static _Noreturn void child(int sock)
{
	cmesh_node *node;
	cmesh_sender *up;
	cmesh_receiver *down;
	struct holder h;
	cmesh_sender *kept = NULL;
	int r;

	r = cmesh_node_join_socket(sock, &item_type, &holder_type, NULL, &node,
				   &up, &down);
	if (r)
		topo_child_exit(1);
	while (cmesh_receiver_recv_deadline(down, topo_deadline(), &h, NULL,
					    0) == 0) {
		struct item ack = { .seq = (uint64_t)h.op };

		if (h.op == 1) {
			kept = h.tx;
		} else {
			cmesh_sender_free(kept);
			cmesh_sender_free(h.tx);
			kept = NULL;
		}
		if (cmesh_sender_send(up, &ack, NULL, 0))
			topo_child_exit(1);
	}
	cmesh_sender_free(up);
	cmesh_receiver_free(down);
	cmesh_node_flush(node, topo_deadline());
	cmesh_node_free(node);
	topo_child_exit(0);
}

static void ask(cmesh_sender *down, cmesh_receiver *up, int op,
		cmesh_sender *tx)
{
	struct holder h = { .op = op, .tx = tx };
	struct item ack;

	TU_ASSERT_RC(cmesh_sender_send(down, &h, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(up, topo_deadline(), &ack,
						  NULL, 0),
		     0);
	cr_assert_eq(ack.seq, (uint64_t)op);
}

Test(stats, across_processes_node_and_receiver)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node_stats ns = { .size = sizeof(ns) };
	cmesh_receiver_stats s;
	cmesh_node *node;
	cmesh_sender *down, *ltx;
	cmesh_receiver *up, *lrx;
	int sv[2], st;
	pid_t pid;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		child(sv[1]);
	}
	close(sv[1]);
	o.peer_pid = pid;
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &holder_type, &item_type, &o,
					    &node, &down, &up),
		     0);
	TU_ASSERT_RC(cmesh_node_stats_get(node, &ns), 0);
	cr_assert_eq(ns.peer_pid, pid);
	cr_assert_eq(ns.failed, 0);
	cr_assert(ns.wake_backend == CMESH_WAKE_URING ||
		  ns.wake_backend == CMESH_WAKE_EPOLL);
	cr_assert_eq(ns.lanes, 0);
	cr_assert_eq(ns.pending_fds, 0);
	cr_assert_gt(ns.fd_budget, 0);
	s = rstats(up);
	cr_assert_eq(s.remote, 1);
	cr_assert_eq(s.lanes, 0);
	/* A sender sent over: one lane here, its receiver's. */
	TU_ASSERT_RC(cmesh_channel_new(&item_type, NULL, &ltx, &lrx), 0);
	ask(down, up, 1, ltx);
	TU_ASSERT_RC(cmesh_node_stats_get(node, &ns), 0);
	cr_assert_eq(ns.lanes, 1);
	/* Its ring's far half is mapped once the peer's answer is read. */
	for (int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     !ns.peer_bytes && tu_now_ns() < end;) {
		tu_sleep_ms(1);
		TU_ASSERT_RC(cmesh_node_stats_get(node, &ns), 0);
	}
	cr_assert_gt(ns.peer_bytes, 0);
	s = rstats(lrx);
	cr_assert_eq(s.remote, 0);
	cr_assert_eq(s.lanes, 1);
	/* Dropped there: the receiver sees closed, its lane is gone. */
	ask(down, up, 2, NULL);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(lrx, topo_deadline(),
						  &(struct item){ 0 }, NULL, 0),
		     -EPIPE);
	cr_assert_eq(rstats(lrx).lanes, 0);
	cmesh_receiver_free(lrx);
	/* The peer dies: the node says how the link failed. */
	kill(pid, SIGKILL);
	st = topo_reap(pid, TOPO_WAIT_MS);
	cr_assert(WIFSIGNALED(st));
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(up, topo_deadline(),
						  &(struct item){ 0 }, NULL, 0),
		     -ECONNRESET);
	TU_ASSERT_RC(cmesh_node_stats_get(node, &ns), 0);
	cr_assert_eq(ns.failed, -ECONNRESET);
	cmesh_sender_free(down);
	cmesh_receiver_free(up);
	cmesh_node_free(node);
}

/* ---- cmesh_stats_dump ---------------------------------------------------- */

/* What cmesh_stats_dump() wrote to a pipe (NUL-terminated). */
static int dump_text(char *buf, size_t cap)
{
	int p[2], n;
	ssize_t got;

	cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	n = cmesh_stats_dump(p[1]);
	close(p[1]);
	got = read(p[0], buf, cap - 1);
	close(p[0]);
	buf[got > 0 ? got : 0] = '\0';
	return n;
}

Test(stats, dump_lists_each_live_node_and_how_it_stands)
{
	char text[4096], want[64];
	cmesh_node *node;
	cmesh_sender *down, *ltx;
	cmesh_receiver *up, *lrx;
	int sv[2];
	pid_t pid;

	TU_ASSERT_RC(cmesh_stats_dump(-1), -EBADF);
	cr_assert_eq(dump_text(text, sizeof(text)), 0);
	cr_assert_str_eq(text, "");
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		child(sv[1]);
	}
	close(sv[1]);
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &holder_type, &item_type,
					    NULL, &node, &down, &up),
		     0);
	cr_assert_eq(dump_text(text, sizeof(text)), 1);
	snprintf(want, sizeof(want), "cmesh node 1: peer_pid %d, wake ",
		 (int)pid);
	cr_assert_not_null(strstr(text, want), "%s", text);
	cr_assert_not_null(strstr(text, "state ok, lanes 0,"), "%s", text);
	cr_assert_eq(strchr(text, '\n'), text + strlen(text) - 1);
	/* A sender sent over: a lane. */
	TU_ASSERT_RC(cmesh_channel_new(&item_type, NULL, &ltx, &lrx), 0);
	ask(down, up, 1, ltx);
	cr_assert_eq(dump_text(text, sizeof(text)), 1);
	cr_assert_not_null(strstr(text, "lanes 1,"), "%s", text);
	/* A write that fails: its errno, nothing half-done. */
	{
		int p[2];

		cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
		close(p[0]);
		signal(SIGPIPE, SIG_IGN);
		TU_ASSERT_RC(cmesh_stats_dump(p[1]), -EPIPE);
		close(p[1]);
	}
	/* The peer dies: the line says how the link failed. */
	kill(pid, SIGKILL);
	cr_assert(WIFSIGNALED(topo_reap(pid, TOPO_WAIT_MS)));
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(up, topo_deadline(),
						  &(struct item){ 0 }, NULL, 0),
		     -ECONNRESET);
	cr_assert_eq(dump_text(text, sizeof(text)), 1);
	snprintf(want, sizeof(want), "state failed %d (", -ECONNRESET);
	cr_assert_not_null(strstr(text, want), "%s", text);
	/* Every handle gone: the node is no longer listed. */
	cmesh_receiver_free(lrx);
	cmesh_sender_free(down);
	cmesh_receiver_free(up);
	cmesh_node_free(node);
	cr_assert_eq(dump_text(text, sizeof(text)), 0);
}

Test(stats, dump_lists_two_nodes)
{
	char text[4096];
	cmesh_node *node[2];
	cmesh_sender *down[2];
	cmesh_receiver *up[2];
	pid_t pid[2];

	for (int i = 0; i < 2; i++) {
		int sv[2];

		cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
					0, sv),
			     0);
		pid[i] = topo_fork();
		if (pid[i] == 0) {
			close(sv[0]);
			child(sv[1]);
		}
		close(sv[1]);
		TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &holder_type,
						    &item_type, NULL, &node[i],
						    &down[i], &up[i]),
			     0);
	}
	cr_assert_eq(dump_text(text, sizeof(text)), 2);
	cr_assert_not_null(strstr(text, "cmesh node 1: "));
	cr_assert_not_null(strstr(text, "cmesh node 2: "));
	for (int i = 0; i < 2; i++) {
		cmesh_sender_free(down[i]);
		cmesh_receiver_free(up[i]);
		cmesh_node_free(node[i]);
		topo_assert_exit_0(pid[i], TOPO_WAIT_MS);
	}
}
