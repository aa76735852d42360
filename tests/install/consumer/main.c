/* SPDX-License-Identifier: MIT */
/*
 * Install test consumer: one message through a channel of an installed
 * cmesh. Exits 0 on success.
 */
#include <stdio.h>
#include <string.h>

#include <cmesh.h>

struct point {
	uint64_t x;
	uint64_t y;
};

CMESH_TYPE_DEFINE_PLAIN(point_type, struct point);

static int fail(const char *what, int err)
{
	fprintf(stderr, "consumer: %s: %s (%d)\n", what, cmesh_strerror(err),
		err);
	return 1;
}

int main(void)
{
	struct point in = { 3, 4 };
	struct point out;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int err;

	err = cmesh_channel_new(&point_type, NULL, &tx, &rx);
	if (err < 0)
		return fail("cmesh_channel_new", err);
	err = cmesh_sender_send(tx, &in, NULL, 0);
	if (err < 0)
		return fail("cmesh_sender_send", err);
	memset(&out, 0, sizeof(out));
	err = cmesh_receiver_try_recv(rx, &out, NULL, 0);
	if (err != 0)
		return fail("cmesh_receiver_try_recv", err);
	if (out.x != 3 || out.y != 4) {
		fprintf(stderr, "consumer: got {%llu, %llu}, want {3, 4}\n",
			(unsigned long long)out.x, (unsigned long long)out.y);
		return 1;
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	printf("consumer: ok\n");
	return 0;
}
