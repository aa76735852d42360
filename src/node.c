/* SPDX-License-Identifier: MIT */
/*
 * node.c - the public node API: joining over a socket, spawn/join,
 * listen/accept/connect. Everything funnels into cmesh_node_join_socket().
 */
#include "node.h"

#include "cancel.h"
#include "ctl.h"
#include "endpoint.h"
#include "env.h"
#include "lane.h"
#include "link.h"
#include "opts.h"
#include "queue.h"
#include "reg.h"

#include <cmesh/env.h>
#include <cmesh/error.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_NS 10000000000LL

extern char **environ;

struct cmesh_node {
	struct cmesh__link *link;
};

struct cmesh__link *cmesh__node_link(cmesh_node *node)
{
	return node->link;
}

/*
 * The caller's options, checked, as the link's and the queues'; the
 * context in *ctx (NULL: none): an ended one fails here. lo->deadline is
 * the handshake's own limit; the callers fold the context's deadline in
 * (cmesh__node_ctx_deadline()) where they wait.
 */
/* The earlier of `deadline` and the context's (NULL: none). */
int64_t cmesh__node_ctx_deadline(const cmesh_ctx *ctx, int64_t deadline)
{
	return ctx && cmesh_ctx_deadline(ctx) < deadline ?
		       cmesh_ctx_deadline(ctx) :
		       deadline;
}

int cmesh__node_opts(const cmesh_node_opts *user, uint32_t flags_ok,
		     struct cmesh__link_opts *lo, struct cmesh__queue_opts *qo,
		     const cmesh_ctx **ctx)
{
	const cmesh_env *env;
	cmesh_node_opts o;
	uint64_t ring;
	int r;

	memset(lo, 0, sizeof(*lo));
	r = cmesh__opts_copy(&o, sizeof(o), user);
	if (!r)
		r = cmesh__env_get(&env);
	if (r)
		return r;
	if ((o.flags & ~flags_ok) || o.reserved || o.reserved2 ||
	    o.timeout_ns < 0 || o.peer_pid < 0)
		return -EINVAL;
	memset(qo, 0, sizeof(*qo));
	r = cmesh__opts_ring_size(o.ring_size, env, &ring);
	if (!r)
		r = cmesh__opts_spin(o.spin_ns, env, &qo->spin_ns);
	if (r)
		return r;
	qo->max_trail = env->max_message;
	lo->ring_cap = (uint32_t)ring;
	lo->spin_ns = qo->spin_ns;
	lo->max_trail = env->max_message;
	lo->deadline = cmesh_deadline_after(o.timeout_ns ? o.timeout_ns :
							   DEFAULT_TIMEOUT_NS);
	lo->cancel_fd = -1;
	*ctx = o.ctx;
	if (o.ctx) {
		r = cmesh_ctx_check(o.ctx);
		if (r)
			return r;
	}
	lo->peer_pid = o.peer_pid;
	r = cmesh__opts_max_backlog(o.max_backlog, env, &lo->max_backlog);
	if (r)
		return r;
	qo->max_backlog = lo->max_backlog;
	return 0;
}

/*
 * cmesh_node_join_socket(), with the peer's pid when the caller forked it
 * (`child`), or with `cred_is_peer` when the socket's SO_PEERCRED names
 * the peer (an accepted socket: the process that connected; a spawned
 * child's invitation, made by the cmesh_spawn() caller, which joins it):
 * the link then watches that process too. A socketpair's SO_PEERCRED names
 * whoever made the pair, which need not be the peer (a supervisor that
 * forked both sides); a connected client's names whoever called listen().
 */
int cmesh__node_join(int sock, const cmesh_type *out_type,
		     const cmesh_type *in_type, const cmesh_node_opts *opts,
		     pid_t child, bool cred_is_peer, cmesh_node **out_node,
		     cmesh_sender **out_tx, cmesh_receiver **out_rx)
{
	struct cmesh__queue_opts qo;
	struct cmesh__link_opts lo;
	struct cmesh__ctx_fd cf;
	struct cmesh__link *link;
	const cmesh_ctx *ctx;
	cmesh_node *node;
	int r = -EINVAL;

	if (sock < 0)
		return -EINVAL;
	if (!out_node || !out_tx || !out_rx || cmesh_type_check(out_type) ||
	    cmesh_type_check(in_type))
		goto out_close;
	r = cmesh__node_opts(opts, child > 0 ? CMESH_NODE_PDEATHSIG : 0, &lo,
			     &qo, &ctx);
	if (r)
		goto out_close;
	if (child > 0)
		lo.peer_pid = child;
	lo.cred_is_peer = cred_is_peer;
	node = malloc(sizeof(*node));
	if (!node) {
		r = -ENOMEM;
		goto out_close;
	}
	r = cmesh__ctx_fd_open(ctx, &cf);
	if (r)
		goto out_free_node_close;
	lo.cancel_fd = cf.fd;
	lo.deadline = cmesh__node_ctx_deadline(ctx, lo.deadline);
	r = cmesh__link_new(sock, out_type, in_type, &lo, &link);
	cmesh__ctx_fd_close(&cf);
	if (r)
		goto out_free_node;
	r = cmesh__endpoint_remote_pair(out_type, in_type,
					cmesh__link_out(link),
					cmesh__link_in(link), &qo, out_tx,
					out_rx);
	if (r) {
		cmesh__link_put(link);
		goto out_free_node;
	}
	node->link = link;
	*out_node = node;
	return 0;

out_free_node:
	free(node);
	return r;
out_free_node_close:
	free(node);
out_close:
	close(sock);
	return r;
}

int cmesh_node_join_socket(int sock, const cmesh_type *out_type,
			   const cmesh_type *in_type,
			   const cmesh_node_opts *opts, cmesh_node **out_node,
			   cmesh_sender **out_tx, cmesh_receiver **out_rx)
{
	return cmesh__node_join(sock, out_type, in_type, opts, 0, false,
				out_node, out_tx, out_rx);
}

pid_t cmesh_node_pid(const cmesh_node *node)
{
	return node ? cmesh__link_peer_pid(node->link) : -1;
}

int cmesh_node_stats_get(const cmesh_node *node, cmesh_node_stats *out)
{
	cmesh_node_stats s = { 0 };

	if (!node || !out)
		return -EINVAL;
	cmesh__link_stats(node->link, &s);
	return cmesh__opts_out(out, offsetof(cmesh_node_stats, wake_backend),
			       &s, sizeof(s));
}

int cmesh_node_flush(cmesh_node *node, int64_t deadline)
{
	if (!node)
		return -EINVAL;
	return cmesh__link_flush(node->link, deadline);
}

int cmesh_node_flush_ctx(cmesh_node *node, const cmesh_ctx *ctx)
{
	struct cmesh__ctx_scope sc;
	int r;

	if (!node)
		return -EINVAL;
	r = cmesh__link_flush(node->link,
			      cmesh__ctx_begin(ctx, CMESH_DEADLINE_NONE, &sc));
	cmesh__ctx_end(&sc);
	return r;
}

/* Ends the link for good and frees `node`; returns `r` (the flush's). */
static int close_link(cmesh_node *node, int r)
{
	/* Ours, not the peer's: the thread drops the backlog and leaves. */
	cmesh__link_fail(node->link, -ECONNRESET);
	cmesh_node_free(node);
	return r;
}

int cmesh_node_close(cmesh_node *node, int64_t deadline)
{
	if (!node)
		return -EINVAL;
	return close_link(node, cmesh_node_flush(node, deadline));
}

int cmesh_node_close_ctx(cmesh_node *node, const cmesh_ctx *ctx)
{
	if (!node)
		return -EINVAL;
	return close_link(node,
			  ctx ? cmesh_node_flush_ctx(node, ctx) : -EINVAL);
}

void cmesh_node_free(cmesh_node *node)
{
	if (!node)
		return;
	cmesh__link_put(node->link);
	free(node);
}

/* ---- spawn / join ---- */

/* environ plus CMESH_INVITE=fd, built before fork (no allocation after). */
static char **invite_env(int fd, char *buf, size_t len)
{
	size_t n = 0, k = 0;
	char **envp;

	while (environ && environ[n])
		n++;
	envp = calloc(n + 2, sizeof(*envp));
	if (!envp)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], CMESH_INVITE_ENV "=",
			    sizeof(CMESH_INVITE_ENV)) != 0)
			envp[k++] = environ[i];
	snprintf(buf, len, "%s=%d", CMESH_INVITE_ENV, fd);
	envp[k++] = buf;
	envp[k] = NULL;
	return envp;
}

/* The spawn-only flags of `opts` (the rest is checked by the join). */
static int spawn_flags(const cmesh_node_opts *opts, bool *pdeath,
		       int **exit_status)
{
	cmesh_node_opts o;
	int r = cmesh__opts_copy(&o, sizeof(o), opts);

	if (r)
		return r;
	if (o.flags & ~CMESH_NODE_PDEATHSIG)
		return -EINVAL;
	*pdeath = o.flags & CMESH_NODE_PDEATHSIG;
	*exit_status = o.exit_status;
	if (o.exit_status)
		*o.exit_status = -1;
	return 0;
}

/*
 * In the forked child, before exec (async-signal-safe calls only): every
 * fd but 0-2 and `keep` close-on-exec, `keep` not; an empty signal mask;
 * every disposition the default (exec keeps ignored ones); the parent-
 * death signal if asked. Returns 0, or -1 if the child should not exec.
 */
static int child_start_clean(int keep, bool pdeath, pid_t parent)
{
	struct sigaction dfl;
	sigset_t none;

	/* Every signal is blocked (see cmesh_spawn): no parent handler runs
	 * here before the dispositions are back to their defaults. */
	if (pdeath && (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent))
		return -1; /* the spawning process is gone already */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);
	if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC)) {
		struct rlimit rl;
		rlim_t max = 1u << 20;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < max)
			max = rl.rlim_cur;
		for (rlim_t fd = 3; fd < max; fd++)
			if ((int)fd != keep)
				close((int)fd);
	}
	if (fcntl(keep, F_SETFD, 0))
		return -1;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	return 0;
}

int cmesh_spawn(const char *path, char *const argv[],
		const cmesh_type *out_type, const cmesh_type *in_type,
		const cmesh_node_opts *opts, cmesh_node **out_node,
		cmesh_sender **out_tx, cmesh_receiver **out_rx)
{
	char invite[64], **envp;
	int sv[2], r, status = 0, *exit_status = NULL;
	pid_t pid, parent = getpid();
	sigset_t all, old_mask;
	bool pdeath = false;

	if (!path || !argv || !out_node || !out_tx || !out_rx)
		return -EINVAL;
	r = spawn_flags(opts, &pdeath, &exit_status);
	if (!r) { /* options and an ended context: before the fork */
		struct cmesh__queue_opts qo;
		struct cmesh__link_opts lo;
		const cmesh_ctx *ctx;

		r = cmesh__node_opts(opts, CMESH_NODE_PDEATHSIG, &lo, &qo,
				     &ctx);
	}
	if (r)
		return r;
	if (access(path, X_OK))
		return -errno;
	r = cmesh__ctl_socketpair(sv);
	if (r)
		return r;
	envp = invite_env(sv[1], invite, sizeof(invite));
	if (!envp) {
		r = -ENOMEM;
		goto out_close;
	}
	/* Block every signal across fork: the child resets them first. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old_mask);
	pid = fork();
	if (pid != 0)
		pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	if (pid < 0) {
		r = -errno;
		free(envp);
		goto out_close;
	}
	if (pid == 0) {
		/* Child: async-signal-safe calls only. */
		close(sv[0]);
		if (child_start_clean(sv[1], pdeath, parent) == 0)
			execve(path, argv, envp);
		_exit(127);
	}
	free(envp);
	close(sv[1]);
	r = cmesh__node_join(sv[0], out_type, in_type, opts, pid, false,
			     out_node, out_tx, out_rx);
	if (r) {
		/*
		 * Never leave a half-joined child behind. SIGKILL does not
		 * change the status of a child already exiting: one whose
		 * exec failed still reads as exit 127.
		 */
		pid_t w;

		kill(pid, SIGKILL);
		while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
			;
		if (w == pid && WIFEXITED(status) &&
		    WEXITSTATUS(status) == 127) {
			r = -ENOEXEC;
		} else if (w == pid && (WIFEXITED(status) ||
					(WIFSIGNALED(status) &&
					 WTERMSIG(status) != SIGKILL))) {
			/* It ended by itself: say how. */
			r = -ECHILD;
			if (exit_status)
				*exit_status = status;
		}
	}
	return r;

out_close:
	close(sv[0]);
	close(sv[1]);
	return r;
}

int cmesh_join(const cmesh_type *out_type, const cmesh_type *in_type,
	       const cmesh_node_opts *opts, cmesh_node **out_node,
	       cmesh_sender **out_tx, cmesh_receiver **out_rx)
{
	const char *s = getenv(CMESH_INVITE_ENV);
	struct stat st;
	char *end;
	long fd;
	int type, r;
	socklen_t len = sizeof(type);
	struct cmesh__queue_opts qo;
	struct cmesh__link_opts lo;
	const cmesh_ctx *ctx;

	if (!out_node || !out_tx || !out_rx)
		return -EINVAL;
	if (!s)
		return -ENOENT;
	/* Options and an ended context: before the invitation is taken. */
	r = cmesh__node_opts(opts, 0, &lo, &qo, &ctx);
	if (r)
		return r;
	fd = strtol(s, &end, 10);
	if (*s < '0' || *s > '9' || *end || fd > 1 << 20)
		return -EINVAL;
	/* It must be an inherited SOCK_SEQPACKET unix socket. */
	if (fstat((int)fd, &st) || !S_ISSOCK(st.st_mode) ||
	    getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) ||
	    type != SOCK_SEQPACKET)
		return -EINVAL;
	unsetenv(CMESH_INVITE_ENV);
	fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	return cmesh__node_join((int)fd, out_type, in_type, opts, 0, true,
				out_node, out_tx, out_rx);
}

/* ---- cmesh_stats_dump ---- */

struct dump {
	struct cmesh__link **v;
	size_t n, cap;
};

/*
 * Under the registry's lock: a reference on each link, so that its
 * statistics are read after the lock (they take the link's own locks;
 * the registry's is a leaf).
 */
static int collect(void *owner, void *arg)
{
	struct dump *d = arg;

	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 16;
		struct cmesh__link **v = realloc(d->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	if (cmesh__link_tryget(owner))
		d->v[d->n++] = owner;
	return 0;
}

static int write_one(int fd, size_t i, const cmesh_node_stats *s)
{
	char state[64] = "ok";

	if (s->failed)
		snprintf(state, sizeof(state), "failed %d (%s)", s->failed,
			 cmesh_strerror(s->failed));
	if (dprintf(fd,
		    "cmesh node %zu: peer_pid %d, wake %s, state %s, lanes %u, "
		    "peer_bytes %llu, pending_fds %u, fd_budget %u, "
		    "backlog %llu\n",
		    i + 1, (int)s->peer_pid,
		    s->wake_backend == CMESH_WAKE_URING ? "io_uring" : "epoll",
		    state, s->lanes, (unsigned long long)s->peer_bytes,
		    s->pending_fds, s->fd_budget,
		    (unsigned long long)s->backlog) < 0)
		return -errno;
	return 0;
}

int cmesh_stats_dump(int fd)
{
	struct dump d = { 0 };
	cmesh_node_stats *s;
	int r;

	if (fd < 0)
		return -EBADF;
	r = cmesh__reg_each(collect, &d);
	/* Read now, written after: a slow fd holds up no link. */
	s = calloc(d.n ? d.n : 1, sizeof(*s));
	for (size_t i = 0; i < d.n; i++) {
		if (s)
			cmesh__link_stats(d.v[i], &s[i]);
		cmesh__link_put(d.v[i]);
	}
	if (!r && !s)
		r = -ENOMEM;
	for (size_t i = 0; !r && i < d.n; i++)
		r = write_one(fd, i, &s[i]);
	free(s);
	free(d.v);
	return r ? r : (int)d.n;
}
