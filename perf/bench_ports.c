/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_ports.c - what endpoints that cross a link cost: channels
 * made on the fly whose sender or receiver goes to the peer, oneshot
 * replies (rpc), a channel pair moved once and then used for ping-pong,
 * and what idle channels held across the link cost in memory, mappings
 * and fds.
 *
 * Two processes: this one (pinned to CPU 0) and one child forked at start
 * (pinned to CPU 1), joined once with cmesh_node_join_socket() over a
 * SOCK_SEQPACKET socketpair made before fork (the parent passes the
 * child's pid as cmesh_node_opts.peer_pid). The link's down channel
 * (parent -> child) carries requests:
 *
 *   struct request { op, arg, seq, stamp, cmesh_sender *tx,
 *                    cmesh_receiver *rx, cmesh_oneshot_sender *otx }
 *
 * whose three endpoint fields are of the 64-byte payload type (struct
 * bench_msg, CMESH_TYPE_DEFINE_PLAIN); the up channel (child -> parent)
 * carries that payload. Every receiver uses the library's default spin
 * (CMESH_SPIN_NS). Scenarios, all in one run:
 *
 *   1 new channel   per iteration, three timed parts:
 *                   echo: an OP_ECHO request down (endpoint fields NULL),
 *                   the child answers a payload up (the link's round
 *                   trip, the reference of the ratios: right after the
 *                   previous iteration's frees, whose teardown the link
 *                   threads do on the same two CPUs, so slower and more
 *                   variable than the echo of 2 and 3);
 *                   sender sent: cmesh_channel_new(), the sender goes to
 *                   the child in a request, the child sends one payload
 *                   on it and frees it, the parent receives it on its
 *                   local receiver: time from channel_new to that
 *                   receive; the receiver is freed after;
 *                   receiver sent: cmesh_channel_new(), the receiver goes
 *                   to the child in a request, the parent sends one
 *                   payload on its local sender right after, the child
 *                   receives it, frees the receiver and answers up: time
 *                   from channel_new until the parent has the answer; the
 *                   sender is freed after.
 *                   Info rows: the parent's own calls (channel_new + the
 *                   request's send, + the payload's send).
 *   2 rpc           cmesh_oneshot_new(), the oneshot sender goes down in
 *                   a request, the child answers with cmesh_oneshot_send(),
 *                   the parent cmesh_oneshot_recv_deadline()s: time per
 *                   call (the receiver's free after it, untimed); against
 *                   echo round trips on the link, in alternating rounds.
 *   3 moved pair    set up once: channels A and B made in the parent, A's
 *                   receiver and B's sender sent to the child; then
 *                   ping-pong of payloads parent -> A -> child -> B ->
 *                   parent against echo round trips on the link, in
 *                   alternating rounds (the child serves the pair for a
 *                   round when a request says so). The parent's
 *                   receiver of B is a local receiver that gained a lane
 *                   (its sender went away), the child's receiver of A a
 *                   port's: both differ from the link's first channels.
 *                   Target: moved pair p50 <= 1.2x echo p50.
 *   4 idle channels 1000 channels made in the parent whose sender the
 *                   child holds (an array, until told to release them).
 *                   A few channels go through the whole cycle first (warm
 *                   up), then both processes wait until their mapping and
 *                   fd counts are stable (the baseline). After the
 *                   senders are held and one message on the last channel
 *                   came through (its lane is bound, so every earlier one
 *                   is: the peer answers ports in order), each process
 *                   reads VmRSS, RssShmem (/proc/self/status), its number
 *                   of mappings (/proc/self/maps lines but [heap]: in the
 *                   forked child malloc's brk heap grows as a mapping of
 *                   its own, which stays) and open fds; again
 *                   after one message on every channel; then the child
 *                   frees the senders, the parent sees -EPIPE on each
 *                   receiver and frees it, and each process waits (at most
 *                   2 s) for its mappings and fds to be back at the
 *                   baseline, then reads them after malloc_trim(0).
 *                   Growth is shown per channel, and after the release
 *                   in all.
 *                   Target: mappings and fds back at the baseline in both
 *                   processes.
 *                   Info row: channel_new + the request's send, per
 *                   channel.
 *
 * Latency: lfence;rdtsc (calibrated against CLOCK_MONOTONIC) when the TSC
 * is invariant, else clock_gettime; one sample per iteration / round trip,
 * in the parent. Every receive has a deadline (cmesh_deadline_after(),
 * taken before the timed part: one per receive in 1, per round in 2 and
 * 3), so nothing waits forever.
 *
 * Usage: bench_ports [--smoke] [--strict] [--only 1|2|3|4]
 * --smoke: small counts (well under 3 s in all), for CI; the targets are
 * printed but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono.
 * Exit status: 0 unless a call fails (2) or a scenario hangs (3:
 * watchdog), or --strict without --smoke and a target FAILs (1). The
 * child dies with the parent (PR_SET_PDEATHSIG) and is killed and reaped
 * on every exit path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CPU_PARENT 0
#define CPU_CHILD 1
#define RECV_TIMEOUT_NS 10000000000LL /* one receive, or one round's */
#define CHILD_IDLE_NS 30000000000LL   /* child: no request for this long */
#define SETTLE_NS 2000000000ull	      /* 4: counts settle within this */
#define SETTLE_STEP_NS 1000000L	      /* 4: poll step while settling */
#define STABLE_NS 20000000ull	      /* 4: "stable": unchanged this long */
#define PAIR_TARGET 1.2		      /* 3: pair p50 <= this x echo p50 */
#define IDLE_CHANNELS 1000u
#define IDLE_WARM 10u
#define ROUND_WARM 16u /* 2, 3: unrecorded round trips of each round */
#define WATCHDOG_FULL_S 120u
#define WATCHDOG_SMOKE_S 30u

/* ---------------------------------------------------------------------- */
/* Message types                                                          */

static CMESH_TYPE_DEFINE_PLAIN(payload_type, struct bench_msg);

struct request {
	uint32_t op; /* OP_* */
	uint32_t pad;
	uint64_t arg;
	uint64_t seq, stamp; /* echoed in the answer */
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
};

CMESH_TYPE_DEFINE(request_type, struct request,
		  CMESH_FIELD_SENDER(struct request, tx, payload_type),
		  CMESH_FIELD_RECEIVER(struct request, rx, payload_type),
		  CMESH_FIELD_ONESHOT_SENDER(struct request, otx,
					     payload_type));

enum {
	OP_ECHO = 1,   /* answer {seq, stamp} up */
	OP_SEND_ONE,   /* send {seq, stamp} on tx, free it */
	OP_RECV_ONE,   /* receive one payload on rx, free it, echo it up */
	OP_REPLY,      /* cmesh_oneshot_send({seq, stamp}) on otx */
	OP_PAIR,       /* keep rx (A's) and tx (B's) */
	OP_PAIR_SERVE, /* arg round trips: receive on A, echo on B */
	OP_PAIR_DROP,  /* free A's receiver and B's sender */
	OP_HOLD,       /* keep tx in the array */
	OP_TOUCH,      /* one payload on held sender arg (TOUCH_ALL: each) */
	OP_RELEASE,    /* free every held sender */
	OP_MEASURE,    /* answer a struct usage_snap, arg: SNAP_* */
	OP_QUIT	       /* free everything, leave */
};

#define TOUCH_ALL UINT64_MAX

/* How a usage snapshot is taken. */
enum {
	SNAP_NOW = 0,	 /* at once */
	SNAP_STABLE = 1, /* once mappings and fds stay unchanged: baseline */
	SNAP_BACK = 2	 /* once mappings and fds are back at the baseline */
};

/* One process's usage, sent up in a payload's data. */
struct usage_snap {
	int64_t rss, shm;  /* VmRSS, RssShmem, KiB */
	int64_t maps, fds; /* /proc/self/maps lines, open fds */
	int64_t settle_ns; /* how long the snapshot waited */
};

_Static_assert(sizeof(struct usage_snap) <=
		       sizeof(((struct bench_msg *)0)->data),
	       "a usage snapshot fits a payload");

/* ---------------------------------------------------------------------- */
/* Process state                                                          */

static pid_t parent_pid;
static const char *volatile scen = "setup";
static cmesh_node *node;
static cmesh_sender *link_tx;	/* parent: requests; child: payloads */
static cmesh_receiver *link_rx; /* parent: payloads; child: requests */

/* 3: the parent's ends of the moved pair (B's receiver, A's sender), or
 * the child's (A's receiver, B's sender). */
static cmesh_receiver *pair_rx;
static cmesh_sender *pair_tx;

/* Child only: the held senders of 4, and its baseline. */
static cmesh_sender **held;
static uint64_t nheld, held_cap;
static struct usage_snap child_base;

static uint64_t next_seq = 1;

/* "<call>, scenario '<scen>' (rc N)": the failure, then exit(2). */
static void fail(const char *call, int rc)
{
	char what[256];

	snprintf(what, sizeof(what), "%s, scenario '%s' (rc %d)", call, scen,
		 rc);
	bench_die(what, rc < 0 ? rc : EPROTO);
}

static int64_t recv_deadline(void)
{
	return cmesh_deadline_after(RECV_TIMEOUT_NS);
}

/* ---------------------------------------------------------------------- */
/* Usage of this process                                                  */

/* The number after `key` (a line start, "\nVmRSS:") in `text`, or -1. */
static int64_t status_kib(const char *text, const char *key)
{
	const char *p = strstr(text, key);

	return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

/*
 * Reads VmRSS, RssShmem, the lines of /proc/self/maps but [heap] (the
 * kernel's seq_file hands out whole lines per read) and the open fds;
 * allocates only in bench_count_fds().
 */
static void snap_read(struct usage_snap *s)
{
	char buf[65536];
	size_t len = 0;
	int64_t lines = 0, heap = 0;
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		bench_die("open /proc/self/status", errno);
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;

			close(fd);
			bench_die("read /proc/self/status", err);
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	s->rss = status_kib(buf, "\nVmRSS:");
	s->shm = status_kib(buf, "\nRssShmem:");
	if (s->rss < 0 || s->shm < 0)
		bench_die("/proc/self/status has no VmRSS or RssShmem", ENOENT);

	fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		bench_die("open /proc/self/maps", errno);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;

			close(fd);
			bench_die("read /proc/self/maps", err);
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n')
				continue;
			lines++;
			if (i >= 6 && memcmp(buf + i - 6, "[heap]", 6) == 0)
				heap++;
		}
	}
	close(fd);
	/* Not malloc's brk heap: in a forked child its growth is a VMA of
	 * its own (not mergeable with the inherited part), which stays. */
	s->maps = lines - heap;
	s->fds = bench_count_fds();
	s->settle_ns = 0;
}

/*
 * A snapshot taken as `mode` says (SNAP_*); SNAP_BACK compares with
 * `base` after cmesh_channel_trim() (the rings kept for reuse are not
 * held resources), and is read again after malloc_trim(0): VmRSS then
 * shows what the library kept, not the free heap malloc keeps. Waits at
 * most SETTLE_NS.
 */
static void snap_take(struct usage_snap *s, int mode,
		      const struct usage_snap *base)
{
	uint64_t t0 = bench_mono_ns(), since = t0;
	int64_t settle_ns;

	if (mode == SNAP_BACK)
		cmesh_channel_trim();
	snap_read(s);
	while (mode != SNAP_NOW) {
		struct timespec ts = { 0, SETTLE_STEP_NS };
		struct usage_snap prev = *s;
		uint64_t now;

		if (mode == SNAP_BACK && s->maps <= base->maps &&
		    s->fds <= base->fds)
			break;
		if (bench_mono_ns() - t0 >= SETTLE_NS)
			break;
		nanosleep(&ts, NULL);
		if (mode == SNAP_BACK)
			cmesh_channel_trim();
		snap_read(s);
		now = bench_mono_ns();
		if (mode != SNAP_STABLE)
			continue;
		if (s->maps != prev.maps || s->fds != prev.fds)
			since = now;
		else if (now - since >= STABLE_NS)
			break;
	}
	settle_ns = (int64_t)(bench_mono_ns() - t0);
	if (mode == SNAP_BACK) {
		malloc_trim(0);
		snap_read(s);
	}
	s->settle_ns = settle_ns;
}

/* ---------------------------------------------------------------------- */
/* Child: serves requests until OP_QUIT                                   */

static void child_answer(const struct request *q)
{
	struct bench_msg m;
	int rc;

	memset(&m, 0x5a, sizeof(m));
	m.seq = q->seq;
	m.stamp = q->stamp;
	rc = cmesh_sender_send(link_tx, &m, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (up)", rc);
}

static void child_pair_serve(uint64_t n)
{
	int64_t dl = recv_deadline();
	struct bench_msg m;

	for (uint64_t i = 0; i < n; i++) {
		int rc = cmesh_receiver_recv_deadline(pair_rx, dl, &m, NULL, 0);

		if (rc != 0)
			fail("cmesh_receiver_recv_deadline (pair A)", rc);
		rc = cmesh_sender_send(pair_tx, &m, NULL, 0);
		if (rc < 0)
			fail("cmesh_sender_send (pair B)", rc);
	}
}

static void child_touch(uint64_t i)
{
	struct bench_msg m;
	int rc;

	memset(&m, 0x5a, sizeof(m));
	m.seq = i + 1;
	m.stamp = 0;
	rc = cmesh_sender_send(held[i], &m, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (held sender)", rc);
}

static void child_measure(const struct request *q)
{
	struct usage_snap s;
	struct bench_msg m;
	int rc;

	snap_take(&s, (int)q->arg, &child_base);
	if (q->arg == SNAP_STABLE)
		child_base = s;
	memset(&m, 0, sizeof(m));
	m.seq = q->seq;
	m.stamp = q->stamp;
	memcpy(m.data, &s, sizeof(s));
	rc = cmesh_sender_send(link_tx, &m, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (usage)", rc);
}

/* The scenario a request belongs to, for the child's messages. */
static const char *op_scen(uint32_t op)
{
	switch (op) {
	case OP_SEND_ONE:
	case OP_RECV_ONE:
		return "1 new channel";
	case OP_REPLY:
		return "2 rpc";
	case OP_PAIR:
	case OP_PAIR_SERVE:
	case OP_PAIR_DROP:
		return "3 moved pair";
	case OP_HOLD:
	case OP_TOUCH:
	case OP_RELEASE:
	case OP_MEASURE:
		return "4 idle channels";
	case OP_QUIT:
		return "quit";
	default:
		return "echo";
	}
}

/* Does what `q` asks; clears the endpoint fields it took. */
static void child_serve(struct request *q)
{
	struct bench_msg m;
	int rc;

	switch (q->op) {
	case OP_ECHO:
		child_answer(q);
		break;
	case OP_SEND_ONE:
		if (!q->tx)
			fail("OP_SEND_ONE without a sender", EPROTO);
		memset(&m, 0x5a, sizeof(m));
		m.seq = q->seq;
		m.stamp = q->stamp;
		rc = cmesh_sender_send(q->tx, &m, NULL, 0);
		if (rc < 0)
			fail("cmesh_sender_send (sent sender)", rc);
		cmesh_sender_free(q->tx);
		q->tx = NULL;
		break;
	case OP_RECV_ONE:
		if (!q->rx)
			fail("OP_RECV_ONE without a receiver", EPROTO);
		rc = cmesh_receiver_recv_deadline(q->rx, recv_deadline(), &m,
						  NULL, 0);
		if (rc != 0)
			fail("cmesh_receiver_recv_deadline (sent receiver)",
			     rc);
		cmesh_receiver_free(q->rx);
		q->rx = NULL;
		rc = cmesh_sender_send(link_tx, &m, NULL, 0);
		if (rc < 0)
			fail("cmesh_sender_send (up)", rc);
		break;
	case OP_REPLY:
		if (!q->otx)
			fail("OP_REPLY without a oneshot sender", EPROTO);
		memset(&m, 0x5a, sizeof(m));
		m.seq = q->seq;
		m.stamp = q->stamp;
		rc = cmesh_oneshot_send(q->otx, &m, NULL, 0);
		q->otx = NULL; /* consumed whatever the result */
		if (rc < 0)
			fail("cmesh_oneshot_send", rc);
		break;
	case OP_PAIR:
		if (!q->rx || !q->tx || pair_rx || pair_tx)
			fail("OP_PAIR without both ends, or twice", EPROTO);
		pair_rx = q->rx;
		pair_tx = q->tx;
		q->rx = NULL;
		q->tx = NULL;
		break;
	case OP_PAIR_SERVE:
		if (!pair_rx)
			fail("OP_PAIR_SERVE without a pair", EPROTO);
		child_pair_serve(q->arg);
		break;
	case OP_PAIR_DROP:
		cmesh_receiver_free(pair_rx);
		cmesh_sender_free(pair_tx);
		pair_rx = NULL;
		pair_tx = NULL;
		break;
	case OP_HOLD:
		if (!q->tx || nheld >= held_cap)
			fail("OP_HOLD without a sender, or too many", EPROTO);
		held[nheld++] = q->tx;
		q->tx = NULL;
		break;
	case OP_TOUCH:
		if (q->arg == TOUCH_ALL) {
			for (uint64_t i = 0; i < nheld; i++)
				child_touch(i);
		} else if (q->arg < nheld) {
			child_touch(q->arg);
		} else {
			fail("OP_TOUCH of a sender not held", EPROTO);
		}
		break;
	case OP_RELEASE:
		for (uint64_t i = 0; i < nheld; i++)
			cmesh_sender_free(held[i]);
		nheld = 0;
		break;
	case OP_MEASURE:
		child_measure(q);
		break;
	default:
		fail("unknown request", EPROTO);
	}
}

/* Never returns. */
static void child_main(int sock, bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	int64_t dl;
	bool busy = false;
	int rc;

	bench_child_enter(parent_pid);
	if (pin)
		bench_pin_self(CPU_CHILD);
	rc = cmesh_node_join_socket(sock, &payload_type, &request_type, &o,
				    &node, &link_tx, &link_rx);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	held_cap = IDLE_CHANNELS;
	held = bench_xcalloc(held_cap, sizeof(*held));
	/* One deadline per CHILD_IDLE_NS window with a request: no clock
	 * read per request on the echo path. */
	dl = cmesh_deadline_after(CHILD_IDLE_NS);
	for (;;) {
		struct request q;

		rc = cmesh_receiver_recv_deadline(link_rx, dl, &q, NULL, 0);
		if (rc == -ETIMEDOUT && busy) {
			busy = false;
			dl = cmesh_deadline_after(CHILD_IDLE_NS);
			continue;
		}
		if (rc == -EPIPE)
			break; /* the parent freed its sender */
		if (rc != 0)
			fail("cmesh_receiver_recv_deadline (requests)", rc);
		busy = true;
		scen = op_scen(q.op);
		if (q.op == OP_QUIT) {
			cmesh_sender_free(q.tx);
			cmesh_receiver_free(q.rx);
			cmesh_oneshot_sender_free(q.otx);
			break;
		}
		child_serve(&q);
		/* What the request carried and the op did not take. */
		cmesh_sender_free(q.tx);
		cmesh_receiver_free(q.rx);
		cmesh_oneshot_sender_free(q.otx);
	}
	for (uint64_t i = 0; i < nheld; i++)
		cmesh_sender_free(held[i]);
	cmesh_receiver_free(pair_rx);
	cmesh_sender_free(pair_tx);
	cmesh_sender_free(link_tx);
	cmesh_receiver_free(link_rx);
	/* The parent frees its receiver once it saw "closed": -EPIPE. */
	rc = cmesh_node_close(node, cmesh_deadline_after(5000000000LL));
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_node_close", rc);
	_exit(0);
}

/* ---------------------------------------------------------------------- */
/* Parent: the child and the link                                         */

static void start_child(bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	int sock, rc;
	pid_t pid = bench_fork_pair(&sock);

	if (pid == 0)
		child_main(sock, pin);
	o.peer_pid = pid;
	rc = cmesh_node_join_socket(sock, &request_type, &payload_type, &o,
				    &node, &link_tx, &link_rx);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
}

/* Tells the child to leave, waits for its "closed", reaps it. */
static void stop_child(void)
{
	struct request q = { .op = OP_QUIT };
	struct bench_msg m;
	int rc;

	scen = "quit";
	rc = cmesh_sender_send(link_tx, &q, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (OP_QUIT)", rc);
	cmesh_sender_free(link_tx);
	rc = cmesh_receiver_recv_deadline(link_rx, recv_deadline(), &m, NULL,
					  0);
	if (rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_receiver_recv_deadline after OP_QUIT", rc);
	cmesh_receiver_free(link_rx);
	cmesh_node_free(node);
	link_tx = NULL;
	link_rx = NULL;
	node = NULL;
	bench_child_reap(0);
}

static void send_req(const struct request *q, const char *what)
{
	int rc = cmesh_sender_send(link_tx, q, NULL, 0);

	if (rc < 0)
		fail(what, rc);
}

static inline void recv_payload(cmesh_receiver *rx, int64_t dl,
				struct bench_msg *m, const char *what)
{
	int rc = cmesh_receiver_recv_deadline(rx, dl, m, NULL, 0);

	if (rc != 0)
		fail(what, rc);
}

/* The child's usage snapshot, taken as `mode` says. */
static void child_snap(int mode, struct usage_snap *out)
{
	struct request q = { .op = OP_MEASURE, .arg = (uint64_t)mode };
	struct bench_msg m;

	q.seq = next_seq++;
	q.stamp = 0;
	send_req(&q, "cmesh_sender_send (OP_MEASURE)");
	recv_payload(link_rx,
		     cmesh_deadline_after(RECV_TIMEOUT_NS + (int64_t)SETTLE_NS),
		     &m, "cmesh_receiver_recv_deadline (usage)");
	bench_check_echo(&m, q.seq, 0);
	memcpy(out, m.data, sizeof(*out));
}

/* ---------------------------------------------------------------------- */
/* Rows                                                                   */

enum {
	R1_ECHO,
	R1_SENDER,
	R1_SENDER_CALLS,
	R1_RECEIVER,
	R1_RECEIVER_CALLS,
	R2_ECHO,
	R2_RPC,
	R3_ECHO,
	R3_PAIR,
	R4_NEW,
	NROWS
};

struct row {
	const char *scen; /* on the scenario's first row */
	const char *name;
	int base;      /* row of the ratio's reference, or -1 */
	double target; /* > 0: ratio <= target */
	struct bench_result res;
	bool done;
};

static struct row rows[NROWS] = {
	[R1_ECHO] = { "1 new channel", "echo (ref)", -1, 0, { 0 }, false },
	[R1_SENDER] = { "", "sender sent", R1_ECHO, 0, { 0 }, false },
	[R1_SENDER_CALLS] = { "", " new+send", R1_ECHO, 0, { 0 }, false },
	[R1_RECEIVER] = { "", "receiver sent", R1_ECHO, 0, { 0 }, false },
	[R1_RECEIVER_CALLS] = { "", " new+send+send", R1_ECHO, 0, { 0 }, false },
	[R2_ECHO] = { "2 rpc", "echo (ref)", -1, 0, { 0 }, false },
	[R2_RPC] = { "", "oneshot rpc", R2_ECHO, 0, { 0 }, false },
	[R3_ECHO] = { "3 moved pair rtt", "echo (ref)", -1, 0, { 0 }, false },
	[R3_PAIR] = { "", "moved pair", R3_ECHO, PAIR_TARGET, { 0 }, false },
	[R4_NEW] = { "4 idle channels", "new+send", -1, 0, { 0 }, false },
};

/* Sorts v[0..n) into the row's percentiles (n samples, no rate). */
static void row_fill(int r, uint64_t *v, size_t n)
{
	rows[r].res.n = n;
	bench_fill_latency(&rows[r].res, v, n, bench_ns_per_tick);
	rows[r].done = true;
}

static double row_ratio(int r)
{
	return bench_ratio(&rows[rows[r].base].res, &rows[r].res, false);
}

/* ---------------------------------------------------------------------- */
/* 1 new channel                                                          */

/* One timed echo round trip on the link: its ticks. */
static uint64_t echo_once(void)
{
	struct request q = { .op = OP_ECHO };
	int64_t dl = recv_deadline();
	struct bench_msg r;
	uint64_t t0, t1;

	q.seq = next_seq++;
	t0 = bench_now_ticks();
	q.stamp = t0;
	send_req(&q, "cmesh_sender_send (OP_ECHO)");
	recv_payload(link_rx, dl, &r, "cmesh_receiver_recv_deadline (echo)");
	t1 = bench_now_ticks();
	bench_check_echo(&r, q.seq, t0);
	return t1 - t0;
}

/* A channel whose sender goes to the child: total and parent's calls. */
static void sender_sent_once(uint64_t *total, uint64_t *calls)
{
	struct request q = { .op = OP_SEND_ONE };
	int64_t dl = recv_deadline();
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct bench_msg r;
	uint64_t t0, t1, t2;
	int rc;

	q.seq = next_seq++;
	t0 = bench_now_ticks();
	rc = cmesh_channel_new(&payload_type, NULL, &tx, &rx);
	if (rc < 0)
		fail("cmesh_channel_new", rc);
	q.stamp = t0;
	q.tx = tx;
	send_req(&q, "cmesh_sender_send (request with a sender)");
	t1 = bench_now_ticks();
	recv_payload(rx, dl, &r,
		     "cmesh_receiver_recv_deadline (receiver of the sent "
		     "sender)");
	t2 = bench_now_ticks();
	bench_check_echo(&r, q.seq, t0);
	cmesh_receiver_free(rx);
	*total = t2 - t0;
	*calls = t1 - t0;
}

/* A channel whose receiver goes to the child: total and parent's calls. */
static void receiver_sent_once(uint64_t *total, uint64_t *calls)
{
	struct request q = { .op = OP_RECV_ONE };
	int64_t dl = recv_deadline();
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct bench_msg m, r;
	uint64_t t0, t1, t2;
	int rc;

	memset(&m, 0x5a, sizeof(m));
	m.seq = next_seq++;
	t0 = bench_now_ticks();
	rc = cmesh_channel_new(&payload_type, NULL, &tx, &rx);
	if (rc < 0)
		fail("cmesh_channel_new", rc);
	q.rx = rx;
	send_req(&q, "cmesh_sender_send (request with a receiver)");
	m.stamp = t0;
	rc = cmesh_sender_send(tx, &m, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (sender of the sent receiver)", rc);
	t1 = bench_now_ticks();
	recv_payload(link_rx, dl, &r,
		     "cmesh_receiver_recv_deadline (answer to the sent "
		     "receiver)");
	t2 = bench_now_ticks();
	bench_check_echo(&r, m.seq, t0);
	cmesh_sender_free(tx);
	*total = t2 - t0;
	*calls = t1 - t0;
}

static void run_new_channel(uint64_t warm, uint64_t n)
{
	uint64_t *v[5];

	scen = "1 new channel";
	bench_child_signals("scenario '1 new channel'");
	for (int k = 0; k < 5; k++)
		v[k] = bench_xcalloc(n, sizeof(uint64_t));
	for (uint64_t i = 0; i < warm + n; i++) {
		uint64_t e, st, sc, rt, rc;

		e = echo_once();
		sender_sent_once(&st, &sc);
		receiver_sent_once(&rt, &rc);
		if (i < warm)
			continue;
		v[0][i - warm] = e;
		v[1][i - warm] = st;
		v[2][i - warm] = sc;
		v[3][i - warm] = rt;
		v[4][i - warm] = rc;
	}
	for (int k = 0; k < 5; k++) {
		row_fill(R1_ECHO + k, v[k], n);
		free(v[k]);
	}
}

/* ---------------------------------------------------------------------- */
/* 2 rpc, 3 moved pair: round trips                                       */

struct rtt {
	uint64_t base, warm, n; /* BENCH_RTT_PING's */
	uint64_t *samples;
	uint64_t elapsed;
	int64_t dl; /* this round's receive deadline */
	cmesh_oneshot_receiver *orx;
};

static inline void echo_put(const struct bench_msg *m)
{
	struct request q = { .op = OP_ECHO };

	q.seq = m->seq;
	q.stamp = m->stamp;
	send_req(&q, "cmesh_sender_send (OP_ECHO)");
}

static inline void rpc_put(struct rtt *c, const struct bench_msg *m)
{
	struct request q = { .op = OP_REPLY };
	int rc;

	rc = cmesh_oneshot_new(&payload_type, &q.otx, &c->orx);
	if (rc < 0)
		fail("cmesh_oneshot_new", rc);
	q.seq = m->seq;
	q.stamp = m->stamp;
	send_req(&q, "cmesh_sender_send (request with a oneshot sender)");
}

static inline void rpc_get(struct rtt *c, struct bench_msg *r)
{
	int rc = cmesh_oneshot_recv_deadline(c->orx, c->dl, r, NULL, 0);

	if (rc != 0)
		fail("cmesh_oneshot_recv_deadline", rc);
}

static inline void pair_put(const struct bench_msg *m)
{
	int rc = cmesh_sender_send(pair_tx, m, NULL, 0);

	if (rc < 0)
		fail("cmesh_sender_send (pair A)", rc);
}

BENCH_RTT_PING(echo_ping, struct rtt, echo_put(&m),
	       recv_payload(link_rx, c->dl, &r,
			    "cmesh_receiver_recv_deadline (echo)"))

BENCH_RTT_PING(pair_ping, struct rtt, pair_put(&m),
	       recv_payload(pair_rx, c->dl, &r,
			    "cmesh_receiver_recv_deadline (pair B)"))

/* As BENCH_RTT_PING, each call's oneshot receiver freed after t1. */
static void rpc_ping(struct rtt *c)
{
	struct bench_msg m, r;
	uint64_t n = c->warm + c->n, start = 0;

	memset(&m, 0x5a, sizeof(m));
	for (uint64_t i = 0; i < n; i++) {
		uint64_t seq = c->base + i, t0, t1;

		if (i == c->warm)
			start = bench_now_ticks();
		t0 = bench_now_ticks();
		m.seq = seq;
		m.stamp = t0;
		rpc_put(c, &m);
		rpc_get(c, &r);
		t1 = bench_now_ticks();
		cmesh_oneshot_receiver_free(c->orx);
		c->orx = NULL;
		bench_check_echo(&r, seq, t0);
		if (i >= c->warm)
			c->samples[i - c->warm] = t1 - t0;
	}
	c->elapsed += bench_now_ticks() - start;
}

/* Round `i` of `rt`: warm (first round) or ROUND_WARM, then `per`. */
static void rtt_round(struct rtt *rt, uint64_t *samples, uint64_t i,
		      uint64_t warm, uint64_t per)
{
	rt->warm = i == 0 ? warm : ROUND_WARM;
	rt->n = per;
	rt->samples = samples + i * per;
	rt->base = next_seq;
	next_seq += rt->warm + per;
	rt->dl = recv_deadline();
}

static struct bench_parts parts2, parts3;

static void run_rpc(uint64_t rounds, uint64_t per, uint64_t warm)
{
	uint64_t *se = bench_xcalloc(rounds * per, sizeof(uint64_t));
	uint64_t *sr = bench_xcalloc(rounds * per, sizeof(uint64_t));
	struct rtt e, c;

	scen = "2 rpc";
	bench_child_signals("scenario '2 rpc'");
	memset(&e, 0, sizeof(e));
	memset(&c, 0, sizeof(c));
	for (uint64_t i = 0; i < rounds; i++) {
		rtt_round(&e, se, i, warm, per);
		rtt_round(&c, sr, i, warm, per);
		if (i % 2) {
			rpc_ping(&c);
			echo_ping(&e);
		} else {
			echo_ping(&e);
			rpc_ping(&c);
		}
		bench_note_round(&parts2, se + i * per, sr + i * per, per);
	}
	bench_fill_rtt(&rows[R2_ECHO].res, se, rounds * per, e.elapsed);
	bench_fill_rtt(&rows[R2_RPC].res, sr, rounds * per, c.elapsed);
	rows[R2_ECHO].done = rows[R2_RPC].done = true;
	free(se);
	free(sr);
}

static void run_pair(uint64_t rounds, uint64_t per, uint64_t warm)
{
	uint64_t *se = bench_xcalloc(rounds * per, sizeof(uint64_t));
	uint64_t *sp = bench_xcalloc(rounds * per, sizeof(uint64_t));
	struct request q = { .op = OP_PAIR };
	cmesh_sender *txb;
	cmesh_receiver *rxa;
	struct bench_msg m;
	struct rtt e, p;
	int rc;

	scen = "3 moved pair";
	bench_child_signals("scenario '3 moved pair'");
	rc = cmesh_channel_new(&payload_type, NULL, &pair_tx, &rxa);
	if (rc < 0)
		fail("cmesh_channel_new (A)", rc);
	rc = cmesh_channel_new(&payload_type, NULL, &txb, &pair_rx);
	if (rc < 0)
		fail("cmesh_channel_new (B)", rc);
	q.rx = rxa;
	q.tx = txb;
	send_req(&q, "cmesh_sender_send (request with A's receiver and B's "
		     "sender)");
	memset(&e, 0, sizeof(e));
	memset(&p, 0, sizeof(p));
	for (uint64_t i = 0; i < rounds; i++) {
		struct request s = { .op = OP_PAIR_SERVE };

		rtt_round(&e, se, i, warm, per);
		rtt_round(&p, sp, i, warm, per);
		s.arg = p.warm + p.n;
		if (i % 2)
			echo_ping(&e);
		send_req(&s, "cmesh_sender_send (OP_PAIR_SERVE)");
		pair_ping(&p);
		if (i % 2 == 0)
			echo_ping(&e);
		bench_note_round(&parts3, se + i * per, sp + i * per, per);
	}
	bench_fill_rtt(&rows[R3_ECHO].res, se, rounds * per, e.elapsed);
	bench_fill_rtt(&rows[R3_PAIR].res, sp, rounds * per, p.elapsed);
	rows[R3_ECHO].done = rows[R3_PAIR].done = true;
	free(se);
	free(sp);

	q = (struct request){ .op = OP_PAIR_DROP };
	send_req(&q, "cmesh_sender_send (OP_PAIR_DROP)");
	cmesh_sender_free(pair_tx);
	pair_tx = NULL;
	rc = cmesh_receiver_recv_deadline(pair_rx, recv_deadline(), &m, NULL,
					  0);
	if (rc != -EPIPE)
		fail("cmesh_receiver_recv_deadline (pair B, after the child "
		     "freed its sender: want -EPIPE)",
		     rc);
	cmesh_receiver_free(pair_rx);
	pair_rx = NULL;
}

/* ---------------------------------------------------------------------- */
/* 4 idle channels                                                        */

struct idle_result {
	uint32_t n;
	struct usage_snap p0, p1, p2, p3; /* parent: base, idle, used, freed */
	struct usage_snap c0, c1, c2, c3; /* the child's */
	bool done;
};

static struct idle_result idle;

/* n channels whose senders the child holds; times[i] if non-NULL. */
static void idle_make(cmesh_receiver **rx, uint32_t n, uint64_t *times)
{
	for (uint32_t i = 0; i < n; i++) {
		struct request q = { .op = OP_HOLD };
		uint64_t t0, t1;
		int rc;

		t0 = bench_now_ticks();
		rc = cmesh_channel_new(&payload_type, NULL, &q.tx, &rx[i]);
		if (rc < 0)
			fail("cmesh_channel_new", rc);
		send_req(&q, "cmesh_sender_send (request with a sender to "
			     "hold)");
		t1 = bench_now_ticks();
		if (times)
			times[i] = t1 - t0;
	}
}

/* One message on held sender `i` (TOUCH_ALL: on each of n). */
static void idle_touch(cmesh_receiver **rx, uint32_t n, uint64_t which)
{
	struct request q = { .op = OP_TOUCH, .arg = which };
	int64_t dl = recv_deadline();
	uint64_t lo = which == TOUCH_ALL ? 0 : which;
	uint64_t hi = which == TOUCH_ALL ? n : which + 1;
	struct bench_msg m;

	send_req(&q, "cmesh_sender_send (OP_TOUCH)");
	for (uint64_t i = lo; i < hi; i++) {
		recv_payload(rx[i], dl, &m,
			     "cmesh_receiver_recv_deadline (idle channel)");
		bench_check_seq(m.seq, i + 1);
	}
}

/* The child frees its senders; each receiver sees -EPIPE, then goes. */
static void idle_release(cmesh_receiver **rx, uint32_t n)
{
	struct request q = { .op = OP_RELEASE };
	int64_t dl = recv_deadline();
	struct bench_msg m;

	send_req(&q, "cmesh_sender_send (OP_RELEASE)");
	for (uint32_t i = 0; i < n; i++) {
		int rc = cmesh_receiver_recv_deadline(rx[i], dl, &m, NULL, 0);

		if (rc != -EPIPE)
			fail("cmesh_receiver_recv_deadline (idle channel "
			     "after the child freed its sender: want -EPIPE)",
			     rc);
		cmesh_receiver_free(rx[i]);
		rx[i] = NULL;
	}
}

static void run_idle(uint32_t n)
{
	cmesh_receiver **rx = bench_xcalloc(n, sizeof(*rx));
	uint64_t *times = bench_xcalloc(n, sizeof(uint64_t));

	scen = "4 idle channels";
	bench_child_signals("scenario '4 idle channels'");
	/* Warm up: whatever a link makes once for its first ports. */
	idle_make(rx, IDLE_WARM, NULL);
	idle_touch(rx, IDLE_WARM, TOUCH_ALL);
	idle_release(rx, IDLE_WARM);

	idle.n = n;
	snap_take(&idle.p0, SNAP_STABLE, NULL);
	child_snap(SNAP_STABLE, &idle.c0);
	idle_make(rx, n, times);
	idle_touch(rx, n, n - 1); /* every lane bound, none used */
	snap_take(&idle.p1, SNAP_NOW, NULL);
	child_snap(SNAP_NOW, &idle.c1);
	idle_touch(rx, n, TOUCH_ALL);
	snap_take(&idle.p2, SNAP_NOW, NULL);
	child_snap(SNAP_NOW, &idle.c2);
	idle_release(rx, n);
	snap_take(&idle.p3, SNAP_BACK, &idle.p0);
	child_snap(SNAP_BACK, &idle.c3);
	idle.done = true;
	row_fill(R4_NEW, times, n);
	free(times);
	free(rx);
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

static void print_row(int k)
{
	const struct row *r = &rows[k];
	char p50[16], p99[16], p999[16], ratio[16] = "-", tgt[16] = "-";
	const char *res = "";

	bench_fmt_ns(p50, sizeof(p50), r->res.p50);
	bench_fmt_ns(p99, sizeof(p99), r->res.p99);
	bench_fmt_ns(p999, sizeof(p999), r->res.p999);
	if (r->base >= 0 && rows[r->base].done)
		snprintf(ratio, sizeof(ratio), "%.2fx", row_ratio(k));
	if (r->target > 0) {
		snprintf(tgt, sizeof(tgt), "<=%.1fx", r->target);
		res = row_ratio(k) <= r->target ? "PASS" : "FAIL";
	} else if (r->base < 0) {
		snprintf(tgt, sizeof(tgt), "ref");
	} else {
		snprintf(tgt, sizeof(tgt), "info");
	}
	printf("%-18s %-15s %7" PRIu64 " %9s %9s %9s %7s %7s  %s\n", r->scen,
	       r->name, r->res.n, p50, p99, p999, ratio, tgt, res);
	bench_json_result(r->scen, r->name, &r->res, NULL);
}

/* Growth from a to b, per channel (n) or in all (n = 1). */
static void print_usage(const char *who, const char *state,
			const struct usage_snap *a, const struct usage_snap *b,
			double n)
{
	printf("%-8s %-22s %10.2f %12.2f %8.3f %8.3f\n", who, state,
	       (double)(b->rss - a->rss) / n, (double)(b->shm - a->shm) / n,
	       (double)(b->maps - a->maps) / n, (double)(b->fds - a->fds) / n);
}

static bool idle_counts_back(void)
{
	return idle.p3.maps <= idle.p0.maps && idle.p3.fds <= idle.p0.fds &&
	       idle.c3.maps <= idle.c0.maps && idle.c3.fds <= idle.c0.fds;
}

static void print_idle(void)
{
	double n = (double)idle.n;

	printf("# 4 idle channels: %u channels made here, their senders held "
	       "by the child; growth over the baseline (mappings and fds "
	       "stable: parent %" PRId64 " maps %" PRId64 " fds, child %" PRId64
	       " maps %" PRId64 " fds)\n",
	       idle.n, idle.p0.maps, idle.p0.fds, idle.c0.maps, idle.c0.fds);
	printf("%-8s %-22s %10s %12s %8s %8s\n", "process", "state",
	       "VmRSS KiB", "RssShmem KiB", "maps", "fds");
	print_usage("parent", "idle, per channel", &idle.p0, &idle.p1, n);
	print_usage("", "1 msg each, per channel", &idle.p0, &idle.p2, n);
	print_usage("", "released, trimmed, all", &idle.p0, &idle.p3, 1.0);
	print_usage("child", "idle, per channel", &idle.c0, &idle.c1, n);
	print_usage("", "1 msg each, per channel", &idle.c0, &idle.c2, n);
	print_usage("", "released, trimmed, all", &idle.c0, &idle.c3, 1.0);
	printf("# 4: after the release the parent's counts %s in %.1f ms, the "
	       "child's %s in %.1f ms (waited at most %.0f ms each)\n",
	       idle.p3.maps <= idle.p0.maps && idle.p3.fds <= idle.p0.fds ?
		       "were back" :
		       "were NOT back",
	       (double)idle.p3.settle_ns / 1e6,
	       idle.c3.maps <= idle.c0.maps && idle.c3.fds <= idle.c0.fds ?
		       "were back" :
		       "were NOT back",
	       (double)idle.c3.settle_ns / 1e6, (double)SETTLE_NS / 1e6);
	printf("# 4: maps = /proc/self/maps lines but [heap]; \"released, "
	       "trimmed, all\": growth in all once the counts were back, read "
	       "after malloc_trim(0) (RssShmem there: pages of the link's own "
	       "rings that this scenario's requests reached first)\n");
}

/* One target line; returns true if it passes. */
static bool print_target(const char *what, const char *value, const char *limit,
			 bool ok)
{
	printf("%-46s %12s %10s  %s\n", what, value, limit,
	       ok ? "PASS" : "FAIL");
	bench_json_target(what, value, limit, ok);
	return ok;
}

static int print_targets(void)
{
	char v[32];
	int fails = 0;

	printf("%-46s %12s %10s  %s\n", "target", "value", "limit", "result");
	if (rows[R3_PAIR].done) {
		snprintf(v, sizeof(v), "%.2fx", row_ratio(R3_PAIR));
		fails += !print_target("3 moved pair p50 / link echo p50", v,
				       "<=1.2x",
				       row_ratio(R3_PAIR) <= PAIR_TARGET);
	}
	if (idle.done) {
		snprintf(v, sizeof(v), "%+" PRId64 "/%+" PRId64,
			 (idle.p3.maps - idle.p0.maps) +
				 (idle.c3.maps - idle.c0.maps),
			 (idle.p3.fds - idle.p0.fds) +
				 (idle.c3.fds - idle.c0.fds));
		fails += !print_target("4 maps/fds over baseline after release",
				       v, "<=0", idle_counts_back());
	}
	return fails;
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

struct config {
	bool smoke, strict;
	int only; /* 0: all, else 1..4 */
	bool two_cpus;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_ports [--smoke] [--strict] [--only 1|2|3|4]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	cfg->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (bench_common_arg(a, &cfg->smoke, &cfg->strict, usage))
			continue;
		if (!bench_only_arg(argc, argv, &i, 4, &cfg->only))
			bench_bad_arg(a, usage);
	}
}

static bool want(const struct config *cfg, int k)
{
	return cfg->only == 0 || cfg->only == k;
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	uint64_t t0, n1, warm1, rounds2, per2, rounds3, per3, secs[5];
	int fails;

	bench_name = "bench_ports";
	bench_die_hook = bench_child_die_hook;
	bench_check_dies = true;
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	n1 = cfg.smoke ? 20 : 2000;
	warm1 = cfg.smoke ? 5 : 100;
	rounds2 = cfg.smoke ? 2 : 10;
	per2 = cfg.smoke ? 100 : 1000; /* a call takes ~250 us */
	rounds3 = cfg.smoke ? 2 : 20;
	per3 = cfg.smoke ? 1000 : 10000;
	parent_pid = getpid();
	bench_child_signals("setup");

	cfg.two_cpus = bench_cpus_usable(CPU_PARENT, CPU_CHILD) &&
		       bench_pin_self(CPU_PARENT);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_PARENT, CPU_CHILD, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();

	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);
	start_child(cfg.two_cpus);
	secs[0] = bench_mono_ns();
	if (want(&cfg, 1))
		run_new_channel(warm1, n1);
	secs[1] = bench_mono_ns();
	if (want(&cfg, 2))
		run_rpc(rounds2, per2, warm1 * 10);
	secs[2] = bench_mono_ns();
	if (want(&cfg, 3))
		run_pair(rounds3, per3, warm1 * 10);
	secs[3] = bench_mono_ns();
	if (want(&cfg, 4))
		run_idle(IDLE_CHANNELS);
	secs[4] = bench_mono_ns();
	stop_child();
	alarm(0);
	bench_cpu_usage_read(&usage1);

	printf("%-18s %-15s %7s %9s %9s %9s %7s %7s  %s\n", "scenario", "row",
	       "n", "p50 ns", "p99 ns", "p99.9 ns", "ratio", "target",
	       "result");
	for (int k = 0; k < NROWS; k++)
		if (rows[k].done)
			print_row(k);
	if (idle.done)
		print_idle();
	fails = print_targets();
	printf("# times in ns from the parent's clock; ratio: p50 against the "
	       "scenario's echo (ref) row, the link's own round trip (an "
	       "OP_ECHO request down, its endpoint fields NULL, a 64-byte "
	       "payload up); 1: one echo, one sender sent, one receiver sent "
	       "per iteration, after %" PRIu64 " unrecorded; new+send(+send) "
	       "= the parent's own calls; 2, 3: alternating rounds, "
	       "%u unrecorded round trips each; 4 new+send: per channel\n",
	       warm1, ROUND_WARM);
	bench_print_parts("2 rpc / echo", "echo", &parts2);
	bench_print_parts("3 moved pair / echo", "echo", &parts3);
	printf("# wall time per scenario:");
	for (int k = 1; k <= 4; k++)
		if (want(&cfg, k))
			printf(" %d: %.2fs", k,
			       (double)(secs[k] - secs[k - 1]) * 1e-9);
	printf("\n");
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
