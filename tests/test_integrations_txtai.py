"""txtai: EmbGemmaVectors inside a real txtai.Embeddings on the committed golden model.

With random weights "right" retrieval is the ranking embgemma's own cosines give: the tests check
txtai indexes encode_document vectors, searches with encode_query vectors, and ranks by them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("txtai", reason="the txtai extra is not installed")

from txtai import Embeddings  # noqa: E402

from conftest import GOLDEN_DIR  # noqa: E402
from embgemma import EmbeddingGemma  # noqa: E402

METHOD = "embgemma.integrations.txtai.EmbGemmaVectors"
DOCS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
    "Mercury is the smallest planet and the closest to the Sun.",
]
QUERY = "Which planet is known as the Red Planet?"


@pytest.fixture(autouse=True, scope="module")
def offline():
    """Everything here is local: txtai must not reach for the Hugging Face hub."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def gm():
    return EmbeddingGemma(GOLDEN_DIR)


def _ranking(q: np.ndarray, d: np.ndarray) -> list[int]:
    """Documents by descending cosine; txtai's search leaves out those scoring <= 0."""
    scores = d @ q
    return [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0]


def test_index_and_search_use_document_and_query_prompts(gm, tmp_path):
    emb = Embeddings(method=METHOD, path=str(GOLDEN_DIR), content=True, backend="numpy")
    emb.index(DOCS)
    assert emb.config["dimensions"] == gm.get_sentence_embedding_dimension()
    hits = emb.search(QUERY, len(DOCS))
    q, d = gm.encode_query(QUERY), gm.encode_document(DOCS)
    assert [int(h["id"]) for h in hits] == _ranking(q, d)
    np.testing.assert_allclose([h["score"] for h in hits], (d @ q)[_ranking(q, d)], atol=1e-5)
    assert hits[0]["text"] == DOCS[_ranking(q, d)[0]]

    # category "query" (the default) and "data" map to encode_query / encode_document
    np.testing.assert_allclose(emb.transform(QUERY), q, atol=1e-6)
    np.testing.assert_allclose(emb.batchtransform(DOCS, category="data"), d, atol=1e-6)
    np.testing.assert_allclose(emb.batchtransform([QUERY], category="query")[0], q, atol=1e-6)
    sims = emb.similarity(QUERY, DOCS)  # query side: query prompt, data side: document prompt
    assert [i for i, _ in sims] == [int(i) for i in np.argsort(-(d @ q), kind="stable")]
    np.testing.assert_allclose([s for _, s in sims], np.sort(d @ q)[::-1], atol=1e-5)

    # a document found by its own text with the document prompt on both sides
    twin = Embeddings(method=METHOD, path=str(GOLDEN_DIR), content=True, backend="numpy",
                      instructions={"query": "title: none | text: "})
    twin.index(DOCS)
    top = twin.search(DOCS[3], 1)[0]
    assert top["id"] == "3" and top["score"] == pytest.approx(1.0, abs=1e-5)

    # save, reload (the method is resolved again from the saved config), search again
    emb.save(str(tmp_path / "index"))
    again = Embeddings()
    again.load(str(tmp_path / "index"))
    reloaded = again.search(QUERY, len(DOCS))
    assert [h["id"] for h in reloaded] == [h["id"] for h in hits]
    np.testing.assert_allclose([h["score"] for h in reloaded], [h["score"] for h in hits], atol=1e-6)
    assert again.config["method"] == METHOD


def test_dimensionality_instructions_and_options(gm):
    emb = Embeddings(method=METHOD, path=str(GOLDEN_DIR), dimensionality=16, backend="numpy")
    emb.index(DOCS)
    assert emb.config["dimensions"] == 16 and emb.model.dimension == 16
    v = emb.transform(QUERY)
    assert v.shape == (16,) and abs(np.linalg.norm(v) - 1) < 1e-5
    np.testing.assert_allclose(v, gm.encode_query(QUERY, truncate_dim=16), atol=1e-6)
    hits = emb.search(QUERY, len(DOCS))
    assert [h[0] for h in hits] == _ranking(gm.encode_query(QUERY, truncate_dim=16),
                                             gm.encode_document(DOCS, truncate_dim=16))

    custom = Embeddings(method=METHOD, path=str(GOLDEN_DIR), instructions={"query": "q: ", "data": "d: "},
                        encodebatch=2, maxlength=64, vectors={"threads": 1})
    np.testing.assert_allclose(custom.transform("x"), gm.encode("x", prompt="q: "), atol=1e-6)
    np.testing.assert_allclose(custom.batchtransform(["x", "y"], category="data"),
                               gm.encode(["x", "y"], prompt="d: "), atol=1e-6)
    assert custom.model.encoder.batch_size == 2
    assert custom.model.model.max_seq_length == 64 and custom.model.model.threads == 1
    # only the category given is replaced
    half = Embeddings(method=METHOD, path=str(GOLDEN_DIR), instructions={"query": "q: "})
    np.testing.assert_allclose(half.batchtransform(["x"], category="data")[0], gm.encode_document("x"), atol=1e-6)


def _messages(e: BaseException) -> str:
    """txtai wraps a vectors method's constructor errors ("Unable to resolve vectors backend"); ours is the cause."""
    out = []
    while e is not None:
        out.append(str(e))
        e = e.__cause__
    return " / ".join(out)


def test_bad_configs_fail_with_a_message():
    with pytest.raises(ImportError) as e:
        Embeddings(method=METHOD, path=str(GOLDEN_DIR), instructions={"document": "d: "})
    assert "instructions must be a dict with keys 'query' and / or 'data'" in _messages(e.value)
    with pytest.raises(ImportError) as e:
        Embeddings(method=METHOD, path=str(GOLDEN_DIR), dimensionality=4096)
    assert "truncate_dim=4096 is wider" in _messages(e.value)
    with pytest.raises(ImportError) as e:
        Embeddings(method=METHOD, path=str(GOLDEN_DIR), vectors={"dtyp": "int8"})
    assert "dtyp" in _messages(e.value)
