/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/env.h - tuning by environment.
 *
 * Read once, at the first call that needs them; later changes to the
 * environment have no effect. Values are parsed strictly: decimal digits,
 * sizes with an optional K, M or G suffix (powers of 1024), nothing else
 * (no sign, no spaces, no hex). A bad value makes every call that needs the
 * settings fail with -EINVAL; cmesh_env_check() says which variable.
 *
 *   CMESH_RING_SIZE    bytes per ring, power of two, 4K..1G (default 64K)
 *   CMESH_SPIN_NS      receiver spin before sleeping: 0..10000000000 ns
 *                      (fixed; 0 sleeps at once) or "adaptive" (the
 *                      default: CMESH_SPIN_ADAPTIVE, channel.h; spin_ns
 *                      below is then CMESH_SPIN_ADAPTIVE)
 *   CMESH_WAKE         wake backend: uring or epoll (default: uring when
 *                      the kernel allows it)
 *   CMESH_MAX_MESSAGE  largest trailing bytes of a message, 1K..1G
 *                      (default 64M)
 *   CMESH_LOG          debug log level to stderr: 0..4 or
 *                      off|error|warn|info|debug (default off)
 *   CMESH_MAX_BACKLOG  bytes a channel may queue beyond its ring (its
 *                      overflow list, or its spill backlog across
 *                      processes) before a send fails with -ENOBUFS,
 *                      4K..1T (default 64M)
 *   CMESH_SHM_PLACE    1: map each shared-memory arena at the same address
 *                      in both processes where that address is free in
 *                      both (the default), 0: wherever the kernel puts it
 */
#ifndef CMESH_ENV_H
#define CMESH_ENV_H

#include <cmesh/common.h>

CMESH_BEGIN_DECLS

#define CMESH_WAKE_AUTO 0u
#define CMESH_WAKE_URING 1u
#define CMESH_WAKE_EPOLL 2u

typedef struct cmesh_env {
	uint32_t size;	/* sizeof(cmesh_env), set by the caller */
	uint32_t flags; /* must be 0 */
	uint64_t ring_size;
	int64_t spin_ns;
	uint64_t max_message;
	uint32_t wake;	    /* CMESH_WAKE_* */
	uint32_t log_level; /* 0..4 */
	uint64_t max_backlog;
	uint32_t shm_place; /* 0 or 1 */
} cmesh_env;

#define CMESH_ENV_INIT                                                         \
	{                                                                      \
		sizeof(cmesh_env), 0, 0, 0, 0, 0, 0, 0, 0                      \
	}

/**
 * Parses the environment (once per process) and copies the settings into
 * *out (may be NULL; its `size` set by the caller: fields past it are
 * left alone). Borrows `out` and `errbuf` for the call. Returns 0 (then
 * errbuf, if given, holds ""), or -EINVAL: a bad value, and then, if
 * `errbuf` is not NULL, a NUL-terminated message naming the variable and
 * the value (truncated to errlen); or an `out` whose size is below 8 or
 * whose flags are not 0. Any thread; the first call in a process reads
 * the environment (others wait for it), later ones make no syscall.
 */
CMESH_API int cmesh_env_check(cmesh_env *out, char *errbuf, size_t errlen);

CMESH_END_DECLS

#endif
