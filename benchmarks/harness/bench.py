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

from . import cli, report, systems, workloads
from .worker import _recv, _send

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
REPO = HERE.parent
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SEED = 0
WORKLOAD_ORDER = cli.WORKLOAD_ORDER
ALIASES = cli.ALIASES
LINEAR_FLOP_PER_TOKEN = 2 * 24 * (768 * 768 + 2 * 768 * 256 + 768 * 768 + 3 * 768 * 1152)  # 202.9 MFLOP
ATTN_FLOP_PER_TOKEN_PER_KEY_PER_LAYER = 2 * 2 * 3 * 256  # QK^T and PV, 3 heads x 256: 3,072


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------
# versions, machine


PACKAGES = ["torch", "transformers", "sentence-transformers", "tokenizers", "huggingface-hub", "safetensors",
            "optimum", "optimum-onnx", "onnx", "onnxruntime", "optimum-intel", "openvino", "openvino-tokenizers",
            "nncf", "fastembed", "llama-cpp-python", "gguf", "sentencepiece", "numpy", "scipy", "matplotlib", "psutil", "embgemma"]


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


RANDOM_WARNING = (
    "NO REAL WEIGHTS: benchmarking the RANDOM-WEIGHT model of tests/refmodel.py. Speed, load time and memory "
    "are representative, but the fidelity column (cosine to sentence-transformers float32) is then meaningless "
    "for quality: it only compares runtimes on random weights, and the 0.99 fidelity bar of the ratios is "
    "judged on them. Pass --model DIR or make ../shared/tools/get-real-weights work."
)


def _loud(msg: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!! " + msg + f"\n{bar}\n", file=sys.stderr, flush=True)


def _transformer_dir(folder: Path) -> Path:
    """The folder of a sentence-transformers model's Transformer module (where config.json lives)."""
    try:
        for m in json.loads((folder / "modules.json").read_text()):
            if str(m.get("type", "")).rsplit(".", 1)[-1] == "Transformer":
                return folder / m.get("path", "")
    except (OSError, ValueError):
        pass
    return folder


def folder_key(folder: Path) -> tuple[str, dict]:
    """Cache key of a model folder: a hash of its files' relative paths, sizes and mtimes."""
    files = []
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts):
            st = f.stat()
            files.append([f.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns])
    total = sum(x[1] for x in files)
    return _h({"files": files, "fmt": 3}), {"n_files": len(files), "bytes": total}


def resolve_model(model_arg: str | None) -> dict:
    """Which model to benchmark: {"kind": "real" | "folder" | "random", "path", "source", ...}.

    --model DIR: that folder ("real" when it is the folder get-real-weights returns). No --model: the
    real weights when ../shared/tools/get-real-weights succeeds (its last line is the folder), else
    the random-weight model, with a loud warning. --model random: the random model, on purpose.
    """
    if model_arg == "random":
        return {"kind": "random", "path": None, "source": "--model random"}
    if model_arg:
        p = Path(model_arg).expanduser().resolve()
        real_default = Path(os.environ.get("EMBGEMMA_REAL_MODEL")
                            or Path.home() / ".cache" / "embgemma-real" / "embeddinggemma-300m").resolve()
        kind = "real" if p == real_default else "folder"
        return {"kind": kind, "path": str(p), "source": "--model"}
    tool = cli.GET_REAL_WEIGHTS
    why = ""
    if tool.is_file():
        log(f"model: no --model given, asking {tool} for the real weights")
        try:
            r = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True, timeout=3600,
                               cwd=str(REPO))
            lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
            if r.returncode == 0 and lines and (Path(lines[-1]) / "modules.json").is_file():
                return {"kind": "real", "path": str(Path(lines[-1]).resolve()), "source": str(tool)}
            why = f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"
        except (OSError, subprocess.SubprocessError) as e:
            why = f"{type(e).__name__}: {e}"
    else:
        why = f"{tool} not found"
    _loud(RANDOM_WARNING + f" (get-real-weights: {why})")
    return {"kind": "random", "path": None, "source": f"fallback ({why})", "warning": RANDOM_WARNING}


def prepare(args, cache: Path, logdir: Path, needs: set[str], vers: dict, model: dict) -> tuple[dict, dict]:
    """Builds what `needs` asks for (subset of st, onnx, openvino, gguf); returns (paths, export info).

    `model` comes from resolve_model(): a folder is used in place and keyed by its files; the
    random model is built once. Every export is keyed by the model's key and the exporter versions.
    """
    info: dict = {}
    free = lambda: round(__import__("shutil").disk_usage(cache).free / 2**30, 1)  # noqa: E731
    if model["kind"] == "random":
        sys.path.insert(0, str(REPO / "tests"))
        import refmodel

        tok_dir = Path(args.tokenizer or cli.default_tokenizer_dir())
        tok_sha = hashlib.sha256((tok_dir / "tokenizer.json").read_bytes()).hexdigest()[:16]
        build_src = inspect.getsource(refmodel.build)
        arch = dict(refmodel.FULL, vocab_size=262144)
        mkey = _h({"arch": arch, "seed": SEED, "tok": tok_sha, "src": hashlib.sha256(build_src.encode()).hexdigest(),
                   "v": [vers["torch"], vers["transformers"], vers["sentence-transformers"]], "fmt": 2})
        mdir = cache / f"model-{mkey}"
        st_dir = mdir / "st"
        if not (st_dir / "model.safetensors").exists():
            log(f"building the random-weight model ({free()} GiB free on the cache disk)")
            _step("build_model", logdir, out=str(mdir), tokenizer_dir=str(tok_dir), seed=SEED)
        info["model"] = dict(json.loads((mdir / "build.json").read_text()), kind="random", path=str(st_dir),
                             source=model.get("source"))
        src_tok_dir = tok_dir
        sliding = int(arch["sliding_window"])
    else:
        st_dir = Path(model["path"])
        fkey, finfo = folder_key(st_dir)
        mkey = "f" + fkey
        mdir = cache / f"model-{mkey}"
        mdir.mkdir(parents=True, exist_ok=True)
        tdir = _transformer_dir(st_dir)
        src_tok_dir = st_dir if (st_dir / "tokenizer.json").is_file() else tdir
        try:
            cfg = json.loads((tdir / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        sliding = cfg.get("sliding_window")
        info["model"] = {"kind": model["kind"], "path": str(st_dir), "source": model.get("source"),
                         "files_key": fkey, **finfo,
                         "arch": {k: cfg.get(k) for k in ("model_type", "hidden_size", "intermediate_size",
                                                          "num_hidden_layers", "num_attention_heads",
                                                          "num_key_value_heads", "head_dim", "vocab_size",
                                                          "sliding_window", "max_position_embeddings")}}
        (mdir / "source.json").write_text(json.dumps(info["model"], indent=1))
    if model.get("warning"):
        info["model"]["warning"] = model["warning"]
    # the workloads' exact token counts: --tokenizer, else the model's own tokenizer
    wl_tok = Path(args.tokenizer) if args.tokenizer else src_tok_dir
    paths = {"st": str(st_dir), "tokenizer_dir": str(wl_tok), "tokenizer_json": str(wl_tok / "tokenizer.json"),
             "model_dir": str(mdir), "model_key": mkey}
    src_kw = {"tokenizer_dir": str(src_tok_dir), "sliding_window": sliding}
    if "onnx" in needs:
        ekey = _h([mkey, vers["optimum"], vers["optimum-onnx"], vers["onnx"], vers["onnxruntime"], "avx512_vnni"])
        d = mdir / f"onnx-{ekey}"
        if not (d / "export.json").exists():
            log(f"exporting ONNX ({free()} GiB free)")
            _step("export_onnx", logdir, model=str(st_dir), out=str(d), qconfig="avx512_vnni", **src_kw)
        paths["onnx"] = str(d)
        info["onnx"] = json.loads((d / "export.json").read_text())
    if needs & {"openvino", "openvino_qint8", "openvino_wc8"}:  # the int8 IRs are made from the float32 IR
        ekey = _h([mkey, vers["optimum-intel"], vers["openvino"]])
        d = mdir / f"openvino-{ekey}"
        if not (d / "export.json").exists():
            log(f"exporting OpenVINO IR ({free()} GiB free)")
            _step("export_openvino", logdir, model=str(st_dir), out=str(d), **src_kw)
        paths["openvino"] = str(d)
        info["openvino"] = json.loads((d / "export.json").read_text())
    if "openvino_qint8" in needs:
        # calibration texts: the harness's own generator (corpus-like, document prompt), a separate seeded sample
        calib = workloads.quant_calibration(cache, wl_tok, args.quant_calib_texts)
        ekey = _h([mkey, Path(paths["openvino"]).name, vers["optimum-intel"], vers["openvino"], vers["nncf"],
                   vers["sentence-transformers"], vers["transformers"],
                   {k: calib[k] for k in ("key", "n", "seed", "min", "max", "prompt")}, "qint8-v1"])
        d = mdir / f"openvino-qint8-{ekey}"
        if not (d / "export.json").exists():
            cj = logdir / "quant-calibration-texts.json"
            cj.write_text(json.dumps({k: v for k, v in calib.items()}))
            log(f"exporting OpenVINO static int8 (NNCF, {calib['n']} calibration texts, {calib['total_tokens']} "
                f"tokens; {free()} GiB free)")
            _step("export_openvino_qint8", logdir, src=paths["openvino"], out=str(d), calib_json=str(cj))
        paths["openvino_qint8"] = str(d)
        info["openvino_qint8"] = json.loads((d / "export.json").read_text())
    if "openvino_wc8" in needs:
        ekey = _h([mkey, Path(paths["openvino"]).name, vers["openvino"], vers["nncf"], "wc8-v1"])
        d = mdir / f"openvino-wc8-{ekey}"
        if not (d / "export.json").exists():
            log(f"exporting OpenVINO int8 weight compression (nncf.compress_weights; {free()} GiB free)")
            _step("export_openvino_wc8", logdir, src=paths["openvino"], out=str(d))
        paths["openvino_wc8"] = str(d)
        info["openvino_wc8"] = json.loads((d / "export.json").read_text())
    if "onnx_st" in needs:
        ekey = _h([mkey, vers["optimum"], vers["optimum-onnx"], vers["onnx"], vers["torch"], vers["transformers"],
                   vers["sentence-transformers"], "onnx-st-v1"])
        d = mdir / f"onnx-st-{ekey}"
        if not (d / "export.json").exists():
            log(f"exporting ONNX with the sentence-transformers head in the graph, for fastembed ({free()} GiB free)")
            _step("export_onnx_st", logdir, model=str(st_dir), out=str(d), onnx_dir=paths.get("onnx", ""), **src_kw)
        paths["onnx_st"] = str(d)
        info["onnx_st"] = json.loads((d / "export.json").read_text())
    if "gguf" in needs:
        src = cache / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-src"
        if not (src / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").exists():
            _step("fetch_llama_src", logdir, version=LLAMA_CPP_PYTHON_VERSION, dest=str(src))
        shim = hashlib.sha256((HERE / "harness" / "gguf_convert.py").read_bytes()).hexdigest()[:12]
        ekey = _h([mkey, LLAMA_CPP_PYTHON_VERSION, vers["gguf"], vers.get("sentencepiece"), shim, args.gguf_types])
        d = mdir / f"gguf-{ekey}"
        if not (d / "export.json").exists():
            log(f"converting to GGUF {args.gguf_types} ({free()} GiB free)")
            _step("convert_gguf", logdir, model=str(st_dir), llama_src=str(src), out=str(d),
                  outtypes=args.gguf_types.split(","), tokenizer_dir=str(src_tok_dir))
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
    return cli.parse_args(argv)


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
    model = resolve_model(args.model)
    paths, export_info = prepare(args, cache, logdir, needs, vers, model)
    mi = export_info["model"]
    log(f"model: {mi['kind']} weights, {mi['path']} (cache key {paths['model_key']})")
    if args.prepare_only:
        log("prepared: " + json.dumps({k: v for k, v in paths.items()}, indent=1))
        return 0

    log("workloads: generating / loading")
    wl = workloads.load_or_build(cache, paths["tokenizer_dir"], corpus_size=args.corpus_size,
                                 calib_n=args.calib_texts)
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
            "reference": systems.REFERENCE, "model": export_info.get("model"),
            "workload_tokenizer": paths["tokenizer_json"], "exports": export_info,
            "fidelity_bar": report.FIDELITY_BAR,
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
    if "st-openvino-qint8" in args.system_names:  # its calibration sample must not be any measured text
        measured = {x for k in ("fixed", "corpus", "query", "long", "calib") for x in texts[k]}
        qc = workloads.quant_calibration(cache, paths["tokenizer_dir"], args.quant_calib_texts, exclude=measured)
        results["meta"]["quant_calibration"] = {
            "description": qc["description"], "n": qc["n"], "total_tokens": qc["total_tokens"], "key": qc["key"],
            "overlap_with_measured_texts": 0, "used_by": ["st-openvino-qint8"]}
    R = results["systems"]
    for c in classes:
        R[c.name] = {"name": c.name, "family": c.family, "precision": c.precision, "description": c.description,
                     "status": "pending"}

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
        t_cal = time.perf_counter()
        err = calibrate(c, paths, args, texts, wl, logdir, R[c.name])
        R[c.name]["wall_s"] = {"calibration": round(time.perf_counter() - t_cal, 1), "measurement": 0.0}
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
    # ---- memory: alternating mode holds every worker at once; their calibration peaks say how much that is
    need_mb = sum(R[c.name]["calibration"].get("peak_rss_mb") or 0 for c in live)
    avail_mb = mem_available_gib() * 1024
    results["meta"]["memory_check"] = {"sum_calibration_peak_rss_mb": round(need_mb),
                                       "mem_available_mb": round(avail_mb) if avail_mb == avail_mb else None}
    if not args.sequential and len(live) > 1 and need_mb and avail_mb == avail_mb and need_mb * 1.1 + 1024 > avail_mb:
        log(f"warning: the {len(live)} workers need about {need_mb / 1024:.1f} GiB at once (their calibration peaks) "
            f"but only {avail_mb / 1024:.1f} GiB are available: running them one at a time (--sequential)")
        args.sequential = True
        results["meta"]["mode"] = "sequential"
        results["meta"]["mode_reason"] = "automatic: the workers would not fit in memory together"
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

    def timed_start(c) -> bool:
        t0 = time.perf_counter()
        try:
            return start(c)
        finally:
            R[c.name]["wall_s"]["measurement"] = round(R[c.name]["wall_s"]["measurement"] + time.perf_counter() - t0, 1)

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
            if (st["info"] or {}).get("precision"):  # e.g. OpenVINO's compiled inference precision
                R[nm]["precision"] = st["info"]["precision"]
        finally:
            w.close()

    def guarded(nm: str, fn, *a) -> None:
        if nm not in workers:
            return
        t0 = time.perf_counter()
        try:
            fn(nm, *a)
        except Exception as e:  # noqa: BLE001
            R[nm]["status"] = f"failed: {_short_error(e)}"
            R[nm]["error_detail"] = str(e)[-3000:]
            log(f"{nm}: {R[nm]['status']}")
            w = workers.pop(nm, None)
            if w:
                w.close()
        finally:
            R[nm]["wall_s"]["measurement"] = round(R[nm]["wall_s"]["measurement"] + time.perf_counter() - t0, 1)

    fma = None
    if args.sequential:
        for c in live:
            if not timed_start(c):
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
            timed_start(c)
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
    results["targets"] = report.targets(results)
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
                w.call({"op": "run", "workload": "calib", "batch_size": cands[0]})  # for the memory estimate
                cal["peak_rss_mb"] = w.call({"op": "status"})["peak_rss_mb"]
                w.close()
                return None
            w.call({"op": "run", "workload": "calib", "batch_size": probe})  # warm-up
            t = timed(w, variant, probe)
        except Exception as e:  # noqa: BLE001
            err = e
            cal.setdefault("failed_variants", []).append({"options": variant, "error": _short_error(e)})
            log(f"calibrate {c.name} {variant or ''}: failed: {_short_error(e)}")
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
        cal["peak_rss_mb"] = best_w.call({"op": "status"})["peak_rss_mb"]
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
