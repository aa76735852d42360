/* SPDX-License-Identifier: MIT */
/*
 * cancel.c - cancellation contexts: a tree of nodes, each with a deadline
 * (the earliest on its path to the root) and an `ended` flag that a cancel
 * sets on a node and every descendant.
 *
 * A handle (cmesh_ctx) and a canceller (cmesh_cancel) each hold a
 * reference on their node; a node holds one on its parent, so a node
 * lives while anything below it does. The tree's links (a node's
 * children, its watchers) are under one lock: contexts are made, freed
 * and cancelled on slow paths only. Reading a context (check, the words a
 * blocking call sleeps on) takes no lock.
 *
 * Memory ordering: a cancel stores `ended` = 1 (release), then increments
 * `word` (release) and wakes its futex. A blocking call loads `word`
 * (acquire), then `ended`, and sleeps while `word` still holds what it
 * loaded (park.c): a cancel after its load changes the word, one before
 * it is seen in `ended`.
 *
 * Invariant (under the lock): a node that has ended has only descendants
 * that have ended (a child made under an ended parent starts ended), so a
 * cancel stops at subtrees that have.
 */
#include "cancel.h"

#include <cmesh/common.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct node {
	_Atomic uint32_t refs;
	_Atomic uint32_t word;	    /* a futex: incremented when it ends */
	_Atomic uint32_t ended;	    /* 1 once cancelled */
	int64_t deadline;	    /* the earliest on the path to the root */
	bool cancellable;	    /* a canceller made it or an ancestor */
	struct node *parent;	    /* a reference, or NULL */
	void (*on_free)(void *arg); /* a context from another process */
	void *free_arg;
	/* Under tree_lock. */
	struct node *kids, *next_kid, **pprev_kid;
	struct cmesh__ctx_watcher *watchers;
};

struct cmesh_ctx {
	struct node *n;
};

struct cmesh_cancel {
	struct node *n;
};

static pthread_mutex_t tree_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t tree_once = PTHREAD_ONCE_INIT;

/*
 * Held across fork (as the registry's lock, reg.c): a child of a fork
 * made while another thread held it would wait on it for ever.
 */
static void tree_fork_prepare(void)
{
	pthread_mutex_lock(&tree_lock);
}

static void tree_fork_release(void)
{
	pthread_mutex_unlock(&tree_lock);
}

static void tree_init(void)
{
	pthread_atfork(tree_fork_prepare, tree_fork_release, tree_fork_release);
}

/* Takes the tree's lock, the fork handlers registered first. */
static void tree_lock_take(void)
{
	pthread_once(&tree_once, tree_init);
	pthread_mutex_lock(&tree_lock);
}

static void node_ref(struct node *n)
{
	atomic_fetch_add_explicit(&n->refs, 1, memory_order_relaxed);
}

static void node_unref(struct node *n)
{
	while (n && atomic_fetch_sub_explicit(&n->refs, 1,
					      memory_order_acq_rel) == 1) {
		struct node *parent = n->parent;

		if (parent) {
			tree_lock_take();
			*n->pprev_kid = n->next_kid;
			if (n->next_kid)
				n->next_kid->pprev_kid = n->pprev_kid;
			pthread_mutex_unlock(&tree_lock);
		}
		if (n->on_free)
			n->on_free(n->free_arg);
		free(n);
		n = parent; /* drop the reference n held */
	}
}

/* Ends one node: its flag, its futex, its watchers (tree_lock held). */
static void end_one(struct node *n)
{
	atomic_store_explicit(&n->ended, 1, memory_order_release);
	/* Pairs with the acquire load of a blocking call (see top). */
	atomic_fetch_add_explicit(&n->word, 1, memory_order_release);
	cmesh__park_wake(&n->word);
	for (struct cmesh__ctx_watcher *w = n->watchers; w; w = w->next)
		w->fn(w->arg);
}

/* Ends `root` and every descendant not ended yet (tree_lock held). */
static void cancel_locked(struct node *root)
{
	struct node *n = root;

	if (atomic_load_explicit(&root->ended, memory_order_relaxed))
		return;
	for (;;) {
		end_one(n);
		/* Depth first; an ended child's subtree has ended. */
		struct node *k = n->kids;

		while (k &&
		       atomic_load_explicit(&k->ended, memory_order_relaxed))
			k = k->next_kid;
		if (k) {
			n = k;
			continue;
		}
		for (;;) {
			if (n == root)
				return;
			k = n->next_kid;
			while (k && atomic_load_explicit(&k->ended,
							 memory_order_relaxed))
				k = k->next_kid;
			if (k) {
				n = k;
				break;
			}
			n = n->parent;
		}
	}
}

/* A new node under `parent` (NULL: a root) with `deadline`. */
static struct node *node_new(struct node *parent, int64_t deadline)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	atomic_init(&n->refs, 1);
	n->deadline = deadline;
	if (!parent)
		return n;
	if (parent->deadline < n->deadline)
		n->deadline = parent->deadline;
	n->cancellable = parent->cancellable;
	node_ref(parent);
	n->parent = parent;
	tree_lock_take();
	if (atomic_load_explicit(&parent->ended, memory_order_relaxed))
		atomic_store_explicit(&n->ended, 1, memory_order_relaxed);
	n->next_kid = parent->kids;
	if (n->next_kid)
		n->next_kid->pprev_kid = &n->next_kid;
	n->pprev_kid = &parent->kids;
	parent->kids = n;
	pthread_mutex_unlock(&tree_lock);
	return n;
}

/* A handle on `n` (taking the caller's reference), or NULL. */
static cmesh_ctx *handle_of(struct node *n)
{
	cmesh_ctx *c;

	if (!n)
		return NULL;
	c = malloc(sizeof(*c));
	if (!c) {
		node_unref(n);
		return NULL;
	}
	c->n = n;
	return c;
}

int cmesh_ctx_new(cmesh_ctx **out)
{
	return cmesh_ctx_with_deadline(NULL, CMESH_DEADLINE_NONE, out);
}

int cmesh_ctx_with_cancel(const cmesh_ctx *parent, cmesh_ctx **out,
			  cmesh_cancel **out_cancel)
{
	cmesh_cancel *k;
	cmesh_ctx *c;

	if (!out || !out_cancel)
		return -EINVAL;
	k = malloc(sizeof(*k));
	if (!k)
		return -ENOMEM;
	c = handle_of(node_new(parent ? parent->n : NULL, CMESH_DEADLINE_NONE));
	if (!c) {
		free(k);
		return -ENOMEM;
	}
	node_ref(c->n);
	c->n->cancellable = true; /* before anyone else sees it */
	k->n = c->n;
	*out = c;
	*out_cancel = k;
	return 0;
}

int cmesh_ctx_with_deadline(const cmesh_ctx *parent, int64_t deadline,
			    cmesh_ctx **out)
{
	cmesh_ctx *c;

	if (!out)
		return -EINVAL;
	c = handle_of(node_new(parent ? parent->n : NULL, deadline));
	if (!c)
		return -ENOMEM;
	*out = c;
	return 0;
}

int cmesh_ctx_with_timeout(const cmesh_ctx *parent, int64_t timeout_ns,
			   cmesh_ctx **out)
{
	if (timeout_ns < 0)
		return -EINVAL;
	return cmesh_ctx_with_deadline(parent, cmesh_deadline_after(timeout_ns),
				       out);
}

int cmesh_ctx_clone(const cmesh_ctx *ctx, cmesh_ctx **out)
{
	cmesh_ctx *c;

	if (!ctx || !out)
		return -EINVAL;
	node_ref(ctx->n);
	c = handle_of(ctx->n);
	if (!c)
		return -ENOMEM;
	*out = c;
	return 0;
}

void cmesh_ctx_free(cmesh_ctx *ctx)
{
	if (!ctx)
		return;
	node_unref(ctx->n);
	free(ctx);
}

int cmesh_ctx_check(const cmesh_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (atomic_load_explicit(&ctx->n->ended, memory_order_acquire))
		return -ECANCELED;
	if (ctx->n->deadline != CMESH_DEADLINE_NONE &&
	    cmesh_clock_now() >= ctx->n->deadline)
		return -ETIMEDOUT;
	return 0;
}

int64_t cmesh_ctx_deadline(const cmesh_ctx *ctx)
{
	return ctx ? ctx->n->deadline : CMESH_DEADLINE_NONE;
}

int cmesh_ctx_wait(const cmesh_ctx *ctx)
{
	int r;

	if (!ctx)
		return -EINVAL;
	for (;;) {
		/* Before the check: a cancel after it changes the word. */
		uint32_t v = atomic_load_explicit(&ctx->n->word,
						  memory_order_acquire);

		r = cmesh_ctx_check(ctx);
		if (r)
			return r;
		(void)cmesh__park_wait(&ctx->n->word, v, ctx->n->deadline);
	}
}

void cmesh_cancel_fire(cmesh_cancel *cancel)
{
	if (!cancel)
		return;
	tree_lock_take();
	cancel_locked(cancel->n);
	pthread_mutex_unlock(&tree_lock);
}

void cmesh_cancel_free(cmesh_cancel *cancel)
{
	if (!cancel)
		return;
	cmesh_cancel_fire(cancel);
	node_unref(cancel->n);
	free(cancel);
}

/* ---- for the rest of the library ---- */

int64_t cmesh__ctx_begin(const cmesh_ctx *ctx, int64_t deadline,
			 struct cmesh__ctx_scope *sc)
{
	sc->on = ctx != NULL;
	if (!ctx)
		return deadline;
	sc->pc.word = &ctx->n->word;
	sc->pc.ended = &ctx->n->ended;
	cmesh__park_set_cancel(&sc->pc);
	return ctx->n->deadline < deadline ? ctx->n->deadline : deadline;
}

void cmesh__ctx_end(struct cmesh__ctx_scope *sc)
{
	if (sc->on)
		cmesh__park_set_cancel(NULL);
}

void cmesh__ctx_watch(const cmesh_ctx *ctx, struct cmesh__ctx_watcher *w)
{
	struct node *n = ctx->n;

	tree_lock_take();
	w->next = n->watchers;
	if (w->next)
		w->next->pprev = &w->next;
	w->pprev = &n->watchers;
	n->watchers = w;
	if (atomic_load_explicit(&n->ended, memory_order_relaxed))
		w->fn(w->arg);
	pthread_mutex_unlock(&tree_lock);
}

void cmesh__ctx_unwatch(struct cmesh__ctx_watcher *w)
{
	tree_lock_take();
	*w->pprev = w->next;
	if (w->next)
		w->next->pprev = w->pprev;
	pthread_mutex_unlock(&tree_lock);
}

static void ctx_fd_fire(void *arg)
{
	struct cmesh__ctx_fd *cf = arg;

	/* Non-blocking: a full counter already says "cancelled". */
	(void)eventfd_write(cf->fd, 1);
}

int cmesh__ctx_fd_open(const cmesh_ctx *ctx, struct cmesh__ctx_fd *cf)
{
	cf->fd = -1;
	if (!ctx || !ctx->n->cancellable)
		return 0;
	cf->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cf->fd < 0)
		return -errno;
	cf->w.fn = ctx_fd_fire;
	cf->w.arg = cf;
	cmesh__ctx_watch(ctx, &cf->w);
	return 0;
}

void cmesh__ctx_fd_close(struct cmesh__ctx_fd *cf)
{
	if (cf->fd < 0)
		return;
	cmesh__ctx_unwatch(&cf->w);
	close(cf->fd);
	cf->fd = -1;
}

/* ---- nodes of contexts that cross a link (link_ctx.c) ---- */

bool cmesh__ctx_cancellable(const cmesh_ctx *ctx)
{
	return ctx->n->cancellable;
}

bool cmesh__ctx_ended(const cmesh_ctx *ctx)
{
	return atomic_load_explicit(&ctx->n->ended, memory_order_acquire);
}

struct cmesh__ctx_node *cmesh__ctx_node_new(int64_t deadline, bool ended,
					    void (*on_free)(void *arg),
					    void *arg)
{
	struct node *n = node_new(NULL, deadline);

	if (!n)
		return NULL;
	n->cancellable = true; /* by its origin, through the link */
	atomic_store_explicit(&n->ended, ended, memory_order_relaxed);
	n->on_free = on_free;
	n->free_arg = arg;
	return (struct cmesh__ctx_node *)n;
}

bool cmesh__ctx_node_ended(struct cmesh__ctx_node *cn)
{
	return atomic_load_explicit(&((struct node *)cn)->ended,
				    memory_order_acquire);
}

bool cmesh__ctx_node_tryref(struct cmesh__ctx_node *cn)
{
	struct node *n = (struct node *)cn;
	uint32_t r = atomic_load_explicit(&n->refs, memory_order_relaxed);

	do {
		if (!r)
			return false; /* being freed */
	} while (!atomic_compare_exchange_weak_explicit(&n->refs, &r, r + 1,
							memory_order_relaxed,
							memory_order_relaxed));
	return true;
}

void cmesh__ctx_node_unref(struct cmesh__ctx_node *cn)
{
	node_unref((struct node *)cn);
}

void cmesh__ctx_node_cancel(struct cmesh__ctx_node *cn)
{
	tree_lock_take();
	cancel_locked((struct node *)cn);
	pthread_mutex_unlock(&tree_lock);
}

cmesh_ctx *cmesh__ctx_node_handle(struct cmesh__ctx_node *cn)
{
	return handle_of((struct node *)cn);
}
