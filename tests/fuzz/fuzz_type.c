/* SPDX-License-Identifier: MIT */
/*
 * fuzz_type.c - libFuzzer harness: type descriptors (src/type.c) built from
 * the input: sizes, field kinds and offsets, nested descriptors (a valid
 * one, another fuzzed one, or the descriptor itself). cmesh_type_check()
 * must decide without crashing or looping, and a descriptor it accepts
 * must fingerprint, the same way twice.
 */
#include <cmesh.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct plain {
	uint64_t a;
};
CMESH_TYPE_DEFINE_PLAIN(plain_type, struct plain);

#define MAXF 12u

/* Takes `n` bytes of input (zeroes past its end). */
static void take(const uint8_t **d, size_t *left, void *out, size_t n)
{
	size_t k = *left < n ? *left : n;

	memset(out, 0, n);
	memcpy(out, *d, k);
	*d += k;
	*left -= k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cmesh_field f[2][MAXF];
	cmesh_type t[2];
	uint64_t fp1, fp2;

	for (int k = 0; k < 2; k++) {
		uint32_t tsize = 0;
		uint8_t nf = 0;

		take(&data, &size, &tsize, sizeof(tsize));
		take(&data, &size, &nf, 1);
		nf %= MAXF + 1;
		for (uint32_t i = 0; i < nf; i++) {
			uint8_t kind = 0, which = 0;
			uint32_t off = 0;

			take(&data, &size, &kind, 1);
			take(&data, &size, &off, sizeof(off));
			take(&data, &size, &which, 1);
			f[k][i].kind = kind % 8;
			f[k][i].offset = off % 8192;
			f[k][i].type = which % 4 == 0 ? &plain_type :
				       which % 4 == 1 ? &t[k] :
				       which % 4 == 2 ? &t[!k] :
							NULL;
		}
		t[k] = (cmesh_type){ k ? "fuzz-b" : "fuzz-a", tsize % 8192, nf,
				     nf ? f[k] : NULL };
	}
	for (int k = 0; k < 2; k++) {
		if (cmesh_type_check(&t[k]) != 0)
			continue;
		if (cmesh_type_fingerprint(&t[k], &fp1) != 0 ||
		    cmesh_type_fingerprint(&t[k], &fp2) != 0 || fp1 != fp2)
			abort();
	}
	return 0;
}
