/* SPDX-License-Identifier: MIT */
/*
 * test_channel.c - channels: order, closing, resources moving with
 * messages, trailing bytes, the overflow path, deadlines, wakeups, stress.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

TestSuite(channel, .init = tu_suite_init, .fini = tu_suite_fini);

/* A message naming its sender and its place in that sender's sequence. */
struct seqmsg {
	uint32_t sender;
	uint32_t pad;
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(seq_type, struct seqmsg);

/* The same wire type, described by a separate descriptor. */
CMESH_TYPE_DEFINE_PLAIN(seq_type_twin, struct seqmsg);

/* A type that differs from seq_type. */
struct othermsg {
	uint64_t a, b, c;
};
CMESH_TYPE_DEFINE_PLAIN(other_type, struct othermsg);

struct fdmsg {
	uint64_t tag;
	int fd;
	int pad;
};
CMESH_TYPE_DEFINE(fd_type, struct fdmsg, CMESH_FIELD_FD(struct fdmsg, fd));

/* Carries a sender of a seq_type channel (and an fd). */
struct txmsg {
	int fd;
	uint32_t tag;
	cmesh_sender *tx;
};
CMESH_TYPE_DEFINE(tx_carrier_type, struct txmsg,
		  CMESH_FIELD_FD(struct txmsg, fd),
		  CMESH_FIELD_SENDER(struct txmsg, tx, seq_type));

/* Carries a receiver of a seq_type channel. */
struct rxmsg {
	uint64_t tag;
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(rx_carrier_type, struct rxmsg,
		  CMESH_FIELD_RECEIVER(struct rxmsg, rx, seq_type));

/* Every kind of resource field at once. */
struct allmsg {
	int fd;
	int pad;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
};
CMESH_TYPE_DEFINE(all_type, struct allmsg, CMESH_FIELD_FD(struct allmsg, fd),
		  CMESH_FIELD_SENDER(struct allmsg, tx, seq_type),
		  CMESH_FIELD_RECEIVER(struct allmsg, rx, seq_type),
		  CMESH_FIELD_ONESHOT_SENDER(struct allmsg, otx, seq_type),
		  CMESH_FIELD_ONESHOT_RECEIVER(struct allmsg, orx, seq_type));

/* Plain message with a trailing-bytes length recorded in the struct. */
struct trailmsg {
	uint64_t seq;
	uint64_t len;
};
CMESH_TYPE_DEFINE_PLAIN(trail_type, struct trailmsg);

static void chan(const cmesh_type *type, uint32_t ring, int64_t spin,
		 cmesh_sender **tx, cmesh_receiver **rx)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	int r;

	o.ring_size = ring;
	o.spin_ns = spin;
	r = cmesh_channel_new(type, &o, tx, rx);
	cr_assert_eq(r, 0, "cmesh_channel_new: %d (%s)", r, cmesh_strerror(r));
	cr_assert_not_null(*tx);
	cr_assert_not_null(*rx);
}

/*
 * Process fd count after cmesh has been used once (so that anything it
 * keeps per process is already there): the baseline tests compare to.
 */
static int fd_baseline(void)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m = { 0 };

	chan(&seq_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(1)), &m, NULL, 0),
		     -ETIMEDOUT);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return tu_fd_count();
}

static void send_seq(cmesh_sender *tx, uint32_t sender, uint64_t seq)
{
	struct seqmsg m = { .sender = sender, .seq = seq };

	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
}

static void expect_seq(cmesh_receiver *rx, uint32_t sender, uint64_t seq)
{
	struct seqmsg m;
	int r;

	memset(&m, 0xa5, sizeof(m));
	r = cmesh_receiver_try_recv(rx, &m, NULL, 0);
	cr_assert_eq(r, 0, "try_recv: %d (%s), want message %u/%llu", r,
		     cmesh_strerror(r), sender, (unsigned long long)seq);
	cr_assert_eq(m.sender, sender, "sender %u, want %u", m.sender, sender);
	cr_assert_eq(m.seq, seq, "seq %llu, want %llu",
		     (unsigned long long)m.seq, (unsigned long long)seq);
}

/* ---- basics ---------------------------------------------------------- */

Test(channel, delivers_in_fifo_order_from_one_sender)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	const uint64_t n = 1000;

	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx, &rx), 0);
	for (uint64_t i = 0; i < n; i++)
		send_seq(tx, 3, i * 7 + 1);
	for (uint64_t i = 0; i < n; i++)
		expect_seq(rx, 3, i * 7 + 1);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, try_recv_and_try_peek_on_an_empty_channel_return_eagain)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;

	chan(&seq_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), -EAGAIN);
	send_seq(tx, 1, 1);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), 0);
	/* Peeking consumes nothing. */
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), 0);
	expect_seq(rx, 1, 1);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, reports_its_type_on_both_ends)
{
	cmesh_sender *tx, *tx2;
	cmesh_receiver *rx;

	chan(&fd_type, 0, 0, &tx, &rx);
	cr_assert_eq(cmesh_sender_type(tx), &fd_type);
	cr_assert_eq(cmesh_receiver_type(rx), &fd_type);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &tx2), 0);
	cr_assert_eq(cmesh_sender_type(tx2), &fd_type);
	cmesh_sender_free(tx2);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cr_assert_null(cmesh_sender_type(NULL));
	cr_assert_null(cmesh_receiver_type(NULL));
}

Test(channel, new_rejects_null_arguments_without_leaking)
{
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;
	int fds = fd_baseline();

	TU_ASSERT_RC(cmesh_channel_new(NULL, NULL, &tx, &rx), -EINVAL);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, NULL, &rx), -EINVAL);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &tx, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, NULL, NULL), -EINVAL);
	TU_ASSERT_FDS(fds);
}

Test(channel, new_rejects_an_invalid_type)
{
	static const cmesh_type zero_size = { "zero", 0, 0, NULL };
	static const cmesh_field out_of_bounds[] = {
		{ CMESH_FIELD_KIND_FD, 8, NULL },
	};
	static const cmesh_type bad_field = { "bad", 8, 1, out_of_bounds };
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;

	TU_ASSERT_RC(cmesh_channel_new(&zero_size, NULL, &tx, &rx), -EINVAL);
	TU_ASSERT_RC(cmesh_channel_new(&bad_field, NULL, &tx, &rx), -EINVAL);
}

Test(channel, new_rejects_unknown_flags_reserved_bits_and_bad_ring_sizes)
{
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;
	cmesh_channel_opts o;
	int fds = fd_baseline();

	o = (cmesh_channel_opts)CMESH_CHANNEL_OPTS_INIT;
	o.flags = 1;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	o = (cmesh_channel_opts)CMESH_CHANNEL_OPTS_INIT;
	o.flags = 0x80000000u;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	o = (cmesh_channel_opts)CMESH_CHANNEL_OPTS_INIT;
	o.reserved = 1;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	/* Not a power of two. */
	o = (cmesh_channel_opts)CMESH_CHANNEL_OPTS_INIT;
	o.ring_size = 5000;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	o.ring_size = 4096 + 2048;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	o.ring_size = 0xffffffffu;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	/* max_backlog: 0 (the default) or 4K..1T. */
	o = (cmesh_channel_opts)CMESH_CHANNEL_OPTS_INIT;
	o.max_backlog = 4095;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	o.max_backlog = (1ull << 40) + 1;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), -EINVAL);
	TU_ASSERT_FDS(fds);

	/* The documented small ring is fine. */
	o = (cmesh_channel_opts)CMESH_CHANNEL_OPTS_INIT;
	o.ring_size = 4096;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &tx, &rx), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, free_of_null_is_a_noop)
{
	cmesh_sender_free(NULL);
	cmesh_receiver_free(NULL);
}

Test(channel, clone_rejects_null_arguments)
{
	cmesh_sender *tx, *tx2 = NULL;
	cmesh_receiver *rx;

	chan(&seq_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_clone(NULL, &tx2), -EINVAL);
	TU_ASSERT_RC(cmesh_sender_clone(tx, NULL), -EINVAL);
	cmesh_sender_free(tx);
	/* The failed clones left no sender behind: the channel is closed. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

Test(channel, send_rejects_null_sender_without_taking_the_fd)
{
	int p[2];
	struct fdmsg m = { 0 };

	tu_pipe(p);
	m.fd = p[1];
	TU_ASSERT_RC(cmesh_sender_send(NULL, &m, NULL, 0), -EINVAL);
	/* tx was NULL: the caller still owns the fd. */
	cr_assert(tu_fd_is_open(p[1]), "send(NULL tx) closed the caller's fd");
	close(p[0]);
	close(p[1]);
}

Test(channel, send_rejects_null_message)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;

	chan(&seq_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_send(tx, NULL, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_sender_send(tx, NULL, "abc", 3), -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, send_with_null_trail_and_nonzero_length_fails_and_closes_the_fd)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m = { 0 };
	int p[2];
	int fds = fd_baseline();

	chan(&fd_type, 0, 0, &tx, &rx);
	tu_pipe(p);
	m.fd = p[1];
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 5), -EINVAL);
	/* tx and msg were non-NULL: the send took the fd and released it. */
	cr_assert(tu_pipe_sees_eof(p[0], 1000),
		  "the message's fd was not closed on -EINVAL");
	close(p[0]);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

Test(channel, recv_functions_reject_null_arguments)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;
	int64_t dl;

	chan(&seq_type, 0, 0, &tx, &rx);
	send_seq(tx, 2, 9);
	dl = cmesh_deadline_after(TU_MS(10));
	TU_ASSERT_RC(cmesh_receiver_try_recv(NULL, &m, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_recv(NULL, &m, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(NULL, dl, &m, NULL, 0),
		     -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_try_peek(NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, NULL, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, NULL, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, dl, NULL, NULL, 0),
		     -EINVAL);
	/* Nothing was consumed by the failed calls. */
	expect_seq(rx, 2, 9);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, fields_holding_none_pass_through)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct txmsg m = { .fd = -1, .tag = 11, .tx = NULL }, out;
	int fds = fd_baseline();

	chan(&tx_carrier_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	m.fd = -7; /* any negative value means "none" */
	m.tag = 12;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.tag, 11);
	cr_assert_lt(out.fd, 0);
	cr_assert_null(out.tx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.tag, 12);
	cr_assert_lt(out.fd, 0);
	cr_assert_null(out.tx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

/* ---- closing ---------------------------------------------------------- */

Test(channel, is_not_closed_while_a_clone_lives_and_closed_after_the_last_free)
{
	cmesh_sender *tx, *c1, *c2;
	cmesh_receiver *rx;
	struct seqmsg m;

	chan(&seq_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &c1), 0);
	TU_ASSERT_RC(cmesh_sender_clone(c1, &c2), 0);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), -EAGAIN);
	send_seq(c1, 1, 1);
	cmesh_sender_free(c1);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(1)), &m, NULL, 0),
		     0);
	cr_assert_eq(m.seq, 1);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(5)), &m, NULL, 0),
		     -ETIMEDOUT);
	send_seq(c2, 2, 1);
	send_seq(c2, 2, 2);
	cmesh_sender_free(c2);
	/* Closed now, but what was sent is drained first. */
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), 0);
	expect_seq(rx, 2, 1);
	expect_seq(rx, 2, 2);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), -EPIPE);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &m, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, CMESH_DEADLINE_NONE, &m,
						  NULL, 0),
		     -EPIPE);
	/* And it stays closed. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx);
}

Test(channel, receiver_drains_overflowed_messages_before_reporting_closed)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	const uint64_t n = 5000; /* far more than a 4 KiB ring holds */

	chan(&seq_type, 4096, 0, &tx, &rx);
	for (uint64_t i = 0; i < n; i++)
		send_seq(tx, 0, i);
	cmesh_sender_free(tx);
	for (uint64_t i = 0; i < n; i++)
		expect_seq(rx, 0, i);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

struct closer {
	cmesh_sender *tx;
	unsigned delay_ms;
};

static void *close_later(void *arg)
{
	struct closer *c = arg;

	tu_sleep_ms(c->delay_ms);
	cmesh_sender_free(c->tx);
	return NULL;
}

static void blocking_recv_sees_close(int64_t spin)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct closer c;
	struct seqmsg m;
	pthread_t t;

	chan(&seq_type, 0, spin, &tx, &rx);
	c.tx = tx;
	c.delay_ms = 20;
	tu_thread_start(&t, close_later, &c);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &m, NULL, 0), -EPIPE);
	tu_thread_join(t);
	cmesh_receiver_free(rx);
}

Test(channel,
     blocking_recv_returns_epipe_when_the_last_sender_is_freed_elsewhere)
{
	blocking_recv_sees_close(CMESH_SPIN_NONE);
	blocking_recv_sees_close(0);
}

Test(channel, send_after_receiver_freed_returns_epipe_and_closes_the_fd)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m = { 0 };
	int p[2], fds = fd_baseline();

	chan(&fd_type, 0, 0, &tx, &rx);
	cmesh_receiver_free(rx);
	tu_pipe(p);
	TU_ASSERT_FDS(fds + 2);
	m.fd = p[1];
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EPIPE);
	cr_assert_eq(tu_fd_count(), fds + 1,
		     "the message's fd was not closed on -EPIPE");
	cr_assert(tu_pipe_sees_eof(p[0], 1000), "no EOF on the pipe");
	/* With trailing bytes too, and an eventfd. */
	m.fd = tu_eventfd();
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, "xyz", 3), -EPIPE);
	TU_ASSERT_FDS(fds + 1);
	close(p[0]);
	cmesh_sender_free(tx);
	TU_ASSERT_FDS(fds);
}

Test(channel, send_after_receiver_freed_releases_a_carried_sender)
{
	cmesh_sender *tx, *dtx;
	cmesh_receiver *rx, *drx;
	struct txmsg m = { .fd = -1 };
	struct seqmsg s;
	int fds = fd_baseline();

	chan(&tx_carrier_type, 0, 0, &tx, &rx);
	chan(&seq_type, 0, 0, &dtx, &drx);
	cmesh_receiver_free(rx);
	m.tx = dtx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EPIPE);
	/* dtx was the data channel's only sender: it is closed now. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(drx, &s, NULL, 0), -EPIPE);
	cmesh_receiver_free(drx);
	cmesh_sender_free(tx);
	TU_ASSERT_FDS(fds);
}

Test(channel, send_after_receiver_freed_releases_a_carried_receiver)
{
	cmesh_sender *tx, *dtx;
	cmesh_receiver *rx, *drx;
	struct rxmsg m = { 0 };

	chan(&rx_carrier_type, 0, 0, &tx, &rx);
	chan(&seq_type, 0, 0, &dtx, &drx);
	cmesh_receiver_free(rx);
	m.rx = drx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EPIPE);
	/* The carried receiver was freed: its sender sees -EPIPE. */
	TU_ASSERT_RC(cmesh_sender_send(dtx, &(struct seqmsg){ 0 }, NULL, 0),
		     -EPIPE);
	cmesh_sender_free(dtx);
	cmesh_sender_free(tx);
}

Test(channel, clone_after_receiver_freed_succeeds_and_its_send_returns_epipe)
{
	cmesh_sender *tx, *c;
	cmesh_receiver *rx;

	chan(&seq_type, 0, 0, &tx, &rx);
	cmesh_receiver_free(rx);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &c), 0);
	TU_ASSERT_RC(cmesh_sender_send(c, &(struct seqmsg){ 0 }, NULL, 0),
		     -EPIPE);
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct seqmsg){ 0 }, NULL, 0),
		     -EPIPE);
	cmesh_sender_free(c);
	cmesh_sender_free(tx);
}

Test(channel, freeing_the_receiver_closes_fds_of_queued_messages)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m = { 0 };
	int p[3][2], fds = fd_baseline();
	const int nev = 300; /* overflows a 4 KiB ring */

	chan(&fd_type, 4096, 0, &tx, &rx);
	for (int i = 0; i < 3; i++) {
		tu_pipe(p[i]);
		m.tag = (uint64_t)i;
		m.fd = p[i][1];
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, "trail", 5), 0);
	}
	for (int i = 0; i < nev; i++) {
		m.tag = 100 + (uint64_t)i;
		m.fd = tu_eventfd();
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	cr_assert_geq(tu_fd_count(), fds + 6 + nev,
		      "queued fds should still be open");
	cmesh_receiver_free(rx);
	for (int i = 0; i < 3; i++) {
		cr_assert(tu_pipe_sees_eof(p[i][0], 1000),
			  "queued fd %d was not closed", i);
		close(p[i][0]);
	}
	TU_ASSERT_FDS(fds);
	cmesh_sender_free(tx);
	TU_ASSERT_FDS(fds);
}

Test(channel, freeing_the_receiver_releases_endpoints_in_queued_messages)
{
	cmesh_sender *tx, *rtx, *d1tx, *d2tx;
	cmesh_receiver *rx, *rrx, *d1rx, *d2rx;
	struct txmsg m = { .fd = -1 };
	struct rxmsg r = { 0 };
	struct seqmsg s;

	chan(&tx_carrier_type, 0, 0, &tx, &rx);
	chan(&rx_carrier_type, 0, 0, &rtx, &rrx);
	chan(&seq_type, 0, 0, &d1tx, &d1rx);
	chan(&seq_type, 0, 0, &d2tx, &d2rx);
	m.tx = d1tx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	r.rx = d2rx;
	TU_ASSERT_RC(cmesh_sender_send(rtx, &r, NULL, 0), 0);
	/* Still alive while queued. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(d1rx, &s, NULL, 0), -EAGAIN);
	send_seq(d2tx, 0, 0);
	cmesh_receiver_free(rx);
	cmesh_receiver_free(rrx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(d1rx, &s, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_sender_send(d2tx, &s, NULL, 0), -EPIPE);
	cmesh_sender_free(tx);
	cmesh_sender_free(rtx);
	cmesh_receiver_free(d1rx);
	cmesh_sender_free(d2tx);
}

/* ---- trailing bytes --------------------------------------------------- */

static void trail_round_trip(uint32_t ring)
{
	static const size_t lens[] = { 0,    1,	    13,	      4096, 4097,
				       5000, 65536, 1u << 20, 0,    7 };
	const size_t n = sizeof(lens) / sizeof(lens[0]);
	size_t cap = (1u << 20) + 64;
	uint8_t *buf = malloc(cap), *out = malloc(cap);
	cmesh_sender *tx;
	cmesh_receiver *rx;

	cr_assert(buf && out);
	chan(&trail_type, ring, 0, &tx, &rx);
	for (size_t i = 0; i < n; i++) {
		struct trailmsg m = { .seq = i, .len = lens[i] };

		tu_fill(buf, lens[i], (uint32_t)i);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, lens[i] ? buf : NULL,
					       lens[i]),
			     0);
	}
	for (size_t i = 0; i < n; i++) {
		struct trailmsg m;
		int r;

		TU_ASSERT_RC(cmesh_receiver_try_peek(rx), (int)lens[i]);
		memset(out, 0, lens[i] + 64);
		r = cmesh_receiver_try_recv(rx, &m, out, cap);
		cr_assert_eq(r, (int)lens[i], "message %zu: %d, want %zu", i, r,
			     lens[i]);
		cr_assert_eq(m.seq, i);
		cr_assert_eq(m.len, lens[i]);
		cr_assert_eq(tu_check(out, lens[i], (uint32_t)i), lens[i],
			     "message %zu: trailing bytes differ at %zu", i,
			     tu_check(out, lens[i], (uint32_t)i));
		/* No write past the trailing bytes. */
		for (size_t k = lens[i]; k < lens[i] + 64; k++)
			cr_assert_eq(out[k], 0, "wrote past trail at %zu", k);
	}
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &(struct trailmsg){ 0 }, out,
					     cap),
		     -EPIPE);
	cmesh_receiver_free(rx);
	free(buf);
	free(out);
}

Test(channel, carries_trailing_bytes_of_0_small_over_4k_and_1mib)
{
	trail_round_trip(0);
}

Test(channel, carries_trailing_bytes_larger_than_a_4k_ring)
{
	trail_round_trip(4096);
}

/*
 * Messages of many sizes, each with trails of every length up to past what
 * fits in its slot (the rest goes to the heap): the slot's lines are stored
 * apart (src/queue.c), so every byte crosses line boundaries somewhere.
 * Several laps of a 4 KiB ring for the small sizes; nothing is written past
 * what was asked.
 */
Test(channel, every_message_size_and_inline_trail_length_round_trips)
{
	static const uint32_t sizes[] = { 1,   7,   8,	 40,   47,  48,	 49,
					  56,  63,  64,	 65,   100, 120, 128,
					  129, 200, 500, 1000, 4000 };
	uint8_t msg[4096 + 64], out[4096 + 64], trail[160], got[160 + 64];

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		const cmesh_type t = { "sized", sizes[si], 0, NULL };
		cmesh_sender *tx;
		cmesh_receiver *rx;
		uint32_t seed = 0;

		chan(&t, 4096, 0, &tx, &rx);
		for (size_t len = 0; len <= 150; len++) {
			tu_fill(msg, sizes[si], ++seed);
			tu_fill(trail, len, seed * 7);
			TU_ASSERT_RC(cmesh_sender_send(tx, msg,
						       len ? trail : NULL, len),
				     0);
			memset(out, 0, sizeof(out));
			memset(got, 0, sizeof(got));
			TU_ASSERT_RC(cmesh_receiver_try_recv(rx, out, got, len),
				     (int)len);
			cr_assert_eq(tu_check(out, sizes[si], seed), sizes[si],
				     "size %u, trail %zu: message byte %zu",
				     sizes[si], len,
				     tu_check(out, sizes[si], seed));
			cr_assert_eq(tu_check(got, len, seed * 7), len,
				     "size %u, trail %zu: trail byte %zu",
				     sizes[si], len,
				     tu_check(got, len, seed * 7));
			for (size_t k = sizes[si]; k < sizes[si] + 64; k++)
				cr_assert_eq(out[k], 0, "size %u: wrote past",
					     sizes[si]);
			for (size_t k = len; k < len + 64; k++)
				cr_assert_eq(got[k], 0, "trail %zu: wrote past",
					     len);
		}
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
	}
}

Test(channel, recv_into_a_small_trail_buffer_is_emsgsize_and_consumes_nothing)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m = { .tag = 77 }, out;
	char small[50], big[100];
	char data[100];
	int p[2], fds = fd_baseline();

	chan(&fd_type, 0, 0, &tx, &rx);
	tu_pipe(p);
	m.fd = p[1];
	tu_fill(data, sizeof(data), 5);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, data, sizeof(data)), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, small, sizeof(small)),
		     -EMSGSIZE);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), 100);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, NULL, 0), -EMSGSIZE);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &out, big, 99), -EMSGSIZE);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(100)), &out, small,
			     sizeof(small)),
		     -EMSGSIZE);
	/* The fd was neither closed nor handed out. */
	TU_ASSERT_FDS(fds + 2);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), 100);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, big, sizeof(big)), 100);
	cr_assert_eq(out.tag, 77);
	cr_assert_eq(tu_check(big, sizeof(big), 5), sizeof(big));
	cr_assert_geq(out.fd, 0);
	cr_assert_eq(write(out.fd, "k", 1), 1);
	close(out.fd);
	cr_assert(tu_pipe_sees_eof(p[0], 1000) == false); /* reads the 'k' */
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

Test(channel, send_rejects_trailing_bytes_over_cmesh_max_message)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m = { 0 }, out;
	static char data[4096];
	int p[2], fds;

	/* Read once per process, at the first call: set it before any. */
	cr_assert_eq(setenv("CMESH_MAX_MESSAGE", "1K", 1), 0);
	fds = fd_baseline();
	chan(&fd_type, 0, 0, &tx, &rx);
	tu_fill(data, sizeof(data), 9);
	m.fd = -1;
	m.tag = 1;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, data, 1024), 0);
	tu_pipe(p);
	m.fd = p[1];
	m.tag = 2;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, data, 1025), -EMSGSIZE);
	cr_assert(tu_pipe_sees_eof(p[0], 1000),
		  "fd not closed after -EMSGSIZE");
	close(p[0]);
	m.fd = -1;
	m.tag = 3;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, data, sizeof(data)), -EMSGSIZE);
	m.tag = 4;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, data, 3), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, data + 2048, 2048),
		     1024);
	cr_assert_eq(out.tag, 1);
	cr_assert_eq(tu_check(data + 2048, 1024, 9), 1024);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, data + 2048, 2048), 3);
	cr_assert_eq(out.tag, 4);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, data + 2048, 2048),
		     -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

/* ---- the overflow path ------------------------------------------------ */

Test(channel, send_never_blocks_on_a_full_ring_and_order_survives_overflow)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	const uint64_t n = 20000;
	uint64_t next_sent = 0, next_recv = 0;

	chan(&seq_type, 4096, 0, &tx, &rx);
	/* Fill the ring and spill far into the overflow list. */
	for (; next_sent < n; next_sent++)
		send_seq(tx, 0, next_sent);
	/* Drain part, then send more while the overflow list is not empty. */
	for (; next_recv < n / 2; next_recv++)
		expect_seq(rx, 0, next_recv);
	for (; next_sent < n + n / 2; next_sent++)
		send_seq(tx, 0, next_sent);
	/* Drain to a few, send more (ring has room again). */
	for (; next_recv < next_sent - 3; next_recv++)
		expect_seq(rx, 0, next_recv);
	for (; next_sent < 2 * n; next_sent++)
		send_seq(tx, 0, next_sent);
	for (; next_recv < next_sent; next_recv++)
		expect_seq(rx, 0, next_recv);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, overflowed_messages_keep_their_trailing_bytes_and_order)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	const uint64_t n = 600;
	uint8_t buf[2100], out[2100];

	chan(&trail_type, 4096, 0, &tx, &rx);
	for (uint64_t i = 0; i < n; i++) {
		struct trailmsg m = { .seq = i, .len = (i * 331) % 2100 };

		tu_fill(buf, m.len, (uint32_t)i);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, buf, m.len), 0);
	}
	for (uint64_t i = 0; i < n; i++) {
		struct trailmsg m;
		size_t len = (i * 331) % 2100;

		if (len > 0)
			TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, out,
							     len - 1),
				     -EMSGSIZE);
		TU_ASSERT_RC(cmesh_receiver_try_peek(rx), (int)len);
		TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, out, sizeof(out)),
			     (int)len);
		cr_assert_eq(m.seq, i);
		cr_assert_eq(m.len, len);
		cr_assert_eq(tu_check(out, len, (uint32_t)i), len,
			     "message %llu bytes differ",
			     (unsigned long long)i);
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/* ---- deadlines -------------------------------------------------------- */

Test(channel, recv_deadline_on_an_empty_channel_times_out_after_the_deadline)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;
	int64_t t0, t1;

	chan(&seq_type, 0, 0, &tx, &rx);
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(20)), &m, NULL, 0),
		     -ETIMEDOUT);
	t1 = tu_now_ns();
	cr_assert_geq(t1 - t0, TU_MS(20), "returned after %lld ns",
		      (long long)(t1 - t0));
	cr_assert_lt(t1 - t0, TU_MS(5000), "took %lld ns",
		     (long long)(t1 - t0));
	/* Without spinning as well. */
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	chan(&seq_type, 0, CMESH_SPIN_NONE, &tx, &rx);
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(20)), &m, NULL, 0),
		     -ETIMEDOUT);
	cr_assert_geq(tu_now_ns() - t0, TU_MS(20));
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, recv_deadline_in_the_past_returns_etimedout_at_once)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;
	int64_t t0;

	chan(&seq_type, 0, 0, &tx, &rx);
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, cmesh_clock_now() - 1, &m,
						  NULL, 0),
		     -ETIMEDOUT);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, 0, &m, NULL, 0),
		     -ETIMEDOUT);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, INT64_MIN, &m, NULL, 0),
		     -ETIMEDOUT);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(-TU_MS(1000)), &m, NULL,
			     0),
		     -ETIMEDOUT);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(1000));
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(channel, recv_deadline_in_the_past_still_returns_a_queued_message)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;

	chan(&seq_type, 0, 0, &tx, &rx);
	send_seq(tx, 4, 44);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, cmesh_clock_now() - 1, &m,
						  NULL, 0),
		     0);
	cr_assert_eq(m.seq, 44);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

struct later {
	cmesh_sender *tx;
	unsigned delay_ms;
	uint64_t seq;
	int rc;
};

static void *send_later(void *arg)
{
	struct later *l = arg;
	struct seqmsg m = { .sender = 1, .seq = l->seq };

	tu_sleep_ms(l->delay_ms);
	l->rc = cmesh_sender_send(l->tx, &m, NULL, 0);
	return NULL;
}

Test(channel, recv_deadline_returns_a_message_sent_later_by_another_thread)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct later l;
	struct seqmsg m;
	pthread_t t;
	int64_t t0;

	chan(&seq_type, 0, 0, &tx, &rx);
	l = (struct later){ .tx = tx, .delay_ms = 10, .seq = 1234 };
	t0 = tu_now_ns();
	tu_thread_start(&t, send_later, &l);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(5000)), &m, NULL,
			     0),
		     0);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(5000));
	cr_assert_eq(m.seq, 1234);
	tu_thread_join(t);
	TU_ASSERT_RC(l.rc, 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/* ---- wakeups ---------------------------------------------------------- */

struct sleeper {
	cmesh_receiver *rx;
	_Atomic pid_t tid;
	int rc;
	struct seqmsg m;
};

static void *recv_blocking(void *arg)
{
	struct sleeper *s = arg;

	atomic_store(&s->tid, tu_gettid());
	s->rc = cmesh_receiver_recv(s->rx, &s->m, NULL, 0);
	return NULL;
}

static void blocking_recv_is_woken(int64_t spin)
{
	cmesh_sender *tx;
	struct sleeper s = { 0 };
	pthread_t t;
	pid_t tid;

	chan(&seq_type, 0, spin, &tx, &s.rx);
	tu_thread_start(&t, recv_blocking, &s);
	while ((tid = atomic_load(&s.tid)) == 0)
		tu_sleep_ms(1);
	/* The receiver must really go to sleep (not spin forever). */
	cr_assert(tu_wait_thread_sleeping(tid, 5000),
		  "receiver thread never slept (spin %lld)", (long long)spin);
	send_seq(tx, 7, 77);
	cr_assert(tu_thread_join_within(t, 10000, NULL),
		  "receiver was not woken by the send (spin %lld)",
		  (long long)spin);
	TU_ASSERT_RC(s.rc, 0);
	cr_assert_eq(s.m.sender, 7);
	cr_assert_eq(s.m.seq, 77);
	cmesh_sender_free(tx);
	cmesh_receiver_free(s.rx);
}

Test(channel, blocking_recv_with_spin_none_sleeps_until_a_sender_wakes_it)
{
	blocking_recv_is_woken(CMESH_SPIN_NONE);
}

Test(channel, blocking_recv_with_default_spin_is_woken_by_a_sender)
{
	blocking_recv_is_woken(0);
}

struct echo {
	cmesh_receiver *rx;
	cmesh_sender *tx;
	uint64_t n;
	int rc;
};

static void *echo_main(void *arg)
{
	struct echo *e = arg;
	struct seqmsg m;

	for (uint64_t i = 0; i < e->n; i++) {
		e->rc = cmesh_receiver_recv(e->rx, &m, NULL, 0);
		if (e->rc)
			break;
		m.seq++;
		e->rc = cmesh_sender_send(e->tx, &m, NULL, 0);
		if (e->rc)
			break;
	}
	return NULL;
}

static void ping_pong(int64_t spin)
{
	cmesh_sender *atx, *btx;
	cmesh_receiver *arx, *brx;
	struct echo e;
	pthread_t t;
	const uint64_t n = tu_stress(2000, 10);

	chan(&seq_type, 0, spin, &atx, &arx);
	chan(&seq_type, 0, spin, &btx, &brx);
	e = (struct echo){ .rx = arx, .tx = btx, .n = n };
	tu_thread_start(&t, echo_main, &e);
	for (uint64_t i = 0; i < n; i++) {
		struct seqmsg m = { .seq = 2 * i };

		TU_ASSERT_RC(cmesh_sender_send(atx, &m, NULL, 0), 0);
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(
				     brx, cmesh_deadline_after(TU_MS(10000)),
				     &m, NULL, 0),
			     0);
		cr_assert_eq(m.seq, 2 * i + 1);
	}
	tu_thread_join(t);
	TU_ASSERT_RC(e.rc, 0);
	cmesh_sender_free(atx);
	cmesh_sender_free(btx);
	cmesh_receiver_free(arx);
	cmesh_receiver_free(brx);
}

Test(channel, ping_pong_between_threads_loses_no_wakeup_with_spin_none)
{
	ping_pong(CMESH_SPIN_NONE);
}

Test(channel, ping_pong_between_threads_loses_no_wakeup_with_default_spin)
{
	ping_pong(0);
}

/* ---- stress ------------------------------------------------------------ */

struct producer {
	cmesh_sender *tx;
	uint32_t id;
	uint64_t n;
	bool free_tx;
	bool trail;
	pthread_barrier_t *start;
	int rc;
};

/* Trailing bytes of message `seq` from `id` in the stress runs. */
static size_t stress_trail_len(uint32_t id, uint64_t seq)
{
	return (size_t)((seq * 7 + id) % 300);
}

static uint32_t stress_trail_seed(uint32_t id, uint64_t seq)
{
	return (uint32_t)(id * 1000003u + seq);
}

static void *producer_main(void *arg)
{
	struct producer *p = arg;
	uint8_t buf[300];

	pthread_barrier_wait(p->start);
	for (uint64_t i = 0; i < p->n; i++) {
		struct seqmsg m = { .sender = p->id, .seq = i };
		size_t len = 0;

		if (p->trail) {
			len = stress_trail_len(p->id, i);
			tu_fill(buf, len, stress_trail_seed(p->id, i));
		}
		/*
		 * Past the backlog's bound (CMESH_MAX_BACKLOG: a receiver
		 * that sleeps, on a busy host, falls that far behind) a
		 * send says -ENOBUFS and takes nothing: send it again.
		 */
		while ((p->rc = cmesh_sender_send(p->tx, &m, buf, len)) ==
		       -ENOBUFS)
			tu_sleep_ms(1);
		if (p->rc)
			break;
	}
	if (p->free_tx)
		cmesh_sender_free(p->tx);
	return NULL;
}

enum stress_mode {
	OWN_CLONES,
	SHARED_HANDLE
};

/*
 * `nthreads` producers send `total` messages in all, each tagged with its
 * thread id and sequence number; the receiver checks that every thread's
 * messages arrive once each and in order. `pause_every` (if not 0) makes the
 * receiver sleep 1 ms every that many messages, so the ring fills up.
 */
static void stress(enum stress_mode mode, uint32_t nthreads, uint64_t total,
		   uint32_t ring, int64_t spin, uint64_t pause_every,
		   bool trail)
{
	uint8_t buf[512];
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct producer p[16];
	pthread_t t[16];
	uint64_t next[16] = { 0 }, got = 0;
	pthread_barrier_t start;
	struct seqmsg m;
	int r;

	cr_assert_leq(nthreads, 16);
	chan(&seq_type, ring, spin, &tx, &rx);
	pthread_barrier_init(&start, NULL, nthreads);
	for (uint32_t i = 0; i < nthreads; i++) {
		p[i] = (struct producer){ .id = i,
					  .start = &start,
					  .trail = trail };
		p[i].n = total / nthreads + (i < total % nthreads ? 1 : 0);
		if (mode == OWN_CLONES) {
			TU_ASSERT_RC(cmesh_sender_clone(tx, &p[i].tx), 0);
			p[i].free_tx = true;
		} else {
			p[i].tx = tx;
		}
	}
	if (mode == OWN_CLONES) {
		/* The clones keep the channel open. */
		cmesh_sender_free(tx);
		tx = NULL;
	}
	for (uint32_t i = 0; i < nthreads; i++)
		tu_thread_start(&t[i], producer_main, &p[i]);

	while (got < total) {
		r = cmesh_receiver_recv_deadline(
			rx, cmesh_deadline_after(TU_MS(20000)), &m, buf,
			sizeof(buf));
		cr_assert_geq(r, 0, "recv after %llu of %llu: %d (%s)",
			      (unsigned long long)got,
			      (unsigned long long)total, r, cmesh_strerror(r));
		cr_assert_lt(m.sender, nthreads, "bad sender id %u", m.sender);
		cr_assert_eq(m.seq, next[m.sender],
			     "sender %u: got seq %llu, want %llu (lost, "
			     "duplicated or reordered)",
			     m.sender, (unsigned long long)m.seq,
			     (unsigned long long)next[m.sender]);
		if (trail) {
			size_t len = stress_trail_len(m.sender, m.seq);

			cr_assert_eq((size_t)r, len);
			cr_assert_eq(
				tu_check(buf, len,
					 stress_trail_seed(m.sender, m.seq)),
				len, "sender %u seq %llu: bytes differ",
				m.sender, (unsigned long long)m.seq);
		} else {
			cr_assert_eq(r, 0);
		}
		next[m.sender]++;
		got++;
		if (pause_every && got % pause_every == 0)
			tu_sleep_ms(1);
	}
	for (uint32_t i = 0; i < nthreads; i++) {
		tu_thread_join(t[i]);
		TU_ASSERT_RC(p[i].rc, 0);
		cr_assert_eq(next[i], p[i].n);
	}
	cmesh_sender_free(tx); /* SHARED_HANDLE: the last sender */
	/* Nothing more than what was sent. */
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(5000)), &m, NULL,
			     0),
		     -EPIPE);
	pthread_barrier_destroy(&start);
	cmesh_receiver_free(rx);
}

Test(channel, eight_threads_with_own_clones_deliver_everything_once_in_order)
{
	stress(OWN_CLONES, 8, tu_stress(1000000, 1000), 0, 0, 0, false);
}

Test(channel, threads_sharing_one_sender_deliver_everything_once_in_order)
{
	stress(SHARED_HANDLE, 4, tu_stress(1000000, 1000), 0, 0, 0, false);
}

Test(channel, small_ring_stress_overflows_without_blocking_losing_or_reordering)
{
	stress(OWN_CLONES, 8, tu_stress(1000000, 1000), 4096, CMESH_SPIN_NONE,
	       50000, false);
}

/*
 * The receiver sleeps whenever it is empty (no spin) while four senders
 * claim and publish flat out, with trailing bytes (a longer window
 * between claim and publish): every sleep races a claim (queue.c's
 * Dekker on the claim); a lost wakeup ends the test at its deadline.
 */
Test(channel, senders_racing_a_receiver_that_sleeps_lose_no_wakeup)
{
	stress(OWN_CLONES, 4, tu_stress(400000, 1000), 0, CMESH_SPIN_NONE, 0,
	       true);
}

/* ---- a sender stopped between its claim and its publish ---- */

struct stalled {
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_waitset *ws;
	const unsigned char *trail; /* in a page that faults to userfaultfd */
	int rc;
	uint64_t key;
	struct seqmsg m;
	unsigned char got[16];
	int64_t cpu_ns; /* the receiving thread's CPU time while it waited */
};

static int64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *stalled_send(void *arg)
{
	struct stalled *st = arg;
	struct seqmsg m = { .seq = 42 };

	st->rc = cmesh_sender_send(st->tx, &m, st->trail, sizeof(st->got));
	return NULL;
}

static void *stalled_recv(void *arg)
{
	struct stalled *st = arg;
	int64_t dl = cmesh_deadline_after(TU_MS(10000));
	int64_t cpu = thread_cpu_ns();

	if (st->ws) {
		st->rc = cmesh_waitset_wait(st->ws, dl, &st->key);
		if (st->rc)
			return NULL;
	}
	st->rc = cmesh_receiver_recv_deadline(st->rx, dl, &st->m, st->got,
					      sizeof(st->got));
	st->cpu_ns = thread_cpu_ns() - cpu;
	return NULL;
}

/*
 * The sender's trailing bytes sit in a page that is not there yet and
 * belongs to a userfaultfd: its copy into the slot it claimed stops in
 * the fault until the test supplies the page. Meanwhile the receiver,
 * which never spins, waits (plain, or in a waitset): it sees a slot
 * claimed and not published, whose sender may owe it no wake, so it must
 * not sleep for good, must not give up before its own deadline, and must
 * not burn a core meanwhile. Once the page comes, the message arrives
 * whole.
 */
static void stalled_sender(bool through_waitset)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	struct stalled snd = { 0 }, rcv = { 0 };
	long pg = sysconf(_SC_PAGESIZE);
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	struct uffdio_copy copy = { 0 };
	struct uffd_msg msg;
	unsigned char *page, *src;
	pthread_t ts, tr;
	int uffd;

	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	if (uffd < 0)
		cr_skip_test("userfaultfd: %s", strerror(errno));
	cr_assert_eq(ioctl(uffd, UFFDIO_API, &api), 0);
	page = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	src = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(page != MAP_FAILED && src != MAP_FAILED);
	reg.range.start = (uintptr_t)page;
	reg.range.len = (uint64_t)pg;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	cr_assert_eq(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
	tu_fill(src, sizeof(snd.got), 77);

	o.spin_ns = CMESH_SPIN_NONE;
	TU_ASSERT_RC(cmesh_channel_new(&seq_type, &o, &snd.tx, &rcv.rx), 0);
	if (through_waitset) {
		TU_ASSERT_RC(cmesh_waitset_new(&rcv.ws), 0);
		TU_ASSERT_RC(cmesh_waitset_add_receiver(rcv.ws, rcv.rx, 3), 0);
	}
	snd.trail = page;
	tu_thread_start(&ts, stalled_send, &snd);
	/* The sender has claimed its slot and stopped in the copy. */
	cr_assert_eq(poll(&(struct pollfd){ .fd = uffd, .events = POLLIN }, 1,
			  10000),
		     1);
	cr_assert_eq(read(uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	cr_assert_eq(msg.event, UFFD_EVENT_PAGEFAULT);
	tu_thread_start(&tr, stalled_recv, &rcv);
	tu_sleep_ms(50); /* the receiver waits on the claim all this time */
	copy.dst = (uintptr_t)page;
	copy.src = (uintptr_t)src;
	copy.len = (uint64_t)pg;
	cr_assert_eq(ioctl(uffd, UFFDIO_COPY, &copy), 0);
	tu_thread_join(ts);
	tu_thread_join(tr);
	TU_ASSERT_RC(snd.rc, 0);
	TU_ASSERT_RC(rcv.rc, (int)sizeof(rcv.got));
	cr_assert_eq(rcv.m.seq, 42);
	cr_assert_eq(tu_check(rcv.got, sizeof(rcv.got), 77), sizeof(rcv.got));
	if (through_waitset)
		cr_assert_eq(rcv.key, 3);
	/* It yielded, then napped: it did not burn the 50 ms spinning. */
	cr_assert_lt(rcv.cpu_ns, TU_MS(25), "the waiter used %lld ns of CPU",
		     (long long)rcv.cpu_ns);
	cmesh_waitset_free(rcv.ws);
	cmesh_sender_free(snd.tx);
	cmesh_receiver_free(rcv.rx);
	munmap(page, (size_t)pg);
	munmap(src, (size_t)pg);
	close(uffd);
}

Test(channel, a_receiver_waits_out_a_sender_stopped_between_claim_and_publish)
{
	stalled_sender(false);
}

Test(channel, a_waitset_waits_out_a_sender_stopped_between_claim_and_publish)
{
	stalled_sender(true);
}

Test(channel, concurrent_senders_with_trailing_bytes_keep_bytes_and_order)
{
	/* Half the threads share a handle, the ring is small. */
	stress(SHARED_HANDLE, 4, tu_stress(200000, 1000), 4096, 0, 20000, true);
	stress(OWN_CLONES, 6, tu_stress(200000, 1000), 0, CMESH_SPIN_NONE, 0,
	       true);
}

struct racer {
	cmesh_sender *tx;
	uint64_t n;
	pthread_barrier_t *start;
	uint64_t sent;
	uint64_t epipe;
	int bad_rc;
};

static void *racer_main(void *arg)
{
	struct racer *rc = arg;
	uint8_t trail[64] = { 0 };

	pthread_barrier_wait(rc->start);
	for (uint64_t i = 0; i < rc->n && rc->epipe < 200; i++) {
		struct fdmsg m = { .tag = i, .fd = -1 };
		int r;

		if (i % 4 == 0)
			m.fd = eventfd(0, EFD_CLOEXEC);
		r = cmesh_sender_send(rc->tx, &m, trail, i % 64);
		if (r == 0)
			rc->sent++;
		else if (r == -EPIPE)
			rc->epipe++;
		else if (!rc->bad_rc)
			rc->bad_rc = r;
	}
	cmesh_sender_free(rc->tx);
	return NULL;
}

Test(channel, senders_racing_with_the_receivers_free_leak_nothing)
{
	enum {
		NT = 4
	};
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct racer rc[NT];
	pthread_t t[NT];
	pthread_barrier_t start;
	uint8_t trail[64];
	int fds = fd_baseline();

	for (int round = 0; round < 3; round++) {
		chan(&fd_type, round == 1 ? 4096 : 0, 0, &tx, &rx);
		pthread_barrier_init(&start, NULL, NT + 1);
		for (int i = 0; i < NT; i++) {
			rc[i] = (struct racer){ .n = tu_stress(20000, 100),
						.start = &start };
			TU_ASSERT_RC(cmesh_sender_clone(tx, &rc[i].tx), 0);
			tu_thread_start(&t[i], racer_main, &rc[i]);
		}
		cmesh_sender_free(tx);
		pthread_barrier_wait(&start);
		/* Take some, with their fds, then drop the rest mid-stream. */
		for (int k = 0; k < 200 * round; k++) {
			struct fdmsg m;
			int r = cmesh_receiver_recv(rx, &m, trail,
						    sizeof(trail));

			cr_assert_geq(r, 0, "%d (%s)", r, cmesh_strerror(r));
			if (m.fd >= 0)
				close(m.fd);
		}
		cmesh_receiver_free(rx);
		for (int i = 0; i < NT; i++) {
			tu_thread_join(t[i]);
			TU_ASSERT_RC(rc[i].bad_rc, 0);
		}
		pthread_barrier_destroy(&start);
		/* Every fd sent was closed: delivered, dropped or refused. */
		TU_ASSERT_FDS(fds);
	}
}

/* ---- moving resources --------------------------------------------------- */

Test(channel, a_moved_fd_arrives_as_the_same_open_file)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m = { .tag = 5 }, out;
	struct stat before, after;
	char buf[8];
	int p[2], fds = fd_baseline();

	chan(&fd_type, 0, 0, &tx, &rx);
	tu_pipe(p);
	cr_assert_eq(fstat(p[1], &before), 0);
	m.fd = p[1];
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.tag, 5);
	cr_assert_geq(out.fd, 0);
	cr_assert_eq(fstat(out.fd, &after), 0);
	cr_assert_eq(after.st_ino, before.st_ino);
	cr_assert_eq(after.st_dev, before.st_dev);
	cr_assert_eq(write(out.fd, "hello", 5), 5);
	cr_assert_eq(read(p[0], buf, sizeof(buf)), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	close(out.fd);
	/* The library kept no other copy of the write end. */
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

static void moved_receiver_keeps_order(uint32_t ring, uint64_t before,
				       uint64_t after)
{
	cmesh_sender *ctx, *dtx;
	cmesh_receiver *crx, *drx;
	struct rxmsg r = { .tag = 42 }, out = { 0 };
	cmesh_waitset *ws;
	uint64_t key;

	chan(&rx_carrier_type, 0, 0, &ctx, &crx);
	chan(&seq_type, ring, 0, &dtx, &drx);
	for (uint64_t i = 0; i < before; i++)
		send_seq(dtx, 9, i);
	r.rx = drx;
	TU_ASSERT_RC(cmesh_sender_send(ctx, &r, NULL, 0), 0);
	drx = NULL; /* moved */
	for (uint64_t i = before; i < before + after; i++)
		send_seq(dtx, 9, i);
	TU_ASSERT_RC(cmesh_receiver_try_recv(crx, &out, NULL, 0), 0);
	cr_assert_eq(out.tag, 42);
	cr_assert_not_null(out.rx);
	cr_assert_eq(cmesh_receiver_type(out.rx), &seq_type);
	for (uint64_t i = 0; i < before + after; i++)
		expect_seq(out.rx, 9, i);
	TU_ASSERT_RC(cmesh_receiver_try_recv(out.rx, &(struct seqmsg){ 0 },
					     NULL, 0),
		     -EAGAIN);
	/* The new owner can put it in a waitset. */
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, out.rx, 77), 0);
	send_seq(dtx, 9, before + after);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, cmesh_deadline_after(TU_MS(5000)),
					&key),
		     0);
	cr_assert_eq(key, 77);
	expect_seq(out.rx, 9, before + after);
	cmesh_sender_free(dtx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(out.rx, &(struct seqmsg){ 0 },
					     NULL, 0),
		     -EPIPE);
	cmesh_receiver_free(out.rx);
	cr_assert_eq(cmesh_waitset_size(ws), 0);
	cmesh_waitset_free(ws);
	cmesh_sender_free(ctx);
	cmesh_receiver_free(crx);
}

Test(channel, a_moved_receiver_keeps_receiving_in_order)
{
	moved_receiver_keeps_order(0, 5, 5);
}

Test(channel, a_moved_receiver_with_overflowed_messages_keeps_their_order)
{
	moved_receiver_keeps_order(4096, 3000, 3000);
}

struct mover {
	cmesh_receiver *crx;
	uint64_t n;
	uint64_t got;
	int rc;
	bool order_ok;
};

static void *moved_receiver_main(void *arg)
{
	struct mover *mv = arg;
	struct rxmsg r;
	struct seqmsg m;
	int rc;

	mv->order_ok = true;
	mv->rc = cmesh_receiver_recv(mv->crx, &r, NULL, 0);
	if (mv->rc)
		return NULL;
	while ((rc = cmesh_receiver_recv(r.rx, &m, NULL, 0)) == 0) {
		if (m.seq != mv->got)
			mv->order_ok = false;
		mv->got++;
	}
	if (rc != -EPIPE)
		mv->rc = rc;
	cmesh_receiver_free(r.rx);
	cmesh_receiver_free(mv->crx);
	return NULL;
}

Test(channel, a_receiver_moved_to_another_thread_receives_there)
{
	cmesh_sender *ctx, *dtx;
	cmesh_receiver *drx;
	struct rxmsg r = { .tag = 1 };
	struct mover mv = { .n = 2000 };
	pthread_t t;

	chan(&rx_carrier_type, 0, 0, &ctx, &mv.crx);
	chan(&seq_type, 0, 0, &dtx, &drx);
	tu_thread_start(&t, moved_receiver_main, &mv);
	for (uint64_t i = 0; i < mv.n / 2; i++)
		send_seq(dtx, 0, i);
	r.rx = drx;
	TU_ASSERT_RC(cmesh_sender_send(ctx, &r, NULL, 0), 0);
	for (uint64_t i = mv.n / 2; i < mv.n; i++)
		send_seq(dtx, 0, i);
	cmesh_sender_free(dtx);
	cr_assert(tu_thread_join_within(t, 20000, NULL),
		  "the moved receiver did not see the channel close");
	TU_ASSERT_RC(mv.rc, 0);
	cr_assert_eq(mv.got, mv.n);
	cr_assert(mv.order_ok);
	cmesh_sender_free(ctx);
}

Test(channel, a_moved_sender_sends_to_the_original_receiver)
{
	cmesh_sender *ctx, *dtx, *c;
	cmesh_receiver *crx, *drx;
	struct txmsg m = { .fd = -1, .tag = 3 }, out;

	chan(&tx_carrier_type, 0, 0, &ctx, &crx);
	chan(&seq_type, 0, 0, &dtx, &drx);
	TU_ASSERT_RC(cmesh_sender_clone(dtx, &c), 0);
	m.tx = c;
	TU_ASSERT_RC(cmesh_sender_send(ctx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(crx, &out, NULL, 0), 0);
	cr_assert_eq(out.tag, 3);
	cr_assert_not_null(out.tx);
	send_seq(dtx, 0, 0);
	send_seq(out.tx, 1, 0);
	expect_seq(drx, 0, 0);
	expect_seq(drx, 1, 0);
	cmesh_sender_free(dtx);
	/* The moved sender still counts as a sender. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(drx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EAGAIN);
	cmesh_sender_free(out.tx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(drx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EPIPE);
	cmesh_receiver_free(drx);
	cmesh_sender_free(ctx);
	cmesh_receiver_free(crx);
}

Test(channel, a_sender_of_another_type_is_ebadmsg_and_everything_is_released)
{
	cmesh_sender *ctx, *otx;
	cmesh_receiver *crx, *orx;
	struct txmsg m = { .tag = 1 }, out;
	struct othermsg o;
	int p[2], fds = fd_baseline();

	chan(&tx_carrier_type, 0, 0, &ctx, &crx);
	chan(&other_type, 0, 0, &otx, &orx);
	tu_pipe(p);
	m.fd = p[1];
	m.tx = otx; /* the field wants a seq_type sender */
	TU_ASSERT_RC(cmesh_sender_send(ctx, &m, NULL, 0), -EBADMSG);
	/* The carried sender was released: its channel is closed. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(orx, &o, NULL, 0), -EPIPE);
	/* And the carried fd was closed. */
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	/* Nothing was delivered. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(crx, &out, NULL, 0), -EAGAIN);
	cmesh_receiver_free(orx);
	cmesh_sender_free(ctx);
	cmesh_receiver_free(crx);
	TU_ASSERT_FDS(fds);
}

Test(channel, a_receiver_of_another_type_is_ebadmsg_and_is_released)
{
	cmesh_sender *ctx, *otx;
	cmesh_receiver *crx, *orx;
	struct rxmsg r = { .tag = 1 }, out;

	chan(&rx_carrier_type, 0, 0, &ctx, &crx);
	chan(&other_type, 0, 0, &otx, &orx);
	r.rx = orx;
	TU_ASSERT_RC(cmesh_sender_send(ctx, &r, NULL, 0), -EBADMSG);
	TU_ASSERT_RC(cmesh_sender_send(otx, &(struct othermsg){ 0 }, NULL, 0),
		     -EPIPE);
	TU_ASSERT_RC(cmesh_receiver_try_recv(crx, &out, NULL, 0), -EAGAIN);
	cmesh_sender_free(otx);
	cmesh_sender_free(ctx);
	cmesh_receiver_free(crx);
}

Test(channel, an_endpoint_whose_type_has_the_same_fingerprint_is_accepted)
{
	cmesh_sender *ctx, *ttx;
	cmesh_receiver *crx, *trx;
	struct txmsg m = { .fd = -1, .tag = 8 }, out;
	uint64_t fa, fb;

	TU_ASSERT_RC(cmesh_type_fingerprint(&seq_type, &fa), 0);
	TU_ASSERT_RC(cmesh_type_fingerprint(&seq_type_twin, &fb), 0);
	cr_assert_eq(fa, fb);
	chan(&tx_carrier_type, 0, 0, &ctx, &crx);
	chan(&seq_type_twin, 0, 0, &ttx, &trx);
	m.tx = ttx;
	TU_ASSERT_RC(cmesh_sender_send(ctx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(crx, &out, NULL, 0), 0);
	send_seq(out.tx, 6, 60);
	expect_seq(trx, 6, 60);
	cmesh_sender_free(out.tx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(trx, &(struct seqmsg){ 0 }, NULL,
					     0),
		     -EPIPE);
	cmesh_receiver_free(trx);
	cmesh_sender_free(ctx);
	cmesh_receiver_free(crx);
}

/* ---- typed wrappers ------------------------------------------------------ */

struct point {
	int32_t x, y;
};
CMESH_TYPE_DEFINE_PLAIN(point_type, struct point);
CMESH_CHANNEL_PROTOTYPE(point, struct point)

Test(channel, prototype_wrappers_send_and_receive_typed_messages)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct point p;

	chan(&point_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(point_try_recv(rx, &p), -EAGAIN);
	TU_ASSERT_RC(point_recv_deadline(rx, cmesh_deadline_after(TU_MS(1)),
					 &p),
		     -ETIMEDOUT);
	for (int32_t i = 0; i < 3; i++)
		TU_ASSERT_RC(point_send(tx, &(struct point){ i, -i }), 0);
	TU_ASSERT_RC(point_try_recv(rx, &p), 0);
	cr_assert(p.x == 0 && p.y == 0);
	TU_ASSERT_RC(point_recv(rx, &p), 0);
	cr_assert(p.x == 1 && p.y == -1);
	TU_ASSERT_RC(point_recv_deadline(rx, cmesh_deadline_after(TU_MS(1000)),
					 &p),
		     0);
	cr_assert(p.x == 2 && p.y == -2);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(point_recv(rx, &p), -EPIPE);
	cmesh_receiver_free(rx);
}

/* ---- resources over many channels -------------------------------------- */

static void churn_once(uint8_t *buf, size_t len)
{
	cmesh_sender *tx, *c;
	cmesh_receiver *rx;
	struct trailmsg m = { 0 };

	chan(&trail_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &c), 0);
	for (int i = 0; i < 8; i++)
		TU_ASSERT_RC(cmesh_sender_send(i & 1 ? c : tx, &m, buf,
					       i == 3 ? len : 16),
			     0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, buf, len), 16);
	/* The rest is dropped with the receiver. */
	cmesh_receiver_free(rx);
	cmesh_sender_free(c);
	cmesh_sender_free(tx);
}

Test(channel, creating_and_freeing_channels_leaves_fd_and_mapping_counts_same)
{
	const size_t len = 1u << 20;
	uint8_t *buf = calloc(1, len);
	int fds, maps;

	cr_assert_not_null(buf);
	churn_once(buf, len);
	fds = fd_baseline();
	maps = tu_map_count();
	for (int i = 0; i < 200; i++)
		churn_once(buf, len);
	TU_ASSERT_FDS(fds);
	/* ASan's allocator keeps freed memory mapped (quarantine). */
	if (!tu_sanitized())
		cr_assert_leq(tu_map_count(), maps + 2,
			      "mappings grew from %d to %d", maps,
			      tu_map_count());
	free(buf);
}

/* ---- every kind of resource in one message ------------------------------- */

/* The peers of the endpoints carried in an allmsg, kept by the test. */
struct all_peers {
	int rfd;		 /* read end of the carried pipe */
	cmesh_receiver *tx_peer; /* receiver of the carried sender */
	cmesh_sender *rx_peer;	 /* sender of the carried receiver */
	cmesh_oneshot_receiver *otx_peer;
	cmesh_oneshot_sender *orx_peer;
};

static struct allmsg make_all(struct all_peers *p, const cmesh_type *rx_type)
{
	struct allmsg m = { 0 };
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	int fds[2];

	tu_pipe(fds);
	p->rfd = fds[0];
	m.fd = fds[1];
	chan(&seq_type, 0, 0, &m.tx, &p->tx_peer);
	chan(rx_type, 0, 0, &p->rx_peer, &m.rx);
	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &m.otx, &p->otx_peer), 0);
	TU_ASSERT_RC(cmesh_oneshot_new(&seq_type, &otx, &orx), 0);
	m.orx = orx;
	p->orx_peer = otx;
	return m;
}

/* Checks that every resource of a dropped allmsg was released. */
static void expect_all_released(struct all_peers *p)
{
	struct seqmsg s = { 0 };

	cr_assert(tu_pipe_sees_eof(p->rfd, 1000), "fd field not closed");
	close(p->rfd);
	TU_ASSERT_RC(cmesh_receiver_try_recv(p->tx_peer, &s, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_sender_send(p->rx_peer, &s, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(p->otx_peer, &s, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_oneshot_send(p->orx_peer, &s, NULL, 0), -EPIPE);
	cmesh_receiver_free(p->tx_peer);
	cmesh_sender_free(p->rx_peer);
	cmesh_oneshot_receiver_free(p->otx_peer);
}

Test(channel, every_kind_of_resource_moves_in_one_message)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct all_peers p;
	struct allmsg m, out;
	struct seqmsg s = { .seq = 5 };
	char c;
	int fds = fd_baseline();

	chan(&all_type, 0, 0, &tx, &rx);
	m = make_all(&p, &seq_type);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, NULL, 0), 0);
	/* Each arrived usable. */
	cr_assert_eq(write(out.fd, "q", 1), 1);
	cr_assert_eq(read(p.rfd, &c, 1), 1);
	TU_ASSERT_RC(cmesh_sender_send(out.tx, &s, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(p.tx_peer, &s, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_sender_send(p.rx_peer, &s, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(out.rx, &s, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_send(out.otx, &s, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(p.otx_peer, &s, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_send(p.orx_peer, &s, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(out.orx, &s, NULL, 0), 0);
	cr_assert_eq(s.seq, 5);
	close(out.fd);
	close(p.rfd);
	cmesh_sender_free(out.tx);
	cmesh_receiver_free(out.rx);
	cmesh_oneshot_receiver_free(out.orx);
	cmesh_receiver_free(p.tx_peer);
	cmesh_sender_free(p.rx_peer);
	cmesh_oneshot_receiver_free(p.otx_peer);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

Test(channel, every_kind_of_resource_is_released_when_the_send_fails)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct all_peers p;
	struct allmsg m;
	int fds = fd_baseline();

	chan(&all_type, 0, 0, &tx, &rx);
	/* -EBADMSG: only the receiver field has the wrong type. */
	m = make_all(&p, &other_type);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EBADMSG);
	expect_all_released(&p);
	/* -EINVAL: NULL trail with a length. */
	m = make_all(&p, &seq_type);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 10), -EINVAL);
	expect_all_released(&p);
	/* -EPIPE: the receiver is gone. */
	cmesh_receiver_free(rx);
	m = make_all(&p, &seq_type);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EPIPE);
	expect_all_released(&p);
	cmesh_sender_free(tx);
	TU_ASSERT_FDS(fds);
}

Test(channel, every_kind_of_resource_queued_is_released_with_the_receiver)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct all_peers p[40];
	struct allmsg m;
	static uint8_t trail[400];
	int fds = fd_baseline();

	/* Enough to spill out of a 4 KiB ring into the overflow list. */
	chan(&all_type, 4096, 0, &tx, &rx);
	for (int i = 0; i < 40; i++) {
		m = make_all(&p[i], &seq_type);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 100), -EINVAL);
		expect_all_released(&p[i]);
		m = make_all(&p[i], &seq_type);
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, trail, (size_t)i * 10),
			     0);
	}
	cmesh_receiver_free(rx);
	for (int i = 0; i < 40; i++)
		expect_all_released(&p[i]);
	cmesh_sender_free(tx);
	TU_ASSERT_FDS(fds);
}

Test(channel, default_max_message_allows_64_mib_and_rejects_one_byte_more)
{
	const size_t max = 64u << 20;
	uint8_t *buf = malloc(max + 1), *out = malloc(max);
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct trailmsg m = { .seq = 1 };

	cr_assert(buf && out);
	tu_env_clear();
	memset(buf, 0x3c, max + 1);
	buf[0] = 1;
	buf[max - 1] = 2;
	chan(&trail_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, buf, max + 1), -EMSGSIZE);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, buf, max), 0);
	TU_ASSERT_RC(cmesh_receiver_try_peek(rx), (int)max);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, out, max), (int)max);
	cr_assert_eq(memcmp(out, buf, max), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	free(buf);
	free(out);
}

/* ---- the last message before the last free ------------------------------ */

struct last_words {
	cmesh_sender **tx;
	int n;
};

static void *say_last_words(void *arg)
{
	struct last_words *lw = arg;

	for (int i = 0; i < lw->n; i++) {
		struct seqmsg m = { .sender = 1, .seq = (uint64_t)i };

		if (cmesh_sender_send(lw->tx[i], &m, NULL, 0) != 0)
			m.seq = UINT64_MAX; /* the receiver will notice */
		cmesh_sender_free(lw->tx[i]);
	}
	return NULL;
}

Test(channel, a_message_sent_just_before_the_last_free_is_never_lost)
{
	enum {
		N = 1000
	};
	cmesh_sender *tx[N];
	cmesh_receiver *rx[N];
	struct last_words lw = { tx, N };
	pthread_t t;

	for (int i = 0; i < N; i++)
		chan(&seq_type, 4096, i % 2 ? CMESH_SPIN_NONE : 0, &tx[i],
		     &rx[i]);
	tu_thread_start(&t, say_last_words, &lw);
	for (int i = 0; i < N; i++) {
		struct seqmsg m;

		TU_ASSERT_RC(cmesh_receiver_recv(rx[i], &m, NULL, 0), 0);
		cr_assert_eq(m.seq, (uint64_t)i);
		TU_ASSERT_RC(cmesh_receiver_recv(rx[i], &m, NULL, 0), -EPIPE);
		cmesh_receiver_free(rx[i]);
	}
	tu_thread_join(t);
}

/* ---- a channel's own endpoints inside its messages ------------------------ */

/* Carries a sender of its own type. */
struct selfmsg {
	uint64_t tag;
	cmesh_sender *tx;
};
extern const cmesh_type self_type;
CMESH_TYPE_DEFINE(self_type, struct selfmsg,
		  CMESH_FIELD_SENDER(struct selfmsg, tx, self_type));

Test(channel, a_sender_sent_through_its_own_channel_keeps_it_open)
{
	cmesh_sender *tx, *c;
	cmesh_receiver *rx;
	struct selfmsg m = { .tag = 1 }, out;

	/*
	 * type.h does not say whether a type may name itself; cmesh accepts
	 * it (the fingerprint uses back-references), and these tests rely
	 * on that.
	 */
	TU_ASSERT_RC(cmesh_type_check(&self_type), 0);
	chan(&self_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &c), 0);
	m.tx = c;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_sender_free(tx);
	/* The queued message holds a sender: not closed. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.tag, 1);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	m = (struct selfmsg){ .tag = 2 };
	TU_ASSERT_RC(cmesh_sender_send(out.tx, &m, NULL, 0), 0);
	cmesh_sender_free(out.tx);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), 0);
	cr_assert_eq(m.tag, 2);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx);
}

Test(channel, freeing_a_receiver_whose_queue_holds_its_own_senders_is_clean)
{
	cmesh_sender *tx, *c;
	cmesh_receiver *rx;
	struct selfmsg m = { .tag = 1 };

	/*
	 * type.h does not say whether a type may name itself; cmesh accepts
	 * it (the fingerprint uses back-references), and these tests rely
	 * on that.
	 */
	TU_ASSERT_RC(cmesh_type_check(&self_type), 0);
	for (int ring = 0; ring < 2; ring++) {
		chan(&self_type, ring ? 4096 : 0, 0, &tx, &rx);
		for (int i = 0; i < 300; i++) {
			TU_ASSERT_RC(cmesh_sender_clone(tx, &c), 0);
			m.tx = c;
			TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
		}
		cmesh_sender_free(tx);
		/* Releasing the queue drops the last senders (LSan checks). */
		cmesh_receiver_free(rx);
	}
	/* And with the original sender still alive, then freed after. */
	chan(&self_type, 0, 0, &tx, &rx);
	TU_ASSERT_RC(cmesh_sender_clone(tx, &c), 0);
	m.tx = c;
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_receiver_free(rx);
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct selfmsg){ 0 }, NULL, 0),
		     -EPIPE);
	cmesh_sender_free(tx);
}
