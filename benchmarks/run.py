#!/usr/bin/env python3
"""embgemma competitor benchmark: one command.

    python benchmarks/run.py --quick    # smoke run: minutes once set up
    python benchmarks/run.py            # full run: hours on 2 cores (see benchmarks/README.md)
    python benchmarks/run.py --serve    # embgemma serve against llama-cpp-python's server, same load

The first run creates benchmarks/.venv-bench (pinned requirements from requirements.txt, checked
against requirements-lock.txt; llama-cpp-python built from source for this CPU), then builds the
random-weight EmbeddingGemma-300m once and exports it to ONNX (fp32 + int8), OpenVINO IR and GGUF
(f32, bf16, q8_0) under benchmarks/.cache. Later runs reuse both. This file uses only the
standard library: it sets the environment up, then re-executes itself inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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
SETUP_VERSION = 1


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


def _pip(args: list[str], env: dict | None = None) -> None:
    cmd = [str(_vpy()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    _say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def ensure_venv() -> None:
    """Create / update the environment when requirements or build flags changed since last time."""
    stamp_path = VENV / ".bench-setup.json"
    specs, llama = _requirements()
    want = {"version": SETUP_VERSION, "cmake_args": LLAMA_CMAKE_ARGS, "llama": llama,
            "requirements": _digest(REQ.read_text(), LOCK.read_text() if LOCK.exists() else "")}
    try:
        have = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        have = {}
    if have == want and _vpy().exists():
        return
    if sys.version_info < (3, 10):
        sys.exit("benchmarks/run.py needs Python >= 3.10 to create its environment")
    if not _vpy().exists():
        _say(f"creating the benchmark environment {VENV} with {sys.executable}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    constraints = ["-c", str(LOCK)] if LOCK.exists() else []
    if have.get("requirements") != want["requirements"]:
        _pip([*specs, *constraints])
    # rebuild llama.cpp only when its own pin or flags changed (an old stamp without the key: keep it)
    if llama and (have.get("cmake_args") != want["cmake_args"] or have.get("llama", llama) != llama
                  or not _has_module("llama_cpp")):
        env = dict(os.environ, CMAKE_ARGS=LLAMA_CMAKE_ARGS,
                   CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2))
        _say(f"building {llama} from source with CMAKE_ARGS='{LLAMA_CMAKE_ARGS}' (several minutes)")
        # its dependencies (numpy, typing-extensions, diskcache, jinja2) are pinned in requirements.txt
        _pip(["--no-binary", "llama-cpp-python", "--no-cache-dir", "--force-reinstall", "--no-deps", llama,
              *constraints], env=env)
    # embgemma itself, editable, unless the environment already resolves it to this checkout
    r = subprocess.run([str(_vpy()), "-c", "import embgemma, os; print(os.path.dirname(embgemma.__file__))"],
                       capture_output=True, text=True)
    if r.returncode != 0 or Path(r.stdout.strip()).resolve() != (REPO / "embgemma").resolve():
        _pip(["--no-deps", "-e", str(REPO)])
    stamp_path.write_text(json.dumps(want, indent=1))
    _say("benchmark environment ready")


def _has_module(name: str) -> bool:
    r = subprocess.run([str(_vpy()), "-c", f"import {name}"], capture_output=True)
    return r.returncode == 0


def main() -> int:
    if not _in_venv():
        ensure_venv()
        os.execv(str(_vpy()), [str(_vpy()), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.path.insert(0, str(HERE))
    if "--serve" in sys.argv[1:]:  # the HTTP server comparison (docs/server.md)
        from harness import serve_bench

        return serve_bench.main([a for a in sys.argv[1:] if a != "--serve"])
    from harness import bench

    return bench.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
