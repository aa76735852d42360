/* SPDX-License-Identifier: MIT */
/*
 * test_pipe.c - pipes (include/cmesh/pipe.h): mesh's pipe cases in one
 * process and across two: 1,000,000 bytes written and read concurrently
 * with an xxHash checksum; exactly 64 one-byte writes, then backpressure;
 * both ends moved mid-stream ("hello world", then "!", then EOF); EOF,
 * -EPIPE, -ECONNRESET; the ends' fds in a poll loop; argument checks.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

TestSuite(pipe, .init = tu_suite_init, .fini = tu_suite_fini);

#define TOTAL 1000000u

/* Bytes i of the test stream. */
static uint8_t byte_at(uint64_t i)
{
	return (uint8_t)(i * 2654435761u >> 13);
}

struct writer_arg {
	cmesh_pipe_writer *w;
	uint64_t hash;
	int64_t rc;
};

/* Writes TOTAL bytes in writes of up to 64 KiB, then frees the writer. */
static void *write_all(void *arg)
{
	struct writer_arg *a = arg;
	static unsigned char buf[65536];
	XXH64_state_t *h = XXH64_createState();
	uint64_t off = 0;

	XXH64_reset(h, 0);
	a->rc = 0;
	while (off < TOTAL) {
		size_t n = TOTAL - off < sizeof(buf) ? TOTAL - off :
						       sizeof(buf);
		int64_t r;

		for (size_t i = 0; i < n; i++)
			buf[i] = byte_at(off + i);
		r = cmesh_pipe_write(a->w, buf, n, NULL);
		if (r != (int64_t)n) {
			a->rc = r < 0 ? r : -EIO;
			break;
		}
		XXH64_update(h, buf, n);
		off += n;
	}
	a->hash = XXH64_digest(h);
	XXH64_freeState(h);
	cmesh_pipe_writer_free(a->w);
	return NULL;
}

/* Reads to the end: the byte count, or an error; *hash of what came. */
static int64_t read_all(cmesh_pipe_reader *r, uint64_t *hash)
{
	static unsigned char buf[40000]; /* not a multiple of a chunk */
	XXH64_state_t *h = XXH64_createState();
	int64_t total = 0, n;

	XXH64_reset(h, 0);
	while ((n = cmesh_pipe_read(r, buf, sizeof(buf), NULL)) > 0) {
		for (int64_t i = 0; i < n; i++)
			if (buf[i] != byte_at((uint64_t)(total + i))) {
				XXH64_freeState(h);
				return -EIO;
			}
		XXH64_update(h, buf, (size_t)n);
		total += n;
	}
	*hash = XXH64_digest(h);
	XXH64_freeState(h);
	return n < 0 ? n : total;
}

Test(pipe, a_million_bytes_in_one_process)
{
	struct writer_arg a;
	cmesh_pipe_reader *r;
	uint64_t hash;
	pthread_t t;

	TU_ASSERT_RC(cmesh_pipe_new(&a.w, &r), 0);
	tu_thread_start(&t, write_all, &a);
	cr_assert_eq(read_all(r, &hash), TOTAL);
	tu_thread_join(t);
	cr_assert_eq(a.rc, 0);
	cr_assert_eq(hash, a.hash);
	cmesh_pipe_reader_free(r);
}

Test(pipe, sixty_four_one_byte_writes_then_backpressure)
{
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	unsigned char b = 'x', buf[64];

	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	for (int i = 0; i < 64; i++)
		cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), 1, "write %d", i);
	cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), -EAGAIN);
	/* A blocking write waits: its context ends first. */
	{
		cmesh_ctx *ctx;

		TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(10), &ctx), 0);
		cr_assert_eq(cmesh_pipe_write(w, &b, 1, ctx), -ETIMEDOUT);
		cmesh_ctx_free(ctx);
	}
	/* Half the window read: that much credit comes back, and the
	 * writer's fd says so. */
	{
		struct pollfd p = { .fd = cmesh_pipe_writer_fd(w),
				    .events = POLLIN };

		cr_assert_geq(p.fd, 0);
		cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), -EAGAIN);
		cr_assert_eq(poll(&p, 1, 0), 0, "readable with no credit");
		cr_assert_eq(cmesh_pipe_read(r, buf, 32, NULL), 32);
		cr_assert_eq(poll(&p, 1, TOPO_WAIT_MS), 1);
	}
	for (int i = 0; i < 32; i++)
		cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), 1, "again %d", i);
	cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), -EAGAIN);
	cmesh_pipe_writer_free(w);
	cmesh_pipe_reader_free(r);
}

Test(pipe, eof_and_a_writer_whose_reader_is_gone)
{
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	char buf[16] = { 0 };

	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	cr_assert_eq(cmesh_pipe_write(w, "abc", 3, NULL), 3);
	cmesh_pipe_writer_free(w);
	cr_assert_eq(cmesh_pipe_read(r, buf, sizeof(buf), NULL), 3);
	cr_assert_str_eq(buf, "abc");
	cr_assert_eq(cmesh_pipe_read(r, buf, sizeof(buf), NULL), 0);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), 0);
	cmesh_pipe_reader_free(r);

	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	cmesh_pipe_reader_free(r);
	cr_assert_eq(cmesh_pipe_write(w, "abc", 3, NULL), -EPIPE);
	cr_assert_eq(cmesh_pipe_try_write(w, "abc", 3), -EPIPE);
	cmesh_pipe_writer_free(w);
}

Test(pipe, bad_arguments)
{
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	cmesh_pipe_writer_port wp = { 0 };
	cmesh_pipe_reader_port rp = { 0 };
	char b;

	TU_ASSERT_RC(cmesh_pipe_new(NULL, &r), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_new(&w, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_writer_from_port(&wp, &w), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_reader_from_port(&rp, &r), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	cr_assert_eq(cmesh_pipe_write(NULL, &b, 1, NULL), -EINVAL);
	cr_assert_eq(cmesh_pipe_write(w, NULL, 1, NULL), -EINVAL);
	cr_assert_eq(cmesh_pipe_read(NULL, &b, 1, NULL), -EINVAL);
	cr_assert_eq(cmesh_pipe_read(r, NULL, 1, NULL), -EINVAL);
	cr_assert_eq(cmesh_pipe_write(w, &b, 0, NULL), 0);
	cr_assert_eq(cmesh_pipe_try_read(r, &b, 1), -EAGAIN);
	TU_ASSERT_RC(cmesh_pipe_writer_to_port(w, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_reader_to_port(r, NULL), -EINVAL);
	cmesh_pipe_writer_free(NULL);
	cmesh_pipe_reader_free(NULL);
	cmesh_pipe_writer_free(w);
	cmesh_pipe_reader_free(r);
}

struct poll_arg {
	cmesh_pipe_writer *w;
};

static void *late_write(void *arg)
{
	struct poll_arg *a = arg;

	tu_sleep_ms(20);
	cr_assert_eq(cmesh_pipe_write(a->w, "late", 4, NULL), 4);
	return NULL;
}

/* The reader's fd in the caller's own poll loop. */
Test(pipe, reader_fd_in_a_poll_loop)
{
	struct poll_arg a;
	cmesh_pipe_reader *r;
	struct pollfd p;
	char buf[8] = { 0 };
	pthread_t t;
	int64_t n;

	TU_ASSERT_RC(cmesh_pipe_new(&a.w, &r), 0);
	p.fd = cmesh_pipe_reader_fd(r);
	p.events = POLLIN;
	cr_assert_geq(p.fd, 0);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), -EAGAIN);
	tu_thread_start(&t, late_write, &a);
	while ((n = cmesh_pipe_try_read(r, buf, sizeof(buf))) == -EAGAIN)
		cr_assert_eq(poll(&p, 1, TOPO_WAIT_MS), 1);
	cr_assert_eq(n, 4);
	cr_assert_str_eq(buf, "late");
	tu_thread_join(t);
	cmesh_pipe_writer_free(a.w);
	cmesh_pipe_reader_free(r);
}

/* ---- ends in messages: in one process and across two ------------------- */

struct pmsg {
	int op;
	int pad;
	cmesh_pipe_writer_port w;
	cmesh_pipe_reader_port r;
};
CMESH_TYPE_DEFINE(pmsg_type, struct pmsg,
		  CMESH_FIELD_PIPE_WRITER(struct pmsg, w),
		  CMESH_FIELD_PIPE_READER(struct pmsg, r));

struct report {
	int64_t n;
	uint64_t hash;
	char text[32];
};
CMESH_TYPE_DEFINE_PLAIN(report_type, struct report);

enum {
	OP_BOTH = 1,  /* both ends: write "!", free the writer, read to end */
	OP_READ_ALL,  /* the reader: read to the end, report count and hash */
	OP_WRITE_ALL, /* the writer: write TOTAL bytes, report the hash */
	OP_READ_END   /* the reader: read to the end, report the text */
};

static int pipe_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	struct pmsg m;
	int e;

	(void)s;
	while ((e = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		struct report rep = { 0 };
		cmesh_pipe_writer *w = NULL;
		cmesh_pipe_reader *r = NULL;

		if (m.w.data)
			TOPO_CHECK_EQ(cmesh_pipe_writer_from_port(&m.w, &w), 0);
		if (m.r.data)
			TOPO_CHECK_EQ(cmesh_pipe_reader_from_port(&m.r, &r), 0);
		switch (m.op) {
		case OP_BOTH: {
			int64_t n, got = 0;

			TOPO_CHECK(w && r);
			TOPO_CHECK_EQ(cmesh_pipe_write(w, "!", 1, NULL), 1);
			cmesh_pipe_writer_free(w);
			while ((n = cmesh_pipe_read(r, rep.text + got,
						    sizeof(rep.text) - 1 -
							    (size_t)got,
						    NULL)) > 0)
				got += n;
			rep.n = n < 0 ? n : got;
			cmesh_pipe_reader_free(r);
			break;
		}
		case OP_READ_END: {
			int64_t n, got = 0;

			TOPO_CHECK(r && !w);
			while ((n = cmesh_pipe_read(r, rep.text + got,
						    sizeof(rep.text) - 1 -
							    (size_t)got,
						    NULL)) > 0)
				got += n;
			rep.n = n < 0 ? n : got;
			cmesh_pipe_reader_free(r);
			break;
		}
		case OP_READ_ALL:
			TOPO_CHECK(r);
			rep.n = read_all(r, &rep.hash);
			cmesh_pipe_reader_free(r);
			break;
		case OP_WRITE_ALL: {
			struct writer_arg a = { .w = w };

			TOPO_CHECK(w);
			write_all(&a);
			rep.n = a.rc;
			rep.hash = a.hash;
			break;
		}
		default:
			TOPO_CHECK(0);
		}
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &rep, NULL, 0), 0);
	}
	TOPO_CHECK_EQ(e, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static struct report get_report(cmesh_receiver *rx)
{
	struct report rep;

	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &rep,
						  NULL, 0),
		     0);
	return rep;
}

static void pipe_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	struct writer_arg a;
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	struct pmsg m = { .op = OP_BOTH };
	struct report rep;
	char buf[8] = { 0 };
	pthread_t t;

	(void)s;
	/* mesh: "hello world", both ends move, "!", EOF. We read "hello"
	 * first: the moved reader carries the rest of its chunk. */
	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	cr_assert_eq(cmesh_pipe_write(w, "hello world", 11, NULL), 11);
	cr_assert_eq(cmesh_pipe_read(r, buf, 5, NULL), 5);
	cr_assert_str_eq(buf, "hello");
	TU_ASSERT_RC(cmesh_pipe_writer_to_port(w, &m.w), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_to_port(r, &m.r), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	rep = get_report(rx);
	cr_assert_eq(rep.n, 7, "read %lld", (long long)rep.n);
	cr_assert_str_eq(rep.text, " world!");

	/* A million bytes: we write, the reader is over there. */
	TU_ASSERT_RC(cmesh_pipe_new(&a.w, &r), 0);
	m = (struct pmsg){ .op = OP_READ_ALL };
	TU_ASSERT_RC(cmesh_pipe_reader_to_port(r, &m.r), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	tu_thread_start(&t, write_all, &a);
	rep = get_report(rx);
	tu_thread_join(t);
	cr_assert_eq(a.rc, 0);
	cr_assert_eq(rep.n, TOTAL);
	cr_assert_eq(rep.hash, a.hash);

	/* And the other way: the writer over there, we read. */
	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	m = (struct pmsg){ .op = OP_WRITE_ALL };
	TU_ASSERT_RC(cmesh_pipe_writer_to_port(w, &m.w), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	{
		uint64_t hash;

		cr_assert_eq(read_all(r, &hash), TOTAL);
		rep = get_report(rx);
		cr_assert_eq(rep.n, 0);
		cr_assert_eq(hash, rep.hash);
	}
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &rep,
						  NULL, 0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario pipe_sc = {
	.down = &pmsg_type,
	.up = &report_type,
	.driver = pipe_driver,
	.peer = pipe_peer,
};

Test(pipe, ends_in_messages_in_process)
{
	topo_run(&pipe_sc, TOPO_THREAD);
}

Test(pipe, ends_in_messages_across_processes)
{
	topo_run(&pipe_sc, TOPO_FORK);
}

/*
 * Chunks across processes are sized from the data lane's ring: with a
 * 16 KiB ring (records up to 4 KiB) each chunk is one record of it; with
 * a 4 KiB ring (records up to 1 KiB, less than the smallest inline chunk)
 * each goes out of line in a memfd. Either way every byte arrives, in
 * order (the hashes of the million bytes each way are compared).
 */
Test(pipe, ends_in_messages_across_processes_with_a_16k_ring)
{
	cr_assert_eq(setenv("CMESH_RING_SIZE", "16384", 1), 0);
	topo_run(&pipe_sc, TOPO_FORK);
}

/*
 * Chunks never exceed what the channel carries: with CMESH_MAX_MESSAGE at
 * 4 KiB on both sides, a million bytes still cross (chunks of 4 KiB, not
 * the ring's 16 KiB record, which the peer would refuse: -EMSGSIZE).
 */
Test(pipe, chunks_fit_a_small_max_message_across_processes)
{
	cr_assert_eq(setenv("CMESH_MAX_MESSAGE", "4096", 1), 0);
	topo_run(&pipe_sc, TOPO_FORK);
}

Test(pipe, chunks_fit_a_small_max_message_in_process)
{
	cr_assert_eq(setenv("CMESH_MAX_MESSAGE", "4096", 1), 0);
	topo_run(&pipe_sc, TOPO_THREAD);
}

Test(pipe, ends_in_messages_across_processes_with_a_4k_ring)
{
	cr_assert_eq(setenv("CMESH_RING_SIZE", "4096", 1), 0);
	topo_run(&pipe_sc, TOPO_FORK);
}

/*
 * A reader cut mid-chunk and sent (to the other thread, or process): the
 * chunk's unread part goes with it (`rest`), the data receiver moves as
 * it is, and no forwarder is left behind here, neither at once nor once
 * the reader read on; what the writer writes later comes after it.
 */
static void cut_driver(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct pmsg m = { .op = OP_READ_END };
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	struct report rep;
	char buf[8] = { 0 };

	(void)s;
	cr_assert_eq(tu_threads_named("cmesh-forward", NULL), 0);
	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	cr_assert_eq(cmesh_pipe_write(w, "hello world", 11, NULL), 11);
	cr_assert_eq(cmesh_pipe_read(r, buf, 5, NULL), 5);
	cr_assert_str_eq(buf, "hello");
	TU_ASSERT_RC(cmesh_pipe_reader_to_port(r, &m.r), 0);
	cr_assert_not_null(m.r.rest, "the cut chunk's rest is not in the port");
	cr_assert_eq(tu_threads_named("cmesh-forward", NULL), 0,
		     "a forwarder feeds the moved reader");
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(cmesh_pipe_write(w, " and more", 9, NULL), 9);
	cmesh_pipe_writer_free(w);
	rep = get_report(rx);
	cr_assert_eq(rep.n, 15, "read %lld", (long long)rep.n);
	cr_assert_str_eq(rep.text, " world and more");
	cr_assert_eq(tu_threads_named("cmesh-forward", NULL), 0);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &rep,
						  NULL, 0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario cut_sc = {
	.down = &pmsg_type,
	.up = &report_type,
	.driver = cut_driver,
	.peer = pipe_peer,
};

Test(pipe, a_reader_cut_mid_chunk_moves_without_a_forwarder_in_process)
{
	topo_run(&cut_sc, TOPO_THREAD);
}

Test(pipe, a_reader_cut_mid_chunk_moves_without_a_forwarder_across_processes)
{
	topo_run(&cut_sc, TOPO_FORK);
}

/* A port's `rest` channel: made by hand, its chunk sent when we choose. */
static cmesh_pipe_reader *reader_with_rest(cmesh_sender **data_tx,
					   cmesh_sender **rest_tx,
					   cmesh_receiver **credit_rx)
{
	cmesh_pipe_reader_port port = { 0 };
	cmesh_pipe_reader *r;

	TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_data_type, NULL, data_tx,
				       &port.data),
		     0);
	TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_data_type, NULL, rest_tx,
				       &port.rest),
		     0);
	TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_credit_type, NULL,
				       &port.credit, credit_rx),
		     0);
	TU_ASSERT_RC(cmesh_pipe_reader_from_port(&port, &r), 0);
	cr_assert(!port.data && !port.credit && !port.rest);
	return r;
}

static void send_chunk(cmesh_sender *tx, const char *s)
{
	struct {
		uint64_t len;
	} c = { strlen(s) };

	TU_ASSERT_RC(cmesh_sender_send(tx, &c, s, c.len), 0);
}

/*
 * The rest comes first, whenever it comes: the reader's fd (and a
 * waitset it is in) is readable once it does, though `data` had a chunk
 * first; then `rest` goes and `data` is read.
 */
Test(pipe, a_rest_still_on_its_way_is_read_first_and_wakes_the_fd)
{
	cmesh_sender *dtx, *rtx;
	cmesh_receiver *crx;
	cmesh_pipe_reader *r = reader_with_rest(&dtx, &rtx, &crx);
	cmesh_waitset *ws;
	uint64_t key;
	char buf[32] = { 0 };
	struct pollfd p = { .events = POLLIN };

	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_add(r, ws, 7), 0);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), -EAGAIN);
	cr_assert_eq(cmesh_waitset_try_wait(ws, &key), -EAGAIN);
	/* data's chunk waits behind the rest that has not come yet. */
	send_chunk(dtx, "world");
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), -EAGAIN);
	send_chunk(rtx, "hello ");
	cr_assert_eq(cmesh_waitset_wait(ws, TU_MS(TOPO_WAIT_MS), &key), 0);
	cr_assert_eq(key, 7);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), 11);
	cr_assert_str_eq(buf, "hello world");
	/* The rest is gone: only data is a member now. */
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_remove(r, ws), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_remove(r, ws), -ENOENT);
	cr_assert_eq(cmesh_sender_is_closed(rtx), 1);
	cmesh_sender_free(rtx);

	/* The same through the reader's own fd. */
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(dtx);
	cmesh_receiver_free(crx);
	r = reader_with_rest(&dtx, &rtx, &crx);
	p.fd = cmesh_pipe_reader_fd(r);
	cr_assert_geq(p.fd, 0);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), -EAGAIN);
	cr_assert_eq(poll(&p, 1, 0), 0);
	send_chunk(rtx, "late");
	cr_assert_eq(poll(&p, 1, TOPO_WAIT_MS), 1);
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), 4);
	cr_assert_str_eq(buf, "late");
	cmesh_sender_free(rtx);
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(dtx);
	cmesh_receiver_free(crx);
	cmesh_waitset_free(ws);
}

struct try_read_arg {
	cmesh_pipe_reader *r;
	_Atomic int done;
	int64_t n;
};

static void *try_read_thread(void *p)
{
	struct try_read_arg *a = p;
	char buf[32] = { 0 };

	a->n = cmesh_pipe_try_read(a->r, buf, sizeof(buf));
	atomic_store(&a->done, 1);
	return NULL;
}

/*
 * A rest still on its way and a chunk in data: what a read takes next is
 * not there, so the reader is not ready. Its own fd does not poll
 * readable, try_read says -EAGAIN at once (it looked until its waitset
 * found nothing: with data a member, it spun until the rest came), and a
 * caller's waitset it joined says nothing either; once the rest comes,
 * both wake, a read takes "hello world", and data stands for the reader
 * from then on (its next chunk wakes the caller's waitset).
 */
Test(pipe, a_rest_on_its_way_with_data_ready_is_not_ready)
{
	cmesh_sender *dtx, *rtx;
	cmesh_receiver *crx;
	cmesh_pipe_reader *r = reader_with_rest(&dtx, &rtx, &crx);
	struct try_read_arg a = { .r = r };
	struct pollfd p = { .events = POLLIN };
	char buf[32] = { 0 };
	cmesh_waitset *ws;
	uint64_t key;
	pthread_t t;
	int done;

	p.fd = cmesh_pipe_reader_fd(r);
	cr_assert_geq(p.fd, 0);
	send_chunk(dtx, "world");
	tu_thread_start(&t, try_read_thread, &a);
	for (int i = 0; i < 100 && !atomic_load(&a.done); i++)
		usleep(5000);
	done = atomic_load(&a.done);
	/* Armed by that try (waitset.h): readable only for the rest. */
	if (done)
		cr_assert_eq(poll(&p, 1, 50), 0, "the fd is readable for data");
	send_chunk(rtx, "hello "); /* lets a spinning try_read go */
	tu_thread_join(t);
	cr_assert(done, "try_read still inside after 500 ms (rest not here)");
	cr_assert_eq(a.n, -EAGAIN);
	cr_assert_eq(poll(&p, 1, TOPO_WAIT_MS), 1);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), 11);
	cr_assert_str_eq(buf, "hello world");
	cmesh_sender_free(rtx);
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(dtx);
	cmesh_receiver_free(crx);

	/* The same in the caller's waitset. */
	r = reader_with_rest(&dtx, &rtx, &crx);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_add(r, ws, 9), 0);
	send_chunk(dtx, "world");
	cr_assert_eq(cmesh_waitset_wait(ws, cmesh_deadline_after(TU_MS(50)),
					&key),
		     -ETIMEDOUT, "the waitset is ready for data");
	send_chunk(rtx, "hello ");
	cr_assert_eq(cmesh_waitset_wait(ws, TU_MS(TOPO_WAIT_MS), &key), 0);
	cr_assert_eq(key, 9);
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), 11);
	cr_assert_str_eq(buf, "hello world");
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), -EAGAIN);
	send_chunk(dtx, "!");
	cr_assert_eq(cmesh_waitset_wait(ws, TU_MS(TOPO_WAIT_MS), &key), 0);
	cr_assert_eq(key, 9);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), 1);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_remove(r, ws), 0);
	cmesh_sender_free(rtx);
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(dtx);
	cmesh_receiver_free(crx);
	cmesh_waitset_free(ws);
}

/* A rest that closes without its chunk: that part is missing: -EPROTO. */
Test(pipe, a_rest_closed_without_its_chunk_fails_the_reader)
{
	cmesh_sender *dtx, *rtx;
	cmesh_receiver *crx;
	cmesh_pipe_reader *r = reader_with_rest(&dtx, &rtx, &crx);
	char buf[8];

	send_chunk(dtx, "after");
	cmesh_sender_free(rtx);
	cr_assert_eq(cmesh_pipe_read(r, buf, sizeof(buf), NULL), -EPROTO);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), -EPROTO);
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(dtx);
	cmesh_receiver_free(crx);
}

/* A port refused by from_port: its rest is freed with the rest of it. */
Test(pipe, a_refused_reader_port_frees_its_rest)
{
	cmesh_pipe_reader_port port = { 0 };
	cmesh_pipe_reader *r;
	cmesh_sender *rtx;

	TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_data_type, NULL, &rtx,
				       &port.rest),
		     0);
	/* No data receiver: -EINVAL, everything in it freed. */
	TU_ASSERT_RC(cmesh_pipe_reader_from_port(&port, &r), -EINVAL);
	cr_assert_null(port.rest);
	cr_assert_eq(cmesh_sender_is_closed(rtx), 1);
	cmesh_sender_free(rtx);
}

/* The writer's process dies: the reader gets its bytes, then the death. */
static int dying_writer_peer(cmesh_sender *tx, cmesh_receiver *rx,
			     const struct topo_side *s)
{
	struct pmsg m;
	cmesh_pipe_writer *w;

	(void)tx;
	(void)s;
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      0);
	TOPO_CHECK_EQ(cmesh_pipe_writer_from_port(&m.w, &w), 0);
	TOPO_CHECK_EQ(cmesh_pipe_write(w, "last words", 10, NULL), 10);
	/* Wait until the reader has them (its credit comes back). */
	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'k');
	kill(getpid(), SIGKILL);
	return 1;
}

static const struct topo_scenario dying_sc = {
	.down = &pmsg_type,
	.up = &report_type,
	.peer = dying_writer_peer,
};

Test(pipe, writer_process_death)
{
	struct topo_conn c;
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	struct pmsg m = { 0 };
	char buf[16] = { 0 };
	int st;

	topo_fork_peer(&dying_sc, TOPO_FORK, &c);
	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	TU_ASSERT_RC(cmesh_pipe_writer_to_port(w, &m.w), 0);
	TU_ASSERT_RC(cmesh_sender_send(c.tx, &m, NULL, 0), 0);
	cr_assert_eq(cmesh_pipe_read(r, buf, 10, NULL), 10);
	cr_assert_str_eq(buf, "last words");
	cr_assert_eq(topo_post(c.sync, 'k'), 0);
	st = topo_reap(c.pid, TOPO_WAIT_MS);
	cr_assert(WIFSIGNALED(st));
	cr_assert_eq(cmesh_pipe_read(r, buf, sizeof(buf), NULL), -ECONNRESET);
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
}

/* Both ends in one waitset: the writer is ready when credit comes. */
Test(pipe, ends_as_waitset_members)
{
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	cmesh_waitset *ws;
	unsigned char b = 'z', buf[64];
	uint64_t key;

	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_add(r, ws, 1), 0);
	TU_ASSERT_RC(cmesh_pipe_writer_waitset_add(w, ws, 2), 0);
	/* Its own fd is another waitset: refused while a member. */
	cr_assert_eq(cmesh_pipe_reader_fd(r), -EBUSY);
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);
	for (int i = 0; i < 64; i++)
		cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), 1);
	cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), -EAGAIN);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	cr_assert_eq(key, 1);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, 32), 32);
	/* Half the window back: the writer's turn. */
	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	cr_assert(key == 2 || key == 1);
	if (key == 1)
		TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	cr_assert_eq(key, 2);
	cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), 1);
	TU_ASSERT_RC(cmesh_pipe_writer_waitset_remove(w, ws), 0);
	TU_ASSERT_RC(cmesh_pipe_writer_waitset_remove(w, ws), -ENOENT);
	cmesh_pipe_reader_free(r); /* leaves the waitset */
	cr_assert_eq(cmesh_waitset_size(ws), 0);
	cmesh_pipe_writer_free(w);
	cmesh_waitset_free(ws);
}

/*
 * An end leaves a waitset as it joined: removed (then -ENOENT), its fd
 * usable again once out (-EBUSY while a member), the waitset empty; a
 * second add, or a NULL end, is refused and changes nothing.
 */
Test(pipe, ends_leave_a_waitset_and_take_their_fd_back)
{
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	cmesh_waitset *ws;
	unsigned char b = 'q', buf[4];
	uint64_t key;
	int fds = tu_fd_count();

	TU_ASSERT_RC(cmesh_pipe_new(&w, &r), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_add(NULL, ws, 1), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_remove(NULL, ws), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_writer_waitset_remove(NULL, ws), -EINVAL);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_remove(r, ws), -ENOENT);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_add(r, ws, 1), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_add(r, ws, 1), -EBUSY);
	cr_assert_eq(cmesh_pipe_reader_fd(r), -EBUSY);
	cr_assert_eq(cmesh_waitset_size(ws), 1);
	cr_assert_eq(cmesh_pipe_try_write(w, &b, 1), 1);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	cr_assert_eq(key, 1);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_remove(r, ws), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_waitset_remove(r, ws), -ENOENT);
	cr_assert_eq(cmesh_waitset_size(ws), 0);
	/* Out of the waitset: its own fd, and what was written, are there. */
	cr_assert_geq(cmesh_pipe_reader_fd(r), 0);
	cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), 1);
	cr_assert_eq(buf[0], 'q');
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);
	cmesh_pipe_reader_free(r);
	cmesh_pipe_writer_free(w);
	cmesh_waitset_free(ws);
	TU_ASSERT_FDS(fds); /* the reader's own fd and the waitset's too */
}

/*
 * Whoever holds a pipe's data sender (a buggy or hostile writer) can send
 * anything of the data type: a chunk whose header lies about its size, an
 * empty chunk. The reader fails the pipe with -EPROTO and hands out none
 * of it. (A writer that ignores the window only fills the data channel,
 * up to its backlog bound: its own sends then fail with -ENOBUFS.)
 */
Test(pipe, a_malformed_chunk_fails_the_pipe)
{
	struct {
		uint64_t len;
	} c = { 5 };
	cmesh_sender *dtx, *ctx_;
	cmesh_receiver *drx, *crx;
	cmesh_pipe_reader_port port = { 0 };
	cmesh_pipe_reader *r;
	char buf[16];

	for (int k = 0; k < 2; k++) {
		TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_data_type, NULL,
					       &dtx, &drx),
			     0);
		TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_credit_type, NULL,
					       &ctx_, &crx),
			     0);
		/* Says 5 bytes, carries 3; then an empty one. */
		c.len = k ? 0 : 5;
		TU_ASSERT_RC(cmesh_sender_send(dtx, &c, "abc", k ? 0 : 3), 0);
		port = (cmesh_pipe_reader_port){ .data = drx, .credit = ctx_ };
		TU_ASSERT_RC(cmesh_pipe_reader_from_port(&port, &r), 0);
		cr_assert_eq(cmesh_pipe_read(r, buf, sizeof(buf), NULL),
			     -EPROTO);
		cr_assert_eq(cmesh_pipe_try_read(r, buf, sizeof(buf)), -EPROTO);
		/* Not sent on as if nothing were missing: kept, failed. */
		cr_assert_eq(cmesh_pipe_reader_to_port(r, &port), -EPROTO);
		cr_assert_eq(cmesh_pipe_read(r, buf, sizeof(buf), NULL),
			     -EPROTO);
		cmesh_pipe_reader_free(r);
		cmesh_sender_free(dtx);
		cmesh_receiver_free(crx);
	}
}

/* ---- a reader that moves between processes under a running writer ---- */

#define BOUNCE_TOTAL 1000000u

struct bounce_writer {
	cmesh_pipe_writer *w;
	int64_t rc;
};

/* Writes BOUNCE_TOTAL bytes in writes of random sizes, frees the writer. */
static void *write_bounced(void *arg)
{
	struct bounce_writer *a = arg;
	static unsigned char buf[7000];
	unsigned seed = 1;
	uint64_t off = 0;

	while (off < BOUNCE_TOTAL && !a->rc) {
		size_t n = 1 + (size_t)(rand_r(&seed) % sizeof(buf));
		int64_t r;

		if (n > BOUNCE_TOTAL - off)
			n = BOUNCE_TOTAL - off;
		for (size_t i = 0; i < n; i++)
			buf[i] = byte_at(off + i);
		r = cmesh_pipe_write(a->w, buf, n, NULL);
		if (r <= 0)
			a->rc = r < 0 ? r : -EIO;
		else
			off += (uint64_t)r;
	}
	cmesh_pipe_writer_free(a->w);
	return NULL;
}

struct bmsg {
	uint64_t total; /* bytes read so far */
	int64_t last;	/* the last read's result (0: EOF) */
	cmesh_pipe_reader_port r;
};
CMESH_TYPE_DEFINE(bmsg_type, struct bmsg,
		  CMESH_FIELD_PIPE_READER(struct bmsg, r));

/*
 * One side's turn: the reader from the port, up to three reads of random
 * sizes (each within 2 s, checked byte by byte), then a port again (cut
 * mid-chunk when a read left part of one). 0, or the failure.
 */
static int bounce_turn(struct bmsg *m, unsigned *seed)
{
	static unsigned char buf[3000];
	cmesh_pipe_reader *r;
	int e = cmesh_pipe_reader_from_port(&m->r, &r);

	if (e)
		return e;
	for (int k = 0; k < 3 && m->last > 0; k++) {
		size_t cap = 1 + (size_t)(rand_r(seed) % sizeof(buf));
		cmesh_ctx *ctx;

		e = cmesh_ctx_with_timeout(NULL, TU_MS(2000), &ctx);
		if (e)
			break;
		m->last = cmesh_pipe_read(r, buf, cap, ctx);
		cmesh_ctx_free(ctx);
		for (int64_t i = 0; i < m->last; i++)
			if (buf[i] != byte_at(m->total + (uint64_t)i))
				m->last = -EIO;
		if (m->last > 0)
			m->total += (uint64_t)m->last;
	}
	return e ? e : cmesh_pipe_reader_to_port(r, &m->r);
}

static int bounce_peer(cmesh_sender *tx, cmesh_receiver *rx,
		       const struct topo_side *s)
{
	struct bmsg m;
	unsigned seed = 11;
	int e;

	(void)s;
	while (!(e = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0))) {
		TOPO_CHECK_EQ(bounce_turn(&m, &seed), 0);
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	TOPO_CHECK_EQ(e, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void bounce_driver(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	struct bounce_writer a = { 0 };
	struct bmsg m = { .last = 1 };
	cmesh_pipe_reader *r;
	unsigned seed = 5;
	pthread_t t;

	(void)s;
	TU_ASSERT_RC(cmesh_pipe_new(&a.w, &r), 0);
	TU_ASSERT_RC(cmesh_pipe_reader_to_port(r, &m.r), 0);
	cr_assert_eq(pthread_create(&t, NULL, write_bounced, &a), 0);
	while (m.last > 0) {
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							  &m, NULL, 0),
			     0);
		if (m.last > 0)
			TU_ASSERT_RC(bounce_turn(&m, &seed), 0);
	}
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(a.rc, 0);
	cr_assert_eq(m.last, 0, "the last read said %lld after %llu bytes",
		     (long long)m.last, (unsigned long long)m.total);
	cr_assert_eq(m.total, BOUNCE_TOTAL);
	TU_ASSERT_RC(cmesh_pipe_reader_from_port(&m.r, &r), 0);
	cmesh_pipe_reader_free(r);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario bounce_sc = {
	.down = &bmsg_type,
	.up = &bmsg_type,
	.driver = bounce_driver,
	.peer = bounce_peer,
};

/*
 * A reader handed back and forth between two processes, a few reads of
 * random sizes on each side (so most moves cut a chunk: its rest goes in
 * the port), while a thread writes and then frees the writer: every byte
 * arrives once, in order, and then EOF.
 */
Test(pipe, a_reader_bounced_between_processes_mid_stream_sees_eof)
{
	topo_run(&bounce_sc, TOPO_FORK);
}

/* ---- a reader that gives garbage for credit ---- */

struct credit_msg {
	uint64_t msgs, bytes; /* as pipe.c's struct credit */
};

/* A writer with no credit in hand whose credit sender the test holds. */
static cmesh_pipe_writer *writer_fed_by(cmesh_sender **credit_tx,
					cmesh_receiver **data_rx)
{
	cmesh_sender *dtx;
	cmesh_receiver *crx;
	cmesh_pipe_writer_port p = { 0 };
	cmesh_pipe_writer *w;

	TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_data_type, NULL, &dtx,
				       data_rx),
		     0);
	TU_ASSERT_RC(cmesh_channel_new(&cmesh_pipe_credit_type, NULL, credit_tx,
				       &crx),
		     0);
	p.data = dtx;
	p.credit = crx;
	TU_ASSERT_RC(cmesh_pipe_writer_from_port(&p, &w), 0);
	return w;
}

/*
 * Credit with trailing bytes, or credit of no chunk or no byte (a reader
 * gives back at least one of each): -EPROTO for good (it was -EMSGSIZE
 * from every write for the first, and the other two were taken as
 * nothing, one at a time), the same through the writer's fd path.
 */
Test(pipe, garbage_credit_fails_the_writer_with_eproto)
{
	for (int k = 0; k < 3; k++) {
		struct credit_msg c = { k == 1 ? 0 : 1, k == 2 ? 0 : 1 };
		cmesh_sender *ctx_;
		cmesh_receiver *drx;
		cmesh_pipe_writer *w = writer_fed_by(&ctx_, &drx);
		cmesh_pipe_writer_port port;
		struct pollfd p = { .events = POLLIN };

		p.fd = cmesh_pipe_writer_fd(w);
		cr_assert_geq(p.fd, 0);
		TU_ASSERT_RC(cmesh_sender_send(ctx_, &c, k ? NULL : "zz",
					       k ? 0 : 2),
			     0);
		cr_assert_eq(cmesh_pipe_try_write(w, "a", 1), -EPROTO,
			     "case %d", k);
		cr_assert_eq(cmesh_pipe_write(w, "a", 1, NULL), -EPROTO);
		cr_assert_eq(cmesh_pipe_try_write(w, "a", 1), -EPROTO);
		/* Not sent on as if nothing happened: kept, failed. */
		cr_assert_eq(cmesh_pipe_writer_to_port(w, &port), -EPROTO);
		cmesh_pipe_writer_free(w);
		cmesh_sender_free(ctx_);
		cmesh_receiver_free(drx);
	}
}
