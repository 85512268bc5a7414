/* json.c - strict JSON parser into an arena (see json.h). No Python here. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

/* Arena: a chain of blocks; nodes, strings and pointer arrays are carved from it. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_block;

struct json_doc {
    arena_block *blocks;
    json_node *root;
};

typedef struct {
    const char *p, *begin, *end;
    json_doc *doc;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void *arena_alloc(json_doc *doc, size_t size) {
    size = (size + 15) & ~(size_t)15;
    arena_block *b = doc->blocks;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        b = malloc(sizeof(arena_block) + cap);
        if (!b) return NULL;
        b->next = doc->blocks;
        b->used = 0;
        b->cap = cap;
        doc->blocks = b;
    }
    void *out = b->data + b->used;
    b->used += size;
    return out;
}

static void fail(parser *ps, const char *fmt, ...) {
    if (ps->failed) return;
    ps->failed = 1;
    char msg[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "invalid JSON at byte %lld: %s", (long long)(ps->p - ps->begin), msg);
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static json_node *new_node(parser *ps, json_type t) {
    json_node *n = arena_alloc(ps->doc, sizeof *n);
    if (!n) {
        fail(ps, "out of memory");
        return NULL;
    }
    memset(n, 0, sizeof *n);
    n->type = t;
    return n;
}

static int hex4(parser *ps, unsigned *out) {
    if (ps->end - ps->p < 4) return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    ps->p += 4;
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

/* Parses a string starting at the opening quote. Decoded text never exceeds the raw length. */
static const char *parse_string(parser *ps, size_t *len_out) {
    ps->p++; /* opening quote */
    const char *start = ps->p;
    const char *q = start;
    while (q < ps->end && *q != '"') {
        if (*q == '\\') q++;
        q++;
    }
    if (q >= ps->end) {
        fail(ps, "unterminated string");
        return NULL;
    }
    char *out = arena_alloc(ps->doc, (size_t)(q - start) + 1);
    if (!out) {
        fail(ps, "out of memory");
        return NULL;
    }
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            fail(ps, "control character in string");
            return NULL;
        }
        if (c != '\\') {
            out[n++] = (char)c;
            ps->p++;
            continue;
        }
        ps->p++;
        if (ps->p >= ps->end) break;
        char e = *ps->p++;
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!hex4(ps, &cp)) {
                fail(ps, "bad \\u escape");
                return NULL;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                    ps->p += 2;
                    if (!hex4(ps, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        fail(ps, "bad surrogate pair");
                        return NULL;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else {
                    cp = 0xFFFD; /* lone high surrogate */
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD; /* lone low surrogate */
            }
            /* a \uXXXX escape is 6 raw bytes and decodes to at most 4 */
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            fail(ps, "bad escape '\\%c'", e);
            return NULL;
        }
    }
    if (ps->p >= ps->end) {
        fail(ps, "unterminated string");
        return NULL;
    }
    ps->p++; /* closing quote */
    out[n] = 0;
    *len_out = n;
    return out;
}

static json_node *parse_value(parser *ps, int depth);

static int cmp_keys(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Growable temporary list of children, moved into the arena when complete. */
typedef struct {
    json_node **items;
    const char **keys;
    size_t n, cap;
} child_list;

static int child_push(child_list *cl, const char *key, json_node *v) {
    if (cl->n == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 8;
        json_node **ni = realloc(cl->items, cap * sizeof *ni);
        if (!ni) return 0;
        cl->items = ni;
        const char **nk = realloc(cl->keys, cap * sizeof *nk);
        if (!nk) return 0;
        cl->keys = nk;
        cl->cap = cap;
    }
    cl->items[cl->n] = v;
    cl->keys[cl->n] = key;
    cl->n++;
    return 1;
}

static json_node *parse_container(parser *ps, int depth, int is_object) {
    char close = is_object ? '}' : ']';
    json_node *node = new_node(ps, is_object ? JSON_OBJECT : JSON_ARRAY);
    if (!node) return NULL;
    ps->p++;
    child_list cl = {0};
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return node;
    }
    for (;;) {
        const char *key = NULL;
        skip_ws(ps);
        if (is_object) {
            size_t klen;
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a string key");
                break;
            }
            key = parse_string(ps, &klen);
            if (!key) break;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                fail(ps, "expected ':'");
                break;
            }
            ps->p++;
        }
        json_node *v = parse_value(ps, depth + 1);
        if (!v) break;
        if (!child_push(&cl, key, v)) {
            fail(ps, "out of memory");
            break;
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            break;
        }
        fail(ps, "expected ',' or '%c'", close);
        break;
    }
    if (!ps->failed && cl.n) {
        node->n = cl.n;
        node->items = arena_alloc(ps->doc, cl.n * sizeof *node->items);
        node->keys = is_object ? arena_alloc(ps->doc, cl.n * sizeof *node->keys) : NULL;
        if (!node->items || (is_object && !node->keys)) {
            fail(ps, "out of memory");
        } else {
            memcpy(node->items, cl.items, cl.n * sizeof *node->items);
            if (is_object) {
                memcpy(node->keys, cl.keys, cl.n * sizeof *node->keys);
                /* duplicate keys are refused: sort a copy and compare neighbours */
                memcpy(cl.keys, node->keys, cl.n * sizeof *cl.keys);
                qsort(cl.keys, cl.n, sizeof *cl.keys, cmp_keys);
                for (size_t i = 1; i < cl.n; i++) {
                    if (strcmp(cl.keys[i - 1], cl.keys[i]) == 0) {
                        fail(ps, "duplicate key \"%.64s\"", cl.keys[i]);
                        break;
                    }
                }
            }
        }
    }
    free(cl.items);
    free(cl.keys);
    return ps->failed ? NULL : node;
}

static json_node *parse_number(parser *ps) {
    const char *s = ps->p;
    const char *q = s;
    int is_int = 1;
    if (q < ps->end && *q == '-') q++;
    if (q >= ps->end || *q < '0' || *q > '9') {
        fail(ps, "bad number");
        return NULL;
    }
    if (*q == '0') q++;
    else while (q < ps->end && *q >= '0' && *q <= '9') q++;
    if (q < ps->end && *q == '.') {
        is_int = 0;
        q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            fail(ps, "bad number");
            return NULL;
        }
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        is_int = 0;
        q++;
        if (q < ps->end && (*q == '+' || *q == '-')) q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            fail(ps, "bad number");
            return NULL;
        }
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    size_t len = (size_t)(q - s);
    if (len > 64) {
        fail(ps, "number too long");
        return NULL;
    }
    char buf[72];
    memcpy(buf, s, len);
    buf[len] = 0;
    json_node *n = new_node(ps, JSON_NUMBER);
    if (!n) return NULL;
    n->number = strtod(buf, NULL);
    if (is_int) {
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        n->is_integer = errno == 0;
        n->integer = v;
    }
    ps->p = q;
    return n;
}

static int match_word(parser *ps, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, w, n) == 0) {
        ps->p += n;
        return 1;
    }
    return 0;
}

static json_node *parse_value(parser *ps, int depth) {
    if (depth > JSON_MAX_DEPTH) {
        fail(ps, "nesting deeper than %d", JSON_MAX_DEPTH);
        return NULL;
    }
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end of input");
        return NULL;
    }
    char c = *ps->p;
    if (c == '{') return parse_container(ps, depth, 1);
    if (c == '[') return parse_container(ps, depth, 0);
    if (c == '"') {
        json_node *n = new_node(ps, JSON_STRING);
        if (!n) return NULL;
        n->str = parse_string(ps, &n->str_len);
        return n->str ? n : NULL;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps);
    if (match_word(ps, "true") || match_word(ps, "false")) {
        json_node *n = new_node(ps, JSON_BOOL);
        if (n) n->boolean = ps->p[-1] == 'e' && ps->p[-2] == 'u';
        return n;
    }
    if (match_word(ps, "null")) return new_node(ps, JSON_NULL);
    /* Python's json writes these for non-finite floats; accept them as numbers */
    if (match_word(ps, "NaN") || match_word(ps, "Infinity")) {
        json_node *n = new_node(ps, JSON_NUMBER);
        if (n) n->number = ps->p[-1] == 'N' ? NAN : INFINITY;
        return n;
    }
    fail(ps, "unexpected character 0x%02x", (unsigned char)c);
    return NULL;
}

json_doc *json_parse(const char *text, size_t len, char *err, size_t errlen) {
    json_doc *doc = calloc(1, sizeof *doc);
    if (!doc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    parser ps = {text, text, text + len, doc, err, errlen, 0};
    doc->root = parse_value(&ps, 0);
    if (doc->root) {
        skip_ws(&ps);
        if (ps.p != ps.end) fail(&ps, "trailing data after the JSON value");
    }
    if (ps.failed || !doc->root) {
        json_free(doc);
        return NULL;
    }
    return doc;
}

void json_free(json_doc *doc) {
    if (!doc) return;
    arena_block *b = doc->blocks;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(doc);
}

const json_node *json_root(const json_doc *doc) { return doc ? doc->root : NULL; }

const json_node *json_get(const json_node *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
    return NULL;
}
