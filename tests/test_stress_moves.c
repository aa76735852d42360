/* SPDX-License-Identifier: MIT */
/*
 * test_stress_moves.c - randomized (seeded) endpoint moves among three
 * processes while traffic flows. Every process runs an agent (commands,
 * arrivals) and a streamer thread (bursts on every held sender, try_recv on
 * every held receiver, FIFO per sender checked with the receiver's state
 * travelling with it). A driver in P0 moves receivers, senders and clones
 * at random; at the end every receiver must have seen every sequence number
 * of every sender exactly once in order, then -EPIPE (or, for channels whose
 * receiver is dropped first, every sender must see it closed).
 *
 * STRESS_SEED, STRESS_STEPS, STRESS_NCH in the environment vary a run.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"
#include "helpers/mesh.h"
#include "helpers/topo.h"

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

TestSuite(stress, .init = tu_suite_init, .fini = tu_suite_fini);

#define NPROC 3
#define MAXS 16	 /* senders (sids) per channel */
#define MAXE 256 /* entries (streams and receivers) */
#define MAXCH 16

struct item {
	uint32_t sid;
	uint32_t ch;
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(item_type, struct item);

enum {
	C_NEW = 1,   /* make channel ch: stream eid (sid, total), rx eid2 */
	C_HOLD,	     /* an entry arrives (tx or rx, with its state) */
	C_PASS,	     /* send entry eid to dest */
	C_CLONE,     /* clone stream eid into eid2 (sid, total) */
	C_FINISH,    /* send the rest of stream eid, free it */
	C_DRAIN,     /* drain rx eid to its end (thread) */
	C_DROPRX,    /* free rx eid */
	C_CLOSEWAIT, /* send on stream eid until closed (thread) */
	C_QUIT,
	R_ARRIVED, /* reports to the driver */
	R_FINISHED,
	R_DRAINED,
	R_DROPPED,
	R_CLOSED,
	R_ERROR,
};

struct cmsg {
	uint32_t op, eid, eid2, dest, ch, sid, from, pad;
	int64_t rc;
	uint64_t next, total;
	uint64_t rnext[MAXS];
	cmesh_sender *tx;
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(cmsg_type, struct cmsg,
		  CMESH_FIELD_SENDER(struct cmsg, tx, item_type),
		  CMESH_FIELD_RECEIVER(struct cmsg, rx, item_type));

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
	E_RX
};

struct ent {
	int kind;
	bool ended; /* rx saw its end mid-run */
	uint32_t ch, sid;
	uint64_t next, total;
	uint64_t rnext[MAXS];
	cmesh_sender *tx;
	cmesh_receiver *rx;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct ent ents[MAXE];
static atomic_bool quitting;
static atomic_int failures;
static uint64_t prng;
static int trace_ch = -1;
static uint32_t max_trail; /* STRESS_TRAIL: trails of 0..max bytes */
static uint32_t ring_size; /* STRESS_RING: the channels' rings; 0: default */
static __thread uint8_t trail_buf[1 << 17];

static uint32_t trail_len(uint32_t ch, uint32_t sid, uint64_t seq)
{
	uint64_t h = (seq * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)ch << 40) ^
		     ((uint64_t)sid << 32);

	if (!max_trail)
		return 0;
	h ^= h >> 29;
	/* Mostly small, sometimes over a ring record (bulk), rarely big. */
	switch (h % 8) {
	case 0:
		return (uint32_t)(h >> 8) % (max_trail + 1);
	case 1:
	case 2:
		return (uint32_t)(h >> 8) % 300;
	default:
		return 0;
	}
}

static uint32_t trail_seed(uint32_t ch, uint32_t sid, uint64_t seq)
{
	return (uint32_t)(seq * 2654435761u) ^ (ch << 24) ^ (sid << 16);
}
#define TR(ch, ...)                                                            \
	do {                                                                   \
		if ((int)(ch) == trace_ch)                                     \
			fprintf(stderr, __VA_ARGS__);                          \
	} while (0)

/* P0: the agent's own commands and the driver's reports. */
static cmesh_sender *self_tx, *rep_tx;
static cmesh_receiver *self_rx, *rep_rx;
static pthread_mutex_t rep_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rnd(uint64_t *s)
{
	/* splitmix64 */
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

/* Checks one received item against the receiver's state; mu held or own. */
static bool check_item(uint32_t eid, struct ent *e, const struct item *it,
		       int len)
{
	if (it->ch != e->ch || it->sid >= MAXS) {
		fprintf(stderr, "P%d: rx eid %u ch %u: item ch %u sid %u\n", me,
			eid, e->ch, it->ch, it->sid);
		report_error(eid, "foreign item", it->ch, it->sid);
		return false;
	}
	if (it->seq != e->rnext[it->sid]) {
		fprintf(stderr,
			"%lld P%d: rx eid %u ch %u sid %u: seq %llu, want %llu\n",
			(long long)(tu_now_ns() / 1000 % 100000000), me, eid,
			e->ch, it->sid, (unsigned long long)it->seq,
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
		fprintf(stderr, "P%d: ch %u sid %u seq %llu: bad trail (%d)\n",
			me, it->ch, it->sid, (unsigned long long)it->seq, len);
		report_error(eid, "bad trail", len, 0);
		return false;
	}
	return true;
}

static int send_seq(cmesh_sender *tx, uint32_t ch, uint32_t sid, uint64_t seq)
{
	struct item it = { .sid = sid, .ch = ch, .seq = seq };
	uint32_t len = trail_len(ch, sid, seq);

	if (len)
		tu_fill(trail_buf, len, trail_seed(ch, sid, seq));
	return cmesh_sender_send(tx, &it, len ? trail_buf : NULL, len);
}

static int send_one(struct ent *e)
{
	int r = send_seq(e->tx, e->ch, e->sid, e->next);

	if (r == 0)
		e->next++;
	return r;
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
					int r = send_one(e);

					/*
					 * A dropfirst channel's receiver went
					 * (else FINISH reports the send).
					 */
					if (r == -EPIPE) {
						e->ended = true;
						break;
					}
					if (r) {
						report_error(i, "send", r, 0);
						e->ended = true;
						break;
					}
				}
			} else if (e->kind == E_RX && !e->ended) {
				uint64_t n = 1 + rnd(&s) % 64;
				struct item it;

				for (; n; n--) {
					int r = cmesh_receiver_try_recv(
						e->rx, &it, trail_buf,
						sizeof(trail_buf));

					if (r == -EAGAIN)
						break;
					if (r == -EPIPE) {
						e->ended = true;
						break;
					}
					if (r < 0) {
						report_error(i, "try_recv", r,
							     0);
						e->ended = true;
						break;
					}
					check_item(i, e, &it, r);
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

/* ---- jobs (blocking work off the agent) -------------------------------- */

struct job {
	uint32_t eid;
	int op;
	struct ent e;
};

#define MAXJOBS 64
static pthread_t jobs[MAXJOBS];
static int njobs;

static void *job_run(void *arg)
{
	struct job *j = arg;
	struct ent *e = &j->e;
	struct cmsg m = { .eid = j->eid, .ch = e->ch, .sid = e->sid };

	if (j->op == C_DRAIN) {
		struct item it;
		int r = 0;

		if (!e->ended)
			while ((r = cmesh_receiver_recv_deadline(
					e->rx, topo_deadline(), &it, trail_buf,
					sizeof(trail_buf))) >= 0)
				check_item(j->eid, e, &it, r);
		else
			r = -EPIPE;
		m.op = R_DRAINED;
		m.rc = r;
		memcpy(m.rnext, e->rnext, sizeof(m.rnext));
		cmesh_receiver_free(e->rx);
	} else { /* C_CLOSEWAIT */
		int64_t t0 = tu_now_ns(), end = t0 + TU_MS(TOPO_WAIT_MS / 2);
		int r = 0, c = 0;

		while (tu_now_ns() < end) {
			r = send_seq(e->tx, e->ch, e->sid, e->next);
			if (r == 0)
				e->next++;
			else if (r != -EPIPE)
				break;
			c = cmesh_sender_is_closed(e->tx);
			if (c)
				break;
			tu_sleep_ms(1);
		}
		m.op = R_CLOSED;
		m.rc = c ? c : (r ? r : -ETIMEDOUT);
		m.next = (uint64_t)((tu_now_ns() - t0) / 1000000);
		cmesh_sender_free(e->tx);
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

/* Returns true on C_QUIT. */
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
		/* P0 only: a child's report for the driver. */
		pthread_mutex_lock(&rep_mu);
		rc = cmesh_sender_send(rep_tx, m, NULL, 0);
		pthread_mutex_unlock(&rep_mu);
		if (rc)
			atomic_fetch_add(&failures, 1);
		return false;
	case C_QUIT:
		return true;
	case C_NEW: {
		struct ent *e2 = &ents[m->eid2];

		pthread_mutex_lock(&mu);
		if (e->kind || e2->kind) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "NEW over a live entry", 0, 0);
			return false;
		}
		memset(e, 0, sizeof(*e));
		memset(e2, 0, sizeof(*e2));
		{
			cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;

			o.ring_size = ring_size;
			rc = cmesh_channel_new(&item_type, &o, &e->tx, &e2->rx);
		}
		if (rc) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "channel_new", rc, 0);
			return false;
		}
		e->kind = E_STREAM;
		e->ch = m->ch;
		e->sid = m->sid;
		e->next = 1;
		e->total = m->total;
		e2->kind = E_RX;
		e2->ch = m->ch;
		for (int i = 0; i < MAXS; i++)
			e2->rnext[i] = 1;
		pthread_mutex_unlock(&mu);
		r.op = R_ARRIVED;
		report(&r);
		r.eid = m->eid2;
		report(&r);
		return false;
	}
	case C_HOLD:
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
		e->ended = m->pad != 0;
		if (m->tx) {
			e->kind = E_STREAM;
			e->tx = m->tx;
		} else if (m->rx) {
			e->kind = E_RX;
			e->rx = m->rx;
		}
		TR(e->ch, "%lld P%d: HOLD eid %u (%s sid %u next %llu)\n",
		   (long long)(tu_now_ns() / 1000 % 100000000), me, m->eid,
		   e->tx ? "tx" : "rx", e->sid, (unsigned long long)e->next);
		pthread_mutex_unlock(&mu);
		if (!m->tx && !m->rx) {
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
		p.ch = e->ch;
		p.sid = e->sid;
		p.next = e->next;
		p.total = e->total;
		p.pad = e->ended;
		memcpy(p.rnext, e->rnext, sizeof(p.rnext));
		p.tx = e->tx;
		p.rx = e->rx;
		TR(e->ch,
		   "%lld P%d: PASS eid %u (%s sid %u next %llu) -> P%u\n",
		   (long long)(tu_now_ns() / 1000 % 100000000), me, m->eid,
		   e->tx ? "tx" : "rx", e->sid, (unsigned long long)e->next,
		   m->dest);
		memset(e, 0, sizeof(*e));
		rc = send_to((int)m->dest, &p);
		pthread_mutex_unlock(&mu);
		if (rc)
			report_error(m->eid, "PASS send", rc, m->dest);
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
		TR(e->ch,
		   "%lld P%d: CLONE eid %u (sid %u next %llu) -> eid %u sid %u\n",
		   (long long)(tu_now_ns() / 1000 % 100000000), me, m->eid,
		   e->sid, (unsigned long long)e->next, m->eid2, m->sid);
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
		if (e->kind != E_STREAM) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "FINISH of no stream", e->kind, 0);
			return false;
		}
		TR(e->ch, "%lld P%d: FINISH eid %u (sid %u next %llu)\n",
		   (long long)(tu_now_ns() / 1000 % 100000000), me, m->eid,
		   e->sid, (unsigned long long)e->next);
		while (e->next <= e->total) {
			rc = send_one(e);
			if (rc) {
				report_error(m->eid, "FINISH send", rc, 0);
				break;
			}
		}
		cmesh_sender_free(e->tx);
		memset(e, 0, sizeof(*e));
		pthread_mutex_unlock(&mu);
		r.op = R_FINISHED;
		report(&r);
		return false;
	case C_DRAIN:
	case C_CLOSEWAIT: {
		struct ent copy;

		pthread_mutex_lock(&mu);
		if (e->kind != (m->op == C_DRAIN ? E_RX : E_STREAM)) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "DRAIN/CLOSEWAIT of what?",
				     e->kind, m->op);
			return false;
		}
		copy = *e;
		memset(e, 0, sizeof(*e));
		pthread_mutex_unlock(&mu);
		job_start(m->eid, (int)m->op, &copy);
		return false;
	}
	case C_DROPRX:
		pthread_mutex_lock(&mu);
		if (e->kind != E_RX) {
			pthread_mutex_unlock(&mu);
			report_error(m->eid, "DROPRX of no rx", e->kind, 0);
			return false;
		}
		cmesh_receiver_free(e->rx);
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

static int agent(void)
{
	cmesh_waitset *ws;
	pthread_t st;
	int r, ret = 0;

	int base_fds = tu_fd_count(), base_maps = topo_memfd_map_count();

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
	for (;;) {
		uint64_t k;
		struct cmsg m;
		cmesh_receiver *rx;

		r = cmesh_waitset_wait(ws, topo_deadline(), &k);
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
			if (r != -EPIPE)
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
	cmesh_waitset_free(ws);
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAXE; i++) {
		if (ents[i].kind) {
			fprintf(stderr, "P%d: entry %d left (kind %d)\n", me, i,
				ents[i].kind);
			ret = 1;
			cmesh_sender_free(ents[i].tx);
			cmesh_receiver_free(ents[i].rx);
		}
		memset(&ents[i], 0, sizeof(ents[i]));
	}
	pthread_mutex_unlock(&mu);
	if (atomic_load(&failures))
		ret = 1;
	/* Every channel is gone: its lanes go too (link threads). */
	{
		int64_t end = tu_now_ns() + TU_MS(2000);
		int fds, maps;

		while (((fds = tu_fd_count()) > base_fds + 2 ||
			(maps = topo_memfd_map_count()) > base_maps + 2) &&
		       tu_now_ns() < end)
			tu_sleep_ms(5);
		fds = tu_fd_count();
		maps = topo_memfd_map_count();
		if (fds > base_fds + 2 || maps > base_maps + 2) {
			fprintf(stderr,
				"P%d: LEAK? %d fds (was %d), %d memfd maps "
				"(was %d)\n",
				me, fds, base_fds, maps, base_maps);
			tu_fd_dump("stress: fds at the leak check");
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
	D_DONE
};

struct dent {
	int state;
	int loc;
	int kind;
	uint32_t ch, sid;
	uint64_t total;
};

struct dch {
	uint32_t nsids;
	uint32_t rx_eid;
	uint64_t total[MAXS];
	bool dropfirst;
	uint32_t live_streams;
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
	int pending; /* reports awaited */
	uint64_t passes, clones, finishes, closewaits;
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

static void d_take(struct driver *d, const struct cmsg *m)
{
	struct dent *e = &d->e[m->eid];

	switch (m->op) {
	case R_ARRIVED:
		cr_assert(e->state == D_TRANSIT, "eid %u arrived in state %d",
			  m->eid, e->state);
		e->state = D_AT;
		e->loc = (int)m->from;
		break;
	case R_FINISHED:
		e->state = D_DONE;
		d->c[e->ch].live_streams--;
		break;
	case R_CLOSED:
		e->state = D_DONE;
		if (m->rc != 1) {
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
	case R_DRAINED: {
		struct dch *c = &d->c[e->ch];

		e->state = D_DONE;
		c->drained = true;
		c->rc = m->rc;
		memcpy(c->rnext, m->rnext, sizeof(c->rnext));
		break;
	}
	case R_ERROR:
		d->errors++;
		return; /* not awaited */
	default:
		cr_assert(0, "driver: op %u", m->op);
	}
	d->pending--;
}

/* Takes reports: all there are (wait false), or until none is pending. */
static void d_reports(struct driver *d, bool wait)
{
	struct cmsg m;
	int r;

	for (;;) {
		if (wait && d->pending > 0)
			r = cmesh_receiver_recv_deadline(
				rep_rx, topo_deadline(), &m, NULL, 0);
		else
			r = cmesh_receiver_try_recv(rep_rx, &m, NULL, 0);
		if (r == -EAGAIN && !wait)
			return;
		if (r == -EAGAIN || (wait && d->pending <= 0 && r == -EAGAIN))
			return;
		cr_assert_eq(r, 0, "driver: reports: %d (%d pending)", r,
			     d->pending);
		d_take(d, &m);
		if (wait && d->pending <= 0) {
			/* errors that came meanwhile */
			while (cmesh_receiver_try_recv(rep_rx, &m, NULL, 0) ==
			       0)
				d_take(d, &m);
			return;
		}
	}
}

static int d_pick(struct driver *d, int kind)
{
	uint32_t cand[MAXE], n = 0;

	for (uint32_t i = 0; i < d->neid; i++)
		if (d->e[i].state == D_AT && (!kind || d->e[i].kind == kind))
			cand[n++] = i;
	if (!n)
		return -1;
	return (int)cand[rnd(&d->s) % n];
}

static uint64_t d_total(struct driver *d)
{
	return 200 + rnd(&d->s) % 2000;
}

/* ---- scripted steps: each waits until it is done ------------------------ */

static uint32_t s_new(struct driver *d, int loc, bool dropfirst, uint64_t total)
{
	uint32_t ch = d->nch++;
	struct dch *c = &d->c[ch];
	uint32_t te = d->neid++, re = d->neid++;
	struct cmsg m = { .op = C_NEW,
			  .eid = te,
			  .eid2 = re,
			  .ch = ch,
			  .sid = 0,
			  .total = total };

	c->nsids = 1;
	c->total[0] = total;
	c->rx_eid = re;
	c->live_streams = 1;
	c->dropfirst = dropfirst;
	d->e[te] = (struct dent){ D_TRANSIT, loc, E_STREAM, ch, 0, total };
	d->e[re] = (struct dent){ D_TRANSIT, loc, E_RX, ch, 0, 0 };
	d->pending += 2;
	d_cmd(loc, &m);
	d_reports(d, true);
	return ch;
}

static uint32_t s_clone(struct driver *d, uint32_t eid, uint64_t total)
{
	struct dch *c = &d->c[d->e[eid].ch];
	uint32_t ne = d->neid++, sid = c->nsids++;
	struct cmsg m = { .op = C_CLONE,
			  .eid = eid,
			  .eid2 = ne,
			  .sid = sid,
			  .total = total };

	cr_assert_eq(d->e[eid].state, D_AT);
	c->total[sid] = total;
	c->live_streams++;
	d->e[ne] = (struct dent){ D_TRANSIT,	d->e[eid].loc, E_STREAM,
				  d->e[eid].ch, sid,	       total };
	d->pending++;
	d_cmd(d->e[eid].loc, &m);
	d_reports(d, true);
	return ne;
}

static void s_pass_nowait(struct driver *d, uint32_t eid, int dest)
{
	struct cmsg m = { .op = C_PASS, .eid = eid, .dest = (uint32_t)dest };

	cr_assert_eq(d->e[eid].state, D_AT);
	cr_assert_neq(d->e[eid].loc, dest);
	d->e[eid].state = D_TRANSIT;
	d->pending++;
	d->passes++;
	d_cmd(d->e[eid].loc, &m);
}

static void s_pass(struct driver *d, uint32_t eid, int dest)
{
	s_pass_nowait(d, eid, dest);
	d_reports(d, true);
}

static void s_sleep(unsigned ms)
{
	tu_sleep_ms(ms);
}

static void drive_end(struct driver *d, uint64_t seed, int steps, uint32_t nch);

static void drive(uint64_t seed, int steps, uint32_t nch,
		  void (*script)(struct driver *))
{
	/* Static: a failed assertion leaves no leak behind (LeakSanitizer). */
	static struct driver drv;
	struct driver *d = &drv;

	memset(d, 0, sizeof(*d));
	d->s = seed;
	if (script) {
		script(d);
		drive_end(d, seed, 0, d->nch);
		return;
	}
	d->nch = nch;
	for (uint32_t ch = 0; ch < nch; ch++) {
		struct dch *c = &d->c[ch];
		uint32_t te = d->neid++, re = d->neid++;
		int loc = (int)(rnd(&d->s) % NPROC);
		struct cmsg m = {
			.op = C_NEW, .eid = te, .eid2 = re, .ch = ch, .sid = 0
		};

		c->nsids = 1;
		c->total[0] = d_total(d);
		c->rx_eid = re;
		c->live_streams = 1;
		c->dropfirst = rnd(&d->s) % 4 == 0;
		m.total = c->total[0];
		d->e[te] = (struct dent){ D_TRANSIT, loc, E_STREAM,
					  ch,	     0,	  c->total[0] };
		d->e[re] = (struct dent){ D_TRANSIT, loc, E_RX, ch, 0, 0 };
		d->pending += 2;
		d_cmd(loc, &m);
	}
	for (int step = 0; step < steps; step++) {
		uint64_t a = rnd(&d->s) % 100;
		int i;

		d_reports(d, false);
		if (a < 70) {
			i = d_pick(d, 0);
			if (i >= 0) {
				struct cmsg m = { .op = C_PASS,
						  .eid = (uint32_t)i };
				int from_ = d->e[i].loc;

				m.dest = (uint32_t)((from_ + 1 +
						     (int)(rnd(&d->s) % 2)) %
						    NPROC);
				d->e[i].state = D_TRANSIT;
				d->pending++;
				d->passes++;
				d_cmd(from_, &m);
			}
		} else if (a < 82) {
			i = d_pick(d, E_STREAM);
			if (i >= 0 && d->c[d->e[i].ch].nsids < MAXS &&
			    d->neid < MAXE) {
				struct dch *c = &d->c[d->e[i].ch];
				uint32_t ne = d->neid++, sid = c->nsids++;
				struct cmsg m = { .op = C_CLONE,
						  .eid = (uint32_t)i,
						  .eid2 = ne,
						  .sid = sid };

				c->total[sid] = m.total = d_total(d);
				c->live_streams++;
				d->e[ne] =
					(struct dent){ D_TRANSIT, d->e[i].loc,
						       E_STREAM,  d->e[i].ch,
						       sid,	  m.total };
				d->pending++;
				d->clones++;
				d_cmd(d->e[i].loc, &m);
			}
		} else if (a < 86) {
			i = d_pick(d, E_STREAM);
			/* Not a dropfirst channel's streams: those wait. */
			if (i >= 0 && !d->c[d->e[i].ch].dropfirst) {
				struct cmsg m = { .op = C_FINISH,
						  .eid = (uint32_t)i };

				d->e[i].state = D_BUSY;
				d->pending++;
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
	drive_end(d, seed, steps, nch);
}

static void drive_end(struct driver *d, uint64_t seed, int steps, uint32_t nch)
{
	/* Everything settles. */
	d_reports(d, true);
	cr_assert_eq(d->errors, 0, "errors during the run");
	/* Dropfirst channels: the receiver goes, then each sender waits. */
	for (uint32_t ch = 0; ch < nch; ch++) {
		struct dch *c = &d->c[ch];
		struct dent *re = &d->e[c->rx_eid];
		struct cmsg m = { .eid = c->rx_eid };

		if (!c->dropfirst)
			continue;
		cr_assert_eq(re->state, D_AT);
		m.op = C_DROPRX;
		re->state = D_BUSY;
		d->pending++;
		d_cmd(re->loc, &m);
	}
	d_reports(d, true);
	for (uint32_t i = 0; i < d->neid; i++) {
		struct dent *e = &d->e[i];
		struct cmsg m = { .eid = i };

		if (e->kind != E_STREAM || e->state != D_AT)
			continue;
		m.op = d->c[e->ch].dropfirst ? C_CLOSEWAIT : C_FINISH;
		if (m.op == C_CLOSEWAIT)
			d->closewaits++;
		e->state = D_BUSY;
		d->pending++;
		d_cmd(e->loc, &m);
	}
	d_reports(d, true);
	for (uint32_t ch = 0; ch < nch; ch++) {
		struct dch *c = &d->c[ch];
		struct dent *re = &d->e[c->rx_eid];
		struct cmsg m = { .op = C_DRAIN, .eid = c->rx_eid };

		if (c->dropfirst)
			continue;
		cr_assert_eq(re->state, D_AT);
		re->state = D_BUSY;
		d->pending++;
		d_cmd(re->loc, &m);
	}
	d_reports(d, true);
	for (uint32_t ch = 0; ch < nch; ch++) {
		struct dch *c = &d->c[ch];

		if (c->dropfirst)
			continue;
		if (c->rc != -EPIPE) {
			fprintf(stderr, "driver: ch %u drained with %lld\n", ch,
				(long long)c->rc);
			d->errors++;
		}
		for (uint32_t s = 0; s < c->nsids; s++)
			if (c->rnext[s] != c->total[s] + 1) {
				fprintf(stderr,
					"driver: ch %u sid %u: got up to "
					"%llu of %llu\n",
					ch, s,
					(unsigned long long)c->rnext[s] - 1,
					(unsigned long long)c->total[s]);
				d->errors++;
			}
	}
	fprintf(stderr,
		"stress seed %llu: %d steps, %u channels, %llu passes, %llu "
		"clones, %llu finishes, %llu closewaits, %d errors\n",
		(unsigned long long)seed, steps, nch,
		(unsigned long long)d->passes, (unsigned long long)d->clones,
		(unsigned long long)d->finishes,
		(unsigned long long)d->closewaits, d->errors);
	cr_assert_eq(d->errors, 0, "seed %llu: %d errors",
		     (unsigned long long)seed, d->errors);
	for (int k = 0; k < NPROC; k++) {
		struct cmsg m = { .op = C_QUIT };

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

static void run(uint64_t seed, int steps, uint32_t nch,
		void (*script)(struct driver *))
{
	pthread_t at;
	void *ret;

	me = 0;
	prng = seed;
	trace_ch = (int)env_u64("STRESS_TRACE", (uint64_t)-1);
	max_trail = (uint32_t)env_u64("STRESS_TRAIL", 0);
	ring_size = (uint32_t)env_u64("STRESS_RING", 0);
	if (max_trail > sizeof(trail_buf))
		max_trail = sizeof(trail_buf);
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
	drive(seed, steps, nch, script);
	ret = tu_thread_join(at);
	cr_assert_eq((intptr_t)ret, 0, "P0's agent failed");
	cmesh_sender_free(self_tx);
	cmesh_receiver_free(self_rx);
	cmesh_sender_free(rep_tx);
	cmesh_receiver_free(rep_rx);
	leave_all();
	for (int k = 1; k < NPROC; k++)
		topo_assert_exit_0(pids[k], TOPO_WAIT_MS);
}

Test(stress, random_moves)
{
	uint64_t seed = env_u64("STRESS_SEED", 1);
	int steps = (int)env_u64("STRESS_STEPS", 300);
	uint32_t nch = (uint32_t)env_u64("STRESS_NCH", 4);

	cr_assert_leq(nch, MAXCH);
	run(seed, steps, nch, NULL);
}

/*
 * Trails up to 70,000 bytes in 4 KiB rings: the first large trail of a
 * lane goes out of line with its memfd in an ATTACH that may come after
 * the record (a forwarder's peek must then pass that lane by, as its
 * receive does). The environment still overrides each setting.
 */
Test(stress, random_moves_with_large_trails_in_small_rings)
{
	uint64_t seed = env_u64("STRESS_SEED", 203);
	int steps = (int)env_u64("STRESS_STEPS", 600);
	uint32_t nch = (uint32_t)env_u64("STRESS_NCH", 6);

	cr_assert_eq(setenv("STRESS_TRAIL", "70000", 0), 0);
	cr_assert_eq(setenv("STRESS_RING", "4096", 0), 0);
	cr_assert_leq(nch, MAXCH);
	run(seed, steps, nch, NULL);
}

/* The first 40 ms of seed 60's channel 1, step by step. */
static void script_seed60(struct driver *d)
{
	uint32_t ch = s_new(d, 0, false, 3000);
	uint32_t s0 = 0, rx = d->c[ch].rx_eid, s1, s2, s3, s4;

	s_sleep(2);
	s1 = s_clone(d, s0, 3000);
	s_sleep(5);
	s2 = s_clone(d, s1, 3000);
	s_sleep(2);
	s3 = s_clone(d, s2, 3000);
	(void)s3;
	s_sleep(6);
	s_pass(d, rx, 2);
	s4 = s_clone(d, s1, 3000);
	s_sleep(3);
	s_pass(d, rx, 0);
	s_sleep(1);
	s_pass(d, s0, 1);
	s_sleep(4);
	s_pass(d, s2, 2);
	s_sleep(4);
	s_pass(d, s4, 1);
	s_sleep(4);
	s_pass(d, s4, 0);
	s_sleep(15);
}

Test(stress, seed60_script)
{
	run(1, 0, 0, script_seed60);
}
