/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/channel.h - multi-producer channels.
 *
 * A channel has any number of senders (cmesh_sender_clone) and one
 * receiver. Messages from one sender arrive in the order it sent them.
 * send never blocks: when the channel's ring is full the message goes to
 * an ordered overflow list that the receiver drains after the ring (the
 * only allocation a send can make). The list holds at most max_backlog
 * bytes (CMESH_MAX_BACKLOG, 64 MiB by default; across processes the same
 * bound holds for the sending side's spill backlog): past it a send fails
 * with -ENOBUFS, so a receiver that stops reading cannot make its senders'
 * process grow without limit.
 *
 * Ownership of a message's resources (fd and endpoint fields, see
 * cmesh/type.h): cmesh_sender_send() takes them whatever it returns, once
 * `tx` and `msg` are non-NULL. On success the receiver gets them; on any
 * error they are released (fds closed, endpoints freed so their peers see
 * "closed"). A message still queued when the receiver is freed has its
 * resources released the same way.
 *
 * Threads: a sender handle may be used by many threads at once. The
 * receiver is used by one thread at a time (and not while a wait on its
 * waitset runs in another thread). The queries (the _type functions,
 * cmesh_sender_is_closed(), cmesh_receiver_stats_get()) may be called from
 * any thread. No handle may be freed while another call uses it.
 *
 * Blocking: only the receives that wait (recv, recv_deadline, recv_ctx)
 * and the flushes block, each as it says. Every other function here
 * returns without waiting: it may take a short internal lock and make a
 * syscall (a wake of the receiver, a mapping), never a sleep.
 *
 * Across processes (cmesh/node.h) a send, receive, peek or flush may also
 * return -ECONNRESET (the other side's process died or its link failed)
 * or -EPROTO (it broke the protocol), a receive -ENOMEM, and a send what
 * the kernel says of a large message's memfd (-EMFILE etc.).
 */
#ifndef CMESH_CHANNEL_H
#define CMESH_CHANNEL_H

#include <cmesh/cancel.h>
#include <cmesh/common.h>
#include <cmesh/type.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_sender cmesh_sender;
typedef struct cmesh_receiver cmesh_receiver;

/* spin_ns value: never spin, sleep as soon as nothing is ready. */
#define CMESH_SPIN_NONE (-1)

/*
 * spin_ns value: spin only while spinning catches messages (the default
 * unless CMESH_SPIN_NS fixes one). Each receiver learns from its waits:
 * one that slept for a message that came within its maximum (a spin
 * would have caught it: counted until its sender woke the receiver, not
 * until the receiver ran again) widens its spin to a little more than
 * that wait, up to the maximum; one whose message came later halves it,
 * down to none. A wait the spin caught keeps it. The maximum is 50 us, or
 * what two of the receiver's wakeups cost where that is longer (learnt
 * from its sleeps: from its sender's wake to the message in hand), at
 * most CMESH_SPIN_ADAPTIVE_MAX_NS and a quarter of the time between the
 * starts of its waits: where wakeups are slow, a receiver that waits
 * seldom (a client for its reply) spins long enough to catch a peer woken
 * as slowly, at a quarter of a core at most. cmesh_receiver_stats_get()
 * shows the spin a receiver has learnt and its wakeup cost.
 */
#define CMESH_SPIN_ADAPTIVE (-2)
#define CMESH_SPIN_ADAPTIVE_MAX_NS 100000

typedef struct cmesh_channel_opts {
	uint32_t size;	/* sizeof(cmesh_channel_opts) */
	uint32_t flags; /* none defined yet: must be 0 */
	/*
	 * Bytes of ring, power of two; 0: CMESH_RING_SIZE. Each slot line is
	 * stored alone in 128 bytes, so a ring holds ring_size / (2 * slot)
	 * messages (64 KiB: 256 messages of up to 96 bytes); more
	 * wait in an ordered overflow list (send never blocks).
	 */
	uint32_t ring_size;
	uint32_t reserved; /* must be 0 */
	int64_t spin_ns;   /* receiver spin before sleeping, ns; 0:
			       CMESH_SPIN_NS, CMESH_SPIN_NONE: no spin,
			       CMESH_SPIN_ADAPTIVE: learnt */
	/*
	 * Bytes the channel may hold beyond its ring (the overflow list)
	 * before a send fails with -ENOBUFS; 0: CMESH_MAX_BACKLOG, else
	 * 4K..1T. A message larger than this (trailing bytes included) is
	 * sent only while the ring has room for it.
	 */
	uint64_t max_backlog;
} cmesh_channel_opts;

#define CMESH_CHANNEL_OPTS_INIT                                                \
	{                                                                      \
		sizeof(cmesh_channel_opts), 0, 0, 0, 0, 0                      \
	}

/**
 * Creates a channel of messages described by `type` (borrowed: it must
 * outlive the channel, normally it is static). `opts` may be NULL
 * (borrowed for the call). Returns owned handles in *out_tx and *out_rx
 * (free with cmesh_sender_free() and cmesh_receiver_free()). Any thread;
 * never blocks. Errors: -EINVAL (bad type, NULL outputs, bad options or
 * environment), -ENOMEM; then nothing is made.
 */
CMESH_API int cmesh_channel_new(const cmesh_type *type,
				const cmesh_channel_opts *opts,
				cmesh_sender **out_tx, cmesh_receiver **out_rx);

/**
 * Another sender for the same channel, returned owned in *out_tx (free
 * with cmesh_sender_free()); borrows `tx`. Any thread; never blocks.
 * Errors: -EINVAL (NULL tx or out_tx), -ENOMEM.
 */
CMESH_API int cmesh_sender_clone(cmesh_sender *tx, cmesh_sender **out_tx);

/**
 * Frees a sender (taken). When the last sender of a channel is freed the
 * receiver drains what was sent, then gets -EPIPE. NULL is a no-op. Any
 * thread, but no other call may use `tx` meanwhile; never fails, never
 * waits (across processes the close is queued behind what was sent: see
 * cmesh_node_flush()).
 */
CMESH_API void cmesh_sender_free(cmesh_sender *tx);

/**
 * The channel's message type (borrowed, as given to the channel's
 * creator); NULL for a NULL sender. Any thread; never fails, never blocks.
 */
CMESH_API const cmesh_type *cmesh_sender_type(const cmesh_sender *tx);

/**
 * Sends one message: `msg` points to a struct of the channel's type,
 * `trail` to `trail_len` trailing bytes (NULL if 0); both are copied, and
 * borrowed for the call only. Never blocks. Takes the message's resources
 * (see above). Any thread, concurrently with other sends on `tx`. Returns
 * 0, or -EPIPE (receiver gone), -ECONNRESET (the receiver failed),
 * -EBADMSG (an endpoint field of the wrong type), -EMSGSIZE (trail_len
 * over CMESH_MAX_MESSAGE), -ENOBUFS (the backlog is at max_backlog),
 * -EINVAL (NULL tx or msg: nothing taken; trail_len without trail, one fd
 * or endpoint twice, across processes a closed fd), -ENOMEM, and the
 * cross-process codes above. A message may not carry `tx` itself: that is
 * -EINVAL and nothing is taken.
 */
CMESH_API int cmesh_sender_send(cmesh_sender *tx, const void *msg,
				const void *trail, size_t trail_len);

/**
 * Waits until every message this channel's senders sent has left this
 * process's hands: in one process at once; across processes once the
 * backlog queued behind a full ring is in the ring, where the peer reads
 * it even after this process exits (it polls every 100 us meanwhile).
 * Returns 0, -ETIMEDOUT at `deadline` (CLOCK_MONOTONIC ns, see
 * cmesh_deadline_after()), -EPIPE (the receiver is gone: nothing more
 * will be read), -ECONNRESET or -EPROTO (the link failed), -EINVAL (NULL).
 * Borrows `tx`; may be called from any thread.
 *
 * The exit pattern of a process that sends across: free its senders (the
 * receiver then sees "closed" after the last message), call
 * cmesh_node_flush() with a deadline, then exit. Without it, messages
 * still in the backlog at exit are lost and the peer sees -ECONNRESET.
 */
CMESH_API int cmesh_sender_flush(cmesh_sender *tx, int64_t deadline);

/**
 * As cmesh_sender_flush(), for as long as `ctx` lasts (NULL: no limit;
 * borrowed for the call): -ETIMEDOUT at its deadline, -ECANCELED once it
 * is cancelled; its other results, blocking and threads are the flush's
 * (-EINVAL for a NULL tx; borrows `tx`; any thread).
 */
CMESH_API int cmesh_sender_flush_ctx(cmesh_sender *tx, const cmesh_ctx *ctx);

/**
 * As cmesh_sender_send(), but never queues beyond the receiver's ring:
 * when the message does not go into it at once (the ring is full, or
 * earlier messages of this process still wait behind it, or the channel
 * is being set up across processes), returns -EAGAIN and takes nothing:
 * the message and its fds stay the caller's, to send again later. Every
 * other result takes them as cmesh_sender_send() does, with its errors. A
 * message holding an endpoint is -EOPNOTSUPP (released). Never blocks;
 * makes a syscall only where a send would (a wake, an ATTACH for fds).
 * Any thread, as cmesh_sender_send().
 */
CMESH_API int cmesh_sender_try_send(cmesh_sender *tx, const void *msg,
				    const void *trail, size_t trail_len);

/**
 * Whether the receiver is gone, without sending: 1 (freed, or dropped
 * unread in another process: every send now fails with -EPIPE), 0 (there,
 * as far as this process knows: a receiver freed in another process is
 * seen once its side says so; behind a forwarder, a bridge's included,
 * within about 50 ms with no message sent), -ECONNRESET or -EPROTO (the link to the
 * receiver's process failed), -EINVAL (NULL). Never blocks, makes no
 * syscall. Borrows `tx`; may be called from any thread.
 */
CMESH_API int cmesh_sender_is_closed(const cmesh_sender *tx);

/**
 * Joins two channels of one type (mesh's bridge): every message of
 * `rx`'s channel, queued now or sent later, goes on into `tx`'s channel in
 * the order `rx` would have received it, with its fds and endpoints. Each
 * end may be in this process or fed from / read in another. The process's
 * forwarder thread does it (one for all bridges, started with the first
 * and gone 100 ms after the last), so a hop costs a thread wakeup unless it is
 * already busy.
 *
 * It lasts until one side ends: every sender of `rx`'s channel gone (the
 * receiver of `tx`'s then sees closed after everything), or that channel
 * failed (it sees -ECONNRESET after everything forwarded); the receiver
 * of `tx`'s channel gone or failed: `rx`'s senders then see -EPIPE or
 * -ECONNRESET. A receiver that goes away while nothing flows is noticed
 * within about 50 ms (the thread looks that often while it has bridges).
 * A full backlog of `tx` holds the bridge back: it takes nothing more
 * from `rx`'s channel until that backlog has room (it looks again within
 * 16 ms), so `rx`'s senders meet the bound themselves (-ENOBUFS once
 * their own backlog is full). A message that cannot go on
 * (cmesh_sender_send()'s other errors, or -ENOBUFS when another sender
 * of `tx`'s channel fills it between that look and the send) fails both
 * sides, and is logged.
 *
 * Takes both handles on success. -EINVAL: NULL, or both ends of one
 * channel; -EBADMSG: the types differ; -ENOMEM, -EAGAIN (no thread could
 * be started), or an error of cmesh_waitset_new() or of adding `rx` to the
 * forwarder's waitset (-ENOMEM, epoll_ctl's -errno): nothing is taken, though
 * `rx` has left its waitset. Any thread (`rx` is a receiver call: not
 * concurrently with another call on it); never waits for the forwarder,
 * may start its thread.
 */
CMESH_API int cmesh_bridge(cmesh_receiver *rx, cmesh_sender *tx);

/* What a receiver holds and how its waits went (cmesh_receiver_stats_get). */
typedef struct cmesh_receiver_stats {
	uint32_t size;	/* sizeof(cmesh_receiver_stats), set by the caller */
	uint32_t flags; /* must be 0 */
	uint64_t ring_slots; /* in-process ring: capacity in messages */
	uint64_t ring_used;  /* in-process ring: slots taken, not received */
	uint64_t overflow_bytes; /* in-process: bytes queued beyond the ring */
	uint32_t remote;	 /* 1: it reads a link's first channel */
	uint32_t lanes;		 /* rings from other processes' senders */
	uint64_t waits;		 /* receives that found nothing and waited */
	uint64_t caught;	 /* ... of which the spin caught a message */
	uint64_t sleeps;	 /* times it slept (futex or wake loop) */
	int64_t spin_ns; /* its spin before the next sleep (0: none); with
			    CMESH_SPIN_ADAPTIVE the one it has learnt */
	/*
	 * Across processes: claims of its senders where they are that
	 * their process refused (that sender's end not taken there yet);
	 * such a sender stays forwarded unless a later try holds: the
	 * receiver's own claim is tried again a few times (about 1.4 s in
	 * all) as it receives or peeks; a claim of a HINTS record is not.
	 */
	uint64_t claims_refused;
	/*
	 * CMESH_SPIN_ADAPTIVE: what its wakeups cost, learnt from its sleeps
	 * (from its sender's wake to the message in hand, a moving average;
	 * 25 us until it has slept); otherwise 0.
	 */
	int64_t wake_ns;
} cmesh_receiver_stats;

/**
 * Fills `out` (its `size` set by the caller: fields past it are left
 * alone; borrowed for the call). Counters count from the receiver's
 * creation; they are read without stopping the receiving thread, so they
 * may lag it a little. Never blocks, makes no syscall. Returns 0, or
 * -EINVAL (NULL, flags, a size smaller than the first four fields). Any
 * thread; borrows `rx`.
 */
CMESH_API int cmesh_receiver_stats_get(const cmesh_receiver *rx,
				       cmesh_receiver_stats *out);

/**
 * Frees the receiver (taken); senders then get -EPIPE and queued messages
 * have their resources released. Removes it from its waitset. NULL is a
 * no-op. The receiver's thread (one thread at a time); may be called while
 * another thread waits on its waitset. Never fails, never waits.
 */
CMESH_API void cmesh_receiver_free(cmesh_receiver *rx);

/**
 * Returns to the kernel the ring storage kept from freed channels. A freed
 * channel's ring of more than 4 KiB, if little of it was written, is kept
 * (at most 16 rings, 128 KiB of written pages each) to serve the next
 * channel of its type and size without an mmap or munmap. Also frees the
 * calling thread's kept queues: a thread keeps up to 8 freed queues with
 * small rings (oneshots, reply ports) for its next ones, and up to 4 reply
 * ports it answered for callers in other processes, for their next calls.
 * Channels in use are untouched. Never fails; any thread. Never waits (munmap syscalls).
 */
CMESH_API void cmesh_channel_trim(void);

/**
 * The channel's message type (borrowed, as given to the channel's
 * creator); NULL for a NULL receiver. Any thread; never fails, never
 * blocks.
 */
CMESH_API const cmesh_type *cmesh_receiver_type(const cmesh_receiver *rx);

/**
 * Receives the next message into `out_msg` (a struct of the channel's type)
 * and its trailing bytes into `out_trail` (capacity `trail_cap`); both are
 * borrowed for the call, as `ctx` is. The caller owns the message's
 * resources: it closes the fds and frees the endpoints (their _free
 * functions). Returns the number of trailing bytes, or:
 *   -EAGAIN    (try_recv) nothing ready;
 *   -ETIMEDOUT (recv_deadline) `deadline` (CLOCK_MONOTONIC ns) passed;
 *              (recv_ctx) the context's deadline passed;
 *   -ECANCELED (recv_ctx) the context was cancelled (cmesh/cancel.h);
 *   -EPIPE     every sender is gone and everything sent was received;
 *   -ECONNRESET a sender failed (its process died, its link broke), after
 *              everything it had published;
 *   -EMSGSIZE  the trailing bytes exceed trail_cap: nothing is consumed,
 *              cmesh_receiver_try_peek() tells the size;
 *   -EINVAL    NULL rx or out_msg, trail_cap with a NULL out_trail;
 * and the cross-process codes above. try_recv never blocks; recv waits
 * without limit; recv_ctx as long as `ctx` lasts (NULL: no limit), taking
 * a message that is ready even once it has ended. A waiting receiver
 * spins for the channel's spin time, then sleeps (futex or wake syscall)
 * until a sender (or a cancel) wakes it. The receiver's thread only (one
 * thread at a time).
 */
CMESH_API int cmesh_receiver_try_recv(cmesh_receiver *rx, void *out_msg,
				      void *out_trail, size_t trail_cap);
CMESH_API int cmesh_receiver_recv(cmesh_receiver *rx, void *out_msg,
				  void *out_trail, size_t trail_cap);
CMESH_API int cmesh_receiver_recv_deadline(cmesh_receiver *rx, int64_t deadline,
					   void *out_msg, void *out_trail,
					   size_t trail_cap);
CMESH_API int cmesh_receiver_recv_ctx(cmesh_receiver *rx, const cmesh_ctx *ctx,
				      void *out_msg, void *out_trail,
				      size_t trail_cap);

/**
 * Trailing-byte count of the next message without consuming it, or -EAGAIN
 * (nothing ready), -EPIPE (closed), -ECONNRESET (a sender failed), -EINVAL
 * (NULL), and the cross-process codes above. Never blocks. Borrows `rx`;
 * the receiver's thread only, as a receive.
 */
CMESH_API int cmesh_receiver_try_peek(cmesh_receiver *rx);

/**
 * Typed wrappers without trailing bytes. CMESH_CHANNEL_PROTOTYPE(ping,
 * struct ping) emits ping_send(), ping_try_recv(), ping_recv(),
 * ping_recv_deadline() and ping_recv_ctx() taking `struct ping *`. Each is
 * the call it wraps (trail NULL, 0), with that call's ownership, threads,
 * blocking and errors; a message with trailing bytes is -EMSGSIZE.
 */
#define CMESH_CHANNEL_PROTOTYPE(name, T)                                       \
	CMESH_MAYBE_UNUSED static inline int name##_send(cmesh_sender *tx,     \
							 const T *msg)         \
	{                                                                      \
		return cmesh_sender_send(tx, msg, NULL, 0);                    \
	}                                                                      \
	CMESH_MAYBE_UNUSED static inline int name##_try_recv(                  \
		cmesh_receiver *rx, T *out)                                    \
	{                                                                      \
		return cmesh_receiver_try_recv(rx, out, NULL, 0);              \
	}                                                                      \
	CMESH_MAYBE_UNUSED static inline int name##_recv(cmesh_receiver *rx,   \
							 T *out)               \
	{                                                                      \
		return cmesh_receiver_recv(rx, out, NULL, 0);                  \
	}                                                                      \
	CMESH_MAYBE_UNUSED static inline int name##_recv_deadline(             \
		cmesh_receiver *rx, int64_t deadline, T *out)                  \
	{                                                                      \
		return cmesh_receiver_recv_deadline(rx, deadline, out, NULL,   \
						    0);                        \
	}                                                                      \
	CMESH_MAYBE_UNUSED static inline int name##_recv_ctx(                  \
		cmesh_receiver *rx, const cmesh_ctx *ctx, T *out)              \
	{                                                                      \
		return cmesh_receiver_recv_ctx(rx, ctx, out, NULL, 0);         \
	}

CMESH_END_DECLS

#endif
