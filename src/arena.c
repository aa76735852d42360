/* SPDX-License-Identifier: MIT */
/*
 * arena.c - memfd arenas (layout in shm/ring.h).
 *
 * Own arena: memfd_create, ftruncate, mmap read-write, header, seal
 * (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) - all
 * before the fd is ever shared: our mapping is the only writable one
 * there will ever be, so a peer can map our arena read-only and no other
 * way.
 *
 * Peer arena: everything about the fd and its contents is untrusted. The
 * seals are checked before the size (once SHRINK and GROW are set the
 * size can no longer change, so the fstat size is the size for good and
 * a read-only mapping of exactly that size can never SIGBUS). The header
 * is read once: magic with acquire (pairs with the creator's release
 * store), then the other fields copied into a local, then validated.
 * Anything wrong about the peer's fd or header is -EPROTO. A peer's arena
 * is followed by an inaccessible guard page, so that a read past its end
 * (a bug) faults instead of reading whatever is mapped next.
 */
#include "arena.h"

#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008u /* Linux 6.3; older kernels: EINVAL */
#endif

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010 /* Linux 5.1 */
#endif

/*
 * FUTURE_WRITE: no new writable mapping, write() or hole punch by anyone,
 * the peer included (seals belong to the file, not the descriptor); our
 * own read-write mapping, made before, keeps working.
 */
#define OWN_SEALS                                                              \
	(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)
#define PEER_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

struct cmesh__arena {
	unsigned char *base;
	size_t map_len; /* what to munmap: the arena (+ guard if a peer's) */
	int fd;
	bool writable;
	struct cmesh__arena_layout layout;
};

/* The header after `magic`, as plain integers (what a peer copies out). */
struct hdr_copy {
	uint32_t abi_version;
	uint32_t hdr_size;
	uint64_t arena_size;
	uint64_t ctl_off;
	uint64_t ctl_len;
	uint64_t data_off;
	uint64_t data_len;
};

#define HDR_COPY_OFF offsetof(struct cmesh_shm_arena_hdr, abi_version)

static_assert(HDR_COPY_OFF + sizeof(struct hdr_copy) <=
		      sizeof(struct cmesh_shm_arena_hdr),
	      "hdr_copy inside the header");
static_assert(offsetof(struct hdr_copy, arena_size) + HDR_COPY_OFF ==
		      offsetof(struct cmesh_shm_arena_hdr, arena_size),
	      "hdr_copy mirrors the header");
static_assert(offsetof(struct hdr_copy, data_len) + HDR_COPY_OFF ==
		      offsetof(struct cmesh_shm_arena_hdr, data_len),
	      "hdr_copy mirrors the header");

static bool size_ok(uint64_t size)
{
	return size >= CMESH_SHM_ARENA_MIN_SIZE &&
	       size <= CMESH_SHM_ARENA_MAX_SIZE && size % CMESH_SHM_PAGE == 0 &&
	       (uint64_t)(size_t)size == size;
}

/*
 * Creator's layout policy (a peer reads the result from the header): the
 * control region fills the first pages after the header, one line per 2
 * KiB of arena (room for a consumer and a wake line per 4 KiB ring); the
 * data region is the rest.
 */
uint64_t cmesh__arena_data_off_for(uint64_t size)
{
	return cmesh_shm_align_up(
		sizeof(struct cmesh_shm_arena_hdr) + size / 32, CMESH_SHM_PAGE);
}

static void plan_layout(uint64_t size, struct cmesh__arena_layout *l)
{
	uint64_t ctl_end = cmesh__arena_data_off_for(size);

	l->size = size;
	l->ctl_off = sizeof(struct cmesh_shm_arena_hdr);
	l->ctl_len = ctl_end - l->ctl_off;
	l->data_off = ctl_end;
	l->data_len = size - ctl_end;
}

static int create_memfd(const char *name)
{
	int fd;

	fd = memfd_create(name,
			  MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
	if (fd < 0 && errno == EINVAL) /* kernel older than 6.3 */
		fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	return fd < 0 ? -errno : fd;
}

static void write_header(unsigned char *base,
			 const struct cmesh__arena_layout *l)
{
	struct cmesh_shm_arena_hdr *h = (struct cmesh_shm_arena_hdr *)base;

	h->abi_version = CMESH_SHM_ABI_VERSION;
	h->hdr_size = sizeof(*h);
	h->arena_size = l->size;
	h->ctl_off = l->ctl_off;
	h->ctl_len = l->ctl_len;
	h->data_off = l->data_off;
	h->data_len = l->data_len;
	h->reserved = 0;
	/* Last; pairs with the peer's acquire load in read_header(). */
	atomic_store_explicit(&h->magic, CMESH_SHM_ARENA_MAGIC,
			      memory_order_release);
}

int cmesh__arena_create(uint64_t size, const char *name,
			struct cmesh__arena **out)
{
	struct cmesh__arena *a;
	void *base;
	int r;

	if (!size_ok(size))
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	r = create_memfd(name ? name : "cmesh-arena");
	if (r < 0)
		goto out_free;
	a->fd = r;
	if (ftruncate(a->fd, (off_t)size) < 0) {
		r = -errno;
		goto out_close_fd;
	}
	base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED,
		    a->fd, 0);
	if (base == MAP_FAILED) {
		r = -errno;
		goto out_close_fd;
	}
	a->base = base;
	a->map_len = (size_t)size;
	a->writable = true;
	plan_layout(size, &a->layout);
	write_header(a->base, &a->layout);
	if (fcntl(a->fd, F_ADD_SEALS, OWN_SEALS) < 0) {
		r = -errno;
		goto out_unmap;
	}
	*out = a;
	return 0;

out_unmap:
	munmap(a->base, a->map_len);
out_close_fd:
	close(a->fd);
out_free:
	free(a);
	return r;
}

/* Seals first, then size: see the top of the file. */
static int check_peer_fd(int fd, uint64_t expected_size)
{
	struct stat st;
	int seals, fl;

	/*
	 * What the peer sent must be a readable memfd: an O_PATH or a
	 * write-only descriptor is its fault (-EPROTO), not ours (-EBADF,
	 * -EACCES).
	 */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno; /* not open: the caller's */
	if ((fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY)
		return -EPROTO;
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0) /* EINVAL: no memfd */
		return -EPROTO;
	if ((seals & PEER_SEALS) != PEER_SEALS)
		return -EPROTO;
	if (fstat(fd, &st) < 0)
		return -EPROTO;
	if (!S_ISREG(st.st_mode) || st.st_size < 0 ||
	    (uint64_t)st.st_size != expected_size || !size_ok(expected_size))
		return -EPROTO;
	return 0;
}

/* Copies the header out once and validates the copy. */
static int read_header(const unsigned char *base, uint64_t size,
		       struct cmesh__arena_layout *l)
{
	const struct cmesh_shm_arena_hdr *h =
		(const struct cmesh_shm_arena_hdr *)base;
	struct hdr_copy c;

	/* Pairs with the creator's release store in write_header(). */
	if (atomic_load_explicit(&h->magic, memory_order_acquire) !=
	    CMESH_SHM_ARENA_MAGIC)
		return -EPROTO;
	memcpy(&c, base + HDR_COPY_OFF, sizeof(c));
	/* Validate and use the copy only: no re-read of the shared bytes. */
	atomic_signal_fence(memory_order_seq_cst);
	if (c.abi_version != CMESH_SHM_ABI_VERSION ||
	    c.hdr_size != sizeof(*h) || c.arena_size != size)
		return -EPROTO;
	if (c.ctl_off % CMESH_SHM_LINE || c.ctl_len % CMESH_SHM_LINE ||
	    c.data_off % CMESH_SHM_PAGE || c.data_len % CMESH_SHM_PAGE)
		return -EPROTO;
	if (!cmesh_shm_range_ok(c.ctl_off, c.ctl_len, c.hdr_size, size) ||
	    !cmesh_shm_range_ok(c.data_off, c.data_len, c.ctl_off + c.ctl_len,
				size))
		return -EPROTO;
	l->size = size;
	l->ctl_off = c.ctl_off;
	l->ctl_len = c.ctl_len;
	l->data_off = c.data_off;
	l->data_len = c.data_len;
	return 0;
}

/* Maps `size` bytes of `fd` read-only, followed by a PROT_NONE page. */
static int map_guarded(int fd, uint64_t size, struct cmesh__arena *a)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (size_t)cmesh_shm_align_up(size, pg) + pg;
	void *res, *m;
	int r;

	res = mmap(NULL, len, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return -errno;
	m = mmap(res, (size_t)size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	if (m == MAP_FAILED) {
		r = -errno;
		munmap(res, len);
		return r;
	}
	a->base = m;
	a->map_len = len;
	return 0;
}

int cmesh__arena_map_peer(int fd, uint64_t expected_size,
			  struct cmesh__arena **out)
{
	struct cmesh__arena *a;
	int r;

	r = check_peer_fd(fd, expected_size);
	if (r)
		return r;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	r = map_guarded(fd, expected_size, a);
	if (r)
		goto out_free;
	r = read_header(a->base, expected_size, &a->layout);
	if (r)
		goto out_unmap;
	a->fd = fd;
	a->writable = false;
	*out = a;
	return 0;

out_unmap:
	munmap(a->base, a->map_len);
out_free:
	free(a);
	return r;
}

void cmesh__arena_free(struct cmesh__arena *a)
{
	if (!a)
		return;
	munmap(a->base, a->map_len);
	if (a->fd >= 0)
		close(a->fd);
	free(a);
}

void cmesh__arena_close_fd(struct cmesh__arena *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
}

int cmesh__arena_release_fd(struct cmesh__arena *a)
{
	int fd = a->fd;

	a->fd = -1;
	return fd;
}

uint64_t cmesh__arena_size_for(uint64_t cap)
{
	/*
	 * The data region starts past size / 32 + a header, so no size
	 * below (cap + 64) * 32 / 31 fits: start there, a page or two short.
	 */
	uint64_t size = (cap + 64) * 32 / 31 & ~(CMESH_SHM_PAGE - 1ull);

	if (size < CMESH_SHM_ARENA_MIN_SIZE)
		size = CMESH_SHM_ARENA_MIN_SIZE;
	while (size - cmesh__arena_data_off_for(size) < cap)
		size += CMESH_SHM_PAGE;
	return size;
}

uint64_t cmesh__arena_line_off(const struct cmesh__arena *a, uint32_t line)
{
	return a->layout.ctl_off + (uint64_t)line * CMESH_SHM_LINE;
}

int cmesh__arena_fd(const struct cmesh__arena *a)
{
	return a->fd;
}

void *cmesh__arena_base(const struct cmesh__arena *a)
{
	return a->base;
}

bool cmesh__arena_writable(const struct cmesh__arena *a)
{
	return a->writable;
}

const struct cmesh__arena_layout *
cmesh__arena_layout(const struct cmesh__arena *a)
{
	return &a->layout;
}

bool cmesh__arena_ctl_ok(const struct cmesh__arena *a, uint64_t off,
			 uint64_t len)
{
	const struct cmesh__arena_layout *l = &a->layout;

	return off % CMESH_SHM_LINE == 0 &&
	       cmesh_shm_range_ok(off, len, l->ctl_off,
				  l->ctl_off + l->ctl_len);
}

bool cmesh__arena_data_ok(const struct cmesh__arena *a, uint64_t off,
			  uint64_t len)
{
	const struct cmesh__arena_layout *l = &a->layout;

	return off % CMESH_SHM_LINE == 0 &&
	       cmesh_shm_range_ok(off, len, l->data_off,
				  l->data_off + l->data_len);
}
