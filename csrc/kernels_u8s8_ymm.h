/* kernels_u8s8_ymm.h - the 256-bit u8 x s8 integer GEMM kernels (I8, Q8_0, Q4_0
 * weights), written once and compiled twice: kernels_avx2.c (vpmaddubsw +
 * vpmaddwd) and kernels_avxvnni.c (vpdpbusd). The includer defines
 *   U8_TGT            the target attribute of its ISA
 *   U8_NAME(x)        the name of function x in its ISA (x##_avx2, ...)
 *   U8_DOT4(c, a, b)  c + (for each int32 lane) the 4 products u8 a x s8 b, exact
 *   U8_MR             rows of x per micro-kernel (accumulators: 2 per row)
 * Exactness: with the value ranges the loader packs for (eg_matrix_ranges), even
 * the int16 pair sums of vpmaddubsw cannot saturate, and every ISA gives the
 * scalar twin's int32 sums bit for bit. A panel k-quad is 64 bytes: columns 0..7 (4 k
 * each) in the first 32, columns 8..15 in the next. Included in the includer's I8 / Q8_0 / Q4_0
 * section (kernels.h). No allocation, no threads, no Python.
 */

/* Stores mr rows of 16 floats (cols of them). */
EG_INLINE U8_TGT void U8_NAME(store16)(int mr, __m256 v[][2], float *y, int64_t ldy, int64_t cols) {
    for (int r = 0; r < U8_MR; r++) {
        if (r >= mr) break;
        if (cols == EG_PANEL) {
            _mm256_storeu_ps(y + r * ldy, v[r][0]);
            _mm256_storeu_ps(y + r * ldy + 8, v[r][1]);
        } else {
            float tmp[EG_PANEL];
            _mm256_storeu_ps(tmp, v[r][0]);
            _mm256_storeu_ps(tmp + 8, v[r][1]);
            memcpy(y + r * ldy, tmp, (size_t)cols * sizeof(float));
        }
    }
}

EG_INLINE U8_TGT __m256i U8_NAME(load4)(const uint8_t *p) { /* 4 activation bytes, broadcast */
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Per block of 32 k: 8 quads into exact int32 sums, then one FMA per row and column folds
 * (sum - zero-point term) in with both scales; float accumulators live across blocks. A Q4_0
 * 64-byte group holds quads 2g (low nibbles) and 2g+1 (high nibbles) of the 16 columns. */
EG_INLINE U8_TGT void U8_NAME(micro_q)(int mr, int q4, const uint8_t *xq, int64_t ldq, const float *xs,
                                       int64_t ldxs, const uint8_t *panel, const float *ws, const int32_t *wsum,
                                       int64_t nb, float *y, int64_t ldy, int64_t cols) {
    __m256 f[U8_MR][2];
    const uint8_t *x[U8_MR];
    const float *s[U8_MR];
    for (int r = 0; r < U8_MR; r++) {
        f[r][0] = f[r][1] = _mm256_setzero_ps();
        x[r] = xq + (r < mr ? r : 0) * ldq;
        s[r] = xs + (r < mr ? r : 0) * ldxs;
    }
    const __m256i lo4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
    for (int64_t b = 0; b < nb; b++) {
        __m256i c[U8_MR][2];
        for (int r = 0; r < U8_MR; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
        for (int g = 0; g < EG_QBLOCK / 8; g++) { /* 8 k: two quads */
            __m256i b0[2], b1[2];
            if (q4) {
                const uint8_t *pg = panel + (b * 4 + g) * 64;
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)pg);
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(pg + 32));
                b0[0] = _mm256_sub_epi8(_mm256_and_si256(v0, lo4), eight);
                b1[0] = _mm256_sub_epi8(_mm256_and_si256(v1, lo4), eight);
                b0[1] = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v0, 4), lo4), eight);
                b1[1] = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v1, 4), lo4), eight);
            } else {
                const uint8_t *pg = panel + (b * 8 + 2 * g) * 64;
                b0[0] = _mm256_loadu_si256((const __m256i *)pg);
                b1[0] = _mm256_loadu_si256((const __m256i *)(pg + 32));
                b0[1] = _mm256_loadu_si256((const __m256i *)(pg + 64));
                b1[1] = _mm256_loadu_si256((const __m256i *)(pg + 96));
            }
            for (int h = 0; h < 2; h++) {
                const int64_t kk = b * EG_QBLOCK + g * 8 + h * 4;
                for (int r = 0; r < U8_MR; r++) {
                    const __m256i a = U8_NAME(load4)(x[r] + kk);
                    c[r][0] = U8_DOT4(c[r][0], a, b0[h]);
                    c[r][1] = U8_DOT4(c[r][1], a, b1[h]);
                }
            }
        }
        const __m256i z0 = _mm256_loadu_si256((const __m256i *)(wsum + b * EG_PANEL));
        const __m256i z1 = _mm256_loadu_si256((const __m256i *)(wsum + b * EG_PANEL + 8));
        const __m256 w0 = _mm256_loadu_ps(ws + b * EG_PANEL), w1 = _mm256_loadu_ps(ws + b * EG_PANEL + 8);
        for (int r = 0; r < U8_MR; r++) {
            if (r >= mr) break;
            const __m256 sa = _mm256_set1_ps(s[r][b]);
            f[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c[r][0], z0)), _mm256_mul_ps(sa, w0), f[r][0]);
            f[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c[r][1], z1)), _mm256_mul_ps(sa, w1), f[r][1]);
        }
    }
    U8_NAME(store16)(mr, f, y, ldy, cols);
}

EG_INLINE U8_TGT void U8_NAME(gemm_q_rows)(int q4, const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs,
                                           int64_t m, const eg_matrix *w, int64_t p0, int64_t p1, float *y,
                                           int64_t ldy) {
    const int64_t nb = eg_ldq(w->k) / EG_QBLOCK, pbytes = q4 ? w->k / 2 * EG_PANEL : eg_ldq(w->k) * EG_PANEL;
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *panel = (const uint8_t *)w->data + p * pbytes;
        const float *ws = w->scale + p * nb * EG_PANEL;
        const int32_t *wsum = w->wsum + p * nb * EG_PANEL;
        const int64_t cols = eg_panel_cols(w, p);
        float *yp = y + p * EG_PANEL;
        int64_t i = 0;
        for (; i + U8_MR <= m; i += U8_MR)
            U8_NAME(micro_q)(U8_MR, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, wsum, nb, yp + i * ldy, ldy,
                             cols);
        switch (m - i) {
#define U8_TAIL(n)                                                                                                    \
    case n:                                                                                                           \
        U8_NAME(micro_q)(n, q4, xq + i * ldq, ldq, xs + i * ldxs, ldxs, panel, ws, wsum, nb, yp + i * ldy, ldy, cols); \
        break;
#if U8_MR > 5
        U8_TAIL(5)
#endif
#if U8_MR > 4
        U8_TAIL(4)
#endif
        U8_TAIL(3)
        U8_TAIL(2)
        U8_TAIL(1)
#undef U8_TAIL
        default: break;
        }
    }
}

static U8_TGT void U8_NAME(gemm_q)(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m,
                                   const eg_matrix *w, int64_t p0, int64_t p1, float *y, int64_t ldy) {
    if (w->type == EG_W_Q4_0) U8_NAME(gemm_q_rows)(1, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
    else U8_NAME(gemm_q_rows)(0, xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}

