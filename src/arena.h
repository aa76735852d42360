/* SPDX-License-Identifier: MIT */
/*
 * arena.h - memfd arenas: shared memory that one node owns and writes, and
 * that its peer maps read-only. Layout in shm/ring.h.
 */
#ifndef CMESH_ARENA_H
#define CMESH_ARENA_H

#include <stdbool.h>
#include <stdint.h>

struct cmesh__arena;

/* A validated copy of an arena header: plain integers, safe to use. */
struct cmesh__arena_layout {
	uint64_t size;
	uint64_t ctl_off;
	uint64_t ctl_len;
	uint64_t data_off;
	uint64_t data_len;
};

/*
 * Creates an arena of `size` bytes (a multiple of CMESH_SHM_PAGE, between
 * CMESH_SHM_ARENA_MIN_SIZE and CMESH_SHM_ARENA_MAX_SIZE, else -EINVAL):
 * a memfd (close-on-exec) named `name` (borrowed; NULL: "cmesh-arena"),
 * sized, mapped read-write, given a header (magic published last), and
 * sealed against shrinking, growing and further sealing. The memory after
 * the header is zero. Returns 0 and an owned arena in *out, or -errno with
 * nothing left behind.
 */
int cmesh__arena_create(uint64_t size, const char *name,
			struct cmesh__arena **out);

/* Where cmesh__arena_create() puts the data region of a `size` arena. */
uint64_t cmesh__arena_data_off_for(uint64_t size);

/*
 * Maps a peer's arena read-only. `fd` came from the peer and is untrusted:
 * it must be sealed against shrinking and growing, be exactly
 * `expected_size` bytes (the size the peer announced) and carry a valid
 * header, else -EPROTO. Other failures pass the syscall's -errno through.
 *
 * The mapping is followed by an inaccessible guard page (a read past the
 * end faults rather than reading a neighbouring mapping).
 *
 * Takes ownership of `fd` only on success (cmesh__arena_free() closes
 * it); on failure the caller still owns `fd` and nothing else is left.
 */
int cmesh__arena_map_peer(int fd, uint64_t expected_size,
			  struct cmesh__arena **out);

/* Smallest arena size whose data region holds `cap` bytes. */
uint64_t cmesh__arena_size_for(uint64_t cap);

/* Offset of control line number `line` (CMESH_PROTO_LINE_*). */
uint64_t cmesh__arena_line_off(const struct cmesh__arena *a, uint32_t line);

/*
 * Closes the memfd once it has been sent (or, for a peer's arena, once it
 * is mapped): the mapping stays, cmesh__arena_fd() returns -1 after.
 */
void cmesh__arena_close_fd(struct cmesh__arena *a);

/* The memfd, now the caller's (cmesh__arena_fd() returns -1 after). */
int cmesh__arena_release_fd(struct cmesh__arena *a);

/* Unmaps and closes. NULL is a no-op. */
void cmesh__arena_free(struct cmesh__arena *a);

/* The memfd; still owned by the arena (dup it to send or keep it). */
int cmesh__arena_fd(const struct cmesh__arena *a);

/*
 * Start of the mapping. Writable only if the arena is our own
 * (cmesh__arena_writable()); a peer's arena faults on a write.
 */
void *cmesh__arena_base(const struct cmesh__arena *a);

/* True for an arena from cmesh__arena_create(), false for a peer's. */
bool cmesh__arena_writable(const struct cmesh__arena *a);

/* The validated layout; lives as long as the arena. */
const struct cmesh__arena_layout *
cmesh__arena_layout(const struct cmesh__arena *a);

/*
 * True if [off, off + len) is inside the control region and `off` is
 * aligned to a control line (CMESH_SHM_LINE).
 */
bool cmesh__arena_ctl_ok(const struct cmesh__arena *a, uint64_t off,
			 uint64_t len);

/*
 * True if [off, off + len) is inside the data region and `off` is aligned
 * to a control line (CMESH_SHM_LINE).
 */
bool cmesh__arena_data_ok(const struct cmesh__arena *a, uint64_t off,
			  uint64_t len);

#endif
