/* SPDX-License-Identifier: MIT */
/*
 * cell.c - cells and their updater (include/cmesh/cell.h), on channels.
 *
 * Each cell (subscription) is two channels: updates (the updater's sender
 * -> the cell's receiver: struct update + the value as trailing bytes) and
 * control (the cell's sender -> the updater's receiver: ACKs of versions
 * seen, and SUBSCRIBE messages carrying a new subscription's two ends).
 * One channel each per cell, never shared: a cell whose process dies
 * fails only its own channels, and the updater tells which cell spoke by
 * which receiver it came in on.
 *
 * Versions only grow (the updater is the one writer); a cell keeps the
 * highest it received and ignores older ones (a clone or a moved cell is
 * seeded by its parent, on another sender of the same channel, so an
 * update may cross that seed). A clone or port is a new subscription:
 * its creator sends the current value on the new updates channel itself,
 * then SUBSCRIBE to the updater, which sends every later value there.
 *
 * The updater takes control messages when it is called (set, wait_seen,
 * subscribers); cmesh_cell_wait_seen() sleeps in a waitset of the control
 * receivers. A sub whose updates cannot be sent (its cell gone, its
 * process dead, its channel flooded) loses its updates sender at once but
 * keeps its control receiver until that channel ends: the SUBSCRIBEs its
 * cell sent before it went (a clone, a port) are still to be taken there.
 */
#include <cmesh/cell.h>

#include "endpoint.h"
#include "env.h"
#include "queue.h"

#include <cmesh/waitset.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- wire types -------------------------------------------------------- */

struct update {
	uint64_t version;
	uint64_t fp; /* the value type's fingerprint */
};

CMESH_TYPE_DEFINE_PLAIN(cmesh_cell_update_type, struct update);

#define OP_ACK 1u
#define OP_SUBSCRIBE 2u

/* Messages a call takes from one channel before it moves on. */
#define TAKE_MAX 64

/*
 * SUBSCRIBE flag: a port's (a cell that will be read elsewhere): it has
 * seen nothing until its cell acknowledges a version. A clone's holder
 * has the value already, as its parent had it.
 */
#define CTL_F_UNSEEN 1u

struct control {
	uint32_t op;
	uint32_t flags;	  /* SUBSCRIBE: CTL_F_UNSEEN */
	uint64_t version; /* ACK: the version seen; SUBSCRIBE: the seed's */
	cmesh_sender *updates;	 /* SUBSCRIBE: the new cell's updates */
	cmesh_receiver *control; /* SUBSCRIBE: its control channel */
};

CMESH_TYPE_DEFINE(cmesh_cell_control_type, struct control,
		  CMESH_FIELD_SENDER(struct control, updates,
				     cmesh_cell_update_type),
		  CMESH_FIELD_RECEIVER(struct control, control,
				       cmesh_cell_control_type));

/* ---- the updater -------------------------------------------------------- */

static cmesh_cell *cell_alloc(const cmesh_type *vt, uint64_t fp);

struct sub {
	cmesh_sender *updates;	 /* NULL once it cannot be sent to (top) */
	cmesh_receiver *control; /* read until it ends */
	uint64_t seen;		 /* the highest version it acknowledged */
};

struct cmesh_cell_updater {
	const cmesh_type *vt;
	uint64_t fp;
	uint64_t version;
	unsigned char *value;
	struct sub *subs;
	uint32_t n, cap;
	/* The control receivers (key 0: wait_seen looks at every sub). */
	cmesh_waitset *ws;
};

struct cmesh_cell {
	const cmesh_type *vt;
	uint64_t fp;
	cmesh_receiver *updates;
	cmesh_sender *control;
	struct cmesh__queue *uq; /* updates' queue: readiness without a call */
	unsigned char *value;
	unsigned char *value_in; /* an arriving one, until it is checked */
	uint64_t version;	 /* highest received */
	uint64_t returned;	 /* last handed to the caller */
	uint64_t acked;		 /* last told to the updater */
	int ended; /* the updates channel's end: -EPIPE/-ECONNRESET */
};

static bool plain_type(const cmesh_type *t)
{
	return t && !cmesh_type_check(t) && t->nfields == 0;
}

/* Two channels for a new subscription; on failure nothing is left. */
static int sub_channels(cmesh_sender **utx, cmesh_receiver **urx,
			cmesh_sender **ctx_, cmesh_receiver **crx)
{
	int r = cmesh_channel_new(&cmesh_cell_update_type, NULL, utx, urx);

	if (r)
		return r;
	r = cmesh_channel_new(&cmesh_cell_control_type, NULL, ctx_, crx);
	if (r) {
		cmesh_sender_free(*utx);
		cmesh_receiver_free(*urx);
	}
	return r;
}

static int send_value(cmesh_sender *tx, uint64_t version, uint64_t fp,
		      const void *value, size_t size)
{
	struct update m = { .version = version, .fp = fp };

	return cmesh_sender_send(tx, &m, value, size);
}

/* Drops sub i (its channels freed); the last one moves into its place. */
static void sub_drop(cmesh_cell_updater *u, uint32_t i)
{
	cmesh_waitset_remove_receiver(u->ws, u->subs[i].control);
	cmesh_sender_free(u->subs[i].updates);
	cmesh_receiver_free(u->subs[i].control);
	u->subs[i] = u->subs[--u->n];
}

static int sub_add(cmesh_cell_updater *u, cmesh_sender *utx,
		   cmesh_receiver *crx, uint64_t seen)
{
	int r;

	if (u->n == u->cap) {
		uint32_t cap = u->cap ? u->cap * 2 : 4;
		struct sub *s = realloc(u->subs, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		u->subs = s;
		u->cap = cap;
	}
	r = cmesh_waitset_add_receiver(u->ws, crx, 0);
	if (r)
		return r;
	u->subs[u->n++] = (struct sub){ utx, crx, seen };
	return 0;
}

/*
 * Takes what sub i's control channel holds: ACKs, SUBSCRIBEs (new subs
 * get the current value at once). False when the sub is gone (dropped).
 */
static bool sub_take(cmesh_cell_updater *u, uint32_t i)
{
	struct control m;
	int r = 0, n = 0;

	/* At most TAKE_MAX a call: a cell that floods holds nobody up. */
	while (n++ < TAKE_MAX &&
	       (r = cmesh_receiver_try_recv(u->subs[i].control, &m, NULL, 0)) ==
		       0) {
		if (m.op == OP_ACK && m.version <= u->version &&
		    u->subs[i].updates) {
			if (m.version > u->subs[i].seen)
				u->subs[i].seen = m.version;
		} else if (m.op == OP_SUBSCRIBE && m.updates && m.control) {
			/*
			 * Its cell may be gone already (a clone made into a
			 * port before we took it): its control channel still
			 * holds what it said, the port's SUBSCRIBE among
			 * them, which its sub_take reads before it drops it
			 * (set() keeps a sub it cannot send to for that).
			 */
			(void)send_value(m.updates, u->version, u->fp, u->value,
					 u->vt->size);
			uint64_t seen = m.version < u->version ? m.version :
								 u->version;

			if (m.flags & CTL_F_UNSEEN)
				seen = 0;
			if (!sub_add(u, m.updates, m.control, seen))
				continue; /* taken */
		}
		/* Anything else is dropped, with whatever it carries. */
		cmesh_sender_free(m.updates);
		cmesh_receiver_free(m.control);
	}
	if (n > TAKE_MAX || r == -EAGAIN)
		return true;
	/* Closed (the cell was freed) or failed (its process died). */
	sub_drop(u, i);
	return false;
}

static void take_all(cmesh_cell_updater *u)
{
	for (uint32_t i = 0; i < u->n;)
		if (sub_take(u, i))
			i++;
}

int cmesh_cell_new(const cmesh_type *value_type, const void *initial,
		   cmesh_cell_updater **out_updater, cmesh_cell **out_cell)
{
	cmesh_cell_updater *u;
	cmesh_cell *c;
	cmesh_sender *utx, *ctx_;
	cmesh_receiver *urx, *crx;
	const cmesh_env *env;
	int r;

	if (!plain_type(value_type) || !initial || !out_updater || !out_cell)
		return -EINVAL;
	/* A value travels as trailing bytes: it must fit the limit. */
	if (cmesh__env_get(&env))
		return -EINVAL;
	if (value_type->size > env->max_message)
		return -EMSGSIZE;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->vt = value_type;
	cmesh_type_fingerprint(value_type, &u->fp);
	c = cell_alloc(value_type, u->fp);
	u->value = malloc(value_type->size);
	if (!c || !u->value)
		goto nomem;
	r = cmesh_waitset_new(&u->ws); /* -ENOMEM, -EMFILE, -ENFILE */
	if (r)
		goto fail;
	memcpy(u->value, initial, value_type->size);
	memcpy(c->value, initial, value_type->size);
	u->version = c->version = 1;
	c->acked = c->returned = 1;
	r = sub_channels(&utx, &urx, &ctx_, &crx);
	if (r)
		goto fail;
	r = sub_add(u, utx, crx, 1);
	if (r) {
		cmesh_sender_free(utx);
		cmesh_receiver_free(urx);
		cmesh_sender_free(ctx_);
		cmesh_receiver_free(crx);
		free(u->subs); /* sub_add may have made it */
		goto fail;
	}
	c->updates = urx;
	c->control = ctx_;
	c->uq = cmesh__endpoint_queue(CMESH_FIELD_KIND_RECEIVER, urx);
	*out_updater = u;
	*out_cell = c;
	return 0;
nomem:
	r = -ENOMEM;
fail:
	cmesh_waitset_free(u->ws);
	free(u->value);
	free(u);
	cmesh_cell_free(c);
	return r;
}

int64_t cmesh_cell_set(cmesh_cell_updater *u, const void *value)
{
	if (!u || !value)
		return -EINVAL;
	take_all(u);
	u->version++;
	memcpy(u->value, value, u->vt->size);
	for (uint32_t i = 0; i < u->n; i++) {
		if (!u->subs[i].updates ||
		    !send_value(u->subs[i].updates, u->version, u->fp, u->value,
				u->vt->size))
			continue;
		/* Gone, failed or flooded: its control is read on (top). */
		cmesh_sender_free(u->subs[i].updates);
		u->subs[i].updates = NULL;
	}
	return (int64_t)u->version;
}

static bool all_seen(const cmesh_cell_updater *u)
{
	for (uint32_t i = 0; i < u->n; i++)
		if (u->subs[i].updates && u->subs[i].seen < u->version)
			return false;
	return true;
}

int cmesh_cell_wait_seen(cmesh_cell_updater *u, const cmesh_ctx *ctx)
{
	uint64_t key;
	int r;

	if (!u)
		return -EINVAL;
	for (;;) {
		take_all(u);
		if (all_seen(u))
			return 0;
		r = cmesh_waitset_wait_ctx(u->ws, ctx, &key);
		if (r && r != -EAGAIN)
			return r;
	}
}

int cmesh_cell_subscribers(cmesh_cell_updater *u)
{
	int n = 0;

	if (!u)
		return -EINVAL;
	take_all(u);
	for (uint32_t i = 0; i < u->n; i++)
		n += u->subs[i].updates != NULL;
	return n;
}

void cmesh_cell_updater_free(cmesh_cell_updater *u)
{
	if (!u)
		return;
	while (u->n)
		sub_drop(u, u->n - 1);
	cmesh_waitset_free(u->ws);
	free(u->subs);
	free(u->value);
	free(u);
}

/* ---- cells ---------------------------------------------------------------- */

/*
 * An update larger than this cell's values (a receive said -EMSGSIZE and
 * left it queued; the next receive may find another source's first):
 * received into *big (malloc'd, the caller frees it), checked as any
 * update by the caller. A receive's result: its length, or -errno
 * (-EAGAIN: nothing; -ENOMEM: it stays queued).
 */
static int recv_oversized(cmesh_cell *c, struct update *m, void **big)
{
	int n = cmesh_receiver_try_peek(c->updates);
	size_t cap;

	if (n < 0)
		return n;
	cap = ((size_t)n > c->vt->size ? (size_t)n : c->vt->size) + 1;
	*big = malloc(cap);
	if (!*big)
		return -ENOMEM;
	return cmesh_receiver_try_recv(c->updates, m, *big, cap);
}

/*
 * Takes every update waiting: the highest version wins. 0, or -EBADMSG
 * (another value type) / -EPROTO (a malformed one) (the last good value
 * stays). A receive's error ends the cell (its end: -EPIPE, -ECONNRESET;
 * -EPROTO, -EMFILE) but for those that are this call's alone (-ENOMEM,
 * -ETIMEDOUT, -ECANCELED).
 */
static int drain(cmesh_cell *c, bool wait, const cmesh_ctx *ctx)
{
	struct update m;
	void *big = NULL;
	int r, bad = 0;

	/* Bounded: an updater that floods cannot keep a read here. */
	for (int n = 0; n < TAKE_MAX * 4; n++) {
		if (!wait && !cmesh__queue_ready(c->uq))
			break; /* nothing new: no call below */
		r = wait ? cmesh_receiver_recv_ctx(c->updates, ctx, &m,
						   c->value_in, c->vt->size) :
			   cmesh_receiver_try_recv(c->updates, &m, c->value_in,
						   c->vt->size);
		wait = false;
		if (r == -EMSGSIZE) /* larger than this cell's values */
			r = recv_oversized(c, &m, &big);
		if (r == -EAGAIN || r == -EMSGSIZE) {
			free(big);
			big = NULL;
			if (r == -EAGAIN)
				break;
			continue; /* another source's came first: again */
		}
		if (r < 0) {
			free(big);
			if (r != -ENOMEM && r != -ETIMEDOUT && r != -ECANCELED)
				c->ended = r;
			return r == -EPIPE || r == -ECONNRESET ? 0 : r;
		}
		/* The type first: a value of another type may be any size. */
		if (m.fp != c->fp)
			bad = -EBADMSG;
		else if (r != (int)c->vt->size)
			bad = -EPROTO;
		else if (m.version > c->version) {
			c->version = m.version;
			memcpy(c->value, big ? big : c->value_in, c->vt->size);
		}
		free(big);
		big = NULL;
	}
	return bad;
}

/* Tells the updater the version the caller now has. */
static void ack(cmesh_cell *c)
{
	struct control m = { .op = OP_ACK, .version = c->version };

	if (c->version > c->acked && !c->ended &&
	    !cmesh_sender_send(c->control, &m, NULL, 0))
		c->acked = c->version;
}

int cmesh_cell_get(cmesh_cell *c, void *out, uint64_t *version)
{
	int r;

	if (!c || !out)
		return -EINVAL;
	r = drain(c, false, NULL);
	memcpy(out, c->value, c->vt->size);
	if (version)
		*version = c->version;
	c->returned = c->version;
	if (c->version > c->acked)
		ack(c);
	return r;
}

int cmesh_cell_wait_next(cmesh_cell *c, const cmesh_ctx *ctx, void *out,
			 uint64_t *version)
{
	int r;

	if (!c || !out)
		return -EINVAL;
	r = drain(c, false, NULL);
	/* Waiting for a newer one: the holder has this one (a port's seed). */
	if (!r && c->version <= c->returned && c->version > c->acked)
		ack(c);
	while (!r && c->version <= c->returned) {
		if (c->ended)
			return c->ended;
		r = drain(c, true, ctx);
	}
	if (r)
		return r;
	return cmesh_cell_get(c, out, version);
}

static cmesh_cell *cell_alloc(const cmesh_type *vt, uint64_t fp)
{
	cmesh_cell *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->vt = vt;
	c->fp = fp;
	c->value = malloc(vt->size);
	c->value_in = malloc(vt->size);
	if (!c->value || !c->value_in) {
		free(c->value);
		free(c->value_in);
		free(c);
		return NULL;
	}
	return c;
}

void cmesh_cell_free(cmesh_cell *c)
{
	if (!c)
		return;
	cmesh_receiver_free(c->updates);
	cmesh_sender_free(c->control);
	free(c->value);
	free(c->value_in);
	free(c);
}

/*
 * A new subscription seeded with c's value: its updates receiver and
 * control sender in *urx / *ctx_. The updater hears of it through c's
 * control channel (if the updater is gone, the new one just keeps the
 * value).
 */
static int subscribe(cmesh_cell *c, uint32_t flags, cmesh_receiver **out_urx,
		     cmesh_sender **out_ctx)
{
	struct control m = { .op = OP_SUBSCRIBE, .flags = flags };
	cmesh_sender *utx, *ctx_;
	cmesh_receiver *urx, *crx;
	int r;

	drain(c, false, NULL);
	r = sub_channels(&utx, &urx, &ctx_, &crx);
	if (r)
		return r;
	r = send_value(utx, c->version, c->fp, c->value, c->vt->size);
	if (r) {
		cmesh_sender_free(utx);
		cmesh_receiver_free(urx);
		cmesh_sender_free(ctx_);
		cmesh_receiver_free(crx);
		return r;
	}
	m.updates = utx;
	m.control = crx;
	m.version = c->version;
	/*
	 * Taken in every case. -EPIPE, -ECONNRESET: no updater any more,
	 * the new cell keeps its value (nothing lost). Any other error
	 * (-ENOBUFS: the updater reads nothing; -ENOMEM) would leave it
	 * without updates from a live updater: the caller's.
	 */
	r = cmesh_sender_send(c->control, &m, NULL, 0);
	if (r && r != -EPIPE && r != -ECONNRESET) {
		cmesh_receiver_free(urx);
		cmesh_sender_free(ctx_);
		return r;
	}
	*out_urx = urx;
	*out_ctx = ctx_;
	return 0;
}

int cmesh_cell_clone(cmesh_cell *c, cmesh_cell **out)
{
	cmesh_cell *n;
	int r;

	if (!c || !out)
		return -EINVAL;
	n = cell_alloc(c->vt, c->fp);
	if (!n)
		return -ENOMEM;
	r = subscribe(c, 0, &n->updates, &n->control);
	if (r) {
		cmesh_cell_free(n);
		return r;
	}
	n->uq = cmesh__endpoint_queue(CMESH_FIELD_KIND_RECEIVER, n->updates);
	/* Its seed is queued: it starts with c's value, as c has it. */
	drain(n, false, NULL);
	n->acked = n->returned = n->version;
	*out = n;
	return 0;
}

int cmesh_cell_to_port(cmesh_cell *c, cmesh_cell_port *port)
{
	int r;

	if (!c || !port)
		return -EINVAL;
	r = subscribe(c, CTL_F_UNSEEN, &port->updates, &port->control);
	if (r)
		return r;
	cmesh_cell_free(c);
	return 0;
}

int cmesh_cell_from_port(cmesh_cell_port *port, const cmesh_type *value_type,
			 const cmesh_ctx *ctx, cmesh_cell **out)
{
	cmesh_cell *c;
	uint64_t fp;
	int r;

	if (!port || !out)
		return -EINVAL;
	if (!port->updates || !port->control || !plain_type(value_type)) {
		r = -EINVAL;
		goto out_free;
	}
	cmesh_type_fingerprint(value_type, &fp);
	c = cell_alloc(value_type, fp);
	if (!c) {
		r = -ENOMEM;
		goto out_free;
	}
	c->updates = port->updates;
	c->control = port->control;
	port->updates = NULL;
	port->control = NULL;
	c->uq = cmesh__endpoint_queue(CMESH_FIELD_KIND_RECEIVER, c->updates);
	/* Its seed may still be on its way: wait for the first value. */
	r = drain(c, true, ctx);
	if (!r && !c->version)
		r = c->ended ? c->ended : -EPROTO;
	if (r) {
		cmesh_cell_free(c);
		return r;
	}
	drain(c, false, NULL);
	/*
	 * The updater counts this subscription as having seen nothing
	 * (CTL_F_UNSEEN): the first read, or a wait for the next value,
	 * tells it (acked 0).
	 */
	c->returned = c->version;
	c->acked = 0;
	*out = c;
	return 0;
out_free:
	cmesh_receiver_free(port->updates);
	cmesh_sender_free(port->control);
	port->updates = NULL;
	port->control = NULL;
	return r;
}

int cmesh_cell_waitset_add(cmesh_cell *c, cmesh_waitset *ws, uint64_t key)
{
	return c ? cmesh_waitset_add_receiver(ws, c->updates, key) : -EINVAL;
}

int cmesh_cell_waitset_remove(cmesh_cell *c, cmesh_waitset *ws)
{
	return c ? cmesh_waitset_remove_receiver(ws, c->updates) : -EINVAL;
}
