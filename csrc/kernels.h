/* kernels.h - everything a kernel file (kernels_*.c, kernels_*.h) sees: the packed weight layouts
 * (eg_matrix), the kernel table (eg_kernels), each ISA's own table or fill function, the scalar
 * twins that vector kernels hand a row's tail to, and the few helpers every kernel file shares. No
 * model structures, files or errors (internal.h, which includes this, has those), no Python.
 *
 * The kernel files share one layout: a file comment, the helpers the whole file uses, then these
 * sections in this order, each under its banner (a file has the sections of the kernels it has):
 *   float GEMM (F32, BF16)                 gemm, gemm_bf16
 *   bfloat16 x bfloat16 (vdpbf16ps, AMX)   gemm_bf16dot, to_bf16
 *   I8 / Q8_0 / Q4_0                       gemm_q, quantize (and I16's gemm_w16, quantize_w16)
 *   row operations                         axpy, scale, gelu_gate, exp_sub
 *   FMA peak                               fma_loop
 *   kernel table                           the ISA's eg_kernels, or its fill function
 * kernels_scalar.c holds the scalar twin of every kernel, in the same sections: it is the specification.
 */
#ifndef EG_KERNELS_H
#define EG_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "platform.h" /* EG_TARGET, EG_ALWAYS_INLINE: what each compiler takes */

#if defined(__x86_64__) || defined(_M_X64)
#define EG_HAVE_X86 1
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define EG_HAVE_ARM64 1
#endif

/* A helper that must be inlined into its caller (whose target attribute it then shares). */
#define EG_INLINE static EG_ALWAYS_INLINE

#define EG_PANEL 16  /* output columns per packed weight panel (GEMM micro-kernel width) */
#define EG_QBLOCK 32 /* k values per Q8_0 / Q4_0 block (ggml's QK8_0 = QK4_0) */

/* How a packed weight matrix stores its numbers (eg_weights in embgemma.h picks it). */
typedef enum { EG_W_F32 = 0, EG_W_BF16, EG_W_I8, EG_W_Q8_0, EG_W_Q4_0, EG_W_I16 } eg_wtype;

static inline int eg_wtype_is_block(eg_wtype t) { return t == EG_W_Q8_0 || t == EG_W_Q4_0; }
/* integer weights with a scale per row and block of 32, multiplied by activations quantized alike */
static inline int eg_wtype_is_int(eg_wtype t) { return t == EG_W_I8 || t == EG_W_I16 || eg_wtype_is_block(t); }

/* I16's grid, weights and activations alike: |q| <= 2047 (12 bits), so a block's 32 products sum
 * below 2^27 and int16 x int16 pair sums (vpmaddwd, vpdpwssd, SMLAL) accumulate it exactly in int32 */
#define EG_I16_QMAX 2047

/* A weight matrix W [n, k] (y = W x, PyTorch nn.Linear layout) packed into
 * panels of EG_PANEL output rows, zero-padded past n, so one load per k step
 * feeds a whole micro-kernel row:
 *   F32:  float    [n_panels, k, 16]      W[p*16 + j][kk] at (p*k + kk)*16 + j
 *   BF16: uint16   [n_panels, k2, 16, 2]  k2 = ceil(k/2), k-pairs: W[p*16 + j][2i + e] at
 *                                          ((p*k2 + i)*16 + j)*2 + e, 0 past k. A column's 32-bit
 *                                          lane holds two consecutive k: what vdpbf16ps multiplies,
 *                                          and the float kernels widen it exactly by a shift (k even)
 *                                          and a mask (k odd)
 *   I8:   int8     [n_panels, kb/4, 16, 4] kb = k rounded up to a multiple of 32:
 *                                          W[p*16 + j][4*kq + e] at ((p*kb/4 + kq)*16 + j)*4 + e,
 *                                          padded with 0; |q| <= 127 with a float32 scale per
 *                                          output row and block of 32 k: scale [n_panels, kb/32, 16]
 *   Q8_0: int8     [n_panels, k/4, 16, 4]  as I8, but ggml's scale per row and block of 32 k:
 *                                          W[r][kk] ~= scale[p][kk/32][j] * q[r][kk]
 *   I16:  int16    [n_panels, kb/2, 16, 2] kb as I8, k-pairs as BF16: W[p*16 + j][2i + e] at
 *                                          ((p*kb/2 + i)*16 + j)*2 + e, padded with 0; |q| <=
 *                                          EG_I16_QMAX with a scale per row and block as I8
 *                                          (no wsum: its activations are signed, no zero point)
 *   Q4_0: uint8    [n_panels, k/8, 64]    byte b of 8-k group g holds the I8-layout
 *                                          element b of k-quad 2g in its low nibble
 *                                          and of k-quad 2g+1 in its high nibble,
 *                                          stored as q + 8 (q in -8..7); scales as Q8_0
 * k-octets (kgroup 8, for ARM's SMMLA, which multiplies 2 x 8 by 8 x 2): I8 / Q8_0 as above with 8
 * in place of 4, int8 [n_panels, kb/8, 16, 8], so columns 2c and 2c+1 of an octet are 16 bytes in a
 * row; Q4_0 uint8 [n_panels, k/16, 128], byte b of 16-k group g holding element b of octet 2g (low
 * nibble) and of octet 2g+1 (high). The kernel table says which it reads (eg_kernels.kgroup).
 * All three also keep wsum [n_panels, kb/32, 16]: each block's sum of q times the
 * activations' zero point. The integer kernels multiply these int8 weights by uint8
 * activations quantized per block of 32 (u8 x s8: what vpmaddubsw / vpdpbusd take), 4 k
 * at a time, and fold each block's exact int32 sum into a float accumulator.
 * Q8_0 / Q4_0 need k % 32 == 0 and hold exactly what ggml's blocks hold.
 * pack.c writes these layouts (its functions are in internal.h); the kernels only read them.
 */
typedef struct {
    void *data;                /* see above                                      */
    float *scale;              /* integer types: [n_panels, kb/32, 16] per output row and block */
    int32_t *wsum;             /* [n_panels, kb/32, 16] zero point x each block's sum of q (NULL for I16) */
    int aqmax;                 /* integer types: activations are quantized to |a| <= aqmax, + aqmax + 1 */
    int kgroup;                /* integer types: k values per column run in a panel, 4 (k-quads) or 8 (k-octets) */
    int bf16dot;               /* BF16: 0: float x bf16 widened (gemm_bf16); else the activations are
                                  rounded to bfloat16 as well (gemm_bf16dot), the products summed as
                                  EG_BF16DOT_VDP (vdpbf16ps) or EG_BF16DOT_AMX (AMX tdpbf16ps) does */
    int64_t n, k;
    int64_t n_panels;          /* ceil(n / 16)                                   */
    eg_wtype type;
} eg_matrix;

/* The arithmetic of a bf16dot GEMM (eg_matrix.bf16dot, eg_kernels.bf16dot) */
enum { EG_BF16DOT_VDP = 1, EG_BF16DOT_AMX = 2 };

/* uint16 elements of one BF16 panel: k padded with zeros to whole blocks of 32 (whole k-pairs for the
 * float and vdpbf16ps kernels, whole AMX tile rows for tdpbf16ps) */
static inline int64_t eg_bf16_panel_elems(int64_t k) { return (k + 31) / 32 * 32 * EG_PANEL; }

/* Quantized activations' row stride and weights' padded k: k rounded up to whole blocks of 32 */
static inline int64_t eg_ldq(int64_t k) { return (k + EG_QBLOCK - 1) & ~(int64_t)(EG_QBLOCK - 1); }

/* The columns of panel p that w has: EG_PANEL, fewer in a matrix's last panel. A kernel writes no
 * column past them. */
static inline int64_t eg_panel_cols(const eg_matrix *w, int64_t p) {
    const int64_t cols = w->n - p * EG_PANEL;
    return cols < EG_PANEL ? cols : EG_PANEL;
}

/* Kernel table: one per ISA, chosen at load. Kernels never allocate, never
 * spawn threads and trust their (already validated) arguments. */
typedef struct {
    /* y[m, p0*16 .. p1*16) = x[m, k] . W^T for panels p0..p1 of an F32 w; columns past w->n are not written */
    void (*gemm)(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                 float *y, int64_t ldy);
    /* the same for a BF16 w: weights widened exactly to float, float accumulation */
    void (*gemm_bf16)(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                      float *y, int64_t ldy);
    /* the same for a BF16 w with bf16dot set, from xb [m, ldb]: x rounded to bfloat16 (to_bf16), padded
     * to whole k-pairs with 0. Per output one float accumulator, from 0, over the k-pairs in order, each
     * added as vdpbf16ps does: acc += a[2i+1] * w[2i+1], then acc += a[2i] * w[2i], each step a fused
     * multiply-add rounded to nearest even; subnormal inputs (bfloat16 and the accumulator) read as 0,
     * and a result whose value rounded to 24 bits (unbounded exponent) is below the normal range is
     * flushed to a zero of its sign; MXCSR plays no part (w->bf16dot == EG_BF16DOT_VDP). With
     * EG_BF16DOT_AMX (tdpbf16ps), per block of 32 k from the first: the even-k products summed in k
     * order from +0 into one float, the odd-k ones into another, each step as one vdpbf16ps step above;
     * then acc = (even + odd) + acc, each addition rounded to nearest even, a result below the normal
     * range flushed. The scalar twin of both, bit for bit: gemm_bf16dot_scalar. NULL in tables
     * without such a kernel. */
    void (*gemm_bf16dot)(const uint16_t *xb, int64_t ldb, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                         float *y, int64_t ldy);
    /* the activations of a bf16dot GEMM: eg_round_bf16_rows is the twin, bit for bit */
    void (*to_bf16)(const float *x, int64_t ldx, int64_t m, int64_t k, uint16_t *xb, int64_t ldb);
    /* the same for an I8 / Q8_0 / Q4_0 w and activations quantized per block of 32, xs [m, ldxs]:
     * y[i][j] = sum over blocks b, in order, of fmaf((float)(isum_b - w->wsum[p][b][j]), xs[i][b] * w->scale[p][b][j], acc),
     * isum_b = sum_{k in b} xq[i][k] * q[j][k] exact in int32 */
    void (*gemm_q)(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m, const eg_matrix *w,
                   int64_t p0, int64_t p1, float *y, int64_t ldy);
    /* the activations of an integer GEMM: eg_quantize_blocks_u8 is the twin, bit for bit */
    void (*quantize)(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, uint8_t *q, int64_t ldq,
                     float *scale, int64_t ldxs);
    /* the same for an I16 w and activations quantized to int16 per block of 32, xq [m, ldq] (elements):
     * y[i][j] = sum over blocks b, in order, of fmaf((float)isum_b, xs[i][b] * w->scale[p][b][j], acc),
     * isum_b = sum_{k in b} xq[i][k] * q[j][k] exact in int32. The twin: eg_gemm_w16_scalar */
    void (*gemm_w16)(const int16_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m, const eg_matrix *w,
                     int64_t p0, int64_t p1, float *y, int64_t ldy);
    /* its activations: eg_quantize_blocks_i16 is the twin, bit for bit */
    void (*quantize_w16)(const float *x, int64_t ldx, int64_t m, int64_t k, int16_t *q, int64_t ldq, float *scale,
                         int64_t ldxs);
    void (*axpy)(float a, const float *x, float *y, int64_t n); /* y += a x */
    void (*scale)(float a, float *y, int64_t n);                /* y *= a   */
    /* g[i] = gelu_tanh(g[i]) * up[i], gelu_tanh(x) = 0.5x(1 + tanh(u)) computed as x / (1 + exp(-2u)),
     * u = sqrt(2/pi) (x + 0.044715 x^3): the same function, without tanh's cancellation */
    void (*gelu_gate)(float *g, const float *up, int64_t n);
    /* s[j] = exp(s[j] - m) (exactly 0 where s[j] is -inf); returns the sum */
    float (*exp_sub)(float *s, float m, int64_t n);
    /* iters steps of 12 independent multiply-add chains on full vectors; returns
     * the floating-point operations done (for eg_fma_peak, not the engine) */
    double (*fma_loop)(int64_t iters, float *sink);
    int pairs16; /* the integer GEMM sums pairs of products in int16 (vpmaddubsw): see eg_matrix_ranges */
    int kgroup;  /* the integer GEMM reads k-quads (4; 0 means the same) or k-octets (8): eg_matrix_layout */
    int bf16dot; /* 0, or EG_BF16DOT_*: BF16 matrices go to gemm_bf16dot (the loader sets eg_matrix.bf16dot) */
    int tail_bf16; /* int8's higher-precision last layers are bfloat16 (1: this ISA's bfloat16 GEMM is its fastest
                      float one, avx512's widening and AMX tiles) or float32 (0: AVX2's widening bfloat16 runs
                      at 0.96x float32, and vdpbf16ps at ~0.65x avx512's) */
} eg_kernels;

/* ---------------------------------------------------------------- scalar twins (kernels_scalar.c) */

/* The twins that are also called by name: vector kernels hand them a row's partial last block, and
 * tests (tests/c/driver.c) run them directly. */

/* Activations for gemm_bf16dot: x [m, k] to bfloat16 [m, ldb] exactly as vcvtneps2bf16 rounds: to
 * nearest even, subnormal inputs to a zero of their sign, NaN kept quiet; elements k .. eg_ldq(k) of
 * each row are set to 0 (whole k-pairs, whole AMX tile rows; ldb >= eg_ldq(k)). The twin of the
 * table's to_bf16, bit for bit. */
void eg_round_bf16_rows(const float *x, int64_t ldx, int64_t m, int64_t k, uint16_t *xb, int64_t ldb);
/* Activations for the integer kernels (the twin of the table's quantize, bit for bit): x [m, k] per
 * block of 32 into q [m, ldq] (pad columns hold the zero point) and scale [m, ldxs]: a = round(x / s),
 * s = amax / qmax, |a| <= qmax, stored as a + qmax + 1 (u8 x s8 products; the value ranges:
 * eg_matrix_ranges in internal.h); a row block with NaN or inf gets a NaN scale (the pass then
 * reports it). */
void eg_quantize_blocks_u8(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, uint8_t *q, int64_t ldq,
                           float *scale, int64_t ldxs);
/* Activations for the I16 kernel: as eg_quantize_blocks_u8 with qmax EG_I16_QMAX, stored as the
 * signed a itself in q [m, ldq] (int16 elements; pad columns 0). The twin of quantize_w16. */
void eg_quantize_blocks_i16(const float *x, int64_t ldx, int64_t m, int64_t k, int16_t *q, int64_t ldq, float *scale,
                            int64_t ldxs);
/* The I16 GEMM's specification (the scalar table's gemm_w16; ISAs without their own take it). */
void eg_gemm_w16_scalar(const int16_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m, const eg_matrix *w,
                        int64_t p0, int64_t p1, float *y, int64_t ldy);

float eg_bf16_to_f32(uint16_t h); /* exact (util.c) */

/* ---------------------------------------------------------------- the tables */

/* An ISA's table is its own (scalar, avx2, neon) or another ISA's with its fill function applied:
 * dispatch.c's ISA table says which, and composes them. */
extern const eg_kernels eg_kernels_scalar;
#ifdef EG_HAVE_X86
extern const eg_kernels eg_kernels_avx2;
void eg_kernels_avxvnni_fill(eg_kernels *k);    /* the AVX-VNNI integer GEMM (ymm vpdpbusd)      */
void eg_kernels_avx512_fill(eg_kernels *k);     /* the zmm GEMMs and FMA loop                    */
void eg_kernels_avx512bf16_fill(eg_kernels *k); /* the vdpbf16ps GEMM and its activation rounding */
void eg_kernels_amx_fill(eg_kernels *k);        /* the AMX tile bfloat16 GEMM                    */
#endif
#ifdef EG_HAVE_ARM64
extern const eg_kernels eg_kernels_neon;
void eg_kernels_dotprod_fill(eg_kernels *k); /* the SDOT integer GEMM  */
void eg_kernels_i8mm_fill(eg_kernels *k);    /* the SMMLA integer GEMM */
#endif

#endif
