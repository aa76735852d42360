/* SPDX-License-Identifier: MIT */
/*
 * test_tbuf.c - trailing bytes larger than a slot's inline space, in one
 * process: they travel in a heap buffer that the receiver hands back to
 * its queue (`spare`, queue_int.h) for the next such send. The buffer
 * cycles (internals: the spare's address), one over TBUF_KEEP is not
 * kept, a smaller spare is replaced, and bytes and order hold with four
 * senders racing for the spare. ASan's leak check covers the frees: the
 * spare of a freed channel, and buffers unread when the receiver goes.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "endpoint.h"
#include "queue_int.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

TestSuite(tbuf, .init = tu_suite_init, .fini = tu_suite_fini);

struct item {
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(item_type, struct item);

static struct cmesh__queue *queue_of(cmesh_receiver *rx)
{
	return ((struct cmesh_receiver *)(void *)rx)->q;
}

static void *spare_of(cmesh_receiver *rx)
{
	return atomic_load(&queue_of(rx)->spare);
}

/* Sends `len` bytes of seed `seed` and takes them back, checked. */
static void round_trip(cmesh_sender *tx, cmesh_receiver *rx, size_t len,
		       uint32_t seed)
{
	unsigned char *buf = malloc(len);
	struct item it;

	cr_assert_not_null(buf);
	tu_fill(buf, len, seed);
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct item){ seed }, buf, len),
		     0);
	memset(buf, 0, len);
	cr_assert_eq(cmesh_receiver_try_recv(rx, &it, buf, len), (int)len);
	cr_assert_eq(it.seq, seed);
	cr_assert_eq(tu_check(buf, len, seed), len);
	free(buf);
}

Test(tbuf, a_large_trails_buffer_comes_back_for_the_next_send)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	unsigned char buf[4096];
	void *first;

	TU_ASSERT_RC(cmesh_channel_new(&item_type, NULL, &tx, &rx), 0);
	cr_assert_lt(queue_of(rx)->inline_cap, sizeof(buf));
	cr_assert_null(spare_of(rx));
	round_trip(tx, rx, sizeof(buf), 1);
	first = spare_of(rx);
	cr_assert_not_null(first, "the received buffer was not kept");
	/* The send takes it: nothing is allocated. */
	tu_fill(buf, sizeof(buf), 2);
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct item){ 2 }, buf, 3000), 0);
	cr_assert_null(spare_of(rx));
	struct item it;
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(cmesh_receiver_try_recv(rx, &it, buf, sizeof(buf)), 3000);
	cr_assert_eq(tu_check(buf, 3000, 2), 3000);
	cr_assert_eq(spare_of(rx), first, "another buffer came back");
	/* A trail the inline space holds leaves it where it is. */
	round_trip(tx, rx, 8, 3);
	cr_assert_eq(spare_of(rx), first);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(tbuf, a_larger_trail_replaces_the_spare_and_one_over_the_bound_is_not_kept)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	void *big;

	TU_ASSERT_RC(cmesh_channel_new(&item_type, NULL, &tx, &rx), 0);
	round_trip(tx, rx, 1000, 1);
	cr_assert_not_null(spare_of(rx));
	/* Too small for 40 KiB: freed, and the new one is kept instead. */
	round_trip(tx, rx, 40u << 10, 2);
	big = spare_of(rx);
	cr_assert_not_null(big);
	/* ... and takes anything up to its size. */
	round_trip(tx, rx, 5000, 3);
	cr_assert_eq(spare_of(rx), big);
	round_trip(tx, rx, 40u << 10, 4);
	cr_assert_eq(spare_of(rx), big);
	/* Over TBUF_KEEP: the spare went into it, and neither is kept. */
	round_trip(tx, rx, TBUF_KEEP + 1, 5);
	cr_assert_null(spare_of(rx));
	/* Still a working channel. */
	round_trip(tx, rx, 2000, 6);
	cr_assert_not_null(spare_of(rx));
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(tbuf, large_trails_unread_or_overflowed_are_freed_with_the_receiver)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	unsigned char buf[6000];
	cmesh_sender *tx;
	cmesh_receiver *rx;

	o.ring_size = 4096; /* a few slots: the rest overflows */
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, &tx, &rx), 0);
	round_trip(tx, rx, sizeof(buf), 1); /* a spare, too */
	for (uint32_t i = 0; i < 200; i++) {
		tu_fill(buf, sizeof(buf), i);
		TU_ASSERT_RC(cmesh_sender_send(tx, &(struct item){ i }, buf,
					       1000 + i * 20),
			     0);
	}
	/* Some taken, the rest left in ring and list (ASan: no leak). */
	for (uint32_t i = 0; i < 50; i++) {
		struct item it;

		cr_assert_eq(cmesh_receiver_try_recv(rx, &it, buf, sizeof(buf)),
			     (int)(1000 + i * 20));
		cr_assert_eq(it.seq, i);
		cr_assert_eq(tu_check(buf, 1000 + i * 20, i), 1000 + i * 20);
	}
	cmesh_receiver_free(rx);
	/* A send after the receiver went returns its buffer too. */
	cr_assert_eq(cmesh_sender_send(tx, &(struct item){ 0 }, buf, 5000),
		     -EPIPE);
	cmesh_sender_free(tx);
}

/*
 * try_send with a large trail on a full ring: -EAGAIN, nothing queued, and
 * the buffer it had taken goes back to the queue (the next send takes it).
 */
Test(tbuf, a_refused_try_send_gives_its_buffer_back)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	unsigned char buf[5000];
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct item it;
	uint32_t n = 0;
	int r;

	o.ring_size = 4096;
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, &tx, &rx), 0);
	for (;; n++) {
		tu_fill(buf, sizeof(buf), n);
		r = cmesh_sender_try_send(tx, &(struct item){ n }, buf,
					  sizeof(buf));
		if (r)
			break;
		cr_assert_lt(n, 10000u, "the ring never filled");
	}
	cr_assert_eq(r, -EAGAIN);
	cr_assert_gt(n, 0u);
	/* The refused send's buffer, kept for the next one. */
	cr_assert_not_null(spare_of(rx));
	for (uint32_t i = 0; i < n; i++) {
		memset(buf, 0, sizeof(buf));
		cr_assert_eq(cmesh_receiver_try_recv(rx, &it, buf, sizeof(buf)),
			     (int)sizeof(buf));
		cr_assert_eq(it.seq, i);
		cr_assert_eq(tu_check(buf, sizeof(buf), i), sizeof(buf));
	}
	cr_assert_eq(cmesh_receiver_try_recv(rx, &it, buf, sizeof(buf)),
		     -EAGAIN, "the refused message was queued");
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/* Four senders racing for the spare, sizes across inline, kept and not. */
#define SENDERS 4
#define PER_SENDER 3000u

struct racer {
	cmesh_sender *tx;
	uint32_t id;
	int rc;
};

static size_t racer_len(uint32_t id, uint32_t i)
{
	static const size_t sizes[] = { 16, 300, 4096, 9000, 65536, 70000 };

	return sizes[(id + i * 7) % 6];
}

static uint32_t racer_seed(uint32_t id, uint32_t i)
{
	return id << 24 | i;
}

static void *race(void *arg)
{
	struct racer *r = arg;
	unsigned char *buf = malloc(70000);

	if (!buf) {
		r->rc = -ENOMEM;
		return NULL;
	}
	for (uint32_t i = 0; i < PER_SENDER && !r->rc; i++) {
		size_t len = racer_len(r->id, i);

		tu_fill(buf, len, racer_seed(r->id, i));
		/* Past the backlog's bound (the receiver is behind): again. */
		while ((r->rc = cmesh_sender_send(
				r->tx, &(struct item){ racer_seed(r->id, i) },
				buf, len)) == -ENOBUFS)
			sched_yield();
	}
	free(buf);
	cmesh_sender_free(r->tx);
	return NULL;
}

Test(tbuf, four_senders_racing_for_the_spare_keep_bytes_and_order)
{
	struct racer rs[SENDERS];
	pthread_t t[SENDERS];
	uint32_t next[SENDERS] = { 0 };
	unsigned char *buf = malloc(70000);
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct item it;
	int r;

	cr_assert_not_null(buf);
	TU_ASSERT_RC(cmesh_channel_new(&item_type, NULL, &tx, &rx), 0);
	for (uint32_t k = 0; k < SENDERS; k++) {
		rs[k] = (struct racer){ .id = k };
		TU_ASSERT_RC(cmesh_sender_clone(tx, &rs[k].tx), 0);
		tu_thread_start(&t[k], race, &rs[k]);
	}
	cmesh_sender_free(tx);
	while ((r = cmesh_receiver_recv_deadline(
			rx, cmesh_clock_now() + TU_MS(10000), &it, buf,
			70000)) >= 0) {
		uint32_t id = (uint32_t)(it.seq >> 24), i = it.seq & 0xffffff;

		cr_assert_lt(id, SENDERS);
		cr_assert_eq(i, next[id], "sender %u: %u after %u", id, i,
			     next[id]);
		cr_assert_eq((size_t)r, racer_len(id, i));
		cr_assert_eq(tu_check(buf, (size_t)r, (uint32_t)it.seq),
			     (size_t)r, "sender %u message %u torn", id, i);
		next[id]++;
	}
	cr_assert_eq(r, -EPIPE);
	for (uint32_t k = 0; k < SENDERS; k++) {
		tu_thread_join(t[k]);
		cr_assert_eq(rs[k].rc, 0, "sender %u: %d", k, rs[k].rc);
		cr_assert_eq(next[k], PER_SENDER);
	}
	cmesh_receiver_free(rx);
	free(buf);
}
