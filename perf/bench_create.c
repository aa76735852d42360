/* SPDX-License-Identifier: MIT */
/*
 * perf/bench_create.c - what making a channel or a link costs, by ring
 * size. The library writes nothing through a ring when it makes one, so
 * creating or joining should take the same time for any ring size, and
 * memory should grow only with what is used, not with the ring.
 *
 *   1 inproc  cmesh_channel_new(), cmesh_channel_opts.ring_size 64 KiB,
 *             1 MiB and 1 GiB, a 64-byte CMESH_TYPE_DEFINE_PLAIN type.
 *             Per iteration: create (timed), VmRSS right after it, one
 *             send + recv (the ring is really used), VmRSS again, free the
 *             sender and the receiver (timed).
 *   2 xproc   cmesh_node_join_socket() over a SOCK_SEQPACKET socketpair,
 *             cmesh_node_opts.ring_size the same three sizes, between this
 *             process (CPU 0) and one long-lived child (CPU 1) forked at
 *             start. Per iteration the parent makes the socketpair, passes
 *             one end and the ring size to the child in one datagram of a
 *             control socket (SCM_RIGHTS), times its own join (which
 *             includes the handshake with the child, joining at the same
 *             time), reads VmRSS and RssShmem, makes one round trip, frees
 *             the sender, the receiver and the node (timed), then waits for
 *             the child's reply. The child joins, echoes the message, waits
 *             until its receiver reports -EPIPE / -ECONNRESET (the parent
 *             freed), frees everything and replies with its own VmRSS /
 *             RssShmem growth right after its join and its count of open
 *             fds.
 *
 *   3 live    like 1, but LIVE channels of a size are made one after the
 *             other and all stay alive (idle) until the last is made:
 *             freed rings go to a small pool that serves the next ring of
 *             their geometry without a syscall, which tier 1 measures;
 *             here most rings are fresh mappings. Then one send + recv on
 *             each, and all are freed. Times are per channel. Memory is
 *             measured once, before anything else of the tier: VmRSS
 *             growth while IDLE channels of a size are made and left
 *             idle, divided by IDLE (per-iteration growth would only show
 *             the heap reusing what the previous iteration freed).
 *
 * The sizes alternate within each iteration, so that drift hits them
 * alike; a few unrecorded iterations of each come first. Rows also show
 * the first message's time (send + recv, or the round trip): the pages a
 * ring really uses are faulted in there. Memory figures are medians of
 * per-iteration deltas of /proc/self/status, in KiB.
 *
 * Targets, 1 GiB against 64 KiB in the same run:
 *   create p50 (1, 3) and join p50 (2) at most 2x;
 *   VmRSS growth right after create (1) and after join (2, parent and
 *   child) under 8 MiB;
 *   VmRSS per idle channel (3) under 16 KiB for every size (a 64 KiB
 *   ring from the heap used to cost its 64 KiB).
 *
 * Usage: bench_create [--smoke] [--strict] [--only 1|2|3] [--iters N]
 * --smoke: 10 iterations per size (well under 3 s), for CI; the targets
 * are printed but never change the exit status.
 * Environment: CMESH_BENCH_SMOKE=1, CMESH_BENCH_CLOCK=tsc|mono,
 * CMESH_BENCH_ITERS=N (flags win over the environment).
 * Exit status: 0 unless a call fails (2) or a tier hangs (3: watchdog), or
 * --strict without --smoke and a target FAILs (1). The child dies with the
 * parent (PR_SET_PDEATHSIG) and is killed and reaped on every exit path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cmesh.h>

#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define CPU_PARENT 0
#define CPU_CHILD 1
#define NSIZES 3
#define TIER_INPROC 0
#define TIER_XPROC 1
#define TIER_LIVE 2
#define NTIERS 3
#define LIVE 64u	      /* 3: channels alive at once */
#define IDLE 256u	      /* 3: idle channels for the memory figure */
#define IDLE_LIMIT_KIB 16.0   /* 3: VmRSS per idle channel */
#define SIZE_SMALL 0	      /* 64 KiB: the reference */
#define SIZE_BIG (NSIZES - 1) /* 1 GiB: the one judged */
#define TIME_TARGET 2.0	      /* big p50 <= this x small p50 */
#define RSS_LIMIT_KIB 8192.0  /* big: VmRSS growth after create / join */
#define ITERS_FULL 200u
#define ITERS_SMOKE 10u
#define WATCHDOG_FULL_S 300u
#define WATCHDOG_SMOKE_S 30u

static const uint32_t ring_sizes[NSIZES] = { 64u << 10, 1u << 20, 1u << 30 };
static const char *const ring_names[NSIZES] = { "64KiB", "1MiB", "1GiB" };
static const char *const tier_names[NTIERS] = { "1 inproc", "2 xproc",
						"3 live" };

static CMESH_TYPE_DEFINE_PLAIN(bench_msg_type, struct bench_msg);

/* ---------------------------------------------------------------------- */
/* Process state                                                          */

static pid_t parent_pid;
static int ctl_sock = -1; /* this end of the control socketpair */

/* ---------------------------------------------------------------------- */
/* Memory of this process                                                 */

struct mem {
	int64_t rss; /* VmRSS, KiB */
	int64_t shm; /* RssShmem, KiB */
};

/* The number after `key` (a line start, "\nVmRSS:") in `text`, or -1. */
static int64_t status_kib(const char *text, const char *key)
{
	const char *p = strstr(text, key);

	return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

/* Reads /proc/self/status into a stack buffer: allocates nothing. */
static void mem_read(struct mem *m)
{
	char buf[8192];
	size_t len = 0;
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		bench_die("open /proc/self/status", errno);
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;

			close(fd);
			bench_die("read /proc/self/status", err);
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	m->rss = status_kib(buf, "\nVmRSS:");
	m->shm = status_kib(buf, "\nRssShmem:");
	if (m->rss < 0 || m->shm < 0)
		bench_die("/proc/self/status has no VmRSS or RssShmem", ENOENT);
}

/* ---------------------------------------------------------------------- */
/* Control socket: one datagram, at most one fd (SCM_RIGHTS)              */

#define OP_JOIN 1u /* carries one end of a fresh socketpair */
#define OP_QUIT 2u

struct ctl_req {
	uint32_t op;
	uint32_t ring_size; /* OP_JOIN: cmesh_node_opts.ring_size */
};

struct ctl_rep {
	int64_t rss_join, shm_join; /* KiB: growth right after the join */
	int32_t nfds;		    /* open after everything was freed */
	int32_t closed;		    /* recv's error once the parent freed */
};

union ctl_cmsg {
	struct cmsghdr h;
	char buf[CMSG_SPACE(sizeof(int))];
};

/* Sends `len` bytes and `fd` if >= 0. Returns 0 or -errno. */
static int ctl_send(int sock, const void *data, size_t len, int fd)
{
	union ctl_cmsg u;
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	memset(&u, 0, sizeof(u));
	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(fd));
	}
	while ((n = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EMSGSIZE;
}

/*
 * Receives one datagram of exactly `len` bytes into `data` and at most one
 * fd into *fd (-1: none; arrives O_CLOEXEC). Returns 1, 0 when the peer
 * closed, or -errno (-EPROTO: wrong length or too many fds, all closed).
 */
static int ctl_recv(int sock, void *data, size_t len, int *fd)
{
	union ctl_cmsg u;
	struct iovec iov = { .iov_base = data, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c;
	ssize_t n;

	*fd = -1;
	while ((n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t nfd;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
			if (*fd < 0)
				*fd = f;
			else
				close(f);
		}
	}
	if (n == 0 && *fd < 0)
		return 0;
	if ((size_t)n != len || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return -EPROTO;
	}
	return 1;
}

/* ---------------------------------------------------------------------- */
/* Child: one link per OP_JOIN, until OP_QUIT or the parent closes        */

static void child_join(const struct ctl_req *q, int sock, const struct mem *m0)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct ctl_rep rep;
	struct bench_msg m;
	struct mem m1;
	int rc;

	o.ring_size = q->ring_size;
	rc = cmesh_node_join_socket(sock, &bench_msg_type, &bench_msg_type, &o,
				    &node, &tx, &rx);
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
	mem_read(&m1);
	rc = cmesh_receiver_recv(rx, &m, NULL, 0);
	if (rc != 0)
		bench_die("cmesh_receiver_recv", rc < 0 ? rc : EPROTO);
	rc = cmesh_sender_send(tx, &m, NULL, 0);
	if (rc < 0)
		bench_die("cmesh_sender_send", rc);
	/* The parent frees its ends once it has the echo. */
	rc = cmesh_receiver_recv(rx, &m, NULL, 0);
	if (rc != -EPIPE && rc != -ECONNRESET)
		bench_die("cmesh_receiver_recv after the parent freed",
			  rc < 0 ? rc : EPROTO);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	memset(&rep, 0, sizeof(rep));
	rep.rss_join = m1.rss - m0->rss;
	rep.shm_join = m1.shm - m0->shm;
	rep.closed = -rc;
	rep.nfds = bench_count_fds();
	rc = ctl_send(ctl_sock, &rep, sizeof(rep), -1);
	if (rc < 0)
		bench_die("control send", rc);
}

/* Never returns. */
static void child_main(bool pin)
{
	bench_child_enter(parent_pid);
	if (pin)
		bench_pin_self(CPU_CHILD);
	for (;;) {
		struct ctl_req q;
		struct mem m0;
		int fd, rc;

		/* Before the wait: the join starts as soon as the fd is in. */
		mem_read(&m0);
		rc = ctl_recv(ctl_sock, &q, sizeof(q), &fd);
		if (rc == 0)
			_exit(0); /* the parent closed */
		if (rc < 0)
			bench_die("control recv", rc);
		if (q.op == OP_QUIT && fd < 0)
			_exit(0);
		if (q.op != OP_JOIN || fd < 0) {
			if (fd >= 0)
				close(fd);
			bench_die("bad control message", EPROTO);
		}
		child_join(&q, fd, &m0);
	}
}

/* Parent: forks the child, which waits on the control socket. */
static void start_child(bool pin)
{
	if (bench_fork_pair(&ctl_sock) == 0)
		child_main(pin);
}

/* Parent: tells the child to leave, reaps it. */
static void stop_child(void)
{
	struct ctl_req q = { OP_QUIT, 0 };
	int rc;

	if (bench_child_pid <= 0)
		return;
	rc = ctl_send(ctl_sock, &q, sizeof(q), -1);
	close(ctl_sock);
	ctl_sock = -1;
	if (rc < 0)
		bench_die("control send", rc);
	bench_child_reap(0);
}

/* ---------------------------------------------------------------------- */
/* Samples and results                                                    */

/* Per iteration: ticks of create / join, message, free; growth in KiB. */
struct samples {
	uint64_t *make, *msg, *drop;
	double *rss_make, *rss_msg, *shm_make;
	double *peer_rss, *peer_shm; /* 2: the child's, after its join */
};

struct row {
	uint64_t n;
	struct bench_result make, msg, drop; /* p50, p99 in ns */
	double rss_make, rss_msg, shm_make, peer_rss, peer_shm;
	bool done, peer;
};

static struct row rows[NTIERS][NSIZES];

static void samples_alloc(struct samples *s, size_t n)
{
	s->make = bench_xcalloc(n, sizeof(uint64_t));
	s->msg = bench_xcalloc(n, sizeof(uint64_t));
	s->drop = bench_xcalloc(n, sizeof(uint64_t));
	s->rss_make = bench_xcalloc(n, sizeof(double));
	s->rss_msg = bench_xcalloc(n, sizeof(double));
	s->shm_make = bench_xcalloc(n, sizeof(double));
	s->peer_rss = bench_xcalloc(n, sizeof(double));
	s->peer_shm = bench_xcalloc(n, sizeof(double));
}

static void samples_finish(struct samples *s, size_t n, struct row *r,
			   bool peer)
{
	r->n = n;
	bench_fill_latency(&r->make, s->make, n, bench_ns_per_tick);
	bench_fill_latency(&r->msg, s->msg, n, bench_ns_per_tick);
	bench_fill_latency(&r->drop, s->drop, n, bench_ns_per_tick);
	r->rss_make = bench_median(s->rss_make, n);
	r->rss_msg = bench_median(s->rss_msg, n);
	r->shm_make = bench_median(s->shm_make, n);
	r->peer_rss = bench_median(s->peer_rss, n);
	r->peer_shm = bench_median(s->peer_shm, n);
	r->peer = peer;
	r->done = true;
	free(s->make);
	free(s->msg);
	free(s->drop);
	free(s->rss_make);
	free(s->rss_msg);
	free(s->shm_make);
	free(s->peer_rss);
	free(s->peer_shm);
}

/* ---------------------------------------------------------------------- */
/* 1 inproc                                                               */

/*
 * One message stamped `stamp` through tx, back (or echoed) on rx: the
 * ticks before the send into *t2 and after the receive into *t3.
 */
static void exchange(cmesh_sender *tx, cmesh_receiver *rx, uint64_t seq,
		     uint64_t stamp, uint64_t *t2, uint64_t *t3)
{
	struct bench_msg m, r;
	int rc;

	memset(&m, 0x5a, sizeof(m));
	m.seq = seq;
	m.stamp = stamp;
	*t2 = bench_now_ticks();
	rc = cmesh_sender_send(tx, &m, NULL, 0);
	if (rc < 0)
		bench_die("cmesh_sender_send", rc);
	rc = cmesh_receiver_recv(rx, &r, NULL, 0);
	if (rc != 0)
		bench_die("cmesh_receiver_recv", rc < 0 ? rc : EPROTO);
	*t3 = bench_now_ticks();
	bench_check_echo(&r, seq, stamp);
}

/* One create, message, free of size `k`; recorded at `idx` if rec. */
static void inproc_once(struct samples *s, int k, size_t idx, bool rec,
			uint64_t seq)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct mem m0, m1, m2;
	uint64_t t0, t1, t2, t3, t4, t5;
	int rc;

	o.ring_size = ring_sizes[k];
	mem_read(&m0);
	t0 = bench_now_ticks();
	rc = cmesh_channel_new(&bench_msg_type, &o, &tx, &rx);
	t1 = bench_now_ticks();
	if (rc < 0)
		bench_die("cmesh_channel_new", rc);
	mem_read(&m1);
	exchange(tx, rx, seq, t1, &t2, &t3);
	mem_read(&m2);
	t4 = bench_now_ticks();
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	t5 = bench_now_ticks();
	if (!rec)
		return;
	s->make[idx] = t1 - t0;
	s->msg[idx] = t3 - t2;
	s->drop[idx] = t5 - t4;
	s->rss_make[idx] = (double)(m1.rss - m0.rss);
	s->rss_msg[idx] = (double)(m2.rss - m0.rss);
	s->shm_make[idx] = (double)(m1.shm - m0.shm);
}

static void run_inproc(uint64_t warm, uint64_t n)
{
	struct samples s[NSIZES];
	uint64_t seq = 1;

	for (int k = 0; k < NSIZES; k++)
		samples_alloc(&s[k], n);
	for (uint64_t i = 0; i < warm + n; i++)
		for (int k = 0; k < NSIZES; k++)
			inproc_once(&s[k], k, i >= warm ? i - warm : 0,
				    i >= warm, seq++);
	for (int k = 0; k < NSIZES; k++)
		samples_finish(&s[k], n, &rows[TIER_INPROC][k], false);
}

/* ---------------------------------------------------------------------- */
/* 3 live                                                                 */

/* LIVE channels of size `k`, recorded from `idx * LIVE` on if rec. */
static void live_once(struct samples *s, int k, size_t idx, bool rec,
		      uint64_t *seq)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *tx[LIVE];
	cmesh_receiver *rx[LIVE];
	uint64_t t0, t1, t2, t3;
	size_t at = idx * LIVE;
	int rc;

	o.ring_size = ring_sizes[k];
	for (unsigned i = 0; i < LIVE; i++) {
		t0 = bench_now_ticks();
		rc = cmesh_channel_new(&bench_msg_type, &o, &tx[i], &rx[i]);
		t1 = bench_now_ticks();
		if (rc < 0)
			bench_die("cmesh_channel_new", rc);
		if (rec)
			s->make[at + i] = t1 - t0;
	}
	for (unsigned i = 0; i < LIVE; i++) {
		exchange(tx[i], rx[i], *seq, t1, &t2, &t3);
		(*seq)++;
		if (rec)
			s->msg[at + i] = t3 - t2;
	}
	for (unsigned i = 0; i < LIVE; i++) {
		t0 = bench_now_ticks();
		cmesh_sender_free(tx[i]);
		cmesh_receiver_free(rx[i]);
		t1 = bench_now_ticks();
		if (rec)
			s->drop[at + i] = t1 - t0;
	}
}

/* VmRSS per idle channel of size `k` (KiB), and after one message each. */
static void idle_cost(int k, struct row *r)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender **tx = bench_xcalloc(IDLE, sizeof(*tx));
	cmesh_receiver **rx = bench_xcalloc(IDLE, sizeof(*rx));
	struct mem m0, m1, m2;
	uint64_t t2, t3;
	int rc;

	o.ring_size = ring_sizes[k];
	mem_read(&m0);
	for (unsigned i = 0; i < IDLE; i++) {
		rc = cmesh_channel_new(&bench_msg_type, &o, &tx[i], &rx[i]);
		if (rc < 0)
			bench_die("cmesh_channel_new", rc);
	}
	mem_read(&m1);
	for (unsigned i = 0; i < IDLE; i++)
		exchange(tx[i], rx[i], i + 1, 0, &t2, &t3);
	mem_read(&m2);
	for (unsigned i = 0; i < IDLE; i++) {
		cmesh_sender_free(tx[i]);
		cmesh_receiver_free(rx[i]);
	}
	free(tx);
	free(rx);
	r->rss_make = (double)(m1.rss - m0.rss) / IDLE;
	r->rss_msg = (double)(m2.rss - m0.rss) / IDLE;
	r->shm_make = (double)(m1.shm - m0.shm) / IDLE;
}

static void run_live(uint64_t warm, uint64_t n)
{
	struct samples s[NSIZES];
	uint64_t seq = 1;

	for (int k = 0; k < NSIZES; k++) {
		idle_cost(k, &rows[TIER_LIVE][k]);
		samples_alloc(&s[k], n * LIVE);
	}
	for (uint64_t i = 0; i < warm + n; i++)
		for (int k = 0; k < NSIZES; k++)
			live_once(&s[k], k, i >= warm ? i - warm : 0, i >= warm,
				  &seq);
	for (int k = 0; k < NSIZES; k++) {
		struct row *r = &rows[TIER_LIVE][k];

		/* Times per channel; memory per iteration (first n). */
		r->n = n * LIVE;
		bench_fill_latency(&r->make, s[k].make, n * LIVE,
				   bench_ns_per_tick);
		bench_fill_latency(&r->msg, s[k].msg, n * LIVE,
				   bench_ns_per_tick);
		bench_fill_latency(&r->drop, s[k].drop, n * LIVE,
				   bench_ns_per_tick);
		r->done = true;
		free(s[k].make);
		free(s[k].msg);
		free(s[k].drop);
		free(s[k].rss_make);
		free(s[k].rss_msg);
		free(s[k].shm_make);
		free(s[k].peer_rss);
		free(s[k].peer_shm);
	}
}

/* ---------------------------------------------------------------------- */
/* 2 xproc                                                                */

struct xproc_stats {
	int parent_fds0, parent_fds1;
	int child_fds_lo, child_fds_hi;
	uint64_t epipe, econnreset;
	bool ran;
};

static struct xproc_stats xst;

static void xproc_once(struct samples *s, int k, size_t idx, bool rec,
		       uint64_t seq)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct ctl_req q = { OP_JOIN, ring_sizes[k] };
	struct ctl_rep rep;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct mem m0, m1, m2;
	uint64_t t0, t1, t2, t3, t4, t5;
	int sp[2], rc, fd;

	o.ring_size = ring_sizes[k];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
		bench_die("socketpair", errno);
	mem_read(&m0);
	rc = ctl_send(ctl_sock, &q, sizeof(q), sp[1]);
	close(sp[1]);
	if (rc < 0) {
		close(sp[0]);
		bench_die("control send (the child is gone?)", rc);
	}
	t0 = bench_now_ticks();
	rc = cmesh_node_join_socket(sp[0], &bench_msg_type, &bench_msg_type, &o,
				    &node, &tx, &rx);
	t1 = bench_now_ticks();
	if (rc < 0)
		bench_die("cmesh_node_join_socket", rc);
	mem_read(&m1);
	exchange(tx, rx, seq, t1, &t2, &t3);
	mem_read(&m2);
	t4 = bench_now_ticks();
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	t5 = bench_now_ticks();
	rc = ctl_recv(ctl_sock, &rep, sizeof(rep), &fd);
	if (rc == 0)
		bench_die("control recv: the child exited", EPIPE);
	if (rc < 0)
		bench_die("control recv", rc);
	if (fd >= 0) {
		close(fd);
		bench_die("control recv: an fd in the child's reply", EPROTO);
	}
	if (!rec)
		return;
	s->make[idx] = t1 - t0;
	s->msg[idx] = t3 - t2;
	s->drop[idx] = t5 - t4;
	s->rss_make[idx] = (double)(m1.rss - m0.rss);
	s->rss_msg[idx] = (double)(m2.rss - m0.rss);
	s->shm_make[idx] = (double)(m1.shm - m0.shm);
	s->peer_rss[idx] = (double)rep.rss_join;
	s->peer_shm[idx] = (double)rep.shm_join;
	if (!xst.ran || rep.nfds < xst.child_fds_lo)
		xst.child_fds_lo = rep.nfds;
	if (!xst.ran || rep.nfds > xst.child_fds_hi)
		xst.child_fds_hi = rep.nfds;
	xst.ran = true;
	if (rep.closed == EPIPE)
		xst.epipe++;
	else
		xst.econnreset++;
}

static void run_xproc(uint64_t warm, uint64_t n)
{
	struct samples s[NSIZES];
	uint64_t seq = 1;

	for (int k = 0; k < NSIZES; k++)
		samples_alloc(&s[k], n);
	for (uint64_t i = 0; i < warm + n; i++) {
		if (i == warm)
			xst.parent_fds0 = bench_count_fds();
		for (int k = 0; k < NSIZES; k++)
			xproc_once(&s[k], k, i >= warm ? i - warm : 0,
				   i >= warm, seq++);
	}
	xst.parent_fds1 = bench_count_fds();
	for (int k = 0; k < NSIZES; k++)
		samples_finish(&s[k], n, &rows[TIER_XPROC][k], true);
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

/* Row `k` of tier `t`, one of its times: "<ring> <what>" in the JSON. */
static void json_row(int t, int k, const char *what,
		     const struct bench_result *x)
{
	char name[32];
	struct bench_result r = *x;

	snprintf(name, sizeof(name), "%s %s", ring_names[k], what);
	r.n = rows[t][k].n;
	bench_json_result(tier_names[t], name, &r, NULL);
}

static void print_row(int t, int k)
{
	const struct row *r = &rows[t][k];
	char mp50[16], mp99[16], msg[16], dp50[16], dp99[16];
	char prss[16] = "-", pshm[16] = "-";

	bench_fmt_us(mp50, sizeof(mp50), r->make.p50);
	bench_fmt_us(mp99, sizeof(mp99), r->make.p99);
	bench_fmt_us(msg, sizeof(msg), r->msg.p50);
	bench_fmt_us(dp50, sizeof(dp50), r->drop.p50);
	bench_fmt_us(dp99, sizeof(dp99), r->drop.p99);
	if (r->peer) {
		snprintf(prss, sizeof(prss), "%.0f", r->peer_rss);
		snprintf(pshm, sizeof(pshm), "%.0f", r->peer_shm);
	}
	printf("%-8s %-5s %5" PRIu64
	       " %8s %8s %8s %8s %8s %8.0f %8.0f %8.0f %10s %10s\n",
	       k == 0 ? tier_names[t] : "", ring_names[k], r->n, mp50, mp99,
	       msg, dp50, dp99, r->rss_make, r->rss_msg, r->shm_make, prss,
	       pshm);
	json_row(t, k, "new", &r->make);
	json_row(t, k, "msg", &r->msg);
	json_row(t, k, "free", &r->drop);
}

/* One target line; returns true if it passes. */
static bool print_target(const char *what, double value, double limit,
			 bool ratio)
{
	bool ok = ratio ? value <= limit : value < limit;
	char v[32], l[32];

	if (ratio) {
		snprintf(v, sizeof(v), "%.2fx", value);
		snprintf(l, sizeof(l), "<=%.1fx", limit);
	} else {
		snprintf(v, sizeof(v), "%.0f KiB", value);
		snprintf(l, sizeof(l), "<%.0f KiB", limit);
	}
	printf("%-44s %10s %12s  %s\n", what, v, l, ok ? "PASS" : "FAIL");
	bench_json_target(what, v, l, ok);
	return ok;
}

/* Prints the tier's targets; returns how many FAIL. */
static int print_targets(int t)
{
	const struct row *small = &rows[t][SIZE_SMALL];
	const struct row *big = &rows[t][SIZE_BIG];
	double ratio = small->make.p50 > 0 ? big->make.p50 / small->make.p50 :
					     0.0;
	int fails = 0;

	if (t == TIER_INPROC) {
		fails += !print_target("1 inproc create p50, 1GiB / 64KiB",
				       ratio, TIME_TARGET, true);
		fails += !print_target("1 inproc VmRSS+ after create, 1GiB",
				       big->rss_make, RSS_LIMIT_KIB, false);
		return fails;
	}
	if (t == TIER_LIVE) {
		fails += !print_target("3 live create p50, 1GiB / 64KiB", ratio,
				       TIME_TARGET, true);
		for (int k = 0; k < NSIZES; k++) {
			char what[64];

			snprintf(what, sizeof(what),
				 "3 live VmRSS per idle channel, %s",
				 ring_names[k]);
			fails += !print_target(what, rows[t][k].rss_make,
					       IDLE_LIMIT_KIB, false);
		}
		return fails;
	}
	fails += !print_target("2 xproc join p50, 1GiB / 64KiB", ratio,
			       TIME_TARGET, true);
	fails += !print_target("2 xproc VmRSS+ after join, 1GiB", big->rss_make,
			       RSS_LIMIT_KIB, false);
	fails += !print_target("2 xproc child VmRSS+ after join, 1GiB",
			       big->peer_rss, RSS_LIMIT_KIB, false);
	return fails;
}

/* ---------------------------------------------------------------------- */
/* Options, main                                                          */

struct config {
	bool smoke, strict;
	int only; /* 0: every tier, else 1, 2 or 3 */
	uint64_t iters;
	bool two_cpus;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_create [--smoke] [--strict] [--only 1|2|3] "
		   "[--iters N]\n"
		   "env: CMESH_BENCH_SMOKE=1 CMESH_BENCH_CLOCK=tsc|mono "
		   "CMESH_BENCH_ITERS=N\n");
}

static void parse_args(struct config *cfg, int argc, char **argv)
{
	uint64_t iters = 0;

	cfg->smoke = bench_env_flag("CMESH_BENCH_SMOKE");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (bench_common_arg(a, &cfg->smoke, &cfg->strict, usage) ||
		    bench_iters_arg(argc, argv, &i, &iters))
			continue;
		if (!bench_only_arg(argc, argv, &i, 3, &cfg->only))
			bench_bad_arg(a, usage);
	}
	cfg->iters = bench_iters(iters, cfg->smoke, ITERS_FULL, ITERS_SMOKE);
}

static void print_notes(const struct config *cfg, uint64_t warm, double secs)
{
	printf("# per row: n iterations after %" PRIu64 " unrecorded, sizes "
	       "alternating; times in us: new = cmesh_channel_new (1) / "
	       "cmesh_node_join_socket incl. the handshake with the child "
	       "(2), msg = the first message (1: send + recv, 2: round trip, "
	       "the child finishing its join included), "
	       "free = sender + receiver (+ node); memory in KiB, "
	       "medians of per-iteration deltas from /proc/self/status: "
	       "rss+new / shm+new = VmRSS / RssShmem right after new, "
	       "rss+msg = VmRSS after the message, child = the child's own "
	       "growth right after its join; 3: times per channel, memory "
	       "per channel while %u idle ones are alive\n",
	       warm, IDLE);
	if (xst.ran)
		printf("# 2: child's receiver after the parent freed: -EPIPE "
		       "%" PRIu64 ", -ECONNRESET %" PRIu64 "; open fds: parent "
		       "%d before the recorded iterations, %d after; child "
		       "%d..%d after each free%s\n",
		       xst.epipe, xst.econnreset, xst.parent_fds0,
		       xst.parent_fds1, xst.child_fds_lo, xst.child_fds_hi,
		       xst.parent_fds0 != xst.parent_fds1 ||
				       xst.child_fds_lo != xst.child_fds_hi ?
			       ": fd LEAK?" :
			       "");
	bench_print_wall(cfg->smoke, secs);
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct bench_cpu_usage usage0, usage1;
	uint64_t warm, t0;
	unsigned int wd;
	int fails = 0;

	bench_name = "bench_create";
	bench_die_hook = bench_child_die_hook;
	bench_check_dies = true;
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&cfg, argc, argv);
	warm = cfg.iters / 10;
	if (warm < 2)
		warm = 2;
	if (warm > 20)
		warm = 20;
	/* Generous: a full run takes about a second, 1 ms per iteration. */
	wd = (cfg.smoke ? WATCHDOG_SMOKE_S : WATCHDOG_FULL_S) +
	     (unsigned int)(cfg.iters / 50 < 86400 ? cfg.iters / 50 : 86400);
	parent_pid = getpid();
	bench_child_signals("a tier");

	cfg.two_cpus = bench_cpus_usable(CPU_PARENT, CPU_CHILD) &&
		       bench_pin_self(CPU_PARENT);
	if (cfg.only == 0 || cfg.only == 2)
		start_child(cfg.two_cpus);
	bench_clock_setup(cfg.smoke);
	bench_clock_measure_step();
	bench_print_header_procs(CPU_PARENT, CPU_CHILD, cfg.two_cpus,
				 cfg.smoke);
	bench_cpu_usage_read(&usage0);
	t0 = bench_mono_ns();

	alarm(wd);
	if (cfg.only == 0 || cfg.only == 1)
		run_inproc(warm, cfg.iters);
	if (cfg.only == 0 || cfg.only == 2)
		run_xproc(warm, cfg.iters);
	if (cfg.only == 0 || cfg.only == 3)
		run_live(warm, cfg.iters / 4 ? cfg.iters / 4 : 1);
	stop_child();
	alarm(0);
	bench_cpu_usage_read(&usage1);

	printf("%-8s %-5s %5s %8s %8s %8s %8s %8s %8s %8s %8s %10s %10s\n",
	       "tier", "ring", "n", "new p50", "new p99", "msg p50", "free p50",
	       "free p99", "rss+new", "rss+msg", "shm+new", "child rss+",
	       "child shm+");
	for (int t = 0; t < NTIERS; t++)
		for (int k = 0; k < NSIZES; k++)
			if (rows[t][k].done)
				print_row(t, k);
	printf("%-44s %10s %12s  %s\n", "target", "value", "limit", "result");
	for (int t = 0; t < NTIERS; t++)
		if (rows[t][SIZE_BIG].done)
			fails += print_targets(t);
	print_notes(&cfg, warm, (double)(bench_mono_ns() - t0) * 1e-9);
	bench_print_footer(&usage0, &usage1, cfg.smoke, fails);
	return cfg.strict && !cfg.smoke && fails ? 1 : 0;
}
