/* SPDX-License-Identifier: MIT */
/*
 * link_reg.h - the process's live links, for cmesh_stats_dump().
 *
 * A link is listed from a successful cmesh__link_new() until its last
 * reference goes (an orphan still delivering a backlog is no longer
 * listed). Walks hold the registry's lock, so a listed link is never
 * destroyed during a walk. Safe across fork (the lock is taken around it;
 * the child's list holds the parent's links as they were copied).
 */
#ifndef CMESH_LINK_REG_H
#define CMESH_LINK_REG_H

struct cmesh__link;

void cmesh__link_reg_add(struct cmesh__link *l);
/* No-op for a link that was never added. Before it is torn down. */
void cmesh__link_reg_del(struct cmesh__link *l);

/*
 * Calls fn(l, arg) for each listed link, oldest first, until one returns
 * non-zero (returned); 0 after the last. `fn` must not add or delete.
 */
int cmesh__link_reg_each(int (*fn)(struct cmesh__link *l, void *arg),
			 void *arg);

#endif
