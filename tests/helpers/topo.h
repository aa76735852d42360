/* SPDX-License-Identifier: MIT */
/*
 * topo.h - run one test body in several topologies.
 *
 * A scenario is a pair of functions, the driver and the peer, joined by
 * two channels: one the driver sends on and the peer receives from
 * ("down"), one the other way ("up"). topo_run() connects them
 *
 *   TOPO_THREAD  in one process: two cmesh_channel_new() channels, the peer
 *                in a thread;
 *   TOPO_FORK    across processes: a control socketpair, fork(); the child
 *                calls cmesh_node_join_socket() and runs the peer;
 *   TOPO_LISTEN  across processes: cmesh_listen() on a path in a fresh
 *                temporary directory, fork(); the child cmesh_connect()s,
 *                the parent cmesh_listener_accept()s;
 *
 * runs the driver in the calling thread (Criterion asserts), waits for the
 * peer (a thread is joined, a child process is reaped and must exit 0) and
 * asserts that the process's fds and mappings are back where they were.
 *
 *   Test(node, fifo_in_process) { topo_run(&fifo, TOPO_THREAD); }
 *   Test(node, fifo_cross_process) { topo_run(&fifo, TOPO_FORK); }
 *
 * Ownership: the driver and the peer own the handles they are given and
 * free them before returning. The peer must not use Criterion asserts (it
 * may run in a child process or a thread): it checks with TOPO_CHECK*()
 * and returns 0 on success, non-zero on failure (the failure is printed).
 * After the peer returns, it waits until the driver has returned too, so
 * a peer never exits (and resets its link) under a driver still reading.
 *
 * Besides the channels the two sides share a sync socket (a SEQPACKET
 * pair, one byte per message) for sequencing what channels cannot (for
 * example "do not read yet"); no test sleeps to synchronize.
 */
#ifndef CMESH_TOPO_H
#define CMESH_TOPO_H

#include "testutil.h"

#include <cmesh.h>

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum topo_kind {
	TOPO_THREAD = 1,
	TOPO_FORK,
	TOPO_LISTEN,
};

/* What each side of a scenario gets besides its two handles. */
struct topo_side {
	const void *arg;     /* the scenario's argument */
	int sync;	     /* sync socket to the other side (borrowed) */
	enum topo_kind kind; /* topology in use */
	bool cross;	     /* the other side is another process */
	pid_t peer_pid;	     /* driver, cross-process: the peer's pid */
};

/* Driver: Criterion asserts. Peer: returns 0 or non-zero (see above). */
typedef void (*topo_driver_fn)(cmesh_sender *tx, cmesh_receiver *rx,
			       const struct topo_side *side);
typedef int (*topo_peer_fn)(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *side);

struct topo_scenario {
	const cmesh_type *down; /* driver -> peer */
	const cmesh_type *up;	/* peer -> driver */
	uint32_t ring_size;	/* both sides' rings; 0: default */
	int64_t spin_ns;	/* both sides' receivers; 0: default */
	uint64_t max_backlog;	/* both sides' senders; 0: default */
	topo_driver_fn driver;
	topo_peer_fn peer;
	const void *arg;
};

/* Runs `sc` in topology `kind` (Criterion asserts; call from a Test). */
void topo_run(const struct topo_scenario *sc, enum topo_kind kind);

/*
 * The cross-process half of topo_run() for tests that end a peer their own
 * way (kill it, let it exit early): forks a peer process running
 * `sc->peer`, joins it (TOPO_FORK or TOPO_LISTEN; asserts) and returns
 * the driver's handles, the child's pid and the sync socket. The child
 * exits as in topo_run() (after the driver's side posts topo_bye() or
 * closes the sync socket) unless the peer never returns. The caller
 * reaps the child and closes `sync`.
 */
struct topo_conn {
	cmesh_sender *tx;
	cmesh_receiver *rx;
	pid_t pid;
	int sync;
};
void topo_fork_peer(const struct topo_scenario *sc, enum topo_kind kind,
		    struct topo_conn *out);

/* Tells the peer that the driver's side is done (it may exit). */
void topo_bye(int sync);

/* ---- resources -------------------------------------------------------- */

/* What a test must leave as it found: fds, mappings, memfd mappings. */
struct topo_res {
	int fds;
	int maps;
	int memfd_maps;
};

/*
 * Warms up what cmesh and libc keep per process (a channel used and slept
 * on, a link joined in this process and freed, a few threads at once),
 * then records the counts.
 */
void topo_baseline(struct topo_res *r);

/*
 * Asserts the counts are back to `r`: fds and memfd mappings exactly; all
 * mappings exactly unless the binary runs under a sanitizer or with
 * CMESH_TEST_STRESS above 1 (allocators keep heaps they grew mapped).
 */
void topo_assert_baseline(const struct topo_res *r);

/*
 * The same, for a test that freed a link with sends still spilled to a
 * peer that is dying or dead: the link's thread then frees it on its own
 * once it has seen the peer go (src/link.c, cmesh__link_put()). Waits up
 * to `ms` for the fds and memfd mappings to come back, then asserts.
 */
void topo_assert_baseline_within(const struct topo_res *r, unsigned ms);

/* Mappings of memfds ("/memfd:" lines of /proc/self/maps). */
int topo_memfd_map_count(void);

/* ---- processes -------------------------------------------------------- */

/*
 * fork() (asserting it worked). In the child: a watchdog alarm is armed;
 * the child must leave through topo_child_exit() (never return into
 * Criterion).
 */
pid_t topo_fork(void);

/* Child: _exit(0) if rc == 0, else _exit(1). */
_Noreturn void topo_child_exit(int rc);

/*
 * Waits up to `timeout_ms` for `pid` and returns its wait status; on
 * timeout kills it (SIGKILL), reaps it and returns -ETIMEDOUT.
 */
int topo_reap(pid_t pid, unsigned timeout_ms);

/* Reaps `pid` (up to timeout_ms) and asserts it exited with status 0. */
void topo_assert_exit_0(pid_t pid, unsigned timeout_ms);

/* ---- sync socket ------------------------------------------------------ */

/* A connected SEQPACKET pair (close-on-exec); asserts. */
void topo_sync_pair(int sv[2]);

/* Sends one byte. 0 or -errno (never raises SIGPIPE). */
int topo_post(int sync, uint8_t v);

/*
 * Waits up to `timeout_ms` for one byte: returns it (0..255), -ETIMEDOUT,
 * or -EPIPE (the other end is closed).
 */
int topo_wait(int sync, unsigned timeout_ms);

/* ---- peer-side checks (no Criterion) ----------------------------------- */

/* Prints a failed peer check to stderr. */
void topo_fail(const char *file, int line, const char *what, long long got,
	       long long want);

/* Returns non-zero from the enclosing peer function if `cond` is false. */
#define TOPO_CHECK(cond)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			topo_fail(__FILE__, __LINE__, #cond, 0, 0);            \
			return __LINE__;                                       \
		}                                                              \
	} while (0)

/* Same for `expr == want`, printing both values. */
#define TOPO_CHECK_EQ(expr, want)                                              \
	do {                                                                   \
		long long topo_g_ = (long long)(expr);                         \
		long long topo_w_ = (long long)(want);                         \
		if (topo_g_ != topo_w_) {                                      \
			topo_fail(__FILE__, __LINE__, #expr, topo_g_,          \
				  topo_w_);                                    \
			return __LINE__;                                       \
		}                                                              \
	} while (0)

/*
 * A bound for any single wait in a test (ms): the test's whole budget, so
 * that a wait that never ends fails with its own message before the
 * test's watchdog (TU_WATCHDOG_BUDGETS budgets) kills it.
 */
#define TOPO_WAIT_MS (TU_BUDGET_S * 1000u)

/* Deadline TOPO_WAIT_MS from now, for recv_deadline. */
int64_t topo_deadline(void);

/* ---- types shared with tests/progs ------------------------------------ */

/*
 * What tests/progs/echo.c echoes: each message comes back with its trail
 * and its fd (moved back), `seq` unchanged. Each user defines the
 * descriptor itself (same name and size, hence same fingerprint):
 *   CMESH_TYPE_DEFINE(echo_type, struct topo_echo_msg,
 *           CMESH_FIELD_FD(struct topo_echo_msg, fd));
 */
struct topo_echo_msg {
	uint64_t seq;
	uint32_t len; /* trailing bytes, as the sender saw them */
	int fd;
};

/* tests/progs/burst.c's message (CMESH_TYPE_DEFINE_PLAIN on both sides). */
struct topo_burst_msg {
	uint64_t seq;
	uint64_t pad[3];
};

/*
 * What tests/progs/inspect.c reports of the state it started in (before
 * it joined): fds other than 0-2 and its invitation, the blocked and the
 * ignored signals (bit n-1 for signal n, 1..64), its parent-death signal.
 * A plain type (CMESH_TYPE_DEFINE_PLAIN) on both sides.
 */
struct topo_inspect_msg {
	uint64_t blocked;
	uint64_t ignored;
	int32_t extra_fds;
	int32_t pdeathsig;
};

#endif
