/* SPDX-License-Identifier: MIT */
/*
 * test_cancel_link.c - cancellation contexts inside messages
 * (CMESH_FIELD_CTX): in one process the handle moves; across processes
 * the receiver's context ends when the sender's canceller fires or is
 * freed, when the sender's process dies, or at the deadline the sender's
 * had; a cancel that comes before the message is taken is not lost; a
 * context cancelled before it is sent arrives cancelled; the sender's
 * link forgets each context once the receiver is done with it.
 *
 * Scenarios run through tests/helpers/topo.c in TOPO_THREAD and
 * TOPO_FORK; the down channel carries a context, the up channel numbers.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include "endpoint.h"
#include "lane.h"
#include "link_int.h"
#include "queue.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(cancel_link, .init = tu_suite_init, .fini = tu_suite_fini);

struct ctxmsg {
	uint64_t op;
	cmesh_ctx *ctx;
};
CMESH_TYPE_DEFINE(ctx_type, struct ctxmsg, CMESH_FIELD_CTX(struct ctxmsg, ctx));

struct num {
	int64_t v;
};
CMESH_TYPE_DEFINE_PLAIN(num_type, struct num);

enum {
	OP_WAIT = 1, /* report check(), 'w', then ctx_wait's result */
	OP_CHILD,    /* as OP_WAIT on a cancellable child made here */
	OP_PAUSE,    /* wait for 'c' before receiving the next message */
	OP_LATE,     /* wait on it (bounded: -ETIMEDOUT if the cancel that
		      * came before it was taken got lost) */
	OP_ENDED,    /* check() at once */
	OP_DRIFT,    /* check() at once: its deadline passed meanwhile */
	OP_DEADLINE, /* report the ns left, then ctx_wait's result */
	OP_HOLD,     /* keep it (at most HOLD_MAX) */
	OP_FREE,     /* free every one held, report how many */
	OP_QUIT
};

#define HOLD_MAX 1000

static int peer_report(cmesh_sender *tx, int64_t v)
{
	struct num n = { v };

	return cmesh_sender_send(tx, &n, NULL, 0);
}

static int64_t driver_result(cmesh_receiver *rx)
{
	struct num n;

	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &n, NULL,
						  0),
		     0);
	return n.v;
}

static int ctx_peer(cmesh_sender *tx, cmesh_receiver *rx,
		    const struct topo_side *s)
{
	static cmesh_ctx *held[HOLD_MAX];
	uint32_t nheld = 0;
	struct ctxmsg m;

	for (;;) {
		cmesh_ctx *c, *child = NULL;
		cmesh_cancel *k = NULL;

		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &m, NULL, 0),
			      0);
		if (m.op == OP_QUIT)
			break;
		if (m.op == OP_PAUSE) {
			TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'c');
			continue;
		}
		if (m.op == OP_FREE) {
			for (uint32_t i = 0; i < nheld; i++)
				cmesh_ctx_free(held[i]);
			TOPO_CHECK_EQ(peer_report(tx, nheld), 0);
			nheld = 0;
			continue;
		}
		TOPO_CHECK(m.ctx != NULL);
		c = m.ctx;
		switch (m.op) {
		case OP_HOLD:
			TOPO_CHECK(nheld < HOLD_MAX);
			held[nheld++] = c;
			continue;
		case OP_CHILD:
			TOPO_CHECK_EQ(cmesh_ctx_with_cancel(m.ctx, &child, &k),
				      0);
			c = child;
			/* fall through */
		case OP_WAIT:
			TOPO_CHECK_EQ(peer_report(tx, cmesh_ctx_check(c)), 0);
			TOPO_CHECK_EQ(topo_post(s->sync, 'w'), 0);
			TOPO_CHECK_EQ(peer_report(tx, cmesh_ctx_wait(c)), 0);
			break;
		case OP_LATE:
			TOPO_CHECK_EQ(cmesh_ctx_with_timeout(
					      c, TU_MS(TOPO_WAIT_MS), &child),
				      0);
			TOPO_CHECK_EQ(peer_report(tx, cmesh_ctx_wait(child)),
				      0);
			break;
		case OP_ENDED:
		case OP_DRIFT:
			TOPO_CHECK_EQ(peer_report(tx, cmesh_ctx_check(c)), 0);
			break;
		case OP_DEADLINE:
			TOPO_CHECK_EQ(peer_report(tx,
						  cmesh_ctx_deadline(c) -
							  cmesh_clock_now()),
				      0);
			TOPO_CHECK_EQ(peer_report(tx, cmesh_ctx_wait(c)), 0);
			break;
		default:
			TOPO_CHECK(false);
		}
		cmesh_cancel_free(k);
		cmesh_ctx_free(child);
		cmesh_ctx_free(m.ctx);
	}
	for (uint32_t i = 0; i < nheld; i++)
		cmesh_ctx_free(held[i]);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void send_ctx(cmesh_sender *tx, uint64_t op, cmesh_ctx *c)
{
	struct ctxmsg m = { op, c };

	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
}

/* The contexts this side's link keeps for the peer (0 in one process). */
static uint32_t exports_of(cmesh_sender *tx)
{
	struct cmesh__queue *q =
		cmesh__endpoint_queue(CMESH_FIELD_KIND_SENDER, tx);
	struct cmesh__lane *ln = cmesh__queue_tx_lane(q);
	uint32_t n;

	if (!ln)
		return 0;
	pthread_mutex_lock(&ln->link->ctx_lock);
	n = (uint32_t)ck_ht_count(&ln->link->ctx_out.ht);
	pthread_mutex_unlock(&ln->link->ctx_lock);
	return n;
}

/* The peer is done with every context we gave: our link forgets them. */
static void assert_exports_drain(cmesh_sender *tx)
{
	for (int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     exports_of(tx) && tu_now_ns() < end;)
		tu_sleep_ms(1);
	cr_assert_eq(exports_of(tx), 0, "%u contexts still kept",
		     exports_of(tx));
}

static void ctx_driver(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	cmesh_ctx *c, *d;
	cmesh_cancel *k;
	int64_t left;

	/* Fired while the peer waits on it. */
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	send_ctx(tx, OP_WAIT, c);
	cr_assert_eq(driver_result(rx), 0, "not live on arrival");
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 'w');
	cmesh_cancel_fire(k);
	cr_assert_eq(driver_result(rx), -ECANCELED);
	cmesh_cancel_free(k);

	/* The canceller freed: a child the peer made ends too. */
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	send_ctx(tx, OP_CHILD, c);
	cr_assert_eq(driver_result(rx), 0);
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 'w');
	cmesh_cancel_free(k);
	cr_assert_eq(driver_result(rx), -ECANCELED);

	/*
	 * Cancelled right after the send, while the peer does not read: the
	 * CANCEL reaches its link (most likely within the 20 ms) before its
	 * receiver takes the message, and must not be lost.
	 */
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	TU_ASSERT_RC(cmesh_ctx_clone(c, &d), 0);
	send_ctx(tx, OP_PAUSE, NULL);
	send_ctx(tx, OP_LATE, c);
	cmesh_cancel_fire(k);
	tu_sleep_ms(20);
	TU_ASSERT_RC(topo_post(s->sync, 'c'), 0);
	cr_assert_eq(driver_result(rx), -ECANCELED);
	cmesh_cancel_free(k);

	/* Cancelled before it is sent: it arrives cancelled. */
	send_ctx(tx, OP_ENDED, d);
	cr_assert_eq(driver_result(rx), -ECANCELED);

	/*
	 * A deadline alone that passes while the message waits unread (the
	 * peer paused): the time it had left counts from its arrival, not
	 * from when the peer takes it.
	 */
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(50), &c), 0);
	send_ctx(tx, OP_PAUSE, NULL);
	send_ctx(tx, OP_DRIFT, c);
	tu_sleep_ms(150);
	TU_ASSERT_RC(topo_post(s->sync, 'c'), 0);
	cr_assert_eq(driver_result(rx), -ETIMEDOUT);

	/* A deadline alone (no canceller anywhere): the time left. */
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(100), &c), 0);
	send_ctx(tx, OP_DEADLINE, c);
	left = driver_result(rx);
	cr_assert(left > 0 && left <= TU_MS(100), "%lld ns left",
		  (long long)left);
	cr_assert_eq(driver_result(rx), -ETIMEDOUT);

	/* 1,000 contexts held, then freed: the link forgets every one. */
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &d, &k), 0);
	for (int i = 0; i < HOLD_MAX; i++) {
		TU_ASSERT_RC(cmesh_ctx_with_timeout(d, TU_MS(60000), &c), 0);
		send_ctx(tx, OP_HOLD, c);
	}
	send_ctx(tx, OP_FREE, NULL);
	cr_assert_eq(driver_result(rx), HOLD_MAX);
	assert_exports_drain(tx);
	cmesh_cancel_free(k);
	cmesh_ctx_free(d);

	send_ctx(tx, OP_QUIT, NULL);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/*
 * Four threads send cancellable contexts at once (their ATTACHes reach
 * the socket in any order), a small ring makes some spill, and the
 * root's canceller fires while some are still spilled: every one arrives,
 * every one ends, the link stays up and then forgets them all.
 */
#define BURST_THREADS 4
#define BURST_PER 100

struct burst {
	cmesh_sender *tx;
	const cmesh_ctx *root;
};

static void *burst_main(void *arg)
{
	struct burst *b = arg;

	for (int i = 0; i < BURST_PER; i++) {
		cmesh_ctx *c;

		if (cmesh_ctx_with_timeout(b->root, TU_MS(60000), &c) ||
		    cmesh_sender_send(b->tx, &(struct ctxmsg){ OP_HOLD, c },
				      NULL, 0))
			return (void *)1;
	}
	return NULL;
}

static void burst_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct burst b[BURST_THREADS];
	pthread_t t[BURST_THREADS];
	cmesh_ctx *root, *c;
	cmesh_cancel *k;

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &root, &k), 0);
	send_ctx(tx, OP_PAUSE, NULL); /* the peer reads nothing yet */
	for (int i = 0; i < BURST_THREADS; i++) {
		b[i] = (struct burst){ tx, root };
		tu_thread_start(&t[i], burst_main, &b[i]);
	}
	for (int i = 0; i < BURST_THREADS; i++)
		cr_assert_null(tu_thread_join(t[i]));
	/* One more behind them all (spilled), then cancel everything. */
	TU_ASSERT_RC(cmesh_ctx_clone(root, &c), 0);
	send_ctx(tx, OP_LATE, c);
	cmesh_cancel_fire(k);
	TU_ASSERT_RC(topo_post(s->sync, 'c'), 0);
	cr_assert_eq(driver_result(rx), -ECANCELED);
	send_ctx(tx, OP_FREE, NULL);
	cr_assert_eq(driver_result(rx), BURST_THREADS * BURST_PER);
	assert_exports_drain(tx);
	cmesh_cancel_free(k);
	cmesh_ctx_free(root);
	send_ctx(tx, OP_QUIT, NULL);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario burst_sc = {
	.down = &ctx_type,
	.up = &num_type,
	.ring_size = 4096,
	.driver = burst_driver,
	.peer = ctx_peer,
};

Test(cancel_link, contexts_sent_from_four_threads_and_spilled_all_end)
{
	topo_run(&burst_sc, TOPO_FORK);
}

Test(cancel_link, contexts_sent_from_four_threads_in_one_process_all_end)
{
	topo_run(&burst_sc, TOPO_THREAD);
}

static const struct topo_scenario ctx_sc = {
	.down = &ctx_type,
	.up = &num_type,
	.driver = ctx_driver,
	.peer = ctx_peer,
};

Test(cancel_link, a_context_in_a_message_moves_within_a_process)
{
	topo_run(&ctx_sc, TOPO_THREAD);
}

Test(cancel_link, a_context_sent_to_another_process_ends_with_the_senders)
{
	topo_run(&ctx_sc, TOPO_FORK);
}

/*
 * The peer sends up a context whose canceller it keeps, says 'k' and
 * blocks; killed, its contexts end for us: -ECANCELED, not a hang.
 */
struct upmsg {
	cmesh_ctx *ctx;
};
CMESH_TYPE_DEFINE(up_type, struct upmsg, CMESH_FIELD_CTX(struct upmsg, ctx));

static int dying_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	struct upmsg m;
	cmesh_cancel *k;
	struct num n;

	TOPO_CHECK_EQ(cmesh_ctx_with_cancel(NULL, &m.ctx, &k), 0);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(topo_post(s->sync, 'k'), 0);
	cmesh_receiver_recv(rx, &n, NULL, 0);
	return 1; /* never: killed while it waits */
}

static const struct topo_scenario dying_sc = {
	.down = &num_type,
	.up = &up_type,
	.peer = dying_peer,
};

Test(cancel_link, a_context_whose_process_dies_ends_cancelled)
{
	struct topo_res res;
	struct topo_conn c;
	struct upmsg m;
	int st;

	topo_baseline(&res);
	topo_fork_peer(&dying_sc, TOPO_FORK, &c);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(c.rx, topo_deadline(), &m,
						  NULL, 0),
		     0);
	cr_assert_not_null(m.ctx);
	TU_ASSERT_RC(cmesh_ctx_check(m.ctx), 0);
	cr_assert_eq(topo_wait(c.sync, TOPO_WAIT_MS), 'k');
	kill(c.pid, SIGKILL);
	TU_ASSERT_RC(cmesh_ctx_wait(m.ctx), -ECANCELED);
	st = topo_reap(c.pid, TOPO_WAIT_MS);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	cmesh_ctx_free(m.ctx);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
	/* The link thread may drop the last reference: it frees the link. */
	topo_assert_baseline_within(&res, TOPO_WAIT_MS);
}

/* A context field is checked like any other: no nested type. */
Test(cancel_link, a_context_field_takes_no_type)
{
	static const cmesh_field bad[] = { { CMESH_FIELD_KIND_CTX, 8,
					     &num_type } };
	static const cmesh_type t = { "struct ctxmsg", sizeof(struct ctxmsg), 1,
				      bad };
	uint64_t a, b;

	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	TU_ASSERT_RC(cmesh_type_check(&ctx_type), 0);
	/* The kind is part of the fingerprint: not an fd at that offset. */
	static const cmesh_field fd[] = { { CMESH_FIELD_KIND_FD, 8, NULL } };
	static const cmesh_type tf = { "struct ctxmsg", sizeof(struct ctxmsg),
				       1, fd };
	TU_ASSERT_RC(cmesh_type_fingerprint(&ctx_type, &a), 0);
	TU_ASSERT_RC(cmesh_type_fingerprint(&tf, &b), 0);
	cr_assert_neq(a, b);
}

/* A message dropped unread releases the context it carries. */
Test(cancel_link, a_context_in_a_dropped_message_is_released)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_cancel *k;
	struct ctxmsg m = { 1, NULL };

	TU_ASSERT_RC(cmesh_channel_new(&ctx_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &m.ctx, &k), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_receiver_free(rx); /* LeakSanitizer: the handle went */
	cmesh_sender_free(tx);
	cmesh_cancel_free(k);
}

/*
 * A context field before a sender field, with trailing bytes too large
 * for a record (out of line, in a memfd): each resource gets its own fd
 * slot (a context has none), the trail arrives whole, the sender works.
 */
struct mixed {
	cmesh_ctx *ctx;
	cmesh_sender *tx;
};
CMESH_TYPE_DEFINE(mixed_type, struct mixed, CMESH_FIELD_CTX(struct mixed, ctx),
		  CMESH_FIELD_SENDER(struct mixed, tx, num_type));

#define MIXED_TRAIL 200000u

static void mixed_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	static unsigned char trail[MIXED_TRAIL];
	cmesh_sender *tx2;
	cmesh_receiver *rx2;
	struct mixed m;
	cmesh_cancel *k;
	struct num n;

	(void)s;
	tu_fill(trail, sizeof(trail), 9);
	TU_ASSERT_RC(cmesh_channel_new(&num_type, NULL, &tx2, &rx2), 0);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &m.ctx, &k), 0);
	m.tx = tx2;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, trail, sizeof(trail)), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx2, topo_deadline(), &n,
						  NULL, 0),
		     0);
	cr_assert_eq(n.v, MIXED_TRAIL, "the peer's trail check");
	cmesh_cancel_fire(k);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx2, topo_deadline(), &n,
						  NULL, 0),
		     0);
	cr_assert_eq(n.v, -ECANCELED);
	cmesh_cancel_free(k);
	cmesh_receiver_free(rx2);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int mixed_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	static unsigned char trail[MIXED_TRAIL];
	struct mixed m;
	int r;

	(void)s;
	r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, trail,
					 sizeof(trail));
	TOPO_CHECK_EQ(r, (int)MIXED_TRAIL);
	TOPO_CHECK(m.ctx && m.tx);
	TOPO_CHECK_EQ(tu_check(trail, sizeof(trail), 9), sizeof(trail));
	TOPO_CHECK_EQ(peer_report(m.tx, r), 0);
	TOPO_CHECK_EQ(peer_report(m.tx, cmesh_ctx_wait(m.ctx)), 0);
	cmesh_ctx_free(m.ctx);
	cmesh_sender_free(m.tx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario mixed_sc = {
	.down = &mixed_type,
	.up = &num_type,
	.driver = mixed_driver,
	.peer = mixed_peer,
};

Test(cancel_link, a_context_beside_an_endpoint_and_a_large_trail_crosses)
{
	topo_run(&mixed_sc, TOPO_FORK);
}

/*
 * Across processes the release of a context in a dropped message is seen
 * from here: the peer frees its receiver with our message unread, and our
 * link forgets the context (its CTXDROP), with no handle ever made there.
 */
static void unread_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	cmesh_cancel *k;
	cmesh_ctx *c;

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	send_ctx(tx, OP_HOLD, c);
	cr_assert_eq(exports_of(tx), s->cross ? 1u : 0u);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 'd');
	assert_exports_drain(tx);
	cmesh_cancel_free(k);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int unread_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	cmesh_receiver_free(rx); /* the message with its context, unread */
	TOPO_CHECK_EQ(topo_post(s->sync, 'd'), 0);
	cmesh_sender_free(tx);
	return 0;
}

static const struct topo_scenario unread_sc = {
	.down = &ctx_type,
	.up = &num_type,
	.driver = unread_driver,
	.peer = unread_peer,
};

Test(cancel_link, a_context_in_an_unread_message_is_released_across)
{
	topo_run(&unread_sc, TOPO_FORK);
}

/* ---- a passed deadline, and a child of fork ------------------------------ */

/*
 * The peer: for each of two contexts, reports its check and whether it
 * says it has no deadline.
 */
static int passed_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct ctxmsg m;
	struct num n;

	(void)s;
	for (int i = 0; i < 2; i++) {
		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &m, NULL, 0),
			      0);
		n.v = cmesh_ctx_check(m.ctx) * 2 +
		      (cmesh_ctx_deadline(m.ctx) == CMESH_DEADLINE_NONE);
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &n, NULL, 0), 0);
		cmesh_ctx_free(m.ctx);
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void passed_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	cmesh_ctx *root;
	cmesh_cancel *k;
	struct num n;

	(void)s;
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &root, &k), 0);
	for (int i = 0; i < 2; i++) {
		struct ctxmsg m = { 0, NULL };

		/* Deadline -1: passed here (no canceller, then one above). */
		TU_ASSERT_RC(cmesh_ctx_with_deadline(i ? root : NULL, -1,
						     &m.ctx),
			     0);
		TU_ASSERT_RC(cmesh_ctx_check(m.ctx), -ETIMEDOUT);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							  &n, NULL, 0),
			     0);
		cr_assert_eq(n.v, -ETIMEDOUT * 2,
			     "context %d there: check*2+none %lld", i,
			     (long long)n.v);
	}
	cmesh_cancel_free(k);
	cmesh_ctx_free(root);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario passed_sc = {
	.down = &ctx_type,
	.up = &num_type,
	.driver = passed_driver,
	.peer = passed_peer,
};

/* A deadline already passed (-1 too) arrives passed, not as none. */
Test(cancel_link, a_passed_deadline_arrives_passed)
{
	topo_run(&passed_sc, TOPO_FORK);
}

/*
 * The peer forks; its child frees the context it inherited (tidying up)
 * and exits. The peer's own context still hears the sender's cancel: the
 * child told the sender nothing (a CTXDROP would make it forget the id).
 */
static int fork_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	struct ctxmsg m;
	struct num n = { 1 };
	cmesh_ctx *bounded;
	pid_t p;

	(void)s;
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      0);
	p = fork();
	TOPO_CHECK(p >= 0);
	if (p == 0) {
		cmesh_ctx_free(m.ctx);
		_exit(0);
	}
	TOPO_CHECK_EQ(waitpid(p, NULL, 0), p);
	tu_sleep_ms(50); /* what the child might have sent, on its way */
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &n, NULL, 0), 0);
	TOPO_CHECK_EQ(cmesh_ctx_with_timeout(m.ctx, TU_MS(5000), &bounded), 0);
	n.v = cmesh_ctx_wait(bounded);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &n, NULL, 0), 0);
	cmesh_ctx_free(bounded);
	cmesh_ctx_free(m.ctx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void fork_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	struct ctxmsg m = { 0, NULL };
	cmesh_cancel *k;
	struct num n;

	(void)s;
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &m.ctx, &k), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &n, NULL,
						  0),
		     0);
	cmesh_cancel_fire(k);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &n, NULL,
						  0),
		     0);
	cr_assert_eq(n.v, -ECANCELED, "the peer's wait after the cancel: %lld",
		     (long long)n.v);
	cmesh_cancel_free(k);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario fork_sc = {
	.down = &ctx_type,
	.up = &num_type,
	.driver = fork_driver,
	.peer = fork_peer,
};

Test(cancel_link, a_child_of_fork_freeing_an_inherited_context_tells_nobody)
{
	topo_run(&fork_sc, TOPO_FORK);
}
