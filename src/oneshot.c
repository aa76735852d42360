/* SPDX-License-Identifier: MIT */
/*
 * oneshot.c - one value, once: a queue with two slots and one sender
 * reference, which sending consumes.
 */
#include "endpoint.h"

#include "env.h"
#include "port.h"
#include "queue.h"
#include "type.h"
#include "waitset.h"

#include <errno.h>
#include <stdlib.h>

int cmesh_oneshot_new(const cmesh_type *type, cmesh_oneshot_sender **out_tx,
		      cmesh_oneshot_receiver **out_rx)
{
	struct cmesh__queue_opts qo = { 0 };
	const cmesh_env *env;
	int r;

	if (!out_tx || !out_rx || cmesh_type_check(type))
		return -EINVAL;
	r = cmesh__env_get(&env);
	if (r)
		return r;
	qo.ring_bytes = 0; /* the minimum: two slots */
	qo.spin_ns = env->spin_ns;
	qo.max_trail = env->max_message;
	qo.max_backlog = env->max_backlog;
	qo.nsenders = 1;
	qo.oneshot = true;
	return cmesh__endpoint_pair_new(type, &qo, (void **)out_tx,
					(void **)out_rx);
}

int cmesh_oneshot_send(cmesh_oneshot_sender *tx, const void *msg,
		       const void *trail, size_t trail_len)
{
	int r;

	if (!tx || !msg) {
		cmesh_oneshot_sender_free(tx);
		return -EINVAL;
	}
	if (cmesh__type_holds(cmesh__queue_type(tx->q), msg, tx))
		return -EINVAL; /* sending tx inside itself: nothing taken */
	/* The put after the send writes it (queue.h). */
	cmesh__queue_prefetch_state(tx->q);
	if (trail_len && !trail) {
		cmesh__type_release(cmesh__queue_type(tx->q), msg);
		r = -EINVAL;
	} else if (cmesh__queue_has_ports(tx->q)) {
		r = cmesh__port_send(tx->q, msg, trail, trail_len);
	} else {
		r = cmesh__queue_send(tx->q, msg, trail, trail_len);
	}
	cmesh_oneshot_sender_free(tx);
	return r;
}

int cmesh_oneshot_sender_is_closed(const cmesh_oneshot_sender *tx)
{
	return tx ? cmesh__queue_rx_gone(tx->q) : -EINVAL;
}

void cmesh_oneshot_sender_free(cmesh_oneshot_sender *tx)
{
	struct cmesh__queue *q;
	bool spare;

	if (!tx)
		return;
	q = tx->q;
	spare = cmesh__queue_is_spare(q, tx);
	cmesh__queue_sender_put(q);
	if (!spare)
		free(tx);
}

/* The value came: no sender can publish again (see receiver_free). */
static int got(cmesh_oneshot_receiver *rx, int r)
{
	if (r >= 0)
		cmesh__queue_senders_done(rx->q);
	return r;
}

/*
 * The value was taken already: -EPIPE at once (its sender may not have
 * let go yet, so the queue itself does not say closed for a moment).
 */
static bool taken(const cmesh_oneshot_receiver *rx)
{
	return rx && cmesh__queue_senders_are_done(rx->q);
}

int cmesh_oneshot_try_recv(cmesh_oneshot_receiver *rx, void *out_msg,
			   void *out_trail, size_t trail_cap)
{
	int r;

	if (taken(rx))
		return -EPIPE;
	r = cmesh__endpoint_recv(rx ? rx->q : NULL, 0, out_msg, out_trail,
				 trail_cap);
	return r == -ETIMEDOUT ? -EAGAIN : got(rx, r);
}

int cmesh_oneshot_recv(cmesh_oneshot_receiver *rx, void *out_msg,
		       void *out_trail, size_t trail_cap)
{
	if (taken(rx))
		return -EPIPE;
	return got(rx,
		   cmesh__endpoint_recv(rx ? rx->q : NULL, CMESH_DEADLINE_NONE,
					out_msg, out_trail, trail_cap));
}

int cmesh_oneshot_recv_deadline(cmesh_oneshot_receiver *rx, int64_t deadline,
				void *out_msg, void *out_trail,
				size_t trail_cap)
{
	if (taken(rx))
		return -EPIPE;
	return got(rx, cmesh__endpoint_recv(rx ? rx->q : NULL, deadline,
					    out_msg, out_trail, trail_cap));
}

int cmesh_oneshot_recv_ctx(cmesh_oneshot_receiver *rx, const cmesh_ctx *ctx,
			   void *out_msg, void *out_trail, size_t trail_cap)
{
	if (taken(rx))
		return -EPIPE;
	return got(rx, cmesh__endpoint_recv_ctx(rx ? rx->q : NULL, ctx, out_msg,
						out_trail, trail_cap));
}

void cmesh_oneshot_receiver_free(cmesh_oneshot_receiver *rx)
{
	if (!rx)
		return;
	cmesh__waitset_leave(rx->q);
	cmesh__queue_receiver_close(rx->q);
	free(rx);
}
