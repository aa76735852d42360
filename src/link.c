/* SPDX-License-Identifier: MIT */
/*
 * link.c - a connection to one peer process.
 *
 * Handshake: each side creates its arena (ring it writes + the consumer
 * line of the ring it reads), sends HELLO with the arena memfd and its
 * wake socket, receives the peer's HELLO, maps the peer's arena
 * read-only after validating it, attaches both rings, and compares the
 * channel type fingerprints (both sides compute the same verdict, so a
 * mismatch fails both with -EBADMSG).
 *
 * Afterwards one thread per link runs the wake backend (io_uring or
 * epoll, wake.c) on the control socket and a kick eventfd: it reads
 * ATTACH messages into a FIFO that receivers take from, detects the peer's
 * death or hang-up (failing the link with -ECONNRESET), rejects anything
 * malformed (-EPROTO), and retries spilled sends while a lane has any.
 * The data path does not go through this thread.
 */
#include "link.h"
#include "link_int.h"

#include "arena.h"
#include "lane.h"
#include "log.h"
#include "ctl.h"
#include "wake.h"

#include "proto.h"
#include "ring.h"

#include <cmesh/common.h>
#include <cmesh/error.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

struct cmesh__lane *cmesh__link_out(struct cmesh__link *l)
{
	return &l->out;
}

struct cmesh__lane *cmesh__link_in(struct cmesh__link *l)
{
	return &l->in;
}

void cmesh__link_stats(struct cmesh__link *l, cmesh_node_stats *out)
{
	out->peer_pid = (int32_t)cmesh__link_peer_pid(l);
	out->failed = atomic_load_explicit(&l->failed, memory_order_acquire);
	out->wake_backend = cmesh__wake_backend(l->wake);
	out->backlog =
		atomic_load_explicit(&l->out.backlog, memory_order_relaxed);
	pthread_mutex_lock(&l->att_lock);
	out->lanes = l->ndyn;
	out->peer_bytes = l->peer_mapped;
	out->pending_fds = l->att_fds;
	out->fd_budget = l->fd_budget;
	pthread_mutex_unlock(&l->att_lock);
}

pid_t cmesh__link_peer_pid(const struct cmesh__link *l)
{
	return l->peer_pid;
}

int cmesh__link_sock(const struct cmesh__link *l)
{
	return l->sock;
}

int cmesh__link_failed(const struct cmesh__link *l)
{
	return atomic_load_explicit(&l->failed, memory_order_acquire);
}

const _Atomic int *cmesh__link_failed_word(const struct cmesh__link *l)
{
	return &l->failed;
}

void cmesh__link_fail(struct cmesh__link *l, int err)
{
	int expected = 0;

	/* seq_cst: link_hook.c's holders check it after going idle. */
	if (!atomic_compare_exchange_strong_explicit(&l->failed, &expected, err,
						     memory_order_seq_cst,
						     memory_order_acquire))
		return;
	cmesh__log(CMESH__LOG_INFO, "link to pid %d failed: %s",
		   (int)l->peer_pid, cmesh_strerror(err));
	/* Tell the peer; what it sent before stays readable for us. */
	shutdown(l->sock, SHUT_WR);
	cmesh__lanes_wake_all(l);
	cmesh__ctx_link_failed(l); /* contexts the peer gave us end */
	cmesh__link_kick(l);	   /* its thread runs the hooks */
}

void cmesh__link_kick(struct cmesh__link *l)
{
	if (l->kick_efd >= 0)
		cmesh__eventfd_signal(l->kick_efd);
}

/* A backlog's retry while the socket is throttled (no SPACE is read). */
#define THROTTLED_RETRY_NS 1000000

static void on_sock(void *arg, int fd, uint32_t revents);

/* The FIFO holds its budget of fds: read no more ATTACHes for now. */
static bool over_budget(struct cmesh__link *l)
{
	bool over;

	pthread_mutex_lock(&l->att_lock);
	over = l->att_fds + ATTACH_MAX_FDS > l->fd_budget;
	pthread_mutex_unlock(&l->att_lock);
	return over;
}

/*
 * Link thread: watches the socket for `events`. False when it is not
 * watched (any more: the link failed).
 */
static bool watch_sock(struct cmesh__link *l, uint32_t events)
{
	if (!l->sock_watched)
		return false;
	if (l->sock_events == events)
		return true;
	cmesh__wake_del(l->wake, l->sock);
	if (cmesh__wake_add(l->wake, l->sock, events, on_sock, l)) {
		/* Cannot watch it any more: nothing else will tell. */
		l->sock_watched = false;
		cmesh__link_fail(l, -ECONNRESET);
		atomic_store_explicit(&l->sock_read, true,
				      memory_order_release);
		return false;
	}
	l->sock_events = events;
	return true;
}

/*
 * Link thread: stops (on) or resumes (off) reading the socket; throttled,
 * it is watched for its hang-up only. The fds still queued in the socket
 * are the kernel's, not in our fd table: a peer that sends fds faster
 * than our receiver takes their records waits, it cannot fill our table.
 */
static void throttle(struct cmesh__link *l, bool on)
{
	if (atomic_load_explicit(&l->sock_throttled, memory_order_relaxed) ==
		    on ||
	    !watch_sock(l, (on ? POLLRDHUP : POLLIN | POLLRDHUP) |
				   (l->sock_events & POLLOUT)))
		return;
	atomic_store_explicit(&l->sock_throttled, on, memory_order_relaxed);
}

/* Link thread: the socket polled readable or hung up. */
static void on_sock(void *arg, int fd, uint32_t revents)
{
	struct cmesh__link *l = arg;
	/* An ATTACH with every port a type may hold is the largest. */
	unsigned char buf[sizeof(struct cmesh_ctl_attach) +
			  CMESH_CTL_MAX_PORTS * sizeof(struct cmesh_ctl_port)];
	int fds[CMESH__CTL_MAX_FDS];

	for (;;) {
		uint32_t nfds = 0;
		int n;

		if (over_budget(l)) {
			throttle(l, true);
			break;
		}
		n = cmesh__ctl_recv(fd, buf, sizeof(buf), fds,
				    CMESH__CTL_MAX_FDS, &nfds);

		if (n == -EAGAIN)
			break;
		/*
		 * A peer that closed with our data unread makes the next read
		 * fail with ECONNRESET, then its own queued messages still
		 * come: read them (their fds belong to records it published).
		 */
		if (n == -ECONNRESET) {
			revents |= POLLHUP;
			continue;
		}
		if (n < 0) {
			/* -EMFILE: fds of an ATTACH were lost to a full fd
			 * table; its record can never be delivered whole. */
			cmesh__link_fail(l, n == -EPROTO || n == -EMFILE ?
						    n :
						    -ECONNRESET);
			return;
		}
		n = cmesh__lanes_handle_ctl(l, buf, n, fds, nfds);
		if (n) {
			for (uint32_t i = 0; i < nfds; i++)
				close(fds[i]);
			cmesh__link_fail(l, n);
			return;
		}
	}
	if (revents & (POLLHUP | POLLERR | POLLRDHUP))
		cmesh__link_fail(l, -ECONNRESET);
}

static void on_kick(void *arg, int fd, uint32_t revents)
{
	(void)arg;
	(void)revents;
	cmesh__eventfd_drain(fd);
}

/* Link thread: the peer process exited (its pidfd polled readable). */
static void on_pidfd(void *arg, int fd, uint32_t revents)
{
	(void)fd;
	(void)revents;
	cmesh__link_fail(arg, -ECONNRESET);
}

static void free_resources(struct cmesh__link *l);

/*
 * True once an orphaned link has nothing left to deliver: its spilled
 * sends (with a CLOSE record at their end) reached the ring, or the link
 * failed and they never will.
 */
static bool orphan_done(struct cmesh__link *l)
{
	return atomic_load_explicit(&l->orphan, memory_order_acquire) &&
	       (!cmesh__lanes_spilling(l) || cmesh__link_failed(l));
}

/*
 * The link thread's wake loop broke (the link failed with it): it waits
 * on its kick eventfd alone for what the loop would still have done, an
 * introduction's reference to drop (a kick follows its store), its own
 * last reference (the link then freed here), or its stop (joined). True
 * if it freed the link.
 */
static bool linger(struct cmesh__link *l)
{
	for (;;) {
		struct pollfd p = { .fd = l->kick_efd, .events = POLLIN };
		bool orphaned;

		cmesh__intro_release(l);
		pthread_mutex_lock(&l->orphan_lock);
		orphaned =
			atomic_load_explicit(&l->orphan, memory_order_acquire);
		pthread_mutex_unlock(&l->orphan_lock);
		if (orphaned) {
			pthread_detach(pthread_self());
			free_resources(l);
			return true;
		}
		if (atomic_load_explicit(&l->stop, memory_order_acquire))
			return false;
		if (poll(&p, 1, -1) > 0)
			cmesh__eventfd_drain(l->kick_efd);
	}
}

static void *link_thread(void *arg)
{
	struct cmesh__link *l = arg;

	while (!atomic_load_explicit(&l->stop, memory_order_acquire)) {
		bool out;
		int r;

		int64_t deadline = CMESH_DEADLINE_NONE;

		/*
		 * No timer: a SPACE, a kick or the socket wakes us. But
		 * throttled (past our fd budget) we read no SPACE either: a
		 * backlog then looks again every THROTTLED_RETRY_NS.
		 */
		if (atomic_load_explicit(&l->sock_throttled,
					 memory_order_relaxed) &&
		    cmesh__lanes_spilling(l))
			deadline = cmesh_clock_now() + THROTTLED_RETRY_NS;
		r = cmesh__wake_run(l->wake, deadline);
		if (r < 0 && r != -EINTR) {
			cmesh__link_fail(l, -ECONNRESET);
			cmesh__link_hooks_run(l);
			if (linger(l))
				return NULL; /* freed */
			break;
		}
		if (cmesh__link_failed(l) && l->pidfd_watched) {
			/* Readable for good once the process is gone. */
			cmesh__wake_del(l->wake, l->pidfd);
			l->pidfd_watched = false;
		}
		if (atomic_load_explicit(&l->sock_throttled,
					 memory_order_relaxed) &&
		    !over_budget(l)) {
			throttle(l, false);
			on_sock(l, l->sock, 0); /* what waited meanwhile */
		}
		if (cmesh__link_failed(l) && l->sock_watched &&
		    !atomic_load_explicit(&l->sock_throttled,
					  memory_order_relaxed)) {
			/* Take the ATTACHes already queued: their records were
			 * published before the failure (within the budget:
			 * throttled, the receiver's takes resume us). */
			on_sock(l, l->sock, 0);
			if (!atomic_load_explicit(&l->sock_throttled,
						  memory_order_relaxed)) {
				cmesh__wake_del(l->wake, l->sock);
				l->sock_watched = false;
				/* Pairs with failed_and_read()'s acquire. */
				atomic_store_explicit(&l->sock_read, true,
						      memory_order_release);
				cmesh__lanes_wake_all(l);
			}
		}
		if (cmesh__link_failed(l) ||
		    atomic_load_explicit(&l->holders_only,
					 memory_order_relaxed))
			cmesh__link_hooks_run(l); /* once */
		if (cmesh__link_failed(l))
			cmesh__intro_release(l);
		/* Backlogs, control messages, lanes that are done; what
		 * meets a full socket goes when it polls writable. */
		out = cmesh__lanes_sweep(l);
		if (l->sock_watched)
			watch_sock(l, (l->sock_events & ~(uint32_t)POLLOUT) |
					      (out ? POLLOUT : 0));
		/* Not before cmesh__link_put() is done with `l`. */
		pthread_mutex_lock(&l->orphan_lock);
		bool done = orphan_done(l);
		pthread_mutex_unlock(&l->orphan_lock);
		if (done) {
			/* Nobody will join us: free everything and leave. */
			pthread_detach(pthread_self());
			free_resources(l);
			return NULL;
		}
	}
	return NULL;
}

/* ---- handshake ---- */

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
 * Waits for the peer's HELLO until `deadline`, or until `cancel_fd` (-1:
 * none) polls readable: -ECANCELED.
 */
/*
 * Handshake: waits until the socket polls `events` (0), `deadline`
 * passes (-ETIMEDOUT) or `cancel_fd` polls readable (-ECANCELED).
 */
static int wait_sock(int sock, short events, int64_t deadline, int cancel_fd)
{
	struct pollfd p[2] = { { .fd = sock, .events = events },
			       { .fd = cancel_fd, .events = POLLIN } };

	for (;;) {
		int64_t left = deadline - cmesh_clock_now();
		int ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
		int n;

		if (left <= 0)
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
	while ((r = cmesh__ctl_send(l->sock, h, sizeof(*h), fds, 2)) ==
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

	n = wait_sock(l->sock, POLLIN, deadline, cancel_fd);
	if (n)
		return n;
	n = cmesh__ctl_recv(l->sock, buf, sizeof(buf), fds, 2, &nfds);
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
	/* buf grows as records need it (lane.c): nothing sized by the ring. */
	l->in.buf_limit = cmesh__shmring_record_limit(h->ring_cap);
	/* A record per slot, and the one our receiver took but not yet its
	 * ATTACH (lane.c copies a MSG record out before delivering it). */
	l->in.att_max = h->ring_cap / CMESH_SHM_SLOT_SIZE + 1;
	return 0;
}

static int handshake(struct cmesh__link *l, const cmesh_type *out_type,
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
	 * SO_PEERCRED on a socketpair names the process that created it
	 * (us, when we forked the peer): then the peer's own word is all
	 * there is. cmesh_spawn() overrides it with the child it forked.
	 */
	/*
	 * cmesh_node_pid(): SO_PEERCRED when it names someone else (for a
	 * socketpair: whoever made it), else the peer's own word.
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

static int peer_pid(int sock, pid_t *out)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		return -errno;
	*out = cred.pid;
	return 0;
}

static void link_destroy(struct cmesh__link *l)
{
	if (l->thread_started) {
		atomic_store_explicit(&l->stop, true, memory_order_release);
		cmesh__eventfd_signal(l->kick_efd);
		pthread_join(l->thread, NULL);
	}
	free_resources(l);
}

static void free_resources(struct cmesh__link *l)
{
	cmesh__wake_free(l->wake);
	if (l->pidfd >= 0)
		close(l->pidfd);
	/* Before kick_efd: freeing lanes may still kick (never after). */
	cmesh__lanes_destroy(l);
	cmesh__ctx_destroy(l); /* before kick_efd: a watcher may kick */
	cmesh__wakes_destroy(l);
	if (l->kick_efd >= 0)
		close(l->kick_efd);
	l->kick_efd = -1;
	cmesh__lane_destroy(&l->out);
	cmesh__lane_destroy(&l->in);
	cmesh__arena_free(l->peer);
	cmesh__arena_free(l->own);
	pthread_mutex_destroy(&l->att_lock);
	pthread_mutex_destroy(&l->orphan_lock);
	close(l->sock);
	free(l);
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

/*
 * A pidfd of the peer process, if we know which process it is: the
 * socket's peer (SO_PEERPIDFD, or pidfd_open() of the SO_PEERCRED pid)
 * or the child we forked. Never the HELLO's pid: a peer's word, and in
 * another pid namespace not even a pid of ours. -1 when there is none.
 */
static int peer_pidfd(const struct cmesh__link *l, bool from_cred)
{
	socklen_t len = sizeof(int);
	int fd = -1;

	if (!l->pid_known)
		return -1;
	if (from_cred &&
	    getsockopt(l->sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 &&
	    fd >= 0)
		return fd;
	fd = (int)syscall(SYS_pidfd_open, l->peer_pid, 0);
	return fd < 0 ? -1 : fd;
}

/*
 * The peer's death has two signals: the control socket's hang-up and,
 * where we know the process, its pidfd. The second one also covers a
 * peer whose end of the socket lives on elsewhere (passed back to us, or
 * inherited by a child) and an exit whose socket close the kernel defers
 * (a dying io_uring user's files are released by a worker later).
 */
static int watch_peer_process(struct cmesh__link *l)
{
	int r;

	l->pidfd = peer_pidfd(l, !l->pid_from_fork);
	if (l->pidfd < 0)
		return 0; /* the socket alone: no pidfd (old kernel, unknown) */
	r = cmesh__wake_add(l->wake, l->pidfd, POLLIN, on_pidfd, l);
	if (!r)
		l->pidfd_watched = true;
	return r;
}

/*
 * The link thread: every signal blocked (the application's handlers run
 * on its own threads, and no signal interrupts the loop) and named, so
 * that a VMM's operator sees whose thread it is.
 */
static int start_thread(struct cmesh__link *l)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&l->thread, NULL, link_thread, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return -r;
	pthread_setname_np(l->thread, "cmesh-link");
	return 0;
}

/*
 * The fds a link's ATTACH FIFO may hold: an eighth of this process's fd
 * table (RLIMIT_NOFILE), at least one full ATTACH, at most 4096. A peer
 * gets no further ahead of our receiver than that (throttle()), so one
 * link cannot take the fds that other links and the application need.
 */
static uint32_t budget_for(void)
{
	struct rlimit rl;
	uint64_t b = 4096;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur / 8 < b)
		b = rl.rlim_cur / 8;
	return b < ATTACH_MAX_FDS ? ATTACH_MAX_FDS : (uint32_t)b;
}

static int start(struct cmesh__link *l)
{
	int r, fl = fcntl(l->sock, F_GETFL);

	if (fl < 0 || fcntl(l->sock, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	l->kick_efd = cmesh__eventfd_new();
	if (l->kick_efd < 0)
		return l->kick_efd;
	r = cmesh__wake_new_default(&l->wake);
	if (r)
		return r;
	r = cmesh__wake_add(l->wake, l->sock, POLLIN | POLLRDHUP, on_sock, l);
	if (r)
		return r;
	l->sock_watched = true;
	l->sock_events = POLLIN | POLLRDHUP;
	r = cmesh__wake_add(l->wake, l->kick_efd, POLLIN, on_kick, l);
	if (r)
		return r;
	r = watch_peer_process(l);
	if (r)
		return r;
	r = start_thread(l);
	if (r)
		return r;
	l->thread_started = true;
	return 0;
}

int cmesh__link_new(int sock, const cmesh_type *out_type,
		    const cmesh_type *in_type,
		    const struct cmesh__link_opts *opts,
		    struct cmesh__link **out)
{
	struct cmesh__link *l;
	pid_t pid = 0;
	int r;

	l = calloc(1, sizeof(*l));
	if (!l) {
		close(sock);
		return -ENOMEM;
	}
	l->sock = sock;
	l->kick_efd = -1;
	l->pidfd = -1;
	l->fd_budget = budget_for();
	l->ctl_tailp = &l->ctl_head;
	atomic_init(&l->refs, 1);
	/* Before anything can fail: free_resources() closes these. */
	l->in.efd = l->in.wake_sock = l->in.peer_wake_sock = -1;
	l->out.efd = l->out.wake_sock = l->out.peer_wake_sock = -1;
	if (pthread_mutex_init(&l->att_lock, NULL)) {
		close(sock);
		free(l);
		return -ENOMEM;
	}
	if (pthread_mutex_init(&l->orphan_lock, NULL)) {
		pthread_mutex_destroy(&l->att_lock);
		close(sock);
		free(l);
		return -ENOMEM;
	}
	if (cmesh__wakes_init(l)) {
		pthread_mutex_destroy(&l->orphan_lock);
		pthread_mutex_destroy(&l->att_lock);
		close(sock);
		free(l);
		return -ENOMEM;
	}
	r = cmesh__lane_init(&l->out, l, out_type, opts->max_trail,
			     opts->max_backlog, 0);
	if (!r)
		r = cmesh__lane_init(&l->in, l, in_type, opts->max_trail, 0,
				     opts->spin_ns);
	if (!r && opts->peer_pid > 0) {
		l->peer_pid = opts->peer_pid;
		l->pid_known = true;
		l->pid_from_fork = true;
	} else if (!r && !opts->expect_proc) {
		/*
		 * Trusted only where the caller says the socket's SO_PEERCRED
		 * names the peer (see node.c); else the HELLO's word is shown
		 * by cmesh_node_pid() and nothing watches the process. An
		 * introduced link's names the introducer: the HELLO's word.
		 */
		r = peer_pid(sock, &pid);
		l->peer_pid = pid;
		l->pid_known = opts->cred_is_peer && pid > 0 && pid != getpid();
	}
	if (!r)
		r = handshake(l, out_type, in_type, opts);
	if (!r)
		r = start(l);
	if (r) {
		cmesh__log(CMESH__LOG_INFO, "join failed: %s",
			   cmesh_strerror(r));
		link_destroy(l);
		return r;
	}
	cmesh__log(CMESH__LOG_INFO, "linked to pid %d, link thread on %s",
		   (int)l->peer_pid,
		   cmesh__wake_backend(l->wake) == CMESH_WAKE_URING ?
			   "io_uring" :
			   "epoll");
	cmesh__reg_add(&l->reg, l);
	*out = l;
	return 0;
}

void cmesh__link_get(struct cmesh__link *l)
{
	atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

bool cmesh__link_tryget(struct cmesh__link *l)
{
	uint32_t r = atomic_load_explicit(&l->refs, memory_order_relaxed);

	do {
		if (!r)
			return false; /* being torn down: no new holder */
	} while (!atomic_compare_exchange_weak_explicit(&l->refs, &r, r + 1,
							memory_order_relaxed,
							memory_order_relaxed));
	return true;
}

void cmesh__link_put(struct cmesh__link *l)
{
	/* seq_cst: see cmesh__link_hook_add() (Dekker on refs, nhooks). */
	uint32_t left =
		atomic_fetch_sub_explicit(&l->refs, 1, memory_order_seq_cst) -
		1;

	if (left) {
		/*
		 * Only holders that keep something idle are left (kept rpc
		 * calls, link_hook.c): nobody can use the link any more, so
		 * its thread takes back what they keep and it goes.
		 */
		if (left ==
		    atomic_load_explicit(&l->nhooks, memory_order_seq_cst)) {
			atomic_store_explicit(&l->holders_only, true,
					      memory_order_seq_cst);
			cmesh__link_kick(l);
		}
		return;
	}
	cmesh__reg_del(&l->reg); /* no longer the application's */
	/*
	 * Sends that returned 0 are still in the spill backlog: they must
	 * not be lost because their sender was freed. The link thread
	 * delivers them, then frees the link itself. So it does when the
	 * last reference goes on the link thread (a context the peer gave
	 * us, released there): it cannot join itself.
	 */
	if (l->thread_started &&
	    (pthread_equal(pthread_self(), l->thread) ||
	     (cmesh__lanes_spilling(l) && !cmesh__link_failed(l)))) {
		pthread_mutex_lock(&l->orphan_lock);
		atomic_store_explicit(&l->orphan, true, memory_order_release);
		cmesh__link_kick(l);
		pthread_mutex_unlock(&l->orphan_lock);
		return;
	}
	link_destroy(l);
}

struct cmesh__arena *cmesh__link_own_arena(struct cmesh__link *l)
{
	return l->own;
}
