/* SPDX-License-Identifier: MIT */
/*
 * mesh.h - the test processes of a multi-process test joined pairwise
 * (test_moves.c, test_stress_moves*.c): one SOCK_SEQPACKET pair per pair
 * of processes made before fork, sp[i][j] with i < j (i keeps [0], j
 * [1]); each process joins every pair it is in, in one global order (no
 * two wait on each other), with one channel type both ways.
 */
#ifndef CMESH_TEST_MESH_H
#define CMESH_TEST_MESH_H

#include <cmesh.h>

#include <stdbool.h>

#define TU_MESH_MAX 8

/* One process's view: the caller's arrays, borrowed. */
struct tu_mesh {
	int n;		      /* processes */
	int me;		      /* this one */
	int apart_i, apart_j; /* a pair not linked (i < j), or -1 */
	int (*sp)[TU_MESH_MAX][2];
	const cmesh_type *type; /* each link's first channels, both ways */
	cmesh_node **node;
	cmesh_sender **to;
	cmesh_receiver **from;
};

/*
 * Before fork: a socketpair in sp for every linked pair i < j (asserts),
 * -1 for the unlinked one.
 */
void tu_mesh_sockets(const struct tu_mesh *m);

/* Joins every link of m->me's: 0, or the first join's error. */
int tu_mesh_join(const struct tu_mesh *m);

/* Closes every socket end in sp that is not m->me's (after fork). */
void tu_mesh_close_others(const struct tu_mesh *m);

/* Frees m->me's first channels and nodes (each node flushed first). */
void tu_mesh_leave(const struct tu_mesh *m);

#endif
