/* SPDX-License-Identifier: MIT */
/* tests/embed: a program built with cmesh from add_subdirectory(). */
#include <cmesh.h>

#include <stdio.h>

struct ping {
	int v;
};
CMESH_TYPE_DEFINE_PLAIN(ping_type, struct ping);

int main(void)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct ping p = { 42 };

	if (cmesh_channel_new(&ping_type, NULL, &tx, &rx) ||
	    cmesh_sender_send(tx, &p, NULL, 0) ||
	    cmesh_receiver_recv(rx, &p, NULL, 0) || p.v != 42) {
		fprintf(stderr, "embed: a channel did not carry its message\n");
		return 1;
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	puts("embed: ok");
	return 0;
}
