/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_util.h - pieces shared by the benchmarks in perf/: the clock
 * (lfence;rdtsc calibrated against CLOCK_MONOTONIC, or clock_gettime), the
 * header line, pinning, percentiles and result rows, CPU-usage accounting,
 * the forked child of a two-process benchmark (kill, reap, signals), fd
 * counting, option helpers, and the 64-byte bench message with its raw
 * spin line.
 * Built into every bench_* executable (CMake target cmesh_benchutil).
 */
#ifndef CMESH_BENCH_UTIL_H
#define CMESH_BENCH_UTIL_H

#include <ck_pr.h>

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define BENCH_HAVE_TSC 1
#else
#define BENCH_HAVE_TSC 0
#endif

#define BENCH_STR2(x) #x
#define BENCH_STR(x) BENCH_STR2(x)

/* CMESH_BENCH_CFLAGS as a string (a literal or bare tokens), or `dflt`. */
#ifdef CMESH_BENCH_CFLAGS
#define BENCH_CFLAGS_OR(dflt) BENCH_STR(CMESH_BENCH_CFLAGS)
#else
#define BENCH_CFLAGS_OR(dflt) dflt
#endif

/* The compiler's name, before __VERSION__ in headers and reports. */
#if defined(__clang__)
#define BENCH_CC "clang "
#elif defined(__GNUC__)
#define BENCH_CC "gcc "
#else
#define BENCH_CC ""
#endif

/* ---------------------------------------------------------------------- */
/* Failure                                                                */

/* Program name that starts every message, e.g. "bench_inproc". */
extern const char *bench_name;
/* Put between the name and the message, e.g. "child: "; default "". */
extern const char *bench_who;
/* Run by bench_die() after its message, before exit(2); may not return. */
extern void (*bench_die_hook)(void);
/*
 * After the message of a failed bench_check_echo() / bench_check_seq():
 * false (default): exit(2); true: bench_die(what, EPROTO).
 */
extern bool bench_check_dies;

/* Prints "<name>: <who><what>: <error>" (err: errno, or < 0: cmesh). */
void bench_die(const char *what, int err);

/* Writes all of buf to stderr (async-signal-safe). */
void bench_write_err(const char *buf, size_t len);

/* SIGKILLs and reaps `pid` if it is > 0 (async-signal-safe). */
void bench_kill_reap(int pid);

/* calloc that dies on failure and touches every page before timing. */
void *bench_xcalloc(size_t n, size_t sz);

/* Open fds of this process (not counting the directory's own). */
int bench_count_fds(void);

/*
 * Function-call interrupts (IPIs: /proc/interrupts, row CAL) that CPU
 * `cpu` took so far (every CPU's summed when cpu < 0); UINT64_MAX where
 * the kernel does not show them.
 */
uint64_t bench_cal_irqs(int cpu);

/* ---------------------------------------------------------------------- */
/* Child process                                                          */

/*
 * Parent: the one live child of a benchmark that forks one at a time, set
 * right after fork(), 0 once it is reaped (or none).
 */
extern volatile pid_t bench_child_pid;
/* This process is such a child: bench_child_die_hook() _exit(2)s. */
extern bool bench_is_child;

/*
 * Parent: clears bench_child_pid and SIGKILLs and reaps the child it named,
 * if any (async-signal-safe).
 */
void bench_child_kill(void);

/*
 * A bench_die_hook: a child _exit(2)s; the parent says if the child had
 * already ended ("<name>: the child had ended: exit status N" or "killed
 * by signal N": the likely cause), then bench_child_kill()s.
 */
void bench_child_die_hook(void);

/*
 * Parent: installs handlers. SIGALRM (the watchdog): "<name>: watchdog:
 * <hung> hung, killing the child", bench_child_kill(), _exit(3). SIGINT,
 * SIGTERM, SIGHUP: bench_child_kill(), then the signal's default action.
 */
void bench_child_signals(const char *hung);

/*
 * Child, right after fork(): sets bench_is_child, bench_who ("child: ")
 * and no bench_child_pid; SIGALRM, SIGCHLD, SIGINT, SIGTERM and SIGHUP,
 * if caught (a handler of the parent's), go back to their default action;
 * dies with the parent (PR_SET_PDEATHSIG), and _exit(2)s if `parent` has
 * already gone.
 */
void bench_child_enter(pid_t parent);

/*
 * A SOCK_SEQPACKET socketpair, then fork() (stdio flushed first; dies on
 * failure). Parent: returns the child's pid (also in bench_child_pid), its
 * end in *sock. Child: returns 0, its end in *sock.
 */
pid_t bench_fork_pair(int *sock);

/* Parent: waits for and clears bench_child_pid; returns its wait status. */
int bench_child_wait(void);

/*
 * Parent: bench_child_wait(); unless the child exited with status 0 (sig
 * 0) or was killed by signal `sig`: "<name>: the child ended badly (0x..)"
 * and exit(2).
 */
void bench_child_reap(int sig);

/* ---------------------------------------------------------------------- */
/* Clock                                                                  */

extern bool bench_clock_tsc;	  /* ticks are TSC cycles, else ns */
extern double bench_ns_per_tick;  /* set by bench_clock_setup() */
extern uint64_t bench_clock_step; /* smallest non-zero difference, ticks */

/* Now in ticks: lfence;rdtsc;lfence, or CLOCK_MONOTONIC ns. */
static inline uint64_t bench_now_ticks(void)
{
#if BENCH_HAVE_TSC
	if (bench_clock_tsc) {
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

/* CLOCK_MONOTONIC in ns. */
uint64_t bench_mono_ns(void);

/*
 * Picks the TSC if invariant (and CMESH_BENCH_CLOCK is not "mono") and
 * calibrates it for 20 ms (smoke) or 100 ms.
 */
void bench_clock_setup(bool smoke);

/* Sets bench_clock_step: gcd of many differences of consecutive reads. */
void bench_clock_measure_step(void);

/* Events per second: n events over `ticks`. */
double bench_rate(uint64_t n, uint64_t ticks);

/* ---------------------------------------------------------------------- */
/* CPUs                                                                   */

/* Pins the calling thread to `cpu`; warns on stderr if it cannot. */
bool bench_pin_self(int cpu);

/* CPUs a and b are both in the calling thread's affinity mask. */
bool bench_cpus_usable(int a, int b);

/* "model name" of /proc/cpuinfo, or "unknown". */
void bench_cpu_model(char *buf, size_t len);

/*
 * CPU time of the whole machine and of this process and its reaped
 * children, in clock ticks: did other processes (or the host: steal) take
 * CPU during the run?
 */
struct bench_cpu_usage {
	uint64_t busy, total, steal, self;
};

void bench_cpu_usage_read(struct bench_cpu_usage *u);

/*
 * The last lines of a run: CPU taken by others between u0 and u1 (and
 * "numbers DISTURBED" past 5%), the smoke note, and PASS / FAIL.
 */
void bench_print_footer(const struct bench_cpu_usage *u0,
			const struct bench_cpu_usage *u1, bool smoke,
			int fails);

/*
 * Last notes of a run whose targets smoke mode shows but never counts:
 * "# smoke: the targets are shown ..." (smoke), "# wall time <secs>s".
 */
void bench_print_wall(bool smoke, double secs);

/* ---------------------------------------------------------------------- */
/* Header line                                                            */

/* Copies `s` to buf, without the quotes if it is a string literal. */
void bench_cflags(char *buf, size_t len, const char *s);

/*
 * "# <name> | cpu: .. | kernel: .. | cc: .. | flags: <flags> | clock: ..
 * | <cpus_label> <cpu_a>,<cpu_b>[ (UNAVAILABLE)] | cmesh x.y.z wake=..
 * [| SMOKE]".
 */
void bench_print_header(const char *flags, const char *cpus_label, int cpu_a,
			int cpu_b, bool two_cpus, bool smoke);

/*
 * The header of a benchmark between two processes on CPUs a and b: flags
 * CMESH_BENCH_CFLAGS (of the benchmark's own file), else "-O2".
 */
static inline void bench_print_header_procs(int cpu_a, int cpu_b, bool two_cpus,
					    bool smoke)
{
	char cflags[512];

	bench_cflags(cflags, sizeof(cflags), BENCH_CFLAGS_OR("-O2"));
	bench_print_header(cflags, "processes on cpus", cpu_a, cpu_b, two_cpus,
			   smoke);
}

/* ---------------------------------------------------------------------- */
/* Samples and results                                                    */

int bench_cmp_u64(const void *a, const void *b);
int bench_cmp_double(const void *a, const void *b);

/* Nearest-rank percentile of a sorted array. */
uint64_t bench_pct(const uint64_t *v, size_t n, double p);

/* Median of v[0..n) (sorts v). */
double bench_median(double *v, size_t n);

#define BENCH_NQ 101 /* quantiles q0, q1, ..., q100 of a latency row */

struct bench_result {
	uint64_t n;		 /* samples (rtt) or messages (stream) */
	double p50, p99, p999;	 /* ns per round trip / ns per message */
	double rate;		 /* round trips/s or messages/s */
	double rate_lo, rate_hi; /* stream: min and max over repetitions */
	double tx_share;	 /* stream: producer time / consumer time */
	uint64_t nlat;		 /* samples behind p50.. and q (0: none) */
	double q[BENCH_NQ];	 /* q[i]: i-th percentile, as p50 */
};

/*
 * Sorts v[0..n) and sets p50, p99, p999, q[] (ticks * scale) and nlat.
 */
void bench_fill_latency(struct bench_result *r, uint64_t *v, size_t n,
			double scale);

/* rtt: n samples of v (ticks), rate from `elapsed` ticks in all. */
void bench_fill_rtt(struct bench_result *r, uint64_t *v, uint64_t n,
		    uint64_t elapsed);

/* stream: rate = median of rt[0..reps) (sorts rt), rate_lo, rate_hi. */
void bench_fill_rates(struct bench_result *r, double *rt, size_t reps);

/* Row x against the baseline row: rate ratio (by_rate) or p50 ratio. */
double bench_ratio(const struct bench_result *raw, const struct bench_result *x,
		   bool by_rate);

#define BENCH_MAX_PARTS 32u

/* Spread of the target ratio over rounds (rtt) or repetitions (stream). */
struct bench_parts {
	unsigned int n;
	double v[BENCH_MAX_PARTS]; /* ratios of the first BENCH_MAX_PARTS */
	double lo, hi;		   /* cmesh vs raw, per part */
	double raw_lo, raw_hi;	   /* raw p50 (rtt) or msg/s (stream) */
};

/* Records one round's / repetition's ratio and raw figure. */
void bench_note_part(struct bench_parts *p, double ratio, double raw);

/* Sorts one round's raw and cmesh samples, notes the ratio of p50s. */
void bench_note_round(struct bench_parts *p, uint64_t *raw, uint64_t *cm,
		      size_t n);

/* Median of the recorded ratios. */
double bench_parts_median(const struct bench_parts *p);

/*
 * Prints "# what: per-round p50 ratio median R (lo..hi) over n rounds,
 * <ref> p50 lo..hi ns" (nothing when no round was noted).
 */
void bench_print_parts(const char *what, const char *ref,
		       const struct bench_parts *p);

/*
 * CMESH_BENCH_SCALE (1.0 when unset or empty); a bad value (not a number
 * in (0, 1000]) ends the run: "`prog`: bad CMESH_BENCH_SCALE", status 2.
 */
double bench_scale_env(const char *prog);

/* ns: one decimal below 100. */
void bench_fmt_ns(char *buf, size_t len, double ns);

/* ns as microseconds: one decimal below 1000. */
void bench_fmt_us(char *buf, size_t len, double ns);

/* Rate with K / M suffix, then " unit" unless unit is "". */
void bench_fmt_rate(char *buf, size_t len, double r, const char *unit);

/* ---------------------------------------------------------------------- */
/* JSON report                                                            */

/*
 * When the environment variable CMESH_BENCH_JSON names a directory, the
 * process that printed the header (not a forked child) writes at exit
 * <dir>/<bench_name>.json: {"bench", "header": {cpu, kernel, cc, flags,
 * clock, cpus, cmesh, smoke, disturbed (if known), complete (the footer
 * was printed)}, "rows": [...], "targets": [...]}, and for each scenario
 * with a latency row <dir>/<bench_name>-<scenario>.dat for gnuplot: two
 * comment lines ("# <bench>\t<scenario>", "# percentile\t<row>\t..."),
 * then a line per percentile 0..100: the percentile, then each latency
 * row's value in ns, tab-separated. Unset or empty: every call below is a
 * no-op. A scenario of NULL or "" is the previous row's (a table's
 * continuation lines); names are recorded without leading or trailing
 * spaces. Only stderr is written to (a warning if a file cannot be).
 */

/*
 * A row of a table: {"scenario", "row", "n": r->n}, then if r has samples
 * (r->nlat), "unit": "ns", "samples", "p50", "p99", "p999" and
 * "quantiles" (r->q), and if `rate_unit` is not NULL, "rate" (and
 * "rate_min", "rate_max" when known) with "rate_unit" ("unit" too when r
 * has no samples).
 */
void bench_json_result(const char *scenario, const char *row,
		       const struct bench_result *r, const char *rate_unit);

/* A row that has only a rate: {"scenario", "row", "n", "unit", "rate"}. */
void bench_json_rate(const char *scenario, const char *row, uint64_t n,
		     double rate, const char *unit);

/*
 * The .dat of `scenario` also carries the latency rows of scenario `other`
 * (its reference, printed as a scenario of its own), in the order they
 * were recorded; `other` keeps its own .dat too.
 */
void bench_json_plot_with(const char *scenario, const char *other);

/* A target line: {"what", "value", "limit", "result": "PASS"|"FAIL"}. */
void bench_json_target(const char *what, const char *value, const char *limit,
		       bool pass);

/*
 * For bench_util.c's header and footer: the run's description, and how
 * it ended (disturbed: 1, 0, or -1 unknown; the report is "complete").
 */
void bench_json_header(const char *cpu, const char *kernel, const char *flags,
		       const char *clk, const char *cpus, const char *version,
		       bool smoke);
void bench_json_footer(int disturbed);

/* ---------------------------------------------------------------------- */
/* Options                                                                */

/* The options most benchmarks take (bench_opts_parse()). */
struct bench_opts {
	bool smoke, strict, two_cpus; /* two_cpus: set by the bench */
	int only;		      /* 0: every scenario, else 1..max */
	double scale;		      /* CMESH_BENCH_SCALE */
};

/*
 * Fills `o` from CMESH_BENCH_SMOKE, CMESH_BENCH_SCALE (named `name` in its
 * messages) and the arguments --smoke, --strict, --help (usage(stdout))
 * and --only 1..max_only; anything else: usage(stderr), exit(2).
 */
void bench_opts_parse(struct bench_opts *o, const char *name, int max_only,
		      void (*usage)(FILE *f), int argc, char **argv);

/* `full` (or `smoke` in smoke mode) times the scale, at least `min`. */
uint64_t bench_opts_scaled(const struct bench_opts *o, uint64_t full,
			   uint64_t smoke, uint64_t min);

/* Environment variable `name` is set, non-empty and not "0". */
bool bench_env_flag(const char *name);

/* Positive decimal count, else "bad <what>" and exit(2). */
uint64_t bench_parse_count(const char *what, const char *s);

/* *dst = environment variable `name` as a count, if set. */
void bench_env_count(uint64_t *dst, const char *name);

/*
 * --smoke, --strict, --help / -h (usage(stdout), exit(0)): true if `a`
 * was one of them.
 */
/*
 * "--only N" (N in 1..max) at argv[*i]: sets *only and steps *i past N.
 * False when argv[*i] is not that (the caller goes on looking).
 */
bool bench_only_arg(int argc, char **argv, int *i, int max, int *only);

bool bench_common_arg(const char *a, bool *smoke, bool *strict,
		      void (*usage)(FILE *f));

/* --iters N: true if argv[*i] was it (*i is then N's index, *iters N). */
bool bench_iters_arg(int argc, char **argv, int *i, uint64_t *iters);

/*
 * The iteration count: `given` (--iters) unless 0, else CMESH_BENCH_ITERS
 * if set, else `smoke_n` (smoke) or `full`.
 */
uint64_t bench_iters(uint64_t given, bool smoke, uint64_t full,
		     uint64_t smoke_n);

/* "<name>: bad argument '<a>'", usage(stderr) and exit(2). */
void bench_bad_arg(const char *a, void (*usage)(FILE *f));

/* ---------------------------------------------------------------------- */
/* Message and raw spin line                                              */

struct bench_msg {
	uint64_t seq;
	uint64_t stamp;
	uint8_t data[48];
};
_Static_assert(sizeof(struct bench_msg) == 64, "bench_msg is 64 bytes");

/*
 * Raw eventfd payload line (in a MAP_SHARED mapping): the message is
 * written before the eventfd write and read after the eventfd read (the
 * syscalls order it; the fences document it).
 */
struct bench_ev_line {
	alignas(128) uint8_t body[64];
};

/* Copies `m` into `l`, then writes 1 to the eventfd `efd`. */
void bench_ev_put(struct bench_ev_line *l, int efd, const struct bench_msg *m);

/* Reads the eventfd `efd` (blocking, EINTR retried), then copies `l` out. */
void bench_ev_get(struct bench_ev_line *l, int efd, struct bench_msg *out);

/*
 * Raw spin line: the 64-byte message, its first word (seq) doubling as the
 * ready flag. Writer: copy bytes 8..63, store seq (release). Reader: spin
 * on seq (acquire, pairs with that store), copy bytes 8..63. Ping-pong
 * order guarantees the writer never overwrites an unread line. 128-byte
 * alignment keeps the adjacent-line prefetcher off the other direction.
 */
struct bench_spin_line {
	alignas(128) _Atomic uint64_t seq;
	uint8_t body[56];
};

static inline void bench_spin_put(struct bench_spin_line *l,
				  const struct bench_msg *m)
{
	memcpy(l->body, (const uint8_t *)m + 8, sizeof(l->body));
	/* Pairs with the acquire load in bench_spin_get(). */
	atomic_store_explicit(&l->seq, m->seq, memory_order_release);
}

static inline void bench_spin_get(struct bench_spin_line *l, uint64_t seq,
				  struct bench_msg *out)
{
	/* Pairs with the release store in bench_spin_put(). */
	while (atomic_load_explicit(&l->seq, memory_order_acquire) != seq)
		ck_pr_stall();
	out->seq = seq;
	memcpy((uint8_t *)out + 8, l->body, sizeof(l->body));
}

/* Echo of round trip `seq` stamped t0, else a message and see above. */
void bench_check_echo(const struct bench_msg *r, uint64_t seq, uint64_t t0);

/* Stream message `want` arrived in order, else a message and see above. */
void bench_check_seq(uint64_t got, uint64_t want);

/* ---------------------------------------------------------------------- */
/* Round trips                                                            */

/* One side of a benchmark, with a context of the program's. */
typedef void bench_side_fn(void *arg);

/*
 * Pinger: CTX has base (first seq), warm (unrecorded round trips), n
 * (recorded ones), samples (n ticks written) and elapsed (ticks of the
 * recorded part, added to). PUT sends m, GET receives the echo into r;
 * both may use c (the context) and seq.
 */
#define BENCH_RTT_PING(name, CTX, PUT, GET)                                    \
	static void name(void *arg)                                            \
	{                                                                      \
		CTX *c = arg;                                                  \
		struct bench_msg m, r;                                         \
		uint64_t n = c->warm + c->n, start = 0;                        \
                                                                               \
		memset(&m, 0x5a, sizeof(m));                                   \
		for (uint64_t i = 0; i < n; i++) {                             \
			uint64_t seq = c->base + i, t0, t1;                    \
                                                                               \
			if (i == c->warm)                                      \
				start = bench_now_ticks();                     \
			t0 = bench_now_ticks();                                \
			m.seq = seq;                                           \
			m.stamp = t0;                                          \
			PUT;                                                   \
			GET;                                                   \
			t1 = bench_now_ticks();                                \
			bench_check_echo(&r, seq, t0);                         \
			if (i >= c->warm)                                      \
				c->samples[i - c->warm] = t1 - t0;             \
		}                                                              \
		c->elapsed += bench_now_ticks() - start;                       \
	}

/*
 * Ponger: GET receives message `seq` into r, PUT echoes r; DECL declares
 * r (BENCH_RTT_PONG: a struct bench_msg).
 */
#define BENCH_RTT_PONG(name, CTX, GET, PUT)                                    \
	BENCH_RTT_PONG_BUF(name, CTX, struct bench_msg r, GET, PUT)
#define BENCH_RTT_PONG_BUF(name, CTX, DECL, GET, PUT)                          \
	static void name(void *arg)                                            \
	{                                                                      \
		CTX *c = arg;                                                  \
		DECL;                                                          \
		uint64_t n = c->warm + c->n;                                   \
                                                                               \
		for (uint64_t i = 0; i < n; i++) {                             \
			uint64_t seq = c->base + i;                            \
                                                                               \
			(void)seq;                                             \
			GET;                                                   \
			PUT;                                                   \
		}                                                              \
	}

#endif /* CMESH_BENCH_UTIL_H */
