/* embgemma.h - the C API of the embgemma engine.
 *
 * An eg_model is loaded once from a sentence-transformers model folder and is
 * immutable afterwards: any number of threads may call eg_encode on the same
 * model at once. Every call owns its scratch memory; the output buffer belongs
 * to the caller. Nothing here knows about Python.
 */
#ifndef EMBGEMMA_H
#define EMBGEMMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EG_VERSION "0.1.0"

typedef enum {
    EG_OK = 0,
    EG_ERR_INVALID_ARG,   /* the caller passed something wrong                 */
    EG_ERR_BAD_FILE,      /* a model file is malformed, truncated or inconsistent */
    EG_ERR_UNSUPPORTED,   /* a well-formed model this engine cannot run exactly */
    EG_ERR_IO,            /* a file could not be opened, read or mapped        */
    EG_ERR_NOMEM,         /* an allocation failed                              */
    EG_ERR_INTERNAL,
    EG_ERR_CANCELLED,     /* the caller's cancel poll asked to stop (eg_encode_opts) */
} eg_status;

/* The kernel sets. The values are fixed identifiers, in the order the ISAs were added: they say
 * nothing about preference or fallback (the ISA table in dispatch.c does). */
typedef enum {
    EG_ISA_SCALAR = 0,    /* plain C: the specification of every kernel        */
    EG_ISA_AVX2 = 1,      /* x86-64 AVX2 + FMA                                 */
    EG_ISA_AVXVNNI = 2,   /* AVX2 + FMA + AVX-VNNI (vpdpbusd on ymm)           */
    EG_ISA_AVX512 = 3,    /* AVX-512 F/BW/DQ/VL + AVX512_VNNI (zmm)            */
    /* ARM64 (AArch64); each level includes the ones before it */
    EG_ISA_NEON = 4,      /* Advanced SIMD: every ARMv8-A CPU                  */
    EG_ISA_DOTPROD = 5,   /* + FEAT_DotProd (SDOT)                             */
    EG_ISA_I8MM = 6,      /* + FEAT_I8MM (SMMLA)                               */
    /* x86-64 */
    EG_ISA_AVX512BF16 = 7, /* AVX512's kernels + AVX512_BF16: bfloat16 weights times activations
                              rounded to bfloat16 (vdpbf16ps). Never chosen automatically: only
                              when asked for by name (see eg_isa_best)                         */
    EG_ISA_AMX = 8,        /* avx512bf16's kernels + AMX-BF16 (OS-permitted tile state): the same
                              bfloat16 x bfloat16 products on tiles (tdpbf16ps; its own summation
                              order); falls back to avx512                                     */
    EG_ISA_COUNT
} eg_isa;

/* How the transformer layers' weight matrices are held and multiplied. The
 * residual stream, norms, attention, pooling and the Dense head are float32
 * in every mode (never float16: Gemma's activations reach ~8e5). */
typedef enum {
    EG_WEIGHTS_F32 = 0,   /* float32: the reference numbers                     */
    EG_WEIGHTS_BF16,      /* bfloat16 weights (half the memory), float32 sums; on avx512bf16 the
                             activations are rounded to bfloat16 too (vdpbf16ps) */
    EG_WEIGHTS_INT8,      /* int8 weights with a float32 scale per output row and 32
                             inputs; uint8 activations per token and 32 inputs,
                             exact int32 block sums; the last n_layers / 8
                             layers stay BF16 (avx512, amx) or F32 (other ISAs:
                             their fastest float GEMM; docs/fidelity.md)        */
    EG_WEIGHTS_Q8_0,      /* ggml Q8_0: int8 weights, a float16 scale per 32 inputs;
                             activations and sums as INT8                      */
    EG_WEIGHTS_Q4_0,      /* ggml Q4_0: 4-bit weights (-8..7) in nibbles, scales as Q8_0 */
    EG_WEIGHTS_INT16,     /* int16 weights on a 12-bit grid (|q| <= 2047) with a float32 scale per
                             output row and 32 inputs; int16 activations alike per token,
                             exact int32 block sums; every layer (no float tail) */
    EG_WEIGHTS_COUNT,
    EG_WEIGHTS_AUTO = 100 /* as the file stores them: F32/F16 -> F32, BF16, Q8_0, Q4_0 */
} eg_weights;

typedef struct {
    const char *isa;          /* NULL or "" (auto; EMBGEMMA_ISA applies), "scalar", "avx2", "avxvnni", "avx512",
                                 "neon", "dotprod", "i8mm", "avx512bf16", "amx"
                                 (those of the CPU architecture built for) */
    eg_weights mlp_weights;   /* gate/up and down projections (60% of the weights) */
    eg_weights attn_weights;  /* q/k/v and o projections                           */
    /* GGUF only. A GGUF without the Dense tensors cannot give the model's
     * embeddings: take them from this sentence-transformers folder (its
     * modules.json and Dense modules), or set no_dense to return the
     * un-projected pooled vector knowingly. */
    const char *dense_from;
    int no_dense;
} eg_load_opts;

typedef struct eg_model eg_model;

/* What a loaded model is; every field is read from the files. */
typedef struct {
    int64_t hidden;            /* hidden size (768)                              */
    int64_t n_layers;          /* decoder layers (24)                            */
    int64_t n_heads;           /* query heads (3)                                */
    int64_t n_kv_heads;        /* key/value heads (1)                            */
    int64_t head_dim;          /* per-head width (256)                           */
    int64_t intermediate;      /* MLP width (1152)                               */
    int64_t vocab;             /* embedding rows (262144)                        */
    int64_t max_positions;     /* longest sequence RoPE is defined for (2048)    */
    int64_t sliding_window;    /* window as written in config.json (512)         */
    int64_t window_radius;     /* sliding layers see |i-j| <= radius (256)       */
    int64_t n_dense;           /* Dense modules after pooling (2)                */
    int64_t out_dim;           /* width of the final embedding (768)             */
    int normalize;             /* 1 when modules.json ends with Normalize        */
    eg_isa isa;                /* kernels this model runs on                     */
    const char *weight_dtype;  /* as stored in the files: "F32", "BF16", "F16", "Q8_0", "Q4_0" or "mixed" */
    const char *format;        /* "sentence-transformers" or "gguf"               */
    eg_weights mlp_weights;    /* as held in memory and multiplied               */
    eg_weights attn_weights;
    int64_t weight_bytes;      /* memory held by the packed layer and Dense matrices */
    const char *isa_note;      /* why isa was chosen: the self-check's verdicts, any fallback */
} eg_model_info;

/* Load a model: a sentence-transformers folder, or a GGUF file (llama.cpp's
 * gemma-embedding layout or Ollama's gemma3 embedding layout). opts may be
 * NULL (automatic ISA, float32). On failure *out is NULL and err holds a
 * message naming the file and the problem. */
eg_status eg_model_load(const char *dir, const eg_load_opts *opts, eg_model **out, char *err, size_t errlen);
const char *eg_weights_name(eg_weights w); /* "float32", "bfloat16", "int8", "q8_0", "q4_0", "auto" */
void eg_model_free(eg_model *m);
const eg_model_info *eg_model_get_info(const eg_model *m);

typedef struct {
    int64_t dim;        /* output width: out_dim, or a Matryoshka prefix       */
    int normalize;      /* L2-normalize the (possibly truncated) output        */
    int n_threads;      /* worker threads for this call (>= 1)                 */
    /* Optional cancellation (NULL: none). The pass calls cancel(cancel_arg) on the calling thread
     * between its steps (each layer's attention block in slices, each MLP chunk of at most 1024
     * tokens), never inside a parallel region, so a call can be stopped within a fraction of a
     * layer. A nonzero return abandons the call: EG_ERR_CANCELLED, scratch freed, no output row
     * written. It is polled often (hundreds of times per call): keep it cheap. */
    int (*cancel)(void *cancel_arg);
    void *cancel_arg;
} eg_encode_opts;

/* Embed n_seqs token sequences packed back to back, with no padding:
 * sequence s is ids[offsets[s] .. offsets[s+1]). Row s of the result is written
 * to out + rows[s] * out_stride (rows may be NULL: row s). Each sequence must be
 * 1..max_positions tokens and every id below vocab; the call checks. */
eg_status eg_encode(const eg_model *m, const int32_t *ids, const int64_t *offsets, int64_t n_seqs,
                    const eg_encode_opts *opts, float *out, int64_t out_stride, const int64_t *rows,
                    char *err, size_t errlen);

/* GFLOP/s of float32 FMA this machine sustains on n_threads threads with the
 * best kernel ISA (independent accumulator chains, ~`seconds` of work): the
 * ceiling benchmarks compare the GEMMs against. */
double eg_fma_peak(int n_threads, double seconds);

/* GGUF inspection (tokenizers built from a GGUF's metadata, tools). The file
 * is mapped and fully validated by eg_gguf_open. Metadata values are read
 * through eg_gguf_meta: for a scalar, *n == 1; strings come back as pointers
 * into the file with their lengths (no NUL). */
typedef struct eg_gguf eg_gguf;
eg_status eg_gguf_open(const char *path, eg_gguf **out, char *err, size_t errlen);
void eg_gguf_close(eg_gguf *g);
int64_t eg_gguf_meta_count(const eg_gguf *g);
/* Entry i: key, value type (0..12 as in the GGUF spec), element type of an array, element count. */
void eg_gguf_meta(const eg_gguf *g, int64_t i, const char **key, int *type, int *arr_type, uint64_t *n);
/* Element j of entry i as a number (integer and bool types; floats through eg_gguf_meta_float). */
int64_t eg_gguf_meta_int(const eg_gguf *g, int64_t i, uint64_t j);
double eg_gguf_meta_float(const eg_gguf *g, int64_t i, uint64_t j);
/* All strings of entry i (a string or an array of strings): n pointers and lengths. */
void eg_gguf_meta_strings(const eg_gguf *g, int64_t i, const char **ptrs, uint64_t *lens);
int64_t eg_gguf_tensor_count(const eg_gguf *g);
/* Tensor i: name, ggml type name ("Q8_0"), dimensions in PyTorch order. */
void eg_gguf_tensor(const eg_gguf *g, int64_t i, const char **name, const char **type, int *ndim, int64_t shape[4]);
const char *eg_gguf_type_name(int type); /* "uint32", "string", ... */

/* Build facts: which ISAs were compiled in and which this CPU can run. */
const char *eg_isa_name(eg_isa isa);
int eg_isa_compiled(eg_isa isa);
int eg_isa_supported(eg_isa isa);
/* The highest supported ISA that may be chosen automatically (the one with the longest fallback
 * chain: amx > avx512 > avxvnni > avx2, i8mm > dotprod > neon): avx512bf16 never is (it changes the
 * bfloat16 mode's arithmetic, and on the Sapphire Rapids measured its vdpbf16ps runs at half the
 * float32 FMA rate), so on such a CPU this is amx where it has AMX-BF16 tiles, else avx512. */
eg_isa eg_isa_best(void);
/* The CPU features dispatch looks at, space-separated ("avx2 fma avx512f ...", "asimd asimddp i8mm bf16"). */
const char *eg_cpu_features(void);
/* Runs every kernel of `isa` once against its scalar twin on a small fixed problem (well under a
 * millisecond): 1 when they agree (integer kernels bit for bit, float and bfloat16 ones to rounding), else 0
 * with the first disagreement in why. EMBGEMMA_SELFCHECK_FAIL=<isa> makes that ISA fail (tests). */
int eg_isa_selfcheck(eg_isa isa, char *why, size_t whylen);
/* The ISA for a model: `name` (NULL/"": EMBGEMMA_ISA, else the best the CPU has), then the
 * self-check; an ISA that fails it gives way to the next one down its fallback chain that the CPU
 * supports and that passes (amx -> avx512 -> avxvnni -> avx2 -> scalar, avx512bf16 -> avx512,
 * i8mm -> dotprod -> neon -> scalar). note says what was chosen and why. */
eg_status eg_isa_choose(const char *name, eg_isa *out, char *note, size_t notelen, char *err, size_t errlen);

int eg_openmp_enabled(void);
int eg_default_threads(void);
/* 1 in a process forked after it (or an ancestor) ran an OpenMP team: GNU libgomp cannot start
 * threads again there, so every call runs on one thread (see docs/thread_safety.md). */
int eg_forked_single_threaded(void);

#ifdef __cplusplus
}
#endif
#endif
