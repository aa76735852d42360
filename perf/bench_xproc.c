/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_xproc.c - cross-process latency and throughput, each cmesh
 * figure beside the raw mechanisms measured in the same run between the
 * same two processes: this one (pinned to CPU 0: pinger / consumer) and a
 * fork()ed child (pinned to CPU 1: ponger / producer). Each scenario forks
 * its own child; the rows of a scenario alternate in rounds (rtt) or
 * repetitions (stream) so that drift hits them alike. A scenario's first
 * row is its baseline: the ratio column and the target compare the other
 * rows with it.
 *
 *   1 rtt-spin SB  S-byte ping-pong, S = 8, 56, 64 and 120 (a scenario
 *                  each), spinning receivers.
 *                  raw-ro (baseline): a generic one-writer line protocol:
 *                  per direction an 8-byte sequence word followed by the S
 *                  payload bytes, ceil((8 + S) / 64) 64-byte lines (8 and
 *                  56 B: one line; 64 and 120 B: two), each direction's
 *                  lines in a memfd of its writer's, mapped read-write by
 *                  the writer and read-only by the reader (as cmesh maps a
 *                  peer's arena: the reader may not write it). The writer
 *                  copies the payload (the bytes in the lines after the
 *                  first first, then the first line's), then stores the
 *                  round trip's number in the sequence word (release); the
 *                  reader spins on it (acquire, pairs with that store),
 *                  then copies the S bytes out. The ping-pong order keeps
 *                  a writer off a line its reader has not read yet.
 *                  cmesh: cmesh_node_join_socket() in both processes over
 *                  a SOCK_SEQPACKET socketpair made before fork, with a
 *                  CMESH_TYPE_DEFINE_PLAIN type of exactly S bytes (a
 *                  uint64_t seq, then padding) both ways, spin_ns = 1 s
 *                  (never sleeps); the child echoes with recv + send.
 *                  raw (info): the raw-ro protocol with both directions'
 *                  lines in a MAP_SHARED anonymous mapping made before
 *                  fork, read-write in both processes; each direction's
 *                  lines alone in a 256-byte region (128-byte aligned, the
 *                  other direction's lines never in the adjacent 128
 *                  bytes).
 *                  raw-msg (info, 64 B only): the former baseline, one
 *                  64-byte line per direction in the shared mapping whose
 *                  first word is the message's own seq and doubles as the
 *                  ready flag (bench_spin_put / bench_spin_get): 64 bytes
 *                  in one line only because the payload happens to start
 *                  with a non-zero, changing word. A library that does not
 *                  know the payload cannot do that, so a separate flag
 *                  word is the fair baseline; the row prices it.
 *                  raw-ring-ro (info): the raw-ro lines in a ring, as
 *                  cmesh's lanes keep them: each direction 1024 64-byte
 *                  slots in its writer's memfd (read-only to the reader),
 *                  round trip n in the k = ceil((8 + S) / 64) slots from
 *                  position n * k, seq word first; after its release store
 *                  the writer asks for the slots of the message 4 on for
 *                  writing, as a cmesh producer does. A fresh line each
 *                  message instead of one line rewritten: which of the two
 *                  is faster depends on the placement, so both are shown.
 *                  raw-ro-wake (info): raw-ro with what a writer whose
 *                  reader may sleep cannot do without: a locked increment
 *                  of a word of its own before the publish (a cmesh
 *                  producer's claim, which is also the Dekker with the
 *                  reader's sleep) and a load of the reader's sleeping
 *                  word after it (never set here). Where a locked
 *                  instruction is dear, this is the floor for any
 *                  protocol with sleeping readers.
 *                  The message's first 8 bytes carry the round trip's
 *                  number, its last 8 (from 16 B) the pinger's time stamp:
 *                  every echo is checked.
 *                  Target: cmesh p50 <= 1.2x raw-ro p50. On the AMD EPYC
 *                  the first version of this bench was written on, the
 *                  reader's read-only mapping alone made a 64-byte round
 *                  trip 20-40 ns slower near and about 70 ns slower far: a
 *                  cost of the design, not of the library's code, hence
 *                  raw-ro as the baseline.
 *   2 rtt-sleep    64-byte ping-pong with sleeping receivers.
 *                  raw: two eventfds made before fork, blocking read and
 *                  write; the 64 bytes travel in a line of the shared
 *                  mapping (copied in before the write, out after the read).
 *                  cmesh: the 64-byte struct bench_msg, spin_ns =
 *                  CMESH_SPIN_NONE.
 *                  Target: cmesh p50 <= 1.3x raw p50.
 *   3 stream SB    one-way stream, child -> parent, of S-byte messages, S =
 *                  8, 56, 64 and 120 (a scenario each).
 *                  raw-slot (baseline): the strongest SPSC ring for small
 *                  messages: 1024 64-byte slots (64 KiB) in the shared
 *                  mapping. Positions are free-running; position p is slot
 *                  p % 1024. A record of S bytes takes k = ceil((8 + S) /
 *                  64) consecutive positions (8, 56 B: one; 64, 120 B:
 *                  two): the first slot's first 8 bytes are its sequence
 *                  word, the payload follows contiguously across the k
 *                  slots. No filler record: a record at the last slot
 *                  wraps to slot 0 (its copy splits in two; with one size
 *                  per ring and k dividing 1024 it never happens). The
 *                  producer copies the payload in, then stores seq = p + 1
 *                  (release); the consumer spins until the seq of its head
 *                  position's slot is head + 1 (acquire, pairs with that
 *                  store), copies the payload out and steps over k
 *                  positions. There is no shared tail. The consumer
 *                  publishes its head (release store, in a line of its
 *                  own) only once 128 positions (1024 / 8) have passed
 *                  since it last did; the producer caches the head and
 *                  reloads it (acquire, pairs with that store) only when
 *                  the ring looks full. One size per ring means a slot is
 *                  always a record's first or always a continuation, so
 *                  the consumer never reads payload bytes as a seq (a
 *                  ring of mixed sizes would need cmesh's zeroed or
 *                  separate continuation words). Variants measured
 *                  against this one in one session (2026-12-06, far
 *                  placement) and left out, none faster beyond the noise
 *                  between runs (24-31 M msg/s at 8 and 56 B for all): a
 *                  write prefetch of the slot 4 positions ahead (cmesh's
 *                  producer does it: its locked claim would wait for the
 *                  line; this ring has nothing that waits), and the head
 *                  published after every record (release or seq_cst).
 *                  cmesh: the S-byte type, ring_size 65536, spin_ns = 1 s,
 *                  send / recv.
 *                  raw-slot-ro (info): the raw-slot ring with its slots in
 *                  a memfd of the producer's, mapped read-only by the
 *                  consumer, and the head in a memfd of the consumer's,
 *                  mapped read-only by the producer, as cmesh must map a
 *                  peer's arena.
 *                  Target: cmesh >= 0.75x raw-slot msgs/s.
 *                  (These replace the former "3 stream 64B" against the
 *                  byte ring below, whose shared tail, stored per message
 *                  and re-read by the consumer, made it a weak baseline
 *                  for small messages.)
 *   3 stream 4KiB  one-way stream of 4 KiB messages.
 *                  raw: SPSC byte ring of 64 KiB in the shared mapping,
 *                  records of an 8-byte header + payload (8-aligned, a pad
 *                  record at the wrap); every message is copied in,
 *                  published with a release store of the tail, acquired by
 *                  the consumer, copied out, and its space given back with
 *                  a release store of the head (no batching); the producer
 *                  spins when the ring is full.
 *                  cmesh: ring_size 65536, spin_ns = 1 s, send / recv of
 *                  the 64-byte struct bench_msg + 4032 trailing bytes; raw
 *                  and unix carry 4096 contiguous bytes.
 *                  Target: cmesh >= 0.6x raw bytes/s (the same payload:
 *                  the same ratio as msgs/s).
 *                  cmesh send never blocks: past a full ring it appends to
 *                  an overflow list. Info row "cm-win": cmesh with the
 *                  producer kept at most W messages ahead (a counter the
 *                  consumer publishes in the shared mapping every W / 8
 *                  messages), W = 3/4 of the messages the ring holds
 *                  (CM_REC_SPAN), so it never overflows.
 *   3 str 4KiB ro  the 4 KiB stream against raw-ro, the byte ring with its
 *                  halves in two memfds, each mapped read-only by the other
 *                  side (the producer's data and tail, the consumer's
 *                  head), as cmesh must map a peer's arena.
 *                  Target: cmesh >= 0.75x raw-ro bytes/s.
 *   4 ref          raw unix SOCK_SEQPACKET (socketpair before fork):
 *                  64-byte ping-pong and 64 B / 4 KiB streams, blocking.
 *                  No target.
 *
 * Latency: lfence;rdtsc (calibrated against CLOCK_MONOTONIC) when the TSC
 * is invariant, else clock_gettime; the same for raw and cmesh. rtt rows:
 * one sample per round trip, taken in the parent. Stream rows: ns per
 * message over batches (1024 messages, 4 KiB: 64) at the consumer;
 * throughput from the consumer's time (first recv call to last message),
 * the median over repetitions. Compare rows of one run only: a VM's
 * cross-core latency varies.
 *
 * Failure handling: a child that exits early is reported (SIGCHLD) and the
 * run ends with status 2; a hung scenario is killed by a watchdog (status
 * 3). The child dies with the parent (PR_SET_PDEATHSIG). Children are
 * always reaped.
 *
 * Usage: bench_xproc [--smoke] [--strict] [--only 1|2|3|4]
 * --only N: the scenarios of group N (1: the four rtt-spin sizes, 2:
 * rtt-sleep, 3: the four small streams and both 4 KiB ones, 4: unix).
 * --smoke: tiny counts (well under 5 s in all), for CI; the percentiles
 * are then not meaningful. A full run takes 20-40 s on a 2-vCPU VM.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies every count, e.g. 0.2 or 3).
 * Exit status: 0 unless a call fails (2, 3), or --strict and a target
 * FAILs (1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include <ck_pr.h>

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CPU_PARENT 0
#define CPU_CHILD 1
#define RING_BYTES 65536u /* raw rings and cmesh ring_size */
#define MSG_SMALL 64u	  /* struct bench_msg */
#define RTT_MAX 120u	  /* largest rtt-spin message: two lines with seq */
#define SEQ_BYTES 8u	  /* a raw sequence word */
#define SLOT_BYTES 64u	  /* a raw-slot ring's slot */
#define RING_SLOTS (RING_BYTES / SLOT_BYTES)
/* The raw-slot consumer publishes its head every SLOT_PUBLISH positions. */
#define SLOT_PUBLISH (RING_SLOTS / 8)
#define MSG_BIG 4096u
#define SPIN_FOREVER_NS 1000000000LL
#define RTT_ROUNDS 20u
#define BARRIER_TIMEOUT_NS 120000000000ull

/*
 * Bytes of positions a record of `len` payload bytes takes in a cmesh
 * ring, to size cm-win's window: cmesh_shm_rec_slots() of a record without
 * fds, whose payload is the struct + trailing bytes, in the ring layout of
 * one 64-byte line up to 56 bytes (an 8-byte sequence word + 56), two up
 * to 120, else one position per 64 bytes (a header slot, the payload in
 * contiguous bulk lines). cm-win runs at 4 KiB only: 64 positions, in
 * that layout as in the former one (48 / 104 bytes).
 */
#define CM_REC_SPAN(len)                                                       \
	(64u * ((len) <= 56u ? 1u : (len) <= 120u ? 2u : ((len) + 63u) / 64u))

/* ---------------------------------------------------------------------- */
/* Message types and shared mapping                                       */

/* The rtt-spin and small-stream messages: a seq, then padding. */
struct msg8 {
	uint64_t seq;
};

struct msg56 {
	uint64_t seq;
	uint8_t pad[48];
};

struct msg120 {
	uint64_t seq;
	uint8_t pad[112];
};

_Static_assert(sizeof(struct msg8) == 8, "msg8 is 8 bytes");
_Static_assert(sizeof(struct msg56) == 56, "msg56 is 56 bytes");
_Static_assert(sizeof(struct msg120) == RTT_MAX, "msg120 is 120 bytes");

static CMESH_TYPE_DEFINE_PLAIN(msg8_type, struct msg8);
static CMESH_TYPE_DEFINE_PLAIN(msg56_type, struct msg56);
/* 64 bytes: struct bench_msg (seq, stamp, 48 bytes), also for 2 and 3. */
static CMESH_TYPE_DEFINE_PLAIN(bench_msg_type, struct bench_msg);
static CMESH_TYPE_DEFINE_PLAIN(msg120_type, struct msg120);

struct index_line {
	alignas(128) _Atomic uint64_t v;
};

/*
 * Raw rtt-spin line protocol, one direction: a sequence word, then up to
 * RTT_MAX payload bytes (ceil((8 + S) / 64) lines used). The writer
 * copies the payload, then stores seq (release); the reader loads seq
 * (acquire, pairs with that store), then copies the payload out. 256-byte
 * alignment: the 128 bytes after the lines stay unused, so the other
 * direction's lines are never in the adjacent 128-byte block.
 */
struct rtt_line {
	alignas(256) _Atomic uint64_t seq;
	uint8_t body[RTT_MAX];
};

_Static_assert(sizeof(struct rtt_line) == 256, "rtt_line is 256 bytes");
_Static_assert(offsetof(struct rtt_line, body) == SEQ_BYTES, "seq first");

/*
 * Raw SPSC byte ring (4 KiB streams). tail: the producer stores it
 * (release) after each record; the consumer loads it (acquire) when its
 * cached tail is used up. head: the consumer stores it (release) after
 * copying each record out; the producer loads it (acquire) when its cached
 * head says "full".
 */
struct raw_ring {
	struct index_line tail, head;
	alignas(128) unsigned char data[RING_BYTES];
};

#define RING_UP 0 /* the stream ring: child -> parent */
#define RING_RO                                                                \
	1 /* the same, its halves in memfds, each read-only to the
		     other side (its consumer cannot write the producer's) */

/*
 * Raw-slot ring (small streams): RING_SLOTS slots of SLOT_BYTES. A
 * record's first slot starts with its seq: the producer stores it
 * (release) after the payload, the consumer loads it (acquire) at its
 * head. head: the consumer stores it (release) every SLOT_PUBLISH
 * positions; the producer loads it (acquire) when its cached head says
 * "full". No tail is shared.
 */
struct slot_ring {
	alignas(128) unsigned char slots[RING_BYTES];
	struct index_line head;
};

#define SLOT_UP 0 /* the raw-slot ring in the shared mapping */
#define SLOT_RO 1 /* the same, slots and head in memfds (read-only peer) */

/*
 * Everything the two processes share for the raw mechanisms and the
 * bench's own coordination. Mapped MAP_SHARED | MAP_ANONYMOUS once, before
 * any fork, and zeroed before each scenario's fork.
 */
struct shared {
	/* Two-party barrier: both write arrived (acq_rel RMW); the last to
	 * arrive stores gen (release), the other spins on it (acquire). */
	struct {
		alignas(128) _Atomic uint32_t arrived;
		_Atomic uint32_t gen;
	} bar;
	/* Set by a side that fails, read by the other's barrier wait. */
	struct index_line failed;
	/* Producer's (child's) time of the last stream job, in ticks;
	 * written before a barrier, read by the parent after it. */
	struct index_line tx_ticks;
	/* rtt-spin "raw": the parent writes lping, the child lpong. */
	struct rtt_line lping, lpong;
	/* rtt-spin 64B "raw-msg": the message's seq is the flag. */
	struct bench_spin_line ping, pong;
	struct bench_ev_line ev_ping, ev_pong;
	/* cm-win: messages received so far, consumer stores (release) every
	 * win_publish messages, producer loads (acquire) at its limit. */
	struct index_line win;
	/* Raw byte ring of the 4 KiB streams: RING_UP, child -> parent. */
	struct raw_ring ring[1];
	/* Raw-slot ring of the small streams: SLOT_UP, child -> parent. */
	struct slot_ring slot[1];
};

static struct shared *sh;

/* Raw ring record header (8 bytes); kind 0 pads to the end of the ring. */
struct rec_hdr {
	uint32_t len;
	uint32_t kind;
};

#define REC_PAD 0u
#define REC_MSG 1u

/* ---------------------------------------------------------------------- */
/* Process state (each process has its own copy after fork)               */

static pid_t parent_pid;
static volatile sig_atomic_t child_expected; /* its exit is planned */
static const char *volatile scenario_name = "setup";

static int efd_ping = -1, efd_pong = -1; /* raw eventfds */
static int usock = -1;			 /* this end of the unix pair */
static cmesh_node *cm_node;
static cmesh_sender *cm_tx;
static cmesh_receiver *cm_rx;

/* Raw ring private positions (never read back from shared memory). */
struct ring_side {
	uint64_t pos;	/* producer: tail; consumer: head */
	uint64_t cache; /* producer: head; consumer: tail */
};

static struct ring_side ring_prod[2], ring_cons[2];

/*
 * Where a raw ring's bytes and indices are, in this process: RING_UP in
 * the shared mapping; RING_RO in two memfds made before any fork:
 * ringro_fd[0] the producer's half (data, tail), ringro_fd[1] the
 * consumer's (head), each mapped read-write by its owner and read-only by
 * the other (mapped again in each process: ringro_map()).
 */
struct ring_view {
	unsigned char *data;
	_Atomic uint64_t *tail, *head;
};

static struct ring_view rings[2];
static int ringro_fd[2] = { -1, -1 };
static struct raw_ring *ringro_prod;
static struct index_line *ringro_cons;
static pid_t ringro_pid;

/* Raw-slot ring private positions (never read back from shared memory). */
struct slot_prod {
	uint64_t pos;	/* next position to write */
	uint64_t cache; /* the consumer's head, as last loaded */
};

struct slot_cons {
	uint64_t head;	    /* next position to read */
	uint64_t published; /* the head as last stored for the producer */
};

static struct slot_prod slot_prod[2];
static struct slot_cons slot_cons[2];

/*
 * Where a raw-slot ring's slots and head are, in this process: SLOT_UP in
 * the shared mapping; SLOT_RO in two memfds made before any fork:
 * slotro_fd[0] the producer's (slots), slotro_fd[1] the consumer's
 * (head), each mapped read-write by its owner and read-only by the other
 * (mapped again in each process: slotro_map()).
 */
struct slot_view {
	unsigned char *slots;
	_Atomic uint64_t *head;
};

static struct slot_view slotv[2];
static int slotro_fd[2] = { -1, -1 };
static unsigned char *slotro_slots;
static struct index_line *slotro_head;
static pid_t slotro_pid;

/* Stream buffers: message copied out of tx_buf and into rx_buf. */
static alignas(64) unsigned char tx_buf[MSG_BIG];
static alignas(64) unsigned char rx_buf[MSG_BIG];

/* ---------------------------------------------------------------------- */
/* Failure, signals, watchdog                                             */

static size_t fmt_int(char *buf, long v)
{
	char tmp[24];
	size_t n = 0, k = 0;
	unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		buf[k++] = '-';
	while (n)
		buf[k++] = tmp[--n];
	return k;
}

/* Async-signal-safe: appends s to buf. */
static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		buf[at++] = *s++;
	return at;
}

/* Parent: kills and reaps the child, if any. */
static void kill_child(void)
{
	child_expected = 1;
	bench_child_kill();
}

/* After bench_die()'s message: tells the other side, ends the child. */
static void die_hook(void)
{
	if (sh)
		atomic_store_explicit(&sh->failed.v, 1, memory_order_relaxed);
	if (bench_is_child)
		_exit(2);
	kill_child();
}

/* Parent: a child that exits before it is told to is a failure. */
static void on_sigchld(int sig)
{
	int saved = errno, st;
	pid_t pid = bench_child_pid;
	char msg[256];
	size_t n = 0;

	(void)sig;
	if (child_expected || pid <= 0 || waitpid(pid, &st, WNOHANG) != pid) {
		errno = saved;
		return;
	}
	n = put_str(msg, n, sizeof(msg), "bench_xproc: child died during '");
	n = put_str(msg, n, sizeof(msg), scenario_name);
	if (WIFEXITED(st)) {
		n = put_str(msg, n, sizeof(msg), "': exit status ");
		n += fmt_int(msg + n, WEXITSTATUS(st));
	} else if (WIFSIGNALED(st)) {
		n = put_str(msg, n, sizeof(msg), "': killed by signal ");
		n += fmt_int(msg + n, WTERMSIG(st));
	} else {
		n = put_str(msg, n, sizeof(msg), "'");
	}
	msg[n++] = '\n';
	bench_write_err(msg, n);
	_exit(2);
}

static void on_alarm(int sig)
{
	char msg[256];
	size_t n = 0;

	(void)sig;
	n = put_str(msg, n, sizeof(msg), "bench_xproc: watchdog: scenario '");
	n = put_str(msg, n, sizeof(msg), scenario_name);
	n = put_str(msg, n, sizeof(msg), "' hung, killing the child\n");
	bench_write_err(msg, n);
	kill_child();
	_exit(3);
}

static void install_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
}

/* ---------------------------------------------------------------------- */
/* Utilities                                                              */

static inline uint64_t load_seq(const unsigned char *buf)
{
	uint64_t v;

	memcpy(&v, buf, sizeof(v));
	return v;
}

static inline void store_seq(unsigned char *buf, uint64_t v)
{
	memcpy(buf, &v, sizeof(v));
}

/* ---------------------------------------------------------------------- */
/* Two-process barrier                                                    */

static void barrier(void)
{
	uint32_t g = atomic_load_explicit(&sh->bar.gen, memory_order_acquire);
	uint64_t spins = 0, limit = 0;

	/* acq_rel: the last to arrive acquires the first one's writes. */
	if (atomic_fetch_add_explicit(&sh->bar.arrived, 1,
				      memory_order_acq_rel) == 1) {
		atomic_store_explicit(&sh->bar.arrived, 0,
				      memory_order_relaxed);
		/* Pairs with the acquire load in the other side's loop. */
		atomic_store_explicit(&sh->bar.gen, g + 1,
				      memory_order_release);
		return;
	}
	while (atomic_load_explicit(&sh->bar.gen, memory_order_acquire) == g) {
		ck_pr_stall();
		if (++spins % 4096)
			continue;
		if (atomic_load_explicit(&sh->failed.v, memory_order_relaxed)) {
			if (bench_is_child)
				_exit(2);
			bench_die("the child failed", EPIPE);
		}
		if (bench_is_child && getppid() != parent_pid)
			_exit(2);
		if (!limit)
			limit = bench_mono_ns() + BARRIER_TIMEOUT_NS;
		else if (bench_mono_ns() > limit)
			bench_die("the other process never reached the barrier",
				  ETIMEDOUT);
		if (spins > (1u << 22))
			sched_yield();
	}
}

/* ---------------------------------------------------------------------- */
/* Raw mechanisms                                                         */

static inline void unix_put(const void *buf, size_t len)
{
	ssize_t n;

	while ((n = send(usock, buf, len, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n != (ssize_t)len)
		bench_die("unix send", n < 0 ? errno : EMSGSIZE);
}

static inline void unix_get(void *buf, size_t len)
{
	ssize_t n;

	while ((n = recv(usock, buf, len, 0)) < 0 && errno == EINTR)
		;
	if (n != (ssize_t)len)
		bench_die("unix recv", n < 0  ? errno :
				       n == 0 ? EPIPE :
						EMSGSIZE);
}

static inline uint64_t rec_span(uint32_t len)
{
	return sizeof(struct rec_hdr) + (((uint64_t)len + 7u) & ~7ull);
}

/* Raw ring producer: copies one record in and publishes it. */
static inline void ring_put(int r, const void *buf, uint32_t len)
{
	const struct ring_view *rg = &rings[r];
	struct ring_side *p = &ring_prod[r];
	uint64_t span = rec_span(len), off = p->pos & (RING_BYTES - 1);
	uint64_t need = off + span > RING_BYTES ? span + RING_BYTES - off :
						  span;
	struct rec_hdr h;

	while (p->pos + need - p->cache > RING_BYTES) {
		/* Pairs with the consumer's release store of head. */
		p->cache = atomic_load_explicit(rg->head, memory_order_acquire);
		if (p->pos + need - p->cache > RING_BYTES)
			ck_pr_stall();
	}
	if (need != span) {
		h.len = (uint32_t)(RING_BYTES - off - sizeof(h));
		h.kind = REC_PAD;
		memcpy(rg->data + off, &h, sizeof(h));
		p->pos += RING_BYTES - off;
		off = 0;
	}
	h.len = len;
	h.kind = REC_MSG;
	memcpy(rg->data + off, &h, sizeof(h));
	memcpy(rg->data + off + sizeof(h), buf, len);
	p->pos += span;
	/* Pairs with the consumer's acquire load of tail. */
	atomic_store_explicit(rg->tail, p->pos, memory_order_release);
}

/* Raw ring consumer: copies the next record out, gives its space back. */
static inline uint32_t ring_get(int r, void *buf, uint32_t cap)
{
	const struct ring_view *rg = &rings[r];
	struct ring_side *c = &ring_cons[r];

	for (;;) {
		uint64_t off;
		struct rec_hdr h;

		while (c->pos == c->cache) {
			/* Pairs with the producer's release store of tail. */
			c->cache = atomic_load_explicit(rg->tail,
							memory_order_acquire);
			if (c->pos == c->cache)
				ck_pr_stall();
		}
		off = c->pos & (RING_BYTES - 1);
		memcpy(&h, rg->data + off, sizeof(h));
		if (h.kind == REC_PAD) {
			c->pos += RING_BYTES - off;
			continue;
		}
		if (h.len > cap || off + rec_span(h.len) > RING_BYTES)
			bench_die("raw ring: bad record", EPROTO);
		memcpy(buf, rg->data + off + sizeof(h), h.len);
		c->pos += rec_span(h.len);
		/* Pairs with the producer's acquire load of head. */
		atomic_store_explicit(rg->head, c->pos, memory_order_release);
		return h.len;
	}
}

/*
 * rtt-spin line protocol: copies `len` payload bytes into l (the bytes
 * past the first line first, then the first line's), then stores seq.
 */
static inline void line_put(struct rtt_line *l, const unsigned char *buf,
			    uint32_t len, uint64_t seq)
{
	const uint32_t first = SLOT_BYTES - SEQ_BYTES;

	if (len > first)
		memcpy(l->body + first, buf + first, len - first);
	memcpy(l->body, buf, len > first ? first : len);
	/* Pairs with the acquire load in line_get(). */
	atomic_store_explicit(&l->seq, seq, memory_order_release);
}

/* Waits until l carries `seq`, then copies its `len` payload bytes out. */
static inline void line_get(const struct rtt_line *l, unsigned char *buf,
			    uint32_t len, uint64_t seq)
{
	/* Pairs with the release store in line_put(). */
	while (atomic_load_explicit(&l->seq, memory_order_acquire) != seq)
		ck_pr_stall();
	memcpy(buf, l->body, len);
}

/* Positions of a raw-slot record of `len` payload bytes. */
static inline uint64_t slot_span(uint32_t len)
{
	return (SEQ_BYTES + (uint64_t)len + SLOT_BYTES - 1) / SLOT_BYTES;
}

static inline _Atomic uint64_t *slot_seq(unsigned char *slots, uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)(slots + (pos & (RING_SLOTS - 1)) *
							    SLOT_BYTES);
}

/* Byte `at` (< RING_BYTES) of the slots onward, wrapping to slot 0. */
static inline void slot_copy_in(unsigned char *slots, uint64_t at,
				const void *buf, uint32_t len)
{
	uint64_t room = RING_BYTES - at;

	if (len <= room) {
		memcpy(slots + at, buf, len);
		return;
	}
	memcpy(slots + at, buf, room);
	memcpy(slots, (const unsigned char *)buf + room, len - room);
}

static inline void slot_copy_out(void *buf, const unsigned char *slots,
				 uint64_t at, uint32_t len)
{
	uint64_t room = RING_BYTES - at;

	if (len <= room) {
		memcpy(buf, slots + at, len);
		return;
	}
	memcpy(buf, slots + at, room);
	memcpy((unsigned char *)buf + room, slots, len - room);
}

/* Raw-slot producer: copies one record in and publishes it. */
static inline void slot_put(int r, const void *buf, uint32_t len)
{
	const struct slot_view *v = &slotv[r];
	struct slot_prod *p = &slot_prod[r];
	uint64_t pos = p->pos, k = slot_span(len);

	while (pos + k - p->cache > RING_SLOTS) {
		/* Pairs with the consumer's release store of head. */
		p->cache = atomic_load_explicit(v->head, memory_order_acquire);
		if (pos + k - p->cache > RING_SLOTS)
			ck_pr_stall();
	}
	slot_copy_in(v->slots,
		     (pos & (RING_SLOTS - 1)) * SLOT_BYTES + SEQ_BYTES, buf,
		     len);
	/* Pairs with the consumer's acquire load of this seq. */
	atomic_store_explicit(slot_seq(v->slots, pos), pos + 1,
			      memory_order_release);
	p->pos = pos + k;
}

/*
 * Raw-slot consumer: waits for the record at its head, copies it out,
 * publishes its head every SLOT_PUBLISH positions.
 */
static inline void slot_get(int r, void *buf, uint32_t len)
{
	const struct slot_view *v = &slotv[r];
	struct slot_cons *c = &slot_cons[r];
	uint64_t head = c->head;
	_Atomic uint64_t *seq = slot_seq(v->slots, head);

	/* Pairs with the producer's release store of seq. */
	while (atomic_load_explicit(seq, memory_order_acquire) != head + 1)
		ck_pr_stall();
	slot_copy_out(buf, v->slots,
		      (head & (RING_SLOTS - 1)) * SLOT_BYTES + SEQ_BYTES, len);
	c->head = head + slot_span(len);
	if (c->head - c->published >= SLOT_PUBLISH) {
		c->published = c->head;
		/* Pairs with the producer's acquire load of head. */
		atomic_store_explicit(v->head, c->head, memory_order_release);
	}
}

/* ---------------------------------------------------------------------- */
/* cmesh                                                                  */

/* Joins over `sock` with messages of `type` both ways. */
static void cm_join(int sock, const cmesh_type *type, int64_t spin_ns,
		    uint32_t ring_size)
{
	cmesh_node_opts opts = CMESH_NODE_OPTS_INIT;
	int rc;

	opts.spin_ns = spin_ns;
	opts.ring_size = ring_size;
	rc = cmesh_node_join_socket(sock, type, type, &opts, &cm_node, &cm_tx,
				    &cm_rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
}

static void cm_leave(void)
{
	cmesh_sender_free(cm_tx);
	cmesh_receiver_free(cm_rx);
	cmesh_node_free(cm_node);
	cm_tx = NULL;
	cm_rx = NULL;
	cm_node = NULL;
}

static inline void cm_send(const void *msg, const void *trail, size_t len)
{
	int rc = cmesh_sender_send(cm_tx, msg, trail, len);

	if (rc < 0)
		bench_die("cmesh_sender_send", rc);
}

static inline void cm_recv(void *msg, void *trail, size_t cap, size_t want)
{
	int rc = cmesh_receiver_recv(cm_rx, msg, trail, cap);

	if (rc < 0)
		bench_die("cmesh_receiver_recv", rc);
	if ((size_t)rc != want)
		bench_die("cmesh_receiver_recv: wrong trailing length", EPROTO);
}

/* ---------------------------------------------------------------------- */
/* Jobs: one side of one timed run of one row                             */

struct job {
	uint64_t base;	   /* first seq */
	uint64_t warm;	   /* rtt: unrecorded round trips first */
	uint64_t n;	   /* rtt: recorded round trips; stream: messages */
	uint64_t *samples; /* parent: per rt / per batch ticks; or NULL */
	uint64_t elapsed;  /* parent: ticks of the recorded part */
	uint32_t size;	   /* stream: payload bytes per message */
	uint32_t msz;	   /* stream: of which the cmesh type's struct */
	uint32_t batch;	   /* stream: messages per sample */
	uint64_t win;	   /* cm-win: most messages in flight */
	uint64_t win_publish;
};

/* rtt-spin 64B raw-msg: the message's own seq is the flag. */
BENCH_RTT_PING(spin_ping_side, struct job, bench_spin_put(&sh->ping, &m),
	       bench_spin_get(&sh->pong, seq, &r))
BENCH_RTT_PONG(spin_pong_side, struct job, bench_spin_get(&sh->ping, seq, &r),
	       bench_spin_put(&sh->pong, &r))
BENCH_RTT_PING(ev_ping_side, struct job,
	       bench_ev_put(&sh->ev_ping, efd_ping, &m),
	       bench_ev_get(&sh->ev_pong, efd_pong, &r))
BENCH_RTT_PONG(ev_pong_side, struct job,
	       bench_ev_get(&sh->ev_ping, efd_ping, &r),
	       bench_ev_put(&sh->ev_pong, efd_pong, &r))
BENCH_RTT_PING(unix_ping_side, struct job, unix_put(&m, sizeof(m)),
	       unix_get(&r, sizeof(r)))
BENCH_RTT_PONG(unix_pong_side, struct job, unix_get(&r, sizeof(r)),
	       unix_put(&r, sizeof(r)))
/*
 * raw-ro: the lines of the raw rtt-spin protocol, each direction's in a
 * memfd of its writer's (ro_fd[0]: the parent's ping, ro_fd[1]: the
 * child's pong), mapped read-write by the writer and read-only by the
 * reader. Each process maps them for itself (a child remaps what it
 * inherited).
 */
static int ro_fd[2] = { -1, -1 };
static struct rtt_line *ro_own, *ro_peer;
static pid_t ro_pid;

/* raw-ro-wake's words, in the same memfds past the line (never reset). */
struct ro_wake {
	alignas(64) _Atomic uint64_t tail;     /* the writer's: claims */
	alignas(64) _Atomic uint32_t sleeping; /* the reader's: never set */
};

#define RO_WAKE_OFF 1024
_Static_assert(RO_WAKE_OFF >= sizeof(struct rtt_line) &&
		       RO_WAKE_OFF + sizeof(struct ro_wake) <= 4096,
	       "raw-ro-wake's words in the memfd's page, past the line");

static inline struct ro_wake *ro_wake_of(const struct rtt_line *l)
{
	return (struct ro_wake *)(void *)((unsigned char *)(uintptr_t)l +
					  RO_WAKE_OFF);
}

static void *ro_map_one(int fd, int prot)
{
	void *p = mmap(NULL, 4096, prot, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		bench_die("mmap raw-ro line", errno);
	return p;
}

static void ro_map(void)
{
	if (ro_pid == getpid())
		return;
	if (ro_own) {
		munmap(ro_own, 4096);
		munmap(ro_peer, 4096);
	}
	ro_own = ro_map_one(ro_fd[bench_is_child], PROT_READ | PROT_WRITE);
	ro_peer = ro_map_one(ro_fd[!bench_is_child], PROT_READ);
	ro_pid = getpid();
}

/*
 * raw-ro-wake's put: a locked increment of our claim word, the publish,
 * then a look at the reader's sleeping word (see the top of the file).
 */
static inline void lro_wake_put(const unsigned char *buf, uint32_t len,
				uint64_t seq)
{
	atomic_fetch_add_explicit(&ro_wake_of(ro_own)->tail, 1,
				  memory_order_seq_cst);
	line_put(ro_own, buf, len, seq);
	if (atomic_load_explicit(&ro_wake_of(ro_peer)->sleeping,
				 memory_order_relaxed))
		bench_die("raw-ro-wake: a sleeping reader", EPROTO);
}

/*
 * raw-ring-ro: each direction a ring of RING_SLOTS 64-byte slots in a
 * memfd of its writer's (rr_fd[0]: the parent's pings, rr_fd[1]: the
 * child's pongs), read-only to the reader, as cmesh's lanes are laid out:
 * round trip `seq` takes the next k = ceil((8 + S) / 64) slots (position
 * seq * k), its seq word (seq + 1: zero is empty) first, stored (release)
 * after the payload, and the writer then asks for the slots of the
 * message 4 on for writing (the same prefetch a cmesh producer makes), so
 * its next stores need no line to cross. No flow control: a ping-pong has
 * one message in flight each way.
 */
static int rr_fd[2] = { -1, -1 };
static unsigned char *rr_own, *rr_peer;
static pid_t rr_pid;

#define RR_AHEAD 4u

static void rr_map(void)
{
	if (rr_pid == getpid())
		return;
	if (rr_own) {
		munmap(rr_own, RING_BYTES);
		munmap(rr_peer, RING_BYTES);
	}
	rr_own = mmap(NULL, RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED,
		      rr_fd[bench_is_child], 0);
	rr_peer = mmap(NULL, RING_BYTES, PROT_READ, MAP_SHARED,
		       rr_fd[!bench_is_child], 0);
	if (rr_own == MAP_FAILED || rr_peer == MAP_FAILED)
		bench_die("mmap raw-ring-ro", errno);
	rr_pid = getpid();
}

/* The first of the k slots of message `seq`. */
static inline unsigned char *rr_slot(unsigned char *ring, uint64_t seq,
				     uint32_t len)
{
	return ring + ((seq * slot_span(len)) & (RING_SLOTS - 1)) * SLOT_BYTES;
}

static inline void rr_put(const unsigned char *buf, uint32_t len, uint64_t seq)
{
	const uint32_t first = SLOT_BYTES - SEQ_BYTES;
	unsigned char *s = rr_slot(rr_own, seq, len), *ahead;

	if (len > first)
		memcpy(s + SLOT_BYTES, buf + first, len - first);
	memcpy(s + SEQ_BYTES, buf, len > first ? first : len);
	/* Pairs with the acquire load in rr_get(). */
	atomic_store_explicit((_Atomic uint64_t *)(void *)s, seq + 1,
			      memory_order_release);
	ahead = rr_slot(rr_own, seq + RR_AHEAD, len);
	__builtin_prefetch(ahead, 1, 3);
	if (len > first)
		__builtin_prefetch(ahead + SLOT_BYTES, 1, 3);
}

static inline void rr_get(unsigned char *buf, uint32_t len, uint64_t seq)
{
	const uint32_t first = SLOT_BYTES - SEQ_BYTES;
	const unsigned char *s = rr_slot(rr_peer, seq, len);

	/* Pairs with the release store in rr_put(). */
	while (atomic_load_explicit((const _Atomic uint64_t *)(const void *)s,
				    memory_order_acquire) != seq + 1)
		ck_pr_stall();
	memcpy(buf, s + SEQ_BYTES, len > first ? first : len);
	if (len > first)
		memcpy(buf + first, s + SLOT_BYTES, len - first);
}

/* Echo of round trip `seq` stamped t0 (the stamp from 16 bytes on). */
static inline void check_echo(const unsigned char *r, uint32_t size,
			      uint64_t seq, uint64_t t0)
{
	struct bench_msg e = { .seq = load_seq(r), .stamp = t0 };

	if (size >= 16)
		e.stamp = load_seq(r + size - 8);
	bench_check_echo(&e, seq, t0);
}

/*
 * rtt-spin pinger of S-byte messages (S a constant), as BENCH_RTT_PING:
 * the round trip's number in the message's first 8 bytes and, from 16
 * bytes, the time stamp in its last 8. PUT sends m, GET receives the echo
 * into r; both may use seq.
 */
#define SIZED_PING(name, S, PUT, GET)                                          \
	static void name(void *arg)                                            \
	{                                                                      \
		struct job *c = arg;                                           \
		alignas(64) unsigned char m[RTT_MAX], r[RTT_MAX];              \
		uint64_t n = c->warm + c->n, start = 0;                        \
                                                                               \
		memset(m, 0x5a, sizeof(m));                                    \
		for (uint64_t i = 0; i < n; i++) {                             \
			uint64_t seq = c->base + i, t0, t1;                    \
                                                                               \
			if (i == c->warm)                                      \
				start = bench_now_ticks();                     \
			t0 = bench_now_ticks();                                \
			store_seq(m, seq);                                     \
			if ((S) >= 16)                                         \
				store_seq(m + (S)-8, t0);                      \
			PUT;                                                   \
			GET;                                                   \
			t1 = bench_now_ticks();                                \
			check_echo(r, (S), seq, t0);                           \
			if (i >= c->warm)                                      \
				c->samples[i - c->warm] = t1 - t0;             \
		}                                                              \
		c->elapsed += bench_now_ticks() - start;                       \
	}

/* rtt-spin ponger: GET receives message `seq` into r, PUT echoes r. */
#define SIZED_PONG(name, GET, PUT)                                             \
	BENCH_RTT_PONG_BUF(name, struct job,                                   \
			   alignas(64) unsigned char r[RTT_MAX], GET, PUT)

/* Side `name`: maps its memory (map()), then runs name##_run. */
#define MAPPED_SIDE(name, map)                                                 \
	static void name(void *arg)                                            \
	{                                                                      \
		map();                                                         \
		name##_run(arg);                                               \
	}

/*
 * The sides of the rtt-spin rows of size S: line_* (raw), lro_* (raw-ro),
 * rr_* (raw-ring-ro), cm_*_S (cmesh, joined with the S-byte type).
 */
#define RTT_SPIN_SIDES(S)                                                      \
	SIZED_PING(line_ping_##S, S, line_put(&sh->lping, m, S, seq),          \
		   line_get(&sh->lpong, r, S, seq))                            \
	SIZED_PONG(line_pong_##S, line_get(&sh->lping, r, S, seq),             \
		   line_put(&sh->lpong, r, S, seq))                            \
	SIZED_PING(lro_ping_##S##_run, S, line_put(ro_own, m, S, seq),         \
		   line_get(ro_peer, r, S, seq))                               \
	SIZED_PONG(lro_pong_##S##_run, line_get(ro_peer, r, S, seq),           \
		   line_put(ro_own, r, S, seq))                                \
	MAPPED_SIDE(lro_ping_##S, ro_map)                                      \
	MAPPED_SIDE(lro_pong_##S, ro_map)                                      \
	SIZED_PING(lw_ping_##S##_run, S, lro_wake_put(m, S, seq),              \
		   line_get(ro_peer, r, S, seq))                               \
	SIZED_PONG(lw_pong_##S##_run, line_get(ro_peer, r, S, seq),            \
		   lro_wake_put(r, S, seq))                                    \
	MAPPED_SIDE(lw_ping_##S, ro_map)                                       \
	MAPPED_SIDE(lw_pong_##S, ro_map)                                       \
	SIZED_PING(rr_ping_##S##_run, S, rr_put(m, S, seq), rr_get(r, S, seq)) \
	SIZED_PONG(rr_pong_##S##_run, rr_get(r, S, seq), rr_put(r, S, seq))    \
	MAPPED_SIDE(rr_ping_##S, rr_map)                                       \
	MAPPED_SIDE(rr_pong_##S, rr_map)                                       \
	SIZED_PING(cm_ping_##S, S, cm_send(m, NULL, 0),                        \
		   cm_recv(r, NULL, 0, 0))                                     \
	SIZED_PONG(cm_pong_##S, cm_recv(r, NULL, 0, 0), cm_send(r, NULL, 0))

RTT_SPIN_SIDES(8)
RTT_SPIN_SIDES(56)
RTT_SPIN_SIDES(64)
RTT_SPIN_SIDES(120)

/* rtt-sleep: cmesh with the 64-byte struct bench_msg. */
BENCH_RTT_PING(cm_ping_side, struct job, cm_send(&m, NULL, 0),
	       cm_recv(&r, NULL, 0, 0))
BENCH_RTT_PONG(cm_pong_side, struct job, cm_recv(&r, NULL, 0, 0),
	       cm_send(&r, NULL, 0))

/*
 * Stream producer (child): PUT sends tx_buf (seq in its first 8 bytes,
 * j->size bytes). Stores its time for the parent.
 */
#define STREAM_PRODUCER(name, BEFORE, PUT)                                     \
	static void name(void *arg)                                            \
	{                                                                      \
		struct job *j = arg;                                           \
		uint64_t t0 = bench_now_ticks(), limit = 0;                    \
                                                                               \
		(void)limit;                                                   \
		for (uint64_t i = 0; i < j->n; i++) {                          \
			uint64_t seq = j->base + i;                            \
                                                                               \
			BEFORE;                                                \
			store_seq(tx_buf, seq);                                \
			PUT;                                                   \
		}                                                              \
		atomic_store_explicit(&sh->tx_ticks.v, bench_now_ticks() - t0, \
				      memory_order_relaxed);                   \
	}

/*
 * Stream consumer (parent): RECV receives the next message into rx_buf,
 * AFTER runs after its sequence number is checked.
 */
#define STREAM_CONSUMER(name, RECV, AFTER)                                     \
	static void name(void *arg)                                            \
	{                                                                      \
		struct job *j = arg;                                           \
		uint64_t t0 = bench_now_ticks(), prev = t0, k = 0;             \
                                                                               \
		for (uint64_t i = 0; i < j->n; i++) {                          \
			RECV;                                                  \
			bench_check_seq(load_seq(rx_buf), j->base + i);        \
			AFTER;                                                 \
			if (j->samples && (i + 1) % j->batch == 0) {           \
				uint64_t t = bench_now_ticks();                \
                                                                               \
				j->samples[k++] = t - prev;                    \
				prev = t;                                      \
			}                                                      \
		}                                                              \
		j->elapsed = bench_now_ticks() - t0;                           \
	}

static inline void ring_get_exact(int r, uint32_t size)
{
	if (ring_get(r, rx_buf, sizeof(rx_buf)) != size)
		bench_die("raw ring: wrong length", EPROTO);
}

/* RING_RO's halves in this process (the producer is the child). */
static void ringro_map(void)
{
	int prot_own = PROT_READ | PROT_WRITE;

	if (ringro_pid == getpid())
		return;
	if (ringro_prod) {
		munmap(ringro_prod, sizeof(*ringro_prod));
		munmap(ringro_cons, sizeof(*ringro_cons));
	}
	ringro_prod = mmap(NULL, sizeof(*ringro_prod),
			   bench_is_child ? prot_own : PROT_READ, MAP_SHARED,
			   ringro_fd[0], 0);
	ringro_cons = mmap(NULL, sizeof(*ringro_cons),
			   bench_is_child ? PROT_READ : prot_own, MAP_SHARED,
			   ringro_fd[1], 0);
	if (ringro_prod == MAP_FAILED || ringro_cons == MAP_FAILED)
		bench_die("mmap raw-ro ring", errno);
	rings[RING_RO] = (struct ring_view){ ringro_prod->data,
					     &ringro_prod->tail.v,
					     &ringro_cons->v };
	ringro_pid = getpid();
}

/* SLOT_RO's halves in this process (the producer is the child). */
static void slotro_map(void)
{
	int prot_own = PROT_READ | PROT_WRITE;

	if (slotro_pid == getpid())
		return;
	if (slotro_slots) {
		munmap(slotro_slots, RING_BYTES);
		munmap(slotro_head, sizeof(*slotro_head));
	}
	slotro_slots = mmap(NULL, RING_BYTES,
			    bench_is_child ? prot_own : PROT_READ, MAP_SHARED,
			    slotro_fd[0], 0);
	slotro_head = mmap(NULL, sizeof(*slotro_head),
			   bench_is_child ? PROT_READ : prot_own, MAP_SHARED,
			   slotro_fd[1], 0);
	if (slotro_slots == MAP_FAILED || slotro_head == MAP_FAILED)
		bench_die("mmap raw-slot-ro ring", errno);
	slotv[SLOT_RO] = (struct slot_view){ slotro_slots, &slotro_head->v };
	slotro_pid = getpid();
}

/*
 * The sides of the small-stream raw rows of size S: slot_* (raw-slot),
 * slotro_* (raw-slot-ro).
 */
#define SLOT_SIDES(S)                                                          \
	STREAM_PRODUCER(slot_producer_##S, (void)0,                            \
			slot_put(SLOT_UP, tx_buf, S))                          \
	STREAM_CONSUMER(slot_consumer_##S, slot_get(SLOT_UP, rx_buf, S),       \
			(void)0)                                               \
	STREAM_PRODUCER(slotro_run_producer_##S, (void)0,                      \
			slot_put(SLOT_RO, tx_buf, S))                          \
	STREAM_CONSUMER(slotro_run_consumer_##S, slot_get(SLOT_RO, rx_buf, S), \
			(void)0)                                               \
	static void slotro_producer_##S(void *arg)                             \
	{                                                                      \
		slotro_map();                                                  \
		slotro_run_producer_##S(arg);                                  \
	}                                                                      \
	static void slotro_consumer_##S(void *arg)                             \
	{                                                                      \
		slotro_map();                                                  \
		slotro_run_consumer_##S(arg);                                  \
	}

SLOT_SIDES(8)
SLOT_SIDES(56)
SLOT_SIDES(64)
SLOT_SIDES(120)

/* cm-win producer: waits until message `seq` is within the window. */
static inline void win_wait(const struct job *j, uint64_t seq, uint64_t *limit)
{
	while (seq >= *limit) {
		/* Pairs with the consumer's release store in win_note(). */
		*limit =
			atomic_load_explicit(&sh->win.v, memory_order_acquire) +
			j->win;
		if (seq >= *limit)
			ck_pr_stall();
	}
}

static inline void win_note(const struct job *j, uint64_t i)
{
	if ((i + 1) % j->win_publish == 0 || i + 1 == j->n)
		/* Pairs with the acquire load in win_wait(). */
		atomic_store_explicit(&sh->win.v, j->base + i + 1,
				      memory_order_release);
}

STREAM_PRODUCER(ring_producer, (void)0, ring_put(RING_UP, tx_buf, j->size))
STREAM_CONSUMER(ring_consumer, ring_get_exact(RING_UP, j->size), (void)0)
STREAM_PRODUCER(ringro_run_producer, (void)0,
		ring_put(RING_RO, tx_buf, j->size))
STREAM_CONSUMER(ringro_run_consumer, ring_get_exact(RING_RO, j->size), (void)0)

static void ringro_producer(void *arg)
{
	ringro_map();
	ringro_run_producer(arg);
}

static void ringro_consumer(void *arg)
{
	ringro_map();
	ringro_run_consumer(arg);
}
STREAM_PRODUCER(unix_producer, (void)0, unix_put(tx_buf, j->size))
STREAM_CONSUMER(unix_consumer, unix_get(rx_buf, j->size), (void)0)
/* cmesh: the j->msz-byte struct + the rest as trailing bytes. */
STREAM_PRODUCER(cm_producer, (void)0,
		cm_send(tx_buf, j->size > j->msz ? tx_buf + j->msz : NULL,
			j->size - j->msz))
STREAM_CONSUMER(cm_consumer,
		cm_recv(rx_buf, rx_buf + j->msz, sizeof(rx_buf) - j->msz,
			j->size - j->msz),
		(void)0)

STREAM_PRODUCER(cmwin_producer, win_wait(j, seq, &limit),
		cm_send(tx_buf, j->size > j->msz ? tx_buf + j->msz : NULL,
			j->size - j->msz))
STREAM_CONSUMER(cmwin_consumer,
		cm_recv(rx_buf, rx_buf + j->msz, sizeof(rx_buf) - j->msz,
			j->size - j->msz),
		win_note(j, i))

/* ---------------------------------------------------------------------- */
/* Scenarios                                                              */

/* Rows of a scenario, printed in this order. */
#define IMPL_BASE 0  /* the baseline: ratios and the target are against it */
#define IMPL_CMESH 1 /* the target row (if the scenario has a target) */
#define IMPL_INFO 2  /* info rows */
#define IMPL_INFO2 3
#define IMPL_INFO3 4
#define IMPL_INFO4 5
#define NIMPL 6

#define NEED_CMESH 1u
#define NEED_EFD 2u
#define NEED_UNIX 4u

struct impl {
	const char *name;     /* NULL: no such row */
	bench_side_fn *a, *b; /* parent side (CPU 0), child side (CPU 1) */
	struct bench_result res;
};

/* A scenario's iteration count: full run, smoke run, the least. */
struct counts {
	uint64_t full, smoke, min;
};

struct scenario {
	const char *name;
	int group;	 /* 1..4, for --only */
	bool stream;	 /* else round trips */
	bool spins;	 /* meaningless without two CPUs */
	bool has_target; /* compare IMPL_CMESH with IMPL_BASE */
	double target;	 /* ratio of p50 (rtt, <=) or rate (stream, >=) */
	uint32_t needs;	 /* NEED_* */
	const cmesh_type *type; /* NEED_CMESH: the message type, both ways */
	int64_t spin_ns;	/* cmesh receivers */
	uint32_t ring_size;	/* cmesh rings, 0: default */
	uint32_t size;		/* bytes per message */
	uint32_t batch;		/* stream: messages per latency sample */
	struct counts count;	/* iters: full, smoke, at least */
	uint64_t iters;		/* rtt: round trips; stream: messages per rep */
	uint64_t reps;		/* stream: repetitions */
	struct impl impl[NIMPL];
	bool skipped;
	const char *skip_why;
	double secs;		  /* wall time, fork to reap */
	struct bench_parts parts; /* spread of the ratio over rounds / reps */
};

/* cm-win's window: 3/4 of the `size`-byte messages a cmesh ring holds. */
static uint64_t cm_win(uint32_t size)
{
	uint64_t fit = RING_BYTES / CM_REC_SPAN((uint64_t)size);

	return fit * 3 / 4 ? fit * 3 / 4 : 1;
}

/* Every round's / repetition's ratio is kept for the median. */
_Static_assert(RTT_ROUNDS <= BENCH_MAX_PARTS, "parts hold every round");

/* Both processes run the same plan; only the parent records. */
static void run_side(struct scenario *s, int k, struct job *j)
{
	barrier();
	(bench_is_child ? s->impl[k].b : s->impl[k].a)(j);
}

static void plan_rtt(struct scenario *s)
{
	const unsigned int rounds = s->iters >= RTT_ROUNDS * 10 ? RTT_ROUNDS :
								  1;
	uint64_t per = s->iters / rounds;
	uint64_t warm = s->spins ? (per / 20 > 1000 ? per / 20 : 1000) :
				   (per / 20 > 20 ? per / 20 : 20);
	uint64_t *v[NIMPL] = { NULL };
	struct job jobs[NIMPL];

	memset(jobs, 0, sizeof(jobs));
	for (int k = 0; k < NIMPL; k++) {
		jobs[k].base = 1;
		jobs[k].warm = warm;
		jobs[k].n = per;
		if (!bench_is_child && s->impl[k].name)
			v[k] = bench_xcalloc(per * rounds, sizeof(uint64_t));
	}
	for (unsigned int i = 0; i < rounds; i++) {
		for (int k = 0; k < NIMPL; k++) {
			if (!s->impl[k].name)
				continue;
			jobs[k].samples = v[k] ? v[k] + (uint64_t)i * per :
						 NULL;
			run_side(s, k, &jobs[k]);
			jobs[k].base += warm + per;
		}
	}
	if (bench_is_child)
		return;
	/* Per-round p50s (sorting a round's slice keeps the pooled set). */
	for (unsigned int i = 0; s->has_target && i < rounds; i++) {
		uint64_t *raw = v[IMPL_BASE] + (uint64_t)i * per;
		uint64_t *cm = v[IMPL_CMESH] + (uint64_t)i * per;

		bench_note_round(&s->parts, raw, cm, per);
	}
	for (int k = 0; k < NIMPL; k++) {
		struct bench_result *r = &s->impl[k].res;

		if (!s->impl[k].name)
			continue;
		bench_fill_rtt(r, v[k], per * rounds, jobs[k].elapsed);
		free(v[k]);
	}
}

static void plan_stream(struct scenario *s)
{
	uint64_t n = s->iters, reps = s->reps, nb = n / s->batch;
	uint64_t warm = n / 10 > 1000 ? n / 10 : 1000;
	uint64_t *b[NIMPL] = { NULL };
	double *rate[NIMPL] = { NULL };
	double tx[NIMPL] = { 0 };
	struct job jobs[NIMPL];

	memset(jobs, 0, sizeof(jobs));
	for (int k = 0; k < NIMPL; k++) {
		jobs[k].size = s->size;
		jobs[k].msz = s->type ? s->type->size : s->size;
		jobs[k].batch = s->batch;
		jobs[k].win = cm_win(s->size);
		jobs[k].win_publish = jobs[k].win / 8 ? jobs[k].win / 8 : 1;
		if (bench_is_child || !s->impl[k].name)
			continue;
		b[k] = bench_xcalloc(nb * reps, sizeof(uint64_t));
		rate[k] = bench_xcalloc(reps, sizeof(double));
	}
	for (int k = 0; k < NIMPL; k++) {
		if (!s->impl[k].name)
			continue;
		jobs[k].n = warm;
		jobs[k].samples = NULL;
		run_side(s, k, &jobs[k]);
		jobs[k].base += warm;
	}
	for (uint64_t i = 0; i < reps; i++) {
		for (int k = 0; k < NIMPL; k++) {
			struct job *j = &jobs[k];

			if (!s->impl[k].name)
				continue;
			j->n = n;
			j->samples = b[k] ? b[k] + i * nb : NULL;
			run_side(s, k, j);
			j->base += n;
			barrier(); /* publishes the child's tx_ticks */
			if (bench_is_child)
				continue;
			rate[k][i] = bench_rate(n, j->elapsed);
			tx[k] +=
				(double)atomic_load_explicit(
					&sh->tx_ticks.v, memory_order_relaxed) /
				(double)j->elapsed;
		}
		if (!bench_is_child && s->has_target)
			bench_note_part(&s->parts,
					rate[IMPL_CMESH][i] /
						rate[IMPL_BASE][i],
					rate[IMPL_BASE][i]);
	}
	if (bench_is_child)
		return;
	for (int k = 0; k < NIMPL; k++) {
		struct bench_result *r = &s->impl[k].res;
		double *rt = rate[k];

		if (!s->impl[k].name)
			continue;
		r->n = n * reps;
		bench_fill_latency(r, b[k], nb * reps,
				   bench_ns_per_tick / s->batch);
		bench_fill_rates(r, rt, reps);
		r->tx_share = tx[k] / (double)reps;
		free(b[k]);
		free(rt);
	}
}

static void plan(struct scenario *s)
{
	if (s->stream)
		plan_stream(s);
	else
		plan_rtt(s);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Child: joins, runs its side of the plan, leaves. Never returns. */
static void child_main(struct scenario *s, int cm_sock)
{
	bench_child_enter(parent_pid);
	bench_pin_self(CPU_CHILD);
	if (s->needs & NEED_CMESH)
		cm_join(cm_sock, s->type, s->spin_ns, s->ring_size);
	plan(s);
	barrier(); /* the parent's last barrier: the run is over */
	cm_leave();
	_exit(0);
}

static void reap_child(void)
{
	int st = bench_child_wait();

	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr,
			"bench_xproc: child of '%s' ended badly (status "
			"0x%x)\n",
			scenario_name, st);
		exit(2);
	}
}

/* Zeroes `len` bytes at `at` of the memfd `fd`. */
static void zero_fd(int fd, off_t at, size_t len, const char *what)
{
	static const unsigned char zero[4096];

	while (len) {
		size_t n = len < sizeof(zero) ? len : sizeof(zero);

		if (pwrite(fd, zero, n, at) != (ssize_t)n)
			bench_die(what, errno);
		at += (off_t)n;
		len -= n;
	}
}

/*
 * Before a scenario's fork: every raw mechanism starts empty, at position
 * and seq 0 (the raw-slot rings' seq words too: stale ones of the last
 * scenario could look current).
 */
static void reset_raw(void)
{
	memset(sh, 0, sizeof(*sh));
	for (int i = 0; i < 2; i++) { /* the raw-ro lines and rings */
		zero_fd(ro_fd[i], 0, sizeof(struct rtt_line),
			"pwrite raw-ro line");
		zero_fd(rr_fd[i], 0, RING_BYTES, "pwrite raw-ring-ro");
	}
	memset(ring_prod, 0, sizeof(ring_prod));
	memset(ring_cons, 0, sizeof(ring_cons));
	/* RING_RO's indices (its data is only read below the tail). */
	zero_fd(ringro_fd[0], (off_t)offsetof(struct raw_ring, tail),
		sizeof(struct index_line), "pwrite raw-ro ring");
	zero_fd(ringro_fd[1], 0, sizeof(struct index_line),
		"pwrite raw-ro ring");
	memset(slot_prod, 0, sizeof(slot_prod));
	memset(slot_cons, 0, sizeof(slot_cons));
	zero_fd(slotro_fd[0], 0, RING_BYTES, "pwrite raw-slot-ro ring");
	zero_fd(slotro_fd[1], 0, sizeof(struct index_line),
		"pwrite raw-slot-ro ring");
}

/* Forks the scenario's child, runs the parent's side, reaps the child. */
static void run_scenario(struct scenario *s, unsigned int watchdog_s)
{
	int cm[2] = { -1, -1 }, us[2] = { -1, -1 };
	sigset_t chld, old;
	pid_t pid;

	uint64_t t0 = bench_mono_ns();

	scenario_name = s->name;
	reset_raw();
	if ((s->needs & NEED_CMESH) &&
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cm) != 0)
		bench_die("socketpair", errno);
	if ((s->needs & NEED_UNIX) &&
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, us) != 0)
		bench_die("socketpair", errno);
	if (s->needs & NEED_EFD) {
		efd_ping = eventfd(0, EFD_CLOEXEC);
		efd_pong = eventfd(0, EFD_CLOEXEC);
		if (efd_ping < 0 || efd_pong < 0)
			bench_die("eventfd", errno);
	}
	alarm(watchdog_s);
	fflush(stdout);
	fflush(stderr);
	child_expected = 0;
	/* No SIGCHLD before bench_child_pid names the child. */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);
	pid = fork();
	if (pid < 0)
		bench_die("fork", errno);
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		close_fd(&cm[0]);
		close_fd(&us[0]);
		usock = us[1];
		child_main(s, cm[1]);
	}
	bench_child_pid = pid;
	sigprocmask(SIG_SETMASK, &old, NULL);
	bench_pin_self(CPU_PARENT);
	close_fd(&cm[1]);
	close_fd(&us[1]);
	usock = us[0];
	if (s->needs & NEED_CMESH)
		cm_join(cm[0], s->type, s->spin_ns, s->ring_size);
	plan(s);
	child_expected = 1;
	barrier(); /* lets the child leave and exit */
	cm_leave();
	reap_child();
	alarm(0);
	close_fd(&usock);
	close_fd(&efd_ping);
	close_fd(&efd_pong);
	s->secs = (double)(bench_mono_ns() - t0) * 1e-9;
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

/* Row `k` against the baseline row: rate (stream) or p50 (rtt) ratio. */
static double ratio_of(const struct scenario *s, int k)
{
	return bench_ratio(&s->impl[IMPL_BASE].res, &s->impl[k].res, s->stream);
}

static bool passed(const struct scenario *s)
{
	double r = ratio_of(s, IMPL_CMESH);

	if (!s->has_target)
		return true;
	return s->stream ? r >= s->target : r <= s->target;
}

static void print_row(const struct scenario *s, int k, bool first)
{
	const struct bench_result *r = &s->impl[k].res;
	char p50[16], p99[16], p999[16], rate[32], mbs[16] = "-";
	char ratio[16] = "-", tgt[16] = "-";
	const char *res = "";

	bench_fmt_ns(p50, sizeof(p50), r->p50);
	bench_fmt_ns(p99, sizeof(p99), r->p99);
	bench_fmt_ns(p999, sizeof(p999), r->p999);
	bench_fmt_rate(rate, sizeof(rate), r->rate,
		       s->stream ? "msg/s" : "rt/s");
	if (s->stream)
		snprintf(mbs, sizeof(mbs), "%.0f",
			 r->rate * (double)s->size / 1e6);
	if (s->has_target && k != IMPL_BASE)
		snprintf(ratio, sizeof(ratio), "%.2fx", ratio_of(s, k));
	if (s->has_target && k == IMPL_CMESH) {
		snprintf(tgt, sizeof(tgt), "%s%gx",
			 s->stream ? ">=" : "<=", s->target);
		res = passed(s) ? "PASS" : "FAIL";
	} else if (k >= IMPL_INFO) {
		snprintf(tgt, sizeof(tgt), "info");
	} else if (!s->has_target) {
		snprintf(tgt, sizeof(tgt), "ref");
	}
	printf("%-16s %-11s %9" PRIu64 " %8s %8s %8s %15s %7s %6s %7s  %s\n",
	       first ? s->name : "", s->impl[k].name, r->n, p50, p99, p999,
	       rate, mbs, ratio, tgt, res);
	bench_json_result(s->name, s->impl[k].name, r,
			  s->stream ? "msg/s" : "rt/s");
	if (s->has_target && k == IMPL_CMESH) {
		char what[64];

		snprintf(what, sizeof(what), "%s: cmesh / %s", s->name,
			 s->impl[IMPL_BASE].name);
		bench_json_target(what, ratio, tgt, passed(s));
	}
}

struct config {
	bool smoke, strict;
	int only; /* 0: all, else group 1..4 */
	double scale;
	bool two_cpus;
};

static void print_notes(const struct scenario *sc, int nsc)
{
	for (int i = 0; i < nsc; i++) {
		const struct scenario *s = &sc[i];
		const char *base = s->impl[IMPL_BASE].name;
		char lo[32], hi[32];

		if (s->skipped || !s->has_target || s->parts.n == 0)
			continue;
		if (s->stream) {
			bench_fmt_rate(lo, sizeof(lo), s->parts.raw_lo, "");
			bench_fmt_rate(hi, sizeof(hi), s->parts.raw_hi, "");
		} else {
			bench_fmt_ns(lo, sizeof(lo), s->parts.raw_lo);
			bench_fmt_ns(hi, sizeof(hi), s->parts.raw_hi);
		}
		printf("# %s: per-%s cmesh/%s median %.2fx (%.2f..%.2fx) over "
		       "%u, %s %s %s..%s %s",
		       s->name, s->stream ? "rep" : "round", base,
		       bench_parts_median(&s->parts), s->parts.lo, s->parts.hi,
		       s->parts.n, base, s->stream ? "rate" : "p50", lo, hi,
		       s->stream ? "msg/s" : "ns");
		if (s->parts.raw_hi > 1.5 * s->parts.raw_lo)
			printf(" (%s moved >1.5x during the run: the host "
			       "moved the vCPUs? prefer the per-%s ratios)",
			       base, s->stream ? "rep" : "round");
		if (s->stream) {
			printf("; producer/consumer time");
			for (int k = 0; k < NIMPL; k++)
				if (s->impl[k].name)
					printf(" %s %.2f", s->impl[k].name,
					       s->impl[k].res.tx_share);
		}
		if (s->stream && s->impl[IMPL_INFO].a == cmwin_consumer)
			printf("; cm-win W=%" PRIu64 " msgs", cm_win(s->size));
		printf("\n");
	}
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_xproc [--smoke] [--strict] [--only 1|2|3|4]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	cfg->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	cfg->scale = bench_scale_env("bench_xproc");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (bench_common_arg(a, &cfg->smoke, &cfg->strict, usage)) {
			continue;
		} else if (bench_only_arg(argc, argv, &i, 4, &cfg->only)) {
			continue;
		} else {
			bench_bad_arg(a, usage);
		}
	}
}

static uint64_t scaled(const struct config *cfg, uint64_t full, uint64_t smoke,
		       uint64_t min)
{
	double v = (double)(cfg->smoke ? smoke : full) * cfg->scale;

	return v < (double)min ? min : (uint64_t)v;
}

/* A row: its name, parent side, child side. */
#define ROW(nm, pa, pb)                                                        \
	{                                                                      \
		.name = (nm), .a = (pa), .b = (pb)                             \
	}

/* "1 rtt-spin SB": the message type `t` is S bytes. */
#define RTT_SPIN(S, t)                                                         \
	.name = "1 rtt-spin " #S "B", .group = 1, .spins = true,               \
	.has_target = true, .target = 1.2, .needs = NEED_CMESH, .type = &(t),  \
	.spin_ns = SPIN_FOREVER_NS, .size = S, .count = { 1000000, 2000, 100 }

#define RTT_SPIN_ROWS(S)                                                       \
	[IMPL_BASE] = ROW("raw-ro", lro_ping_##S, lro_pong_##S),               \
	[IMPL_CMESH] = ROW("cmesh", cm_ping_##S, cm_pong_##S),                 \
	[IMPL_INFO] = ROW("raw", line_ping_##S, line_pong_##S),                \
	[IMPL_INFO3] = ROW("raw-ring-ro", rr_ping_##S, rr_pong_##S),           \
	[IMPL_INFO4] = ROW("raw-ro-wake", lw_ping_##S, lw_pong_##S)

/* rtt-spin 64B only: the message's own first word as the flag. */
#define RAW_MSG_ROW ROW("raw-msg", spin_ping_side, spin_pong_side)

/* "3 stream SB": the message type `t` is S bytes. */
#define STREAM_SMALL(S, t)                                                     \
	.name = "3 stream " #S "B", .group = 3, .stream = true, .spins = true, \
	.has_target = true, .target = 0.75, .needs = NEED_CMESH, .type = &(t), \
	.spin_ns = SPIN_FOREVER_NS, .ring_size = RING_BYTES, .size = S,        \
	.batch = 1024, .count = { 2000000, 50000, 1024 },                      \
	.impl = {                                                              \
		[IMPL_BASE] =                                                  \
			ROW("raw-slot", slot_consumer_##S, slot_producer_##S), \
		[IMPL_CMESH] = ROW("cmesh", cm_consumer, cm_producer),         \
		[IMPL_INFO] = ROW("raw-slot-ro", slotro_consumer_##S,          \
				  slotro_producer_##S),                        \
		[IMPL_INFO2] = ROW("cm-win", cmwin_consumer, cmwin_producer),  \
	}

/* Some scenario of group g ran. */
static bool group_ran(const struct scenario *sc, int nsc, int g)
{
	for (int i = 0; i < nsc; i++)
		if (sc[i].group == g && !sc[i].skipped)
			return true;
	return false;
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct scenario sc[] = {
		{ RTT_SPIN(8, msg8_type), .impl = { RTT_SPIN_ROWS(8) } },
		{ RTT_SPIN(56, msg56_type), .impl = { RTT_SPIN_ROWS(56) } },
		{ RTT_SPIN(64, bench_msg_type),
		  .impl = { RTT_SPIN_ROWS(64), [IMPL_INFO2] = RAW_MSG_ROW } },
		{ RTT_SPIN(120, msg120_type), .impl = { RTT_SPIN_ROWS(120) } },
		{ .name = "2 rtt-sleep 64B",
		  .group = 2,
		  .has_target = true,
		  .target = 1.3,
		  .needs = NEED_CMESH | NEED_EFD,
		  .type = &bench_msg_type,
		  .spin_ns = CMESH_SPIN_NONE,
		  .size = MSG_SMALL,
		  .count = { 30000, 200, 10 },
		  .impl = { ROW("raw", ev_ping_side, ev_pong_side),
			    ROW("cmesh", cm_ping_side, cm_pong_side) } },
		{ STREAM_SMALL(8, msg8_type) },
		{ STREAM_SMALL(56, msg56_type) },
		{ STREAM_SMALL(64, bench_msg_type) },
		{ STREAM_SMALL(120, msg120_type) },
		{ .name = "3 stream 4KiB",
		  .group = 3,
		  .stream = true,
		  .spins = true,
		  .has_target = true,
		  .target = 0.6,
		  .needs = NEED_CMESH,
		  .type = &bench_msg_type,
		  .spin_ns = SPIN_FOREVER_NS,
		  .ring_size = RING_BYTES,
		  .size = MSG_BIG,
		  .batch = 64,
		  .count = { 100000, 5000, 64 },
		  .impl = { ROW("raw", ring_consumer, ring_producer),
			    ROW("cmesh", cm_consumer, cm_producer),
			    ROW("cm-win", cmwin_consumer, cmwin_producer) } },
		{ .name = "3 str 4KiB ro",
		  .group = 3,
		  .stream = true,
		  .spins = true,
		  .has_target = true,
		  .target = 0.75,
		  .needs = NEED_CMESH,
		  .type = &bench_msg_type,
		  .spin_ns = SPIN_FOREVER_NS,
		  .ring_size = RING_BYTES,
		  .size = MSG_BIG,
		  .batch = 64,
		  .count = { 100000, 5000, 64 },
		  .impl = { ROW("raw-ro", ringro_consumer, ringro_producer),
			    ROW("cmesh", cm_consumer, cm_producer) } },
		{ .name = "4 unix rtt 64B",
		  .group = 4,
		  .needs = NEED_UNIX,
		  .size = MSG_SMALL,
		  .count = { 30000, 200, 10 },
		  .impl = { ROW("unix", unix_ping_side, unix_pong_side) } },
		{ .name = "4 unix str 64B",
		  .group = 4,
		  .stream = true,
		  .needs = NEED_UNIX,
		  .size = MSG_SMALL,
		  .batch = 1024,
		  .count = { 200000, 20000, 1024 },
		  .impl = { ROW("unix", unix_consumer, unix_producer) } },
		{ .name = "4 unix str 4KiB",
		  .group = 4,
		  .stream = true,
		  .needs = NEED_UNIX,
		  .size = MSG_BIG,
		  .batch = 64,
		  .count = { 100000, 2000, 64 },
		  .impl = { ROW("unix", unix_consumer, unix_producer) } },
	};
	const int nsc = (int)(sizeof(sc) / sizeof(sc[0]));
	struct bench_cpu_usage usage0, usage1;
	uint64_t reps;
	unsigned int wd;
	int fails = 0;

	bench_name = "bench_xproc";
	bench_die_hook = die_hook;
	bench_check_dies = true;
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	wd = cfg.smoke ? 30 : 300;
	parent_pid = getpid();
	install_handlers();

	/* Counts: full runs take a few seconds per scenario. */
	reps = cfg.smoke ? 1 : 10;
	for (int i = 0; i < nsc; i++) {
		const struct counts *c = &sc[i].count;

		sc[i].iters = scaled(&cfg, c->full, c->smoke, c->min);
		sc[i].reps = reps;
	}

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		sh = NULL;
		bench_die("mmap", errno);
	}
	memset(sh, 0, sizeof(*sh)); /* fault it in before any fork */
	for (int i = 0; i < 2; i++) {
		ro_fd[i] = memfd_create("bench-raw-ro", MFD_CLOEXEC);
		if (ro_fd[i] < 0 || ftruncate(ro_fd[i], 4096) != 0)
			bench_die("memfd raw-ro", errno);
		rr_fd[i] = memfd_create("bench-raw-ring-ro", MFD_CLOEXEC);
		if (rr_fd[i] < 0 || ftruncate(rr_fd[i], RING_BYTES) != 0)
			bench_die("memfd raw-ring-ro", errno);
		ringro_fd[i] = memfd_create("bench-raw-ro-ring", MFD_CLOEXEC);
		if (ringro_fd[i] < 0 ||
		    ftruncate(ringro_fd[i],
			      i ? (off_t)sizeof(struct index_line) :
				  (off_t)sizeof(struct raw_ring)))
			bench_die("memfd raw-ro ring", errno);
		slotro_fd[i] = memfd_create("bench-raw-slot-ro", MFD_CLOEXEC);
		if (slotro_fd[i] < 0 ||
		    ftruncate(slotro_fd[i],
			      i ? (off_t)sizeof(struct index_line) :
				  (off_t)RING_BYTES))
			bench_die("memfd raw-slot-ro ring", errno);
	}
	rings[RING_UP] = (struct ring_view){ sh->ring[0].data,
					     &sh->ring[0].tail.v,
					     &sh->ring[0].head.v };
	slotv[SLOT_UP] =
		(struct slot_view){ sh->slot[0].slots, &sh->slot[0].head.v };
	memset(tx_buf, 0x5a, sizeof(tx_buf));
	memset(rx_buf, 0, sizeof(rx_buf));

	cfg.two_cpus = bench_cpus_usable(CPU_PARENT, CPU_CHILD) &&
		       bench_pin_self(CPU_PARENT);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_PARENT, CPU_CHILD, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);

	for (int i = 0; i < nsc; i++) {
		struct scenario *s = &sc[i];

		if (cfg.only && cfg.only != s->group) {
			s->skipped = true;
			s->skip_why = "--only";
		} else if (s->spins && !cfg.two_cpus) {
			/* Spinning on one CPU is meaningless (and crawls). */
			s->skipped = true;
			s->skip_why = "CPUs 0 and 1 not both usable";
		}
		if (!s->skipped)
			run_scenario(s, wd);
	}
	bench_cpu_usage_read(&usage1);

	printf("%-16s %-11s %9s %8s %8s %8s %15s %7s %6s %7s  %s\n", "scenario",
	       "impl", "n", "p50", "p99", "p99.9", "throughput", "MB/s",
	       "ratio", "target", "result");
	for (int i = 0; i < nsc; i++) {
		const struct scenario *s = &sc[i];

		if (s->skipped) {
			printf("%-16s SKIP (%s)\n", s->name, s->skip_why);
			continue;
		}
		for (int k = 0; k < NIMPL; k++)
			if (s->impl[k].name)
				print_row(s, k, k == 0);
		if (!passed(s))
			fails++;
	}
	printf("# latencies in ns: per round trip (1, 2, 4 rtt; one timed "
	       "send + echo per sample) or per message (3, 4 streams: "
	       "batches of 1024 msgs, 4KiB: 64, at the consumer); stream "
	       "throughput: median of %" PRIu64 " reps; MB/s: payload, 1e6 "
	       "B; ratio: against the scenario's first row, 1, 2 p50, 3 "
	       "msg/s (4KiB: the same as bytes/s)\n",
	       reps);
	if (group_ran(sc, nsc, 1))
		printf("# 1: raw-ro: an 8-byte seq word + the S payload bytes, "
		       "ceil((8+S)/64) lines per direction, read through a "
		       "read-only mapping of the writer's memfd (as cmesh "
		       "reads a peer's arena); raw: the same lines read-write "
		       "in one shared mapping; raw-msg (64B): one line, the "
		       "message's own first word as the flag; raw-ring-ro: "
		       "the raw-ro lines in a ring of 1024 slots, the writer "
		       "prefetching 4 messages ahead for writing, as cmesh's "
		       "lanes; raw-ro-wake: raw-ro plus a locked increment "
		       "of the writer's own word before each publish and a "
		       "load of the reader's sleeping word after it, the "
		       "least a writer whose reader may sleep does; cmesh: an "
		       "S-byte type\n");
	if (group_ran(sc, nsc, 3))
		printf("# 3: raw-slot: %u bytes of 64-byte slots, a record "
		       "ceil((8+S)/64) slots with its seq word first, the head "
		       "published every %u slots, no shared tail; "
		       "raw-slot-ro: the same through read-only mappings of "
		       "the peer's memfds; 4KiB: cmesh sends the 64-byte "
		       "struct + 4032 trailing bytes, the raw byte ring and "
		       "unix carry 4096 contiguous bytes; raw byte ring: %u "
		       "bytes, one release store of tail per message\n",
		       RING_BYTES, SLOT_PUBLISH, RING_BYTES);
	print_notes(sc, nsc);
	printf("# wall time per scenario:");
	for (int i = 0; i < nsc; i++)
		if (!sc[i].skipped)
			printf(" %.2fs", sc[i].secs);
	printf("\n");
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	munmap(sh, sizeof(*sh));
	return cfg.strict && fails ? 1 : 0;
}
