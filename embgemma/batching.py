"""Batching: how token sequences go to the C engine, and into one output array.

Each group of sequences is sorted longest first (as sentence-transformers does) and cut into engine
calls of at most ``batch_size`` texts and ``MAX_BATCH_TOKENS`` tokens, or (``batch_size=None``, the
default) filled up to ``TOKEN_BUDGET`` tokens; every call writes its rows in place. Results never
depend on the grouping: the engine computes each sequence on its own (no padding, no cross-row
arithmetic).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger("embgemma")

# Tokens per engine call: bounds scratch memory (about 20 KB per token for the full model).
MAX_BATCH_TOKENS = 8192
# Tokens per engine call when no batch_size is given: batches are filled with texts (longest first)
# up to this many tokens, so short texts go to the engine by the hundred instead of 32 at a time.
# Measured on the real weights, 2 threads on a shared 2-core machine, CPU-seconds (median of 3):
# 1024 short texts (10,154 tokens) 36.0 at batch_size=32, 23.3 / 20.7 / 20.7 at budgets 2048 / 4096 /
# 8192; 256 short texts 15.1 against 7.0 / 7.3 / 6.3; mixed lengths (135 texts, 9,381 tokens) within
# 10% of each other. Every call crosses ~250 OpenMP barriers, which cost most when the cores are
# busy; on idle cores the gap shrinks to 5-35%. 4096 is best or tied everywhere, ~80 MB of scratch.
TOKEN_BUDGET = 4096
# Texts (and characters) tokenized at a time: encode streams through them, so what it holds beyond the
# output array (the tokenizer's objects, about 3 KB a text) does not grow with the number of texts,
# and Ctrl-C is seen between batches instead of after tokenizing everything (tests/test_memory.py,
# tests/test_processes.py). Batches are length-sorted within a chunk; results do not depend on it.
CHUNK_TEXTS = 2048
CHUNK_CHARS = 1 << 20


def check_batch_size(batch_size: Any) -> int | None:
    """A positive int, or None for the token budget."""
    if batch_size is not None and (
        not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None (a token budget), got {batch_size!r}")
    return None if batch_size is None else int(batch_size)


class EncodeRun:
    """Encodes token sequences into one ``(n, dim)`` float32 array, a group at a time (``add``), on
    ``core`` (an ``embgemma._core.Model``) with ``threads`` threads. The progress bar counts texts, a
    total known up front; it is closed on leaving the ``with`` block, also on Ctrl-C."""

    def __init__(self, core: Any, threads: int, n: int, dim: int, batch_size: Any, show_progress_bar: bool | None,
                 normalize: bool) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.dim = dim
        self.out = np.empty((n, dim), dtype=np.float32)  # [n, dim]: row i is text i's embedding
        self.core, self.threads, self.normalize = core, threads, bool(normalize)
        if self.batch_size is None:
            self.max_texts, self.max_tokens, self.chunk = n, TOKEN_BUDGET, CHUNK_TEXTS
        else:
            self.max_texts, self.max_tokens = self.batch_size, MAX_BATCH_TOKENS
            self.chunk = max(self.batch_size, CHUNK_TEXTS // self.batch_size * self.batch_size)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        self.bar = None
        if show_progress_bar and n:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=n, desc="Encoding", unit="text")
            except ImportError:
                logger.warning("show_progress_bar needs tqdm: pip install tqdm")

    def __enter__(self) -> EncodeRun:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:  # also on Ctrl-C: no bar left half drawn
            self.bar.close()

    def add(self, seqs: Sequence, first_row: int) -> None:
        """Encodes ``seqs`` (token id sequences) into rows ``first_row ...`` of ``out``."""
        n = len(seqs)
        if n == 0:
            return
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first, like sentence-transformers
        batches: list[np.ndarray] = []
        start = 0
        while start < n:
            stop, tokens = start, 0
            while stop < n and stop - start < self.max_texts and (
                stop == start or tokens + lengths[order[stop]] <= self.max_tokens
            ):
                tokens += lengths[order[stop]]
                stop += 1
            batches.append(order[start:stop])
            start = stop
        for rows in batches:
            parts = [np.asarray(seqs[r], dtype=np.int32) for r in rows]
            offsets = np.zeros(len(parts) + 1, dtype=np.int64)
            np.cumsum([len(p) for p in parts], out=offsets[1:])
            self.core.encode(np.concatenate(parts), offsets, dim=self.dim, normalize=self.normalize,
                             threads=self.threads, out=self.out, rows=rows.astype(np.int64) + first_row)
            if self.bar is not None:
                self.bar.update(len(rows))
