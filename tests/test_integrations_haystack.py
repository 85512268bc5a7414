"""Haystack: the embedders as real pipeline components on the committed golden model.

With random weights "right" retrieval is the ranking embgemma's own cosines give: the tests check
the components produce exactly encode_query / encode_document (with titles) vectors and that a
Haystack pipeline with InMemoryDocumentStore + InMemoryEmbeddingRetriever returns that ranking."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no analytics calls from test runs
pytest.importorskip("haystack", reason="the haystack extra is not installed")

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever  # noqa: E402
from haystack.components.writers import DocumentWriter  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402

from conftest import GOLDEN_DIR  # noqa: E402
from embgemma import EmbeddingGemma  # noqa: E402
from embgemma.integrations.haystack import (  # noqa: E402
    EmbeddingGemmaDocumentEmbedder,
    EmbeddingGemmaTextEmbedder,
)

PLANETS = [
    ("Venus", "Venus is often called Earth's twin because of its similar size and proximity."),
    ("Mars", "Mars, known for its reddish appearance, is often referred to as the Red Planet."),
    ("Jupiter", "Jupiter, the largest planet in our solar system, has a prominent red spot."),
    (None, "Saturn, famous for its rings, is sometimes mistaken for the Red Planet."),
    ("Mercury", "Mercury is the smallest planet and the closest to the Sun."),
]
QUERY = "Which planet is known as the Red Planet?"
MODEL = str(GOLDEN_DIR)


def _docs() -> list[Document]:
    return [Document(id=f"d{i}", content=text, meta={"title": t, "n": i} if t else {"n": i})
            for i, (t, text) in enumerate(PLANETS)]


@pytest.fixture(scope="module")
def gm():
    return EmbeddingGemma(GOLDEN_DIR)


def test_document_embedder_uses_the_document_prompt_with_titles(gm):
    docs = _docs()
    out = EmbeddingGemmaDocumentEmbedder(MODEL, progress_bar=False).run(docs)["documents"]
    titles = [t for t, _ in PLANETS]
    texts = [text for _, text in PLANETS]
    np.testing.assert_allclose([d.embedding for d in out], gm.encode_document(texts, titles=titles), atol=1e-6)
    assert [d.id for d in out] == [d.id for d in docs] and all(d.embedding is None for d in docs)  # inputs untouched
    assert [d.meta for d in out] == [d.meta for d in docs]
    # the title really matters: "title: Mars | text: ..." is not "title: none | text: ..."
    assert not np.allclose(out[1].embedding, gm.encode_document(texts[1]), atol=1e-4)
    np.testing.assert_allclose(out[3].embedding, gm.encode_document(texts[3]), atol=1e-6)  # no title: none

    # another meta key for titles, or none at all
    renamed = [Document(content=text, meta={"heading": t}) for t, text in PLANETS]
    got = EmbeddingGemmaDocumentEmbedder(MODEL, title_meta_key="heading").run(renamed)["documents"]
    np.testing.assert_allclose([d.embedding for d in got], gm.encode_document(texts, titles=titles), atol=1e-6)
    got = EmbeddingGemmaDocumentEmbedder(MODEL, title_meta_key=None).run(docs)["documents"]
    np.testing.assert_allclose([d.embedding for d in got], gm.encode_document(texts), atol=1e-6)


def test_document_embedder_meta_fields_prefix_and_other_prompts(gm):
    docs = [Document(content="Mars is red.", meta={"title": "Mars", "author": "Ann", "year": 2020}),
            Document(content=None, meta={"author": "Bob"}),
            Document(content="Venus is hot.", meta={"year": None})]
    emb = EmbeddingGemmaDocumentEmbedder(MODEL, meta_fields_to_embed=["author", "year"], embedding_separator=" | ",
                                         prefix="<", suffix=">")
    got = [d.embedding for d in emb.run(docs)["documents"]]
    want = gm.encode_document(["<Ann | 2020 | Mars is red.>", "<Bob | >", "<Venus is hot.>"],
                              titles=["Mars", None, None])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # a prompt other than the document prompt has no place for a title: the text alone, with that prompt
    clus = EmbeddingGemmaDocumentEmbedder(MODEL, prompt_name="Clustering").run(docs[:1])["documents"][0]
    np.testing.assert_allclose(clus.embedding, gm.encode("Mars is red.", prompt_name="Clustering"), atol=1e-6)
    lit = EmbeddingGemmaDocumentEmbedder(MODEL, prompt="doc: ").run(docs[:1])["documents"][0]
    np.testing.assert_allclose(lit.embedding, gm.encode("Mars is red.", prompt="doc: "), atol=1e-6)
    none = EmbeddingGemmaDocumentEmbedder(MODEL, prompt_name=None).run(docs[:1])["documents"][0]
    np.testing.assert_allclose(none.embedding, gm.encode("Mars is red.", prompt=""), atol=1e-6)
    assert emb.run([]) == {"documents": []}
    with pytest.raises(TypeError, match="list of Documents"):
        emb.run("a string")
    with pytest.raises(TypeError, match="list of Documents"):
        emb.run(["a string"])
    with pytest.raises(TypeError, match="meta_fields_to_embed"):
        EmbeddingGemmaDocumentEmbedder(MODEL, meta_fields_to_embed="author")


def test_text_embedder_query_prompt_and_matryoshka(gm):
    emb = EmbeddingGemmaTextEmbedder(MODEL)
    assert not emb._encoder.loaded  # loads in warm_up (or the first run), as Haystack expects
    emb.warm_up()
    assert emb._encoder.loaded and emb.dimension == gm.get_sentence_embedding_dimension()
    vec = emb.run(QUERY)["embedding"]
    assert isinstance(vec, list) and isinstance(vec[0], float)
    np.testing.assert_allclose(vec, gm.encode_query(QUERY), atol=1e-6)
    assert not np.allclose(vec, gm.encode_document(QUERY), atol=1e-4)

    small = EmbeddingGemmaTextEmbedder(MODEL, truncate_dim=16)
    v16 = np.array(small.run(QUERY)["embedding"])
    assert v16.shape == (16,) and small.dimension == 16 and abs(np.linalg.norm(v16) - 1) < 1e-5
    np.testing.assert_allclose(v16, gm.encode_query(QUERY, truncate_dim=16), atol=1e-6)
    np.testing.assert_allclose(EmbeddingGemmaTextEmbedder(MODEL, prompt_name="STS", prefix="x ").run("y")["embedding"],
                               gm.encode("x y", prompt_name="STS"), atol=1e-6)
    with pytest.raises(TypeError, match="takes a string"):
        emb.run([QUERY])


def test_pipeline_retrieval_returns_embgemmas_ranking(gm):
    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    indexing = Pipeline()
    indexing.add_component("embedder", EmbeddingGemmaDocumentEmbedder(MODEL, progress_bar=False))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    assert indexing.run({"embedder": {"documents": _docs()}})["writer"]["documents_written"] == len(PLANETS)

    query = Pipeline()
    query.add_component("embedder", EmbeddingGemmaTextEmbedder(MODEL))
    query.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=len(PLANETS)))
    query.connect("embedder.embedding", "retriever.query_embedding")
    hits = query.run({"embedder": {"text": QUERY}})["retriever"]["documents"]

    docs = gm.encode_document([t for _, t in PLANETS], titles=[t for t, _ in PLANETS])
    scores = gm.similarity(gm.encode_query(QUERY), docs)[0]
    assert [h.id for h in hits] == [f"d{i}" for i in np.argsort(-scores, kind="stable")]
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1], atol=1e-5)

    # a query identical to a document (with its title, in the same prompt) finds that document first
    twin = EmbeddingGemmaTextEmbedder(MODEL, prompt="title: Mars | text: ")
    store_hits = InMemoryEmbeddingRetriever(document_store=store, top_k=1).run(
        query_embedding=twin.run(PLANETS[1][1])["embedding"])["documents"]
    assert store_hits[0].id == "d1" and store_hits[0].score == pytest.approx(1.0, abs=1e-5)

    # the two components asked for the same model: one copy of the weights
    assert query.get_component("embedder").model is indexing.get_component("embedder").model


def test_serialization_round_trips(gm, tmp_path):
    doc = EmbeddingGemmaDocumentEmbedder(MODEL, prompt_name="Retrieval-document", title_meta_key="name",
                                         meta_fields_to_embed=["a"], embedding_separator=" ", prefix="p", suffix="s",
                                         truncate_dim=32, batch_size=4, progress_bar=False, threads=1,
                                         dtype="float32", model_kwargs={"max_seq_length": 64})
    d = doc.to_dict()
    assert d["type"] == "embgemma.integrations.haystack.EmbeddingGemmaDocumentEmbedder"
    assert d["init_parameters"]["model"] == MODEL and d["init_parameters"]["truncate_dim"] == 32
    again = EmbeddingGemmaDocumentEmbedder.from_dict(d)
    assert again.to_dict() == d
    docs = [Document(content="Mars is red.", meta={"name": "Mars", "a": 1})]
    np.testing.assert_allclose(again.run(docs)["documents"][0].embedding, doc.run(docs)["documents"][0].embedding)
    assert again.model.max_seq_length == 64 and again.model.threads == 1

    text = EmbeddingGemmaTextEmbedder(MODEL, prompt="q: ", truncate_dim=16)
    t = text.to_dict()
    assert EmbeddingGemmaTextEmbedder.from_dict(t).to_dict() == t
    assert EmbeddingGemmaTextEmbedder.from_dict(t).run("x")["embedding"] == text.run("x")["embedding"]

    # a component around a loaded model serializes as that model's path and weights mode
    shared = EmbeddingGemmaTextEmbedder(gm)
    assert shared.model is gm
    s = shared.to_dict()["init_parameters"]
    assert s["model"] == str(gm.model_path) and s["dtype"] == gm.dtype

    # a whole pipeline through YAML
    store = InMemoryDocumentStore()
    p = Pipeline()
    p.add_component("embedder", EmbeddingGemmaTextEmbedder(MODEL, truncate_dim=16))
    p.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store))
    p.connect("embedder.embedding", "retriever.query_embedding")
    loaded = Pipeline.loads(p.dumps(), allowed_modules=["embgemma.integrations.haystack"])
    assert loaded.get_component("embedder").to_dict() == p.get_component("embedder").to_dict()
    out = loaded.run({"embedder": {"text": "x"}}, include_outputs_from={"embedder"})
    assert len(out["embedder"]["embedding"]) == 16


def test_bad_settings_fail_with_a_message(gm):
    with pytest.raises(ValueError, match="not in this model's prompts"):
        EmbeddingGemmaTextEmbedder(MODEL, prompt_name="nope").warm_up()
    with pytest.raises(ValueError, match="truncate_dim=4096 is wider"):
        EmbeddingGemmaDocumentEmbedder(MODEL, truncate_dim=4096).warm_up()
    with pytest.raises(ValueError, match="truncate_dim must be a positive integer"):
        EmbeddingGemmaTextEmbedder(MODEL, truncate_dim=0)
    with pytest.raises(ValueError, match="already loaded"):
        EmbeddingGemmaTextEmbedder(gm, dtype="bfloat16")
    with pytest.raises(TypeError, match="model must be"):
        EmbeddingGemmaTextEmbedder(42)
    with pytest.raises(TypeError):
        EmbeddingGemmaTextEmbedder(MODEL, promt_name="query")  # a misspelled argument is refused


def test_shared_encoder_titles_rules(gm):
    """The Encoder all integrations use: titles only with the title-taking document prompt, one per text."""
    from embgemma.integrations._common import Encoder

    enc = Encoder(gm)
    assert enc.titles_apply and enc.document_prompt_text == "title: none | text: "
    np.testing.assert_allclose(enc.embed_documents(["a", "b"], titles=["A", None]),
                               gm.encode_document(["a", "b"], titles=["A", None]), atol=1e-7)
    with pytest.raises(ValueError, match="1 titles for 2 documents"):
        enc.embed_documents(["a", "b"], titles=["A"])
    with pytest.raises(TypeError, match="single str"):
        enc.embed_queries("one string")
    other = Encoder(gm, document_prompt_name="Clustering")
    assert not other.titles_apply
    with pytest.raises(ValueError, match="no place for one"):
        other.embed_documents(["a"], titles=["A"])
    np.testing.assert_allclose(other.embed_documents(["a"], titles=[None]), gm.encode(["a"], prompt_name="Clustering"),
                               atol=1e-7)
