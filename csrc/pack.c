/* pack.c - weight matrices in the GEMM kernels' packed layouts (F32, BF16,
 * I8; see eg_matrix in internal.h) and the dynamic quantization of
 * activations for the I8 kernels. Plain C shared by every ISA, so all kernels
 * see bit-identical packed weights and quantized activations. No Python here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int64_t panel_bytes(const eg_matrix *m) {
    switch (m->type) {
    case EG_W_BF16: return m->k * EG_PANEL * 2;
    case EG_W_I8: return (m->k + 1) / 2 * EG_PANEL * 2;
    default: return m->k * EG_PANEL * 4;
    }
}

int64_t eg_matrix_bytes(const eg_matrix *m) {
    return m->n_panels * panel_bytes(m) + (m->type == EG_W_I8 ? m->n_panels * EG_PANEL * (int64_t)sizeof(float) : 0);
}

eg_status eg_matrix_alloc(eg_matrix *m, int64_t n, int64_t k, eg_wtype type, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->n = n;
    m->k = k;
    m->type = type;
    m->n_panels = (n + EG_PANEL - 1) / EG_PANEL;
    size_t bytes = (size_t)(m->n_panels * panel_bytes(m));
    if (posix_memalign(&m->data, 64, bytes ? bytes : 64) != 0) m->data = NULL;
    if (m->data) memset(m->data, 0, bytes);
    if (m->data && type == EG_W_I8) m->scale = calloc((size_t)(m->n_panels * EG_PANEL), sizeof(float));
    if (!m->data || (type == EG_W_I8 && !m->scale)) {
        eg_matrix_free(m);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory packing a %lld x %lld matrix", (long long)n,
                       (long long)k);
    }
    return EG_OK;
}

void eg_matrix_free(eg_matrix *m) {
    free(m->data);
    free(m->scale);
    m->data = NULL;
    m->scale = NULL;
}

uint16_t eg_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays a (quiet) NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even   */
    return (uint16_t)(u >> 16);
}

void eg_matrix_pack_row(eg_matrix *m, int64_t r, const float *src) {
    const int64_t p = r / EG_PANEL, j = r % EG_PANEL, k = m->k;
    if (m->type == EG_W_F32) {
        eg_matrix_set_row(m, r, src);
    } else if (m->type == EG_W_BF16) {
        uint16_t *dst = (uint16_t *)m->data + p * k * EG_PANEL + (j < 8 ? 2 * j : 2 * (j - 8) + 1);
        for (int64_t kk = 0; kk < k; kk++) dst[kk * EG_PANEL] = eg_f32_to_bf16(src[kk]);
    } else { /* I8: symmetric, one scale per output row */
        float amax = 0.0f;
        for (int64_t kk = 0; kk < k; kk++) amax = fmaxf(amax, fabsf(src[kk]));
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        int8_t *dst = (int8_t *)m->data + p * ((k + 1) / 2) * EG_PANEL * 2 + j * 2;
        for (int64_t kk = 0; kk < k; kk++) {
            float q = nearbyintf(src[kk] * inv);
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            dst[(kk / 2) * EG_PANEL * 2 + (kk & 1)] = (int8_t)q;
        }
        m->scale[r] = amax / 127.0f;
    }
}

int eg_act_qmax(int64_t k) {
    const int64_t k2 = (k + 1) / 2, lim = (int64_t)2147483647 / (254 * (k2 > 0 ? k2 : 1));
    return (int)(lim < 8191 ? lim : 8191);
}

void eg_quantize_rows(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, int16_t *q, int64_t ldq,
                      float *scale) {
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * ldx;
        int16_t *qi = q + i * ldq;
        float amax = 0.0f;
        for (int64_t kk = 0; kk < k; kk++) amax = fmaxf(amax, fabsf(xi[kk])); /* fmaxf drops NaN: checked below */
        int finite = isfinite(amax);
        for (int64_t kk = 0; kk < k && finite; kk++) finite = !isnan(xi[kk]);
        if (!finite) { /* let the NaN reach the output, where the pass reports it */
            memset(qi, 0, (size_t)((k + 1) & ~(int64_t)1) * sizeof *qi);
            scale[i] = NAN;
            continue;
        }
        const float inv = amax > 0.0f ? (float)qmax / amax : 0.0f;
        for (int64_t kk = 0; kk < k; kk++) qi[kk] = (int16_t)nearbyintf(xi[kk] * inv); /* |x * inv| <= qmax */
        if (k & 1) qi[k] = 0;
        scale[i] = amax / (float)qmax;
    }
}
