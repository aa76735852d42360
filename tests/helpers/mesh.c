/* SPDX-License-Identifier: MIT */
/*
 * mesh.c - processes of a test joined pairwise (mesh.h).
 */
#include "mesh.h"

#include "topo.h"

#include <criterion/criterion.h>

#include <sys/socket.h>
#include <unistd.h>

static bool linked(const struct tu_mesh *m, int i, int j)
{
	return !(i == m->apart_i && j == m->apart_j);
}

void tu_mesh_sockets(const struct tu_mesh *m)
{
	for (int i = 0; i < m->n; i++)
		for (int j = i + 1; j < m->n; j++) {
			m->sp[i][j][0] = m->sp[i][j][1] = -1;
			if (linked(m, i, j))
				cr_assert_eq(socketpair(AF_UNIX,
							SOCK_SEQPACKET |
								SOCK_CLOEXEC,
							0, m->sp[i][j]),
					     0);
		}
}

int tu_mesh_join(const struct tu_mesh *m)
{
	for (int i = 0; i < m->n; i++)
		for (int j = i + 1; j < m->n; j++) {
			int other, end = i == m->me ? 0 : 1, sock, r;

			if ((i != m->me && j != m->me) || !linked(m, i, j))
				continue;
			other = i == m->me ? j : i;
			sock = m->sp[i][j][end];
			m->sp[i][j][end] = -1;
			r = cmesh_node_join_socket(sock, m->type, m->type, NULL,
						   &m->node[other],
						   &m->to[other],
						   &m->from[other]);
			if (r)
				return r;
		}
	return 0;
}

void tu_mesh_close_others(const struct tu_mesh *m)
{
	for (int i = 0; i < m->n; i++)
		for (int j = i + 1; j < m->n; j++)
			for (int k = 0; k < 2; k++)
				if (m->sp[i][j][k] >= 0 &&
				    !((k == 0 && i == m->me) ||
				      (k == 1 && j == m->me))) {
					close(m->sp[i][j][k]);
					m->sp[i][j][k] = -1;
				}
}

void tu_mesh_leave(const struct tu_mesh *m)
{
	for (int k = 0; k < m->n; k++) {
		if (k == m->me)
			continue;
		cmesh_sender_free(m->to[k]);
		cmesh_receiver_free(m->from[k]);
		m->to[k] = NULL;
		m->from[k] = NULL;
	}
	for (int k = 0; k < m->n; k++)
		if (k != m->me && m->node[k]) {
			cmesh_node_flush(m->node[k], topo_deadline());
			cmesh_node_free(m->node[k]);
			m->node[k] = NULL;
		}
}
