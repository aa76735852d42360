/* SPDX-License-Identifier: MIT */
/*
 * cancel.h - what the rest of the library uses of cancellation contexts
 * (include/cmesh/cancel.h): the scope of a blocking call, and watchers for
 * waits that do not sleep on a futex (a waitset's poll).
 */
#ifndef CMESH_CANCEL_INT_H
#define CMESH_CANCEL_INT_H

#include "park.h"

#include <cmesh/cancel.h>

#include <stdbool.h>
#include <stdint.h>

/*
 * A blocking call with a context: cmesh__ctx_begin() returns the deadline
 * to wait for (the earlier of `deadline` and the context's) and, until
 * cmesh__ctx_end(), makes every park of this thread give up with
 * -ECANCELED once the context is cancelled (park.h). `ctx` NULL: nothing
 * changes. The caller's handle must outlive the scope.
 */
struct cmesh__ctx_scope {
	struct cmesh__park_cancel pc;
	bool on;
};

int64_t cmesh__ctx_begin(const cmesh_ctx *ctx, int64_t deadline,
			 struct cmesh__ctx_scope *sc);
void cmesh__ctx_end(struct cmesh__ctx_scope *sc);

/*
 * A watcher: `fn(arg)` runs once when the context is cancelled (or at
 * once if it already was), on the cancelling thread under the contexts'
 * lock: it must not block nor call into contexts. Unwatch before `w` goes.
 */
struct cmesh__ctx_watcher {
	struct cmesh__ctx_watcher *next, **pprev;
	void (*fn)(void *arg);
	void *arg;
};

void cmesh__ctx_watch(const cmesh_ctx *ctx, struct cmesh__ctx_watcher *w);
void cmesh__ctx_unwatch(struct cmesh__ctx_watcher *w);

/*
 * For a wait in poll() (the setup calls, node.c): `fd`, an eventfd that
 * polls readable once `ctx` is cancelled. open() leaves fd -1 when there
 * is nothing to watch (ctx NULL, or no canceller can ever end it: only
 * its deadline can, which the caller folds into its own); 0, or -errno if
 * no eventfd could be made. close() unwatches and closes (fd -1: no-op).
 */
struct cmesh__ctx_fd {
	struct cmesh__ctx_watcher w;
	int fd;
};
int cmesh__ctx_fd_open(const cmesh_ctx *ctx, struct cmesh__ctx_fd *cf);
void cmesh__ctx_fd_close(struct cmesh__ctx_fd *cf);

/*
 * Contexts that cross a link (link_ctx.c). A context that can never be
 * cancelled (no canceller made it or an ancestor) needs no link state:
 * only its deadline crosses.
 */
bool cmesh__ctx_cancellable(const cmesh_ctx *ctx);
bool cmesh__ctx_ended(const cmesh_ctx *ctx);

/* A context's node, for the link that stands for its canceller. */
struct cmesh__ctx_node;

/*
 * A new root node (one reference, the caller's) that only a cancel of the
 * node ends, or its deadline; ended from the start if `ended`. `on_free`
 * runs with `arg` once its last reference is gone (on that thread, no
 * lock held). NULL without memory.
 */
struct cmesh__ctx_node *cmesh__ctx_node_new(int64_t deadline, bool ended,
					    void (*on_free)(void *arg),
					    void *arg);

/* True once the node was cancelled. */
bool cmesh__ctx_node_ended(struct cmesh__ctx_node *n);

/* Takes a reference unless the node is being freed (then false). */
bool cmesh__ctx_node_tryref(struct cmesh__ctx_node *n);
void cmesh__ctx_node_unref(struct cmesh__ctx_node *n);

/* Cancels the node and its descendants (cmesh_cancel_fire()). */
void cmesh__ctx_node_cancel(struct cmesh__ctx_node *n);

/* A handle holding the caller's reference; NULL (reference dropped). */
cmesh_ctx *cmesh__ctx_node_handle(struct cmesh__ctx_node *n);

#endif
