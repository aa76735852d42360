/* SPDX-License-Identifier: MIT */
/*
 * echo.c - a child for cmesh_spawn() tests: joins its parent with
 * cmesh_join() and sends every message back (struct, trailing bytes and
 * fd) until the parent frees its sender, then frees everything and exits 0.
 *
 * Usage: test_prog_echo MARK. MARK must be "echo-argv" (the test checks
 * that argv arrives). Exit codes: 0 done, 2 bad argv, 3 join failed, 4
 * CMESH_INVITE still set after joining, 5 receive failed, 6 send failed,
 * 7 out of memory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cmesh.h>

#include "helpers/topo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CMESH_TYPE_DEFINE(echo_type, struct topo_echo_msg,
		  CMESH_FIELD_FD(struct topo_echo_msg, fd));

int main(int argc, char **argv)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct topo_echo_msg m;
	size_t cap = 1u << 16;
	unsigned char *buf;
	int r;

	if (argc != 2 || strcmp(argv[1], "echo-argv") != 0)
		return 2;
	r = cmesh_join(&echo_type, &echo_type, NULL, &node, &tx, &rx);
	if (r) {
		fprintf(stderr, "echo: cmesh_join: %s\n", cmesh_strerror(r));
		return 3;
	}
	if (getenv(CMESH_INVITE_ENV))
		return 4;
	cmesh_node_free(node);
	buf = malloc(cap);
	if (!buf)
		return 7;
	for (;;) {
		r = cmesh_receiver_recv(rx, &m, buf, cap);
		if (r == -EMSGSIZE) {
			int need = cmesh_receiver_try_peek(rx);
			unsigned char *nb;

			if (need < 0)
				return 5;
			nb = realloc(buf, (size_t)need);
			if (!nb)
				return 7;
			buf = nb;
			cap = (size_t)need;
			continue;
		}
		if (r == -EPIPE)
			break;
		if (r < 0) {
			fprintf(stderr, "echo: recv: %s\n", cmesh_strerror(r));
			return 5;
		}
		r = cmesh_sender_send(tx, &m, r ? buf : NULL, (size_t)r);
		if (r) {
			fprintf(stderr, "echo: send: %s\n", cmesh_strerror(r));
			return 6;
		}
	}
	free(buf);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}
