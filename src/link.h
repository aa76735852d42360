/* SPDX-License-Identifier: MIT */
/*
 * link.h - a connection to one peer process: the control socket, the two
 * arenas, the two lanes (one ring each way), the fds in flight, failure,
 * and the background thread that reads the socket.
 */
#ifndef CMESH_LINK_H
#define CMESH_LINK_H

#include <cmesh/cancel.h>
#include <cmesh/node.h>
#include <cmesh/type.h>

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct cmesh__link;
struct cmesh__lane;
struct cmesh__port_out;
struct cmesh_ctl_port;

struct cmesh__link_opts {
	uint32_t ring_cap;    /* bytes of the ring this side writes */
	int64_t spin_ns;      /* receiver spin (queue.h's spin_ns) */
	uint64_t max_trail;   /* CMESH_MAX_MESSAGE */
	uint64_t max_backlog; /* bytes the out lane may queue past its ring */
	int64_t deadline;     /* handshake deadline, CLOCK_MONOTONIC ns */
	int cancel_fd;	/* polls readable when the handshake must end, or -1 */
	pid_t peer_pid; /* known peer (we forked it), or 0 */
	bool cred_is_peer; /* the socket's SO_PEERCRED names the peer */
	/*
	 * An introduced link (link_intro.c): the peer's HELLO must name
	 * process `expect_proc` (else -EPROTO, before anyone can find the
	 * link), SO_PEERCRED names the introducer, and the introduction
	 * holds the caller's reference until the link fails.
	 */
	uint64_t expect_proc;
};

/*
 * Handshakes over `sock` (taken in every case) and starts the link's
 * thread. The caller gets one reference. Errors: -EBADMSG (the sides
 * disagree on a type), -EPROTO, -ETIMEDOUT, -ECONNRESET, -ENOMEM, -errno.
 */
int cmesh__link_new(int sock, const cmesh_type *out_type,
		    const cmesh_type *in_type,
		    const struct cmesh__link_opts *opts,
		    struct cmesh__link **out);

void cmesh__link_get(struct cmesh__link *l);

/* A reference unless none is left (the link is going): then false. */
bool cmesh__link_tryget(struct cmesh__link *l);

/* Drops a reference; the last one stops the thread and frees it all. */
void cmesh__link_put(struct cmesh__link *l);

/* The lane that writes to the peer, and the one that reads from it. */
struct cmesh__lane *cmesh__link_out(struct cmesh__link *l);
struct cmesh__lane *cmesh__link_in(struct cmesh__link *l);

pid_t cmesh__link_peer_pid(const struct cmesh__link *l);

/* cmesh_node_stats_get()'s fields but `size` and `flags`. */
void cmesh__link_stats(struct cmesh__link *l, cmesh_node_stats *out);

/* Our own arena (tests use it to play a hostile peer). */
struct cmesh__arena *cmesh__link_own_arena(struct cmesh__link *l);

int cmesh__link_sock(const struct cmesh__link *l);

/* 0 while healthy, else the failure every port sees (-ECONNRESET, ...). */
int cmesh__link_failed(const struct cmesh__link *l);

/* The word cmesh__link_failed() loads, for callers on a fast path. */
const _Atomic int *cmesh__link_failed_word(const struct cmesh__link *l);

/*
 * Fails the link (first error wins): shuts the socket down so the peer
 * sees it too, and wakes every receiver and waitset on it.
 */
void cmesh__link_fail(struct cmesh__link *l, int err);

/* ---- holders that give back what they keep (link_hook.c) ---- */

/*
 * Something of the link's kept while idle (rpc.c: calls kept with their
 * reply lane, each holding a reference), which must not keep a link alive
 * that failed or that nothing else holds any more: then its thread calls
 * each hook's claim() once, under the link's lock
 * (claim takes no lock), and then, with no lock held, release() on what
 * claim returned (unless NULL): the holder's resources on the link. _add
 * (idempotent) returns false once that ran or the link failed; _del
 * (idempotent) comes before the holder frees the hook or the link's
 * reference it holds. A holder that keeps a hook checks the failure again
 * after marking itself idle (seq_cst both sides: the failure's RMW, then
 * claim's RMW on the holder's word).
 */
struct cmesh__link_hook {
	struct cmesh__link_hook *next, **pprev; /* pprev NULL: not added */
	void *(*claim)(struct cmesh__link_hook *h);
	void (*release)(void *what);
};

bool cmesh__link_hook_add(struct cmesh__link *l, struct cmesh__link_hook *h);
/*
 * Whether the claims may have run (the link failed, or only hooks hold
 * it): a holder that marked itself idle (seq_cst) asks this next.
 */
bool cmesh__link_unkeepable(const struct cmesh__link *l);
void cmesh__link_hook_del(struct cmesh__link *l, struct cmesh__link_hook *h);

/* Link thread, once the link failed or only hooks hold it: the above. */
void cmesh__link_hooks_run(struct cmesh__link *l);

/*
 * ---- lanes, attachments (link_lanes.c, link_attach.c, link_export.c,
 * link_pool.c, link_sweep.c) ----
 */

struct cmesh__port_out;
struct cmesh__ports_in;
struct cmesh_ctl_port;

/*
 * Out lane `ln`: sends an ATTACH carrying `fds` (borrowed: the caller
 * closes its copies) and the port descriptors of `ports`, and returns its
 * sequence number in *out_seq. Callers serialize (the lane's producer
 * lock) so ATTACHes and records keep one order. -EAGAIN (socket full),
 * -EINVAL (a bad fd), or the link's failure.
 */
int cmesh__link_send_attach(struct cmesh__lane *ln, const int *fds,
			    uint32_t nfds, const struct cmesh__port_out *ports,
			    uint32_t nports, uint64_t *out_seq);

/*
 * In lane: true when an ATTACH is here for the record at the head (or the
 * link failed). Not its number: the take checks it (another one there is
 * -EPROTO, which the receive must get to say).
 */
bool cmesh__link_attach_here(struct cmesh__lane *ln);

/*
 * In lane: takes ATTACH number `seq` with its `nports` port descriptors
 * (into ports->desc) and its fds (into fds[]: the record's `nfds` fd
 * fields and OOL memfd, after the fd fields one arena per port that is
 * not FAILED; the ATTACH must carry exactly that many), owned by the
 * caller afterwards. Returns 0, -EAGAIN (not read from the socket
 * yet), -EPROTO (the next ATTACH is another one: the link fails), or the
 * link's failure.
 */
int cmesh__link_take_attach(struct cmesh__lane *ln, uint64_t seq, int *fds,
			    uint32_t nfds, struct cmesh__ports_in *ports,
			    uint32_t nports);

/*
 * In lane: the receiver is gone: closes every fd in its FIFO and every fd
 * that arrives for it from now on; their ports are answered DROPPED, and
 * FAILED when `failed` (the receiver failed: so do the ports' peers).
 */
void cmesh__link_drop_attachments(struct cmesh__lane *ln, bool failed);

/*
 * Reply ports (a oneshot sender whose receiver stays here): a lane made by
 * cmesh__link_lane_export() may be kept for reuse (_poolable marks its
 * descriptor POOLABLE, within the link's bound); _reuse takes one kept
 * lane of `type` and `ring_cap` that is idle again, reopened, and fills
 * *out with its REUSE descriptor (no fd): 0, or -ENOENT (none).
 */
void cmesh__link_lane_poolable(struct cmesh__port_out *out);
/*
 * _rebind is _reuse for in lane `ln` that its queue kept (an rpc call kept
 * with its reply lane, queue_reuse.c): its last use ended with a LAST record
 * taken; reopened, *out is its REUSE descriptor. 0, or -ENOENT (the lane
 * or its link failed, or the peer dropped it: the caller frees the queue).
 */
int cmesh__link_lane_rebind(struct cmesh__lane *ln,
			    struct cmesh__port_out *out);
int cmesh__link_lane_reuse(struct cmesh__link *l, const cmesh_type *type,
			   uint32_t ring_cap, struct cmesh__port_out *out);

/*
 * A lane for an endpoint we send over `l`: we produce on it (is_out: we
 * keep the senders, the receiver goes) or consume (we keep the
 * receiver). Fills *out with the port descriptor, our half's fd (the
 * caller sends then closes it) and the lane, registered, awaiting its
 * answer. -ENOMEM, -ENOSPC (ids or lanes exhausted), -errno.
 */
int cmesh__link_lane_export(struct cmesh__link *l, bool is_out,
			    const cmesh_type *type, uint32_t ring_cap,
			    uint64_t max_backlog, int64_t spin_ns,
			    struct cmesh__port_out *out);

/*
 * A lane for an endpoint we received in a port descriptor `d` (validated
 * by the link thread) with the peer's half `fd` (taken in every case):
 * bound, registered, answered with our half, and with `token` (NULL:
 * none; an in lane's, for a claim of its receiver: the peer keeps it as
 * the lane's peer_token). -EPROTO (the peer's half is bad or its id in
 * use: the caller fails the link), -ENOMEM, -errno.
 */
int cmesh__link_lane_import(struct cmesh__link *l,
			    const struct cmesh_ctl_port *d, int fd,
			    const cmesh_type *type, uint64_t max_backlog,
			    int64_t spin_ns, const uint64_t *token,
			    struct cmesh__lane **out);

/* A port descriptor comes with an arena fd (not a FAILED one nor a context). */
bool cmesh__port_has_fd(const struct cmesh_ctl_port *d);

/*
 * Answers port descriptor `d` DROPPED (nobody takes it), and FAILED when
 * `failed` (lost to a failure: its peer fails); closes `fd`.
 */
void cmesh__link_port_drop(struct cmesh__link *l,
			   const struct cmesh_ctl_port *d, int fd, bool failed);

/*
 * The message carrying the port of `ln` went out (its ATTACH was sent),
 * or never will (unsent: its lane is dropped). Until one of them is
 * called the link keeps the lane, whatever else happens to it.
 */
void cmesh__link_lane_sent(struct cmesh__lane *ln);
void cmesh__link_lane_unsent(struct cmesh__lane *ln, bool failed);

/* The owner of a dynamic lane is done with it; the link frees it. */
void cmesh__link_lane_release(struct cmesh__lane *ln);

/*
 * cmesh_node_flush(): the first out lane's backlog as cmesh__lane_flush()
 * (its -EPIPE included), then every port's out lane's (where a receiver
 * gone counts as done). 0, -ETIMEDOUT, or the link's failure.
 */
int cmesh__link_flush(struct cmesh__link *l, int64_t deadline);

/* ---- wake sockets of waitsets (link_wake.c) ---- */

/*
 * A waitset's wake socket on `l`: *out_fd (the caller's, to poll) wakes
 * when the peer produces on a lane armed with *out_id, or the link thread
 * wakes such a lane. 0 or -errno.
 */
int cmesh__link_wake_open(struct cmesh__link *l, int *out_fd, uint32_t *out_id);

/* The waitset is done with socket `id` (the caller closes its fd). */
void cmesh__link_wake_close(struct cmesh__link *l, uint32_t id);

/* A wake on our socket `id` (link thread: failure, attachment). */
void cmesh__link_wake_self(struct cmesh__link *l, uint32_t id);

/* Producer: a wake on the peer's socket `id` (unknown: nothing). */
void cmesh__link_wake_peer(struct cmesh__link *l, uint32_t id);

/* ---- homes, claims and the process's name (link_claim.c) ---- */

/* This process's name in HELLOs (random; a child of fork gets its own). */
uint64_t cmesh__proc_id(void);

/* A new random token (both words 0 if there is no randomness). */
void cmesh__link_token_new(uint64_t t[2]);

/* The name the peer gave in its HELLO. */
uint64_t cmesh__link_peer_proc(const struct cmesh__link *l);

/* A healthy link whose peer is process `proc`, with a reference; or NULL. */
struct cmesh__link *cmesh__link_by_proc(uint64_t proc);

/*
 * A port that names process `proc` (its peer's, for a claim) goes over
 * `dest`: if we are linked with `proc`, and did not lately, introduce
 * `dest`'s peer and `proc` to each other (link_intro.c), the one over
 * `dest` before anything sent on it after this call.
 */
void cmesh__link_introduce(struct cmesh__link *dest, uint64_t proc);

/*
 * Tells the peer of `l` (REROUTE, shm/proto.h) that what its out lane `id`
 * carries goes on, from here, to a channel receiver in process `node`,
 * which token `tok` names: it may claim that receiver there, read after
 * MARK `mark`, which the caller writes once it has forwarded everything
 * lane `id` brings.
 */
void cmesh__link_reroute(struct cmesh__link *l, uint32_t id, uint64_t node,
			 const uint64_t tok[2], uint32_t mark);

/* The type of an introduced link's first channels (tests play peers). */
const cmesh_type *cmesh__intro_type(void);

/*
 * What a CLAIM does to a home (the port layer's, given once before any
 * home is set; homes are opaque here): take() a reference on it unless it
 * is going (under a leaf lock: must not block), unget() it, and
 * redirect() its senders from out lane `from` (of serial `serial`: it may
 * have gone since it was found, and its memory be another lane's) to `to`
 * (0, or -errno: nothing done, and `to` is the caller's to end).
 */
struct cmesh__claim_ops {
	bool (*take)(void *home);
	void (*unget)(void *home);
	int (*redirect)(void *home, struct cmesh__lane *from, uint64_t serial,
			struct cmesh__lane *to);
	/*
	 * A sender's claim: the receiver `home` reads in lane `to` once its
	 * lane of serial `after` has ended, or passed MARK `mark` (not 0) (0,
	 * or -errno: nothing done).
	 */
	int (*admit)(void *home, uint64_t after, uint32_t mark,
		     struct cmesh__lane *to);
	/*
	 * A claim on lane `to` (out: a sender's) was refused (DROPPED);
	 * `later`: the peer's lane is claimable later (CMESH_LANE_F_LATER).
	 */
	void (*refused)(void *home, struct cmesh__lane *to, bool later);
	/*
	 * A REROUTE (shm/proto.h) of out lane `from` (of serial `serial`):
	 * the senders of `home` that write it claim, in process `node`, the
	 * receiver that token `tok` names, read after MARK `mark` there.
	 */
	void (*reroute)(void *home, struct cmesh__lane *from, uint64_t serial,
			uint64_t node, const uint64_t tok[2], uint32_t mark);
};
void cmesh__link_claims_init(const struct cmesh__claim_ops *ops);

/*
 * A sender coming home: the in lane of ours that token `token` names (a
 * sender's, of `type`), taken out of the table (but for a `marked` one,
 * as a marked CLAIM), with a reference on its
 * home (the receiver's queue, *home: the caller drops it with the ops'
 * unget) and its serial. 0, -ENOENT (none), -EPROTO (another type or
 * direction: the caller fails the link the port came over).
 */
int cmesh__link_claim_local(const uint64_t token[2], const cmesh_type *type,
			    bool marked, void **home, uint64_t *serial);
/*
 * An unmarked _claim_local() is decided: `held` (the sender came home) or
 * not (its home refused it for now: the token is listed again). Marked:
 * nothing to do.
 */
void cmesh__link_claim_local_done(const uint64_t token[2], uint64_t serial,
				  bool held);

/*
 * Our out lane `ln`'s token (both 0: none), while it has a home: what a
 * receiver's port gives for a claim (shm/proto.h CMESH_PORT_F_REDIRECT).
 */
void cmesh__link_lane_token(struct cmesh__lane *ln, uint64_t out[2]);

/*
 * Our out lane `ln`, without a home yet, gets its token now, pending: a
 * receiver's port may give it; a claim of it is answered LATER (so tried
 * again, for as long as the claimer's endpoint is used) until a home
 * lists it (cmesh__link_lane_home_set() keeps it), or plain DROPPED once
 * cmesh__link_lane_token_forget() dropped it.
 */
void cmesh__link_lane_token_unlisted(struct cmesh__lane *ln);

/*
 * A pending token of `ln` (above) is dropped: the lane will not be
 * listed (its split failed or ended without it), or goes. A no-op for
 * any other lane.
 */
void cmesh__link_lane_token_forget(struct cmesh__lane *ln);

/*
 * Claims, on `l`, the senders that out lane `token` of the peer feeds
 * (!produce: a new in lane of ours, which they write from the old lane's
 * end on if the claim holds), or the receiver that in lane `token` of the
 * peer feeds (produce: a new out lane of ours, which that receiver reads
 * once the old lane has ended, or passed MARK `mark` (not 0); on a LANE
 * that binds it the home it was given, cmesh__link_lane_home_set(), is
 * redirected to it from ln->claim_from). The lane goes to attach() before
 * the CLAIM does. A
 * LANE binds it with its own token for the next claim; DROPPED ends it.
 * `list` (NULL: a new one each time): the token the peer lists
 * its end under (shm/proto.h CLAIM), named by the lane before the answer
 * comes: if both words are 0, a new one is written there, else that one
 * goes again (a retry: the first may have been handed on).
 * 0, or -errno (attach()'s: nothing was sent, the lane is gone).
 */
int cmesh__link_claim(struct cmesh__link *l, const uint64_t token[2],
		      uint32_t mark, bool produce, const cmesh_type *type,
		      uint32_t ring_cap, uint64_t max_backlog, int64_t spin_ns,
		      uint64_t list[2],
		      int (*attach)(void *ctx, struct cmesh__lane *ln),
		      void *ctx);

/*
 * Homes (a receiver that moved away may come back to the queue of its
 * senders, queue_move.c, queue_claim.c). set: records `home` (opaque here; NULL: none)
 * for our out lane `ln`, under a leaf lock of its own (with a home, the
 * lane has a token: made here, or the one it came with). take: for the lane
 * `id` the peer named, if it is an out lane of ours of type `type`, not
 * kept for reuse, with a home that `take()` accepts (called under the
 * link's lock and that one: it must not block), 0 with the home in
 * *out_home and the lane in *out_ln, its serial in *out_serial (the lane
 * may be put once unlocked: its memory another lane's), else -ENOENT.
 */
void cmesh__link_lane_home_set(struct cmesh__lane *ln, void *home);
int cmesh__link_lane_home_take(struct cmesh__link *l, uint32_t id,
			       const cmesh_type *type, bool (*take)(void *home),
			       void **out_home, struct cmesh__lane **out_ln,
			       uint64_t *out_serial);

/*
 * A cancellation context going out in a message (port.c): fills its CTX
 * port descriptor `d` (link_ctx.c; the context stays the caller's). 0,
 * -ENOMEM, -ENOSPC (the link gave 2^32 ids).
 */
int cmesh__link_ctx_export(struct cmesh__link *l, const cmesh_ctx *ctx,
			   struct cmesh_ctl_port *d);

/* A CTX port that was not sent after all: forgets its id (0: nothing). */
void cmesh__link_ctx_unexport(struct cmesh__link *l, uint32_t id);

/*
 * A CTX port that arrived with a received message: a handle on the
 * context that stands for the sender's (cancelled when it is, or when the
 * link fails). 0, -ENOMEM, -EPROTO.
 */
int cmesh__link_ctx_import(struct cmesh__link *l,
			   const struct cmesh_ctl_port *d, cmesh_ctx **out);

/* Asks the link thread to retry spilled sends soon (lane_spill.c). */
void cmesh__link_kick(struct cmesh__link *l);

/*
 * Consumer of a lane: the producer's space request is met (shm/ring.h,
 * signal line): sends SPACE now, or has the link thread send it once the
 * socket takes it. Never blocks.
 */
void cmesh__link_space(struct cmesh__link *l);

#endif
