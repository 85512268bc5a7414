/* config.c - reads and validates the model's architecture (config.json, or a GGUF's metadata) and
 * the sentence-transformers module files. This is the only place values from those files are
 * trusted: whatever the engine cannot run exactly is refused here, naming the file and the key.
 * No Python here.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    size_t n = la;
    if (lb) {
        if (n && s[n - 1] != '/') s[n++] = '/';
        memcpy(s + n, b, lb);
        n += lb;
    }
    s[n] = 0;
    return s;
}

/* An integer outside what embgemma runs, from either format: the one message and error for it. */
static eg_status out_of_range(const char *key, int64_t v, int64_t lo, int64_t hi, const char *path, char *err,
                              size_t errlen) {
    return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "%s: \"%s\" = %lld is outside the supported range %lld..%lld",
                   path, key, (long long)v, (long long)lo, (long long)hi);
}

/* Every period-th layer is global (sliding_window_pattern): the range both formats accept. */
#define GLOBAL_PERIOD_MAX 1024

/* Integer key: required when def < 0, else defaulted. Range-checked. */
static eg_status get_int(const json_node *o, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                         const char *path, char *err, size_t errlen) {
    const json_node *v = json_get(o, key);
    if (!v || v->type == JSON_NULL) {
        if (def < 0) return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: required key \"%s\" is missing", path, key);
        *out = def;
        return EG_OK;
    }
    if (v->type != JSON_NUMBER || !v->is_integer)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: \"%s\" must be an integer", path, key);
    if (v->integer < lo || v->integer > hi) return out_of_range(key, v->integer, lo, hi, path, err, errlen);
    *out = v->integer;
    return EG_OK;
}

static eg_status get_num(const json_node *o, const char *key, double def, double *out, const char *path, char *err,
                         size_t errlen) {
    const json_node *v = json_get(o, key);
    if (!v || v->type == JSON_NULL) {
        *out = def;
        return EG_OK;
    }
    if (v->type != JSON_NUMBER || !isfinite(v->number) || v->number <= 0)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: \"%s\" must be a positive number", path, key);
    *out = v->number;
    return EG_OK;
}

/* ---------------------------------------------------------------- the architecture's integers */

/* The integers of eg_config, as each format names them: the config.json key and its default (-1:
 * required; else transformers' Gemma3TextConfig default), the GGUF key (after "<architecture>.";
 * NULL: not in the metadata) and its default (-1: required; 0: derived from the others; else
 * llama.cpp's), and the range embgemma runs: the one set of limits both readers check. */
typedef struct {
    const char *json, *gguf;
    size_t offset; /* of the int64_t in eg_config */
    int64_t json_def, gguf_def, lo, hi;
} config_int;

static const config_int config_ints[] = {
    {"hidden_size", "embedding_length", offsetof(eg_config, hidden), -1, -1, 1, 1 << 16},
    {"intermediate_size", "feed_forward_length", offsetof(eg_config, intermediate), -1, -1, 1, 1 << 20},
    {"num_hidden_layers", "block_count", offsetof(eg_config, n_layers), -1, -1, 1, 1024},
    {"num_attention_heads", "attention.head_count", offsetof(eg_config, n_heads), -1, -1, 1, 1024},
    {"num_key_value_heads", "attention.head_count_kv", offsetof(eg_config, n_kv_heads), -1, 0, 1, 1024},
    {"head_dim", "attention.key_length", offsetof(eg_config, head_dim), -1, 0, 2, 4096},
    {"vocab_size", NULL, offsetof(eg_config, vocab), -1, 0, 3, (int64_t)1 << 24}, /* GGUF: token_embd's rows */
    {"max_position_embeddings", "context_length", offsetof(eg_config, max_positions), 131072, 2048, 1,
     (int64_t)1 << 24},
    {"sliding_window", "attention.sliding_window", offsetof(eg_config, sliding_window), 4096, 512, 1,
     (int64_t)1 << 24},
};
#define N_CONFIG_INTS (sizeof config_ints / sizeof config_ints[0])

static int64_t *config_field(eg_config *cfg, const config_int *f) {
    return (int64_t *)(void *)((char *)cfg + f->offset);
}
static int in_range(const config_int *f, int64_t v) { return v >= f->lo && v <= f->hi; }

/* The table's entry for the field at offset (every field has one). */
static const config_int *config_entry(size_t offset) {
    for (size_t i = 0; i < N_CONFIG_INTS; i++)
        if (config_ints[i].offset == offset) return &config_ints[i];
    return NULL;
}

/* A value the reader derived (GGUF's head_dim and vocab) against the table's range,
 * named by what it was derived from. */
static eg_status check_derived(size_t offset, int64_t v, const char *from, const char *path, char *err,
                               size_t errlen) {
    const config_int *f = config_entry(offset);
    return in_range(f, v) ? EG_OK : out_of_range(from, v, f->lo, f->hi, path, err, errlen);
}

eg_status eg_config_set_vocab(eg_config *cfg, int64_t rows, const char *path, char *err, size_t errlen) {
    eg_status s = check_derived(offsetof(eg_config, vocab), rows, "token_embd.weight rows", path, err, errlen);
    if (s == EG_OK) cfg->vocab = rows;
    return s;
}

/* What both readers derive from the integers: the positions the RoPE tables cover, the sliding
 * window's radius, and layer_is_global (all 0: sliding, for the caller to mark the global ones). */
static eg_status config_derive(eg_config *cfg, char *err, size_t errlen) {
    if (cfg->max_positions > EG_MAX_POSITIONS) cfg->max_positions = EG_MAX_POSITIONS;
    /* transformers: bidirectional => sliding_window = sw // 2 + 1, mask |i - j| < that */
    cfg->window_radius = cfg->sliding_window / 2;
    cfg->layer_is_global = calloc((size_t)cfg->n_layers, 1);
    return cfg->layer_is_global ? EG_OK : eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
}

/* Every period-th layer global (period >= 1): both formats' rule when no list says which. */
static void global_every(eg_config *cfg, int64_t period) {
    for (int64_t i = 0; i < cfg->n_layers; i++) cfg->layer_is_global[i] = (i + 1) % period == 0;
}

static int is_true(const json_node *v) { return v && v->type == JSON_BOOL && v->boolean; }
static int is_null_or_false(const json_node *v) {
    return !v || v->type == JSON_NULL || (v->type == JSON_BOOL && !v->boolean);
}

/* One RoPE parameter block {"rope_type": "default", "rope_theta": x}. */
static eg_status rope_block(const json_node *b, const char *what, double *theta, const char *path, char *err,
                            size_t errlen) {
    if (!b || b->type != JSON_OBJECT)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: rope_parameters.%s must be an object", path, what);
    const json_node *t = json_get(b, "rope_type");
    if (!t) t = json_get(b, "type");
    if (t && !(t->type == JSON_STRING && strcmp(t->str, "default") == 0))
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                       "%s: rope_parameters.%s has rope_type \"%.32s\"; only \"default\" RoPE (as in "
                       "EmbeddingGemma) is supported",
                       path, what, t->type == JSON_STRING ? t->str : "?");
    return get_num(b, "rope_theta", *theta, theta, path, err, errlen);
}

eg_status eg_config_read(const char *path, eg_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    json_doc *doc;
    eg_status s = eg_read_json(path, &doc, err, errlen);
    if (s != EG_OK) return s;
    s = eg_config_from_json(json_root(doc), path, cfg, err, errlen);
    json_free(doc);
    return s;
}

eg_status eg_config_from_json(const json_node *o, const char *path, eg_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    eg_status s = EG_OK;
    if (o->type != JSON_OBJECT) {
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: expected a JSON object", path);
        goto done;
    }

    const json_node *mt = json_get(o, "model_type");
    if (!mt || mt->type != JSON_STRING || strcmp(mt->str, "gemma3_text") != 0) {
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                    "%s: model_type is \"%.40s\"; embgemma runs EmbeddingGemma (model_type \"gemma3_text\", "
                    "Gemma3TextModel with bidirectional attention)",
                    path, mt && mt->type == JSON_STRING ? mt->str : "(missing)");
        goto done;
    }
    const json_node *arch = json_get(o, "architectures");
    if (arch && arch->type == JSON_ARRAY) {
        int ok = 0;
        for (size_t i = 0; i < arch->n; i++)
            if (arch->items[i]->type == JSON_STRING && strcmp(arch->items[i]->str, "Gemma3TextModel") == 0) ok = 1;
        if (!ok) {
            s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                        "%s: architectures does not list \"Gemma3TextModel\"; embgemma runs the EmbeddingGemma "
                        "encoder only",
                        path);
            goto done;
        }
    }
    if (!is_true(json_get(o, "use_bidirectional_attention"))) {
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                    "%s: use_bidirectional_attention is not true: this is a causal Gemma 3 model, not "
                    "EmbeddingGemma (whose attention is bidirectional)",
                    path);
        goto done;
    }
    const json_node *softcap = json_get(o, "attn_logit_softcapping");
    if (softcap && softcap->type != JSON_NULL) {
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                    "%s: attn_logit_softcapping is set; EmbeddingGemma has none and embgemma does not implement it",
                    path);
        goto done;
    }
    if (!is_null_or_false(json_get(o, "attention_bias"))) {
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "%s: attention_bias is true; EmbeddingGemma has no biases", path);
        goto done;
    }
    const json_node *act = json_get(o, "hidden_activation");
    if (!act || act->type == JSON_NULL) act = json_get(o, "hidden_act");
    if (act && !(act->type == JSON_STRING && strcmp(act->str, "gelu_pytorch_tanh") == 0)) {
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                    "%s: hidden_activation \"%.32s\" is not supported (EmbeddingGemma uses gelu_pytorch_tanh)", path,
                    act->type == JSON_STRING ? act->str : "?");
        goto done;
    }

    /* sizes: the shape of the network is required (no silent defaults), the rest as transformers defaults */
    for (size_t i = 0; i < N_CONFIG_INTS; i++) {
        const config_int *f = &config_ints[i];
        if ((s = get_int(o, f->json, f->json_def, f->lo, f->hi, config_field(cfg, f), path, err, errlen))) goto done;
    }
    if ((s = get_num(o, "rms_norm_eps", 1e-6, &cfg->rms_eps, path, err, errlen))) goto done;
    if ((s = get_num(o, "query_pre_attn_scalar", 256, &cfg->query_pre_attn_scalar, path, err, errlen))) goto done;
    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                    path, (long long)cfg->n_heads, (long long)cfg->n_kv_heads);
        goto done;
    }
    if (cfg->head_dim % 2 != 0) {
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: head_dim %lld must be even for RoPE", path,
                    (long long)cfg->head_dim);
        goto done;
    }
    /* RoPE bases: transformers 5 writes rope_parameters; 4.x writes rope_theta + rope_local_base_freq */
    cfg->rope_base_global = 1000000.0;
    cfg->rope_base_local = 10000.0;
    const json_node *rp = json_get(o, "rope_parameters");
    if (rp && rp->type == JSON_OBJECT) {
        const json_node *full = json_get(rp, "full_attention"), *slide = json_get(rp, "sliding_attention");
        if (full || slide) {
            if (full && (s = rope_block(full, "full_attention", &cfg->rope_base_global, path, err, errlen))) goto done;
            if (slide && (s = rope_block(slide, "sliding_attention", &cfg->rope_base_local, path, err, errlen)))
                goto done;
        } else {
            if ((s = rope_block(rp, "(all layers)", &cfg->rope_base_global, path, err, errlen))) goto done;
            cfg->rope_base_local = cfg->rope_base_global;
            if ((s = get_num(o, "rope_local_base_freq", cfg->rope_base_local, &cfg->rope_base_local, path, err,
                             errlen)))
                goto done;
        }
    } else {
        if ((s = get_num(o, "rope_theta", cfg->rope_base_global, &cfg->rope_base_global, path, err, errlen))) goto done;
        if ((s = get_num(o, "rope_local_base_freq", cfg->rope_base_local, &cfg->rope_base_local, path, err, errlen)))
            goto done;
        const json_node *rs = json_get(o, "rope_scaling");
        if (rs && rs->type != JSON_NULL && (s = rope_block(rs, "rope_scaling", &cfg->rope_base_global, path, err, errlen)))
            goto done;
    }

    /* which layers are global: layer_types, else a period */
    if ((s = config_derive(cfg, err, errlen))) goto done;
    const json_node *lt = json_get(o, "layer_types");
    if (lt && lt->type != JSON_NULL) {
        if (lt->type != JSON_ARRAY || (int64_t)lt->n != cfg->n_layers) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: layer_types must list one entry for each of the %lld layers",
                        path, (long long)cfg->n_layers);
            goto done;
        }
        for (int64_t i = 0; i < cfg->n_layers; i++) {
            const json_node *v = lt->items[i];
            if (v->type == JSON_STRING && strcmp(v->str, "full_attention") == 0) cfg->layer_is_global[i] = 1;
            else if (v->type == JSON_STRING && strcmp(v->str, "sliding_attention") == 0) cfg->layer_is_global[i] = 0;
            else {
                s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                            "%s: layer_types[%lld] must be \"sliding_attention\" or \"full_attention\"", path,
                            (long long)i);
                goto done;
            }
        }
    } else {
        int64_t period;
        const char *key = json_get(o, "sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern";
        if ((s = get_int(o, key, 6, 1, GLOBAL_PERIOD_MAX, &period, path, err, errlen))) goto done;
        global_every(cfg, period);
    }
done:
    if (s != EG_OK) eg_config_free(cfg);
    return s;
}

void eg_config_free(eg_config *cfg) {
    free(cfg->layer_is_global);
    cfg->layer_is_global = NULL;
}

/* ---------------------------------------------------------------- GGUF metadata */

eg_status eg_config_from_gguf(const eg_gguf *g, eg_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    char arch[64] = "", key[160];
    const char *path = g->path;
    eg_status s = EG_OK;
    if (eg_gguf_get_str(g, "general.architecture", arch, sizeof arch) != 1)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: GGUF has no general.architecture string", path);
    int causal = -1;
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", arch, k), key)
#define FAIL(...)                                                                                                  \
    do {                                                                                                           \
        s = eg_fail(err, errlen, __VA_ARGS__);                                                                     \
        goto done;                                                                                                 \
    } while (0)
    if (eg_gguf_get_bool(g, KEY("attention.causal"), &causal) < 0)
        FAIL(EG_ERR_BAD_FILE, "%s: %s must be a bool", path, key);
    const int has_dense0 = eg_st_find((eg_tensor_set *)&g->tensors, "dense.0.weight") != NULL;
    if (strcmp(arch, "gemma-embedding") == 0) {
        if (causal == 1)
            FAIL(EG_ERR_UNSUPPORTED, "%s: %s is true, but EmbeddingGemma is bidirectional", path, key);
    } else if (strcmp(arch, "gemma3") == 0) {
        if (causal != 0 && !has_dense0)
            FAIL(EG_ERR_UNSUPPORTED,
                 "%s: a \"gemma3\" GGUF without gemma3.attention.causal = false or Dense tensors is a "
                 "causal Gemma 3 language model, not EmbeddingGemma",
                 path);
    } else {
        FAIL(EG_ERR_UNSUPPORTED,
             "%s: general.architecture is \"%.40s\"; embgemma runs EmbeddingGemma GGUFs "
             "(\"gemma-embedding\", or Ollama's \"gemma3\" embedding layout)",
             path, arch);
    }
    for (size_t i = 0; i < N_CONFIG_INTS; i++) {
        const config_int *f = &config_ints[i];
        if (!f->gguf) continue;
        int64_t v = f->gguf_def;
        const int r = eg_gguf_get_int(g, KEY(f->gguf), &v);
        if (r < 0) FAIL(EG_ERR_BAD_FILE, "%s: %s must be an integer", path, key);
        if (r == 0 && f->gguf_def < 0) FAIL(EG_ERR_BAD_FILE, "%s: GGUF metadata lacks %s", path, key);
        if (r == 1 && !in_range(f, v)) {
            s = out_of_range(key, v, f->lo, f->hi, path, err, errlen);
            goto done;
        }
        *config_field(cfg, f) = v;
    }
    if (cfg->n_kv_heads == 0) cfg->n_kv_heads = cfg->n_heads;
    if (cfg->head_dim == 0) {
        cfg->head_dim = cfg->hidden / cfg->n_heads;
        if ((s = check_derived(offsetof(eg_config, head_dim), cfg->head_dim, "embedding_length / head_count", path,
                               err, errlen)))
            goto done;
    }
    int64_t vlen;
    if (eg_gguf_get_int(g, KEY("attention.value_length"), &vlen) == 1 && vlen != cfg->head_dim)
        FAIL(EG_ERR_UNSUPPORTED, "%s: attention.value_length %lld differs from key_length %lld", path,
             (long long)vlen, (long long)cfg->head_dim);
    if (cfg->n_heads % cfg->n_kv_heads != 0 || cfg->head_dim % 2 != 0)
        FAIL(EG_ERR_BAD_FILE, "%s: head_count %lld must be a multiple of head_count_kv %lld and key_length %lld even",
             path, (long long)cfg->n_heads, (long long)cfg->n_kv_heads, (long long)cfg->head_dim);
    int64_t pooling;
    if (eg_gguf_get_int(g, KEY("pooling_type"), &pooling) == 1 && pooling != 1)
        FAIL(EG_ERR_UNSUPPORTED, "%s: pooling_type is %lld; EmbeddingGemma pools by the mean (1)", path,
             (long long)pooling);
    double v;
    cfg->rms_eps = 1e-6;
    if (eg_gguf_get_float(g, KEY("attention.layer_norm_rms_epsilon"), &v) == 1) cfg->rms_eps = v;
    /* RoPE: llama.cpp's keys, else older Ollama gemma3 ones, else llama.cpp's hard-coded values */
    cfg->rope_base_global = 1000000.0;
    cfg->rope_base_local = 10000.0;
    if (eg_gguf_get_float(g, KEY("rope.freq_base"), &v) == 1 || eg_gguf_get_float(g, KEY("rope.global.freq_base"), &v) == 1)
        cfg->rope_base_global = v;
    if (eg_gguf_get_float(g, KEY("rope.freq_base_swa"), &v) == 1 || eg_gguf_get_float(g, KEY("rope.local.freq_base"), &v) == 1)
        cfg->rope_base_local = v;
    if (!(cfg->rms_eps > 0 && cfg->rms_eps < 1 && cfg->rope_base_global > 1 && cfg->rope_base_local > 1))
        FAIL(EG_ERR_BAD_FILE, "%s: rms epsilon or RoPE bases out of range", path);
    cfg->query_pre_attn_scalar = (double)cfg->head_dim; /* llama.cpp: 1 / sqrt(key_length) */
    cfg->vocab = 0;                                     /* from token_embd (load.c) */
    /* which layers are global: sliding_window_pattern (a period, or a bool per layer: true = sliding) */
    if ((s = config_derive(cfg, err, errlen))) goto done;
    int64_t period = 6;
    const eg_gguf_kv *pat = eg_gguf_find(g, KEY("attention.sliding_window_pattern"));
    if (pat && pat->type == EG_GGUF_ARRAY && pat->arr_type == EG_GGUF_BOOL) {
        if (pat->n != (uint64_t)cfg->n_layers)
            FAIL(EG_ERR_BAD_FILE, "%s: %s has %llu entries for %lld layers", path, key, (unsigned long long)pat->n,
                 (long long)cfg->n_layers);
        for (int64_t i = 0; i < cfg->n_layers; i++) cfg->layer_is_global[i] = pat->data[i] == 0;
        goto done;
    }
    if (pat && eg_gguf_get_int(g, key, &period) != 1)
        FAIL(EG_ERR_BAD_FILE, "%s: %s must be an integer or an array of bools", path, key);
    if (period < 1 || period > GLOBAL_PERIOD_MAX) {
        s = out_of_range(key, period, 1, GLOBAL_PERIOD_MAX, path, err, errlen);
        goto done;
    }
    global_every(cfg, period);
#undef FAIL
#undef KEY
done:
    if (s != EG_OK) eg_config_free(cfg);
    return s;
}

/* ---------------------------------------------------------------- modules.json */

/* Last dotted component of a module type: "sentence_transformers.models.Dense" -> "Dense". */
static const char *type_tail(const char *t) {
    const char *dot = strrchr(t, '.');
    return dot ? dot + 1 : t;
}

eg_status eg_pooling_check(const json_node *o, const char *path, char *err, size_t errlen) {
    if (o->type != JSON_OBJECT) return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: expected a JSON object", path);
    const json_node *mode = json_get(o, "pooling_mode");
    int mean = 0, other = 0;
    if (mode && mode->type == JSON_STRING) { /* sentence-transformers >= 6 */
        mean = strcmp(mode->str, "mean") == 0;
        other = !mean;
    } else if (mode && mode->type == JSON_ARRAY) {
        for (size_t i = 0; i < mode->n; i++) {
            int m = mode->items[i]->type == JSON_STRING && strcmp(mode->items[i]->str, "mean") == 0;
            mean |= m;
            other |= !m;
        }
    } else { /* sentence-transformers <= 5: one boolean per mode */
        for (size_t i = 0; i < o->n; i++) {
            if (strncmp(o->keys[i], "pooling_mode_", 13) != 0 || !is_true(o->items[i])) continue;
            if (strcmp(o->keys[i], "pooling_mode_mean_tokens") == 0) mean = 1;
            else other = 1;
        }
    }
    if (!mean || other)
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                       "%s: only mean pooling (alone) is supported, as EmbeddingGemma uses; this config asks for "
                       "another pooling mode",
                       path);
    const json_node *ip = json_get(o, "include_prompt");
    if (ip && ip->type == JSON_BOOL && !ip->boolean)
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                       "%s: include_prompt is false; EmbeddingGemma averages prompt tokens too and embgemma does not "
                       "implement excluding them",
                       path);
    return EG_OK;
}

eg_status eg_dense_config(const json_node *o, const char *path, const char *mdir, eg_pipeline *pl, char *err,
                          size_t errlen) {
    const int i = pl->n_dense;
    eg_status s;
    if (!json_get(o, "in_features"))
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: a Dense config needs in_features and out_features", path);
    if ((s = get_int(o, "in_features", -1, 1, EG_MAX_DENSE_WIDTH, &pl->dense_in[i], path, err, errlen))) return s;
    if ((s = get_int(o, "out_features", -1, 1, EG_MAX_DENSE_WIDTH, &pl->dense_out[i], path, err, errlen))) return s;
    const json_node *b = json_get(o, "bias");
    pl->dense_bias[i] = !b || is_true(b); /* sentence-transformers' default is bias=True */
    const json_node *a = json_get(o, "activation_function");
    if (!a || a->type != JSON_STRING || strcmp(type_tail(a->str), "Identity") != 0)
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                       "%s: activation_function is \"%.60s\"; only Identity (as in EmbeddingGemma) is supported", path,
                       a && a->type == JSON_STRING ? a->str : "(missing: sentence-transformers would use Tanh)");
    if (is_true(json_get(o, "use_residual")))
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "%s: use_residual is true; not supported", path);
    pl->dense_dir[i] = strdup(mdir);
    if (!pl->dense_dir[i]) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    pl->n_dense++;
    return EG_OK;
}

/* A Pooling or Dense module's config.json: read from mdir, or (parser fuzzing) the node given. */
static eg_status read_module(const char *mdir, const json_node *given, int dense, eg_pipeline *pl, char *err,
                             size_t errlen) {
    char *path = join(mdir, "config.json");
    if (!path) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    json_doc *doc = NULL;
    eg_status s = given ? EG_OK : eg_read_json(path, &doc, err, errlen);
    const json_node *o = given ? given : json_root(doc);
    if (s == EG_OK)
        s = dense ? eg_dense_config(o, path, mdir, pl, err, errlen) : eg_pooling_check(o, path, err, errlen);
    json_free(doc);
    free(path);
    return s;
}

eg_status eg_pipeline_read(const char *dir, eg_pipeline *pl, char *err, size_t errlen) {
    memset(pl, 0, sizeof *pl);
    char *path = join(dir, "modules.json");
    if (!path) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    json_doc *doc = NULL;
    eg_status s;
    if (!eg_file_exists(path)) {
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                    "%s: not found. embgemma needs the sentence-transformers folder of EmbeddingGemma "
                    "(modules.json, 1_Pooling, 2_Dense, 3_Dense): without the Dense head a bare transformers "
                    "checkpoint gives different embeddings",
                    path);
        goto done;
    }
    if ((s = eg_read_json(path, &doc, err, errlen))) goto done;
    s = eg_pipeline_from_json(json_root(doc), dir, path, NULL, pl, err, errlen);
done:
    json_free(doc);
    free(path);
    if (s != EG_OK) eg_pipeline_free(pl);
    return s;
}

eg_status eg_pipeline_from_json(const json_node *mods, const char *dir, const char *path, const json_node *module_cfg,
                                eg_pipeline *pl, char *err, size_t errlen) {
    memset(pl, 0, sizeof *pl);
    eg_status s = EG_OK;
    if (mods->type != JSON_ARRAY || mods->n == 0) {
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: expected a non-empty JSON array of modules", path);
        goto done;
    }
    int stage = 0; /* 0 want Transformer, 1 want Pooling, 2 Dense or Normalize, 3 done */
    for (size_t i = 0; i < mods->n; i++) {
        const json_node *m = mods->items[i];
        const json_node *t = json_get(m, "type"), *p = json_get(m, "path");
        if (!t || t->type != JSON_STRING || (p && p->type != JSON_STRING)) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: module %zu needs a \"type\" and a \"path\" string", path, i);
            goto done;
        }
        const char *rel = p ? p->str : "";
        if (strstr(rel, "..") || rel[0] == '/') {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: module %zu path \"%.60s\" leaves the model folder", path,
                        i, rel);
            goto done;
        }
        const char *kind = type_tail(t->str);
        char *mdir = join(dir, rel);
        if (!mdir) {
            s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (strcmp(kind, "Transformer") == 0 && stage == 0) {
            pl->transformer_dir = mdir;
            mdir = NULL;
            stage = 1;
        } else if (strcmp(kind, "Pooling") == 0 && stage == 1) {
            s = read_module(mdir, module_cfg, 0, pl, err, errlen);
            stage = 2;
        } else if (strcmp(kind, "Dense") == 0 && stage == 2) {
            if (pl->n_dense == EG_MAX_DENSE) s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "%s: too many Dense modules", path);
            else s = read_module(mdir, module_cfg, 1, pl, err, errlen);
        } else if (strcmp(kind, "Normalize") == 0 && stage == 2) {
            pl->normalize = 1;
            stage = 3;
        } else {
            s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                        "%s: module %zu (%.80s) is not supported here; embgemma runs Transformer -> Pooling(mean) -> "
                        "Dense* -> Normalize",
                        path, i, t->str);
        }
        free(mdir);
        if (s != EG_OK) goto done;
    }
    if (stage < 2)
        s = eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "%s: needs a Transformer and a Pooling module", path);
done:
    if (s != EG_OK) eg_pipeline_free(pl);
    return s;
}

void eg_pipeline_free(eg_pipeline *pl) {
    free(pl->transformer_dir);
    for (int i = 0; i < pl->n_dense; i++) free(pl->dense_dir[i]);
    memset(pl, 0, sizeof *pl);
}

/* ---------------------------------------------------------------- model.safetensors.index.json */

eg_status eg_index_check(const json_node *root, const char *path, const json_node **weight_map, char *err,
                         size_t errlen) {
    const json_node *wm = json_get(root, "weight_map");
    if (!wm || wm->type != JSON_OBJECT || wm->n == 0)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: needs a non-empty \"weight_map\" object", path);
    for (size_t i = 0; i < wm->n; i++) {
        const json_node *v = wm->items[i];
        /* str_len: a name with \u0000 in it would be cut short where the C string ends */
        if (v->type != JSON_STRING || !v->str[0] || strlen(v->str) != v->str_len || strchr(v->str, '/') ||
            strcmp(v->str, ".") == 0 || strcmp(v->str, "..") == 0)
            return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: weight_map entry %zu is not a file name in the folder",
                           path, i);
    }
    *weight_map = wm;
    return EG_OK;
}
