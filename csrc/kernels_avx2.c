/* kernels_avx2.c - AVX2 + FMA kernels for x86-64. Compiled for the baseline
 * ISA with per-function target attributes, so nothing here runs unless
 * dispatch.c has seen AVX2, FMA and OS-enabled YMM state. Each kernel has a
 * scalar twin in kernels_scalar.c; sections in that file's order. This table is also the base of
 * avxvnni's and avx512's (dispatch.c). No allocation, no threads, no Python.
 */
#include "kernels.h"

#ifdef EG_HAVE_X86
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define EG_AVX2 EG_TARGET("avx2,fma")

/* ---------------------------------------------------------------- float GEMM (F32, BF16) */

#define MR 6 /* rows of x per micro-kernel: 6 x 2 accumulators + 2 B + 1 A = 15 ymm */

static _Alignas(32) const uint32_t hi_mask[8] = {
    0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u};

/* Stores an mr x cols block of 2-vector rows (columns 0..7 in v[r][0], 8..15 in v[r][1]). */
EG_INLINE EG_AVX2 void store_rows(int mr, __m256 v[MR][2], float *y, int64_t ldy, int64_t cols) {
    for (int r = 0; r < MR; r++) {
        if (r >= mr) break;
        if (cols == EG_PANEL) {
            _mm256_storeu_ps(y + r * ldy, v[r][0]);
            _mm256_storeu_ps(y + r * ldy + 8, v[r][1]);
        } else {
            float tmp[EG_PANEL];
            _mm256_storeu_ps(tmp, v[r][0]);
            _mm256_storeu_ps(tmp + 8, v[r][1]);
            memcpy(y + r * ldy, tmp, (size_t)cols * sizeof(float));
        }
    }
}

/* c[r] += x[r][kk] * (b0 | b1) for the mr rows: one k step of the float micro-kernel. */
EG_INLINE EG_AVX2 void fma_step(int mr, __m256 c[MR][2], const float *x, int64_t ldx, int64_t kk, __m256 b0,
                                __m256 b1) {
    for (int r = 0; r < MR; r++) {
        if (r < mr) {
            __m256 a = _mm256_broadcast_ss(x + r * ldx + kk);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
}

/* fma_step on 3 rows (xr, xr + ld bytes, xr + 2 ld) and both halves of the panel, as one asm block:
 * left to itself, GCC hoists the broadcasts of a BF16 pair's second k over the first k's FMAs
 * and runs out of the 16 ymm registers (see micro). */
EG_INLINE EG_AVX2 void fma_step3(__m256 *c, const float *xr, int64_t ld, __m256 b0, __m256 b1) {
#ifdef EG_ISA_PER_FILE /* no GNU inline assembly (MSVC): the same instructions as intrinsics */
    for (int r = 0; r < 3; r++) {
        const __m256 a = _mm256_broadcast_ss((const float *)((const char *)xr + r * ld));
        c[2 * r] = _mm256_fmadd_ps(a, b0, c[2 * r]);
        c[2 * r + 1] = _mm256_fmadd_ps(a, b1, c[2 * r + 1]);
    }
#else
    __m256 a;
    __asm__("vbroadcastss (%[x]), %[a]\n\t"
            "vfmadd231ps %[b0], %[a], %[c0]\n\t"
            "vfmadd231ps %[b1], %[a], %[c1]\n\t"
            "vbroadcastss (%[x],%[ld],1), %[a]\n\t"
            "vfmadd231ps %[b0], %[a], %[c2]\n\t"
            "vfmadd231ps %[b1], %[a], %[c3]\n\t"
            "vbroadcastss (%[x],%[ld],2), %[a]\n\t"
            "vfmadd231ps %[b0], %[a], %[c4]\n\t"
            "vfmadd231ps %[b1], %[a], %[c5]"
            : [c0] "+x"(c[0]), [c1] "+x"(c[1]), [c2] "+x"(c[2]), [c3] "+x"(c[3]), [c4] "+x"(c[4]), [c5] "+x"(c[5]),
              [a] "=&x"(a)
            : [b0] "x"(b0), [b1] "x"(b1), [x] "r"(xr), [ld] "r"(ld), "m"(*xr)); /* x is read-only here */
#endif
}

/* A BF16 k step: all MR rows through fma_step3, a remainder tile through fma_step. */
EG_INLINE EG_AVX2 void bf16_step(int mr, __m256 c[MR][2], const float *x, int64_t ldx, int64_t kk, __m256 b0,
                                 __m256 b1) {
    if (mr == MR) {
        fma_step3(&c[0][0], x + kk, ldx * 4, b0, b1);
        fma_step3(&c[3][0], x + 3 * ldx + kk, ldx * 4, b0, b1);
    } else {
        fma_step(mr, c, x, ldx, kk, b0, b1);
    }
}

/* y[0..mr, 0..cols) = x[0..mr, 0..k) . panel, the panel F32 or (bf16 != 0) BF16.
 * Every output element is one FMA chain over kk = 0..k-1, whatever mr is:
 * results do not depend on how rows are split into tiles or threads. A BF16
 * k-pair is two 32-byte loads (columns 0-7, 8-15): a 32-bit lane holds a
 * column's k (low half) and k+1 (high half), so a shift and a mask give both as
 * exact floats. */
EG_INLINE EG_AVX2 void micro(int mr, int bf16, const float *x, int64_t ldx, const void *panel, int64_t k, float *y,
                             int64_t ldy, int64_t cols, const char *pf) {
    __m256 c[MR][2];
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    if (bf16) {
        const uint16_t *pw = (const uint16_t *)panel;
        int64_t kk = 0;
        for (; kk + 2 <= k; kk += 2) {
            if (pf) _mm_prefetch(pf + kk * EG_PANEL * 2, _MM_HINT_T0);
            const __m256i r0 = _mm256_loadu_si256((const __m256i *)(pw + kk * EG_PANEL));
            const __m256i r1 = _mm256_loadu_si256((const __m256i *)(pw + kk * EG_PANEL + 16));
            bf16_step(mr, c, x, ldx, kk, _mm256_castsi256_ps(_mm256_slli_epi32(r0, 16)),
                      _mm256_castsi256_ps(_mm256_slli_epi32(r1, 16)));
            /* k+1: the pair loaded again and masked against the constant in memory. Kept as r0 / r1
             * with the mask in a register, that is 17 live ymm: GCC spilled accumulators (or rebuilt
             * the mask every pair), ~20% slower than the k-major layout this replaced; this way and
             * with fma_step3, ~3% (single-thread GEMM, Sapphire Rapids). */
            __m256 o0, o1;
#ifdef EG_ISA_PER_FILE
            const __m256i m = _mm256_load_si256((const __m256i *)hi_mask);
            o0 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(pw + kk * EG_PANEL)), m));
            o1 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(pw + kk * EG_PANEL + 16)), m));
#else
            /* each half its own memory operand: "32%2" would paste 32 before a displacement GCC chose */
            __asm__("vmovdqu %2, %0\n\tvpand %4, %0, %0\n\tvmovdqu %3, %1\n\tvpand %4, %1, %1"
                    : "=&x"(o0), "=&x"(o1)
                    : "m"(*(const uint16_t(*)[EG_PANEL])(pw + kk * EG_PANEL)),
                      "m"(*(const uint16_t(*)[EG_PANEL])(pw + kk * EG_PANEL + EG_PANEL)), "m"(hi_mask));
#endif
            bf16_step(mr, c, x, ldx, kk + 1, o0, o1);
        }
        if (kk < k) { /* k odd: the last pair's even half */
            const __m256i r0 = _mm256_loadu_si256((const __m256i *)(pw + kk * EG_PANEL));
            const __m256i r1 = _mm256_loadu_si256((const __m256i *)(pw + kk * EG_PANEL + 16));
            fma_step(mr, c, x, ldx, kk, _mm256_castsi256_ps(_mm256_slli_epi32(r0, 16)),
                     _mm256_castsi256_ps(_mm256_slli_epi32(r1, 16)));
        }
    } else {
        for (int64_t kk = 0; kk < k; kk++) {
            if (pf) _mm_prefetch(pf + kk * EG_PANEL * 4, _MM_HINT_T0);
            fma_step(mr, c, x, ldx, kk, _mm256_loadu_ps((const float *)panel + kk * EG_PANEL),
                     _mm256_loadu_ps((const float *)panel + kk * EG_PANEL + 8));
        }
    }
    store_rows(mr, c, y, ldy, cols);
}

/* The row loop shared by the F32 and BF16 kernels: full MR-row tiles, then one remainder tile. The
 * first tile of a panel prefetches the next panel (pf), one 64-byte line per k step (a float k step, a
 * BF16 k-pair): with few rows (a query's ~20) each panel is read from memory once and used for only a few
 * tiles, and without it the core waited on the panel loads (perf annotate: a third of the float GEMM's
 * time on one load, 1 thread, a 20-token query). */
EG_INLINE EG_AVX2 void gemm_float(int bf16, const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0,
                                  int64_t p1, float *y, int64_t ldy) {
    const int64_t k = w->k, pbytes = bf16 ? eg_bf16_panel_elems(k) * 2 : k * EG_PANEL * 4;
    for (int64_t p = p0; p < p1; p++) {
        const void *panel = (const uint8_t *)w->data + p * pbytes;
        const char *pf = p + 1 < w->n_panels ? (const char *)panel + pbytes : NULL;
        const int64_t cols = eg_panel_cols(w, p);
        float *yp = y + p * EG_PANEL;
        int64_t i = 0;
        if (m >= MR) {
            micro(MR, bf16, x, ldx, panel, k, yp, ldy, cols, pf);
            pf = NULL;
            i = MR;
        }
        for (; i + MR <= m; i += MR) micro(MR, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols, NULL);
        switch (m - i) {
        case 5: micro(5, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols, pf); break;
        case 4: micro(4, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols, pf); break;
        case 3: micro(3, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols, pf); break;
        case 2: micro(2, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols, pf); break;
        case 1: micro(1, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols, pf); break;
        default: break;
        }
    }
}

static EG_AVX2 void gemm_avx2(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                              float *y, int64_t ldy) {
    gemm_float(0, x, ldx, m, w, p0, p1, y, ldy);
}

static EG_AVX2 void gemm_bf16_avx2(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0,
                                   int64_t p1, float *y, int64_t ldy) {
    gemm_float(1, x, ldx, m, w, p0, p1, y, ldy);
}

/* ---------------------------------------------------------------- I8 / Q8_0 / Q4_0 */

/* I8, Q8_0 and Q4_0 weights: u8 x s8 products, 4 k per int32 lane. Without VNNI a k-quad takes
 * vpmaddubsw (pairs into int16: 2 * |a| * |w| <= 32767 by construction, so no saturation) then
 * vpmaddwd against ones (int16 pairs into int32), then vpaddd. Written as one asm block so GCC
 * keeps each chain together (left alone it hoists every multiply of a k step before the adds and
 * runs out of the 16 ymm registers). */
EG_INLINE EG_AVX2 __m256i dot4_avx2(__m256i c, __m256i a, __m256i b) {
    const __m256i ones = _mm256_set1_epi16(1);
#ifdef EG_ISA_PER_FILE
    return _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
#else
    __m256i t;
    __asm__("vpmaddubsw %3, %2, %1\n\tvpmaddwd %4, %1, %1\n\tvpaddd %1, %0, %0"
            : "+x"(c), "=&x"(t)
            : "x"(a), "x"(b), "x"(ones));
    return c;
#endif
}
#define U8_TGT EG_AVX2
#define U8_NAME(x) x##_avx2
#define U8_DOT4(c, a, b) dot4_avx2(c, a, b)
#define U8_MR 4
#include "kernels_u8s8_ymm.h"
#undef U8_TGT
#undef U8_NAME
#undef U8_DOT4
#undef U8_MR

/* A full block of 32 activations: its 4 vectors into v, returns amax, or NaN when a value is NaN. */
EG_INLINE EG_AVX2 float block_amax(const float *xb, __m256 v[4]) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 nan = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
    for (int j = 0; j < 4; j++) {
        v[j] = _mm256_loadu_ps(xb + 8 * j);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[j], v[j], _CMP_UNORD_Q));
        mx = _mm256_max_ps(mx, _mm256_and_ps(v[j], absmask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm256_movemask_ps(nan) ? NAN : _mm_cvtss_f32(m4);
}

/* A full block of 32 activations as the twins round it (kernels_scalar.c's quantize_block): 4 vectors of
 * int32 a, |a| <= qmax, vcvtps2dq rounding to nearest even as round_even does; all 0 for a block with NaN
 * or inf (returns a NaN scale) or one below qmax / FLT_MAX (scale 0). Returns the scale. */
EG_INLINE EG_AVX2 float block_ints(const float *xb, int qmax, __m256i r[4]) {
    __m256 v[4];
    const float fq = (float)qmax, amax = block_amax(xb, v), fi = amax > 0.0f ? fq / amax : 0.0f;
    if (!(amax < INFINITY) || !(fi < INFINITY)) {
        for (int j = 0; j < 4; j++) r[j] = _mm256_setzero_si256();
        return amax < INFINITY ? 0.0f : NAN;
    }
    const __m256 inv = _mm256_set1_ps(fi);
    const __m256i lo = _mm256_set1_epi32(-qmax), hi = _mm256_set1_epi32(qmax);
    for (int j = 0; j < 4; j++)
        r[j] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv)), lo), hi);
    return amax / fq;
}

/* Activations per block of 32 to uint8 (eg_quantize_blocks_u8's twin, bit for bit): block_ints plus the
 * zero point. A row's partial last block goes to the twin itself. */
static EG_AVX2 void quantize_avx2(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, uint8_t *q, int64_t ldq,
                                  float *scale, int64_t ldxs) {
    const int64_t full = k / EG_QBLOCK;
    const __m256i z = _mm256_set1_epi32(qmax + 1), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < m; i++) {
        for (int64_t b = 0; b < full; b++) { /* a + qmax + 1, two packs and a lane permute put 32 bytes in order */
            __m256i r[4];
            scale[i * ldxs + b] = block_ints(x + i * ldx + b * EG_QBLOCK, qmax, r);
            for (int j = 0; j < 4; j++) r[j] = _mm256_add_epi32(r[j], z);
            const __m256i p = _mm256_packus_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
            _mm256_storeu_si256((__m256i *)(q + i * ldq + b * EG_QBLOCK), _mm256_permutevar8x32_epi32(p, order));
        }
        if (full * EG_QBLOCK < k)
            eg_quantize_blocks_u8(x + i * ldx + full * EG_QBLOCK, ldx, 1, k - full * EG_QBLOCK, qmax,
                                  q + i * ldq + full * EG_QBLOCK, ldq, scale + i * ldxs + full, ldxs);
    }
}

/* I16: int16 x int16 pairs into int32 lanes (vpmaddwd), then vpaddd: with |a|, |w| <= EG_I16_QMAX a
 * block's sums are exact. One k-pair of a panel is 64 bytes (columns 0-7, then 8-15), a row's k-pair
 * one 32-bit broadcast. MR rows x 16 columns: 12 int32 accumulators, 2 panel vectors, the broadcast
 * and one product: all 16 ymm registers. */

/* One row's k-pair xp against both panel halves: c0 += w0 . a, c1 += w1 . a. One asm block, as
 * dot4_avx2, so GCC keeps each multiply beside its add (left alone it hoists the 12 multiplies of a
 * k-pair and spills accumulators to the stack, seen in perf annotate: the int16 mode then ran at 1.03x
 * float32 end to end, with this block 1.40x, one thread, same run). */
EG_INLINE EG_AVX2 void madd_pair(__m256i *c0, __m256i *c1, const int16_t *xp, __m256i w0, __m256i w1) {
#ifdef EG_ISA_PER_FILE
    int32_t pair;
    memcpy(&pair, xp, sizeof pair);
    const __m256i a = _mm256_set1_epi32(pair);
    *c0 = _mm256_add_epi32(*c0, _mm256_madd_epi16(a, w0));
    *c1 = _mm256_add_epi32(*c1, _mm256_madd_epi16(a, w1));
#else
    __m256i a, t;
    __asm__("vpbroadcastd %[x], %[a]\n\t"
            "vpmaddwd %[w0], %[a], %[t]\n\t"
            "vpaddd %[t], %[c0], %[c0]\n\t"
            "vpmaddwd %[w1], %[a], %[t]\n\t"
            "vpaddd %[t], %[c1], %[c1]"
            : [c0] "+x"(*c0), [c1] "+x"(*c1), [a] "=&x"(a), [t] "=&x"(t)
            : [w0] "x"(w0), [w1] "x"(w1), [x] "m"(*(const int16_t(*)[2])xp)); /* xp[0..1], one operand */
#endif
}

EG_INLINE EG_AVX2 void micro_w16(int mr, const int16_t *xq, int64_t ldq, const float *xs, int64_t ldxs,
                                 const int16_t *panel, const float *ws, int64_t nb, float *y, int64_t ldy,
                                 int64_t cols) {
    __m256 f[MR][2];
    const int16_t *x[MR];
    const float *s[MR];
    for (int r = 0; r < MR; r++) {
        f[r][0] = f[r][1] = _mm256_setzero_ps();
        x[r] = xq + (r < mr ? r : 0) * ldq; /* rows past mr repeat row 0 and are never stored */
        s[r] = xs + (r < mr ? r : 0) * ldxs;
    }
    for (int64_t b = 0; b < nb; b++) {
        __m256i c[MR][2];
        for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
        for (int kp = 0; kp < EG_QBLOCK / 2; kp++) {
            const int16_t *pw = panel + (b * EG_QBLOCK / 2 + kp) * EG_PANEL * 2;
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)pw);
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(pw + 16));
            for (int r = 0; r < MR; r++) madd_pair(&c[r][0], &c[r][1], x[r] + b * EG_QBLOCK + 2 * kp, w0, w1);
        }
        const __m256 w0 = _mm256_loadu_ps(ws + b * EG_PANEL), w1 = _mm256_loadu_ps(ws + b * EG_PANEL + 8);
        for (int r = 0; r < MR; r++) {
            if (r >= mr) break;
            const __m256 sa = _mm256_set1_ps(s[r][b]);
            f[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[r][0]), _mm256_mul_ps(sa, w0), f[r][0]);
            f[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[r][1]), _mm256_mul_ps(sa, w1), f[r][1]);
        }
    }
    store_rows(mr, f, y, ldy, cols);
}

static EG_AVX2 void gemm_w16_avx2(const int16_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                  const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const int64_t kb = eg_ldq(w->k), nb = kb / EG_QBLOCK;
    for (int64_t p = p0; p < p1; p++) {
        const int16_t *panel = (const int16_t *)w->data + p * kb * EG_PANEL;
        const float *ws = w->scale + p * nb * EG_PANEL;
        const int64_t cols = eg_panel_cols(w, p);
        float *yp = y + p * EG_PANEL;
        int64_t i = 0;
        for (; i + MR <= m; i += MR) micro_w16(MR, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, yp + i * ldy, ldy, cols);
        switch (m - i) { /* a constant row count per call, so each tail is its own unrolled copy */
#define W16_TAIL(n)                                                                                                   \
    case n: micro_w16(n, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, yp + i * ldy, ldy, cols); break;
            W16_TAIL(5)
            W16_TAIL(4)
            W16_TAIL(3)
            W16_TAIL(2)
            W16_TAIL(1)
#undef W16_TAIL
        default: break;
        }
    }
}

/* Activations per block of 32 to int16 (eg_quantize_blocks_i16's twin, bit for bit): block_ints, kept
 * signed. A row's partial last block goes to the twin itself. */
static EG_AVX2 void quantize_w16_avx2(const float *x, int64_t ldx, int64_t m, int64_t k, int16_t *q, int64_t ldq,
                                      float *scale, int64_t ldxs) {
    const int64_t full = k / EG_QBLOCK;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t b = 0; b < full; b++) { /* one signed pack per 16 and a 64-bit lane permute */
            __m256i r[4];
            int16_t *qb = q + i * ldq + b * EG_QBLOCK;
            scale[i * ldxs + b] = block_ints(x + i * ldx + b * EG_QBLOCK, EG_I16_QMAX, r);
            _mm256_storeu_si256((__m256i *)qb, _mm256_permute4x64_epi64(_mm256_packs_epi32(r[0], r[1]), 0xD8));
            _mm256_storeu_si256((__m256i *)(qb + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(r[2], r[3]), 0xD8));
        }
        if (full * EG_QBLOCK < k)
            eg_quantize_blocks_i16(x + i * ldx + full * EG_QBLOCK, ldx, 1, k - full * EG_QBLOCK,
                                   q + i * ldq + full * EG_QBLOCK, ldq, scale + i * ldxs + full, ldxs);
    }
}

/* ---------------------------------------------------------------- row operations */

EG_INLINE EG_AVX2 float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static EG_AVX2 void axpy_avx2(float a, const float *x, float *y, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static EG_AVX2 void scale_avx2(float a, float *y, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

/* exp(x) for 8 floats: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (Cephes
 * coefficients), 2^n through the exponent bits. About 1 ulp; below -87.3 the result is 0, above
 * 88.7 it is clamped. */
EG_INLINE EG_AVX2 __m256 exp8(__m256 x) {
    __m256 nonzero = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ); /* below: flush to 0 */
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), nonzero);
}

static EG_AVX2 void gelu_gate_avx2(float *g, const float *up, int64_t n) {
    const __m256 beta = _mm256_set1_ps(0.7978845608028654f), kappa = _mm256_set1_ps(0.044715f);
    const __m256 m2 = _mm256_set1_ps(-2.0f), one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        __m256 u = _mm256_mul_ps(beta, _mm256_fmadd_ps(kappa, x3, x));
        __m256 d = _mm256_add_ps(one, exp8(_mm256_mul_ps(m2, u)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, d), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) {
        float x = g[i];
        float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        g[i] = x / (1.0f + expf(-2.0f * u)) * up[i];
    }
}

static EG_AVX2 float exp_sub_avx2(float *s, float m, int64_t n) {
    const __m256 vm = _mm256_set1_ps(m), ninf = _mm256_set1_ps(-INFINITY);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(s + i);
        __m256 keep = _mm256_cmp_ps(x, ninf, _CMP_NEQ_OQ);
        __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(x, vm)), keep);
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum(acc);
    for (; i < n; i++) {
        s[i] = s[i] == -INFINITY ? 0.0f : expf(s[i] - m);
        sum += s[i];
    }
    return sum;
}

/* ---------------------------------------------------------------- FMA peak */

static EG_AVX2 double fma_loop_avx2(int64_t iters, float *sink) {
    __m256 c[12];
    for (int j = 0; j < 12; j++) c[j] = _mm256_set1_ps((float)j);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) c[j] = _mm256_fmadd_ps(c[j], a, b);
    for (int j = 0; j < 12; j++) *sink += hsum(c[j]);
    return (double)iters * 12 * 8 * 2;
}

/* ---------------------------------------------------------------- kernel table */

const eg_kernels eg_kernels_avx2 = {
    .gemm = gemm_avx2,
    .gemm_bf16 = gemm_bf16_avx2,
    .gemm_q = gemm_q_avx2,
    .quantize = quantize_avx2,
    .gemm_w16 = gemm_w16_avx2,
    .quantize_w16 = quantize_w16_avx2,
    .axpy = axpy_avx2,
    .scale = scale_avx2,
    .gelu_gate = gelu_gate_avx2,
    .exp_sub = exp_sub_avx2,
    .fma_loop = fma_loop_avx2,
    .pairs16 = 1, /* vpmaddubsw */
};
#endif
