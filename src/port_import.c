/* SPDX-License-Identifier: MIT */
/*
 * port_import.c - the receiving side of the port layer (port.c has its
 * overview, the export and the send): the ports that arrive with a message
 * become endpoints here (import): a lane bound to the peer's half,
 * answered with ours, and a queue and handle on it, written into the
 * message's field; a context's port becomes a context (link_ctx.c). A
 * port that may end its forwarder (HOME, REDIRECT) is port_home.c's to
 * take first, and a REDIRECT's claim is made there.
 */
#include "port.h"
#include "port_int.h"

#include "endpoint.h"
#include "type.h"

#include "proto.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

/*
 * The endpoint for port `d` (the peer's half in `fd`, taken) in field `f`
 * of a message that came over `link`: *out is its handle.
 */
static int import(struct cmesh__link *link, const cmesh_field *f,
		  const struct cmesh_ctl_port *d, int fd, const cmesh_env *env,
		  void **out)
{
	struct cmesh__queue_opts o = { 0 };
	struct cmesh__queue *q;
	struct cmesh__lane *ln;
	bool sending = cmesh__port_is_sending(f->kind), listed;
	uint64_t tok[2] = { 0, 0 };
	int r;

	if (f->kind == CMESH_FIELD_KIND_CTX || d->kind == CMESH_PORT_CTX) {
		/* A context's port in a context's field, and only there. */
		r = f->kind == CMESH_FIELD_KIND_CTX &&
				    d->kind == CMESH_PORT_CTX ?
			    cmesh__link_ctx_import(link, d, (cmesh_ctx **)out) :
			    -EPROTO;
		if (r == -EPROTO) {
			cmesh__link_port_drop(link, d, fd, false);
			cmesh__link_fail(link, -EPROTO);
		}
		return r;
	}
	/*
	 * A port that came before the link failed arrives failed: its peer
	 * is in the process we lost, and its lane may be gone already (the
	 * link frees kept lanes once it failed: a REUSE would name none).
	 */
	/*
	 * Only a reply port (a oneshot's sender) is kept for reuse; only a
	 * channel's receiver comes home.
	 */
	if (((d->flags & (CMESH_PORT_F_POOLABLE | CMESH_PORT_F_REUSE)) &&
	     f->kind != CMESH_FIELD_KIND_ONESHOT_SENDER) ||
	    ((d->flags & CMESH_PORT_F_HOME) &&
	     f->kind != CMESH_FIELD_KIND_RECEIVER) ||
	    ((d->flags & CMESH_PORT_F_REDIRECT) &&
	     f->kind != CMESH_FIELD_KIND_RECEIVER &&
	     f->kind != CMESH_FIELD_KIND_SENDER) ||
	    d->reserved ||
	    (!(d->flags & CMESH_PORT_F_HOME) && d->home &&
	     !((d->flags & CMESH_PORT_F_REDIRECT) &&
	       f->kind == CMESH_FIELD_KIND_SENDER))) {
		cmesh__link_port_drop(link, d, fd, false);
		cmesh__link_fail(link, -EPROTO);
		return -EPROTO;
	}
	/*
	 * A channel's receiver from its senders' process (not one that
	 * claims them from elsewhere, nor one that may come home): the lane
	 * it reads gets a token, which the answer takes to them, so that a
	 * sender of it sent on from there may claim it here. So does a
	 * channel's sender from its receiver's process (its port names that
	 * process), for the lane it writes: that receiver, sent on from
	 * there, claims it here, and, sent here, comes home to its queue.
	 */
	listed = !(d->flags & (CMESH_PORT_F_HOME | CMESH_PORT_F_FAILED)) &&
		 (f->kind == CMESH_FIELD_KIND_RECEIVER ?
			  !(d->flags & CMESH_PORT_F_REDIRECT) ||
				  d->node == cmesh__link_peer_proc(link) :
			  f->kind == CMESH_FIELD_KIND_SENDER &&
				  (d->flags & CMESH_PORT_F_REDIRECT) &&
				  d->node == cmesh__link_peer_proc(link));
	if (listed) {
		cmesh__port_claims_ready();
		/*
		 * Listed under the token the peer chose for it (`list`: it
		 * names our end before the answer comes, early_token()),
		 * unless that one is listed already (home_set() keeps the
		 * first; claims of it then find not this lane), else a
		 * token of ours.
		 */
		tok[0] = d->list[0];
		tok[1] = d->list[1];
		if (!(tok[0] | tok[1]))
			cmesh__link_token_new(tok);
		listed = tok[0] | tok[1];
	}
	if ((d->flags & CMESH_PORT_F_FAILED) || cmesh__link_failed(link)) {
		if (fd >= 0)
			close(fd);
		r = cmesh__lane_new_failed(link, sending, f->type, &ln);
		listed = false;
	} else {
		r = cmesh__link_lane_import(link, d, fd, f->type,
					    env->max_backlog, env->spin_ns,
					    listed ? tok : NULL, &ln);
		/* The link failed meanwhile (a REUSE waited): as above. */
		if (r == -ECONNRESET) {
			r = cmesh__lane_new_failed(link, sending, f->type, &ln);
			listed = false;
		}
	}
	if (r) {
		if (r == -EPROTO)
			cmesh__link_fail(link, -EPROTO);
		return r;
	}
	/* A forwarder's lane may name senders elsewhere (HINTS). */
	ln->hintable = f->kind == CMESH_FIELD_KIND_RECEIVER;
	if ((d->flags & CMESH_PORT_F_HOME) && !ln->failed_alone &&
	    cmesh__port_import_home(link, d, f->type, ln, out) == 0)
		return 0;
	if ((d->flags & CMESH_PORT_F_REDIRECT) && !ln->failed_alone &&
	    f->kind == CMESH_FIELD_KIND_SENDER && d->node == cmesh__proc_id()) {
		if (cmesh__port_sender_home(d, f->type, ln, out) == 0)
			return 0;
	}
	/*
	 * The local tier is unused: two slots. (A sender that comes to a
	 * channel's receiver here, cmesh__queue_gate_local(), makes it a
	 * local queue of two slots: past two messages in flight its sends
	 * take the overflow list. A ring of the default size measured a
	 * slower moved-channel round trip in bench_moves, 2026-12-06.)
	 */
	o.ring_bytes = 0;
	o.spin_ns = env->spin_ns;
	o.max_trail = ln->max_trail;
	o.max_backlog = env->max_backlog;
	o.nsenders = sending ? 1 : 0;
	o.tx_lane = sending ? ln : NULL;
	o.rx_lane = sending ? NULL : ln;
	/* A reply port's next use: the queue of its last, if we parked it. */
	q = (d->flags & CMESH_PORT_F_REUSE) && !ln->failed_alone ?
		    cmesh__queue_unpark(ln, f->type) :
		    NULL;
	r = q ? 0 : cmesh__queue_new(f->type, &o, &q);
	if (!r) {
		/* A oneshot's sender (a reply port) is the queue's own. */
		*out = f->kind == CMESH_FIELD_KIND_ONESHOT_SENDER ?
			       cmesh__queue_spare_tx(q) :
			       cmesh__endpoint_handle_new(q);
		if (!*out) {
			cmesh__queue_discard(q);
			r = -ENOMEM;
		}
	}
	if (r) {
		if (ln->failed_alone) {
			cmesh__lane_free(ln);
			return r;
		}
		/* The peer has our half: tell it the endpoint is gone. */
		if (sending)
			cmesh__lane_close_tx(ln);
		else
			cmesh__lane_close_rx(ln);
		cmesh__link_lane_release(ln);
		return r;
	}
	cmesh__link_get(link); /* the queue's, as for any lane */
	if (listed && !ln->failed_alone) {
		/* Before it is listed: home_set keeps a lane's own token. */
		ln->token[0] = tok[0];
		ln->token[1] = tok[1];
		if (sending) {
			/*
			 * A claim or a homecoming seals it and the queue's
			 * ring (queue_move.c): before the handle goes out, as
			 * in a queue whose receiver left.
			 */
			ln->sealable = true;
			cmesh__link_lane_home_set(ln, q);
		} else {
			cmesh__queue_claimable_rx(q);
		}
	}
	if ((d->flags & CMESH_PORT_F_REDIRECT) && !ln->failed_alone)
		cmesh__port_claim_peer(link, d, ln, q, sending);
	return 0;
}

int cmesh__port_recv(struct cmesh__queue *q, int64_t deadline, void *msg,
		     void *trail, size_t cap)
{
	const cmesh_type *t = cmesh__queue_type(q);
	struct cmesh__ports_in pin;
	const cmesh_env *env;
	uint32_t k = 0;
	int r, err = 0;

	pin.n = 0;
	r = cmesh__queue_recv_ports(q, deadline, msg, trail, cap, &pin);
	if (r < 0 || !pin.n)
		return r;
	err = cmesh__env_get(&env);
	for (uint32_t i = 0; i < t->nfields && k < pin.n; i++) {
		const cmesh_field *f = &t->fields[i];
		void *h = NULL;

		if (!(pin.mask & (1ull << i)))
			continue;
		if (!err)
			err = import(pin.lane->link, f, &pin.desc[k],
				     pin.fds[k], env, &h);
		else
			cmesh__link_port_drop(pin.lane->link, &pin.desc[k],
					      pin.fds[k], false);
		cmesh__port_set_field(msg, f, h);
		k++;
	}
	if (err) {
		/* A message missing an endpoint is not delivered at all. */
		cmesh__type_release(t, msg);
		return err;
	}
	return r;
}
