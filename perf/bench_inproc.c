/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_inproc.c - in-process channel latency and throughput, each
 * cmesh figure beside the raw mechanism measured in the same run on the
 * same two pinned threads (CPU 0: pinger/producer, CPU 1: ponger/consumer).
 *
 *   1 rtt-spin   64-byte ping-pong, spinning receivers.
 *                raw: one 64-byte line per direction, the other side spins
 *                on its sequence word (acquire) and copies the 64 bytes.
 *                cmesh: two channels, spin_ns = 1 s (never sleeps).
 *                Target: cmesh p50 <= 1.5x raw p50.
 *                Info row "ck": the same ping-pong over two ck SPSC rings.
 *   2 rtt-sleep  the same with sleeping receivers.
 *                raw: FUTEX_WAIT/FUTEX_WAKE ping-pong on two words.
 *                cmesh: spin_ns = CMESH_SPIN_NONE.
 *                Target: cmesh p50 <= 1.3x raw p50.
 *   3 stream     one-way stream of 64-byte messages.
 *                raw: Concurrency Kit SPSC ring (CK_RING_PROTOTYPE) of 512
 *                slots, the producer spins when full.
 *                cmesh: ring_size 131072 bytes (512 slots of 256 bytes),
 *                cmesh_sender_send / cmesh_receiver_recv, spinning receiver.
 *                Target: cmesh msgs/s >= 0.5x raw msgs/s.
 *                cmesh send never blocks: past a full ring it appends to
 *                the channel's overflow list (past CMESH_MAX_BACKLOG,
 *                -ENOBUFS, the producer yields until there is room). Info row "cm-win": cmesh
 *                with the producer kept at most 512 messages ahead (a
 *                progress counter the consumer publishes every 64), so
 *                the ring never overflows.
 *
 *   4 ipi        interrupts to a busy thread of the process (a VMM's vCPU):
 *                a thread spins on CPU 1 while two threads on CPU 0
 *                ping-pong with sleeping receivers (raw futex, cmesh
 *                spin_ns = CMESH_SPIN_NONE). Each round trip is two
 *                sleep/wake cycles, woken on their own CPU, so none needs
 *                an interrupt: function-call interrupts counted on CPU 1
 *                (/proc/interrupts, CAL) are what sleeping and waking
 *                cost the other thread. Reported per 10,000 cycles.
 *                Target: cmesh <= raw + 100 (1% of the cycles).
 *
 *   5 path       the code path alone: one thread on CPU 0 sends a 64-byte
 *                message and receives it itself, so nothing crosses cores
 *                and the host's placement of the vCPUs does not matter.
 *                ns per message (send + receive), timed per batch of
 *                PATH_BATCH; rows alternate in rounds. Info rows only:
 *                raw: a ck SPSC ring (enqueue + dequeue); cmesh: an
 *                in-process channel; lane: a channel between two nodes
 *                joined in this process over a socketpair, i.e. the
 *                cross-process tier's code (claim, record, publish, wake
 *                check; the reader's validation and head) on a ring in
 *                shared memory. A change to either tier's fast path shows
 *                here first, without the noise of a second core. It is
 *                a loopback: the lane's reader reads the record its own
 *                thread has just written, through a second mapping of the
 *                ring at another address (in two processes the line comes
 *                from the other core instead, which rows 1-3 price).
 *
 * Latency is taken with lfence;rdtsc (calibrated against CLOCK_MONOTONIC)
 * when the TSC is invariant, else clock_gettime; the same for raw and cmesh.
 * The header shows the clock's step (AMD TSCs advance in steps of ~10 ns).
 * Rows alternate in rounds (rtt) or repetitions (stream) so that drift,
 * e.g. the host moving the vCPUs, hits all of them alike. Compare rows of
 * one run only: the base cross-core latency of a VM changes between runs.
 *
 * Usage: bench_inproc [--smoke] [--strict] [--only N] [--spin-iters N]
 *                     [--sleep-iters N] [--stream-msgs N] [--stream-reps N]
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_SPIN_ITERS,
 * CMESH_BENCH_SLEEP_ITERS, CMESH_BENCH_STREAM_MSGS, CMESH_BENCH_STREAM_REPS,
 * CMESH_BENCH_CLOCK=tsc|mono. Flags win over the environment.
 * Exit status: 0 unless a call fails, or --strict and a target FAILs (1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include <ck_pr.h>
#include <ck_ring.h>

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CPU_PING 0
#define CPU_PONG 1
#define STREAM_SLOTS 512u /* messages the rings hold */
/*
 * cmesh's ring for the stream: a 64-byte message takes a slot of two
 * lines, each stored alone in a 128-byte pair (src/queue.c): 256 bytes.
 */
#define STREAM_RING_BYTES (STREAM_SLOTS * 256u)
#define STREAM_BATCH 1024u /* messages per stream latency sample */
#define SPIN_FOREVER_NS 1000000000LL
#define RTT_ROUNDS 10u /* rtt rows alternate in this many rounds */

/* ---------------------------------------------------------------------- */
/* Message and raw mechanisms                                             */

static CMESH_TYPE_DEFINE_PLAIN(bench_msg_type, struct bench_msg);

CK_RING_PROTOTYPE(bmsg, bench_msg)

/*
 * Raw futex line: 32-bit futex word (low half of seq) + the message's bytes
 * 4..63. Writer: copy, store the word (release), FUTEX_WAKE. Reader: sleep
 * in FUTEX_WAIT until the word holds the expected seq, then copy.
 */
struct futex_line {
	alignas(128) _Atomic uint32_t word;
	uint8_t body[60];
};

static struct bench_spin_line spin_ping, spin_pong;
static struct futex_line futex_ping, futex_pong;

static alignas(128) struct ck_ring ck_stream_ring;
static alignas(128) struct bench_msg ck_stream_buf[STREAM_SLOTS];

/* Informational ping-pong over two ck SPSC rings of the same size. */
static alignas(128) struct ck_ring ck_ping_ring, ck_pong_ring;
static alignas(128) struct bench_msg ck_ping_buf[STREAM_SLOTS];
static alignas(128) struct bench_msg ck_pong_buf[STREAM_SLOTS];

/*
 * Windowed cmesh stream (informational): messages received so far, stored
 * by the consumer every WIN_PUBLISH messages (release), read by the
 * producer when it reaches its cached limit (acquire). Keeps at most
 * STREAM_SLOTS messages in flight so the cmesh ring never overflows.
 */
#define WIN_PUBLISH 64u
static struct {
	alignas(128) _Atomic uint64_t v; /* 128 bytes: alone on its lines */
} win_consumed;

/* ---------------------------------------------------------------------- */
/* Watchdog                                                               */

static const char *watchdog_what = "setup";

static void on_alarm(int sig)
{
	char msg[160];
	int len;

	(void)sig;
	len = snprintf(msg, sizeof(msg),
		       "bench_inproc: watchdog: scenario '%s' hung, aborting\n",
		       watchdog_what);
	if (len > 0 && write(STDERR_FILENO, msg, (size_t)len) < 0)
		_exit(3);
	_exit(3);
}

static void watchdog(const char *what, unsigned int seconds)
{
	watchdog_what = what;
	alarm(seconds);
}

/* ---------------------------------------------------------------------- */
/* Two pinned threads: this one on CPU_PING, a helper on CPU_PONG.         */

static pthread_barrier_t pair_barrier;
static bench_side_fn *pair_b;
static void *pair_arg;
static bool pair_quit;
static bool pong_pinned; /* written before the helper's first barrier */

static void *pong_thread(void *unused)
{
	(void)unused;
	pong_pinned = bench_pin_self(CPU_PONG);
	for (;;) {
		pthread_barrier_wait(&pair_barrier);
		if (pair_quit)
			break;
		pair_b(pair_arg);
		pthread_barrier_wait(&pair_barrier);
	}
	return NULL;
}

/* Runs a() here and b() on the helper, starting together. */
static void run_pair(bench_side_fn *a, bench_side_fn *b, void *arg)
{
	pair_b = b;
	pair_arg = arg;
	pthread_barrier_wait(&pair_barrier); /* publishes pair_* */
	a(arg);
	pthread_barrier_wait(&pair_barrier);
}

/* ---------------------------------------------------------------------- */
/* Round-trip scenarios                                                   */

struct rtt_ctx {
	uint64_t base;	   /* first seq of this job */
	uint64_t warm;	   /* unrecorded iterations */
	uint64_t n;	   /* recorded iterations */
	uint64_t *samples; /* n ticks are written here */
	uint64_t elapsed;  /* ticks spent in recorded iterations */
	cmesh_sender *ping_tx, *pong_tx;
	cmesh_receiver *ping_rx, *pong_rx;
};

static inline void ck_put(struct ck_ring *ring, struct bench_msg *buf,
			  struct bench_msg *m)
{
	while (!ck_ring_enqueue_spsc_bmsg(ring, buf, m))
		ck_pr_stall();
}

static inline void ck_get(struct ck_ring *ring, struct bench_msg *buf,
			  struct bench_msg *out)
{
	while (!ck_ring_dequeue_spsc_bmsg(ring, buf, out))
		ck_pr_stall();
}

static long futex(_Atomic uint32_t *word, int op, uint32_t val)
{
	return syscall(SYS_futex, (uint32_t *)word, op, val, NULL, NULL, 0);
}

static inline void futex_put(struct futex_line *l, const struct bench_msg *m)
{
	memcpy(l->body, (const uint8_t *)m + 4, sizeof(l->body));
	/* Pairs with the acquire load in futex_get(). */
	atomic_store_explicit(&l->word, (uint32_t)m->seq, memory_order_release);
	futex(&l->word, FUTEX_WAKE_PRIVATE, 1);
}

static inline void futex_get(struct futex_line *l, uint64_t seq,
			     struct bench_msg *out)
{
	uint32_t v;

	/* Pairs with the release store in futex_put(). */
	while ((v = atomic_load_explicit(&l->word, memory_order_acquire)) !=
	       (uint32_t)seq)
		futex(&l->word, FUTEX_WAIT_PRIVATE, v);
	memcpy((uint8_t *)out + 4, l->body, sizeof(l->body));
	out->seq = seq;
}

static inline void cm_send(cmesh_sender *tx, const struct bench_msg *m)
{
	int rc;

	/*
	 * The stream's unbounded row can run its consumer's backlog full
	 * (CMESH_MAX_BACKLOG) on a busy host: the producer then waits for
	 * room, as a real one would, instead of ending the run.
	 */
	while ((rc = cmesh_sender_send(tx, m, NULL, 0)) == -ENOBUFS)
		sched_yield();
	if (rc < 0)
		bench_die("cmesh_sender_send", rc);
}

static inline void cm_recv(cmesh_receiver *rx, struct bench_msg *out)
{
	int rc = cmesh_receiver_recv(rx, out, NULL, 0);

	if (rc != 0)
		bench_die("cmesh_receiver_recv", rc < 0 ? rc : -EPROTO);
}

BENCH_RTT_PING(spin_ping_side, struct rtt_ctx, bench_spin_put(&spin_ping, &m),
	       bench_spin_get(&spin_pong, seq, &r))
BENCH_RTT_PONG(spin_pong_side, struct rtt_ctx,
	       bench_spin_get(&spin_ping, seq, &r),
	       bench_spin_put(&spin_pong, &r))
BENCH_RTT_PING(ck_ping_side, struct rtt_ctx,
	       ck_put(&ck_ping_ring, ck_ping_buf, &m),
	       ck_get(&ck_pong_ring, ck_pong_buf, &r))
BENCH_RTT_PONG(ck_pong_side, struct rtt_ctx,
	       ck_get(&ck_ping_ring, ck_ping_buf, &r),
	       ck_put(&ck_pong_ring, ck_pong_buf, &r))
BENCH_RTT_PING(futex_ping_side, struct rtt_ctx, futex_put(&futex_ping, &m),
	       futex_get(&futex_pong, seq, &r))
BENCH_RTT_PONG(futex_pong_side, struct rtt_ctx, futex_get(&futex_ping, seq, &r),
	       futex_put(&futex_pong, &r))
BENCH_RTT_PING(cmesh_ping_side, struct rtt_ctx, cm_send(c->ping_tx, &m),
	       cm_recv(c->pong_rx, &r))
BENCH_RTT_PONG(cmesh_pong_side, struct rtt_ctx, cm_recv(c->ping_rx, &r),
	       cm_send(c->pong_tx, &r))

/* ---------------------------------------------------------------------- */
/* Stream scenario                                                        */

struct stream_ctx {
	uint64_t base;	   /* first seq of this job */
	uint64_t n;	   /* messages */
	uint64_t *batches; /* n / STREAM_BATCH ticks, NULL: don't record */
	uint64_t rx_ticks; /* consumer: first recv call to last message */
	uint64_t tx_ticks; /* producer: first send to last send returned */
	cmesh_sender *tx;
	cmesh_receiver *rx;
};

static void ck_producer(void *arg)
{
	struct stream_ctx *c = arg;
	struct bench_msg m;
	uint64_t t0 = bench_now_ticks();

	memset(&m, 0x5a, sizeof(m));
	for (uint64_t i = 0; i < c->n; i++) {
		m.seq = c->base + i;
		while (!ck_ring_enqueue_spsc_bmsg(&ck_stream_ring,
						  ck_stream_buf, &m))
			ck_pr_stall();
	}
	c->tx_ticks = bench_now_ticks() - t0;
}

static void cmesh_producer(void *arg)
{
	struct stream_ctx *c = arg;
	struct bench_msg m;
	uint64_t t0 = bench_now_ticks();

	memset(&m, 0x5a, sizeof(m));
	for (uint64_t i = 0; i < c->n; i++) {
		m.seq = c->base + i;
		cm_send(c->tx, &m);
	}
	c->tx_ticks = bench_now_ticks() - t0;
}

static void cmesh_win_producer(void *arg)
{
	struct stream_ctx *c = arg;
	struct bench_msg m;
	uint64_t t0 = bench_now_ticks(), limit;

	/* Pairs with the consumer's release store in cmesh_win_consumer. */
	limit = atomic_load_explicit(&win_consumed.v, memory_order_acquire) +
		STREAM_SLOTS;
	memset(&m, 0x5a, sizeof(m));
	for (uint64_t i = 0; i < c->n; i++) {
		m.seq = c->base + i;
		while (m.seq >= limit) {
			ck_pr_stall();
			limit = atomic_load_explicit(&win_consumed.v,
						     memory_order_acquire) +
				STREAM_SLOTS;
		}
		cm_send(c->tx, &m);
	}
	c->tx_ticks = bench_now_ticks() - t0;
}

#define STREAM_CONSUMER(name, RECV, AFTER)                                     \
	static void name(void *arg)                                            \
	{                                                                      \
		struct stream_ctx *c = arg;                                    \
		struct bench_msg r;                                            \
		uint64_t t0 = bench_now_ticks(), prev = t0, k = 0;             \
                                                                               \
		for (uint64_t i = 0; i < c->n; i++) {                          \
			RECV;                                                  \
			bench_check_seq(r.seq, c->base + i);                   \
			AFTER;                                                 \
			if (c->batches && (i + 1) % STREAM_BATCH == 0) {       \
				uint64_t t = bench_now_ticks();                \
                                                                               \
				c->batches[k++] = t - prev;                    \
				prev = t;                                      \
			}                                                      \
		}                                                              \
		c->rx_ticks = bench_now_ticks() - t0;                          \
	}

STREAM_CONSUMER(ck_consumer,
		while (!ck_ring_dequeue_spsc_bmsg(&ck_stream_ring,
						  ck_stream_buf, &r))
			ck_pr_stall(),
		(void)0)
STREAM_CONSUMER(cmesh_consumer, cm_recv(c->rx, &r), (void)0)
/* Publishes progress; pairs with the acquire loads in cmesh_win_producer. */
STREAM_CONSUMER(cmesh_win_consumer, cm_recv(c->rx, &r),
		if ((i + 1) % WIN_PUBLISH == 0 || i + 1 == c->n)
			atomic_store_explicit(&win_consumed.v, c->base + i + 1,
					      memory_order_release))

/* ---------------------------------------------------------------------- */
/* Results                                                                */

#define IMPL_RAW 0
#define IMPL_CMESH 1
#define IMPL_INFO 2
#define NIMPL 3

struct impl {
	const char *name; /* NULL: no such row */
	/* CPU_PING side (pinger/producer), CPU_PONG side */
	bench_side_fn *a, *b;
	struct bench_result res;
};

struct scenario {
	const char *name;
	const char *unit;   /* "rt/s" or "msg/s" */
	bool higher_better; /* compare rate (stream) or p50 (rtt) */
	double target;
	bool info_first; /* print the info row before cmesh */
	struct impl impl[NIMPL];
	bool skipped;
	const char *skip_why;
	struct bench_parts parts; /* spread over rounds / repetitions */
};

/* Row `k` against the raw row: rate ratio (stream) or p50 ratio (rtt). */
static double ratio_of(const struct scenario *s, int k)
{
	return bench_ratio(&s->impl[IMPL_RAW].res, &s->impl[k].res,
			   s->higher_better);
}

static bool passed(const struct scenario *s)
{
	double r = ratio_of(s, IMPL_CMESH);

	return s->higher_better ? r >= s->target : r <= s->target;
}

static void print_row(const struct scenario *s, int k, bool first)
{
	const struct bench_result *r = &s->impl[k].res;
	char p50[16], p99[16], p999[16], rate[32], ratio[16] = "", tgt[16] = "";
	const char *res = "";

	bench_fmt_ns(p50, sizeof(p50), r->p50);
	bench_fmt_ns(p99, sizeof(p99), r->p99);
	bench_fmt_ns(p999, sizeof(p999), r->p999);
	bench_fmt_rate(rate, sizeof(rate), r->rate, s->unit);
	if (k != IMPL_RAW)
		snprintf(ratio, sizeof(ratio), "%.2fx", ratio_of(s, k));
	if (k == IMPL_CMESH) {
		snprintf(tgt, sizeof(tgt), "%s%.1fx",
			 s->higher_better ? ">=" : "<=", s->target);
		res = passed(s) ? "PASS" : "FAIL";
	} else if (k == IMPL_INFO) {
		snprintf(tgt, sizeof(tgt), "info");
	}
	printf("%-16s %-6s %9" PRIu64 " %9s %9s %9s %16s %7s %8s  %s\n",
	       first ? s->name : "", s->impl[k].name, r->n, p50, p99, p999,
	       rate, ratio, tgt, res);
	bench_json_result(s->name, s->impl[k].name, r, s->unit);
	if (k == IMPL_CMESH) {
		char what[64];

		snprintf(what, sizeof(what), "%s: cmesh / raw", s->name);
		bench_json_target(what, ratio, tgt, passed(s));
	}
}

/* ---------------------------------------------------------------------- */
/* Drivers                                                                */

struct config {
	bool smoke, strict;
	int only; /* 0: all, else scenario number */
	uint64_t spin_iters, sleep_iters, stream_msgs, stream_reps;
	bool two_cpus;
};

static void new_channel(int64_t spin_ns, uint32_t ring_size, cmesh_sender **tx,
			cmesh_receiver **rx)
{
	cmesh_channel_opts opts = CMESH_CHANNEL_OPTS_INIT;
	int rc;

	opts.spin_ns = spin_ns;
	opts.ring_size = ring_size;
	rc = cmesh_channel_new(&bench_msg_type, &opts, tx, rx);
	if (rc < 0)
		bench_die("cmesh_channel_new", rc);
}

/*
 * Ping-pong for every row of `s`, in `rounds` rounds that alternate the
 * rows; each round runs `warm` unrecorded iterations, then iters/rounds
 * recorded ones. cmesh channels use `spin_ns`.
 */
static void run_rtt(struct scenario *s, uint64_t iters, uint64_t warm,
		    int64_t spin_ns)
{
	const unsigned int rounds = iters >= RTT_ROUNDS * 10 ? RTT_ROUNDS : 1;
	uint64_t per = iters / rounds;
	uint64_t *v[NIMPL] = { NULL, NULL, NULL };
	struct rtt_ctx ctx[NIMPL];

	memset(ctx, 0, sizeof(ctx));
	ck_ring_init(&ck_ping_ring, STREAM_SLOTS);
	ck_ring_init(&ck_pong_ring, STREAM_SLOTS);
	for (int k = 0; k < NIMPL; k++) {
		ctx[k].base = 1;
		ctx[k].warm = warm;
		ctx[k].n = per;
		if (s->impl[k].name)
			v[k] = bench_xcalloc(per * rounds, sizeof(uint64_t));
	}
	new_channel(spin_ns, 0, &ctx[IMPL_CMESH].ping_tx,
		    &ctx[IMPL_CMESH].ping_rx);
	new_channel(spin_ns, 0, &ctx[IMPL_CMESH].pong_tx,
		    &ctx[IMPL_CMESH].pong_rx);
	for (unsigned int i = 0; i < rounds; i++) {
		for (int k = 0; k < NIMPL; k++) {
			if (!s->impl[k].name)
				continue;
			ctx[k].samples = v[k] + (uint64_t)i * per;
			run_pair(s->impl[k].a, s->impl[k].b, &ctx[k]);
			ctx[k].base += warm + per;
		}
	}
	/* Per-round p50s (sorting a round's slice keeps the pooled set). */
	for (unsigned int i = 0; i < rounds; i++) {
		uint64_t *raw = v[IMPL_RAW] + (uint64_t)i * per;
		uint64_t *cm = v[IMPL_CMESH] + (uint64_t)i * per;

		bench_note_round(&s->parts, raw, cm, per);
	}
	cmesh_sender_free(ctx[IMPL_CMESH].ping_tx);
	cmesh_sender_free(ctx[IMPL_CMESH].pong_tx);
	cmesh_receiver_free(ctx[IMPL_CMESH].ping_rx);
	cmesh_receiver_free(ctx[IMPL_CMESH].pong_rx);

	for (int k = 0; k < NIMPL; k++) {
		struct bench_result *r = &s->impl[k].res;

		if (!s->impl[k].name)
			continue;
		bench_fill_rtt(r, v[k], per * rounds, ctx[k].elapsed);
		free(v[k]);
	}
}

static void stream_job(const struct impl *im, struct stream_ctx *c, uint64_t n,
		       uint64_t *batches)
{
	c->n = n;
	c->batches = batches;
	run_pair(im->a, im->b, c);
	c->base += n;
}

/*
 * One-way stream for every row of `s`: a warm-up of n/10 messages, then
 * `reps` repetitions of n messages, the rows alternating.
 */
static void run_stream(struct scenario *s, uint64_t n, uint64_t reps)
{
	uint64_t nb = n / STREAM_BATCH;
	uint64_t warm = n / 10 > 10000 ? n / 10 : 10000;
	uint64_t *b[NIMPL] = { NULL, NULL, NULL };
	double *rate[NIMPL] = { NULL, NULL, NULL };
	double tx[NIMPL] = { 0, 0, 0 };
	struct stream_ctx ctx[NIMPL];

	memset(ctx, 0, sizeof(ctx));
	ck_ring_init(&ck_stream_ring, STREAM_SLOTS);
	atomic_store_explicit(&win_consumed.v, 0, memory_order_relaxed);
	for (int k = 0; k < NIMPL; k++) {
		if (!s->impl[k].name)
			continue;
		b[k] = bench_xcalloc(nb * reps, sizeof(uint64_t));
		rate[k] = bench_xcalloc(reps, sizeof(double));
		if (k != IMPL_RAW)
			new_channel(SPIN_FOREVER_NS, STREAM_RING_BYTES,
				    &ctx[k].tx, &ctx[k].rx);
	}
	for (int k = 0; k < NIMPL; k++)
		if (s->impl[k].name)
			stream_job(&s->impl[k], &ctx[k], warm, NULL);
	for (uint64_t i = 0; i < reps; i++) {
		for (int k = 0; k < NIMPL; k++) {
			struct stream_ctx *c = &ctx[k];

			if (!s->impl[k].name)
				continue;
			stream_job(&s->impl[k], c, n, b[k] + i * nb);
			rate[k][i] = bench_rate(n, c->rx_ticks);
			tx[k] += (double)c->tx_ticks / (double)c->rx_ticks;
		}
		bench_note_part(&s->parts,
				rate[IMPL_CMESH][i] / rate[IMPL_RAW][i],
				rate[IMPL_RAW][i]);
	}
	for (int k = 0; k < NIMPL; k++) {
		struct bench_result *r = &s->impl[k].res;
		double *rt = rate[k];

		if (!s->impl[k].name)
			continue;
		cmesh_sender_free(ctx[k].tx);
		cmesh_receiver_free(ctx[k].rx);
		r->n = n * reps;
		bench_fill_latency(r, b[k], nb * reps,
				   bench_ns_per_tick / STREAM_BATCH);
		bench_fill_rates(r, rt, reps);
		r->tx_share = tx[k] / (double)reps;
		free(b[k]);
		free(rt);
	}
}

/* ---------------------------------------------------------------------- */
/* Header, options, main                                                  */

static void print_header(const struct config *cfg)
{
#ifdef __OPTIMIZE__
	const char *optimize = "1";
#else
	const char *optimize = "0";
#endif
	char cflags[512], flags[600];

	bench_cflags(cflags, sizeof(cflags), BENCH_CFLAGS_OR("unknown"));
	snprintf(flags, sizeof(flags), "__OPTIMIZE__=%s CMESH_BENCH_CFLAGS=%s",
		 optimize, cflags);
	bench_print_header(flags, "cpus", CPU_PING, CPU_PONG, cfg->two_cpus,
			   cfg->smoke);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_inproc [--smoke] [--strict] [--only 1|2|3|4|5]\n"
		"                    [--spin-iters N] [--sleep-iters N]\n"
		"                    [--stream-msgs N] [--stream-reps N]\n"
		"env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_SPIN_ITERS "
		"CMESH_BENCH_SLEEP_ITERS\n"
		"     CMESH_BENCH_STREAM_MSGS CMESH_BENCH_STREAM_REPS "
		"CMESH_BENCH_CLOCK=tsc|mono\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	uint64_t *given[4] = { NULL, NULL, NULL, NULL };
	uint64_t vals[4] = { 0, 0, 0, 0 };

	cfg->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *names[4] = { "--spin-iters", "--sleep-iters",
					 "--stream-msgs", "--stream-reps" };
		bool matched = false;

		if (bench_common_arg(a, &cfg->smoke, &cfg->strict, usage))
			continue;
		if (strcmp(a, "--only") == 0 && i + 1 < argc) {
			cfg->only = (int)bench_parse_count("--only", argv[++i]);
			if (cfg->only > 5) {
				usage(stderr);
				exit(2);
			}
			continue;
		}
		for (int k = 0; k < 4; k++) {
			if (strcmp(a, names[k]) == 0 && i + 1 < argc) {
				vals[k] =
					bench_parse_count(names[k], argv[++i]);
				given[k] = &vals[k];
				matched = true;
			}
		}
		if (!matched) {
			fprintf(stderr, "bench_inproc: unknown argument '%s'\n",
				a);
			usage(stderr);
			exit(2);
		}
	}
	if (cfg->smoke) {
		cfg->spin_iters = 2000;
		cfg->sleep_iters = 200;
		cfg->stream_msgs = 100000;
		cfg->stream_reps = 1;
	} else {
		cfg->spin_iters = 1000000;
		cfg->sleep_iters = 20000;
		cfg->stream_msgs = 5000000;
		cfg->stream_reps = 5;
	}
	bench_env_count(&cfg->spin_iters, "CMESH_BENCH_SPIN_ITERS");
	bench_env_count(&cfg->sleep_iters, "CMESH_BENCH_SLEEP_ITERS");
	bench_env_count(&cfg->stream_msgs, "CMESH_BENCH_STREAM_MSGS");
	bench_env_count(&cfg->stream_reps, "CMESH_BENCH_STREAM_REPS");
	if (given[0])
		cfg->spin_iters = vals[0];
	if (given[1])
		cfg->sleep_iters = vals[1];
	if (given[2])
		cfg->stream_msgs = vals[2];
	if (given[3])
		cfg->stream_reps = vals[3];
	if (cfg->stream_msgs < STREAM_BATCH)
		cfg->stream_msgs = STREAM_BATCH;
}

static void nop_side(void *arg)
{
	(void)arg;
}

/* ---------------------------------------------------------------------- */
/* IPI scenario                                                           */

#define IPI_SLACK 100.0 /* per 10,000 sleep/wake cycles */

struct ipi_row {
	const char *name;
	bench_side_fn *a, *b;
	uint64_t cycles, cal;
};

static atomic_bool vcpu_stop, vcpu_running;

/* The busy thread on CPU_PONG: what a VMM's vCPU looks like to the host. */
static void *vcpu_thread(void *unused)
{
	(void)unused;
	bench_pin_self(CPU_PONG);
	atomic_store(&vcpu_running, true);
	while (!atomic_load_explicit(&vcpu_stop, memory_order_relaxed))
		ck_pr_stall();
	return NULL;
}

struct side_job {
	bench_side_fn *fn;
	void *arg;
};

static void *ping_cpu_thread(void *arg)
{
	struct side_job *j = arg;

	bench_pin_self(CPU_PING);
	j->fn(j->arg);
	return NULL;
}

/* One row: a() here, b() on a second thread, both on CPU_PING. */
static void run_ipi_row(struct ipi_row *row, uint64_t iters)
{
	struct rtt_ctx c = { .base = 1, .n = iters };
	struct side_job job = { row->b, &c };
	pthread_t vcpu, pong;
	uint64_t cal;
	int err;

	c.samples = bench_xcalloc(iters, sizeof(uint64_t));
	memset(&futex_ping, 0, sizeof(futex_ping));
	memset(&futex_pong, 0, sizeof(futex_pong));
	new_channel(CMESH_SPIN_NONE, 0, &c.ping_tx, &c.ping_rx);
	new_channel(CMESH_SPIN_NONE, 0, &c.pong_tx, &c.pong_rx);
	atomic_store(&vcpu_stop, false);
	atomic_store(&vcpu_running, false);
	err = pthread_create(&vcpu, NULL, vcpu_thread, NULL);
	if (err)
		bench_die("pthread_create", err);
	while (!atomic_load(&vcpu_running))
		ck_pr_stall();
	cal = bench_cal_irqs(CPU_PONG);
	err = pthread_create(&pong, NULL, ping_cpu_thread, &job);
	if (err)
		bench_die("pthread_create", err);
	row->a(&c);
	pthread_join(pong, NULL);
	row->cal = bench_cal_irqs(CPU_PONG) - cal;
	row->cycles = 2 * iters;
	atomic_store(&vcpu_stop, true);
	pthread_join(vcpu, NULL);
	cmesh_sender_free(c.ping_tx);
	cmesh_sender_free(c.pong_tx);
	cmesh_receiver_free(c.ping_rx);
	cmesh_receiver_free(c.pong_rx);
	free(c.samples);
}

static double ipis_per_10k(const struct ipi_row *r)
{
	return r->cycles ? (double)r->cal * 10000.0 / (double)r->cycles : 0;
}

static bool ipi_skipped;
static const char *ipi_why;
static struct ipi_row ipi_rows[2] = {
	{ "raw", futex_ping_side, futex_pong_side, 0, 0 },
	{ "cmesh", cmesh_ping_side, cmesh_pong_side, 0, 0 },
};

/* Scenario 4's runs (its rows are printed with the table). */
static void run_ipi(uint64_t iters)
{
	for (int k = 0; k < 2; k++)
		run_ipi_row(&ipi_rows[k], iters);
}

/* ---- 5 path: one thread, send and receive, nothing crosses cores ---- */

#define PATH_BATCH 256u
#define PATH_ROUNDS 10u
#define PATH_IMPLS 3

struct path_row {
	const char *name;
	uint64_t *samples; /* ticks per batch */
	uint64_t n, elapsed;
	struct bench_result res;
	cmesh_sender *tx;
	cmesh_receiver *rx;
};

static struct path_row path_rows[PATH_IMPLS] = { { .name = "raw" },
						 { .name = "cmesh" },
						 { .name = "lane" } };
static bool path_skipped;
static const char *path_why;
static alignas(128) struct ck_ring path_ring;
static alignas(128) struct bench_msg path_buf[STREAM_SLOTS];

struct path_join {
	int sock;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int r;
};

static void *path_join_side(void *arg)
{
	struct path_join *j = arg;
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;

	o.spin_ns = SPIN_FOREVER_NS;
	j->r = cmesh_node_join_socket(j->sock, &bench_msg_type, &bench_msg_type,
				      &o, &j->node, &j->tx, &j->rx);
	return NULL;
}

/* One batch of row k: PATH_BATCH sends, each received at once. */
static void path_batch(struct path_row *row, int k, struct bench_msg *m)
{
	struct bench_msg r;
	int rc;

	for (uint32_t i = 0; i < PATH_BATCH; i++) {
		m->seq++;
		if (k == 0) {
			ck_put(&path_ring, path_buf, m);
			ck_get(&path_ring, path_buf, &r);
		} else {
			rc = cmesh_sender_send(row->tx, m, NULL, 0);
			if (rc)
				bench_die("path: send", rc);
			rc = cmesh_receiver_recv(row->rx, &r, NULL, 0);
			if (rc < 0)
				bench_die("path: recv", rc);
		}
		if (r.seq != m->seq)
			bench_die("path: wrong message", EPROTO);
	}
}

static void run_path(uint64_t msgs)
{
	uint64_t batches = msgs / PATH_BATCH / PATH_ROUNDS;
	struct path_join a = { .r = 0 }, b = { .r = 0 };
	struct bench_msg m = { .seq = 0 };
	pthread_t t;
	int sv[2], err;

	if (batches < 4)
		batches = 4;
	ck_ring_init(&path_ring, STREAM_SLOTS);
	new_channel(SPIN_FOREVER_NS, 0, &path_rows[1].tx, &path_rows[1].rx);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		bench_die("path: socketpair", errno);
	a.sock = sv[0];
	b.sock = sv[1];
	err = pthread_create(&t, NULL, path_join_side, &b);
	if (err)
		bench_die("path: pthread_create", err);
	path_join_side(&a);
	pthread_join(t, NULL);
	if (a.r || b.r)
		bench_die("path: join", a.r ? a.r : b.r);
	path_rows[2].tx = a.tx; /* a's sender writes the lane b reads */
	path_rows[2].rx = b.rx;
	for (int k = 0; k < PATH_IMPLS; k++)
		path_rows[k].samples =
			bench_xcalloc(batches * PATH_ROUNDS, sizeof(uint64_t));
	for (uint32_t round = 0; round < PATH_ROUNDS; round++) {
		for (int k = 0; k < PATH_IMPLS; k++) {
			struct path_row *row = &path_rows[k];
			uint64_t t0 = bench_now_ticks(), prev = t0;

			path_batch(row, k, &m); /* warm: not recorded */
			prev = t0 = bench_now_ticks();
			for (uint64_t i = 0; i < batches; i++) {
				uint64_t now;

				path_batch(row, k, &m);
				now = bench_now_ticks();
				row->samples[row->n++] = now - prev;
				prev = now;
			}
			row->elapsed += prev - t0;
		}
	}
	for (int k = 0; k < PATH_IMPLS; k++) {
		struct path_row *row = &path_rows[k];

		bench_fill_latency(&row->res, row->samples, row->n,
				   bench_ns_per_tick / PATH_BATCH);
		row->res.n = row->n * PATH_BATCH;
		row->res.rate = bench_rate(row->res.n, row->elapsed);
		free(row->samples);
		if (k) {
			cmesh_sender_free(row->tx);
			cmesh_receiver_free(row->rx);
		}
	}
	cmesh_sender_free(b.tx);
	cmesh_receiver_free(a.rx);
	cmesh_node_free(a.node);
	cmesh_node_free(b.node);
}

/* Scenario 5's rows (info only). */
static void print_path(void)
{
	const char *name = "5 path 64B";

	if (path_skipped) {
		printf("%-16s SKIP (%s)\n", name, path_why);
		return;
	}
	for (int k = 0; k < PATH_IMPLS; k++) {
		const struct bench_result *r = &path_rows[k].res;
		char p50[16], p99[16], p999[16], rate[32], ratio[16] = "";

		bench_fmt_ns(p50, sizeof(p50), r->p50);
		bench_fmt_ns(p99, sizeof(p99), r->p99);
		bench_fmt_ns(p999, sizeof(p999), r->p999);
		bench_fmt_rate(rate, sizeof(rate), r->rate, "msg/s");
		if (k)
			snprintf(ratio, sizeof(ratio), "%.2fx",
				 r->p50 / path_rows[0].res.p50);
		printf("%-16s %-6s %9" PRIu64 " %9s %9s %9s %16s %7s %8s  %s\n",
		       k ? "" : name, path_rows[k].name, r->n, p50, p99, p999,
		       rate, ratio, k ? "info" : "", "");
		bench_json_result(name, path_rows[k].name, r, "msg/s");
	}
}

/* Scenario 4's rows; returns the number of failed targets (0 or 1). */
static int print_ipi(bool skipped, const char *why)
{
	const struct ipi_row *rows = ipi_rows;
	const char *name = "4 ipi vcpu";
	char v[32], lim[32], what[64];
	bool ok;

	if (skipped) {
		printf("%-16s SKIP (%s)\n", name, why);
		return 0;
	}
	ok = ipis_per_10k(&rows[1]) <= ipis_per_10k(&rows[0]) + IPI_SLACK;
	snprintf(lim, sizeof(lim), "<=%.0f",
		 ipis_per_10k(&rows[0]) + IPI_SLACK);
	for (int k = 0; k < 2; k++)
		printf("%-16s %-6s %9" PRIu64
		       " %9.0f %9s %9s %16s %7s %8s  %s\n",
		       k ? "" : name, rows[k].name, rows[k].cycles,
		       ipis_per_10k(&rows[k]), "", "", "", "", k ? lim : "",
		       k ? (ok ? "PASS" : "FAIL") : "");
	snprintf(v, sizeof(v), "%.0f", ipis_per_10k(&rows[1]));
	snprintf(what, sizeof(what), "%s: IPIs per 10k sleep/wake cycles",
		 name);
	bench_json_target(what, v, lim, ok);
	return !ok;
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct scenario sc[3] = {
		{ .name = "1 rtt-spin 64B",
		  .unit = "rt/s",
		  .target = 1.5,
		  .info_first = true,
		  .impl = { { "raw", spin_ping_side, spin_pong_side, { 0 } },
			    { "cmesh", cmesh_ping_side, cmesh_pong_side, { 0 } },
			    { "ck", ck_ping_side, ck_pong_side, { 0 } } } },
		{ .name = "2 rtt-sleep 64B",
		  .unit = "rt/s",
		  .target = 1.3,
		  .impl = { { "raw", futex_ping_side, futex_pong_side, { 0 } },
			    { "cmesh", cmesh_ping_side, cmesh_pong_side, { 0 } },
			    { NULL, NULL, NULL, { 0 } } } },
		{ .name = "3 stream 64B",
		  .unit = "msg/s",
		  .higher_better = true,
		  .target = 0.5,
		  .impl = { { "raw", ck_producer, ck_consumer, { 0 } },
			    { "cmesh", cmesh_producer, cmesh_consumer, { 0 } },
			    { "cm-win",
			      cmesh_win_producer,
			      cmesh_win_consumer,
			      { 0 } } } },
	};
	unsigned int wd = 600;
	struct bench_cpu_usage usage0, usage1;
	pthread_t helper;
	int err, fails = 0;

	bench_name = "bench_inproc";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	signal(SIGALRM, on_alarm);
	if (cfg.smoke)
		wd = 60;

	cfg.two_cpus = bench_pin_self(CPU_PING);
	if (pthread_barrier_init(&pair_barrier, NULL, 2) != 0)
		bench_die("pthread_barrier_init", errno);
	err = pthread_create(&helper, NULL, pong_thread, NULL);
	if (err)
		bench_die("pthread_create", err);
	run_pair(nop_side, nop_side, NULL); /* publishes pong_pinned */
	cfg.two_cpus = cfg.two_cpus && pong_pinned;
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	print_header(&cfg);
	bench_cpu_usage_read(&usage0);

	/* Spinning scenarios are meaningless (and crawl) on one CPU. */
	if (!cfg.two_cpus) {
		sc[0].skipped = sc[2].skipped = true;
		sc[0].skip_why = sc[2].skip_why =
			"CPUs 0 and 1 not both usable";
	}
	for (int i = 0; i < 3; i++) {
		if (cfg.only && cfg.only != i + 1) {
			sc[i].skipped = true;
			sc[i].skip_why = "--only";
		}
	}
	if (!cfg.two_cpus) {
		ipi_skipped = true;
		ipi_why = "CPUs 0 and 1 not both usable";
	} else if (cfg.only && cfg.only != 4) {
		ipi_skipped = true;
		ipi_why = "--only";
	} else if (bench_cal_irqs(CPU_PONG) == UINT64_MAX) {
		ipi_skipped = true;
		ipi_why = "no CAL row in /proc/interrupts";
	}

	if (!sc[0].skipped) {
		uint64_t warm = cfg.spin_iters / 200 > 1000 ?
					cfg.spin_iters / 200 :
					1000;

		watchdog(sc[0].name, wd);
		run_rtt(&sc[0], cfg.spin_iters, warm, SPIN_FOREVER_NS);
	}
	if (!sc[1].skipped) {
		uint64_t warm =
			cfg.sleep_iters / 200 > 20 ? cfg.sleep_iters / 200 : 20;

		watchdog(sc[1].name, wd);
		run_rtt(&sc[1], cfg.sleep_iters, warm, CMESH_SPIN_NONE);
	}
	if (!sc[2].skipped) {
		watchdog(sc[2].name, wd);
		run_stream(&sc[2], cfg.stream_msgs, cfg.stream_reps);
	}
	if (!ipi_skipped) {
		watchdog("4 ipi vcpu", wd);
		run_ipi(cfg.sleep_iters);
	}
	if (cfg.only && cfg.only != 5) {
		path_skipped = true;
		path_why = "--only";
	} else {
		watchdog("5 path 64B", wd);
		run_path(cfg.stream_msgs);
	}
	alarm(0);
	bench_cpu_usage_read(&usage1);

	pair_quit = true;
	pthread_barrier_wait(&pair_barrier);
	pthread_join(helper, NULL);
	pthread_barrier_destroy(&pair_barrier);

	printf("%-16s %-6s %9s %9s %9s %9s %16s %7s %8s  %s\n", "scenario",
	       "impl", "n", "p50", "p99", "p99.9", "throughput", "ratio",
	       "target", "result");
	for (int i = 0; i < 3; i++) {
		const struct scenario *s = &sc[i];
		bool info = s->impl[IMPL_INFO].name != NULL;

		if (s->skipped) {
			printf("%-16s SKIP (%s)\n", s->name, s->skip_why);
			continue;
		}
		print_row(s, IMPL_RAW, true);
		if (info && s->info_first)
			print_row(s, IMPL_INFO, false);
		print_row(s, IMPL_CMESH, false);
		if (info && !s->info_first)
			print_row(s, IMPL_INFO, false);
		if (!passed(s))
			fails++;
	}
	fails += print_ipi(ipi_skipped, ipi_why);
	print_path();
	printf("# ns per round trip (1,2: a timed send+recv per sample, rows "
	       "alternating in %u rounds) or per message (3: %u-msg batches "
	       "at the receiver, %" PRIu64 " reps); ratio: 1,2 p50, 3 median "
	       "msg/s, vs raw\n",
	       RTT_ROUNDS, STREAM_BATCH, cfg.stream_reps);
	for (int i = 0; i < 3; i++) {
		const struct scenario *s = &sc[i];
		char lo[32], hi[32];

		if (s->skipped)
			continue;
		if (s->higher_better) {
			bench_fmt_rate(lo, sizeof(lo), s->parts.raw_lo, "");
			bench_fmt_rate(hi, sizeof(hi), s->parts.raw_hi, "");
		} else {
			bench_fmt_ns(lo, sizeof(lo), s->parts.raw_lo);
			bench_fmt_ns(hi, sizeof(hi), s->parts.raw_hi);
		}
		printf("# %d: per-%s cmesh/raw %.2f..%.2fx, raw %s %s..%s",
		       i + 1, s->higher_better ? "rep" : "round", s->parts.lo,
		       s->parts.hi, s->higher_better ? "msg/s" : "p50 ns", lo,
		       hi);
		if (i == 0)
			printf("; raw = one 64-byte line per direction, seq in "
			       "its first word; ck = two ck SPSC rings of %u",
			       STREAM_SLOTS);
		if (i == 2)
			printf("; cm-win = producer <= %u msgs ahead; producer/"
			       "consumer time raw %.2f cmesh %.2f cm-win %.2f",
			       STREAM_SLOTS, s->impl[IMPL_RAW].res.tx_share,
			       s->impl[IMPL_CMESH].res.tx_share,
			       s->impl[IMPL_INFO].res.tx_share);
		printf("\n");
	}
	if (!path_skipped)
		printf("# 5: ns per message, one thread sending and receiving "
		       "each itself (batches of %u, %u rounds): the code path "
		       "alone; ratio: p50 vs raw (a ck SPSC ring); lane: two "
		       "nodes joined in this process, the cross-process "
		       "tier's code\n",
		       PATH_BATCH, PATH_ROUNDS);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && fails ? 1 : 0;
}
