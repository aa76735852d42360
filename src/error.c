/* SPDX-License-Identifier: MIT */
/*
 * error.c - cmesh_strerror.
 */
#include <cmesh/error.h>

#include <errno.h>
#include <limits.h>
#include <string.h>

const char *cmesh_strerror(int err)
{
	if (err >= 0)
		return "success";
	if (err == INT_MIN)
		return "unknown error";
	switch (-err) {
	case EAGAIN:
		return "nothing ready (try again)";
	case EPIPE:
		return "closed: the other side is gone";
	case ECONNRESET:
		return "peer failed";
	case EPROTO:
		return "protocol violation or corrupt shared memory";
	case EBADMSG:
		return "type mismatch";
	case EMSGSIZE:
		return "message too large";
	case ETIMEDOUT:
		return "deadline passed";
	case ECANCELED:
		return "cancelled";
	case EREMOTEIO:
		return "the server failed the call";
	case EINVAL:
		return "invalid argument";
	case EBUSY:
		return "already in use";
	case ENOENT:
		return "not found";
	case ENOMEM:
		return "out of memory";
	case ENOSYS:
		return "not available here (the kernel lacks or forbids it)";
	case ENOBUFS:
		return "backlog full (CMESH_MAX_BACKLOG)";
	case EOPNOTSUPP:
		return "not supported (this endpoint cannot move)";
	case EPERM:
		return "peer refused (credentials)";
	case EACCES:
		return "permission denied";
	case ENOEXEC:
		return "the program could not be executed";
	case ECHILD:
		return "the child ended before it joined";
	case ENAMETOOLONG:
		return "socket path too long";
	case EADDRINUSE:
		return "address in use";
	case EMFILE:
		return "too many open files in this process";
	case ENFILE:
		return "too many open files in the system";
	case ECONNREFUSED:
		return "nobody listens there";
	default: {
		/* Another errno (a syscall's, passed on): the C library's. */
		const char *d = -err < 4096 ? strerrordesc_np(-err) : NULL;

		return d ? d : "unknown error";
	}
	}
}
