/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_pipe.c - pipe throughput (include/cmesh/pipe.h) against the
 * raw mechanism for the same job, a single-producer single-consumer byte
 * ring, in one process and across two, in the same run (issue 11: "pipe
 * throughput with 64 KiB writes >= 50% of the raw ring's bytes per
 * second").
 *
 * Every row streams the same bytes: the writer (this process's main
 * thread, CPU 0) writes a rep's bytes (256 MiB; --smoke 8 MiB) in writes
 * of 64 KiB from one 64 KiB source buffer whose first 8 bytes it stamps
 * with the write's index in the row's stream (the rest a fixed pattern);
 * the reader (a thread, or a fork()ed child, CPU 1) reads into a 64 KiB
 * buffer. No checksum: of every read the reader checks its first, middle
 * and last byte, and the 8-byte stamp of any write that begins inside it,
 * against the stream's expected bytes (wrong: exit 2).
 *
 *   1 in-process  a reader thread pinned to CPU 1.
 *                 raw (ref): an SPSC byte ring of 1 MiB (private anonymous
 *                 mapping), tail and head indices each alone in 128
 *                 bytes; each side keeps a cached copy of the other's
 *                 index and reloads it (acquire) only when the cache says
 *                 full / empty. The producer waits (spins) until 64 KiB
 *                 are free, copies the 64 KiB in and publishes the tail
 *                 (release); the consumer spins until the tail moves,
 *                 copies out what is there (at most 64 KiB, its buffer)
 *                 and publishes the head (release). Spins yield the CPU
 *                 only after ~1M pauses (at once if CPUs 0 and 1 are not
 *                 both usable).
 *                 pipe: one cmesh_pipe_new() for the whole run; the
 *                 reader end goes to the thread once, in a message
 *                 (CMESH_FIELD_PIPE_READER, cmesh_pipe_reader_to_port /
 *                 _from_port); cmesh_pipe_write(w, buf, 64 KiB, NULL)
 *                 against cmesh_pipe_read(r, buf, 64 KiB, NULL), every
 *                 wait the library's default (spin CMESH_SPIN_NS, then
 *                 sleep). Target: pipe bytes/s >= 0.5x raw.
 *                 chan (info): the pipe's data path alone, no pipe: a
 *                 cmesh_channel (default options, as the pipe's) of an
 *                 8-byte struct + 8 KiB trailing bytes (CMESH_PIPE_CHUNK,
 *                 the pipe's chunk), each 64 KiB write sent as 8 messages,
 *                 each received with cmesh_receiver_recv() straight into
 *                 the reader's buffer. The pipe's window, but as a
 *                 counter in shared memory instead of credit messages:
 *                 the reader publishes (release) its count every 4
 *                 messages (half the window), the writer spins while 8
 *                 messages (64 KiB) are unread. The pipe row's cost over
 *                 this one is the pipe's own: credit messages, its extra
 *                 copy (chunk -> reader's chunk buffer -> caller).
 *   2 two procs   a fork()ed child pinned to CPU 1, joined with
 *                 cmesh_node_join_socket() over a SOCK_SEQPACKET
 *                 socketpair made before fork (peer_pid set). The parent
 *                 writes, the child reads.
 *                 raw (ref): the same ring in a memfd (MAP_SHARED, mapped
 *                 before fork), read-write in both processes (the
 *                 consumer writes its head index in it).
 *                 pipe: the reader end sent once to the child in a
 *                 message on the link's down channel (so its two
 *                 channels become cross-process lanes), as in row 1.
 *                 Target: pipe bytes/s >= 0.5x raw.
 *                 chan (info): as in row 1, the channel's receiver sent
 *                 to the child, the window counter in the memfd.
 *
 * Timing: the writer's clock. For each rep the writer sends a command
 * (the control channel: in-process a cmesh channel, across processes the
 * link's down channel); the reader answers "ready" (up channel) and
 * starts reading; on "ready" the writer takes t0, writes the rep's bytes,
 * and takes t1 when the reader's "done" (every byte read and checked)
 * arrives: bytes/s = bytes / (t1 - t0), one control message's latency
 * included (well under 0.1% of a rep). A row's figure is the median over
 * 15 reps (smoke: 3); the rows of both scenarios alternate within each
 * rep, in reverse order every other rep, after one unrecorded warm-up rep
 * (a quarter of a rep) each. The idle reader (thread or child) sleeps in
 * its control channel's receive. Compare rows of one run only.
 *
 * On the 2-vCPU AMD EPYC (family 26) this was written on: raw ~27-31
 * GB/s in both scenarios; pipe ~4-5 GB/s in one process (0.14-0.16x) and
 * ~2.7-4 GB/s across two (0.09-0.13x; the two-process rows move between
 * runs, raw does not); chan a little above the pipe: the channel's cost
 * per 8 KiB message bounds the pipe. In one process (perf) much of it is
 * the heap trail of every chunk: malloc by the writer, free by the
 * reader, contention on glibc's arena lock (about one futex call per
 * chunk); across two, copying each chunk into and out of the shared
 * ring's 64-byte slots (56 data bytes each, staged on the stack first).
 *
 * Usage: bench_pipe [--smoke] [--strict] [--only 1|2]
 * --smoke: small counts (well under 5 s), for CI; the targets are printed
 * but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies the bytes per rep, e.g. 0.2 or 3);
 * the library's own (CMESH_RING_SIZE, CMESH_SPIN_NS...) apply to the
 * pipe and chan rows.
 * Exit status: 0 unless a call fails or a byte is wrong (2), a run hangs
 * (3: watchdog), or --strict without --smoke and a target FAILs (1). The
 * child dies with the parent (PR_SET_PDEATHSIG) and is killed and reaped
 * on every exit path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include <ck_pr.h>

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CPU_WRITER 0
#define CPU_READER 1
#define TARGET 0.5	       /* pipe bytes/s >= this x raw */
#define WRITE_BYTES 65536u     /* every write; the reader's buffer */
#define RING_BYTES (1u << 20)  /* raw ring */
#define CHUNK CMESH_PIPE_CHUNK /* chan row: trailing bytes per message */
#define CHAN_WIN (CMESH_PIPE_WINDOW_BYTES / CHUNK) /* chan row: msgs */
#define CHAN_PUBLISH (CHAN_WIN / 2)
#define MIB (1024.0 * 1024.0)
#define YIELD_AFTER (1u << 20) /* pauses before a spin yields */
#define WATCHDOG_FULL_S 300u
#define WATCHDOG_SMOKE_S 30u

_Static_assert(WRITE_BYTES % CHUNK == 0, "a write is whole chunks");
_Static_assert(RING_BYTES % WRITE_BYTES == 0, "writes never wrap");
_Static_assert(CHAN_WIN >= 2 && CHAN_WIN % 2 == 0, "chan window");

/* ---------------------------------------------------------------------- */
/* Shared block: the raw ring and the chan row's window counter           */

struct line {
	alignas(128) _Atomic uint64_t v;
};

/*
 * raw ring: tail (bytes written, the producer stores it with release
 * after copying in; the consumer's acquire load pairs with it), head
 * (bytes read, the consumer stores it with release after copying out;
 * the producer's acquire load pairs with it). acked: chan messages the
 * reader has received (release every CHAN_PUBLISH; the writer's acquire
 * load pairs with it). failed: the child failed (relaxed; a hint that
 * ends the parent's spins).
 */
struct blk {
	struct line tail, head, acked, failed;
	alignas(4096) unsigned char data[RING_BYTES];
};

/* Writer-private state of one scenario. */
struct wstate {
	uint64_t pos, cache;	  /* raw: tail, cached head */
	uint64_t sent, ack_cache; /* chan: messages sent, cached acked */
	uint64_t blocks[3];	  /* per op: 64 KiB writes done so far */
	cmesh_pipe_writer *pipe;  /* pipe row */
	cmesh_sender *chan;	  /* chan row */
	cmesh_sender *cmd_tx;	  /* control: commands */
	cmesh_receiver *rep_rx;	  /* control: reports */
	struct blk *b;
};

/* ---------------------------------------------------------------------- */
/* Messages                                                               */

struct chunk_hdr {
	uint64_t len; /* trailing bytes */
};
static CMESH_TYPE_DEFINE_PLAIN(chunk_type, struct chunk_hdr);

enum {
	OP_RAW = 0,
	OP_PIPE,
	OP_CHAN,
	OP_SETUP, /* takes the ends in the message, answers READY */
	OP_QUIT	  /* reads the pipe to its end, the chan to -EPIPE */
};

struct cmd {
	uint32_t op;
	uint32_t pad;
	uint64_t bytes;		  /* OP_RAW, OP_PIPE, OP_CHAN: to read */
	cmesh_pipe_reader_port r; /* OP_SETUP */
	cmesh_receiver *chan;	  /* OP_SETUP */
};
static CMESH_TYPE_DEFINE(cmd_type, struct cmd,
			 CMESH_FIELD_PIPE_READER(struct cmd, r),
			 CMESH_FIELD_RECEIVER(struct cmd, chan, chunk_type));

enum {
	REP_READY = 1,
	REP_DONE
};

struct report {
	uint32_t kind; /* REP_* */
	uint32_t op;
	uint64_t bytes; /* REP_DONE: bytes read */
};
static CMESH_TYPE_DEFINE_PLAIN(report_type, struct report);

/* ---------------------------------------------------------------------- */
/* Failure                                                                */

static pid_t parent_pid;
static struct blk *xblk; /* the memfd block (scenario 2) */

static void fail(const char *what, int rc)
{
	bench_die(what, rc < 0 ? rc : EPROTO);
}

/* A child tells the parent's spins first; then as bench_child_die_hook. */
static void die_hook(void)
{
	if (bench_is_child && xblk)
		atomic_store_explicit(&xblk->failed.v, 1, memory_order_relaxed);
	bench_child_die_hook();
}

/* No two free CPUs: every spin yields at once (set before fork). */
static bool one_cpu;

/*
 * One pause of a spin: yields after YIELD_AFTER of them (at once with
 * one_cpu); ends the run if the child failed.
 */
static inline void spin_pause(const struct blk *b, uint64_t *spins)
{
	ck_pr_stall();
	if (++*spins % 4096 && !one_cpu)
		return;
	if (*spins % 4096 == 0 &&
	    atomic_load_explicit(&b->failed.v, memory_order_relaxed))
		bench_die("the child failed", EPIPE);
	if (one_cpu || *spins >= YIELD_AFTER)
		sched_yield();
}

/* ---------------------------------------------------------------------- */
/* The stream's bytes                                                     */

static alignas(64) unsigned char src[WRITE_BYTES];

static inline unsigned char pattern(uint64_t i)
{
	return (unsigned char)((i * 131u) ^ (i >> 7) ^ 0x5a);
}

/* Byte `p` of a stream: write p / 64K, stamped with its index. */
static inline unsigned char expected(uint64_t p)
{
	uint64_t i = p % WRITE_BYTES;

	if (i < 8)
		return (unsigned char)((p / WRITE_BYTES) >> (8 * i));
	return pattern(i);
}

static void src_init(void)
{
	for (uint64_t i = 0; i < WRITE_BYTES; i++)
		src[i] = pattern(i);
}

static inline void src_stamp(uint64_t block)
{
	for (unsigned int i = 0; i < 8; i++)
		src[i] = (unsigned char)(block >> (8 * i));
}

static const char *const op_names[] = { "raw", "pipe", "chan" };

static void wrong_byte(int op, uint64_t p, unsigned char got)
{
	char what[160];

	snprintf(what, sizeof(what),
		 "%s: wrong byte at stream offset %" PRIu64
		 ": 0x%02x, want 0x%02x",
		 op_names[op], p, got, expected(p));
	fail(what, -EPROTO); /* exit 2, the child killed and reaped */
}

/* Samples of a read of n bytes at stream offset off (see the top). */
static inline void check_read(int op, const unsigned char *buf, uint64_t off,
			      size_t n)
{
	uint64_t s = (off + WRITE_BYTES - 1) / WRITE_BYTES * WRITE_BYTES;
	const uint64_t at[3] = { 0, n / 2, n - 1 };

	for (int k = 0; k < 3; k++)
		if (buf[at[k]] != expected(off + at[k]))
			wrong_byte(op, off + at[k], buf[at[k]]);
	for (uint64_t p = s; p < s + 8 && p < off + n; p++)
		if (buf[p - off] != expected(p))
			wrong_byte(op, p, buf[p - off]);
}

/* ---------------------------------------------------------------------- */
/* Raw ring                                                               */

static inline void ring_write(struct wstate *w, const void *buf, uint32_t len)
{
	struct blk *b = w->b;
	uint64_t off = w->pos % RING_BYTES, spins = 0;

	while (w->pos + len - w->cache > RING_BYTES) {
		/* Pairs with the consumer's release store of head. */
		w->cache =
			atomic_load_explicit(&b->head.v, memory_order_acquire);
		if (w->pos + len - w->cache > RING_BYTES)
			spin_pause(b, &spins);
	}
	/* Writes are 64 KiB at 64 KiB-aligned positions: never a wrap. */
	memcpy(b->data + off, buf, len);
	w->pos += len;
	/* Pairs with the consumer's acquire load of tail. */
	atomic_store_explicit(&b->tail.v, w->pos, memory_order_release);
}

/* Reader-private state. */
struct rstate {
	uint64_t pos, cache; /* raw: head, cached tail */
	uint64_t recvd;	     /* chan: messages received */
	uint64_t off[3];     /* per op: stream bytes read so far */
	cmesh_pipe_reader *pipe;
	cmesh_receiver *chan;
	struct blk *b;
};

/* Copies out what is there, at most cap bytes (waits for some). */
static inline size_t ring_read(struct rstate *r, void *buf, size_t cap)
{
	struct blk *b = r->b;
	uint64_t off, n, first, spins = 0;

	while (r->pos == r->cache) {
		/* Pairs with the producer's release store of tail. */
		r->cache =
			atomic_load_explicit(&b->tail.v, memory_order_acquire);
		if (r->pos == r->cache)
			spin_pause(b, &spins);
	}
	if (r->cache - r->pos > RING_BYTES)
		fail("raw ring: bad tail", -EPROTO);
	n = r->cache - r->pos;
	n = n > cap ? cap : n;
	off = r->pos % RING_BYTES;
	first = RING_BYTES - off < n ? RING_BYTES - off : n;
	memcpy(buf, b->data + off, first);
	memcpy((unsigned char *)buf + first, b->data, n - first);
	r->pos += n;
	/* Pairs with the producer's acquire load of head. */
	atomic_store_explicit(&b->head.v, r->pos, memory_order_release);
	return n;
}

/* ---------------------------------------------------------------------- */
/* Reader: the thread of 1 and the child of 2                             */

static alignas(64) unsigned char rbuf_main[WRITE_BYTES];

static void report(cmesh_sender *tx, uint32_t kind, uint32_t op, uint64_t bytes)
{
	struct report rep = { kind, op, bytes };
	int rc = cmesh_sender_send(tx, &rep, NULL, 0);

	if (rc < 0)
		fail("reader: cmesh_sender_send (report)", rc);
}

/* One read of row `op` into buf (the chan row: into its part of buf). */
static inline size_t read_once(struct rstate *r, int op, unsigned char *buf,
			       unsigned char **at)
{
	*at = buf;
	switch (op) {
	case OP_RAW:
		return ring_read(r, buf, WRITE_BYTES);
	case OP_PIPE: {
		int64_t n = cmesh_pipe_read(r->pipe, buf, WRITE_BYTES, NULL);

		if (n <= 0)
			fail(n == 0 ? "reader: cmesh_pipe_read: early end of "
				      "stream" :
				      "reader: cmesh_pipe_read",
			     (int)n);
		return (size_t)n;
	}
	default: {
		struct chunk_hdr h;
		int rc;

		*at = buf + r->recvd % (WRITE_BYTES / CHUNK) * CHUNK;
		rc = cmesh_receiver_recv(r->chan, &h, *at, CHUNK);
		if (rc < 0)
			fail("reader: cmesh_receiver_recv (chan)", rc);
		if ((uint64_t)rc != CHUNK || h.len != CHUNK)
			fail("reader: chan: wrong length", -EPROTO);
		if (++r->recvd % CHAN_PUBLISH == 0)
			/* Pairs with the writer's acquire load of acked. */
			atomic_store_explicit(&r->b->acked.v, r->recvd,
					      memory_order_release);
		return CHUNK;
	}
	}
}

/* Reads `want` bytes of row `op`, checking samples. */
static void read_rep(struct rstate *r, int op, uint64_t want,
		     unsigned char *buf)
{
	uint64_t got = 0;

	while (got < want) {
		unsigned char *at;
		size_t n = read_once(r, op, buf, &at);

		check_read(op, at, r->off[op], n);
		r->off[op] += n;
		got += n;
	}
	if (got != want)
		fail("reader: read past the rep's bytes", -EPROTO);
}

/* The end: the pipe to EOF, the chan to -EPIPE (both writers gone). */
static void reader_quit(struct rstate *r, unsigned char *buf)
{
	struct chunk_hdr h;
	int64_t n;
	int rc;

	if (r->pipe) {
		n = cmesh_pipe_read(r->pipe, buf, WRITE_BYTES, NULL);
		if (n != 0)
			fail(n < 0 ? "reader: cmesh_pipe_read at the end" :
				     "reader: bytes after the last rep",
			     (int)n);
		cmesh_pipe_reader_free(r->pipe);
		r->pipe = NULL;
	}
	if (r->chan) {
		rc = cmesh_receiver_recv(r->chan, &h, buf, CHUNK);
		if (rc != -EPIPE)
			fail("reader: chan: not closed at the end", rc);
		cmesh_receiver_free(r->chan);
		r->chan = NULL;
	}
}

/* Serves commands until OP_QUIT. */
static void serve(cmesh_receiver *rx, cmesh_sender *tx, struct blk *b,
		  unsigned char *buf)
{
	struct rstate r;

	memset(&r, 0, sizeof(r));
	r.b = b;
	for (;;) {
		struct cmd c;
		int rc = cmesh_receiver_recv(rx, &c, NULL, 0);

		if (rc != 0)
			fail("reader: cmesh_receiver_recv (command)", rc);
		if (c.r.data) {
			if (r.pipe)
				fail("reader: a second pipe", -EPROTO);
			rc = cmesh_pipe_reader_from_port(&c.r, &r.pipe);
			if (rc < 0)
				fail("reader: cmesh_pipe_reader_from_port", rc);
		}
		if (c.chan) {
			if (r.chan)
				fail("reader: a second chan", -EPROTO);
			r.chan = c.chan;
		}
		switch (c.op) {
		case OP_SETUP:
			report(tx, REP_READY, c.op, 0);
			break;
		case OP_RAW:
		case OP_PIPE:
		case OP_CHAN:
			if ((c.op == OP_PIPE && !r.pipe) ||
			    (c.op == OP_CHAN && !r.chan))
				fail("reader: no such end", -EPROTO);
			report(tx, REP_READY, c.op, 0);
			read_rep(&r, (int)c.op, c.bytes, buf);
			report(tx, REP_DONE, c.op, c.bytes);
			break;
		case OP_QUIT:
			reader_quit(&r, buf);
			report(tx, REP_DONE, c.op, 0);
			return;
		default:
			fail("reader: unknown command", -EPROTO);
		}
	}
}

struct reader_arg {
	cmesh_receiver *rx;
	cmesh_sender *tx;
	struct blk *b;
	bool pinned;
};

static alignas(64) unsigned char rbuf_thread[WRITE_BYTES];

static void *reader_thread(void *p)
{
	struct reader_arg *a = p;

	a->pinned = bench_pin_self(CPU_READER);
	serve(a->rx, a->tx, a->b, rbuf_thread);
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
		bench_pin_self(CPU_READER);
	rc = cmesh_node_join_socket(sock, &report_type, &cmd_type, &o, &node,
				    &up, &down);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	serve(down, up, xblk, rbuf_main);
	cmesh_sender_free(up);
	cmesh_receiver_free(down);
	rc = cmesh_node_close(node, cmesh_deadline_after(5000000000LL));
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_node_close", rc);
	_exit(0);
}

/* ---------------------------------------------------------------------- */
/* Writer                                                                 */

static struct report get_report(struct wstate *w, uint32_t kind, uint32_t op)
{
	struct report rep;
	int rc = cmesh_receiver_recv(w->rep_rx, &rep, NULL, 0);

	if (rc != 0)
		fail("cmesh_receiver_recv (report)", rc);
	if (rep.kind != kind || rep.op != op)
		fail("unexpected report", -EPROTO);
	return rep;
}

static void send_cmd(struct wstate *w, struct cmd *c)
{
	int rc = cmesh_sender_send(w->cmd_tx, c, NULL, 0);

	if (rc < 0)
		fail("cmesh_sender_send (command)", rc);
}

static inline void chan_write(struct wstate *w)
{
	for (unsigned int i = 0; i < WRITE_BYTES / CHUNK; i++) {
		struct chunk_hdr h = { CHUNK };
		uint64_t spins = 0;
		int rc;

		while (w->sent - w->ack_cache >= CHAN_WIN) {
			/* Pairs with the reader's release store of acked. */
			w->ack_cache = atomic_load_explicit(
				&w->b->acked.v, memory_order_acquire);
			if (w->sent - w->ack_cache >= CHAN_WIN)
				spin_pause(w->b, &spins);
		}
		rc = cmesh_sender_send(w->chan, &h, src + i * CHUNK, CHUNK);
		if (rc < 0)
			fail("cmesh_sender_send (chan)", rc);
		w->sent++;
	}
}

/* One rep of row `op`: `bytes` to the reader; returns its ticks. */
static uint64_t write_rep(struct wstate *w, int op, uint64_t bytes)
{
	struct cmd c;
	struct report rep;
	uint64_t t0, t1;

	memset(&c, 0, sizeof(c));
	c.op = (uint32_t)op;
	c.bytes = bytes;
	send_cmd(w, &c);
	get_report(w, REP_READY, (uint32_t)op);
	t0 = bench_now_ticks();
	for (uint64_t done = 0; done < bytes; done += WRITE_BYTES) {
		src_stamp(w->blocks[op]++);
		switch (op) {
		case OP_RAW:
			ring_write(w, src, WRITE_BYTES);
			break;
		case OP_PIPE: {
			int64_t n = cmesh_pipe_write(w->pipe, src, WRITE_BYTES,
						     NULL);

			if (n != WRITE_BYTES)
				fail("cmesh_pipe_write", n < 0 ? (int)n : 0);
			break;
		}
		default:
			chan_write(w);
			break;
		}
	}
	rep = get_report(w, REP_DONE, (uint32_t)op);
	t1 = bench_now_ticks();
	if (rep.bytes != bytes)
		fail("the reader read the wrong count", -EPROTO);
	return t1 - t0;
}

/* Makes the pipe and the chan, sends their reading ends over. */
static void setup_ends(struct wstate *w)
{
	cmesh_pipe_reader *pr;
	struct cmd c;
	int rc;

	memset(&c, 0, sizeof(c));
	c.op = OP_SETUP;
	rc = cmesh_pipe_new(&w->pipe, &pr);
	if (rc < 0)
		fail("cmesh_pipe_new", rc);
	rc = cmesh_pipe_reader_to_port(pr, &c.r);
	if (rc < 0)
		fail("cmesh_pipe_reader_to_port", rc);
	rc = cmesh_channel_new(&chunk_type, NULL, &w->chan, &c.chan);
	if (rc < 0)
		fail("cmesh_channel_new (chan)", rc);
	send_cmd(w, &c);
	get_report(w, REP_READY, OP_SETUP);
}

/* Frees the writing ends; the reader checks their end and answers. */
static void finish(struct wstate *w)
{
	struct cmd c;

	cmesh_pipe_writer_free(w->pipe);
	cmesh_sender_free(w->chan);
	w->pipe = NULL;
	w->chan = NULL;
	memset(&c, 0, sizeof(c));
	c.op = OP_QUIT;
	send_cmd(w, &c);
	get_report(w, REP_DONE, OP_QUIT);
}

/* ---------------------------------------------------------------------- */
/* Rows                                                                   */

enum {
	R1_RAW,
	R1_PIPE,
	R1_CHAN,
	R2_RAW,
	R2_PIPE,
	R2_CHAN,
	NROWS
};

struct row {
	const char *scen; /* on the scenario's first row */
	const char *name;
	int op;
	double target; /* > 0: bytes/s >= target x the scenario's raw */
	double *rates; /* per rep, bytes/s */
	struct bench_result res;
};

static struct row rows[NROWS] = {
	[R1_RAW] = { "1 in-process", "raw", OP_RAW, 0, NULL, { 0 } },
	[R1_PIPE] = { "", "pipe", OP_PIPE, TARGET, NULL, { 0 } },
	[R1_CHAN] = { "", "chan", OP_CHAN, 0, NULL, { 0 } },
	[R2_RAW] = { "2 two procs", "raw", OP_RAW, 0, NULL, { 0 } },
	[R2_PIPE] = { "", "pipe", OP_PIPE, TARGET, NULL, { 0 } },
	[R2_CHAN] = { "", "chan", OP_CHAN, 0, NULL, { 0 } },
};

static struct bench_parts parts[2]; /* pipe / raw, per rep */

static double row_ratio(int k)
{
	return bench_ratio(&rows[k - rows[k].op].res, &rows[k].res, true);
}

static void print_row(int k, uint64_t bytes)
{
	const struct row *r = &rows[k];
	char ratio[16] = "-", tgt[16] = "ref";
	const char *res = "";

	if (r->op != OP_RAW) {
		snprintf(ratio, sizeof(ratio), "%.2fx", row_ratio(k));
		snprintf(tgt, sizeof(tgt), "info");
	}
	if (r->target > 0) {
		snprintf(tgt, sizeof(tgt), ">=%.1fx", r->target);
		res = row_ratio(k) >= r->target ? "PASS" : "FAIL";
	}
	printf("%-13s %-5s %9.0f %9.0f %9.0f %9.0f %7s %7s  %s\n", r->scen,
	       r->name, (double)r->res.n * (double)bytes / MIB,
	       r->res.rate / 1e6, r->res.rate_lo / 1e6, r->res.rate_hi / 1e6,
	       ratio, tgt, res);
	bench_json_result(r->scen, r->name, &r->res, "B/s");
	if (r->target > 0) {
		char what[64];

		snprintf(what, sizeof(what), "%s: pipe / raw bytes/s",
			 rows[k - r->op].scen);
		bench_json_target(what, ratio, tgt, *res == 'P');
	}
}

static void print_parts(const char *what, const struct bench_parts *p)
{
	if (p->n == 0)
		return;
	printf("# %s: per-rep ratio median %.2fx (%.2f..%.2fx) over %u reps, "
	       "raw %.0f..%.0f MB/s%s\n",
	       what, bench_parts_median(p), p->lo, p->hi, p->n, p->raw_lo / 1e6,
	       p->raw_hi / 1e6,
	       p->raw_hi > 1.5 * p->raw_lo ?
		       " (raw moved >1.5x during the run: prefer the per-rep "
		       "ratios)" :
		       "");
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_pipe [--smoke] [--strict] [--only 1|2]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

/* Bytes per rep: whole writes, at least one. */
static uint64_t rep_bytes(const struct bench_opts *cfg)
{
	double v = (cfg->smoke ? 8.0 : 256.0) * MIB * cfg->scale;
	uint64_t n = (uint64_t)(v / WRITE_BYTES);

	return (n ? n : 1) * WRITE_BYTES;
}

static struct blk *map_blk(int fd)
{
	void *p = mmap(NULL, sizeof(struct blk), PROT_READ | PROT_WRITE,
		       fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, fd,
		       0);

	if (p == MAP_FAILED)
		bench_die("mmap", errno);
	memset(p, 0, sizeof(struct blk)); /* fault it in */
	return p;
}

/* Forks the child of 2 and joins it: the parent's side in *w. */
static void start_child(struct wstate *w, bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	int fd, sock, rc;
	pid_t pid;

	fd = memfd_create("bench-pipe-ring", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, sizeof(struct blk)) != 0)
		bench_die("memfd raw ring", errno);
	xblk = map_blk(fd);
	close(fd);
	w->b = xblk;
	pid = bench_fork_pair(&sock);
	if (pid == 0)
		child_main(sock, pin);
	o.peer_pid = pid;
	rc = cmesh_node_join_socket(sock, &cmd_type, &report_type, &o, &node,
				    &w->cmd_tx, &w->rep_rx);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	/* The link lives on while its channels do. */
	cmesh_node_free(node);
	setup_ends(w);
}

static void stop_child(struct wstate *w)
{
	struct report rep;
	int rc;

	finish(w);
	cmesh_sender_free(w->cmd_tx);
	rc = cmesh_receiver_recv_deadline(
		w->rep_rx, cmesh_deadline_after(10000000000LL), &rep, NULL, 0);
	if (rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_receiver_recv_deadline (up) after quit", rc);
	cmesh_receiver_free(w->rep_rx);
	bench_child_reap(0);
}

/* In-process: a command and a report channel, the reader thread. */
static void start_thread(struct wstate *w, struct reader_arg *a, pthread_t *th)
{
	int rc = cmesh_channel_new(&cmd_type, NULL, &w->cmd_tx, &a->rx);

	if (rc == 0)
		rc = cmesh_channel_new(&report_type, NULL, &a->tx, &w->rep_rx);
	if (rc < 0)
		fail("cmesh_channel_new", rc);
	w->b = map_blk(-1);
	a->b = w->b;
	rc = pthread_create(th, NULL, reader_thread, a);
	if (rc)
		fail("pthread_create", -rc);
	setup_ends(w);
}

static void stop_thread(struct wstate *w, struct reader_arg *a, pthread_t th)
{
	finish(w);
	pthread_join(th, NULL);
	cmesh_sender_free(w->cmd_tx);
	cmesh_receiver_free(w->rep_rx);
	cmesh_sender_free(a->tx);
	cmesh_receiver_free(a->rx);
	munmap(w->b, sizeof(struct blk));
}

int main(int argc, char **argv)
{
	struct bench_opts cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	struct wstate in, x;
	struct reader_arg ra = { 0 };
	uint64_t reps, bytes, warm, t0;
	char cflags[512];
	pthread_t th;
	int fails = 0;
	bool run1, run2;

	memset(&in, 0, sizeof(in));
	memset(&x, 0, sizeof(x));
	bench_name = "bench_pipe";
	bench_die_hook = die_hook;
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_opts_parse(&cfg, "bench_pipe", 2, usage, argc, argv);
	run1 = cfg.only != 2;
	run2 = cfg.only != 1;
	reps = cfg.smoke ? 3 : 15;
	bytes = rep_bytes(&cfg);
	warm = bytes / 4 / WRITE_BYTES * WRITE_BYTES;
	warm = warm ? warm : WRITE_BYTES;
	parent_pid = getpid();
	bench_child_signals("bench_pipe");
	src_init();

	cfg.two_cpus = bench_cpus_usable(CPU_WRITER, CPU_READER) &&
		       bench_pin_self(CPU_WRITER);
	one_cpu = !cfg.two_cpus;
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_cflags(cflags, sizeof(cflags), BENCH_CFLAGS_OR("-O2"));
	bench_print_header(cflags, "threads/processes on cpus", CPU_WRITER,
			   CPU_READER, cfg.two_cpus, cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);

	/* The child first: fork while this process has one thread. */
	if (run2)
		start_child(&x, cfg.two_cpus);
	if (run1)
		start_thread(&in, &ra, &th);
	for (int k = 0; k < NROWS; k++) {
		if (k < R2_RAW ? !run1 : !run2)
			continue;
		rows[k].rates = bench_xcalloc(reps, sizeof(double));
		write_rep(k < R2_RAW ? &in : &x, rows[k].op, warm);
	}
	for (uint64_t i = 0; i < reps; i++) {
		for (int j = 0; j < NROWS; j++) {
			/* Every other rep in reverse order. */
			int k = i % 2 ? NROWS - 1 - j : j;

			if (rows[k].rates)
				rows[k].rates[i] = bench_rate(
					bytes, write_rep(k < R2_RAW ? &in : &x,
							 rows[k].op, bytes));
		}
		for (int sc = 0; sc < 2; sc++) {
			const struct row *raw = &rows[sc * 3],
					 *pipe = &rows[sc * 3 + 1];

			if (raw->rates)
				bench_note_part(&parts[sc],
						pipe->rates[i] / raw->rates[i],
						raw->rates[i]);
		}
	}
	if (run1)
		stop_thread(&in, &ra, th);
	if (run2)
		stop_child(&x);
	alarm(0);
	bench_cpu_usage_read(&usage1);

	printf("%-13s %-5s %9s %9s %9s %9s %7s %7s  %s\n", "scenario", "row",
	       "MiB", "MB/s", "min", "max", "ratio", "target", "result");
	for (int k = 0; k < NROWS; k++) {
		if (!rows[k].rates)
			continue;
		rows[k].res.n = reps;
		bench_fill_rates(&rows[k].res, rows[k].rates, reps);
		free(rows[k].rates);
		print_row(k, bytes);
	}
	for (int k = 0; k < NROWS; k++)
		if (rows[k].res.n && rows[k].target > 0 &&
		    row_ratio(k) < rows[k].target)
			fails++;
	printf("# MiB: moved in the recorded reps; MB/s: 1e6 bytes/s, "
	       "writer's clock from the reader's \"ready\" to its "
	       "\"done\", median (min, max) of %" PRIu64
	       " reps of %.0f MiB in 64 KiB writes (each row: one warm-up rep "
	       "of %.0f MiB first); ratio: median against the scenario's "
	       "raw; raw: %u KiB SPSC ring, spinning; pipe: window %u "
	       "chunks / %u KiB, chunks of %u KiB; chan: %u KiB messages, "
	       "at most %u unread\n",
	       reps, (double)bytes / MIB, (double)warm / MIB,
	       RING_BYTES / 1024u, CMESH_PIPE_WINDOW_MSGS,
	       CMESH_PIPE_WINDOW_BYTES / 1024u, CHUNK / 1024u, CHUNK / 1024u,
	       (unsigned int)CHAN_WIN);
	print_parts("1 pipe / raw", &parts[0]);
	print_parts("2 pipe / raw", &parts[1]);
	if (run1 && !ra.pinned)
		printf("# the reader thread is NOT pinned\n");
	if (one_cpu)
		printf("# CPUs %d and %d not both usable: the spins yield at "
		       "once; the numbers mean little\n",
		       CPU_WRITER, CPU_READER);
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
