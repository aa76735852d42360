/* SPDX-License-Identifier: MIT */
/*
 * config.c - an example configuration publisher using cells.
 *
 *   config publish N      start N subscriber processes (this program,
 *                         through cmesh_spawn), publish six versions of
 *                         the configuration, check what each one saw
 *   config subscribe      (what the publisher starts)
 *
 * The publisher owns a cell of `struct config` (cmesh_cell_new) and gives
 * each subscriber a clone of it in a message (CMESH_FIELD_CELL). Each set
 * reaches every subscriber at once; the publisher waits until every live
 * subscriber has seen the latest value (cmesh_cell_wait_seen) before it
 * publishes the next, so none skips one once it reads (in general a
 * reader sees the latest value, not every one; a subscriber starts with
 * the value its cell was given, which may be older than what it first
 * reads). A subscriber reads without a syscall (cmesh_cell_get) and waits
 * for the next change (cmesh_cell_wait_next) until the final version,
 * then reports what it saw and exits. Exit 0 when every subscriber saw
 * each version from its first one on, in order, ending with the last.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSIONS 6u
#define MAX_SUBS 8

/* The published value: plain data, copied whole on every set. */
struct config {
	uint32_t generation; /* 1 .. VERSIONS */
	uint32_t log_level;
	uint64_t rate_limit;
	char name[32];
};
CMESH_TYPE_DEFINE_PLAIN(config_type, struct config);

/* Publisher -> subscriber: its cell. */
struct hello {
	uint64_t id;
	cmesh_cell_port cell;
};
CMESH_TYPE_DEFINE(hello_type, struct hello,
		  CMESH_FIELD_CELL(struct hello, cell));

/* Subscriber -> publisher: what it saw. */
struct report {
	uint64_t id;
	uint32_t seen;	/* generations seen, one bit each */
	uint32_t first; /* the first generation it read */
	uint32_t last;	/* the last generation */
	uint32_t pad;
	uint64_t checks; /* sum of rate_limit over what it saw */
};
CMESH_TYPE_DEFINE_PLAIN(report_type, struct report);

static void die(const char *what, int err)
{
	fprintf(stderr, "config: %s: %s\n", what, cmesh_strerror(err));
	exit(1);
}

static struct config version(uint32_t g)
{
	struct config c = { .generation = g,
			    .log_level = g % 4,
			    .rate_limit = 1000u * g };

	snprintf(c.name, sizeof(c.name), "config v%u", g);
	return c;
}

static int subscribe(void)
{
	cmesh_node *node;
	cmesh_sender *up;
	cmesh_receiver *down;
	struct hello h;
	struct report rep = { 0 };
	struct config c;
	cmesh_cell *cell;
	int r;

	r = cmesh_join(&report_type, &hello_type, NULL, &node, &up, &down);
	if (r)
		die("join", r);
	r = cmesh_receiver_recv(down, &h, NULL, 0);
	if (!r)
		r = cmesh_cell_from_port(&h.cell, &config_type, NULL, &cell);
	if (r)
		die("the cell", r);
	rep.id = h.id;
	/* The value it was given, then every change until the last. */
	r = cmesh_cell_get(cell, &c, NULL);
	rep.first = c.generation;
	while (!r) {
		rep.seen |= 1u << c.generation;
		rep.last = c.generation;
		rep.checks += c.rate_limit;
		if (c.generation == VERSIONS)
			break;
		r = cmesh_cell_wait_next(cell, NULL, &c, NULL);
	}
	if (r)
		die("wait_next", r);
	r = cmesh_sender_send(up, &rep, NULL, 0);
	if (r)
		die("report", r);
	cmesh_cell_free(cell);
	cmesh_sender_free(up);
	cmesh_receiver_free(down);
	cmesh_node_close(node, cmesh_deadline_after(1000000000));
	return 0;
}

static int publish(int n)
{
	char *argv[] = { "config", "subscribe", NULL };
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	cmesh_node *node[MAX_SUBS];
	cmesh_sender *down[MAX_SUBS];
	cmesh_receiver *up[MAX_SUBS];
	cmesh_cell_updater *u;
	cmesh_cell *mine;
	struct config c = version(1);
	cmesh_ctx *ctx;
	int r, bad = 0;

	r = cmesh_cell_new(&config_type, &c, &u, &mine);
	if (r)
		die("cmesh_cell_new", r);
	o.flags = CMESH_NODE_PDEATHSIG;
	for (int i = 0; i < n; i++) {
		struct hello h = { .id = (uint64_t)i };
		cmesh_cell *clone;

		r = cmesh_spawn("/proc/self/exe", argv, &hello_type,
				&report_type, &o, &node[i], &down[i], &up[i]);
		if (!r)
			r = cmesh_cell_clone(mine, &clone);
		if (!r)
			r = cmesh_cell_to_port(clone, &h.cell);
		if (!r)
			r = cmesh_sender_send(down[i], &h, NULL, 0);
		if (r)
			die("a subscriber", r);
	}
	/* Each version, once every subscriber has seen the one before. */
	r = cmesh_ctx_with_timeout(NULL, 10000000000, &ctx);
	if (r)
		die("cmesh_ctx_with_timeout", r);
	for (uint32_t g = 1; g <= VERSIONS; g++) {
		if (g > 1) {
			c = version(g);
			if (cmesh_cell_set(u, &c) < 0)
				die("cmesh_cell_set", -ENOMEM);
		}
		/* Our own cell counts as a subscriber too: it reads. */
		r = cmesh_cell_get(mine, &c, NULL);
		if (!r)
			r = cmesh_cell_wait_seen(u, ctx);
		if (r)
			die("cmesh_cell_wait_seen", r);
		/* After the last one the subscribers leave: no count. */
		if (g < VERSIONS)
			printf("config: v%u seen by %d subscribers\n", g,
			       cmesh_cell_subscribers(u) - 1);
	}
	cmesh_ctx_free(ctx);
	for (int i = 0; i < n; i++) {
		struct report rep;
		uint64_t want = 0;
		int st;

		r = cmesh_receiver_recv(up[i], &rep, NULL, 0);
		if (r)
			die("a report", r);
		for (uint32_t g = rep.first; g <= VERSIONS; g++)
			want += 1000u * g;
		if (rep.first < 1 || rep.first > VERSIONS ||
		    rep.last != VERSIONS || rep.checks != want ||
		    rep.seen != (2u << VERSIONS) - (1u << rep.first)) {
			fprintf(stderr,
				"config: subscriber %llu saw %#x, "
				"last v%u\n",
				(unsigned long long)rep.id, rep.seen, rep.last);
			bad = 1;
		}
		cmesh_sender_free(down[i]);
		cmesh_receiver_free(up[i]);
		if (waitpid(cmesh_node_pid(node[i]), &st, 0) < 0 ||
		    !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad = 1;
		cmesh_node_free(node[i]);
	}
	cmesh_cell_free(mine);
	cmesh_cell_updater_free(u);
	if (!bad)
		printf("config: ok, %d subscribers followed it to v%u\n", n,
		       VERSIONS);
	return bad;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "subscribe") == 0)
		return subscribe();
	if (argc == 3 && strcmp(argv[1], "publish") == 0 &&
	    atoi(argv[2]) >= 1 && atoi(argv[2]) <= MAX_SUBS)
		return publish(atoi(argv[2]));
	fprintf(stderr, "usage: config publish N (1..%d)\n", MAX_SUBS);
	return 2;
}
