/* internal.h - the engine's data structures, shared by the C files of csrc/.
 *
 * Shapes are written [rows, cols] with row-major storage. T is the number of
 * tokens in a call (all sequences packed back to back), S the number of
 * sequences, D = hidden, H = n_heads, Hd = head_dim, I = intermediate.
 * No Python here.
 */
#ifndef EG_INTERNAL_H
#define EG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "embgemma.h"
#include "json.h"
#include "kernels.h"

#define EG_ERRLEN 512
#define EG_MAX_POSITIONS 32768 /* RoPE tables are built for at most this many positions */

/* ---------------------------------------------------------------- errors */

/* Formats a message into err and returns status; every failure goes through it. */
#if defined(__MINGW32__) && !defined(__clang__) /* C99 formats (%zu, %lld): the build sets __USE_MINGW_ANSI_STDIO */
#define EG_PRINTF_LIKE(f, a) __attribute__((format(gnu_printf, f, a)))
#elif defined(__GNUC__)
#define EG_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define EG_PRINTF_LIKE(f, a)
#endif
eg_status eg_fail(char *err, size_t errlen, eg_status status, const char *fmt, ...) EG_PRINTF_LIKE(4, 5);

/* The OpenMP team size a call may use: `requested`, or 1 in a child forked after a team ran
 * (dispatch.c). Every parallel region's size goes through it. */
int eg_threads_for_call(int requested);

/* ---------------------------------------------------------------- config */

typedef struct {
    int64_t hidden;            /* D                                              */
    int64_t n_layers;
    int64_t n_heads;           /* H                                              */
    int64_t n_kv_heads;        /* must divide H                                  */
    int64_t head_dim;          /* Hd, even                                       */
    int64_t intermediate;      /* I                                              */
    int64_t vocab;
    int64_t max_positions;
    int64_t sliding_window;    /* raw value from config.json                     */
    int64_t window_radius;     /* sliding_window / 2: |i-j| <= radius is allowed */
    double rms_eps;
    double rope_base_global;   /* full_attention layers                         */
    double rope_base_local;    /* sliding_attention layers                      */
    double query_pre_attn_scalar;
    uint8_t *layer_is_global;  /* [n_layers] 1 = full attention, 0 = sliding    */
} eg_config;

/* Parses and validates config.json; everything else trusts the result. */
eg_status eg_config_read(const char *path, eg_config *cfg, char *err, size_t errlen);
/* The same on a parsed document (path names it in messages); also the parser fuzz hook's entry. */
eg_status eg_config_from_json(const json_node *root, const char *path, eg_config *cfg, char *err, size_t errlen);
/* The same from a GGUF's metadata (g->path names it in messages): one table of the integers both
 * formats carry, with one set of limits. */
eg_status eg_config_from_gguf(const eg_gguf *g, eg_config *cfg, char *err, size_t errlen);
/* A GGUF's vocabulary is its token_embd's rows: checked against the same range as vocab_size. */
eg_status eg_config_set_vocab(eg_config *cfg, int64_t rows, const char *path, char *err, size_t errlen);
void eg_config_free(eg_config *cfg);

/* The sentence-transformers pipeline read from modules.json. */
#define EG_MAX_DENSE 8
#define EG_MAX_DENSE_WIDTH (1 << 20) /* in and out features of a Dense module, either format */
typedef struct {
    char *transformer_dir;          /* folder with config.json + weights        */
    int n_dense;
    char *dense_dir[EG_MAX_DENSE];  /* folder of each Dense module, in order    */
    int64_t dense_in[EG_MAX_DENSE], dense_out[EG_MAX_DENSE];
    int dense_bias[EG_MAX_DENSE];
    int normalize;                  /* a Normalize module ends the pipeline      */
} eg_pipeline;

/* Reads modules.json and the Pooling / Dense configs; checks widths against hidden later. */
eg_status eg_pipeline_read(const char *dir, eg_pipeline *pl, char *err, size_t errlen);
/* The same on a parsed modules.json (path names it in messages). module_cfg NULL: each module's
 * config.json is read from its folder under dir; else that node stands for every one (fuzzing). */
eg_status eg_pipeline_from_json(const json_node *mods, const char *dir, const char *path, const json_node *module_cfg,
                                eg_pipeline *pl, char *err, size_t errlen);
/* One module's config.json: the Pooling one must ask for mean pooling alone; a Dense one becomes
 * entry pl->n_dense (its folder mdir). */
eg_status eg_pooling_check(const json_node *root, const char *path, char *err, size_t errlen);
eg_status eg_dense_config(const json_node *root, const char *path, const char *mdir, eg_pipeline *pl, char *err,
                          size_t errlen);
void eg_pipeline_free(eg_pipeline *pl);
/* model.safetensors.index.json: a non-empty weight_map of tensor name -> shard file name in the folder. */
eg_status eg_index_check(const json_node *root, const char *path, const json_node **weight_map, char *err,
                         size_t errlen);

int eg_file_exists(const char *path); /* a regular file */
/* Reads a whole (small) file; *len excludes the NUL that is appended. */
eg_status eg_read_file(const char *path, size_t max_bytes, char **out, size_t *len, char *err, size_t errlen);
/* Reads and parses a JSON file (at most 64 MiB). */
eg_status eg_read_json(const char *path, json_doc **out, char *err, size_t errlen);

/* ---------------------------------------------------------------- safetensors */

typedef enum { EG_F32 = 0, EG_F16, EG_BF16, EG_Q8_0, EG_Q4_0, EG_DTYPE_OTHER } eg_dtype;

typedef struct {
    char *name;
    eg_dtype dtype;
    char dtype_name[16];       /* as written in the header                       */
    int ndim;
    int64_t shape[8];
    const uint8_t *data;       /* inside a read-only mapping; may be unaligned   */
    int64_t nbytes;
    int used;                  /* set by the loader: every tensor must be used   */
    int mapped;                /* data lies in a file mapping of eg_st_open      */
    const char *file;          /* file the tensor came from (for messages)       */
} eg_tensor;

typedef struct {
    eg_tensor *tensors;        /* [n]                                            */
    int64_t n, cap;
    void **maps;               /* [n_maps] read-only mappings                    */
    size_t *map_sizes;         /* [n_maps]                                       */
    char **map_paths;          /* [n_maps]                                       */
    int n_maps;
} eg_tensor_set;

/* Maps `path` read-only and appends the mapping to set (unmapped with it): *data / *size are the
 * bytes, *owned_path a copy of the path that lives as long as the set. Files shorter than min_size
 * are refused as not being a `kind` file. */
eg_status eg_map_into(eg_tensor_set *set, const char *path, size_t min_size, const char *kind,
                      const uint8_t **data, size_t *size, const char **owned_path, char *err, size_t errlen);
/* Maps one .safetensors file, validates its header and adds its tensors. */
eg_status eg_st_open(const char *path, eg_tensor_set *set, char *err, size_t errlen);
/* Validates a header held in memory (also the fuzzing entry point). */
eg_status eg_st_parse_header(const uint8_t *buf, size_t size, const char *path, eg_tensor_set *set,
                             char *err, size_t errlen);
eg_tensor *eg_st_find(eg_tensor_set *set, const char *name);
/* Drops the resident pages wholly inside t's data (after it has been copied). */
void eg_st_release(const eg_tensor *t);
void eg_st_free(eg_tensor_set *set);

/* ---------------------------------------------------------------- GGUF */

/* GGUF metadata value types (the format's numbering). */
enum {
    EG_GGUF_UINT8 = 0, EG_GGUF_INT8, EG_GGUF_UINT16, EG_GGUF_INT16, EG_GGUF_UINT32, EG_GGUF_INT32,
    EG_GGUF_FLOAT32, EG_GGUF_BOOL, EG_GGUF_STRING, EG_GGUF_ARRAY, EG_GGUF_UINT64, EG_GGUF_INT64,
    EG_GGUF_FLOAT64, EG_GGUF_TYPE_COUNT
};

typedef struct {
    char *key;                 /* NUL-terminated copy                            */
    uint32_t type;             /* EG_GGUF_*                                      */
    uint32_t arr_type;         /* element type of an array                       */
    uint64_t n;                /* elements of an array, else 1                   */
    const uint8_t *data;       /* the value (an array's first element) in the buffer; strings are
                                  a u64 length then the bytes                    */
    uint64_t nbytes;
} eg_gguf_kv;

struct eg_gguf {
    uint32_t version;
    eg_gguf_kv *kv;            /* [n_kv] in file order                           */
    int64_t n_kv;
    uint64_t alignment;
    eg_tensor_set tensors;     /* shapes in PyTorch order (ggml's ne reversed); owns the mapping */
    const char *path;
};

/* Validates a GGUF held in memory (also the fuzzing entry point); g borrows buf. */
eg_status eg_gguf_parse(const uint8_t *buf, size_t size, const char *path, eg_gguf *g, char *err, size_t errlen);
void eg_gguf_clear(eg_gguf *g); /* frees what eg_gguf_parse allocated */
const eg_gguf_kv *eg_gguf_find(const eg_gguf *g, const char *key);
/* Typed getters: 1 found, 0 missing, -1 present with another type. */
int eg_gguf_get_int(const eg_gguf *g, const char *key, int64_t *out);
int eg_gguf_get_float(const eg_gguf *g, const char *key, double *out);
int eg_gguf_get_bool(const eg_gguf *g, const char *key, int *out);
int eg_gguf_get_str(const eg_gguf *g, const char *key, char *buf, size_t size);
int eg_is_gguf(const char *path); /* a regular file starting with "GGUF" */

/* ---------------------------------------------------------------- weights */

/* Writes row r of an F32 matrix (k floats) into its panel. */
static inline void eg_matrix_set_row(eg_matrix *m, int64_t r, const float *src) {
    float *dst = (float *)m->data + (r / EG_PANEL) * m->k * EG_PANEL + r % EG_PANEL;
    for (int64_t kk = 0; kk < m->k; kk++) dst[kk * EG_PANEL] = src[kk];
}

static inline eg_wtype eg_wtype_of(eg_weights w) {
    switch (w) {
    case EG_WEIGHTS_BF16: return EG_W_BF16;
    case EG_WEIGHTS_INT8: return EG_W_I8;
    case EG_WEIGHTS_Q8_0: return EG_W_Q8_0;
    case EG_WEIGHTS_Q4_0: return EG_W_Q4_0;
    case EG_WEIGHTS_INT16: return EG_W_I16;
    default: return EG_W_F32;
    }
}

/* pack.c: allocation and packing for every type, the one place the layouts of eg_matrix (kernels.h) are
 * written. */
eg_status eg_matrix_alloc(eg_matrix *m, int64_t n, int64_t k, eg_wtype type, char *err, size_t errlen);
void eg_matrix_pack_row(eg_matrix *m, int64_t r, const float *src); /* rounds / quantizes as the type needs */
/* Writes row r of a Q8_0 / Q4_0 matrix from its quantized form: q [k] (-128..127
 * for Q8_0, -8..7 for Q4_0) and one scale per block d [k/32]. */
void eg_matrix_pack_row_q(eg_matrix *m, int64_t r, const int8_t *q, const float *d);
/* ggml's reference quantizers (quantize_row_q8_0_ref / q4_0_ref), scales rounded
 * through float16 as the files store them: n % 32 == 0. */
void eg_quantize_q8_0(const float *x, int64_t n, int8_t *q, float *d);
void eg_quantize_q4_0(const float *x, int64_t n, int8_t *q, float *d);
void eg_matrix_free(eg_matrix *m);
int64_t eg_matrix_bytes(const eg_matrix *m);                        /* panels plus scales */
uint16_t eg_f32_to_bf16(float f);                                  /* round to nearest even */
/* Activations for the integer kernels: per row and block of 32 k, symmetric, |a| <= aqmax,
 * stored as a + aqmax + 1 in a uint8 (u8 x s8 products; eg_quantize_blocks_u8). AVX2 without VNNI sums pairs of
 * products into int16 (vpmaddubsw), so there 2 * (2 aqmax + 1) * |w| must stay <= 32767;
 * kernels that sum into int32 directly (scalar, vpdpbusd) have no such limit. The loader packs
 * for the ISA it chose (eg_matrix_ranges), so every ISA's sums are exact and equal the scalar
 * twin's on the same packed data:
 *                   int16 pair sums (AVX2)          int32 sums (scalar, VNNI)
 *   I8 (ours)       |w| <= 127, |a| <= 63           |w| <= 127, |a| <= 127
 *   Q8_0 (file)     |w| <= 127, |a| <= 63           |w| <= 127, |a| <= 127
 *   Q4_0 (file)     |w| <= 8,   |a| <= 127          the same
 * For I8 the AVX2 column gives up an activation bit rather than a weight bit: measured on the
 * real model against sentence-transformers (tests/data/real_texts, 102 texts), worst cosine
 * 0.99945 with 8-bit weights and 7-bit activations, 0.99874 with 7-bit weights and 8-bit ones. */
void eg_matrix_ranges(eg_matrix *m, int pairs16, int bf16dot); /* sets aqmax and bf16dot; before packing */
/* Sets the panel layout of an integer type, kgroup 4 or 8 (eg_kernels.kgroup; 0 means 4); before packing. */
void eg_matrix_layout(eg_matrix *m, int kgroup);

typedef struct {
    float *attn_norm;          /* [D]  1 + input_layernorm                       */
    eg_matrix qkv;             /* [H*Hd + 2*KV*Hd, D]  q, k, v projections stacked */
    float *q_norm;             /* [Hd] 1 + q_norm                                */
    float *k_norm;             /* [Hd] 1 + k_norm                                */
    eg_matrix o;               /* [D, H*Hd]                                      */
    float *post_attn_norm;     /* [D]  1 + post_attention_layernorm              */
    float *pre_ffn_norm;       /* [D]  1 + pre_feedforward_layernorm             */
    eg_matrix gate_up;         /* [2*I, D]  gate rows, then up rows              */
    eg_matrix down;            /* [D, I]                                         */
    float *post_ffn_norm;      /* [D]  1 + post_feedforward_layernorm            */
    int is_global;             /* full attention (else sliding window)           */
} eg_layer;

typedef struct {
    eg_matrix w;               /* [out, in]                                      */
    float *bias;               /* [out] or NULL                                  */
} eg_dense;

/* Bytes per input of what w's kernel reads in place of x (eg_quantize_for writes it, rows eg_ldq(k)
 * inputs apart): int16 for I16, uint8 for the other integer types, bfloat16 for a bf16dot BF16,
 * nothing (0) otherwise. */
static inline int eg_xq_bytes(const eg_matrix *w) {
    return w->type == EG_W_I16 ? 2 : eg_wtype_is_int(w->type) ? 1 : w->type == EG_W_BF16 && w->bf16dot ? 2 : 0;
}
static inline int64_t eg_xq_stride(const eg_matrix *w) { return eg_ldq(w->k) * eg_xq_bytes(w); } /* bytes */

/* Runs panels p0..p1 of w on the kernel for its type; xq (row stride ldq bytes) / xs (ldxs) are
 * the integer kernels' quantized rows of x, or a bf16dot kernel's bfloat16 ones (no xs), and are
 * ignored for the kernels that read x. */
static inline void eg_gemm_panels(const eg_kernels *k, const float *x, int64_t ldx, const uint8_t *xq, int64_t ldq,
                                  const float *xs, int64_t ldxs, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                                  float *y, int64_t ldy) {
    if (w->type == EG_W_F32) k->gemm(x, ldx, m, w, p0, p1, y, ldy);
    else if (w->type == EG_W_BF16 && w->bf16dot) k->gemm_bf16dot((const uint16_t *)xq, ldq / 2, m, w, p0, p1, y, ldy);
    else if (w->type == EG_W_BF16) k->gemm_bf16(x, ldx, m, w, p0, p1, y, ldy);
    else if (w->type == EG_W_I16) k->gemm_w16((const int16_t *)(const void *)xq, ldq / 2, xs, ldxs, m, w, p0, p1, y, ldy);
    else k->gemm_q(xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}


/* Quantizes the m rows of x the way w's kernel reads them (nothing for the kernels that read x): xq
 * [m, ldq bytes], xs [m, ldxs]; returns ldxs, the stride of xs (blocks per row; 0 when there is none). */
int64_t eg_quantize_for(const eg_kernels *k, const eg_matrix *w, const float *x, int64_t ldx, int64_t m, uint8_t *xq,
                        int64_t ldq, float *xs);

/* The kernel table of an ISA (dispatch.c): composed once from the ISA table's rows; the scalar one for
 * an ISA not compiled in. */
const eg_kernels *eg_kernels_for(eg_isa isa);

struct eg_model {
    eg_config cfg;
    eg_model_info info;
    const eg_kernels *k;

    /* token embedding: rows are read straight from the mapped file */
    const uint8_t *embed;      /* [vocab, D] in embed_dtype, inside a mapping    */
    eg_dtype embed_dtype;
    int64_t embed_row_bytes;   /* bytes of one row in embed_dtype                */
    float embed_scale;         /* (float)sqrt(D)                                 */

    eg_layer *layers;          /* [n_layers]                                     */
    float *final_norm;         /* [D] 1 + norm                                   */
    float *rope_cos[2];        /* [max_positions, Hd/2]  [0] sliding, [1] global */
    float *rope_sin[2];        /* [max_positions, Hd/2]                          */
    eg_dense dense[EG_MAX_DENSE];
    int n_dense;
    int has_int_weights;       /* some layer matrix is I8 / Q8_0 / Q4_0: scratch for quantized x */
    int xq_bytes;              /* largest eg_xq_bytes of a layer matrix: scratch for converted x */
    eg_tensor_set files;       /* mappings kept for the embedding table          */
    char dtype_name[8];
    char isa_note[320];        /* eg_model_info.isa_note                         */
};

/* ---------------------------------------------------------------- forward */

eg_status eg_forward(const eg_model *m, const int32_t *ids, const int64_t *offsets, int64_t n_seqs,
                     const eg_encode_opts *opts, float *out, int64_t out_stride, const int64_t *rows,
                     char *err, size_t errlen);

/* Rows of file tensors (pack.c): bytes of k elements of a dtype (k % 32 == 0
 * for Q8_0 / Q4_0), the row as float32 (exact), and a Q8_0 / Q4_0 row as its
 * integers q [k] and block scales d [k/32]. */
int64_t eg_row_bytes(eg_dtype dt, int64_t k);
void eg_row_to_f32(eg_dtype dt, const uint8_t *src, int64_t k, float *dst);
void eg_row_blocks(eg_dtype dt, const uint8_t *src, int64_t k, int8_t *q, float *d);

/* f16 -> f32 (exact; eg_bf16_to_f32 is in kernels.h) */
float eg_f16_to_f32(uint16_t h);

/* ---------------------------------------------------------------- threads */

#ifdef _OPENMP
#include <omp.h>
#define EG_THREAD_ID() omp_get_thread_num()
#else
#define EG_THREAD_ID() 0
#endif

#endif
