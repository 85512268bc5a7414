/* pack.c - weight matrices in the GEMM kernels' packed layouts (F32, BF16,
 * I8, Q8_0, Q4_0, I16; see eg_matrix in kernels.h), ggml's block quantizers, and
 * the call that converts activations for a matrix's kernel (eg_quantize_for: the table's quantize
 * or to_bf16, whose scalar twins are in kernels_scalar.c). Plain C shared by every ISA, so all
 * kernels see bit-identical packed weights. No Python here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform.h"

static int64_t panel_bytes(const eg_matrix *m) {
    switch (m->type) {
    case EG_W_BF16: return eg_bf16_panel_elems(m->k) * 2;
    case EG_W_I8:
    case EG_W_Q8_0: return eg_ldq(m->k) * EG_PANEL;
    case EG_W_Q4_0: return m->k / 2 * EG_PANEL;
    case EG_W_I16: return eg_ldq(m->k) * EG_PANEL * 2;
    default: return m->k * EG_PANEL * 4;
    }
}

static int64_t scale_count(const eg_matrix *m) {
    if (eg_wtype_is_int(m->type)) return m->n_panels * (eg_ldq(m->k) / EG_QBLOCK) * EG_PANEL;
    return 0;
}

void eg_matrix_ranges(eg_matrix *m, int pairs16, int bf16dot) {
    m->aqmax = m->type == EG_W_I16 ? EG_I16_QMAX : pairs16 && m->type != EG_W_Q4_0 ? 63 : 127;
    m->bf16dot = m->type == EG_W_BF16 ? bf16dot : 0; /* 0 or EG_BF16DOT_* */
}

void eg_matrix_layout(eg_matrix *m, int kgroup) { m->kgroup = kgroup == 8 ? 8 : 4; }

/* I16's activations are signed: it has no zero-point term, so no wsum */
static int has_wsum(const eg_matrix *m) { return eg_wtype_is_int(m->type) && m->type != EG_W_I16; }

int64_t eg_matrix_bytes(const eg_matrix *m) {
    return m->n_panels * panel_bytes(m) +
           scale_count(m) * (int64_t)(sizeof(float) + (has_wsum(m) ? sizeof(int32_t) : 0));
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
    eg_matrix_ranges(m, 1, 0); /* safe on every ISA; the loader widens them where the kernels allow */
    m->kgroup = 4;
    m->n_panels = (n + EG_PANEL - 1) / EG_PANEL;
    size_t bytes = (size_t)(m->n_panels * panel_bytes(m));
    m->data = eg_aligned_alloc(bytes);
    /* Every call streams all the weights from memory: with 4 KB pages a 20-token query walked the page
     * tables ~50,000 times and the hardware prefetchers restart at every page boundary */
    if (m->data) eg_os_prefer_huge_pages(m->data, bytes);
    if (m->data) memset(m->data, 0, bytes);
    const int64_t ns = scale_count(m);
    if (m->data && ns) {
        m->scale = calloc((size_t)ns, sizeof(float));
        if (has_wsum(m)) m->wsum = calloc((size_t)ns, sizeof(int32_t));
    }
    if (!m->data || (ns && (!m->scale || (has_wsum(m) && !m->wsum)))) {
        eg_matrix_free(m);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory packing a %lld x %lld matrix", (long long)n,
                       (long long)k);
    }
    return EG_OK;
}

void eg_matrix_free(eg_matrix *m) {
    eg_aligned_free(m->data);
    free(m->scale);
    free(m->wsum);
    m->data = NULL;
    m->scale = NULL;
    m->wsum = NULL;
}

uint16_t eg_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays a (quiet) NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even   */
    return (uint16_t)(u >> 16);
}

/* Byte offset of W[r][kk] in an I8 / Q8_0 panel set (kb/g runs of 16 x g, g = kgroup). */
static inline int64_t i8_offset(const eg_matrix *m, int64_t r, int64_t kk) {
    const int64_t g = m->kgroup, p = r / EG_PANEL, j = r % EG_PANEL, kg = eg_ldq(m->k) / g; /* whole blocks */
    return ((p * kg + kk / g) * EG_PANEL + j) * g + kk % g;
}

/* Block b (k values b*32 .. b*32+31, fewer in an I8 row's last block) of row r of an integer
 * matrix, with its scale d. */
static void pack_block(eg_matrix *m, int64_t r, int64_t b, const int8_t *q, float d) {
    const int64_t p = r / EG_PANEL, j = r % EG_PANEL, k = m->k, nb = eg_ldq(k) / EG_QBLOCK;
    const int len = k - b * EG_QBLOCK < EG_QBLOCK ? (int)(k - b * EG_QBLOCK) : EG_QBLOCK;
    const int32_t zp = m->aqmax + 1;
    int32_t sum = 0;
    for (int e = 0; e < len; e++) {
        const int64_t kk = b * EG_QBLOCK + e;
        sum += q[e];
        if (m->type != EG_W_Q4_0) {
            ((int8_t *)m->data)[i8_offset(m, r, kk)] = q[e];
        } else { /* runs 2h and 2h+1 (of g = kgroup k each) share the bytes of 2g-k group h */
            const int64_t g = m->kgroup, kq = kk / g;
            uint8_t *byte = (uint8_t *)m->data + (p * (k / (2 * g)) + kq / 2) * EG_PANEL * g + j * g + kk % g;
            const uint8_t nib = (uint8_t)(q[e] + 8) & 0x0F;
            *byte = kq & 1 ? (uint8_t)((*byte & 0x0F) | (nib << 4)) : (uint8_t)((*byte & 0xF0) | nib);
        }
    }
    m->scale[(p * nb + b) * EG_PANEL + j] = d;
    m->wsum[(p * nb + b) * EG_PANEL + j] = zp * sum;
}

/* Our own integer types' rounding of a block of len weights: symmetric, inv = wq / amax, q =
 * nearbyint(w * inv) clamped to +-wq (ties to even); returns the scale amax / wq. An all-zero block,
 * or one below wq / FLT_MAX (~4e-37, where inv would be infinite and 0 x inv NaN), is zeros, scale 0. */
static float round_block(const float *xb, int64_t len, float wq, float *q) {
    float amax = 0.0f;
    for (int64_t e = 0; e < len; e++) amax = fmaxf(amax, fabsf(xb[e]));
    const float inv0 = amax > 0.0f ? wq / amax : 0.0f, inv = inv0 < INFINITY ? inv0 : 0.0f;
    for (int64_t e = 0; e < len; e++) {
        const float v = nearbyintf(xb[e] * inv);
        q[e] = v > wq ? wq : v < -wq ? -wq : v;
    }
    return inv > 0.0f ? amax / wq : 0.0f;
}

void eg_matrix_pack_row(eg_matrix *m, int64_t r, const float *src) {
    const int64_t p = r / EG_PANEL, j = r % EG_PANEL, k = m->k;
    if (m->type == EG_W_F32) {
        eg_matrix_set_row(m, r, src);
    } else if (m->type == EG_W_BF16) { /* k-pairs: (i, j, e) at (i*16 + j)*2 + e */
        uint16_t *dst = (uint16_t *)m->data + p * eg_bf16_panel_elems(k) + 2 * j;
        for (int64_t kk = 0; kk < k; kk++) dst[kk / 2 * 2 * EG_PANEL + (kk & 1)] = eg_f32_to_bf16(src[kk]);
    } else if (m->type == EG_W_I8 || m->type == EG_W_I16) { /* symmetric, a float32 scale per row and block */
        const int64_t kb = eg_ldq(k), nb = kb / EG_QBLOCK;
        for (int64_t b = 0; b * EG_QBLOCK < k; b++) {
            const int64_t len = k - b * EG_QBLOCK < EG_QBLOCK ? k - b * EG_QBLOCK : EG_QBLOCK;
            float qf[EG_QBLOCK];
            if (m->type == EG_W_I8) {
                const float d = round_block(src + b * EG_QBLOCK, len, 127.0f, qf);
                int8_t q[EG_QBLOCK];
                for (int64_t e = 0; e < len; e++) q[e] = (int8_t)qf[e];
                pack_block(m, r, b, q, d);
            } else { /* k-pairs (kernels.h) */
                m->scale[(p * nb + b) * EG_PANEL + j] = round_block(src + b * EG_QBLOCK, len, EG_I16_QMAX, qf);
                int16_t *panel = (int16_t *)m->data + p * kb * EG_PANEL;
                for (int64_t e = 0; e < len; e++) {
                    const int64_t kk = b * EG_QBLOCK + e;
                    panel[((kk / 2) * EG_PANEL + j) * 2 + kk % 2] = (int16_t)qf[e];
                }
            }
        }
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

int64_t eg_quantize_for(const eg_kernels *k, const eg_matrix *w, const float *x, int64_t ldx, int64_t m, uint8_t *xq,
                        int64_t ldq, float *xs) {
    if (w->type == EG_W_BF16 && w->bf16dot) {
        k->to_bf16(x, ldx, m, w->k, (uint16_t *)(void *)xq, ldq / 2);
        return 0;
    }
    if (!eg_wtype_is_int(w->type)) return 0;
    const int64_t nb = eg_ldq(w->k) / EG_QBLOCK;
    if (w->type == EG_W_I16) {
        k->quantize_w16(x, ldx, m, w->k, (int16_t *)(void *)xq, ldq / 2, xs, nb);
        return nb;
    }
    k->quantize(x, ldx, m, w->k, w->aqmax, xq, ldq, xs, nb);
    return nb;
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
