"""Haystack 2+: a text embedder and a document embedder as pipeline components.

    >>> from embgemma.integrations.haystack import EmbeddingGemmaDocumentEmbedder, EmbeddingGemmaTextEmbedder
    >>> doc_embedder = EmbeddingGemmaDocumentEmbedder("google/embeddinggemma-300m")   # document prompt
    >>> text_embedder = EmbeddingGemmaTextEmbedder("google/embeddinggemma-300m")      # query prompt

The text embedder embeds queries with the model's ``query`` prompt; the document embedder embeds
documents with its ``document`` prompt, carrying each document's title (``meta["title"]`` by
default) into the model card's ``title: {title} | text: `` prompt. Both load the model in
``warm_up()`` (or on first ``run()``), share one loaded model when they name the same one, and
serialize with ``to_dict`` / ``from_dict`` like Haystack's own embedders.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("embgemma.integrations.haystack needs haystack-ai: pip install \"embgemma[haystack]\"") from e

from ..model import EmbeddingGemma
from ._common import DEFAULT_MODEL, Encoder

ModelArg = str | os.PathLike[str] | EmbeddingGemma


def _model_kwargs(threads: int | None, dtype: str | None, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict of EmbeddingGemma arguments, got {type(model_kwargs).__name__}")
    return {"threads": threads, "dtype": dtype, **(model_kwargs or {})}


class _Base:
    """What both components share: the encoder, warm-up and the serialized loading options."""

    _encoder: Encoder

    def _init_model(self, model: ModelArg, threads: int | None, dtype: str | None,
                    model_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        loading = _model_kwargs(threads, dtype, model_kwargs)
        if isinstance(model, EmbeddingGemma):
            if any(v is not None for v in loading.values()):
                raise ValueError("threads, dtype and model_kwargs apply when the model is loaded from a name or "
                                 "path; this EmbeddingGemma is already loaded")
            return None
        return loading

    def warm_up(self) -> None:
        """Load the model (Haystack pipelines call this before the first run)."""
        self._encoder.load()

    @property
    def model(self) -> EmbeddingGemma:
        """The loaded model (loads it if ``warm_up`` has not run)."""
        return self._encoder.model

    @property
    def dimension(self) -> int:
        """Width of the embeddings this component produces (for a document store's ``embedding_dim``)."""
        return self._encoder.dimension

    def _loading_dict(self) -> dict[str, Any]:
        # a component built around a loaded model serializes as its path (and dtype), which rebuilds it
        kw = dict(self._encoder.model_kwargs)
        threads, dtype = kw.pop("threads", None), kw.pop("dtype", None)
        return {"model": self._encoder.model_name, "threads": threads, "dtype": dtype, "model_kwargs": kw or None}

    def _common_dict(self) -> dict[str, Any]:
        e = self._encoder
        return {"truncate_dim": e.truncate_dim, "normalize_embeddings": e.normalize, "batch_size": e.batch_size,
                "progress_bar": e.show_progress, "prefix": self.prefix, "suffix": self.suffix}


@component
class EmbeddingGemmaTextEmbedder(_Base):
    """Embeds a query string with EmbeddingGemma, for an embedding retriever.

    Args:
        model: a model folder, GGUF file, Ollama name or Hugging Face id, or a loaded ``EmbeddingGemma``.
        prompt_name: the model's prompt for the text (default ``"query"``); ``prompt`` gives a literal one.
        prefix / suffix: text added around the input, inside the prompt (``prompt + prefix + text + suffix``).
        truncate_dim: Matryoshka width (768, 512, 256, 128); the vectors are re-normalized.
        normalize_embeddings: L2-normalize the embedding (EmbeddingGemma's are unit length anyway).
        batch_size: texts per engine call (default: the engine's choice).
        progress_bar: show a progress bar.
        threads, dtype: as for ``EmbeddingGemma``; model_kwargs: any other ``EmbeddingGemma`` argument.
    """

    def __init__(
        self,
        model: ModelArg = DEFAULT_MODEL,
        *,
        prompt_name: str | None = "query",
        prompt: str | None = None,
        prefix: str = "",
        suffix: str = "",
        truncate_dim: int | None = None,
        normalize_embeddings: bool = True,
        batch_size: int | None = None,
        progress_bar: bool = False,
        threads: int | None = None,
        dtype: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        loading = self._init_model(model, threads, dtype, model_kwargs)
        self.prefix, self.suffix = prefix, suffix
        self._encoder = Encoder(
            model, query_prompt_name=prompt_name, query_prompt=prompt, truncate_dim=truncate_dim,
            normalize=normalize_embeddings, batch_size=batch_size, show_progress=progress_bar,
            model_kwargs=loading, lazy=True,
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialize the component (a loaded model is written as its path)."""
        e = self._encoder
        return default_to_dict(self, **self._loading_dict(), prompt_name=e.query_prompt_name, prompt=e.query_prompt,
                               **self._common_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingGemmaTextEmbedder:
        return default_from_dict(cls, data)

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        """Embed one text with the query prompt.

        :returns: ``{"embedding": list[float]}``.
        """
        if not isinstance(text, str):
            raise TypeError(
                f"EmbeddingGemmaTextEmbedder takes a string, got {type(text).__name__}; to embed a list of "
                "Documents use EmbeddingGemmaDocumentEmbedder"
            )
        return {"embedding": self._encoder.embed_queries([self.prefix + text + self.suffix])[0].tolist()}


@component
class EmbeddingGemmaDocumentEmbedder(_Base):
    """Embeds Documents with EmbeddingGemma; returns them with ``embedding`` set.

    Args:
        model: a model folder, GGUF file, Ollama name or Hugging Face id, or a loaded ``EmbeddingGemma``.
        prompt_name: the model's prompt for documents (default ``"document"``: ``title: none | text: ``);
            ``prompt`` gives a literal one.
        title_meta_key: the ``meta`` key holding a document's title, which replaces ``none`` in the
            document prompt (``title: {title} | text: ``); None never uses titles. Titles apply only with
            that prompt; with another prompt they are not embedded.
        meta_fields_to_embed: ``meta`` fields whose values are put before the content, joined with
            ``embedding_separator``, as Haystack's own document embedders do.
        prefix / suffix: text added around each document's text, inside the prompt.
        truncate_dim, normalize_embeddings, batch_size, progress_bar, threads, dtype, model_kwargs: as
            for ``EmbeddingGemmaTextEmbedder``.
    """

    def __init__(
        self,
        model: ModelArg = DEFAULT_MODEL,
        *,
        prompt_name: str | None = "document",
        prompt: str | None = None,
        title_meta_key: str | None = "title",
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        prefix: str = "",
        suffix: str = "",
        truncate_dim: int | None = None,
        normalize_embeddings: bool = True,
        batch_size: int | None = None,
        progress_bar: bool = True,
        threads: int | None = None,
        dtype: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        loading = self._init_model(model, threads, dtype, model_kwargs)
        if meta_fields_to_embed is not None and (
            isinstance(meta_fields_to_embed, str) or not all(isinstance(k, str) for k in meta_fields_to_embed)
        ):
            raise TypeError(f"meta_fields_to_embed must be a list of meta keys (str), got {meta_fields_to_embed!r}")
        if title_meta_key is not None and not isinstance(title_meta_key, str):
            raise TypeError(f"title_meta_key must be a str or None, got {type(title_meta_key).__name__}")
        self.title_meta_key = title_meta_key
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.prefix, self.suffix = prefix, suffix
        self._encoder = Encoder(
            model, document_prompt_name=prompt_name, document_prompt=prompt, truncate_dim=truncate_dim,
            normalize=normalize_embeddings, batch_size=batch_size, show_progress=progress_bar,
            model_kwargs=loading, lazy=True,
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialize the component (a loaded model is written as its path)."""
        e = self._encoder
        return default_to_dict(
            self, **self._loading_dict(), prompt_name=e.document_prompt_name, prompt=e.document_prompt,
            title_meta_key=self.title_meta_key, meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator, **self._common_dict(),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingGemmaDocumentEmbedder:
        return default_from_dict(cls, data)

    def _text(self, doc: Document) -> str:
        values = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
        return self.prefix + self.embedding_separator.join([*values, doc.content or ""]) + self.suffix

    def _title(self, doc: Document) -> str | None:
        if self.title_meta_key is None:
            return None
        title = doc.meta.get(self.title_meta_key)
        title = None if title is None else str(title).strip()
        return title or None

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed documents with the document prompt (and their titles).

        :returns: ``{"documents": list[Document]}``: new Documents with ``embedding`` set, in input order.
        """
        if not isinstance(documents, list) or any(not isinstance(d, Document) for d in documents):
            raise TypeError(
                "EmbeddingGemmaDocumentEmbedder takes a list of Documents; to embed a string use "
                "EmbeddingGemmaTextEmbedder"
            )
        if not documents:
            return {"documents": []}
        texts = [self._text(d) for d in documents]
        titles = None
        if self.title_meta_key is not None and self._encoder.titles_apply:
            titles = [self._title(d) for d in documents]
        vectors = self._encoder.embed_documents(texts, titles=titles)
        return {"documents": [replace(d, embedding=v.tolist()) for d, v in zip(documents, vectors)]}
