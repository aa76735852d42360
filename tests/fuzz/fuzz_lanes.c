/* SPDX-License-Identifier: MIT */
/*
 * fuzz_lanes.c - libFuzzer harness: the control messages a peer sends once
  * joined (ATTACH with fds and port descriptors, LANE answers, END, and a
 * waitset's WAKESOCK and WAKECLOSE), as the link thread parses them (cmesh__lanes_handle_ctl), against a link whose
 * lane table holds its two first lanes and lanes this side exported and
 * awaits answers for. The input is a sequence of messages: a byte of fds
 * (how many, and which kind: a real lane half, an eventfd, a pipe), a
 * length byte, then the message. Nothing may crash, leak or grow without
 * bound; a refused message leaves its fds to the caller, who closes them.
 */
#include "arena.h"
#include "lane.h"
#include "link_int.h"

#include "proto.h"
#include "ring.h"

#include <cmesh.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct val {
	uint64_t v;
};
CMESH_TYPE_DEFINE_PLAIN(val_type, struct val);

struct ports {
	cmesh_sender *tx;
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(ports_type, struct ports,
		  CMESH_FIELD_SENDER(struct ports, tx, val_type),
		  CMESH_FIELD_RECEIVER(struct ports, rx, val_type));

/* A link with no thread, no peer: its socket's other end is `peer`. */
struct fake {
	struct cmesh__link *l;
	int peer;
	struct cmesh__port_out exported[4];
};

static void fake_free(struct fake *f)
{
	struct cmesh__link *l = f->l;

	for (int i = 0; i < 4; i++)
		if (f->exported[i].fd >= 0)
			close(f->exported[i].fd);
	cmesh__lanes_destroy(l); /* contexts in FIFOs go: before the maps */
	cmesh__ctx_destroy(l);
	cmesh__wakes_destroy(l);
	cmesh__lane_destroy(&l->out);
	cmesh__lane_destroy(&l->in);
	pthread_mutex_destroy(&l->att_lock);
	pthread_mutex_destroy(&l->orphan_lock);
	close(l->sock);
	close(f->peer);
	free(l);
}

static void fake_new(struct fake *f)
{
	struct cmesh__link *l = calloc(1, sizeof(*l));
	int sv[2];

	if (!l ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0, sv))
		abort();
	l->sock = sv[0];
	f->peer = sv[1];
	l->kick_efd = l->pidfd = -1;
	l->fd_budget = 1024;
	l->ctl_tailp = &l->ctl_head;
	atomic_init(&l->refs, 1);
	pthread_mutex_init(&l->att_lock, NULL);
	pthread_mutex_init(&l->orphan_lock, NULL);
	if (cmesh__lane_init(&l->out, l, &ports_type, 1 << 20, 1 << 20, 0) ||
	    cmesh__lane_init(&l->in, l, &ports_type, 1 << 20, 0, 0))
		abort();
	l->in.efd = l->in.wake_sock = l->in.peer_wake_sock = -1;
	l->out.efd = l->out.wake_sock = l->out.peer_wake_sock = -1;
	l->in.att_max = 8;
	/* We are the even side; the peer's ids are odd. */
	if (cmesh__lanes_init(l, 1, 2) || cmesh__wakes_init(l) ||
	    cmesh__ctx_init(l, 3))
		abort();
	f->l = l;
	/* Lanes awaiting answers: LANE messages have something to name. */
	for (int i = 0; i < 4; i++) {
		f->exported[i].fd = -1;
		if (cmesh__link_lane_export(l, i & 1, &val_type, 4096, 1 << 16,
					    0, &f->exported[i]))
			abort();
	}
}

/* An fd for a message: a real half of a lane, or something else. */
static int make_fd(uint8_t kind)
{
	struct cmesh__arena *a;
	int p[2], fd;

	switch (kind % 4) {
	case 0:
		if (cmesh__arena_create(CMESH_SHM_ARENA_MIN_SIZE, "fuzz-half",
					&a))
			abort();
		fd = cmesh__arena_release_fd(a);
		cmesh__arena_free(a);
		return fd;
	case 1:
		if (cmesh__arena_create(
			    cmesh__arena_size_for(cmesh_shm_ring_area(4096)),
			    "fuzz-ring", &a))
			abort();
		fd = cmesh__arena_release_fd(a);
		cmesh__arena_free(a);
		return fd;
	case 2:
		return eventfd(0, EFD_CLOEXEC);
	default:
		if (pipe2(p, O_CLOEXEC))
			abort();
		close(p[1]);
		return p[0];
	}
}

/* Reads what we answered (LANE, END): the socket never fills. */
static void drain_peer(int s)
{
	unsigned char b[256];

	while (recv(s, b, sizeof(b), MSG_DONTWAIT) >= 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fake f;

	fake_new(&f);
	while (size >= 2) {
		unsigned char msg[sizeof(struct cmesh_ctl_attach) +
				  CMESH_CTL_MAX_PORTS *
					  sizeof(struct cmesh_ctl_port)];
		uint8_t k = data[0]; /* fds: how many, which kinds; header */
		uint32_t nfds = k % 4, len = data[1];
		int fds[4], r;

		data += 2;
		size -= 2;
		if (len > size)
			len = (uint32_t)size;
		memset(msg, 0, sizeof(msg));
		memcpy(msg, data, len);
		/* Mostly a well-formed header: the checks after it count. */
		if (len >= sizeof(struct cmesh_ctl_hdr) && (k & 0x80)) {
			struct cmesh_ctl_hdr h;

			memcpy(&h, msg, sizeof(h));
			h.magic = CMESH_PROTO_MAGIC;
			h.version = CMESH_PROTO_VERSION;
			h.type = 2 + (k >> 3) % 9; /* ATTACH .. CLAIM */
			h.len = len;
			memcpy(msg, &h, sizeof(h));
		}
		for (uint32_t i = 0; i < nfds; i++)
			fds[i] = make_fd((uint8_t)(k >> (2 + i)));
		r = cmesh__lanes_handle_ctl(f.l, msg, (int)len, fds, nfds);
		if (r)
			for (uint32_t i = 0; i < nfds; i++)
				close(fds[i]);
		data += len;
		size -= len;
		drain_peer(f.peer);
		if (r) /* the link would fail: later messages are not read */
			break;
	}
	fake_free(&f);
	return 0;
}
