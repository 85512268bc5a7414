"""Server comparison: the same bounded load against ``embgemma serve`` and llama-cpp-python's
OpenAI-compatible server, on the same EmbeddingGemma-300m (float32: the sentence-transformers
folder for embgemma, its f32 GGUF for llama.cpp), in the same run. The model is the random-weight
one unless --model DIR is given (the committed serve.* results are on random weights).

    python benchmarks/run.py --serve [--serve-seconds 30] [--concurrency 8] [--max-inputs 8] [--reps 2]

Each system is started as its own process on loopback, checked for fidelity (its embeddings of 16
texts against embgemma's library, which the test suite ties to sentence-transformers), warmed up,
then loaded; systems alternate across repetitions. Results: benchmarks/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from serve_load import make_texts, run_load  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, path: str, proc: subprocess.Popen, timeout: float = 300.0) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in time")


def start(system: str, paths: dict, threads: int, logdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(logdir / f"serve-{system}.log", "a")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if system == "embgemma":
        cmd = [sys.executable, "-m", "embgemma", "serve", "--model", paths["st"], "--port", str(port),
               "--threads", str(threads), "--log-level", "warning", "--served-model-name", "model"]
        ready = "/health"
    else:
        gguf = str(Path(paths["gguf"]) / "model-f32.gguf")
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--embedding", "true",
               "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "8192",
               "--n_batch", "8192", "--n_ubatch", "8192", "--port", str(port), "--host", "127.0.0.1",
               "--model_alias", "model", "--verbose", "false"]
        ready = "/v1/models"
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    _wait(url, ready, proc)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fidelity(url: str, texts: list[str], ref: np.ndarray) -> float:
    import httpx

    r = httpx.post(url + "/v1/embeddings", json={"model": "model", "input": texts, "encoding_format": "float"},
                   timeout=300)
    r.raise_for_status()
    got = np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])], np.float32)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    return float(np.min(np.sum(got * ref, axis=1)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    from harness import cli

    return cli.parse_serve_args(argv)


def main(argv: list[str]) -> int:
    from harness import bench

    args = parse_args(argv)
    args.gguf_types = "f32,bf16,q8_0"  # the cache key of the conversions bench.py made
    cache = Path(args.cache_dir)
    logdir = HERE / "results" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    vers = bench.versions()
    model = bench.resolve_model(args.model)
    paths, export_info = bench.prepare(args, cache, logdir, {"st", "gguf"}, vers, model)
    bench.log(f"model: {export_info['model']['kind']} weights, {export_info['model']['path']}")

    from embgemma import EmbeddingGemma

    probe = make_texts(16, seed=99)
    ref = EmbeddingGemma(paths["st"], threads=args.threads).encode(probe)
    systems = args.systems.split(",")
    results: dict[str, dict] = {s: {"runs": []} for s in systems}
    for rep in range(args.reps):
        order = systems if rep % 2 == 0 else systems[::-1]
        for system in order:
            t0 = time.perf_counter()
            proc, url = start(system, paths, args.threads, logdir)
            startup = time.perf_counter() - t0
            try:
                if rep == 0:
                    results[system]["worst_cosine_vs_embgemma_library"] = round(fidelity(url, probe, ref), 6)
                asyncio.run(run_load(url, seconds=3, concurrency=2, max_inputs=2))  # warm-up
                res = asyncio.run(run_load(url, seconds=args.serve_seconds, concurrency=args.concurrency,
                                           max_inputs=args.max_inputs, pid=proc.pid))
            finally:
                stop(proc)
            res["startup_s"] = round(startup, 2)
            results[system]["runs"].append(res)
            bench.log(f"serve {system} rep {rep}: {res['requests_per_s']} req/s, p50 {res['p50_ms']} ms, "
                      f"p99 {res['p99_ms']} ms, errors {res['errors']}, rss {res['rss_mb_end']} MB")
    for system, r in results.items():
        runs = r["runs"]
        r["median"] = {k: float(np.median([x[k] for x in runs])) for k in
                       ("requests_per_s", "inputs_per_s", "p50_ms", "p99_ms", "rss_mb_end", "startup_s")}
        r["errors"] = sum(x["errors"] for x in runs)
    out = {"machine": bench.machine(), "versions": vers, "args": vars(args), "model": export_info["model"],
           "results": results,
           "texts": "benchmarks/serve_load.py make_texts (4..48 words), requests of 1..max_inputs texts",
           "date": time.strftime("%Y-%m-%d %H:%M")}
    res_dir = HERE / "results"
    (res_dir / f"{args.name}.json").write_text(json.dumps(out, indent=1, default=str))
    base = results.get("llama-cpp-python", {}).get("median")
    lines = ["| server | requests/s | inputs/s | p50 ms | p99 ms | errors | RSS MB | start s | worst cos |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for system, r in results.items():
        m = r["median"]
        lines.append(f"| {system} | {m['requests_per_s']:.1f} | {m['inputs_per_s']:.1f} | {m['p50_ms']:.0f} | "
                     f"{m['p99_ms']:.0f} | {r['errors']} | {m['rss_mb_end']:.0f} | {m['startup_s']:.1f} | "
                     f"{r.get('worst_cosine_vs_embgemma_library', float('nan')):.5f} |")
    if base and "embgemma" in results:
        e = results["embgemma"]["median"]
        lines.append("")
        lines.append(f"embgemma / llama-cpp-python: requests/s {e['requests_per_s'] / base['requests_per_s']:.2f}x, "
                     f"p50 {e['p50_ms'] / base['p50_ms']:.2f}x, p99 {e['p99_ms'] / base['p99_ms']:.2f}x, "
                     f"RSS {e['rss_mb_end'] / base['rss_mb_end']:.2f}x")
    (res_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1
