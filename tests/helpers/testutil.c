/* SPDX-License-Identifier: MIT */
/*
 * testutil.c - see testutil.h.
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "slots.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define TU_EXPORT __attribute__((visibility("default")))

/*
 * Sanitizer hooks. The leak check is a weak reference so this file works
 * with and without a sanitizer runtime in the test binary. UBSan would
 * otherwise only print and carry on: make it stop the test instead.
 */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));
TU_EXPORT const char *__ubsan_default_options(void);
TU_EXPORT const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}

unsigned tu_watchdog_s(void)
{
	return TU_BUDGET_S * TU_WATCHDOG_BUDGETS;
}

void tu_suite_init(void)
{
	alarm(tu_watchdog_s());
}

void tu_suite_fini(void)
{
	alarm(0);
	if (__lsan_do_recoverable_leak_check &&
	    __lsan_do_recoverable_leak_check() != 0) {
		fprintf(stderr, "testutil: LeakSanitizer found leaks in this "
				"test (report above)\n");
		abort();
	}
}

void tu_fd_table_full(struct rlimit *old)
{
	struct rlimit lim;
	int lowest;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, old), 0);
	lowest = dup(0);
	cr_assert_geq(lowest, 0);
	close(lowest);
	lim = *old;
	lim.rlim_cur = (rlim_t)lowest;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
}

int tu_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d, "opendir(/proc/self/fd): %s", strerror(errno));
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n - 1; /* the directory's own fd */
}

/* A unix socket's type, from /proc/net/unix (for tu_fd_dump()). */
static const char *unix_kind(const char *target)
{
	unsigned long ino, i;
	unsigned type = 0;
	char line[512];
	FILE *f;

	if (sscanf(target, "socket:[%lu]", &ino) != 1)
		return "";
	f = fopen("/proc/net/unix", "re");
	if (!f)
		return "";
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %x %*s %lu", &type, &i) ==
			    2 &&
		    i == ino)
			break;
		else
			type = 0;
	fclose(f);
	return type == 1 ? " (unix stream)" :
	       type == 2 ? " (unix dgram)" :
	       type == 5 ? " (unix seqpacket)" :
			   "";
}

void tu_fd_dump(const char *label)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char path[300], target[300];

	if (!d)
		return;
	fprintf(stderr, "%s: open fds:\n", label);
	while ((e = readdir(d)) != NULL) {
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "  %s -> %s%s\n", e->d_name, target,
			unix_kind(target));
	}
	closedir(d);
}

int tu_map_count(void)
{
	FILE *f;
	int n = 0, c;

	cmesh__slots_trim(); /* the ring pool is not a leak */
	f = fopen("/proc/self/maps", "re");
	cr_assert_not_null(f, "fopen(/proc/self/maps): %s", strerror(errno));
	while ((c = fgetc(f)) != EOF) {
		if (c == '\n')
			n++;
	}
	fclose(f);
	return n;
}

int tu_threads_named(const char *prefix, pid_t *first)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (first)
		*first = -1;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[300], comm[32] = { 0 };
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue; /* it ended meanwhile */
		if (fgets(comm, sizeof(comm), f) &&
		    strncmp(comm, prefix, strlen(prefix)) == 0) {
			if (first && !n)
				*first = atoi(e->d_name);
			n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

long tu_status_kib(const char *name)
{
	FILE *f = fopen("/proc/self/status", "re");
	size_t n = strlen(name);
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, name, n) == 0 && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

long tu_resident_pages(const void *addr, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t npages = (len + page - 1) / page;
	unsigned char *vec = malloc(npages ? npages : 1);
	long n = 0;

	if (!vec)
		return -1;
	if (mincore((void *)addr, len, vec) < 0) {
		free(vec);
		return -1;
	}
	for (size_t i = 0; i < npages; i++)
		n += vec[i] & 1;
	free(vec);
	return n;
}

bool tu_fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

uint64_t tu_stress(uint64_t dflt, uint64_t min)
{
	const char *s = getenv("CMESH_TEST_STRESS");
	double f = 1.0, v;
	char *end;

	if (s && *s) {
		errno = 0;
		f = strtod(s, &end);
		if (errno || *end || !(f > 0.0) || f > 1e6)
			f = 1.0;
	}
	v = (double)dflt * f;
#if defined(__SANITIZE_ADDRESS__)
	/* The normal builds run them whole; this one is for memory errors. */
	v /= 2;
#endif
	if (v < (double)min)
		return min;
	return (uint64_t)v;
}

int64_t tu_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void tu_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

void tu_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int r = pthread_create(t, NULL, fn, arg);

	cr_assert_eq(r, 0, "pthread_create: %s", strerror(r));
}

void *tu_thread_join(pthread_t t)
{
	void *ret = NULL;
	int r = pthread_join(t, &ret);

	cr_assert_eq(r, 0, "pthread_join: %s", strerror(r));
	return ret;
}

bool tu_thread_join_within(pthread_t t, unsigned ms, void **ret)
{
	struct timespec ts;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	r = pthread_timedjoin_np(t, ret, &ts);
	return r == 0;
}

pid_t tu_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static char thread_state(pid_t tid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return '?';
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
	if (!p || p[1] != ' ')
		return '?';
	return p[2];
}

bool tu_wait_thread_sleeping(pid_t tid, unsigned timeout_ms)
{
	int64_t end = tu_now_ns() + (int64_t)timeout_ms * 1000000;

	do {
		char s = thread_state(tid);

		if (s == 'S' || s == 'D')
			return true;
		tu_sleep_ms(1);
	} while (tu_now_ns() < end);
	return false;
}

static uint8_t pattern_byte(size_t i, uint32_t seed)
{
	uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + seed;

	x ^= x >> 29;
	return (uint8_t)(x ^ (x >> 8));
}

void tu_fill(void *buf, size_t len, uint32_t seed)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = pattern_byte(i, seed);
}

size_t tu_check(const void *buf, size_t len, uint32_t seed)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i++) {
		if (p[i] != pattern_byte(i, seed))
			return i;
	}
	return len;
}

uint64_t tu_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

void tu_pipe(int fds[2])
{
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
}

int tu_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	cr_assert_geq(fd, 0, "eventfd: %s", strerror(errno));
	return fd;
}

bool tu_pipe_sees_eof(int rfd, unsigned timeout_ms)
{
	struct pollfd p = { .fd = rfd, .events = POLLIN };
	char c;
	int r;

	do
		r = poll(&p, 1, (int)timeout_ms);
	while (r == -1 && errno == EINTR);
	if (r != 1)
		return false;
	do
		r = (int)read(rfd, &c, 1);
	while (r == -1 && errno == EINTR);
	return r == 0;
}

void tu_env_clear(void)
{
	static const char *const vars[] = {
		"CMESH_RING_SIZE",   "CMESH_SPIN_NS",	  "CMESH_WAKE",
		"CMESH_MAX_MESSAGE", "CMESH_MAX_BACKLOG", "CMESH_SHM_PLACE",
		"CMESH_LOG"
	};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

void *tu_map_in_window(size_t len, int prot)
{
	for (uint64_t at = 0x300000000000ull; at < 0x340000000000ull;
	     at += 1ull << 30) {
		void *p =
			mmap((void *)(uintptr_t)at, len, prot,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			     -1, 0);

		if (p == (void *)(uintptr_t)at)
			return p;
		if (p != MAP_FAILED) /* a kernel without NOREPLACE */
			munmap(p, len);
	}
	cr_assert_fail("no free place in the placement window's bounds");
	return NULL;
}

bool tu_sanitized(void)
{
	return __lsan_do_recoverable_leak_check != NULL;
}
