/* SPDX-License-Identifier: MIT */
/**
 * @file
 * cmesh/type.h - message type descriptors.
 *
 * A message is a C struct (plus optional trailing bytes). Its descriptor
 * names the struct, its size, and the fields that carry resources: file
 * descriptors and channel endpoints. Resource fields move with the message:
 * the sender gives them up, the receiver owns them.
 *
 *   struct ping { uint64_t seq; int fd; cmesh_sender *reply; };
 *   CMESH_TYPE_DEFINE(ping_type, struct ping,
 *           CMESH_FIELD_FD(struct ping, fd),
 *           CMESH_FIELD_SENDER(struct ping, reply, pong_type));
 *
 *   struct plain { uint64_t a, b; };
 *   CMESH_TYPE_DEFINE_PLAIN(plain_type, struct plain);
 *
 * Field values: an fd field holds an int, -1 (any negative) meaning "none".
 * A non-negative one must be an open fd of the sender's. Across processes a
 * send checks it (a closed fd is -EINVAL); in one process it is not checked,
 * because the in-process path makes no syscall: the receiver gets the
 * number as sent.
 * An endpoint field holds a handle pointer, NULL meaning "none". An endpoint
 * field names the message type of the channel the endpoint belongs to; an
 * endpoint of another type in that field is a type mismatch (-EBADMSG).
 *
 * Each descriptor has a 64-bit fingerprint: XXH3-64 over a canonical text of
 * its name, size, and each resource field's kind, offset and (for
 * endpoints) the fingerprint of the endpoint's type. Two descriptors with
 * the same fingerprint describe the same wire type. A type may refer to
 * itself or to a type above it (a message carrying a sender of its own
 * channel): such a cycle is hashed as a back-reference.
 */
#ifndef CMESH_TYPE_H
#define CMESH_TYPE_H

#include <cmesh/common.h>

CMESH_BEGIN_DECLS

typedef struct cmesh_type cmesh_type;

/* Kinds of resource field. Values are part of the fingerprint: append only. */
#define CMESH_FIELD_KIND_FD 1u		     /* int */
#define CMESH_FIELD_KIND_SENDER 2u	     /* cmesh_sender * */
#define CMESH_FIELD_KIND_RECEIVER 3u	     /* cmesh_receiver * */
#define CMESH_FIELD_KIND_ONESHOT_SENDER 4u   /* cmesh_oneshot_sender * */
#define CMESH_FIELD_KIND_ONESHOT_RECEIVER 5u /* cmesh_oneshot_receiver * */
#define CMESH_FIELD_KIND_CTX 6u		     /* cmesh_ctx * (cmesh/cancel.h) */

/* Largest struct part of a message, and most resource fields per type. */
#define CMESH_TYPE_MAX_SIZE 65536u
#define CMESH_TYPE_MAX_FIELDS 64u

typedef struct cmesh_field {
	uint32_t kind;		/* CMESH_FIELD_KIND_* */
	uint32_t offset;	/* offsetof the field in the struct */
	const cmesh_type *type; /* endpoint kinds: the channel's type; fd and
				 * context fields: NULL */
} cmesh_field;

struct cmesh_type {
	const char *name; /* stable, e.g. the struct's name */
	uint32_t size;	  /* sizeof the struct, 1..CMESH_TYPE_MAX_SIZE */
	uint32_t nfields; /* entries in fields */
	const cmesh_field *fields;
};

#define CMESH_FIELD_FD(st, member)                                             \
	{                                                                      \
		CMESH_FIELD_KIND_FD, (uint32_t)offsetof(st, member), NULL      \
	}
#define CMESH_FIELD_SENDER(st, member, msgtype)                                \
	{                                                                      \
		CMESH_FIELD_KIND_SENDER, (uint32_t)offsetof(st, member),       \
			&(msgtype)                                             \
	}
#define CMESH_FIELD_RECEIVER(st, member, msgtype)                              \
	{                                                                      \
		CMESH_FIELD_KIND_RECEIVER, (uint32_t)offsetof(st, member),     \
			&(msgtype)                                             \
	}
#define CMESH_FIELD_ONESHOT_SENDER(st, member, msgtype)                        \
	{                                                                      \
		CMESH_FIELD_KIND_ONESHOT_SENDER,                               \
			(uint32_t)offsetof(st, member), &(msgtype)             \
	}
#define CMESH_FIELD_ONESHOT_RECEIVER(st, member, msgtype)                      \
	{                                                                      \
		CMESH_FIELD_KIND_ONESHOT_RECEIVER,                             \
			(uint32_t)offsetof(st, member), &(msgtype)             \
	}

/**
 * A cancellation context (cmesh_ctx *, NULL for none). It moves with the
 * message: the sender's handle is taken, the receiver gets one. In
 * another process it is a context that ends when the sender's does (its
 * canceller fires or is freed, or the sender's process dies) and has the
 * deadline the sender's had: the time left travels, not a clock reading.
 */
#define CMESH_FIELD_CTX(st, member)                                            \
	{                                                                      \
		CMESH_FIELD_KIND_CTX, (uint32_t)offsetof(st, member), NULL     \
	}

/**
 * Defines `const cmesh_type var` for struct `st` with resource fields. Its
 * name (in logs, and in the fingerprint) is the token `st` as written, so
 * one struct named two ways (`struct req` and `req_t`) are two types. In C
 * the definition may be prefixed with `static` (or follow an `extern`
 * declaration); in C++ it is one at namespace scope with internal linkage
 * (a const), after a helper array `var##__fields`.
 */
#ifdef __cplusplus
#define CMESH_TYPE_DEFINE(var, st, ...)                                        \
	static const cmesh_field var##__fields[] = { __VA_ARGS__ };            \
	const cmesh_type var = { #st, (uint32_t)sizeof(st),                    \
				 (uint32_t)(sizeof(var##__fields) /            \
					    sizeof(var##__fields[0])),         \
				 var##__fields }
#else
#define CMESH_TYPE_DEFINE(var, st, ...)                                        \
	const cmesh_type var = {                                               \
		#st, (uint32_t)sizeof(st),                                     \
		(uint32_t)(sizeof((const cmesh_field[]){ __VA_ARGS__ }) /      \
			   sizeof(cmesh_field)),                               \
		(const cmesh_field[]){ __VA_ARGS__ }                           \
	}
#endif

/* Defines `const cmesh_type var` for struct `st` without resource fields. */
#define CMESH_TYPE_DEFINE_PLAIN(var, st)                                       \
	const cmesh_type var = { #st, (uint32_t)sizeof(st), 0, NULL }

/**
 * Checks a descriptor: size in range, fields inside the struct, aligned,
 * not overlapping, known kinds, endpoint fields naming a valid type (nested
 * descriptors are checked to a depth of 8). Returns 0 or -EINVAL (also for
 * NULL). Borrows `type` for the call. Any thread; never blocks, makes no
 * syscall.
 */
CMESH_API int cmesh_type_check(const cmesh_type *type);

/**
 * Fingerprint of a valid descriptor into *out_fp. Returns 0, or -EINVAL if
 * cmesh_type_check() fails or out_fp is NULL. Borrows `type` for the call.
 * Any thread; never blocks, makes no syscall.
 */
CMESH_API int cmesh_type_fingerprint(const cmesh_type *type, uint64_t *out_fp);

CMESH_END_DECLS

#endif
