/* SPDX-License-Identifier: MIT */
/*
 * test_node_hostile.c - a peer process that breaks the rules: scribbles
 * over its own arena while we read, sends a HELLO that lies (arena smaller
 * than claimed, unsealed, bad header, wrong fds), malformed control
 * messages or crafted ring records after a correct join, or never answers.
 * Whatever it does, we get valid messages, -EPROTO, -ECONNRESET or
 * -ETIMEDOUT (bounded), never a crash (SIGBUS, SIGSEGV) or a hang, and the
 * fd and mapping counts come back.
 *
 * The hostile child is a fork of this test; it uses cmesh internals
 * (link.h, lane.h, arena.h, ctl.h, shm/) to do what the library never
 * would. Raw HELLOs mimic src/link_hello.c's fill_hello().
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/topo.h"

#include "arena.h"
#include "ctl.h"
#include "endpoint.h"
#include "lane.h"
#include "queue.h"
#include "link.h"
#include "node.h"
#include "proto.h"
#include "ring.h"
#include "shmring.h"
#include "wake.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <time.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <linux/seccomp.h>
#include <linux/filter.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(node_hostile, .init = tu_suite_init, .fini = tu_suite_fini);

struct seqmsg {
	uint32_t sender;
	uint32_t pad;
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(seq_type, struct seqmsg);

struct fdmsg {
	uint64_t tag;
	int fd;
	int fd2;
};
CMESH_TYPE_DEFINE(fd_type, struct fdmsg, CMESH_FIELD_FD(struct fdmsg, fd),
		  CMESH_FIELD_FD(struct fdmsg, fd2));

#define RING 4096u	   /* both sides' rings in these tests */
#define ARENA (3u * 4096u) /* the arena src/link_hello.c makes for RING */

static void node_opts(cmesh_node_opts *o, int64_t timeout_ns)
{
	cmesh_node_opts d = CMESH_NODE_OPTS_INIT;

	*o = d;
	o->ring_size = RING;
	o->timeout_ns = timeout_ns;
}

/* Our side of a join with a forked child over `sock` (asserts). */
static void join_child_link(int sock, const cmesh_type *t, uint32_t ring,
			    cmesh_node **node, cmesh_sender **tx,
			    cmesh_receiver **rx)
{
	cmesh_node_opts o;

	node_opts(&o, TU_MS(5000));
	o.ring_size = ring;
	TU_ASSERT_RC(cmesh_node_join_socket(sock, t, t, &o, node, tx, rx), 0);
}

/* Polls `sock` up to `ms`, then receives one message (fds closed). */
static int recv_within(int sock, unsigned ms)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };
	unsigned char buf[256];
	int fds[CMESH__CTL_MAX_FDS];
	uint32_t nfds = 0;
	int r;

	if (poll(&p, 1, (int)ms) != 1)
		return -ETIMEDOUT;
	r = cmesh__ctl_recv(sock, buf, sizeof(buf), fds, CMESH__CTL_MAX_FDS,
			    &nfds);
	for (uint32_t i = 0; i < nfds; i++)
		close(fds[i]);
	return r;
}

/* Child: reads until the other side closes the socket (bounded). */
static int wait_closed(int sock)
{
	int r;

	do
		r = recv_within(sock, TOPO_WAIT_MS);
	while (r > 0);
	return r == -EPIPE || r == -ECONNRESET ? 0 : 1;
}

/* ==== HELLOs that lie ===================================================== */

enum hello_variant {
	HV_VALID, /* a correct raw HELLO: the join succeeds */
	/* header */
	HV_MAGIC,
	HV_VERSION,
	HV_TYPE,
	HV_LEN_FIELD,
	HV_SHORT,
	HV_LONG,
	HV_ZERO_BYTES,
	/* sizes */
	HV_RING_NOT_POW2,
	HV_RING_TOO_SMALL,
	HV_RING_OVER_DATA,
	HV_ARENA_HUGE,
	HV_ARENA_ZERO,
	/* fds */
	HV_NO_FDS,
	HV_ONE_FD,
	HV_THREE_FDS,
	HV_WAKE_IS_PIPE,
	HV_WAKE_IS_STREAM,  /* a unix socket, but not a datagram one */
	HV_WAKE_IS_EVENTFD, /* what protocol version 3 sent */
	HV_ARENA_IS_PIPE,
	HV_ARENA_O_PATH, /* our real arena, reopened O_PATH */
	HV_ARENA_WRONLY, /* our real arena, reopened write-only */
	HV_FDS_SWAPPED,
	/* the arena memfd itself */
	HV_SMALL_SEALED,   /* smaller than claimed, header claims the size */
	HV_SMALL_UNSEALED, /* same, unsealed */
	HV_SMALL_REAL,	   /* a real smaller arena, a larger claim */
	HV_BIGGER,	   /* larger than claimed */
	HV_UNSEALED,	   /* right size and header, no seals */
	HV_SHRINK_SEAL,	   /* sealed against shrinking only */
	HV_GARBAGE_HDR,	   /* right size, sealed, random header */
	HV_HDR_LIES,	   /* header's own arena_size differs */
	/*
	 * valid, but "sleeping" for good on a wake socket whose queue is
	 * full, with O_NONBLOCK cleared on the description we share
	 */
	HV_BLOCKING_FULL_WAKE,
	/* valid, its header's `va` naming memory of ours (forged_va) */
	HV_VA_FORGED,
	HV_COUNT
};

/* HV_VA_FORGED's address: set by the parent before it forks. */
static uint64_t forged_va;

/* A memfd of `size` bytes holding `content` (clen bytes), with `seals`. */
static int raw_memfd(uint64_t size, const void *content, size_t clen, int seals)
{
	int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, (off_t)size))
		return -1;
	if (clen && pwrite(fd, content, clen, 0) != (ssize_t)clen)
		return -1;
	if (seals && fcntl(fd, F_ADD_SEALS, seals))
		return -1;
	return fd;
}

#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* A valid arena's first `len` bytes (header and zeroes) of `size`. */
static int arena_image(uint64_t size, unsigned char *out, size_t len)
{
	struct cmesh__arena *a;

	if (cmesh__arena_create(size, "hostile", &a))
		return -1;
	memcpy(out, cmesh__arena_base(a), len);
	cmesh__arena_free(a);
	return 0;
}

/*
 * A new open file description of `fd`'s file, with `flags` (O_PATH, a
 * write-only one: what a peer can hand us instead of the fd we expect).
 */
static int reopen(int fd, int flags)
{
	char path[64];

	if (fd < 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, flags | O_CLOEXEC);
}

/*
 * Child: sends the HELLO of `v` over `sock` (src/link_hello.c's fill_hello()
 * with one lie), then reads the parent's HELLO and waits until the parent
 * closes the socket.
 */
static int hello_child(int sock, enum hello_variant v)
{
	static unsigned char img[ARENA * 2];
	struct cmesh_ctl_hello h;
	struct cmesh__arena *a = NULL;
	unsigned char buf[sizeof(h) + 16];
	uint64_t fp;
	size_t len = sizeof(h);
	int fds[3], nfds = 2, p[2], wake[2], other[2], efd;

	TOPO_CHECK_EQ(cmesh_type_fingerprint(&seq_type, &fp), 0);
	TOPO_CHECK_EQ(cmesh__arena_size_for(cmesh_shm_ring_area(RING)), ARENA);
	memset(&h, 0, sizeof(h));
	h.hdr.magic = CMESH_PROTO_MAGIC;
	h.hdr.version = CMESH_PROTO_VERSION;
	h.hdr.type = CMESH_CTL_HELLO;
	h.hdr.len = sizeof(h);
	h.node_id = 0x686f7374696c65;
	h.arena_size = ARENA;
	h.out_fp = fp;
	h.in_fp = fp;
	h.ring_cap = RING;
	h.pid = (uint32_t)getpid();

	TOPO_CHECK_EQ(cmesh__arena_create(ARENA, "hostile", &a), 0);
	fds[0] = cmesh__arena_fd(a);
	TOPO_CHECK_EQ(socketpair(AF_UNIX,
				 SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
				 wake),
		      0);
	fds[1] = wake[1];
	TOPO_CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
	fds[2] = p[0];

	switch (v) {
	case HV_VALID:
		break;
	case HV_MAGIC:
		h.hdr.magic ^= 1;
		break;
	case HV_VERSION:
		h.hdr.version = CMESH_PROTO_VERSION + 1;
		break;
	case HV_TYPE:
		h.hdr.type = CMESH_CTL_ATTACH;
		break;
	case HV_LEN_FIELD:
		h.hdr.len = sizeof(h) + 8;
		break;
	case HV_SHORT:
		len = sizeof(h) - 8;
		break;
	case HV_LONG:
		len = sizeof(h) + 8;
		break;
	case HV_ZERO_BYTES:
		memset(&h, 0, sizeof(h));
		break;
	case HV_RING_NOT_POW2:
		h.ring_cap = RING + 8;
		break;
	case HV_RING_TOO_SMALL:
		h.ring_cap = CMESH_SHM_RING_MIN_CAP / 2;
		break;
	case HV_RING_OVER_DATA:
		h.ring_cap = 1u << 20;
		break;
	case HV_ARENA_HUGE:
		h.arena_size = UINT64_MAX - 4095;
		break;
	case HV_ARENA_ZERO:
		h.arena_size = 0;
		break;
	case HV_NO_FDS:
		nfds = 0;
		break;
	case HV_ONE_FD:
		nfds = 1;
		break;
	case HV_THREE_FDS:
		nfds = 3;
		break;
	case HV_WAKE_IS_PIPE:
		fds[1] = p[0];
		break;
	case HV_WAKE_IS_STREAM:
		TOPO_CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
					 other),
			      0);
		fds[1] = other[1];
		break;
	case HV_WAKE_IS_EVENTFD:
		efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		TOPO_CHECK(efd >= 0);
		fds[1] = efd;
		break;
	case HV_ARENA_O_PATH:
	case HV_ARENA_WRONLY:
		fds[0] = reopen(cmesh__arena_fd(a),
				v == HV_ARENA_O_PATH ? O_PATH : O_WRONLY);
		TOPO_CHECK(fds[0] >= 0);
		break;
	case HV_ARENA_IS_PIPE:
		fds[0] = p[0];
		break;
	case HV_FDS_SWAPPED:
		fds[0] = wake[1];
		fds[1] = cmesh__arena_fd(a);
		break;
	case HV_SMALL_SEALED:
	case HV_SMALL_UNSEALED:
		/* Claims 16 pages, header included; the memfd has 3. */
		TOPO_CHECK_EQ(arena_image(16 * 4096, img, 64), 0);
		h.arena_size = 16 * 4096;
		fds[0] = raw_memfd(ARENA, img, 64,
				   v == HV_SMALL_SEALED ? SEALS : 0);
		TOPO_CHECK(fds[0] >= 0);
		break;
	case HV_SMALL_REAL:
		h.arena_size = 16 * 4096;
		break;
	case HV_BIGGER:
		TOPO_CHECK_EQ(arena_image(ARENA, img, ARENA), 0);
		fds[0] = raw_memfd(2 * ARENA, img, ARENA, SEALS);
		TOPO_CHECK(fds[0] >= 0);
		break;
	case HV_UNSEALED:
	case HV_SHRINK_SEAL:
		TOPO_CHECK_EQ(arena_image(ARENA, img, ARENA), 0);
		fds[0] = raw_memfd(ARENA, img, ARENA,
				   v == HV_UNSEALED ? 0 : F_SEAL_SHRINK);
		TOPO_CHECK(fds[0] >= 0);
		break;
	case HV_GARBAGE_HDR: {
		uint64_t st = 0x9e3779b97f4a7c15ull;

		for (size_t i = 0; i < ARENA; i += 8) {
			uint64_t x = tu_rand(&st);

			memcpy(img + i, &x, 8);
		}
		fds[0] = raw_memfd(ARENA, img, ARENA, SEALS);
		TOPO_CHECK(fds[0] >= 0);
		break;
	}
	case HV_HDR_LIES: {
		struct cmesh_shm_arena_hdr *hd = (void *)img;

		TOPO_CHECK_EQ(arena_image(ARENA, img, ARENA), 0);
		hd->arena_size = 16 * 4096;
		hd->data_len = 15 * 4096;
		fds[0] = raw_memfd(ARENA, img, ARENA, SEALS);
		TOPO_CHECK(fds[0] >= 0);
		break;
	}
	case HV_BLOCKING_FULL_WAKE: {
		struct cmesh_shm_ring_wake *w =
			(void *)((unsigned char *)cmesh__arena_base(a) +
				 cmesh__arena_layout(a)->ctl_off +
				 CMESH_PROTO_LINE_WAKE * CMESH_SHM_LINE);

		atomic_store(&w->sleeping, 1);
		/* Fill our end's queue, then make the shared end blocking. */
		while (send(wake[1], "w", 1, MSG_DONTWAIT) == 1)
			;
		TOPO_CHECK_EQ(errno, EAGAIN);
		TOPO_CHECK_EQ(fcntl(wake[1], F_SETFL, 0), 0);
		break;
	}
	case HV_VA_FORGED:
		/* Ours to write: the mapping was made before the seal. */
		((struct cmesh_shm_arena_hdr *)cmesh__arena_base(a))->va =
			forged_va;
		break;
	case HV_COUNT:
		return 1;
	}
	memset(buf, 0, sizeof(buf));
	memcpy(buf, &h, sizeof(h));
	TOPO_CHECK_EQ(cmesh__ctl_send(sock, buf, len, fds, (uint32_t)nfds), 0);
	return wait_closed(sock);
}

/* The parent's side: joins against hello_child(v), expects `want`. */
static void check_hello(enum hello_variant v, int want)
{
	struct topo_res res;
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2], r;
	pid_t pid;

	topo_baseline(&res);
	topo_sync_pair(sv);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		topo_child_exit(hello_child(sv[1], v));
	}
	close(sv[1]);
	node_opts(&o, TU_MS(5000));
	r = cmesh_node_join_socket(sv[0], &seq_type, &seq_type, &o, &node, &tx,
				   &rx);
	cr_assert_eq(r, want, "variant %d: join returned %d (%s), want %d (%s)",
		     (int)v, r, cmesh_strerror(r), want, cmesh_strerror(want));
	if (r == 0) {
		cmesh_node_free(node);
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
	}
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	topo_assert_baseline(&res);
}

Test(node_hostile, a_raw_hello_like_link_c_sends_is_accepted)
{
	/* The baseline for every lie below: the mimicry itself is right. */
	check_hello(HV_VALID, 0);
}

/*
 * A peer whose arena header names an address where we have memory (known
 * to it: mapped before it forked) is mapped elsewhere: the join works and
 * our memory is untouched (a mapping over it would change its bytes).
 */
Test(node_hostile, an_arena_address_naming_our_memory_maps_it_elsewhere)
{
	const size_t len = 4 * ARENA;
	/* In the placement window's bounds, so only the mapping refuses. */
	unsigned char *ours = tu_map_in_window(len, PROT_READ | PROT_WRITE);

	memset(ours, 0x5a, len);
	forged_va = (uint64_t)(uintptr_t)ours;
	check_hello(HV_VA_FORGED, 0);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(ours[i], 0x5a, "byte %zu of ours changed", i);
	munmap(ours, len);
}

Test(node_hostile, hello_with_a_bad_header_or_length_is_eproto)
{
	for (int v = HV_MAGIC; v <= HV_ZERO_BYTES; v++)
		check_hello((enum hello_variant)v, -EPROTO);
}

Test(node_hostile, hello_with_bad_ring_or_arena_sizes_is_eproto)
{
	for (int v = HV_RING_NOT_POW2; v <= HV_ARENA_ZERO; v++)
		check_hello((enum hello_variant)v, -EPROTO);
}

Test(node_hostile, hello_with_missing_extra_or_wrong_kinds_of_fds_is_eproto)
{
	for (int v = HV_NO_FDS; v <= HV_FDS_SWAPPED; v++)
		check_hello((enum hello_variant)v, -EPROTO);
}

Test(node_hostile, arena_memfd_smaller_than_claimed_is_eproto_without_sigbus)
{
	check_hello(HV_SMALL_SEALED, -EPROTO);
	check_hello(HV_SMALL_UNSEALED, -EPROTO);
	check_hello(HV_SMALL_REAL, -EPROTO);
	check_hello(HV_BIGGER, -EPROTO);
}

Test(node_hostile, arena_memfd_unsealed_or_with_a_bad_header_is_eproto)
{
	check_hello(HV_UNSEALED, -EPROTO);
	check_hello(HV_SHRINK_SEAL, -EPROTO);
	check_hello(HV_GARBAGE_HDR, -EPROTO);
	check_hello(HV_HDR_LIES, -EPROTO);
}

/*
 * A peer that says it sleeps, on a wake socket whose queue is full and
 * whose shared description it made blocking, and never reads: every send
 * still returns at once (the ring fills, the rest spills). Version 3 of
 * the protocol blocked here (a saturated eventfd the peer had made
 * blocking).
 */
Test(node_hostile, peer_with_a_full_blocking_wake_socket_cannot_block_sends)
{
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2], st;
	int64_t t0;
	pid_t pid;

	topo_baseline(&res);
	topo_sync_pair(sv);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		topo_child_exit(hello_child(sv[1], HV_BLOCKING_FULL_WAKE));
	}
	close(sv[1]);
	join_child_link(sv[0], &seq_type, RING, &node, &tx, &rx);
	t0 = tu_now_ns();
	for (uint64_t i = 0; i < 2000; i++) {
		struct seqmsg m = { .seq = i };

		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	cr_assert_lt(tu_now_ns() - t0, TU_MS(2000), "sends took %lld ns",
		     (long long)(tu_now_ns() - t0));
	cmesh_node_free(node);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	kill(pid, SIGKILL);
	st = topo_reap(pid, TOPO_WAIT_MS);
	cr_assert(WIFSIGNALED(st), "child status %#x", st);
	/* Our backlog to it went with the link once it died: see topo.h. */
	topo_assert_baseline_within(&res, 5000);
}

/* ==== silent or vanishing peers during the handshake ====================== */

/*
 * Makes a control pair (sv) and a sync pair (sy) and forks: returns 0 in
 * the child, which keeps sv[1] and sy[1], and the child's pid in the
 * parent, which keeps sv[0] and sy[0].
 */
static pid_t fork_pair(int sv[2], int sy[2])
{
	pid_t pid;

	topo_sync_pair(sv);
	topo_sync_pair(sy);
	pid = topo_fork();
	close(sv[pid == 0 ? 0 : 1]);
	close(sy[pid == 0 ? 0 : 1]);
	return pid;
}

/* Child: holds its end open without a word until the parent says 'x'. */
static int silent_child(int sock, int sync)
{
	int r = topo_wait(sync, TOPO_WAIT_MS);

	close(sock);
	return r == 'x' ? 0 : 1;
}

Test(node_hostile, peer_that_never_answers_times_out_after_timeout_ns)
{
	struct topo_res res;
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2], sy[2];
	int64_t t0, dt;
	pid_t pid;

	topo_baseline(&res);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(silent_child(sv[1], sy[1]));
	node_opts(&o, TU_MS(200));
	t0 = tu_now_ns();
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &seq_type, &seq_type, &o,
					    &node, &tx, &rx),
		     -ETIMEDOUT);
	dt = tu_now_ns() - t0;
	cr_assert_geq(dt, TU_MS(200), "gave up after %lld ns", (long long)dt);
	cr_assert_lt(dt, TU_MS(2000), "took %lld ns", (long long)dt);
	TU_ASSERT_RC(topo_post(sy[0], 'x'), 0);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	close(sy[0]);
	topo_assert_baseline(&res);
}

Test(node_hostile, peer_that_hangs_up_before_its_hello_is_econnreset)
{
	struct topo_res res;
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2];
	pid_t pid;

	topo_baseline(&res);
	topo_sync_pair(sv);
	pid = topo_fork();
	if (pid == 0) {
		close(sv[0]);
		close(sv[1]);
		topo_child_exit(0);
	}
	close(sv[1]);
	node_opts(&o, TU_MS(5000));
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &seq_type, &seq_type, &o,
					    &node, &tx, &rx),
		     -ECONNRESET);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	topo_assert_baseline(&res);
}

/* ==== a correct join, then lies ============================================ */

enum bad_variant {
	/* control messages, raw on the socket */
	BV_ATTACH_WRONG_SEQ,
	BV_ATTACH_NFDS_MISMATCH,
	BV_ATTACH_NO_FDS,
	BV_ATTACH_BAD_MAGIC,
	BV_GARBAGE,
	BV_SECOND_HELLO,
	BV_ONE_BYTE,
	BV_OVERSIZED,
	BV_SPACE_LONG,	  /* a SPACE with bytes past its header */
	BV_SPACE_WITH_FD, /* a SPACE carrying an fd */
	/* INTROs (link_intro.c) */
	BV_INTRO_NO_FD,	      /* no socket with it */
	BV_INTRO_NOT_SOCKET,  /* an eventfd for the socket */
	BV_INTRO_DGRAM,	      /* a datagram socket, not SOCK_SEQPACKET */
	BV_INTRO_PROC_ZERO,   /* naming no process */
	BV_INTRO_PROC_VICTIM, /* naming its receiver */
	BV_INTRO_PROC_SENDER, /* naming its sender */
	BV_INTRO_LONG,	      /* bytes past its end */
	BV_INTRO_RESERVED,    /* a header's reserved word set */
	/* lanes: naming what the peer may not name */
	BV_LANE_UNKNOWN_ID,	 /* a LANE for a lane we never created */
	BV_LANE_PEERS_PARITY,	 /* a LANE naming an id of its own side */
	BV_END_UNKNOWN_ID,	 /* an END for a lane that does not exist */
	BV_END_FIRST_LANE,	 /* an END for the HELLO's lane */
	BV_ATTACH_OUR_OUT_LANE,	 /* an ATTACH for a lane we produce */
	BV_ATTACH_UNKNOWN_LANE,	 /* an ATTACH for no lane at all */
	BV_ATTACH_PORT_OUR_ID,	 /* a port descriptor with an id of ours */
	BV_ATTACH_PORT_BAD_KIND, /* a port descriptor of no kind */
	BV_ATTACH_PORT_BAD_RING, /* a ring capacity no ring has */
	BV_ATTACH_PORTS_NO_FDS,	 /* more port descriptors than fds */
	BV_WAKESOCK_NOT_SOCKET,	 /* a waitset's wake "socket" that is not */
	BV_WAKESOCK_TWICE,	 /* one wake socket id given twice */
	BV_WAKECLOSE_UNKNOWN,	 /* closing a wake socket it never gave */
	BV_CANCEL_ZERO,		 /* cancelling context id 0 */
	BV_CTXDROP_UNKNOWN,	 /* dropping a context we never gave */
	/* records, raw in the ring */
	BV_REC_UNKNOWN_FLAG,
	BV_REC_SHORT,
	BV_REC_LONG,
	BV_REC_FD_MASK_NOT_FD_FIELD,
	BV_REC_ATTACH_SEQ_MISMATCH,
	BV_REC_OOL_SHORT_MEMFD,
	BV_REC_OOL_PIPE,
	BV_REC_OOL_O_PATH, /* a good memfd, reopened O_PATH */
	BV_REC_OOL_WRONLY, /* a good memfd, reopened write-only */
	BV_REC_OOL_OVER_MAX,
	BV_REC_CLOSE_WITH_PAYLOAD,
	BV_REC_UNKNOWN_KIND,
	BV_REC_ATTACH_FLAG_NO_FDS,
	BV_REC_PLAIN_SHORT,
	BV_REC_PORT_MASK_NOT_EP_FIELD, /* ports in a type without endpoints */
	/* the bulk arena (src/lane_bulk.c) */
	BV_REC_BULK_NO_ARENA,	  /* a BULK record before any arena */
	BV_REC_ARENA_UNSEALED,	  /* an arena that may shrink */
	BV_REC_ARENA_TOO_SMALL,	  /* under CMESH_BULK_ARENA_MIN */
	BV_REC_ARENA_NOT_POW2,	  /* not a power of two */
	BV_REC_ARENA_WITH_PORTS,  /* F_ARENA beside ports */
	BV_REC_BULK_OUT_OF_RANGE, /* a good arena, a range past its end */
	BV_REC_BULK_SHORT,	  /* a good arena, a record without range */
	BV_REC_ARENA_TWICE,	  /* a good arena, then a second one */
	/* a record after CLOSE: "closed", and closed again (never read) */
	BV_REC_AFTER_CLOSE,
	/* a LAST record (a kept reply lane's end) on a lane nobody kept */
	BV_REC_LAST_UNKEPT,
	/* a one-port record (REUSE1) naming a field past the type's */
	BV_REC_REUSE1_NO_FIELD,
	/* ... naming an fd field */
	BV_REC_REUSE1_FD_FIELD,
	/* ... shorter than its header and message */
	BV_REC_REUSE1_SHORT,
	/* plain record of a type with fd fields: its fd bytes are not ours */
	BV_REC_PLAIN_FD_NUMBERS,
	/* a record whose ATTACH never comes: may stall, must not hang */
	BV_REC_ATTACH_NEVER_SENT,
	/* MARK records (a moved sender's end in a lane): mark 0, ... */
	BV_REC_MARK_ZERO,
	/* ... cut short, ... */
	BV_REC_MARK_SHORT,
	/* ... its reserved word set */
	BV_REC_MARK_RESERVED,
	/* a good MARK nobody waits for, then a plain record: it is skipped */
	BV_REC_MARK_UNAWAITED,
	/* HINTS records (a forwarded receiver's senders elsewhere): cut
	 * short, ... */
	BV_REC_HINTS_SHORT,
	/* ... an entry naming no process, ... */
	BV_REC_HINTS_NO_NODE,
	/* ... one more entry than the limit, ... */
	BV_REC_HINTS_TOO_MANY,
	/* ... a second one on the lane */
	BV_REC_HINTS_TWICE,
	/* good HINTS naming a process we have no link with, then a plain
	 * record: no claim, it is skipped */
	BV_REC_HINTS_UNLINKED,
	/* REROUTEs (link_claim.c): an fd with it, ... */
	BV_REROUTE_WITH_FD,
	BV_REROUTE_LONG,	   /* ... bytes past its end, ... */
	BV_REROUTE_RESERVED,	   /* ... its header's reserved word set, ... */
	BV_REROUTE_NO_NODE,	   /* ... naming no process, ... */
	BV_REROUTE_NO_TOKEN,	   /* ... no token, ... */
	BV_REROUTE_NO_MARK,	   /* ... no mark, ... */
	BV_REROUTE_NODE_VICTIM,	   /* ... its receiver, ... */
	BV_REROUTE_NODE_SENDER,	   /* ... its sender, ... */
	BV_REROUTE_FIRST_LANE,	   /* ... the HELLO's lane we write, ... */
	BV_REROUTE_LANE_IT_WRITES, /* ... a lane we read */
	/* a good one naming no lane (one that ended, say), then a plain
	 * record: ignored, it is delivered */
	BV_REROUTE_UNKNOWN_LANE,
	BV_COUNT
};

/* A raw ATTACH header for record `seq` of our link's first out lane. */
static struct cmesh_ctl_attach attach_msg(struct cmesh__link *l, uint64_t seq,
					  uint32_t nfds)
{
	struct cmesh_ctl_attach m;

	memset(&m, 0, sizeof(m));
	m.hdr.magic = CMESH_PROTO_MAGIC;
	m.hdr.version = CMESH_PROTO_VERSION;
	m.hdr.type = CMESH_CTL_ATTACH;
	m.hdr.len = sizeof(m);
	m.seq = seq;
	m.lane = cmesh__link_out(l)->id;
	m.nfds = (uint16_t)nfds;
	return m;
}

/* A raw ATTACH of record 2 carrying one port descriptor `d`. */
static int send_port_attach(struct cmesh__link *l, int fd,
			    const struct cmesh_ctl_port *d, uint16_t nfds)
{
	unsigned char buf[sizeof(struct cmesh_ctl_attach) + sizeof(*d)];
	struct cmesh_ctl_attach a = attach_msg(l, 2, nfds);
	int fds[2] = { fd, fd };

	a.nports = 1;
	a.hdr.len = sizeof(buf);
	memcpy(buf, &a, sizeof(a));
	memcpy(buf + sizeof(a), d, sizeof(*d));
	return cmesh__ctl_send(cmesh__link_sock(l), buf, sizeof(buf), fds,
			       nfds);
}

/* A raw LANE or END naming lane `id`. */
static int send_lane_msg(struct cmesh__link *l, uint16_t type, uint32_t id)
{
	struct cmesh_ctl_lane m;
	uint32_t len = type == CMESH_CTL_LANE ? sizeof(struct cmesh_ctl_lane) :
						sizeof(struct cmesh_ctl_end);

	memset(&m, 0, sizeof(m));
	m.hdr.magic = CMESH_PROTO_MAGIC;
	m.hdr.version = CMESH_PROTO_VERSION;
	m.hdr.type = type;
	m.hdr.len = len;
	m.id = id;
	m.flags = type == CMESH_CTL_LANE ? CMESH_LANE_F_DROPPED : 0;
	return cmesh__ctl_send(cmesh__link_sock(l), &m, len, NULL, 0);
}

/* Publishes one raw record in our ring to the parent and wakes it. */
static int push_raw(struct cmesh__link *l, uint32_t kind, const void *buf,
		    uint32_t len)
{
	struct cmesh__lane *ln = cmesh__link_out(l);
	int r;

	pthread_mutex_lock(&ln->lock);
	r = cmesh__shmring_push(&ln->prod, kind, buf, len);
	pthread_mutex_unlock(&ln->lock);
	cmesh__lane_signal_slow(ln, CMESH_SHM_WAKE_FUTEX | CMESH_SHM_WAKE_SOCK);
	return r;
}

/* A MSG record payload: rec_msg header + struct fdmsg (+ extra bytes). */
static uint32_t msg_rec(unsigned char *buf, uint32_t trail_len, uint32_t flags,
			uint64_t fd_mask, uint64_t seq, uint32_t extra)
{
	struct cmesh_rec_msg h = { trail_len, flags, fd_mask, seq, 0 };
	struct fdmsg m = { .tag = 77, .fd = -1, .fd2 = -1 };

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), &m, sizeof(m));
	memset(buf + sizeof(h) + sizeof(m), 'z', extra);
	return (uint32_t)(sizeof(h) + sizeof(m)) + extra;
}

/*
 * A BULK record: struct fdmsg, then `dlen` bytes of its range (off, len:
 * all of struct cmesh_rec_bulk, or less).
 */
static int push_bulk(struct cmesh__link *l, uint64_t off, uint32_t len,
		     uint32_t dlen)
{
	unsigned char buf[64];
	struct fdmsg m = { .tag = 78, .fd = -1, .fd2 = -1 };
	struct cmesh_rec_bulk d = { off, len, 0 };

	memcpy(buf, &m, sizeof(m));
	memcpy(buf + sizeof(m), &d, dlen);
	return push_raw(l, CMESH_REC_BULK, buf, (uint32_t)sizeof(m) + dlen);
}

/*
 * A MSG record (tag 77, no trail) that brings `fd` as the lane's bulk
 * arena (F_ARENA), with `port_mask` claiming ports beside it.
 */
static int push_arena(struct cmesh__link *l, int fd, uint64_t port_mask)
{
	unsigned char buf[128];
	struct cmesh_rec_msg h = { 0, CMESH_REC_F_ATTACH | CMESH_REC_F_ARENA, 0,
				   0, port_mask };
	struct fdmsg m = { .tag = 77, .fd = -1, .fd2 = -1 };
	uint64_t seq;

	TOPO_CHECK(fd >= 0);
	TOPO_CHECK_EQ(cmesh__link_send_attach(cmesh__link_out(l), &fd, 1, NULL,
					      0, &seq),
		      0);
	h.attach_seq = seq;
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), &m, sizeof(m));
	return push_raw(l, CMESH_REC_MSG, buf,
			(uint32_t)(sizeof(h) + sizeof(m)));
}

/* Child, after joining: does the bad thing of variant `v`. */
static int do_bad(struct cmesh__link *l, enum bad_variant v)
{
	int sock = cmesh__link_sock(l);
	unsigned char buf[512];
	struct cmesh_ctl_attach a;
	uint64_t seq, st = 12345;
	uint32_t n;
	int efd = eventfd(1, EFD_CLOEXEC), p[2], fd;

	TOPO_CHECK(efd >= 0);
	/* The library sent ATTACH 1 for the first message. */
	switch (v) {
	case BV_ATTACH_WRONG_SEQ:
		a = attach_msg(l, 99, 1);
		return cmesh__ctl_send(sock, &a, sizeof(a), &efd, 1);
	case BV_ATTACH_NFDS_MISMATCH:
		a = attach_msg(l, 2, 2);
		return cmesh__ctl_send(sock, &a, sizeof(a), &efd, 1);
	case BV_ATTACH_NO_FDS:
		a = attach_msg(l, 2, 0);
		return cmesh__ctl_send(sock, &a, sizeof(a), NULL, 0);
	case BV_ATTACH_BAD_MAGIC:
		a = attach_msg(l, 2, 1);
		a.hdr.magic = 0;
		return cmesh__ctl_send(sock, &a, sizeof(a), &efd, 1);
	case BV_GARBAGE:
		for (size_t i = 0; i < 40; i += 8) {
			uint64_t x = tu_rand(&st);

			memcpy(buf + i, &x, 8);
		}
		return cmesh__ctl_send(sock, buf, 40, NULL, 0);
	case BV_SECOND_HELLO: {
		struct cmesh_ctl_hello h;

		memset(&h, 0, sizeof(h));
		h.hdr.magic = CMESH_PROTO_MAGIC;
		h.hdr.version = CMESH_PROTO_VERSION;
		h.hdr.type = CMESH_CTL_HELLO;
		h.hdr.len = sizeof(h);
		return cmesh__ctl_send(sock, &h, sizeof(h), NULL, 0);
	}
	case BV_ONE_BYTE:
		return cmesh__ctl_send(sock, "x", 1, NULL, 0);
	case BV_OVERSIZED:
		a = attach_msg(l, 2, 1);
		memset(buf, 0, 200);
		memcpy(buf, &a, sizeof(a));
		return cmesh__ctl_send(sock, buf, 200, &efd, 1);
	case BV_SPACE_LONG:
	case BV_SPACE_WITH_FD: {
		struct cmesh_ctl_hdr h = { CMESH_PROTO_MAGIC,
					   CMESH_PROTO_VERSION, CMESH_CTL_SPACE,
					   sizeof(h), 0 };

		memset(buf, 0, 32);
		if (v == BV_SPACE_LONG) {
			h.len = 32;
			memcpy(buf, &h, sizeof(h));
			return cmesh__ctl_send(sock, buf, 32, NULL, 0);
		}
		return cmesh__ctl_send(sock, &h, sizeof(h), &efd, 1);
	}
	case BV_INTRO_NO_FD:
	case BV_INTRO_NOT_SOCKET:
	case BV_INTRO_DGRAM:
	case BV_INTRO_PROC_ZERO:
	case BV_INTRO_PROC_VICTIM:
	case BV_INTRO_PROC_SENDER:
	case BV_INTRO_LONG:
	case BV_INTRO_RESERVED: {
		struct cmesh_ctl_intro in = {
			{ CMESH_PROTO_MAGIC, CMESH_PROTO_VERSION,
			  CMESH_CTL_INTRO, sizeof(in), 0 },
			0x5eed
		};
		int r;

		if (v == BV_INTRO_PROC_ZERO)
			in.proc = 0;
		else if (v == BV_INTRO_PROC_VICTIM)
			in.proc = cmesh__link_peer_proc(l);
		else if (v == BV_INTRO_PROC_SENDER)
			in.proc = cmesh__proc_id();
		else if (v == BV_INTRO_RESERVED)
			in.hdr.reserved = 1;
		if (v == BV_INTRO_NO_FD)
			return cmesh__ctl_send(sock, &in, sizeof(in), NULL, 0);
		if (v == BV_INTRO_NOT_SOCKET)
			return cmesh__ctl_send(sock, &in, sizeof(in), &efd, 1);
		TOPO_CHECK_EQ(socketpair(AF_UNIX,
					 (v == BV_INTRO_DGRAM ?
						  SOCK_DGRAM :
						  SOCK_SEQPACKET) |
						 SOCK_CLOEXEC,
					 0, p),
			      0);
		if (v == BV_INTRO_LONG) {
			in.hdr.len = sizeof(in) + 8;
			memset(buf, 0, sizeof(in) + 8);
			memcpy(buf, &in, sizeof(in));
			r = cmesh__ctl_send(sock, buf, sizeof(in) + 8, &p[0],
					    1);
		} else {
			r = cmesh__ctl_send(sock, &in, sizeof(in), &p[0], 1);
		}
		close(p[0]);
		close(p[1]);
		return r;
	}
	case BV_LANE_UNKNOWN_ID:
		/* An id of the parent's parity that it never gave. */
		return send_lane_msg(l, CMESH_CTL_LANE,
				     cmesh__link_in(l)->id + 1000);
	case BV_LANE_PEERS_PARITY:
		return send_lane_msg(l, CMESH_CTL_LANE,
				     cmesh__link_out(l)->id + 2);
	case BV_END_UNKNOWN_ID:
		return send_lane_msg(l, CMESH_CTL_END,
				     cmesh__link_out(l)->id + 1000);
	case BV_END_FIRST_LANE:
		return send_lane_msg(l, CMESH_CTL_END, cmesh__link_out(l)->id);
	case BV_ATTACH_OUR_OUT_LANE:
		a = attach_msg(l, 1, 1);
		a.lane = cmesh__link_in(l)->id;
		return cmesh__ctl_send(sock, &a, sizeof(a), &efd, 1);
	case BV_ATTACH_UNKNOWN_LANE:
		a = attach_msg(l, 2, 1);
		a.lane = 999;
		return cmesh__ctl_send(sock, &a, sizeof(a), &efd, 1);
	case BV_ATTACH_PORT_OUR_ID:
	case BV_ATTACH_PORT_BAD_KIND:
	case BV_ATTACH_PORT_BAD_RING:
	case BV_ATTACH_PORTS_NO_FDS: {
		struct cmesh_ctl_port d = { .id = cmesh__link_out(l)->id + 2,
					    .kind = CMESH_PORT_WRITE,
					    .ring_cap = 4096,
					    .arena_size = 8192 };

		if (v == BV_ATTACH_PORT_OUR_ID)
			d.id = cmesh__link_in(l)->id + 2;
		if (v == BV_ATTACH_PORT_BAD_KIND)
			d.kind = 7;
		if (v == BV_ATTACH_PORT_BAD_RING)
			d.ring_cap = 5000;
		if (v == BV_ATTACH_PORTS_NO_FDS) {
			/* nports 1 and no fd at all: nfds 0 < nports. */
			unsigned char b[sizeof(a) + sizeof(d)];

			a = attach_msg(l, 2, 0);
			a.nports = 1;
			a.hdr.len = sizeof(b);
			memcpy(b, &a, sizeof(a));
			memcpy(b + sizeof(a), &d, sizeof(d));
			return cmesh__ctl_send(sock, b, sizeof(b), NULL, 0);
		}
		return send_port_attach(l, efd, &d, 1);
	}
	case BV_CANCEL_ZERO:
	case BV_CTXDROP_UNKNOWN: {
		struct cmesh_ctl_end c;

		memset(&c, 0, sizeof(c));
		c.hdr.magic = CMESH_PROTO_MAGIC;
		c.hdr.version = CMESH_PROTO_VERSION;
		c.hdr.type = v == BV_CTXDROP_UNKNOWN ? CMESH_CTL_CTXDROP :
						       CMESH_CTL_CANCEL;
		c.hdr.len = sizeof(c);
		c.id = v == BV_CANCEL_ZERO ? 0 : 7;
		return cmesh__ctl_send(sock, &c, sizeof(c), NULL, 0);
	}
	case BV_WAKESOCK_NOT_SOCKET:
	case BV_WAKESOCK_TWICE:
	case BV_WAKECLOSE_UNKNOWN: {
		struct cmesh_ctl_end w;
		int pair[2];

		memset(&w, 0, sizeof(w));
		w.hdr.magic = CMESH_PROTO_MAGIC;
		w.hdr.version = CMESH_PROTO_VERSION;
		w.hdr.type = v == BV_WAKECLOSE_UNKNOWN ? CMESH_CTL_WAKECLOSE :
							 CMESH_CTL_WAKESOCK;
		w.hdr.len = sizeof(w);
		w.id = 5;
		if (v == BV_WAKECLOSE_UNKNOWN)
			return cmesh__ctl_send(sock, &w, sizeof(w), NULL, 0);
		if (v == BV_WAKESOCK_NOT_SOCKET)
			return cmesh__ctl_send(sock, &w, sizeof(w), &efd, 1);
		TOPO_CHECK_EQ(cmesh__ctl_wake_pair(pair), 0);
		TOPO_CHECK_EQ(cmesh__ctl_send(sock, &w, sizeof(w), &pair[1], 1),
			      0);
		return cmesh__ctl_send(sock, &w, sizeof(w), &pair[1], 1);
	}
	case BV_REC_PORT_MASK_NOT_EP_FIELD: {
		struct cmesh_ctl_port d = { .id = cmesh__link_out(l)->id + 2,
					    .kind = CMESH_PORT_WRITE,
					    .ring_cap = 4096,
					    .arena_size = 8192 };
		struct cmesh_rec_msg h = { 0, CMESH_REC_F_ATTACH, 0, 2, 1 };
		struct fdmsg fm = { .tag = 77, .fd = -1, .fd2 = -1 };

		TOPO_CHECK_EQ(send_port_attach(l, efd, &d, 1), 0);
		memcpy(buf, &h, sizeof(h));
		memcpy(buf + sizeof(h), &fm, sizeof(fm));
		return push_raw(l, CMESH_REC_MSG, buf,
				(uint32_t)(sizeof(h) + sizeof(fm)));
	}
	case BV_REC_UNKNOWN_FLAG:
		n = msg_rec(buf, 0, 4, 0, 0, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_SHORT:
		n = msg_rec(buf, 0, 0, 0, 0, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n - 4);
	case BV_REC_LONG:
		n = msg_rec(buf, 3, 0, 0, 0, 8);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_FD_MASK_NOT_FD_FIELD:
		a = attach_msg(l, 2, 1);
		TOPO_CHECK_EQ(cmesh__ctl_send(sock, &a, sizeof(a), &efd, 1), 0);
		n = msg_rec(buf, 0, CMESH_REC_F_ATTACH, 1u << 5, 2, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_ATTACH_SEQ_MISMATCH:
		a = attach_msg(l, 2, 1);
		TOPO_CHECK_EQ(cmesh__ctl_send(sock, &a, sizeof(a), &efd, 1), 0);
		n = msg_rec(buf, 0, CMESH_REC_F_ATTACH, 1, 3, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_OOL_SHORT_MEMFD:
	case BV_REC_OOL_PIPE:
	case BV_REC_OOL_O_PATH:
	case BV_REC_OOL_WRONLY:
		if (v == BV_REC_OOL_PIPE) {
			TOPO_CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
			fd = p[0];
		} else if (v == BV_REC_OOL_SHORT_MEMFD) {
			fd = raw_memfd(100, "short", 5, SEALS | F_SEAL_WRITE);
			TOPO_CHECK(fd >= 0);
		} else {
			fd = reopen(raw_memfd(8000, NULL, 0,
					      SEALS | F_SEAL_WRITE),
				    v == BV_REC_OOL_O_PATH ? O_PATH : O_WRONLY);
			TOPO_CHECK(fd >= 0);
		}
		TOPO_CHECK_EQ(cmesh__link_send_attach(cmesh__link_out(l), &fd,
						      1, NULL, 0, &seq),
			      0);
		n = msg_rec(buf, 5000, CMESH_REC_F_ATTACH | CMESH_REC_F_OOL, 0,
			    seq, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_OOL_OVER_MAX:
		fd = raw_memfd(4096, NULL, 0, SEALS);
		TOPO_CHECK(fd >= 0);
		TOPO_CHECK_EQ(cmesh__link_send_attach(cmesh__link_out(l), &fd,
						      1, NULL, 0, &seq),
			      0);
		n = msg_rec(buf, UINT32_MAX,
			    CMESH_REC_F_ATTACH | CMESH_REC_F_OOL, 0, seq, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_BULK_NO_ARENA:
		return push_bulk(l, 0, 10, sizeof(struct cmesh_rec_bulk));
	case BV_REC_ARENA_UNSEALED:
		return push_arena(
			l, raw_memfd(CMESH_BULK_ARENA_MIN, NULL, 0, 0), 0);
	case BV_REC_ARENA_TOO_SMALL:
		return push_arena(l, raw_memfd(4096, NULL, 0, SEALS), 0);
	case BV_REC_ARENA_NOT_POW2:
		return push_arena(l,
				  raw_memfd(CMESH_BULK_ARENA_MIN + 4096, NULL,
					    0, SEALS),
				  0);
	case BV_REC_ARENA_WITH_PORTS:
		return push_arena(
			l, raw_memfd(CMESH_BULK_ARENA_MIN, NULL, 0, SEALS), 1);
	case BV_REC_BULK_OUT_OF_RANGE:
	case BV_REC_BULK_SHORT:
	case BV_REC_ARENA_TWICE:
		/* A good arena first: the parent takes that message. */
		TOPO_CHECK_EQ(push_arena(l,
					 raw_memfd(CMESH_BULK_ARENA_MIN, NULL,
						   0, SEALS),
					 0),
			      0);
		if (v == BV_REC_ARENA_TWICE)
			return push_arena(l,
					  raw_memfd(CMESH_BULK_ARENA_MIN, NULL,
						    0, SEALS),
					  0);
		if (v == BV_REC_BULK_SHORT)
			return push_bulk(l, 0, 10, 8);
		return push_bulk(l, CMESH_BULK_ARENA_MIN - 10, 11,
				 sizeof(struct cmesh_rec_bulk));
	case BV_REC_CLOSE_WITH_PAYLOAD:
		return push_raw(l, CMESH_REC_CLOSE, "abcdefgh", 8);
	case BV_REC_UNKNOWN_KIND:
		n = msg_rec(buf, 0, 0, 0, 0, 0);
		return push_raw(l, 77, buf, n);
	case BV_REC_AFTER_CLOSE:
		TOPO_CHECK_EQ(push_raw(l, CMESH_REC_CLOSE, NULL, 0), 0);
		n = msg_rec(buf, 0, 0, 0, 0, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_ATTACH_FLAG_NO_FDS:
		/* F_ATTACH with no fds at all. */
		n = msg_rec(buf, 0, CMESH_REC_F_ATTACH, 0, 2, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_PLAIN_SHORT:
		/* Fewer bytes than the message struct. */
		return push_raw(l, CMESH_REC_PLAIN, buf,
				(uint32_t)sizeof(struct fdmsg) - 1);
	case BV_REC_LAST_UNKEPT: {
		struct fdmsg m = { .tag = 4, .fd = -1, .fd2 = -1 };

		return push_raw(l, CMESH_REC_LAST, &m, sizeof(m));
	}
	case BV_REC_REUSE1_NO_FIELD:
	case BV_REC_REUSE1_FD_FIELD:
	case BV_REC_REUSE1_SHORT: {
		struct fdmsg m = { .tag = 5, .fd = -1, .fd2 = -1 };
		struct cmesh_rec_reuse1 h1 = {
			7, 4096, v == BV_REC_REUSE1_NO_FIELD ? 99u : 1u
		};

		memcpy(buf, &h1, sizeof(h1));
		memcpy(buf + sizeof(h1), &m, sizeof(m));
		return push_raw(l, CMESH_REC_REUSE1, buf,
				(uint32_t)(sizeof(h1) + sizeof(m)) -
					(v == BV_REC_REUSE1_SHORT ? 1u : 0u));
	}
	case BV_REC_PLAIN_FD_NUMBERS: {
		struct fdmsg m = { .tag = 3, .fd = 0, .fd2 = 1 };

		return push_raw(l, CMESH_REC_PLAIN, &m, sizeof(m));
	}
	case BV_REC_ATTACH_NEVER_SENT:
		n = msg_rec(buf, 0, CMESH_REC_F_ATTACH, 1, 2, 0);
		return push_raw(l, CMESH_REC_MSG, buf, n);
	case BV_REC_MARK_ZERO:
	case BV_REC_MARK_SHORT:
	case BV_REC_MARK_RESERVED:
	case BV_REC_MARK_UNAWAITED: {
		struct cmesh_rec_mark k = { v == BV_REC_MARK_ZERO ? 0 : 7,
					    v == BV_REC_MARK_RESERVED };
		struct fdmsg m = { .tag = 3, .fd = -1, .fd2 = -1 };

		TOPO_CHECK_EQ(push_raw(l, CMESH_REC_MARK, &k,
				       v == BV_REC_MARK_SHORT ? 4 : sizeof(k)),
			      0);
		return push_raw(l, CMESH_REC_PLAIN, &m, sizeof(m));
	}
	case BV_REC_HINTS_SHORT:
	case BV_REC_HINTS_NO_NODE:
	case BV_REC_HINTS_TOO_MANY:
	case BV_REC_HINTS_TWICE:
	case BV_REC_HINTS_UNLINKED: {
		struct cmesh_rec_hint h[CMESH_REC_HINTS_MAX + 1];
		struct fdmsg m = { .tag = 3, .fd = -1, .fd2 = -1 };
		uint32_t nh = v == BV_REC_HINTS_TOO_MANY ?
				      CMESH_REC_HINTS_MAX + 1 :
				      2;

		for (uint32_t i = 0; i < nh; i++)
			h[i] = (struct cmesh_rec_hint){
				.node = v == BV_REC_HINTS_NO_NODE && i ?
						0 :
						0x5eed + i,
				.token = { 1, 2 + i },
				.mark = 1 + i,
			};
		TOPO_CHECK_EQ(push_raw(l, CMESH_REC_HINTS, h,
				       v == BV_REC_HINTS_SHORT ?
					       sizeof(h[0]) + 8 :
					       nh * sizeof(h[0])),
			      0);
		if (v == BV_REC_HINTS_TWICE)
			TOPO_CHECK_EQ(push_raw(l, CMESH_REC_HINTS, h,
					       sizeof(h[0])),
				      0);
		return push_raw(l, CMESH_REC_PLAIN, &m, sizeof(m));
	}
	case BV_REROUTE_WITH_FD:
	case BV_REROUTE_LONG:
	case BV_REROUTE_RESERVED:
	case BV_REROUTE_NO_NODE:
	case BV_REROUTE_NO_TOKEN:
	case BV_REROUTE_NO_MARK:
	case BV_REROUTE_NODE_VICTIM:
	case BV_REROUTE_NODE_SENDER:
	case BV_REROUTE_FIRST_LANE:
	case BV_REROUTE_LANE_IT_WRITES:
	case BV_REROUTE_UNKNOWN_LANE: {
		struct cmesh_ctl_reroute rr = {
			{ CMESH_PROTO_MAGIC, CMESH_PROTO_VERSION,
			  CMESH_CTL_REROUTE, sizeof(rr), 0 },
			cmesh__link_in(l)->id + 1000,
			7,
			0x5eed,
			{ 1, 2 }
		};
		struct fdmsg m = { .tag = 3, .fd = -1, .fd2 = -1 };
		int r;

		if (v == BV_REROUTE_RESERVED)
			rr.hdr.reserved = 1;
		else if (v == BV_REROUTE_NO_NODE)
			rr.node = 0;
		else if (v == BV_REROUTE_NO_TOKEN)
			rr.token[0] = rr.token[1] = 0;
		else if (v == BV_REROUTE_NO_MARK)
			rr.mark = 0;
		else if (v == BV_REROUTE_NODE_VICTIM)
			rr.node = cmesh__link_peer_proc(l);
		else if (v == BV_REROUTE_NODE_SENDER)
			rr.node = cmesh__proc_id();
		else if (v == BV_REROUTE_FIRST_LANE)
			rr.id = cmesh__link_in(l)->id;
		else if (v == BV_REROUTE_LANE_IT_WRITES)
			rr.id = cmesh__link_out(l)->id;
		if (v == BV_REROUTE_WITH_FD) {
			r = cmesh__ctl_send(sock, &rr, sizeof(rr), &efd, 1);
		} else if (v == BV_REROUTE_LONG) {
			rr.hdr.len = sizeof(rr) + 8;
			memset(buf, 0, sizeof(rr) + 8);
			memcpy(buf, &rr, sizeof(rr));
			r = cmesh__ctl_send(sock, buf, sizeof(rr) + 8, NULL, 0);
		} else {
			r = cmesh__ctl_send(sock, &rr, sizeof(rr), NULL, 0);
		}
		if (r || v != BV_REROUTE_UNKNOWN_LANE)
			return r;
		return push_raw(l, CMESH_REC_PLAIN, &m, sizeof(m));
	}
	case BV_COUNT:
		break;
	}
	return 1;
}

/*
 * Child: joins, sends one correct message with an fd, waits for 'g', does
 * the bad thing, says 'd', then expects its own receiver to fail (the
 * parent tears the link down and shuts the socket).
 */
static int bad_child(int sock, int sync, enum bad_variant v)
{
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m = { .tag = 1, .fd2 = -1 };
	int r;

	node_opts(&o, TU_MS(5000));
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &fd_type, &fd_type, &o,
					     &node, &tx, &rx),
		      0);
	m.fd = eventfd(5, EFD_CLOEXEC);
	TOPO_CHECK(m.fd >= 0);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'g');
	TOPO_CHECK_EQ(do_bad(cmesh__node_link(node), v), 0);
	TOPO_CHECK_EQ(topo_post(sync, 'd'), 0);
	r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL, 0);
	/* Past our CLOSE the parent reads nothing, and still sends to us. */
	if (v == BV_REC_AFTER_CLOSE) {
		TOPO_CHECK_EQ(r, 0);
		TOPO_CHECK_EQ(m.tag, 2);
		r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0);
		return r == -EPIPE || r == -ECONNRESET ? 0 : 1;
	}
	/* Where the parent may wait instead of failing, it closes. */
	if (r != -ECONNRESET && r != -EPROTO &&
	    !((v == BV_REC_ATTACH_NEVER_SENT || v == BV_REC_PLAIN_FD_NUMBERS ||
	       v == BV_REC_MARK_UNAWAITED || v == BV_REC_HINTS_UNLINKED ||
	       v == BV_REROUTE_UNKNOWN_LANE) &&
	      r == -EPIPE)) {
		topo_fail(__FILE__, __LINE__, "the parent's teardown", r,
			  -ECONNRESET);
		return 1;
	}
	return 0;
}

static void check_bad(enum bad_variant v)
{
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	static unsigned char trail[8192];
	struct fdmsg m;
	uint64_t val;
	int sv[2], sy[2], r;
	pid_t pid;

	topo_baseline(&res);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(bad_child(sv[1], sy[1], v));
	join_child_link(sv[0], &fd_type, RING, &node, &tx, &rx);
	cmesh_node_free(node);
	/* The correct message first. */
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     0);
	cr_assert(m.tag == 1 && m.fd >= 0 && m.fd2 == -1);
	cr_assert_eq(read(m.fd, &val, sizeof(val)), (ssize_t)sizeof(val));
	cr_assert_eq(val, 5);
	close(m.fd);
	TU_ASSERT_RC(topo_post(sy[0], 'g'), 0);
	TU_ASSERT_RC(topo_wait(sy[0], TOPO_WAIT_MS), 'd');
	if (v == BV_REC_AFTER_CLOSE) {
		/* What follows the end is never read: closed, not -EPROTO. */
		for (int k = 0; k < 3; k++)
			TU_ASSERT_RC(cmesh_receiver_recv_deadline(
					     rx, topo_deadline(), &m, NULL, 0),
				     -EPIPE);
		TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EPIPE);
	}
	if (v == BV_REC_BULK_OUT_OF_RANGE || v == BV_REC_BULK_SHORT ||
	    v == BV_REC_ARENA_TWICE) {
		/* The good arena's message; then the bad record. */
		TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							  &m, trail,
							  sizeof(trail)),
			     0);
		cr_assert(m.tag == 77 && m.fd == -1 && m.fd2 == -1);
	}
	if (v == BV_REC_PLAIN_FD_NUMBERS || v == BV_REC_MARK_UNAWAITED ||
	    v == BV_REC_HINTS_UNLINKED || v == BV_REROUTE_UNKNOWN_LANE) {
		r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, trail,
						 sizeof(trail));
		cr_assert_eq(r, 0, "plain record: %d (%s)", r,
			     cmesh_strerror(r));
		cr_assert(m.tag == 3 && m.fd == -1 && m.fd2 == -1,
			  "plain record: tag %llu fds %d %d, want 3 -1 -1",
			  (unsigned long long)m.tag, m.fd, m.fd2);
	} else if (v == BV_REC_AFTER_CLOSE) {
		/* The link is not failed: our send goes (the child sees it). */
		m = (struct fdmsg){ .tag = 2, .fd = -1, .fd2 = -1 };
		r = cmesh_sender_send(tx, &m, NULL, 0);
		cr_assert_eq(r, 0, "a send after a peer's close: %d (%s)", r,
			     cmesh_strerror(r));
	} else if (v == BV_REC_ATTACH_NEVER_SENT) {
		/* Waiting is allowed, hanging past the deadline is not. */
		int64_t t0 = tu_now_ns();

		r = cmesh_receiver_recv_deadline(
			rx, cmesh_deadline_after(TU_MS(300)), &m, trail,
			sizeof(trail));
		cr_assert(r == -ETIMEDOUT || r == -EPROTO,
			  "variant %d: recv %d (%s)", (int)v, r,
			  cmesh_strerror(r));
		cr_assert_lt(tu_now_ns() - t0, TU_MS(2000));
		/* Freeing everything ends the link; the child sees it. */
	} else {
		r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, trail,
						 sizeof(trail));
		cr_assert_eq(r, -EPROTO, "variant %d: recv %d (%s)", (int)v, r,
			     cmesh_strerror(r));
		r = cmesh_receiver_try_recv(rx, &m, trail, sizeof(trail));
		cr_assert_eq(r, -EPROTO, "variant %d: then try_recv %d (%s)",
			     (int)v, r, cmesh_strerror(r));
		m = (struct fdmsg){ .tag = 2, .fd = -1, .fd2 = -1 };
		r = cmesh_sender_send(tx, &m, NULL, 0);
		cr_assert_eq(r, -EPROTO, "variant %d: then send %d (%s)",
			     (int)v, r, cmesh_strerror(r));
	}
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	close(sy[0]);
	topo_assert_baseline(&res);
}

Test(node_hostile, malformed_control_messages_after_join_fail_with_eproto)
{
	for (int v = BV_ATTACH_WRONG_SEQ; v <= BV_INTRO_RESERVED; v++)
		check_bad((enum bad_variant)v);
}

Test(node_hostile, naming_lanes_or_ports_it_may_not_fails_with_eproto)
{
	for (int v = BV_LANE_UNKNOWN_ID; v <= BV_CTXDROP_UNKNOWN; v++)
		check_bad((enum bad_variant)v);
}

Test(node_hostile, malformed_ring_records_fail_with_eproto)
{
	for (int v = BV_REC_UNKNOWN_FLAG; v <= BV_REC_PORT_MASK_NOT_EP_FIELD;
	     v++)
		check_bad((enum bad_variant)v);
}

/*
 * A bulk arena that is not one (unsealed, a bad size, beside ports, a
 * second one), and BULK records with no arena, a range past its end, or
 * no range: each fails the link with -EPROTO, and nothing of it leaks
 * (check_bad() compares fds and mappings with its baseline).
 */
Test(node_hostile, bad_bulk_arenas_and_records_fail_with_eproto)
{
	for (int v = BV_REC_BULK_NO_ARENA; v <= BV_REC_ARENA_TWICE; v++)
		check_bad((enum bad_variant)v);
}

/*
 * A record past a lane's CLOSE is never read (an honest producer may write
 * one: a split's FAIL goes at once while its local senders still send):
 * the receiver stays closed, the link is not failed.
 */
Test(node_hostile, a_record_after_close_is_never_read)
{
	check_bad(BV_REC_AFTER_CLOSE);
}

/*
 * MARK records: one that is not one (mark 0, short, its reserved word set)
 * fails the link with -EPROTO; a good one that no claim waits for is
 * skipped, and the record after it arrives.
 */
Test(node_hostile, mark_records_are_checked_and_one_nobody_waits_for_is_skipped)
{
	for (int v = BV_REC_MARK_ZERO; v <= BV_REC_MARK_UNAWAITED; v++)
		check_bad((enum bad_variant)v);
}

/*
 * HINTS records (shm/proto.h): cut short, an entry without a process, more
 * entries than the limit, or a second one on a lane: -EPROTO. Good ones
 * naming a process we are not linked with claim nothing, and what follows
 * is delivered.
 */
Test(node_hostile, hints_records_are_checked_and_unlinked_ones_claim_nothing)
{
	for (int v = BV_REC_HINTS_SHORT; v <= BV_REC_HINTS_UNLINKED; v++)
		check_bad((enum bad_variant)v);
}

/*
 * REROUTE (shm/proto.h): with an fd, bytes past its end, its reserved word
 * set, no process, token or mark, naming either side of the link, or a
 * lane that is no port of ours to write (the HELLO's, one we read):
 * -EPROTO. A good one naming no lane of ours (gone, say) is ignored, and
 * what follows is delivered.
 */
Test(node_hostile, reroutes_are_checked_and_one_naming_no_lane_is_ignored)
{
	for (int v = BV_REROUTE_WITH_FD; v <= BV_REROUTE_UNKNOWN_LANE; v++)
		check_bad((enum bad_variant)v);
}

/* LAST ends a use of a kept reply lane; on the link's first lane: -EPROTO. */
Test(node_hostile, a_last_record_on_a_lane_nobody_kept_fails_with_eproto)
{
	check_bad(BV_REC_LAST_UNKEPT);
}

/*
 * A one-port record (REUSE1) whose field is not one of the type's, not a
 * sender's (an fd field), or that is cut short: -EPROTO.
 */
Test(node_hostile, a_bad_one_port_record_fails_with_eproto)
{
	check_bad(BV_REC_REUSE1_NO_FIELD);
	check_bad(BV_REC_REUSE1_FD_FIELD);
	check_bad(BV_REC_REUSE1_SHORT);
}

Test(node_hostile, plain_record_never_hands_over_fd_numbers_from_its_bytes)
{
	check_bad(BV_REC_PLAIN_FD_NUMBERS);
}

Test(node_hostile, record_naming_an_attachment_never_sent_does_not_hang)
{
	check_bad(BV_REC_ATTACH_NEVER_SENT);
}

/* ==== a peer corrupting its consumer head =================================== */

/*
 * Child: joins, writes an impossible head (past the parent's tail)
 * into its consumer line of the parent's ring, says 'h', then expects the
 * parent to tear the link down.
 */
static int bad_head_child(int sock, int sync)
{
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__arena *a;
	_Atomic uint64_t *head;
	int64_t end;
	int r;

	node_opts(&o, TU_MS(5000));
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &seq_type, &seq_type, &o,
					     &node, &tx, &rx),
		      0);
	a = cmesh__link_own_arena(cmesh__node_link(node));
	head = (_Atomic uint64_t *)((unsigned char *)cmesh__arena_base(a) +
				    cmesh__arena_layout(a)->ctl_off +
				    CMESH_PROTO_LINE_HEAD * CMESH_SHM_LINE);
	atomic_store_explicit(head, 12345, memory_order_release);
	TOPO_CHECK_EQ(topo_post(sync, 'h'), 0);
	/* Reading would move the head: watch the link instead (bounded). */
	end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	while (!(r = cmesh__link_failed(cmesh__node_link(node))) &&
	       tu_now_ns() < end)
		tu_sleep_ms(1);
	if (r != -ECONNRESET && r != -EPROTO) {
		topo_fail(__FILE__, __LINE__, "the parent's teardown", r,
			  -ECONNRESET);
		return 1;
	}
	return 0;
}

Test(node_hostile, corrupt_consumer_head_fails_the_link_not_just_one_send)
{
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m = { 0 };
	int sv[2], sy[2], r = 0;
	uint64_t i;
	pid_t pid;

	topo_baseline(&res);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(bad_head_child(sv[1], sy[1]));
	join_child_link(sv[0], &seq_type, RING, &node, &tx, &rx);
	cmesh_node_free(node);
	TU_ASSERT_RC(topo_wait(sy[0], TOPO_WAIT_MS), 'h');
	/* Fill the ring: the producer then reads the head and rejects it. */
	for (i = 0; i < 100000 && r == 0; i++) {
		m.seq = i;
		r = cmesh_sender_send(tx, &m, NULL, 0);
	}
	cr_assert(r == 0 || r == -EPROTO, "send %llu: %d (%s)",
		  (unsigned long long)i, r, cmesh_strerror(r));
	/* Whichever path noticed it, the link fails as a whole. */
	r = cmesh_receiver_recv_deadline(rx, cmesh_deadline_after(TU_MS(2000)),
					 &m, NULL, 0);
	cr_assert_eq(
		r, -EPROTO,
		"receiver on a link whose peer corrupted its head: %d (%s)", r,
		cmesh_strerror(r));
	TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -EPROTO);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	close(sy[0]);
	topo_assert_baseline(&res);
}

/* ==== a peer scribbling over its own arena while we read =================== */

enum scribble_region {
	SR_HEADER = 1,
	SR_SLOT0 = 2,	  /* the first slot of the ring we read */
	SR_HEAD_WAKE = 4, /* its consumer and wake lines */
	SR_CTL = 8,	  /* the whole control region */
	SR_DATA = 16,	  /* the record area we read */
};

#define WIPE_MSGS 20u

struct span {
	uint64_t off, len;
};

/* The parts of `a` named by `regions`; returns how many. */
static unsigned arena_spans(struct cmesh__arena *a, unsigned regions,
			    struct span *out)
{
	const struct cmesh__arena_layout *lay = cmesh__arena_layout(a);
	unsigned n = 0;

	if (regions & SR_HEADER)
		out[n++] = (struct span){ 0, 64 };
	if (regions & SR_SLOT0)
		out[n++] = (struct span){ lay->data_off, CMESH_SHM_SLOT_SIZE };
	if (regions & SR_HEAD_WAKE)
		out[n++] = (struct span){ lay->ctl_off + CMESH_PROTO_LINE_HEAD *
								 CMESH_SHM_LINE,
					  2 * CMESH_SHM_LINE };
	if (regions & SR_CTL)
		out[n++] = (struct span){ lay->ctl_off, lay->ctl_len };
	if (regions & SR_DATA)
		out[n++] = (struct span){ lay->data_off, lay->data_len };
	return n;
}

/*
 * Child: joins, then
 *   wipe: sends WIPE_MSGS messages, overwrites all of `regions` with
 *         random bytes, says 's' and waits to be killed;
 *   fuzz: forever sends a message and overwrites 1..16 random bytes
 *         somewhere in `regions`.
 * It never reads. The parent kills it.
 */
static int scribble_child(int sock, int sync, unsigned regions, uint64_t seed,
			  bool wipe)
{
	static unsigned char trail[200];
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__arena *a;
	unsigned char *base;
	uint64_t st = seed | 1;
	struct span spans[5];
	unsigned nspans;

	node_opts(&o, TU_MS(5000));
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &seq_type, &seq_type, &o,
					     &node, &tx, &rx),
		      0);
	/* The parent validates our header while it joins: wait for it. */
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'j');
	a = cmesh__link_own_arena(cmesh__node_link(node));
	base = cmesh__arena_base(a);
	nspans = arena_spans(a, regions, spans);
	TOPO_CHECK(nspans > 0);
	tu_fill(trail, sizeof(trail), 3);
	if (wipe) {
		for (uint64_t i = 0; i < WIPE_MSGS; i++) {
			struct seqmsg m = { .sender = 5, .seq = i };

			TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, trail, i * 9),
				      0);
		}
		for (unsigned s = 0; s < nspans; s++)
			for (uint64_t k = 0; k < spans[s].len; k++)
				base[spans[s].off + k] =
					(unsigned char)tu_rand(&st);
		TOPO_CHECK_EQ(topo_post(sync, 's'), 0);
		topo_wait(sync, TOPO_WAIT_MS);
		return 0;
	}
	for (uint64_t i = 0;; i++) {
		struct seqmsg m = { .sender = 5, .seq = i };
		uint64_t x = tu_rand(&st);
		unsigned s = (unsigned)(x % nspans);
		uint64_t len = 1 + (x >> 8) % 16;
		uint64_t off;

		cmesh_sender_send(tx, &m, trail, i % 201);
		if (spans[s].len < len)
			len = spans[s].len;
		off = spans[s].off + (x >> 16) % (spans[s].len - len + 1);
		for (uint64_t k = 0; k < len; k++)
			base[off + k] = (unsigned char)tu_rand(&st);
	}
}

/*
 * What a scribbling peer may look like to us: valid messages (structure:
 * the contents are the peer's business), then -EPROTO or -ECONNRESET for
 * good. Sends may also see -EPIPE (the peer's "closed" flag is among the
 * bytes it scribbles), or -ENOBUFS (it reads nothing: our backlog fills). Returns the error that ended it, or 0 if reads ran
 * dry (`idle_ms` without a message) or `budget_ms` passed.
 */
static int read_scribbler(cmesh_sender *tx, cmesh_receiver *rx,
			  unsigned budget_ms, unsigned idle_ms)
{
	static unsigned char trail[4096];
	int64_t end = tu_now_ns() + TU_MS(budget_ms);
	uint64_t received = 0;
	int r = 0;

	while (tu_now_ns() < end) {
		struct seqmsg m = { .sender = 1, .seq = received };
		int s = cmesh_sender_send(tx, &m, NULL, 0);
		int64_t t0 = tu_now_ns();

		/* -ENOBUFS: it reads nothing, our backlog is full. */
		cr_assert(s == 0 || s == -EPROTO || s == -ECONNRESET ||
				  s == -EPIPE || s == -ENOBUFS,
			  "send: %d (%s)", s, cmesh_strerror(s));
		r = cmesh_receiver_recv_deadline(
			rx, cmesh_deadline_after(TU_MS(idle_ms)), &m, trail,
			sizeof(trail));
		if (r >= 0) {
			cr_assert_leq(r, (int)sizeof(trail));
			received++;
			continue;
		}
		if (r == -ETIMEDOUT) {
			cr_assert_lt(tu_now_ns() - t0, TU_MS(idle_ms + 2000),
				     "recv overran its deadline");
			return 0;
		}
		cr_assert(r == -EPROTO || r == -ECONNRESET,
			  "after %llu messages: recv %d (%s)",
			  (unsigned long long)received, r, cmesh_strerror(r));
		/* The failure sticks. */
		TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, trail,
						     sizeof(trail)),
			     r);
		return r;
	}
	return 0;
}

static void check_scribbler(unsigned regions, uint64_t seed, bool wipe,
			    bool must_fail)
{
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2], sy[2], r, st;
	pid_t pid;

	topo_baseline(&res);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(
			scribble_child(sv[1], sy[1], regions, seed, wipe));
	join_child_link(sv[0], &seq_type, RING, &node, &tx, &rx);
	cmesh_node_free(node);
	TU_ASSERT_RC(topo_post(sy[0], 'j'), 0);
	if (wipe)
		TU_ASSERT_RC(topo_wait(sy[0], TOPO_WAIT_MS), 's');
	r = read_scribbler(tx, rx, wipe ? 5000 : 500, wipe ? 300 : 5000);
	if (must_fail)
		cr_assert(r == -EPROTO,
			  "regions %#x seed %llu: recv ended with %d (%s), "
			  "want -EPROTO",
			  regions, (unsigned long long)seed, r,
			  cmesh_strerror(r));
	kill(pid, SIGKILL);
	st = topo_reap(pid, TOPO_WAIT_MS);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		  "scribbler status %#x", st);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	close(sy[0]);
	/* What we sent to the scribbler may still be spilled: see topo.h. */
	topo_assert_baseline_within(&res, 5000);
}

Test(node_hostile, peer_wiping_its_arena_header_changes_nothing)
{
	check_scribbler(SR_HEADER, 1, true, false);
}

Test(node_hostile, peer_wiping_the_first_slot_of_its_ring_is_eproto)
{
	for (uint64_t seed = 1; seed <= 3; seed++)
		check_scribbler(SR_SLOT0, seed, true, true);
}

Test(node_hostile, peer_wiping_its_unread_records_is_eproto)
{
	for (uint64_t seed = 1; seed <= 3; seed++)
		check_scribbler(SR_DATA, seed, true, true);
}

Test(node_hostile, peer_wiping_its_whole_arena_is_eproto)
{
	check_scribbler(SR_HEADER | SR_CTL | SR_DATA, 7, true, true);
}

Test(node_hostile, peer_wiping_its_head_and_wake_lines_is_survived)
{
	check_scribbler(SR_HEAD_WAKE, 1, true, false);
}

Test(node_hostile, peer_scribbling_while_sending_gives_only_valid_or_errors)
{
	static const unsigned regions[] = { SR_HEADER, SR_SLOT0, SR_HEAD_WAKE,
					    SR_DATA,
					    SR_HEADER | SR_CTL | SR_DATA };

	for (size_t i = 0; i < sizeof(regions) / sizeof(regions[0]); i++)
		check_scribbler(regions[i], 100 + i, false, false);
}

/* ==== a peer that attacks the wake objects it shares with us ============= */

/* Healthy peer: echoes every message (seq + 1) until its senders go. */
static int echo_peer(cmesh_sender *tx, cmesh_receiver *rx,
		     const struct topo_side *s)
{
	struct seqmsg m;
	int r;

	(void)s;
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		m.seq++;
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	TOPO_CHECK_EQ(r, -EPIPE);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario echo_sc = {
	.down = &seq_type,
	.up = &seq_type,
	.peer = echo_peer,
};

static bool fd_is(int fd, const char *target)
{
	char path[64], buf[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return false;
	buf[n] = '\0';
	return strncmp(buf, target, strlen(target)) == 0;
}

/*
 * Child: joins, then does to every wake object the link gave it what a
 * hostile peer can do to a file description it shares with us: an eventfd is
 * drained and made blocking (protocol version 3 shared ours: our next
 * read of it would block), a datagram socket is flooded and made
 * blocking. Says 'f', waits for 'g', sends one message, and waits until
 * told to exit.
 */
static int attacker_child(int sock, int sync)
{
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m = { .seq = 42 };
	uint64_t cnt;

	static bool before[1024];

	/* Only what the link brought: fds inherited from the test are ours. */
	for (int fd = 0; fd < 1024; fd++)
		before[fd] = tu_fd_is_open(fd);
	node_opts(&o, TU_MS(5000));
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &seq_type, &seq_type, &o,
					     &node, &tx, &rx),
		      0);
	for (int fd = 3; fd < 1024; fd++) {
		if (before[fd] || !tu_fd_is_open(fd))
			continue;
		if (fd_is(fd, "anon_inode:[eventfd]")) {
			while (read(fd, &cnt, sizeof(cnt)) == sizeof(cnt))
				;
			fcntl(fd, F_SETFL, 0);
		} else if (fd_is(fd, "socket:")) {
			int type = 0;
			socklen_t len = sizeof(type);

			if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) ||
			    type != SOCK_DGRAM)
				continue;
			while (send(fd, "z", 1, MSG_DONTWAIT) == 1)
				;
			fcntl(fd, F_SETFL, 0);
		}
	}
	TOPO_CHECK_EQ(topo_post(sync, 'f'), 0);
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'g');
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	topo_wait(sync, TOPO_WAIT_MS);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	return 0;
}

/*
 * Frees our ends of a link to a hostile child (handles may be NULL) and
 * closes its sync socket, which tells it to exit 0.
 */
static void hostile_end(cmesh_sender *tx, cmesh_receiver *rx, cmesh_node *node,
			int sync, pid_t pid)
{
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	close(sync);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
}

/* Frees our ends of the healthy peer's link; it exits 0. */
static void good_peer_end(struct topo_conn *good)
{
	cmesh_sender_free(good->tx);
	cmesh_receiver_free(good->rx);
	topo_bye(good->sync);
	topo_assert_exit_0(good->pid, TOPO_WAIT_MS);
	close(good->sync);
}

/* A round trip with the healthy peer. */
static void good_round_trip(struct topo_conn *good, uint64_t i)
{
	struct seqmsg m = { .seq = i };

	TU_ASSERT_RC(cmesh_sender_send(good->tx, &m, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(good->rx, topo_deadline(), &m,
						  NULL, 0),
		     0);
	cr_assert_eq(m.seq, i + 1);
}

/*
 * Nothing the peer does to the wake objects it holds stalls us: after it
 * drained and blocked or flooded and blocked every one, waitset polls,
 * timed waits and receives on its channel return on time, its message
 * still wakes the waitset, and a healthy peer's round trips go on
 * throughout. fds, mappings and RSS are back afterwards.
 */
Test(node_hostile, peer_blocking_or_flooding_shared_wake_fds_stalls_nothing)
{
	struct topo_res res;
	struct topo_conn good;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_waitset *ws;
	struct seqmsg m;
	uint64_t key = 0;
	long rss0;
	int sv[2], sy[2];
	int64_t t0;
	pid_t pid;

	topo_baseline(&res);
	rss0 = tu_status_kib("VmRSS");
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(attacker_child(sv[1], sy[1]));
	join_child_link(sv[0], &seq_type, RING, &node, &tx, &rx);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'f');
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, rx, 7), 0);
	t0 = tu_now_ns();
	for (uint64_t i = 0; i < 200; i++) {
		TU_ASSERT_RC(cmesh_waitset_try_wait(ws, &key), -EAGAIN);
		good_round_trip(&good, i);
	}
	TU_ASSERT_RC(cmesh_waitset_wait(ws, cmesh_deadline_after(TU_MS(20)),
					&key),
		     -ETIMEDOUT);
	TU_ASSERT_RC(cmesh_waitset_remove_receiver(ws, rx), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(20)), &m, NULL, 0),
		     -ETIMEDOUT);
	good_round_trip(&good, 1000);
	cr_assert_lt(tu_now_ns() - t0, TU_MS(TU_BUDGET_S * 1000 / 2));
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, rx, 7), 0);
	cr_assert_eq(topo_post(sy[0], 'g'), 0);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, topo_deadline(), &key), 0);
	cr_assert_eq(key, 7);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), 0);
	cr_assert_eq(m.seq, 42);
	good_round_trip(&good, 2000);
	cmesh_waitset_free(ws);
	hostile_end(tx, rx, node, sy[0], pid);
	good_peer_end(&good);
	topo_assert_baseline(&res);
	cr_assert_lt(tu_status_kib("VmRSS") - rss0, 16 * 1024,
		     "VmRSS grew by %ld KiB", tu_status_kib("VmRSS") - rss0);
}

/* ==== a peer that sends fds ahead of its records ========================= */

/* This process's fd table soft limit becomes `n` (restored by the caller). */
static struct rlimit set_nofile(rlim_t n)
{
	struct rlimit old, lim;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	if (n > lim.rlim_max)
		cr_skip("RLIMIT_NOFILE hard limit %llu is below %llu",
			(unsigned long long)lim.rlim_max,
			(unsigned long long)n);
	lim.rlim_cur = n;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
	return old;
}

/*
 * Child: joins with ring `ring`, then sends ATTACHes of `per` fds (an
 * eventfd, repeated) for records it never publishes, without blocking,
 * until `count` went out or the socket stayed full for 200 ms; says 'f'
 * and waits until told to exit.
 */
static int fd_flood_child(int sock, int sync, uint32_t ring, uint32_t per,
			  uint32_t count)
{
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int fds[16], efd = eventfd(0, EFD_CLOEXEC), csock;
	int64_t stuck = 0;

	TOPO_CHECK(efd >= 0 && per <= 16);
	for (uint32_t i = 0; i < per; i++)
		fds[i] = efd;
	node_opts(&o, TU_MS(5000));
	o.ring_size = ring;
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &seq_type, &seq_type, &o,
					     &node, &tx, &rx),
		      0);
	csock = cmesh__link_sock(cmesh__node_link(node));
	for (uint32_t seq = 1; seq <= count;) {
		struct cmesh_ctl_attach a =
			attach_msg(cmesh__node_link(node), seq, per);
		int r = cmesh__ctl_send(csock, &a, sizeof(a), fds, per);

		if (r == -EAGAIN) {
			if (!stuck)
				stuck = tu_now_ns();
			else if (tu_now_ns() - stuck > TU_MS(200))
				break;
			tu_sleep_ms(1);
			continue;
		}
		if (r)
			break; /* the victim failed the link */
		stuck = 0;
		seq++;
	}
	TOPO_CHECK_EQ(topo_post(sync, 'f'), 0);
	topo_wait(sync, TOPO_WAIT_MS);
	return 0;
}

/*
 * More ATTACHes than records its ring can hold (64 slots: at most 65
 * pending) is no honest peer: the link fails with -EPROTO, every fd it
 * sent is closed, and a healthy second peer keeps exchanging.
 */
Test(node_hostile, attaches_beyond_what_the_ring_can_hold_fail_with_eproto)
{
	struct rlimit old = set_nofile(4096); /* budget 512: not the bound */
	struct topo_res res;
	struct topo_conn good;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;
	int sv[2], sy[2];
	pid_t pid;

	topo_baseline(&res);
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(fd_flood_child(sv[1], sy[1], RING, 1, 200));
	join_child_link(sv[0], &seq_type, RING, &node, &tx, &rx);
	for (uint64_t i = 0; i < 50; i++)
		good_round_trip(&good, i);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     -EPROTO);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'f');
	good_round_trip(&good, 100);
	hostile_end(tx, rx, node, sy[0], pid);
	good_peer_end(&good);
	topo_assert_baseline(&res);
	setrlimit(RLIMIT_NOFILE, &old);
}

/* The fd table has room for one more fd; a round trip with the echo peer. */
static void room_and_round_trip(struct topo_conn *good, uint64_t i)
{
	int efd = eventfd(1, EFD_CLOEXEC);

	cr_assert_geq(efd, 0, "eventfd: %s", strerror(errno));
	close(efd);
	good_round_trip(good, i);
}

/*
 * A peer with a large ring sends ATTACHes of 8 fds each as fast as it can
 * and never publishes their records: our link holds at most its budget
 * (an eighth of the fd table: 64 of 512 here, one ATTACH more at most)
 * and then stops reading, so the peer waits; our fd table never fills, a
 * healthy second link keeps working, and everything is closed after.
 */
Test(node_hostile, a_peer_sending_fds_ahead_cannot_fill_our_fd_table)
{
	struct rlimit old = set_nofile(512);
	struct topo_res res;
	struct topo_conn good;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;
	int sv[2], sy[2], peak;
	pid_t pid;

	topo_baseline(&res);
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(
			fd_flood_child(sv[1], sy[1], 1u << 20, 8, 10000));
	join_child_link(sv[0], &seq_type, RING, &node, &tx, &rx);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'f');
	peak = tu_fd_count();
	cr_assert_lt(peak, res.fds + 64 + 8 + 32, "%d fds open, %d before",
		     peak, res.fds);
	for (uint64_t i = 0; i < 50; i++)
		room_and_round_trip(&good, i);
	TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), -EAGAIN);
	hostile_end(tx, rx, node, sy[0], pid);
	good_peer_end(&good);
	topo_assert_baseline(&res);
	setrlimit(RLIMIT_NOFILE, &old);
}

/* ==== a peer that never stops publishing ================================== */

/*
 * Child: joins (1 MiB ring), fills the ring, says 'f', then publishes as
 * fast as room appears for `ms`, ignoring that our receiver is gone; then
 * waits until told to exit.
 */
static int publisher_child(int sock, int sync, unsigned ms)
{
	struct seqmsg m = { .seq = 0 };
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__link *l;
	int64_t end;

	node_opts(&o, TU_MS(5000));
	o.ring_size = 1u << 20;
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &seq_type, &seq_type, &o,
					     &node, &tx, &rx),
		      0);
	l = cmesh__node_link(node);
	while (push_raw(l, CMESH_REC_PLAIN, &m, sizeof(m)) == 0)
		m.seq++;
	TOPO_CHECK_EQ(topo_post(sync, 'f'), 0);
	end = tu_now_ns() + TU_MS(ms);
	while (tu_now_ns() < end) {
		if (push_raw(l, CMESH_REC_PLAIN, &m, sizeof(m)) == 0)
			m.seq++;
	}
	topo_wait(sync, TOPO_WAIT_MS);
	return 0;
}

struct free_arg {
	cmesh_receiver *rx;
};

static void *free_receiver(void *arg)
{
	cmesh_receiver_free(((struct free_arg *)arg)->rx);
	return NULL;
}

/*
 * Freeing a receiver whose peer has filled its ring and keeps publishing
 * returns at once and steps over nothing: the ring is left as it is
 * (nothing there is ours), its head does not move, instead of a drain
 * that lasts as long as the peer keeps adding. A healthy second peer
 * keeps exchanging.
 */
Test(node_hostile, freeing_a_receiver_under_an_endless_publisher_returns)
{
	struct topo_res res;
	struct topo_conn good;
	struct free_arg fa;
	struct cmesh__lane *in;
	cmesh_node *node;
	cmesh_sender *tx;
	uint64_t head0;
	int sv[2], sy[2];
	pthread_t t;
	pid_t pid;

	topo_baseline(&res);
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(publisher_child(sv[1], sy[1], 1000));
	join_child_link(sv[0], &seq_type, 1u << 20, &node, &tx, &fa.rx);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'f');
	in = cmesh__link_in(cmesh__node_link(node));
	head0 = in->cons.head_pos;
	cr_assert_eq(pthread_create(&t, NULL, free_receiver, &fa), 0);
	cr_assert(tu_thread_join_within(t, 500, NULL),
		  "freeing the receiver did not return within 500 ms");
	cr_assert_eq(in->cons.head_pos, head0, "the close stepped over %llu",
		     (unsigned long long)(in->cons.head_pos - head0));
	for (uint64_t i = 0; i < 20; i++)
		good_round_trip(&good, i);
	cmesh_sender_free(tx);
	cmesh_node_free(node);
	close(sy[0]);
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	good_peer_end(&good);
	topo_assert_baseline_within(&res, 5000);
}

/* ==== wakes that must not get lost ======================================== */

/* Peer: after 'g', sends one message; then waits until told to exit. */
static int go_sender_peer(cmesh_sender *tx, cmesh_receiver *rx,
			  const struct topo_side *s)
{
	struct seqmsg m = { .seq = 77 };

	TOPO_CHECK_EQ(topo_wait(s->sync, TOPO_WAIT_MS), 'g');
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}

static const struct topo_scenario go_sender = {
	.down = &seq_type,
	.up = &seq_type,
	.spin_ns = CMESH_SPIN_NONE,
	.peer = go_sender_peer,
};

struct sleeper {
	cmesh_receiver *rx;
	_Atomic pid_t tid;
	int r;
	struct seqmsg m;
};

static int64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *sleeper_recv(void *arg)
{
	struct sleeper *sl = arg;

	atomic_store(&sl->tid, tu_gettid());
	sl->r = cmesh_receiver_recv_deadline(
		sl->rx, cmesh_deadline_after(TU_MS(5000)), &sl->m, NULL, 0);
	return NULL;
}

/* Starts a thread asleep in recv on `rx` (asserts it is asleep). */
static pthread_t start_sleeper(struct sleeper *sl, cmesh_receiver *rx)
{
	pthread_t t;

	sl->rx = rx;
	cr_assert_eq(pthread_create(&t, NULL, sleeper_recv, sl), 0);
	while (!atomic_load(&sl->tid))
		tu_sleep_ms(1);
	cr_assert(tu_wait_thread_sleeping(atomic_load(&sl->tid), 2000),
		  "the receiving thread never slept");
	return t;
}

/*
 * A remote receiver asleep in recv while another thread removes it from
 * the waitset it was in: the removal disarms the waitset's wake, not the
 * sleeper's (each owns its bit of the wake line), so the peer's next
 * message wakes it at once, not at its 5 s deadline.
 */
static void check_removal_keeps_sleeper(bool polling)
{
	struct topo_res res;
	struct topo_conn c;
	struct sleeper sl = { 0 };
	cmesh_waitset *ws;
	struct cmesh_shm_ring_wake *w;
	pthread_t t;

	topo_baseline(&res);
	cmesh__lane_force_polling(polling);
	topo_fork_peer(&go_sender, TOPO_FORK, &c);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, c.rx, 1), 0);
	t = start_sleeper(&sl, c.rx);
	TU_ASSERT_RC(cmesh_waitset_remove_receiver(ws, c.rx), 0);
	/* What the peer reads before it decides to wake us. */
	w = cmesh__queue_rx_lane(((struct cmesh_receiver *)c.rx)->q)->own_wake;
	cr_assert(atomic_load(&w->sleeping) & (polling ? CMESH_SHM_WAKE_POLL :
							 CMESH_SHM_WAKE_FUTEX),
		  "the removal cleared the sleeper's flag (%u)",
		  atomic_load(&w->sleeping));
	cr_assert_eq(topo_post(c.sync, 'g'), 0);
	cr_assert(tu_thread_join_within(t, 2000, NULL),
		  "the sleeping receiver was not woken");
	TU_ASSERT_RC(sl.r, 0);
	cr_assert_eq(sl.m.seq, 77);
	cmesh_waitset_free(ws);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	topo_bye(c.sync);
	topo_assert_exit_0(c.pid, TOPO_WAIT_MS);
	close(c.sync);
	topo_assert_baseline(&res);
	cmesh__lane_force_polling(false);
}

Test(node_hostile, removing_a_member_does_not_disarm_its_sleeping_receiver)
{
	check_removal_keeps_sleeper(false);
}

Test(node_hostile, removing_a_member_does_not_disarm_a_polling_receiver)
{
	check_removal_keeps_sleeper(true);
}

/*
 * Where a seccomp profile older than futex_waitv refuses it (EPERM), a
 * receiver still sleeps (another way) instead of spinning: a 300 ms
 * timed receive uses little CPU, and a message still wakes it.
 */
Test(node_hostile, a_refused_futex_waitv_sleeps_another_way_not_spinning)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 449 /* futex_waitv */, 0,
			 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]),
				   .filter = f };
	struct topo_conn c;
	struct sleeper sl = { 0 };
	struct seqmsg m;
	int64_t t0;
	pthread_t t;

	cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
	topo_fork_peer(&go_sender, TOPO_FORK, &c);
	t0 = thread_cpu_ns();
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     c.rx, cmesh_deadline_after(TU_MS(300)), &m, NULL,
			     0),
		     -ETIMEDOUT);
	cr_assert_lt(thread_cpu_ns() - t0, TU_MS(150),
		     "%lld ms of CPU in a 300 ms wait: it spun",
		     (long long)((thread_cpu_ns() - t0) / 1000000));
	t = start_sleeper(&sl, c.rx);
	cr_assert_eq(topo_post(c.sync, 'g'), 0);
	cr_assert(tu_thread_join_within(t, 2000, NULL), "not woken");
	TU_ASSERT_RC(sl.r, 0);
	cmesh_sender_free(c.tx);
	cmesh_receiver_free(c.rx);
	topo_bye(c.sync);
	topo_assert_exit_0(c.pid, TOPO_WAIT_MS);
	close(c.sync);
}

/* ==== a peer that dies with fds still queued ============================== */

#define DEAD_FDS 200u

/* Child: sends DEAD_FDS messages carrying an eventfd each, then exits. */
static int fd_sender_child(int sock, int sync)
{
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;

	node_opts(&o, TU_MS(5000));
	o.ring_size = 1u << 16;
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &fd_type, &fd_type, &o,
					     &node, &tx, &rx),
		      0);
	for (uint64_t i = 0; i < DEAD_FDS; i++) {
		struct fdmsg m = { .tag = i,
				   .fd = eventfd(0, EFD_CLOEXEC),
				   .fd2 = -1 };

		TOPO_CHECK(m.fd >= 0);
		TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	TOPO_CHECK_EQ(cmesh_node_flush(node, cmesh_deadline_after(TU_MS(5000))),
		      0);
	TOPO_CHECK_EQ(topo_post(sync, 's'), 0);
	_exit(0);
}

/*
 * A peer publishes more fd-carrying messages than our fd budget lets us
 * read ahead (64 fds: fd table 512), then dies. Everything it published
 * is still delivered, each with its fd, before -ECONNRESET: the link
 * thread keeps reading the dead peer's socket as the receiver takes
 * attachments, within the budget.
 */
Test(node_hostile, a_peer_dying_with_fds_queued_past_our_budget_delivers_all)
{
	struct rlimit old = set_nofile(512);
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct fdmsg m;
	int sv[2], sy[2], r;
	pid_t pid;

	topo_baseline(&res);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(fd_sender_child(sv[1], sy[1]));
	join_child_link(sv[0], &fd_type, 1u << 16, &node, &tx, &rx);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 's');
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	for (uint64_t i = 0; i < DEAD_FDS; i++) {
		r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0);
		cr_assert_eq(r, 0, "message %llu of %u: %s",
			     (unsigned long long)i, DEAD_FDS,
			     cmesh_strerror(r));
		cr_assert_eq(m.tag, i);
		cr_assert(tu_fd_is_open(m.fd), "message %llu: fd %d",
			  (unsigned long long)i, m.fd);
		close(m.fd);
	}
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     -ECONNRESET);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	close(sy[0]);
	topo_assert_baseline(&res);
	setrlimit(RLIMIT_NOFILE, &old);
}

/* ==== closing a link on purpose =========================================== */

/*
 * Child: joins (4 KiB ring), reads nothing until 'c', then reads what was
 * published (at least one message, in order) and sees -ECONNRESET.
 */
static int stalled_child(int sock, int sync)
{
	cmesh_node_opts o;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct seqmsg m;
	uint64_t k = 0;
	int r;

	node_opts(&o, TU_MS(5000));
	TOPO_CHECK_EQ(cmesh_node_join_socket(sock, &seq_type, &seq_type, &o,
					     &node, &tx, &rx),
		      0);
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'c');
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0)
		TOPO_CHECK_EQ(m.seq, k++);
	TOPO_CHECK_EQ(r, -ECONNRESET);
	TOPO_CHECK(k > 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	return 0;
}

/*
 * cmesh_node_close() on a link whose peer does not read: the flush times
 * out, the backlog is dropped, our sender reports -ECONNRESET, the peer
 * reads what was in the ring and then sees the hang-up, and once the
 * handles are freed nothing of the link is left (no orphan waiting for
 * the stalled peer).
 */
Test(node_hostile, closing_a_node_ends_a_link_whose_peer_stalls)
{
	struct topo_res res;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2], sy[2];
	pid_t pid;

	topo_baseline(&res);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(stalled_child(sv[1], sy[1]));
	join_child_link(sv[0], &seq_type, RING, &node, &tx, &rx);
	for (uint64_t i = 0; i < 1000; i++) {
		struct seqmsg m = { .seq = i };

		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	TU_ASSERT_RC(cmesh_node_close(node, cmesh_deadline_after(TU_MS(20))),
		     -ETIMEDOUT);
	{
		struct seqmsg m = { .seq = 1000 };

		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), -ECONNRESET);
	}
	cr_assert_eq(topo_post(sy[0], 'c'), 0);
	hostile_end(tx, rx, NULL, sy[0], pid);
	topo_assert_baseline_within(&res, 5000);
	TU_ASSERT_RC(cmesh_node_close(NULL, 0), -EINVAL);
}

/* ==== a peer that sends ports without end =============================== */

/* A message carrying a receiver: the peer's port. */
struct rxmsg {
	uint64_t n;
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(rxmsg_type, struct rxmsg,
		  CMESH_FIELD_RECEIVER(struct rxmsg, rx, seq_type));

/* A hostile child that sends ports: joins with type `t` both ways. */
static int port_peer_join(int sock, const cmesh_type *t, cmesh_node **node,
			  cmesh_sender **tx, cmesh_receiver **rx)
{
	cmesh_node_opts o;

	node_opts(&o, TU_MS(5000));
	return cmesh_node_join_socket(sock, t, t, &o, node, tx, rx);
}

/* ... and ends: says 'd', waits to be told to exit, frees all. */
static int port_peer_end(int sync, cmesh_node *node, cmesh_sender *tx,
			 cmesh_receiver *rx)
{
	TOPO_CHECK_EQ(topo_post(sync, 'd'), 0);
	topo_wait(sync, TOPO_WAIT_MS * 2);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	return 0;
}

/*
 * Child: joins, then sends receivers whose lanes have 1 GiB rings (a real
 * sealed memfd each, sparse), one message each, until its link fails or
 * it has sent `max`; says 'd' and waits to be told to exit.
 */
static int port_flooder(int sock, int sync, uint32_t max)
{
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__link *l;
	uint32_t sent = 0;

	TOPO_CHECK_EQ(port_peer_join(sock, &rxmsg_type, &node, &tx, &rx), 0);
	l = cmesh__node_link(node);
	for (; sent < max && !cmesh__link_failed(l); sent++) {
		struct cmesh__port_out p;
		struct rxmsg m = { .n = sent };

		/* A lane we produce on: the receiver goes to the parent. */
		if (cmesh__link_lane_export(l, true, &seq_type, 1u << 30, 0, 0,
					    &p))
			break;
		if (cmesh__lane_send_ports(cmesh__link_out(l), &m, NULL, 0, &p,
					   1, 1))
			break;
	}
	return port_peer_end(sync, node, tx, rx);
}

/*
 * A peer that sends receivers with 1 GiB rings, which our receiver takes
 * and keeps: past the bytes of halves one link may map (1 TiB) the link
 * fails with -EPROTO, whatever the application holds; a healthy peer's
 * round trips go on throughout, and fds, mappings and RSS come back.
 */
Test(node_hostile, a_peer_flooding_ports_meets_the_links_mapping_bound)
{
	static cmesh_receiver *held[2048];
	struct topo_res res;
	struct topo_conn good;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct rxmsg m;
	uint32_t n = 0;
	long rss0;
	int sv[2], sy[2], r;
	pid_t pid;

	topo_baseline(&res);
	rss0 = tu_status_kib("VmRSS");
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(port_flooder(sv[1], sy[1], 2048));
	join_child_link(sv[0], &rxmsg_type, RING, &node, &tx, &rx);
	while ((r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						 0)) == 0) {
		cr_assert(m.rx, "message %u without its receiver", n);
		cr_assert_lt(n, 2048u);
		held[n++] = m.rx;
		if (n % 64 == 0)
			good_round_trip(&good, n);
	}
	/*
	 * 1 TiB of halves: five hundred or so 1 GiB rings (each takes 2 GiB:
	 * slots and bulk lines), never 2048.
	 */
	TU_ASSERT_RC(r, -EPROTO);
	cr_assert(n > 250 && n < 600, "took %u ports before the bound", n);
	good_round_trip(&good, 5000);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'd');
	/* What it held fails too. */
	TU_ASSERT_RC(cmesh_receiver_try_recv(held[0], &m, NULL, 0), -EPROTO);
	for (uint32_t i = 0; i < n; i++)
		cmesh_receiver_free(held[i]);
	hostile_end(tx, rx, node, sy[0], pid);
	good_round_trip(&good, 6000);
	good_peer_end(&good);
	topo_assert_baseline(&res);
	cr_assert_lt(tu_status_kib("VmRSS") - rss0, 16 * 1024,
		     "VmRSS grew by %ld KiB", tu_status_kib("VmRSS") - rss0);
}

/* ==== a peer that offers ports it may not: reuse, home ================== */

/* A message carrying a sender: the peer's port. */
struct txmsg {
	uint64_t n;
	cmesh_sender *tx;
};
CMESH_TYPE_DEFINE(txmsg_type, struct txmsg,
		  CMESH_FIELD_SENDER(struct txmsg, tx, seq_type));

/* What a hostile port peer sends. */
enum port_offer {
	POOLED_SENDER,	/* a channel sender's port marked POOLABLE (only a
			   oneshot sender's, a reply port, may be kept for
			   reuse: a kept lane's messages end their use) */
	HOME_ON_SENDER, /* HOME on a sender's port: only a receiver comes home */
	HOME_THEIRS,  /* HOME naming an id the peer gives: not a lane of ours */
	HOME_NO_LANE, /* HOME naming an id of ours that is no lane: a hint */
	TOKEN_TWICE,  /* two receivers' ports, REDIRECT to the peer, naming
			  one token to list our ends under: the first is
			  listed, the second not; both ordinary receivers */
	LIST_ELSEWHERE /* a token to list our end under, with a REDIRECT
			  naming a third process: -EPROTO */
};

/*
 * Child: joins, then sends a port as `how` says, and for a HOME that
 * names no lane of the parent's a message on it (seq 42); says 'd' and
 * waits to be told to exit.
 */
static int port_offerer(int sock, int sync, int how)
{
	bool rx_port = how != HOME_ON_SENDER && how != POOLED_SENDER;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__link *l;
	struct cmesh__port_out p;
	struct txmsg m = { .n = 1 };

	TOPO_CHECK_EQ(port_peer_join(sock, rx_port ? &rxmsg_type : &txmsg_type,
				     &node, &tx, &rx),
		      0);
	l = cmesh__node_link(node);
	/* A receiver's port: we produce on its lane; a sender's: we read. */
	TOPO_CHECK_EQ(cmesh__link_lane_export(l, rx_port, &seq_type, 4096,
					      65536, 0, &p),
		      0);
	if (how == TOKEN_TWICE || how == LIST_ELSEWHERE) {
		struct rxmsg r = { .n = 1 };

		for (int i = 0; i < (how == TOKEN_TWICE ? 2 : 1); i++) {
			if (i)
				TOPO_CHECK_EQ(cmesh__link_lane_export(
						      l, true, &seq_type, 4096,
						      65536, 0, &p),
					      0);
			p.desc.flags |= CMESH_PORT_F_REDIRECT;
			p.desc.node = how == TOKEN_TWICE ? cmesh__proc_id() :
							   0x5eed;
			p.desc.token[0] = 0x70c + (uint64_t)i;
			p.desc.token[1] = 0xe4;
			p.desc.list[0] = 0x11570c;
			p.desc.list[1] = 0xe4;
			TOPO_CHECK_EQ(cmesh__lane_send_ports(cmesh__link_out(l),
							     &r, NULL, 0, &p, 1,
							     1),
				      0);
		}
		return port_peer_end(sync, node, tx, rx);
	}
	if (how == POOLED_SENDER) {
		cmesh__link_lane_poolable(&p);
		TOPO_CHECK(p.desc.flags & CMESH_PORT_F_POOLABLE);
	} else {
		p.desc.flags |= CMESH_PORT_F_HOME;
		/* Our own ids have our parity; the parent's the other one. */
		p.desc.home = how == HOME_THEIRS ? p.desc.id + 2 :
						   p.desc.id + 1;
	}
	TOPO_CHECK_EQ(cmesh__lane_send_ports(cmesh__link_out(l), &m, NULL, 0,
					     &p, 1, 1),
		      0);
	if (how == HOME_NO_LANE || how == HOME_THEIRS) {
		struct seqmsg s = { .seq = 42 };
		int r;

		/* It spills until the parent binds the lane. */
		TOPO_CHECK_EQ(cmesh__lane_send(p.lane, &s, NULL, 0), 0);
		/* Delivered: the parent may have taken it and let go. */
		r = cmesh__lane_flush(p.lane, topo_deadline());
		TOPO_CHECK(r == 0 || r == -EPIPE);
	}
	return port_peer_end(sync, node, tx, rx);
}

/* What a port peer's message carries: a sender or a receiver port. */
union port_msg {
	struct txmsg t;
	struct rxmsg r;
};

/* The receiver port_peer_case() takes the message on, for arrived(). */
static cmesh_receiver *port_case_rx;

/*
 * A hostile port peer: the child `child(sock, sync, arg)` joins with type
 * `t` and sends a message carrying a port; `arrived(r, m, arg)` checks
 * what our receive of it returns. A healthy peer's round trips go on
 * throughout, and fds, mappings and RSS come back.
 */
static void port_peer_case(int (*child)(int sock, int sync, int arg), int arg,
			   const cmesh_type *t,
			   void (*arrived)(int r, union port_msg *m, int arg))
{
	struct topo_res res;
	struct topo_conn good;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	union port_msg m = { 0 };
	long rss0;
	int sv[2], sy[2], r;
	pid_t pid;

	topo_baseline(&res);
	rss0 = tu_status_kib("VmRSS");
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(child(sv[1], sy[1], arg));
	join_child_link(sv[0], t, RING, &node, &tx, &rx);
	good_round_trip(&good, 1);
	r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL, 0);
	port_case_rx = rx;
	arrived(r, &m, arg);
	port_case_rx = NULL;
	good_round_trip(&good, 2);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'd');
	hostile_end(tx, rx, node, sy[0], pid);
	good_round_trip(&good, 3);
	good_peer_end(&good);
	topo_assert_baseline(&res);
	cr_assert_lt(tu_status_kib("VmRSS") - rss0, 16 * 1024,
		     "VmRSS grew by %ld KiB", tu_status_kib("VmRSS") - rss0);
}

/* The port was refused: -EPROTO, and no endpoint reached us. */
static void refused(int r, union port_msg *m, int arg)
{
	(void)arg;
	TU_ASSERT_RC(r, -EPROTO);
	cr_assert_null(m->t.tx);
	cr_assert_null(m->r.rx);
}

/*
 * A peer that offers a channel sender for reuse (POOLABLE): the port is
 * refused and the link fails with -EPROTO, before the sender could reach
 * the application.
 */
Test(node_hostile, a_peer_offering_a_channel_sender_for_reuse_fails_with_eproto)
{
	port_peer_case(port_offerer, POOLED_SENDER, &txmsg_type, refused);
}

/* ==== a peer that says a receiver comes home ============================ */

/* An ordinary receiver: it gets what the peer sent on it. */
static void ordinary_receiver(int r, union port_msg *m, int arg)
{
	struct seqmsg s;

	(void)arg;
	TU_ASSERT_RC(r, 0);
	cr_assert_not_null(m->r.rx);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(m->r.rx, topo_deadline(), &s,
						  NULL, 0),
		     0);
	cr_assert_eq(s.seq, 42);
	cmesh_receiver_free(m->r.rx);
}

/*
 * A peer's port marked HOME: on a sender's port, it fails the link with
 * -EPROTO before the endpoint reaches the application; naming an id that
 * is no out lane of ours (of either side's parity: a claim's lane has the
 * claimer's), it is an ordinary receiver.
 */
Test(node_hostile, a_home_on_a_senders_port_fails_with_eproto)
{
	port_peer_case(port_offerer, HOME_ON_SENDER, &txmsg_type, refused);
}

Test(node_hostile, a_home_naming_a_lane_id_of_the_peers_is_an_ordinary_port)
{
	port_peer_case(port_offerer, HOME_THEIRS, &rxmsg_type,
		       ordinary_receiver);
}

Test(node_hostile, a_home_naming_no_lane_of_ours_is_an_ordinary_port)
{
	port_peer_case(port_offerer, HOME_NO_LANE, &rxmsg_type,
		       ordinary_receiver);
}

/*
 * Both receivers arrive, ordinary ones: the second, naming a token to
 * list it under that the first took (while the first is held), is not
 * listed, and the link goes on. (A token a peer picks can only be one it
 * was given or guessed: listing the first keeps what was there.)
 */
static void both_ordinary(int r, union port_msg *m, int arg)
{
	union port_msg m2 = { 0 };

	(void)arg;
	TU_ASSERT_RC(r, 0);
	cr_assert_not_null(m->r.rx);
	r = cmesh_receiver_recv_deadline(port_case_rx, topo_deadline(), &m2,
					 NULL, 0);
	TU_ASSERT_RC(r, 0);
	cr_assert_not_null(m2.r.rx);
	cmesh_receiver_free(m2.r.rx);
	cmesh_receiver_free(m->r.rx); /* listed until now */
}

Test(node_hostile, a_peer_naming_one_token_to_list_two_ports_under_is_served)
{
	port_peer_case(port_offerer, TOKEN_TWICE, &rxmsg_type, both_ordinary);
}

/* A token to list our end under goes only with a REDIRECT to its sender. */
Test(node_hostile, a_token_to_list_with_a_redirect_elsewhere_fails_with_eproto)
{
	port_peer_case(port_offerer, LIST_ELSEWHERE, &rxmsg_type, refused);
}

/* ==== a peer that claims senders it was not given ======================= */

/* What a hostile claimer does. */
enum claim_how {
	CLAIM_UNKNOWN,	    /* a token nobody gave: refused, nothing changes */
	CLAIM_BAD_PORT,	    /* a CLAIM whose port is a context's: -EPROTO */
	CLAIM_WRONG_TYPE,   /* the token it was given, another type: -EPROTO */
	CLAIM_WRONG_WAY,    /* a receiver's token, to write its lane: -EPROTO */
	CLAIM_TWICE,	    /* the token it was given, twice: once only */
	CLAIM_LIST_REFUSED, /* refused, its token to list is listed nowhere */
	CLAIM_LATER_UNASKED, /* LANE LATER for a port, no claim: -EPROTO */
	LANE_FAILED_LATER    /* LANE FAILED with LATER, no claim: -EPROTO */
};

static int keep_lane(void *ctx, struct cmesh__lane *ln)
{
	*(struct cmesh__lane **)ctx = ln;
	return 0;
}

/*
 * Child: claims with `t` (of type `type`; to read, or with `produce` to
 * write): *out, once answered.
 */
static int claim_listing(struct cmesh__link *l, const uint64_t t[2],
			 bool produce, const cmesh_type *type, uint64_t list[2],
			 struct cmesh__lane **out)
{
	struct cmesh__lane *ln = NULL;
	int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);

	TOPO_CHECK_EQ(cmesh__link_claim(l, t, 0, produce, type, 4096, 65536, 0,
					list, keep_lane, &ln),
		      0);
	TOPO_CHECK(ln);
	while (!cmesh__lane_bound(ln) &&
	       !atomic_load_explicit(&ln->dropped, memory_order_acquire) &&
	       !cmesh__link_failed(l) && tu_now_ns() < end)
		tu_sleep_ms(1);
	*out = ln;
	return 0;
}

/* The same, with a token of its own for the peer's end. */
static int claim_answered(struct cmesh__link *l, const uint64_t t[2],
			  bool produce, const cmesh_type *type,
			  struct cmesh__lane **out)
{
	return claim_listing(l, t, produce, type, NULL, out);
}

/*
 * Child: joins (receivers both ways), claims as `how` says; for the
 * tokens it was given, first takes a receiver from the parent (its port
 * carries the token). Unless the link must fail, sends n = 7 after the
 * answers; says 'd' and waits to be told to exit.
 */
static int claimer(int sock, int sync, int how)
{
	uint64_t t[2] = { 0x1234, 0x5678 };
	struct cmesh__lane *a, *b;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__link *l;
	struct rxmsg m = { 0 };

	TOPO_CHECK_EQ(port_peer_join(sock, &rxmsg_type, &node, &tx, &rx), 0);
	l = cmesh__node_link(node);
	if (how == CLAIM_LATER_UNASKED || how == LANE_FAILED_LATER) {
		struct cmesh_ctl_lane ans = { 0 };
		int64_t end = topo_deadline();

		/* The parent's port is here, unanswered (not taken). */
		while (cmesh_receiver_try_peek(rx) == -EAGAIN &&
		       tu_now_ns() < end)
			tu_sleep_ms(1);
		ans.hdr = (struct cmesh_ctl_hdr){ CMESH_PROTO_MAGIC,
						  CMESH_PROTO_VERSION,
						  CMESH_CTL_LANE, sizeof(ans),
						  0 };
		/* The parent's first lane on this link: its parity + 2. */
		ans.id = cmesh__link_in(l)->id + 2;
		ans.flags = CMESH_LANE_F_DROPPED | CMESH_LANE_F_LATER;
		if (how == LANE_FAILED_LATER)
			ans.flags |= CMESH_LANE_F_FAILED;
		TOPO_CHECK_EQ(cmesh__ctl_send(cmesh__link_sock(l), &ans,
					      sizeof(ans), NULL, 0),
			      0);
		return port_peer_end(sync, node, tx, rx);
	}
	if (how == CLAIM_WRONG_TYPE || how == CLAIM_WRONG_WAY ||
	    how == CLAIM_TWICE) {
		struct cmesh__lane *in;

		TOPO_CHECK_EQ(cmesh_receiver_recv_deadline(rx, topo_deadline(),
							   &m, NULL, 0),
			      0);
		TOPO_CHECK(m.rx);
		in = cmesh__queue_rx_lane(
			cmesh__endpoint_queue(CMESH_FIELD_KIND_RECEIVER, m.rx));
		TOPO_CHECK(in && (in->peer_token[0] | in->peer_token[1]));
		t[0] = in->peer_token[0];
		t[1] = in->peer_token[1];
	}
	switch (how) {
	case CLAIM_UNKNOWN:
		TOPO_CHECK_EQ(claim_answered(l, t, false, &seq_type, &a), 0);
		TOPO_CHECK(atomic_load(&a->dropped));
		break;
	case CLAIM_BAD_PORT: {
		struct cmesh_ctl_claim c = { 0 };
		int fd = memfd_create("claim", MFD_CLOEXEC);

		TOPO_CHECK(fd >= 0);
		c.hdr = (struct cmesh_ctl_hdr){ CMESH_PROTO_MAGIC,
						CMESH_PROTO_VERSION,
						CMESH_CTL_CLAIM, sizeof(c), 0 };
		c.token[0] = t[0];
		c.token[1] = t[1];
		/* A context's port: no lane of a channel at all. */
		c.port = (struct cmesh_ctl_port){ .id = 1001,
						  .kind = CMESH_PORT_CTX,
						  .ring_cap = 4096,
						  .arena_size = 1u << 20 };
		TOPO_CHECK_EQ(cmesh__ctl_send(cmesh__link_sock(l), &c,
					      sizeof(c), &fd, 1),
			      0);
		close(fd);
		return port_peer_end(sync, node, tx, rx);
	}
	case CLAIM_WRONG_TYPE:
	case CLAIM_WRONG_WAY:
		/* The peer fails the link: no answer comes. */
		TOPO_CHECK_EQ(claim_answered(l, t, how == CLAIM_WRONG_WAY,
					     how == CLAIM_WRONG_WAY ?
						     &seq_type :
						     &rxmsg_type,
					     &a),
			      0);
		TOPO_CHECK(cmesh__link_failed(l) && !cmesh__lane_bound(a));
		cmesh_receiver_free(m.rx);
		return port_peer_end(sync, node, tx, rx);
	case CLAIM_LIST_REFUSED: {
		uint64_t list[2] = { 0x9abc, 0xdef0 };

		/* A sender's claim, of a token nobody gave: refused... */
		TOPO_CHECK_EQ(claim_listing(l, t, true, &seq_type, list, &a),
			      0);
		TOPO_CHECK(atomic_load(&a->dropped));
		TOPO_CHECK(list[0] == 0x9abc && list[1] == 0xdef0);
		/* ...and nothing was listed under the token it named. */
		TOPO_CHECK_EQ(claim_answered(l, list, true, &seq_type, &b), 0);
		TOPO_CHECK(atomic_load(&b->dropped));
		TOPO_CHECK_EQ(claim_answered(l, list, false, &seq_type, &b), 0);
		TOPO_CHECK(atomic_load(&b->dropped));
		break;
	}
	case CLAIM_TWICE:
		TOPO_CHECK_EQ(claim_answered(l, t, false, &seq_type, &a), 0);
		TOPO_CHECK_EQ(claim_answered(l, t, false, &seq_type, &b), 0);
		TOPO_CHECK(cmesh__lane_bound(a));
		TOPO_CHECK(!atomic_load(&a->dropped));
		TOPO_CHECK(atomic_load(&b->dropped));
		break;
	default:
		TOPO_CHECK(0);
	}
	m = (struct rxmsg){ .n = 7 };
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	cmesh_receiver_free(m.rx);
	return port_peer_end(sync, node, tx, rx);
}

/*
 * A hostile claimer as `how` says; `fails`: its link must fail with
 * -EPROTO, else it stays up (the claimer's n = 7 arrives). A healthy peer
 * exchanges throughout; fds, mappings and RSS come back.
 */
static void claim_case(int how, bool fails)
{
	struct topo_res res;
	struct topo_conn good;
	cmesh_node *node;
	cmesh_sender *tx, *stx = NULL;
	cmesh_receiver *rx, *srx;
	struct rxmsg m = { 0 };
	long rss0;
	int sv[2], sy[2], r;
	pid_t pid;

	topo_baseline(&res);
	rss0 = tu_status_kib("VmRSS");
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(claimer(sv[1], sy[1], how));
	join_child_link(sv[0], &rxmsg_type, RING, &node, &tx, &rx);
	good_round_trip(&good, 1);
	if (how == CLAIM_WRONG_TYPE || how == CLAIM_WRONG_WAY ||
	    how == CLAIM_TWICE || how == CLAIM_LATER_UNASKED ||
	    how == LANE_FAILED_LATER) {
		/* A receiver for it: its port carries its senders' token. */
		TU_ASSERT_RC(cmesh_channel_new(&seq_type, NULL, &stx, &srx), 0);
		m.rx = srx;
		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
	}
	r = cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL, 0);
	if (fails) {
		TU_ASSERT_RC(r, -EPROTO);
	} else {
		TU_ASSERT_RC(r, 0);
		cr_assert_eq(m.n, 7);
	}
	if (stx) {
		struct seqmsg s = { .seq = 1 };

		/*
		 * Its senders write the claimed lane now; after a failed
		 * link, they see the failure, or the receiver the child
		 * freed meanwhile (which of the two comes first is a race).
		 */
		r = cmesh_sender_send(stx, &s, NULL, 0);
		cr_assert(fails ? r == 0 || r == -EPROTO || r == -ECONNRESET ||
					  r == -EPIPE :
				  r == 0,
			  "send: %d", r);
		cmesh_sender_free(stx);
	}
	good_round_trip(&good, 2);
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'd');
	hostile_end(tx, rx, node, sy[0], pid);
	good_round_trip(&good, 3);
	good_peer_end(&good);
	topo_assert_baseline(&res);
	cr_assert_lt(tu_status_kib("VmRSS") - rss0, 16 * 1024,
		     "VmRSS grew by %ld KiB", tu_status_kib("VmRSS") - rss0);
}

/*
 * Claims are capabilities: a token nobody gave is refused (DROPPED) and
 * changes nothing; a CLAIM whose port is no channel's, or that names a
 * token it was given with another type or to go the other way, fails the
 * link with -EPROTO; a token works once (a replay is refused).
 */
Test(node_hostile, a_claim_with_a_token_nobody_gave_is_refused)
{
	claim_case(CLAIM_UNKNOWN, false);
}

Test(node_hostile, a_claim_whose_port_is_a_contexts_fails_with_eproto)
{
	claim_case(CLAIM_BAD_PORT, true);
}

Test(node_hostile, a_claim_to_write_a_lane_given_to_read_fails_with_eproto)
{
	claim_case(CLAIM_WRONG_WAY, true);
}

Test(node_hostile, a_claim_of_another_type_fails_with_eproto)
{
	claim_case(CLAIM_WRONG_TYPE, true);
}

Test(node_hostile, a_claim_made_twice_holds_once)
{
	claim_case(CLAIM_TWICE, false);
}

Test(node_hostile, a_refused_claim_lists_nothing_under_the_token_it_named)
{
	claim_case(CLAIM_LIST_REFUSED, false);
}

/*
 * LANE DROPPED | LATER answers only a receiver's claim of ours: answering
 * a receiver's port with it (the port's lane is ours to write, no claim)
 * fails the link with -EPROTO.
 */
Test(node_hostile, a_later_answer_to_a_port_that_was_no_claim_fails_with_eproto)
{
	claim_case(CLAIM_LATER_UNASKED, true);
}

/* FAILED goes with DROPPED alone: with LATER too it fails the link. */
Test(node_hostile, a_failed_later_answer_fails_with_eproto)
{
	claim_case(LANE_FAILED_LATER, true);
}

/* ---- introductions (link_intro.c) --------------------------------------- */

#define FLOOD_INTROS 3

/* A raw INTRO naming process `proc`, carrying `fd`. */
static int send_intro(struct cmesh__link *l, uint64_t proc, int fd)
{
	struct cmesh_ctl_intro in = { { CMESH_PROTO_MAGIC, CMESH_PROTO_VERSION,
					CMESH_CTL_INTRO, sizeof(in), 0 },
				      proc };

	return cmesh__ctl_send(cmesh__link_sock(l), &in, sizeof(in), &fd, 1);
}

/*
 * Child: joins, then introduces the parent to FLOOD_INTROS processes that
 * do not exist (a socketpair each, whose other end it keeps and never
 * speaks on), then sends n = 7. Watches the ends until the parent closed
 * them all (each handshake times out), and sends the most it found in a
 * handshake at once (its HELLO there, its end still open); says 'd' and
 * waits to be told to exit.
 */
static int intro_flooder(int sock, int sync)
{
	int ends[FLOOD_INTROS], most = 0, closed;
	int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct cmesh__link *l;
	struct rxmsg m = { .n = 7 };

	TOPO_CHECK_EQ(port_peer_join(sock, &rxmsg_type, &node, &tx, &rx), 0);
	l = cmesh__node_link(node);
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'g');
	for (int i = 0; i < FLOOD_INTROS; i++) {
		int p[2];

		TOPO_CHECK_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
					 0, p),
			      0);
		TOPO_CHECK_EQ(send_intro(l, 0x1000 + (uint64_t)i, p[0]), 0);
		close(p[0]);
		ends[i] = p[1];
	}
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	do {
		int open = 0;

		closed = 0;
		/*
		 * Last first: the parent takes them in order, so an end seen
		 * open here cannot have been closed before a later one
		 * opened (two would be counted at once).
		 */
		for (int i = FLOOD_INTROS - 1; i >= 0; i--) {
			struct pollfd pf = { .fd = ends[i],
					     .events = POLLIN | POLLRDHUP };

			if (poll(&pf, 1, 0) != 1)
				continue;
			if (pf.revents & (POLLRDHUP | POLLHUP))
				closed++;
			else if (pf.revents & POLLIN)
				open++; /* a HELLO: a handshake under way */
		}
		if (open > most)
			most = open;
		if (closed < FLOOD_INTROS)
			tu_sleep_ms(2);
	} while (closed < FLOOD_INTROS && tu_now_ns() < end);
	TOPO_CHECK_EQ(closed, FLOOD_INTROS);
	for (int i = 0; i < FLOOD_INTROS; i++)
		close(ends[i]);
	m.n = (uint64_t)most;
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	return port_peer_end(sync, node, tx, rx);
}

/*
 * The victim's side of an introduction case: a healthy peer exchanges
 * throughout; told 'g', the hostile child introduces; its link stays up
 * (n = 7 arrives), then its second message arrives, by when we hold no
 * link more than before 'g' (memfd mappings); fds, memfd mappings,
 * threads and RSS come back (all mappings do not: threads' stacks stay
 * cached).
 */
static void intro_case(int (*child)(int sock, int sync), uint64_t *second)
{
	struct topo_res res;
	struct topo_conn good;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct rxmsg m = { 0 };
	long rss0, threads0;
	int64_t end;
	int sv[2], sy[2], maps;
	pid_t pid;

	topo_baseline(&res);
	rss0 = tu_status_kib("VmRSS");
	threads0 = tu_status_kib("Threads"); /* a count, not KiB */
	topo_fork_peer(&echo_sc, TOPO_FORK, &good);
	pid = fork_pair(sv, sy);
	if (pid == 0)
		topo_child_exit(child(sv[1], sy[1]));
	join_child_link(sv[0], &rxmsg_type, RING, &node, &tx, &rx);
	good_round_trip(&good, 1);
	maps = topo_memfd_map_count();
	TU_ASSERT_RC(topo_post(sy[0], 'g'), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     0);
	cr_assert_eq(m.n, 7);
	good_round_trip(&good, 2);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(rx, topo_deadline(), &m, NULL,
						  0),
		     0);
	*second = m.n;
	end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	while (topo_memfd_map_count() != maps && tu_now_ns() < end)
		tu_sleep_ms(1);
	cr_assert_eq(topo_memfd_map_count(), maps, "a link was left");
	cr_assert_eq(topo_wait(sy[0], TOPO_WAIT_MS), 'd');
	cr_assert(!cmesh__link_failed(cmesh__node_link(node)));
	good_round_trip(&good, 3);
	hostile_end(tx, rx, node, sy[0], pid);
	good_round_trip(&good, 4);
	good_peer_end(&good);
	end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	while ((tu_fd_count() != res.fds ||
		topo_memfd_map_count() != res.memfd_maps ||
		tu_status_kib("Threads") != threads0) &&
	       tu_now_ns() < end)
		tu_sleep_ms(1);
	TU_ASSERT_FDS(res.fds);
	cr_assert_eq(topo_memfd_map_count(), res.memfd_maps);
	cr_assert_eq(tu_status_kib("Threads"), threads0);
	cr_assert_lt(tu_status_kib("VmRSS") - rss0, 16 * 1024,
		     "VmRSS grew by %ld KiB", tu_status_kib("VmRSS") - rss0);
}

/*
 * A peer that introduces us to processes that never answer: we join one
 * at a time (its link thread waits for each HELLO up to the handshake's
 * deadline, then closes it); its link stays up, nothing else waits.
 */
Test(node_hostile, introductions_to_processes_that_never_answer_end)
{
	uint64_t most;

	intro_case(intro_flooder, &most);
	cr_assert_eq(most, 1, "%llu handshakes at once",
		     (unsigned long long)most);
}

/*
 * Child: introduces the parent to process 0x5eed and answers on the other
 * end itself, under its own name: sends n = 7, then its join's result
 * (as n, negated); says 'd' and waits to be told to exit.
 */
static int intro_liar(int sock, int sync)
{
	struct cmesh__link_opts lo = { 0 };
	struct cmesh__link *l, *fake = NULL;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	struct rxmsg m = { .n = 7 };
	int p[2], r;

	TOPO_CHECK_EQ(port_peer_join(sock, &rxmsg_type, &node, &tx, &rx), 0);
	l = cmesh__node_link(node);
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'g');
	TOPO_CHECK_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p),
		      0);
	TOPO_CHECK_EQ(send_intro(l, 0x5eed, p[0]), 0);
	close(p[0]);
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	lo.ring_cap = 4096;
	lo.max_trail = 1 << 20;
	lo.max_backlog = 1 << 20;
	lo.deadline = cmesh_clock_now() + TU_MS(TOPO_WAIT_MS);
	lo.cancel_fd = -1;
	r = cmesh__link_new(p[1], cmesh__intro_type(), cmesh__intro_type(), &lo,
			    &fake);
	/* Its HELLO may still come back before the parent hangs up. */
	if (!r) {
		int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);

		while (!(r = cmesh__link_failed(fake)) && tu_now_ns() < end)
			tu_sleep_ms(1);
		cmesh__link_put(fake);
	}
	m.n = (uint64_t)-r;
	TOPO_CHECK_EQ(cmesh_sender_send(tx, &m, NULL, 0), 0);
	return port_peer_end(sync, node, tx, rx);
}

/*
 * A peer that introduces us to a process and answers as another one: the
 * new link fails (-EPROTO) before anyone can find it under the name the
 * INTRO gave; the peer's own link stays up.
 */
Test(node_hostile, an_introduced_peer_under_another_name_is_refused)
{
	uint64_t r;

	intro_case(intro_liar, &r);
	cr_assert(r == ECONNRESET || r == EPROTO, "its join: -%llu",
		  (unsigned long long)r);
}

/* ---- a peer that shares our end's file description ---------------------- */

/*
 * Child: a cmesh peer over sv[1] that also holds sv[0], the parent's end
 * (a supervisor's socketpair; an introducer keeps both ends of what it
 * hands over). Told 'g', it clears O_NONBLOCK on the description it
 * shares with the parent, sends a SPACE (a valid control message), forks
 * a grandchild that keeps both ends open, says 'd' with the grandchild's
 * pid and exits without a word on the socket.
 */
static int blocking_peer(int ours, int theirs, int sync)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct cmesh_ctl_hdr h = { CMESH_PROTO_MAGIC, CMESH_PROTO_VERSION,
				   CMESH_CTL_SPACE, sizeof(h), 0 };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	pid_t g;
	int fl;

	o.timeout_ns = TU_MS(5000);
	TOPO_CHECK_EQ(cmesh_node_join_socket(ours, &seq_type, &seq_type, &o,
					     &node, &tx, &rx),
		      0);
	TOPO_CHECK_EQ(topo_wait(sync, TOPO_WAIT_MS), 'g');
	fl = fcntl(theirs, F_GETFL);
	TOPO_CHECK(fl >= 0 && (fl & O_NONBLOCK));
	TOPO_CHECK_EQ(fcntl(theirs, F_SETFL, fl & ~O_NONBLOCK), 0);
	TOPO_CHECK_EQ(cmesh__ctl_send(ours, &h, sizeof(h), NULL, 0), 0);
	g = fork();
	TOPO_CHECK(g >= 0);
	if (g == 0) {
		tu_sleep_ms(8000);
		_exit(0);
	}
	TOPO_CHECK_EQ(write(sync, &g, sizeof(g)), (ssize_t)sizeof(g));
	_exit(0);
}

/*
 * The link knows its peer's pid (peer_pid) and reports its death while
 * the socket lives on elsewhere (node.h). A peer that shares our end's
 * description must not wedge the link thread in a blocking recvmsg(): it
 * would then never see the pidfd (nor a close: cmesh_node_close() would
 * wait in pthread_join() for good).
 */
Test(node_hostile, a_peer_that_makes_our_socket_blocking_cannot_wedge_the_link)
{
	cmesh_node_opts o = CMESH_NODE_OPTS_INIT;
	struct seqmsg m;
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	int sv[2], sy[2], r;
	pid_t pid, g = -1;

	TU_ASSERT_RC(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	topo_sync_pair(sy);
	pid = topo_fork();
	if (pid == 0) {
		close(sy[0]);
		topo_child_exit(blocking_peer(sv[1], sv[0], sy[1]));
	}
	close(sv[1]);
	close(sy[1]);
	o.timeout_ns = TU_MS(5000);
	o.peer_pid = pid;
	TU_ASSERT_RC(cmesh_node_join_socket(sv[0], &seq_type, &seq_type, &o,
					    &node, &tx, &rx),
		     0);
	TU_ASSERT_RC(topo_post(sy[0], 'g'), 0);
	cr_assert_eq(read(sy[0], &g, sizeof(g)), (ssize_t)sizeof(g));
	topo_assert_exit_0(pid, TOPO_WAIT_MS);
	/* The peer is gone: its pidfd says so, long before 3 s. */
	r = cmesh_receiver_recv_deadline(rx, cmesh_deadline_after(TU_MS(3000)),
					 &m, NULL, 0);
	kill(g, SIGKILL); /* its ends close: a wedged thread wakes up */
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	cmesh_node_free(node);
	close(sy[0]);
	cr_assert_eq(r, -ECONNRESET,
		     "recv after the peer's death returned %d (%s)", r,
		     cmesh_strerror(r));
}
