"""LangChain: EmbeddingGemma as a ``langchain_core.embeddings.Embeddings``.

    >>> from embgemma.integrations.langchain import EmbeddingGemmaEmbeddings
    >>> emb = EmbeddingGemmaEmbeddings(model="google/embeddinggemma-300m")
    >>> vectors = emb.embed_documents(["Mars is red.", "Venus is hot."])  # document prompt
    >>> q = emb.embed_query("Which planet is red?")                        # query prompt

Unlike a generic sentence-transformers wrapper, the prompts are right by default: documents get
the model's ``document`` prompt, queries its ``query`` prompt. The async methods run the engine in
a worker thread (it releases the GIL), so they never block the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from langchain_core.embeddings import Embeddings
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "embgemma.integrations.langchain needs langchain-core: pip install \"embgemma[langchain]\""
    ) from e

from ..model import EmbeddingGemma
from ._common import DEFAULT_MODEL, Encoder


class EmbeddingGemmaEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings computed by embgemma.

    Args:
        model: a model folder, GGUF file, Ollama name or Hugging Face id (see ``EmbeddingGemma``).
        query_prompt_name / document_prompt_name: prompts (keys of the model's prompt table) for
            ``embed_query`` and ``embed_documents``; ``query_prompt`` / ``document_prompt`` give a
            literal prompt instead.
        truncate_dim: Matryoshka width (768, 512, 256, 128); vectors are re-normalized.
        batch_size: texts per engine call (default: the engine's choice).
        threads, dtype, cache_folder, max_seq_length: as for ``EmbeddingGemma``.
        model_kwargs: any other ``EmbeddingGemma`` keyword arguments.
        show_progress: a progress bar on long ``embed_documents`` calls.
    """

    model_name: str = Field(default=DEFAULT_MODEL, alias="model")
    query_prompt_name: str | None = "query"
    document_prompt_name: str | None = "document"
    query_prompt: str | None = None
    document_prompt: str | None = None
    truncate_dim: int | None = None
    batch_size: int | None = Field(default=None, gt=0)
    threads: int | None = None
    dtype: str | None = None
    cache_folder: str | None = None
    max_seq_length: int | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    show_progress: bool = False

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    _encoder: Encoder = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        client = data.pop("client", None)
        super().__init__(**data)
        if client is not None and not isinstance(client, EmbeddingGemma):
            raise TypeError(f"client must be an embgemma.EmbeddingGemma, got {type(client).__name__}")
        loading = {"threads": self.threads, "dtype": self.dtype, "cache_folder": self.cache_folder,
                   "max_seq_length": self.max_seq_length, **self.model_kwargs}
        self._encoder = Encoder(
            client if client is not None else self.model_name,
            query_prompt_name=self.query_prompt_name, document_prompt_name=self.document_prompt_name,
            query_prompt=self.query_prompt, document_prompt=self.document_prompt, truncate_dim=self.truncate_dim,
            batch_size=self.batch_size, show_progress=self.show_progress,
            model_kwargs=None if client is not None else loading,
        )

    @classmethod
    def from_model(cls, model: EmbeddingGemma, **kwargs: Any) -> EmbeddingGemmaEmbeddings:
        """Wrap an already loaded model (no second copy of the weights)."""
        return cls(client=model, model=str(model.model_path), **kwargs)

    @property
    def client(self) -> EmbeddingGemma:
        return self._encoder.model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with the document prompt; one list of floats per text."""
        return self._encoder.embed_documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the query prompt."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes a string, got {type(text).__name__}")
        return self._encoder.embed_queries([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
