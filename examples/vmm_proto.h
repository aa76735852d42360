/* SPDX-License-Identifier: MIT */
/*
 * vmm_proto.h - the messages between the example VMM (vmm.c) and its
 * device process (device.c). Both include it, so their descriptors (and
 * fingerprints) agree.
 *
 * One channel of requests (VMM -> device), each an rpc with a reply port:
 *   DEV_SETUP  fds: the guest memory memfd and the interrupt eventfd;
 *   DEV_READ   fill guest memory [offset, offset + len) with the block's
 *              bytes, then signal the interrupt eventfd;
 *   DEV_STREAM send `len` bytes of the block, in chunks, on `data` (a
 *              sender the request carries), then close it;
 *   DEV_PIPE   write `len` bytes of the block into `pipe` (a pipe writer
 *              the request carries: the VMM reads the other end, and the
 *              pipe's window holds the device back), then end it.
 * The device's channel to the VMM (the link's other direction) is unused
 * here: everything comes back through reply ports.
 */
#ifndef VMM_PROTO_H
#define VMM_PROTO_H

#include <cmesh.h>

#include <stdint.h>

enum dev_op {
	DEV_SETUP = 1,
	DEV_READ,
	DEV_STREAM,
	DEV_PIPE
};

/* A chunk of a stream: its offset; the bytes are its trailing bytes. */
struct dev_chunk {
	uint64_t offset;
};
CMESH_TYPE_DEFINE_PLAIN(dev_chunk_type, struct dev_chunk);

struct dev_resp {
	int32_t status; /* 0, or a negative errno */
	uint32_t pad;
	uint64_t value; /* DEV_READ: a checksum of the bytes written */
};
CMESH_TYPE_DEFINE_PLAIN(dev_resp_type, struct dev_resp);

struct dev_args {
	uint32_t op;
	int32_t mem_fd; /* DEV_SETUP, else -1 */
	int32_t irq_fd; /* DEV_SETUP, else -1 */
	uint32_t pad;
	uint64_t block, offset, len;
	cmesh_sender *data; /* DEV_STREAM: chunks go here (dev_chunk_type) */
	cmesh_pipe_writer_port pipe; /* DEV_PIPE: the bytes go here */
};

CMESH_RPC_REQUEST_FIELDS(dev_req, struct dev_args, dev_resp_type,
			 CMESH_FIELD_FD(struct dev_req, args.mem_fd),
			 CMESH_FIELD_FD(struct dev_req, args.irq_fd),
			 CMESH_FIELD_SENDER(struct dev_req, args.data,
					    dev_chunk_type),
			 CMESH_FIELD_PIPE_WRITER(struct dev_req, args.pipe));

/* Nothing travels device -> VMM on the link's own channel. */
struct dev_none {
	uint64_t unused;
};
CMESH_TYPE_DEFINE_PLAIN(dev_none_type, struct dev_none);

/* The bytes of block `block` at byte `i`: both sides compute them. */
static inline uint8_t dev_byte(uint64_t block, uint64_t i)
{
	return (uint8_t)(block * 131u + i * 7u + (i >> 8));
}

#endif
