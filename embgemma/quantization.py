"""Compact embeddings with sentence-transformers' semantics: ``quantize_embeddings`` gives the same
arrays as ``sentence_transformers.quantize_embeddings`` (6.x). Search over them is ``search``'s job.
"""

from __future__ import annotations

import logging

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
