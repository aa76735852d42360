/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - helpers shared by every cmesh test: resource counting
 * (/proc/self/fd, /proc/self/maps), stress sizes, threads, clocks, byte
 * patterns, and the per-test fixture (watchdog + leak check).
 */
#ifndef CMESH_TESTUTIL_H
#define CMESH_TESTUTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Time budget of every test, in seconds: what one test may take under
 * ASan on a loaded two-core host. scripts/test fails a run in which a test
 * took longer (scripts/test-budget reads Criterion's reports).
 */
#define TU_BUDGET_S 10u
/*
 * The budget of a test whose name starts with "long_": one that runs for a
 * fixed time an issue names (issue 10's churn: 10 s of moves).
 */
#define TU_LONG_BUDGET_S 20u
/* A test's watchdog fires this many budgets after it started. */
#define TU_WATCHDOG_BUDGETS 3u

/*
 * Suite fixture: TestSuite(x, .init = tu_suite_init, .fini = tu_suite_fini).
 * init arms the watchdog (SIGALRM after tu_watchdog_s(): a hung test is
 * reported as a crash); fini runs LeakSanitizer (when the test binary has
 * it) and aborts the test process on a leak, so ctest sees the failure
 * (Criterion ignores assertion failures raised in .fini).
 */
void tu_suite_init(void);
void tu_suite_fini(void);

/* Seconds a watchdog of a test (or of a child it forks) allows. */
unsigned tu_watchdog_s(void);

/* Open fds of this process (entries of /proc/self/fd, minus the one used). */
int tu_fd_count(void);

/*
 * Fills the fd table: RLIMIT_NOFILE's soft limit set to the lowest free fd
 * number, so no new fd can be made (EMFILE); the old limit in *old, for
 * setrlimit() after. Asserts on failure.
 */
struct rlimit;
void tu_fd_table_full(struct rlimit *old);

/* Prints this process's open fds and what they are to stderr. */
void tu_fd_dump(const char *label);

/* Asserts the fd count equals `want`, listing the fds when it does not. */
#define TU_ASSERT_FDS(want)                                                    \
	do {                                                                   \
		int tu_n_ = tu_fd_count(), tu_want_ = (want);                  \
		if (tu_n_ != tu_want_)                                         \
			tu_fd_dump("fd count mismatch");                       \
		cr_assert_eq(tu_n_, tu_want_, "%d fds open, want %d", tu_n_,   \
			     tu_want_);                                        \
	} while (0)

/* Lines of /proc/self/maps: the number of mappings. */
int tu_map_count(void);

/*
 * `len` bytes of private anonymous memory (`prot`), mapped at a free
 * place inside the bounds of arena.c's placement window (0x3000_0000_0000
 * on, a GiB apart), never over a mapping; asserts that one was found.
 */
void *tu_map_in_window(size_t len, int prot);

/*
 * Threads of this process whose name starts with `prefix`
 * (/proc/self/task/<tid>/comm, e.g. "cmesh-forward"), or -1 if the task
 * list cannot be read; the first one's tid in *first (if not NULL; -1 if
 * none). No Criterion asserts: peers may call it.
 */
int tu_threads_named(const char *prefix, pid_t *first);

/*
 * A "Name:  N kB" line of /proc/self/status (e.g. "VmRSS", "RssShmem"), in
 * KiB, or -1 if there is none. No Criterion asserts: peers may call it.
 */
long tu_status_kib(const char *name);

/*
 * Pages of [addr, addr + len) resident in memory (mincore; `addr` page
 * aligned), or -1 with errno set.
 */
long tu_resident_pages(const void *addr, size_t len);

/* True if `fd` is an open descriptor. */
bool tu_fd_is_open(int fd);

/*
 * A stress size: `dflt` scaled by CMESH_TEST_STRESS (a decimal factor,
 * e.g. "0.01" for a quick run, "10" for a soak; unset or invalid: 1),
 * halved under AddressSanitizer (within the test budget beside the other
 * tests on a 2-core host). Never less than `min`.
 */
uint64_t tu_stress(uint64_t dflt, uint64_t min);

/* CLOCK_MONOTONIC in ns, read without cmesh. */
int64_t tu_now_ns(void);
void tu_sleep_ms(unsigned ms);

/* Threads. Fail the test (from the calling thread) on error. */
void tu_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
void *tu_thread_join(pthread_t t);
/* Joins within `ms` milliseconds; false if the thread is still running. */
bool tu_thread_join_within(pthread_t t, unsigned ms, void **ret);
pid_t tu_gettid(void);
/*
 * Waits (up to timeout_ms) until thread `tid` of this process is asleep
 * (state S or D in /proc/self/task/<tid>/stat). Returns true if it is.
 */
bool tu_wait_thread_sleeping(pid_t tid, unsigned timeout_ms);

/* Deterministic byte pattern: byte i of (seed) is a function of i, seed. */
void tu_fill(void *buf, size_t len, uint32_t seed);
/* Index of the first byte differing from the pattern, or len if none. */
size_t tu_check(const void *buf, size_t len, uint32_t seed);

/* xorshift64* PRNG; state must be non-zero. */
uint64_t tu_rand(uint64_t *state);

/* pipe2(O_CLOEXEC); fails the test on error. */
void tu_pipe(int fds[2]);
/* eventfd(0, EFD_CLOEXEC); fails the test on error. */
int tu_eventfd(void);
/*
 * True if the read end `rfd` of a pipe sees EOF (every write end closed):
 * polls up to `timeout_ms` then reads without blocking.
 */
bool tu_pipe_sees_eof(int rfd, unsigned timeout_ms);

/* Unsets every CMESH_* tuning variable (for tests that check defaults). */
void tu_env_clear(void);

/* True if the test binary runs under AddressSanitizer/LeakSanitizer. */
bool tu_sanitized(void);

#define TU_MS(x) ((int64_t)(x)*1000000)

/*
 * Asserts that a cmesh call returned `want`, naming both codes. Needs
 * <criterion/criterion.h> and <cmesh.h> where it is used.
 */
#define TU_ASSERT_RC(expr, want)                                               \
	do {                                                                   \
		int tu_r_ = (expr);                                            \
		int tu_w_ = (want);                                            \
		cr_assert_eq(tu_r_, tu_w_,                                     \
			     "%s returned %d (%s), want %d (%s)", #expr,       \
			     tu_r_, cmesh_strerror(tu_r_), tu_w_,              \
			     cmesh_strerror(tu_w_));                           \
	} while (0)

#endif
