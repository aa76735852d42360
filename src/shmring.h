/* SPDX-License-Identifier: MIT */
/*
 * shmring.h - multi-producer single-consumer record ring in shared memory,
 * spanning two arenas (layout and record format in shm/ring.h): the
 * producers (threads of one process) write slots and claim positions on
 * a tail in their own arena, the consumer writes its head into its own
 * arena, and each maps the other's arena read-only.
 *
 * The two sides are plain structs the caller embeds; init fills them. A
 * side borrows its arenas, which must outlive it. The producer side may be
 * used by any number of threads at once (claim, commit, cancel, push); the
 * consumer side by one thread at a time. None of them makes a syscall,
 * takes a lock or allocates.
 *
 * Error convention for setup: an offset or capacity in (or describing)
 * our own arena is the caller's and is -EINVAL when invalid; one in the
 * peer's arena or describing the peer's ring came from the peer and is
 * -EPROTO.
 */
#ifndef CMESH_SHMRING_H
#define CMESH_SHMRING_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "copy.h"
#include "hint.h"
#include "ring.h"

struct cmesh__arena;

/* One piece of a record's payload, for cmesh__shmring_pushv(). */
struct cmesh__iov {
	const void *base;
	uint32_t len;
};

struct cmesh__shmring_producer {
	/* Set by init and attach, then only read. */
	struct cmesh_shm_slot *slots; /* own arena */
	unsigned char *bulk;	      /* the bulk lines, after the slots */
	const _Atomic uint64_t *head; /* consumer's arena (NULL: unattached) */
	uint64_t mask;		      /* slots - 1 */
	uint32_t shift;		      /* log2(slots) */
	uint32_t limit;		      /* largest payload */
	/* 1 once the consumer's head was corrupt. Relaxed: a sticky hint. */
	_Atomic uint32_t failed;
	/*
	 * 1 once sealed (cmesh__shmring_seal()): claims fail with -ESTALE,
	 * forced ones aside. Loaded after the tail (see claim_slots()).
	 */
	_Atomic uint32_t sealed;
	/* Last validated *head; release store, acquire load (shmring.c). */
	_Atomic uint64_t head_cache;
	/* Next free position (own arena); producers claim with a CAS. */
	_Atomic uint64_t *tail;
};

struct cmesh__shmring_consumer {
	/* Producer's arena (NULL: unattached). */
	const struct cmesh_shm_slot *slots;
	const unsigned char *bulk;    /* the bulk lines, after the slots */
	const _Atomic uint64_t *tail; /* producer's arena: before sleeping */
	_Atomic uint64_t *head;	      /* own arena */
	uint64_t mask;
	uint64_t head_pos; /* last value stored to *head */
	uint32_t shift;	   /* log2(slots) */
	uint32_t limit;
	bool failed; /* the producer's ring was corrupt */
	bool peeked; /* cur holds the validated header of the head record */
	struct cmesh_shm_rec_hdr cur;
	/* With cur: the second slot's bit 63 (CMESH_SHM_SEQ_HI), in place. */
	uint64_t cur_hi;
};

/*
 * Setting up a ring. Each side first inits its own part (resets it, so
 * this runs before it is announced to the peer), then attaches to the
 * peer's arena with what the peer announced:
 *
 *   producer: init(own, data_off, tail_off, cap) -> announce them
 *   consumer: init(own, head_off)                 -> announce head_off
 *   producer: attach(peer, head_off)
 *   consumer: attach(peer, data_off, tail_off, cap)
 *
 * Before attach, a producer treats the consumer's head as 0 (it fills the
 * ring, then gets -EAGAIN) and a consumer's pop returns -EAGAIN.
 */

/*
 * Producer: `own` is our arena (writable), with the ring's area
 * (cmesh_shm_ring_area(cap) bytes: slots, then bulk lines) at `data_off`
 * (data region, 64-byte aligned), its tail line at `tail_off` (control
 * region); `cap` a power of two within CMESH_SHM_RING_MIN_CAP..MAX_CAP.
 * Anything invalid: -EINVAL. The slots must be zero, as a fresh arena's
 * are: init writes nothing to them (the ring's pages are committed as
 * records first reach them); it zeroes the tail line.
 */
int cmesh__shmring_producer_init(struct cmesh__shmring_producer *p,
				 struct cmesh__arena *own, uint64_t data_off,
				 uint64_t tail_off, uint64_t cap);

/*
 * Producer: `peer` is the consumer's arena mapped read-only, with its head
 * line at `head_off` (announced by the consumer; invalid: -EPROTO).
 */
int cmesh__shmring_producer_attach(struct cmesh__shmring_producer *p,
				   const struct cmesh__arena *peer,
				   uint64_t head_off);

/*
 * Consumer: `own` is our arena (writable), with our head line at
 * `head_off` (control region; invalid: -EINVAL). Resets the head and the
 * sleeping flag. May run again on the same storage to start over.
 */
int cmesh__shmring_consumer_init(struct cmesh__shmring_consumer *c,
				 struct cmesh__arena *own, uint64_t head_off);

/*
 * Consumer: `peer` is the producer's arena mapped read-only, with the
 * area of a ring of `cap` bytes at `data_off` and its tail line at
 * `tail_off` (announced by the producer; invalid: -EPROTO).
 */
int cmesh__shmring_consumer_attach(struct cmesh__shmring_consumer *c,
				   const struct cmesh__arena *peer,
				   uint64_t data_off, uint64_t tail_off,
				   uint64_t cap);

/* Largest payload a ring of `cap` bytes carries in one record. */
uint32_t cmesh__shmring_record_limit(uint64_t cap);

/*
 * The position the consumer's head must reach for a record of `len`
 * payload bytes to fit, with at least half the ring free (fewer wakes):
 * for the space request of shm/ring.h's signal line.
 */
uint64_t cmesh__shmring_space_at(struct cmesh__shmring_producer *p,
				 uint32_t len);

/* Producer: the next position a record would take (the tail). */
static inline uint64_t
cmesh__shmring_tail(const struct cmesh__shmring_producer *p)
{
	return atomic_load_explicit(p->tail, memory_order_relaxed);
}

/*
 * Appends one record of `kind` (CMESH_SHM_REC_KIND_MIN..MAX, else -EINVAL)
 * with `len` bytes copied from `buf`. Returns 0, -EAGAIN if the ring is
 * full, -EMSGSIZE if `len` is over the record limit, or -EPROTO if the
 * consumer's head was ever corrupt (then every later push fails too).
 */
int cmesh__shmring_push(struct cmesh__shmring_producer *p, uint32_t kind,
			const void *buf, uint32_t len);

/*
 * Like cmesh__shmring_push() with the payload gathered from `niov` pieces
 * (total length checked against the record limit). -ESTALE once the ring
 * is sealed (nothing taken).
 */
int cmesh__shmring_pushv(struct cmesh__shmring_producer *p, uint32_t kind,
			 const struct cmesh__iov *iov, uint32_t niov);

/*
 * Seals the producer side: every claim that has not taken its positions
 * by the time this returns fails with -ESTALE (push_small with -EAGAIN),
 * except forced ones (cmesh__shmring_pushv_forced(), and claim(),
 * below), which go after every record claimed before. The caller's (a lane's
 * owner) record of the end, say, is then the last one. Once only.
 */
void cmesh__shmring_seal(struct cmesh__shmring_producer *p);

/* pushv() that ignores the seal (a record queued before it). */
int cmesh__shmring_pushv_forced(struct cmesh__shmring_producer *p,
				uint32_t kind, const struct cmesh__iov *iov,
				uint32_t niov);

/*
 * pushv() (`force`: pushv_forced()) of a record that must not be
 * published once `*stop` is non-zero: after the claim's seq_cst CAS, a
 * seq_cst load of `*stop`; non-zero, the slots become a filler and it
 * returns -EPIPE (nothing sent), the value it read in *stopped (if not
 * NULL: the word is the consumer's, read once). With a consumer that
 * stores `*stop`
 * (seq_cst) and then loads the tail (cmesh__shmring_claimed()), either
 * that load sees this claim or this load sees the store (Dekker): the
 * consumer can account for every record published after its store.
 */
int cmesh__shmring_pushv_unless(struct cmesh__shmring_producer *p,
				uint32_t kind, const struct cmesh__iov *iov,
				uint32_t niov, bool force,
				const _Atomic uint32_t *stop,
				uint32_t *stopped);

/* 1 if sealed (a hint for a caller about to do more than claim). */
static inline bool
cmesh__shmring_sealed(const struct cmesh__shmring_producer *p)
{
	return atomic_load_explicit(&p->sealed, memory_order_acquire);
}

/*
 * Producer: the consumer's head now (validated, as a claim validates it):
 * every record before it has been taken. -EPROTO if it is corrupt.
 */
int cmesh__shmring_consumed(struct cmesh__shmring_producer *p, uint64_t *out);

/* Payload bytes that fit a record's first two slots (inline layout). */
#define CMESH__SHMRING_SMALL CMESH_SHM_INLINE_MAX
/* Longer inline records fill their second slot's first word too. */
#define CMESH__SHMRING_WORD CMESH_SHM_INLINE_WORD

/*
 * cmesh__shmring_push() of a record of at most CMESH__SHMRING_SMALL bytes
 * (`kind` valid), inline: the send of a small message makes no call. 0, or
 * -EAGAIN when it cannot take room at once (the ring looks full from the
 * cached head, the consumer's head was corrupt, the record is over the
 * limit of a tiny ring, another producer won the claim); the caller then
 * pushes the general way, which settles each case. Below.
 */
static inline int cmesh__shmring_push_small(struct cmesh__shmring_producer *p,
					    uint32_t kind, const void *buf,
					    uint32_t len);

/*
 * Two-step push, for a caller that must do something (send fds) between
 * taking room and publishing. claim() takes the positions for a record of
 * `len` payload bytes and stores the first in *out_pos: 0, -EAGAIN (full),
 * -EMSGSIZE or -EPROTO as push. The claim must then be ended by exactly
 * one commit() (the record, whose pieces add up to `len`; `kind` as push)
 * or cancel() (a filler of the same size that the consumer steps over).
 * Until then the consumer waits at that position: records claimed later
 * are published but not consumed. claim() ignores the seal: its caller
 * (a lane's send with fds) serializes with the sealer under its own lock
 * and looks at the seal first.
 */
int cmesh__shmring_claim(struct cmesh__shmring_producer *p, uint32_t len,
			 uint64_t *out_pos);
void cmesh__shmring_commit(struct cmesh__shmring_producer *p, uint64_t pos,
			   uint32_t kind, const struct cmesh__iov *iov,
			   uint32_t niov);
void cmesh__shmring_cancel(struct cmesh__shmring_producer *p, uint64_t pos,
			   uint32_t len);

/*
 * Consumer: the producer's tail now (seq_cst: after a store the producer
 * answers, see cmesh__shmring_pushv_unless()), the position after every
 * record claimed so far. The peer's word: a bound for the caller to
 * check, nothing more.
 */
static inline uint64_t
cmesh__shmring_claimed(const struct cmesh__shmring_consumer *c)
{
	return c->tail ? atomic_load_explicit(c->tail, memory_order_seq_cst) :
			 c->head_pos;
}

/*
 * Takes the next record: copies its payload into `buf` (`cap` bytes) and
 * its kind into *out_kind, and returns the payload length. Fillers are
 * stepped over. -EAGAIN if the ring is empty (or its next record is not
 * published yet); -EMSGSIZE if the payload is longer than `cap` (nothing is
 * consumed); -EPROTO if the producer's ring is corrupt (then every later
 * pop fails too).
 */
int cmesh__shmring_pop(struct cmesh__shmring_consumer *c, uint32_t *out_kind,
		       void *buf, uint32_t cap);

/*
 * The same in three steps, for a caller that decides where the payload
 * goes from its length and kind, and copies it straight there:
 *
 * peek() returns the next record's payload length and its kind (or
 * -EAGAIN, -EPROTO as pop), stepping over fillers. Its header is read
 * from shared memory once and validated; the record stays at the head
 * (and later peeks return the same) until consume().
 * read() copies `n` bytes of the peeked payload, from offset `off`, to
 * `dst`; off + n must be at most its length. The payload bytes are the
 * producer's and may change under us: whatever read() returns is only
 * ever a copy, for the caller to validate.
 * consume() hands the peeked record's slots back to the producer.
 */
static inline int cmesh__shmring_peek(struct cmesh__shmring_consumer *c,
				      uint32_t *out_kind);
static inline void cmesh__shmring_read(const struct cmesh__shmring_consumer *c,
				       uint32_t off, void *dst, uint32_t n);
static inline void cmesh__shmring_consume(struct cmesh__shmring_consumer *c);

/* (Inline, below: the receive fast path makes no call into shmring.c.) */

/* The tag that publishes a record at the consumer's head (shm/ring.h). */
static inline uint64_t
cmesh__shmring_want(const struct cmesh__shmring_consumer *c)
{
	return cmesh_shm_seq_tag(c->head_pos, c->shift);
}

/*
 * 1 if `seq`, read from the slot of the consumer's head, is a value an
 * honest producer may have left there: 0, or an earlier lap's tag
 * (shm/ring.h).
 */
static inline bool
cmesh__shmring_seq_stale_ok(const struct cmesh__shmring_consumer *c,
			    uint64_t seq)
{
	return cmesh_shm_seq_stale(seq, c->head_pos, c->shift);
}

/* 1 if the seq word `v` carries the tag `want` (its code and kind aside). */
static inline bool cmesh__shmring_word_match(uint64_t v, uint64_t want)
{
	return (v & ~CMESH_SHM_SEQ_META_MASK) == want;
}

/*
 * Cheap hint: true if a pop may return something other than -EAGAIN,
 * including a seq no honest producer leaves (pop then fails). One relaxed
 * load; pop validates what it finds. A spinning receiver asks once per
 * round of polls of cmesh__shmring_head_word().
 */
static inline bool
cmesh__shmring_pop_ready(const struct cmesh__shmring_consumer *c)
{
	uint64_t seq;

	if (c->failed || c->peeked)
		return true;
	if (!c->slots)
		return false;
	seq = atomic_load_explicit(&c->slots[c->head_pos & c->mask].seq,
				   memory_order_relaxed);
	return cmesh__shmring_word_match(seq, cmesh__shmring_want(c)) ||
	       !cmesh__shmring_seq_stale_ok(c, seq);
}

/*
 * Consumer, about to sleep, after its seq_cst RMW of `sleeping` (the wake
 * Dekker, shm/ring.h): 1 if a producer has claimed the head position and
 * not published it yet (it may owe us no wake: look again soon, do not
 * sleep for good), else 0; -EPROTO if the tail is corrupt (not at most a
 * ring ahead of the head): the consumer then fails for good, as for a
 * corrupt seq (pop_ready() says so, pop() returns -EPROTO). The consumer's
 * thread (its receiver's, or its waitset's wait, never both at once).
 */
static inline int cmesh__shmring_in_flight(struct cmesh__shmring_consumer *c)
{
	uint64_t tail;

	if (!c->tail || c->failed || c->peeked)
		return 0;
	atomic_thread_fence(memory_order_seq_cst);
	tail = atomic_load_explicit(c->tail, memory_order_seq_cst);
	if (unlikely(tail - c->head_pos > c->mask + 1)) {
		c->failed = true;
		return -EPROTO;
	}
	return tail != c->head_pos && !cmesh__shmring_pop_ready(c);
}

/*
 * For a spinning consumer: the seq word of its head slot and, in *want,
 * the tag that publishes a record there (cmesh__shmring_word_match()
 * compares); polled without a call, and only a hint (peek() validates
 * what it finds). NULL when there is nothing to poll: unattached, failed,
 * or a record already peeked.
 */
static inline const _Atomic uint64_t *
cmesh__shmring_head_word(const struct cmesh__shmring_consumer *c,
			 uint64_t *want)
{
	if (!c->slots || c->failed || c->peeked)
		return NULL;
	*want = cmesh__shmring_want(c);
	return &c->slots[c->head_pos & c->mask].seq;
}

/*
 * For a consumer whose head slot was just published: prefetches the next
 * slot, where an inline record's second line is, so that it travels while the
 * receive path runs. Reading it earlier, while spinning, would take the
 * line from the producer between its stores (measured: 5-10 ns more per
 * cross-process round trip). Attached consumers only.
 */
static inline void
cmesh__shmring_prefetch_next(const struct cmesh__shmring_consumer *c)
{
	cmesh__prefetch(&c->slots[(c->head_pos + 1) & c->mask]);
}

/* Zeroes for the unused end of a slot (no stale bytes in a record). */
extern const unsigned char cmesh__shmring_zeros[CMESH_SHM_SLOT_DATA];

/* Zeroes `n` bytes of a slot's data (n at most a slot's data), inline. */
static inline void cmesh__shmring_zero(unsigned char *dst, uint32_t n)
{
	/* Never true; tells the compiler so. */
	if (n > sizeof(cmesh__shmring_zeros))
		n = sizeof(cmesh__shmring_zeros);
	cmesh__copy_small(dst, cmesh__shmring_zeros, n);
}

/*
 * Copies `n` bytes from `src` to `dst`, then zeroes dst[n, span); span at
 * most a slot's data. Inline copies only: the stores to a slot's line
 * follow each other closely (see write_record() in shmring.c).
 */
static inline void cmesh__shmring_put(unsigned char *dst, const void *src,
				      uint32_t n, uint32_t span)
{
	cmesh__copy_small(dst, src, n);
	if (n < span)
		cmesh__shmring_zero(dst + n, span - n);
}

/*
 * The first word of an inline record's second slot, from payload bytes
 * 56..63 in `w8` (zero past the payload): stored with bit 63 clear;
 * returns the bit, for the first slot's seq word (CMESH_SHM_SEQ_HI).
 * Relaxed: the record's publishing store orders it.
 */
static inline uint64_t cmesh__shmring_put_word(struct cmesh_shm_slot *s1,
					       const unsigned char *w8)
{
	uint64_t w;

	memcpy(&w, w8, sizeof(w)); /* little-endian: shm/ring.h */
	atomic_store_explicit(&s1->seq, w & ~CMESH_SHM_SEQ_PUBLISHED,
			      memory_order_relaxed);
	return (w >> 63) * CMESH_SHM_SEQ_HI;
}

/* How many positions ahead of an inline record its producer asks for lines. */
#define CMESH__SHMRING_AHEAD 4u

/*
 * Producer, having published an inline record of k slots at `pos`: asks
 * for the lines of positions pos + AHEAD .. pos + AHEAD + k - 1 for
 * writing, those the consumer is done with (below the cached head plus a
 * lap). The consumer read them a lap ago; taken back now, they are ours by
 * the time a record is written there, so a claim's locked CAS (which waits
 * for the previous record's stores) does not wait for a line to cross too:
 * a stream of small records runs at 1.5x (bench_xproc 3, 8 and 56 B).
 * After the publish, not before: the record's own line goes first (round
 * trips measured no slower that way, and slower the other). Not for bulk
 * records: taking their lines early cost the 4 KiB stream a third of its
 * rate (the consumer's hardware prefetcher was reading them).
 */
static inline void cmesh__shmring_ahead(struct cmesh__shmring_producer *p,
					uint64_t pos, uint64_t k)
{
	uint64_t end =
		atomic_load_explicit(&p->head_cache, memory_order_relaxed) +
		p->mask + 1;

	for (uint64_t j = pos + CMESH__SHMRING_AHEAD;
	     j < pos + CMESH__SHMRING_AHEAD + k && (int64_t)(end - j) > 0; j++)
		cmesh__prefetchw(&p->slots[j & p->mask]);
}

/*
 * Writes an inline record of `len` <= CMESH__SHMRING_SMALL bytes from one
 * piece at `pos` and publishes it, as write_record() in shmring.c (which
 * uses it): the second slot first (its first word, then its data), then
 * the first slot's payload, then the release store of its seq with the
 * record's tag, hi bit, length and kind.
 */
static inline void cmesh__shmring_write_small(struct cmesh__shmring_producer *p,
					      uint64_t pos, uint32_t kind,
					      const void *buf, uint32_t len)
{
	const unsigned char *src = buf;
	struct cmesh_shm_slot *s = &p->slots[pos & p->mask];
	uint32_t n0 = len < CMESH_SHM_SLOT_DATA ? len : CMESH_SHM_SLOT_DATA;
	uint64_t hi = 0;

	if (len > CMESH__SHMRING_WORD) {
		struct cmesh_shm_slot *s1 = &p->slots[(pos + 1) & p->mask];
		unsigned char w8[8];

		/* Never true (len <= 120); tells GCC (array-bounds). */
		if (len > CMESH__SHMRING_SMALL)
			len = CMESH__SHMRING_SMALL;
		cmesh__copy_small(w8, src + n0, sizeof(w8));
		hi = cmesh__shmring_put_word(s1, w8);
		cmesh__shmring_put(s1->data, src + n0 + 8, len - n0 - 8,
				   CMESH_SHM_SLOT_DATA);
	} else if (len > CMESH_SHM_SLOT_DATA) {
		struct cmesh_shm_slot *s1 = &p->slots[(pos + 1) & p->mask];

		/* No one reads it before the record is published. */
		atomic_store_explicit(&s1->seq, 0, memory_order_relaxed);
		cmesh__shmring_put(s1->data, src + n0, len - n0,
				   CMESH_SHM_SLOT_DATA);
	}
	cmesh__shmring_put(s->data, src, n0, CMESH_SHM_SLOT_DATA);
	/* Publish; pairs with the consumer's acquire load in head(). */
	atomic_store_explicit(&s->seq,
			      cmesh_shm_seq_tag(pos, p->shift) | hi |
				      cmesh_shm_seq_inline(len, kind),
			      memory_order_release);
	cmesh__shmring_ahead(p, pos, len > CMESH_SHM_SLOT_DATA ? 2 : 1);
}

static inline int cmesh__shmring_push_small(struct cmesh__shmring_producer *p,
					    uint32_t kind, const void *buf,
					    uint32_t len)
{
	uint64_t k = len > CMESH_SHM_SLOT_DATA ? 2 : 1;
	/* Acquire: a seal before the tail we read is seen (claim_slots()). */
	uint64_t pos = atomic_load_explicit(p->tail, memory_order_acquire);
	/* Pairs with the release store in refresh_head() (shmring.c). */
	uint64_t head =
		atomic_load_explicit(&p->head_cache, memory_order_acquire);

	if (unlikely(atomic_load_explicit(&p->failed, memory_order_relaxed) ||
		     atomic_load_explicit(&p->sealed, memory_order_relaxed) ||
		     len > CMESH__SHMRING_SMALL || len > p->limit ||
		     pos - head > p->mask + 1 - k ||
		     /* seq_cst: the wake Dekker (shm/ring.h, tail line). */
		     !atomic_compare_exchange_strong_explicit(
			     p->tail, &pos, pos + k, memory_order_seq_cst,
			     memory_order_relaxed)))
		return -EAGAIN;
	cmesh__shmring_write_small(p, pos, kind, buf, len);
	return 0;
}

/* Internal to the consumer steps below. */
int cmesh__shmring_peek_fill(struct cmesh__shmring_consumer *c,
			     struct cmesh_shm_rec_hdr h, uint32_t *out_kind);

static inline void
cmesh__shmring_publish_head(struct cmesh__shmring_consumer *c, uint64_t head)
{
	c->head_pos = head;
	/*
	 * Pairs with the producer's acquire load in refresh_head(). Release
	 * only (a plain store on x86; seq_cst was an xchg per record, which
	 * waited for the store buffer): a lane's space request (shm/ring.h,
	 * signal line) is paired by a seq_cst store of the head again when
	 * the consumer finds its ring empty (lane_rx.c space_look_empty()).
	 */
	atomic_store_explicit(c->head, head, memory_order_release);
}

/*
 * Consumer: moves the head to `pos`, the end of records published and
 * not to be read (a pooled lane's last use): at most a ring ahead, else
 * -EPROTO (nothing moves).
 */
static inline int cmesh__shmring_skip_to(struct cmesh__shmring_consumer *c,
					 uint64_t pos)
{
	if (c->failed || pos - c->head_pos > c->mask + 1)
		return -EPROTO;
	c->peeked = false;
	/* Nothing to skip (the last use's records all taken): no store. */
	if (pos != c->head_pos)
		cmesh__shmring_publish_head(c, pos);
	return 0;
}

/*
 * Reads the seq of the slot at the consumer's head, and a bulk record's
 * header, each once (acquire on seq, pairs with the producer's release
 * store in cmesh__shmring_write_small() or write_record()), and validates
 * the copies: 0 with the record's length and kind in *h (the kind may be a
 * filler's), -EAGAIN if nothing is published there (a seq an honest
 * producer may have left), or -EPROTO (the consumer fails for good). The
 * consumer must be attached and not failed.
 */
static cmesh__inline int cmesh__shmring_head(struct cmesh__shmring_consumer *c,
					     struct cmesh_shm_rec_hdr *h,
					     uint64_t *hi)
{
	const struct cmesh_shm_slot *s = &c->slots[c->head_pos & c->mask];
	uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
	uint32_t code = (uint32_t)(seq >> CMESH_SHM_SEQ_CODE_SHIFT) &
			CMESH_SHM_SEQ_CODE_MASK;
	uint32_t kind = (uint32_t)seq & CMESH_SHM_SEQ_KIND_MASK;

	if (!cmesh__shmring_word_match(seq, cmesh__shmring_want(c))) {
		if (likely(cmesh__shmring_seq_stale_ok(c, seq)))
			return -EAGAIN;
		goto bad;
	}
	*hi = seq & CMESH_SHM_SEQ_HI;
	if (likely(code)) { /* inline: all of it is in the seq word */
		h->len = code - 1;
		h->kind = kind;
		if (unlikely(code > CMESH_SHM_SEQ_CODE_MAX ||
			     h->len > c->limit ||
			     (*hi && h->len <= CMESH_SHM_INLINE_WORD)))
			goto bad;
		return 0;
	}
	memcpy(h, s->data, sizeof(*h));
	/* Use the copy; never re-read the shared bytes (shmring.c). */
	atomic_signal_fence(memory_order_seq_cst);
	if (unlikely(kind || *hi || h->kind > CMESH_SHM_REC_KIND_MAX ||
		     !cmesh_shm_rec_bulk(h->len) || h->len > c->limit))
		goto bad;
	return 0;
bad:
	c->failed = true;
	return -EPROTO;
}

/*
 * peek() as documented above, inline; stepping over fillers is
 * peek_fill()'s, out of line.
 */
static cmesh__inline int cmesh__shmring_peek(struct cmesh__shmring_consumer *c,
					     uint32_t *out_kind)
{
	struct cmesh_shm_rec_hdr h;
	uint64_t hi;
	int r;

	if (c->peeked) {
		*out_kind = c->cur.kind;
		return (int)c->cur.len;
	}
	if (unlikely(c->failed))
		return -EPROTO;
	if (unlikely(!c->slots))
		return -EAGAIN; /* unattached: nothing published */
	r = cmesh__shmring_head(c, &h, &hi);
	if (r)
		return r;
	if (unlikely(h.kind == CMESH_SHM_REC_FILL))
		return cmesh__shmring_peek_fill(c, h, out_kind);
	c->cur = h;
	c->cur_hi = hi;
	c->peeked = true;
	*out_kind = h.kind;
	return (int)h.len;
}

/* Out of line: a bulk record's bytes [off, off + n), in one or two copies. */
void cmesh__shmring_read_bulk(const struct cmesh__shmring_consumer *c,
			      uint32_t off, void *dst, uint32_t n);

/*
 * Copies payload bytes [off, off + n) of the record at head_pos to `dst`.
 * Inline layout: byte x of a payload is in the first slot's data if x <
 * 56, else at x - 56 in the second slot (its first word with bit 63 from
 * the first slot's seq, then its data). Bulk layout: in the bulk lines
 * from head_pos's on.
 */
static cmesh__inline void
cmesh__shmring_read(const struct cmesh__shmring_consumer *c, uint32_t off,
		    void *dst, uint32_t n)
{
	unsigned char *d = dst;
	const struct cmesh_shm_slot *s0 = &c->slots[c->head_pos & c->mask];
	const struct cmesh_shm_slot *s1 =
		&c->slots[(c->head_pos + 1) & c->mask];
	uint32_t n0;

	if (unlikely(c->cur.len > CMESH__SHMRING_SMALL)) {
		cmesh__shmring_read_bulk(c, off, dst, n);
		return;
	}
	/* Never true (off + n <= 120); tells GCC (array-bounds). */
	if (off > CMESH__SHMRING_SMALL || n > CMESH__SHMRING_SMALL - off)
		return;
	/* Inline copies, no call, no loop: a slot's bytes, then the next's. */
	if (off < CMESH_SHM_SLOT_DATA) {
		n0 = n < CMESH_SHM_SLOT_DATA - off ? n :
						     CMESH_SHM_SLOT_DATA - off;
		cmesh__copy_small(d, s0->data + off, n0);
		d += n0;
		n -= n0;
		off = 0;
	} else {
		off -= CMESH_SHM_SLOT_DATA;
	}
	if (c->cur.len <= CMESH__SHMRING_WORD) {
		/* Never true either (the rest fits the slot); for GCC. */
		if (n > CMESH_SHM_SLOT_DATA - off)
			n = CMESH_SHM_SLOT_DATA - off;
		if (n)
			cmesh__copy_small(d, s1->data + off, n);
		return;
	}
	/* Never true either (the rest fits the second slot); for GCC. */
	if (n > CMESH_SHM_SLOT_SIZE - off)
		n = CMESH_SHM_SLOT_SIZE - off;
	if (n) {
		/* The second slot: its first word's bit 63 restored. */
		uint64_t w =
			atomic_load_explicit(&s1->seq, memory_order_relaxed) |
			(c->cur_hi ? CMESH_SHM_SEQ_PUBLISHED : 0);
		unsigned char line[CMESH_SHM_SLOT_SIZE];

		if (likely(off == 0 && n >= sizeof(w))) {
			/* The usual case, the rest of the record: no staging. */
			uint32_t rest = n - (uint32_t)sizeof(w);

			memcpy(d, &w, sizeof(w));	/* little-endian */
			if (rest > CMESH_SHM_SLOT_DATA) /* never; for GCC */
				rest = CMESH_SHM_SLOT_DATA;
			cmesh__copy_small(d + sizeof(w), s1->data, rest);
			return;
		}
		memcpy(line, &w, sizeof(w)); /* little-endian: shm/ring.h */
		memcpy(line + sizeof(w), s1->data, CMESH_SHM_SLOT_DATA);
		cmesh__copy_small(d, line + off, n);
	}
}

static cmesh__inline void
cmesh__shmring_consume(struct cmesh__shmring_consumer *c)
{
	c->peeked = false;
	cmesh__shmring_publish_head(c, c->head_pos +
					       cmesh_shm_rec_slots(c->cur.len));
}

#endif
