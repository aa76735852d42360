/* SPDX-License-Identifier: MIT */
/*
 * link_ctx.c - cancellation contexts that cross a link (CTX ports,
 * shm/proto.h): the link stands for the canceller on the far side.
 *
 * Sending (export). A context that can never be cancelled crosses as its
 * deadline alone (id 0), one already cancelled as ENDED. Any other gets
 * an id (never reused on the link) and an entry in `ctx_out` that holds a
 * handle on it and watches it. A CANCEL for it may only follow its ATTACH
 * on the socket (the peer makes the context when the ATTACH arrives), so
 * an entry is queued for CANCEL once it is both cancelled (the watcher)
 * and sent (cmesh__link_ctx_sent(), right after its ATTACH went out, which
 * for a spilled message is long after the export); the link thread sends
 * it and forgets the entry. The peer's CTXDROP (it is done with the id)
 * forgets it too; so does a message that is not sent after all. A
 * deadline is a local clock reading in our descriptors and crosses as the
 * time left when the ATTACH is sent; the receiver turns it back into a
 * local clock reading when the ATTACH arrives.
 *
 * Receiving (import). When an ATTACH with a cancellable CTX port arrives,
 * the link thread makes its node at once (`ctx_in`, a weak map id ->
 * node): a CANCEL may come before the receiver takes the message, and
 * must not be lost. The node's one reference is the message's; the
 * receiver's handle takes it over (or a drop releases it). When its last
 * reference goes, the node leaves the map and CTXDROP tells the peer. The
 * link's failure cancels every node it made, and makes later ones start
 * cancelled: a context whose canceller's process died never waits forever.
 *
 * Capabilities and bounds: a CTX port may not carry an id in use (else
 * -EPROTO), and a link holds at most MAX_CTX_IN contexts of the peer. A
 * CANCEL for an id we do not hold is ignored (its CTXDROP is on the way:
 * it touches nothing); a CTXDROP may only name an id we gave (-EPROTO).
 *
 * Locks: `ctx_lock` guards both maps, the entries' flags, the fired list
 * and the ids. A watcher runs under the contexts' own lock (cancel.c) and
 * takes ctx_lock: ctx_lock is never held while calling into a context (a
 * cancel, a free, a watch), which could take the contexts' lock or free a
 * node whose hook takes ctx_lock.
 */
#include "link_int.h"

#include "cancel.h"

#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Contexts of the peer one link may hold. */
#define MAX_CTX_IN 65536u

struct ctx_export {
	struct cmesh__link *l;
	uint32_t id;
	/* Under ctx_lock. */
	bool sent;		 /* its ATTACH went out */
	bool fired;		 /* the context was cancelled */
	bool queued;		 /* on the fired list: the sweep frees it */
	bool gone;		 /* out of the map: no CANCEL any more */
	bool cancel;		 /* the sweep sends its CANCEL */
	struct ctx_export *next; /* the fired list */
	cmesh_ctx *hold;	 /* keeps the context */
	struct cmesh__ctx_watcher w;
};

/* What a node that came over the link needs when it goes. */
struct ctx_import {
	struct cmesh__link *l;
	uint32_t id;
	bool mapped; /* in ctx_in: the peer knows the id */
	struct cmesh__ctx_node *n;
};

int cmesh__ctx_init(struct cmesh__link *l, uint64_t seed)
{
	if (pthread_mutex_init(&l->ctx_lock, NULL))
		return -ENOMEM;
	l->ctx_lock_init = true;
	if (cmesh__idmap_init(&l->ctx_out, seed) ||
	    cmesh__idmap_init(&l->ctx_in, ~seed))
		return -ENOMEM;
	return 0;
}

static void send_id(struct cmesh__link *l, uint16_t type, uint32_t id)
{
	struct cmesh_ctl_end m = { 0 };

	if (cmesh__link_failed(l))
		return;
	cmesh__ctl_hdr_fill(&m.hdr, type, sizeof(m));
	m.id = id;
	cmesh__lanes_ctl_send(l, &m, sizeof(m), -1);
}

/* ---- contexts we send ---- */

/* Queues `e` for its CANCEL if it is due (ctx_lock held); true if so. */
static bool queue_if_due(struct cmesh__link *l, struct ctx_export *e)
{
	if (!e->fired || !e->sent || e->queued || e->gone)
		return false;
	e->queued = true;
	e->next = l->ctx_fired;
	l->ctx_fired = e;
	return true;
}

/* Watcher: the context was cancelled (the contexts' lock held). */
static void on_fired(void *arg)
{
	struct ctx_export *e = arg;
	struct cmesh__link *l = e->l;
	bool kick;

	/*
	 * In a child of fork the link is the parent's: its lock may have
	 * been held at the fork, and its peer hears only the parent.
	 */
	if (l->own_proc != cmesh__proc_id())
		return;
	pthread_mutex_lock(&l->ctx_lock);
	e->fired = true;
	kick = queue_if_due(l, e);
	pthread_mutex_unlock(&l->ctx_lock);
	if (kick)
		cmesh__link_kick(l);
}

/* Frees an entry no map or list holds any more. */
static void export_free(struct ctx_export *e)
{
	cmesh__ctx_unwatch(&e->w);
	cmesh_ctx_free(e->hold);
	free(e);
}

int cmesh__link_ctx_export(struct cmesh__link *l, const cmesh_ctx *ctx,
			   struct cmesh_ctl_port *d)
{
	int64_t dl = cmesh_ctx_deadline(ctx);
	struct ctx_export *e;
	uint32_t id = 0;
	int r;

	memset(d, 0, sizeof(*d));
	d->kind = CMESH_PORT_CTX;
	/*
	 * A clock reading until it is sent: cmesh__ctx_port_wire(). A
	 * negative one (passed: -1 is, locally) is 0, not the none below.
	 */
	d->arena_size = dl == CMESH_DEADLINE_NONE ? UINT64_MAX :
			dl < 0			  ? 0 :
						    (uint64_t)dl;
	if (cmesh__ctx_ended(ctx)) {
		d->flags = CMESH_PORT_F_ENDED;
		return 0;
	}
	if (!cmesh__ctx_cancellable(ctx))
		return 0; /* only its deadline can end it: id 0 */
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	r = cmesh_ctx_clone(ctx, &e->hold);
	if (r) {
		free(e);
		return r;
	}
	e->l = l;
	e->w.fn = on_fired;
	e->w.arg = e;
	/* Watched before anyone can find it (a CTXDROP may free it then). */
	cmesh__ctx_watch(e->hold, &e->w);
	pthread_mutex_lock(&l->ctx_lock);
	r = l->ctx_next_out == UINT32_MAX ? -ENOSPC : 0;
	if (!r) {
		id = e->id = ++l->ctx_next_out;
		r = cmesh__idmap_put(&l->ctx_out, id, e);
	}
	pthread_mutex_unlock(&l->ctx_lock);
	if (r) {
		export_free(e);
		return r;
	}
	d->id = id; /* not e->id: a CTXDROP may have freed it already */
	return 0;
}

void cmesh__ctx_port_wire(struct cmesh_ctl_port *d)
{
	int64_t now = cmesh_clock_now();

	if (d->arena_size != UINT64_MAX)
		d->arena_size =
			(int64_t)d->arena_size > now ?
				(uint64_t)((int64_t)d->arena_size - now) :
				0;
}

void cmesh__link_ctx_sent(struct cmesh__link *l, uint32_t id)
{
	struct ctx_export *e;
	bool kick = false;

	if (!id)
		return;
	pthread_mutex_lock(&l->ctx_lock);
	e = cmesh__idmap_get(&l->ctx_out, id);
	if (e) {
		e->sent = true;
		kick = queue_if_due(l, e); /* cancelled before it went */
	}
	pthread_mutex_unlock(&l->ctx_lock);
	if (kick)
		cmesh__link_kick(l);
}

/* Forgets export `id`: CTXDROP, or a port that was not sent. */
static void forget_export(struct cmesh__link *l, uint32_t id)
{
	struct ctx_export *e;
	bool queued = false;

	pthread_mutex_lock(&l->ctx_lock);
	e = cmesh__idmap_get(&l->ctx_out, id);
	if (e) {
		cmesh__idmap_del(&l->ctx_out, id);
		e->gone = true;
		queued = e->queued;
	}
	pthread_mutex_unlock(&l->ctx_lock);
	if (e && !queued) /* a queued one is the sweep's to free */
		export_free(e);
}

void cmesh__link_ctx_unexport(struct cmesh__link *l, uint32_t id)
{
	if (id)
		forget_export(l, id);
}

void cmesh__ctx_sweep(struct cmesh__link *l)
{
	struct ctx_export *e, *next;

	if (!l->ctx_lock_init)
		return;
	pthread_mutex_lock(&l->ctx_lock);
	e = l->ctx_fired;
	l->ctx_fired = NULL;
	for (struct ctx_export *f = e; f; f = f->next) {
		f->cancel = !f->gone; /* forgotten meanwhile: no CANCEL */
		if (!f->gone)
			cmesh__idmap_del(&l->ctx_out, f->id);
		f->gone = true;
	}
	pthread_mutex_unlock(&l->ctx_lock);
	for (; e; e = next) {
		next = e->next;
		if (e->cancel)
			send_id(l, CMESH_CTL_CANCEL, e->id);
		export_free(e);
	}
}

/* ---- contexts we receive ---- */

/* A node that came over the link lost its last reference. */
static void import_gone(void *arg)
{
	struct ctx_import *im = arg;
	struct cmesh__link *l = im->l;

	/*
	 * A child of fork frees its copy only: a CTXDROP from it would make
	 * the peer forget the parent's context (its CANCEL would never
	 * come), and the link, its lock and reference are the parent's.
	 */
	if (l->own_proc != cmesh__proc_id()) {
		free(im);
		return;
	}
	pthread_mutex_lock(&l->ctx_lock);
	if (im->mapped)
		cmesh__idmap_del(&l->ctx_in, im->id);
	pthread_mutex_unlock(&l->ctx_lock);
	if (im->mapped)
		send_id(l, CMESH_CTL_CTXDROP, im->id);
	cmesh__link_put(l);
	free(im);
}

/* An arrived CTX port's deadline (made local by cmesh__link_ctx_arrive). */
static int64_t deadline_of(const struct cmesh_ctl_port *d)
{
	return d->arena_size == UINT64_MAX ? CMESH_DEADLINE_NONE :
					     (int64_t)d->arena_size;
}

bool cmesh__ctx_port_ok(const struct cmesh_ctl_port *d)
{
	return d->ring_cap == 0 && (d->flags & ~CMESH_PORT_F_ENDED) == 0 &&
	       !((d->flags & CMESH_PORT_F_ENDED) && d->id);
}

int cmesh__link_ctx_arrive(struct cmesh__link *l, struct cmesh_ctl_port *d)
{
	struct ctx_import *im;
	int r = 0;

	/* The time it had left, from now: a local clock reading. */
	if (d->arena_size != UINT64_MAX)
		d->arena_size = (uint64_t)cmesh_deadline_after(
			d->arena_size >= (uint64_t)INT64_MAX ?
				INT64_MAX :
				(int64_t)d->arena_size);
	if (d->arena_size == (uint64_t)CMESH_DEADLINE_NONE)
		d->arena_size = UINT64_MAX;
	if (!d->id)
		return 0; /* made when it is received: nothing names it */
	/*
	 * The node holds the link. Every handle on the link gone (it is
	 * being torn down, or the thread frees it as an orphan): nobody can
	 * take the message, and the link must not come back to life.
	 */
	if (!cmesh__link_tryget(l))
		return 0;
	im = malloc(sizeof(*im));
	if (!im) {
		cmesh__link_put(l);
		return -ENOMEM;
	}
	im->l = l;
	im->id = d->id;
	im->mapped = false;
	im->n = cmesh__ctx_node_new(deadline_of(d), cmesh__link_failed(l),
				    import_gone, im);
	if (!im->n) {
		free(im);
		cmesh__link_put(l);
		return -ENOMEM;
	}
	pthread_mutex_lock(&l->ctx_lock);
	if (cmesh__idmap_get(&l->ctx_in, d->id) ||
	    cmesh__idmap_count(&l->ctx_in) >= MAX_CTX_IN)
		r = -EPROTO; /* an id in use, or more than we hold */
	else
		r = cmesh__idmap_put(&l->ctx_in, d->id, im->n);
	im->mapped = !r;
	pthread_mutex_unlock(&l->ctx_lock);
	/* (the reference taken above is the node's, until import_gone()) */
	if (r) {
		cmesh__ctx_node_unref(im->n); /* unmapped: no CTXDROP */
		return r;
	}
	/* Made after the failure was seen, or before: either way ended. */
	if (cmesh__link_failed(l))
		cmesh__ctx_node_cancel(im->n);
	return 0;
}

/* The node of arrived port `d` (its reference), or NULL. */
static struct cmesh__ctx_node *arrived(struct cmesh__link *l,
				       const struct cmesh_ctl_port *d)
{
	struct cmesh__ctx_node *n;

	pthread_mutex_lock(&l->ctx_lock);
	n = cmesh__idmap_get(&l->ctx_in, d->id);
	pthread_mutex_unlock(&l->ctx_lock);
	return n;
}

int cmesh__link_ctx_import(struct cmesh__link *l,
			   const struct cmesh_ctl_port *d, cmesh_ctx **out)
{
	struct cmesh__ctx_node *n;

	if (d->id)
		n = arrived(l, d);
	else
		n = cmesh__ctx_node_new(deadline_of(d),
					d->flags & CMESH_PORT_F_ENDED, NULL,
					NULL);
	if (!n)
		return d->id ? -EPROTO : -ENOMEM;
	*out = cmesh__ctx_node_handle(n);
	return *out ? 0 : -ENOMEM;
}

void cmesh__link_ctx_drop(struct cmesh__link *l, const struct cmesh_ctl_port *d)
{
	struct cmesh__ctx_node *n = d->id ? arrived(l, d) : NULL;

	if (n)
		cmesh__ctx_node_unref(n); /* the message's reference */
}

/* ---- CANCEL and CTXDROP (link thread) ---- */

int cmesh__ctx_on_ctl(struct cmesh__link *l, uint16_t type, const void *buf,
		      int len, uint32_t nfds)
{
	struct cmesh__ctx_node *n = NULL;
	struct cmesh_ctl_end m;
	int r = 0;

	if (len != (int)sizeof(m) || nfds)
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	if (m.hdr.len != sizeof(m) || m.reserved || !m.id)
		return -EPROTO;
	if (type == CMESH_CTL_CTXDROP) {
		pthread_mutex_lock(&l->ctx_lock);
		r = m.id > l->ctx_next_out ? -EPROTO : 0;
		pthread_mutex_unlock(&l->ctx_lock);
		if (!r)
			forget_export(l, m.id);
		return r;
	}
	/* An id we do not hold: gone (its CTXDROP is on the way) or never
	 * given; either way nothing here stands for it. */
	pthread_mutex_lock(&l->ctx_lock);
	n = cmesh__idmap_get(&l->ctx_in, m.id);
	if (n && !cmesh__ctx_node_tryref(n))
		n = NULL; /* going: nothing waits on it */
	pthread_mutex_unlock(&l->ctx_lock);
	if (n) {
		cmesh__ctx_node_cancel(n);
		cmesh__ctx_node_unref(n);
	}
	return r;
}

/* ---- failure and teardown ---- */

/* Every live export leaves for the `gone` list (ctx_lock held). */
static void drop_export(void *arg, uint32_t id, void *p)
{
	struct ctx_export **gone = arg, *e = p;

	(void)id;
	e->gone = true; /* a watcher firing now does nothing */
	e->next = *gone;
	*gone = e;
}

/*
 * Nothing will be sent for them any more (the link failed or goes):
 * every export, fired or not, is forgotten and freed.
 */
static void forget_all_exports(struct cmesh__link *l)
{
	struct ctx_export *gone = NULL, *listed;

	pthread_mutex_lock(&l->ctx_lock);
	for (struct ctx_export *e = l->ctx_fired, *next; e; e = next) {
		next = e->next;
		if (!e->gone)
			cmesh__idmap_del(&l->ctx_out, e->id);
		e->gone = true;
		e->next = gone;
		gone = e;
	}
	l->ctx_fired = NULL;
	listed = gone;
	cmesh__idmap_each(&l->ctx_out, drop_export, &gone);
	/* Out of the map too, now that the walk is over. */
	for (struct ctx_export *e = gone; e != listed; e = e->next)
		cmesh__idmap_del(&l->ctx_out, e->id);
	pthread_mutex_unlock(&l->ctx_lock);
	while (gone) {
		struct ctx_export *e = gone;

		gone = e->next;
		export_free(e);
	}
}

/* A batch of the peer's contexts not cancelled yet, referenced. */
struct collect {
	struct cmesh__ctx_node *v[128];
	uint32_t n;
};

static void collect_one(void *arg, uint32_t id, void *p)
{
	struct collect *c = arg;

	(void)id;
	if (c->n < sizeof(c->v) / sizeof(c->v[0]) &&
	    !cmesh__ctx_node_ended(p) && cmesh__ctx_node_tryref(p))
		c->v[c->n++] = p;
}

void cmesh__ctx_link_failed(struct cmesh__link *l)
{
	struct collect c;

	if (!l->ctx_lock_init)
		return;
	/* No CANCEL nor CTXDROP crosses any more: ours are forgotten. */
	forget_all_exports(l);
	/*
	 * Nodes made from now on start ended (cmesh__link_ctx_arrive()).
	 * In batches, no allocation: a failure under memory pressure still
	 * ends every one (each pass ends those it took).
	 */
	do {
		c.n = 0;
		pthread_mutex_lock(&l->ctx_lock);
		cmesh__idmap_each(&l->ctx_in, collect_one, &c);
		pthread_mutex_unlock(&l->ctx_lock);
		for (uint32_t i = 0; i < c.n; i++) {
			cmesh__ctx_node_cancel(c.v[i]);
			cmesh__ctx_node_unref(c.v[i]);
		}
	} while (c.n);
}

void cmesh__ctx_destroy(struct cmesh__link *l)
{
	if (!l->ctx_lock_init)
		return;
	forget_all_exports(l);
	cmesh__idmap_destroy(&l->ctx_out);
	/* Nodes of `ctx_in` hold the link: none is left when it goes. */
	cmesh__idmap_destroy(&l->ctx_in);
	pthread_mutex_destroy(&l->ctx_lock);
	l->ctx_lock_init = false;
}
