/* SPDX-License-Identifier: MIT */
/*
 * log.c - the library's log lines: to the application's callback
 * (cmesh_log_set), else to stderr when CMESH_LOG asks for them (env.c
 * says its level). The only place in the library that writes to stderr.
 */
#include "log.h"

#include <cmesh/log.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

_Static_assert(CMESH__LOG_ERROR == CMESH_LOG_ERROR &&
		       CMESH__LOG_DEBUG == CMESH_LOG_DEBUG,
	       "one set of levels");

static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static cmesh_log_fn sink_fn;
static void *sink_arg;
static int sink_level;

/* Set while this thread runs the callback: what it logs is dropped. */
static _Thread_local bool in_sink;

int cmesh_log_set(cmesh_log_fn fn, void *arg, int level)
{
	if (fn && (level < CMESH_LOG_OFF || level > CMESH_LOG_DEBUG))
		return -EINVAL;
	pthread_mutex_lock(&sink_lock);
	sink_fn = fn;
	sink_arg = fn ? arg : NULL;
	sink_level = fn ? level : 0;
	pthread_mutex_unlock(&sink_lock);
	return 0;
}

/* stderr's level: CMESH_LOG's, or errors when the environment is bad. */
static _Atomic int stderr_lvl = CMESH_LOG_OFF;

void cmesh__log_stderr_level(int level)
{
	atomic_store_explicit(&stderr_lvl, level, memory_order_relaxed);
}

void cmesh__log(int level, const char *fmt, ...)
{
	cmesh_log_fn fn;
	char line[512];
	va_list ap;
	void *arg;
	int max;

	if (in_sink)
		return;
	pthread_mutex_lock(&sink_lock);
	fn = sink_fn;
	arg = sink_arg;
	max = sink_level;
	pthread_mutex_unlock(&sink_lock);
	if (!fn)
		max = atomic_load_explicit(&stderr_lvl, memory_order_relaxed);
	if (level > max)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (fn) {
		in_sink = true;
		fn(arg, level, line);
		in_sink = false;
		return;
	}
	/* One write per line: lines of several threads do not interleave. */
	dprintf(STDERR_FILENO, "cmesh[%d]: %s\n", (int)getpid(), line);
}
