"""The one place where a framework's calls become EmbeddingGemma calls.

Every integration holds an ``Encoder``: queries go to ``encode_query``, documents to
``encode_document`` (with their titles when the framework knows them), with the Matryoshka width,
normalization, batch size and progress bar decided here. No integration builds prompts or
batches itself.

Models given by name or path are loaded once per process and setting: integration objects asking
for the same model with the same loading options (a Haystack text embedder and document embedder,
a Chroma collection reopened, a txtai index reloaded) share one ``EmbeddingGemma`` for as long as
one of them holds it. The model is immutable after loading and safe to call from many threads.
"""

from __future__ import annotations

import difflib
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..model import EmbeddingGemma
from ..prompts import DOCUMENT_PROMPT_NAMES, document_prompt_with_title

DEFAULT_MODEL = "google/embeddinggemma-300m"

_LOADED: weakref.WeakValueDictionary[tuple, EmbeddingGemma] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def _cache_key(name: str, model_kwargs: dict[str, Any]) -> tuple:
    return (name, tuple(sorted((k, repr(v)) for k, v in model_kwargs.items())))


def load_model(name: str, model_kwargs: dict[str, Any]) -> EmbeddingGemma:
    """The loaded model for ``name`` and these ``EmbeddingGemma`` keyword arguments, shared while in use."""
    key = _cache_key(name, model_kwargs)
    with _LOCK:
        model = _LOADED.get(key)
        if model is None:
            model = EmbeddingGemma(name, **model_kwargs)
            _LOADED[key] = model
        return model


def refuse_unknown(owner: str, given: Iterable[str], known: Iterable[str]) -> None:
    """TypeError naming each unknown keyword argument (and the closest known one), so a misspelled
    argument is never silently ignored."""
    known = sorted(known)
    unknown = [k for k in given if k not in known]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, known, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(f"{owner} got unknown keyword argument(s) {', '.join(hints)}; it takes: {', '.join(known)}")


def _check_positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _check_prompt(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    return value


class Encoder:
    """An EmbeddingGemma model and how a framework's query and document calls use it.

    Args:
        model: a model folder, GGUF file, Ollama name or Hugging Face id (loaded through the shared
            cache), or an already loaded ``EmbeddingGemma`` (used as is).
        query_prompt_name / document_prompt_name: keys of the model's prompt table; the defaults
            ``"query"`` / ``"document"`` are what ``encode_query`` / ``encode_document`` use. None
            means no prompt.
        query_prompt / document_prompt: literal prompts; they win over the names.
        truncate_dim: Matryoshka width (768, 512, 256, 128 for EmbeddingGemma); default: the model's.
        normalize: L2-normalize the vectors (a truncated prefix is re-normalized).
        batch_size: texts per engine call; None leaves it to the engine.
        show_progress: a progress bar over the batches of a call.
        model_kwargs: ``EmbeddingGemma`` keyword arguments (``dtype``, ``threads``, ``max_seq_length``,
            ``cache_folder``, ...) for a model given by name; None values are dropped.
        lazy: load on first use (or ``load()``) instead of now, for frameworks with a warm-up step.
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
        normalize: bool = True,
        batch_size: int | None = None,
        show_progress: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        lazy: bool = False,
    ) -> None:
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(
                f"model_kwargs must be a dict of EmbeddingGemma arguments, got {type(model_kwargs).__name__}"
            )
        kwargs = {k: v for k, v in (model_kwargs or {}).items() if v is not None}
        self._model: EmbeddingGemma | None
        if isinstance(model, EmbeddingGemma):
            if kwargs:
                raise ValueError(
                    f"{', '.join(sorted(kwargs))} only apply when the model is loaded from a name or path; this "
                    "EmbeddingGemma is already loaded (set them when loading it, or pass its path instead)"
                )
            self._model = model
            self.model_name = str(model.model_path)
            # what reloading from model_name needs to give the same weights (a serialized config)
            self.model_kwargs: dict[str, Any] = {"dtype": model.dtype}
            if truncate_dim is None:
                truncate_dim = model.truncate_dim
            with _LOCK:  # a config built from this encoder finds this model instead of loading a second copy
                _LOADED[_cache_key(self.model_name, self.model_kwargs)] = model
        elif isinstance(model, (str, os.PathLike)):
            self._model = None
            self.model_name = os.fspath(model)
            if not self.model_name:
                raise ValueError("model must name a model folder, GGUF file, Ollama name or Hugging Face id; got ''")
            self.model_kwargs = kwargs
        else:
            raise TypeError(
                "model must be a model folder, GGUF file, Ollama name or Hugging Face id (a str or path), or a "
                f"loaded embgemma.EmbeddingGemma; got {type(model).__name__}"
            )
        self.query_prompt_name = _check_prompt("query_prompt_name", query_prompt_name)
        self.document_prompt_name = _check_prompt("document_prompt_name", document_prompt_name)
        self.query_prompt = _check_prompt("query_prompt", query_prompt)
        self.document_prompt = _check_prompt("document_prompt", document_prompt)
        self.truncate_dim = _check_positive("truncate_dim", truncate_dim)
        self.batch_size = _check_positive("batch_size", batch_size)
        self.normalize = bool(normalize)
        self.show_progress = bool(show_progress)
        if self._model is not None:
            self._check(self._model)
        elif not lazy:
            self.load()

    # ------------------------------------------------------------------ model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> EmbeddingGemma:
        """The model, loaded now if it was not yet (the frameworks' warm-up)."""
        if self._model is None:
            model = load_model(self.model_name, self.model_kwargs)
            self._check(model)
            self._model = model
        return self._model

    @property
    def model(self) -> EmbeddingGemma:
        return self.load()

    @property
    def dimension(self) -> int:
        """Width of the vectors this encoder returns."""
        return self.truncate_dim or self.load().get_sentence_embedding_dimension()

    def _check(self, model: EmbeddingGemma) -> None:
        """Settings the model cannot honour fail at load, not at the first call."""
        full = model.info["output_dim"]
        if self.truncate_dim is not None and self.truncate_dim > full:
            raise ValueError(
                f"truncate_dim={self.truncate_dim} is wider than the model's {full}-wide output; EmbeddingGemma "
                "was trained for 768, 512, 256 and 128"
            )
        for arg, name, default in (("query_prompt_name", self.query_prompt_name, "query"),
                                   ("document_prompt_name", self.document_prompt_name, "document")):
            # the defaults are what encode_query / encode_document pick, also for a model without them
            if name is not None and name != default and name not in model.prompts:
                raise ValueError(
                    f"{arg}={name!r} is not in this model's prompts: {', '.join(map(repr, model.prompts))}"
                )

    # ------------------------------------------------------------------ prompts

    @property
    def document_prompt_text(self) -> str:
        """The prompt documents get (as ``encode_document`` chooses it)."""
        if self.document_prompt is not None:
            return self.document_prompt
        if self.document_prompt_name is None:
            return ""
        prompts = self.load().prompts
        if self.document_prompt_name == "document":
            name = next((n for n in DOCUMENT_PROMPT_NAMES if n in prompts), None)
            return prompts[name] if name is not None else ""
        return prompts[self.document_prompt_name]

    @property
    def query_prompt_text(self) -> str:
        """The prompt queries get (as ``encode_query`` chooses it)."""
        if self.query_prompt is not None:
            return self.query_prompt
        if self.query_prompt_name is None:
            return ""
        return self.load().prompts.get(self.query_prompt_name, "")

    @property
    def titles_apply(self) -> bool:
        """True when documents get the model card's ``title: none | text: `` prompt, whose ``none`` a
        document's title replaces."""
        return self.document_prompt_text == document_prompt_with_title(None)

    # ------------------------------------------------------------------ encoding

    def _kwargs(self, literal: str | None, name: str | None, default_name: str) -> dict[str, Any]:
        kw: dict[str, Any] = {"normalize_embeddings": self.normalize, "show_progress_bar": self.show_progress}
        if self.truncate_dim is not None:
            kw["truncate_dim"] = self.truncate_dim
        if self.batch_size is not None:  # else the engine's own default
            kw["batch_size"] = self.batch_size
        if literal is not None:
            kw["prompt"] = literal
        elif name is None:
            kw["prompt"] = ""
        elif name != default_name:
            kw["prompt_name"] = name
        return kw

    @staticmethod
    def _texts(texts: Any, what: str) -> list[str]:
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"expected a list of {what} (strings), got a single {type(texts).__name__}")
        try:
            return list(texts)
        except TypeError:
            raise TypeError(f"expected a list of {what} (strings), got {type(texts).__name__}") from None

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dimension)``: the texts with the query prompt."""
        texts = self._texts(texts, "queries")
        return self.load().encode_query(texts, **self._kwargs(self.query_prompt, self.query_prompt_name, "query"))

    def embed_documents(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> np.ndarray:
        """float32 ``(len(texts), dimension)``: the texts with the document prompt; a title (one per text,
        None for none) goes into the model card's ``title: {title} | text: `` prompt."""
        texts = self._texts(texts, "documents")
        model = self.load()
        kw = self._kwargs(self.document_prompt, self.document_prompt_name, "document")
        if titles is not None:
            titles = self._texts(titles, "titles")
            if len(titles) != len(texts):
                raise ValueError(
                    f"{len(titles)} titles for {len(texts)} documents; give one per document (None: no title)"
                )
            if any(t is not None for t in titles):
                if not self.titles_apply:
                    raise ValueError(
                        "titles go into the model's document prompt ('title: {title} | text: '); this encoder's "
                        f"document prompt is {self.document_prompt_text!r}, which has no place for one"
                    )
                kw.pop("prompt", None)
                kw.pop("prompt_name", None)
                return model.encode_document(texts, titles=titles, **kw)
        return model.encode_document(texts, **kw)
