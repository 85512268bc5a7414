/* pack.c - weight matrices in the GEMM kernels' packed layouts (F32, BF16,
 * I8, Q8_0, Q4_0; see eg_matrix in internal.h), ggml's block quantizers, and
 * the dynamic quantization of activations for the integer kernels. Plain C shared by every ISA, so all kernels
 * see bit-identical packed weights and quantized activations. No Python here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int64_t panel_bytes(const eg_matrix *m) {
    switch (m->type) {
    case EG_W_BF16: return m->k * EG_PANEL * 2;
    case EG_W_I8:
    case EG_W_Q8_0: return (m->k + 1) / 2 * EG_PANEL * 2;
    case EG_W_Q4_0: return m->k / 4 * EG_PANEL * 2;
    default: return m->k * EG_PANEL * 4;
    }
}

static int64_t scale_count(const eg_matrix *m) {
    if (m->type == EG_W_I8) return m->n_panels * EG_PANEL;
    if (eg_wtype_is_block(m->type)) return m->n_panels * (m->k / EG_QBLOCK) * EG_PANEL;
    return 0;
}

int64_t eg_matrix_bytes(const eg_matrix *m) {
    return m->n_panels * panel_bytes(m) + scale_count(m) * (int64_t)sizeof(float);
}

eg_status eg_matrix_alloc(eg_matrix *m, int64_t n, int64_t k, eg_wtype type, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (eg_wtype_is_block(type) && k % EG_QBLOCK != 0)
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                       "Q8_0 / Q4_0 weights need a multiple of %d inputs per row; this matrix has %lld", EG_QBLOCK,
                       (long long)k);
    m->n = n;
    m->k = k;
    m->type = type;
    m->n_panels = (n + EG_PANEL - 1) / EG_PANEL;
    size_t bytes = (size_t)(m->n_panels * panel_bytes(m));
    if (posix_memalign(&m->data, 64, bytes ? bytes : 64) != 0) m->data = NULL;
    if (m->data) memset(m->data, 0, bytes);
    const int64_t ns = scale_count(m);
    if (m->data && ns) m->scale = calloc((size_t)ns, sizeof(float));
    if (!m->data || (ns && !m->scale)) {
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

/* Block b (k values b*32 .. b*32+31) of row r of a Q8_0 / Q4_0 matrix. */
static void pack_block(eg_matrix *m, int64_t r, int64_t b, const int8_t *q, float d) {
    const int64_t p = r / EG_PANEL, j = r % EG_PANEL, k = m->k, nb = k / EG_QBLOCK;
    m->scale[(p * nb + b) * EG_PANEL + j] = d;
    for (int e = 0; e < EG_QBLOCK; e++) {
        const int64_t kk = b * EG_QBLOCK + e, kp = kk / 2, idx = j * 2 + (kk & 1); /* I8-layout position */
        if (m->type == EG_W_Q8_0) {
            ((int8_t *)m->data)[(p * (k / 2) + kp) * EG_PANEL * 2 + idx] = q[e];
        } else {
            uint8_t *byte = (uint8_t *)m->data + (p * (k / 4) + kp / 2) * EG_PANEL * 2 + idx;
            const uint8_t nib = (uint8_t)(q[e] + 8) & 0x0F;
            *byte = kp & 1 ? (uint8_t)((*byte & 0x0F) | (nib << 4)) : (uint8_t)((*byte & 0xF0) | nib);
        }
    }
}

void eg_matrix_pack_row(eg_matrix *m, int64_t r, const float *src) {
    const int64_t p = r / EG_PANEL, j = r % EG_PANEL, k = m->k;
    if (m->type == EG_W_F32) {
        eg_matrix_set_row(m, r, src);
    } else if (m->type == EG_W_BF16) {
        uint16_t *dst = (uint16_t *)m->data + p * k * EG_PANEL + (j < 8 ? 2 * j : 2 * (j - 8) + 1);
        for (int64_t kk = 0; kk < k; kk++) dst[kk * EG_PANEL] = eg_f32_to_bf16(src[kk]);
    } else if (m->type == EG_W_I8) { /* symmetric, one scale per output row */
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
    } else { /* Q8_0 / Q4_0: ggml's quantizer, then the block layout */
        int8_t q[EG_QBLOCK];
        float d;
        for (int64_t b = 0; b < k / EG_QBLOCK; b++) {
            if (m->type == EG_W_Q8_0) eg_quantize_q8_0(src + b * EG_QBLOCK, EG_QBLOCK, q, &d);
            else eg_quantize_q4_0(src + b * EG_QBLOCK, EG_QBLOCK, q, &d);
            pack_block(m, r, b, q, d);
        }
    }
}

void eg_matrix_pack_row_q(eg_matrix *m, int64_t r, const int8_t *q, const float *d) {
    for (int64_t b = 0; b < m->k / EG_QBLOCK; b++) pack_block(m, r, b, q + b * EG_QBLOCK, d[b]);
}

/* float -> float16 -> float, round to nearest even (the scale a GGUF block stores) */
static float round_f16(float f) {
    if (!isfinite(f) || fabsf(f) >= 65520.0f) return f != f ? f : copysignf(INFINITY, f);
    if (fabsf(f) < 6.103515625e-05f) { /* subnormal half: a multiple of 2^-24 */
        return nearbyintf(f * 16777216.0f) / 16777216.0f;
    }
    int e;
    frexpf(f, &e);                                  /* |f| in [2^(e-1), 2^e) */
    const float ulp = ldexpf(1.0f, e - 11);         /* 10 fraction bits      */
    return nearbyintf(f / ulp) * ulp;
}

void eg_quantize_q8_0(const float *x, int64_t n, int8_t *q, float *d) {
    for (int64_t b = 0; b < n / EG_QBLOCK; b++) {
        const float *xb = x + b * EG_QBLOCK;
        float amax = 0.0f;
        for (int j = 0; j < EG_QBLOCK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        for (int j = 0; j < EG_QBLOCK; j++) q[b * EG_QBLOCK + j] = (int8_t)roundf(xb[j] * id);
        d[b] = round_f16(db);
    }
}

void eg_quantize_q4_0(const float *x, int64_t n, int8_t *q, float *d) {
    for (int64_t b = 0; b < n / EG_QBLOCK; b++) {
        const float *xb = x + b * EG_QBLOCK;
        float amax = 0.0f, max = 0.0f; /* the value of largest magnitude, sign kept */
        for (int j = 0; j < EG_QBLOCK; j++)
            if (amax < fabsf(xb[j])) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        const float db = max / -8.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        for (int j = 0; j < EG_QBLOCK; j++) {
            int v = (int)(xb[j] * id + 8.5f);
            q[b * EG_QBLOCK + j] = (int8_t)((v > 15 ? 15 : v) - 8);
        }
        d[b] = round_f16(db);
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

void eg_quantize_blocks(const float *x, int64_t ldx, int64_t m, int64_t k, int16_t *q, int64_t ldq, float *scale,
                        int64_t ldxs) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t b = 0; b < k / EG_QBLOCK; b++)
            eg_quantize_rows(x + i * ldx + b * EG_QBLOCK, ldx, 1, EG_QBLOCK, 32767, q + i * ldq + b * EG_QBLOCK, ldq,
                             scale + i * ldxs + b);
}

int64_t eg_quantize_for(const eg_matrix *w, const float *x, int64_t ldx, int64_t m, int16_t *xq, int64_t ldq,
                        float *xs) {
    if (w->type == EG_W_I8) {
        eg_quantize_rows(x, ldx, m, w->k, eg_act_qmax(w->k), xq, ldq, xs);
        return 1;
    }
    if (eg_wtype_is_block(w->type)) {
        eg_quantize_blocks(x, ldx, m, w->k, xq, ldq, xs, w->k / EG_QBLOCK);
        return w->k / EG_QBLOCK;
    }
    return 0;
}

/* ---------------------------------------------------------------- file rows */

int64_t eg_row_bytes(eg_dtype dt, int64_t k) {
    switch (dt) {
    case EG_F32: return 4 * k;
    case EG_Q8_0: return k / EG_QBLOCK * 34; /* f16 scale + 32 int8      */
    case EG_Q4_0: return k / EG_QBLOCK * 18; /* f16 scale + 16 nibble pairs */
    default: return 2 * k;
    }
}

void eg_row_blocks(eg_dtype dt, const uint8_t *src, int64_t k, int8_t *q, float *d) {
    const int64_t bsz = dt == EG_Q8_0 ? 34 : 18;
    for (int64_t b = 0; b < k / EG_QBLOCK; b++) {
        const uint8_t *blk = src + b * bsz;
        d[b] = eg_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
        int8_t *qb = q + b * EG_QBLOCK;
        if (dt == EG_Q8_0) {
            memcpy(qb, blk + 2, EG_QBLOCK);
        } else { /* byte j: element j in the low nibble, element j + 16 in the high one */
            for (int j = 0; j < EG_QBLOCK / 2; j++) {
                qb[j] = (int8_t)((blk[2 + j] & 0x0F) - 8);
                qb[j + EG_QBLOCK / 2] = (int8_t)((blk[2 + j] >> 4) - 8);
            }
        }
    }
}

void eg_row_to_f32(eg_dtype dt, const uint8_t *src, int64_t k, float *dst) {
    if (dt == EG_F32) {
        memcpy(dst, src, (size_t)k * 4);
    } else if (dt == EG_Q8_0 || dt == EG_Q4_0) {
        int8_t q[EG_QBLOCK];
        float d;
        const int64_t bsz = eg_row_bytes(dt, EG_QBLOCK);
        for (int64_t b = 0; b < k / EG_QBLOCK; b++) {
            eg_row_blocks(dt, src + b * bsz, EG_QBLOCK, q, &d);
            for (int j = 0; j < EG_QBLOCK; j++) dst[b * EG_QBLOCK + j] = (float)q[j] * d; /* ggml's dequantize */
        }
    } else {
        for (int64_t i = 0; i < k; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = dt == EG_BF16 ? eg_bf16_to_f32(h) : eg_f16_to_f32(h);
        }
    }
}
