/* testing.c - hooks that run one kernel of a chosen ISA on caller buffers, so
 * tests can compare every optimized kernel with its scalar twin at awkward
 * sizes and unaligned strides. Not used by the engine. No Python here.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const eg_kernels *kernels_or_null(eg_isa isa) {
    return eg_isa_supported(isa) ? eg_kernels_for(isa) : NULL;
}

eg_status eg_test_gemm(eg_isa isa, eg_weights weights, const float *x, int64_t ldx, int64_t m, const float *w, int64_t n, int64_t k,
                       float *y, int64_t ldy, char *err, size_t errlen) {
    const eg_kernels *kt = kernels_or_null(isa);
    if (!kt) return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "ISA %s is not supported here", eg_isa_name(isa));
    if (m < 0 || n < 1 || k < 1 || ldx < k || ldy < n)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "bad gemm sizes");
    if (weights < 0 || weights >= EG_WEIGHTS_COUNT) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "bad weights mode");
    const eg_wtype type = eg_wtype_of(weights);
    eg_matrix mat;
    eg_status s = eg_matrix_alloc(&mat, n, k, type, err, errlen);
    if (s) return s;
    for (int64_t r = 0; r < n; r++) eg_matrix_pack_row(&mat, r, w + r * k);
    const int64_t ldq = (k + 1) & ~(int64_t)1;
    int16_t *xq = NULL;
    float *xs = NULL;
    const int64_t ldxs = type == EG_W_I8 ? 1 : k / EG_QBLOCK;
    if (eg_wtype_is_int(type)) {
        xq = malloc((size_t)((m ? m : 1) * ldq) * sizeof *xq);
        xs = malloc((size_t)((m ? m : 1) * ldxs) * sizeof *xs);
        if (!xq || !xs) {
            free(xq);
            free(xs);
            eg_matrix_free(&mat);
            return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
        }
        eg_quantize_for(&mat, x, ldx, m, xq, ldq, xs);
    }
    /* two panel ranges, as the threaded driver would split them */
    const int64_t ranges[3] = {0, mat.n_panels / 2, mat.n_panels};
    for (int i = 0; i < 2; i++) eg_gemm_panels(kt, x, ldx, xq, ldq, xs, ldxs, m, &mat, ranges[i], ranges[i + 1], y, ldy);
    free(xq);
    free(xs);
    eg_matrix_free(&mat);
    return EG_OK;
}

eg_status eg_test_vec(eg_isa isa, int op, float a, const float *x, float *y, int64_t n, float *result, char *err,
                      size_t errlen) {
    const eg_kernels *kt = kernels_or_null(isa);
    if (!kt) return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "ISA %s is not supported here", eg_isa_name(isa));
    switch (op) {
    case 1: kt->axpy(a, x, y, n); break;
    case 2: kt->scale(a, y, n); break;
    case 3: kt->gelu_gate(y, x, n); break;
    case 4: *result = kt->exp_sub(y, a, n); break;
    default: return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "unknown op %d", op);
    }
    return EG_OK;
}

eg_status eg_test_parse(const char *kind, const void *buf, size_t size, char *err, size_t errlen) {
    if (strcmp(kind, "safetensors") == 0) {
        eg_tensor_set set = {0};
        eg_status s = eg_st_parse_header(buf, size, "<bytes>", &set, err, errlen);
        eg_st_free(&set);
        return s;
    }
    if (strcmp(kind, "gguf") == 0) {
        eg_gguf g;
        eg_status s = eg_gguf_parse(buf, size, "<bytes>", &g, err, errlen);
        if (s == EG_OK) {
            /* what the loader reads next: the architecture and every tensor's rows */
            eg_config cfg;
            (void)eg_test_gguf_config(&g, &cfg, err, errlen);
            eg_config_free(&cfg);
            float row[64];
            for (int64_t i = 0; i < g.tensors.n; i++) {
                const eg_tensor *t = &g.tensors.tensors[i];
                if (t->dtype == EG_DTYPE_OTHER) continue;
                const int64_t k = t->ndim ? t->shape[t->ndim - 1] : 0;
                if (k > 0 && k <= 64) eg_row_to_f32(t->dtype, t->data, k, row);
            }
            eg_gguf_clear(&g);
        }
        return s;
    }
    return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "unknown parser \"%.20s\"", kind);
}
