/* kernels_amx.c - x86-64 AMX (AMX-TILE + AMX-BF16, Sapphire Rapids and later): the bfloat16 weights
 * mode's GEMM on tiles, for the amx ISA. Everything else of that ISA is avx512bf16's table (dispatch.c's
 * ISA table composes them): the activations are rounded to bfloat16 by its to_bf16, the float32 and
 * integer modes run the avx512 kernels. Sections in kernels_scalar.c's order; the GEMM's twin is
 * gemm_bf16dot_scalar with EG_BF16DOT_AMX (amx_block there states the arithmetic, measured on the
 * instruction). Compiled with target attributes; nothing here runs unless dispatch.c has seen the
 * CPU features, the OS-enabled tile state and (Linux) been granted the tile data permission.
 * No allocation, no threads, no Python.
 */
#include "kernels.h"

#ifdef EG_HAVE_X86
#include <immintrin.h>
#include <string.h>

#if defined(_WIN32) && defined(__GNUC__) && !defined(__clang__)
/* GCC's amxtileintrin.h casts the stride to long, 32 bits on Win64, and no address takes a 32-bit
 * index register: the same instructions with a 64-bit stride. */
#undef _tile_loadd_internal
#undef _tile_stored_internal
#define _tile_loadd_internal(dst, base, stride)                                                                   \
    __asm__ volatile("tileloadd\t(%0,%1,1), %%tmm" #dst ::"r"((const void *)(base)), "r"((long long)(stride)))
#define _tile_stored_internal(src, base, stride)                                                                  \
    __asm__ volatile("tilestored\t%%tmm" #src ", (%0,%1,1)" ::"r"((void *)(base)), "r"((long long)(stride))       \
                     : "memory")
#endif

#define EG_AMX                                                                                                     \
    EG_TARGET("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16,amx-tile,amx-bf16")

/* ---------------------------------------------------------------- bfloat16 x bfloat16 (vdpbf16ps, AMX) */

/* The tile shapes (palette 1): tiles 0-3 accumulate C[i][j] (rows x 16 floats: row tile i, panel
 * j), tiles 4-5 hold A[i] (rows x 32 bfloat16 of xb: one block of 32 k), tiles 6-7 B[j] (a panel's 16
 * k-pairs x 16 columns x 2 bfloat16, 64 bytes a row: the k-pair panel layout as it is). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static EG_AMX void load_config(int rows) {
    _Alignas(64) tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.colsb[t] = 64;
        c.rows[t] = (uint8_t)(t < 6 ? rows : EG_QBLOCK / 2);
    }
    _tile_loadconfig(&c);
}

/* y[i.., p * 16 ..] from tile T: straight into y for a whole panel, else through a 16 x 16 block
 * (the matrix's last panel: columns past w->n are not written). */
#define STORE(T, i, p)                                                                                             \
    do {                                                                                                           \
        const int64_t cols_ = eg_panel_cols(w, p);                                                                 \
        float *yt_ = y + (i) * ldy + (p) * EG_PANEL;                                                               \
        if (cols_ == EG_PANEL) {                                                                                   \
            _tile_stored(T, yt_, ldy * (int64_t)sizeof(float));                                                    \
        } else {                                                                                                   \
            _tile_stored(T, tmp, EG_PANEL * (int64_t)sizeof(float));                                               \
            for (int r_ = 0; r_ < rows; r_++) memcpy(yt_ + r_ * ldy, tmp + r_ * EG_PANEL, (size_t)cols_ * sizeof(float)); \
        }                                                                                                          \
    } while (0)

/* NI row tiles (rows each, from row i) x NJ panels (from p): every k block in order into the
 * accumulators, which start at zero; one block's tdpbf16ps per accumulator at a time, so each output
 * is gemm_bf16dot_scalar's chain of amx_block steps whatever the tiling. */
#define AMX_TILES(NI, NJ)                                                                                          \
    do {                                                                                                           \
        const uint16_t *a0 = xb + i * ldb, *a1 = a0 + rows * ldb;                                                  \
        _tile_zero(0);                                                                                             \
        if (NJ > 1) _tile_zero(1);                                                                                 \
        if (NI > 1) _tile_zero(2);                                                                                 \
        if (NI > 1 && NJ > 1) _tile_zero(3);                                                                       \
        for (int64_t c = 0; c < kc; c++) {                                                                         \
            _tile_loadd(4, a0 + c * EG_QBLOCK, sa);                                                                \
            _tile_loadd(6, b0 + c * EG_QBLOCK * EG_PANEL, 2 * EG_PANEL * 2);                                       \
            if (NJ > 1) _tile_loadd(7, b1 + c * EG_QBLOCK * EG_PANEL, 2 * EG_PANEL * 2);                           \
            _tile_dpbf16ps(0, 4, 6);                                                                               \
            if (NJ > 1) _tile_dpbf16ps(1, 4, 7);                                                                   \
            if (NI > 1) {                                                                                          \
                _tile_loadd(5, a1 + c * EG_QBLOCK, sa);                                                            \
                _tile_dpbf16ps(2, 5, 6);                                                                           \
                if (NJ > 1) _tile_dpbf16ps(3, 5, 7);                                                               \
            }                                                                                                      \
        }                                                                                                          \
        STORE(0, i, p);                                                                                            \
        if (NJ > 1) STORE(1, i, p + 1);                                                                            \
        if (NI > 1) STORE(2, i + rows, p);                                                                         \
        if (NI > 1 && NJ > 1) STORE(3, i + rows, p + 1);                                                           \
    } while (0)

/* Rows in tiles of 16, then one tile of the m % 16 left (a second tile configuration: a
 * configuration fixes the row count), each as 2 x 2 tiles where it can. xb's rows and the panels are
 * zero-padded to whole blocks of 32 k (eg_round_bf16_rows, eg_bf16_panel_elems). */
static EG_AMX void gemm_bf16dot_amx(const uint16_t *xb, int64_t ldb, int64_t m, const eg_matrix *w, int64_t p0,
                                    int64_t p1, float *y, int64_t ldy) {
    const int64_t kc = eg_ldq(w->k) / EG_QBLOCK, pel = eg_bf16_panel_elems(w->k), sa = ldb * 2;
    const int64_t mfull = m / 16 * 16;
    _Alignas(64) float tmp[16 * EG_PANEL];
    if (m <= 0 || p1 <= p0) return;
    for (int pass = 0; pass < 2; pass++) {
        const int64_t r0 = pass ? mfull : 0, r1 = pass ? m : mfull;
        if (r1 <= r0) continue;
        const int rows = pass ? (int)(m - mfull) : 16;
        load_config(rows);
        for (int64_t p = p0; p < p1; p += 2) {
            const uint16_t *b0 = (const uint16_t *)w->data + p * pel, *b1 = b0 + pel;
            const int two_panels = p + 1 < p1;
            for (int64_t i = r0; i < r1; i += 2 * rows) {
                const int two_rows = i + rows < r1;
                if (two_rows && two_panels) AMX_TILES(2, 2);
                else if (two_rows) AMX_TILES(2, 1);
                else if (two_panels) AMX_TILES(1, 2);
                else AMX_TILES(1, 1);
            }
        }
    }
    _tile_release(); /* the tile state back to its initial one: nothing for the OS to save */
}
#undef AMX_TILES
#undef STORE

/* ---------------------------------------------------------------- kernel table */

/* amx: avx512bf16's table with these (dispatch.c). */
void eg_kernels_amx_fill(eg_kernels *k) {
    k->gemm_bf16dot = gemm_bf16dot_amx;
    k->bf16dot = EG_BF16DOT_AMX;
    k->tail_bf16 = 1; /* tiles: 1.9-3.1x float32 */
}
#endif
