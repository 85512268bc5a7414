/* w16_probe.c - research probe (issue 21, item 2): would 16-bit integer weights on a 12-bit grid
 * (W12A12: per output row and block of 32 k, |q| <= 2047, activations the same per token and block)
 * run faster than float32 on AVX2? Simulated on the real weights it is more faithful than bfloat16
 * (benchmarks/int8_variants.py, scheme w12_b12: worst cosine 0.999999, top-10 1.000): 32 products of
 * 2047 x 2047 stay below 2^27, so vpmaddwd's pair sums accumulate exactly in int32 (no saturation, no
 * 7-bit activations as AVX2's int8 needs). This times, on one core, the engine's own AVX2 float32
 * and int8 GEMMs (the kernel table, packed by pack.c) beside a prototype W12A12 micro-kernel of the
 * shape (MR rows x 16 columns, k-pairs as the BF16 layout), checked against a plain scalar sum.
 * Not part of the engine: the engine's kernel, written after this probe, is kernels_avx2.c's gemm_w16_avx2
 * (dtype="int16"). Build and run (x86-64 with AVX2):
 *
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -fno-math-errno -Icsrc benchmarks/w16_probe.c \
 *       $(find csrc -name '*.c' ! -name module.c) -lm -o /tmp/w16_probe && /tmp/w16_probe
 *
 * (A prototype: rows come in multiples of MR and columns in whole panels, which the shapes here are;
 * its activation quantizer is plain C.)
 */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define QB 32
#ifndef MR
#define MR 6 /* rows per micro-kernel: 12 int32 accumulators + 2 weight vectors + 1 broadcast (4 measured ~10% slower) */
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* per row and block of 32: q = round(x / s), s = amax / 2047 */
static void quant12(const float *x, int64_t k, int16_t *q, float *s) {
    for (int64_t b = 0; b < k / QB; b++) {
        float amax = 0;
        for (int j = 0; j < QB; j++) amax = fmaxf(amax, fabsf(x[b * QB + j]));
        const float inv = amax > 0 ? 2047.0f / amax : 0;
        for (int j = 0; j < QB; j++) q[b * QB + j] = (int16_t)nearbyintf(x[b * QB + j] * inv);
        s[b] = amax / 2047.0f;
    }
}

/* W [n, k] -> panels int16 [np][k/2][16][2], scales [np][k/32][16] */
static void pack16(const float *w, int64_t n, int64_t k, int16_t *panel, float *scale) {
    int16_t *q = malloc(k * sizeof *q);
    float *s = malloc(k / QB * sizeof *s);
    for (int64_t r = 0; r < n; r++) {
        quant12(w + r * k, k, q, s);
        const int64_t p = r / 16, j = r % 16;
        for (int64_t kk = 0; kk < k; kk++) panel[((p * (k / 2) + kk / 2) * 16 + j) * 2 + kk % 2] = q[kk];
        for (int64_t b = 0; b < k / QB; b++) scale[(p * (k / QB) + b) * 16 + j] = s[b];
    }
    free(q);
    free(s);
}

__attribute__((target("avx2,fma"))) static void gemm16_avx2(const int16_t *xq, const float *xs, int64_t m,
                                                             int64_t k, const int16_t *panels, const float *scales,
                                                             int64_t p0, int64_t p1, float *y, int64_t ldy) {
    const int64_t nb = k / QB;
    for (int64_t p = p0; p < p1; p++) {
        const int16_t *pw = panels + p * k * 16;
        const float *ps = scales + p * nb * 16;
        for (int64_t i = 0; i < m; i += MR) {
            __m256 f[MR][2];
            for (int r = 0; r < MR; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                __m256i c[MR][2];
                for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
                for (int kp = 0; kp < QB / 2; kp++) {
                    const int16_t *w = pw + ((b * QB / 2 + kp) * 16) * 2;
                    const __m256i w0 = _mm256_loadu_si256((const __m256i *)w);
                    const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + 16));
                    for (int r = 0; r < MR; r++) {
                        int32_t pair;
                        memcpy(&pair, xq + (i + r) * k + b * QB + 2 * kp, 4);
                        const __m256i a = _mm256_set1_epi32(pair);
                        c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(a, w0));
                        c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(a, w1));
                    }
                }
                const __m256 s0 = _mm256_loadu_ps(ps + b * 16), s1 = _mm256_loadu_ps(ps + b * 16 + 8);
                for (int r = 0; r < MR; r++) {
                    const __m256 sa = _mm256_set1_ps(xs[(i + r) * nb + b]);
                    f[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[r][0]), _mm256_mul_ps(sa, s0), f[r][0]);
                    f[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[r][1]), _mm256_mul_ps(sa, s1), f[r][1]);
                }
            }
            for (int r = 0; r < MR; r++) {
                _mm256_storeu_ps(y + (i + r) * ldy + p * 16, f[r][0]);
                _mm256_storeu_ps(y + (i + r) * ldy + p * 16 + 8, f[r][1]);
            }
        }
    }
}

static double best_of(int reps, void (*fn)(void *), void *arg) {
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        const double t = now();
        fn(arg);
        const double d = now() - t;
        if (d < best) best = d;
    }
    return best;
}

typedef struct {
    int64_t m, n, k;
    float *x, *y;
    eg_matrix wf, wq;
    uint8_t *xq8;
    float *xs8;
    int16_t *xq16, *p16;
    float *xs16, *s16;
} job;

/* the engine's task shape (forward.c): blocks of MB rows x PB panels, rows outer */
#define MB 96
#define PB 4
#define TILES(call)                                                                                                  \
    for (int64_t r0 = 0; r0 < j->m; r0 += MB)                                                                        \
        for (int64_t p0 = 0; p0 < j->n / 16; p0 += PB) {                                                             \
            const int64_t rows = j->m - r0 < MB ? j->m - r0 : MB, p1 = p0 + PB < j->n / 16 ? p0 + PB : j->n / 16;   \
            call;                                                                                                     \
        }

static void run_f32(void *a) {
    job *j = a;
    TILES(eg_kernels_avx2.gemm(j->x + r0 * j->k, j->k, rows, &j->wf, p0, p1, j->y + r0 * j->n, j->n))
}
static void run_i8(void *a) {
    job *j = a;
    const int64_t nb = j->k / QB;
    eg_quantize_for(&eg_kernels_avx2, &j->wq, j->x, j->k, j->m, j->xq8, eg_ldq(j->k), j->xs8);
    TILES(eg_kernels_avx2.gemm_q(j->xq8 + r0 * eg_ldq(j->k), eg_ldq(j->k), j->xs8 + r0 * nb, nb, rows, &j->wq, p0, p1,
                                 j->y + r0 * j->n, j->n))
}
static void run_w16_gemm(void *a) {
    job *j = a;
    const int64_t nb = j->k / QB;
    TILES(gemm16_avx2(j->xq16 + r0 * j->k, j->xs16 + r0 * nb, rows, j->k, j->p16, j->s16, p0, p1, j->y + r0 * j->n,
                      j->n))
}
static void run_w16(void *a) {
    job *j = a;
    for (int64_t i = 0; i < j->m; i++) quant12(j->x + i * j->k, j->k, j->xq16 + i * j->k, j->xs16 + i * (j->k / QB));
    run_w16_gemm(a);
}

int main(void) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("needs AVX2 + FMA\n");
        return 0;
    }
    const int64_t shapes[][3] = {{192, 1152, 768}, {192, 768, 1152}, {192, 768, 768}};
    char err[256];
    srand(1);
    printf("one core, m tokens x k -> n, the engine's tasks of 96 rows x 64 columns, 60 interleaved rounds, the best of each; GFLOP/s (2 m n k / s), ratio to float32\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        job j = {.m = shapes[s][0], .n = shapes[s][1], .k = shapes[s][2]};
        const int64_t m = j.m, n = j.n, k = j.k;
        float *w = malloc(n * k * sizeof *w);
        j.x = malloc(m * k * sizeof *j.x);
        j.y = malloc(m * n * sizeof *j.y);
        float *yref = malloc(m * n * sizeof *yref);
        for (int64_t i = 0; i < n * k; i++) w[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.1f;
        for (int64_t i = 0; i < m * k; i++) j.x[i] = ((float)rand() / RAND_MAX - 0.5f) * 4.0f;
        if (eg_matrix_alloc(&j.wf, n, k, EG_W_F32, err, sizeof err) ||
            eg_matrix_alloc(&j.wq, n, k, EG_W_I8, err, sizeof err)) {
            printf("%s\n", err);
            return 1;
        }
        eg_matrix_ranges(&j.wq, eg_kernels_avx2.pairs16, 0);
        eg_matrix_layout(&j.wq, eg_kernels_avx2.kgroup);
        for (int64_t r = 0; r < n; r++) {
            eg_matrix_pack_row(&j.wf, r, w + r * k);
            eg_matrix_pack_row(&j.wq, r, w + r * k);
        }
        j.xq8 = malloc(m * eg_ldq(k));
        j.xs8 = malloc(m * (k / QB) * sizeof(float));
        j.xq16 = malloc(m * k * sizeof(int16_t));
        j.xs16 = malloc(m * (k / QB) * sizeof(float));
        j.p16 = malloc(n * k * sizeof(int16_t));
        j.s16 = malloc(n * (k / QB) * sizeof(float));
        pack16(w, n, k, j.p16, j.s16);

        /* exactness: the prototype against a scalar sum of the same quantized numbers */
        run_w16(&j);
        double maxrel = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t r = 0; r < n; r++) {
                double acc = 0;
                int16_t *qw = malloc(k * sizeof *qw);
                float *sw = malloc(k / QB * sizeof *sw);
                quant12(w + r * k, k, qw, sw);
                for (int64_t b = 0; b < k / QB; b++) {
                    int64_t isum = 0;
                    for (int t = 0; t < QB; t++) isum += (int64_t)j.xq16[i * k + b * QB + t] * qw[b * QB + t];
                    acc += (double)isum * j.xs16[i * (k / QB) + b] * sw[b];
                }
                free(qw);
                free(sw);
                yref[i * n + r] = (float)acc;
                const double d = fabs(acc - j.y[i * n + r]) / (fabs(acc) + 1e-3);
                if (d > maxrel) maxrel = d;
                if (i > 8) break; /* a few rows are enough */
            }
        const double flop = 2.0 * m * n * k;
        /* interleaved rounds, the best of each: a shared machine's slow spells hit all four alike */
        double tf = 1e9, ti = 1e9, tw = 1e9, tg = 1e9;
        for (int round = 0; round < 60; round++) {
            tf = fmin(tf, best_of(1, run_f32, &j));
            ti = fmin(ti, best_of(1, run_i8, &j));
            tw = fmin(tw, best_of(1, run_w16, &j));
            tg = fmin(tg, best_of(1, run_w16_gemm, &j));
        }
        printf("m %lld n %lld k %lld: float32 %.1f | int8 (7-bit act.) %.1f = %.2fx | W12A12 %.1f = %.2fx "
               "(GEMM alone %.2fx) | W12A12 vs scalar sum: max rel. diff %.1e\n",
               (long long)m, (long long)n, (long long)k, flop / tf * 1e-9, flop / ti * 1e-9, tf / ti,
               flop / tw * 1e-9, tf / tw, tf / tg, maxrel);
        eg_matrix_free(&j.wf);
        eg_matrix_free(&j.wq);
        free(w);
        free(j.x);
        free(j.y);
        free(yref);
        free(j.xq8);
        free(j.xs8);
        free(j.xq16);
        free(j.xs16);
        free(j.p16);
        free(j.s16);
    }
    return 0;
}
