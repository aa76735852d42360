/* SPDX-License-Identifier: MIT */
/*
 * ring.h - the shared-memory ABI of an arena and of the MPSC slot rings
 * that live in arenas.
 *
 * Only layouts, constants and integer offset math: no pointers, no bool,
 * enum or size_t, no syscalls. Everything here is read by a process that
 * does not trust the writer; see src/arena.c (validation of a header) and
 * src/shmring.c (validation of sequence numbers and records).
 *
 * An arena is a sealed memfd owned by one node. The owner maps it
 * read-write, its peer maps it read-only. Nothing in an arena is ever
 * written by anyone but its owner.
 *
 *   arena (size bytes, multiple of CMESH_SHM_PAGE)
 *   +0          struct cmesh_shm_arena_hdr            (64 bytes)
 *   +ctl_off    control region: 64-byte lines          (ctl_len bytes)
 *                 struct cmesh_shm_ring_cons  (a ring this node consumes)
 *                 struct cmesh_shm_ring_wake  (its sleeping/closed flags)
 *                 struct cmesh_shm_ring_signal (a ring it produces)
 *                 struct cmesh_shm_ring_tail   (that ring's tail)
 *   +data_off   data region: ring areas                (data_len bytes)
 *                 per ring this node produces, 2 x capacity bytes:
 *                 capacity bytes of slots, then capacity bytes of
 *                 bulk lines
 *
 * One ring spans two arenas: its slots and its tail line live in the
 * PRODUCER's arena, its head line in the CONSUMER's arena. Which lines and
 * which slot area belong to a ring, and the ring's capacity, are agreed
 * over the control socket, not stored here. The producers (threads of one
 * process) claim positions on the tail; the consumer reads it only before
 * it sleeps (struct cmesh_shm_ring_tail).
 *
 * A ring of `cap` bytes is N = cap / 64 slots (N a power of two) of 64
 * bytes: an atomic sequence word `seq` and 56 data bytes, followed in the
 * ring's area by N bulk lines of 64 plain bytes. Positions are
 * free-running numbers (uint64_t, never reduced modulo N); position i
 * lives in slot i & (N - 1) and bulk line i & (N - 1), on lap i / N.
 *
 * The seq word of a record's first slot says four things:
 *   bits 16..63  tag: bit 63 set (a published seq is never 0), bits
 *                16..62 (lap of the record's position + 1) mod 2^47
 *   bit  15      of an inline record of 113..120 bytes: bit 63 of its
 *                second slot's first word (below); 0 for any other
 *   bits  8..14  code: 1..121 for an inline record of code - 1 bytes,
 *                0 for a bulk record (its header is in the slot's data)
 *   bits  0..7   kind of an inline record (0 for a bulk one)
 * A record of `len` payload bytes occupies k = cmesh_shm_rec_slots(len)
 * consecutive positions pos .. pos + k - 1 (wrapping around the end of the
 * area; there is no padding record). Two layouts, chosen by len alone:
 * - Inline (len <= CMESH_SHM_INLINE_MAX, k <= 2): length and kind are in
 *   the seq word; payload bytes 0..55 are the first slot's data. Up to
 *   CMESH_SHM_INLINE_WORD (112) bytes, 56..111 are the second slot's data
 *   and its first word (a seq's place) is 0. Past that, bytes 56..119 are
 *   the whole second slot: 56..63 its first word (little-endian) with bit
 *   63 clear (the byte's top bit is bit 15 of the first slot's seq word),
 *   64..119 its data. A message of up to 56 bytes is one cache line, one
 *   of up to 120 bytes two adjacent ones.
 * - Bulk (len > CMESH_SHM_INLINE_MAX, k = ceil(len / 64)): the first
 *   slot's data starts with the record header {len, kind}; the payload is
 *   contiguous in the bulk lines of positions pos .. pos + k - 1 (split
 *   in two where the area wraps), so each side copies it with one
 *   memcpy; the slots of pos + 1 .. pos + k - 1 are not written at all.
 * The producer writes the payload first, then the first slot's data, then
 * publishes the record with a release store of the first slot's seq. The
 * consumer, at head position `head`, owns a record iff the acquire load of
 * the seq of slot head & (N - 1) carries the tag of head's lap.
 *
 * Why stale bytes are never taken for a record. The consumer only looks
 * at the slot of its own head, which is always the first position of a
 * record (positions are claimed contiguously and it advances by exactly a
 * record's k), and never at a bulk line's bytes as a seq. Every value ever
 * stored in the first word of that slot has bit 63 clear (0 in a fresh
 * area, a new memfd being zero; an inline record's second slot), or
 * carries the tag of an earlier lap (a first slot one or more laps ago; a
 * slot a bulk record skipped keeps what it had), or the tag of head's lap
 * (the record it waits for). Only the last one matches, and its release
 * store follows every write of the record. Laps are counted in 47 bits: an
 * old value could only be mistaken for a new one if its slot went
 * unwritten for 2^47 laps (at least 2^50 positions, the smallest ring with
 * bulk records having 8 slots; no slot is skipped in the smallest ring,
 * and a ring of 2^17 slots or more has more than 2^64 positions of tags).
 * Any value with bit 63 set that is not the tag of an earlier lap (1 ..
 * head's lap, while laps have not wrapped) cannot come from an honest
 * producer, nor can a matching one with a code above 121, a bulk code
 * with a kind, bit 15 set on a record of up to 112 bytes or a bulk one, or a
 * bulk header whose length is inline-sized or over the limit: the
 * consumer fails. (A word with bit 63 clear is never published: a hostile
 * producer that leaves one there has only published nothing.)
 */
#ifndef CMESH_SHM_RING_H
#define CMESH_SHM_RING_H

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---- constants ---- */

/* "cmesharn", little-endian. */
#define CMESH_SHM_ARENA_MAGIC 0x6e72616873656d63ull
#define CMESH_SHM_ABI_VERSION 11u

#define CMESH_SHM_LINE 64u   /* a control line; the cache line we pad to */
#define CMESH_SHM_PAGE 4096u /* arena size and data region granularity */
#define CMESH_SHM_ARENA_MIN_SIZE (2ull * CMESH_SHM_PAGE)
#define CMESH_SHM_ARENA_MAX_SIZE (1ull << 40)

#define CMESH_SHM_RING_MIN_CAP 256u	  /* bytes, power of two */
#define CMESH_SHM_RING_MAX_CAP (1u << 30) /* bytes, power of two */
#define CMESH_SHM_SLOT_SIZE 64u		  /* a slot: seq + data */
#define CMESH_SHM_SLOT_DATA 56u		  /* data bytes of a slot */
#define CMESH_SHM_REC_HDR_SIZE 8u	  /* a bulk record's header */
/* Largest inline payload (two slots, the second one whole). */
#define CMESH_SHM_INLINE_MAX (CMESH_SHM_SLOT_DATA + CMESH_SHM_SLOT_SIZE)
/* Up to this many bytes the second slot's first word is 0 (a seq's place). */
#define CMESH_SHM_INLINE_WORD (2u * CMESH_SHM_SLOT_DATA)
#define CMESH_SHM_BULK_LINE 64u /* bytes of a bulk line */

/* The seq word of a record's first slot: tag, code, kind (above). */
#define CMESH_SHM_SEQ_PUBLISHED (1ull << 63)
#define CMESH_SHM_SEQ_LAP_BITS 47u
#define CMESH_SHM_SEQ_META_BITS 16u
#define CMESH_SHM_SEQ_META_MASK ((1ull << CMESH_SHM_SEQ_META_BITS) - 1)
#define CMESH_SHM_SEQ_CODE_SHIFT 8u
#define CMESH_SHM_SEQ_CODE_MASK 0x7fu /* after the shift */
#define CMESH_SHM_SEQ_CODE_MAX (CMESH_SHM_INLINE_MAX + 1u)
/* The second slot's bit 63, in the first slot's seq word. */
#define CMESH_SHM_SEQ_HI (1ull << 15)
#define CMESH_SHM_SEQ_KIND_MASK 0xffu

/*
 * Record kinds. 0 is the ring's own filler (claimed positions a producer
 * gave up; the consumer steps over it); the layers above use 1..255.
 */
#define CMESH_SHM_REC_FILL 0u
#define CMESH_SHM_REC_KIND_MIN 1u
#define CMESH_SHM_REC_KIND_MAX 255u

/* The ABI needs lock-free (hence address-free) 32- and 64-bit atomics. */
static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
	      "64-bit atomics must be lock-free");
static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4,
	      "atomic integers must have the size of the plain ones");

/* ---- arena header ---- */

/*
 * At offset 0 of every arena. The creator fills every other field, then
 * publishes `magic` with a release store; a peer loads `magic` with acquire
 * (pairs with that store), then copies the other fields out once and
 * validates the copy before deriving any pointer. No one writes the header
 * after `magic` is published.
 */
struct cmesh_shm_arena_hdr {
	/* Creator: release store, last. Peer: acquire load, once. */
	_Atomic uint64_t magic;
	/* Creator: plain store before magic. Peer: copied after magic. */
	uint32_t abi_version; /* CMESH_SHM_ABI_VERSION */
	uint32_t hdr_size;    /* sizeof(struct cmesh_shm_arena_hdr) */
	uint64_t arena_size;  /* bytes; equals the memfd's size */
	uint64_t ctl_off;     /* control region: 64-byte aligned */
	uint64_t ctl_len;     /*   multiple of 64 */
	uint64_t data_off;    /* data region: page aligned, after ctl */
	uint64_t data_len;    /*   multiple of the page size */
	/*
	 * Creator: where its own mapping starts, or 0. Peer: a hint only,
	 * read before mapping (cmesh__arena_map_peer() maps there when that
	 * range is free and in the placement window, anywhere else if not).
	 */
	uint64_t va;
};

static_assert(sizeof(struct cmesh_shm_arena_hdr) == 64, "arena header size");
static_assert(offsetof(struct cmesh_shm_arena_hdr, magic) == 0, "magic");
static_assert(offsetof(struct cmesh_shm_arena_hdr, abi_version) == 8, "abi");
static_assert(offsetof(struct cmesh_shm_arena_hdr, hdr_size) == 12, "hsz");
static_assert(offsetof(struct cmesh_shm_arena_hdr, arena_size) == 16, "asz");
static_assert(offsetof(struct cmesh_shm_arena_hdr, ctl_off) == 24, "ctl");
static_assert(offsetof(struct cmesh_shm_arena_hdr, ctl_len) == 32, "ctl");
static_assert(offsetof(struct cmesh_shm_arena_hdr, data_off) == 40, "data");
static_assert(offsetof(struct cmesh_shm_arena_hdr, data_len) == 48, "data");

/* ---- ring control lines ---- */

/*
 * Consumer control line: in the CONSUMER's arena, control region, at a
 * 64-byte aligned offset; nothing else shares the line.
 */
struct cmesh_shm_ring_cons {
	/*
	 * Free-running slot position of the next unread record.
	 * Consumer: release store after copying a record out (its reads of
	 * the record happen before the producer may overwrite it).
	 * Producer: acquire load (pairs with that store), only when its
	 * cached head says the ring is full; validates
	 * cached head <= head <= its tail.
	 */
	_Atomic uint64_t head;
	uint64_t reserved[7]; /* consumer: 0; producer: never read */
};

static_assert(sizeof(struct cmesh_shm_ring_cons) == CMESH_SHM_LINE, "cons");
static_assert(offsetof(struct cmesh_shm_ring_cons, head) == 0, "head");

/*
 * Consumer wake line: in the CONSUMER's arena, control region, on a line
 * of its own, apart from `head`: the producer reads it after every publish,
 * so it must not share a line with a field the consumer writes per record.
 * Not used by the ring itself (see src/lane_wake.c).
 */
struct cmesh_shm_ring_wake {
	/*
	 * How the consumer waits, 0 while awake:
	 * CMESH_SHM_WAKE_FUTEX: it sleeps in futex_waitv on the producer's
	 *   signal word (struct cmesh_shm_ring_signal, in the producer's
	 *   arena); the producer increments that word and FUTEX_WAKEs it.
	 * CMESH_SHM_WAKE_SOCK (its waitset) or CMESH_SHM_WAKE_POLL (a
	 *   receiver where futex_waitv is missing) polls its wake socket,
	 *   the other end of the one whose fd its HELLO carried; the
	 *   producer sends a datagram there with MSG_DONTWAIT.
	 * CMESH_SHM_WAKE_WSFUTEX: its waitset sleeps in futex_waitv on the
	 *   signal word: the producer wakes it as for FUTEX. Each mode has
	 *   its bit: one never clears another's.
	 * Consumer: seq_cst RMW, seq_cst fence, then loads the ring's tail
	 * (struct cmesh_shm_ring_tail) and the seq of its head slot before
	 * sleeping; store of 0 when awake. Producer: a seq_cst load after
	 * the seq_cst CAS on the tail that claimed its record, any time
	 * before or after it publishes; wakes, once published, as the bits
	 * it read say (Dekker: one of the two sees the other: the producer
	 * a sleeper, or the consumer a claim; a claim not yet published
	 * makes the consumer look again after a nap, not sleep for good).
	 * Neither wake can block the producer, whatever the value.
	 */
	_Atomic uint32_t sleeping;
	/*
	 * CMESH_SHM_CLOSED once the receiving side is gone, or
	 * CMESH_SHM_CLOSED_FAILED when it failed (a forwarder whose
	 * receiver's process died), else 0. Consumer: seq_cst store, once;
	 * then a seq_cst load of the ring's tail, and it
	 * answers the REUSE ports of the records claimed before that load
	 * (shm/proto.h CMESH_PORT_F_REUSE). Producer: acquire load (pairs
	 * with that store) before it sends; for a record carrying REUSE
	 * ports, also a seq_cst load after the seq_cst CAS that claimed it,
	 * and if non-zero the record is written as a filler and not sent
	 * (Dekker: each such record is answered by one side).
	 * CMESH_SHM_CLOSED_FAILED: -ECONNRESET, any other non-zero: -EPIPE.
	 */
	_Atomic uint32_t closed;
	/*
	 * With CMESH_SHM_WAKE_SOCK on a lane that an endpoint created: which
	 * of the wake sockets the consumer gave over the link (by the id of
	 * its WAKESOCK message, shm/proto.h) to send on. Consumer: relaxed
	 * store before it sets the bit (a seq_cst RMW). Producer: read after
	 * the bit (acquire fence), checked against the sockets it holds; an
	 * unknown id wakes nobody.
	 */
	_Atomic uint32_t wake_id;
	uint32_t reserved0;
	uint64_t reserved[6]; /* consumer: 0; producer: never read */
};

#define CMESH_SHM_CLOSED 1u
#define CMESH_SHM_CLOSED_FAILED 2u

#define CMESH_SHM_WAKE_FUTEX 1u
#define CMESH_SHM_WAKE_SOCK 2u
#define CMESH_SHM_WAKE_POLL 4u
#define CMESH_SHM_WAKE_WSFUTEX 8u

static_assert(sizeof(struct cmesh_shm_ring_wake) == CMESH_SHM_LINE, "wake");
static_assert(offsetof(struct cmesh_shm_ring_wake, sleeping) == 0, "sleep");
static_assert(offsetof(struct cmesh_shm_ring_wake, closed) == 4, "closed");
static_assert(offsetof(struct cmesh_shm_ring_wake, wake_id) == 8, "wake_id");

/*
 * Producer signal line: in the PRODUCER's arena, control region, on a line
 * of its own. The futex a consumer in CMESH_SHM_WAKE_FUTEX mode sleeps on.
 */
struct cmesh_shm_ring_signal {
	/*
	 * Wakes sent, free-running. Producer: release increment, then
	 * FUTEX_WAKE, when the consumer's wake line says FUTEX. Consumer:
	 * acquire load before it stores `sleeping`, then futex_waitv on the
	 * value it read (any change, or a wake, ends the wait; a hostile
	 * value only makes it look again).
	 */
	_Atomic uint32_t seq;
	uint32_t reserved0;
	/*
	 * The position the consumer's head must reach before the producer,
	 * which has messages waiting behind a full ring, wants to hear of it
	 * (0: never asked). Producer: seq_cst store once the ring is full with
	 * a backlog queued, then a seq_cst fence and a fresh load of the head
	 * (it pushes on by itself if the space is there already). Consumer:
	 * a load after each (release) store of its head, and, once it finds
	 * the ring empty with its head moved since the last time, a seq_cst
	 * store of its head again and another (seq_cst) load; also after the
	 * seq_cst fence of its sleeping or armed bit. When a value it has not
	 * answered is at or below its head, it answers once with a SPACE
	 * control message (shm/proto.h). Dekker, as the wake line, with that
	 * seq_cst store and load: one of the two sees the other before the
	 * consumer stops finding records. A hostile value only makes the
	 * consumer send at most one SPACE per record it takes.
	 */
	_Atomic uint64_t space_at;
	/*
	 * A lane kept for reuse (a reply port's, shm/proto.h REUSE): the
	 * producer is done with use number `idle_use` (1, 2, ...), whose
	 * records end at ring position `idle_tail`. Producer: plain store of
	 * idle_tail, then release store of idle_use. Consumer: acquire load
	 * of idle_use (pairs with it); equal to the use it expects: it reads
	 * idle_tail once and steps its head there (checked: at most a ring
	 * ahead) before the lane's next use. idle_attach: the number of the
	 * last ATTACH the producer sent for those uses (stored before
	 * idle_use); one still in flight when the lane is reused is dropped
	 * on arrival, not taken for the next use's. Hostile values only spoil
	 * this lane for the producer itself.
	 */
	uint64_t idle_tail;
	_Atomic uint64_t idle_use;
	uint64_t idle_attach;
	/*
	 * When the producer last woke a consumer asleep on `seq`
	 * (CLOCK_MONOTONIC ns, read just before the increment; 0: never).
	 * Producer: relaxed store, then the release increment of `seq`.
	 * Consumer: one relaxed load after a sleep that ended with a message,
	 * to learn when that message came rather than when it woke (its
	 * adaptive spin, src/spin.h). A value outside that wait is ignored; a
	 * hostile one only widens the consumer's spin, never past its maximum.
	 */
	_Atomic uint64_t woke_at;
	uint64_t reserved[2]; /* producer: 0; consumer: never read */
};

static_assert(sizeof(struct cmesh_shm_ring_signal) == CMESH_SHM_LINE, "sig");
static_assert(offsetof(struct cmesh_shm_ring_signal, seq) == 0, "sig seq");
static_assert(offsetof(struct cmesh_shm_ring_signal, space_at) == 8,
	      "sig space_at");
static_assert(offsetof(struct cmesh_shm_ring_signal, idle_use) == 24,
	      "sig idle_use");
static_assert(offsetof(struct cmesh_shm_ring_signal, woke_at) == 40,
	      "sig woke_at");

/*
 * Producer tail line: in the PRODUCER's arena, control region, on a line
 * of its own (written per record, so nothing the consumer polls shares it).
 */
struct cmesh_shm_ring_tail {
	/*
	 * The next free position: every position below it is claimed (its
	 * record published or about to be). Producers: seq_cst CAS from pos
	 * to pos + k to claim a record's k positions; the CAS is the
	 * producer's half of the wake Dekker (wake line, `sleeping`).
	 * Consumer: seq_cst load after its seq_cst fence, only before it
	 * sleeps; validated: head <= tail <= head + slots, else the ring is
	 * corrupt. tail != head with nothing published at the head: a claim
	 * in flight, whose producer may owe no wake. A producer that claims
	 * and never publishes (stopped, or hostile) keeps a sleeping consumer
	 * looking again every 200 us, which it cannot tell from one that is
	 * only slow: it never fails for that, as for a producer that never
	 * publishes at all it never fails.
	 */
	_Atomic uint64_t tail;
	uint64_t reserved[7]; /* producer: 0; consumer: never read */
};

static_assert(sizeof(struct cmesh_shm_ring_tail) == CMESH_SHM_LINE, "tail");
static_assert(offsetof(struct cmesh_shm_ring_tail, tail) == 0, "tail");

/* ---- slots and records ---- */

/*
 * A slot, at a 64-byte aligned offset of a slot area. An inline record's
 * slots: data = payload bytes (and its second slot's seq: bytes 56..63);
 * a bulk record's first slot: data = struct cmesh_shm_rec_hdr (the rest
 * unused).
 */
struct cmesh_shm_slot {
	/*
	 * First slot: cmesh_shm_seq_tag(pos) | code | kind. Producer:
	 * release store after writing the whole record (continuation slots
	 * first). Consumer: acquire load (pairs with that store); the record
	 * is its iff the tag is its head's. Inline record's second slot:
	 * payload bytes 56..63 with bit 63 clear, a relaxed store before the
	 * publishing one; read by the consumer only after that (acquire).
	 */
	_Atomic uint64_t seq;
	/* Producer: plain stores before the publishing seq store. */
	uint8_t data[CMESH_SHM_SLOT_DATA];
};

static_assert(sizeof(struct cmesh_shm_slot) == CMESH_SHM_SLOT_SIZE, "slot");
static_assert(offsetof(struct cmesh_shm_slot, seq) == 0, "slot seq");
static_assert(offsetof(struct cmesh_shm_slot, data) == 8, "slot data");

/*
 * Bulk record header, at data[0] of a bulk record's first slot.
 * Producer: plain stores before the seq store that publishes it.
 * Consumer: copied out once (8 bytes) after the acquire load of seq, then
 * validated: kind in 0..KIND_MAX, INLINE_MAX < len <= the record limit.
 */
struct cmesh_shm_rec_hdr {
	uint32_t len;  /* payload bytes */
	uint32_t kind; /* CMESH_SHM_REC_FILL or KIND_MIN..KIND_MAX */
};

static_assert(sizeof(struct cmesh_shm_rec_hdr) == CMESH_SHM_REC_HDR_SIZE,
	      "record header size");
static_assert(offsetof(struct cmesh_shm_rec_hdr, len) == 0, "len");
static_assert(offsetof(struct cmesh_shm_rec_hdr, kind) == 4, "kind");

/* ---- offset math (integers only) ---- */

static inline uint64_t cmesh_shm_align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static inline int cmesh_shm_is_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* 1 if `cap` is a valid ring capacity in bytes. */
static inline int cmesh_shm_ring_cap_ok(uint64_t cap)
{
	return cmesh_shm_is_pow2(cap) && cap >= CMESH_SHM_RING_MIN_CAP &&
	       cap <= CMESH_SHM_RING_MAX_CAP;
}

/* Slots of a ring of `cap` bytes (valid capacity). */
static inline uint64_t cmesh_shm_ring_slots(uint64_t cap)
{
	return cap / CMESH_SHM_SLOT_SIZE;
}

/* Bytes a ring of `cap` bytes takes in its producer's data region. */
static inline uint64_t cmesh_shm_ring_area(uint64_t cap)
{
	return 2 * cap;
}

/* 1 if a record of `len` payload bytes has the bulk layout. */
static inline int cmesh_shm_rec_bulk(uint32_t len)
{
	return len > CMESH_SHM_INLINE_MAX;
}

/* Positions a record with `len` payload bytes occupies. */
static inline uint64_t cmesh_shm_rec_slots(uint32_t len)
{
	if (len <= CMESH_SHM_SLOT_DATA)
		return 1;
	if (len <= CMESH_SHM_INLINE_MAX)
		return 2; /* 113..120: as many as a bulk record's */
	return ((uint64_t)len + CMESH_SHM_BULK_LINE - 1) / CMESH_SHM_BULK_LINE;
}

/*
 * Largest payload of one record in a ring of `cap` bytes: a record takes
 * at most a quarter of the positions.
 */
static inline uint32_t cmesh_shm_ring_rec_limit(uint64_t cap)
{
	uint64_t quarter = cmesh_shm_ring_slots(cap) / 4;

	if (quarter < 2) /* one slot: an inline record of one line */
		return CMESH_SHM_SLOT_DATA;
	return (uint32_t)(quarter * CMESH_SHM_BULK_LINE);
}

static_assert(CMESH_SHM_RING_MIN_CAP / CMESH_SHM_SLOT_SIZE >= 4,
	      "a record fits in the smallest ring");
static_assert(CMESH_SHM_BULK_LINE == CMESH_SHM_SLOT_SIZE,
	      "bulk lines and slots are indexed alike");
static_assert(CMESH_SHM_SEQ_CODE_MAX <= CMESH_SHM_SEQ_CODE_MASK &&
		      CMESH_SHM_SEQ_HI ==
			      1ull << (CMESH_SHM_SEQ_CODE_SHIFT + 7u) &&
		      CMESH_SHM_SEQ_META_BITS + CMESH_SHM_SEQ_LAP_BITS == 63u,
	      "seq word: lap, hi bit, code and kind fit");

/*
 * The tag of position `pos` in a ring of 2^shift slots, in its place in a
 * seq word (code and kind bits clear): bit 63, and (lap + 1) mod 2^47.
 */
static inline uint64_t cmesh_shm_seq_tag(uint64_t pos, uint32_t shift)
{
	return CMESH_SHM_SEQ_PUBLISHED | ((pos >> shift) + 1)
						 << CMESH_SHM_SEQ_META_BITS;
}

/*
 * Code and kind bits of an inline record (len <= INLINE_MAX, kind valid);
 * the hi bit (CMESH_SHM_SEQ_HI) is the caller's.
 */
static inline uint64_t cmesh_shm_seq_inline(uint32_t len, uint32_t kind)
{
	return ((uint64_t)(len + 1) << CMESH_SHM_SEQ_CODE_SHIFT) | kind;
}

/*
 * 1 if `seq`, read from the slot of position `pos`, is a value an honest
 * producer may have left there before publishing that position's record:
 * any with bit 63 clear (0, or a second slot's bytes), or the tag of an
 * earlier lap: laps 1 .. lap of pos counted, until they wrap (after
 * 2^47 - 1 laps; from then on, any tag but pos's).
 */
static inline int cmesh_shm_seq_stale(uint64_t seq, uint64_t pos,
				      uint32_t shift)
{
	const uint64_t wrap = 1ull << CMESH_SHM_SEQ_LAP_BITS;
	uint64_t laps = (seq >> CMESH_SHM_SEQ_META_BITS) & (wrap - 1);
	uint64_t next = (pos >> shift) + 1; /* pos's own count, unreduced */

	if (!(seq & CMESH_SHM_SEQ_PUBLISHED))
		return 1;
	if (next >= wrap)
		return laps != (next & (wrap - 1));
	return laps >= 1 && laps < next;
}

/* 1 if [off, off + len) lies inside [lo, hi), without overflow. */
static inline int cmesh_shm_range_ok(uint64_t off, uint64_t len, uint64_t lo,
				     uint64_t hi)
{
	return lo <= hi && off >= lo && off <= hi && len <= hi - off;
}

#endif
