"""Compact embeddings and search over them, with sentence-transformers' semantics.

``quantize_embeddings`` gives the same arrays as ``sentence_transformers.quantize_embeddings`` (6.x);
``semantic_search`` the same hits as ``sentence_transformers.util.semantic_search``, but in NumPy and
in chunks: a query chunk is scored against one corpus chunk at a time and only the running top-k is
kept, so memory is bounded by the chunk sizes whatever the corpus size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger("embgemma")

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize_embeddings(
    embeddings: np.ndarray | list,
    precision: str,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float embeddings to ``precision`` (sentence-transformers 6 semantics, tested equal).

    - ``"float32"``: a float32 copy.
    - ``"int8"`` / ``"uint8"``: 256 buckets per dimension between the minimum and the maximum of
      ``ranges`` (shape ``(2, dim)``), else of ``calibration_embeddings``, else of ``embeddings``
      themselves (then the buckets depend on what else is in the array: fewer than 100 rows warns,
      a single embedding raises). Values outside the range clip to the end buckets.
    - ``"binary"`` / ``"ubinary"``: one bit per dimension (``x > 0``), packed 8 per byte; ``binary``
      shifts the bytes by -128 into int8. A 768-wide vector becomes 96 bytes.

    A 1-D input gives a 1-D output.
    """
    arr = np.asarray(embeddings)
    if arr.dtype in (np.int8, np.uint8):
        raise ValueError("embeddings to quantize must be float, not int8 or uint8 (already quantized?)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"embeddings must be 1-D or 2-D, got shape {arr.shape}")
    if precision == "float32":
        return arr.astype(np.float32)
    if precision.endswith("binary"):
        bits = np.packbits(arr > 0, axis=-1)
        return (bits - 128).astype(np.int8) if precision == "binary" else bits
    # int8 / uint8
    out_type = np.int8 if precision == "int8" else np.uint8
    if arr.ndim == 2 and arr.shape[0] == 0:
        return np.zeros((0, arr.shape[1]), dtype=out_type)
    if ranges is None:
        if calibration_embeddings is not None:
            cal = np.asarray(calibration_embeddings)
        else:
            if arr.ndim == 1 or arr.shape[0] == 1:
                raise ValueError(
                    f"cannot compute {precision} buckets from a single embedding: pass ranges= (a (2, dim) "
                    "minimum / maximum per dimension) or calibration_embeddings= from a representative set"
                )
            if arr.shape[0] < 100:
                logger.warning(
                    "computing %s quantization buckets from only %d embeddings; pass ranges= or "
                    "calibration_embeddings= for stable buckets",
                    precision,
                    arr.shape[0],
                )
            cal = arr
        ranges = np.vstack((np.min(cal, axis=0), np.max(cal, axis=0)))
    ranges = np.asarray(ranges).astype(np.float32, copy=False)
    if ranges.shape != (2, arr.shape[-1]):
        raise ValueError(f"ranges must have shape (2, {arr.shape[-1]}), got {ranges.shape}")
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    q = np.clip(np.floor((arr - starts) / steps), 0, 255)
    return (q - 128).astype(np.int8) if precision == "int8" else q.astype(np.uint8)


def _as_2d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {a.shape}")
    return a


def semantic_search(
    query_embeddings: np.ndarray,
    corpus_embeddings: np.ndarray,
    query_chunk_size: int = 100,
    corpus_chunk_size: int = 100_000,
    top_k: int = 10,
    score_function: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[list[dict[str, int | float]]]:
    """For each query, the ``top_k`` corpus entries by ``score_function`` (default cosine similarity),
    best first, as ``[{"corpus_id": int, "score": float}, ...]`` (sentence-transformers' format).

    Scores one (query chunk x corpus chunk) block at a time and keeps only a running top-k, so the
    largest array is ``query_chunk_size x corpus_chunk_size`` scores however big the corpus is.
    """
    from .model import cos_sim

    if score_function is None:
        score_function = cos_sim
    q = _as_2d(query_embeddings, "query_embeddings")
    c = _as_2d(corpus_embeddings, "corpus_embeddings")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"query width {q.shape[1]} differs from corpus width {c.shape[1]}")
    for name, v in (("query_chunk_size", query_chunk_size), ("corpus_chunk_size", corpus_chunk_size), ("top_k", top_k)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    k = min(int(top_k), c.shape[0])
    results: list[list[dict[str, int | float]]] = []
    for q0 in range(0, q.shape[0], query_chunk_size):
        qc = q[q0 : q0 + query_chunk_size]
        best_s = np.full((qc.shape[0], 0), -np.inf, dtype=np.float64)
        best_i = np.zeros((qc.shape[0], 0), dtype=np.int64)
        for c0 in range(0, c.shape[0], corpus_chunk_size):
            s = np.asarray(score_function(qc, c[c0 : c0 + corpus_chunk_size]), dtype=np.float64)
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else np.tile(np.arange(s.shape[1]), (s.shape[0], 1))
            cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, part + c0], axis=1)
            keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(cand_s, keep, axis=1)
            best_i = np.take_along_axis(cand_i, keep, axis=1)
        for row_s, row_i in zip(best_s, best_i):
            results.append([{"corpus_id": int(i), "score": float(sc)} for sc, i in zip(row_s, row_i)])
    return results
