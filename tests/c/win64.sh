#!/usr/bin/env bash
# The C core on Win64, without Windows: cross-compiled with MinGW-w64 GCC (OpenMP: libgomp) and with
# clang (--target=x86_64-w64-windows-gnu, serial: no OpenMP runtime for that target here), and once
# more with GCC the way setup.py builds it with MSVC (EG_ISA_PER_FILE: each kernel file compiled with
# its ISA's flags, no target attributes, intrinsics for the inline assembly), all warning-free at
# setup.py's warning level (-Werror), and run under Wine, which runs x86-64 code natively:
#   1. the driver (tests/c/driver.c) detects the same ISAs as natively (CPUID, XGETBV through the OS
#      layer) and runs every one against its scalar twin, with the golden model read from a folder
#      whose name is not ASCII (wide command line -> UTF-8 -> CreateFileW / MapViewOfFile);
#   2. GCC's build again with OMP_THREAD_LIMIT=2 on the best ISA: the driver's 3-thread runs become
#      2-thread ones, which must equal 1 thread bit for bit as well;
#   3. tests/c/win64/files.c: a file over 4 GiB (sparse) mapped whole, errors, aligned memory, clock.
# What this cannot check: MSVC itself (setup.py's Windows compiler), the extension module (no Windows
# CPython here), ISAs this CPU lacks (compiled, not run), a real Windows kernel.
# Needs x86_64-w64-mingw32-gcc (gcc-mingw-w64-x86-64-posix), clang 14+ and wine64 (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
# at exit: the Wine server (started persistent below) and its processes stopped, then the files removed
trap 'if [ -n "${WINEPREFIX:-}" ]; then wineserver -k; timeout 30 wineserver -w; fi >/dev/null 2>&1; rm -rf "$out"' EXIT

gcc_w=$(command -v x86_64-w64-mingw32-gcc-posix || command -v x86_64-w64-mingw32-gcc || true)
clang=$(command -v clang || command -v clang-14 || true)
wine=$(command -v wine64 || command -v wine || true)
if [ -z "$gcc_w" ] || [ -z "$clang" ] || [ -z "$wine" ] || ! command -v wineserver >/dev/null; then
  echo "tests/c/win64.sh: needs x86_64-w64-mingw32-gcc, clang and wine (apt-get install gcc-mingw-w64-x86-64-posix" \
       "clang wine64)" >&2
  exit 1
fi
srcs=$(ls csrc/*.c | grep -v '/module.c$')
# setup.py's warnings, as errors; MinGW's C99 printf (the messages use %zu, %lld)
flags="-std=c11 -O2 -D_GNU_SOURCE -D__USE_MINGW_ANSI_STDIO=1 -Wall -Wextra -Wpointer-arith -Wno-unused-parameter
       -Wno-missing-field-initializers -fno-math-errno -Werror -Icsrc"
# -static: no MinGW DLLs (libgomp, winpthread) to find at run time; -municode: the wide wmain
main="-Dmain=eg_main tests/c/win64/utf8_main.c -municode -static"
# clang finds MinGW's headers itself, but not GCC's libraries (their folder is named 12-posix) nor its linker
gcc_lib=$(dirname "$($gcc_w -print-libgcc-file-name)")
clang_w="$clang --target=x86_64-w64-windows-gnu --ld-path=$(command -v x86_64-w64-mingw32-ld) -L$gcc_lib"

echo "== Win64, $($gcc_w --version | head -n 1) (OpenMP) and $($clang --version | head -n 1) (serial)"
# shellcheck disable=SC2086
$gcc_w $flags -fopenmp tests/c/driver.c $srcs $main -o "$out/driver-gcc.exe" &
# shellcheck disable=SC2086
$clang_w $flags -Wno-unknown-pragmas tests/c/driver.c $srcs $main -o "$out/driver-clang.exe" &
# shellcheck disable=SC2086
$gcc_w $flags -Wno-unknown-pragmas tests/c/win64/files.c $srcs $main -o "$out/files.exe" &
wait %1 && wait %2 && wait %3
# the MSVC layout: kernel files with per-file ISA flags (setup.py's MSVC_ARCH gives MSVC's /arch ones);
# -Wpedantic -Wvla: no GNU extension and no variable-length array in the core, which MSVC would reject
objs=""
for f in $srcs; do
  case $f in
    csrc/kernels_avx2.c) isa="-mavx2 -mfma" ;;
    csrc/kernels_avxvnni.c) isa="-mavx2 -mfma -mavxvnni" ;;
    csrc/kernels_avx512.c) isa="-mavx2 -mfma -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni -mavx512bf16" ;;
    csrc/kernels_amx.c) isa="-mavx2 -mfma -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni -mavx512bf16
                             -mamx-tile -mamx-bf16" ;;
    *) isa="" ;;
  esac
  # shellcheck disable=SC2086
  $gcc_w $flags -fopenmp -DEG_ISA_PER_FILE=1 -Wpedantic -Wvla $isa -c "$f" -o "$out/$(basename "$f" .c).o"
  objs="$objs $out/$(basename "$f" .c).o"
done
# shellcheck disable=SC2086
$gcc_w $flags -fopenmp -DEG_ISA_PER_FILE=1 tests/c/driver.c $objs $main -o "$out/driver-perfile.exe"

# the ISAs this CPU runs, as the native build sees them (run.sh passes them; alone, build it)
if [ -z "${EG_NATIVE_ISAS:-}" ]; then
  # shellcheck disable=SC2086
  gcc -std=c11 -O2 -D_GNU_SOURCE -fopenmp -Icsrc tests/c/driver.c $srcs -lm -o "$out/driver-native"
  EG_NATIVE_ISAS=$("$out/driver-native" --list | xargs)
fi

# the golden data in a folder named in three scripts; Wine reads the command line as UTF-8
data="$out/données-模型-Ελληνικά"
mkdir "$data"
cp -r tests/data/golden_tokens.json tests/data/golden_expected.npz tests/data/golden_model "$data/"
windata="Z:${data//\//\\}"
export WINEPREFIX="$out/wine" WINEDEBUG=-all LC_ALL=C.UTF-8 OMP_WAIT_POLICY=passive
# one Wine server for every run (killed at exit): a run that starts while the last one's server is
# shutting down can lose its connection ("recvmsg: Connection reset by peer")
mkdir "$WINEPREFIX"
wineserver -p
"$wine" wineboot -i >/dev/null 2>&1 || true  # the Wine prefix, once (its complaints are not ours)

run() { # label, then the command
  local label=$1
  shift
  echo "-- $label"
  "$@" >"$out/log" 2>&1 || { cat "$out/log"; echo "tests/c/win64.sh: FAILED: $label" >&2; exit 1; }
  grep -E '^(ISA|supported|cpu|  .*golden model)|checks,|processors|missing file' "$out/log" || true
}
for cc in gcc clang perfile; do
  bin="$out/driver-$cc.exe"
  for isa in $EG_NATIVE_ISAS; do
    run "$cc build under Wine, EMBGEMMA_ISA=$isa, --data $windata" \
      env EMBGEMMA_ISA="$isa" "$wine" "$bin" --data "$windata" --expect-supported "$EG_NATIVE_ISAS"
  done
done
best=${EG_NATIVE_ISAS##* }
run "gcc build under Wine, EMBGEMMA_ISA=$best, OMP_THREAD_LIMIT=2 (1 thread against 2)" \
  env EMBGEMMA_ISA="$best" OMP_THREAD_LIMIT=2 "$wine" "$out/driver-gcc.exe" --data "$windata"

big=$(( (5 << 30) + 8 ))  # over 4 GiB: a sparse file, no disk used
truncate -s $(( big - 8 )) "$data/big.bin"
printf 'EG-TAIL!' >>"$data/big.bin"
run "the OS layer under Wine: a $big-byte file mapped, errors, memory, clock" "$wine" "$out/files.exe" "$windata" "$big"
echo "tests/c/win64.sh: all passed"
