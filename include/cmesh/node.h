/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/node.h - joining processes: spawn/join, listen/connect.
 *
 * A node is this process's link to one peer process: a SOCK_SEQPACKET unix
 * socket for control (handshake, fds, failure) and two sealed memfd arenas
 * for data (each side writes only its own arena and maps the peer's
 * read-only). Joining gives a first pair of channels across the link: a
 * sender whose receiver is in the peer, and a receiver whose sender is in
 * the peer. They behave as in-process channels do, plus:
 *   -ECONNRESET  the peer process died, closed the link or hung up
 *                (messages it had completely published are delivered first;
 *                where the link knows the peer's pid, see peer_pid below,
 *                its exit is seen even if its socket end lives on);
 *   -EPROTO      the peer broke the protocol or corrupted shared memory;
 *   -EMFILE      this process's fd table was full when fds sent with a
 *                message arrived: they are lost, and with them the link;
 *   -EBADMSG     (when joining) the two sides disagree on a channel's type.
 * Endpoint fields move with the message and keep working in the other
 * process, whatever process their own peer is in (see README.md).
 * fd fields travel with the message (SCM_RIGHTS) and arrive O_CLOEXEC.
 * Messages larger than a ring's record limit travel in their own sealed
 * memfd. SIGPIPE is never raised.
 *
 * The sides name the channel types from their own point of view: what one
 * side sends (`out_type`) the other receives (`in_type`).
 *
 * Every join (cmesh_node_join_socket, cmesh_spawn, cmesh_join,
 * cmesh_connect, cmesh_listener_accept) borrows its types (they must
 * outlive the channels), options and context; returns an owned node
 * (cmesh_node_free() or cmesh_node_close()) and owned first endpoints
 * (cmesh_sender_free(), cmesh_receiver_free()); may be called from any
 * thread; and blocks, making syscalls, until the handshake ends, at most
 * the handshake limit (timeout_ns) or its context. Besides its own codes
 * each may fail with -ECANCELED or -ETIMEDOUT (its context), -EINVAL (NULL
 * outputs, bad types, options or environment), -ENOSYS (CMESH_WAKE=uring
 * where io_uring is unavailable) and the kernel's -errno (-EMFILE...). On
 * failure it leaves nothing behind.
 */
#ifndef CMESH_NODE_H
#define CMESH_NODE_H

#include <cmesh/channel.h>
#include <cmesh/common.h>
#include <cmesh/type.h>

#include <sys/types.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_node cmesh_node;
typedef struct cmesh_listener cmesh_listener;

/* Environment variable carrying a spawned child's invitation. */
#define CMESH_INVITE_ENV "CMESH_INVITE"

/**
 * cmesh_node_opts.flags, cmesh_spawn() only: the child gets SIGKILL when
 * the thread that spawned it exits (PR_SET_PDEATHSIG), and does not start
 * if the spawning process is gone before the child could ask.
 */
#define CMESH_NODE_PDEATHSIG 1u

typedef struct cmesh_node_opts {
	uint32_t size;	    /* sizeof(cmesh_node_opts) */
	uint32_t flags;	    /* CMESH_NODE_PDEATHSIG (cmesh_spawn); else 0 */
	uint32_t ring_size; /* bytes of each ring this side writes, power of
			       two; 0: CMESH_RING_SIZE */
	uint32_t reserved;  /* must be 0 */
	int64_t spin_ns;    /* receiver spin; 0: CMESH_SPIN_NS,
			       CMESH_SPIN_NONE: none, CMESH_SPIN_ADAPTIVE */
	int64_t timeout_ns; /* handshake limit; 0: 10 s */
	/*
	 * The peer's process id, if the caller knows it (it forked the peer
	 * and has not reaped it): the link then also watches the process
	 * (a pidfd), so its death is seen even if the control socket stays
	 * open elsewhere. 0: cmesh_node_join_socket() and cmesh_connect()
	 * watch no process (a socketpair's creds name whoever made it, a
	 * client's whoever called listen()); cmesh_spawn, cmesh_join (of a
	 * cmesh_spawn invitation) and cmesh_listener_accept know the peer.
	 */
	int32_t peer_pid;
	uint32_t reserved2; /* must be 0 */
			    /*
	 * Bytes the first sender may queue beyond its ring while the peer
	 * does not read (its spill backlog) before a send fails with
	 * -ENOBUFS; 0: CMESH_MAX_BACKLOG, else 4K..1T.
	 */
	uint64_t max_backlog;
	/*
	 * cmesh_spawn() only, may be NULL: where a spawn that fails with
	 * -ECHILD (the child ended by itself before it joined) writes the
	 * child's wait status (as waitpid() gives it); -1 on any other
	 * result.
	 */
	int *exit_status;
	/*
	 * May be NULL (borrowed for the call): cmesh_node_join_socket(),
	 * cmesh_spawn(), cmesh_join(), cmesh_connect() and
	 * cmesh_listener_accept() give up with -ECANCELED once it is
	 * cancelled, or -ETIMEDOUT at its deadline (or timeout_ns', or
	 * accept's own, whichever comes first), and leave nothing behind (a
	 * spawned child is killed and reaped). Checked first: an ended
	 * context fails the call before it starts anything.
	 */
	const cmesh_ctx *ctx;
} cmesh_node_opts;

#define CMESH_NODE_OPTS_INIT                                                   \
	{                                                                      \
		sizeof(cmesh_node_opts), 0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL    \
	}

/**
 * Joins over an already connected SOCK_SEQPACKET unix socket `sock` (taken
 * in every case: closed on failure). Both sides call it. Returns an owned
 * node and the first channel pair. Any thread; blocks until the handshake
 * ends (see top). Errors: -EBADMSG (type mismatch), -EPROTO (bad
 * handshake), -ETIMEDOUT, -ECONNRESET, -EINVAL, -ENOMEM, -EMFILE.
 */
CMESH_API int cmesh_node_join_socket(int sock, const cmesh_type *out_type,
				     const cmesh_type *in_type,
				     const cmesh_node_opts *opts,
				     cmesh_node **out_node,
				     cmesh_sender **out_tx,
				     cmesh_receiver **out_rx);

/**
 * Starts `path` with `argv` (NULL-terminated; the environment is inherited
 * plus CMESH_INVITE) as a child joined to this process, and waits for its
 * cmesh_join(). The child starts clean: of this process's fds it inherits
 * only 0, 1 and 2 and its invitation (whatever their close-on-exec flag),
 * no signal is blocked or ignored, and with CMESH_NODE_PDEATHSIG it dies
 * with the spawning thread. The link watches the child's pid. Borrows
 * `path` and `argv`. Any thread (see top), but it reads the environment:
 * not while another thread changes it (setenv). Blocks until the child has
 * joined, the handshake limit or opts' context. Errors as
 * cmesh_node_join_socket(), plus -ENOENT/-EACCES (`path` is not an
 * executable file), -ENOEXEC (exec failed: the child exited 127), -ECHILD
 * (the child ended by itself before it joined: it exited, or a signal
 * other than our SIGKILL ended it; opts' exit_status gets its status)
 * and fork errors. On failure the child is killed and reaped; on success
 * reaping it (waitpid on cmesh_node_pid()) is the caller's.
 */
CMESH_API int cmesh_spawn(const char *path, char *const argv[],
			  const cmesh_type *out_type, const cmesh_type *in_type,
			  const cmesh_node_opts *opts, cmesh_node **out_node,
			  cmesh_sender **out_tx, cmesh_receiver **out_rx);

/**
 * In a child started by cmesh_spawn(): accepts the invitation (the socket
 * named by CMESH_INVITE, which is then unset; taken as by
 * cmesh_node_join_socket()). -ENOENT if there is none, -EINVAL if it does
 * not name an inherited SOCK_SEQPACKET socket; else errors as
 * cmesh_node_join_socket(). Any thread (see top), but it changes the
 * environment: not while another thread reads or changes it (getenv,
 * setenv), nor concurrently with another cmesh_join(). Blocks as
 * cmesh_node_join_socket().
 */
CMESH_API int cmesh_join(const cmesh_type *out_type, const cmesh_type *in_type,
			 const cmesh_node_opts *opts, cmesh_node **out_node,
			 cmesh_sender **out_tx, cmesh_receiver **out_rx);

/**
 * The peer's process id: the child cmesh_spawn() forked, peer_pid, or
 * SO_PEERCRED; where that names this process (a socketpair it made), the
 * pid the peer gave in its handshake (its word, not checked). -1 for NULL,
 * the only error. Borrows `node`; any thread; never blocks.
 */
CMESH_API pid_t cmesh_node_pid(const cmesh_node *node);

/* What a link is and holds, at one moment (cmesh_node_stats_get()). */
typedef struct cmesh_node_stats {
	uint32_t size;	       /* sizeof(cmesh_node_stats), set by the caller */
	uint32_t flags;	       /* must be 0 */
	int32_t peer_pid;      /* as cmesh_node_pid() */
	int32_t failed;	       /* 0, or why the link failed (-ECONNRESET...) */
	uint32_t wake_backend; /* CMESH_WAKE_URING or CMESH_WAKE_EPOLL */
	uint32_t lanes;	       /* rings of channels sent over it, both ways */
	uint64_t peer_bytes;   /* bytes of the peer's ring halves mapped here */
	uint32_t pending_fds;  /* fds that arrived, not yet received */
	uint32_t fd_budget;    /* how many may wait before it stops reading */
	uint64_t backlog; /* first channel: bytes spilled behind its ring */
} cmesh_node_stats;

/**
 * Fills `out` (its `size` set by the caller: fields past it are left
 * alone, so a caller built against an older header works). Never blocks
 * for long (the link's lane lock), makes no syscall. Returns 0, or -EINVAL
 * (NULL, flags, a size smaller than the first four fields). Borrows both;
 * any thread.
 */
CMESH_API int cmesh_node_stats_get(const cmesh_node *node,
				   cmesh_node_stats *out);

/**
 * As cmesh_sender_flush() for everything sent over this link, on every
 * channel it carries (the first pair and those endpoints sent over it
 * made), including the close of senders already freed: once it returns 0
 * the process may exit without the peer losing a message. A channel whose
 * receiver is gone counts as flushed; the first channel's says -EPIPE.
 * Sleeps, polling every 100 us, until then or `deadline`. Returns 0,
 * -ETIMEDOUT, -EPIPE, -ECONNRESET or -EPROTO (the link failed), -ENOMEM,
 * -EINVAL (NULL). Borrows `node`; any thread.
 */
CMESH_API int cmesh_node_flush(cmesh_node *node, int64_t deadline);

/**
 * As cmesh_node_flush(), for as long as `ctx` lasts (NULL: no limit;
 * borrowed for the call): -ETIMEDOUT at its deadline, -ECANCELED once it
 * is cancelled (cmesh/cancel.h); its other results, blocking and threads
 * are the flush's (-EINVAL for a NULL node; borrows `node`; any thread).
 */
CMESH_API int cmesh_node_flush_ctx(cmesh_node *node, const cmesh_ctx *ctx);

/**
 * Drops this handle on the link. The link stays up while channels on it are
 * open; when the last is freed the socket closes (once a backlog still
 * queued for a live peer has been delivered). NULL is a no-op. Does not
 * wait for or reap a spawned child. Takes `node`; any thread, but no other
 * call may use `node` meanwhile; never fails, never waits.
 */
CMESH_API void cmesh_node_free(cmesh_node *node);

/**
 * Flushes as cmesh_node_flush() until `deadline`, then closes the link for
 * good and frees `node` (taken in every case): the peer sees it hang up,
 * whatever was not flushed is dropped (its fds closed), and the channels
 * still open on it report -ECONNRESET, after what the peer had published.
 * This also ends a link that would otherwise outlive its handles, waiting
 * for a stalled peer to take its backlog. Returns what the flush returned
 * (0: nothing was dropped), or -EINVAL for NULL. Blocks as the flush does,
 * until `deadline` at most. Any thread; no other call may use `node`.
 */
CMESH_API int cmesh_node_close(cmesh_node *node, int64_t deadline);

/**
 * Writes one line per live node (link) of this process to `fd`, the
 * fields of cmesh_node_stats_get():
 *
 *     cmesh node 1: peer_pid 4242, wake io_uring, state ok, lanes 3,
 *     peer_bytes 139264, pending_fds 0, fd_budget 512, backlog 0
 *
 * (one line each; `state` is `ok` or `failed N (reason)`). For a process's
 * own diagnostics path, e.g. a command on its admin socket or a signal its
 * event loop handles: it takes locks and allocates, so it is not
 * async-signal-safe. The statistics are copied first and written after,
 * so a slow `fd` holds up no link. Returns the number of lines written,
 * or -EBADF (fd < 0), -ENOMEM, or -errno of a failed write. Borrows `fd`;
 * any thread; blocks as long as writing to `fd` does.
 */
CMESH_API int cmesh_stats_dump(int fd);

/**
 * As cmesh_node_close(), flushing for as long as `ctx` lasts
 * (cmesh_node_flush_ctx()): -ECANCELED or -ETIMEDOUT if the context ended
 * first. `node` is taken in every case (also with a NULL ctx, which is
 * -EINVAL, not "no limit": then nothing is flushed); -EINVAL for a NULL
 * node. Blocks as that flush does; `ctx` is borrowed for the call. Any
 * thread; no other call may use `node`.
 */
CMESH_API int cmesh_node_close_ctx(cmesh_node *node, const cmesh_ctx *ctx);

#define CMESH_LISTEN_ANY_UID 1u /* flag: accept peers of any uid */

typedef struct cmesh_listen_opts {
	uint32_t size;	/* sizeof(cmesh_listen_opts) */
	uint32_t flags; /* CMESH_LISTEN_ANY_UID */
	uint32_t uid;	/* peers must have this uid; 0 here with flags 0
			   means this process's effective uid */
	uint32_t reserved;
} cmesh_listen_opts;

#define CMESH_LISTEN_OPTS_INIT                                                 \
	{                                                                      \
		sizeof(cmesh_listen_opts), 0, 0, 0                             \
	}

/**
 * Listens on a unix socket at `path` (created; an existing socket file is
 * replaced); `path` appears only once the socket listens (bound under a
 * name beside it, then linked: a client that waits for the path and
 * connects at once is not refused); borrows `path` and `opts` for the
 * call. Returns the listener
 * owned (cmesh_listener_free()). Any thread; never waits. Errors: -EINVAL
 * (NULL out, an empty path, bad options), -ENAMETOOLONG, -EADDRINUSE,
 * -ENOMEM, -errno.
 */
CMESH_API int cmesh_listen(const char *path, const cmesh_listen_opts *opts,
			   cmesh_listener **out);

/**
 * Accepts one peer and joins with it. A peer whose uid is refused is
 * disconnected and -EPERM returned. A peer that connects and does not
 * begin its handshake holds nothing up: connections wait (up to 64, the
 * oldest closed first; each at most the handshake limit, opts'
 * timeout_ns) until their peer speaks, and the first that does is the one
 * joined; one that hangs up without a word is closed and forgotten. Blocks until a peer joins, `deadline`, or opts' context ends.
 * Errors: also those of cmesh_node_join_socket(), -ETIMEDOUT, -EINVAL
 * (NULL l). Borrows `l`; one thread at a time per listener.
 */
CMESH_API int
cmesh_listener_accept(cmesh_listener *l, int64_t deadline,
		      const cmesh_type *out_type, const cmesh_type *in_type,
		      const cmesh_node_opts *opts, cmesh_node **out_node,
		      cmesh_sender **out_tx, cmesh_receiver **out_rx);

/**
 * An fd (borrowed, an epoll fd over the listening socket and the
 * connections waiting) that polls readable when a peer is waiting or one
 * has spoken: then call cmesh_listener_accept(). Valid until
 * cmesh_listener_free(). -EINVAL for NULL. Any thread; never blocks,
 * makes no syscall.
 */
CMESH_API int cmesh_listener_fd(const cmesh_listener *l);

/**
 * Closes the listener (taken), the connections still waiting and its fd,
 * and unlinks its path. NULL is a no-op. Any thread, but no other call
 * may use `l` meanwhile (not while an accept runs on it). Never fails,
 * never waits.
 */
CMESH_API void cmesh_listener_free(cmesh_listener *l);

/**
 * Connects to a listener at `path` and joins. A listener whose backlog is
 * full is tried again (every 10 ms at most) until the handshake limit
 * (opts' timeout_ns) or the context ends, then blocks in the handshake
 * (see top). Borrows `path`; any thread. Errors: as
 * cmesh_node_join_socket(), -EINVAL (NULL or empty path), -ENAMETOOLONG,
 * -ETIMEDOUT (the listener's backlog stayed full), -ECANCELED, connect()'s
 * -errno (-ENOENT, -ECONNREFUSED...).
 */
CMESH_API int cmesh_connect(const char *path, const cmesh_type *out_type,
			    const cmesh_type *in_type,
			    const cmesh_node_opts *opts, cmesh_node **out_node,
			    cmesh_sender **out_tx, cmesh_receiver **out_rx);

CMESH_END_DECLS

#endif
