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

#define EG_ERRLEN 512
#define EG_PANEL 16 /* output columns per packed weight panel (GEMM micro-kernel width) */
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
void eg_config_free(eg_config *cfg);

/* The sentence-transformers pipeline read from modules.json. */
#define EG_MAX_DENSE 8
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
/* The architecture a GGUF's metadata describes (load.c), exposed for the parser fuzz hook. */
eg_status eg_test_gguf_config(const eg_gguf *g, eg_config *cfg, char *err, size_t errlen);

/* ---------------------------------------------------------------- weights */

/* How a packed weight matrix stores its numbers (eg_weights in embgemma.h picks it). */
typedef enum { EG_W_F32 = 0, EG_W_BF16, EG_W_I8, EG_W_Q8_0, EG_W_Q4_0 } eg_wtype;

#define EG_QBLOCK 32 /* k values per Q8_0 / Q4_0 block (ggml's QK8_0 = QK4_0) */

/* A weight matrix W [n, k] (y = W x, PyTorch nn.Linear layout) packed into
 * panels of EG_PANEL output rows, zero-padded past n, so one load per k step
 * feeds a whole micro-kernel row:
 *   F32:  float    [n_panels, k, 16]      W[p*16 + j][kk] at (p*k + kk)*16 + j
 *   BF16: uint16   [n_panels, k2, 16, 2]  k2 = ceil(k/2), k-pairs: W[p*16 + j][2i + e] at
 *                                          ((p*k2 + i)*16 + j)*2 + e, 0 past k. A column's 32-bit
 *                                          lane holds two consecutive k: what vdpbf16ps multiplies,
 *                                          and the float kernels widen it exactly by a shift (k even)
 *                                          and a mask (k odd)
 *   I8:   int8     [n_panels, kb/4, 16, 4] kb = k rounded up to a multiple of 32:
 *                                          W[p*16 + j][4*kq + e] at ((p*kb/4 + kq)*16 + j)*4 + e,
 *                                          padded with 0; |q| <= 127 with a float32 scale per
 *                                          output row and block of 32 k: scale [n_panels, kb/32, 16]
 *   Q8_0: int8     [n_panels, k/4, 16, 4]  as I8, but ggml's scale per row and block of 32 k:
 *                                          W[r][kk] ~= scale[p][kk/32][j] * q[r][kk]
 *   Q4_0: uint8    [n_panels, k/8, 64]    byte b of 8-k group g holds the I8-layout
 *                                          element b of k-quad 2g in its low nibble
 *                                          and of k-quad 2g+1 in its high nibble,
 *                                          stored as q + 8 (q in -8..7); scales as Q8_0
 * k-octets (kgroup 8, for ARM's SMMLA, which multiplies 2 x 8 by 8 x 2): I8 / Q8_0 as above with 8
 * in place of 4, int8 [n_panels, kb/8, 16, 8], so columns 2c and 2c+1 of an octet are 16 bytes in a
 * row; Q4_0 uint8 [n_panels, k/16, 128], byte b of 16-k group g holding element b of octet 2g (low
 * nibble) and of octet 2g+1 (high). The kernel table says which it reads (eg_kernels.kgroup).
 * All three also keep wsum [n_panels, kb/32, 16]: each block's sum of q times the
 * activations' zero point. The integer kernels multiply these int8 weights by uint8
 * activations quantized per block of 32 (u8 x s8: what vpmaddubsw / vpdpbusd take), 4 k
 * at a time, and fold each block's exact int32 sum into a float accumulator.
 * Q8_0 / Q4_0 need k % 32 == 0 and hold exactly what ggml's blocks hold.
 */
typedef struct {
    void *data;                /* see above                                      */
    float *scale;              /* integer types: [n_panels, kb/32, 16] per output row and block */
    int32_t *wsum;             /* [n_panels, kb/32, 16] zero point x each block's sum of q */
    int aqmax;                 /* integer types: activations are quantized to |a| <= aqmax, + aqmax + 1 */
    int kgroup;                /* integer types: k values per column run in a panel, 4 (k-quads) or 8 (k-octets) */
    int bf16dot;               /* BF16: 0: float x bf16 widened (gemm_bf16); else the activations are
                                  rounded to bfloat16 as well (gemm_bf16dot), the products summed as
                                  EG_BF16DOT_VDP (vdpbf16ps) or EG_BF16DOT_AMX (AMX tdpbf16ps) does */
    int64_t n, k;
    int64_t n_panels;          /* ceil(n / 16)                                   */
    eg_wtype type;
} eg_matrix;

/* Writes row r of an F32 matrix (k floats) into its panel. */
static inline void eg_matrix_set_row(eg_matrix *m, int64_t r, const float *src) {
    float *dst = (float *)m->data + (r / EG_PANEL) * m->k * EG_PANEL + r % EG_PANEL;
    for (int64_t kk = 0; kk < m->k; kk++) dst[kk * EG_PANEL] = src[kk];
}

/* The arithmetic of a bf16dot GEMM (eg_matrix.bf16dot, eg_kernels.bf16dot) */
enum { EG_BF16DOT_VDP = 1, EG_BF16DOT_AMX = 2 };

/* uint16 elements of one BF16 panel: k padded with zeros to whole blocks of 32 (whole k-pairs for the
 * float and vdpbf16ps kernels, whole AMX tile rows for tdpbf16ps) */
static inline int64_t eg_bf16_panel_elems(int64_t k) { return (k + 31) / 32 * 32 * EG_PANEL; }

static inline eg_wtype eg_wtype_of(eg_weights w) {
    switch (w) {
    case EG_WEIGHTS_BF16: return EG_W_BF16;
    case EG_WEIGHTS_INT8: return EG_W_I8;
    case EG_WEIGHTS_Q8_0: return EG_W_Q8_0;
    case EG_WEIGHTS_Q4_0: return EG_W_Q4_0;
    default: return EG_W_F32;
    }
}
static inline int eg_wtype_is_block(eg_wtype t) { return t == EG_W_Q8_0 || t == EG_W_Q4_0; }
static inline int eg_wtype_is_int(eg_wtype t) { return t == EG_W_I8 || eg_wtype_is_block(t); }

/* pack.c: allocation and packing for every type, the one place the layouts above are written. */
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
/* Activations for gemm_bf16dot: x [m, k] to bfloat16 [m, ldb] exactly as vcvtneps2bf16 rounds: to
 * nearest even, subnormal inputs to a zero of their sign, NaN kept quiet; elements k .. eg_ldq(k) of
 * each row are set to 0 (whole k-pairs, whole AMX tile rows; ldb >= eg_ldq(k)). The twin of the
 * table's to_bf16, bit for bit. */
void eg_round_bf16_rows(const float *x, int64_t ldx, int64_t m, int64_t k, uint16_t *xb, int64_t ldb);
/* Activations for the integer kernels: per row and block of 32 k, symmetric, |a| <= aqmax,
 * stored as a + aqmax + 1 in a uint8 (u8 x s8 products). AVX2 without VNNI sums pairs of
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
/* Quantized activations' row stride and weights' padded k: k rounded up to whole blocks of 32 */
static inline int64_t eg_ldq(int64_t k) { return (k + EG_QBLOCK - 1) & ~(int64_t)(EG_QBLOCK - 1); }
/* x [m, k] per block of 32 into q [m, ldq] (pad columns hold the zero point) and scale [m, ldxs]:
 * a = round(x / s), s = amax / qmax; a row block with NaN or inf gets a NaN scale (the pass then
 * reports it). */
void eg_quantize_blocks_u8(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, uint8_t *q, int64_t ldq,
                           float *scale, int64_t ldxs);

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

/* Kernel table: one per ISA, chosen at load. Kernels never allocate, never
 * spawn threads and trust their (already validated) arguments. */
typedef struct {
    /* y[m, p0*16 .. p1*16) = x[m, k] . W^T for panels p0..p1 of an F32 w; columns past w->n are not written */
    void (*gemm)(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                 float *y, int64_t ldy);
    /* the same for a BF16 w: weights widened exactly to float, float accumulation */
    void (*gemm_bf16)(const float *x, int64_t ldx, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                      float *y, int64_t ldy);
    /* the same for a BF16 w with bf16dot set, from xb [m, ldb]: x rounded to bfloat16 (to_bf16), padded
     * to whole k-pairs with 0. Per output one float accumulator, from 0, over the k-pairs in order, each
     * added as vdpbf16ps does: acc += a[2i+1] * w[2i+1], then acc += a[2i] * w[2i], each step a fused
     * multiply-add rounded to nearest even; subnormal inputs (bfloat16 and the accumulator) read as 0,
     * and a result whose value rounded to 24 bits (unbounded exponent) is below the normal range is
     * flushed to a zero of its sign; MXCSR plays no part (w->bf16dot == EG_BF16DOT_VDP). With
     * EG_BF16DOT_AMX (tdpbf16ps), per block of 32 k from the first: the even-k products summed in k
     * order from +0 into one float, the odd-k ones into another, each step as one vdpbf16ps step above;
     * then acc = (even + odd) + acc, each addition rounded to nearest even, a result below the normal
     * range flushed. The scalar twin of both, bit for bit: gemm_bf16dot_scalar. NULL in tables
     * without such a kernel. */
    void (*gemm_bf16dot)(const uint16_t *xb, int64_t ldb, int64_t m, const eg_matrix *w, int64_t p0, int64_t p1,
                         float *y, int64_t ldy);
    /* the activations of a bf16dot GEMM: eg_round_bf16_rows (pack.c) is the twin, bit for bit */
    void (*to_bf16)(const float *x, int64_t ldx, int64_t m, int64_t k, uint16_t *xb, int64_t ldb);
    /* the same for an I8 / Q8_0 / Q4_0 w and activations quantized per block of 32, xs [m, ldxs]:
     * y[i][j] = sum over blocks b, in order, of fmaf((float)(isum_b - w->wsum[p][b][j]), xs[i][b] * w->scale[p][b][j], acc),
     * isum_b = sum_{k in b} xq[i][k] * q[j][k] exact in int32 */
    void (*gemm_q)(const uint8_t *xq, int64_t ldq, const float *xs, int64_t ldxs, int64_t m, const eg_matrix *w,
                   int64_t p0, int64_t p1, float *y, int64_t ldy);
    /* the activations of an integer GEMM: eg_quantize_blocks_u8 (pack.c) is the twin, bit for bit */
    void (*quantize)(const float *x, int64_t ldx, int64_t m, int64_t k, int qmax, uint8_t *q, int64_t ldq,
                     float *scale, int64_t ldxs);
    void (*axpy)(float a, const float *x, float *y, int64_t n); /* y += a x */
    void (*scale)(float a, float *y, int64_t n);                /* y *= a   */
    /* g[i] = gelu_tanh(g[i]) * up[i], gelu_tanh(x) = 0.5x(1 + tanh(u)) computed as x / (1 + exp(-2u)),
     * u = sqrt(2/pi) (x + 0.044715 x^3): the same function, without tanh's cancellation */
    void (*gelu_gate)(float *g, const float *up, int64_t n);
    /* s[j] = exp(s[j] - m) (exactly 0 where s[j] is -inf); returns the sum */
    float (*exp_sub)(float *s, float m, int64_t n);
    /* iters steps of 12 independent multiply-add chains on full vectors; returns
     * the floating-point operations done (for eg_fma_peak, not the engine) */
    double (*fma_loop)(int64_t iters, float *sink);
    int pairs16; /* the integer GEMM sums pairs of products in int16 (vpmaddubsw): see eg_matrix_ranges */
    int kgroup;  /* the integer GEMM reads k-quads (4; 0 means the same) or k-octets (8): eg_matrix_layout */
    int bf16dot; /* 0, or EG_BF16DOT_*: BF16 matrices go to gemm_bf16dot (the loader sets eg_matrix.bf16dot) */
    int tail_bf16; /* int8's higher-precision last layers are bfloat16 (1: this ISA's bfloat16 GEMM is its fastest
                      float one, avx512's widening and AMX tiles) or float32 (0: AVX2's widening bfloat16 runs
                      at 0.96x float32, and vdpbf16ps at ~0.65x avx512's) */
} eg_kernels;

/* Bytes per input of what w's kernel reads in place of x (eg_quantize_for writes it, rows eg_ldq(k)
 * inputs apart): uint8 for the integer types, bfloat16 for a bf16dot BF16, nothing (0) otherwise. */
static inline int eg_xq_bytes(const eg_matrix *w) {
    return eg_wtype_is_int(w->type) ? 1 : w->type == EG_W_BF16 && w->bf16dot ? 2 : 0;
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
    else k->gemm_q(xq, ldq, xs, ldxs, m, w, p0, p1, y, ldy);
}


/* Quantizes the m rows of x the way w's kernel reads them (nothing for the kernels that read x): xq
 * [m, ldq bytes], xs [m, ldxs]; returns ldxs, the stride of xs (blocks per row; 0 when there is none). */
int64_t eg_quantize_for(const eg_kernels *k, const eg_matrix *w, const float *x, int64_t ldx, int64_t m, uint8_t *xq,
                        int64_t ldq, float *xs);

extern const eg_kernels eg_kernels_scalar;
const eg_kernels *eg_kernels_for(eg_isa isa);
#if defined(__x86_64__) || defined(_M_X64)
#define EG_HAVE_X86 1
extern const eg_kernels eg_kernels_avx2;
void eg_kernels_avxvnni_fill(eg_kernels *k); /* AVX2's table with the AVX-VNNI integer GEMMs */
void eg_kernels_avx512_fill(eg_kernels *k);  /* AVX2's table with the zmm GEMMs              */
void eg_kernels_avx512bf16_fill(eg_kernels *k); /* AVX512's table with the vdpbf16ps GEMM     */
void eg_kernels_amx_fill(eg_kernels *k);        /* avx512bf16's table with the AMX tile GEMM  */
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define EG_HAVE_ARM64 1
extern const eg_kernels eg_kernels_neon;
void eg_kernels_dotprod_fill(eg_kernels *k); /* NEON's table with the SDOT integer GEMM  */
void eg_kernels_i8mm_fill(eg_kernels *k);    /* NEON's table with the SMMLA integer GEMM */
#endif

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

/* bf16 / f16 -> f32 conversions (exact) */
float eg_bf16_to_f32(uint16_t h);
float eg_f16_to_f32(uint16_t h);

/* ---------------------------------------------------------------- threads */

#ifdef _OPENMP
#include <omp.h>
#define EG_THREAD_ID() omp_get_thread_num()
#else
#define EG_THREAD_ID() 0
#endif

#endif
