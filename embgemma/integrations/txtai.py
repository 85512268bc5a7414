"""txtai: EmbeddingGemma as a txtai vectors method.

    >>> from txtai import Embeddings
    >>> embeddings = Embeddings(method="embgemma.integrations.txtai.EmbGemmaVectors",
    ...                         path="google/embeddinggemma-300m", content=True)
    >>> embeddings.index(["Mars is red.", "Venus is hot."])      # document prompt
    >>> embeddings.search("Which planet is red?", 1)             # query prompt

txtai tags each call with a category: ``"data"`` (indexing, and the data side of ``similarity``)
gets the model's document prompt, ``"query"`` (searches) its query prompt. ``instructions``
(``{"query": ..., "data": ...}``) replaces a category's prompt with a literal one;
``dimensionality`` is the Matryoshka width, computed by the engine (truncated, then re-normalized).
``path`` is a model folder, GGUF file, Ollama name or Hugging Face id; ``vectors`` holds other
``EmbeddingGemma`` arguments (``dtype``, ``threads``, ``cache_folder``), ``maxlength`` its
``max_seq_length`` and ``encodebatch`` the texts per engine call.
"""

from __future__ import annotations

from typing import Any

try:
    from txtai.vectors import Vectors
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("embgemma.integrations.txtai needs txtai: pip install \"embgemma[txtai]\"") from e

from ..model import EmbeddingGemma
from ._common import DEFAULT_MODEL, Encoder, load_model

_CATEGORIES = ("query", "data")


class EmbGemmaVectors(Vectors):
    """txtai ``Vectors`` computed by embgemma.

    Use it as ``Embeddings(method="embgemma.integrations.txtai.EmbGemmaVectors", path=...)``.
    """

    def __init__(self, config: dict[str, Any], scoring: Any, models: Any) -> None:
        super().__init__(config, scoring, models)  # loads the model through loadmodel
        if not config:
            return
        instructions = self.instructions or {}
        if not isinstance(instructions, dict) or any(k not in _CATEGORIES for k in instructions):
            raise ValueError(
                f"instructions must be a dict with keys 'query' and / or 'data' (literal prompts), got {instructions!r}"
            )
        batch = config.get("encodebatch")  # only when set: else the engine batches as it sees fit
        self.encoder = Encoder(
            self.model, query_prompt=instructions.get("query"), document_prompt=instructions.get("data"),
            truncate_dim=self.dimensionality, batch_size=batch,
        )

    def loadmodel(self, path: str | None) -> EmbeddingGemma:
        kwargs = dict(self.config.get("vectors") or {})
        if self.config.get("maxlength"):
            kwargs.setdefault("max_seq_length", self.config["maxlength"])
        return load_model(path or DEFAULT_MODEL, kwargs)

    def prepare(self, data: Any, category: str | None = None) -> Any:
        # prompts (the default ones or ``instructions``) are added by the encoder, not prepended here
        return self.tokens(data)

    def encode(self, data: list[str], category: str | None = None) -> Any:
        if category in (None, "query"):
            return self.encoder.embed_queries(data)
        if category == "data":
            return self.encoder.embed_documents(data)
        raise ValueError(f"unknown txtai category {category!r}: expected 'query' or 'data'")

    @property
    def dimension(self) -> int:
        """Width of the vectors this method produces (the Matryoshka width when ``dimensionality`` is set)."""
        return self.encoder.dimension
