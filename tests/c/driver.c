/* driver.c - the C core's tests without Python, for machines (or emulators) with no Python for
 * their architecture: built natively and, for ARM64, cross-compiled and run under qemu-aarch64 by
 * tests/c/run.sh.
 *
 *   1. dispatch: the ISAs this CPU supports (--expect-supported "scalar neon ..." makes the set
 *      exact), unsupported ones refused, every supported one passing its load-time self-check;
 *   2. every kernel of each ISA under test against its scalar twin at awkward sizes, strided and
 *      unaligned: integer GEMMs and the activation quantizer bit for bit (also across panel
 *      layouts), float GEMMs within the float32 bound of a dot product (and against float64),
 *      integer GEMMs within their quantization bound of the float64 product, the row operations
 *      against their twins and float64;
 *   3. the golden model (tests/data/golden_model) in float32 against the embeddings
 *      sentence-transformers computed for it (golden_expected.npz, token ids from
 *      golden_tokens.json), in bfloat16 and int8 against the scalar kernels; results the same for
 *      1 and 3 threads and for any batching; ISAs whose float kernels are the same functions (the
 *      ARM levels) give bit-identical embeddings in every mode.
 *
 * The ISA under test: EMBGEMMA_ISA if set (as the engine reads it), else every supported one.
 * usage: driver [--data DIR] [--expect-supported "LIST"] [--dispatch-only]; exit 0 when every check
 *        passes (--dispatch-only: only step 1). driver --list: the supported ISAs, one a line.
 * Timings mean nothing under emulation and none are printed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static long n_checks, n_failed;

#define CHECK(cond, ...)                                                                                           \
    do {                                                                                                           \
        n_checks++;                                                                                                \
        if (!(cond)) {                                                                                             \
            if (++n_failed <= 40) {                                                                                \
                fprintf(stderr, "FAIL (%s:%d): ", __FILE__, __LINE__);                                             \
                fprintf(stderr, __VA_ARGS__);                                                                      \
                fputc('\n', stderr);                                                                               \
            }                                                                                                      \
        }                                                                                                          \
    } while (0)

static void die(const char *what, const char *why) {
    fprintf(stderr, "driver: %s: %s\n", what, why);
    exit(2);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("malloc", "out of memory");
    return p;
}

/* ---------------------------------------------------------------- random numbers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* [0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float nrand(void) { /* standard normal (Box-Muller) */
    const double u = urand() + 1e-300, v = urand();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static const float EPS = 1.1920929e-7f;

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ---------------------------------------------------------------- GEMMs */

static const char *const wnames[] = {"float32", "bfloat16", "int8", "Q8_0", "Q4_0", "int16"}; /* by eg_wtype */

/* Packs w [n, k] as type t the way the loader does for kernels kt, with panel layout kgroup. */
static void pack(eg_matrix *mat, const eg_kernels *kt, int kgroup, eg_wtype t, const float *w, int64_t n, int64_t k) {
    char err[256];
    if (eg_matrix_alloc(mat, n, k, t, err, sizeof err) != EG_OK) die("eg_matrix_alloc", err);
    eg_matrix_ranges(mat, kt->pairs16, kt->bf16dot);
    eg_matrix_layout(mat, kgroup);
    for (int64_t r = 0; r < n; r++) eg_matrix_pack_row(mat, r, w + r * k);
}

/* y (stride ldy) = x . mat^T with kernels kt; the panels in two ranges (split != 0), as the
 * threaded driver cuts them. xq / xs: the activations kt quantized (integer types) or rounded to
 * bfloat16 (a bf16dot BF16: 2 bytes per input). */
static void run_gemm(const eg_kernels *kt, const eg_matrix *mat, const float *x, int64_t ldx, int64_t m, uint8_t *xq,
                     float *xs, float *y, int64_t ldy, int split) {
    const int64_t ldq = eg_xq_stride(mat) ? eg_xq_stride(mat) : eg_ldq(mat->k);
    int64_t ldxs = eg_quantize_for(kt, mat, x, ldx, m, xq, ldq, xs);
    if (!ldxs) ldxs = 1;
    const int64_t cut = split ? mat->n_panels / 2 : 0;
    if (cut) eg_gemm_panels(kt, x, ldx, xq, ldq, xs, ldxs, m, mat, 0, cut, y, ldy);
    eg_gemm_panels(kt, x, ldx, xq, ldq, xs, ldxs, m, mat, cut, mat->n_panels, y, ldy);
}

/* The weight the packed matrix holds for W[r][kk], as a float (exact for F32 / BF16; q * scale
 * for the integer types). */
static double packed_weight(const eg_matrix *mat, const float *w, int64_t r, int64_t kk) {
    if (mat->type == EG_W_F32) return w[r * mat->k + kk];
    return eg_bf16_to_f32(eg_f32_to_bf16(w[r * mat->k + kk]));
}

static void gemm_case(const char *isa, const eg_kernels *kt, eg_wtype t, int64_t m, int64_t n, int64_t k) {
    const eg_kernels *ref = &eg_kernels_scalar;
    const int64_t ldx = k + 3, ldy = n + 5, ldq = eg_ldq(k), nb = ldq / EG_QBLOCK;
    float *xbuf = xmalloc(sizeof(float) * (size_t)(m * ldx + 2)), *x = xbuf + 1; /* unaligned rows */
    float *w = xmalloc(sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < m * ldx + 1; i++) x[i] = nrand();
    if (m > 0) x[0] = 40.0f;                               /* an outlier channel: it costs only its block */
    if (m > 3) x[3 * ldx + (k > 7 ? 7 : k - 1)] = -50.0f; /* a negative one */
    for (int64_t i = 0; i < n * k; i++) w[i] = 0.1f * nrand();
    if (n > 2)
        for (int64_t kk = 0; kk < k; kk++) w[2 * k + kk] = 0.0f; /* an all-zero row: scale 0 */

    eg_matrix mat, quads;
    pack(&mat, kt, kt->kgroup, t, w, n, k);
    pack(&quads, kt, 4, t, w, n, k); /* the same numbers in k-quads: the twin must not care */
    float *y = xmalloc(sizeof(float) * (size_t)(m * ldy + 1)), *yr = xmalloc(sizeof(float) * (size_t)(m * ldy + 1));
    float *yq = xmalloc(sizeof(float) * (size_t)(m * ldy + 1));
    for (int64_t i = 0; i < m * ldy + 1; i++) y[i] = yr[i] = yq[i] = NAN;
    uint8_t *xq = xmalloc((size_t)(m * ldq * 2)), *xqr = xmalloc((size_t)(m * ldq * 2)); /* bf16dot: 2 bytes */
    float *xs = xmalloc(sizeof(float) * (size_t)(m * nb)), *xsr = xmalloc(sizeof(float) * (size_t)(m * nb));
    run_gemm(kt, &mat, x, ldx, m, xq, xs, y + 2, ldy, 1);
    run_gemm(ref, &mat, x, ldx, m, xqr, xsr, yr + 2, ldy, 0);
    run_gemm(ref, &quads, x, ldx, m, xqr, xsr, yq + 2, ldy, 0);
    const int is_int = eg_wtype_is_int(t), bf16dot = mat.bf16dot; /* bf16dot: twin bit for bit, x rounded */
    if (is_int) {
        CHECK(memcmp(xq, xqr, (size_t)(m * eg_xq_stride(&mat))) == 0, "%s quantize: activation bytes differ from the twin's",
              isa);
        CHECK(memcmp(xs, xsr, sizeof(float) * (size_t)(m * nb)) == 0, "%s quantize: scales differ from the twin's", isa);
    }
    long bad = 0;
    for (int64_t i = 0; i < m && bad < 3; i++) {
        for (int64_t j = -2; j < n + 3; j++) { /* two columns either side must stay untouched */
            const float got = y[2 + i * ldy + j], tw = yr[2 + i * ldy + j];
            if (j < 0 || j >= n) {
                if (!isnan(got)) {
                    bad++;
                    CHECK(0, "%s %s m=%lld n=%lld k=%lld: wrote column %lld outside the result", isa, wnames[t],
                          (long long)m, (long long)n, (long long)k, (long long)j);
                }
                continue;
            }
            CHECK(same_bits(tw, yq[2 + i * ldy + j]), "%s: scalar twin differs between panel layouts at [%lld][%lld]",
                  wnames[t], (long long)i, (long long)j);
            double exact = 0.0, mag = 0.0, qbound = 0.0;
            for (int64_t kk = 0; kk < k; kk++) {
                const double xv = x[i * ldx + kk], wv = w[j * k + kk];
                if (!is_int) {
                    const double pw = packed_weight(&mat, w, j, kk);
                    exact += xv * pw;
                    mag += fabs(xv * pw);
                } else {
                    exact += xv * wv;
                    mag += fabs(xv * wv);
                    /* |error| <= |x| dw + dx |w| + dx dw, dx <= half an activation step, dw <= half a
                     * weight step (Q4_0: a whole one, its clamp at +7) */
                    const int64_t b = kk / EG_QBLOCK;
                    const double dx = 0.5 * xsr[i * nb + b] * (1.0 + 1e-6);
                    const double d = mat.scale[((j / EG_PANEL) * nb + b) * EG_PANEL + j % EG_PANEL];
                    const double dw = (t == EG_W_Q4_0 ? 1.0 : 0.5) * fabs(d) * (1.0 + 1e-6) +
                                      (t == EG_W_Q8_0 || t == EG_W_Q4_0 ? fabs(wv) * 1e-3 : 0.0); /* f16 scale */
                    qbound += fabs(xv) * dw + dx * fabs(wv) + dx * dw;
                }
            }
            /* bf16dot also rounds each activation to bfloat16: a relative 2^-8 more per product */
            const double fbound = (double)(k + 2) * EPS * mag + (bf16dot ? 0x1p-8 * mag : 0.0) + 1e-30;
            int ok;
            if (bf16dot) {
                ok = same_bits(got, tw) && fabs((double)got - exact) <= fbound;
                CHECK(ok, "%s bf16dot m=%lld n=%lld k=%lld: y[%lld][%lld] = %.9g, twin %.9g (bit for bit), float64 %.9g",
                      isa, (long long)m, (long long)n, (long long)k, (long long)i, (long long)j, (double)got,
                      (double)tw, exact);
            } else if (is_int) {
                ok = same_bits(got, tw) && isfinite(got);
                CHECK(ok, "%s %s m=%lld n=%lld k=%lld: y[%lld][%lld] = %.9g, scalar twin %.9g (must be bit for bit)",
                      isa, wnames[t], (long long)m, (long long)n, (long long)k, (long long)i, (long long)j,
                      (double)got, (double)tw);
                const int near = fabs((double)got - exact) <= qbound + 1e-4 * mag + 1e-30;
                CHECK(near, "%s %s: y[%lld][%lld] = %.9g is %.3g from the float64 product %.9g (bound %.3g)", isa,
                      wnames[t], (long long)i, (long long)j, (double)got, fabs((double)got - exact), exact, qbound);
                ok = ok && near;
            } else {
                ok = fabs((double)got - tw) <= 2 * fbound && fabs((double)got - exact) <= fbound &&
                     fabs((double)tw - exact) <= fbound;
                CHECK(ok, "%s %s m=%lld n=%lld k=%lld: y[%lld][%lld] = %.9g, twin %.9g, float64 %.9g (bound %.3g)",
                      isa, wnames[t], (long long)m, (long long)n, (long long)k, (long long)i, (long long)j,
                      (double)got, (double)tw, exact, fbound);
            }
            if (!ok) bad++;
        }
    }
    eg_matrix_free(&mat);
    eg_matrix_free(&quads);
    free(xbuf), free(w), free(y), free(yr), free(yq), free(xq), free(xqr), free(xs), free(xsr);
}

/* The largest sums the integer kernels can meet: every activation at +-aqmax against weights at
 * the ends of their ranges (Q8_0 blocks from a file may hold -128), one sign throughout. */
static void gemm_extremes(const char *isa, const eg_kernels *kt) {
    const int64_t m = 5, n = 19, k = 4992;
    float *x = xmalloc(sizeof(float) * (size_t)(m * k)), *y = xmalloc(sizeof(float) * (size_t)(m * n));
    float *yr = xmalloc(sizeof(float) * (size_t)(m * n));
    int8_t *q = xmalloc((size_t)k);
    float *d = xmalloc(sizeof(float) * (size_t)(k / EG_QBLOCK));
    const int64_t ldq = eg_ldq(k), nb = ldq / EG_QBLOCK;
    uint8_t *xq = xmalloc((size_t)(m * ldq));
    float *xs = xmalloc(sizeof(float) * (size_t)(m * nb));
    char err[256];
    for (int ti = 0; ti < 2; ti++) {
        const eg_wtype t = ti ? EG_W_Q4_0 : EG_W_Q8_0;
        for (int sign = -1; sign <= 1; sign += 2) {
            for (int64_t i = 0; i < m * k; i++) x[i] = (float)sign;
            eg_matrix mat;
            if (eg_matrix_alloc(&mat, n, k, t, err, sizeof err) != EG_OK) die("eg_matrix_alloc", err);
            eg_matrix_ranges(&mat, kt->pairs16, kt->bf16dot);
            eg_matrix_layout(&mat, kt->kgroup);
            for (int64_t r = 0; r < n; r++) {
                for (int64_t kk = 0; kk < k; kk++) q[kk] = (int8_t)(t == EG_W_Q8_0 ? (r % 2 ? -128 : 127) : (r % 2 ? -8 : 7));
                for (int64_t b = 0; b < k / EG_QBLOCK; b++) d[b] = 1.0f / 1024;
                eg_matrix_pack_row_q(&mat, r, q, d);
            }
            run_gemm(kt, &mat, x, k, m, xq, xs, y, n, 1);
            run_gemm(&eg_kernels_scalar, &mat, x, k, m, xq, xs, yr, n, 0);
            for (int64_t i = 0; i < m * n; i++) {
                const int64_t r = i % n;
                const double wq = t == EG_W_Q8_0 ? (r % 2 ? -128 : 127) : (r % 2 ? -8 : 7);
                const double want = sign * wq * k / 1024.0;
                CHECK(same_bits(y[i], yr[i]) && fabs(y[i] - want) <= 1e-5 * fabs(want),
                      "%s %s extremes (sign %d): y[%lld] = %.9g, twin %.9g, want %.9g", isa, wnames[t], sign,
                      (long long)i, (double)y[i], (double)yr[i], want);
            }
            eg_matrix_free(&mat);
        }
    }
    free(x), free(y), free(yr), free(q), free(d), free(xq), free(xs);
}

static void test_gemms(const char *isa, const eg_kernels *kt) {
    static const int64_t ms[] = {0, 1, 2, 3, 4, 5, 6, 7, 9, 12, 13};
    static const int64_t nk[][2] = {{1, 1}, {7, 3}, {15, 7}, {16, 16}, {17, 33}, {9, 40}, {33, 64}, {40, 100}, {48, 257}};
    static const int64_t nkq[][2] = {{1, 32}, {8, 32}, {15, 64}, {17, 96}, {33, 160}, {40, 256}};
    const long before = n_failed;
    for (int t = 0; t <= EG_W_I16; t++) {
        const int block = eg_wtype_is_block((eg_wtype)t);
        const int nsz = block ? (int)(sizeof nkq / sizeof nkq[0]) : (int)(sizeof nk / sizeof nk[0]);
        for (int s = 0; s < nsz; s++)
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
                gemm_case(isa, kt, (eg_wtype)t, ms[mi], block ? nkq[s][0] : nk[s][0], block ? nkq[s][1] : nk[s][1]);
    }
    gemm_case(isa, kt, EG_W_F32, 31, 70, 300); /* a few full tiles of every size */
    gemm_case(isa, kt, EG_W_I8, 29, 45, 771);
    gemm_case(isa, kt, EG_W_Q4_0, 23, 37, 384);
    gemm_case(isa, kt, EG_W_I16, 29, 45, 771);
    gemm_extremes(isa, kt);
    printf("  %-8s GEMMs (float32, bfloat16, int8, Q8_0, Q4_0, int16) against the scalar twin: %s\n", isa,
           n_failed == before ? "ok" : "FAILED");
}

/* ---------------------------------------------------------------- activation quantizer */

static void test_quantize(const char *isa, const eg_kernels *kt) {
    static const int64_t ks[] = {1, 5, 31, 32, 33, 64, 96, 100, 257};
    const long before = n_failed;
    for (int qi = 0; qi < 2; qi++) {
        const int qmax = qi ? 127 : 63;
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            const int64_t k = ks[ki], m = 7, ldx = k + 1, ldq = eg_ldq(k) + 3, ldxs = eg_ldq(k) / EG_QBLOCK + 1;
            float *x = xmalloc(sizeof(float) * (size_t)(m * ldx));
            for (int64_t i = 0; i < m * ldx; i++) x[i] = nrand() * 3.0f;
            for (int64_t kk = 0; kk < k; kk++) {
                x[1 * ldx + kk] = 0.0f;                                      /* all zero: scale 0 */
                x[4 * ldx + kk] = (float)((kk % (2 * qmax)) - qmax) + 0.5f;  /* ties: x / step = n + 0.5 */
                x[5 * ldx + kk] = kk % 3 ? -1e-30f : 3e-39f;                 /* tiny and subnormal */
                x[6 * ldx + kk] = kk % 5 ? 0.0f : -3e-39f; /* qmax / amax overflows: 0 x inf must not occur */
            }
            x[4 * ldx] = (float)qmax; /* amax = qmax: a step of exactly 1 */
            x[2 * ldx + (k > 40 ? 40 : k - 1)] = NAN;
            x[3 * ldx + k / 2] = -INFINITY;
            uint8_t *q = xmalloc((size_t)(m * ldq)), *qr = xmalloc((size_t)(m * ldq));
            float *s = xmalloc(sizeof(float) * (size_t)(m * ldxs)), *sr = xmalloc(sizeof(float) * (size_t)(m * ldxs));
            memset(q, 0xAB, (size_t)(m * ldq));
            memset(qr, 0xAB, (size_t)(m * ldq));
            for (int64_t i = 0; i < m * ldxs; i++) s[i] = sr[i] = -7.0f;
            kt->quantize(x, ldx, m, k, qmax, q, ldq, s, ldxs);
            eg_quantize_blocks_u8(x, ldx, m, k, qmax, qr, ldq, sr, ldxs);
            CHECK(memcmp(q, qr, (size_t)(m * ldq)) == 0, "%s quantize k=%lld qmax=%d: bytes differ from the twin's",
                  isa, (long long)k, qmax);
            for (int64_t i = 0; i < m * ldxs; i++)
                CHECK(same_bits(s[i], sr[i]) || (isnan(s[i]) && isnan(sr[i])),
                      "%s quantize k=%lld qmax=%d: scale %lld = %g, twin %g", isa, (long long)k, qmax, (long long)i,
                      (double)s[i], (double)sr[i]);
            /* and the twin is what it says: ties to even (1 - qmax + 0.5 to the even 1 - qmax, qmax odd),
             * NaN scale for a block with NaN or inf, zeros to the zero point */
            CHECK(qr[4 * ldq] == 2 * qmax + 1 && (k < 2 || qr[4 * ldq + 1] == 2),
                  "scalar quantize: ties are not rounded to even (%d %d)", qr[4 * ldq], k > 1 ? qr[4 * ldq + 1] : -1);
            CHECK(isnan(sr[2 * ldxs + (k > 40 ? 40 : k - 1) / EG_QBLOCK]) && isnan(sr[3 * ldxs + (k / 2) / EG_QBLOCK]),
                  "scalar quantize: a block with NaN or inf must get a NaN scale");
            CHECK(sr[1 * ldxs] == 0.0f && qr[1 * ldq] == qmax + 1, "scalar quantize: zeros must give scale 0");
            for (int64_t kk = 0; kk < k; kk++)
                CHECK(qr[6 * ldq + kk] == qmax + 1 && sr[6 * ldxs] == 0.0f, "scalar quantize: a block below qmax / FLT_MAX must be zeros, got %d at %lld",
                      qr[6 * ldq + kk], (long long)kk);
            free(x), free(q), free(qr), free(s), free(sr);
        }
    }
    printf("  %-8s activation quantizer against the twin (bit for bit): %s\n", isa, n_failed == before ? "ok" : "FAILED");
}

/* ---------------------------------------------------------------- row operations */

static void test_rows(const char *isa, const eg_kernels *kt) {
    static const int64_t ns[] = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 257, 1001};
    const eg_kernels *ref = &eg_kernels_scalar;
    const long before = n_failed;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        const int64_t n = ns[ni];
        float *xb = xmalloc(sizeof(float) * (size_t)(n + 1)), *x = xb + 1; /* unaligned */
        float *y = xmalloc(sizeof(float) * (size_t)(n + 1)), *a = xmalloc(sizeof(float) * (size_t)(n + 1));
        float *b = xmalloc(sizeof(float) * (size_t)(n + 1));
        for (int64_t i = 0; i < n; i++) {
            x[i] = nrand();
            y[i] = nrand();
        }
        /* axpy: FMA against the twin's multiply and add: within 2 eps of the terms */
        memcpy(a, y, sizeof(float) * (size_t)n);
        memcpy(b, y, sizeof(float) * (size_t)n);
        kt->axpy(0.37f, x, a, n);
        ref->axpy(0.37f, x, b, n);
        for (int64_t i = 0; i < n; i++)
            CHECK(fabsf(a[i] - b[i]) <= 2 * EPS * (fabsf(y[i]) + fabsf(0.37f * x[i])), "%s axpy n=%lld [%lld]: %g vs %g",
                  isa, (long long)n, (long long)i, (double)a[i], (double)b[i]);
        /* scale: one rounding, bit for bit */
        memcpy(a, y, sizeof(float) * (size_t)n);
        memcpy(b, y, sizeof(float) * (size_t)n);
        kt->scale(-1.5f, a, n);
        ref->scale(-1.5f, b, n);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)n) == 0, "%s scale n=%lld differs from the twin", isa, (long long)n);
        /* GELU gate against float64 0.5 x (1 + tanh(u)): 3 eps |x up|, tails included */
        for (int64_t i = 0; i < n; i++) a[i] = i % 2 ? -40.0f + 80.0f * (float)i / (float)(n > 1 ? n - 1 : 1) : 6 * y[i];
        memcpy(b, a, sizeof(float) * (size_t)n);
        kt->gelu_gate(b, x, n);
        for (int64_t i = 0; i < n; i++) {
            const double v = a[i], u = sqrt(2 / 3.141592653589793) * (v + 0.044715 * v * v * v);
            const double want = 0.5 * v * (1 + tanh(u)) * x[i];
            CHECK(fabs(b[i] - want) <= 3 * EPS * fabs(v * x[i]) + 1e-38, "%s gelu_gate n=%lld: gelu(%g) * %g = %.9g, want %.9g",
                  isa, (long long)n, v, (double)x[i], (double)b[i], want);
        }
        /* softmax numerators: 3 eps relative, exactly 0 for -inf, the sum within (n + 3) eps */
        float mx = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            a[i] = urand() < 0.3 ? -INFINITY : nrand() * 20.0f;
            if (isfinite(a[i]) && a[i] > mx) mx = a[i];
        }
        memcpy(b, a, sizeof(float) * (size_t)n);
        const float total = kt->exp_sub(b, mx, n);
        double want_total = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const double want = isinf(a[i]) ? 0.0 : exp((double)(a[i] - mx));
            want_total += want;
            CHECK(isinf(a[i]) ? b[i] == 0.0f : fabs(b[i] - want) <= 3 * EPS * want + 1e-37,
                  "%s exp_sub n=%lld: exp(%g - %g) = %.9g, want %.9g", isa, (long long)n, (double)a[i], (double)mx,
                  (double)b[i], want);
        }
        CHECK(fabs(total - want_total) <= (n + 3) * EPS * want_total + 1e-37, "%s exp_sub n=%lld: sum %.9g, want %.9g", isa,
              (long long)n, (double)total, want_total);
        free(xb), free(y), free(a), free(b);
    }
    printf("  %-8s axpy, scale, GELU gate, exp against twins and float64: %s\n", isa, n_failed == before ? "ok" : "FAILED");
}

/* ---------------------------------------------------------------- golden data */

/* One float32 array from an uncompressed .npz (np.savez): the member `name`.npy, shape [rows, cols]. */
static float *npz_array(const char *path, const char *name, int64_t *rows, int64_t *cols) {
    char err[512], member[700];
    char *buf;
    size_t len;
    if (eg_read_file(path, (size_t)64 << 20, &buf, &len, err, sizeof err) != EG_OK) die(path, err);
    snprintf(member, sizeof member, "%s.npy", name);
    size_t off = 0;
    const uint8_t *u = (const uint8_t *)buf;
#define LE16(p) ((uint32_t)(p)[0] | (uint32_t)(p)[1] << 8)
#define LE32(p) (LE16(p) | (uint32_t)(p)[2] << 16 | (uint32_t)(p)[3] << 24)
    while (off + 30 <= len && LE32(u + off) == 0x04034b50u) { /* zip local file headers */
        const uint32_t flags = LE16(u + off + 6), method = LE16(u + off + 8), usize32 = LE32(u + off + 22);
        const uint32_t nlen = LE16(u + off + 26), xlen = LE16(u + off + 28);
        uint64_t csize = LE32(u + off + 18);
        if (off + 30 + nlen + xlen > len) die(path, "truncated zip header");
        for (size_t x = off + 30 + nlen; x + 4 <= off + 30 + nlen + xlen;) { /* zip64 sizes (numpy writes them) */
            const uint32_t id = LE16(u + x), sz = LE16(u + x + 2);
            if (id == 1 && csize == 0xFFFFFFFFu) {
                const size_t at = x + 4 + (usize32 == 0xFFFFFFFFu ? 8 : 0);
                if (at + 8 > x + 4 + sz) die(path, "bad zip64 extra field");
                csize = (uint64_t)LE32(u + at) | (uint64_t)LE32(u + at + 4) << 32;
            }
            x += 4 + sz;
        }
        const uint8_t *data = u + off + 30 + nlen + xlen;
        if (csize > len || off + 30 + nlen + xlen + csize > len) die(path, "truncated zip member");
        if (nlen == strlen(member) && memcmp(u + off + 30, member, nlen) == 0) {
            if (method != 0 || (flags & 8)) die(path, "member is compressed: write the file with np.savez, not savez_compressed");
            /* .npy: magic, version, header length, a Python dict literal, then the data */
            if (csize < 10 || memcmp(data, "\x93NUMPY", 6) != 0) die(path, "member is not a .npy array");
            const uint32_t hlen = data[6] == 1 ? LE16(data + 8) : LE32(data + 8), hoff = data[6] == 1 ? 10 : 12;
            char hdr[512];
            if (hlen >= sizeof hdr || hoff + hlen > csize) die(path, "bad .npy header");
            memcpy(hdr, data + hoff, hlen);
            hdr[hlen] = 0;
            const char *shape = strstr(hdr, "'shape': (");
            long long r = 0, c = 0;
            if (!strstr(hdr, "'descr': '<f4'") || !strstr(hdr, "'fortran_order': False") || !shape ||
                sscanf(shape, "'shape': (%lld, %lld)", &r, &c) != 2)
                die(path, "expected a C-order little-endian float32 matrix");
            if ((size_t)(r * c) * 4 != csize - hoff - hlen) die(path, "array size does not match its shape");
            float *out = xmalloc(sizeof(float) * (size_t)(r * c));
            memcpy(out, data + hoff + hlen, sizeof(float) * (size_t)(r * c));
            *rows = r;
            *cols = c;
            free(buf);
            return out;
        }
        off += 30 + nlen + xlen + csize;
    }
#undef LE16
#undef LE32
    die(path, member);
    return NULL;
}

typedef struct {
    char name[32];
    int64_t dim, n_seqs;
    int normalize;
    int32_t *ids;
    int64_t *offsets;
    float *expected; /* [n_seqs, dim] */
} golden_case;

static int load_cases(const char *data, golden_case *cases, int max) {
    char path[1024], err[512];
    json_doc *doc;
    snprintf(path, sizeof path, "%s/golden_tokens.json", data);
    if (eg_read_json(path, &doc, err, sizeof err) != EG_OK) die(path, err);
    const json_node *all = json_get(json_root(doc), "cases");
    if (!all || all->type != JSON_OBJECT) die(path, "no \"cases\" object");
    snprintf(path, sizeof path, "%s/golden_expected.npz", data);
    int n = 0;
    for (size_t c = 0; c < all->n && n < max; c++, n++) {
        golden_case *g = &cases[n];
        const json_node *cn = all->items[c], *ids = json_get(cn, "ids"), *dim = json_get(cn, "dim");
        const json_node *norm = json_get(cn, "normalize");
        if (!ids || ids->type != JSON_ARRAY || !dim || !norm) die("golden_tokens.json", "a case lacks ids, dim or normalize");
        snprintf(g->name, sizeof g->name, "%s", all->keys[c]);
        g->dim = dim->integer;
        g->normalize = norm->boolean;
        g->n_seqs = (int64_t)ids->n;
        int64_t total = 0;
        for (size_t s = 0; s < ids->n; s++) total += (int64_t)ids->items[s]->n;
        g->ids = xmalloc(sizeof(int32_t) * (size_t)total);
        g->offsets = xmalloc(sizeof(int64_t) * (size_t)(g->n_seqs + 1));
        int64_t t = 0;
        for (size_t s = 0; s < ids->n; s++) {
            g->offsets[s] = t;
            for (size_t i = 0; i < ids->items[s]->n; i++) g->ids[t++] = (int32_t)ids->items[s]->items[i]->integer;
        }
        g->offsets[g->n_seqs] = t;
        int64_t rows, cols;
        g->expected = npz_array(path, g->name, &rows, &cols);
        if (rows != g->n_seqs || cols != g->dim) die(path, "expected embeddings do not match the token file's shape");
    }
    json_free(doc);
    return n;
}

/* Encodes every sequence of a case in one call on `threads` threads; out [n_seqs, dim]. */
static void encode_case(const eg_model *md, const golden_case *g, int threads, float *out) {
    char err[512];
    eg_encode_opts o = {g->dim, g->normalize, threads};
    if (eg_encode(md, g->ids, g->offsets, g->n_seqs, &o, out, g->dim, NULL, err, sizeof err) != EG_OK)
        die("eg_encode", err);
}

/* Worst cosine and largest |difference| between the rows of a and b. */
static void compare_rows(const float *a, const float *b, int64_t rows, int64_t dim, double *cos_min, double *abs_max) {
    for (int64_t r = 0; r < rows; r++) {
        double ab = 0, aa = 0, bb = 0;
        for (int64_t j = 0; j < dim; j++) {
            const double x = a[r * dim + j], y = b[r * dim + j];
            ab += x * y;
            aa += x * x;
            bb += y * y;
            if (!(fabs(x - y) <= *abs_max)) *abs_max = isnan(x - y) ? INFINITY : fabs(x - y);
        }
        const double c = ab / sqrt(aa * bb);
        if (!(c >= *cos_min)) *cos_min = isnan(c) ? -1.0 : c;
    }
}

static eg_model *load_golden(const char *data, const char *isa, eg_weights mode) {
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/golden_model", data);
    eg_load_opts o = {isa, mode, mode, NULL, 0};
    eg_model *md;
    if (eg_model_load(path, &o, &md, err, sizeof err) != EG_OK) die("eg_model_load", err);
    return md;
}

/* The lowest supported ISA that computes exactly what `isa` does: the same float kernels (the
 * same functions) and integer value ranges, the integer GEMMs being exact. */
static eg_isa same_results_as(eg_isa isa) {
    const eg_kernels *k = eg_kernels_for(isa);
    for (int i = 1; i < (int)isa; i++) {
        if (!eg_isa_supported((eg_isa)i)) continue;
        const eg_kernels *o = eg_kernels_for((eg_isa)i);
        if (o->gemm == k->gemm && o->gemm_bf16 == k->gemm_bf16 && o->quantize == k->quantize && o->axpy == k->axpy &&
            o->scale == k->scale && o->gelu_gate == k->gelu_gate && o->exp_sub == k->exp_sub &&
            o->pairs16 == k->pairs16 && o->bf16dot == k->bf16dot && o->tail_bf16 == k->tail_bf16)
            return (eg_isa)i;
    }
    return isa;
}

static void test_golden(const char *data, eg_isa isa, int forced, golden_case *cases, int n_cases) {
    static const eg_weights modes[] = {EG_WEIGHTS_F32, EG_WEIGHTS_BF16, EG_WEIGHTS_INT8};
    const char *name = eg_isa_name(isa);
    const eg_isa twin = same_results_as(isa);
    for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
        const long before = n_failed;
        const eg_weights mode = modes[mi];
        eg_model *md = load_golden(data, forced ? NULL : name, mode); /* forced: EMBGEMMA_ISA chooses */
        const eg_model_info *info = eg_model_get_info(md);
        CHECK(info->isa == isa, "golden model loaded on %s, not %s (%s)", eg_isa_name(info->isa), name, info->isa_note);
        /* the scalar kernels are slow (under emulation most of all): one case against them, in the reduced modes */
        eg_model *sc = isa != EG_ISA_SCALAR && mode != EG_WEIGHTS_F32 ? load_golden(data, "scalar", mode) : NULL;
        eg_model *same = twin != isa ? load_golden(data, eg_isa_name(twin), mode) : NULL;
        double cos_exp = 1, abs_exp = 0, cos_sc = 1, abs_sc = 0;
        for (int c = 0; c < n_cases; c++) {
            const golden_case *g = &cases[c];
            const size_t sz = sizeof(float) * (size_t)(g->n_seqs * g->dim);
            float *out = xmalloc(sz), *other = xmalloc(sz);
            encode_case(md, g, 1, out);
            compare_rows(out, g->expected, g->n_seqs, g->dim, &cos_exp, &abs_exp);
            if (sc && c == 0) {
                encode_case(sc, g, 1, other);
                compare_rows(out, other, g->n_seqs, g->dim, &cos_sc, &abs_sc);
            }
            if (same) {
                encode_case(same, g, 1, other);
                CHECK(memcmp(out, other, sz) == 0, "golden %s %s: %s must give %s's embeddings bit for bit", g->name,
                      eg_weights_name(mode), name, eg_isa_name(twin));
            }
            if (c == 0) { /* thread count and batching change nothing */
                encode_case(md, g, 3, other);
                CHECK(memcmp(out, other, sz) == 0, "golden %s %s %s: 3 threads differ from 1", g->name, name,
                      eg_weights_name(mode));
                char err[512];
                eg_encode_opts o = {g->dim, g->normalize, 2};
                for (int64_t s = g->n_seqs - 1; s >= 0; s--) {
                    const int64_t off[2] = {0, g->offsets[s + 1] - g->offsets[s]}, row = s;
                    if (eg_encode(md, g->ids + g->offsets[s], off, 1, &o, other, g->dim, &row, err, sizeof err))
                        die("eg_encode", err);
                }
                CHECK(memcmp(out, other, sz) == 0, "golden %s %s %s: one sequence per call differs from one batch",
                      g->name, name, eg_weights_name(mode));
            }
            free(out), free(other);
        }
        /* float32 against sentence-transformers (tests/conftest.py's parity bars); the reduced-precision
         * modes against the scalar kernels in the same mode (the same arithmetic up to float rounding and,
         * for int8 at other value ranges, activation steps; the first case) and loosely against float32 */
        if (mode == EG_WEIGHTS_F32) {
            CHECK(cos_exp >= 0.99999 && abs_exp <= 1e-4, "golden float32 on %s: worst cosine %.8f, max |diff| %.3g", name,
                  cos_exp, abs_exp);
        } else {
            CHECK(cos_exp >= (mode == EG_WEIGHTS_BF16 ? 0.99 : 0.9), "golden %s on %s: worst cosine to float32 %.6f",
                  eg_weights_name(mode), name, cos_exp);
            const int same_ranges = eg_kernels_for(isa)->pairs16 == eg_kernels_scalar.pairs16;
            /* a bf16dot ISA rounds bfloat16's activations as well: other arithmetic than the scalar kernels' */
            if (sc && (mode == EG_WEIGHTS_BF16 ? !eg_kernels_for(isa)->bf16dot : same_ranges))
                CHECK(cos_sc >= 0.9999, "golden %s on %s: worst cosine to the scalar kernels %.8f", eg_weights_name(mode),
                      name, cos_sc);
        }
        printf("  %-8s golden model, %-8s: worst cosine %.8f to sentence-transformers' float32", name,
               eg_weights_name(mode), cos_exp);
        if (sc) printf(", %.8f to scalar", cos_sc);
        if (same) printf(", bit-identical to %s", eg_isa_name(twin));
        printf(": %s\n", n_failed == before ? "ok" : "FAILED");
        eg_model_free(md);
        if (sc) eg_model_free(sc);
        if (same) eg_model_free(same);
    }
}

/* ---------------------------------------------------------------- dispatch */

static void test_dispatch(const char *expect) {
    char list[256] = "", why[256], note[512], err[512];
    for (int i = 0; i < EG_ISA_COUNT; i++)
        if (eg_isa_supported((eg_isa)i)) {
            if (list[0]) strcat(list, " ");
            strcat(list, eg_isa_name((eg_isa)i));
        }
    printf("cpu features: %s\nsupported ISAs: %s\n", eg_cpu_features(), list);
    if (expect) CHECK(strcmp(list, expect) == 0, "supported ISAs are \"%s\", expected \"%s\"", list, expect);
    eg_isa best = EG_ISA_SCALAR;
    for (int i = 0; i < EG_ISA_COUNT; i++) {
        const eg_isa isa = (eg_isa)i;
        if (eg_isa_supported(isa)) {
            if (isa != EG_ISA_AVX512BF16) best = isa; /* only when asked for (eg_isa_best) */
            CHECK(eg_isa_selfcheck(isa, why, sizeof why), "%s fails its self-check: %s", eg_isa_name(isa), why);
        } else if (eg_isa_compiled(isa)) {
            eg_isa out;
            CHECK(eg_isa_choose(eg_isa_name(isa), &out, note, sizeof note, err, sizeof err) == EG_ERR_UNSUPPORTED,
                  "asking for %s, which this CPU lacks, must fail", eg_isa_name(isa));
        } else {
            eg_isa out;
            CHECK(eg_isa_choose(eg_isa_name(isa), &out, note, sizeof note, err, sizeof err) == EG_ERR_INVALID_ARG &&
                      strstr(err, "not compiled into this build"),
                  "asking for %s, of another architecture, must say so: %s", eg_isa_name(isa), err);
        }
    }
    CHECK(eg_isa_best() == best, "best ISA %s, expected %s", eg_isa_name(eg_isa_best()), eg_isa_name(best));
}

int main(int argc, char **argv) {
    const char *data = "tests/data", *expect = NULL;
    int dispatch_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) data = argv[++i];
        else if (strcmp(argv[i], "--expect-supported") == 0 && i + 1 < argc) expect = argv[++i];
        else if (strcmp(argv[i], "--dispatch-only") == 0) dispatch_only = 1;
        else if (strcmp(argv[i], "--list") == 0) { /* the supported ISAs, for run.sh */
            for (int j = 0; j < EG_ISA_COUNT; j++)
                if (eg_isa_supported((eg_isa)j)) printf("%s\n", eg_isa_name((eg_isa)j));
            return 0;
        }
        else {
            fprintf(stderr, "usage: %s [--data DIR] [--expect-supported \"scalar ...\"] [--dispatch-only] | --list\n",
                    argv[0]);
            return 2;
        }
    }
    test_dispatch(expect);
    if (dispatch_only) {
        printf("%ld checks, %ld failed\n", n_checks, n_failed);
        return n_failed != 0;
    }
    const char *forced = getenv("EMBGEMMA_ISA");
    eg_isa only = EG_ISA_COUNT;
    if (forced && *forced && strcmp(forced, "auto") != 0) {
        char note[512], err[512];
        eg_isa chosen;
        if (eg_isa_choose(forced, &chosen, note, sizeof note, err, sizeof err) != EG_OK) die("EMBGEMMA_ISA", err);
        CHECK(strcmp(eg_isa_name(chosen), forced) == 0, "EMBGEMMA_ISA=%s chose %s (%s)", forced, eg_isa_name(chosen), note);
        for (int i = 0; i < EG_ISA_COUNT; i++) /* its kernels are tested even if its self-check failed */
            if (strcmp(eg_isa_name((eg_isa)i), forced) == 0) only = (eg_isa)i;
    }
    golden_case cases[8];
    const int n_cases = load_cases(data, cases, 8);
    for (int i = 0; i < EG_ISA_COUNT; i++) {
        const eg_isa isa = (eg_isa)i;
        if (!eg_isa_supported(isa) || (only != EG_ISA_COUNT && isa != only)) continue;
        printf("ISA %s:\n", eg_isa_name(isa));
        const eg_kernels *kt = eg_kernels_for(isa);
        test_gemms(eg_isa_name(isa), kt);
        test_quantize(eg_isa_name(isa), kt);
        test_rows(eg_isa_name(isa), kt);
        test_golden(data, isa, only != EG_ISA_COUNT, cases, n_cases);
    }
    for (int c = 0; c < n_cases; c++) free(cases[c].ids), free(cases[c].offsets), free(cases[c].expected);
    printf("%ld checks, %ld failed\n", n_checks, n_failed);
    return n_failed != 0;
}
