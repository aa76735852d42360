/* SPDX-License-Identifier: MIT */
/*
 * port.c - endpoints that cross a link inside a message: the port layer
 * between the public handles (channel.c, oneshot.c) and the queues and
 * lanes below. This file: the export and the send; the import and the
 * receive are port_import.c, the imports that end a forwarder port_home.c
 * (port_int.h: what they share).
 *
 * Sending. A message with endpoint fields that goes to another process is
 * copied, and each endpoint in it becomes a port on the link the message
 * takes (export): a sender (or oneshot sender) whose receiver is here
 * gives that receiver a new in lane; a receiver (or oneshot receiver)
 * whose senders are here moves: its queue forwards what it holds, then
 * its senders write to a new out lane. The port descriptor and our half
 * of the lane go in the message's ATTACH; the copy goes with its endpoint
 * fields NULL (no pointer of ours ever crosses). The handle is consumed.
 *
 * Receiving (port_import.c). The ports that arrive with a message become
 * endpoints here (import): a lane bound to the peer's half, answered with
 * ours, and a queue and handle on it, written into the message's field.
 *
 * Moving again. An endpoint whose peer is itself in another process (a
 * sender whose receiver is remote, a receiver whose senders are, or that
 * has lanes of its own), or a sender whose receiver here cannot take a
 * lane (it is sent on, say), is not moved itself: a new pair of its type
 * is made, the new end of its kind goes as above, and the other end is
 * joined to it by a forwarder in this process (bridge.c), which stays
 * for the channel's life. So a chain of moves is a chain of forwarders,
 * each a hop of its own; per-sender order holds along it, and the failure
 * of any process on it fails the channel (-ECONNRESET) at both ends.
 *
 * Some moves end their forwarder (their import: port_home.c). A channel
 * receiver going back to the process of all its senders over the lane it
 * reads is taken back there (HOME). One whose senders are all in one
 * process, writing the one lane it reads, carries that process's name and
 * the lane's token (REDIRECT): the process it arrives in claims the
 * senders if it is linked with theirs (link_claim.c), and reads them
 * directly once the forwarded lane (everything sent before) has ended;
 * the forwarder ends with it. A channel sender claims its receiver the
 * same way: its new lane is read there once the forwarded one has ended,
 * or, if clones of it still write its old lane, once that lane passed the
 * MARK its forwarder writes when it ends (a mark given here, export()). A
 * sender with nothing upstream to claim names its own forwarder instead
 * (REDIRECT to us): sent on again from where it went, it claims that
 * forwarder's receiver, so such a chain keeps one hop, not one per move.
 */
#include "port.h"
#include "port_int.h"

#include "bridge.h"
#include "endpoint.h"
#include "env.h"
#include "lane.h"
#include "link.h"
#include "log.h"
#include "queue.h"
#include "type.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *field_at(const void *msg, const cmesh_field *f)
{
	void *p;

	memcpy(&p, (const char *)msg + f->offset, sizeof(p));
	return p;
}

static bool is_oneshot(uint32_t kind)
{
	return kind == CMESH_FIELD_KIND_ONESHOT_SENDER ||
	       kind == CMESH_FIELD_KIND_ONESHOT_RECEIVER;
}

static int send_on_lane(struct cmesh__lane *ln, const void *msg,
			const void *trail, size_t len);
static int send_ports_on_lane(struct cmesh__lane *ln, const void *msg,
			      const void *trail, size_t len);

/* A forwarded message of a receiver that moves (queue_move.c). */
static int forward(void *ctx, struct cmesh__lane *ln, void *msg, void *trail,
		   size_t len)
{
	(void)ctx;
	return send_on_lane(ln, msg, trail, len);
}

/*
 * A channel endpoint's port *out: its peer is in process `node`, whose
 * token `t` names the lane it uses; a claim may take it (shm/proto.h
 * CMESH_PORT_F_REDIRECT). Nothing without a token.
 */
static void redirect_to(struct cmesh__port_out *out, uint64_t node,
			const uint64_t t[2])
{
	if (!(t[0] | t[1]) || !node)
		return;
	out->desc.flags |= CMESH_PORT_F_REDIRECT;
	out->desc.node = node;
	out->desc.token[0] = t[0];
	out->desc.token[1] = t[1];
}

/* The same for our lane `ln`, with a home here: its own token. */
static void redirect_to_us(struct cmesh__port_out *out, struct cmesh__lane *ln)
{
	uint64_t t[2];

	cmesh__link_lane_token(ln, t);
	redirect_to(out, cmesh__proc_id(), t);
}

/*
 * A channel endpoint's new lane `ln` on `link`, before it is published:
 * a token for the peer to list its end under (the port's `list`, set by
 * export()), the peer's name for that end at once, not only once the
 * answer came: the endpoint's peer sent on before then may claim it there.
 */
static void early_token(struct cmesh__link *link, struct cmesh__lane *ln)
{
	uint64_t t[2];

	cmesh__link_token_new(t);
	if (!(t[0] | t[1]))
		return;
	ln->peer_token[0] = t[0];
	ln->peer_token[1] = t[1];
	ln->peer_node = cmesh__link_peer_proc(link);
	ln->peer_early = true;
}

/*
 * Makes a port of endpoint `h` (field kind `kind`), whose peer is here, on
 * `link`: fills *out. The handle is consumed on success only. -EOPNOTSUPP
 * (nothing done): its peer cannot take a lane here (a receiver that takes
 * no claims, waits behind a come-home gate, or has lanes of its own; one
 * that is moving).
 */
static int export_direct(struct cmesh__link *link, const cmesh_field *f,
			 void *h, const cmesh_env *env,
			 struct cmesh__port_out *out)
{
	struct cmesh__queue *q = cmesh__endpoint_queue(f->kind, h);
	const cmesh_type *t = cmesh__queue_type(q);
	bool sending = cmesh__port_is_sending(f->kind);
	struct cmesh__lane *kept;
	uint32_t cap;
	int r;

	r = cmesh__port_ring_cap(t, f->kind, env, &cap);
	if (r)
		return r;
	/*
	 * A kept rpc call's reply port (rpc.c): its queue kept its lane,
	 * which goes again, bound to the queue already. The call was kept
	 * for this link; the link failed or the peer dropped the lane since:
	 * the request fails as it would on that link.
	 */
	kept = f->kind == CMESH_FIELD_KIND_ONESHOT_SENDER ?
		       cmesh__queue_rebind(q) :
		       NULL;
	if (kept) {
		if (kept->type != t || kept->ring_cap != cap)
			return -EINVAL; /* never: rpc.c matched them */
		/*
		 * rpc.c matched the link too, but the request's receiver was
		 * claimed onto another one since: the call fails as if its
		 * request were dropped (ARCHITECTURE.md, Known limits).
		 */
		if (kept->link != link)
			return -EPIPE;
		r = cmesh__link_lane_rebind(kept, out);
		if (r)
			return cmesh__link_failed(link) ? -ECONNRESET : -EPIPE;
		cmesh__endpoint_free(f->kind, h); /* the lane holds a sender */
		return 0;
	}
	/*
	 * A sender goes: we consume its lane (is_out false). A oneshot's (a
	 * reply port) takes a lane kept from an earlier one if there is
	 * one: bound already, no memfd, no answer to wait for.
	 */
	r = f->kind == CMESH_FIELD_KIND_ONESHOT_SENDER ?
		    cmesh__link_lane_reuse(link, t, cap, out) :
		    -ENOENT;
	if (r == -ENOENT) {
		r = cmesh__link_lane_export(link, !sending, t, cap,
					    env->max_backlog, env->spin_ns,
					    out);
		if (!r && f->kind == CMESH_FIELD_KIND_ONESHOT_SENDER)
			cmesh__link_lane_poolable(out);
	}
	if (r)
		return r;
	if (sending) {
		/* A channel's sender may claim its receiver from elsewhere. */
		bool claimable = f->kind == CMESH_FIELD_KIND_SENDER;

		if (claimable) {
			cmesh__port_claims_ready();
			early_token(link, out->lane);
		}
		r = cmesh__queue_admit(q, 0, 0, out->lane, claimable);
		if (r == -EPIPE || r == -ECONNRESET) {
			/* Its receiver is gone: the port arrives closed (or
			 * failed, as that receiver did). */
			if (r == -EPIPE)
				cmesh__lane_close_rx(out->lane);
			else
				cmesh__lane_fail_rx(out->lane);
			cmesh__link_lane_release(out->lane);
			r = 0;
		} else if (!r && claimable) {
			redirect_to_us(out, out->lane);
		}
	} else {
		/* Before its lane gets a home (and a token): claims work. */
		cmesh__port_claims_ready();
		if (f->kind == CMESH_FIELD_KIND_RECEIVER)
			early_token(link, out->lane);
		cmesh__link_get(link); /* the queue's, for its tx lane */
		r = cmesh__queue_move_rx(q, out->lane, forward, NULL,
					 f->kind == CMESH_FIELD_KIND_RECEIVER);
		if (r)
			cmesh__link_put(link);
		else if (f->kind == CMESH_FIELD_KIND_RECEIVER)
			/* Its senders stay here: claim them from us. */
			redirect_to_us(out, out->lane);
	}
	if (r) {
		if (out->fd >= 0)
			close(out->fd);
		cmesh__link_lane_unsent(out->lane, false);
		cmesh__link_lane_release(out->lane); /* nothing owns it */
		return r;
	}
	if (sending)
		cmesh__endpoint_free(f->kind, h); /* the lane holds a sender */
	else
		cmesh__endpoint_shell_free(h); /* the lane is the receiver */
	return 0;
}

/* A port for endpoint `h` whose peer failed: it arrives failed. */
static void export_failed(struct cmesh__link *link, const cmesh_field *f,
			  void *h, struct cmesh__port_out *out)
{
	memset(out, 0, sizeof(*out));
	out->desc.kind = cmesh__port_is_sending(f->kind) ? CMESH_PORT_WRITE :
							   CMESH_PORT_READ;
	out->desc.flags = CMESH_PORT_F_FAILED;
	out->fd = -1;
	out->link = link;
	/* Failed, not freed: a receiver's other senders (its lanes from
	 * elsewhere, its senders here) hear -ECONNRESET, not a close. */
	cmesh__endpoint_fail(f->kind, h);
}

/*
 * export_direct() for an endpoint `h` whose peer is not here to take a
 * lane (in another process: a second move; or unable to): a new pair of
 * its type goes instead, its other end joined to `h` by a forwarder
 * (bridge.c) in this process, which writes `mark` (if any) when it ends.
 * Consumes `h` and `mark` on success only.
 */
/*
 * `hints` (a receiver's, or NULL): taken on success (its forwarder's, or
 * freed when its record could not go); the caller ends it on failure.
 */
static int export_forwarded(struct cmesh__link *link, const cmesh_field *f,
			    void *h, const cmesh_env *env,
			    struct cmesh__port_out *out,
			    struct cmesh__queue_mark *mark,
			    struct cmesh__hints **hints)
{
	const cmesh_type *t =
		cmesh__queue_type(cmesh__endpoint_queue(f->kind, h));
	bool oneshot = is_oneshot(f->kind),
	     sending = cmesh__port_is_sending(f->kind);
	uint32_t tx_kind = oneshot ? CMESH_FIELD_KIND_ONESHOT_SENDER :
				     CMESH_FIELD_KIND_SENDER;
	uint32_t rx_kind = oneshot ? CMESH_FIELD_KIND_ONESHOT_RECEIVER :
				     CMESH_FIELD_KIND_RECEIVER;
	void *tx, *rx;
	int r, gone = 0;

	if (sending) {
		/* A sender whose receiver is gone or failed arrives so. */
		gone = cmesh__queue_rx_gone(cmesh__endpoint_queue(f->kind, h));
		if (gone < 0) {
			export_failed(link, f, h, out);
			free(mark); /* no forwarder: nobody waits for it */
			return 0;
		}
	}
	r = oneshot ? cmesh_oneshot_new(t, (cmesh_oneshot_sender **)&tx,
					(cmesh_oneshot_receiver **)&rx) :
		      cmesh_channel_new(t, NULL, (cmesh_sender **)&tx,
					(cmesh_receiver **)&rx);
	if (r)
		return r;
	if (gone) {
		/* Its receiver gone first, the new sender arrives closed. */
		cmesh__endpoint_free(rx_kind, rx);
		r = export_direct(link, f, tx, env, out);
		if (r) {
			cmesh__endpoint_free(tx_kind, tx);
			return r;
		}
		cmesh__endpoint_free(f->kind, h);
		free(mark);
		return 0;
	}
	/* The new end of h's kind goes; the other stays, joined to h. */
	r = export_direct(link, f, sending ? tx : rx, env, out);
	if (r) {
		cmesh__endpoint_free(tx_kind, tx);
		cmesh__endpoint_free(rx_kind, rx);
		return r == -EOPNOTSUPP ? -ENOMEM : r; /* never: fresh pair */
	}
	/* Named on the lane the forwarder writes, before it starts. */
	if (*hints && !cmesh__port_hints_write(*hints, out->lane))
		*hints = NULL; /* freed: those senders stay forwarded */
	r = sending ? cmesh__bridge_start_then(
			      rx_kind, rx, f->kind, h,
			      mark ? cmesh__queue_mark_at_end : NULL, mark) :
		      cmesh__bridge_start_then(
			      f->kind, h, tx_kind, tx,
			      *hints ? cmesh__port_hints_end : NULL, *hints);
	if (r) {
		cmesh__lane_unsend_ports(out, 1, false);
		cmesh__endpoint_free(sending ? rx_kind : tx_kind,
				     sending ? rx : tx);
		return r;
	}
	*hints = NULL; /* the forwarder's */
	return 0;
}

/*
 * A channel receiver `h` whose senders are here and in other processes
 * (its lanes), none in another process of its own (split, queue.h): its
 * local senders write its new lane at once, no hop; a forwarder here
 * sends on what its lanes bring until they end (each of those senders,
 * named in `hints`, claims it where it goes), then goes. `hints` as for
 * export_forwarded(). -EOPNOTSUPP: nothing done (a forwarder takes all).
 */
static int export_split(struct cmesh__link *link, const cmesh_field *f, void *h,
			const cmesh_env *env, struct cmesh__port_out *out,
			struct cmesh__hints **hints)
{
	struct cmesh__queue *q = cmesh__endpoint_queue(f->kind, h);
	const cmesh_type *t = cmesh__queue_type(q);
	void *tx;
	uint32_t cap;
	int r;

	/* The forwarder's sender: none comes back from none left. */
	if (!cmesh__queue_sender_tryget(q))
		return -EOPNOTSUPP;
	tx = cmesh__endpoint_handle_new(q);
	r = tx ? cmesh__port_ring_cap(t, f->kind, env, &cap) : -ENOMEM;
	if (!r)
		r = cmesh__link_lane_export(link, true, t, cap,
					    env->max_backlog, env->spin_ns,
					    out);
	if (r) {
		if (tx)
			cmesh__endpoint_free(CMESH_FIELD_KIND_SENDER, tx);
		else
			cmesh__queue_sender_put(q);
		return r == -EOPNOTSUPP ? -ENOMEM : r;
	}
	/* Before its lane gets a home (cmesh__queue_split_end()). */
	cmesh__port_claims_ready();
	early_token(link, out->lane); /* as a plain move's (export()) */
	cmesh__link_get(link);	      /* the queue's, for its tx lane */
	r = cmesh__queue_move_rx_split(q, out->lane, forward, NULL);
	if (r) {
		cmesh__link_put(link);
		if (out->fd >= 0)
			close(out->fd);
		cmesh__link_lane_unsent(out->lane, false);
		cmesh__link_lane_release(out->lane); /* nothing owns it */
		cmesh__endpoint_free(CMESH_FIELD_KIND_SENDER, tx);
		return r; /* -EOPNOTSUPP: the forwarder's way */
	}
	/*
	 * Its senders here may be claimed from further on, once the split
	 * has ended (listed then, cmesh__queue_split_end(): the forwarder
	 * writes its MARKs on this lane, which a claim would seal); a claim
	 * before is answered LATER, and tried again until then.
	 */
	cmesh__link_lane_token_unlisted(out->lane);
	redirect_to_us(out, out->lane);
	if (cmesh__queue_lanes_done(q)) {
		/* No lane left (sealed: none comes): a plain move. */
		cmesh__queue_split_end(q);
		cmesh__endpoint_shell_free(h);
		cmesh__endpoint_free(CMESH_FIELD_KIND_SENDER, tx);
		return 0; /* the caller ends the hints */
	}
	/* Named on the lane before the forwarder reads a lane's end. */
	if (*hints && !cmesh__port_hints_write(*hints, out->lane))
		*hints = NULL; /* freed: those senders stay forwarded */
	r = cmesh__bridge_start_split(
		h, tx, *hints ? cmesh__port_hints_end : NULL, *hints);
	if (r) {
		/*
		 * The lane is the local senders' already: the port goes, and
		 * the senders elsewhere see their receiver fail (no memory).
		 */
		cmesh__log(CMESH__LOG_ERROR,
			   "a receiver sent on: no forwarder for its senders "
			   "elsewhere (%d): they fail",
			   r);
		/* First: a failed lane's end writes no MARK. */
		if (*hints) {
			cmesh__port_hints_end(*hints);
			*hints = NULL;
		}
		cmesh__queue_receiver_fail(q);
		cmesh__link_lane_token_forget(out->lane); /* never listed */
		cmesh__endpoint_shell_free(h);
		cmesh__endpoint_free(CMESH_FIELD_KIND_SENDER, tx);
		return 0;
	}
	*hints = NULL; /* the forwarder's */
	return 0;
}

/*
 * Makes a port of endpoint `h` (field kind `kind`) on `link`: fills *out.
 * The handle is consumed on success only.
 */
static int export_any(struct cmesh__link *link, const cmesh_field *f, void *h,
		      const cmesh_env *env, struct cmesh__port_out *out)
{
	struct cmesh__queue *q;
	struct cmesh__lane *peer;
	uint64_t node = 0, t[2] = { 0, 0 };
	uint32_t home, mark = 0;
	struct cmesh__queue_mark *me = NULL;
	struct cmesh__hints *hints = NULL;
	bool sole_rx = false, marked = false, hinted = false, local;
	int r;

	if (f->kind == CMESH_FIELD_KIND_CTX) {
		/* No lane: the link stands for its canceller (link_ctx.c). */
		out->fd = -1;
		out->lane = NULL;
		out->link = link;
		r = cmesh__link_ctx_export(link, h, &out->desc);
		if (!r)
			cmesh_ctx_free(h); /* the message took it */
		return r;
	}
	q = cmesh__endpoint_queue(f->kind, h);
	/*
	 * A sender's peer is its tx lane: rx_lane is the receiver's (and a
	 * sender that came to where its receiver went shares the queue).
	 */
	peer = cmesh__queue_tx_lane(q);
	if (!peer && !cmesh__port_is_sending(f->kind))
		peer = cmesh__queue_rx_lane(q);
	/*
	 * Its peer's process failed: it arrives failed. (Not a receiver
	 * that read the lane it came with to its end: that process may
	 * exit at will.)
	 */
	if (peer && cmesh__lane_failed(peer) &&
	    !(peer == cmesh__queue_rx_lane(q) &&
	      cmesh__queue_rx_lane_ended(q))) {
		export_failed(link, f, h, out);
		return 0;
	}
	/* A sender whose receiver here failed (a forwarder's) arrives so. */
	if (!peer && cmesh__port_is_sending(f->kind) &&
	    cmesh__queue_rx_gone(q) < 0) {
		export_failed(link, f, h, out);
		return 0;
	}
	/* Its peer is in another process already: a second move. */
	local = !peer;
	r = peer ? -EOPNOTSUPP : export_direct(link, f, h, env, out);
	if (r != -EOPNOTSUPP)
		return r;
	/*
	 * A receiver whose senders are all in one process, through one lane
	 * (bound: its token, if any, came with it or its answer), goes on
	 * through a forwarder here, which brings it what that lane holds up
	 * to the end the senders' process then sends. Going back over that
	 * lane's link, it goes home: the peer may take it back into their
	 * queue (shm/proto.h CMESH_PORT_F_HOME). Going elsewhere, it may
	 * claim its senders from their process (CMESH_PORT_F_REDIRECT).
	 */
	if (f->kind == CMESH_FIELD_KIND_RECEIVER) {
		sole_rx = (peer = cmesh__queue_sole_lane(q)) != NULL;
		/* Else its senders elsewhere, each named on the lane. */
		if (!sole_rx)
			hints = cmesh__port_hints_new(link, q);
		hinted = hints != NULL;
	} else if (f->kind == CMESH_FIELD_KIND_SENDER) {
		peer = cmesh__queue_sole_sender(q); /* it alone writes it */
		/*
		 * Others write it too (clones left here): its claim is read
		 * after a mark that its forwarder's end writes on that lane.
		 */
		if (!peer) {
			peer = cmesh__queue_tx_lane(q);
			marked = peer && peer->dynamic;
			if (!marked)
				peer = NULL;
		}
	} else {
		peer = NULL;
	}
	/* Unanswered: only a token of ours names its other end already. */
	if (peer && !cmesh__lane_bound(peer) &&
	    (!peer->peer_early ||
	     atomic_load_explicit(&peer->dropped, memory_order_acquire)))
		peer = NULL;
	home = peer && cmesh__lane_bound(peer) && !peer->is_out &&
			       peer->link == link ?
		       peer->id :
		       0;
	/*
	 * Read now: once the forwarder has it, the lane may go. A sender
	 * going to its receiver's process goes home there (import()).
	 */
	if (peer && !home &&
	    (peer->is_out || peer->peer_node != cmesh__link_peer_proc(link)) &&
	    (peer->peer_token[0] | peer->peer_token[1])) {
		node = peer->peer_node;
		t[0] = peer->peer_token[0];
		t[1] = peer->peer_token[1];
		mark = peer->peer_mark;
	}
	if (marked) {
		me = cmesh__queue_mark_for(q, peer, node);
		node = me ? node : 0;
		mark = me ? cmesh__queue_mark_id(me) : 0;
	}
	/* A receiver here with lanes: its senders here go direct. */
	r = f->kind == CMESH_FIELD_KIND_RECEIVER && local && !sole_rx ?
		    export_split(link, f, h, env, out, &hints) :
		    -EOPNOTSUPP;
	if (r == -EOPNOTSUPP)
		r = export_forwarded(link, f, h, env, out, me, &hints);
	if (r)
		free(me);
	if (hints) /* not taken: the export failed */
		cmesh__port_hints_end(hints);
	if (r && (sole_rx || hinted))
		cmesh__queue_claims_reopen(q); /* it stays the caller's */
	/*
	 * Its forwarder's lane has a token of ours: the one upstream wins.
	 * With none upstream, a sender's port keeps ours (REDIRECT naming
	 * us): the process it goes to keeps it with its lane, so that when
	 * it sends the sender on again, the process after claims our
	 * forwarder's receiver and the hop there ends. A tokenless chain
	 * (Known limits) then keeps one hop, here, not one per move.
	 */
	if (r || (out->desc.flags & ~CMESH_PORT_F_REDIRECT) || (!home && !node))
		return r;
	out->desc.flags = 0;
	out->desc.node = 0;
	out->desc.token[0] = out->desc.token[1] = 0;
	if (home) {
		out->desc.flags = CMESH_PORT_F_HOME;
		out->desc.home = home;
	} else if (node) {
		redirect_to(out, node, t);
		out->desc.home = mark; /* a sender's, shm/proto.h */
		/* Linked with its peer's process, it links it with ours. */
		cmesh__link_introduce(link, node);
	}
	return r;
}

static int export(struct cmesh__link *link, const cmesh_field *f, void *h,
		  const cmesh_env *env, struct cmesh__port_out *out)
{
	/*
	 * A channel's queue may put the lanes its receiver left (reclaim
	 * mode): the export's looks at its lanes are counted in, and the
	 * queue held while they are (the export may take the last handle).
	 */
	struct cmesh__queue *q =
		f->kind == CMESH_FIELD_KIND_SENDER ||
				f->kind == CMESH_FIELD_KIND_RECEIVER ?
			cmesh__endpoint_queue(f->kind, h) :
			NULL;
	struct cmesh__lane *ln;
	int r;

	if (q) {
		(void)cmesh__queue_tryget(q); /* its handle holds it */
		cmesh__queue_tx_hold(q);
	}
	r = export_any(link, f, h, env, out);
	if (q) {
		cmesh__queue_tx_leave_quiet(q, true);
		cmesh__queue_unget(q);
	}
	ln = r ? NULL : out->lane;

	if (!ln || !ln->peer_early)
		return r;
	/*
	 * The peer lists its end under our token only if the port names us
	 * (REDIRECT: it then lists it): else (a forwarder's, whose port
	 * names where it came from, or nothing) the answer says, as before:
	 * that lane is a forwarder's new pair's, which nobody exports, so
	 * nobody reads what we clear. (A forwarder's port that names us with
	 * an upstream token keeps its `list`: harmless, the same.)
	 */
	if ((out->desc.flags & CMESH_PORT_F_REDIRECT) &&
	    out->desc.node == cmesh__proc_id()) {
		out->desc.list[0] = ln->peer_token[0];
		out->desc.list[1] = ln->peer_token[1];
	} else {
		ln->peer_early = false;
		ln->peer_token[0] = ln->peer_token[1] = 0;
		ln->peer_node = 0;
	}
	return r;
}

/*
 * Sends `msg` on `ln`, its endpoints as ports; takes its resources, but
 * for -ESTALE: `ln` was sealed (its receiver came home) and nothing was
 * done; the caller sends again where its queue now says.
 */
static int send_on_lane(struct cmesh__lane *ln, const void *msg,
			const void *trail, size_t len)
{
	int r;

	/* Only a lane that may come home is ever sealed (lane.h). */
	if (!ln->sealable)
		return send_ports_on_lane(ln, msg, trail, len);
	/* No seal between the look and the record (cmesh__lane_seal_tx()). */
	pthread_rwlock_rdlock(&ln->port_lock);
	r = cmesh__lane_sealed(ln) ? -ESTALE :
				     send_ports_on_lane(ln, msg, trail, len);
	pthread_rwlock_unlock(&ln->port_lock);
	return r;
}

/* A message struct up to this size is copied on the stack to be sent. */
#define COPY_STACK 256u

static int send_ports_on_lane(struct cmesh__lane *ln, const void *msg,
			      const void *trail, size_t len)
{
	struct cmesh__port_out ports[CMESH_CTL_MAX_PORTS];
	/* The copy of a message of up to COPY_STACK bytes: no allocation. */
	alignas(max_align_t) unsigned char stack[COPY_STACK];
	const cmesh_type *t = ln->type;
	const cmesh_env *env;
	uint64_t mask = 0;
	uint32_t n = 0;
	void *copy = stack;
	int r;

	r = cmesh__type_prepare_move(t, msg); /* types, duplicates */
	if (!r)
		r = cmesh__env_get(&env);
	if (r) {
		cmesh__type_release(t, msg);
		return r;
	}
	if (t->size > sizeof(stack) && !(copy = malloc(t->size))) {
		cmesh__type_release(t, msg);
		return -ENOMEM;
	}
	memcpy(copy, msg, t->size);
	for (uint32_t i = 0; i < t->nfields && !r; i++) {
		const cmesh_field *f = &t->fields[i];
		void *h;

		if (!cmesh__field_is_endpoint(f->kind))
			continue;
		h = field_at(copy, f);
		if (!h)
			continue;
		r = export(ln->link, f, h, env, &ports[n]);
		if (r)
			break;
		cmesh__port_set_field(copy, f, NULL);
		mask |= 1ull << i;
		n++;
	}
	if (r) {
		/* Exported ones are gone with their ports; free the rest. */
		cmesh__lane_unsend_ports(ports, n, false);
		cmesh__type_release(t, copy);
		if (copy != stack)
			free(copy);
		return r;
	}
	r = cmesh__lane_send_ports(ln, copy, trail, len, ports, n, mask);
	if (copy != stack)
		free(copy);
	return r;
}

int cmesh__port_send(struct cmesh__queue *q, const void *msg, const void *trail,
		     size_t len)
{
	for (;;) {
		bool in;
		struct cmesh__lane *ln = cmesh__queue_tx_enter(q, &in);
		int r;

		if (ln) {
			cmesh__queue_claim_again(q); /* a refused one, if due */
			r = send_on_lane(ln, msg, trail, len);
			cmesh__queue_tx_leave(q, in);
			if (r != -ESTALE)
				return r;
			continue; /* the receiver came home: nothing taken */
		}
		cmesh__queue_tx_leave(q, in);
		r = cmesh__queue_send(q, msg, trail, len);
		if (r != -EXDEV)
			return r;
		/* The receiver moved meanwhile: nothing was taken. */
	}
}
