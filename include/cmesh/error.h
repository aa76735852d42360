/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/error.h - error values.
 *
 * Every fallible cmesh call returns an int: >= 0 on success (a count where
 * the function says so), a negative errno value on failure. errno itself is
 * never used to report a result. Each code has one meaning:
 *
 *   -EAGAIN      try-operation: nothing ready (receive) / would block.
 *   -EPIPE       the other side is closed: on receive, every sender is gone
 *                and everything they sent has been received ("closed");
 *                on send, the receiver is gone.
 *   -ECONNRESET  the peer failed (its process died or its link broke).
 *   -EPROTO      corrupt shared memory or a protocol violation by a peer.
 *   -EBADMSG     type mismatch: a message or endpoint of the wrong type.
 *   -EMSGSIZE    a message or its trailing bytes exceed a limit or a
 *                caller's buffer.
 *   -ETIMEDOUT   a deadline passed.
 *   -ECANCELED   a cancel context fired.
 *   -EINVAL      invalid argument, option, flag or environment value.
 *   -EBUSY       the object is already in use (e.g. already in a waitset).
 *   -EOPNOTSUPP  an endpoint in a try_send (it could not come back on
 *                -EAGAIN).
 *   -ENOENT      not found: not a member of this waitset, no invitation
 *                (cmesh_join()), or (passed through) no such file.
 *   -EREMOTEIO   rpc: the server failed the call (cmesh/rpc.h).
 *   -EPERM       a connecting peer's credentials were refused.
 *   -ENOEXEC     cmesh_spawn(): the program could not be executed.
 *   -ECHILD      cmesh_spawn(): the child ended before it joined.
 *   -ENOMEM      out of memory.
 *   -ENOSYS      a kernel facility asked for is absent or forbidden here
 *                (CMESH_WAKE=uring where io_uring is missing, or refused by
 *                seccomp or the io_uring_disabled sysctl).
 *   -ENOBUFS     send: the channel already queues its limit of bytes beyond
 *                its ring (CMESH_MAX_BACKLOG, max_backlog options); the
 *                message's resources are released as on any failed send.
 *   -EMFILE etc. resource exhaustion reported by the kernel, passed through.
 */
#ifndef CMESH_ERROR_H
#define CMESH_ERROR_H

#include <cmesh/common.h>

CMESH_BEGIN_DECLS

/**
 * Static description of a cmesh return value (negative errno or >= 0):
 * "success" for >= 0, the C library's description of another errno a
 * syscall passed on (connect()'s -EHOSTDOWN, say), "unknown error" for a
 * code that is no errno. Never
 * returns NULL; the string is static, not to be freed. Any thread; never
 * blocks, makes no syscall, never fails.
 */
CMESH_API const char *cmesh_strerror(int err);

CMESH_END_DECLS

#endif
