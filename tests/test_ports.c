/* SPDX-License-Identifier: MIT */
/*
 * test_ports.c - endpoints inside messages, in one process and across two:
 * a sender, a receiver, a oneshot end sent to the peer keep working there;
 * what was queued before the move arrives first, in order; closed ends
 * arrive closed; dropped ports close their peers; one link carries many
 * channels without growing its threads, sockets or eventfds; a peer that
 * dies holding a moved endpoint fails it.
 *
 * Every scenario runs through tests/helpers/topo.c: TOPO_THREAD (both ends
 * in one process: in-process queues) and TOPO_FORK (two processes joined
 * by cmesh_node_join_socket(): the endpoints become ports on the link).
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"
#include "endpoint.h"
#include "lane.h"
#include "queue.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(ports, .init = tu_suite_init, .fini = tu_suite_fini);

/* ---- message types ---------------------------------------------------- */

struct seqmsg {
	uint32_t sender;
	uint32_t pad;
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(seq_type, struct seqmsg);

/* Every endpoint kind, a request word and an fd. */
struct epmsg {
	int fd;
	int op; /* what the peer is asked to do (OP_*) */
	uint64_t arg;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
};
CMESH_TYPE_DEFINE(ep_type, struct epmsg, CMESH_FIELD_FD(struct epmsg, fd),
		  CMESH_FIELD_SENDER(struct epmsg, tx, seq_type),
		  CMESH_FIELD_RECEIVER(struct epmsg, rx, seq_type),
		  CMESH_FIELD_ONESHOT_SENDER(struct epmsg, otx, seq_type),
		  CMESH_FIELD_ONESHOT_RECEIVER(struct epmsg, orx, seq_type));

enum {
	OP_STREAM = 1,	/* send seq 1..arg on tx (sender 7), free it */
	OP_DRAIN,	/* receive everything on rx, report the count */
	OP_REPLY,	/* answer otx with seq = arg * 2 */
	OP_DROP,	/* free every endpoint unused */
	OP_TAKE_ONE,	/* receive one message on orx, report its seq */
	OP_SEND_FAILS,	/* report what a send on tx returns */
	OP_TWO_STREAMS, /* rx carries two senders' streams: check FIFO each */
	OP_HOLD,	/* keep tx (at most MAX_HELD of them) */
	OP_COUNT,	/* report the change of threads, sockets, eventfds */
	OP_RELEASE,	/* send seq 1 on every held sender, free them */
	OP_DIE,		/* send seq 1..arg on tx, then SIGKILL ourselves */
	OP_WAIT_CLOSED, /* report is_closed(tx) at once, then wait for 1 */
	OP_STATS,	/* report fds, memfd mappings and VmRSS (KiB) */
	OP_WS_DRAIN,	/* as OP_DRAIN, waiting in a waitset */
	OP_SEND_HELD	/* send seq arg on held sender 0 */
};

#define MAX_HELD 1024

/* What a link's size is measured in: threads, sockets, eventfds. */
struct kinds {
	int threads, sockets, eventfds;
};

static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static struct kinds count_kinds(void)
{
	struct kinds k = { count_dir("/proc/self/task"), 0, 0 };
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char p[300], t[128];
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		n = readlink(p, t, sizeof(t) - 1);
		if (n <= 0)
			continue;
		t[n] = 0;
		k.sockets += !strncmp(t, "socket:", 7);
		k.eventfds += !strcmp(t, "anon_inode:[eventfd]");
	}
	if (d)
		closedir(d);
	return k;
}

/* The peer's state across requests. */
static cmesh_sender *held[MAX_HELD];
static uint32_t nheld;
static struct kinds peer_base;

static struct epmsg ep(int op, uint64_t arg)
{
	return (struct epmsg){ .fd = -1, .op = op, .arg = arg };
}

/* ---- helpers ---------------------------------------------------------- */

static int recv_wait(cmesh_receiver *rx, void *msg)
{
	return cmesh_receiver_recv_deadline(rx, topo_deadline(), msg, NULL, 0);
}

static void send_seq(cmesh_sender *tx, uint32_t sender, uint64_t seq)
{
	struct seqmsg m = { .sender = sender, .seq = seq };

	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
}

/* The peer's report on the up channel. */
static uint64_t report(cmesh_receiver *rx)
{
	struct seqmsg m;

	TU_ASSERT_RC(recv_wait(rx, &m), 0);
	cr_assert_eq(m.sender, 99, "not a report: sender %u", m.sender);
	return m.seq;
}

static int peer_report(cmesh_sender *tx, uint64_t v)
{
	struct seqmsg m = { .sender = 99, .seq = v };

	return cmesh_sender_send(tx, &m, NULL, 0);
}

/*
 * Receives every message of `rx` until it closes: FIFO per sender (senders
 * 0..3, each counting from 1); returns the count, or a negative error.
 */
static int64_t drain_fifo(cmesh_receiver *rx)
{
	uint64_t next[4] = { 1, 1, 1, 1 }, n = 0;
	struct seqmsg m;
	int r;

	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		if (m.sender > 3 || m.seq != next[m.sender])
			return -1000 - (int64_t)m.sender;
		next[m.sender]++;
		n++;
	}
	return r == -EPIPE ? (int64_t)n : r;
}

/* ---- the peer: does what each request says ----------------------------- */

static int serve(cmesh_sender *up, struct epmsg *m)
{
	struct seqmsg s;
	int64_t n;

	switch (m->op) {
	case OP_STREAM:
		TOPO_CHECK(m->tx);
		for (uint64_t i = 1; i <= m->arg; i++) {
			s = (struct seqmsg){ .sender = 2, .seq = i };
			TOPO_CHECK_EQ(cmesh_sender_send(m->tx, &s, NULL, 0), 0);
		}
		cmesh_sender_free(m->tx);
		return 0;
	case OP_DRAIN:
	case OP_TWO_STREAMS:
		TOPO_CHECK(m->rx);
		n = drain_fifo(m->rx);
		cmesh_receiver_free(m->rx);
		return peer_report(up, (uint64_t)n);
	case OP_REPLY:
		TOPO_CHECK(m->otx);
		s = (struct seqmsg){ .sender = 5, .seq = m->arg * 2 };
		return cmesh_oneshot_send(m->otx, &s, NULL, 0);
	case OP_DROP:
		cmesh_sender_free(m->tx);
		cmesh_receiver_free(m->rx);
		cmesh_oneshot_sender_free(m->otx);
		cmesh_oneshot_receiver_free(m->orx);
		return 0;
	case OP_TAKE_ONE:
		TOPO_CHECK(m->orx);
		TOPO_CHECK_EQ(cmesh_oneshot_recv_deadline(
				      m->orx, topo_deadline(), &s, NULL, 0),
			      0);
		cmesh_oneshot_receiver_free(m->orx);
		return peer_report(up, s.seq);
	case OP_HOLD:
		TOPO_CHECK(m->tx && nheld < MAX_HELD);
		held[nheld++] = m->tx;
		return 0;
	case OP_COUNT: {
		struct kinds k = count_kinds();

		/* Each delta in 16 bits, offset by 0x8000. */
		return peer_report(
			up, (uint64_t)(k.threads - peer_base.threads + 0x8000)
					    << 32 |
				    (uint64_t)(k.sockets - peer_base.sockets +
					       0x8000)
					    << 16 |
				    (uint64_t)(k.eventfds - peer_base.eventfds +
					       0x8000));
	}
	case OP_RELEASE:
		for (uint32_t i = 0; i < nheld; i++) {
			s = (struct seqmsg){ .sender = 2, .seq = 1 };
			TOPO_CHECK_EQ(cmesh_sender_send(held[i], &s, NULL, 0),
				      0);
			cmesh_sender_free(held[i]);
		}
		nheld = 0;
		return 0;
	case OP_DIE:
		TOPO_CHECK(m->tx);
		for (uint64_t i = 1; i <= m->arg; i++) {
			s = (struct seqmsg){ .sender = 2, .seq = i };
			TOPO_CHECK_EQ(cmesh_sender_send(m->tx, &s, NULL, 0), 0);
		}
		TOPO_CHECK_EQ(cmesh_sender_flush(m->tx, topo_deadline()), 0);
		kill(getpid(), SIGKILL);
		return 1;
	case OP_WAIT_CLOSED: {
		int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
		int c = cmesh_sender_is_closed(m->tx);

		TOPO_CHECK_EQ(peer_report(up, (uint64_t)(c + 1000)), 0);
		while ((c = cmesh_sender_is_closed(m->tx)) == 0 &&
		       tu_now_ns() < until)
			tu_sleep_ms(1);
		cmesh_sender_free(m->tx);
		return peer_report(up, (uint64_t)(c + 1000));
	}
	case OP_STATS:
		/* fds in 16 bits, memfd mappings in 16, VmRSS KiB above. */
		return peer_report(
			up, (uint64_t)count_dir("/proc/self/fd") |
				    (uint64_t)topo_memfd_map_count() << 16 |
				    (uint64_t)tu_status_kib("VmRSS") << 32);
	case OP_WS_DRAIN: {
		cmesh_waitset *ws;
		uint64_t key, got = 0;
		int e;

		TOPO_CHECK(m->rx);
		TOPO_CHECK_EQ(cmesh_waitset_new(&ws), 0);
		TOPO_CHECK_EQ(cmesh_waitset_add_receiver(ws, m->rx, 9), 0);
		for (;;) {
			TOPO_CHECK_EQ(cmesh_waitset_wait(ws, topo_deadline(),
							 &key),
				      0);
			TOPO_CHECK_EQ(key, 9);
			while ((e = cmesh_receiver_try_recv(m->rx, &s, NULL,
							    0)) == 0) {
				TOPO_CHECK_EQ(s.seq, got + 1);
				got++;
			}
			if (e != -EAGAIN)
				break;
		}
		TOPO_CHECK_EQ(e, -EPIPE);
		cmesh_waitset_free(ws);
		cmesh_receiver_free(m->rx);
		return peer_report(up, got);
	}
	case OP_SEND_HELD:
		TOPO_CHECK(nheld > 0);
		s = (struct seqmsg){ .sender = 2, .seq = m->arg };
		return cmesh_sender_send(held[0], &s, NULL, 0);
	case OP_SEND_FAILS:
		TOPO_CHECK(m->tx);
		TOPO_CHECK_EQ(cmesh_sender_is_closed(m->tx), 1);
		s = (struct seqmsg){ .sender = 2, .seq = 1 };
		n = cmesh_sender_send(m->tx, &s, NULL, 0);
		cmesh_sender_free(m->tx);
		return peer_report(up, (uint64_t)-n);
	default:
		return 1;
	}
}

static int ep_peer(cmesh_sender *tx, cmesh_receiver *rx,
		   const struct topo_side *s)
{
	struct epmsg m;
	int r;

	(void)s;
	peer_base = count_kinds();
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		TOPO_CHECK_EQ(m.fd, -1);
		r = serve(tx, &m);
		if (r)
			return r;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

#define SCENARIO(name, fn)                                                     \
	static const struct topo_scenario name = {                             \
		.down = &ep_type,                                              \
		.up = &seq_type,                                               \
		.driver = fn,                                                  \
		.peer = ep_peer,                                               \
	}

static void finish(cmesh_sender *tx, cmesh_receiver *rx)
{
	struct seqmsg m;

	cmesh_sender_free(tx);
	TU_ASSERT_RC(recv_wait(rx, &m), -EPIPE);
	cmesh_receiver_free(rx);
}

/* ---- a sender crosses: its receiver stays and merges both ------------- */

static void sender_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	const uint64_t n = 2000;
	cmesh_sender *ltx, *mine;
	cmesh_receiver *lrx;
	struct epmsg m;
	int64_t got;

	(void)s;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_sender_clone(ltx, &mine), 0);
	send_seq(mine, 1, 1);
	m = ep(OP_STREAM, n);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	for (uint64_t i = 2; i <= n; i++)
		send_seq(mine, 1, i);
	cmesh_sender_free(mine);
	/* Both streams, each in order, then closed: every sender gone. */
	got = drain_fifo(lrx);
	cr_assert_eq(got, (int64_t)(2 * n), "received %lld, want %llu",
		     (long long)got, (unsigned long long)(2 * n));
	cmesh_receiver_free(lrx);
	finish(tx, rx);
}

SCENARIO(sender_sc, sender_driver);

Test(ports, sender_sent_keeps_its_receiver_in_process)
{
	topo_run(&sender_sc, TOPO_THREAD);
}

Test(ports, sender_sent_to_another_process_merges_into_its_receiver)
{
	topo_run(&sender_sc, TOPO_FORK);
}

/* ---- a receiver crosses with messages queued, senders keep sending ----- */

struct streamer {
	cmesh_sender *tx;
	uint32_t id;
	uint64_t n;
};

static void *stream_thread(void *arg)
{
	struct streamer *st = arg;

	for (uint64_t i = 1; i <= st->n; i++) {
		struct seqmsg m = { .sender = st->id, .seq = i };

		if (cmesh_sender_send(st->tx, &m, NULL, 0))
			return (void *)1;
	}
	cmesh_sender_free(st->tx);
	return NULL;
}

static void receiver_driver(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	/* More than the default ring holds: the overflow list moves too. */
	const uint64_t before = 3000, n = 20000;
	struct streamer st = { .id = 2, .n = n };
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct epmsg m;
	pthread_t th;
	void *ret;

	(void)s;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_sender_clone(ltx, &st.tx), 0);
	for (uint64_t i = 1; i <= before; i++)
		send_seq(ltx, 1, i);
	/* Another thread sends while the receiver moves. */
	cr_assert_eq(pthread_create(&th, NULL, stream_thread, &st), 0);
	m = ep(OP_TWO_STREAMS, 0);
	m.rx = lrx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	for (uint64_t i = before + 1; i <= n; i++)
		send_seq(ltx, 1, i);
	cmesh_sender_free(ltx);
	pthread_join(th, &ret);
	cr_assert_null(ret, "the streaming thread's send failed");
	cr_assert_eq(report(rx), 2 * n, "the peer's count");
	finish(tx, rx);
}

SCENARIO(receiver_sc, receiver_driver);

Test(ports, receiver_sent_in_process_keeps_order)
{
	topo_run(&receiver_sc, TOPO_THREAD);
}

Test(ports, receiver_sent_to_another_process_gets_queued_then_later_in_order)
{
	topo_run(&receiver_sc, TOPO_FORK);
}

/* ---- rpc: a request carries a oneshot reply end ------------------------ */

static void rpc_driver(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	struct seqmsg r;
	struct epmsg m;

	(void)s;
	for (uint64_t i = 1; i <= 50; i++) {
		TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx), 0);
		m = ep(OP_REPLY, i);
		m.otx = otx;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
		TU_ASSERT_RC(cmesh_oneshot_recv_deadline(orx, topo_deadline(),
							 &r, NULL, 0),
			     0);
		cr_assert(r.sender == 5 && r.seq == i * 2,
			  "reply %u/%llu to request %llu", r.sender,
			  (unsigned long long)r.seq, (unsigned long long)i);
		cmesh_oneshot_receiver_free(orx);
	}
	/* The server drops the request unanswered: the caller sees closed. */
	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx), 0);
	m = ep(OP_DROP, 0);
	m.otx = otx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(orx, topo_deadline(), &r, NULL,
						 0),
		     -EPIPE);
	cmesh_oneshot_receiver_free(orx);
	finish(tx, rx);
}

SCENARIO(rpc_sc, rpc_driver);

Test(ports, oneshot_reply_in_process)
{
	topo_run(&rpc_sc, TOPO_THREAD);
}

Test(ports, oneshot_reply_answered_by_another_process)
{
	topo_run(&rpc_sc, TOPO_FORK);
}

/* ---- a oneshot receiver crosses, before and after its value ----------- */

static void oneshot_rx_driver(cmesh_sender *tx, cmesh_receiver *rx,
			      const struct topo_side *s)
{
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	struct seqmsg v = { .sender = 3, .seq = 42 };
	struct epmsg m;

	(void)s;
	/* Value first, then the receiver moves with it queued. */
	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx), 0);
	TU_ASSERT_RC(cmesh_oneshot_send(otx, &v, NULL, 0), 0);
	m = ep(OP_TAKE_ONE, 0);
	m.orx = orx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(report(rx), 42);
	/* The receiver moves first, the value follows it. */
	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx), 0);
	m = ep(OP_TAKE_ONE, 0);
	m.orx = orx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	v.seq = 43;
	TU_ASSERT_RC(cmesh_oneshot_send(otx, &v, NULL, 0), 0);
	cr_assert_eq(report(rx), 43);
	finish(tx, rx);
}

SCENARIO(oneshot_rx_sc, oneshot_rx_driver);

Test(ports, oneshot_receiver_in_process)
{
	topo_run(&oneshot_rx_sc, TOPO_THREAD);
}

Test(ports, oneshot_receiver_sent_to_another_process)
{
	topo_run(&oneshot_rx_sc, TOPO_FORK);
}

/* ---- closed ends arrive closed; dropped ports close their peers ------- */

static void closed_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct seqmsg r;
	struct epmsg m;

	(void)s;
	/* A sender whose receiver is gone: its sends fail there too. */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	cmesh_receiver_free(lrx);
	m = ep(OP_SEND_FAILS, 0);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(report(rx), EPIPE, "a send on a closed sender");

	/* Open, then its receiver goes: the peer's sender sees both. */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_WAIT_CLOSED, 0);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(report(rx), 1000, "is_closed with the receiver here");
	cmesh_receiver_free(lrx);
	cr_assert_eq(report(rx), 1001, "is_closed once it is freed");

	/* A receiver whose senders are gone, two messages queued. */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	send_seq(ltx, 1, 1);
	send_seq(ltx, 1, 2);
	cmesh_sender_free(ltx);
	m = ep(OP_DRAIN, 0);
	m.rx = lrx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(report(rx), 2, "messages before the close");

	/* Dropped unused: every peer end sees closed. */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_DROP, 0);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(recv_wait(lrx, &r), -EPIPE);
	cmesh_receiver_free(lrx);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_DROP, 0);
	m.rx = lrx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	/* Its senders see the receiver gone once the drop is known. */
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);;) {
		int e;

		r = (struct seqmsg){ .sender = 1, .seq = 1 };
		e = cmesh_sender_send(ltx, &r, NULL, 0);
		if (e == -EPIPE)
			break;
		TU_ASSERT_RC(e, 0);
		cr_assert(tu_now_ns() < until, "sends never failed");
		tu_sleep_ms(1);
	}
	cmesh_sender_free(ltx);
	finish(tx, rx);
}

SCENARIO(closed_sc, closed_driver);

Test(ports, closed_and_dropped_ends_in_process)
{
	topo_run(&closed_sc, TOPO_THREAD);
}

Test(ports, closed_and_dropped_ends_across_processes)
{
	topo_run(&closed_sc, TOPO_FORK);
}

/* ---- one link, many channels: no thread, socket or eventfd each ------- */

#define MANY 1000

static void many_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	static cmesh_receiver *lrx[MANY];
	struct kinds before = count_kinds(), during;
	struct seqmsg r;
	struct epmsg m;
	uint64_t peer;

	(void)s;
	for (int i = 0; i < MANY; i++) {
		cmesh_sender *ltx;

		TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx[i]),
			     0);
		m = ep(OP_HOLD, 0);
		m.tx = ltx;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	m = ep(OP_COUNT, 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	peer = report(rx);
	during = count_kinds();
	cr_assert(during.threads == before.threads &&
			  during.sockets == before.sockets &&
			  during.eventfds == before.eventfds,
		  "%d channels over one link: threads %d -> %d, sockets %d -> "
		  "%d, eventfds %d -> %d",
		  MANY, before.threads, during.threads, before.sockets,
		  during.sockets, before.eventfds, during.eventfds);
	cr_assert_eq(peer, 0x800080008000ull,
		     "the peer's threads/sockets/eventfds changed: %#llx "
		     "(each 0x8000 + delta)",
		     (unsigned long long)peer);
	m = ep(OP_RELEASE, 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	for (int i = 0; i < MANY; i++) {
		TU_ASSERT_RC(recv_wait(lrx[i], &r), 0);
		cr_assert(r.sender == 2 && r.seq == 1);
		TU_ASSERT_RC(recv_wait(lrx[i], &r), -EPIPE);
		cmesh_receiver_free(lrx[i]);
	}
	finish(tx, rx);
}

SCENARIO(many_sc, many_driver);

Test(ports, a_thousand_channels_in_process)
{
	topo_run(&many_sc, TOPO_THREAD);
}

Test(ports, a_thousand_channels_over_one_link_cost_no_thread_socket_or_eventfd)
{
	topo_run(&many_sc, TOPO_FORK);
}

/* ---- a port inside a message nobody reads ----------------------------- */

/*
 * Frees its receiver unread once the driver says so; keeps the link until
 * the driver has seen the result (a link that goes away fails its ports).
 */
static int dropper_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	cmesh_receiver_free(rx);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'd');
	cmesh_sender_free(tx);
	return 0;
}

static void dropper_driver(cmesh_sender *tx, cmesh_receiver *rx,
			   const struct topo_side *s)
{
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct seqmsg r;
	struct epmsg m;

	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_STREAM, 1);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	/* The only sender was in the dropped message: closed. */
	TU_ASSERT_RC(recv_wait(lrx, &r), -EPIPE);
	cmesh_receiver_free(lrx);
	TU_ASSERT_RC(topo_post(s->sync, 'd'), 0);
	TU_ASSERT_RC(recv_wait(rx, &r), -EPIPE);
	cmesh_receiver_free(rx);
	cmesh_sender_free(tx);
}

static const struct topo_scenario dropper_sc = {
	.down = &ep_type,
	.up = &seq_type,
	.driver = dropper_driver,
	.peer = dropper_peer,
};

Test(ports, unread_port_in_a_freed_receiver_closes_its_peer_in_process)
{
	topo_run(&dropper_sc, TOPO_THREAD);
}

Test(ports, unread_port_in_a_freed_receiver_closes_its_peer_across)
{
	topo_run(&dropper_sc, TOPO_FORK);
}

/* ---- the process holding a moved sender dies -------------------------- */

Test(ports, peer_dying_with_a_moved_sender_fails_its_receiver)
{
	struct topo_res res;
	struct topo_conn c;
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct seqmsg r;
	struct epmsg m;
	int st;

	topo_baseline(&res);
	topo_fork_peer(&sender_sc, TOPO_FORK, &c);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_DIE, 5);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), 0);
	/* What it published first, then its death. */
	for (uint64_t i = 1; i <= 5; i++) {
		TU_ASSERT_RC(recv_wait(lrx, &r), 0);
		cr_assert(r.sender == 2 && r.seq == i);
	}
	TU_ASSERT_RC(recv_wait(lrx, &r), -ECONNRESET);
	TU_ASSERT_RC(cmesh_receiver_try_recv(lrx, &r, NULL, 0), -ECONNRESET);
	cmesh_receiver_free(lrx);
	st = topo_reap(c.pid, TOPO_WAIT_MS);
	cr_assert(st != -ETIMEDOUT && WIFSIGNALED(st) &&
			  WTERMSIG(st) == SIGKILL,
		  "child status %#x, want killed by SIGKILL", st);
	TU_ASSERT_RC(recv_wait(c.rx, &r), -ECONNRESET);
	TU_ASSERT_RC(cmesh_sender_is_closed(c.tx), -ECONNRESET);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	topo_assert_baseline(&res);
}

/* ---- is_closed in one process ----------------------------------------- */

Test(ports, is_closed_says_whether_the_receiver_is_gone)
{
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	cmesh_sender *tx, *tx2;
	cmesh_receiver *rx;

	TU_ASSERT_RC(cmesh_sender_is_closed(NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_sender_is_closed(NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &tx2), 0);
	TU_ASSERT_RC(cmesh_sender_is_closed(tx), 0);
	send_seq(tx, 1, 1);
	cmesh_receiver_free(rx);
	TU_ASSERT_RC(cmesh_sender_is_closed(tx), 1);
	TU_ASSERT_RC(cmesh_sender_is_closed(tx2), 1);
	cmesh_sender_free(tx);
	cmesh_sender_free(tx2);
	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx), 0);
	TU_ASSERT_RC(cmesh_oneshot_sender_is_closed(otx), 0);
	cmesh_oneshot_receiver_free(orx);
	TU_ASSERT_RC(cmesh_oneshot_sender_is_closed(otx), 1);
	cmesh_oneshot_sender_free(otx);
}

/* ---- ports in messages that wait behind a full ring ------------------- */

/* 64 requests in flight, each with its reply end, on a 4 KiB ring. */
static void burst_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	static cmesh_oneshot_receiver *orx[64];
	struct seqmsg r;

	(void)s;
	for (uint64_t i = 0; i < 64; i++) {
		cmesh_oneshot_sender *otx;
		struct epmsg m = ep(OP_REPLY, i);

		TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx[i]), 0);
		m.otx = otx;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	for (uint64_t i = 0; i < 64; i++) {
		int e = cmesh_oneshot_recv_deadline(orx[i], topo_deadline(), &r,
						    NULL, 0);

		cr_assert_eq(e, 0, "reply %llu: %d (%s)", (unsigned long long)i,
			     e, cmesh_strerror(e));
		cr_assert_eq(r.seq, i * 2);
		cmesh_oneshot_receiver_free(orx[i]);
	}
	finish(tx, rx);
}

static const struct topo_scenario burst_sc = {
	.down = &ep_type,
	.up = &seq_type,
	.ring_size = 4096,
	.driver = burst_driver,
	.peer = ep_peer,
};

Test(ports, requests_with_reply_ends_behind_a_full_ring_in_process)
{
	topo_run(&burst_sc, TOPO_THREAD);
}

Test(ports, requests_with_reply_ends_behind_a_full_ring_across)
{
	topo_run(&burst_sc, TOPO_FORK);
}

/* ---- waitsets and lanes: taken either way round, nothing kept --------- */

static void waitset_driver(cmesh_sender *tx, cmesh_receiver *rx,
			   const struct topo_side *s)
{
	cmesh_waitset *ws;
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct seqmsg r;
	struct epmsg m;
	int maps;

	(void)s;
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	/*
	 * A receiver in a waitset takes a lane per sender sent away, as any
	 * receiver: the waitset sets up each lane's wake socket before it
	 * arms it, and wakes for what comes on every one.
	 */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, lrx, 1), 0);
	maps = topo_memfd_map_count();
	for (int i = 0; i < 50; i++) {
		cmesh_sender *c;

		TU_ASSERT_RC(cmesh_sender_clone(ltx, &c), 0);
		m = ep(OP_HOLD, 0);
		m.tx = c;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	{
		cmesh_receiver_stats st = { .size = sizeof(st) };

		TU_ASSERT_RC(cmesh_receiver_stats_get(lrx, &st), 0);
		cr_assert_eq(st.lanes, 50, "a lane per sender sent away");
	}
	m = ep(OP_RELEASE, 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_sender_free(ltx);
	/* A wake may be a lane's end (its sender let go), not a message. */
	for (int i = 0, wakes = 0; i < 50; wakes++) {
		uint64_t key;
		int rc;

		cr_assert_lt(wakes, 50 + 50, "woken for nothing");
		TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
		cr_assert_eq(key, 1);
		rc = cmesh_receiver_try_recv(lrx, &r, NULL, 0);
		if (rc == -EAGAIN)
			continue;
		TU_ASSERT_RC(rc, 0);
		cr_assert(r.sender == 2 && r.seq == 1);
		i++;
	}
	/* Every sender gone: closed, and their lanes freed. */
	TU_ASSERT_RC(recv_wait(lrx, &r), -EPIPE);
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     topo_memfd_map_count() != maps && tu_now_ns() < until;)
		tu_sleep_ms(1);
	cr_assert_eq(topo_memfd_map_count(), maps,
		     "ended lanes left shared memory mapped");
	TU_ASSERT_RC(cmesh_waitset_remove_receiver(ws, lrx), 0);
	cmesh_receiver_free(lrx);

	/* A receiver with a lane joins one (see waitset_sc). */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_STREAM, 3);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, lrx, 2), 0);
	TU_ASSERT_RC(cmesh_waitset_remove_receiver(ws, lrx), 0);
	TU_ASSERT_RC(drain_fifo(lrx), 3);
	cmesh_receiver_free(lrx);
	cmesh_waitset_free(ws);
	finish(tx, rx);
}

SCENARIO(waitset_sc, waitset_driver);

Test(ports, a_receiver_in_a_waitset_takes_its_senders_lanes)
{
	topo_run(&waitset_sc, TOPO_FORK);
}

/* ---- many moves in a row: nothing grows -------------------------------- */

struct stats {
	long fds, maps, rss;
};

static struct stats my_stats(void)
{
	return (struct stats){ count_dir("/proc/self/fd"),
			       topo_memfd_map_count(), tu_status_kib("VmRSS") };
}

static struct stats peer_stats(cmesh_sender *tx, cmesh_receiver *rx)
{
	struct epmsg m = ep(OP_STATS, 0);
	uint64_t v;

	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	v = report(rx);
	return (struct stats){ (long)(v & 0xffff), (long)(v >> 16 & 0xffff),
			       (long)(v >> 32) };
}

/* One sender moved and one receiver moved, each carrying one message. */
static void move_pair(cmesh_sender *tx, cmesh_receiver *rx)
{
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct seqmsg r;
	struct epmsg m;

	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_STREAM, 1);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(recv_wait(lrx, &r), 0);
	TU_ASSERT_RC(recv_wait(lrx, &r), -EPIPE);
	cmesh_receiver_free(lrx);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	send_seq(ltx, 1, 1);
	cmesh_sender_free(ltx);
	m = ep(OP_DRAIN, 0);
	m.rx = lrx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(report(rx), 1);
}

static void churn_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	/* A sanitizer makes each move ~4x dearer: keep within the budget. */
	const int warm = 200,
		  n = (int)tu_stress(tu_sanitized() ? 600 : 2000, 400);
	struct stats me0, me1, peer0, peer1;

	(void)s;
	for (int i = 0; i < warm; i++)
		move_pair(tx, rx);
	me0 = my_stats();
	peer0 = peer_stats(tx, rx);
	for (int i = 0; i < n; i++)
		move_pair(tx, rx);
	/* Lanes are freed by the link threads once both sides are done. */
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);;) {
		me1 = my_stats();
		peer1 = peer_stats(tx, rx);
		/* At most what the warm-up left (its last lanes may still
		 * have been on their way out when it was counted). */
		if ((me1.fds <= me0.fds && me1.maps <= me0.maps &&
		     peer1.fds <= peer0.fds && peer1.maps <= peer0.maps) ||
		    tu_now_ns() > until)
			break;
		tu_sleep_ms(5);
	}
	cr_assert(me1.fds <= me0.fds && me1.maps <= me0.maps,
		  "after %d moves: fds %ld -> %ld, memfd maps %ld -> %ld",
		  2 * n, me0.fds, me1.fds, me0.maps, me1.maps);
	cr_assert(peer1.fds <= peer0.fds && peer1.maps <= peer0.maps,
		  "the peer after %d moves: fds %ld -> %ld, memfd maps %ld -> "
		  "%ld",
		  2 * n, peer0.fds, peer1.fds, peer0.maps, peer1.maps);
	/* A sanitizer's allocator keeps freed memory in quarantine. */
	if (!tu_sanitized()) {
		cr_assert_lt(me1.rss - me0.rss, 4096, "VmRSS grew by %ld KiB",
			     me1.rss - me0.rss);
		cr_assert_lt(peer1.rss - peer0.rss, 4096,
			     "the peer's VmRSS grew by %ld KiB",
			     peer1.rss - peer0.rss);
	}
	finish(tx, rx);
}

SCENARIO(churn_sc, churn_driver);

Test(ports, thousands_of_moves_leave_fds_mappings_and_rss_flat)
{
	topo_run(&churn_sc, TOPO_FORK);
}

/* ---- a large message with an endpoint ------------------------------- */

/*
 * A message struct with an endpoint, of 256 bytes (port.c copies it on its
 * stack to send it across), 264 (just past: a heap copy) and 720: every
 * byte and the endpoint arrive. In one process the same messages take the
 * local path (no copy), checked alike.
 */
#define BIGEP(n)                                                               \
	struct bigep##n {                                                      \
		unsigned char pad[n];                                          \
		uint64_t seq;                                                  \
		cmesh_sender *tx;                                              \
	};                                                                     \
	CMESH_TYPE_DEFINE(bigep##n##_type, struct bigep##n,                    \
			  CMESH_FIELD_SENDER(struct bigep##n, tx, seq_type))
BIGEP(240);
BIGEP(248);
BIGEP(704);

struct bigcase {
	size_t size, pad, seq_off, tx_off;
};

#define BIGCASE(n)                                                             \
	{                                                                      \
		sizeof(struct bigep##n), n, offsetof(struct bigep##n, seq),    \
			offsetof(struct bigep##n, tx)                          \
	}
static const struct bigcase big256 = BIGCASE(240), big264 = BIGCASE(248),
			    big720 = BIGCASE(704);

static unsigned char big_byte(size_t i, uint64_t seq)
{
	return (unsigned char)(i * 7u + seq);
}

static void bigep_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	const struct bigcase *c = s->arg;

	for (uint64_t k = 1; k <= 20; k++) {
		alignas(max_align_t) unsigned char m[1024] = { 0 };
		cmesh_sender *ltx;
		cmesh_receiver *lrx;
		struct seqmsg r;

		for (size_t i = 0; i < c->pad; i++)
			m[i] = big_byte(i, k);
		memcpy(m + c->seq_off, &k, sizeof(k));
		TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
		memcpy(m + c->tx_off, &ltx, sizeof(ltx));
		TU_ASSERT_RC(cmesh_sender_send(tx, m, NULL, 0), 0);
		/* The peer answers on the sender it got, then drops it. */
		TU_ASSERT_RC(recv_wait(lrx, &r), 0);
		cr_assert_eq(r.seq, k * 3);
		TU_ASSERT_RC(recv_wait(lrx, &r), -EPIPE);
		cmesh_receiver_free(lrx);
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int bigep_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	const struct bigcase *c = s->arg;

	for (uint64_t k = 1; k <= 20; k++) {
		alignas(max_align_t) unsigned char m[1024];
		struct seqmsg r = { .sender = 1, .seq = k * 3 };
		cmesh_sender *ltx;
		uint64_t seq;

		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   m, NULL, 0),
			      0);
		memcpy(&seq, m + c->seq_off, sizeof(seq));
		memcpy(&ltx, m + c->tx_off, sizeof(ltx));
		TOPO_CHECK_EQ(seq, k);
		for (size_t i = 0; i < c->pad; i++)
			TOPO_CHECK_EQ(m[i], big_byte(i, k));
		TOPO_CHECK(ltx);
		TOPO_CHECK_EQ(cmesh_sender_send(ltx, &r, NULL, 0), 0);
		cmesh_sender_free(ltx);
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

#define BIG_SC(name, n, c)                                                     \
	static const struct topo_scenario name = {                             \
		.down = &bigep##n##_type,                                      \
		.up = &seq_type,                                               \
		.driver = bigep_driver,                                        \
		.peer = bigep_peer,                                            \
		.arg = &(c),                                                   \
	}
BIG_SC(big256_sc, 240, big256);
BIG_SC(big264_sc, 248, big264);
BIG_SC(big720_sc, 704, big720);

Test(ports, large_messages_carry_their_endpoint_in_process)
{
	cr_assert_eq(big256.size, 256);
	cr_assert_eq(big264.size, 264);
	topo_run(&big256_sc, TOPO_THREAD);
	topo_run(&big264_sc, TOPO_THREAD);
	topo_run(&big720_sc, TOPO_THREAD);
}

Test(ports, large_messages_carry_their_endpoint_across)
{
	topo_run(&big256_sc, TOPO_FORK);
	topo_run(&big264_sc, TOPO_FORK);
	topo_run(&big720_sc, TOPO_FORK);
}

/* ---- the process a port was sent to dies before taking it ------------- */

/* Never reads: says 'r' once it has joined, then waits to be killed. */
static int sleeper_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	(void)tx;
	(void)rx;
	TOPO_CHECK_EQ(topo_post(s->sync, 'r'), 0);
	topo_wait(s->sync, TOPO_WAIT_MS * 3);
	return 1;
}

static const struct topo_scenario sleeper_sc = {
	.down = &ep_type,
	.up = &seq_type,
	.peer = sleeper_peer,
};

Test(ports, port_sent_to_a_process_that_dies_before_taking_it_fails_its_peer)
{
	struct topo_res res;
	struct topo_conn c;
	cmesh_sender *ltx, *ltx2;
	cmesh_receiver *lrx, *lrx2;
	struct seqmsg r;
	struct epmsg m;
	int st, e;

	topo_baseline(&res);
	topo_fork_peer(&sleeper_sc, TOPO_FORK, &c);
	TU_ASSERT_RC(topo_wait(c.sync, TOPO_WAIT_MS), 'r');
	/* A sender (its receiver here) and a receiver (its sender here). */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_STREAM, 1);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx2, &lrx2), 0);
	m = ep(OP_DRAIN, 0);
	m.rx = lrx2;
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), 0);
	kill(c.pid, SIGKILL);
	st = topo_reap(c.pid, TOPO_WAIT_MS);
	cr_assert(st != -ETIMEDOUT && WIFSIGNALED(st));
	TU_ASSERT_RC(recv_wait(lrx, &r), -ECONNRESET);
	/* The moved receiver's sender: its sends now fail. */
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);;) {
		r = (struct seqmsg){ .sender = 1, .seq = 1 };
		e = cmesh_sender_send(ltx2, &r, NULL, 0);
		if (e)
			break;
		cr_assert(tu_now_ns() < until, "sends never failed");
		tu_sleep_ms(1);
	}
	TU_ASSERT_RC(e, -ECONNRESET);
	TU_ASSERT_RC(cmesh_sender_is_closed(ltx2), -ECONNRESET);
	cmesh_sender_free(ltx2);
	cmesh_receiver_free(lrx);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	topo_assert_baseline(&res);
}

/* A peer forked, killed and reaped; *c's link known failed. */
static void dead_peer(struct topo_conn *c)
{
	int st;

	topo_fork_peer(&sleeper_sc, TOPO_FORK, c);
	TU_ASSERT_RC(topo_wait(c->sync, TOPO_WAIT_MS), 'r');
	kill(c->pid, SIGKILL);
	st = topo_reap(c->pid, TOPO_WAIT_MS);
	cr_assert(st != -ETIMEDOUT && WIFSIGNALED(st));
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     cmesh_sender_is_closed(c->tx) != -ECONNRESET;) {
		cr_assert(tu_now_ns() < until, "the link never failed");
		tu_sleep_ms(1);
	}
}

/*
 * A receiver sent after the process it goes to died (its link known
 * failed, so the send fails at once): it was lost to that failure, so
 * its senders here see -ECONNRESET, not a close (-EPIPE).
 */
Test(ports, receiver_sent_to_a_dead_process_fails_its_senders)
{
	struct topo_res res;
	struct topo_conn c;
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct seqmsg r = { .sender = 1, .seq = 1 };
	struct epmsg m;

	topo_baseline(&res);
	dead_peer(&c);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_sender_send(ltx, &r, NULL, 0), 0); /* unread */
	m = ep(OP_DRAIN, 0);
	m.rx = lrx;
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), -ECONNRESET);
	TU_ASSERT_RC(cmesh_sender_is_closed(ltx), -ECONNRESET);
	TU_ASSERT_RC(cmesh_sender_send(ltx, &r, NULL, 0), -ECONNRESET);
	cmesh_sender_free(ltx);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	topo_assert_baseline(&res);
}

/*
 * The same with a sender: sent after the process it goes to died, it was
 * lost to that failure, so its receiver here fails (-ECONNRESET) once it
 * has read what came before, though a clone of that sender lives here.
 */
Test(ports, sender_sent_to_a_dead_process_fails_its_receiver)
{
	struct topo_res res;
	struct topo_conn c;
	cmesh_sender *ltx, *ltx2;
	cmesh_receiver *lrx;
	struct seqmsg r = { .sender = 1, .seq = 1 };
	struct epmsg m;

	topo_baseline(&res);
	dead_peer(&c);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_sender_clone(ltx, &ltx2), 0);
	TU_ASSERT_RC(cmesh_sender_send(ltx, &r, NULL, 0), 0);
	m = ep(OP_DRAIN, 0);
	m.tx = ltx2;
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), -ECONNRESET);
	r.seq = 0;
	TU_ASSERT_RC(recv_wait(lrx, &r), 0);
	cr_assert_eq(r.seq, 1);
	TU_ASSERT_RC(recv_wait(lrx, &r), -ECONNRESET);
	cmesh_sender_free(ltx);
	cmesh_receiver_free(lrx);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	topo_assert_baseline(&res);
}

/* ---- a failed endpoint can be sent and arrives failed ------------------ */

Test(ports, failed_endpoint_sent_to_a_third_process_arrives_failed)
{
	struct topo_res res;
	struct topo_conn dead, live;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	cmesh_sender *ltx;
	cmesh_receiver *lrx;
	struct seqmsg r;
	struct epmsg m;
	int st;

	topo_baseline(&res);
	topo_fork_peer(&sleeper_sc, TOPO_FORK, &dead);
	topo_fork_peer(&sender_sc, TOPO_FORK, &live);
	TU_ASSERT_RC(topo_wait(dead.sync, TOPO_WAIT_MS), 'r');
	/* ltx's receiver goes to the process that is about to die. */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m = ep(OP_DRAIN, 0);
	m.rx = lrx;
	TU_ASSERT_RC(cmesh_sender_send(dead.tx, &m, NULL, 0), 0);
	kill(dead.pid, SIGKILL);
	st = topo_reap(dead.pid, TOPO_WAIT_MS);
	cr_assert(st != -ETIMEDOUT && WIFSIGNALED(st));
	/* dead.rx is fed by the dead process: it fails... */
	TU_ASSERT_RC(recv_wait(dead.rx, &r), -ECONNRESET);
	/* ...and arrives failed in the live one. */
	m = ep(OP_DRAIN, 0);
	m.rx = dead.rx;
	TU_ASSERT_RC(cmesh_sender_send(live.tx, &m, NULL, 0), 0);
	cr_assert_eq(report(live.rx), (uint64_t)-ECONNRESET,
		     "the failed receiver's first receive there");
	/*
	 * A failed sender (FAILED port) and a oneshot sender whose receiver
	 * moved already (it goes through a forwarder here): both go.
	 */
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     cmesh_sender_is_closed(ltx) != -ECONNRESET;) {
		cr_assert(tu_now_ns() < until, "ltx never saw the death");
		tu_sleep_ms(1);
	}
	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx), 0);
	m = ep(OP_DROP, 0);
	m.orx = orx;
	TU_ASSERT_RC(cmesh_sender_send(live.tx, &m, NULL, 0), 0);
	m = ep(OP_DROP, 0);
	m.tx = ltx;
	m.otx = otx;
	TU_ASSERT_RC(cmesh_sender_send(live.tx, &m, NULL, 0), 0);
	cmesh_sender_free(dead.tx);
	close(dead.sync);
	finish(live.tx, live.rx);
	topo_bye(live.sync);
	topo_assert_exit_0(live.pid, TOPO_WAIT_MS);
	close(live.sync);
	/* otx's forwarder ends (and lets its link go) once the drop is seen. */
	topo_assert_baseline_within(&res, TOPO_WAIT_MS);
}

/* ---- try_send: never beyond the ring, nothing taken on -EAGAIN -------- */

struct fdseq {
	uint64_t seq;
	int fd;
	int pad;
};
CMESH_TYPE_DEFINE(fdseq_type, struct fdseq, CMESH_FIELD_FD(struct fdseq, fd));

/* Reads nothing until 'g', then everything: reports the count (FIFO). */
static int late_reader_peer(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	struct fdseq m;
	uint64_t n = 0;
	int r;

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		TOPO_CHECK_EQ(m.seq, n + 1);
		if (m.fd >= 0)
			close(m.fd);
		n++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	TOPO_CHECK_EQ(peer_report(tx, n), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void try_driver(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct fdseq m = { .fd = -1 };
	uint64_t n = 0;
	int p[2], r;

	/* Fill the ring; the peer does not read yet. */
	while ((r = cmesh_sender_try_send(tx, &(struct fdseq){ n + 1, -1, 0 },
					  NULL, 0)) == 0)
		n++;
	TU_ASSERT_RC(r, -EAGAIN);
	cr_assert_gt(n, 0);
	/* A message with an fd: -EAGAIN leaves the fd ours, open. */
	tu_pipe(p);
	m = (struct fdseq){ .seq = n + 1, .fd = p[1] };
	TU_ASSERT_RC(cmesh_sender_try_send(tx, &m, NULL, 0), -EAGAIN);
	cr_assert_eq(write(p[1], "x", 1), 1, "the fd was taken");
	/* send queues it behind the ring; try_send then waits its turn. */
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	n++;
	m = (struct fdseq){ .seq = n + 1, .fd = -1 };
	TU_ASSERT_RC(cmesh_sender_try_send(tx, &m, NULL, 0), -EAGAIN);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	/* Once the peer reads, try_send goes again. */
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);;) {
		r = cmesh_sender_try_send(tx, &m, NULL, 0);
		if (r != -EAGAIN)
			break;
		cr_assert(tu_now_ns() < until, "try_send never went again");
		tu_sleep_ms(1);
	}
	TU_ASSERT_RC(r, 0);
	n++;
	close(p[0]);
	cmesh_sender_free(tx);
	cr_assert_eq(report(rx), n, "messages the peer received in order");
	cmesh_receiver_free(rx);
}

static const struct topo_scenario try_sc = {
	.down = &fdseq_type,
	.up = &seq_type,
	.ring_size = 4096,
	.driver = try_driver,
	.peer = late_reader_peer,
};

Test(ports, try_send_in_process_never_queues_beyond_the_ring)
{
	topo_run(&try_sc, TOPO_THREAD);
}

Test(ports, try_send_across_never_queues_beyond_the_ring)
{
	topo_run(&try_sc, TOPO_FORK);
}

Test(ports, try_send_refuses_bad_arguments_and_endpoints)
{
	cmesh_sender *tx, *ltx;
	cmesh_receiver *rx, *lrx;
	struct epmsg m = ep(0, 0);
	struct seqmsg r;

	TU_ASSERT_RC(cmesh_sender_try_send(NULL, &m, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_channel_new(&ep_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_sender_try_send(tx, NULL, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_sender_try_send(tx, &m, NULL, 3), -EINVAL);
	/* An endpoint inside: refused and released (its receiver sees). */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	m.tx = ltx;
	TU_ASSERT_RC(cmesh_sender_try_send(tx, &m, NULL, 0), -EOPNOTSUPP);
	TU_ASSERT_RC(cmesh_receiver_try_recv(lrx, &r, NULL, 0), -EPIPE);
	cmesh_receiver_free(lrx);
	/* Endpoints NULL: it goes. Receiver gone: -EPIPE. */
	m = ep(0, 0);
	TU_ASSERT_RC(cmesh_sender_try_send(tx, &m, NULL, 0), 0);
	cmesh_receiver_free(rx);
	TU_ASSERT_RC(cmesh_sender_try_send(tx, &m, NULL, 0), -EPIPE);
	cmesh_sender_free(tx);
}

/* ---- waitsets over ports' lanes ---------------------------------------- */

/* A waitset's wait for a member's next message, then the message. */
static void ws_expect(cmesh_waitset *ws, uint64_t key, cmesh_receiver *rx,
		      uint64_t seq)
{
	struct seqmsg r;
	uint64_t k = 0;

	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &k), 0);
	cr_assert_eq(k, key);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &r, NULL, 0), 0);
	cr_assert_eq(r.seq, seq);
}

static void wsport_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	cmesh_sender *atx, *btx;
	cmesh_receiver *arx, *brx;
	cmesh_waitset *w1, *w2;
	struct pollfd p;
	struct seqmsg r;
	struct epmsg m;
	uint64_t k;

	(void)s;
	/* Two receivers whose senders the peer holds, two waitsets. */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &atx, &arx), 0);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &btx, &brx), 0);
	m = ep(OP_HOLD, 0);
	m.tx = atx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&w1), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&w2), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(w1, arx, 1), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(w2, brx, 2), 0);
	TU_ASSERT_RC(cmesh_waitset_try_wait(w1, &k), -EAGAIN);
	p = (struct pollfd){ .fd = cmesh_waitset_fd(w1), .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 0), 0, "w1 readable with nothing sent");
	/* The peer sends on the held sender: w1 wakes, its fd first. */
	m = ep(OP_SEND_HELD, 1);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(poll(&p, 1, (int)TOPO_WAIT_MS), 1, "w1's fd never woke");
	ws_expect(w1, 1, arx, 1);
	/* w2's member has no lane yet; a local send wakes it still. */
	send_seq(btx, 1, 7);
	ws_expect(w2, 2, brx, 7);
	TU_ASSERT_RC(cmesh_waitset_wait(w1, cmesh_deadline_after(TU_MS(20)),
					&k),
		     -ETIMEDOUT);
	m = ep(OP_SEND_HELD, 2);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	ws_expect(w1, 1, arx, 2);
	/* The peer frees the held sender: closed wakes it too. */
	m = ep(OP_RELEASE, 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	ws_expect(w1, 1, arx, 1);
	TU_ASSERT_RC(cmesh_waitset_wait(w1, topo_deadline(), &k), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(arx, &r, NULL, 0), -EPIPE);
	cmesh_waitset_free(w1);
	cmesh_waitset_free(w2);
	cmesh_receiver_free(arx);
	cmesh_sender_free(btx);
	cmesh_receiver_free(brx);
	/* A receiver moved to the peer waits there in a waitset. */
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &atx, &arx), 0);
	m = ep(OP_WS_DRAIN, 0);
	m.rx = arx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	for (uint64_t i = 1; i <= 100; i++) {
		send_seq(atx, 1, i);
		if (i % 10 == 0)
			tu_sleep_ms(1); /* let it sleep in the waitset */
	}
	cmesh_sender_free(atx);
	cr_assert_eq(report(rx), 100, "messages the peer's waitset saw");
	finish(tx, rx);
}

SCENARIO(wsport_sc, wsport_driver);

Test(ports, waitsets_over_moved_channels_in_process)
{
	topo_run(&wsport_sc, TOPO_THREAD);
}

Test(ports, waitsets_wake_for_ports_lanes_across_processes)
{
	topo_run(&wsport_sc, TOPO_FORK);
}

/* ---- a sender sent back before its receiver's port was taken --------- */

/* A sender of seq_type, on a second channel. */
struct s2msg {
	cmesh_sender *tx;
};
CMESH_TYPE_DEFINE(s2_type, struct s2msg,
		  CMESH_FIELD_SENDER(struct s2msg, tx, seq_type));

struct bmsg {
	int64_t n;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_receiver *crx;
};
CMESH_TYPE_DEFINE(b_type, struct bmsg,
		  CMESH_FIELD_SENDER(struct bmsg, tx, seq_type),
		  CMESH_FIELD_RECEIVER(struct bmsg, rx, seq_type),
		  CMESH_FIELD_RECEIVER(struct bmsg, crx, s2_type));

/*
 * Takes a second channel, then the sender on it before the receiver that
 * waits on the first (so its port is not taken yet), sends the sender
 * back, then takes the receiver and counts what comes (in order).
 */
static int bounce_peer(cmesh_sender *up, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct bmsg a = { 0 }, b = { 0 };
	struct s2msg c = { 0 };
	struct seqmsg q;
	int64_t n = 0;

	(void)s;
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &a,
						   NULL, 0),
		      0);
	TOPO_CHECK(a.crx);
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(a.crx, topo_deadline(), &c,
						   NULL, 0),
		      0);
	TOPO_CHECK(c.tx);
	TOPO_CHECK_EQ(cmesh_sender_send(up, &(struct bmsg){ .tx = c.tx }, NULL,
					0),
		      0);
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &b,
						   NULL, 0),
		      0);
	TOPO_CHECK(b.rx);
	while (cmesh_receiver_recv_deadline(b.rx, topo_deadline(), &q, NULL,
					    0) == 0)
		TOPO_CHECK_EQ(q.seq, (uint64_t)++n);
	cmesh_receiver_free(b.rx);
	cmesh_receiver_free(a.crx);
	TOPO_CHECK_EQ(cmesh_sender_send(up, &(struct bmsg){ .n = n }, NULL, 0),
		      0);
	/* Until the driver lets go. */
	while (cmesh_receiver_recv_deadline(rx, topo_deadline(), &a, NULL, 0) ==
	       0)
		;
	cmesh_receiver_free(rx);
	cmesh_sender_free(up);
	return 0;
}

static void bounce_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	cmesh_sender *c2tx, *st;
	cmesh_receiver *c2rx, *sr;
	struct bmsg m = { 0 };

	(void)s;
	TU_ASSERT_RC(cmesh_channel_new(&s2_type, NULL, &c2tx, &c2rx), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct bmsg){ .crx = c2rx }, NULL,
				       0),
		     0);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &st, &sr), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct bmsg){ .rx = sr }, NULL, 0),
		     0);
	TU_ASSERT_RC(cmesh_sender_send(c2tx, &(struct s2msg){ .tx = st }, NULL,
				       0),
		     0);
	/* The sender, back: the link is up, nothing refused. */
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     0);
	cr_assert_not_null(m.tx);
	for (uint64_t i = 1; i <= 5; i++)
		TU_ASSERT_RC(cmesh_sender_send(m.tx,
					       &(struct seqmsg){ .seq = i },
					       NULL, 0),
			     0);
	cmesh_sender_free(m.tx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     0);
	cr_assert_eq(m.n, 5);
	cmesh_sender_free(c2tx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario bounce_sc = {
	.down = &b_type,
	.up = &b_type,
	.driver = bounce_driver,
	.peer = bounce_peer,
};

/*
 * A sender sent to where its receiver went, taken there before the
 * receiver, and sent back: it works (the process that made the channel
 * lists its end of the lane the sender comes back on under a token of
 * its own, not the one it gave the receiver's taker), in order.
 */
Test(ports, a_sender_bounced_before_its_receiver_was_taken_in_process)
{
	topo_run(&bounce_sc, TOPO_THREAD);
}

Test(ports, a_sender_bounced_before_its_receiver_was_taken_across)
{
	topo_run(&bounce_sc, TOPO_FORK);
}

/* Frees its receiver and sender, says 'c', and exits. */
static int closer_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	cmesh_receiver_free(rx);
	cmesh_sender_free(tx);
	TOPO_CHECK_EQ(topo_post(s->sync, 'c'), 0);
	return 0;
}

static const struct topo_scenario closer_sc = {
	.down = &ep_type,
	.up = &seq_type,
	.peer = closer_peer,
};

/*
 * The receiver over there was freed, then its process exited (our link
 * failed since): a sender sent to it now is refused by that close
 * (-EPIPE) and ends as closed, not lost to a failure: its receiver here,
 * with another sender alive, goes on.
 */
Test(ports, a_sender_sent_to_a_closed_then_exited_receiver_is_closed)
{
	struct topo_res res;
	struct topo_conn c;
	cmesh_sender *ltx, *ltx2, *ltx3;
	cmesh_receiver *lrx;
	struct cmesh__lane *down;
	struct seqmsg r = { .sender = 1, .seq = 1 };
	struct epmsg m;
	int st;

	topo_baseline(&res);
	topo_fork_peer(&closer_sc, TOPO_FORK, &c);
	TU_ASSERT_RC(topo_wait(c.sync, TOPO_WAIT_MS), 'c');
	topo_bye(c.sync); /* it may exit */
	st = topo_reap(c.pid, TOPO_WAIT_MS);
	cr_assert(st != -ETIMEDOUT && WIFEXITED(st) && !WEXITSTATUS(st));
	/* Both now: its close, and our link's failure. */
	down = cmesh__queue_tx_lane(
		cmesh__endpoint_queue(CMESH_FIELD_KIND_SENDER, c.tx));
	cr_assert(down);
	for (int64_t until = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     !cmesh__lane_failed(down);) {
		cr_assert(tu_now_ns() < until, "the link never failed");
		tu_sleep_ms(1);
	}
	TU_ASSERT_RC(cmesh_sender_is_closed(c.tx), 1);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &ltx, &lrx), 0);
	TU_ASSERT_RC(cmesh_sender_clone(ltx, &ltx2), 0);
	TU_ASSERT_RC(cmesh_sender_clone(ltx, &ltx3), 0);
	TU_ASSERT_RC(cmesh_sender_send(ltx, &r, NULL, 0), 0);
	m = ep(OP_DRAIN, 0);
	m.tx = ltx2;
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), -EPIPE);
	cmesh_sender_free(ltx);
	r.seq = 0;
	TU_ASSERT_RC(cmesh_receiver_try_recv(lrx, &r, NULL, 0), 0);
	cr_assert_eq(r.seq, 1);
	TU_ASSERT_RC(cmesh_receiver_try_recv(lrx, &r, NULL, 0), -EAGAIN);
	cmesh_sender_free(ltx3);
	TU_ASSERT_RC(cmesh_receiver_try_recv(lrx, &r, NULL, 0), -EPIPE);
	cmesh_receiver_free(lrx);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	topo_assert_baseline(&res);
}
