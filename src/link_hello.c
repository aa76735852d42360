/* SPDX-License-Identifier: MIT */
/*
 * link_hello.c - a link's handshake (HELLO, shm/proto.h): each side
 * creates its arena (ring it writes + the consumer line of the ring it
 * reads), sends HELLO with the arena memfd and its wake socket, receives
 * the peer's HELLO, maps the peer's arena read-only after validating it,
 * attaches both rings, and compares the channel type fingerprints (both
 * sides compute the same verdict, so a mismatch fails both with -EBADMSG).
 */
#include "link_int.h"

#include "arena.h"
#include "lane.h"
#include "log.h"
#include "park.h"
#include "ctl.h"
#include "wake.h"

#include "proto.h"
#include "ring.h"

#include <cmesh/common.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

/* A type's name into a HELLO field: cut to fit, NUL-padded. */
static void put_name(char *dst, const cmesh_type *t)
{
	const char *n = t->name ? t->name : "";
	size_t len = strnlen(n, CMESH_CTL_NAME - 1);

	memcpy(dst, n, len);
}

/* A peer's name field, printable: `out` holds CMESH_CTL_NAME bytes. */
static const char *peer_name(const char *src, char *out)
{
	size_t i;

	for (i = 0; i < CMESH_CTL_NAME - 1 && src[i]; i++)
		out[i] = src[i] >= ' ' && src[i] <= '~' ? src[i] : '?';
	out[i] = '\0';
	return out;
}

static void fill_hello(struct cmesh_ctl_hello *h, uint64_t arena_size,
		       uint64_t out_fp, uint64_t in_fp, uint32_t ring_cap,
		       uint64_t max_trail)
{
	memset(h, 0, sizeof(*h));
	h->hdr.magic = CMESH_PROTO_MAGIC;
	h->hdr.version = CMESH_PROTO_VERSION;
	h->hdr.type = CMESH_CTL_HELLO;
	h->hdr.len = sizeof(*h);
	if (getrandom(&h->node_id, sizeof(h->node_id), GRND_NONBLOCK) < 0)
		h->node_id = (uint64_t)getpid();
	h->arena_size = arena_size;
	h->out_fp = out_fp;
	h->in_fp = in_fp;
	h->ring_cap = ring_cap;
	h->pid = (uint32_t)getpid();
	h->max_trail = max_trail;
	h->proc_id = cmesh__proc_id();
}

/*
 * Handshake: waits until the socket polls `events` (0), `deadline`
 * passes (-ETIMEDOUT) or `cancel_fd` polls readable (-ECANCELED).
 */
static int wait_sock(int sock, short events, int64_t deadline, int cancel_fd)
{
	struct pollfd p[2] = { { .fd = sock, .events = events },
			       { .fd = cancel_fd, .events = POLLIN } };

	for (;;) {
		int ms = cmesh__park_ms_until(deadline);
		int n;

		if (ms == 0)
			return -ETIMEDOUT;
		n = poll(p, cancel_fd >= 0 ? 2 : 1, ms);
		if (n > 0 && p[1].revents)
			return -ECANCELED;
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/*
 * Our HELLO, on the socket made non-blocking first: a peer that filled
 * its end before handing it over holds us up until `deadline`, no more.
 */
static int send_hello(struct cmesh__link *l, const struct cmesh_ctl_hello *h,
		      const int fds[2], int64_t deadline, int cancel_fd)
{
	int r, fl = fcntl(l->sock, F_GETFL);

	if (fl < 0 || fcntl(l->sock, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	while ((r = cmesh__ctl_send_nb(l->sock, h, sizeof(*h), fds, 2)) ==
	       -EAGAIN) {
		r = wait_sock(l->sock, POLLOUT, deadline, cancel_fd);
		if (r)
			return r;
	}
	return r;
}

static int recv_hello(struct cmesh__link *l, int64_t deadline, int cancel_fd,
		      struct cmesh_ctl_hello *h, int fds[2])
{
	unsigned char buf[sizeof(*h) + 1];
	uint32_t nfds = 0;
	int n;

	/* Never blocking: a peer sharing the description may take it. */
	do {
		n = wait_sock(l->sock, POLLIN, deadline, cancel_fd);
		if (n)
			return n;
		n = cmesh__ctl_recv_nb(l->sock, buf, sizeof(buf), fds, 2,
				       &nfds);
	} while (n == -EAGAIN);
	if (n < 0)
		return n == -EPIPE ? -ECONNRESET : n;
	memcpy(h, buf, sizeof(*h) < (size_t)n ? sizeof(*h) : (size_t)n);
	if (n >= (int)sizeof(h->hdr) && h->hdr.magic == CMESH_PROTO_MAGIC &&
	    h->hdr.version != CMESH_PROTO_VERSION)
		cmesh__log(CMESH__LOG_ERROR,
			   "join: the peer speaks cmesh protocol %u, this "
			   "process %u (another cmesh version): -EPROTO",
			   h->hdr.version, CMESH_PROTO_VERSION);
	if (n != (int)sizeof(*h) || nfds != 2 ||
	    h->hdr.magic != CMESH_PROTO_MAGIC ||
	    h->hdr.version != CMESH_PROTO_VERSION ||
	    h->hdr.type != CMESH_CTL_HELLO || h->hdr.len != sizeof(*h) ||
	    !cmesh_shm_ring_cap_ok(h->ring_cap) ||
	    h->arena_size > CMESH_SHM_ARENA_MAX_SIZE ||
	    !cmesh__ctl_is_wake_socket(fds[1])) {
		for (uint32_t i = 0; i < nfds; i++)
			close(fds[i]);
		return -EPROTO;
	}
	return 0;
}

/*
 * Our arena, our halves of both rings and our wake fds, before the HELLO
 * goes out. On success *out_wake is the end of our wake socketpair that
 * the HELLO carries to the peer (the caller closes it once sent).
 */
static int setup_own(struct cmesh__link *l, uint32_t ring_cap, int *out_wake)
{
	unsigned char *base;
	int wake_pair[2], r;

	r = cmesh__arena_create(
		cmesh__arena_size_for(cmesh_shm_ring_area(ring_cap)),
		"cmesh-arena", &l->own);
	if (r)
		return r;
	base = cmesh__arena_base(l->own);
	r = cmesh__shmring_producer_init(
		&l->out.prod, l->own, cmesh__arena_layout(l->own)->data_off,
		cmesh__arena_line_off(l->own, CMESH_PROTO_LINE_TAIL), ring_cap);
	if (r)
		return r;
	r = cmesh__shmring_consumer_init(
		&l->in.cons, l->own,
		cmesh__arena_line_off(l->own, CMESH_PROTO_LINE_HEAD));
	if (r)
		return r;
	/* Zeroed at creation; reaches the peer with the HELLO. */
	l->in.own_wake =
		(struct cmesh_shm_ring_wake *)(base +
					       cmesh__arena_line_off(
						       l->own,
						       CMESH_PROTO_LINE_WAKE));
	/* Zeroed at creation too: the futex our sleeping peer waits on. */
	l->out.own_signal =
		(struct cmesh_shm_ring_signal
			 *)(base + cmesh__arena_line_off(
					   l->own, CMESH_PROTO_LINE_SIGNAL));
	l->in.efd = cmesh__eventfd_new();
	if (l->in.efd < 0)
		return l->in.efd;
	/* [0]: ours alone; [1]: goes to the peer with the HELLO. */
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
		       wake_pair))
		return -errno;
	l->in.wake_sock = wake_pair[0];
	r = cmesh__lane_sleeper_init(&l->in);
	if (r) {
		close(wake_pair[1]);
		return r;
	}
	*out_wake = wake_pair[1];
	return 0;
}

/* The peer's arena and its halves of both rings. Takes fds[]. */
static int setup_peer(struct cmesh__link *l, const struct cmesh_ctl_hello *h,
		      int fds[2])
{
	const unsigned char *base;
	int r;

	r = cmesh__arena_map_peer(fds[0], h->arena_size, &l->peer);
	if (r) {
		close(fds[0]);
		close(fds[1]);
		return r;
	}
	l->out.peer_wake_sock = fds[1];
	base = cmesh__arena_base(l->peer);
	if (!cmesh__arena_ctl_ok(l->peer,
				 cmesh__arena_line_off(l->peer,
						       CMESH_PROTO_LINE_WAKE),
				 sizeof(struct cmesh_shm_ring_wake)))
		return -EPROTO;
	l->out.peer_wake =
		(const struct cmesh_shm_ring_wake
			 *)(base + cmesh__arena_line_off(
					   l->peer, CMESH_PROTO_LINE_WAKE));
	if (!cmesh__arena_ctl_ok(l->peer,
				 cmesh__arena_line_off(l->peer,
						       CMESH_PROTO_LINE_SIGNAL),
				 sizeof(struct cmesh_shm_ring_signal)))
		return -EPROTO;
	l->in.peer_signal =
		(const struct cmesh_shm_ring_signal
			 *)(base + cmesh__arena_line_off(
					   l->peer, CMESH_PROTO_LINE_SIGNAL));
	r = cmesh__shmring_producer_attach(
		&l->out.prod, l->peer,
		cmesh__arena_line_off(l->peer, CMESH_PROTO_LINE_HEAD));
	if (!r)
		r = cmesh__shmring_consumer_attach(
			&l->in.cons, l->peer,
			cmesh__arena_layout(l->peer)->data_off,
			cmesh__arena_line_off(l->peer, CMESH_PROTO_LINE_TAIL),
			h->ring_cap);
	if (r)
		return -EPROTO;
	/*
	 * buf grows as records need it (lane_rx.c): nothing sized by the ring.
	 */
	l->in.buf_limit = cmesh__shmring_record_limit(h->ring_cap);
	/* A record per slot, and the one our receiver took but not yet its
	 * ATTACH (lane_rx.c copies a MSG record out before delivering it). */
	l->in.att_max = h->ring_cap / CMESH_SHM_SLOT_SIZE + 1;
	return 0;
}

int cmesh__link_handshake(struct cmesh__link *l, const cmesh_type *out_type,
			  const cmesh_type *in_type,
			  const struct cmesh__link_opts *o)
{
	struct cmesh_ctl_hello mine, peer = { 0 };
	uint64_t out_fp, in_fp;
	int fds[2], r;

	if (cmesh_type_fingerprint(out_type, &out_fp) ||
	    cmesh_type_fingerprint(in_type, &in_fp) ||
	    sizeof(struct cmesh_rec_msg) + out_type->size >
		    cmesh__shmring_record_limit(o->ring_cap))
		return -EINVAL;
	r = setup_own(l, o->ring_cap, &fds[1]);
	if (r)
		return r;
	fill_hello(&mine, cmesh__arena_layout(l->own)->size, out_fp, in_fp,
		   o->ring_cap, o->max_trail);
	put_name(mine.out_name, out_type);
	put_name(mine.in_name, in_type);
	fds[0] = cmesh__arena_fd(l->own);
	r = send_hello(l, &mine, fds, o->deadline, o->cancel_fd);
	close(fds[1]); /* the peer's now: we never hold its description */
	if (r)
		return r == -EPIPE ? -ECONNRESET : r;
	r = recv_hello(l, o->deadline, o->cancel_fd, &peer, fds);
	if (r)
		return r;
	r = setup_peer(l, &peer, fds);
	if (r)
		return r;
	/* Lane ids: each side its parity (proto.h); equal ids are no peer. */
	if (peer.node_id == mine.node_id)
		return -EPROTO;
	l->peer_proc = peer.proc_id; /* its word: see link_claim.c */
	l->own_proc = mine.proc_id;
	/* An introduced peer: the process the introducer named. */
	if (o->expect_proc && peer.proc_id != o->expect_proc)
		return -EPROTO;
	r = cmesh__lanes_init(l, mine.node_id, peer.node_id);
	if (!r)
		r = cmesh__ctx_init(l, mine.node_id ^ peer.node_id);
	if (r)
		return r;
	/*
	 * cmesh_node_pid(), unless the caller forked the peer or trusts
	 * SO_PEERCRED (pid_known, see link.c): SO_PEERCRED when it names
	 * someone else (for a socketpair: whoever made it), else the peer's
	 * own word.
	 */
	if (!l->pid_known && (l->peer_pid <= 0 || l->peer_pid == getpid()))
		l->peer_pid = (pid_t)peer.pid;
	/* Send no trail the peer would refuse: -EMSGSIZE here instead. */
	if (peer.max_trail < l->out.max_trail)
		l->out.max_trail = peer.max_trail;
	if (peer.out_fp != in_fp || peer.in_fp != out_fp) {
		char a[CMESH_CTL_NAME], b[CMESH_CTL_NAME];

		cmesh__log(CMESH__LOG_ERROR,
			   "join with pid %d: type mismatch (-EBADMSG): we "
			   "send %s (%016llx), it receives %s (%016llx); it "
			   "sends %s (%016llx), we receive %s (%016llx)",
			   (int)l->peer_pid, out_type->name,
			   (unsigned long long)out_fp,
			   peer_name(peer.in_name, a),
			   (unsigned long long)peer.in_fp,
			   peer_name(peer.out_name, b),
			   (unsigned long long)peer.out_fp, in_type->name,
			   (unsigned long long)in_fp);
		return -EBADMSG;
	}
	cmesh__log(CMESH__LOG_INFO,
		   "join with pid %d (node %016llx): sends %s, receives %s, "
		   "rings %u / %u bytes",
		   (int)l->peer_pid, (unsigned long long)peer.node_id,
		   out_type->name, in_type->name, o->ring_cap, peer.ring_cap);
	return 0;
}
