/* dispatch.c - which kernels this CPU can run: on x86-64 CPUID for the instructions,
 * XGETBV for the OS having enabled their register state; on ARM64 what the OS
 * reports (Linux: getauxval, macOS: sysctlbyname). The ISA table (one row per ISA:
 * name, architecture, base table, fill function, automatic or not, fallback), the
 * load-time self-check against the scalar kernels, and the choice it feeds. EMBGEMMA_ISA
 * (read at model load) forces a choice for tests. No Python here.
 */
#include <stdlib.h>
#include <string.h>

#include <math.h>
#include <stdio.h>

#include "internal.h"
#include "platform.h"

#ifdef EG_HAVE_X86

/* CPU features: the instructions (CPUID) and the OS-enabled register state (XGETBV). */
enum {
    F_AVX2 = 1,
    F_FMA = 2,
    F_AVXVNNI = 4,
    F_AVX512 = 8, /* F+BW+DQ+VL */
    F_AVX512VNNI = 16,
    F_AVX512BF16 = 32,
    F_AMXBF16 = 64 /* AMX-TILE + AMX-BF16, the tile state enabled and (Linux) permitted to this process */
};

static unsigned cpu_features(void) {
    unsigned r[4], f = 0;
    if (!eg_os_cpuid(1, 0, r)) return 0;
    const int fma = (r[2] >> 12) & 1, osxsave = (r[2] >> 27) & 1, avx = (r[2] >> 28) & 1;
    if (!(osxsave && avx)) return 0;
    const unsigned xlo = (unsigned)eg_os_xgetbv0();
    if ((xlo & 6) != 6 || !eg_os_cpuid(7, 0, r)) return 0; /* XMM and YMM state */
    const unsigned ebx7 = r[1], ecx7 = r[2], edx7 = r[3];
    eg_os_cpuid(7, 1, r);
    const unsigned eax71 = r[0];
    if ((ebx7 >> 5) & 1) f |= F_AVX2;
    if (fma) f |= F_FMA;
    if ((eax71 >> 4) & 1) f |= F_AVXVNNI;
    const int zmm_state = (xlo & 0xE0) == 0xE0; /* opmask, upper ZMM0-15, ZMM16-31 */
    const unsigned avx512 = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31); /* F, DQ, BW, VL */
    if (zmm_state && (ebx7 & avx512) == avx512) {
        f |= F_AVX512;
        if ((ecx7 >> 11) & 1) f |= F_AVX512VNNI;
        if ((eax71 >> 5) & 1) f |= F_AVX512BF16;
    }
    const int tile_state = (xlo & 0x60000) == 0x60000; /* XTILECFG, XTILEDATA */
    if (tile_state && ((edx7 >> 24) & 1) && ((edx7 >> 22) & 1) && eg_os_amx_permitted()) f |= F_AMXBF16;
    return f;
}

static int isa_on_cpu(eg_isa isa) {
    const unsigned f = cpu_features(), base = F_AVX2 | F_FMA;
    switch (isa) {
    case EG_ISA_AVX2: return (f & base) == base;
    case EG_ISA_AVXVNNI: return (f & (base | F_AVXVNNI)) == (base | F_AVXVNNI);
    case EG_ISA_AVX512: return (f & (base | F_AVX512 | F_AVX512VNNI)) == (base | F_AVX512 | F_AVX512VNNI);
    case EG_ISA_AVX512BF16: {
        const unsigned need = base | F_AVX512 | F_AVX512VNNI | F_AVX512BF16;
        return (f & need) == need;
    }
    case EG_ISA_AMX: {
        const unsigned need = base | F_AVX512 | F_AVX512VNNI | F_AVX512BF16 | F_AMXBF16;
        return (f & need) == need;
    }
    default: return 0;
    }
}
#endif

#ifdef EG_HAVE_ARM64
/* ARM64 features as the OS reports them: user space cannot read the ID registers portably. */
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
enum { A_ASIMD = 1, A_DOTPROD = 2, A_I8MM = 4, A_BF16 = 8 };

#if defined(__APPLE__)
static int sysctl_flag(const char *name) { /* 0 where the name does not exist (older macOS) */
    int v = 0;
    size_t len = sizeof v;
    return sysctlbyname(name, &v, &len, NULL, 0) == 0 && v != 0;
}
#endif

static unsigned arm_features(void) {
    unsigned f = 0;
#if defined(__linux__)
    /* the kernel's HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h), spelled out for older headers */
    const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    if (hw & (1ul << 1)) f |= A_ASIMD;     /* HWCAP_ASIMD   */
    if (hw & (1ul << 20)) f |= A_DOTPROD;  /* HWCAP_ASIMDDP */
    if (hw2 & (1ul << 13)) f |= A_I8MM;    /* HWCAP2_I8MM   */
    if (hw2 & (1ul << 14)) f |= A_BF16;    /* HWCAP2_BF16   */
#elif defined(__APPLE__)
    f |= A_ASIMD; /* every Apple arm64 CPU */
    if (sysctl_flag("hw.optional.arm.FEAT_DotProd")) f |= A_DOTPROD;
    if (sysctl_flag("hw.optional.arm.FEAT_I8MM")) f |= A_I8MM;
    if (sysctl_flag("hw.optional.arm.FEAT_BF16")) f |= A_BF16;
#else
    f |= A_ASIMD; /* Advanced SIMD is part of the AArch64 baseline; no portable way to ask for more */
#endif
    return f;
}

static int isa_on_cpu(eg_isa isa) {
    const unsigned f = arm_features();
    switch (isa) {
    case EG_ISA_NEON: return (f & A_ASIMD) != 0;
    case EG_ISA_DOTPROD: return (f & (A_ASIMD | A_DOTPROD)) == (A_ASIMD | A_DOTPROD);
    case EG_ISA_I8MM: return (f & (A_ASIMD | A_DOTPROD | A_I8MM)) == (A_ASIMD | A_DOTPROD | A_I8MM);
    default: return 0;
    }
}
#endif

const char *eg_cpu_features(void) {
#ifdef EG_HAVE_ARM64
    static const char *const names[] = {"asimd", "asimddp", "i8mm", "bf16"};
    static __thread char buf[64];
    const unsigned f = arm_features();
    buf[0] = 0;
    for (int i = 0; i < 4; i++)
        if (f & (1u << i)) {
            if (buf[0]) strcat(buf, " ");
            strcat(buf, names[i]);
        }
    return buf;
#elif defined(EG_HAVE_X86)
    static const char *const names[] = {"avx2",        "fma",         "avx_vnni", "avx512f/bw/dq/vl",
                                        "avx512_vnni", "avx512_bf16", "amx_bf16"};
    static __thread char buf[128];
    const unsigned f = cpu_features();
    buf[0] = 0;
    for (int i = 0; i < 7; i++)
        if (f & (1u << i)) {
            if (buf[0]) strcat(buf, " ");
            strcat(buf, names[i]);
        }
    return buf;
#else
    return "";
#endif
}

/* ---------------------------------------------------------------- the ISA table */

/* The CPU architecture an ISA's kernels are for; ARCH_ANY: every build has them. */
typedef enum { ARCH_ANY, ARCH_X86_64, ARCH_ARM64 } isa_arch;
static const char *const arch_names[] = {"any", "x86-64", "ARM64"};
#if defined(EG_HAVE_X86)
#define ARCH_HERE ARCH_X86_64
#define X86(x) (x)
#define ARM64(x) NULL
#elif defined(EG_HAVE_ARM64)
#define ARCH_HERE ARCH_ARM64
#define X86(x) NULL
#define ARM64(x) (x)
#else
#define ARCH_HERE ARCH_ANY
#define X86(x) NULL
#define ARM64(x) NULL
#endif

static eg_kernels tables[EG_ISA_COUNT]; /* each compiled ISA's kernels: its base, then its fill (compose) */

/* What one ISA is (what a CPU needs to run it is isa_on_cpu's):
 *   name       as eg_load_opts.isa and EMBGEMMA_ISA spell it
 *   arch       the CPU architecture it is compiled for
 *   base       the kernel table it starts from: its own, or another ISA's (&tables[that ISA])
 *   fill       puts its own kernels into that copy (NULL: none)
 *   automatic  eg_isa_best may choose it (auto); else only when asked for by name
 *   fallback   the ISA tried next when it fails its self-check (eg_isa_choose): each chain ends at scalar,
 *              and its length orders the automatic ISAs (eg_isa_best) */
typedef struct {
    const char *name;
    isa_arch arch;
    const eg_kernels *base;
    void (*fill)(eg_kernels *k);
    int automatic;
    eg_isa fallback;
} isa_traits;

static const isa_traits isa_table[EG_ISA_COUNT] = {
    [EG_ISA_SCALAR] = {.name = "scalar", .arch = ARCH_ANY, .base = &eg_kernels_scalar, .fill = NULL,
                       .automatic = 1, .fallback = EG_ISA_SCALAR},
    [EG_ISA_AVX2] = {.name = "avx2", .arch = ARCH_X86_64, .base = X86(&eg_kernels_avx2), .fill = NULL,
                     .automatic = 1, .fallback = EG_ISA_SCALAR},
    [EG_ISA_AVXVNNI] = {.name = "avxvnni", .arch = ARCH_X86_64, .base = X86(&eg_kernels_avx2),
                        .fill = X86(eg_kernels_avxvnni_fill), .automatic = 1, .fallback = EG_ISA_AVX2},
    [EG_ISA_AVX512] = {.name = "avx512", .arch = ARCH_X86_64, .base = X86(&eg_kernels_avx2),
                       .fill = X86(eg_kernels_avx512_fill), .automatic = 1, .fallback = EG_ISA_AVXVNNI},
    /* only when asked for: it rounds the bfloat16 mode's activations (its own fidelity), and on the one
     * CPU measured (Sapphire Rapids) vdpbf16ps retires one per two cycles on the FMA port where two FMAs
     * retire per cycle, so its GEMM is slower than avx512's widening one (docs/performance.md) */
    [EG_ISA_AVX512BF16] = {.name = "avx512bf16", .arch = ARCH_X86_64, .base = X86(&tables[EG_ISA_AVX512]),
                           .fill = X86(eg_kernels_avx512bf16_fill), .automatic = 0, .fallback = EG_ISA_AVX512},
    /* rounds them too, but its tiles make the bfloat16 mode the fastest there is on such a CPU (1.9-3.1x
     * float32 end to end in the real-weight harness) within bfloat16's fidelity bars: chosen automatically;
     * its float32 and integer modes are avx512's kernels, bit for bit */
    [EG_ISA_AMX] = {.name = "amx", .arch = ARCH_X86_64, .base = X86(&tables[EG_ISA_AVX512BF16]),
                    .fill = X86(eg_kernels_amx_fill), .automatic = 1, .fallback = EG_ISA_AVX512},
    [EG_ISA_NEON] = {.name = "neon", .arch = ARCH_ARM64, .base = ARM64(&eg_kernels_neon), .fill = NULL,
                     .automatic = 1, .fallback = EG_ISA_SCALAR},
    [EG_ISA_DOTPROD] = {.name = "dotprod", .arch = ARCH_ARM64, .base = ARM64(&eg_kernels_neon),
                        .fill = ARM64(eg_kernels_dotprod_fill), .automatic = 1, .fallback = EG_ISA_NEON},
    [EG_ISA_I8MM] = {.name = "i8mm", .arch = ARCH_ARM64, .base = ARM64(&eg_kernels_neon),
                     .fill = ARM64(eg_kernels_i8mm_fill), .automatic = 1, .fallback = EG_ISA_DOTPROD},
};

const char *eg_isa_name(eg_isa isa) { return (unsigned)isa < EG_ISA_COUNT ? isa_table[isa].name : "unknown"; }

int eg_isa_compiled(eg_isa isa) {
    if ((unsigned)isa >= EG_ISA_COUNT) return 0;
    return isa_table[isa].arch == ARCH_ANY || isa_table[isa].arch == ARCH_HERE;
}

int eg_isa_supported(eg_isa isa) {
    if (!eg_isa_compiled(isa)) return 0;
    if (isa == EG_ISA_SCALAR) return 1;
#if defined(EG_HAVE_X86) || defined(EG_HAVE_ARM64)
    return isa_on_cpu(isa);
#else
    return 0;
#endif
}

/* How many fallbacks lead from isa to scalar. */
static int isa_level(eg_isa isa) {
    int n = 0;
    for (; isa != EG_ISA_SCALAR; isa = isa_table[isa].fallback) n++;
    return n;
}

eg_isa eg_isa_best(void) {
    eg_isa best = EG_ISA_SCALAR;
    for (int i = 0; i < EG_ISA_COUNT; i++)
        if (isa_table[i].automatic && eg_isa_supported((eg_isa)i) && isa_level((eg_isa)i) > isa_level(best))
            best = (eg_isa)i;
    return best;
}

/* tables[i] = its base (composed first when it is another ISA's), then its fill. */
static int composed[EG_ISA_COUNT];
static void compose(int i) {
    if (composed[i]) return;
    for (int j = 0; j < EG_ISA_COUNT; j++)
        if (isa_table[i].base == &tables[j]) compose(j);
    tables[i] = *isa_table[i].base;
#ifdef EG_ISA_PER_FILE /* a fill is compiled for its ISA (setup.py's /arch): it runs only where that ISA does */
    if (isa_table[i].fill && eg_isa_supported((eg_isa)i)) isa_table[i].fill(&tables[i]);
#else
    if (isa_table[i].fill) isa_table[i].fill(&tables[i]);
#endif
    composed[i] = 1;
}
static void compose_tables(void) {
    for (int i = 0; i < EG_ISA_COUNT; i++)
        if (eg_isa_compiled((eg_isa)i)) compose(i);
}
static eg_once tables_once = EG_ONCE_INIT;

const eg_kernels *eg_kernels_for(eg_isa isa) {
    if (!eg_isa_compiled(isa)) return &eg_kernels_scalar;
    eg_os_once(&tables_once, compose_tables);
    return &tables[isa];
}

/* ---------------------------------------------------------------- self-check */

/* One GEMM of type t on the fixed problem with kernels k: x [M, K] . W [N, K]^T into y. N spans
 * three panels (the last partial), M full tiles and a remainder on every ISA (row tiles of 3, 4, 5, 6, 12). */
enum { SC_M = 17, SC_N = 37, SC_K = 96 };
static void selfcheck_gemm(const eg_kernels *k, const float *x, const eg_matrix *w, float *y) {
    uint16_t xq[SC_M * SC_K]; /* uint8, int16 or (bf16dot) bfloat16 rows */
    float xs[SC_M * (SC_K / EG_QBLOCK)];
    const int64_t ldq = eg_xq_stride(w) ? eg_xq_stride(w) : SC_K;
    const int64_t ldxs = eg_quantize_for(k, w, x, SC_K, SC_M, (uint8_t *)xq, ldq, xs);
    eg_gemm_panels(k, x, SC_K, (const uint8_t *)xq, ldq, xs, ldxs ? ldxs : 1, SC_M, w, 0, w->n_panels, y, SC_N);
}

int eg_isa_selfcheck(eg_isa isa, char *why, size_t whylen) {
    if (why && whylen) why[0] = 0;
    if (!eg_isa_supported(isa)) {
        if (why) snprintf(why, whylen, "not supported on this CPU");
        return 0;
    }
    if (isa == EG_ISA_SCALAR) return 1;
    const char *force = getenv("EMBGEMMA_SELFCHECK_FAIL");
    if (force && strcmp(force, eg_isa_name(isa)) == 0) {
        if (why) snprintf(why, whylen, "failed (forced by EMBGEMMA_SELFCHECK_FAIL)");
        return 0;
    }
    const eg_kernels *k = eg_kernels_for(isa), *ref = &eg_kernels_scalar;
    float y[SC_M * SC_N], yr[SC_M * SC_N];
    uint32_t st = 12345u;
    float xl[SC_M * SC_K], wl[SC_N * SC_K];
    for (int i = 0; i < SC_M * SC_K; i++) {
        st = st * 1664525u + 1013904223u;
        xl[i] = (float)((int32_t)(st >> 8) - (1 << 23)) / (float)(1 << 23) * (i % 7 == 0 ? 4.0f : 1.0f);
    }
    for (int i = 0; i < SC_N * SC_K; i++) {
        st = st * 1664525u + 1013904223u;
        wl[i] = (float)((int32_t)(st >> 8) - (1 << 23)) / (float)(1 << 23) * 0.1f;
    }
    static const eg_wtype types[] = {EG_W_F32, EG_W_BF16, EG_W_I8, EG_W_Q8_0, EG_W_Q4_0, EG_W_I16};
    static const char *const tnames[] = {"float32 GEMM", "bfloat16 GEMM", "int8 GEMM",
                                         "Q8_0 GEMM",    "Q4_0 GEMM",     "int16 GEMM"};
    char err[128];
    for (int ti = 0; ti < (int)(sizeof types / sizeof types[0]); ti++) {
        eg_matrix w;
        if (eg_matrix_alloc(&w, SC_N, SC_K, types[ti], err, sizeof err) != EG_OK) {
            if (why) snprintf(why, whylen, "self-check could not allocate: %s", err);
            return 0;
        }
        eg_matrix_ranges(&w, k->pairs16, k->bf16dot); /* the data and arithmetic this ISA will use */
        eg_matrix_layout(&w, k->kgroup);
        for (int r = 0; r < SC_N; r++) eg_matrix_pack_row(&w, r, wl + r * SC_K);
        selfcheck_gemm(k, xl, &w, y);
        selfcheck_gemm(ref, xl, &w, yr);
        eg_matrix_free(&w);
        const int exact = eg_wtype_is_int(types[ti]);
        for (int i = 0; i < SC_M * SC_N; i++) {
            /* integer types: bit for bit; float: FMA chains against separate roundings; bf16dot: the
             * twin models vdpbf16ps exactly (tests/test_kernels.py holds it to the bit), but a CPU that
             * rounded a step differently would still compute a fine GEMM, so rounding is allowed here */
            const float tol = exact ? 0.0f : 1e-5f * (1.0f + fabsf(yr[i]));
            if (!(fabsf(y[i] - yr[i]) <= tol)) {
                if (why)
                    snprintf(why, whylen, "%s: y[%d][%d] = %.9g, scalar twin %.9g", tnames[ti], i / SC_N, i % SC_N,
                             (double)y[i], (double)yr[i]);
                return 0;
            }
        }
    }
    /* row operations */
    float a[SC_K], b[SC_K], ar[SC_K], br[SC_K];
    for (int op = 0; op < 4; op++) {
        for (int i = 0; i < SC_K; i++) {
            a[i] = ar[i] = xl[i];
            b[i] = br[i] = wl[i] * 10.0f;
        }
        float s1 = 0.0f, s2 = 0.0f;
        switch (op) {
        case 0: k->axpy(0.75f, a, b, SC_K - 3); ref->axpy(0.75f, ar, br, SC_K - 3); break;
        case 1: k->scale(1.25f, b, SC_K - 3); ref->scale(1.25f, br, SC_K - 3); break;
        case 2: k->gelu_gate(b, a, SC_K - 3); ref->gelu_gate(br, ar, SC_K - 3); break;
        default: s1 = k->exp_sub(b, 1.0f, SC_K - 3); s2 = ref->exp_sub(br, 1.0f, SC_K - 3); break;
        }
        int bad = fabsf(s1 - s2) > 1e-5f * (1.0f + fabsf(s2));
        for (int i = 0; i < SC_K && !bad; i++) bad = !(fabsf(b[i] - br[i]) <= 1e-5f * (1.0f + fabsf(br[i])));
        if (bad) {
            static const char *const on[] = {"axpy", "scale", "gelu_gate", "exp_sub"};
            if (why) snprintf(why, whylen, "%s disagrees with its scalar twin", on[op]);
            return 0;
        }
    }
    return 1;
}

/* name: NULL/"" => EMBGEMMA_ISA or the best supported. */
eg_status eg_isa_choose(const char *name, eg_isa *out, char *note, size_t notelen, char *err, size_t errlen) {
    if (!name || !*name) name = getenv("EMBGEMMA_ISA");
    eg_isa want = EG_ISA_COUNT;
    int forced = 0;
    if (!name || !*name || strcmp(name, "auto") == 0) {
        want = eg_isa_best();
    } else {
        for (int i = 0; i < EG_ISA_COUNT; i++)
            if (strcmp(name, isa_table[i].name) == 0) want = (eg_isa)i;
        if (want == EG_ISA_COUNT || !eg_isa_compiled(want)) {
            char choices[160] = "auto";
            int last = 0;
            for (int i = 0; i < EG_ISA_COUNT; i++)
                if (eg_isa_compiled((eg_isa)i)) last = i;
            for (int i = 0; i < EG_ISA_COUNT; i++)
                if (eg_isa_compiled((eg_isa)i)) {
                    strcat(choices, i == last ? " or " : ", ");
                    strcat(choices, isa_table[i].name);
                }
            if (want == EG_ISA_COUNT)
                return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "unknown ISA \"%.32s\": use %s", name, choices);
            return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "ISA \"%s\" is for %s CPUs, not compiled into this build: use %s",
                           name, arch_names[isa_table[want].arch], choices);
        }
        if (!eg_isa_supported(want))
            return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "ISA \"%s\" is not supported by the CPU on this machine",
                           name);
        forced = 1;
    }
    size_t used = 0;
    if (note && notelen) note[0] = 0;
#define NOTE(...)                                                                                   \
    do {                                                                                            \
        if (note && used < notelen) {                                                               \
            int n_ = snprintf(note + used, notelen - used, __VA_ARGS__);                            \
            if (n_ > 0) used += (size_t)n_ < notelen - used ? (size_t)n_ : notelen - used - 1;       \
        }                                                                                           \
    } while (0)
    NOTE("%s (%s)", eg_isa_name(want), forced ? "asked for" : "best for this CPU");
    for (eg_isa i = want; i != EG_ISA_SCALAR; i = isa_table[i].fallback) { /* down its fallback chain */
        if (!eg_isa_supported(i)) continue;
        char why[200];
        if (eg_isa_selfcheck(i, why, sizeof why)) {
            if (i != want) NOTE("; fell back to %s", eg_isa_name(i));
            NOTE("; self-check against the scalar kernels passed");
            *out = i;
            return EG_OK;
        }
        NOTE("; %s self-check %s", eg_isa_name(i), why);
    }
    if (want != EG_ISA_SCALAR) NOTE("; fell back to scalar");
#undef NOTE
    *out = EG_ISA_SCALAR;
    return EG_OK;
}

int eg_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int eg_default_threads(void) {
#ifdef _OPENMP
    return eg_os_cpu_count();
#else
    return 1;
#endif
}

/* fork(): GNU libgomp keeps its worker threads in a pool that a forked child inherits without the
 * threads, so the child's next team waits forever on them. Once this process has asked for a team of
 * more than one thread, a fork child handler marks the child, and every later call in it (and in its
 * own forks) runs on one thread. Windows has no fork. */
#if defined(_OPENMP) && !defined(_WIN32)
#define EG_FORK_GUARD 1
#include <pthread.h>
static int team_started;  /* this process (or an ancestor before forking) asked for > 1 thread */
static int forked_after_team;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void child_after_fork(void) {
    if (__atomic_load_n(&team_started, __ATOMIC_RELAXED)) forked_after_team = 1;
}
static void register_atfork(void) { (void)pthread_atfork(NULL, NULL, child_after_fork); }
#endif

int eg_threads_for_call(int requested) {
#ifdef EG_FORK_GUARD
    if (requested > 1) {
        if (forked_after_team) return 1;
        pthread_once(&atfork_once, register_atfork); /* registered before the first team can exist */
        __atomic_store_n(&team_started, 1, __ATOMIC_RELAXED);
    }
#endif
    return requested;
}

int eg_forked_single_threaded(void) {
#ifdef EG_FORK_GUARD
    return forked_after_team;
#else
    return 0;
#endif
}

double eg_fma_peak(int n_threads, double seconds) {
    const eg_kernels *k = eg_kernels_for(eg_isa_best());
    if (n_threads < 1) n_threads = 1;
    n_threads = eg_threads_for_call(n_threads);
    if (seconds <= 0.0) seconds = 0.5;
    /* calibrate one thread to ~20 ms, then time all threads at once for ~seconds */
    float sink = 0.0f;
    int64_t iters = 1 << 16;
    double t = 0.0;
    for (;;) {
        const double t0 = eg_os_seconds();
        k->fma_loop(iters, &sink);
        t = eg_os_seconds() - t0;
        if (t > 0.02 || iters > ((int64_t)1 << 40)) break;
        iters *= 4;
    }
    iters = (int64_t)((double)iters * (seconds / (t > 1e-9 ? t : 1e-9)));
    if (iters < 1) iters = 1;
    const double t0 = eg_os_seconds();
    double total = 0.0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) reduction(+ : total, sink)
#endif
    {
        float local = 0.0f;
        total += k->fma_loop(iters, &local);
        sink += local;
    }
    const double el = eg_os_seconds() - t0;
    return sink == 12345.678f ? 0.0 : total / el / 1e9; /* using the sums keeps the loops alive */
}
