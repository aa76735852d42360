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
 *                cmesh: ring_size 65536 bytes (512 slots of 128 bytes),
 *                cmesh_sender_send / cmesh_receiver_recv, spinning receiver.
 *                Target: cmesh msgs/s >= 0.5x raw msgs/s.
 *                cmesh send never blocks: past a full ring it appends to
 *                the channel's overflow list. Info row "cm-win": cmesh
 *                with the producer kept at most 512 messages ahead (a
 *                progress counter the consumer publishes every 64), so
 *                the ring never overflows.
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
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

#ifndef CMESH_BENCH_CFLAGS
#define CMESH_BENCH_CFLAGS_STR "unknown"
#else
#define BENCH_STR2(x) #x
#define BENCH_STR(x) BENCH_STR2(x)
#define CMESH_BENCH_CFLAGS_STR BENCH_STR(CMESH_BENCH_CFLAGS)
#endif

#if defined(__clang__)
#define BENCH_CC "clang "
#elif defined(__GNUC__)
#define BENCH_CC "gcc "
#else
#define BENCH_CC ""
#endif

#define CPU_PING 0
#define CPU_PONG 1
#define STREAM_RING_BYTES 65536u
#define STREAM_SLOT_BYTES 128u
#define STREAM_SLOTS (STREAM_RING_BYTES / STREAM_SLOT_BYTES) /* 512 */
#define STREAM_BATCH 1024u /* messages per stream latency sample */
#define SPIN_FOREVER_NS 1000000000LL
#define RTT_ROUNDS 10u /* rtt rows alternate in this many rounds */

/* ---------------------------------------------------------------------- */
/* Message and raw mechanisms                                             */

struct bench_msg {
	uint64_t seq;
	uint64_t stamp;
	uint8_t data[48];
};
_Static_assert(sizeof(struct bench_msg) == 64, "bench_msg is 64 bytes");

static CMESH_TYPE_DEFINE_PLAIN(bench_msg_type, struct bench_msg);

CK_RING_PROTOTYPE(bmsg, bench_msg)

/*
 * Raw spin line: the 64-byte message itself, its first word (seq) doubling
 * as the ready flag. Writer: copy bytes 8..63, store seq (release).
 * Reader: spin on seq (acquire, pairs with that store), copy bytes 8..63.
 * Ping-pong order guarantees the writer never overwrites an unread line.
 */
struct spin_line {
	alignas(128) _Atomic uint64_t seq;
	uint8_t body[56];
};

/*
 * Raw futex line: 32-bit futex word (low half of seq) + the message's bytes
 * 4..63. Writer: copy, store the word (release), FUTEX_WAKE. Reader: sleep
 * in FUTEX_WAIT until the word holds the expected seq, then copy.
 */
struct futex_line {
	alignas(128) _Atomic uint32_t word;
	uint8_t body[60];
};

static struct spin_line spin_ping, spin_pong;
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
/* Utilities                                                              */

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_inproc: %s: %s\n", what,
		err < 0 ? cmesh_strerror(err) : strerror(err));
	exit(2);
}

static bool clock_tsc;
static double ns_per_tick = 1.0;
static uint64_t clock_step = 1; /* smallest non-zero difference, ticks */

static inline uint64_t now_ticks(void)
{
#if HAVE_TSC
	if (clock_tsc) {
		uint64_t t;

		_mm_lfence();
		t = __rdtsc();
		_mm_lfence();
		return t;
	}
#endif
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool cpuinfo_has_flag(const char *flag)
{
	char line[8192];
	bool found = false;
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		char *rest = strchr(line, ':');

		for (char *tok = strtok(rest ? rest + 1 : line, " \t\n"); tok;
		     tok = strtok(NULL, " \t\n")) {
			if (strcmp(tok, flag) == 0) {
				found = true;
				break;
			}
		}
		break;
	}
	fclose(f);
	return found;
}

static void cpu_model(char *buf, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) != 0 || !colon)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		colon[strcspn(colon, "\n")] = '\0';
		snprintf(buf, len, "%s", colon);
		break;
	}
	fclose(f);
}

static void clock_setup(bool smoke)
{
	const char *env = getenv("CMESH_BENCH_CLOCK");
	bool want_tsc = HAVE_TSC && cpuinfo_has_flag("constant_tsc") &&
			cpuinfo_has_flag("nonstop_tsc");

	if (env && strcmp(env, "mono") == 0)
		want_tsc = false;
	if (!want_tsc) {
		clock_tsc = false;
		ns_per_tick = 1.0;
		return;
	}
	clock_tsc = true;
	uint64_t span = smoke ? 20000000u : 100000000u;
	uint64_t n0 = mono_ns(), c0 = now_ticks(), n1, c1;

	do {
		n1 = mono_ns();
		c1 = now_ticks();
	} while (n1 - n0 < span);
	ns_per_tick = (double)(n1 - n0) / (double)(c1 - c0);
}

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* The clock's step: gcd of many differences of consecutive readings. */
static void clock_measure_step(void)
{
	uint64_t g = 0;

	for (int i = 0; i < 10000; i++) {
		uint64_t a = now_ticks(), b = now_ticks();

		g = gcd_u64(g, b - a);
	}
	clock_step = g ? g : 1;
}

static bool pin_self(int cpu)
{
	cpu_set_t set;
	int err;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (err)
		fprintf(stderr,
			"bench_inproc: warning: cannot pin to CPU %d: %s\n",
			cpu, strerror(err));
	return err == 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t pct(const uint64_t *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0;
	rank = (size_t)((double)n * p / 100.0 + 0.999999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);

	if (!p)
		die("calloc", ENOMEM);
	memset(p, 0, n * sz); /* fault the pages in before timing */
	return p;
}

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

/*
 * CPU time of the whole machine and of this process, in clock ticks, to
 * tell whether other processes (or the host: steal) took CPU during the run.
 */
struct cpu_usage {
	uint64_t busy, total, steal, self;
};

static void cpu_usage_read(struct cpu_usage *u)
{
	unsigned long long v[8] = { 0 }, ut = 0, st = 0;
	char line[1024];
	FILE *f;

	memset(u, 0, sizeof(*u));
	f = fopen("/proc/stat", "r");
	if (f) {
		if (fgets(line, sizeof(line), f) &&
		    sscanf(line, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
			   &v[7]) == 8) {
			/* user nice system idle iowait irq softirq steal */
			u->busy = v[0] + v[1] + v[2] + v[5] + v[6];
			u->steal = v[7];
			u->total = u->busy + v[3] + v[4] + v[7];
		}
		fclose(f);
	}
	f = fopen("/proc/self/stat", "r");
	if (f) {
		/* Fields 14 and 15 (utime, stime) follow "(comm) state". */
		if (fgets(line, sizeof(line), f)) {
			char *p = strrchr(line, ')');

			if (p && sscanf(p + 1,
					" %*c %*d %*d %*d %*d %*d %*u %*u %*u "
					"%*u %*u %llu %llu",
					&ut, &st) == 2)
				u->self = ut + st;
		}
		fclose(f);
	}
}

/* ---------------------------------------------------------------------- */
/* Two pinned threads: this one on CPU_PING, a helper on CPU_PONG.         */

typedef void side_fn(void *arg);

static pthread_barrier_t pair_barrier;
static side_fn *pair_b;
static void *pair_arg;
static bool pair_quit;
static bool pong_pinned; /* written before the helper's first barrier */

static void *pong_thread(void *unused)
{
	(void)unused;
	pong_pinned = pin_self(CPU_PONG);
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
static void run_pair(side_fn *a, side_fn *b, void *arg)
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
	uint64_t iters;	   /* recorded iterations */
	uint64_t *samples; /* iters ticks are written here */
	uint64_t elapsed;  /* ticks spent in recorded iterations */
	cmesh_sender *ping_tx, *pong_tx;
	cmesh_receiver *ping_rx, *pong_rx;
};

static inline void spin_put(struct spin_line *l, const struct bench_msg *m)
{
	memcpy(l->body, (const uint8_t *)m + 8, sizeof(l->body));
	/* Pairs with the acquire load in spin_get(). */
	atomic_store_explicit(&l->seq, m->seq, memory_order_release);
}

static inline void spin_get(struct spin_line *l, uint64_t seq,
			    struct bench_msg *out)
{
	/* Pairs with the release store in spin_put(). */
	while (atomic_load_explicit(&l->seq, memory_order_acquire) != seq)
		ck_pr_stall();
	out->seq = seq;
	memcpy((uint8_t *)out + 8, l->body, sizeof(l->body));
}

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

static void check_echo(const struct bench_msg *r, uint64_t seq, uint64_t t0)
{
	if (r->seq != seq || r->stamp != t0) {
		fprintf(stderr,
			"bench_inproc: bad echo: seq %" PRIu64 " (want %" PRIu64
			"), stamp %" PRIu64 " (want %" PRIu64 ")\n",
			r->seq, seq, r->stamp, t0);
		exit(2);
	}
}

#define RTT_PING(name, PUT, GET)                                               \
	static void name(void *arg)                                            \
	{                                                                      \
		struct rtt_ctx *c = arg;                                       \
		struct bench_msg m, r;                                         \
		uint64_t n = c->warm + c->iters, start = 0;                    \
                                                                               \
		memset(&m, 0x5a, sizeof(m));                                   \
		for (uint64_t i = 0; i < n; i++) {                             \
			uint64_t seq = c->base + i, t0, t1;                    \
                                                                               \
			if (i == c->warm)                                      \
				start = now_ticks();                           \
			t0 = now_ticks();                                      \
			m.seq = seq;                                           \
			m.stamp = t0;                                          \
			PUT;                                                   \
			GET;                                                   \
			t1 = now_ticks();                                      \
			check_echo(&r, seq, t0);                               \
			if (i >= c->warm)                                      \
				c->samples[i - c->warm] = t1 - t0;             \
		}                                                              \
		c->elapsed += now_ticks() - start;                             \
	}

#define RTT_PONG(name, GET, PUT)                                               \
	static void name(void *arg)                                            \
	{                                                                      \
		struct rtt_ctx *c = arg;                                       \
		struct bench_msg r;                                            \
		uint64_t n = c->warm + c->iters;                               \
                                                                               \
		for (uint64_t i = 0; i < n; i++) {                             \
			uint64_t seq = c->base + i;                            \
                                                                               \
			(void)seq;                                             \
			GET;                                                   \
			PUT;                                                   \
		}                                                              \
	}

static inline void cm_send(cmesh_sender *tx, const struct bench_msg *m)
{
	int rc = cmesh_sender_send(tx, m, NULL, 0);

	if (rc < 0)
		die("cmesh_sender_send", rc);
}

static inline void cm_recv(cmesh_receiver *rx, struct bench_msg *out)
{
	int rc = cmesh_receiver_recv(rx, out, NULL, 0);

	if (rc != 0)
		die("cmesh_receiver_recv", rc < 0 ? rc : -EPROTO);
}

RTT_PING(spin_ping_side, spin_put(&spin_ping, &m),
	 spin_get(&spin_pong, seq, &r))
RTT_PONG(spin_pong_side, spin_get(&spin_ping, seq, &r),
	 spin_put(&spin_pong, &r))
RTT_PING(ck_ping_side, ck_put(&ck_ping_ring, ck_ping_buf, &m),
	 ck_get(&ck_pong_ring, ck_pong_buf, &r))
RTT_PONG(ck_pong_side, ck_get(&ck_ping_ring, ck_ping_buf, &r),
	 ck_put(&ck_pong_ring, ck_pong_buf, &r))
RTT_PING(futex_ping_side, futex_put(&futex_ping, &m),
	 futex_get(&futex_pong, seq, &r))
RTT_PONG(futex_pong_side, futex_get(&futex_ping, seq, &r),
	 futex_put(&futex_pong, &r))
RTT_PING(cmesh_ping_side, cm_send(c->ping_tx, &m), cm_recv(c->pong_rx, &r))
RTT_PONG(cmesh_pong_side, cm_recv(c->ping_rx, &r), cm_send(c->pong_tx, &r))

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

static void check_seq(uint64_t got, uint64_t want)
{
	if (got != want) {
		fprintf(stderr,
			"bench_inproc: stream out of order: seq %" PRIu64
			", want %" PRIu64 "\n",
			got, want);
		exit(2);
	}
}

static void ck_producer(void *arg)
{
	struct stream_ctx *c = arg;
	struct bench_msg m;
	uint64_t t0 = now_ticks();

	memset(&m, 0x5a, sizeof(m));
	for (uint64_t i = 0; i < c->n; i++) {
		m.seq = c->base + i;
		while (!ck_ring_enqueue_spsc_bmsg(&ck_stream_ring,
						  ck_stream_buf, &m))
			ck_pr_stall();
	}
	c->tx_ticks = now_ticks() - t0;
}

static void cmesh_producer(void *arg)
{
	struct stream_ctx *c = arg;
	struct bench_msg m;
	uint64_t t0 = now_ticks();

	memset(&m, 0x5a, sizeof(m));
	for (uint64_t i = 0; i < c->n; i++) {
		m.seq = c->base + i;
		cm_send(c->tx, &m);
	}
	c->tx_ticks = now_ticks() - t0;
}

static void cmesh_win_producer(void *arg)
{
	struct stream_ctx *c = arg;
	struct bench_msg m;
	uint64_t t0 = now_ticks(), limit;

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
	c->tx_ticks = now_ticks() - t0;
}

#define STREAM_CONSUMER(name, RECV, AFTER)                                     \
	static void name(void *arg)                                            \
	{                                                                      \
		struct stream_ctx *c = arg;                                    \
		struct bench_msg r;                                            \
		uint64_t t0 = now_ticks(), prev = t0, k = 0;                   \
                                                                               \
		for (uint64_t i = 0; i < c->n; i++) {                          \
			RECV;                                                  \
			check_seq(r.seq, c->base + i);                         \
			AFTER;                                                 \
			if (c->batches && (i + 1) % STREAM_BATCH == 0) {       \
				uint64_t t = now_ticks();                      \
                                                                               \
				c->batches[k++] = t - prev;                    \
				prev = t;                                      \
			}                                                      \
		}                                                              \
		c->rx_ticks = now_ticks() - t0;                                \
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

struct result {
	uint64_t n;		 /* samples (rtt) or messages (stream) */
	double p50, p99, p999;	 /* ns per round trip / ns per message */
	double rate;		 /* round trips/s or messages/s */
	double rate_lo, rate_hi; /* stream: min and max over repetitions */
	double tx_share;	 /* stream: producer time / consumer time */
};

/* Rows of a scenario: the raw mechanism, cmesh, and an optional extra. */
#define IMPL_RAW 0
#define IMPL_CMESH 1
#define IMPL_INFO 2
#define NIMPL 3

struct impl {
	const char *name; /* NULL: no such row */
	side_fn *a, *b;	  /* CPU_PING side (pinger/producer), CPU_PONG side */
	struct result res;
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
	/* Spread of the target ratio over rounds / repetitions. */
	unsigned int nparts;
	double part_lo, part_hi;	 /* cmesh vs raw, per part */
	double raw_part_lo, raw_part_hi; /* raw p50 (rtt) or msg/s (stream) */
};

/* Records one round's / repetition's ratio and raw figure. */
static void note_part(struct scenario *s, double ratio, double raw)
{
	if (s->nparts++ == 0) {
		s->part_lo = s->part_hi = ratio;
		s->raw_part_lo = s->raw_part_hi = raw;
		return;
	}
	s->part_lo = ratio < s->part_lo ? ratio : s->part_lo;
	s->part_hi = ratio > s->part_hi ? ratio : s->part_hi;
	s->raw_part_lo = raw < s->raw_part_lo ? raw : s->raw_part_lo;
	s->raw_part_hi = raw > s->raw_part_hi ? raw : s->raw_part_hi;
}

static void fill_latency(struct result *r, uint64_t *v, size_t n, double scale)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	r->p50 = (double)pct(v, n, 50.0) * scale;
	r->p99 = (double)pct(v, n, 99.0) * scale;
	r->p999 = (double)pct(v, n, 99.9) * scale;
}

static void fmt_ns(char *buf, size_t len, double ns)
{
	if (ns < 100.0)
		snprintf(buf, len, "%.1f", ns);
	else
		snprintf(buf, len, "%.0f", ns);
}

static void fmt_rate(char *buf, size_t len, double r, const char *unit)
{
	const char *sp = *unit ? " " : "";

	if (r >= 1e6)
		snprintf(buf, len, "%.2fM%s%s", r / 1e6, sp, unit);
	else if (r >= 1e3)
		snprintf(buf, len, "%.2fK%s%s", r / 1e3, sp, unit);
	else
		snprintf(buf, len, "%.0f%s%s", r, sp, unit);
}

/* Row `k` against the raw row: rate ratio (stream) or p50 ratio (rtt). */
static double ratio_of(const struct scenario *s, int k)
{
	const struct result *raw = &s->impl[IMPL_RAW].res, *x = &s->impl[k].res;

	if (s->higher_better)
		return raw->rate > 0 ? x->rate / raw->rate : 0;
	return raw->p50 > 0 ? x->p50 / raw->p50 : 0;
}

static bool passed(const struct scenario *s)
{
	double r = ratio_of(s, IMPL_CMESH);

	return s->higher_better ? r >= s->target : r <= s->target;
}

static void print_row(const struct scenario *s, int k, bool first)
{
	const struct result *r = &s->impl[k].res;
	char p50[16], p99[16], p999[16], rate[32], ratio[16] = "", tgt[16] = "";
	const char *res = "";

	fmt_ns(p50, sizeof(p50), r->p50);
	fmt_ns(p99, sizeof(p99), r->p99);
	fmt_ns(p999, sizeof(p999), r->p999);
	fmt_rate(rate, sizeof(rate), r->rate, s->unit);
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
		die("cmesh_channel_new", rc);
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
		ctx[k].iters = per;
		if (s->impl[k].name)
			v[k] = xcalloc(per * rounds, sizeof(uint64_t));
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
		double rp, cp;

		qsort(raw, per, sizeof(*raw), cmp_u64);
		qsort(cm, per, sizeof(*cm), cmp_u64);
		rp = (double)pct(raw, per, 50.0) * ns_per_tick;
		cp = (double)pct(cm, per, 50.0) * ns_per_tick;
		note_part(s, rp > 0 ? cp / rp : 0, rp);
	}
	cmesh_sender_free(ctx[IMPL_CMESH].ping_tx);
	cmesh_sender_free(ctx[IMPL_CMESH].pong_tx);
	cmesh_receiver_free(ctx[IMPL_CMESH].ping_rx);
	cmesh_receiver_free(ctx[IMPL_CMESH].pong_rx);

	for (int k = 0; k < NIMPL; k++) {
		struct result *r = &s->impl[k].res;

		if (!s->impl[k].name)
			continue;
		r->n = per * rounds;
		fill_latency(r, v[k], per * rounds, ns_per_tick);
		r->rate = (double)r->n /
			  ((double)ctx[k].elapsed * ns_per_tick * 1e-9);
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
		b[k] = xcalloc(nb * reps, sizeof(uint64_t));
		rate[k] = xcalloc(reps, sizeof(double));
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
			rate[k][i] = (double)n /
				     ((double)c->rx_ticks * ns_per_tick * 1e-9);
			tx[k] += (double)c->tx_ticks / (double)c->rx_ticks;
		}
		note_part(s, rate[IMPL_CMESH][i] / rate[IMPL_RAW][i],
			  rate[IMPL_RAW][i]);
	}
	for (int k = 0; k < NIMPL; k++) {
		struct result *r = &s->impl[k].res;
		double *rt = rate[k];

		if (!s->impl[k].name)
			continue;
		cmesh_sender_free(ctx[k].tx);
		cmesh_receiver_free(ctx[k].rx);
		r->n = n * reps;
		fill_latency(r, b[k], nb * reps, ns_per_tick / STREAM_BATCH);
		qsort(rt, reps, sizeof(*rt), cmp_double);
		r->rate = reps % 2 ? rt[reps / 2] :
				     (rt[reps / 2 - 1] + rt[reps / 2]) / 2;
		r->rate_lo = rt[0];
		r->rate_hi = rt[reps - 1];
		r->tx_share = tx[k] / (double)reps;
		free(b[k]);
		free(rt);
	}
}

/* ---------------------------------------------------------------------- */
/* Header, options, main                                                  */

static void print_header(const struct config *cfg)
{
	char cpu[256];
	struct utsname u;
	cmesh_env env = CMESH_ENV_INIT;
	const char *wake = "?";
	char ebuf[128], cflags[512];

	cpu_model(cpu, sizeof(cpu));
	if (uname(&u) != 0)
		memset(&u, 0, sizeof(u));
	if (cmesh_env_check(&env, ebuf, sizeof(ebuf)) == 0)
		wake = env.wake == CMESH_WAKE_URING ? "uring" :
		       env.wake == CMESH_WAKE_EPOLL ? "epoll" :
						      "auto";
	else
		wake = "bad-env";
	/* CMESH_BENCH_CFLAGS may be a string literal or bare tokens. */
	snprintf(cflags, sizeof(cflags), "%s", CMESH_BENCH_CFLAGS_STR);
	if (cflags[0] == '"' && strlen(cflags) >= 2 &&
	    cflags[strlen(cflags) - 1] == '"') {
		memmove(cflags, cflags + 1, strlen(cflags) - 2);
		cflags[strlen(cflags) - 2] = '\0';
	}
	printf("# bench_inproc | cpu: %s | kernel: %s %s %s | cc: %s | "
	       "flags: __OPTIMIZE__=%s CMESH_BENCH_CFLAGS=%s | clock: %s",
	       cpu, u.sysname, u.release, u.machine, BENCH_CC __VERSION__,
#ifdef __OPTIMIZE__
	       "1",
#else
	       "0",
#endif
	       cflags, clock_tsc ? "lfence;rdtsc" : "clock_gettime");
	if (clock_tsc)
		printf(" %.3f GHz", 1.0 / ns_per_tick);
	printf(" step %.0f ns", (double)clock_step * ns_per_tick);
	printf(" | cpus %d,%d%s | cmesh %d.%d.%d wake=%s%s\n", CPU_PING,
	       CPU_PONG, cfg->two_cpus ? "" : " (UNAVAILABLE)",
	       CMESH_VERSION_MAJOR, CMESH_VERSION_MINOR, CMESH_VERSION_PATCH,
	       wake, cfg->smoke ? " | SMOKE" : "");
}

static uint64_t parse_count(const char *what, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end != '\0' || v == 0 || s[0] == '-') {
		fprintf(stderr, "bench_inproc: bad %s: '%s'\n", what, s);
		exit(2);
	}
	return (uint64_t)v;
}

static void env_count(uint64_t *dst, const char *name)
{
	const char *v = getenv(name);

	if (v && *v)
		*dst = parse_count(name, v);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_inproc [--smoke] [--strict] [--only 1|2|3]\n"
		   "                    [--spin-iters N] [--sleep-iters N]\n"
		   "                    [--stream-msgs N] [--stream-reps N]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_SPIN_ITERS "
		   "CMESH_BENCH_SLEEP_ITERS\n"
		   "     CMESH_BENCH_STREAM_MSGS CMESH_BENCH_STREAM_REPS "
		   "CMESH_BENCH_CLOCK=tsc|mono\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	const char *smoke = getenv("CMESH_BENCH_SMOKE");
	uint64_t *given[4] = { NULL, NULL, NULL, NULL };
	uint64_t vals[4] = { 0, 0, 0, 0 };

	cfg->smoke = smoke && *smoke && strcmp(smoke, "0") != 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *names[4] = { "--spin-iters", "--sleep-iters",
					 "--stream-msgs", "--stream-reps" };
		bool matched = false;

		if (strcmp(a, "--smoke") == 0) {
			cfg->smoke = true;
			continue;
		}
		if (strcmp(a, "--strict") == 0) {
			cfg->strict = true;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		}
		if (strcmp(a, "--only") == 0 && i + 1 < argc) {
			cfg->only = (int)parse_count("--only", argv[++i]);
			if (cfg->only > 3) {
				usage(stderr);
				exit(2);
			}
			continue;
		}
		for (int k = 0; k < 4; k++) {
			if (strcmp(a, names[k]) == 0 && i + 1 < argc) {
				vals[k] = parse_count(names[k], argv[++i]);
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
	env_count(&cfg->spin_iters, "CMESH_BENCH_SPIN_ITERS");
	env_count(&cfg->sleep_iters, "CMESH_BENCH_SLEEP_ITERS");
	env_count(&cfg->stream_msgs, "CMESH_BENCH_STREAM_MSGS");
	env_count(&cfg->stream_reps, "CMESH_BENCH_STREAM_REPS");
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
	struct cpu_usage usage0, usage1;
	pthread_t helper;
	int err, fails = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	signal(SIGALRM, on_alarm);
	if (cfg.smoke)
		wd = 60;

	cfg.two_cpus = pin_self(CPU_PING);
	if (pthread_barrier_init(&pair_barrier, NULL, 2) != 0)
		die("pthread_barrier_init", errno);
	err = pthread_create(&helper, NULL, pong_thread, NULL);
	if (err)
		die("pthread_create", err);
	run_pair(nop_side, nop_side, NULL); /* publishes pong_pinned */
	cfg.two_cpus = cfg.two_cpus && pong_pinned;
	clock_setup(cfg.smoke);
	clock_measure_step();
	print_header(&cfg);
	cpu_usage_read(&usage0);

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
	alarm(0);
	cpu_usage_read(&usage1);

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
			fmt_rate(lo, sizeof(lo), s->raw_part_lo, "");
			fmt_rate(hi, sizeof(hi), s->raw_part_hi, "");
		} else {
			fmt_ns(lo, sizeof(lo), s->raw_part_lo);
			fmt_ns(hi, sizeof(hi), s->raw_part_hi);
		}
		printf("# %d: per-%s cmesh/raw %.2f..%.2fx, raw %s %s..%s",
		       i + 1, s->higher_better ? "rep" : "round", s->part_lo,
		       s->part_hi, s->higher_better ? "msg/s" : "p50 ns", lo,
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
	if (usage1.total > usage0.total) {
		double all = (double)(usage1.total - usage0.total);
		double busy = (double)(usage1.busy - usage0.busy);
		double self = (double)(usage1.self - usage0.self);
		double other = busy > self ? (busy - self) / all : 0.0;
		double steal = (double)(usage1.steal - usage0.steal) / all;

		printf("# other processes used %.1f%% and host steal %.1f%% of "
		       "all CPUs during the run%s\n",
		       100.0 * other, 100.0 * steal,
		       other + steal > 0.05 ? ": numbers DISTURBED" : "");
	}
	if (cfg.smoke)
		printf("# smoke mode: counts too small for stable percentiles\n");
	printf("# %s\n", fails ? "some targets FAIL" : "all targets PASS");
	return cfg.strict && fails ? 1 : 0;
}
