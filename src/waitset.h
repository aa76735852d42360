/* SPDX-License-Identifier: MIT */
/*
 * waitset.h - what queues need from the waitset.
 */
#ifndef CMESH_WAITSET_INTERNAL_H
#define CMESH_WAITSET_INTERNAL_H

#include <cmesh/waitset.h>

struct cmesh__queue;

/* Makes the waitset's fd readable. Called by a producer under q->lock. */
void cmesh__waitset_signal(struct cmesh_waitset *ws);

/* Removes queue `q` from its waitset, if any (its receiver is leaving). */
void cmesh__waitset_leave(struct cmesh__queue *q);

#endif
