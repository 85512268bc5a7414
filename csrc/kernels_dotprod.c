/* kernels_dotprod.c - ARM64 with FEAT_DotProd (Cortex-A55/A76 and later, Neoverse N1/V1/N2,
 * Apple M1 and later): the integer GEMMs on SDOT by element. One SDOT adds, to each of 4 int32
 * lanes, the 4 products of a column's k-quad (the panel's layout as it is) with the same 4
 * activation bytes, picked as one 32-bit lane of a 16-byte activation register. dispatch.c takes
 * every other kernel from the NEON table. The twin is gemm_q_scalar, bit for bit. Compiled with
 * target attributes: nothing here runs unless dispatch.c has seen the feature.
 * No allocation, no threads, no Python.
 */
#include "kernels.h"

#ifdef EG_HAVE_ARM64
#include "kernels_neon.h"

/* ---------------------------------------------------------------- I8 / Q8_0 / Q4_0 */

#define MRD 4 /* rows per micro-kernel: 8 int32 + 8 float accumulators, 4 activation + 4 weight vectors */

/* c (4 columns) += the 4-byte dot products of w's columns with lane `lane` of a. Written as asm:
 * older clang (Apple clang 14) has no SDOT intrinsic outside -march flags. */
#define SDOT_LANE(c, w, a, lane) __asm__("sdot %0.4s, %1.16b, %2.4b[" #lane "]" : "+w"(c) : "w"(w), "w"(a))
/* a: int8x8_t, lanes 0 and 1 (its 64 bits are the register's low half) */

/* Per block of 32 k: 8 quads into exact int32 sums of a q (a = activation - zero point: the
 * twin's isum - wsum), then one FMA per row and column folds the block in with both scales. */
EG_INLINE EG_TGT_DOTPROD void micro_q(int mr, int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs,
                                      const uint8_t *panel, const float *ws, int64_t nb, int h, uint8x16_t z, float *y,
                                      int64_t ldy, int64_t cols) {
    float32x4_t f[MRD][2];
    for (int r = 0; r < MRD; r++) f[r][0] = f[r][1] = vdupq_n_f32(0.0f);
    const uint8_t *x[MRD];
    for (int r = 0; r < MRD; r++) x[r] = xq + (r < mr ? r : 0) * ldq;
    for (int64_t b = 0; b < nb; b++) {
        int32x4_t c[MRD][2];
        for (int r = 0; r < MRD; r++) c[r][0] = c[r][1] = vdupq_n_s32(0);
        for (int g = 0; g < EG_QBLOCK / 8; g++) { /* 8 k: quads 2g, 2g+1; 8 activation bytes per row */
            int8x16_t wq[2][2];
            int8x8_t a[MRD];
            eg_neon_quads(q4, panel, b, g, h, wq);
            for (int r = 0; r < MRD; r++) {
                if (r >= mr) break;
                a[r] = vreinterpret_s8_u8(vsub_u8(vld1_u8(x[r] + b * EG_QBLOCK + g * 8), vget_low_u8(z)));
                SDOT_LANE(c[r][0], wq[0][0], a[r], 0);
                SDOT_LANE(c[r][1], wq[0][1], a[r], 0);
                SDOT_LANE(c[r][0], wq[1][0], a[r], 1);
                SDOT_LANE(c[r][1], wq[1][1], a[r], 1);
            }
        }
        const float32x4_t w0 = vld1q_f32(ws + b * EG_PANEL + h * 8), w1 = vld1q_f32(ws + b * EG_PANEL + h * 8 + 4);
        for (int r = 0; r < MRD; r++) {
            if (r >= mr) break;
            const float32x4_t sa = vdupq_n_f32(xs[r * ldxs + b]);
            f[r][0] = vfmaq_f32(f[r][0], vcvtq_f32_s32(c[r][0]), vmulq_f32(sa, w0));
            f[r][1] = vfmaq_f32(f[r][1], vcvtq_f32_s32(c[r][1]), vmulq_f32(sa, w1));
        }
    }
    eg_neon_store8(mr, MRD, f, y, ldy, cols);
}

EG_INLINE EG_TGT_DOTPROD void gemm_q_rows(int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs,
                                          int64_t m, const eg_matrix *w, int64_t p0, int64_t p1, float *y,
                                          int64_t ldy) {
    const uint8x16_t z = vdupq_n_u8((uint8_t)(w->aqmax + 1));
#define MICRO(mr) micro_q(mr, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, nb, h, z, yh + i * ldy, ldy, ch)
    EG_NEON_GEMM_Q(MRD, MICRO);
#undef MICRO
}

static EG_TGT_DOTPROD void gemm_q_dotprod(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                          const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    if (w->type == EG_W_Q4_0) gemm_q_rows(1, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
    else gemm_q_rows(0, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}

/* ---------------------------------------------------------------- kernel table */

/* dotprod: NEON's table with this (dispatch.c). */
void eg_kernels_dotprod_fill(eg_kernels *k) {
    k->gemm_q = gemm_q_dotprod;
    k->kgroup = 4; /* k-quads, as packed for every other ISA */
}
#endif
