/* SPDX-License-Identifier: MIT */
/*
 * inspect.c - a child for cmesh_spawn() tests: notes the state it was
 * started in (fds, signal mask and dispositions, parent-death signal),
 * joins its parent with cmesh_join(), sends what it noted (struct
 * topo_inspect_msg), then
 *   "report": waits until the parent frees its sender, exits 0;
 *   "linger": sleeps 5 s whatever happens to the link, exits 0 (a test of
 *             the parent-death signal kills it before that).
 * Exit codes: 0 done, 2 bad argv, 3 join failed, 4 send failed, 5 no /proc.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cmesh.h>

#include "helpers/topo.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

CMESH_TYPE_DEFINE_PLAIN(inspect_type, struct topo_inspect_msg);

static int extra_fds(int invite)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] == '.' || fd <= 2 || fd == invite ||
		    fd == dirfd(d))
			continue;
		n++;
	}
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	struct topo_inspect_msg m = { 0 };
	const char *inv = getenv(CMESH_INVITE_ENV);
	struct timespec ts = { 5, 0 };
	cmesh_node *node;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	sigset_t cur;
	int pd = 0;

	if (argc != 2 ||
	    (strcmp(argv[1], "report") != 0 &&
	     strcmp(argv[1], "linger") != 0) ||
	    !inv)
		return 2;
	m.extra_fds = extra_fds(atoi(inv));
	if (m.extra_fds < 0)
		return 5;
	sigprocmask(SIG_SETMASK, NULL, &cur);
	for (int sig = 1; sig <= 64 && sig < NSIG; sig++) {
		struct sigaction sa;

		if (sigismember(&cur, sig) == 1)
			m.blocked |= 1ull << (sig - 1);
		if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
			m.ignored |= 1ull << (sig - 1);
	}
	prctl(PR_GET_PDEATHSIG, &pd);
	m.pdeathsig = pd;
	if (cmesh_join(&inspect_type, &inspect_type, NULL, &node, &tx, &rx))
		return 3;
	cmesh_node_free(node);
	if (cmesh_sender_send(tx, &m, NULL, 0))
		return 4;
	if (strcmp(argv[1], "linger") == 0) {
		while (nanosleep(&ts, &ts))
			;
		return 0;
	}
	while (cmesh_receiver_recv(rx, &m, NULL, 0) == 0)
		;
	cmesh_sender_free(tx);
	cmesh_receiver_free(rx);
	return 0;
}
