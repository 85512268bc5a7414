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


class EmbeddingGemmaEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings computed by embgemma.

    Args:
        model: a model folder, GGUF file, Ollama name or Hugging Face id (see ``EmbeddingGemma``).
        query_prompt_name / document_prompt_name: prompts (keys of the model's prompt table) for
            ``embed_query`` and ``embed_documents``; ``query_prompt`` / ``document_prompt`` give a
            literal prompt instead.
        truncate_dim: Matryoshka width (768, 512, 256, 128); vectors are re-normalized.
        batch_size, threads, dtype, cache_folder, max_seq_length: as for ``EmbeddingGemma``.
        model_kwargs: any other ``EmbeddingGemma`` keyword arguments.
        show_progress: a progress bar on long ``embed_documents`` calls.
    """

    model_name: str = Field(default="google/embeddinggemma-300m", alias="model")
    query_prompt_name: str | None = "query"
    document_prompt_name: str | None = "document"
    query_prompt: str | None = None
    document_prompt: str | None = None
    truncate_dim: int | None = None
    batch_size: int = Field(default=32, gt=0)
    threads: int | None = None
    dtype: str | None = None
    cache_folder: str | None = None
    max_seq_length: int | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    show_progress: bool = False

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    _client: EmbeddingGemma = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        client = data.pop("client", None)
        super().__init__(**data)
        if client is not None:
            if not isinstance(client, EmbeddingGemma):
                raise TypeError(f"client must be an embgemma.EmbeddingGemma, got {type(client).__name__}")
            self._client = client
        else:
            self._client = EmbeddingGemma(
                self.model_name,
                truncate_dim=self.truncate_dim,
                threads=self.threads,
                dtype=self.dtype,
                cache_folder=self.cache_folder,
                max_seq_length=self.max_seq_length,
                **self.model_kwargs,
            )

    @classmethod
    def from_model(cls, model: EmbeddingGemma, **kwargs: Any) -> EmbeddingGemmaEmbeddings:
        """Wrap an already loaded model (no second copy of the weights)."""
        return cls(client=model, model=str(model.model_path), **kwargs)

    @property
    def client(self) -> EmbeddingGemma:
        return self._client

    def _encode(self, texts: list[str], prompt_name: str | None, prompt: str | None) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return []
        kw: dict[str, Any] = {"batch_size": self.batch_size, "show_progress_bar": self.show_progress}
        if prompt is not None:
            kw["prompt"] = prompt
        elif prompt_name is not None:
            kw["prompt_name"] = prompt_name
        else:
            kw["prompt"] = ""
        return self._client.encode(texts, **kw).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with the document prompt; one list of floats per text."""
        return self._encode(texts, self.document_prompt_name, self.document_prompt)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the query prompt."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes a string, got {type(text).__name__}")
        return self._encode([text], self.query_prompt_name, self.query_prompt)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
