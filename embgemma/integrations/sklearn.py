"""scikit-learn: EmbeddingGemma as a text transformer for pipelines.

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.cluster import KMeans
    >>> from embgemma.sklearn import EmbeddingGemmaVectorizer
    >>> pipe = make_pipeline(EmbeddingGemmaVectorizer("google/embeddinggemma-300m"), KMeans(8))
    >>> labels = pipe.fit_predict(texts)

Input is a 1-D iterable of strings (a list, a NumPy array of str, a pandas Series), as for
``TfidfVectorizer``; the output is ``float32 (n_texts, dim)``. The default prompt is the model's
``Clustering`` task prompt; use ``prompt_name="Classification"`` for classifiers; prompts, their
default and batching are the model's own (``EmbeddingGemma.encode``). The fitted model is
not pickled: an unpickled (or cloned and refitted) vectorizer loads it again on first use, and
vectorizers with the same settings in one process share one loaded model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("embgemma.sklearn needs scikit-learn: pip install \"embgemma[sklearn]\"") from e

from ..model import EmbeddingGemma
from ..prompts import resolve_prompt

_CACHE: dict[tuple, EmbeddingGemma] = {}
_CACHE_LOCK = threading.Lock()


def _load(model: Any, threads: int | None, dtype: str | None) -> EmbeddingGemma:
    if isinstance(model, EmbeddingGemma):
        return model
    key = (str(model), threads, dtype)
    with _CACHE_LOCK:
        m = _CACHE.get(key)
        if m is None:
            m = _CACHE[key] = EmbeddingGemma(model, threads=threads, dtype=dtype)
        return m


def _texts(X: Any) -> list[str]:
    if isinstance(X, (str, bytes)):
        raise ValueError("Iterable over raw text documents expected, string object received.")
    if hasattr(X, "ndim") and getattr(X, "ndim") == 2:
        if X.shape[1] != 1:
            raise ValueError(f"expected a 1-D sequence of texts (or one column), got shape {X.shape}")
        X = np.asarray(X).ravel()
    if not isinstance(X, Iterable):
        raise ValueError(f"expected an iterable of texts, got {type(X).__name__}")
    out = list(X)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"text {i} is {type(t).__name__}, not str")
    return out


class EmbeddingGemmaVectorizer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Texts to EmbeddingGemma embeddings.

    Args:
        model: a model folder, GGUF file, Ollama name or Hugging Face id (or a loaded ``EmbeddingGemma``).
        prompt_name: task prompt (default ``"Clustering"``); ``prompt`` gives a literal one instead.
        truncate_dim: Matryoshka width (768, 512, 256, 128); vectors are re-normalized.
        normalize: L2-normalize the output.
        batch_size: texts per engine call; default None: the model's token-budget batching (as
            ``EmbeddingGemma.encode``).
        threads, dtype: as for ``EmbeddingGemma``.
    """

    def __init__(self, model: Any = "google/embeddinggemma-300m", *, prompt_name: str | None = "Clustering",
                 prompt: str | None = None, truncate_dim: int | None = None, normalize: bool = True,
                 batch_size: int | None = None, threads: int | None = None, dtype: str | None = None) -> None:
        self.model = model
        self.prompt_name = prompt_name
        self.prompt = prompt
        self.truncate_dim = truncate_dim
        self.normalize = normalize
        self.batch_size = batch_size
        self.threads = threads
        self.dtype = dtype

    def fit(self, X: Any, y: Any = None) -> EmbeddingGemmaVectorizer:
        """Loads the model (nothing is learned from X); checks X is a sequence of texts."""
        _texts(X)
        m = _load(self.model, self.threads, self.dtype)
        if self.truncate_dim is not None:
            m.check_dim(self.truncate_dim)
        resolve_prompt(m.prompts, self.prompt_name, self.prompt, m.default_prompt_name)  # the model's table decides
        self.model_ = m
        self._n_features_out = int(self.truncate_dim or m.get_sentence_embedding_dimension())
        return self

    def transform(self, X: Any) -> np.ndarray:
        """float32 embeddings, one row per text, in order."""
        check_is_fitted(self, "_n_features_out")
        if getattr(self, "model_", None) is None:  # unpickled: load lazily
            self.model_ = _load(self.model, self.threads, self.dtype)
        texts = _texts(X)
        return self.model_.encode(texts, prompt_name=self.prompt_name, prompt=self.prompt, batch_size=self.batch_size,
                                  normalize_embeddings=self.normalize, truncate_dim=self.truncate_dim,
                                  show_progress_bar=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(state.get("model_"), EmbeddingGemma):
            state["model_"] = None  # the C model is not pickled; reloaded from `model` on use
        if isinstance(state.get("model"), EmbeddingGemma):
            state["model"] = str(state["model"].model_path)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"X_types": ["string"], "preserves_dtype": [np.float32]}
