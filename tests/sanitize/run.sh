#!/usr/bin/env bash
# 1. The C core and the extension built with AddressSanitizer + UndefinedBehaviorSanitizer, and the
#    test suite run against that build, libasan preloaded into Python and PYTHONMALLOC=malloc so ASan
#    sees every allocation. Left out by default for time (5-10x slower under ASan): the slow tests
#    and the full-shape parity / precision files, whose code paths the tiny-model and kernel tests
#    already drive. Also left out: the Ray and Spark tests, whose engines (raylet, the JVM) are
#    subprocesses that would inherit the preloaded ASan runtime; they call the same encode path.
# 2. ThreadSanitizer on the C core with OpenMP compiled out (TSan does not understand libgomp's
#    barriers): 8 threads encoding on one model with different batch shapes, every result checked
#    against the one computed alone (tests/sanitize/tsan_encode.c; CPython itself is not
#    instrumented, so this runs without Python).
# Any sanitizer report fails the run.
#   SANITIZE_TESTS  pytest arguments for step 1
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r csrc embgemma tests docs setup.py pyproject.toml README.md "$work"/
mkdir -p "$work/benchmarks" && cp benchmarks/serve_load.py "$work/benchmarks/"  # the server load test's client
cp benchmarks/fidelity.py "$work/benchmarks/"  # imported by tests/test_real_weights.py (slow: collected, not run)
rm -f "$work"/embgemma/*.so
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
(
  cd "$work"
  EMBGEMMA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g" \
  EMBGEMMA_LDFLAGS="-fsanitize=address,undefined" \
    python setup.py -q build_ext --inplace 2>&1 | grep -v "^$" || true
  # the sanitized build is the one imported
  LD_PRELOAD="$libasan $libubsan" ASAN_OPTIONS=detect_leaks=0 python -c \
    "import embgemma, sys; f = embgemma._core.__file__; assert f.startswith('$work'), f; print('sanitized build:', f)"
  ldd embgemma/_core*.so | grep libasan >/dev/null
  echo "sanitize: AddressSanitizer + UndefinedBehaviorSanitizer"
  LD_PRELOAD="$libasan $libubsan" PYTHONMALLOC=malloc \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    python -m pytest -q -p no:cacheprovider -x -m "not slow" \
      ${SANITIZE_TESTS:---ignore=tests/test_parity.py --ignore=tests/test_precision.py --ignore=tests/test_ray.py --ignore=tests/test_spark.py tests}
)
echo "sanitize: ThreadSanitizer (OpenMP compiled out): 8 threads encoding on one model"
srcs=$(ls csrc/*.c | grep -v '/module.c$')
gcc -std=c11 -O1 -g -fsanitize=thread -D_GNU_SOURCE -Wno-unknown-pragmas -Icsrc tests/sanitize/tsan_encode.c $srcs \
  -lm -lpthread -o "$work/tsan_encode"
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" "$work/tsan_encode" tests/data/golden_model 8 4
