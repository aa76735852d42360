/* SPDX-License-Identifier: MIT */
/*
 * bridge.c - forwarders: a receiver joined to a sender of the same type.
 *
 * Every forwarder of the process runs on one thread, started with the
 * first and ended 100 ms after the last, which waits in a waitset whose members
 * are the forwarders' receivers (key: the forwarder). When one is ready
 * the thread takes what it holds, in order, and sends each message on,
 * with its fds and endpoints (an endpoint whose peer is in another process
 * moves on through a forwarder of its own). So a forwarder costs no thread
 * or fd of its own: its receiver's wake sockets are the waitset's.
 *
 * Ends, in either direction:
 * - every sender of the receiver is gone and it is drained: the sender is
 *   freed, so its receiver sees closed after everything;
 * - the receiver failed (-ECONNRESET, -EPROTO, -EMFILE): the sender fails
 *   its channel (cmesh__queue_sender_fail), so its receiver sees
 *   -ECONNRESET after everything forwarded, and the receiver is failed
 *   (not freed), so its other senders see -ECONNRESET too;
 * - the sender's receiver is gone: the receiver is freed, so the senders
 *   see closed; it failed, or a message cannot go on (an endpoint that
 *   cannot move, no memory): the receiver fails, so the senders see
 *   -ECONNRESET. The thread looks at the sender's receiver of the
 *   forwarder it serves, and, while it has forwarders, at every
 *   forwarder's each IDLE_LOOK_NS, busy or not (it wakes for that if
 *   nothing else wakes it; it does not spin after such a wake): a
 *   receiver gone while no message flows (whose closing sends nothing
 *   this process hears) is seen within about that, and the senders
 *   upstream then see closed without sending.
 * The sender's backlog bound (max_backlog) holds the forwarder back
 * instead of ending it: while the next message would not fit in what the
 * sender's backlog takes more (fits(); or the backlog is not empty, for
 * one larger than the bound) it is not taken; the receiver leaves the
 * waitset (`hold_at`) and the thread looks again after 1, 2, 4 ... 16
 * ms, taking up again once that backlog is down to half its bound (or
 * empty): a slow far reader costs a hold per half a backlog, not per
 * message (a hold may close the link's wake socket of the receiver,
 * whose taking up opens another). Its senders upstream meanwhile fill
 * their own ring and backlog and see -ENOBUFS themselves, as if the far
 * receiver were theirs. Only another sender of the far channel filling
 * its backlog between that look and the send (or a message come between
 * a peek that saw none and the receive) makes the send fail with
 * -ENOBUFS, which ends the forwarder as above.
 * A oneshot's forwarder ends after its one value. A split receiver's
 * (cmesh__bridge_start_split(): its senders here write its lane already)
 * ends too once its lanes have all ended, and a failure fails that lane.
 *
 * After a fork the child has no forwarder (its thread did not fork): the
 * forwarders the parent had are the parent's, and a channel the child
 * inherited that one of them feeds stays the parent's too (what the child
 * sends on it is lost, as for any channel after fork).
 */
#include "bridge.h"

#include "endpoint.h"
#include "env.h"
#include "log.h"
#include "park.h"
#include "queue.h"
#include "spin.h"

#include <cmesh/waitset.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Messages one forwarder takes per wake before the others get a turn. */
#define BATCH 64
/* How long the thread outlives its last forwarder. */
#define LINGER_NS 100000000LL
/* The longest it sleeps while it has forwarders (see top). */
#define IDLE_LOOK_NS 50000000LL
/* A held forwarder's looks (see top): the first gap, the longest. */
#define HOLD_MIN_NS 1000000LL
#define HOLD_MAX_NS 16000000LL
/* What a backlog entry costs beyond its trail and twice its struct:
 * headers, and per field (fd or port) at most HOLD_FIELD (lane_spill.c's
 * spill_cost, queue.c's node_cost). */
#define HOLD_SLACK 4096u
#define HOLD_FIELD 128u

struct fwd {
	uint32_t rx_kind, tx_kind;
	void *rx, *tx; /* handles; tx NULL once a oneshot's value went */
	struct cmesh__queue *rxq, *txq;
	unsigned char *msg; /* one message of the type */
	unsigned char *trail;
	size_t trail_cap;
	void (*at_end)(void *arg); /* cmesh__bridge_start_then() */
	void *at_end_arg;
	int64_t hold_at;  /* held (out of the waitset): look then; 0: not */
	int64_t hold_gap; /* the next look's gap while held */
	uint64_t look;	  /* the last look_reroute() that tried it */
	struct fwd *next;
};

static struct {
	pthread_mutex_t lock;
	bool running;	   /* the thread is up (it owns ws) */
	uint32_t held;	   /* forwarders held (the thread's alone) */
	uint64_t looks;	   /* look_reroute()s (the thread's alone) */
	cmesh_waitset *ws; /* members: the forwarders' receivers */
	struct fwd *list;
} F = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void after_fork_child(void)
{
	pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;

	/* The forwarders and their thread stayed in the parent. */
	F.lock = fresh;
	F.running = false;
	F.ws = NULL;
	F.list = NULL;
	F.held = 0;
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_hook(void)
{
	pthread_atfork(NULL, NULL, after_fork_child);
}

static bool is_oneshot_rx(uint32_t kind)
{
	return kind == CMESH_FIELD_KIND_ONESHOT_RECEIVER;
}

static int ws_add(cmesh_waitset *ws, struct fwd *f)
{
	uint64_t key = (uint64_t)(uintptr_t)f;

	return is_oneshot_rx(f->rx_kind) ?
		       cmesh_waitset_add_oneshot(ws, f->rx, key) :
		       cmesh_waitset_add_receiver(ws, f->rx, key);
}

static void ws_remove(cmesh_waitset *ws, struct fwd *f)
{
	if (is_oneshot_rx(f->rx_kind))
		cmesh_waitset_remove_oneshot(ws, f->rx);
	else
		cmesh_waitset_remove_receiver(ws, f->rx);
}

/*
 * A split receiver's (cmesh__bridge_start_split()): its sender is one of
 * its own queue's, which cmesh_bridge() refuses, so nothing else is.
 */
static bool split(const struct fwd *f)
{
	return f->rxq == f->txq;
}

static void fwd_free(struct fwd *f)
{
	free(f->msg);
	free(f->trail);
	free(f);
}

/*
 * Ends forwarder `f`: each side freed, or failed when `fail_tx` / `fail_rx`
 * says so (the freed receiver leaves the waitset).
 */
static void end(struct fwd *f, bool fail_tx, bool fail_rx, const char *why)
{
	cmesh__log(CMESH__LOG_DEBUG, "forwarder of %s ends: %s",
		   cmesh__queue_type(f->rxq)->name, why);
	if (f->at_end)
		f->at_end(f->at_end_arg);
	/* Split: the local senders write the receiver's lane: it fails. */
	if (split(f) && (fail_tx || fail_rx))
		cmesh__queue_fail_out(f->rxq);
	if (f->tx) {
		if (fail_tx)
			cmesh__endpoint_fail(f->tx_kind, f->tx);
		else
			cmesh__endpoint_free(f->tx_kind, f->tx);
	}
	if (fail_rx)
		cmesh__endpoint_fail(f->rx_kind, f->rx);
	else
		cmesh__endpoint_free(f->rx_kind, f->rx);
}

/*
 * A split receiver's forwarder is done: the receiving side goes to its
 * lane (queue.h); the rest as end() does.
 */
static void split_end(struct fwd *f)
{
	cmesh__log(CMESH__LOG_DEBUG, "forwarder of %s ends: its lanes ended",
		   cmesh__queue_type(f->rxq)->name);
	if (f->at_end)
		f->at_end(f->at_end_arg);
	cmesh__endpoint_prepare_move(f->rx_kind, f->rx); /* leaves the ws */
	cmesh__queue_split_end(f->rxq);
	cmesh__endpoint_shell_free(f->rx);
	cmesh__endpoint_free(f->tx_kind, f->tx);
}

static bool failure(int r)
{
	return r == -ECONNRESET || r == -EPROTO || r == -EMFILE;
}

/* The thread's waitset (set under F.lock as the thread starts). */
static cmesh_waitset *thread_ws(void)
{
	cmesh_waitset *ws;

	pthread_mutex_lock(&F.lock);
	ws = F.ws;
	pthread_mutex_unlock(&F.lock);
	return ws;
}

/*
 * Whether a message of `len` trailing bytes fits in what the sender's
 * backlog takes more (a oneshot's one value always does), so the
 * forwarder may take it (see top).
 */
static bool fits(const struct fwd *f, size_t len)
{
	const cmesh_type *t = cmesh__queue_type(f->txq);
	uint64_t used, room;

	if (f->tx_kind != CMESH_FIELD_KIND_SENDER)
		return true;
	cmesh__queue_backlog(f->txq, &used, &room);
	return !used || room >= (uint64_t)len + 2 * t->size + HOLD_SLACK +
					(uint64_t)t->nfields * HOLD_FIELD;
}

/* A held forwarder may take up again: the backlog is down to half. */
static bool drained(const struct fwd *f)
{
	uint64_t used, room;

	cmesh__queue_backlog(f->txq, &used, &room);
	return !used || room == UINT64_MAX || used <= room;
}

/*
 * Holds `f` back (see top): out of the waitset, looked at again after
 * its gap, which doubles up to HOLD_MAX_NS while it stays held.
 */
static void hold(struct fwd *f)
{
	if (!f->hold_at) {
		cmesh__log(
			CMESH__LOG_DEBUG,
			"forwarder of %s holds: its sender's backlog is full",
			cmesh__queue_type(f->rxq)->name);
		ws_remove(thread_ws(), f);
		F.held++;
		f->hold_gap = HOLD_MIN_NS;
	} else if (f->hold_gap < HOLD_MAX_NS) {
		f->hold_gap *= 2;
	}
	f->hold_at = cmesh_clock_now() + f->hold_gap;
}

/* Ends a hold: false if the waitset could not take `f` (held still). */
static bool unhold(struct fwd *f)
{
	if (!f->hold_at)
		return true;
	if (ws_add(thread_ws(), f)) {
		hold(f);
		return false;
	}
	f->hold_at = 0;
	F.held--;
	return true;
}

/*
 * Sends one received message (`len` trailing bytes) on: 0, or why the
 * forwarder ends (the message's resources are released either way).
 */
static int pass(struct fwd *f, size_t len)
{
	int r;

	if (f->tx_kind == CMESH_FIELD_KIND_ONESHOT_SENDER) {
		r = cmesh_oneshot_send(f->tx, f->msg, f->trail, len);
		f->tx = NULL; /* taken in every case */
		return r ? r : -EPIPE;
	}
	return cmesh_sender_send(f->tx, f->msg, f->trail, len);
}

/*
 * Forwards what `f` holds, up to BATCH messages. True when it ended: its
 * handles are freed, the caller frees `f`.
 */
static bool pump(struct fwd *f)
{
	const cmesh_type *t = cmesh__queue_type(f->rxq);
	int r;

	for (int i = 0, grown = 0; i < BATCH; i++) {
		r = cmesh__queue_peek(f->rxq);
		/*
		 * Nothing yet (a local producer may be between its claim and
		 * its publish): a held one stays so. (One not held receives
		 * as before: what came since the peek goes unweighed.)
		 */
		if (r == -EAGAIN && f->hold_at) {
			hold(f);
			break;
		}
		if (r >= 0 &&
		    (f->hold_at ? !drained(f) : !fits(f, (size_t)r))) {
			hold(f);
			break; /* the receiver gone is still looked at */
		}
		if (r >= 0 && !unhold(f))
			break;
		if (r > 0 && (size_t)r > f->trail_cap) {
			unsigned char *b = realloc(f->trail, (size_t)r);

			if (!b) {
				end(f, true, true, "no memory");
				return true;
			}
			f->trail = b;
			f->trail_cap = (size_t)r;
		}
		r = cmesh__endpoint_recv(f->rxq, 0, f->msg, f->trail,
					 f->trail_cap);
		if (r == -ETIMEDOUT || r == -EAGAIN)
			break;
		if (r == -EMSGSIZE) {
			/* A larger one came after the peek: nothing was
			 * taken; look again (the buffer grows). Nothing is
			 * lost past 8 looks either: the next serve looks. */
			if (grown++ < 8) {
				i--;
				continue;
			}
			break;
		}
		if (r == -EPIPE) {
			end(f, false, false, "its senders are gone");
			return true;
		}
		if (failure(r)) {
			/* Failed, not freed: its other senders hear so too. */
			end(f, true, true, "its source failed");
			return true;
		}
		if (r < 0) {
			/* Not delivered here (-ENOMEM): lost. */
			cmesh__log(CMESH__LOG_ERROR,
				   "forwarder of %s: a message could not be "
				   "taken (%d): both sides fail",
				   t->name, r);
			end(f, true, true, "a message was lost");
			return true;
		}
		r = pass(f, (size_t)r);
		if (r == -EPIPE && is_oneshot_rx(f->rx_kind) && !f->tx) {
			/* The oneshot's value went on: done. */
			end(f, false, false, "its value went on");
			return true;
		}
		if (r) {
			if (!failure(r) && r != -EPIPE)
				cmesh__log(CMESH__LOG_ERROR,
					   "forwarder of %s: a message could "
					   "not go on (%d): both sides fail",
					   t->name, r);
			end(f, r != -EPIPE, r != -EPIPE,
			    r == -EPIPE ? "its receiver is gone" :
					  "a send failed");
			return true;
		}
	}
	/* The far receiver may be gone with no message to say so. */
	r = f->tx ? cmesh__queue_rx_gone(f->txq) : 0;
	if (r) {
		end(f, false, r < 0, "its receiver is gone (seen idle)");
		return true;
	}
	/* Split: its lanes all ended (and nothing is left to read). */
	if (split(f) && r == 0 && cmesh__queue_lanes_done(f->rxq)) {
		split_end(f);
		return true;
	}
	return false;
}

static void unlink_fwd(struct fwd *f)
{
	for (struct fwd **p = &F.list; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			return;
		}
}

/*
 * The thread's next deadline: its next look (`look_at`) while it has
 * forwarders (*busy); once it has none, LINGER_NS after that, when it
 * ends (F.running false, under F.lock) unless a new forwarder came
 * meanwhile. So back-to-back moves (a forwarded rpc's reply port per
 * call) reuse one thread and waitset.
 */
static int64_t next_deadline(cmesh_waitset *ws, int64_t look_at,
			     int64_t *idle_until, bool *busy)
{
	int64_t now = cmesh_clock_now();

	pthread_mutex_lock(&F.lock);
	*busy = F.list != NULL;
	if (*busy) {
		*idle_until = 0;
		pthread_mutex_unlock(&F.lock);
		return look_at;
	}
	if (!*idle_until) {
		*idle_until = now + LINGER_NS;
	} else if (now >= *idle_until) {
		F.running = false;
		F.ws = NULL;
		pthread_mutex_unlock(&F.lock);
		cmesh_waitset_free(ws);
		return -1;
	}
	pthread_mutex_unlock(&F.lock);
	return *idle_until;
}

/* Forwards what `f` holds; frees it if it ended. Only this thread does. */
static void serve(struct fwd *f)
{
	if (!pump(f))
		return;
	if (f->hold_at)
		F.held--;
	pthread_mutex_lock(&F.lock);
	unlink_fwd(f);
	fwd_free(f);
	pthread_mutex_unlock(&F.lock);
}

/*
 * Before it sleeps, the thread polls its receivers for up to `spin_ns`
 * (CMESH_SPIN_NS, as any receiver does): a hop then costs no wakeup
 * while traffic flows. True when one was ready (and served).
 */
static bool spin(int64_t spin_ns)
{
	int64_t end = cmesh_clock_now() + spin_ns;

	for (uint32_t i = 1; spin_ns > 0; i++) {
		struct fwd *ready = NULL;

		pthread_mutex_lock(&F.lock);
		for (struct fwd **p = &F.list; *p; p = &(*p)->next)
			if (!(*p)->hold_at && cmesh__queue_ready((*p)->rxq)) {
				ready = *p;
				/* To the tail: the others get their turn. */
				*p = ready->next;
				ready->next = NULL;
				while (*p)
					p = &(*p)->next;
				*p = ready;
				break;
			}
		pthread_mutex_unlock(&F.lock);
		if (ready) {
			serve(ready);
			return true;
		}
		cmesh__park_pause();
		if (!(i % 32) && cmesh_clock_now() >= end)
			break;
	}
	return false;
}

/*
 * Every IDLE_LOOK_NS: ends, one by one, the forwarders whose sender's
 * receiver is gone, or split ones whose lanes all ended (serve() looks at
 * both last).
 */
static void look_idle(void)
{
	for (;;) {
		struct fwd *gone = NULL;

		pthread_mutex_lock(&F.lock);
		for (struct fwd *f = F.list; f && !gone; f = f->next)
			if ((f->tx && cmesh__queue_rx_gone(f->txq)) ||
			    (split(f) && cmesh__queue_lanes_done(f->rxq)))
				gone = f;
		pthread_mutex_unlock(&F.lock);
		if (!gone)
			return;
		serve(gone);
	}
}

/* A channel's forwarder with no mark to write yet (see look_reroute()). */
static bool reroutable(const struct fwd *f)
{
	return f->rx_kind == CMESH_FIELD_KIND_RECEIVER &&
	       f->tx_kind == CMESH_FIELD_KIND_SENDER && f->tx && !f->at_end &&
	       !split(f) && !f->hold_at;
}

/*
 * Every IDLE_LOOK_NS too: a forwarder whose receiver's one source lane
 * comes from a process that may claim the far receiver itself (its
 * sender's lane names it: cmesh__queue_reroute_offer()) tells that process so,
 * once, and writes the mark that claim waits for when it ends: the hop
 * goes once the claim holds.
 */
static void look_reroute(void)
{
	uint64_t look = ++F.looks;

	for (;;) {
		struct fwd *f = NULL;
		void (*at_end)(void *arg);
		void *arg;

		pthread_mutex_lock(&F.lock);
		for (struct fwd *g = F.list; g && !f; g = g->next)
			if (g->look != look && reroutable(g))
				f = g;
		if (f)
			f->look = look;
		pthread_mutex_unlock(&F.lock);
		if (!f)
			return;
		/* Only this thread removes forwarders or reads at_end. */
		if (!cmesh__queue_reroute_offer(f->rxq, f->txq, &at_end,
						&arg)) {
			f->at_end = at_end;
			f->at_end_arg = arg;
		}
	}
}

/*
 * Serves, one by one, the held forwarders whose look is due; returns the
 * next one's time (INT64_MAX: none held).
 */
static int64_t look_held(void)
{
	for (;;) {
		int64_t now = cmesh_clock_now(), next = INT64_MAX;
		struct fwd *due = NULL;

		pthread_mutex_lock(&F.lock);
		for (struct fwd *f = F.list; f && !due; f = f->next) {
			if (!f->hold_at)
				continue;
			if (f->hold_at <= now)
				due = f;
			else if (f->hold_at < next)
				next = f->hold_at;
		}
		pthread_mutex_unlock(&F.lock);
		if (!due)
			return next;
		serve(due); /* held again: later than now */
	}
}

static void *forwarder(void *arg)
{
	cmesh_waitset *ws = arg;
	const cmesh_env *env;
	int64_t idle_until = 0, spin_ns = 0;
	int64_t look_at = cmesh_clock_now() + IDLE_LOOK_NS;
	bool quiet = false; /* the last wait ended at its deadline */
	uint64_t key;

	if (!cmesh__env_get(&env))
		spin_ns = env->spin_ns == CMESH_SPIN_ADAPTIVE ?
				  CMESH__SPIN_BASE_NS :
				  env->spin_ns;
	for (;;) {
		bool busy;
		int64_t dl = next_deadline(ws, look_at, &idle_until, &busy);
		int r;

		if (dl < 0)
			return NULL; /* ws is freed */
		if (busy && F.held) {
			int64_t held = look_held();

			if (held < dl)
				dl = held;
		}
		/* A wake for the look alone says nothing flows: no spin. */
		if (!busy || quiet || !spin(spin_ns)) {
			r = cmesh_waitset_wait(ws, dl, &key);
			quiet = r == -ETIMEDOUT;
			if (r == 0) {
				/* Only this thread removes forwarders: the
				 * key is alive. */
				serve((struct fwd *)(uintptr_t)key);
			} else if (r != -ETIMEDOUT) {
				/* -ENOMEM and the like: the world moves on. */
				cmesh__log(CMESH__LOG_ERROR,
					   "forwarder: wait: %d", r);
			}
		}
		if (busy && cmesh_clock_now() >= look_at) {
			look_idle();
			look_reroute();
			look_at = cmesh_clock_now() + IDLE_LOOK_NS;
		}
	}
}

static int start_thread(cmesh_waitset *ws)
{
	pthread_attr_t a;
	pthread_t t;
	sigset_t all, old;
	int r;

	if (pthread_attr_init(&a))
		return -ENOMEM;
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	/* The thread takes no signal: the application's threads do. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&t, &a, forwarder, ws);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&a);
	if (!r)
		pthread_setname_np(t, "cmesh-forward");
	return -r;
}

unsigned cmesh__bridge_count(void)
{
	unsigned n = 0;

	pthread_mutex_lock(&F.lock);
	for (struct fwd *f = F.list; f; f = f->next)
		n++;
	pthread_mutex_unlock(&F.lock);
	return n;
}

void cmesh__bridge_each(void (*fn)(void *arg, struct cmesh__queue *rxq,
				   struct cmesh__queue *txq, int64_t hold_at),
			void *arg)
{
	pthread_mutex_lock(&F.lock);
	for (struct fwd *f = F.list; f; f = f->next)
		fn(arg, f->rxq, f->txq, f->hold_at);
	pthread_mutex_unlock(&F.lock);
}

int cmesh__bridge_start(uint32_t rx_kind, void *rx, uint32_t tx_kind, void *tx)
{
	return cmesh__bridge_start_then(rx_kind, rx, tx_kind, tx, NULL, NULL);
}

int cmesh__bridge_start_then(uint32_t rx_kind, void *rx, uint32_t tx_kind,
			     void *tx, void (*at_end)(void *arg), void *arg)
{
	struct fwd *f = calloc(1, sizeof(*f));
	cmesh_waitset *fresh = NULL;
	int r;

	pthread_once(&fork_once, fork_hook);
	if (!f)
		return -ENOMEM;
	f->at_end = at_end;
	f->at_end_arg = arg;
	f->rx_kind = rx_kind;
	f->tx_kind = tx_kind;
	f->rx = rx;
	f->tx = tx;
	f->rxq = cmesh__endpoint_queue(rx_kind, rx);
	f->txq = cmesh__endpoint_queue(tx_kind, tx);
	f->msg = malloc(cmesh__queue_type(f->rxq)->size);
	if (!f->msg) {
		fwd_free(f);
		return -ENOMEM;
	}
	cmesh__endpoint_prepare_move(rx_kind, rx); /* leaves a waitset */
	pthread_mutex_lock(&F.lock);
	/* Listed first: once in the waitset the thread may end it. */
	f->next = F.list;
	F.list = f;
	if (!F.running) {
		r = cmesh_waitset_new(&fresh);
		if (!r)
			r = ws_add(fresh, f);
		if (!r)
			r = start_thread(fresh);
		if (!r) {
			F.ws = fresh;
			F.running = true;
		} else if (fresh) {
			ws_remove(fresh, f);
			cmesh_waitset_free(fresh);
		}
	} else {
		r = ws_add(F.ws, f);
	}
	if (r) {
		F.list = f->next;
		fwd_free(f);
	}
	pthread_mutex_unlock(&F.lock);
	return r;
}

int cmesh__bridge_start_split(void *rx, void *tx, void (*at_end)(void *arg),
			      void *arg)
{
	return cmesh__bridge_start_then(CMESH_FIELD_KIND_RECEIVER, rx,
					CMESH_FIELD_KIND_SENDER, tx, at_end,
					arg);
}

int cmesh_bridge(cmesh_receiver *rx, cmesh_sender *tx)
{
	if (!rx || !tx || rx->q == tx->q)
		return -EINVAL;
	if (cmesh__queue_fingerprint(rx->q) != cmesh__queue_fingerprint(tx->q))
		return -EBADMSG;
	return cmesh__bridge_start(CMESH_FIELD_KIND_RECEIVER, rx,
				   CMESH_FIELD_KIND_SENDER, tx);
}
