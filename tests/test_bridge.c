/* SPDX-License-Identifier: MIT */
/*
 * test_bridge.c - chains of forwarders (cmesh_bridge(), bridge.c) across
 * processes: a stream's receiver handed back and forth between two
 * processes, each holder reading a few messages and then (half the time)
 * bridging it into a new channel whose receiver goes on instead, while a thread streams
 * sequence-numbered messages and then frees its sender. Every message
 * arrives once, in order, through a chain of forwarders in both
 * processes, and then the end: each forwarder's receiver reaches a state
 * in which only its readiness (no message, no lane, no sender: a receive
 * says -EPIPE) can tell its forwarder to end and close the next channel.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

TestSuite(bridge, .init = tu_suite_init, .fini = tu_suite_fini);

#define ITEMS 20000u

struct item {
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(item_type, struct item);

struct hop {
	uint64_t next; /* the seq the holder reads next (from 1) */
	int64_t last;  /* the last receive's result (-EPIPE: the end) */
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(hop_type, struct hop,
		  CMESH_FIELD_RECEIVER(struct hop, rx, item_type));

struct streamer {
	cmesh_sender *tx;
	uint64_t items;
	int rc;
};

static void *stream(void *arg)
{
	struct streamer *a = arg;

	for (uint64_t i = 1; i <= a->items && !a->rc; i++) {
		a->rc = cmesh_sender_send(a->tx, &(struct item){ i }, NULL, 0);
		/* Paced: the chain grows while the stream still runs. */
		if (i % 16 == 0)
			usleep(100);
	}
	cmesh_sender_free(a->tx);
	return NULL;
}

/* Takes the next item back out and puts it first on `tx` (unless the end came). */
static int hold_one(struct hop *h, cmesh_sender *tx)
{
	struct item it;

	h->last = cmesh_receiver_recv_deadline(
		h->rx, cmesh_clock_now() + TU_MS(2000), &it, NULL, 0);
	if (h->last == -EPIPE) {
		h->last = 0; /* rx tells the next holder */
		return 0;
	}
	if (h->last)
		return (int)h->last;
	if (it.seq != h->next)
		return -EIO;
	return cmesh_sender_send(tx, &it, NULL, 0); /* read again there */
}

/*
 * One holder's turn: up to `n` receives (each within 2 s, in order), then,
 * unless the end came, half the time a forwarder from the receiver into a
 * new channel whose receiver goes on in the hop. 0, or the failure.
 */
static int turn(struct hop *h, unsigned *seed)
{
	unsigned n = 1 + (unsigned)rand_r(seed) % 40;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int e;

	for (unsigned k = 0; k < n && h->last == 0; k++) {
		struct item it;

		h->last = cmesh_receiver_recv_deadline(
			h->rx, cmesh_clock_now() + TU_MS(2000), &it, NULL, 0);
		if (h->last == 0 && it.seq != h->next)
			return -EIO;
		if (h->last == 0)
			h->next++;
	}
	/* Half the time it goes on itself (it may come home so). */
	if (h->last || rand_r(seed) % 2)
		return 0;
	e = cmesh_channel_new(&item_type, NULL, &tx, &rx);
	if (e)
		return e;
	/*
	 * As a pipe reader cut mid-chunk once did: the item in hand goes
	 * first on the new channel, the forwarder's come after it.
	 */
	e = hold_one(h, tx);
	if (!e && !h->last)
		e = cmesh_bridge(h->rx, tx);
	else if (!e)
		cmesh_sender_free(tx); /* the end: rx says so after the item */
	if (e) {
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
		return e;
	}
	h->rx = rx;
	return 0;
}

static int chain_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	unsigned seed = 11;
	struct hop h;
	int e;

	(void)s;
	while (!(e = cmesh_receiver_recv_deadline(rx, topo_deadline(), &h, NULL,
						  0))) {
		TOPO_CHECK_EQ(turn(&h, &seed), 0);
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &h, NULL, 0), 0);
	}
	TOPO_CHECK_EQ(e, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void chain_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct streamer a = { .items = tu_stress(ITEMS, 2000) };
	struct hop h = { .next = 1 };
	unsigned seed = 5;
	pthread_t t;

	(void)s;
	TU_ASSERT_RC(cmesh_channel_new(&item_type, NULL, &a.tx, &h.rx), 0);
	tu_thread_start(&t, stream, &a);
	while (h.last == 0) {
		TU_ASSERT_RC(cmesh_sender_send(tx, &h, NULL, 0), 0);
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							  &h, NULL, 0),
			     0);
		if (h.last == 0)
			TU_ASSERT_RC(turn(&h, &seed), 0);
	}
	tu_thread_join(t);
	cr_assert_eq(a.rc, 0);
	cr_assert_eq(h.last, -EPIPE, "the last receive said %lld at seq %llu",
		     (long long)h.last, (unsigned long long)h.next);
	cr_assert_eq(h.next, a.items + 1);
	cmesh_receiver_free(h.rx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario chain_sc = {
	.down = &hop_type,
	.up = &hop_type,
	.driver = chain_driver,
	.peer = chain_peer,
};

Test(bridge, a_receiver_bridged_on_at_every_hop_across_processes_sees_the_end)
{
	topo_run(&chain_sc, TOPO_FORK);
}

Test(bridge, a_receiver_bridged_on_at_every_hop_in_process_sees_the_end)
{
	topo_run(&chain_sc, TOPO_THREAD);
}

/*
 * A bridge whose far channel's backlog is full holds back instead of
 * failing both sides: the far reader sleeps while the near sender sends
 * until its own backlog says -ENOBUFS (the bound reaches the sender the
 * bridge feeds from), then reads every message taken, once, in order,
 * with its trail, and then the end.
 */
#define HELD_TRAIL 1000
#define HELD_NEAR_BACKLOG (256u << 10)

static uint32_t held_seed(uint64_t seq)
{
	return (uint32_t)(seq * 2654435761u) ^ 0x5eed;
}

static int held_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	static unsigned char buf[HELD_TRAIL];
	struct item it;
	uint64_t n = 0;
	char go;
	int r;

	TOPO_CHECK_EQ(read(s->sync, &go, 1), 1); /* the sends are done */
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &it, buf,
						 sizeof(buf))) >= 0) {
		TOPO_CHECK_EQ(it.seq, n);
		TOPO_CHECK_EQ(r, HELD_TRAIL);
		TOPO_CHECK_EQ(tu_check(buf, HELD_TRAIL, held_seed(n)),
			      HELD_TRAIL);
		n++;
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &(struct item){ n }, NULL, 0), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void held_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	static unsigned char buf[HELD_TRAIL];
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *ntx;
	cmesh_receiver *nrx;
	struct item it;
	uint64_t k = 0;
	int r;

	o.max_backlog = HELD_NEAR_BACKLOG;
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, &ntx, &nrx), 0);
	TU_ASSERT_RC(cmesh_bridge(nrx, tx), 0);
	for (; k < 100000; k++) {
		tu_fill(buf, HELD_TRAIL, held_seed(k));
		r = cmesh_sender_send(ntx, &(struct item){ k }, buf,
				      HELD_TRAIL);
		if (r)
			break;
	}
	cr_assert_eq(r, -ENOBUFS, "send %llu said %d", (unsigned long long)k,
		     r);
	/* Both hops' bounds filled: the near one, and the far sender's. */
	cr_assert_gt(k * HELD_TRAIL, HELD_NEAR_BACKLOG + (64u << 10));
	cr_assert_eq(write(s->sync, "g", 1), 1);
	cmesh_sender_free(ntx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &it,
						  NULL, 0),
		     0);
	cr_assert_eq(it.seq, k, "the reader took %llu of %llu",
		     (unsigned long long)it.seq, (unsigned long long)k);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario held_sc = {
	.down = &item_type,
	.up = &item_type,
	.max_backlog = 64u << 10,
	.driver = held_driver,
	.peer = held_peer,
};

Test(bridge, a_full_far_backlog_holds_the_bridge_back_across_processes)
{
	topo_run(&held_sc, TOPO_FORK);
}

Test(bridge, a_full_far_backlog_holds_the_bridge_back_in_process)
{
	topo_run(&held_sc, TOPO_THREAD);
}
