/* SPDX-License-Identifier: MIT */
/*
 * copy.h - memcpy for message-sized copies on the fast paths.
 */
#ifndef CMESH_COPY_H
#define CMESH_COPY_H

#include <stddef.h>
#include <string.h>

/*
 * Up to 128 bytes are copied inline in 16-byte pieces: no call into libc
 * and no byte loop for the common sizes (a 64-byte message is four moves).
 * Longer copies go to memcpy.
 */
static inline void cmesh__copy_small(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (n > 128) {
		memcpy(d, s, n);
		return;
	}
	for (; n >= 16; n -= 16, d += 16, s += 16)
		__builtin_memcpy(d, s, 16);
	if (n >= 8) {
		__builtin_memcpy(d, s, 8);
		n -= 8, d += 8, s += 8;
	}
	while (n--)
		*d++ = *s++;
}

#endif
