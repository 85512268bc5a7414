/* kernels_neon.h - pieces shared by the ARM64 kernel files (kernels_neon.c, kernels_dotprod.c,
 * kernels_i8mm.c). Included only where EG_HAVE_ARM64 is defined. No Python here.
 *
 * The integer GEMMs on ARM multiply signed 8-bit activations by signed 8-bit weights (SMULL,
 * SDOT, SMMLA): the shared uint8 activations (a + z, z = aqmax + 1, eg_quantize_blocks_u8) are
 * turned back into a by a wrapping byte subtraction of z, exact for |a| <= 127. The block sum is
 * then sum(a q) = isum - wsum (kernels.h) exactly, so the zero-point term is never needed and
 * the result is the scalar twin's bit for bit. Each micro-kernel computes one half of a panel
 * (8 columns): the float accumulators then fit in registers beside the int32 ones.
 */
#ifndef EG_KERNELS_NEON_H
#define EG_KERNELS_NEON_H

#include <arm_neon.h>
#include <string.h>

#include "kernels.h"

/* Target attributes for the optional features: GCC spells them "+dotprod", clang "dotprod". Only
 * functions carrying them contain SDOT / SMMLA; nothing else needs more than ARMv8-A. */
#if defined(__clang__)
#define EG_TGT_DOTPROD __attribute__((target("dotprod")))
#define EG_TGT_I8MM __attribute__((target("dotprod,i8mm")))
#else
#define EG_TGT_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define EG_TGT_I8MM __attribute__((target("arch=armv8.2-a+dotprod+i8mm")))
#endif

/* 16 uint8 activations at p as int8 a = u - z. */
EG_INLINE int8x16_t eg_neon_act16(const uint8_t *p, uint8x16_t z) {
    return vreinterpretq_s8_u8(vsubq_u8(vld1q_u8(p), z));
}

/* Q4_0 nibbles (q + 8) to int8 q: the low and the high nibbles of 16 bytes. */
EG_INLINE int8x16_t eg_neon_lo4(uint8x16_t v) {
    return vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
}
EG_INLINE int8x16_t eg_neon_hi4(uint8x16_t v) {
    return vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
}

/* k-quad layout (kgroup 4): quads 2g and 2g+1 of block b for the 8 columns of half h of a
 * panel, w[quad][0] columns 0..3, w[quad][1] columns 4..7 (4 k per column each). */
EG_INLINE void eg_neon_quads(int q4, const uint8_t *panel, int64_t b, int g, int h, int8x16_t w[2][2]) {
    if (q4) { /* a 64-byte group: quad 2g in the low nibbles, 2g+1 in the high ones */
        const uint8_t *pg = panel + (b * 4 + g) * 64 + h * 32;
        const uint8x16_t v0 = vld1q_u8(pg), v1 = vld1q_u8(pg + 16);
        w[0][0] = eg_neon_lo4(v0);
        w[0][1] = eg_neon_lo4(v1);
        w[1][0] = eg_neon_hi4(v0);
        w[1][1] = eg_neon_hi4(v1);
    } else {
        const int8_t *pq = (const int8_t *)panel + (b * 8 + 2 * g) * 64 + h * 32;
        w[0][0] = vld1q_s8(pq);
        w[0][1] = vld1q_s8(pq + 16);
        w[1][0] = vld1q_s8(pq + 64);
        w[1][1] = vld1q_s8(pq + 80);
    }
}

/* Stores the first n (<= 4; more counts as 4) floats of v. Lane stores, not a copy through a
 * buffer: that would make GCC keep the callers' accumulator arrays in memory. */
EG_INLINE void eg_neon_store4(float *y, float32x4_t v, int64_t n) {
    if (n >= 4) {
        vst1q_f32(y, v);
    } else if (n >= 2) {
        vst1_f32(y, vget_low_f32(v));
        if (n == 3) vst1q_lane_f32(y + 2, v, 2);
    } else if (n == 1) {
        vst1q_lane_f32(y, v, 0);
    }
}

/* Stores rows 0..mr-1 of an 8-column half (v[r][0] columns 0..3, v[r][1] 4..7), cols of them. */
EG_INLINE void eg_neon_store8(int mr, int mrmax, float32x4_t v[][2], float *y, int64_t ldy, int64_t cols) {
    for (int r = 0; r < mrmax; r++) {
        if (r >= mr) break;
        eg_neon_store4(y + r * ldy, v[r][0], cols);
        eg_neon_store4(y + r * ldy + 4, v[r][1], cols - 4);
    }
}

/* Runs MICRO(mr) over full tiles of `full` rows, then once for the (< full, <= 5) rows left. */
#define EG_NEON_ROW_TILES(m, full, MICRO)                                                                          \
    do {                                                                                                           \
        int64_t i = 0;                                                                                             \
        for (; i + (full) <= (m); i += (full)) MICRO(full);                                                        \
        switch ((m) - i) {                                                                                         \
        case 5: if (5 < (full)) MICRO(5); break;                                                                   \
        case 4: if (4 < (full)) MICRO(4); break;                                                                   \
        case 3: if (3 < (full)) MICRO(3); break;                                                                   \
        case 2: if (2 < (full)) MICRO(2); break;                                                                   \
        case 1: MICRO(1); break;                                                                                   \
        default: break;                                                                                            \
        }                                                                                                          \
    } while (0)

/* The integer GEMM's panel loop, shared by the three ARM levels: for each panel and each half of
 * it that has columns, MICRO(mr) with i (first row), panel, ws (its scales), h, yh (output) in
 * scope. The kernel's layout decides the panel bytes (equal for quads and octets). */
#define EG_NEON_GEMM_Q(MR, MICRO)                                                                                  \
    do {                                                                                                           \
        const int64_t nb = eg_ldq(w->k) / EG_QBLOCK;                                                               \
        const int64_t pbytes = w->type == EG_W_Q4_0 ? w->k / 2 * EG_PANEL : eg_ldq(w->k) * EG_PANEL;               \
        for (int64_t p = p0; p < p1; p++) {                                                                        \
            const uint8_t *panel = (const uint8_t *)w->data + p * pbytes;                                          \
            const float *ws = w->scale + p * nb * EG_PANEL;                                                        \
            const int64_t cols = eg_panel_cols(w, p);                                                              \
            for (int h = 0; h < 2 && h * 8 < cols; h++) {                                                          \
                float *yh = y + p * EG_PANEL + h * 8;                                                              \
                const int64_t ch = cols - h * 8;                                                                   \
                EG_NEON_ROW_TILES(m, MR, MICRO);                                                                   \
                (void)ch;                                                                                          \
            }                                                                                                      \
        }                                                                                                          \
        (void)nb;                                                                                                  \
    } while (0)

#endif
