"""The coordinator: prepares the model and its exports, calibrates, measures, reports.

Runs inside the benchmark virtual environment (run.py re-executes itself there).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import inspect
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from . import report, systems, workloads
from .worker import _recv, _send

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
REPO = HERE.parent
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SEED = 0
WORKLOAD_ORDER = ["fixed", "corpus", "long", "query"]
ALIASES = {"a": "fixed", "b": "corpus", "c": "query", "d": "long"}
LINEAR_FLOP_PER_TOKEN = 2 * 24 * (768 * 768 + 2 * 768 * 256 + 768 * 768 + 3 * 768 * 1152)  # 202.9 MFLOP
ATTN_FLOP_PER_TOKEN_PER_KEY_PER_LAYER = 2 * 2 * 3 * 256  # QK^T and PV, 3 heads x 256: 3,072


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------
# versions, machine


PACKAGES = ["torch", "transformers", "sentence-transformers", "tokenizers", "huggingface-hub", "safetensors",
            "optimum", "optimum-onnx", "onnx", "onnxruntime", "optimum-intel", "openvino", "openvino-tokenizers",
            "nncf", "llama-cpp-python", "gguf", "numpy", "scipy", "matplotlib", "psutil", "embgemma"]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def machine() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "logical_cpus": os.cpu_count()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        first = cpu.split("\n\n", 1)[0]
        fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in first.splitlines())}
        info["cpu_model"] = fields.get("model name")
        info["cpu_vendor"] = fields.get("vendor_id")
        info["cpu_family_model_stepping"] = [fields.get("cpu family"), fields.get("model"), fields.get("stepping")]
        flags = next((ln.split(":", 1)[1].split() for ln in cpu.splitlines() if ln.startswith("flags")), [])
        info["isa_flags"] = sorted(f for f in flags if f in {
            "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
            "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"})
    except OSError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0]
        info["mem_total_gib"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


def mem_available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _h(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------
# preparation (cached)


def _step(step: str, logdir: Path, **kw) -> None:
    logf = logdir / f"prepare-{step}.log"
    log(f"prepare: {step} (log: {logf})")
    t0 = time.perf_counter()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    with open(logf, "ab") as f:
        r = subprocess.run([sys.executable, "-m", "harness.prepare", step, "--args", json.dumps(kw)], cwd=HERE,
                           stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        tail = logf.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{step} failed (exit {r.returncode}); end of {logf}:\n{tail}")
    log(f"prepare: {step} done in {time.perf_counter() - t0:.0f} s")


def prepare(args, cache: Path, logdir: Path, needs: set[str], vers: dict) -> tuple[dict, dict]:
    """Builds what `needs` asks for (subset of st, onnx, openvino, gguf); returns (paths, export info)."""
    sys.path.insert(0, str(REPO / "tests"))
    import refmodel

    tok_dir = Path(args.tokenizer)
    tok_sha = hashlib.sha256((tok_dir / "tokenizer.json").read_bytes()).hexdigest()[:16]
    build_src = inspect.getsource(refmodel.build)
    arch = dict(refmodel.FULL, vocab_size=262144)
    mkey = _h({"arch": arch, "seed": SEED, "tok": tok_sha, "src": hashlib.sha256(build_src.encode()).hexdigest(),
               "v": [vers["torch"], vers["transformers"], vers["sentence-transformers"]], "fmt": 2})
    mdir = cache / f"model-{mkey}"
    paths = {"st": str(mdir / "st"), "tokenizer_json": str(tok_dir / "tokenizer.json"), "model_dir": str(mdir),
             "model_key": mkey}
    info: dict = {}
    free = lambda: round(__import__("shutil").disk_usage(cache).free / 2**30, 1)  # noqa: E731
    if not (mdir / "st" / "model.safetensors").exists():
        log(f"building the model ({free()} GiB free on the cache disk)")
        _step("build_model", logdir, out=str(mdir), tokenizer_dir=str(tok_dir), seed=SEED)
    info["model"] = json.loads((mdir / "build.json").read_text())
    if "onnx" in needs:
        ekey = _h([mkey, vers["optimum"], vers["optimum-onnx"], vers["onnx"], vers["onnxruntime"], "avx512_vnni"])
        d = mdir / f"onnx-{ekey}"
        if not (d / "export.json").exists():
            log(f"exporting ONNX ({free()} GiB free)")
            _step("export_onnx", logdir, model=paths["st"], out=str(d), qconfig="avx512_vnni")
        paths["onnx"] = str(d)
        info["onnx"] = json.loads((d / "export.json").read_text())
    if "openvino" in needs:
        ekey = _h([mkey, vers["optimum-intel"], vers["openvino"]])
        d = mdir / f"openvino-{ekey}"
        if not (d / "export.json").exists():
            log(f"exporting OpenVINO IR ({free()} GiB free)")
            _step("export_openvino", logdir, model=paths["st"], out=str(d))
        paths["openvino"] = str(d)
        info["openvino"] = json.loads((d / "export.json").read_text())
    if "gguf" in needs:
        src = cache / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-src"
        if not (src / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").exists():
            _step("fetch_llama_src", logdir, version=LLAMA_CPP_PYTHON_VERSION, dest=str(src))
        shim = hashlib.sha256((HERE / "harness" / "gguf_convert.py").read_bytes()).hexdigest()[:12]
        ekey = _h([mkey, LLAMA_CPP_PYTHON_VERSION, vers["gguf"], shim, args.gguf_types])
        d = mdir / f"gguf-{ekey}"
        if not (d / "export.json").exists():
            log(f"converting to GGUF {args.gguf_types} ({free()} GiB free)")
            _step("convert_gguf", logdir, model=paths["st"], llama_src=str(src), out=str(d),
                  outtypes=args.gguf_types.split(","))
        paths["gguf"] = str(d)
        info["gguf"] = json.loads((d / "export.json").read_text())
    return paths, info


# ------------------------------------------------------------------------------------------
# workers


class WorkerDied(RuntimeError):
    pass


class Worker:
    def __init__(self, name: str, paths: dict, threads: int, options: dict, logf: Path):
        self.name = name
        self.logf = logf
        env = dict(os.environ, **systems.thread_env(threads))
        self.err = open(logf, "ab")
        self.err.write(f"\n===== {time.strftime('%H:%M:%S')} {name} {options}\n".encode())
        self.err.flush()
        self.p = subprocess.Popen([sys.executable, "-m", "harness.worker"], cwd=HERE, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.err, env=env)
        try:
            self.init = self.call({"op": "init", "system": name, "paths": paths, "threads": threads,
                                   "options": options})
        except BaseException:
            self.close()
            raise

    def call(self, msg: dict) -> dict:
        try:
            _send(self.p.stdin, msg)
            r = _recv(self.p.stdout)
        except (BrokenPipeError, OSError):
            r = None
        if r is None:
            self.p.wait(timeout=30)
            tail = self.logf.read_text(errors="replace")[-1500:]
            raise WorkerDied(f"worker exited with code {self.p.returncode} (log {self.logf}):\n{tail}")
        if not r.get("ok"):
            raise RuntimeError(r.get("error", "error") + "\n" + r.get("traceback", ""))
        return r

    def close(self) -> None:
        if self.p.poll() is not None and self.err.closed:
            return
        try:
            _send(self.p.stdin, {"op": "exit"})
            self.p.stdin.close()
            self.p.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.p.kill()
            self.p.wait()
        self.err.close()


def _short_error(e: BaseException) -> str:
    s = str(e).strip()
    lines = [ln for ln in s.splitlines() if ln.strip()]
    # prefer the exception line of a traceback
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln:
            return ln.strip()[:300]
    return (lines[0] if lines else type(e).__name__)[:300]


# ------------------------------------------------------------------------------------------
# the run


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="minutes-long smoke run (small corpus, 1 rep, 20 calls)")
    ap.add_argument("--systems", default="all", help="comma list of systems (default all): "
                    + ",".join(c.name for c in systems.ALL))
    ap.add_argument("--workloads", default="a,b,c,d", help="comma list of a/fixed, b/corpus, c/query, d/long")
    ap.add_argument("--corpus-size", type=int, help="texts in workload b (default 1000; quick 32)")
    ap.add_argument("--reps", type=int, help="repetitions, medians reported (default 5; quick 1)")
    ap.add_argument("--query-calls", type=int, help="calls per repetition for workload c (default 200; quick 20)")
    ap.add_argument("--calib-texts", type=int, help="texts in the batch-size calibration sample (default 64; quick 16)")
    ap.add_argument("--batch-sizes", help="calibration candidates (default 8,16,32,64; quick 8,16); one value = no calibration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokenizer", default=os.environ.get("EMBGEMMA_TEST_TOKENIZER_DIR")
                    or str(REPO.parent / "shared" / "data" / "gemma3-tokenizer"),
                    help="dir with the Gemma 3 tokenizer.json + tokenizer_config.json "
                         "(default $EMBGEMMA_TEST_TOKENIZER_DIR or ../shared/data/gemma3-tokenizer)")
    ap.add_argument("--gguf-types", default="f32,bf16,q8_0")
    ap.add_argument("--cache-dir", default=str(HERE / ".cache"))
    ap.add_argument("--name", help="results name: benchmarks/results/NAME.json (default quick / full)")
    ap.add_argument("--docs", dest="docs", action="store_true", default=None,
                    help="write docs/performance_table.md and docs/performance.png (default for non-quick runs)")
    ap.add_argument("--no-docs", dest="docs", action="store_false")
    ap.add_argument("--sequential", action="store_true",
                    help="one live worker at a time (all reps of a system, then the next): less memory, no alternation")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds of idle between two timed runs")
    ap.add_argument("--prepare-only", action="store_true", help="build the model and exports, then stop")
    ap.add_argument("--report-only", metavar="JSON", help="re-render the table and plot from a results JSON")
    a = ap.parse_args(argv)
    q = a.quick
    a.corpus_size = a.corpus_size or (32 if q else 1000)
    a.reps = a.reps or (1 if q else 5)
    a.query_calls = a.query_calls or (20 if q else 200)
    a.calib_texts = a.calib_texts or (16 if q else 64)
    a.batch_sizes = [int(x) for x in (a.batch_sizes or ("8,16" if q else "8,16,32,64")).split(",")]
    a.name = a.name or ("quick" if q else "full")
    if a.docs is None:
        a.docs = not q
    names = [c.name for c in systems.ALL] if a.systems == "all" else [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [n for n in names if n not in systems.BY_NAME]
    if bad:
        ap.error(f"unknown systems {bad}; known: {[c.name for c in systems.ALL]}")
    a.system_names = names
    wls = [ALIASES.get(w.strip(), w.strip()) for w in a.workloads.split(",") if w.strip()]
    bad = [w for w in wls if w not in WORKLOAD_ORDER]
    if bad:
        ap.error(f"unknown workloads {bad}")
    a.workload_names = [w for w in WORKLOAD_ORDER if w in wls]
    return a


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _flops(tokens: list[int]) -> dict:
    t = np.asarray(tokens, dtype=np.float64)
    lin = LINEAR_FLOP_PER_TOKEN * t.sum()
    attn = ATTN_FLOP_PER_TOKEN_PER_KEY_PER_LAYER * 24 * (t * t).sum()
    return {"linear": float(lin), "attention": float(attn)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.report_only:
        res = json.loads(Path(args.report_only).read_text())
        report.write_all(res, HERE / "results" / args.name, REPO / "docs" if args.docs else None)
        return 0
    t_run = time.perf_counter()
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = cache / "logs" / f"{args.name}-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    vers = versions()
    mach = machine()
    log(f"{mach.get('cpu_model')}, {mach.get('logical_cpus')} CPUs; threads={args.threads}; logs in {logdir}")

    classes = [systems.BY_NAME[n] for n in args.system_names]
    needs = {n for c in classes for n in c.needs} | {"st"}
    paths, export_info = prepare(args, cache, logdir, needs, vers)
    if args.prepare_only:
        log("prepared: " + json.dumps({k: v for k, v in paths.items()}, indent=1))
        return 0

    log("workloads: generating / loading")
    wl = workloads.load_or_build(cache, args.tokenizer, corpus_size=args.corpus_size, calib_n=args.calib_texts)
    texts = {k: wl[k]["texts"] for k in ("fixed", "corpus", "query", "long", "calib")}
    for k in ("fixed", "corpus", "query", "long"):
        log(f"  {k}: {wl[k]['n']} texts, {wl[k]['total_tokens']} tokens ({wl[k]['description']})")

    results: dict = {
        "meta": {
            "date": _dt.datetime.now().isoformat(timespec="seconds"), "command": " ".join(shlex.quote(x) for x in
                                                                                         ["benchmarks/run.py", *argv]),
            "machine": mach, "versions": vers, "threads": args.threads, "reps": args.reps,
            "query_calls": args.query_calls, "batch_size_candidates": args.batch_sizes, "quick": args.quick,
            "workloads_run": args.workload_names, "mode": "sequential" if args.sequential else "alternating",
            "reference": systems.REFERENCE, "model": export_info.get("model"), "exports": export_info,
            "cache_model_key": paths["model_key"],
            "flop_model": {"linear_flop_per_token": LINEAR_FLOP_PER_TOKEN,
                           "attention_flop_per_token_per_layer": "3072 * L (L = the sequence's tokens), 24 layers"},
        },
        "workloads": {k: {kk: vv for kk, vv in wl[k].items() if kk != "texts"} for k in wl if not k.startswith("_")},
        "systems": {},
    }
    for k in results["workloads"].values():  # per-text token counts only for the small workloads
        if len(k.get("tokens", [])) > 64:
            del k["tokens"]
    results["workloads"]["corpus"]["token_histogram"] = np.histogram(
        wl["corpus"]["tokens"], bins=[10, 50, 100, 200, 300, 400, 501])[0].tolist()
    R = results["systems"]
    for c in classes:
        R[c.name] = {"name": c.name, "family": c.family, "description": c.description, "status": "pending"}

    # ---- reference embeddings (st-torch-fp32 on the same inputs), cached by the texts' hash
    ref_key = _h([paths["model_key"], [texts[k] for k in ("fixed", "corpus", "query", "long")]])
    ref_path = Path(paths["model_dir"]) / f"reference-{ref_key}.npz"
    reference = dict(np.load(ref_path)) if ref_path.exists() else None
    all4 = set(args.workload_names) == {"fixed", "corpus", "query", "long"}
    ref_from_run = reference is None and systems.REFERENCE in args.system_names and all4
    if reference is None and not ref_from_run:
        reference = _reference_now(paths, args, texts, logdir, ref_path)

    # ---- calibration (throwaway workers), also the availability check
    chosen: dict[str, dict] = {}
    for c in classes:
        err = calibrate(c, paths, args, texts, wl, logdir, R[c.name])
        if err is not None or "best" not in R[c.name]["calibration"]:
            R[c.name]["status"] = f"unavailable: {_short_error(err)}"
            R[c.name]["error_detail"] = str(err)[-3000:]
            log(f"{c.name}: {R[c.name]['status']}")
            continue
        chosen[c.name] = R[c.name]["calibration"]["best"]
        log(f"{c.name}: best {chosen[c.name]['options'] or ''} batch_size={chosen[c.name]['batch_size']}")

    live = [c for c in classes if c.name in chosen]
    if not live:
        log("no system could be loaded")
    # ---- measurement
    timed_wls = [w for w in args.workload_names]
    meas_texts = {k: texts[k] for k in ("fixed", "corpus", "query", "long")}
    samples: dict[str, dict] = {c.name: {w: [] for w in timed_wls} for c in live}
    embs: dict[str, dict] = {c.name: {} for c in live}
    workers: dict[str, Worker] = {}

    def start(c) -> bool:
        nm = c.name
        avail = mem_available_gib()
        if avail < 3:
            log(f"warning: only {avail:.1f} GiB of memory available before starting {nm}")
        try:
            w = Worker(nm, paths, args.threads, chosen[nm]["options"], logdir / f"{nm}.log")
            ini = w.init
            R[nm]["load"] = {"import_s": round(ini["import_s"], 3), "construct_s": round(ini["construct_s"], 3),
                             "total_s": round(ini["import_s"] + ini["construct_s"], 3),
                             "process_to_ready_s": round(ini["process_to_ready_s"], 3)}
            R[nm]["rss"] = {"after_load_mb": ini["rss_after_load_mb"]}
            w.call({"op": "workloads", "workloads": meas_texts})
            if hasattr(c, "check_tokenizer"):
                r = w.call({"op": "check_tokenizer", "workloads": list(meas_texts),
                            "tokenizer_json": paths["tokenizer_json"]})
                R[nm]["tokenizer_check"] = r["result"]
            w.call({"op": "run", "workload": "fixed", "batch_size": chosen[nm]["batch_size"]})  # warm-up
            w.call({"op": "latency", "workload": "query", "calls": 3})
            R[nm]["batch_size"] = chosen[nm]["batch_size"]
            R[nm]["options"] = chosen[nm]["options"]
            log(f"{nm}: loaded in {R[nm]['load']['total_s']:.2f} s (import {ini['import_s']:.2f} + construct "
                f"{ini['construct_s']:.2f}), RSS {ini['rss_after_load_mb']:.0f} MB")
            workers[nm] = w
            return True
        except Exception as e:  # noqa: BLE001
            R[nm]["status"] = f"failed: {_short_error(e)}"
            R[nm]["error_detail"] = str(e)[-3000:]
            log(f"{nm}: {R[nm]['status']}")
            return False

    def measure(nm: str, wname: str, rep: int) -> None:
        w = workers[nm]
        first = rep == 0
        if wname == "query":
            r = w.call({"op": "latency", "workload": "query", "calls": args.query_calls})
            samples[nm][wname].append(r["latencies"])
            if first:
                embs[nm]["query"] = r["emb"]
            msg = f"p50 {1e3 * float(np.median(r['latencies'])):.1f} ms"
        else:
            r = w.call({"op": "run", "workload": wname, "batch_size": chosen[nm]["batch_size"], "return_emb": first})
            samples[nm][wname].append(r["seconds"])
            if first:
                embs[nm][wname] = r["emb"]
            msg = f"{wl[wname]['total_tokens'] / r['seconds']:.0f} tok/s"
        log(f"rep {rep + 1}/{args.reps} {wname:6s} {nm:18s} {msg}")

    def finish(nm: str) -> None:
        w = workers.pop(nm)
        try:
            st = w.call({"op": "status"})
            R[nm]["rss"]["peak_mb"] = st["peak_rss_mb"]
            R[nm]["info"] = st["info"]
        finally:
            w.close()

    def guarded(nm: str, fn, *a) -> None:
        if nm not in workers:
            return
        try:
            fn(nm, *a)
        except Exception as e:  # noqa: BLE001
            R[nm]["status"] = f"failed: {_short_error(e)}"
            R[nm]["error_detail"] = str(e)[-3000:]
            log(f"{nm}: {R[nm]['status']}")
            w = workers.pop(nm, None)
            if w:
                w.close()

    fma = None
    if args.sequential:
        for c in live:
            if not start(c):
                continue
            for rep in range(args.reps):
                for wname in timed_wls:
                    time.sleep(args.pause)
                    guarded(c.name, measure, wname, rep)
            if c.family == "embgemma" and fma is None and c.name in workers:
                fma = workers[c.name].call({"op": "fma_peak", "threads": args.threads, "seconds": 1.0})["gflops"]
            guarded(c.name, finish)
    else:
        for c in live:
            start(c)
        names = [c.name for c in live if c.name in workers]
        for rep in range(args.reps):
            k = rep % max(1, len(names))
            order = names[k:] + names[:k]
            for wname in timed_wls:
                for nm in order:
                    time.sleep(args.pause)
                    guarded(nm, measure, wname, rep)
        eg = next((n for n in names if n in workers and systems.BY_NAME[n].family == "embgemma"), None)
        if eg:
            fma = workers[eg].call({"op": "fma_peak", "threads": args.threads, "seconds": 1.0})["gflops"]
        for nm in list(workers):
            guarded(nm, finish)
    results["meta"]["fma_peak_gflops"] = fma
    results["meta"]["fma_peak_source"] = ("embgemma._core.fma_peak(threads)" if fma is not None
                                          else "unavailable (embgemma._core has no fma_peak, or no embgemma system ran)")

    # ---- the reference from this run's st-torch-fp32 outputs (first repetition), if not cached
    if ref_from_run:
        e = embs.get(systems.REFERENCE, {})
        if R[systems.REFERENCE]["status"] == "pending" and all(e.get(k) is not None for k in timed_wls):
            reference = dict(e)
            np.savez(ref_path, **reference)
        else:
            reference = _reference_now(paths, args, texts, logdir, ref_path)

    # ---- summarise
    for c in live:
        nm = c.name
        if not R[nm]["status"].startswith(("pending",)):
            continue
        R[nm]["status"] = "ok"
        wres = {}
        for wname in timed_wls:
            s = samples[nm][wname]
            if not s:
                continue
            if wname == "query":
                p50 = [1e3 * float(np.percentile(x, 50)) for x in s]
                p99 = [1e3 * float(np.percentile(x, 99)) for x in s]
                wres[wname] = {"calls_per_rep": args.query_calls, "p50_ms_per_rep": [round(x, 3) for x in p50],
                               "p99_ms_per_rep": [round(x, 3) for x in p99], "p50_ms": round(statistics.median(p50), 3),
                               "p99_ms": round(statistics.median(p99), 3),
                               "tokens": wl["query"]["total_tokens"]}
            else:
                med = statistics.median(s)
                wres[wname] = {"seconds": [round(x, 4) for x in s], "median_s": round(med, 4),
                               "tokens": wl[wname]["total_tokens"], "tok_s": round(wl[wname]["total_tokens"] / med, 1)}
        R[nm]["workloads"] = wres
        # fidelity
        fid = {}
        if reference is not None:
            for wname, e in embs[nm].items():
                if e is None or wname not in reference:
                    continue
                cs = _cos(e, reference[wname])
                fid[wname] = {"min": round(float(cs.min()), 6), "mean": round(float(cs.mean()), 6)}
        R[nm]["fidelity"] = fid
        # GEMM ceiling fraction
        g = {}
        for wname, wr in wres.items():
            fl = _flops(wl[wname]["tokens"])
            sec = wr["median_s"] if "median_s" in wr else wr["p50_ms"] / 1e3
            lin_g = fl["linear"] / sec / 1e9
            tot_g = (fl["linear"] + fl["attention"]) / sec / 1e9
            g[wname] = {"linear_gflops": round(lin_g, 2), "linear_plus_attention_gflops": round(tot_g, 2),
                        "fraction_of_fma_peak_linear": round(lin_g / fma, 4) if fma else None,
                        "fraction_of_fma_peak_total": round(tot_g / fma, 4) if fma else None}
        R[nm]["gemm"] = g

    results["meta"]["wall_s"] = round(time.perf_counter() - t_run, 1)
    out_json = HERE / "results" / f"{args.name}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    log(f"results: {out_json}")
    md = report.write_all(results, HERE / "results" / args.name, REPO / "docs" if args.docs else None)
    print(md)
    return 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def calibrate(c, paths: dict, args, texts: dict, wl: dict, logdir: Path, rec: dict):
    """Pick the construction variant, then the batch size, on the calibration sample.

    Variants (llama.cpp: flash_attn off / on) are compared at the first candidate batch size; the
    best one is then swept over all candidates (the global list plus the system's extra ones).
    Returns None, or the exception that made the system unavailable.
    """
    n_tok = wl["calib"]["total_tokens"]
    cands = list(args.batch_sizes)
    if len(cands) > 1:
        cands = sorted(set(cands) | set(c.extra_batch_sizes))
    cal = {"runs": [], "sample": wl["calib"]["description"], "sample_tokens": n_tok, "candidates": cands}
    rec["calibration"] = cal
    probe = args.batch_sizes[0]

    def timed(w, variant, bs) -> float:
        time.sleep(args.pause)
        r = w.call({"op": "run", "workload": "calib", "batch_size": bs})
        cal["runs"].append({"options": variant, "batch_size": bs, "seconds": round(r["seconds"], 4),
                            "tok_s": round(n_tok / r["seconds"], 1)})
        log(f"calibrate {c.name} {variant or ''} bs={bs}: {cal['runs'][-1]['tok_s']:.0f} tok/s")
        return r["seconds"]

    err = None
    best_variant, best_w, best_t = None, None, float("inf")
    for variant in c.variants:
        w = None
        try:
            w = Worker(c.name, paths, args.threads, variant, logdir / f"{c.name}.log")
            w.call({"op": "workloads", "workloads": {"calib": texts["calib"]}})
            if len(cands) == 1 and len(c.variants) == 1:
                cal["best"] = {"options": variant, "batch_size": cands[0]}
                w.close()
                return None
            w.call({"op": "run", "workload": "calib", "batch_size": probe})  # warm-up
            t = timed(w, variant, probe)
        except Exception as e:  # noqa: BLE001
            err = e
            if w is not None:
                w.close()
            continue
        if t < best_t:
            if best_w is not None:
                best_w.close()
            best_variant, best_w, best_t = variant, w, t
        else:
            w.close()
    if best_w is None:
        return err
    best_bs = probe
    try:
        for bs in cands:
            if bs == probe:
                continue
            t = timed(best_w, best_variant, bs)
            if t < best_t:
                best_t, best_bs = t, bs
    except Exception as e:  # noqa: BLE001
        best_w.close()
        return e
    best_w.close()
    cal["best"] = {"options": best_variant, "batch_size": best_bs}
    return None


def _reference_now(paths: dict, args, texts: dict, logdir: Path, ref_path: Path) -> dict | None:
    log("reference: computing st-torch-fp32 embeddings of all workloads (cached afterwards)")
    try:
        ref = compute_reference(paths, args, texts, logdir)
    except Exception as e:  # noqa: BLE001
        log(f"reference unavailable, no fidelity column: {_short_error(e)}")
        return None
    np.savez(ref_path, **ref)
    return ref


def compute_reference(paths: dict, args, texts: dict, logdir: Path) -> dict:
    w = Worker(systems.REFERENCE, paths, args.threads, {}, logdir / f"{systems.REFERENCE}-reference.log")
    try:
        w.call({"op": "workloads", "workloads": {k: texts[k] for k in ("fixed", "corpus", "query", "long")}})
        out = {}
        for k in ("fixed", "corpus", "query", "long"):
            out[k] = w.call({"op": "run", "workload": k, "batch_size": 16, "return_emb": True})["emb"]
        return out
    finally:
        w.close()
