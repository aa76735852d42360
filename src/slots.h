/* SPDX-License-Identifier: MIT */
/*
 * slots.h - zeroed storage for in-process slot rings, with a small pool.
 *
 * A ring's storage must start zero (a zero seq is "empty" at every lap) and
 * should cost nothing it does not use. Up to CMESH__SLOTS_HEAP_MAX bytes it
 * comes from the heap, zeroed (oneshots: a few hundred bytes). Larger rings
 * are anonymous mappings: the kernel supplies their pages zeroed as the
 * producers first reach them, so creation costs one mmap for any size and
 * an idle ring commits no page. A freed mapping whose owner reset it to zero
 * (cmesh__slots_keepable() said it may) goes to a bounded pool keyed by its
 * size and slot stride, from which the next ring of that geometry is taken
 * without a syscall; freeing it then costs no munmap either (an munmap sends
 * TLB-shootdown IPIs to every CPU the process's threads ran on).
 *
 * Thread-safe (one mutex; creation and destruction are not fast paths).
 * Safe across fork: the child starts with the parent's pool, unlocked.
 */
#ifndef CMESH_SLOTS_H
#define CMESH_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

#define CMESH__SLOTS_HEAP_MAX 4096u
/* Rings kept at most, and the resident bytes a kept ring may hold. */
#define CMESH__SLOTS_POOL_MAX 16u
#define CMESH__SLOTS_KEEP_DIRTY (128u * 1024)

/*
 * Returns `bytes` of zeroed storage aligned to 128 bytes for a ring of slots
 * `stride` bytes apart, or NULL (out of memory).
 */
void *cmesh__slots_alloc(uint64_t bytes, uint32_t stride);

/*
 * Whether storage of `bytes` in which `used` slots were written (scattered:
 * each may have touched its own pages) is worth resetting for the pool. A
 * caller told yes resets to zero every byte it wrote, then frees with
 * clean = true.
 */
bool cmesh__slots_keepable(uint64_t bytes, uint32_t stride, uint64_t used);

/*
 * Frees what cmesh__slots_alloc() returned (NULL: no-op). `clean`: the
 * caller reset it to all zero, so it may be pooled.
 */
void cmesh__slots_free(void *p, uint64_t bytes, uint32_t stride, bool clean);

/* Rings in the pool now (tests). */
unsigned cmesh__slots_pooled(void);

/* Unmaps every pooled ring (tests count mappings without the pool). */
void cmesh__slots_trim(void);

#endif
