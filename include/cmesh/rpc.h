/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/rpc.h - requests that carry their reply port (mesh's Rpc).
 *
 * A request is a message whose type has exactly one oneshot-sender field:
 * its reply port, typed with the response's type. The caller's
 * cmesh_rpc_call() makes the oneshot, puts its sender in that field and
 * sends the request on a channel; it keeps a pending reply to wait on. The
 * server that receives the request answers through the field with
 * cmesh_rpc_complete() (a response, which may carry fds and endpoints like
 * any message) or cmesh_rpc_fail() (an error: a code and a chain of
 * strings, outermost first, as mesh's RemoteError). All of it works the
 * same in one process and across processes.
 *
 * What the caller's wait returns:
 *   >= 0          the response (its trailing-byte count);
 *   -EREMOTEIO    the server failed it: cmesh_rpc_error() and
 *                 cmesh_rpc_error_code() tell what it said;
 *   -EPIPE        the server dropped the request (or its reply port)
 *                 without answering, or the reply was received already;
 *   -ECONNRESET   the server's process died (or its link failed);
 *   -EPROTO       the reply was malformed (a buggy or hostile server);
 *   -ETIMEDOUT, -ECANCELED  the context ended first: the call stays
 *                 pending (wait again, or free it);
 *   -EMSGSIZE     the response's trailing bytes exceed the buffer: it is
 *                 kept, a wait with a larger buffer gets it
 *                 (cmesh_rpc_trail_len() says how large).
 *
 * The conventional shape is one channel of requests whose argument is a
 * tagged union of request kinds; CMESH_RPC_REQUEST declares it:
 *
 *   struct blk_args { uint32_t op; uint64_t lba; };
 *   CMESH_RPC_REQUEST(blk_req, struct blk_args, blk_resp_type);
 *   // struct blk_req { struct blk_args args; cmesh_oneshot_sender *reply; }
 *   // and const cmesh_type blk_req_type
 *
 *   caller:  struct blk_req q = { .args = { BLK_READ, 7 } };
 *            cmesh_rpc_call(tx, &q, NULL, 0, &call);
 *            cmesh_rpc_wait(call, ctx, &resp, NULL, 0);
 *            cmesh_rpc_free(call);
 *   server:  cmesh_receiver_recv(rx, &q, NULL, 0);
 *            cmesh_rpc_complete(q.reply, &resp, NULL, 0);
 *
 * Threads: a pending call is used by one thread at a time; the ends of a
 * request may be used from any thread, like any oneshot. Blocking: only
 * cmesh_rpc_wait() waits; every other function here returns at once
 * (a send makes at most a wake syscall).
 */
#ifndef CMESH_RPC_H
#define CMESH_RPC_H

#include <cmesh/cancel.h>
#include <cmesh/channel.h>
#include <cmesh/common.h>
#include <cmesh/oneshot.h>
#include <cmesh/type.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_rpc cmesh_rpc;

/* Most strings in an error chain, and most bytes of them all. */
#define CMESH_RPC_MAX_CHAIN 16u
#define CMESH_RPC_MAX_CHAIN_BYTES 4096u

/**
 * Declares `struct name` (the arguments `args`, then the reply port
 * `reply` for responses of `resp_type`) and its descriptor `name##_type`.
 * The _FIELDS form takes the arguments' resource fields (fds, endpoints)
 * as field macros on `struct name`, e.g.
 * CMESH_FIELD_FD(struct name, args.fd).
 */
#define CMESH__RPC_STRUCT(name, ArgsT)                                         \
	struct name {                                                          \
		ArgsT args;                                                    \
		cmesh_oneshot_sender *reply;                                   \
	}
#define CMESH_RPC_REQUEST(name, ArgsT, resp_type)                              \
	CMESH__RPC_STRUCT(name, ArgsT);                                        \
	CMESH_TYPE_DEFINE(name##_type, struct name,                            \
			  CMESH_FIELD_ONESHOT_SENDER(struct name, reply,       \
						     resp_type))
#define CMESH_RPC_REQUEST_FIELDS(name, ArgsT, resp_type, ...)                  \
	CMESH__RPC_STRUCT(name, ArgsT);                                        \
	CMESH_TYPE_DEFINE(name##_type, struct name,                            \
			  CMESH_FIELD_ONESHOT_SENDER(struct name, reply,       \
						     resp_type),               \
			  __VA_ARGS__)

/**
 * Sends request `req` (of the sender's type, which must have exactly one
 * oneshot-sender field, NULL in `req`) on `tx` with a new reply port in
 * that field, and returns the pending call in *out. Takes the request's
 * resources as cmesh_sender_send() does, in every case once `tx` and `req`
 * are non-NULL, but for a request that carries `tx` itself: -EINVAL and
 * nothing taken (its reply field stays NULL). The call is owned by the caller (free with
 * cmesh_rpc_free()). Any thread that may send on `tx`; never blocks.
 * Errors: those of cmesh_sender_send() (-EPIPE: the server's receiver is
 * gone), -EINVAL (NULL, no or several reply fields, a reply field already
 * set), -ENOMEM.
 */
CMESH_API int cmesh_rpc_call(cmesh_sender *tx, void *req, const void *trail,
			     size_t trail_len, cmesh_rpc **out);

/**
 * Waits for the reply for as long as `ctx` lasts (NULL: no limit): the
 * response into `out_resp` (a struct of the response type; the caller owns
 * its resources) and its trailing bytes into `out_trail`, both borrowed
 * for the call, as `ctx` is. Returns as the top of this file says, or
 * -EINVAL (NULL call or out_resp, trail_cap with a NULL out_trail) or
 * -ENOMEM (the call stays pending). try_wait does not wait (-EAGAIN).
 * wait sleeps as a receive does. The call's thread (one at a time).
 */
CMESH_API int cmesh_rpc_wait(cmesh_rpc *call, const cmesh_ctx *ctx,
			     void *out_resp, void *out_trail, size_t trail_cap);
CMESH_API int cmesh_rpc_try_wait(cmesh_rpc *call, void *out_resp,
				 void *out_trail, size_t trail_cap);

/**
 * After -EREMOTEIO: the server's code (a negative errno) and its chain,
 * joined with ": " (borrowed: valid until cmesh_rpc_free()). 0 and NULL
 * before, and for a NULL call. Never fail, never block. The call's thread
 * (one at a time, as its wait).
 */
CMESH_API int cmesh_rpc_error_code(const cmesh_rpc *call);
CMESH_API const char *cmesh_rpc_error(const cmesh_rpc *call);

/**
 * After -EMSGSIZE: the trailing bytes of the kept response; 0 when none
 * is kept or for NULL. Never fails, never blocks. The call's thread (one
 * at a time, as its wait).
 */
CMESH_API size_t cmesh_rpc_trail_len(const cmesh_rpc *call);

/**
 * The call's reply port, for a waitset (cmesh_waitset_add_oneshot()):
 * borrowed, valid until cmesh_rpc_free(), which removes it from its
 * waitset; not to be received on or freed. NULL for NULL; never fails,
 * never blocks. The call's thread (one at a time).
 */
CMESH_API cmesh_oneshot_receiver *cmesh_rpc_receiver(cmesh_rpc *call);

/**
 * Frees the call (taken); a reply not taken is released (its resources
 * closed). A server answering later gets -EPIPE. NULL is a no-op. The
 * call's thread (no other call may use it meanwhile), also while another
 * thread waits on the waitset of its reply port. Never fails, never waits.
 *
 * A call whose response came (a response type of at most 1 KiB, its reply
 * port never handed out by cmesh_rpc_receiver()) is not released at once:
 * the thread keeps up to 4 such calls, and its later calls of the same
 * response type use their reply ports again, so a call in one process
 * allocates nothing. Nobody can tell: the server let go of the port. A
 * call answered from another process keeps its reply lane on that
 * process's link, for later calls over the same link (a call then sends
 * no new port); such a call holds the link (its memory and fds) while
 * kept, and a failure of the link (the peer's exit) frees it at once. The
 * thread's exit or cmesh_rpc_trim() frees them all. So a response type
 * made at run time must outlive, besides its calls, the kept calls of
 * every thread that called with it: call cmesh_rpc_trim() in those
 * threads before freeing it.
 */
CMESH_API void cmesh_rpc_free(cmesh_rpc *call);

/**
 * Frees the calls this thread keeps for reuse (see cmesh_rpc_free()):
 * their queues and buffers, and the queues the thread keeps (as
 * cmesh_channel_trim() does), the reply ports it answered for callers in
 * other processes among them. For a thread about to free a response type it
 * called or answered with, or that wants its memory back. Never fails, never waits;
 * affects the calling thread only.
 */
CMESH_API void cmesh_rpc_trim(void);

/**
 * Server: answers with `resp` (a struct of the response type, its
 * resources taken) and trailing bytes. Consumes `reply` in every case,
 * and the resources once `reply` and `resp` are non-NULL. Never blocks;
 * any thread. Returns 0, or what cmesh_oneshot_send() does (-EPIPE: the
 * caller is gone; -EMSGSIZE), -EINVAL (NULL, trail_len without trail, a
 * response that carries `reply` itself: both released), -ENOMEM.
 */
CMESH_API int cmesh_rpc_complete(cmesh_oneshot_sender *reply, const void *resp,
				 const void *trail, size_t trail_len);

/**
 * Server: fails the call with `code` (a negative errno) and `n` strings,
 * outermost first (at most CMESH_RPC_MAX_CHAIN, their bytes at most
 * CMESH_RPC_MAX_CHAIN_BYTES with their NULs: longer ones are cut).
 * Consumes `reply` in every case; borrows `chain` for the call (copied).
 * Never blocks; any thread. 0, what cmesh_oneshot_send() does (-EPIPE:
 * the caller is gone), -EINVAL (NULL reply, code >= 0, n 0, a NULL chain
 * or string), -ENOMEM.
 */
CMESH_API int cmesh_rpc_fail(cmesh_oneshot_sender *reply, int code,
			     const char *const *chain, size_t n);

CMESH_END_DECLS

#endif
