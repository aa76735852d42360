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

/*
 * If queue `from` is a member of a waitset: receiver `to` joins it under
 * from's key, then `from` leaves it (one member takes another's place: a
 * pipe reader's cut chunk read, its data channel next). 0 (also when
 * `from` is in none), or cmesh_waitset_add_receiver()'s error (`from`
 * stays).
 */
int cmesh__waitset_hand_over(struct cmesh__queue *from,
			     struct cmesh_receiver *to);

#endif
