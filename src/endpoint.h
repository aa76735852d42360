/* SPDX-License-Identifier: MIT */
/*
 * endpoint.h - the public handles and the operations on an endpoint by
 * field kind (channel.c gives the resource walk, type.c, its hooks from
 * these). Every handle is a reference to one queue: moving a handle
 * inside a process moves the pointer.
 */
#ifndef CMESH_ENDPOINT_H
#define CMESH_ENDPOINT_H

#include "queue.h"

#include <cmesh/channel.h>
#include <cmesh/oneshot.h>

struct cmesh_sender {
	struct cmesh__queue *q;
};

struct cmesh_receiver {
	struct cmesh__queue *q;
};

struct cmesh_oneshot_sender {
	struct cmesh__queue *q;
};

struct cmesh_oneshot_receiver {
	struct cmesh__queue *q;
};

_Static_assert(sizeof(struct cmesh_sender) == sizeof(struct cmesh_receiver) &&
		       sizeof(struct cmesh_sender) ==
			       sizeof(struct cmesh_oneshot_sender) &&
		       sizeof(struct cmesh_sender) ==
			       sizeof(struct cmesh_oneshot_receiver),
	       "every handle is one queue pointer");

/*
 * Creates a queue and two handles on it (any of the handle types above).
 * Errors: -ENOMEM, or what cmesh__queue_new returns.
 */
int cmesh__endpoint_pair_new(const cmesh_type *type,
			     const struct cmesh__queue_opts *qo, void **out_tx,
			     void **out_rx);

/*
 * The first channel pair of a link: a sender whose queue writes to `out`
 * and a receiver whose queue reads from `in`; each queue takes a link
 * reference. `qo` gives spin and limits.
 */
int cmesh__endpoint_remote_pair(const cmesh_type *out_type,
				const cmesh_type *in_type,
				struct cmesh__lane *out, struct cmesh__lane *in,
				const struct cmesh__queue_opts *qo,
				cmesh_sender **out_tx, cmesh_receiver **out_rx);

/*
 * Receive on an endpoint's queue with argument checks; deadline 0 tries
 * once (-ETIMEDOUT when nothing is ready). Shared by channel and oneshot.
 */
int cmesh__endpoint_recv(struct cmesh__queue *q, int64_t deadline,
			 void *out_msg, void *out_trail, size_t cap);

/* The same for as long as `ctx` lasts (NULL: no limit). */
int cmesh__endpoint_recv_ctx(struct cmesh__queue *q, const cmesh_ctx *ctx,
			     void *out_msg, void *out_trail, size_t cap);

/* A handle (of any kind) on `q`, which it then holds; NULL: no memory. */
void *cmesh__endpoint_handle_new(struct cmesh__queue *q);

/* Frees a handle whose queue reference went elsewhere (a moved receiver). */
void cmesh__endpoint_shell_free(void *handle);

/* The queue behind an endpoint handle of field kind `kind`. */
struct cmesh__queue *cmesh__endpoint_queue(uint32_t kind, void *handle);

/* Frees an endpoint handle of field kind `kind`. */
void cmesh__endpoint_free(uint32_t kind, void *handle);

/*
 * Frees an endpoint handle (a channel's or a oneshot's end) of field kind
 * `kind` as failed: its peer sees -ECONNRESET, not closed (bridge.c).
 */
void cmesh__endpoint_fail(uint32_t kind, void *handle);

/* Called before the handle moves in a message: leaves any waitset. */
void cmesh__endpoint_prepare_move(uint32_t kind, void *handle);

#endif
