/* SPDX-License-Identifier: MIT */
/*
 * reg.h - the process's registry of live links, for cmesh_stats_dump()
 * (node.c). A leaf: it knows its entries only as owners' pointers.
 *
 * link.c adds a link once a join succeeds and deletes it when its last
 * reference goes (an orphan still delivering a backlog is not listed).
 * Walks hold the registry's lock, a leaf lock (nothing else is taken
 * under it): a listed owner is not deleted during a walk, so a walker may
 * take a reference on it (cmesh__link_tryget). Safe across fork (the lock
 * is taken around it; the child's list holds the parent's links as they
 * were copied).
 */
#ifndef CMESH_REG_H
#define CMESH_REG_H

/* Embedded in the owner; all zero: not listed. */
struct cmesh__reg_entry {
	struct cmesh__reg_entry *next, **pprev;
	void *owner;
};

void cmesh__reg_add(struct cmesh__reg_entry *e, void *owner);
/* No-op for an entry that was never added. */
void cmesh__reg_del(struct cmesh__reg_entry *e);

/*
 * Calls fn(owner, arg) for each listed entry, oldest first, until one
 * returns non-zero (returned); 0 after the last. `fn` must not add or
 * delete, nor take any lock but its owner's atomics.
 */
int cmesh__reg_each(int (*fn)(void *owner, void *arg), void *arg);

#endif
