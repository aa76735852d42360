/* SPDX-License-Identifier: MIT */
/*
 * fuzz_arena.c - libFuzzer harness: a peer's arena as the handshake maps it
 * (cmesh__arena_map_peer): a memfd whose size, seals and bytes (header
 * included) come from the input, and the size the peer's HELLO claims.
 * It must be refused or mapped read-only with a layout inside the arena;
 * nothing may crash (a SIGBUS from a short memfd included).
 */
#include "arena.h"
#include "ring.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A valid header for a `len` arena (from cmesh__arena_create), or zeroes. */
static void valid_header(uint64_t len, unsigned char *out)
{
	struct cmesh__arena *a;

	memset(out, 0, sizeof(struct cmesh_shm_arena_hdr));
	if (cmesh__arena_create(len, "fuzz-model", &a) == 0) {
		memcpy(out, cmesh__arena_base(a),
		       sizeof(struct cmesh_shm_arena_hdr));
		cmesh__arena_free(a);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int seal_sets[4] = { 0, F_SEAL_SHRINK,
					  F_SEAL_SHRINK | F_SEAL_GROW,
					  F_SEAL_SHRINK | F_SEAL_GROW |
						  F_SEAL_SEAL };
	const struct cmesh__arena_layout *l;
	struct cmesh__arena *peer = NULL;
	unsigned char hdr[sizeof(struct cmesh_shm_arena_hdr)];
	uint8_t pages, claim, seals, model;
	uint64_t len, claimed;
	int fd, r;

	if (size < 3)
		return 0;
	pages = data[0] % 8;
	claim = data[1] % 16;
	seals = data[2] % 4;
	model = data[2] & 4; /* start from a valid header, overlay input */
	data += 3;
	size -= 3;
	len = (uint64_t)pages * CMESH_SHM_PAGE;
	/* Mostly the true size: the interesting checks come after it. */
	claimed = claim < 8   ? len :
		  claim == 15 ? len + 1 :
				(uint64_t)(claim - 8) * CMESH_SHM_PAGE;
	fd = memfd_create("fuzz-peer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, (off_t)len))
		abort();
	if (model && len >= sizeof(hdr)) {
		/* Input: an offset into the header, then bytes to put there. */
		size_t off = size ? data[0] % sizeof(hdr) : 0;

		valid_header(len, hdr);
		if (size > 1)
			memcpy(hdr + off, data + 1,
			       size - 1 < sizeof(hdr) - off ?
				       size - 1 :
				       sizeof(hdr) - off);
		if (pwrite(fd, hdr, sizeof(hdr), 0) < 0)
			abort();
	} else if (size && len &&
		   pwrite(fd, data, size < len ? size : len, 0) < 0) {
		abort();
	}
	if (seal_sets[seals] && fcntl(fd, F_ADD_SEALS, seal_sets[seals]))
		abort();
	r = cmesh__arena_map_peer(fd, claimed, &peer);
	if (r) {
		close(fd);
		return 0;
	}
	l = cmesh__arena_layout(peer);
	if (l->size != len || l->ctl_off + l->ctl_len > l->size ||
	    l->data_off + l->data_len > l->size)
		abort();
	/* Every byte the layout names can be read. */
	if (l->data_len)
		(void)*(volatile const unsigned char
				*)((const unsigned char *)cmesh__arena_base(
					   peer) +
				   l->data_off + l->data_len - 1);
	cmesh__arena_free(peer);
	return 0;
}
