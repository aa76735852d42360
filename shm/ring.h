/* SPDX-License-Identifier: MIT */
/*
 * ring.h - the shared-memory ABI of an arena and of the SPSC record rings
 * that live in arenas.
 *
 * Only layouts, constants and integer offset math: no pointers, no bool,
 * enum or size_t, no syscalls. Everything here is read by a process that
 * does not trust the writer; see src/arena.c (validation of a header) and
 * src/shmring.c (validation of indices and records).
 *
 * An arena is a sealed memfd owned by one node. The owner maps it
 * read-write, its peer maps it read-only. Nothing in an arena is ever
 * written by anyone but its owner.
 *
 *   arena (size bytes, multiple of CMESH_SHM_PAGE)
 *   +0          struct cmesh_shm_arena_hdr            (64 bytes)
 *   +ctl_off    control region: 64-byte lines          (ctl_len bytes)
 *                 struct cmesh_shm_ring_prod  (a ring this node produces)
 *                 struct cmesh_shm_ring_cons  (a ring this node consumes)
 *                 struct cmesh_shm_ring_wake  (its sleeping/closed flags)
 *   +data_off   data region: record areas              (data_len bytes)
 *                 capacity bytes per ring this node produces
 *
 * One ring spans two arenas: its tail line and record area live in the
 * PRODUCER's arena, its head line in the CONSUMER's arena. Which line and
 * which record area belong to a ring, and the ring's capacity, are agreed
 * over the control socket, not stored here.
 *
 * Ring indices (head, tail) are free-running byte positions (uint64_t,
 * never reduced modulo the capacity); the position of byte i of the ring
 * is i & (capacity - 1); used bytes = tail - head, compared as unsigned.
 *
 * A record is an 8-byte header {len, kind} followed by len payload bytes,
 * padded to a multiple of 8. A record never wraps: if it does not fit
 * before the end of the record area, the producer fills the rest with a
 * PAD record (len = bytes to the end - 8) and writes the record at 0; both
 * are published by one tail store. A PAD is never at offset 0.
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
#define CMESH_SHM_ABI_VERSION 1u

#define CMESH_SHM_LINE 64u   /* a control line; the cache line we pad to */
#define CMESH_SHM_PAGE 4096u /* arena size and data region granularity */
#define CMESH_SHM_ARENA_MIN_SIZE (2ull * CMESH_SHM_PAGE)
#define CMESH_SHM_ARENA_MAX_SIZE (1ull << 40)

#define CMESH_SHM_RING_MIN_CAP 256u	  /* bytes, power of two */
#define CMESH_SHM_RING_MAX_CAP (1u << 30) /* bytes, power of two */
#define CMESH_SHM_REC_ALIGN 8u		  /* record start and size */
#define CMESH_SHM_REC_HDR_SIZE 8u

/* Record kinds. 0 is the ring's own filler; the layers above use 1..255. */
#define CMESH_SHM_REC_PAD 0u
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
	uint64_t reserved;    /* creator: 0; peer: ignored */
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
 * Producer control line: in the PRODUCER's arena, control region, at a
 * 64-byte aligned offset; nothing else shares the line.
 */
struct cmesh_shm_ring_prod {
	/*
	 * Free-running byte position one past the last published record.
	 * Producer: release store after writing the record(s) it covers.
	 * Consumer: acquire load (pairs with that store), then validates
	 * tail - head <= capacity and tail % 8 == 0.
	 */
	_Atomic uint64_t tail;
	uint64_t reserved[7]; /* producer: 0; consumer: never read */
};

static_assert(sizeof(struct cmesh_shm_ring_prod) == CMESH_SHM_LINE, "prod");
static_assert(offsetof(struct cmesh_shm_ring_prod, tail) == 0, "tail");

/*
 * Consumer control line: in the CONSUMER's arena, control region, at a
 * 64-byte aligned offset; nothing else shares the line.
 */
struct cmesh_shm_ring_cons {
	/*
	 * Free-running byte position of the next unread record.
	 * Consumer: release store after copying a record out (its reads of
	 * the record happen before the producer may overwrite it).
	 * Producer: acquire load (pairs with that store), only when its
	 * cached head says the ring is full; validates
	 * cached head <= head <= tail and head % 8 == 0.
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
 * Not used by the ring itself (see src/lane.c).
 */
struct cmesh_shm_ring_wake {
	/*
	 * 1 while the consumer sleeps on its eventfd, else 0. Consumer:
	 * seq_cst store of 1, seq_cst fence, then re-checks tail before
	 * sleeping; store of 0 when awake. Producer: seq_cst fence after its
	 * tail store, then a load; signals the eventfd only if it reads
	 * non-zero (Dekker: one of the two sees the other).
	 */
	_Atomic uint32_t sleeping;
	/*
	 * 1 once the receiving side is gone, else 0. Consumer: release store
	 * of 1, once. Producer: acquire load (pairs with that store) before it
	 * sends; non-zero: -EPIPE.
	 */
	_Atomic uint32_t closed;
	uint64_t reserved[7]; /* consumer: 0; producer: never read */
};

static_assert(sizeof(struct cmesh_shm_ring_wake) == CMESH_SHM_LINE, "wake");
static_assert(offsetof(struct cmesh_shm_ring_wake, sleeping) == 0, "sleep");
static_assert(offsetof(struct cmesh_shm_ring_wake, closed) == 4, "closed");

/* ---- records ---- */

/*
 * Record header, at an 8-byte aligned offset of a record area.
 * Producer: plain stores before the tail store that publishes it.
 * Consumer: copied out once (8 bytes) after the acquire load of tail, then
 * validated: kind known, len <= the record limit, the record inside both
 * the published bytes and the record area.
 */
struct cmesh_shm_rec_hdr {
	uint32_t len; /* payload bytes (PAD: bytes to the end of the area - 8) */
	uint32_t kind; /* CMESH_SHM_REC_PAD or KIND_MIN..KIND_MAX */
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

/* Largest payload of one record in a ring of `cap` bytes. */
static inline uint32_t cmesh_shm_ring_rec_limit(uint64_t cap)
{
	return (uint32_t)(cap / 4);
}

/* Bytes a record with `len` payload bytes occupies (header + padding). */
static inline uint64_t cmesh_shm_rec_span(uint32_t len)
{
	return CMESH_SHM_REC_HDR_SIZE +
	       cmesh_shm_align_up(len, CMESH_SHM_REC_ALIGN);
}

/* Offset in the record area of free-running position `pos`. */
static inline uint64_t cmesh_shm_ring_off(uint64_t pos, uint64_t cap)
{
	return pos & (cap - 1);
}

/* Bytes from position `pos` to the end of the record area. */
static inline uint64_t cmesh_shm_ring_to_end(uint64_t pos, uint64_t cap)
{
	return cap - cmesh_shm_ring_off(pos, cap);
}

/* Published, unread bytes (valid only if <= cap: check it). */
static inline uint64_t cmesh_shm_ring_used(uint64_t tail, uint64_t head)
{
	return tail - head;
}

/*
 * Bytes the producer needs at position `tail` for a record of `len`
 * payload bytes: the record, plus a PAD to the end of the area if the
 * record does not fit before it.
 */
static inline uint64_t cmesh_shm_ring_need(uint64_t tail, uint64_t cap,
					   uint32_t len)
{
	uint64_t span = cmesh_shm_rec_span(len);
	uint64_t to_end = cmesh_shm_ring_to_end(tail, cap);

	return span > to_end ? to_end + span : span;
}

/* 1 if [off, off + len) lies inside [lo, hi), without overflow. */
static inline int cmesh_shm_range_ok(uint64_t off, uint64_t len, uint64_t lo,
				     uint64_t hi)
{
	return lo <= hi && off >= lo && off <= hi && len <= hi - off;
}

#endif
