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
 * lives). It remembers the last INTRO_KNOWN processes it introduced each
 * link to, and introduces no pair twice in that window.
 *
 * An INTRO's receiver (the link thread, cmesh__intro_on_ctl) checks it,
 * and closes the socket if it has a link with that process already, is
 * introducing itself to it at the moment, or holds INTRO_LINKS_MAX
 * introduced links; else it notes the introduction as pending and joins a
 * link over the socket on a thread of its own (the HELLO exchange may
 * wait for the other process: never on a link thread). The link has the
 * internal type below both ways and nobody holds its first channels; the
 * other process must say, in its HELLO, the name the introducer gave
 * (-EPROTO: the link fails). The introduction holds one reference on it
 * until it fails (its peer exits, dies or breaks it): an idle introduced
 * link stays up until then.
 *
 * A claim for a process with a pending introduction waits for it, up to
 * its handshake's deadline (cmesh__link_by_proc_wait): the INTRO came
 * before the port that needs it, so the wait starts after it was noted.
 *
 * intro_lock is a leaf; a child of fork forgets the parent's pending
 * introductions (their threads are not its own) and its links' count.
 */
#include "link_int.h"

#include "env.h"
#include "log.h"

#include "proto.h"

#include <cmesh/error.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Introductions being joined at once, per process. */
#define INTRO_PENDING_MAX 8u
/* Introduced links a process keeps (pending ones included). */
#define INTRO_LINKS_MAX 64u
/* How long an introduced link's HELLO exchange may take. */
#define INTRO_HANDSHAKE_NS 2000000000ll
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

struct pending {
	uint64_t proc;	  /* the process being linked; 0: a free slot */
	int64_t deadline; /* its HELLO exchange ends by then */
};

static pthread_mutex_t intro_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t intro_cond;		  /* intro_lock */
static struct pending pending[INTRO_PENDING_MAX]; /* intro_lock */
static uint32_t nlinks; /* introduced links, pending too: intro_lock */
static pthread_once_t intro_once = PTHREAD_ONCE_INIT;

static void cond_init(void)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&intro_cond, &a);
	pthread_condattr_destroy(&a);
}

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
	memset(pending, 0, sizeof(pending));
	nlinks = 0;
	cond_init(); /* no waiter of the parent's is ours */
	pthread_mutex_unlock(&intro_lock);
}

static void intro_init(void)
{
	cond_init();
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* intro_lock held: the pending slot of `proc`, or -1. */
static int pending_find(uint64_t proc)
{
	for (uint32_t i = 0; i < INTRO_PENDING_MAX; i++)
		if (pending[i].proc == proc)
			return (int)i;
	return -1;
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
	bool seen;

	if (!proc || proc == dest->peer_proc || proc == dest->own_proc ||
	    dest->own_proc != cmesh__proc_id())
		return;
	pthread_once(&intro_once, intro_init);
	pthread_mutex_lock(&intro_lock);
	seen = known(dest, proc);
	pthread_mutex_unlock(&intro_lock);
	if (seen)
		return;
	x = cmesh__link_by_proc(proc);
	if (!x)
		return; /* not linked with it either: nothing to introduce */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		cmesh__link_put(x);
		return;
	}
	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_INTRO, sizeof(m));
	m.proc = proc;
	/* Straight on the socket: before the ATTACH that follows. */
	r = cmesh__ctl_send(dest->sock, &m, sizeof(m), &sv[1], 1);
	close(sv[1]);
	if (r) {
		/* Full (no introduction then) or broken (the thread sees it). */
		close(sv[0]);
		cmesh__link_put(x);
		return;
	}
	m.proc = dest->peer_proc;
	cmesh__lanes_ctl_send(x, &m, sizeof(m), sv[0]); /* takes sv[0] */
	cmesh__link_put(x);
	pthread_mutex_lock(&intro_lock);
	if (!known(dest, proc))
		dest->introduced[dest->nintroduced++ % INTRO_KNOWN] = proc;
	pthread_mutex_unlock(&intro_lock);
	cmesh__log(CMESH__LOG_DEBUG, "introduced %016llx to %016llx",
		   (unsigned long long)dest->peer_proc,
		   (unsigned long long)proc);
}

/* ---- the introduced ---- */

struct job {
	int sock;
	uint64_t proc;
	int64_t deadline;
};

/* Ends the pending introduction of `proc`; `linked`: it holds a link. */
static void pending_end(uint64_t proc, bool linked)
{
	int i;

	pthread_mutex_lock(&intro_lock);
	i = pending_find(proc);
	if (i >= 0)
		pending[i].proc = 0;
	if (!linked)
		nlinks--;
	pthread_cond_broadcast(&intro_cond);
	pthread_mutex_unlock(&intro_lock);
}

static void *join_thread(void *arg)
{
	struct job *j = arg;
	struct cmesh__link_opts lo = { 0 };
	struct cmesh__link *l = NULL;
	const cmesh_env *env;
	int r;

	r = cmesh__env_get(&env);
	if (r) {
		close(j->sock);
	} else {
		lo.ring_cap = INTRO_RING;
		lo.spin_ns = env->spin_ns;
		lo.max_trail = env->max_message;
		lo.max_backlog = env->max_backlog;
		lo.deadline = j->deadline;
		lo.cancel_fd = -1;
		/* SO_PEERCRED names the introducer, not the peer. */
		r = cmesh__link_new(j->sock, &intro_type, &intro_type, &lo, &l);
	}
	if (!r && cmesh__link_peer_proc(l) != j->proc) {
		/* Not the process we were told of. */
		cmesh__link_fail(l, -EPROTO);
		cmesh__link_put(l);
		r = -EPROTO;
	}
	if (!r) {
		/* seq_cst: against the thread's look at a failure. */
		atomic_store(&l->intro_held, true);
		/* A failure it saw before: it looks again. */
		cmesh__link_kick(l);
	} else {
		cmesh__log(CMESH__LOG_INFO, "introduction to %016llx: %s",
			   (unsigned long long)j->proc, cmesh_strerror(r));
	}
	pending_end(j->proc, !r);
	free(j);
	return NULL;
}

/* Whether `fd` is a unix SOCK_SEQPACKET socket. */
static bool is_seqpacket(int fd)
{
	int type = 0, domain = 0;
	socklen_t len = sizeof(int);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) ||
	    len != sizeof(int))
		return false;
	len = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) ||
	    len != sizeof(int))
		return false;
	return type == SOCK_SEQPACKET && domain == AF_UNIX;
}

/* Link thread: joins a link over `sock` (taken) with process `proc`. */
static void introduced(uint64_t proc, int sock)
{
	struct cmesh__link *have;
	struct job *j = NULL;
	pthread_t t;
	sigset_t all, old;
	int slot = -1;

	pthread_once(&intro_once, intro_init);
	have = cmesh__link_by_proc(proc);
	if (have) {
		cmesh__link_put(have);
		close(sock); /* linked already: its other end sees it closed */
		return;
	}
	pthread_mutex_lock(&intro_lock);
	if (pending_find(proc) < 0 && nlinks < INTRO_LINKS_MAX)
		slot = pending_find(0);
	if (slot >= 0) {
		pending[slot].proc = proc;
		pending[slot].deadline = cmesh_clock_now() + INTRO_HANDSHAKE_NS;
		nlinks++;
	}
	pthread_mutex_unlock(&intro_lock);
	if (slot < 0) {
		cmesh__log(CMESH__LOG_DEBUG,
			   "introduction to %016llx: one is under way, or "
			   "too many",
			   (unsigned long long)proc);
		close(sock);
		return;
	}
	j = malloc(sizeof(*j));
	if (j) {
		int r;

		*j = (struct job){ sock, proc, pending[slot].deadline };
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		r = pthread_create(&t, NULL, join_thread, j);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!r) {
			pthread_detach(t);
			return;
		}
		free(j);
	}
	close(sock);
	pending_end(proc, false);
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
	    !is_seqpacket(fds[0]))
		return -EPROTO;
	/* A child of fork does not act on its parent's links. */
	if (l->own_proc != cmesh__proc_id()) {
		close(fds[0]);
		return 0;
	}
	introduced(m.proc, fds[0]);
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

struct cmesh__link *cmesh__link_by_proc_wait(uint64_t proc)
{
	struct cmesh__link *l = cmesh__link_by_proc(proc);
	int i;

	if (l || !proc)
		return l;
	pthread_once(&intro_once, intro_init);
	pthread_mutex_lock(&intro_lock);
	while ((i = pending_find(proc)) >= 0) {
		int64_t d = pending[i].deadline;
		struct timespec ts = { (time_t)(d / 1000000000ll),
				       (long)(d % 1000000000ll) };

		if (cmesh_clock_now() >= d)
			break;
		pthread_cond_timedwait(&intro_cond, &intro_lock, &ts);
	}
	pthread_mutex_unlock(&intro_lock);
	return cmesh__link_by_proc(proc);
}
