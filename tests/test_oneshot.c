/* SPDX-License-Identifier: MIT */
/*
 * test_oneshot.c - oneshots: one value once, closing, resources, deadlines,
 * and oneshot endpoints moving inside channel messages.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"

#include <criterion/criterion.h>

#include <pthread.h>

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(oneshot, .init = tu_suite_init, .fini = tu_suite_fini);

struct val {
	uint64_t v;
	int fd;
	int pad;
};
CMESH_TYPE_DEFINE(val_type, struct val, CMESH_FIELD_FD(struct val, fd));

struct other {
	uint32_t a;
};
CMESH_TYPE_DEFINE_PLAIN(other_type, struct other);

/* A request carrying the oneshot sender for its reply. */
struct request {
	uint64_t x;
	cmesh_oneshot_sender *reply;
};
CMESH_TYPE_DEFINE(request_type, struct request,
		  CMESH_FIELD_ONESHOT_SENDER(struct request, reply, val_type));

/* A message carrying a oneshot receiver. */
struct handoff {
	uint64_t tag;
	cmesh_oneshot_receiver *rx;
};
CMESH_TYPE_DEFINE(handoff_type, struct handoff,
		  CMESH_FIELD_ONESHOT_RECEIVER(struct handoff, rx, val_type));

static void oneshot(const cmesh_type *type, cmesh_oneshot_sender **tx,
		    cmesh_oneshot_receiver **rx)
{
	int r = cmesh_oneshot_new(type, tx, rx);

	cr_assert_eq(r, 0, "cmesh_oneshot_new: %d (%s)", r, cmesh_strerror(r));
	cr_assert_not_null(*tx);
	cr_assert_not_null(*rx);
}

/* fd count once cmesh has set up whatever it keeps per process. */
static int fd_baseline(void)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .fd = -1 };

	oneshot(&val_type, &tx, &rx);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(1)), &v, NULL, 0),
		     -ETIMEDOUT);
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &v, NULL, 0), 0);
	cmesh_oneshot_receiver_free(rx);
	return tu_fd_count();
}

Test(oneshot, sends_and_receives_one_value_with_an_fd_and_trailing_bytes)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 99 }, out;
	struct stat before, after;
	char trail[300], got[300];
	int p[2], fds = fd_baseline();

	oneshot(&val_type, &tx, &rx);
	tu_pipe(p);
	cr_assert_eq(fstat(p[1], &before), 0);
	v.fd = p[1];
	tu_fill(trail, sizeof(trail), 3);
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, trail, sizeof(trail)), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, got, sizeof(got)), 300);
	cr_assert_eq(out.v, 99);
	cr_assert_eq(tu_check(got, sizeof(got), 3), sizeof(got));
	cr_assert_geq(out.fd, 0);
	cr_assert_eq(fstat(out.fd, &after), 0);
	cr_assert_eq(after.st_ino, before.st_ino);
	cr_assert_eq(after.st_dev, before.st_dev);
	cr_assert_eq(write(out.fd, "z", 1), 1);
	close(out.fd);
	cr_assert_not(tu_pipe_sees_eof(p[0], 1000)); /* reads the 'z' */
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	cmesh_oneshot_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

Test(oneshot, carries_a_mebibyte_of_trailing_bytes)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 1, .fd = -1 }, out;
	size_t len = 1u << 20;
	char *buf = malloc(len), *got = malloc(len);

	cr_assert(buf && got);
	oneshot(&val_type, &tx, &rx);
	tu_fill(buf, len, 77);
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, buf, len), 0);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &out, got, len), (int)len);
	cr_assert_eq(tu_check(got, len, 77), len);
	cr_assert_lt(out.fd, 0);
	cmesh_oneshot_receiver_free(rx);
	free(buf);
	free(got);
}

Test(oneshot, try_recv_before_the_send_returns_eagain)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 5, .fd = -1 }, out;

	oneshot(&val_type, &tx, &rx);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0), -EAGAIN);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0), -EAGAIN);
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.v, 5);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, recv_deadline_before_the_send_times_out)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val out;
	int64_t t0;

	oneshot(&val_type, &tx, &rx);
	t0 = tu_now_ns();
	TU_ASSERT_RC(
		cmesh_oneshot_recv_deadline(rx, cmesh_deadline_after(TU_MS(20)),
					    &out, NULL, 0),
		-ETIMEDOUT);
	cr_assert_geq(tu_now_ns() - t0, TU_MS(20));
	cr_assert_lt(tu_now_ns() - t0, TU_MS(5000));
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(rx, cmesh_clock_now() - 1,
						 &out, NULL, 0),
		     -ETIMEDOUT);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(1000));
	cmesh_oneshot_sender_free(tx);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, sender_freed_without_sending_makes_the_receiver_get_epipe)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val out;

	oneshot(&val_type, &tx, &rx);
	cmesh_oneshot_sender_free(tx);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &out, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(rx, CMESH_DEADLINE_NONE, &out,
						 NULL, 0),
		     -EPIPE);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, a_second_recv_after_the_value_returns_epipe)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 8, .fd = -1 }, out;

	oneshot(&val_type, &tx, &rx);
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.v, 8);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &out, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(1000)), &out, NULL,
			     0),
		     -EPIPE);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, send_after_the_receiver_is_freed_returns_epipe_and_closes_fd)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 1 };
	int p[2], fds = fd_baseline();

	oneshot(&val_type, &tx, &rx);
	cmesh_oneshot_receiver_free(rx);
	tu_pipe(p);
	v.fd = p[1];
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, "ab", 2), -EPIPE);
	TU_ASSERT_FDS(fds + 1);
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	TU_ASSERT_FDS(fds);
}

Test(oneshot, send_with_null_arguments_is_einval_and_still_frees_the_sender)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 1, .fd = -1 }, out;

	TU_ASSERT_RC(cmesh_oneshot_send(NULL, &v, NULL, 0), -EINVAL);
	oneshot(&val_type, &tx, &rx);
	/* tx is freed even so (LeakSanitizer checks), so rx sees closed. */
	TU_ASSERT_RC(cmesh_oneshot_send(tx, NULL, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0), -EPIPE);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, new_rejects_null_arguments_and_invalid_types)
{
	static const cmesh_type bad = { "bad", 0, 0, NULL };
	cmesh_oneshot_sender *tx = NULL;
	cmesh_oneshot_receiver *rx = NULL;
	int fds = fd_baseline();

	TU_ASSERT_RC(cmesh_oneshot_new(NULL, &tx, &rx), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_new(&val_type, NULL, &rx), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_new(&val_type, &tx, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_new(&bad, &tx, &rx), -EINVAL);
	TU_ASSERT_FDS(fds);
}

Test(oneshot, recv_functions_reject_null_arguments)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 3, .fd = -1 }, out;
	int64_t dl = cmesh_deadline_after(TU_MS(10));

	oneshot(&val_type, &tx, &rx);
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(NULL, &out, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_recv(NULL, &out, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(NULL, dl, &out, NULL, 0),
		     -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, NULL, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, NULL, NULL, 0), -EINVAL);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(rx, dl, NULL, NULL, 0),
		     -EINVAL);
	/* The value is still there. */
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.v, 3);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, free_of_null_is_a_noop)
{
	cmesh_oneshot_sender_free(NULL);
	cmesh_oneshot_receiver_free(NULL);
}

struct later {
	cmesh_oneshot_sender *tx;
	unsigned delay_ms;
	bool drop;
	int rc;
};

static void *send_later(void *arg)
{
	struct later *l = arg;
	struct val v = { .v = 4242, .fd = -1 };

	tu_sleep_ms(l->delay_ms);
	if (l->drop)
		cmesh_oneshot_sender_free(l->tx);
	else
		l->rc = cmesh_oneshot_send(l->tx, &v, NULL, 0);
	return NULL;
}

Test(oneshot, blocking_recv_is_woken_by_a_send_from_another_thread)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct later l;
	struct val out;
	pthread_t t;

	oneshot(&val_type, &tx, &rx);
	l = (struct later){ .tx = tx, .delay_ms = 20 };
	tu_thread_start(&t, send_later, &l);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.v, 4242);
	tu_thread_join(t);
	TU_ASSERT_RC(l.rc, 0);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, recv_deadline_returns_a_value_sent_later_by_another_thread)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct later l;
	struct val out;
	pthread_t t;
	int64_t t0 = tu_now_ns();

	oneshot(&val_type, &tx, &rx);
	l = (struct later){ .tx = tx, .delay_ms = 10 };
	tu_thread_start(&t, send_later, &l);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(5000)), &out, NULL,
			     0),
		     0);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(5000));
	cr_assert_eq(out.v, 4242);
	tu_thread_join(t);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, blocking_recv_returns_epipe_when_the_sender_is_freed_elsewhere)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct later l;
	struct val out;
	pthread_t t;

	oneshot(&val_type, &tx, &rx);
	l = (struct later){ .tx = tx, .delay_ms = 20, .drop = true };
	tu_thread_start(&t, send_later, &l);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &out, NULL, 0), -EPIPE);
	tu_thread_join(t);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, a_small_trail_buffer_is_emsgsize_then_a_bigger_one_receives)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 6, .fd = -1 }, out;
	char data[64], small[10], big[64];

	oneshot(&val_type, &tx, &rx);
	tu_fill(data, sizeof(data), 1);
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, data, sizeof(data)), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, small, sizeof(small)),
		     -EMSGSIZE);
	TU_ASSERT_RC(cmesh_oneshot_recv(rx, &out, small, sizeof(small)),
		     -EMSGSIZE);
	TU_ASSERT_RC(cmesh_oneshot_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(100)), &out, NULL,
			     0),
		     -EMSGSIZE);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, big, sizeof(big)), 64);
	cr_assert_eq(out.v, 6);
	cr_assert_eq(tu_check(big, sizeof(big), 1), sizeof(big));
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, big, sizeof(big)),
		     -EPIPE);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, trailing_bytes_over_cmesh_max_message_are_emsgsize)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 1 }, out;
	static char data[2048];
	int p[2], fds;

	cr_assert_eq(setenv("CMESH_MAX_MESSAGE", "1K", 1), 0);
	fds = fd_baseline();
	oneshot(&val_type, &tx, &rx);
	tu_pipe(p);
	v.fd = p[1];
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, data, 1025), -EMSGSIZE);
	/* The sender is consumed and the fd released. */
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, data, sizeof(data)),
		     -EPIPE);
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	cmesh_oneshot_receiver_free(rx);
	/* At the limit is fine. */
	oneshot(&val_type, &tx, &rx);
	v.fd = -1;
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, data, 1024), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, data, sizeof(data)),
		     1024);
	cmesh_oneshot_receiver_free(rx);
	TU_ASSERT_FDS(fds);
}

Test(oneshot, freeing_the_receiver_releases_a_pending_value)
{
	cmesh_oneshot_sender *tx;
	cmesh_oneshot_receiver *rx;
	struct val v = { .v = 1 };
	int p[2], fds = fd_baseline();

	oneshot(&val_type, &tx, &rx);
	tu_pipe(p);
	v.fd = p[1];
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, "tail", 4), 0);
	TU_ASSERT_FDS(fds + 2);
	cmesh_oneshot_receiver_free(rx);
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	TU_ASSERT_FDS(fds);
}

/* A server thread answering requests through the oneshot they carry. */
struct server {
	cmesh_receiver *rx;
	uint64_t served;
	int rc;
};

static void *server_main(void *arg)
{
	struct server *s = arg;
	struct request req;
	int r;

	while ((r = cmesh_receiver_recv(s->rx, &req, NULL, 0)) == 0) {
		struct val v = { .v = req.x * 2, .fd = -1 };

		r = cmesh_oneshot_send(req.reply, &v, NULL, 0);
		if (r) {
			s->rc = r;
			break;
		}
		s->served++;
	}
	if (r != -EPIPE && !s->rc)
		s->rc = r;
	return NULL;
}

Test(oneshot, a_oneshot_sender_carried_in_a_request_brings_the_reply_back)
{
	cmesh_sender *tx;
	struct server s = { 0 };
	pthread_t t;
	const uint64_t n = 500;

	TU_ASSERT_RC(cmesh_channel_new(&request_type, NULL, &tx, &s.rx), 0);
	tu_thread_start(&t, server_main, &s);
	for (uint64_t i = 0; i < n; i++) {
		cmesh_oneshot_sender *otx;
		cmesh_oneshot_receiver *orx;
		struct request req = { .x = i };
		struct val v;

		oneshot(&val_type, &otx, &orx);
		req.reply = otx;
		TU_ASSERT_RC(cmesh_sender_send(tx, &req, NULL, 0), 0);
		TU_ASSERT_RC(cmesh_oneshot_recv_deadline(
				     orx, cmesh_deadline_after(TU_MS(10000)),
				     &v, NULL, 0),
			     0);
		cr_assert_eq(v.v, 2 * i);
		cmesh_oneshot_receiver_free(orx);
	}
	cmesh_sender_free(tx);
	tu_thread_join(t);
	TU_ASSERT_RC(s.rc, 0);
	cr_assert_eq(s.served, n);
	cmesh_receiver_free(s.rx);
}

Test(oneshot, a_queued_request_dropped_with_its_channel_closes_the_reply)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	struct request req = { .x = 1 };
	struct val v;

	TU_ASSERT_RC(cmesh_channel_new(&request_type, NULL, &tx, &rx), 0);
	oneshot(&val_type, &otx, &orx);
	req.reply = otx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &req, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(orx, &v, NULL, 0), -EAGAIN);
	cmesh_receiver_free(rx);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(orx, &v, NULL, 0), -EPIPE);
	cmesh_oneshot_receiver_free(orx);
	cmesh_sender_free(tx);
}

Test(oneshot, a_oneshot_receiver_moves_through_a_channel_and_receives)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	struct handoff h = { .tag = 2 }, out;
	struct val v = { .v = 31, .fd = -1 };

	TU_ASSERT_RC(cmesh_channel_new(&handoff_type, NULL, &tx, &rx), 0);
	oneshot(&val_type, &otx, &orx);
	h.rx = orx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &h, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_oneshot_send(otx, &v, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &out, NULL, 0), 0);
	cr_assert_eq(out.tag, 2);
	cr_assert_not_null(out.rx);
	memset(&v, 0, sizeof(v));
	TU_ASSERT_RC(cmesh_oneshot_try_recv(out.rx, &v, NULL, 0), 0);
	cr_assert_eq(v.v, 31);
	cmesh_oneshot_receiver_free(out.rx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(oneshot, a_oneshot_receiver_released_on_send_failure_closes_its_sender)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	struct handoff h = { .tag = 2 };
	struct val v = { .v = 1 };
	int p[2];

	TU_ASSERT_RC(cmesh_channel_new(&handoff_type, NULL, &tx, &rx), 0);
	cmesh_receiver_free(rx);
	oneshot(&val_type, &otx, &orx);
	h.rx = orx;
	TU_ASSERT_RC(cmesh_sender_send(tx, &h, NULL, 0), -EPIPE);
	tu_pipe(p);
	v.fd = p[1];
	TU_ASSERT_RC(cmesh_oneshot_send(otx, &v, NULL, 0), -EPIPE);
	cr_assert(tu_pipe_sees_eof(p[0], 1000));
	close(p[0]);
	cmesh_sender_free(tx);
}

Test(oneshot, an_endpoint_of_another_type_is_ebadmsg_and_is_released)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	struct request req = { .x = 1 };
	struct other o;

	TU_ASSERT_RC(cmesh_channel_new(&request_type, NULL, &tx, &rx), 0);
	oneshot(&other_type, &otx, &orx);
	req.reply = otx; /* the field wants a val_type oneshot */
	TU_ASSERT_RC(cmesh_sender_send(tx, &req, NULL, 0), -EBADMSG);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(orx, &o, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &req, NULL, 0), -EAGAIN);
	cmesh_oneshot_receiver_free(orx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(oneshot, an_endpoint_field_in_a_oneshot_value_is_type_checked)
{
	cmesh_oneshot_sender *tx, *otx;
	cmesh_oneshot_receiver *rx, *orx;
	struct request req = { .x = 1 };
	struct other o;

	/* A oneshot whose value itself carries a oneshot sender. */
	oneshot(&request_type, &tx, &rx);
	oneshot(&other_type, &otx, &orx);
	req.reply = otx;
	TU_ASSERT_RC(cmesh_oneshot_send(tx, &req, NULL, 0), -EBADMSG);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(orx, &o, NULL, 0), -EPIPE);
	TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &req, NULL, 0), -EPIPE);
	cmesh_oneshot_receiver_free(orx);
	cmesh_oneshot_receiver_free(rx);
}

Test(oneshot, creating_and_freeing_many_oneshots_leaves_no_fds_or_mappings)
{
	int fds = fd_baseline(), maps = tu_map_count();

	for (int i = 0; i < 500; i++) {
		cmesh_oneshot_sender *tx;
		cmesh_oneshot_receiver *rx;
		struct val v = { .v = (uint64_t)i, .fd = -1 };

		oneshot(&val_type, &tx, &rx);
		switch (i % 3) {
		case 0:
			TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, "x", 1), 0);
			break;
		case 1:
			cmesh_oneshot_sender_free(tx);
			break;
		default:
			cmesh_oneshot_receiver_free(rx);
			rx = NULL;
			TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, NULL, 0),
				     -EPIPE);
		}
		cmesh_oneshot_receiver_free(rx);
	}
	TU_ASSERT_FDS(fds);
	if (!tu_sanitized())
		cr_assert_leq(tu_map_count(), maps + 2);
}

/*
 * Queues freed by a thread are made again from the same memory (the
 * thread's cache, src/queue_reuse.c): each new oneshot starts empty
 * (nothing of its predecessor's value shows), open, and carries its own
 * value, across many generations and with the values left unread too.
 */
Test(oneshot, a_new_oneshot_in_reused_memory_starts_empty_and_open)
{
	for (uint64_t i = 1; i <= 200; i++) {
		cmesh_oneshot_sender *tx;
		cmesh_oneshot_receiver *rx;
		struct val v = { .v = i, .fd = -1 }, out = { 0 };

		oneshot(&val_type, &tx, &rx);
		TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0),
			     -EAGAIN);
		TU_ASSERT_RC(cmesh_oneshot_sender_is_closed(tx), 0);
		TU_ASSERT_RC(cmesh_oneshot_send(tx, &v, NULL, 0), 0);
		if (i % 3) {
			TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0),
				     0);
			cr_assert_eq(out.v, i);
			TU_ASSERT_RC(cmesh_oneshot_try_recv(rx, &out, NULL, 0),
				     -EPIPE);
		}
		cmesh_oneshot_receiver_free(rx);
	}
}

/* ---- a second receive right after the value ---- */

/*
 * One sending thread for every round (a thread per round made the test
 * take most of its time budget under ASan): each round hands it a fresh
 * oneshot sender, which it sends on at once.
 */
struct sender_loop {
	_Atomic(cmesh_oneshot_sender *) tx; /* this round's; NULL: none */
	_Atomic int sent;		    /* rounds whose send returned */
	_Atomic bool stop;
	int r; /* the first send that failed, or 0 */
};

static void *send_loop(void *arg)
{
	struct sender_loop *s = arg;

	for (int n = 1;; n++) {
		cmesh_oneshot_sender *tx;
		int r;

		for (int k = 0; !(tx = atomic_exchange(&s->tx, NULL)); k++) {
			if (atomic_load(&s->stop))
				return NULL;
			if (k >= 256)
				sched_yield();
		}
		r = cmesh_oneshot_send(tx, &(struct other){ 7 }, NULL, 0);
		if (r && !s->r)
			s->r = r;
		atomic_store(&s->sent, n);
	}
}

/*
 * The value taken, a second receive says -EPIPE at once, even while the
 * sending thread has not let go of its sender yet (it publishes, wakes,
 * then puts its reference: in that moment the queue itself is not
 * closed).
 */
Test(oneshot, a_second_receive_right_after_the_value_is_epipe)
{
	int rounds = (int)tu_stress(5000, 1000);
	struct sender_loop s = { .tx = NULL };
	pthread_t t;

	tu_thread_start(&t, send_loop, &s);
	for (int i = 0; i < rounds; i++) {
		cmesh_oneshot_sender *tx;
		cmesh_oneshot_receiver *rx;
		struct other v;
		int r;

		TU_ASSERT_RC(cmesh_oneshot_new(&other_type, &tx, &rx), 0);
		atomic_store(&s.tx, tx);
		/*
		 * Polls, then yields: on a loaded 2-CPU host a bare spin
		 * can hold the CPU the sending thread waits for.
		 */
		for (int n = 0;
		     (r = cmesh_oneshot_try_recv(rx, &v, NULL, 0)) == -EAGAIN;
		     n++)
			if (n >= 256)
				sched_yield();
		cr_assert_eq(r, 0);
		r = cmesh_oneshot_try_recv(rx, &v, NULL, 0);
		cr_assert_eq(r, -EPIPE, "round %d: the second receive said %d",
			     i, r);
		/* Its send returned (as a join of its thread said before). */
		while (atomic_load(&s.sent) != i + 1)
			sched_yield();
		cr_assert_eq(s.r, 0);
		cmesh_oneshot_receiver_free(rx);
	}
	atomic_store(&s.stop, true);
	tu_thread_join(t);
}
