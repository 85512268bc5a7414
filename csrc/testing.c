/* testing.c - the hooks of testing.h: one kernel of a chosen ISA on caller buffers, so tests can
 * compare every optimized kernel with its scalar twin at awkward sizes and unaligned strides, and
 * the fuzzers' entry points (the file parsers, one eg_encode call against its contract). Not used
 * by the engine. No Python here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testing.h"

static const eg_kernels *kernels_or_null(eg_isa isa) {
    return eg_isa_supported(isa) ? eg_kernels_for(isa) : NULL;
}

eg_status eg_test_gemm(eg_isa isa, eg_weights weights, int pack, const float *x, int64_t ldx, int64_t m, const float *w,
                       int64_t n, int64_t k, float *y, int64_t ldy, char *err, size_t errlen) {
    const eg_kernels *kt = kernels_or_null(isa);
    if (!kt) return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "ISA %s is not supported here", eg_isa_name(isa));
    if (m < 0 || n < 1 || k < 1 || ldx < k || ldy < n)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "bad gemm sizes");
    if (weights < 0 || weights >= EG_WEIGHTS_COUNT) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "bad weights mode");
    const eg_wtype type = eg_wtype_of(weights);
    eg_matrix mat;
    eg_status s = eg_matrix_alloc(&mat, n, k, type, err, errlen);
    if (s) return s;
    if (pack < 0) pack = kt->pairs16 | kt->bf16dot << 1;
    /* bit 0: the int16-pair value ranges; bits 1-2: the bf16dot arithmetic (EG_BF16DOT_*; the scalar
     * table has the twins of both, an ISA only its own) */
    const int pairs16 = pack & 1, bf16dot = pack >> 1;
    const int no_dot = bf16dot && type == EG_W_BF16 && (!kt->gemm_bf16dot || (kt->bf16dot && kt->bf16dot != bf16dot));
    if (pack > 5 || (kt->pairs16 && !pairs16) || no_dot) {
        eg_matrix_free(&mat);
        if (pack > 5) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "pack must be -1 or 0..5, not %d", pack);
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "ISA %s %s", eg_isa_name(isa),
                       no_dot ? (bf16dot == EG_BF16DOT_AMX ? "has no AMX bfloat16 GEMM"
                                                           : "has no bfloat16 pair-dot (vdpbf16ps) GEMM")
                              : "sums int16 pairs: pack with its ranges");
    }
    eg_matrix_ranges(&mat, pairs16, bf16dot);
    eg_matrix_layout(&mat, kt->kgroup);
    for (int64_t r = 0; r < n; r++) eg_matrix_pack_row(&mat, r, w + r * k);
    const int64_t ldq = eg_xq_stride(&mat); /* bytes; 0: the kernel reads x */
    uint8_t *xq = NULL;
    float *xs = NULL;
    const int64_t ldxs = eg_ldq(k) / EG_QBLOCK;
    if (ldq) {
        xq = malloc((size_t)((m ? m : 1) * ldq));
        xs = malloc((size_t)((m ? m : 1) * ldxs) * sizeof *xs);
        if (!xq || !xs) {
            free(xq);
            free(xs);
            eg_matrix_free(&mat);
            return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
        }
        eg_quantize_for(kt, &mat, x, ldx, m, xq, ldq, xs);
    }
    /* two panel ranges, as the threaded driver would split them */
    const int64_t ranges[3] = {0, mat.n_panels / 2, mat.n_panels};
    for (int i = 0; i < 2; i++)
        eg_gemm_panels(kt, x, ldx, xq, ldq, xs, ldxs, m, &mat, ranges[i], ranges[i + 1], y, ldy);
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

/* A model folder's JSON file, given as bytes, through every reader the loader has for one: modules.json
 * (each module's config being a fixed valid one), a Pooling and a Dense config.json,
 * model.safetensors.index.json and config.json. EG_OK when at least one accepts it, else config.json's
 * refusal (it runs last, so err holds its message). */
static eg_status test_config(const void *buf, size_t size, char *err, size_t errlen) {
    char jerr[256];
    json_doc *doc = json_parse(buf, size, jerr, sizeof jerr);
    if (!doc) return eg_fail(err, errlen, EG_ERR_BAD_FILE, "<bytes>: %s", jerr);
    /* accepted as a Pooling config and as a Dense one, so modules.json reaches every stage */
    static const char module_text[] = "{\"pooling_mode\": \"mean\", \"in_features\": 8, \"out_features\": 8, "
                                      "\"bias\": false, \"activation_function\": \"torch.nn.modules.linear.Identity\"}";
    json_doc *module = json_parse(module_text, sizeof module_text - 1, jerr, sizeof jerr);
    if (!module) {
        json_free(doc);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    }
    const json_node *root = json_root(doc), *wm;
    eg_pipeline pl;
    int accepted = eg_pipeline_from_json(root, "<dir>", "<bytes>/modules.json", json_root(module), &pl, err, errlen) ==
                   EG_OK;
    eg_pipeline_free(&pl);
    accepted |= eg_pooling_check(root, "<bytes>/1_Pooling/config.json", err, errlen) == EG_OK;
    memset(&pl, 0, sizeof pl);
    accepted |= eg_dense_config(root, "<bytes>/2_Dense/config.json", "<dir>/2_Dense", &pl, err, errlen) == EG_OK;
    eg_pipeline_free(&pl);
    accepted |= eg_index_check(root, "<bytes>/model.safetensors.index.json", &wm, err, errlen) == EG_OK;
    eg_config cfg;
    eg_status s = eg_config_from_json(root, "<bytes>/config.json", &cfg, err, errlen);
    if (s == EG_OK) eg_config_free(&cfg);
    json_free(module);
    json_free(doc);
    return accepted ? EG_OK : s;
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
            (void)eg_config_from_gguf(&g, &cfg, err, errlen);
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
    if (strcmp(kind, "config") == 0) return test_config(buf, size, err, errlen);
    return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "unknown parser \"%.20s\"", kind);
}

/* ---------------------------------------------------------------- encode fuzzing */

/* Reads fuzz bytes in order; 0 once they run out. */
typedef struct {
    const uint8_t *p, *end;
} byte_reader;

static uint8_t next_byte(byte_reader *r) { return r->p < r->end ? *r->p++ : 0; }

static int16_t next_i16(byte_reader *r) {
    uint16_t lo = next_byte(r), hi = next_byte(r);
    return (int16_t)(lo | hi << 8);
}

/* Whether eg_encode must accept the call, from the contract in embgemma.h alone. */
static int encode_call_valid(const eg_model *m, const int32_t *ids, const int64_t *offsets, int64_t n,
                             const eg_encode_opts *o, const float *out, int64_t stride, const int64_t *rows) {
    if (n < 0 || (n > 0 && !out)) return 0;
    if (n == 0) return 1;
    if (o->n_threads < 1 || o->n_threads > 4096 || o->dim < 1 || o->dim > m->info.out_dim || stride < o->dim || !ids)
        return 0;
    for (int64_t s = 0; s < n; s++) {
        if (offsets[s] < 0 || offsets[s + 1] <= offsets[s] || offsets[s + 1] - offsets[s] > m->info.max_positions)
            return 0;
        if (rows && rows[s] < 0) return 0;
    }
    for (int64_t t = offsets[0]; t < offsets[n]; t++)
        if (ids[t] < 0 || ids[t] >= m->info.vocab) return 0;
    return 1;
}

/* A cancel poll that asks to stop at its stop_at-th call. */
typedef struct {
    int polls, stop_at;
} cancel_counter;

static int cancel_at(void *arg) {
    cancel_counter *c = arg;
    return ++c->polls >= c->stop_at;
}

eg_status eg_test_encode(const eg_model *m, const void *buf, size_t size, char *err, size_t errlen) {
    /* Layout: n_seqs (int8 % 17: negative ones too), dim (int8), flags (normalize, rows, a NULL out or
     * ids), flags2 (out_stride - dim + 1 in 0..3, a cancel poll stopping at its k-th call for k in 1..7
     * or none for 0, threads + 1 in 0..7), n + 1 offsets (int16; -32768 and 32767
     * stand for INT64_MIN and INT64_MAX), n rows (int8) when asked, then one byte per token id: below
     * 0xF0 the id itself, else an edge value (negative, huge, vocab, vocab - 1, ...). The ids array is
     * exactly as long as the largest offset below 32767 and the output holds every row asked for, as
     * the contract requires of a caller; everything else is eg_encode's to check. */
    byte_reader r = {buf, (const uint8_t *)buf + size};
    const int64_t n = (int8_t)next_byte(&r) % 17, V = m->info.vocab;
    const int8_t dim = (int8_t)next_byte(&r);
    const uint8_t flags = next_byte(&r), flags2 = next_byte(&r);
    eg_encode_opts opts = {dim, flags & 1, (int)(flags2 >> 5) - 1, NULL, NULL};
    cancel_counter cancel = {0, flags2 >> 2 & 7};
    if (cancel.stop_at) {
        opts.cancel = cancel_at;
        opts.cancel_arg = &cancel;
    }
    const int use_rows = flags >> 1 & 1, null_out = (flags >> 2 & 7) == 7, null_ids = (flags >> 5 & 7) == 7;
    const int64_t stride = dim + (flags2 & 3) - 1;
    const int64_t n_off = n >= 0 ? n + 1 : 1;
    int64_t *offsets = malloc((size_t)n_off * sizeof *offsets), *rows = NULL;
    int64_t n_ids = 0, n_out = n > 0 ? n : 1;
    if (!offsets) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n_off; i++) {
        const int16_t v = next_i16(&r);
        offsets[i] = v == INT16_MIN ? INT64_MIN : v == INT16_MAX ? INT64_MAX : v;
        if (v != INT16_MAX && v > n_ids) n_ids = v;
    }
    if (use_rows && n > 0) {
        rows = malloc((size_t)n * sizeof *rows);
        if (!rows) {
            free(offsets);
            return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
        }
        for (int64_t s = 0; s < n; s++) {
            rows[s] = (int8_t)next_byte(&r);
            if (rows[s] + 1 > n_out) n_out = rows[s] + 1;
        }
    }
    static const int64_t edge[16] = {-1, INT32_MIN, INT32_MAX, 0, 0, 0, 1, 2, 3, -2, 1 << 24, -(1 << 24), 65535, 32767, 100, 0};
    const size_t n_tok = (size_t)(r.end - r.p);
    int32_t *ids = malloc((size_t)(n_ids ? n_ids : 1) * sizeof *ids);
    const int64_t row_floats = stride > dim && stride > 0 ? stride : dim > 0 ? dim : 1;
    float *out = malloc((size_t)(n_out * row_floats) * sizeof *out);
    if (!ids || !out) {
        free(offsets);
        free(rows);
        free(ids);
        free(out);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    }
    for (int64_t t = 0; t < n_ids; t++) {
        const uint8_t b = n_tok ? r.p[(size_t)t % n_tok] : 2;
        ids[t] = b < 0xF0 ? b : (int32_t)(b == 0xF3 ? V : b == 0xF4 ? V - 1 : b == 0xF5 ? V + 1 : edge[b - 0xF0]);
    }
    const float poison = -12345.0f; /* rows nobody asked for must keep it */
    for (int64_t i = 0; i < n_out * row_floats; i++) out[i] = poison;
    const int32_t *ids_arg = null_ids ? NULL : ids;
    float *out_arg = null_out ? NULL : out;
    const int valid = encode_call_valid(m, ids_arg, offsets, n, &opts, out_arg, stride, rows);
    eg_status s = eg_encode(m, ids_arg, offsets, n, &opts, out_arg, stride, rows, err, errlen);
    if (s == EG_ERR_CANCELLED) {
        /* only when asked, on exactly the poll that said stop, with no row written */
        if (!valid || !cancel.stop_at || cancel.polls != cancel.stop_at)
            s = eg_fail(err, errlen, EG_ERR_INTERNAL, "oracle: cancelled at poll %d; asked for %d (valid call: %d)",
                        cancel.polls, cancel.stop_at, valid);
        else
            s = EG_OK;
        for (int64_t i = 0; i < n_out * row_floats && s == EG_OK; i++)
            if (out[i] != poison) s = eg_fail(err, errlen, EG_ERR_INTERNAL, "oracle: a cancelled call wrote out[%lld]",
                                              (long long)(i / row_floats));
    } else if (s == EG_OK && valid && n > 0 && cancel.stop_at == 1) {
        s = eg_fail(err, errlen, EG_ERR_INTERNAL, "oracle: not cancelled although the first poll said stop");
    } else if (s == EG_OK && !valid) s = eg_fail(err, errlen, EG_ERR_INTERNAL, "oracle: eg_encode accepted a call the contract forbids");
    else if (s != EG_OK && s != EG_ERR_NOMEM && valid)
        s = eg_fail(err, errlen, EG_ERR_INTERNAL, "oracle: eg_encode refused a valid call (%.200s)", err);
    else if (s == EG_OK) {
        /* each asked-for row: finite, unit length when normalized; nothing else written */
        for (int64_t i = 0; i < n_out * row_floats && s == EG_OK; i++) {
            const int64_t row = i / row_floats, col = i % row_floats;
            int asked = 0;
            for (int64_t q = 0; q < n && !asked; q++) asked = (rows ? rows[q] : q) == row;
            const float v = out[i]; /* a successful call had out_stride == row_floats */
            if (!asked || col >= dim) {
                if (v != poison) s = eg_fail(err, errlen, EG_ERR_INTERNAL, "oracle: out[%lld][%lld] written", (long long)row, (long long)col);
            } else if (!isfinite(v)) {
                s = eg_fail(err, errlen, EG_ERR_INTERNAL, "oracle: out[%lld][%lld] is not finite", (long long)row, (long long)col);
            }
        }
    }
    free(offsets);
    free(rows);
    free(ids);
    free(out);
    return s;
}
