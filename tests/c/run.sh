#!/usr/bin/env bash
# The C core's test driver (tests/c/driver.c), without Python:
#   1. natively: once per ISA this CPU supports, forced with EMBGEMMA_ISA;
#   2. ARM64, cross-compiled (aarch64-linux-gnu-gcc, OpenMP on) and run under qemu-aarch64 on three
#      CPU models, each checking that exactly its ISAs are detected and running one level:
#        cortex-a72   (Advanced SIMD only)             scalar neon          -> neon
#        neoverse-n1  (+ dot product)                  + dotprod            -> dotprod
#        max          (+ I8MM, BF16: QEMU's all)       + i8mm               -> scalar, i8mm
#      the macOS detection branch (sysctlbyname) against a stand-in reporting an old macOS, an M1, an M2;
#      and, when clang is installed, the same kernels built by clang (serial) on "max";
#   3. on x86-64, Win64: tests/c/win64.sh (MinGW-w64 GCC and clang, run under Wine);
#   4. nothing else: emulated timings mean nothing and none are taken.
# Needs gcc; for step 2 gcc-aarch64-linux-gnu (with libc6-dev-arm64-cross) and qemu-user, for step 3
# gcc-mingw-w64-x86-64-posix, clang and wine64 (.ci/run installs them). A missing cross toolchain fails the run unless EMBGEMMA_C_NATIVE_ONLY=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
srcs=$(ls csrc/*.c | grep -v '/module.c$')
flags="-std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -fno-math-errno -Icsrc"

echo "== native ($(uname -m)), gcc"
# shellcheck disable=SC2086
gcc $flags -fopenmp tests/c/driver.c $srcs -lm -o "$out/driver"
for isa in $("$out/driver" --list); do
  echo "-- EMBGEMMA_ISA=$isa"
  EMBGEMMA_ISA=$isa "$out/driver"
done

if [ "${EMBGEMMA_C_NATIVE_ONLY:-0}" = 1 ]; then
  echo "ARM64 under QEMU skipped (EMBGEMMA_C_NATIVE_ONLY=1)"
  exit 0
fi
cross=aarch64-linux-gnu-gcc
if ! command -v $cross >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "tests/c/run.sh: needs $cross and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" \
       "qemu-user), or EMBGEMMA_C_NATIVE_ONLY=1 to run only the native part" >&2
  exit 1
fi
sysroot=/usr/aarch64-linux-gnu
echo "== aarch64 under $(qemu-aarch64 --version | head -n 1), $($cross --version | head -n 1)"
# shellcheck disable=SC2086
$cross $flags -fopenmp -fno-schedule-insns tests/c/driver.c $srcs -lm -o "$out/driver-arm64"  # as setup.py builds it
# OMP_WAIT_POLICY=passive: idle OpenMP workers sleep instead of spinning (spinning is slow under QEMU)
run_arm() { # binary cpu expected-isas isa...
  local bin=$1 cpu=$2 expect=$3
  shift 3
  for isa in "$@"; do
    echo "-- qemu-aarch64 -cpu $cpu, EMBGEMMA_ISA=$isa"
    OMP_WAIT_POLICY=passive EMBGEMMA_ISA=$isa qemu-aarch64 -L $sysroot -cpu "$cpu" "$bin" --expect-supported "$expect"
  done
}
run_arm "$out/driver-arm64" cortex-a72 "scalar neon" neon
run_arm "$out/driver-arm64" neoverse-n1 "scalar neon dotprod" dotprod
run_arm "$out/driver-arm64" max "scalar neon dotprod i8mm" scalar i8mm

# dispatch.c's macOS branch (sysctlbyname), compiled with __APPLE__ against a stand-in sysctlbyname
# (tests/c/fake_sysctl.c) that reports what each kind of Mac does; the CPU under it is QEMU's "max"
echo "== the macOS feature detection (sysctlbyname stand-in) under QEMU"
objs=""
for f in $srcs; do
  if [ "$f" = csrc/dispatch.c ]; then
    # shellcheck disable=SC2086
    $cross $flags -fopenmp -U__linux__ -D__APPLE__ -isystem tests/c/macos -c $f -o "$out/dispatch-macos.o"
    objs="$objs $out/dispatch-macos.o"
  else
    objs="$objs $f"
  fi
done
# shellcheck disable=SC2086
$cross $flags -fopenmp -isystem tests/c/macos tests/c/driver.c tests/c/fake_sysctl.c $objs -lm -o "$out/driver-arm64-macos"
mac() { # what sysctl reports, expected ISAs
  echo "-- sysctl: ${1:-(no FEAT_* names: macOS before 12)}"
  EG_FAKE_SYSCTL="$1" qemu-aarch64 -L $sysroot -cpu max "$out/driver-arm64-macos" --dispatch-only --expect-supported "$2"
}
mac "" "scalar neon"
mac "hw.optional.arm.FEAT_DotProd=1 hw.optional.arm.FEAT_I8MM=0 hw.optional.arm.FEAT_BF16=0" "scalar neon dotprod"  # M1
mac "hw.optional.arm.FEAT_DotProd=1 hw.optional.arm.FEAT_I8MM=1 hw.optional.arm.FEAT_BF16=1" "scalar neon dotprod i8mm"  # M2+

clang=$(command -v clang || command -v clang-14 || true)
if [ -n "$clang" ]; then
  echo "== aarch64 under QEMU, $($clang --version | head -n 1) (OpenMP off)"
  # shellcheck disable=SC2086
  $clang --target=aarch64-linux-gnu $flags -Wno-unknown-pragmas tests/c/driver.c $srcs -lm \
    -o "$out/driver-arm64-clang"
  run_arm "$out/driver-arm64-clang" max "scalar neon dotprod i8mm" dotprod i8mm
fi

# Win64: cross-compiled with MinGW-w64 GCC and clang, run under Wine (tests/c/win64.sh), on x86-64
if [ "$(uname -m)" = x86_64 ]; then
  EG_NATIVE_ISAS=$("$out/driver" --list | xargs) tests/c/win64.sh
fi
echo "tests/c/run.sh: all passed"
