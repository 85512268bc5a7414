"""Cross-request batching: one engine thread packs the inputs of concurrent requests into
token-budgeted batches and runs them on the C engine, off the event loop.

A request is a list of token-id sequences (already validated and truncated). Its inputs are taken
first-in first-out, possibly across several batches, and its (n, dim) result is handed back to the
event loop when the last one is done. The engine computes every input independently (no padding,
results do not depend on batch composition), so a request's embeddings are bitwise the same as
``EmbeddingGemma.encode`` gives for it alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

logger = logging.getLogger("embgemma.server")


class EngineError(RuntimeError):
    """The engine failed on a request's inputs (after being retried alone)."""


@dataclass(eq=False)
class Job:
    """One request's inputs on their way through the engine."""

    seqs: list[np.ndarray]                # int32 token ids, BOS/EOS included
    dim: int                              # output width
    normalize: bool                       # L2-normalize the (truncated) output
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    out: np.ndarray = field(init=False)   # (n, dim) float32, filled batch by batch
    taken: int = 0                        # inputs handed to the engine so far
    done: int = 0                         # inputs finished
    cancelled: bool = False               # the client went away: skip what is not taken yet
    t_submit: float = field(default_factory=time.perf_counter)
    t_first: float | None = None          # first batch started
    inference_s: float = 0.0              # engine time of the batches this job was in

    def __post_init__(self) -> None:
        self.out = np.empty((len(self.seqs), self.dim), dtype=np.float32)

    @property
    def queue_s(self) -> float:
        return (self.t_first or time.perf_counter()) - self.t_submit


class Batcher:
    """The engine thread and its queue.

    Args:
        encode: ``encode(ids, offsets, dim=, normalize=, out=)`` of the C engine (threads bound).
        max_batch_tokens: token budget of one engine call (a single input is never split).
        on_batch: called after each engine call with (inputs, tokens, seconds) - for metrics.
    """

    def __init__(self, encode: Callable[..., Any], max_batch_tokens: int,
                 on_batch: Callable[[int, int, float], None] | None = None) -> None:
        self._encode = encode
        self.max_batch_tokens = int(max_batch_tokens)
        self._on_batch = on_batch
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self.pending_inputs = 0           # inputs queued and not yet taken (queue depth)
        self._thread = threading.Thread(target=self._run_forever, name="embgemma-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def submit(self, seqs: list[np.ndarray], dim: int, normalize: bool) -> Job:
        """Queue a request; await ``job.future`` for its (n, dim) float32 array."""
        loop = asyncio.get_running_loop()
        job = Job(seqs, dim, normalize, loop, loop.create_future())
        if not seqs:
            job.future.set_result(job.out)
            return job
        with self._cv:
            if self._closing:
                raise RuntimeError("the engine is shutting down")
            self._jobs.append(job)
            self.pending_inputs += len(seqs)
            self._cv.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop what the engine has not started of a job (its client went away)."""
        with self._cv:
            if not job.cancelled:
                job.cancelled = True
                self.pending_inputs -= len(job.seqs) - job.taken

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued work, then stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ engine thread

    def _take(self) -> list[tuple[Job, int, int]]:
        """Inputs for the next engine call, first-in first-out, within the token budget."""
        batch: list[tuple[Job, int, int]] = []
        tokens = 0
        while self._jobs:
            job = self._jobs[0]
            if job.cancelled:
                self._jobs.popleft()
                continue
            start = stop = job.taken
            while stop < len(job.seqs):
                n = len(job.seqs[stop])
                if (batch or stop > start) and tokens + n > self.max_batch_tokens:
                    break
                tokens += n
                stop += 1
            if stop > start:
                batch.append((job, start, stop))
                job.taken = stop
                self.pending_inputs -= stop - start
            if job.taken < len(job.seqs):
                break  # budget spent
            self._jobs.popleft()
        return batch

    def _run_forever(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closing:
                    self._cv.wait()
                if not self._jobs:
                    return
                batch = self._take()
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Job, int, int]]) -> None:
        t0 = time.perf_counter()
        for job, _, _ in batch:
            if job.t_first is None:
                job.t_first = t0
        # one engine call per output kind (nearly always one)
        groups: dict[tuple[int, bool], list[tuple[Job, int, int]]] = {}
        for part in batch:
            groups.setdefault((part[0].dim, part[0].normalize), []).append(part)
        n_inputs = n_tokens = 0
        for (dim, normalize), parts in groups.items():
            seqs = [s for job, a, b in parts for s in job.seqs[a:b]]
            n_inputs += len(seqs)
            n_tokens += sum(len(s) for s in seqs)
            try:
                out = self._call(seqs, dim, normalize)
            except Exception:  # noqa: BLE001 - isolate: a failure must not fail the other requests
                logger.exception("engine call failed on a batch of %d inputs; retrying each request alone", len(seqs))
                for part in parts:
                    self._run_alone(part)
                continue
            row = 0
            for job, a, b in parts:
                job.out[a:b] = out[row : row + b - a]
                row += b - a
        dt = time.perf_counter() - t0
        for job, a, b in batch:
            job.inference_s += dt
            if not job.cancelled:
                job.done += b - a
                if job.done == len(job.seqs):
                    job.loop.call_soon_threadsafe(_resolve, job.future, job.out, None)
        if self._on_batch is not None:
            self._on_batch(n_inputs, n_tokens, dt)

    def _run_alone(self, part: tuple[Job, int, int]) -> None:
        job, a, b = part
        try:
            job.out[a:b] = self._call(job.seqs[a:b], job.dim, job.normalize)
        except Exception as e:  # noqa: BLE001
            self.cancel(job)
            err = EngineError(f"the engine failed on this request: {type(e).__name__}: {e}")
            job.loop.call_soon_threadsafe(_resolve, job.future, None, err)

    def _call(self, seqs: list[np.ndarray], dim: int, normalize: bool) -> np.ndarray:
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in seqs], out=offsets[1:])
        out = np.empty((len(seqs), dim), dtype=np.float32)
        self._encode(np.concatenate(seqs), offsets, dim=dim, normalize=normalize, out=out)
        return out


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by the client meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
