/* SPDX-License-Identifier: MIT */
/*
 * hint.h - branch hints for the fast paths.
 */
#ifndef CMESH_HINT_H
#define CMESH_HINT_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#endif
