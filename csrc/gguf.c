/* gguf.c - maps GGUF files (llama.cpp / Ollama) and validates them.
 *
 * Layout (little-endian): "GGUF", u32 version (2 or 3), u64 tensor count, u64
 * key-value count, the key-value pairs (key string, u32 type, value), the
 * tensor infos (name string, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64
 * offset), padding to general.alignment (default 32), the data section.
 * Strings are a u64 length and that many bytes (no NUL). ne is ggml's order
 * (fastest dimension first): the tensor's PyTorch shape reversed.
 *
 * Every length, count and offset is checked against the bytes that remain
 * before anything is allocated or touched, so a corrupt or hostile file is a
 * message, never a crash. No Python here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform.h"

#define GGUF_MAX_DIMS 4                 /* ggml's GGML_MAX_DIMS */
#define GGUF_MAX_KEY ((uint64_t)1 << 16) /* the format's limit on key length */
#define GGUF_MAX_DIM ((uint64_t)1 << 40)

/* ggml tensor types: block size (elements) and bytes per block. Only the ones
 * embgemma computes with are mapped to an eg_dtype; the rest are named so a
 * refusal can say what the file holds. */
static const struct {
    uint32_t id;
    const char *name;
    int blck, size;
    eg_dtype dtype;
} ggml_types[] = {
    {0, "F32", 1, 4, EG_F32},           {1, "F16", 1, 2, EG_F16},           {2, "Q4_0", 32, 18, EG_Q4_0},
    {3, "Q4_1", 32, 20, EG_DTYPE_OTHER}, {6, "Q5_0", 32, 22, EG_DTYPE_OTHER}, {7, "Q5_1", 32, 24, EG_DTYPE_OTHER},
    {8, "Q8_0", 32, 34, EG_Q8_0},       {9, "Q8_1", 32, 36, EG_DTYPE_OTHER}, {10, "Q2_K", 256, 84, EG_DTYPE_OTHER},
    {11, "Q3_K", 256, 110, EG_DTYPE_OTHER}, {12, "Q4_K", 256, 144, EG_DTYPE_OTHER},
    {13, "Q5_K", 256, 176, EG_DTYPE_OTHER}, {14, "Q6_K", 256, 210, EG_DTYPE_OTHER},
    {15, "Q8_K", 256, 292, EG_DTYPE_OTHER}, {16, "IQ2_XXS", 256, 66, EG_DTYPE_OTHER},
    {17, "IQ2_XS", 256, 74, EG_DTYPE_OTHER}, {18, "IQ3_XXS", 256, 98, EG_DTYPE_OTHER},
    {19, "IQ1_S", 256, 50, EG_DTYPE_OTHER}, {20, "IQ4_NL", 32, 18, EG_DTYPE_OTHER},
    {21, "IQ3_S", 256, 110, EG_DTYPE_OTHER}, {22, "IQ2_S", 256, 82, EG_DTYPE_OTHER},
    {23, "IQ4_XS", 256, 136, EG_DTYPE_OTHER}, {24, "I8", 1, 1, EG_DTYPE_OTHER},
    {25, "I16", 1, 2, EG_DTYPE_OTHER},  {26, "I32", 1, 4, EG_DTYPE_OTHER},  {27, "I64", 1, 8, EG_DTYPE_OTHER},
    {28, "F64", 1, 8, EG_DTYPE_OTHER},  {29, "IQ1_M", 256, 56, EG_DTYPE_OTHER}, {30, "BF16", 1, 2, EG_BF16},
    {34, "TQ1_0", 256, 54, EG_DTYPE_OTHER}, {35, "TQ2_0", 256, 66, EG_DTYPE_OTHER},
    {39, "MXFP4", 32, 17, EG_DTYPE_OTHER},
};

static const char *const value_type_names[EG_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64",
    "float64"};

const char *eg_gguf_type_name(int type) {
    return type >= 0 && type < EG_GGUF_TYPE_COUNT ? value_type_names[type] : "?";
}

/* Bytes of one scalar of a value type (0 for string / array / unknown). */
static uint64_t scalar_size(uint32_t type) {
    switch (type) {
    case EG_GGUF_UINT8:
    case EG_GGUF_INT8:
    case EG_GGUF_BOOL: return 1;
    case EG_GGUF_UINT16:
    case EG_GGUF_INT16: return 2;
    case EG_GGUF_UINT32:
    case EG_GGUF_INT32:
    case EG_GGUF_FLOAT32: return 4;
    case EG_GGUF_UINT64:
    case EG_GGUF_INT64:
    case EG_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---------------------------------------------------------------- cursor */

typedef struct {
    const uint8_t *buf;
    uint64_t size, pos;
    const char *path;
    char *err;
    size_t errlen;
} cursor;

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static eg_status need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return eg_fail(c->err, c->errlen, EG_ERR_BAD_FILE,
                       "%s: truncated GGUF: %s needs %llu bytes at offset %llu but the file has %llu", c->path, what,
                       (unsigned long long)n, (unsigned long long)c->pos, (unsigned long long)c->size);
    return EG_OK;
}

static eg_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    eg_status s = need(c, 4, what);
    if (s) return s;
    *v = (uint32_t)rd_le(c->buf + c->pos, 4);
    c->pos += 4;
    return EG_OK;
}

static eg_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    eg_status s = need(c, 8, what);
    if (s) return s;
    *v = rd_le(c->buf + c->pos, 8);
    c->pos += 8;
    return EG_OK;
}

/* A string: its bytes stay in the buffer; *p / *n point at them. */
static eg_status rd_str(cursor *c, const uint8_t **p, uint64_t *n, const char *what) {
    eg_status s = rd_u64(c, n, what);
    if (s) return s;
    if ((s = need(c, *n, what))) return s;
    *p = c->buf + c->pos;
    c->pos += *n;
    return EG_OK;
}

/* Skips one value of `type` (not an array), checking it lies in the buffer. */
static eg_status skip_value(cursor *c, uint32_t type, const char *what) {
    if (type == EG_GGUF_STRING) {
        const uint8_t *p;
        uint64_t n;
        return rd_str(c, &p, &n, what);
    }
    uint64_t sz = scalar_size(type);
    eg_status s = need(c, sz, what);
    if (s) return s;
    if (type == EG_GGUF_BOOL && c->buf[c->pos] > 1)
        return eg_fail(c->err, c->errlen, EG_ERR_BAD_FILE, "%s: %s: a bool must be 0 or 1, found %u", c->path, what,
                       c->buf[c->pos]);
    c->pos += sz;
    return EG_OK;
}

static char *dup_str(const uint8_t *p, uint64_t n) {
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, p, (size_t)n);
        s[n] = 0;
    }
    return s;
}

/* Printable, bounded copy of a name for messages. */
static const char *shown(const char *name, char *buf, size_t size) {
    size_t i = 0;
    for (; name[i] && i + 1 < size; i++) buf[i] = (name[i] >= 32 && name[i] < 127) ? name[i] : '?';
    buf[i] = 0;
    return buf;
}

/* ---------------------------------------------------------------- parse */

eg_status eg_gguf_parse(const uint8_t *buf, size_t size, const char *path, eg_gguf *g, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->path = path;
    g->alignment = 32;
    cursor c = {buf, size, 0, path, err, errlen};
    char nb[96];
    eg_status s;
    if (size < 4 || memcmp(buf, "GGUF", 4) != 0)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: not a GGUF file (the first bytes are not \"GGUF\")", path);
    c.pos = 4;
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if ((s = rd_u32(&c, &version, "the version"))) return s;
    if (version == 1)
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED,
                       "%s: GGUF version 1 (2023) is not read; convert the model again with a current llama.cpp", path);
    if (version != 2 && version != 3)
        return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "%s: GGUF version %u is not known (2 and 3 are; %s)", path,
                       version, (version & 0xFFFF) == 0 ? "this looks like a big-endian file, which is not read" : "a newer format?");
    g->version = version;
    if ((s = rd_u64(&c, &n_tensors, "the tensor count")) || (s = rd_u64(&c, &n_kv, "the metadata count"))) return s;
    /* every key-value takes >= 13 bytes and every tensor info >= 28: bound the counts by the file */
    if (n_kv > (size - c.pos) / 13 || n_tensors > (size - c.pos) / 28)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE,
                       "%s: the header claims %llu metadata entries and %llu tensors, more than the %zu-byte file can "
                       "hold (corrupt or truncated)",
                       path, (unsigned long long)n_kv, (unsigned long long)n_tensors, size);

    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    if (!g->kv) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n_kv; i++) {
        const uint8_t *kp;
        uint64_t kn;
        if ((s = rd_str(&c, &kp, &kn, "a metadata key"))) goto fail;
        if (kn == 0 || kn >= GGUF_MAX_KEY || memchr(kp, 0, (size_t)kn)) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: metadata key %llu is empty, too long or contains NUL", path,
                        (unsigned long long)i);
            goto fail;
        }
        eg_gguf_kv *kv = &g->kv[i];
        if (!(kv->key = dup_str(kp, kn))) {
            s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
            goto fail;
        }
        g->n_kv = (int64_t)i + 1;
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(g->kv[j].key, kv->key) == 0) {
                s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: metadata key \"%s\" appears twice", path,
                            shown(kv->key, nb, sizeof nb));
                goto fail;
            }
        char what[128];
        snprintf(what, sizeof what, "metadata \"%s\"", shown(kv->key, nb, sizeof nb));
        if ((s = rd_u32(&c, &kv->type, what))) goto fail;
        if (kv->type >= EG_GGUF_TYPE_COUNT) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %s has unknown value type %u", path, what, kv->type);
            goto fail;
        }
        if (kv->type == EG_GGUF_ARRAY) {
            if ((s = rd_u32(&c, &kv->arr_type, what)) || (s = rd_u64(&c, &kv->n, what))) goto fail;
            if (kv->arr_type >= EG_GGUF_TYPE_COUNT || kv->arr_type == EG_GGUF_ARRAY) {
                s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %s is an array of %s, which is not read", path, what,
                            kv->arr_type == EG_GGUF_ARRAY ? "arrays" : "an unknown type");
                goto fail;
            }
            kv->data = buf + c.pos;
            if (kv->arr_type == EG_GGUF_STRING) {
                if (kv->n > (size - c.pos) / 8) { /* each string takes >= 8 bytes */
                    s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %s claims %llu strings, more than the file holds",
                                path, what, (unsigned long long)kv->n);
                    goto fail;
                }
                for (uint64_t j = 0; j < kv->n; j++)
                    if ((s = skip_value(&c, EG_GGUF_STRING, what))) goto fail;
            } else {
                const uint64_t sz = scalar_size(kv->arr_type);
                if (kv->n > (size - c.pos) / sz) {
                    s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %s claims %llu elements, more than the file holds",
                                path, what, (unsigned long long)kv->n);
                    goto fail;
                }
                if (kv->arr_type == EG_GGUF_BOOL) {
                    for (uint64_t j = 0; j < kv->n; j++)
                        if ((s = skip_value(&c, EG_GGUF_BOOL, what))) goto fail;
                } else {
                    c.pos += kv->n * sz;
                }
            }
        } else {
            kv->n = 1;
            kv->data = buf + c.pos;
            if ((s = skip_value(&c, kv->type, what))) goto fail;
        }
        kv->nbytes = (uint64_t)(buf + c.pos - kv->data);
    }

    /* general.alignment: a power of two */
    const eg_gguf_kv *al = eg_gguf_find(g, "general.alignment");
    if (al) {
        uint64_t a = 0;
        if (al->type == EG_GGUF_UINT32) a = rd_le(al->data, 4);
        if (al->type != EG_GGUF_UINT32 || a == 0 || (a & (a - 1)) || a > (1u << 24)) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: general.alignment must be a uint32 power of two", path);
            goto fail;
        }
        g->alignment = a;
    }

    /* tensor infos */
    eg_tensor_set *set = &g->tensors;
    set->cap = n_tensors ? (int64_t)n_tensors : 1;
    set->tensors = calloc((size_t)set->cap, sizeof *set->tensors);
    uint64_t *offsets = calloc((size_t)set->cap, sizeof *offsets);
    if (!set->tensors || !offsets) {
        free(offsets);
        s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < n_tensors && s == EG_OK; i++) {
        const uint8_t *np;
        uint64_t nn;
        if ((s = rd_str(&c, &np, &nn, "a tensor name"))) break;
        if (nn == 0 || nn >= GGUF_MAX_KEY || memchr(np, 0, (size_t)nn)) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor %llu has an empty, too long or NUL-holding name",
                        path, (unsigned long long)i);
            break;
        }
        eg_tensor *t = &set->tensors[i];
        if (!(t->name = dup_str(np, nn))) {
            s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
            break;
        }
        set->n = (int64_t)i + 1;
        t->file = path;
        shown(t->name, nb, sizeof nb);
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(set->tensors[j].name, t->name) == 0) {
                s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%s\" appears twice", path, nb);
                break;
            }
        if (s) break;
        uint32_t nd, type;
        if ((s = rd_u32(&c, &nd, "a tensor's dimension count"))) break;
        if (nd < 1 || nd > GGUF_MAX_DIMS) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%s\" has %u dimensions (1 to %d are valid)", path,
                        nb, nd, GGUF_MAX_DIMS);
            break;
        }
        uint64_t ne[GGUF_MAX_DIMS], numel = 1;
        for (uint32_t d = 0; d < nd && s == EG_OK; d++) {
            if ((s = rd_u64(&c, &ne[d], "a tensor dimension"))) break;
            if (ne[d] < 1 || ne[d] > GGUF_MAX_DIM || numel > (UINT64_MAX >> 8) / ne[d])
                s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%s\": dimension %u is %llu (absurd)", path,
                            nb, d, (unsigned long long)ne[d]);
            else numel *= ne[d];
        }
        if (s) break;
        if ((s = rd_u32(&c, &type, "a tensor type")) || (s = rd_u64(&c, &offsets[i], "a tensor offset"))) break;
        int ti = -1;
        for (size_t k = 0; k < sizeof ggml_types / sizeof ggml_types[0]; k++)
            if (ggml_types[k].id == type) ti = (int)k;
        if (ti < 0) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%s\" has unknown ggml type %u", path, nb, type);
            break;
        }
        if (ne[0] % (uint64_t)ggml_types[ti].blck != 0) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%s\": %s needs rows of a multiple of %d, not %llu",
                        path, nb, ggml_types[ti].name, ggml_types[ti].blck, (unsigned long long)ne[0]);
            break;
        }
        t->dtype = ggml_types[ti].dtype;
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", ggml_types[ti].name);
        t->ndim = (int)nd;
        for (uint32_t d = 0; d < nd; d++) t->shape[d] = (int64_t)ne[nd - 1 - d]; /* PyTorch order */
        t->nbytes = (int64_t)(numel / (uint64_t)ggml_types[ti].blck * (uint64_t)ggml_types[ti].size);
    }
    if (s) {
        free(offsets);
        goto fail;
    }
    /* data section: aligned after the infos; tensors in order, each aligned, as llama.cpp requires */
    uint64_t start = (c.pos + g->alignment - 1) / g->alignment * g->alignment, expect = 0;
    if (n_tensors && start > size) {
        free(offsets);
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: truncated GGUF: no data section after the tensor infos", path);
        goto fail;
    }
    const uint64_t data_size = start <= size ? size - start : 0;
    for (int64_t i = 0; i < set->n; i++) {
        eg_tensor *t = &set->tensors[i];
        shown(t->name, nb, sizeof nb);
        if (offsets[i] != expect) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE,
                        "%s: tensor \"%s\" starts at data offset %llu, expected %llu (tensors must follow each other, "
                        "aligned to %llu bytes)",
                        path, nb, (unsigned long long)offsets[i], (unsigned long long)expect,
                        (unsigned long long)g->alignment);
            break;
        }
        if ((uint64_t)t->nbytes > data_size || offsets[i] > data_size - (uint64_t)t->nbytes) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE,
                        "%s: tensor \"%s\" (%lld bytes at data offset %llu) runs past the end of the file (truncated?)",
                        path, nb, (long long)t->nbytes, (unsigned long long)offsets[i]);
            break;
        }
        t->data = buf + start + offsets[i];
        expect = offsets[i] + ((uint64_t)t->nbytes + g->alignment - 1) / g->alignment * g->alignment;
    }
    free(offsets);
    if (s) goto fail;
    return EG_OK;
fail:
    eg_gguf_clear(g);
    return s;
}

const eg_gguf_kv *eg_gguf_find(const eg_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

int eg_gguf_get_int(const eg_gguf *g, const char *key, int64_t *out) {
    const eg_gguf_kv *kv = eg_gguf_find(g, key);
    if (!kv) return 0;
    const uint8_t *p = kv->data;
    switch (kv->type) {
    case EG_GGUF_UINT8: *out = p[0]; return 1;
    case EG_GGUF_INT8: *out = (int8_t)p[0]; return 1;
    case EG_GGUF_UINT16: *out = (int64_t)rd_le(p, 2); return 1;
    case EG_GGUF_INT16: *out = (int16_t)rd_le(p, 2); return 1;
    case EG_GGUF_UINT32: *out = (int64_t)rd_le(p, 4); return 1;
    case EG_GGUF_INT32: *out = (int32_t)rd_le(p, 4); return 1;
    case EG_GGUF_UINT64: {
        uint64_t v = rd_le(p, 8);
        if (v > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)v;
        return 1;
    }
    case EG_GGUF_INT64: *out = (int64_t)rd_le(p, 8); return 1;
    default: return -1;
    }
}

int eg_gguf_get_float(const eg_gguf *g, const char *key, double *out) {
    const eg_gguf_kv *kv = eg_gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type == EG_GGUF_FLOAT32) {
        uint32_t u = (uint32_t)rd_le(kv->data, 4);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
        return 1;
    }
    if (kv->type == EG_GGUF_FLOAT64) {
        uint64_t u = rd_le(kv->data, 8);
        memcpy(out, &u, 8);
        return 1;
    }
    int64_t i;
    int r = eg_gguf_get_int(g, key, &i);
    if (r == 1) *out = (double)i;
    return r;
}

int eg_gguf_get_bool(const eg_gguf *g, const char *key, int *out) {
    const eg_gguf_kv *kv = eg_gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != EG_GGUF_BOOL) return -1;
    *out = kv->data[0] != 0;
    return 1;
}

int eg_gguf_get_str(const eg_gguf *g, const char *key, char *buf, size_t size) {
    const eg_gguf_kv *kv = eg_gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != EG_GGUF_STRING || size == 0) return -1;
    uint64_t n = rd_le(kv->data, 8);
    size_t m = n < size - 1 ? (size_t)n : size - 1;
    memcpy(buf, kv->data + 8, m);
    buf[m] = 0;
    return memchr(buf, 0, m) ? -1 : 1;
}

int64_t eg_gguf_meta_count(const eg_gguf *g) { return g->n_kv; }

void eg_gguf_meta(const eg_gguf *g, int64_t i, const char **key, int *type, int *arr_type, uint64_t *n) {
    const eg_gguf_kv *kv = &g->kv[i];
    *key = kv->key;
    *type = (int)kv->type;
    *arr_type = kv->type == EG_GGUF_ARRAY ? (int)kv->arr_type : (int)kv->type;
    *n = kv->n;
}

static const uint8_t *element(const eg_gguf_kv *kv, uint64_t j, uint32_t *type) {
    *type = kv->type == EG_GGUF_ARRAY ? kv->arr_type : kv->type;
    return kv->data + j * scalar_size(*type);
}

int64_t eg_gguf_meta_int(const eg_gguf *g, int64_t i, uint64_t j) {
    uint32_t type;
    const uint8_t *p = element(&g->kv[i], j, &type);
    switch (type) {
    case EG_GGUF_INT8: return (int8_t)p[0];
    case EG_GGUF_INT16: return (int16_t)rd_le(p, 2);
    case EG_GGUF_INT32: return (int32_t)rd_le(p, 4);
    case EG_GGUF_UINT8:
    case EG_GGUF_BOOL:
    case EG_GGUF_UINT16:
    case EG_GGUF_UINT32:
    case EG_GGUF_UINT64:
    case EG_GGUF_INT64: return (int64_t)rd_le(p, (int)scalar_size(type));
    default: return 0;
    }
}

double eg_gguf_meta_float(const eg_gguf *g, int64_t i, uint64_t j) {
    uint32_t type;
    const uint8_t *p = element(&g->kv[i], j, &type);
    if (type == EG_GGUF_FLOAT32) {
        uint32_t u = (uint32_t)rd_le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (type == EG_GGUF_FLOAT64) {
        uint64_t u = rd_le(p, 8);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    return (double)eg_gguf_meta_int(g, i, j);
}

void eg_gguf_meta_strings(const eg_gguf *g, int64_t i, const char **ptrs, uint64_t *lens) {
    const eg_gguf_kv *kv = &g->kv[i];
    const uint8_t *p = kv->data;
    for (uint64_t j = 0; j < kv->n; j++) { /* lengths were checked by the parser */
        lens[j] = rd_le(p, 8);
        ptrs[j] = (const char *)p + 8;
        p += 8 + lens[j];
    }
}

int64_t eg_gguf_tensor_count(const eg_gguf *g) { return g->tensors.n; }

void eg_gguf_tensor(const eg_gguf *g, int64_t i, const char **name, const char **type, int *ndim, int64_t shape[4]) {
    const eg_tensor *t = &g->tensors.tensors[i];
    *name = t->name;
    *type = t->dtype_name;
    *ndim = t->ndim;
    for (int d = 0; d < 4; d++) shape[d] = d < t->ndim ? t->shape[d] : 0;
}

void eg_gguf_clear(eg_gguf *g) {
    for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
    free(g->kv);
    g->kv = NULL;
    g->n_kv = 0;
    eg_st_free(&g->tensors);
}

/* ---------------------------------------------------------------- files */

eg_status eg_gguf_open(const char *path, eg_gguf **out, char *err, size_t errlen) {
    *out = NULL;
    eg_tensor_set files = {0}; /* the mapping; handed to g->tensors once the parse succeeds */
    const uint8_t *buf;
    size_t size;
    const char *pcopy;
    eg_status s = eg_map_into(&files, path, 24, "GGUF", &buf, &size, &pcopy, err, errlen);
    if (s) return s;
    eg_gguf *g = calloc(1, sizeof *g);
    if (!g) s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    else s = eg_gguf_parse(buf, size, pcopy, g, err, errlen); /* clears g itself on failure */
    if (s) {
        free(g);
        eg_st_free(&files);
        return s;
    }
    g->tensors.maps = files.maps;
    g->tensors.map_sizes = files.map_sizes;
    g->tensors.map_paths = files.map_paths;
    g->tensors.n_maps = files.n_maps;
    for (int64_t i = 0; i < g->tensors.n; i++) g->tensors.tensors[i].mapped = 1;
    *out = g;
    return EG_OK;
}

void eg_gguf_close(eg_gguf *g) {
    if (!g) return;
    eg_gguf_clear(g);
    free(g);
}

int eg_is_gguf(const char *path) {
    uint64_t size;
    int regular;
    if (eg_os_stat(path, &size, &regular) != 0 || !regular || size < 4) return 0;
    FILE *f = eg_os_fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    const int ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    fclose(f);
    return ok;
}
