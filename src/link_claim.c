/* SPDX-License-Identifier: MIT */
/*
 * link_claim.c - where a channel's receiver may go back to, or claim its
 * senders from: homes and claims of out lanes, and the process's name.
 *
 * Homes. An out lane that carries a channel to a receiver in another
 * process has a home: the queue of its senders here (opaque at this
 * layer, weak; queue_move.c, queue_claim.c and, for a sender that came from its
 * receiver's process, port_import.c set it; the queue clears it). A
 * receiver that comes back over the same link names the lane
 * (CMESH_PORT_F_HOME); the port layer then takes it back into that queue
 * (cmesh__link_lane_home_take).
 *
 * Claims. While it has a home, such a lane also has a token: 128 random
 * bits, given with the receiver's port (CMESH_PORT_F_REDIRECT) or in the
 * LANE answer to a sender's port (the receiver's process keeps it; it
 * chose that token itself and sent it with the port, shm/proto.h `list`,
 * so it knows it before the answer: port.c early_token(); one lane per
 * token, the first) and handed
 * on by every process the receiver then passes through while it reads
 * that lane alone. The process that holds the receiver at last, linked
 * with ours, sends a CLAIM naming the token with its half of a new lane:
 * the token's lane is found (once), the lane's senders are redirected
 * (the ops the port layer gave: the old lane is sealed and ends, the new
 * one takes every later send), and the LANE answer carries the new lane's
 * token. A claim is a capability: only a holder of the token can make it,
 * a token works once (but for a sender's claim after a mark, which leaves
 * it for the lane's other senders), and a claim that names none (guessed,
 * used, or its lane closed or gone since) is answered DROPPED and changes
 * nothing. A split's lane (cmesh__link_lane_token_unlisted()) is in the
 * table with its token pending: a claim of it is answered DROPPED | LATER
 * (the claimer tries again) until its home lists it, or it is forgotten.
 *
 * Senders claim the same way: a channel sender's port carries its
 * receiver's process and a token of the in lane it wrote; the process it
 * arrives in claims a lane of its own, which that receiver reads once the
 * old one has ended (the forwarder's end, after everything it forwarded),
 * or once it passed the MARK the claim names (other senders still write
 * it: the forwarder writes that mark when it ends), and its sends go to
 * the new lane once the claim's answer came.
 *
 * Locks. Homes and the token table are under `home_lock`, a leaf: no
 * other lock is taken under it. A lookup of a home by lane id holds it
 * inside the link's att_lock, from its read of the home to take()'s
 * reference; a claim's lookup holds it alone (a lane with a home is held
 * by its queue until the queue clears the home: an out lane's in its last
 * put, an in lane's when its receiver drops it; so it is alive there; a
 * lane with a pending token has no home: its queue's last put, a failed
 * split, and both paths that free a lane take it out of the table first,
 * cmesh__link_lane_token_forget()).
 *
 * The process's name (cmesh__proc_id): 64 random bits, made again in a
 * child after fork; sent in every HELLO (proc_id). A port's REDIRECT
 * names the process to claim from by it; a link is found by the name its
 * peer gave (cmesh__link_by_proc), among the links this process made (a
 * child of fork skips its parent's). A peer's name is its word: a peer
 * that takes another's name is sent the claims meant for that process,
 * and their tokens (ARCHITECTURE.md, Known limits).
 */
#include "link_int.h"

#include "log.h"
#include "reg.h"
#include "type.h"

#include "proto.h"

#include <cmesh/error.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static_assert(sizeof(struct cmesh_ctl_claim) <=
		      sizeof(((struct ctl_pending *)0)->buf),
	      "a CLAIM fits a pending control message");

/* ---- the process's name ---- */

static pthread_mutex_t home_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t home_once = PTHREAD_ONCE_INIT;

#define CLAIM_BUCKETS 1024u
static struct cmesh__lane *claimable[CLAIM_BUCKETS]; /* home_lock */
static uint64_t proc_id;			     /* home_lock */
static const struct cmesh__claim_ops *_Atomic claim_ops;

static void home_fork_prepare(void)
{
	pthread_mutex_lock(&home_lock);
}

static void home_fork_parent(void)
{
	pthread_mutex_unlock(&home_lock);
}

/*
 * A child is another process: a name of its own, and none of the
 * parent's tokens (its lanes are the parent's, never the child's).
 */
static void home_fork_child(void)
{
	proc_id = 0;
	memset(claimable, 0, sizeof(claimable));
	pthread_mutex_unlock(&home_lock);
}

static void home_init(void)
{
	pthread_atfork(home_fork_prepare, home_fork_parent, home_fork_child);
}

/* 16 random bytes into `t`; both words 0 if there are none. */
static void random_token(uint64_t t[2])
{
	if (getrandom(t, 2 * sizeof(t[0]), GRND_NONBLOCK) !=
	    (ssize_t)(2 * sizeof(t[0])))
		t[0] = t[1] = 0;
}

void cmesh__link_token_new(uint64_t t[2])
{
	random_token(t);
}

uint64_t cmesh__proc_id(void)
{
	uint64_t id;

	pthread_once(&home_once, home_init);
	pthread_mutex_lock(&home_lock);
	while (!proc_id) {
		uint64_t t[2];

		random_token(t);
		/* No randomness: still one per process while it lives. */
		proc_id = t[0] ? t[0] :
				 (uint64_t)getpid() << 32 ^
					  (uint64_t)time(NULL);
	}
	id = proc_id;
	pthread_mutex_unlock(&home_lock);
	return id;
}

uint64_t cmesh__link_peer_proc(const struct cmesh__link *l)
{
	return l->peer_proc;
}

struct by_proc {
	uint64_t proc, me;
	struct cmesh__link *found;
};

/* Under the registry's leaf lock: atomics only. */
static int match_proc(void *owner, void *arg)
{
	struct cmesh__link *l = owner;
	struct by_proc *b = arg;

	/* Not a link a parent made before it forked us: it is the parent's. */
	if (l->peer_proc != b->proc || l->own_proc != b->me ||
	    cmesh__link_failed(l) || !cmesh__link_tryget(l))
		return 0;
	b->found = l;
	return 1;
}

struct cmesh__link *cmesh__link_by_proc(uint64_t proc)
{
	struct by_proc b = { proc, cmesh__proc_id(), NULL };

	if (!proc)
		return NULL;
	cmesh__reg_each(match_proc, &b);
	return b.found;
}

/* ---- homes and tokens (home_lock held) ---- */

static struct cmesh__lane **bucket(const uint64_t t[2])
{
	return &claimable[t[1] % CLAIM_BUCKETS];
}

static void token_del(struct cmesh__lane *ln)
{
	for (struct cmesh__lane **p = bucket(ln->token); *p;
	     p = &(*p)->claim_next)
		if (*p == ln) {
			*p = ln->claim_next;
			break;
		}
	ln->claim_next = NULL;
}

static struct cmesh__lane *token_find(const uint64_t t[2])
{
	for (struct cmesh__lane *ln = *bucket(t); ln; ln = ln->claim_next)
		if (ln->token[0] == t[0] && ln->token[1] == t[1])
			return ln;
	return NULL;
}

void cmesh__link_claims_init(const struct cmesh__claim_ops *ops)
{
	atomic_store_explicit(&claim_ops, ops, memory_order_release);
}

void cmesh__link_lane_home_set(struct cmesh__lane *ln, void *home)
{
	uint64_t t[2] = { ln->token[0], ln->token[1] };
	bool listed;

	pthread_once(&home_once, home_init);
	/* A lane given a home gets its token now, unless it came with one. */
	if (home && !(t[0] | t[1]) &&
	    atomic_load_explicit(&claim_ops, memory_order_acquire))
		random_token(t);
	pthread_mutex_lock(&home_lock);
	listed = (atomic_load_explicit(&ln->home_q, memory_order_relaxed) ||
		  atomic_load_explicit(&ln->token_pending,
				       memory_order_relaxed)) &&
		 (ln->token[0] | ln->token[1]);
	if (listed)
		token_del(ln);
	if (!home)
		ln->claim_busy = false; /* out of the table: nobody decides */
	atomic_store_explicit(&ln->token_pending, false, memory_order_relaxed);
	/* One lane per token: a second (a peer's, import()) is not listed. */
	if (home && (t[0] | t[1]) && token_find(t))
		t[0] = t[1] = 0;
	atomic_store_explicit(&ln->home_q, home, memory_order_relaxed);
	ln->token[0] = home ? t[0] : 0;
	ln->token[1] = home ? t[1] : 0;
	if (home && (t[0] | t[1])) {
		ln->claim_next = *bucket(t);
		*bucket(t) = ln;
	}
	pthread_mutex_unlock(&home_lock);
}

void cmesh__link_lane_token_unlisted(struct cmesh__lane *ln)
{
	uint64_t t[2];

	pthread_once(&home_once, home_init);
	random_token(t);
	pthread_mutex_lock(&home_lock);
	if (!atomic_load_explicit(&ln->home_q, memory_order_relaxed) &&
	    !(ln->token[0] | ln->token[1])) {
		ln->token[0] = t[0];
		ln->token[1] = t[1];
		/* In the table, pending (none without randomness). */
		if ((t[0] | t[1]) && !token_find(t)) {
			ln->claim_next = *bucket(t);
			*bucket(t) = ln;
			atomic_store_explicit(&ln->token_pending, true,
					      memory_order_relaxed);
		}
	}
	pthread_mutex_unlock(&home_lock);
}

void cmesh__link_lane_token_forget(struct cmesh__lane *ln)
{
	/* Set before anything that calls this (lane.h): no lock for most. */
	if (!atomic_load_explicit(&ln->token_pending, memory_order_relaxed))
		return;
	pthread_mutex_lock(&home_lock);
	if (atomic_load_explicit(&ln->token_pending, memory_order_relaxed)) {
		token_del(ln);
		atomic_store_explicit(&ln->token_pending, false,
				      memory_order_relaxed);
		ln->token[0] = ln->token[1] = 0;
	}
	pthread_mutex_unlock(&home_lock);
}

void cmesh__link_lane_token(struct cmesh__lane *ln, uint64_t out[2])
{
	pthread_mutex_lock(&home_lock);
	out[0] = ln->token[0];
	out[1] = ln->token[1];
	pthread_mutex_unlock(&home_lock);
}

int cmesh__link_lane_home_take(struct cmesh__link *l, uint32_t id,
			       const cmesh_type *type, bool (*take)(void *home),
			       void **out_home, struct cmesh__lane **out_ln,
			       uint64_t *out_serial)
{
	struct cmesh__lane *ln;
	void *home = NULL;

	pthread_once(&home_once, home_init);
	/* In the table under att_lock: the link thread frees it after. */
	pthread_mutex_lock(&l->att_lock);
	ln = cmesh__lanes_lookup(l, id);
	if (ln && ln->is_out && ln->dynamic && !ln->poolable &&
	    ln->type == type) {
		pthread_mutex_lock(&home_lock);
		home = atomic_load_explicit(&ln->home_q, memory_order_relaxed);
		if (home && !take(home))
			home = NULL;
		pthread_mutex_unlock(&home_lock);
		*out_serial = ln->serial;
	}
	pthread_mutex_unlock(&l->att_lock);
	if (!home)
		return -ENOENT;
	*out_home = home;
	*out_ln = ln;
	return 0;
}

/* ---- a CLAIM we receive (link thread) ---- */

/* Marked claims of one lane: past this, its token is spent. */
#define MARKED_CLAIMS 64u

/* What a claim found: its lane, a reference on its home, and then some. */
struct found {
	struct cmesh__lane *ln;
	void *home;
	uint64_t serial; /* the lane's: it may go once unlocked */
	const cmesh_type *type;
	uint64_t max_backlog;
	int64_t spin_ns;
};

/*
 * The lane token `t` names, out of the table (a token works once; with
 * `keep`, a marked claim's, it stays), with a
 * reference on its home, into *f: 0, or -ENOENT (none). -EPROTO if the
 * lane carries another type than `fp`, or goes the other way than a
 * claimer that `produces` (it stays claimable). -EAGAIN: a pending
 * token's lane of that type and way (claimable later); of another, it is
 * none (-ENOENT), as an unlisted one was.
 */
static int claim_take(const struct cmesh__claim_ops *ops, const uint64_t t[2],
		      uint64_t fp, bool produces, bool keep, struct found *f)
{
	struct cmesh__lane *ln;
	int r = -ENOENT;

	pthread_mutex_lock(&home_lock);
	ln = token_find(t);
	if (ln && ln->claim_busy)
		ln = NULL; /* another claim of it is deciding */
	f->home = ln ? atomic_load_explicit(&ln->home_q, memory_order_relaxed) :
		       NULL;
	/* A receiver's claimer reads our out lane's senders; a sender's
	 * claimer writes to our in lane's receiver. */
	if (ln &&
	    atomic_load_explicit(&ln->token_pending, memory_order_relaxed)) {
		if (cmesh__type_matches(ln->type, NULL, fp) &&
		    ln->is_out != produces)
			r = -EAGAIN;
	} else if (ln && f->home &&
		   (!cmesh__type_matches(ln->type, NULL, fp) ||
		    ln->is_out == produces)) {
		r = -EPROTO;
	} else if (ln && f->home && ops->take(f->home)) {
		/*
		 * A marked claim: the lane's other senders may claim too, up
		 * to MARKED_CLAIMS in its life (a peer that claims again and
		 * again gets no more lanes: each is one of its own). Else the
		 * token works once: busy until claim_done() says whether the
		 * claim held.
		 */
		if (!keep)
			ln->claim_busy = true;
		else if (++ln->marked_claims >= MARKED_CLAIMS) {
			token_del(ln);
			ln->token[0] = ln->token[1] = 0;
		}
		f->ln = ln;
		f->serial = ln->serial;
		f->type = ln->type;
		f->max_backlog = ln->max_backlog;
		f->spin_ns = ln->spin_ns;
		r = 0;
	}
	pthread_mutex_unlock(&home_lock);
	return r;
}

/*
 * The claim that took token `t` (claim_take(), unmarked) of the lane of
 * serial `serial` is decided: the token is spent, or (`spent` false: its
 * home refused it for now, a come-home's gate, say) listed again for a
 * retry. A lane gone meanwhile, or whose home went, is not listed under it
 * any more: nothing to do.
 */
static void claim_done(const uint64_t t[2], uint64_t serial, bool spent)
{
	struct cmesh__lane *ln;

	pthread_mutex_lock(&home_lock);
	ln = token_find(t);
	if (ln && ln->serial == serial && ln->claim_busy) {
		ln->claim_busy = false;
		if (spent) {
			token_del(ln);
			ln->token[0] = ln->token[1] = 0;
		}
	}
	pthread_mutex_unlock(&home_lock);
}

int cmesh__claims_on_ctl(struct cmesh__link *l, const unsigned char *buf,
			 int len, const int *fds, uint32_t nfds)
{
	const struct cmesh__claim_ops *ops =
		atomic_load_explicit(&claim_ops, memory_order_acquire);
	struct cmesh_ctl_claim m;
	struct cmesh__lane *to;
	struct found f = { 0 };
	bool produces;
	uint64_t t[2];
	uint32_t mark;
	int r, half;

	if (len != (int)sizeof(m) || nfds != 1)
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	produces = m.port.kind == CMESH_PORT_READ;
	/*
	 * A sender's claim may name a mark, either the token to list our
	 * end under (shm/proto.h): not a port's.
	 */
	mark = m.port.home;
	m.port.home = 0;
	t[0] = m.port.list[0];
	t[1] = m.port.list[1];
	m.port.list[0] = m.port.list[1] = 0;
	if (m.hdr.len != sizeof(m) || !(m.token[0] | m.token[1]) ||
	    (m.port.kind != CMESH_PORT_WRITE && !produces) || m.port.flags ||
	    (mark && !produces) || !cmesh__lanes_port_ok(l, &m.port))
		return -EPROTO;
	r = ops ? claim_take(ops, m.token, m.type_fp, produces, mark != 0, &f) :
		  -ENOENT;
	if (r == -EPROTO)
		return r;
	if (r == -EAGAIN) {
		/* Claimable later: the claimer may try again. */
		cmesh__link_claim_later(l, &m.port, fds[0]);
		return 0;
	}
	if (r) {
		/* Nothing to claim (any more): the claimer goes on as it is. */
		cmesh__link_port_drop(l, &m.port, fds[0], false);
		return 0;
	}
	if (!(t[0] | t[1]))
		random_token(t);
	/* fds[0] is taken in every case; the answer waits for what we do. */
	r = cmesh__lanes_import(l, &m.port, fds[0], f.type, f.max_backlog,
				f.spin_ns, t, &half, &to);
	if (r) {
		if (!mark) /* it did not go: the token is the lane's still */
			claim_done(m.token, f.serial, false);
		ops->unget(f.home);
		if (r == -EPROTO)
			cmesh__link_fail(l, r);
		return 0;
	}
	to->token[0] = t[0];
	to->token[1] = t[1];
	/* Before any sender or export can see it: the claimer's own. */
	if (m.mine[0] | m.mine[1]) {
		to->peer_token[0] = m.mine[0];
		to->peer_token[1] = m.mine[1];
		to->peer_node = l->peer_proc;
	}
	/*
	 * A receiver's claim: the senders here write `to` from now on. A
	 * sender's: our receiver reads `to` once the sender's old lane ends.
	 */
	r = produces ? ops->admit(f.home, f.serial, mark, to) :
		       ops->redirect(f.home, f.ln, f.serial, to);
	/*
	 * Spent once it holds. A sender's claim that the receiver refused
	 * for now (-EOPNOTSUPP: a come-home's gate, a move under way; or
	 * -ENOMEM) leaves the token listed: the claimer's retry may find the
	 * gate open.
	 */
	if (!mark)
		claim_done(m.token, f.serial,
			   !(produces && (r == -EOPNOTSUPP || r == -ENOMEM)));
	/*
	 * Taken: answered with our half and t. Not (the senders are all
	 * gone, the receiver came home or went, the lane
	 * failed, or the channel took its claims): DROPPED, and the claimer
	 * goes on with what it has.
	 */
	if (r)
		cmesh__log(CMESH__LOG_DEBUG, "claim of lane %u: %s", to->id,
			   cmesh_strerror(r));
	cmesh__lanes_answer(l, to, t, half, r == 0);
	ops->unget(f.home);
	return 0;
}

/* ---- REROUTE: a forwarder's hop that can end ---- */

void cmesh__link_reroute(struct cmesh__link *l, uint32_t id, uint64_t node,
			 const uint64_t tok[2], uint32_t mark)
{
	struct cmesh_ctl_reroute m = { 0 };

	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_REROUTE, sizeof(m));
	m.id = id;
	m.mark = mark;
	m.node = node;
	m.token[0] = tok[0];
	m.token[1] = tok[1];
	cmesh__lanes_ctl_send(l, &m, sizeof(m), -1);
}

int cmesh__reroute_on_ctl(struct cmesh__link *l, const unsigned char *buf,
			  int len, uint32_t nfds)
{
	const struct cmesh__claim_ops *ops =
		atomic_load_explicit(&claim_ops, memory_order_acquire);
	struct cmesh_ctl_reroute m;
	struct cmesh__lane *ln;
	void *home = NULL;
	uint64_t serial = 0;
	int r = 0;

	if (len != (int)sizeof(m) || nfds)
		return -EPROTO;
	memcpy(&m, buf, sizeof(m));
	if (m.hdr.len != sizeof(m) || m.hdr.reserved || !m.node || !m.mark ||
	    !(m.token[0] | m.token[1]) || m.node == l->peer_proc ||
	    m.node == cmesh__proc_id())
		return -EPROTO;
	pthread_once(&home_once, home_init);
	/* In the table under att_lock: the link thread frees it after. */
	pthread_mutex_lock(&l->att_lock);
	ln = cmesh__lanes_lookup(l, m.id);
	/*
	 * Ours to write, a port's, no reply port's. None (any more): it
	 * ended here while the REROUTE was on its way.
	 */
	if (ln && (!ln->dynamic || !ln->is_out || ln->poolable)) {
		r = -EPROTO;
	} else if (ln && ops) {
		pthread_mutex_lock(&home_lock);
		home = atomic_load_explicit(&ln->home_q, memory_order_relaxed);
		if (home && !ops->take(home))
			home = NULL;
		pthread_mutex_unlock(&home_lock);
		serial = ln->serial;
	}
	pthread_mutex_unlock(&l->att_lock);
	/* A lane with no home (no channel sender's queue) claims nothing. */
	if (home) {
		ops->reroute(home, ln, serial, m.node, m.token, m.mark);
		ops->unget(home);
	}
	return r;
}

int cmesh__link_claim_local(const uint64_t token[2], const cmesh_type *type,
			    bool marked, void **home, uint64_t *serial)
{
	const struct cmesh__claim_ops *ops =
		atomic_load_explicit(&claim_ops, memory_order_acquire);
	struct found f = { 0 };
	uint64_t fp;
	int r;

	if (!ops || cmesh_type_fingerprint(type, &fp))
		return -ENOENT;
	/* A sender's lane to us (an in lane): we "produce", as a claimer. */
	r = claim_take(ops, token, fp, true, marked, &f);
	if (r)
		return r == -EAGAIN ? -ENOENT : r;
	*home = f.home;
	*serial = f.serial;
	return 0;
}

void cmesh__link_claim_local_done(const uint64_t token[2], uint64_t serial,
				  bool held)
{
	claim_done(token, serial, held);
}

/*
 * The answer to a claim of ours on lane `ln`: its queue (with a
 * reference, unless it is going) redirects its sends to out lane `ln` (a
 * sender's claim held), or (refused, either kind) may try again.
 */
static void claim_answered(struct cmesh__lane *ln, bool refused, bool later)
{
	const struct cmesh__claim_ops *ops =
		atomic_load_explicit(&claim_ops, memory_order_acquire);
	void *home;

	pthread_mutex_lock(&home_lock);
	home = atomic_load_explicit(&ln->home_q, memory_order_relaxed);
	if (home && !(ops && ops->take(home)))
		home = NULL;
	pthread_mutex_unlock(&home_lock);
	if (!home)
		return; /* the sender is gone: its queue ended the lane */
	/* Not done (its senders went): the queue ends `ln` when it goes. */
	if (refused)
		ops->refused(home, ln, later);
	else
		ops->redirect(home, ln->claim_from, ln->claim_from_serial, ln);
	ops->unget(home);
}

void cmesh__claims_answered(struct cmesh__lane *ln)
{
	claim_answered(ln, false, false);
}

void cmesh__claims_refused(struct cmesh__lane *ln, bool later)
{
	claim_answered(ln, true, later);
}

/* ---- a CLAIM we send ---- */

int cmesh__link_claim(struct cmesh__link *l, const uint64_t token[2],
		      uint32_t mark, bool produce, const cmesh_type *type,
		      uint32_t ring_cap, uint64_t max_backlog, int64_t spin_ns,
		      uint64_t list[2],
		      int (*attach)(void *ctx, struct cmesh__lane *ln),
		      void *ctx)
{
	struct cmesh_ctl_claim m = { 0 };
	struct cmesh__port_out po;
	int r;

	r = cmesh_type_fingerprint(type, &m.type_fp);
	if (r)
		return r;
	pthread_mutex_lock(&l->att_lock);
	if (l->nclaims >= MAX_CLAIMS)
		r = -ENOSPC;
	else
		l->nclaims++;
	pthread_mutex_unlock(&l->att_lock);
	if (r)
		return r;
	r = cmesh__link_lane_export(l, produce, type, ring_cap, max_backlog,
				    spin_ns, &po);
	if (r) {
		pthread_mutex_lock(&l->att_lock);
		l->nclaims--;
		pthread_mutex_unlock(&l->att_lock);
		return r;
	}
	/* Before the CLAIM goes: its answer may carry a token (and the
	 * link counts it among nclaims until it is freed). */
	po.lane->claiming = true;
	/*
	 * The peer lists its end under a token of ours, named before the
	 * answer comes, so that the endpoint sent on meanwhile names that
	 * end (port.c export_any()) and is claimed there, not forwarded for
	 * good.
	 */
	if (list && (list[0] | list[1])) {
		po.lane->peer_token[0] = list[0];
		po.lane->peer_token[1] = list[1];
	} else {
		cmesh__link_token_new(po.lane->peer_token);
		if (list) {
			list[0] = po.lane->peer_token[0];
			list[1] = po.lane->peer_token[1];
		}
	}
	if (po.lane->peer_token[0] | po.lane->peer_token[1]) {
		po.lane->peer_node = l->peer_proc;
		po.lane->peer_early = true;
	}
	/* Its reader first: once claimed, the peer's senders write it. */
	r = attach(ctx, po.lane);
	if (r) {
		close(po.fd);
		cmesh__link_lane_unsent(po.lane, false);
		cmesh__link_lane_release(po.lane);
		return r;
	}
	cmesh__ctl_hdr_fill(&m.hdr, CMESH_CTL_CLAIM, sizeof(m));
	m.token[0] = token[0];
	m.token[1] = token[1];
	m.port = po.desc;
	m.port.home = produce ? mark : 0; /* shm/proto.h, CLAIM */
	if (po.lane->peer_early) {
		m.port.list[0] = po.lane->peer_token[0];
		m.port.list[1] = po.lane->peer_token[1];
	}
	/* attach() listed it with a token: the far end's, for a claim. */
	cmesh__link_lane_token(po.lane, m.mine);
	/* Now, or after what waits for the socket: it takes the fd. */
	cmesh__lanes_ctl_send(l, &m, sizeof(m), po.fd);
	cmesh__link_lane_sent(po.lane);
	return 0;
}
