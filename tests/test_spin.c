/* SPDX-License-Identifier: MIT */
/*
 * test_spin.c - the receiver's spin before it sleeps: the adaptive rule
 * (src/spin.h) on its own, then what receivers learn from their waits, in
 * one process and across two, and that a fixed spin learns nothing.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "spin.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(spin, .init = tu_suite_init, .fini = tu_suite_fini);

struct item {
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(item_type, struct item);

#define MAX CMESH_SPIN_ADAPTIVE_MAX_NS

/* ---- the rule ---- */

Test(spin, a_wait_longer_than_the_maximum_halves_the_spin)
{
	cr_assert_eq(cmesh__spin_learn(MAX, MAX, MAX + 1), MAX / 2);
	cr_assert_eq(cmesh__spin_learn(8000, MAX, 1000000000), 4000);
}

Test(spin, a_spin_halved_below_the_minimum_is_none)
{
	cr_assert_eq(cmesh__spin_learn(2 * CMESH__SPIN_MIN_NS, MAX, 2 * MAX),
		     CMESH__SPIN_MIN_NS);
	cr_assert_eq(
		cmesh__spin_learn(2 * CMESH__SPIN_MIN_NS - 2, MAX, 2 * MAX), 0);
	cr_assert_eq(cmesh__spin_learn(0, MAX, 2 * MAX), 0);
}

Test(spin, a_short_sleep_widens_to_a_quarter_more_than_the_wait)
{
	cr_assert_eq(cmesh__spin_learn(0, MAX, 20000), 25000);
	cr_assert_eq(cmesh__spin_learn(1000, MAX, 20000), 25000);
}

Test(spin, widening_at_least_doubles_and_never_passes_the_maximum)
{
	cr_assert_eq(cmesh__spin_learn(16000, MAX, 20000), 32000);
	cr_assert_eq(cmesh__spin_learn(30000, MAX, 20000), MAX);
	cr_assert_eq(cmesh__spin_learn(0, MAX, MAX), MAX); /* 1.25x, capped */
	cr_assert_eq(cmesh__spin_learn(0, MAX, 100), CMESH__SPIN_MIN_NS);
}

/* ---- receivers ---- */

static int64_t spin_of(cmesh_receiver *rx)
{
	cmesh_receiver_stats s = { .size = sizeof(s) };

	TU_ASSERT_RC(cmesh_receiver_stats_get(rx, &s), 0);
	return s.spin_ns;
}

/* A wait that times out after 2 ms: nothing came within the maximum. */
static void time_out(cmesh_receiver *rx)
{
	struct item m;

	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(2)), &m, NULL, 0),
		     -ETIMEDOUT);
}

/*
 * From the maximum, each long wait halves the spin until it is none. A
 * wait whose deadline passed before it began (its thread preempted for
 * 2 ms on a loaded host, between cmesh_deadline_after() and the wait)
 * waits for nothing and rightly teaches nothing: a few such waits may
 * leave the spin as it was, but any change must be the halving.
 */
static void expect_halving_to_none(cmesh_receiver *rx)
{
	int64_t want = MAX;

	cr_assert_eq(spin_of(rx), want);
	while (want) {
		int64_t was = want;

		want /= 2;
		if (want < CMESH__SPIN_MIN_NS)
			want = 0;
		for (int tries = 0; tries < 10 && spin_of(rx) == was; tries++)
			time_out(rx);
		cr_assert_eq(spin_of(rx), want);
	}
	for (int i = 0; i < 3; i++) {
		time_out(rx);
		cr_assert_eq(spin_of(rx), 0,
			     "none stays none while waits are long");
	}
}

static void channel(int64_t spin_ns, cmesh_sender **tx, cmesh_receiver **rx)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;

	o.spin_ns = spin_ns;
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, tx, rx), 0);
}

Test(spin, the_default_is_adaptive_and_long_waits_take_its_spin_to_none)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct item m = { 5 };

	tu_env_clear();
	channel(0, &tx, &rx);
	expect_halving_to_none(rx);
	/* Its messages still arrive: it sleeps at once and is woken. */
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &m, NULL, 0), 0);
	cr_assert_eq(m.seq, 5);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(spin, an_explicit_adaptive_option_wins_over_a_fixed_cmesh_spin_ns)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;

	tu_env_clear();
	cr_assert_eq(setenv("CMESH_SPIN_NS", "7000", 1), 0);
	channel(CMESH_SPIN_ADAPTIVE, &tx, &rx);
	expect_halving_to_none(rx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

/* Nothing came for a while shorter than the maximum: no evidence. */
Test(spin, a_timeout_shorter_than_the_maximum_changes_nothing)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct item m;

	tu_env_clear();
	channel(CMESH_SPIN_ADAPTIVE, &tx, &rx);
	for (int i = 0; i < 3; i++) {
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(
				     rx, cmesh_deadline_after(MAX / 5), &m,
				     NULL, 0),
			     -ETIMEDOUT);
		cr_assert_eq(spin_of(rx), MAX);
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(spin, a_fixed_spin_learns_nothing)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;

	tu_env_clear();
	cr_assert_eq(setenv("CMESH_SPIN_NS", "7000", 1), 0);
	channel(0, &tx, &rx);
	for (int i = 0; i < 3; i++) {
		time_out(rx);
		cr_assert_eq(spin_of(rx), 7000);
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	channel(CMESH_SPIN_NONE, &tx, &rx);
	time_out(rx);
	cr_assert_eq(spin_of(rx), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(spin, cmesh_spin_ns_adaptive_is_the_default_spelled_out)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;

	tu_env_clear();
	cr_assert_eq(setenv("CMESH_SPIN_NS", "adaptive", 1), 0);
	channel(0, &tx, &rx);
	expect_halving_to_none(rx);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(spin, a_spin_option_below_adaptive_is_einval)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;

	o.spin_ns = CMESH_SPIN_ADAPTIVE - 1;
	TU_ASSERT_RC(cmesh_channel_new(&item_type, &o, &tx, &rx), -EINVAL);
	cr_assert_null(tx);
	cr_assert_null(rx);
}

/*
 * Across processes the same: the receiver of a link's first channel
 * (fed by a ring in shared memory) learns from its waits.
 */
Test(spin, a_receiver_fed_by_another_process_learns_too)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct item m;
	int sv[2], status;
	pid_t pid;

	tu_env_clear();
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		cmesh_node *n2;
		cmesh_sender *t2;
		cmesh_receiver *r2;

		close(sv[0]);
		if (cmesh_node_join_socket(sv[1], &item_type, &item_type, NULL,
					   &n2, &t2, &r2))
			_exit(1);
		/* Our peer's waits are over when it frees its sender. */
		if (cmesh_receiver_recv_deadline(
			    r2, cmesh_deadline_after(TU_MS(10000)), &m, NULL,
			    0) != -EPIPE)
			_exit(2);
		if (cmesh_sender_send(t2, &(struct item){ 8 }, NULL, 0))
			_exit(3);
		cmesh_sender_free(t2);
		cmesh_receiver_free(r2);
		cmesh_node_free(n2);
		_exit(0);
	}
	close(sv[1]);
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &item_type, &item_type, NULL,
					    &node, &tx, &rx),
		     0);
	expect_halving_to_none(rx);
	cmesh_sender_free(tx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(10000)), &m, NULL,
			     0),
		     0);
	cr_assert_eq(m.seq, 8);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child status %#x", status);
}
