/* SPDX-License-Identifier: MIT */
/*
 * env.h - the process's tuning settings (see include/cmesh/env.h).
 */
#ifndef CMESH_ENV_INTERNAL_H
#define CMESH_ENV_INTERNAL_H

#include <cmesh/env.h>

#include <stddef.h>

#define CMESH__MAX_BACKLOG_MIN 4096ull
#define CMESH__MAX_BACKLOG_MAX (1ull << 40)
#define CMESH__RING_SIZE_MIN 4096u
#define CMESH__RING_SIZE_MAX (1u << 30)
#define CMESH__SPIN_NS_MAX 10000000000LL

/* Looks a variable up by name; getenv() in production, a table in tests. */
typedef const char *(*cmesh__env_lookup)(const char *name);

/*
 * Parses every CMESH_* variable through `lookup` into *out. Returns 0, or
 * -EINVAL with a message naming the variable in errbuf.
 */
int cmesh__env_parse(cmesh__env_lookup lookup, cmesh_env *out, char *errbuf,
		     size_t errlen);

/*
 * The process's settings, parsed once. Returns 0 and a pointer valid for
 * the process's life, or -EINVAL if a variable is bad.
 */
int cmesh__env_get(const cmesh_env **out);

#endif
