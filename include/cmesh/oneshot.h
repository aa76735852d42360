/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/oneshot.h - one value, once.
 *
 * The sender sends at most one message; sending consumes the sender.
 * Freeing the sender without sending makes the receiver get -EPIPE.
 * Resources move as for channels (cmesh/channel.h).
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
 * Returns owned handles. Errors: -EINVAL, -ENOMEM.
 */
CMESH_API int cmesh_oneshot_new(const cmesh_type *type,
				cmesh_oneshot_sender **out_tx,
				cmesh_oneshot_receiver **out_rx);

/**
 * Sends the value and frees `tx`, whatever the result. Takes the message's
 * resources. Returns 0, -EPIPE (receiver gone), -EBADMSG, -EMSGSIZE,
 * -ENOMEM, or -EINVAL (NULL tx or msg; tx is still freed if non-NULL).
 * The one exception: a message that carries `tx` itself is -EINVAL and
 * nothing is taken, `tx` included.
 */
CMESH_API int cmesh_oneshot_send(cmesh_oneshot_sender *tx, const void *msg,
				 const void *trail, size_t trail_len);

/* Frees the sender without sending. NULL is a no-op. */
CMESH_API void cmesh_oneshot_sender_free(cmesh_oneshot_sender *tx);

/* As cmesh_sender_is_closed(): 1 if the receiver is gone, 0, or -errno. */
CMESH_API int cmesh_oneshot_sender_is_closed(const cmesh_oneshot_sender *tx);

/**
 * Receives the value, as cmesh_receiver_*recv*: returns the trailing-byte
 * count, or -EAGAIN, -ETIMEDOUT, -ECANCELED (recv_ctx), -EPIPE (sender
 * freed without sending, or the value was already received), -EMSGSIZE,
 * -EINVAL.
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

/* Frees the receiver (a pending value's resources are released). */
CMESH_API void cmesh_oneshot_receiver_free(cmesh_oneshot_receiver *rx);

CMESH_END_DECLS

#endif
