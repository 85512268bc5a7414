"""Chroma: EmbeddingGemma as a Chroma embedding function.

    >>> import chromadb
    >>> from embgemma.integrations.chroma import EmbGemmaEmbeddingFunction
    >>> client = chromadb.PersistentClient(path="chroma-db")
    >>> docs = client.create_collection("docs", embedding_function=EmbGemmaEmbeddingFunction())
    >>> docs.add(ids=["1", "2"], documents=["Mars is red.", "Venus is hot."])   # document prompt
    >>> docs.query(query_texts=["Which planet is red?"], n_results=1)            # query prompt

Chroma calls the function for documents and its ``embed_query`` for ``query_texts``: documents get
the model's document prompt, queries its query prompt. The function is registered under the name
``"embgemma"`` and persists its settings in the collection, so once this module is imported a
reopened collection (``client.get_collection("docs")``) embeds with the same model, prompts and
width without being told again (the model loads on the first embedding, not on reopening).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("embgemma.integrations.chroma needs chromadb: pip install \"embgemma[chroma]\"") from e

from ..model import EmbeddingGemma
from ._common import DEFAULT_MODEL, Encoder

# persisted settings: (type check, what they must be)
_CONFIG: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a model folder, GGUF file, Ollama name or Hugging Face id"),
    "query_prompt_name": ((str, type(None)), "a prompt name or null"),
    "document_prompt_name": ((str, type(None)), "a prompt name or null"),
    "query_prompt": ((str, type(None)), "a literal prompt or null"),
    "document_prompt": ((str, type(None)), "a literal prompt or null"),
    "truncate_dim": ((int, type(None)), "a Matryoshka width or null"),
    "batch_size": ((int, type(None)), "a positive integer or null"),
    "model_kwargs": ((dict,), "EmbeddingGemma keyword arguments"),
}
# settings that change the vectors: a collection's stored embeddings were made with them
_VECTOR_SETTINGS = ("query_prompt_name", "document_prompt_name", "query_prompt", "document_prompt", "truncate_dim")


@register_embedding_function
class EmbGemmaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embeddings computed by embgemma.

    Args:
        model: a model folder, GGUF file, Ollama name or Hugging Face id, or a loaded ``EmbeddingGemma``
            (persisted as its path).
        query_prompt_name / document_prompt_name: the model's prompts for ``embed_query`` and for
            documents (defaults ``"query"`` / ``"document"``); ``query_prompt`` / ``document_prompt``
            give literal ones.
        truncate_dim: Matryoshka width (768, 512, 256, 128); the vectors are re-normalized.
        batch_size: texts per engine call (default: the engine's choice).
        dtype, threads, max_seq_length, cache_folder: as for ``EmbeddingGemma``;
        model_kwargs: any other ``EmbeddingGemma`` argument. All are persisted with the collection.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | EmbeddingGemma = DEFAULT_MODEL,
        *,
        query_prompt_name: str | None = "query",
        document_prompt_name: str | None = "document",
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        truncate_dim: int | None = None,
        batch_size: int | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        max_seq_length: int | None = None,
        cache_folder: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        _lazy: bool = False,
    ) -> None:
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(
                f"model_kwargs must be a dict of EmbeddingGemma arguments, got {type(model_kwargs).__name__}"
            )
        loading = {"dtype": dtype, "threads": threads, "max_seq_length": max_seq_length,
                   "cache_folder": cache_folder, **(model_kwargs or {})}
        if isinstance(model, EmbeddingGemma) and all(v is None for v in loading.values()):
            loading = None
        self._encoder = Encoder(
            model, query_prompt_name=query_prompt_name, document_prompt_name=document_prompt_name,
            query_prompt=query_prompt, document_prompt=document_prompt, truncate_dim=truncate_dim,
            batch_size=batch_size, model_kwargs=loading, lazy=_lazy,
        )

    def __call__(self, input: Documents) -> Embeddings:
        """Embed documents (``add`` / ``upsert`` / ``update``) with the document prompt."""
        return list(self._encoder.embed_documents(_texts(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        """Embed ``query_texts`` with the query prompt."""
        return list(self._encoder.embed_queries(_texts(input)))

    @property
    def model(self) -> EmbeddingGemma:
        return self._encoder.model

    @property
    def dimension(self) -> int:
        """Width of the vectors (a collection's embedding dimension)."""
        return self._encoder.dimension

    @staticmethod
    def name() -> str:
        return "embgemma"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]  # unit-length vectors: all three rank alike

    def max_tokens(self) -> int:
        return self._encoder.model.max_seq_length

    def get_config(self) -> dict[str, Any]:
        e = self._encoder
        return {
            "model": e.model_name, "query_prompt_name": e.query_prompt_name,
            "document_prompt_name": e.document_prompt_name, "query_prompt": e.query_prompt,
            "document_prompt": e.document_prompt, "truncate_dim": e.truncate_dim, "batch_size": e.batch_size,
            "model_kwargs": dict(e.model_kwargs),
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EmbGemmaEmbeddingFunction:
        EmbGemmaEmbeddingFunction.validate_config(config)
        cfg = dict(config)
        # reopening a collection does not load the model; the first embedding does
        return EmbGemmaEmbeddingFunction(cfg.pop("model", DEFAULT_MODEL), _lazy=True, **cfg)

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config, dict):
            raise ValueError(f"embgemma embedding function config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - set(_CONFIG))
        if unknown:
            raise ValueError(
                f"unknown keys {unknown} in an embgemma embedding function config; known: {sorted(_CONFIG)}"
            )
        for key, value in config.items():
            types, what = _CONFIG[key]
            if not isinstance(value, types) or isinstance(value, bool):
                raise ValueError(f"embgemma embedding function config: {key} must be {what}, got {value!r}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        # the model path may move (as for sentence-transformers); what shapes the vectors may not change
        changed = [k for k in _VECTOR_SETTINGS if k in new_config and new_config[k] != old_config.get(k)]
        if changed:
            raise ValueError(
                f"cannot change {', '.join(changed)} of a collection's embgemma embedding function: its stored "
                "embeddings were made with the old value (create a new collection instead)"
            )


def _texts(input: Any) -> list[str]:
    if isinstance(input, str):
        return [input]  # Chroma itself wraps a single string; be as forgiving when called directly
    if isinstance(input, np.ndarray):
        input = input.tolist()
    return list(input)
