/* SPDX-License-Identifier: MIT */
/*
 * shmring.c - SPSC record ring in shared memory (layout: shm/ring.h).
 *
 * Memory-ordering contract
 * - Publish. The producer writes a record (header, payload, padding; a PAD
 *   first if it wraps) with plain stores, then stores the new tail with
 *   release. The consumer loads tail with acquire (pairs with that store),
 *   so every byte below the tail it read is visible to it.
 * - Release of space. The consumer copies a record out, then stores the
 *   new head with release. The producer loads head with acquire (pairs
 *   with that store) before it reuses the space, so the consumer's reads
 *   of the old record happen before the producer's overwrite.
 * - Caching. The producer keeps the last head it validated and loads head
 *   again only when that cached value says the ring is full; the consumer
 *   keeps the last tail it validated and loads tail again only when it has
 *   consumed everything below it. Each side's own index is kept in a
 *   private copy and only ever stored, never read back.
 * - Trust. Each side reads the other's index and (consumer) the records
 *   from memory the peer may change at any time. Every shared value is
 *   read once into a local, the local is validated, and only the local is
 *   used (atomic_signal_fence after a plain copy stops the compiler from
 *   reading the shared bytes again instead of the local). A value that
 *   fails validation makes that side fail for good (-EPROTO); a bad but
 *   in-bounds record payload is the peer's business, not a memory-safety
 *   problem: every offset we derive lies inside the record area.
 * - The consumer's wake line (sleeping and closed flags: wakeups, receiver
 *   gone) is not used here; its contract is in shm/ring.h, its use in
 *   src/lane.c.
 */
#include "shmring.h"

#include "arena.h"
#include "ring.h"

#include <errno.h>
#include <string.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

uint32_t cmesh__shmring_record_limit(uint64_t cap)
{
	return cmesh_shm_ring_rec_limit(cap);
}

int cmesh__shmring_producer_init(struct cmesh__shmring_producer *p,
				 struct cmesh__arena *own, uint64_t tail_off,
				 uint64_t data_off, uint64_t cap)
{
	unsigned char *base;
	struct cmesh_shm_ring_prod *line;

	if (!cmesh__arena_writable(own) || !cmesh_shm_ring_cap_ok(cap) ||
	    !cmesh__arena_ctl_ok(own, tail_off, sizeof(*line)) ||
	    !cmesh__arena_data_ok(own, data_off, cap))
		return -EINVAL;
	base = cmesh__arena_base(own);
	line = (struct cmesh_shm_ring_prod *)(base + tail_off);
	p->data = base + data_off;
	p->tail = &line->tail;
	p->head = NULL;
	p->cap = cap;
	p->tail_pos = 0;
	p->head_cache = 0;
	p->limit = cmesh_shm_ring_rec_limit(cap);
	p->failed = false;
	memset(line->reserved, 0, sizeof(line->reserved));
	/* Reaches the consumer with the control message announcing it. */
	atomic_store_explicit(p->tail, 0, memory_order_relaxed);
	return 0;
}

int cmesh__shmring_producer_attach(struct cmesh__shmring_producer *p,
				   const struct cmesh__arena *peer,
				   uint64_t head_off)
{
	const unsigned char *base = cmesh__arena_base(peer);

	if (!cmesh__arena_ctl_ok(peer, head_off,
				 sizeof(struct cmesh_shm_ring_cons)))
		return -EPROTO;
	p->head =
		&((const struct cmesh_shm_ring_cons *)(base + head_off))->head;
	return 0;
}

int cmesh__shmring_consumer_init(struct cmesh__shmring_consumer *c,
				 struct cmesh__arena *own, uint64_t head_off)
{
	struct cmesh_shm_ring_cons *line;

	if (!cmesh__arena_writable(own) ||
	    !cmesh__arena_ctl_ok(own, head_off, sizeof(*line)))
		return -EINVAL;
	line = (struct cmesh_shm_ring_cons *)((unsigned char *)
						      cmesh__arena_base(own) +
					      head_off);
	c->data = NULL;
	c->tail = NULL;
	c->head = &line->head;
	c->cap = 0;
	c->head_pos = 0;
	c->tail_cache = 0;
	c->limit = 0;
	c->failed = false;
	memset(line->reserved, 0, sizeof(line->reserved));
	/* Reaches the producer with the control message announcing it. */
	atomic_store_explicit(c->head, 0, memory_order_relaxed);
	return 0;
}

int cmesh__shmring_consumer_attach(struct cmesh__shmring_consumer *c,
				   const struct cmesh__arena *peer,
				   uint64_t tail_off, uint64_t data_off,
				   uint64_t cap)
{
	const unsigned char *base = cmesh__arena_base(peer);

	if (!cmesh_shm_ring_cap_ok(cap) ||
	    !cmesh__arena_ctl_ok(peer, tail_off,
				 sizeof(struct cmesh_shm_ring_prod)) ||
	    !cmesh__arena_data_ok(peer, data_off, cap))
		return -EPROTO;
	c->data = base + data_off;
	c->tail =
		&((const struct cmesh_shm_ring_prod *)(base + tail_off))->tail;
	c->cap = cap;
	c->limit = cmesh_shm_ring_rec_limit(cap);
	return 0;
}

/* ---- producer ---- */

/*
 * Reloads the consumer's head. Valid: head_cache <= head <= tail_pos
 * (unsigned differences) and 8-byte aligned.
 */
static int refresh_head(struct cmesh__shmring_producer *p)
{
	uint64_t head;

	if (!p->head)
		return 0; /* unattached: the consumer's head is 0 */
	/* Pairs with the consumer's release store in publish_head(). */
	head = atomic_load_explicit(p->head, memory_order_acquire);

	if (unlikely(head % CMESH_SHM_REC_ALIGN ||
		     head - p->head_cache > p->tail_pos - p->head_cache)) {
		p->failed = true;
		return -EPROTO;
	}
	p->head_cache = head;
	return 0;
}

static void write_hdr(unsigned char *at, uint32_t len, uint32_t kind)
{
	struct cmesh_shm_rec_hdr h = { .len = len, .kind = kind };

	memcpy(at, &h, sizeof(h));
}

/* Room for a record of `len` payload bytes? 0, -EAGAIN, -EPROTO. */
static int make_room(struct cmesh__shmring_producer *p, uint32_t len)
{
	uint64_t need = cmesh_shm_ring_need(p->tail_pos, p->cap, len);
	int r;

	if (likely(need <= p->cap - (p->tail_pos - p->head_cache)))
		return 0;
	r = refresh_head(p);
	if (r)
		return r;
	return need <= p->cap - (p->tail_pos - p->head_cache) ? 0 : -EAGAIN;
}

int cmesh__shmring_reserve(struct cmesh__shmring_producer *p, uint32_t len)
{
	if (unlikely(p->failed))
		return -EPROTO;
	if (unlikely(len > p->limit))
		return -EMSGSIZE;
	return make_room(p, len);
}

int cmesh__shmring_pushv(struct cmesh__shmring_producer *p, uint32_t kind,
			 const struct cmesh__iov *iov, uint32_t niov)
{
	uint64_t total = 0, off, span, to_end;
	unsigned char *rec, *at;
	uint32_t len;
	int r;

	if (unlikely(p->failed))
		return -EPROTO;
	if (unlikely(kind < CMESH_SHM_REC_KIND_MIN ||
		     kind > CMESH_SHM_REC_KIND_MAX))
		return -EINVAL;
	for (uint32_t i = 0; i < niov; i++)
		total += iov[i].len; /* at most 2^32 pieces of < 2^32 */
	if (unlikely(total > p->limit))
		return -EMSGSIZE;
	len = (uint32_t)total;
	r = make_room(p, len);
	if (r)
		return r;
	off = cmesh_shm_ring_off(p->tail_pos, p->cap);
	span = cmesh_shm_rec_span(len);
	to_end = p->cap - off;
	if (span > to_end) {
		write_hdr(p->data + off,
			  (uint32_t)(to_end - CMESH_SHM_REC_HDR_SIZE),
			  CMESH_SHM_REC_PAD);
		p->tail_pos += to_end;
		off = 0;
	}
	rec = p->data + off;
	write_hdr(rec, len, kind);
	at = rec + CMESH_SHM_REC_HDR_SIZE;
	for (uint32_t i = 0; i < niov; i++) {
		if (iov[i].len)
			memcpy(at, iov[i].base, iov[i].len);
		at += iov[i].len;
	}
	/* Zero the padding: no stale bytes, deterministic contents. */
	memset(at, 0, span - CMESH_SHM_REC_HDR_SIZE - len);
	p->tail_pos += span;
	/* Publish; pairs with the consumer's acquire load in refresh_tail(). */
	atomic_store_explicit(p->tail, p->tail_pos, memory_order_release);
	return 0;
}

int cmesh__shmring_push(struct cmesh__shmring_producer *p, uint32_t kind,
			const void *buf, uint32_t len)
{
	struct cmesh__iov iov = { buf, len };

	return cmesh__shmring_pushv(p, kind, &iov, 1);
}

/* ---- consumer ---- */

static int fail(struct cmesh__shmring_consumer *c)
{
	c->failed = true;
	return -EPROTO;
}

/*
 * Reloads the producer's tail; called only when head_pos == tail_cache.
 * Valid: head_pos <= tail <= head_pos + cap (unsigned difference; a tail
 * that moved backwards wraps to a huge difference) and 8-byte aligned.
 */
static int refresh_tail(struct cmesh__shmring_consumer *c)
{
	uint64_t tail;

	if (!c->tail)
		return 0; /* unattached: nothing published */
	/* Pairs with the producer's release store in push(). */
	tail = atomic_load_explicit(c->tail, memory_order_acquire);

	if (unlikely(tail % CMESH_SHM_REC_ALIGN || tail - c->head_pos > c->cap))
		return fail(c);
	c->tail_cache = tail;
	return 0;
}

static void publish_head(struct cmesh__shmring_consumer *c, uint64_t head)
{
	c->head_pos = head;
	/* Pairs with the producer's acquire load in refresh_head(). */
	atomic_store_explicit(c->head, head, memory_order_release);
}

/* Copies the 8-byte record header at `off` out, once. */
static struct cmesh_shm_rec_hdr
read_hdr(const struct cmesh__shmring_consumer *c, uint64_t off)
{
	struct cmesh_shm_rec_hdr h;

	memcpy(&h, c->data + off, sizeof(h));
	/* Use the copy; never re-read the shared bytes (see top). */
	atomic_signal_fence(memory_order_seq_cst);
	return h;
}

/*
 * Steps over a PAD at the head: it must not be at offset 0, must reach
 * exactly the end of the record area, and must be followed by at least a
 * record header within the published bytes (the producer publishes a PAD
 * together with the record after it).
 */
static int skip_pad(struct cmesh__shmring_consumer *c,
		    struct cmesh_shm_rec_hdr h, uint64_t off)
{
	uint64_t to_end = c->cap - off;

	if (off == 0 || h.len != to_end - CMESH_SHM_REC_HDR_SIZE ||
	    to_end + CMESH_SHM_REC_HDR_SIZE > c->tail_cache - c->head_pos)
		return fail(c);
	publish_head(c, c->head_pos + to_end);
	return 0;
}

int cmesh__shmring_pop(struct cmesh__shmring_consumer *c, uint32_t *out_kind,
		       void *buf, uint32_t cap)
{
	struct cmesh_shm_rec_hdr h;
	uint64_t off, span;

	if (unlikely(c->failed))
		return -EPROTO;
	if (c->head_pos == c->tail_cache) {
		int r = refresh_tail(c);

		if (r)
			return r;
		if (c->head_pos == c->tail_cache)
			return -EAGAIN;
	}
	off = cmesh_shm_ring_off(c->head_pos, c->cap);
	h = read_hdr(c, off);
	if (h.kind == CMESH_SHM_REC_PAD) {
		int r = skip_pad(c, h, off);

		if (r)
			return r;
		off = 0;
		h = read_hdr(c, off);
	}
	/* A record: known kind, within the limit, the area and the tail. */
	if (unlikely(h.kind < CMESH_SHM_REC_KIND_MIN ||
		     h.kind > CMESH_SHM_REC_KIND_MAX || h.len > c->limit))
		return fail(c);
	span = cmesh_shm_rec_span(h.len);
	if (unlikely(span > c->cap - off || span > c->tail_cache - c->head_pos))
		return fail(c);
	if (h.len > cap)
		return -EMSGSIZE;
	if (h.len)
		memcpy(buf, c->data + off + CMESH_SHM_REC_HDR_SIZE, h.len);
	publish_head(c, c->head_pos + span);
	*out_kind = h.kind;
	return (int)h.len;
}

bool cmesh__shmring_pop_ready(const struct cmesh__shmring_consumer *c)
{
	if (c->failed || c->head_pos != c->tail_cache)
		return true;
	return c->tail && atomic_load_explicit(c->tail, memory_order_relaxed) !=
				  c->head_pos;
}

void cmesh__shmring_touch(const struct cmesh__shmring_consumer *c)
{
	const volatile unsigned char *at;
	uint64_t off;

	if (!c->data)
		return;
	/*
	 * Load one byte from each line the next record (of up to two lines)
	 * will occupy, so that they travel in parallel with the tail's line
	 * once published. Volatile: the bytes change under us; the values
	 * are not used.
	 */
	off = cmesh_shm_ring_off(c->head_pos, c->cap);
	at = c->data + off;
	(void)at[0];
	if (c->cap - off > CMESH_SHM_LINE)
		(void)at[CMESH_SHM_LINE];
}
