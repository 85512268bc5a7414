/* platform.c - the OS layer (see platform.h): POSIX first, then Win64. No Python here. */
#include "platform.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#define EG_OS_X86 1
#endif

#if defined(__MINGW32__) && !__USE_MINGW_ANSI_STDIO
#error "MinGW builds need -D__USE_MINGW_ANSI_STDIO=1: error messages use C99 printf formats (%zu, %lld)"
#endif

#ifndef _WIN32
/* ================================================================ POSIX: Linux, macOS */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__) && defined(EG_OS_X86)
#include <sys/syscall.h>
#endif

int eg_os_stat(const char *path, uint64_t *size, int *regular) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *size = (uint64_t)st.st_size;
    *regular = S_ISREG(st.st_mode);
    return 0;
}

FILE *eg_os_fopen(const char *path, const char *mode) { return fopen(path, mode); }

eg_status eg_os_map(const char *path, size_t min_size, const char *kind, void **map, size_t *size, char *err,
                    size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return eg_fail(err, errlen, EG_ERR_IO, "%s: not a regular file", path);
    }
    const size_t n = (size_t)st.st_size;
    if (n < min_size) {
        close(fd);
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %zu bytes is too short for a %s file", path, n, kind);
    }
    void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    *map = m;
    *size = n;
    return EG_OK;
}

void eg_os_unmap(void *map, size_t size) { munmap(map, size); }

/* madvise on the whole pages inside [p, p + n); advisory: a failure only costs memory or speed */
static void advise_pages(const void *p, size_t n, int advice) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + (uintptr_t)n) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, advice);
}

void eg_os_release_pages(const void *p, size_t n) { advise_pages(p, n, MADV_DONTNEED); }

void eg_os_prefer_huge_pages(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    advise_pages(p, n, MADV_HUGEPAGE);
#else
    (void)p, (void)n;
#endif
}

void *eg_aligned_alloc(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, 64, bytes ? bytes : 64) == 0 ? p : NULL;
}

void eg_aligned_free(void *p) { free(p); }

double eg_os_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

long eg_os_pid(void) { return (long)getpid(); }

int eg_os_cpu_count(void) {
#ifdef _OPENMP
    return omp_get_num_procs(); /* GNU OpenMP and libomp count the processors in this process's affinity */
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

void eg_os_once(eg_once *once, void (*fn)(void)) { pthread_once(once, fn); }

#ifdef EG_OS_X86
/* Linux enables the AMX tile data state per process, on request (arch_prctl ARCH_REQ_XCOMP_PERM for
 * XFEATURE_XTILEDATA, Linux 5.16+); a tile instruction without it kills the process. Asked once; a
 * refusal (older kernel, a too small sigaltstack somewhere in the process) leaves AMX unused. */
#if defined(__linux__)
static int amx_permitted_flag;
static void ask_amx_permission(void) { amx_permitted_flag = syscall(SYS_arch_prctl, 0x1023, 18) == 0; }
int eg_os_amx_permitted(void) {
    static eg_once once = EG_ONCE_INIT;
    eg_os_once(&once, ask_amx_permission);
    return amx_permitted_flag;
}
#else
int eg_os_amx_permitted(void) { return 0; } /* no other POSIX system hands out tile state here */
#endif
#endif

#else
/* ================================================================ Win64 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <malloc.h>
#include <process.h>
#include <sys/stat.h>
#include <sys/types.h>

/* UTF-8 to UTF-16 for the wide calls; NULL (errno EINVAL or ENOMEM) when it cannot be converted. */
static wchar_t *widen(const char *s) {
    const int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) {
        errno = EINVAL;
        return NULL;
    }
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
    return w;
}

/* The system's message for a Win32 error code, on one line. */
static const char *win_error(DWORD code, char *buf, size_t len) {
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0, buf,
                             (DWORD)len, NULL);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '.')) n--;
    if (n == 0) snprintf(buf, len, "Windows error %lu", (unsigned long)code);
    else buf[n] = 0;
    return buf;
}

int eg_os_stat(const char *path, uint64_t *size, int *regular) {
    wchar_t *w = widen(path);
    if (!w) return -1;
    struct _stat64 st;
    const int r = _wstat64(w, &st);
    free(w);
    if (r != 0) return -1;
    *size = (uint64_t)st.st_size;
    *regular = (st.st_mode & _S_IFMT) == _S_IFREG;
    return 0;
}

FILE *eg_os_fopen(const char *path, const char *mode) {
    wchar_t *w = widen(path), *wm = widen(mode);
    FILE *f = w && wm ? _wfopen(w, wm) : NULL;
    free(w);
    free(wm);
    return f;
}

/* Whole-file views start at offset 0, a multiple of the 64 KiB allocation granularity, and a size of
 * 0 maps the whole file, beyond 4 GiB included. */
eg_status eg_os_map(const char *path, size_t min_size, const char *kind, void **map, size_t *size, char *err,
                    size_t errlen) {
    char why[256];
    wchar_t *w = widen(path);
    if (!w) return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    const DWORD attrs = GetFileAttributesW(w);
    if (attrs != INVALID_FILE_ATTRIBUTES && (attrs & FILE_ATTRIBUTE_DIRECTORY)) {
        free(w);
        return eg_fail(err, errlen, EG_ERR_IO, "%s: not a regular file", path);
    }
    HANDLE f = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    free(w);
    if (f == INVALID_HANDLE_VALUE)
        return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot open: %s", path, win_error(GetLastError(), why, sizeof why));
    LARGE_INTEGER li;
    if (GetFileType(f) != FILE_TYPE_DISK || !GetFileSizeEx(f, &li)) {
        CloseHandle(f);
        return eg_fail(err, errlen, EG_ERR_IO, "%s: not a regular file", path);
    }
    const uint64_t n64 = (uint64_t)li.QuadPart;
    if (n64 < (uint64_t)min_size) {
        CloseHandle(f);
        return eg_fail(err, errlen, EG_ERR_BAD_FILE, "%s: %llu bytes is too short for a %s file", path,
                       (unsigned long long)n64, kind);
    }
    HANDLE m = CreateFileMappingW(f, NULL, PAGE_READONLY, 0, 0, NULL);
    void *v = m ? MapViewOfFile(m, FILE_MAP_READ, 0, 0, 0) : NULL;
    const DWORD code = GetLastError();
    if (m) CloseHandle(m); /* the view keeps the mapping and the file open */
    CloseHandle(f);
    if (!v) return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot map: %s", path, win_error(code, why, sizeof why));
    *map = v;
    *size = (size_t)n64;
    return EG_OK;
}

void eg_os_unmap(void *map, size_t size) { UnmapViewOfFile(map); }

/* VirtualUnlock on pages that are not locked takes them out of the working set: for a file view,
 * Windows' MADV_DONTNEED (it fails with ERROR_NOT_LOCKED, as documented, having done so). */
void eg_os_release_pages(const void *p, size_t n) {
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    const uintptr_t page = si.dwPageSize;
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + (uintptr_t)n) & ~(page - 1);
    if (b > a) (void)VirtualUnlock((void *)a, b - a);
}

void eg_os_prefer_huge_pages(void *p, size_t n) { (void)p, (void)n; } /* large pages need a privilege */

void *eg_aligned_alloc(size_t bytes) { return _aligned_malloc(bytes ? bytes : 64, 64); }

void eg_aligned_free(void *p) { _aligned_free(p); }

double eg_os_seconds(void) {
    static LARGE_INTEGER freq; /* fixed at boot; a racing first call writes the same value */
    LARGE_INTEGER t;
    if (!freq.QuadPart) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart / (double)freq.QuadPart;
}

long eg_os_pid(void) { return (long)GetCurrentProcessId(); }

/* Processors in this process's affinity mask (its processor group); a process that Windows 11 spreads
 * over several groups (more than 64 logical processors) may use them all. */
int eg_os_cpu_count(void) {
    USHORT groups[4];
    USHORT n_groups = 4;
    if (!GetProcessGroupAffinity(GetCurrentProcess(), &n_groups, groups) || n_groups > 1) {
        const DWORD all = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
        return all > 0 ? (int)all : 1;
    }
    DWORD_PTR proc, sys;
    if (!GetProcessAffinityMask(GetCurrentProcess(), &proc, &sys) || !proc) return 1;
    int n = 0;
    for (; proc; proc &= proc - 1) n++;
    return n;
}

static BOOL CALLBACK once_call(PINIT_ONCE once, PVOID fn, PVOID *ctx) {
    ((void (*)(void))(uintptr_t)fn)();
    return TRUE;
}

void eg_os_once(eg_once *once, void (*fn)(void)) {
    InitOnceExecuteOnce((PINIT_ONCE)once, once_call, (PVOID)(uintptr_t)fn, NULL);
}

/* a * b is exact in double (24 + 24 bits); the sum is rounded to odd (round to nearest, then a last
 * bit of 0 moved one ulp toward the exact value), and from 53 bits that rounds once more to float
 * correctly (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums", 2008). */
float eg_fmaf(float a, float b, float c) {
    const double p = (double)a * (double)b, s = p + (double)c;
    const double bv = s - p, e = (p - (s - bv)) + ((double)c - bv); /* s + e == p + c exactly (TwoSum) */
    if (e == 0.0 || !isfinite(s)) return (float)s;
    uint64_t u;
    memcpy(&u, &s, sizeof u);
    if (!(u & 1)) u += (e > 0) == (s > 0) ? 1 : (uint64_t)-1; /* toward the exact value in magnitude */
    double odd;
    memcpy(&odd, &u, sizeof odd);
    return (float)odd;
}

#ifdef EG_OS_X86
/* Windows enables optional XSAVE state (AMX tile data) for a thread on demand once XCR0 has the tile
 * bits: no request as on Linux. */
int eg_os_amx_permitted(void) { return 1; }
#endif
#endif

/* ================================================================ x86-64 CPU features, every OS */
#ifdef EG_OS_X86
#ifdef _MSC_VER
#include <intrin.h>
#include <immintrin.h>

int eg_os_cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]) {
    int v[4];
    __cpuid(v, (int)(leaf & 0x80000000u));
    const unsigned max = (unsigned)v[0];
    memset(r, 0, 4 * sizeof *r);
    if (leaf > max) return 0;
    __cpuidex(v, (int)leaf, (int)subleaf);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)v[i];
    return 1;
}

uint64_t eg_os_xgetbv0(void) { return (uint64_t)_xgetbv(0); }
#else
#include <cpuid.h>

int eg_os_cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]) {
    memset(r, 0, 4 * sizeof *r);
    if (leaf > (unsigned)__get_cpuid_max(leaf & 0x80000000u, NULL)) return 0;
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
    return 1;
}

/* inline assembly: the _xgetbv intrinsic would need -mxsave for the whole file */
uint64_t eg_os_xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif
#endif
