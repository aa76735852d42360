/* SPDX-License-Identifier: MIT */
/*
 * type.h - descriptor checks, fingerprints and the resource walk over a
 * message's fields.
 */
#ifndef CMESH_TYPE_INTERNAL_H
#define CMESH_TYPE_INTERNAL_H

#include <cmesh/type.h>

#include <stdbool.h>

/* True for the endpoint kinds (fields holding a handle pointer). */
bool cmesh__field_is_endpoint(uint32_t kind);

/*
 * What the resource walk does with an endpoint field's handle. The walk
 * knows no handle: the handle layer (channel.c) gives these once, before
 * any handle exists, and the walk calls them by field kind.
 */
struct cmesh__type_hooks {
	/*
	 * The type of the channel behind `h`, and its fingerprint in *fp
	 * unless fp is NULL (the walk asks only when the types differ).
	 */
	const cmesh_type *(*type_of)(uint32_t kind, void *h, uint64_t *fp);
	/* `h` is about to move in a message. */
	void (*prepare_move)(uint32_t kind, void *h);
	/* Frees `h` (a dropped message's). */
	void (*free)(uint32_t kind, void *h);
};

/* Sets the hooks (channel.c, at load). */
void cmesh__type_hooks_set(const struct cmesh__type_hooks *hooks);

/*
 * Checks the resource fields of `msg` before it moves: each endpoint's
 * channel type must match its field's type (-EBADMSG), no fd or endpoint
 * may appear twice (-EINVAL). On success, receivers being moved leave
 * their waitsets. Borrows everything.
 */
/* True if `msg` holds an endpoint (a non-NULL endpoint field). */
bool cmesh__type_holds_any(const cmesh_type *type, const void *msg);

/* True if the type has an endpoint field. */
bool cmesh__type_has_endpoints(const cmesh_type *type);

int cmesh__type_prepare_move(const cmesh_type *type, const void *msg);

/* True if an endpoint field of `msg` holds `handle`. */
bool cmesh__type_holds(const cmesh_type *type, const void *msg,
		       const void *handle);

/*
 * Releases the resources in `msg`: closes fd fields, frees endpoint
 * fields (each distinct value once). Used when a message is dropped.
 */
void cmesh__type_release(const cmesh_type *type, const void *msg);

/* A message of `type` that holds nothing: zero, fd fields -1. */
void cmesh__type_blank(const cmesh_type *type, void *msg);

/* True if `type` describes the same wire type as fingerprint `fp`. */
bool cmesh__type_matches(const cmesh_type *type, const cmesh_type *other,
			 uint64_t other_fp);

#endif
