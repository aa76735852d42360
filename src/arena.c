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
 *
 * Placement: both sides map an arena at the same virtual address when they
 * can. AMD's L1 data cache finds a line by a hash of its virtual address
 * (the way predictor's utag), so one physical line reached through two
 * addresses by two hardware threads of one core is a miss for each in
 * turn (x86-64 only: elsewhere arenas go anywhere). An own arena goes at
 * the next place of this process's window, a randomly placed range of
 * PLACE_SPAN bytes inside [PLACE_LO, PLACE_HI) (each process has its own,
 * so a peer's arenas are unlikely to collide with ours), and its header
 * says where (`va`). A peer reads that word with pread() before mapping,
 * and maps there if the word is in [PLACE_LO, PLACE_HI), page aligned, and
 * the range (guard page included) is free here (MAP_FIXED_NOREPLACE);
 * anywhere, as before, otherwise. The word is untrusted and only ever a
 * hint: it never replaces a mapping, and it tells the peer nothing but
 * where its own memory sits here.
 */
#include "arena.h"

#include "env.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
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

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* Linux 4.17; older: a plain hint */
#endif

/*
 * The placement window's bounds: inside x86-64's 47-bit user space, away
 * from the heap (low), the mmap area and stacks (top down from 0x7f...),
 * and AddressSanitizer's shadow (below 0x10007fff8000) and allocator
 * (0x600000000000 up).
 */
#define PLACE_LO 0x200000000000ull
#define PLACE_HI 0x5f0000000000ull
#define PLACE_SPAN (64ull << 30)
#define PLACE_TRIES 4

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

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/*
 * This process's window: [base, base + PLACE_SPAN), `cursor` an offset in
 * it. `pid` says whose: a child of fork() takes a window of its own, or
 * its arenas would go where its parent's go.
 */
static _Atomic uint64_t place_base;
static _Atomic uint64_t place_cursor;
static _Atomic pid_t place_pid;

static uint64_t window_base(void)
{
	pid_t pid = getpid();
	uint64_t b, r, want;

	/*
	 * The base only after the pid: a base read first may be the one
	 * from before another thread's CAS and pid store (0, or the
	 * parent's).
	 */
	if (atomic_load_explicit(&place_pid, memory_order_acquire) == pid)
		return atomic_load_explicit(&place_base, memory_order_relaxed);
	b = atomic_load_explicit(&place_base, memory_order_relaxed);
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint64_t)pid * 0x9e3779b97f4a7c15ull ^
		    (uint64_t)(uintptr_t)&r;
	want = PLACE_LO + r % (((PLACE_HI - PLACE_LO - PLACE_SPAN) >> 30) + 1) *
				  (1ull << 30);
	/* Two threads may both pick one: either's window does. */
	if (!atomic_compare_exchange_strong(&place_base, &b, want))
		return b; /* another thread's, just stored */
	atomic_store_explicit(&place_pid, pid, memory_order_release);
	return want;
}

/*
 * The address for a new own arena of `len` bytes (with a page's gap after
 * it, which the peer's guard page takes): the window's next `len + page`
 * bytes, from its start again once past its end.
 */
static uint64_t next_place(size_t len)
{
	uint64_t step = len + page_size();
	uint64_t off = atomic_fetch_add_explicit(&place_cursor, step,
						 memory_order_relaxed);

	off %= PLACE_SPAN;
	if (off + step > PLACE_SPAN)
		off = 0;
	return window_base() + off;
}

/*
 * mmap() at `want` if that range is free (never over a mapping): the
 * mapping, or MAP_FAILED with errno.
 */
static void *map_at(uint64_t want, size_t len, int prot, int flags, int fd)
{
	void *m;

	m = mmap((void *)(uintptr_t)want, len, prot,
		 flags | MAP_FIXED_NOREPLACE, fd, 0);
	if (m != MAP_FAILED && (uintptr_t)m != want) {
		munmap(m, len); /* a kernel older than 4.17 took it as a hint */
		m = MAP_FAILED;
		errno = EEXIST;
	}
	return m;
}

/*
 * ThreadSanitizer and MemorySanitizer keep their own fixed layouts of the
 * address space and refuse a mapping outside the ranges they give the
 * application: in a process they run in (their runtime is linked into the
 * program, whatever built this file), arenas go where the kernel puts
 * them. AddressSanitizer's layout leaves the window free.
 */
extern void __tsan_init(void) __attribute__((weak));
extern void __msan_init(void) __attribute__((weak));

/*
 * CMESH_SHM_PLACE, on x86-64 (the window's bounds are its 47-bit user
 * space's), without TSan or MSan. A bad environment: no placement (the
 * call fails anyway).
 */
static bool placing(void)
{
#if defined(__x86_64__)
	const cmesh_env *env;

	if (__tsan_init || __msan_init)
		return false;
	return cmesh__env_get(&env) == 0 && env->shm_place;
#else
	return false;
#endif
}

/* Our own arena's mapping: in the window if it can, else anywhere. */
static void *map_own(int fd, size_t size)
{
	void *m;

	/*
	 * Taken places (EEXIST) try the next; any other refusal (an address
	 * space smaller than the window, a tool that refuses the flag) ends
	 * the tries: the kernel's address then, whose failure is the call's.
	 */
	for (int i = 0; i < PLACE_TRIES && placing(); i++) {
		uint64_t at = next_place(size);

		/* Never outside the window (address 0 maps, for root). */
		if (at < PLACE_LO || size > PLACE_HI - at)
			break;
		m = map_at(at, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
		if (m != MAP_FAILED)
			return m;
		if (errno != EEXIST)
			break;
	}
	return mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
}

/*
 * The reservation for a peer's arena: `len` bytes at the address its
 * header names, if that is a valid place and free here, else anywhere.
 */
static void *reserve_peer(int fd, size_t len)
{
	uint64_t va;
	void *m;

	if (pread(fd, &va, sizeof(va),
		  offsetof(struct cmesh_shm_arena_hdr, va)) == sizeof(va) &&
	    va >= PLACE_LO && va < PLACE_HI && len <= PLACE_HI - va &&
	    va % page_size() == 0 && placing()) {
		m = map_at(va, len, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
		if (m != MAP_FAILED)
			return m;
	}
	return mmap(NULL, len, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

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
	h->va = (uint64_t)(uintptr_t)base;
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
	base = map_own(a->fd, (size_t)size);
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
	size_t pg = page_size();
	size_t len = (size_t)cmesh_shm_align_up(size, pg) + pg;
	void *res, *m;
	int r;

	res = reserve_peer(fd, len);
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
