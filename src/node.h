/* SPDX-License-Identifier: MIT */
/*
 * node.h - internals of cmesh_node for tests.
 */
#ifndef CMESH_NODE_INTERNAL_H
#define CMESH_NODE_INTERNAL_H

#include <cmesh/node.h>

struct cmesh__link;

/* The link behind a node handle (borrowed). */
struct cmesh__link *cmesh__node_link(cmesh_node *node);

#endif
