/* SPDX-License-Identifier: MIT */
/*
 * waitset_int.h - a waitset's state, shared by waitset.c (membership: the
 * members, their links' wake sockets, the fds in the epoll set) and
 * waitset_wait.c (the looks and the sleeps). Every field is under the
 * waitset's `lock` but `word` (atomic).
 */
#ifndef CMESH_WAITSET_INT_H
#define CMESH_WAITSET_INT_H

#include "cancel.h"

#include <cmesh/waitset.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct cmesh__link;
struct cmesh__queue;

struct member {
	struct cmesh__queue *q;
	uint64_t key;
	/* The links of its ports' lanes, one wake socket reference each. */
	struct cmesh__link **links;
	uint32_t nlinks;
	/* The queue's lanes_gen they were set up at (cmesh__waitset_refresh). */
	uint32_t lanes_gen;
};

/* Our wake socket on a link (link_wake.c), shared by the members there. */
struct wlink {
	struct cmesh__link *l;
	int fd;
	uint32_t id;
	uint32_t refs;
};

/* A context member: ready once it ended; its cancel signals the efd. */
struct ctx_member {
	const cmesh_ctx *user; /* the caller's handle: its name here */
	cmesh_ctx *held;       /* our clone: the caller may free theirs */
	uint64_t key;
	struct cmesh__ctx_watcher w;
};

struct cmesh_waitset {
	int epfd; /* exposed fd: efd + remote members' eventfds */
	int efd;
	/*
	 * The members. A member may be freed, or sent away, by another
	 * thread while a wait runs: every access holds `lock`, which a wait
	 * drops while it sleeps.
	 */
	pthread_mutex_t lock;
	uint32_t n;
	uint32_t cap;
	uint32_t next; /* round-robin scan start */
	struct member *m;
	struct wlink *wl;
	uint32_t nwl, capwl;
	struct ctx_member **cm; /* context members */
	uint32_t ncm, capcm, cnext;
	/*
	 * A timerfd (watched, WFD_TIMER) armed for the earliest deadline of
	 * a context member still to come, so that the fd polls readable when
	 * it passes: -1 until a member has a deadline; `tfd_at` is the
	 * deadline it is armed for (CMESH_DEADLINE_NONE: none). Under `lock`.
	 */
	int tfd;
	int64_t tfd_at;
	/*
	 * The members were armed by the last try_wait that found nothing
	 * (producers signal us): the next one disarms them, draining what
	 * they sent. While false, a try_wait that finds a member ready makes
	 * no syscall. Under `lock`.
	 */
	bool armed;
	/* Bumped when a watched fd goes (under `lock`): see try_wait_after. */
	uint64_t gen;
	/*
	 * The futex word of a wait asleep in futex_waitv: incremented
	 * (release) and woken by cmesh__waitset_signal() and by queue.c's
	 * cmesh__queue_wake() of a member armed with ST_WS_FUTEX; the wait
	 * loads it (acquire) before it arms the members.
	 */
	_Atomic uint32_t word;
};

/*
 * What a watched fd is, in its epoll data beside the fd: how a look that
 * epoll reports readable empties it (drain_ready()).
 */
enum {
	WFD_SIGNAL = 1,
	WFD_SOCK,
	WFD_EVENTFD,
	WFD_TIMER
};

/* Events a look takes from epoll at once; more: every fd is drained. */
#define WS_EVENTS 16

/* A context member's watcher: its cancel signals the waitset. */
void cmesh__waitset_on_cancel(void *arg);

/*
 * `lock` held: arms the timer for the earliest context member deadline
 * still to come (making it on first need), or disarms it. 0 or -errno
 * (timerfd_create, epoll_ctl, timerfd_settime).
 */
int cmesh__waitset_timer(cmesh_waitset *ws);

/*
 * `lock` held, before a look arms the members (after its drain and
 * disarm): a member whose lanes changed (a sender sent away, a claim: its
 * queue's lanes_gen moved on, and it signalled us) gets its lanes' wake
 * sockets set up again, so that each lane it arms names a socket we poll.
 * False if one could not be (no memory, no fd): it stays as it was, and
 * the caller must look again soon.
 */
bool cmesh__waitset_refresh(cmesh_waitset *ws);

#endif
