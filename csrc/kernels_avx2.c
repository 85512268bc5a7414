/* kernels_avx2.c - AVX2 + FMA kernels for x86-64. Compiled for the baseline
 * ISA with per-function target attributes, so nothing here runs unless
 * dispatch.c has seen AVX2, FMA and OS-enabled YMM state. Each kernel has a
 * scalar twin in kernels_scalar.c. No allocation, no threads, no Python.
 */
#include "internal.h"

#ifdef EG_HAVE_X86
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define EG_AVX2 __attribute__((target("avx2,fma")))
#define MR 6 /* rows of x per micro-kernel: 6 x 2 accumulators + 2 B + 1 A = 15 ymm */
#define MR_I8 4 /* int8 rows per micro-kernel: each multiply-add needs a temporary; GCC spills at 6 */

/* Stores an mr x cols block of 2-vector rows (columns 0..7 in v[r][0], 8..15 in v[r][1]). */
static inline __attribute__((always_inline)) EG_AVX2 void store_rows(int mr, __m256 v[MR][2], float *y, int64_t ldy,
                                                                      int64_t cols) {
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

/* y[0..mr, 0..cols) = x[0..mr, 0..k) . panel, the panel F32 or (bf16 != 0) BF16.
 * Every output element is one FMA chain over kk = 0..k-1, whatever mr is:
 * results do not depend on how rows are split into tiles or threads. A BF16
 * k-row is one 32-byte load: a 32-bit lane holds columns j (low half) and
 * j+8 (high half), so a shift and a mask give both as exact floats. */
static inline __attribute__((always_inline)) EG_AVX2 void micro(int mr, int bf16, const float *x, int64_t ldx,
                                                                 const void *panel, int64_t k, float *y,
                                                                 int64_t ldy, int64_t cols) {
    __m256 c[MR][2];
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int64_t kk = 0; kk < k; kk++) {
        __m256 b0, b1;
        if (bf16) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)((const uint16_t *)panel + kk * EG_PANEL));
            b0 = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
            b1 = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32((int)0xffff0000u)));
        } else {
            b0 = _mm256_loadu_ps((const float *)panel + kk * EG_PANEL);
            b1 = _mm256_loadu_ps((const float *)panel + kk * EG_PANEL + 8);
        }
        for (int r = 0; r < MR; r++) {
            if (r < mr) {
                __m256 a = _mm256_broadcast_ss(x + r * ldx + kk);
                c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
                c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
            }
        }
    }
    store_rows(mr, c, y, ldy, cols);
}

/* The row loop shared by the F32 and BF16 kernels: full MR-row tiles, then one remainder tile. */
static inline __attribute__((always_inline)) EG_AVX2 void gemm_float(int bf16, const float *x, int64_t ldx, int64_t m,
                                                                      const eg_matrix *w, int64_t p0, int64_t p1,
                                                                      float *y, int64_t ldy) {
    const int64_t k = w->k, esz = bf16 ? 2 : 4;
    for (int64_t p = p0; p < p1; p++) {
        const void *panel = (const uint8_t *)w->data + p * k * EG_PANEL * esz;
        int64_t cols = w->n - p * EG_PANEL;
        if (cols > EG_PANEL) cols = EG_PANEL;
        float *yp = y + p * EG_PANEL;
        int64_t i = 0;
        for (; i + MR <= m; i += MR) micro(MR, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols);
        switch (m - i) {
        case 5: micro(5, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols); break;
        case 4: micro(4, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols); break;
        case 3: micro(3, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols); break;
        case 2: micro(2, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols); break;
        case 1: micro(1, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy, cols); break;
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

/* I8 micro-kernel: per k pair, the 32 weight bytes of a panel sign-extend to
 * two vectors of (k, k+1) int16 pairs for columns 0..7 and 8..15; vpmaddwd
 * against the broadcast activation pair gives one int32 per column. Sums are
 * exact (eg_act_qmax bounds them), so this equals the scalar twin bit for bit. */
/* c += madd(a, b) as two instructions GCC may not move apart: left to itself it hoists every
 * multiply-add of a k step before the adds and runs out of the 16 ymm registers. */
static inline __attribute__((always_inline)) EG_AVX2 __m256i madd_acc(__m256i c, __m256i a, __m256i b) {
    __m256i t;
    __asm__("vpmaddwd %3, %2, %1\n\tvpaddd %1, %0, %0" : "+x"(c), "=&x"(t) : "x"(a), "x"(b));
    return c;
}

static inline __attribute__((always_inline)) EG_AVX2 void micro_i8(int mr, const int16_t *xq, int64_t ldq,
                                                                    const float *xs, const int8_t *panel,
                                                                    const float *ws, int64_t k2, float *y,
                                                                    int64_t ldy, int64_t cols) {
    /* rows past mr read row 0 again (their results are dropped), so the loop has no branches */
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00;
    const int16_t *x0 = xq, *x1 = xq + (mr > 1 ? ldq : 0), *x2 = xq + (mr > 2 ? 2 * ldq : 0),
                  *x3 = xq + (mr > 3 ? 3 * ldq : 0);
    for (int64_t kp = 0; kp < k2; kp++) {
        const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(panel + kp * 32)));
        const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(panel + kp * 32 + 16)));
        int32_t p0, p1, p2, p3;
        memcpy(&p0, x0 + 2 * kp, 4);
        memcpy(&p1, x1 + 2 * kp, 4);
        memcpy(&p2, x2 + 2 * kp, 4);
        memcpy(&p3, x3 + 2 * kp, 4);
        __m256i a = _mm256_set1_epi32(p0);
        c00 = madd_acc(c00, a, b0);
        c01 = madd_acc(c01, a, b1);
        a = _mm256_set1_epi32(p1);
        c10 = madd_acc(c10, a, b0);
        c11 = madd_acc(c11, a, b1);
        a = _mm256_set1_epi32(p2);
        c20 = madd_acc(c20, a, b0);
        c21 = madd_acc(c21, a, b1);
        a = _mm256_set1_epi32(p3);
        c30 = madd_acc(c30, a, b0);
        c31 = madd_acc(c31, a, b1);
    }
    const __m256i acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
    __m256 v[MR][2];
    const __m256 w0 = _mm256_loadu_ps(ws), w1 = _mm256_loadu_ps(ws + 8);
    for (int r = 0; r < MR_I8; r++) {
        if (r >= mr) break;
        __m256 sa = _mm256_set1_ps(xs[r]);
        v[r][0] = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][0]), _mm256_mul_ps(sa, w0));
        v[r][1] = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][1]), _mm256_mul_ps(sa, w1));
    }
    store_rows(mr, v, y, ldy, cols);
}

static EG_AVX2 void gemm_i8_avx2(const int16_t *xq, int64_t ldq, const float *xs, int64_t m, const eg_matrix *w,
                                 int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const int64_t k2 = (w->k + 1) / 2;
    for (int64_t p = p0; p < p1; p++) {
        const int8_t *panel = (const int8_t *)w->data + p * k2 * EG_PANEL * 2;
        const float *ws = w->scale + p * EG_PANEL;
        int64_t cols = w->n - p * EG_PANEL;
        if (cols > EG_PANEL) cols = EG_PANEL;
        float *yp = y + p * EG_PANEL;
        int64_t i = 0;
        for (; i + MR_I8 <= m; i += MR_I8) micro_i8(MR_I8, xq + i * ldq, ldq, xs + i, panel, ws, k2, yp + i * ldy, ldy, cols);
        switch (m - i) {
        case 3: micro_i8(3, xq + i * ldq, ldq, xs + i, panel, ws, k2, yp + i * ldy, ldy, cols); break;
        case 2: micro_i8(2, xq + i * ldq, ldq, xs + i, panel, ws, k2, yp + i * ldy, ldy, cols); break;
        case 1: micro_i8(1, xq + i * ldq, ldq, xs + i, panel, ws, k2, yp + i * ldy, ldy, cols); break;
        default: break;
        }
    }
}

/* Q8_0 / Q4_0 panels: per block of 32 k, 16 k-pairs of vpmaddwd into exact int32 sums
 * (as micro_i8), then one FMA per row and column folds the block in with its two
 * scales; float accumulators live across blocks. A Q4_0 32-byte load holds two
 * k-pairs as nibbles: mask and shift give each as int8 in the I8 layout. */
#define Q_STEP(v, kp)                                                                             \
    do {                                                                                          \
        const __m256i b0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v));                       \
        const __m256i b1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1));                  \
        int32_t q0, q1, q2, q3;                                                                   \
        memcpy(&q0, x0 + 2 * (kp), 4);                                                            \
        memcpy(&q1, x1 + 2 * (kp), 4);                                                            \
        memcpy(&q2, x2 + 2 * (kp), 4);                                                            \
        memcpy(&q3, x3 + 2 * (kp), 4);                                                            \
        __m256i a = _mm256_set1_epi32(q0);                                                        \
        c00 = madd_acc(c00, a, b0);                                                               \
        c01 = madd_acc(c01, a, b1);                                                               \
        a = _mm256_set1_epi32(q1);                                                                \
        c10 = madd_acc(c10, a, b0);                                                               \
        c11 = madd_acc(c11, a, b1);                                                               \
        a = _mm256_set1_epi32(q2);                                                                \
        c20 = madd_acc(c20, a, b0);                                                               \
        c21 = madd_acc(c21, a, b1);                                                               \
        a = _mm256_set1_epi32(q3);                                                                \
        c30 = madd_acc(c30, a, b0);                                                               \
        c31 = madd_acc(c31, a, b1);                                                               \
    } while (0)

static inline __attribute__((always_inline)) EG_AVX2 void micro_q(int mr, int q4, const int16_t *xq, int64_t ldq,
                                                                   const float *xs, int64_t ldxs,
                                                                   const uint8_t *panel, const float *ws, int64_t nb,
                                                                   float *y, int64_t ldy, int64_t cols) {
    __m256 f[MR][2];
    for (int r = 0; r < MR_I8; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();
    const int64_t r1 = mr > 1 ? 1 : 0, r2 = mr > 2 ? 2 : 0, r3 = mr > 3 ? 3 : 0; /* rows past mr redo row 0 */
    const float *s[4] = {xs, xs + r1 * ldxs, xs + r2 * ldxs, xs + r3 * ldxs};
    const __m256i lo4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
    for (int64_t b = 0; b < nb; b++) {
        __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
                c31 = c00;
        const int16_t *x0 = xq + b * EG_QBLOCK, *x1 = x0 + r1 * ldq, *x2 = x0 + r2 * ldq, *x3 = x0 + r3 * ldq;
        if (q4) {
            const uint8_t *pb = panel + b * (EG_QBLOCK / 4) * 32;
            for (int g = 0; g < EG_QBLOCK / 4; g++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(pb + g * 32));
                const __m256i lo = _mm256_sub_epi8(_mm256_and_si256(v, lo4), eight);
                const __m256i hi = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo4), eight);
                Q_STEP(lo, 2 * g);
                Q_STEP(hi, 2 * g + 1);
            }
        } else {
            const uint8_t *pb = panel + b * (EG_QBLOCK / 2) * 32;
            for (int kp = 0; kp < EG_QBLOCK / 2; kp++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(pb + kp * 32));
                Q_STEP(v, kp);
            }
        }
        const __m256 w0 = _mm256_loadu_ps(ws + b * EG_PANEL), w1 = _mm256_loadu_ps(ws + b * EG_PANEL + 8);
        const __m256i acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
        for (int r = 0; r < MR_I8; r++) {
            if (r >= mr) break;
            const __m256 sa = _mm256_set1_ps(s[r][b]);
            f[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][0]), _mm256_mul_ps(sa, w0), f[r][0]);
            f[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][1]), _mm256_mul_ps(sa, w1), f[r][1]);
        }
    }
    store_rows(mr, f, y, ldy, cols);
}
#undef Q_STEP

static inline __attribute__((always_inline)) EG_AVX2 void gemm_q_rows(int q4, const int16_t *xq, int64_t ldq,
                                                                       const float *xs, int64_t ldxs, int64_t m,
                                                                       const eg_matrix *w, int64_t p0, int64_t p1,
                                                                       float *y, int64_t ldy) {
    const int64_t nb = w->k / EG_QBLOCK, pbytes = q4 ? w->k / 2 * EG_PANEL : w->k * EG_PANEL;
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *panel = (const uint8_t *)w->data + p * pbytes;
        const float *ws = w->scale + p * nb * EG_PANEL;
        int64_t cols = w->n - p * EG_PANEL;
        if (cols > EG_PANEL) cols = EG_PANEL;
        float *yp = y + p * EG_PANEL;
        int64_t i = 0;
        for (; i + MR_I8 <= m; i += MR_I8)
            micro_q(MR_I8, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, yp + i * ldy, ldy, cols);
        switch (m - i) {
        case 3: micro_q(3, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, yp + i * ldy, ldy, cols); break;
        case 2: micro_q(2, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, yp + i * ldy, ldy, cols); break;
        case 1: micro_q(1, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, yp + i * ldy, ldy, cols); break;
        default: break;
        }
    }
}

static EG_AVX2 void gemm_q_avx2(const int16_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    if (w->type == EG_W_Q4_0) gemm_q_rows(1, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
    else gemm_q_rows(0, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}

static EG_AVX2 inline float hsum(__m256 v) {
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
static EG_AVX2 inline __m256 exp8(__m256 x) {
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

static EG_AVX2 double fma_loop_avx2(int64_t iters, float *sink) {
    __m256 c[12];
    for (int j = 0; j < 12; j++) c[j] = _mm256_set1_ps((float)j);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) c[j] = _mm256_fmadd_ps(c[j], a, b);
    for (int j = 0; j < 12; j++) *sink += hsum(c[j]);
    return (double)iters * 12 * 8 * 2;
}

const eg_kernels eg_kernels_avx2 = {
    .gemm = gemm_avx2,
    .gemm_bf16 = gemm_bf16_avx2,
    .gemm_i8 = gemm_i8_avx2,
    .gemm_q = gemm_q_avx2,
    .axpy = axpy_avx2,
    .scale = scale_avx2,
    .gelu_gate = gelu_gate_avx2,
    .exp_sub = exp_sub_avx2,
    .fma_loop = fma_loop_avx2,
};
#endif
