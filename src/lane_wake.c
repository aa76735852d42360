/* SPDX-License-Identifier: MIT */
/*
 * lane_wake.c - how an in lane's receiver sleeps and how the other side
 * wakes it: the wake line (shm/ring.h), the producer's signal word, the
 * consumer's wake socket and private eventfd.
 *
 * Memory-ordering contract
 * - Sleep/wake (Dekker). The consumer stores `sleeping` (seq_cst RMW),
 *   issues a seq_cst fence and loads the ring's tail and the seq of its
 *   head slot (cmesh__lane_in_flight(), cmesh__lane_ready()); a producer
 *   claims its record with a seq_cst CAS on the tail and, once it has
 *   published it, loads `sleeping` (seq_cst; no fence: the CAS came
 *   first). One of them sees the other: the consumer finds the record, or
 *   its claim (in flight: it yields, then naps and looks again, as
 *   queue_recv.c's receivers do: its producer may have loaded `sleeping` before
 *   we set it), or the producer wakes it as `sleeping` says: a
 *   receiver asleep in futex_waitv on the producer's signal word (which
 *   it read, acquire, before storing `sleeping`; the producer increments
 *   the word, release, then FUTEX_WAKEs it), or a datagram on the
 *   consumer's wake socket, which its waitset (or a receiver without
 *   futex_waitv) polls. Every publish is followed by this, fillers
 *   included: the consumer may be waiting on exactly that position while
 *   later ones are published.
 * - The link thread wakes its own receiver (failure, attachment) the same
 *   way through `self_wakes`, a private futex word, and the private
 *   eventfd (for waitsets).
 * - No wake can block either side, whatever the peer does: FUTEX_WAKE
 *   never blocks and only reads the word, the datagram is sent with
 *   MSG_DONTWAIT (per call: the peer may share that file description and
 *   clear its O_NONBLOCK), and the consumer drains only descriptions it
 *   alone holds (its end of the wake socketpair, its private eventfd). A
 *   peer's wakes and words can only make the consumer look again.
 */
#include "lane.h"

#include "ctl.h"
#include "link.h"
#include "park.h"
#include "wake.h"

#include "ring.h"

#include <cmesh/common.h>

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

void cmesh__lane_signal_slow(struct cmesh__lane *ln, uint32_t how)
{
	if (how & (CMESH_SHM_WAKE_FUTEX | CMESH_SHM_WAKE_WSFUTEX)) {
		/* For the sleeper's adaptive spin: when its message came. */
		atomic_store_explicit(&ln->own_signal->woke_at,
				      (uint64_t)cmesh_clock_now(),
				      memory_order_relaxed);
		/* Pairs with the consumer's acquire load before it sleeps. */
		atomic_fetch_add_explicit(&ln->own_signal->seq, 1,
					  memory_order_release);
		cmesh__park_wake_shared(&ln->own_signal->seq);
	}
	if ((how & CMESH_SHM_WAKE_SOCK) && ln->dynamic) {
		/* Pairs with the consumer's seq_cst RMW after its wake_id. */
		atomic_thread_fence(memory_order_acquire);
		cmesh__link_wake_peer(
			ln->link, atomic_load_explicit(&ln->peer_wake->wake_id,
						       memory_order_relaxed));
	} else if ((how & (CMESH_SHM_WAKE_SOCK | CMESH_SHM_WAKE_POLL)) &&
		   ln->peer_wake_sock >= 0) {
		cmesh__ctl_wake_send(ln->peer_wake_sock);
	}
}

/* Empties both wake fds (never blocks: see cmesh__ctl_wake_drain()). */
static void drain_wakes(struct cmesh__lane *ln)
{
	cmesh__ctl_wake_drain(ln->wake_sock);
	cmesh__eventfd_drain(ln->efd);
}

bool cmesh__lane_in_flight(struct cmesh__lane *ln)
{
	if (ln->pending >= 0 || (ln->dynamic && !cmesh__lane_bound(ln)))
		return false;
	/* A corrupt tail fails the ring: the receive reports it. */
	return cmesh__shmring_in_flight(&ln->cons) != 0;
}

/*
 * Each mode owns its bit of `sleeping`: a waitset's arm or disarm (which
 * another thread may do while it removes the member) never clears the
 * FUTEX or POLL bit of a receiver asleep in cmesh__lane_sleep(), and the
 * other way round. The RMWs are seq_cst, and a fence follows: Dekker, see top.
 */
static void set_mode(struct cmesh__lane *ln, uint32_t bit, bool on)
{
	if (on)
		atomic_fetch_or_explicit(&ln->own_wake->sleeping, bit,
					 memory_order_seq_cst);
	else
		atomic_fetch_and_explicit(&ln->own_wake->sleeping, ~bit,
					  memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	/* Before it waits: a producer waiting for space hears of it. */
	if (on)
		cmesh__lane_space_look(ln);
}

void cmesh__lane_mark_sleep(struct cmesh__lane *ln, bool on)
{
	set_mode(ln, CMESH_SHM_WAKE_FUTEX, on);
}

bool cmesh__lane_arm(struct cmesh__lane *ln, bool on, bool drain)
{
	if (ln->dynamic) {
		/* Its waitset's socket on the link: the producer sends there
		 * (its waitset drains it). Before the bit: see shm/ring.h. */
		if (!ln->own_wake)
			return false; /* arrived failed: nothing will come */
		if (on)
			atomic_store_explicit(
				&ln->own_wake->wake_id,
				atomic_load_explicit(&ln->ws_id,
						     memory_order_relaxed),
				memory_order_relaxed);
		set_mode(ln, CMESH_SHM_WAKE_SOCK, on);
		return on && cmesh__lane_in_flight(ln);
	}
	set_mode(ln, CMESH_SHM_WAKE_SOCK, on);
	if (!on && drain)
		drain_wakes(ln);
	return on && cmesh__lane_in_flight(ln);
}

bool cmesh__lane_arm_futex(struct cmesh__lane *ln, bool on)
{
	if (!ln->own_wake)
		return false; /* arrived failed: nothing will come */
	set_mode(ln, CMESH_SHM_WAKE_WSFUTEX, on);
	return on && cmesh__lane_in_flight(ln);
}

uint32_t cmesh__lane_wait_words(struct cmesh__lane *ln,
				struct cmesh__park_word *w)
{
	uint32_t n = 0;

	if ((!ln->dynamic || cmesh__lane_bound(ln)) && ln->peer_signal)
		w[n++] = (struct cmesh__park_word){
			&ln->peer_signal->seq,
			atomic_load_explicit(&ln->peer_signal->seq,
					     memory_order_acquire),
			true
		};
	w[n++] = (struct cmesh__park_word){
		&ln->self_wakes,
		atomic_load_explicit(&ln->self_wakes, memory_order_acquire),
		false
	};
	return n;
}

int cmesh__lane_wake_fds(const struct cmesh__lane *ln, int out[2])
{
	if (ln->dynamic)
		return 0; /* its waitset's socket on the link (link_wake.c) */
	out[0] = ln->wake_sock;
	out[1] = ln->efd;
	return 2;
}

/* The sleeper saw `fd` readable: empty that one. */
static void on_wake(void *arg, int fd, uint32_t revents)
{
	const struct cmesh__lane *ln = arg;

	(void)revents;
	if (fd == ln->wake_sock)
		cmesh__ctl_wake_drain(fd);
	else
		cmesh__eventfd_drain(fd);
}

int cmesh__lane_sleeper_init(struct cmesh__lane *ln)
{
	int r = cmesh__wake_new_default(&ln->sleeper);

	if (!r)
		r = cmesh__wake_add(ln->sleeper, ln->wake_sock, POLLIN, on_wake,
				    ln);
	if (!r)
		r = cmesh__wake_add(ln->sleeper, ln->efd, POLLIN, on_wake, ln);
	return r;
}

/* Set once futex_waitv said ENOSYS: sleep on the wake socket instead. */
static atomic_bool no_waitv;

void cmesh__lane_force_polling(bool on)
{
	atomic_store_explicit(&no_waitv, on, memory_order_relaxed);
}

bool cmesh__lane_polling(void)
{
	return atomic_load_explicit(&no_waitv, memory_order_relaxed);
}

/* How long a port's lane naps where futex_waitv is missing. */
#define NAP_NS 1000000

/*
 * A port's lane has no wake fds (a link's fds do not grow with its
 * lanes): where futex_waitv is missing it naps on its private word, which
 * its link thread's wakes change, and looks again every NAP_NS.
 */
static int nap(struct cmesh__lane *ln, int64_t deadline)
{
	int64_t until = cmesh_clock_now() + NAP_NS;
	uint32_t self =
		atomic_load_explicit(&ln->self_wakes, memory_order_acquire);

	if (cmesh__lane_ready(ln))
		return 0;
	if (until > deadline)
		until = deadline;
	if (cmesh__park_wait((_Atomic uint32_t *)&ln->self_wakes, self,
			     until) == -ECANCELED)
		return -ECANCELED;
	return until == deadline && cmesh_clock_now() >= deadline ? -ETIMEDOUT :
								    0;
}

/* Sleeps on the wake socket and private eventfd: the general way. */
static int sleep_polling(struct cmesh__lane *ln, int64_t deadline)
{
	int64_t until;
	int r = 0;

	if (!ln->sleeper)
		return nap(ln, deadline);
	set_mode(ln, CMESH_SHM_WAKE_POLL, true);
	/*
	 * Empty the socket now: the wake loop is edge-triggered, and a full
	 * socket takes no more datagrams, so a wake sent into it would make
	 * no edge. Anything published before this is seen by the check.
	 */
	drain_wakes(ln);
	/* The wake backend (io_uring or epoll) waits on our wake fds. */
	until = cmesh__park_in_flight_cap(cmesh__lane_in_flight(ln),
					  &ln->in_flight_looks, deadline);
	if (until && !cmesh__lane_ready(ln) &&
	    cmesh__wake_run(ln->sleeper, cmesh__park_nap_cap(until)) == 0 &&
	    cmesh_clock_now() >= deadline)
		r = -ETIMEDOUT;
	set_mode(ln, CMESH_SHM_WAKE_POLL, false);
	return r ? r : cmesh__park_cancelled();
}

int cmesh__lane_sleep(struct cmesh__lane *ln, int64_t deadline)
{
	uint32_t sig, self;
	int64_t until;
	int r = 0;

	if (atomic_load_explicit(&no_waitv, memory_order_relaxed) ||
	    !ln->peer_signal)
		return sleep_polling(ln, deadline);
	/* Before `sleeping`: a wake after these loads changes a word. */
	sig = atomic_load_explicit(&ln->peer_signal->seq, memory_order_acquire);
	self = atomic_load_explicit(&ln->self_wakes, memory_order_acquire);
	set_mode(ln, CMESH_SHM_WAKE_FUTEX, true);
	until = cmesh__park_in_flight_cap(cmesh__lane_in_flight(ln),
					  &ln->in_flight_looks, deadline);
	if (until && !cmesh__lane_ready(ln))
		r = cmesh__park_wait2(&ln->peer_signal->seq, sig,
				      &ln->self_wakes, self, until);
	set_mode(ln, CMESH_SHM_WAKE_FUTEX, false);
	if (r == -ENOSYS) {
		atomic_store_explicit(&no_waitv, true, memory_order_relaxed);
		return sleep_polling(ln, deadline);
	}
	/* A nap's end is not the caller's deadline. */
	return r == -ETIMEDOUT && until < deadline ? 0 : r;
}

int64_t cmesh__lane_woke_at(const struct cmesh__lane *ln)
{
	if (!ln->peer_signal || (ln->dynamic && !cmesh__lane_bound(ln)))
		return 0;
	return (int64_t)atomic_load_explicit(&ln->peer_signal->woke_at,
					     memory_order_relaxed);
}

void cmesh__lane_wake(struct cmesh__lane *ln)
{
	/* Pairs with the sleeper's acquire load before it sleeps. */
	atomic_fetch_add_explicit(&ln->self_wakes, 1, memory_order_release);
	cmesh__park_wake((_Atomic uint32_t *)&ln->self_wakes);
	/* Dekker with an arming waitset: what changed, then its bit. */
	atomic_thread_fence(memory_order_seq_cst);
	if (ln->efd >= 0)
		cmesh__eventfd_signal(ln->efd);
	else if (ln->dynamic && ln->own_wake &&
		 (atomic_load_explicit(&ln->own_wake->sleeping,
				       memory_order_seq_cst) &
		  CMESH_SHM_WAKE_SOCK))
		/* Armed in a waitset: through its socket on the link. */
		cmesh__link_wake_self(
			ln->link,
			atomic_load_explicit(&ln->ws_id, memory_order_relaxed));
}
