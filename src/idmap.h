/* SPDX-License-Identifier: MIT */
/*
 * idmap.h - a map from 32-bit ids to pointers (Concurrency Kit's ck_ht,
 * direct keys). The caller serializes every call on one map.
 */
#ifndef CMESH_IDMAP_H
#define CMESH_IDMAP_H

#include <ck_ht.h>

#include <stdbool.h>
#include <stdint.h>

struct cmesh__idmap {
	ck_ht_t ht;
	bool init;
};

/* 0 or -ENOMEM. `seed` varies the hash (e.g. per link). */
int cmesh__idmap_init(struct cmesh__idmap *m, uint64_t seed);

/* Frees the map (not what its values point to). Safe if never set up. */
void cmesh__idmap_destroy(struct cmesh__idmap *m);

/* The value of `id`, or NULL (also for a map not set up). */
void *cmesh__idmap_get(struct cmesh__idmap *m, uint32_t id);

/* Sets `id` to `p` (non-NULL). 0 or -ENOMEM. */
int cmesh__idmap_put(struct cmesh__idmap *m, uint32_t id, void *p);

/* Entries in the map (0 for a map not set up). */
uint64_t cmesh__idmap_count(struct cmesh__idmap *m);

/* Removes `id` (nothing if absent). */
void cmesh__idmap_del(struct cmesh__idmap *m, uint32_t id);

/* Calls fn(arg, id, value) for each entry; fn must not change the map. */
void cmesh__idmap_each(struct cmesh__idmap *m,
		       void (*fn)(void *arg, uint32_t id, void *p), void *arg);

#endif
