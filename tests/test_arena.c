/* SPDX-License-Identifier: MIT */
/*
 * test_arena.c - memfd arenas: creation and sealing, mapping a peer's
 * arena, and refusing every malformed fd or header a peer could send.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cmesh.h>

#include "arena.h"
#include "ctl.h"
#include "ring.h"

#include "helpers/testutil.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(arena, .init = tu_suite_init, .fini = tu_suite_fini);

#define ARENA_SIZE (64u * 1024)
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#define ALL_SEALS                                                              \
	(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)

static int seals_of(int fd)
{
	int s = fcntl(fd, F_GET_SEALS);

	cr_assert_geq(s, 0, "F_GET_SEALS: %s", strerror(errno));
	return s;
}

/* A memfd of `size` bytes with `seals` added (0: none). */
static int raw_memfd(uint64_t size, int seals)
{
	int fd = memfd_create("test-raw", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	cr_assert_geq(fd, 0, "memfd_create: %s", strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)size), 0, "ftruncate: %s",
		     strerror(errno));
	if (seals)
		cr_assert_eq(fcntl(fd, F_ADD_SEALS, seals), 0,
			     "F_ADD_SEALS: %s", strerror(errno));
	return fd;
}

/* The permissions column of the /proc/self/maps line starting at addr. */
static void map_perms(const void *addr, char perms[5])
{
	FILE *f = fopen("/proc/self/maps", "re");
	unsigned long start, end;
	char line[512];
	bool found = false;

	cr_assert_not_null(f);
	while (!found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %4s", &start, &end, perms) == 3 &&
		    start == (unsigned long)addr)
			found = true;
	}
	fclose(f);
	cr_assert(found, "no mapping at %p", addr);
}

/* Maps a dup of `a`'s fd as a peer would; returns the result code. */
static int map_dup(const struct cmesh__arena *a, uint64_t size)
{
	struct cmesh__arena *peer = NULL;
	int fd = dup(cmesh__arena_fd(a));
	int r;

	cr_assert_geq(fd, 0);
	r = cmesh__arena_map_peer(fd, size, &peer);
	if (r == 0) {
		cmesh__arena_free(peer);
		cr_assert_not(tu_fd_is_open(fd), "free closes the taken fd");
	} else {
		cr_assert(tu_fd_is_open(fd), "a failed map leaves the fd");
		close(fd);
	}
	return r;
}

/*
 * Child: given our arena's fd, tries every way a peer could write it:
 * a writable shared mapping, a read-only one made writable, write(),
 * pwrite(), a hole punch. Exits 0 if each one is refused, else the number
 * of the first that went through.
 */
static int try_to_write(int fd)
{
	unsigned char *p;
	char c = 'x';

	p = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p != MAP_FAILED)
		return 1;
	p = mmap(NULL, ARENA_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return 2; /* reading must still work */
	if (mprotect(p, ARENA_SIZE, PROT_READ | PROT_WRITE) == 0)
		return 3;
	if (write(fd, &c, 1) >= 0)
		return 4;
	if (pwrite(fd, &c, 1, 4096) >= 0)
		return 5;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096,
		      4096) == 0)
		return 6;
	return 0;
}

/*
 * Nobody but its creator can write an arena, whatever it does with the
 * fd: a real second process, given the fd, is refused every way, while
 * the creator's own mapping keeps writing.
 */
Test(arena, a_peer_given_the_fd_cannot_write_our_arena)
{
	struct cmesh__arena *a;
	unsigned char *base;
	int st;
	pid_t pid;

	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "test", &a), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(try_to_write(cmesh__arena_fd(a)));
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "way %d of writing the arena went through",
		  WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	base = cmesh__arena_base(a);
	base[ARENA_SIZE - 1] = 7;
	cr_assert_eq(base[ARENA_SIZE - 1], 7);
	cmesh__arena_free(a);
}

Test(arena, create_seals_the_memfd_against_resizing_and_more_seals)
{
	struct cmesh__arena *a;
	int fd;

	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "test", &a), 0);
	fd = cmesh__arena_fd(a);
	cr_assert_eq(seals_of(fd) & ALL_SEALS, ALL_SEALS);
	cr_assert_eq(ftruncate(fd, ARENA_SIZE / 2), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(ftruncate(fd, ARENA_SIZE * 2), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	cr_assert(cmesh__arena_writable(a));
	cmesh__arena_free(a);
	cmesh__arena_free(NULL);
}

Test(arena, create_writes_a_complete_header_and_zeroes_the_rest)
{
	struct cmesh__arena *a;
	const struct cmesh_shm_arena_hdr *h;
	const struct cmesh__arena_layout *l;
	const unsigned char *p;

	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, NULL, &a), 0);
	h = cmesh__arena_base(a);
	l = cmesh__arena_layout(a);
	cr_assert_eq(atomic_load(&h->magic), CMESH_SHM_ARENA_MAGIC);
	cr_assert_eq(h->abi_version, CMESH_SHM_ABI_VERSION);
	cr_assert_eq(h->hdr_size, sizeof(*h));
	cr_assert_eq(h->arena_size, ARENA_SIZE);
	cr_assert_eq(h->ctl_off, l->ctl_off);
	cr_assert_eq(h->ctl_len, l->ctl_len);
	cr_assert_eq(h->data_off, l->data_off);
	cr_assert_eq(h->data_len, l->data_len);
	cr_assert_geq(l->ctl_off, sizeof(*h));
	cr_assert_geq(l->ctl_len, CMESH_SHM_LINE);
	cr_assert_eq(l->data_off % CMESH_SHM_PAGE, 0);
	cr_assert_geq(l->data_off, l->ctl_off + l->ctl_len);
	cr_assert_eq(l->data_off + l->data_len, ARENA_SIZE);
	p = cmesh__arena_base(a);
	for (size_t i = sizeof(*h); i < ARENA_SIZE; i++)
		cr_assert_eq(p[i], 0, "byte %zu", i);
	cmesh__arena_free(a);
}

Test(arena, create_rejects_sizes_that_are_not_whole_pages_or_out_of_range)
{
	struct cmesh__arena *a = NULL;
	const uint64_t bad[] = { 0,
				 CMESH_SHM_PAGE,
				 CMESH_SHM_ARENA_MIN_SIZE + 1,
				 CMESH_SHM_ARENA_MIN_SIZE + 64,
				 CMESH_SHM_ARENA_MAX_SIZE + CMESH_SHM_PAGE,
				 UINT64_MAX };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		TU_ASSERT_RC(cmesh__arena_create(bad[i], "bad", &a), -EINVAL);
	cr_assert_null(a);
	TU_ASSERT_RC(cmesh__arena_create(CMESH_SHM_ARENA_MIN_SIZE, "min", &a),
		     0);
	cr_assert_geq(cmesh__arena_layout(a)->data_len, CMESH_SHM_PAGE);
	cmesh__arena_free(a);
}

Test(arena, map_peer_maps_a_valid_arena_read_only_with_a_guard_page)
{
	struct cmesh__arena *a, *peer;
	const struct cmesh__arena_layout *la, *lp;
	char perms[5];
	int fd;

	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "test", &a), 0);
	memcpy((char *)cmesh__arena_base(a) + cmesh__arena_layout(a)->data_off,
	       "hello", 5);
	fd = dup(cmesh__arena_fd(a));
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, ARENA_SIZE, &peer), 0);
	cr_assert_eq(cmesh__arena_fd(peer), fd);
	cr_assert_not(cmesh__arena_writable(peer));
	la = cmesh__arena_layout(a);
	lp = cmesh__arena_layout(peer);
	cr_assert_eq(memcmp(la, lp, sizeof(*la)), 0);
	cr_assert_eq(memcmp((char *)cmesh__arena_base(peer) + lp->data_off,
			    "hello", 5),
		     0);
	map_perms(cmesh__arena_base(peer), perms);
	cr_assert_str_eq(perms, "r--s");
	/* A guard page right after it. */
	map_perms((char *)cmesh__arena_base(peer) + ARENA_SIZE, perms);
	cr_assert_str_eq(perms, "---p");
	map_perms(cmesh__arena_base(a), perms);
	cr_assert_str_eq(perms, "rw-s");
	cmesh__arena_free(peer);
	cr_assert_not(tu_fd_is_open(fd));
	cmesh__arena_free(a);
}

Test(arena, map_peer_rejects_a_memfd_smaller_than_the_announced_size)
{
	struct cmesh__arena *big;
	struct cmesh__arena *peer = NULL;
	int fd;

	/* A small sealed memfd carrying the header of a 1 MiB arena. */
	TU_ASSERT_RC(cmesh__arena_create(1u << 20, "big", &big), 0);
	fd = raw_memfd(CMESH_SHM_ARENA_MIN_SIZE, 0);
	cr_assert_eq(pwrite(fd, cmesh__arena_base(big),
			    sizeof(struct cmesh_shm_arena_hdr), 0),
		     (ssize_t)sizeof(struct cmesh_shm_arena_hdr));
	cr_assert_eq(fcntl(fd, F_ADD_SEALS, ALL_SEALS), 0);

	/* Announced as big: the size check refuses it before any mmap. */
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, 1u << 20, &peer), -EPROTO);
	/* Announced as what it is: the header's arena_size disagrees. */
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, CMESH_SHM_ARENA_MIN_SIZE, &peer),
		     -EPROTO);
	/* Smaller than a header. */
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, 8, &peer), -EPROTO);
	cr_assert_null(peer);
	cr_assert(tu_fd_is_open(fd));
	close(fd);

	/* Empty and too small to hold a header at all. */
	fd = raw_memfd(0, ALL_SEALS);
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, 0, &peer), -EPROTO);
	close(fd);
	fd = raw_memfd(32, ALL_SEALS);
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, 32, &peer), -EPROTO);
	close(fd);
	cmesh__arena_free(big);
}

Test(arena, map_peer_rejects_a_memfd_without_shrink_and_grow_seals)
{
	const int cases[] = { 0, F_SEAL_SHRINK, F_SEAL_GROW,
			      F_SEAL_SEAL | F_SEAL_WRITE };
	struct cmesh__arena *good, *peer = NULL;

	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "good", &good), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* A valid header and size: only the seals are missing. */
		int fd = raw_memfd(ARENA_SIZE, 0);

		cr_assert_eq(pwrite(fd, cmesh__arena_base(good), ARENA_SIZE, 0),
			     ARENA_SIZE);
		if (cases[i])
			cr_assert_eq(fcntl(fd, F_ADD_SEALS, cases[i]), 0);
		TU_ASSERT_RC(cmesh__arena_map_peer(fd, ARENA_SIZE, &peer),
			     -EPROTO);
		cr_assert_null(peer);
		cr_assert(tu_fd_is_open(fd));
		/* Add what was missing (if still allowed): now it is fine. */
		if (!(cases[i] & F_SEAL_SEAL)) {
			cr_assert_eq(fcntl(fd, F_ADD_SEALS,
					   F_SEAL_SHRINK | F_SEAL_GROW),
				     0);
			TU_ASSERT_RC(cmesh__arena_map_peer(fd, ARENA_SIZE,
							   &peer),
				     0);
			cmesh__arena_free(peer);
			peer = NULL;
		} else {
			close(fd);
		}
	}
	cmesh__arena_free(good);
}

Test(arena, map_peer_rejects_fds_that_are_not_memfds)
{
	struct cmesh__arena *peer = NULL;
	int p[2], fd;

	tu_pipe(p);
	TU_ASSERT_RC(cmesh__arena_map_peer(p[0], ARENA_SIZE, &peer), -EPROTO);
	close(p[0]);
	close(p[1]);
	fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, ARENA_SIZE, &peer), -EPROTO);
	close(fd);
	TU_ASSERT_RC(cmesh__arena_map_peer(fd, ARENA_SIZE, &peer), -EBADF);
	cr_assert_null(peer);
}

/* A change to one header field. */
struct field_set {
	size_t off;   /* offset of the field in the header */
	size_t width; /* 4 or 8; 0: no change */
	uint64_t value;
};

/* A corruption of an otherwise valid header: one or two field changes. */
struct mutation {
	const char *what;
	struct field_set set[2];
};

#define SET(f, v)                                                              \
	{                                                                      \
		offsetof(struct cmesh_shm_arena_hdr, f),                       \
			sizeof(((struct cmesh_shm_arena_hdr *)0)->f), (v)      \
	}

static void apply(unsigned char *base, const struct field_set *f)
{
	uint32_t v32 = (uint32_t)f->value;

	if (f->width == 4)
		memcpy(base + f->off, &v32, 4);
	else if (f->width == 8)
		memcpy(base + f->off, &f->value, 8);
}

Test(arena, map_peer_rejects_every_kind_of_corrupt_header_field)
{
	struct cmesh__arena *a;
	struct cmesh_shm_arena_hdr saved;
	const struct cmesh__arena_layout *l;
	unsigned char *base;

	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "test", &a), 0);
	base = cmesh__arena_base(a);
	l = cmesh__arena_layout(a);
	const uint64_t ctl_end = l->ctl_off + l->ctl_len;
	const uint64_t pg = CMESH_SHM_PAGE;
	/* Each one fails exactly one check (alignment, range, ...). */
	const struct mutation m[] = {
		{ "magic 0", { SET(magic, 0) } },
		{ "magic+1", { SET(magic, CMESH_SHM_ARENA_MAGIC + 1) } },
		{ "version 0", { SET(abi_version, 0) } },
		{ "version 2",
		  { SET(abi_version, CMESH_SHM_ABI_VERSION + 1) } },
		{ "hdr_size 0", { SET(hdr_size, 0) } },
		{ "hdr_size 32", { SET(hdr_size, 32) } },
		{ "hdr_size 128", { SET(hdr_size, 128) } },
		{ "hdr_size max", { SET(hdr_size, UINT32_MAX) } },
		{ "arena_size +page", { SET(arena_size, ARENA_SIZE + pg) } },
		{ "arena_size -page", { SET(arena_size, ARENA_SIZE - pg) } },
		{ "ctl_off 0 (over the header)", { SET(ctl_off, 0) } },
		{ "ctl_off misaligned",
		  { SET(ctl_off, l->ctl_off + 8),
		    SET(ctl_len, l->ctl_len - 64) } },
		{ "ctl_off past the end", { SET(ctl_off, ARENA_SIZE + 64) } },
		{ "ctl_off wraps", { SET(ctl_off, UINT64_MAX - 63) } },
		{ "ctl_len misaligned", { SET(ctl_len, l->ctl_len - 8) } },
		{ "ctl_len into data", { SET(ctl_len, l->ctl_len + 64) } },
		{ "ctl_len wraps", { SET(ctl_len, UINT64_MAX - 63) } },
		{ "data_off misaligned",
		  { SET(data_off, l->data_off + 64),
		    SET(data_len, l->data_len - pg) } },
		{ "data_off into ctl", { SET(data_off, ctl_end - pg) } },
		{ "data_off 0", { SET(data_off, 0) } },
		{ "data_off wraps", { SET(data_off, UINT64_MAX - pg + 1) } },
		{ "data_len past the end",
		  { SET(data_len, l->data_len + pg) } },
		{ "data_len misaligned", { SET(data_len, l->data_len - 64) } },
		{ "data_len wraps", { SET(data_len, UINT64_MAX - pg + 1) } },
	};

	cr_assert_eq(ctl_end % pg, 0);
	TU_ASSERT_RC(map_dup(a, ARENA_SIZE), 0);
	memcpy(&saved, base, sizeof(saved));
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		int r;

		apply(base, &m[i].set[0]);
		apply(base, &m[i].set[1]);
		r = map_dup(a, ARENA_SIZE);
		cr_assert_eq(r, -EPROTO, "%s: %d", m[i].what, r);
		memcpy(base, &saved, sizeof(saved));
		TU_ASSERT_RC(map_dup(a, ARENA_SIZE), 0);
	}
	cmesh__arena_free(a);
}

Test(arena, map_peer_rejects_garbage_headers)
{
	uint64_t rng = 0x243f6a8885a308d3ull;
	unsigned char buf[sizeof(struct cmesh_shm_arena_hdr)];
	struct cmesh__arena *peer = NULL;
	int fd = raw_memfd(ARENA_SIZE, F_SEAL_SHRINK | F_SEAL_GROW);

	for (int i = 0; i < 2000; i++) {
		for (size_t j = 0; j < sizeof(buf); j += 8) {
			uint64_t x = tu_rand(&rng);

			memcpy(buf + j, &x, 8);
		}
		/* Half of them with a valid magic, to reach the fields. */
		if (i % 2) {
			uint64_t magic = CMESH_SHM_ARENA_MAGIC;

			memcpy(buf, &magic, 8);
		}
		cr_assert_eq(pwrite(fd, buf, sizeof(buf), 0),
			     (ssize_t)sizeof(buf));
		TU_ASSERT_RC(cmesh__arena_map_peer(fd, ARENA_SIZE, &peer),
			     -EPROTO);
	}
	cr_assert_null(peer);
	close(fd);
}

Test(arena, leaves_fd_and_mapping_counts_as_they_were)
{
	struct cmesh__arena *a, *peer;
	int fds, maps, fd;

	/* Warm up whatever the allocator maps on first use. */
	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "warm", &a), 0);
	TU_ASSERT_RC(map_dup(a, ARENA_SIZE), 0);
	cmesh__arena_free(a);

	fds = tu_fd_count();
	maps = tu_map_count();
	for (int i = 0; i < 50; i++) {
		TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "count", &a), 0);
		fd = dup(cmesh__arena_fd(a));
		TU_ASSERT_RC(cmesh__arena_map_peer(fd, ARENA_SIZE, &peer), 0);
		/* Failures at each step leave nothing behind either. */
		TU_ASSERT_RC(map_dup(a, ARENA_SIZE * 2), -EPROTO);
		atomic_store(
			&((struct cmesh_shm_arena_hdr *)cmesh__arena_base(a))
				 ->magic,
			0);
		TU_ASSERT_RC(map_dup(a, ARENA_SIZE), -EPROTO);
		cmesh__arena_free(peer);
		cmesh__arena_free(a);
	}
	cr_assert_eq(tu_fd_count(), fds);
	cr_assert_eq(tu_map_count(), maps);
}

/* ---- placement: both sides map an arena at one address ---- */

/* Arenas are placed on x86-64 only (arena.c). */
#if defined(__x86_64__)
#define NEEDS_PLACEMENT() ((void)0)
#else
#define NEEDS_PLACEMENT() cr_skip_test("arenas are placed on x86-64 only")
#endif

/* The `va` word of `a`'s header (ours: we may rewrite it, as a peer may). */
static uint64_t *va_word(struct cmesh__arena *a)
{
	return &((struct cmesh_shm_arena_hdr *)cmesh__arena_base(a))->va;
}

/* True if [p, p + len) has any page mapped here. */
static bool mapped(const void *p, size_t len)
{
	unsigned char v;

	for (size_t off = 0; off < len; off += 4096)
		if (mincore((char *)p + off, 1, &v) == 0 || errno != ENOMEM)
			return true;
	return false;
}

/*
 * Child: receives an arena's fd on `sock`, maps it as a peer, and answers
 * the address it got and the first data word it read there.
 */
static int child_maps(int sock)
{
	struct cmesh__arena *peer;
	uint64_t out[2];
	int fd = -1;
	uint32_t n = 0;
	char c;

	if (cmesh__ctl_recv(sock, &c, 1, &fd, 1, &n) != 1 || n != 1)
		return 1;
	if (cmesh__arena_map_peer(fd, ARENA_SIZE, &peer))
		return 2;
	out[0] = (uint64_t)(uintptr_t)cmesh__arena_base(peer);
	memcpy(&out[1],
	       (char *)cmesh__arena_base(peer) +
		       cmesh__arena_layout(peer)->data_off,
	       sizeof(out[1]));
	if (cmesh__ctl_send(sock, out, sizeof(out), NULL, 0))
		return 3;
	cmesh__arena_free(peer);
	return 0;
}

static void reap_ok(pid_t pid)
{
	int st;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x",
		  st);
}

/*
 * A process that did not inherit our mapping maps our arena at the very
 * address we do (the header says where), and reads what we wrote there.
 */
Test(arena, a_peer_process_maps_our_arena_where_we_do)
{
	struct cmesh__arena *a;
	uint64_t got[2], mark = 0x5eed5eed5eedull;
	int sv[2], fd;
	uint32_t n = 0;
	pid_t pid;
	char c = 'a';

	NEEDS_PLACEMENT();
	TU_ASSERT_RC(cmesh__ctl_socketpair(sv), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		_exit(child_maps(sv[1]));
	}
	close(sv[1]);
	/* Made after the fork: the child has nothing at its address. */
	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "placed", &a), 0);
	cr_assert_eq(*va_word(a), (uint64_t)(uintptr_t)cmesh__arena_base(a));
	memcpy((char *)cmesh__arena_base(a) + cmesh__arena_layout(a)->data_off,
	       &mark, sizeof(mark));
	fd = cmesh__arena_fd(a);
	TU_ASSERT_RC(cmesh__ctl_send(sv[0], &c, 1, &fd, 1), 0);
	TU_ASSERT_RC(cmesh__ctl_recv(sv[0], got, sizeof(got), NULL, 0, &n),
		     (int)sizeof(got));
	reap_ok(pid);
	cr_assert_eq(got[0], *va_word(a), "the peer mapped it at %#llx, not %p",
		     (unsigned long long)got[0], cmesh__arena_base(a));
	cr_assert_eq(got[1], mark);
	close(sv[0]);
	cmesh__arena_free(a);
	cr_assert_not(mapped((void *)(uintptr_t)got[0], ARENA_SIZE),
		      "free unmaps the placed arena");
}

/*
 * A child of fork() places its arenas in a window of its own: not where
 * its parent's next arena goes (its peer would find that place taken).
 */
Test(arena, a_forked_child_places_its_arenas_apart_from_its_parents)
{
	struct cmesh__arena *a, *b;
	uint64_t child_base = 0;
	int p[2], st;
	pid_t pid;

	NEEDS_PLACEMENT();
	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "before", &a), 0);
	tu_pipe(p);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct cmesh__arena *c;
		uint64_t v;

		if (cmesh__arena_create(ARENA_SIZE, "child", &c))
			_exit(1);
		v = (uint64_t)(uintptr_t)cmesh__arena_base(c);
		_exit(write(p[1], &v, sizeof(v)) == sizeof(v) ? 0 : 2);
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &child_base, sizeof(child_base)),
		     (ssize_t)sizeof(child_base));
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(p[0]);
	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "after", &b), 0);
	cr_assert_eq(*va_word(b), (uint64_t)(uintptr_t)cmesh__arena_base(b));
	cr_assert_neq(child_base, *va_word(b),
		      "child and parent placed an arena at one address");
	cmesh__arena_free(b);
	cmesh__arena_free(a);
}

/*
 * The header's address is a hint a peer may forge: where it names a range
 * already mapped here, or no valid place, the arena is mapped elsewhere,
 * reads the same, and nothing of ours is touched.
 */
Test(arena, map_peer_maps_elsewhere_what_a_forged_or_taken_address_names)
{
	struct cmesh__arena *a, *peer;
	const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char *own, *sentinel;
	uint64_t bad[6];
	int maps;

	NEEDS_PLACEMENT();
	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "forged", &a), 0);
	own = cmesh__arena_base(a);
	memcpy(own + cmesh__arena_layout(a)->data_off, "placed", 6);
	/*
	 * A mapping of ours where a forged hint points: 16 MiB past our
	 * arena, inside the placement window as our arena is.
	 */
	sentinel =
		mmap(own + (16u << 20), 4 * ARENA_SIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	cr_assert_eq(sentinel, own + (16u << 20), "mmap: %s", strerror(errno));
	memset(sentinel, 0xa5, 4 * ARENA_SIZE);
	bad[0] = (uint64_t)(uintptr_t)own; /* ours: taken in this process */
	bad[1] = (uint64_t)(uintptr_t)sentinel;
	bad[2] = (uint64_t)(uintptr_t)sentinel + 2 * ARENA_SIZE;
	bad[3] = (uint64_t)(uintptr_t)own + 1;	   /* not page aligned */
	bad[4] = 0xffff800000000000ull;		   /* kernel space */
	bad[5] = UINT64_MAX & ~(uint64_t)(pg - 1); /* wraps with the length */
	maps = tu_map_count();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		*va_word(a) = bad[i];
		TU_ASSERT_RC(cmesh__arena_map_peer(dup(cmesh__arena_fd(a)),
						   ARENA_SIZE, &peer),
			     0);
		cr_assert_neq((uint64_t)(uintptr_t)cmesh__arena_base(peer),
			      bad[i], "hint %zu", i);
		cr_assert_eq(memcmp((char *)cmesh__arena_base(peer) +
					    cmesh__arena_layout(peer)->data_off,
				    "placed", 6),
			     0);
		cmesh__arena_free(peer);
		for (size_t k = 0; k < 4 * ARENA_SIZE; k++)
			cr_assert_eq(sentinel[k], 0xa5, "hint %zu, byte %zu", i,
				     k);
		cr_assert_eq(memcmp(own + cmesh__arena_layout(a)->data_off,
				    "placed", 6),
			     0);
	}
	cr_assert_eq(tu_map_count(), maps);
	munmap(sentinel, 4 * ARENA_SIZE);
	cmesh__arena_free(a);
}

/*
 * A free, page-aligned range of `len` bytes inside the placement window's
 * bounds (mapped once to find it, then let go).
 */
static uint64_t free_place(size_t len)
{
	void *p = tu_map_in_window(len, PROT_NONE);

	munmap(p, len);
	return (uint64_t)(uintptr_t)p;
}

/* Maps `a` as a peer with its header naming `at`; returns the address. */
static uint64_t peer_at(struct cmesh__arena *a, uint64_t at)
{
	struct cmesh__arena *peer;
	uint64_t got;

	*va_word(a) = at;
	TU_ASSERT_RC(cmesh__arena_map_peer(dup(cmesh__arena_fd(a)), ARENA_SIZE,
					   &peer),
		     0);
	got = (uint64_t)(uintptr_t)cmesh__arena_base(peer);
	cmesh__arena_free(peer);
	return got;
}

Test(arena, map_peer_maps_where_the_header_says_when_that_is_free)
{
	struct cmesh__arena *a;
	uint64_t at;

	NEEDS_PLACEMENT();
	tu_env_clear();
	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "hinted", &a), 0);
	at = free_place(2 * ARENA_SIZE);
	cr_assert_eq(peer_at(a, at), at);
	cmesh__arena_free(a);
}

/* CMESH_SHM_PLACE=0: the same free place is not taken. */
Test(arena, with_shm_place_0_map_peer_ignores_the_header_address)
{
	struct cmesh__arena *a;
	uint64_t at;

	tu_env_clear();
	cr_assert_eq(setenv("CMESH_SHM_PLACE", "0", 1), 0);
	TU_ASSERT_RC(cmesh__arena_create(ARENA_SIZE, "unplaced", &a), 0);
	at = free_place(2 * ARENA_SIZE);
	cr_assert_neq(peer_at(a, at), at);
	cmesh__arena_free(a);
}

#define RACERS 8
#define RACE_ROUNDS 400

static pthread_barrier_t race_gate;

/* A racer: its arena's base, or NULL if the create failed. */
static void *race_create(void *arg)
{
	struct cmesh__arena **out = arg;

	pthread_barrier_wait(&race_gate);
	if (cmesh__arena_create(ARENA_SIZE, "race", out))
		*out = NULL;
	return NULL;
}

/*
 * Child: RACERS threads make the process's first arenas at once. Exits 0
 * if every one is placed where its header says, inside the placement
 * window's bounds, 1 + the racer's number if not.
 */
static int race_child(void)
{
	struct cmesh__arena *a[RACERS];
	pthread_t t[RACERS];
	int bad = 0;

	if (pthread_barrier_init(&race_gate, NULL, RACERS))
		return 100;
	for (int i = 0; i < RACERS; i++)
		if (pthread_create(&t[i], NULL, race_create, &a[i]))
			return 100; /* the others wait at the gate: exit */
	for (int i = 0; i < RACERS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&race_gate);
	for (int i = 0; i < RACERS && !bad; i++)
		if (!a[i] ||
		    *va_word(a[i]) !=
			    (uint64_t)(uintptr_t)cmesh__arena_base(a[i]) ||
		    *va_word(a[i]) < 0x200000000000ull ||
		    *va_word(a[i]) >= 0x5f0000000000ull)
			bad = 1 + i;
	return bad;
}

/*
 * The first arenas of a process, made by several threads at once, all go
 * in its window: none at the address a window base read before another
 * thread set it would give (0 plus an offset, which root may map).
 */
Test(arena, threads_racing_to_make_a_processs_first_arenas_all_place_them)
{
	uint64_t rounds = tu_stress(RACE_ROUNDS, 100);

	NEEDS_PLACEMENT();
	for (uint64_t round = 0; round < rounds; round++) {
		int st;
		pid_t pid = fork();

		cr_assert_geq(pid, 0);
		if (pid == 0)
			_exit(race_child());
		cr_assert_eq(waitpid(pid, &st, 0), pid);
		cr_assert(!WIFEXITED(st) || WEXITSTATUS(st) != 100,
			  "round %llu: the child could not start its threads",
			  (unsigned long long)round);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
			  "round %llu: racer %d's arena misplaced (status %#x)",
			  (unsigned long long)round,
			  WIFEXITED(st) ? WEXITSTATUS(st) - 1 : -1, st);
	}
}
