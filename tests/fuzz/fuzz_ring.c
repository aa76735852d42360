/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ring.c - libFuzzer harness: the ring reader (src/shmring.h) over a
 * ring area (slots, then bulk lines) whose bytes are the input, as a
 * hostile producer would leave them. The area ends the producer's arena, which the consumer maps
 * read-only with a guard page after it: a read past the area faults.
 * Every record the reader hands out must be within the record limit and
 * of a kind the layers above may use; nothing may crash or hang.
 */
#include "arena.h"
#include "ring.h"
#include "shmring.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CAP 4096u	/* 64 slots */
#define AREA (2u * CAP) /* cmesh_shm_ring_area(CAP) */
#define ARENA (64u * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cmesh__arena *prod, *prod_ro, *cons;
static uint64_t data_off, head_off;
static unsigned char buf[CAP];

static void setup(void)
{
	const struct cmesh__arena_layout *l;
	int fd;

	if (cmesh_shm_ring_area(CAP) != AREA ||
	    cmesh__arena_create(ARENA, "fuzz-prod", &prod) ||
	    cmesh__arena_create(ARENA, "fuzz-cons", &cons))
		abort();
	l = cmesh__arena_layout(prod);
	data_off = l->data_off + l->data_len - AREA; /* ends the arena */
	head_off = cmesh__arena_layout(cons)->ctl_off;
	fd = dup(cmesh__arena_fd(prod));
	if (fd < 0 || cmesh__arena_map_peer(fd, ARENA, &prod_ro))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cmesh__shmring_consumer c;
	unsigned char *area;
	uint32_t kind, limit = cmesh__shmring_record_limit(CAP);
	uint8_t mode = size ? data[0] : 0;

	if (!prod)
		setup();
	/* The producer's area: the input (after its mode byte), zeroes. */
	area = (unsigned char *)cmesh__arena_base(prod) + data_off;
	memset(area, 0, AREA);
	if (size > 1)
		memcpy(area, data + 1, size - 1 < AREA ? size - 1 : AREA);
	if (cmesh__shmring_consumer_init(&c, cons, head_off) ||
	    cmesh__shmring_consumer_attach(&c, prod_ro, data_off,
					   cmesh__arena_layout(prod)->ctl_off,
					   CAP))
		abort();
	for (int i = 0; i < 2 * (int)(CAP / CMESH_SHM_SLOT_SIZE); i++) {
		int r;

		if (mode & 1) {
			/* Whole records. */
			r = cmesh__shmring_pop(&c, &kind, buf, sizeof(buf));
		} else {
			/* In steps: peek, read a part chosen by the input. */
			r = cmesh__shmring_peek(&c, &kind);
			if (r >= 0) {
				uint32_t off = (uint32_t)r ? mode % r : 0;

				cmesh__shmring_read(&c, off, buf,
						    (uint32_t)r - off);
				cmesh__shmring_consume(&c);
			}
		}
		if (r < 0)
			break;
		if ((uint32_t)r > limit || kind < CMESH_SHM_REC_KIND_MIN ||
		    kind > CMESH_SHM_REC_KIND_MAX)
			abort(); /* the reader let a bad record through */
	}
	return 0;
}
