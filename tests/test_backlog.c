/* SPDX-License-Identifier: MIT */
/*
 * test_backlog.c - a cross-process sender's spill backlog (src/lane_spill.c):
 * sends past a full ring queue behind it, and the consumer, not a timer,
 * says when they may go on. While its consumer reads nothing the
 * producer's link thread sleeps; as soon as the consumer takes records,
 * whether it sleeps between them or only polls, the backlog drains, in
 * order, with nothing lost.
 *
 * Each scenario runs across processes (TOPO_FORK and TOPO_LISTEN): the
 * backlog exists only on a link. scripts/test runs the suite once with each
 * wake backend (io_uring, then CMESH_WAKE=epoll in .ci/run).
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include "endpoint.h"
#include "lane.h"
#include "link_int.h"
#include "queue.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

TestSuite(backlog, .init = tu_suite_init, .fini = tu_suite_fini);

/* 64 bytes: two slots of a ring, so a 4 KiB ring holds 32. */
struct msg64 {
	uint64_t seq;
	unsigned char fill[56];
};
CMESH_TYPE_DEFINE_PLAIN(msg64_type, struct msg64);

#define RING 4096u
#define COUNT 3000u /* ~90 rings' worth behind the ring */
#define IDLE_MS 300u
/*
 * Wakes of the producer's link threads allowed while its consumer reads
 * nothing for IDLE_MS: a retry timer of 1 ms would make about 300.
 */
#define IDLE_WAKES_MAX 10

static struct msg64 msg_of(uint64_t seq)
{
	struct msg64 m;

	m.seq = seq;
	memset(m.fill, (int)(seq & 0xff), sizeof(m.fill));
	return m;
}

static bool msg_ok(const struct msg64 *m, uint64_t seq)
{
	if (m->seq != seq)
		return false;
	for (size_t i = 0; i < sizeof(m->fill); i++)
		if (m->fill[i] != (unsigned char)(seq & 0xff))
			return false;
	return true;
}

/*
 * The tids of this process's link threads (named "cmesh-link"), at most
 * `max` of them into tids; returns how many there are.
 */
static int link_tids(pid_t *tids, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char path[320], line[32];
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* the thread ended meanwhile */
		if (fgets(line, sizeof(line), f) &&
		    strncmp(line, "cmesh-link", 10) == 0) {
			if (n < max)
				tids[n] = (pid_t)atoi(e->d_name);
			n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

/*
 * Context switches so far of this process's link threads: each sleep and
 * wake of one counts. -1 if there is none.
 */
static long link_switches(void)
{
	pid_t tids[16];
	int n = link_tids(tids, 16);
	long sum = -1;

	cr_assert_leq(n, 16, "%d link threads", n);
	for (int i = 0; i < n; i++) {
		char path[64], line[128];
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/task/%d/status",
			 (int)tids[i]);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			long v;

			if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) ==
				    1 ||
			    sscanf(line, "nonvoluntary_ctxt_switches: %ld",
				   &v) == 1)
				sum = (sum < 0 ? 0 : sum) + v;
		}
		fclose(f);
	}
	return sum;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

/* How the peer takes the messages. */
enum take {
	TAKE_SLEEPING,
	TAKE_POLLING
};

/*
 * Driver: sends COUNT messages while the peer reads nothing (most of
 * them wait in the backlog), checks that its link thread sleeps through
 * IDLE_MS of that, then lets the peer drain and waits for its verdict.
 */
static void idle_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	long before, after;

	for (uint64_t i = 0; i < COUNT; i++) {
		struct msg64 m = msg_of(i);

		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	before = link_switches();
	cr_assert_geq(before, 0, "no cmesh-link thread in this process");
	sleep_ms(IDLE_MS);
	after = link_switches();
	cr_assert_leq(after - before, IDLE_WAKES_MAX,
		      "the link thread woke %ld times in %u ms with a backlog "
		      "and a consumer that reads nothing",
		      after - before, IDLE_MS);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	/* No timer retries the backlog: only the consumer's word drains it. */
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 'd');
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int take_one(cmesh_receiver *rx, enum take how, struct msg64 *m)
{
	int64_t deadline = topo_deadline();
	int r;

	if (how == TAKE_SLEEPING)
		return cmesh_receiver_recv_deadline(rx, deadline, m, NULL, 0);
	/* Never sleeps in the library: only try_recv, until a deadline. */
	do {
		r = cmesh_receiver_try_recv(rx, m, NULL, 0);
	} while (r == -EAGAIN && cmesh_clock_now() < deadline);
	return r;
}

static int idle_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	const enum take *how = s->arg;
	struct msg64 m;

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	for (uint64_t i = 0; i < COUNT; i++) {
		TOPO_CHECK_EQ(take_one(rx, *how, &m), 0);
		TOPO_CHECK(msg_ok(&m, i));
	}
	TOPO_CHECK_EQ(topo_post(s->sync, 'd'), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const enum take sleeping = TAKE_SLEEPING, polling = TAKE_POLLING;

static const struct topo_scenario idle_sleeping = {
	.down = &msg64_type,
	.up = &msg64_type,
	.ring_size = RING,
	.driver = idle_driver,
	.peer = idle_peer,
	.arg = &sleeping,
};

static const struct topo_scenario idle_polling = {
	.down = &msg64_type,
	.up = &msg64_type,
	.ring_size = RING,
	.driver = idle_driver,
	.peer = idle_peer,
	.arg = &polling,
};

Test(backlog, a_stalled_consumer_costs_no_wakeups_and_a_sleeping_one_drains_it)
{
	topo_run(&idle_sleeping, TOPO_FORK);
}

Test(backlog, a_consumer_that_only_polls_drains_the_backlog_in_order)
{
	topo_run(&idle_polling, TOPO_FORK);
}

Test(backlog, the_backlog_drains_on_the_consumers_word_over_a_listener_too)
{
	topo_run(&idle_sleeping, TOPO_LISTEN);
}

/*
 * Both directions spill at once and both sides read as they send: each
 * side's consumer frees space for the other's backlog while its own
 * producer waits for space; neither deadlocks, nothing is lost (each
 * side receives all of the other's messages before it frees its ends).
 */
static void both_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	uint64_t sent = 0, got = 0;
	struct msg64 m;

	(void)s;
	while (got < COUNT) {
		int r;

		if (sent < COUNT) {
			m = msg_of(sent);
			TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
			sent++;
			if (sent % 97)
				continue; /* send ahead: spill */
		}
		r = sent < COUNT ?
			    cmesh_receiver_try_recv(rx, &m, NULL, 0) :
			    cmesh_receiver_recv_deadline(rx, topo_deadline(),
							 &m, NULL, 0);
		if (r == -EAGAIN)
			continue;
		TU_ASSERT_RC(r, 0);
		cr_assert(msg_ok(&m, got), "message %llu damaged or reordered",
			  (unsigned long long)got);
		got++;
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int both_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	uint64_t sent = 0, got = 0;
	struct msg64 m;

	(void)s;
	while (got < COUNT || sent < COUNT) {
		int r;

		if (sent < COUNT) {
			m = msg_of(sent);
			TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
			sent++;
			if (sent % 89)
				continue;
		}
		if (got == COUNT)
			continue;
		r = sent < COUNT ?
			    cmesh_receiver_try_recv(rx, &m, NULL, 0) :
			    cmesh_receiver_recv_deadline(rx, topo_deadline(),
							 &m, NULL, 0);
		if (r == -EAGAIN)
			continue;
		TOPO_CHECK_EQ(r, 0);
		TOPO_CHECK(msg_ok(&m, got));
		got++;
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario both_ways = {
	.down = &msg64_type,
	.up = &msg64_type,
	.ring_size = RING,
	.driver = both_driver,
	.peer = both_peer,
};

Test(backlog, both_directions_spilling_at_once_drain_each_other)
{
	topo_run(&both_ways, TOPO_FORK);
}

Test(backlog, both_directions_spilling_at_once_in_one_process)
{
	topo_run(&both_ways, TOPO_THREAD);
}

/* Bytes this sender's lane holds behind its ring (0 in one process). */
static uint64_t backlog_of(cmesh_sender *tx)
{
	struct cmesh__lane *ln = cmesh__queue_tx_lane(
		cmesh__endpoint_queue(CMESH_FIELD_KIND_SENDER, tx));

	return ln ? atomic_load(&ln->backlog) : 0;
}

/*
 * The consumer frees its receiver without reading while our backlog
 * waits for space: the backlog is dropped at once (its memory and fds
 * returned), not held for as long as the link lives.
 */
static void closing_driver(cmesh_sender *tx, cmesh_receiver *rx,
			   const struct topo_side *s)
{
	for (uint64_t i = 0; i < COUNT; i++) {
		struct msg64 m = msg_of(i);

		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	if (s->cross)
		cr_assert_gt(backlog_of(tx), 0, "nothing spilled");
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 'd');
	for (int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     backlog_of(tx) && tu_now_ns() < end;)
		tu_sleep_ms(1);
	cr_assert_eq(backlog_of(tx), 0, "%llu bytes still held",
		     (unsigned long long)backlog_of(tx));
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct msg64){ 0 }, NULL, 0),
		     -EPIPE);
	TU_ASSERT_RC(topo_post(s->sync, 'q'), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int closing_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	cmesh_receiver_free(rx); /* nothing read */
	TOPO_CHECK_EQ(topo_post(s->sync, 'd'), 0);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'q');
	cmesh_sender_free(tx);
	return 0;
}

static const struct topo_scenario closing = {
	.down = &msg64_type,
	.up = &msg64_type,
	.ring_size = RING,
	.driver = closing_driver,
	.peer = closing_peer,
};

Test(backlog, a_consumer_that_closes_unread_releases_the_backlog)
{
	topo_run(&closing, TOPO_FORK);
}

/*
 * A producer whose link thread is throttled (past its fd budget: its own
 * application leaves the peer's fd messages unread) reads no SPACE from
 * the socket; its backlog must drain all the same.
 */
struct fdmsg {
	int fd;
};
CMESH_TYPE_DEFINE(fdmsg_type, struct fdmsg, CMESH_FIELD_FD(struct fdmsg, fd));

#define THROTTLE_FDS 200u /* past the child's budget: RLIMIT_NOFILE 256 / 8 */

static int throttled_child(int sock, int sync)
{
	struct rlimit rl = { 256, 256 };
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *n;
	cmesh_sender *tx;
	cmesh_receiver *rx;

	TOPO_CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
	o.ring_size = RING;
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &msg64_type, &fdmsg_type, &o,
					     &n, &tx, &rx),
		      0);
	/* The parent's fds are sent: our link thread stops reading. */
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'g');
	for (uint64_t i = 0; i < COUNT; i++) {
		struct msg64 m = msg_of(i);

		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	TOPO_CHECK_EQ(topo_post(sync, 's'), 0);
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'q');
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx); /* its fds unread: closed here */
	cmesh_node_free(n);
	return 0;
}

Test(backlog, a_producer_throttled_past_its_fd_budget_still_drains)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *n;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct topo_res res;
	struct msg64 m;
	int sv[2], sy[2];
	pid_t pid;

	topo_baseline(&res);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	topo_sync_pair(sy);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		close(sy[0]);
		topo_child_exit(throttled_child(sv[1], sy[1]));
	}
	close(sv[1]);
	close(sy[1]);
	o.peer_pid = pid;
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &fdmsg_type, &msg64_type, &o,
					    &n, &tx, &rx),
		     0);
	for (uint32_t i = 0; i < THROTTLE_FDS; i++) {
		struct fdmsg f = { tu_eventfd() };

		TU_ASSERT_RC(cmesh_sender_send(tx, &f, NULL, 0), 0);
	}
	TU_ASSERT_RC(cmesh_sender_flush(tx, topo_deadline()), 0);
	TU_ASSERT_RC(topo_post(sy[0], 'g'), 0);
	TU_ASSERT_RC(topo_wait(sy[0], TOPO_WAIT_MS), 's');
	for (uint64_t i = 0; i < COUNT; i++) {
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							  &m, NULL, 0),
			     0);
		cr_assert(msg_ok(&m, i), "message %llu damaged or reordered",
			  (unsigned long long)i);
	}
	TU_ASSERT_RC(topo_post(sy[0], 'q'), 0);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(n);
	close(sy[0]);
	topo_assert_baseline_within(&res, TOPO_WAIT_MS);
}

/*
 * The backlog of a port's lane that is spilled as its endpoint goes (the
 * last sends met a full ring, then the sender was freed) still arrives,
 * CLOSE last. The link thread decides the lane is done (END, then it is
 * freed) from a flush that left no backlog and its release: the release
 * must be seen before that flush, else records spilled in between are
 * freed with the lane and the peer waits for good (a forwarded stream
 * cut short, moves::receiver_to_third_process). The test holds the locks
 * the link thread takes to put the release exactly there: the lane's
 * (the flush waits on it) and then the link's att_lock (taken after it).
 */
struct rxmsg {
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(rxmsg_type, struct rxmsg,
		  CMESH_FIELD_RECEIVER(struct rxmsg, rx, msg64_type));

#define EARLY 8u       /* spilled before the lane is bound */
#define LATE 32u       /* spilled behind the full ring, just before the free */
#define DRAIN_MS 3000u /* the peer's bound for each message */

/* The tid of this process's only link thread. */
static pid_t only_link_tid(void)
{
	pid_t tid = 0;
	int n = link_tids(&tid, 1);

	cr_assert_eq(n, 1, "%d link threads", n);
	return tid;
}

/* True while thread `tid` of this process waits in futex(2). */
static bool in_futex(pid_t tid)
{
	char path[64];
	long nr = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	if (fscanf(f, "%ld", &nr) != 1)
		nr = -1; /* "running" */
	fclose(f);
	return nr == SYS_futex;
}

static void released_driver(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	cmesh_sender *ctx;
	cmesh_receiver *crx;
	struct cmesh__lane *ln;
	struct cmesh__link *l;
	struct msg64 m;
	uint64_t sent = 0;
	pid_t tid = only_link_tid();
	int64_t end;

	TU_ASSERT_RC(cmesh_channel_new(&msg64_type, NULL, &ctx, &crx), 0);
	/* The receiver moves: its senders write to a port's lane. */
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct rxmsg){ crx }, NULL, 0), 0);
	ln = cmesh__queue_tx_lane(
		cmesh__endpoint_queue(CMESH_FIELD_KIND_SENDER, ctx));
	cr_assert(ln && ln->dynamic && !cmesh__lane_bound(ln));
	l = ln->link;
	for (; sent < EARLY; sent++) {
		m = msg_of(sent);
		TU_ASSERT_RC(cmesh_sender_send(ctx, &m, NULL, 0), 0);
	}
	cr_assert_gt(backlog_of(ctx), 0, "nothing spilled");
	/* The binding's flush will wait for the lane's lock. */
	pthread_mutex_lock(&ln->lock);
	TU_ASSERT_RC(topo_post(s->sync, 'r'), 0); /* take the port: bind */
	end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	while (!(cmesh__lane_bound(ln) && in_futex(tid)) && tu_now_ns() < end)
		tu_sleep_ms(1);
	cr_assert(cmesh__lane_bound(ln) && in_futex(tid),
		  "the link thread does not flush");
	/* Its flush goes on and leaves no backlog; the rest waits here. */
	pthread_mutex_lock(&l->att_lock);
	pthread_mutex_unlock(&ln->lock);
	while (backlog_of(ctx) && tu_now_ns() < end)
		tu_sleep_ms(1);
	cr_assert_eq(backlog_of(ctx), 0, "the flush did not happen");
	/* Meanwhile: the ring fills (the peer does not read yet), the last
	 * sends spill, the sender goes (CLOSE) and the lane is released. */
	for (uint64_t spilled = 0; spilled < LATE; sent++) {
		m = msg_of(sent);
		TU_ASSERT_RC(cmesh_sender_send(ctx, &m, NULL, 0), 0);
		if (backlog_of(ctx))
			spilled++;
	}
	cmesh_sender_free(ctx);
	pthread_mutex_unlock(&l->att_lock);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     0);
	cr_assert_eq(m.seq, sent, "the peer got %llu of %llu messages",
		     (unsigned long long)m.seq, (unsigned long long)sent);
	TU_ASSERT_RC(topo_post(s->sync, 'q'), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int released_peer(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct rxmsg p;
	struct msg64 m;
	uint64_t n = 0;
	int r;

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'r');
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &p,
						   NULL, 0),
		      0);
	TOPO_CHECK(p.rx);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	while ((r = cmesh_receiver_recv_deadline(
			p.rx, cmesh_deadline_after(TU_MS(DRAIN_MS)), &m, NULL,
			0)) == 0) {
		TOPO_CHECK(msg_ok(&m, n));
		n++;
	}
	/* Every message, then closed; or what came before the wait ended. */
	TOPO_CHECK(r == -EPIPE || r == -ETIMEDOUT);
	cmesh_receiver_free(p.rx);
	TOPO_CHECK_EQ(
		cmesh_sender_send(tx, &(struct msg64){ .seq = n }, NULL, 0), 0);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'q');
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario released = {
	.down = &rxmsg_type,
	.up = &msg64_type,
	.driver = released_driver,
	.peer = released_peer,
};

Test(backlog, a_lane_released_just_after_its_last_spill_delivers_it_all)
{
	topo_run(&released, TOPO_FORK);
}
