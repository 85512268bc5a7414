"""Quantized outputs and search: the same numbers as sentence-transformers' own functions, and a
search that never builds the full score matrix."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import embgemma
from embgemma import quantize_embeddings, semantic_search

PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]


def _st_quantize():
    st = pytest.importorskip("sentence_transformers")
    fn = getattr(st, "quantize_embeddings", None)
    if fn is None:
        from sentence_transformers.quantization import quantize_embeddings as fn
    return fn


@pytest.mark.parametrize("precision", PRECISIONS)
def test_quantize_matches_sentence_transformers(precision):
    st_quantize = _st_quantize()
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, 768)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ours, theirs = quantize_embeddings(emb, precision), st_quantize(emb, precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    cal = rng.standard_normal((500, 768)).astype(np.float32) * 0.05
    if precision.endswith("int8"):
        np.testing.assert_array_equal(quantize_embeddings(emb, precision, calibration_embeddings=cal),
                                      st_quantize(emb, precision, calibration_embeddings=cal))
        ranges = np.vstack([cal.min(0), cal.max(0)])
        np.testing.assert_array_equal(quantize_embeddings(emb, precision, ranges=ranges),
                                      st_quantize(emb, precision, ranges=ranges))


def test_quantize_shapes_and_errors():
    v = np.linspace(-1, 1, 768, dtype=np.float32)
    assert quantize_embeddings(v, "binary").shape == (96,)
    assert quantize_embeddings(v[None], "ubinary").shape == (1, 96)
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize_embeddings(v, "int4")
    with pytest.raises(ValueError, match="must be float"):
        quantize_embeddings(v.astype(np.int8), "int8")
    with pytest.raises(ValueError, match="single embedding"):
        quantize_embeddings(v, "int8")
    assert quantize_embeddings(np.zeros((0, 768), np.float32), "uint8").shape == (0, 768)
    clipped = quantize_embeddings(np.array([[-5.0, 5.0]], np.float32), "uint8", ranges=np.array([[-1, -1], [1, 1]]))
    assert clipped.tolist() == [[0, 255]]


def test_encode_precision(golden_model):
    texts = [f"text number {i}" for i in range(12)]
    full = golden_model.encode(texts)
    for p in PRECISIONS:
        q = golden_model.encode(texts, precision=p)
        np.testing.assert_array_equal(q, quantize_embeddings(full, p))
    one = golden_model.encode("a single text", precision="ubinary")
    assert one.dtype == np.uint8 and one.shape == (golden_model.get_sentence_embedding_dimension() // 8,)
    ranges = np.vstack([full.min(0), full.max(0)])
    np.testing.assert_array_equal(golden_model.encode(texts[:3], precision="int8", ranges=ranges),
                                  quantize_embeddings(full[:3], "int8", ranges=ranges))
    with pytest.raises(ValueError, match="precision must be"):
        golden_model.encode(texts, precision="float16")


def test_semantic_search_matches_sentence_transformers():
    st_util = pytest.importorskip("sentence_transformers.util")
    import torch

    rng = np.random.default_rng(1)
    q = rng.standard_normal((37, 64)).astype(np.float32)
    c = rng.standard_normal((1001, 64)).astype(np.float32)
    theirs = st_util.semantic_search(torch.from_numpy(q), torch.from_numpy(c), top_k=7)
    for qcs, ccs in [(100, 500000), (5, 64), (1, 1)]:
        ours = semantic_search(q, c, query_chunk_size=qcs, corpus_chunk_size=ccs, top_k=7)
        assert [[h["corpus_id"] for h in r] for r in ours] == [[h["corpus_id"] for h in r] for r in theirs]
        np.testing.assert_allclose([[h["score"] for h in r] for r in ours],
                                   [[h["score"] for h in r] for r in theirs], rtol=1e-5, atol=1e-6)
    dot = semantic_search(q, c, top_k=3, score_function=lambda a, b: a @ b.T)
    assert dot[0][0]["corpus_id"] == int(np.argmax(c @ q[0]))
    assert len(semantic_search(q[0], c[:2], top_k=10)[0]) == 2  # top_k past the corpus size


def test_semantic_search_memory_is_bounded_by_the_chunks():
    """A million-vector corpus: the peak is a few (query chunk x corpus chunk) blocks, far below the
    full 20 x 1,000,000 score matrix (160 MB in float64)."""
    rng = np.random.default_rng(2)
    c = rng.standard_normal((1_000_000, 8)).astype(np.float32)
    q = rng.standard_normal((20, 8)).astype(np.float32)
    tracemalloc.start()
    hits = semantic_search(q, c, query_chunk_size=20, corpus_chunk_size=20_000, top_k=5,
                           score_function=lambda a, b: a @ b.T)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 1_000_000 * 8 / 10, f"peak {peak / 1e6:.1f} MB"
    best = np.argsort(-(c @ q[3]), kind="stable")[:5]
    assert [h["corpus_id"] for h in hits[3]] == list(best)


def test_import_is_lazy():
    """`import embgemma` loads none of the integrations' libraries (its time is measured in the
    benchmarks' notes, not asserted here: no timing in tests)."""
    import subprocess
    import sys

    code = ("import sys, time; t = time.perf_counter(); import embgemma; dt = time.perf_counter() - t; "
            "heavy = [m for m in ('langchain_core', 'llama_index', 'sklearn', 'pandas', 'tqdm', 'torch') if m in sys.modules]; "
            "print(dt, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[1].strip() == "[]", out
    assert "semantic_search" in embgemma.__all__
