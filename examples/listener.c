/* SPDX-License-Identifier: MIT */
/*
 * listener.c - a service that unrelated processes connect to.
 *
 *   listener serve PATH N     accept N clients on the unix socket PATH,
 *                             answer each one's hello, then exit 0
 *   listener client PATH ID   connect, say hello, check the answer
 *
 * The server waits for clients in one poll loop of its own over
 * cmesh_listener_fd(); a client that connects and says nothing holds no
 * other up (cmesh_listener_accept() joins the first that speaks).
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hello {
	uint64_t id;
	int64_t pid;
};
CMESH_TYPE_DEFINE_PLAIN(hello_type, struct hello);

static int serve(const char *path, int n)
{
	cmesh_listener *l;
	int r = cmesh_listen(path, NULL, &l);

	if (r) {
		fprintf(stderr, "listener: listen: %s\n", cmesh_strerror(r));
		return 1;
	}
	/* Ready: the runner starts clients once the socket exists. */
	printf("listener: listening on %s\n", path);
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		struct pollfd p = { .fd = cmesh_listener_fd(l),
				    .events = POLLIN };
		cmesh_node *node;
		cmesh_sender *tx;
		cmesh_receiver *rx;
		struct hello h;

		if (poll(&p, 1, 10000) != 1) {
			fprintf(stderr, "listener: no client came\n");
			return 1;
		}
		r = cmesh_listener_accept(l, cmesh_deadline_after(5000000000LL),
					  &hello_type, &hello_type, NULL, &node,
					  &tx, &rx);
		if (r == -ETIMEDOUT || r == -EAGAIN) {
			i--; /* woken by one that has not spoken yet */
			continue;
		}
		if (r) {
			fprintf(stderr, "listener: accept: %s\n",
				cmesh_strerror(r));
			return 1;
		}
		r = cmesh_receiver_recv_deadline(
			rx, cmesh_deadline_after(5000000000LL), &h, NULL, 0);
		if (!r) {
			printf("listener: client %llu (pid %lld, pid seen %d)\n",
			       (unsigned long long)h.id, (long long)h.pid,
			       (int)cmesh_node_pid(node));
			h.id *= 2;
			r = cmesh_sender_send(tx, &h, NULL, 0);
		}
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
		cmesh_node_close(node, cmesh_deadline_after(1000000000));
		if (r) {
			fprintf(stderr, "listener: client: %s\n",
				cmesh_strerror(r));
			return 1;
		}
	}
	cmesh_listener_free(l);
	return 0;
}

static int client(const char *path, uint64_t id)
{
	struct hello h = { .id = id, .pid = getpid() };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int r;

	r = cmesh_connect(path, &hello_type, &hello_type, NULL, &node, &tx,
			  &rx);
	if (r) {
		fprintf(stderr, "client %llu: connect: %s (%d)\n",
			(unsigned long long)id, cmesh_strerror(r), r);
		return 1;
	}
	r = cmesh_sender_send(tx, &h, NULL, 0);
	if (!r)
		r = cmesh_receiver_recv_deadline(
			rx, cmesh_deadline_after(5000000000LL), &h, NULL, 0);
	if (!r && h.id != id * 2)
		r = -EIO;
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	if (r) {
		fprintf(stderr, "client %llu: %s\n", (unsigned long long)id,
			cmesh_strerror(r));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(argv[2], atoi(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "client"))
		return client(argv[2], strtoull(argv[3], NULL, 10));
	fprintf(stderr, "usage: listener serve PATH N | client PATH ID\n");
	return 2;
}
