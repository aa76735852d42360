/* SPDX-License-Identifier: MIT */
/*
 * link_hook.c - holders that keep something of a link's while idle (an
 * rpc call kept with its reply lane) give it back once the link failed,
 * so a failed link is not kept alive by what nobody uses (link.h).
 */
#include "link_int.h"

#include <stddef.h>

bool cmesh__link_hook_add(struct cmesh__link *l, struct cmesh__link_hook *h)
{
	bool ok = true;

	pthread_mutex_lock(&l->att_lock);
	/*
	 * Not once the claims ran, nor if hooks would be all that holds the
	 * link (the holder's reference is one of `refs`): nobody could use
	 * it, and no put would come to say so.
	 */
	if (l->hooks_ran || cmesh__link_failed(l) ||
	    atomic_load_explicit(&l->holders_only, memory_order_seq_cst)) {
		ok = false;
	} else if (!h->pprev) {
		/*
		 * Counted first, then `refs` read (seq_cst): against
		 * cmesh__link_put()'s decrement then load of nhooks, one of
		 * the two sees the other.
		 */
		uint32_t n = atomic_fetch_add_explicit(&l->nhooks, 1,
						       memory_order_seq_cst) +
			     1;

		if (atomic_load_explicit(&l->refs, memory_order_seq_cst) <= n) {
			atomic_fetch_sub_explicit(&l->nhooks, 1,
						  memory_order_relaxed);
			ok = false;
		} else {
			h->next = l->hooks;
			if (h->next)
				h->next->pprev = &h->next;
			l->hooks = h;
			h->pprev = &l->hooks;
		}
	}
	pthread_mutex_unlock(&l->att_lock);
	return ok;
}

bool cmesh__link_unkeepable(const struct cmesh__link *l)
{
	/* seq_cst: after the holder's seq_cst store of its idle mark. */
	return atomic_load_explicit(&l->failed, memory_order_seq_cst) ||
	       atomic_load_explicit(&l->holders_only, memory_order_seq_cst);
}

/* att_lock held. */
static void unlink_hook(struct cmesh__link *l, struct cmesh__link_hook *h)
{
	atomic_fetch_sub_explicit(&l->nhooks, 1, memory_order_relaxed);
	*h->pprev = h->next;
	if (h->next)
		h->next->pprev = h->pprev;
	h->next = NULL;
	h->pprev = NULL;
}

void cmesh__link_hook_del(struct cmesh__link *l, struct cmesh__link_hook *h)
{
	/*
	 * The link must be alive (its holder's duty, rpc.c): read once
	 * outside pthread's code, so that a sanitizer sees a freed one.
	 */
	(void)atomic_load_explicit(&l->nhooks, memory_order_relaxed);
	pthread_mutex_lock(&l->att_lock);
	if (h->pprev)
		unlink_hook(l, h);
	pthread_mutex_unlock(&l->att_lock);
}

/* What the claims returned, released after the lock (a few per pass). */
#define RUN_BATCH 16

void cmesh__link_hooks_run(struct cmesh__link *l)
{
	/* Ours alone to write; none is added once it is set. */
	if (l->hooks_ran)
		return;
	for (;;) {
		void (*rel[RUN_BATCH])(void *);
		void *what[RUN_BATCH];
		unsigned n = 0;
		bool more;

		pthread_mutex_lock(&l->att_lock);
		l->hooks_ran = true; /* no hook is added from now on */
		while (l->hooks && n < RUN_BATCH) {
			struct cmesh__link_hook *h = l->hooks;

			unlink_hook(l, h);
			/* First: a claimed holder's shell may go at once. */
			rel[n] = h->release;
			what[n] = h->claim(h);
			n += what[n] != NULL;
		}
		more = l->hooks != NULL;
		pthread_mutex_unlock(&l->att_lock);
		for (unsigned i = 0; i < n; i++)
			rel[i](what[i]);
		if (!more)
			return;
	}
}
