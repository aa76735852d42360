/* SPDX-License-Identifier: MIT */
/*
 * link_wake.c - how a waitset hears of lanes that endpoints created.
 *
 * Such a lane has no wake fds of its own (a link's fds do not grow with
 * its channels). A waitset with members on a link opens one wake socket
 * there instead (cmesh__link_wake_open): a SOCK_DGRAM pair whose one end
 * the waitset polls and whose other end goes to the peer in a WAKESOCK
 * message with an id; we keep a copy of that end for the link thread's
 * own wakes (failures, attachments). An armed lane writes the id into its
 * wake line with the SOCK bit; the peer, producing, sends a datagram on
 * the socket of that id (cmesh__link_wake_peer). The waitset closes it
 * with WAKECLOSE.
 *
 * Trust: the peer chooses nothing we use but the ids in its wake lines,
 * which only pick among the sockets it gave us (an unknown id wakes
 * nobody); the ends it gives us must be unix datagram sockets, at most
 * MAX_PEER_WAKES of them, each id once (else -EPROTO). We only send on
 * them with MSG_DONTWAIT.
 *
 * A WAKESOCK may arrive after its lanes were armed: the link thread then
 * wakes every out lane armed with its id once (nothing is missed).
 * wake_lock is a leaf: nothing else is taken under it.
 */
#include "link_int.h"

#include "ctl.h"

#include "proto.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Wake sockets a peer may give one link (one per waitset it runs). */
#define MAX_PEER_WAKES 256u

int cmesh__wakes_init(struct cmesh__link *l)
{
	if (pthread_mutex_init(&l->wake_lock, NULL))
		return -ENOMEM;
	l->wake_lock_init = true;
	l->next_wake_id = 1;
	return 0;
}

static void close_all(struct wake_sock *v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		close(v[i].fd);
	free(v);
}

void cmesh__wakes_destroy(struct cmesh__link *l)
{
	if (!l->wake_lock_init)
		return;
	close_all(l->wown, l->nwown);
	close_all(l->wpeer, l->nwpeer);
	l->wown = l->wpeer = NULL;
	l->nwown = l->nwpeer = 0;
	pthread_mutex_destroy(&l->wake_lock);
	l->wake_lock_init = false;
}

/* wake_lock held. */
static int find(const struct wake_sock *v, uint32_t n, uint32_t id)
{
	for (uint32_t i = 0; i < n; i++)
		if (v[i].id == id)
			return (int)i;
	return -1;
}

/* Appends {id, fd} (wake_lock held): 0 or -ENOMEM. */
static int push(struct wake_sock **v, uint32_t *n, uint32_t *cap, uint32_t id,
		int fd)
{
	if (*n == *cap) {
		uint32_t c = *cap ? *cap * 2 : 4;
		struct wake_sock *w = realloc(*v, c * sizeof(*w));

		if (!w)
			return -ENOMEM;
		*v = w;
		*cap = c;
	}
	(*v)[(*n)++] = (struct wake_sock){ id, fd };
	return 0;
}

static void send_id(struct cmesh__link *l, uint16_t type, uint32_t id, int fd)
{
	struct cmesh_ctl_end m = { 0 };

	cmesh__ctl_hdr_fill(&m.hdr, type, sizeof(m));
	m.id = id;
	cmesh__lanes_ctl_send(l, &m, sizeof(m), fd);
}

int cmesh__link_wake_open(struct cmesh__link *l, int *out_fd, uint32_t *out_id)
{
	int pair[2], self, r;
	uint32_t id;

	r = cmesh__ctl_wake_pair(pair);
	if (r)
		return r;
	self = fcntl(pair[1], F_DUPFD_CLOEXEC, 0);
	if (self < 0) {
		r = -errno;
		goto out_close;
	}
	pthread_mutex_lock(&l->wake_lock);
	id = l->next_wake_id++;
	r = push(&l->wown, &l->nwown, &l->capwown, id, self);
	pthread_mutex_unlock(&l->wake_lock);
	if (r) {
		close(self);
		goto out_close;
	}
	/* The peer's end goes with the message (taken by the send). */
	send_id(l, CMESH_CTL_WAKESOCK, id, pair[1]);
	*out_fd = pair[0];
	*out_id = id;
	return 0;

out_close:
	close(pair[0]);
	close(pair[1]);
	return r;
}

void cmesh__link_wake_close(struct cmesh__link *l, uint32_t id)
{
	int i, fd = -1;

	pthread_mutex_lock(&l->wake_lock);
	i = find(l->wown, l->nwown, id);
	if (i >= 0) {
		fd = l->wown[i].fd;
		l->wown[i] = l->wown[--l->nwown];
	}
	pthread_mutex_unlock(&l->wake_lock);
	if (fd >= 0)
		close(fd);
	if (i >= 0 && !cmesh__link_failed(l))
		send_id(l, CMESH_CTL_WAKECLOSE, id, -1);
}

/* Sends one wake on the socket `id` of table v (wake_lock taken here). */
static void wake_in(struct cmesh__link *l, bool own, uint32_t id)
{
	int i;

	pthread_mutex_lock(&l->wake_lock);
	i = own ? find(l->wown, l->nwown, id) : find(l->wpeer, l->nwpeer, id);
	if (i >= 0)
		cmesh__ctl_wake_send(own ? l->wown[i].fd : l->wpeer[i].fd);
	pthread_mutex_unlock(&l->wake_lock);
}

void cmesh__link_wake_self(struct cmesh__link *l, uint32_t id)
{
	wake_in(l, true, id);
}

void cmesh__link_wake_peer(struct cmesh__link *l, uint32_t id)
{
	wake_in(l, false, id);
}

/*
 * The peer's WAKESOCK arrived: an out lane whose consumer armed it with
 * this id before may have published meanwhile; wake once (att_lock taken).
 */
static void catch_up(struct cmesh__link *l, uint32_t id)
{
	bool any = false;

	pthread_mutex_lock(&l->att_lock);
	for (struct cmesh__lane *ln = l->dyn; ln && !any; ln = ln->next) {
		if (!ln->is_out || !cmesh__lane_bound(ln))
			continue;
		any = (atomic_load_explicit(&ln->peer_wake->sleeping,
					    memory_order_acquire) &
		       CMESH_SHM_WAKE_SOCK) &&
		      atomic_load_explicit(&ln->peer_wake->wake_id,
					   memory_order_relaxed) == id;
	}
	pthread_mutex_unlock(&l->att_lock);
	if (any)
		cmesh__link_wake_peer(l, id);
}

void cmesh__wakes_peer_drop(struct cmesh__link *l)
{
	struct wake_sock *v;
	uint32_t n;

	pthread_mutex_lock(&l->wake_lock);
	v = l->wpeer;
	n = l->nwpeer;
	l->wpeer = NULL;
	l->nwpeer = l->capwpeer = 0;
	pthread_mutex_unlock(&l->wake_lock);
	close_all(v, n);
}

int cmesh__wakes_on_ctl(struct cmesh__link *l, uint16_t type,
			const unsigned char *buf, int len, const int *fds,
			uint32_t nfds)
{
	struct cmesh_ctl_end m;
	int i, r = 0, fd = -1;

	if (len != (int)sizeof(m))
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	if (m.hdr.len != sizeof(m) || m.reserved ||
	    nfds != (type == CMESH_CTL_WAKESOCK ? 1u : 0u))
		return -EPROTO;
	if (type == CMESH_CTL_WAKESOCK && !cmesh__ctl_is_wake_socket(fds[0]))
		return -EPROTO;
	pthread_mutex_lock(&l->wake_lock);
	i = find(l->wpeer, l->nwpeer, m.id);
	if (type == CMESH_CTL_WAKESOCK) {
		if (i >= 0 || l->nwpeer >= MAX_PEER_WAKES)
			r = -EPROTO;
		else if (cmesh__link_failed(l))
			fd = fds[0]; /* nobody to wake: closed below */
		else
			r = push(&l->wpeer, &l->nwpeer, &l->capwpeer, m.id,
				 fds[0]);
	} else if (i < 0) {
		/* Closing what it never gave (or what its failure dropped). */
		r = cmesh__link_failed(l) ? 0 : -EPROTO;
	} else {
		fd = l->wpeer[i].fd;
		l->wpeer[i] = l->wpeer[--l->nwpeer];
	}
	pthread_mutex_unlock(&l->wake_lock);
	if (fd >= 0)
		close(fd);
	if (!r && type == CMESH_CTL_WAKESOCK && fd < 0)
		catch_up(l, m.id);
	return r;
}
