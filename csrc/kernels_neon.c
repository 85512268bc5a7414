/* kernels_neon.c - ARM64 Advanced SIMD (NEON) kernels: the baseline of every ARMv8-A CPU, and
 * the table the dotprod and i8mm levels start from (dispatch.c). Each kernel has a scalar twin
 * in kernels_scalar.c; sections in that file's order. No allocation, no threads, no Python.
 */
#include "kernels.h"

#ifdef EG_HAVE_ARM64
#include <math.h>

#include "kernels_neon.h"

/* ---------------------------------------------------------------- float GEMM (F32, BF16) */

#define MRF 5 /* rows per float micro-kernel: 20 accumulators + 4 weight vectors + 5 x vectors (4 k each) */

/* A panel's k-row as 4 vectors of 4 floats (columns 0..15). BF16 panels are k-pair interleaved
 * (eg_bf16_panel_elems): the 32-bit lane j of pair kk/2 holds column j's even k (low half) and odd k
 * (high half), so a shift or a mask widens the one wanted exactly. */
EG_INLINE void panel_row(int bf16, const void *panel, int64_t kk, float32x4_t b[4]) {
    if (bf16) {
        const uint16_t *p = (const uint16_t *)panel + (kk / 2) * 2 * EG_PANEL;
        for (int q = 0; q < 4; q++) {
            const uint32x4_t r = vreinterpretq_u32_u16(vld1q_u16(p + 8 * q));
            b[q] = vreinterpretq_f32_u32(kk & 1 ? vandq_u32(r, vdupq_n_u32(0xffff0000u)) : vshlq_n_u32(r, 16));
        }
    } else {
        const float *p = (const float *)panel + kk * EG_PANEL;
        for (int q = 0; q < 4; q++) b[q] = vld1q_f32(p + 4 * q);
    }
}

/* y[0..mr, 0..16) = x[0..mr, 0..k) . panel. Every output is one FMA chain over kk = 0..k-1
 * (FMLA by element of 4 k of x at a time, then single k), whatever mr is: results do not depend
 * on how rows are split into tiles or threads, and equal the x86 vector kernels' chains. Always 16
 * columns: a partial store here would make GCC keep the accumulators in memory as well. */
EG_INLINE void micro_f(int mr, int bf16, const float *x, int64_t ldx, const void *panel, int64_t k, float *y,
                       int64_t ldy) {
    float32x4_t c[MRF][4];
    for (int r = 0; r < MRF; r++)
        for (int q = 0; q < 4; q++) c[r][q] = vdupq_n_f32(0.0f);
    int64_t kk = 0;
    for (; kk + 4 <= k; kk += 4) {
        float32x4_t a[MRF];
        for (int r = 0; r < MRF; r++) a[r] = r < mr ? vld1q_f32(x + r * ldx + kk) : vdupq_n_f32(0.0f);
#define STEP(e)                                                                                                    \
    do {                                                                                                           \
        float32x4_t b[4];                                                                                          \
        panel_row(bf16, panel, kk + (e), b);                                                                       \
        for (int r = 0; r < MRF; r++) {                                                                            \
            if (r >= mr) break;                                                                                    \
            for (int q = 0; q < 4; q++) c[r][q] = vfmaq_laneq_f32(c[r][q], b[q], a[r], (e));                       \
        }                                                                                                          \
    } while (0)
        STEP(0);
        STEP(1);
        STEP(2);
        STEP(3);
#undef STEP
    }
    for (; kk < k; kk++) {
        float32x4_t b[4];
        panel_row(bf16, panel, kk, b);
        for (int r = 0; r < MRF; r++) {
            if (r >= mr) break;
            const float32x4_t a = vdupq_n_f32(x[r * ldx + kk]);
            for (int q = 0; q < 4; q++) c[r][q] = vfmaq_f32(c[r][q], b[q], a);
        }
    }
    for (int r = 0; r < MRF; r++) {
        if (r >= mr) break;
        for (int q = 0; q < 4; q++) vst1q_f32(y + r * ldy + 4 * q, c[r][q]);
    }
}

EG_INLINE void gemm_float(int bf16, const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                          float *y, int64_t ldy) {
    const int64_t k = w->k, pbytes = bf16 ? eg_bf16_panel_elems(k) * 2 : k * EG_PANEL * 4;
    for (int64_t p = p0; p < p1; p++) {
        const void *panel = (const uint8_t *)w->data + p * pbytes;
        const int64_t cols = eg_panel_cols(w, p);
        float *yp = y + p * EG_PANEL;
        if (cols == EG_PANEL) {
#define MICRO(mr) micro_f(mr, bf16, x + i * ldx, ldx, panel, k, yp + i * ldy, ldy)
            EG_NEON_ROW_TILES(m, MRF, MICRO);
#undef MICRO
        } else { /* the last panel of a matrix: through a full-width tile */
            float tile[MRF * EG_PANEL];
#define MICRO(mr)                                                                                                  \
    do {                                                                                                           \
        micro_f(mr, bf16, x + i * ldx, ldx, panel, k, tile, EG_PANEL);                                             \
        for (int r = 0; r < (mr); r++) memcpy(yp + (i + r) * ldy, tile + r * EG_PANEL, (size_t)cols * sizeof(float)); \
    } while (0)
            EG_NEON_ROW_TILES(m, MRF, MICRO);
#undef MICRO
        }
    }
}

static void gemm_neon(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1, float *y,
                      int64_t ldy) {
    gemm_float(0, x, ldx, m, w, p0, p1, y, ldy);
}

static void gemm_bf16_neon(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                           float *y, int64_t ldy) {
    gemm_float(1, x, ldx, m, w, p0, p1, y, ldy);
}

/* ---------------------------------------------------------------- I8 / Q8_0 / Q4_0 */

#define MRQ 3 /* rows per micro-kernel: 12 int32 + 6 float accumulators, 4 weight + 4 product vectors */

/* Without SDOT: SMULL / SMLAL multiply 8 activation bytes by 8 weight bytes into int16 and add the
 * products of the next k-quad (|a| <= 127, |q| <= 128: two products stay within int16), SADALP adds
 * neighbouring int16 pairs into int32 lanes, and one ADDP per block turns lanes (column c, k 0-1),
 * (c, k 2-3) into column sums. All exact. Then one FMA per block per output, as in the twin. */
EG_INLINE void micro_q(int mr, int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs,
                       const uint8_t *panel, const float *ws, int64_t nb, int h, uint8x16_t z, float *y, int64_t ldy,
                       int64_t cols) {
    float32x4_t f[MRQ][2];
    for (int r = 0; r < MRQ; r++) f[r][0] = f[r][1] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        int32x4_t c[MRQ][4];
        for (int r = 0; r < MRQ; r++)
            for (int j = 0; j < 4; j++) c[r][j] = vdupq_n_s32(0);
        for (int g = 0; g < EG_QBLOCK / 8; g++) {
            int8x16_t wq[2][2];
            eg_neon_quads(q4, panel, b, g, h, wq);
            for (int r = 0; r < MRQ; r++) {
                if (r >= mr) break;
                const int8x8_t a8 =
                    vreinterpret_s8_u8(vsub_u8(vld1_u8(xq + r * ldq + b * EG_QBLOCK + g * 8), vget_low_u8(z)));
                const int8x16_t a0 = vreinterpretq_s8_s32(vdupq_lane_s32(vreinterpret_s32_s8(a8), 0));
                const int8x16_t a1 = vreinterpretq_s8_s32(vdupq_lane_s32(vreinterpret_s32_s8(a8), 1));
                for (int j = 0; j < 2; j++) { /* columns 0..3, 4..7 of the half */
                    int16x8_t lo = vmull_s8(vget_low_s8(wq[0][j]), vget_low_s8(a0));
                    lo = vmlal_s8(lo, vget_low_s8(wq[1][j]), vget_low_s8(a1));
                    int16x8_t hi = vmull_high_s8(wq[0][j], a0);
                    hi = vmlal_high_s8(hi, wq[1][j], a1);
                    c[r][2 * j] = vpadalq_s16(c[r][2 * j], lo);
                    c[r][2 * j + 1] = vpadalq_s16(c[r][2 * j + 1], hi);
                }
            }
        }
        const float32x4_t w0 = vld1q_f32(ws + b * EG_PANEL + h * 8), w1 = vld1q_f32(ws + b * EG_PANEL + h * 8 + 4);
        for (int r = 0; r < MRQ; r++) {
            if (r >= mr) break;
            const float32x4_t sa = vdupq_n_f32(xs[r * ldxs + b]);
            f[r][0] = vfmaq_f32(f[r][0], vcvtq_f32_s32(vpaddq_s32(c[r][0], c[r][1])), vmulq_f32(sa, w0));
            f[r][1] = vfmaq_f32(f[r][1], vcvtq_f32_s32(vpaddq_s32(c[r][2], c[r][3])), vmulq_f32(sa, w1));
        }
    }
    eg_neon_store8(mr, MRQ, f, y, ldy, cols);
}

EG_INLINE void gemm_q_rows(int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                           const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const uint8x16_t z = vdupq_n_u8((uint8_t)(w->aqmax + 1));
#define MICRO(mr) micro_q(mr, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, h, z, yh + i * ldy, ldy, ch)
    EG_NEON_GEMM_Q(MRQ, MICRO);
#undef MICRO
}

static void gemm_q_neon(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m, const eg_matrix *w,
                        int64_t p0, int64_t p1, float *y, int64_t ldy) {
    if (w->type == EG_W_Q4_0) gemm_q_rows(1, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
    else gemm_q_rows(0, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}

/* Activations per block of 32 to uint8 (eg_quantize_blocks_u8's twin, bit for bit): the same
 * amax, division and multiply, FCVTNS rounding to nearest even as round_even does, the clamp,
 * then two narrowings. A row's partial last block goes to the twin itself. */
static void quantize_neon(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, uint8_t *q, int64_t ldq,
                          float *scale, int64_t ldxs) {
    const int64_t full = k / EG_QBLOCK;
    const int32x4_t lo = vdupq_n_s32(-qmax), hi = vdupq_n_s32(qmax), zp = vdupq_n_s32(qmax + 1);
    const float fq = (float)qmax;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t b = 0; b < full; b++) {
            const float *xb = x + i * ldx + b * EG_QBLOCK;
            uint8_t *qb = q + i * ldq + b * EG_QBLOCK;
            float32x4_t v[8], mx = vdupq_n_f32(0.0f);
            uint32x4_t ordered = vdupq_n_u32(0xffffffffu);
            for (int j = 0; j < 8; j++) {
                v[j] = vld1q_f32(xb + 4 * j);
                ordered = vandq_u32(ordered, vceqq_f32(v[j], v[j]));
                mx = vmaxq_f32(mx, vabsq_f32(v[j]));
            }
            const float amax = vmaxvq_f32(mx);
            if (vminvq_u32(ordered) == 0 || !(amax < INFINITY)) {
                memset(qb, qmax + 1, EG_QBLOCK);
                scale[i * ldxs + b] = NAN;
                continue;
            }
            const float fi = amax > 0.0f ? fq / amax : 0.0f;
            if (!(fi < INFINITY)) { /* as the twin: a block below qmax / FLT_MAX is zeros */
                memset(qb, qmax + 1, EG_QBLOCK);
                scale[i * ldxs + b] = 0.0f;
                continue;
            }
            const float32x4_t inv = vdupq_n_f32(fi);
            int16x8_t s16[4];
            for (int j = 0; j < 4; j++) {
                int32x4_t t0 = vcvtnq_s32_f32(vmulq_f32(v[2 * j], inv));
                int32x4_t t1 = vcvtnq_s32_f32(vmulq_f32(v[2 * j + 1], inv));
                t0 = vaddq_s32(vminq_s32(vmaxq_s32(t0, lo), hi), zp);
                t1 = vaddq_s32(vminq_s32(vmaxq_s32(t1, lo), hi), zp);
                s16[j] = vcombine_s16(vmovn_s32(t0), vmovn_s32(t1)); /* 1..255: exact */
            }
            vst1q_u8(qb, vcombine_u8(vmovn_u16(vreinterpretq_u16_s16(s16[0])), vmovn_u16(vreinterpretq_u16_s16(s16[1]))));
            vst1q_u8(qb + 16,
                     vcombine_u8(vmovn_u16(vreinterpretq_u16_s16(s16[2])), vmovn_u16(vreinterpretq_u16_s16(s16[3]))));
            scale[i * ldxs + b] = amax / fq;
        }
        if (full * EG_QBLOCK < k)
            eg_quantize_blocks_u8(x + i * ldx + full * EG_QBLOCK, ldx, 1, k - full * EG_QBLOCK, qmax,
                                  q + i * ldq + full * EG_QBLOCK, ldq, scale + i * ldxs + full, ldxs);
    }
}

/* ---------------------------------------------------------------- row operations */

static void axpy_neon(float a, const float *x, float *y, int64_t n) {
    const float32x4_t va = vdupq_n_f32(a);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void scale_neon(float a, float *y, int64_t n) {
    const float32x4_t va = vdupq_n_f32(a);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_f32(va, vld1q_f32(y + i)));
    for (; i < n; i++) y[i] *= a;
}

/* exp(x) for 4 floats, as exp8 of kernels_avx2.c: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6
 * polynomial (Cephes coefficients), 2^n through the exponent bits. About 1 ulp; below -87.3 the
 * result is 0 (NaN too), above 88.7 it is clamped. */
EG_INLINE float32x4_t exp4(float32x4_t x) {
    const uint32x4_t nonzero = vcgeq_f32(x, vdupq_n_f32(-87.3f));
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.7f));
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    const float32x4_t y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), vmulq_f32(p, r), r);
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vmulq_f32(y, vreinterpretq_f32_s32(e))), nonzero));
}

static void gelu_gate_neon(float *g, const float *up, int64_t n) {
    const float32x4_t beta = vdupq_n_f32(0.7978845608028654f), kappa = vdupq_n_f32(0.044715f);
    const float32x4_t m2 = vdupq_n_f32(-2.0f), one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t x = vld1q_f32(g + i);
        const float32x4_t x3 = vmulq_f32(vmulq_f32(x, x), x);
        const float32x4_t u = vmulq_f32(beta, vfmaq_f32(x, kappa, x3));
        const float32x4_t d = vaddq_f32(one, exp4(vmulq_f32(m2, u)));
        vst1q_f32(g + i, vmulq_f32(vdivq_f32(x, d), vld1q_f32(up + i)));
    }
    for (; i < n; i++) {
        const float x = g[i];
        const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        g[i] = x / (1.0f + expf(-2.0f * u)) * up[i];
    }
}

static float exp_sub_neon(float *s, float m, int64_t n) {
    const float32x4_t vm = vdupq_n_f32(m), ninf = vdupq_n_f32(-INFINITY);
    float32x4_t acc = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t x = vld1q_f32(s + i);
        const uint32x4_t keep = vmvnq_u32(vceqq_f32(x, ninf));
        const float32x4_t e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(exp4(vsubq_f32(x, vm))), keep));
        vst1q_f32(s + i, e);
        acc = vaddq_f32(acc, e);
    }
    float sum = vaddvq_f32(acc);
    for (; i < n; i++) {
        s[i] = s[i] == -INFINITY ? 0.0f : expf(s[i] - m);
        sum += s[i];
    }
    return sum;
}

/* ---------------------------------------------------------------- FMA peak */

static double fma_loop_neon(int64_t iters, float *sink) {
    float32x4_t c[12];
    for (int j = 0; j < 12; j++) c[j] = vdupq_n_f32((float)j);
    const float32x4_t a = vdupq_n_f32(0.999999f), b = vdupq_n_f32(1e-7f);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) c[j] = vfmaq_f32(b, c[j], a);
    for (int j = 0; j < 12; j++) *sink += vaddvq_f32(c[j]);
    return (double)iters * 12 * 4 * 2;
}

/* ---------------------------------------------------------------- kernel table */

const eg_kernels eg_kernels_neon = {
    .gemm = gemm_neon,
    .gemm_bf16 = gemm_bf16_neon,
    .gemm_q = gemm_q_neon,
    .quantize = quantize_neon,
    .gemm_w16 = eg_gemm_w16_scalar, /* no NEON I16 kernel yet: the scalar twin */
    .quantize_w16 = eg_quantize_blocks_i16,
    .axpy = axpy_neon,
    .scale = scale_neon,
    .gelu_gate = gelu_gate_neon,
    .exp_sub = exp_sub_neon,
    .fma_loop = fma_loop_neon,
    .pairs16 = 0, /* int16 holds two products at |a| <= 127: no narrower ranges needed */
    .kgroup = 4,
};
#endif
