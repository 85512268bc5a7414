/* dispatch.c - which kernels this CPU can run: CPUID for the instructions,
 * XGETBV for the OS having enabled their register state. EMBGEMMA_ISA (read
 * at model load) forces a choice for tests. No Python here.
 */
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "internal.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifdef EG_HAVE_X86
#include <cpuid.h>
static int cpu_has_avx2_fma(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(fma && osxsave && avx)) return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 6) != 6) return 0; /* XMM and YMM state enabled by the OS */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 5) & 1;
}
#endif

static const char *const isa_names[EG_ISA_COUNT] = {"scalar", "avx2"};

const char *eg_isa_name(eg_isa isa) { return (unsigned)isa < EG_ISA_COUNT ? isa_names[isa] : "unknown"; }

int eg_isa_compiled(eg_isa isa) {
    if (isa == EG_ISA_SCALAR) return 1;
#ifdef EG_HAVE_X86
    if (isa == EG_ISA_AVX2) return 1;
#endif
    return 0;
}

int eg_isa_supported(eg_isa isa) {
    if (!eg_isa_compiled(isa)) return 0;
#ifdef EG_HAVE_X86
    if (isa == EG_ISA_AVX2) return cpu_has_avx2_fma();
#endif
    return isa == EG_ISA_SCALAR;
}

eg_isa eg_isa_best(void) {
    for (int i = EG_ISA_COUNT - 1; i > 0; i--)
        if (eg_isa_supported((eg_isa)i)) return (eg_isa)i;
    return EG_ISA_SCALAR;
}

const eg_kernels *eg_kernels_for(eg_isa isa) {
#ifdef EG_HAVE_X86
    if (isa == EG_ISA_AVX2) return &eg_kernels_avx2;
#endif
    (void)isa;
    return &eg_kernels_scalar;
}

/* name: NULL/"" => EMBGEMMA_ISA or the best supported. */
eg_status eg_isa_choose(const char *name, eg_isa *out, char *err, size_t errlen) {
    if (!name || !*name) name = getenv("EMBGEMMA_ISA");
    if (!name || !*name || strcmp(name, "auto") == 0) {
        *out = eg_isa_best();
        return EG_OK;
    }
    for (int i = 0; i < EG_ISA_COUNT; i++) {
        if (strcmp(name, isa_names[i]) != 0) continue;
        if (!eg_isa_supported((eg_isa)i))
            return eg_fail(err, errlen, EG_ERR_UNSUPPORTED, "ISA \"%s\" is not %s on this machine", name,
                           eg_isa_compiled((eg_isa)i) ? "supported by the CPU" : "compiled in");
        *out = (eg_isa)i;
        return EG_OK;
    }
    return eg_fail(err, errlen, EG_ERR_INVALID_ARG, "unknown ISA \"%.32s\": use auto, scalar or avx2", name);
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
    return omp_get_num_procs();
#else
    return 1;
#endif
}

/* fork(): GNU libgomp keeps its worker threads in a pool that a forked child inherits without the
 * threads, so the child's next team waits forever on them. Once this process has asked for a team of
 * more than one thread, a fork child handler marks the child, and every later call in it (and in its
 * own forks) runs on one thread. */
#ifdef _OPENMP
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
#ifdef _OPENMP
    if (requested > 1) {
        if (forked_after_team) return 1;
        pthread_once(&atfork_once, register_atfork); /* registered before the first team can exist */
        __atomic_store_n(&team_started, 1, __ATOMIC_RELAXED);
    }
#endif
    return requested;
}

int eg_forked_single_threaded(void) {
#ifdef _OPENMP
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
        const double t0 = now_seconds();
        k->fma_loop(iters, &sink);
        t = now_seconds() - t0;
        if (t > 0.02 || iters > ((int64_t)1 << 40)) break;
        iters *= 4;
    }
    iters = (int64_t)((double)iters * (seconds / (t > 1e-9 ? t : 1e-9)));
    if (iters < 1) iters = 1;
    const double t0 = now_seconds();
    double total = 0.0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) reduction(+ : total, sink)
#endif
    {
        float local = 0.0f;
        total += k->fma_loop(iters, &local);
        sink += local;
    }
    const double el = now_seconds() - t0;
    return sink == 12345.678f ? 0.0 : total / el / 1e9; /* using the sums keeps the loops alive */
}
