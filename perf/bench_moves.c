/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_moves.c - channels whose ends moved between processes, once
 * or through others (second moves: a forwarder in each process that sent
 * an endpoint whose peer was elsewhere, src/bridge.c), against a channel
 * moved once and the link's own first channels, and what a move costs, in
 * the same run (issue 10: "a channel that was moved three times runs at
 * the speed of one created in place; a move takes how long (p50/p99);
 * creating a channel across an existing link costs how long").
 *
 * Three processes: this one (P0, pinned to CPU 0) forks P1 (not pinned:
 * it gets back the affinity mask P0 had before it pinned itself) and P2
 * (pinned to CPU 1). Every pair is joined with cmesh_node_join_socket()
 * over a SOCK_SEQPACKET socketpair made before the forks (peer_pid set
 * where the joining process knows the peer's pid: P0 both children's, the
 * children P0's, P2 P1's), the pairs in one global order (0-1, 0-2, 1-2)
 * so that no two joins wait on each other; then P0 and P2 join a second
 * link over a socketpair of their own (row 4b). Each process's link threads
 * (and a forwarder thread, "cmesh-forward") start with the affinity of
 * the thread that starts them: P0's on CPU 0, P2's on CPU 1, P1's on
 * either (see --unpin-forwarders). Every link's first channels carry the
 * control type, both ways:
 *
 *   struct ctl { op, slot, n, hop, nroute, route[6], seq, stamp,
 *                cmesh_sender *tx, cmesh_receiver *rx }     (56 bytes on LP64)
 *
 * whose endpoint fields are of the 16-byte payload type struct pay { seq,
 * stamp } (CMESH_TYPE_DEFINE_PLAIN). A control message travels along
 * `route`: each process on it but the last sends it on over its own link
 * to the next (which moves its endpoints again), the last acts on it. A
 * process that waits for a control message waits on the link it will come
 * from (P0 tells a process beforehand when that is not P0's link, outside
 * every timed part); every receive, control or payload, uses the
 * library's default spin (CMESH_SPIN_NS: spins, then sleeps). Rows:
 *
 *   1 in place        set up once: P0 makes channels A (P0 -> P2) and
 *                     B (P2 -> P0) with cmesh_channel_new() (default
 *                     options) and sends A's receiver and B's sender to
 *                     P2 in one control message over the P0-P2 link.
 *                     Round trip: P0 sends a struct pay {seq, stamp} on
 *                     A, P2 receives it, checks seq, sends it back on B,
 *                     P0 receives it and checks seq and stamp. One
 *                     sample per round trip, P0's clock. The reference
 *                     of rows 2, 3, 4 and 4b.
 *   2 moved via P1    the same, but the control message carrying A's
 *                     receiver and B's sender goes P0 -> P1 -> P2: P1
 *                     sends it on over the P1-P2 link, through a
 *                     forwarder for each, until P2 has claimed A's
 *                     senders and B's receiver from P0 (src/link_claim.c:
 *                     both are sole users of their lanes); then P1's
 *                     forwarders end and both channels are direct.
 *   3 moved 3 times   the same, moved one move at a time: P0 -> P2,
 *                     then P2 -> P1, then P1 -> P2 (OP_PASS), each given
 *                     SETTLE_US (50 ms, untimed) for its claims before
 *                     the next (an endpoint sent on while its own claim
 *                     is unanswered goes through a forwarder for good).
 *                     Target (issue 10, "runs at the speed of one
 *                     created in place"): p50 <= 1.2x row 1's p50.
 *   3b split          the same as row 1, but before A's receiver goes to
 *                     P2, a clone of A's sender goes to P1, which keeps
 *                     it (and sends nothing): A's receiver leaves P0
 *                     with a sender here and a lane, so it is split
 *                     (src/port.c, export_split): P0's sender writes
 *                     P2's lane directly, P0's forwarder reads only P1's
 *                     (idle) lane. Without the split every message of A
 *                     went through that forwarder (a hop on P0's CPU).
 *   3c moved 41 times the same as row 3, with 41 moves: P0 -> P2, then
 *                     P2 -> P1 -> P2 twenty times (MANY_SETTLE_US, 20
 *                     ms, after each). Past its receiver's 32nd claim
 *                     A's senders' queue is in reclaim mode (src/
 *                     queue_claim.c): each send counts itself in and out
 *                     of a counter on its queue, so that the lanes the
 *                     receiver leaves can go. No target: the price of
 *                     that mode against row 1; and in a stream (a note,
 *                     after the rows): P0 sends 1,000,000 (--smoke
 *                     20,000) messages on A as fast as it can, P2 checks
 *                     each, and says when it has them all: msg/s, rows 1
 *                     and 3c alternating, 5 reps each.
 *   4 link's own      the P0-P2 link's first channels (the join's pair),
 *                     one struct ctl each way (op PING / PONG, endpoint
 *                     fields NULL; a type with endpoint fields sends
 *                     through the port layer even then), P2 checking
 *                     seq, P0 seq and stamp: the reference the issue
 *                     names (the join's own pair, its own type).
 *   4b 2nd link, 16 B a second P0-P2 link whose first channels carry
 *                     struct pay both ways (no endpoint field: the
 *                     inline send and receive): the same ping-pong as row
 *                     1 (P2 checks seq, P0 seq and stamp) on the join's
 *                     pair, the raw reference with row 1's message type.
 *   5a move, direct   per sample: P0 makes a channel (cmesh_channel_new,
 *                     untimed), then, timed: sends its receiver to P2 in
 *                     a control message over the P0-P2 link, at once
 *                     sends one struct pay {seq, stamp} on its sender;
 *                     P2 takes the receiver, receives that message,
 *                     checks seq, frees the receiver and answers {seq,
 *                     stamp} up the P2-P0 link's first channel; the
 *                     sample ends when P0 has that answer (checked).
 *                     Covers the port's creation (two memfds, an answer
 *                     through both link threads) and the first delivery.
 *                     P0 then frees the sender (untimed).
 *   5b move, via P1   the same with the control message going P0 -> P1
 *                     -> P2: P1 makes a forwarder for the receiver (a new
 *                     pair, its receiver to P2), so this covers two port
 *                     creations, the forwarder's creation and the first
 *                     message through it. The frees end the forwarder
 *                     (its senders gone; P2's receiver gone). P1's
 *                     forwarder thread is already up (rows 2 and 3 keep
 *                     forwarders there for the whole run), so no thread
 *                     start is timed. Ratio: to 5a.
 *   6 new channel     the samples of 5a, timed from just before
 *                     cmesh_channel_new() instead: a new channel across
 *                     an existing link, until the first message on it
 *                     came back through the link. Ratio: to row 4b.
 *
 * The frees of one move sample are not waited for: the next sample starts
 * at once, while the link threads (and P1's forwarder thread) tear them
 * down on the same CPUs. At the end, after every channel is freed, each
 * child says whether its forwarder thread ended within 2 s (it ends with
 * the process's last forwarder): "forwarders ended" in the notes.
 *
 * Every message's seq is checked where it arrives, and every answer's
 * stamp (wrong: exit 2). The rows alternate in rounds, their order
 * reversed every other round, so that drift (e.g. the host moving the
 * vCPUs) hits them alike; each round of a round-trip row starts with
 * unrecorded round trips, each round of a move row with unrecorded
 * samples. Counts per round (full / --smoke): rows 1, 3b, 4, 4b 20000 / 200
 * round trips, rows 2, 3, 3c 2000 / 20, rows 5a, 5b 40 / 3 moves; 10 / 2
 * rounds (times CMESH_BENCH_SCALE). Compare rows of one run only.
 *
 * Latency: lfence;rdtsc (calibrated against CLOCK_MONOTONIC) when the TSC
 * is invariant, else clock_gettime; one sample per round trip or move.
 *
 * Usage: bench_moves [--smoke] [--strict] [--unpin-forwarders]
 * --smoke: tiny counts (well under 5 s), for CI; the target is printed
 * but never changes the exit status.
 * --unpin-forwarders: P2 widens its affinity to P1's (P0's original mask)
 * while it sends an endpoint on, so the forwarder thread that send starts
 * is not pinned to CPU 1 beside P2's spinning receiver.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies every count, e.g. 0.2 or 3).
 * Exit status: 0 unless a call fails or a message is wrong (2), a run
 * hangs (3: watchdog), or --strict without --smoke and the target FAILs
 * (1). The children die with P0 (PR_SET_PDEATHSIG) and are killed and
 * reaped on every exit path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CPU_P0 0
#define CPU_P2 1
#define NPROC 3
#define NPAIRS 5		 /* rows 1..3c: a pair (A, B) each */
#define PAIR_SPLIT 3		 /* row 3b's */
#define PAIR_MANY 4		 /* row 3c's */
#define LINK_SLOT NPAIRS	 /* row 4: the P0-P2 link's first channels */
#define LINK16_SLOT (NPAIRS + 1) /* row 4b: the second P0-P2 link's */
#define MAXROUTE 6
#define TARGET 1.2     /* row 3 p50 <= this x row 1 p50 */
#define ROUND_WARM 32u /* unrecorded round trips per row and round */
#define MOVE_WARM 2u   /* unrecorded moves per row and round */
#define RECV_TIMEOUT_NS 10000000000LL /* one receive, or one round's */
#define FWD_GONE_NS 2000000000LL
#define WATCHDOG_FULL_S 240u
#define WATCHDOG_SMOKE_S 30u

/* ---------------------------------------------------------------------- */
/* Message types                                                          */

struct pay {
	uint64_t seq, stamp;
};
CMESH_TYPE_DEFINE_PLAIN(pay_type, struct pay);

enum {
	OP_EXPECT = 1, /* the next control message comes from P`slot` */
	OP_PAIR,       /* keep rx (A's receiver), tx (B's sender) as `slot` */
	OP_SERVE,      /* echo `n` round trips of `slot`, from seq */
	OP_FIRST,      /* receive seq on rx, answer it, free rx */
	OP_PING,       /* row 4, down */
	OP_PONG,       /* row 4, up */
	OP_REPORT,     /* to P0: seq (and stamp) */
	OP_CHECK,      /* report 1 if no forwarder thread is left (2 s) */
	OP_QUIT,       /* free everything and exit */
	OP_PASS,       /* send pair `slot` to P`n` (its OP_PAIR), report */
	OP_KEEP,       /* keep tx (a clone of A's sender, row 3b), report */
	OP_SINK	       /* receive `n` on A of `slot` from seq `stamp`, report */
};

struct ctl {
	uint32_t op;
	uint32_t slot;
	uint32_t n;
	uint8_t hop, nroute;	 /* route[hop] holds the message */
	uint8_t route[MAXROUTE]; /* processes, the first one first */
	uint64_t seq, stamp;
	cmesh_sender *tx;   /* struct pay */
	cmesh_receiver *rx; /* struct pay */
};
CMESH_TYPE_DEFINE(ctl_type, struct ctl,
		  CMESH_FIELD_SENDER(struct ctl, tx, pay_type),
		  CMESH_FIELD_RECEIVER(struct ctl, rx, pay_type));

/* ---------------------------------------------------------------------- */
/* Processes                                                              */

static int me;			   /* 0, 1 or 2 */
static pid_t parent_pid;	   /* P0 */
static volatile pid_t kids[NPROC]; /* P0: P1's and P2's pids */
static int sp[NPROC][NPROC][2];	   /* [i][j], i < j: i uses [0], j [1] */
static int sp16[2];		   /* row 4b's link: P0 uses [0], P2 [1] */
static cmesh_node *node[NPROC];
static cmesh_sender *to[NPROC];
static cmesh_receiver *from[NPROC];
static cmesh_node *node16; /* P0 and P2: row 4b's link, struct pay */
static cmesh_sender *to16;
static cmesh_receiver *from16;
static cpu_set_t wide_mask; /* P0's affinity before it pinned itself */
static bool self_pinned;    /* this process's main thread is pinned */
static bool unpin_forwarders;

static void fail(const char *what, int rc)
{
	/* rc: a cmesh code (< 0), an errno (> 0), or 0 for "wrong data". */
	bench_die(what, rc ? rc : EPROTO);
}

static void check_u64(const char *what, uint64_t got, uint64_t want)
{
	char buf[160];

	if (got == want)
		return;
	snprintf(buf, sizeof(buf), "%s: %" PRIu64 ", want %" PRIu64, what, got,
		 want);
	fail(buf, -EPROTO); /* exit 2, the children killed and reaped */
}

/* P0: SIGKILLs and reaps the children still there (async-signal-safe). */
static void kill_kids(void)
{
	for (int k = 1; k < NPROC; k++) {
		pid_t pid = kids[k];

		kids[k] = 0;
		bench_kill_reap(pid);
	}
}

/* bench_die_hook: a child _exit(2)s; P0 says who had ended, kills all. */
static void die_hook(void)
{
	if (bench_is_child)
		_exit(2);
	for (int k = 1; k < NPROC; k++) {
		pid_t pid = kids[k];
		int st;

		if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
			kids[k] = 0;
			fprintf(stderr, "%s: P%d had ended: %s %d\n",
				bench_name, k,
				WIFSIGNALED(st) ? "killed by signal" :
						  "exit status",
				WIFSIGNALED(st) ? WTERMSIG(st) :
						  WEXITSTATUS(st));
		}
	}
	kill_kids();
}

static void on_alarm(int sig)
{
	static const char msg[] =
		"bench_moves: watchdog: bench_moves hung, killing P1 and P2\n";

	(void)sig;
	bench_write_err(msg, sizeof(msg) - 1);
	kill_kids();
	_exit(3);
}

static void on_term(int sig)
{
	kill_kids();
	raise(sig); /* SA_RESETHAND: the default action once we return */
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = on_term;
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* Closes the socket ends that are not this process's. */
static void close_others(void)
{
	for (int i = 0; i < NPROC; i++)
		for (int j = i + 1; j < NPROC; j++)
			for (int k = 0; k < 2; k++)
				if (sp[i][j][k] >= 0 &&
				    !((k == 0 && i == me) ||
				      (k == 1 && j == me))) {
					close(sp[i][j][k]);
					sp[i][j][k] = -1;
				}
	for (int k = 0; k < 2; k++)
		if (sp16[k] >= 0 &&
		    !((k == 0 && me == 0) || (k == 1 && me == 2))) {
			close(sp16[k]);
			sp16[k] = -1;
		}
}

/* Joins every link of ours, in one global order. */
static void join_all(void)
{
	for (int i = 0; i < NPROC; i++)
		for (int j = i + 1; j < NPROC; j++) {
			cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
			int other, sock, rc;

			if (i != me && j != me)
				continue;
			other = i == me ? j : i;
			sock = sp[i][j][i == me ? 0 : 1];
			sp[i][j][i == me ? 0 : 1] = -1;
			o.peer_pid = other == 0 ? parent_pid : kids[other];
			rc = cmesh_node_join_socket(sock, &ctl_type, &ctl_type,
						    &o, &node[other],
						    &to[other], &from[other]);
			if (rc < 0)
				fail("cmesh_node_join_socket", rc);
		}
	if (me != 1) {
		/* Row 4b's link, last: P2 has joined every other one. */
		cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
		int rc, sock = sp16[me == 0 ? 0 : 1];

		sp16[me == 0 ? 0 : 1] = -1;
		o.peer_pid = me == 0 ? kids[2] : parent_pid;
		rc = cmesh_node_join_socket(sock, &pay_type, &pay_type, &o,
					    &node16, &to16, &from16);
		if (rc < 0)
			fail("cmesh_node_join_socket (second link)", rc);
	}
}

/* Frees our link ends, flushes and closes every link. */
static void leave_all(void)
{
	cmesh_sender_free(to16);
	cmesh_receiver_free(from16);
	to16 = NULL;
	from16 = NULL;
	if (node16) {
		int rc = cmesh_node_close(node16,
					  cmesh_deadline_after(5000000000LL));

		if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
			fail("cmesh_node_close (second link)", rc);
		node16 = NULL;
	}

	for (int k = 0; k < NPROC; k++) {
		if (k == me)
			continue;
		cmesh_sender_free(to[k]);
		cmesh_receiver_free(from[k]);
		to[k] = NULL;
		from[k] = NULL;
	}
	for (int k = 0; k < NPROC; k++) {
		int rc;

		if (k == me || !node[k])
			continue;
		rc = cmesh_node_close(node[k],
				      cmesh_deadline_after(5000000000LL));
		if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
			fail("cmesh_node_close", rc);
		node[k] = NULL;
	}
}

static void send_ctl(int k, struct ctl *m, const char *what)
{
	int rc = cmesh_sender_send(to[k], m, NULL, 0);

	if (rc < 0)
		fail(what, rc);
}

/* ---------------------------------------------------------------------- */
/* P1 and P2                                                              */

static cmesh_receiver *pair_rx[NPAIRS]; /* P2: A's receivers */
static cmesh_sender *pair_tx[NPAIRS];	/* P2: B's senders */
static cmesh_sender *kept_tx;		/* P1: row 3b's clone of A's */

static void report(uint64_t seq, uint64_t stamp)
{
	struct ctl r;

	memset(&r, 0, sizeof(r));
	r.op = OP_REPORT;
	r.seq = seq;
	r.stamp = stamp;
	send_ctl(0, &r, "cmesh_sender_send (report)");
}

/* A thread named cmesh-forward is alive in this process. */
static bool forwarder_thread_alive(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	bool found = false;

	if (!d)
		fail("opendir /proc/self/task", errno);
	while (!found && (e = readdir(d)) != NULL) {
		char path[320], comm[32] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) &&
		    strncmp(comm, "cmesh-forward", 13) == 0)
			found = true;
		fclose(f);
	}
	closedir(d);
	return found;
}

/* Echoes n round trips of pair `slot` (or of the link, LINK_SLOT). */
static void serve(uint32_t slot, uint64_t base, uint32_t n)
{
	int64_t dl = cmesh_deadline_after(RECV_TIMEOUT_NS);

	for (uint32_t i = 0; i < n; i++) {
		int rc;

		if (slot == LINK_SLOT) {
			struct ctl m;

			rc = cmesh_receiver_recv_deadline(from[0], dl, &m, NULL,
							  0);
			if (rc != 0)
				fail("cmesh_receiver_recv_deadline (ping)", rc);
			check_u64("row 4: op", m.op, OP_PING);
			check_u64("row 4: seq", m.seq, base + i);
			m.op = OP_PONG;
			send_ctl(0, &m, "cmesh_sender_send (pong)");
			continue;
		}
		bool l16 = slot == LINK16_SLOT;
		struct pay p;

		rc = cmesh_receiver_recv_deadline(l16 ? from16 : pair_rx[slot],
						  dl, &p, NULL, 0);
		if (rc != 0)
			fail("cmesh_receiver_recv_deadline (A)", rc);
		check_u64(l16 ? "row 4b: seq" : "A: seq", p.seq, base + i);
		rc = cmesh_sender_send(l16 ? to16 : pair_tx[slot], &p, NULL, 0);
		if (rc < 0)
			fail("cmesh_sender_send (B)", rc);
	}
}

/* Acts on `m` at the end of its route: whom the next message is from. */
static int act(struct ctl *m, bool *quit)
{
	struct pay p;
	int rc;

	switch (m->op) {
	case OP_EXPECT:
		if (m->slot >= NPROC || (int)m->slot == me)
			fail("OP_EXPECT: bad process", -EPROTO);
		return (int)m->slot;
	case OP_PAIR:
		if (m->slot >= NPAIRS || !m->rx || !m->tx || pair_rx[m->slot])
			fail("OP_PAIR: bad pair", -EPROTO);
		pair_rx[m->slot] = m->rx;
		pair_tx[m->slot] = m->tx;
		report(m->seq, 0);
		return 0;
	case OP_SERVE:
		if (me != 2 || m->slot > LINK16_SLOT ||
		    (m->slot < NPAIRS && !pair_rx[m->slot]))
			fail("OP_SERVE: bad slot", -EPROTO);
		serve(m->slot, m->seq, m->n);
		return 0;
	case OP_FIRST:
		if (!m->rx)
			fail("OP_FIRST: no receiver", -EPROTO);
		rc = cmesh_receiver_recv_deadline(
			m->rx, cmesh_deadline_after(RECV_TIMEOUT_NS), &p, NULL,
			0);
		if (rc != 0)
			fail("cmesh_receiver_recv_deadline (moved)", rc);
		check_u64("moved receiver: seq", p.seq, m->seq);
		report(p.seq, p.stamp);
		cmesh_receiver_free(m->rx);
		return 0;
	case OP_CHECK: {
		int64_t end = (int64_t)bench_mono_ns() + FWD_GONE_NS;
		bool alive;

		for (int k = 0; k < NPAIRS; k++) {
			cmesh_receiver_free(pair_rx[k]);
			cmesh_sender_free(pair_tx[k]);
			pair_rx[k] = NULL;
			pair_tx[k] = NULL;
		}
		cmesh_sender_free(kept_tx);
		kept_tx = NULL;
		while ((alive = forwarder_thread_alive()) &&
		       (int64_t)bench_mono_ns() < end)
			usleep(1000);
		report(m->seq, alive ? 0 : 1);
		return 0;
	}
	case OP_QUIT:
		*quit = true;
		return 0;
	case OP_SINK: {
		int64_t dl = cmesh_deadline_after(RECV_TIMEOUT_NS);

		if (me != 2 || m->slot >= NPAIRS || !pair_rx[m->slot])
			fail("OP_SINK: bad slot", -EPROTO);
		for (uint32_t i = 0; i < m->n; i++) {
			rc = cmesh_receiver_recv_deadline(pair_rx[m->slot], dl,
							  &p, NULL, 0);
			if (rc != 0)
				fail("cmesh_receiver_recv_deadline (sink)", rc);
			check_u64("stream: seq", p.seq, m->stamp + i);
		}
		report(m->seq, 0);
		return 0;
	}
	case OP_KEEP:
		if (!m->tx || m->rx || kept_tx)
			fail("OP_KEEP: bad sender", -EPROTO);
		kept_tx = m->tx;
		report(m->seq, 0);
		return 0;
	case OP_PASS: {
		struct ctl o = { .op = OP_PAIR,
				 .slot = m->slot,
				 .seq = m->seq };

		if (m->slot >= NPAIRS || !pair_rx[m->slot] || m->n >= NPROC ||
		    (int)m->n == me || !m->n)
			fail("OP_PASS: bad pair", -EPROTO);
		o.rx = pair_rx[m->slot];
		o.tx = pair_tx[m->slot];
		pair_rx[m->slot] = NULL;
		pair_tx[m->slot] = NULL;
		o.nroute = 1;
		o.route[0] = (uint8_t)m->n;
		send_ctl((int)m->n, &o, "cmesh_sender_send (pass)");
		return 0;
	}
	default:
		fail("unknown control op", -EPROTO);
	}
	return 0;
}

/* Sends `m` on to route[hop + 1]: whom the next message is from. */
static int pass_on(struct ctl *m)
{
	int next = m->route[m->hop + 1], src = 0;
	bool widen = unpin_forwarders && self_pinned;

	if (next >= NPROC || next == me)
		fail("bad route", -EPROTO);
	/* Do we appear later on the route? Then it comes from before us. */
	for (int j = m->hop + 2; j < m->nroute; j++)
		if (m->route[j] == me) {
			src = m->route[j - 1];
			break;
		}
	m->hop++;
	if (widen)
		sched_setaffinity(0, sizeof(wide_mask), &wide_mask);
	send_ctl(next, m, "cmesh_sender_send (route, on)");
	if (widen)
		bench_pin_self(CPU_P2);
	return src;
}

/* A child: acts on control messages until OP_QUIT. */
static void child_loop(void)
{
	bool quit = false;
	int src = 0;

	while (!quit) {
		struct ctl m;
		int rc = cmesh_receiver_recv(from[src], &m, NULL, 0);

		if (rc != 0)
			fail("cmesh_receiver_recv (control)", rc);
		if (m.hop >= m.nroute || m.nroute > MAXROUTE ||
		    m.route[m.hop] != me)
			fail("a control message not for us", -EPROTO);
		if (m.hop + 1 < m.nroute)
			src = pass_on(&m);
		else
			src = act(&m, &quit);
	}
}

static _Noreturn void child_main(int k, bool pin)
{
	me = k;
	bench_child_enter(parent_pid);
	bench_who = k == 1 ? "P1: " : "P2: ";
	if (k == 2 && pin)
		self_pinned = bench_pin_self(CPU_P2);
	else if (sched_setaffinity(0, sizeof(wide_mask), &wide_mask) != 0)
		fail("sched_setaffinity", errno);
	close_others();
	join_all();
	child_loop();
	leave_all();
	_exit(0);
}

/* ---------------------------------------------------------------------- */
/* P0                                                                     */

static uint64_t next_seq = 1;
static cmesh_sender *a_tx[NPAIRS];   /* A's senders */
static cmesh_receiver *b_rx[NPAIRS]; /* B's receivers */

static const uint8_t pair_route[NPAIRS][MAXROUTE] = {
	{ 2 },		 /* in place */
	{ 1, 2 }, { 2 }, /* then on, one move at a time: setup_pair() */
	{ 2 },		 /* split: a clone of A's sender in P1 first */
	{ 2 },		 /* then on, 40 times: setup_pair() */
};
static const int pair_route_len[NPAIRS] = { 1, 2, 1, 1, 1 };

/* A control message for process k alone. */
static void direct(int k, struct ctl *m)
{
	m->hop = 0;
	m->nroute = 1;
	m->route[0] = (uint8_t)k;
	send_ctl(k, m, "cmesh_sender_send (control)");
}

/* Tells each process whose first message of `route` comes from another
 * child where to wait for it. */
static void send_expects(const uint8_t *route, int n)
{
	for (int j = 1; j < n; j++) {
		bool first = true;
		struct ctl m;

		for (int i = 0; i < j; i++)
			first = first && route[i] != route[j];
		if (!first || route[j - 1] == 0)
			continue;
		memset(&m, 0, sizeof(m));
		m.op = OP_EXPECT;
		m.slot = route[j - 1];
		direct(route[j], &m);
	}
}

/* Sends `m` along `route` (its expects sent already). */
static void send_route(struct ctl *m, const uint8_t *route, int n)
{
	m->hop = 0;
	m->nroute = (uint8_t)n;
	memcpy(m->route, route, (size_t)n);
	send_ctl(route[0], m, "cmesh_sender_send (route)");
}

/* P`k`'s next report, which must be `seq`; its stamp. */
static uint64_t report_from(int k, uint64_t seq)
{
	struct ctl m;
	int rc = cmesh_receiver_recv_deadline(
		from[k], cmesh_deadline_after(RECV_TIMEOUT_NS), &m, NULL, 0);

	if (rc != 0)
		fail("cmesh_receiver_recv_deadline (report)", rc);
	check_u64("report: op", m.op, OP_REPORT);
	check_u64("report: seq", m.seq, seq);
	return m.stamp;
}

/* Time each move of row 3 is given to settle (its claims, untimed). */
#define SETTLE_US 50000
/* ... and each of row 3c's (many: their claims take under 5 ms here). */
#define MANY_SETTLE_US 20000
/* Reps of the stream note (rows 1 and 3c alternating). */
#define STREAM_REPS 5

/* Pair k goes from P`from` to P`to`, which reports it; then settles. */
static void pass_pair(int k, int from_k, int to_k, unsigned settle_us)
{
	struct ctl m;

	memset(&m, 0, sizeof(m));
	m.op = OP_EXPECT;
	m.slot = (uint32_t)from_k;
	direct(to_k, &m);
	memset(&m, 0, sizeof(m));
	m.op = OP_PASS;
	m.slot = (uint32_t)k;
	m.n = (uint32_t)to_k;
	m.seq = next_seq++;
	direct(from_k, &m);
	report_from(to_k, m.seq);
	usleep(settle_us);
}

/* Rows 1..3: makes pair k and sends its far ends along its route. */
static void setup_pair(int k)
{
	cmesh_sender *btx = NULL;
	cmesh_receiver *arx;
	struct ctl m;
	int rc = cmesh_channel_new(&pay_type, NULL, &a_tx[k], &arx);

	if (rc == 0)
		rc = cmesh_channel_new(&pay_type, NULL, &btx, &b_rx[k]);
	if (rc < 0)
		fail("cmesh_channel_new (pair)", rc);
	if (k == PAIR_SPLIT) {
		memset(&m, 0, sizeof(m));
		m.op = OP_KEEP;
		m.seq = next_seq++;
		rc = cmesh_sender_clone(a_tx[k], &m.tx);
		if (rc < 0)
			fail("cmesh_sender_clone (split)", rc);
		direct(1, &m);
		report_from(1, m.seq);
	}
	memset(&m, 0, sizeof(m));
	m.op = OP_PAIR;
	m.slot = (uint32_t)k;
	m.seq = next_seq++;
	m.rx = arx;
	m.tx = btx;
	send_expects(pair_route[k], pair_route_len[k]);
	send_route(&m, pair_route[k], pair_route_len[k]);
	report_from(2, m.seq);
	if (k == 2) { /* row 3: P0 -> P2, then P2 -> P1 -> P2 */
		usleep(SETTLE_US);
		pass_pair(k, 2, 1, SETTLE_US);
		pass_pair(k, 1, 2, SETTLE_US);
	}
	if (k == PAIR_MANY) { /* row 3c: P0 -> P2, (P2 -> P1 -> P2) x 20 */
		usleep(MANY_SETTLE_US);
		for (int i = 0; i < 20; i++) {
			pass_pair(k, 2, 1, MANY_SETTLE_US);
			pass_pair(k, 1, 2, MANY_SETTLE_US);
		}
	}
}

/* ---------------------------------------------------------------------- */
/* Rows                                                                   */

enum {
	R_INPLACE,
	R_VIA1,
	R_THREE,
	R_SPLIT,
	R_MANY,
	R_LINK,
	R_LINK16,
	R_MOVE,
	R_MOVE_VIA1,
	R_NEW,
	NROWS
};

struct row {
	const char *name;
	int base;      /* row of the ratios' reference, or -1 */
	double target; /* > 0: p50 ratio <= target */
	struct bench_result res;
	uint64_t *v; /* samples, rounds * per */
	uint64_t n, elapsed;
};

static struct row rows[NROWS] = {
	[R_INPLACE] = { "1 in place rtt", -1, 0, { 0 }, 0, 0, 0 },
	[R_VIA1] = { "2 moved via P1 rtt", R_INPLACE, 0, { 0 }, 0, 0, 0 },
	[R_THREE] = { "3 moved 3 times rtt", R_INPLACE, TARGET, { 0 }, 0, 0, 0 },
	[R_SPLIT] = { "3b split rtt", R_INPLACE, 0, { 0 }, 0, 0, 0 },
	[R_MANY] = { "3c moved 41 times rtt", R_INPLACE, 0, { 0 }, 0, 0, 0 },
	[R_LINK] = { "4 link's own rtt", R_INPLACE, 0, { 0 }, 0, 0, 0 },
	[R_LINK16] = { "4b 2nd link, 16 B rtt", R_INPLACE, 0, { 0 }, 0, 0, 0 },
	[R_MOVE] = { "5a move, direct", -1, 0, { 0 }, 0, 0, 0 },
	[R_MOVE_VIA1] = { "5b move, via P1", R_MOVE, 0, { 0 }, 0, 0, 0 },
	[R_NEW] = { "6 new channel (5a+new)", R_LINK16, 0, { 0 }, 0, 0, 0 },
};

static_assert(R_SPLIT == PAIR_SPLIT, "row 3b is pair 3");
static_assert(R_MANY == PAIR_MANY, "row 3c is pair 4");
static_assert(R_LINK == LINK_SLOT, "row 4 is the link's slot");

/* Per-round p50 ratios of rows 2, 3, 3b, 3c, 4, 4b to row 1. */
static struct bench_parts parts[6];

/* One round trip of pair k or of the link: its ticks. */
static inline uint64_t rtt_once(int k, int64_t dl)
{
	uint64_t seq = next_seq++, t0, t1;
	int rc;

	if (k == R_LINK) {
		struct ctl m;

		memset(&m, 0, sizeof(m));
		t0 = bench_now_ticks();
		m.op = OP_PING;
		m.route[0] = 2;
		m.nroute = 1;
		m.seq = seq;
		m.stamp = t0;
		rc = cmesh_sender_send(to[2], &m, NULL, 0);
		if (rc < 0)
			fail("cmesh_sender_send (ping)", rc);
		rc = cmesh_receiver_recv_deadline(from[2], dl, &m, NULL, 0);
		if (rc != 0)
			fail("cmesh_receiver_recv_deadline (pong)", rc);
		t1 = bench_now_ticks();
		check_u64("row 4: op", m.op, OP_PONG);
		check_u64("row 4: seq", m.seq, seq);
		check_u64("row 4: stamp", m.stamp, t0);
		return t1 - t0;
	}
	cmesh_sender *tx = k == R_LINK16 ? to16 : a_tx[k];
	cmesh_receiver *rx = k == R_LINK16 ? from16 : b_rx[k];
	struct pay p;

	t0 = bench_now_ticks();
	p.seq = seq;
	p.stamp = t0;
	rc = cmesh_sender_send(tx, &p, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (A)", rc);
	rc = cmesh_receiver_recv_deadline(rx, dl, &p, NULL, 0);
	if (rc != 0)
		fail("cmesh_receiver_recv_deadline (B)", rc);
	t1 = bench_now_ticks();
	check_u64("B: seq", p.seq, seq);
	check_u64("B: stamp", p.stamp, t0);
	return t1 - t0;
}

/* Round `i` of round-trip row k: ROUND_WARM unrecorded, then `per`. */
static void rtt_round(int k, uint64_t i, uint64_t per)
{
	uint64_t *v = rows[k].v + i * per, start = 0;
	int64_t dl = cmesh_deadline_after(RECV_TIMEOUT_NS);
	struct ctl m;

	memset(&m, 0, sizeof(m));
	m.op = OP_SERVE;
	m.slot = k == R_LINK   ? LINK_SLOT :
		 k == R_LINK16 ? LINK16_SLOT :
				 (uint32_t)k;
	m.n = (uint32_t)(ROUND_WARM + per);
	m.seq = next_seq;
	direct(2, &m);
	for (uint64_t j = 0; j < ROUND_WARM + per; j++) {
		uint64_t t;

		if (j == ROUND_WARM)
			start = bench_now_ticks();
		t = rtt_once(k, dl);
		if (j >= ROUND_WARM)
			v[j - ROUND_WARM] = t;
	}
	rows[k].elapsed += bench_now_ticks() - start;
}

/* Round `i` of move row k (R_MOVE also fills R_NEW). */
static void move_round(int k, uint64_t i, uint64_t per)
{
	static const uint8_t route_direct[] = { 2 }, route_via[] = { 1, 2 };
	const uint8_t *route = k == R_MOVE ? route_direct : route_via;
	int n = k == R_MOVE ? 1 : 2;

	for (uint64_t j = 0; j < MOVE_WARM + per; j++) {
		uint64_t seq = next_seq++, t_new, t_send, t1, stamp;
		cmesh_sender *tx;
		cmesh_receiver *rx;
		struct ctl m;
		struct pay p;
		int rc;

		send_expects(route, n);
		memset(&m, 0, sizeof(m));
		m.op = OP_FIRST;
		m.seq = seq;
		t_new = bench_now_ticks();
		rc = cmesh_channel_new(&pay_type, NULL, &tx, &rx);
		if (rc < 0)
			fail("cmesh_channel_new (move)", rc);
		t_send = bench_now_ticks();
		m.rx = rx;
		send_route(&m, route, n);
		p.seq = seq;
		p.stamp = t_send;
		rc = cmesh_sender_send(tx, &p, NULL, 0);
		if (rc < 0)
			fail("cmesh_sender_send (first message)", rc);
		stamp = report_from(2, seq);
		t1 = bench_now_ticks();
		check_u64("first message: stamp", stamp, t_send);
		cmesh_sender_free(tx);
		if (j < MOVE_WARM)
			continue;
		rows[k].v[i * per + j - MOVE_WARM] = t1 - t_send;
		rows[k].elapsed += t1 - t_send;
		if (k == R_MOVE) {
			rows[R_NEW].v[i * per + j - MOVE_WARM] = t1 - t_new;
			rows[R_NEW].elapsed += t1 - t_new;
		}
	}
}

/*
 * One rep of the stream note: `n` messages on A of pair k as fast as P0
 * sends them, until P2 says it has them all (checked in order): msg/s.
 */
static double stream_rep(int k, uint32_t n)
{
	uint64_t base = next_seq, t0, t1;
	struct ctl m;

	next_seq += n;
	memset(&m, 0, sizeof(m));
	m.op = OP_SINK;
	m.slot = (uint32_t)k;
	m.n = n;
	m.stamp = base;
	m.seq = next_seq++;
	direct(2, &m);
	t0 = bench_now_ticks();
	for (uint32_t i = 0; i < n; i++) {
		struct pay p = { .seq = base + i, .stamp = 0 };
		int rc = cmesh_sender_send(a_tx[k], &p, NULL, 0);

		if (rc < 0)
			fail("cmesh_sender_send (stream)", rc);
	}
	report_from(2, m.seq);
	t1 = bench_now_ticks();
	return (double)n / ((double)(t1 - t0) * bench_ns_per_tick * 1e-9);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* p50 of v[0..n) in ns (sorts v). */
static double round_p50(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), bench_cmp_u64);
	return (double)bench_pct(v, n, 50.0) * bench_ns_per_tick;
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

static void print_row(int k)
{
	const struct row *r = &rows[k];
	char p50[16], p99[16], p999[16], ratio[16] = "-", ratio99[16] = "-";
	char tgt[16] = "ref";
	const char *res = "";

	bench_fmt_ns(p50, sizeof(p50), r->res.p50);
	bench_fmt_ns(p99, sizeof(p99), r->res.p99);
	bench_fmt_ns(p999, sizeof(p999), r->res.p999);
	if (r->base >= 0) {
		const struct row *b = &rows[r->base];

		snprintf(ratio, sizeof(ratio), "%.2fx",
			 bench_ratio(&b->res, &r->res, false));
		snprintf(ratio99, sizeof(ratio99), "%.2fx",
			 b->res.p99 > 0 ? r->res.p99 / b->res.p99 : 0);
		snprintf(tgt, sizeof(tgt), "info");
	}
	if (r->target > 0) {
		double x = bench_ratio(&rows[r->base].res, &r->res, false);

		snprintf(tgt, sizeof(tgt), "<=%.1fx", r->target);
		res = x <= r->target ? "PASS" : "FAIL";
	}
	printf("%-23s %7" PRIu64 " %9s %9s %9s %8s %8s %7s  %s\n", r->name,
	       r->res.n, p50, p99, p999, ratio, ratio99, tgt, res);
	/* The table has no scenario column: round trips (1-4b), moves. */
	bench_json_result(k <= R_LINK16 ? "round trip" : "move", r->name,
			  &r->res, NULL);
	if (r->target > 0) {
		char what[64];

		snprintf(what, sizeof(what), "%s / %s p50", r->name,
			 rows[r->base].name);
		bench_json_target(what, ratio, tgt, *res == 'P');
	}
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

struct config {
	bool smoke, strict, two_cpus;
	double scale;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_moves [--smoke] [--strict] "
		   "[--unpin-forwarders]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	cfg->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	cfg->scale = bench_scale_env("bench_moves");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (bench_common_arg(a, &cfg->smoke, &cfg->strict, usage))
			continue;
		if (strcmp(a, "--unpin-forwarders") == 0)
			unpin_forwarders = true;
		else
			bench_bad_arg(a, usage);
	}
}

static uint64_t scaled(const struct config *cfg, uint64_t full, uint64_t smoke,
		       uint64_t min)
{
	double v = (double)(cfg->smoke ? smoke : full) * cfg->scale;

	return v < (double)min ? min : (uint64_t)v;
}

/* Forks P1 and P2 and joins them (P0 has one thread until then). */
static void start_children(bool pin)
{
	for (int i = 0; i < NPROC; i++)
		for (int j = i + 1; j < NPROC; j++)
			if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
				       0, sp[i][j]) != 0)
				fail("socketpair", errno);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp16) != 0)
		fail("socketpair", errno);
	for (int k = 1; k < NPROC; k++) {
		pid_t pid;

		fflush(stdout);
		fflush(stderr);
		pid = fork();
		if (pid < 0)
			fail("fork", errno);
		if (pid == 0)
			child_main(k, pin);
		kids[k] = pid;
	}
	me = 0;
	close_others();
	join_all();
}

/* Ends both children: the forwarder check, quit, reap. */
static void stop_children(bool gone[NPROC])
{
	for (int k = 0; k < NPAIRS; k++) {
		cmesh_sender_free(a_tx[k]);
		cmesh_receiver_free(b_rx[k]);
		a_tx[k] = NULL;
		b_rx[k] = NULL;
	}
	for (int k = NPROC - 1; k >= 1; k--) {
		struct ctl m;

		memset(&m, 0, sizeof(m));
		m.op = OP_CHECK;
		m.seq = next_seq++;
		direct(k, &m);
		gone[k] = report_from(k, m.seq) == 1;
	}
	for (int k = 1; k < NPROC; k++) {
		struct ctl m;

		memset(&m, 0, sizeof(m));
		m.op = OP_QUIT;
		direct(k, &m);
	}
	leave_all();
	for (int k = 1; k < NPROC; k++) {
		pid_t pid = kids[k];
		int st;

		while (waitpid(pid, &st, 0) < 0)
			if (errno != EINTR)
				fail("waitpid", errno);
		kids[k] = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "%s: P%d ended badly (0x%x)\n",
				bench_name, k, st);
			kill_kids();
			exit(2);
		}
	}
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	uint64_t rounds, per[NROWS], t0;
	double stream[2][STREAM_REPS], ratio[STREAM_REPS];
	uint32_t stream_n;
	bool gone[NPROC] = { false };
	int fails = 0;

	bench_name = "bench_moves";
	bench_die_hook = die_hook;
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	rounds = cfg.smoke ? 2 : 10;
	per[R_INPLACE] = per[R_SPLIT] = per[R_LINK] = per[R_LINK16] =
		scaled(&cfg, 20000, 200, 10);
	per[R_VIA1] = per[R_THREE] = per[R_MANY] = scaled(&cfg, 2000, 20, 4);
	per[R_MOVE] = per[R_MOVE_VIA1] = per[R_NEW] = scaled(&cfg, 40, 3, 1);
	stream_n = (uint32_t)scaled(&cfg, 1000000, 20000, 1000);
	parent_pid = getpid();
	for (int i = 0; i < NPROC; i++)
		for (int j = 0; j < NPROC; j++)
			sp[i][j][0] = sp[i][j][1] = -1;
	sp16[0] = sp16[1] = -1;

	install_signals();

	if (sched_getaffinity(0, sizeof(wide_mask), &wide_mask) != 0)
		fail("sched_getaffinity", errno);
	cfg.two_cpus = bench_cpus_usable(CPU_P0, CPU_P2) &&
		       bench_pin_self(CPU_P0);
	self_pinned = cfg.two_cpus;
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_P0, CPU_P2, cfg.two_cpus, cfg.smoke);
	printf("# P0 on cpu %d, P2 on cpu %d, P1 not pinned; forwarder "
	       "threads %s\n",
	       CPU_P0, CPU_P2,
	       unpin_forwarders ? "not pinned (--unpin-forwarders)" :
				  "inherit their starter's affinity (P2's: "
				  "cpu 1)");
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);

	start_children(cfg.two_cpus);
	for (int k = 0; k < NPAIRS; k++)
		setup_pair(k);
	for (int k = 0; k < NROWS; k++) {
		rows[k].n = rounds * per[k];
		rows[k].v = bench_xcalloc(rows[k].n, sizeof(uint64_t));
	}
	for (uint64_t i = 0; i < rounds; i++) {
		/* Rows 1..5b (6 comes with 5a), every other round reversed. */
		for (int j = 0; j < R_NEW; j++) {
			int k = i % 2 ? R_NEW - 1 - j : j;

			if (k <= R_LINK16)
				rtt_round(k, i, per[k]);
			else
				move_round(k, i, per[k]);
		}
	}
	/* The stream note: rows 1 and 3c alternating, STREAM_REPS each. */
	for (int j = 0; j < STREAM_REPS; j++)
		for (int x = 0; x < 2; x++) {
			int w = (j + x) % 2;

			stream[w][j] =
				stream_rep(w ? R_MANY : R_INPLACE, stream_n);
		}
	stop_children(gone);
	alarm(0);
	bench_cpu_usage_read(&usage1);

	for (uint64_t i = 0; i < rounds; i++) {
		double ref = round_p50(rows[R_INPLACE].v + i * per[R_INPLACE],
				       per[R_INPLACE]);

		for (int k = R_VIA1; k <= R_LINK16; k++) {
			double x = round_p50(rows[k].v + i * per[k], per[k]);

			bench_note_part(&parts[k - R_VIA1],
					ref > 0 ? x / ref : 0, ref);
		}
	}
	printf("%-23s %7s %9s %9s %9s %8s %8s %7s  %s\n", "row", "n", "p50 ns",
	       "p99 ns", "p99.9 ns", "p50 x", "p99 x", "target", "result");
	for (int k = 0; k < NROWS; k++) {
		struct row *r = &rows[k];

		bench_fill_rtt(&r->res, r->v, r->n, r->elapsed);
		free(r->v);
		r->v = NULL;
	}
	for (int k = 0; k < NROWS; k++) {
		print_row(k);
		if (rows[k].target > 0 &&
		    bench_ratio(&rows[rows[k].base].res, &rows[k].res, false) >
			    rows[k].target)
			fails++;
	}
	printf("# times in ns from P0's clock; p50 x / p99 x: against the "
	       "row named by the ratio (rows 2-4b: row 1; 5b: 5a; 6: row 4b); "
	       "rows alternate in %" PRIu64 " rounds, %u unrecorded round "
	       "trips (rows 1-4b) or %u unrecorded moves (5a, 5b) each; 5a, "
	       "5b: from the send of the receiver to the answer of its "
	       "first message; 6: 5a from cmesh_channel_new()\n",
	       rounds, ROUND_WARM, MOVE_WARM);
	bench_print_parts("2 moved via P1 / in place", "in place", &parts[0]);
	bench_print_parts("3 moved 3 times / in place", "in place", &parts[1]);
	bench_print_parts("3b split / in place", "in place", &parts[2]);
	bench_print_parts("3c moved 41 times / in place", "in place",
			  &parts[3]);
	bench_print_parts("4 link's own / in place", "in place", &parts[4]);
	bench_print_parts("4b 2nd link / in place", "in place", &parts[5]);
	for (int j = 0; j < STREAM_REPS; j++)
		ratio[j] = stream[1][j] / stream[0][j];
	qsort(stream[0], STREAM_REPS, sizeof(double), cmp_double);
	qsort(stream[1], STREAM_REPS, sizeof(double), cmp_double);
	qsort(ratio, STREAM_REPS, sizeof(double), cmp_double);
	printf("# stream of %u 16-byte messages P0 -> P2 (A), median of %d "
	       "reps: in place %.2fM msg/s, moved 41 times (reclaim mode) "
	       "%.2fM msg/s; per-rep ratio median %.2fx (%.2f..%.2fx)\n",
	       stream_n, STREAM_REPS, stream[0][STREAM_REPS / 2] * 1e-6,
	       stream[1][STREAM_REPS / 2] * 1e-6, ratio[STREAM_REPS / 2],
	       ratio[0], ratio[STREAM_REPS - 1]);
	printf("# forwarders ended within 2 s of the last free: P1 %s, P2 "
	       "%s\n",
	       gone[1] ? "yes" : "NO", gone[2] ? "yes" : "NO");
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
