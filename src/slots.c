/* SPDX-License-Identifier: MIT */
/*
 * slots.c - zeroed ring storage: the heap for small rings, anonymous
 * mappings for the rest, and a pool of reset mappings (see slots.h).
 */
#include "slots.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS_ALIGN 128u
#define THP_SIZE (2u << 20)
#define PAGE 4096u /* a slot touches at most stride + PAGE bytes of pages */

struct pooled {
	void *p;
	uint64_t bytes;
	uint32_t stride;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static struct pooled pool[CMESH__SLOTS_POOL_MAX];
static unsigned pool_n;

static void fork_prepare(void)
{
	pthread_mutex_lock(&pool_lock);
}

static void fork_release(void)
{
	pthread_mutex_unlock(&pool_lock);
}

static void pool_init(void)
{
	pthread_atfork(fork_prepare, fork_release, fork_release);
}

/* Takes a pooled mapping of this geometry (the newest), or NULL. */
static void *pool_take(uint64_t bytes, uint32_t stride)
{
	void *p = NULL;

	pthread_once(&pool_once, pool_init);
	pthread_mutex_lock(&pool_lock);
	for (unsigned i = pool_n; i-- > 0;) {
		if (pool[i].bytes != bytes || pool[i].stride != stride)
			continue;
		p = pool[i].p;
		pool[i] = pool[--pool_n];
		break;
	}
	pthread_mutex_unlock(&pool_lock);
	return p;
}

static bool pool_put(void *p, uint64_t bytes, uint32_t stride)
{
	bool kept = false;

	pthread_once(&pool_once, pool_init);
	pthread_mutex_lock(&pool_lock);
	if (pool_n < CMESH__SLOTS_POOL_MAX) {
		pool[pool_n++] = (struct pooled){ p, bytes, stride };
		kept = true;
	}
	pthread_mutex_unlock(&pool_lock);
	return kept;
}

static bool thp_is_always;

static void thp_init(void)
{
	char buf[128] = { 0 };
	int fd = open("/sys/kernel/mm/transparent_hugepage/enabled",
		      O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (read(fd, buf, sizeof(buf) - 1) > 0)
		thp_is_always = strstr(buf, "[always]") != NULL;
	close(fd);
}

/* True if the kernel backs anonymous memory with huge pages unasked. */
static bool thp_always(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, thp_init);
	return thp_is_always;
}

void *cmesh__slots_alloc(uint64_t bytes, uint32_t stride)
{
	void *p;

	if (bytes <= CMESH__SLOTS_HEAP_MAX) {
		p = aligned_alloc(SLOTS_ALIGN, bytes);
		if (p)
			memset(p, 0, bytes);
		return p;
	}
	p = pool_take(bytes, stride);
	if (p)
		return p;
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/*
	 * Slots are scattered: with transparent huge pages "always", one
	 * written slot would commit 2 MiB. A hint (its failure changes
	 * nothing else), made only in that mode: it costs a syscall.
	 */
	if (bytes >= THP_SIZE && thp_always())
		(void)madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

bool cmesh__slots_keepable(uint64_t bytes, uint32_t stride, uint64_t used)
{
	uint64_t per = stride < PAGE ? PAGE : (uint64_t)stride + PAGE;
	uint64_t dirty = used >= bytes / per ? bytes : used * per;

	return bytes > CMESH__SLOTS_HEAP_MAX &&
	       dirty <= CMESH__SLOTS_KEEP_DIRTY &&
	       cmesh__slots_pooled() < CMESH__SLOTS_POOL_MAX;
}

void cmesh__slots_free(void *p, uint64_t bytes, uint32_t stride, bool clean)
{
	if (!p)
		return;
	if (bytes <= CMESH__SLOTS_HEAP_MAX) {
		free(p);
		return;
	}
	if (clean && pool_put(p, bytes, stride))
		return;
	/*
	 * munmap fails only if splitting a mapping would pass
	 * vm.max_map_count: give the pages back at least (the address range
	 * stays reserved).
	 */
	if (munmap(p, bytes))
		(void)madvise(p, bytes, MADV_DONTNEED);
}

unsigned cmesh__slots_pooled(void)
{
	unsigned n;

	pthread_once(&pool_once, pool_init); /* the fork handlers first */
	pthread_mutex_lock(&pool_lock);
	n = pool_n;
	pthread_mutex_unlock(&pool_lock);
	return n;
}

void cmesh__slots_trim(void)
{
	pthread_once(&pool_once, pool_init); /* the fork handlers first */
	pthread_mutex_lock(&pool_lock);
	while (pool_n) {
		pool_n--;
		munmap(pool[pool_n].p, pool[pool_n].bytes);
	}
	pthread_mutex_unlock(&pool_lock);
}
