/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_large.c - large messages across two processes: messages
 * larger than a ring record at default settings (64 KiB rings), and 64 KiB
 * messages in rings that hold them (1 MiB rings): bytes per second beside
 * a raw shared-memory ring that holds them.
 *
 * One-way streams, child (CPU 1) -> parent (CPU 0):
 *   1 64KiB            64 KiB messages, cmesh over link 0
 *   2 1MiB             1 MiB messages, cmesh over link 0
 *   3 64KiB/1MiB-ring  64 KiB messages, cmesh over link 1
 * Rows:
 *   raw    an SPSC byte ring of 8 MiB in a MAP_SHARED mapping made before
 *          fork: records of an 8-byte length and the payload (64-byte
 *          aligned, a skip to the start at the wrap); the producer copies
 *          a message in and publishes it with a release store of the
 *          tail, the consumer acquires it, copies it out and gives the
 *          space back with a release store of the head; each side spins
 *          when it has to wait.
 *   raw-ro (3 only, info) the same ring with its data and tail in a memfd
 *          the child maps read-write and the parent read-only, and its
 *          head in a second memfd the parent maps read-write and the
 *          child read-only (as cmesh's arenas are shared): both memfds
 *          are made before fork, each side maps them itself.
 *   cmesh  the child sends a 16-byte struct with the payload as trailing
 *          bytes, the parent receives into one buffer, over one of two
 *          links joined with cmesh_node_join_socket() over two socketpairs
 *          made before fork:
 *          link 0: default options (64 KiB rings). Such a message does
 *          not fit a ring's record: the first goes out of line and brings
 *          the lane's bulk arena, the next ones go through it
 *          (src/lane_bulk.c).
 *          link 1: cmesh_node_opts.ring_size 1 MiB on both sides: a
 *          64 KiB message is one bulk record of the ring, its payload
 *          contiguous in the ring's bulk lines.
 * Rows alternate over repetitions (their order reverses on every other
 * one); the rate is the median over them, bytes per second of payload at
 * the consumer (from its first message to its last). Targets: cmesh >=
 * 0.5x raw (1, 2); cmesh >= 0.6x raw and >= 0.75x raw-ro (3).
 *
 * Usage: bench_large [--smoke] [--strict] [--only 1|2|3] (1: 64 KiB,
 * 2: 1 MiB, 3: 64 KiB in 1 MiB rings)
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F. Exit status: 0 unless a call fails (2), a run
 * hangs (3), or --strict without --smoke and a target FAILs (1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include <ck_pr.h>

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define CPU_CONSUMER 0
#define CPU_PRODUCER 1
#define RAW_BYTES (8u << 20)
#define MSG_MAX (1u << 20)
#define TARGET_RO 0.75 /* cmesh / raw-ro, scenario 3 */
#define MAX_REPS 16
#define WATCHDOG_FULL_S 300u
#define WATCHDOG_SMOKE_S 60u

struct hdr {
	uint64_t seq, len;
};
CMESH_TYPE_DEFINE_PLAIN(hdr_type, struct hdr);

/* Shared before fork: the raw ring and its two indices, and a barrier. */
struct shared {
	alignas(64) _Atomic uint64_t tail;
	alignas(64) _Atomic uint64_t head;
	alignas(64) _Atomic uint64_t go; /* the job number the child may run */
	alignas(64) _Atomic uint64_t done;
	alignas(64) unsigned char ring[RAW_BYTES];
};

static struct shared *sh;

/*
 * raw-ro: the producer's memfd (the child writes the data and the tail,
 * the parent only reads them) ...
 */
struct ro_prod {
	alignas(64) _Atomic uint64_t tail;
	alignas(64) unsigned char ring[RAW_BYTES];
};

/* ... and the consumer's (the parent writes the head, the child reads it). */
struct ro_cons {
	alignas(64) _Atomic uint64_t head;
};

static int ro_fd[2] = { -1, -1 }; /* [0] struct ro_prod, [1] ro_cons */

/* The rows; a raw ring's index in rings[] is its impl. */
enum {
	IMPL_RAW,
	IMPL_RAW_RO,
	IMPL_CMESH,
	NIMPL
};
static const char *const impl_names[NIMPL] = { "raw", "raw-ro", "cmesh" };

/* cmesh's links: cmesh_node_opts.ring_size of each (0: the default). */
#define NLINKS 2
static const uint32_t link_ring_size[NLINKS] = { 0, 1u << 20 };

#define NSCEN 3
static const struct scen {
	const char *name;
	uint32_t size; /* payload bytes of a message */
	int link;      /* the link of its cmesh row */
	bool ro;       /* has a raw-ro row */
	double target; /* cmesh / raw */
} scens[NSCEN] = {
	{ "1 64KiB", 64u << 10, 0, false, 0.5 },
	{ "2 1MiB", 1u << 20, 0, false, 0.5 },
	{ "3 64KiB/1MiB-ring", 64u << 10, 1, true, 0.6 },
};

/* ---- raw ring ---- */

/*
 * A raw ring as this process sees it: rings[IMPL_RAW] in `sh`,
 * rings[IMPL_RAW_RO] in the raw-ro memfds (raw_ro_map()). pos is this
 * side's own index (producer: tail, consumer: head), never read back from
 * shared memory.
 */
struct raw_ring {
	unsigned char *data;
	_Atomic uint64_t *tail, *head;
	uint64_t pos;
};

static struct raw_ring rings[2];

static uint64_t rec_span(uint32_t len)
{
	return (8u + (uint64_t)len + 63u) & ~63ull;
}

static void raw_put(struct raw_ring *r, const unsigned char *buf, uint32_t len)
{
	uint64_t span = rec_span(len), off = r->pos % RAW_BYTES;
	uint64_t skip = off + span > RAW_BYTES ? RAW_BYTES - off : 0;
	uint64_t len64 = len;

	/* Pairs with the consumer's release store of head. */
	while (r->pos + skip + span -
		       atomic_load_explicit(r->head, memory_order_acquire) >
	       RAW_BYTES)
		ck_pr_stall();
	if (skip) {
		uint64_t mark = UINT64_MAX; /* "skip to the start" */

		memcpy(r->data + off, &mark, 8);
		off = 0;
	}
	memcpy(r->data + off, &len64, 8);
	memcpy(r->data + off + 8, buf, len);
	r->pos += skip + span;
	/* Pairs with the consumer's acquire load. */
	atomic_store_explicit(r->tail, r->pos, memory_order_release);
}

static void raw_get(struct raw_ring *r, unsigned char *buf, uint32_t want)
{
	uint64_t off, len;

	for (;;) {
		/* Pairs with the producer's release store of tail. */
		while (atomic_load_explicit(r->tail, memory_order_acquire) ==
		       r->pos)
			ck_pr_stall();
		off = r->pos % RAW_BYTES;
		memcpy(&len, r->data + off, 8);
		if (len != UINT64_MAX)
			break;
		r->pos += RAW_BYTES - off;
	}
	if (len != want)
		bench_die("raw ring: wrong length", EPROTO);
	memcpy(buf, r->data + off + 8, len);
	r->pos += rec_span((uint32_t)len);
	/* Pairs with the producer's acquire load. */
	atomic_store_explicit(r->head, r->pos, memory_order_release);
}

/*
 * After fork: maps the raw-ro memfds, its own read-write and the other
 * side's read-only, sets rings[IMPL_RAW_RO] and closes the fds.
 */
static void raw_ro_map(bool producer)
{
	int own = PROT_READ | PROT_WRITE;
	struct ro_prod *p;
	struct ro_cons *c;

	p = mmap(NULL, sizeof(*p), producer ? own : PROT_READ, MAP_SHARED,
		 ro_fd[0], 0);
	c = mmap(NULL, sizeof(*c), producer ? PROT_READ : own, MAP_SHARED,
		 ro_fd[1], 0);
	if (p == MAP_FAILED || c == MAP_FAILED)
		bench_die("mmap raw-ro", errno);
	close(ro_fd[0]);
	close(ro_fd[1]);
	rings[IMPL_RAW_RO] =
		(struct raw_ring){ p->ring, &p->tail, &c->head, 0 };
}

/* ---- cmesh links ---- */

/* Joins link `l` over `sock` (taken), either side; dies on failure. */
static void link_join(int l, int sock, cmesh_sender **tx, cmesh_receiver **rx)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	int rc;

	o.ring_size = link_ring_size[l];
	rc = cmesh_node_join_socket(sock, &hdr_type, &hdr_type, &o, &node, tx,
				    rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
	cmesh_node_free(node);
}

/* ---- the two processes ---- */

struct job {
	int scen; /* index in scens[] */
	int impl; /* IMPL_* */
	int link; /* IMPL_CMESH: the link it goes over; else -1 */
	uint32_t size;
	uint64_t n;
};

static _Noreturn void child_main(const int *sock, const struct job *jobs,
				 uint32_t njobs, bool pin)
{
	cmesh_sender *tx[NLINKS];
	cmesh_receiver *rx[NLINKS];
	unsigned char *buf = malloc(MSG_MAX);
	int rc;

	bench_child_enter(getppid());
	if (pin)
		bench_pin_self(CPU_PRODUCER);
	if (!buf)
		bench_die("malloc", ENOMEM);
	memset(buf, 0x5a, MSG_MAX);
	raw_ro_map(true);
	for (int l = 0; l < NLINKS; l++) /* in the parent's order */
		link_join(l, sock[l], &tx[l], &rx[l]);
	for (uint32_t j = 0; j < njobs; j++) {
		const struct job *jb = &jobs[j];

		/* Pairs with the parent's release store. */
		while (atomic_load_explicit(&sh->go, memory_order_acquire) <= j)
			ck_pr_stall();
		for (uint64_t i = 0; i < jb->n; i++) {
			struct hdr h = { i, jb->size };

			if (jb->impl != IMPL_CMESH) {
				raw_put(&rings[jb->impl], buf, jb->size);
				continue;
			}
			rc = cmesh_sender_send(tx[jb->link], &h, buf, jb->size);
			if (rc < 0)
				bench_die("cmesh_sender_send", rc);
		}
		/* Pairs with the parent's acquire load. */
		while (atomic_load_explicit(&sh->done, memory_order_acquire) <=
		       j)
			ck_pr_stall();
	}
	for (int l = 0; l < NLINKS; l++) {
		cmesh_sender_free(tx[l]);
		cmesh_receiver_free(rx[l]);
	}
	free(buf);
	_exit(0);
}

/* Parent: consumes job `j`, returns its payload bytes per second. */
static double consume(uint32_t j, const struct job *jb,
		      cmesh_receiver *const *rx, unsigned char *buf)
{
	uint64_t t0 = 0;

	atomic_store_explicit(&sh->go, j + 1, memory_order_release);
	for (uint64_t i = 0; i < jb->n; i++) {
		if (jb->impl != IMPL_CMESH) {
			raw_get(&rings[jb->impl], buf, jb->size);
		} else {
			struct hdr h;
			int rc = cmesh_receiver_recv(rx[jb->link], &h, buf,
						     MSG_MAX);

			if (rc != (int)jb->size || h.seq != i)
				bench_die("cmesh_receiver_recv",
					  rc < 0 ? rc : EPROTO);
		}
		if (i == 0)
			t0 = bench_now_ticks();
	}
	atomic_store_explicit(&sh->done, j + 1, memory_order_release);
	return bench_rate((jb->n - 1) * jb->size, bench_now_ticks() - t0);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_large [--smoke] [--strict] [--only 1|2|3]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

/* Makes the raw-ro memfds (before fork): zero-filled, so both at 0. */
static void raw_ro_create(void)
{
	static const off_t len[2] = { sizeof(struct ro_prod),
				      sizeof(struct ro_cons) };

	for (int i = 0; i < 2; i++) {
		ro_fd[i] = memfd_create("bench-large-raw-ro", MFD_CLOEXEC);
		if (ro_fd[i] < 0 || ftruncate(ro_fd[i], len[i]) != 0)
			bench_die("memfd raw-ro", errno);
	}
}

/*
 * A table row (n messages per repetition) and its JSON row of scenario
 * `s`, impl `m`, from its repetitions' rates; its ratio to `ref` (the raw
 * row) unless it is the raw row.
 */
static void print_row(const struct scen *s, int m, uint64_t n, uint32_t reps,
		      const struct bench_result *r,
		      const struct bench_result *ref)
{
	char med[32], lo[32], hi[32], val[16] = "-", lim[16];
	const char *tgt = "ref", *result = "";
	double ratio = r->rate / ref->rate;

	bench_fmt_rate(med, sizeof(med), r->rate, "B/s");
	bench_fmt_rate(lo, sizeof(lo), r->rate_lo, "B/s");
	bench_fmt_rate(hi, sizeof(hi), r->rate_hi, "B/s");
	if (m != IMPL_RAW)
		snprintf(val, sizeof(val), "%.2fx", ratio);
	if (m == IMPL_RAW_RO) {
		tgt = "info";
	} else if (m == IMPL_CMESH) {
		snprintf(lim, sizeof(lim), ">=%.2gx", s->target);
		tgt = lim;
		result = ratio >= s->target ? "PASS" : "FAIL";
	}
	printf("%-17s %-6s %10" PRIu64 " %12s %12s %12s %7s %7s  %s\n",
	       m == IMPL_RAW ? s->name : "", impl_names[m], n, med, lo, hi, val,
	       tgt, result);
	bench_json_rate(s->name, impl_names[m], reps, r->rate, "B/s");
}

/* A target line: cmesh / `ref` of scenario `s`; true if it passes. */
static bool check_target(const struct scen *s, const char *ref, double ratio,
			 double target)
{
	char lim[16], val[16], what[64];
	bool ok = ratio >= target;

	snprintf(val, sizeof(val), "%.2fx", ratio);
	snprintf(lim, sizeof(lim), ">=%.2gx", target);
	snprintf(what, sizeof(what), "%s: cmesh / %s bytes/s", s->name, ref);
	bench_json_target(what, val, lim, ok);
	return ok;
}

int main(int argc, char **argv)
{
	struct bench_opts cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	struct job jobs[NSCEN * NIMPL * MAX_REPS];
	double rates[NSCEN][NIMPL][MAX_REPS];
	uint32_t njobs = 0, reps;
	uint64_t bytes;
	cmesh_sender *tx[NLINKS];
	cmesh_receiver *rx[NLINKS];
	unsigned char *buf;
	uint64_t t0;
	int sock[NLINKS], sv[2], fails = 0;
	pid_t pid;

	bench_name = "bench_large";
	bench_die_hook = bench_child_die_hook;
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_opts_parse(&cfg, "bench_large", NSCEN, usage, argc, argv);
	reps = cfg.smoke ? 1 : 7;
	bytes = bench_opts_scaled(&cfg, 512ull << 20, 8ull << 20, 4ull << 20);
	for (uint32_t r = 0; r < reps; r++)
		for (int k = 0; k < NSCEN; k++) {
			const struct scen *s = &scens[k];
			int order[NIMPL], nrow = 0;

			if (cfg.only && cfg.only != k + 1)
				continue;
			for (int m = 0; m < NIMPL; m++)
				if (m != IMPL_RAW_RO || s->ro)
					order[nrow++] = m;
			for (int i = 0; i < nrow; i++) { /* order alternates */
				int m = order[r % 2 ? nrow - 1 - i : i];

				jobs[njobs++] = (struct job){
					k, m, m == IMPL_CMESH ? s->link : -1,
					s->size, bytes / s->size
				};
			}
		}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		bench_die("mmap", errno);
	rings[IMPL_RAW] =
		(struct raw_ring){ sh->ring, &sh->tail, &sh->head, 0 };
	raw_ro_create();
	buf = malloc(MSG_MAX);
	if (!buf)
		bench_die("malloc", ENOMEM);
	bench_child_signals("bench_large");
	cfg.two_cpus = bench_cpus_usable(CPU_CONSUMER, CPU_PRODUCER);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	/* Link 1's pair; bench_fork_pair() makes link 0's. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		bench_die("socketpair", errno);
	pid = bench_fork_pair(&sock[0]);
	close(sv[pid == 0 ? 0 : 1]);
	sock[1] = sv[pid == 0 ? 1 : 0];
	if (pid == 0)
		child_main(sock, jobs, njobs, cfg.two_cpus);
	if (cfg.two_cpus)
		bench_pin_self(CPU_CONSUMER);
	raw_ro_map(false);
	for (int l = 0; l < NLINKS; l++)
		link_join(l, sock[l], &tx[l], &rx[l]);
	bench_print_header_procs(CPU_CONSUMER, CPU_PRODUCER, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);
	{
		uint32_t seen[NSCEN][NIMPL] = { { 0 } };

		for (uint32_t j = 0; j < njobs; j++) {
			int k = jobs[j].scen, m = jobs[j].impl;

			rates[k][m][seen[k][m]++] =
				consume(j, &jobs[j], rx, buf);
		}
	}
	alarm(0);
	for (int l = 0; l < NLINKS; l++) {
		cmesh_sender_free(tx[l]);
		cmesh_receiver_free(rx[l]);
	}
	bench_child_reap(0);
	/* After the reap: the child's time is ours, not "other processes". */
	bench_cpu_usage_read(&usage1);

	printf("%-17s %-6s %10s %12s %12s %12s %7s %7s  %s\n", "scenario",
	       "impl", "msgs/rep", "median", "min", "max", "ratio", "target",
	       "result");
	for (int k = 0; k < NSCEN; k++) {
		const struct scen *s = &scens[k];
		struct bench_result res[NIMPL];
		uint64_t n = bytes / s->size;
		char lim[16];
		double ratio;
		bool ok;

		if (cfg.only && cfg.only != k + 1) {
			printf("%-17s SKIP (--only)\n", s->name);
			continue;
		}
		for (int m = 0; m < NIMPL; m++) {
			if (m == IMPL_RAW_RO && !s->ro)
				continue;
			memset(&res[m], 0, sizeof(res[m]));
			bench_fill_rates(&res[m], rates[k][m], reps);
			print_row(s, m, n, reps, &res[m], &res[IMPL_RAW]);
		}
		ratio = res[IMPL_CMESH].rate / res[IMPL_RAW].rate;
		fails += !check_target(s, "raw", ratio, s->target);
		if (!s->ro)
			continue;
		ratio = res[IMPL_CMESH].rate / res[IMPL_RAW_RO].rate;
		ok = check_target(s, "raw-ro", ratio, TARGET_RO);
		fails += !ok;
		snprintf(lim, sizeof(lim), ">=%.2gx", TARGET_RO);
		printf("%-17s %-6s %10s %12s %12s %12s %6.2fx %7s  %s\n", "",
		       "cm/ro", "", "", "", "", ratio, lim,
		       ok ? "PASS" : "FAIL");
	}
	printf("# payload bytes per second at the consumer, median of %u "
	       "repetitions (rows alternate); raw: an 8 MiB SPSC byte ring; "
	       "raw-ro: the same in two memfds, each side's part read-only "
	       "to the other; cmesh: default options (64 KiB rings) in 1 "
	       "and 2, 1 MiB rings in 3; cm/ro: cmesh / raw-ro\n",
	       reps);
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	free(buf);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
