"""LlamaIndex: EmbeddingGemma as a ``BaseEmbedding``.

    >>> from llama_index.core import Settings, VectorStoreIndex
    >>> from embgemma.integrations.llama_index import EmbeddingGemmaEmbedding
    >>> Settings.embed_model = EmbeddingGemmaEmbedding(model_name="google/embeddinggemma-300m")

Queries get the model's ``query`` prompt and texts (nodes) its ``document`` prompt by default;
LlamaIndex hands over ``embed_batch_size`` texts per call and the engine batches them itself; the
async methods run in a worker thread. Unknown keyword arguments are refused by name.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Optional

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "embgemma.integrations.llama_index needs llama-index-core: pip install \"embgemma[llama-index]\""
    ) from e

from ..model import EmbeddingGemma
from ._common import DEFAULT_MODEL, Encoder, refuse_unknown

Embedding = list[float]


class EmbeddingGemmaEmbedding(BaseEmbedding):
    """LlamaIndex embeddings computed by embgemma.

    ``model_name`` is a model folder, GGUF file, Ollama name or Hugging Face id (see ``EmbeddingGemma``);
    ``model=`` takes the same, or an already loaded ``EmbeddingGemma`` to share.
    """

    model_name: str = Field(default=DEFAULT_MODEL, description="folder, GGUF, Ollama name or hub id")
    embed_batch_size: int = Field(default=32, gt=0, le=2048, description="texts LlamaIndex passes per call")
    query_prompt_name: Optional[str] = Field(default="query", description="prompt for queries")
    text_prompt_name: Optional[str] = Field(default="document", description="prompt for texts / nodes")
    query_instruction: Optional[str] = Field(default=None, description="a literal query prompt (wins)")
    text_instruction: Optional[str] = Field(default=None, description="a literal text prompt (wins)")
    truncate_dim: Optional[int] = Field(default=None, description="Matryoshka width")
    threads: Optional[int] = Field(default=None, description="engine threads per call")
    dtype: Optional[str] = Field(default=None, description="weights mode, see EmbeddingGemma")
    cache_folder: Optional[str] = Field(default=None, description="Hugging Face cache")

    model_config = ConfigDict(extra="forbid")

    _encoder: Encoder = PrivateAttr()

    def __init__(self, model_name: Optional[str] = None,
                 model: EmbeddingGemma | str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        refuse_unknown(type(self).__name__, kwargs, ["model_name", "model", *type(self).model_fields])
        if model is not None and model_name is not None:
            raise ValueError("give model_name or model, not both (model also takes a path or name)")
        source = model if model is not None else (model_name if model_name is not None else DEFAULT_MODEL)
        if isinstance(source, EmbeddingGemma):
            name = str(source.model_path)
        elif isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
        else:
            raise TypeError(
                "model must be a model folder, GGUF file, Ollama name or Hugging Face id (a str or path), or a "
                f"loaded embgemma.EmbeddingGemma; got {type(source).__name__}"
            )
        super().__init__(model_name=name, **kwargs)
        loaded = isinstance(source, EmbeddingGemma)
        self._encoder = Encoder(
            source if loaded else name,
            query_prompt_name=self.query_prompt_name, document_prompt_name=self.text_prompt_name,
            query_prompt=self.query_instruction, document_prompt=self.text_instruction,
            truncate_dim=self.truncate_dim,
            model_kwargs=None if loaded else {"threads": self.threads, "dtype": self.dtype,
                                              "cache_folder": self.cache_folder},
        )

    @classmethod
    def class_name(cls) -> str:
        return "EmbeddingGemmaEmbedding"

    @property
    def model(self) -> EmbeddingGemma:
        """The loaded model (shared with other integration objects loading the same one)."""
        return self._encoder.model

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.embed_queries([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encoder.embed_documents([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encoder.embed_documents(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
