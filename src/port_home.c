/* SPDX-License-Identifier: MIT */
/*
 * port_home.c - the moves that end their forwarder (port.c forwards every
 * other second move): a channel receiver that comes home over the lane it
 * reads (HOME: its senders' queue takes it back), an endpoint whose port
 * names its peer's process and a token (REDIRECT: claimed there, or kept
 * for a process further on), and a channel sender that comes back to its
 * receiver's process (a local sender again, behind what it sent from
 * elsewhere). The claims' ops the link layer calls (link_claim.c) are the
 * queue's (queue_move.c, queue_port.c).
 */
#include "port_int.h"

#include "endpoint.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

/* A claim's redirect of a home (link_claim.c): the queue's. */
static int redirect(void *home, struct cmesh__lane *from, uint64_t serial,
		    struct cmesh__lane *to)
{
	return cmesh__queue_redirect(home, from, serial, to);
}

/*
 * A sender's claim: the receiver's queue reads `to` after `after` (or its
 * MARK `mark`).
 */
static int admit(void *home, uint64_t after, uint32_t mark,
		 struct cmesh__lane *to)
{
	return cmesh__queue_admit(home, after, mark, to, true);
}

static void refused(void *home, struct cmesh__lane *to, bool later)
{
	cmesh__queue_claim_refused(home, to, later);
}

/* A REROUTE of out lane `from`: its senders claim where it says. */
static void reroute(void *home, struct cmesh__lane *from, uint64_t serial,
		    uint64_t node, const uint64_t tok[2], uint32_t mark)
{
	(void)cmesh__queue_reroute(home, from, serial, node, tok, mark);
}

static const struct cmesh__claim_ops claim_ops = {
	cmesh__queue_tryget,
	cmesh__queue_unget,
	redirect,
	admit,
	refused,
	reroute,
};

static pthread_once_t claims_once = PTHREAD_ONCE_INIT;

static void claims_init(void)
{
	cmesh__link_claims_init(&claim_ops);
}

void cmesh__port_claims_ready(void)
{
	pthread_once(&claims_once, claims_init);
}

/*
 * A receiver coming home (CMESH_PORT_F_HOME) over `fwd`, its lane from
 * the peer: the receiver of the queue its `home` lane left, if that queue
 * still waits for it; else -EOPNOTSUPP, nothing done (an ordinary port).
 */
int cmesh__port_import_home(struct cmesh__link *link,
			    const struct cmesh_ctl_port *d, const cmesh_type *t,
			    struct cmesh__lane *fwd, void **out)
{
	struct cmesh__lane *home;
	uint64_t serial;
	void *q, *h;
	int r;

	if (cmesh__link_lane_home_take(link, d->home, t, cmesh__queue_tryget,
				       &q, &home, &serial))
		return -EOPNOTSUPP;
	/* Made first: once home, the queue has its receiver back. */
	h = cmesh__endpoint_handle_new(q);
	r = h ? cmesh__queue_come_home(q, home, serial, fwd) : -ENOMEM;
	if (r) {
		if (h)
			cmesh__endpoint_shell_free(h);
		cmesh__queue_unget(q);
		return -EOPNOTSUPP;
	}
	*out = h;
	return 0;
}

/*
 * A channel endpoint's port `d` (CMESH_PORT_F_REDIRECT) made queue `q` on
 * `ln`. From its peer's process, the token is kept with `ln` (for a later
 * move). From a process that forwards it, its peer is claimed from its
 * process if we are linked with it. A receiver's senders: their lane to
 * us is read once `ln` ends (the forwarder's end comes after what was
 * sent before). A sender's receiver: our lane to it is read there once
 * the forwarder's lane ends; our sends go to `ln` until the claim holds
 * (then `ln` ends: cmesh__queue_redirect()). Else (no link, or the claim
 * could not go, or was refused) the forwarder stays.
 */
void cmesh__port_claim_peer(struct cmesh__link *link,
			    const struct cmesh_ctl_port *d,
			    struct cmesh__lane *ln, struct cmesh__queue *q,
			    bool sending)
{
	struct cmesh__link *to;
	int r;

	/* Our claim's answer finds the queue through them. */
	cmesh__port_claims_ready();
	/*
	 * Kept with `ln` until it is used: from the peer's process, for a
	 * claim from wherever it goes next; from elsewhere, for a claim
	 * there if we cannot make it.
	 */
	ln->peer_token[0] = d->token[0];
	ln->peer_token[1] = d->token[1];
	ln->peer_node = d->node;
	ln->peer_mark = sending ? d->home : 0;
	if (d->node == cmesh__link_peer_proc(link) ||
	    d->node == cmesh__proc_id() /* it came back by another link */)
		return;
	/* Introduced (link_intro.c) before this port was read, if at all. */
	to = cmesh__link_by_proc(d->node);
	if (!to)
		return;
	/* The link's reference goes to the queue if the claim goes. */
	r = cmesh__queue_claim_peer(q, to, d->token, d->node, ln->peer_mark,
				    sending);
	if (r) {
		cmesh__link_put(to);
		return;
	}
	/* Spent: once claimed, nobody further on may use it. */
	ln->peer_token[0] = ln->peer_token[1] = 0;
	ln->peer_node = 0;
	ln->peer_mark = 0;
}

/*
 * A channel sender coming back to its receiver's process (here): its port
 * `d` names the in lane it wrote from elsewhere, and `fwd` is our lane to
 * the forwarder it left behind. The receiver's queue takes it as a local
 * sender again, read after that lane has ended, or passed the port's mark
 * (`home`: clones of it still write there) (cmesh__queue_gate_local);
 * `fwd` ends at once (nothing sent on it), which ends the forwarder, whose
 * end ends the old lane. 0 with *out a handle on that queue, or
 * -EOPNOTSUPP (nothing done: an ordinary port; a token that names no
 * sender's lane of ours, or one of another type, is only a hint).
 */
int cmesh__port_sender_home(const struct cmesh_ctl_port *d, const cmesh_type *t,
			    struct cmesh__lane *fwd, void **out)
{
	uint64_t serial;
	void *home, *h;
	int r;

	if (cmesh__link_claim_local(d->token, t, d->home != 0, &home, &serial))
		return -EOPNOTSUPP;
	h = cmesh__endpoint_handle_new(home);
	r = h ? cmesh__queue_gate_local(home, serial, d->home) : -EOPNOTSUPP;
	if (!d->home)
		cmesh__link_claim_local_done(d->token, serial, !r);
	cmesh__queue_unget(home); /* the handle holds a sender reference */
	if (r) {
		if (h)
			cmesh__endpoint_shell_free(h);
		return -EOPNOTSUPP;
	}
	cmesh__lane_close_tx(fwd);
	cmesh__link_lane_release(fwd);
	*out = h;
	return 0;
}

/* ---- hints: a receiver's senders elsewhere, named on its forwarder ---- */

struct cmesh__hints {
	struct cmesh__queue *q;	 /* the receiver's queue: its forwarder's */
	struct cmesh__lane *out; /* the lane that forwarder writes */
	uint32_t n;
	struct cmesh_rec_hint h[CMESH_REC_HINTS_MAX];
	uint64_t serial[CMESH_REC_HINTS_MAX]; /* each sender's lane here */
};

struct cmesh__hints *cmesh__port_hints_new(struct cmesh__link *link,
					   struct cmesh__queue *q)
{
	struct cmesh__lane *src[CMESH_REC_HINTS_MAX];
	uint32_t m = cmesh__queue_sources(q, src, CMESH_REC_HINTS_MAX), k = 0;
	struct cmesh__hints *h;

	if (!m)
		return NULL;
	h = calloc(1, sizeof(*h));
	for (uint32_t i = 0; h && i < m; i++) {
		/* Where it goes: that sender is not claimed (forwarded). */
		if (src[i]->peer_node == cmesh__link_peer_proc(link))
			continue;
		h->h[k].node = src[i]->peer_node;
		h->h[k].token[0] = src[i]->peer_token[0];
		h->h[k].token[1] = src[i]->peer_token[1];
		h->serial[k++] = src[i]->serial;
	}
	if (!k) { /* none to name (or no memory): claims may come again */
		free(h);
		cmesh__queue_claims_reopen(q);
		return NULL;
	}
	h->q = q;
	h->n = k;
	return h;
}

/* The forwarder read sender lane `serial` to its end: that sender's MARK. */
static void hint_lane_end(void *arg, uint64_t serial)
{
	struct cmesh__hints *h = arg;

	for (uint32_t i = 0; i < h->n; i++)
		if (h->serial[i] == serial) {
			h->serial[i] = 0;
			cmesh__lane_mark_tx(h->out, h->h[i].mark);
			return;
		}
}

bool cmesh__port_hints_write(struct cmesh__hints *h, struct cmesh__lane *out)
{
	for (uint32_t i = 0; i < h->n; i++)
		h->h[i].mark = cmesh__lane_mark_new(out);
	/* Spilled until the lane is bound: before any MARK either way. */
	if (cmesh__lane_hints_tx(out, h->h, h->n)) {
		free(h);
		return false;
	}
	h->out = out;
	cmesh__queue_on_lane_end(h->q, hint_lane_end, h);
	/*
	 * Linked with their processes, it links them with the one the port
	 * goes to (straight on the socket: before the port's ATTACH).
	 */
	for (uint32_t i = 0; i < h->n; i++)
		cmesh__link_introduce(out->link, h->h[i].node);
	return true;
}

void cmesh__port_hints_end(void *arg)
{
	struct cmesh__hints *h = arg;

	cmesh__queue_on_lane_end(h->q, NULL, NULL);
	free(h);
}
