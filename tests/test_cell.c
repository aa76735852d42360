/* SPDX-License-Identifier: MIT */
/*
 * test_cell.c - cells and their updater (include/cmesh/cell.h): mesh's
 * cell cases in one process and across two (the cell sent over a link as
 * a port, clones made there), wait-for-next over 99 updates, wait_seen,
 * the updater's end and its process's death, argument checks.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(cell, .init = tu_suite_init, .fini = tu_suite_fini);

struct cfg {
	uint64_t a;
	uint64_t b;
};
CMESH_TYPE_DEFINE_PLAIN(cfg_type, struct cfg);

static struct cfg cfg(uint64_t a)
{
	return (struct cfg){ a, a * 3 };
}

/* A cell's value, checked against its own shape (b == 3a): its a. */
static uint64_t get_a(cmesh_cell *c, uint64_t *version)
{
	struct cfg v;

	TU_ASSERT_RC(cmesh_cell_get(c, &v, version), 0);
	cr_assert_eq(v.b, v.a * 3, "torn value %llu/%llu",
		     (unsigned long long)v.a, (unsigned long long)v.b);
	return v.a;
}

/* Out of fds: the waitset's error, nothing left open; then it works. */
Test(cell, new_at_the_fd_limit_is_emfile_and_leaks_nothing)
{
	cmesh_cell_updater *u = NULL;
	cmesh_cell *c = NULL;
	struct cfg v = cfg(1);
	struct rlimit old;
	int fds;

	/* Warm up: whatever a first use opens once stays open. */
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	cmesh_cell_free(c);
	cmesh_cell_updater_free(u);
	fds = tu_fd_count();
	tu_fd_table_full(&old);
	u = NULL;
	c = NULL;
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), -EMFILE);
	cr_assert_null(u);
	cr_assert_null(c);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_assert_eq(tu_fd_count(), fds);
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	cmesh_cell_free(c);
	cmesh_cell_updater_free(u);
	cr_assert_eq(tu_fd_count(), fds);
}

Test(cell, set_and_get)
{
	cmesh_cell_updater *u;
	cmesh_cell *c;
	struct cfg v = cfg(5);
	uint64_t ver;

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	cr_assert_eq(get_a(c, &ver), 5);
	cr_assert_eq(ver, 1);
	v = cfg(6);
	cr_assert_eq(cmesh_cell_set(u, &v), 2);
	cr_assert_eq(get_a(c, &ver), 6);
	cr_assert_eq(ver, 2);
	cr_assert_eq(cmesh_cell_subscribers(u), 1);
	cmesh_cell_free(c);
	cr_assert_eq(cmesh_cell_subscribers(u), 0);
	cmesh_cell_updater_free(u);
}

/*
 * A clone made into a port before the updater took the clone's own
 * subscription (the usual way to give a cell away): the port's
 * subscription travels inside the clone's, and must survive the clone
 * being gone by the time the updater reads it. The port's cell then hears
 * every later value, and counts as a subscriber.
 */
Test(cell, a_clone_made_into_a_port_at_once_keeps_its_subscription)
{
	cmesh_cell_updater *u;
	cmesh_cell *c, *clone, *far;
	cmesh_cell_port port;
	struct cfg v = cfg(1);
	uint64_t ver;

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	TU_ASSERT_RC(cmesh_cell_clone(c, &clone), 0);
	TU_ASSERT_RC(cmesh_cell_to_port(clone, &port), 0);
	TU_ASSERT_RC(cmesh_cell_from_port(&port, &cfg_type, NULL, &far), 0);
	cr_assert_eq(get_a(far, NULL), 1);
	v = cfg(2);
	cr_assert_eq(cmesh_cell_set(u, &v), 2);
	cr_assert_eq(cmesh_cell_subscribers(u), 2, "the port's cell and c");
	TU_ASSERT_RC(cmesh_cell_wait_next(far, NULL, &v, &ver), 0);
	cr_assert_eq(v.a, 2);
	cr_assert_eq(ver, 2);
	cmesh_cell_free(far);
	cmesh_cell_free(c);
	cr_assert_eq(cmesh_cell_subscribers(u), 0);
	cmesh_cell_updater_free(u);
}

static void *wait_next_thread(void *arg)
{
	struct cfg v;

	return (void *)(intptr_t)cmesh_cell_wait_next(arg, NULL, &v, NULL);
}

/*
 * A cell given away (to_port, from_port) has seen nothing until its holder
 * reads it or waits for the next value: wait_seen waits for it. (A clone
 * has its parent's value: it counts as seen.)
 */
Test(cell, wait_seen_waits_for_a_ports_cell_to_read_or_wait)
{
	cmesh_cell_updater *u;
	cmesh_cell *c, *far;
	cmesh_cell_port port;
	cmesh_ctx *ctx;
	struct cfg v = cfg(1);
	pthread_t t;

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	TU_ASSERT_RC(cmesh_cell_to_port(c, &port), 0);
	TU_ASSERT_RC(cmesh_cell_from_port(&port, &cfg_type, NULL, &far), 0);
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(50), &ctx), 0);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, ctx), -ETIMEDOUT);
	cmesh_ctx_free(ctx);
	cr_assert_eq(get_a(far, NULL), 1);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, NULL), 0);
	/* Again, with a holder that only waits for the next value. */
	TU_ASSERT_RC(cmesh_cell_to_port(far, &port), 0);
	TU_ASSERT_RC(cmesh_cell_from_port(&port, &cfg_type, NULL, &far), 0);
	tu_thread_start(&t, wait_next_thread, far);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, NULL), 0);
	v = cfg(2);
	cr_assert_eq(cmesh_cell_set(u, &v), 2);
	cr_assert_eq((intptr_t)tu_thread_join(t), 0);
	cmesh_cell_free(far);
	cmesh_cell_updater_free(u);
}

/* mesh's multi-cell: cells made before and after a set, and clones. */
Test(cell, clones_before_and_after_set_all_see_the_value)
{
	cmesh_cell_updater *u;
	cmesh_cell *c1, *c2, *c3;
	struct cfg v = cfg(1);

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c1), 0);
	TU_ASSERT_RC(cmesh_cell_clone(c1, &c2), 0);
	v = cfg(2);
	cmesh_cell_set(u, &v);
	TU_ASSERT_RC(cmesh_cell_clone(c1, &c3), 0);
	/* A clone starts with what its parent has now. */
	cr_assert_eq(get_a(c3, NULL), 2);
	cr_assert_eq(get_a(c2, NULL), 2);
	v = cfg(3);
	cmesh_cell_set(u, &v);
	cr_assert_eq(get_a(c1, NULL), 3);
	cr_assert_eq(get_a(c2, NULL), 3);
	cr_assert_eq(get_a(c3, NULL), 3);
	cr_assert_eq(cmesh_cell_subscribers(u), 3);
	cmesh_cell_free(c1);
	cmesh_cell_free(c2);
	cmesh_cell_free(c3);
	cmesh_cell_updater_free(u);
}

struct setter {
	cmesh_cell_updater *u;
	uint64_t n;
};

static void *set_many(void *arg)
{
	struct setter *s = arg;

	for (uint64_t i = 2; i <= s->n; i++) {
		struct cfg v = cfg(i);

		cr_assert_eq(cmesh_cell_set(s->u, &v), (int64_t)i);
	}
	return NULL;
}

/* wait_next over 99 updates: each newer than the last, ending at 99. */
Test(cell, wait_next_over_99_updates)
{
	struct setter s = { .n = 99 };
	cmesh_cell *c;
	struct cfg v = cfg(1);
	uint64_t last = 1, ver, seen = 0;
	pthread_t t;

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &s.u, &c), 0);
	tu_thread_start(&t, set_many, &s);
	while (last < 99) {
		cmesh_ctx *ctx;

		TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(TOPO_WAIT_MS),
						    &ctx),
			     0);
		TU_ASSERT_RC(cmesh_cell_wait_next(c, ctx, &v, &ver), 0);
		cmesh_ctx_free(ctx);
		cr_assert_gt(v.a, last, "not newer: %llu after %llu",
			     (unsigned long long)v.a, (unsigned long long)last);
		cr_assert_eq(v.b, v.a * 3);
		cr_assert_eq(ver, v.a);
		last = v.a;
		seen++;
	}
	tu_thread_join(t);
	cr_assert_geq(seen, 1);
	cmesh_cell_free(c);
	cmesh_cell_updater_free(s.u);
}

Test(cell, wait_seen_waits_for_every_live_cell)
{
	cmesh_cell_updater *u;
	cmesh_cell *c1, *c2;
	struct cfg v = cfg(1);
	cmesh_ctx *ctx;

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c1), 0);
	TU_ASSERT_RC(cmesh_cell_clone(c1, &c2), 0);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, NULL), 0); /* all have 1 */
	v = cfg(2);
	cmesh_cell_set(u, &v);
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(20), &ctx), 0);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, ctx), -ETIMEDOUT);
	cmesh_ctx_free(ctx);
	cr_assert_eq(get_a(c1, NULL), 2);
	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(20), &ctx), 0);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, ctx), -ETIMEDOUT); /* c2 */
	cmesh_ctx_free(ctx);
	/* A cell that goes away stops counting. */
	cmesh_cell_free(c2);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, NULL), 0);
	cmesh_cell_free(c1);
	cmesh_cell_updater_free(u);
}

Test(cell, updater_gone_keeps_the_last_value)
{
	cmesh_cell_updater *u;
	cmesh_cell *c, *k;
	struct cfg v = cfg(7);

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	v = cfg(8);
	cmesh_cell_set(u, &v);
	cmesh_cell_updater_free(u);
	TU_ASSERT_RC(cmesh_cell_wait_next(c, NULL, &v, NULL), 0); /* 8 */
	cr_assert_eq(v.a, 8);
	TU_ASSERT_RC(cmesh_cell_wait_next(c, NULL, &v, NULL), -EPIPE);
	cr_assert_eq(get_a(c, NULL), 8);
	/* A clone made now keeps the value too. */
	TU_ASSERT_RC(cmesh_cell_clone(c, &k), 0);
	cr_assert_eq(get_a(k, NULL), 8);
	cmesh_cell_free(k);
	cmesh_cell_free(c);
}

struct holder {
	int fd;
	cmesh_sender *tx;
};
CMESH_TYPE_DEFINE(holder_type, struct holder,
		  CMESH_FIELD_FD(struct holder, fd));

Test(cell, bad_arguments)
{
	cmesh_cell_updater *u;
	cmesh_cell *c;
	cmesh_cell_port empty = { 0 };
	struct cfg v = cfg(1);
	struct holder h = { -1, NULL };

	TU_ASSERT_RC(cmesh_cell_new(NULL, &v, &u, &c), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_new(&holder_type, &h, &u, &c), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, NULL, &u, &c), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, NULL, &c), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_from_port(&empty, &cfg_type, NULL, &c),
		     -EINVAL);
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	TU_ASSERT_RC(cmesh_cell_get(NULL, &v, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_get(c, NULL, NULL), -EINVAL);
	cr_assert_eq(cmesh_cell_set(NULL, &v), -EINVAL);
	cr_assert_eq(cmesh_cell_set(u, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_wait_seen(NULL, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_clone(c, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_cell_to_port(c, NULL), -EINVAL);
	cmesh_cell_free(NULL);
	cmesh_cell_updater_free(NULL);
	cmesh_cell_free(c);
	cmesh_cell_updater_free(u);
}

/* ---- a cell sent in a message: in one process and across two ---------- */

struct cmsg {
	int op;
	int pad;
	uint64_t arg;
	cmesh_cell_port cell;
};
CMESH_TYPE_DEFINE(cmsg_type, struct cmsg, CMESH_FIELD_CELL(struct cmsg, cell));

struct report {
	uint64_t a, b;
};
CMESH_TYPE_DEFINE_PLAIN(report_type, struct report);

enum {
	OP_TAKE = 1, /* take the cell, report its value */
	OP_UNTIL,    /* wait_next until a == arg, report a; clone, report */
	OP_CLONE_GET /* report the clone's value (after a set) */
};

static cmesh_cell *peer_cell, *peer_clone;

static int reply(cmesh_sender *tx, uint64_t a, uint64_t b)
{
	struct report r = { a, b };

	return cmesh_sender_send(tx, &r, NULL, 0);
}

static int cell_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	struct cmsg m;
	struct cfg v;
	int r;

	(void)s;
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		switch (m.op) {
		case OP_TAKE:
			TOPO_CHECK_EQ(cmesh_cell_from_port(&m.cell, &cfg_type,
							   NULL, &peer_cell),
				      0);
			TOPO_CHECK_EQ(cmesh_cell_get(peer_cell, &v, NULL), 0);
			TOPO_CHECK_EQ(reply(tx, v.a, v.b), 0);
			break;
		case OP_UNTIL:
			do {
				TOPO_CHECK_EQ(cmesh_cell_wait_next(peer_cell,
								   NULL, &v,
								   NULL),
					      0);
				TOPO_CHECK_EQ(v.b, v.a * 3);
			} while (v.a < m.arg);
			TOPO_CHECK_EQ(reply(tx, v.a, v.b), 0);
			TOPO_CHECK_EQ(cmesh_cell_clone(peer_cell, &peer_clone),
				      0);
			TOPO_CHECK_EQ(cmesh_cell_get(peer_clone, &v, NULL), 0);
			TOPO_CHECK_EQ(reply(tx, v.a, v.b), 0);
			break;
		case OP_CLONE_GET:
			/* Both cells read it (the updater waits for both). */
			do {
				TOPO_CHECK_EQ(cmesh_cell_wait_next(peer_clone,
								   NULL, &v,
								   NULL),
					      0);
			} while (v.a < m.arg);
			do {
				TOPO_CHECK_EQ(cmesh_cell_wait_next(peer_cell,
								   NULL, &v,
								   NULL),
					      0);
			} while (v.a < m.arg);
			TOPO_CHECK_EQ(reply(tx, v.a, v.b), 0);
			break;
		default:
			TOPO_CHECK(0);
		}
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	cmesh_cell_free(peer_clone);
	cmesh_cell_free(peer_cell);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static struct report get_report(cmesh_receiver *rx)
{
	struct report r;

	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &r, NULL,
						  0),
		     0);
	cr_assert_eq(r.b, r.a * 3, "torn value in the peer");
	return r;
}

static void cell_driver(cmesh_sender *tx, cmesh_receiver *rx,
			const struct topo_side *s)
{
	cmesh_cell_updater *u;
	cmesh_cell *c;
	struct cfg v = cfg(1);
	struct cmsg m = { .op = OP_TAKE };

	(void)s;
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	v = cfg(2);
	cmesh_cell_set(u, &v);
	/* The cell goes to the peer: it sees the current value. */
	TU_ASSERT_RC(cmesh_cell_to_port(c, &m.cell), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cr_assert_eq(get_report(rx).a, 2);
	/* Updates reach it; the updater sees it has seen them. */
	/* mesh's wait-for-next, over 99 updates in all. */
	m = (struct cmsg){ .op = OP_UNTIL, .arg = 99 };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	for (uint64_t i = 3; i <= 99; i++) {
		v = cfg(i);
		cmesh_cell_set(u, &v);
	}
	cr_assert_eq(get_report(rx).a, 99);
	/* A clone made there starts with the value it had. */
	cr_assert_eq(get_report(rx).a, 99);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, NULL), 0);
	/*
	 * The clone hears of later values too, once the updater took its
	 * subscription (it takes them when called: its ATTACH may still be
	 * on the way when the clone's report is here).
	 */
	for (int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	     cmesh_cell_subscribers(u) < 2 && tu_now_ns() < end;)
		tu_sleep_ms(1);
	cr_assert_eq(cmesh_cell_subscribers(u), 2);
	m = (struct cmsg){ .op = OP_CLONE_GET, .arg = 100 };
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	v = cfg(100);
	cmesh_cell_set(u, &v);
	cr_assert_eq(get_report(rx).a, 100);
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, NULL), 0);
	cmesh_cell_updater_free(u);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(),
						  &(struct report){ 0 }, NULL,
						  0),
		     -EPIPE);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario cell_sc = {
	.down = &cmsg_type,
	.up = &report_type,
	.driver = cell_driver,
	.peer = cell_peer,
};

Test(cell, sent_in_a_message_in_process)
{
	topo_run(&cell_sc, TOPO_THREAD);
}

Test(cell, sent_to_another_process)
{
	topo_run(&cell_sc, TOPO_FORK);
}

/* The updater's process dies: the cell keeps its value, then says so. */
static int dying_updater_peer(cmesh_sender *tx, cmesh_receiver *rx,
			      const struct topo_side *s)
{
	cmesh_cell_updater *u;
	cmesh_cell *c;
	struct cfg v = cfg(9);
	struct cmsg m = { .op = OP_TAKE };

	(void)rx;
	(void)s;
	TOPO_CHECK_EQ(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	TOPO_CHECK_EQ(cmesh_cell_to_port(c, &m.cell), 0);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	v = cfg(10);
	cmesh_cell_set(u, &v);
	/* Once the driver's cell has read 10, die. */
	TOPO_CHECK_EQ(cmesh_cell_wait_seen(u, NULL), 0);
	kill(getpid(), SIGKILL);
	return 1;
}

static const struct topo_scenario dying_sc = {
	.down = &report_type,
	.up = &cmsg_type,
	.peer = dying_updater_peer,
};

Test(cell, updater_process_death)
{
	struct topo_conn c;
	struct cmsg m;
	cmesh_cell *cell;
	struct cfg v;
	int st;

	topo_fork_peer(&dying_sc, TOPO_FORK, &c);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(c.rx, topo_deadline(), &m,
						  NULL, 0),
		     0);
	TU_ASSERT_RC(cmesh_cell_from_port(&m.cell, &cfg_type, NULL, &cell), 0);
	TU_ASSERT_RC(cmesh_cell_get(cell, &v, NULL), 0);
	while (v.a < 10)
		TU_ASSERT_RC(cmesh_cell_wait_next(cell, NULL, &v, NULL), 0);
	/* It dies once it knows we read 10: the cell then says so. */
	st = topo_reap(c.pid, TOPO_WAIT_MS);
	cr_assert(WIFSIGNALED(st));
	TU_ASSERT_RC(cmesh_cell_wait_next(cell, NULL, &v, NULL), -ECONNRESET);
	cr_assert_eq(get_a(cell, NULL), 10);
	cmesh_cell_free(cell);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	close(c.sync);
}

/*
 * Whoever holds a cell's update sender (a buggy or hostile updater) can
 * send anything of the update type: a wrong size, another type's
 * fingerprint, an older version. None of it reaches the caller: the cell
 * keeps its last good value and says what it saw.
 */
struct upd {
	uint64_t version;
	uint64_t fp;
};

Test(cell, malformed_updates_never_reach_the_caller)
{
	cmesh_sender *utx, *ctl_tx;
	cmesh_receiver *urx, *ctl_rx;
	cmesh_cell_port port;
	cmesh_cell *c;
	struct cfg v = cfg(4), bad = { 5, 0 };
	struct upd m;
	uint64_t fp, ver;

	TU_ASSERT_RC(cmesh_type_fingerprint(&cfg_type, &fp), 0);
	TU_ASSERT_RC(cmesh_channel_new(&cmesh_cell_update_type, NULL, &utx,
				       &urx),
		     0);
	TU_ASSERT_RC(cmesh_channel_new(&cmesh_cell_control_type, NULL, &ctl_tx,
				       &ctl_rx),
		     0);
	m = (struct upd){ 3, fp };
	TU_ASSERT_RC(cmesh_sender_send(utx, &m, &v, sizeof(v)), 0);
	port = (cmesh_cell_port){ urx, ctl_tx };
	TU_ASSERT_RC(cmesh_cell_from_port(&port, &cfg_type, NULL, &c), 0);
	cr_assert_eq(get_a(c, &ver), 4);
	cr_assert_eq(ver, 3);
	/* A short value: -EPROTO, nothing taken. */
	m = (struct upd){ 4, fp };
	TU_ASSERT_RC(cmesh_sender_send(utx, &m, &bad, 8), 0);
	TU_ASSERT_RC(cmesh_cell_get(c, &v, &ver), -EPROTO);
	cr_assert(v.a == 4 && v.b == 12 && ver == 3);
	/* Another type's fingerprint: -EBADMSG, nothing taken. */
	m = (struct upd){ 5, fp ^ 1 };
	TU_ASSERT_RC(cmesh_sender_send(utx, &m, &bad, sizeof(bad)), 0);
	TU_ASSERT_RC(cmesh_cell_get(c, &v, &ver), -EBADMSG);
	cr_assert(v.a == 4 && v.b == 12 && ver == 3);
	/* An older version: ignored. */
	m = (struct upd){ 2, fp };
	TU_ASSERT_RC(cmesh_sender_send(utx, &m, &bad, sizeof(bad)), 0);
	TU_ASSERT_RC(cmesh_cell_get(c, &v, &ver), 0);
	cr_assert(v.a == 4 && ver == 3);
	/* A good one still goes through. */
	v = cfg(6);
	m = (struct upd){ 6, fp };
	TU_ASSERT_RC(cmesh_sender_send(utx, &m, &v, sizeof(v)), 0);
	cr_assert_eq(get_a(c, &ver), 6);
	cr_assert_eq(ver, 6);
	/* Its acknowledgement reached the "updater". */
	{
		struct {
			uint32_t op, pad;
			uint64_t version;
			cmesh_sender *updates;
			cmesh_receiver *control;
		} ack;
		uint64_t last = 0;

		while (cmesh_receiver_try_recv(ctl_rx, &ack, NULL, 0) == 0)
			last = ack.version;
		cr_assert_eq(last, 6);
	}
	cmesh_cell_free(c);
	cmesh_sender_free(utx);
	cmesh_receiver_free(ctl_rx);
}

/* A stray control message carrying endpoints: the updater frees them. */
Test(cell, stray_control_messages_are_dropped_with_what_they_carry)
{
	struct ctl {
		uint32_t op, pad;
		uint64_t version;
		cmesh_sender *updates;
		cmesh_receiver *control;
	} m = { .op = 1, .version = 99 }; /* an ACK from the future */
	cmesh_cell_updater *u;
	cmesh_cell *c;
	cmesh_cell_port port;
	cmesh_sender *tx2;
	cmesh_receiver *rx2;
	struct upd x;
	struct cfg v = cfg(1);

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	TU_ASSERT_RC(cmesh_cell_to_port(c, &port), 0);
	TU_ASSERT_RC(cmesh_channel_new(&cmesh_cell_update_type, NULL, &tx2,
				       &rx2),
		     0);
	m.updates = tx2;
	TU_ASSERT_RC(cmesh_sender_send(port.control, &m, NULL, 0), 0);
	cr_assert_eq(cmesh_cell_subscribers(u), 1);
	/* Its sender was freed: the channel is closed. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx2, &x, NULL, 0), -EPIPE);
	cmesh_receiver_free(rx2);
	cmesh_receiver_free(port.updates);
	cmesh_sender_free(port.control);
	cmesh_cell_updater_free(u);
}

/* A value too large to travel is refused at once. */
Test(cell, a_value_larger_than_a_message_is_refused)
{
	struct big {
		unsigned char b[2048];
	} v = { { 0 } };
	CMESH_TYPE_DEFINE_PLAIN(big_type, struct big);
	cmesh_cell_updater *u;
	cmesh_cell *c;

	tu_env_clear();
	setenv("CMESH_MAX_MESSAGE", "1K", 1);
	TU_ASSERT_RC(cmesh_cell_new(&big_type, &v, &u, &c), -EMSGSIZE);
	unsetenv("CMESH_MAX_MESSAGE");
}

/* A cell in a waitset: ready once a value came, until it is read. */
Test(cell, waitset_member)
{
	cmesh_cell_updater *u;
	cmesh_cell *c;
	cmesh_waitset *ws;
	struct cfg v = cfg(1);
	uint64_t key;

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_cell_waitset_add(c, ws, 42), 0);
	TU_ASSERT_RC(cmesh_cell_waitset_add(c, ws, 42), -EBUSY);
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);
	v = cfg(2);
	cmesh_cell_set(u, &v);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	cr_assert_eq(key, 42);
	cr_assert_eq(get_a(c, NULL), 2);
	TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);
	/* The updater gone: ready (wait_next says so). */
	cmesh_cell_updater_free(u);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	TU_ASSERT_RC(cmesh_cell_wait_next(c, NULL, &v, NULL), -EPIPE);
	TU_ASSERT_RC(cmesh_cell_waitset_remove(c, ws), 0);
	TU_ASSERT_RC(cmesh_cell_waitset_remove(c, ws), -ENOENT);
	/* Freed while a member, it leaves the waitset. */
	TU_ASSERT_RC(cmesh_cell_waitset_add(c, ws, 1), 0);
	cmesh_cell_free(c);
	cr_assert_eq(cmesh_waitset_size(ws), 0);
	cmesh_waitset_free(ws);
}

/* ---- subscriptions handed over while the updater sets ----------------- */

/* wait_next within `ms`: its result. */
static int wait_next_within(cmesh_cell *c, unsigned ms, struct cfg *v)
{
	cmesh_ctx *ctx;
	int r;

	TU_ASSERT_RC(cmesh_ctx_with_timeout(NULL, TU_MS(ms), &ctx), 0);
	r = cmesh_cell_wait_next(c, ctx, v, NULL);
	cmesh_ctx_free(ctx);
	return r;
}

#define MANY_CLONES 65 /* one past what a call takes from one channel */

/*
 * More clones than the updater takes from a cell's control channel in one
 * call, then that cell freed: set cannot send to it, but the SUBSCRIBEs
 * still queued behind are taken later (its control is read until it
 * ends), so every clone hears the new value and counts.
 */
Test(cell, clones_queued_past_a_freed_parent_keep_their_subscriptions)
{
	cmesh_cell_updater *u;
	cmesh_cell *c, *cl[MANY_CLONES];
	struct cfg v = cfg(1);

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	for (int i = 0; i < MANY_CLONES; i++)
		TU_ASSERT_RC(cmesh_cell_clone(c, &cl[i]), 0);
	cmesh_cell_free(c);
	v = cfg(2);
	cr_assert_eq(cmesh_cell_set(u, &v), 2);
	cr_assert_eq(cmesh_cell_subscribers(u), MANY_CLONES);
	for (int i = 0; i < MANY_CLONES; i++) {
		TU_ASSERT_RC(wait_next_within(cl[i], 2000, &v), 0);
		cr_assert_eq(v.a, 2, "clone %d has %llu", i,
			     (unsigned long long)v.a);
	}
	TU_ASSERT_RC(cmesh_cell_wait_seen(u, NULL), 0);
	for (int i = 0; i < MANY_CLONES; i++)
		cmesh_cell_free(cl[i]);
	cr_assert_eq(cmesh_cell_subscribers(u), 0);
	cmesh_cell_updater_free(u);
}

/* The same with a port made last: the cell from it hears the next set. */
Test(cell, a_port_queued_past_many_clones_keeps_its_subscription)
{
	cmesh_cell_updater *u;
	cmesh_cell *c, *cl[MANY_CLONES - 1], *far;
	cmesh_cell_port port;
	struct cfg v = cfg(1);

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	for (int i = 0; i < MANY_CLONES - 1; i++)
		TU_ASSERT_RC(cmesh_cell_clone(c, &cl[i]), 0);
	TU_ASSERT_RC(cmesh_cell_to_port(c, &port), 0);
	TU_ASSERT_RC(cmesh_cell_from_port(&port, &cfg_type, NULL, &far), 0);
	v = cfg(2);
	cmesh_cell_set(u, &v);
	cr_assert_eq(cmesh_cell_subscribers(u), MANY_CLONES);
	TU_ASSERT_RC(wait_next_within(far, 2000, &v), 0);
	cr_assert_eq(v.a, 2);
	for (int i = 0; i < MANY_CLONES - 1; i++)
		cmesh_cell_free(cl[i]);
	cmesh_cell_free(far);
	cmesh_cell_updater_free(u);
}

struct busy_setter {
	cmesh_cell_updater *u;
	_Atomic bool stop;
};

static void *set_until_stopped(void *arg)
{
	struct busy_setter *s = arg;

	for (uint64_t i = 2; !atomic_load(&s->stop); i++) {
		struct cfg v = cfg(i);

		cmesh_cell_set(s->u, &v);
	}
	return NULL;
}

/*
 * A cell handed over to its clone (clone, free the old one) again and
 * again while another thread sets: the clone never loses its
 * subscription (the old cell's SUBSCRIBE is taken though set found the
 * old cell gone).
 */
Test(cell, a_cell_replaced_by_its_clone_while_set_runs_stays_subscribed)
{
	struct busy_setter s = { 0 };
	cmesh_cell *c, *n;
	struct cfg v = cfg(1);
	pthread_t t;
	int rounds = 0, r;

	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &s.u, &c), 0);
	cr_assert_eq(pthread_create(&t, NULL, set_until_stopped, &s), 0);
	for (int64_t end = tu_now_ns() + TU_MS(1500); tu_now_ns() < end;
	     rounds++) {
		TU_ASSERT_RC(cmesh_cell_clone(c, &n), 0);
		cmesh_cell_free(c);
		c = n;
		r = wait_next_within(c, 2000, &v);
		cr_assert_eq(r, 0,
			     "round %d: the clone lost its subscription (%d)",
			     rounds, r);
		cr_assert_eq(v.b, 3 * v.a);
	}
	atomic_store(&s.stop, true);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_gt(rounds, 10);
	cmesh_cell_free(c);
	cmesh_cell_updater_free(s.u);
}

struct small {
	uint64_t a;
};
CMESH_TYPE_DEFINE_PLAIN(small_type, struct small);

struct cfg3 {
	uint64_t a, b, c;
};
CMESH_TYPE_DEFINE_PLAIN(cfg3_type, struct cfg3);

/* A port taken as another value type, smaller or larger: -EBADMSG. */
Test(cell, a_port_taken_as_another_value_type_is_ebadmsg)
{
	const cmesh_type *other[] = { &small_type, &cfg3_type };

	for (int k = 0; k < 2; k++) {
		cmesh_cell_updater *u;
		cmesh_cell *c, *far = NULL;
		cmesh_cell_port port;
		struct cfg v = cfg(1);
		int r;

		TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
		TU_ASSERT_RC(cmesh_cell_to_port(c, &port), 0);
		r = cmesh_cell_from_port(&port, other[k], NULL, &far);
		cr_assert_eq(r, -EBADMSG, "value type %d: %d", k, r);
		cr_assert_null(far);
		cr_assert_null(port.updates);
		cmesh_cell_updater_free(u);
	}
}

/*
 * Clones made while the updater reads nothing, with a small control
 * backlog: once the cell's control channel is full a clone fails with
 * -ENOBUFS (its subscription could not go) rather than returning a cell
 * that never hears of a value; every clone returned hears the next one.
 */
Test(cell, a_clone_whose_subscription_cannot_go_is_an_error)
{
	static cmesh_cell *cl[4096];
	cmesh_cell_updater *u;
	cmesh_cell *c;
	struct cfg v = cfg(1);
	int n, r = 0;

	cr_assert_eq(setenv("CMESH_RING_SIZE", "4K", 1), 0);
	cr_assert_eq(setenv("CMESH_MAX_BACKLOG", "4K", 1), 0);
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	for (n = 0; n < 4096 && !(r = cmesh_cell_clone(c, &cl[n])); n++)
		;
	TU_ASSERT_RC(r, -ENOBUFS);
	cr_assert_gt(n, 0);
	while (cmesh_cell_subscribers(u) < n + 1)
		; /* takes them, 64 a call */
	v = cfg(2);
	cmesh_cell_set(u, &v);
	for (int i = 0; i < n; i++) {
		r = wait_next_within(cl[i], 2000, &v);
		cr_assert_eq(r, 0, "clone %d: %d", i, r);
		cmesh_cell_free(cl[i]);
	}
	cmesh_cell_free(c);
	cmesh_cell_updater_free(u);
}

/*
 * Across processes: the updater sets every millisecond while the other
 * process hands its cell over the usual way (a clone, made into a port,
 * made into a cell; the old one freed) and waits for the next value each
 * time: it always comes.
 */
static int handover_peer(cmesh_sender *tx, cmesh_receiver *rx,
			 const struct topo_side *s)
{
	struct cmsg m;
	cmesh_cell *c, *cl, *n;
	cmesh_cell_port p;
	struct cfg v;
	uint64_t rounds = 0;
	int r = 0;

	(void)s;
	TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m,
						   NULL, 0),
		      0);
	TOPO_CHECK_EQ(cmesh_cell_from_port(&m.cell, &cfg_type, NULL, &c), 0);
	for (int64_t end = tu_now_ns() + TU_MS(1500); !r && tu_now_ns() < end;
	     rounds++) {
		cmesh_ctx *ctx;

		TOPO_CHECK_EQ(cmesh_cell_clone(c, &cl), 0);
		TOPO_CHECK_EQ(cmesh_cell_to_port(cl, &p), 0);
		TOPO_CHECK_EQ(cmesh_cell_from_port(&p, &cfg_type, NULL, &n), 0);
		cmesh_cell_free(c);
		c = n;
		TOPO_CHECK_EQ(cmesh_ctx_with_timeout(NULL, TU_MS(2000), &ctx),
			      0);
		r = cmesh_cell_wait_next(c, ctx, &v, NULL);
		cmesh_ctx_free(ctx);
	}
	TOPO_CHECK_EQ(reply(tx, rounds, (uint64_t)-r), 0);
	cmesh_cell_free(c);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static void handover_driver(cmesh_sender *tx, cmesh_receiver *rx,
			    const struct topo_side *s)
{
	cmesh_cell_updater *u;
	cmesh_cell *c;
	struct cfg v = cfg(1);
	struct cmsg m = { 0 };
	struct report rep;
	int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);

	(void)s;
	TU_ASSERT_RC(cmesh_cell_new(&cfg_type, &v, &u, &c), 0);
	TU_ASSERT_RC(cmesh_cell_to_port(c, &m.cell), 0);
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	for (uint64_t i = 2;
	     cmesh_receiver_try_recv(rx, &rep, NULL, 0) == -EAGAIN; i++) {
		v = cfg(i);
		cmesh_cell_set(u, &v);
		cr_assert_lt(tu_now_ns(), end, "the peer never reported");
		tu_sleep_ms(1);
	}
	cr_assert_eq(rep.b, 0, "round %llu: wait_next %d (updater alive)",
		     (unsigned long long)rep.a, -(int)rep.b);
	cr_assert_gt(rep.a, 10);
	cmesh_cell_updater_free(u);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

static const struct topo_scenario handover_sc = {
	.down = &cmsg_type,
	.up = &report_type,
	.driver = handover_driver,
	.peer = handover_peer,
};

Test(cell, a_cell_handed_over_in_another_process_stays_subscribed)
{
	topo_run(&handover_sc, TOPO_FORK);
}
