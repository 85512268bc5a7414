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

eg_status eg_test_gemm(eg_isa isa, const float *x, int64_t ldx, int64_t m, const float *w, int64_t n, int64_t k,
                       float *y, int64_t ldy, char *err, size_t errlen) {
    const eg_kernels *kt = kernels_or_null(isa);
    if (!kt) return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "ISA %s is not supported here", eg_isa_name(isa));
    if (m < 0 || n < 1 || k < 1 || ldx < k || ldy < n)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "bad gemm sizes");
    eg_matrix mat = {0};
    mat.n = n;
    mat.k = k;
    mat.n_panels = (n + EG_PANEL - 1) / EG_PANEL;
    mat.data = calloc((size_t)(mat.n_panels * k * EG_PANEL), sizeof(float));
    if (!mat.data) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    for (int64_t r = 0; r < n; r++) eg_matrix_set_row(&mat, r, w + r * k);
    /* two panel ranges, as the threaded driver would split them */
    int64_t mid = mat.n_panels / 2;
    kt->gemm(x, ldx, m, &mat, 0, mid, y, ldy);
    kt->gemm(x, ldx, m, &mat, mid, mat.n_panels, y, ldy);
    free(mat.data);
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
