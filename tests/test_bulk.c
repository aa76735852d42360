/* SPDX-License-Identifier: MIT */
/*
 * test_bulk.c - messages too large for a ring record, at default
 * settings: across processes the first goes out of line and brings the
 * lane's bulk arena, the next ones go through it (src/lane_bulk.c); when
 * it is full they go out of line again. Every byte arrives, in order,
 * in one process and across two; a receive with too small a buffer
 * leaves a bulk message where it was.
 */
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(bulk, .init = tu_suite_init, .fini = tu_suite_fini);

struct big {
	uint64_t seq;
	uint64_t len;
};
CMESH_TYPE_DEFINE_PLAIN(big_type, struct big);

#define KIB 1024u
#define MIB (1024u * 1024u)
#define MAX_LEN (3u * MIB)

/* The peer's buffer: one message of the largest size. */
static unsigned char *peer_buf(void)
{
	return malloc(MAX_LEN);
}

/* Does this process map a bulk arena (its memfd's name)? */
static bool maps_bulk_arena(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "memfd:cmesh-bulk") != NULL;
	fclose(f);
	return found;
}

/* Sends message `seq` of `len` bytes, its bytes from seed `seq`. */
static void send_big(cmesh_sender *tx, unsigned char *buf, uint64_t seq,
		     uint32_t len)
{
	struct big m = { seq, len };

	tu_fill(buf, len, (uint32_t)seq);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, buf, len), 0);
}

/* Peer side: receives message `seq`; 0 if it is whole, else 1. */
static int recv_big(cmesh_receiver *rx, unsigned char *buf, uint64_t seq)
{
	struct big m;
	int r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, buf,
					     MAX_LEN);

	TOPO_CHECK_EQ(m.seq, seq);
	TOPO_CHECK_EQ(r, (int)m.len);
	TOPO_CHECK_EQ(tu_check(buf, m.len, (uint32_t)seq), m.len);
	return 0;
}

/* ---- a stream of sizes around every bound ---- */

static const uint32_t sizes[] = {
	64 * KIB, 100,	   1 * MIB,	 70000,	      64 * KIB, 2 * MIB,
	3 * MIB,  8 * KIB, 64 * KIB + 1, 1 * MIB + 7, 64 * KIB,
};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define ROUNDS 4

static void sizes_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	unsigned char *buf = malloc(MAX_LEN);
	struct big ack;

	cr_assert_not_null(buf);
	for (uint64_t i = 0; i < ROUNDS * NSIZES; i++)
		send_big(tx, buf, i, sizes[i % NSIZES]);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &ack,
						  NULL, 0),
		     0);
	cr_assert_eq(ack.seq, ROUNDS * NSIZES);
	/* Across processes the peer mapped our arena: bulk was used. */
	cr_assert_eq(ack.len, s->cross ? 1u : 0u, "bulk arena mapped: %llu",
		     (unsigned long long)ack.len);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int sizes_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	unsigned char *buf = peer_buf();
	struct big ack = { ROUNDS * NSIZES, 0 };

	(void)s;
	TOPO_CHECK(buf != NULL);
	for (uint64_t i = 0; i < ROUNDS * NSIZES; i++)
		if (recv_big(rx, buf, i))
			return 1;
	ack.len = maps_bulk_arena();
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &ack, NULL, 0), 0);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario sizes_sc = {
	.down = &big_type,
	.up = &big_type,
	.driver = sizes_driver,
	.peer = sizes_peer,
};

Test(bulk, large_messages_of_every_size_arrive_whole_in_process)
{
	topo_run(&sizes_sc, TOPO_THREAD);
}

Test(bulk, large_messages_of_every_size_arrive_whole_cross_process)
{
	topo_run(&sizes_sc, TOPO_FORK);
}

/* ---- more than the arena holds, unread: out of line, in order ---- */

#define FLOOD 150 /* x 64 KiB: past the arena's 4 MiB and 64 in flight */

static void flood_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	unsigned char *buf = malloc(64 * KIB);
	struct big ack;

	cr_assert_not_null(buf);
	for (uint64_t i = 0; i < FLOOD; i++)
		send_big(tx, buf, i, 64 * KIB);
	TU_ASSERT_RC(topo_post(s->sync, 'r'), 0); /* now read them */
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &ack,
						  NULL, 0),
		     0);
	cr_assert_eq(ack.seq, FLOOD);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int flood_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	unsigned char *buf = peer_buf();
	struct big ack = { FLOOD, 0 };

	TOPO_CHECK(buf != NULL);
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'r');
	for (uint64_t i = 0; i < FLOOD; i++)
		if (recv_big(rx, buf, i))
			return 1;
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &ack, NULL, 0), 0);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario flood_sc = {
	.down = &big_type,
	.up = &big_type,
	.driver = flood_driver,
	.peer = flood_peer,
};

Test(bulk, more_than_the_arena_holds_unread_arrives_in_order_in_process)
{
	topo_run(&flood_sc, TOPO_THREAD);
}

Test(bulk, more_than_the_arena_holds_unread_arrives_in_order_cross_process)
{
	topo_run(&flood_sc, TOPO_FORK);
}

/* ---- too small a buffer leaves a bulk message in place ---- */

static void small_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	unsigned char *buf = malloc(64 * KIB);

	(void)s;
	cr_assert_not_null(buf);
	/* The first brings the arena, the second goes through it. */
	for (uint64_t i = 0; i < 3; i++)
		send_big(tx, buf, i, 64 * KIB);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int small_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	unsigned char *buf = peer_buf();
	unsigned char small[100];
	struct big m;

	(void)s;
	TOPO_CHECK(buf != NULL);
	TOPO_CHECK_EQ(recv_big(rx, buf, 0), 0);
	for (uint64_t i = 1; i < 3; i++) {
		int r;

		while ((r = cmesh_receiver_try_peek(rx)) == -EAGAIN)
			tu_sleep_ms(1);
		TOPO_CHECK_EQ(r, 64 * KIB);
		TOPO_CHECK_EQ(cmesh_receiver_try_recv(rx, &m, small,
						      sizeof(small)),
			      -EMSGSIZE);
		TOPO_CHECK_EQ(cmesh_receiver_try_peek(rx), 64 * KIB);
		TOPO_CHECK_EQ(recv_big(rx, buf, i), 0);
	}
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      -EPIPE);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario small_sc = {
	.down = &big_type,
	.up = &big_type,
	.driver = small_driver,
	.peer = small_peer,
};

Test(bulk, a_small_buffer_leaves_a_bulk_message_in_place_in_process)
{
	topo_run(&small_sc, TOPO_THREAD);
}

Test(bulk, a_small_buffer_leaves_a_bulk_message_in_place_cross_process)
{
	topo_run(&small_sc, TOPO_FORK);
}

/* ---- senders in several threads at once ---- */

#define THREADS 4
#define PER_THREAD 40

struct sender_job {
	cmesh_sender *tx;
	uint32_t id;
	int rc;
};

static uint32_t mt_seed(uint64_t seq)
{
	return (uint32_t)((seq >> 32) * 100003u + (seq & 0xffffffffu));
}

static void *mt_send(void *arg)
{
	struct sender_job *j = arg;
	unsigned char *buf = malloc(96 * KIB);

	j->rc = buf ? 0 : -ENOMEM;
	for (uint32_t i = 0; !j->rc && i < PER_THREAD; i++) {
		/* 64 KiB and up: every one over a 64 KiB ring's record. */
		uint32_t len = 64 * KIB + (i % 4) * 8 * KIB;
		struct big m = { (uint64_t)j->id << 32 | i, len };

		tu_fill(buf, len, mt_seed(m.seq));
		j->rc = cmesh_sender_send(j->tx, &m, buf, len);
	}
	free(buf);
	cmesh_sender_free(j->tx);
	return NULL;
}

static void mt_driver(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	struct sender_job jobs[THREADS];
	pthread_t t[THREADS];
	struct big ack;

	(void)s;
	for (uint32_t i = 0; i < THREADS; i++) {
		jobs[i] = (struct sender_job){ NULL, i, 0 };
		TU_ASSERT_RC(cmesh_sender_clone(tx, &jobs[i].tx), 0);
	}
	cmesh_sender_free(tx);
	for (uint32_t i = 0; i < THREADS; i++)
		tu_thread_start(&t[i], mt_send, &jobs[i]);
	for (uint32_t i = 0; i < THREADS; i++) {
		tu_thread_join(t[i]);
		TU_ASSERT_RC(jobs[i].rc, 0);
	}
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &ack,
						  NULL, 0),
		     0);
	cr_assert_eq(ack.seq, THREADS * PER_THREAD);
	cmesh_receiver_free(rx);
}

static int mt_peer(cmesh_sender *tx, cmesh_receiver *rx,
		   const struct topo_side *s)
{
	unsigned char *buf = peer_buf();
	uint64_t next[THREADS] = { 0 };
	struct big m, ack = { THREADS * PER_THREAD, 0 };

	(void)s;
	TOPO_CHECK(buf != NULL);
	for (uint32_t n = 0; n < THREADS * PER_THREAD; n++) {
		int r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						     buf, MAX_LEN);
		uint64_t id = m.seq >> 32;

		TOPO_CHECK_EQ(r, (int)m.len);
		TOPO_CHECK(id < THREADS);
		TOPO_CHECK_EQ(m.seq & 0xffffffffu, next[id]);
		TOPO_CHECK_EQ(tu_check(buf, m.len, mt_seed(m.seq)), m.len);
		next[id]++;
	}
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      -EPIPE);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &ack, NULL, 0), 0);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario mt_sc = {
	.down = &big_type,
	.up = &big_type,
	.driver = mt_driver,
	.peer = mt_peer,
};

Test(bulk, senders_in_four_threads_keep_their_order_and_bytes_in_process)
{
	topo_run(&mt_sc, TOPO_THREAD);
}

Test(bulk, senders_in_four_threads_keep_their_order_and_bytes_cross_process)
{
	topo_run(&mt_sc, TOPO_FORK);
}

/* ---- a reply port's lane, kept for reuse, after an unread large value */

struct val {
	int64_t v;
};
CMESH_TYPE_DEFINE_PLAIN(val_type, struct val);

struct req {
	int64_t n;
	cmesh_oneshot_sender *reply;
};
CMESH_TYPE_DEFINE(req_type, struct req,
		  CMESH_FIELD_ONESHOT_SENDER(struct req, reply, val_type));

/* Answers each request with a value carrying n bytes; n 0 ends. */
static int reply_peer(cmesh_sender *tx, cmesh_receiver *rx,
		      const struct topo_side *s)
{
	static unsigned char trail[64 * KIB];
	struct req q;

	(void)s;
	tu_fill(trail, sizeof(trail), 9);
	for (;;) {
		struct val v;

		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &q, NULL, 0),
			      0);
		if (q.n == 0)
			break;
		v.v = q.n;
		TOPO_CHECK_EQ(
			cmesh_oneshot_send(q.reply, &v, trail, (size_t)q.n), 0);
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

/*
 * Reply lanes are kept for reuse: a large value left unread in the first
 * use must not leave the next uses of that lane (and the link) broken.
 */
static void reply_driver(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	static unsigned char big[64 * KIB];
	struct val v;
	struct req q;

	(void)s;
	for (int i = 0; i < 6; i++) {
		cmesh_oneshot_sender *otx;
		cmesh_oneshot_receiver *orx;
		int r;

		TU_ASSERT_RC(cmesh_oneshot_new(&val_type, &otx, &orx), 0);
		q = (struct req){ 40000, otx };
		TU_ASSERT_RC(cmesh_sender_send(tx, &q, NULL, 0), 0);
		if (i == 0) {
			/* The value is there: give up on it unread. */
			while ((r = cmesh_oneshot_try_recv(orx, &v, big,
							   100)) == -EAGAIN)
				tu_sleep_ms(1);
			TU_ASSERT_RC(r, -EMSGSIZE);
			cmesh_oneshot_receiver_free(orx);
			continue;
		}
		TU_ASSERT_RC(cmesh_oneshot_recv_deadline(orx, topo_deadline(),
							 &v, big, sizeof(big)),
			     40000);
		cr_assert_eq(v.v, 40000);
		cr_assert_eq(tu_check(big, 40000, 9), 40000);
		cmesh_oneshot_receiver_free(orx);
	}
	q = (struct req){ 0, NULL };
	TU_ASSERT_RC(cmesh_sender_send(tx, &q, NULL, 0), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario reply_sc = {
	.down = &req_type,
	.up = &big_type,
	.driver = reply_driver,
	.peer = reply_peer,
};

Test(bulk, a_reused_reply_lane_after_an_unread_large_value_in_process)
{
	topo_run(&reply_sc, TOPO_THREAD);
}

Test(bulk, a_reused_reply_lane_after_an_unread_large_value_cross_process)
{
	topo_run(&reply_sc, TOPO_FORK);
}

/* ---- a released in lane lets go of the peer's arena at once ---- */

struct holder {
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(holder_type, struct holder,
		  CMESH_FIELD_RECEIVER(struct holder, rx, big_type));

static void release_driver(cmesh_sender *tx, cmesh_receiver *rx,
			   const struct topo_side *s)
{
	unsigned char *buf = malloc(64 * KIB);
	struct holder h;
	cmesh_sender *btx;

	cr_assert_not_null(buf);
	TU_ASSERT_RC(cmesh_channel_new(&big_type, NULL, &btx, &h.rx), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &h, NULL, 0), 0);
	for (uint64_t i = 0; i < 3; i++)
		send_big(btx, buf, i, 64 * KIB);
	/* We keep the sender (no END yet) until the peer has checked. */
	TU_ASSERT_RC(topo_wait(s->sync, TOPO_WAIT_MS), 'k');
	cmesh_sender_free(btx);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static int release_peer(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	unsigned char *buf = peer_buf();
	int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	struct holder h;

	TOPO_CHECK(buf != NULL);
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &h,
						   NULL, 0),
		      0);
	for (uint64_t i = 0; i < 3; i++)
		if (recv_big(h.rx, buf, i))
			return 1;
	TOPO_CHECK(!s->cross || maps_bulk_arena());
	cmesh_receiver_free(h.rx);
	/* Released: its lane keeps an id, no mapping, while the sender
	 * lives on in the other process. */
	while (maps_bulk_arena() && tu_now_ns() < end)
		tu_sleep_ms(1);
	TOPO_CHECK(!maps_bulk_arena());
	TOPO_CHECK_EQ(topo_post(s->sync, 'k'), 0);
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario release_sc = {
	.down = &holder_type,
	.up = &big_type,
	.driver = release_driver,
	.peer = release_peer,
};

Test(bulk, a_released_receiver_unmaps_the_peers_arena_in_process)
{
	topo_run(&release_sc, TOPO_THREAD);
}

Test(bulk, a_released_receiver_unmaps_the_peers_arena_cross_process)
{
	topo_run(&release_sc, TOPO_FORK);
}
