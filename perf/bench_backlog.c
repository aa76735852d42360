/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_backlog.c - what a cross-process sender's spill backlog
 * costs: the ring is full, sends queue behind it in the sender's process,
 * and its link thread ("cmesh-link") moves them into the ring as the
 * consumer frees space (whether it learns of that space from a 1 ms retry
 * timer or from the consumer is what these rows show).
 *
 * Two processes: this one (pinned to CPU 0: consumer) and one child forked
 * at start (pinned to CPU 1: producer, its link thread too), joined with
 * cmesh_node_join_socket() over a SOCK_SEQPACKET socketpair made before
 * fork (ring_size 65536, spin_ns = 1 s, the parent names the child as
 * peer_pid), 64-byte CMESH_TYPE_DEFINE_PLAIN messages child -> parent. The
 * processes step each other through counters in a MAP_SHARED anonymous
 * mapping made before fork; a waiting side sleeps on a futex (the child's
 * link thread has CPU 1 to itself while the parent drains). Each message
 * carries a sequence number: each must arrive exactly once and in order,
 * nothing may follow a drain, "closed" must follow the last (else exit 2).
 *
 * First the ring's capacity C: the child cmesh_sender_try_send()s into the
 * empty ring until -EAGAIN (the ring format says 512: a 64-byte PLAIN
 * record takes two 64-byte slots of 56 data bytes, the first holding the
 * 8-byte record header); the parent drains them. Then:
 *
 *   1 burst drain  per repetition the child sends a burst of B = 16 C
 *                  messages as fast as it can while the parent does not
 *                  read; once every send returned the parent drains all
 *                  B: B / consumer time from the first recv to the last
 *                  (median over reps), ns per message over batches of 32
 *                  (pooled), and in a note the longest batch of a burst
 *                  (the wait for the link thread). Reference "in-ring": a
 *                  burst of 3/4 C (no spill), in alternating repetitions.
 *                  Target: burst msgs/s >= 0.15x in-ring msgs/s (with a
 *                  1 ms retry timer it was 0.07x: a burst waited a whole
 *                  millisecond; now the drain is bounded by the link
 *                  thread's copy of each spilled message, ~90 ns).
 *   2 spilled send the child's ns per cmesh_sender_send() in those bursts,
 *                  over batches of 16: "to ring" = a burst's first C sends
 *                  (the ring was empty), "spilled" = the rest. A spilled
 *                  send should make no syscall (the first one kicks the
 *                  link thread): a note counts the sending thread's
 *                  read/write-class syscalls (syscr + syscw of
 *                  /proc/thread-self/io, less the cost of reading it;
 *                  futex and the like are not counted) per burst's
 *                  spilled sends. No target.
 *   3 idle backlog the child fills the ring and queues B more behind it;
 *                  the parent does not read for 300 ms, then drains: the
 *                  context switches (voluntary + nonvoluntary, from
 *                  /proc/self/task/<tid>/status) of the child's cmesh-link
 *                  thread in those 300 ms, per second. Reference "ring
 *                  full": filled by try_send, no backlog, alternating.
 *                  Target: backlog wakeups <= 10/s (median over reps).
 *
 * Clock: lfence;rdtsc (calibrated against CLOCK_MONOTONIC) when the TSC is
 * invariant, else clock_gettime. Without CPUs 0 and 1 every row is skipped
 * (the consumer spins).
 *
 * Usage: bench_backlog [--smoke] [--strict]
 * --smoke: few repetitions (about a second), for CI; the targets are shown
 * but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies the repetitions, e.g. 0.2 or 3).
 * Exit status: 0 unless a call or a check fails (2) or a step hangs (3:
 * watchdog), or --strict without --smoke and a target FAILs (1). The child
 * dies with the parent (PR_SET_PDEATHSIG) and is killed and reaped on every
 * exit path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CPU_PARENT 0
#define CPU_CHILD 1
#define RING_BYTES 65536u
#define RING_FORMAT_FIT (RING_BYTES / 128u) /* two 64-byte slots each */
#define SPIN_FOREVER_NS 1000000000LL
#define BURST_FACTOR 16u /* B = 16 C */
#define SEND_BATCH 16u	 /* 2: sends per sample */
#define DRAIN_BATCH 32u	 /* 1: messages per sample */
#define IDLE_NS 300000000L
#define WAIT_STEP_NS 10000000L	     /* a waiting side looks around */
#define WAIT_LIMIT_NS 60000000000ull /* no step takes this long */
#define DRAIN_TARGET 0.15
#define WAKE_TARGET 10.0

static CMESH_TYPE_DEFINE_PLAIN(msg_type, struct bench_msg);

/* Shared by both processes; plain fields are written before a post()
 * (release) and read after the await() (acquire) that sees it. */
struct shared {
	alignas(64) _Atomic uint32_t go;   /* parent -> child: steps */
	alignas(64) _Atomic uint32_t done; /* child -> parent: steps */
	alignas(64) _Atomic uint32_t failed;
	uint64_t sent;		/* child: messages of the last step */
	uint64_t idle_ns;	/* 3: the idle period as measured */
	uint64_t idle_switches; /* 3: link-thread switches in it */
	int64_t io_calls;	/* 2: syscalls in spilled sends, -1: n/a */
	struct bench_result to_ring, spilled; /* 2, after the bursts */
};

static struct shared *sh;
static pid_t parent_pid;
static uint32_t steps; /* go (child) or done (parent) steps seen */
static uint64_t next_seq = 1;
static cmesh_node *node;
static cmesh_sender *tx;
static cmesh_receiver *rx;
static uint64_t burst_pairs, idle_pairs; /* recorded repetitions */

/* Joins over `sock`; the parent names the child as its peer. */
static void join(int sock, pid_t peer)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	int rc;

	o.ring_size = RING_BYTES;
	o.spin_ns = SPIN_FOREVER_NS;
	o.peer_pid = peer;
	rc = cmesh_node_join_socket(sock, &msg_type, &msg_type, &o, &node, &tx,
				    &rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
}

/* ---------------------------------------------------------------------- */
/* Failure, stepping                                                      */

static void die_hook(void)
{
	if (sh)
		atomic_store_explicit(&sh->failed, 1, memory_order_relaxed);
	bench_child_die_hook();
}

static void post(_Atomic uint32_t *w)
{
	/* Pairs with the acquire load in await(). */
	atomic_fetch_add_explicit(w, 1, memory_order_release);
	/* Not FUTEX_PRIVATE: the word is shared between processes. */
	syscall(SYS_futex, (void *)w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Parent: the child has ended (not reaped: the die hook tells how). */
static bool child_gone(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	return waitid(P_PID, (id_t)bench_child_pid, &si,
		      WEXITED | WNOHANG | WNOWAIT) != 0 ||
	       si.si_pid == bench_child_pid;
}

/* Sleeps until *w reaches `want`, watching the other process. */
static void await(_Atomic uint32_t *w, uint32_t want)
{
	uint64_t limit = bench_mono_ns() + WAIT_LIMIT_NS;

	for (;;) {
		/* Pairs with the release RMW in post(). */
		uint32_t v = atomic_load_explicit(w, memory_order_acquire);
		struct timespec ts = { 0, WAIT_STEP_NS };

		if ((int32_t)(v - want) >= 0)
			return;
		if (atomic_load_explicit(&sh->failed, memory_order_relaxed))
			bench_die("the other process failed", EPIPE);
		if (bench_is_child ? getppid() != parent_pid : child_gone())
			bench_die("the other process ended", ECHILD);
		if (bench_mono_ns() > limit)
			bench_die("the other process never answered",
				  ETIMEDOUT);
		syscall(SYS_futex, (void *)w, FUTEX_WAIT, v, &ts, NULL, 0);
	}
}

/* Parent: lets the child do its next step and waits until it is done. */
static void step(void)
{
	post(&sh->go);
	await(&sh->done, ++steps);
}

/* Reads a small file into buf (NUL-terminated): its length or -1. */
static ssize_t read_text(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	return (ssize_t)n;
}

/* The sum of the numbers after key1 and key2 in file `path`, or -1. */
static int64_t proc_sum(const char *path, const char *key1, const char *key2)
{
	char buf[4096];
	const char *a, *b;

	if (read_text(path, buf, sizeof(buf)) <= 0)
		return -1;
	a = strstr(buf, key1);
	b = strstr(buf, key2);
	return a && b ? strtoll(a + strlen(key1), NULL, 10) +
				strtoll(b + strlen(key2), NULL, 10) :
			-1;
}

/* This thread's read- and write-class syscalls so far, or -1. */
static int64_t io_calls(void)
{
	return proc_sum("/proc/thread-self/io", "\nsyscr:", "\nsyscw:");
}

/* The one thread of this process named cmesh-link. */
static pid_t link_tid(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	pid_t tid = 0;
	int n = 0;

	if (!d)
		bench_die("opendir /proc/self/task", errno);
	while ((e = readdir(d)) != NULL) {
		char path[300], comm[32];

		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 e->d_name);
		if (e->d_name[0] != '.' &&
		    read_text(path, comm, sizeof(comm)) > 0 &&
		    strcmp(comm, "cmesh-link\n") == 0) {
			tid = (pid_t)atoi(e->d_name);
			n++;
		}
	}
	closedir(d);
	if (n != 1)
		bench_die("want exactly one cmesh-link thread", ESRCH);
	return tid;
}

/* Context switches of thread `tid` of this process so far. */
static uint64_t switches(pid_t tid)
{
	char path[64];
	int64_t v;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	v = proc_sum(path, "\nvoluntary_ctxt_switches:",
		     "\nnonvoluntary_ctxt_switches:");
	if (v < 0)
		bench_die("no ctxt_switches of the link thread", ENOENT);
	return (uint64_t)v;
}

/* ---------------------------------------------------------------------- */
/* Child: the producer                                                    */

struct tx_samples {
	uint64_t *ring, *spill; /* ticks per SEND_BATCH sends */
	uint64_t nring, nspill;
	int64_t io_calls, io_cost; /* io_calls -1: not counted */
};

/* try_send until -EAGAIN: how many went into the ring. */
static uint64_t child_fill(void)
{
	struct bench_msg m;
	uint64_t n = 0;
	int rc;

	memset(&m, 0x5a, sizeof(m));
	for (;; n++) {
		m.seq = next_seq;
		rc = cmesh_sender_try_send(tx, &m, NULL, 0);
		if (rc == -EAGAIN)
			return n;
		if (rc < 0)
			bench_die("cmesh_sender_try_send", rc);
		next_seq++;
	}
}

/*
 * Sends n messages; with s, times the first `cap` (to the ring) and the
 * rest (spilled) in batches of SEND_BATCH, a partial batch not recorded.
 */
static void child_burst(uint64_t n, uint64_t cap, struct tx_samples *s)
{
	uint64_t t = bench_now_ticks();
	struct bench_msg m;
	int64_t io0 = -1, io1;
	int rc;

	memset(&m, 0x5a, sizeof(m));
	for (uint64_t i = 0; i < n; i++) {
		if (s && i == cap) { /* outside the timed batches */
			io0 = io_calls();
			t = bench_now_ticks();
		}
		m.seq = next_seq++;
		rc = cmesh_sender_send(tx, &m, NULL, 0);
		if (rc < 0)
			bench_die("cmesh_sender_send", rc);
		if (s && (i + 1 - (i < cap ? 0 : cap)) % SEND_BATCH == 0) {
			uint64_t now = bench_now_ticks();

			if (i < cap)
				s->ring[s->nring++] = now - t;
			else
				s->spill[s->nspill++] = now - t;
			t = now;
		}
	}
	if (!s || n <= cap || s->io_calls < 0)
		return;
	io1 = io_calls();
	s->io_calls = io0 < 0 || io1 < 0 ? -1 :
					   s->io_calls + io1 - io0 - s->io_cost;
}

/* 3: the link thread's switches over IDLE_NS, into the shared mapping. */
static void child_idle(pid_t tid)
{
	struct timespec ts = { 0, IDLE_NS };
	uint64_t c0 = switches(tid), t0 = bench_mono_ns();

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	sh->idle_ns = bench_mono_ns() - t0;
	sh->idle_switches = switches(tid) - c0;
}

/* Follows the parent's steps. Never returns. */
static void child_main(int sock)
{
	struct tx_samples s = { .io_calls = 0 };
	uint64_t cap, b;
	pid_t tid;
	int rc;

	bench_child_enter(parent_pid);
	bench_pin_self(CPU_CHILD);
	join(sock, 0);
	tid = link_tid();
	s.io_cost = io_calls(); /* what reading the counters costs */
	s.io_cost = s.io_cost < 0 ? 0 : io_calls() - s.io_cost;

	await(&sh->go, ++steps); /* the ring's capacity */
	cap = sh->sent = child_fill();
	post(&sh->done);
	b = BURST_FACTOR * cap;
	s.ring = bench_xcalloc(burst_pairs * (b / SEND_BATCH), 8);
	s.spill = bench_xcalloc(burst_pairs * (b / SEND_BATCH), 8);
	/* 1, 2: a warm-up pair, then the recorded ones; in-ring first. */
	for (uint64_t i = 0; i < 2 * (burst_pairs + 1); i++) {
		await(&sh->go, ++steps);
		sh->sent = i % 2 ? b : cap * 3 / 4;
		child_burst(sh->sent, cap, i % 2 && i >= 2 ? &s : NULL);
		post(&sh->done);
	}
	await(&sh->go, ++steps); /* the send timings */
	bench_fill_latency(&sh->to_ring, s.ring, s.nring,
			   bench_ns_per_tick / SEND_BATCH);
	bench_fill_latency(&sh->spilled, s.spill, s.nspill,
			   bench_ns_per_tick / SEND_BATCH);
	sh->to_ring.n = s.nring * SEND_BATCH;
	sh->spilled.n = s.nspill * SEND_BATCH;
	sh->io_calls = s.io_calls;
	post(&sh->done);
	/* 3: the ring full without and with a backlog, alternating. */
	for (uint64_t i = 0; i < 2 * idle_pairs; i++) {
		await(&sh->go, ++steps);
		if (i % 2 == 0)
			sh->sent = child_fill();
		else
			child_burst(sh->sent = cap + b, cap, NULL);
		child_idle(tid);
		post(&sh->done);
	}
	await(&sh->go, ++steps); /* the end */
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	rc = cmesh_node_close(node, cmesh_deadline_after(5000000000LL));
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		bench_die("cmesh_node_close", rc);
	_exit(0);
}

/* ---------------------------------------------------------------------- */
/* Parent: the consumer                                                   */

/*
 * Receives n messages, checking their order; with samples, ticks per
 * DRAIN_BATCH appended at *ns. Returns msgs/s from the first recv to the
 * last. Nothing more may be there after them.
 */
static double drain(uint64_t n, uint64_t *samples, uint64_t *ns)
{
	uint64_t t0 = bench_now_ticks(), prev = t0, t1;
	struct bench_msg m;
	int rc;

	for (uint64_t i = 0; i < n; i++) {
		rc = cmesh_receiver_recv(rx, &m, NULL, 0);
		if (rc != 0)
			bench_die("cmesh_receiver_recv", rc < 0 ? rc : EPROTO);
		bench_check_seq(m.seq, next_seq++);
		if (samples && (i + 1) % DRAIN_BATCH == 0) {
			uint64_t t = bench_now_ticks();

			samples[(*ns)++] = t - prev;
			prev = t;
		}
	}
	t1 = bench_now_ticks();
	rc = cmesh_receiver_try_recv(rx, &m, NULL, 0);
	if (rc != -EAGAIN)
		bench_die("more messages than sent", rc < 0 ? rc : EPROTO);
	return bench_rate(n, t1 - t0);
}

struct results {
	uint64_t cap, b;
	struct bench_result in_ring, burst;
	struct bench_parts parts;   /* burst / in-ring per pair */
	double burst_ms, gap_us[3]; /* medians; longest batch: med, lo, hi */
	double wake[2][BENCH_MAX_PARTS]; /* 3: [0] ring full, [1] backlog */
	uint64_t nwake;
};

static void run_bursts(struct results *r, uint64_t pairs)
{
	uint64_t n_in, nb_in = 0, nb_b = 0, *s_in, *s_b;
	double *v = bench_xcalloc(4 * pairs, sizeof(double));
	double *rate_in = v, *rate_b = v + pairs, *ms = v + 2 * pairs;
	double *gap = v + 3 * pairs;

	bench_child_signals("the capacity step");
	step();
	r->cap = sh->sent;
	if (r->cap < 8 || r->cap > RING_BYTES / 64)
		bench_die("the ring took an unlikely number of messages",
			  EPROTO);
	r->b = BURST_FACTOR * r->cap;
	n_in = r->cap * 3 / 4;
	drain(r->cap, NULL, NULL);
	s_in = bench_xcalloc(pairs * (n_in / DRAIN_BATCH), 8);
	s_b = bench_xcalloc(pairs * (r->b / DRAIN_BATCH), 8);
	bench_child_signals("'1 burst drain'");
	for (uint64_t i = 0; i < 2 * (pairs + 1); i++) {
		bool burst = i % 2, rec = i >= 2;
		uint64_t k = i / 2 - 1, first = nb_b, big = 0;
		double rate;

		step();
		if (sh->sent != (burst ? r->b : n_in))
			bench_die("the child sent another count", EPROTO);
		rate = drain(sh->sent,
			     !rec  ? NULL :
			     burst ? s_b :
				     s_in,
			     burst ? &nb_b : &nb_in);
		if (rec && !burst)
			rate_in[k] = rate;
		if (!rec || !burst)
			continue;
		rate_b[k] = rate;
		ms[k] = (double)r->b / rate * 1e3;
		for (uint64_t j = first; j < nb_b; j++)
			big = s_b[j] > big ? s_b[j] : big;
		gap[k] = (double)big * bench_ns_per_tick / 1e3;
		bench_note_part(&r->parts, rate / rate_in[k], rate_in[k]);
	}
	step(); /* the child's send timings */
	r->in_ring.n = nb_in * DRAIN_BATCH;
	r->burst.n = nb_b * DRAIN_BATCH;
	bench_fill_latency(&r->in_ring, s_in, nb_in,
			   bench_ns_per_tick / DRAIN_BATCH);
	bench_fill_latency(&r->burst, s_b, nb_b,
			   bench_ns_per_tick / DRAIN_BATCH);
	bench_fill_rates(&r->in_ring, rate_in, pairs);
	bench_fill_rates(&r->burst, rate_b, pairs);
	r->burst_ms = bench_median(ms, pairs);
	r->gap_us[0] = bench_median(gap, pairs); /* sorts gap */
	r->gap_us[1] = gap[0];
	r->gap_us[2] = gap[pairs - 1];
	free(s_in);
	free(s_b);
	free(v);
}

static void run_idle(struct results *r, uint64_t pairs)
{
	bench_child_signals("'3 idle backlog'");
	r->nwake = pairs < BENCH_MAX_PARTS ? pairs : BENCH_MAX_PARTS;
	for (uint64_t i = 0; i < 2 * pairs; i++) {
		step();
		if (sh->sent != (i % 2 ? r->cap + r->b : r->cap))
			bench_die("the child queued another count", EPROTO);
		if (i / 2 < BENCH_MAX_PARTS)
			r->wake[i % 2][i / 2] = (double)sh->idle_switches /
						((double)sh->idle_ns * 1e-9);
		drain(sh->sent, NULL, NULL);
	}
}

static void start_child(void)
{
	int sock;
	pid_t pid = bench_fork_pair(&sock);

	if (pid == 0)
		child_main(sock);
	join(sock, pid);
}

/* The child leaves: "closed" must follow what it sent, nothing else. */
static void stop_child(void)
{
	struct bench_msg m;
	int rc;

	bench_child_signals("the end");
	post(&sh->go);
	rc = cmesh_receiver_recv_deadline(
		rx, cmesh_deadline_after(10000000000LL), &m, NULL, 0);
	if (rc != -EPIPE) /* a message: more than sent */
		bench_die("want -EPIPE at the end", rc < 0 ? rc : EPROTO);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	bench_child_reap(0);
}

/* ---------------------------------------------------------------------- */
/* Output, options, main                                                  */

static void print_row(const char *scen, const char *name,
		      const struct bench_result *x, bool rate,
		      const char *ratio, const char *tgt, const char *res)
{
	char p50[16], p99[16], p999[16], rt[32] = "-";

	bench_fmt_ns(p50, sizeof(p50), x->p50);
	bench_fmt_ns(p99, sizeof(p99), x->p99);
	bench_fmt_ns(p999, sizeof(p999), x->p999);
	if (rate)
		bench_fmt_rate(rt, sizeof(rt), x->rate, "msg/s");
	printf("%-15s %-17s %7" PRIu64 " %7s %7s %8s %14s %7s %8s  %s\n", scen,
	       name, x->n, p50, p99, p999, rt, ratio, tgt, res);
	bench_json_result(scen, name, x, rate ? "msg/s" : NULL);
	if (*res) {
		char what[96];

		snprintf(what, sizeof(what), "1 burst drain: %s / in-ring",
			 name);
		bench_json_target(what, ratio, tgt, strcmp(res, "PASS") == 0);
	}
}

/* Prints every row; returns the number of targets that FAIL. */
static int print_results(struct results *r)
{
	double ratio = r->in_ring.rate > 0 ? r->burst.rate / r->in_ring.rate :
					     0;
	bool drain_ok = ratio >= DRAIN_TARGET, wake_ok;
	char name[48], rs[16], io[32] = "n/a";
	double med[2];

	printf("%-15s %-17s %7s %7s %7s %8s %14s %7s %8s  %s\n", "scenario",
	       "row", "n", "p50 ns", "p99 ns", "p99.9 ns", "throughput",
	       "ratio", "target", "result");
	snprintf(name, sizeof(name), "in-ring %" PRIu64 " (ref)",
		 r->cap * 3 / 4);
	print_row("1 burst drain", name, &r->in_ring, true, "-", "ref", "");
	snprintf(name, sizeof(name), "burst %" PRIu64, r->b);
	snprintf(rs, sizeof(rs), "%.3fx", ratio);
	print_row("", name, &r->burst, true, rs, ">=0.15x",
		  drain_ok ? "PASS" : "FAIL");
	print_row("2 spilled send", "to ring", &sh->to_ring, false, "-", "info",
		  "");
	print_row("", "spilled", &sh->spilled, false, "-", "info", "");
	printf("%-15s %-17s %7s %13s %17s %8s  %s\n", "scenario", "row", "reps",
	       "wakeups/s p50", "min..max", "target", "result");
	snprintf(name, sizeof(name), "backlog %" PRIu64, r->b);
	for (int k = 0; k < 2; k++) {
		double *w = r->wake[k];

		med[k] = bench_median(w, r->nwake); /* sorts w */
		snprintf(rs, sizeof(rs), "%.1f..%.1f", w[0], w[r->nwake - 1]);
		printf("%-15s %-17s %7" PRIu64 " %13.1f %17s %8s  %s\n",
		       k ? "" : "3 idle backlog", k ? name : "ring full (ref)",
		       r->nwake, med[k], rs, k ? "<=10/s" : "ref",
		       k ? (med[1] <= WAKE_TARGET ? "PASS" : "FAIL") : "");
		bench_json_rate(k ? "" : "3 idle backlog",
				k ? name : "ring full (ref)", r->nwake, med[k],
				"wakeups/s");
	}
	wake_ok = med[1] <= WAKE_TARGET;
	snprintf(rs, sizeof(rs), "%.1f/s", med[1]);
	bench_json_target("3 idle backlog: link-thread wakeups/s p50", rs,
			  "<=10/s", wake_ok);
	if (sh->io_calls >= 0)
		snprintf(io, sizeof(io), "%.1f",
			 (double)sh->io_calls / (double)burst_pairs);
	printf("# ring: %" PRIu64 " messages of 64 B went into the %u-byte "
	       "ring (try_send until -EAGAIN; the ring format says %u); B = "
	       "%u x %" PRIu64 " = %" PRIu64 "; in-ring: 3/4 of the ring\n",
	       r->cap, RING_BYTES, RING_FORMAT_FIT, BURST_FACTOR, r->cap, r->b);
	printf("# 1: %u reps of each, alternating, after one unrecorded of "
	       "each; throughput: msgs / consumer time from the first recv to "
	       "the last, median over reps (in-ring %.3g..%.3g, burst "
	       "%.3g..%.3g msg/s); ns per message over batches of %u at the "
	       "consumer; per-pair ratio median %.3fx (%.3f..%.3fx); a burst "
	       "drains in %.2f ms (median), its longest batch takes %.0f us "
	       "(median; %.0f..%.0f us)\n",
	       r->parts.n, r->in_ring.rate_lo, r->in_ring.rate_hi,
	       r->burst.rate_lo, r->burst.rate_hi, DRAIN_BATCH,
	       bench_parts_median(&r->parts), r->parts.lo, r->parts.hi,
	       r->burst_ms, r->gap_us[0], r->gap_us[1], r->gap_us[2]);
	printf("# 2: ns per cmesh_sender_send() in the producer over batches "
	       "of %u in the recorded bursts of 1: to ring = a burst's first "
	       "%" PRIu64 " sends, spilled = its other %" PRIu64 "; read/"
	       "write-class syscalls of the sending thread in a burst's "
	       "spilled sends: %s (/proc/thread-self/io; the first spill's "
	       "kick of the link thread is one)\n",
	       SEND_BATCH, r->cap, r->b - r->cap, io);
	printf("# 3: context switches per second of the child's cmesh-link "
	       "thread in %.0f ms without a read, alternating reps\n",
	       (double)IDLE_NS / 1e6);
	return !drain_ok + !wake_ok;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_backlog [--smoke] [--strict]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

/* CMESH_BENCH_SCALE times n repetitions, at least 1. */
static uint64_t scaled(uint64_t n)
{
	double v = bench_scale_env("bench_backlog");

	return v * (double)n < 1.0 ? 1 : (uint64_t)(v * (double)n);
}

int main(int argc, char **argv)
{
	bool smoke, strict = false, two_cpus;
	struct bench_cpu_usage usage0, usage1;
	struct results res;
	uint64_t t0;
	int fails = 0;

	bench_name = "bench_backlog";
	bench_die_hook = die_hook;
	bench_check_dies = true;
	setvbuf(stdout, NULL, _IOLBF, 0);
	smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	for (int i = 1; i < argc; i++)
		if (!bench_common_arg(argv[i], &smoke, &strict, usage))
			bench_bad_arg(argv[i], usage);
	burst_pairs = scaled(smoke ? 2 : 30);
	idle_pairs = scaled(smoke ? 1 : 3);
	parent_pid = getpid();
	memset(&res, 0, sizeof(res));

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		sh = NULL;
		bench_die("mmap", errno);
	}
	memset(sh, 0, sizeof(*sh));
	two_cpus = bench_cpus_usable(CPU_PARENT, CPU_CHILD) &&
		   bench_pin_self(CPU_PARENT);
	bench_clock_setup(smoke);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_PARENT, CPU_CHILD, two_cpus, smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	if (two_cpus) {
		bench_child_signals("setup");
		alarm(smoke ? 30u : 60u + (unsigned int)burst_pairs * 4u);
		start_child();
		run_bursts(&res, burst_pairs);
		run_idle(&res, idle_pairs);
		stop_child();
		alarm(0);
	}
	bench_cpu_usage_read(&usage1);
	if (two_cpus)
		fails = print_results(&res);
	else
		printf("all rows SKIP (CPUs 0 and 1 not both usable: the "
		       "consumer spins)\n");
	bench_print_wall(smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, smoke, fails);
	munmap(sh, sizeof(*sh));
	return strict && !smoke && fails ? 1 : 0;
}
