/* SPDX-License-Identifier: MIT */
/*
 * idmap.c - ids to pointers over ck_ht in direct mode: the key is id + 1
 * (ck_ht reserves key 0), the value the pointer.
 */
#include "idmap.h"

#include <errno.h>
#include <stdlib.h>

static void *ht_malloc(size_t n)
{
	return malloc(n);
}

static void *ht_realloc(void *p, size_t old, size_t n, bool defer)
{
	(void)old;
	(void)defer;
	return realloc(p, n);
}

static void ht_free(void *p, size_t n, bool defer)
{
	(void)n;
	(void)defer;
	free(p);
}

static struct ck_malloc ht_alloc = { ht_malloc, ht_realloc, ht_free };

int cmesh__idmap_init(struct cmesh__idmap *m, uint64_t seed)
{
	m->init = ck_ht_init(&m->ht, CK_HT_MODE_DIRECT | CK_HT_WORKLOAD_DELETE,
			     NULL, &ht_alloc, 64, seed);
	return m->init ? 0 : -ENOMEM;
}

void cmesh__idmap_destroy(struct cmesh__idmap *m)
{
	if (m->init)
		ck_ht_destroy(&m->ht);
	m->init = false;
}

void *cmesh__idmap_get(struct cmesh__idmap *m, uint32_t id)
{
	ck_ht_entry_t e;
	ck_ht_hash_t h;

	if (!m->init)
		return NULL;
	ck_ht_hash_direct(&h, &m->ht, (uintptr_t)id + 1);
	ck_ht_entry_key_set_direct(&e, (uintptr_t)id + 1);
	if (!ck_ht_get_spmc(&m->ht, h, &e))
		return NULL;
	return (void *)ck_ht_entry_value_direct(&e);
}

int cmesh__idmap_put(struct cmesh__idmap *m, uint32_t id, void *p)
{
	ck_ht_entry_t e;
	ck_ht_hash_t h;

	ck_ht_hash_direct(&h, &m->ht, (uintptr_t)id + 1);
	ck_ht_entry_set_direct(&e, h, (uintptr_t)id + 1, (uintptr_t)p);
	return ck_ht_put_spmc(&m->ht, h, &e) ? 0 : -ENOMEM;
}

uint64_t cmesh__idmap_count(struct cmesh__idmap *m)
{
	return m->init ? (uint64_t)ck_ht_count(&m->ht) : 0;
}

void cmesh__idmap_del(struct cmesh__idmap *m, uint32_t id)
{
	ck_ht_entry_t e;
	ck_ht_hash_t h;

	ck_ht_hash_direct(&h, &m->ht, (uintptr_t)id + 1);
	ck_ht_entry_key_set_direct(&e, (uintptr_t)id + 1);
	ck_ht_remove_spmc(&m->ht, h, &e);
}

void cmesh__idmap_each(struct cmesh__idmap *m,
		       void (*fn)(void *arg, uint32_t id, void *p), void *arg)
{
	ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
	ck_ht_entry_t *e;

	if (!m->init)
		return;
	while (ck_ht_next(&m->ht, &it, &e))
		fn(arg, (uint32_t)(ck_ht_entry_key_direct(e) - 1),
		   (void *)ck_ht_entry_value_direct(e));
}
