#!/usr/bin/env python3
"""embgemma competitor benchmark: one command.

    python benchmarks/run.py --help     # instant: arguments are parsed before any setup
    python benchmarks/run.py --quick    # smoke run: minutes once set up
    python benchmarks/run.py            # full run: hours on 2 cores (see benchmarks/README.md)
    python benchmarks/run.py --serve    # embgemma serve against llama-cpp-python's server, same load

The first run creates benchmarks/.venv-bench (pinned requirements from requirements.txt, checked
against requirements-lock.txt; llama-cpp-python built from source for this CPU) and installs
embgemma from this checkout into it. The model is --model DIR, else the real EmbeddingGemma-300m
(../shared/tools/get-real-weights), else the random-weight model of tests/refmodel.py; it is
exported once to ONNX (fp32 + int8, and the whole pipeline for fastembed), OpenVINO IR (fp32, static
int8, int8 weight-compressed) and GGUF (f32, bf16, q8_0) under
benchmarks/.cache. Later runs reuse all of it. This file uses only the standard library: it parses
the arguments, sets the environment up, then re-executes itself inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = Path(os.environ.get("EMBGEMMA_BENCH_VENV", HERE / ".venv-bench"))
REQ = HERE / "requirements.txt"
LOCK = HERE / "requirements-lock.txt"
# llama.cpp is compiled for the CPU it runs on (AVX2/FMA here; AVX-512 where the CPU has it).
LLAMA_CMAKE_ARGS = os.environ.get(
    "EMBGEMMA_BENCH_CMAKE_ARGS",
    "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF",
)
SETUP_VERSION = 2
# modules the harness needs in the environment: checked on every run (a stamp must not hide a broken env)
NEEDED_MODULES = ["torch", "transformers", "sentence_transformers", "optimum", "onnxruntime", "openvino", "nncf",
                  "fastembed", "llama_cpp", "gguf", "sentencepiece", "tokenizers", "matplotlib", "psutil", "numpy"]
# what embgemma is built from: a change in any of these reinstalls it into the environment
EMBGEMMA_SOURCES = ["setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "LICENSE", "csrc", "embgemma"]
EMBGEMMA_MARK = VENV / ".embgemma-install.json"

_PROBE = r"""
import importlib.util, json, sys
out = {"missing": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}
try:
    import embgemma, embgemma._core
    out["embgemma"] = embgemma.__file__
except Exception as e:
    out["embgemma_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _say(msg: str) -> None:
    print(f"[run.py] {msg}", flush=True)


def _vpy() -> Path:
    return VENV / "bin" / "python"


def _in_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def _requirements() -> tuple[list[str], str]:
    specs, llama = [], ""
    for line in REQ.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower().startswith(("llama-cpp-python", "llama_cpp_python")):
            llama = line
        else:
            specs.append(line)
    return specs, llama


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _pip(args: list[str], env: dict | None = None, cwd: str | None = None) -> None:
    cmd = [str(_vpy()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    _say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env, cwd=cwd)


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def probe_env() -> dict:
    """What the environment's own Python can import, run from outside the repository.

    ``-I`` and a temporary working directory make sure that an in-place build of embgemma in this
    checkout (embgemma/_core*.so beside the sources) cannot stand in for an installed one: the
    harness's workers run from benchmarks/, where the checkout's package is not on sys.path.
    """
    if not _vpy().exists():
        return {"missing": list(NEEDED_MODULES), "embgemma_error": "no environment"}
    with tempfile.TemporaryDirectory(prefix="embgemma-bench-probe-") as d:
        r = subprocess.run([str(_vpy()), "-I", "-c", _PROBE, *NEEDED_MODULES], cwd=d, capture_output=True,
                           text=True, env=_clean_env())
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"missing": list(NEEDED_MODULES), "embgemma_error": f"probe failed: {r.stderr[-500:]}"}


def _source_files() -> list[Path]:
    out = []
    for name in EMBGEMMA_SOURCES:
        p = REPO / name
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".so", ".o", ".pyc", ".pyd"):
                    out.append(f)
    return out


def embgemma_source_hash() -> str:
    h = hashlib.sha256()
    for f in _source_files():
        h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def install_embgemma(src_hash: str) -> None:
    """A regular (non-editable) install of this checkout's embgemma, built from a copy of its sources.

    Built from a copy so that nothing is written into the checkout (no build/, no in-place
    _core*.so that another build in the same checkout could be using); reinstalled whenever the
    sources' hash changes, so the benchmark always measures the checkout as it is.
    """
    with tempfile.TemporaryDirectory(prefix="embgemma-bench-src-") as d:
        for f in _source_files():
            dst = Path(d) / f.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
        _say(f"installing embgemma from this checkout (sources {src_hash}) into {VENV}")
        _pip(["--no-deps", "--force-reinstall", "--no-cache-dir", d], env=_clean_env(), cwd=d)
    EMBGEMMA_MARK.write_text(json.dumps({"source_hash": src_hash, "repo": str(REPO)}, indent=1))


def ensure_venv() -> None:
    """Create / update / repair the environment; cheap when it is healthy."""
    stamp_path = VENV / ".bench-setup.json"
    specs, llama = _requirements()
    want = {"version": SETUP_VERSION, "cmake_args": LLAMA_CMAKE_ARGS, "llama": llama,
            "requirements": _digest(REQ.read_text(), LOCK.read_text() if LOCK.exists() else "")}
    try:
        have = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        have = {}
    probe = probe_env()
    missing = probe.get("missing", [])
    stamp_ok = have == want and _vpy().exists()
    if stamp_ok and missing:
        _say(f"the environment's stamp is current but {missing} cannot be imported there: repairing")
    if not stamp_ok or missing:
        if sys.version_info < (3, 10):
            sys.exit("benchmarks/run.py needs Python >= 3.10 to create its environment")
        if not _vpy().exists():
            _say(f"creating the benchmark environment {VENV} with {sys.executable}")
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        constraints = ["-c", str(LOCK)] if LOCK.exists() else []
        if have.get("requirements") != want["requirements"] or [m for m in missing if m != "llama_cpp"]:
            _pip([*specs, *constraints])
        # rebuild llama.cpp only when its own pin or flags changed, or it is not importable
        if llama and (have.get("cmake_args") != want["cmake_args"] or have.get("llama", llama) != llama
                      or "llama_cpp" in missing or "llama_cpp" in probe_env().get("missing", [])):
            env = dict(os.environ, CMAKE_ARGS=LLAMA_CMAKE_ARGS,
                       CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2))
            _say(f"building {llama} from source with CMAKE_ARGS='{LLAMA_CMAKE_ARGS}' (10-20 minutes on 2 cores)")
            # its dependencies (numpy, typing-extensions, diskcache, jinja2) are pinned in requirements.txt
            _pip(["--no-binary", "llama-cpp-python", "--no-cache-dir", "--force-reinstall", "--no-deps", llama,
                  *constraints], env=env)
        probe = probe_env()
        if probe.get("missing"):
            sys.exit(f"[run.py] the benchmark environment {VENV} still lacks {probe['missing']}; "
                     f"delete it and run again")
        stamp_path.write_text(json.dumps(want, indent=1))
    # embgemma: importable from outside the checkout, and built from the checkout's current sources
    src_hash = embgemma_source_hash()
    try:
        mark = json.loads(EMBGEMMA_MARK.read_text())
    except (OSError, ValueError):
        mark = {}
    where = probe.get("embgemma")
    if where is None or mark.get("source_hash") != src_hash or mark.get("repo") != str(REPO):
        if where is None:
            _say(f"embgemma is not importable in {VENV} ({probe.get('embgemma_error')})")
        else:
            _say("embgemma's sources changed since it was installed into the environment")
        install_embgemma(src_hash)
        probe = probe_env()
        if probe.get("embgemma") is None:
            sys.exit(f"[run.py] embgemma still cannot be imported in {VENV}: {probe.get('embgemma_error')}")
    _say(f"benchmark environment ready ({VENV}; embgemma {probe['embgemma']})")


def main() -> int:
    argv = sys.argv[1:]
    sys.path.insert(0, str(HERE))
    from harness import cli  # standard library only: --help and argument errors come before any setup

    serve = "--serve" in argv
    rest = [a for a in argv if a != "--serve"]
    args = cli.parse_serve_args(rest) if serve else cli.parse_args(rest)
    if not _in_venv():
        ensure_venv()
        if getattr(args, "setup_only", False):
            return 0
        os.execv(str(_vpy()), [str(_vpy()), str(Path(__file__).resolve()), *argv])
    if getattr(args, "setup_only", False):
        return 0
    if serve:  # the HTTP server comparison (docs/server.md)
        from harness import serve_bench

        return serve_bench.main(rest)
    from harness import bench

    return bench.main(rest)


if __name__ == "__main__":
    sys.exit(main())
