/* load.c - builds an eg_model from a sentence-transformers folder.
 *
 * Order: modules.json (pipeline) -> config.json (architecture) -> backbone
 * safetensors (one file or shards) -> Dense modules. Every tensor is checked
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

static void *aligned_calloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

/* Converts row `row` of a 2-D (or 1-D when row == 0) tensor with `k` columns to float32. */
static void tensor_row_f32(const eg_tensor *t, int64_t row, int64_t k, float *dst) {
    if (t->dtype == EG_F32) {
        memcpy(dst, t->data + (size_t)row * (size_t)k * 4, (size_t)k * 4);
        return;
    }
    const uint8_t *src = t->data + (size_t)row * (size_t)k * 2;
    for (int64_t i = 0; i < k; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = t->dtype == EG_BF16 ? eg_bf16_to_f32(h) : eg_f16_to_f32(h);
    }
}

typedef struct {
    eg_tensor_set *set;
    const char *prefix; /* "" or "model." as found in the file */
    char *err;
    size_t errlen;
    int dtype_mask;     /* bit per eg_dtype seen */
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
                       "%s: tensor \"%s\" has dtype %s; embgemma reads F32, BF16 and F16 safetensors", t->file, full,
                       t->dtype_name);
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
    f->dtype_mask |= 1 << t->dtype;
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
    for (int64_t i = 0; i < n; i++) g[i] = 1.0f + g[i];
    *out = g;
    return EG_OK;
}

/* Writes the rows of tensor t into packed matrix m starting at output row row0,
 * then lets the kernel drop the file pages it read (they are copied now; a
 * read-only private mapping refaults them from the file if ever touched again). */
static eg_status pack_rows(eg_matrix *m, int64_t row0, const eg_tensor *t, char *err, size_t errlen) {
    const int64_t k = m->k, rows = t->shape[0];
    float *buf = malloc((size_t)k * sizeof(float));
    if (!buf) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    for (int64_t r = 0; r < rows; r++) {
        tensor_row_f32(t, r, k, buf);
        eg_matrix_pack_row(m, row0 + r, buf);
    }
    free(buf);
    eg_st_release(t);
    return EG_OK;
}

/* Loads the matrices `names` (each [rows_i, k]) stacked into one packed matrix. */
static eg_status load_stacked(finder *f, eg_matrix *m, int count, const char *const *names, const int64_t *rows,
                              int64_t k, eg_wtype type) {
    eg_tensor *t[4];
    int64_t total = 0;
    for (int i = 0; i < count; i++) {
        eg_status s = find_tensor(f, names[i], 2, rows[i], k, &t[i]);
        if (s) return s;
        total += rows[i];
    }
    eg_status s = eg_matrix_alloc(m, total, k, type, f->err, f->errlen);
    for (int i = 0, row0 = 0; i < count && s == EG_OK; row0 += (int)rows[i], i++)
        s = pack_rows(m, row0, t[i], f->err, f->errlen);
    return s;
}

static eg_status load_layer(finder *f, const eg_config *c, int64_t l, eg_wtype wa, eg_wtype wm, eg_layer *L) {
    char n[8][128];
    const int64_t D = c->hidden, Hd = c->head_dim, QD = c->n_heads * Hd, KD = c->n_kv_heads * Hd, I = c->intermediate;
    const char *parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"};
    for (int i = 0; i < 5; i++) snprintf(n[i], sizeof n[i], "layers.%lld.%s.weight", (long long)l, parts[i]);
    eg_status s;
    char nm[128];
#define NORM(field, part, width)                                                  \
    snprintf(nm, sizeof nm, "layers.%lld.%s.weight", (long long)l, part);         \
    if ((s = load_norm(f, nm, width, &L->field))) return s;
    NORM(attn_norm, "input_layernorm", D)
    NORM(q_norm, "self_attn.q_norm", Hd)
    NORM(k_norm, "self_attn.k_norm", Hd)
    NORM(post_attn_norm, "post_attention_layernorm", D)
    NORM(pre_ffn_norm, "pre_feedforward_layernorm", D)
    NORM(post_ffn_norm, "post_feedforward_layernorm", D)
#undef NORM
    const char *qkv[] = {n[0], n[1], n[2]};
    const int64_t qkv_rows[] = {QD, KD, KD};
    if ((s = load_stacked(f, &L->qkv, 3, qkv, qkv_rows, D, wa))) return s;
    const char *gu[] = {n[3], n[4]};
    const int64_t gu_rows[] = {I, I};
    if ((s = load_stacked(f, &L->gate_up, 2, gu, gu_rows, D, wm))) return s;
    snprintf(nm, sizeof nm, "layers.%lld.self_attn.o_proj.weight", (long long)l);
    const char *o[] = {nm};
    const int64_t o_rows[] = {D};
    if ((s = load_stacked(f, &L->o, 1, o, o_rows, QD, wa))) return s;
    snprintf(nm, sizeof nm, "layers.%lld.mlp.down_proj.weight", (long long)l);
    const char *dn[] = {nm};
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
        const json_node *wm = json_get(json_root(doc), "weight_map");
        if (!wm || wm->type != JSON_OBJECT || wm->n == 0) {
            json_free(doc);
            return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: needs a non-empty \"weight_map\" object", path);
        }
        /* open each distinct shard once, in order of first mention */
        for (size_t i = 0; i < wm->n && s == EG_OK; i++) {
            const json_node *v = wm->items[i];
            if (v->type != JSON_STRING || strchr(v->str, '/') || strcmp(v->str, "..") == 0 || !v->str[0]) {
                s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: weight_map entry %zu is not a file name in the folder",
                            path, i);
                break;
            }
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
    finder f = {&set, "", err, errlen, 0};
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

static const char *const weights_names[EG_WEIGHTS_COUNT] = {"float32", "bfloat16", "int8", "q8_0", "q4_0"};

const char *eg_weights_name(eg_weights w) {
    return w == EG_WEIGHTS_AUTO ? "auto" : w >= 0 && w < EG_WEIGHTS_COUNT ? weights_names[w] : "?";
}

eg_status eg_model_load(const char *dir, const eg_load_opts *opts, eg_model **out, char *err, size_t errlen) {
    *out = NULL;
    const eg_load_opts defaults = {NULL, EG_WEIGHTS_F32, EG_WEIGHTS_F32};
    if (!opts) opts = &defaults;
    if (!dir || !*dir) return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "empty model path");
    if (opts->mlp_weights < 0 || opts->mlp_weights >= EG_WEIGHTS_COUNT || opts->attn_weights < 0 ||
        opts->attn_weights >= EG_WEIGHTS_COUNT)
        return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "unknown weights mode %d / %d", (int)opts->mlp_weights,
                       (int)opts->attn_weights);
    const eg_wtype wm = eg_wtype_of(opts->mlp_weights), wa = eg_wtype_of(opts->attn_weights);
    eg_model *m = calloc(1, sizeof *m);
    if (!m) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    eg_pipeline pl;
    eg_status s;
    eg_isa isa;
    if ((s = eg_isa_choose(opts->isa, &isa, err, errlen))) {
        free(m);
        return s;
    }
    m->k = eg_kernels_for(isa);
    if ((s = eg_pipeline_read(dir, &pl, err, errlen))) {
        free(m);
        return s;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", pl.transformer_dir);
    if ((s = eg_config_read(path, &m->cfg, err, errlen))) goto fail;
    const eg_config *c = &m->cfg;
    if ((s = open_backbone(pl.transformer_dir, &m->files, err, errlen))) goto fail;

    /* checkpoints saved from a wrapper carry a "model." prefix */
    finder f = {&m->files, "", err, errlen, 0};
    if (!eg_st_find(&m->files, "embed_tokens.weight") && eg_st_find(&m->files, "model.embed_tokens.weight"))
        f.prefix = "model.";
    eg_tensor *emb;
    if ((s = find_tensor(&f, "embed_tokens.weight", 2, c->vocab, c->hidden, &emb))) goto fail;
    m->embed = emb->data;
    m->embed_dtype = emb->dtype;
    m->embed_scale = (float)sqrt((double)c->hidden);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int64_t l = 0; l < c->n_layers; l++)
        if ((s = load_layer(&f, c, l, wa, wm, &m->layers[l]))) goto fail;
    if ((s = load_norm(&f, "norm.weight", c->hidden, &m->final_norm))) goto fail;
    for (int64_t j = 0; j < m->files.n; j++) {
        eg_tensor *t = &m->files.tensors[j];
        if (t->used || strcmp(t->name, "lm_head.weight") == 0) continue;
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                    "%s: unexpected tensor \"%.80s\": it is not part of the model config.json describes (%lld layers)",
                    t->file, t->name, (long long)c->n_layers);
        goto fail;
    }

    int64_t width = c->hidden;
    for (int i = 0; i < pl.n_dense; i++) {
        if ((s = load_dense(m, &pl, i, width, err, errlen))) goto fail;
        width = pl.dense_out[i];
    }
    m->n_dense = pl.n_dense;
    if ((s = build_rope(m, err, errlen))) goto fail;

    int mask = f.dtype_mask;
    snprintf(m->dtype_name, sizeof m->dtype_name, "%s",
             mask == 1 << EG_F32 ? "F32" : mask == 1 << EG_BF16 ? "BF16" : mask == 1 << EG_F16 ? "F16" : "mixed");
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
    in->n_dense = pl.n_dense;
    in->out_dim = width;
    in->normalize = pl.normalize;
    in->isa = isa;
    in->weight_dtype = m->dtype_name;
    in->mlp_weights = opts->mlp_weights;
    in->attn_weights = opts->attn_weights;
    for (int64_t l = 0; l < c->n_layers; l++) {
        const eg_layer *L = &m->layers[l];
        in->weight_bytes += eg_matrix_bytes(&L->qkv) + eg_matrix_bytes(&L->o) + eg_matrix_bytes(&L->gate_up) +
                            eg_matrix_bytes(&L->down);
    }
    for (int i = 0; i < pl.n_dense; i++) in->weight_bytes += eg_matrix_bytes(&m->dense[i].w);
    eg_pipeline_free(&pl);
    *out = m;
    return EG_OK;
fail:
    eg_pipeline_free(&pl);
    eg_model_free(m);
    return s;
}

void eg_model_free(eg_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int64_t l = 0; l < m->cfg.n_layers; l++) {
            eg_layer *L = &m->layers[l];
            free(L->attn_norm);
            free(L->q_norm);
            free(L->k_norm);
            free(L->post_attn_norm);
            free(L->pre_ffn_norm);
            free(L->post_ffn_norm);
            eg_matrix_free(&L->qkv);
            eg_matrix_free(&L->o);
            eg_matrix_free(&L->gate_up);
            eg_matrix_free(&L->down);
        }
        free(m->layers);
    }
    free(m->final_norm);
    for (int g = 0; g < 2; g++) {
        free(m->rope_cos[g]);
        free(m->rope_sin[g]);
    }
    for (int i = 0; i < EG_MAX_DENSE; i++) {
        eg_matrix_free(&m->dense[i].w);
        free(m->dense[i].bias);
    }
    eg_st_free(&m->files);
    eg_config_free(&m->cfg);
    free(m);
}

const eg_model_info *eg_model_get_info(const eg_model *m) { return &m->info; }
