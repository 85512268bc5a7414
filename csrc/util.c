/* util.c - error formatting, small-file reading, float conversions. No Python here. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform.h"

eg_status eg_fail(char *err, size_t errlen, eg_status status, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

int eg_file_exists(const char *path) {
    uint64_t size;
    int regular;
    return eg_os_stat(path, &size, &regular) == 0 && regular;
}

eg_status eg_read_file(const char *path, size_t max_bytes, char **out, size_t *len, char *err, size_t errlen) {
    *out = NULL;
    *len = 0;
    uint64_t size;
    int regular;
    if (eg_os_stat(path, &size, &regular) != 0)
        return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!regular) return eg_fail(err, errlen, EG_ERR_IO, "%s: not a regular file", path);
    if (size > max_bytes)
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %lld bytes, more than the %zu this file may have", path,
                       (long long)size, max_bytes);
    FILE *f = eg_os_fopen(path, "rb");
    if (!f) return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t n = (size_t)size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return eg_fail(err, errlen, EG_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (got != n || bad) {
        free(buf);
        return eg_fail(err, errlen, EG_ERR_IO, "%s: read %zu of %zu bytes", path, got, n);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return EG_OK;
}

eg_status eg_read_json(const char *path, json_doc **out, char *err, size_t errlen) {
    char *text;
    size_t len;
    *out = NULL;
    eg_status s = eg_read_file(path, (size_t)64 << 20, &text, &len, err, errlen);
    if (s != EG_OK) return s;
    char jerr[256];
    json_doc *doc = json_parse(text, len, jerr, sizeof jerr);
    free(text);
    if (!doc) return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %s", path, jerr);
    *out = doc;
    return EG_OK;
}

float eg_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float eg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: renormalize */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            mant &= 0x3FF;
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7F800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}
