/* kernels_scalar.c - the plain-C kernels. They are the specification: every
 * optimized kernel is tested against these at awkward sizes. No allocation,
 * no threads. No Python here.
 */
#include <math.h>

#include "internal.h"

/* Weight (column j, step kk) of a float panel. BF16 panels hold column j of a
 * 16-wide group at position 2j (j < 8) or 2(j-8)+1. */
static inline float panel_weight(const eg_matrix *w, const void *panel, int64_t kk, int64_t j) {
    if (w->type == EG_W_F32) return ((const float *)panel)[kk * EG_PANEL + j];
    return eg_bf16_to_f32(((const uint16_t *)panel)[kk * EG_PANEL + (j < 8 ? 2 * j : 2 * (j - 8) + 1)]);
}

static void gemm_float_scalar(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                              float *y, int64_t ldy) {
    const int64_t k = w->k, esz = w->type == EG_W_F32 ? 4 : 2;
    for (int64_t p = p0; p < p1; p++) {
        const void *panel = (const uint8_t *)w->data + p * k * EG_PANEL * esz;
        int64_t cols = w->n - p * EG_PANEL;
        if (cols > EG_PANEL) cols = EG_PANEL;
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
        int64_t cols = w->n - p * EG_PANEL;
        if (cols > EG_PANEL) cols = EG_PANEL;
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

static double fma_loop_scalar(int64_t iters, float *sink) {
    float c[12];
    for (int j = 0; j < 12; j++) c[j] = (float)j;
    const float a = 0.999999f, b = 1e-7f;
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < 12; j++) c[j] = c[j] * a + b;
    for (int j = 0; j < 12; j++) *sink += c[j];
    return (double)iters * 12 * 2;
}

const eg_kernels eg_kernels_scalar = {
    .gemm = gemm_float_scalar, /* F32 and BF16 panels alike */
    .gemm_bf16 = gemm_float_scalar,
    .gemm_q = gemm_q_scalar,
    .quantize = eg_quantize_blocks_u8, /* pack.c */
    .axpy = axpy_scalar,
    .scale = scale_scalar,
    .gelu_gate = gelu_gate_scalar,
    .exp_sub = exp_sub_scalar,
    .fma_loop = fma_loop_scalar,
    .pairs16 = 0, /* int32 sums: no int16 step to saturate */
};
