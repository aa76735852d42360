/* SPDX-License-Identifier: MIT */
/*
 * port.h - sending and receiving messages whose type has endpoint fields
 * (port.c; the receive: port_import.c): endpoints that go to another
 * process become ports, ports that arrive become endpoints.
 */
#ifndef CMESH_PORT_H
#define CMESH_PORT_H

#include <stddef.h>
#include <stdint.h>

struct cmesh__queue;

/*
 * As cmesh__queue_send() for a type with endpoint fields, whichever
 * process the receiver is in. Takes the message's resources in every
 * case. Besides the send's errors: -EOPNOTSUPP for an endpoint that cannot
 * move yet (see port.c), -EMSGSIZE for one whose type no ring holds.
 */
int cmesh__port_send(struct cmesh__queue *q, const void *msg, const void *trail,
		     size_t len);

/*
 * As cmesh__queue_recv() for a type with endpoint fields: endpoints that
 * came from another process are made here. If one cannot be (-ENOMEM,
 * -EPROTO), the message is released and that error returned.
 */
int cmesh__port_recv(struct cmesh__queue *q, int64_t deadline, void *msg,
		     void *trail, size_t cap);

#endif
