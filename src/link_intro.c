/* SPDX-License-Identifier: MIT */
/*
 * link_intro.c - introductions: a process linked with two others links
 * them with each other, so that an endpoint it sends on may claim its
 * peer (link_claim.c) from a process that had no link with that peer's.
 *
 * The introducer (cmesh__link_introduce, from the port layer, before the
 * ATTACH of the message that carries the forwarded port) makes a
 * SOCK_SEQPACKET socketpair and sends one end on the link the port goes
 * over, straight on the socket (so it comes before that ATTACH), in an
 * INTRO naming the peer process; the other end goes to that process in an
 * INTRO naming the first (queued in order, never lost while the link
 * lives). Introductions are sent one at a time in the process (intro_lock
 * around both), so two links see them in one order (none is sent straight
 * while dest has control messages queued). It remembers the last
 * INTRO_KNOWN processes it introduced each link's peer to, and introduces
 * no pair twice in that window.
 *
 * An INTRO's receiver (the link thread, cmesh__intro_on_ctl) checks it,
 * and closes the socket if it has a link with that process already or
 * holds INTRO_LINKS_MAX introduced links; else it joins a link over it
 * there and then, on that thread, which therefore reads nothing else
 * (the port that needs the link included) until the HELLO exchange ends:
 * the importer finds the link when it reads the port. The exchange waits
 * at most INTRO_HANDSHAKE_NS for a process that does not answer; that
 * holds up only the introducer's link. The link has the internal type
 * below both ways and nobody holds its first channels; the other process
 * must say, in its HELLO, the name the INTRO gave (-EPROTO, before the
 * link can be found). The introduction holds the link until it fails (its
 * peer exits, dies or breaks it: its socket's hang-up; no pidfd, the
 * process is the introducer's word): an idle introduced link stays up.
 *
 * Nothing marks a handshake under way: two introductions of one pair at
 * once (two introducers) may leave two links, each kept until it fails;
 * either serves.
 *
 * intro_lock is taken before a link's att_lock, never under one; a child
 * of fork forgets the parent's count of introduced links.
 */
#include "link_int.h"

#include "env.h"
#include "log.h"

#include "proto.h"

#include <cmesh/error.h>

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Introduced links a process keeps. */
#define INTRO_LINKS_MAX 64u
/* How long an introduced link's HELLO exchange may take. */
#define INTRO_HANDSHAKE_NS 1000000000ll
/* An introduced link's own rings: the first channels carry nothing. */
#define INTRO_RING CMESH__RING_SIZE_MIN

static_assert(sizeof(struct cmesh_ctl_intro) <=
		      sizeof(((struct ctl_pending *)0)->buf),
	      "an INTRO fits a pending control message");

/* The first channels' type of an introduced link: never sent on. */
struct intro_first {
	uint8_t unused;
};
CMESH_TYPE_DEFINE_PLAIN(intro_type, struct intro_first);

static pthread_mutex_t intro_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t nlinks; /* introduced links: intro_lock */
static pthread_once_t intro_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
	pthread_mutex_lock(&intro_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&intro_lock);
}

static void fork_child(void)
{
	nlinks = 0; /* the parent's, not ours */
	pthread_mutex_unlock(&intro_lock);
}

static void intro_init(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

const cmesh_type *cmesh__intro_type(void)
{
	return &intro_type;
}

/* ---- the introducer ---- */

/* intro_lock held: whether `dest` was introduced to `proc` lately. */
static bool known(const struct cmesh__link *dest, uint64_t proc)
{
	uint32_t n = dest->nintroduced < INTRO_KNOWN ? dest->nintroduced :
						       INTRO_KNOWN;

	for (uint32_t i = 0; i < n; i++)
		if (dest->introduced[i] == proc)
			return true;
	return false;
}

void cmesh__link_introduce(struct cmesh__link *dest, uint64_t proc)
{
	struct cmesh_ctl_intro m = { 0 };
	struct cmesh__link *x;
	int sv[2], r;

	if (!proc || proc == dest->peer_proc || proc == dest->own_proc ||
	    dest->own_proc != cmesh__proc_id())
		return;
	pthread_once(&intro_once, intro_init);
	x = cmesh__link_by_proc(proc);
	if (!x)
		return; /* not linked with it either: nothing to introduce */
	pthread_mutex_lock(&intro_lock);
	/*
	 * An INTRO waiting in dest's queue (ours, under this lock) would come
	 * after the one we send straight: two links could see two
	 * introductions in two orders, and each side's link thread wait for
	 * the other's. Not now, then.
	 */
	if (known(dest, proc) ||
	    atomic_load_explicit(&dest->ctl_pending, memory_order_relaxed) ||
	    /* Queued behind others there, it would keep dest waiting. */
	    atomic_load_explicit(&x->ctl_pending, memory_order_relaxed) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		pthread_mutex_unlock(&intro_lock);
		cmesh__link_put(x);
		return;
	}
	/* Tried once in the window, whatever comes of it. */
	dest->introduced[dest->nintroduced++ % INTRO_KNOWN] = proc;
	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_INTRO, sizeof(m));
	m.proc = proc;
	/* Straight on the socket: before the ATTACH that follows. */
	r = cmesh__ctl_send_nb(dest->sock, &m, sizeof(m), &sv[1], 1);
	close(sv[1]);
	if (r) {
		/* Full (no introduction then) or broken (the thread sees it). */
		close(sv[0]);
	} else {
		m.proc = dest->peer_proc;
		cmesh__lanes_ctl_send(x, &m, sizeof(m), sv[0]); /* takes it */
	}
	pthread_mutex_unlock(&intro_lock);
	cmesh__link_put(x);
	if (!r)
		cmesh__log(CMESH__LOG_DEBUG, "introduced %016llx to %016llx",
			   (unsigned long long)dest->peer_proc,
			   (unsigned long long)proc);
}

/* ---- the introduced ---- */

/* Link thread of `from`: joins a link over `sock` (taken) with `proc`. */
static void introduced(struct cmesh__link *from, uint64_t proc, int sock)
{
	struct cmesh__link_opts lo = { 0 };
	struct cmesh__link *l;
	const cmesh_env *env;
	bool room;
	int r;

	pthread_once(&intro_once, intro_init);
	/* Going (or gone): no handshake holds up its teardown. */
	if (atomic_load_explicit(&from->stop, memory_order_acquire) ||
	    cmesh__link_failed(from)) {
		close(sock);
		return;
	}
	l = cmesh__link_by_proc(proc);
	if (l) {
		cmesh__link_put(l);
		close(sock); /* linked already: its other end sees it closed */
		return;
	}
	pthread_mutex_lock(&intro_lock);
	room = nlinks < INTRO_LINKS_MAX;
	if (room)
		nlinks++;
	pthread_mutex_unlock(&intro_lock);
	r = room ? cmesh__env_get(&env) : -ENOSPC;
	if (r) {
		close(sock);
	} else {
		lo.ring_cap = INTRO_RING;
		lo.spin_ns = env->spin_ns;
		lo.max_trail = env->max_message;
		lo.max_backlog = env->max_backlog;
		lo.deadline = cmesh_clock_now() + INTRO_HANDSHAKE_NS;
		lo.cancel_fd = -1;
		lo.expect_proc = proc;
		r = cmesh__link_new(sock, &intro_type, &intro_type, &lo, &l);
	}
	if (!r) {
		/*
		 * Its reference is the introduction's from now on, which its
		 * thread may drop at once (a failure it saw before looks
		 * again at the kick): ours holds it meanwhile.
		 */
		cmesh__link_get(l);
		atomic_store(&l->intro_held, true);
		cmesh__link_kick(l);
		cmesh__link_put(l);
	}
	if (r && room) {
		pthread_mutex_lock(&intro_lock);
		nlinks--;
		pthread_mutex_unlock(&intro_lock);
	}
	if (r)
		cmesh__log(CMESH__LOG_INFO, "introduction to %016llx: %s",
			   (unsigned long long)proc, cmesh_strerror(r));
}

int cmesh__intro_on_ctl(struct cmesh__link *l, const unsigned char *buf,
			int len, const int *fds, uint32_t nfds)
{
	struct cmesh_ctl_intro m;

	if (len != (int)sizeof(m) || nfds != 1)
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	if (m.hdr.len != sizeof(m) || m.hdr.reserved || !m.proc ||
	    m.proc == l->own_proc || m.proc == l->peer_proc ||
	    !cmesh__ctl_is_unix(fds[0], SOCK_SEQPACKET))
		return -EPROTO;
	/* A child of fork does not act on its parent's links. */
	if (l->own_proc != cmesh__proc_id()) {
		close(fds[0]);
		return 0;
	}
	introduced(l, m.proc, fds[0]);
	return 0;
}

void cmesh__intro_release(struct cmesh__link *l)
{
	if (!atomic_load_explicit(&l->intro_held, memory_order_relaxed) ||
	    !atomic_exchange(&l->intro_held, false))
		return;
	pthread_mutex_lock(&intro_lock);
	nlinks--;
	pthread_mutex_unlock(&intro_lock);
	cmesh__link_put(l); /* on the link thread: it frees the link itself */
}
