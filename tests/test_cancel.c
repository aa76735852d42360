/* SPDX-License-Identifier: MIT */
/*
 * test_cancel.c - cancellation contexts (include/cmesh/cancel.h): the
 * tree (children, clones, deadlines, the canceller's free), and every
 * blocking call's _ctx form giving up with -ECANCELED or -ETIMEDOUT
 * wherever it sleeps: an in-process queue, a lane of a link, a receiver
 * fed by lanes, a oneshot, a waitset, a flush behind a full ring.
 * mesh's cases (cancel.rs): no cancel, basic cancel, a chain of 20
 * clones, a chained deadline of 15 ms, deadlines of 0 and 100 ms.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(cancel, .init = tu_suite_init, .fini = tu_suite_fini);

struct seqmsg {
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(seq_type, struct seqmsg);

/* A message that carries a sender of seq_type. */
struct txmsg {
	cmesh_sender *tx;
};
CMESH_TYPE_DEFINE(tx_type, struct txmsg,
		  CMESH_FIELD_SENDER(struct txmsg, tx, seq_type));

#define CHAIN 20

/* ---- a call blocked in another thread --------------------------------- */

struct blocked {
	int (*fn)(struct blocked *b);
	cmesh_receiver *rx;
	cmesh_oneshot_receiver *orx;
	cmesh_waitset *ws;
	cmesh_sender *tx;
	const cmesh_ctx *ctx;
	struct seqmsg m;
	int rc;
	_Atomic pid_t tid;
	pthread_t t;
};

static void *blocked_main(void *arg)
{
	struct blocked *b = arg;

	atomic_store(&b->tid, tu_gettid());
	b->rc = b->fn(b);
	return NULL;
}

/* Starts `b` and returns once its thread sleeps in the call. */
static void block(struct blocked *b)
{
	b->rc = 1;
	atomic_store(&b->tid, 0);
	tu_thread_start(&b->t, blocked_main, b);
	while (!atomic_load(&b->tid))
		tu_sleep_ms(1);
	cr_assert(tu_wait_thread_sleeping(atomic_load(&b->tid), TOPO_WAIT_MS),
		  "the blocked call never slept");
}

/* Joins `b` (it must have returned by now, give or take a wake-up). */
static int unblock(struct blocked *b)
{
	cr_assert(tu_thread_join_within(b->t, TOPO_WAIT_MS, NULL),
		  "the call did not return");
	return b->rc;
}

static int do_recv(struct blocked *b)
{
	return cmesh_receiver_recv_ctx(b->rx, b->ctx, &b->m, NULL, 0);
}

static int do_oneshot(struct blocked *b)
{
	return cmesh_oneshot_recv_ctx(b->orx, b->ctx, &b->m, NULL, 0);
}

static int do_wait(struct blocked *b)
{
	uint64_t key;

	return cmesh_waitset_wait_ctx(b->ws, b->ctx, &key);
}

static int do_ctx_wait(struct blocked *b)
{
	return cmesh_ctx_wait(b->ctx);
}

static int do_flush(struct blocked *b)
{
	return cmesh_sender_flush_ctx(b->tx, b->ctx);
}

/* Blocks `b` on a fresh cancellable context, fires it: -ECANCELED. */
static void check_cancel_wakes(struct blocked *b)
{
	cmesh_cancel *k;
	cmesh_ctx *c;

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	b->ctx = c;
	block(b);
	cmesh_cancel_fire(k);
	TU_ASSERT_RC(unblock(b), -ECANCELED);
	TU_ASSERT_RC(cmesh_ctx_check(c), -ECANCELED);
	cmesh_cancel_free(k);
	cmesh_ctx_free(c);
	b->ctx = NULL;
}

/* Runs `b` with a context of `ms` from now: -ETIMEDOUT, not before. */
static void check_deadline_ends(struct blocked *b, unsigned ms)
{
	cmesh_ctx *c;
	int64_t t0 = tu_now_ns();

	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(ms), &c), 0);
	b->ctx = c;
	b->rc = b->fn(b);
	TU_ASSERT_RC(b->rc, -ETIMEDOUT);
	cr_assert_geq(tu_now_ns() - t0, TU_MS(ms));
	cmesh_ctx_free(c);
	b->ctx = NULL;
}

/* ---- the tree --------------------------------------------------------- */

Test(cancel, a_root_context_never_ends)
{
	cmesh_ctx *c, *d;

	TU_ASSERT_RC(cmesh_ctx_new(&c), 0);
	TU_ASSERT_RC(cmesh_ctx_check(c), 0);
	cr_assert_eq(cmesh_ctx_deadline(c), CMESH_DEADLINE_NONE);
	TU_ASSERT_RC(cmesh_ctx_clone(c, &d), 0);
	cmesh_ctx_free(c);
	TU_ASSERT_RC(cmesh_ctx_check(d), 0);
	cmesh_ctx_free(d);
}

Test(cancel, firing_cancels_the_context_and_wakes_its_waiter)
{
	struct blocked b = { .fn = do_ctx_wait };

	check_cancel_wakes(&b);
}

Test(cancel, freeing_the_canceller_cancels)
{
	cmesh_cancel *k;
	cmesh_ctx *c;

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	TU_ASSERT_RC(cmesh_ctx_check(c), 0);
	cmesh_cancel_free(k);
	TU_ASSERT_RC(cmesh_ctx_check(c), -ECANCELED);
	TU_ASSERT_RC(cmesh_ctx_wait(c), -ECANCELED);
	cmesh_ctx_free(c);
}

/*
 * mesh's chain_cancel: 20 contexts, each a clone of, a child of, or a
 * cancellable child of the one before; cancelling the first ends all,
 * and a waiter on the last wakes. Handles freed in creation order first:
 * the tree keeps what the last one needs.
 */
Test(cancel, cancelling_the_root_of_a_chain_of_20_ends_every_link)
{
	cmesh_ctx *c[CHAIN];
	cmesh_cancel *k[CHAIN] = { 0 };
	cmesh_cancel *root;
	struct blocked b = { .fn = do_ctx_wait };

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c[0], &root), 0);
	for (int i = 1; i < CHAIN; i++) {
		if (i % 3 == 0)
			TU_ASSERT_RC(cmesh_ctx_clone(c[i - 1], &c[i]), 0);
		else if (i % 3 == 1)
			TU_ASSERT_RC(cmesh_ctx_with_deadline(
					     c[i - 1], CMESH_DEADLINE_NONE,
					     &c[i]),
				     0);
		else
			TU_ASSERT_RC(cmesh_ctx_with_cancel(c[i - 1], &c[i],
							   &k[i]),
				     0);
	}
	for (int i = 0; i < CHAIN - 1; i++) {
		TU_ASSERT_RC(cmesh_ctx_check(c[i]), 0);
		cmesh_ctx_free(c[i]);
	}
	b.ctx = c[CHAIN - 1];
	block(&b);
	cmesh_cancel_fire(root);
	TU_ASSERT_RC(unblock(&b), -ECANCELED);
	cmesh_ctx_free(c[CHAIN - 1]);
	for (int i = 0; i < CHAIN; i++)
		cmesh_cancel_free(k[i]);
	cmesh_cancel_free(root);
}

Test(cancel, cancelling_a_child_leaves_its_parent_and_siblings)
{
	cmesh_ctx *p, *a, *b;
	cmesh_cancel *kp, *ka, *kb;

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &p, &kp), 0);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(p, &a, &ka), 0);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(p, &b, &kb), 0);
	cmesh_cancel_fire(ka);
	TU_ASSERT_RC(cmesh_ctx_check(a), -ECANCELED);
	TU_ASSERT_RC(cmesh_ctx_check(p), 0);
	TU_ASSERT_RC(cmesh_ctx_check(b), 0);
	cmesh_cancel_fire(kp);
	TU_ASSERT_RC(cmesh_ctx_check(b), -ECANCELED);
	cmesh_cancel_free(ka);
	cmesh_cancel_free(kb);
	cmesh_cancel_free(kp);
	cmesh_ctx_free(a);
	cmesh_ctx_free(b);
	cmesh_ctx_free(p);
}

Test(cancel, a_child_of_an_ended_context_starts_ended)
{
	cmesh_ctx *p, *c, *t;
	cmesh_cancel *k, *kc;

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &p, &k), 0);
	cmesh_cancel_fire(k);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(p, &c, &kc), 0);
	TU_ASSERT_RC(cmesh_ctx_check(c), -ECANCELED);
	TU_ASSERT_RC(cmesh_ctx_with_timeout(p, TU_MS(1000), &t), 0);
	TU_ASSERT_RC(cmesh_ctx_wait(t), -ECANCELED);
	cmesh_ctx_free(t);
	cmesh_cancel_free(kc);
	cmesh_ctx_free(c);
	cmesh_cancel_free(k);
	cmesh_ctx_free(p);
}

/* mesh's chain_deadline: a 15 ms deadline seen 20 links down. */
Test(cancel, a_deadline_of_15_ms_reaches_the_end_of_a_chain_of_20)
{
	cmesh_ctx *c[CHAIN];
	int64_t t0 = tu_now_ns();

	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(15), &c[0]), 0);
	for (int i = 1; i < CHAIN; i++)
		TU_ASSERT_RC(cmesh_ctx_with_deadline(
				     c[i - 1], CMESH_DEADLINE_NONE, &c[i]),
			     0);
	cr_assert_eq(cmesh_ctx_deadline(c[CHAIN - 1]),
		     cmesh_ctx_deadline(c[0]));
	TU_ASSERT_RC(cmesh_ctx_wait(c[CHAIN - 1]), -ETIMEDOUT);
	cr_assert_geq(tu_now_ns() - t0, TU_MS(15));
	for (int i = 0; i < CHAIN; i++)
		TU_ASSERT_RC(cmesh_ctx_check(c[i]), -ETIMEDOUT);
	for (int i = 0; i < CHAIN; i++)
		cmesh_ctx_free(c[i]);
}

/* A child's deadline is the earlier of its own and its parent's. */
Test(cancel, a_child_keeps_the_earlier_deadline)
{
	cmesh_ctx *p, *early, *late;
	int64_t d = cmesh_deadline_after(TU_MS(5000));

	TU_ASSERT_RC(cmesh_ctx_with_deadline(NULL, d, &p), 0);
	TU_ASSERT_RC(cmesh_ctx_with_deadline(p, d - TU_MS(1000), &early), 0);
	TU_ASSERT_RC(cmesh_ctx_with_deadline(p, d + TU_MS(1000), &late), 0);
	cr_assert_eq(cmesh_ctx_deadline(early), d - TU_MS(1000));
	cr_assert_eq(cmesh_ctx_deadline(late), d);
	cmesh_ctx_free(early);
	cmesh_ctx_free(late);
	cmesh_ctx_free(p);
}

/* mesh's cancel_deadline: 0 ms and 100 ms. */
Test(cancel, deadlines_of_0_and_100_ms_end_with_etimedout)
{
	struct blocked b = { .fn = do_ctx_wait };
	cmesh_ctx *c;

	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, 0, &c), 0);
	TU_ASSERT_RC(cmesh_ctx_check(c), -ETIMEDOUT);
	TU_ASSERT_RC(cmesh_ctx_wait(c), -ETIMEDOUT);
	cmesh_ctx_free(c);
	check_deadline_ends(&b, 100);
}

Test(cancel, bad_arguments_are_einval)
{
	cmesh_ctx *c;
	cmesh_cancel *k;
	uint64_t key;

	TU_ASSERT_RC(cmesh_ctx_new(NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, NULL, &k), -EINVAL);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_ctx_with_deadline(NULL, 0, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, -1, &c), -EINVAL);
	TU_ASSERT_RC(cmesh_ctx_clone(NULL, &c), -EINVAL);
	TU_ASSERT_RC(cmesh_ctx_check(NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_ctx_wait(NULL), -EINVAL);
	cr_assert_eq(cmesh_ctx_deadline(NULL), CMESH_DEADLINE_NONE);
	TU_ASSERT_RC(cmesh_receiver_recv_ctx(NULL, NULL, &key, NULL, 0),
		     -EINVAL);
	TU_ASSERT_RC(cmesh_waitset_wait_ctx(NULL, NULL, &key), -EINVAL);
	TU_ASSERT_RC(cmesh_sender_flush_ctx(NULL, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_node_flush_ctx(NULL, NULL), -EINVAL);
	cmesh_ctx_free(NULL);
	cmesh_cancel_fire(NULL);
	cmesh_cancel_free(NULL);
}

/* ---- blocking calls in one process ------------------------------------ */

Test(cancel, a_receive_in_one_process_gives_up_on_cancel_and_deadline)
{
	struct blocked b = { .fn = do_recv };
	cmesh_sender *tx;

	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx, &b.rx), 0);
	check_cancel_wakes(&b);
	check_deadline_ends(&b, 20);
	/* The channel is unharmed: a message still comes through. */
	b.m.seq = 7;
	TU_ASSERT_RC(cmesh_sender_send(tx, &b.m, NULL, 0), 0);
	/* No context (b.ctx is NULL again): waits as recv does. */
	TU_ASSERT_RC(do_recv(&b), 0);
	cr_assert_eq(b.m.seq, 7);
	cmesh_sender_free(tx);
	cmesh_receiver_free(b.rx);
}

/* What is ready is taken even once the context has ended. */
Test(cancel, a_ready_message_is_taken_under_an_ended_context)
{
	struct seqmsg m = { 42 };
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_cancel *k;
	cmesh_ctx *c;

	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	cmesh_cancel_fire(k);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	m.seq = 0;
	TU_ASSERT_RC(cmesh_receiver_recv_ctx(rx, c, &m, NULL, 0), 0);
	cr_assert_eq(m.seq, 42);
	TU_ASSERT_RC(cmesh_receiver_recv_ctx(rx, c, &m, NULL, 0), -ECANCELED);
	cmesh_cancel_free(k);
	cmesh_ctx_free(c);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(cancel, a_oneshot_receive_gives_up_on_cancel_and_deadline)
{
	struct blocked b = { .fn = do_oneshot };
	cmesh_oneshot_sender *otx;

	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &b.orx), 0);
	check_cancel_wakes(&b);
	check_deadline_ends(&b, 20);
	b.m.seq = 9;
	TU_ASSERT_RC(cmesh_oneshot_send(otx, &b.m, NULL, 0), 0);
	TU_ASSERT_RC(do_oneshot(&b), 0);
	cr_assert_eq(b.m.seq, 9);
	cmesh_oneshot_receiver_free(b.orx);
}

Test(cancel, a_waitset_wait_gives_up_on_cancel_and_deadline)
{
	struct blocked b = { .fn = do_wait };
	struct seqmsg m = { 3 };
	cmesh_sender *tx;
	cmesh_receiver *rx;
	uint64_t key = 0;

	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&b.ws), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(b.ws, rx, 5), 0);
	check_cancel_wakes(&b);
	check_deadline_ends(&b, 20);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_waitset_wait_ctx(b.ws, NULL, &key), 0);
	cr_assert_eq(key, 5);
	cmesh_waitset_free(b.ws);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/* ---- blocking calls on a link ----------------------------------------- */

/*
 * Driver: its receiver (fed by the peer: a lane across processes) gives
 * up on cancel and deadline; then a receiver whose sender it sent to the
 * peer (a receiver fed by a lane, cross-process) does too; each then still
 * gets the peer's message.
 */
static void recv_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	struct blocked b = { .fn = do_recv, .rx = rx };
	struct txmsg t;
	cmesh_sender *tx2;
	cmesh_receiver *rx2;

	check_cancel_wakes(&b);
	check_deadline_ends(&b, 20);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx2, &rx2), 0);
	t.tx = tx2;
	TU_ASSERT_RC(cmesh_sender_send(tx, &t, NULL, 0), 0);
	b.rx = rx2;
	check_cancel_wakes(&b);
	check_deadline_ends(&b, 20);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	TU_ASSERT_RC(do_recv(&b), 0);
	cr_assert_eq(b.m.seq, 11);
	b.rx = rx;
	TU_ASSERT_RC(do_recv(&b), 0);
	cr_assert_eq(b.m.seq, 10);
	cmesh_receiver_free(rx2);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int recv_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	struct txmsg t;
	struct seqmsg m;

	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &t,
						   NULL, 0),
		      0);
	TOPO_CHECK(t.tx != NULL);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	m.seq = 11;
	TOPO_CHECK_EQ(cmesh_sender_send(t.tx, &m, NULL, 0), 0);
	cmesh_sender_free(t.tx);
	m.seq = 10;
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario recv_sc = {
	.down = &tx_type,
	.up = &seq_type,
	.driver = recv_driver,
	.peer = recv_peer,
};

Test(cancel, receives_fed_by_another_thread_give_up_on_cancel_and_deadline)
{
	topo_run(&recv_sc, TOPO_THREAD);
}

Test(cancel, receives_fed_by_a_link_give_up_on_cancel_and_deadline)
{
	topo_run(&recv_sc, TOPO_FORK);
}

/*
 * Driver: fills the ring and a backlog while the peer reads nothing; a
 * flush gives up on cancel and deadline; the peer then drains it all and
 * a flush without a context returns 0.
 */
#define FLUSH_N 400u

static void flush_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct blocked b = { .fn = do_flush, .tx = tx };

	for (uint64_t i = 0; i < FLUSH_N; i++) {
		struct seqmsg m = { i };

		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	check_cancel_wakes(&b);
	check_deadline_ends(&b, 20);
	TU_ASSERT_RC(topo_post(s->sync, 'g'), 0);
	TU_ASSERT_RC(do_flush(&b), 0);
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 'd');
	TU_ASSERT_RC(topo_post(s->sync, 'q'), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int flush_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	struct seqmsg m;

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	for (uint64_t i = 0; i < FLUSH_N; i++) {
		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &m, NULL, 0),
			      0);
		TOPO_CHECK_EQ(m.seq, i);
	}
	TOPO_CHECK_EQ(topo_post(s->sync, 'd'), 0);
	/* The receiver stays until the driver's flush has returned. */
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'q');
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario flush_sc = {
	.down = &seq_type,
	.up = &seq_type,
	.ring_size = 4096,
	.driver = flush_driver,
	.peer = flush_peer,
};

Test(cancel, a_flush_behind_a_stalled_peer_gives_up_on_cancel_and_deadline)
{
	topo_run(&flush_sc, TOPO_FORK);
}

/* ---- contexts as waitset members ---------------------------------------- */

static int do_wait_key(struct blocked *b)
{
	uint64_t key = 0;
	int r = cmesh_waitset_wait(b->ws, topo_deadline(), &key);

	return r ? r : (int)key;
}

Test(cancel, a_context_in_a_waitset_wakes_it_when_cancelled)
{
	struct blocked b = { .fn = do_wait_key };
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_cancel *k;
	cmesh_ctx *c, *t;
	uint64_t key = 0;
	int64_t t0;

	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&b.ws), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(b.ws, rx, 1), 0);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &c, &k), 0);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(b.ws, c, 2), 0);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(b.ws, c, 3), -EBUSY);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(NULL, c, 1), -EINVAL);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(b.ws, NULL, 1), -EINVAL);
	TU_ASSERT_RC(cmesh_waitset_remove_ctx(b.ws, NULL), -EINVAL);
	cr_assert_eq(cmesh_waitset_size(b.ws), 2);
	TU_ASSERT_RC(cmesh_waitset_try_wait(b.ws, &key), -EAGAIN);
	block(&b);
	cmesh_cancel_fire(k);
	TU_ASSERT_RC(unblock(&b), 2);
	/* It stays ready until removed. */
	TU_ASSERT_RC(cmesh_waitset_try_wait(b.ws, &key), 0);
	cr_assert_eq(key, 2);
	TU_ASSERT_RC(cmesh_waitset_remove_ctx(b.ws, c), 0);
	TU_ASSERT_RC(cmesh_waitset_remove_ctx(b.ws, c), -ENOENT);
	TU_ASSERT_RC(cmesh_waitset_try_wait(b.ws, &key), -EAGAIN);
	cmesh_ctx_free(c);
	cmesh_cancel_free(k);

	/*
	 * A context member's deadline wakes a wait that has none. t0 before
	 * the context: its deadline is 30 ms from its making, and a loaded
	 * machine may take a while to get from there to the wait.
	 */
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(30), &t), 0);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(b.ws, t, 4), 0);
	cmesh_ctx_free(t); /* the waitset keeps its own handle */
	TU_ASSERT_RC(cmesh_waitset_wait(b.ws, CMESH_DEADLINE_NONE, &key), 0);
	cr_assert_eq(key, 4);
	cr_assert_geq(tu_now_ns() - t0, TU_MS(25));
	/* Freed with the waitset, still a member: nothing leaks. */
	cmesh_waitset_free(b.ws);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/*
 * A context member's deadline makes the waitset's fd readable (its
 * timerfd), so a poll loop on that fd needs no timeout of its own: two
 * members (200 and 400 ms, the later one added first) each make it
 * readable as their deadline passes, and try_wait then returns their
 * keys; a member without a deadline makes no timer and is never
 * returned; with both removed nothing is readable; the timerfd goes with
 * the waitset.
 */
Test(cancel, a_context_members_deadline_makes_the_waitsets_fd_readable)
{
	cmesh_waitset *ws;
	cmesh_ctx *c[2], *none;
	cmesh_cancel *k;
	uint64_t key;
	unsigned seen = 0;
	int fds0 = tu_fd_count(), fds1;
	struct pollfd p;

	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	fds1 = tu_fd_count();
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &none, &k), 0);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, none, 9), 0);
	TU_ASSERT_FDS(fds1); /* no deadline: no timer */
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(400), &c[1]), 0);
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(200), &c[0]), 0);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, c[1], 1), 0);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, c[0], 0), 0);
	TU_ASSERT_FDS(fds1 + 1); /* its timerfd */
	p = (struct pollfd){ .fd = cmesh_waitset_fd(ws), .events = POLLIN };
	while (seen != 3u) {
		int r;

		/* What is ready now (a slow host: maybe a deadline already). */
		while ((r = cmesh_waitset_try_wait(ws, &key)) == 0) {
			cr_assert(key < 2, "key %llu", (unsigned long long)key);
			/* Its deadline passed: no early report. */
			TU_ASSERT_RC(cmesh_ctx_check(c[key]), -ETIMEDOUT);
			TU_ASSERT_RC(cmesh_waitset_remove_ctx(ws, c[key]), 0);
			seen |= 1u << key;
		}
		TU_ASSERT_RC(r, -EAGAIN);
		if (seen == 3u)
			break;
		/* Without the timer this waits the whole 10 s and fails. */
		r = poll(&p, 1, 10000);
		cr_assert_eq(r, 1, "poll: %d (seen %u)", r, seen);
	}
	/* Nothing ready, nothing armed: not readable. */
	cr_assert_eq(poll(&p, 1, 100), 0);
	TU_ASSERT_RC(cmesh_waitset_remove_ctx(ws, none), 0);
	cmesh_waitset_free(ws);
	TU_ASSERT_FDS(fds0);
	cmesh_ctx_free(c[0]);
	cmesh_ctx_free(c[1]);
	cmesh_ctx_free(none);
	cmesh_cancel_free(k);
}

/*
 * A deadline that passed stays readable on the fd until a look takes it,
 * whatever else happens meanwhile: another member removed (with a
 * deadline of its own, or none) must not re-arm the timer over the
 * expiry not read yet.
 */
Test(cancel, a_passed_deadline_stays_readable_when_another_member_goes)
{
	for (int with_deadline = 0; with_deadline < 2; with_deadline++) {
		cmesh_waitset *ws;
		cmesh_ctx *a, *b;
		cmesh_cancel *k = NULL;
		struct pollfd p;
		uint64_t key = 9;

		TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
		TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(50), &a), 0);
		if (with_deadline)
			TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(60000),
							    &b),
				     0);
		else
			TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &b, &k), 0);
		TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, a, 1), 0);
		TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, b, 2), 0);
		p = (struct pollfd){ .fd = cmesh_waitset_fd(ws),
				     .events = POLLIN };
		/* A slow host: a's deadline may pass before this look. */
		if (cmesh_waitset_try_wait(ws, &key) == -EAGAIN) {
			cr_assert_eq(poll(&p, 1, 10000), 1); /* a's deadline */
			TU_ASSERT_RC(cmesh_waitset_remove_ctx(ws, b), 0);
			/* Still readable: the expiry is not read yet. */
			cr_assert_eq(poll(&p, 1, 0), 1, "with_deadline %d",
				     with_deadline);
		} else {
			cr_assert_eq(key, 1);
			TU_ASSERT_RC(cmesh_waitset_remove_ctx(ws, b), 0);
		}
		TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), 0);
		cr_assert_eq(key, 1);
		cmesh_waitset_free(ws);
		cmesh_ctx_free(a);
		cmesh_ctx_free(b);
		cmesh_cancel_free(k);
	}
}

/*
 * Without an fd for its timer, a member with a deadline is refused
 * (-EMFILE) and not added; one without a deadline needs none.
 */
Test(cancel, a_deadline_member_without_an_fd_for_its_timer_is_refused)
{
	cmesh_waitset *ws;
	cmesh_ctx *t, *none;
	cmesh_cancel *k;
	struct rlimit old;
	uint64_t key;
	int fds0 = tu_fd_count(), fds;

	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &none, &k), 0);
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(50), &t), 0);
	fds = tu_fd_count();
	tu_fd_table_full(&old);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, t, 1), -EMFILE);
	TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, none, 2), 0);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_assert_eq(tu_fd_count(), fds);
	cr_assert_eq(cmesh_waitset_size(ws), 1);
	TU_ASSERT_RC(cmesh_waitset_remove_ctx(ws, t), -ENOENT);
	/* With fds back it goes in, and is returned once its time came. */
	TU_ASSERT_RC(cmesh_waitset_add_ctx(ws, t, 1), 0);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, CMESH_DEADLINE_NONE, &key), 0);
	cr_assert_eq(key, 1);
	cmesh_waitset_free(ws);
	TU_ASSERT_FDS(fds0); /* its timerfd went with it */
	cmesh_ctx_free(t);
	cmesh_ctx_free(none);
	cmesh_cancel_free(k);
}

/* ---- fork ---------------------------------------------------------------- */

static _Atomic bool churn_stop;

/* Makes and frees children of `arg` until told to stop. */
static void *make_children(void *arg)
{
	const cmesh_ctx *root = arg;

	while (!atomic_load(&churn_stop)) {
		cmesh_ctx *c;
		cmesh_cancel *k;

		if (!cmesh_ctx_with_cancel(root, &c, &k)) {
			cmesh_cancel_free(k);
			cmesh_ctx_free(c);
		}
	}
	return NULL;
}

/*
 * A fork while other threads make and free children under the contexts'
 * lock: the child makes a child context of its own (taking that lock)
 * and exits, every time (it hung within a few forks while the lock could
 * be held across one).
 */
Test(cancel, a_child_of_fork_takes_the_contexts_lock, .timeout = 60)
{
	cmesh_ctx *root;
	cmesh_cancel *rk;
	pthread_t t[2];
	int forks = tu_stress(200, 50);

	TU_ASSERT_RC(cmesh_ctx_with_cancel(NULL, &root, &rk), 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, make_children, root),
			     0);
	for (int i = 0; i < forks; i++) {
		pid_t p = fork();
		int st;

		cr_assert_geq(p, 0);
		if (p == 0) {
			cmesh_ctx *c;
			cmesh_cancel *k;

			alarm(5);
			if (cmesh_ctx_with_cancel(root, &c, &k))
				_exit(1);
			cmesh_cancel_fire(k);
			cmesh_cancel_free(k);
			cmesh_ctx_free(c);
			_exit(0);
		}
		cr_assert_eq(waitpid(p, &st, 0), p);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
			  "fork %d: child status %#x (hung: SIGALRM)", i, st);
	}
	atomic_store(&churn_stop, true);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_join(t[i], NULL), 0);
	cmesh_cancel_free(rk);
	cmesh_ctx_free(root);
}
