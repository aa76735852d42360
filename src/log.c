/* SPDX-License-Identifier: MIT */
/*
 * log.c - the only place in the library that writes to stderr, and only
 * when CMESH_LOG asks for it.
 */
#include "log.h"

#include "env.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

void cmesh__log(int level, const char *fmt, ...)
{
	const cmesh_env *env;
	va_list ap;

	if (cmesh__env_get(&env) || (int)env->log_level < level)
		return;
	fprintf(stderr, "cmesh[%d]: ", (int)getpid());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
