/* SPDX-License-Identifier: MIT */
/*
 * tls.c - the library's thread-exit key (tls.h).
 */
#include "tls.h"

#include <pthread.h>
#include <stddef.h>

struct tls {
	void (*fn[CMESH__TLS_NSLOTS])(void *);
	void *obj[CMESH__TLS_NSLOTS];
	bool set; /* the key's value is ours */
};

static _Thread_local struct tls tls;
static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool key_ok;

/*
 * The key's destructor. A slot's function may arm a later slot (the
 * value is set again, so a later round of destructors runs too, should
 * this loop have passed it).
 */
static void run_slots(void *p)
{
	struct tls *t = p;

	t->set = false;
	for (int s = 0; s < CMESH__TLS_NSLOTS; s++) {
		void (*fn)(void *) = t->fn[s];

		if (!fn)
			continue;
		t->fn[s] = NULL;
		fn(t->obj[s]);
	}
}

static void key_init(void)
{
	key_ok = pthread_key_create(&key, run_slots) == 0;
}

bool cmesh__tls_at_exit(enum cmesh__tls_slot slot, void (*fn)(void *),
			void *obj)
{
	struct tls *t = &tls;

	if (!t->set) {
		pthread_once(&once, key_init);
		if (!key_ok || pthread_setspecific(key, t))
			return false;
		t->set = true;
	}
	t->fn[slot] = fn;
	t->obj[slot] = obj;
	return true;
}
