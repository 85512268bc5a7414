"""``embgemma.sklearn``: kept importable; the vectorizer lives in ``embgemma.integrations.sklearn``."""

from .integrations.sklearn import EmbeddingGemmaVectorizer

__all__ = ["EmbeddingGemmaVectorizer"]
