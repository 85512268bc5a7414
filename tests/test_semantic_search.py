"""semantic_search gives sentence-transformers' hits for the same scores, equal scores included.

sentence-transformers (6.x ``util.semantic_search``) merges ``torch.topk(..., sorted=False)`` of each
(query chunk x corpus chunk) through a heap, so which of several equal scores it returns, and in what
order, follows torch's CPU topk (libstdc++'s partial_sort or nth_element). Equal scores are common:
duplicate documents. The tests use vectors whose scores are exact in any BLAS (small integers, or
unit vectors of halves), so both libraries see the very same scores and only the tie handling is
compared; the rest share one score function.
"""

from __future__ import annotations

import numpy as np
import pytest

import embgemma.search as qm
from embgemma import semantic_search

torch = pytest.importorskip("torch")
st_util = pytest.importorskip("sentence_transformers.util")


def theirs(q, c, score_function=None, **kw):
    kw = {k: v for k, v in kw.items() if v is not None}
    if score_function is not None:
        kw["score_function"] = score_function
    return st_util.semantic_search(torch.from_numpy(np.asarray(q)), torch.from_numpy(np.asarray(c)), **kw)


def halves(rng, n, dim=12, nonzero=4):
    """Unit vectors of four entries +-0.5: normalizing them and their dot products are exact."""
    x = np.zeros((n, dim), np.float32)
    for row in x:
        row[rng.choice(dim, nonzero, replace=False)] = rng.choice([-0.5, 0.5], nonzero)
    return x


# ---------------------------------------------------------------------------------------------- torch.topk


def tie_rows(rng, count):
    for t in range(count):
        n = int(rng.integers(1, 2500)) if t % 2 else int(rng.integers(1, 150))
        k = int(rng.integers(1, min(n, 60) + 1))
        levels = int(rng.integers(1, 6))
        v = rng.integers(0, levels, n).astype(np.float32)
        kind = t % 6
        if kind == 1:
            v = np.sort(v)
        elif kind == 2:
            v = np.sort(v)[::-1].copy()
        elif kind == 3:
            v = rng.standard_normal(n).astype(np.float32)
            v[rng.integers(0, n, n // 3)] = 0.25
        elif kind == 4:
            v[rng.integers(0, n, max(1, n // 5))] = np.nan
        elif kind == 5:
            v = np.where(v == 0, -0.0, v - 1).astype(np.float32)  # -0.0 and 0.0 compare equal
        yield v, k


def test_topk_emulation_is_torch_topk():
    """Both of torch's CPU paths (partial_sort when 64 k <= n, else nth_element), on rows full of
    ties, NaN, sorted runs: the same indices in the same order."""
    rng = np.random.default_rng(0)
    for v, k in tie_rows(rng, 700):
        want = torch.topk(torch.from_numpy(v), k, largest=True, sorted=False)
        vals, ids = qm._torch_topk(v, k)
        assert ids == want.indices.tolist(), (len(v), k)
        np.testing.assert_array_equal(np.array(vals, np.float32), want.values.numpy())


# permutations on which libstdc++'s introselect exhausts its depth and falls back to heap selection
DEPTH_EXHAUSTED = [
    ([2, 0, 19, 15, 14, 1, 16, 10, 7, 9, 3, 4, 21, 22, 13, 17, 11, 8, 5, 12, 20, 18, 6], 7),
    ([7, 4, 11, 2, 9, 13, 3, 1, 10, 12, 8, 5, 6, 0], 8),
    ([5, 14, 11, 1, 6, 4, 8, 12, 2, 3, 7, 9, 10, 0, 13], 9),
    ([20, 0, 9, 22, 7, 5, 15, 4, 12, 6, 13, 1, 17, 3, 10, 8, 14, 21, 2, 18, 11, 19, 16], 15),
    ([8, 1, 11, 6, 3, 9, 13, 2, 4, 5, 7, 10, 12, 0], 6),
]


@pytest.mark.parametrize("small", [qm._SMALL, 3])
def test_topk_emulation_numpy_and_list_paths(monkeypatch, small):
    """nth_element partitions with NumPy above _SMALL values and on lists below; forcing NumPy
    everywhere (small=3) gives torch's result too, including its depth-limit fallback."""
    monkeypatch.setattr(qm, "_SMALL", small)
    calls = []

    class Spy(qm._PartialSorts):
        def __init__(self, rows, k):
            calls.append(k)
            super().__init__(rows, k)

    monkeypatch.setattr(qm, "_PartialSorts", Spy)
    make_heap = qm._make_heap
    monkeypatch.setattr(qm, "_make_heap", lambda h: (calls.append(len(h)), make_heap(h))[1])
    for v, k in DEPTH_EXHAUSTED:
        v = np.array(v, np.float32)
        calls.clear()
        assert qm._torch_topk(v, k)[1] == torch.topk(torch.from_numpy(v), k, sorted=False).indices.tolist()
        assert calls, "the depth-limit fallback did not run"
    rng = np.random.default_rng(1)
    for v, k in tie_rows(rng, 120):
        assert qm._torch_topk(v, k)[1] == torch.topk(torch.from_numpy(v), k, sorted=False).indices.tolist()


# ---------------------------------------------------------------------------------------------- semantic_search


@pytest.mark.parametrize("top_k", [1, 3, 10, 64])
def test_ties_like_sentence_transformers_integer_scores(top_k):
    """Integer vectors, dot product: every score exact, most of them tied. Chunk sizes from one row
    to the default, so ties meet across corpus chunks and query chunks and both topk paths run."""
    rng = np.random.default_rng(top_k)
    for trial in range(14):
        dim = int(rng.integers(1, 5))
        c = rng.integers(-2, 3, (int(rng.integers(1, 2500)), dim)).astype(np.float32)
        q = rng.integers(-2, 3, (int(rng.integers(1, 30)), dim)).astype(np.float32)
        qcs = [1, 7, 100][trial % 3]
        ccs = [1, 13, 640, 500_000, None][trial % 5]
        kw = {"top_k": top_k, "query_chunk_size": qcs, "corpus_chunk_size": ccs}
        want = theirs(q, c, st_util.dot_score, **kw)
        got = semantic_search(q, c, score_function=lambda a, b: a @ b.T,
                              **{k: v for k, v in kw.items() if v is not None})
        assert got == want, (trial, len(c), qcs, ccs)


@pytest.mark.parametrize("top_k,corpus_chunk_size", [(3, None), (10, None), (100, None), (10, 300), (7, 64)])
def test_ties_like_sentence_transformers_default_cosine(top_k, corpus_chunk_size):
    """Both defaults (cosine similarity): duplicates and equal scores everywhere, the same hits,
    the same order and the same scores."""
    rng = np.random.default_rng(7)
    base = halves(rng, 40)
    c = base[rng.integers(0, len(base), 1500)]
    q = halves(rng, 23)
    kw = {"top_k": top_k, "corpus_chunk_size": corpus_chunk_size}
    got = semantic_search(q, c, **{k: v for k, v in kw.items() if v is not None})
    assert got == theirs(q, c, **kw)
    assert got[0][0]["score"] == got[0][1]["score"]  # the case at stake: ties at the top


def test_duplicate_documents_like_the_quickstart():
    """The quickstart's corpus (four documents repeated 250 times, one query), and a larger one with
    NaN rows, on real-sized embeddings: one score function shared by both libraries, so the test is
    about which duplicates come back and in what order."""
    rng = np.random.default_rng(3)

    def cos(a, b):
        return qm._unit_rows(a, np.float32) @ qm._unit_rows(b, np.float32).T

    def cos_torch(a, b):
        return torch.from_numpy(cos(a.numpy(), b.numpy()))

    docs = rng.standard_normal((4, 768)).astype(np.float32)
    corpus = np.concatenate([docs] * 250)
    query = rng.standard_normal((1, 768)).astype(np.float32)
    for top_k in (3, 10, 300):
        got = semantic_search(query, corpus, top_k=top_k, score_function=cos)
        assert got == theirs(query, corpus, cos_torch, top_k=top_k)
        assert len({h["score"] for h in got[0][:3]}) == 1
    corpus = np.repeat(rng.standard_normal((300, 64)).astype(np.float32), 7, axis=0)[rng.permutation(2100)]
    corpus[[5, 700, 2000]] = np.nan
    queries = rng.standard_normal((9, 64)).astype(np.float32)
    for qcs, ccs in ((100, 500_000), (4, 500), (1, 128)):
        kw = {"top_k": 5, "query_chunk_size": qcs, "corpus_chunk_size": ccs}
        assert repr(semantic_search(queries, corpus, score_function=cos, **kw)) == repr(
            theirs(queries, corpus, cos_torch, **kw))


def test_scoring_in_blocks_changes_nothing(monkeypatch):
    """Scores are computed at most _BLOCK_SCORES at a time; tiny blocks give the same hits."""
    rng = np.random.default_rng(5)
    c = rng.integers(-2, 3, (3000, 3)).astype(np.float32)
    q = rng.integers(-2, 3, (40, 3)).astype(np.float32)
    dot = lambda a, b: a @ b.T  # noqa: E731
    for top_k, ccs in ((5, 500_000), (60, 1000), (4, 700)):
        want = semantic_search(q, c, top_k=top_k, corpus_chunk_size=ccs, score_function=dot)
        monkeypatch.setattr(qm, "_BLOCK_SCORES", 37)
        assert semantic_search(q, c, top_k=top_k, corpus_chunk_size=ccs, score_function=dot) == want
        monkeypatch.undo()
        assert want == theirs(q, c, st_util.dot_score, top_k=top_k, corpus_chunk_size=ccs)


def test_float64_inputs_are_scored_in_float64():
    """Scores equal in float32 but not in float64 are not ties for sentence-transformers (which
    scores float64 tensors in float64), nor for semantic_search's default cosine."""
    c = np.array([[1.0, 1e-5], [1.0, 0.0], [1.0, 2e-5], [1.0, 0.0]])
    q = np.array([[1.0, 0.0]])
    assert np.float32(1 - 0.5e-10) == np.float32(1.0)  # float32 could not tell them apart
    got, want = semantic_search(q, c, top_k=4), theirs(q, c, top_k=4)
    assert [h["corpus_id"] for h in got[0]] == [h["corpus_id"] for h in want[0]]
    assert [h["corpus_id"] for h in got[0]][2:] == [0, 2]
    np.testing.assert_allclose([h["score"] for h in got[0]], [h["score"] for h in want[0]], rtol=0, atol=1e-15)


def test_bad_score_function_and_arguments():
    c = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"score_function returned shape \(5,\) for 1 queries and 5 corpus rows"):
        semantic_search(c[0], c, score_function=lambda a, b: (a @ b.T)[0])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        semantic_search(c[0], c, top_k=0)
    assert semantic_search(c[:2], c[:0]) == [[], []]
    assert semantic_search(c[0], c, top_k=50)[0] == theirs(c[0], c, top_k=50)[0]
