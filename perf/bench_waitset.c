/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_waitset.c - waitsets (include/cmesh/waitset.h): the cost of
 * asking one that has a ready member, and a sleeping round trip through
 * one across two processes, each beside the raw mechanism measured in
 * the same run.
 *
 *   1 try_wait ready  in this process, pinned to CPU 0; ns per call of a
 *                     tight loop (the busy consumer: it asks, takes,
 *                     asks again), timed in batches of 1000 calls; rows
 *                     show percentiles of the per-batch averages.
 *                     raw poll() (ref): poll(), timeout 0, on one eventfd
 *                     whose count is non-zero (always readable): what
 *                     asking the kernel costs.
 *                     cmesh 1 member: cmesh_waitset_try_wait() on a
 *                     waitset of one local channel receiver (default
 *                     options) holding one unread message; every call
 *                     returns 0 and its key, nothing is received, so it
 *                     stays ready. The library makes no syscall there
 *                     (nothing is armed while a member is found ready).
 *                     Target: p50 <= 100 ns.
 *                     cmesh 64 members (info): the same with 64 such
 *                     receivers of which only the last added holds a
 *                     message: the round-robin scan starts after the
 *                     member found last, so each call looks at all 64.
 *   2 sleep ping-pong this process (CPU 0) and a fork()ed child (CPU 1);
 *                     64-byte round trips, every one timed in the parent.
 *                     raw eventfd (ref): two eventfds made before fork,
 *                     blocking read and write; the 64 bytes travel in a
 *                     line of a MAP_SHARED mapping made before fork
 *                     (copied in before the write, out after the read).
 *                     cmesh waitset: cmesh_node_join_socket() over a
 *                     SOCK_SEQPACKET socketpair made before fork (the
 *                     parent gives the child's pid: peer_pid), both sides
 *                     spin_ns = CMESH_SPIN_NONE; each side holds its
 *                     receiver in a waitset of its own, waits in
 *                     cmesh_waitset_wait() (no deadline), then takes the
 *                     message with cmesh_receiver_try_recv() and replies
 *                     with cmesh_sender_send(). Target: p50 <= 1.3x raw
 *                     eventfd p50.
 *                     cmesh recv (info): the same link, the receivers out
 *                     of their waitsets, cmesh_receiver_recv() (which,
 *                     with no spin, sleeps at once: the note line shows
 *                     the parent receiver's own count of its sleeps).
 *                     The child is told each row's kind and length by a
 *                     command message on the link (seq 0), received with
 *                     cmesh_receiver_recv() before the row; the rows of
 *                     2 alternate in rounds, their order reversed every
 *                     other round, each round starting with unrecorded
 *                     round trips, so that drift hits them alike.
 *
 * Latency: lfence;rdtsc (calibrated against CLOCK_MONOTONIC) when the TSC
 * is invariant, else clock_gettime; the same for raw and cmesh. Compare
 * rows of one run only: a VM's wakeup latency varies.
 *
 * Usage: bench_waitset [--smoke] [--strict] [--only 1|2]
 * --smoke: tiny counts (well under 5 s), for CI; the targets are printed
 * but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies every count, e.g. 0.2 or 3).
 * Exit status: 0 unless a call fails or an echo is wrong (2), a run hangs
 * (3: watchdog), or --strict without --smoke and a target FAILs (1). The
 * child dies with the parent (PR_SET_PDEATHSIG) and is killed and reaped
 * on every exit path; a child that ends before it is told to ends the run
 * at once (SIGCHLD), whichever row was running.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define CPU_PARENT 0
#define CPU_CHILD 1
#define BATCH 1000u	   /* 1: calls per timed batch */
#define BATCH_WARM 4u	   /* 1: unrecorded batches per row and round */
#define MEMBERS 64u	   /* 1: members of the info row's waitset */
#define TARGET_TRY_NS 100. /* 1: cmesh 1 member p50 <= this */
#define TARGET_RTT 1.3	   /* 2: cmesh waitset p50 <= this x raw p50 */
#define ROUND_WARM 32u	   /* 2: unrecorded round trips per row and round */
#define WATCHDOG_FULL_S 300u
#define WATCHDOG_SMOKE_S 30u

static CMESH_TYPE_DEFINE_PLAIN(bench_msg_type, struct bench_msg);

/* ---------------------------------------------------------------------- */
/* Rows                                                                   */

enum {
	R1_POLL,
	R1_ONE,
	R1_MANY,
	R2_EFD,
	R2_WS,
	R2_RECV,
	NROWS
};

struct row {
	const char *scen; /* on the scenario's first row, else NULL */
	const char *name;
	int base;	  /* row of the ratio's reference, or -1 */
	double target;	  /* > 0: ratio <= target */
	double target_ns; /* > 0: p50 <= target_ns */
	uint64_t *v;	  /* samples (ticks): per batch (1), per rt (2) */
	uint64_t nv;	  /* samples taken */
	uint64_t elapsed; /* ticks of the recorded part */
	struct bench_result res;
};

static struct row rows[NROWS] = {
	[R1_POLL] = { .scen = "1 try_wait ready",
		      .name = "raw poll()",
		      .base = -1 },
	[R1_ONE] = { .name = "cmesh 1 member",
		     .base = R1_POLL,
		     .target_ns = TARGET_TRY_NS },
	[R1_MANY] = { .name = "cmesh 64 members", .base = R1_POLL },
	[R2_EFD] = { .scen = "2 sleep ping-pong",
		     .name = "raw eventfd",
		     .base = -1 },
	[R2_WS] = { .name = "cmesh waitset",
		    .base = R2_EFD,
		    .target = TARGET_RTT },
	[R2_RECV] = { .name = "cmesh recv", .base = R2_EFD },
};

static struct bench_parts parts[2]; /* 2: waitset / eventfd, recv / eventfd */

static double row_ratio(int k)
{
	return bench_ratio(&rows[rows[k].base].res, &rows[k].res, false);
}

static bool row_passed(int k)
{
	const struct row *r = &rows[k];

	if (r->target > 0 && row_ratio(k) > r->target)
		return false;
	return !(r->target_ns > 0 && r->res.p50 > r->target_ns);
}

/* ---------------------------------------------------------------------- */
/* Failure                                                                */

static pid_t parent_pid;

static void fail(const char *what, int rc)
{
	bench_die(what, rc < 0 ? rc : EPROTO);
}

/* Parent: set once the child is told to leave (its exit is planned). */
static volatile sig_atomic_t child_expected;

/* Async-signal-safe: appends s, or v in decimal, to buf. */
static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		buf[at++] = *s++;
	return at;
}

static size_t put_uint(char *buf, size_t at, size_t cap, unsigned int v)
{
	char tmp[12];
	int n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while (v /= 10);
	while (n && at + 1 < cap)
		buf[at++] = tmp[--n];
	return at;
}

/*
 * Parent, SIGCHLD: a child that ends before it is told to fails the run
 * at once, whatever the parent is blocked in (the raw row's eventfd read
 * has no other way to learn it; a cmesh wait would, through the link).
 */
static void on_sigchld(int sig)
{
	int saved = errno, st;
	pid_t pid = bench_child_pid;
	char msg[160];
	size_t n = 0;

	(void)sig;
	if (child_expected || pid <= 0 || waitpid(pid, &st, WNOHANG) != pid) {
		errno = saved;
		return;
	}
	bench_child_pid = 0;
	n = put_str(msg, n, sizeof(msg), bench_name);
	n = put_str(msg, n, sizeof(msg), ": the child ended during the run: ");
	n = put_str(msg, n, sizeof(msg),
		    WIFSIGNALED(st) ? "killed by signal " : "exit status ");
	n = put_uint(msg, n, sizeof(msg),
		     (unsigned int)(WIFSIGNALED(st) ? WTERMSIG(st) :
						      WEXITSTATUS(st)));
	msg[n++] = '\n';
	bench_write_err(msg, n);
	_exit(2);
}

/* ---------------------------------------------------------------------- */
/* 1: try_wait on a ready waitset                                         */

struct s1 {
	int efd; /* raw: count 1, never read */
	cmesh_waitset *one, *many;
	cmesh_sender *tx[1 + MEMBERS];
	cmesh_receiver *rx[1 + MEMBERS];
};

/* Channel `i` of `s`; one message in it if `ready`. */
static void s1_channel(struct s1 *s, unsigned int i, bool ready)
{
	struct bench_msg m;
	int rc = cmesh_channel_new(&bench_msg_type, NULL, &s->tx[i], &s->rx[i]);

	if (rc < 0)
		fail("cmesh_channel_new", rc);
	if (!ready)
		return;
	memset(&m, 0x5a, sizeof(m));
	m.seq = i;
	rc = cmesh_sender_send(s->tx[i], &m, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send", rc);
}

static void s1_setup(struct s1 *s)
{
	uint64_t one = 1;
	int rc;

	memset(s, 0, sizeof(*s));
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0)
		bench_die("eventfd", errno);
	if (write(s->efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		bench_die("eventfd write", errno);
	rc = cmesh_waitset_new(&s->one);
	if (rc == 0)
		rc = cmesh_waitset_new(&s->many);
	if (rc < 0)
		fail("cmesh_waitset_new", rc);
	/* Channel 0: the one member; 1..MEMBERS: the many, the last ready. */
	s1_channel(s, 0, true);
	rc = cmesh_waitset_add_receiver(s->one, s->rx[0], 0);
	for (unsigned int i = 1; rc == 0 && i <= MEMBERS; i++) {
		s1_channel(s, i, i == MEMBERS);
		rc = cmesh_waitset_add_receiver(s->many, s->rx[i], i);
	}
	if (rc < 0)
		fail("cmesh_waitset_add_receiver", rc);
}

static void s1_teardown(struct s1 *s)
{
	cmesh_waitset_free(s->one);
	cmesh_waitset_free(s->many);
	for (unsigned int i = 0; i <= MEMBERS; i++) {
		cmesh_receiver_free(s->rx[i]);
		cmesh_sender_free(s->tx[i]);
	}
	close(s->efd);
}

/* Ticks of BATCH poll() calls on a readable eventfd. */
static uint64_t batch_poll(int efd)
{
	uint64_t t0 = bench_now_ticks();

	for (unsigned int i = 0; i < BATCH; i++) {
		struct pollfd p = { .fd = efd, .events = POLLIN };

		if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
			bench_die("poll: the eventfd is not readable", EPROTO);
	}
	return bench_now_ticks() - t0;
}

/* Ticks of BATCH cmesh_waitset_try_wait() calls, each finding `want`. */
static uint64_t batch_try_wait(cmesh_waitset *ws, uint64_t want)
{
	uint64_t t0 = bench_now_ticks();

	for (unsigned int i = 0; i < BATCH; i++) {
		uint64_t key = UINT64_MAX;
		int rc = cmesh_waitset_try_wait(ws, &key);

		if (rc != 0)
			fail("cmesh_waitset_try_wait", rc);
		if (key != want)
			fail("cmesh_waitset_try_wait: wrong key", -EPROTO);
	}
	return bench_now_ticks() - t0;
}

/* Round `i` of row `k`: BATCH_WARM unrecorded batches, then `per`. */
static void s1_round(struct s1 *s, int k, uint64_t i, uint64_t per)
{
	struct row *r = &rows[k];
	uint64_t start = 0;

	for (uint64_t j = 0; j < BATCH_WARM + per; j++) {
		uint64_t t;

		if (j == BATCH_WARM)
			start = bench_now_ticks();
		switch (k) {
		case R1_POLL:
			t = batch_poll(s->efd);
			break;
		case R1_ONE:
			t = batch_try_wait(s->one, 0);
			break;
		default:
			t = batch_try_wait(s->many, MEMBERS);
			break;
		}
		if (j >= BATCH_WARM)
			r->v[i * per + j - BATCH_WARM] = t;
	}
	r->elapsed += bench_now_ticks() - start;
	r->nv += per;
}

static void run_s1(uint64_t rounds, uint64_t per)
{
	struct s1 s;

	s1_setup(&s);
	for (int k = R1_POLL; k <= R1_MANY; k++)
		rows[k].v = bench_xcalloc(rounds * per, sizeof(uint64_t));
	for (uint64_t i = 0; i < rounds; i++)
		for (int j = R1_POLL; j <= R1_MANY; j++)
			s1_round(&s, i % 2 ? R1_MANY - j : j, i, per);
	s1_teardown(&s);
	for (int k = R1_POLL; k <= R1_MANY; k++) {
		struct row *r = &rows[k];

		r->res.n = r->nv * BATCH;
		bench_fill_latency(&r->res, r->v, r->nv,
				   bench_ns_per_tick / BATCH);
		r->res.rate = bench_rate(r->res.n, r->elapsed);
	}
}

/* ---------------------------------------------------------------------- */
/* 2: sleeping ping-pong across two processes                             */

/* Mapped MAP_SHARED | MAP_ANONYMOUS before fork. */
struct shared {
	struct bench_ev_line ping, pong;
};

static struct shared *sh;
static int efd_ping = -1, efd_pong = -1; /* blocking eventfds */

/* This process's side of the link (each process has its own). */
static cmesh_node *cm_node;
static cmesh_sender *cm_tx;
static cmesh_receiver *cm_rx;
static cmesh_waitset *cm_ws;
/* Waits that said ready where try_recv said -EAGAIN (parent: both sides'). */
static uint64_t spurious;

/* Commands to the child: a message with seq 0. */
enum {
	CMD_EFD = 1,
	CMD_WS,
	CMD_RECV,
	CMD_QUIT
};

static inline void cm_send(const struct bench_msg *m)
{
	int rc = cmesh_sender_send(cm_tx, m, NULL, 0);

	if (rc < 0)
		fail("cmesh_sender_send", rc);
}

static inline void cm_recv(struct bench_msg *out)
{
	int rc = cmesh_receiver_recv(cm_rx, out, NULL, 0);

	if (rc != 0)
		fail("cmesh_receiver_recv", rc);
}

/* Waits in the waitset until the receiver is ready, then takes one. */
static inline void ws_recv(struct bench_msg *out)
{
	for (;;) {
		uint64_t key;
		int rc = cmesh_waitset_wait(cm_ws, CMESH_DEADLINE_NONE, &key);

		if (rc != 0)
			fail("cmesh_waitset_wait", rc);
		if (key != 1)
			fail("cmesh_waitset_wait: wrong key", -EPROTO);
		rc = cmesh_receiver_try_recv(cm_rx, out, NULL, 0);
		if (rc == 0)
			return;
		if (rc != -EAGAIN)
			fail("cmesh_receiver_try_recv after a wait", rc);
		spurious++;
	}
}

static void ws_join(void)
{
	int rc = cmesh_waitset_add_receiver(cm_ws, cm_rx, 1);

	if (rc < 0)
		fail("cmesh_waitset_add_receiver", rc);
}

static void ws_leave(void)
{
	int rc = cmesh_waitset_remove_receiver(cm_ws, cm_rx);

	if (rc < 0)
		fail("cmesh_waitset_remove_receiver", rc);
}

/* One side of a row's round: first seq, round trips, samples (parent). */
struct job {
	uint64_t base;
	uint64_t warm;
	uint64_t n;
	uint64_t *samples;
	uint64_t elapsed;
};

BENCH_RTT_PING(efd_ping_side, struct job, bench_ev_put(&sh->ping, efd_ping, &m),
	       bench_ev_get(&sh->pong, efd_pong, &r))
BENCH_RTT_PONG(efd_pong_side, struct job, bench_ev_get(&sh->ping, efd_ping, &r),
	       bench_ev_put(&sh->pong, efd_pong, &r))
BENCH_RTT_PING(ws_ping_side, struct job, cm_send(&m), ws_recv(&r))
BENCH_RTT_PONG(ws_pong_side, struct job, ws_recv(&r), cm_send(&r))
BENCH_RTT_PING(recv_ping_side, struct job, cm_send(&m), cm_recv(&r))
BENCH_RTT_PONG(recv_pong_side, struct job, cm_recv(&r), cm_send(&r))

/* Runs this process's side of a row of kind `cmd` (CMD_*). */
static void run_row(uint32_t cmd, struct job *j)
{
	bool ping = !bench_is_child;

	switch (cmd) {
	case CMD_EFD:
		(ping ? efd_ping_side : efd_pong_side)(j);
		break;
	case CMD_WS:
		ws_join();
		(ping ? ws_ping_side : ws_pong_side)(j);
		ws_leave();
		break;
	case CMD_RECV:
		(ping ? recv_ping_side : recv_pong_side)(j);
		break;
	default:
		fail("unknown command", -EPROTO);
	}
}

static void cm_join(int sock, pid_t peer)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	int rc;

	o.spin_ns = CMESH_SPIN_NONE;
	o.peer_pid = peer;
	rc = cmesh_node_join_socket(sock, &bench_msg_type, &bench_msg_type, &o,
				    &cm_node, &cm_tx, &cm_rx);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	rc = cmesh_waitset_new(&cm_ws);
	if (rc < 0)
		fail("cmesh_waitset_new", rc);
}

/* Child: runs the rows it is told to until CMD_QUIT. Never returns. */
static void child_main(int sock, bool pin)
{
	int rc;

	bench_child_enter(parent_pid);
	if (pin)
		bench_pin_self(CPU_CHILD);
	cm_join(sock, 0);
	for (;;) {
		struct bench_msg c;
		struct job j = { 0 };
		uint32_t cmd;

		cm_recv(&c);
		if (c.seq != 0)
			fail("expected a command", -EPROTO);
		cmd = (uint32_t)c.stamp;
		if (cmd == CMD_QUIT) {
			c.stamp = spurious; /* the last message: a report */
			cm_send(&c);
			break;
		}
		memcpy(&j.base, c.data, sizeof(j.base));
		memcpy(&j.n, c.data + sizeof(j.base), sizeof(j.n));
		run_row(cmd, &j);
	}
	cmesh_waitset_free(cm_ws);
	cmesh_sender_free(cm_tx);
	cmesh_receiver_free(cm_rx);
	rc = cmesh_node_close(cm_node, cmesh_deadline_after(5000000000LL));
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_node_close", rc);
	_exit(0);
}

/* Parent: tells the child to run `n` round trips of `cmd` from `base`. */
static void send_cmd(uint32_t cmd, uint64_t base, uint64_t n)
{
	struct bench_msg c;

	memset(&c, 0, sizeof(c));
	c.stamp = cmd;
	memcpy(c.data, &base, sizeof(base));
	memcpy(c.data + sizeof(base), &n, sizeof(n));
	cm_send(&c);
}

static void start_child(bool pin)
{
	int sock;
	pid_t pid;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		sh = NULL;
		bench_die("mmap", errno);
	}
	memset(sh, 0, sizeof(*sh)); /* fault it in before the fork */
	efd_ping = eventfd(0, EFD_CLOEXEC);
	efd_pong = eventfd(0, EFD_CLOEXEC);
	if (efd_ping < 0 || efd_pong < 0)
		bench_die("eventfd", errno);
	pid = bench_fork_pair(&sock);
	if (pid == 0)
		child_main(sock, pin);
	cm_join(sock, pid);
}

/*
 * Tells the child to leave, takes its report (its count of waits that
 * found nothing to receive), waits for its "closed", reaps it.
 */
static void stop_child(void)
{
	struct bench_msg r;
	int rc;

	child_expected = 1;
	send_cmd(CMD_QUIT, 0, 0);
	cmesh_sender_free(cm_tx);
	rc = cmesh_receiver_recv_deadline(
		cm_rx, cmesh_deadline_after(10000000000LL), &r, NULL, 0);
	if (rc != 0 || r.seq != 0)
		fail("cmesh_receiver_recv_deadline: the child's report", rc);
	spurious += r.stamp;
	rc = cmesh_receiver_recv_deadline(
		cm_rx, cmesh_deadline_after(10000000000LL), &r, NULL, 0);
	if (rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_receiver_recv_deadline after quit", rc);
	cmesh_waitset_free(cm_ws);
	cmesh_receiver_free(cm_rx);
	cmesh_node_free(cm_node);
	bench_child_reap(0);
	close(efd_ping);
	close(efd_pong);
	munmap(sh, sizeof(*sh));
	sh = NULL;
}

static uint64_t next_seq = 1;

static uint32_t row_cmd(int k)
{
	return k == R2_EFD ? CMD_EFD : k == R2_WS ? CMD_WS : CMD_RECV;
}

/* Round `i` of row `k`: ROUND_WARM unrecorded round trips, then `per`. */
static void s2_round(int k, uint64_t i, uint64_t per)
{
	struct row *r = &rows[k];
	struct job j = { .base = next_seq,
			 .warm = ROUND_WARM,
			 .n = per,
			 .samples = r->v + i * per,
			 .elapsed = 0 };

	send_cmd(row_cmd(k), j.base, ROUND_WARM + per);
	run_row(row_cmd(k), &j);
	next_seq += ROUND_WARM + per;
	r->elapsed += j.elapsed;
	r->nv += per;
}

static void run_s2(uint64_t rounds, uint64_t per, bool pin,
		   cmesh_receiver_stats *st)
{
	struct sigaction sa;
	int rc;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	for (int k = R2_EFD; k <= R2_RECV; k++)
		rows[k].v = bench_xcalloc(rounds * per, sizeof(uint64_t));
	start_child(pin);
	for (uint64_t i = 0; i < rounds; i++) {
		for (int j = R2_EFD; j <= R2_RECV; j++)
			s2_round(i % 2 ? R2_RECV - (j - R2_EFD) : j, i, per);
		bench_note_round(&parts[0], rows[R2_EFD].v + i * per,
				 rows[R2_WS].v + i * per, per);
		bench_note_round(&parts[1], rows[R2_EFD].v + i * per,
				 rows[R2_RECV].v + i * per, per);
	}
	st->size = sizeof(*st);
	rc = cmesh_receiver_stats_get(cm_rx, st);
	if (rc < 0)
		fail("cmesh_receiver_stats_get", rc);
	stop_child();
	for (int k = R2_EFD; k <= R2_RECV; k++)
		bench_fill_rtt(&rows[k].res, rows[k].v, rows[k].nv,
			       rows[k].elapsed);
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

static void print_row(int k)
{
	const struct row *r = &rows[k];
	char p50[16], p99[16], p999[16], rate[32], ratio[16] = "-";
	char tgt[16] = "ref";
	const char *res = "";

	bench_fmt_ns(p50, sizeof(p50), r->res.p50);
	bench_fmt_ns(p99, sizeof(p99), r->res.p99);
	bench_fmt_ns(p999, sizeof(p999), r->res.p999);
	bench_fmt_rate(rate, sizeof(rate), r->res.rate, "");
	if (r->base >= 0) {
		snprintf(ratio, sizeof(ratio), "%.2fx", row_ratio(k));
		snprintf(tgt, sizeof(tgt), "info");
	}
	if (r->target > 0)
		snprintf(tgt, sizeof(tgt), "<=%.1fx", r->target);
	else if (r->target_ns > 0)
		snprintf(tgt, sizeof(tgt), "<=%.0fns", r->target_ns);
	if (r->target > 0 || r->target_ns > 0)
		res = row_passed(k) ? "PASS" : "FAIL";
	printf("%-17s %-16s %9" PRIu64 " %8s %8s %8s %9s %7s %8s  %s\n",
	       r->scen ? r->scen : "", r->name, r->res.n, p50, p99, p999, rate,
	       ratio, tgt, res);
	bench_json_result(r->scen, r->name, &r->res,
			  k <= R1_MANY ? "calls/s" : "rt/s");
	if (r->target > 0 || r->target_ns > 0) {
		char what[64], v[24];

		snprintf(what, sizeof(what), "%s: %s %s", rows[r->base].scen,
			 r->name, r->target > 0 ? "p50 / raw p50" : "p50");
		snprintf(v, sizeof(v), "%s ns", p50);
		bench_json_target(what, r->target > 0 ? ratio : v, tgt,
				  *res == 'P');
	}
}

static void print_notes(bool run1, bool run2, uint64_t rounds1,
			uint64_t rounds2, const cmesh_receiver_stats *st)
{
	if (run1)
		printf("# 1: ns per call, percentiles of %" PRIu64
		       " batch averages (%u calls each, %" PRIu64
		       " rounds, %u unrecorded batches per row and round); "
		       "rate: calls/s; ratio: p50 against raw poll(); "
		       "64 members: only the last added is ready, so each "
		       "call scans all 64\n",
		       rows[R1_ONE].nv, BATCH, rounds1, BATCH_WARM);
	if (!run2)
		return;
	printf("# 2: ns per round trip from the parent's clock; rate: "
	       "round trips/s; ratio: p50 against raw eventfd; rows "
	       "alternate in %" PRIu64 " rounds, %u unrecorded round trips "
	       "each; spin_ns = CMESH_SPIN_NONE on both sides\n",
	       rounds2, ROUND_WARM);
	bench_print_parts("2 cmesh waitset / raw eventfd", "raw eventfd",
			  &parts[0]);
	bench_print_parts("2 cmesh recv / raw eventfd", "raw eventfd",
			  &parts[1]);
	printf("# 2 cmesh recv: the parent's receiver waited in %" PRIu64
	       " of its %" PRIu64 " receives, slept %" PRIu64
	       " times, its spin caught %" PRIu64 "; cmesh waitset: %" PRIu64
	       " waits (both sides) returned with nothing to receive\n",
	       st->waits, rounds2 * (ROUND_WARM + rows[R2_RECV].nv / rounds2),
	       st->sleeps, st->caught, spurious);
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_waitset [--smoke] [--strict] [--only 1|2]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

int main(int argc, char **argv)
{
	struct bench_opts cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	cmesh_receiver_stats st = { 0 };
	uint64_t rounds1, rounds2, per1, per2, t0;
	unsigned int wd;
	int fails = 0;
	bool run1, run2;

	bench_name = "bench_waitset";
	bench_die_hook = bench_child_die_hook;
	bench_check_dies = true; /* a bad echo kills and reaps the child */
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_opts_parse(&cfg, "bench_waitset", 2, usage, argc, argv);
	run1 = cfg.only != 2;
	run2 = cfg.only != 1;
	rounds1 = cfg.smoke ? 2 : 10;
	rounds2 = cfg.smoke ? 2 : 10;
	per1 = bench_opts_scaled(&cfg, 150, 20,
				 2); /* batches; a call: ~10 ns..2 us */
	per2 = bench_opts_scaled(&cfg, 1000, 100,
				 4); /* round trips of ~10-100 us */
	wd = cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S;
	parent_pid = getpid();

	cfg.two_cpus = bench_cpus_usable(CPU_PARENT, CPU_CHILD) &&
		       bench_pin_self(CPU_PARENT);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_PARENT, CPU_CHILD, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();

	if (run1) {
		bench_child_signals("scenario 1 (try_wait ready)");
		alarm(wd);
		run_s1(rounds1, per1);
		alarm(0);
	}
	if (run2) {
		bench_child_signals("scenario 2 (sleep ping-pong)");
		alarm(wd);
		run_s2(rounds2, per2, cfg.two_cpus, &st);
		alarm(0);
	}
	bench_cpu_usage_read(&usage1);

	printf("%-17s %-16s %9s %8s %8s %8s %9s %7s %8s  %s\n", "scenario",
	       "row", "n", "p50 ns", "p99 ns", "p99.9 ns", "rate/s", "ratio",
	       "target", "result");
	for (int k = 0; k < NROWS; k++) {
		if (k == R1_POLL && !run1) {
			printf("%-17s SKIP (--only)\n", rows[k].scen);
			k = R1_MANY;
			continue;
		}
		if (k == R2_EFD && !run2) {
			printf("%-17s SKIP (--only)\n", rows[k].scen);
			break;
		}
		print_row(k);
		if (!row_passed(k))
			fails++;
		free(rows[k].v);
	}
	print_notes(run1, run2, rounds1, rounds2, &st);
	if (run2 && !cfg.two_cpus)
		printf("# CPUs %d and %d are not both usable: NOT pinned\n",
		       CPU_PARENT, CPU_CHILD);
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
