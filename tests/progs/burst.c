/* SPDX-License-Identifier: MIT */
/*
 * burst.c - a child for cmesh_spawn() tests: joins its parent, sends N
 * numbered messages (struct topo_burst_msg, seq 0..N-1) as fast as it can,
 * frees its sender, then with MODE "flush" waits for cmesh_node_flush()
 * (10 s deadline), and returns from main without freeing anything else:
 * the exit pattern of channel.h.
 *
 * Usage: test_prog_burst MODE N. Exit codes: 0 done, 2 bad argv, 3 join
 * failed, 4 send failed, 5 flush failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cmesh.h>

#include "helpers/topo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CMESH_TYPE_DEFINE_PLAIN(burst_type, struct topo_burst_msg);

/*
 * Returning from main with the node and receiver still held is what this
 * program tests: LeakSanitizer (in sanitizer builds) is told not to mind.
 */
int __lsan_is_turned_off(void);
__attribute__((visibility("default"))) int __lsan_is_turned_off(void)
{
	return 1;
}

int main(int argc, char **argv)
{
	struct topo_burst_msg m = { 0 };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	char *end;
	unsigned long long n;
	int r;

	if (argc != 3 ||
	    (strcmp(argv[1], "flush") != 0 && strcmp(argv[1], "exit") != 0))
		return 2;
	n = strtoull(argv[2], &end, 10);
	if (*end || !n)
		return 2;
	if (cmesh_join(&burst_type, &burst_type, NULL, &node, &tx, &rx))
		return 3;
	for (m.seq = 0; m.seq < n; m.seq++) {
		r = cmesh_sender_send(tx, &m, NULL, 0);
		if (r) {
			fprintf(stderr, "burst: send %llu: %s\n",
				(unsigned long long)m.seq, cmesh_strerror(r));
			return 4;
		}
	}
	cmesh_sender_free(tx);
	if (strcmp(argv[1], "flush") == 0) {
		r = cmesh_node_flush(node, cmesh_deadline_after(10000000000));
		if (r) {
			fprintf(stderr, "burst: flush: %s\n",
				cmesh_strerror(r));
			return 5;
		}
	}
	return 0;
}
