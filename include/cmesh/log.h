/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/log.h - where the library's log lines go.
 *
 * cmesh logs what helps find a problem: joins (who, which types, which
 * wake backend), type mismatches (both sides' type names and
 * fingerprints), protocol version mismatches, link failures and their
 * cause, the io_uring fallback and its reason, bad environment values,
 * forwarders that end badly. By default it writes them to stderr, as
 * "cmesh[pid]: ..." lines, up to the level CMESH_LOG sets (default off;
 * a bad CMESH_LOG value leaves errors on). An application can take them
 * instead.
 */
#ifndef CMESH_LOG_H
#define CMESH_LOG_H

#include <cmesh/common.h>

CMESH_BEGIN_DECLS

/* Levels (CMESH_LOG's numbers): a line of level L goes if L <= the set one. */
#define CMESH_LOG_OFF 0
#define CMESH_LOG_ERROR 1
#define CMESH_LOG_WARN 2
#define CMESH_LOG_INFO 3
#define CMESH_LOG_DEBUG 4

/**
 * Receives one log line (no trailing newline, at most 511 bytes; `line`
 * is borrowed for the call). Called from whichever thread logs, often a
 * library thread (a link's, the forwarder's), and possibly from several
 * at once. A line the callback itself causes (it calls cmesh) is dropped.
 */
typedef void (*cmesh_log_fn)(void *arg, int level, const char *line);

/**
 * Sends log lines of level <= `level` to fn(arg, ...) instead of stderr;
 * fn NULL goes back to stderr at CMESH_LOG's level (then `level` and `arg`
 * are ignored). Takes effect for lines logged after it returns; a call
 * already in the old callback may still finish there. `arg` is borrowed
 * until the callback is replaced and every call into it has returned.
 * Returns 0, or -EINVAL when fn is not NULL and `level` is not
 * CMESH_LOG_OFF..CMESH_LOG_DEBUG (nothing changes). Any thread, also
 * concurrently with logging; takes a short internal lock, makes no
 * syscall.
 */
CMESH_API int cmesh_log_set(cmesh_log_fn fn, void *arg, int level);

CMESH_END_DECLS

#endif
