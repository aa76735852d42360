/* SPDX-License-Identifier: MIT */
/*
 * reg.c - the registry of live links (see reg.h).
 */
#include "reg.h"

#include <pthread.h>
#include <stddef.h>

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static struct cmesh__reg_entry *reg_head, **reg_tail = &reg_head;

static void fork_prepare(void)
{
	pthread_mutex_lock(&reg_lock);
}

static void fork_release(void)
{
	pthread_mutex_unlock(&reg_lock);
}

static void reg_init(void)
{
	pthread_atfork(fork_prepare, fork_release, fork_release);
}

/* Takes the lock, the fork handlers registered first. */
static void reg_lock_take(void)
{
	pthread_once(&reg_once, reg_init);
	pthread_mutex_lock(&reg_lock);
}

void cmesh__reg_add(struct cmesh__reg_entry *e, void *owner)
{
	reg_lock_take();
	e->owner = owner;
	e->next = NULL;
	e->pprev = reg_tail;
	*reg_tail = e;
	reg_tail = &e->next;
	pthread_mutex_unlock(&reg_lock);
}

void cmesh__reg_del(struct cmesh__reg_entry *e)
{
	reg_lock_take();
	if (e->pprev) {
		*e->pprev = e->next;
		if (e->next)
			e->next->pprev = e->pprev;
		else
			reg_tail = e->pprev;
		e->pprev = NULL;
		e->next = NULL;
	}
	pthread_mutex_unlock(&reg_lock);
}

int cmesh__reg_each(int (*fn)(void *owner, void *arg), void *arg)
{
	int r = 0;

	reg_lock_take();
	for (struct cmesh__reg_entry *e = reg_head; e && !r; e = e->next)
		r = fn(e->owner, arg);
	pthread_mutex_unlock(&reg_lock);
	return r;
}
