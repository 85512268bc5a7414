"""Bad input to encode and to the constructor: each gives a result or a clear exception."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from conftest import GOLDEN_DIR
from embgemma import EmbeddingGemma


@pytest.fixture(scope="module")
def m():
    return EmbeddingGemma(GOLDEN_DIR)


def test_empty_inputs(m):
    assert m.encode([]).shape == (0, m.get_sentence_embedding_dimension())
    for t in ("", "   ", "\n\t"):
        v = m.encode(t)  # <bos> <eos> only: still a unit vector
        assert v.shape == (m.get_sentence_embedding_dimension(),) and abs(np.linalg.norm(v) - 1) < 1e-5


@pytest.mark.parametrize("bad", [None, 3, 2.5, b"bytes", ["nested"]])
def test_non_strings_in_the_list_are_named(m, bad):
    with pytest.raises(TypeError, match=f"text 1 is {type(bad).__name__}, not str"):
        m.encode(["fine", bad])


def test_bare_bytes(m):
    with pytest.raises(TypeError, match="decode it first"):
        m.encode(b"abc")


def test_lone_surrogate_and_nul(m):
    with pytest.raises(ValueError, match=r"text 1 contains a lone surrogate \(U\+D800\)"):
        m.encode(["ok", "a\ud800b"])
    assert np.isfinite(m.encode("a\x00b")).all()  # NUL is a character like any other


def test_huge_string_is_truncated_once(m):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        v = m.encode("word " * 2_000_000)  # 10 MB
    assert v.shape == (m.get_sentence_embedding_dimension(),)
    assert sum("truncated" in str(x.message) for x in w) == 1
    with pytest.raises(ValueError, match="text 0"):
        m.encode("word " * 2_000, truncate=False)


@pytest.mark.parametrize("kw,match", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": -3}, "batch_size must be a positive integer"),
    ({"prompt_name": "nope"}, "unknown prompt_name 'nope'; this model's prompts are: .*'query'"),
    ({"truncate_dim": 10_000}, "truncate_dim must be an integer in 1.."),
    ({"truncate_dim": 0}, "truncate_dim must be an integer in 1.."),
    ({"precision": "float16"}, "precision must be"),
])
def test_bad_encode_arguments(m, kw, match):
    with pytest.raises(ValueError, match=match):
        m.encode(["a"], **kw)


def test_bad_constructor_arguments(tmp_path):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        EmbeddingGemma(GOLDEN_DIR, threads=0)
    with pytest.raises(ValueError, match="truncate_dim must be an integer"):
        EmbeddingGemma(GOLDEN_DIR, truncate_dim=100_000)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        EmbeddingGemma(tmp_path / "missing")
    f = tmp_path / "notes.txt"
    f.write_text("not a model")
    with pytest.raises(NotADirectoryError, match="not a GGUF"):
        EmbeddingGemma(f)
    if os.geteuid() != 0:  # root reads anything
        d = tmp_path / "locked"
        d.mkdir()
        d.chmod(0)
        try:
            with pytest.raises(PermissionError):
                EmbeddingGemma(d)
        finally:
            d.chmod(0o755)
