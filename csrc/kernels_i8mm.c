/* kernels_i8mm.c - ARM64 with FEAT_I8MM (Neoverse V1/N2/V2, Cortex-A510/A710/X2 and later, Apple
 * M2 and later): the integer GEMMs on SMMLA, which multiplies a 2 x 8 int8 matrix by an 8 x 2 one
 * into a 2 x 2 int32 tile (32 multiply-adds, twice SDOT's). Its right operand is two columns of 8
 * k each, so these kernels read panels packed in k-octets (eg_matrix kgroup 8, which the loader
 * packs because the table says so); the left operand is two rows of activations, 8 k each, put
 * together by ZIP1 / ZIP2 of 64-bit lanes. dispatch.c takes every other kernel from the NEON
 * table. The twin is gemm_q_scalar (it reads both layouts), bit for bit. Compiled with target
 * attributes: nothing here runs unless dispatch.c has seen the feature.
 * No allocation, no threads, no Python.
 */
#include "kernels.h"

#ifdef EG_HAVE_ARM64
#include "kernels_neon.h"

/* ---------------------------------------------------------------- I8 / Q8_0 / Q4_0 */

#define MRM 4 /* rows per micro-kernel, in 2 pairs: 8 int32 + 8 float accumulators, 8 activation + 4 weight vectors */

/* c [r0c0 r0c1 r1c0 r1c1] += a (rows r0, r1 x 8 k) . w (columns c0, c1 x 8 k)^T. Written as asm:
 * older clang (Apple clang 14) has no SMMLA intrinsic outside -march flags. */
EG_INLINE EG_TGT_I8MM int32x4_t smmla(int32x4_t c, int8x16_t a, int8x16_t w) {
    __asm__("smmla %0.4s, %1.16b, %2.16b" : "+w"(c) : "w"(a), "w"(w));
    return c;
}

/* Octets 2g and 2g+1 of block b for the 4 column pairs of half h: w[octet][pair]. A Q4_0 group
 * of 128 bytes holds octet 2g in its low nibbles and 2g+1 in its high ones. */
EG_INLINE EG_TGT_I8MM void octets(int q4, const uint8_t *panel, int64_t b, int g, int h, int8x16_t w[2][4]) {
    if (q4) {
        const uint8_t *pg = panel + (b * 2 + g) * 128 + h * 64;
        for (int c = 0; c < 4; c++) {
            const uint8x16_t v = vld1q_u8(pg + 16 * c);
            w[0][c] = eg_neon_lo4(v);
            w[1][c] = eg_neon_hi4(v);
        }
    } else {
        const int8_t *po = (const int8_t *)panel + (b * 4 + 2 * g) * 128 + h * 64;
        for (int c = 0; c < 4; c++) {
            w[0][c] = vld1q_s8(po + 16 * c);
            w[1][c] = vld1q_s8(po + 128 + 16 * c);
        }
    }
}

/* Result tiles: c[pair][column pair] = [r0c0 r0c1 r1c0 r1c1]. Per block of 32 k: 4 octets into
 * exact int32 sums of a q (a = activation - zero point: the twin's isum - wsum), then one FMA per
 * output with the product xs[row] * ws[column], lane by lane the twin's. An odd last row is paired
 * with itself and its copy dropped. */
EG_INLINE EG_TGT_I8MM void micro_q(int mr, int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs,
                                   const uint8_t *panel, const float *ws, int64_t nb, int h, uint8x16_t z, float *y,
                                   int64_t ldy, int64_t cols) {
    enum { NP = MRM / 2 };
    const int np = (mr + 1) / 2;
    float32x4_t f[NP][4];
    const uint8_t *x[MRM];
    const float *s[MRM];
    for (int r = 0; r < MRM; r++) {
        const int rr = r < mr ? r : mr - 1; /* r past the rows: the last row again */
        x[r] = xq + rr * ldq;
        s[r] = xs + rr * ldxs;
    }
    for (int p = 0; p < NP; p++)
        for (int c = 0; c < 4; c++) f[p][c] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        int32x4_t c[NP][4];
        int8x16_t a[NP][4]; /* [pair][octet]: rows 2p, 2p+1 x 8 k */
        for (int p = 0; p < NP; p++) {
            if (p >= np) break;
            const int64_t o = b * EG_QBLOCK;
            const int64x2_t r0a = vreinterpretq_s64_s8(eg_neon_act16(x[2 * p] + o, z));
            const int64x2_t r0b = vreinterpretq_s64_s8(eg_neon_act16(x[2 * p] + o + 16, z));
            const int64x2_t r1a = vreinterpretq_s64_s8(eg_neon_act16(x[2 * p + 1] + o, z));
            const int64x2_t r1b = vreinterpretq_s64_s8(eg_neon_act16(x[2 * p + 1] + o + 16, z));
            a[p][0] = vreinterpretq_s8_s64(vzip1q_s64(r0a, r1a));
            a[p][1] = vreinterpretq_s8_s64(vzip2q_s64(r0a, r1a));
            a[p][2] = vreinterpretq_s8_s64(vzip1q_s64(r0b, r1b));
            a[p][3] = vreinterpretq_s8_s64(vzip2q_s64(r0b, r1b));
            for (int j = 0; j < 4; j++) c[p][j] = vdupq_n_s32(0);
        }
        for (int g = 0; g < 2; g++) { /* 16 k: two octets */
            int8x16_t w[2][4];
            octets(q4, panel, b, g, h, w);
            for (int e = 0; e < 2; e++)
                for (int p = 0; p < NP; p++) {
                    if (p >= np) break;
                    for (int j = 0; j < 4; j++) c[p][j] = smmla(c[p][j], a[p][2 * g + e], w[e][j]);
                }
        }
        const float64x2_t w0 = vreinterpretq_f64_f32(vld1q_f32(ws + b * EG_PANEL + h * 8));
        const float64x2_t w1 = vreinterpretq_f64_f32(vld1q_f32(ws + b * EG_PANEL + h * 8 + 4));
        float32x4_t sw[4]; /* column pair j's scales as [c0 c1 c0 c1] */
        sw[0] = vreinterpretq_f32_f64(vdupq_laneq_f64(w0, 0));
        sw[1] = vreinterpretq_f32_f64(vdupq_laneq_f64(w0, 1));
        sw[2] = vreinterpretq_f32_f64(vdupq_laneq_f64(w1, 0));
        sw[3] = vreinterpretq_f32_f64(vdupq_laneq_f64(w1, 1));
        for (int p = 0; p < NP; p++) {
            if (p >= np) break;
            const float32x4_t sx = vcombine_f32(vdup_n_f32(s[2 * p][b]), vdup_n_f32(s[2 * p + 1][b]));
            for (int j = 0; j < 4; j++) f[p][j] = vfmaq_f32(f[p][j], vcvtq_f32_s32(c[p][j]), vmulq_f32(sx, sw[j]));
        }
    }
    float32x4_t out[MRM][2]; /* back to rows: row 2p takes the low halves of its tiles, 2p+1 the high */
    for (int p = 0; p < NP; p++) {
        if (p >= np) break;
        for (int q = 0; q < 2; q++) {
            const float64x2_t t0 = vreinterpretq_f64_f32(f[p][2 * q]), t1 = vreinterpretq_f64_f32(f[p][2 * q + 1]);
            out[2 * p][q] = vreinterpretq_f32_f64(vzip1q_f64(t0, t1));
            out[2 * p + 1][q] = vreinterpretq_f32_f64(vzip2q_f64(t0, t1));
        }
    }
    eg_neon_store8(mr, MRM, out, y, ldy, cols);
}

EG_INLINE EG_TGT_I8MM void gemm_q_rows(int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                       const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const uint8x16_t z = vdupq_n_u8((uint8_t)(w->aqmax + 1));
#define MICRO(mr) micro_q(mr, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, h, z, yh + i * ldy, ldy, ch)
    EG_NEON_GEMM_Q(MRM, MICRO);
#undef MICRO
}

static EG_TGT_I8MM void gemm_q_i8mm(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                    const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    if (w->type == EG_W_Q4_0) gemm_q_rows(1, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
    else gemm_q_rows(0, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}

/* ---------------------------------------------------------------- kernel table */

/* i8mm: NEON's table with this (dispatch.c). */
void eg_kernels_i8mm_fill(eg_kernels *k) {
    k->gemm_q = gemm_q_i8mm;
    k->kgroup = 8; /* k-octets: SMMLA's 8 x 2 operand is 16 bytes in a row */
}
#endif
