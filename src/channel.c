/* SPDX-License-Identifier: MIT */
/*
 * channel.c - the public channel API over the queue, and the endpoint
 * operations the resource walk uses.
 */
#include "endpoint.h"

#include "cancel.h"
#include "env.h"
#include "lane.h"
#include "link.h"
#include "opts.h"
#include "port.h"
#include "queue.h"
#include "slots.h"
#include "type.h"
#include "waitset.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static int queue_opts(const cmesh_channel_opts *user,
		      struct cmesh__queue_opts *out)
{
	const cmesh_env *env;
	cmesh_channel_opts o;
	int r;

	r = cmesh__opts_copy(&o, sizeof(o), user);
	if (r)
		return r;
	r = cmesh__env_get(&env);
	if (r)
		return r;
	if (o.flags || o.reserved)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	r = cmesh__opts_ring_size(o.ring_size, env, &out->ring_bytes);
	if (!r)
		r = cmesh__opts_spin(o.spin_ns, env, &out->spin_ns);
	out->max_trail = env->max_message;
	if (!r)
		r = cmesh__opts_max_backlog(o.max_backlog, env,
					    &out->max_backlog);
	out->nsenders = 1;
	return r;
}

/*
 * A handle of any kind holding `q`. Every handle type is { struct
 * cmesh__queue *q; } (endpoint.h); the pointer is copied in as bytes so the
 * same code serves them all.
 */
static void *handle_new(struct cmesh__queue *q)
{
	void *h = malloc(sizeof(struct cmesh_sender));

	if (h)
		memcpy(h, &q, sizeof(q));
	return h;
}

void *cmesh__endpoint_handle_new(struct cmesh__queue *q)
{
	return handle_new(q);
}

void cmesh__endpoint_shell_free(void *handle)
{
	free(handle);
}

/*
 * Two new handles, on `qtx` and on `qrx` (the same queue for a local
 * pair; `spare`: the sender's is the queue's own, a oneshot's). On failure
 * the queues are freed and nothing is left.
 */
static int handles_new(struct cmesh__queue *qtx, struct cmesh__queue *qrx,
		       bool spare, void **out_tx, void **out_rx)
{
	void *tx = spare ? cmesh__queue_spare_tx(qtx) : handle_new(qtx);
	void *rx = handle_new(qrx);

	if (!tx || !rx) {
		if (!spare)
			free(tx);
		free(rx);
		cmesh__queue_discard(qtx);
		if (qrx != qtx)
			cmesh__queue_discard(qrx);
		return -ENOMEM;
	}
	*out_tx = tx;
	*out_rx = rx;
	return 0;
}

/* The one constructor behind channels and oneshots: a queue, two handles. */
int cmesh__endpoint_pair_new(const cmesh_type *type,
			     const struct cmesh__queue_opts *qo, void **out_tx,
			     void **out_rx)
{
	struct cmesh__queue *q;
	int r = cmesh__queue_new(type, qo, &q);

	return r ? r : handles_new(q, q, qo->oneshot, out_tx, out_rx);
}

int cmesh__endpoint_remote_pair(const cmesh_type *out_type,
				const cmesh_type *in_type,
				struct cmesh__lane *out, struct cmesh__lane *in,
				const struct cmesh__queue_opts *qo,
				cmesh_sender **out_tx, cmesh_receiver **out_rx)
{
	struct cmesh__queue_opts o = *qo;
	struct cmesh__queue *qtx, *qrx;
	int r;

	o.nsenders = 1;
	o.tx_lane = out;
	o.rx_lane = NULL;
	r = cmesh__queue_new(out_type, &o, &qtx);
	if (r)
		return r;
	o.nsenders = 0;
	o.tx_lane = NULL;
	o.rx_lane = in;
	in->hintable = true; /* a channel receiver's lane (lane.h) */
	r = cmesh__queue_new(in_type, &o, &qrx);
	if (r) {
		cmesh__queue_discard(qtx);
		return r;
	}
	r = handles_new(qtx, qrx, false, (void **)out_tx, (void **)out_rx);
	if (r)
		return r;
	/* Each queue holds the link until it is freed. */
	cmesh__link_get(out->link);
	cmesh__link_get(in->link);
	return 0;
}

int cmesh_channel_new(const cmesh_type *type, const cmesh_channel_opts *opts,
		      cmesh_sender **out_tx, cmesh_receiver **out_rx)
{
	struct cmesh__queue_opts qo;
	int r;

	if (!out_tx || !out_rx || cmesh_type_check(type))
		return -EINVAL;
	r = queue_opts(opts, &qo);
	if (r)
		return r;
	return cmesh__endpoint_pair_new(type, &qo, (void **)out_tx,
					(void **)out_rx);
}

int cmesh_sender_clone(cmesh_sender *tx, cmesh_sender **out_tx)
{
	cmesh_sender *c;

	if (!tx || !out_tx)
		return -EINVAL;
	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	cmesh__queue_sender_get(tx->q);
	c->q = tx->q;
	*out_tx = c;
	return 0;
}

void cmesh_sender_free(cmesh_sender *tx)
{
	if (!tx)
		return;
	cmesh__queue_sender_put(tx->q);
	free(tx);
}

const cmesh_type *cmesh_sender_type(const cmesh_sender *tx)
{
	return tx ? cmesh__queue_type(tx->q) : NULL;
}

/*
 * The checks of every send: -EINVAL for bad arguments (a message whose
 * trail is missing is released; one that carries `tx` itself is not
 * taken at all), else 0.
 */
static int send_args(cmesh_sender *tx, const void *msg, const void *trail,
		     size_t trail_len)
{
	const cmesh_type *t;

	if (!tx || !msg)
		return -EINVAL;
	t = cmesh__queue_type(tx->q);
	/* A message may not carry the sender it is sent with. */
	if (t->nfields && cmesh__type_holds(t, msg, tx))
		return -EINVAL;
	if (trail_len && !trail) {
		cmesh__type_release(t, msg);
		return -EINVAL;
	}
	return 0;
}

int cmesh_sender_try_send(cmesh_sender *tx, const void *msg, const void *trail,
			  size_t trail_len)
{
	const cmesh_type *t;
	int r = send_args(tx, msg, trail, trail_len);

	if (r)
		return r;
	t = cmesh__queue_type(tx->q);
	/* An endpoint that went as a port cannot come back on -EAGAIN. */
	if (cmesh__queue_has_ports(tx->q) && cmesh__type_holds_any(t, msg)) {
		cmesh__type_release(t, msg);
		return -EOPNOTSUPP;
	}
	return cmesh__queue_try_send(tx->q, msg, trail, trail_len);
}

int cmesh_sender_is_closed(const cmesh_sender *tx)
{
	return tx ? cmesh__queue_rx_gone(tx->q) : -EINVAL;
}

int cmesh_sender_flush(cmesh_sender *tx, int64_t deadline)
{
	if (!tx)
		return -EINVAL;
	return cmesh__queue_flush(tx->q, deadline);
}

int cmesh_sender_flush_ctx(cmesh_sender *tx, const cmesh_ctx *ctx)
{
	struct cmesh__ctx_scope sc;
	int r;

	if (!tx)
		return -EINVAL;
	r = cmesh__queue_flush(tx->q,
			       cmesh__ctx_begin(ctx, CMESH_DEADLINE_NONE, &sc));
	cmesh__ctx_end(&sc);
	return r;
}

int cmesh_sender_send(cmesh_sender *tx, const void *msg, const void *trail,
		      size_t trail_len)
{
	int r = send_args(tx, msg, trail, trail_len);

	if (r)
		return r;
	if (cmesh__queue_has_ports(tx->q))
		return cmesh__port_send(tx->q, msg, trail, trail_len);
	return cmesh__queue_send(tx->q, msg, trail, trail_len);
}

int cmesh_receiver_stats_get(const cmesh_receiver *rx,
			     cmesh_receiver_stats *out)
{
	cmesh_receiver_stats s = { 0 };

	if (!rx || !out)
		return -EINVAL;
	cmesh__queue_stats(rx->q, &s);
	return cmesh__opts_out(out,
			       offsetof(cmesh_receiver_stats, overflow_bytes),
			       &s, sizeof(s));
}

void cmesh_receiver_free(cmesh_receiver *rx)
{
	if (!rx)
		return;
	cmesh__waitset_leave(rx->q);
	cmesh__queue_receiver_close(rx->q);
	free(rx);
}

void cmesh_channel_trim(void)
{
	cmesh__slots_trim();
	cmesh__queue_cache_trim();
}

const cmesh_type *cmesh_receiver_type(const cmesh_receiver *rx)
{
	return rx ? cmesh__queue_type(rx->q) : NULL;
}

int cmesh__endpoint_recv(struct cmesh__queue *q, int64_t deadline,
			 void *out_msg, void *out_trail, size_t cap)
{
	if (!q || !out_msg || (cap && !out_trail))
		return -EINVAL;
	if (cmesh__queue_has_ports(q))
		return cmesh__port_recv(q, deadline, out_msg, out_trail, cap);
	return cmesh__queue_recv(q, deadline, out_msg, out_trail, cap);
}

int cmesh__endpoint_recv_ctx(struct cmesh__queue *q, const cmesh_ctx *ctx,
			     void *out_msg, void *out_trail, size_t cap)
{
	struct cmesh__ctx_scope sc;
	int r;

	/* Every park below gives up once `ctx` is cancelled (park.h). */
	r = cmesh__endpoint_recv(
		q, cmesh__ctx_begin(ctx, CMESH_DEADLINE_NONE, &sc), out_msg,
		out_trail, cap);
	cmesh__ctx_end(&sc);
	return r;
}

int cmesh_receiver_try_recv(cmesh_receiver *rx, void *out_msg, void *out_trail,
			    size_t trail_cap)
{
	int r = cmesh__endpoint_recv(rx ? rx->q : NULL, 0, out_msg, out_trail,
				     trail_cap);

	return r == -ETIMEDOUT ? -EAGAIN : r;
}

int cmesh_receiver_recv(cmesh_receiver *rx, void *out_msg, void *out_trail,
			size_t trail_cap)
{
	return cmesh__endpoint_recv(rx ? rx->q : NULL, CMESH_DEADLINE_NONE,
				    out_msg, out_trail, trail_cap);
}

int cmesh_receiver_recv_deadline(cmesh_receiver *rx, int64_t deadline,
				 void *out_msg, void *out_trail,
				 size_t trail_cap)
{
	return cmesh__endpoint_recv(rx ? rx->q : NULL, deadline, out_msg,
				    out_trail, trail_cap);
}

int cmesh_receiver_recv_ctx(cmesh_receiver *rx, const cmesh_ctx *ctx,
			    void *out_msg, void *out_trail, size_t trail_cap)
{
	return cmesh__endpoint_recv_ctx(rx ? rx->q : NULL, ctx, out_msg,
					out_trail, trail_cap);
}

int cmesh_receiver_try_peek(cmesh_receiver *rx)
{
	return rx ? cmesh__queue_peek(rx->q) : -EINVAL;
}

/* ---- endpoint operations by field kind (type.c's hooks, below) ---- */

struct cmesh__queue *cmesh__endpoint_queue(uint32_t kind, void *handle)
{
	switch (kind) {
	case CMESH_FIELD_KIND_SENDER:
		return ((cmesh_sender *)handle)->q;
	case CMESH_FIELD_KIND_RECEIVER:
		return ((cmesh_receiver *)handle)->q;
	case CMESH_FIELD_KIND_ONESHOT_SENDER:
		return ((cmesh_oneshot_sender *)handle)->q;
	default:
		return ((cmesh_oneshot_receiver *)handle)->q;
	}
}

void cmesh__endpoint_free(uint32_t kind, void *handle)
{
	switch (kind) {
	case CMESH_FIELD_KIND_SENDER:
		cmesh_sender_free(handle);
		break;
	case CMESH_FIELD_KIND_RECEIVER:
		cmesh_receiver_free(handle);
		break;
	case CMESH_FIELD_KIND_ONESHOT_SENDER:
		cmesh_oneshot_sender_free(handle);
		break;
	case CMESH_FIELD_KIND_CTX:
		cmesh_ctx_free(handle);
		break;
	default:
		cmesh_oneshot_receiver_free(handle);
		break;
	}
}

void cmesh__endpoint_fail(uint32_t kind, void *handle)
{
	struct cmesh__queue *q = cmesh__endpoint_queue(kind, handle);
	bool spare = cmesh__queue_is_spare(q, handle);

	if (kind == CMESH_FIELD_KIND_SENDER ||
	    kind == CMESH_FIELD_KIND_ONESHOT_SENDER) {
		cmesh__queue_sender_fail(q);
	} else {
		cmesh__waitset_leave(q);
		cmesh__queue_receiver_fail(q);
	}
	if (!spare)
		free(handle);
}

void cmesh__endpoint_prepare_move(uint32_t kind, void *handle)
{
	if (kind == CMESH_FIELD_KIND_RECEIVER ||
	    kind == CMESH_FIELD_KIND_ONESHOT_RECEIVER)
		cmesh__waitset_leave(cmesh__endpoint_queue(kind, handle));
}

static const cmesh_type *endpoint_type_of(uint32_t kind, void *handle,
					  uint64_t *fp)
{
	struct cmesh__queue *q = cmesh__endpoint_queue(kind, handle);

	if (fp)
		*fp = cmesh__queue_fingerprint(q);
	return cmesh__queue_type(q);
}

static const struct cmesh__type_hooks type_hooks = {
	.type_of = endpoint_type_of,
	.prepare_move = cmesh__endpoint_prepare_move,
	.free = cmesh__endpoint_free,
};

/* Before any handle exists: the library's load. */
__attribute__((constructor)) static void type_hooks_set(void)
{
	cmesh__type_hooks_set(&type_hooks);
}
