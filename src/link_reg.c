/* SPDX-License-Identifier: MIT */
/*
 * link_reg.c - the process's live links (see link_reg.h), and
 * cmesh_stats_dump(), which writes their statistics.
 */
#include "link_reg.h"

#include "link.h"
#include "link_int.h"

#include <cmesh/env.h>
#include <cmesh/error.h>
#include <cmesh/node.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static struct cmesh__link *reg_head, **reg_tail = &reg_head;

static void fork_prepare(void)
{
	pthread_mutex_lock(&reg_lock);
}

static void fork_release(void)
{
	pthread_mutex_unlock(&reg_lock);
}

static void reg_init(void)
{
	pthread_atfork(fork_prepare, fork_release, fork_release);
}

void cmesh__link_reg_add(struct cmesh__link *l)
{
	pthread_once(&reg_once, reg_init);
	pthread_mutex_lock(&reg_lock);
	l->reg_next = NULL;
	l->reg_pprev = reg_tail;
	*reg_tail = l;
	reg_tail = &l->reg_next;
	pthread_mutex_unlock(&reg_lock);
}

void cmesh__link_reg_del(struct cmesh__link *l)
{
	pthread_once(&reg_once, reg_init); /* the fork handlers first */
	pthread_mutex_lock(&reg_lock);
	if (l->reg_pprev) {
		*l->reg_pprev = l->reg_next;
		if (l->reg_next)
			l->reg_next->reg_pprev = l->reg_pprev;
		else
			reg_tail = l->reg_pprev;
		l->reg_pprev = NULL;
		l->reg_next = NULL;
	}
	pthread_mutex_unlock(&reg_lock);
}

int cmesh__link_reg_each(int (*fn)(struct cmesh__link *l, void *arg), void *arg)
{
	int r = 0;

	pthread_once(&reg_once, reg_init); /* the fork handlers first */
	pthread_mutex_lock(&reg_lock);
	for (struct cmesh__link *l = reg_head; l && !r; l = l->reg_next)
		r = fn(l, arg);
	pthread_mutex_unlock(&reg_lock);
	return r;
}

struct dump {
	struct cmesh__link **v;
	size_t n, cap;
};

/*
 * Under the registry's lock: a reference on each link, so that its
 * statistics are read after the lock (they take the link's own locks,
 * which are never taken before the registry's).
 */
static int collect(struct cmesh__link *l, void *arg)
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
	if (cmesh__link_tryget(l))
		d->v[d->n++] = l;
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
	int r;
	cmesh_node_stats *s;

	if (fd < 0)
		return -EBADF;
	r = cmesh__link_reg_each(collect, &d);
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
