/* SPDX-License-Identifier: MIT */
/*
 * port_int.h - what port.c (export, the send), port_import.c (import, the
 * receive) and port_home.c (the moves that end their forwarder: homes and
 * claims) share; port.c and port_import.c call port_home.c, never the
 * other way, and not each other.
 */
#ifndef CMESH_PORT_INT_H
#define CMESH_PORT_INT_H

#include "env.h"
#include "lane.h"
#include "link.h"
#include "queue.h"

#include "proto.h"
#include "ring.h"

#include <cmesh/type.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Writes endpoint handle `p` into field `f` of message `msg`. */
static inline void cmesh__port_set_field(void *msg, const cmesh_field *f,
					 void *p)
{
	memcpy((char *)msg + f->offset, &p, sizeof(p));
}

/* A field of this kind holds a sending end (a sender, a oneshot's). */
static inline bool cmesh__port_is_sending(uint32_t kind)
{
	return kind == CMESH_FIELD_KIND_SENDER ||
	       kind == CMESH_FIELD_KIND_ONESHOT_SENDER;
}

/*
 * The ring of a port's lane for an endpoint of field kind `kind`: the
 * environment's ring size (a oneshot's: CMESH__LANE_ONESHOT_RING), doubled
 * until a record holds the message struct (lane.h). 0 with *out, or
 * -EMSGSIZE.
 */
static inline int cmesh__port_ring_cap(const cmesh_type *t, uint32_t kind,
				       const cmesh_env *env, uint32_t *out)
{
	return cmesh__lane_ring_cap(
		t,
		kind == CMESH_FIELD_KIND_ONESHOT_SENDER ||
			kind == CMESH_FIELD_KIND_ONESHOT_RECEIVER,
		env->ring_size, out);
}

/* The claims' ops are given to the link layer (once, before any claim). */
void cmesh__port_claims_ready(void);

/*
 * Import of a port that may end its forwarder (port_home.c). import_home:
 * a receiver coming home (CMESH_PORT_F_HOME) over `fwd`; sender_home: a
 * channel sender coming back to its receiver's process (REDIRECT naming
 * us): 0 with *out the handle, or -EOPNOTSUPP (nothing done: an ordinary
 * port). claim_peer: the REDIRECT of a channel endpoint's port `d`, whose
 * queue `q` is made on `ln`: kept with `ln`, and claimed from the peer's
 * process if we are linked with it.
 */
int cmesh__port_import_home(struct cmesh__link *link,
			    const struct cmesh_ctl_port *d, const cmesh_type *t,
			    struct cmesh__lane *fwd, void **out);
int cmesh__port_sender_home(const struct cmesh_ctl_port *d, const cmesh_type *t,
			    struct cmesh__lane *fwd, void **out);
void cmesh__port_claim_peer(struct cmesh__link *link,
			    const struct cmesh_ctl_port *d,
			    struct cmesh__lane *ln, struct cmesh__queue *q,
			    bool sending);

/*
 * A receiver going on through a forwarder while senders of it in other
 * processes write lanes of their own (port_home.c): its forwarder's lane
 * names them in a HINTS record, so that the process it goes to claims
 * each where it is (shm/proto.h). _new(): NULL if it has none (or no
 * memory); else what to name, and claims stay away from `q` (no_claims).
 * _write(): once export_direct() made `out`, the forwarder's lane: a mark
 * of it per sender, the record, and the queue's hook that writes each mark
 * when the forwarder has read that sender's lane to its end, and the
 * introduction of their processes to the one the port goes to; false:
 * none (the senders stay forwarded, `h` is freed). _end(): the
 * forwarder's end (its at_end), or the export's failure: the hook goes,
 * `h` is freed.
 */
struct cmesh__hints;
struct cmesh__hints *cmesh__port_hints_new(struct cmesh__link *link,
					   struct cmesh__queue *q);
bool cmesh__port_hints_write(struct cmesh__hints *h, struct cmesh__lane *out);
void cmesh__port_hints_end(void *h);

#endif
