/* SPDX-License-Identifier: MIT */
/*
 * test_log.c - cmesh_log_set() and what the library logs: a join, a type
 * mismatch with both sides' names and fingerprints, a peer of another
 * protocol version, a bad environment; levels; stderr when no callback.
 * Each Criterion test runs in its own process, so each reads the
 * environment afresh.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include "proto.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(log, .init = tu_suite_init, .fini = tu_suite_fini);

struct small_a {
	uint64_t a;
};
struct small_b {
	uint32_t b;
};
CMESH_TYPE_DEFINE_PLAIN(a_type, struct small_a);
CMESH_TYPE_DEFINE_PLAIN(b_type, struct small_b);

/* ---- a capturing callback --------------------------------------------- */

#define MAXLINES 64

static pthread_mutex_t cap_lock = PTHREAD_MUTEX_INITIALIZER;
static char lines[MAXLINES][512];
static int levels[MAXLINES];
static int nlines;

static void capture(void *arg, int level, const char *line)
{
	cr_assert_eq(arg, (void *)&nlines);
	pthread_mutex_lock(&cap_lock);
	if (nlines < MAXLINES) {
		snprintf(lines[nlines], sizeof(lines[0]), "%s", line);
		levels[nlines++] = level;
	}
	pthread_mutex_unlock(&cap_lock);
}

/* The first captured line containing every one of `words` (NULL-ended). */
static int find_line(const char *const *words)
{
	pthread_mutex_lock(&cap_lock);
	for (int i = 0; i < nlines; i++) {
		bool all = true;

		for (int k = 0; words[k] && all; k++)
			all = strstr(lines[i], words[k]) != NULL;
		if (all) {
			pthread_mutex_unlock(&cap_lock);
			return i;
		}
	}
	pthread_mutex_unlock(&cap_lock);
	return -1;
}

static void dump(void)
{
	for (int i = 0; i < nlines; i++)
		fprintf(stderr, "captured %d: %s\n", levels[i], lines[i]);
}

/* ---- joins in one process: the other side in a thread ----------------- */

struct joiner {
	int sock;
	const cmesh_type *out, *in;
	int rc;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
};

static void *join_thread(void *arg)
{
	struct joiner *j = arg;

	j->rc = cmesh_node_join_socket(j->sock, j->out, j->in, NULL, &j->node,
				       &j->tx, &j->rx);
	return NULL;
}

/* Joins two sides over a socketpair: ours sends `out`, theirs `peer_out`. */
static void join_pair(const cmesh_type *out, const cmesh_type *peer_out,
		      int want)
{
	struct joiner a = { .out = out, .in = peer_out },
		      b = { .out = peer_out, .in = out };
	pthread_t t;
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	a.sock = sv[0];
	b.sock = sv[1];
	if (want == -EBADMSG)
		b.in = &b_type; /* the peer expects another type from us */
	tu_thread_start(&t, join_thread, &b);
	join_thread(&a);
	tu_thread_join(t);
	cr_assert_eq(a.rc, want, "join: %d", a.rc);
	cr_assert_eq(b.rc, want, "peer join: %d", b.rc);
	if (!want) {
		cmesh_sender_free(a.tx);
		cmesh_receiver_free(a.rx);
		cmesh_node_free(a.node);
		cmesh_sender_free(b.tx);
		cmesh_receiver_free(b.rx);
		cmesh_node_free(b.node);
	}
}

static void fp_hex(const cmesh_type *t, char *out, size_t len)
{
	uint64_t fp;

	cr_assert_eq(cmesh_type_fingerprint(t, &fp), 0);
	snprintf(out, len, "%016llx", (unsigned long long)fp);
}

/* ---- tests --------------------------------------------------------------- */

Test(log, a_type_mismatch_names_both_sides_types_and_fingerprints)
{
	char fa[32], fb[32];

	cr_assert_eq(cmesh_log_set(capture, &nlines, CMESH_LOG_ERROR), 0);
	join_pair(&a_type, &a_type, -EBADMSG);
	fp_hex(&a_type, fa, sizeof(fa));
	fp_hex(&b_type, fb, sizeof(fb));
	/* Our side: we send a_type, the peer expects b_type from us. */
	if (find_line((const char *const[]){
		    "type mismatch", "-EBADMSG", "struct small_a", fa,
		    "struct small_b", fb, NULL }) < 0) {
		dump();
		cr_assert_fail("no mismatch line naming both types");
	}
	/* Only errors were asked for: no join line. */
	cr_assert_eq(find_line((const char *const[]){ "linked to", NULL }), -1);
	for (int i = 0; i < nlines; i++)
		cr_assert_eq(levels[i], CMESH_LOG_ERROR);
	cr_assert_eq(cmesh_log_set(NULL, NULL, 0), 0);
}

Test(log, a_join_is_logged_at_info_with_the_wake_backend)
{
	cr_assert_eq(cmesh_log_set(capture, &nlines, CMESH_LOG_INFO), 0);
	join_pair(&a_type, &b_type, 0);
	if (find_line((const char *const[]){ "join with pid", "struct small_a",
					     "struct small_b", NULL }) < 0 ||
	    find_line((const char *const[]){ "linked to pid", "link thread on",
					     NULL }) < 0) {
		dump();
		cr_assert_fail("no join lines");
	}
	cr_assert_eq(cmesh_log_set(NULL, NULL, 0), 0);
}

Test(log, level_off_and_bad_levels)
{
	cr_assert_eq(cmesh_log_set(capture, &nlines, 5), -EINVAL);
	cr_assert_eq(cmesh_log_set(capture, &nlines, -1), -EINVAL);
	cr_assert_eq(cmesh_log_set(capture, &nlines, CMESH_LOG_OFF), 0);
	join_pair(&a_type, &a_type, -EBADMSG);
	cr_assert_eq(nlines, 0, "level off still logged %d lines", nlines);
	cr_assert_eq(cmesh_log_set(NULL, NULL, 0), 0);
}

/* A peer that speaks another protocol version is named as such. */
Test(log, a_peer_of_another_protocol_version_is_logged)
{
	struct joiner a = { .out = &a_type, .in = &a_type };
	struct cmesh_ctl_hdr h = { .magic = CMESH_PROTO_MAGIC,
				   .version = CMESH_PROTO_VERSION + 7,
				   .type = 1,
				   .len = 64 };
	char want[64];
	int sv[2];

	cr_assert_eq(cmesh_log_set(capture, &nlines, CMESH_LOG_ERROR), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	cr_assert_eq(send(sv[1], &h, sizeof(h), MSG_NOSIGNAL),
		     (ssize_t)sizeof(h));
	a.sock = sv[0];
	join_thread(&a);
	cr_assert_eq(a.rc, -EPROTO);
	close(sv[1]);
	snprintf(want, sizeof(want), "protocol %u", CMESH_PROTO_VERSION + 7);
	if (find_line((const char *const[]){ want, NULL }) < 0) {
		dump();
		cr_assert_fail("no protocol version line");
	}
	cr_assert_eq(cmesh_log_set(NULL, NULL, 0), 0);
}

/* A bad environment is said once, even with logging off. */
Test(log, a_bad_environment_is_logged_once)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;

	tu_env_clear();
	setenv("CMESH_RING_SIZE", "12345", 1);
	cr_assert_eq(cmesh_log_set(capture, &nlines, CMESH_LOG_ERROR), 0);
	cr_assert_eq(cmesh_channel_new(&a_type, NULL, &tx, &rx), -EINVAL);
	cr_assert_eq(cmesh_channel_new(&a_type, NULL, &tx, &rx), -EINVAL);
	cr_assert_eq(nlines, 1, "%d lines", nlines);
	cr_assert(strstr(lines[0], "CMESH_RING_SIZE") &&
			  strstr(lines[0], "12345"),
		  "line: %s", lines[0]);
	cr_assert_eq(cmesh_log_set(NULL, NULL, 0), 0);
	unsetenv("CMESH_RING_SIZE");
}

/* Without a callback, lines go to stderr at CMESH_LOG's level. */
Test(log, without_a_callback_lines_go_to_stderr)
{
	char buf[4096] = { 0 };
	char want[64];
	int p[2], saved;
	ssize_t n, got = 0;

	tu_env_clear();
	setenv("CMESH_LOG", "info", 1);
	tu_pipe(p);
	saved = dup(STDERR_FILENO);
	cr_assert(saved >= 0);
	cr_assert_eq(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
	join_pair(&a_type, &b_type, 0);
	cr_assert_eq(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	close(p[1]);
	while ((n = read(p[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
		got += n;
	close(p[0]);
	snprintf(want, sizeof(want), "cmesh[%d]: ", (int)getpid());
	cr_assert(strstr(buf, want) && strstr(buf, "linked to pid"),
		  "stderr: %s", buf);
	unsetenv("CMESH_LOG");
}
