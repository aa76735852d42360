/* SPDX-License-Identifier: MIT */
/*
 * device.c - the example device process (see vmm.c), started by the VMM
 * with cmesh_spawn(). It joins, takes the guest memory and interrupt
 * eventfd the VMM sends at setup, then serves requests until the VMM lets
 * go of it (exit 0). DEV_HANG-like behaviour: a DEV_READ of block
 * UINT64_MAX is never answered (a stuck device, for the VMM to kill).
 */
#define _GNU_SOURCE
#include "vmm_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned char *mem;
static size_t mem_size;
static int irq = -1;

static int answer(cmesh_oneshot_sender *reply, int32_t status, uint64_t value)
{
	struct dev_resp r = { .status = status, .value = value };

	return cmesh_rpc_complete(reply, &r, NULL, 0);
}

static int setup(struct dev_req *q)
{
	struct stat st;

	if (mem || q->args.mem_fd < 0 || q->args.irq_fd < 0 ||
	    fstat(q->args.mem_fd, &st) || st.st_size <= 0)
		return -EINVAL;
	mem = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   q->args.mem_fd, 0);
	if (mem == MAP_FAILED) {
		mem = NULL;
		return -errno;
	}
	mem_size = (size_t)st.st_size;
	close(q->args.mem_fd);
	irq = q->args.irq_fd;
	return 0;
}

static int dev_read(const struct dev_args *a, uint64_t *sum)
{
	uint64_t one = 1;

	if (!mem || a->offset > mem_size || a->len > mem_size - a->offset)
		return -EINVAL;
	*sum = 0;
	for (uint64_t i = 0; i < a->len; i++) {
		mem[a->offset + i] = dev_byte(a->block, i);
		*sum += mem[a->offset + i];
	}
	/* The interrupt: the VMM's eventfd. */
	return write(irq, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

static int dev_stream(struct dev_args *a)
{
	unsigned char chunk[4096];
	int r = 0;

	for (uint64_t off = 0; off < a->len && !r; off += sizeof(chunk)) {
		struct dev_chunk c = { .offset = off };
		size_t n = a->len - off < sizeof(chunk) ? a->len - off :
							  sizeof(chunk);

		for (size_t i = 0; i < n; i++)
			chunk[i] = dev_byte(a->block, off + i);
		r = cmesh_sender_send(a->data, &c, chunk, n);
	}
	cmesh_sender_free(a->data); /* the VMM sees the end of the stream */
	a->data = NULL;
	return r;
}

static int dev_pipe(struct dev_args *a)
{
	unsigned char buf[4096];
	cmesh_pipe_writer *w;
	int r;

	r = cmesh_pipe_writer_from_port(&a->pipe, &w);
	if (r)
		return r;
	for (uint64_t off = 0; off < a->len && !r; off += sizeof(buf)) {
		size_t n = a->len - off < sizeof(buf) ? a->len - off :
							sizeof(buf);
		int64_t put;

		for (size_t i = 0; i < n; i++)
			buf[i] = dev_byte(a->block, off + i);
		/* Waits while the VMM has not read the window's worth. */
		put = cmesh_pipe_write(w, buf, n, NULL);
		if (put != (int64_t)n)
			r = put < 0 ? (int)put : -EIO;
	}
	cmesh_pipe_writer_free(w); /* the VMM reads EOF after the bytes */
	return r;
}

int main(void)
{
	cmesh_node *node;
	cmesh_sender *up;
	cmesh_receiver *requests;
	struct dev_req q;
	int r;

	r = cmesh_join(&dev_none_type, &dev_req_type, NULL, &node, &up,
		       &requests);
	if (r) {
		fprintf(stderr, "device: join: %s\n", cmesh_strerror(r));
		return 1;
	}
	while ((r = cmesh_receiver_recv(requests, &q, NULL, 0)) == 0) {
		uint64_t sum = 0;
		int status;

		switch (q.args.op) {
		case DEV_SETUP:
			status = setup(&q);
			if (status) {
				close(q.args.mem_fd);
				close(q.args.irq_fd);
			}
			break;
		case DEV_READ:
			if (q.args.block == UINT64_MAX) {
				/* Stuck: never answers, waits to be killed. */
				for (;;)
					pause();
			}
			status = dev_read(&q.args, &sum);
			break;
		case DEV_STREAM:
			status = q.args.data ? dev_stream(&q.args) : -EINVAL;
			break;
		case DEV_PIPE:
			status = dev_pipe(&q.args);
			break;
		default:
			status = -EINVAL;
		}
		if (q.args.op != DEV_SETUP) {
			/* fds only come with a setup: never keep others. */
			if (q.args.mem_fd >= 0)
				close(q.args.mem_fd);
			if (q.args.irq_fd >= 0)
				close(q.args.irq_fd);
		}
		if (q.args.data)
			cmesh_sender_free(q.args.data);
		if (q.args.pipe.data) { /* a pipe end we did not take */
			cmesh_pipe_writer *w;

			if (cmesh_pipe_writer_from_port(&q.args.pipe, &w) == 0)
				cmesh_pipe_writer_free(w);
		}
		if (answer(q.reply, status, sum) && status == 0)
			fprintf(stderr, "device: the VMM left a call\n");
	}
	/* -EPIPE: the VMM freed its sender, we are done. */
	cmesh_sender_free(up);
	cmesh_receiver_free(requests);
	cmesh_node_close(node, cmesh_deadline_after(1000000000));
	return r == -EPIPE ? 0 : 1;
}
