/* SPDX-License-Identifier: MIT */
/*
 * log.h - debug log to stderr, behind CMESH_LOG (off by default).
 */
#ifndef CMESH_LOG_INTERNAL_H
#define CMESH_LOG_INTERNAL_H

#define CMESH__LOG_ERROR 1
#define CMESH__LOG_WARN 2
#define CMESH__LOG_INFO 3
#define CMESH__LOG_DEBUG 4

/*
 * stderr's level, which env.c sets once it has read the environment
 * (CMESH_LOG's value, or errors when the environment is bad): log is a
 * leaf, below env. Until then stderr gets nothing (a callback, its own
 * level).
 */
void cmesh__log_stderr_level(int level);

/* Writes one line if CMESH_LOG is at least `level`. */
void cmesh__log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
