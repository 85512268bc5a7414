"""The shard loop every engine runs: a job's rows are cut into shards of ``shard_size`` rows, each
computed and written on its own, so a killed run loses at most the shards in progress.

The loop reads the inputs in order on this machine (``inputs``), prepares each shard (the id and kept
columns typed, rows that cannot be embedded set aside with their reason, ``--strict`` checks) and hands
its texts to a *compute*: ``LocalCompute`` embeds them in this process; the Ray engine's sends them to
a pool of actors, several shards in flight. Results come back in shard order and are written as they
come. Rerunning the same job checks its manifest, skips the shards whose file exists and computes the
others. Embeddings do not depend on batch composition or thread count, so a resumed run's files are
byte-identical to an uninterrupted run's, whichever engine computed which shard.

A compute has ``window`` (shards it takes before the loop waits for the oldest), ``submit(job, shard)``,
``pending()``, ``next(job, progress)`` (the oldest shard, its results put in by ``take_results``) and
``close()`` (drop what is in flight).
"""

from __future__ import annotations

import math
import re
import signal
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .arrow import declared_types, fit, infer_type, jsonable, pyarrow_parquet
from .embedder import BatchEmbedder, BatchResult, EmbedOptions
from .inputs import Columns, InputReader, Row, Source, scan
from .manifest import build_manifest, prepare, prompt_text
from .output import Layout, finalize, write_shard
from .reasons import EmbedJobError, missing

DEFAULT_SHARD_SIZE = 1000


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished shards stay, the ones in progress are dropped."""


class StrictStop(Exception):
    """``--strict`` met a row that cannot be embedded; ``args[0]`` is its errors-file entry."""


@dataclass
class Job:
    layout: Layout
    sources: list[Source]
    cols: Columns
    embedder: BatchEmbedder
    prompt: str
    shard_size: int
    strict: bool
    quiet: bool
    total: int
    types: dict[str, Any] = field(default_factory=dict)  # Arrow type of id / kept columns (Parquet outputs)
    tokens: int = 0
    truncated: int = 0  # texts over max_seq_length, cut by the engine (one line at the end, not a warning a batch)


@dataclass
class Shard:
    """One shard on its way: its rows, why some cannot be embedded, the typed id and kept columns, the
    rows to embed (``cand``), and, filled by the compute, the embeddings and which rows got one."""

    k: int
    start: int  # global row of its first row
    rows: list[Row]
    reasons: list[str | None]
    columns: dict[str, Any]
    cand: list[int]
    emb: np.ndarray
    ok: np.ndarray

    def texts(self, idx: list[int]) -> list[Any]:
        return [self.rows[i][0] for i in idx]

    def titles(self, job: Job, idx: list[int]) -> list[Any] | None:
        return [self.rows[i][1] for i in idx] if job.cols.title is not None else None


def check_mix(sources: list[Source]) -> bool:
    """True when the inputs have columns; plain-text inputs (no columns) cannot be mixed with them."""
    structured = any(s.fmt != "text" for s in sources)
    if structured and any(s.fmt == "text" for s in sources):
        raise EmbedJobError("plain-text inputs cannot be mixed with JSON Lines / CSV / Parquet inputs (they have no "
                            "columns); embed them in separate jobs")
    return structured


def error_entry(job: Job, row: Row, global_row: int, reason: str) -> dict[str, Any]:
    return {"row": global_row, "id": jsonable(row[2]), "file": str(job.sources[row[5]].path), "file_row": row[6],
            "reason": reason}


def prepare_shard(job: Job, k: int, rows: list[Row]) -> Shard:
    """Type the id and kept columns (a value that does not fit is a bad row) and set aside the rows that
    cannot be embedded; with ``strict``, the first such row stops the job."""
    n, start = len(rows), k * job.shard_size
    reasons: list[str | None] = [r[4] for r in rows]
    columns: dict[str, Any] = {}
    if job.layout.kind != "npy":
        for j, name in enumerate(["id", *job.cols.keep]):
            values = [r[2] for r in rows] if name == "id" else [r[3][j - 1] for r in rows]
            values = [None if reasons[i] is not None and name == "id" else v for i, v in enumerate(values)]
            if job.types.get(name) is None:  # the first shard's types stay the job's
                job.types[name] = infer_type([v for i, v in enumerate(values) if reasons[i] is None])
            columns[name], bad = fit(name, values, job.types[name])
            for i, why in bad.items():
                reasons[i] = reasons[i] or why
    cand = [i for i in range(n) if reasons[i] is None]
    if job.strict:
        emb = job.embedder
        _, why = emb.validate([rows[i][0] for i in cand],
                              [rows[i][1] for i in cand] if emb.options.title_column is not None else None)
        for i, w in zip(cand, why):
            reasons[i] = w
        first = next((i for i in range(n) if reasons[i] is not None), None)
        if first is not None:
            raise StrictStop(error_entry(job, rows[first], start + first, reasons[first]))
    width, dtype = job.embedder.output_width, job.embedder.output_dtype
    return Shard(k, start, rows, reasons, columns, cand, np.zeros((n, width), dtype=dtype), np.zeros(n, dtype=bool))


def take_results(job: Job, shard: Shard, idx: list[int], res: BatchResult, progress: Progress) -> None:
    """Put one batch's results into its shard: embeddings, and the reasons of rows the model refused."""
    good = np.asarray(idx, dtype=np.int64)[res.ok]
    shard.emb[good] = res.embeddings
    shard.ok[good] = True
    for j in np.flatnonzero(~res.ok):
        shard.reasons[idx[j]] = res.reasons[j]
        if job.strict:
            raise StrictStop(error_entry(job, shard.rows[idx[j]], shard.start + idx[j], res.reasons[j]))
    ok_idx = [i for i, g in zip(idx, res.ok) if g]
    tokens = count_tokens(job, shard.texts(ok_idx), shard.titles(job, ok_idx))
    job.tokens += tokens
    progress.update(len(idx), tokens)


def count_tokens(job: Job, texts: list[str], titles: list[Any] | None) -> int:
    """Tokens the engine sees (prompt, BOS, EOS; capped at max_seq_length), for the progress bar; counts
    the texts the engine truncated in ``job.truncated`` (the same strings as ``encode`` tokenizes)."""
    from ..prompts import document_prompt_with_title

    model = job.embedder.model
    tok = getattr(model, "tokenizer", None)
    if tok is None or not texts:
        return 0
    if titles is not None:
        strings = [(document_prompt_with_title(None if missing(t) else t) + x).strip()
                   for x, t in zip(texts, titles)]
    else:
        strings = [(job.prompt + x).strip() for x in texts]
    cap = model.max_seq_length
    lengths = [len(e.ids) for e in tok.encode_batch(strings)]
    job.truncated += sum(n > cap for n in lengths)
    return sum(min(n, cap) for n in lengths)


class LocalCompute:
    """Embeds each shard in this process, a few engine batches at a time (for the progress bar)."""

    window = 1  # shards in flight

    def __init__(self) -> None:
        self.queue: deque[Shard] = deque()

    def submit(self, job: Job, shard: Shard) -> None:
        self.queue.append(shard)

    def pending(self) -> int:
        return len(self.queue)

    def next(self, job: Job, progress: Progress) -> Shard:
        shard = self.queue.popleft()
        step = max(8 * (job.embedder.options.batch_size or 32), 256)  # engine calls between progress updates
        for s in range(0, len(shard.cand), step):
            idx = shard.cand[s : s + step]
            with warnings.catch_warnings():  # counted instead, and said once at the end
                warnings.filterwarnings("ignore", message=r".* longer than max_seq_length=", category=UserWarning)
                res = job.embedder.embed_checked(shard.texts(idx), shard.titles(job, idx))
            take_results(job, shard, idx, res, progress)
        return shard

    def close(self) -> None:
        self.queue.clear()


def _write(job: Job, shard: Shard, progress: Progress) -> None:
    progress.update(len(shard.rows) - len(shard.cand), 0)  # rows refused before embedding
    errors = [error_entry(job, shard.rows[i], shard.start + i, shard.reasons[i] or "not embedded")
              for i in range(len(shard.rows)) if not shard.ok[i]]
    write_shard(job.layout, shard.k, shard.emb, shard.ok, shard.columns, errors)
    progress.shard_done()


def open_job(layout: Layout, sources: list[Source], options: EmbedOptions, *, structured: bool, shard_size: int,
             strict: bool, quiet: bool, overwrite: bool):
    """Check the job, count its rows, load the model, then lock the output and write or check its
    manifest. Returns ``(job, lock)``; the caller releases the lock."""
    if layout.kind == "npy" and options.passthrough:
        raise EmbedJobError("--keep-columns needs a Parquet output: a .npy file holds only the embeddings (row i = "
                            "input row i)")
    if any(s.fmt == "parquet" for s in sources) or layout.kind != "npy":
        pyarrow_parquet()  # the ImportError names the extra before any work
    cols = Columns(options.text_column, options.id_column, options.title_column, options.passthrough)
    # the job's identity: refuse early, before loading the model, what can be refused without it
    for i, src in enumerate(sources):
        src.rows = scan(src, cols, i)
    embedder = BatchEmbedder(options)
    manifest = build_manifest(embedder, sources, cols, structured, shard_size, layout.kind)
    lock = prepare(layout, manifest, overwrite)
    job = Job(layout, sources, cols, embedder, prompt_text(embedder.model, options), shard_size, strict, quiet,
              sum(s.rows for s in sources))
    return job, lock


def run_job(layout: Layout, sources: list[Source], options: EmbedOptions, *, structured: bool,
            shard_size: int = DEFAULT_SHARD_SIZE, strict: bool = False, quiet: bool = True, overwrite: bool = False,
            compute: Any = None) -> dict[str, Any]:
    """The whole job: open it, compute the shards not done (by ``compute``, default in this process),
    assemble the output. Returns ``{"rows", "embedded", "errors", "computed", "seconds"}``. Raises
    ``StrictStop`` (``strict``), ``KeyboardInterrupt`` (Ctrl-C; ``Interrupted``: SIGTERM), after saying
    how far the job got."""
    job, lock = open_job(layout, sources, options, structured=structured, shard_size=shard_size, strict=strict,
                         quiet=quiet, overwrite=overwrite)
    try:
        if layout.kind == "dataset" and layout.success.exists():
            print(f"embgemma embed: {layout.out} is complete (same job); nothing to do", file=sys.stderr)
            n_err = sum(1 for _ in open(layout.errors, "rb")) if layout.errors.exists() else 0
            return {"rows": job.total, "embedded": job.total - n_err, "errors": n_err, "computed": 0, "seconds": 0.0}
        return _embed_all(job, compute or LocalCompute())
    finally:
        lock.close()


def _embed_all(job: Job, compute: Any) -> dict[str, Any]:
    layout, S, total = job.layout, job.shard_size, job.total
    n_shards = max(1, -(-total // S))
    done = [layout.shard(k).exists() for k in range(n_shards)]
    stray = sorted(layout.work.glob("part-*.parquet" if layout.kind == "dataset" else "shard-*.*"))
    for p in stray:  # shards past the end: cannot be from this job's manifest
        if p.name.endswith((".npy", ".parquet")) and int(re.findall(r"\d+", p.name)[0]) >= n_shards:
            raise EmbedJobError(f"{p}: a shard past the end of the input ({n_shards} shards); pass --overwrite")
    rows_done = sum(min(S, total - k * S) for k in range(n_shards) if done[k])
    if layout.kind != "npy":
        job.types = declared_types(job.sources[0].fmt if job.sources else "text",
                                   job.sources[0].path if job.sources else None, job.cols.id, job.cols.keep)
        if done[0]:  # types inferred by the first shard stay the job's types
            schema = pyarrow_parquet().read_schema(layout.shard(0))
            for name in job.types:
                job.types[name] = schema.field(name).type
    if any(done) and not job.quiet:
        print(f"embgemma embed: resuming: {sum(done)} of {n_shards} shards are done ({rows_done} of {total} rows)",
              file=sys.stderr)
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise Interrupted()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    progress = Progress(total, rows_done, job.quiet)
    t0 = time.perf_counter()
    reader = InputReader(job.sources, job.cols)
    computed = 0
    try:
        for k in range(n_shards):
            expect = min(S, total - k * S)
            if done[k]:
                got = reader.skip(expect)
                if got != expect:
                    raise EmbedJobError(f"the inputs have fewer rows than counted ({k * S + got}); did they change "
                                        "during the run?")
                continue
            rows = reader.read(expect)
            if len(rows) != expect:
                raise EmbedJobError(f"the inputs have fewer rows than counted ({k * S + len(rows)}); did they change "
                                    "during the run?")
            try:
                shard = prepare_shard(job, k, rows)
            except StrictStop:
                while compute.pending():  # the shards before the bad row are kept
                    _write(job, compute.next(job, progress), progress)
                raise
            compute.submit(job, shard)
            computed += len(rows)
            while compute.pending() >= compute.window:
                _write(job, compute.next(job, progress), progress)
        while compute.pending():
            _write(job, compute.next(job, progress), progress)
        if reader.read(1):
            raise EmbedJobError(f"the inputs have more rows than counted ({total}); did they change during the run?")
        progress.close()
        n_err = finalize(layout, n_shards, total, S, job.embedder.output_width, job.embedder.output_dtype,
                         job.cols.keep)
    except KeyboardInterrupt as e:
        progress.close()
        finished = sum(1 for k in range(n_shards) if layout.shard(k).exists())
        what = "terminated" if isinstance(e, Interrupted) else "interrupted"
        print(f"embgemma embed: {what}; {finished} of {n_shards} shards are complete in {layout.work}. Rerun the "
              "same command to resume.", file=sys.stderr)
        raise
    finally:
        progress.close()
        reader.close()
        compute.close()
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
    dt = time.perf_counter() - t0
    if not job.quiet:
        rate = f"{computed / dt:.1f} texts/s, {job.tokens / dt:,.0f} tok/s" if computed and dt > 0 else "no new rows"
        err = f"; {n_err} row(s) not embedded, listed in {layout.errors}" if n_err else ""
        cut = (f"; {job.truncated} text(s) longer than max_seq_length={job.embedder.model.max_seq_length} tokens "
               "were truncated (their first tokens embedded)" if job.truncated else "")
        print(f"embgemma embed: {total - n_err} of {total} rows -> {layout.out} ({job.embedder.output_width} x "
              f"{np.dtype(job.embedder.output_dtype).name}){err}. This run: {computed} rows in {dt:.1f} s ({rate})"
              f"{cut}", file=sys.stderr)
    return {"rows": total, "embedded": total - n_err, "errors": n_err, "computed": computed, "seconds": dt}


class Progress:
    """tqdm bar (texts, texts/s, tokens/s, ETA) on stderr; a line per shard without tqdm; nothing with --quiet."""

    def __init__(self, total: int, initial: int, quiet: bool) -> None:
        self.total, self.done, self.tokens, self.t0 = total, initial, 0, time.perf_counter()
        self.initial, self.bar, self.quiet = initial, None, quiet
        if quiet:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, unit="text", desc="embed", file=sys.stderr, dynamic_ncols=True,
                        mininterval=0.5 if tty else 30.0, smoothing=0.05)

    def update(self, texts: int, tokens: int) -> None:
        self.done += texts
        self.tokens += tokens
        if self.bar is not None:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / dt:,.0f} tok/s", refresh=False)
            self.bar.update(texts)

    def shard_done(self) -> None:
        if self.bar is None and not self.quiet:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            rate = (self.done - self.initial) / dt
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"embed: {self.done}/{self.total} texts, {rate:.1f} texts/s, {self.tokens / dt:,.0f} tok/s, "
                  f"ETA {_duration(eta)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

