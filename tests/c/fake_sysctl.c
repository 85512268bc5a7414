/* fake_sysctl.c - macOS's sysctlbyname for tests/c/run.sh, which compiles dispatch.c's __APPLE__
 * branch on Linux and runs it under qemu-aarch64. EG_FAKE_SYSCTL="name=value ..." lists the names
 * that exist (as a Mac would report them); any other name fails with ENOENT, as the FEAT_* names
 * do on macOS before 12. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysctl.h>

int sysctlbyname(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen) {
    (void)newp;
    (void)newlen;
    const char *all = getenv("EG_FAKE_SYSCTL");
    const size_t n = strlen(name);
    for (const char *p = all ? all : ""; (p = strstr(p, name)) != NULL; p += n) {
        if ((p != all && p[-1] != ' ') || p[n] != '=') continue;
        if (!oldp || !oldlenp || *oldlenp < sizeof(int)) {
            errno = ENOMEM;
            return -1;
        }
        const int v = atoi(p + n + 1);
        memcpy(oldp, &v, sizeof v);
        *oldlenp = sizeof v;
        return 0;
    }
    errno = ENOENT;
    return -1;
}
