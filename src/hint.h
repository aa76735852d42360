/* SPDX-License-Identifier: MIT */
/*
 * hint.h - branch hints for the fast paths.
 */
#ifndef CMESH_HINT_H
#define CMESH_HINT_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/*
 * For the small steps of a fast path that GCC would otherwise call out of
 * line (it does for cmesh__shmring_read() at -O3 in lane_rx.c).
 */
#define cmesh__inline inline __attribute__((always_inline))

/*
 * Read prefetch of the line holding `p`. GCC 12 drops __builtin_prefetch
 * from some inlined copies of a function (seen in the queue's receive fast
 * path), so on x86-64 it is an asm statement the compiler must keep.
 */
static inline void cmesh__prefetch(const void *p)
{
#if defined(__x86_64__)
	__asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)p));
#else
	__builtin_prefetch(p, 0, 3);
#endif
}

/*
 * Prefetch for writing: asks for the line holding `p` in an exclusive
 * state. On x86-64 an asm PREFETCHW (a NOP where it is missing, on old
 * Intel): __builtin_prefetch(p, 1, 3) only emits it with -mprfchw, and
 * otherwise a read prefetch, which leaves the line shared.
 */
static inline void cmesh__prefetchw(const void *p)
{
#if defined(__x86_64__)
	__asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

#endif
