/* SPDX-License-Identifier: MIT */
/*
 * test_node_edges.c - edge cases found in review: bad or repeated fds in a
 * message, a sender inside its own message, descriptors narrower than
 * their fields. Same bodies in one process and across two where the
 * behaviour is the same.
 */
#define _GNU_SOURCE

#include "testutil.h"
#include "topo.h"

#include <cmesh.h>

#include "lane.h"
#include "link.h"
#include "link_int.h"
#include "node.h"
#include "proto.h"
#include "reg.h"
#include "ring.h"
#include "shmring.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct twofd {
	uint64_t tag;
	int a;
	int b;
};

CMESH_TYPE_DEFINE(twofd_type, struct twofd, CMESH_FIELD_FD(struct twofd, a),
		  CMESH_FIELD_FD(struct twofd, b));

/*
 * Driver: a message holding the same pipe end in two fields fails with
 * -EINVAL and closes it (the read end sees EOF), then a message holding
 * an fd number that is not open fails the same way (cross-process only:
 * in one process an fd moves as a number and is not checked); the channel
 * keeps working: a normal message with a real fd still arrives.
 */
static void dupfd_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct twofd m = { .tag = 1, .a = -1, .b = -1 };
	struct twofd got;
	int p[2], q[2];

	tu_pipe(p);
	m.a = m.b = p[1];
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EINVAL);
	cr_assert(tu_pipe_sees_eof(p[0], 1000), "duplicated fd not closed");
	close(p[0]);
	if (s->cross) {
		m = (struct twofd){ .tag = 2, .a = 1000, .b = -1 };
		cr_assert_eq(fcntl(1000, F_GETFD), -1, "fd 1000 is open");
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EINVAL);
	}
	tu_pipe(q);
	m = (struct twofd){ .tag = 3, .a = q[1], .b = -1 };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_sender_free(tx);
	/* The peer writes "ok" through the fd it got, then closes it. */
	char buf[3] = { 0 };
	cr_assert_eq(read(q[0], buf, 2), 2);
	cr_assert_str_eq(buf, "ok");
	close(q[0]);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &got,
						  NULL, 0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

static int dupfd_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	struct twofd m;

	(void)s;
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      0);
	TOPO_CHECK_EQ(m.tag, 3);
	TOPO_CHECK(m.a >= 0);
	TOPO_CHECK_EQ(m.b, -1);
	TOPO_CHECK_EQ(write(m.a, "ok", 2), 2);
	close(m.a);
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario dupfd = {
	.down = &twofd_type,
	.up = &twofd_type,
	.driver = dupfd_driver,
	.peer = dupfd_peer,
};

Test(node_edges, repeated_fd_is_einval_and_closed_in_process)
{
	topo_run(&dupfd, TOPO_THREAD);
}

Test(node_edges, repeated_or_closed_fd_is_einval_and_link_lives_cross_process)
{
	topo_run(&dupfd, TOPO_FORK);
}

/*
 * fds arriving while this process's fd table is full: the kernel drops
 * them (MSG_CTRUNC), the message cannot be delivered whole, and the link
 * fails with -EMFILE (not -EPROTO: the peer did nothing wrong). The
 * driver lowers RLIMIT_NOFILE to its lowest free fd number, lets the peer
 * send two fds, and sees -EMFILE on both its ports.
 */
static void emfile_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	struct rlimit old;
	struct twofd m = { .tag = 1, .a = -1, .b = -1 };
	int r;

	tu_fd_table_full(&old);
	r = topo_post(s->sync, 'g');
	if (r == 0)
		r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	TU_ASSERT_RC(r, -EMFILE);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EMFILE);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EMFILE);
	TU_ASSERT_RC(topo_post(s->sync, 'q'), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int emfile_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct twofd m = { .tag = 2 };
	int p[2];

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	TOPO_CHECK_EQ(pipe(p), 0);
	m.a = p[0];
	m.b = p[1];
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'q');
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario emfile = {
	.down = &twofd_type,
	.up = &twofd_type,
	.driver = emfile_driver,
	.peer = emfile_peer,
};

Test(node_edges, fds_arriving_at_a_full_fd_table_fail_the_link_with_emfile)
{
	topo_run(&emfile, TOPO_FORK);
}

struct selfmsg {
	uint64_t tag;
	cmesh_sender *s;
};

extern const cmesh_type self_type;
CMESH_TYPE_DEFINE(self_type, struct selfmsg,
		  CMESH_FIELD_SENDER(struct selfmsg, s, self_type));

Test(node_edges, a_sender_inside_its_own_message_is_einval_and_kept)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct selfmsg m = { .tag = 7 };

	TU_ASSERT_RC(cmesh_channel_new(&self_type, NULL, &tx, &rx), 0);
	m.s = tx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EINVAL);
	/* tx was not taken: it still sends. */
	m.s = NULL;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), 0);
	cr_assert_eq(m.tag, 7);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx);
}

Test(node_edges, a_field_wider_than_its_struct_is_rejected)
{
	static const cmesh_field fd0[] = { { CMESH_FIELD_KIND_FD, 0, NULL } };
	static const cmesh_field ptr0[] = { { CMESH_FIELD_KIND_SENDER, 0,
					      &self_type } };
	const cmesh_type tiny_fd = { "tiny", 2, 1, fd0 };
	const cmesh_type tiny_ptr = { "tiny", 4, 1, ptr0 };
	cmesh_sender *tx;
	cmesh_receiver *rx;

	TU_ASSERT_RC(cmesh_type_check(&tiny_fd), -EINVAL);
	TU_ASSERT_RC(cmesh_type_check(&tiny_ptr), -EINVAL);
	TU_ASSERT_RC(cmesh_channel_new(&tiny_fd, NULL, &tx, &rx), -EINVAL);
}

CMESH_TYPE_DEFINE(edge_echo_type, struct topo_echo_msg,
		  CMESH_FIELD_FD(struct topo_echo_msg, fd));

/*
 * The peer accepts smaller trails than we would send (its
 * CMESH_MAX_MESSAGE is 4K, ours the 64M default): what it would refuse
 * fails here with -EMSGSIZE, the link stays up, smaller messages echo.
 */
Test(node_edges, a_trail_over_the_peers_limit_is_emsgsize_not_a_dead_link)
{
	static unsigned char big[8192], in[8192];
	char *argv[] = { CMESH_TEST_PROG_DIR "/test_prog_echo", "echo-argv",
			 NULL };
	struct topo_echo_msg m = { .seq = 1, .fd = -1 };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int st;

	/* Our own settings are read now, before the child's are changed. */
	TU_ASSERT_RC(cmesh_env_check(NULL, NULL, 0), 0);
	cr_assert_eq(setenv("CMESH_MAX_MESSAGE", "4K", 1), 0);
	unsetenv(CMESH_INVITE_ENV);
	TU_ASSERT_RC(cmesh_spawn(argv[0], argv, &edge_echo_type,
				 &edge_echo_type, NULL, &node, &tx, &rx),
		     0);
	m.len = sizeof(big);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, big, sizeof(big)), -EMSGSIZE);
	m = (struct topo_echo_msg){ .seq = 2, .len = 4096, .fd = -1 };
	tu_fill(big, 4096, 2);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, big, 4096), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, in,
						  sizeof(in)),
		     4096);
	cr_assert_eq(m.seq, 2);
	cr_assert_eq(tu_check(in, 4096, 2), 4096);
	cr_assert_eq(waitpid(cmesh_node_pid(node), &st, WNOHANG), 0,
		     "the echo child died");
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, in,
						  sizeof(in)),
		     -EPIPE);
	cr_assert_eq(waitpid(cmesh_node_pid(node), &st, 0),
		     cmesh_node_pid(node));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "echo status %d", st);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
}

/* ---- more foundation behaviour, same bodies in both topologies ---- */

struct seqm {
	uint64_t seq;
	uint64_t pad[7];
};

CMESH_TYPE_DEFINE_PLAIN(seqm_type, struct seqm);

/*
 * Nothing sent yet: try_recv is -EAGAIN and a 20 ms deadline expires with
 * -ETIMEDOUT after at least 20 ms. Then three clones of the sender each
 * send one message and are freed one at a time; the receiver must not see
 * "closed" while any clone lives ('c' from the peer after each free), and
 * sees it after the last. The peer's receiver sleeps (spin none). The
 * peer frees its own sender last.
 */
static void clones_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	cmesh_sender *c[3];
	struct seqm m = { 0 };
	int64_t t0;

	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	t0 = cmesh_clock_now();
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(20)), &m, NULL, 0),
		     -ETIMEDOUT);
	cr_assert_geq(cmesh_clock_now() - t0, TU_MS(20));
	for (int i = 0; i < 3; i++)
		TU_ASSERT_RC(cmesh_sender_clone(tx, &c[i]), 0);
	cmesh_sender_free(tx);
	for (int i = 0; i < 3; i++) {
		m.seq = (uint64_t)i;
		TU_ASSERT_RC(cmesh_sender_send(c[i], &m, NULL, 0), 0);
		cr_assert_eq(topo_wait(s->sync, TOPO_WAIT_MS), 'r');
		cmesh_sender_free(c[i]);
	}
	cr_assert_eq(topo_wait(s->sync, TOPO_WAIT_MS), 'e');
	/* The peer frees its sender last: we drain to "closed". */
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

static int clones_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct seqm m;

	for (uint64_t i = 0; i < 3; i++) {
		/* Blocks asleep until the driver's clone sends. */
		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &m, NULL, 0),
			      0);
		TOPO_CHECK_EQ(m.seq, i);
		if (i > 0) /* clone i-1 is freed, later ones live */
			TOPO_CHECK_EQ(cmesh_receiver_try_recv(rx, &m, NULL, 0),
				      -EAGAIN);
		TOPO_CHECK_EQ(topo_post(s->sync, 'r'), 0);
	}
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      -EPIPE);
	cmesh_receiver_free(rx);
	TOPO_CHECK_EQ(topo_post(s->sync, 'e'), 0);
	cmesh_sender_free(tx);
	return 0;
}

static const struct topo_scenario clones = {
	.down = &seqm_type,
	.up = &seqm_type,
	.spin_ns = CMESH_SPIN_NONE,
	.driver = clones_driver,
	.peer = clones_peer,
};

Test(node_edges, deadline_then_closed_only_after_the_last_clone_in_process)
{
	topo_run(&clones, TOPO_THREAD);
}

Test(node_edges, deadline_then_closed_only_after_the_last_clone_cross_process)
{
	topo_run(&clones, TOPO_FORK);
}

Test(node_edges, deadline_then_closed_only_after_the_last_clone_listen)
{
	topo_run(&clones, TOPO_LISTEN);
}

/*
 * A trail larger than the caller's buffer: -EMSGSIZE, nothing consumed,
 * try_peek tells the length (as soon as the message is there, even while
 * the fds of an out-of-line trail are still on their way), a larger buffer
 * then receives it; the next message is still there. Inline and
 * out-of-line trails.
 */
static void peek_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	static unsigned char out[20000];
	struct seqm m = { 0 };

	(void)s;
	for (uint64_t i = 0; i < 2; i++) {
		uint32_t len = i ? sizeof(out) : 100;

		m.seq = i;
		tu_fill(out, len, (uint32_t)i);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, out, len), 0);
	}
	m.seq = 2;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

static int peek_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	static unsigned char in[20000];
	struct seqm m;

	(void)s;
	for (uint64_t i = 0; i < 2; i++) {
		int len = i ? (int)sizeof(in) : 100, r;

		/* Wait for it without taking it. */
		while ((r = cmesh_receiver_try_peek(rx)) == -EAGAIN)
			usleep(100);
		TOPO_CHECK_EQ(r, len);
		TOPO_CHECK_EQ(cmesh_receiver_try_recv(rx, &m, in, 10),
			      -EMSGSIZE);
		TOPO_CHECK_EQ(cmesh_receiver_try_peek(rx), len);
		/* Across processes its fds (an out-of-line trail) may still be
		 * in flight: wait for it rather than try once. */
		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &m, in, sizeof(in)),
			      len);
		TOPO_CHECK_EQ(m.seq, i);
		TOPO_CHECK_EQ(tu_check(in, (size_t)len, (uint32_t)i),
			      (size_t)len);
	}
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      0);
	TOPO_CHECK_EQ(m.seq, 2);
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      -EPIPE);
	TOPO_CHECK_EQ(cmesh_receiver_try_peek(rx), -EPIPE);
	cmesh_receiver_free(rx);
	cmesh_sender_free(tx);
	return 0;
}

static const struct topo_scenario peek = {
	.down = &seqm_type,
	.up = &seqm_type,
	.ring_size = 8192,
	.driver = peek_driver,
	.peer = peek_peer,
};

Test(node_edges, emsgsize_leaves_the_message_and_peek_tells_its_size_in_process)
{
	topo_run(&peek, TOPO_THREAD);
}

Test(node_edges,
     emsgsize_leaves_the_message_and_peek_tells_its_size_cross_process)
{
	topo_run(&peek, TOPO_FORK);
}

/*
 * The receiver is freed while a message it could not take (-EMSGSIZE) is
 * still pending, with more queued behind it: they are dropped, the
 * sending side gets -EPIPE, nothing leaks (topo_run counts fds and maps).
 */
static void pending_free_driver(cmesh_sender *tx, cmesh_receiver *rx,
				const struct topo_side *s)
{
	unsigned char trail[100] = { 0 };
	struct seqm m = { 0 };

	for (m.seq = 0; m.seq < 3; m.seq++)
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, trail, sizeof(trail)),
			     0);
	/* All three are queued before the peer may free its receiver: a
	 * slow host must not let the close overtake the second send. */
	TU_ASSERT_RC(topo_post(s->sync, 0), 0);
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 1);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, trail, sizeof(trail)), -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int pending_free_peer(cmesh_sender *tx, cmesh_receiver *rx,
			     const struct topo_side *s)
{
	unsigned char in[10];
	struct seqm m;
	int r;

	while ((r = cmesh_receiver_try_peek(rx)) == -EAGAIN)
		usleep(100);
	TOPO_CHECK_EQ(r, 100);
	TOPO_CHECK_EQ(cmesh_receiver_try_recv(rx, &m, in, sizeof(in)),
		      -EMSGSIZE);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 0);
	cmesh_receiver_free(rx);
	TOPO_CHECK_EQ(topo_post(s->sync, 1), 0);
	cmesh_sender_free(tx);
	return 0;
}

static const struct topo_scenario pending_free = {
	.down = &seqm_type,
	.up = &seqm_type,
	.driver = pending_free_driver,
	.peer = pending_free_peer,
};

Test(node_edges, freeing_a_receiver_with_a_pending_message_drops_it_in_process)
{
	topo_run(&pending_free, TOPO_THREAD);
}

Test(node_edges,
     freeing_a_receiver_with_a_pending_message_drops_it_cross_process)
{
	topo_run(&pending_free, TOPO_FORK);
}

struct oselfmsg {
	uint64_t tag;
	cmesh_oneshot_sender *s;
};

extern const cmesh_type oself_type;
CMESH_TYPE_DEFINE(oself_type, struct oselfmsg,
		  CMESH_FIELD_ONESHOT_SENDER(struct oselfmsg, s, oself_type));

Test(node_edges, a_oneshot_sender_inside_its_own_value_is_einval_and_kept)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct oselfmsg m = { .tag = 9 };

	TU_ASSERT_RC(cmesh_oneshot_new(&oself_type, &tx, &rx), 0);
	m.s = tx;
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &m, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &m, NULL, 0), -EAGAIN);
	/* tx was not taken: it still sends, once. */
	m.s = NULL;
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &m, NULL, 0), 0);
	cr_assert_eq(m.tag, 9);
	cr_assert_null(m.s);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_oneshot_receiver_free(rx);
}

/*
 * A gigabyte ring commits only the memory its messages reach: 200 round
 * trips over channels whose rings are 1 GiB each way leave this process's
 * resident set (and, across processes, each side's shared memory) within
 * 64 MiB of where it was before the channels were made, not gigabytes.
 */
struct seqmsg {
	uint64_t seq;
};

CMESH_TYPE_DEFINE_PLAIN(seqmsg_type, struct seqmsg);

#define BIG_RING (1u << 30)
#define BIG_RING_MARGIN_KIB (64l << 10)
#define BIG_RING_TRIPS 200u

static long rss_before_kib;

static long committed_kib(void)
{
	return tu_status_kib("VmRSS");
}

static void big_ring_driver(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	struct seqmsg m;

	(void)s;
	for (uint64_t i = 0; i < BIG_RING_TRIPS; i++) {
		m.seq = i;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							  &m, NULL, 0),
			     0);
		cr_assert_eq(m.seq, i + 1);
	}
	cr_assert_lt(committed_kib() - rss_before_kib, BIG_RING_MARGIN_KIB,
		     "VmRSS grew by %ld KiB", committed_kib() - rss_before_kib);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int big_ring_peer(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct seqmsg m;

	for (uint64_t i = 0; i < BIG_RING_TRIPS; i++) {
		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &m, NULL, 0),
			      0);
		TOPO_CHECK_EQ(m.seq, i);
		m.seq = i + 1;
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	/* Both arenas (ours and the driver's) are mapped here. */
	if (s->cross)
		TOPO_CHECK(tu_status_kib("RssShmem") < BIG_RING_MARGIN_KIB);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario big_ring = {
	.down = &seqmsg_type,
	.up = &seqmsg_type,
	.ring_size = BIG_RING,
	.driver = big_ring_driver,
	.peer = big_ring_peer,
};

Test(node_edges, a_gigabyte_ring_commits_only_what_it_uses_in_process)
{
	rss_before_kib = committed_kib();
	topo_run(&big_ring, TOPO_THREAD);
}

Test(node_edges, a_gigabyte_ring_commits_only_what_it_uses_cross_process)
{
	rss_before_kib = committed_kib();
	topo_run(&big_ring, TOPO_FORK);
}

/* ==== a claim in flight across processes ================================ */

struct word8 {
	uint64_t v;
};

CMESH_TYPE_DEFINE_PLAIN(word8_type, struct word8);

static int64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Child: claims the position its peer's receiver waits at and reads the
 * peer's `sleeping` flag before the peer sleeps (so it owes no wake), lets
 * the peer go, waits until the peer announces a sleep, holds the claim
 * 50 ms more, then publishes the record without waking anyone.
 */
static int in_flight_child(int sock, int sync)
{
	struct word8 m = { 42 };
	struct cmesh__iov iov = { &m, sizeof(m) };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__lane *ln;
	int64_t end;
	uint64_t pos;
	char c;

	if (cmesh_node_join_socket(sock, &word8_type, &word8_type, NULL, &node,
				   &tx, &rx))
		return 10;
	ln = cmesh__link_out(cmesh__node_link(node));
	if (cmesh__shmring_claim(&ln->prod, sizeof(m), &pos))
		return 11;
	if (atomic_load(&ln->peer_wake->sleeping))
		return 12; /* the peer must not sleep yet */
	if (write(sync, "c", 1) != 1)
		return 13;
	end = tu_now_ns() + TU_MS(5000);
	while (!atomic_load(&ln->peer_wake->sleeping))
		if (tu_now_ns() > end)
			return 14;
	usleep(50000);
	cmesh__shmring_commit(&ln->prod, pos, CMESH_REC_PLAIN, &iov, 1);
	if (read(sync, &c, 1) != 1)
		return 15;
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	return 0;
}

/*
 * The receiver must not sleep for good on a claim whose producer looked
 * before it slept: it looks again (yields, then naps), gets the message
 * soon after it is published, and burns no core while the claim stays.
 */
static void check_in_flight(bool waitset)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_waitset *ws = NULL;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct word8 m = { 0 };
	int sv[2], sy[2], st, r;
	int64_t t0, cpu;
	uint64_t key = 0;
	pid_t pid;
	char c;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sy),
		     0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		close(sy[0]);
		_exit(in_flight_child(sv[1], sy[1]));
	}
	close(sv[1]);
	close(sy[1]);
	o.spin_ns = CMESH_SPIN_NONE;
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &word8_type, &word8_type, &o,
					    &node, &tx, &rx),
		     0);
	if (waitset) {
		TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
		TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, rx, 7), 0);
	}
	cr_assert_eq(read(sy[0], &c, 1), 1);
	t0 = tu_now_ns();
	cpu = thread_cpu_ns();
	if (waitset) {
		r = cmesh_waitset_wait(ws, cmesh_deadline_after(TU_MS(10000)),
				       &key);
		cr_assert_eq(r, 0, "waitset wait: %d", r);
		cr_assert_eq(key, 7);
	}
	r = cmesh_receiver_recv_deadline(rx, cmesh_deadline_after(TU_MS(10000)),
					 &m, NULL, 0);
	cpu = thread_cpu_ns() - cpu;
	t0 = tu_now_ns() - t0;
	TU_ASSERT_RC(r, 0);
	cr_assert_eq(m.v, 42);
	cr_assert_lt(t0, TU_MS(3000), "took %lld ns", (long long)t0);
	cr_assert_lt(cpu, TU_MS(25), "the waiter used %lld ns of CPU",
		     (long long)cpu);
	cr_assert_eq(write(sy[0], "d", 1), 1);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x",
		  st);
	cmesh_waitset_free(ws);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	close(sy[0]);
}

Test(node_edges, a_claim_in_flight_across_processes_wakes_a_sleeping_receiver)
{
	check_in_flight(false);
}

Test(node_edges, a_claim_in_flight_across_processes_wakes_a_waitset)
{
	check_in_flight(true);
}

/*
 * A peer's waitset that waits on its end of our link gives us a wake
 * socket (WAKESOCK). The peer dies: that socket closes once our link
 * thread sees the failure, not when the application frees its node.
 */
struct wake_count {
	pid_t pid;
	int n; /* the link's sockets of the peer's waitsets; -1: no link */
};

static int count_peer_wakes(void *owner, void *arg)
{
	struct cmesh__link *l = owner;
	struct wake_count *a = arg;

	if (atomic_load(&l->peer_pid) != a->pid)
		return 0;
	pthread_mutex_lock(&l->wake_lock);
	a->n = (int)l->nwpeer;
	pthread_mutex_unlock(&l->wake_lock);
	return 1;
}

/* Waits (2 s at most) until the link to `pid` holds `want` of them. */
static int peer_wakes_become(pid_t pid, int want)
{
	struct wake_count a = { pid, -1 };

	for (int64_t end = tu_now_ns() + TU_MS(2000);;) {
		a.n = -1;
		cmesh__reg_each(count_peer_wakes, &a);
		if (a.n == want || tu_now_ns() > end)
			return a.n;
		tu_sleep_ms(1);
	}
}

struct rxmsg {
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(rxmsg_type, struct rxmsg,
		  CMESH_FIELD_RECEIVER(struct rxmsg, rx, seqmsg_type));

/* Waits on the receiver it is sent (its lane from us) in a waitset. */
static int waitset_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	cmesh_waitset *ws;
	struct rxmsg m;

	(void)tx;
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      0);
	TOPO_CHECK_EQ(cmesh_waitset_new(&ws), 0);
	TOPO_CHECK_EQ(cmesh_waitset_add_receiver(ws, m.rx, 1), 0);
	TOPO_CHECK_EQ(topo_post(s->sync, 'r'), 0);
	topo_wait(s->sync, TOPO_WAIT_MS * 3); /* killed meanwhile */
	return 1;
}

static const struct topo_scenario waitset_peer_sc = {
	.down = &rxmsg_type,
	.up = &seqmsg_type,
	.peer = waitset_peer,
};

Test(node_edges, a_dead_peers_waitset_sockets_close_with_its_link)
{
	struct topo_res res;
	struct topo_conn c;
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	int fds, st;

	topo_baseline(&res);
	topo_fork_peer(&waitset_peer_sc, TOPO_FORK, &c);
	TU_ASSERT_RC(cmesh_channel_new(&seqmsg_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &(struct rxmsg){ lrx }, NULL, 0),
		     0);
	TU_ASSERT_RC(topo_wait(c.sync, TOPO_WAIT_MS), 'r');
	cr_assert_eq(peer_wakes_become(c.pid, 1), 1,
		     "the peer's waitset gave no wake socket");
	fds = tu_fd_count();
	kill(c.pid, SIGKILL);
	st = topo_reap(c.pid, TOPO_WAIT_MS);
	cr_assert(st != -ETIMEDOUT && WIFSIGNALED(st));
	cr_assert_eq(peer_wakes_become(c.pid, 0), 0,
		     "the dead peer's wake socket is still held");
	cr_assert_leq(tu_fd_count(), fds - 1);
	cmesh_sender_free(ltx);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	topo_assert_baseline_within(&res, TOPO_WAIT_MS);
}
