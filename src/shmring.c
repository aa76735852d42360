/* SPDX-License-Identifier: MIT */
/*
 * shmring.c - MPSC slot ring in shared memory (layout: shm/ring.h).
 *
 * Memory-ordering contract
 * - Claim. A producer claims positions pos .. pos + k - 1 with a seq_cst
 *   CAS on the tail (its arena's tail line; seq_cst for the wake Dekker,
 *   shm/ring.h) once pos + k - head <= slots, where
 *   head is `head_cache` (acquire, pairs with the release store of the
 *   producer that refreshed it) or, when that looks full, the consumer's
 *   shared head (acquire, pairs with the consumer's release store after it
 *   copied the old records out, so its reads happen before our overwrite).
 * - Publish. The producer writes the payload (bulk lines, or an inline
 *   record's second slot: its first word, relaxed, then its data) and the
 *   first slot's data (the
 *   lines of an inline record each with inline copies, see
 *   write_record()), then stores the first slot's seq (pos's tag, with an
 *   inline record's length and kind) with release. The consumer's acquire
 *   load that reads its head's tag pairs with it, so every byte of the
 *   record is visible.
 *   Records are published in any order; the consumer takes them in
 *   position order.
 * - The consumer never writes a slot: it publishes its head on a line of
 *   its own, in its own arena.
 * - Trust. The consumer reads the slots, and a producer the consumer's
 *   head, from memory the peer may change at any time. Every shared value
 *   is read once into a local, the local is validated, and only the local
 *   is used (atomic_signal_fence after a plain copy stops the compiler
 *   from reading the shared bytes again instead of the local). A value
 *   that fails validation makes that side fail for good (-EPROTO); a bad
 *   but well-formed record payload is the peer's business, not a
 *   memory-safety problem: every slot index is reduced modulo the slots.
 * - The consumer's wake line (sleeping and closed flags: wakeups, receiver
 *   gone) is not used here; its contract is in shm/ring.h, its use in
 *   src/lane_wake.c (sleeping) and src/lane_rx_close.c (closed).
 */
#include "shmring.h"

#include "arena.h"
#include "copy.h"
#include "hint.h"
#include "ring.h"

#include <errno.h>
#include <string.h>

uint32_t cmesh__shmring_record_limit(uint64_t cap)
{
	return cmesh_shm_ring_rec_limit(cap);
}

int cmesh__shmring_producer_init(struct cmesh__shmring_producer *p,
				 struct cmesh__arena *own, uint64_t data_off,
				 uint64_t tail_off, uint64_t cap)
{
	struct cmesh_shm_ring_tail *line;
	unsigned char *base;

	if (!cmesh__arena_writable(own) || !cmesh_shm_ring_cap_ok(cap) ||
	    !cmesh__arena_data_ok(own, data_off, cmesh_shm_ring_area(cap)) ||
	    !cmesh__arena_ctl_ok(own, tail_off, sizeof(*line)))
		return -EINVAL;
	base = cmesh__arena_base(own);
	line = (struct cmesh_shm_ring_tail *)(base + tail_off);
	memset(line->reserved, 0, sizeof(line->reserved));
	p->tail = &line->tail;
	p->slots = (struct cmesh_shm_slot *)(base + data_off);
	p->bulk = base + data_off + cap;
	p->head = NULL;
	p->mask = cmesh_shm_ring_slots(cap) - 1;
	p->shift = (uint32_t)__builtin_ctzll(cmesh_shm_ring_slots(cap));
	p->limit = cmesh_shm_ring_rec_limit(cap);
	atomic_init(&p->failed, 0);
	atomic_init(&p->sealed, 0);
	atomic_init(&p->head_cache, 0);
	/* Reaches the consumer with the control message announcing it. */
	atomic_store_explicit(p->tail, 0, memory_order_relaxed);
	/*
	 * Nothing is written to the slots: the caller gives a zero area (a
	 * fresh arena's is), so no stale seq looks published (shm/ring.h),
	 * and a ring costs memory only for the slots it uses.
	 */
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
	c->slots = NULL;
	c->bulk = NULL;
	c->tail = NULL;
	c->head = &line->head;
	c->mask = 0;
	c->shift = 0;
	c->head_pos = 0;
	c->limit = 0;
	c->failed = false;
	c->peeked = false;
	memset(line->reserved, 0, sizeof(line->reserved));
	/* Reaches the producer with the control message announcing it. */
	atomic_store_explicit(c->head, 0, memory_order_relaxed);
	return 0;
}

int cmesh__shmring_consumer_attach(struct cmesh__shmring_consumer *c,
				   const struct cmesh__arena *peer,
				   uint64_t data_off, uint64_t tail_off,
				   uint64_t cap)
{
	const unsigned char *base = cmesh__arena_base(peer);

	if (!cmesh_shm_ring_cap_ok(cap) ||
	    !cmesh__arena_data_ok(peer, data_off, cmesh_shm_ring_area(cap)) ||
	    !cmesh__arena_ctl_ok(peer, tail_off,
				 sizeof(struct cmesh_shm_ring_tail)))
		return -EPROTO;
	c->tail =
		&((const struct cmesh_shm_ring_tail *)(base + tail_off))->tail;
	c->slots = (const struct cmesh_shm_slot *)(base + data_off);
	c->bulk = base + data_off + cap;
	c->mask = cmesh_shm_ring_slots(cap) - 1;
	c->shift = (uint32_t)__builtin_ctzll(cmesh_shm_ring_slots(cap));
	c->limit = cmesh_shm_ring_rec_limit(cap);
	return 0;
}

/* ---- producer ---- */

static int fail_producer(struct cmesh__shmring_producer *p)
{
	atomic_store_explicit(&p->failed, 1, memory_order_relaxed);
	return -EPROTO;
}

/*
 * Reloads the consumer's head into head_cache and returns it in *out.
 * Valid: cached <= head <= tail (unsigned differences; tail loaded after
 * head: the consumer never passes a position we have not claimed).
 */
static int refresh_head(struct cmesh__shmring_producer *p, uint64_t cached,
			uint64_t *out)
{
	uint64_t head, tail;

	if (!p->head) {
		*out = 0; /* unattached: the consumer's head is 0 */
		return 0;
	}
	/* Pairs with the consumer's release store in publish_head(). */
	head = atomic_load_explicit(p->head, memory_order_acquire);
	tail = atomic_load_explicit(p->tail, memory_order_relaxed);
	if (unlikely(head - cached > tail - cached))
		return fail_producer(p);
	/* Pairs with the acquire load in claim(). */
	atomic_store_explicit(&p->head_cache, head, memory_order_release);
	*out = head;
	return 0;
}

/*
 * The seal. The sealer stores `sealed` (seq_cst), then claims its own
 * record with the seq_cst CAS below. A claim reads the tail (acquire,
 * also when its CAS fails), then `sealed`: if its read of the tail is the
 * sealer's CAS or later, it synchronizes with it and sees the seal; if
 * earlier, its CAS either wins (its record before the sealer's) or fails
 * and it reads the tail again. So no unforced record follows the
 * sealer's.
 */
static inline int claim_slots(struct cmesh__shmring_producer *p, uint32_t len,
			      uint64_t *out_pos, bool force)
{
	uint64_t pos, head, k, n = p->mask + 1;
	int r;

	if (unlikely(atomic_load_explicit(&p->failed, memory_order_relaxed)))
		return -EPROTO;
	if (unlikely(len > p->limit))
		return -EMSGSIZE;
	k = cmesh_shm_rec_slots(len);
	pos = atomic_load_explicit(p->tail, memory_order_acquire);
	for (;;) {
		if (unlikely(!force &&
			     atomic_load_explicit(&p->sealed,
						  memory_order_relaxed)))
			return -ESTALE;
		/* Pairs with the release store in refresh_head(). */
		head = atomic_load_explicit(&p->head_cache,
					    memory_order_acquire);
		if (pos - head > n - k) { /* full, or pos is stale (< head) */
			r = refresh_head(p, head, &head);
			if (r)
				return r;
			if ((int64_t)(pos - head) < 0) {
				/* Our tail is older than the consumer. */
				pos = atomic_load_explicit(
					p->tail, memory_order_acquire);
				continue;
			}
			if (pos - head > n - k)
				return -EAGAIN;
		}
		/* seq_cst: the wake Dekker (shm/ring.h, tail line). */
		if (atomic_compare_exchange_weak_explicit(
			    p->tail, &pos, pos + k, memory_order_seq_cst,
			    memory_order_acquire))
			break;
	}
	*out_pos = pos;
	return 0;
}

void cmesh__shmring_seal(struct cmesh__shmring_producer *p)
{
	atomic_store_explicit(&p->sealed, 1, memory_order_seq_cst);
}

int cmesh__shmring_consumed(struct cmesh__shmring_producer *p, uint64_t *out)
{
	/* Pairs with the release store in refresh_head(). */
	return refresh_head(
		p, atomic_load_explicit(&p->head_cache, memory_order_acquire),
		out);
}

uint64_t cmesh__shmring_space_at(struct cmesh__shmring_producer *p,
				 uint32_t len)
{
	uint64_t n = p->mask + 1, k = cmesh_shm_rec_slots(len);

	return atomic_load_explicit(p->tail, memory_order_relaxed) - n +
	       (k > n / 2 ? k : n / 2);
}

int cmesh__shmring_claim(struct cmesh__shmring_producer *p, uint32_t len,
			 uint64_t *out_pos)
{
	return claim_slots(p, len, out_pos, true);
}

/*
 * Writes a bulk record's payload: the pieces, back to back, into the bulk
 * lines from position `pos` on, split where the area wraps. Plain memcpy:
 * the consumer reads none of it before the record is published.
 */
static void write_bulk(struct cmesh__shmring_producer *p, uint64_t pos,
		       const struct cmesh__iov *iov, uint32_t niov)
{
	uint64_t area = (p->mask + 1) * CMESH_SHM_BULK_LINE;
	uint64_t at = (pos & p->mask) * CMESH_SHM_BULK_LINE;

	for (uint32_t i = 0; i < niov; i++) {
		const unsigned char *src = iov[i].base;
		uint64_t n = iov[i].len;

		while (n) {
			uint64_t m = area - at < n ? area - at : n;

			memcpy(p->bulk + at, src, m);
			src += m;
			n -= m;
			at = (at + m) & (area - 1);
		}
	}
}

const unsigned char cmesh__shmring_zeros[CMESH_SHM_SLOT_DATA];

/*
 * Copies payload bytes [off, off + n) from the pieces to `dst`, then zeroes
 * the rest of dst[0, span) (all of it for a filler, which has no pieces).
 * Inline copies, no calls: the stores to a slot's line follow each other
 * closely (see write_record()).
 */
static inline void put_data(unsigned char *dst, const struct cmesh__iov *iov,
			    uint32_t niov, uint32_t off, uint32_t n,
			    uint32_t span)
{
	unsigned char *d = dst;
	uint32_t left = n;

	for (uint32_t i = 0; i < niov && left; i++) {
		uint32_t m = iov[i].len;

		if (off >= m) {
			off -= m;
			continue;
		}
		m -= off;
		if (m > left)
			m = left;
		cmesh__copy_small(d, (const unsigned char *)iov[i].base + off,
				  m);
		d += m;
		left -= m;
		off = 0;
	}
	n -= left; /* pieces may end early: a filler has none */
	if (n < span)
		cmesh__shmring_zero(dst + n, span - n);
}

/*
 * Writes a record of `len` bytes at `pos` and publishes it: the payload
 * (the bulk lines, or the second slot), then the first slot's data (a bulk
 * header, or inline payload), then the release store of its seq. An
 * inline record's lines are
 * written straight from the caller's pieces with inline copies: the
 * consumer polls the line of a record's first slot while we write it, and
 * if it reads the line between two of our stores, the next store waits for
 * the line to come back, a whole cache-line transfer more on the way to
 * the consumer. Staging through the stack or calling memcpy spreads the
 * stores out. `iov` NULL: a filler (no payload written).
 */
static void write_record(struct cmesh__shmring_producer *p, uint64_t pos,
			 uint32_t kind, uint32_t len,
			 const struct cmesh__iov *iov, uint32_t niov)
{
	struct cmesh_shm_rec_hdr h = { .len = len, .kind = kind };
	uint64_t k = cmesh_shm_rec_slots(len);
	uint64_t tag = cmesh_shm_seq_tag(pos, p->shift);
	struct cmesh_shm_slot *s = &p->slots[pos & p->mask];
	uint32_t n0 = len < CMESH_SHM_SLOT_DATA ? len : CMESH_SHM_SLOT_DATA;
	uint64_t hi = 0;

	if (niov == 1 && iov && len <= CMESH__SHMRING_SMALL) {
		/* The common small message, as the inline push writes it. */
		cmesh__shmring_write_small(p, pos, kind, iov[0].base, len);
		return;
	}
	if (!iov)
		niov = 0;
	if (cmesh_shm_rec_bulk(len)) {
		write_bulk(p, pos, iov, niov);
		memcpy(s->data, &h, sizeof(h));
		/* Publish; pairs with the consumer's acquire load in head(). */
		atomic_store_explicit(&s->seq, tag, memory_order_release);
		return;
	}
	if (k > 1 && len <= CMESH_SHM_INLINE_WORD) {
		struct cmesh_shm_slot *s1 = &p->slots[(pos + 1) & p->mask];

		/* No one reads it before the record is published. */
		atomic_store_explicit(&s1->seq, 0, memory_order_relaxed);
		put_data(s1->data, iov, niov, CMESH_SHM_SLOT_DATA, len - n0,
			 CMESH_SHM_SLOT_DATA);
	} else if (k > 1) {
		struct cmesh_shm_slot *s1 = &p->slots[(pos + 1) & p->mask];
		unsigned char line[CMESH_SHM_SLOT_SIZE] = { 0 };

		/* Gathered first: its first word is stored apart. */
		put_data(line, iov, niov, CMESH_SHM_SLOT_DATA, len - n0, 0);
		hi = cmesh__shmring_put_word(s1, line);
		cmesh__copy_small(s1->data, line + 8, CMESH_SHM_SLOT_DATA);
	}
	put_data(s->data, iov, niov, 0, n0, CMESH_SHM_SLOT_DATA);
	/* Publish; pairs with the consumer's acquire load in head(). */
	atomic_store_explicit(&s->seq,
			      tag | hi | cmesh_shm_seq_inline(len, kind),
			      memory_order_release);
	cmesh__shmring_ahead(p, pos, k);
}

void cmesh__shmring_commit(struct cmesh__shmring_producer *p, uint64_t pos,
			   uint32_t kind, const struct cmesh__iov *iov,
			   uint32_t niov)
{
	uint32_t len = 0;

	for (uint32_t i = 0; i < niov; i++)
		len += iov[i].len; /* checked by claim */
	write_record(p, pos, kind, len, iov, niov);
}

void cmesh__shmring_cancel(struct cmesh__shmring_producer *p, uint64_t pos,
			   uint32_t len)
{
	write_record(p, pos, CMESH_SHM_REC_FILL, len, NULL, 0);
}

static int pushv(struct cmesh__shmring_producer *p, uint32_t kind,
		 const struct cmesh__iov *iov, uint32_t niov, bool force,
		 const _Atomic uint32_t *stop, uint32_t *stopped)
{
	uint32_t seen;
	uint64_t total = 0, pos;
	int r;

	if (unlikely(kind < CMESH_SHM_REC_KIND_MIN ||
		     kind > CMESH_SHM_REC_KIND_MAX))
		return -EINVAL;
	for (uint32_t i = 0; i < niov; i++)
		total += iov[i].len; /* at most 2^32 pieces of < 2^32 */
	if (unlikely(total > p->limit))
		return atomic_load_explicit(&p->failed, memory_order_relaxed) ?
			       -EPROTO :
			       -EMSGSIZE;
	r = claim_slots(p, (uint32_t)total, &pos, force);
	if (r)
		return r;
	/* seq_cst, after the claim's seq_cst CAS: see the header. */
	if (stop && (seen = atomic_load_explicit(stop, memory_order_seq_cst))) {
		if (stopped)
			*stopped = seen;
		cmesh__shmring_cancel(p, pos, (uint32_t)total);
		return -EPIPE;
	}
	write_record(p, pos, kind, (uint32_t)total, iov, niov);
	return 0;
}

int cmesh__shmring_pushv(struct cmesh__shmring_producer *p, uint32_t kind,
			 const struct cmesh__iov *iov, uint32_t niov)
{
	return pushv(p, kind, iov, niov, false, NULL, NULL);
}

int cmesh__shmring_pushv_forced(struct cmesh__shmring_producer *p,
				uint32_t kind, const struct cmesh__iov *iov,
				uint32_t niov)
{
	return pushv(p, kind, iov, niov, true, NULL, NULL);
}

int cmesh__shmring_pushv_unless(struct cmesh__shmring_producer *p,
				uint32_t kind, const struct cmesh__iov *iov,
				uint32_t niov, bool force,
				const _Atomic uint32_t *stop, uint32_t *stopped)
{
	return pushv(p, kind, iov, niov, force, stop, stopped);
}

int cmesh__shmring_push(struct cmesh__shmring_producer *p, uint32_t kind,
			const void *buf, uint32_t len)
{
	struct cmesh__iov iov = { buf, len };

	return cmesh__shmring_pushv(p, kind, &iov, 1);
}

/* ---- consumer ---- */

void cmesh__shmring_read_bulk(const struct cmesh__shmring_consumer *c,
			      uint32_t off, void *dst, uint32_t n)
{
	uint64_t area = (c->mask + 1) * CMESH_SHM_BULK_LINE;
	uint64_t at = ((c->head_pos & c->mask) * CMESH_SHM_BULK_LINE + off) &
		      (area - 1);
	uint64_t m = area - at < n ? area - at : n;
	unsigned char *d = dst;

	/* The producer's bytes, copied once; the caller validates the copy. */
	memcpy(d, c->bulk + at, m);
	if (n > m)
		memcpy(d + m, c->bulk, n - m);
}

/*
 * Steps over the filler `h` at the head and any that follow it, at most a
 * lap of them per call, then peeks as cmesh__shmring_peek().
 */
int cmesh__shmring_peek_fill(struct cmesh__shmring_consumer *c,
			     struct cmesh_shm_rec_hdr h, uint32_t *out_kind)
{
	for (uint64_t n = 0; n <= c->mask; n++) {
		uint64_t hi;
		int r;

		cmesh__shmring_publish_head(
			c, c->head_pos + cmesh_shm_rec_slots(h.len));
		r = cmesh__shmring_head(c, &h, &hi);
		if (r)
			return r;
		if (h.kind != CMESH_SHM_REC_FILL) {
			c->cur = h;
			c->cur_hi = hi;
			c->peeked = true;
			*out_kind = h.kind;
			return (int)h.len;
		}
	}
	return -EAGAIN;
}

int cmesh__shmring_pop(struct cmesh__shmring_consumer *c, uint32_t *out_kind,
		       void *buf, uint32_t cap)
{
	uint32_t kind;
	int len = cmesh__shmring_peek(c, &kind);

	if (len < 0)
		return len;
	if ((uint32_t)len > cap)
		return -EMSGSIZE; /* *out_kind untouched: nothing taken */
	cmesh__shmring_read(c, 0, buf, (uint32_t)len);
	cmesh__shmring_consume(c);
	*out_kind = kind;
	return len;
}
