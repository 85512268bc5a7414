"""Functions run in child processes by tests/test_processes.py (importable by 'spawn' and
'forkserver' children without importing conftest, whose reference stack takes seconds to load)."""

from __future__ import annotations

import warnings
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden_model"
TEXTS = [f"text number {i} " + "lorem ipsum dolor sit amet " * (i % 5) for i in range(48)]


def encode_with(model, queue) -> None:
    """A forked child encoding with the model object it inherited: (result, warnings) back."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.encode(TEXTS, batch_size=8)
    queue.put((out, [str(w.message) for w in caught]))


def load_and_encode(path: str):
    """A spawned / forkserver child loading its own model from a path."""
    from embgemma import EmbeddingGemma

    return EmbeddingGemma(path, threads=2).encode(TEXTS, batch_size=8)
