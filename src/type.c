/* SPDX-License-Identifier: MIT */
/*
 * type.c - type descriptors: validation, XXH3 fingerprints, and the walk
 * over a message's resource fields (fds and endpoints).
 */
#include "type.h"

#include <errno.h>
#include <stdalign.h>
#include <string.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#define MAX_DEPTH 8
#define MAX_NAME 255

static const struct cmesh__type_hooks *hooks;

void cmesh__type_hooks_set(const struct cmesh__type_hooks *h)
{
	hooks = h;
}

bool cmesh__field_is_endpoint(uint32_t kind)
{
	return kind >= CMESH_FIELD_KIND_SENDER && kind <= CMESH_FIELD_KIND_CTX;
}

/* Fields without a nested type: fds and contexts. */
static bool is_untyped(uint32_t kind)
{
	return kind == CMESH_FIELD_KIND_FD || kind == CMESH_FIELD_KIND_CTX;
}

static uint32_t field_width(uint32_t kind)
{
	return kind == CMESH_FIELD_KIND_FD ? (uint32_t)sizeof(int) :
					     (uint32_t)sizeof(void *);
}

static uint32_t field_align(uint32_t kind)
{
	return kind == CMESH_FIELD_KIND_FD ? (uint32_t)alignof(int) :
					     (uint32_t)alignof(void *);
}

/* Checks one level; `stack` holds the types being checked above it. */
static int check_level(const cmesh_type *t, const cmesh_type **stack, int depth)
{
	size_t name_len;

	if (!t || !t->name || t->size == 0 || t->size > CMESH_TYPE_MAX_SIZE ||
	    t->nfields > CMESH_TYPE_MAX_FIELDS || (t->nfields && !t->fields))
		return -EINVAL;
	name_len = strnlen(t->name, MAX_NAME + 1);
	if (name_len == 0 || name_len > MAX_NAME)
		return -EINVAL;
	for (uint32_t i = 0; i < t->nfields; i++) {
		const cmesh_field *f = &t->fields[i];
		uint32_t w;

		if (f->kind < CMESH_FIELD_KIND_FD ||
		    f->kind > CMESH_FIELD_KIND_CTX)
			return -EINVAL;
		w = field_width(f->kind);
		if (w > t->size || f->offset > t->size - w ||
		    f->offset % field_align(f->kind))
			return -EINVAL;
		for (uint32_t j = 0; j < i; j++) {
			const cmesh_field *g = &t->fields[j];

			if (f->offset < g->offset + field_width(g->kind) &&
			    g->offset < f->offset + w)
				return -EINVAL;
		}
		if (is_untyped(f->kind)) {
			if (f->type)
				return -EINVAL;
			continue;
		}
		if (!f->type)
			return -EINVAL;
		/* A type already being checked above is a cycle: fine. */
		bool seen = false;
		for (int k = 0; k <= depth; k++)
			seen = seen || stack[k] == f->type;
		if (seen)
			continue;
		if (depth + 1 >= MAX_DEPTH)
			return -EINVAL;
		stack[depth + 1] = f->type;
		if (check_level(f->type, stack, depth + 1))
			return -EINVAL;
	}
	return 0;
}

int cmesh_type_check(const cmesh_type *type)
{
	const cmesh_type *stack[MAX_DEPTH];

	if (!type)
		return -EINVAL;
	stack[0] = type;
	return check_level(type, stack, 0);
}

static void hash_u32(XXH3_state_t *st, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8),
			       (unsigned char)(v >> 16),
			       (unsigned char)(v >> 24) };

	XXH3_64bits_update(st, b, sizeof(b));
}

/*
 * Canonical form, fed to XXH3 as a byte stream: "cmesh-type/1", name and
 * NUL, size, field count, then per field in declaration order: kind,
 * offset, and for endpoints either a back-reference (0xffffff00 | level)
 * to a type on the current path or the nested type's canonical form.
 * Integers are little-endian 32-bit.
 */
static void hash_level(XXH3_state_t *st, const cmesh_type *t,
		       const cmesh_type **stack, int depth)
{
	XXH3_64bits_update(st, t->name, strlen(t->name) + 1);
	hash_u32(st, t->size);
	hash_u32(st, t->nfields);
	for (uint32_t i = 0; i < t->nfields; i++) {
		const cmesh_field *f = &t->fields[i];
		int ref = -1;

		hash_u32(st, f->kind);
		hash_u32(st, f->offset);
		if (is_untyped(f->kind))
			continue;
		for (int k = 0; k <= depth && ref < 0; k++)
			if (stack[k] == f->type)
				ref = k;
		if (ref >= 0) {
			hash_u32(st, 0xffffff00u | (uint32_t)ref);
			continue;
		}
		stack[depth + 1] = f->type;
		hash_level(st, f->type, stack, depth + 1);
	}
}

int cmesh_type_fingerprint(const cmesh_type *type, uint64_t *out_fp)
{
	static const char tag[] = "cmesh-type/1";
	const cmesh_type *stack[MAX_DEPTH];
	XXH3_state_t st;

	if (!out_fp || cmesh_type_check(type))
		return -EINVAL;
	XXH3_INITSTATE(&st);
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, tag, sizeof(tag));
	stack[0] = type;
	hash_level(&st, type, stack, 0);
	*out_fp = XXH3_64bits_digest(&st);
	return 0;
}

bool cmesh__type_matches(const cmesh_type *type, const cmesh_type *other,
			 uint64_t other_fp)
{
	uint64_t fp;

	if (type == other)
		return true;
	return cmesh_type_fingerprint(type, &fp) == 0 && fp == other_fp;
}

static int field_fd(const void *msg, const cmesh_field *f)
{
	int fd;

	memcpy(&fd, (const char *)msg + f->offset, sizeof(fd));
	return fd;
}

static void *field_ptr(const void *msg, const cmesh_field *f)
{
	void *p;

	memcpy(&p, (const char *)msg + f->offset, sizeof(p));
	return p;
}

/* True if field i holds a resource also held by an earlier field. */
static bool is_duplicate(const cmesh_type *t, const void *msg, uint32_t i)
{
	const cmesh_field *f = &t->fields[i];
	bool fd = f->kind == CMESH_FIELD_KIND_FD;

	for (uint32_t j = 0; j < i; j++) {
		const cmesh_field *g = &t->fields[j];

		if ((g->kind == CMESH_FIELD_KIND_FD) != fd)
			continue;
		if (fd ? field_fd(msg, g) == field_fd(msg, f) :
			 field_ptr(msg, g) == field_ptr(msg, f))
			return true;
	}
	return false;
}

static bool field_present(const void *msg, const cmesh_field *f)
{
	return f->kind == CMESH_FIELD_KIND_FD ? field_fd(msg, f) >= 0 :
						field_ptr(msg, f) != NULL;
}

bool cmesh__type_has_endpoints(const cmesh_type *type)
{
	for (uint32_t i = 0; i < type->nfields; i++)
		if (cmesh__field_is_endpoint(type->fields[i].kind))
			return true;
	return false;
}

bool cmesh__type_holds_any(const cmesh_type *type, const void *msg)
{
	for (uint32_t i = 0; i < type->nfields; i++)
		if (cmesh__field_is_endpoint(type->fields[i].kind) &&
		    field_ptr(msg, &type->fields[i]))
			return true;
	return false;
}

bool cmesh__type_holds(const cmesh_type *type, const void *msg,
		       const void *handle)
{
	for (uint32_t i = 0; i < type->nfields; i++)
		if (cmesh__field_is_endpoint(type->fields[i].kind) &&
		    field_ptr(msg, &type->fields[i]) == handle)
			return true;
	return false;
}

int cmesh__type_prepare_move(const cmesh_type *type, const void *msg)
{
	for (uint32_t i = 0; i < type->nfields; i++) {
		const cmesh_field *f = &type->fields[i];
		const cmesh_type *t;
		uint64_t fp;

		if (!field_present(msg, f))
			continue;
		if (is_duplicate(type, msg, i))
			return -EINVAL;
		if (is_untyped(f->kind))
			continue;
		t = hooks->type_of(f->kind, field_ptr(msg, f), NULL);
		if (f->type == t)
			continue;
		t = hooks->type_of(f->kind, field_ptr(msg, f), &fp);
		if (!cmesh__type_matches(f->type, t, fp))
			return -EBADMSG;
	}
	for (uint32_t i = 0; i < type->nfields; i++) {
		const cmesh_field *f = &type->fields[i];

		if (cmesh__field_is_endpoint(f->kind) && field_present(msg, f))
			hooks->prepare_move(f->kind, field_ptr(msg, f));
	}
	return 0;
}

void cmesh__type_release(const cmesh_type *type, const void *msg)
{
	for (uint32_t i = 0; i < type->nfields; i++) {
		const cmesh_field *f = &type->fields[i];

		if (!field_present(msg, f) || is_duplicate(type, msg, i))
			continue;
		if (f->kind == CMESH_FIELD_KIND_FD)
			close(field_fd(msg, f));
		else
			hooks->free(f->kind, field_ptr(msg, f));
	}
}

void cmesh__type_blank(const cmesh_type *type, void *msg)
{
	const int none = -1;

	memset(msg, 0, type->size);
	for (uint32_t i = 0; i < type->nfields; i++)
		if (type->fields[i].kind == CMESH_FIELD_KIND_FD)
			memcpy((char *)msg + type->fields[i].offset, &none,
			       sizeof(none));
}
