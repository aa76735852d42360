/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_spin.c - what a receiver's spin before it sleeps costs and
 * buys under a request stream at a fixed rate, across two processes.
 *
 * The client (this process, CPU 0) sends a 64-byte request at fixed times
 * (rate R: request i is due at t0 + i / R; when a response comes late the
 * next request goes at once, never two at a time); the server (a fork()ed
 * child joined over a socketpair, CPU 1) answers each one at once. Both
 * sides receive (the client its responses, the server its requests) with
 * the row's spin, set for both through cmesh_node_opts.spin_ns:
 *
 *   none      CMESH_SPIN_NONE: sleeps at once
 *   fixed50   50 us, then sleeps (the default before it became adaptive)
 *   adaptive  CMESH_SPIN_ADAPTIVE, the default: spins only while spinning
 *             catches messages (include/cmesh/channel.h)
 *   always    10 s: never sleeps
 *   from-none adaptive, after an idle spell: before the stream each side
 *             waits for nothing until its spin is none (a device idle,
 *             then busy), then learns again from the stream's waits
 *
 * at 1k, 10k and 100k requests/s. Each row: RTT p50/p99 (the client's
 * send to its receipt of the response), the rate reached, and each side's
 * CPU% (process CPU time, link thread included, over the row's wall time;
 * the server measures its own, from its first request to the last). The
 * client sleeps (clock_nanosleep, 1 ns timer slack) until 30 us before a
 * request is due, then polls the clock: its CPU% is that of a client
 * with a deadline to meet, not of a receiver alone.
 *
 * Targets for adaptive, each against a row of the same run:
 *   at 100k/s   RTT p50 <= 1.2x always's;
 *   at 1k, 10k  server CPU% <= none's + 5 points, and RTT p50 no worse
 *               than fixed50's (<= 1.1x: this machine's run-to-run noise);
 *   at each     from-none's RTT p50 <= 1.1x adaptive's (the spin comes
 *               back after an idle spell: its first 5% are not recorded).
 *
 * Rows run in rounds (their order reversed every other round), so that
 * drift (the host moving the vCPUs) hits them alike; a row's first 5% of
 * requests are not recorded. Compare rows of one run only.
 *
 * Usage: bench_spin [--smoke] [--strict] [--only 1|2|3] (1: 1k/s, 2: 10k,
 * 3: 100k). Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies the requests per row).
 * Exit status: 0 unless a call fails (2), a run hangs (3), or --strict
 * without --smoke and a target FAILs (1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define CPU_CLIENT 0
#define CPU_SERVER 1
#define SPIN_ALWAYS_NS 10000000000LL
#define POLL_BEFORE_NS 30000 /* the client polls the clock this close */
#define WATCHDOG_FULL_S 300u
#define WATCHDOG_SMOKE_S 60u

struct req {
	uint64_t kind; /* KIND_* */
	uint64_t seq, stamp;
	uint64_t cpu_ns, wall_ns; /* KIND_QUIT's answer: the server's */
	int64_t spin_ns, wake_ns; /* ... and its receiver's learnt spin */
	uint64_t pad;
};
CMESH_TYPE_DEFINE_PLAIN(req_type, struct req);

enum {
	KIND_REQ = 1,
	KIND_QUIT,
	KIND_READY /* from-none: the server's spin is none */
};

#define NRATES 3
#define NMODES 5
static const uint64_t rates[NRATES] = { 1000, 10000, 100000 };
static const char *const rate_names[NRATES] = { "1 1k/s", "2 10k/s",
						"3 100k/s" };
enum {
	M_NONE,
	M_FIXED50,
	M_ADAPTIVE,
	M_ALWAYS,
	M_FROM_NONE
};
static const char *const mode_names[NMODES] = { "none", "fixed50", "adaptive",
						"always", "from-none" };
static const int64_t mode_spin[NMODES] = { CMESH_SPIN_NONE, 50000,
					   CMESH_SPIN_ADAPTIVE, SPIN_ALWAYS_NS,
					   CMESH_SPIN_ADAPTIVE };

struct row {
	uint64_t *v; /* RTT samples, ticks */
	uint64_t n;  /* samples so far */
	uint64_t reqs;
	double wall_s, client_cpu_s, server_cpu_s, server_wall_s;
	/* Each side's receiver at the end of the row's last round. */
	int64_t client_spin, client_wake, server_spin, server_wake;
	struct bench_result res;
};

/* What `rx` has learnt: its spin and its wakeups' cost, ns. */
static void learnt(cmesh_receiver *rx, int64_t *spin, int64_t *wake)
{
	cmesh_receiver_stats s = { .size = sizeof(s) };

	*spin = *wake = 0;
	if (cmesh_receiver_stats_get(rx, &s) == 0) {
		*spin = s.spin_ns;
		*wake = s.wake_ns;
	}
}

static struct row rows[NRATES][NMODES];

static uint64_t cpu_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------------- */
/* Server (the child)                                                     */

/* An idle spell: waits for nothing until the receiver's spin is none. */
static void go_idle(cmesh_receiver *rx, const char *who)
{
	for (int i = 0; i < 64; i++) {
		cmesh_receiver_stats st = { .size = sizeof(st) };
		struct req q;
		int rc = cmesh_receiver_stats_get(rx, &st);

		if (rc < 0)
			bench_die(who, rc);
		if (!st.spin_ns)
			return;
		rc = cmesh_receiver_recv_deadline(
			rx, cmesh_deadline_after(1000000), &q, NULL, 0);
		if (rc != -ETIMEDOUT)
			bench_die(who, rc < 0 ? rc : -EPROTO);
	}
	bench_die(who, -EAGAIN);
}

static _Noreturn void server_main(int sock, int m, bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	uint64_t cpu0 = 0, wall0 = 0;
	struct req q;
	int rc;

	bench_child_enter(getppid());
	if (pin)
		bench_pin_self(CPU_SERVER);
	o.spin_ns = mode_spin[m];
	rc = cmesh_node_join_socket(sock, &req_type, &req_type, &o, &node, &tx,
				    &rx);
	if (rc < 0)
		bench_die("child: cmesh_node_join_socket", rc);
	cmesh_node_free(node);
	if (m == M_FROM_NONE) {
		go_idle(rx, "child: idle spell");
		q = (struct req){ .kind = KIND_READY };
		rc = cmesh_sender_send(tx, &q, NULL, 0);
		if (rc < 0)
			bench_die("child: cmesh_sender_send (ready)", rc);
	}
	for (;;) {
		rc = cmesh_receiver_recv(rx, &q, NULL, 0);
		if (rc != 0)
			bench_die("child: cmesh_receiver_recv",
				  rc < 0 ? rc : -EPROTO);
		if (!wall0) {
			wall0 = cpu_ns(CLOCK_MONOTONIC);
			cpu0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
		}
		if (q.kind == KIND_QUIT) {
			q.cpu_ns = cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
			q.wall_ns = cpu_ns(CLOCK_MONOTONIC) - wall0;
			learnt(rx, &q.spin_ns, &q.wake_ns);
		}
		rc = cmesh_sender_send(tx, &q, NULL, 0);
		if (rc < 0)
			bench_die("child: cmesh_sender_send", rc);
		if (q.kind == KIND_QUIT)
			break;
	}
	cmesh_sender_free(tx);
	rc = cmesh_receiver_recv_deadline(
		rx, cmesh_deadline_after(10000000000LL), &q, NULL, 0);
	cmesh_receiver_free(rx);
	_exit(rc == -EPIPE || rc == -ECONNRESET ? 0 : 2);
}

/* ---------------------------------------------------------------------- */
/* Client                                                                 */

/* Sleeps until POLL_BEFORE_NS before `due` (CLOCK_MONOTONIC), then polls. */
static void wait_until(uint64_t due)
{
	uint64_t now = cpu_ns(CLOCK_MONOTONIC);

	if (due > now + POLL_BEFORE_NS) {
		uint64_t t = due - POLL_BEFORE_NS;
		struct timespec ts = { (time_t)(t / 1000000000u),
				       (long)(t % 1000000000u) };

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts,
				       NULL) == EINTR)
			;
	}
	while (cpu_ns(CLOCK_MONOTONIC) < due)
		;
}

static void recv_resp(cmesh_receiver *rx, struct req *r, uint64_t seq)
{
	int rc = cmesh_receiver_recv(rx, r, NULL, 0);

	if (rc != 0)
		bench_die("cmesh_receiver_recv", rc < 0 ? rc : -EPROTO);
	if (r->seq != seq) {
		fprintf(stderr,
			"bench_spin: response %" PRIu64 ", want %" PRIu64 "\n",
			r->seq, seq);
		exit(2);
	}
}

/* One round of row (rate k, mode m): `n` requests, the first 5% unrecorded. */
static void run_row(int k, int m, uint64_t n, bool pin)
{
	struct row *row = &rows[k][m];
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	uint64_t period = 1000000000u / rates[k], warm = n / 20, t0, c0, due;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct req q = { .kind = KIND_REQ }, r;
	int sock, rc;
	pid_t pid = bench_fork_pair(&sock);

	if (pid == 0)
		server_main(sock, m, pin);
	o.peer_pid = pid;
	o.spin_ns = mode_spin[m];
	rc = cmesh_node_join_socket(sock, &req_type, &req_type, &o, &node, &tx,
				    &rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
	cmesh_node_free(node);
	if (m == M_FROM_NONE) {
		rc = cmesh_receiver_recv(rx, &r, NULL, 0);
		if (rc != 0 || r.kind != KIND_READY)
			bench_die("cmesh_receiver_recv (ready)",
				  rc < 0 ? rc : -EPROTO);
		go_idle(rx, "idle spell");
	}

	t0 = c0 = 0;
	due = cpu_ns(CLOCK_MONOTONIC) + period;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t s, e;

		if (i == warm) {
			t0 = cpu_ns(CLOCK_MONOTONIC);
			c0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
		}
		wait_until(due);
		q.seq = i;
		s = bench_now_ticks();
		rc = cmesh_sender_send(tx, &q, NULL, 0);
		if (rc < 0)
			bench_die("cmesh_sender_send", rc);
		recv_resp(rx, &r, i);
		e = bench_now_ticks();
		if (i >= warm)
			row->v[row->n++] = e - s;
		/* Late: the next goes at once, the schedule moves on. */
		due += period;
		if (due < cpu_ns(CLOCK_MONOTONIC))
			due = cpu_ns(CLOCK_MONOTONIC);
	}
	row->wall_s += (double)(cpu_ns(CLOCK_MONOTONIC) - t0) * 1e-9;
	row->client_cpu_s +=
		(double)(cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1e-9;
	row->reqs += n - warm;
	learnt(rx, &row->client_spin, &row->client_wake);

	q.kind = KIND_QUIT;
	q.seq = n;
	rc = cmesh_sender_send(tx, &q, NULL, 0);
	if (rc < 0)
		bench_die("cmesh_sender_send (quit)", rc);
	recv_resp(rx, &r, n);
	/* The server's window holds the warm-up too: a ratio either way. */
	row->server_cpu_s += (double)r.cpu_ns * 1e-9;
	row->server_wall_s += (double)r.wall_ns * 1e-9;
	row->server_spin = r.spin_ns;
	row->server_wake = r.wake_ns;
	cmesh_sender_free(tx);
	rc = cmesh_receiver_recv_deadline(
		rx, cmesh_deadline_after(10000000000LL), &r, NULL, 0);
	if (rc != -EPIPE && rc != -ECONNRESET)
		bench_die("cmesh_receiver_recv_deadline (after quit)", rc);
	cmesh_receiver_free(rx);
	bench_child_reap(0);
}

/* ---------------------------------------------------------------------- */
/* Report                                                                 */

static double pct(double part, double whole)
{
	return whole > 0 ? 100.0 * part / whole : 0;
}

static double server_pct(const struct row *r)
{
	return pct(r->server_cpu_s, r->server_wall_s);
}

static int check(const char *scenario, const char *what, double v, double limit,
		 const char *fmt)
{
	char val[32], lim[32], name[128];
	bool ok = v <= limit;

	snprintf(val, sizeof(val), fmt, v);
	snprintf(lim, sizeof(lim), fmt, limit);
	snprintf(name, sizeof(name), "%s: adaptive %s", scenario, what);
	printf("# target %-10s adaptive %-32s %10s <= %-10s %s\n", scenario,
	       what, val, lim, ok ? "PASS" : "FAIL");
	bench_json_target(name, val, lim, ok);
	return !ok;
}

static int report_rate(int k)
{
	struct row *rr = rows[k];
	int fails = 0;

	for (int m = 0; m < NMODES; m++) {
		struct row *r = &rr[m];
		char p50[16], p99[16], rate[32];
		double achieved = r->wall_s > 0 ? (double)r->reqs / r->wall_s :
						  0;

		bench_fill_latency(&r->res, r->v, r->n, bench_ns_per_tick);
		free(r->v);
		r->v = NULL;
		bench_fmt_ns(p50, sizeof(p50), r->res.p50);
		bench_fmt_ns(p99, sizeof(p99), r->res.p99);
		bench_fmt_rate(rate, sizeof(rate), achieved, "req/s");
		printf("%-10s %-9s %8" PRIu64 " %10s %10s %14s %9.1f %9.1f\n",
		       m ? "" : rate_names[k], mode_names[m], r->n, p50, p99,
		       rate, server_pct(r), pct(r->client_cpu_s, r->wall_s));
		bench_json_result(rate_names[k], mode_names[m], &r->res, NULL);
	}
	printf("# %s adaptive learnt (end of its last round): client spin "
	       "%.1f us, wakeup %.1f us; server spin %.1f us, wakeup %.1f us\n",
	       rate_names[k], (double)rr[M_ADAPTIVE].client_spin * 1e-3,
	       (double)rr[M_ADAPTIVE].client_wake * 1e-3,
	       (double)rr[M_ADAPTIVE].server_spin * 1e-3,
	       (double)rr[M_ADAPTIVE].server_wake * 1e-3);
	fails += check(rate_names[k], "RTT p50 after idle / without",
		       rr[M_FROM_NONE].res.p50 / rr[M_ADAPTIVE].res.p50, 1.1,
		       "%.2fx");
	if (k == 2) {
		fails += check(rate_names[k], "RTT p50 / always's",
			       rr[M_ADAPTIVE].res.p50 / rr[M_ALWAYS].res.p50,
			       1.2, "%.2fx");
	} else {
		fails += check(rate_names[k], "server CPU%",
			       server_pct(&rr[M_ADAPTIVE]),
			       server_pct(&rr[M_NONE]) + 5.0, "%.1f");
		fails += check(rate_names[k], "RTT p50 / fixed50's",
			       rr[M_ADAPTIVE].res.p50 / rr[M_FIXED50].res.p50,
			       1.1, "%.2fx");
	}
	return fails;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_spin [--smoke] [--strict] [--only 1|2|3]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

int main(int argc, char **argv)
{
	struct bench_opts cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	uint64_t rounds, n[NRATES], t0;
	int fails = 0;

	bench_name = "bench_spin";
	bench_die_hook = bench_child_die_hook;
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_opts_parse(&cfg, "bench_spin", NRATES, usage, argc, argv);
	rounds = cfg.smoke ? 1 : 4;
	/* Per round: a quarter of a second of requests (smoke: 20 ms). */
	for (int k = 0; k < NRATES; k++)
		n[k] = bench_opts_scaled(&cfg, rates[k] / 4, rates[k] / 50, 40);
	bench_child_signals("bench_spin");
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	cfg.two_cpus = bench_cpus_usable(CPU_CLIENT, CPU_SERVER) &&
		       bench_pin_self(CPU_CLIENT);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_CLIENT, CPU_SERVER, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);

	for (int k = 0; k < NRATES; k++)
		for (int m = 0; m < NMODES; m++)
			rows[k][m].v =
				bench_xcalloc(rounds * n[k], sizeof(uint64_t));
	for (uint64_t i = 0; i < rounds; i++)
		for (int k = 0; k < NRATES; k++) {
			if (cfg.only && cfg.only != k + 1)
				continue;
			for (int j = 0; j < NMODES; j++)
				run_row(k, i % 2 ? NMODES - 1 - j : j, n[k],
					cfg.two_cpus);
		}
	alarm(0);
	bench_cpu_usage_read(&usage1);

	printf("%-10s %-9s %8s %10s %10s %14s %9s %9s\n", "rate", "spin", "n",
	       "rtt p50", "rtt p99", "reached", "server%", "client%");
	for (int k = 0; k < NRATES; k++) {
		if (cfg.only && cfg.only != k + 1) {
			printf("%-10s SKIP (--only)\n", rate_names[k]);
			continue;
		}
		fails += report_rate(k);
	}
	printf("# rtt in ns (the client's clock), %" PRIu64
	       " rounds per row, rows in reversed order every other round; "
	       "server%% = the server process's CPU time over its wall time "
	       "(link thread included), client%% the same for this process, "
	       "which sleeps until %u us before each request is due\n",
	       rounds, POLL_BEFORE_NS / 1000);
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
