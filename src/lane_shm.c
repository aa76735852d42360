/* SPDX-License-Identifier: MIT */
/*
 * lane_shm.c - the shared memory of a lane that an endpoint created: two
 * halves, each an arena of the usual layout (shm/ring.h, shm/proto.h).
 *
 * The producer's half holds the ring's slots and its signal line; the
 * consumer's half its head and wake lines. Each side creates its own half
 * (writable, sealed) and maps the other's read-only: the side that sends
 * the endpoint creates its half first and sends it with the port
 * descriptor, the side that takes the endpoint answers with its half.
 *
 * Until both are mapped the lane is unbound: an out lane's sends spill
 * (its backlog waits for the binding, then the link thread flushes it),
 * an in lane has nothing to read. `bound` is stored with release once
 * every pointer the data path uses is set; the data path loads it with
 * acquire before it uses them.
 */
#include "lane.h"

#include "arena.h"
#include "link.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cmesh__lane_new(struct cmesh__link *link, uint32_t id, bool is_out,
		    const cmesh_type *type, uint64_t max_trail,
		    uint64_t max_backlog, int64_t spin_ns,
		    struct cmesh__lane **out)
{
	struct cmesh__lane *ln =
		aligned_alloc(CMESH_SHM_LINE, (sizeof(*ln) + CMESH_SHM_LINE -
					       1) & ~(CMESH_SHM_LINE - 1));
	int r;

	if (!ln)
		return -ENOMEM;
	r = cmesh__lane_init(ln, link, type, max_trail, max_backlog, spin_ns);
	if (r) {
		free(ln);
		return r;
	}
	ln->id = id;
	ln->is_out = is_out;
	ln->dynamic = true;
	/* Nothing reads or sets a wake line of ours before the binding. */
	ln->peer_wake = &ln->unbound_wake;
	/* Sends spill until the consumer's half is mapped. */
	atomic_store_explicit(&ln->spilling, is_out ? 1u : 0u,
			      memory_order_relaxed);
	*out = ln;
	return 0;
}

void cmesh__lane_free(struct cmesh__lane *ln)
{
	if (!ln)
		return;
	cmesh__lane_destroy(ln);
	cmesh__arena_free(ln->peer_half);
	cmesh__arena_free(ln->own_half);
	free(ln);
}

static void *line_at(struct cmesh__arena *a, uint32_t line)
{
	return (unsigned char *)cmesh__arena_base(a) +
	       cmesh__arena_line_off(a, line);
}

int cmesh__lane_own_half(struct cmesh__lane *ln, uint32_t ring_cap, int *out_fd)
{
	uint64_t size =
		ln->is_out ?
			cmesh__arena_size_for(cmesh_shm_ring_area(ring_cap)) :
			CMESH_SHM_ARENA_MIN_SIZE;
	int r;

	if (!cmesh_shm_ring_cap_ok(ring_cap))
		return -EINVAL;
	r = cmesh__arena_create(size,
				ln->is_out ? "cmesh-lane-out" : "cmesh-lane-in",
				&ln->own_half);
	if (r)
		return r;
	if (ln->is_out) {
		r = cmesh__shmring_producer_init(
			&ln->prod, ln->own_half,
			cmesh__arena_layout(ln->own_half)->data_off,
			cmesh__arena_line_off(ln->own_half,
					      CMESH_PROTO_LINE_TAIL),
			ring_cap);
		/* Zeroed at creation: the futex our sleeping peer waits on. */
		ln->own_signal = line_at(ln->own_half, CMESH_PROTO_LINE_SIGNAL);
	} else {
		r = cmesh__shmring_consumer_init(
			&ln->cons, ln->own_half,
			cmesh__arena_layout(ln->own_half)->ctl_off +
				CMESH_PROTO_LINE_HEAD * CMESH_SHM_LINE);
		ln->own_wake = line_at(ln->own_half, CMESH_PROTO_LINE_WAKE);
		/* The ring we asked for: ATTACHes may come before its half. */
		ln->att_max = ring_cap / CMESH_SHM_SLOT_SIZE + 1;
	}
	if (r) {
		cmesh__arena_free(ln->own_half);
		ln->own_half = NULL;
		return r;
	}
	ln->ring_cap = ring_cap;
	*out_fd = cmesh__arena_release_fd(ln->own_half);
	return 0;
}

static const void *peer_line(const struct cmesh__arena *a, uint32_t line,
			     size_t len)
{
	uint64_t off = cmesh__arena_line_off(a, line);

	if (!cmesh__arena_ctl_ok(a, off, len))
		return NULL;
	return (const unsigned char *)cmesh__arena_base(a) + off;
}

int cmesh__lane_bind(struct cmesh__lane *ln, int fd, uint64_t size,
		     uint32_t ring_cap)
{
	struct cmesh__arena *peer;
	int r;

	if (!ln->own_half || ln->peer_half) {
		close(fd);
		return -EPROTO;
	}
	r = cmesh__arena_map_peer(fd, size, &peer);
	if (r) {
		close(fd);
		return r;
	}
	r = -EPROTO;
	if (ln->is_out) {
		const struct cmesh_shm_ring_wake *w =
			peer_line(peer, CMESH_PROTO_LINE_WAKE, sizeof(*w));

		if (!w ||
		    cmesh__shmring_producer_attach(
			    &ln->prod, peer,
			    cmesh__arena_line_off(peer, CMESH_PROTO_LINE_HEAD)))
			goto out_free;
		ln->peer_wake = w;
	} else {
		const struct cmesh_shm_ring_signal *sig =
			peer_line(peer, CMESH_PROTO_LINE_SIGNAL, sizeof(*sig));

		if (!sig ||
		    cmesh__shmring_consumer_attach(
			    &ln->cons, peer,
			    cmesh__arena_layout(peer)->data_off,
			    cmesh__arena_line_off(peer, CMESH_PROTO_LINE_TAIL),
			    ring_cap))
			goto out_free;
		ln->peer_signal = sig;
		ln->buf_limit = cmesh__shmring_record_limit(ring_cap);
		ln->att_max = ring_cap / CMESH_SHM_SLOT_SIZE + 1;
	}
	/* Mapped: the fd is not needed any more (a peer's fd table entry). */
	cmesh__arena_close_fd(peer);
	ln->peer_half = peer;
	/* Pairs with cmesh__lane_bound()'s acquire load. */
	atomic_store_explicit(&ln->bound, true, memory_order_release);
	return 0;

out_free:
	cmesh__arena_free(peer);
	return r;
}

/* What a lane that arrived failed reports for good. */
static const _Atomic int failed_port = -ECONNRESET;

int cmesh__lane_new_failed(struct cmesh__link *link, bool is_out,
			   const cmesh_type *type, struct cmesh__lane **out)
{
	int r = cmesh__lane_new(link, 0, is_out, type, 0, 0, 0, out);

	if (r)
		return r;
	(*out)->failed = &failed_port;
	(*out)->failed_alone = true;
	return 0;
}

void cmesh__lane_set_dropped(struct cmesh__lane *ln, bool failed)
{
	uint8_t bits = LANE_DROPPED | (failed ? LANE_DROP_FAILED : 0);

	/* Lost to a failure once, it stays so. */
	bits |= atomic_fetch_or_explicit(&ln->dropped, bits,
					 memory_order_release);
	/*
	 * An out lane's senders read closed here: -EPIPE from now on
	 * (-ECONNRESET: lost to a failure). A failure always stores; a close
	 * only over nothing, so a drop as closed racing one as failed (two
	 * threads) cannot lower it either.
	 */
	if (ln->is_out && !cmesh__lane_bound(ln)) {
		uint32_t none = 0;

		if (bits & LANE_DROP_FAILED)
			atomic_store_explicit(&ln->unbound_wake.closed,
					      CMESH_SHM_CLOSED_FAILED,
					      memory_order_release);
		else
			atomic_compare_exchange_strong_explicit(
				&ln->unbound_wake.closed, &none, 1,
				memory_order_release, memory_order_relaxed);
	}
}
