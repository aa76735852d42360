/* SPDX-License-Identifier: MIT */
/*
 * test_stress_moves2.c - what test_stress_moves.c does not cover, in the
 * same three-process randomized harness: oneshot ends (both) moved at
 * random and answered at random moments; receivers that are members of
 * a waitset waited on by another thread, or blocked in recv_ctx in a
 * thread of their own, while lanes join them and while they move (a
 * blocked receiver is cancelled and joined before it is sent: a handle is
 * used by one thread at a time); and P2 killed (SIGKILL) mid-run, mid-move
 * (right after it sent an endpoint away) or right after an endpoint
 * arrived: every endpoint in the survivors must then end (receivers with
 * -EPIPE or -ECONNRESET, senders with closed or -ECONNRESET) within a
 * bound, per-sender FIFO without gaps, no silent loss (a receiver that
 * ends with -EPIPE got every message of every sender), and no fds or
 * memfd mappings left behind in the survivors.
 *
 * STRESS_SEED, STRESS_STEPS, STRESS_NCH, STRESS_MODES (bitmask of receiver
 * modes: 1 try_recv, 2 waitset member, 4 blocked thread) vary a run.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/mesh.h"
#include "helpers/topo.h"
#include "link_int.h"
#include "reg.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

TestSuite(stress2, .init = tu_suite_init, .fini = tu_suite_fini);

#define NPROC 3
#define MAXS 16	 /* senders (sids) per channel */
#define MAXE 256 /* entries */
#define MAXCH 24
#define QKEY 0xffffu /* the waiter's quit context */

struct item {
	uint32_t sid;
	uint32_t ch;
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(item_type, struct item);

enum {
	C_NEW = 1,   /* make channel ch: stream eid, rx eid2 */
	C_NEWOS,     /* make oneshot ch: otx eid, orx eid2 */
	C_HOLD,	     /* an entry arrives (with its state) */
	C_PASS,	     /* send entry eid to dest (die: then SIGKILL self) */
	C_CLONE,     /* clone stream eid into eid2 */
	C_FINISH,    /* send the rest of stream eid (the oneshot's value) */
	C_DRAIN,     /* drain rx eid to its end (thread) */
	C_DROPRX,    /* free rx eid */
	C_CLOSEWAIT, /* wait until stream eid sees its receiver gone */
	C_QUIT,
	R_ARRIVED,
	R_FINISHED,
	R_DRAINED,
	R_DROPPED,
	R_CLOSED,
	R_ERROR,
};

struct cmsg {
	uint32_t op, eid, eid2, dest, ch, sid, from, ended;
	uint32_t die, pad;
	int64_t rc;
	uint64_t next, total;
	uint64_t rnext[MAXS];
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
};
CMESH_TYPE_DEFINE(cmsg_type, struct cmsg,
		  CMESH_FIELD_SENDER(struct cmsg, tx, item_type),
		  CMESH_FIELD_RECEIVER(struct cmsg, rx, item_type),
		  CMESH_FIELD_ONESHOT_SENDER(struct cmsg, otx, item_type),
		  CMESH_FIELD_ONESHOT_RECEIVER(struct cmsg, orx, item_type));

/* ---- mesh (as test_moves.c) ------------------------------------------- */

static int me;
static cmesh_node *node[TU_MESH_MAX];
static cmesh_sender *to[TU_MESH_MAX];
static cmesh_receiver *from[TU_MESH_MAX];
static pid_t pids[NPROC];
static int sp[TU_MESH_MAX][TU_MESH_MAX][2];

/* This process's view of the mesh (helpers/mesh.h). */
static struct tu_mesh mesh(void)
{
	return (struct tu_mesh){ .n = NPROC,
				 .me = me,
				 .apart_i = -1,
				 .apart_j = -1,
				 .sp = sp,
				 .type = &cmsg_type,
				 .node = node,
				 .to = to,
				 .from = from };
}

static int join_all(void)
{
	struct tu_mesh m = mesh();

	return tu_mesh_join(&m);
}

static void close_others(void)
{
	struct tu_mesh m = mesh();

	tu_mesh_close_others(&m);
}

static void leave_all(void)
{
	struct tu_mesh m = mesh();

	tu_mesh_leave(&m);
}

/* ---- per-process state ------------------------------------------------ */

enum {
	E_NONE,
	E_STREAM,
	E_RX,
	E_OTX,
	E_ORX
};

enum {
	M_POLL,	   /* the streamer's try_recv */
	M_WS,	   /* a member of the waiter's waitset */
	M_BLOCKED, /* recv_ctx in a thread of its own */
};

struct blocker;

struct ent {
	int kind;
	int mode;
	bool ended; /* rx saw its end (end_rc), stream an error */
	bool draining;
	int end_rc;
	uint32_t ch, sid;
	uint64_t next, total;
	uint64_t rnext[MAXS];
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
	struct blocker *bl;
};

struct blocker {
	pthread_t th;
	cmesh_ctx *ctx;
	cmesh_cancel *cc;
	uint32_t eid;
	struct ent e; /* the receiver and its state while the thread runs */
	atomic_bool done;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct ent ents[MAXE];
static atomic_bool quitting;
static atomic_int failures;
static uint64_t prng, aprng;
static bool deaths;	   /* P2 may die: -ECONNRESET is an end, not an error */
static unsigned modes = 7; /* STRESS_MODES */
static __thread uint8_t trail_buf[4096];
static cmesh_waitset *wws; /* the waiter's */
static cmesh_ctx *quit_ctx;
static cmesh_cancel *quit_cc;
static atomic_int n_reset_ends;

static uint32_t trail_len(uint32_t ch, uint32_t sid, uint64_t seq)
{
	uint64_t h = (seq * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)ch << 40) ^
		     ((uint64_t)sid << 32);

	h ^= h >> 29;
	return h % 4 == 0 ? (uint32_t)(h >> 8) % 300 : 0;
}

static uint32_t trail_seed(uint32_t ch, uint32_t sid, uint64_t seq)
{
	return (uint32_t)(seq * 2654435761u) ^ (ch << 24) ^ (sid << 16);
}

/* P0: the agent's own commands and the driver's reports. */
static cmesh_sender *self_tx, *rep_tx;
static cmesh_receiver *self_rx, *rep_rx;
static pthread_mutex_t rep_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void report(struct cmsg *m)
{
	int r;

	m->from = (uint32_t)me;
	m->tx = NULL;
	m->rx = NULL;
	m->otx = NULL;
	m->orx = NULL;
	if (me == 0) {
		pthread_mutex_lock(&rep_mu);
		r = cmesh_sender_send(rep_tx, m, NULL, 0);
		pthread_mutex_unlock(&rep_mu);
	} else {
		r = cmesh_sender_send(to[0], m, NULL, 0);
	}
	if (r) {
		fprintf(stderr, "P%d: report op %u: %d\n", me, m->op, r);
		atomic_fetch_add(&failures, 1);
	}
}

static void report_error(uint32_t eid, const char *what, long long a,
			 long long b)
{
	struct cmsg m = { .op = R_ERROR, .eid = eid, .rc = a };

	fprintf(stderr, "P%d: ERROR eid %u: %s (%lld, %lld)\n", me, eid, what,
		a, b);
	atomic_fetch_add(&failures, 1);
	report(&m);
}

static bool check_item(uint32_t eid, struct ent *e, const struct item *it,
		       int len)
{
	if (it->ch != e->ch || it->sid >= MAXS) {
		report_error(eid, "foreign item", it->ch, it->sid);
		return false;
	}
	if (it->seq != e->rnext[it->sid]) {
		fprintf(stderr,
			"P%d: rx eid %u ch %u sid %u: seq %llu, want %llu\n",
			me, eid, e->ch, it->sid, (unsigned long long)it->seq,
			(unsigned long long)e->rnext[it->sid]);
		report_error(eid, "out of order", (long long)it->seq,
			     (long long)e->rnext[it->sid]);
		e->rnext[it->sid] = it->seq + 1;
		return false;
	}
	e->rnext[it->sid]++;
	if ((uint32_t)len != trail_len(it->ch, it->sid, it->seq) ||
	    tu_check(trail_buf, (size_t)len,
		     trail_seed(it->ch, it->sid, it->seq)) != (size_t)len) {
		report_error(eid, "bad trail", len, 0);
		return false;
	}
	return true;
}

/* A receive's result on entry e (owned by the caller). */
static void take(uint32_t eid, struct ent *e, int r, const struct item *it)
{
	if (r >= 0) {
		check_item(eid, e, it, r);
		return;
	}
	if (r == -EPIPE || (r == -ECONNRESET && deaths)) {
		e->ended = true;
		e->end_rc = r;
		return;
	}
	report_error(eid, "recv", r, e->kind);
	e->ended = true;
	e->end_rc = r;
}

static int ent_try_recv(struct ent *e, struct item *it)
{
	if (e->kind == E_ORX)
		return cmesh_oneshot_try_recv(e->orx, it, trail_buf,
					      sizeof(trail_buf));
	return cmesh_receiver_try_recv(e->rx, it, trail_buf, sizeof(trail_buf));
}

static int send_seq(struct ent *e, uint64_t seq)
{
	struct item it = { .sid = e->sid, .ch = e->ch, .seq = seq };
	uint32_t len = trail_len(e->ch, e->sid, seq);
	int r;

	if (len)
		tu_fill(trail_buf, len, trail_seed(e->ch, e->sid, seq));
	if (e->kind == E_OTX) {
		r = cmesh_oneshot_send(e->otx, &it, len ? trail_buf : NULL,
				       len);
		e->otx = NULL;
		return r;
	}
	return cmesh_sender_send(e->tx, &it, len ? trail_buf : NULL, len);
}

static void ent_free(struct ent *e)
{
	cmesh_sender_free(e->tx);
	cmesh_receiver_free(e->rx);
	cmesh_oneshot_sender_free(e->otx);
	cmesh_oneshot_receiver_free(e->orx);
	e->tx = NULL;
	e->rx = NULL;
	e->otx = NULL;
	e->orx = NULL;
}

/* ---- receivers in other threads --------------------------------------- */

static void *blocker_run(void *arg)
{
	struct blocker *b = arg;
	struct ent *e = &b->e;
	struct item it;

	while (!e->ended) {
		int r;

		if (e->kind == E_ORX)
			r = cmesh_oneshot_recv_ctx(e->orx, b->ctx, &it,
						   trail_buf,
						   sizeof(trail_buf));
		else
			r = cmesh_receiver_recv_ctx(e->rx, b->ctx, &it,
						    trail_buf,
						    sizeof(trail_buf));
		if (r == -ECANCELED)
			break;
		take(b->eid, e, r, &it);
	}
	atomic_store(&b->done, true);
	return NULL;
}

/* mu held: the entry's receiver goes to a thread of its own. */
static void blocker_start(uint32_t eid, struct ent *e)
{
	struct blocker *b = calloc(1, sizeof(*b));

	if (!b || cmesh_ctx_with_cancel(NULL, &b->ctx, &b->cc)) {
		free(b);
		e->mode = M_POLL;
		return;
	}
	b->eid = eid;
	b->e = *e;
	e->bl = b;
	e->rx = NULL;
	e->orx = NULL;
	tu_thread_start(&b->th, blocker_run, b);
}

/* The receiver and its state back from its thread into e. */
static void blocker_stop(struct ent *e)
{
	struct blocker *b = e->bl;

	if (!b)
		return;
	cmesh_cancel_fire(b->cc);
	tu_thread_join(b->th);
	*e = b->e;
	e->bl = NULL;
	e->mode = M_POLL;
	cmesh_ctx_free(b->ctx);
	cmesh_cancel_free(b->cc);
	free(b);
}

static void ws_add(uint32_t eid, struct ent *e)
{
	int r = e->kind == E_ORX ? cmesh_waitset_add_oneshot(wws, e->orx, eid) :
				   cmesh_waitset_add_receiver(wws, e->rx, eid);

	if (r) {
		report_error(eid, "waitset add", r, 0);
		e->mode = M_POLL;
	}
}

static void ws_remove(uint32_t eid, struct ent *e)
{
	int r = e->kind == E_ORX ? cmesh_waitset_remove_oneshot(wws, e->orx) :
				   cmesh_waitset_remove_receiver(wws, e->rx);

	if (r)
		report_error(eid, "waitset remove", r, 0);
	e->mode = M_POLL;
}

/* mu held: a receiver entry takes a mode. */
static void rx_mode(uint32_t eid, struct ent *e)
{
	int mode;

	for (;;) {
		mode = (int)(rnd(&aprng) % 3);
		if (modes & (1u << mode))
			break;
	}
	e->mode = mode;
	if (e->ended)
		e->mode = M_POLL;
	else if (mode == M_WS)
		ws_add(eid, e);
	else if (mode == M_BLOCKED)
		blocker_start(eid, e);
}

/* mu held: back to plain polling (before a move, drop or drain). */
static void rx_plain(uint32_t eid, struct ent *e, bool leave_ws)
{
	if (e->mode == M_BLOCKED)
		blocker_stop(e);
	else if (e->mode == M_WS && leave_ws)
		ws_remove(eid, e);
	e->mode = M_POLL;
}

static void *waiter(void *arg)
{
	(void)arg;
	for (;;) {
		uint64_t key;
		int r = cmesh_waitset_wait(wws, tu_now_ns() + TU_MS(1000),
					   &key);

		if (r == -ETIMEDOUT)
			continue;
		if (r) {
			report_error(0, "waiter", r, 0);
			return NULL;
		}
		if (key == QKEY)
			return NULL;
		pthread_mutex_lock(&mu);
		if (key < MAXE) {
			struct ent *e = &ents[key];

			if ((e->kind == E_RX || e->kind == E_ORX) &&
			    e->mode == M_WS && !e->ended) {
				for (int n = 0; n < 64 && !e->ended; n++) {
					struct item it;
					int rr = ent_try_recv(e, &it);

					if (rr == -EAGAIN)
						break;
					take((uint32_t)key, e, rr, &it);
				}
				/* level-triggered: an ended member leaves */
				if (e->ended) {
					int rm =
						e->kind == E_ORX ?
							cmesh_waitset_remove_oneshot(
								wws, e->orx) :
							cmesh_waitset_remove_receiver(
								wws, e->rx);
					if (rm)
						report_error((uint32_t)key,
							     "ws remove", rm,
							     0);
					e->mode = M_POLL;
				}
			}
		}
		pthread_mutex_unlock(&mu);
	}
}

/* ---- streamer thread --------------------------------------------------- */

static void *streamer(void *arg)
{
	uint64_t s = prng ^ 0x5151;

	(void)arg;
	while (!atomic_load(&quitting)) {
		pthread_mutex_lock(&mu);
		for (uint32_t i = 0; i < MAXE; i++) {
			struct ent *e = &ents[i];

			if (e->kind == E_STREAM && !e->ended) {
				uint64_t n = 1 + rnd(&s) % 24;

				for (; n && e->next <= e->total; n--) {
					int r = send_seq(e, e->next);

					if (r == 0) {
						e->next++;
						continue;
					}
					e->ended = true;
					e->end_rc = r;
					if (r != -EPIPE &&
					    !(r == -ECONNRESET && deaths))
						report_error(i, "send", r, 0);
					break;
				}
			} else if ((e->kind == E_RX || e->kind == E_ORX) &&
				   e->mode == M_POLL && !e->ended &&
				   !e->draining) {
				uint64_t n = 1 + rnd(&s) % 64;
				struct item it;

				for (; n && !e->ended; n--) {
					int r = ent_try_recv(e, &it);

					if (r == -EAGAIN)
						break;
					take(i, e, r, &it);
				}
			}
		}
		pthread_mutex_unlock(&mu);
		{
			struct timespec ts = { 0, (long)(rnd(&s) % 400000) };

			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* ---- jobs --------------------------------------------------------------- */

struct job {
	uint32_t eid;
	int op;
	struct ent e;
};

#define MAXJOBS 96
static pthread_t jobs[MAXJOBS];
static int njobs;

/* How long a receiver in a thread or waitset may take to see its end. */
#define END_MS 5000

static void *job_run(void *arg)
{
	struct job *j = arg;
	struct ent *e = &j->e;
	struct cmsg m = { .eid = j->eid, .ch = e->ch, .sid = e->sid };

	if (j->op == C_DRAIN) {
		struct item it;
		int64_t end = tu_now_ns() + TU_MS(END_MS);

		if (e->mode == M_WS) {
			/* The waiter must see the end by itself. */
			for (;;) {
				bool done;

				pthread_mutex_lock(&mu);
				done = ents[j->eid].ended;
				if (done || tu_now_ns() > end) {
					if (!done)
						report_error(
							j->eid,
							"waitset member "
							"never saw its end",
							0, 0);
					rx_plain(j->eid, &ents[j->eid], !done);
					*e = ents[j->eid];
					memset(&ents[j->eid], 0, sizeof(*e));
					pthread_mutex_unlock(&mu);
					break;
				}
				pthread_mutex_unlock(&mu);
				tu_sleep_ms(1);
			}
		} else if (e->mode == M_BLOCKED) {
			while (!atomic_load(&e->bl->done) && tu_now_ns() < end)
				tu_sleep_ms(1);
			if (!atomic_load(&e->bl->done))
				report_error(j->eid,
					     "blocked receiver never saw its "
					     "end",
					     0, 0);
			rx_plain(j->eid, e, false);
		}
		while (!e->ended) {
			int r;

			if (e->kind == E_ORX)
				r = cmesh_oneshot_recv_deadline(
					e->orx, tu_now_ns() + TU_MS(END_MS),
					&it, trail_buf, sizeof(trail_buf));
			else
				r = cmesh_receiver_recv_deadline(
					e->rx, tu_now_ns() + TU_MS(END_MS), &it,
					trail_buf, sizeof(trail_buf));
			if (r == -ETIMEDOUT) {
				e->ended = true;
				e->end_rc = r;
				break;
			}
			take(j->eid, e, r, &it);
		}
		m.op = R_DRAINED;
		m.rc = e->end_rc;
		if (e->end_rc == -ECONNRESET)
			atomic_fetch_add(&n_reset_ends, 1);
		memcpy(m.rnext, e->rnext, sizeof(m.rnext));
		ent_free(e);
	} else { /* C_CLOSEWAIT */
		int64_t t0 = tu_now_ns(), end = t0 + TU_MS(END_MS);
		int r = 0, c = 0;

		while (tu_now_ns() < end) {
			if (e->kind == E_OTX) {
				c = cmesh_oneshot_sender_is_closed(e->otx);
			} else {
				if (!e->ended) {
					r = send_seq(e, e->next);
					if (r == 0)
						e->next++;
					else if (r != -EPIPE &&
						 r != -ECONNRESET)
						break;
					else
						c = r == -EPIPE ? 1 : r;
				}
				if (!c)
					c = cmesh_sender_is_closed(e->tx);
				if (!c && e->ended)
					c = e->end_rc == -EPIPE ? 1 : e->end_rc;
			}
			if (c)
				break;
			tu_sleep_ms(1);
		}
		m.op = R_CLOSED;
		m.rc = c ? c : (r ? r : -ETIMEDOUT);
		m.next = (uint64_t)((tu_now_ns() - t0) / 1000000);
		ent_free(e);
	}
	report(&m);
	free(j);
	return NULL;
}

static void job_start(uint32_t eid, int op, struct ent *e)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j || njobs >= MAXJOBS) {
		report_error(eid, "no job slot", njobs, 0);
		free(j);
		return;
	}
	j->eid = eid;
	j->op = op;
	j->e = *e;
	tu_thread_start(&jobs[njobs++], job_run, j);
}

/* ---- agent --------------------------------------------------------------- */

static int send_to(int k, struct cmsg *m)
{
	if (k == me)
		return cmesh_sender_send(self_tx, m, NULL, 0);
	return cmesh_sender_send(to[k], m, NULL, 0);
}

static bool is_rx(int kind)
{
	return kind == E_RX || kind == E_ORX;
}

static bool agent_handle(struct cmsg *m)
{
	struct cmsg r = { .eid = m->eid };
	struct ent *e;
	int rc;

	if (m->eid >= MAXE || m->eid2 >= MAXE) {
		report_error(m->eid, "bad eid", m->eid, m->eid2);
		return false;
	}
	e = &ents[m->eid];
	switch (m->op) {
	case R_ARRIVED:
	case R_FINISHED:
	case R_DRAINED:
	case R_DROPPED:
	case R_CLOSED:
	case R_ERROR:
		pthread_mutex_lock(&rep_mu);
		rc = cmesh_sender_send(rep_tx, m, NULL, 0);
		pthread_mutex_unlock(&rep_mu);
		if (rc)
			atomic_fetch_add(&failures, 1);
		return false;
	case C_QUIT:
		return true;
	case C_NEW:
	case C_NEWOS: {
		struct ent *e2 = &ents[m->eid2];
		bool os = m->op == C_NEWOS;

		pthread_mutex_lock(&mu);
		if (e->kind || e2->kind) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "NEW over a live entry", 0, 0);
			return false;
		}
		memset(e, 0, sizeof(*e));
		memset(e2, 0, sizeof(*e2));
		if (os) {
			rc = cmesh_oneshot_new(&item_type, &e->otx, &e2->orx);
		} else {
			cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;

			o.ring_size = (uint32_t)(m->pad ? 4096 : 0);
			rc = cmesh_channel_new(&item_type, &o, &e->tx, &e2->rx);
		}
		if (rc) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "new", rc, 0);
			return false;
		}
		e->kind = os ? E_OTX : E_STREAM;
		e->ch = m->ch;
		e->sid = 0;
		e->next = 1;
		e->total = os ? 1 : m->total;
		e2->kind = os ? E_ORX : E_RX;
		e2->ch = m->ch;
		for (int i = 0; i < MAXS; i++)
			e2->rnext[i] = 1;
		rx_mode(m->eid2, e2);
		pthread_mutex_unlock(&mu);
		r.op = R_ARRIVED;
		report(&r);
		r.eid = m->eid2;
		report(&r);
		return false;
	}
	case C_HOLD:
		if (m->die)
			raise(SIGKILL); /* the endpoint just arrived */
		pthread_mutex_lock(&mu);
		if (e->kind) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "HOLD over a live entry", 0, 0);
			return false;
		}
		memset(e, 0, sizeof(*e));
		e->ch = m->ch;
		e->sid = m->sid;
		e->next = m->next;
		e->total = m->total;
		memcpy(e->rnext, m->rnext, sizeof(e->rnext));
		e->ended = m->ended != 0;
		e->end_rc = (int)m->rc;
		e->tx = m->tx;
		e->rx = m->rx;
		e->otx = m->otx;
		e->orx = m->orx;
		e->kind = m->tx	 ? E_STREAM :
			  m->rx	 ? E_RX :
			  m->otx ? E_OTX :
			  m->orx ? E_ORX :
				   E_NONE;
		if (is_rx(e->kind))
			rx_mode(m->eid, e);
		pthread_mutex_unlock(&mu);
		if (!e->kind) {
			report_error(m->eid, "HOLD without endpoint", 0, 0);
			return false;
		}
		r.op = R_ARRIVED;
		report(&r);
		return false;
	case C_PASS: {
		struct cmsg p = { .op = C_HOLD, .eid = m->eid };

		pthread_mutex_lock(&mu);
		if (!e->kind) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "PASS of nothing", 0, 0);
			return false;
		}
		/* A waitset member may go as it is (it leaves its waitset). */
		if (is_rx(e->kind))
			rx_plain(m->eid, e, rnd(&aprng) % 2);
		p.ch = e->ch;
		p.sid = e->sid;
		p.next = e->next;
		p.total = e->total;
		p.ended = e->ended;
		p.rc = e->end_rc;
		p.die = m->pad; /* the driver's "die on arrival" */
		memcpy(p.rnext, e->rnext, sizeof(p.rnext));
		p.tx = e->tx;
		p.rx = e->rx;
		p.otx = e->otx;
		p.orx = e->orx;
		memset(e, 0, sizeof(*e));
		rc = send_to((int)m->dest, &p);
		pthread_mutex_unlock(&mu);
		/*
		 * To P2 as it dies: lost with it (the driver counts what
		 * went there as lost), not an error.
		 */
		if (rc && !(deaths && rc == -ECONNRESET))
			report_error(m->eid, "PASS send", rc, m->dest);
		if (m->die)
			raise(SIGKILL); /* mid-move */
		return false;
	}
	case C_CLONE: {
		struct ent *e2 = &ents[m->eid2];

		pthread_mutex_lock(&mu);
		if (e->kind != E_STREAM || e2->kind) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "bad CLONE", e->kind, e2->kind);
			return false;
		}
		memset(e2, 0, sizeof(*e2));
		rc = cmesh_sender_clone(e->tx, &e2->tx);
		if (rc == 0) {
			e2->kind = E_STREAM;
			e2->ch = e->ch;
			e2->sid = m->sid;
			e2->next = 1;
			e2->total = m->total;
		}
		pthread_mutex_unlock(&mu);
		if (rc) {
			report_error(m->eid, "clone", rc, 0);
			return false;
		}
		r.op = R_ARRIVED;
		r.eid = m->eid2;
		report(&r);
		return false;
	}
	case C_FINISH:
		pthread_mutex_lock(&mu);
		if (e->kind != E_STREAM && e->kind != E_OTX) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "FINISH of no stream", e->kind, 0);
			return false;
		}
		r.rc = e->ended ? e->end_rc : 0;
		while (!e->ended && e->next <= e->total) {
			rc = send_seq(e, e->next);
			if (rc) {
				r.rc = rc;
				break;
			}
			e->next++;
		}
		ent_free(e);
		memset(e, 0, sizeof(*e));
		pthread_mutex_unlock(&mu);
		r.op = R_FINISHED;
		report(&r);
		return false;
	case C_DRAIN:
	case C_CLOSEWAIT: {
		struct ent copy;

		pthread_mutex_lock(&mu);
		if (m->op == C_DRAIN ? !is_rx(e->kind) : is_rx(e->kind)) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "DRAIN/CLOSEWAIT of what?",
				     e->kind, m->op);
			return false;
		}
		copy = *e;
		if (m->op == C_DRAIN && e->mode == M_WS)
			e->draining = true; /* the job takes it */
		else
			memset(e, 0, sizeof(*e));
		pthread_mutex_unlock(&mu);
		job_start(m->eid, (int)m->op, &copy);
		return false;
	}
	case C_DROPRX:
		pthread_mutex_lock(&mu);
		if (!is_rx(e->kind)) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "DROPRX of no rx", e->kind, 0);
			return false;
		}
		rx_plain(m->eid, e, false);
		ent_free(e);
		memset(e, 0, sizeof(*e));
		pthread_mutex_unlock(&mu);
		r.op = R_DROPPED;
		report(&r);
		return false;
	default:
		report_error(m->eid, "bad op", m->op, 0);
		return false;
	}
}

/* The leak check's: what each live link still holds. */
static int dump_link(void *owner, void *arg)
{
	struct cmesh__link *l = owner;

	(void)arg;
	fprintf(stderr,
		"P%d: link to pid %d: refs %u failed %d wake sockets ours %u "
		"theirs %u\n",
		me, (int)atomic_load(&l->peer_pid), atomic_load(&l->refs),
		cmesh__link_failed(l), l->nwown, l->nwpeer);
	return 0;
}

static int agent(void)
{
	cmesh_waitset *ws;
	pthread_t st, wt;
	int r, ret = 0;
	int base_fds, base_maps;

	TOPO_CHECK_EQ(cmesh_waitset_new(&wws), 0);
	TOPO_CHECK_EQ(cmesh_ctx_with_cancel(NULL, &quit_ctx, &quit_cc), 0);
	TOPO_CHECK_EQ(cmesh_waitset_add_ctx(wws, quit_ctx, QKEY), 0);
	base_fds = tu_fd_count();
	base_maps = topo_memfd_map_count();
	TOPO_CHECK_EQ(cmesh_waitset_new(&ws), 0);
	for (int k = 0; k < NPROC; k++)
		if (k != me) {
			TOPO_CHECK_EQ(cmesh_waitset_add_receiver(ws, from[k],
								 (uint64_t)k),
				      0);
		}
	if (me == 0) {
		TOPO_CHECK_EQ(cmesh_waitset_add_receiver(ws, self_rx, NPROC),
			      0);
	}
	tu_thread_start(&st, streamer, NULL);
	tu_thread_start(&wt, waiter, NULL);
	for (;;) {
		uint64_t k;
		struct cmsg m;
		cmesh_receiver *rx;

		r = cmesh_waitset_wait(
			ws, tu_now_ns() + TU_MS(3 * TOPO_WAIT_MS), &k);
		if (r) {
			fprintf(stderr, "P%d: waitset_wait: %d\n", me, r);
			ret = 1;
			break;
		}
		rx = k == NPROC ? self_rx : from[k];
		r = cmesh_receiver_try_recv(rx, &m, NULL, 0);
		if (r == -EAGAIN)
			continue;
		if (r) {
			if (r != -EPIPE && !(deaths && r == -ECONNRESET))
				fprintf(stderr, "P%d: from P%d: %d\n", me,
					(int)k, r);
			cmesh_waitset_remove_receiver(ws, rx);
			if (k == 0 && me != 0)
				break;
			continue;
		}
		if (agent_handle(&m))
			break;
	}
	atomic_store(&quitting, true);
	tu_thread_join(st);
	while (njobs)
		tu_thread_join(jobs[--njobs]);
	cmesh_cancel_fire(quit_cc);
	tu_thread_join(wt);
	cmesh_waitset_free(ws);
	pthread_mutex_lock(&mu);
	for (uint32_t i = 0; i < MAXE; i++) {
		if (ents[i].kind) {
			fprintf(stderr, "P%d: entry %u left (kind %d)\n", me, i,
				ents[i].kind);
			ret = 1;
			rx_plain(i, &ents[i], false);
			ent_free(&ents[i]);
		}
		memset(&ents[i], 0, sizeof(ents[i]));
	}
	pthread_mutex_unlock(&mu);
	cmesh_waitset_free(wws);
	cmesh_ctx_free(quit_ctx);
	cmesh_cancel_free(quit_cc);
	if (atomic_load(&failures))
		ret = 1;
	{
		/*
		 * Reply lanes (a oneshot sender's port whose receiver stays
		 * in its process) are kept for reuse until the link goes, up
		 * to 32 per link each way (ARCHITECTURE, link_pool.c), each
		 * two mappings here: bounded, not a leak.
		 */
		int64_t end = tu_now_ns() + TU_MS(3000);
		int fds, maps, pooled = 2 * (NPROC - 1) * 64;

		while (((fds = tu_fd_count()) > base_fds + 2 ||
			(maps = topo_memfd_map_count()) >
				base_maps + 2 + pooled) &&
		       tu_now_ns() < end)
			tu_sleep_ms(5);
		fds = tu_fd_count();
		maps = topo_memfd_map_count();
		if (fds > base_fds + 2 || maps > base_maps + 2 + pooled) {
			fprintf(stderr,
				"P%d: LEAK? %d fds (was %d), %d memfd maps "
				"(was %d)\n",
				me, fds, base_fds, maps, base_maps);
			tu_fd_dump("leak check");
			cmesh__reg_each(dump_link, NULL);
			ret = 1;
		}
	}
	return ret;
}

/* ---- driver (P0) ----------------------------------------------------------- */

enum {
	D_FREE,
	D_TRANSIT,
	D_AT,
	D_BUSY,
	D_DONE,
	D_LOST
};

struct dent {
	int state;
	int loc;  /* where it is (D_AT, D_BUSY), or goes (D_TRANSIT) */
	int from; /* D_TRANSIT: where it left */
	int kind;
	uint32_t ch, sid;
	uint64_t total;
	int64_t since; /* D_TRANSIT from a dead process: when it died */
};

struct dch {
	bool os;
	uint32_t nsids;
	uint32_t rx_eid;
	uint64_t total[MAXS];
	bool dropfirst;
	bool touched;	     /* an end of it was in P2 */
	bool finish_reset;   /* a FINISH saw -ECONNRESET */
	bool sid_lost[MAXS]; /* that stream died with P2 */
	bool drained;
	int64_t rc;
	uint64_t rnext[MAXS];
};

struct driver {
	uint64_t s;
	struct dent e[MAXE];
	struct dch c[MAXCH];
	uint32_t neid, nch;
	int errors;
	bool dead;
	uint64_t passes, clones, finishes, closewaits, lost;
	int closes_reset, closes_closed;
};

static void d_cmd(int k, struct cmsg *m)
{
	int r;

	if (k == 0)
		r = cmesh_sender_send(self_tx, m, NULL, 0);
	else
		r = cmesh_sender_send(to[k], m, NULL, 0);
	cr_assert_eq(r, 0, "command op %u to P%d: %d", m->op, k, r);
}

static void d_lose(struct driver *d, uint32_t i)
{
	struct dent *e = &d->e[i];
	struct dch *c = &d->c[e->ch];

	e->state = D_LOST;
	d->lost++;
	if (!is_rx(e->kind))
		c->sid_lost[e->sid] = true;
}

static void d_take(struct driver *d, const struct cmsg *m)
{
	struct dent *e = &d->e[m->eid];
	struct dch *c = &d->c[e->ch];

	switch (m->op) {
	case R_ARRIVED:
		cr_assert(e->state == D_TRANSIT || e->state == D_LOST,
			  "eid %u arrived in state %d", m->eid, e->state);
		if (d->dead && m->from == 2)
			break; /* said before it died: lost there */
		if (e->state == D_LOST) {
			d->lost--;
			if (!is_rx(e->kind))
				c->sid_lost[e->sid] = false;
		}
		e->state = D_AT;
		e->loc = (int)m->from;
		break;
	case R_FINISHED:
		e->state = D_DONE;
		if (m->rc == -ECONNRESET && c->touched && d->dead) {
			c->finish_reset = true;
		} else if (m->rc) {
			fprintf(stderr,
				"driver: eid %u (ch %u sid %u) finish %lld\n",
				m->eid, e->ch, e->sid, (long long)m->rc);
			d->errors++;
		}
		break;
	case R_CLOSED:
		e->state = D_DONE;
		if (m->rc == 1)
			d->closes_closed++;
		else if (m->rc == -ECONNRESET && d->dead)
			d->closes_reset++;
		else {
			fprintf(stderr,
				"driver: stream eid %u (ch %u sid %u) at P%u: "
				"closed %lld after %llu ms\n",
				m->eid, e->ch, e->sid, m->from,
				(long long)m->rc, (unsigned long long)m->next);
			d->errors++;
		}
		break;
	case R_DROPPED:
		e->state = D_DONE;
		break;
	case R_DRAINED:
		e->state = D_DONE;
		c->drained = true;
		c->rc = m->rc;
		memcpy(c->rnext, m->rnext, sizeof(c->rnext));
		break;
	case R_ERROR:
		d->errors++;
		break;
	default:
		cr_assert(0, "driver: op %u", m->op);
	}
}

static int d_awaited(struct driver *d)
{
	int n = 0;

	for (uint32_t i = 0; i < d->neid; i++)
		if (d->e[i].state == D_TRANSIT || d->e[i].state == D_BUSY)
			n++;
	return n;
}

/* Takes reports: all there are (wait false), or until none is awaited. */
static void d_reports(struct driver *d, bool wait)
{
	int64_t end = tu_now_ns() + TU_MS(TOPO_WAIT_MS);
	struct cmsg m;
	int r;

	for (;;) {
		while ((r = cmesh_receiver_try_recv(rep_rx, &m, NULL, 0)) == 0)
			d_take(d, &m);
		cr_assert_eq(r, -EAGAIN, "driver: reports: %d", r);
		if (!wait)
			return;
		if (d->dead) /* what left P2 and did not come is lost */
			for (uint32_t i = 0; i < d->neid; i++)
				if (d->e[i].state == D_TRANSIT &&
				    d->e[i].from == 2 &&
				    tu_now_ns() - d->e[i].since > TU_MS(1000))
					d_lose(d, i);
		if (!d_awaited(d))
			return;
		if (tu_now_ns() > end) {
			for (uint32_t i = 0; i < d->neid; i++)
				if (d->e[i].state == D_TRANSIT ||
				    d->e[i].state == D_BUSY)
					fprintf(stderr,
						"driver: eid %u kind %d ch %u "
						"state %d loc %d from %d\n",
						i, d->e[i].kind, d->e[i].ch,
						d->e[i].state, d->e[i].loc,
						d->e[i].from);
			cr_assert(0, "driver: reports never came");
		}
		r = cmesh_receiver_recv_deadline(
			rep_rx, tu_now_ns() + TU_MS(20), &m, NULL, 0);
		if (r == 0)
			d_take(d, &m);
		else
			cr_assert_eq(r, -ETIMEDOUT, "driver: reports: %d", r);
	}
}

static int d_pick(struct driver *d, int kind, int loc)
{
	uint32_t cand[MAXE], n = 0;

	for (uint32_t i = 0; i < d->neid; i++)
		if (d->e[i].state == D_AT && (!kind || d->e[i].kind == kind) &&
		    (loc < 0 || d->e[i].loc == loc))
			cand[n++] = i;
	if (!n)
		return -1;
	return (int)cand[rnd(&d->s) % n];
}

static int d_dest(struct driver *d, int from_)
{
	if (d->dead)
		return from_ == 0 ? 1 : 0;
	return (from_ + 1 + (int)(rnd(&d->s) % 2)) % NPROC;
}

static void d_pass(struct driver *d, uint32_t i, int dest, uint32_t die_self,
		   uint32_t die_dest)
{
	struct cmsg m = { .op = C_PASS,
			  .eid = i,
			  .dest = (uint32_t)dest,
			  .die = die_self,
			  .pad = die_dest };
	struct dent *e = &d->e[i];

	if (dest == 2 || e->loc == 2)
		d->c[e->ch].touched = true;
	e->from = e->loc;
	e->loc = dest;
	e->state = D_TRANSIT;
	d->passes++;
	d_cmd(e->from, &m);
}

/* P2 is gone (killed, or it killed itself): what it held is lost. */
static void d_dead(struct driver *d)
{
	int st;

	cr_assert_eq(waitpid(pids[2], &st, 0), pids[2]);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		  "P2 ended with status %#x", st);
	pids[2] = 0;
	d->dead = true;
	for (uint32_t i = 0; i < d->neid; i++) {
		struct dent *e = &d->e[i];

		if ((e->state == D_AT || e->state == D_BUSY) && e->loc == 2)
			d_lose(d, i);
		else if (e->state == D_TRANSIT && e->loc == 2)
			d_lose(d, i);
		else if (e->state == D_TRANSIT && e->from == 2)
			e->since = tu_now_ns();
	}
}

static uint32_t d_new(struct driver *d, bool os)
{
	uint32_t ch = d->nch++;
	struct dch *c = &d->c[ch];
	uint32_t te = d->neid++, re = d->neid++;
	int loc = (int)(rnd(&d->s) % NPROC);
	struct cmsg m = { .op = os ? C_NEWOS : C_NEW,
			  .eid = te,
			  .eid2 = re,
			  .ch = ch,
			  .pad = rnd(&d->s) % 3 == 0 };

	c->os = os;
	c->nsids = 1;
	c->total[0] = os ? 1 : 200 + rnd(&d->s) % 2000;
	c->rx_eid = re;
	c->dropfirst = rnd(&d->s) % 4 == 0;
	c->touched = loc == 2;
	m.total = c->total[0];
	d->e[te] = (struct dent){ D_TRANSIT,   loc,
				  loc,	       os ? E_OTX : E_STREAM,
				  ch,	       0,
				  c->total[0], 0 };
	d->e[re] = (struct dent){ D_TRANSIT, loc, loc, os ? E_ORX : E_RX,
				  ch,	     0,	  0,   0 };
	d_cmd(loc, &m);
	return ch;
}

static void drive_end(struct driver *d, uint64_t seed, int steps);

/*
 * kill_at: the step at which P2 dies (-1: never); how: 0 SIGKILL from
 * the driver, 1 P2 sends an endpoint away then kills itself, 2 an
 * endpoint sent to P2 kills it on arrival.
 */
static void drive(uint64_t seed, int steps, uint32_t nch, uint32_t nos,
		  int kill_at)
{
	static struct driver drv;
	struct driver *d = &drv;

	memset(d, 0, sizeof(*d));
	d->s = seed;
	for (uint32_t k = 0; k < nch + nos; k++)
		d_new(d, k >= nch);
	d_reports(d, true);
	for (int step = 0; step < steps; step++) {
		uint64_t a = rnd(&d->s) % 100;
		int i;

		d_reports(d, false);
		if (step == kill_at && !d->dead) {
			int how = (int)(rnd(&d->s) % 3);

			i = how == 1 ? d_pick(d, 0, 2) :
			    how == 2 ? d_pick(d, 0, (int)(rnd(&d->s) % 2)) :
				       -1;
			if (how == 1 && i >= 0) {
				d_pass(d, (uint32_t)i, (int)(rnd(&d->s) % 2), 1,
				       0);
			} else if (how == 2 && i >= 0) {
				d_pass(d, (uint32_t)i, 2, 0, 1);
			} else {
				how = 0;
				kill(pids[2], SIGKILL);
			}
			fprintf(stderr,
				"driver: P2 dies at step %d (how %d, eid %d)\n",
				step, how, i);
			d_dead(d);
			continue;
		}
		if (a < 70) {
			i = d_pick(d, 0, -1);
			if (i >= 0)
				d_pass(d, (uint32_t)i, d_dest(d, d->e[i].loc),
				       0, 0);
		} else if (a < 82) {
			i = d_pick(d, E_STREAM, -1);
			if (i >= 0 && d->c[d->e[i].ch].nsids < MAXS &&
			    d->neid < MAXE) {
				struct dch *c = &d->c[d->e[i].ch];
				uint32_t ne = d->neid++, sid = c->nsids++;
				struct cmsg m = { .op = C_CLONE,
						  .eid = (uint32_t)i,
						  .eid2 = ne,
						  .sid = sid };

				c->total[sid] = m.total =
					200 + rnd(&d->s) % 2000;
				d->e[ne] =
					(struct dent){ D_TRANSIT,   d->e[i].loc,
						       d->e[i].loc, E_STREAM,
						       d->e[i].ch,  sid,
						       m.total,	    0 };
				d->clones++;
				d_cmd(d->e[i].loc, &m);
			}
		} else if (a < 88) {
			/* A stream ends, or a oneshot is answered, mid-run. */
			i = d_pick(d, a < 85 ? E_STREAM : E_OTX, -1);
			if (i >= 0 && !d->c[d->e[i].ch].dropfirst) {
				struct cmsg m = { .op = C_FINISH,
						  .eid = (uint32_t)i };

				d->e[i].state = D_BUSY;
				d->finishes++;
				d_cmd(d->e[i].loc, &m);
			}
		}
		{
			struct timespec ts = { 0,
					       (long)(rnd(&d->s) % 2000000) };

			nanosleep(&ts, NULL);
		}
	}
	drive_end(d, seed, steps);
}

static void drive_end(struct driver *d, uint64_t seed, int steps)
{
	d_reports(d, true);
	/* Dropfirst channels: the receiver goes, then each sender waits. */
	for (uint32_t ch = 0; ch < d->nch; ch++) {
		struct dch *c = &d->c[ch];
		struct dent *re = &d->e[c->rx_eid];
		struct cmsg m = { .op = C_DROPRX, .eid = c->rx_eid };

		if (!c->dropfirst || re->state != D_AT)
			continue;
		re->state = D_BUSY;
		d_cmd(re->loc, &m);
	}
	d_reports(d, true);
	for (uint32_t i = 0; i < d->neid; i++) {
		struct dent *e = &d->e[i];
		struct dch *c = &d->c[e->ch];
		struct cmsg m = { .eid = i };

		if (is_rx(e->kind) || e->state != D_AT)
			continue;
		/* A receiver that died with P2: its senders must see it. */
		m.op = c->dropfirst || d->e[c->rx_eid].state == D_LOST ?
			       C_CLOSEWAIT :
			       C_FINISH;
		if (m.op == C_CLOSEWAIT)
			d->closewaits++;
		e->state = D_BUSY;
		d_cmd(e->loc, &m);
	}
	d_reports(d, true);
	for (uint32_t ch = 0; ch < d->nch; ch++) {
		struct dch *c = &d->c[ch];
		struct dent *re = &d->e[c->rx_eid];
		struct cmsg m = { .op = C_DRAIN, .eid = c->rx_eid };

		if (c->dropfirst || re->state != D_AT)
			continue;
		re->state = D_BUSY;
		d_cmd(re->loc, &m);
	}
	d_reports(d, true);
	for (uint32_t ch = 0; ch < d->nch; ch++) {
		struct dch *c = &d->c[ch];
		bool lost = false, complete = true;

		if (c->dropfirst || !c->drained)
			continue;
		for (uint32_t s = 0; s < c->nsids; s++) {
			lost |= c->sid_lost[s];
			if (c->rnext[s] != c->total[s] + 1)
				complete = false;
		}
		/*
		 * Everything came, then the end. A oneshot whose value came is
		 * over: a receive after it says -EPIPE even if its sender then
		 * died with P2.
		 */
		if (c->rc == -EPIPE && complete &&
		    (c->os || (!lost && !c->finish_reset)))
			continue;
		if (c->rc == -ECONNRESET && c->touched && d->dead)
			continue; /* a prefix of each, checked as it came */
		fprintf(stderr,
			"driver: %s ch %u drained with %lld (touched %d, "
			"lost %d, finish_reset %d, complete %d)\n",
			c->os ? "oneshot" : "channel", ch, (long long)c->rc,
			c->touched, lost, c->finish_reset, complete);
		for (uint32_t s = 0; s < c->nsids; s++)
			if (c->rnext[s] != c->total[s] + 1)
				fprintf(stderr,
					"driver:  sid %u: got up to %llu of "
					"%llu%s\n",
					s, (unsigned long long)c->rnext[s] - 1,
					(unsigned long long)c->total[s],
					c->sid_lost[s] ? " (lost)" : "");
		d->errors++;
	}
	fprintf(stderr,
		"stress2 seed %llu: %d steps, %u channels, %llu passes, %llu "
		"clones, %llu finishes, %llu closewaits (%d closed, %d reset), "
		"%llu lost, P2 %s, %d errors\n",
		(unsigned long long)seed, steps, d->nch,
		(unsigned long long)d->passes, (unsigned long long)d->clones,
		(unsigned long long)d->finishes,
		(unsigned long long)d->closewaits, d->closes_closed,
		d->closes_reset, (unsigned long long)d->lost,
		d->dead ? "killed" : "alive", d->errors);
	cr_assert_eq(d->errors, 0, "seed %llu: %d errors",
		     (unsigned long long)seed, d->errors);
	for (int k = 0; k < NPROC; k++) {
		struct cmsg m = { .op = C_QUIT };

		if (k == 2 && d->dead)
			continue;
		d_cmd(k, &m);
	}
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

static void *agent_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)agent();
}

static void run(uint64_t seed, int steps, uint32_t nch, uint32_t nos,
		int kill_at)
{
	pthread_t at;
	void *ret;

	me = 0;
	prng = seed;
	aprng = seed ^ 0xabcdef;
	deaths = kill_at >= 0;
	modes = (unsigned)env_u64("STRESS_MODES", 7);
	if (!(modes & 7))
		modes = 7;
	{
		struct tu_mesh m = mesh();

		tu_mesh_sockets(&m);
	}
	for (int k = 1; k < NPROC; k++) {
		pid_t p = topo_fork();

		if (p == 0) {
			int r;

			me = k;
			prng = seed * 7919 + (uint64_t)k;
			aprng = prng ^ 0xabcdef;
			close_others();
			r = join_all();
			if (r) {
				fprintf(stderr, "P%d: join: %d\n", k, r);
				topo_child_exit(1);
			}
			r = agent();
			leave_all();
			topo_child_exit(r);
		}
		pids[k] = p;
	}
	close_others();
	cr_assert_eq(join_all(), 0);
	TU_ASSERT_RC(cmesh_channel_new(&cmsg_type, NULL, &self_tx, &self_rx),
		     0);
	TU_ASSERT_RC(cmesh_channel_new(&cmsg_type, NULL, &rep_tx, &rep_rx), 0);
	tu_thread_start(&at, agent_thread, NULL);
	drive(seed, steps, nch, nos, kill_at);
	ret = tu_thread_join(at);
	cr_assert_eq((intptr_t)ret, 0, "P0's agent failed");
	cmesh_sender_free(self_tx);
	cmesh_receiver_free(self_rx);
	cmesh_sender_free(rep_tx);
	cmesh_receiver_free(rep_rx);
	leave_all();
	for (int k = 1; k < NPROC; k++)
		if (pids[k])
			topo_assert_exit_0(pids[k], TOPO_WAIT_MS);
}

/* Oneshots and channels moved at random; receivers in all three modes. */
Test(stress2, oneshots_waitsets_blocked)
{
	uint64_t seed = env_u64("STRESS_SEED", 1);
	int steps = (int)env_u64("STRESS_STEPS", 300);
	uint32_t nch = (uint32_t)env_u64("STRESS_NCH", 4);
	uint32_t nos = (uint32_t)env_u64("STRESS_NOS", 8);

	cr_assert_leq(nch + nos, MAXCH);
	run(seed, steps, nch, nos, -1);
}

/* The same, and P2 dies (SIGKILL) at a random step, in a random way. */
Test(stress2, kill_mid_run)
{
	uint64_t seed = env_u64("STRESS_SEED", 1);

	/*
	 * Ungated 2026-12-07 (stop 36) after 520 clean runs: a receiver lost
	 * to P2's death was freed, not failed, by an export or a forwarder
	 * (-EPIPE where -ECONNRESET is due, 1 run in 20), and P2's waitset
	 * wake sockets stayed until the node was freed (the leak check, 1
	 * in 300; 2 in 60 under ASan).
	 */
	int steps = (int)env_u64("STRESS_STEPS", 300);
	uint32_t nch = (uint32_t)env_u64("STRESS_NCH", 4);
	uint32_t nos = (uint32_t)env_u64("STRESS_NOS", 8);
	uint64_t s = seed ^ 0x1234;
	int kill_at = (int)env_u64("STRESS_KILL_AT",
				   (uint64_t)(steps / 4) +
					   rnd(&s) % (uint64_t)(steps / 2 + 1));

	cr_assert_leq(nch + nos, MAXCH);
	run(seed, steps, nch, nos, kill_at);
}
