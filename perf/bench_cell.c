/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_cell.c - reading a cell (include/cmesh/cell.h) against the
 * raw mechanism a latest-value read needs, a seqlock, in one process and
 * across two, in the same run (issue 11: "a cell read <= 20 ns with no
 * syscall").
 *
 * The value is struct val { uint64_t a, b; } (CMESH_TYPE_DEFINE_PLAIN,
 * 16 bytes). Every value ever published is {a = its version, b = 3 * a}
 * (version 1 is the initial one), and every read is checked: b == 3 * a,
 * a == the version the read returned, versions never go back, get returns
 * 0; a row without an updater must also see no new version (anything
 * else: exit 2, "wrong value" or "torn").
 *
 * The raw seqlock: an _Atomic uint64_t seq and the two words (_Atomic,
 * read and written relaxed: no data race), 128-byte aligned. Writer: seq
 * + 1, release fence, the words, seq + 2 (release). Reader: load seq
 * (acquire), copy the words, acquire fence, reload seq; again while it
 * was odd or changed; version = seq / 2 + 1. The reader is inlined into
 * the timed loop (the mechanism alone); cmesh_cell_get() is a call into
 * the library.
 *
 * A batch: 1000 back-to-back reads (cmesh_cell_get(cell, &out, &ver), or
 * the seqlock read), each checked as above, between two clock reads; per
 * read = batch time / 1000. A row's p50 / p99 / p99.9 are of its batch
 * averages. Each row-round starts with unrecorded batches.
 *
 *   1 in-process    this thread on CPU 0: a cell from cmesh_cell_new(),
 *                   no change pending (the updater idle: the cell's update
 *                   channel is empty). Target: p50 <= 20 ns per read.
 *   2 in-proc raw   the same batches on an in-process seqlock, no writer:
 *                   the raw mechanism's cost (ref). Row 1's ratio column
 *                   is its p50 / this row's p50.
 *   3 in-proc upd   an updater thread pinned to CPU 1 publishes a new
 *                   value every 10 us (fixed rate, busy-wait on the
 *                   clock) while this thread reads. "cell get": batches
 *                   of gets on the cell (a get that finds a new value
 *                   takes it off the update channel and sends the updater
 *                   an ACK, all inside the batch's time); upd/b = new
 *                   versions seen per batch. " seqlock": the same batches
 *                   on the seqlock, the thread writing it (the reference
 *                   of "cell get"). " cell pickup": single gets, each
 *                   timed alone, of which only those that returned a new
 *                   version are recorded (the first two per round are
 *                   not): what a read that picks up an update costs, the
 *                   clock read's own cost (in a note) included.
 *                   " raw pickup": the same for single seqlock reads (a
 *                   cache line the other CPU wrote), the reference of
 *                   " cell pickup". The updater's achieved rate is in a
 *                   note (less than 100000/s when it loses its CPU).
 *                   Info only.
 *   4 two procs     the cell (of a second cmesh_cell_new(), its updater
 *                   kept here) goes to a fork()ed child pinned to CPU 1,
 *                   joined with cmesh_node_join_socket() over a
 *                   SOCK_SEQPACKET socketpair made before fork (peer_pid
 *                   set): cmesh_cell_to_port() into a message with a
 *                   CMESH_FIELD_CELL field on the link's down channel,
 *                   cmesh_cell_from_port() in the child. The child is the
 *                   reader: on command it waits until it has the version
 *                   the parent last set, then reads in batches, no change
 *                   pending, and sends its batch times back on the up
 *                   channel. Target: p50 <= 20 ns per read.
 *                   " seqlock shm": the child's batches on a seqlock in a
 *                   MAP_SHARED page mapped before fork (ref).
 *   5 2procs upd    the four rows of 3, across: this process (CPU 0)
 *                   publishes every 10 us to the child's cell
 *                   (cmesh_cell_set(): a send to another process; the
 *                   child's ACKs come back the same way) or its shm
 *                   seqlock while the child reads. Info only.
 *
 * Syscalls: on x86-64 Linux >= 5.11 the reading thread (this one for 1-3,
 * the child's main thread for 4-5) turns on syscall user dispatch
 * (prctl(PR_SET_SYSCALL_USER_DISPATCH); a self-test with getppid() must
 * be caught, else "n/a") with its selector at BLOCK only inside each
 * batch's read loop (pickup rows: around each timed get). A syscall made
 * there raises SIGSYS; the handler counts it, sets the selector to ALLOW
 * and makes the syscall itself (so the rest of that batch is not
 * intercepted). Column "sys" = batches (pickup rows: gets)
 * that made at least one syscall / all batches (or gets) checked, warm-up
 * included; "n/a" where the facility is missing (then no claim is made).
 * Only that thread's syscalls count (not cmesh's link threads, nor the
 * other process). Column "flt": page faults (minor + major, getrusage
 * RUSAGE_THREAD) of the reading thread from its first batch (or pickup)
 * to its last, summed over rounds: kernel entries that are not syscalls
 * (e.g. the first touch of a cross-process ring's page).
 *
 * Rows 1-3 read on CPU 0, rows 4-5 on CPU 1 (the child): CPUs of a VM
 * may differ in speed, so compare a cell row with the seqlock row of its
 * own scenario (the ratio column), not 1 with 4.
 *
 * Rows alternate in rounds, their order reversed every other round, so
 * that drift hits them alike; between rounds the idle side sleeps. A note
 * gives the spread of the per-round ratio of rows 1/2 and 4/4-raw.
 * Latency: lfence;rdtsc (calibrated against CLOCK_MONOTONIC) when the TSC
 * is invariant, else clock_gettime.
 *
 * Usage: bench_cell [--smoke] [--strict] [--only inproc|xproc]
 * --smoke: tiny counts (well under 5 s), for CI; the targets are printed
 * but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_SCALE=F (multiplies batches and pickups per round).
 * Exit status: 0 unless a call fails or a value is wrong (2), a run hangs
 * (3: watchdog), or --strict without --smoke and a target FAILs (1).
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
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(PR_SET_SYSCALL_USER_DISPATCH)
#include <ucontext.h>
#define HAVE_SUD 1
#define SUD_ALLOW SYSCALL_DISPATCH_FILTER_ALLOW
#define SUD_BLOCK SYSCALL_DISPATCH_FILTER_BLOCK
#else
#define HAVE_SUD 0
#define SUD_ALLOW 0
#define SUD_BLOCK 0
#endif

#define CPU_READER 0
#define CPU_OTHER 1
#define BATCH 1000u	 /* reads per batch */
#define TARGET_NS 20.0	 /* rows 1 and 4: p50 per read */
#define PERIOD_NS 10000u /* updaters publish every 10 us */
#define CHUNK 128u	 /* samples per result message (1 KiB) */
#define PICK_WARM 2u	 /* unrecorded pickups per row-round */
#define WATCHDOG_FULL_S 120u
#define WATCHDOG_SMOKE_S 30u

/* ---------------------------------------------------------------------- */
/* Types                                                                  */

struct val {
	uint64_t a, b; /* a: the version, b: 3 * a */
};
CMESH_TYPE_DEFINE_PLAIN(val_type, struct val);

enum {
	OBJ_CELL,
	OBJ_RAW
};

enum {
	MODE_STATIC, /* batches, no change pending */
	MODE_UPD,    /* batches while the updater publishes */
	MODE_PICK    /* single gets that return a new version */
};

enum {
	OP_CELL = 1, /* the cell port */
	OP_MEASURE,
	OP_QUIT
};

/* Parent -> child (the link's down channel). */
struct cmd {
	uint32_t op;
	uint32_t obj;  /* OBJ_* */
	uint32_t mode; /* MODE_* */
	uint32_t warm; /* unrecorded batches (pickups: PICK_WARM) */
	uint32_t n;    /* recorded batches or pickups */
	uint32_t pad;
	uint64_t want; /* MODE_STATIC: the version to wait for, then see */
	cmesh_cell_port cell;
};
CMESH_TYPE_DEFINE(cmd_type, struct cmd, CMESH_FIELD_CELL(struct cmd, cell));

enum {
	RES_READY = 1,
	RES_CHUNK,
	RES_DONE
};

/* Child -> parent (the up channel): samples (ticks) as trailing bytes. */
struct res {
	uint32_t kind;	   /* RES_* */
	uint32_t n;	   /* samples in the trailing bytes */
	uint64_t changes;  /* new versions seen in recorded batches */
	uint64_t checked;  /* batches (or gets) checked for syscalls */
	uint64_t sys;	   /* of them, those that made a syscall */
	int64_t sys_nr;	   /* the first such syscall's number, or -1 */
	uint64_t last_ver; /* the last version read */
	uint64_t faults;   /* page faults while it read */
	uint32_t sud;	   /* syscall user dispatch was on */
	uint32_t pinned;
};
CMESH_TYPE_DEFINE_PLAIN(res_type, struct res);

/* ---------------------------------------------------------------------- */
/* Failure                                                                */

static pid_t parent_pid;

static void fail(const char *what, int rc)
{
	bench_die(what, rc < 0 ? rc : EPROTO);
}

static __attribute__((noreturn, noinline)) void bad_read(const char *what,
							 const struct val *v,
							 uint64_t ver,
							 uint64_t prev, int rc)
{
	char buf[256];

	snprintf(buf, sizeof(buf),
		 "%s: wrong value: a %" PRIu64 " b %" PRIu64 " version %" PRIu64
		 " (previous %" PRIu64 "), get %d",
		 what, v->a, v->b, ver, prev, rc);
	fail(buf, rc < 0 ? rc : -EPROTO);
	abort();
}

/* ---------------------------------------------------------------------- */
/* Syscall check: syscall user dispatch                                   */

static volatile char sud_sel = SUD_ALLOW;
static volatile uint64_t sud_hits;
static volatile int64_t sud_last_nr = -1;
static bool sud_on;

#if HAVE_SUD
/* A syscall made while sud_sel was BLOCK: count it, then make it. */
static void sud_handler(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	greg_t *g = uc->uc_mcontext.gregs;
	int e = errno;
	long r;

	(void)sig;
	sud_sel = SUD_ALLOW; /* rt_sigreturn must pass */
	sud_hits = sud_hits + 1;
	sud_last_nr = si->si_syscall;
	r = syscall(si->si_syscall, g[REG_RDI], g[REG_RSI], g[REG_RDX],
		    g[REG_R10], g[REG_R8], g[REG_R9]);
	g[REG_RAX] = r == -1 ? -errno : r;
	errno = e;
}
#endif

/* Turns the check on for the calling thread; false if unavailable. */
static bool sud_enable(void)
{
#if HAVE_SUD
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sud_handler;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sud_sel = SUD_ALLOW;
	if (sigaction(SIGSYS, &sa, NULL) != 0)
		return false;
	if (prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, 0, 0,
		  &sud_sel) != 0)
		return false;
	/* Self-test: one syscall with the selector at BLOCK is seen. */
	sud_sel = SUD_BLOCK;
	(void)syscall(SYS_getppid);
	sud_sel = SUD_ALLOW;
	if (sud_hits != 1 || sud_last_nr != SYS_getppid) {
		prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0,
		      0);
		return false;
	}
	sud_hits = 0;
	sud_last_nr = -1;
	sud_on = true;
#endif
	return sud_on;
}

static void sud_disable(void)
{
#if HAVE_SUD
	if (sud_on)
		prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0,
		      0);
#endif
	sud_on = false;
}

/* ---------------------------------------------------------------------- */
/* The raw seqlock                                                        */

struct seqlock {
	alignas(128) _Atomic uint64_t seq;
	_Atomic uint64_t a, b;
};

static inline void raw_read(struct seqlock *s, struct val *out, uint64_t *ver)
{
	uint64_t s0, s1;

	for (;;) {
		/* Pairs with the writer's final release store. */
		s0 = atomic_load_explicit(&s->seq, memory_order_acquire);
		out->a = atomic_load_explicit(&s->a, memory_order_relaxed);
		out->b = atomic_load_explicit(&s->b, memory_order_relaxed);
		/* Orders the copy before the re-check of seq. */
		atomic_thread_fence(memory_order_acquire);
		s1 = atomic_load_explicit(&s->seq, memory_order_relaxed);
		if (!(s0 & 1) && s0 == s1)
			break;
		ck_pr_stall();
	}
	*ver = s0 / 2 + 1;
}

/* The one writer: publishes the next version; returns it. */
static uint64_t raw_write(struct seqlock *s)
{
	uint64_t q = atomic_load_explicit(&s->seq, memory_order_relaxed);
	uint64_t ver = q / 2 + 2;

	atomic_store_explicit(&s->seq, q + 1, memory_order_relaxed);
	/* The odd seq is visible before any word changes. */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&s->a, ver, memory_order_relaxed);
	atomic_store_explicit(&s->b, 3 * ver, memory_order_relaxed);
	/* Pairs with the reader's acquire load. */
	atomic_store_explicit(&s->seq, q + 2, memory_order_release);
	return ver;
}

static void raw_init(struct seqlock *s)
{
	atomic_store(&s->seq, 0);
	atomic_store(&s->a, 1);
	atomic_store(&s->b, 3);
}

/* ---------------------------------------------------------------------- */
/* Measuring (both processes)                                             */

struct mres {
	uint64_t changes;  /* new versions seen in recorded batches */
	uint64_t checked;  /* batches / gets inside the syscall check */
	uint64_t sys;	   /* of them, with a syscall */
	int64_t sys_nr;	   /* first such syscall, -1 */
	uint64_t last_ver; /* last version read */
	uint64_t faults;   /* page faults of the thread while it read */
};

/* Page faults (minor + major) of the calling thread so far. */
static uint64_t thread_faults(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru) != 0)
		return 0;
	return (uint64_t)ru.ru_minflt + (uint64_t)ru.ru_majflt;
}

/* Checks one read (see the top): exit 2 if wrong. */
static inline __attribute__((always_inline)) void
check_read(const char *what, const struct val *v, uint64_t ver, uint64_t prev,
	   int rc)
{
	if (__builtin_expect((v->b != 3 * v->a) | (v->a != ver) | (ver < prev) |
				     (rc != 0),
			     0))
		bad_read(what, v, ver, prev, rc);
}

#define READ_CHECK(what, v, ver, prev, rc) check_read(what, &(v), ver, prev, rc)

/*
 * warm + n batches of BATCH reads; v[i] = ticks of recorded batch i. GET
 * reads into v_ and ver_ and sets rc_.
 */
#define BATCHES(what, GET)                                                     \
	do {                                                                   \
		struct val v_;                                                 \
		uint64_t ver_ = 0, prev_, changes = 0;                         \
		int rc_ = 0;                                                   \
                                                                               \
		GET;                                                           \
		READ_CHECK(what, v_, ver_, 0, rc_);                            \
		prev_ = ver_;                                                  \
		if (expect && ver_ != expect)                                  \
			bad_read(what " (not the version set)", &v_, ver_,     \
				 expect, rc_);                                 \
		m->faults = thread_faults();                                   \
		for (uint32_t b = 0; b < warm + n; b++) {                      \
			uint64_t t0, t1, hits = sud_hits;                      \
                                                                               \
			if (b == warm)                                         \
				changes = 0;                                   \
			t0 = bench_now_ticks();                                \
			sud_sel = SUD_BLOCK;                                   \
			for (uint32_t j = 0; j < BATCH; j++) {                 \
				GET;                                           \
				READ_CHECK(what, v_, ver_, prev_, rc_);        \
				changes += ver_ != prev_;                      \
				prev_ = ver_;                                  \
			}                                                      \
			sud_sel = SUD_ALLOW;                                   \
			t1 = bench_now_ticks();                                \
			if (b >= warm)                                         \
				out[b - warm] = t1 - t0;                       \
			note_sys(m, hits);                                     \
		}                                                              \
		m->faults = thread_faults() - m->faults;                       \
		if (expect && (changes || prev_ != expect))                    \
			bad_read(what " (a change with no updater)", &v_,      \
				 ver_, expect, rc_);                           \
		m->changes = changes;                                          \
		m->last_ver = prev_;                                           \
	} while (0)

static inline void note_sys(struct mres *m, uint64_t hits_before)
{
	if (!sud_on)
		return;
	m->checked++;
	if (sud_hits != hits_before) {
		m->sys++;
		if (m->sys_nr < 0)
			m->sys_nr = sud_last_nr;
	}
}

static void mres_init(struct mres *m)
{
	memset(m, 0, sizeof(*m));
	m->sys_nr = -1;
}

/* expect != 0: no change may be pending, every read must return it. */
static void batches_cell(cmesh_cell *c, uint64_t *out, uint32_t warm,
			 uint32_t n, uint64_t expect, struct mres *m)
{
	BATCHES("cell get", rc_ = cmesh_cell_get(c, &v_, &ver_));
}

static void batches_raw(struct seqlock *s, uint64_t *out, uint32_t warm,
			uint32_t n, uint64_t expect, struct mres *m)
{
	BATCHES("seqlock read", raw_read(s, &v_, &ver_));
}

/*
 * Single reads, each timed alone, until n + PICK_WARM returned a new
 * version; the last n of those are recorded (the first may carry a
 * backlog). GET reads into v and ver and sets rc.
 */
#define PICKUPS(what, GET)                                                     \
	do {                                                                   \
		struct val v;                                                  \
		uint64_t ver = 0, prev;                                        \
		uint32_t got = 0;                                              \
		int rc = 0;                                                    \
                                                                               \
		GET;                                                           \
		READ_CHECK(what, v, ver, 0, rc);                               \
		prev = ver;                                                    \
		m->faults = thread_faults();                                   \
		while (got < n + PICK_WARM) {                                  \
			uint64_t t0, t1, hits = sud_hits;                      \
                                                                               \
			t0 = bench_now_ticks();                                \
			sud_sel = SUD_BLOCK;                                   \
			GET;                                                   \
			sud_sel = SUD_ALLOW;                                   \
			t1 = bench_now_ticks();                                \
			READ_CHECK(what, v, ver, prev, rc);                    \
			if (ver == prev)                                       \
				continue;                                      \
			prev = ver;                                            \
			note_sys(m, hits);                                     \
			if (got >= PICK_WARM)                                  \
				out[got - PICK_WARM] = t1 - t0;                \
			got++;                                                 \
		}                                                              \
		m->faults = thread_faults() - m->faults;                       \
		m->changes = n;                                                \
		m->last_ver = prev;                                            \
	} while (0)

static void pickups_cell(cmesh_cell *c, uint64_t *out, uint32_t n,
			 struct mres *m)
{
	PICKUPS("cell get (pickup)", rc = cmesh_cell_get(c, &v, &ver));
}

static void pickups_raw(struct seqlock *s, uint64_t *out, uint32_t n,
			struct mres *m)
{
	PICKUPS("seqlock read (pickup)", raw_read(s, &v, &ver));
}

/* ---------------------------------------------------------------------- */
/* Pacing: one publication every PERIOD_NS                                */

static uint64_t period_ticks;

/* Waits for the next slot (false if *stop was set meanwhile). */
static inline bool pace(uint64_t *next, _Atomic int *stop)
{
	uint64_t now;

	while ((now = bench_now_ticks()) < *next) {
		if (stop && atomic_load_explicit(stop, memory_order_relaxed))
			return false;
		ck_pr_stall();
	}
	*next += period_ticks;
	if (*next < now) /* fell behind: no burst to catch up */
		*next = now + period_ticks;
	return true;
}

static void set_cell(cmesh_cell_updater *u, uint64_t *ver)
{
	struct val v = { *ver + 1, 3 * (*ver + 1) };
	int64_t r = cmesh_cell_set(u, &v);

	if (r < 0)
		fail("cmesh_cell_set", (int)r);
	if ((uint64_t)r != *ver + 1)
		fail("cmesh_cell_set: an unexpected version", -EPROTO);
	*ver = (uint64_t)r;
}

/* ---------------------------------------------------------------------- */
/* In-process updater thread (rows 3)                                     */

enum {
	U_IDLE,
	U_CELL,
	U_RAW,
	U_QUIT
};

struct updater {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int cmd;	    /* U_*, under mu */
	_Atomic int stop;   /* ends a U_CELL / U_RAW run */
	_Atomic int active; /* the thread is publishing */
	cmesh_cell_updater *cu;
	struct seqlock *sl;
	uint64_t cell_ver;    /* last version set (read while idle) */
	uint64_t sets, ticks; /* publications, ticks spent publishing */
	bool pinned;
};

static void *updater_thread(void *p)
{
	struct updater *u = p;

	u->pinned = bench_pin_self(CPU_OTHER);
	pthread_mutex_lock(&u->mu);
	for (;;) {
		int cmd;
		uint64_t next, start;

		while (u->cmd == U_IDLE)
			pthread_cond_wait(&u->cv, &u->mu);
		cmd = u->cmd;
		if (cmd == U_QUIT)
			break;
		pthread_mutex_unlock(&u->mu);
		atomic_store(&u->active, 1);
		start = bench_now_ticks();
		next = start + period_ticks;
		while (pace(&next, &u->stop)) {
			if (cmd == U_CELL)
				set_cell(u->cu, &u->cell_ver);
			else
				raw_write(u->sl);
			u->sets++;
		}
		u->ticks += bench_now_ticks() - start;
		pthread_mutex_lock(&u->mu);
		u->cmd = U_IDLE;
		atomic_store(&u->active, 0);
		pthread_cond_broadcast(&u->cv);
	}
	pthread_mutex_unlock(&u->mu);
	return NULL;
}

static void updater_cmd(struct updater *u, int cmd)
{
	pthread_mutex_lock(&u->mu);
	atomic_store(&u->stop, 0);
	u->cmd = cmd;
	pthread_cond_broadcast(&u->cv);
	pthread_mutex_unlock(&u->mu);
	if (cmd == U_QUIT)
		return;
	while (!atomic_load(&u->active))
		ck_pr_stall();
}

static void updater_stop(struct updater *u)
{
	atomic_store(&u->stop, 1);
	pthread_mutex_lock(&u->mu);
	while (u->cmd != U_IDLE)
		pthread_cond_wait(&u->cv, &u->mu);
	pthread_mutex_unlock(&u->mu);
}

/* ---------------------------------------------------------------------- */
/* The child (rows 4, 5)                                                  */

static void child_send(cmesh_sender *up, struct res *r, const uint64_t *v,
		       uint32_t n)
{
	int rc;

	r->n = n;
	rc = cmesh_sender_send(up, r, v, n * sizeof(*v));
	if (rc < 0)
		fail("cmesh_sender_send (up)", rc);
}

/* Waits until the cell (or the shm seqlock) has version `want`. */
static void child_sync(const struct cmd *c, cmesh_cell *cell,
		       struct seqlock *sl)
{
	struct val v;
	uint64_t ver = 0;
	int rc;

	if (c->obj == OBJ_RAW) {
		do
			raw_read(sl, &v, &ver);
		while (ver < c->want);
		return;
	}
	rc = cmesh_cell_get(cell, &v, &ver);
	if (rc)
		fail("cmesh_cell_get (sync)", rc);
	while (ver < c->want) {
		cmesh_ctx *ctx;

		rc = cmesh_ctx_with_timeout(NULL, 10000000000LL, &ctx);
		if (rc)
			fail("cmesh_ctx_with_timeout", rc);
		rc = cmesh_cell_wait_next(cell, ctx, &v, &ver);
		cmesh_ctx_free(ctx);
		if (rc)
			fail("cmesh_cell_wait_next (sync)", rc);
	}
}

static void child_measure(const struct cmd *c, cmesh_cell *cell,
			  struct seqlock *sl, cmesh_sender *up, bool pinned)
{
	uint64_t *v = bench_xcalloc(c->n, sizeof(uint64_t));
	uint64_t expect = c->mode == MODE_STATIC ? c->want : 0;
	struct res r;
	struct mres m;

	mres_init(&m);
	if (expect)
		child_sync(c, cell, sl);
	if (c->mode == MODE_PICK && c->obj == OBJ_CELL)
		pickups_cell(cell, v, c->n, &m);
	else if (c->mode == MODE_PICK)
		pickups_raw(sl, v, c->n, &m);
	else if (c->obj == OBJ_CELL)
		batches_cell(cell, v, c->warm, c->n, expect, &m);
	else
		batches_raw(sl, v, c->warm, c->n, expect, &m);
	memset(&r, 0, sizeof(r));
	r.kind = RES_CHUNK;
	for (uint32_t i = 0; i < c->n; i += CHUNK)
		child_send(up, &r, v + i, c->n - i < CHUNK ? c->n - i : CHUNK);
	r.kind = RES_DONE;
	r.changes = m.changes;
	r.checked = m.checked;
	r.sys = m.sys;
	r.sys_nr = m.sys_nr;
	r.last_ver = m.last_ver;
	r.faults = m.faults;
	r.sud = sud_on;
	r.pinned = pinned;
	child_send(up, &r, NULL, 0);
	free(v);
}

/* Never returns. */
static void child_main(int sock, bool pin, struct seqlock *sl)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_sender *up;
	cmesh_receiver *down;
	cmesh_cell *cell = NULL;
	bool pinned = false;
	int rc;

	bench_child_enter(parent_pid);
	if (pin)
		pinned = bench_pin_self(CPU_OTHER);
	rc = cmesh_node_join_socket(sock, &res_type, &cmd_type, &o, &node, &up,
				    &down);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	sud_enable(); /* this thread only: not the link's */
	for (;;) {
		struct cmd c;
		struct res r;
		struct val v;

		rc = cmesh_receiver_recv(down, &c, NULL, 0);
		if (rc == -EPIPE)
			break;
		if (rc != 0)
			fail("cmesh_receiver_recv (down)", rc);
		if (c.op == OP_QUIT)
			break;
		if (c.op == OP_MEASURE) {
			if (!cell && c.obj == OBJ_CELL)
				fail("a measure before the cell", -EPROTO);
			child_measure(&c, cell, sl, up, pinned);
			continue;
		}
		if (c.op != OP_CELL || cell)
			fail("an unexpected command", -EPROTO);
		rc = cmesh_cell_from_port(&c.cell, &val_type, NULL, &cell);
		if (rc)
			fail("cmesh_cell_from_port", rc);
		memset(&r, 0, sizeof(r));
		r.kind = RES_READY;
		rc = cmesh_cell_get(cell, &v, &r.last_ver);
		if (rc)
			fail("cmesh_cell_get (first)", rc);
		child_send(up, &r, NULL, 0);
	}
	sud_disable();
	cmesh_cell_free(cell);
	cmesh_sender_free(up);
	cmesh_receiver_free(down);
	rc = cmesh_node_close(node, cmesh_deadline_after(5000000000LL));
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_node_close", rc);
	_exit(0);
}

/* ---------------------------------------------------------------------- */
/* Rows                                                                   */

enum {
	R1,	 /* in-process cell, static */
	R2,	 /* in-process seqlock, static */
	R3,	 /* in-process cell, updating */
	R3_RAW,	 /* in-process seqlock, updating */
	R3_PICK, /* in-process cell, single reads of a new version */
	R3_RPICK,
	R4,	/* cross cell, static */
	R4_RAW, /* cross shm seqlock, static */
	R5,	/* cross cell, updating */
	R5_RAW,
	R5_PICK,
	R5_RPICK,
	NROWS
};

struct row {
	const char *scen, *name;
	int base;	  /* the ratio's reference row, or -1 */
	double target_ns; /* > 0: p50 <= this */
	int obj, mode;
	bool cross;
	uint64_t *v; /* samples: ticks per batch, or per pickup */
	uint64_t n;
	struct mres m; /* summed over rounds */
	bool sud;
	struct bench_result res;
};

#define ROW(sc, nm, b, tgt, ob, md, x)                                         \
	{                                                                      \
		.scen = sc, .name = nm, .base = b, .target_ns = tgt,           \
		.obj = ob, .mode = md, .cross = x                              \
	}

static struct row rows[NROWS] = {
	[R1] = ROW("1 in-process", "cell get", R2, TARGET_NS, OBJ_CELL,
		   MODE_STATIC, false),
	[R2] = ROW("2 in-proc raw", "seqlock", -1, 0, OBJ_RAW, MODE_STATIC,
		   false),
	[R3] = ROW("3 in-proc upd", "cell get", R3_RAW, 0, OBJ_CELL, MODE_UPD,
		   false),
	[R3_RAW] = ROW("", " seqlock", -1, 0, OBJ_RAW, MODE_UPD, false),
	[R3_PICK] = ROW("", " cell pickup", R3_RPICK, 0, OBJ_CELL, MODE_PICK,
			false),
	[R3_RPICK] = ROW("", " raw pickup", -1, 0, OBJ_RAW, MODE_PICK, false),
	[R4] = ROW("4 two procs", "cell get", R4_RAW, TARGET_NS, OBJ_CELL,
		   MODE_STATIC, true),
	[R4_RAW] = ROW("", " seqlock shm", -1, 0, OBJ_RAW, MODE_STATIC, true),
	[R5] = ROW("5 2procs upd", "cell get", R5_RAW, 0, OBJ_CELL, MODE_UPD,
		   true),
	[R5_RAW] = ROW("", " seqlock shm", -1, 0, OBJ_RAW, MODE_UPD, true),
	[R5_PICK] =
		ROW("", " cell pickup", R5_RPICK, 0, OBJ_CELL, MODE_PICK, true),
	[R5_RPICK] = ROW("", " raw pickup", -1, 0, OBJ_RAW, MODE_PICK, true),
};

static void mres_add(struct mres *to, const struct mres *m)
{
	to->changes += m->changes;
	to->checked += m->checked;
	to->sys += m->sys;
	to->faults += m->faults;
	if (to->sys_nr < 0)
		to->sys_nr = m->sys_nr;
}

/* ns per sample of row k: batches are per read. */
static double row_scale(int k)
{
	return rows[k].mode == MODE_PICK ? bench_ns_per_tick :
					   bench_ns_per_tick / BATCH;
}

/* ---------------------------------------------------------------------- */
/* The two sides of the run                                               */

struct inproc {
	cmesh_cell_updater *cu;
	cmesh_cell *cell;
	struct seqlock *sl;
	struct updater upd;
	pthread_t th;
};

struct xproc {
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_cell_updater *cu;
	uint64_t cell_ver;
	struct seqlock *sl;   /* MAP_SHARED */
	uint64_t sets, ticks; /* publications, ticks spent publishing */
	bool child_pinned, child_sud;
};

/* Round of in-process row k: `warm` + `n` batches (or n pickups). */
static void inproc_round(struct inproc *p, int k, uint32_t warm, uint32_t n)
{
	struct row *r = &rows[k];
	uint64_t *v = r->v + r->n;
	struct mres m;

	mres_init(&m);
	if (r->mode != MODE_STATIC)
		updater_cmd(&p->upd, r->obj == OBJ_CELL ? U_CELL : U_RAW);
	if (r->mode == MODE_PICK && r->obj == OBJ_CELL)
		pickups_cell(p->cell, v, n, &m);
	else if (r->mode == MODE_PICK)
		pickups_raw(p->sl, v, n, &m);
	else if (r->obj == OBJ_CELL)
		batches_cell(p->cell, v, warm, n,
			     r->mode == MODE_STATIC ? p->upd.cell_ver : 0, &m);
	else
		batches_raw(p->sl, v, warm, n,
			    r->mode == MODE_STATIC ?
				    atomic_load(&p->sl->seq) / 2 + 1 :
				    0,
			    &m);
	if (r->mode != MODE_STATIC) {
		struct val x;
		uint64_t ver;
		int rc;

		updater_stop(&p->upd);
		/* Take what is pending: the next rows start with none. */
		rc = cmesh_cell_get(p->cell, &x, &ver);
		READ_CHECK("cell get (drain)", x, ver, 0, rc);
	}
	r->n += n;
	r->sud = sud_on;
	mres_add(&r->m, &m);
}

/* The trailing samples of a result message. */
static uint64_t res_buf[CHUNK];

/*
 * Receives the child's results for row k; `first` (its samples in
 * res_buf): the first message, already received, `first_len` its
 * trailing bytes.
 */
static void x_results(struct xproc *x, int k, uint32_t n,
		      const struct res *first, int first_len)
{
	struct row *r = &rows[k];
	uint32_t got = 0;
	struct res m;
	int rc;

	for (;;) {
		if (first) {
			m = *first;
			rc = first_len;
			first = NULL;
		} else {
			rc = cmesh_receiver_recv(x->rx, &m, res_buf,
						 sizeof(res_buf));
			if (rc < 0)
				fail("cmesh_receiver_recv (results)", rc);
		}
		if ((size_t)rc != m.n * sizeof(uint64_t) || m.n > n - got)
			fail("results of a wrong size", -EPROTO);
		if (m.kind == RES_DONE)
			break;
		if (m.kind != RES_CHUNK)
			fail("results of a wrong kind", -EPROTO);
		memcpy(r->v + r->n + got, res_buf, m.n * sizeof(uint64_t));
		got += m.n;
	}
	if (got != n)
		fail("results: too few samples", -EPROTO);
	r->n += n;
	r->m.changes += m.changes;
	r->m.checked += m.checked;
	r->m.sys += m.sys;
	r->m.faults += m.faults;
	if (r->m.sys_nr < 0)
		r->m.sys_nr = m.sys_nr;
	r->sud = m.sud;
	x->child_sud = m.sud;
	x->child_pinned = m.pinned;
}

/*
 * Round of cross-process row k: the child measures; for an updating row
 * this process publishes every PERIOD_NS until the child's first result
 * message arrives.
 */
static void xproc_round(struct xproc *x, int k, uint32_t warm, uint32_t n)
{
	struct row *r = &rows[k];
	struct cmd c;
	struct res first;
	uint64_t next, start;
	int rc;

	memset(&c, 0, sizeof(c));
	c.op = OP_MEASURE;
	c.obj = (uint32_t)r->obj;
	c.mode = (uint32_t)r->mode;
	c.warm = warm;
	c.n = n;
	c.want = r->obj == OBJ_CELL ? x->cell_ver :
				      atomic_load(&x->sl->seq) / 2 + 1;
	rc = cmesh_sender_send(x->tx, &c, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (measure)", rc);
	if (r->mode == MODE_STATIC) {
		x_results(x, k, n, NULL, 0);
		return;
	}
	start = bench_now_ticks();
	next = start + period_ticks;
	for (;;) {
		pace(&next, NULL);
		if (r->obj == OBJ_CELL)
			set_cell(x->cu, &x->cell_ver);
		else
			raw_write(x->sl);
		x->sets++;
		rc = cmesh_receiver_try_recv(x->rx, &first, res_buf,
					     sizeof(res_buf));
		if (rc == -EAGAIN)
			continue;
		if (rc < 0)
			fail("cmesh_receiver_try_recv (results)", rc);
		break;
	}
	x->ticks += bench_now_ticks() - start;
	x_results(x, k, n, &first, rc);
}

/* Forks the child and joins it; sends it the cell (a second one). */
static void start_child(struct xproc *x, bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_cell *cell;
	struct val init = { 1, 3 };
	struct cmd c;
	struct res r;
	int sock, rc;
	pid_t pid;

	x->sl = mmap(NULL, sizeof(struct seqlock), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (x->sl == MAP_FAILED)
		bench_die("mmap", errno);
	raw_init(x->sl);
	pid = bench_fork_pair(&sock);
	if (pid == 0)
		child_main(sock, pin, x->sl);
	o.peer_pid = pid;
	rc = cmesh_node_join_socket(sock, &cmd_type, &res_type, &o, &node,
				    &x->tx, &x->rx);
	if (rc < 0)
		fail("cmesh_node_join_socket", rc);
	/* The link lives on while its channels do. */
	cmesh_node_free(node);

	rc = cmesh_cell_new(&val_type, &init, &x->cu, &cell);
	if (rc)
		fail("cmesh_cell_new (two processes)", rc);
	x->cell_ver = 1;
	memset(&c, 0, sizeof(c));
	c.op = OP_CELL;
	rc = cmesh_cell_to_port(cell, &c.cell);
	if (rc)
		fail("cmesh_cell_to_port", rc);
	rc = cmesh_sender_send(x->tx, &c, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (the cell)", rc);
	rc = cmesh_receiver_recv(x->rx, &r, NULL, 0);
	if (rc != 0 || r.kind != RES_READY)
		fail("cmesh_receiver_recv (ready)", rc ? rc : -EPROTO);
	if (r.last_ver != 1)
		fail("the child's cell starts at another version", -EPROTO);
	rc = cmesh_cell_subscribers(x->cu);
	if (rc != 1)
		fail("cmesh_cell_subscribers (want 1)", rc < 0 ? rc : -EPROTO);
}

/* Tells the child to leave, waits for its "closed", reaps it. */
static void stop_child(struct xproc *x)
{
	struct cmd c;
	struct res r;
	int rc;

	memset(&c, 0, sizeof(c));
	c.op = OP_QUIT;
	rc = cmesh_sender_send(x->tx, &c, NULL, 0);
	if (rc < 0)
		fail("cmesh_sender_send (quit)", rc);
	cmesh_sender_free(x->tx);
	rc = cmesh_receiver_recv_deadline(
		x->rx, cmesh_deadline_after(10000000000LL), &r, NULL, 0);
	if (rc != -EPIPE && rc != -ECONNRESET)
		fail("cmesh_receiver_recv_deadline (up) after quit", rc);
	cmesh_receiver_free(x->rx);
	bench_child_reap(0);
	cmesh_cell_updater_free(x->cu);
	munmap(x->sl, sizeof(struct seqlock));
}

static void start_inproc(struct inproc *p)
{
	struct val init = { 1, 3 };
	int rc;

	rc = cmesh_cell_new(&val_type, &init, &p->cu, &p->cell);
	if (rc)
		fail("cmesh_cell_new", rc);
	p->sl = bench_xcalloc(1, sizeof(*p->sl));
	raw_init(p->sl);
	pthread_mutex_init(&p->upd.mu, NULL);
	pthread_cond_init(&p->upd.cv, NULL);
	p->upd.cu = p->cu;
	p->upd.sl = p->sl;
	p->upd.cell_ver = 1;
	rc = pthread_create(&p->th, NULL, updater_thread, &p->upd);
	if (rc)
		fail("pthread_create", -rc);
}

static void stop_inproc(struct inproc *p)
{
	updater_cmd(&p->upd, U_QUIT);
	pthread_join(p->th, NULL);
	cmesh_cell_free(p->cell);
	cmesh_cell_updater_free(p->cu);
	free(p->sl);
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

static double row_ratio(int k)
{
	return bench_ratio(&rows[rows[k].base].res, &rows[k].res, false);
}

static void print_row(int k)
{
	const struct row *r = &rows[k];
	char p50[16], p99[16], p999[16], upd[16] = "-", sys[32] = "n/a";
	char flt[24];
	char ratio[16] = "-", tgt[16] = "ref";
	const char *res = "";

	bench_fmt_ns(p50, sizeof(p50), r->res.p50);
	bench_fmt_ns(p99, sizeof(p99), r->res.p99);
	bench_fmt_ns(p999, sizeof(p999), r->res.p999);
	if (r->mode != MODE_PICK)
		snprintf(upd, sizeof(upd), "%.2f",
			 r->n ? (double)r->m.changes / (double)r->n : 0.0);
	snprintf(flt, sizeof(flt), "%" PRIu64, r->m.faults);
	if (r->sud)
		snprintf(sys, sizeof(sys), "%" PRIu64 "/%" PRIu64, r->m.sys,
			 r->m.checked);
	if (r->base >= 0)
		snprintf(ratio, sizeof(ratio), "%.2fx", row_ratio(k));
	if (r->base >= 0 || r->mode == MODE_PICK)
		snprintf(tgt, sizeof(tgt), "info");
	if (r->target_ns > 0) {
		snprintf(tgt, sizeof(tgt), "<=%.0fns", r->target_ns);
		res = r->res.p50 <= r->target_ns ? "PASS" : "FAIL";
	}
	printf("%-15s %-12s %6" PRIu64
	       " %8s %8s %8s %6s %11s %5s %6s %7s  %s\n",
	       r->scen, r->name, r->n, p50, p99, p999, upd, sys, flt, ratio,
	       tgt, res);
	bench_json_result(r->scen, r->name, &r->res, NULL);
	if (r->target_ns > 0) {
		char what[64], v[24];

		snprintf(what, sizeof(what), "%s: %s p50", r->scen, r->name);
		snprintf(v, sizeof(v), "%s ns", p50);
		bench_json_target(what, v, tgt, *res == 'P');
	}
}

static double per_sec(uint64_t n, uint64_t ticks)
{
	return ticks ? (double)n / ((double)ticks * bench_ns_per_tick * 1e-9) :
		       0.0;
}

/* Median of back-to-back clock reads, ns: in every pickup sample. */
static double clock_cost_ns(void)
{
	uint64_t v[1001];

	for (size_t i = 0; i < 1001; i++) {
		uint64_t t0 = bench_now_ticks();

		v[i] = bench_now_ticks() - t0;
	}
	qsort(v, 1001, sizeof(v[0]), bench_cmp_u64);
	return (double)v[500] * bench_ns_per_tick;
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

struct config {
	bool smoke, strict, two_cpus;
	int only; /* 0: both, 1: in-process, 2: two processes */
	double scale;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_cell [--smoke] [--strict] "
		   "[--only inproc|xproc]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_SCALE=F\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	cfg->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	cfg->scale = bench_scale_env("bench_cell");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (bench_common_arg(a, &cfg->smoke, &cfg->strict, usage))
			continue;
		if (strcmp(a, "--only") == 0 && i + 1 < argc &&
		    strcmp(argv[i + 1], "inproc") == 0)
			cfg->only = 1, i++;
		else if (strcmp(a, "--only") == 0 && i + 1 < argc &&
			 strcmp(argv[i + 1], "xproc") == 0)
			cfg->only = 2, i++;
		else
			bench_bad_arg(a, usage);
	}
}

static uint32_t scaled(const struct config *cfg, uint64_t full, uint64_t smoke,
		       uint64_t min)
{
	double v = (double)(cfg->smoke ? smoke : full) * cfg->scale;

	if (v > 1e7)
		v = 1e7;
	return v < (double)min ? (uint32_t)min : (uint32_t)v;
}

/* The per-round ratio of row k's p50 to its base row's, into p. */
static void note_round(struct bench_parts *p, int k, uint64_t from, uint64_t n)
{
	int b = rows[k].base;
	uint64_t *cv = rows[k].v + from, *rv = rows[b].v + from;
	double cp, rp;

	qsort(cv, n, sizeof(*cv), bench_cmp_u64);
	qsort(rv, n, sizeof(*rv), bench_cmp_u64);
	cp = (double)bench_pct(cv, n, 50.0) * row_scale(k);
	rp = (double)bench_pct(rv, n, 50.0) * row_scale(b);
	bench_note_part(p, rp > 0 ? cp / rp : 0, rp);
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	struct inproc in;
	struct xproc x;
	struct bench_parts parts[2];
	uint32_t rounds, nb, warm, np;
	uint64_t t0;
	int fails = 0;
	bool run_in, run_x, in_sud = false;
	double clk;

	memset(&in, 0, sizeof(in));
	memset(&x, 0, sizeof(x));
	memset(parts, 0, sizeof(parts));
	bench_name = "bench_cell";
	bench_die_hook = bench_child_die_hook;
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	run_in = cfg.only != 2;
	run_x = cfg.only != 1;
	rounds = cfg.smoke ? 2 : 10;
	nb = scaled(&cfg, 200, 20, 2); /* batches per row-round, 1-20 us */
	np = scaled(&cfg, 300, 20, 2); /* pickups per row-round, 10 us */
	warm = cfg.smoke ? 2 : 5;
	parent_pid = getpid();
	bench_child_signals("bench_cell");

	cfg.two_cpus = bench_cpus_usable(CPU_READER, CPU_OTHER) &&
		       bench_pin_self(CPU_READER);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	period_ticks = (uint64_t)((double)PERIOD_NS / bench_ns_per_tick);
	if (!period_ticks)
		period_ticks = 1;
	{
		char cflags[512];

		bench_cflags(cflags, sizeof(cflags), BENCH_CFLAGS_OR("-O2"));
		bench_print_header(cflags, "threads/processes on cpus",
				   CPU_READER, CPU_OTHER, cfg.two_cpus,
				   cfg.smoke);
	}
	clk = clock_cost_ns();
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();
	alarm(cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S);

	/* The child first: fork while this process has one thread. */
	if (run_x)
		start_child(&x, cfg.two_cpus);
	if (run_in) {
		start_inproc(&in);
		in_sud = sud_enable(); /* this thread: the reader of 1-3 */
	}
	for (int k = 0; k < NROWS; k++) {
		rows[k].m.sys_nr = -1;
		if (rows[k].cross ? run_x : run_in)
			rows[k].v = bench_xcalloc(
				(uint64_t)rounds *
					(rows[k].mode == MODE_PICK ? np : nb),
				sizeof(uint64_t));
	}
	for (uint32_t i = 0; i < rounds; i++) {
		for (int j = 0; j < NROWS; j++) {
			/* Every other round in reverse order. */
			int k = i % 2 ? NROWS - 1 - j : j;
			uint32_t n = rows[k].mode == MODE_PICK ? np : nb;

			if (!rows[k].v)
				continue;
			if (rows[k].cross)
				xproc_round(&x, k, warm, n);
			else
				inproc_round(&in, k, warm, n);
		}
		if (rows[R1].v)
			note_round(&parts[0], R1, (uint64_t)i * nb, nb);
		if (rows[R4].v)
			note_round(&parts[1], R4, (uint64_t)i * nb, nb);
	}
	if (run_in) {
		sud_disable();
		stop_inproc(&in);
	}
	if (run_x)
		stop_child(&x);
	alarm(0);
	bench_cpu_usage_read(&usage1);

	printf("%-15s %-12s %6s %8s %8s %8s %6s %11s %5s %6s %7s  %s\n",
	       "scenario", "row", "n", "p50 ns", "p99 ns", "p99.9 ns", "upd/b",
	       "sys", "flt", "ratio", "target", "result");
	for (int k = 0; k < NROWS; k++) {
		if (!rows[k].v)
			continue;
		rows[k].res.n = rows[k].n;
		bench_fill_latency(&rows[k].res, rows[k].v, rows[k].n,
				   row_scale(k));
	}
	/* Row 1's reference is scenario 2: one plot shows both. */
	bench_json_plot_with(rows[R1].scen, rows[R2].scen);
	for (int k = 0; k < NROWS; k++) {
		if (!rows[k].v)
			continue;
		print_row(k);
		if (rows[k].target_ns > 0 &&
		    rows[k].res.p50 > rows[k].target_ns)
			fails++;
	}
	for (int k = 0; k < NROWS; k++)
		free(rows[k].v);
	printf("# ns per read = batch time / %u reads; n = batches (pickup "
	       "rows: gets); p50/p99/p99.9 of the batch averages; %u "
	       "rounds, %u unrecorded batches per row and round; ratio: "
	       "cell p50 / the seqlock p50 of the same scenario and kind; "
	       "flt: page faults of the reading thread while it read\n",
	       BATCH, rounds, warm);
	printf("# pickup: one cmesh_cell_get() that returned a new version, "
	       "timed alone (a clock read, ~%.1f ns, included; %u "
	       "unrecorded per round)\n",
	       clk, PICK_WARM);
	printf("# upd/b: new versions seen per batch; updaters publish every "
	       "%.0f us: %" PRIu64 " in-process sets (%.0f/s while "
	       "publishing), %" PRIu64 " cross-process (%.0f/s)\n",
	       PERIOD_NS / 1000.0, in.upd.sets,
	       per_sec(in.upd.sets, in.upd.ticks), x.sets,
	       per_sec(x.sets, x.ticks));
	bench_print_parts("1 cell get / seqlock", "seqlock", &parts[0]);
	bench_print_parts("4 cell get / seqlock shm", "seqlock shm", &parts[1]);
	if ((run_in && !in_sud) || (run_x && !x.child_sud))
		printf("# sys n/a: syscall user dispatch unavailable: "
		       "\"no syscall\" NOT verified\n");
	printf("# sys: batches (pickup: gets) in which the reading thread "
	       "made >= 1 syscall / batches checked (syscall user dispatch, "
	       "selector BLOCK around the reads only)");
	for (int k = 0; k < NROWS; k++)
		if (rows[k].v && rows[k].m.sys)
			printf("; %s%s first syscall nr %" PRId64,
			       rows[k].scen[0] ? rows[k].scen : "",
			       rows[k].name, rows[k].m.sys_nr);
	printf("\n");
	if (run_in && !in.upd.pinned)
		printf("# the updater thread is NOT pinned\n");
	if (run_x && !x.child_pinned)
		printf("# the child is NOT pinned\n");
	bench_print_wall(cfg.smoke, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
