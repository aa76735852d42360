/* SPDX-License-Identifier: MIT */
/*
 * rpc.c - requests with a reply port (include/cmesh/rpc.h): a oneshot of
 * the response type, whose message carries a small header in front of
 * its trailing bytes:
 *
 *   struct reply_hdr (16 bytes) | chain (chain_len bytes) | the response's
 *                                                          trailing bytes
 *
 * A completion without trailing bytes, the common case, has no header at
 * all (no trailing bytes: the response alone, a message a oneshot sends
 * on its fast path). Any other completion has status 0 and no chain; a
 * failure a negative status,
 * `nchain` NUL-terminated strings filling `chain_len` bytes, and a blank
 * response (no resources: fd fields -1, endpoints NULL). The header is
 * the server's word: checked on arrival, else -EPROTO.
 *
 * Reuse. A call whose reply came is not freed: each thread keeps up to
 * KEEP of them, receiver and all. Its next call of the same response type
 * takes one whose server has let go of the reply port (its sender freed:
 * cmesh__queue_rearm()) and hands out a new sender on the same queue. In
 * a round trip this saves the allocations and their cross-thread frees,
 * and the queue's lines stay where they were; the newest kept call rests
 * one round, so its server is done with it and the line a re-arm writes
 * can be fetched while the caller waits, and the newest but one is taken
 * (a caller making one call at a time alternates between two: fewer
 * lines cross between the two CPUs than when it cycles through all it
 * keeps, oldest first). A call that failed, kept an
 * -EMSGSIZE response or whose receiver was handed out (cmesh_rpc_receiver():
 * it may be in a waitset) is freed as before, as are a thread's kept calls
 * when it exits.
 *
 * A call answered from another process is kept with its reply lane (its
 * use ended with a LAST record: cmesh__queue_rearm_lane()), for a call over
 * the same link only, whose export names that lane again. Its lane holds
 * the link: a hook on the link (link.h) lets the link's thread claim the
 * call once the link failed (kstate KEPT -> GONE) and free its receiver;
 * the thread takes a kept call back (KEPT -> OWNED) before it touches its
 * queue, and frees only the shell of one claimed.
 */
#include "endpoint.h"

#include "cancel.h"
#include "link.h"
#include "port.h"
#include "queue.h"
#include "tls.h"
#include "type.h"

#include <cmesh/rpc.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define REPLY_MAGIC 0x31435052u /* "RPC1" */
/* The largest trail any message may have (CMESH_MAX_MESSAGE's bound). */
#define MAX_TRAIL (1ull << 30)

struct reply_hdr {
	uint32_t magic;
	int32_t status;	    /* 0, or the server's negative errno */
	uint32_t chain_len; /* bytes of the chain after this header */
	uint32_t nchain;    /* strings in it */
};

/* Bytes of a reply's header and trailing bytes kept in the call itself. */
#define INLINE_BUF 240u
/* A call's alignment: an aligned pair of cache lines. */
#define CALL_ALIGN 128u

struct cmesh_rpc {
	cmesh_oneshot_receiver *rx;
	const cmesh_type *resp;
	int state;    /* 0 waiting, else the reply's outcome */
	bool kept;    /* a response received, not delivered */
	bool exposed; /* cmesh_rpc_receiver() gave out rx */
	uint32_t resp_size, resp_nfields; /* resp's, when the call was made */
	int code;			  /* after -EREMOTEIO */
	char *error;			  /* the chain, joined with ": " */
	void *msg;	    /* the response (resp->size bytes, after us) */
	unsigned char *buf; /* header, chain, trailing bytes */
	size_t buf_cap, trail_off, trail_len;
	/*
	 * A call kept with its reply lane (see "Reuse" above): the lane's
	 * link, the hook that gives the lane back if that link fails while
	 * the call is kept, and who has the call (KS_*). In use again, the
	 * call may lose its lane (the server dropped the reply port) while its
	 * hook is on the link: its queue then keeps the lane's reference on
	 * the link until it goes (cmesh__queue_hold_link()).
	 */
	struct cmesh__link *link;
	struct cmesh__link_hook hook;
	_Atomic int kstate;
	unsigned char inline_buf[INLINE_BUF];
	/* then the response: one allocation per call */
};

/* The request type's reply port: its only oneshot-sender field. */
static const cmesh_field *reply_field(const cmesh_type *t)
{
	const cmesh_field *f = NULL;

	for (uint32_t i = 0; i < t->nfields; i++) {
		if (t->fields[i].kind != CMESH_FIELD_KIND_ONESHOT_SENDER)
			continue;
		if (f)
			return NULL; /* which one? */
		f = &t->fields[i];
	}
	return f;
}

/* ---- calls kept for reuse, per thread ---- */

#define KEEP 4u
/* Larger responses: their rings are kept by nobody (memory per thread). */
#define KEEP_MAX_RESP 1024u

struct keep {
	cmesh_rpc *c[KEEP]; /* oldest first */
	unsigned n;
};

static _Thread_local struct keep kept_calls;

/* Who has a call with a reply lane: its thread, its kept list, the link. */
#define KS_OWNED 0 /* in use, or being kept or freed by its thread */
#define KS_KEPT 1  /* kept: its link's failure may claim it */
#define KS_GONE 2  /* claimed: its receiver is the link's, the rest ours */

static void call_free(cmesh_rpc *c);

/* Frees what a call holds but its receiver, and the call. */
static void call_free_shell(cmesh_rpc *c)
{
	if (c->buf != c->inline_buf)
		free(c->buf);
	free(c->error);
	free(c);
}

/*
 * Takes a kept call back from its kept list: true if it is ours again
 * (a call without a reply lane always is), false if its link's failure
 * claimed its receiver (then only its shell is left).
 */
static bool unkept(cmesh_rpc *c)
{
	int want = KS_KEPT;

	return !c->link || atomic_compare_exchange_strong_explicit(
				   &c->kstate, &want, KS_OWNED,
				   memory_order_seq_cst, memory_order_acquire);
}

/* A kept call goes for good. */
static void drop_kept(cmesh_rpc *c)
{
	if (unkept(c))
		call_free(c);
	else
		call_free_shell(c);
}

/* A thread's exit: its kept calls go. */
static void keep_exit(void *p)
{
	struct keep *k = p;

	while (k->n)
		drop_kept(k->c[--k->n]);
}

/* The link failed while the call was kept: its receiver goes. */
static void *claim_kept(struct cmesh__link_hook *h)
{
	cmesh_rpc *c =
		(cmesh_rpc *)(void *)((char *)h - offsetof(cmesh_rpc, hook));
	/* Read first: once claimed, its thread may free the shell. */
	cmesh_oneshot_receiver *rx = c->rx;
	int want = KS_KEPT;

	return atomic_compare_exchange_strong_explicit(&c->kstate, &want,
						       KS_GONE,
						       memory_order_seq_cst,
						       memory_order_relaxed) ?
		       rx :
		       NULL;
}

static void release_kept(void *rx)
{
	cmesh_oneshot_receiver_free(rx);
}

/*
 * A child after fork: the calls kept with a reply lane are on the
 * parent's links, whose threads it does not have: it forgets them (their
 * memory is the parent's copy).
 */
static void after_fork_child(void)
{
	struct keep *k = &kept_calls;
	unsigned n = 0;

	for (unsigned i = 0; i < k->n; i++)
		if (!k->c[i]->link)
			k->c[n++] = k->c[i];
	k->n = n;
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_init(void)
{
	pthread_atfork(NULL, NULL, after_fork_child);
}

/* Keeps a call whose reply came; false: free it. */
static bool keep(cmesh_rpc *c)
{
	struct keep *k = &kept_calls;
	struct cmesh__link *link = NULL;

	if (c->state != 1 || c->kept || c->exposed ||
	    c->resp_size > KEEP_MAX_RESP ||
	    (!cmesh__queue_local_oneshot(c->rx->q) &&
	     cmesh__queue_reply_link(c->rx->q, &link)))
		return false;
	/*
	 * Kept on this link before: its hook is still there unless the
	 * link's claims ran, and then cmesh__link_unkeepable() says so below.
	 */
	if (link && c->link != link) {
		if (c->link)
			return false; /* never: a lane keeps its link */
		pthread_once(&fork_once, fork_init);
		/* Given back by its link should the link fail meanwhile. */
		c->hook.claim = claim_kept;
		c->hook.release = release_kept;
		if (!cmesh__link_hook_add(link, &c->hook))
			return false;
		c->link = link;
		cmesh__queue_hold_link(c->rx->q);
	}
	/* Its exit frees them: else no keeping. */
	if (!k->n && !cmesh__tls_at_exit(CMESH__TLS_RPC, keep_exit, k))
		return false;
	if (k->n == KEEP) {
		drop_kept(k->c[0]);
		memmove(&k->c[0], &k->c[1], (KEEP - 1) * sizeof(k->c[0]));
		k->n--;
	}
	if (c->buf != c->inline_buf) {
		free(c->buf);
		c->buf = c->inline_buf;
		c->buf_cap = sizeof(c->inline_buf);
	}
	k->c[k->n++] = c;
	if (link) {
		atomic_store_explicit(&c->kstate, KS_KEPT,
				      memory_order_seq_cst);
		/*
		 * Claims that ran before that store (the link failed, or
		 * only kept calls hold it) missed it: take it back (unless
		 * they did claim it after all).
		 */
		if (cmesh__link_unkeepable(link)) {
			k->n--;
			drop_kept(c);
		}
	}
	return true;
}

/* Forgets kept call i. */
static void unkeep(struct keep *k, unsigned i)
{
	memmove(&k->c[i], &k->c[i + 1], (k->n - i - 1) * sizeof(k->c[0]));
	k->n--;
}

/*
 * Re-arms kept call c for a request that takes `link` (NULL: it stays in
 * this process). A call whose reply came through a lane keeps it and is
 * for requests on that lane's link only; taken back from its kept list to
 * be re-armed, one whose link failed or that cannot be re-armed is freed
 * (*gone). True if c is a fresh oneshot again (ours).
 */
static bool rearm(cmesh_rpc *c, struct cmesh__link *link, bool *gone)
{
	*gone = false;
	if (!c->link)
		return cmesh__queue_rearm(c->rx->q);
	if (c->link != link)
		return false;
	*gone = true;
	if (!unkept(c)) {
		call_free_shell(c);
		return false;
	}
	if (cmesh__queue_rearm_lane(c->rx->q)) {
		*gone = false;
		return true;
	}
	call_free(c);
	return false;
}

/*
 * A kept call for responses of `resp` whose queue is a fresh oneshot
 * again, with a new sender on it in *otx, for a request on `link`; NULL if
 * there is none.
 */
static cmesh_rpc *reuse(const cmesh_type *resp, struct cmesh__link *link,
			cmesh_oneshot_sender **otx)
{
	struct keep *k = &kept_calls;

	/*
	 * The newest kept call rests: its server may still be letting go,
	 * and the line a re-arm writes may still be in the server's cache.
	 */
	for (unsigned i = k->n ? k->n - 1 : 0; i-- > 0;) {
		cmesh_rpc *c = k->c[i];
		bool gone;

		/*
		 * The same descriptor: its address, and (should a freed type's
		 * memory hold another now: cmesh_rpc_trim() says how not to)
		 * at least the shape the queue and buffer were made for.
		 */
		if (c->resp != resp || c->resp_size != resp->size ||
		    c->resp_nfields != resp->nfields)
			continue;
		if (!rearm(c, link, &gone)) {
			if (gone)
				unkeep(k, i);
			continue;
		}
		unkeep(k, i);
		c->state = 0;
		c->code = 0;
		/* Free: its last sender, gone, had it. */
		*otx = cmesh__queue_spare_tx(c->rx->q);
		return c;
	}
	return NULL;
}

/* ---- caller ---- */

int cmesh_rpc_call(cmesh_sender *tx, void *req, const void *trail,
		   size_t trail_len, cmesh_rpc **out)
{
	const cmesh_type *t = cmesh_sender_type(tx);
	const cmesh_field *f = t && req ? reply_field(t) : NULL;
	cmesh_oneshot_sender *otx;
	cmesh_rpc *c;
	void *cur;
	int r;

	/*
	 * As cmesh_sender_send(): a request carrying `tx` is not taken, in
	 * every case (releasing it would free the caller's `tx`).
	 */
	if (t && req && cmesh__type_holds(t, req, tx))
		return -EINVAL;
	if (!out || !f) {
		r = -EINVAL;
		goto out_release;
	}
	memcpy(&cur, (char *)req + f->offset, sizeof(cur));
	if (cur || (trail_len && !trail)) {
		r = -EINVAL;
		goto out_release;
	}
	c = reuse(f->type, cmesh__queue_tx_link(tx->q), &otx);
	if (!c) {
		/*
		 * Alone in its aligned 128-byte pairs: the caller writes it
		 * every call, and a neighbour the server writes (a ring's
		 * slots) would share the adjacent-line prefetcher's traffic.
		 */
		c = aligned_alloc(CALL_ALIGN,
				  (sizeof(*c) + f->type->size + CALL_ALIGN -
				   1) & ~(size_t)(CALL_ALIGN - 1));
		if (!c) {
			r = -ENOMEM;
			goto out_release;
		}
		memset(c, 0, sizeof(*c));
		c->resp = f->type;
		c->resp_size = f->type->size;
		c->resp_nfields = f->type->nfields;
		c->msg = c + 1;
		c->buf = c->inline_buf;
		c->buf_cap = sizeof(c->inline_buf);
		r = cmesh_oneshot_new(f->type, &otx, &c->rx);
		if (r) {
			free(c);
			goto out_release;
		}
	}
	memcpy((char *)req + f->offset, &otx, sizeof(otx));
	/*
	 * Takes the request's resources, the reply port's sender too. The
	 * send's own checks are made above: its type has endpoint fields.
	 */
	r = cmesh__port_send(tx->q, req, trail, trail_len);
	if (r) {
		call_free(c);
		return r;
	}
	*out = c;
	return 0;

out_release:
	if (t && req)
		cmesh__type_release(t, req);
	return r;
}

/* Checks the header and chain of a reply in c->buf (`n` bytes). */
static int parse(cmesh_rpc *c, size_t n)
{
	struct reply_hdr h;
	const char *s;
	size_t at = 0, joined = 0;

	if (n == 0) { /* a completion without trailing bytes */
		c->trail_off = 0;
		c->trail_len = 0;
		return 0;
	}
	if (n < sizeof(h))
		return -EPROTO;
	memcpy(&h, c->buf, sizeof(h));
	if (h.magic != REPLY_MAGIC || h.status > 0 ||
	    h.chain_len > CMESH_RPC_MAX_CHAIN_BYTES ||
	    h.chain_len > n - sizeof(h) || h.nchain > CMESH_RPC_MAX_CHAIN ||
	    (h.status == 0) != (h.chain_len == 0 && h.nchain == 0))
		return -EPROTO;
	c->trail_off = sizeof(h) + h.chain_len;
	c->trail_len = n - c->trail_off;
	if (h.status == 0)
		return 0;
	/* Exactly nchain strings, each ended by its NUL, filling chain_len. */
	s = (const char *)c->buf + sizeof(h);
	for (uint32_t i = 0; i < h.nchain; i++) {
		const char *end = memchr(s + at, '\0', h.chain_len - at);

		if (!end)
			return -EPROTO;
		joined += (size_t)(end - (s + at)) + 2;
		at = (size_t)(end - s) + 1;
	}
	if (at != h.chain_len || !h.nchain || c->trail_len)
		return -EPROTO;
	c->code = h.status;
	c->error = malloc(joined); /* without memory: the code alone */
	if (!c->error)
		return -EREMOTEIO;
	c->error[0] = '\0';
	for (size_t i = 0; i < h.chain_len; i += strlen(s + i) + 1) {
		if (i)
			strcat(c->error, ": ");
		strcat(c->error, s + i);
	}
	return -EREMOTEIO;
}

/* Receives the reply into the call (msg, buf). */
static int take(cmesh_rpc *c, const cmesh_ctx *ctx, bool wait)
{
	int r;

	/*
	 * The next call's re-arm is paid for while we wait: once this call
	 * is kept, the newest kept call now is no longer the newest, and the
	 * next call takes it (see reuse()). Not a call kept with a reply
	 * lane: its link's failure may free its queue meanwhile.
	 */
	if (wait && kept_calls.n && !kept_calls.c[kept_calls.n - 1]->link)
		cmesh__queue_prefetch_state(
			kept_calls.c[kept_calls.n - 1]->rx->q);
	for (;;) {
		if (wait)
			r = cmesh_oneshot_recv_ctx(c->rx, ctx, c->msg, c->buf,
						   c->buf_cap);
		else
			r = cmesh_oneshot_try_recv(c->rx, c->msg, c->buf,
						   c->buf_cap);
		if (r != -EMSGSIZE)
			break;
		/* Nothing was taken: its size, then a buffer for it. */
		r = cmesh__queue_peek(c->rx->q);
		if (r < 0)
			return r;
		size_t cap = (size_t)r;
		unsigned char *b = malloc(cap);

		if (!b)
			return -ENOMEM;
		if (c->buf != c->inline_buf)
			free(c->buf);
		c->buf = b;
		c->buf_cap = cap;
	}
	if (r < 0)
		return r;
	r = parse(c, (size_t)r);
	c->kept = r == 0;
	if (r) /* a failure's response should hold nothing: release it */
		cmesh__type_release(c->resp, c->msg);
	return r;
}

static int finish(cmesh_rpc *c, const cmesh_ctx *ctx, bool wait, void *out_resp,
		  void *out_trail, size_t cap)
{
	int r;

	if (!c || !out_resp || (cap && !out_trail))
		return -EINVAL;
	if (c->state && !c->kept)
		return c->state == 1 ? -EPIPE : c->state; /* delivered: gone */
	if (!c->kept) {
		r = take(c, ctx, wait);
		if (r == -ETIMEDOUT || r == -ECANCELED || r == -EAGAIN ||
		    r == -ENOMEM)
			return r; /* still pending */
		c->state = r ? r : 1;
		if (r)
			return r;
	}
	if (c->trail_len > cap)
		return -EMSGSIZE; /* kept for a larger buffer */
	memcpy(out_resp, c->msg, c->resp->size);
	if (c->trail_len)
		memcpy(out_trail, c->buf + c->trail_off, c->trail_len);
	c->kept = false;
	return (int)c->trail_len;
}

int cmesh_rpc_wait(cmesh_rpc *call, const cmesh_ctx *ctx, void *out_resp,
		   void *out_trail, size_t trail_cap)
{
	return finish(call, ctx, true, out_resp, out_trail, trail_cap);
}

int cmesh_rpc_try_wait(cmesh_rpc *call, void *out_resp, void *out_trail,
		       size_t trail_cap)
{
	return finish(call, NULL, false, out_resp, out_trail, trail_cap);
}

int cmesh_rpc_error_code(const cmesh_rpc *call)
{
	return call ? call->code : 0;
}

const char *cmesh_rpc_error(const cmesh_rpc *call)
{
	return call ? call->error : NULL;
}

size_t cmesh_rpc_trail_len(const cmesh_rpc *call)
{
	return call && call->kept ? call->trail_len : 0;
}

cmesh_oneshot_receiver *cmesh_rpc_receiver(cmesh_rpc *call)
{
	if (!call)
		return NULL;
	call->exposed = true;
	return call->rx;
}

/* Frees a call that is ours (never one kept: drop_kept()). */
static void call_free(cmesh_rpc *c)
{
	if (c->kept)
		cmesh__type_release(c->resp, c->msg);
	/* Before the receiver: it (its lane, or held_link) holds the link. */
	if (c->link)
		cmesh__link_hook_del(c->link, &c->hook);
	cmesh_oneshot_receiver_free(c->rx);
	call_free_shell(c);
}

void cmesh_rpc_free(cmesh_rpc *call)
{
	if (call && !keep(call))
		call_free(call);
}

void cmesh_rpc_trim(void)
{
	keep_exit(&kept_calls);
	/* Their queues went to the thread's queue cache: it goes too. */
	cmesh__queue_cache_trim();
}

/* ---- server ---- */

/* Sends `msg` with header `h`, `extra` and `trail` as its trailing bytes. */
static int reply(cmesh_oneshot_sender *tx, const void *msg,
		 const struct reply_hdr *h, const void *extra, size_t extra_len,
		 const void *trail, size_t trail_len)
{
	unsigned char small[512], *b = small;
	size_t n = sizeof(*h) + extra_len + trail_len;
	int r = 0;

	/* No message's trail is near this: refuse before copying it. */
	if (trail_len > MAX_TRAIL)
		r = -EMSGSIZE;
	else if (n > sizeof(small) && !(b = malloc(n)))
		r = -ENOMEM;
	if (r) {
		cmesh__type_release(cmesh__queue_type(tx->q), msg);
		cmesh_oneshot_sender_free(tx);
		return r;
	}
	memcpy(b, h, sizeof(*h));
	if (extra_len)
		memcpy(b + sizeof(*h), extra, extra_len);
	if (trail_len)
		memcpy(b + sizeof(*h) + extra_len, trail, trail_len);
	r = cmesh_oneshot_send(tx, msg, b, n);
	if (b != small)
		free(b);
	return r;
}

int cmesh_rpc_complete(cmesh_oneshot_sender *tx, const void *resp,
		       const void *trail, size_t trail_len)
{
	struct reply_hdr h = { REPLY_MAGIC, 0, 0, 0 };

	if (!tx || !resp || (trail_len && !trail)) {
		/* A response carrying `tx` itself: releasing it frees tx. */
		bool holds =
			tx && resp &&
			cmesh__type_holds(cmesh__queue_type(tx->q), resp, tx);

		if (tx && resp)
			cmesh__type_release(cmesh__queue_type(tx->q), resp);
		if (!holds)
			cmesh_oneshot_sender_free(tx);
		return -EINVAL;
	}
	/*
	 * A response that carries its own reply port: the send would refuse
	 * it and take nothing. Releasing the response frees the port too.
	 */
	if (cmesh__type_holds(cmesh__queue_type(tx->q), resp, tx)) {
		cmesh__type_release(cmesh__queue_type(tx->q), resp);
		return -EINVAL;
	}
	/* Nothing to say but the response: no header (parse()). */
	if (!trail_len)
		return cmesh_oneshot_send(tx, resp, NULL, 0);
	return reply(tx, resp, &h, NULL, 0, trail, trail_len);
}

int cmesh_rpc_fail(cmesh_oneshot_sender *tx, int code, const char *const *chain,
		   size_t n)
{
	struct reply_hdr h = { REPLY_MAGIC, code, 0, 0 };
	char text[CMESH_RPC_MAX_CHAIN_BYTES];
	const cmesh_type *t;
	void *blank;
	int r;

	if (!tx || code >= 0 || !n || !chain) {
		cmesh_oneshot_sender_free(tx);
		return -EINVAL;
	}
	if (n > CMESH_RPC_MAX_CHAIN)
		n = CMESH_RPC_MAX_CHAIN;
	for (size_t i = 0; i < n; i++) {
		size_t room = sizeof(text) - h.chain_len, len;

		if (!chain[i]) {
			cmesh_oneshot_sender_free(tx);
			return -EINVAL;
		}
		if (room < 1)
			break;
		len = strnlen(chain[i], room - 1);
		memcpy(text + h.chain_len, chain[i], len);
		text[h.chain_len + len] = '\0';
		h.chain_len += (uint32_t)len + 1;
		h.nchain++;
	}
	t = cmesh__queue_type(tx->q);
	blank = malloc(t->size);
	if (!blank) {
		cmesh_oneshot_sender_free(tx);
		return -ENOMEM;
	}
	cmesh__type_blank(t, blank);
	r = reply(tx, blank, &h, text, h.chain_len, NULL, 0);
	free(blank);
	return r;
}
