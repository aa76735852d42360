/* SPDX-License-Identifier: MIT */
/*
 * link_ctx.c - cancellation contexts that cross a link (CTX ports,
 * shm/proto.h): the link stands for the canceller on the far side.
 *
 * Sending (export). A context that can never be cancelled crosses as its
 * deadline alone (id 0), one already cancelled as ENDED. Any other gets
 * an id (increasing, never reused on the link) and an entry in `ctx_out`
 * that holds a handle on it and watches it: when it is cancelled, the
 * watcher queues the entry and kicks the link thread, which sends CANCEL
 * and forgets it. The peer's CTXDROP (it is done with the id) forgets it
 * too; so does a message that is not sent after all.
 *
 * Receiving (import). When an ATTACH with a CTX port arrives, the link
 * thread makes its node at once (`ctx_in`, a weak map id -> node): a
 * CANCEL may come before the receiver takes the message, and must not be
 * lost. The node's one reference is the message's; the receiver's handle
 * takes it over (or a drop releases it). When its last reference goes,
 * the node leaves the map and CTXDROP tells the peer. The link's failure
 * cancels every node it made, and makes later ones start cancelled: a
 * context whose canceller's process died never waits forever.
 *
 * Capabilities: a CTX port must carry an id larger than every one before
 * it from that peer; a CANCEL may only name an id the peer gave (one we
 * forgot already is ignored: its CTXDROP is on the way), a CTXDROP only
 * one we gave. Anything else is -EPROTO.
 *
 * Locks: `ctx_lock` guards both maps, the fired list and the ids. A
 * watcher runs under the contexts' own lock (cancel.c) and takes
 * ctx_lock: ctx_lock is never held while calling into a context (a cancel,
 * a free, a watch), which could take the contexts' lock or free a node
 * whose hook takes ctx_lock.
 */
#include "link_int.h"

#include "cancel.h"

#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
	EXP_LIVE,
	EXP_FIRED,
	EXP_GONE
};

struct ctx_export {
	struct cmesh__link *l;
	uint32_t id;
	int state;		 /* EXP_* (ctx_lock) */
	struct ctx_export *next; /* the fired list (ctx_lock) */
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

/* Watcher: the context was cancelled (the contexts' lock held). */
static void on_fired(void *arg)
{
	struct ctx_export *e = arg;
	struct cmesh__link *l = e->l;

	pthread_mutex_lock(&l->ctx_lock);
	if (e->state == EXP_LIVE) {
		e->state = EXP_FIRED;
		e->next = l->ctx_fired;
		l->ctx_fired = e;
	}
	pthread_mutex_unlock(&l->ctx_lock);
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
	int64_t dl = cmesh_ctx_deadline(ctx), now = cmesh_clock_now();
	struct ctx_export *e;
	int r;

	memset(d, 0, sizeof(*d));
	d->kind = CMESH_PORT_CTX;
	d->arena_size = dl == CMESH_DEADLINE_NONE ? UINT64_MAX :
			dl > now		  ? (uint64_t)(dl - now) :
						    0;
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
	pthread_mutex_lock(&l->ctx_lock);
	r = l->ctx_next_out == UINT32_MAX ? -ENOSPC : 0;
	if (!r) {
		e->id = ++l->ctx_next_out;
		r = cmesh__idmap_put(&l->ctx_out, e->id, e);
	}
	pthread_mutex_unlock(&l->ctx_lock);
	if (r) {
		cmesh_ctx_free(e->hold);
		free(e);
		return r;
	}
	/* Fires at once if it was cancelled meanwhile. */
	cmesh__ctx_watch(e->hold, &e->w);
	d->id = e->id;
	return 0;
}

/* Forgets export `id`: CTXDROP, or a port that was not sent. */
static void forget_export(struct cmesh__link *l, uint32_t id)
{
	struct ctx_export *e;
	int was = EXP_GONE;

	pthread_mutex_lock(&l->ctx_lock);
	e = cmesh__idmap_get(&l->ctx_out, id);
	if (e) {
		cmesh__idmap_del(&l->ctx_out, id);
		was = e->state;
		e->state = EXP_GONE;
	}
	pthread_mutex_unlock(&l->ctx_lock);
	/* A fired one is on the list: the sweep frees it. */
	if (e && was == EXP_LIVE)
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
	for (struct ctx_export *f = e; f; f = f->next)
		if (f->state == EXP_FIRED)
			cmesh__idmap_del(&l->ctx_out, f->id);
	pthread_mutex_unlock(&l->ctx_lock);
	for (; e; e = next) {
		next = e->next;
		if (e->state == EXP_FIRED)
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

	pthread_mutex_lock(&l->ctx_lock);
	if (im->mapped)
		cmesh__idmap_del(&l->ctx_in, im->id);
	pthread_mutex_unlock(&l->ctx_lock);
	if (im->mapped)
		send_id(l, CMESH_CTL_CTXDROP, im->id);
	cmesh__link_put(l);
	free(im);
}

/* A CTX port's deadline: the time it had left, from now. */
static int64_t deadline_of(const struct cmesh_ctl_port *d)
{
	if (d->arena_size == UINT64_MAX)
		return CMESH_DEADLINE_NONE;
	return cmesh_deadline_after(d->arena_size > (uint64_t)INT64_MAX ?
					    INT64_MAX :
					    (int64_t)d->arena_size);
}

bool cmesh__ctx_port_ok(const struct cmesh_ctl_port *d)
{
	return d->ring_cap == 0 && (d->flags & ~CMESH_PORT_F_ENDED) == 0 &&
	       !((d->flags & CMESH_PORT_F_ENDED) && d->id);
}

int cmesh__link_ctx_arrive(struct cmesh__link *l,
			   const struct cmesh_ctl_port *d)
{
	struct ctx_import *im;
	int r = 0;

	if (!d->id)
		return 0; /* made when it is received: nothing names it */
	im = malloc(sizeof(*im));
	if (!im)
		return -ENOMEM;
	im->l = l;
	im->id = d->id;
	im->mapped = false;
	im->n = cmesh__ctx_node_new(deadline_of(d), cmesh__link_failed(l),
				    import_gone, im);
	if (!im->n) {
		free(im);
		return -ENOMEM;
	}
	pthread_mutex_lock(&l->ctx_lock);
	if (d->id <= l->ctx_last_in)
		r = -EPROTO; /* not a new id */
	else
		r = cmesh__idmap_put(&l->ctx_in, d->id, im->n);
	if (!r) {
		l->ctx_last_in = d->id;
		im->mapped = true;
	}
	pthread_mutex_unlock(&l->ctx_lock);
	cmesh__link_get(l); /* the node's, until import_gone() */
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
	pthread_mutex_lock(&l->ctx_lock);
	if (m.id > l->ctx_last_in)
		r = -EPROTO; /* an id it never gave */
	else
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

struct collect {
	struct cmesh__ctx_node **v;
	uint32_t n, cap;
};

static void collect_one(void *arg, uint32_t id, void *p)
{
	struct collect *c = arg;

	(void)id;
	if (c->n < c->cap && cmesh__ctx_node_tryref(p))
		c->v[c->n++] = p;
}

void cmesh__ctx_link_failed(struct cmesh__link *l)
{
	struct collect c = { 0 };

	if (!l->ctx_lock_init)
		return;
	/* Nodes made from now on start ended (cmesh__link_ctx_arrive()). */
	pthread_mutex_lock(&l->ctx_lock);
	c.cap = (uint32_t)ck_ht_count(&l->ctx_in.ht);
	pthread_mutex_unlock(&l->ctx_lock);
	for (;;) {
		c.v = c.cap ? malloc(c.cap * sizeof(*c.v)) : NULL;
		if (c.v || !c.cap)
			break;
		c.cap /= 2; /* short of memory: cancel what fits */
	}
	pthread_mutex_lock(&l->ctx_lock);
	cmesh__idmap_each(&l->ctx_in, collect_one, &c);
	pthread_mutex_unlock(&l->ctx_lock);
	for (uint32_t i = 0; i < c.n; i++) {
		cmesh__ctx_node_cancel(c.v[i]);
		cmesh__ctx_node_unref(c.v[i]);
	}
	free(c.v);
}

/* Teardown: every live export leaves the map for the `gone` list. */
static void drop_export(void *arg, uint32_t id, void *p)
{
	struct ctx_export **gone = arg, *e = p;

	(void)id;
	e->state = EXP_GONE; /* a watcher firing now does nothing */
	e->next = *gone;
	*gone = e;
}

void cmesh__ctx_destroy(struct cmesh__link *l)
{
	struct ctx_export *gone = NULL;

	if (!l->ctx_lock_init)
		return;
	/* Nothing is sent any more: fired or not, every export goes. */
	pthread_mutex_lock(&l->ctx_lock);
	for (struct ctx_export *e = l->ctx_fired, *next; e; e = next) {
		next = e->next;
		if (e->state == EXP_FIRED)
			cmesh__idmap_del(&l->ctx_out, e->id);
		e->next = gone;
		gone = e;
	}
	l->ctx_fired = NULL;
	cmesh__idmap_each(&l->ctx_out, drop_export, &gone);
	pthread_mutex_unlock(&l->ctx_lock);
	while (gone) {
		struct ctx_export *e = gone;

		gone = e->next;
		export_free(e);
	}
	cmesh__idmap_destroy(&l->ctx_out);
	/* Nodes of `ctx_in` hold the link: none is left when it goes. */
	cmesh__idmap_destroy(&l->ctx_in);
	pthread_mutex_destroy(&l->ctx_lock);
	l->ctx_lock_init = false;
}
