/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/waitset.h - wait for the first ready of many endpoints.
 *
 * A member is ready when a receive on it would not return -EAGAIN: a
 * message is queued, or it is closed. Readiness is level-triggered: a
 * member stays ready until it is drained. A member with senders in other
 * processes may also be ready once when one of them lets go while others
 * remain, or when a new one joins: the receive that takes that end (or
 * that sender's lane) returns -EAGAIN. Each receiver is in at most one
 * waitset. A wait and the receives on its members belong to one thread at
 * a time: no recv on a member while a wait on its waitset runs in another
 * thread. Membership may change from any thread at any time: adding,
 * removing, freeing a member or sending it away while another thread waits
 * is safe (a removed member's key is not returned once the removal has
 * returned; a wait in progress keeps sleeping until another member is
 * ready or its deadline). Freeing the waitset itself must not race with
 * another thread freeing or moving one of its members, nor with a call on
 * the waitset.
 *
 * Every function here borrows its arguments for the call (a member stays
 * its owner's). None blocks but wait and wait_ctx (futex_waitv, or epoll
 * on the fd); the others take the waitset's lock and may make syscalls
 * (epoll_ctl, the eventfd, the deadline timerfd), never a sleep.
 *
 * For an external event loop: cmesh_waitset_fd() is readable when a member
 * may be ready. Call cmesh_waitset_try_wait() until it returns -EAGAIN;
 * after that the fd becomes readable again when a member becomes ready
 * (edge-triggered hand-off, as with EPOLLET).
 */
#ifndef CMESH_WAITSET_H
#define CMESH_WAITSET_H

#include <cmesh/channel.h>
#include <cmesh/common.h>
#include <cmesh/oneshot.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_waitset cmesh_waitset;

/**
 * Creates an empty waitset, returned owned in *out_ws (free with
 * cmesh_waitset_free()). Any thread; never blocks. Errors: -EINVAL (NULL
 * out_ws), -ENOMEM, -EMFILE, -ENFILE.
 */
CMESH_API int cmesh_waitset_new(cmesh_waitset **out_ws);

/**
 * Frees the waitset (taken) after removing every member (they stay their
 * owners'). Closes its fd. NULL is a no-op. Any thread, but not while
 * another call uses `ws`, nor while another thread frees or moves one of
 * its members (see top). Never fails, never waits.
 */
CMESH_API void cmesh_waitset_free(cmesh_waitset *ws);

/**
 * Adds a member (borrowed: it stays owned by the caller; freeing it removes
 * it). `key` is returned by wait when the member is ready. Any thread;
 * never blocks. Errors: -EBUSY (already in a waitset), -EINVAL (NULL),
 * -ENOMEM (memory, or the fds of a wake socket on a link of its
 * senders), or epoll_ctl's -errno.
 */
CMESH_API int cmesh_waitset_add_receiver(cmesh_waitset *ws, cmesh_receiver *rx,
					 uint64_t key);
CMESH_API int cmesh_waitset_add_oneshot(cmesh_waitset *ws,
					cmesh_oneshot_receiver *rx,
					uint64_t key);

/**
 * A cancellation context as a member (cmesh/cancel.h): ready once it has
 * ended (cancelled, or its deadline passed: a wait wakes for it then, and
 * cmesh_waitset_fd() polls readable then too, through a timerfd the
 * waitset makes when a member first has a deadline), and stays ready
 * until removed. The waitset keeps its own handle, so the caller may free
 * `ctx` while it is a member; it is removed with the handle it was added
 * as (so before that is freed), or when the waitset is freed. Any thread;
 * never blocks. Errors: -EBUSY (`ctx` is a member already), -EINVAL
 * (NULL), -ENOMEM, -EMFILE, -ENFILE (the timerfd) or epoll_ctl's -errno;
 * remove: -ENOENT (not a member), -EINVAL.
 */
CMESH_API int cmesh_waitset_add_ctx(cmesh_waitset *ws, const cmesh_ctx *ctx,
				    uint64_t key);
CMESH_API int cmesh_waitset_remove_ctx(cmesh_waitset *ws, const cmesh_ctx *ctx);

/**
 * Removes a member (it stays the caller's). Any thread; never blocks.
 * Errors: -ENOENT (not in this waitset), -EINVAL (NULL).
 */
CMESH_API int cmesh_waitset_remove_receiver(cmesh_waitset *ws,
					    cmesh_receiver *rx);
CMESH_API int cmesh_waitset_remove_oneshot(cmesh_waitset *ws,
					   cmesh_oneshot_receiver *rx);

/**
 * Waits until a member is ready and stores its key in *out_key. Members are
 * scanned round-robin so a busy one cannot starve the others. Returns 0,
 * -ETIMEDOUT (deadline passed; wait_ctx: the context's), -ECANCELED
 * (wait_ctx: the context was cancelled), -EAGAIN (try_wait: nothing
 * ready), -EINVAL (NULL ws or out_key), or epoll_wait's -errno. wait_ctx
 * with a NULL context waits without limit; `ctx` is borrowed for the
 * call. wait and wait_ctx sleep (in futex_waitv, or in epoll on the
 * waitset's fd) until a member is ready or the deadline; try_wait never
 * blocks. One thread at a time per waitset, the thread that receives on
 * its members.
 */
CMESH_API int cmesh_waitset_wait(cmesh_waitset *ws, int64_t deadline,
				 uint64_t *out_key);
CMESH_API int cmesh_waitset_wait_ctx(cmesh_waitset *ws, const cmesh_ctx *ctx,
				     uint64_t *out_key);
CMESH_API int cmesh_waitset_try_wait(cmesh_waitset *ws, uint64_t *out_key);

/**
 * The waitset's fd, borrowed: valid until cmesh_waitset_free(); -EINVAL
 * for NULL. Any thread; never blocks, makes no syscall.
 */
CMESH_API int cmesh_waitset_fd(const cmesh_waitset *ws);

/**
 * Number of members, contexts included; 0 for NULL (there is no error
 * code). Any thread; never blocks (takes the waitset's lock).
 */
CMESH_API uint32_t cmesh_waitset_size(const cmesh_waitset *ws);

CMESH_END_DECLS

#endif
