/* SPDX-License-Identifier: MIT */
/*
 * test_slots.c - ring storage (slots.c): zeroed on return, no page
 * committed by a mapped ring until used, the pool of reset rings (what it
 * keeps, what it refuses, what trim returns), fork while another thread
 * uses the pool, and through the channel API: a recycled ring starts
 * empty, and idle channels commit no ring memory.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "slots.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(slots, .init = tu_suite_init, .fini = tu_suite_fini);

#define BIG (1u << 20)
#define STRIDE 128u

struct item {
	uint64_t seq;
	uint64_t fill[5];
};
CMESH_TYPE_DEFINE_PLAIN(item_type, struct item);

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* True if [p, p + len) is mapped at all (mincore fails with ENOMEM if not). */
static bool mapped(const void *p, size_t len)
{
	return tu_resident_pages(p, len) >= 0;
}

/* Lines of /proc/self/maps, read without trimming the pool. */
static int count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	int n = 0, c;

	cr_assert_not_null(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

Test(slots, a_small_ring_comes_zeroed_from_the_heap)
{
	unsigned char *p = cmesh__slots_alloc(CMESH__SLOTS_HEAP_MAX, STRIDE);

	cr_assert_not_null(p);
	cr_assert_eq((uintptr_t)p % 128, 0);
	cr_assert(all_zero(p, CMESH__SLOTS_HEAP_MAX));
	memset(p, 0xa5, CMESH__SLOTS_HEAP_MAX);
	/* Heap storage is never pooled, clean or not. */
	cmesh__slots_free(p, CMESH__SLOTS_HEAP_MAX, STRIDE, true);
	cr_assert_eq(cmesh__slots_pooled(), 0);
	cr_assert_not(cmesh__slots_keepable(CMESH__SLOTS_HEAP_MAX, STRIDE, 0));
	cmesh__slots_free(NULL, BIG, STRIDE, true);
}

Test(slots, a_mapped_ring_is_zero_and_commits_no_page_until_written)
{
	unsigned char *p = cmesh__slots_alloc(BIG, STRIDE);

	cr_assert_not_null(p);
	cr_assert_eq((uintptr_t)p % 4096, 0);
	cr_assert_eq(tu_resident_pages(p, BIG), 0);
	p[5 * 4096] = 1;
	cr_assert_eq(tu_resident_pages(p, BIG), 1);
	cmesh__slots_free(p, BIG, STRIDE, false);
	cr_assert_not(mapped(p, BIG), "a dirty ring must be unmapped");
	cr_assert_eq(cmesh__slots_pooled(), 0);
}

Test(slots, a_clean_ring_is_pooled_and_serves_only_its_geometry)
{
	unsigned char *p = cmesh__slots_alloc(BIG, STRIDE), *q, *r;

	cr_assert_not_null(p);
	p[0] = 1; /* written, then reset by its owner */
	p[0] = 0;
	cr_assert(cmesh__slots_keepable(BIG, STRIDE, 1));
	cmesh__slots_free(p, BIG, STRIDE, true);
	cr_assert_eq(cmesh__slots_pooled(), 1);
	cr_assert(mapped(p, BIG));

	/* Same size, another stride: a fresh mapping. */
	q = cmesh__slots_alloc(BIG, STRIDE * 2);
	cr_assert_not_null(q);
	cr_assert_neq(q, p);
	cr_assert_eq(cmesh__slots_pooled(), 1);
	/* Another size, same stride: a fresh mapping too. */
	r = cmesh__slots_alloc(BIG * 2, STRIDE);
	cr_assert_not_null(r);
	cr_assert_neq(r, p);
	cr_assert_eq(cmesh__slots_pooled(), 1);

	cmesh__slots_free(q, BIG, STRIDE * 2, false);
	cmesh__slots_free(r, BIG * 2, STRIDE, false);
	q = cmesh__slots_alloc(BIG, STRIDE);
	cr_assert_eq(q, p, "the pooled ring is reused");
	cr_assert_eq(cmesh__slots_pooled(), 0);
	cr_assert(all_zero(q, BIG));
	cmesh__slots_free(q, BIG, STRIDE, false);
	cr_assert_not(mapped(p, BIG));
}

Test(slots, the_pool_refuses_rings_with_too_much_written_and_stays_bounded)
{
	void *p[CMESH__SLOTS_POOL_MAX + 1];
	uint64_t per_page = 1; /* slots narrower than a page: a page each */

	/* Written slots are counted as a page each, up to the whole ring. */
	cr_assert(cmesh__slots_keepable(BIG, STRIDE,
					CMESH__SLOTS_KEEP_DIRTY / 4096));
	cr_assert_not(cmesh__slots_keepable(
		BIG, STRIDE, CMESH__SLOTS_KEEP_DIRTY / 4096 + per_page));
	cr_assert_not(cmesh__slots_keepable(BIG, STRIDE, UINT64_MAX));
	/* A small ring written through is within the limit. */
	cr_assert(cmesh__slots_keepable(64 * 1024, STRIDE, 512));

	for (unsigned i = 0; i <= CMESH__SLOTS_POOL_MAX; i++) {
		p[i] = cmesh__slots_alloc(BIG, STRIDE);
		cr_assert_not_null(p[i]);
	}
	for (unsigned i = 0; i < CMESH__SLOTS_POOL_MAX; i++)
		cmesh__slots_free(p[i], BIG, STRIDE, true);
	cr_assert_eq(cmesh__slots_pooled(), CMESH__SLOTS_POOL_MAX);
	cr_assert_not(cmesh__slots_keepable(BIG, STRIDE, 0), "pool is full");
	/* Freed clean into a full pool: unmapped, not kept. */
	cmesh__slots_free(p[CMESH__SLOTS_POOL_MAX], BIG, STRIDE, true);
	cr_assert_eq(cmesh__slots_pooled(), CMESH__SLOTS_POOL_MAX);
	cr_assert_not(mapped(p[CMESH__SLOTS_POOL_MAX], BIG));

	cmesh__slots_trim();
	cr_assert_eq(cmesh__slots_pooled(), 0);
	for (unsigned i = 0; i < CMESH__SLOTS_POOL_MAX; i++)
		cr_assert_not(mapped(p[i], BIG), "trim unmaps ring %u", i);
}

/* ---- through the channel API ---------------------------------------- */

static void stream(cmesh_sender *tx, cmesh_receiver *rx, uint64_t from,
		   uint64_t n)
{
	struct item m, r;

	for (uint64_t i = 0; i < n; i++) {
		memset(&m, (int)(i & 0xff), sizeof(m));
		m.seq = from + i;
		cr_assert_eq(cmesh_sender_send(tx, &m, NULL, 0), 0);
		cr_assert_eq(cmesh_receiver_try_recv(rx, &r, NULL, 0), 0);
		cr_assert_eq(r.seq, from + i);
		cr_assert_eq(memcmp(&r, &m, sizeof(m)), 0);
	}
}

/*
 * A ring used for `used` messages, freed, then made again: the second
 * channel gets the first one's storage and must look empty at its start
 * and again at position k = min(used, capacity) - 1: the old ring's
 * position k (never overwritten when used < 2 capacities) left seq k + 1,
 * which is what a message there would carry. Then three laps work.
 */
static void recycled_ring_starts_empty(uint32_t ring_size, uint64_t used)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_receiver_stats st = { .size = sizeof(st) };
	struct item r;
	unsigned pooled;
	uint64_t k;

	o.ring_size = ring_size;
	cr_assert_eq(cmesh_channel_new(&item_type, &o, &tx, &rx), 0);
	cr_assert_eq(cmesh_receiver_stats_get(rx, &st), 0);
	cr_assert_lt(used, 2 * st.ring_slots);
	k = (used < st.ring_slots ? used : st.ring_slots) - 1;
	stream(tx, rx, 1, used);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	pooled = cmesh__slots_pooled();
	cr_assert_eq(pooled, 1, "the ring went to the pool");

	cr_assert_eq(cmesh_channel_new(&item_type, &o, &tx, &rx), 0);
	cr_assert_eq(cmesh__slots_pooled(), 0, "the ring came back");
	cr_assert_eq(cmesh_receiver_try_recv(rx, &r, NULL, 0), -EAGAIN);
	stream(tx, rx, 1, k);
	cr_assert_eq(cmesh_receiver_try_recv(rx, &r, NULL, 0), -EAGAIN);
	/* Capacity is at most ring_size / 128 slots; 3 laps at least. */
	stream(tx, rx, 1000, 3 * (ring_size / 128));
	cr_assert_eq(cmesh_receiver_try_recv(rx, &r, NULL, 0), -EAGAIN);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

Test(slots, a_recycled_ring_that_was_used_part_of_a_lap_starts_empty)
{
	/* 20 scattered slots: 20 pages at most, within what the pool keeps. */
	recycled_ring_starts_empty(1u << 20, 20);
}

Test(slots, a_recycled_ring_that_was_used_past_a_lap_starts_empty)
{
	recycled_ring_starts_empty(64u * 1024, 300); /* 256 slots */
}

Test(slots, idle_default_channels_commit_no_ring_memory)
{
	enum {
		N = 512
	};
	static cmesh_sender *tx[N];
	static cmesh_receiver *rx[N];
	long before, grown;

	before = tu_status_kib("VmRSS");
	for (int i = 0; i < N; i++)
		cr_assert_eq(
			cmesh_channel_new(&item_type, NULL, &tx[i], &rx[i]), 0);
	grown = tu_status_kib("VmRSS") - before;
	/* A default ring is 64 KiB; the handles and queue are ~1 KiB. */
	cr_assert_lt(grown, N * 8, "%d idle channels grew VmRSS by %ld KiB", N,
		     grown);
	for (int i = 0; i < N; i++) {
		cmesh_sender_free(tx[i]);
		cmesh_receiver_free(rx[i]);
	}
	cr_assert_leq(cmesh__slots_pooled(), CMESH__SLOTS_POOL_MAX);
}

Test(slots, cmesh_channel_trim_unmaps_the_rings_of_freed_channels)
{
	enum {
		N = 4
	};
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *tx[N];
	cmesh_receiver *rx[N];
	int maps;

	cmesh_channel_trim(); /* nothing kept: a no-op */
	o.ring_size = 1u << 20;
	maps = tu_map_count();
	for (int i = 0; i < N; i++) {
		cr_assert_eq(cmesh_channel_new(&item_type, &o, &tx[i], &rx[i]),
			     0);
		stream(tx[i], rx[i], 1, 3);
	}
	for (int i = 0; i < N; i++) {
		cmesh_sender_free(tx[i]);
		cmesh_receiver_free(rx[i]);
	}
	cr_assert_eq(cmesh__slots_pooled(), N);
	cmesh_channel_trim();
	cr_assert_eq(cmesh__slots_pooled(), 0);
	/* tu_map_count() trims too: count the mappings by hand. */
	if (!tu_sanitized()) /* a sanitizer's allocator maps regions */
		cr_assert_eq(count_maps(), maps);
}

/* ---- fork ------------------------------------------------------------- */

static atomic_bool churn_stop;

static void *churn(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&churn_stop, memory_order_relaxed)) {
		void *p = cmesh__slots_alloc(BIG, STRIDE);

		if (p)
			cmesh__slots_free(p, BIG, STRIDE, true);
	}
	return NULL;
}

Test(slots, a_child_forked_while_another_thread_uses_the_pool_can_use_it)
{
	pthread_t t;
	int forks = (int)tu_stress(50, 10);

	cr_assert_eq(pthread_create(&t, NULL, churn, NULL), 0);
	for (int i = 0; i < forks; i++) {
		int status;
		pid_t pid = fork();

		cr_assert_geq(pid, 0);
		if (pid == 0) {
			void *p;

			alarm(5); /* a pool lock held across fork: killed */
			p = cmesh__slots_alloc(BIG, STRIDE);
			if (!p)
				_exit(2);
			cmesh__slots_free(p, BIG, STRIDE, true);
			_exit(cmesh__slots_pooled() >= 1 ? 0 : 3);
		}
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "child %d: status %#x", i, status);
	}
	atomic_store(&churn_stop, true);
	pthread_join(t, NULL);
	cmesh__slots_trim();
}

static void *trim_loop(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&churn_stop, memory_order_relaxed))
		cmesh_channel_trim();
	return NULL;
}

/*
 * cmesh_channel_trim() before any ring was ever pooled, in one thread,
 * while another forks: the pool's lock is taken around fork from the
 * first call on, so no child inherits it locked (each makes and frees a
 * default channel under a 5 s alarm).
 */
Test(slots, a_child_forked_while_another_thread_trims_can_make_channels)
{
	pthread_t t;
	int forks = (int)tu_stress(50, 10);

	cr_assert_eq(cmesh__slots_pooled(), 0);
	cr_assert_eq(pthread_create(&t, NULL, trim_loop, NULL), 0);
	for (int i = 0; i < forks; i++) {
		int status;
		pid_t pid = fork();

		cr_assert_geq(pid, 0);
		if (pid == 0) {
			cmesh_sender *tx;
			cmesh_receiver *rx;

			alarm(5); /* a lock held across fork: killed */
			if (cmesh_channel_new(&item_type, NULL, &tx, &rx))
				_exit(2);
			cmesh_sender_free(tx);
			cmesh_receiver_free(rx);
			_exit(0);
		}
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "child %d: status %#x", i, status);
	}
	atomic_store(&churn_stop, true);
	pthread_join(t, NULL);
}
