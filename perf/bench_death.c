/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_death.c - how soon a receiver learns that its peer process
 * died: from the SIGKILL of the peer to the return of the peer's receiver
 * blocked in cmesh_receiver_recv() with -ECONNRESET.
 *
 * A link watches the peer process with a pidfd when it knows the peer's
 * pid (cmesh_node_opts.peer_pid: the caller forked the peer); without it
 * only the control socket's hang-up tells, and when the dying peer used
 * io_uring the kernel releases its files late (5-12 ms measured before).
 *
 * Per iteration this process (CPU 0) makes a SOCK_SEQPACKET socketpair,
 * forks, and the child execs this program again (/proc/self/exe --child
 * FD ...) with CMESH_WAKE set in its environment to the row's backend:
 * the environment is read once per process, so only an exec makes the
 * child's backend really differ. The child pins itself to CPU 1, joins
 * with cmesh_node_join_socket(), sends one message and blocks in
 * cmesh_receiver_recv() until it is killed. The parent joins, receives
 * that message, starts a thread which blocks in the row's wait (below),
 * waits 1.5 ms and until /proc says that thread is asleep, takes t0
 * (CLOCK_MONOTONIC) and SIGKILLs the child; the thread takes t1 the moment
 * its wait returns. Latency = t1 - t0. Then the child is reaped and the
 * sender, receiver and node are freed. Rows, for each child backend
 * (uring, epoll):
 *
 *   raw pidfd     no cmesh wait: poll() on a pidfd of the child until
 *                 POLLIN (the floor of the pidfd row); the parent's link
 *                 has no pidfd (peer_pid 0).
 *   cmesh pidfd   cmesh_receiver_recv(), opts.peer_pid = the child.
 *   cmesh socket  cmesh_receiver_recv(), opts.peer_pid = 0: on a
 *                 socketpair this process made the link has no pidfd,
 *                 only the control socket's hang-up.
 *
 * The receivers never spin (opts.spin_ns = CMESH_SPIN_NONE in both
 * processes). The rows alternate within each iteration so that drift hits
 * them alike; a few unrecorded iterations of each come first.
 *
 * Rows show n, min, p50, p99, max in us and how many samples exceed 2 ms
 * (at n = 100 the p99 is the second largest sample).
 *
 * Targets: the two cmesh pidfd rows, p99 <= 2 ms.
 *
 * Usage: bench_death [--smoke] [--strict] [--iters N]
 * --smoke: 5 iterations per row (well under 3 s), for CI; the targets are
 * printed but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_ITERS=N (flags win over
 * the environment). CMESH_WAKE applies to this process only: each row sets
 * the child's.
 * Exit status: 0 unless a call fails (2) or an iteration hangs (3:
 * watchdog), or --strict without --smoke and a target FAILs (1). Every
 * child dies with the parent (PR_SET_PDEATHSIG) and is killed and reaped
 * on every exit path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture */
#endif

#define CPU_PARENT 0
#define CPU_CHILD 1
#define NBACKENDS 2
#define NWATCH 3
#define WATCH_RAW 0	    /* poll() on a pidfd of the child */
#define WATCH_PIDFD 1	    /* cmesh, opts.peer_pid = the child */
#define WATCH_SOCKET 2	    /* cmesh, opts.peer_pid = 0 */
#define TARGET_P99_NS 2.0e6 /* cmesh pidfd rows: p99 <= 2 ms */
#define SETTLE_NS 1500000L  /* the waiter's sleep before the kill */
#define ASLEEP_RETRY_NS 100000L
#define ASLEEP_TRIES 100	    /* then kill anyway (counted) */
#define CHILD_MAGIC 0x6874616564ull /* "death" */
#define ITERS_FULL 100u
#define ITERS_SMOKE 5u
#define WARM_FULL 3u
#define WARM_SMOKE 1u
#define WATCHDOG_FULL_S 120u
#define WATCHDOG_SMOKE_S 30u

static const char *const backend_names[NBACKENDS] = { "uring", "epoll" };
static const char *const backend_env[NBACKENDS] = { "CMESH_WAKE=uring",
						    "CMESH_WAKE=epoll" };
static const uint32_t backend_kinds[NBACKENDS] = { CMESH_WAKE_URING,
						   CMESH_WAKE_EPOLL };
static const char *const watch_names[NWATCH] = { "raw pidfd", "cmesh pidfd",
						 "cmesh socket" };

static CMESH_TYPE_DEFINE_PLAIN(bench_msg_type, struct bench_msg);

/* ---------------------------------------------------------------------- */
/* Process state                                                          */

static pid_t parent_pid;
static char **child_env[NBACKENDS];

static void sleep_ns(long ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000L,
			       .tv_nsec = ns % 1000000000L };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

/* ---------------------------------------------------------------------- */
/* Child: join, one message, then blocked in recv until killed            */

/* Never returns. argv: --child FD BACKEND PIN. */
static void child_main(char **argv)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_env env = CMESH_ENV_INIT;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct bench_msg m;
	char ebuf[128], *end;
	int b, fd, rc;
	long v;

	bench_is_child = true;
	bench_who = "child: ";
	errno = 0;
	v = strtol(argv[2], &end, 10);
	if (errno || *end || v < 3 || v > 65535)
		bench_die("bad --child fd", EINVAL);
	fd = (int)v;
	for (b = 0; b < NBACKENDS; b++)
		if (strcmp(argv[3], backend_names[b]) == 0)
			break;
	if (b == NBACKENDS)
		bench_die("bad --child backend", EINVAL);
	if (strcmp(argv[4], "1") == 0)
		bench_pin_self(CPU_CHILD);
	rc = cmesh_env_check(&env, ebuf, sizeof(ebuf));
	if (rc < 0) {
		fprintf(stderr, "bench_death: child: %s\n", ebuf);
		bench_die("cmesh_env_check", rc);
	}
	if (env.wake != backend_kinds[b])
		bench_die("CMESH_WAKE did not reach the child", EINVAL);
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
		bench_die("fcntl F_SETFD on the inherited socket", errno);
	o.spin_ns = CMESH_SPIN_NONE;
	rc = cmesh_node_join_socket(fd, &bench_msg_type, &bench_msg_type, &o,
				    &node, &tx, &rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
	memset(&m, 0x5a, sizeof(m));
	m.seq = (uint64_t)getpid();
	m.stamp = CHILD_MAGIC;
	rc = cmesh_sender_send(tx, &m, NULL, 0);
	if (rc < 0)
		bench_die("cmesh_sender_send", rc);
	/* Until the parent kills us. */
	rc = cmesh_receiver_recv(rx, &m, NULL, 0);
	/* The parent went away first (it died: PR_SET_PDEATHSIG races). */
	_exit(rc == -ECONNRESET || rc == -EPIPE ? 0 : 2);
}

/* ---------------------------------------------------------------------- */
/* Parent: one child per iteration                                        */

/* The environment of a child of backend b: ours, with its CMESH_WAKE. */
static void build_child_env(void)
{
	size_t n = 0;

	while (environ[n])
		n++;
	for (int b = 0; b < NBACKENDS; b++) {
		char **e = bench_xcalloc(n + 2, sizeof(char *));
		size_t k = 0;

		for (size_t i = 0; i < n; i++)
			if (strncmp(environ[i], "CMESH_WAKE=", 11) != 0)
				e[k++] = environ[i];
		e[k++] = (char *)backend_env[b];
		e[k] = NULL;
		child_env[b] = e;
	}
}

static void free_child_env(void)
{
	for (int b = 0; b < NBACKENDS; b++) {
		free(child_env[b]);
		child_env[b] = NULL;
	}
}

/*
 * Forks a child that execs this program as a peer of backend b on sp[1];
 * closes sp[1] here. Between fork and exec the child makes only
 * async-signal-safe calls.
 */
static pid_t start_child(int b, int sp[2], bool pin)
{
	char fdarg[16];
	char *argv[6];
	pid_t pid;

	snprintf(fdarg, sizeof(fdarg), "%d", sp[1]);
	argv[0] = (char *)"bench_death";
	argv[1] = (char *)"--child";
	argv[2] = fdarg;
	argv[3] = (char *)backend_names[b];
	argv[4] = (char *)(pin ? "1" : "0");
	argv[5] = NULL;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		int err = errno;

		close(sp[0]);
		close(sp[1]);
		bench_die("fork", err);
	}
	if (pid == 0) {
		close(sp[0]);
		/* Keep sp[1] across the exec; die with the parent. */
		if (fcntl(sp[1], F_SETFD, 0) != 0 ||
		    prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
		    getppid() != parent_pid)
			_exit(126);
		execve("/proc/self/exe", argv, child_env[b]);
		_exit(127);
	}
	bench_child_pid = pid;
	close(sp[1]);
	return pid;
}

/* The thread that waits for the child's death. */
struct waiter {
	cmesh_receiver *rx; /* NULL: poll() pidfd instead */
	int pidfd;
	_Atomic pid_t tid; /* its thread id, published before the wait */
	uint64_t t1;	   /* CLOCK_MONOTONIC ns when the wait returned */
	int rc;		   /* recv's return, or 0 / -errno of poll() */
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	struct bench_msg m;
	int rc;

	atomic_store_explicit(&w->tid, (pid_t)syscall(SYS_gettid),
			      memory_order_release);
	if (w->rx) {
		rc = cmesh_receiver_recv(w->rx, &m, NULL, 0);
	} else {
		struct pollfd p = { .fd = w->pidfd, .events = POLLIN };

		while ((rc = poll(&p, 1, -1)) < 0 && errno == EINTR)
			;
		rc = rc < 0 ? -errno : (p.revents & POLLIN) ? 0 : -EPROTO;
	}
	w->t1 = bench_mono_ns();
	w->rc = rc;
	return NULL;
}

/* True if thread `tid` of this process is sleeping ('S' in its stat). */
static bool task_asleep(pid_t tid)
{
	char path[64], buf[512];
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		bench_die("open /proc/self/task/TID/stat", errno);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

struct stats {
	uint64_t late;	    /* the waiter not asleep after SETTLE_NS */
	uint64_t awake;	    /* ... nor after ASLEEP_TRIES more checks */
	uint64_t kills;	    /* recorded kills, all rows */
	int fds0;	    /* parent's open fds before the recorded part */
	int fds_lo, fds_hi; /* ... after each recorded iteration */
};

static struct stats st;

/*
 * One child of backend b killed while we wait as `watch` says; returns
 * the latency in ns.
 */
static uint64_t death_once(int b, int watch, bool pin)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct waiter w = { .pidfd = -1 };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct bench_msg m;
	pthread_t th;
	uint64_t t0;
	int sp[2], rc, tries;
	pid_t pid, tid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
		bench_die("socketpair", errno);
	pid = start_child(b, sp, pin);
	if (watch == WATCH_RAW) {
		w.pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (w.pidfd < 0) {
			int err = errno;

			close(sp[0]);
			bench_die("pidfd_open", err);
		}
	}
	o.spin_ns = CMESH_SPIN_NONE;
	o.peer_pid = watch == WATCH_PIDFD ? pid : 0;
	rc = cmesh_node_join_socket(sp[0], &bench_msg_type, &bench_msg_type, &o,
				    &node, &tx, &rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
	rc = cmesh_receiver_recv(rx, &m, NULL, 0);
	if (rc != 0)
		bench_die("cmesh_receiver_recv (the child's message)",
			  rc < 0 ? rc : EPROTO);
	if (m.seq != (uint64_t)pid || m.stamp != CHILD_MAGIC)
		bench_die("the child's message", EPROTO);

	w.rx = watch == WATCH_RAW ? NULL : rx;
	rc = pthread_create(&th, NULL, waiter_main, &w);
	if (rc)
		bench_die("pthread_create", rc);
	sleep_ns(SETTLE_NS);
	for (tries = 0;; tries++) {
		tid = atomic_load_explicit(&w.tid, memory_order_acquire);
		if ((tid && task_asleep(tid)) || tries == ASLEEP_TRIES)
			break;
		sleep_ns(ASLEEP_RETRY_NS);
	}
	t0 = bench_mono_ns();
	if (kill(pid, SIGKILL) != 0)
		bench_die("kill", errno); /* the hook kills and reaps */
	rc = pthread_join(th, NULL);
	if (rc)
		bench_die("pthread_join", rc);
	if (w.t1 < t0)
		bench_die("the wait returned before the kill", EPROTO);
	if (watch == WATCH_RAW && w.rc != 0)
		bench_die("poll on the pidfd", w.rc < 0 ? -w.rc : EPROTO);
	if (watch != WATCH_RAW && w.rc != -ECONNRESET) {
		fprintf(stderr,
			"bench_death: recv after the kill returned %d, "
			"want -ECONNRESET\n",
			w.rc);
		bench_die("cmesh_receiver_recv after the kill",
			  w.rc < 0 ? w.rc : EPROTO);
	}
	bench_child_reap(SIGKILL); /* it must have died of our SIGKILL */
	if (w.pidfd >= 0)
		close(w.pidfd);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	if (tries > 0)
		st.late++;
	if (tries == ASLEEP_TRIES)
		st.awake++;
	return w.t1 - t0;
}

/* ---------------------------------------------------------------------- */
/* Rows                                                                   */

struct row {
	uint64_t n;
	double min, p50, p99, max; /* ns */
	uint64_t over;		   /* samples above TARGET_P99_NS */
	struct bench_result lat;   /* for the JSON report */
};

static struct row rows[NBACKENDS][NWATCH];

static void run(uint64_t warm, uint64_t n, bool pin)
{
	uint64_t *v[NBACKENDS][NWATCH];

	for (int b = 0; b < NBACKENDS; b++)
		for (int k = 0; k < NWATCH; k++)
			v[b][k] = bench_xcalloc(n, sizeof(uint64_t));
	for (uint64_t i = 0; i < warm + n; i++) {
		int fds;

		if (i == warm)
			st.fds0 = bench_count_fds();
		for (int b = 0; b < NBACKENDS; b++) {
			for (int k = 0; k < NWATCH; k++) {
				uint64_t ns = death_once(b, k, pin);

				if (i >= warm)
					v[b][k][i - warm] = ns;
			}
		}
		if (i < warm)
			continue;
		fds = bench_count_fds();
		if (i == warm || fds < st.fds_lo)
			st.fds_lo = fds;
		if (i == warm || fds > st.fds_hi)
			st.fds_hi = fds;
		st.kills += NBACKENDS * NWATCH;
	}
	for (int b = 0; b < NBACKENDS; b++) {
		for (int k = 0; k < NWATCH; k++) {
			struct row *w = &rows[b][k];
			struct bench_result *r = &w->lat;

			bench_fill_latency(r, v[b][k], n, 1.0);
			r->n = n;
			w->n = n;
			w->min = (double)v[b][k][0];
			w->p50 = r->p50;
			w->p99 = r->p99;
			w->max = (double)v[b][k][n - 1];
			w->over = 0;
			for (uint64_t i = 0; i < n; i++)
				w->over += (double)v[b][k][i] > TARGET_P99_NS;
			free(v[b][k]);
		}
	}
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

static void print_rows(void)
{
	printf("%-6s %-13s %5s %9s %9s %9s %9s %6s\n", "child", "watch", "n",
	       "min us", "p50 us", "p99 us", "max us", ">2ms");
	for (int b = 0; b < NBACKENDS; b++) {
		for (int k = 0; k < NWATCH; k++) {
			const struct row *r = &rows[b][k];
			char mn[16], p50[16], p99[16], mx[16];

			bench_fmt_us(mn, sizeof(mn), r->min);
			bench_fmt_us(p50, sizeof(p50), r->p50);
			bench_fmt_us(p99, sizeof(p99), r->p99);
			bench_fmt_us(mx, sizeof(mx), r->max);
			printf("%-6s %-13s %5" PRIu64
			       " %9s %9s %9s %9s %6" PRIu64 "\n",
			       k == 0 ? backend_names[b] : "", watch_names[k],
			       r->n, mn, p50, p99, mx, r->over);
			bench_json_result(backend_names[b], watch_names[k],
					  &r->lat, NULL);
		}
	}
}

/* Prints the targets; returns how many FAIL. */
static int print_targets(void)
{
	int fails = 0;

	printf("%-44s %10s %12s  %s\n", "target", "value", "limit", "result");
	for (int b = 0; b < NBACKENDS; b++) {
		const struct row *r = &rows[b][WATCH_PIDFD];
		bool ok = r->p99 <= TARGET_P99_NS;
		char what[64], us[16], v[32], l[32];

		snprintf(what, sizeof(what), "%s child, cmesh pidfd p99",
			 backend_names[b]);
		bench_fmt_us(us, sizeof(us), r->p99);
		snprintf(v, sizeof(v), "%s us", us);
		snprintf(l, sizeof(l), "<=%.0f us", TARGET_P99_NS / 1000.0);
		printf("%-44s %10s %12s  %s\n", what, v, l,
		       ok ? "PASS" : "FAIL");
		bench_json_target(what, v, l, ok);
		fails += !ok;
	}
	return fails;
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

struct config {
	bool smoke, strict;
	uint64_t iters;
	bool two_cpus;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_death [--smoke] [--strict] [--iters N]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_ITERS=N\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	uint64_t iters = 0;

	cfg->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!bench_common_arg(a, &cfg->smoke, &cfg->strict, usage) &&
		    !bench_iters_arg(argc, argv, &i, &iters))
			bench_bad_arg(a, usage);
	}
	cfg->iters = bench_iters(iters, cfg->smoke, ITERS_FULL, ITERS_SMOKE);
}

static void print_notes(const struct config *cfg, uint64_t warm, double secs)
{
	printf("# per row: n kills after %" PRIu64 " unrecorded; latency = "
	       "SIGKILL of the child (t0, CLOCK_MONOTONIC) to the return of "
	       "the parent's waiting thread (raw: poll() on a pidfd of the "
	       "child, POLLIN; cmesh: cmesh_receiver_recv(), -ECONNRESET), "
	       "which slept %.1f ms first (spin_ns = CMESH_SPIN_NONE); "
	       "child = the dying peer's CMESH_WAKE (set before its exec); "
	       "cmesh pidfd: opts.peer_pid = the child; cmesh socket: "
	       "opts.peer_pid = 0, the control socket's hang-up alone\n",
	       warm, (double)SETTLE_NS / 1e6);
	printf("# cmesh pidfd minus raw pidfd (the kernel's floor), same "
	       "run:");
	for (int b = 0; b < NBACKENDS; b++) {
		const struct row *raw = &rows[b][WATCH_RAW];
		const struct row *cm = &rows[b][WATCH_PIDFD];

		printf("%s %s child p50 %+.1f us, p99 %+.1f us", b ? ";" : "",
		       backend_names[b], (cm->p50 - raw->p50) / 1000.0,
		       (cm->p99 - raw->p99) / 1000.0);
	}
	printf("\n");
	printf("# waiter not yet asleep after %.1f ms: %" PRIu64 " of %" PRIu64
	       " recorded kills (waited longer), still running at the kill: "
	       "%" PRIu64 "\n",
	       (double)SETTLE_NS / 1e6, st.late, st.kills, st.awake);
	printf("# open fds: parent %d before the recorded iterations, %d..%d "
	       "after each%s\n",
	       st.fds0, st.fds_lo, st.fds_hi,
	       st.fds0 != st.fds_lo || st.fds_lo != st.fds_hi ? ": fd LEAK?" :
								"");
	bench_print_wall(cfg->smoke, secs);
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	uint64_t warm, t0, per;
	unsigned int wd;
	int fails;

	bench_name = "bench_death";
	bench_die_hook = bench_child_die_hook;
	bench_check_dies = true;
	if (argc == 5 && strcmp(argv[1], "--child") == 0)
		child_main(argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	warm = cfg.smoke ? WARM_SMOKE : WARM_FULL;
	/* Generous: an iteration of all rows takes about 30 ms. */
	per = (cfg.iters + warm) / 10;
	wd = (cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S) +
	     (unsigned int)(per < 86400 ? per : 86400);
	parent_pid = getpid();
	bench_child_signals("an iteration");

	build_child_env();
	cfg.two_cpus = bench_cpus_usable(CPU_PARENT, CPU_CHILD) &&
		       bench_pin_self(CPU_PARENT);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_PARENT, CPU_CHILD, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();

	alarm(wd);
	run(warm, cfg.iters, cfg.two_cpus);
	alarm(0);
	bench_cpu_usage_read(&usage1);
	free_child_env();

	print_rows();
	fails = print_targets();
	print_notes(&cfg, warm, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
