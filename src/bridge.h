/* SPDX-License-Identifier: MIT */
/*
 * bridge.h - forwarders: everything one receiver takes goes, in order, to
 * one sender. cmesh_bridge() is the public form; the port layer makes one
 * when an endpoint whose own peer is in another process moves again.
 */
#ifndef CMESH_BRIDGE_H
#define CMESH_BRIDGE_H

#include <stdint.h>

/*
 * Forwards what `rx` (a handle of field kind `rx_kind`: a receiver or a
 * oneshot receiver) receives into `tx` (kind `tx_kind`: a sender or a
 * oneshot sender) of the same type, on the process's forwarder thread,
 * until either side ends (see cmesh_bridge()). Takes both handles on
 * success; on failure (-ENOMEM, -EAGAIN: no thread) takes neither.
 */
int cmesh__bridge_start(uint32_t rx_kind, void *rx, uint32_t tx_kind, void *tx);

/*
 * The same; when the forwarder ends, at_end(arg) runs on its thread after
 * everything it forwarded was sent and before `tx` is freed or failed
 * (it frees arg). On failure it never runs: arg is the caller's.
 */
int cmesh__bridge_start_then(uint32_t rx_kind, void *rx, uint32_t tx_kind,
			     void *tx, void (*at_end)(void *arg), void *arg);

/*
 * A split receiver's forwarder (cmesh__queue_move_rx_split()): `rx`, a
 * channel receiver whose local senders write its lane already, forwards
 * what its lanes bring into `tx`, a sender of the same queue (so to that
 * lane), until they have all ended: then at_end(arg) runs and the
 * receiving side goes to the lane (cmesh__queue_split_end()), `rx`'s
 * shell and `tx` are freed. Its other ends as above, but a lane's
 * failure fails the receiver's lane at once (cmesh__queue_fail_out()).
 * Takes `rx`, `tx` and `arg` on success only.
 */
int cmesh__bridge_start_split(void *rx, void *tx, void (*at_end)(void *arg),
			      void *arg);

/* The forwarders the process runs now (tests: did a move leave a hop?). */
unsigned cmesh__bridge_count(void);

struct cmesh__queue;

/*
 * Calls fn with each forwarder's receiving and sending queue and when a
 * held one is looked at next (0: not held), under the forwarders' lock:
 * fn only reads (tests: a stalled run's dump).
 */
void cmesh__bridge_each(void (*fn)(void *arg, struct cmesh__queue *rxq,
				   struct cmesh__queue *txq, int64_t hold_at),
			void *arg);

#endif
