/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/cell.h - a value published to subscribers (mesh's cell): one
 * updater sets it, any number of cells (subscribers), in this process or
 * in others, read the latest value without a syscall, wait for the next
 * one, and clone themselves; the updater can wait until every live
 * subscriber has seen its latest value.
 *
 * Built on channels: each cell has its own channel of updates from the
 * updater and its own channel back (acknowledgements, new subscriptions),
 * so a cell moves between processes like any pair of endpoints, and a
 * subscriber's process that dies takes only its own subscription down.
 * Values are plain structs (a type without fd or endpoint fields), at most
 * CMESH_TYPE_MAX_SIZE bytes; every update carries the value type's
 * fingerprint, checked on arrival (-EBADMSG).
 *
 *   updater: cmesh_cell_new(&cfg_type, &initial, &upd, &cell);
 *            cmesh_cell_set(upd, &next);  // every cell, every process
 *            cmesh_cell_wait_seen(upd, ctx);
 *   cell:    cmesh_cell_get(cell, &cur, &version);   // no syscall
 *            cmesh_cell_wait_next(cell, ctx, &cur, &version);
 *   moving:  struct msg { cmesh_cell_port cfg; };
 *            CMESH_TYPE_DEFINE(msg_type, struct msg,
 *                              CMESH_FIELD_CELL(struct msg, cfg));
 *            cmesh_cell_to_port(cell, &m.cfg);  // then send m
 *            cmesh_cell_from_port(&m.cfg, &cfg_type, ctx, &cell); // receiver
 *
 * Threads: an updater and a cell are each used by one thread at a time;
 * different cells and the updater may be used from different threads.
 * Blocking: only wait_seen, wait_next and from_port wait (for as long as
 * their context lasts); every other function returns at once (sends and
 * try-receives on the cell's channels, wake syscalls at most). Every
 * function borrows its arguments for the call unless it says it takes
 * them; the updater and each cell are owned by the caller and freed with
 * cmesh_cell_updater_free() and cmesh_cell_free().
 */
#ifndef CMESH_CELL_H
#define CMESH_CELL_H

#include <cmesh/cancel.h>
#include <cmesh/channel.h>
#include <cmesh/common.h>
#include <cmesh/type.h>
#include <cmesh/waitset.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_cell cmesh_cell;
typedef struct cmesh_cell_updater cmesh_cell_updater;

/* A cell's endpoints in a message (CMESH_FIELD_CELL names both). */
typedef struct cmesh_cell_port {
	cmesh_receiver *updates;
	cmesh_sender *control;
} cmesh_cell_port;

/* The two channel types a cell port is made of (what the fields name). */
CMESH_API extern const cmesh_type cmesh_cell_update_type;
CMESH_API extern const cmesh_type cmesh_cell_control_type;

/* Two field entries: a cell port `member` of struct `st`. */
#define CMESH_FIELD_CELL(st, member)                                           \
	CMESH_FIELD_RECEIVER(st, member.updates, cmesh_cell_update_type),      \
		CMESH_FIELD_SENDER(st, member.control,                         \
				   cmesh_cell_control_type)

/**
 * A new value of type `value_type` (plain: no resource fields), set to
 * `initial` (copied), with its updater and a first cell, returned owned.
 * `value_type` is borrowed: it must outlive them. Any thread; never
 * blocks. 0, -EINVAL (NULL, a type with resource fields or invalid, a bad
 * environment), -EMSGSIZE (larger than CMESH_MAX_MESSAGE: it could not
 * travel), -ENOMEM, or a waitset's -EMFILE/-ENFILE.
 */
CMESH_API int cmesh_cell_new(const cmesh_type *value_type, const void *initial,
			     cmesh_cell_updater **out_updater,
			     cmesh_cell **out_cell);

/**
 * Publishes `value` (copied) to every live cell, wherever it is; takes
 * new subscriptions (clones, moved cells) and acknowledgements first.
 * Never blocks (a cell that does not read queues its updates up to the
 * channel's backlog bound; past it, or when a send to it fails for want
 * of memory, that cell is dropped as if gone: its wait_next says -EPIPE
 * once it has what came before; the clones and ports it made keep their
 * own subscriptions).
 * The updater's thread (one at a time). Returns the new version (> 1: the
 * first cell_new's value is version 1) or -EINVAL (NULL u or value).
 */
CMESH_API int64_t cmesh_cell_set(cmesh_cell_updater *u, const void *value);

/**
 * Waits until every live cell has seen the latest value (read it through
 * get or wait_next), for as long as `ctx` lasts (NULL: no limit). A clone
 * has seen what its parent had; a cell made from a port has seen nothing
 * until its holder reads it, or waits in wait_next for a newer value. A
 * cell whose holder frees it or whose process dies stops counting. Sleeps
 * on the updater's waitset. The updater's thread (one at a time). 0,
 * -ETIMEDOUT, -ECANCELED, -EINVAL (NULL u), or a waitset wait's -errno.
 */
CMESH_API int cmesh_cell_wait_seen(cmesh_cell_updater *u, const cmesh_ctx *ctx);

/**
 * Live cells, as of the last set or wait_seen (and pending ones taken:
 * it takes subscriptions and acknowledgements as set does); -EINVAL for
 * NULL. Never blocks. The updater's thread (one at a time).
 */
CMESH_API int cmesh_cell_subscribers(cmesh_cell_updater *u);

/**
 * Frees the updater (taken): cells keep their last value; wait_next says
 * -EPIPE. NULL is a no-op. The updater's thread (no other call may use it
 * meanwhile). Never fails, never waits.
 */
CMESH_API void cmesh_cell_updater_free(cmesh_cell_updater *u);

/**
 * The latest value into `out` (value_type's size) and its version into
 * *version (may be NULL). Makes no syscall and takes no lock when nothing
 * changed (a check of its update channel and a copy); the first read of a
 * new value also tells the updater (one send). Never blocks. The cell's
 * thread (one at a time). 0, -EINVAL (NULL c or out), -EPROTO / -EBADMSG
 * when the updater's process sent something malformed or of another type,
 * or -ENOMEM (across processes); the cell then keeps its last good value,
 * which `out` gets. An updater that is gone is not an error here.
 */
CMESH_API int cmesh_cell_get(cmesh_cell *c, void *out, uint64_t *version);

/**
 * Waits for a value newer than the last one get or wait_next returned
 * (or than the one the cell started with), for as long as `ctx` lasts
 * (NULL: no limit), and returns it as get does (values in between may be
 * skipped: it is the latest). The cell's thread (one at a time). -EPIPE
 * once the updater is gone, -ECONNRESET once its process died (the last
 * value stays readable with get), -ETIMEDOUT, -ECANCELED, -EINVAL (NULL c
 * or out), -EPROTO or -EBADMSG as get, -ENOMEM (across processes).
 */
CMESH_API int cmesh_cell_wait_next(cmesh_cell *c, const cmesh_ctx *ctx,
				   void *out, uint64_t *version);

/**
 * Another cell on the same value, with the value `c` has now; it hears of
 * later values once the updater takes its subscription (at its next set
 * or wait_seen). Returned owned in *out (free with cmesh_cell_free()), for
 * any thread to use. `c`'s thread (one at a time); never blocks. 0,
 * -EINVAL (NULL), -ENOMEM, or a send's error on the new subscription
 * (cmesh_sender_send(): -ENOBUFS when the updater has not taken `c`'s
 * earlier messages up to the backlog bound); a clone made after the
 * updater is gone keeps the last value.
 */
CMESH_API int cmesh_cell_clone(cmesh_cell *c, cmesh_cell **out);

/**
 * A cell as a waitset member (cmesh/waitset.h): ready once a value came
 * that get or wait_next has not taken (or the updater is gone); take it
 * with cmesh_cell_get() before waiting again. Freeing or sending the cell
 * removes it. The waitset is borrowed; the cell stays the caller's. The
 * cell's thread (one at a time); never block. Errors as
 * cmesh_waitset_add_receiver() and cmesh_waitset_remove_receiver(): 0,
 * -EBUSY (in a waitset already), -EINVAL, -ENOMEM; remove: -ENOENT.
 */
CMESH_API int cmesh_cell_waitset_add(cmesh_cell *c, cmesh_waitset *ws,
				     uint64_t key);
CMESH_API int cmesh_cell_waitset_remove(cmesh_cell *c, cmesh_waitset *ws);

/**
 * Frees a cell (taken; its subscription ends, and it leaves its waitset).
 * NULL is a no-op. The cell's thread (no other call may use it
 * meanwhile). Never fails, never waits.
 */
CMESH_API void cmesh_cell_free(cmesh_cell *c);

/**
 * Turns `c` (taken) into a port to send in a message: a new subscription
 * that starts with `c`'s value; the port's endpoints are the caller's
 * until sent (or freed with cmesh_receiver_free() and cmesh_sender_free()).
 * The cell's thread (one at a time); never blocks. 0, -EINVAL (NULL:
 * nothing taken), -ENOMEM or a send's error (then `c` is kept).
 */
CMESH_API int cmesh_cell_to_port(cmesh_cell *c, cmesh_cell_port *port);

/**
 * A cell from a received port (its endpoints taken, the fields NULLed),
 * for values of `value_type` (borrowed: it must outlive the cell): waits,
 * for as long as `ctx` lasts, for the value the sending side gave it. Any
 * thread. 0, -EINVAL (an empty port, a bad value_type), -EBADMSG
 * (another value type), -EPROTO, -ETIMEDOUT, -ECANCELED, -EPIPE (the
 * sending side's cell went before its value came), -ECONNRESET, -ENOMEM;
 * on error the endpoints are freed, but for a NULL port or out (-EINVAL,
 * nothing taken). The new cell is returned owned (cmesh_cell_free()).
 */
CMESH_API int cmesh_cell_from_port(cmesh_cell_port *port,
				   const cmesh_type *value_type,
				   const cmesh_ctx *ctx, cmesh_cell **out);

CMESH_END_DECLS

#endif
