"""embgemma: EmbeddingGemma-300m on the CPU, computed by C kernels, returned as NumPy arrays.

    >>> from embgemma import EmbeddingGemma
    >>> model = EmbeddingGemma("google/embeddinggemma-300m")
    >>> q = model.encode_query("Which planet is known as the Red Planet?")
    >>> d = model.encode_document(["Mars, known for its reddish appearance, ..."])
    >>> model.similarity(q, d)
"""

from __future__ import annotations

from typing import Any

from . import _core
from ._core import EmbGemmaError, ModelFormatError, UnsupportedModelError
from .model import MATRYOSHKA_DIMS, EmbeddingGemma, cos_sim
from .prompts import DEFAULT_PROMPTS
from .quantization import quantize_embeddings, semantic_search

__version__ = _core.build_info()["version"]

__all__ = [
    "DEFAULT_PROMPTS",
    "MATRYOSHKA_DIMS",
    "EmbGemmaError",
    "EmbeddingGemma",
    "ModelFormatError",
    "UnsupportedModelError",
    "build_info",
    "cos_sim",
    "quantize_embeddings",
    "semantic_search",
    "__version__",
]


def build_info() -> dict[str, Any]:
    """How this copy of embgemma was built and what it will run on.

    Keys: version, compiled_isas, supported_isas, chosen_isa (honours EMBGEMMA_ISA),
    openmp, default_threads.
    """
    import os

    from .model import _default_threads

    info = _core.build_info()
    chosen = os.environ.get("EMBGEMMA_ISA") or "auto"
    if chosen == "auto":
        chosen = info["best_isa"]
    return {
        "version": info["version"],
        "compiled_isas": info["compiled_isas"],
        "supported_isas": info["supported_isas"],
        "chosen_isa": chosen,
        "openmp": info["openmp"],
        "default_threads": _default_threads(),
    }
