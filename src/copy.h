/* SPDX-License-Identifier: MIT */
/*
 * copy.h - memcpy for message-sized copies on the fast paths.
 */
#ifndef CMESH_COPY_H
#define CMESH_COPY_H

#include <stddef.h>
#include <string.h>

/*
 * Up to 128 bytes are copied inline with at most two constant-size copies
 * that overlap in the middle (no loop: a compiler turns a copy loop back
 * into a call to memcpy or into rep movs, both slow to start for a
 * message-sized copy). Longer copies go to memcpy. `dst` and `src` must
 * not overlap.
 */
#define CMESH__COPY_PAIR(d, s, n, k)                                           \
	do {                                                                   \
		__builtin_memcpy((d), (s), (k));                               \
		if ((n) > (k))                                                 \
			__builtin_memcpy((d) + (n) - (k), (s) + (n) - (k),     \
					 (k));                                 \
	} while (0)

static inline void cmesh__copy_small(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (n > 128)
		memcpy(d, s, n);
	else if (n >= 64)
		CMESH__COPY_PAIR(d, s, n, 64);
	else if (n >= 32)
		CMESH__COPY_PAIR(d, s, n, 32);
	else if (n >= 16)
		CMESH__COPY_PAIR(d, s, n, 16);
	else if (n >= 8)
		CMESH__COPY_PAIR(d, s, n, 8);
	else if (n >= 4)
		CMESH__COPY_PAIR(d, s, n, 4);
	else if (n >= 2)
		CMESH__COPY_PAIR(d, s, n, 2);
	else if (n)
		*d = *s;
}

#endif
