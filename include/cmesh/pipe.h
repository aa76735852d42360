/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/pipe.h - a byte stream with backpressure (mesh's pipe): a writer
 * and a reader, in one process or two, and either end may move to another
 * process mid-stream with its buffered bytes and credit.
 *
 * Built on two channels: data (writer -> reader, chunks of at most
 * CMESH_PIPE_CHUNK bytes as trailing bytes, across processes through the
 * data lane's bulk arena) and credit (reader -> writer). A read with room
 * for a whole chunk takes it straight into the caller's buffer.
 * The writer may have at most CMESH_PIPE_WINDOW_MSGS chunks and
 * CMESH_PIPE_WINDOW_BYTES bytes unread; the reader returns credit in half-
 * window steps as it reads. A malformed chunk fails the pipe (-EPROTO); a
 * writer that ignores the window (not this library's) only fills the data
 * channel up to its backlog bound (CMESH_MAX_BACKLOG), then its sends
 * fail: the reader's memory stays bounded.
 *
 *   cmesh_pipe_new(&w, &r);
 *   cmesh_pipe_write(w, buf, len, ctx);     // blocks while the window is full
 *   n = cmesh_pipe_read(r, buf, cap, ctx);  // 0: end of stream
 *   cmesh_pipe_writer_free(w);              // the reader sees EOF after all
 *
 * Errors: -EPIPE (write: the reader is gone), -ECONNRESET (the other end's
 * process died), -EAGAIN (try forms), -ETIMEDOUT, -ECANCELED (contexts),
 * -EPROTO (a peer broke the window or sent garbage), -EINVAL, -ENOMEM.
 *
 * Threads: each end is used by one thread at a time. Blocking: only
 * write and read wait (for credit, for bytes) as long as their context
 * lasts; every other function returns at once. Ownership: each end is
 * owned by the caller and freed with its _free function or taken by its
 * _to_port; buffers and contexts are borrowed for the call.
 */
#ifndef CMESH_PIPE_H
#define CMESH_PIPE_H

#include <cmesh/cancel.h>
#include <cmesh/channel.h>
#include <cmesh/common.h>
#include <cmesh/type.h>
#include <cmesh/waitset.h>

CMESH_BEGIN_DECLS

#define CMESH_PIPE_WINDOW_MSGS 64u
#define CMESH_PIPE_WINDOW_BYTES 65536u
#define CMESH_PIPE_CHUNK 32768u

typedef struct cmesh_pipe_writer cmesh_pipe_writer;
typedef struct cmesh_pipe_reader cmesh_pipe_reader;

/* The two channel types a pipe is made of. */
CMESH_API extern const cmesh_type cmesh_pipe_data_type;
CMESH_API extern const cmesh_type cmesh_pipe_credit_type;

/* A writer in a message: its endpoints and the credit it holds. */
typedef struct cmesh_pipe_writer_port {
	cmesh_sender *data;
	cmesh_receiver *credit;
	uint32_t msgs; /* credit in hand: chunks */
	uint32_t pad;
	uint64_t bytes; /* credit in hand: bytes */
} cmesh_pipe_writer_port;

/*
 * A reader in a message: its endpoints and its window accounting. `rest`,
 * when not NULL, is a closed channel of one chunk, read before `data`:
 * the unread part of a chunk the reader had begun when it was sent.
 */
typedef struct cmesh_pipe_reader_port {
	cmesh_receiver *data;
	cmesh_sender *credit;
	uint32_t msgs; /* chunks read, credit not yet returned */
	uint32_t pad;
	uint64_t bytes;		      /* bytes read, credit not yet returned */
	uint64_t out_msgs, out_bytes; /* the writer's outstanding window */
	cmesh_receiver *rest;	      /* NULL, or a cut chunk's unread part */
} cmesh_pipe_reader_port;

#define CMESH_FIELD_PIPE_WRITER(st, member)                                    \
	CMESH_FIELD_SENDER(st, member.data, cmesh_pipe_data_type),             \
		CMESH_FIELD_RECEIVER(st, member.credit,                        \
				     cmesh_pipe_credit_type)
#define CMESH_FIELD_PIPE_READER(st, member)                                    \
	CMESH_FIELD_RECEIVER(st, member.data, cmesh_pipe_data_type),           \
		CMESH_FIELD_SENDER(st, member.credit, cmesh_pipe_credit_type), \
		CMESH_FIELD_RECEIVER(st, member.rest, cmesh_pipe_data_type)

/**
 * A new pipe: both ends returned owned. Any thread; never blocks. 0,
 * -EINVAL (NULL outputs, a bad environment), -ENOMEM.
 */
CMESH_API int cmesh_pipe_new(cmesh_pipe_writer **out_w,
			     cmesh_pipe_reader **out_r);

/**
 * Writes all `len` bytes (`buf` and `ctx` borrowed for the call), waiting
 * for credit for as long as `ctx` lasts (NULL: no limit). The writer's
 * thread (one at a time). Returns the bytes written: `len`, or fewer when
 * the wait ended (then the error comes from the next call), or an error
 * when nothing was written (-EPIPE, -ECONNRESET, -EPROTO, -ETIMEDOUT,
 * -ECANCELED, -EINVAL: NULL w, or a NULL buf with len; a send's error).
 */
CMESH_API int64_t cmesh_pipe_write(cmesh_pipe_writer *w, const void *buf,
				   size_t len, const cmesh_ctx *ctx);

/**
 * As write, but never waits: what the window takes now, or -EAGAIN (and
 * write's other errors but the context's). The writer's thread (one at a
 * time).
 */
CMESH_API int64_t cmesh_pipe_try_write(cmesh_pipe_writer *w, const void *buf,
				       size_t len);

/**
 * An fd that polls readable when credit may have come (after try_write
 * said -EAGAIN): for the caller's own poll loop. Borrowed: valid until the
 * end is freed or sent. The writer's thread (one at a time); never blocks
 * (the first call makes the fd). Errors: -EINVAL (NULL), -EBUSY (the end
 * is in a waitset), -ENOMEM, -EMFILE, -ENFILE.
 */
CMESH_API int cmesh_pipe_writer_fd(cmesh_pipe_writer *w);

/**
 * Frees the writer (taken) and ends the stream (the reader sees EOF after
 * every byte). NULL: no-op. The writer's thread (no other call may use it
 * meanwhile). Never fails, never waits.
 */
CMESH_API void cmesh_pipe_writer_free(cmesh_pipe_writer *w);

/**
 * Reads up to `cap` bytes into `buf` (borrowed for the call, as `ctx` is),
 * waiting for the first bytes for as long as `ctx` lasts (NULL: no
 * limit). The reader's thread (one at a time). Returns the count (> 0), 0
 * at the end of the stream (or for cap 0), or an error when nothing was
 * read: -ECONNRESET, -EPROTO, -ETIMEDOUT, -ECANCELED, -EINVAL (NULL r, or
 * a NULL buf with cap), -ENOMEM.
 */
CMESH_API int64_t cmesh_pipe_read(cmesh_pipe_reader *r, void *buf, size_t cap,
				  const cmesh_ctx *ctx);

/**
 * As read, but never waits: -EAGAIN when nothing is there (and read's
 * other errors but the context's). The reader's thread (one at a time).
 */
CMESH_API int64_t cmesh_pipe_try_read(cmesh_pipe_reader *r, void *buf,
				      size_t cap);

/**
 * An fd that polls readable when bytes or the end may be there (after
 * try_read said -EAGAIN). Borrowed; threads, blocking and errors as
 * cmesh_pipe_writer_fd() (the reader's thread).
 */
CMESH_API int cmesh_pipe_reader_fd(cmesh_pipe_reader *r);

/**
 * An end as a waitset member (cmesh/waitset.h), instead of its own fd: a
 * reader is ready once a chunk or the end came, a writer once credit came
 * or its reader is gone. Ready means "try again": call the try form until
 * it says -EAGAIN before waiting (a reader may still hold bytes of a
 * chunk it began). Freeing or sending the end removes it. The waitset is
 * borrowed. The end's thread (one at a time); never block. Errors as
 * cmesh_waitset_add_receiver() and cmesh_waitset_remove_receiver(): 0,
 * -EBUSY (in a waitset already, or its fd was asked for), -EINVAL,
 * -ENOMEM; remove: -ENOENT.
 */
CMESH_API int cmesh_pipe_reader_waitset_add(cmesh_pipe_reader *r,
					    cmesh_waitset *ws, uint64_t key);
CMESH_API int cmesh_pipe_reader_waitset_remove(cmesh_pipe_reader *r,
					       cmesh_waitset *ws);
CMESH_API int cmesh_pipe_writer_waitset_add(cmesh_pipe_writer *w,
					    cmesh_waitset *ws, uint64_t key);
CMESH_API int cmesh_pipe_writer_waitset_remove(cmesh_pipe_writer *w,
					       cmesh_waitset *ws);

/**
 * Frees the reader (taken): the writer's next write fails with -EPIPE.
 * NULL is a no-op. The reader's thread (no other call may use it
 * meanwhile). Never fails, never waits.
 */
CMESH_API void cmesh_pipe_reader_free(cmesh_pipe_reader *r);

/**
 * An end into a port to send in a message (the end is taken), and a port
 * received back into an end (its endpoints taken, the fields NULLed).
 * Credit in hand and bytes buffered but unread travel with it. The port's
 * endpoints are the caller's until sent. Never wait. to_port: the end's
 * thread (one at a time); from_port: any thread. 0, -EINVAL (NULL:
 * nothing taken; from_port: an empty port or one claiming more than the
 * window, its endpoints freed), -ENOMEM (the end is then kept / the
 * port's endpoints freed); reader_to_port, for a chunk begun, also
 * cmesh_channel_new()'s or a send's errors, the end kept (the chunk's
 * unread part goes in the port's `rest`: no forwarder stays behind; until
 * it is read, it alone makes the reader ready in a waitset or its fd);
 * to_port of an end that failed with -EPROTO (a malformed chunk or credit
 * from the other end): -EPROTO, the end kept (a reader would go on past
 * what is missing).
 */
CMESH_API int cmesh_pipe_writer_to_port(cmesh_pipe_writer *w,
					cmesh_pipe_writer_port *port);
CMESH_API int cmesh_pipe_writer_from_port(cmesh_pipe_writer_port *port,
					  cmesh_pipe_writer **out);
CMESH_API int cmesh_pipe_reader_to_port(cmesh_pipe_reader *r,
					cmesh_pipe_reader_port *port);
CMESH_API int cmesh_pipe_reader_from_port(cmesh_pipe_reader_port *port,
					  cmesh_pipe_reader **out);

CMESH_END_DECLS

#endif
