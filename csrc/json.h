/* json.h - a small, strict JSON reader for the files a model folder holds
 * (config.json, modules.json, the module configs, safetensors headers).
 *
 * The whole document is parsed into one arena; every node lives until
 * json_free(). Input is untrusted: sizes, nesting depth and escapes are all
 * checked, and a failure returns NULL with a message naming the byte offset.
 * No Python here.
 */
#ifndef EG_JSON_H
#define EG_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    JSON_NULL = 0,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} json_type;

typedef struct json_node json_node;
struct json_node {
    json_type type;
    int is_integer;       /* number written without fraction or exponent     */
    int boolean;          /* JSON_BOOL                                         */
    double number;        /* JSON_NUMBER                                       */
    int64_t integer;      /* JSON_NUMBER when is_integer and it fits in int64  */
    const char *str;      /* JSON_STRING: decoded UTF-8, NUL-terminated        */
    size_t str_len;       /* bytes in str (may contain NUL from \u0000)        */
    size_t n;             /* JSON_ARRAY / JSON_OBJECT: element count           */
    json_node **items;    /* [n] element nodes (values, for objects)           */
    const char **keys;    /* [n] keys, JSON_OBJECT only                        */
};

typedef struct json_doc json_doc;

/* Parse text[0..len). On failure returns NULL and writes a message to err. */
json_doc *json_parse(const char *text, size_t len, char *err, size_t errlen);
void json_free(json_doc *doc);
const json_node *json_root(const json_doc *doc);

/* Object member lookup; NULL when absent or when obj is not an object. */
const json_node *json_get(const json_node *obj, const char *key);

#endif
