/* SPDX-License-Identifier: MIT */
/*
 * shmring.h - single-producer single-consumer record ring in shared
 * memory, spanning two arenas (layout and record format in shm/ring.h):
 * the producer writes records and its tail into its own arena, the
 * consumer writes its head into its own arena, and each maps the other's
 * arena read-only.
 *
 * The two sides are plain structs the caller embeds; init fills them. A
 * side borrows its arenas, which must outlive it. Each side is used by one
 * thread at a time. push/pop make no syscall, take no lock and allocate
 * nothing.
 *
 * Error convention for setup: an offset or capacity in (or describing)
 * our own arena is the caller's and is -EINVAL when invalid; one in the
 * peer's arena or describing the peer's ring came from the peer and is
 * -EPROTO.
 */
#ifndef CMESH_SHMRING_H
#define CMESH_SHMRING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct cmesh__arena;

/* One piece of a record's payload, for cmesh__shmring_pushv(). */
struct cmesh__iov {
	const void *base;
	uint32_t len;
};

struct cmesh__shmring_producer {
	unsigned char *data;	      /* record area, own arena */
	_Atomic uint64_t *tail;	      /* own arena */
	const _Atomic uint64_t *head; /* consumer's arena (NULL: unattached) */
	uint64_t cap;		      /* record area bytes, power of two */
	uint64_t tail_pos;	      /* last value stored to *tail */
	uint64_t head_cache;	      /* last validated *head */
	uint32_t limit;		      /* largest payload */
	bool failed;		      /* the consumer's head was corrupt */
};

struct cmesh__shmring_consumer {
	const unsigned char *data;    /* record area, producer's arena */
	const _Atomic uint64_t *tail; /* producer's arena (NULL: unattached) */
	_Atomic uint64_t *head;	      /* own arena */
	uint64_t cap;
	uint64_t head_pos;   /* last value stored to *head */
	uint64_t tail_cache; /* last validated *tail */
	uint32_t limit;
	bool failed; /* the producer's ring was corrupt */
};

/*
 * Setting up a ring. Each side first inits its own line (resets it, so
 * this runs before the line is announced to the peer), then attaches to
 * the peer's arena with what the peer announced:
 *
 *   producer: init(own, tail_off, data_off, cap) -> announce the three
 *   consumer: init(own, head_off)                -> announce head_off
 *   producer: attach(peer, head_off)
 *   consumer: attach(peer, tail_off, data_off, cap)
 *
 * Before attach, a producer treats the consumer's head as 0 (it fills the
 * ring, then gets -EAGAIN) and a consumer's pop returns -EAGAIN.
 */

/*
 * Producer: `own` is our arena (writable); the tail line at `tail_off`
 * (control region) and `cap` bytes of records at `data_off` (data region,
 * 64-byte aligned); `cap` a power of two within CMESH_SHM_RING_MIN_CAP..
 * MAX_CAP. Anything invalid: -EINVAL.
 */
int cmesh__shmring_producer_init(struct cmesh__shmring_producer *p,
				 struct cmesh__arena *own, uint64_t tail_off,
				 uint64_t data_off, uint64_t cap);

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
 * Consumer: `peer` is the producer's arena mapped read-only, with the tail
 * line at `tail_off` and `cap` bytes of records at `data_off` (announced
 * by the producer; invalid: -EPROTO).
 */
int cmesh__shmring_consumer_attach(struct cmesh__shmring_consumer *c,
				   const struct cmesh__arena *peer,
				   uint64_t tail_off, uint64_t data_off,
				   uint64_t cap);

/* Largest payload a ring of `cap` bytes carries in one record. */
uint32_t cmesh__shmring_record_limit(uint64_t cap);

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
 * (total length checked against the record limit).
 */
int cmesh__shmring_pushv(struct cmesh__shmring_producer *p, uint32_t kind,
			 const struct cmesh__iov *iov, uint32_t niov);

/*
 * Would a push of `len` payload bytes succeed now? 0, -EAGAIN (full),
 * -EMSGSIZE or -EPROTO as push. Space only grows until the producer
 * pushes, so after 0 the next push of `len` bytes succeeds: a caller can
 * commit to side effects (sending fds) before publishing the record.
 */
int cmesh__shmring_reserve(struct cmesh__shmring_producer *p, uint32_t len);

/*
 * Takes the next record: copies its payload into `buf` (`cap` bytes) and
 * its kind into *out_kind, and returns the payload length. -EAGAIN if the
 * ring is empty; -EMSGSIZE if the payload is longer than `cap` (nothing is
 * consumed); -EPROTO if the producer's ring is corrupt (then every later
 * pop fails too).
 */
int cmesh__shmring_pop(struct cmesh__shmring_consumer *c, uint32_t *out_kind,
		       void *buf, uint32_t cap);

/*
 * Cheap hint for a spin loop: true if a pop may return something other
 * than -EAGAIN. One relaxed load; pop validates what it finds.
 */
bool cmesh__shmring_pop_ready(const struct cmesh__shmring_consumer *c);

/*
 * For a spinning consumer: reads the lines where the next record will be,
 * so they are fetched together with the tail when it moves. No effect on
 * the ring's state.
 */
void cmesh__shmring_touch(const struct cmesh__shmring_consumer *c);

#endif
