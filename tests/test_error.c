/* SPDX-License-Identifier: MIT */
/*
 * test_error.c - cmesh_strerror (error.h), the clock and deadlines
 * (common.h).
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <string.h>

TestSuite(error, .init = tu_suite_init, .fini = tu_suite_fini);
TestSuite(clock, .init = tu_suite_init, .fini = tu_suite_fini);

static const int documented[] = {
	-EAGAIN,    -EPIPE,	-ECONNRESET, -EPROTO,	    -EBADMSG, -EMSGSIZE,
	-ETIMEDOUT, -ECANCELED, -EINVAL,     -EBUSY,	    -ENOMEM,  -ENOENT,
	-ENOBUFS,   -ENOSYS,	-EREMOTEIO,  -ECONNREFUSED,
};
#define NDOC (sizeof(documented) / sizeof(documented[0]))

Test(error, strerror_gives_distinct_non_empty_strings_for_documented_codes)
{
	const char *s[NDOC];

	for (size_t i = 0; i < NDOC; i++) {
		s[i] = cmesh_strerror(documented[i]);
		cr_assert_not_null(s[i], "code %d", documented[i]);
		cr_assert_gt(strlen(s[i]), 0, "code %d", documented[i]);
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(s[i], s[j],
					  "codes %d and %d share "
					  "\"%s\"",
					  documented[i], documented[j], s[i]);
	}
}

Test(error, strerror_is_stable_across_calls)
{
	for (size_t i = 0; i < NDOC; i++)
		cr_assert_str_eq(cmesh_strerror(documented[i]),
				 cmesh_strerror(documented[i]));
}

Test(error, strerror_gives_a_generic_string_for_unknown_codes)
{
	static const int unknown[] = { -100000, -12345678, INT_MIN, -4096,
				       -(INT_MAX) };
	const char *generic = cmesh_strerror(unknown[0]);

	cr_assert_not_null(generic);
	cr_assert_gt(strlen(generic), 0);
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		const char *s = cmesh_strerror(unknown[i]);

		cr_assert_not_null(s, "code %d", unknown[i]);
		cr_assert_str_eq(s, generic, "code %d", unknown[i]);
	}
	for (size_t i = 0; i < NDOC; i++)
		cr_assert_str_neq(cmesh_strerror(documented[i]), generic,
				  "documented code %d reads as unknown",
				  documented[i]);
}

Test(error, strerror_never_returns_null_or_empty)
{
	static const int codes[] = {
		0,	 1,	  42,	   INT_MAX, -1,
		-EMFILE, -ENFILE, INT_MIN, -EINTR,  -ENOSYS
	};

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = cmesh_strerror(codes[i]);

		cr_assert_not_null(s, "code %d", codes[i]);
		cr_assert_gt(strlen(s), 0, "code %d", codes[i]);
	}
	for (int c = -200; c <= 200; c++)
		cr_assert_not_null(cmesh_strerror(c), "code %d", c);
}

Test(clock, clock_now_is_monotonic_and_on_clock_monotonic)
{
	int64_t prev = cmesh_clock_now(), a, b, c;

	for (int i = 0; i < 100000; i++) {
		int64_t now = cmesh_clock_now();

		cr_assert_geq(now, prev, "clock went back: %lld -> %lld",
			      (long long)prev, (long long)now);
		prev = now;
	}
	a = tu_now_ns();
	b = cmesh_clock_now();
	c = tu_now_ns();
	cr_assert(a <= b && b <= c, "%lld <= %lld <= %lld", (long long)a,
		  (long long)b, (long long)c);
	/* It advances. */
	a = cmesh_clock_now();
	tu_sleep_ms(5);
	cr_assert_geq(cmesh_clock_now() - a, TU_MS(5));
}

Test(clock, deadline_after_adds_to_now)
{
	int64_t a, d, b;

	a = tu_now_ns();
	d = cmesh_deadline_after(0);
	b = tu_now_ns();
	cr_assert(a <= d && d <= b);
	a = tu_now_ns();
	d = cmesh_deadline_after(1000000000);
	b = tu_now_ns();
	cr_assert(a + 1000000000 <= d && d <= b + 1000000000);
}

Test(clock, deadline_after_a_negative_time_is_in_the_past)
{
	int64_t a = tu_now_ns();
	int64_t d = cmesh_deadline_after(-TU_MS(10));

	cr_assert_lt(d, a);
	cr_assert_geq(d, a - TU_MS(10));
	cr_assert_lt(cmesh_deadline_after(-1), tu_now_ns());
	/* No overflow at the bottom either. */
	d = cmesh_deadline_after(INT64_MIN);
	cr_assert_lt(d, tu_now_ns());
}

Test(clock, deadline_after_saturates_at_deadline_none)
{
	cr_assert_eq(cmesh_deadline_after(INT64_MAX), CMESH_DEADLINE_NONE);
	cr_assert_eq(cmesh_deadline_after(INT64_MAX - 1), CMESH_DEADLINE_NONE);
	cr_assert_eq(cmesh_deadline_after(INT64_MAX - cmesh_clock_now() + 1),
		     CMESH_DEADLINE_NONE);
	cr_assert_eq(CMESH_DEADLINE_NONE, INT64_MAX);
	/* Large but representable stays exact-ish (not saturated). */
	cr_assert_lt(cmesh_deadline_after(INT64_MAX / 4), CMESH_DEADLINE_NONE);
}

TestSuite(version, .init = tu_suite_init, .fini = tu_suite_fini);

/* The headers, the library and the build agree on the version. */
Test(version, headers_library_and_build_agree)
{
	char want[32];

	snprintf(want, sizeof(want), "%d.%d.%d", CMESH_VERSION_MAJOR,
		 CMESH_VERSION_MINOR, CMESH_VERSION_PATCH);
	cr_assert_str_eq(CMESH_VERSION_STRING, want);
	cr_assert_str_eq(cmesh_version(), CMESH_VERSION_STRING);
	cr_assert_str_eq(cmesh_version(), CMESH_TEST_PROJECT_VERSION,
			 "CMakeLists.txt says %s", CMESH_TEST_PROJECT_VERSION);
}

Test(error, strerror_describes_an_errno_it_does_not_name_itself)
{
	/* A syscall's errno passed on: the C library's words, not "unknown". */
	const char *s = cmesh_strerror(-EHOSTDOWN);

	cr_assert_str_eq(s, strerrordesc_np(EHOSTDOWN));
	cr_assert_str_neq(s, cmesh_strerror(-100000));
}
