/* SPDX-License-Identifier: MIT */
/*
 * opts.c - size-prefixed option structs and the tuning values they share
 * with the environment.
 */
#include "opts.h"

#include "env.h"

#include <cmesh/channel.h>

#include <errno.h>
#include <string.h>

int cmesh__opts_copy(void *dst, size_t dst_size, const void *src)
{
	uint32_t size;

	memset(dst, 0, dst_size);
	if (!src)
		return 0;
	memcpy(&size, src, sizeof(size));
	if (size < 2 * sizeof(uint32_t))
		return -EINVAL;
	for (size_t i = dst_size; i < size; i++)
		if (((const unsigned char *)src)[i])
			return -EINVAL;
	memcpy(dst, src, size < dst_size ? size : dst_size);
	return 0;
}

int cmesh__opts_ring_size(uint32_t v, const cmesh_env *env, uint64_t *out)
{
	if (v && (v < CMESH__RING_SIZE_MIN || v > CMESH__RING_SIZE_MAX ||
		  (v & (v - 1))))
		return -EINVAL;
	*out = v ? v : env->ring_size;
	return 0;
}

int cmesh__opts_spin(int64_t v, const cmesh_env *env, int64_t *out)
{
	if (v < CMESH_SPIN_ADAPTIVE || v > CMESH__SPIN_NS_MAX)
		return -EINVAL;
	*out = v == 0 ? env->spin_ns : v == CMESH_SPIN_NONE ? 0 : v;
	return 0;
}

int cmesh__opts_max_backlog(uint64_t v, const cmesh_env *env, uint64_t *out)
{
	if (v && (v < CMESH__MAX_BACKLOG_MIN || v > CMESH__MAX_BACKLOG_MAX))
		return -EINVAL;
	*out = v ? v : env->max_backlog;
	return 0;
}

int cmesh__opts_out(void *out, size_t min, void *full, size_t full_size)
{
	uint32_t hdr[2];

	memcpy(hdr, out, sizeof(hdr)); /* size, flags */
	if (hdr[1] || hdr[0] < min)
		return -EINVAL;
	memcpy(full, &hdr[0], sizeof(hdr[0]));
	memcpy(out, full, hdr[0] < full_size ? hdr[0] : full_size);
	return 0;
}
