/* encode.c - eg_encode: checks a call's arguments, then runs the forward pass.
 * No Python here.
 */
#include "internal.h"

eg_status eg_encode(const eg_model *m, const int32_t *ids, const int64_t *offsets, int64_t n_seqs,
                    const eg_encode_opts *opts, float *out, int64_t out_stride, const int64_t *rows, char *err,
                    size_t errlen) {
    if (!m || !offsets || !opts || (!out && n_seqs > 0))
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "eg_encode: null argument");
    if (n_seqs < 0) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "n_seqs is negative");
    if (n_seqs == 0) return EG_OK;
    if (opts->n_threads < 1 || opts->n_threads > 4096)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "threads must be 1..4096, got %d", opts->n_threads);
    if (opts->dim < 1 || opts->dim > m->info.out_dim)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "dim must be 1..%lld, got %lld", (long long)m->info.out_dim,
                       (long long)opts->dim);
    if (out_stride < opts->dim)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "output row stride %lld is smaller than dim %lld",
                       (long long)out_stride, (long long)opts->dim);
    if (!ids) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "eg_encode: null ids");
    for (int64_t s = 0; s < n_seqs; s++) {
        /* compare before subtracting: any int64 offsets may come in (found by tests/fuzz) */
        if (offsets[s] < 0) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "negative offset");
        if (offsets[s + 1] <= offsets[s])
            return eg_fail(err, errlen, EG_ERR_INVALID_ARG,
                           "sequence %lld is empty (offsets must increase: every text has at least BOS and EOS)",
                           (long long)s);
        const int64_t len = offsets[s + 1] - offsets[s];
        if (len > m->info.max_positions)
            return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "sequence %lld has %lld tokens; the model supports at most %lld",
                           (long long)s, (long long)len, (long long)m->info.max_positions);
        if (rows && rows[s] < 0) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "negative output row");
    }
    for (int64_t t = offsets[0]; t < offsets[n_seqs]; t++)
        if (ids[t] < 0 || ids[t] >= m->info.vocab)
            return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "token id %d at position %lld is outside the vocabulary 0..%lld",
                           ids[t], (long long)(t - offsets[0]), (long long)m->info.vocab - 1);
    eg_encode_opts o = *opts;
    o.n_threads = eg_threads_for_call(o.n_threads);
    return eg_forward(m, ids, offsets, n_seqs, &o, out, out_stride, rows, err, errlen);
}
