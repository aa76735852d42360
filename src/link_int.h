/* SPDX-License-Identifier: MIT */
/*
 * link_int.h - the link's state, shared by the files of the link module:
 * link.c (making, references, failure), link_hello.c (handshake),
 * link_thread.c (the thread and its socket), link_lanes.c (the lanes on
 * the link: ids, table, LANE and END), link_export.c (the lanes ports
 * make), link_sweep.c (their lifetime, the thread's round over them) and
 * link_attach.c (ATTACH FIFOs).
 */
#ifndef CMESH_LINK_INT_H
#define CMESH_LINK_INT_H

#include "reg.h"
#include "ctl.h"
#include "idmap.h"
#include "lane.h"
#include "link.h"

#include "proto.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * fds one ATTACH may carry: every fd or endpoint field of a type (an fd,
 * or a port's arena), and an OOL memfd.
 */
#define ATTACH_MAX_FDS (CMESH_TYPE_MAX_FIELDS + 2u)

/* A wake socket of a waitset, by the id its WAKESOCK gave it. */
struct wake_sock {
	uint32_t id;
	int fd;
};

/* An ATTACH read from the socket, waiting in its lane's FIFO. */
struct cmesh__attach {
	struct cmesh__attach *next;
	uint64_t seq;
	uint32_t nfds;
	uint32_t nports;
	int fds[ATTACH_MAX_FDS];
	struct cmesh_ctl_port ports[]; /* nports */
};

/* Processes a link's peer was lately introduced to (link_intro.c). */
#define INTRO_KNOWN 16u

/* A control message that met a full socket, sent later in order. */
struct ctl_pending {
	struct ctl_pending *next;
	uint32_t len;
	int fd;			/* or -1 */
	unsigned char buf[128]; /* the largest: CLAIM */
};

struct cmesh__link {
	_Atomic uint32_t refs;
	struct cmesh__reg_entry reg; /* the live links (reg.h) */
	_Atomic int failed;
	int sock;
	_Atomic pid_t peer_pid;
	uint64_t peer_proc; /* its HELLO's proc_id (link_claim.c) */
	uint64_t own_proc;  /* ours in our HELLO: a child of fork's differs */
	bool pid_known; /* peer_pid from fork or SO_PEERCRED, not the HELLO */
	bool pid_from_fork; /* from the caller, who forked the peer */
	int pidfd; /* the peer process (a second death signal), or -1 */
	bool pidfd_watched;
	struct cmesh__arena *own;
	struct cmesh__arena *peer;
	struct cmesh__lane out; /* lane id `parity` */
	struct cmesh__lane in;	/* lane id `parity ^ 1` */
	struct cmesh__wake *wake;
	int kick_efd;
	_Atomic bool stop;
	_Atomic bool orphan; /* no references left: the thread frees it */
	pthread_mutex_t orphan_lock; /* hand-off to the thread vs. its free */
	bool thread_started;
	bool sock_watched;
	uint32_t sock_events; /* what the socket is watched for */
	pthread_t thread;
	/*
	 * The lanes: their table and list, their FIFOs and lifetimes, the
	 * pending control messages (link_lanes.c, link_attach.c,
	 * link_sweep.c).
	 */
	pthread_mutex_t att_lock;
	struct cmesh__link_hook *hooks; /* link_hook.c, under att_lock */
	_Atomic uint32_t nhooks;	/* hooks added (each holds a ref) */
	_Atomic bool holders_only;	/* no other reference is left */
	bool hooks_ran;			/* the claims were made */
	struct cmesh__idmap lanes;	/* id -> lane: every lane on the link */
	struct cmesh__lane *dyn;	/* dynamic lanes (lane->next) */
	uint32_t parity;		/* our ids: parity, parity + 2, ... */
	uint32_t next_id;		/* the next id we give */
	uint32_t ndyn;			/* dynamic lanes registered */
	uint32_t npool_in, npool_out;	/* poolable lanes each way (capped) */
	uint32_t nclaims; /* lanes our claims made, not freed (MAX_CLAIMS) */
	uint64_t peer_mapped;	      /* bytes of the peer's halves mapped */
	struct ctl_pending *ctl_head; /* control messages to send, in order */
	struct ctl_pending **ctl_tailp;
	_Atomic bool ctl_pending; /* ctl_head is not empty */
	_Atomic bool space_owed;  /* a SPACE that met a full socket */
	/*
	 * Wake sockets of waitsets (link_wake.c), under wake_lock (a leaf):
	 * ours (a waitset here gave the peer one end; we keep a copy of it
	 * for the link thread's own wakes) and the peer's (ends it gave us).
	 */
	pthread_mutex_t wake_lock;
	bool wake_lock_init;
	struct wake_sock *wown, *wpeer;
	uint32_t nwown, capwown, nwpeer, capwpeer;
	uint32_t next_wake_id;
	uint32_t att_fds;	     /* fds the FIFOs hold */
	uint32_t fd_budget;	     /* fds the FIFOs may hold: budget_for() */
	_Atomic bool sock_throttled; /* socket watched for hang-up only */
	/*
	 * Link thread only: in lanes whose close left a drain owed
	 * (cmesh__lane_drain_more()), counted by the last sweep, and the
	 * wait before it looks again (doubling while they stay owed).
	 */
	uint32_t drains_owed;
	int64_t drain_gap;
	_Atomic bool sock_read; /* failed, and the socket read to its end */
	/*
	 * Contexts that cross the link (link_ctx.c), under ctx_lock: ours
	 * that the peer was given (id -> export entry) and the peer's that
	 * were given to us (id -> node, weak).
	 */
	pthread_mutex_t ctx_lock;
	bool ctx_lock_init;
	struct cmesh__idmap ctx_out, ctx_in;
	uint32_t ctx_next_out;	      /* the last id we gave */
	struct ctx_export *ctx_fired; /* cancelled: CANCEL to send */
	/*
	 * Introductions (link_intro.c): this link's peer was introduced to
	 * these processes lately (intro_lock); the introduction holds a
	 * reference on this link until it fails.
	 */
	uint64_t introduced[INTRO_KNOWN];
	uint32_t nintroduced;
	_Atomic bool intro_held;
};

/* ---- link_ctx.c ---- */

/* Sets up the link's context maps. 0 or -ENOMEM. */
int cmesh__ctx_init(struct cmesh__link *l, uint64_t seed);

/* A CTX port descriptor's own fields are sound (link_attach.c). */
bool cmesh__ctx_port_ok(const struct cmesh_ctl_port *d);

/*
 * A CTX port about to be sent: its deadline (a local clock reading in
 * our descriptors) becomes the time left, as the wire has it.
 */
void cmesh__ctx_port_wire(struct cmesh_ctl_port *d);

/* Its ATTACH went out: a CANCEL for `id` may follow from now on. */
void cmesh__link_ctx_sent(struct cmesh__link *l, uint32_t id);

/*
 * Link thread: a CTX port arrived in an ATTACH: its deadline becomes a
 * local one (in `d`), and a cancellable one gets its node now, so a
 * CANCEL that comes before the message is taken is not lost. 0, -EPROTO
 * (an id in use, too many contexts), -ENOMEM.
 */
int cmesh__link_ctx_arrive(struct cmesh__link *l, struct cmesh_ctl_port *d);

/* A CTX port that arrived and will not be taken: releases its node. */
void cmesh__link_ctx_drop(struct cmesh__link *l,
			  const struct cmesh_ctl_port *d);

/* Link thread: a CANCEL or CTXDROP. 0 or -EPROTO. */
int cmesh__ctx_on_ctl(struct cmesh__link *l, uint16_t type, const void *buf,
		      int len, uint32_t nfds);

/* Link thread, every round: sends CANCEL for contexts cancelled here. */
void cmesh__ctx_sweep(struct cmesh__link *l);

/* The link failed: cancels every context the peer gave us. */
void cmesh__ctx_link_failed(struct cmesh__link *l);

/* Teardown: forgets every context we gave; frees the maps. */
void cmesh__ctx_destroy(struct cmesh__link *l);

/* ---- link.c, for link_thread.c ---- */

/*
 * Frees the link and all it holds: its thread joined, or from that thread
 * itself (an orphan's, detached).
 */
void cmesh__link_free_resources(struct cmesh__link *l);

/* ---- link_hello.c, for link.c ---- */

/*
 * The HELLO exchange on a new link's socket: our arena and wake socket
 * out, the peer's in and checked, the first lanes and the context maps
 * set up. 0, -EBADMSG (the types differ), -EPROTO, -EINVAL, -ECONNRESET,
 * -ETIMEDOUT, -ECANCELED (opts' deadline, cancel_fd), -errno.
 */
int cmesh__link_handshake(struct cmesh__link *l, const cmesh_type *out_type,
			  const cmesh_type *in_type,
			  const struct cmesh__link_opts *o);

/* ---- link_thread.c, for link.c ---- */

/*
 * After the handshake: the socket non-blocking, the wake loop watching it,
 * the kick eventfd and the peer's pidfd, and the link thread started.
 * 0 or -errno (the caller destroys the link).
 */
int cmesh__link_start(struct cmesh__link *l);

/* ---- link_lanes.c, for link.c, link_hello.c and link_thread.c ---- */

/* Sets up the table with the two first lanes. 0 or -ENOMEM. */
int cmesh__lanes_init(struct cmesh__link *l, uint64_t our_node,
		      uint64_t peer_node);

/* Frees every dynamic lane, every FIFO and pending message. */
void cmesh__lanes_destroy(struct cmesh__link *l);

/*
 * Link thread: one control message other than HELLO, copied out. Takes
 * the fds on success; on failure the caller closes them.
 */
int cmesh__lanes_handle_ctl(struct cmesh__link *l, const void *buf, int len,
			    const int *fds, uint32_t nfds);

/* ---- link_sweep.c, for link.c and link_thread.c ---- */

/*
 * Link thread, every round: sends pending control messages, flushes the
 * out lanes' backlogs (or drops them once the link failed), frees lanes
 * that are done. True while something waits for the socket to poll
 * writable.
 */
bool cmesh__lanes_sweep(struct cmesh__link *l);

/* True if an out lane has a backlog to deliver (orphaned links wait). */
bool cmesh__lanes_spilling(struct cmesh__link *l);

/* Wakes every in lane's receiver (failure). */
void cmesh__lanes_wake_all(struct cmesh__link *l);

/* ---- link_lanes.c, for the other files of the module ---- */

/* The lane the peer names `id`, or NULL; att_lock held. */
struct cmesh__lane *cmesh__lanes_lookup(struct cmesh__link *l, uint32_t id);

/* A control message's header. */
void cmesh__ctl_hdr_fill(struct cmesh_ctl_hdr *h, uint16_t type, uint32_t len);

/*
 * Sends a control message (LANE, END, WAKESOCK...; taking `fd`, or -1)
 * now or, behind a full socket, from the link thread later, in order.
 */
void cmesh__lanes_ctl_send(struct cmesh__link *l, const void *buf, uint32_t len,
			   int fd);

/*
 * Lanes kept for reuse (reply ports) each way on one link: a few per
 * caller thread in flight; a peer cannot make us keep more.
 */
#define MAX_POOLED 32u

/*
 * Lanes our CLAIMs may hold on one link at once (link_claim.c): a peer
 * that names processes in ports cannot make us hold more on their links.
 */
#define MAX_CLAIMS 1024u

/* The counts of kept lanes, as one leaves the link (att_lock held). */
void cmesh__lanes_unpool(struct cmesh__link *l, struct cmesh__lane *ln);

/* Bytes of the peer's halves one link may map (address space). */
#define MAX_PEER_MAPPED (1ull << 40)

/*
 * Adds a new dynamic lane to the table and the list (link_export.c). 0,
 * -ENOSPC (MAX_LANES), -EPROTO (its id in use), -ENOMEM.
 */
int cmesh__lanes_add(struct cmesh__link *l, struct cmesh__lane *ln);

/*
 * A LANE answering lane `id` (our half's `size`, `flags`, `token` or
 * NULL), taking `fd` (or -1), as cmesh__lanes_ctl_send() sends.
 */
void cmesh__lanes_send_lane(struct cmesh__link *l, uint32_t id, uint32_t flags,
			    uint64_t size, const uint64_t *token, int fd);

/* An END for out lane `id`, done here (link_sweep.c). */
void cmesh__lanes_send_end(struct cmesh__link *l, uint32_t id);

/*
 * Sends the control messages that waited, in order; att_lock held. 0, or
 * the socket's error: the caller fails the link once it has unlocked
 * (link_sweep.c's round).
 */
int cmesh__lanes_ctl_flush_locked(struct cmesh__link *l);

/* Sends a SPACE now: 0, or -EAGAIN when the socket is full (the round). */
int cmesh__lanes_space_send(struct cmesh__link *l);

/*
 * link_pool.c: the lane a REUSE port names, taken for its next use
 * (cmesh__link_lane_import()'s, which see).
 */
int cmesh__lanes_import_reuse(struct cmesh__link *l,
			      const struct cmesh_ctl_port *d,
			      const cmesh_type *type, struct cmesh__lane **out);

/* ---- link_export.c, for link_claim.c ---- */

/*
 * cmesh__link_lane_import() with `token` (or NULL) in its LANE answer: a
 * CLAIM's (link_claim.c). With `answer_fd`, no answer is sent: our half's
 * fd goes there, for cmesh__lanes_answer(): `take`, the LANE with it and
 * `token`; else DROPPED (the fd closed, the lane ours no more).
 */
int cmesh__lanes_import(struct cmesh__link *l, const struct cmesh_ctl_port *d,
			int fd, const cmesh_type *type, uint64_t max_backlog,
			int64_t spin_ns, const uint64_t *token, int *answer_fd,
			struct cmesh__lane **out);
void cmesh__lanes_answer(struct cmesh__link *l, struct cmesh__lane *ln,
			 const uint64_t *token, int fd, bool take);

/* ---- link_claim.c ---- */

/* Link thread: a CLAIM, copied out; takes its fd on 0. */
int cmesh__claims_on_ctl(struct cmesh__link *l, const unsigned char *buf,
			 int len, const int *fds, uint32_t nfds);

/*
 * Link thread: a REROUTE, copied out: the queue of the out lane it names
 * claims where it says (the claims' ops' reroute). 0, or -EPROTO.
 */
int cmesh__reroute_on_ctl(struct cmesh__link *l, const unsigned char *buf,
			  int len, uint32_t nfds);

/* Link thread: out lane `ln`, made for a claim of ours, is bound. */
void cmesh__claims_answered(struct cmesh__lane *ln);
/*
 * A claim of ours refused (DROPPED), on lane `ln`: its queue may retry;
 * `later`: its lane is claimable later (CMESH_LANE_F_LATER).
 */
void cmesh__claims_refused(struct cmesh__lane *ln, bool later);

/* Answers a CLAIM's port `d` DROPPED | LATER; closes `fd` (link_lanes.c). */
void cmesh__link_claim_later(struct cmesh__link *l,
			     const struct cmesh_ctl_port *d, int fd);

/* ---- link_intro.c ---- */

/* An INTRO from the peer: 0 (its fd taken), or -EPROTO. */
int cmesh__intro_on_ctl(struct cmesh__link *l, const unsigned char *buf,
			int len, const int *fds, uint32_t nfds);

/*
 * Link thread, once the link failed: the reference an introduction holds
 * on it, if any, goes.
 */
void cmesh__intro_release(struct cmesh__link *l);

/* ---- link_wake.c ---- */

/* Sets up the tables (0 or -ENOMEM); frees them and their sockets. */
int cmesh__wakes_init(struct cmesh__link *l);
void cmesh__wakes_destroy(struct cmesh__link *l);

/*
 * Link thread, once the link failed: the sockets of the peer's waitsets
 * close (nobody wakes them any more; one given after this, read from what
 * the socket still held, is closed at once).
 */
void cmesh__wakes_peer_drop(struct cmesh__link *l);

/* Link thread: a WAKESOCK or WAKECLOSE, copied out; takes fds on 0. */
int cmesh__wakes_on_ctl(struct cmesh__link *l, uint16_t type,
			const unsigned char *buf, int len, const int *fds,
			uint32_t nfds);

/* ---- link_attach.c, for link_lanes.c ---- */

/* Link thread: an ATTACH, copied out (see cmesh__lanes_handle_ctl). */
int cmesh__lanes_on_attach(struct cmesh__link *l, const unsigned char *buf,
			   int len, const int *fds, uint32_t nfds);

/* A port descriptor a peer sent is sound (kinds, flags, ids, sizes). */
bool cmesh__lanes_port_ok(const struct cmesh__link *l,
			  const struct cmesh_ctl_port *d);

/* Closes every ATTACH in an in lane's FIFO (its fds; no answer). */
void cmesh__lanes_free_fifo(struct cmesh__lane *ln);

#endif
