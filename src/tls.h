/* SPDX-License-Identifier: MIT */
/*
 * tls.h - what a thread keeps of cmesh's and frees when it exits: one
 * pthread key for the library, whose destructor runs each armed slot's
 * function once, in slot order (rpc's kept calls free queues into the
 * queue cache, which goes after them).
 */
#ifndef CMESH_TLS_H
#define CMESH_TLS_H

#include <stdbool.h>

enum cmesh__tls_slot {
	CMESH__TLS_RPC,	   /* rpc.c: calls kept for reuse */
	CMESH__TLS_QUEUES, /* queue_reuse.c: destroyed queues kept */
	CMESH__TLS_NSLOTS
};

/*
 * At the calling thread's exit, fn(obj) runs (after the slots before
 * `slot`). Arming an armed slot replaces its function and object. False
 * if it cannot be done (no key could be made): the caller must then keep
 * nothing that only this would free.
 */
bool cmesh__tls_at_exit(enum cmesh__tls_slot slot, void (*fn)(void *),
			void *obj);

#endif
