/* SPDX-License-Identifier: MIT */
/*
 * node.h - internals of cmesh_node: for tests, and for listen.c, whose
 * accepted and connected sockets join as node.c's do.
 */
#ifndef CMESH_NODE_INTERNAL_H
#define CMESH_NODE_INTERNAL_H

#include <cmesh/node.h>

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct cmesh__link;

/* The link behind a node handle (borrowed). */
struct cmesh__link *cmesh__node_link(cmesh_node *node);

struct cmesh__link_opts;
struct cmesh__queue_opts;

/*
 * The caller's options, checked, as the link's and the queues'; the
 * context in *ctx (NULL: none): an ended one fails here. lo->deadline is
 * the handshake's own limit (fold the context's in where you wait).
 */
int cmesh__node_opts(const cmesh_node_opts *user, uint32_t flags_ok,
		     struct cmesh__link_opts *lo, struct cmesh__queue_opts *qo,
		     const cmesh_ctx **ctx);

/* The earlier of `deadline` and the context's (NULL: none). */
int64_t cmesh__node_ctx_deadline(const cmesh_ctx *ctx, int64_t deadline);

/*
 * cmesh_node_join_socket() (takes `sock` in every case), with the peer's
 * pid when the caller forked it (`child`), or `cred_is_peer` when the
 * socket's SO_PEERCRED names the peer (see node.c).
 */
int cmesh__node_join(int sock, const cmesh_type *out_type,
		     const cmesh_type *in_type, const cmesh_node_opts *opts,
		     pid_t child, bool cred_is_peer, cmesh_node **out_node,
		     cmesh_sender **out_tx, cmesh_receiver **out_rx);

#endif
