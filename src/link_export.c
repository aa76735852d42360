/* SPDX-License-Identifier: MIT */
/*
 * link_export.c - the lanes that endpoints create on a link (dynamic
 * lanes): one for an endpoint we send (cmesh__link_lane_export: our half,
 * registered, awaiting the peer's LANE answer) and one for an endpoint we
 * receive (cmesh__link_lane_import: bound to the peer's half, registered,
 * answered with ours; for a CLAIM, answered by cmesh__lanes_answer). A
 * REUSE port's lane is link_pool.c's, the table and the answers
 * link_lanes.c's, what becomes of the lane then link_sweep.c's.
 */
#include "link_int.h"

#include "arena.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static uint64_t out_trail(const struct cmesh__link *l)
{
	return l->out.max_trail; /* ours, lowered to the peer's in HELLO */
}

int cmesh__link_lane_export(struct cmesh__link *l, bool is_out,
			    const cmesh_type *type, uint32_t ring_cap,
			    uint64_t max_backlog, int64_t spin_ns,
			    struct cmesh__port_out *out)
{
	struct cmesh__lane *ln;
	uint32_t id;
	int r, fd;

	pthread_mutex_lock(&l->att_lock);
	id = l->next_id;
	l->next_id += 2;
	pthread_mutex_unlock(&l->att_lock);
	if (id < 2)
		return -ENOSPC; /* 2^31 lanes on one link */
	r = cmesh__lane_new(l, id, is_out, type,
			    is_out ? out_trail(l) : l->in.max_trail,
			    max_backlog, spin_ns, &ln);
	if (r)
		return r;
	r = cmesh__lane_own_half(ln, ring_cap, &fd);
	/* Kept until its descriptor is sent (or not): see lane_done(). */
	atomic_store_explicit(&ln->inflight, true, memory_order_relaxed);
	if (!r) {
		r = cmesh__lanes_add(l, ln);
		if (r)
			close(fd);
	}
	if (r) {
		cmesh__lane_free(ln);
		return r;
	}
	memset(out, 0, sizeof(*out));
	out->desc.id = id;
	/* What the peer's endpoint does: the opposite of us. */
	out->desc.kind = is_out ? CMESH_PORT_READ : CMESH_PORT_WRITE;
	out->link = l;
	out->desc.ring_cap = ring_cap;
	out->desc.arena_size = cmesh__arena_layout(ln->own_half)->size;
	out->fd = fd;
	out->lane = ln;
	return 0;
}

int cmesh__link_lane_import(struct cmesh__link *l,
			    const struct cmesh_ctl_port *d, int fd,
			    const cmesh_type *type, uint64_t max_backlog,
			    int64_t spin_ns, const uint64_t *token,
			    struct cmesh__lane **out)
{
	return cmesh__lanes_import(l, d, fd, type, max_backlog, spin_ns, token,
				   NULL, out);
}

int cmesh__lanes_import(struct cmesh__link *l, const struct cmesh_ctl_port *d,
			int fd, const cmesh_type *type, uint64_t max_backlog,
			int64_t spin_ns, const uint64_t *token, int *answer_fd,
			struct cmesh__lane **out)
{
	bool is_out = d->kind == CMESH_PORT_WRITE;
	struct cmesh__lane *ln = NULL;
	int r, own_fd = -1;

	if (d->flags & CMESH_PORT_F_REUSE)
		return cmesh__lanes_import_reuse(l, d, type, out);

	pthread_mutex_lock(&l->att_lock);
	r = d->arena_size > MAX_PEER_MAPPED - l->peer_mapped ? -EPROTO : 0;
	if (!r)
		l->peer_mapped += d->arena_size;
	pthread_mutex_unlock(&l->att_lock);
	if (r) {
		close(fd);
		return r;
	}
	r = cmesh__lane_new(l, d->id, is_out, type,
			    is_out ? out_trail(l) : l->in.max_trail,
			    max_backlog, spin_ns, &ln);
	if (!r)
		r = cmesh__lane_own_half(ln, d->ring_cap, &own_fd);
	if (!r) {
		r = cmesh__lane_bind(ln, fd, d->arena_size, d->ring_cap);
		fd = -1;
		if (r && r != -ENOMEM)
			r = -EPROTO;
	}
	if (!r) {
		ln->answered = true;
		/* Bound from the start: no backlog to wait behind. */
		atomic_store_explicit(&ln->spilling, 0, memory_order_relaxed);
		r = cmesh__lanes_add(l, ln);
	}
	if (!r && (d->flags & CMESH_PORT_F_POOLABLE) && is_out) {
		/* Kept for the sender's reuse, up to our bound. */
		pthread_mutex_lock(&l->att_lock);
		if (l->npool_out < MAX_POOLED) {
			l->npool_out++;
			ln->poolable = true;
			ln->use = 1;
			ln->use_tail = cmesh__shmring_tail(&ln->prod);
		}
		pthread_mutex_unlock(&l->att_lock);
	}
	if (r) {
		if (fd >= 0)
			close(fd);
		if (own_fd >= 0)
			close(own_fd);
		cmesh__lane_free(ln);
		pthread_mutex_lock(&l->att_lock);
		l->peer_mapped -= d->arena_size;
		pthread_mutex_unlock(&l->att_lock);
		/* Nobody takes it here: the peer hears so (a bad half or id
		 * fails the link instead, in the caller). */
		if (r != -EPROTO)
			cmesh__link_port_drop(l, d, -1, false);
		return r;
	}
	*out = ln;
	if (answer_fd) {
		*answer_fd = own_fd; /* cmesh__lanes_answer() sends it */
		return 0;
	}
	cmesh__lanes_send_lane(l, d->id, ln->poolable ? CMESH_LANE_F_POOLED : 0,
			       cmesh__arena_layout(ln->own_half)->size, token,
			       own_fd);
	return 0;
}

void cmesh__lanes_answer(struct cmesh__link *l, struct cmesh__lane *ln,
			 const uint64_t *token, int fd, bool take)
{
	if (take) {
		cmesh__lanes_send_lane(l, ln->id, 0,
				       cmesh__arena_layout(ln->own_half)->size,
				       token, fd);
		return;
	}
	close(fd);
	/* Nobody here uses it: the sweep frees it (answered: at import). */
	cmesh__lane_set_dropped(ln, false);
	atomic_store_explicit(&ln->released, true, memory_order_release);
	cmesh__lanes_send_lane(l, ln->id, CMESH_LANE_F_DROPPED, 0, NULL, -1);
	cmesh__link_kick(l);
}
