/* SPDX-License-Identifier: MIT */
/*
 * test_shmring.c - the shared-memory MPSC slot ring: every record size,
 * the record limit, wrap-around, full and empty, claims and fillers,
 * corrupt sequence numbers, records and heads, concurrent producers, and
 * two real processes (one well-behaved producer, one hostile producer that
 * scribbles over its whole arena).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cmesh.h>

#include "arena.h"
#include "copy.h"
#include "ring.h"
#include "shmring.h"

#include "helpers/testutil.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(shmring, .init = tu_suite_init, .fini = tu_suite_fini);
TestSuite(copy, .init = tu_suite_init, .fini = tu_suite_fini);

#define FIRST CMESH_SHM_SLOT_DATA /* the largest one-line record */
#define SLOT_DATA CMESH_SHM_SLOT_DATA

/* ---- a ring between two arenas, both ends in this process ---- */

struct rig {
	struct cmesh__arena *pa;    /* producer's own arena */
	struct cmesh__arena *ca;    /* consumer's own arena */
	struct cmesh__arena *pa_ro; /* the producer's, as the consumer maps it */
	struct cmesh__arena *ca_ro; /* the consumer's, as the producer maps it */
	struct cmesh__shmring_producer p;
	struct cmesh__shmring_consumer c;
	uint64_t cap, nslots, data_off, head_off, tail_off;
	uint32_t limit;
};

static uint64_t arena_size_for(uint64_t cap)
{
	return cap * 4 < 64 * 1024 ? 64 * 1024 : cap * 4;
}

/*
 * The slot area at the very end of the data region, which ends the arena:
 * a read past the end of the ring hits the peer mapping's guard page and
 * crashes the test.
 */
static uint64_t data_off_for(const struct cmesh__arena *a, uint64_t cap)
{
	const struct cmesh__arena_layout *l = cmesh__arena_layout(a);

	return l->data_off + l->data_len - cmesh_shm_ring_area(cap);
}

static struct cmesh__arena *map_dup(const struct cmesh__arena *a)
{
	struct cmesh__arena *peer;
	int fd = dup(cmesh__arena_fd(a));

	cr_assert_geq(fd, 0);
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, cmesh__arena_layout(a)->size,
					   &peer),
		     0);
	return peer;
}

static void rig_open(struct rig *r, uint64_t cap)
{
	memset(r, 0, sizeof(*r));
	r->cap = cap;
	r->nslots = cap / CMESH_SHM_SLOT_SIZE;
	r->limit = cmesh__shmring_record_limit(cap);
	TU_ASSERT_RC(cmesh__arena_create(arena_size_for(cap), "prod", &r->pa),
		     0);
	TU_ASSERT_RC(cmesh__arena_create(arena_size_for(cap), "cons", &r->ca),
		     0);
	r->pa_ro = map_dup(r->pa);
	r->ca_ro = map_dup(r->ca);
	r->head_off = cmesh__arena_layout(r->ca)->ctl_off + 2 * CMESH_SHM_LINE;
	r->data_off = data_off_for(r->pa, cap);
	r->tail_off = cmesh__arena_layout(r->pa)->ctl_off + 3 * CMESH_SHM_LINE;
	TU_ASSERT_RC(cmesh__shmring_producer_init(&r->p, r->pa, r->data_off,
						  r->tail_off, cap),
		     0);
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&r->c, r->ca, r->head_off),
		     0);
	TU_ASSERT_RC(cmesh__shmring_producer_attach(&r->p, r->ca_ro,
						    r->head_off),
		     0);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(
			     &r->c, r->pa_ro, r->data_off, r->tail_off, cap),
		     0);
}

static void rig_close(struct rig *r)
{
	cmesh__arena_free(r->ca_ro);
	cmesh__arena_free(r->pa_ro);
	cmesh__arena_free(r->ca);
	cmesh__arena_free(r->pa);
}

/* Raw views of the shared words, as a hostile producer would write them. */
static struct cmesh_shm_slot *slot_at(struct rig *r, uint64_t pos)
{
	struct cmesh_shm_slot *s =
		(struct cmesh_shm_slot *)((char *)cmesh__arena_base(r->pa) +
					  r->data_off);

	return &s[pos & (r->nslots - 1)];
}

/* The bulk line of `pos`, after the slots. */
static unsigned char *bulk_at(struct rig *r, uint64_t pos)
{
	return (unsigned char *)cmesh__arena_base(r->pa) + r->data_off +
	       r->cap + (pos & (r->nslots - 1)) * CMESH_SHM_BULK_LINE;
}

static _Atomic uint64_t *head_word(struct rig *r)
{
	return &((struct cmesh_shm_ring_cons *)((char *)cmesh__arena_base(
							r->ca) +
						r->head_off))
			->head;
}

static uint64_t tail_of(struct rig *r)
{
	return atomic_load(r->p.tail);
}

/* The tail line as the consumer maps it (read-only). */
static const _Atomic uint64_t *tail_word_ro(struct rig *r)
{
	return &((const struct cmesh_shm_ring_tail
			  *)((const char *)cmesh__arena_base(r->pa_ro) +
			     r->tail_off))
			->tail;
}

static void put_hdr(struct rig *r, uint64_t pos, uint32_t len, uint32_t kind)
{
	struct cmesh_shm_rec_hdr h = { .len = len, .kind = kind };

	memcpy(slot_at(r, pos)->data, &h, sizeof(h));
}

static struct cmesh_shm_rec_hdr get_hdr(struct rig *r, uint64_t pos)
{
	struct cmesh_shm_rec_hdr h;

	memcpy(&h, slot_at(r, pos)->data, sizeof(h));
	return h;
}

/*
 * The seq words of shm/ring.h, restated: bit 63 set, bits 16..62 the
 * lap of the position + 1 (mod 2^47), bit 15 the second slot's bit 63,
 * bits 8..14 an inline record's length + 1, bits 0..7 its kind.
 */
static uint64_t tag_at(uint64_t nslots, uint64_t pos)
{
	return 1ull << 63 | ((pos / nslots + 1) % (1ull << 47)) << 16;
}

static uint64_t inline_seq(uint64_t nslots, uint64_t pos, uint32_t len,
			   uint32_t kind)
{
	return tag_at(nslots, pos) | (uint64_t)(len + 1) << 8 | kind;
}

/* Publishes a record's header at `pos` as a producer would (no payload). */
static void publish_rec(struct rig *r, uint64_t pos, uint32_t len,
			uint32_t kind)
{
	if (len <= CMESH_SHM_INLINE_MAX) {
		atomic_store(&slot_at(r, pos)->seq,
			     inline_seq(r->nslots, pos, len, kind));
		return;
	}
	put_hdr(r, pos, len, kind);
	atomic_store(&slot_at(r, pos)->seq, tag_at(r->nslots, pos));
}

/* Pushes `len` pattern bytes (seed) and pops them back, checking all. */
static void round_trip(struct rig *r, uint32_t kind, uint32_t len,
		       uint32_t seed)
{
	unsigned char *in = malloc(len ? len : 1);
	unsigned char *out = malloc(len ? len : 1);
	uint32_t k = 0;

	cr_assert(in && out);
	tu_fill(in, len, seed);
	TU_ASSERT_RC(cmesh__shmring_push(&r->p, kind, in, len), 0);
	cr_assert(cmesh__shmring_pop_ready(&r->c));
	/* The output buffer is exactly len bytes: ASan sees any overrun. */
	TU_ASSERT_RC(cmesh__shmring_pop(&r->c, &k, out, len), (int)len);
	cr_assert_eq(k, kind);
	cr_assert_eq(tu_check(out, len, seed), len, "len %u", len);
	free(in);
	free(out);
}

/* Moves head and tail (both empty) to slot `idx` of the area. */
static void advance_to(struct rig *r, uint64_t idx)
{
	while ((tail_of(r) & (r->nslots - 1)) != idx)
		round_trip(r, 1, FIRST, 7);
}

/*
 * Leaves a record of two full slots of 0xab bytes, already popped, in
 * slots 0 and 1, and both indices at slot 0 again (a lap later): the next
 * record there meets those stale bytes.
 */
static void soil_first_two_slots(struct rig *r)
{
	unsigned char big[CMESH_SHM_INLINE_MAX];
	uint32_t k;

	memset(big, 0xab, sizeof(big));
	TU_ASSERT_RC(cmesh__shmring_push(&r->p, 1, big, sizeof(big)), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r->c, &k, big, sizeof(big)),
		     (int)sizeof(big));
	advance_to(r, 0);
}

static void assert_failed_for_good(struct rig *r)
{
	uint32_t k;
	char buf[64];

	TU_ASSERT_RC(cmesh__shmring_pop(&r->c, &k, buf, sizeof(buf)), -EPROTO);
	cr_assert(cmesh__shmring_pop_ready(&r->c));
	TU_ASSERT_RC(cmesh__shmring_pop(&r->c, &k, buf, sizeof(buf)), -EPROTO);
}

/* ---- copy.h, which the ring and the in-process queue copy with ---- */

Test(copy, copy_small_copies_every_size_exactly_and_nothing_more)
{
	unsigned char src[300], dst[300 + 32];

	tu_fill(src, sizeof(src), 4);
	for (size_t n = 0; n <= sizeof(src); n++) {
		for (size_t at = 0; at < 3; at++) { /* unaligned too */
			memset(dst, 0x5a, sizeof(dst));
			cmesh__copy_small(dst + at, src, n);
			cr_assert_eq(memcmp(dst + at, src, n), 0, "n %zu", n);
			for (size_t i = 0; i < at; i++)
				cr_assert_eq(dst[i], 0x5a);
			for (size_t i = at + n; i < sizeof(dst); i++)
				cr_assert_eq(dst[i], 0x5a, "n %zu", n);
		}
	}
}

/* ---- single process ---- */

Test(shmring, pushes_and_pops_every_size_from_zero_to_four_pages)
{
	struct rig r;

	rig_open(&r, 128 * 1024);
	cr_assert_geq(r.limit, 4 * 4096);
	for (uint32_t len = 0; len <= 4 * 4096; len++)
		round_trip(&r, 1 + len % CMESH_SHM_REC_KIND_MAX, len, len);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	rig_close(&r);
}

Test(shmring, counts_the_slots_of_a_record)
{
	cr_assert_eq(cmesh_shm_rec_slots(0), 1);
	cr_assert_eq(cmesh_shm_rec_slots(FIRST), 1);
	cr_assert_eq(cmesh_shm_rec_slots(FIRST + 1), 2);
	/* The second slot whole, its seq word's bytes too. */
	cr_assert_eq(cmesh_shm_rec_slots(FIRST + CMESH_SHM_SLOT_SIZE), 2);
	cr_assert_eq(FIRST + CMESH_SHM_SLOT_SIZE, CMESH_SHM_INLINE_MAX);
	cr_assert_eq(CMESH_SHM_INLINE_MAX, 120);
	cr_assert_not(cmesh_shm_rec_bulk(CMESH_SHM_INLINE_MAX));
	/* Bulk: a position per 64 bytes, the header slot among them. */
	cr_assert(cmesh_shm_rec_bulk(CMESH_SHM_INLINE_MAX + 1));
	cr_assert_eq(cmesh_shm_rec_slots(CMESH_SHM_INLINE_MAX + 1), 2);
	cr_assert_eq(cmesh_shm_rec_slots(128), 2);
	cr_assert_eq(cmesh_shm_rec_slots(129), 3);
	cr_assert_eq(cmesh_shm_rec_slots(4096), 64);
	cr_assert_eq(cmesh_shm_rec_slots(UINT32_MAX), 1ull << 26);
}

Test(shmring, delivers_batches_of_mixed_sizes_in_order_across_many_wraps)
{
	struct rig r;
	uint64_t rng = 42, sent = 0, got = 0;
	unsigned char *buf;

	rig_open(&r, 4096);
	buf = malloc(r.limit);
	for (int round = 0; round < 2000; round++) {
		uint64_t rs = rng;

		/* Fill until full; the lengths replay from the saved rng. */
		for (;;) {
			uint32_t len =
				(uint32_t)(tu_rand(&rng) % (r.limit + 1));
			int rc;

			tu_fill(buf, len, (uint32_t)sent);
			rc = cmesh__shmring_push(&r.p, 1, buf, len);
			if (rc == -EAGAIN)
				break;
			TU_ASSERT_RC(rc, 0);
			sent++;
		}
		rng = rs;
		while (got < sent) {
			uint32_t len =
				(uint32_t)(tu_rand(&rng) % (r.limit + 1));
			uint32_t k;

			TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, r.limit),
				     (int)len);
			cr_assert_eq(tu_check(buf, len, (uint32_t)got), len);
			got++;
		}
		(void)tu_rand(&rng); /* the length that did not fit */
		TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &(uint32_t){ 0 }, buf,
						r.limit),
			     -EAGAIN);
	}
	cr_assert_gt(tail_of(&r), 1000 * r.nslots); /* many wraps */
	free(buf);
	rig_close(&r);
}

Test(shmring, accepts_records_up_to_the_limit_and_rejects_larger_ones)
{
	const uint64_t caps[] = { CMESH_SHM_RING_MIN_CAP, 4096, 64 * 1024 };

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		struct rig r;
		uint32_t big = 1;

		rig_open(&r, caps[i]);
		cr_assert_eq(r.limit,
			     r.nslots / 4 < 2 ? FIRST : r.nslots / 4 * 64);
		cr_assert_eq(cmesh_shm_rec_slots(r.limit), r.nslots / 4);
		for (uint32_t len = r.limit - 17; len <= r.limit; len++)
			round_trip(&r, 3, len, len);
		/* Largest records over and over: wrapping at every slot. */
		for (int n = 0; n < 64; n++)
			round_trip(&r, 4, r.limit - (uint32_t)(n % 9), n);
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, &big, r.limit + 1),
			     -EMSGSIZE);
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, &big, UINT32_MAX),
			     -EMSGSIZE);
		cr_assert_not(cmesh__shmring_pop_ready(&r.c));
		rig_close(&r);
	}
}

Test(shmring, wraps_a_record_around_the_end_of_the_area)
{
	struct rig r;
	unsigned char buf[200];
	struct cmesh_shm_rec_hdr h;
	uint32_t k;

	rig_open(&r, 4096);
	advance_to(&r, 62);
	cr_assert_eq(atomic_load(head_word(&r)), 62);
	tu_fill(buf, sizeof(buf), 99);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 9, buf, sizeof(buf)), 0);
	/*
	 * 200 bytes, bulk: 4 positions, 62, 63, then 64 and 65 in slots 0
	 * and 1; no padding record. The payload is in the bulk lines of
	 * those positions, 128 bytes at the end of the area and 72 at its
	 * start; the slots after the first are not written (63 is still
	 * fresh, 0 and 1 keep the first lap's seqs).
	 */
	h = get_hdr(&r, 62);
	cr_assert_eq(h.kind, 9);
	cr_assert_eq(h.len, 200);
	cr_assert_eq(atomic_load(&slot_at(&r, 62)->seq), tag_at(64, 62));
	cr_assert_eq(atomic_load(&slot_at(&r, 63)->seq), 0);
	cr_assert_eq(atomic_load(&slot_at(&r, 64)->seq),
		     inline_seq(64, 0, FIRST, 1));
	cr_assert_eq(atomic_load(&slot_at(&r, 65)->seq),
		     inline_seq(64, 1, FIRST, 1));
	cr_assert_eq(memcmp(bulk_at(&r, 62), buf, 128), 0);
	cr_assert_eq(memcmp(bulk_at(&r, 64), buf + 128, 72), 0);
	cr_assert_eq(tail_of(&r), 66);
	memset(buf, 0, sizeof(buf));
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), 200);
	cr_assert_eq(k, 9);
	cr_assert_eq(tu_check(buf, sizeof(buf), 99), sizeof(buf));
	cr_assert_eq(atomic_load(head_word(&r)), 66);
	/* The next record's first slot still holds an older lap's seq. */
	cr_assert_eq(atomic_load(&slot_at(&r, 66)->seq),
		     inline_seq(64, 2, FIRST, 1));
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	rig_close(&r);
}

/*
 * A bulk record's payload is never read as a seq: its lines hold, word for
 * word, the seq that would publish their position a lap later, yet the
 * consumer, reaching those positions a lap later, waits for the producer
 * at each (the slots there were never written, or hold an older lap's).
 */
Test(shmring, a_bulk_records_payload_is_never_taken_for_a_seq)
{
	struct rig r;
	uint64_t forged[8 * 8];
	unsigned char out[sizeof(forged)];
	uint32_t k;

	rig_open(&r, 4096);
	for (uint64_t line = 0; line < 8; line++)
		for (int w = 0; w < 8; w++)
			forged[line * 8 + w] =
				inline_seq(r.nslots, line + r.nslots, 8, 1);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 5, forged, sizeof(forged)), 0);
	cr_assert_eq(tail_of(&r), 8, "512 bytes: 8 positions");
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)),
		     (int)sizeof(forged));
	cr_assert_eq(memcmp(out, forged, sizeof(out)), 0);
	advance_to(&r, 0); /* a lap later: head at position 64, slot 0 */
	for (uint64_t pos = 0; pos < 8; pos++) {
		cr_assert_eq(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)),
			     -EAGAIN, "position %d", (int)(pos + r.nslots));
		cr_assert_not(cmesh__shmring_pop_ready(&r.c));
		round_trip(&r, 1, FIRST, (uint32_t)pos);
	}
	rig_close(&r);
}

/*
 * A hostile producer's bulk header near the end of the area, with the
 * longest length: the consumer reads the bulk lines up to the area's end
 * and on from its start (the rig puts a guard page after the area: a read
 * past it crashes the test), and hands out exactly those bytes.
 */
Test(shmring, a_bulk_record_wrapping_the_area_is_read_within_it)
{
	struct rig r;
	unsigned char *out;
	uint64_t pos;
	uint32_t k;

	rig_open(&r, 4096);
	out = malloc(r.limit);
	cr_assert_not_null(out);
	advance_to(&r, r.nslots - 1);
	pos = tail_of(&r);
	for (uint64_t j = 0; j < r.nslots; j++)
		memset(bulk_at(&r, j), (int)(j + 1), CMESH_SHM_BULK_LINE);
	publish_rec(&r, pos, r.limit, 7);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, r.limit), (int)r.limit);
	cr_assert_eq(k, 7);
	for (uint32_t i = 0; i < r.limit; i++) {
		uint64_t line = (pos + i / CMESH_SHM_BULK_LINE) &
				(r.nslots - 1);

		cr_assert_eq(out[i], (unsigned char)(line + 1), "byte %u", i);
	}
	cr_assert_eq(atomic_load(head_word(&r)),
		     pos + cmesh_shm_rec_slots(r.limit));
	free(out);
	rig_close(&r);
}

Test(shmring, reports_a_full_ring_with_eagain_until_the_consumer_pops)
{
	struct rig r;
	unsigned char buf[150] = { 0 };
	uint32_t k;
	int n = 0;

	rig_open(&r, 4096); /* 64 slots; 150 bytes take 3 */
	while (cmesh__shmring_push(&r.p, 1, buf, sizeof(buf)) == 0)
		n++;
	cr_assert_eq(n, 64 / 3);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, sizeof(buf)), -EAGAIN);
	/* A smaller record still fits in what is left. */
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, 0), -EAGAIN);
	/* One pop frees exactly one record's slots. */
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), 150);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 2, buf, sizeof(buf)), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, 0), -EAGAIN);
	for (int i = 1; i < n; i++)
		TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)),
			     150);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), FIRST);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), 150);
	cr_assert_eq(k, 2);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), -EAGAIN);
	rig_close(&r);
}

Test(shmring, pop_reports_emsgsize_for_a_short_buffer_and_consumes_nothing)
{
	struct rig r;
	unsigned char buf[2000];
	uint64_t head;
	uint32_t k = 0;

	rig_open(&r, 4096);
	advance_to(&r, 40);
	head = atomic_load(head_word(&r));
	tu_fill(buf, 100, 5);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 2, buf, 100), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, 99), -EMSGSIZE);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, 0), -EMSGSIZE);
	cr_assert_eq(atomic_load(head_word(&r)), head);
	cr_assert_eq(k, 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, 100), 100);
	cr_assert_eq(tu_check(buf, 100, 5), 100);
	/* The same for a record that wraps around the end. */
	advance_to(&r, 60);
	tu_fill(buf, 700, 6);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 3, buf, 700), 0);
	cr_assert_eq(get_hdr(&r, 60).len, 700);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, 699), -EMSGSIZE);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, 699), -EMSGSIZE);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, 700), 700);
	cr_assert_eq(k, 3);
	cr_assert_eq(tu_check(buf, 700, 6), 700);
	rig_close(&r);
}

Test(shmring, push_accepts_only_the_kinds_left_to_the_layers_above)
{
	struct rig r;
	uint32_t k;
	char c;

	rig_open(&r, 4096);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, CMESH_SHM_REC_FILL, "", 0),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, CMESH_SHM_REC_KIND_MAX + 1, "",
					 0),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, UINT32_MAX, "", 0), -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, CMESH_SHM_REC_KIND_MIN, "", 0),
		     0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, CMESH_SHM_REC_KIND_MAX, "", 0),
		     0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, &c, 1), 0);
	cr_assert_eq(k, CMESH_SHM_REC_KIND_MIN);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, &c, 1), 0);
	cr_assert_eq(k, CMESH_SHM_REC_KIND_MAX);
	rig_close(&r);
}

Test(shmring, setup_rejects_geometry_outside_the_arenas)
{
	struct rig r;
	struct cmesh__shmring_producer p;
	struct cmesh__shmring_consumer c;
	const struct cmesh__arena_layout *lp, *lc;
	uint64_t cap = 4096, d, h, t;

	rig_open(&r, cap);
	t = r.tail_off;
	lp = cmesh__arena_layout(r.pa);
	lc = cmesh__arena_layout(r.ca);
	d = r.data_off;
	h = r.head_off;
	/* Our own arena: the caller's mistake. */
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d, t, cap + 1),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d, t, 128),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d, t, 0), -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d, t, cap * 2),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d + 64, t, cap),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d - 8, t, cap),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, lp->ctl_off, t,
						  cap),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, UINT64_MAX - 63, t,
						  cap),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa_ro, d, t, cap),
		     -EINVAL);
	/* The tail line: off a line, outside the control region. */
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d, t + 8, cap),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d, d, cap),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_producer_init(&p, r.pa, d, 0, cap),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&c, r.ca, h + 8), -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&c, r.ca, lc->data_off),
		     -EINVAL);
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&c, r.ca_ro, h), -EINVAL);
	/* What the peer announced: a protocol violation. */
	TU_ASSERT_RC(cmesh__shmring_producer_attach(&r.p, r.ca_ro, h + 8),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_producer_attach(&r.p, r.ca_ro,
						    lc->ctl_off + lc->ctl_len),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_producer_attach(&r.p, r.ca_ro, 0), -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro, d, t,
						    cap * 2),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro, d, t, 3000),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro, d, t,
						    1ull << 40),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro, lp->ctl_off,
						    t, cap),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro, d + 8, t,
						    cap),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro,
						    UINT64_MAX - 4095, t, cap),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro, d, t + 8,
						    cap),
		     -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(
			     &r.c, r.pa_ro, d, lp->ctl_off + lp->ctl_len, cap),
		     -EPROTO);
	/* The failed calls changed nothing. */
	/* The failed calls changed nothing. */
	round_trip(&r, 1, 10, 10);
	rig_close(&r);
}

Test(shmring, works_in_either_order_of_attach)
{
	struct rig r;
	unsigned char buf[64];
	uint32_t k;

	rig_open(&r, 4096);
	/* A consumer that is not attached yet has nothing to read. */
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&r.c, r.ca, r.head_off), 0);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), -EAGAIN);
	/* A producer that is not attached yet fills the ring, then waits. */
	TU_ASSERT_RC(cmesh__shmring_producer_init(&r.p, r.pa, r.data_off,
						  r.tail_off, r.cap),
		     0);
	for (int i = 0; i < 4096 / 64; i++)
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, 0), -EAGAIN);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(&r.c, r.pa_ro, r.data_off,
						    r.tail_off, r.cap),
		     0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), FIRST);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, 0), -EAGAIN);
	TU_ASSERT_RC(cmesh__shmring_producer_attach(&r.p, r.ca_ro, r.head_off),
		     0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, 0), 0);
	rig_close(&r);
}

Test(shmring, pop_ready_says_whether_a_pop_would_find_something)
{
	struct rig r;
	char buf[8];
	uint32_t k;

	rig_open(&r, 4096);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, "a", 1), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, "b", 1), 0);
	cr_assert(cmesh__shmring_pop_ready(&r.c));
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), 1);
	cr_assert(cmesh__shmring_pop_ready(&r.c));
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), 1);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	rig_close(&r);
}

Test(shmring, peek_reads_the_header_once_and_holds_the_record_until_consume)
{
	struct rig r;
	unsigned char in[300], out[300];
	uint32_t k = 0;

	rig_open(&r, 4096);
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), -EAGAIN);
	tu_fill(in, sizeof(in), 9);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 7, in, sizeof(in)), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 8, "x", 1), 0);
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), (int)sizeof(in));
	cr_assert_eq(k, 7);
	/*
	 * A producer rewriting the header after the peek changes nothing:
	 * the validated copy is used until consume().
	 */
	put_hdr(&r, 0, 5000000, 255);
	k = 0;
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), (int)sizeof(in));
	cr_assert_eq(k, 7);
	cr_assert(cmesh__shmring_pop_ready(&r.c));
	/* Nothing is handed back before consume(). */
	cr_assert_eq(atomic_load(head_word(&r)), 0);
	/* Any piece, from any offset: within the first slot, across slots. */
	memset(out, 0, sizeof(out));
	cmesh__shmring_read(&r.c, 0, out, 1);
	cmesh__shmring_read(&r.c, 1, out + 1, FIRST - 1);
	cmesh__shmring_read(&r.c, FIRST, out + FIRST, 1);
	cmesh__shmring_read(&r.c, FIRST + 1, out + FIRST + 1,
			    SLOT_DATA * 2 + 3);
	cmesh__shmring_read(&r.c, FIRST + 1 + SLOT_DATA * 2 + 3,
			    out + FIRST + 1 + SLOT_DATA * 2 + 3,
			    sizeof(in) - (FIRST + 1 + SLOT_DATA * 2 + 3));
	cr_assert_eq(tu_check(out, sizeof(out), 9), sizeof(out));
	cmesh__shmring_read(&r.c, 0, out, 0); /* nothing */
	cmesh__shmring_consume(&r.c);
	cr_assert_eq(atomic_load(head_word(&r)),
		     cmesh_shm_rec_slots(sizeof(in)));
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), 1);
	cr_assert_eq(k, 8);
	cmesh__shmring_read(&r.c, 0, out, 1);
	cr_assert_eq(out[0], 'x');
	cmesh__shmring_consume(&r.c);
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), -EAGAIN);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	rig_close(&r);
}

Test(shmring, read_copies_every_span_of_every_payload_size_exactly)
{
	struct rig r;
	unsigned char in[4 * SLOT_DATA + FIRST], out[sizeof(in) + 16];
	uint32_t k;

	rig_open(&r, 8192);
	tu_fill(in, sizeof(in), 11);
	for (uint32_t len = 0; len <= sizeof(in); len++) {
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 2, in, len), 0);
		TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), (int)len);
		/* Spans starting at every offset, of two lengths. */
		for (uint32_t off = 0; off < len; off++) {
			uint32_t n = (len - off) % 61 + 1;

			if (n > len - off)
				n = len - off;
			memset(out, 0xee, sizeof(out));
			cmesh__shmring_read(&r.c, off, out, n);
			cr_assert_eq(memcmp(out, in + off, n), 0,
				     "len %u off %u n %u", len, off, n);
			cr_assert_eq(out[n], 0xee, "wrote past %u", n);
			cmesh__shmring_read(&r.c, off, out, len - off);
			cr_assert_eq(memcmp(out, in + off, len - off), 0);
			cr_assert_eq(out[len - off], 0xee);
		}
		cmesh__shmring_consume(&r.c);
	}
	rig_close(&r);
}

Test(shmring, peek_steps_over_fillers_and_fails_for_good_on_a_bad_header)
{
	struct rig r;
	uint32_t k;

	rig_open(&r, 4096);
	publish_rec(&r, 0, 100, CMESH_SHM_REC_FILL); /* two slots */
	publish_rec(&r, 2, 1, 3);
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), 1);
	cr_assert_eq(k, 3);
	cr_assert_eq(atomic_load(head_word(&r)), 2); /* past the filler */
	cmesh__shmring_consume(&r.c);
	publish_rec(&r, 3, r.limit + 1, 3);
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), -EPROTO);
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), -EPROTO);
	assert_failed_for_good(&r);
	rig_close(&r);
}

/*
 * Past 112 bytes, payload bytes 56..63 are the second slot's first word,
 * whose bit 63 (byte 63's top bit) is stored clear there (the word never
 * looks published) and carried in the first slot's seq word, by both
 * writers; up to 112 the word is 0 and the bit clear. Every read of the
 * record, from any offset, gives every byte back whole.
 */
Test(shmring, the_second_slots_bit_63_travels_in_the_first_slots_seq)
{
	const uint8_t tops[] = { 0xff, 0x7f, 0x80 };
	const uint32_t lens[] = { 64, 112, 113, CMESH_SHM_INLINE_MAX };

	for (size_t t = 0; t < sizeof(tops); t++)
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
			for (int general = 0; general < 2; general++) {
				unsigned char in[CMESH_SHM_INLINE_MAX];
				unsigned char out[CMESH_SHM_INLINE_MAX];
				uint32_t len = lens[l], k;
				struct cmesh__iov iov[2] = {
					{ in, 60 }, { in + 60, len - 60 }
				};
				uint64_t pos, seq, word;
				struct rig r;

				rig_open(&r, 4096);
				tu_fill(in, sizeof(in), (uint32_t)(t * 7 + l));
				in[63] = tops[t];
				pos = tail_of(&r);
				if (general)
					TU_ASSERT_RC(cmesh__shmring_pushv(
							     &r.p, 3, iov, 2),
						     0);
				else
					TU_ASSERT_RC(cmesh__shmring_push(
							     &r.p, 3, in, len),
						     0);
				seq = atomic_load(&slot_at(&r, pos)->seq);
				word = atomic_load(&slot_at(&r, pos + 1)->seq);
				if (len <= CMESH_SHM_INLINE_WORD) {
					cr_assert_eq(word, 0);
					cr_assert_eq(seq & CMESH_SHM_SEQ_HI, 0);
				} else {
					cr_assert_eq(word >> 63, 0);
					cr_assert_eq(!!(seq & CMESH_SHM_SEQ_HI),
						     tops[t] >> 7);
					cr_assert_eq(word >> 56,
						     tops[t] & 0x7fu);
				}
				/* Read whole, then from every offset on. */
				TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k),
					     (int)len);
				for (uint32_t off = 0; off < len; off++) {
					memset(out, 0, sizeof(out));
					cmesh__shmring_read(&r.c, off,
							    out + off,
							    len - off);
					cr_assert_eq(memcmp(out + off, in + off,
							    len - off),
						     0, "len %u off %u", len,
						     off);
				}
				/* And in pieces that split the word. */
				memset(out, 0, sizeof(out));
				cmesh__shmring_read(&r.c, 0, out, 58);
				cmesh__shmring_read(&r.c, 58, out + 58, 5);
				cmesh__shmring_read(&r.c, 63, out + 63, 1);
				cmesh__shmring_read(&r.c, 64, out + 64,
						    len - 64);
				cr_assert_eq(memcmp(out, in, len), 0);
				cmesh__shmring_consume(&r.c);
				rig_close(&r);
			}
}

Test(shmring, a_record_of_two_slots_leaves_no_stale_bytes_in_either)
{
	struct rig r;
	unsigned char small[FIRST + 1];
	unsigned char zero[SLOT_DATA] = { 0 };

	rig_open(&r, 4096);
	soil_first_two_slots(&r);
	/* One byte into slot 1. */
	memset(small, 0x11, sizeof(small));
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, small, sizeof(small)), 0);
	cr_assert_eq(slot_at(&r, 1)->data[0], 0x11);
	/* Only zeros after the payload (no stale or stack bytes). */
	cr_assert_eq(memcmp(slot_at(&r, 1)->data + 1, zero, SLOT_DATA - 1), 0);
	cr_assert_eq(atomic_load(&slot_at(&r, 1)->seq), 0);
	rig_close(&r);
}

/*
 * A sealed producer: pushes and inline pushes take nothing (-ESTALE,
 * -EAGAIN), the forced push and the two-step claim still go, after every
 * record claimed before; the consumer reads them all in order.
 */
Test(shmring, a_seal_refuses_later_pushes_and_lets_forced_ones_go_last)
{
	struct cmesh__iov iov = { "e", 1 };
	char out[8];
	uint64_t pos;
	uint32_t k;
	struct rig r;

	rig_open(&r, 4096);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, "a", 1), 0);
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, 1, &pos), 0); /* before */
	cr_assert_not(cmesh__shmring_sealed(&r.p));
	cmesh__shmring_seal(&r.p);
	cr_assert(cmesh__shmring_sealed(&r.p));
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, "x", 1), -ESTALE);
	TU_ASSERT_RC(cmesh__shmring_push_small(&r.p, 1, "x", 1), -EAGAIN);
	TU_ASSERT_RC(cmesh__shmring_pushv_forced(&r.p, 2, &iov, 1), 0);
	cmesh__shmring_commit(&r.p, pos, 1, &(struct cmesh__iov){ "b", 1 }, 1);
	for (const char *c = "abe"; *c; c++) {
		TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), 1);
		cr_assert_eq(out[0], *c);
		cr_assert_eq(k, *c == 'e' ? 2u : 1u);
	}
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), -EAGAIN);
	rig_close(&r);
}

/*
 * pushv_unless(): published while the stop word is 0; once it is set, the
 * claimed slots become a filler (-EPIPE): the tail moved past them, the
 * consumer steps over them to what follows; the consumer's look at the
 * tail (claimed()) counts the filler's claim. Forced, it passes a seal.
 */
Test(shmring, a_push_unless_stopped_leaves_a_filler_once_stopped)
{
	struct cmesh__iov iov = { "abc", 3 };
	_Atomic uint32_t stop = 0;
	uint32_t how = 0;
	char out[8];
	uint64_t before;
	uint32_t k;
	struct rig r;

	rig_open(&r, 4096);
	cr_assert_eq(cmesh__shmring_claimed(&r.c), 0);
	TU_ASSERT_RC(cmesh__shmring_pushv_unless(&r.p, 3, &iov, 1, false, &stop,
						 &how),
		     0);
	cr_assert_eq(cmesh__shmring_claimed(&r.c), tail_of(&r));
	atomic_store(&stop, 2);
	before = tail_of(&r);
	TU_ASSERT_RC(cmesh__shmring_pushv_unless(&r.p, 4, &iov, 1, false, &stop,
						 &how),
		     -EPIPE);
	cr_assert_eq(how, 2u, "the stop word as it read it");
	cr_assert_gt(tail_of(&r), before, "the filler's slots are claimed");
	cr_assert_eq(cmesh__shmring_claimed(&r.c), tail_of(&r));
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 5, "z", 1), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), 3);
	cr_assert_eq(k, 3u);
	cr_assert_eq(memcmp(out, "abc", 3), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), 1);
	cr_assert_eq(k, 5u, "the filler is stepped over");
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), -EAGAIN);
	/* Sealed: refused unless forced, which the stop word still stops. */
	atomic_store(&stop, 0);
	cmesh__shmring_seal(&r.p);
	TU_ASSERT_RC(cmesh__shmring_pushv_unless(&r.p, 3, &iov, 1, false, &stop,
						 &how),
		     -ESTALE);
	TU_ASSERT_RC(cmesh__shmring_pushv_unless(&r.p, 6, &iov, 1, true, &stop,
						 &how),
		     0);
	atomic_store(&stop, 1);
	TU_ASSERT_RC(cmesh__shmring_pushv_unless(&r.p, 6, &iov, 1, true, &stop,
						 &how),
		     -EPIPE);
	cr_assert_eq(how, 1u);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), 3);
	cr_assert_eq(k, 6u);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), -EAGAIN);
	rig_close(&r);
}

Test(shmring, push_small_writes_what_the_general_writer_writes_every_size)
{
	/*
	 * a: push_small(); b: pushv() of two pieces, which takes the general
	 * writer (put_data), not the small-record one push_small() shares
	 * with one-piece pushes.
	 */
	struct rig a, b;
	unsigned char in[CMESH__SHMRING_SMALL], out[CMESH__SHMRING_SMALL];
	struct cmesh__iov iov[2];
	uint32_t k, inline_pushes = 0;
	int rc;

	/* 16 slots: every size meets stale bytes of earlier laps. */
	rig_open(&a, 1024);
	rig_open(&b, 1024);
	for (int lap = 0; lap < 3; lap++) {
		for (uint32_t len = 0; len <= CMESH__SHMRING_SMALL; len++) {
			uint64_t pos = tail_of(&a);
			uint64_t slots = len > FIRST ? 2 : 1;

			cr_assert_eq(pos, tail_of(&b));
			tu_fill(in, len, len + (uint32_t)lap);
			rc = cmesh__shmring_push_small(&a.p, 9, in, len);
			if (rc == -EAGAIN) {
				/* Full by its cache: push() looks again. */
				cr_assert_eq(tail_of(&a), pos);
				TU_ASSERT_RC(cmesh__shmring_push(&a.p, 9, in,
								 len),
					     0);
			} else {
				TU_ASSERT_RC(rc, 0);
				inline_pushes++;
			}
			iov[0] = (struct cmesh__iov){ in, len / 2 };
			iov[1] = (struct cmesh__iov){ in + len / 2,
						      len - len / 2 };
			TU_ASSERT_RC(cmesh__shmring_pushv(&b.p, 9, iov, 2), 0);
			cr_assert_eq(tail_of(&a), pos + slots);
			for (uint64_t j = 0; j < slots; j++)
				cr_assert_eq(memcmp(slot_at(&a, pos + j),
						    slot_at(&b, pos + j),
						    CMESH_SHM_SLOT_SIZE),
					     0, "len %u slot %lu", len,
					     (unsigned long)j);
			memset(out, 0xee, sizeof(out));
			TU_ASSERT_RC(cmesh__shmring_pop(&a.c, &k, out, len),
				     (int)len);
			cr_assert_eq(k, 9);
			cr_assert_eq(tu_check(out, len, len + (uint32_t)lap),
				     len);
			TU_ASSERT_RC(cmesh__shmring_pop(&b.c, &k, out, len),
				     (int)len);
		}
	}
	/* Most of them inline (a full cache ends every lap of 16 slots). */
	cr_assert_gt(inline_pushes, 3 * (CMESH__SHMRING_SMALL + 1) / 2, "%u",
		     inline_pushes);
	rig_close(&a);
	rig_close(&b);
}

Test(shmring, push_small_leaves_to_push_what_it_cannot_do_at_once)
{
	unsigned char buf[CMESH__SHMRING_SMALL + 1] = { 0 }, *big;
	struct rig r;
	uint32_t k;

	/* Larger than two slots: never, whatever the ring. */
	rig_open(&r, 4096);
	TU_ASSERT_RC(cmesh__shmring_push_small(&r.p, 1, buf, sizeof(buf)),
		     -EAGAIN);
	cr_assert_eq(tail_of(&r), 0);
	/* Full by its cached head, though the consumer has made room. */
	while (cmesh__shmring_push(&r.p, 1, buf, FIRST) == 0)
		;
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, FIRST), FIRST);
	TU_ASSERT_RC(cmesh__shmring_push_small(&r.p, 1, buf, FIRST), -EAGAIN);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	rig_close(&r);

	/* Over the record limit of a tiny ring: push says -EMSGSIZE. */
	rig_open(&r, 256);
	cr_assert_lt(r.limit, CMESH__SHMRING_SMALL);
	TU_ASSERT_RC(cmesh__shmring_push_small(&r.p, 1, buf, r.limit + 1),
		     -EAGAIN);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, r.limit + 1), -EMSGSIZE);
	TU_ASSERT_RC(cmesh__shmring_push_small(&r.p, 1, buf, r.limit), 0);
	rig_close(&r);

	/*
	 * A producer that saw a corrupt head: push says -EPROTO. Its cache
	 * still shows room for a one-slot record, so only the failure can
	 * stop push_small.
	 */
	rig_open(&r, 4096);
	for (int i = 0; i < 60; i++)
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	atomic_store(head_word(&r), tail_of(&r) + 1);
	big = malloc(r.limit);
	cr_assert_not_null(big);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, big, r.limit), -EPROTO);
	free(big);
	cr_assert_eq(tail_of(&r), 60);
	TU_ASSERT_RC(cmesh__shmring_push_small(&r.p, 1, buf, FIRST), -EAGAIN);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), -EPROTO);
	cr_assert_eq(tail_of(&r), 60);
	rig_close(&r);
}

Test(shmring, in_flight_is_a_claim_not_yet_published_at_the_head)
{
	struct cmesh__shmring_consumer lone;
	unsigned char buf[200] = { 0 };
	uint64_t a, b;
	uint32_t k;
	struct rig r;

	rig_open(&r, 4096);
	/* Unattached: nothing can be in flight. */
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&lone, r.ca,
						  r.head_off + CMESH_SHM_LINE),
		     0);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&lone), 0);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 0);
	/* Claimed: the tail the consumer reads moved, nothing published. */
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, 100, &a), 0);
	cr_assert_eq(atomic_load(tail_word_ro(&r)), a + 2);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 1);
	/* A later record published behind it: still in flight at the head. */
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, 8, &b), 0);
	cmesh__shmring_commit(&r.p, b, 3, &(const struct cmesh__iov){ buf, 8 },
			      1);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 1);
	/* Published: ready, not in flight. */
	cmesh__shmring_commit(&r.p, a, 2,
			      &(const struct cmesh__iov){ buf, 100 }, 1);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 0);
	/* Peeked: the consumer holds it. */
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), 100);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 0);
	cmesh__shmring_consume(&r.c);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), 8);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 0);
	/* A cancelled claim is a published filler. */
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, 8, &a), 0);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 1);
	cmesh__shmring_cancel(&r.p, a, 8);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), -EAGAIN);
	/* A whole ring ahead is honest (full, the head slot unpublished). */
	atomic_store(r.p.tail, r.c.head_pos + r.nslots);
	TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 1);
	rig_close(&r);
}

Test(shmring, a_corrupt_tail_fails_the_consumer_for_good)
{
	/* More than a ring ahead of the head, or behind it. */
	const int64_t bad[] = { 64 + 1, -1, 1ll << 40 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rig r;

		rig_open(&r, 4096);
		round_trip(&r, 1, 8, 1); /* head at 1 */
		atomic_store(r.p.tail, r.c.head_pos + (uint64_t)bad[i]);
		TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), -EPROTO);
		assert_failed_for_good(&r);
		/* Failed: nothing to wait for; pop says why. */
		TU_ASSERT_RC(cmesh__shmring_in_flight(&r.c), 0);
		rig_close(&r);
	}
}

Test(shmring, head_word_is_the_seq_that_publishes_the_next_record)
{
	struct cmesh__shmring_consumer lone;
	const struct cmesh_shm_slot *cs;
	unsigned char buf[FIRST + 1] = { 0 };
	uint64_t want = 0;
	const _Atomic uint64_t *w;
	struct rig r;
	uint32_t k;

	rig_open(&r, 4096);
	cs = (const struct cmesh_shm_slot *)((const char *)cmesh__arena_base(
						     r.pa_ro) +
					     r.data_off);
	/* Unattached: nothing to poll. */
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&lone, r.ca,
						  r.head_off + CMESH_SHM_LINE),
		     0);
	cr_assert_null(cmesh__shmring_head_word(&lone, &want));
	for (int i = 0; i < 3; i++) {
		uint64_t head = r.c.head_pos;

		w = cmesh__shmring_head_word(&r.c, &want);
		/* The head slot's seq, read through the read-only mapping. */
		cr_assert_eq(w, &cs[head & (r.nslots - 1)].seq);
		cr_assert_eq(want, tag_at(r.nslots, head));
		cr_assert_not(cmesh__shmring_word_match(atomic_load(w), want));
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, sizeof(buf)), 0);
		cr_assert_eq(atomic_load(w),
			     inline_seq(r.nslots, head, sizeof(buf), 1));
		cr_assert(cmesh__shmring_word_match(atomic_load(w), want));
		/* Peeked: the record is there; nothing more to poll. */
		TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &k), (int)sizeof(buf));
		cr_assert_null(cmesh__shmring_head_word(&r.c, &want));
		cmesh__shmring_consume(&r.c);
		cr_assert_eq(r.c.head_pos, head + 2);
	}
	/* Failed (a tag a lap ahead): nothing to poll. */
	atomic_store(&slot_at(&r, r.c.head_pos)->seq,
		     tag_at(r.nslots, r.c.head_pos + r.nslots));
	assert_failed_for_good(&r);
	cr_assert_null(cmesh__shmring_head_word(&r.c, &want));
	rig_close(&r);
}

Test(shmring, a_filler_leaves_no_stale_bytes_in_its_first_two_slots)
{
	struct rig r;
	unsigned char big[FIRST + SLOT_DATA], out[sizeof(big)];
	unsigned char zero[SLOT_DATA] = { 0 };
	uint64_t pos;
	uint32_t k;

	rig_open(&r, 4096);
	soil_first_two_slots(&r);
	/* A cancelled claim fills slots 0 and 1. */
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, sizeof(big), &pos), 0);
	cr_assert_eq(pos % r.nslots, 0);
	cmesh__shmring_cancel(&r.p, pos, sizeof(big));
	/* Inline: its length and kind are in the seq word. */
	cr_assert_eq(atomic_load(&slot_at(&r, 0)->seq),
		     inline_seq(r.nslots, pos, sizeof(big),
				CMESH_SHM_REC_FILL));
	cr_assert_eq(memcmp(slot_at(&r, 0)->data, zero, SLOT_DATA), 0);
	cr_assert_eq(memcmp(slot_at(&r, 1)->data, zero, SLOT_DATA), 0);
	cr_assert_eq(atomic_load(&slot_at(&r, 1)->seq), 0);
	/* The consumer steps over it. */
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), -EAGAIN);
	rig_close(&r);
}

Test(shmring, pushv_gathers_the_pieces_into_one_record)
{
	struct rig r;
	unsigned char part[300], out[400];
	const struct cmesh__iov iov[] = {
		{ "abc", 3 }, { NULL, 0 }, { part, sizeof(part) },
		{ "", 0 },    { "z", 1 },
	};
	struct cmesh__iov big[2];
	uint32_t k;

	rig_open(&r, 4096);
	tu_fill(part, sizeof(part), 3);
	TU_ASSERT_RC(cmesh__shmring_pushv(&r.p, 5, iov, 5), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, sizeof(out)), 304);
	cr_assert_eq(k, 5);
	cr_assert_eq(memcmp(out, "abc", 3), 0);
	cr_assert_eq(tu_check(out + 3, sizeof(part), 3), sizeof(part));
	cr_assert_eq(out[303], 'z');
	/* No pieces: an empty record. */
	TU_ASSERT_RC(cmesh__shmring_pushv(&r.p, 6, NULL, 0), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, out, 0), 0);
	cr_assert_eq(k, 6);
	/* The limit applies to the sum, without overflow. */
	big[0] = (struct cmesh__iov){ part, r.limit };
	big[1] = (struct cmesh__iov){ part, 1 };
	TU_ASSERT_RC(cmesh__shmring_pushv(&r.p, 1, big, 2), -EMSGSIZE);
	big[0].len = UINT32_MAX;
	big[1].len = 2;
	TU_ASSERT_RC(cmesh__shmring_pushv(&r.p, 1, big, 2), -EMSGSIZE);
	TU_ASSERT_RC(cmesh__shmring_pushv(&r.p, 0, iov, 1), -EINVAL);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	rig_close(&r);
}

Test(shmring, a_claim_holds_later_records_back_until_commit_or_cancel)
{
	struct rig r;
	unsigned char buf[300];
	const struct cmesh__iov iov = { buf, 100 };
	uint64_t a, c;
	uint32_t k;

	rig_open(&r, 4096);
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, r.limit + 1, &a), -EMSGSIZE);
	tu_fill(buf, sizeof(buf), 4);
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, 100, &a), 0);
	cr_assert_eq(a, 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 2, "later", 5), 0);
	/* Published behind an open claim: not yet. */
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf + 200, 100), -EAGAIN);
	cmesh__shmring_commit(&r.p, a, 7, &iov, 1);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf + 200, 100), 100);
	cr_assert_eq(k, 7);
	cr_assert_eq(tu_check(buf + 200, 100, 4), 100);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf + 200, 100), 5);
	cr_assert_eq(k, 2);
	/* A cancelled claim becomes a filler the consumer steps over. */
	TU_ASSERT_RC(cmesh__shmring_claim(&r.p, 250, &c), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 3, "x", 1), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf + 200, 100), -EAGAIN);
	cmesh__shmring_cancel(&r.p, c, 250);
	cr_assert_eq(get_hdr(&r, c).kind, CMESH_SHM_REC_FILL);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf + 200, 100), 1);
	cr_assert_eq(k, 3);
	cr_assert_eq(atomic_load(head_word(&r)), tail_of(&r));
	/* Claims count against the room like pushes. */
	while (cmesh__shmring_claim(&r.p, FIRST, &c) == 0)
		cmesh__shmring_cancel(&r.p, c, FIRST);
	cr_assert_eq(tail_of(&r) - atomic_load(head_word(&r)), r.nslots);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, 100), -EAGAIN);
	cr_assert_eq(atomic_load(head_word(&r)), tail_of(&r));
	rig_close(&r);
}

Test(shmring, consumer_init_clears_its_whole_line)
{
	struct rig r;
	struct cmesh_shm_ring_cons *line;

	rig_open(&r, 4096);
	line = (struct cmesh_shm_ring_cons *)((char *)cmesh__arena_base(r.ca) +
					      r.head_off);
	memset(line, 0xa5, sizeof(*line));
	TU_ASSERT_RC(cmesh__shmring_consumer_init(&r.c, r.ca, r.head_off), 0);
	for (size_t i = 0; i < sizeof(*line); i++)
		cr_assert_eq(((unsigned char *)line)[i], 0, "byte %zu", i);
	rig_close(&r);
}

/*
 * A ring's pages are committed as records reach them, not at init: a
 * fresh 64 MiB ring has no page of its area resident; a one-slot record
 * makes its page resident; a bulk record of 88 positions after it (its
 * header in slot 1, its payload in bulk lines 1 to 88, 64 lines a page)
 * two pages of the bulk lines. Checked with mincore(), which reports the
 * memfd's page cache.
 */
Test(shmring, producer_init_writes_nothing_to_the_slots)
{
	const uint64_t cap = 64ull << 20;
	const uint32_t big = FIRST + 99 * SLOT_DATA;
	unsigned char *buf = calloc(1, big);
	struct rig r;
	uint32_t k;

	const uint64_t area = cmesh_shm_ring_area(cap);

	cr_assert_not_null(buf);
	rig_open(&r, cap);
	cr_assert_eq(tu_resident_pages(slot_at(&r, 0), area), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, big), FIRST);
	cr_assert_eq(tu_resident_pages(slot_at(&r, 0), area), 1);
	cr_assert_eq(cmesh_shm_rec_slots(big), 88);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, big), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, big), (int)big);
	cr_assert_eq(tu_resident_pages(slot_at(&r, 0), cap), 1);
	cr_assert_eq(tu_resident_pages(slot_at(&r, 0), area), 3);
	rig_close(&r);
	free(buf);
}

/* ---- a corrupt producer, deterministic cases ---- */

Test(shmring, pop_fails_for_good_on_a_seq_no_honest_producer_leaves)
{
	/*
	 * The head is at 70 (slot 6, lap 1); slot 6 last held position 6.
	 * Tags of later laps; the right tag with an inline length code past
	 * 121, or the bulk code with a kind; the second slot's bit 63 on a
	 * record of up to 112 bytes, or on a bulk one; a tag far ahead.
	 */
	const uint64_t bad[] = {
		inline_seq(64, 70 + 64, 1, 1),
		inline_seq(64, 70 + 64 * 9, 1, 1),
		tag_at(64, 70) | 122u << 8,
		tag_at(64, 70) | 127u << 8 | 5,
		tag_at(64, 70) | 1,
		inline_seq(64, 70, FIRST, 1) | CMESH_SHM_SEQ_HI,
		inline_seq(64, 70, 112, 1) | CMESH_SHM_SEQ_HI,
		tag_at(64, 70) | CMESH_SHM_SEQ_HI,
		tag_at(64, 70 + 64 * 64) | 1u << 8,
		UINT64_MAX,
		1ull << 63 | 3, /* count 0 */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rig r;

		rig_open(&r, 4096);
		advance_to(&r, 6);
		advance_to(&r, 5);
		advance_to(&r, 6);
		cr_assert_eq(tail_of(&r), 70);
		cr_assert_eq(atomic_load(&slot_at(&r, 70)->seq),
			     inline_seq(64, 6, FIRST, 1));
		atomic_store(&slot_at(&r, 70)->seq, bad[i]);
		assert_failed_for_good(&r);
		/* Even once the producer behaves again. */
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, "x", 1), 0);
		assert_failed_for_good(&r);
		rig_close(&r);
	}
}

Test(shmring, pop_waits_on_a_stale_seq_of_an_older_lap)
{
	/*
	 * Head at 70 (lap 1): zero, lap 0's tags (inline or bulk, any code),
	 * any word with bit 63 clear (a second slot's bytes).
	 */
	const uint64_t stale[] = { 0,
				   inline_seq(64, 6, FIRST, 1),
				   tag_at(64, 6),
				   tag_at(64, 6) | 0xffff,
				   1ull << 62,
				   12345,
				   inline_seq(64, 70, 1, 1) & ~(1ull << 63) };
	char buf[8];
	uint32_t k;

	for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
		struct rig r;

		rig_open(&r, 4096);
		advance_to(&r, 6);
		advance_to(&r, 5);
		advance_to(&r, 6);
		atomic_store(&slot_at(&r, 70)->seq, stale[i]);
		TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)),
			     -EAGAIN);
		cr_assert_not(cmesh__shmring_pop_ready(&r.c));
		round_trip(&r, 1, 8, 8);
		rig_close(&r);
	}
}

Test(shmring, counts_laps_in_47_bits_and_takes_any_older_tag_once_they_wrap)
{
	const uint64_t n = 64, wrap = 1ull << 47;
	/* Lap 2^47 - 2: tags of laps 1 .. 2^47 - 2 are older, no wrap yet. */
	uint64_t pos = (wrap - 2) * n + 5;

	cr_assert_eq(cmesh_shm_seq_tag(pos, 6), tag_at(n, pos));
	cr_assert(cmesh_shm_seq_stale(0, pos, 6));
	cr_assert(cmesh_shm_seq_stale(tag_at(n, 0), pos, 6));
	cr_assert(cmesh_shm_seq_stale(tag_at(n, pos - n) | 0xffff, pos, 6));
	cr_assert_not(cmesh_shm_seq_stale(tag_at(n, pos), pos, 6));
	cr_assert_not(cmesh_shm_seq_stale(tag_at(n, pos + n), pos, 6));
	cr_assert_not(cmesh_shm_seq_stale(1ull << 63, pos, 6)); /* count 0 */
	/* Lap 2^47 - 1: its count wraps to 0, still a nonzero seq. */
	pos += n;
	cr_assert_eq(cmesh_shm_seq_tag(pos, 6), 1ull << 63);
	cr_assert(cmesh_shm_seq_stale(tag_at(n, pos - n), pos, 6));
	cr_assert(cmesh_shm_seq_stale(tag_at(n, 0), pos, 6));
	cr_assert_not(cmesh_shm_seq_stale(1ull << 63 | 0x105, pos, 6));
	/* Laps later: any count but its own is an older lap's. */
	pos += 7 * n;
	cr_assert(cmesh_shm_seq_stale(tag_at(n, pos + n), pos, 6));
	cr_assert_not(cmesh_shm_seq_stale(tag_at(n, pos), pos, 6));
	/* Bit 63 clear: never a published tag, always one to wait on. */
	cr_assert(cmesh_shm_seq_stale(tag_at(n, pos) & ~(1ull << 63), pos, 6));
	cr_assert(cmesh_shm_seq_stale(1ull << 62, pos, 6));
}

Test(shmring, pop_fails_on_a_record_longer_than_the_limit)
{
	const uint32_t kinds[] = { 1, CMESH_SHM_REC_FILL };

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		struct rig r;

		rig_open(&r, 4096);
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, "x", 1), 0);
		publish_rec(&r, 0, r.limit + 1, kinds[i]);
		assert_failed_for_good(&r);
		rig_close(&r);
	}
}

Test(shmring, pop_fails_on_an_inline_record_longer_than_a_tiny_rings_limit)
{
	struct rig r;

	/* 4 slots: records of one line, at most 56 bytes. */
	rig_open(&r, CMESH_SHM_RING_MIN_CAP);
	cr_assert_eq(r.limit, FIRST);
	publish_rec(&r, 0, FIRST + 1, 1);
	assert_failed_for_good(&r);
	rig_close(&r);
	/* The limit itself is taken. */
	rig_open(&r, CMESH_SHM_RING_MIN_CAP);
	publish_rec(&r, 0, FIRST, 1);
	TU_ASSERT_RC(cmesh__shmring_peek(&r.c, &(uint32_t){ 0 }), (int)FIRST);
	rig_close(&r);
}

Test(shmring, pop_fails_on_a_bulk_header_with_an_inline_length)
{
	/* One encoding per length: 0..112 bytes are inline, never bulk. */
	const uint32_t lens[] = { 0, 1, FIRST, CMESH_SHM_INLINE_MAX };

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct rig r;

		rig_open(&r, 4096);
		put_hdr(&r, 0, lens[i], 1);
		atomic_store(&slot_at(&r, 0)->seq, tag_at(r.nslots, 0));
		assert_failed_for_good(&r);
		rig_close(&r);
	}
}

Test(shmring, pop_fails_on_a_bulk_record_with_a_kind_in_its_seq)
{
	struct rig r;

	rig_open(&r, 4096);
	put_hdr(&r, 0, 200, 1); /* a good bulk header */
	atomic_store(&slot_at(&r, 0)->seq, tag_at(r.nslots, 0) | 1);
	assert_failed_for_good(&r);
	rig_close(&r);
}

Test(shmring, pop_fails_on_an_unknown_kind)
{
	const uint32_t bad[] = { CMESH_SHM_REC_KIND_MAX + 1, 0x80000001u,
				 UINT32_MAX };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rig r;

		rig_open(&r, 4096);
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, "x", 1), 0);
		publish_rec(&r, 0, 200, bad[i]); /* bulk: a 32-bit kind */
		assert_failed_for_good(&r);
		rig_close(&r);
	}
}

Test(shmring, pop_steps_over_fillers)
{
	struct rig r;
	char buf[8];
	uint32_t k;

	rig_open(&r, 4096);
	/* A lap of fillers, as a hostile producer might publish them. */
	for (uint64_t pos = 0; pos < r.nslots; pos++)
		publish_rec(&r, pos, 0, CMESH_SHM_REC_FILL);
	cr_assert(cmesh__shmring_pop_ready(&r.c));
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), -EAGAIN);
	cr_assert_eq(atomic_load(head_word(&r)), r.nslots);
	/* Fillers of several slots, then a record. */
	publish_rec(&r, 64, 200, CMESH_SHM_REC_FILL);
	slot_at(&r, 68)->data[0] = 'q';
	publish_rec(&r, 68, 1, 4);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), 1);
	cr_assert_eq(k, 4);
	cr_assert_eq(buf[0], 'q');
	cr_assert_eq(atomic_load(head_word(&r)), 69);
	rig_close(&r);
}

Test(shmring, push_fails_for_good_on_a_corrupt_consumer_head)
{
	/* Relative to the producer's tail once the ring is full. */
	const int64_t bad[] = { 1, -64 - 1, 1ll << 40 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rig r;
		char buf[64] = { 0 };
		uint64_t pos;
		uint32_t k;

		rig_open(&r, 4096);
		/* Move both indices so "backwards" is distinguishable. */
		for (int n = 0; n < 10; n++)
			round_trip(&r, 1, FIRST, n);
		while (cmesh__shmring_push(&r.p, 1, buf, FIRST) == 0)
			;
		/* The producer reads the head only when its cache says full. */
		atomic_store(head_word(&r), tail_of(&r) + (uint64_t)bad[i]);
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), -EPROTO);
		atomic_store(head_word(&r), tail_of(&r));
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), -EPROTO);
		TU_ASSERT_RC(cmesh__shmring_claim(&r.p, 0, &pos), -EPROTO);
		TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)),
			     FIRST);
		rig_close(&r);
	}
}

Test(shmring, push_rereads_the_consumer_head_only_when_the_ring_looks_full)
{
	struct rig r;
	char buf[64] = { 0 };
	uint32_t k;

	rig_open(&r, 4096);
	/* Garbage head while the cache says there is room: not read. */
	atomic_store(head_word(&r), 12345);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	TU_ASSERT_RC(cmesh__shmring_pop(&r.c, &k, buf, sizeof(buf)), FIRST);
	for (int i = 1; i < 4096 / 64; i++)
		TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	/* Full by the cache; the head the consumer published frees one. */
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), 0);
	TU_ASSERT_RC(cmesh__shmring_push(&r.p, 1, buf, FIRST), -EAGAIN);
	rig_close(&r);
}

Test(shmring, leaves_fd_and_mapping_counts_as_they_were)
{
	struct rig r;
	int fds, maps;

	rig_open(&r, 4096); /* warm up the allocator */
	rig_close(&r);
	fds = tu_fd_count();
	maps = tu_map_count();
	for (int i = 0; i < 20; i++) {
		rig_open(&r, 4096 << (i % 4));
		round_trip(&r, 1, 100, i);
		rig_close(&r);
	}
	cr_assert_eq(tu_fd_count(), fds);
	cr_assert_eq(tu_map_count(), maps);
}

/* ---- the same traffic between threads and between processes ---- */

#define XP_CAP (64u * 1024)

/* The length of record `seq`: mostly small, now and then large. */
static uint32_t seq_len(uint64_t seq, uint32_t limit)
{
	uint64_t x = seq * 0x9E3779B97F4A7C15ull;

	x ^= x >> 31;
	if (seq % 97 == 0)
		return 8 + (uint32_t)(x % (limit - 7));
	return 8 + (uint32_t)(x % 248);
}

static uint32_t seq_kind(uint64_t seq)
{
	return 1 + (uint32_t)(seq % CMESH_SHM_REC_KIND_MAX);
}

/* Producer body; returns 0 or the failing push's code. */
static int produce(struct cmesh__shmring_producer *p, uint64_t first,
		   uint64_t n, unsigned char *buf)
{
	for (uint64_t seq = first; seq < first + n; seq++) {
		uint32_t len = seq_len(seq, p->limit);
		int r, spins = 0;

		memcpy(buf, &seq, 8);
		tu_fill(buf + 8, len - 8, (uint32_t)seq);
		while ((r = cmesh__shmring_push(p, seq_kind(seq), buf, len)) ==
		       -EAGAIN) {
			if (++spins % 64 == 0)
				sched_yield();
		}
		if (r)
			return r;
	}
	return 0;
}

/*
 * Consumer body: checks n records starting at `first` in order, with
 * their content, using `buf` (c->limit bytes). `alive` (may be NULL) is
 * polled while the ring is empty and returns false once the producer is
 * gone for good.
 */
static void consume(struct cmesh__shmring_consumer *c, uint64_t first,
		    uint64_t n, unsigned char *buf, bool (*alive)(void *),
		    void *arg)
{
	int64_t deadline = tu_now_ns() + TU_MS(50000);

	for (uint64_t seq = first; seq < first + n; seq++) {
		uint32_t len = seq_len(seq, c->limit), k = 0;
		uint64_t got;
		int r, spins = 0;

		while ((r = cmesh__shmring_pop(c, &k, buf, c->limit)) ==
		       -EAGAIN) {
			if (++spins % 64)
				continue;
			sched_yield();
			cr_assert_lt(tu_now_ns(), deadline, "stuck at %lu",
				     (unsigned long)seq);
			cr_assert(!alive || alive(arg) ||
					  cmesh__shmring_pop_ready(c),
				  "producer gone at record %lu",
				  (unsigned long)seq);
		}
		cr_assert_eq(r, (int)len, "record %lu: %d, want %u",
			     (unsigned long)seq, r, len);
		memcpy(&got, buf, 8);
		cr_assert_eq(got, seq);
		cr_assert_eq(k, seq_kind(seq));
		cr_assert_eq(tu_check(buf + 8, len - 8, (uint32_t)seq), len - 8,
			     "record %lu content", (unsigned long)seq);
	}
}

static void *producer_thread(void *arg)
{
	struct rig *r = arg;
	unsigned char *buf = malloc(r->limit);
	intptr_t rc = produce(&r->p, 0, tu_stress(200000, 1000), buf);

	free(buf);
	return (void *)rc;
}

Test(shmring, delivers_records_in_order_between_threads)
{
	struct rig r;
	unsigned char *buf;
	pthread_t t;

	rig_open(&r, XP_CAP);
	buf = malloc(r.limit);
	cr_assert_not_null(buf);
	tu_thread_start(&t, producer_thread, &r);
	consume(&r.c, 0, tu_stress(200000, 1000), buf, NULL, NULL);
	free(buf);
	cr_assert_eq((intptr_t)tu_thread_join(t), 0);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	rig_close(&r);
}

#define MPSC_THREADS 4

struct mpsc_arg {
	struct rig *r;
	uint64_t id, n;
};

/* One of several producers: records tagged (id << 56 | seq). */
static void *mpsc_thread(void *arg)
{
	struct mpsc_arg *a = arg;
	unsigned char *buf = malloc(a->r->limit);
	intptr_t rc = 0;

	if (!buf)
		return (void *)(intptr_t)-ENOMEM;
	for (uint64_t seq = 0; seq < a->n && !rc; seq++) {
		uint64_t tag = a->id << 56 | seq;
		uint32_t len = seq_len(seq * MPSC_THREADS + a->id, a->r->limit);
		int spins = 0;

		memcpy(buf, &tag, 8);
		tu_fill(buf + 8, len - 8, (uint32_t)tag);
		while ((rc = cmesh__shmring_push(&a->r->p, 1 + (uint32_t)a->id,
						 buf, len)) == -EAGAIN) {
			if (++spins % 64 == 0)
				sched_yield();
		}
	}
	free(buf);
	return (void *)rc;
}

Test(shmring, keeps_each_producers_order_with_concurrent_producers)
{
	uint64_t n = tu_stress(100000, 1000), next[MPSC_THREADS] = { 0 };
	struct mpsc_arg args[MPSC_THREADS];
	pthread_t t[MPSC_THREADS];
	int64_t deadline = tu_now_ns() + TU_MS(50000);
	unsigned char *buf;
	struct rig r;

	rig_open(&r, 16 * 1024);
	buf = malloc(r.limit);
	cr_assert_not_null(buf);
	for (uint64_t i = 0; i < MPSC_THREADS; i++) {
		args[i] = (struct mpsc_arg){ &r, i, n };
		tu_thread_start(&t[i], mpsc_thread, &args[i]);
	}
	for (uint64_t got = 0; got < n * MPSC_THREADS;) {
		uint64_t tag, id, seq;
		uint32_t k = 0, len;
		int rc = cmesh__shmring_pop(&r.c, &k, buf, r.limit);

		if (rc == -EAGAIN) {
			sched_yield();
			cr_assert_lt(tu_now_ns(), deadline, "stuck at %lu",
				     (unsigned long)got);
			continue;
		}
		cr_assert_geq(rc, 8, "pop: %d", rc);
		memcpy(&tag, buf, 8);
		id = tag >> 56;
		seq = tag & ((1ull << 56) - 1);
		cr_assert_lt(id, MPSC_THREADS);
		cr_assert_eq(seq, next[id], "producer %lu: %lu, want %lu",
			     (unsigned long)id, (unsigned long)seq,
			     (unsigned long)next[id]);
		cr_assert_eq(k, 1 + id);
		len = seq_len(seq * MPSC_THREADS + id, r.limit);
		cr_assert_eq((uint32_t)rc, len);
		cr_assert_eq(tu_check(buf + 8, len - 8, (uint32_t)tag),
			     len - 8);
		next[id]++;
		got++;
	}
	for (int i = 0; i < MPSC_THREADS; i++)
		cr_assert_eq((intptr_t)tu_thread_join(t[i]), 0);
	cr_assert_not(cmesh__shmring_pop_ready(&r.c));
	cr_assert_eq(tail_of(&r), atomic_load(head_word(&r)));
	free(buf);
	rig_close(&r);
}

/* What each side announces with its arena fd. */
struct announce {
	uint64_t arena_size;
	uint64_t line_off; /* head line (consumer only) */
	uint64_t data_off; /* producer only */
	uint64_t tail_off; /* producer only */
	uint64_t cap;	   /* producer only */
};

static int send_fd(int sock, int fd, const void *msg, size_t len)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	memset(&u, 0, sizeof(u));
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

/* Receives one message of exactly `len` bytes carrying exactly one fd. */
static int recv_fd(int sock, int *out_fd, void *msg, size_t len)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;
	int fd = -1;
	ssize_t n;

	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET &&
		    cm->cmsg_type == SCM_RIGHTS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	}
	if ((size_t)n != len || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) ||
	    fd < 0) {
		if (fd >= 0)
			close(fd);
		return -EPROTO;
	}
	*out_fd = fd;
	return 0;
}

/* One side of a cross-process ring, set up as the real protocol will. */
struct side {
	struct cmesh__arena *own, *peer;
	struct announce mine, theirs;
};

/* Producer: create, init, announce, then map the consumer and attach. */
static int producer_setup(int sock, struct side *s,
			  struct cmesh__shmring_producer *p)
{
	int r, fd;

	r = cmesh__arena_create(arena_size_for(XP_CAP), "xp-prod", &s->own);
	if (r)
		return r;
	s->mine.arena_size = cmesh__arena_layout(s->own)->size;
	s->mine.cap = XP_CAP;
	s->mine.data_off = data_off_for(s->own, XP_CAP);
	s->mine.tail_off = cmesh__arena_layout(s->own)->ctl_off;
	r = cmesh__shmring_producer_init(p, s->own, s->mine.data_off,
					 s->mine.tail_off, XP_CAP);
	if (!r)
		r = send_fd(sock, cmesh__arena_fd(s->own), &s->mine,
			    sizeof(s->mine));
	if (!r)
		r = recv_fd(sock, &fd, &s->theirs, sizeof(s->theirs));
	if (r)
		return r;
	r = cmesh__arena_map_peer(fd, s->theirs.arena_size, &s->peer);
	if (r) {
		close(fd);
		return r;
	}
	return cmesh__shmring_producer_attach(p, s->peer, s->theirs.line_off);
}

/* Consumer: the mirror image (the test process). */
static void consumer_setup(int sock, struct side *s,
			   struct cmesh__shmring_consumer *c)
{
	int fd;

	TU_ASSERT_RC(cmesh__arena_create(arena_size_for(XP_CAP), "xp-cons",
					 &s->own),
		     0);
	s->mine.arena_size = cmesh__arena_layout(s->own)->size;
	s->mine.line_off = cmesh__arena_layout(s->own)->ctl_off;
	TU_ASSERT_RC(cmesh__shmring_consumer_init(c, s->own, s->mine.line_off),
		     0);
	TU_ASSERT_RC(send_fd(sock, cmesh__arena_fd(s->own), &s->mine,
			     sizeof(s->mine)),
		     0);
	TU_ASSERT_RC(recv_fd(sock, &fd, &s->theirs, sizeof(s->theirs)), 0);
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, s->theirs.arena_size, &s->peer),
		     0);
	TU_ASSERT_RC(cmesh__shmring_consumer_attach(
			     c, s->peer, s->theirs.data_off, s->theirs.tail_off,
			     s->theirs.cap),
		     0);
}

static void side_free(struct side *s)
{
	cmesh__arena_free(s->peer);
	cmesh__arena_free(s->own);
}

/* True while the child has not exited (without reaping it). */
static bool child_alive(void *arg)
{
	siginfo_t si = { 0 };

	if (waitid(P_PID, (id_t) * (pid_t *)arg, &si,
		   WEXITED | WNOHANG | WNOWAIT) < 0)
		return false;
	return si.si_pid == 0;
}

static pid_t fork_child(int sv[2], int (*body)(int sock, void *arg), void *arg)
{
	pid_t pid, parent = getpid();

	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
		     0);
	pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* Never outlive a test that failed half-way. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(99);
		close(sv[0]);
		_exit(body(sv[1], arg));
	}
	close(sv[1]);
	return pid;
}

static int well_behaved_child(int sock, void *arg)
{
	uint64_t n = *(uint64_t *)arg;
	struct cmesh__shmring_producer p;
	struct side s = { 0 };
	unsigned char *buf = malloc(XP_CAP);
	int r;

	if (!buf)
		return 10;
	r = producer_setup(sock, &s, &p);
	if (r)
		return 11;
	r = produce(&p, 0, n, buf);
	free(buf);
	side_free(&s);
	return r ? 12 : 0;
}

Test(shmring, delivers_a_million_records_in_order_across_processes)
{
	uint64_t n = tu_stress(1000000, 1000);
	/* Allocated outside the counted window (a sanitizer's allocator
	 * maps a new region for the first block of a size class). */
	unsigned char *buf = malloc(cmesh__shmring_record_limit(XP_CAP));
	struct cmesh__shmring_consumer c;
	struct side s = { 0 };
	int sv[2], st, fds, maps;
	pid_t pid;

	cr_assert_not_null(buf);
	fds = tu_fd_count();
	maps = tu_map_count();
	pid = fork_child(sv, well_behaved_child, &n);
	consumer_setup(sv[0], &s, &c);
	consume(&c, 0, n, buf, child_alive, &pid);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x",
		  st);
	/* The producer is gone; its arena stays readable and empty. */
	cr_assert_not(cmesh__shmring_pop_ready(&c));
	side_free(&s);
	close(sv[0]);
	cr_assert_eq(tu_fd_count(), fds);
	cr_assert_eq(tu_map_count(), maps);
	free(buf);
}

/* ---- a hostile producer ---- */

#define HOSTILE_VALID 5000u

struct hostile_status {
	int32_t truncate_errno; /* errno of ftruncate on the sealed arena */
	int32_t pad;
};

static struct cmesh_shm_slot *xp_slot(struct cmesh_shm_slot *slots,
				      uint64_t pos)
{
	return &slots[pos & (XP_CAP / CMESH_SHM_SLOT_SIZE - 1)];
}

static void put_rec(struct cmesh_shm_slot *slots, uint64_t pos, uint32_t len,
		    uint32_t kind)
{
	struct cmesh_shm_rec_hdr h = { .len = len, .kind = kind };

	memcpy(xp_slot(slots, pos)->data, &h, sizeof(h));
}

static void put_seq(struct cmesh_shm_slot *slots, uint64_t pos, uint64_t v)
{
	atomic_store_explicit(&xp_slot(slots, pos)->seq, v,
			      memory_order_release);
}

/* The tag of `pos` in the XP_CAP ring (see tag_at()). */
static uint64_t xp_tag(uint64_t pos)
{
	return tag_at(XP_CAP / CMESH_SHM_SLOT_SIZE, pos);
}

/* Publishes a record's header at `pos` as an honest producer would. */
static void publish_xp(struct cmesh_shm_slot *slots, uint64_t pos, uint32_t len,
		       uint32_t kind)
{
	if (len <= CMESH_SHM_INLINE_MAX) {
		put_seq(slots, pos,
			inline_seq(XP_CAP / CMESH_SHM_SLOT_SIZE, pos, len,
				   kind));
		return;
	}
	put_rec(slots, pos, len, kind);
	put_seq(slots, pos, xp_tag(pos));
}

/* A random header: any length up to past the limit, any kind. */
static void put_bad_rec(struct cmesh_shm_slot *slots, uint64_t pos,
			uint64_t *rng)
{
	uint64_t x = tu_rand(rng);

	if (x % 2)
		put_rec(slots, pos,
			(uint32_t)(tu_rand(rng) %
				   (cmesh_shm_ring_rec_limit(XP_CAP) + 64)),
			(uint32_t)(tu_rand(rng) % 260));
	else
		memcpy(xp_slot(slots, pos)->data, &x,
		       sizeof(struct cmesh_shm_rec_hdr));
}

/*
 * Forges a plausible ring state from the consumer's head on: a chain of
 * valid records and fillers (continuation seqs zeroed, as a real producer
 * does) so that the consumer travels all around the ring, ending now and
 * then in a bad header, a filler that is a little off, or a seq that lies.
 */
static void forge(struct side *s, struct cmesh_shm_slot *slots, uint64_t *rng)
{
	const uint64_t nslots = XP_CAP / CMESH_SHM_SLOT_SIZE;
	const struct cmesh_shm_ring_cons *line =
		(const struct cmesh_shm_ring_cons *)((const char *)
							     cmesh__arena_base(
								     s->peer) +
						     s->theirs.line_off);
	uint64_t head = atomic_load_explicit(&line->head, memory_order_relaxed);
	uint64_t pos = head, n = tu_rand(rng) % 64, x;

	for (uint64_t i = 0; i < n; i++) {
		uint32_t len = (uint32_t)(tu_rand(rng) % 2048);
		uint64_t k = cmesh_shm_rec_slots(len);
		uint32_t kind = (uint32_t)(tu_rand(rng) % 256); /* 0: filler */

		if (pos - head + k > nslots)
			break;
		for (uint64_t j = 1; j < k; j++)
			put_seq(slots, pos + j, 0);
		publish_xp(slots, pos, len, kind);
		pos += k;
	}
	x = tu_rand(rng);
	switch (x % 5) {
	case 4: /* then a record longer than the limit */
		publish_xp(slots, pos,
			   cmesh_shm_ring_rec_limit(XP_CAP) + 1 +
				   (uint32_t)(tu_rand(rng) % 100),
			   1 + (uint32_t)(tu_rand(rng) % 255));
		break;
	case 0: /* then a bad bulk header, or any code and kind */
		if (x & 256) {
			put_bad_rec(slots, pos, rng);
			put_seq(slots, pos, xp_tag(pos));
		} else {
			put_seq(slots, pos,
				xp_tag(pos) |
					(tu_rand(rng) & ((1ull << 15) - 1)));
		}
		break;
	case 1: /* then a filler that is valid or a little off */
		publish_xp(slots, pos,
			   cmesh_shm_ring_rec_limit(XP_CAP) - 1 +
				   (uint32_t)(tu_rand(rng) % 3),
			   CMESH_SHM_REC_FILL);
		break;
	case 2: /* a seq that lies: a lap behind (waits) or ahead */
		put_seq(slots, pos,
			xp_tag(pos + ((x >> 8) % 3) * nslots - nslots) |
				1u << 8);
		break;
	default: /* just the chain */
		break;
	}
}

static int hostile_child(int sock, void *arg)
{
	int64_t run_ns = *(int64_t *)arg, end;
	struct cmesh__shmring_producer p;
	struct hostile_status hs = { 0 };
	struct side s = { 0 };
	unsigned char *buf = malloc(XP_CAP), *base;
	struct cmesh_shm_slot *slots;
	uint64_t rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull | 1;
	uint64_t size;
	pid_t parent = getppid();
	char go;

	if (!buf || producer_setup(sock, &s, &p) ||
	    produce(&p, 0, HOSTILE_VALID, buf))
		return 20;
	base = cmesh__arena_base(s.own);
	size = s.mine.arena_size;
	slots = (struct cmesh_shm_slot *)(base + s.mine.data_off);
	/* Trying to shrink the arena under the reader: sealed. */
	if (ftruncate(cmesh__arena_fd(s.own), 4096) == 0)
		hs.truncate_errno = 0;
	else
		hs.truncate_errno = errno;
	if (send(sock, &hs, sizeof(hs), MSG_NOSIGNAL) != sizeof(hs) ||
	    recv(sock, &go, 1, 0) != 1)
		return 21;
	/* Scribble until killed (or, as an orphan, for a bounded time). */
	end = tu_now_ns() + 4 * run_ns + TU_MS(5000);
	for (uint64_t i = 0; tu_now_ns() < end && getppid() == parent; i++) {
		uint64_t x = tu_rand(&rng);

		if (i % 64 == 0) { /* the whole arena, header included */
			for (uint64_t o = 0; o < size; o += 8) {
				x = tu_rand(&rng);
				memcpy(base + o, &x, 8);
			}
		} else if (i % 8 == 0) { /* random words anywhere */
			for (int j = 0; j < 64; j++) {
				uint64_t o = tu_rand(&rng) % (size / 8) * 8;

				x = tu_rand(&rng);
				memcpy(base + o, &x, 8);
			}
		} else if (i % 8 == 1) { /* a random seq in a random slot */
			put_seq(slots, tu_rand(&rng), x);
		} else {
			forge(&s, slots, &rng);
		}
	}
	return 0;
}

Test(shmring, survives_a_producer_that_scribbles_over_its_whole_arena)
{
	int64_t run_ns = (int64_t)tu_stress(1500, 100) * 1000000;
	uint64_t rng = 7, n_rec = 0, n_again = 0, n_proto = 0, n_size = 0;
	struct cmesh__shmring_consumer c;
	struct hostile_status hs;
	struct side s = { 0 };
	unsigned char *buf = malloc(cmesh__shmring_record_limit(XP_CAP));
	int sv[2], st, fds, maps;
	int64_t end;
	pid_t pid;

	cr_assert_not_null(buf);
	fds = tu_fd_count();
	maps = tu_map_count();
	pid = fork_child(sv, hostile_child, &run_ns);
	consumer_setup(sv[0], &s, &c);
	/* First the valid records, all of them, intact. */
	consume(&c, 0, HOSTILE_VALID, buf, child_alive, &pid);
	cr_assert_eq(recv(sv[0], &hs, sizeof(hs), 0), (ssize_t)sizeof(hs));
	cr_assert_eq(hs.truncate_errno, EPERM);
	cr_assert_eq(send(sv[0], "g", 1, MSG_NOSIGNAL), 1); /* scribble now */

	end = tu_now_ns() + run_ns;
	while (tu_now_ns() < end) {
		/* Output buffers of every size that end where the heap
		 * block ends, so ASan catches a single byte too many. */
		uint32_t cap = (uint32_t)(tu_rand(&rng) % (c.limit + 1));
		uint32_t k = 0;
		int r = cmesh__shmring_pop(&c, &k, buf + c.limit - cap, cap);

		if (r >= 0) {
			cr_assert_leq((uint32_t)r, cap);
			cr_assert(k >= CMESH_SHM_REC_KIND_MIN &&
				  k <= CMESH_SHM_REC_KIND_MAX);
			n_rec++;
		} else if (r == -EAGAIN) {
			n_again++;
		} else if (r == -EMSGSIZE) {
			n_size++;
		} else {
			cr_assert_eq(r, -EPROTO, "pop returned %d", r);
			n_proto++;
			cr_assert(cmesh__shmring_pop_ready(&c));
			cr_assert_eq(cmesh__shmring_pop(&c, &k, buf, c.limit),
				     -EPROTO);
			/* Start over on the same lines, as a fuzzer. */
			TU_ASSERT_RC(cmesh__shmring_consumer_init(
					     &c, s.own, s.mine.line_off),
				     0);
			TU_ASSERT_RC(cmesh__shmring_consumer_attach(
					     &c, s.peer, s.theirs.data_off,
					     s.theirs.tail_off, s.theirs.cap),
				     0);
		}
	}
	cr_assert_gt(n_proto, 0);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		  "child status %#x", st);
	side_free(&s);
	close(sv[0]);
	cr_assert_eq(tu_fd_count(), fds);
	cr_assert_eq(tu_map_count(), maps);
	/* After the counts: logging allocates. */
	cr_log_info("hostile producer: %lu records, %lu -EAGAIN, %lu "
		    "-EMSGSIZE, %lu -EPROTO",
		    (unsigned long)n_rec, (unsigned long)n_again,
		    (unsigned long)n_size, (unsigned long)n_proto);
	free(buf);
}
