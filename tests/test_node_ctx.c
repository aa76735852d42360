/* SPDX-License-Identifier: MIT */
/*
 * test_node_ctx.c - cancellation contexts on the setup calls
 * (cmesh_node_opts.ctx): join over a socket, spawn, connect and accept
 * give up with -ECANCELED when the context is cancelled and -ETIMEDOUT at
 * its deadline, long before their own handshake limit, and leave no fd,
 * child or link behind; an ended context fails them before they start;
 * cmesh_node_close_ctx() flushes for as long as its context lasts.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(node_ctx, .init = tu_suite_init, .fini = tu_suite_fini);

struct msg {
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(msg_type, struct msg);

/* How long a call may take to notice: far below the 10 s handshake. */
#define NOTICE_NS TU_MS(2000)
#define FIRE_AFTER_MS 50u

struct firer {
	cmesh_cancel *cancel;
	unsigned ms;
};

static void *fire_later(void *arg)
{
	struct firer *f = arg;

	tu_sleep_ms(f->ms);
	cmesh_cancel_fire(f->cancel);
	return NULL;
}

/* A cancellable context and a thread that cancels it in FIRE_AFTER_MS. */
struct armed {
	cmesh_ctx *ctx;
	struct firer f;
	pthread_t t;
};

static void arm(struct armed *a)
{
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &a->ctx, &a->f.cancel), 0);
	a->f.ms = FIRE_AFTER_MS;
	tu_thread_start(&a->t, fire_later, &a->f);
}

static void disarm(struct armed *a)
{
	tu_thread_join(a->t);
	cmesh_cancel_free(a->f.cancel);
	cmesh_ctx_free(a->ctx);
}

static int join_sock(int sock, const cmesh_ctx *ctx, cmesh_node **node,
		     cmesh_sender **tx, cmesh_receiver **rx)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;

	o.ctx = ctx;
	return cmesh_node_join_socket(sock, &msg_type, &msg_type, &o, node, tx,
				      rx);
}

/* Waits (up to the test's budget) until `fds` are open, then asserts. */
static void wait_fds(int fds)
{
	int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);

	while (tu_fd_count() != fds && tu_now_ns() < end)
		tu_sleep_ms(1);
	TU_ASSERT_FDS(fds);
}

/* No child left to reap (the call killed and reaped what it spawned). */
static void assert_no_children(void)
{
	cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
	cr_assert_eq(errno, ECHILD);
}

Test(node_ctx, join_with_an_ended_context_fails_before_it_starts)
{
	cmesh_cancel *c;
	cmesh_ctx *ctx, *past;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int fds = tu_fd_count(), sv[2];

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &ctx, &c), 0);
	cmesh_cancel_fire(c);
	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	TU_ASSERT_RC(join_sock(sv[0], ctx, &node, &tx, &rx), -ECANCELED);
	/* A deadline already past: -ETIMEDOUT, the socket taken too. */
	TU_ASSERT_RC(
		cmesh_ctx_with_deadline(NULL, cmesh_clock_now() - 1, &past), 0);
	TU_ASSERT_RC(join_sock(sv[1], past, &node, &tx, &rx), -ETIMEDOUT);
	TU_ASSERT_FDS(fds);
	cmesh_ctx_free(past);
	cmesh_ctx_free(ctx);
	cmesh_cancel_free(c);
}

Test(node_ctx, join_with_a_silent_peer_ends_when_the_context_is_cancelled)
{
	struct armed a;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int64_t t0;
	int fds, sv[2];

	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	fds = tu_fd_count() - 1; /* sv[0] is taken */
	arm(&a);
	t0 = tu_now_ns();
	TU_ASSERT_RC(join_sock(sv[0], a.ctx, &node, &tx, &rx), -ECANCELED);
	cr_assert_geq(tu_now_ns() - t0, TU_MS(FIRE_AFTER_MS) - TU_MS(5));
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	disarm(&a);
	close(sv[1]);
	TU_ASSERT_FDS(fds - 1);
}

Test(node_ctx, join_with_a_silent_peer_ends_at_the_contexts_deadline)
{
	cmesh_ctx *ctx;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int64_t t0;
	int sv[2];

	/* No canceller: only the deadline can end it (no eventfd is made). */
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(FIRE_AFTER_MS), &ctx),
		     0);
	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	t0 = tu_now_ns();
	TU_ASSERT_RC(join_sock(sv[0], ctx, &node, &tx, &rx), -ETIMEDOUT);
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	close(sv[1]);
	cmesh_ctx_free(ctx);
}

/* Both sides join with a live context: it changes nothing. */
static int ok_peer(cmesh_sender *tx, cmesh_receiver *rx)
{
	struct msg m;

	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      0);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static int live_child(int sock)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;

	TOPO_CHECK_EQ(join_sock(sock, NULL, &node, &tx, &rx), 0);
	cmesh_node_free(node);
	return ok_peer(tx, rx);
}

Test(node_ctx, join_with_a_live_context_succeeds)
{
	cmesh_cancel *c;
	cmesh_ctx *ctx;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct msg m = { 42 };
	int sv[2], fds = tu_fd_count();
	pid_t pid;

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &ctx, &c), 0);
	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		topo_child_exit(live_child(sv[1]));
	}
	close(sv[1]);
	TU_ASSERT_RC(join_sock(sv[0], ctx, &node, &tx, &rx), 0);
	/* The context is not held: cancelling it now changes nothing. */
	cmesh_cancel_fire(c);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	m.seq = 0;
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     0);
	cr_assert_eq(m.seq, 42);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	cmesh_ctx_free(ctx);
	cmesh_cancel_free(c);
	wait_fds(fds);
}

Test(node_ctx, spawn_of_a_child_that_never_joins_ends_when_cancelled)
{
	char *argv[] = { "sleep", "30", NULL };
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct armed a;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int64_t t0;
	int fds = tu_fd_count();

	arm(&a);
	o.ctx = a.ctx;
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_spawn("/bin/sleep", argv, &msg_type, &msg_type, &o,
				 &node, &tx, &rx),
		     -ECANCELED);
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	assert_no_children();
	disarm(&a);
	TU_ASSERT_FDS(fds);
}

struct tmp_listener {
	char dir[64], path[96];
	cmesh_listener *l;
};

static void tmp_listen(struct tmp_listener *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/cmesh-ctx-XXXXXX");
	cr_assert_not_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/sock", t->dir);
	TU_ASSERT_RC(cmesh_listen(t->path, NULL, &t->l), 0);
}

static void tmp_unlisten(struct tmp_listener *t)
{
	cmesh_listener_free(t->l);
	rmdir(t->dir);
}

Test(node_ctx, accept_with_no_peer_ends_when_cancelled_or_at_the_deadline)
{
	struct tmp_listener t;
	struct armed a;
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_ctx *ctx;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int64_t t0;
	int fds;

	tmp_listen(&t);
	fds = tu_fd_count();
	arm(&a);
	o.ctx = a.ctx;
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_listener_accept(t.l, CMESH_DEADLINE_NONE, &msg_type,
					   &msg_type, &o, &node, &tx, &rx),
		     -ECANCELED);
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	disarm(&a);
	TU_ASSERT_FDS(fds);

	/* The context's deadline comes before accept's own (none). */
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(FIRE_AFTER_MS), &ctx),
		     0);
	o.ctx = ctx;
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_listener_accept(t.l, CMESH_DEADLINE_NONE, &msg_type,
					   &msg_type, &o, &node, &tx, &rx),
		     -ETIMEDOUT);
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	cmesh_ctx_free(ctx);
	TU_ASSERT_FDS(fds);
	tmp_unlisten(&t);
}

/*
 * A client that connects and never speaks, then our connect to a listener
 * that never accepts: both calls end with the context.
 */
Test(node_ctx, accept_and_connect_with_silent_peers_end_when_cancelled)
{
	struct tmp_listener t;
	struct armed a;
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int fds, c;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	tmp_listen(&t);
	fds = tu_fd_count();
	c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_geq(c, 0);
	memcpy(sa.sun_path, t.path, strlen(t.path));
	TU_ASSERT_RC(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
	arm(&a);
	o.ctx = a.ctx;
	TU_ASSERT_RC(cmesh_listener_accept(t.l, CMESH_DEADLINE_NONE, &msg_type,
					   &msg_type, &o, &node, &tx, &rx),
		     -ECANCELED);
	disarm(&a);
	close(c);

	/* Our connect: the listener is there, nobody accepts. */
	arm(&a);
	o.ctx = a.ctx;
	TU_ASSERT_RC(cmesh_connect(t.path, &msg_type, &msg_type, &o, &node, &tx,
				   &rx),
		     -ECANCELED);
	disarm(&a);
	tmp_unlisten(&t);
	TU_ASSERT_FDS(fds - 2); /* the listener's two fds are gone too */
}

/*
 * A listener that accepts nobody and whose backlog is full: our connect
 * itself cannot complete. It ends with the context, or at the handshake
 * limit, and leaves no fd behind.
 */
Test(node_ctx, connect_to_a_full_backlog_ends_when_cancelled_or_timed_out)
{
	struct tmp_listener t;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct armed a;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int held[64], nheld = 0, fds;
	int64_t t0;

	tmp_listen(&t);
	memcpy(sa.sun_path, t.path, strlen(t.path));
	/* Fill the backlog: non-blocking connects until one is refused. */
	for (;;) {
		int c = socket(AF_UNIX,
			       SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK,
			       0);

		cr_assert_geq(c, 0);
		if (connect(c, (struct sockaddr *)&sa, sizeof(sa))) {
			cr_assert_eq(errno, EAGAIN, "connect: %s",
				     strerror(errno));
			close(c);
			break;
		}
		cr_assert_lt(nheld, 64, "the backlog never filled");
		held[nheld++] = c;
	}
	fds = tu_fd_count();
	arm(&a);
	o.ctx = a.ctx;
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_connect(t.path, &msg_type, &msg_type, &o, &node, &tx,
				   &rx),
		     -ECANCELED);
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	disarm(&a);
	TU_ASSERT_FDS(fds);
	/* No context: the handshake limit bounds the connect too. */
	o = (cmesh_node_opts)CMESH_NODE_OPTS_INIT;
	o.timeout_ns = TU_MS(FIRE_AFTER_MS);
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_connect(t.path, &msg_type, &msg_type, &o, &node, &tx,
				   &rx),
		     -ETIMEDOUT);
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	TU_ASSERT_FDS(fds);
	for (int i = 0; i < nheld; i++)
		close(held[i]);
	tmp_unlisten(&t);
}

static volatile sig_atomic_t chld_seen;

static void on_chld(int sig)
{
	(void)sig;
	chld_seen++;
}

/*
 * An ended context fails each setup call before it starts anything:
 * spawn forks no child, cmesh_join keeps its invitation (a later join with
 * a live context may still take it), connect reaches no listener.
 */
Test(node_ctx, an_ended_context_starts_nothing)
{
	char *argv[] = { "sleep", "30", NULL };
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct tmp_listener t;
	struct sigaction sa = { .sa_handler = on_chld }, old;
	struct pollfd p;
	cmesh_cancel *c;
	cmesh_ctx *ctx;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	char invite[32];
	int sv[2];

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &ctx, &c), 0);
	cmesh_cancel_fire(c);
	o.ctx = ctx;

	cr_assert_eq(sigaction(SIGCHLD, &sa, &old), 0);
	TU_ASSERT_RC(cmesh_spawn("/bin/sleep", argv, &msg_type, &msg_type, &o,
				 &node, &tx, &rx),
		     -ECANCELED);
	tu_sleep_ms(20);
	cr_assert_eq(chld_seen, 0, "spawn forked a child");
	assert_no_children();
	sigaction(SIGCHLD, &old, NULL);

	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	snprintf(invite, sizeof(invite), "%d", sv[0]);
	cr_assert_eq(setenv(CMESH_INVITE_ENV, invite, 1), 0);
	TU_ASSERT_RC(cmesh_join(&msg_type, &msg_type, &o, &node, &tx, &rx),
		     -ECANCELED);
	cr_assert_str_eq(getenv(CMESH_INVITE_ENV), invite);
	cr_assert(tu_fd_is_open(sv[0]), "the invitation was taken");
	unsetenv(CMESH_INVITE_ENV);
	close(sv[0]);
	close(sv[1]);

	tmp_listen(&t);
	TU_ASSERT_RC(cmesh_connect(t.path, &msg_type, &msg_type, &o, &node, &tx,
				   &rx),
		     -ECANCELED);
	p = (struct pollfd){ .fd = cmesh_listener_fd(t.l), .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 0), 0, "connect reached the listener");
	tmp_unlisten(&t);
	cmesh_ctx_free(ctx);
	cmesh_cancel_free(c);
}

/* ---- cmesh_node_close_ctx ------------------------------------------- */

static int reset_child(int sock)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct msg m;

	TOPO_CHECK_EQ(join_sock(sock, NULL, &node, &tx, &rx), 0);
	/* Our link ends: the parent closed its node. */
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      -ECONNRESET);
	cmesh_node_free(node);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

Test(node_ctx, close_ctx_checks_its_arguments_and_takes_the_node)
{
	cmesh_ctx *ctx;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2], fds = tu_fd_count();
	pid_t pid;

	TU_ASSERT_RC(cmesh_ctx_new(&ctx), 0);
	TU_ASSERT_RC(cmesh_node_close_ctx(NULL, ctx), -EINVAL);
	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		topo_child_exit(reset_child(sv[1]));
	}
	close(sv[1]);
	TU_ASSERT_RC(join_sock(sv[0], NULL, &node, &tx, &rx), 0);
	/* NULL context: -EINVAL, and the node is taken all the same. */
	TU_ASSERT_RC(cmesh_node_close_ctx(node, NULL), -EINVAL);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	cmesh_ctx_free(ctx);
	wait_fds(fds);
}

/* The peer reads nothing: a backlog stays queued behind a full ring. */
static int stalled_peer(int sock, int sync)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	TOPO_CHECK_EQ(join_sock(sock, NULL, &node, &tx, &rx), 0);
	/* Until the parent is done. */
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'x');
	cmesh_node_free(node);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

Test(node_ctx, close_ctx_flushes_while_the_context_lasts)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct armed a;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct msg m = { 0 };
	int sv[2], sy[2], fds = tu_fd_count();
	int64_t t0;
	pid_t pid;

	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	topo_sync_pair(sy);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		close(sy[0]);
		topo_child_exit(stalled_peer(sv[1], sy[1]));
	}
	close(sv[1]);
	close(sy[1]);
	o.ring_size = 4096;
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &msg_type, &msg_type, &o,
					    &node, &tx, &rx),
		     0);
	/* Far more than the ring holds: the rest waits in the backlog. */
	for (int i = 0; i < 1000; i++) {
		m.seq = (uint64_t)i;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	arm(&a);
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_node_close_ctx(node, a.ctx), -ECANCELED);
	cr_assert_lt(tu_now_ns() - t0, NOTICE_NS);
	disarm(&a);
	TU_ASSERT_RC(topo_post(sy[0], 'x'), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	close(sy[0]);
	wait_fds(fds);
}
