/* SPDX-License-Identifier: MIT */
/*
 * lane_int.h - what the files of the lane module share and no other module
 * sees (lane.h is the lane's interface to them): lane_rx.c (the consumer's
 * reading) and lane_rx_close.c (the consumer's end).
 */
#ifndef CMESH_LANE_INT_H
#define CMESH_LANE_INT_H

#include "lane.h"

#include "proto.h"
#include "shmring.h"

#include <stdbool.h>
#include <stdint.h>

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
