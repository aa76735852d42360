/* SPDX-License-Identifier: MIT */
/*
 * cancel.h - what the rest of the library uses of cancellation contexts
 * (include/cmesh/cancel.h): the scope of a blocking call, and watchers for
 * waits that do not sleep on a futex (a waitset's poll).
 */
#ifndef CMESH_CANCEL_INT_H
#define CMESH_CANCEL_INT_H

#include "park.h"

#include <cmesh/cancel.h>

#include <stdbool.h>
#include <stdint.h>

/*
 * A blocking call with a context: cmesh__ctx_begin() returns the deadline
 * to wait for (the earlier of `deadline` and the context's) and, until
 * cmesh__ctx_end(), makes every park of this thread give up with
 * -ECANCELED once the context is cancelled (park.h). `ctx` NULL: nothing
 * changes. The caller's handle must outlive the scope.
 */
struct cmesh__ctx_scope {
	struct cmesh__park_cancel pc;
	bool on;
};

int64_t cmesh__ctx_begin(const cmesh_ctx *ctx, int64_t deadline,
			 struct cmesh__ctx_scope *sc);
void cmesh__ctx_end(struct cmesh__ctx_scope *sc);

/*
 * A watcher: `fn(arg)` runs once when the context is cancelled (or at
 * once if it already was), on the cancelling thread under the contexts'
 * lock: it must not block nor call into contexts. Unwatch before `w` goes.
 */
struct cmesh__ctx_watcher {
	struct cmesh__ctx_watcher *next, **pprev;
	void (*fn)(void *arg);
	void *arg;
};

void cmesh__ctx_watch(const cmesh_ctx *ctx, struct cmesh__ctx_watcher *w);
void cmesh__ctx_unwatch(struct cmesh__ctx_watcher *w);

#endif
