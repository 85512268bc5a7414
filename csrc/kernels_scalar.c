/* kernels_scalar.c - the plain-C kernels. They are the specification: every
 * optimized kernel is tested against these at awkward sizes. No allocation,
 * no threads. No Python here.
 */
#include <math.h>

#include "internal.h"

static void gemm_scalar(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1, float *y,
                        int64_t ldy) {
    const int64_t k = w->k;
    for (int64_t p = p0; p < p1; p++) {
        const float *panel = w->data + p * k * EG_PANEL;
        int64_t cols = w->n - p * EG_PANEL;
        if (cols > EG_PANEL) cols = EG_PANEL;
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * ldx;
            for (int64_t j = 0; j < cols; j++) {
                float acc = 0.0f;
                for (int64_t kk = 0; kk < k; kk++) acc += xi[kk] * panel[kk * EG_PANEL + j];
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

const eg_kernels eg_kernels_scalar = {
    .gemm = gemm_scalar,
    .axpy = axpy_scalar,
    .scale = scale_scalar,
    .gelu_gate = gelu_gate_scalar,
    .exp_sub = exp_sub_scalar,
};
