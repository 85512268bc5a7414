/* testing.h - the test and fuzzing hooks of the C core (csrc/testing.c), for its test clients
 * (module.c's _test_* functions, tests/fuzz/fuzz_parsers.c); not part of the C API in embgemma.h
 * and not used by the engine. No Python here.
 */
#ifndef EG_TESTING_H
#define EG_TESTING_H

#include <stddef.h>
#include <stdint.h>

#include "embgemma.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Run one kernel of `isa` on caller buffers (tests/test_kernels.py).
 * eg_test_gemm: y[m, n] = x[m, k] . w[n, k]^T with row strides ldx / ldy, w
 * packed (rounded / quantized) as `weights` the way the loader does for the kernels `pack` names:
 * -1 `isa`'s own, else the sum of 1 (integer types: the value ranges of an ISA that sums int16
 * pairs, as AVX2 does) and 2 (bfloat16: activations rounded to bfloat16 and k-pairs summed as
 * vdpbf16ps does, as avx512bf16 does) or 4 (the same products summed as AMX's tdpbf16ps does, as
 * amx does); the scalar ISA runs those kernels' twins.
 * eg_test_vec: op 1 -> y += a x; op 2 -> y *= a; op 3 -> y = gelu_tanh(y) * x;
 * op 4 -> y = exp(y - a) (0 where y is -inf), *result = sum(y). */
eg_status eg_test_gemm(eg_isa isa, eg_weights weights, int pack, const float *x, int64_t ldx, int64_t m, const float *w,
                       int64_t n, int64_t k, float *y, int64_t ldy, char *err, size_t errlen);
eg_status eg_test_vec(eg_isa isa, int op, float a, const float *x, float *y, int64_t n, float *result, char *err,
                      size_t errlen);
/* The fuzzers' entry points (tests/fuzz/).
 * eg_test_parse: the "safetensors" header or "gguf" parser, or ("config") every reader of a model
 * folder's JSON files (config.json, modules.json, Pooling / Dense configs, the shard index), on bytes
 * in memory.
 * eg_test_encode: one eg_encode call decoded from fuzz bytes (any n_seqs, dim, threads, offsets, rows,
 * token ids; see testing.c), checked against eg_encode's contract in embgemma.h: EG_ERR_INTERNAL
 * ("oracle: ...") when eg_encode accepts a call it must refuse, refuses a valid one, or writes a row
 * nobody asked for or a non-finite value; else eg_encode's own status. */
eg_status eg_test_parse(const char *kind, const void *buf, size_t size, char *err, size_t errlen);
eg_status eg_test_encode(const eg_model *m, const void *buf, size_t size, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
