/* SPDX-License-Identifier: MIT */
/*
 * pipe.c - byte streams with a credit window (include/cmesh/pipe.h), on
 * two channels: data (struct chunk + the bytes as trailing bytes) and
 * credit (struct credit: chunks and bytes given back). A chunk is at most
 * 32 KiB in one process (each costs a heap trail: fewer is faster) and
 * 8 KiB across (a larger one would not fit a record of the 64 KiB ring
 * and would travel in a memfd of its own).
 *
 * Window accounting. The writer holds credit (msgs, bytes), starting at
 * the window, and spends one msg and the chunk's bytes per chunk. The
 * reader counts what it received and has not credited back (`out`), and
 * what it read whole and will credit back (`pend`): credit goes back once
 * `pend` reaches half the window (msgs or bytes), and a chunk that takes
 * `out` past the window is a protocol error.
 *
 * Moving. A writer's port carries its credit in hand; its credit
 * receiver carries what is on the way. A reader's port carries `pend` and
 * `out`; a chunk it had begun is cut: the part read is credited as bytes
 * (no msg), the rest is the one chunk of a new channel, closed, whose
 * receiver goes in the port as `rest` (the data receiver goes as it is:
 * nothing stays behind to feed it). The moved reader reads that chunk
 * first, as a chunk of its own (one msg, the rest's bytes), then frees
 * `rest` and goes on with `data`. While `rest` is there it stands for the
 * reader in a waitset (its own, for the fd, or the caller's): what a read
 * takes next is what makes the reader ready (its chunk may still be on its
 * way while data has more); once read, it hands its place to `data`.
 */
#include <cmesh/pipe.h>

#include "endpoint.h"
#include "env.h"
#include "lane.h"
#include "queue.h"
#include "waitset.h"

#include <cmesh/waitset.h>

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct chunk {
	uint64_t len; /* the trailing bytes' count, checked */
};
CMESH_TYPE_DEFINE_PLAIN(cmesh_pipe_data_type, struct chunk);

struct credit {
	uint64_t msgs;
	uint64_t bytes;
};
CMESH_TYPE_DEFINE_PLAIN(cmesh_pipe_credit_type, struct credit);

/*
 * A chunk while the reader is in another process: CMESH_PIPE_CHUNK, which
 * goes through the data lane's bulk arena when it does not fit a record
 * (lane_bulk.c: one copy each side; bench_pipe 0.79x of the raw ring's
 * bytes/s against 0.40x with one 16 KiB record a chunk). Should the
 * arena not take such a chunk: as large as a record takes, or XCHUNK_OOL
 * where that is less than XCHUNK_MIN (a tiny ring: a memfd a chunk).
 */
#define XCHUNK_MIN 1024u
#define XCHUNK_OOL 8192u
#define HALF_MSGS (CMESH_PIPE_WINDOW_MSGS / 2)
#define HALF_BYTES (CMESH_PIPE_WINDOW_BYTES / 2)

struct cmesh_pipe_writer {
	cmesh_sender *data;
	cmesh_receiver *credit;
	uint64_t msgs, bytes; /* credit in hand */
	int err;	      /* the stream's end, once seen */
	cmesh_waitset *ws;    /* cmesh_pipe_writer_fd() */
};

struct cmesh_pipe_reader {
	cmesh_receiver *data;
	cmesh_sender *credit;
	uint64_t pend_msgs, pend_bytes; /* read whole, to credit back */
	uint64_t out_msgs, out_bytes;	/* received, not credited back */
	unsigned char *buf;		/* the chunk being read */
	uint64_t len, off;
	int err;	      /* 0, or the end: 1 (EOF) or an error */
	cmesh_receiver *rest; /* a cut chunk's unread part, read first */
	bool rest_spent;      /* its chunk read; its waitset place not yet
				 data's (no memory: tried again) */
	cmesh_waitset *ws;    /* cmesh_pipe_reader_fd() */
};

static cmesh_pipe_writer *writer_new(cmesh_sender *data, cmesh_receiver *credit,
				     uint64_t msgs, uint64_t bytes)
{
	cmesh_pipe_writer *w = calloc(1, sizeof(*w));

	if (w) {
		w->data = data;
		w->credit = credit;
		w->msgs = msgs;
		w->bytes = bytes;
	}
	return w;
}

static cmesh_pipe_reader *reader_new(cmesh_receiver *data, cmesh_sender *credit)
{
	cmesh_pipe_reader *r = calloc(1, sizeof(*r));

	if (r) {
		r->buf = malloc(CMESH_PIPE_CHUNK);
		if (!r->buf) {
			free(r);
			return NULL;
		}
		r->data = data;
		r->credit = credit;
	}
	return r;
}

int cmesh_pipe_new(cmesh_pipe_writer **out_w, cmesh_pipe_reader **out_r)
{
	cmesh_sender *dtx, *ctx_;
	cmesh_receiver *drx, *crx;
	cmesh_pipe_writer *w;
	cmesh_pipe_reader *r;
	int e;

	if (!out_w || !out_r)
		return -EINVAL;
	e = cmesh_channel_new(&cmesh_pipe_data_type, NULL, &dtx, &drx);
	if (e)
		return e;
	e = cmesh_channel_new(&cmesh_pipe_credit_type, NULL, &ctx_, &crx);
	if (e) {
		cmesh_sender_free(dtx);
		cmesh_receiver_free(drx);
		return e;
	}
	w = writer_new(dtx, crx, CMESH_PIPE_WINDOW_MSGS,
		       CMESH_PIPE_WINDOW_BYTES);
	r = reader_new(drx, ctx_);
	if (!w || !r) {
		free(w);
		if (r)
			free(r->buf);
		free(r);
		cmesh_sender_free(dtx);
		cmesh_receiver_free(drx);
		cmesh_sender_free(ctx_);
		cmesh_receiver_free(crx);
		return -ENOMEM;
	}
	*out_w = w;
	*out_r = r;
	return 0;
}

/* ---- writer -------------------------------------------------------------- */

/* Takes credit that came; waits for some (deadline) when there is none. */
static size_t min_size(uint64_t a, uint64_t b)
{
	return (size_t)(a < b ? a : b);
}

/*
 * Big chunks in one process (fewer messages), ring-sized across; never
 * more trailing bytes than the channel carries (CMESH_MAX_MESSAGE here,
 * the smaller of both sides' across).
 */
static size_t chunk_max(const cmesh_pipe_writer *w)
{
	struct cmesh__queue *q =
		cmesh__endpoint_queue(CMESH_FIELD_KIND_SENDER, w->data);
	bool in;
	struct cmesh__lane *ln = cmesh__queue_tx_enter(q, &in);
	const cmesh_env *env;
	uint32_t fit;
	size_t max;

	if (!ln) {
		cmesh__queue_tx_leave_quiet(q, in);
		if (cmesh__env_get(&env))
			return XCHUNK_MIN;
		return min_size(CMESH_PIPE_CHUNK, env->max_message);
	}
	/* Past a record, a chunk goes through the lane's bulk arena: one
	 * copy each side, as in a record (lane_bulk.c). */
	fit = cmesh__lane_bulk_fits(CMESH_PIPE_CHUNK) ?
		      CMESH_PIPE_CHUNK :
		      cmesh__lane_trail_inline_max(ln);
	if (fit < XCHUNK_MIN)
		fit = XCHUNK_OOL;
	max = min_size(min_size(fit, CMESH_PIPE_CHUNK), ln->max_trail);
	cmesh__queue_tx_leave_quiet(q, in);
	return max;
}

/*
 * An honest reader's credit holds at least a chunk and a byte (take_credit()
 * refuses one without): it goes once half a window is read, and a reader
 * cut mid-chunk credits what it read of that chunk as bytes only, which is
 * less than a chunk, so under half the byte window only while a chunk is
 * at most that.
 */
static_assert(CMESH_PIPE_CHUNK <= CMESH_PIPE_WINDOW_BYTES / 2,
	      "a cut chunk's bytes alone never make a credit go");

static int take_credit(cmesh_pipe_writer *w, bool wait, const cmesh_ctx *ctx)
{
	struct credit c;
	int e;

	for (;;) {
		e = cmesh_receiver_try_recv(w->credit, &c, NULL, 0);
		if (e == -EAGAIN && wait && !(w->msgs && w->bytes))
			e = cmesh_receiver_recv_ctx(w->credit, ctx, &c, NULL,
						    0);
		if (e == -EAGAIN)
			return 0;
		if (e == -EPIPE || e == -ECONNRESET || e == -EPROTO) {
			w->err = e; /* the reader is gone (or failed) */
			return e;
		}
		if (e == -EMSGSIZE || e > 0) {
			w->err = -EPROTO; /* a credit carries no bytes */
			return -EPROTO;
		}
		if (e)
			return e; /* -ETIMEDOUT, -ECANCELED, -ENOMEM */
		/* A reader gives back at least a chunk and a byte at once. */
		if (!c.msgs || !c.bytes || c.msgs > CMESH_PIPE_WINDOW_MSGS ||
		    c.bytes > CMESH_PIPE_WINDOW_BYTES ||
		    w->msgs + c.msgs > CMESH_PIPE_WINDOW_MSGS ||
		    w->bytes + c.bytes > CMESH_PIPE_WINDOW_BYTES) {
			w->err = -EPROTO; /* more than it was given */
			return -EPROTO;
		}
		w->msgs += c.msgs;
		w->bytes += c.bytes;
	}
}

static int64_t write_some(cmesh_pipe_writer *w, const void *buf, size_t len,
			  bool wait, const cmesh_ctx *ctx)
{
	size_t done = 0, max;
	int e;

	if (!w || (len && !buf))
		return -EINVAL;
	if (w->err)
		return w->err;
	max = chunk_max(w);
	while (done < len) {
		struct chunk c;

		e = take_credit(w, wait, ctx);
		if (!e && !(w->msgs && w->bytes))
			e = -EAGAIN;
		if (e)
			return done ? (int64_t)done : e;
		c.len = len - done;
		if (c.len > max)
			c.len = max;
		if (c.len > w->bytes)
			c.len = w->bytes;
		e = cmesh_sender_send(w->data, &c, (const char *)buf + done,
				      c.len);
		if (e) {
			/* The reader's end is final; no memory is this call's. */
			if (e == -EPIPE || e == -ECONNRESET || e == -EPROTO)
				w->err = e;
			return done ? (int64_t)done : e;
		}
		w->msgs--;
		w->bytes -= c.len;
		done += c.len;
	}
	return (int64_t)done;
}

int64_t cmesh_pipe_write(cmesh_pipe_writer *w, const void *buf, size_t len,
			 const cmesh_ctx *ctx)
{
	return write_some(w, buf, len, true, ctx);
}

int64_t cmesh_pipe_try_write(cmesh_pipe_writer *w, const void *buf, size_t len)
{
	int64_t n = write_some(w, buf, len, false, NULL);
	uint64_t key;

	/*
	 * Arm the fd: it polls readable when credit may have come. A look
	 * that found something drains and disarms: until one finds nothing
	 * (waitset.h), each time taking what was there.
	 */
	while (n == -EAGAIN && w->ws &&
	       cmesh_waitset_try_wait(w->ws, &key) == 0)
		n = write_some(w, buf, len, false, NULL);
	return n;
}

/* An end's own waitset over rx, made once: its fd. */
static int end_fd(cmesh_waitset **ws, cmesh_receiver *rx)
{
	int e;

	if (!*ws) {
		e = cmesh_waitset_new(ws);
		if (e)
			return e;
		e = cmesh_waitset_add_receiver(*ws, rx, 0);
		if (e) {
			cmesh_waitset_free(*ws);
			*ws = NULL;
			return e;
		}
	}
	return cmesh_waitset_fd(*ws);
}

int cmesh_pipe_writer_fd(cmesh_pipe_writer *w)
{
	return w ? end_fd(&w->ws, w->credit) : -EINVAL;
}

/* An end's waitset goes first: its receiver leaves it, still alive. */
static void ws_drop(cmesh_waitset **ws, cmesh_receiver *rx)
{
	if (!*ws)
		return;
	if (rx)
		cmesh_waitset_remove_receiver(*ws, rx);
	cmesh_waitset_free(*ws);
	*ws = NULL;
}

void cmesh_pipe_writer_free(cmesh_pipe_writer *w)
{
	if (!w)
		return;
	ws_drop(&w->ws, w->credit);
	cmesh_sender_free(w->data);
	cmesh_receiver_free(w->credit);
	free(w);
}

int cmesh_pipe_writer_to_port(cmesh_pipe_writer *w,
			      cmesh_pipe_writer_port *port)
{
	if (!w || !port)
		return -EINVAL;
	if (w->err == -EPROTO)
		return -EPROTO; /* its reader gave garbage: kept, failed */
	memset(port, 0, sizeof(*port));
	port->data = w->data;
	port->credit = w->credit;
	port->msgs = (uint32_t)w->msgs;
	port->bytes = w->bytes;
	ws_drop(&w->ws, w->credit);
	free(w);
	return 0;
}

int cmesh_pipe_writer_from_port(cmesh_pipe_writer_port *port,
				cmesh_pipe_writer **out)
{
	cmesh_pipe_writer *w;

	if (!port || !out)
		return -EINVAL;
	if (!port->data || !port->credit ||
	    port->msgs > CMESH_PIPE_WINDOW_MSGS ||
	    port->bytes > CMESH_PIPE_WINDOW_BYTES) {
		cmesh_sender_free(port->data);
		cmesh_receiver_free(port->credit);
		port->data = NULL;
		port->credit = NULL;
		return -EINVAL;
	}
	w = writer_new(port->data, port->credit, port->msgs, port->bytes);
	if (!w) {
		cmesh_sender_free(port->data);
		cmesh_receiver_free(port->credit);
		port->data = NULL;
		port->credit = NULL;
		return -ENOMEM;
	}
	port->data = NULL;
	port->credit = NULL;
	*out = w;
	return 0;
}

/* ---- reader -------------------------------------------------------------- */

/*
 * Gives credit back once half a window's worth was read. Not sent for
 * want of memory: kept, and tried again by the next read (read_some()).
 */
static void give_credit(cmesh_pipe_reader *r)
{
	struct credit c = { r->pend_msgs, r->pend_bytes };
	int e;

	if (c.msgs < HALF_MSGS && c.bytes < HALF_BYTES)
		return;
	/* -EPIPE, -ECONNRESET: the writer is gone; nobody needs credit. */
	e = cmesh_sender_send(r->credit, &c, NULL, 0);
	if (e && e != -EPIPE && e != -ECONNRESET)
		return;
	r->out_msgs -= c.msgs;
	r->out_bytes -= c.bytes;
	r->pend_msgs = r->pend_bytes = 0;
}

/*
 * What stands for the reader in a waitset (its own or the caller's): what
 * a read takes next, a cut chunk's rest while it has one, else data.
 */
static cmesh_receiver *member(const cmesh_pipe_reader *r)
{
	return r->rest ? r->rest : r->data;
}

/*
 * A spent rest (its chunk read) hands its place in a waitset, if it has
 * one, to data, and goes. Without memory for that it stays, spent (a closed
 * member: the waitset keeps saying ready), and the next read tries again.
 */
static void rest_done(cmesh_pipe_reader *r)
{
	if (cmesh__waitset_hand_over(r->rest->q, r->data))
		return;
	cmesh_receiver_free(r->rest);
	r->rest = NULL;
	r->rest_spent = false;
}

/*
 * The next chunk into `dst` (r->buf, or the caller's buffer when it has
 * room for a whole chunk: then the bytes are copied once), its length in
 * r->len: 1, or 0 (none now, or the end: r->err set), or an error (also
 * kept in r->err unless it is a context's).
 */
static int next_chunk(cmesh_pipe_reader *r, void *dst, bool wait,
		      const cmesh_ctx *ctx)
{
	cmesh_receiver *src;
	struct chunk c;
	int e;

	if (r->rest_spent)
		rest_done(r); /* its place in a waitset: data's, now? */
	src = r->rest && !r->rest_spent ? r->rest : r->data;

	e = wait ? cmesh_receiver_recv_ctx(src, ctx, &c, dst,
					   CMESH_PIPE_CHUNK) :
		   cmesh_receiver_try_recv(src, &c, dst, CMESH_PIPE_CHUNK);
	if (src == r->rest && (e >= 0 || e == -EPIPE)) {
		/*
		 * Its one chunk came: it goes, its place in a waitset to data
		 * (a peer's second chunk there is never read). Closed without
		 * one: that part of the stream is missing.
		 */
		r->rest_spent = true;
		rest_done(r);
		if (e == -EPIPE)
			e = -EPROTO;
	}
	if (e == -EAGAIN)
		return 0;
	if (e == -EPIPE) {
		r->err = 1; /* every byte read: the end of the stream */
		return 0;
	}
	if (e == -EMSGSIZE || e == 0 || (e > 0 && (uint64_t)e != c.len))
		e = -EPROTO; /* larger than a chunk, empty, or lying */
	if (e < 0) {
		if (e != -ETIMEDOUT && e != -ECANCELED)
			r->err = e;
		return e;
	}
	r->out_msgs++;
	r->out_bytes += (uint64_t)e;
	if (r->out_msgs > CMESH_PIPE_WINDOW_MSGS ||
	    r->out_bytes > CMESH_PIPE_WINDOW_BYTES) {
		r->err = -EPROTO; /* past the window it was given */
		return r->err;
	}
	r->len = (uint64_t)e;
	r->off = 0;
	return 1;
}

static int64_t read_some(cmesh_pipe_reader *r, void *buf, size_t cap, bool wait,
			 const cmesh_ctx *ctx)
{
	size_t done = 0;

	if (!r || (cap && !buf))
		return -EINVAL;
	give_credit(r); /* one that could not go before */
	while (done < cap) {
		uint64_t n;

		if (r->off == r->len) {
			bool direct = cap - done >= CMESH_PIPE_CHUNK;
			int e;

			if (r->err)
				break;
			/* Wait only for the first bytes. */
			e = next_chunk(r,
				       direct ? (void *)((char *)buf + done) :
						r->buf,
				       wait && !done, ctx);
			if (e < 0 && !done)
				return e;
			if (e != 1)
				break;
			if (direct) { /* already the caller's: taken whole */
				done += r->len;
				r->pend_msgs++;
				r->pend_bytes += r->len;
				r->off = r->len = 0;
				give_credit(r);
				continue;
			}
		}
		n = r->len - r->off;
		if (n > cap - done)
			n = cap - done;
		memcpy((char *)buf + done, r->buf + r->off, n);
		r->off += n;
		done += n;
		if (r->off == r->len) {
			r->pend_msgs++;
			r->pend_bytes += r->len;
			give_credit(r);
		}
	}
	if (done)
		return (int64_t)done;
	if (r->err)
		return r->err == 1 ? 0 : r->err;
	return cap ? -EAGAIN : 0;
}

int64_t cmesh_pipe_read(cmesh_pipe_reader *r, void *buf, size_t cap,
			const cmesh_ctx *ctx)
{
	return read_some(r, buf, cap, true, ctx);
}

int64_t cmesh_pipe_try_read(cmesh_pipe_reader *r, void *buf, size_t cap)
{
	int64_t n = read_some(r, buf, cap, false, NULL);
	uint64_t key;

	/* Armed once a look finds nothing (as cmesh_pipe_try_write()). */
	while (n == -EAGAIN && r->ws &&
	       cmesh_waitset_try_wait(r->ws, &key) == 0)
		n = read_some(r, buf, cap, false, NULL);
	return n;
}

int cmesh_pipe_reader_fd(cmesh_pipe_reader *r)
{
	return r ? end_fd(&r->ws, member(r)) : -EINVAL;
}

void cmesh_pipe_reader_free(cmesh_pipe_reader *r)
{
	if (!r)
		return;
	ws_drop(&r->ws, member(r));
	cmesh_receiver_free(r->rest);
	cmesh_receiver_free(r->data);
	cmesh_sender_free(r->credit);
	free(r->buf);
	free(r);
}

int cmesh_pipe_reader_to_port(cmesh_pipe_reader *r,
			      cmesh_pipe_reader_port *port)
{
	cmesh_receiver *rest = NULL;

	if (!r || !port)
		return -EINVAL;
	/*
	 * A bad chunk was taken: sent on, the reader would go on after it
	 * as if nothing were missing. It stays here, failed.
	 */
	if (r->err == -EPROTO)
		return -EPROTO;
	/* Its chunk read: nothing of it goes (freed, it leaves a waitset). */
	if (r->rest_spent) {
		cmesh_receiver_free(r->rest);
		r->rest = NULL;
		r->rest_spent = false;
	}
	if (r->off < r->len) {
		/*
		 * A chunk begun: its unread part is the one chunk of a new
		 * channel, closed (a chunk is taken from `rest` only once
		 * `rest` is spent: none is pending then).
		 */
		struct chunk c = { r->len - r->off };
		cmesh_sender *tx;
		int e;

		assert(!r->rest);
		e = cmesh_channel_new(&cmesh_pipe_data_type, NULL, &tx, &rest);
		if (e)
			return e;
		e = cmesh_sender_send(tx, &c, r->buf + r->off, c.len);
		cmesh_sender_free(tx);
		if (e) {
			cmesh_receiver_free(rest);
			return e;
		}
		/* The part read is credited as bytes; the rest is a chunk. */
		r->out_msgs--;
		r->out_bytes -= r->len;
		r->pend_bytes += r->off;
		r->out_bytes += r->off;
		r->rest = rest;
		r->off = r->len = 0;
	}
	memset(port, 0, sizeof(*port));
	port->data = r->data;
	port->credit = r->credit;
	port->rest = r->rest;
	port->msgs = (uint32_t)r->pend_msgs;
	port->bytes = r->pend_bytes;
	port->out_msgs = r->out_msgs;
	port->out_bytes = r->out_bytes;
	ws_drop(&r->ws, member(r));
	free(r->buf);
	free(r);
	return 0;
}

int cmesh_pipe_reader_from_port(cmesh_pipe_reader_port *port,
				cmesh_pipe_reader **out)
{
	cmesh_pipe_reader *r;
	int e = -EINVAL;

	if (!port || !out)
		return -EINVAL;
	if (port->data && port->credit &&
	    port->out_msgs <= CMESH_PIPE_WINDOW_MSGS &&
	    port->out_bytes <= CMESH_PIPE_WINDOW_BYTES &&
	    port->msgs <= port->out_msgs && port->bytes <= port->out_bytes) {
		r = reader_new(port->data, port->credit);
		e = r ? 0 : -ENOMEM;
	}
	if (e) {
		cmesh_receiver_free(port->data);
		cmesh_sender_free(port->credit);
		cmesh_receiver_free(port->rest);
		port->data = NULL;
		port->credit = NULL;
		port->rest = NULL;
		return e;
	}
	r->pend_msgs = port->msgs;
	r->pend_bytes = port->bytes;
	r->out_msgs = port->out_msgs;
	r->out_bytes = port->out_bytes;
	r->rest = port->rest;
	port->data = NULL;
	port->credit = NULL;
	port->rest = NULL;
	*out = r;
	return 0;
}

int cmesh_pipe_reader_waitset_add(cmesh_pipe_reader *r, cmesh_waitset *ws,
				  uint64_t key)
{
	return r ? cmesh_waitset_add_receiver(ws, member(r), key) : -EINVAL;
}

int cmesh_pipe_reader_waitset_remove(cmesh_pipe_reader *r, cmesh_waitset *ws)
{
	if (!r)
		return -EINVAL;
	return cmesh_waitset_remove_receiver(ws, member(r));
}

int cmesh_pipe_writer_waitset_add(cmesh_pipe_writer *w, cmesh_waitset *ws,
				  uint64_t key)
{
	return w ? cmesh_waitset_add_receiver(ws, w->credit, key) : -EINVAL;
}

int cmesh_pipe_writer_waitset_remove(cmesh_pipe_writer *w, cmesh_waitset *ws)
{
	return w ? cmesh_waitset_remove_receiver(ws, w->credit) : -EINVAL;
}
