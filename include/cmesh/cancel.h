/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/cancel.h - cancellation contexts with deadlines.
 *
 * A context (cmesh_ctx) tells a blocking call when to give up: once it is
 * cancelled (-ECANCELED) or once its deadline passes (-ETIMEDOUT).
 * Contexts form a tree: a child ends when its parent does, and its
 * deadline is the earlier of its own and its parent's. A canceller
 * (cmesh_cancel) cancels the context it was made with, and with it every
 * descendant; freeing the canceller cancels too, so a context whose
 * canceller is gone never waits forever.
 *
 * The blocking calls on channels, oneshots, rpcs, waitsets and flushes
 * have a form that takes a context (the _ctx functions, e.g.
 * cmesh_receiver_recv_ctx(), cmesh_rpc_wait()); a NULL context means
 * none: the call waits as long as it has to. Joining nodes (spawn, join,
 * connect, accept, cmesh_node_join_socket) takes one in
 * cmesh_node_opts.ctx; closing one, cmesh_node_close_ctx(). A call whose
 * context has already
 * ended still takes what is ready at once (a message, a value), as a call
 * with a past deadline does; only a wait is cut short.
 *
 * No thread watches deadlines: a waiting call sleeps until the earlier of
 * its deadlines, and a cancel wakes the threads waiting on the context
 * (and its descendants) through the futex words they already sleep on.
 *
 * Handles: each cmesh_ctx is owned by whoever made it and freed with
 * cmesh_ctx_free(); a clone is another handle on the same context. A call
 * that takes a `const cmesh_ctx *` borrows the handle for the call: it must
 * not be freed while a call (here or a blocking call elsewhere) uses it.
 * Otherwise the functions here may be called from any thread, on any
 * handle, at any time (a cancel while another thread waits on the context
 * is the point). None blocks but cmesh_ctx_wait(): the others take at most
 * one short process-wide lock, and a cancel makes futex wake syscalls.
 */
#ifndef CMESH_CANCEL_H
#define CMESH_CANCEL_H

#include <cmesh/common.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_ctx cmesh_ctx;
typedef struct cmesh_cancel cmesh_cancel;

/**
 * A root context: never cancelled, no deadline. Returns it owned in *out
 * (free with cmesh_ctx_free()). 0, -EINVAL (NULL out), -ENOMEM. Any
 * thread; never blocks (see top).
 */
CMESH_API int cmesh_ctx_new(cmesh_ctx **out);

/**
 * A child of `parent` (NULL: a new root; borrowed for the call) and the
 * canceller that cancels it, both returned owned (free with
 * cmesh_ctx_free() and cmesh_cancel_free()). A child of a context that has
 * ended starts cancelled. 0, -EINVAL (NULL out or out_cancel), -ENOMEM
 * (then nothing is made). Any thread; never blocks (see top).
 */
CMESH_API int cmesh_ctx_with_cancel(const cmesh_ctx *parent, cmesh_ctx **out,
				    cmesh_cancel **out_cancel);

/**
 * A child of `parent` (NULL: a new root; borrowed for the call) whose
 * deadline is the earlier of `deadline` (CLOCK_MONOTONIC ns, as
 * cmesh_clock_now(); CMESH_DEADLINE_NONE: none) and its parent's, returned
 * owned in *out (free with cmesh_ctx_free()). The _timeout form takes
 * `timeout_ns` from now (0: already past). Both: 0, -EINVAL (NULL out, a
 * negative timeout), -ENOMEM; any thread; never block (see top).
 */
CMESH_API int cmesh_ctx_with_deadline(const cmesh_ctx *parent, int64_t deadline,
				      cmesh_ctx **out);
CMESH_API int cmesh_ctx_with_timeout(const cmesh_ctx *parent,
				     int64_t timeout_ns, cmesh_ctx **out);

/**
 * Another handle on the same context, returned owned in *out (free with
 * cmesh_ctx_free()); borrows `ctx`. 0, -EINVAL (NULL ctx or out), -ENOMEM.
 * Any thread; never blocks (see top).
 */
CMESH_API int cmesh_ctx_clone(const cmesh_ctx *ctx, cmesh_ctx **out);

/**
 * Frees a handle (taken). Its children live on (they keep what they need
 * of it) and are still cancelled with it. Freeing does not cancel. NULL is
 * a no-op. Any thread, but not while a call uses this handle (see top);
 * never blocks, never fails.
 */
CMESH_API void cmesh_ctx_free(cmesh_ctx *ctx);

/**
 * 0 while the context lasts, -ECANCELED once it (or an ancestor) was
 * cancelled, else -ETIMEDOUT once its deadline passed. -EINVAL for NULL.
 * Borrows `ctx`; any thread; never blocks: takes no lock, reads the clock
 * only when it has a deadline.
 */
CMESH_API int cmesh_ctx_check(const cmesh_ctx *ctx);

/**
 * The context's deadline, or CMESH_DEADLINE_NONE (also for NULL). Borrows
 * `ctx`; any thread; never fails, never blocks: takes no lock, makes no
 * syscall.
 */
CMESH_API int64_t cmesh_ctx_deadline(const cmesh_ctx *ctx);

/**
 * Blocks (on a futex) until the context ends: returns -ECANCELED or
 * -ETIMEDOUT (at once if it has ended), -EINVAL for NULL. A context that
 * cannot end (a root from cmesh_ctx_new(), or a child of one with no
 * deadline) waits forever. Borrows `ctx`; any thread, any number at once
 * (a cancel wakes them all).
 */
CMESH_API int cmesh_ctx_wait(const cmesh_ctx *ctx);

/**
 * Cancels the canceller's context and every descendant, waking whoever
 * waits on them. Idempotent. NULL is a no-op. Borrows `cancel`. Any
 * thread, also while others wait on the context; never fails, never
 * blocks (the process-wide lock, futex wakes).
 */
CMESH_API void cmesh_cancel_fire(cmesh_cancel *cancel);

/**
 * Cancels (as cmesh_cancel_fire()) and frees the canceller (taken). NULL
 * is a no-op. Any thread, but no other call may use `cancel` meanwhile;
 * never fails, never blocks.
 */
CMESH_API void cmesh_cancel_free(cmesh_cancel *cancel);

CMESH_END_DECLS

#endif
