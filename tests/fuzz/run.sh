#!/usr/bin/env bash
# Bounded libFuzzer runs of the parsers of user files (GGUF; safetensors header and the JSON
# reader; every reader of a model folder's JSON files) and of eg_encode (random calls on the golden
# model, checked against the C API contract), built with AddressSanitizer + UndefinedBehaviorSanitizer
# from csrc/ (all but the Python boundary). Seeds and kept inputs: tests/fuzz/corpus/<target>/
# (replayed by tests/test_fuzz_corpus.py). Any crash, leak, sanitizer report, contract breach or
# timeout fails the run and leaves the input in $FUZZ_OUT.
#   FUZZ_SECONDS  per target (default 60)      FUZZ_CC  clang to use (default: clang, clang-14)
#   FUZZ_TARGETS  which targets (default: gguf safetensors config encode)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-60}
cc=${FUZZ_CC:-$(command -v clang || command -v clang-14 || true)}
if [ -z "$cc" ]; then
  echo "fuzz: no clang (libFuzzer ships with it): apt-get install clang-14 libclang-rt-14-dev" >&2
  exit 1
fi
out=${FUZZ_OUT:-$(mktemp -d)}
mkdir -p "$out"
srcs=$(ls csrc/*.c | grep -v '/module.c$')
for target in ${FUZZ_TARGETS:-gguf safetensors config encode}; do
  # an encode input is one call's arguments: a few KB reach every check and the longest sequence
  maxlen=65536; [ "$target" = encode ] && maxlen=4096
  def=FUZZ_$(echo "$target" | tr '[:lower:]' '[:upper:]')
  "$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D"$def" -D_GNU_SOURCE \
    -fsanitize-coverage-ignorelist=tests/fuzz/coverage-ignore.txt \
    -Wno-unknown-pragmas -Icsrc tests/fuzz/fuzz_parsers.c $srcs -lm -o "$out/fuzz_$target"
  mkdir -p "$out/work_$target"
  echo "fuzz $target: ${secs}s"
  "$out/fuzz_$target" -max_total_time="$secs" -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/crash-$target-" -print_final_stats=1 \
    "$out/work_$target" "tests/fuzz/corpus/$target" > "$out/log_$target" 2>&1 || {
      tail -n 60 "$out/log_$target"; echo "fuzz $target: FAILED (input in $out)" >&2; exit 1; }
  grep -E "stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb" "$out/log_$target" |
    sed "s/^/  $target /"
  grep -E "^#[0-9]+.*DONE" "$out/log_$target" | tail -n 1 | sed "s/^/  $target /" || true
done
