/* load.c - builds an eg_model from a sentence-transformers folder or a GGUF file.
 *
 * Folder: modules.json (pipeline) -> config.json (architecture) -> backbone
 * safetensors (one file or shards) -> Dense modules. GGUF: metadata
 * (architecture) -> tensors under llama.cpp's names -> Dense tensors (or a
 * folder's Dense modules, dense_from). Every tensor is checked
 * for name, dtype and shape before it is read; every tensor in the files must
 * be used (an unknown one means a model we would run wrongly). Matrices are
 * converted to the chosen weights mode and packed into GEMM panels; the token embedding stays
 * in the memory map and is gathered row by row. No Python here.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform.h"

static void *aligned_calloc(size_t bytes) { /* freed with eg_aligned_free */
    void *p = eg_aligned_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

/* Converts row `row` of a 2-D (or 1-D when row == 0) tensor with `k` columns to float32. */
static void tensor_row_f32(const eg_tensor *t, int64_t row, int64_t k, float *dst) {
    eg_row_to_f32(t->dtype, t->data + (size_t)row * (size_t)eg_row_bytes(t->dtype, k), k, dst);
}

/* Tensor roles of one decoder layer, and their names in each format. */
enum { R_ATTN_NORM, R_Q, R_K, R_V, R_Q_NORM, R_K_NORM, R_O, R_POST_ATTN_NORM, R_PRE_FFN_NORM, R_GATE, R_UP, R_DOWN,
       R_POST_FFN_NORM, R_COUNT };

static const char *const st_layer_names[R_COUNT] = {
    "layers.%lld.input_layernorm.weight",  "layers.%lld.self_attn.q_proj.weight",
    "layers.%lld.self_attn.k_proj.weight", "layers.%lld.self_attn.v_proj.weight",
    "layers.%lld.self_attn.q_norm.weight", "layers.%lld.self_attn.k_norm.weight",
    "layers.%lld.self_attn.o_proj.weight", "layers.%lld.post_attention_layernorm.weight",
    "layers.%lld.pre_feedforward_layernorm.weight", "layers.%lld.mlp.gate_proj.weight",
    "layers.%lld.mlp.up_proj.weight",      "layers.%lld.mlp.down_proj.weight",
    "layers.%lld.post_feedforward_layernorm.weight",
};

/* llama.cpp's names (convert_hf_to_gguf.py), also what Ollama writes */
static const char *const gguf_layer_names[R_COUNT] = {
    "blk.%lld.attn_norm.weight",   "blk.%lld.attn_q.weight",      "blk.%lld.attn_k.weight",
    "blk.%lld.attn_v.weight",      "blk.%lld.attn_q_norm.weight", "blk.%lld.attn_k_norm.weight",
    "blk.%lld.attn_output.weight", "blk.%lld.post_attention_norm.weight", "blk.%lld.ffn_norm.weight",
    "blk.%lld.ffn_gate.weight",    "blk.%lld.ffn_up.weight",      "blk.%lld.ffn_down.weight",
    "blk.%lld.post_ffw_norm.weight",
};

typedef struct {
    eg_tensor_set *set;
    const char *prefix; /* "" or "model." as found in the file */
    const char *const *layer_names;
    int norm_stored_plus_one; /* GGUF norms hold 1 + w already */
    char *err;
    size_t errlen;
    int dtype_mask;     /* bit per eg_dtype seen */
    const eg_kernels *k; /* integer matrices are packed for these kernels' activation range */
} finder;

/* Finds `name` (with the file's prefix) and checks its dtype and shape. */
static eg_status find_tensor(finder *f, const char *name, int ndim, int64_t d0, int64_t d1, eg_tensor **out) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", f->prefix, name);
    eg_tensor *t = eg_st_find(f->set, full);
    if (!t)
        return eg_fail(f->err, f->errlen, EG_ERR_BAD_FILE,
                       "tensor \"%s\" is missing from the weights (%s); the file does not match config.json", full,
                       f->set->n_maps ? f->set->map_paths[0] : "?");
    if (t->dtype == EG_DTYPE_OTHER)
        return eg_fail(f->err, f->errlen, EG_ERR_UNSUPPORTED,
                       "%s: tensor \"%s\" has type %s; embgemma reads F32, F16 and BF16 (and, in GGUF files, Q8_0 "
                       "and Q4_0) tensors%s",
                       t->file, full, t->dtype_name,
                       f->norm_stored_plus_one ? ": convert the model again with llama.cpp's convert_hf_to_gguf.py "
                                                 "--outtype f32/f16/bf16/q8_0, or llama-quantize --pure ... Q4_0 / Q8_0"
                                                 : "");
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char got[96] = "";
        size_t n = 0;
        for (int i = 0; i < t->ndim && n < sizeof got - 24; i++)
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (ndim == 1)
            return eg_fail(f->err, f->errlen, EG_ERR_BAD_FILE, "%s: tensor \"%s\" has shape [%s], expected [%lld] from the config",
                           t->file, full, got, (long long)d0);
        return eg_fail(f->err, f->errlen, EG_ERR_BAD_FILE,
                       "%s: tensor \"%s\" has shape [%s], expected [%lld, %lld] from the config", t->file, full, got,
                       (long long)d0, (long long)d1);
    }
    t->used = 1;
    if (ndim == 2) f->dtype_mask |= 1 << t->dtype; /* the matrices say what the model is stored as */
    *out = t;
    return EG_OK;
}

/* A norm weight w [n] becomes the gain 1 + w (Gemma's RMSNorm). */
static eg_status load_norm(finder *f, const char *name, int64_t n, float **out) {
    eg_tensor *t;
    eg_status s = find_tensor(f, name, 1, n, 0, &t);
    if (s) return s;
    float *g = aligned_calloc((size_t)n * sizeof(float));
    if (!g) return eg_fail(f->err, f->errlen, EG_ERR_NOMEM, "out of memory loading %s", name);
    tensor_row_f32(t, 0, n, g);
    if (!f->norm_stored_plus_one)
        for (int64_t i = 0; i < n; i++) g[i] = 1.0f + g[i];
    *out = g;
    return EG_OK;
}

/* Writes the rows of tensor t into packed matrix m starting at output row row0,
 * then lets the kernel drop the file pages it read (they are copied now; a
 * read-only private mapping refaults them from the file if ever touched again). */
static eg_status pack_rows(eg_matrix *m, int64_t row0, const eg_tensor *t, char *err, size_t errlen) {
    const int64_t k = m->k, rows = t->shape[0];
    /* ggml blocks go in as they are: a Q4_0 block is also an exact Q8_0 block */
    const int blocks = (m->type == EG_W_Q8_0 && (t->dtype == EG_Q8_0 || t->dtype == EG_Q4_0)) ||
                       (m->type == EG_W_Q4_0 && t->dtype == EG_Q4_0);
    float *buf = malloc((size_t)k * sizeof(float) + (size_t)k + (size_t)(k / EG_QBLOCK + 1) * sizeof(float));
    if (!buf) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    int8_t *q = (int8_t *)(buf + k);
    float *d = (float *)(q + k + (4 - k % 4) % 4);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *src = t->data + (size_t)r * (size_t)eg_row_bytes(t->dtype, k);
        if (blocks) {
            eg_row_blocks(t->dtype, src, k, q, d);
            eg_matrix_pack_row_q(m, row0 + r, q, d);
        } else {
            eg_row_to_f32(t->dtype, src, k, buf);
            eg_matrix_pack_row(m, row0 + r, buf);
        }
    }
    free(buf);
    eg_st_release(t);
    return EG_OK;
}

/* The weights type that holds tensors t exactly ("as stored"): F32 / F16 as
 * F32, BF16 as BF16, ggml blocks as themselves (Q4_0 with Q8_0: Q8_0). */
static eg_wtype auto_type(eg_tensor *const *t, int count) {
    int mask = 0;
    for (int i = 0; i < count; i++) mask |= 1 << t[i]->dtype;
    if (mask == 1 << EG_BF16) return EG_W_BF16;
    if (mask == 1 << EG_Q8_0 || mask == ((1 << EG_Q8_0) | (1 << EG_Q4_0))) return EG_W_Q8_0;
    if (mask == 1 << EG_Q4_0) return EG_W_Q4_0;
    return EG_W_F32;
}

/* Loads the matrices `names` (each [rows_i, k]) stacked into one packed matrix;
 * type (eg_wtype)-1 means as stored (auto_type). */
static eg_status load_stacked(finder *f, eg_matrix *m, int count, const char *const *names, const int64_t *rows,
                              int64_t k, eg_wtype type) {
    eg_tensor *t[4];
    int64_t total = 0;
    for (int i = 0; i < count; i++) {
        eg_status s = find_tensor(f, names[i], 2, rows[i], k, &t[i]);
        if (s) return s;
        total += rows[i];
    }
    /* bfloat16 activations (an ISA's bf16dot GEMM) only where bfloat16 was asked for: weights that are
     * bfloat16 as stored keep their exact float32 activations */
    const int asked = type != (eg_wtype)-1;
    if (!asked) type = auto_type(t, count);
    eg_status s = eg_matrix_alloc(m, total, k, type, f->err, f->errlen);
    if (s == EG_OK && f->k) {
        eg_matrix_ranges(m, f->k->pairs16, asked ? f->k->bf16dot : 0);
        eg_matrix_layout(m, f->k->kgroup);
    }
    for (int i = 0, row0 = 0; i < count && s == EG_OK; row0 += (int)rows[i], i++)
        s = pack_rows(m, row0, t[i], f->err, f->errlen);
    return s;
}

static eg_status load_layer(finder *f, const eg_config *c, int64_t l, eg_wtype wa, eg_wtype wm, eg_layer *L) {
    char n[R_COUNT][128];
    const int64_t D = c->hidden, Hd = c->head_dim, QD = c->n_heads * Hd, KD = c->n_kv_heads * Hd, I = c->intermediate;
    for (int r = 0; r < R_COUNT; r++) snprintf(n[r], sizeof n[r], f->layer_names[r], (long long)l);
    eg_status s;
    if ((s = load_norm(f, n[R_ATTN_NORM], D, &L->attn_norm)) || (s = load_norm(f, n[R_Q_NORM], Hd, &L->q_norm)) ||
        (s = load_norm(f, n[R_K_NORM], Hd, &L->k_norm)) ||
        (s = load_norm(f, n[R_POST_ATTN_NORM], D, &L->post_attn_norm)) ||
        (s = load_norm(f, n[R_PRE_FFN_NORM], D, &L->pre_ffn_norm)) ||
        (s = load_norm(f, n[R_POST_FFN_NORM], D, &L->post_ffn_norm)))
        return s;
    const char *qkv[] = {n[R_Q], n[R_K], n[R_V]};
    const int64_t qkv_rows[] = {QD, KD, KD};
    if ((s = load_stacked(f, &L->qkv, 3, qkv, qkv_rows, D, wa))) return s;
    const char *gu[] = {n[R_GATE], n[R_UP]};
    const int64_t gu_rows[] = {I, I};
    if ((s = load_stacked(f, &L->gate_up, 2, gu, gu_rows, D, wm))) return s;
    const char *o[] = {n[R_O]};
    const int64_t o_rows[] = {D};
    if ((s = load_stacked(f, &L->o, 1, o, o_rows, QD, wa))) return s;
    const char *dn[] = {n[R_DOWN]};
    if ((s = load_stacked(f, &L->down, 1, dn, o_rows, I, wm))) return s;
    L->is_global = c->layer_is_global[l];
    return EG_OK;
}

/* Opens model.safetensors, or the shards listed in model.safetensors.index.json. */
static eg_status open_backbone(const char *dir, eg_tensor_set *set, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (eg_file_exists(path)) {
        json_doc *doc;
        eg_status s = eg_read_json(path, &doc, err, errlen);
        if (s) return s;
        const json_node *wm;
        if ((s = eg_index_check(json_root(doc), path, &wm, err, errlen))) {
            json_free(doc);
            return s;
        }
        /* open each distinct shard once, in order of first mention */
        for (size_t i = 0; i < wm->n && s == EG_OK; i++) {
            const json_node *v = wm->items[i];
            int seen = 0;
            for (size_t j = 0; j < i && !seen; j++) seen = strcmp(wm->items[j]->str, v->str) == 0;
            if (seen) continue;
            char shard[4096];
            snprintf(shard, sizeof shard, "%s/%s", dir, v->str);
            s = eg_st_open(shard, set, err, errlen);
        }
        /* every tensor the index names must be where it says */
        for (size_t i = 0; i < wm->n && s == EG_OK; i++) {
            eg_tensor *t = eg_st_find(set, wm->keys[i]);
            const char *base = t ? strrchr(t->file, '/') : NULL;
            if (!t || strcmp(base ? base + 1 : t->file, wm->items[i]->str) != 0)
                s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%.80s\" is not in the shard %.80s", path,
                            wm->keys[i], wm->items[i]->str);
        }
        json_free(doc);
        return s;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (eg_file_exists(path)) return eg_st_open(path, set, err, errlen);
    snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
    if (eg_file_exists(path))
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                       "%s: PyTorch pickle weights are not read (unsafe to unpickle); re-save the model with "
                       "safetensors (model.save_pretrained(..., safe_serialization=True))",
                       path);
    return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s/model.safetensors: not found (nor a sharded index)", dir);
}

static eg_status load_dense(eg_model *m, const eg_pipeline *pl, int i, int64_t in, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", pl->dense_dir[i]);
    if (!eg_file_exists(path)) {
        snprintf(path, sizeof path, "%s/pytorch_model.bin", pl->dense_dir[i]);
        if (eg_file_exists(path))
            return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                           "%s: PyTorch pickle weights are not read; re-save the model with safetensors", path);
        return eg_fail(err, errlen, EG_ERR_BAD_FILE,
                       "%s/model.safetensors: not found, but modules.json lists this Dense module; the model folder "
                       "is incomplete",
                       pl->dense_dir[i]);
    }
    if (pl->dense_in[i] != in)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s/config.json: in_features is %lld but the previous stage gives %lld",
                       pl->dense_dir[i], (long long)pl->dense_in[i], (long long)in);
    eg_tensor_set set = {0};
    eg_status s = eg_st_open(path, &set, err, errlen);
    finder f = {&set, "", st_layer_names, 0, err, errlen, 0, NULL};
    eg_tensor *w = NULL, *b = NULL;
    if (s == EG_OK) s = find_tensor(&f, "linear.weight", 2, pl->dense_out[i], in, &w);
    if (s == EG_OK && pl->dense_bias[i]) s = find_tensor(&f, "linear.bias", 1, pl->dense_out[i], 0, &b);
    if (s == EG_OK) s = eg_matrix_alloc(&m->dense[i].w, pl->dense_out[i], in, EG_W_F32, err, errlen);
    if (s == EG_OK) s = pack_rows(&m->dense[i].w, 0, w, err, errlen);
    if (s == EG_OK && b) {
        m->dense[i].bias = aligned_calloc((size_t)pl->dense_out[i] * sizeof(float));
        if (!m->dense[i].bias) s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
        else tensor_row_f32(b, 0, pl->dense_out[i], m->dense[i].bias);
    }
    for (int64_t j = 0; j < set.n && s == EG_OK; j++)
        if (!set.tensors[j].used)
            s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "%s: unexpected tensor \"%.80s\" in a Dense module", path,
                        set.tensors[j].name);
    eg_st_free(&set);
    return s;
}

/* cos/sin tables [max_positions, Hd/2] computed as transformers does: inv_freq
 * and the angle in float32, cos/sin of that float angle rounded to float. */
static eg_status build_rope(eg_model *m, char *err, size_t errlen) {
    const int64_t P = m->cfg.max_positions, half = m->cfg.head_dim / 2;
    for (int g = 0; g < 2; g++) {
        double base = g ? m->cfg.rope_base_global : m->cfg.rope_base_local;
        m->rope_cos[g] = aligned_calloc((size_t)(P * half) * sizeof(float));
        m->rope_sin[g] = aligned_calloc((size_t)(P * half) * sizeof(float));
        if (!m->rope_cos[g] || !m->rope_sin[g]) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory (RoPE tables)");
        for (int64_t i = 0; i < half; i++) {
            float expo = (float)(2 * i) / (float)m->cfg.head_dim;
            float inv_freq = 1.0f / powf((float)base, expo);
            for (int64_t p = 0; p < P; p++) {
                float ang = (float)p * inv_freq;
                m->rope_cos[g][p * half + i] = (float)cos((double)ang);
                m->rope_sin[g][p * half + i] = (float)sin((double)ang);
            }
        }
    }
    return EG_OK;
}

static const char *const weights_names[EG_WEIGHTS_COUNT] = {"float32", "bfloat16", "int8", "q8_0", "q4_0", "int16"};

const char *eg_weights_name(eg_weights w) {
    return w == EG_WEIGHTS_AUTO ? "auto" : w >= 0 && w < EG_WEIGHTS_COUNT ? weights_names[w] : "?";
}

static eg_wtype wtype_opt(eg_weights w) { return w == EG_WEIGHTS_AUTO ? (eg_wtype)-1 : eg_wtype_of(w); }

static eg_weights weights_of(eg_wtype t) {
    switch (t) {
    case EG_W_BF16: return EG_WEIGHTS_BF16;
    case EG_W_I8: return EG_WEIGHTS_INT8;
    case EG_W_Q8_0: return EG_WEIGHTS_Q8_0;
    case EG_W_Q4_0: return EG_WEIGHTS_Q4_0;
    case EG_W_I16: return EG_WEIGHTS_INT16;
    default: return EG_WEIGHTS_F32;
    }
}

/* The layers, the final norm and the token embedding of either format; every tensor must be used. */
static eg_status load_backbone(eg_model *m, finder *f, const char *embed_name, const char *norm_name,
                               const eg_load_opts *opts) {
    const eg_config *c = &m->cfg;
    eg_tensor *emb;
    eg_status s;
    if ((s = find_tensor(f, embed_name, 2, c->vocab, c->hidden, &emb))) return s;
    m->embed = emb->data;
    m->embed_dtype = emb->dtype;
    m->embed_row_bytes = eg_row_bytes(emb->dtype, c->hidden);
    m->embed_scale = (float)sqrt((double)c->hidden);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return eg_fail(f->err, f->errlen, EG_ERR_NOMEM, "out of memory");
    const eg_wtype wm = wtype_opt(opts->mlp_weights), wa = wtype_opt(opts->attn_weights);
    /* int8 keeps the last eighth of the layers in a float type: on the real weights the last layers
     * carry most of int8's error (the last 3 of 24 in bfloat16 halve 1 - mean cosine to the float32
     * reference and lift the top-10 overlap to the bar, for ~12% more encode time on AVX-512
     * VNNI; docs/fidelity.md). The type is the ISA's fastest float GEMM's (eg_kernels.tail_bf16):
     * bfloat16 on avx512 and amx, float32 elsewhere. File blocks (Q8_0 / Q4_0) stay as they are. */
    const int64_t i8_tail = c->n_layers / 8;
    const eg_wtype tail_type = f->k && f->k->tail_bf16 ? EG_W_BF16 : EG_W_F32;
    for (int64_t l = 0; l < c->n_layers; l++) {
        const int tail = l >= c->n_layers - i8_tail;
        const eg_wtype la = tail && wa == EG_W_I8 ? tail_type : wa, lm = tail && wm == EG_W_I8 ? tail_type : wm;
        if ((s = load_layer(f, c, l, la, lm, &m->layers[l]))) return s;
    }
    if ((s = load_norm(f, norm_name, c->hidden, &m->final_norm))) return s;
    for (int64_t j = 0; j < f->set->n; j++) {
        eg_tensor *t = &f->set->tensors[j];
        if (t->used || strcmp(t->name, "lm_head.weight") == 0) continue;
        return eg_fail(f->err, f->errlen, EG_ERR_UNSUPPORTED,
                       "%s: unexpected tensor \"%.80s\": it is not part of the model the %s describes (%lld layers)",
                       t->file, t->name, f->norm_stored_plus_one ? "GGUF metadata" : "config.json",
                       (long long)c->n_layers);
    }
    return EG_OK;
}

/* What every format shares once the weights are in: RoPE tables and the info block. */
static eg_status finish(eg_model *m, const finder *f, eg_isa isa, int64_t width, int normalize, const char *format,
                        char *err, size_t errlen) {
    eg_status s = build_rope(m, err, errlen);
    if (s) return s;
    const eg_config *c = &m->cfg;
    const int mask = f->dtype_mask;
    const char *dn = "mixed";
    for (int d = 0; d < EG_DTYPE_OTHER; d++)
        if (mask == 1 << d) dn = (const char *[]){"F32", "F16", "BF16", "Q8_0", "Q4_0"}[d];
    snprintf(m->dtype_name, sizeof m->dtype_name, "%s", dn);
    eg_model_info *in = &m->info;
    in->hidden = c->hidden;
    in->n_layers = c->n_layers;
    in->n_heads = c->n_heads;
    in->n_kv_heads = c->n_kv_heads;
    in->head_dim = c->head_dim;
    in->intermediate = c->intermediate;
    in->vocab = c->vocab;
    in->max_positions = c->max_positions;
    in->sliding_window = c->sliding_window;
    in->window_radius = c->window_radius;
    in->n_dense = m->n_dense;
    in->out_dim = width;
    in->normalize = normalize;
    in->isa = isa;
    in->weight_dtype = m->dtype_name;
    in->format = format;
    /* as held in memory (the first layer speaks for all under "as stored") */
    in->mlp_weights = weights_of(m->layers[0].gate_up.type);
    in->attn_weights = weights_of(m->layers[0].qkv.type);
    for (int64_t l = 0; l < c->n_layers; l++) {
        const eg_layer *L = &m->layers[l];
        in->weight_bytes += eg_matrix_bytes(&L->qkv) + eg_matrix_bytes(&L->o) + eg_matrix_bytes(&L->gate_up) +
                            eg_matrix_bytes(&L->down);
        m->has_int_weights |= eg_wtype_is_int(L->qkv.type) || eg_wtype_is_int(L->o.type) ||
                              eg_wtype_is_int(L->gate_up.type) || eg_wtype_is_int(L->down.type);
        const eg_matrix *mats[] = {&L->qkv, &L->o, &L->gate_up, &L->down};
        for (int i = 0; i < 4; i++)
            if (eg_xq_bytes(mats[i]) > m->xq_bytes) m->xq_bytes = eg_xq_bytes(mats[i]);
    }
    for (int i = 0; i < m->n_dense; i++) in->weight_bytes += eg_matrix_bytes(&m->dense[i].w);
    return EG_OK;
}

static eg_status load_folder(eg_model *m, const char *dir, const eg_load_opts *opts, eg_isa isa, char *err,
                             size_t errlen) {
    eg_pipeline pl;
    eg_status s;
    if (opts->dense_from && *opts->dense_from)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG,
                       "dense_from applies to GGUF files only; %s is a sentence-transformers folder with its own "
                       "modules.json",
                       dir);
    if ((s = eg_pipeline_read(dir, &pl, err, errlen))) return s;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", pl.transformer_dir);
    if ((s = eg_config_read(path, &m->cfg, err, errlen))) goto done;
    if ((s = open_backbone(pl.transformer_dir, &m->files, err, errlen))) goto done;
    /* checkpoints saved from a wrapper carry a "model." prefix */
    finder f = {&m->files, "", st_layer_names, 0, err, errlen, 0, m->k};
    if (!eg_st_find(&m->files, "embed_tokens.weight") && eg_st_find(&m->files, "model.embed_tokens.weight"))
        f.prefix = "model.";
    if ((s = load_backbone(m, &f, "embed_tokens.weight", "norm.weight", opts))) goto done;
    int64_t width = m->cfg.hidden;
    for (int i = 0; i < pl.n_dense; i++) {
        if ((s = load_dense(m, &pl, i, width, err, errlen))) goto done;
        width = pl.dense_out[i];
    }
    m->n_dense = pl.n_dense;
    s = finish(m, &f, isa, width, pl.normalize, "sentence-transformers", err, errlen);
done:
    eg_pipeline_free(&pl);
    return s;
}

/* ---------------------------------------------------------------- GGUF */

/* One Dense tensor of the GGUF as an F32 matrix [out, in]. */
static eg_status gguf_dense(eg_model *m, finder *f, eg_tensor *t, int64_t in, int i) {
    if (t->ndim != 2 || t->shape[1] != in || t->shape[0] < 1 || t->shape[0] > EG_MAX_DENSE_WIDTH)
        return eg_fail(f->err, f->errlen, EG_ERR_BAD_FILE,
                       "%s: Dense tensor \"%s\" has the wrong shape: it must take the %lld-wide previous stage", t->file,
                       t->name, (long long)in);
    eg_tensor *tt;
    const int mask = f->dtype_mask; /* the head does not decide what the model is stored as */
    eg_status s = find_tensor(f, t->name, 2, t->shape[0], in, &tt);
    f->dtype_mask = mask;
    if (s) return s;
    if ((s = eg_matrix_alloc(&m->dense[i].w, t->shape[0], in, EG_W_F32, f->err, f->errlen))) return s;
    return pack_rows(&m->dense[i].w, 0, t, f->err, f->errlen);
}

static eg_status load_gguf(eg_model *m, const char *path, const eg_load_opts *opts, eg_isa isa, char *err,
                           size_t errlen) {
    eg_gguf *g;
    eg_status s = eg_gguf_open(path, &g, err, errlen);
    if (s) return s;
    /* the model takes over the tensors and their mapping (the embedding table is read from it);
     * g->tensors stays a borrowed view for the metadata lookups, dropped before eg_gguf_close */
    m->files = g->tensors;
    if ((s = eg_config_from_gguf(g, &m->cfg, err, errlen))) goto done;
    eg_tensor *emb = eg_st_find(&m->files, "token_embd.weight");
    if (!emb || emb->ndim != 2) {
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: no 2-D token_embd.weight tensor", path);
        goto done;
    }
    if ((s = eg_config_set_vocab(&m->cfg, (int64_t)emb->shape[0], path, err, errlen))) goto done;
    finder f = {&m->files, "", gguf_layer_names, 1, err, errlen, 0, m->k};
    /* llama.cpp names the final norm output_norm; Ollama's gemma3 layout norm */
    const char *norm = eg_st_find(&m->files, "output_norm.weight") ? "output_norm.weight" : "norm.weight";
    /* Dense: llama.cpp dense_2 / dense_3, Ollama dense.0 / dense.1 */
    eg_tensor *d0 = eg_st_find(&m->files, "dense_2.weight"), *d1 = eg_st_find(&m->files, "dense_3.weight");
    if (!d0 && !d1) {
        d0 = eg_st_find(&m->files, "dense.0.weight");
        d1 = eg_st_find(&m->files, "dense.1.weight");
    }
    const int want_folder = opts->dense_from && *opts->dense_from;
    if ((d0 || d1) && want_folder) {
        s = eg_fail(err, errlen, EG_ERR_INVALID_ARG,
                    "%s carries its own Dense tensors; dense_from would replace them: leave dense_from out", path);
        goto done;
    }
    if ((d0 != NULL) != (d1 != NULL)) {
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: only one of the two Dense tensors is present", path);
        goto done;
    }
    if (!d0 && !want_folder && !opts->no_dense) {
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                    "%s has no Dense tensors (dense_2 / dense_3), so it cannot reproduce EmbeddingGemma's embeddings: "
                    "it would return the normalized mean of the last hidden states, a different vector (llama.cpp "
                    "issue 18677). Fix: convert again with convert_hf_to_gguf.py --sentence-transformers-dense-modules, "
                    "or pass dense_from= a sentence-transformers folder of the model (its 2_Dense and 3_Dense modules "
                    "are used), or no_dense=True to accept the un-projected pooled vector",
                    path);
        goto done;
    }
    /* Dense tensors are the head, not layers: mark them before the every-tensor-used check */
    if (d0) d0->used = d1->used = 1;
    if ((s = load_backbone(m, &f, "token_embd.weight", norm, opts))) goto done;
    int64_t width = m->cfg.hidden;
    int normalize = 1; /* the published pipeline ends with Normalize */
    if (d0) {
        if ((s = gguf_dense(m, &f, d0, width, 0))) goto done;
        width = d0->shape[0];
        if ((s = gguf_dense(m, &f, d1, width, 1))) goto done;
        width = d1->shape[0];
        m->n_dense = 2;
    } else if (want_folder) {
        eg_pipeline pl;
        if ((s = eg_pipeline_read(opts->dense_from, &pl, err, errlen))) goto done;
        if (pl.n_dense == 0)
            s = eg_fail(err, errlen, EG_ERR_INVALID_ARG, "dense_from: %s lists no Dense modules in modules.json",
                        opts->dense_from);
        for (int i = 0; i < pl.n_dense && s == EG_OK; i++) {
            s = load_dense(m, &pl, i, width, err, errlen);
            width = pl.dense_out[i];
        }
        m->n_dense = pl.n_dense;
        normalize = pl.normalize;
        eg_pipeline_free(&pl);
        if (s) goto done;
    }
    s = finish(m, &f, isa, width, normalize, "gguf", err, errlen);
done:
    memset(&g->tensors, 0, sizeof g->tensors);
    eg_gguf_close(g);
    return s;
}

/* ---------------------------------------------------------------- entry */

eg_status eg_model_load(const char *path, const eg_load_opts *opts, eg_model **out, char *err, size_t errlen) {
    *out = NULL;
    const eg_load_opts defaults = {NULL, EG_WEIGHTS_F32, EG_WEIGHTS_F32, NULL, 0};
    if (!opts) opts = &defaults;
    if (!path || !*path) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "empty model path");
    for (int j = 0; j < 2; j++) {
        const eg_weights w = j ? opts->attn_weights : opts->mlp_weights;
        if (!((w >= 0 && w < EG_WEIGHTS_COUNT) || w == EG_WEIGHTS_AUTO))
            return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "unknown weights mode %d", (int)w);
    }
    eg_isa isa;
    char note[sizeof ((eg_model *)0)->isa_note];
    eg_status s = eg_isa_choose(opts->isa, &isa, note, sizeof note, err, errlen);
    if (s) return s;
    eg_model *m = calloc(1, sizeof *m);
    if (!m) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    m->k = eg_kernels_for(isa);
    memcpy(m->isa_note, note, sizeof note);
    m->info.isa_note = m->isa_note;
    s = eg_is_gguf(path) ? load_gguf(m, path, opts, isa, err, errlen) : load_folder(m, path, opts, isa, err, errlen);
    if (s) {
        eg_model_free(m);
        return s;
    }
    *out = m;
    return EG_OK;
}

void eg_model_free(eg_model *m) {
    if (!m) return;
    if (m->layers) { /* layers past a failed load are zeroed: freeing them is a no-op */
        for (int64_t l = 0; l < m->cfg.n_layers; l++) {
            eg_layer *L = &m->layers[l];
            eg_aligned_free(L->attn_norm);
            eg_aligned_free(L->q_norm);
            eg_aligned_free(L->k_norm);
            eg_aligned_free(L->post_attn_norm);
            eg_aligned_free(L->pre_ffn_norm);
            eg_aligned_free(L->post_ffn_norm);
            eg_matrix_free(&L->qkv);
            eg_matrix_free(&L->o);
            eg_matrix_free(&L->gate_up);
            eg_matrix_free(&L->down);
        }
        free(m->layers);
    }
    eg_aligned_free(m->final_norm);
    for (int g = 0; g < 2; g++) {
        eg_aligned_free(m->rope_cos[g]);
        eg_aligned_free(m->rope_sin[g]);
    }
    for (int i = 0; i < EG_MAX_DENSE; i++) {
        eg_matrix_free(&m->dense[i].w);
        eg_aligned_free(m->dense[i].bias);
    }
    eg_st_free(&m->files);
    eg_config_free(&m->cfg);
    free(m);
}

const eg_model_info *eg_model_get_info(const eg_model *m) { return &m->info; }
