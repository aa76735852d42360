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

/* Writes one line if CMESH_LOG is at least `level`. */
void cmesh__log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
