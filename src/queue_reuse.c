/* SPDX-License-Identifier: MIT */
/*
 * queue_reuse.c - queues used again.
 *
 * Destroyed queues. A queue with a small ring (slot storage from the heap,
 * CMESH__SLOTS_HEAP_MAX: oneshots, reply ports) is not freed when it is
 * destroyed: the destroying thread keeps up to CACHE_MAX of them, whole
 * (the struct, its slot storage with every seq back to zero, its scratch),
 * and its next cmesh__queue_new() of the same geometry initialises one
 * again instead of four allocations. A queue made per call (an rpc's reply
 * port across processes, on both sides) then costs no malloc and no free.
 * A thread's exit frees what it kept (a key destructor).
 *
 * Re-armed oneshots. A oneshot's queue used again (rpc.c keeps a few per
 * thread): the value came and its sender is gone, so nobody but the
 * receiver's holder can reach the queue; it becomes a fresh oneshot
 * without a free and an allocation.
 *
 * The ring is not reset: head and tail continue from where the value
 * left them (both at the same position, every slot's seq that of a
 * position already taken), as they would for a channel's next message.
 * So a re-armed queue writes only its state line, and the lines the
 * next sender writes (tail, slot) stay in whichever core wrote them last.
 *
 * Parked reply ports. An imported reply port (a oneshot's sender on a
 * kept lane, port_import.c) whose one use ended with its LAST record is not
 * destroyed with its last reference: the thread parks it, still
 * initialised, under its lane's serial (up to PARK_MAX, the oldest
 * destroyed first), and the next REUSE of that lane that this thread
 * imports takes it back re-armed instead of making a queue. A parked
 * queue holds neither its lane nor its link (both went as for any
 * destroyed queue); the serial, never reused, says whether the lane a
 * REUSE names is the one it wrote.
 *
 * Kept reply lanes (moved here from queue_port.c). A oneshot's receiver
 * whose value came through a kept rpc call's reply lane, and that holds
 * nothing else, is re-armed for that lane (cmesh__queue_rearm_lane()):
 * the export of its next sender names the lane again.
 */
#include "hint.h"
#include "lane.h"
#include "link.h"
#include "queue.h"
#include "queue_int.h"
#include "tls.h"
#include "type.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

/*
 * Under AddressSanitizer a kept queue is poisoned until it is taken
 * again: a stale handle's use of a destroyed queue still reports a
 * use-after-free, as it would had the queue been freed.
 */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* ---- destroyed queues ---- */

#define CACHE_MAX 8u

/* A kept queue and its geometry (read without touching the queue). */
struct kept {
	struct cmesh__queue *q;
	unsigned char *slots, *scratch;
	uint64_t bytes;
	uint32_t stride, msg_size;
};

#define PARK_MAX 4u

struct parked {
	uint64_t serial; /* its lane's */
	struct kept k;
};

struct cache {
	struct kept k[CACHE_MAX];
	unsigned n;
	struct parked p[PARK_MAX]; /* oldest first */
	unsigned np;
};

static _Thread_local struct cache cache;

static void unpoison(const struct kept *k)
{
	UNPOISON(k->q, sizeof(*k->q));
	UNPOISON(k->slots, k->bytes);
	UNPOISON(k->scratch, k->msg_size);
}

static struct kept kept_of(struct cmesh__queue *q)
{
	return (struct kept){ q,	  q->slots,
			      q->scratch, (q->mask + 1) * q->stride,
			      q->stride,  q->msg_size };
}

static void poison(const struct kept *k)
{
	POISON(k->q, sizeof(*k->q));
	POISON(k->slots, k->bytes);
	POISON(k->scratch, k->msg_size);
}

/* Parked queue i, out of the list and unpoisoned. */
static struct cmesh__queue *unpark_at(struct cache *c, unsigned i)
{
	struct kept k = c->p[i].k;

	memmove(&c->p[i], &c->p[i + 1], (c->np - i - 1) * sizeof(c->p[0]));
	c->np--;
	unpoison(&k);
	return k.q;
}

static void cache_exit(void *p)
{
	struct cache *c = p;

	/* Destroyed: into the cache, if there is room (freed below). */
	while (c->np)
		cmesh__queue_discard(unpark_at(c, c->np - 1));
	while (c->n) {
		struct kept *k = &c->k[--c->n];

		unpoison(k);
		cmesh__queue_free_mem(k->q);
	}
}

void cmesh__queue_cache_trim(void)
{
	cache_exit(&cache);
}

struct cmesh__queue *cmesh__queue_cache_take(uint64_t bytes, uint32_t stride,
					     uint32_t msg_size)
{
	struct cache *c = &cache;

	for (unsigned i = c->n; i-- > 0;) {
		struct kept k = c->k[i];

		if (k.bytes != bytes || k.stride != stride ||
		    k.msg_size != msg_size)
			continue;
		c->k[i] = c->k[--c->n];
		unpoison(&k);
		return k.q;
	}
	return NULL;
}

bool cmesh__queue_cache_put(struct cmesh__queue *q)
{
	struct cache *c = &cache;
	struct kept k = kept_of(q);

	if (c->n == CACHE_MAX)
		return false;
	/* Its exit frees them: else no keeping. */
	if (!c->n && !c->np &&
	    !cmesh__tls_at_exit(CMESH__TLS_QUEUES, cache_exit, c))
		return false;
	c->k[c->n++] = k;
	poison(&k);
	return true;
}

/* ---- parked reply ports ---- */

bool cmesh__queue_park(struct cmesh__queue *q, uint64_t serial)
{
	struct cache *c = &cache;
	struct kept k = kept_of(q);

	/* Its exit frees them: else no keeping. */
	if (!c->n && !c->np &&
	    !cmesh__tls_at_exit(CMESH__TLS_QUEUES, cache_exit, c))
		return false;
	if (c->np == PARK_MAX)
		cmesh__queue_discard(unpark_at(c, 0)); /* the oldest */
	c->p[c->np].serial = serial;
	c->p[c->np++].k = k;
	poison(&k);
	return true;
}

struct cmesh__queue *cmesh__queue_unpark(struct cmesh__lane *ln,
					 const cmesh_type *type)
{
	struct cache *c = &cache;
	struct cmesh__queue *q;

	for (unsigned i = 0; i < c->np; i++) {
		if (c->p[i].serial != ln->serial)
			continue;
		q = unpark_at(c, i);
		/*
		 * Another response type in this use: a new queue. (Its
		 * shape too: a freed type's memory may hold another now.)
		 */
		if (q->h.type != type || q->msg_size != type->size ||
		    q->fast_send != !type->nfields ||
		    atomic_load_explicit(&q->tx_lane, memory_order_relaxed) !=
			    ln) {
			cmesh__queue_discard(q);
			return NULL;
		}
		/* What the type says (its memory may have changed in place). */
		q->h.has_ports = cmesh__type_has_endpoints(type);
		atomic_store_explicit(&q->h.fp, 0, memory_order_relaxed);
		/*
		 * As made by port_import.c's import: one sender (the spare
		 * handle), one reference (the lane's side has none), nothing
		 * sent. The lane's new use publishes what its reader sees.
		 */
		atomic_store_explicit(&q->state, 0, memory_order_relaxed);
		atomic_store_explicit(&q->nsenders, 1, memory_order_relaxed);
		atomic_store_explicit(&q->refs, 1, memory_order_relaxed);
		q->closed_out = false;
		return q;
	}
	return NULL;
}

/* ---- re-armed oneshots ---- */

bool cmesh__queue_local_oneshot(struct cmesh__queue *q)
{
	return q->mask == 1 && !q->rx_lane &&
	       !atomic_load_explicit(&q->tx_lane, memory_order_relaxed) &&
	       !atomic_load_explicit(&q->xl_flags, memory_order_relaxed);
}

bool cmesh__queue_rearm(struct cmesh__queue *q)
{
	/*
	 * Acquire: pairs with the last sender's acq_rel release of its
	 * reference (cmesh__queue_put()), its last access to the queue.
	 */
	if (atomic_load_explicit(&q->refs, memory_order_acquire) != 1 ||
	    atomic_load_explicit(&q->nsenders, memory_order_relaxed) != 0)
		return false;
	/*
	 * A local oneshot, its value taken (its only sender sent once: the
	 * tail is the head; not loaded, the line stays the sender's), never
	 * moved.
	 */
	if (!cmesh__queue_local_oneshot(q) ||
	    atomic_load_explicit(&q->state, memory_order_relaxed) !=
		    ST_TX_CLOSED ||
	    atomic_load_explicit(&q->ovf_mode, memory_order_relaxed) ||
	    q->ovf_head || q->ovf_batch || q->closed_out)
		return false;
	/*
	 * Relaxed: the queue reaches its next sender inside a message, whose
	 * publication orders these stores before the sender's loads.
	 */
	atomic_store_explicit(&q->state, 0, memory_order_relaxed);
	atomic_store_explicit(&q->nsenders, 1, memory_order_relaxed);
	atomic_store_explicit(&q->refs, 2, memory_order_relaxed);
	/* Its value was taken: the head is the tail (no reload next send). */
	atomic_store_explicit(&q->head_cache, q->head, memory_order_relaxed);
	q->senders_done = false;
	q->in_flight_looks = 0;
	atomic_store_explicit(&q->st_waits, 0, memory_order_relaxed);
	atomic_store_explicit(&q->st_caught, 0, memory_order_relaxed);
	atomic_store_explicit(&q->st_sleeps, 0, memory_order_relaxed);
	atomic_store_explicit(&q->spin_win, q->spin_ns, memory_order_relaxed);
	return true;
}

void cmesh__queue_prefetch_state(struct cmesh__queue *q)
{
	cmesh__prefetchw(&q->state);
}

/* ---- kept rpc calls (queue.h) ---- */

struct cmesh__link *cmesh__queue_tx_link(struct cmesh__queue *q)
{
	bool in;
	struct cmesh__lane *ln = tx_enter(q, &in);
	struct cmesh__link *l = ln ? ln->link : NULL;

	/* Compared only (rpc.c): it may go once we leave. */
	tx_leave_quiet(q, in);
	return l;
}

/* A receiver's lane that a kept call may keep, or NULL (consumer). */
static struct cmesh__lane *reply_lane(struct cmesh__queue *q)
{
	struct cmesh__lane *ln;

	if (q->mask != 1 || q->rx_lane || q->ws || q->xl_n != 1 || q->xl_err ||
	    atomic_load_explicit(&q->tx_lane, memory_order_relaxed) ||
	    (atomic_load_explicit(&q->xl_flags, memory_order_relaxed) & XL_NEW))
		return NULL;
	ln = q->xl[0];
	return ln->peer_idle ? ln : NULL;
}

void cmesh__queue_hold_link(struct cmesh__queue *q)
{
	q->hold_link = true;
}

int cmesh__queue_reply_link(struct cmesh__queue *q, struct cmesh__link **out)
{
	struct cmesh__lane *ln = reply_lane(q);

	if (!ln)
		return -ENOENT;
	if (cmesh__link_failed(ln->link) ||
	    atomic_load_explicit(&ln->dropped, memory_order_relaxed))
		return -ECONNRESET;
	*out = ln->link;
	return 0;
}

bool cmesh__queue_rearm_lane(struct cmesh__queue *q)
{
	struct cmesh__lane *ln = reply_lane(q);

	/*
	 * Its lane holds the only sender reference; the receiver's holder
	 * and that lane are the only users (refs: both sides). Nothing came
	 * through the local tier: a oneshot whose sender went away at once.
	 */
	if (!ln || atomic_load_explicit(&q->refs, memory_order_acquire) != 2 ||
	    atomic_load_explicit(&q->nsenders, memory_order_relaxed) != 1 ||
	    (atomic_load_explicit(&q->state, memory_order_relaxed) &
	     ~ST_SLEEPERS) ||
	    atomic_load_explicit(&q->ovf_mode, memory_order_relaxed) ||
	    q->ovf_head || q->ovf_batch || q->closed_out ||
	    atomic_load_explicit(&q->tail, memory_order_relaxed) != q->head)
		return false;
	atomic_store_explicit(&q->state, 0, memory_order_relaxed);
	atomic_store_explicit(&q->nsenders, 2, memory_order_relaxed);
	q->senders_done = false;
	q->in_flight_looks = 0;
	q->xl_next = 0;
	atomic_store_explicit(&q->st_waits, 0, memory_order_relaxed);
	atomic_store_explicit(&q->st_caught, 0, memory_order_relaxed);
	atomic_store_explicit(&q->st_sleeps, 0, memory_order_relaxed);
	atomic_store_explicit(&q->spin_win, q->spin_ns, memory_order_relaxed);
	q->rebind = ln;
	return true;
}

struct cmesh__lane *cmesh__queue_rebind(struct cmesh__queue *q)
{
	struct cmesh__lane *ln = q->rebind;

	q->rebind = NULL;
	return ln;
}
