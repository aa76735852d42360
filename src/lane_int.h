/* SPDX-License-Identifier: MIT */
/*
 * lane_int.h - what the files of the lane module share and no other module
 * sees (lane.h is the lane's interface to them): lane.c (the lane, its end
 * and control records), lane_send.c (the send of a message), lane_spill.c
 * (the spill backlog and its flush), lane_rx.c (the consumer's reading)
 * and lane_rx_close.c (the consumer's end).
 */
#ifndef CMESH_LANE_INT_H
#define CMESH_LANE_INT_H

#include "lane.h"

#include "proto.h"
#include "shmring.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- lane_send.c, for lane.c and lane_spill.c ---- */

/* Ports whose message will not be sent: their lanes, their contexts. */
void cmesh__lane_ports_unsent(const struct cmesh__port_out *ports, uint32_t n,
			      bool failed);

/*
 * Claims a record's slots, sends its ATTACH (if any) and publishes it; the
 * caller holds `lock`. -EAGAIN (ring or socket full), -EPIPE or
 * -ECONNRESET (ports in the record, its receiver gone): nothing published
 * but maybe a filler.
 */
int cmesh__lane_publish(struct cmesh__lane *ln, uint32_t kind,
			const struct cmesh__iov *iov, uint32_t niov,
			const int *fds, uint32_t nfds,
			const struct cmesh__port_out *ports, uint32_t nports,
			unsigned char *seq_at);

/* May an ATTACH that met a full socket be tried again (`lock` held)? */
bool cmesh__lane_attach_may_go(struct cmesh__lane *ln);

/*
 * Publishes a record, or spills it when the ring is full (or a spill is
 * already queued: order). Takes `fds` in every case.
 */
int cmesh__lane_enqueue(struct cmesh__lane *ln, uint32_t kind,
			const struct cmesh__iov *iov, uint32_t niov,
			const int *fds, uint32_t nfds,
			const struct cmesh__port_out *ports, uint32_t nports,
			struct cmesh_rec_msg *h);

/* ---- lane_spill.c, for lane.c and lane_send.c ---- */

/*
 * Queues a record behind the ring, in order; the caller holds `lock`.
 * -ENOBUFS past max_backlog, -ENOMEM: nothing queued, the fds the
 * caller's.
 */
int cmesh__lane_spill(struct cmesh__lane *ln, uint32_t kind,
		      const struct cmesh__iov *iov, uint32_t niov,
		      const int *fds, uint32_t nfds,
		      const struct cmesh__port_out *ports, uint32_t nports);

/* Moves spilled records into the ring; the caller holds `lock`. */
int cmesh__lane_flush_locked(struct cmesh__lane *ln);

/*
 * At destroy (the link is freed with every lane): frees the backlog and
 * closes its fds; none of its ports is dropped.
 */
void cmesh__lane_spill_free(struct cmesh__lane *ln);

/* ---- lane_rx.c, for lane_rx_close.c ---- */

/*
 * Makes the next record pending, as a receive does (lane_rx.c fetch(),
 * which its receives inline): 0, CMESH__LANE_MARK, -EAGAIN, the end
 * (-EPIPE, -ECONNRESET) or a failure.
 */
int cmesh__lane_fetch(struct cmesh__lane *ln);

/*
 * The pending PLAIN record left the ring: if it was a LAST, the lane is
 * closed after it (the producer went idle: CMESH_REC_LAST).
 */
static inline void cmesh__lane_took_plain(struct cmesh__lane *ln)
{
	ln->pending = -1;
	if (likely(!ln->pending_last))
		return;
	ln->pending_last = false;
	ln->closed = true;
	ln->close_err = -EPIPE;
	ln->peer_idle = true;
}

#endif
