/* SPDX-License-Identifier: MIT */
/*
 * test_env.c - the CMESH_* environment: strict parsing, defaults, bad
 * values failing cmesh_env_check() and cmesh_channel_new(), read-once.
 *
 * Settings are read once per process; Criterion runs every test (and every
 * parameter of a parameterized test) in a fresh process, so each test sets
 * the environment before its first cmesh call.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

TestSuite(env, .init = tu_suite_init, .fini = tu_suite_fini);

struct msg {
	uint64_t seq;
};
CMESH_TYPE_DEFINE_PLAIN(msg_type, struct msg);

/* Values copied into the struct: parameters must not point elsewhere. */
struct env_case {
	char var[24];
	char value[40];
	uint64_t want; /* good values: the parsed setting */
};

static void set(const char *var, const char *value)
{
	tu_env_clear();
	cr_assert_eq(setenv(var, value, 1), 0);
}

static void expect_channel_new(int want)
{
	cmesh_sender *tx = NULL;
	cmesh_receiver *rx = NULL;

	TU_ASSERT_RC(cmesh_channel_new(&msg_type, NULL, &tx, &rx), want);
	if (want == 0) {
		struct msg m = { 3 };

		TU_ASSERT_RC(cmesh_sender_send(tx, &m, NULL, 0), 0);
		m.seq = 0;
		TU_ASSERT_RC(cmesh_receiver_try_recv(rx, &m, NULL, 0), 0);
		cr_assert_eq(m.seq, 3);
		cmesh_sender_free(tx);
		cmesh_receiver_free(rx);
	}
}

/*
 * A oneshot needs the settings too (its spin and CMESH_MAX_MESSAGE): with a
 * bad environment either creating it or sending on it fails with -EINVAL.
 */
static void expect_oneshot_new_or_send_fails(void)
{
	cmesh_oneshot_sender *tx = NULL;
	cmesh_oneshot_receiver *rx = NULL;
	int r = cmesh_oneshot_new(&msg_type, &tx, &rx);

	if (r == 0) {
		TU_ASSERT_RC(cmesh_oneshot_send(tx, &(struct msg){ 1 }, NULL,
						0),
			     -EINVAL);
		cmesh_oneshot_receiver_free(rx);
		return;
	}
	TU_ASSERT_RC(r, -EINVAL);
}

#define BAD(v, val)                                                            \
	{                                                                      \
		v, val, 0                                                      \
	}

ParameterizedTestParameters(env, rejects_each_bad_value_naming_the_variable)
{
	static struct env_case cases[] = {
		BAD("CMESH_RING_SIZE", "12K"), /* not a power of two */
		BAD("CMESH_RING_SIZE", "5000"),
		BAD("CMESH_RING_SIZE", "2048"), /* too small */
		BAD("CMESH_RING_SIZE", "1K"),
		BAD("CMESH_RING_SIZE", "0"),
		BAD("CMESH_RING_SIZE", "2G"), /* too big */
		BAD("CMESH_RING_SIZE", "4G"),
		BAD("CMESH_RING_SIZE", "64KB"),
		BAD("CMESH_RING_SIZE", "64KK"),
		BAD("CMESH_RING_SIZE", "64k"),
		BAD("CMESH_RING_SIZE", " 64K"),
		BAD("CMESH_RING_SIZE", "64K "),
		BAD("CMESH_RING_SIZE", "-4096"),
		BAD("CMESH_RING_SIZE", "+4096"),
		BAD("CMESH_RING_SIZE", ""),
		BAD("CMESH_RING_SIZE", "K"),
		BAD("CMESH_RING_SIZE", "0x1000"),
		BAD("CMESH_RING_SIZE", "1T"),
		BAD("CMESH_RING_SIZE", "99999999999999999999"),
		/* 2^64 + 65536: wraps to a valid size if unchecked */
		BAD("CMESH_RING_SIZE", "18446744073709617152"),
		/* (2^54 + 64) K = 2^64 + 64K: wraps to 64K if unchecked */
		BAD("CMESH_RING_SIZE", "18014398509482048K"),
		/* (2^34 + 1) G = 2^64 + 1G: wraps to 1G if unchecked */
		BAD("CMESH_RING_SIZE", "17179869185G"),
		BAD("CMESH_SPIN_NS", "-1"),
		BAD("CMESH_SPIN_NS", "abc"),
		BAD("CMESH_SPIN_NS", "1e3"),
		BAD("CMESH_SPIN_NS", "10000000001"), /* over 10 s */
		BAD("CMESH_SPIN_NS", "99999999999999999999"),
		BAD("CMESH_SPIN_NS", ""),
		BAD("CMESH_SPIN_NS", " 5"),
		BAD("CMESH_SPIN_NS", "5 "),
		BAD("CMESH_SPIN_NS", "0x10"),
		BAD("CMESH_SPIN_NS", "Adaptive"),
		BAD("CMESH_SPIN_NS", "adaptive "),
		BAD("CMESH_SPIN_NS", "-2"),
		BAD("CMESH_WAKE", "io_uring"),
		BAD("CMESH_SHM_PLACE", ""),
		BAD("CMESH_SHM_PLACE", "2"),
		BAD("CMESH_SHM_PLACE", "01"),
		BAD("CMESH_SHM_PLACE", "yes"),
		BAD("CMESH_SHM_PLACE", "1 "),
		BAD("CMESH_WAKE", ""),
		BAD("CMESH_WAKE", "URING"),
		BAD("CMESH_WAKE", "Epoll"),
		BAD("CMESH_WAKE", "uring "),
		BAD("CMESH_WAKE", "auto"),
		BAD("CMESH_WAKE", "1"),
		BAD("CMESH_MAX_MESSAGE", "512"), /* under 1K */
		BAD("CMESH_MAX_MESSAGE", "1023"),
		BAD("CMESH_MAX_MESSAGE", "0"),
		BAD("CMESH_MAX_MESSAGE", "1T"),
		BAD("CMESH_MAX_MESSAGE", "2G"), /* over 1G */
		BAD("CMESH_MAX_MESSAGE", "1.5M"),
		BAD("CMESH_MAX_MESSAGE", "-1K"),
		BAD("CMESH_MAX_MESSAGE", ""),
		BAD("CMESH_MAX_MESSAGE", "18014398509481985K"),
		BAD("CMESH_MAX_BACKLOG", "4095"), /* under 4K */
		BAD("CMESH_MAX_BACKLOG", "0"),
		BAD("CMESH_MAX_BACKLOG", "2048G"), /* over 1T */
		BAD("CMESH_MAX_BACKLOG", "1M "),
		BAD("CMESH_MAX_BACKLOG", ""),
		BAD("CMESH_LOG", "5"),
		BAD("CMESH_LOG", "verbose"),
		BAD("CMESH_LOG", "-1"),
		BAD("CMESH_LOG", "DEBUG"),
		BAD("CMESH_LOG", "warning"),
		BAD("CMESH_LOG", ""),
	};

	return cr_make_param_array(struct env_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct env_case *c, env,
		  rejects_each_bad_value_naming_the_variable)
{
	cmesh_env e = CMESH_ENV_INIT;
	char buf[256];

	set(c->var, c->value);
	memset(buf, 0, sizeof(buf));
	TU_ASSERT_RC(cmesh_env_check(&e, buf, sizeof(buf)), -EINVAL);
	cr_assert(strstr(buf, c->var) != NULL,
		  "%s=\"%s\": message \"%s\" does not name the variable",
		  c->var, c->value, buf);
	cr_assert(strstr(buf, c->value) != NULL,
		  "%s=\"%s\": message \"%s\" does not show the value", c->var,
		  c->value, buf);
	/* Every call that needs the settings fails the same way. */
	expect_channel_new(-EINVAL);
	expect_oneshot_new_or_send_fails();
	TU_ASSERT_RC(cmesh_env_check(NULL, NULL, 0), -EINVAL);
}

#define GOOD(v, val, want)                                                     \
	{                                                                      \
		v, val, want                                                   \
	}

ParameterizedTestParameters(env, accepts_good_values_and_parses_them)
{
	static struct env_case cases[] = {
		GOOD("CMESH_RING_SIZE", "4K", 4096),
		GOOD("CMESH_RING_SIZE", "4096", 4096),
		GOOD("CMESH_RING_SIZE", "64K", 65536),
		GOOD("CMESH_RING_SIZE", "65536", 65536),
		GOOD("CMESH_RING_SIZE", "1M", 1048576),
		GOOD("CMESH_RING_SIZE", "1G", 1073741824),
		GOOD("CMESH_RING_SIZE", "0064K", 65536),
		GOOD("CMESH_SPIN_NS", "0", 0),
		GOOD("CMESH_SPIN_NS", "1", 1),
		GOOD("CMESH_SPIN_NS", "50000", 50000),
		GOOD("CMESH_SPIN_NS", "10000000000", 10000000000ull),
		GOOD("CMESH_SPIN_NS", "adaptive",
		     (uint64_t)CMESH_SPIN_ADAPTIVE),
		GOOD("CMESH_WAKE", "epoll", CMESH_WAKE_EPOLL),
		GOOD("CMESH_WAKE", "uring", CMESH_WAKE_URING),
		GOOD("CMESH_MAX_MESSAGE", "1K", 1024),
		GOOD("CMESH_MAX_MESSAGE", "1024", 1024),
		GOOD("CMESH_MAX_MESSAGE", "3000", 3000),
		GOOD("CMESH_MAX_MESSAGE", "64M", 67108864),
		GOOD("CMESH_MAX_MESSAGE", "1G", 1073741824),
		GOOD("CMESH_MAX_BACKLOG", "4K", 4096),
		GOOD("CMESH_MAX_BACKLOG", "100000", 100000),
		GOOD("CMESH_MAX_BACKLOG", "1024G", 1099511627776ull),
		GOOD("CMESH_SHM_PLACE", "0", 0),
		GOOD("CMESH_SHM_PLACE", "1", 1),
		GOOD("CMESH_LOG", "0", 0),
		GOOD("CMESH_LOG", "4", 4),
		GOOD("CMESH_LOG", "off", 0),
		GOOD("CMESH_LOG", "error", 1),
		GOOD("CMESH_LOG", "warn", 2),
		GOOD("CMESH_LOG", "info", 3),
		GOOD("CMESH_LOG", "debug", 4),
	};

	return cr_make_param_array(struct env_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

static bool io_uring_available(void)
{
#ifdef SYS_io_uring_setup
	unsigned char params[120]; /* struct io_uring_params */
	long fd;

	memset(params, 0, sizeof(params));
	fd = syscall(SYS_io_uring_setup, 1, params);
	if (fd < 0)
		return false;
	close((int)fd);
	return true;
#else
	return false;
#endif
}

ParameterizedTest(struct env_case *c, env, accepts_good_values_and_parses_them)
{
	cmesh_env e = CMESH_ENV_INIT;
	char buf[256] = "untouched";
	uint64_t got;

	set(c->var, c->value);
	TU_ASSERT_RC(cmesh_env_check(&e, buf, sizeof(buf)), 0);
	cr_assert_eq(e.size, sizeof(cmesh_env));
	if (strcmp(c->var, "CMESH_RING_SIZE") == 0)
		got = e.ring_size;
	else if (strcmp(c->var, "CMESH_SPIN_NS") == 0)
		got = (uint64_t)e.spin_ns;
	else if (strcmp(c->var, "CMESH_WAKE") == 0)
		got = e.wake;
	else if (strcmp(c->var, "CMESH_MAX_MESSAGE") == 0)
		got = e.max_message;
	else if (strcmp(c->var, "CMESH_MAX_BACKLOG") == 0)
		got = e.max_backlog;
	else if (strcmp(c->var, "CMESH_SHM_PLACE") == 0)
		got = e.shm_place;
	else
		got = e.log_level;
	cr_assert_eq(got, c->want, "%s=\"%s\" parsed as %llu, want %llu",
		     c->var, c->value, (unsigned long long)got,
		     (unsigned long long)c->want);
	if (strcmp(c->value, "uring") == 0 && !io_uring_available())
		cr_skip("io_uring_setup(2) is not available on this kernel");
	expect_channel_new(0);
}

Test(env, defaults_apply_when_nothing_is_set)
{
	cmesh_env e = CMESH_ENV_INIT;

	tu_env_clear();
	TU_ASSERT_RC(cmesh_env_check(&e, NULL, 0), 0);
	cr_assert_eq(e.ring_size, 64 * 1024);
	cr_assert_eq(e.spin_ns, CMESH_SPIN_ADAPTIVE);
	cr_assert_eq(e.max_message, 64ull * 1024 * 1024);
	cr_assert_eq(e.max_backlog, 64ull * 1024 * 1024);
	cr_assert_eq(e.log_level, 0);
	cr_assert_eq(e.shm_place, 1);
	cr_assert(e.wake == CMESH_WAKE_AUTO || e.wake == CMESH_WAKE_URING ||
			  e.wake == CMESH_WAKE_EPOLL,
		  "wake %u", e.wake);
	cr_assert_eq(e.flags, 0);
	/* out may be NULL. */
	TU_ASSERT_RC(cmesh_env_check(NULL, NULL, 0), 0);
	expect_channel_new(0);
}

Test(env, settings_are_read_once_per_process)
{
	cmesh_env e = CMESH_ENV_INIT;

	set("CMESH_RING_SIZE", "64K");
	TU_ASSERT_RC(cmesh_env_check(&e, NULL, 0), 0);
	cr_assert_eq(e.ring_size, 65536);
	cr_assert_eq(setenv("CMESH_RING_SIZE", "1M", 1), 0);
	cr_assert_eq(setenv("CMESH_LOG", "junk", 1), 0);
	TU_ASSERT_RC(cmesh_env_check(&e, NULL, 0), 0);
	cr_assert_eq(e.ring_size, 65536);
	expect_channel_new(0);
}

Test(env, a_bad_value_stays_bad_after_the_environment_is_fixed)
{
	char buf[128];

	set("CMESH_SPIN_NS", "soon");
	TU_ASSERT_RC(cmesh_env_check(NULL, buf, sizeof(buf)), -EINVAL);
	cr_assert_eq(setenv("CMESH_SPIN_NS", "100", 1), 0);
	TU_ASSERT_RC(cmesh_env_check(NULL, buf, sizeof(buf)), -EINVAL);
	cr_assert(strstr(buf, "CMESH_SPIN_NS") != NULL, "message \"%s\"", buf);
	expect_channel_new(-EINVAL);
}

Test(env, a_bad_value_fails_channel_new_before_env_check_is_called)
{
	char buf[128];

	set("CMESH_RING_SIZE", "3000");
	expect_channel_new(-EINVAL);
	TU_ASSERT_RC(cmesh_env_check(NULL, buf, sizeof(buf)), -EINVAL);
	cr_assert(strstr(buf, "CMESH_RING_SIZE") != NULL, "message \"%s\"",
		  buf);
}

Test(env, the_message_is_truncated_to_errlen_and_nul_terminated)
{
	char buf[32];

	set("CMESH_MAX_MESSAGE", "lots-and-lots-of-bytes");
	memset(buf, 'X', sizeof(buf));
	TU_ASSERT_RC(cmesh_env_check(NULL, buf, 8), -EINVAL);
	cr_assert_lt(strnlen(buf, 8), 8, "not NUL-terminated within errlen");
	for (size_t i = 8; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 'X', "wrote past errlen at %zu", i);
	/* errlen 0: nothing written. */
	memset(buf, 'X', sizeof(buf));
	TU_ASSERT_RC(cmesh_env_check(NULL, buf, 0), -EINVAL);
	for (size_t i = 0; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 'X', "wrote with errlen 0 at %zu", i);
	/* errlen 1: just the NUL. */
	TU_ASSERT_RC(cmesh_env_check(NULL, buf, 1), -EINVAL);
	cr_assert_eq(buf[0], '\0');
	cr_assert_eq(buf[1], 'X');
	/* No buffer at all. */
	TU_ASSERT_RC(cmesh_env_check(NULL, NULL, 100), -EINVAL);
}

Test(env, check_rejects_unknown_flags)
{
	cmesh_env e = CMESH_ENV_INIT;

	tu_env_clear();
	e.flags = 1;
	TU_ASSERT_RC(cmesh_env_check(&e, NULL, 0), -EINVAL);
}

Test(env, check_fills_only_the_callers_size_of_an_older_struct)
{
	/* An older caller's struct ending before spin_ns. */
	cmesh_env e;

	set("CMESH_RING_SIZE", "1M");
	memset(&e, 0x5a, sizeof(e));
	e.size = (uint32_t)offsetof(cmesh_env, spin_ns);
	e.flags = 0;
	TU_ASSERT_RC(cmesh_env_check(&e, NULL, 0), 0);
	cr_assert_eq(e.ring_size, 1048576);
	cr_assert_eq(e.size, offsetof(cmesh_env, spin_ns));
	{
		unsigned char *p = (unsigned char *)&e;

		for (size_t i = offsetof(cmesh_env, spin_ns); i < sizeof(e);
		     i++)
			cr_assert_eq(p[i], 0x5a, "byte %zu past size written",
				     i);
	}
}

Test(env, epoll_wake_backend_wakes_a_blocked_receiver)
{
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_waitset *ws;
	struct msg m;
	uint64_t key;

	set("CMESH_WAKE", "epoll");
	TU_ASSERT_RC(cmesh_channel_new(&msg_type, NULL, &tx, &rx), 0);
	TU_ASSERT_RC(cmesh_waitset_new(&ws), 0);
	TU_ASSERT_RC(cmesh_waitset_add_receiver(ws, rx, 4), 0);
	TU_ASSERT_RC(cmesh_receiver_recv_deadline(
			     rx, cmesh_deadline_after(TU_MS(5)), &m, NULL, 0),
		     -ETIMEDOUT);
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct msg){ 1 }, NULL, 0), 0);
	TU_ASSERT_RC(cmesh_waitset_wait(ws, cmesh_deadline_after(TU_MS(5000)),
					&key),
		     0);
	cr_assert_eq(key, 4);
	TU_ASSERT_RC(cmesh_receiver_recv(rx, &m, NULL, 0), 0);
	cmesh_waitset_free(ws);
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
}

struct sleeper {
	cmesh_receiver *rx;
	_Atomic pid_t tid;
	int rc;
};

static void *recv_blocking(void *arg)
{
	struct sleeper *s = arg;
	struct msg m;

	atomic_store(&s->tid, tu_gettid());
	s->rc = cmesh_receiver_recv(s->rx, &m, NULL, 0);
	return NULL;
}

Test(env, channel_option_spin_none_overrides_a_long_cmesh_spin_ns)
{
	cmesh_channel_opts o = CMESH_CHANNEL_OPTS_INIT;
	cmesh_sender *tx;
	struct sleeper s = { 0 };
	pthread_t t;
	pid_t tid;

	/* Ten seconds of spinning by default... */
	set("CMESH_SPIN_NS", "10000000000");
	/* ...but this channel asks for none. */
	o.spin_ns = CMESH_SPIN_NONE;
	TU_ASSERT_RC(cmesh_channel_new(&msg_type, &o, &tx, &s.rx), 0);
	tu_thread_start(&t, recv_blocking, &s);
	while ((tid = atomic_load(&s.tid)) == 0)
		tu_sleep_ms(1);
	cr_assert(tu_wait_thread_sleeping(tid, 3000),
		  "receiver spun although the channel asked for no spin");
	TU_ASSERT_RC(cmesh_sender_send(tx, &(struct msg){ 1 }, NULL, 0), 0);
	cr_assert(tu_thread_join_within(t, 10000, NULL));
	TU_ASSERT_RC(s.rc, 0);
	cmesh_sender_free(tx);
	cmesh_receiver_free(s.rx);
}
