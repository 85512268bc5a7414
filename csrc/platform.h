/* platform.h - the OS layer: the few things POSIX (Linux, macOS) and Win64 do differently, in one place.
 * Paths are UTF-8 (what Python's filesystem encoding gives on every OS); on Windows they are widened to
 * UTF-16 for the wide Win32 calls, so a name in any script opens. No Python here.
 */
#ifndef EG_PLATFORM_H
#define EG_PLATFORM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "embgemma.h"

/* Files. eg_os_stat: 0 and the size (and whether it is a regular file), or -1 with errno set. */
int eg_os_stat(const char *path, uint64_t *size, int *regular);
FILE *eg_os_fopen(const char *path, const char *mode);
/* Maps a whole regular file of at least min_size bytes read-only (kind names the format in errors). */
eg_status eg_os_map(const char *path, size_t min_size, const char *kind, void **map, size_t *size, char *err,
                    size_t errlen);
void eg_os_unmap(void *map, size_t size);
/* Drops the whole pages of [p, p + n) of a mapping from memory (advisory: the OS rereads them if touched). */
void eg_os_release_pages(const void *p, size_t n);
/* Asks for [p, p + n) of fresh memory, before its first touch, to be backed by huge pages where the OS
 * offers them on request (Linux transparent huge pages in "madvise" mode); advisory, a no-op elsewhere. */
void eg_os_prefer_huge_pages(void *p, size_t n);

/* Memory aligned to 64 bytes (a cache line, a ZMM register); freed only with eg_aligned_free. */
void *eg_aligned_alloc(size_t bytes);
void eg_aligned_free(void *p);

double eg_os_seconds(void); /* a monotonic clock, for intervals */
long eg_os_pid(void);
int eg_os_cpu_count(void); /* the processors this process may run on */

/* Run-once initialisation. */
#ifdef _WIN32
typedef struct {
    void *init_once; /* an INIT_ONCE (one pointer), kept opaque so windows.h stays out of the core */
} eg_once;
#define EG_ONCE_INIT {0}
#else
#include <pthread.h>
typedef pthread_once_t eg_once;
#define EG_ONCE_INIT PTHREAD_ONCE_INIT
#endif
void eg_os_once(eg_once *once, void (*fn)(void));

/* Compilers. GCC and clang compile each ISA's kernels with target attributes and pick them at run
 * time; MSVC has no target attributes (its intrinsics compile anywhere), so setup.py compiles each
 * kernel file with its own /arch flag instead and the few GNU-only constructs (inline assembly) have
 * intrinsic twins: EG_ISA_PER_FILE. tests/c/win64.sh defines it for GCC (with -m flags per file) to
 * run that code under Wine. */
#if defined(_MSC_VER) && !defined(__clang__) && !defined(EG_ISA_PER_FILE)
#define EG_ISA_PER_FILE 1
#endif
#ifdef EG_ISA_PER_FILE
#define EG_TARGET(isas)
#else
#define EG_TARGET(isas) __attribute__((target(isas)))
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#define EG_ALWAYS_INLINE __forceinline
#else
#define EG_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

/* The scalar kernels are the specification the vector kernels match bit for bit, so their fmaf must
 * be the fused, correctly rounded one: MinGW-w64's is not (a third of random float inputs come out an
 * ulp off vfmadd231ss), so on Windows the kernels use their own (kernels_scalar.c includes this). */
#ifdef _WIN32
float eg_fmaf(float a, float b, float c);
#define fmaf eg_fmaf
#endif

#if defined(__x86_64__) || defined(_M_X64)
/* CPUID leaf/subleaf into r[4] = eax, ebx, ecx, edx; 0 (and zeros) for a leaf above the CPU's maximum. */
int eg_os_cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]);
uint64_t eg_os_xgetbv0(void); /* XCR0: the register state the OS saves; call only when CPUID says OSXSAVE */
/* Whether this process may use the AMX tile data state (XCR0 says the OS saves it; Linux also asks). */
int eg_os_amx_permitted(void);
#endif

#endif
