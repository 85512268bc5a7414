"""The command line of benchmarks/run.py, standard library only.

run.py parses (and validates) its arguments with this parser before it creates or checks the
benchmark environment, so ``--help`` and argument errors are instant; the coordinator
(bench.py, inside the environment) parses the same arguments again.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
REPO = HERE.parent
SHARED = REPO.parent / "shared"
GET_REAL_WEIGHTS = SHARED / "tools" / "get-real-weights"

# the systems of harness/systems.py, in table order (systems.py checks that the two lists agree)
SYSTEM_NAMES = [
    "st-torch-fp32", "st-onnx-fp32", "st-onnx-int8", "st-openvino-fp32", "st-openvino-default",
    "st-openvino-qint8", "st-openvino-wc8", "fastembed",
    "llamacpp-f32", "llamacpp-bf16", "llamacpp-q8_0",
    "embgemma-fp32", "embgemma-bf16", "embgemma-int16", "embgemma-int8", "embgemma-q8_0", "embgemma-q4_0",
]
WORKLOAD_ORDER = ["fixed", "corpus", "long", "query"]  # execution order
ALIASES = {"a": "fixed", "b": "corpus", "c": "query", "d": "long"}

DESCRIPTION = """\
embgemma competitor benchmark (benchmarks/README.md). The first run creates benchmarks/.venv-bench
(pinned requirements; llama-cpp-python built from source) and installs embgemma from this checkout
into it; every export of the model (ONNX fp32/int8 and with the Dense head for fastembed, OpenVINO IR fp32 / static
int8 / int8 weight-compressed, GGUF f32/bf16/q8_0) is cached under
benchmarks/.cache, keyed by the model folder's files.

Model: --model DIR (any sentence-transformers folder of EmbeddingGemma); without it, the real
google/embeddinggemma-300m from ../shared/tools/get-real-weights when that succeeds, else the
random-weight model of tests/refmodel.py (then fidelity only compares runtimes on random weights).
"""

EPILOG = """\
examples:
  python3 benchmarks/run.py --quick --name smoke                       # minutes once set up
  python3 benchmarks/run.py --systems 'embgemma-*,llamacpp-q8_0' --quick
  python3 benchmarks/run.py --model DIR --reps 2 --corpus-size 48 --query-calls 40 \\
      --batch-sizes 8 --name real --no-docs                          # ~35 min on 2 cores
  python3 benchmarks/run.py --setup-only                               # the environment only
  python3 benchmarks/run.py --serve --help                             # the HTTP server comparison
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: corpus of 32 texts, 1 repetition, 20 query calls, 16 calibration texts, "
                         "batch sizes 8,16 (each explicit flag below still wins)")
    ap.add_argument("--model", metavar="DIR",
                    help="sentence-transformers folder to benchmark; 'random' = the random-weight model of "
                         "tests/refmodel.py; default: the real weights from ../shared/tools/get-real-weights, "
                         "else random (with a warning)")
    ap.add_argument("--systems", default="all",
                    help="comma list of systems or shell patterns (default all): " + ",".join(SYSTEM_NAMES))
    ap.add_argument("--workloads", default="a,b,c,d", help="comma list of a/fixed, b/corpus, c/query, d/long")
    ap.add_argument("--corpus-size", type=int, help="texts in workload b (default 1000; quick 32)")
    ap.add_argument("--reps", type=int, help="repetitions, medians reported (default 5; quick 1)")
    ap.add_argument("--query-calls", type=int, help="calls per repetition for workload c (default 200; quick 20)")
    ap.add_argument("--calib-texts", type=int, help="texts in the batch-size calibration sample (default 64; quick 16)")
    ap.add_argument("--batch-sizes", help="calibration candidates (default 8,16,32,64; quick 8,16); "
                    "one value = no calibration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quant-calib-texts", type=int, default=128,
                    help="harness-generated corpus-like texts (document prompt, own seed, never the measured texts) "
                         "that calibrate st-openvino-qint8's static int8 quantization (default 128: what "
                         "OVQuantizationConfig() falls back to when num_samples is unset, as sentence-transformers "
                         "leaves it); part of that export's cache key")
    ap.add_argument("--tokenizer", default=None,
                    help="dir with tokenizer.json + tokenizer_config.json for the workloads' exact token counts "
                         "(default: the model folder's own; for the random model $EMBGEMMA_TEST_TOKENIZER_DIR "
                         "or ../shared/data/gemma3-tokenizer)")
    ap.add_argument("--gguf-types", default="f32,bf16,q8_0")
    ap.add_argument("--cache-dir", default=str(HERE / ".cache"))
    ap.add_argument("--name", help="results name: benchmarks/results/NAME.{json,md,png} (default quick / full)")
    ap.add_argument("--docs", dest="docs", action="store_true", default=None,
                    help="write docs/performance_table.md and docs/performance.png (default for non-quick runs; "
                         "never by default for --report-only)")
    ap.add_argument("--no-docs", dest="docs", action="store_false")
    ap.add_argument("--sequential", action="store_true",
                    help="one live worker at a time (all reps of a system, then the next): less memory, "
                         "no alternation (chosen automatically when the workers would not fit in memory)")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds of idle between two timed runs")
    ap.add_argument("--setup-only", action="store_true", help="create / check the environment, then stop")
    ap.add_argument("--prepare-only", action="store_true", help="build the model and exports, then stop")
    ap.add_argument("--report-only", metavar="JSON", help="re-render the table and plot from a results JSON")
    return ap


def default_tokenizer_dir() -> str:
    return os.environ.get("EMBGEMMA_TEST_TOKENIZER_DIR") or str(SHARED / "data" / "gemma3-tokenizer")


def select_systems(spec: str) -> tuple[list[str], list[str]]:
    """Names selected by a comma list of names / shell patterns, in table order; and the unmatched items."""
    if spec.strip() in ("", "all"):
        return list(SYSTEM_NAMES), []
    items = [s.strip() for s in spec.split(",") if s.strip()]
    chosen, bad = set(), []
    for it in items:
        hit = [n for n in SYSTEM_NAMES if fnmatch.fnmatchcase(n, it)]
        if not hit:
            bad.append(it)
        chosen.update(hit)
    return [n for n in SYSTEM_NAMES if n in chosen], bad


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = build_parser()
    a = ap.parse_args(argv)
    q = a.quick
    a.corpus_size = a.corpus_size or (32 if q else 1000)
    a.reps = a.reps or (1 if q else 5)
    a.query_calls = a.query_calls or (20 if q else 200)
    a.calib_texts = a.calib_texts or (16 if q else 64)
    try:
        a.batch_sizes = [int(x) for x in (a.batch_sizes or ("8,16" if q else "8,16,32,64")).split(",")]
    except ValueError:
        ap.error(f"--batch-sizes must be a comma list of integers, got {a.batch_sizes!r}")
    if (min(a.batch_sizes) < 1 or a.reps < 1 or a.corpus_size < 1 or a.query_calls < 1 or a.threads < 1
            or a.quant_calib_texts < 1):
        ap.error("--batch-sizes, --reps, --corpus-size, --query-calls, --threads and --quant-calib-texts must be "
                 "positive")
    a.name = a.name or ("quick" if q else "full")
    if a.docs is None:  # docs/ only from a full measuring run, or when asked for
        a.docs = not q and not a.report_only
    names, bad = select_systems(a.systems)
    if bad:
        ap.error(f"unknown systems {bad}; known: {SYSTEM_NAMES}")
    if not names:
        ap.error("no system selected")
    a.system_names = names
    wls = [ALIASES.get(w.strip(), w.strip()) for w in a.workloads.split(",") if w.strip()]
    bad = [w for w in wls if w not in WORKLOAD_ORDER]
    if bad:
        ap.error(f"unknown workloads {bad}")
    a.workload_names = [w for w in WORKLOAD_ORDER if w in wls]
    if a.model and a.model != "random":
        p = Path(a.model).expanduser()
        if not p.is_dir() or not (p / "modules.json").is_file():
            ap.error(f"--model {a.model}: not a sentence-transformers folder (no modules.json)")
    return a


def build_serve_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py --serve",
                                 description="embgemma serve against llama-cpp-python's OpenAI-compatible server, "
                                             "the same bounded load (harness/serve_bench.py)")
    ap.add_argument("--serve-seconds", type=float, default=30.0, help="load seconds per run (at most 60)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-inputs", type=int, default=8, help="texts per request: 1..N, random")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--systems", default="embgemma,llama-cpp-python")
    ap.add_argument("--model", metavar="DIR", default="random",
                    help="sentence-transformers folder (default: 'random', the random-weight model; the "
                         "committed serve.* results are on it)")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer dir (default: the model folder's, else ../shared/data/gemma3-tokenizer)")
    ap.add_argument("--cache-dir", default=str(HERE / ".cache"))
    ap.add_argument("--name", default="serve")
    ap.add_argument("--setup-only", action="store_true", help="create / check the environment, then stop")
    return ap


def parse_serve_args(argv: list[str]) -> argparse.Namespace:
    ap = build_serve_parser()
    a = ap.parse_args(argv)
    if a.model != "random":
        p = Path(a.model).expanduser()
        if not p.is_dir() or not (p / "modules.json").is_file():
            ap.error(f"--model {a.model}: not a sentence-transformers folder (no modules.json)")
    return a
