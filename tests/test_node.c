/* SPDX-License-Identifier: MIT */
/*
 * test_node.c - nodes: channels between processes behave as channels in
 * one process (the same scenario bodies run in both topologies, see
 * helpers/topo.h), plus what only processes have: type agreement at join,
 * fds crossing, endpoints refused, peer death, spawn/join, listen/connect,
 * waitsets over remote receivers. Every test ends with the fd and mapping
 * counts it started with.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include "lane.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(node, .init = tu_suite_init, .fini = tu_suite_fini);

/* ---- message types ---------------------------------------------------- */

/* A message naming its sender and its place in that sender's sequence. */
struct seqmsg {
	uint32_t sender;
	uint32_t pad;
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(seq_type, struct seqmsg);

/* The same wire type, described by a separate descriptor. */
CMESH_TYPE_DEFINE_PLAIN(seq_type_twin, struct seqmsg);

/* Same name as seq_type, another size: another wire type. */
static const cmesh_type seq_type_big = { "struct seqmsg", 24, 0, NULL };

struct othermsg {
	uint64_t a, b, c;
};
CMESH_TYPE_DEFINE_PLAIN(other_type, struct othermsg);

/* Trailing bytes follow; `len` repeats their count, `seq` seeds them. */
struct trailmsg {
	uint64_t seq;
	uint64_t len;
};
CMESH_TYPE_DEFINE_PLAIN(trail_type, struct trailmsg);

struct fdmsg {
	uint64_t tag;
	int fd;
	int fd2;
};
CMESH_TYPE_DEFINE(fd_type, struct fdmsg, CMESH_FIELD_FD(struct fdmsg, fd),
		  CMESH_FIELD_FD(struct fdmsg, fd2));

/* fdmsg's name and size without the fd fields: another wire type. */
static const cmesh_type fd_type_nofd = { "struct fdmsg", sizeof(struct fdmsg),
					 0, NULL };

/* Every endpoint kind and an fd. */
struct epmsg {
	int fd;
	int pad;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
};
CMESH_TYPE_DEFINE(ep_type, struct epmsg, CMESH_FIELD_FD(struct epmsg, fd),
		  CMESH_FIELD_SENDER(struct epmsg, tx, seq_type),
		  CMESH_FIELD_RECEIVER(struct epmsg, rx, seq_type),
		  CMESH_FIELD_ONESHOT_SENDER(struct epmsg, otx, seq_type),
		  CMESH_FIELD_ONESHOT_RECEIVER(struct epmsg, orx, seq_type));

/* What a peer reports after checking a stream. */
struct summary {
	uint64_t received;
	uint64_t bad;
	uint64_t per[4];
};
CMESH_TYPE_DEFINE_PLAIN(summary_type, struct summary);

CMESH_TYPE_DEFINE(echo_type, struct topo_echo_msg,
		  CMESH_FIELD_FD(struct topo_echo_msg, fd));

/* As many fd fields as a type may have. */
struct fd64msg {
	int fd[64];
	uint64_t tag;
};
#define FD1(i) CMESH_FIELD_FD(struct fd64msg, fd[i])
#define FD8(i)                                                                 \
	FD1(i), FD1(i + 1), FD1(i + 2), FD1(i + 3), FD1(i + 4), FD1(i + 5),    \
		FD1(i + 6), FD1(i + 7)
CMESH_TYPE_DEFINE(fd64_type, struct fd64msg, FD8(0), FD8(8), FD8(16), FD8(24),
		  FD8(32), FD8(40), FD8(48), FD8(56));

union anymsg {
	struct seqmsg s;
	struct trailmsg t;
	struct fdmsg f;
	struct epmsg e;
	struct summary y;
	struct topo_echo_msg x;
	struct fd64msg f64;
};

#define ECHO_PATH CMESH_TEST_PROG_DIR "/test_prog_echo"

/* ---- driver helpers (Criterion) ---------------------------------------- */

static int recv_wait(cmesh_receiver *rx, void *msg, void *trail, size_t cap)
{
	return cmesh_receiver_recv_deadline(rx, topo_deadline(), msg, trail,
					    cap);
}

static void send_seq(cmesh_sender *tx, uint32_t sender, uint64_t seq)
{
	struct seqmsg m = { .sender = sender, .seq = seq };

	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
}

static void expect_seq(cmesh_receiver *rx, uint32_t sender, uint64_t seq)
{
	struct seqmsg m;
	int r;

	memset(&m, 0xa5, sizeof(m));
	r = recv_wait(rx, &m, NULL, 0);
	cr_assert_eq(r, 0, "recv: %d (%s), want message %u/%llu", r,
		     cmesh_strerror(r), sender, (unsigned long long)seq);
	cr_assert(m.sender == sender && m.seq == seq,
		  "got message %u/%llu, want %u/%llu", m.sender,
		  (unsigned long long)m.seq, sender, (unsigned long long)seq);
}

/* Every receive now ends with `want` (-EPIPE, -ECONNRESET, ...). */
static void expect_end(cmesh_receiver *rx, int want)
{
	union anymsg m;

	TU_ASSERT_RC(recv_wait(rx, &m, NULL, 0), want);
	TU_ASSERT_RC(recv_wait(rx, &m, NULL, 0), want);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), want);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), want);
}

/* Reads exactly `len` bytes from `fd` within TOPO_WAIT_MS. */
static void read_all(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		cr_assert_eq(poll(&p, 1, (int)TOPO_WAIT_MS), 1,
			     "nothing to read on fd %d", fd);
		n = read(fd, (char *)buf + done, len - done);
		cr_assert_gt(n, 0, "read fd %d: %zd (%s)", fd, n,
			     strerror(errno));
		done += (size_t)n;
	}
}

static bool cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);

	return f >= 0 && (f & FD_CLOEXEC);
}

/* ---- peer helpers (no Criterion) ------------------------------------------ */

static int peer_recv(cmesh_receiver *rx, void *msg, void *trail, size_t cap)
{
	return cmesh_receiver_recv_deadline(rx, topo_deadline(), msg, trail,
					    cap);
}

/* ==== scenarios run in both topologies ================================== */

/* ---- FIFO from one sender, both ways ---- */

static uint64_t fifo_n(void)
{
	return tu_stress(10000, 100);
}

static void fifo_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	uint64_t n = fifo_n();

	(void)s;
	for (uint64_t i = 0; i < n; i++)
		send_seq(tx, 1, i * 3 + 1);
	for (uint64_t i = 0; i < n; i++)
		expect_seq(rx, 2, i * 5 + 2);
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int fifo_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	uint64_t n = fifo_n();
	struct seqmsg m;

	(void)s;
	for (uint64_t i = 0; i < n; i++) {
		TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), 0);
		TOPO_CHECK_EQ(m.sender, 1);
		TOPO_CHECK_EQ(m.seq, i * 3 + 1);
	}
	for (uint64_t i = 0; i < n; i++) {
		m = (struct seqmsg){ .sender = 2, .seq = i * 5 + 2 };
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	cmesh_sender_free(tx);
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario fifo = {
	.down = &seq_type,
	.up = &seq_type,
	.driver = fifo_driver,
	.peer = fifo_peer,
};

Test(node, fifo_from_one_sender_in_process)
{
	topo_run(&fifo, TOPO_THREAD);
}
Test(node, fifo_from_one_sender_cross_process)
{
	topo_run(&fifo, TOPO_FORK);
}
Test(node, fifo_from_one_sender_over_listen_connect)
{
	topo_run(&fifo, TOPO_LISTEN);
}

/* ---- both handles moved to another thread through a local channel ---- */

/*
 * The driver moves its two handles (remote ones across processes) through
 * a local channel to a thread, which runs fifo_driver's steps with them;
 * the peer is fifo_peer, which cannot tell the difference.
 */
struct moved {
	cmesh_receiver *crx; /* the local channel the handles arrive on */
	int rc;		     /* the thread's result: 0, or the failed line */
};

static int moved_steps(cmesh_receiver *crx)
{
	uint64_t n = fifo_n();
	struct epmsg e;
	struct seqmsg m;

	TOPO_CHECK_EQ(peer_recv(crx, &e, NULL, 0), 0);
	TOPO_CHECK(e.tx && e.rx && e.fd == -1 && !e.otx && !e.orx);
	TOPO_CHECK(cmesh_sender_type(e.tx) == &seq_type);
	TOPO_CHECK(cmesh_receiver_type(e.rx) == &seq_type);
	for (uint64_t i = 0; i < n; i++) {
		m = (struct seqmsg){ .sender = 1, .seq = i * 3 + 1 };
		TOPO_CHECK_EQ(cmesh_sender_send(e.tx, &m, NULL, 0), 0);
	}
	for (uint64_t i = 0; i < n; i++) {
		TOPO_CHECK_EQ(peer_recv(e.rx, &m, NULL, 0), 0);
		TOPO_CHECK_EQ(m.sender, 2);
		TOPO_CHECK_EQ(m.seq, i * 5 + 2);
	}
	cmesh_sender_free(e.tx);
	TOPO_CHECK_EQ(peer_recv(e.rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(e.rx);
	return 0;
}

static void *moved_main(void *arg)
{
	struct moved *mv = arg;

	mv->rc = moved_steps(mv->crx);
	cmesh_receiver_free(mv->crx);
	return NULL;
}

static void moved_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct epmsg e = { .fd = -1, .tx = tx, .rx = rx };
	struct moved mv = { .rc = -1 };
	cmesh_sender *ctx;
	pthread_t t;

	(void)s;
	TU_ASSERT_RC(cmesh_channel_new(&ep_type, NULL, &ctx, &mv.crx), 0);
	tu_thread_start(&t, moved_main, &mv);
	TU_ASSERT_RC(cmesh_sender_send(ctx, &e, NULL, 0), 0);
	cmesh_sender_free(ctx);
	cr_assert(tu_thread_join_within(t, TOPO_WAIT_MS * 2, NULL),
		  "the thread with the moved handles did not finish");
	cr_assert_eq(mv.rc, 0, "the thread with the moved handles failed");
}

static const struct topo_scenario moved = {
	.down = &seq_type,
	.up = &seq_type,
	.driver = moved_driver,
	.peer = fifo_peer,
};

Test(node, handles_moved_to_another_thread_keep_working_in_process)
{
	topo_run(&moved, TOPO_THREAD);
}
Test(node, handles_moved_to_another_thread_keep_working_cross_process)
{
	topo_run(&moved, TOPO_FORK);
}

/* ---- ping-pong ---- */

static uint64_t pingpong_n(void)
{
	return tu_stress(10000, 100);
}

static void pingpong_driver(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	uint64_t n = pingpong_n();

	(void)s;
	for (uint64_t i = 0; i < n; i++) {
		send_seq(tx, 1, 2 * i);
		expect_seq(rx, 2, 2 * i + 1);
	}
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int pingpong_peer(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct seqmsg m;
	uint64_t count = 0;
	int r;

	(void)s;
	while ((r = peer_recv(rx, &m, NULL, 0)) == 0) {
		TOPO_CHECK_EQ(m.sender, 1);
		TOPO_CHECK_EQ(m.seq, 2 * count);
		m.sender = 2;
		m.seq++;
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
		count++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	TOPO_CHECK_EQ(count, pingpong_n());
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario pingpong = {
	.down = &seq_type,
	.up = &seq_type,
	.driver = pingpong_driver,
	.peer = pingpong_peer,
};

Test(node, ping_pong_round_trips_in_process)
{
	topo_run(&pingpong, TOPO_THREAD);
}
Test(node, ping_pong_round_trips_cross_process)
{
	topo_run(&pingpong, TOPO_FORK);
}
Test(node, ping_pong_round_trips_over_listen_connect)
{
	topo_run(&pingpong, TOPO_LISTEN);
}

/*
 * The same with receivers that never spin: every receive sleeps. Across
 * processes a sleeper waits in futex_waitv on its producer's signal word,
 * or, where the kernel has no futex_waitv, polls its wake socket: both
 * ways deliver every message, in order, and see the close.
 */
static uint64_t sleeping_n(void)
{
	return tu_stress(2000, 100);
}

static void sleeping_driver(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	(void)s;
	for (uint64_t i = 0; i < sleeping_n(); i++) {
		send_seq(tx, 1, 2 * i);
		expect_seq(rx, 2, 2 * i + 1);
	}
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int sleeping_peer(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct seqmsg m;
	uint64_t count = 0;
	int r;

	(void)s;
	while ((r = peer_recv(rx, &m, NULL, 0)) == 0) {
		TOPO_CHECK_EQ(m.seq, 2 * count);
		m.sender = 2;
		m.seq++;
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
		count++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	TOPO_CHECK_EQ(count, sleeping_n());
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario sleeping = {
	.down = &seq_type,
	.up = &seq_type,
	.spin_ns = CMESH_SPIN_NONE,
	.driver = sleeping_driver,
	.peer = sleeping_peer,
};

Test(node, sleeping_ping_pong_in_process)
{
	topo_run(&sleeping, TOPO_THREAD);
}
Test(node, sleeping_ping_pong_cross_process)
{
	topo_run(&sleeping, TOPO_FORK);
}
Test(node, sleeping_ping_pong_without_futex_waitv_cross_process)
{
	cmesh__lane_force_polling(true);
	topo_run(&sleeping, TOPO_FORK);
	cmesh__lane_force_polling(false);
}

/* ---- a bounded backlog ---- */

#define BACKLOG_BYTES 16384u
#define BACKLOG_TRAIL 200u
#define BACKLOG_MARK (1ull << 62)

/*
 * Driver: the peer does not read; sends until -ENOBUFS (more than the ring
 * holds, fewer than ring + backlog allow), then one with an fd: -ENOBUFS,
 * and the fd is closed. Lets the peer read, sends the MARK as soon as the
 * backlog has room again, and gets back how many the peer read before it:
 * exactly those that were accepted.
 */
static void backlog_driver(cmesh_sender *tx, cmesh_receiver *rx,
			   const struct topo_side *s)
{
	unsigned char trail[BACKLOG_TRAIL] = { 1 };
	struct fdmsg m = { .fd = -1, .fd2 = -1 };
	struct seqmsg back;
	uint64_t n = 0;
	int r, p[2];

	while ((r = cmesh_sender_send(tx, &m, trail, sizeof(trail))) == 0)
		m.tag = ++n;
	TU_ASSERT_RC(r, -ENOBUFS);
	cr_assert_gt(n, 4096 / 256, "only %llu sent", (unsigned long long)n);
	cr_assert_lt(n, (4096 + BACKLOG_BYTES) / BACKLOG_TRAIL + 1, "%llu sent",
		     (unsigned long long)n);
	tu_pipe(p);
	m.fd = p[1];
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -ENOBUFS);
	cr_assert(tu_pipe_sees_eof(p[0], 1000), "the refused fd is open");
	close(p[0]);
	cr_assert_eq(topo_post(s->sync, 'r'), 0);
	m = (struct fdmsg){ .tag = BACKLOG_MARK, .fd = -1, .fd2 = -1 };
	while ((r = cmesh_sender_send(tx, &m, NULL, 0)) == -ENOBUFS)
		tu_sleep_ms(1);
	TU_ASSERT_RC(r, 0);
	TU_ASSERT_RC(recv_wait(rx, &back, NULL, 0), 0);
	cr_assert_eq(back.seq, n, "the peer read %llu, %llu were sent",
		     (unsigned long long)back.seq, (unsigned long long)n);
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int backlog_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	unsigned char trail[BACKLOG_TRAIL];
	struct fdmsg m;
	struct seqmsg back = { 0 };
	int r;

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'r');
	while ((r = peer_recv(rx, &m, trail, sizeof(trail))) >= 0 &&
	       m.tag != BACKLOG_MARK) {
		TOPO_CHECK_EQ(m.tag, back.seq);
		TOPO_CHECK_EQ(r, BACKLOG_TRAIL);
		back.seq++;
	}
	TOPO_CHECK_EQ(r, 0);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &back, NULL, 0), 0);
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario backlog = {
	.down = &fd_type,
	.up = &seq_type,
	.ring_size = 4096,
	.max_backlog = BACKLOG_BYTES,
	.driver = backlog_driver,
	.peer = backlog_peer,
};

Test(node, a_full_backlog_refuses_sends_with_enobufs_in_process)
{
	topo_run(&backlog, TOPO_THREAD);
}

Test(node, a_full_backlog_refuses_sends_with_enobufs_cross_process)
{
	topo_run(&backlog, TOPO_FORK);
}

/* ---- closed after the last sender is freed ---- */

#define CLOSED_N 1500u

/*
 * The peer sends from two senders (the ring is small: most of it spills),
 * frees one, sends more from the other, frees it: the driver drains all,
 * in per-sender order, then sees "closed". The other way the driver frees
 * its only sender without sending: the peer sees "closed" at once.
 */
static void closed_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	uint64_t next[3] = { 0 };
	struct seqmsg m;

	(void)s;
	for (uint32_t i = 0; i < 3 * CLOSED_N; i++) {
		int r = recv_wait(rx, &m, NULL, 0);

		cr_assert_eq(r, 0, "message %u: %d (%s)", i, r,
			     cmesh_strerror(r));
		cr_assert(m.sender == 1 || m.sender == 2, "sender %u",
			  m.sender);
		cr_assert_eq(m.seq, next[m.sender],
			     "sender %u: seq %llu, "
			     "want %llu",
			     m.sender, (unsigned long long)m.seq,
			     (unsigned long long)next[m.sender]);
		next[m.sender]++;
	}
	cr_assert_eq(next[1], CLOSED_N);
	cr_assert_eq(next[2], 2 * CLOSED_N);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
	cmesh_sender_free(tx);
}

static int closed_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	cmesh_sender *tx2;
	struct seqmsg m;

	(void)s;
	TOPO_CHECK_EQ(cmesh_sender_clone(tx, &tx2), 0);
	for (uint64_t i = 0; i < CLOSED_N; i++) {
		m = (struct seqmsg){ .sender = 1, .seq = i };
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
		m = (struct seqmsg){ .sender = 2, .seq = i };
		TOPO_CHECK_EQ(cmesh_sender_send(tx2, &m, NULL, 0), 0);
	}
	cmesh_sender_free(tx);
	for (uint64_t i = CLOSED_N; i < 2 * CLOSED_N; i++) {
		m = (struct seqmsg){ .sender = 2, .seq = i };
		TOPO_CHECK_EQ(cmesh_sender_send(tx2, &m, NULL, 0), 0);
	}
	cmesh_sender_free(tx2);
	/* Nothing was ever sent this way. */
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
	TOPO_CHECK_EQ(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario closed = {
	.down = &seq_type,
	.up = &seq_type,
	.ring_size = 4096,
	.driver = closed_driver,
	.peer = closed_peer,
};

Test(node, receiver_drains_then_sees_closed_after_last_sender_in_process)
{
	topo_run(&closed, TOPO_THREAD);
}
Test(node, receiver_drains_then_sees_closed_after_last_sender_cross_process)
{
	topo_run(&closed, TOPO_FORK);
}

/* ---- -EPIPE on send once the peer freed its receiver ---- */

/*
 * Sync: the driver sends a message holding a pipe's write end, posts 'a';
 * the peer frees its receiver with that message unread (its fd must be
 * closed), tells the driver over the up channel; the driver's sends now
 * fail with -EPIPE and release their fds; 'b': the peer frees its sender.
 */
static void rxgone_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	static char big[100000];
	struct fdmsg m = { .tag = 1, .fd2 = -1 };
	struct fdmsg got;
	int p[2], q[2];

	tu_pipe(p);
	m.fd = p[1];
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(topo_post(s->sync, 'a'), 0);
	TU_ASSERT_RC(recv_wait(rx, &got, NULL, 0), 0);
	cr_assert_eq(got.tag, 99);
	/* The unread message went with the receiver, and its fd with it. */
	cr_assert(tu_pipe_sees_eof(p[0], 5000),
		  "fd of a message queued at the freed receiver still open");
	close(p[0]);

	tu_pipe(q);
	m = (struct fdmsg){ .tag = 2, .fd = q[1], .fd2 = -1 };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EPIPE);
	cr_assert(tu_pipe_sees_eof(q[0], 1000),
		  "send failing with -EPIPE did not close the message's fd");
	close(q[0]);
	m = (struct fdmsg){ .tag = 3, .fd = -1, .fd2 = -1 };
	for (int i = 0; i < 100; i++)
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, "abc", 3), -EPIPE);
	m.tag = 4; /* out of line: no memfd is left behind either */
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, big, sizeof(big)), -EPIPE);
	TU_ASSERT_RC(topo_post(s->sync, 'b'), 0);
	expect_end(rx, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int rxgone_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct fdmsg m = { .tag = 99, .fd = -1, .fd2 = -1 };

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'a');
	cmesh_receiver_free(rx);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'b');
	cmesh_sender_free(tx);
	return 0;
}

static const struct topo_scenario rxgone = {
	.down = &fd_type,
	.up = &fd_type,
	.driver = rxgone_driver,
	.peer = rxgone_peer,
};

Test(node, send_fails_with_epipe_after_the_receiver_is_freed_in_process)
{
	topo_run(&rxgone, TOPO_THREAD);
}
Test(node, send_fails_with_epipe_after_the_receiver_is_freed_cross_process)
{
	topo_run(&rxgone, TOPO_FORK);
}

/* The same for a type without resource fields (the senders' fast path). */
static void rxgone_plain_driver(cmesh_sender *tx, cmesh_receiver *rx,
				const struct topo_side *s)
{
	struct seqmsg m = { .sender = 1 };

	expect_seq(rx, 2, 99); /* sent after the peer freed its receiver */
	for (int i = 0; i < 100; i++) {
		m.seq = (uint64_t)i;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EPIPE);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, "abc", 3), -EPIPE);
	}
	TU_ASSERT_RC(topo_post(s->sync, 'b'), 0);
	expect_end(rx, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int rxgone_plain_peer(cmesh_sender *tx, cmesh_receiver *rx,
			     const struct topo_side *s)
{
	struct seqmsg m = { .sender = 2, .seq = 99 };

	cmesh_receiver_free(rx);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'b');
	cmesh_sender_free(tx);
	return 0;
}

static const struct topo_scenario rxgone_plain = {
	.down = &seq_type,
	.up = &seq_type,
	.driver = rxgone_plain_driver,
	.peer = rxgone_plain_peer,
};

Test(node, plain_send_fails_with_epipe_after_the_receiver_is_freed_in_process)
{
	topo_run(&rxgone_plain, TOPO_THREAD);
}
Test(node,
     plain_send_fails_with_epipe_after_the_receiver_is_freed_cross_process)
{
	topo_run(&rxgone_plain, TOPO_FORK);
}

/* ---- trailing bytes of every size ---- */

#define TRAIL_MAX (4u * 4096)
#define TRAIL_WINDOW 8u

struct trail_arg {
	uint32_t ring;
};

/* Every multiple of 8 up to TRAIL_MAX, odd sizes around the limits. */
static size_t trail_sizes(uint32_t ring, uint32_t *out, size_t cap)
{
	const uint32_t limit =
		ring / 4 - 24 - (uint32_t)sizeof(struct trailmsg);
	/* A record without fds or header (CMESH_REC_PLAIN) holds more. */
	const uint32_t plain = ring / 4 - (uint32_t)sizeof(struct trailmsg);
	const uint32_t around[] = { limit, plain,    ring / 4,
				    ring,  2 * ring, TRAIL_MAX };
	size_t n = 0;

	for (uint32_t v = 0; v <= TRAIL_MAX; v += 8)
		out[n++] = v;
	for (uint32_t v = 1; v < 8; v++)
		out[n++] = v;
	for (size_t i = 0; i < sizeof(around) / sizeof(around[0]); i++)
		for (uint32_t d = 0; d <= 6; d++)
			if (around[i] + d >= 3 &&
			    around[i] + d - 3 <= TRAIL_MAX)
				out[n++] = around[i] + d - 3;
	cr_assert_leq(n, cap);
	return n;
}

static void trail_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	const struct trail_arg *a = s->arg;
	static uint32_t sizes[TRAIL_MAX / 8 + 96];
	size_t n = trail_sizes(a->ring, sizes, sizeof(sizes) / sizeof(*sizes));
	unsigned char *out = malloc(TRAIL_MAX), *in = malloc(TRAIL_MAX + 64);
	struct trailmsg m;

	cr_assert(out && in);
	for (size_t i = 0; i < n + TRAIL_WINDOW; i++) {
		if (i < n) {
			m = (struct trailmsg){ .seq = i, .len = sizes[i] };
			tu_fill(out, sizes[i], (uint32_t)i);
			TU_ASSERT_RC(cmesh_sender_send(tx, &m, out, sizes[i]),
				     0);
		}
		if (i < TRAIL_WINDOW)
			continue;
		size_t j = i - TRAIL_WINDOW;
		int r;

		if (sizes[j] > 0 && j % 17 == 0) {
			/* Too small a buffer: nothing consumed. */
			TU_ASSERT_RC(recv_wait(rx, &m, in, sizes[j] - 1),
				     -EMSGSIZE);
			TU_ASSERT_RC(cmesh_receiver_try_peek(rx),
				     (int)sizes[j]);
		}
		memset(&m, 0, sizeof(m));
		r = recv_wait(rx, &m, in, TRAIL_MAX + 64);
		cr_assert_eq(r, (int)sizes[j], "echo %zu: %d (%s), want %u", j,
			     r, cmesh_strerror(r), sizes[j]);
		cr_assert(m.seq == j && m.len == sizes[j],
			  "echo %zu: seq %llu len %llu", j,
			  (unsigned long long)m.seq, (unsigned long long)m.len);
		cr_assert_eq(tu_check(in, sizes[j], (uint32_t)j), sizes[j],
			     "echo %zu (%u bytes): byte %zu differs", j,
			     sizes[j], tu_check(in, sizes[j], (uint32_t)j));
	}
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
	free(out);
	free(in);
}

/* Checks each message and sends it back, trailing bytes and all. */
static int trail_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	unsigned char *buf = malloc(TRAIL_MAX + 64);
	struct trailmsg m;
	uint64_t count = 0;
	int r;

	(void)s;
	TOPO_CHECK(buf != NULL);
	while ((r = peer_recv(rx, &m, buf, TRAIL_MAX + 64)) >= 0) {
		TOPO_CHECK_EQ(m.seq, count);
		TOPO_CHECK_EQ(r, m.len);
		TOPO_CHECK_EQ(tu_check(buf, (size_t)r, (uint32_t)m.seq),
			      (size_t)r);
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, buf, (size_t)r), 0);
		count++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	free(buf);
	return 0;
}

static const struct trail_arg trail_4k = { 4096 };
static const struct trail_arg trail_8k = { 8192 };

static const struct topo_scenario trail4k = {
	.down = &trail_type,
	.up = &trail_type,
	.ring_size = 4096,
	.driver = trail_driver,
	.peer = trail_peer,
	.arg = &trail_4k,
};

static const struct topo_scenario trail8k = {
	.down = &trail_type,
	.up = &trail_type,
	.ring_size = 8192,
	.driver = trail_driver,
	.peer = trail_peer,
	.arg = &trail_8k,
};

Test(node, trailing_bytes_of_every_size_in_process)
{
	topo_run(&trail4k, TOPO_THREAD);
}
Test(node, trailing_bytes_of_every_size_cross_process)
{
	topo_run(&trail4k, TOPO_FORK);
}
Test(node, trailing_bytes_of_every_size_8k_ring_in_process)
{
	topo_run(&trail8k, TOPO_THREAD);
}
Test(node, trailing_bytes_of_every_size_8k_ring_cross_process)
{
	topo_run(&trail8k, TOPO_FORK);
}

/* ---- many messages from four threads ---- */

#define STRESS_THREADS 4u

static uint64_t stress_n(void)
{
	return tu_stress(1000000, 4 * STRESS_THREADS);
}

struct stress_thread {
	cmesh_sender *tx;
	uint32_t id;
	uint64_t n;
	int err;
	uint64_t failed_at;
};

static void *stress_sender(void *arg)
{
	struct stress_thread *t = arg;

	for (uint64_t j = 0; j < t->n; j++) {
		struct seqmsg m = { .sender = t->id, .seq = j };
		int r = cmesh_sender_send(t->tx, &m, NULL, 0);

		if (r) {
			t->err = r;
			t->failed_at = j;
			break;
		}
	}
	return NULL;
}

/*
 * Threads 0 and 1 share the driver's sender, 2 and 3 each have a clone.
 * The peer checks the order of each thread's messages and reports.
 */
static void stress_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	struct stress_thread t[STRESS_THREADS];
	pthread_t th[STRESS_THREADS];
	cmesh_sender *clones[2];
	uint64_t per = stress_n() / STRESS_THREADS;
	struct summary sum;

	(void)s;
	TU_ASSERT_RC(cmesh_sender_clone(tx, &clones[0]), 0);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &clones[1]), 0);
	for (uint32_t i = 0; i < STRESS_THREADS; i++) {
		t[i] = (struct stress_thread){ .tx = i < 2 ? tx : clones[i - 2],
					       .id = i,
					       .n = per };
		tu_thread_start(&th[i], stress_sender, &t[i]);
	}
	for (uint32_t i = 0; i < STRESS_THREADS; i++) {
		tu_thread_join(th[i]);
		cr_assert_eq(t[i].err, 0, "thread %u: send %llu: %d (%s)", i,
			     (unsigned long long)t[i].failed_at, t[i].err,
			     cmesh_strerror(t[i].err));
	}
	cmesh_sender_free(clones[0]);
	cmesh_sender_free(clones[1]);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(recv_wait(rx, &sum, NULL, 0), 0);
	cr_assert_eq(sum.bad, 0, "%llu messages out of order or unknown",
		     (unsigned long long)sum.bad);
	cr_assert_eq(sum.received, per * STRESS_THREADS,
		     "received %llu of %llu", (unsigned long long)sum.received,
		     (unsigned long long)(per * STRESS_THREADS));
	for (uint32_t i = 0; i < STRESS_THREADS; i++)
		cr_assert_eq(sum.per[i], per);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int stress_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct summary sum = { 0 };
	struct seqmsg m;
	int r;

	(void)s;
	while ((r = peer_recv(rx, &m, NULL, 0)) == 0) {
		sum.received++;
		if (m.sender >= STRESS_THREADS || m.seq != sum.per[m.sender])
			sum.bad++;
		else
			sum.per[m.sender]++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &sum, NULL, 0), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario stress = {
	.down = &seq_type,
	.up = &summary_type,
	.driver = stress_driver,
	.peer = stress_peer,
};

Test(node, four_threads_sending_keep_per_thread_order_in_process)
{
	topo_run(&stress, TOPO_THREAD);
}
Test(node, four_threads_sending_keep_per_thread_order_cross_process)
{
	topo_run(&stress, TOPO_FORK);
}

/* ---- a full ring spills; nothing is lost ---- */

#define SPILL_N 20000u

static uint32_t spill_len(uint64_t i)
{
	if (i % 1000 == 999)
		return 3000; /* out of line with a 4 KiB ring */
	if (i % 7 == 0)
		return (uint32_t)(i * 13 % 300);
	return 8;
}

static int send_spill(cmesh_sender *tx, unsigned char *buf)
{
	for (uint64_t i = 0; i < SPILL_N; i++) {
		struct trailmsg m = { .seq = i, .len = spill_len(i) };
		int r;

		tu_fill(buf, m.len, (uint32_t)i);
		r = cmesh_sender_send(tx, &m, buf, m.len);
		if (r)
			return r;
	}
	return 0;
}

/* Receives the SPILL_N messages of send_spill(); 0 or -(index + 1). */
static long recv_spill(cmesh_receiver *rx, unsigned char *buf)
{
	for (uint64_t i = 0; i < SPILL_N; i++) {
		struct trailmsg m;
		int r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						     buf, 4096);

		if (r < 0 || m.seq != i || m.len != spill_len(i) ||
		    (uint32_t)r != m.len ||
		    tu_check(buf, (size_t)r, (uint32_t)i) != (size_t)r) {
			fprintf(stderr,
				"recv_spill: message %llu: %d (%s), seq %llu "
				"len %llu\n",
				(unsigned long long)i, r, cmesh_strerror(r),
				(unsigned long long)m.seq,
				(unsigned long long)m.len);
			return -(long)(i + 1);
		}
	}
	return 0;
}

/*
 * Sync: the driver sends everything while the peer does not read ('g'
 * starts it), then frees its sender; the peer then sends everything while
 * the driver does not read ('s'), then both drain.
 */
static void spill_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	unsigned char *buf = malloc(4096);
	long bad;

	cr_assert_not_null(buf);
	TU_ASSERT_RC(send_spill(tx, buf), 0);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 's');
	bad = recv_spill(rx, buf);
	cr_assert_eq(bad, 0, "message %ld lost, reordered or damaged",
		     -bad - 1);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
	free(buf);
}

static int spill_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	unsigned char *buf = malloc(4096);
	struct trailmsg m;

	TOPO_CHECK(buf != NULL);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	TOPO_CHECK_EQ(send_spill(tx, buf), 0);
	cmesh_sender_free(tx);
	TOPO_CHECK_EQ(topo_post(s->sync, 's'), 0);
	TOPO_CHECK_EQ(recv_spill(rx, buf), 0);
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx);
	free(buf);
	return 0;
}

static const struct topo_scenario spill = {
	.down = &trail_type,
	.up = &trail_type,
	.ring_size = 4096,
	.driver = spill_driver,
	.peer = spill_peer,
};

Test(node, full_ring_spills_without_loss_while_the_peer_waits_in_process)
{
	topo_run(&spill, TOPO_THREAD);
}
Test(node, full_ring_spills_without_loss_while_the_peer_waits_cross_process)
{
	topo_run(&spill, TOPO_FORK);
}

/* ---- fds cross and work ---- */

#define FD_BURST 200u
static const char fd_note[] = "written by the peer";
static const char memfd_note[] = "memfd contents from the peer";

/*
 * A pipe's write end goes down, the peer writes through it; a memfd and an
 * eventfd come up; then a burst of eventfds (count i + 1) on a small ring,
 * so that fds and records must stay paired through the spill.
 */
static void fd_driver(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	struct fdmsg m;
	char buf[64];
	uint64_t v;
	int p[2];

	(void)s;
	tu_pipe(p);
	m = (struct fdmsg){ .tag = 1, .fd = p[1], .fd2 = -1 };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	read_all(p[0], buf, sizeof(fd_note));
	cr_assert_str_eq(buf, fd_note);
	cr_assert(tu_pipe_sees_eof(p[0], 5000),
		  "write end still open somewhere after the peer closed it");
	close(p[0]);

	memset(&m, 0, sizeof(m));
	TU_ASSERT_RC(recv_wait(rx, &m, NULL, 0), 0);
	cr_assert_eq(m.tag, 2);
	cr_assert(m.fd >= 0 && m.fd2 >= 0, "fds %d %d", m.fd, m.fd2);
	cr_assert(cloexec(m.fd) && cloexec(m.fd2), "received fds not CLOEXEC");
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(pread(m.fd, buf, sizeof(buf), 0),
		     (ssize_t)sizeof(memfd_note));
	cr_assert_str_eq(buf, memfd_note);
	cr_assert_eq(read(m.fd2, &v, sizeof(v)), (ssize_t)sizeof(v));
	cr_assert_eq(v, 42);
	close(m.fd);
	close(m.fd2);

	for (uint32_t i = 0; i < FD_BURST; i++) {
		int efd = eventfd(i + 1, EFD_CLOEXEC);

		cr_assert_geq(efd, 0);
		m = (struct fdmsg){ .tag = 100 + i, .fd = -1, .fd2 = efd };
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, "x", i % 2), 0);
	}
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int fd_peer(cmesh_sender *tx, cmesh_receiver *rx,
		   const struct topo_side *s)
{
	struct fdmsg m;
	uint64_t v;
	uint32_t k = 0;
	int memfd, efd, r;
	char trail[8];

	(void)s;
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(m.tag, 1);
	TOPO_CHECK_EQ(m.fd2, -1);
	TOPO_CHECK(m.fd >= 0);
	TOPO_CHECK(cloexec(m.fd));
	TOPO_CHECK_EQ(write(m.fd, fd_note, sizeof(fd_note)), sizeof(fd_note));
	close(m.fd);

	memfd = memfd_create("test-node", MFD_CLOEXEC);
	TOPO_CHECK(memfd >= 0);
	TOPO_CHECK_EQ(write(memfd, memfd_note, sizeof(memfd_note)),
		      sizeof(memfd_note));
	efd = eventfd(42, EFD_CLOEXEC);
	TOPO_CHECK(efd >= 0);
	m = (struct fdmsg){ .tag = 2, .fd = memfd, .fd2 = efd };
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);

	while ((r = peer_recv(rx, &m, trail, sizeof(trail))) >= 0) {
		TOPO_CHECK_EQ(r, k % 2);
		TOPO_CHECK_EQ(m.tag, 100 + k);
		TOPO_CHECK_EQ(m.fd, -1);
		TOPO_CHECK(m.fd2 >= 0 && cloexec(m.fd2));
		TOPO_CHECK_EQ(read(m.fd2, &v, sizeof(v)), sizeof(v));
		TOPO_CHECK_EQ(v, k + 1);
		close(m.fd2);
		k++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	TOPO_CHECK_EQ(k, FD_BURST);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario fds = {
	.down = &fd_type,
	.up = &fd_type,
	.ring_size = 4096,
	.driver = fd_driver,
	.peer = fd_peer,
};

Test(node, fds_cross_and_work_on_the_other_side_in_process)
{
	topo_run(&fds, TOPO_THREAD);
}
Test(node, fds_cross_and_work_on_the_other_side_cross_process)
{
	topo_run(&fds, TOPO_FORK);
}

/* ---- fds while the peer's control socket is full ---- */

#define STALL_N 1500u

/*
 * Every third message has no fd (a lock-free PLAIN record), the others an
 * eventfd counting its tag + 1. Cross-process, the peer is stopped while
 * they go out: its control socket fills, so records that already have
 * their slots lose their ATTACH (the slots become a filler and the message
 * spills) while plain records keep coming behind them.
 */
static void stall_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	if (s->cross)
		cr_assert_eq(kill(s->peer_pid, SIGSTOP), 0);
	for (uint32_t i = 0; i < STALL_N; i++) {
		struct fdmsg m = { .tag = i, .fd = -1, .fd2 = -1 };

		if (i % 3) {
			m.fd2 = eventfd(i + 1, EFD_CLOEXEC);
			cr_assert_geq(m.fd2, 0);
		}
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	if (s->cross)
		cr_assert_eq(kill(s->peer_pid, SIGCONT), 0);
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int stall_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	struct fdmsg m;
	uint64_t v;
	uint32_t k = 0;
	int r;

	(void)s;
	while ((r = peer_recv(rx, &m, NULL, 0)) >= 0) {
		TOPO_CHECK_EQ(r, 0);
		TOPO_CHECK_EQ(m.tag, k);
		TOPO_CHECK_EQ(m.fd, -1);
		if (k % 3) {
			TOPO_CHECK(m.fd2 >= 0);
			TOPO_CHECK_EQ(read(m.fd2, &v, sizeof(v)), sizeof(v));
			TOPO_CHECK_EQ(v, k + 1);
			close(m.fd2);
		} else {
			TOPO_CHECK_EQ(m.fd2, -1);
		}
		k++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	TOPO_CHECK_EQ(k, STALL_N);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario stall = {
	.down = &fd_type,
	.up = &fd_type,
	.ring_size = 64 * 1024,
	.driver = stall_driver,
	.peer = stall_peer,
};

Test(node, fds_keep_record_order_while_the_control_socket_is_full_in_process)
{
	topo_run(&stall, TOPO_THREAD);
}
Test(node, fds_keep_record_order_while_the_control_socket_is_full_cross_process)
{
	topo_run(&stall, TOPO_FORK);
}

/* ---- a message with every fd field set, in line and out of line ---- */

#define FD64_TRAIL 3000u /* over the record limit of a 4 KiB ring */

static void fd64_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	static unsigned char trail[FD64_TRAIL];
	struct fd64msg m;

	(void)s;
	tu_fill(trail, sizeof(trail), 64);
	for (uint64_t tag = 0; tag < 2; tag++) {
		m.tag = tag;
		for (int i = 0; i < 64; i++) {
			m.fd[i] = eventfd((unsigned)(i + 1), EFD_CLOEXEC);
			cr_assert_geq(m.fd[i], 0);
		}
		/* tag 0: no trail; tag 1: a trail that goes out of line. */
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, trail,
					       tag ? sizeof(trail) : 0),
			     0);
	}
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
}

static int fd64_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	static unsigned char trail[FD64_TRAIL];
	struct fd64msg m;
	uint64_t v;

	(void)s;
	for (uint64_t tag = 0; tag < 2; tag++) {
		TOPO_CHECK_EQ(peer_recv(rx, &m, trail, sizeof(trail)),
			      tag ? FD64_TRAIL : 0);
		TOPO_CHECK_EQ(m.tag, tag);
		if (tag)
			TOPO_CHECK_EQ(tu_check(trail, sizeof(trail), 64),
				      sizeof(trail));
		for (int i = 0; i < 64; i++) {
			TOPO_CHECK(m.fd[i] >= 0);
			TOPO_CHECK_EQ(read(m.fd[i], &v, sizeof(v)), sizeof(v));
			TOPO_CHECK_EQ(v, i + 1);
			close(m.fd[i]);
		}
	}
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario fd64 = {
	.down = &fd64_type,
	.up = &seq_type,
	.ring_size = 4096,
	.driver = fd64_driver,
	.peer = fd64_peer,
};

Test(node, message_with_64_fds_and_out_of_line_trail_arrives_in_process)
{
	topo_run(&fd64, TOPO_THREAD);
}
Test(node, message_with_64_fds_and_out_of_line_trail_arrives_cross_process)
{
	topo_run(&fd64, TOPO_FORK);
}

/* ==== joining ======================================================== */

Test(node, join_rejects_bad_arguments_and_closes_the_socket)
{
	struct topo_res res;
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	const cmesh_type bad = { "bad", 0, 0, NULL };
	int sv[2];

	topo_baseline(&res);
	TU_ASSERT_RC(cmesh_node_join_socket(-1, &seq_type, &seq_type, NULL,
					    &node, &tx, &rx),
		     -EINVAL);
	for (int i = 0; i < 10; i++) {
		int r;

		topo_sync_pair(sv);
		o = (cmesh_node_opts)CMESH_NODE_OPTS_INIT;
		if (i == 0)
			r = cmesh_node_join_socket(sv[0], NULL, &seq_type, &o,
						   &node, &tx, &rx);
		else if (i == 1)
			r = cmesh_node_join_socket(sv[0], &seq_type, &bad, &o,
						   &node, &tx, &rx);
		else if (i == 2)
			r = cmesh_node_join_socket(sv[0], &seq_type, &seq_type,
						   &o, NULL, &tx, &rx);
		else {
			if (i == 3)
				o.flags = 1;
			else if (i == 4)
				o.ring_size = 5000;
			else if (i == 5)
				o.reserved = 1;
			else if (i == 6)
				o.reserved2 = 1;
			else if (i == 7)
				o.peer_pid = -1;
			else if (i == 8)
				o.max_backlog = 100;
			else
				o.timeout_ns = -1;
			r = cmesh_node_join_socket(sv[0], &seq_type, &seq_type,
						   &o, &node, &tx, &rx);
		}
		cr_assert_eq(r, -EINVAL, "case %d: %d (%s)", i, r,
			     cmesh_strerror(r));
		cr_assert_not(tu_fd_is_open(sv[0]),
			      "case %d: the socket was not closed", i);
		close(sv[1]);
	}
	cmesh_node_free(NULL);
	topo_assert_baseline(&res);
}

/* Child of check_join(): joins with its types, expects `want`. */
static int join_child(int sock, const cmesh_type *out, const cmesh_type *in,
		      int want)
{
	cmesh_node *node = NULL;
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;
	int r = cmesh_node_join_socket(sock, out, in, NULL, &node, &tx, &rx);

	TOPO_CHECK_EQ(r, want);
	if (r == 0) {
		struct seqmsg m = { 7, 0, 7 };

		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
		TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
		cmesh_node_free(node);
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
	}
	return 0;
}

/*
 * The parent joins as (out, in), the child as (cout, cin); both must
 * return `want`.
 */
static void check_join(const cmesh_type *out, const cmesh_type *in,
		       const cmesh_type *cout, const cmesh_type *cin, int want)
{
	struct topo_res res;
	cmesh_node *node = NULL;
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;
	int sv[2], r;
	pid_t pid;

	topo_baseline(&res);
	topo_sync_pair(sv);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		topo_child_exit(join_child(sv[1], cout, cin, want));
	}
	close(sv[1]);
	r = cmesh_node_join_socket(sv[0], out, in, NULL, &node, &tx, &rx);
	cr_assert_eq(r, want, "join: %d (%s), want %d (%s)", r,
		     cmesh_strerror(r), want, cmesh_strerror(want));
	if (r == 0) {
		struct seqmsg m;

		expect_seq(rx, 7, 7);
		cmesh_sender_free(tx);
		TU_ASSERT_RC(recv_wait(rx, &m, NULL, 0), -EPIPE);
		cmesh_node_free(node);
		cmesh_receiver_free(rx);
	}
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	topo_assert_baseline(&res);
}

Test(node, join_with_mismatched_types_fails_with_ebadmsg_on_both_sides)
{
	/* What the child sends is not what the parent receives. */
	check_join(&seq_type, &seq_type, &other_type, &seq_type, -EBADMSG);
	/* What the parent sends is not what the child receives. */
	check_join(&seq_type, &seq_type, &seq_type, &other_type, -EBADMSG);
	/* Same name, another size. */
	check_join(&seq_type, &seq_type, &seq_type_big, &seq_type, -EBADMSG);
	/* Same name and size, but fd fields on one side only. */
	check_join(&fd_type, &seq_type, &seq_type, &fd_type_nofd, -EBADMSG);
	/* Both directions swapped. */
	check_join(&seq_type, &trail_type, &seq_type, &trail_type, -EBADMSG);
}

Test(node, join_with_twin_descriptors_of_one_wire_type_succeeds)
{
	check_join(&seq_type, &seq_type, &seq_type_twin, &seq_type_twin, 0);
}

/* ==== an endpoint whose peer is remote moves back to it ================ */

/*
 * Endpoints cross processes as ports (tests/test_ports.c); one whose peer
 * is itself in another process moves through a forwarder in the sending
 * process (tests/test_moves.c). Here the driver's receiver goes back to
 * the peer, whose own sender feeds it. The peer serves each fd it gets,
 * counts the messages, and posts on the sync socket the count plus 100
 * if its own report could no longer be sent.
 */
static int ep_peer(cmesh_sender *tx, cmesh_receiver *rx,
		   const struct topo_side *s)
{
	struct epmsg m;
	struct seqmsg n = { 0 };
	int r;

	while ((r = peer_recv(rx, &m, NULL, 0)) == 0) {
		TOPO_CHECK(!m.tx && !m.otx && !m.orx);
		if (m.rx) {
			/* Our own sender's receiver, home through the driver. */
			struct seqmsg v = { .seq = 42 }, w;

			TOPO_CHECK_EQ(cmesh_sender_send(tx, &v, NULL, 0), 0);
			TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(
					      m.rx, topo_deadline(), &w, NULL,
					      0),
				      0);
			TOPO_CHECK_EQ(w.seq, 42);
			cmesh_receiver_free(m.rx);
		}
		if (m.fd >= 0) {
			TOPO_CHECK_EQ(write(m.fd, "ok", 2), 2);
			close(m.fd);
		}
		n.seq++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	r = cmesh_sender_send(tx, &n, NULL, 0);
	TOPO_CHECK(r == 0 || r == -EPIPE);
	TOPO_CHECK_EQ(topo_post(s->sync, (uint8_t)(n.seq + (r ? 100 : 0))), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void ep_driver(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	struct epmsg m;
	char buf[2];
	int p[2], r;

	/* The link works, fds travel, endpoints NULL. */
	tu_pipe(p);
	m = (struct epmsg){ .fd = p[1] };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	read_all(p[0], buf, 2);
	cr_assert(tu_pipe_sees_eof(p[0], 5000));
	close(p[0]);
	/* rx is fed from the peer: it goes back there, with an fd. */
	tu_pipe(p);
	m = (struct epmsg){ .fd = p[1], .rx = rx };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	read_all(p[0], buf, 2);
	cr_assert(tu_pipe_sees_eof(p[0], 5000), "the message's fd not closed");
	close(p[0]);
	cmesh_sender_free(tx);
	/* Two messages; the report went, or met the receiver it freed. */
	r = topo_wait(s->sync, TOPO_WAIT_MS);
	cr_assert(r == 2 || r == 102, "the peer posted %d", r);
}

static const struct topo_scenario endpoints = {
	.down = &ep_type,
	.up = &seq_type,
	.driver = ep_driver,
	.peer = ep_peer,
};

Test(node, endpoint_whose_peer_is_remote_moves_back_to_it)
{
	topo_run(&endpoints, TOPO_FORK);
}

/* ==== peer failure ==================================================== */

#define DEATH_N 500u
#define DEATH_OOL_EVERY 50u

/* DEATH_N numbered messages, every DEATH_OOL_EVERY-th out of line. */
static int send_numbered(cmesh_sender *tx)
{
	static unsigned char trail[20000];

	for (uint64_t i = 0; i < DEATH_N; i++) {
		struct trailmsg m = { .seq = i };

		m.len = i % DEATH_OOL_EVERY == 0 ? sizeof(trail) : 0;
		tu_fill(trail, m.len, (uint32_t)i);
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, trail, m.len), 0);
	}
	return 0;
}

static void recv_numbered(cmesh_receiver *rx)
{
	static unsigned char trail[20000];

	for (uint64_t i = 0; i < DEATH_N; i++) {
		struct trailmsg m;
		int r = recv_wait(rx, &m, trail, sizeof(trail));

		cr_assert(r >= 0, "message %llu: %d (%s)",
			  (unsigned long long)i, r, cmesh_strerror(r));
		cr_assert_eq(m.seq, i);
		cr_assert_eq((uint64_t)r, m.len);
		cr_assert_eq(tu_check(trail, m.len, (uint32_t)i), m.len);
	}
}

/* After the receiver reported the failure, sends fail the same way. */
static void expect_failed(cmesh_sender *tx, cmesh_receiver *rx, int err)
{
	struct trailmsg m = { 0 };
	int64_t t0 = tu_now_ns();

	expect_end(rx, err);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(5000));
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), err);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int killself_peer(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	(void)rx;
	(void)s;
	if (send_numbered(tx))
		return 1;
	raise(SIGKILL);
	return 1;
}

static void killself_driver(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	(void)s;
	recv_numbered(rx);
	expect_failed(tx, rx, -ECONNRESET);
}

static const struct topo_scenario killself = {
	.down = &trail_type,
	.up = &trail_type,
	.ring_size = 65536, /* DEATH_N records fit: nothing spills */
	.driver = killself_driver,
	.peer = killself_peer,
};

static void assert_killed(pid_t pid)
{
	int st = topo_reap(pid, TOPO_WAIT_MS);

	cr_assert(st != -ETIMEDOUT && WIFSIGNALED(st) &&
			  WTERMSIG(st) == SIGKILL,
		  "child status %#x, want killed by SIGKILL", st);
}

Test(node, peer_killed_mid_stream_delivers_what_it_published_then_econnreset)
{
	struct topo_res res;
	struct topo_side side = { 0 };
	struct topo_conn c;

	topo_baseline(&res);
	topo_fork_peer(&killself, TOPO_FORK, &c);
	side.sync = c.sync;
	/* The receiver reads while the child sends and dies. */
	killself_driver(c.tx, c.rx, &side);
	assert_killed(c.pid);
	close(c.sync);
	topo_assert_baseline(&res);
}

/* Sends, says so ('k'), then waits in recv until it is killed. */
static int blocked_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	struct trailmsg m;

	if (send_numbered(tx))
		return 1;
	TOPO_CHECK_EQ(topo_post(s->sync, 'k'), 0);
	cmesh_receiver_recv(rx, &m, NULL, 0);
	return 1;
}

static const struct topo_scenario blocked = {
	.down = &trail_type,
	.up = &trail_type,
	.ring_size = 65536,
	.peer = blocked_peer,
};

Test(node, peer_killed_while_blocked_gives_econnreset_after_its_messages)
{
	struct topo_res res;
	struct topo_conn c;

	topo_baseline(&res);
	topo_fork_peer(&blocked, TOPO_FORK, &c);
	TU_ASSERT_RC(topo_wait(c.sync, TOPO_WAIT_MS), 'k');
	cr_assert_eq(kill(c.pid, SIGKILL), 0);
	assert_killed(c.pid);
	/* Everything it published is still delivered, then the failure. */
	recv_numbered(c.rx);
	expect_failed(c.tx, c.rx, -ECONNRESET);
	close(c.sync);
	topo_assert_baseline(&res);
}

/* Sends, then exits without freeing anything. */
static int exiting_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	(void)rx;
	(void)s;
	if (send_numbered(tx))
		return 1;
	_exit(0);
}

static const struct topo_scenario exiting = {
	.down = &trail_type,
	.up = &trail_type,
	.ring_size = 65536,
	.peer = exiting_peer,
};

Test(node, peer_exiting_without_freeing_gives_econnreset_after_its_messages)
{
	struct topo_res res;
	struct topo_conn c;

	topo_baseline(&res);
	topo_fork_peer(&exiting, TOPO_FORK, &c);
	recv_numbered(c.rx);
	expect_failed(c.tx, c.rx, -ECONNRESET);
	topo_assert_exit_0(c.pid, TOPO_WAIT_MS);
	close(c.sync);
	topo_assert_baseline(&res);
}

/*
 * Sends, forks a grandchild that keeps a copy of its end of the control
 * socket for DEATH_HOLD_MS (telling the driver its pid), then exits
 * without freeing anything: the socket does not hang up, the process is
 * gone all the same.
 */
#define DEATH_HOLD_MS 3000u

static int inheriting_peer(cmesh_sender *tx, cmesh_receiver *rx,
			   const struct topo_side *s)
{
	pid_t g;

	(void)rx;
	if (send_numbered(tx))
		return 1;
	g = fork();
	TOPO_CHECK(g >= 0);
	if (g == 0) {
		tu_sleep_ms(DEATH_HOLD_MS);
		_exit(0);
	}
	TOPO_CHECK_EQ(write(s->sync, &g, sizeof(g)), (ssize_t)sizeof(g));
	_exit(0);
}

static const struct topo_scenario inheriting = {
	.down = &trail_type,
	.up = &trail_type,
	.ring_size = 65536,
	.peer = inheriting_peer,
};

/*
 * A peer whose control socket lives on in a child it forked is reported
 * dead when it exits (its pidfd; the socket hangs up only DEATH_HOLD_MS
 * later): after its messages, -ECONNRESET well before that. Over
 * listen/connect, where the kernel names the peer (SO_PEERCRED), and over
 * a socketpair whose creator passes the pid it forked (peer_pid).
 */
static void check_inheriting(enum topo_kind kind)
{
	struct topo_res res;
	struct topo_conn c;
	int64_t t0;
	pid_t g;

	topo_baseline(&res);
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	t0 = tu_now_ns();
	topo_fork_peer(&inheriting, kind, &c);
	cr_assert_eq(read(c.sync, &g, sizeof(g)), (ssize_t)sizeof(g));
	recv_numbered(c.rx);
	expect_failed(c.tx, c.rx, -ECONNRESET);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(DEATH_HOLD_MS) * 2 / 3,
		     "the death was seen only when the socket hung up");
	topo_assert_exit_0(c.pid, TOPO_WAIT_MS);
	kill(g, SIGKILL);
	topo_reap(g, TOPO_WAIT_MS);
	close(c.sync);
	topo_assert_baseline(&res);
}

Test(node, peer_dying_with_its_socket_held_elsewhere_is_econnreset_listen)
{
	check_inheriting(TOPO_LISTEN);
}

Test(node, peer_dying_with_its_socket_held_elsewhere_is_econnreset_fork)
{
	check_inheriting(TOPO_FORK);
}

/*
 * Worker of the supervisor test: joins over `sock` (no peer_pid: it did
 * not fork its peer), waits until the supervisor that made the pair and
 * forked it is gone, then exchanges 100 round trips with its peer: the
 * supervisor's exit is no death of the peer. Exit 0 on success.
 */
static int supervised_worker(int sock, bool first, pid_t supervisor)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m = { 0 };
	int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);

	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &seq_type, &seq_type, NULL,
					     &node, &tx, &rx),
		      0);
	while (getppid() == supervisor && tu_now_ns() < end)
		tu_sleep_ms(1);
	TOPO_CHECK(getppid() != supervisor);
	tu_sleep_ms(50); /* time for a (wrong) death report to arrive */
	for (uint64_t i = 0; i < 100; i++) {
		if (first) {
			m.seq = i;
			TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
			TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), 0);
			TOPO_CHECK_EQ(m.seq, i + 1);
		} else {
			TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), 0);
			m.seq++;
			TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
		}
	}
	cmesh_node_free(node);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

/*
 * A supervisor makes a socketpair, forks two workers that join over it,
 * and exits. A socketpair's SO_PEERCRED names the supervisor, not the
 * peer: the links must not take its exit for the peer's death.
 */
Test(node, a_supervisor_that_made_the_pair_exiting_is_no_peer_death)
{
	pid_t sup, a = -1, b = -1;
	int st;

	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	sup = topo_fork();
	if (sup == 0) {
		pid_t me = getpid();
		int sv[2];

		topo_sync_pair(sv);
		if (fork() == 0) {
			close(sv[1]);
			_exit(supervised_worker(sv[0], true, me));
		}
		if (fork() == 0) {
			close(sv[0]);
			_exit(supervised_worker(sv[1], false, me));
		}
		_exit(0);
	}
	topo_assert_exit_0(sup, TOPO_WAIT_MS);
	for (int i = 0; i < 2; i++) {
		pid_t w = waitpid(-1, &st, 0);

		cr_assert_gt(w, 0, "waitpid: %s", strerror(errno));
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
			  "worker %d: status %#x", (int)w, st);
		if (i)
			b = w;
		else
			a = w;
	}
	cr_assert_neq(a, b);
}

/* ==== spawn / join ====================================================== */

/* Reaps any child within `ms`: its pid and *status, or -1. */
static pid_t reap_any(unsigned ms, int *status)
{
	int64_t end = tu_now_ns() + TU_MS(ms);
	pid_t w;

	do {
		w = waitpid(-1, status, WNOHANG);
		if (w != 0)
			return w;
		tu_sleep_ms(1);
	} while (tu_now_ns() < end);
	return -1;
}

Test(node, spawn_starts_the_echo_program_which_joins_and_echoes)
{
	static unsigned char out[1u << 20], in[1u << 20];
	char *argv[] = { ECHO_PATH, "echo-argv", NULL };
	struct topo_res res;
	struct topo_echo_msg m;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	char buf[4];
	int p[2], r, st = 0;
	pid_t pid, reaped;

	topo_baseline(&res);
	unsetenv(CMESH_INVITE_ENV);
	TU_ASSERT_RC(cmesh_spawn(ECHO_PATH, argv, &echo_type, &echo_type, NULL,
				 &node, &tx, &rx),
		     0);
	cr_assert_null(getenv(CMESH_INVITE_ENV),
		       "spawn set the invitation in the parent's environment");
	pid = cmesh_node_pid(node);
	cr_assert_gt(pid, 0);
	cmesh_node_free(node);

	/* Trailing bytes in line, out of line, and 1 MiB. */
	for (uint32_t i = 0; i <= 100; i++) {
		uint32_t len = i == 100 ? sizeof(out) : i * 97;

		m = (struct topo_echo_msg){ .seq = i, .len = len, .fd = -1 };
		tu_fill(out, len, i);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, out, len), 0);
		memset(&m, 0, sizeof(m));
		r = recv_wait(rx, &m, in, sizeof(in));
		cr_assert_eq(r, (int)len, "echo %u: %d (%s)", i, r,
			     cmesh_strerror(r));
		cr_assert(m.seq == i && m.len == len && m.fd == -1);
		cr_assert_eq(tu_check(in, len, i), len);
	}

	/* An fd goes there and back and still works. */
	tu_pipe(p);
	m = (struct topo_echo_msg){ .seq = 1000, .fd = p[1] };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(recv_wait(rx, &m, NULL, 0), 0);
	cr_assert_eq(m.seq, 1000);
	cr_assert(m.fd >= 0 && cloexec(m.fd));
	cr_assert_eq(write(m.fd, "abc", 3), 3);
	close(m.fd);
	read_all(p[0], buf, 3);
	cr_assert(tu_pipe_sees_eof(p[0], 5000));
	close(p[0]);

	/* Closing our sender ends the echo loop; the child frees and exits. */
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_receiver_free(rx);
	reaped = reap_any(TOPO_WAIT_MS, &st);
	cr_assert(reaped > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "echo child: pid %d status %#x", (int)reaped, st);
	topo_assert_baseline(&res);
	/* The caller reaps a spawned child: the node must name it. */
	cr_assert_eq(pid, reaped,
		     "cmesh_node_pid() after cmesh_spawn() is %d, the child "
		     "was %d (this process is %d)",
		     (int)pid, (int)reaped, (int)getpid());
}

Test(node, node_pid_names_the_peer_after_a_socketpair_join_across_fork)
{
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2];
	pid_t pid, np;

	topo_baseline(&res);
	topo_sync_pair(sv);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		topo_child_exit(join_child(sv[1], &seq_type, &seq_type, 0));
	}
	close(sv[1]);
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &seq_type, &seq_type, NULL,
					    &node, &tx, &rx),
		     0);
	np = cmesh_node_pid(node);
	expect_seq(rx, 7, 7);
	cmesh_sender_free(tx);
	expect_end(rx, -EPIPE);
	cmesh_node_free(node);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	topo_assert_baseline(&res);
	cr_assert_eq(np, pid,
		     "cmesh_node_pid() is %d, the peer is %d (this "
		     "process is %d)",
		     (int)np, (int)pid, (int)getpid());
}

Test(node, join_without_an_invitation_returns_enoent)
{
	struct topo_res res;
	cmesh_node *node = NULL;
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;

	topo_baseline(&res);
	unsetenv(CMESH_INVITE_ENV);
	TU_ASSERT_RC(cmesh_join(&seq_type, &seq_type, NULL, &node, &tx, &rx),
		     -ENOENT);
	topo_assert_baseline(&res);
}

Test(node, join_with_an_invitation_naming_no_socket_returns_einval)
{
	static const char *const bad[] = { "",		"x",   "-1", "12x",
					   "999999999", "1000" /* not open */ };
	struct topo_res res;
	cmesh_node *node = NULL;
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;
	char num[16];
	int p[2], sv[2];

	topo_baseline(&res);
	cr_assert_not(tu_fd_is_open(1000));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv(CMESH_INVITE_ENV, bad[i], 1);
		TU_ASSERT_RC(cmesh_join(&seq_type, &seq_type, NULL, &node, &tx,
					&rx),
			     -EINVAL);
	}
	/* An open fd, but a pipe; a socket, but a stream one. */
	tu_pipe(p);
	snprintf(num, sizeof(num), "%d", p[0]);
	setenv(CMESH_INVITE_ENV, num, 1);
	TU_ASSERT_RC(cmesh_join(&seq_type, &seq_type, NULL, &node, &tx, &rx),
		     -EINVAL);
	cr_assert(tu_fd_is_open(p[0]), "join closed an fd it did not take");
	close(p[0]);
	close(p[1]);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	snprintf(num, sizeof(num), "%d", sv[0]);
	setenv(CMESH_INVITE_ENV, num, 1);
	TU_ASSERT_RC(cmesh_join(&seq_type, &seq_type, NULL, &node, &tx, &rx),
		     -EINVAL);
	close(sv[0]);
	close(sv[1]);
	unsetenv(CMESH_INVITE_ENV);
	topo_assert_baseline(&res);
}

/* True if this process has a child left to reap (a zombie or running). */
static bool has_child(void)
{
	siginfo_t si = { 0 };

	return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/*
 * A path that does not exist: -ENOENT (node.c checks access(X_OK) before
 * it forks, so no child is ever made), nothing left open or to reap.
 */
Test(node, spawn_of_a_missing_path_returns_enoent_and_leaves_nothing)
{
	char *argv[] = { "nonexistent", NULL };
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;

	topo_baseline(&res);
	TU_ASSERT_RC(cmesh_spawn("/nonexistent/cmesh-test-prog", argv,
				 &seq_type, &seq_type, NULL, &node, &tx, &rx),
		     -ENOENT);
	cr_assert_not(has_child(), "spawn left a child to reap");
	topo_assert_baseline(&res);
}

/* A file in a fresh temporary directory; the caller unlinks both. */
static void temp_file(char *dir, char *path, size_t len, const char *text,
		      mode_t mode)
{
	int fd;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, len, "%s/prog", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cr_assert_eq(chmod(path, mode), 0);
}

/*
 * cmesh_spawn() of a temporary file holding `text` with `mode` fails with
 * `want` and leaves no child, fd or mapping behind.
 */
static int spawn_temp_fails(const char *text, mode_t mode, int want)
{
	char dir[] = "/tmp/cmesh-node-XXXXXX", path[64];
	char *argv[] = { "prog", NULL };
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int status = 12345;

	topo_baseline(&res);
	temp_file(dir, path, sizeof(path), text, mode);
	o.exit_status = &status;
	TU_ASSERT_RC(cmesh_spawn(path, argv, &seq_type, &seq_type, &o, &node,
				 &tx, &rx),
		     want);
	cr_assert_not(has_child(), "spawn left a child to reap");
	unlink(path);
	rmdir(dir);
	topo_assert_baseline(&res);
	return status;
}

Test(node, spawn_of_a_file_without_exec_permission_returns_eacces)
{
	cr_assert_eq(spawn_temp_fails("#!/bin/sh\nexit 0\n", 0644, -EACCES), -1,
		     "an exit status for a child never started");
}

Test(node, spawn_of_a_program_that_exits_without_joining_reports_its_status)
{
	int st = spawn_temp_fails("#!/bin/sh\nexit 3\n", 0755, -ECHILD);

	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 3,
		  "status %#x, want exit 3", st);
	st = spawn_temp_fails("#!/bin/sh\nkill -TERM $$\n", 0755, -ECHILD);
	cr_assert(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM,
		  "status %#x, want killed by SIGTERM", st);
}

Test(node, spawn_of_an_executable_that_execve_rejects_returns_enoexec)
{
	char dir[] = "/tmp/cmesh-node-XXXXXX", path[64];
	char *argv[] = { "prog", NULL };
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;

	topo_baseline(&res);
	/* Executable, but neither ELF nor a script: execve says ENOEXEC. */
	temp_file(dir, path, sizeof(path), "\x01\x02garbage\n", 0755);
	for (int i = 0; i < 20; i++) {
		int r = cmesh_spawn(path, argv, &seq_type, &seq_type, NULL,
				    &node, &tx, &rx);

		/* node.c reports an exec failure (exit 127) as -ENOEXEC. */
		cr_assert_eq(r, -ENOEXEC, "attempt %d: %d (%s)", i, r,
			     cmesh_strerror(r));
		cr_assert_not(has_child(), "spawn left a child to reap");
	}
	unlink(path);
	rmdir(dir);
	topo_assert_baseline(&res);
}

/* Frees its receiver, says 'c', waits for 'x', exits without freeing. */
static int closer_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	(void)tx;
	cmesh_receiver_free(rx);
	TOPO_CHECK_EQ(topo_post(s->sync, 'c'), 0);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'x');
	_exit(0);
}

static const struct topo_scenario closer = {
	.down = &seq_type,
	.up = &seq_type,
	.peer = closer_peer,
};

/*
 * A sender whose receiver is gone gets -EPIPE, and still -EPIPE once the
 * receiver's process has exited too (not the link's -ECONNRESET): what
 * it learnt first stays true.
 */
Test(node, epipe_stays_epipe_after_the_peer_process_exits)
{
	struct topo_res res;
	struct topo_conn c;
	struct seqmsg m = { 0 };

	topo_baseline(&res);
	topo_fork_peer(&closer, TOPO_FORK, &c);
	cr_assert_eq(topo_wait(c.sync, TOPO_WAIT_MS), 'c');
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), -EPIPE);
	cr_assert_eq(topo_post(c.sync, 'x'), 0);
	topo_assert_exit_0(c.pid, TOPO_WAIT_MS);
	/* The link has failed once the receive side says so. */
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(c.rx, topo_deadline(), &m,
						  NULL, 0),
		     -ECONNRESET);
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), -EPIPE);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	topo_assert_baseline(&res);
}

/* ---- nothing lost at exit ---- */

#define BURST_PATH CMESH_TEST_PROG_DIR "/test_prog_burst"

CMESH_TYPE_DEFINE_PLAIN(burst_type, struct topo_burst_msg);

/*
 * Spawns burst MODE with n messages; reads nothing for `delay_ms` (the
 * child sends them all meanwhile: the ring holds a few, the backlog the
 * rest), or until the child has exited (delay_ms 0); then reads what
 * arrives. Returns how many, and the error that ended the reading.
 */
static uint64_t burst_run(const char *mode, uint64_t n, unsigned delay_ms,
			  int *end)
{
	char count[32], *argv[] = { BURST_PATH, (char *)mode, count, NULL };
	struct topo_burst_msg m;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	uint64_t got = 0;
	pid_t pid;
	int r;

	snprintf(count, sizeof(count), "%llu", (unsigned long long)n);
	TU_ASSERT_RC(cmesh_spawn(BURST_PATH, argv, &burst_type, &burst_type,
				 NULL, &node, &tx, &rx),
		     0);
	pid = cmesh_node_pid(node);
	cmesh_node_free(node);
	if (delay_ms)
		tu_sleep_ms(delay_ms);
	else
		topo_assert_exit_0(pid, TOPO_WAIT_MS);
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		cr_assert_eq(m.seq, got, "message %llu after %llu",
			     (unsigned long long)m.seq,
			     (unsigned long long)got);
		got++;
	}
	*end = r;
	if (delay_ms)
		topo_assert_exit_0(pid, TOPO_WAIT_MS);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return got;
}

/*
 * A child that sends 200,000 messages (far more than its ring holds: the
 * rest wait in its backlog), frees its sender, flushes its node and
 * returns from main loses none: all arrive, in order, then "closed".
 */
Test(node, a_child_that_flushes_before_exit_loses_nothing)
{
	uint64_t n = tu_stress(200000, 1000);
	int end;

	cr_assert_eq(burst_run("flush", n, 100, &end), n);
	TU_ASSERT_RC(end, -EPIPE);
}

/*
 * Without the flush, what was still in the backlog when it returned from
 * main is gone: what its ring held arrives, then -ECONNRESET. (Why
 * channel.h documents the exit pattern.)
 */
Test(node, a_child_that_exits_without_flushing_loses_its_backlog)
{
	uint64_t n = tu_stress(200000, 1000), got;
	int end;

	got = burst_run("exit", n, 0, &end);
	cr_assert_lt(got, n, "all %llu arrived", (unsigned long long)n);
	TU_ASSERT_RC(end, -ECONNRESET);
}

/* Sends nothing; reads nothing until 'r', then everything until closed. */
static int late_reader_peer(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	struct seqmsg m;
	uint64_t k = 0;
	int r;

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'r');
	while ((r = peer_recv(rx, &m, NULL, 0)) == 0)
		TOPO_CHECK_EQ(m.seq, k++);
	TOPO_CHECK_EQ(r, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario late_reader = {
	.down = &seq_type,
	.up = &seq_type,
	.ring_size = 4096,
	.peer = late_reader_peer,
};

/*
 * Flush across processes: with a backlog and a peer that does not read,
 * -ETIMEDOUT at its deadline; once the peer reads, 0; in one process at
 * once; NULL is -EINVAL.
 */
Test(node, flush_waits_for_the_backlog_to_reach_the_ring)
{
	struct topo_res res;
	struct topo_conn c;
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	int64_t t0;

	topo_baseline(&res);
	topo_fork_peer(&late_reader, TOPO_FORK, &c);
	for (uint64_t i = 0; i < 1000; i++)
		send_seq(c.tx, 0, i);
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_sender_flush(c.tx, cmesh_deadline_after(TU_MS(20))),
		     -ETIMEDOUT);
	cr_assert_geq(tu_now_ns() - t0, TU_MS(20));
	cr_assert_eq(topo_post(c.sync, 'r'), 0);
	TU_ASSERT_RC(cmesh_sender_flush(c.tx, topo_deadline()), 0);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	topo_bye(c.sync);
	topo_assert_exit_0(c.pid, TOPO_WAIT_MS);
	close(c.sync);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	send_seq(ltx, 0, 0);
	TU_ASSERT_RC(cmesh_sender_flush(ltx, 0), 0);
	TU_ASSERT_RC(cmesh_sender_flush(NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_node_flush(NULL, 0), -EINVAL);
	cmesh_sender_free(ltx);
	cmesh_receiver_free(lrx);
	topo_assert_baseline(&res);
}

/* ---- what a spawned child starts with ---- */

#define INSPECT_PATH CMESH_TEST_PROG_DIR "/test_prog_inspect"

CMESH_TYPE_DEFINE_PLAIN(inspect_type, struct topo_inspect_msg);

/* Spawns inspect `mode` with `flags` and reads its report (asserts). */
static pid_t spawn_inspect(const char *mode, uint32_t flags,
			   struct topo_inspect_msg *rep, cmesh_sender **tx,
			   cmesh_receiver **rx)
{
	char *argv[] = { INSPECT_PATH, (char *)mode, NULL };
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	pid_t pid;

	o.flags = flags;
	TU_ASSERT_RC(cmesh_spawn(INSPECT_PATH, argv, &inspect_type,
				 &inspect_type, &o, &node, tx, rx),
		     0);
	pid = cmesh_node_pid(node);
	cmesh_node_free(node);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(*rx, topo_deadline(), rep,
						  NULL, 0),
		     0);
	return pid;
}

/*
 * A spawned child starts clean whatever this process left behind: fds
 * without close-on-exec do not reach it (only 0-2 and its invitation),
 * a signal blocked or ignored here is neither there, and it has no
 * parent-death signal unless asked.
 */
Test(node, spawn_gives_the_child_only_its_fds_and_a_clean_signal_state)
{
	struct topo_inspect_msg rep;
	struct sigaction ign = { .sa_handler = SIG_IGN }, old_sa;
	sigset_t usr1, old_mask;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int p[2], efd;
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	efd = eventfd(0, 0);
	cr_assert_geq(efd, 0);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
	sigaction(SIGUSR2, &ign, &old_sa);
	pid = spawn_inspect("report", 0, &rep, &tx, &rx);
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	sigaction(SIGUSR2, &old_sa, NULL);
	cr_assert_eq(rep.extra_fds, 0, "the child inherited %d more fds",
		     rep.extra_fds);
	cr_assert_eq(rep.blocked, 0, "blocked: %#llx",
		     (unsigned long long)rep.blocked);
	cr_assert_eq(rep.ignored, 0, "ignored: %#llx",
		     (unsigned long long)rep.ignored);
	cr_assert_eq(rep.pdeathsig, 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	close(p[0]);
	close(p[1]);
	close(efd);
}

struct pdeath_arg {
	pid_t pid;
	struct topo_inspect_msg rep;
};

/* Spawns a lingering child with CMESH_NODE_PDEATHSIG, then exits. */
static void *pdeath_thread(void *arg)
{
	struct pdeath_arg *a = arg;
	cmesh_sender *tx;
	cmesh_receiver *rx;

	a->pid = spawn_inspect("linger", CMESH_NODE_PDEATHSIG, &a->rep, &tx,
			       &rx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return NULL;
}

/*
 * With CMESH_NODE_PDEATHSIG the child dies with the thread that spawned
 * it: killed by SIGKILL as that thread exits, not 5 s later when it
 * would have exited by itself.
 */
Test(node, spawn_with_pdeathsig_child_dies_with_the_spawning_thread)
{
	struct pdeath_arg a = { 0 };
	pthread_t t;
	int st;

	cr_assert_eq(pthread_create(&t, NULL, pdeath_thread, &a), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(a.rep.pdeathsig, SIGKILL);
	st = topo_reap(a.pid, 3000);
	cr_assert(st != -ETIMEDOUT && WIFSIGNALED(st) &&
			  WTERMSIG(st) == SIGKILL,
		  "child status %#x, want killed by SIGKILL", st);
}

Test(node, pdeathsig_is_for_spawn_only_and_unknown_flags_are_einval)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	char *argv[] = { INSPECT_PATH, "report", NULL };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2];

	o.flags = CMESH_NODE_PDEATHSIG;
	topo_sync_pair(sv);
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &seq_type, &seq_type, &o,
					    &node, &tx, &rx),
		     -EINVAL);
	close(sv[1]);
	o.flags = 2;
	TU_ASSERT_RC(cmesh_spawn(INSPECT_PATH, argv, &inspect_type,
				 &inspect_type, &o, &node, &tx, &rx),
		     -EINVAL);
	cr_assert_not(has_child(), "spawn left a child to reap");
}

/* The thread named `name` of this process, or -1. */
static pid_t thread_named(const char *name)
{
	pid_t tid;

	cr_assert_geq(tu_threads_named(name, &tid), 0);
	return tid;
}

/* The SigBlk mask of thread `tid` of this process. */
static uint64_t thread_blocked(pid_t tid)
{
	char path[64], line[128];
	uint64_t mask = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	f = fopen(path, "re");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "SigBlk:", 7) == 0)
			mask = strtoull(line + 7, NULL, 16);
	fclose(f);
	return mask;
}

/*
 * A link's thread is named "cmesh-link" and blocks every signal: the
 * application's handlers run on its own threads.
 */
Test(node, the_link_thread_is_named_and_blocks_every_signal)
{
	struct topo_inspect_msg rep;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	uint64_t want = 0;
	pid_t pid, tid;

	pid = spawn_inspect("report", 0, &rep, &tx, &rx);
	tid = thread_named("cmesh-link");
	cr_assert_gt(tid, 0, "no thread named cmesh-link");
	for (int sig = 1; sig < 32; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			want |= 1ull << (sig - 1);
	cr_assert_eq(thread_blocked(tid) & want, want, "SigBlk %#llx",
		     (unsigned long long)thread_blocked(tid));
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
}

/* ==== listen / connect ================================================== */

/* A listening path in a fresh temporary directory. */
struct tmp_sock {
	char dir[32];
	char path[64];
};

static void tmp_sock(struct tmp_sock *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/cmesh-node-XXXXXX");
	cr_assert_not_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/sock", t->dir);
}

static void tmp_sock_done(struct tmp_sock *t)
{
	unlink(t->path);
	cr_assert_eq(rmdir(t->dir), 0, "rmdir %s: %s", t->dir, strerror(errno));
}

/* Child: connects to `path` (its listener fd closed first), expects. */
static int connect_child(cmesh_listener *l, const char *path, bool refused)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m = { 3, 0, 3 };
	int r;

	close(cmesh_listener_fd(l));
	o.timeout_ns = TU_MS(10000);
	r = cmesh_connect(path, &seq_type, &seq_type, &o, &node, &tx, &rx);
	if (refused) {
		if (r == -ECONNRESET || r == -EPROTO)
			return 0;
		topo_fail(__FILE__, __LINE__, "refused connect", r,
			  -ECONNRESET);
		return 1;
	}
	TOPO_CHECK_EQ(r, 0);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_node_free(node);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

/* Listens with `lo`, forks a connecting child, accepts: returns rc. */
static int accept_one(const cmesh_listen_opts *lo, bool refused)
{
	struct tmp_sock t;
	cmesh_listener *l;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct pollfd p;
	pid_t pid;
	int r;

	tmp_sock(&t);
	TU_ASSERT_RC(cmesh_listen(t.path, lo, &l), 0);
	p = (struct pollfd){ .fd = cmesh_listener_fd(l), .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 0), 0, "listener readable with no peer");
	pid = topo_fork();
	if (pid == 0)
		topo_child_exit(connect_child(l, t.path, refused));
	/* The listener fd polls readable once a peer waits. */
	cr_assert_eq(poll(&p, 1, (int)TOPO_WAIT_MS), 1);
	cr_assert(p.revents & POLLIN);
	r = cmesh_listener_accept(l, topo_deadline(), &seq_type, &seq_type,
				  NULL, &node, &tx, &rx);
	if (r == 0) {
		cr_assert_eq(cmesh_node_pid(node), pid);
		expect_seq(rx, 3, 3);
		cmesh_sender_free(tx);
		cmesh_node_free(node);
		cmesh_receiver_free(rx);
	}
	/* No one else is waiting: accept times out. */
	TU_ASSERT_RC(cmesh_listener_accept(l, cmesh_deadline_after(TU_MS(50)),
					   &seq_type, &seq_type, NULL, &node,
					   &tx, &rx),
		     -ETIMEDOUT);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	cmesh_listener_free(l);
	cr_assert_eq(access(t.path, F_OK), -1, "listener_free left the path");
	tmp_sock_done(&t);
	return r;
}

/* A client socket connected to `path` that never says anything. */
static int silent_client(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	cr_assert(s >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return s;
}

Test(node, listener_is_not_held_up_by_clients_that_never_speak)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct topo_res res;
	struct tmp_sock t;
	cmesh_listener *l;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct pollfd p;
	int silent[3];
	char c;
	int64_t t0;
	pid_t pid;

	topo_baseline(&res);
	tmp_sock(&t);
	TU_ASSERT_RC(cmesh_listen(t.path, NULL, &l), 0);
	/* Three clients connect first and never say HELLO. */
	for (int i = 0; i < 3; i++)
		silent[i] = silent_client(t.path);
	pid = topo_fork();
	if (pid == 0) {
		for (int i = 0; i < 3; i++)
			close(silent[i]);
		topo_child_exit(connect_child(l, t.path, false));
	}
	/* The speaking one is joined at once, not after their 1 s limit. */
	t0 = tu_now_ns();
	o.timeout_ns = TU_MS(1000);
	TU_ASSERT_RC(cmesh_listener_accept(l, topo_deadline(), &seq_type,
					   &seq_type, &o, &node, &tx, &rx),
		     0);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(900),
		     "accept waited on the silent clients");
	cr_assert_eq(cmesh_node_pid(node), pid);
	expect_seq(rx, 3, 3);
	cmesh_sender_free(tx);
	cmesh_node_free(node);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	/* The silent ones are closed once their handshake limit passed. */
	TU_ASSERT_RC(cmesh_listener_accept(l, cmesh_deadline_after(TU_MS(1500)),
					   &seq_type, &seq_type, &o, &node, &tx,
					   &rx),
		     -ETIMEDOUT);
	for (int i = 0; i < 3; i++) {
		p = (struct pollfd){ .fd = silent[i], .events = POLLIN };
		cr_assert_eq(poll(&p, 1, (int)TOPO_WAIT_MS), 1);
		cr_assert_eq(recv(silent[i], &c, 1, MSG_DONTWAIT), 0,
			     "a silent client was not hung up on");
		close(silent[i]);
	}
	cmesh_listener_free(l);
	tmp_sock_done(&t);
	topo_assert_baseline(&res);
}

/*
 * "A peer that connects and does not begin its handshake holds nothing
 * up": one that connects and closes at once (a probe, a client killed)
 * should not make the accept fail while a real client waits to join.
 */
Test(node, a_client_that_hangs_up_unheard_does_not_fail_the_accept)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct tmp_sock t;
	const char *path = t.path;
	cmesh_listener *l;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int s, sy[2], r;
	pid_t pid;

	tmp_sock(&t);
	TU_ASSERT_RC(cmesh_listen(path, NULL, &l), 0);
	/* The probe: connects, and is gone before the accept. */
	s = silent_client(path);
	/* A real client, which joins and waits to be told to go. */
	topo_sync_pair(sy);
	pid = topo_fork();
	if (pid == 0) {
		close(cmesh_listener_fd(l));
		close(sy[0]);
		close(s);
		o.timeout_ns = TU_MS(5000);
		r = cmesh_connect(path, &seq_type, &seq_type, &o, &node, &tx,
				  &rx);
		if (r == 0) {
			topo_wait(sy[1], TOPO_WAIT_MS);
			cmesh_sender_free(tx);
			cmesh_receiver_free(rx);
			cmesh_node_free(node);
		}
		topo_child_exit(r);
	}
	close(sy[1]);
	close(s);
	o.timeout_ns = TU_MS(5000);
	r = cmesh_listener_accept(l, topo_deadline(), &seq_type, &seq_type, &o,
				  &node, &tx, &rx);
	if (r == 0) {
		topo_post(sy[0], 'x');
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
		cmesh_node_free(node);
	} else {
		/* The next accept does join the waiting client. */
		TU_ASSERT_RC(cmesh_listener_accept(l, topo_deadline(),
						   &seq_type, &seq_type, &o,
						   &node, &tx, &rx),
			     0);
		topo_post(sy[0], 'x');
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
		cmesh_node_free(node);
	}
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	close(sy[0]);
	cmesh_listener_free(l);
	tmp_sock_done(&t);
	cr_assert_eq(r, 0, "the first accept returned %d (%s)", r,
		     cmesh_strerror(r));
}

Test(node, listener_with_no_handshake_limit_still_accepts)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct topo_res res;
	struct tmp_sock t;
	cmesh_listener *l;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	pid_t pid;

	topo_baseline(&res);
	tmp_sock(&t);
	TU_ASSERT_RC(cmesh_listen(t.path, NULL, &l), 0);
	pid = topo_fork();
	if (pid == 0)
		topo_child_exit(connect_child(l, t.path, false));
	o.timeout_ns = INT64_MAX; /* a deadline that saturates */
	TU_ASSERT_RC(cmesh_listener_accept(l, topo_deadline(), &seq_type,
					   &seq_type, &o, &node, &tx, &rx),
		     0);
	expect_seq(rx, 3, 3);
	cmesh_sender_free(tx);
	cmesh_node_free(node);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	cmesh_listener_free(l);
	tmp_sock_done(&t);
	topo_assert_baseline(&res);
}

Test(node, listener_accepts_a_connecting_process_of_our_uid)
{
	struct topo_res res;

	topo_baseline(&res);
	TU_ASSERT_RC(accept_one(NULL, false), 0);
	topo_assert_baseline(&res);
}

Test(node, listener_refuses_a_peer_of_another_uid_with_eperm)
{
	cmesh_listen_opts lo = CMESH_LISTEN_OPTS_INIT;
	struct topo_res res;

	topo_baseline(&res);
	lo.uid = (uint32_t)getuid() + 1;
	TU_ASSERT_RC(accept_one(&lo, true), -EPERM);
	topo_assert_baseline(&res);
}

Test(node, listener_with_any_uid_accepts_whatever_uid_it_names)
{
	cmesh_listen_opts lo = CMESH_LISTEN_OPTS_INIT;
	struct topo_res res;

	topo_baseline(&res);
	lo.uid = (uint32_t)getuid() + 1;
	lo.flags = CMESH_LISTEN_ANY_UID;
	TU_ASSERT_RC(accept_one(&lo, false), 0);
	topo_assert_baseline(&res);
}

Test(node, listen_replaces_a_stale_socket_but_no_other_file)
{
	struct topo_res res;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tmp_sock t;
	cmesh_listener *l;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int s, fd;

	topo_baseline(&res);
	tmp_sock(&t);
	/* A socket file whose listener is gone. */
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_geq(s, 0);
	memcpy(sa.sun_path, t.path, strlen(t.path));
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	TU_ASSERT_RC(cmesh_connect(t.path, &seq_type, &seq_type, NULL, &node,
				   &tx, &rx),
		     -ECONNREFUSED);
	TU_ASSERT_RC(cmesh_listen(t.path, NULL, &l), 0);
	cmesh_listener_free(l);
	cmesh_listener_free(NULL);
	TU_ASSERT_RC(cmesh_listener_fd(NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_connect(t.path, &seq_type, &seq_type, NULL, &node,
				   &tx, &rx),
		     -ENOENT);

	/* A regular file is left alone. */
	fd = open(t.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	TU_ASSERT_RC(cmesh_listen(t.path, NULL, &l), -EADDRINUSE);
	cr_assert_eq(access(t.path, F_OK), 0);
	tmp_sock_done(&t);
	topo_assert_baseline(&res);
}

Test(node, listen_and_connect_reject_bad_paths_and_options)
{
	cmesh_listen_opts lo = CMESH_LISTEN_OPTS_INIT;
	struct topo_res res;
	char longpath[200];
	cmesh_listener *l;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;

	topo_baseline(&res);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	TU_ASSERT_RC(cmesh_listen(longpath, NULL, &l), -ENAMETOOLONG);
	TU_ASSERT_RC(cmesh_listen("", NULL, &l), -EINVAL);
	TU_ASSERT_RC(cmesh_listen(NULL, NULL, &l), -EINVAL);
	lo.flags = 2;
	TU_ASSERT_RC(cmesh_listen("/tmp/cmesh-never", &lo, &l), -EINVAL);
	TU_ASSERT_RC(cmesh_connect(longpath, &seq_type, &seq_type, NULL, &node,
				   &tx, &rx),
		     -ENAMETOOLONG);
	TU_ASSERT_RC(cmesh_connect("/nonexistent/cmesh.sock", &seq_type,
				   &seq_type, NULL, &node, &tx, &rx),
		     -ENOENT);
	topo_assert_baseline(&res);
}

/* ==== waitsets over remote receivers ====================================== */

/* 's': send the next message; 'q': free the sender, then wait closed. */
static int ws_peer(cmesh_sender *tx, cmesh_receiver *rx,
		   const struct topo_side *s)
{
	struct seqmsg m = { .sender = (uint32_t)getpid() };
	int w;

	while ((w = topo_wait(s->sync, TOPO_WAIT_MS)) == 's') {
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
		m.seq++;
	}
	TOPO_CHECK_EQ(w, 'q');
	cmesh_sender_free(tx);
	TOPO_CHECK_EQ(peer_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario ws_sc = {
	.down = &seq_type,
	.up = &seq_type,
	.peer = ws_peer,
};

static uint64_t ws_wait(cmesh_waitset *ws)
{
	uint64_t key = 0;

	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	return key;
}

/*
 * A hundred links to one child process, each carrying one channel each
 * way: the child sends WS_PER numbered messages on each, round-robin
 * across the links, then frees its senders; the parent takes everything
 * through one waitset over the hundred remote receivers, checking each
 * link's order, then sees each closed.
 */
#define WS_LINKS 100
#define WS_PER 50

struct ws_links {
	cmesh_node *node[WS_LINKS];
	cmesh_sender *tx[WS_LINKS];
	cmesh_receiver *rx[WS_LINKS];
};

static int ws_links_join(int (*sv)[2], int side, struct ws_links *w)
{
	for (int i = 0; i < WS_LINKS; i++) {
		int r = cmesh_node_join_socket(sv[i][side], &seq_type,
					       &seq_type, NULL, &w->node[i],
					       &w->tx[i], &w->rx[i]);

		if (r)
			return r;
	}
	return 0;
}

static void ws_links_free(struct ws_links *w)
{
	for (int i = 0; i < WS_LINKS; i++) {
		cmesh_sender_free(w->tx[i]);
		cmesh_receiver_free(w->rx[i]);
		cmesh_node_free(w->node[i]);
	}
}

static int ws_links_child(int (*sv)[2], int sync)
{
	struct ws_links w = { 0 };

	for (int i = 0; i < WS_LINKS; i++)
		close(sv[i][0]);
	TOPO_CHECK_EQ(ws_links_join(sv, 1, &w), 0);
	for (uint64_t n = 0; n < WS_PER; n++)
		for (int i = 0; i < WS_LINKS; i++) {
			struct seqmsg m = { .sender = (uint32_t)i, .seq = n };

			TOPO_CHECK_EQ(cmesh_sender_send(w.tx[i], &m, NULL, 0),
				      0);
		}
	for (int i = 0; i < WS_LINKS; i++) {
		cmesh_sender_free(w.tx[i]);
		w.tx[i] = NULL;
	}
	/* Stay until the parent has read everything (no reset under it). */
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS * 4), 'q');
	ws_links_free(&w);
	return 0;
}

Test(node, waitset_over_a_hundred_remote_receivers_gets_every_message_once)
{
	int sv[WS_LINKS][2], sync[2];
	uint64_t next[WS_LINKS] = { 0 }, got = 0;
	struct ws_links w = { 0 };
	struct topo_res res;
	cmesh_waitset *ws;
	int open_links = WS_LINKS;
	pid_t pid;

	topo_baseline(&res);
	for (int i = 0; i < WS_LINKS; i++)
		cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
					0, sv[i]),
			     0);
	topo_sync_pair(sync);
	pid = topo_fork();
	if (pid == 0) {
		close(sync[0]);
		topo_child_exit(ws_links_child(sv, sync[1]));
	}
	close(sync[1]);
	for (int i = 0; i < WS_LINKS; i++)
		close(sv[i][1]);
	TU_ASSERT_RC(ws_links_join(sv, 0, &w), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	for (int i = 0; i < WS_LINKS; i++)
		TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, w.rx[i],
							(uint64_t)i),
			     0);
	while (open_links) {
		uint64_t key = ws_wait(ws);
		struct seqmsg m;
		int r;

		cr_assert_lt(key, WS_LINKS);
		while ((r = cmesh_receiver_try_recv(w.rx[key], &m, NULL, 0)) ==
		       0) {
			cr_assert_eq(m.sender, key);
			cr_assert_eq(m.seq, next[key],
				     "link %llu: %llu, want %llu",
				     (unsigned long long)key,
				     (unsigned long long)m.seq,
				     (unsigned long long)next[key]);
			next[key]++;
			got++;
		}
		if (r == -EAGAIN)
			continue;
		TU_ASSERT_RC(r, -EPIPE);
		cr_assert_eq(next[key], WS_PER, "link %llu closed early",
			     (unsigned long long)key);
		TU_ASSERT_RC(cmesh_waitset_remove_receiver(ws, w.rx[key]), 0);
		open_links--;
	}
	cr_assert_eq(got, (uint64_t)WS_LINKS * WS_PER);
	cr_assert_eq(cmesh_waitset_size(ws), 0);
	cmesh_waitset_free(ws);
	TU_ASSERT_RC(topo_post(sync[0], 'q'), 0);
	topo_assert_exit_0(pid, TOPO_WAIT_MS * 4);
	close(sync[0]);
	ws_links_free(&w);
	topo_assert_baseline(&res);
}

static void waitset_by_key(void)
{
	struct topo_res res;
	struct topo_conn a, b;
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	cmesh_waitset *ws;
	struct seqmsg m;
	struct pollfd p;
	uint64_t key, seen = 0;

	topo_baseline(&res);
	topo_fork_peer(&ws_sc, TOPO_FORK, &a);
	topo_fork_peer(&ws_sc, TOPO_LISTEN, &b);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, a.rx, 1), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, b.rx, 2), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, lrx, 3), 0);
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, cmesh_deadline_after(TU_MS(20)),
					&key),
		     -ETIMEDOUT);

	/* One at a time. */
	TU_ASSERT_RC(topo_post(a.sync, 's'), 0);
	cr_assert_eq(ws_wait(ws), 1);
	expect_seq(a.rx, (uint32_t)a.pid, 0);
	TU_ASSERT_RC(topo_post(b.sync, 's'), 0);
	cr_assert_eq(ws_wait(ws), 2);
	expect_seq(b.rx, (uint32_t)b.pid, 0);
	send_seq(ltx, 9, 0);
	cr_assert_eq(ws_wait(ws), 3);
	expect_seq(lrx, 9, 0);
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);

	/* The waitset fd polls readable when a remote member gets ready. */
	p = (struct pollfd){ .fd = cmesh_waitset_fd(ws), .events = POLLIN };
	TU_ASSERT_RC(topo_post(b.sync, 's'), 0);
	cr_assert_eq(poll(&p, 1, (int)TOPO_WAIT_MS), 1,
		     "waitset fd not readable");
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), 0);
	cr_assert_eq(key, 2);
	expect_seq(b.rx, (uint32_t)b.pid, 1);
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);

	/* Both remote members at once. */
	TU_ASSERT_RC(topo_post(a.sync, 's'), 0);
	TU_ASSERT_RC(topo_post(b.sync, 's'), 0);
	for (int i = 0; i < 2; i++) {
		key = ws_wait(ws);
		cr_assert(key == 1 || key == 2, "key %llu",
			  (unsigned long long)key);
		seen |= 1u << key;
		expect_seq(key == 1 ? a.rx : b.rx,
			   (uint32_t)(key == 1 ? a.pid : b.pid),
			   key == 1 ? 1 : 2);
	}
	cr_assert_eq(seen, 6);
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);

	/* Closing is readiness too. */
	TU_ASSERT_RC(topo_post(a.sync, 'q'), 0);
	cr_assert_eq(ws_wait(ws), 1);
	TU_ASSERT_RC(cmesh_receiver_try_recv(a.rx, &m, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_waitset_remove_receiver(ws, a.rx), 0);
	cmesh_sender_free(a.tx);
	cmesh_receiver_free(a.rx);

	/* So is the peer's death. */
	cr_assert_eq(kill(b.pid, SIGKILL), 0);
	cr_assert_eq(ws_wait(ws), 2);
	TU_ASSERT_RC(cmesh_receiver_try_recv(b.rx, &m, NULL, 0), -ECONNRESET);
	assert_killed(b.pid);
	cmesh_sender_free(b.tx);
	cmesh_receiver_free(b.rx);

	cmesh_waitset_free(ws);
	cmesh_sender_free(ltx);
	cmesh_receiver_free(lrx);
	topo_bye(a.sync);
	topo_assert_exit_0(a.pid, TOPO_WAIT_MS);
	close(a.sync);
	close(b.sync);
	topo_assert_baseline(&res);
}

/* cmesh_waitset_wait() sleeps in futex_waitv where it can (waitset_wait.c). */
Test(node, waitset_reports_remote_and_local_receivers_by_key)
{
	waitset_by_key();
}

/* Where receivers cannot sleep in futex_waitv, it sleeps in epoll. */
Test(node, waitset_reports_remote_and_local_receivers_by_key_in_epoll)
{
	cmesh__lane_force_polling(true);
	waitset_by_key();
	cmesh__lane_force_polling(false);
}

/*
 * A client that waits for the path to appear and connects at once finds
 * a listener (the path is linked once the socket listens), never
 * -ECONNREFUSED: a thread spins on stat() while cmesh_listen() runs, 300
 * times, each time on a new path.
 */
struct appear {
	const char *path;
	_Atomic bool stop;
	int refused, ok;
};

static void *connect_on_appear(void *arg)
{
	struct appear *a = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int s;

	memcpy(sa.sun_path, a->path, strlen(a->path));
	while (stat(a->path, &st) != 0)
		if (atomic_load(&a->stop))
			return NULL;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return NULL;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		a->ok++;
	else if (errno == ECONNREFUSED)
		a->refused++;
	close(s);
	return NULL;
}

Test(node, listen_names_its_path_only_once_it_listens)
{
	struct tmp_sock t;
	int refused = 0, ok = 0;

	tmp_sock(&t);
	for (int i = 0; i < 300; i++) {
		struct appear a = { .path = t.path };
		cmesh_listener *l;
		pthread_t th;

		tu_thread_start(&th, connect_on_appear, &a);
		TU_ASSERT_RC(cmesh_listen(t.path, NULL, &l), 0);
		atomic_store(&a.stop, true);
		tu_thread_join(th);
		cmesh_listener_free(l);
		refused += a.refused;
		ok += a.ok;
	}
	cr_assert_eq(refused, 0, "%d of %d connects refused", refused,
		     refused + ok);
	cr_assert_gt(ok, 0);
	tmp_sock_done(&t);
}

/*
 * The name the socket is bound under first is taken by a socket file (a
 * process of our pid died between its bind and its link): it is replaced,
 * the listen works, and nothing is left beside the path.
 */
Test(node, listen_replaces_a_stale_socket_under_its_own_first_name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tmp_sock t;
	cmesh_listener *l;
	int s;

	int left = 0;

	tmp_sock(&t);
	/*
	 * This process's next listen is bound as ".<pid>.<n>.tmp" beside the
	 * path, n counting its listens: socket files for n = 0..7 (a test
	 * process has made none before, or a few).
	 */
	for (int n = 0; n < 8; n++) {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%d.%d.tmp",
			 t.path, (int)getpid(), n);
		s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		cr_assert_geq(s, 0);
		cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close(s);
	}
	TU_ASSERT_RC(cmesh_listen(t.path, NULL, &l), 0);
	cmesh_listener_free(l);
	/* The one it took was replaced, then removed: seven are left. */
	for (int n = 0; n < 8; n++) {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%d.%d.tmp",
			 t.path, (int)getpid(), n);
		left += unlink(sa.sun_path) == 0;
	}
	cr_assert_eq(left, 7, "%d stale socket files left", left);
	tmp_sock_done(&t);
}
