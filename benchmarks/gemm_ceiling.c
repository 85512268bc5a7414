/* gemm_ceiling.c - research probe (issue 21, item 2): how much faster than float32 can the integer
 * GEMMs be on an AVX2 core, and how close do the engine's kernels come?
 *
 * 1. Instruction ceilings: 12 independent accumulator chains of each kernel's inner step, in a loop
 *    with no memory traffic. Ratios of multiply-adds per second, so the clock cancels:
 *      float32  vfmadd231ps                          8 multiply-adds
 *      int16    vpmaddwd + vpaddd                    16 (dtype="int16": k-pairs into int32 lanes)
 *      int8     vpmaddubsw + vpmaddwd + vpaddd       32 (dtype="int8" without VNNI: u8 x s8 quads)
 *    The adds share the vector pipes with the multiplies, so two-instruction steps do not run at
 *    the multiply's own rate.
 * 2. The engine's AVX2 kernels from its kernel table (packed by pack.c, as forward.c calls them: tasks
 *    of 96 rows x 4 panels) on one core: float32 (gemm), int8 (quantize + gemm_q), int16 (quantize +
 *    gemm_w16), GFLOP/s (2 m n k / s) and ratio to float32, interleaved rounds, the best of each.
 *
 * Build it as setup.py builds the engine (-O3: at -O2 GCC keeps the float kernel's accumulator array
 * in memory and float32 runs ~3x slower, which once made every integer ratio here look 1.5x too good):
 *
 *   gcc -std=c11 -O3 -D_GNU_SOURCE -fno-math-errno -Icsrc benchmarks/gemm_ceiling.c \
 *       $(find csrc -name '*.c' ! -name module.c) -lm -o /tmp/gemm_ceiling && /tmp/gemm_ceiling
 */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- 1. instruction ceilings */

#define ITERS 50000000L
/* seconds for ITERS iterations of `body` (12 chains on ymm2-ymm13; ymm0/ymm1 inputs, ymm14/15 temporaries) */
#define LOOP(body)                                                                                                   \
    ({                                                                                                               \
        const double t0 = now();                                                                                     \
        __asm__ volatile("vpxor %%xmm0, %%xmm0, %%xmm0\n\tvpxor %%xmm1, %%xmm1, %%xmm1\n\t"                          \
                         "vpxor %%xmm15, %%xmm15, %%xmm15\n\tmov %0, %%rcx\n1:\n" body "\tsub $1, %%rcx\n\tjnz 1b"   \
                         :                                                                                           \
                         : "r"(ITERS)                                                                                \
                         : "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",     \
                           "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");                                    \
        now() - t0;                                                                                                  \
    })
#define CHAINS(step) ".irp r,2,3,4,5,6,7,8,9,10,11,12,13\n" step ".endr\n"

__attribute__((target("avx2,fma"))) static void ceilings(void) {
    double f = 1e9, w = 1e9, b = 1e9;
    for (int round = 0; round < 5; round++) { /* interleaved, the best of each */
        f = fmin(f, LOOP(CHAINS("\tvfmadd231ps %%ymm0, %%ymm1, %%ymm\\r\n")));
        w = fmin(w, LOOP(CHAINS("\tvpmaddwd %%ymm0, %%ymm1, %%ymm14\n\tvpaddd %%ymm14, %%ymm\\r, %%ymm\\r\n")));
        b = fmin(b, LOOP(CHAINS("\tvpmaddubsw %%ymm0, %%ymm1, %%ymm14\n\tvpmaddwd %%ymm15, %%ymm14, %%ymm14\n"
                                "\tvpaddd %%ymm14, %%ymm\\r, %%ymm\\r\n")));
    }
    printf("instruction ceilings, multiply-adds per second as a multiple of float32 FMA's: "
           "int16 (vpmaddwd + vpaddd) %.2fx, int8 (vpmaddubsw + vpmaddwd + vpaddd) %.2fx\n",
           16.0 / w / (8.0 / f), 32.0 / b / (8.0 / f));
}

/* ---------------------------------------------------------------- 2. the engine's kernels */

typedef struct {
    int64_t m, n, k;
    const float *x;
    float *y;
    eg_matrix wf, w8, w16;
    uint8_t *xq8, *xq16;
    float *xs8, *xs16;
} job;

/* forward.c's task shape: blocks of MB rows x PB panels */
#define MB 96
#define PB 4
#define TILES(call)                                                                                                  \
    for (int64_t r0 = 0; r0 < j->m; r0 += MB)                                                                        \
        for (int64_t p0 = 0; p0 < j->wf.n_panels; p0 += PB) {                                                        \
            const int64_t rows = j->m - r0 < MB ? j->m - r0 : MB;                                                    \
            const int64_t p1 = p0 + PB < j->wf.n_panels ? p0 + PB : j->wf.n_panels;                                  \
            call;                                                                                                     \
        }

static const eg_kernels *K = &eg_kernels_avx2;

static void run_f32(job *j) { TILES(K->gemm(j->x + r0 * j->k, j->k, rows, &j->wf, p0, p1, j->y + r0 * j->n, j->n)) }
static void quant8(job *j) { eg_quantize_for(K, &j->w8, j->x, j->k, j->m, j->xq8, eg_xq_stride(&j->w8), j->xs8); }
static void gemm8(job *j) {
    const int64_t ldq = eg_xq_stride(&j->w8), nb = eg_ldq(j->k) / EG_QBLOCK;
    TILES(K->gemm_q(j->xq8 + r0 * ldq, ldq, j->xs8 + r0 * nb, nb, rows, &j->w8, p0, p1, j->y + r0 * j->n, j->n))
}
static void quant16(job *j) { eg_quantize_for(K, &j->w16, j->x, j->k, j->m, j->xq16, eg_xq_stride(&j->w16), j->xs16); }
static void gemm16(job *j) {
    const int64_t ldq = eg_xq_stride(&j->w16) / 2, nb = eg_ldq(j->k) / EG_QBLOCK;
    TILES(K->gemm_w16((const int16_t *)j->xq16 + r0 * ldq, ldq, j->xs16 + r0 * nb, nb, rows, &j->w16, p0, p1,
                      j->y + r0 * j->n, j->n))
}
static void run_i8(job *j) { quant8(j); gemm8(j); }
static void run_i16(job *j) { quant16(j); gemm16(j); }

static double timed(void (*fn)(job *), job *j) {
    const double t = now();
    fn(j);
    return now() - t;
}

static int pack(eg_matrix *w, int64_t n, int64_t k, eg_wtype type, const float *src) {
    char err[256];
    if (eg_matrix_alloc(w, n, k, type, err, sizeof err)) {
        printf("%s\n", err);
        return 1;
    }
    if (type != EG_W_F32) {
        eg_matrix_ranges(w, K->pairs16, 0);
        eg_matrix_layout(w, K->kgroup);
    }
    for (int64_t r = 0; r < n; r++) eg_matrix_pack_row(w, r, src + r * k);
    return 0;
}

int main(void) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("needs AVX2 + FMA\n");
        return 0;
    }
    ceilings();
    const int64_t shapes[][3] = {{192, 1152, 768}, {192, 768, 1152}, {192, 768, 768}};
    srand(1);
    printf("the engine's avx2 kernels, one core, m tokens x k -> n in forward.c's tasks, 60 interleaved rounds, the "
           "best of each; GFLOP/s and ratio to float32\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        job j = {.m = shapes[s][0], .n = shapes[s][1], .k = shapes[s][2]};
        const int64_t m = j.m, n = j.n, k = j.k;
        float *w = malloc(n * k * sizeof *w), *x = malloc(m * k * sizeof *x), *ref = malloc(m * n * sizeof *ref);
        j.y = malloc(m * n * sizeof *j.y);
        j.x = x;
        for (int64_t i = 0; i < n * k; i++) w[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.1f;
        for (int64_t i = 0; i < m * k; i++) x[i] = ((float)rand() / RAND_MAX - 0.5f) * 4.0f;
        if (pack(&j.wf, n, k, EG_W_F32, w) || pack(&j.w8, n, k, EG_W_I8, w) || pack(&j.w16, n, k, EG_W_I16, w))
            return 1;
        j.xq8 = malloc(m * eg_xq_stride(&j.w8));
        j.xq16 = malloc(m * eg_xq_stride(&j.w16));
        j.xs8 = malloc(m * (eg_ldq(k) / EG_QBLOCK) * sizeof(float));
        j.xs16 = malloc(m * (eg_ldq(k) / EG_QBLOCK) * sizeof(float));

        /* sanity: each integer result against float32's (int16's quantization error is ~1e-4 of a row's scale) */
        run_f32(&j);
        memcpy(ref, j.y, m * n * sizeof *ref);
        double err8 = 0, err16 = 0, mag = 0;
        run_i8(&j);
        for (int64_t i = 0; i < m * n; i++) err8 = fmax(err8, fabs(j.y[i] - ref[i])), mag = fmax(mag, fabs(ref[i]));
        run_i16(&j);
        for (int64_t i = 0; i < m * n; i++) err16 = fmax(err16, fabs(j.y[i] - ref[i]));

        const double flop = 2.0 * m * n * k;
        double tf = 1e9, t8 = 1e9, t16 = 1e9, g8 = 1e9, g16 = 1e9;
        for (int round = 0; round < 60; round++) {
            tf = fmin(tf, timed(run_f32, &j));
            t8 = fmin(t8, timed(run_i8, &j));
            g8 = fmin(g8, timed(gemm8, &j));
            t16 = fmin(t16, timed(run_i16, &j));
            g16 = fmin(g16, timed(gemm16, &j));
        }
        printf("m %lld k %lld n %lld: float32 %.1f | int8 %.1f = %.2fx (GEMM alone %.2fx) | int16 %.1f = %.2fx "
               "(GEMM alone %.2fx) | max |diff| to float32 / max |y|: int8 %.1e, int16 %.1e\n",
               (long long)m, (long long)k, (long long)n, flop / tf * 1e-9, flop / t8 * 1e-9, tf / t8, tf / g8,
               flop / t16 * 1e-9, tf / t16, tf / g16, err8 / mag, err16 / mag);
        eg_matrix_free(&j.wf);
        eg_matrix_free(&j.w8);
        eg_matrix_free(&j.w16);
        free(w), free(x), free(ref), free(j.y), free(j.xq8), free(j.xq16), free(j.xs8), free(j.xs16);
    }
    return 0;
}
