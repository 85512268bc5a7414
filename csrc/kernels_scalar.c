/* kernels_scalar.c - the plain-C kernels. They are the specification: every
 * optimized kernel is tested against its twin here at awkward sizes (tests/test_kernels.py,
 * tests/c/driver.c) and at load (eg_isa_selfcheck). Every kernel file follows this one's sections
 * (kernels.h). No allocation, no threads. No Python here.
 */
#include <float.h>
#include <math.h>

#include "platform.h" /* Windows: a correctly rounded fmaf */
#include <string.h>

#include "kernels.h"

/* ---------------------------------------------------------------- float GEMM (F32, BF16) */

/* Weight (column j, step kk) of a float panel; BF16 panels hold k-pairs (kernels.h). */
static inline float panel_weight(const eg_matrix *w, const void *panel, int64_t kk, int64_t j) {
    if (w->type == EG_W_F32) return ((const float *)panel)[kk * EG_PANEL + j];
    return eg_bf16_to_f32(((const uint16_t *)panel)[kk / 2 * 2 * EG_PANEL + 2 * j + (kk & 1)]);
}

static void gemm_float_scalar(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                              float *y, int64_t ldy) {
    const int64_t k = w->k, pbytes = w->type == EG_W_F32 ? k * EG_PANEL * 4 : eg_bf16_panel_elems(k) * 2;
    for (int64_t p = p0; p < p1; p++) {
        const void *panel = (const uint8_t *)w->data + p * pbytes;
        const int64_t cols = eg_panel_cols(w, p);
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * ldx;
            for (int64_t j = 0; j < cols; j++) {
                float acc = 0.0f;
                for (int64_t kk = 0; kk < k; kk++) acc += xi[kk] * panel_weight(w, panel, kk, j);
                y[i * ldy + p * EG_PANEL + j] = acc;
            }
        }
    }
}

/* ---------------------------------------------------------------- bfloat16 x bfloat16 (vdpbf16ps, AMX) */

/* A float below the normal range reads as a zero of its sign (DAZ; FTZ on a result already rounded). */
static inline float flush(float v) { return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v; }

static inline float bf16_daz(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return flush(f);
}

/* One step of vdpbf16ps: acc + a * b, fused, rounded to nearest even, a tiny result flushed to a
 * zero of its sign (a, b, acc already normal or zero). The hardware judges tininess on the 24-bit
 * rounding with unbounded exponent: FLT_MIN - 2^-150, say, becomes 0, where fmaf's subnormal
 * rounding gives FLT_MIN. So a result near the subnormal range is redone 2^32
 * higher, where that rounding is exact (a factor and acc scaled: with |r| < 2^-100 and |acc| < 2^90
 * the smaller factor is below 2^45, so nothing overflows; with |acc| >= 2^90 a tiny nonzero sum
 * cannot occur, the product's and acc's last bits being far above 2^-126). Checked bit for bit
 * against the instruction on 48 million random steps, subnormals, infinities, NaNs and
 * cancellations included. */
static inline float dp_step(float a, float b, float acc) {
    const float r = fmaf(a, b, acc);
    if (r != 0.0f && fabsf(r) < 0x1p-100f && fabsf(acc) < 0x1p90f) {
        const float t = fabsf(a) < fabsf(b) ? fmaf(a * 0x1p32f, b, acc * 0x1p32f) : fmaf(a, b * 0x1p32f, acc * 0x1p32f);
        return fabsf(t) < 0x1p-94f ? copysignf(0.0f, t) : r;
    }
    return flush(r);
}

/* One output of AMX's tdpbf16ps over k = 32 c .. 32 c + 31 (one tile row of A times one column of B),
 * added to acc. Measured on Sapphire Rapids (not Intel's pseudocode, which reads as one chain): the
 * even-k products summed in order from +0 into one float, the odd-k ones into another, each step
 * fused and flushed as vdpbf16ps's (dp_step: subnormal products are kept, a result tiny at 24 bits
 * becomes a zero of its sign), then (even + odd) + acc, each addition rounded to nearest even and
 * flushed (a tiny sum of two normal floats is exact, so flush is the whole rule there). */
static inline float amx_block(const uint16_t *x, const uint16_t *w, float acc) {
    float even = 0.0f, odd = 0.0f;
    for (int t = 0; t < EG_QBLOCK / 2; t++) {
        even = dp_step(bf16_daz(x[2 * t]), bf16_daz(w[t * 2 * EG_PANEL]), even);
        odd = dp_step(bf16_daz(x[2 * t + 1]), bf16_daz(w[t * 2 * EG_PANEL + 1]), odd);
    }
    return flush(flush(even + odd) + flush(acc));
}

/* One output of vdpbf16ps GEMM: one accumulator over the k2 k-pairs in order, each pair as one
 * vdpbf16ps lane does it (Intel's pseudocode: the odd element's product first). */
static inline float vdp_output(const uint16_t *x, const uint16_t *w, int64_t k2) {
    float acc = 0.0f;
    for (int64_t t = 0; t < k2; t++) {
        const uint16_t *wt = w + t * 2 * EG_PANEL;
        acc = dp_step(bf16_daz(x[2 * t + 1]), bf16_daz(wt[1]), flush(acc));
        acc = dp_step(bf16_daz(x[2 * t]), bf16_daz(wt[0]), acc);
    }
    return acc;
}

/* One output of the AMX GEMM: over the kc blocks of 32 k in order, each as amx_block (xb and the
 * panels are padded with zeros to whole blocks). */
static inline float amx_output(const uint16_t *x, const uint16_t *w, int64_t kc) {
    float acc = 0.0f;
    for (int64_t c = 0; c < kc; c++) acc = amx_block(x + c * EG_QBLOCK, w + c * EG_QBLOCK * EG_PANEL, acc);
    return acc;
}

/* gemm_bf16dot's twin, for either arithmetic (w->bf16dot: EG_BF16DOT_VDP or EG_BF16DOT_AMX). */
static void gemm_bf16dot_scalar(const uint16_t *xb, int64_t ldb, int64_t m, const eg_matrix *w, int64_t p0,
                                int64_t p1, float *y, int64_t ldy) {
    const int64_t k2 = (w->k + 1) / 2, kc = eg_ldq(w->k) / EG_QBLOCK;
    const int amx = w->bf16dot == EG_BF16DOT_AMX;
    for (int64_t p = p0; p < p1; p++) {
        const uint16_t *panel = (const uint16_t *)w->data + p * eg_bf16_panel_elems(w->k);
        const int64_t cols = eg_panel_cols(w, p);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < cols; j++)
                y[i * ldy + p * EG_PANEL + j] = amx ? amx_output(xb + i * ldb, panel + 2 * j, kc)
                                                    : vdp_output(xb + i * ldb, panel + 2 * j, k2);
    }
}

/* vcvtneps2bf16 on one float (Intel's pseudocode, checked against the instruction on all 2^32 inputs) */
static inline uint16_t bf16_of_activation(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);                /* zero, subnormal */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);          /* NaN, made quiet */
    if ((u & 0x7fffffffu) == 0x7f800000u) return (uint16_t)(u >> 16);                  /* infinity        */
    u += 0x7fffu + ((u >> 16) & 1u);                                                   /* nearest even    */
    return (uint16_t)(u >> 16);
}

/* to_bf16's twin (and the scalar table's to_bf16 itself). */
void eg_round_bf16_rows(const float *x, int64_t ldx, int64_t m, int64_t k, uint16_t *xb, int64_t ldb) {
    for (int64_t i = 0; i < m; i++) {
        for (int64_t kk = 0; kk < k; kk++) xb[i * ldb + kk] = bf16_of_activation(x[i * ldx + kk]);
        for (int64_t kk = k; kk < eg_ldq(k); kk++) xb[i * ldb + kk] = 0;
    }
}

/* ---------------------------------------------------------------- I8 / Q8_0 / Q4_0 */

/* Weight (column j, input kk) of an I8 / Q8_0 / Q4_0 panel as its integer q (0 in the padding), in
 * runs of g = kgroup k (k-quads or k-octets). */
static inline int32_t panel_q(const eg_matrix *w, const uint8_t *panel, int64_t kk, int64_t j) {
    const int64_t g = w->kgroup == 8 ? 8 : 4, idx = j * g + kk % g;
    if (w->type != EG_W_Q4_0) return ((const int8_t *)panel)[(kk / g) * EG_PANEL * g + idx];
    const uint8_t byte = panel[(kk / (2 * g)) * EG_PANEL * g + idx];
    return (int32_t)((kk / g) & 1 ? byte >> 4 : byte & 0x0F) - 8;
}

static void gemm_q_scalar(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                          const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const int64_t k = w->k, nb = eg_ldq(k) / EG_QBLOCK;
    const int64_t pbytes = w->type == EG_W_Q4_0 ? k / 2 * EG_PANEL : eg_ldq(k) * EG_PANEL;
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *panel = (const uint8_t *)w->data + p * pbytes;
        const int64_t cols = eg_panel_cols(w, p);
        for (int64_t i = 0; i < m; i++) {
            const uint8_t *qi = xq + i * ldq;
            for (int64_t j = 0; j < cols; j++) {
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t isum = 0;
                    for (int64_t kk = b * EG_QBLOCK; kk < (b + 1) * EG_QBLOCK; kk++)
                        isum += (int32_t)qi[kk] * panel_q(w, panel, kk, j);
                    const int64_t sb = (p * nb + b) * EG_PANEL + j;
                    acc = fmaf((float)(isum - w->wsum[sb]), xs[i * ldxs + b] * w->scale[sb], acc);
                }
                y[i * ldy + p * EG_PANEL + j] = acc;
            }
        }
    }
}

/* gemm_w16's specification: the I16 panel's k-pairs (kernels.h), exact int32 block sums. */
void eg_gemm_w16_scalar(const int16_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m, const eg_matrix *w,
                        int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const int64_t kb = eg_ldq(w->k), nb = kb / EG_QBLOCK;
    for (int64_t p = p0; p < p1; p++) {
        const int16_t *panel = (const int16_t *)w->data + p * kb * EG_PANEL;
        const int64_t cols = eg_panel_cols(w, p);
        for (int64_t i = 0; i < m; i++) {
            const int16_t *qi = xq + i * ldq;
            for (int64_t j = 0; j < cols; j++) {
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    int32_t isum = 0;
                    for (int64_t kk = b * EG_QBLOCK; kk < (b + 1) * EG_QBLOCK; kk++)
                        isum += (int32_t)qi[kk] * panel[((kk / 2) * EG_PANEL + j) * 2 + kk % 2];
                    const int64_t sb = (p * nb + b) * EG_PANEL + j;
                    acc = fmaf((float)isum, xs[i * ldxs + b] * w->scale[sb], acc);
                }
                y[i * ldy + p * EG_PANEL + j] = acc;
            }
        }
    }
}

/* Round to nearest, ties to even, for |v| < 2^22: the float adder does it, and the loop
 * vectorizes on any x86-64, unlike nearbyintf (compilers keep (v + c) - c as written
 * unless told -ffast-math, which this build never is). */
static inline float round_even(float v) {
    const float c = 12582912.0f; /* 1.5 * 2^23 */
    return (v + c) - c;
}

/* One block of len (<= 32) activations, symmetric: a[e] = round(x / s), s = amax / qmax, |a| <= qmax, and
 * a[e] = 0 past len; returns s. A block with NaN or inf is all 0 with scale NaN (the pass then reports it);
 * one whose amax is below qmax / FLT_MAX (~4e-37, where 0 x inv would be NaN) all 0 with scale 0. */
static float quantize_block(const float *xb, int len, int qmax, int32_t a[EG_QBLOCK]) {
    const float fq = (float)qmax;
    float amax = 0.0f;
    int nan = 0;
    for (int e = 0; e < len; e++) {
        const float v = fabsf(xb[e]);
        amax = v > amax ? v : amax;
        nan |= v != v;
    }
    memset(a, 0, EG_QBLOCK * sizeof *a);
    if (nan || !(amax < INFINITY)) return NAN;
    const float inv = amax > 0.0f ? fq / amax : 0.0f;
    if (!(inv < INFINITY)) return 0.0f;
    for (int e = 0; e < len; e++) {
        const float v = round_even(xb[e] * inv); /* |v| <= qmax, up to rounding of inv */
        a[e] = (int32_t)(v < -fq ? -fq : v > fq ? fq : v);
    }
    return amax / fq;
}

/* quantize's twin (and the scalar table's quantize itself): a + qmax + 1 as uint8, pads at the zero point. */
void eg_quantize_blocks_u8(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, uint8_t *q, int64_t ldq,
                           float *scale, int64_t ldxs) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t b = 0; b * EG_QBLOCK < k; b++) {
            const int len = k - b * EG_QBLOCK < EG_QBLOCK ? (int)(k - b * EG_QBLOCK) : EG_QBLOCK;
            int32_t a[EG_QBLOCK];
            scale[i * ldxs + b] = quantize_block(x + i * ldx + b * EG_QBLOCK, len, qmax, a);
            for (int e = 0; e < EG_QBLOCK; e++) q[i * ldq + b * EG_QBLOCK + e] = (uint8_t)(a[e] + qmax + 1);
        }
}

/* quantize_w16's twin (and the scalar table's): qmax EG_I16_QMAX, a kept signed, pads 0. */
void eg_quantize_blocks_i16(const float *x, int64_t ldx, int64_t m, int64_t k, int16_t *q, int64_t ldq, float *scale,
                            int64_t ldxs) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t b = 0; b * EG_QBLOCK < k; b++) {
            const int len = k - b * EG_QBLOCK < EG_QBLOCK ? (int)(k - b * EG_QBLOCK) : EG_QBLOCK;
            int32_t a[EG_QBLOCK];
            scale[i * ldxs + b] = quantize_block(x + i * ldx + b * EG_QBLOCK, len, EG_I16_QMAX, a);
            for (int e = 0; e < EG_QBLOCK; e++) q[i * ldq + b * EG_QBLOCK + e] = (int16_t)a[e];
        }
}

/* ---------------------------------------------------------------- row operations */

static void axpy_scalar(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void scale_scalar(float a, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= a;
}

static void gelu_gate_scalar(float *g, const float *up, int64_t n) {
    const float k_beta = 0.7978845608028654f, k_kappa = 0.044715f;
    for (int64_t i = 0; i < n; i++) {
        float x = g[i];
        float u = k_beta * (x + k_kappa * x * x * x);
        g[i] = x / (1.0f + expf(-2.0f * u)) * up[i];
    }
}

static float exp_sub_scalar(float *s, float m, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        s[i] = s[i] == -INFINITY ? 0.0f : expf(s[i] - m);
        sum += s[i];
    }
    return sum;
}

/* ---------------------------------------------------------------- FMA peak */

static double fma_loop_scalar(int64_t iters, float *sink) {
    float c[12];
    for (int j = 0; j < 12; j++) c[j] = (float)j;
    const float a = 0.999999f, b = 1e-7f;
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) c[j] = c[j] * a + b;
    for (int j = 0; j < 12; j++) *sink += c[j];
    return (double)iters * 12 * 2;
}

/* ---------------------------------------------------------------- kernel table */

const eg_kernels eg_kernels_scalar = {
    .gemm = gemm_float_scalar, /* F32 and BF16 panels alike */
    .gemm_bf16 = gemm_float_scalar,
    .gemm_bf16dot = gemm_bf16dot_scalar, /* the twin; this ISA's own BF16 GEMM is gemm_bf16 */
    .to_bf16 = eg_round_bf16_rows,
    .gemm_q = gemm_q_scalar,
    .quantize = eg_quantize_blocks_u8,
    .gemm_w16 = eg_gemm_w16_scalar,
    .quantize_w16 = eg_quantize_blocks_i16,
    .axpy = axpy_scalar,
    .scale = scale_scalar,
    .gelu_gate = gelu_gate_scalar,
    .exp_sub = exp_sub_scalar,
    .fma_loop = fma_loop_scalar,
    .pairs16 = 0, /* int32 sums: no int16 step to saturate */
    .bf16dot = 0,
};
