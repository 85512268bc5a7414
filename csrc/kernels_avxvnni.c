/* kernels_avxvnni.c - x86-64 AVX2 + AVX-VNNI (vpdpbusd on ymm, VEX-encoded: Alder Lake and
 * later client cores, Zen 5). Only the integer GEMMs differ from kernels_avx2.c: one vpdpbusd
 * does what vpmaddubsw + vpmaddwd + vpaddd do there, so the same u8 x s8 micro-kernel
 * (kernels_u8s8_ymm.h) gives bit-identical results at a third of the instructions; dispatch.c
 * takes every other kernel from the AVX2 table. Sections in kernels_scalar.c's order.
 * No allocation, no threads, no Python.
 */
#include "kernels.h"

#ifdef EG_HAVE_X86
#include <immintrin.h>
#include <string.h>

#define EG_AVXVNNI EG_TARGET("avx2,fma,avxvnni")

/* ---------------------------------------------------------------- I8 / Q8_0 / Q4_0 */

EG_INLINE EG_AVXVNNI __m256i dot4_avxvnni(__m256i c, __m256i a, __m256i b) {
    return _mm256_dpbusd_avx_epi32(c, a, b);
}
#define U8_TGT EG_AVXVNNI
#define U8_NAME(x) x##_avxvnni
#define U8_DOT4(c, a, b) dot4_avxvnni(c, a, b)
#define U8_MR 6 /* 12 accumulators + 2 weight vectors + 1 activation broadcast: 15 ymm */
#include "kernels_u8s8_ymm.h"

/* ---------------------------------------------------------------- kernel table */

void eg_kernels_avxvnni_fill(eg_kernels *k) {
    k->gemm_q = gemm_q_avxvnni;
    k->pairs16 = 0; /* vpdpbusd sums into int32 */
}
#endif
