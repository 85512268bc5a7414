/* safetensors.c - maps .safetensors files and validates their headers.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...},
 * then the data section; offsets are relative to its start. Every number is
 * checked against the file size before any tensor is touched. No Python here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform.h"

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* the format's own limit */

static const struct {
    const char *name;
    eg_dtype dtype;
    int size;
} st_dtypes[] = {
    {"F32", EG_F32, 4},         {"F16", EG_F16, 2},        {"BF16", EG_BF16, 2},     {"F64", EG_DTYPE_OTHER, 8},
    {"I64", EG_DTYPE_OTHER, 8}, {"I32", EG_DTYPE_OTHER, 4}, {"I16", EG_DTYPE_OTHER, 2}, {"I8", EG_DTYPE_OTHER, 1},
    {"U8", EG_DTYPE_OTHER, 1},  {"U16", EG_DTYPE_OTHER, 2}, {"U32", EG_DTYPE_OTHER, 4}, {"U64", EG_DTYPE_OTHER, 8},
    {"BOOL", EG_DTYPE_OTHER, 1}, {"F8_E4M3", EG_DTYPE_OTHER, 1}, {"F8_E5M2", EG_DTYPE_OTHER, 1},
};

static eg_status set_push(eg_tensor_set *set, eg_tensor *t, char *err, size_t errlen) {
    if (set->n == set->cap) {
        int64_t cap = set->cap ? set->cap * 2 : 64;
        eg_tensor *nt = realloc(set->tensors, (size_t)cap * sizeof *nt);
        if (!nt) return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
        set->tensors = nt;
        set->cap = cap;
    }
    set->tensors[set->n++] = *t;
    return EG_OK;
}

eg_tensor *eg_st_find(eg_tensor_set *set, const char *name) {
    for (int64_t i = 0; i < set->n; i++)
        if (strcmp(set->tensors[i].name, name) == 0) return &set->tensors[i];
    return NULL;
}

eg_status eg_st_parse_header(const uint8_t *buf, size_t size, const char *path, eg_tensor_set *set, char *err,
                             size_t errlen) {
    if (size < 8)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %zu bytes is too short for a safetensors file", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER || hlen > size - 8)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE,
                       "%s: header length %llu does not fit in the %zu-byte file (truncated or not safetensors)", path,
                       (unsigned long long)hlen, size);
    char jerr[256];
    json_doc *doc = json_parse((const char *)buf + 8, (size_t)hlen, jerr, sizeof jerr);
    if (!doc) return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: header is not valid JSON: %s", path, jerr);
    const json_node *root = json_root(doc);
    eg_status s = EG_OK;
    uint64_t data_size = size - 8 - hlen;
    const uint8_t *data = buf + 8 + hlen;
    int64_t first_new = set->n;
    if (root->type != JSON_OBJECT) {
        s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: header is not a JSON object", path);
        goto done;
    }
    for (size_t i = 0; i < root->n && s == EG_OK; i++) {
        const char *name = root->keys[i];
        const json_node *e = root->items[i];
        if (strcmp(name, "__metadata__") == 0) continue;
        const json_node *dt = json_get(e, "dtype"), *shape = json_get(e, "shape"), *offs = json_get(e, "data_offsets");
        if (!dt || dt->type != JSON_STRING || !shape || shape->type != JSON_ARRAY || !offs ||
            offs->type != JSON_ARRAY || offs->n != 2) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%.80s\": needs dtype, shape and data_offsets",
                        path, name);
            break;
        }
        eg_tensor t;
        memset(&t, 0, sizeof t);
        int esize = 0;
        for (size_t d = 0; d < sizeof st_dtypes / sizeof st_dtypes[0]; d++) {
            if (strcmp(dt->str, st_dtypes[d].name) == 0) {
                t.dtype = st_dtypes[d].dtype;
                esize = st_dtypes[d].size;
            }
        }
        if (!esize) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%.80s\": unknown dtype \"%.16s\"", path, name,
                        dt->str);
            break;
        }
        snprintf(t.dtype_name, sizeof t.dtype_name, "%s", dt->str);
        if (shape->n > 8) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%.80s\": %zu dimensions", path, name, shape->n);
            break;
        }
        t.ndim = (int)shape->n;
        uint64_t numel = 1;
        int overflow = 0;
        for (size_t d = 0; d < shape->n; d++) {
            const json_node *v = shape->items[d];
            if (v->type != JSON_NUMBER || !v->is_integer || v->integer < 0 || v->integer > ((int64_t)1 << 40)) {
                overflow = -1;
                break;
            }
            t.shape[d] = v->integer;
            if (v->integer && numel > (UINT64_MAX >> 8) / (uint64_t)v->integer) overflow = 1;
            numel *= (uint64_t)v->integer;
        }
        if (overflow < 0) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%.80s\": shape entries must be integers in 0..2^40",
                        path, name);
            break;
        }
        const json_node *b = offs->items[0], *en = offs->items[1];
        if (b->type != JSON_NUMBER || en->type != JSON_NUMBER || !b->is_integer || !en->is_integer ||
            b->integer < 0 || en->integer < b->integer || (uint64_t)en->integer > data_size) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE,
                        "%s: tensor \"%.80s\": data_offsets out of range of the %llu-byte data section "
                        "(file truncated?)",
                        path, name, (unsigned long long)data_size);
            break;
        }
        if (overflow || numel * (uint64_t)esize != (uint64_t)(en->integer - b->integer)) {
            s = eg_fail(err, errlen, EG_ERR_BAD_FILE,
                        "%s: tensor \"%.80s\": %lld bytes of data for a %s tensor of %llu elements", path, name,
                        (long long)(en->integer - b->integer), t.dtype_name, (unsigned long long)numel);
            break;
        }
        t.data = data + b->integer;
        t.nbytes = en->integer - b->integer;
        t.file = path;
        /* names are unique within one header (the JSON reader refuses duplicate keys); check earlier shards */
        for (int64_t j = 0; j < first_new && s == EG_OK; j++)
            if (strcmp(set->tensors[j].name, name) == 0)
                s = eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: tensor \"%.80s\" is also in %s", path, name,
                            set->tensors[j].file);
        if (s != EG_OK) break;
        t.name = strdup(name);
        if (!t.name) {
            s = eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
            break;
        }
        s = set_push(set, &t, err, errlen);
        if (s != EG_OK) free(t.name);
    }
done:
    if (s != EG_OK) { /* drop this file's partial tensors */
        for (int64_t i = first_new; i < set->n; i++) free(set->tensors[i].name);
        set->n = first_new;
    }
    json_free(doc);
    return s;
}

eg_status eg_map_into(eg_tensor_set *set, const char *path, size_t min_size, const char *kind,
                      const uint8_t **data, size_t *size, const char **owned_path, char *err, size_t errlen) {
    void *map;
    size_t n;
    *data = NULL, *size = 0, *owned_path = NULL;
    eg_status s = eg_os_map(path, min_size, kind, &map, &n, err, errlen);
    if (s) return s;
    void **nm = realloc(set->maps, (size_t)(set->n_maps + 1) * sizeof *nm);
    size_t *ns = realloc(set->map_sizes, (size_t)(set->n_maps + 1) * sizeof *ns);
    char **np = realloc(set->map_paths, (size_t)(set->n_maps + 1) * sizeof *np);
    if (nm) set->maps = nm;
    if (ns) set->map_sizes = ns;
    if (np) set->map_paths = np;
    char *pcopy = strdup(path);
    if (!nm || !ns || !np || !pcopy) {
        free(pcopy);
        eg_os_unmap(map, n);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "out of memory");
    }
    set->maps[set->n_maps] = map;
    set->map_sizes[set->n_maps] = n;
    set->map_paths[set->n_maps] = pcopy;
    set->n_maps++;
    *data = map;
    *size = n;
    *owned_path = pcopy;
    return EG_OK;
}

eg_status eg_st_open(const char *path, eg_tensor_set *set, char *err, size_t errlen) {
    const uint8_t *map;
    size_t size;
    const char *pcopy;
    eg_status s = eg_map_into(set, path, 8, "safetensors", &map, &size, &pcopy, err, errlen);
    if (s) return s;
    const int64_t first = set->n;
    s = eg_st_parse_header(map, size, pcopy, set, err, errlen);
    for (int64_t i = first; i < set->n && s == EG_OK; i++) set->tensors[i].mapped = 1;
    return s;
}

void eg_st_release(const eg_tensor *t) {
    if (!t->mapped) return; /* only file-backed pages: madvise would zero anonymous memory */
    eg_os_release_pages(t->data, (size_t)t->nbytes);
}

void eg_st_free(eg_tensor_set *set) {
    for (int64_t i = 0; i < set->n; i++) free(set->tensors[i].name);
    free(set->tensors);
    for (int i = 0; i < set->n_maps; i++) {
        eg_os_unmap(set->maps[i], set->map_sizes[i]);
        free(set->map_paths[i]);
    }
    free(set->maps);
    free(set->map_sizes);
    free(set->map_paths);
    memset(set, 0, sizeof *set);
}
