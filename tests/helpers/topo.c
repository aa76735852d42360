/* SPDX-License-Identifier: MIT */
/*
 * topo.c - see topo.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "topo.h"

#include "ctl.h"
#include "testutil.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Sync byte the driver's side sends when it is done: the peer may leave. */
#define TOPO_BYE 0xffu

/* Threads started at once while warming up (see topo_baseline()). */
#define TOPO_WARM_THREADS 6

/* ---- sync socket ------------------------------------------------------ */

void topo_sync_pair(int sv[2])
{
	int r = cmesh__ctl_socketpair(sv);

	cr_assert_eq(r, 0, "cmesh__ctl_socketpair: %s", strerror(-r));
}

int topo_post(int sync, uint8_t v)
{
	ssize_t n;

	do
		n = send(sync, &v, 1, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	return n == 1 ? 0 : -errno;
}

int topo_wait(int sync, unsigned timeout_ms)
{
	struct pollfd p = { .fd = sync, .events = POLLIN };
	int64_t end = tu_now_ns() + (int64_t)timeout_ms * 1000000;
	uint8_t v;
	ssize_t n;
	int r;

	for (;;) {
		int64_t left = (end - tu_now_ns()) / 1000000;

		r = poll(&p, 1, left > 0 ? (int)left : 0);
		if (r == 1)
			break;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
	do
		n = recv(sync, &v, 1, 0);
	while (n == -1 && errno == EINTR);
	if (n == 0)
		return -EPIPE;
	if (n < 0)
		return -errno;
	return v;
}

/* Peer side: waits until the driver's side says bye (or is gone). */
static void wait_bye(int sync)
{
	int r;

	do
		r = topo_wait(sync, TOPO_WAIT_MS);
	while (r >= 0 && r != (int)TOPO_BYE);
}

/* ---- peer checks ---------------------------------------------------- */

void topo_fail(const char *file, int line, const char *what, long long got,
	       long long want)
{
	if (got == want)
		fprintf(stderr, "%s:%d: peer (pid %d): check failed: %s\n",
			file, line, (int)getpid(), what);
	else
		fprintf(stderr,
			"%s:%d: peer (pid %d): %s is %lld (%s), want %lld "
			"(%s)\n",
			file, line, (int)getpid(), what, got,
			got < 0 && got > -4096 ? cmesh_strerror((int)got) : "",
			want,
			want < 0 && want > -4096 ? cmesh_strerror((int)want) :
						   "");
}

int64_t topo_deadline(void)
{
	return cmesh_deadline_after(TU_MS(TOPO_WAIT_MS));
}

/* ---- processes -------------------------------------------------------- */

pid_t topo_fork(void)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL);
		alarm(tu_watchdog_s());
	}
	return pid;
}

_Noreturn void topo_child_exit(int rc)
{
	_exit(rc == 0 ? 0 : 1);
}

int topo_reap(pid_t pid, unsigned timeout_ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int64_t end = tu_now_ns() + (int64_t)timeout_ms * 1000000;
	int status = 0;
	pid_t w;

	for (;;) {
		do
			w = waitpid(pid, &status, WNOHANG);
		while (w == -1 && errno == EINTR);
		if (w == pid)
			break;
		cr_assert_eq(w, 0, "waitpid(%d): %s", (int)pid,
			     strerror(errno));
		if (tu_now_ns() >= end) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
				;
			if (pfd >= 0)
				close(pfd);
			return -ETIMEDOUT;
		}
		if (pfd >= 0) {
			struct pollfd p = { .fd = pfd, .events = POLLIN };

			poll(&p, 1, 100);
		} else {
			tu_sleep_ms(1);
		}
	}
	if (pfd >= 0)
		close(pfd);
	return status;
}

void topo_assert_exit_0(pid_t pid, unsigned timeout_ms)
{
	int st = topo_reap(pid, timeout_ms);

	cr_assert_neq(st, -ETIMEDOUT, "child %d still running after %u ms",
		      (int)pid, timeout_ms);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "child %d: %s %d (see its stderr)", (int)pid,
		  WIFEXITED(st) ? "exit status" : "killed by signal",
		  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* ---- resources -------------------------------------------------------- */

int topo_memfd_map_count(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[1024];
	int n = 0;

	cr_assert_not_null(f, "fopen(/proc/self/maps): %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, "/memfd:"))
			n++;
	}
	fclose(f);
	return n;
}

struct warm_thread {
	pthread_barrier_t *bar;
};

static void *warm_thread_main(void *arg)
{
	struct warm_thread *w = arg;
	void *volatile p = malloc(4096);

	pthread_barrier_wait(w->bar);
	free(p);
	return NULL;
}

static void warm_threads(void)
{
	pthread_t t[TOPO_WARM_THREADS];
	pthread_barrier_t bar;
	struct warm_thread w = { &bar };

	pthread_barrier_init(&bar, NULL, TOPO_WARM_THREADS);
	for (int i = 0; i < TOPO_WARM_THREADS; i++)
		tu_thread_start(&t[i], warm_thread_main, &w);
	for (int i = 0; i < TOPO_WARM_THREADS; i++)
		tu_thread_join(t[i]);
	pthread_barrier_destroy(&bar);
}

struct warm_seq {
	uint64_t v;
};
static CMESH_TYPE_DEFINE_PLAIN(warm_type, struct warm_seq);

struct warm_join {
	int sock;
	int rc;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
};

static void *warm_join_main(void *arg)
{
	struct warm_join *j = arg;

	j->rc = cmesh_node_join_socket(j->sock, &warm_type, &warm_type, NULL,
				       &j->node, &j->tx, &j->rx);
	return NULL;
}

/*
 * Both ends of one link in this process: whatever cmesh keeps per process
 * once a link existed is then part of the baseline. A failure here is left
 * to the tests themselves to report.
 */
static void warm_link(void)
{
	struct warm_join a = { 0 }, b = { 0 };
	struct warm_seq m = { 1 };
	pthread_t t;
	int sv[2];

	topo_sync_pair(sv);
	a.sock = sv[0];
	b.sock = sv[1];
	tu_thread_start(&t, warm_join_main, &b);
	warm_join_main(&a);
	tu_thread_join(t);
	if (a.rc == 0 && b.rc == 0) {
		cmesh_sender_send(a.tx, &m, NULL, 0);
		cmesh_receiver_recv_deadline(b.rx, topo_deadline(), &m, NULL,
					     0);
		cmesh_receiver_recv_deadline(
			b.rx, cmesh_deadline_after(TU_MS(1)), &m, NULL, 0);
	}
	if (a.rc == 0) {
		cmesh_node_free(a.node);
		cmesh_sender_free(a.tx);
		cmesh_receiver_free(a.rx);
	}
	if (b.rc == 0) {
		cmesh_node_free(b.node);
		cmesh_sender_free(b.tx);
		cmesh_receiver_free(b.rx);
	}
}

static void warm_channel(void)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct warm_seq m = { 1 };

	TU_ASSERT_RC(cmesh_channel_new(&warm_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(1)), &m, NULL, 0),
		     -ETIMEDOUT);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

void topo_baseline(struct topo_res *r)
{
	warm_channel();
	warm_link();
	warm_threads();
	r->fds = tu_fd_count();
	r->maps = tu_map_count();
	r->memfd_maps = topo_memfd_map_count();
}

void topo_assert_baseline(const struct topo_res *r)
{
	int maps, memfd_maps;

	TU_ASSERT_FDS(r->fds);
	memfd_maps = topo_memfd_map_count();
	cr_assert_eq(memfd_maps, r->memfd_maps,
		     "%d memfd mappings, want %d (arena or out-of-line "
		     "message leaked)",
		     memfd_maps, r->memfd_maps);
	/*
	 * All mappings: libc's malloc keeps the heaps it grew (and a
	 * sanitizer's allocator its regions), so with more memory in use than
	 * the warm-up saw the count may stay higher. Exact when neither.
	 */
	maps = tu_map_count();
	if (!tu_sanitized() && tu_stress(1000, 1) <= 1000)
		cr_assert_eq(maps, r->maps, "%d mappings, want %d", maps,
			     r->maps);
}

void topo_assert_baseline_within(const struct topo_res *r, unsigned ms)
{
	int64_t end = tu_now_ns() + TU_MS(ms);

	while ((tu_fd_count() != r->fds ||
		topo_memfd_map_count() != r->memfd_maps) &&
	       tu_now_ns() < end)
		tu_sleep_ms(1);
	topo_assert_baseline(r);
}

/* ---- running a scenario -------------------------------------------- */

static void node_opts(const struct topo_scenario *sc, cmesh_node_opts *o)
{
	cmesh_node_opts d = CMESH_NODE_OPTS_INIT;

	*o = d;
	o->ring_size = sc->ring_size;
	o->spin_ns = sc->spin_ns;
	o->max_backlog = sc->max_backlog;
}

struct peer_thread {
	const struct topo_scenario *sc;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct topo_side side;
	int rc;
};

static void *peer_thread_main(void *arg)
{
	struct peer_thread *pt = arg;

	pt->rc = pt->sc->peer(pt->tx, pt->rx, &pt->side);
	wait_bye(pt->side.sync);
	return NULL;
}

static void run_thread(const struct topo_scenario *sc)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *dtx, *utx;
	cmesh_receiver *drx, *urx;
	struct peer_thread pt = { 0 };
	struct topo_side side = { 0 };
	pthread_t t;
	int sy[2];

	o.ring_size = sc->ring_size;
	o.spin_ns = sc->spin_ns;
	o.max_backlog = sc->max_backlog;
	TU_ASSERT_RC(cmesh_channel_new(sc->down, &o, &dtx, &drx), 0);
	TU_ASSERT_RC(cmesh_channel_new(sc->up, &o, &utx, &urx), 0);
	topo_sync_pair(sy);
	pt.sc = sc;
	pt.tx = utx;
	pt.rx = drx;
	pt.side.arg = sc->arg;
	pt.side.sync = sy[1];
	pt.side.kind = TOPO_THREAD;
	tu_thread_start(&t, peer_thread_main, &pt);

	side.arg = sc->arg;
	side.sync = sy[0];
	side.kind = TOPO_THREAD;
	sc->driver(dtx, urx, &side);
	topo_post(sy[0], TOPO_BYE);
	cr_assert(tu_thread_join_within(t, TOPO_WAIT_MS, NULL),
		  "peer thread still running");
	cr_assert_eq(pt.rc, 0, "peer failed at line %d (see stderr)", pt.rc);
	close(sy[0]);
	close(sy[1]);
}

/* Child: joins (over `sock`, or by connecting to `path`), runs the peer. */
static int child_run(const struct topo_scenario *sc, enum topo_kind kind,
		     int sock, const char *path, int sync)
{
	cmesh_node_opts o;
	cmesh_node *node = NULL;
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;
	struct topo_side side = { 0 };
	int r;

	node_opts(sc, &o);
	if (kind == TOPO_FORK)
		r = cmesh_node_join_socket(sock, sc->up, sc->down, &o, &node,
					   &tx, &rx);
	else
		r = cmesh_connect(path, sc->up, sc->down, &o, &node, &tx, &rx);
	TOPO_CHECK_EQ(r, 0);
	TOPO_CHECK_EQ(cmesh_node_pid(node), getppid());
	cmesh_node_free(node);
	side.arg = sc->arg;
	side.sync = sync;
	side.kind = kind;
	side.cross = true;
	side.peer_pid = getppid();
	r = sc->peer(tx, rx, &side);
	wait_bye(sync);
	return r;
}

void topo_fork_peer(const struct topo_scenario *sc, enum topo_kind kind,
		    struct topo_conn *out)
{
	cmesh_node_opts o;
	cmesh_node *node = NULL;
	cmesh_listener *l = NULL;
	char dir[] = "/tmp/cmesh-topo-XXXXXX";
	char path[64] = "";
	struct stat st;
	int sv[2] = { -1, -1 }, sy[2];
	pid_t pid;
	int r;

	cr_assert(kind == TOPO_FORK || kind == TOPO_LISTEN);
	node_opts(sc, &o);
	topo_sync_pair(sy);
	if (kind == TOPO_FORK) {
		r = cmesh__ctl_socketpair(sv);
		cr_assert_eq(r, 0, "cmesh__ctl_socketpair: %s", strerror(-r));
	} else {
		cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s",
				   strerror(errno));
		snprintf(path, sizeof(path), "%s/sock", dir);
		TU_ASSERT_RC(cmesh_listen(path, NULL, &l), 0);
	}
	pid = topo_fork();
	if (pid == 0) {
		close(sy[0]);
		if (kind == TOPO_FORK)
			close(sv[0]);
		else
			close(cmesh_listener_fd(l)); /* free would unlink */
		topo_child_exit(child_run(sc, kind, sv[1], path, sy[1]));
	}
	close(sy[1]);
	if (kind == TOPO_FORK) {
		close(sv[1]);
		o.peer_pid = pid; /* we forked it: the link watches it too */
		r = cmesh_node_join_socket(sv[0], sc->down, sc->up, &o, &node,
					   &out->tx, &out->rx);
	} else {
		r = cmesh_listener_accept(l, topo_deadline(), sc->down, sc->up,
					  &o, &node, &out->tx, &out->rx);
		cmesh_listener_free(l);
		cr_assert_eq(stat(path, &st), -1, "listener_free unlinks");
		cr_assert_eq(rmdir(dir), 0, "rmdir %s: %s", dir,
			     strerror(errno));
	}
	if (r != 0) {
		close(sy[0]);
		topo_reap(pid, 1000);
	}
	cr_assert_eq(r, 0, "joining the child: %d (%s)", r, cmesh_strerror(r));
	/*
	 * Over listen/connect SO_PEERCRED names the child. (A socketpair's
	 * SO_PEERCRED names the process that created the pair: test_node.c
	 * checks what cmesh_node_pid() makes of that.)
	 */
	if (kind == TOPO_LISTEN)
		cr_assert_eq(cmesh_node_pid(node), pid, "node pid %d, child %d",
			     (int)cmesh_node_pid(node), (int)pid);
	cmesh_node_free(node);
	out->pid = pid;
	out->sync = sy[0];
}

void topo_bye(int sync)
{
	topo_post(sync, TOPO_BYE);
}

static void run_process(const struct topo_scenario *sc, enum topo_kind kind)
{
	struct topo_side side = { 0 };
	struct topo_conn c;

	topo_fork_peer(sc, kind, &c);
	side.arg = sc->arg;
	side.sync = c.sync;
	side.kind = kind;
	side.cross = true;
	side.peer_pid = c.pid;
	sc->driver(c.tx, c.rx, &side);
	topo_bye(c.sync);
	topo_assert_exit_0(c.pid, TOPO_WAIT_MS);
	close(c.sync);
}

void topo_run(const struct topo_scenario *sc, enum topo_kind kind)
{
	struct topo_res res;

	topo_baseline(&res);
	if (kind == TOPO_THREAD)
		run_thread(sc);
	else
		run_process(sc, kind);
	/*
	 * What a scenario made is gone at once, but for a forwarder's thread
	 * and waitset (src/bridge.c), which outlive the last forwarder a
	 * little: wait for them, then compare exactly.
	 */
	topo_assert_baseline_within(&res, TOPO_WAIT_MS);
}
