/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_large.c - messages larger than a ring record, across two
 * processes, at default settings (64 KiB rings): bytes per second beside
 * a raw shared-memory ring that holds them.
 *
 * One-way streams, child (CPU 1) -> parent (CPU 0), of 64 KiB and of
 * 1 MiB messages:
 *   raw    an SPSC byte ring of 8 MiB in a MAP_SHARED mapping made before
 *          fork: records of an 8-byte length and the payload (64-byte
 *          aligned, a skip to the start at the wrap); the producer copies
 *          a message in and publishes it with a release store of the
 *          tail, the consumer acquires it, copies it out and gives the
 *          space back with a release store of the head; each side spins
 *          when it has to wait.
 *   cmesh  cmesh_node_join_socket() with default options; the child sends
 *          a 16-byte struct with the payload as trailing bytes, the parent
 *          receives into one buffer. Such a message does not fit a 64 KiB
 *          ring's record: the first goes out of line and brings the lane's
 *          bulk arena, the next ones go through it (src/lane_bulk.c).
 * Rows alternate over repetitions; the rate is the median over them,
 * bytes per second of payload at the consumer (from its first message
 * to its last). Target: cmesh >= 0.5x raw, for each size.
 *
 * Usage: bench_large [--smoke] [--strict] [--only 1|2] (1: 64 KiB, 2: 1 MiB)
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
#include <unistd.h>

#define CPU_CONSUMER 0
#define CPU_PRODUCER 1
#define RAW_BYTES (8u << 20)
#define TARGET 0.5
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

#define NSIZES 2
static const uint32_t sizes[NSIZES] = { 64u << 10, 1u << 20 };
static const char *const names[NSIZES] = { "1 64KiB", "2 1MiB" };

/* ---- raw ring ---- */

static uint64_t rec_span(uint32_t len)
{
	return (8u + (uint64_t)len + 63u) & ~63ull;
}

static void raw_put(uint64_t *tail, const unsigned char *buf, uint32_t len)
{
	uint64_t span = rec_span(len), off = *tail % RAW_BYTES;
	uint64_t skip = off + span > RAW_BYTES ? RAW_BYTES - off : 0;
	uint64_t len64 = len;

	/* Pairs with the consumer's release store of head. */
	while (*tail + skip + span -
		       atomic_load_explicit(&sh->head, memory_order_acquire) >
	       RAW_BYTES)
		ck_pr_stall();
	if (skip) {
		uint64_t mark = UINT64_MAX; /* "skip to the start" */

		memcpy(sh->ring + off, &mark, 8);
		off = 0;
	}
	memcpy(sh->ring + off, &len64, 8);
	memcpy(sh->ring + off + 8, buf, len);
	*tail += skip + span;
	/* Pairs with the consumer's acquire load. */
	atomic_store_explicit(&sh->tail, *tail, memory_order_release);
}

static void raw_get(uint64_t *head, unsigned char *buf, uint32_t want)
{
	uint64_t off, len;

	for (;;) {
		/* Pairs with the producer's release store of tail. */
		while (atomic_load_explicit(&sh->tail, memory_order_acquire) ==
		       *head)
			ck_pr_stall();
		off = *head % RAW_BYTES;
		memcpy(&len, sh->ring + off, 8);
		if (len != UINT64_MAX)
			break;
		*head += RAW_BYTES - off;
	}
	if (len != want)
		bench_die("raw ring: wrong length", EPROTO);
	memcpy(buf, sh->ring + off + 8, len);
	*head += rec_span((uint32_t)len);
	/* Pairs with the producer's acquire load. */
	atomic_store_explicit(&sh->head, *head, memory_order_release);
}

/* ---- the two processes ---- */

struct job {
	int impl; /* 0 raw, 1 cmesh */
	uint32_t size;
	uint64_t n;
};

static uint64_t raw_tail, raw_head;

static _Noreturn void child_main(int sock, const struct job *jobs,
				 uint32_t njobs, bool pin)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	unsigned char *buf = malloc(1u << 20);
	int rc;

	bench_child_enter(getppid());
	if (pin)
		bench_pin_self(CPU_PRODUCER);
	if (!buf)
		bench_die("child: malloc", ENOMEM);
	memset(buf, 0x5a, 1u << 20);
	rc = cmesh_node_join_socket(sock, &hdr_type, &hdr_type, NULL, &node,
				    &tx, &rx);
	if (rc < 0)
		bench_die("child: cmesh_node_join_socket", rc);
	cmesh_node_free(node);
	for (uint32_t j = 0; j < njobs; j++) {
		const struct job *jb = &jobs[j];

		/* Pairs with the parent's release store. */
		while (atomic_load_explicit(&sh->go, memory_order_acquire) <= j)
			ck_pr_stall();
		for (uint64_t i = 0; i < jb->n; i++) {
			struct hdr h = { i, jb->size };

			if (jb->impl == 0) {
				raw_put(&raw_tail, buf, jb->size);
				continue;
			}
			rc = cmesh_sender_send(tx, &h, buf, jb->size);
			if (rc < 0)
				bench_die("child: cmesh_sender_send", rc);
		}
		/* Pairs with the parent's acquire load. */
		while (atomic_load_explicit(&sh->done, memory_order_acquire) <=
		       j)
			ck_pr_stall();
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	free(buf);
	_exit(0);
}

/* Parent: consumes job `j`, returns its payload bytes per second. */
static double consume(uint32_t j, const struct job *jb, cmesh_receiver *rx,
		      unsigned char *buf)
{
	uint64_t t0 = 0;

	atomic_store_explicit(&sh->go, j + 1, memory_order_release);
	for (uint64_t i = 0; i < jb->n; i++) {
		if (jb->impl == 0) {
			raw_get(&raw_head, buf, jb->size);
		} else {
			struct hdr h;
			int rc = cmesh_receiver_recv(rx, &h, buf, 1u << 20);

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
	fprintf(f, "usage: bench_large [--smoke] [--strict] [--only 1|2]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

int main(int argc, char **argv)
{
	struct bench_opts cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	struct job jobs[2 * NSIZES * 16];
	double rates[NSIZES][2][16];
	uint32_t njobs = 0, reps;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	unsigned char *buf;
	uint64_t t0;
	int sock, rc, fails = 0;
	pid_t pid;

	bench_name = "bench_large";
	bench_die_hook = bench_child_die_hook;
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_opts_parse(&cfg, "bench_large", NSIZES, usage, argc, argv);
	reps = cfg.smoke ? 1 : 7;
	for (uint32_t r = 0; r < reps; r++)
		for (int k = 0; k < NSIZES; k++) {
			uint64_t bytes = bench_opts_scaled(
				&cfg, 512ull << 20, 8ull << 20, 4ull << 20);

			if (cfg.only && cfg.only != k + 1)
				continue;
			for (int m = 0; m < 2; m++) /* order alternates */
				jobs[njobs++] =
					(struct job){ (int)(r % 2 ? 1 - m : m),
						      sizes[k],
						      bytes / sizes[k] };
		}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		bench_die("mmap", errno);
	buf = malloc(1u << 20);
	if (!buf)
		bench_die("malloc", ENOMEM);
	bench_child_signals("bench_large");
	cfg.two_cpus = bench_cpus_usable(CPU_CONSUMER, CPU_PRODUCER);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	pid = bench_fork_pair(&sock);
	if (pid == 0)
		child_main(sock, jobs, njobs, cfg.two_cpus);
	if (cfg.two_cpus)
		bench_pin_self(CPU_CONSUMER);
	rc = cmesh_node_join_socket(sock, &hdr_type, &hdr_type, NULL, &node,
				    &tx, &rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
	cmesh_node_free(node);
	bench_print_header_procs(CPU_CONSUMER, CPU_PRODUCER, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);
	{
		uint32_t seen[NSIZES][2] = { { 0 } };

		for (uint32_t j = 0; j < njobs; j++) {
			int k = jobs[j].size == sizes[0] ? 0 : 1;
			int m = jobs[j].impl;

			rates[k][m][seen[k][m]++] =
				consume(j, &jobs[j], rx, buf);
		}
	}
	alarm(0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	bench_child_reap(0);
	/* After the reap: the child's time is ours, not "other processes". */
	bench_cpu_usage_read(&usage1);

	printf("%-10s %-6s %10s %12s %12s %12s %7s %7s  %s\n", "size", "impl",
	       "msgs/rep", "median", "min", "max", "ratio", "target", "result");
	for (int k = 0; k < NSIZES; k++) {
		struct bench_result res[2];
		char lim[16], val[16], what[64];
		double ratio;
		bool ok;

		if (cfg.only && cfg.only != k + 1) {
			printf("%-10s SKIP (--only)\n", names[k]);
			continue;
		}
		for (int m = 0; m < 2; m++) {
			char med[32], lo[32], hi[32];

			memset(&res[m], 0, sizeof(res[m]));
			bench_fill_rates(&res[m], rates[k][m], reps);
			bench_fmt_rate(med, sizeof(med), res[m].rate, "B/s");
			bench_fmt_rate(lo, sizeof(lo), res[m].rate_lo, "B/s");
			bench_fmt_rate(hi, sizeof(hi), res[m].rate_hi, "B/s");
			ratio = res[m].rate / res[0].rate;
			ok = ratio >= TARGET;
			printf("%-10s %-6s %10" PRIu64 " %12s %12s %12s %7s "
			       "%7s  %s\n",
			       m ? "" : names[k], m ? "cmesh" : "raw",
			       (uint64_t)(bench_opts_scaled(&cfg, 512ull << 20,
							    8ull << 20,
							    4ull << 20) /
					  sizes[k]),
			       med, lo, hi,
			       m ? (snprintf(val, sizeof(val), "%.2fx", ratio),
				    val) :
				   "-",
			       m ? ">=0.5x" : "ref",
			       m ? (ok ? "PASS" : "FAIL") : "");
			bench_json_rate(names[k], m ? "cmesh" : "raw", reps,
					res[m].rate, "B/s");
		}
		ratio = res[1].rate / res[0].rate;
		ok = ratio >= TARGET;
		snprintf(val, sizeof(val), "%.2fx", ratio);
		snprintf(lim, sizeof(lim), ">=%.1fx", TARGET);
		snprintf(what, sizeof(what), "%s: cmesh / raw bytes/s",
			 names[k]);
		bench_json_target(what, val, lim, ok);
		fails += !ok;
	}
	printf("# payload bytes per second at the consumer, median of %u "
	       "repetitions (rows alternate); raw: an 8 MiB SPSC byte ring; "
	       "cmesh: default options (64 KiB rings)\n",
	       reps);
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	free(buf);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
