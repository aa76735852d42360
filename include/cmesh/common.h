/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/common.h - export macro, version, clock and deadlines.
 *
 * Every function here may be called from any thread at any time, never
 * fails and never blocks; none allocates or borrows anything.
 */
#ifndef CMESH_COMMON_H
#define CMESH_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CMESH_API __attribute__((visibility("default")))
/* A helper a header defines that the includer may never call. */
#define CMESH_MAYBE_UNUSED __attribute__((unused))
#else
#define CMESH_API
#define CMESH_MAYBE_UNUSED
#endif

#ifdef __cplusplus
#define CMESH_BEGIN_DECLS extern "C" {
#define CMESH_END_DECLS }
#else
#define CMESH_BEGIN_DECLS
#define CMESH_END_DECLS
#endif

#define CMESH_VERSION_MAJOR 0
#define CMESH_VERSION_MINOR 1
#define CMESH_VERSION_PATCH 0
#define CMESH_VERSION_STRING "0.1.0"

/* A deadline is an absolute CLOCK_MONOTONIC time in nanoseconds. */
#define CMESH_DEADLINE_NONE INT64_MAX

CMESH_BEGIN_DECLS

/**
 * The library's version as "MAJOR.MINOR.PATCH": the one linked at run
 * time, which may differ from the headers' CMESH_VERSION_STRING. A static
 * string: never NULL, not to be freed. Any thread (see top); never fails,
 * never blocks, makes no syscall.
 */
CMESH_API const char *cmesh_version(void);

/**
 * Current CLOCK_MONOTONIC time in nanoseconds (clock_gettime(), a vDSO
 * call). Any thread (see top); never fails, never blocks.
 */
CMESH_API int64_t cmesh_clock_now(void);

/**
 * Deadline `ns` nanoseconds from now, saturating at CMESH_DEADLINE_NONE.
 * A negative `ns` gives a deadline in the past. Reads the clock as
 * cmesh_clock_now(). Any thread (see top); never fails, never blocks.
 */
CMESH_API int64_t cmesh_deadline_after(int64_t ns);

CMESH_END_DECLS

#endif
