/* forward.c - the EmbeddingGemma forward pass over a ragged batch.
 *
 * All sequences of a call are packed into one [T, D] matrix with no padding:
 * every projection is one GEMM over all T tokens, and only attention and
 * pooling look at sequence boundaries. Activations are float32 throughout.
 * Every output element has exactly one owning thread and a fixed order of
 * operations, so results are bitwise identical for any thread count.
 * No Python here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform.h"

#define GEMM_MB 96       /* rows of x per GEMM task                             */
#define GEMM_PB 4        /* weight panels (x16 columns) per GEMM task           */
#define MLP_CHUNK 1024   /* tokens per MLP step: bounds the [chunk, 2I] buffer  */
#define ATT_BQ 32        /* queries per attention tile                          */
#define ATT_BK 64        /* keys per attention tile                             */
/* Attention runs in slices of query tiles of about this many (query, key) pairs per thread each
 * (0.2 GMAC per thread for EmbeddingGemma's 3 x 256 query heads: tens of ms): the cancel poll runs
 * between slices, so even one global layer over 8192 tokens can be stopped within a small part of
 * itself. Short texts fit in one slice (one parallel region, as without slicing). Each task
 * computes the same numbers in any slice. */
#define ATT_SLICE_PAIRS ((int64_t)1 << 17)
/* Row operations (norms, RoPE, GELU, residual adds, pooling) get a thread team only from this many
 * tokens on: below it, forking and joining costs more than the work (measured: a 2-thread region of
 * 20 x 768 row work took ~8 us against ~2.5 us serially, and a 20-token query crosses ~240 such
 * regions). Each row is computed by one thread with the same code either way: no change in results. */
#ifndef ROWS_PAR_MIN
#define ROWS_PAR_MIN 64
#endif

/* Scratch for one call. Each field is [rows, cols] float32. */
typedef struct {
    float *x;        /* [T, D]          residual stream                        */
    float *xn;       /* [T, D]          normed input of a block                */
    float *qkv;      /* [T, QD+2KD]     q | k | v per token                    */
    float *att;      /* [T, QD]         attention output, heads concatenated  */
    float *tmp;      /* [T, D]          o_proj / down_proj output              */
    float *gu;       /* [MLP_CHUNK, 2I] gate | up, then gelu(gate)*up in gate  */
    float *att_tile; /* [threads, G*BQ*(BK + 3Hd + 2)] per-thread attention tile */
    float *head;     /* [S, 2*Wmax]     pooled vector and Dense outputs        */
    float *pool;     /* [threads, 4D]   per-thread pooling sums (D doubles) + a row */
    float *kvp;      /* [KV, Tp, Hd] keys, then [KV, Tp, Hp] values, of each kv head as GEMM panels, packed
                      * once per layer (Tp: the lengths rounded up to 16, Hp: Hd rounded up to 16)     */
    uint8_t *xq;     /* [T, Kmax]       activations quantized (u8, int16) or rounded (bf16): eg_xq_bytes */
    float *xs;       /* [T, Kmax/32]    their scales, one per row and 32 inputs    */
} scratch;

/* ---------------------------------------------------------------- row ops */

/* Gemma RMSNorm: y = x / sqrt(mean(x^2) + eps) * gain, gain = 1 + w (precomputed). */
static void rmsnorm(const float *x, const float *gain, float *y, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * r) * gain[i];
}

/* Rotate-half RoPE on one head vector: pairs (i, i + Hd/2). */
static void rope(float *v, const float *cos_row, const float *sin_row, int64_t half) {
    for (int64_t i = 0; i < half; i++) {
        float x0 = v[i], x1 = v[i + half], c = cos_row[i], s = sin_row[i];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
    }
}

/* ---------------------------------------------------------------- GEMM driver */

/* y[m, 0..w->n) = x[m, k] . W^T, split into (row block x panel block) tasks.
 * For an integer w the rows of x are first quantized into xq / xs (each row by
 * the thread that owns it), then every task reads them. */
static void gemm(const eg_model *md, const float *x, int64_t ldx, int64_t m, const eg_matrix *w, float *y,
                 int64_t ldy, int nt, uint8_t *xq, float *xs) {
    /* AMX tiles want bigger tasks: each call loads its tile configuration, and a 2 x 2 tile block
     * reuses more of what it loads over more rows (measured: 1.1-1.3x the GEMM at 192 x 8) */
    const int amx = w->bf16dot == EG_BF16DOT_AMX;
    const int64_t MB = amx ? 2 * GEMM_MB : GEMM_MB, PB = amx ? 2 * GEMM_PB : GEMM_PB;
    const int64_t mb = (m + MB - 1) / MB, pb = (w->n_panels + PB - 1) / PB;
    const int64_t tasks = mb * pb, ldq = eg_xq_stride(w); /* bytes */
    const eg_kernels *k = md->k;
    const int q = ldq > 0; /* xq (and for integer w, xs) exist only then */
    const int64_t ldxs = eg_ldq(w->k) / EG_QBLOCK;
#pragma omp parallel num_threads(nt) if (nt > 1 && tasks > 1)
    {
        if (q) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < m; i++)
                eg_quantize_for(k, w, x + i * ldx, ldx, 1, xq + i * ldq, ldq, xs + i * ldxs);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; t++) {
            int64_t pi = t % pb, mi = t / pb;
            int64_t r0 = mi * MB, r1 = r0 + MB < m ? r0 + MB : m;
            int64_t p0 = pi * PB, p1 = p0 + PB < w->n_panels ? p0 + PB : w->n_panels;
            eg_gemm_panels(k, x + r0 * ldx, ldx, q ? xq + r0 * ldq : NULL, ldq, q ? xs + r0 * ldxs : NULL, ldxs,
                           r1 - r0, w, p0, p1, y + r0 * ldy, ldy);
        }
    }
}

/* ---------------------------------------------------------------- attention */

/* Per-thread attention scratch, in floats. */
static int64_t tile_floats(const eg_config *c) {
    const int64_t G = c->n_heads / c->n_kv_heads, Hd = c->head_dim;
    return G * ATT_BQ * ATT_BK      /* S   [G*BQ, BK]  scores, then probabilities    */
           + 3 * G * ATT_BQ * Hd    /* Q, O, PV [G*BQ, Hd] queries of all G heads, running numerators, P.V */
           + 2 * G * ATT_BQ;        /* running max and sum per row                    */
}

/* n rounded up to whole panels (16) */
static int64_t panel_round(int64_t n) { return (n + EG_PANEL - 1) / EG_PANEL * EG_PANEL; }

/* Keys and values of sequence rows [0, len) of one kv head as the GEMM's panels, written once per layer
 * and read by every query tile: K as W [len, Hd] (scores = q . k), panels [ceil(len/16), Hd, 16]; V as
 * W [Hd, len] (out = p . v), panels [ceil(Hd/16), lenp, 16] with lenp = panel_round(len), so keys
 * [k0, k1) of V panel p start at vp + (p * lenp + k0) * 16. Rows past len, and V's columns past Hd, are
 * zero. This thread packs key rows [j0, j1), j0 a multiple of 16. */
static void pack_kv(const float *k, const float *v, int64_t ld, int64_t len, int64_t Hd, int64_t j0, int64_t j1,
                    float *kp, float *vp) {
    const int64_t lenp = panel_round(len), vpan = panel_round(Hd) / EG_PANEL;
    for (int64_t j = j0; j < j1; j++) {
        float *kd = kp + (j / EG_PANEL) * Hd * EG_PANEL + j % EG_PANEL;
        for (int64_t d = 0; d < Hd; d++) kd[d * EG_PANEL] = j < len ? k[j * ld + d] : 0.0f;
        for (int64_t p = 0; p < vpan; p++) {
            float *vd = vp + (p * lenp + j) * EG_PANEL;
            for (int64_t c = 0; c < EG_PANEL; c++) {
                const int64_t d = p * EG_PANEL + c;
                vd[c] = j < len && d < Hd ? v[j * ld + d] : 0.0f;
            }
        }
    }
}

/* One task: queries [q0, q1) of one sequence, all query heads of kv head g, against that head's keys and
 * values packed by pack_kv (kp, vp). Flash-style: key tiles of ATT_BK, running max and sum per row, so at
 * most a [G*BQ, BK] tile of scores exists at once whatever the sequence length. Q.K^T and P.V run on the
 * GEMM kernel, the G heads' query rows gathered into one [G*nq, Hd] block so each is one GEMM of G*nq rows. */
static void attention_tile(const eg_model *md, const float *qkv, int64_t ldq, int64_t seq0, int64_t len, int64_t q0,
                           int64_t q1, int64_t g, int is_global, const float *kp, const float *vp, float *tile,
                           float *att, int64_t ldatt) {
    const eg_config *c = &md->cfg;
    const eg_kernels *k = md->k;
    const int64_t Hd = c->head_dim, G = c->n_heads / c->n_kv_heads;
    const int64_t nq = q1 - q0, rows = G * nq, R = c->window_radius;
    const int64_t lenp = panel_round(len), vpan = panel_round(Hd) / EG_PANEL;
    const float scale = (float)(1.0 / sqrt(c->query_pre_attn_scalar));
    float *S = tile;                     /* [rows, BK]  */
    float *Q = S + G * ATT_BQ * ATT_BK;  /* [rows, Hd]  row h * nq + i: head g * G + h, query q0 + i */
    float *O = Q + G * ATT_BQ * Hd;      /* [rows, Hd]  */
    float *PV = O + G * ATT_BQ * Hd;     /* [rows, Hd]  */
    float *mx = PV + G * ATT_BQ * Hd;    /* [rows]      */
    float *sum = mx + G * ATT_BQ;        /* [rows]      */
    for (int64_t r = 0; r < rows; r++) {
        mx[r] = -INFINITY;
        sum[r] = 0.0f;
        memcpy(Q + r * Hd, qkv + (seq0 + q0 + r % nq) * ldq + (g * G + r / nq) * Hd, (size_t)Hd * sizeof(float));
    }
    memset(O, 0, (size_t)(rows * Hd) * sizeof(float));

    int64_t k_lo = 0, k_hi = len;
    if (!is_global) { /* tiles from a panel boundary: the keys before q0 - R in the first one are masked */
        k_lo = q0 - R > 0 ? (q0 - R) / EG_PANEL * EG_PANEL : 0;
        k_hi = q1 - 1 + R + 1 < len ? q1 - 1 + R + 1 : len;
    }
    for (int64_t k0 = k_lo; k0 < k_hi; k0 += ATT_BK) {
        const int64_t k1 = k0 + ATT_BK < k_hi ? k0 + ATT_BK : k_hi, nk = k1 - k0;
        const eg_matrix km = {.data = (void *)(kp + k0 * Hd), .n = nk, .k = Hd,
                              .n_panels = (nk + EG_PANEL - 1) / EG_PANEL, .type = EG_W_F32};
        k->gemm(Q, Hd, rows, &km, 0, km.n_panels, S, ATT_BK);
        /* scale, mask, online softmax update of each row */
        for (int64_t r = 0; r < rows; r++) {
            const int64_t qi = q0 + r % nq;
            float *s = S + r * ATT_BK;
            /* allowed keys of this row in the tile: j in [lo, hi) */
            int64_t lo = 0, hi = nk;
            if (!is_global) {
                lo = qi - R - k0 > 0 ? qi - R - k0 : 0;
                hi = qi + R + 1 - k0 < nk ? qi + R + 1 - k0 : nk;
            }
            if (lo >= hi) { /* no allowed key in this tile: contributes nothing */
                memset(s, 0, (size_t)nk * sizeof(float));
                continue;
            }
            float row_max = -INFINITY;
            for (int64_t j = 0; j < lo; j++) s[j] = -INFINITY;
            for (int64_t j = lo; j < hi; j++) {
                s[j] *= scale;
                row_max = s[j] > row_max ? s[j] : row_max;
            }
            for (int64_t j = hi; j < nk; j++) s[j] = -INFINITY;
            const float m_new = row_max > mx[r] ? row_max : mx[r];
            const float alpha = expf(mx[r] - m_new); /* 0 on the first tile */
            sum[r] = sum[r] * alpha + k->exp_sub(s, m_new, nk); /* s <- exp(s - m_new), masked -> 0 */
            if (alpha != 1.0f) k->scale(alpha, O + r * Hd, Hd);
            mx[r] = m_new;
        }
        for (int64_t p = 0; p < vpan; p++) { /* one V panel at a time: its keys [k0, k1) are contiguous */
            const eg_matrix vm = {.data = (void *)(vp + (p * lenp + k0) * EG_PANEL), .n = Hd - p * EG_PANEL,
                                  .k = nk, .n_panels = 1, .type = EG_W_F32};
            k->gemm(S, ATT_BK, rows, &vm, 0, 1, PV + p * EG_PANEL, Hd);
        }
        for (int64_t r = 0; r < rows; r++) k->axpy(1.0f, PV + r * Hd, O + r * Hd, Hd);
    }
    for (int64_t h = 0; h < G; h++) {
        for (int64_t i = 0; i < nq; i++) {
            const int64_t r = h * nq + i;
            float *dst = att + (seq0 + q0 + i) * ldatt + (g * G + h) * Hd;
            const float inv = 1.0f / sum[r]; /* sum >= 1: a query always sees itself */
            for (int64_t d = 0; d < Hd; d++) dst[d] = O[r * Hd + d] * inv;
        }
    }
}

/* ---------------------------------------------------------------- the pass */

static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

/* The caller's cancel poll, on the calling thread between parallel regions. */
static int stop_requested(const eg_encode_opts *o) { return o->cancel && o->cancel(o->cancel_arg); }

eg_status eg_forward(const eg_model *md, const int32_t *ids, const int64_t *offsets, int64_t n_seqs,
                     const eg_encode_opts *opts, float *out, int64_t out_stride, const int64_t *rows, char *err,
                     size_t errlen) {
    const eg_config *c = &md->cfg;
    const int nt = opts->n_threads;
    const int64_t T = offsets[n_seqs] - offsets[0], S = n_seqs;
    const int64_t D = c->hidden, Hd = c->head_dim, I = c->intermediate, KV = c->n_kv_heads;
    const int64_t QD = c->n_heads * Hd, KD = KV * Hd, QKV = QD + 2 * KD;
    const int64_t Hp = panel_round(Hd);
    const float eps = (float)c->rms_eps;
    ids += offsets[0];

    int64_t wmax = D;
    for (int i = 0; i < md->n_dense; i++) wmax = imax(wmax, md->dense[i].w.n);
    const int64_t chunk = T < MLP_CHUNK ? T : MLP_CHUNK;
    const int64_t tile = tile_floats(c);
    const int i8 = md->has_int_weights;
    const int64_t kq = eg_ldq(imax(imax(D, QD), I)); /* widest k of a layer matrix, in whole blocks */
    int64_t Tp = 0; /* tokens with each sequence rounded up to whole panels: kvp's rows per kv head */
    for (int64_t s = 0; s < S; s++) Tp += panel_round(offsets[s + 1] - offsets[s]);
    const size_t sizes[] = {
        (size_t)(T * D), (size_t)(T * D), (size_t)(T * QKV), (size_t)(T * QD),
        (size_t)(T * D), (size_t)(chunk * 2 * I), (size_t)(nt * tile), (size_t)(S * 2 * wmax),
        (size_t)(nt * 4 * D), (size_t)((T * kq * md->xq_bytes + 3) / 4), (size_t)(i8 ? T * (kq / EG_QBLOCK) : 0),
        (size_t)(KV * Tp * (Hd + Hp)),
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += (sizes[i] + 15) & ~(size_t)15;
    float *arena = eg_aligned_alloc(total * sizeof(float));
    if (!arena)
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory: %zu MiB of scratch for %lld tokens",
                       (total * sizeof(float)) >> 20, (long long)T);
    scratch sc;
    float *xq_f;
    float **fields[] = {&sc.x,    &sc.xn,   &sc.qkv, &sc.att, &sc.tmp, &sc.gu,
                        &sc.att_tile, &sc.head, &sc.pool, &xq_f, &sc.xs, &sc.kvp};
    for (size_t i = 0, off = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *fields[i] = arena + off;
        off += (sizes[i] + 15) & ~(size_t)15;
    }
    sc.xq = (uint8_t *)xq_f;

    /* token -> position within its sequence (for RoPE) */
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    if (!pos) {
        eg_aligned_free(arena);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    }
    for (int64_t s = 0; s < S; s++)
        for (int64_t t = offsets[s]; t < offsets[s + 1]; t++) pos[t - offsets[0]] = (int32_t)(t - offsets[s]);

    /* 1. scaled embedding: x[t] = E[id] * sqrt(D) */
#pragma omp parallel for schedule(static) num_threads(nt) if (T >= ROWS_PAR_MIN)
    for (int64_t t = 0; t < T; t++) {
        float *xt = sc.x + t * D;
        eg_row_to_f32(md->embed_dtype, md->embed + (size_t)ids[t] * (size_t)md->embed_row_bytes, D, xt);
        for (int64_t i = 0; i < D; i++) xt[i] *= md->embed_scale;
    }

    /* attention tasks: (sequence, query tile, kv head) */
    int64_t n_tiles = 0;
    for (int64_t s = 0; s < S; s++) n_tiles += (offsets[s + 1] - offsets[s] + ATT_BQ - 1) / ATT_BQ;
    int64_t *task_seq = malloc((size_t)(n_tiles * 3 + S + 1) * sizeof(int64_t));
    if (!task_seq) {
        free(pos);
        eg_aligned_free(arena);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    }
    int64_t *task_q0 = task_seq + n_tiles, *slice_end = task_q0 + n_tiles, *poff = slice_end + n_tiles;
    int64_t n_pblocks = 0; /* poff[s]: sequence s's first row in kvp; packing tasks: blocks of 16 key rows */
    for (int64_t s = 0; s < S; s++) {
        poff[s] = n_pblocks * EG_PANEL;
        n_pblocks += panel_round(offsets[s + 1] - offsets[s]) / EG_PANEL;
    }
    poff[S] = n_pblocks * EG_PANEL;
    int64_t n_slices = 0, pairs = 0;
    for (int64_t s = 0, n = 0; s < S; s++) {
        const int64_t len = offsets[s + 1] - offsets[s];
        for (int64_t q = 0; q < len; q += ATT_BQ, n++) {
            task_seq[n] = s;
            task_q0[n] = q;
            pairs += (len - q < ATT_BQ ? len - q : ATT_BQ) * len; /* a global layer's; local ones see fewer */
            if (pairs >= ATT_SLICE_PAIRS * nt || n + 1 == n_tiles) {
                slice_end[n_slices++] = n + 1;
                pairs = 0;
            }
        }
    }
    int cancelled = 0, bad = 0;

    for (int64_t l = 0; l < c->n_layers; l++) {
        const eg_layer *L = &md->layers[l];
        if ((cancelled = stop_requested(opts))) goto finish;
        const int glob = L->is_global;
        const float *rc = md->rope_cos[glob], *rs = md->rope_sin[glob];

        /* 2. attention block: a = rms(x); q,k,v = a W^T; q/k norm; RoPE */
#pragma omp parallel for schedule(static) num_threads(nt) if (T >= ROWS_PAR_MIN)
        for (int64_t t = 0; t < T; t++) rmsnorm(sc.x + t * D, L->attn_norm, sc.xn + t * D, D, eps);
        gemm(md, sc.xn, D, T, &L->qkv, sc.qkv, QKV, nt, sc.xq, sc.xs);
#pragma omp parallel for schedule(static) num_threads(nt) if (T >= ROWS_PAR_MIN)
        for (int64_t t = 0; t < T; t++) {
            float *q = sc.qkv + t * QKV;
            const float *cr = rc + (int64_t)pos[t] * (Hd / 2), *sr = rs + (int64_t)pos[t] * (Hd / 2);
            for (int64_t h = 0; h < c->n_heads; h++) {
                rmsnorm(q + h * Hd, L->q_norm, q + h * Hd, Hd, eps);
                rope(q + h * Hd, cr, sr, Hd / 2);
            }
            for (int64_t h = 0; h < KV; h++) {
                float *kh = q + QD + h * Hd;
                rmsnorm(kh, L->k_norm, kh, Hd, eps);
                rope(kh, cr, sr, Hd / 2);
            }
        }
        /* keys and values as GEMM panels, once for all query tiles: (block of 16 key rows, kv head) */
#pragma omp parallel for schedule(static) num_threads(nt) if (T >= ROWS_PAR_MIN)
        for (int64_t task = 0; task < n_pblocks * KV; task++) {
            const int64_t b = task / KV, g = task % KV;
            int64_t s = 0, hi = S; /* the sequence holding block b: poff[s] <= 16 b < poff[s + 1] */
            while (hi - s > 1) {
                const int64_t mid = (s + hi) / 2;
                if (poff[mid] <= b * EG_PANEL) s = mid;
                else hi = mid;
            }
            const int64_t j0 = b * EG_PANEL - poff[s], len = offsets[s + 1] - offsets[s];
            const float *kr = sc.qkv + (offsets[s] - offsets[0]) * QKV + QD + g * Hd;
            pack_kv(kr, kr + KD, QKV, len, Hd, j0, j0 + EG_PANEL, sc.kvp + (g * Tp + poff[s]) * Hd,
                    sc.kvp + KV * Tp * Hd + (g * Tp + poff[s]) * Hp);
        }
        for (int64_t sl = 0; sl < n_slices; sl++) { /* tasks: (query tile, kv head) */
            const int64_t a0 = (sl ? slice_end[sl - 1] : 0) * KV, a1 = slice_end[sl] * KV;
            if ((cancelled = stop_requested(opts))) goto finish;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (a1 - a0 > 1)
            for (int64_t task = a0; task < a1; task++) {
                const int64_t n = task / KV, g = task % KV, s = task_seq[n];
                const int64_t len = offsets[s + 1] - offsets[s], q0 = task_q0[n];
                const int64_t q1 = q0 + ATT_BQ < len ? q0 + ATT_BQ : len;
                attention_tile(md, sc.qkv, QKV, offsets[s] - offsets[0], len, q0, q1, g, glob,
                               sc.kvp + (g * Tp + poff[s]) * Hd, sc.kvp + KV * Tp * Hd + (g * Tp + poff[s]) * Hp,
                               sc.att_tile + (int64_t)EG_THREAD_ID() * tile, sc.att, QD);
            }
        }
        if ((cancelled = stop_requested(opts))) goto finish;
        gemm(md, sc.att, QD, T, &L->o, sc.tmp, D, nt, sc.xq, sc.xs);
        /* x += rms(attn_out) (post-norm before the residual add), then m = rms(x) */
#pragma omp parallel for schedule(static) num_threads(nt) if (T >= ROWS_PAR_MIN)
        for (int64_t t = 0; t < T; t++) {
            float *xt = sc.x + t * D, *ot = sc.tmp + t * D;
            rmsnorm(ot, L->post_attn_norm, ot, D, eps);
            for (int64_t i = 0; i < D; i++) xt[i] += ot[i];
            rmsnorm(xt, L->pre_ffn_norm, sc.xn + t * D, D, eps);
        }

        /* 3. MLP: down(gelu(gate m) * up m), in token chunks */
        for (int64_t t0 = 0; t0 < T; t0 += chunk) {
            const int64_t n = T - t0 < chunk ? T - t0 : chunk;
            if ((cancelled = stop_requested(opts))) goto finish;
            gemm(md, sc.xn + t0 * D, D, n, &L->gate_up, sc.gu, 2 * I, nt, sc.xq, sc.xs);
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= ROWS_PAR_MIN)
            for (int64_t t = 0; t < n; t++) md->k->gelu_gate(sc.gu + t * 2 * I, sc.gu + t * 2 * I + I, I);
            gemm(md, sc.gu, 2 * I, n, &L->down, sc.tmp + t0 * D, D, nt, sc.xq, sc.xs);
        }
#pragma omp parallel for schedule(static) num_threads(nt) if (T >= ROWS_PAR_MIN)
        for (int64_t t = 0; t < T; t++) {
            float *xt = sc.x + t * D, *ft = sc.tmp + t * D;
            rmsnorm(ft, L->post_ffn_norm, ft, D, eps);
            for (int64_t i = 0; i < D; i++) xt[i] += ft[i];
        }
    }

    if ((cancelled = stop_requested(opts))) goto finish;

    /* 4. final norm, then mean pooling over every token (BOS, prompt, text, EOS) */
    float *pooled = sc.head, *hbuf = sc.head + S * wmax;
#pragma omp parallel for schedule(static) num_threads(nt) if (T >= ROWS_PAR_MIN)
    for (int64_t s = 0; s < S; s++) {
        const int64_t a = offsets[s] - offsets[0], b = offsets[s + 1] - offsets[0];
        double *acc = (double *)(sc.pool + (int64_t)EG_THREAD_ID() * 4 * D); /* [D] doubles, then [D] floats */
        float *row = sc.pool + (int64_t)EG_THREAD_ID() * 4 * D + 2 * D;
        for (int64_t i = 0; i < D; i++) acc[i] = 0.0;
        for (int64_t t = a; t < b; t++) {
            rmsnorm(sc.x + t * D, md->final_norm, row, D, eps);
            for (int64_t i = 0; i < D; i++) acc[i] += row[i];
        }
        for (int64_t i = 0; i < D; i++) pooled[s * wmax + i] = (float)(acc[i] / (double)(b - a));
    }

    /* 5. Dense head: each module y = W x (+ b), identity activation */
    float *cur = pooled, *nxt = hbuf;
    int64_t width = D;
    for (int i = 0; i < md->n_dense; i++) {
        const eg_dense *dn = &md->dense[i];
        gemm(md, cur, wmax, S, &dn->w, nxt, wmax, nt, NULL, NULL);
        if (dn->bias)
            for (int64_t s = 0; s < S; s++)
                for (int64_t j = 0; j < dn->w.n; j++) nxt[s * wmax + j] += dn->bias[j];
        width = dn->w.n;
        float *t = cur;
        cur = nxt;
        nxt = t;
    }

    /* 6. Normalize module, Matryoshka prefix, optional re-normalization */
    for (int64_t s = 0; s < S; s++) {
        float *v = cur + s * wmax;
        if (md->info.normalize) {
            double ss = 0.0;
            for (int64_t i = 0; i < width; i++) ss += (double)v[i] * v[i];
            float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
            for (int64_t i = 0; i < width; i++) v[i] *= inv;
        }
        float *dst = out + (rows ? rows[s] : s) * out_stride;
        float inv = 1.0f;
        if (opts->normalize) {
            double ss = 0.0;
            for (int64_t i = 0; i < opts->dim; i++) ss += (double)v[i] * v[i];
            inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
        }
        for (int64_t i = 0; i < opts->dim; i++) {
            dst[i] = opts->normalize ? v[i] * inv : v[i];
            if (isnan(dst[i])) bad = 1;
        }
    }
finish:
    free(task_seq);
    free(pos);
    eg_aligned_free(arena);
    if (cancelled) return eg_fail(err, errlen, EG_ERR_CANCELLED, "cancelled by the caller");
    if (bad)
        return eg_fail(err, errlen, EG_ERR_INTERNAL,
                       "the forward pass produced NaN: the model's weights contain non-finite values");
    return EG_OK;
}
