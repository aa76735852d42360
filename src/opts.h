/* SPDX-License-Identifier: MIT */
/*
 * opts.h - the rules shared by every public options struct.
 */
#ifndef CMESH_OPTS_H
#define CMESH_OPTS_H

#include <cmesh/env.h>

#include <stddef.h>
#include <stdint.h>

/*
 * Copies a caller's size-prefixed options struct into `dst` (dst_size
 * bytes, zero-filled first): a shorter struct leaves the newer fields 0
 * (the old default); a longer one must have only zero bytes past what we
 * know. NULL `src` gives all defaults. Returns 0 or -EINVAL.
 */
int cmesh__opts_copy(void *dst, size_t dst_size, const void *src);

/*
 * The other way, for a size-prefixed result struct (stats): checks the
 * caller's `size` (at least `min`) and `flags` (0: the struct's first two
 * uint32_t), then copies `full` (full_size bytes, its own size field set
 * to the caller's) up to the caller's size. Returns 0 or -EINVAL.
 */
int cmesh__opts_out(void *out, size_t min, void *full, size_t full_size);

/* A ring size option: 0 takes env's; else a power of two in range. */
int cmesh__opts_ring_size(uint32_t v, const cmesh_env *env, uint64_t *out);

/* max_backlog: 0 is CMESH_MAX_BACKLOG, else 4K..1T (-EINVAL). */
int cmesh__opts_max_backlog(uint64_t v, const cmesh_env *env, uint64_t *out);

/*
 * A spin option: 0 takes env's, CMESH_SPIN_NONE is 0 (none), else the
 * value (CMESH_SPIN_ADAPTIVE stays: queue_recv.c learns).
 */
int cmesh__opts_spin(int64_t v, const cmesh_env *env, int64_t *out);

#endif
