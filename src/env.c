/* SPDX-License-Identifier: MIT */
/*
 * env.c - strict parsing of the CMESH_* environment variables, once.
 */
#include "env.h"

#include "log.h"

#include <cmesh/channel.h>

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_RING_SIZE (64u * 1024)
#define DEFAULT_MAX_MESSAGE (64ull << 20)
#define MAX_MESSAGE_MIN 1024ull
#define MAX_MESSAGE_MAX (1ull << 30)
#define DEFAULT_MAX_BACKLOG (64ull << 20)

static const char *const log_names[] = { "off", "error", "warn", "info",
					 "debug" };

/* Decimal digits, then (if `suffix`) one of K, M, G. No sign, no space. */
static bool parse_u64(const char *s, bool suffix, uint64_t *out)
{
	uint64_t v = 0, mult = 1;

	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (suffix && *s != '\0') {
		switch (*s++) {
		case 'K':
			mult = 1ull << 10;
			break;
		case 'M':
			mult = 1ull << 20;
			break;
		case 'G':
			mult = 1ull << 30;
			break;
		default:
			return false;
		}
	}
	if (*s != '\0' || (v != 0 && mult > UINT64_MAX / v))
		return false;
	*out = v * mult;
	return true;
}

static int bad(char *errbuf, size_t errlen, const char *name, const char *val,
	       const char *want)
{
	if (errbuf && errlen)
		snprintf(errbuf, errlen, "%s=\"%s\": expected %s", name, val,
			 want);
	return -EINVAL;
}

/* `want` says the range in the error message. */
static int parse_size(cmesh__env_lookup lookup, const char *name, uint64_t min,
		      uint64_t max, bool pow2, const char *want, uint64_t *out,
		      char *errbuf, size_t errlen)
{
	const char *s = lookup(name);
	uint64_t v;

	if (!s)
		return 0;
	if (!parse_u64(s, true, &v) || v < min || v > max ||
	    (pow2 && (v & (v - 1))))
		return bad(errbuf, errlen, name, s, want);
	*out = v;
	return 0;
}

static int parse_spin(cmesh__env_lookup lookup, cmesh_env *env, char *errbuf,
		      size_t errlen)
{
	const char *s = lookup("CMESH_SPIN_NS");
	uint64_t v;

	if (!s)
		return 0;
	if (strcmp(s, "adaptive") == 0) {
		env->spin_ns = CMESH_SPIN_ADAPTIVE;
		return 0;
	}
	if (!parse_u64(s, false, &v) || v > (uint64_t)CMESH__SPIN_NS_MAX)
		return bad(errbuf, errlen, "CMESH_SPIN_NS", s,
			   "nanoseconds from 0 to 10000000000, or adaptive");
	env->spin_ns = (int64_t)v;
	return 0;
}

static int parse_wake(cmesh__env_lookup lookup, cmesh_env *env, char *errbuf,
		      size_t errlen)
{
	const char *s = lookup("CMESH_WAKE");

	if (!s)
		return 0;
	if (strcmp(s, "uring") == 0)
		env->wake = CMESH_WAKE_URING;
	else if (strcmp(s, "epoll") == 0)
		env->wake = CMESH_WAKE_EPOLL;
	else
		return bad(errbuf, errlen, "CMESH_WAKE", s, "uring or epoll");
	return 0;
}

static int parse_place(cmesh__env_lookup lookup, cmesh_env *env, char *errbuf,
		       size_t errlen)
{
	const char *s = lookup("CMESH_SHM_PLACE");

	if (!s)
		return 0;
	if (strcmp(s, "0") != 0 && strcmp(s, "1") != 0)
		return bad(errbuf, errlen, "CMESH_SHM_PLACE", s, "0 or 1");
	env->shm_place = s[0] == '1';
	return 0;
}

static int parse_log(cmesh__env_lookup lookup, cmesh_env *env, char *errbuf,
		     size_t errlen)
{
	const char *s = lookup("CMESH_LOG");
	uint64_t v;

	if (!s)
		return 0;
	for (uint32_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]);
	     i++) {
		if (strcmp(s, log_names[i]) == 0) {
			env->log_level = i;
			return 0;
		}
	}
	if (!parse_u64(s, false, &v) || v > 4)
		return bad(errbuf, errlen, "CMESH_LOG", s,
			   "0..4 or off|error|warn|info|debug");
	env->log_level = (uint32_t)v;
	return 0;
}

int cmesh__env_parse(cmesh__env_lookup lookup, cmesh_env *out, char *errbuf,
		     size_t errlen)
{
	cmesh_env env = CMESH_ENV_INIT;
	int r;

	env.ring_size = DEFAULT_RING_SIZE;
	env.spin_ns = CMESH_SPIN_ADAPTIVE;
	env.max_message = DEFAULT_MAX_MESSAGE;
	env.max_backlog = DEFAULT_MAX_BACKLOG;
	env.wake = CMESH_WAKE_AUTO;
	env.shm_place = 1;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	r = parse_size(lookup, "CMESH_RING_SIZE", CMESH__RING_SIZE_MIN,
		       CMESH__RING_SIZE_MAX, true,
		       "a power of two from 4K to 1G", &env.ring_size, errbuf,
		       errlen);
	if (!r)
		r = parse_spin(lookup, &env, errbuf, errlen);
	if (!r)
		r = parse_wake(lookup, &env, errbuf, errlen);
	if (!r)
		r = parse_size(lookup, "CMESH_MAX_MESSAGE", MAX_MESSAGE_MIN,
			       MAX_MESSAGE_MAX, false, "a size from 1K to 1G",
			       &env.max_message, errbuf, errlen);
	if (!r)
		r = parse_size(lookup, "CMESH_MAX_BACKLOG",
			       CMESH__MAX_BACKLOG_MIN, CMESH__MAX_BACKLOG_MAX,
			       false, "a size from 4K to 1T", &env.max_backlog,
			       errbuf, errlen);
	if (!r)
		r = parse_place(lookup, &env, errbuf, errlen);
	if (!r)
		r = parse_log(lookup, &env, errbuf, errlen);
	if (!r)
		*out = env;
	return r;
}

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static cmesh_env env_value;
static int env_status;
static char env_error[160];

static const char *lookup_getenv(const char *name)
{
	return getenv(name);
}

static void env_load(void)
{
	env_status = cmesh__env_parse(lookup_getenv, &env_value, env_error,
				      sizeof(env_error));
	/* A bad environment leaves errors on: the line below says why. */
	cmesh__log_stderr_level(env_status ? CMESH__LOG_ERROR :
					     (int)env_value.log_level);
}

static atomic_bool env_logged;

int cmesh__env_get(const cmesh_env **out)
{
	pthread_once(&env_once, env_load);
	if (env_status) {
		/* Once (the log reads the environment too: no recursion). */
		if (!atomic_exchange(&env_logged, true))
			cmesh__log(CMESH__LOG_ERROR,
				   "bad environment: %s; every call that needs "
				   "the settings fails with -EINVAL",
				   env_error);
		return env_status;
	}
	*out = &env_value;
	return 0;
}

int cmesh_env_check(cmesh_env *out, char *errbuf, size_t errlen)
{
	const cmesh_env *env;
	int r;

	if (out && out->size < sizeof(uint32_t) * 2)
		return -EINVAL;
	r = cmesh__env_get(&env);
	if (r) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "%s", env_error);
		return r;
	}
	if (out) {
		uint32_t size = out->size;

		if (out->flags)
			return -EINVAL;
		memcpy(out, env, size < sizeof(*env) ? size : sizeof(*env));
		out->size = size;
	}
	if (errbuf && errlen)
		errbuf[0] = '\0';
	return 0;
}
