/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ctl.c - libFuzzer harness: control datagrams (src/ctl.c) as a peer
 * sends them: bytes from the input, with 0..3 fds attached, received into
 * buffers and fd arrays of sizes the input chooses. cmesh__ctl_recv() must
 * return a length within the buffer and at most fd_cap open fds, close
 * the rest, and never leak one: the fd count is the same after each run.
 */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 256; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char buf[256];
	int sv[2], send_fds[3], fds[CMESH__CTL_MAX_FDS];
	uint32_t nsend, cap, fd_cap, nfds = 0;
	int before, r;

	if (size < 3)
		return 0;
	nsend = data[0] % 4;
	cap = (uint32_t)data[1] % sizeof(buf) + 1;
	fd_cap = data[2] % 4;
	data += 3;
	size -= 3;
	before = open_fds();
	if (cmesh__ctl_socketpair(sv))
		abort();
	for (uint32_t i = 0; i < nsend; i++)
		send_fds[i] = dup(sv[0]);
	r = cmesh__ctl_send(sv[0], size ? data : (const uint8_t *)"", size,
			    send_fds, nsend);
	for (uint32_t i = 0; i < nsend; i++)
		close(send_fds[i]);
	if (r == 0) {
		r = cmesh__ctl_recv(sv[1], buf, cap, fds, fd_cap, &nfds);
		if (r > (int)cap || nfds > fd_cap)
			abort();
		if (r < 0 && nfds)
			abort(); /* a failed receive hands out no fd */
		for (uint32_t i = 0; i < nfds; i++)
			if (close(fds[i]))
				abort(); /* not an fd it gave us */
	}
	close(sv[0]);
	close(sv[1]);
	if (open_fds() != before)
		abort(); /* an fd leaked */
	return 0;
}
