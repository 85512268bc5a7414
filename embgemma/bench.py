"""``embgemma bench``: a short self-benchmark of this machine, one row per weights mode (dtype).

For each dtype the model is loaded (load seconds), then encodes a fixed, seeded mix of English-like
documents of several lengths (throughput in tokens per second, every token the engine sees counted:
prompt, BOS and EOS included) and then single queries of about 20 tokens one at a time with
``encode_query`` (latency percentiles). The total time is split evenly between the dtypes.

Nothing here is tuned for a particular kernel: the texts, their lengths and the budgets are fixed.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .loading import default_threads
from .machine import machine_info, machine_line

DEFAULT_DTYPES = ("float32", "bfloat16", "int16", "int8", "q8_0", "q4_0")
#: Token lengths of the documents in one throughput batch (as the model sees them: prompt, BOS, EOS
#: included), capped at the model's max_seq_length.
DOC_LENGTHS = (16, 32, 64, 128, 256, 512)
#: Length of a latency query, prompt, BOS and EOS included.
QUERY_TOKENS = 20
SEED = 20250901
_N_BATCHES = 8  # distinct throughput batches, cycled
_N_QUERIES = 32  # distinct queries, cycled
_MIN_QUERIES = 5
_THROUGHPUT_SHARE = 0.65  # of a dtype's measuring time; the rest goes to query latency

_WORDS = (
    "the of and to in is was for that with as on by at from it an be this which or are have not had "
    "but were one all their there been has when who more if no out so can said what up its about into "
    "than them only other time new some could these two may first then do any like my now over such "
    "our man me even most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very make world still "
    "own see men work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three small water "
    "river mountain city light house night morning garden window letter market school music history "
    "planet ocean winter summer forest road paper village station country family number question "
    "reason system evening picture island engine kitchen doctor teacher student machine language "
    "building bridge weather journey library museum harbour valley meadow storm silver golden quiet "
    "bright ancient modern careful simple early late open closed warm cold heavy narrow wide distant "
    "walked found turned wrote carried opened noticed followed remembered explained described "
    "believed learned measured arrived returned watched discovered"
).split()


# ---------------------------------------------------------------------------------------------- texts


def _sentence_words(rng: random.Random, n: int) -> list[str]:
    """n English-like words with a capital after each full stop and an occasional comma."""
    out: list[str] = []
    start = True
    for _ in range(n):
        w = rng.choice(_WORDS)
        if start:
            w = w.capitalize()
            start = False
        r = rng.random()
        if r < 0.08:
            w += "."
            start = True
        elif r < 0.14:
            w += ","
        out.append(w)
    return out


def _token_count(model, prompt: str, text: str) -> int:
    """Tokens the engine sees for ``prompt + text`` (prompt, BOS and EOS included), from the model's
    own ``tokenize`` (so after its truncation to max_seq_length)."""
    return int(model.tokenize([prompt + text])["attention_mask"].sum())


def _untruncated_count(model, prompt: str, text: str) -> int:
    from .tokenization import prepare_text

    return len(model.tokenizer.encode(prepare_text(text, 0, prompt, model.strip_whitespace)).ids)


def _text_of_length(model, prompt: str, rng: random.Random, tokens: int) -> str:
    """A text whose ``prompt + text`` is at most ``tokens`` tokens (as close as whole words allow)."""
    words = _sentence_words(rng, max(tokens, 4))  # every word is at least one token
    lo, hi = 1, len(words)  # the largest word count that fits, by bisection (the count only grows)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _untruncated_count(model, prompt, " ".join(words[:mid]) + ".") <= tokens:
            lo = mid
        else:
            hi = mid - 1
    text = " ".join(words[:lo])
    return text if text.endswith(".") else text.rstrip(",") + "."


def document_prompt(model) -> str:
    from .prompts import DOCUMENT_PROMPT_NAMES

    name = next((n for n in DOCUMENT_PROMPT_NAMES if n in model.prompts), None)
    return model.prompts[name] if name is not None else ""


def make_workload(model, seed: int = SEED) -> dict[str, Any]:
    """The fixed text mix for ``model``'s tokenizer: throughput batches (one document of each length
    in DOC_LENGTHS, in a seeded order) and latency queries, with their token counts."""
    rng = random.Random(seed)
    limit = model.max_seq_length
    doc_prompt = document_prompt(model)
    query_prompt = model.prompts.get("query", "")
    lengths = [min(n, limit) for n in DOC_LENGTHS]
    batches: list[list[str]] = []
    for _ in range(_N_BATCHES):
        order = list(lengths)
        rng.shuffle(order)
        batches.append([_text_of_length(model, doc_prompt, rng, n) for n in order])
    batch_tokens = [sum(_token_count(model, doc_prompt, t) for t in b) for b in batches]
    # a query of QUERY_TOKENS in all, or of a few words where the prompt alone is about that long
    q_len = max(QUERY_TOKENS, _token_count(model, query_prompt, "") + 4)
    queries = [_text_of_length(model, query_prompt, rng, min(q_len, limit)) for _ in range(_N_QUERIES)]
    query_tokens = [_token_count(model, query_prompt, q) for q in queries]
    return {
        "seed": seed,
        "doc_prompt": doc_prompt,
        "query_prompt": query_prompt,
        "doc_lengths": lengths,
        "batches": batches,
        "batch_tokens": batch_tokens,
        "queries": queries,
        "query_tokens": query_tokens,
    }


# ---------------------------------------------------------------------------------------------- memory


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS shows what is live."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass


class _PeakRSS:
    """Peak resident memory above the level at ``start()``, from Linux's VmHWM (reset through
    /proc/self/clear_refs); None where that cannot be measured."""

    def __init__(self) -> None:
        self.base: int | None = None

    def start(self) -> None:
        _release_memory()
        self.base = None
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")  # reset the peak RSS to the current RSS
        except OSError:
            return
        rss, hwm = _proc_status_kib("VmRSS"), _proc_status_kib("VmHWM")
        if rss is not None and hwm is not None and hwm <= rss + 1024:  # the reset took effect
            self.base = rss

    def increase_mib(self) -> float | None:
        hwm = _proc_status_kib("VmHWM")
        if self.base is None or hwm is None:
            return None
        return max(0, hwm - self.base) / 1024


# ---------------------------------------------------------------------------------------------- progress


class _Progress:
    """One bar over all dtypes (tqdm on a terminal), else plain lines on stderr."""

    _PHASES = {"load": (0.0, 0.1), "throughput": (0.1, 0.65), "latency": (0.75, 0.25)}

    def __init__(self, dtypes: Sequence[str], enabled: bool = True) -> None:
        self.n = len(dtypes)
        self.enabled = enabled
        self.bar = None
        self._last_line = ""
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=100 * self.n, file=sys.stderr, unit="%", leave=False,
                                bar_format="{desc} |{bar}| {percentage:3.0f}% {elapsed}")
        self._drawn = 0.0

    def update(self, index: int, dtype: str, phase: str, fraction: float = 0.0) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            now = time.monotonic()
            if 0 < fraction < 1 and now - self._drawn < 0.1:  # the loops call this after every encode
                return
            self._drawn = now
            start, width = self._PHASES[phase]
            pos = 100 * index + 100 * (start + width * min(max(fraction, 0.0), 1.0))
            self.bar.set_description_str(f"{dtype} ({index + 1}/{self.n}): {phase}", refresh=False)
            self.bar.n = min(pos, self.bar.total)
            self.bar.refresh()
        else:
            line = f"embgemma bench: {dtype} ({index + 1}/{self.n}): {phase}"
            if line != self._last_line:  # plain mode: one line per phase, not per step
                print(line, file=sys.stderr, flush=True)
                self._last_line = line

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"embgemma bench: {text}", file=sys.stderr)
        else:
            print(f"embgemma bench: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------------------------- measuring


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (NumPy's default method), q in 0..100."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _throughput(model, work: dict[str, Any], budget: float, tick: Callable[[float], None]) -> dict[str, Any]:
    """Encode the batches in turn, one engine call each, until ``budget`` seconds have passed (at
    least one call), after a short warm-up call (that starts the threads and touches every weight)."""
    batches, batch_tokens, prompt = work["batches"], work["batch_tokens"], work["doc_prompt"]
    model.encode(sorted(batches[-1], key=len)[:2], prompt=prompt)  # warm-up: the two shortest documents
    tokens = texts = calls = 0
    seconds = 0.0
    t_start = time.perf_counter()
    while True:
        b = batches[calls % len(batches)]
        t0 = time.perf_counter()
        model.encode(b, prompt=prompt, batch_size=len(b))
        seconds += time.perf_counter() - t0
        tokens += batch_tokens[calls % len(batches)]
        texts += len(b)
        calls += 1
        spent = time.perf_counter() - t_start
        tick(spent / budget if budget > 0 else 1.0)
        if spent >= budget:
            break
    return {
        "tokens": tokens,
        "texts": texts,
        "calls": calls,
        "seconds": round(seconds, 6),
        "tok_per_s": tokens / seconds if seconds > 0 else None,
        "texts_per_s": texts / seconds if seconds > 0 else None,
    }


def _latency(model, work: dict[str, Any], budget: float, tick: Callable[[float], None]) -> dict[str, Any]:
    """Single ``encode_query`` calls until ``budget`` seconds have passed (at least _MIN_QUERIES),
    after one warm-up query."""
    queries = work["queries"]
    model.encode_query(queries[-1])  # warm-up
    times: list[float] = []
    tokens = 0
    t_start = time.perf_counter()
    i = 0
    while True:
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        model.encode_query(q)
        times.append(time.perf_counter() - t0)
        tokens += work["query_tokens"][i % len(queries)]
        i += 1
        spent = time.perf_counter() - t_start
        tick(spent / budget if budget > 0 else 1.0)
        if spent >= budget and i >= _MIN_QUERIES:
            break
    return {
        "queries": len(times),
        "query_tokens": tokens / len(times),
        "p50_ms": _percentile(times, 50) * 1e3,
        "p90_ms": _percentile(times, 90) * 1e3,
        "mean_ms": sum(times) / len(times) * 1e3,
    }


def run_bench(
    model_path: str,
    dtypes: Sequence[str],
    threads: int | None = None,
    seconds: float = 60.0,
    progress: bool = True,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """Benchmark ``model_path`` in each weights mode of ``dtypes`` within about ``seconds`` in all.

    Returns a dict with ``machine``, ``model``, ``workload`` and ``results`` (one row per dtype, in
    order; ``status`` is ``"ok"`` or ``"skipped"`` with a ``note`` saying why). A dtype the model
    cannot be loaded in (for example Q4_0 for a matrix width that is not a multiple of 32) is skipped;
    an unreadable or missing model raises as ``EmbeddingGemma`` does.
    """
    from . import _core
    from ._hub import resolve_model_path
    from .model import EmbeddingGemma

    if not dtypes:
        raise ValueError("no dtypes to benchmark")
    # once, up front: a missing or unreadable model fails the run instead of skipping every dtype
    path = resolve_model_path(model_path, model_kwargs.get("cache_folder"))
    per_dtype = seconds / len(dtypes)
    bar = _Progress(dtypes, enabled=progress)
    rss = _PeakRSS()
    work: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    model_info: dict[str, Any] = {}
    try:
        for idx, dtype in enumerate(dtypes):
            row: dict[str, Any] = {"dtype": dtype}
            rows.append(row)
            bar.update(idx, dtype, "load")
            rss.start()
            t0 = time.perf_counter()
            try:
                model = EmbeddingGemma(path, dtype=dtype, threads=threads, **model_kwargs)
            except (_core.EmbGemmaError, ValueError, MemoryError) as e:  # this weights mode, not the file
                row.update(status="skipped", note=f"{type(e).__name__}: {e}")
                bar.note(f"{dtype}: skipped: {e}")
                continue
            load_s = time.perf_counter() - t0
            info = model.info
            if not model_info:
                model_info = {
                    "path": str(model.model_path),
                    "format": model.format,
                    "weight_dtype": info["weight_dtype"],
                    "layers": info["num_hidden_layers"],
                    "hidden_size": info["hidden_size"],
                    "output_dim": info["output_dim"],
                    "max_seq_length": model.max_seq_length,
                }
            row.update(
                status="ok",
                loaded_as=model.dtype,
                attn_weights=info["attn_weights"],
                isa=info["isa"],
                threads=model.threads,
                weight_mib=info["weight_bytes"] / 2**20,
                load_s=load_s,
            )
            if work is None:
                bar.update(idx, dtype, "throughput")
                work = make_workload(model)
            # measuring time: what is left of this dtype's share after loading, but at least a quarter
            measure = max(per_dtype - (time.perf_counter() - t0), 0.25 * per_dtype)
            tp_budget = _THROUGHPUT_SHARE * measure
            row.update(_throughput(model, work, tp_budget, lambda f: bar.update(idx, dtype, "throughput", f)))
            row.update(_latency(model, work, measure - tp_budget, lambda f: bar.update(idx, dtype, "latency", f)))
            row["peak_rss_increase_mib"] = rss.increase_mib()
            if model.dtype != dtype:  # "auto": name what it resolved to
                row["note"] = f"loaded as {model.dtype}"
            del model
            bar.update(idx, dtype, "latency", 1.0)
    finally:
        bar.close()
        _release_memory()
    workload = None
    if work is not None:
        workload = {
            "seed": work["seed"],
            "doc_lengths": work["doc_lengths"],
            "batches": len(work["batches"]),
            "tokens_per_batch": work["batch_tokens"],
            "doc_prompt": work["doc_prompt"],
            "query_prompt": work["query_prompt"],
            "query_tokens": sum(work["query_tokens"]) / len(work["query_tokens"]),
        }
    return {
        "machine": machine_info(threads if threads is not None else default_threads()),
        "model": model_info or {"path": str(path)},
        "seconds": seconds,
        "workload": workload,
        "results": rows,
    }


# ---------------------------------------------------------------------------------------------- report


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report: a table with one row per dtype, notes, and the machine line."""
    head = ("dtype", "load s", "tok/s", "query p50 ms", "p90 ms", "weights MiB", "peak RSS +MiB")
    body = []
    notes = []
    for r in result["results"]:
        if r.get("status") != "ok":
            body.append((r["dtype"], "-", "skipped", "-", "-", "-", "-"))
        else:
            body.append((
                r["dtype"] if r.get("loaded_as", r["dtype"]) == r["dtype"] else f"{r['dtype']}->{r['loaded_as']}",
                _fmt(r["load_s"], ".2f"),
                _fmt(r["tok_per_s"], ",.0f"),
                _fmt(r["p50_ms"], ".2f"),
                _fmt(r["p90_ms"], ".2f"),
                _fmt(r["weight_mib"], ".1f"),
                _fmt(r.get("peak_rss_increase_mib"), ".0f"),
            ))
        if r.get("note") and r.get("status") != "ok":
            notes.append(f"  {r['dtype']}: skipped: {r['note']}")
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), line(["-" * w for w in widths]), *(line(row) for row in body)]
    m = result["model"]
    w = result.get("workload")
    out.append("")
    desc = f"model: {m['path']}"
    if "layers" in m:
        desc += f" ({m['format']}, stored {m['weight_dtype']}, {m['layers']} layers, hidden {m['hidden_size']})"
    out.append(desc)
    if w:
        out.append(
            f"texts: documents of {'/'.join(map(str, w['doc_lengths']))} tokens, "
            f"{sum(w['tokens_per_batch']) / len(w['tokens_per_batch']):,.0f} tokens "
            f"per call (prompt, BOS and EOS counted); queries of {w['query_tokens']:.0f} tokens, one per call"
        )
    out.append("machine: " + machine_line(result["machine"]))
    if notes:
        out.append("notes:")
        out.extend(notes)
    return "\n".join(out)


def parse_dtypes(spec: str) -> list[str]:
    """'float32,bf16,q4_0' -> canonical names, in order, without repeats; ValueError names a bad one."""
    from .loading import DTYPES

    names = [s.strip() for s in spec.split(",")]
    if not any(names):
        raise ValueError("--dtypes is empty")
    out: list[str] = []
    for s in names:
        if not s:
            continue
        canon = DTYPES.get(s.lower())
        if canon is None:
            raise ValueError(
                f"--dtypes: unknown dtype {s!r}; choose from {', '.join(DEFAULT_DTYPES)} or auto "
                "(the default mode: the fastest one measured bfloat16-class here); float16 is not a weights mode"
            )
        if canon not in out:
            out.append(canon)
    return out

