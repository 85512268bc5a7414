"""embgemma: EmbeddingGemma-300m on the CPU, computed by C kernels, returned as NumPy arrays.

    >>> from embgemma import EmbeddingGemma
    >>> model = EmbeddingGemma("google/embeddinggemma-300m")
    >>> q = model.encode_query("Which planet is known as the Red Planet?")
    >>> d = model.encode_document(["Mars, known for its reddish appearance, ..."])
    >>> model.similarity(q, d)
"""

from __future__ import annotations

import os
from typing import Any

# Shared cores: GNU OpenMP's idle workers spin up to 300,000 times (several ms) before sleeping, which on a
# machine whose cores are busy with other processes (Ray actors, Spark executors, a second server) burns
# the time slices those processes need. Measured with benchmarks/contention.py (docs/performance.md): two
# processes of 2 threads on 2 cores gave 395-424 tok/s in all against 473-522 for one alone; with 10,000
# spins 463-556, and no loss alone. libgomp reads this when it loads, which is the import of _core below;
# a value the user set (GOMP_SPINCOUNT or OMP_WAIT_POLICY) is left alone. Results never depend on it.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

from . import _core  # noqa: E402
from ._core import EmbGemmaError, ModelFormatError, UnsupportedModelError
from .model import MATRYOSHKA_DIMS, EmbeddingGemma, cos_sim
from .prompts import DEFAULT_PROMPTS
from .quantization import quantize_embeddings
from .search import semantic_search

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

    Keys: version, compiled_isas, supported_isas, chosen_isa (honours EMBGEMMA_ISA and the
    load-time self-check), isa_note (why: what was asked for or found best, the self-check's
    verdict, any fallback), selfcheck (each supported ISA's kernels against their scalar twins:
    "passed" or the first disagreement), cpu_features (what dispatch saw: CPUID and OS state),
    openmp, default_threads.
    """
    from .loading import default_threads

    info = _core.build_info()
    return {
        "version": info["version"],
        "compiled_isas": info["compiled_isas"],
        "supported_isas": info["supported_isas"],
        "chosen_isa": info["chosen_isa"],
        "isa_note": info["isa_note"],
        "selfcheck": info["selfcheck"],
        "cpu_features": info["cpu_features"],
        "openmp": info["openmp"],
        "default_threads": default_threads(),
    }
