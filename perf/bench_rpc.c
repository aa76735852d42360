/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_rpc.c - an rpc round trip (include/cmesh/rpc.h) against the
 * channel round trip it is built on, in one process and across two, in
 * the same run (issue: "rpc round trip within 1.3x of the channel round
 * trip, in one process and across two").
 *
 * Requests are declared with CMESH_RPC_REQUEST: struct rq { struct
 * rq_args args (kind, seq, stamp); cmesh_oneshot_sender *reply; }, the
 * response a plain 16-byte struct resp { seq, stamp }. Every request,
 * reference rows' included, travels as that type (reply NULL for an
 * echo), so the ratio is the price of the reply port alone. The server
 * (a thread, or the child process) receives requests on one channel:
 * KIND_ECHO answers {seq, stamp} on a response channel, KIND_RPC answers
 * the same with cmesh_rpc_complete() through the request's reply port.
 * Every receiver uses the library's default spin (CMESH_SPIN_NS: spins,
 * then sleeps), so both sides stay busy during a round.
 *
 *   1 in-process   this thread on CPU 0, the server thread on CPU 1; a
 *                  request channel and a response channel
 *                  (cmesh_channel_new, default options).
 *                  channel rtt (ref): send a KIND_ECHO request, receive
 *                  the response on the response channel.
 *                  rpc: cmesh_rpc_call() (its reply oneshot a finished
 *                  call's, re-armed: rpc.c keeps a few per thread),
 *                  cmesh_rpc_wait(call, NULL, ...), cmesh_rpc_free(): all
 *                  three timed, the free included (a caller pays it per
 *                  call). Target: rpc p50 <= 1.3x channel rtt p50.
 *                  Info row " call+free": the caller's own calls in the
 *                  same loop: the time in cmesh_rpc_call() plus the time
 *                  in cmesh_rpc_free(), the wait between them untimed.
 *   2 two procs    a fork()ed child pinned to CPU 1, joined with
 *                  cmesh_node_join_socket() over a SOCK_SEQPACKET
 *                  socketpair made before fork (peer_pid set); the link's
 *                  down channel carries the requests, its up channel the
 *                  KIND_ECHO responses; rpc replies go through the
 *                  oneshot each call sends across (a new queue per call
 *                  on each side, from the thread's queue cache, on a
 *                  reply lane kept on the link and reused). The same
 *                  three rows.
 *                  Target: rpc p50 <= 1.3x channel rtt p50.
 *
 * Every response's seq and stamp are checked (wrong: exit 2). The rows
 * of both scenarios alternate in rounds, their order reversed every other
 * round, so that drift (e.g. the host moving the vCPUs) hits them alike;
 * each round starts with unrecorded round trips (the idle side may have
 * gone to sleep). The in-process server thread and the child sleep
 * through each other's rows. Compare rows of one run only.
 *
 * Latency: lfence;rdtsc (calibrated against CLOCK_MONOTONIC) when the TSC
 * is invariant, else clock_gettime; one sample per round trip.
 *
 * Usage: bench_rpc [--smoke] [--strict] [--only 1|2]
 * --smoke: tiny counts (well under 5 s), for CI; the targets are printed
 * but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies every count, e.g. 0.2 or 3).
 * Exit status: 0 unless a call fails or a response is wrong (2), a run
 * hangs (3: watchdog), or --strict without --smoke and a target FAILs (1).
 * The child dies with the parent (PR_SET_PDEATHSIG) and is killed and
 * reaped on every exit path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CPU_CALLER 0
#define CPU_SERVER 1
#define TARGET 1.3     /* rpc p50 <= this x channel rtt p50 */
#define ROUND_WARM 32u /* unrecorded round trips per row and round */
#define WATCHDOG_FULL_S 300u
#define WATCHDOG_SMOKE_S 30u

/* ---------------------------------------------------------------------- */
/* Message types                                                          */

struct resp {
	uint64_t seq, stamp;
};
CMESH_TYPE_DEFINE_PLAIN(resp_type, struct resp);

enum {
	KIND_ECHO = 1,
	KIND_RPC,
	KIND_QUIT
};

struct rq_args {
	uint32_t kind; /* KIND_* */
	uint32_t pad;
	uint64_t seq, stamp; /* echoed in the response */
};
CMESH_RPC_REQUEST(rq, struct rq_args, resp_type);

/* ---------------------------------------------------------------------- */
/* Failure                                                                */

static pid_t parent_pid;

static void fail(const char *what, int rc)
{
	bench_die(what, rc < 0 ? rc : EPROTO);
}

static void check_resp(const struct resp *r, uint64_t seq, uint64_t stamp,
		       const char *row)
{
	char what[160];

	if (r->seq == seq && r->stamp == stamp)
		return;
	snprintf(what, sizeof(what),
		 "%s: wrong response: seq %" PRIu64 " (want %" PRIu64
		 "), stamp %" PRIu64 " (want %" PRIu64 ")",
		 row, r->seq, seq, r->stamp, stamp);
	fail(what, -EPROTO); /* exit 2, the child killed and reaped */
}

/* ---------------------------------------------------------------------- */
/* Server: the thread of 1 and the child of 2                             */

/* Serves requests from rx until KIND_QUIT or a closed channel. */
static void serve(cmesh_receiver *rx, cmesh_sender *tx)
{
	for (;;) {
		struct rq q;
		struct resp r;
		int rc = cmesh_receiver_recv(rx, &q, NULL, 0);

		if (rc == -EPIPE)
			return;
		if (rc != 0)
			fail("server: cmesh_receiver_recv (requests)", rc);
		r.seq = q.args.seq;
		r.stamp = q.args.stamp;
		switch (q.args.kind) {
		case KIND_ECHO:
			if (q.reply)
				fail("server: an echo with a reply port", 0);
			rc = cmesh_sender_send(tx, &r, NULL, 0);
			if (rc < 0)
				fail("server: cmesh_sender_send (echo)", rc);
			break;
		case KIND_RPC:
			if (!q.reply)
				fail("server: an rpc without a reply port", 0);
			rc = cmesh_rpc_complete(q.reply, &r, NULL, 0);
			if (rc < 0)
				fail("server: cmesh_rpc_complete", rc);
			break;
		case KIND_QUIT:
			cmesh_oneshot_sender_free(q.reply);
			return;
		default:
			fail("server: unknown request kind", 0);
		}
	}
}

struct server_arg {
	cmesh_receiver *rx;
	cmesh_sender *tx;
	bool pinned;
};

static void *server_thread(void *p)
{
	struct server_arg *a = p;

	a->pinned = bench_pin_self(CPU_SERVER);
	serve(a->rx, a->tx);
	return NULL;
}

/* Never returns. */
static void child_main(int sock, bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_sender *up;
	cmesh_receiver *down;
	int rc;

	bench_child_enter(parent_pid);
	if (pin)
		bench_pin_self(CPU_SERVER);
	rc = cmesh_node_join_socket(sock, &resp_type, &rq_type, &o, &node, &up,
				    &down);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	serve(down, up);
	cmesh_sender_free(up);
	cmesh_receiver_free(down);
	rc = cmesh_node_close(node, cmesh_deadline_after(5000000000LL));
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_node_close", rc);
	_exit(0);
}

/* ---------------------------------------------------------------------- */
/* Caller: one round trip of each row                                     */

/* One scenario's request sender and response receiver. */
struct side {
	cmesh_sender *tx;
	cmesh_receiver *rx;
};

static uint64_t next_seq = 1;

static inline struct rq request(uint32_t kind, uint64_t seq, uint64_t stamp)
{
	struct rq q;

	memset(&q, 0, sizeof(q));
	q.args.kind = kind;
	q.args.seq = seq;
	q.args.stamp = stamp;
	return q;
}

/* channel rtt: an echo request, its response on the response channel. */
static inline uint64_t echo_once(const struct side *s)
{
	uint64_t seq = next_seq++, t0, t1;
	struct resp r;
	struct rq q;
	int rc;

	t0 = bench_now_ticks();
	q = request(KIND_ECHO, seq, t0);
	rc = cmesh_sender_send(s->tx, &q, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (echo)", rc);
	rc = cmesh_receiver_recv(s->rx, &r, NULL, 0);
	if (rc != 0)
		fail("cmesh_receiver_recv (echo response)", rc);
	t1 = bench_now_ticks();
	check_resp(&r, seq, t0, "channel rtt");
	return t1 - t0;
}

/*
 * rpc: call, wait and free, all timed; calls_only (call+free): only the
 * time in the call and in the free.
 */
static inline uint64_t rpc_once(const struct side *s, bool calls_only)
{
	uint64_t seq = next_seq++, t0, t1, t2, t3;
	cmesh_rpc *call;
	struct resp r;
	struct rq q;
	int rc;

	t0 = bench_now_ticks();
	q = request(KIND_RPC, seq, t0);
	rc = cmesh_rpc_call(s->tx, &q, NULL, 0, &call);
	if (rc < 0)
		fail("cmesh_rpc_call", rc);
	t1 = calls_only ? bench_now_ticks() : t0;
	rc = cmesh_rpc_wait(call, NULL, &r, NULL, 0);
	if (rc != 0)
		fail("cmesh_rpc_wait", rc);
	t2 = calls_only ? bench_now_ticks() : t1;
	cmesh_rpc_free(call);
	t3 = bench_now_ticks();
	check_resp(&r, seq, t0, calls_only ? "call+free" : "rpc");
	return (t1 - t0) + (t3 - t2);
}

/* ---------------------------------------------------------------------- */
/* Rows                                                                   */

enum {
	R1_CH,
	R1_RPC,
	R1_CALLS,
	R2_CH,
	R2_RPC,
	R2_CALLS,
	NROWS
};

struct row {
	const char *scen; /* on the scenario's first row */
	const char *name;
	int base;      /* row of the ratio's reference, or -1 */
	double target; /* > 0: ratio <= target */
	struct bench_result res;
	uint64_t *v; /* samples, rounds * per */
	uint64_t elapsed;
};

static struct row rows[NROWS] = {
	[R1_CH] = { "1 in-process", "channel rtt", -1, 0, { 0 }, 0, 0 },
	[R1_RPC] = { "", "rpc", R1_CH, TARGET, { 0 }, 0, 0 },
	[R1_CALLS] = { "", " call+free", R1_CH, 0, { 0 }, 0, 0 },
	[R2_CH] = { "2 two processes", "channel rtt", -1, 0, { 0 }, 0, 0 },
	[R2_RPC] = { "", "rpc", R2_CH, TARGET, { 0 }, 0, 0 },
	[R2_CALLS] = { "", " call+free", R2_CH, 0, { 0 }, 0, 0 },
};

static struct bench_parts parts[2]; /* rpc / channel, per round */

static double row_ratio(int k)
{
	return bench_ratio(&rows[rows[k].base].res, &rows[k].res, false);
}

/* Round `i` of row `k`: ROUND_WARM unrecorded round trips, then `per`. */
static void row_round(int k, const struct side *s, uint64_t i, uint64_t per)
{
	uint64_t *v = rows[k].v + i * per, start = 0;

	for (uint64_t j = 0; j < ROUND_WARM + per; j++) {
		uint64_t t;

		if (j == ROUND_WARM)
			start = bench_now_ticks();
		switch (k % 3) {
		case 0:
			t = echo_once(s);
			break;
		default:
			t = rpc_once(s, k % 3 == 2);
			break;
		}
		if (j >= ROUND_WARM)
			v[j - ROUND_WARM] = t;
	}
	rows[k].elapsed += bench_now_ticks() - start;
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
	if (r->target > 0) {
		snprintf(tgt, sizeof(tgt), "<=%.1fx", r->target);
		res = row_ratio(k) <= r->target ? "PASS" : "FAIL";
	}
	printf("%-16s %-12s %8" PRIu64 " %9s %9s %9s %9s %7s %7s  %s\n",
	       r->scen, r->name, r->res.n, p50, p99, p999, rate, ratio, tgt,
	       res);
	bench_json_result(r->scen, r->name, &r->res, "rt/s");
	if (r->target > 0) {
		char what[64];

		snprintf(what, sizeof(what), "%s: %s / %s p50",
			 rows[r->base].scen, r->name, rows[r->base].name);
		bench_json_target(what, ratio, tgt, *res == 'P');
	}
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_rpc [--smoke] [--strict] [--only 1|2]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

/* Forks the child of 2 and joins it: the parent's side in *s. */
static void start_child(struct side *s, bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	int sock, rc;
	pid_t pid = bench_fork_pair(&sock);

	if (pid == 0)
		child_main(sock, pin);
	o.peer_pid = pid;
	rc = cmesh_node_join_socket(sock, &rq_type, &resp_type, &o, &node,
				    &s->tx, &s->rx);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	/* The link lives on while its channels do. */
	cmesh_node_free(node);
}

/* Tells the child to leave, waits for its "closed", reaps it. */
static void stop_child(struct side *s)
{
	struct rq q = request(KIND_QUIT, 0, 0);
	struct resp r;
	int rc = cmesh_sender_send(s->tx, &q, NULL, 0);

	if (rc < 0)
		fail("cmesh_sender_send (quit, down)", rc);
	cmesh_sender_free(s->tx);
	rc = cmesh_receiver_recv_deadline(
		s->rx, cmesh_deadline_after(10000000000LL), &r, NULL, 0);
	if (rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_receiver_recv_deadline (up) after quit", rc);
	cmesh_receiver_free(s->rx);
	bench_child_reap(0);
}

/* In-process: a request and a response channel, the server thread. */
static void start_thread(struct side *s, struct server_arg *a, pthread_t *th)
{
	int rc = cmesh_channel_new(&rq_type, NULL, &s->tx, &a->rx);

	if (rc == 0)
		rc = cmesh_channel_new(&resp_type, NULL, &a->tx, &s->rx);
	if (rc < 0)
		fail("cmesh_channel_new", rc);
	rc = pthread_create(th, NULL, server_thread, a);
	if (rc)
		fail("pthread_create", -rc);
}

static void stop_thread(struct side *s, struct server_arg *a, pthread_t th)
{
	struct rq q = request(KIND_QUIT, 0, 0);
	int rc = cmesh_sender_send(s->tx, &q, NULL, 0);

	if (rc < 0)
		fail("cmesh_sender_send (quit, in-process)", rc);
	pthread_join(th, NULL);
	cmesh_sender_free(s->tx);
	cmesh_receiver_free(s->rx);
	cmesh_sender_free(a->tx);
	cmesh_receiver_free(a->rx);
}

int main(int argc, char **argv)
{
	struct bench_opts cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	struct side in = { 0 }, x = { 0 };
	struct server_arg sa = { 0 };
	uint64_t rounds, per[2], t0;
	char cflags[512];
	pthread_t th;
	int fails = 0;
	bool run1, run2;

	bench_name = "bench_rpc";
	bench_die_hook = bench_child_die_hook;
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_opts_parse(&cfg, "bench_rpc", 2, usage, argc, argv);
	run1 = cfg.only != 2;
	run2 = cfg.only != 1;
	rounds = cfg.smoke ? 2 : 10;
	per[0] = bench_opts_scaled(&cfg, 10000, 300,
				   10); /* in-process: ~1-25 us each */
	per[1] = bench_opts_scaled(&cfg, 300, 20,
				   4); /* two processes: ~300 us */
	parent_pid = getpid();
	bench_child_signals("bench_rpc");

	cfg.two_cpus = bench_cpus_usable(CPU_CALLER, CPU_SERVER) &&
		       bench_pin_self(CPU_CALLER);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_cflags(cflags, sizeof(cflags), BENCH_CFLAGS_OR("-O2"));
	bench_print_header(cflags, "threads/processes on cpus", CPU_CALLER,
			   CPU_SERVER, cfg.two_cpus, cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);

	/* The child first: fork while this process has one thread. */
	if (run2)
		start_child(&x, cfg.two_cpus);
	if (run1)
		start_thread(&in, &sa, &th);
	for (int k = 0; k < NROWS; k++) {
		if (k < R2_CH ? run1 : run2)
			rows[k].v = bench_xcalloc(rounds * per[k / 3],
						  sizeof(uint64_t));
	}
	for (uint64_t i = 0; i < rounds; i++) {
		for (int j = 0; j < NROWS; j++) {
			/* Every other round in reverse order. */
			int k = i % 2 ? NROWS - 1 - j : j;

			if (rows[k].v)
				row_round(k, k < R2_CH ? &in : &x, i,
					  per[k / 3]);
		}
		for (int sc = 0; sc < 2; sc++) {
			uint64_t n = per[sc];
			struct row *ch = &rows[sc * 3],
				   *rpc = &rows[sc * 3 + 1];

			if (ch->v)
				bench_note_round(&parts[sc], ch->v + i * n,
						 rpc->v + i * n, n);
		}
	}
	if (run1)
		stop_thread(&in, &sa, th);
	if (run2)
		stop_child(&x);
	alarm(0);
	bench_cpu_usage_read(&usage1);

	printf("%-16s %-12s %8s %9s %9s %9s %9s %7s %7s  %s\n", "scenario",
	       "row", "n", "p50 ns", "p99 ns", "p99.9 ns", "rt/s", "ratio",
	       "target", "result");
	for (int k = 0; k < NROWS; k++) {
		if (!rows[k].v)
			continue;
		bench_fill_rtt(&rows[k].res, rows[k].v, rounds * per[k / 3],
			       rows[k].elapsed);
		free(rows[k].v);
		print_row(k);
		if (rows[k].target > 0 && row_ratio(k) > rows[k].target)
			fails++;
	}
	printf("# times in ns from the caller's clock; ratio: p50 against the "
	       "scenario's channel rtt (ref); rows alternate in %" PRIu64
	       " rounds, %u unrecorded round trips each; rpc = call + wait + "
	       "free; call+free = the caller's time in cmesh_rpc_call() and "
	       "cmesh_rpc_free(), the wait untimed\n",
	       rounds, ROUND_WARM);
	bench_print_parts("1 rpc / channel rtt", "channel rtt", &parts[0]);
	bench_print_parts("2 rpc / channel rtt", "channel rtt", &parts[1]);
	if (run1 && !sa.pinned)
		printf("# the server thread is NOT pinned\n");
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
