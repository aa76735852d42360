/* SPDX-License-Identifier: MIT */
/*
 * lane_bulk.c - trailing bytes too large for a ring record: out of line,
 * in a sealed memfd of their own (cmesh__lane_make_ool()), or, once the
 * lane has one, in its bulk arena beside the ring.
 *
 * The producer creates the arena (a memfd of BULK_SIZE bytes, sealed
 * against shrinking and growing, mapped read-write) with its first message
 * too large for the ring, and sends its fd once, with that message
 * (CMESH_REC_F_ARENA; the message's own trail still goes out of line).
 * From then on such a trail is copied into the arena and a BULK record in
 * the ring says where (shm/proto.h). The arena is a byte ring whose space
 * is tied to ring positions: each allocation remembers the ring tail after
 * its record, and is free again once the consumer's head (the one the ring
 * already publishes) has passed it, because a BULK record stays at the
 * head of the ring until its bytes are copied out. No word of the
 * consumer's is added, and a consumer that lies about its head only
 * spoils its own messages.
 *
 * A message takes this way when it has no fds or ports and is at most half
 * the arena. With no room (in the arena or the ring) it is spilled like
 * any record (lane_spill.c: a copy behind the ring, in order), and the flush
 * publishes it once the consumer has passed the allocation it waits for:
 * send never blocks, and order holds. All under the lane's `lock`.
 *
 * The consumer maps the arena read-only once (a second arena, a bad size
 * or missing seals are protocol errors), validates each BULK record's
 * range against the mapping, and copies the bytes out once, straight to
 * the caller. A producer that rewrites them meanwhile spoils only that
 * message's bytes.
 */
#include "lane.h"

#include "link.h"
#include "shmring.h"

#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BULK_SIZE (4u << 20)
#define BULK_ALIGN 64u
#define BULK_PENDING 64u /* allocations in flight at most */

_Static_assert((BULK_SIZE & (BULK_SIZE - 1)) == 0, "a power of two");
_Static_assert(BULK_SIZE >= CMESH_BULK_ARENA_MIN &&
		       BULK_SIZE <= CMESH_BULK_ARENA_MAX,
	       "within the protocol's bounds");

struct cmesh__lane_bulk {
	int fd; /* until sent with a message */
	unsigned char *map;
	uint64_t tail; /* bytes allocated, free-running */
	uint64_t head; /* bytes the consumer is done with */
	bool claimed;  /* a message carries the fd (F_ARENA), or did */
	/* Allocations in flight: ring tail after the record, arena end. */
	struct {
		uint64_t pos, end;
	} pend[BULK_PENDING];
	uint32_t pend_first, pend_n;
};

/* ---- producer ---- */

int cmesh__lane_make_ool(const void *trail, size_t len)
{
	int fd = memfd_create("cmesh-msg", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	size_t done = 0;
	int r;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, (const char *)trail + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			goto out_close;
		}
		done += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)) {
		r = -errno;
		goto out_close;
	}
	return fd;

out_close:
	close(fd);
	return r;
}

static int bulk_create(struct cmesh__lane_bulk **out)
{
	struct cmesh__lane_bulk *b = calloc(1, sizeof(*b));
	int r;

	if (!b)
		return -ENOMEM;
	b->fd = memfd_create("cmesh-bulk", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (b->fd < 0) {
		r = -errno;
		goto out_free;
	}
	if (ftruncate(b->fd, BULK_SIZE) ||
	    fcntl(b->fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		r = -errno;
		goto out_close;
	}
	b->map = mmap(NULL, BULK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		      b->fd, 0);
	if (b->map == MAP_FAILED) {
		r = -errno;
		goto out_close;
	}
	*out = b;
	return 0;

out_close:
	close(b->fd);
out_free:
	free(b);
	return r;
}

bool cmesh__lane_bulk_fits(size_t len)
{
	return len <= BULK_SIZE / 2;
}

/*
 * A lane that may carry an arena: not a reply port's kept for reuse (a
 * next use would meet the arena of the last, or not: one per use would
 * cost 4 MiB per reply), and with a ring of at least BULK_MIN_RING (a
 * oneshot's small ring: its rare large value goes out of line).
 */
#define BULK_MIN_RING (16u << 10)

static bool may_carry(const struct cmesh__lane *ln)
{
	return !ln->poolable &&
	       (ln->prod.mask + 1) * CMESH_SHM_SLOT_SIZE >= BULK_MIN_RING;
}

int cmesh__lane_bulk_arena_fd(struct cmesh__lane *ln)
{
	int fd, r = 0;

	if (!may_carry(ln))
		return -EPERM;
	pthread_mutex_lock(&ln->lock);
	if (!ln->bulk_out)
		r = bulk_create(&ln->bulk_out);
	/* One message at a time carries it: a second would be -EPROTO. */
	if (!r && ln->bulk_out->claimed)
		r = -EEXIST;
	if (!r) {
		fd = fcntl(ln->bulk_out->fd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			r = -errno;
		else
			ln->bulk_out->claimed = true;
	}
	pthread_mutex_unlock(&ln->lock);
	return r ? r : fd;
}

void cmesh__lane_bulk_arena_sent(struct cmesh__lane *ln, bool sent)
{
	pthread_mutex_lock(&ln->lock);
	if (sent) {
		close(ln->bulk_out->fd);
		ln->bulk_out->fd = -1;
		/* Pairs with cmesh__lane_bulk_ready(): BULK records follow
		 * the record that brings the arena. */
		atomic_store_explicit(&ln->bulk_ready, true,
				      memory_order_release);
	} else {
		ln->bulk_out->claimed = false; /* the next one tries */
	}
	pthread_mutex_unlock(&ln->lock);
}

/* Frees the allocations whose records the consumer's head has passed. */
static int reclaim(struct cmesh__lane *ln, struct cmesh__lane_bulk *b)
{
	uint64_t head;
	int r;

	if (!b->pend_n)
		return 0;
	r = cmesh__shmring_consumed(&ln->prod, &head);
	if (r)
		return r;
	while (b->pend_n && (int64_t)(head - b->pend[b->pend_first].pos) >= 0) {
		b->head = b->pend[b->pend_first].end;
		b->pend_first = (b->pend_first + 1) % BULK_PENDING;
		b->pend_n--;
	}
	if (!b->pend_n)
		b->head = b->tail; /* nothing in flight: the whole arena */
	return 0;
}

bool cmesh__lane_bulk_ready(const struct cmesh__lane *ln)
{
	return atomic_load_explicit(&ln->bulk_ready, memory_order_acquire);
}

int cmesh__lane_bulk_publish(struct cmesh__lane *ln, const void *msg,
			     const void *trail, size_t len, uint64_t *space_at)
{
	struct cmesh__lane_bulk *b = ln->bulk_out;
	struct cmesh_rec_bulk d = { 0 };
	struct cmesh__iov iov[2];
	uint64_t need = (len + BULK_ALIGN - 1) & ~(uint64_t)(BULK_ALIGN - 1);
	uint64_t off, skip;
	int r;

	r = reclaim(ln, b);
	if (r) {
		cmesh__link_fail(ln->link,
				 r); /* the consumer's head: -EPROTO */
		return r;
	}
	off = b->tail % BULK_SIZE;
	/* Contiguous: past the end, start over at 0 (the rest is skipped). */
	skip = off + need > BULK_SIZE ? BULK_SIZE - off : 0;
	if (b->pend_n == BULK_PENDING ||
	    b->tail + skip + need - b->head > BULK_SIZE) {
		/* Room comes back as the consumer passes the oldest. */
		*space_at = b->pend[b->pend_first].pos;
		return -EAGAIN;
	}
	off = (b->tail + skip) % BULK_SIZE;
	memcpy(b->map + off, trail, len);
	d.off = off;
	d.len = (uint32_t)len;
	iov[0] = (struct cmesh__iov){ msg, ln->type->size };
	iov[1] = (struct cmesh__iov){ &d, sizeof(d) };
	/* The caller holds `lock`, and looked at the seal (lane_send.c). */
	r = cmesh__shmring_pushv_forced(&ln->prod, CMESH_REC_BULK, iov, 2);
	if (r == -EAGAIN) {
		*space_at = cmesh__shmring_space_at(
			&ln->prod, ln->type->size + (uint32_t)sizeof(d));
		return r;
	}
	if (r) {
		if (r == -EPROTO) /* the consumer's head was corrupt */
			cmesh__link_fail(ln->link, -EPROTO);
		return r;
	}
	b->tail += skip + need;
	b->pend[(b->pend_first + b->pend_n) % BULK_PENDING].pos =
		cmesh__shmring_tail(&ln->prod);
	b->pend[(b->pend_first + b->pend_n) % BULK_PENDING].end = b->tail;
	b->pend_n++;
	cmesh__lane_signal(ln);
	return 0;
}

/* ---- consumer ---- */

int cmesh__lane_bulk_map(struct cmesh__lane *ln, int fd)
{
	int fl = fcntl(fd, F_GETFL), seals = fcntl(fd, F_GET_SEALS);
	struct stat st;
	void *p;
	int r = -EPROTO;

	if (ln->bulk_in || fl < 0 || (fl & O_PATH) ||
	    (fl & O_ACCMODE) == O_WRONLY || seals < 0 ||
	    (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
		    (F_SEAL_SHRINK | F_SEAL_GROW) ||
	    fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    st.st_size < CMESH_BULK_ARENA_MIN ||
	    st.st_size > CMESH_BULK_ARENA_MAX ||
	    (st.st_size & (st.st_size - 1)))
		goto out_close;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		r = -errno;
		goto out_close;
	}
	ln->bulk_in = p;
	ln->bulk_in_size = (uint64_t)st.st_size;
	r = 0;
out_close:
	close(fd);
	return r;
}

/*
 * The BULK record at the head of the ring (`pending` bytes): its range,
 * validated, or -EPROTO.
 */
static int bulk_desc(struct cmesh__lane *ln, struct cmesh_rec_bulk *d)
{
	const uint32_t msz = ln->type->size;

	if ((uint32_t)ln->pending != msz + sizeof(*d) || !ln->bulk_in)
		return -EPROTO;
	cmesh__shmring_read(&ln->cons, msz, d, sizeof(*d));
	if (d->reserved || d->len > ln->max_trail ||
	    d->off > ln->bulk_in_size || d->len > ln->bulk_in_size - d->off)
		return -EPROTO;
	return 0;
}

int cmesh__lane_bulk_len(struct cmesh__lane *ln)
{
	struct cmesh_rec_bulk d;

	return bulk_desc(ln, &d) ? -EPROTO : (int)d.len;
}

int cmesh__lane_bulk_deliver(struct cmesh__lane *ln, void *out_msg,
			     void *out_trail, size_t cap)
{
	struct cmesh_rec_bulk d;

	if (bulk_desc(ln, &d))
		return -EPROTO;
	if (d.len > cap)
		return -EMSGSIZE;
	cmesh__shmring_read(&ln->cons, 0, out_msg, ln->type->size);
	if (d.len)
		memcpy(out_trail, ln->bulk_in + d.off, d.len);
	cmesh__shmring_consume(&ln->cons);
	ln->pending = -1;
	return (int)d.len;
}

void cmesh__lane_bulk_free(struct cmesh__lane *ln)
{
	if (ln->bulk_out) {
		munmap(ln->bulk_out->map, BULK_SIZE);
		if (ln->bulk_out->fd >= 0)
			close(ln->bulk_out->fd);
		free(ln->bulk_out);
		ln->bulk_out = NULL;
	}
	if (ln->bulk_in) {
		munmap((void *)ln->bulk_in, ln->bulk_in_size);
		ln->bulk_in = NULL;
	}
}
