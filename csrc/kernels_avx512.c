/* kernels_avx512.c - x86-64 AVX-512 (F, BW, DQ, VL) + AVX512_VNNI kernels: the GEMMs on zmm; and,
 * for the avx512bf16 ISA, the AVX512_BF16 GEMM (vdpbf16ps) with its activation rounding.
 * A packed panel is 16 columns wide, so one zmm holds a panel's k-row (F32; a BF16 k-pair widens
 * to two), its k-pair of bfloat16 (vdpbf16ps) or its k-quad of int8 (I8, Q8_0, Q4_0 unpacked), and
 * each micro-kernel runs two panels at once: every broadcast of x feeds two multiply-adds. The
 * float kernels do the same FMA chain per output as kernels_avx2.c (bit-identical results); the
 * integer ones use vpdpbusd (u8 x s8, 4 products per int32 lane, exact) and the bfloat16 one
 * vdpbf16ps, on the layouts and arithmetic of kernels_scalar.c, in its sections' order. The row
 * operations (axpy, GELU, exp) stay on the AVX2 kernels (dispatch.c). Compiled with target attributes;
 * nothing here runs unless dispatch.c has seen the CPU features and the OS-enabled ZMM state.
 * No allocation, no threads, no Python.
 */
#include "kernels.h"

#ifdef EG_HAVE_X86
#include <immintrin.h>
#include <string.h>

#define EG_AVX512 EG_TARGET("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
#define EG_AVX512BF16 EG_TARGET("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16")
#define MRF 12 /* float rows per micro-kernel: 24 accumulators + 2 weight rows + 1 broadcast     */
#define MRQ 6  /* Q8_0 / Q4_0 rows: 12 int32 + 12 float accumulators + 4 weight quads + 1 broadcast */

/* The columns of panel p that w has, as a store mask. */
static inline __mmask16 col_mask(const eg_matrix *w, int64_t p) {
    const int64_t cols = eg_panel_cols(w, p);
    return cols == EG_PANEL ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
}

/* Rows of the 1 or 2 panels' results, masked to the columns that exist. */
EG_INLINE EG_AVX512 void store_tile(int mr, int np, __m512 v[][2], float *y, int64_t ldy, __mmask16 m0, __mmask16 m1) {
    for (int r = 0; r < MRF; r++) {
        if (r >= mr) break;
        _mm512_mask_storeu_ps(y + r * ldy, m0, v[r][0]);
        if (np == 2) _mm512_mask_storeu_ps(y + r * ldy + EG_PANEL, m1, v[r][1]);
    }
}

/* The number of panels (1 or 2) starting at p, and their column masks. */
static inline int panel_pair(const eg_matrix *w, int64_t p, int64_t p1, __mmask16 *m0, __mmask16 *m1) {
    const int np = p + 1 < p1 ? 2 : 1;
    *m0 = col_mask(w, p);
    *m1 = np == 2 ? col_mask(w, p + 1) : 0;
    return np;
}

/* Runs MICRO(mr) for full tiles of `full` rows, then once for the m % full rows left. */
#define ROW_TILES(full, MICRO)                                                                                         \
    do {                                                                                                               \
        int64_t i = 0;                                                                                                 \
        for (; i + (full) <= m; i += (full)) MICRO(full);                                                              \
        switch (m - i) {                                                                                               \
        case 11: MICRO(11); break;                                                                                     \
        case 10: MICRO(10); break;                                                                                     \
        case 9: MICRO(9); break;                                                                                       \
        case 8: MICRO(8); break;                                                                                       \
        case 7: MICRO(7); break;                                                                                       \
        case 6: MICRO(6); break;                                                                                       \
        case 5: MICRO(5); break;                                                                                       \
        case 4: MICRO(4); break;                                                                                       \
        case 3: MICRO(3); break;                                                                                       \
        case 2: MICRO(2); break;                                                                                       \
        case 1: MICRO(1); break;                                                                                       \
        default: break;                                                                                                \
        }                                                                                                              \
    } while (0)

/* ---------------------------------------------------------------- float GEMM (F32, BF16) */

/* c[r] += x[r][kk] * (b0 | b1) for the mr rows and np panels: one k step of the float micro-kernel. */
EG_INLINE EG_AVX512 void fma_step(int mr, int np, __m512 c[][2], const float *x, int64_t ldx, int64_t kk, __m512 b0,
                                  __m512 b1) {
    for (int r = 0; r < MRF; r++) {
        if (r >= mr) break;
        const __m512 a = _mm512_set1_ps(x[r * ldx + kk]);
        c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
        if (np == 2) c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
    }
}

/* A BF16 k-pair of a panel (one 64-byte load: a column's k in the low half of its lane, k+1 in the
 * high half) widened exactly, as in kernels_avx2.c: k by a shift, k+1 by a mask. */
EG_INLINE EG_AVX512 __m512 pair_even(__m512i raw) { return _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16)); }
EG_INLINE EG_AVX512 __m512 pair_odd(__m512i raw) {
    return _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32((int)0xffff0000u)));
}

/* y[0..mr, 1 or 2 panels] = x . panels: one FMA chain over kk per output, as on AVX2. */
EG_INLINE EG_AVX512 void micro_f(int mr, int np, int bf16, const float *x, int64_t ldx, const void *pa, const void *pb,
                                 int64_t k, float *y, int64_t ldy, __mmask16 m0, __mmask16 m1) {
    __m512 c[MRF][2];
    for (int r = 0; r < MRF; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    if (bf16) {
        const uint16_t *wa = (const uint16_t *)pa, *wb = np == 2 ? (const uint16_t *)pb : wa;
        int64_t kk = 0;
        for (; kk + 2 <= k; kk += 2) {
            const __m512i ra = _mm512_loadu_si512((const void *)(wa + kk * EG_PANEL));
            const __m512i rb = _mm512_loadu_si512((const void *)(wb + kk * EG_PANEL));
            fma_step(mr, np, c, x, ldx, kk, pair_even(ra), pair_even(rb));
            fma_step(mr, np, c, x, ldx, kk + 1, pair_odd(ra), pair_odd(rb));
        }
        if (kk < k) { /* k odd: the last pair's even half */
            const __m512i ra = _mm512_loadu_si512((const void *)(wa + kk * EG_PANEL));
            const __m512i rb = _mm512_loadu_si512((const void *)(wb + kk * EG_PANEL));
            fma_step(mr, np, c, x, ldx, kk, pair_even(ra), pair_even(rb));
        }
    } else {
        for (int64_t kk = 0; kk < k; kk++) {
            const __m512 b0 = _mm512_loadu_ps((const float *)pa + kk * EG_PANEL);
            const __m512 b1 = np == 2 ? _mm512_loadu_ps((const float *)pb + kk * EG_PANEL) : b0;
            fma_step(mr, np, c, x, ldx, kk, b0, b1);
        }
    }
    store_tile(mr, np, c, y, ldy, m0, m1);
}

EG_INLINE EG_AVX512 void gemm_float(int bf16, const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0,
                                    int64_t p1, float *y, int64_t ldy) {
    const int64_t k = w->k, pbytes = bf16 ? eg_bf16_panel_elems(k) * 2 : k * EG_PANEL * 4;
    for (int64_t p = p0; p < p1; p += 2) {
        __mmask16 m0, m1;
        const int np = panel_pair(w, p, p1, &m0, &m1);
        const uint8_t *pa = (const uint8_t *)w->data + p * pbytes, *pb = pa + pbytes;
        float *yp = y + p * EG_PANEL;
#define MICRO(mr)                                                                                              \
    (np == 2 ? micro_f(mr, 2, bf16, x + i * ldx, ldx, pa, pb, k, yp + i * ldy, ldy, m0, m1)                    \
             : micro_f(mr, 1, bf16, x + i * ldx, ldx, pa, pb, k, yp + i * ldy, ldy, m0, m1))
        ROW_TILES(MRF, MICRO);
#undef MICRO
    }
}

static EG_AVX512 void gemm_avx512(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                                  float *y, int64_t ldy) {
    gemm_float(0, x, ldx, m, w, p0, p1, y, ldy);
}

static EG_AVX512 void gemm_bf16_avx512(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0,
                                       int64_t p1, float *y, int64_t ldy) {
    gemm_float(1, x, ldx, m, w, p0, p1, y, ldy);
}

/* ---------------------------------------------------------------- bfloat16 x bfloat16 (vdpbf16ps, AMX) */

/* y[0..mr, 1 or 2 panels] from bfloat16 activations: per k-pair, one 32-bit broadcast of each row's
 * pair and one vdpbf16ps per row and panel into its single accumulator, in k order: the arithmetic of
 * gemm_bf16dot_scalar. vdpbf16ps ignores MXCSR (rounding to nearest even, subnormals as zero). */
EG_INLINE EG_AVX512BF16 void micro_dp(int mr, int np, const uint16_t *xb, int64_t ldb, const uint16_t *pa,
                                      const uint16_t *pb, int64_t k2, float *y, int64_t ldy, __mmask16 m0,
                                      __mmask16 m1) {
    __m512 c[MRF][2];
    for (int r = 0; r < MRF; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    for (int64_t t = 0; t < k2; t++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(pa + t * 2 * EG_PANEL));
        const __m512bh b1 = np == 2 ? (__m512bh)_mm512_loadu_si512((const void *)(pb + t * 2 * EG_PANEL)) : b0;
        for (int r = 0; r < MRF; r++) {
            if (r >= mr) break;
            int32_t v;
            memcpy(&v, xb + r * ldb + 2 * t, 4);
            const __m512bh a = (__m512bh)_mm512_set1_epi32(v);
            c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
            if (np == 2) c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
        }
    }
    store_tile(mr, np, c, y, ldy, m0, m1);
}

static EG_AVX512BF16 void gemm_bf16dot_avx512bf16(const uint16_t *xb, int64_t ldb, int64_t m, const eg_matrix *w,
                                                  int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const int64_t k2 = (w->k + 1) / 2, pel = eg_bf16_panel_elems(w->k);
    for (int64_t p = p0; p < p1; p += 2) {
        __mmask16 m0, m1;
        const int np = panel_pair(w, p, p1, &m0, &m1);
        const uint16_t *pa = (const uint16_t *)w->data + p * pel, *pb = pa + pel;
        float *yp = y + p * EG_PANEL;
#define MICRO(mr)                                                                                                 \
    (np == 2 ? micro_dp(mr, 2, xb + i * ldb, ldb, pa, pb, k2, yp + i * ldy, ldy, m0, m1)                          \
             : micro_dp(mr, 1, xb + i * ldb, ldb, pa, pb, k2, yp + i * ldy, ldy, m0, m1))
        ROW_TILES(MRF, MICRO);
#undef MICRO
    }
}

/* Activations to bfloat16 by vcvtne2ps2bf16, 32 at a time; a row's last < 32 go to the twin
 * (eg_round_bf16_rows, which also writes a pair's zero half when k is odd). */
static EG_AVX512BF16 void to_bf16_avx512bf16(const float *x, int64_t ldx, int64_t m, int64_t k, uint16_t *xb,
                                             int64_t ldb) {
    const int64_t full = k / 32 * 32;
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * ldx;
        uint16_t *bi = xb + i * ldb;
        for (int64_t kk = 0; kk < full; kk += 32) {
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xi + kk + 16), _mm512_loadu_ps(xi + kk));
            _mm512_storeu_si512((void *)(bi + kk), (__m512i)v);
        }
        if (full < k) eg_round_bf16_rows(xi + full, ldx, 1, k - full, bi + full, ldb);
    }
}

/* ---------------------------------------------------------------- I8 / Q8_0 / Q4_0 */

EG_INLINE EG_AVX512 __m512i bcast4(const uint8_t *p) { /* 4 activation bytes to every lane */
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Quads 2g and 2g+1 of block b of a panel as int8 (a Q4_0 group holds them as low / high nibbles). */
EG_INLINE EG_AVX512 void panel_quads(int q4, const uint8_t *panel, int64_t b, int g, __m512i *q0, __m512i *q1) {
    if (q4) {
        const __m512i v = _mm512_loadu_si512((const void *)(panel + (b * 4 + g) * 64));
        const __m512i lo4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
        *q0 = _mm512_sub_epi8(_mm512_and_si512(v, lo4), eight);
        *q1 = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), lo4), eight);
    } else {
        *q0 = _mm512_loadu_si512((const void *)(panel + (b * 8 + 2 * g) * 64));
        *q1 = _mm512_loadu_si512((const void *)(panel + (b * 8 + 2 * g + 1) * 64));
    }
}

/* Per block of 32 k: exact int32 sums, then one FMA per output folds (sum - zp * wsum) in with
 * both scales, in block order, as the scalar twin does. */
EG_INLINE EG_AVX512 void micro_q(int mr, int np, int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs,
                                 const uint8_t *pa, const uint8_t *pb, const float *wsa, const float *wsb,
                                 const int32_t *zsa, const int32_t *zsb, int64_t nb, float *y, int64_t ldy,
                                 __mmask16 m0, __mmask16 m1) {
    __m512 f[MRF][2];
    for (int r = 0; r < MRQ; r++) f[r][0] = f[r][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i c[MRQ][2];
        for (int r = 0; r < MRQ; r++) c[r][0] = c[r][1] = _mm512_setzero_si512();
        for (int g = 0; g < EG_QBLOCK / 8; g++) {
            __m512i a0[2], a1[2];
            panel_quads(q4, pa, b, g, &a0[0], &a0[1]);
            if (np == 2) panel_quads(q4, pb, b, g, &a1[0], &a1[1]);
            for (int h = 0; h < 2; h++) {
                const int64_t kk = b * EG_QBLOCK + g * 8 + h * 4;
                for (int r = 0; r < MRQ; r++) {
                    if (r >= mr) break;
                    const __m512i a = bcast4(xq + r * ldq + kk);
                    c[r][0] = _mm512_dpbusd_epi32(c[r][0], a, a0[h]);
                    if (np == 2) c[r][1] = _mm512_dpbusd_epi32(c[r][1], a, a1[h]);
                }
            }
        }
        for (int h = 0; h < np; h++) {
            const __m512i z = _mm512_loadu_si512((const void *)((h ? zsb : zsa) + b * EG_PANEL));
            const __m512 wv = _mm512_loadu_ps((h ? wsb : wsa) + b * EG_PANEL);
            for (int r = 0; r < MRQ; r++) {
                if (r >= mr) break;
                const __m512 s = _mm512_mul_ps(_mm512_set1_ps(xs[r * ldxs + b]), wv);
                f[r][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][h], z)), s, f[r][h]);
            }
        }
    }
    store_tile(mr, np, f, y, ldy, m0, m1);
}

EG_INLINE EG_AVX512 void gemm_q_rows(int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                     const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const int64_t nb = eg_ldq(w->k) / EG_QBLOCK, pbytes = q4 ? w->k / 2 * EG_PANEL : eg_ldq(w->k) * EG_PANEL;
    for (int64_t p = p0; p < p1; p += 2) {
        __mmask16 m0, m1;
        const int np = panel_pair(w, p, p1, &m0, &m1);
        const uint8_t *pa = (const uint8_t *)w->data + p * pbytes, *pb = pa + pbytes;
        const float *wsa = w->scale + p * nb * EG_PANEL, *wsb = wsa + nb * EG_PANEL;
        const int32_t *zsa = w->wsum + p * nb * EG_PANEL, *zsb = zsa + nb * EG_PANEL;
        float *yp = y + p * EG_PANEL;
        int64_t i = 0;
#define MICRO(mr)                                                                                                 \
    (np == 2 ? micro_q(mr, 2, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, pa, pb, wsa, wsb, zsa, zsb, nb,        \
                       yp + i * ldy, ldy, m0, m1)                                                                 \
             : micro_q(mr, 1, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, pa, pb, wsa, wsb, zsa, zsb, nb,        \
                       yp + i * ldy, ldy, m0, m1))
        for (; i + MRQ <= m; i += MRQ) MICRO(MRQ);
        switch (m - i) {
        case 5: MICRO(5); break;
        case 4: MICRO(4); break;
        case 3: MICRO(3); break;
        case 2: MICRO(2); break;
        case 1: MICRO(1); break;
        default: break;
        }
#undef MICRO
    }
}

static EG_AVX512 void gemm_q_avx512(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                    const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    if (w->type == EG_W_Q4_0) gemm_q_rows(1, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
    else gemm_q_rows(0, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}

/* ---------------------------------------------------------------- FMA peak */

static EG_AVX512 double fma_loop_avx512(int64_t iters, float *sink) {
    __m512 c[12];
    for (int j = 0; j < 12; j++) c[j] = _mm512_set1_ps((float)j);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) c[j] = _mm512_fmadd_ps(c[j], a, b);
    for (int j = 0; j < 12; j++) *sink += _mm512_reduce_add_ps(c[j]);
    return (double)iters * 12 * 16 * 2;
}

/* ---------------------------------------------------------------- kernel table */

/* avx512: AVX2's table with these (dispatch.c); the row operations and the quantizer stay AVX2's. */
void eg_kernels_avx512_fill(eg_kernels *k) {
    k->gemm = gemm_avx512;
    k->gemm_bf16 = gemm_bf16_avx512;
    k->gemm_q = gemm_q_avx512;
    k->pairs16 = 0; /* vpdpbusd sums into int32 */
    k->fma_loop = fma_loop_avx512;
    k->tail_bf16 = 1; /* as before: widening bfloat16 ~1.06x float32 single-thread since the k-pair layout
                         (docs/performance.md; the 2-thread harness run before it gave 0.93-0.96x) */
}

/* avx512bf16: avx512's table with these (dispatch.c). */
void eg_kernels_avx512bf16_fill(eg_kernels *k) {
    k->gemm_bf16dot = gemm_bf16dot_avx512bf16;
    k->to_bf16 = to_bf16_avx512bf16;
    k->bf16dot = 1;
    k->tail_bf16 = 0; /* vdpbf16ps: ~0.65x avx512's float32 end to end */
}
#endif
