"""Chroma: EmbGemmaEmbeddingFunction with an in-process chromadb client on the committed golden model.

With random weights "right" retrieval is the ranking embgemma's own cosines give: the tests check
Chroma stores encode_document vectors, queries with encode_query vectors, ranks by them, and that a
collection reopened from disk rebuilds the same function from its persisted config."""

from __future__ import annotations

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb", reason="the chroma extra is not installed")

from chromadb.api.client import SharedSystemClient  # noqa: E402
from chromadb.config import Settings  # noqa: E402
from chromadb.utils.embedding_functions import config_to_embedding_function, known_embedding_functions  # noqa: E402

from conftest import GOLDEN_DIR  # noqa: E402
from embgemma import EmbeddingGemma  # noqa: E402
from embgemma.integrations.chroma import EmbGemmaEmbeddingFunction  # noqa: E402

DOCS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
    "Mercury is the smallest planet and the closest to the Sun.",
]
IDS = [f"d{i}" for i in range(len(DOCS))]
QUERY = "Which planet is known as the Red Planet?"
MODEL = str(GOLDEN_DIR)


@pytest.fixture(scope="module")
def gm():
    return EmbeddingGemma(GOLDEN_DIR)


def _client(path):
    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def test_function_prompts_and_protocol(gm):
    ef = EmbGemmaEmbeddingFunction(MODEL)
    np.testing.assert_allclose(ef(DOCS), gm.encode_document(DOCS), atol=1e-6)
    np.testing.assert_allclose(ef.embed_query([QUERY]), gm.encode_query([QUERY]), atol=1e-6)
    assert ef.embed_query([QUERY])[0].dtype == np.float32
    assert ef.name() == "embgemma" and known_embedding_functions["embgemma"] is EmbGemmaEmbeddingFunction
    assert ef.default_space() == "cosine" and not ef.is_legacy()
    assert ef.dimension == gm.get_sentence_embedding_dimension() and ef.max_tokens() == gm.max_seq_length

    small = EmbGemmaEmbeddingFunction(MODEL, truncate_dim=16, query_prompt="q: ", document_prompt_name="Clustering")
    v = np.array(small.embed_query(["x"]))
    assert v.shape == (1, 16) and abs(np.linalg.norm(v) - 1) < 1e-5
    np.testing.assert_allclose(v, gm.encode(["x"], prompt="q: ", truncate_dim=16), atol=1e-6)
    np.testing.assert_allclose(small(["x"]), gm.encode(["x"], prompt_name="Clustering", truncate_dim=16), atol=1e-6)

    # the persisted config rebuilds an equal function through Chroma's own registry
    config = small.get_config()
    assert config["truncate_dim"] == 16 and config["model"] == MODEL
    rebuilt = config_to_embedding_function({"name": "embgemma", "config": config})
    assert isinstance(rebuilt, EmbGemmaEmbeddingFunction) and rebuilt.get_config() == config
    np.testing.assert_allclose(rebuilt.embed_query(["x"]), v, atol=1e-7)

    shared = EmbGemmaEmbeddingFunction(gm)
    assert shared.model is gm and shared.get_config()["model_kwargs"] == {"dtype": gm.dtype}
    assert EmbGemmaEmbeddingFunction.build_from_config(shared.get_config()).model is gm  # no second copy


def test_collection_add_query_and_reopen(gm, tmp_path):
    client = _client(tmp_path / "db")
    col = client.create_collection("planets", embedding_function=EmbGemmaEmbeddingFunction(MODEL, truncate_dim=32))
    col.add(ids=IDS, documents=DOCS)
    got = col.get(ids=IDS, include=["embeddings"])
    np.testing.assert_allclose(got["embeddings"], gm.encode_document(DOCS, truncate_dim=32), atol=1e-6)

    q, d = gm.encode_query(QUERY, truncate_dim=32), gm.encode_document(DOCS, truncate_dim=32)
    ranking = [IDS[i] for i in np.argsort(-(d @ q), kind="stable")]
    res = col.query(query_texts=[QUERY], n_results=len(DOCS))
    assert res["ids"][0] == ranking
    np.testing.assert_allclose(res["distances"][0], 1 - np.sort(d @ q)[::-1], atol=1e-4)  # cosine space
    assert col.configuration["hnsw"]["space"] == "cosine"

    # reopen from disk in a fresh client: the collection rebuilds the function from its persisted config
    del col, client
    SharedSystemClient.clear_system_cache()
    client = _client(tmp_path / "db")
    col = client.get_collection("planets")
    ef = col.configuration["embedding_function"]
    assert isinstance(ef, EmbGemmaEmbeddingFunction) and ef.get_config()["truncate_dim"] == 32
    assert not ef._encoder.loaded  # reopening reads the config; the model loads on the first embedding
    assert col.query(query_texts=[QUERY], n_results=len(DOCS))["ids"][0] == ranking
    col.add(ids=["new"], documents=["A new document about Pluto."])
    np.testing.assert_allclose(col.get(ids=["new"], include=["embeddings"])["embeddings"][0],
                               gm.encode_document("A new document about Pluto.", truncate_dim=32), atol=1e-6)
    # a document queried by its own text, with the document prompt on both sides, is its own nearest
    twin = col.query(query_embeddings=[ef(DOCS[2:3])[0]], n_results=1)
    assert twin["ids"][0] == ["d2"] and twin["distances"][0][0] == pytest.approx(0.0, abs=1e-4)
    # reopening with the same function is accepted; changing what shapes the vectors is refused
    client.get_collection("planets", embedding_function=EmbGemmaEmbeddingFunction(MODEL, truncate_dim=32))
    with pytest.raises(ValueError, match="cannot change truncate_dim"):
        ef.validate_config_update(ef.get_config(), {"truncate_dim": 16})
    SharedSystemClient.clear_system_cache()


def test_bad_configs_fail_with_a_message(gm):
    with pytest.raises(ValueError, match="unknown keys"):
        EmbGemmaEmbeddingFunction.build_from_config({"model": MODEL, "truncate_dims": 16})
    with pytest.raises(ValueError, match="truncate_dim must be"):
        EmbGemmaEmbeddingFunction.build_from_config({"model": MODEL, "truncate_dim": "16"})
    with pytest.raises(ValueError, match="not in this model's prompts"):
        EmbGemmaEmbeddingFunction(MODEL, document_prompt_name="nope")
    with pytest.raises(ValueError, match="already loaded"):
        EmbGemmaEmbeddingFunction(gm, dtype="int8")
    with pytest.raises(TypeError):
        EmbGemmaEmbeddingFunction(MODEL, truncate_dims=16)
