/* SPDX-License-Identifier: MIT */
/*
 * test_type.c - type descriptors: cmesh_type_check and fingerprints.
 */
#define _GNU_SOURCE
#include <cmesh.h>

#include "helpers/testutil.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

TestSuite(type, .init = tu_suite_init, .fini = tu_suite_fini);

struct pong {
	uint64_t v;
};
CMESH_TYPE_DEFINE_PLAIN(pong_type, struct pong);
/* Identical to pong_type, defined separately. */
CMESH_TYPE_DEFINE_PLAIN(pong_type_b, struct pong);

struct pong2 {
	uint64_t v, w;
};
CMESH_TYPE_DEFINE_PLAIN(pong2_type, struct pong2);

struct ping {
	uint64_t seq;
	int fd;
	int other_fd;
	cmesh_sender *reply;
};
CMESH_TYPE_DEFINE(ping_a, struct ping, CMESH_FIELD_FD(struct ping, fd),
		  CMESH_FIELD_SENDER(struct ping, reply, pong_type));
/* Identical to ping_a, with its own nested descriptor. */
CMESH_TYPE_DEFINE(ping_b, struct ping, CMESH_FIELD_FD(struct ping, fd),
		  CMESH_FIELD_SENDER(struct ping, reply, pong_type_b));

/* One level up: a message carrying a receiver of ping messages. */
struct outer {
	cmesh_receiver *rx;
};
CMESH_TYPE_DEFINE(outer_a, struct outer,
		  CMESH_FIELD_RECEIVER(struct outer, rx, ping_a));
CMESH_TYPE_DEFINE(outer_b, struct outer,
		  CMESH_FIELD_RECEIVER(struct outer, rx, ping_b));

struct every_kind {
	int fd;
	int pad;
	cmesh_sender *tx;
	cmesh_receiver *rx;
	cmesh_oneshot_sender *otx;
	cmesh_oneshot_receiver *orx;
};
CMESH_TYPE_DEFINE(every_kind_type, struct every_kind,
		  CMESH_FIELD_FD(struct every_kind, fd),
		  CMESH_FIELD_SENDER(struct every_kind, tx, pong_type),
		  CMESH_FIELD_RECEIVER(struct every_kind, rx, pong_type),
		  CMESH_FIELD_ONESHOT_SENDER(struct every_kind, otx, pong_type),
		  CMESH_FIELD_ONESHOT_RECEIVER(struct every_kind, orx,
					       pong_type));

/* A type whose endpoint field names the type itself. */
struct selfmsg {
	cmesh_sender *next;
};
extern const cmesh_type self_type;
CMESH_TYPE_DEFINE(self_type, struct selfmsg,
		  CMESH_FIELD_SENDER(struct selfmsg, next, self_type));

static uint64_t fp(const cmesh_type *t)
{
	uint64_t v = 0;
	int r = cmesh_type_fingerprint(t, &v);

	cr_assert_eq(r, 0, "fingerprint of %s: %d (%s)", t->name, r,
		     cmesh_strerror(r));
	return v;
}

static int check1(uint32_t size, uint32_t kind, uint32_t off,
		  const cmesh_type *ep)
{
	cmesh_field f = { kind, off, ep };
	cmesh_type t = { "t", size, 1, &f };

	return cmesh_type_check(&t);
}

static int check2(uint32_t size, cmesh_field a, cmesh_field b)
{
	cmesh_field f[2] = { a, b };
	cmesh_type t = { "t", size, 2, f };

	return cmesh_type_check(&t);
}

/* ---- cmesh_type_check ------------------------------------------------ */

Test(type, check_accepts_well_formed_descriptors)
{
	TU_ASSERT_RC(cmesh_type_check(&pong_type), 0);
	TU_ASSERT_RC(cmesh_type_check(&ping_a), 0);
	TU_ASSERT_RC(cmesh_type_check(&outer_a), 0);
	TU_ASSERT_RC(cmesh_type_check(&every_kind_type), 0);
	TU_ASSERT_RC(check1(4, CMESH_FIELD_KIND_FD, 0, NULL), 0);
	TU_ASSERT_RC(check1(8, CMESH_FIELD_KIND_FD, 4, NULL), 0);
	TU_ASSERT_RC(check1(sizeof(void *), CMESH_FIELD_KIND_SENDER, 0,
			    &pong_type),
		     0);
}

Test(type, check_rejects_null)
{
	TU_ASSERT_RC(cmesh_type_check(NULL), -EINVAL);
}

Test(type, check_rejects_size_zero_and_over_the_maximum)
{
	cmesh_type t = { "t", 0, 0, NULL };

	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	t.size = CMESH_TYPE_MAX_SIZE + 1;
	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	t.size = UINT32_MAX;
	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	t.size = 1;
	TU_ASSERT_RC(cmesh_type_check(&t), 0);
	t.size = CMESH_TYPE_MAX_SIZE;
	TU_ASSERT_RC(cmesh_type_check(&t), 0);
}

Test(type, check_rejects_fields_outside_the_struct)
{
	/* An int at 12 needs 16 bytes. */
	TU_ASSERT_RC(check1(12, CMESH_FIELD_KIND_FD, 12, NULL), -EINVAL);
	TU_ASSERT_RC(check1(12, CMESH_FIELD_KIND_FD, 8, NULL), 0);
	/* A pointer at 8 needs 16 bytes. */
	TU_ASSERT_RC(check1(12, CMESH_FIELD_KIND_SENDER, 8, &pong_type),
		     -EINVAL);
	TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_SENDER, 8, &pong_type), 0);
	/* offset + size wrapping around 32 bits. */
	TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_FD, 0xfffffffcu, NULL),
		     -EINVAL);
	TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_RECEIVER, 0xfffffff8u,
			    &pong_type),
		     -EINVAL);
}

Test(type, check_rejects_overlapping_fields)
{
	cmesh_field fd0 = { CMESH_FIELD_KIND_FD, 0, NULL };
	cmesh_field fd4 = { CMESH_FIELD_KIND_FD, 4, NULL };
	cmesh_field fd8 = { CMESH_FIELD_KIND_FD, 8, NULL };
	cmesh_field tx0 = { CMESH_FIELD_KIND_SENDER, 0, &pong_type };
	cmesh_field tx8 = { CMESH_FIELD_KIND_SENDER, 8, &pong_type };

	TU_ASSERT_RC(check2(16, fd0, fd0), -EINVAL);
	TU_ASSERT_RC(check2(16, tx0, fd4), -EINVAL);
	TU_ASSERT_RC(check2(16, fd4, tx0), -EINVAL); /* any order */
	TU_ASSERT_RC(check2(16, tx8, fd8), -EINVAL);
	TU_ASSERT_RC(check2(16, tx8, tx8), -EINVAL);
	/* Adjacent is fine, in either order. */
	TU_ASSERT_RC(check2(16, fd0, fd4), 0);
	TU_ASSERT_RC(check2(16, fd4, fd0), 0);
	TU_ASSERT_RC(check2(16, tx8, fd0), 0);
}

Test(type, check_rejects_misaligned_fields)
{
	TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_FD, 2, NULL), -EINVAL);
	TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_FD, 1, NULL), -EINVAL);
	TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_FD, 6, NULL), -EINVAL);
	if (_Alignof(void *) > 4)
		TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_SENDER, 4, &pong_type),
			     -EINVAL);
	TU_ASSERT_RC(check1(16, CMESH_FIELD_KIND_ONESHOT_RECEIVER, 3,
			    &pong_type),
		     -EINVAL);
}

Test(type, check_rejects_unknown_kinds)
{
	TU_ASSERT_RC(check1(16, 0, 0, NULL), -EINVAL);
	TU_ASSERT_RC(check1(16, 6, 0, &pong_type), -EINVAL);
	TU_ASSERT_RC(check1(16, 99, 0, NULL), -EINVAL);
	TU_ASSERT_RC(check1(16, UINT32_MAX, 0, &pong_type), -EINVAL);
}

Test(type, check_rejects_endpoint_fields_without_a_type)
{
	static const uint32_t kinds[] = { CMESH_FIELD_KIND_SENDER,
					  CMESH_FIELD_KIND_RECEIVER,
					  CMESH_FIELD_KIND_ONESHOT_SENDER,
					  CMESH_FIELD_KIND_ONESHOT_RECEIVER };

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		TU_ASSERT_RC(check1(16, kinds[i], 0, NULL), -EINVAL);
		TU_ASSERT_RC(check1(16, kinds[i], 0, &pong_type), 0);
	}
}

Test(type, check_rejects_an_endpoint_naming_an_invalid_type)
{
	static const cmesh_type bad = { "bad", 0, 0, NULL };
	static const cmesh_field badf[] = { { CMESH_FIELD_KIND_FD, 6, NULL } };
	static const cmesh_type bad_field = { "bad_field", 16, 1, badf };
	cmesh_field f = { CMESH_FIELD_KIND_SENDER, 0, &bad };
	cmesh_type t = { "t", 8, 1, &f };
	/* Two levels down. */
	cmesh_field g = { CMESH_FIELD_KIND_RECEIVER, 0, &t };
	cmesh_type u = { "u", 8, 1, &g };

	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	TU_ASSERT_RC(cmesh_type_check(&u), -EINVAL);
	f.type = &bad_field;
	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	TU_ASSERT_RC(cmesh_type_check(&u), -EINVAL);
	f.type = &pong_type;
	TU_ASSERT_RC(cmesh_type_check(&t), 0);
	TU_ASSERT_RC(cmesh_type_check(&u), 0);
}

Test(type, check_rejects_a_field_list_that_is_null_or_too_long)
{
	cmesh_field *f;
	cmesh_type t = { "t", 16, 1, NULL };
	uint32_t n = CMESH_TYPE_MAX_FIELDS + 1;

	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	f = calloc(n, sizeof(*f));
	cr_assert_not_null(f);
	for (uint32_t i = 0; i < n; i++)
		f[i] = (cmesh_field){ CMESH_FIELD_KIND_FD,
				      (uint32_t)(i * sizeof(int)), NULL };
	t.size = (uint32_t)(n * sizeof(int));
	t.fields = f;
	t.nfields = CMESH_TYPE_MAX_FIELDS;
	TU_ASSERT_RC(cmesh_type_check(&t), 0);
	t.nfields = n;
	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	t.nfields = UINT32_MAX;
	TU_ASSERT_RC(cmesh_type_check(&t), -EINVAL);
	free(f);
}

/* A second, separately defined self-referencing type. */
extern const cmesh_type self_type_b;
CMESH_TYPE_DEFINE(self_type_b, struct selfmsg,
		  CMESH_FIELD_SENDER(struct selfmsg, next, self_type_b));

Test(type, check_and_fingerprint_terminate_on_a_self_referencing_type)
{
	/*
	 * The header leaves open whether a cycle is valid; it must not hang
	 * or crash, and check and fingerprint must agree on it.
	 */
	uint64_t v = 0, w = 0;
	int rc = cmesh_type_check(&self_type);

	cr_assert(rc == 0 || rc == -EINVAL, "check returned %d", rc);
	TU_ASSERT_RC(cmesh_type_fingerprint(&self_type, &v), rc);
	if (rc == 0) {
		TU_ASSERT_RC(cmesh_type_fingerprint(&self_type_b, &w), 0);
		cr_assert_eq(v, w, "identical cyclic types, different prints");
		cr_assert_neq(v, fp(&pong_type));
	}
}

Test(type, check_rejects_nesting_far_deeper_than_eight)
{
	enum {
		DEPTH = 20
	};
	cmesh_field f[DEPTH];
	cmesh_type t[DEPTH];

	t[0] = pong_type;
	for (int i = 1; i < DEPTH; i++) {
		f[i] = (cmesh_field){ CMESH_FIELD_KIND_SENDER, 0, &t[i - 1] };
		t[i] = (cmesh_type){ "chain", (uint32_t)sizeof(void *), 1,
				     &f[i] };
	}
	/* Shallow chains are fine. */
	TU_ASSERT_RC(cmesh_type_check(&t[3]), 0);
	TU_ASSERT_RC(cmesh_type_check(&t[DEPTH - 1]), -EINVAL);
}

/* ---- fingerprints ------------------------------------------------------ */

Test(type, fingerprint_rejects_null_arguments_and_invalid_types)
{
	static const cmesh_type bad = { "bad", 0, 0, NULL };
	uint64_t v;

	TU_ASSERT_RC(cmesh_type_fingerprint(NULL, &v), -EINVAL);
	TU_ASSERT_RC(cmesh_type_fingerprint(&pong_type, NULL), -EINVAL);
	TU_ASSERT_RC(cmesh_type_fingerprint(&bad, &v), -EINVAL);
}

Test(type, fingerprint_is_stable)
{
	cr_assert_eq(fp(&ping_a), fp(&ping_a));
	cr_assert_eq(fp(&every_kind_type), fp(&every_kind_type));
}

Test(type, fingerprint_is_equal_for_identical_descriptors_defined_apart)
{
	cmesh_type copy = pong_type;
	cmesh_field fields[2];
	cmesh_type ping_c;

	cr_assert_eq(fp(&pong_type), fp(&pong_type_b));
	cr_assert_eq(fp(&pong_type), fp(&copy));
	/* Nested descriptors that are separate but identical. */
	cr_assert_eq(fp(&ping_a), fp(&ping_b));
	cr_assert_eq(fp(&outer_a), fp(&outer_b));
	/* Same contents at other addresses, name in another buffer. */
	memcpy(fields, ping_a.fields, sizeof(fields));
	ping_c = (cmesh_type){ strdup("struct ping"), ping_a.size,
			       ping_a.nfields, fields };
	cr_assert_eq(fp(&ping_a), fp(&ping_c));
	free((char *)ping_c.name);
}

Test(type, fingerprint_changes_with_name_size_offset_kind_or_nested_type)
{
	const cmesh_field *pf = ping_a.fields;
	cmesh_field moved[2] = { pf[0], pf[1] };
	cmesh_field kind[2] = { pf[0], pf[1] };
	cmesh_field nested[2] = { pf[0], pf[1] };
	cmesh_field ofield;
	cmesh_type v[8];
	uint64_t f[8];
	size_t n = 0;

	moved[0].offset = (uint32_t)offsetof(struct ping, other_fd);
	kind[1].kind = CMESH_FIELD_KIND_RECEIVER;
	nested[1].type = &pong2_type;

	v[n++] = ping_a;
	v[n++] = (cmesh_type){ "struct ping2", ping_a.size, 2, pf };
	v[n++] = (cmesh_type){ "struct ping", ping_a.size + 8, 2, pf };
	v[n++] = (cmesh_type){ "struct ping", ping_a.size, 2, moved };
	v[n++] = (cmesh_type){ "struct ping", ping_a.size, 2, kind };
	v[n++] = (cmesh_type){ "struct ping", ping_a.size, 2, nested };
	v[n++] = (cmesh_type){ "struct ping", ping_a.size, 1, pf };
	for (size_t i = 0; i < n; i++)
		f[i] = fp(&v[i]);
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			cr_assert_neq(f[i], f[j],
				      "variants %zu and %zu share fingerprint "
				      "%016llx",
				      i, j, (unsigned long long)f[i]);

	/* A change two levels down shows at the top. */
	ofield = outer_a.fields[0];
	ofield.type = &v[5];
	{
		cmesh_type o = { outer_a.name, outer_a.size, 1, &ofield };

		cr_assert_neq(fp(&o), fp(&outer_a));
	}
	/* Plain types of different sizes or names differ. */
	cr_assert_neq(fp(&pong_type), fp(&pong2_type));
	{
		cmesh_type renamed = { "struct pong_", pong_type.size, 0,
				       NULL };

		cr_assert_neq(fp(&renamed), fp(&pong_type));
	}
}

Test(type, fingerprint_distinguishes_every_endpoint_kind)
{
	uint64_t f[4];
	static const uint32_t kinds[] = { CMESH_FIELD_KIND_SENDER,
					  CMESH_FIELD_KIND_RECEIVER,
					  CMESH_FIELD_KIND_ONESHOT_SENDER,
					  CMESH_FIELD_KIND_ONESHOT_RECEIVER };

	for (int i = 0; i < 4; i++) {
		cmesh_field fl = { kinds[i], 0, &pong_type };
		cmesh_type t = { "k", 8, 1, &fl };

		f[i] = fp(&t);
		for (int j = 0; j < i; j++)
			cr_assert_neq(f[i], f[j], "kinds %d and %d", i, j);
	}
}
