/* SPDX-License-Identifier: MIT */
/*
 * vmm.c - an example VMM process and its device process (device.c).
 *
 *   vmm DEVICE_PATH
 *
 * Starts the device with cmesh_spawn() (it dies with us:
 * CMESH_NODE_PDEATHSIG), gives it a memfd of "guest memory" and an
 * eventfd for its interrupt, then drives it by rpc: reads that the device
 * writes into guest memory and signals, a stream of bytes over a channel
 * the request carries, and the same over a pipe whose writer it carries. Midway the device gets stuck on a request:
 * the call's deadline (a cancel context) passes, the VMM kills it, sees
 * the call fail with -ECONNRESET, reports it, reaps it and respawns it,
 * then goes on. Exit 0 when every byte checked out.
 */
#define _GNU_SOURCE
#include "vmm_proto.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define GUEST_SIZE (1u << 20)
#define BLOCK 4096u

static const char *device_path;
static unsigned char *guest;
static int guest_fd, irq_fd;

struct device {
	cmesh_node *node;
	cmesh_sender *requests;
	cmesh_receiver *none;
	pid_t pid;
};

static void die(const char *what, int err)
{
	fprintf(stderr, "vmm: %s: %s\n", what, cmesh_strerror(err));
	exit(1);
}

/* One request, its reply waited for until `ctx` ends (NULL: no limit). */
static int call(struct device *d, struct dev_args a, const cmesh_ctx *ctx,
		struct dev_resp *resp)
{
	struct dev_req q = { .args = a };
	cmesh_rpc *c;
	int r;

	r = cmesh_rpc_call(d->requests, &q, NULL, 0, &c);
	if (r)
		return r;
	r = cmesh_rpc_wait(c, ctx, resp, NULL, 0);
	if (r == -ETIMEDOUT) {
		/* A stuck device: kill it; the call then fails for good. */
		fprintf(stderr,
			"vmm: device %d did not answer in time: "
			"killing it\n",
			(int)d->pid);
		kill(d->pid, SIGKILL);
		r = cmesh_rpc_wait(c, NULL, resp, NULL, 0);
	}
	cmesh_rpc_free(c);
	return r ? r : resp->status;
}

static struct dev_args args(uint32_t op)
{
	return (struct dev_args){ .op = op, .mem_fd = -1, .irq_fd = -1 };
}

static void start(struct device *d)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	char *argv[] = { (char *)device_path, NULL };
	struct dev_args a = args(DEV_SETUP);
	struct dev_resp resp;
	int r;

	o.flags |= CMESH_NODE_PDEATHSIG;
	r = cmesh_spawn(device_path, argv, &dev_req_type, &dev_none_type, &o,
			&d->node, &d->requests, &d->none);
	if (r)
		die("cmesh_spawn", r);
	d->pid = cmesh_node_pid(d->node);
	/* The fds are taken by the send: the device gets copies. */
	a.mem_fd = dup(guest_fd);
	a.irq_fd = dup(irq_fd);
	if (a.mem_fd < 0 || a.irq_fd < 0)
		die("dup", -errno);
	r = call(d, a, NULL, &resp);
	if (r)
		die("setup", r);
	printf("vmm: device %d up\n", (int)d->pid);
}

/* Lets the device go (it exits when its request channel closes). */
static int stop(struct device *d)
{
	int st;

	cmesh_sender_free(d->requests);
	cmesh_receiver_free(d->none);
	cmesh_node_free(d->node);
	if (waitpid(d->pid, &st, 0) != d->pid)
		return -errno;
	return st;
}

static void reads(struct device *d, uint64_t first, uint64_t n)
{
	for (uint64_t b = first; b < first + n; b++) {
		struct dev_args a = args(DEV_READ);
		struct dev_resp resp;
		uint64_t sum = 0, ev;
		int r;

		a.block = b;
		a.offset = (b * BLOCK) % GUEST_SIZE;
		a.len = BLOCK;
		r = call(d, a, NULL, &resp);
		if (r)
			die("read", r);
		/* The interrupt came, and the bytes are in guest memory. */
		if (read(irq_fd, &ev, sizeof(ev)) != sizeof(ev))
			die("interrupt", -errno);
		for (uint64_t i = 0; i < BLOCK; i++) {
			if (guest[a.offset + i] != dev_byte(b, i))
				die("guest memory", -EIO);
			sum += guest[a.offset + i];
		}
		if (sum != resp.value)
			die("checksum", -EIO);
	}
}

static void stream(struct device *d, uint64_t block, uint64_t len)
{
	static unsigned char buf[BLOCK];
	struct dev_args a = args(DEV_STREAM);
	cmesh_receiver *data;
	struct dev_resp resp;
	struct dev_chunk c;
	uint64_t got = 0;
	cmesh_rpc *rpc;
	struct dev_req q;
	int r;

	r = cmesh_channel_new(&dev_chunk_type, NULL, &a.data, &data);
	if (r)
		die("cmesh_channel_new", r);
	a.block = block;
	a.len = len;
	q = (struct dev_req){ .args = a };
	r = cmesh_rpc_call(d->requests, &q, NULL, 0, &rpc);
	if (r)
		die("stream call", r);
	/* Chunks, in order, until the device frees its end. */
	while ((r = cmesh_receiver_recv(data, &c, buf, sizeof(buf))) >= 0) {
		if (c.offset != got)
			die("stream order", -EIO);
		for (int i = 0; i < r; i++)
			if (buf[i] != dev_byte(block, got + (uint64_t)i))
				die("stream bytes", -EIO);
		got += (uint64_t)r;
	}
	if (r != -EPIPE || got != len)
		die("stream end", r == -EPIPE ? -EIO : r);
	cmesh_receiver_free(data);
	r = cmesh_rpc_wait(rpc, NULL, &resp, NULL, 0);
	cmesh_rpc_free(rpc);
	if (r || resp.status)
		die("stream reply", r ? r : resp.status);
}

/*
 * The same bytes through a pipe: its writer end goes to the device in the
 * request; we read until EOF while the device writes (the pipe's window
 * holds it back whenever we fall behind), then take its reply.
 */
static void pipe_stream(struct device *d, uint64_t block, uint64_t len)
{
	static unsigned char buf[3000]; /* any size: a byte stream */
	struct dev_args a = args(DEV_PIPE);
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *rd;
	struct dev_resp resp;
	struct dev_req q;
	cmesh_rpc *rpc;
	uint64_t got = 0;
	int64_t n;
	int r;

	r = cmesh_pipe_new(&w, &rd);
	if (!r)
		r = cmesh_pipe_writer_to_port(w, &a.pipe);
	if (r)
		die("cmesh_pipe_new", r);
	a.block = block;
	a.len = len;
	q = (struct dev_req){ .args = a };
	r = cmesh_rpc_call(d->requests, &q, NULL, 0, &rpc);
	if (r)
		die("pipe call", r);
	while ((n = cmesh_pipe_read(rd, buf, sizeof(buf), NULL)) > 0) {
		for (int64_t i = 0; i < n; i++)
			if (buf[i] != dev_byte(block, got + (uint64_t)i))
				die("pipe bytes", -EIO);
		got += (uint64_t)n;
	}
	if (n != 0 || got != len)
		die("pipe end", n ? (int)n : -EIO);
	cmesh_pipe_reader_free(rd);
	r = cmesh_rpc_wait(rpc, NULL, &resp, NULL, 0);
	cmesh_rpc_free(rpc);
	if (r || resp.status)
		die("pipe reply", r ? r : resp.status);
}

int main(int argc, char **argv)
{
	struct device d;
	struct dev_resp resp;
	cmesh_ctx *ctx;
	int r, st;

	if (argc != 2) {
		fprintf(stderr, "usage: vmm DEVICE_PATH\n");
		return 2;
	}
	device_path = argv[1];
	guest_fd = memfd_create("guest-memory", MFD_CLOEXEC);
	irq_fd = eventfd(0, EFD_CLOEXEC);
	if (guest_fd < 0 || irq_fd < 0 || ftruncate(guest_fd, GUEST_SIZE))
		die("guest memory", -errno);
	guest = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		     guest_fd, 0);
	if (guest == MAP_FAILED)
		die("mmap", -errno);

	start(&d);
	reads(&d, 0, 64);
	stream(&d, 7, 1u << 20);
	pipe_stream(&d, 8, 1u << 20);

	/* The device gets stuck; 200 ms later we kill it and respawn. */
	r = cmesh_ctx_with_timeout(NULL, 200000000, &ctx);
	if (r)
		die("cmesh_ctx_with_timeout", r);
	{
		struct dev_args a = args(DEV_READ);

		a.block = UINT64_MAX;
		r = call(&d, a, ctx, &resp);
	}
	cmesh_ctx_free(ctx);
	if (r != -ECONNRESET)
		die("the stuck call", r ? r : -EIO);
	printf("vmm: device %d died (%s): respawning\n", (int)d.pid,
	       cmesh_strerror(r));
	st = stop(&d);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
		die("reaping the killed device", -EIO);

	start(&d);
	reads(&d, 64, 64);
	stream(&d, 9, 3u << 19);
	pipe_stream(&d, 10, 3u << 19);
	st = stop(&d);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("the device's exit", -EIO);
	printf("vmm: ok\n");
	return 0;
}
