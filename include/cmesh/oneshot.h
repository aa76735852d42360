/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/oneshot.h - one value, once.
 *
 * The sender sends at most one message; sending consumes the sender.
 * Freeing the sender without sending makes the receiver get -EPIPE.
 * Resources move as for channels (cmesh/channel.h).
 *
 * Threads, blocking and cross-process errors as for channels: the sender
 * may be used from any thread, the receiver by one thread at a time;
 * only the receives that wait (recv, recv_deadline, recv_ctx) block. A
 * handle is freed with its _free function, or by a send (the sender).
 */
#ifndef CMESH_ONESHOT_H
#define CMESH_ONESHOT_H

#include <cmesh/cancel.h>
#include <cmesh/common.h>
#include <cmesh/type.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_oneshot_sender cmesh_oneshot_sender;
typedef struct cmesh_oneshot_receiver cmesh_oneshot_receiver;

/**
 * Creates a oneshot for messages of `type` (borrowed, must outlive it).
 * Returns owned handles (free with cmesh_oneshot_sender_free(), or send,
 * and cmesh_oneshot_receiver_free()). Any thread; never blocks. Errors:
 * -EINVAL (bad type, NULL outputs, bad environment), -ENOMEM.
 */
CMESH_API int cmesh_oneshot_new(const cmesh_type *type,
				cmesh_oneshot_sender **out_tx,
				cmesh_oneshot_receiver **out_rx);

/**
 * Sends the value and frees `tx`, whatever the result. Takes the message's
 * resources (not with a NULL msg). Never blocks. Any thread; no other call
 * may use `tx` meanwhile (the send frees it). Returns 0, -EPIPE (receiver
 * gone), -ECONNRESET (it failed), -EBADMSG, -EMSGSIZE, -ENOMEM, the
 * cross-process codes of cmesh/channel.h, or -EINVAL (NULL tx or msg: tx
 * is still freed if non-NULL; trail_len without trail).
 * The one exception: a message that carries `tx` itself is -EINVAL and
 * nothing is taken, `tx` included.
 */
CMESH_API int cmesh_oneshot_send(cmesh_oneshot_sender *tx, const void *msg,
				 const void *trail, size_t trail_len);

/**
 * Frees the sender (taken) without sending: the receiver gets -EPIPE. NULL
 * is a no-op. Any thread, but no other call may use `tx` meanwhile; never
 * fails, never waits.
 */
CMESH_API void cmesh_oneshot_sender_free(cmesh_oneshot_sender *tx);

/**
 * As cmesh_sender_is_closed(): 1 if the receiver is gone, 0, -ECONNRESET
 * or -EPROTO (its link failed), -EINVAL (NULL). Borrows `tx`; any thread;
 * never blocks.
 */
CMESH_API int cmesh_oneshot_sender_is_closed(const cmesh_oneshot_sender *tx);

/**
 * Receives the value, as cmesh_receiver_*recv* (the same ownership and
 * blocking; the receiver's thread only, one at a time): returns the
 * trailing-byte count, or -EAGAIN, -ETIMEDOUT, -ECANCELED (recv_ctx),
 * -EPIPE (sender freed without sending, or the value was already
 * received), -ECONNRESET (the sender failed), -EMSGSIZE, -EINVAL, and the
 * cross-process codes.
 */
CMESH_API int cmesh_oneshot_try_recv(cmesh_oneshot_receiver *rx, void *out_msg,
				     void *out_trail, size_t trail_cap);
CMESH_API int cmesh_oneshot_recv(cmesh_oneshot_receiver *rx, void *out_msg,
				 void *out_trail, size_t trail_cap);
CMESH_API int cmesh_oneshot_recv_deadline(cmesh_oneshot_receiver *rx,
					  int64_t deadline, void *out_msg,
					  void *out_trail, size_t trail_cap);
CMESH_API int cmesh_oneshot_recv_ctx(cmesh_oneshot_receiver *rx,
				     const cmesh_ctx *ctx, void *out_msg,
				     void *out_trail, size_t trail_cap);

/**
 * Frees the receiver (taken; a pending value's resources are released)
 * and removes it from its waitset; the sender then gets -EPIPE. NULL is a
 * no-op. The receiver's thread (one at a time), also while another thread
 * waits on its waitset. Never fails, never waits.
 */
CMESH_API void cmesh_oneshot_receiver_free(cmesh_oneshot_receiver *rx);

CMESH_END_DECLS

#endif
