/* Stand-in for the macOS SDK's <sys/sysctl.h> (tests/c/run.sh): the one declaration dispatch.c's
 * __APPLE__ branch uses, as Apple declares it, so that branch can be compiled on Linux and run
 * under QEMU against tests/c/fake_sysctl.c. Not used by any real build. */
#ifndef EG_FAKE_SYS_SYSCTL_H
#define EG_FAKE_SYS_SYSCTL_H
#include <stddef.h>
int sysctlbyname(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
#endif
