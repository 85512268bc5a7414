/* files.c - the Win64 OS layer (csrc/platform.c) on what the golden model does not reach: a file over
 * 4 GiB mapped whole, errors for a folder and a missing file, aligned memory, the clock, run-once,
 * the processor count. Run under Wine by tests/c/win64.sh with a folder whose name is not ASCII. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "internal.h"
#include "platform.h"

static int failed;
#define CHECK(cond, ...)                                                                                           \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            printf("FAIL (%s:%d): ", __FILE__, __LINE__);                                                          \
            printf(__VA_ARGS__);                                                                                   \
            printf("\n");                                                                                          \
            failed++;                                                                                              \
        }                                                                                                          \
    } while (0)

static int runs;
static void once_body(void) { runs++; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FOLDER BIG_FILE_SIZE (FOLDER holds big.bin, written by win64.sh)\n", argv[0]);
        return 2;
    }
    char path[1024], err[EG_ERRLEN];
    const unsigned long long want = strtoull(argv[2], NULL, 10);
    snprintf(path, sizeof path, "%s/big.bin", argv[1]);

    uint64_t size = 0;
    int regular = 0;
    CHECK(eg_os_stat(path, &size, &regular) == 0 && regular && size == want, "stat %s: size %llu, regular %d", path,
          (unsigned long long)size, regular);
    CHECK(eg_file_exists(path) && !eg_is_gguf(path), "%s: exists and is no GGUF", path);

    void *map = NULL;
    size_t n = 0;
    eg_status s = eg_os_map(path, 8, "test", &map, &n, err, sizeof err);
    CHECK(s == EG_OK && n == want, "map %s: %s (%zu bytes)", path, s ? err : "ok", n);
    if (s == EG_OK) {
        const unsigned char *b = map;
        CHECK(b[0] == 0 && memcmp(b + n - 8, "EG-TAIL!", 8) == 0, "the last 8 bytes past 4 GiB read back");
        eg_os_release_pages(b + n - 65536, 65536);
        CHECK(memcmp(b + n - 8, "EG-TAIL!", 8) == 0, "released pages read back from the file");
        eg_os_unmap(map, n);
    }
    s = eg_os_map(argv[1], 8, "test", &map, &n, err, sizeof err);
    CHECK(s == EG_ERR_IO && strstr(err, "not a regular file"), "a folder: %s", err);
    snprintf(path, sizeof path, "%s/missing.bin", argv[1]);
    s = eg_os_map(path, 8, "test", &map, &n, err, sizeof err);
    CHECK(s == EG_ERR_IO && strstr(err, "cannot open"), "a missing file: %s", err);
    printf("missing file: %s\n", err);

    void *p = eg_aligned_alloc(1000);
    CHECK(p && ((uintptr_t)p & 63) == 0, "64-byte aligned allocation");
    eg_aligned_free(p);
    const double t0 = eg_os_seconds();
    Sleep(20);
    const double dt = eg_os_seconds() - t0;
    CHECK(dt > 0.015 && dt < 5.0, "clock: a 20 ms sleep took %.4f s", dt);
    static eg_once once = EG_ONCE_INIT;
    for (int i = 0; i < 3; i++) eg_os_once(&once, once_body);
    CHECK(runs == 1, "run-once ran %d times", runs);
    CHECK(eg_os_cpu_count() >= 1, "processor count %d", eg_os_cpu_count());
    printf("processors: %d; %d failed\n", eg_os_cpu_count(), failed);
    return failed != 0;
}
