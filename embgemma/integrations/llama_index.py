"""LlamaIndex: EmbeddingGemma as a ``BaseEmbedding``.

    >>> from llama_index.core import Settings, VectorStoreIndex
    >>> from embgemma.integrations.llama_index import EmbeddingGemmaEmbedding
    >>> Settings.embed_model = EmbeddingGemmaEmbedding(model_name="google/embeddinggemma-300m")

Queries get the model's ``query`` prompt and texts (nodes) its ``document`` prompt by default;
batches go to the engine whole (``embed_batch_size`` texts per call); the async methods run in a
worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "embgemma.integrations.llama_index needs llama-index-core: pip install \"embgemma[llama-index]\""
    ) from e

from ..model import EmbeddingGemma

Embedding = list[float]


class EmbeddingGemmaEmbedding(BaseEmbedding):
    """LlamaIndex embeddings computed by embgemma (see ``EmbeddingGemma`` for ``model_name``)."""

    model_name: str = Field(default="google/embeddinggemma-300m", description="folder, GGUF, Ollama name or hub id")
    embed_batch_size: int = Field(default=32, gt=0, le=2048, description="texts per engine call")
    query_prompt_name: Optional[str] = Field(default="query", description="prompt for queries")
    text_prompt_name: Optional[str] = Field(default="document", description="prompt for texts / nodes")
    query_instruction: Optional[str] = Field(default=None, description="a literal query prompt (wins)")
    text_instruction: Optional[str] = Field(default=None, description="a literal text prompt (wins)")
    truncate_dim: Optional[int] = Field(default=None, description="Matryoshka width")
    threads: Optional[int] = Field(default=None, description="engine threads per call")
    dtype: Optional[str] = Field(default=None, description="weights mode, see EmbeddingGemma")
    cache_folder: Optional[str] = Field(default=None, description="Hugging Face cache")

    _model: EmbeddingGemma = PrivateAttr()

    def __init__(self, model_name: str = "google/embeddinggemma-300m", model: EmbeddingGemma | None = None,
                 **kwargs: Any) -> None:
        if model is not None:
            model_name = str(model.model_path)
        super().__init__(model_name=model_name, **kwargs)
        self._model = model if model is not None else EmbeddingGemma(
            self.model_name, truncate_dim=self.truncate_dim, threads=self.threads, dtype=self.dtype,
            cache_folder=self.cache_folder,
        )

    @classmethod
    def class_name(cls) -> str:
        return "EmbeddingGemmaEmbedding"

    def _kw(self, query: bool) -> dict[str, Any]:
        literal = self.query_instruction if query else self.text_instruction
        name = self.query_prompt_name if query else self.text_prompt_name
        if literal is not None:
            return {"prompt": literal}
        return {"prompt_name": name} if name is not None else {"prompt": ""}

    def _embed(self, texts: list[str], query: bool) -> list[Embedding]:
        if not texts:
            return []
        return self._model.encode(list(texts), batch_size=self.embed_batch_size, show_progress_bar=False,
                                  **self._kw(query)).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], True)[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts, False)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
