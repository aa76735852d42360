/* SPDX-License-Identifier: MIT */
/*
 * link.c - a connection to one peer process: its making (the handshake,
 * link_hello.c, then its thread, link_thread.c), its references and
 * lifetime, and its failure.
 *
 * A link whose last reference goes while its spill backlog still holds
 * sends that returned 0 (or on its own thread) is orphaned: its thread
 * delivers them, then frees it. A failure (-ECONNRESET, -EPROTO, -EMFILE)
 * tells the peer (our socket's write side shut down), wakes every
 * receiver and ends the contexts the peer gave us; its thread gives back
 * what hooks keep.
 */
#include "link.h"
#include "link_int.h"

#include "arena.h"
#include "lane.h"
#include "log.h"
#include "wake.h"

#include <cmesh/error.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
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
	cmesh__link_free_resources(l);
}

void cmesh__link_free_resources(struct cmesh__link *l)
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

/*
 * The fds a link's ATTACH FIFO may hold: an eighth of this process's fd
 * table (RLIMIT_NOFILE), at least one full ATTACH, at most 4096. A peer
 * gets no further ahead of our receiver than that (link_thread.c's
 * throttle()), so one link cannot take the fds that other links and the
 * application need.
 */
static uint32_t budget_for(void)
{
	struct rlimit rl;
	uint64_t b = 4096;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur / 8 < b)
		b = rl.rlim_cur / 8;
	return b < ATTACH_MAX_FDS ? ATTACH_MAX_FDS : (uint32_t)b;
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
	/* Before anything can fail: closed by cmesh__link_free_resources(). */
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
		r = cmesh__link_handshake(l, out_type, in_type, opts);
	if (!r)
		r = cmesh__link_start(l);
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
