"""LangChain, LlamaIndex and scikit-learn, each tested against the real library on the committed
golden model. With random weights, "right" retrieval is the ranking embgemma's own cosines give:
the tests check each framework returns exactly that, with the query and document prompts applied."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest

from conftest import GOLDEN_DIR
from embgemma import EmbeddingGemma

DOCS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]
QUERY = "Which planet is known as the Red Planet?"


@pytest.fixture(scope="module")
def gm():
    return EmbeddingGemma(GOLDEN_DIR)


def _expected_ranking(gm) -> list[int]:
    scores = gm.similarity(gm.encode_query(QUERY), gm.encode_document(DOCS))[0]
    return list(np.argsort(-scores, kind="stable"))


# ---------------------------------------------------------------- LangChain

lc = pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
from embgemma.integrations.langchain import EmbeddingGemmaEmbeddings  # noqa: E402
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402


class _LangChainParams:
    """What langchain-tests' standard suites construct: the embeddings class and its arguments."""

    @property
    def embeddings_class(self):
        return EmbeddingGemmaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": str(GOLDEN_DIR)}


class TestLangChainUnit(_LangChainParams, EmbeddingsUnitTests):
    pass


class TestLangChainIntegration(_LangChainParams, EmbeddingsIntegrationTests):
    pass


def test_langchain_prompts_and_vectors(gm):
    emb = EmbeddingGemmaEmbeddings(model=str(GOLDEN_DIR))
    np.testing.assert_allclose(emb.embed_documents(DOCS), gm.encode_document(DOCS), atol=1e-7)
    np.testing.assert_allclose(emb.embed_query(QUERY), gm.encode_query(QUERY), atol=1e-7)
    assert emb.embed_documents([]) == []
    custom = EmbeddingGemmaEmbeddings.from_model(gm, query_prompt_name="STS", document_prompt="doc: ",
                                                 truncate_dim=None)
    assert custom.client is gm
    np.testing.assert_allclose(custom.embed_query("x"), gm.encode("x", prompt_name="STS"), atol=1e-7)
    np.testing.assert_allclose(custom.embed_documents(["x"])[0], gm.encode("x", prompt="doc: "), atol=1e-7)
    with pytest.raises(TypeError):
        emb.embed_documents("not a list")
    with pytest.raises(Exception):
        EmbeddingGemmaEmbeddings(model=str(GOLDEN_DIR), unknown_field=1)


def test_langchain_vector_store_retrieval(gm):
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    emb = EmbeddingGemmaEmbeddings(model=str(GOLDEN_DIR))
    store = InMemoryVectorStore(embedding=emb)
    store.add_documents([Document(page_content=d, metadata={"i": i}) for i, d in enumerate(DOCS)])
    hits = store.similarity_search(QUERY, k=4)
    assert [h.metadata["i"] for h in hits] == _expected_ranking(gm)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert retriever.invoke(QUERY)[0].metadata["i"] == _expected_ranking(gm)[0]


def test_langchain_async_does_not_block_the_loop():
    emb = EmbeddingGemmaEmbeddings(model=str(GOLDEN_DIR))
    texts = [f"a somewhat longer document number {i} " * 5 for i in range(64)]

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.create_task(ticker())
        vecs = await emb.aembed_documents(texts)
        q = await emb.aembed_query("x")
        t.cancel()
        return ticks, vecs, q

    ticks, vecs, q = asyncio.run(main())
    assert len(vecs) == 64 and len(q) == len(vecs[0])
    assert ticks > 3  # the loop kept running while the engine worked
    np.testing.assert_allclose(vecs, emb.embed_documents(texts), atol=1e-7)


# ---------------------------------------------------------------- LlamaIndex


def test_llama_index_vector_store_index_retrieval(gm):
    li = pytest.importorskip("llama_index.core", reason="the llama-index extra is not installed")
    from llama_index.core import Settings, VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.schema import TextNode

    from embgemma.integrations.llama_index import EmbeddingGemmaEmbedding

    emb = EmbeddingGemmaEmbedding(model_name=str(GOLDEN_DIR), embed_batch_size=3)
    assert EmbeddingGemmaEmbedding.class_name() == "EmbeddingGemmaEmbedding"
    assert emb.to_dict()["model_name"] == str(GOLDEN_DIR)
    Settings.llm = MockLLM()
    nodes = [TextNode(text=d, id_=f"doc{i}") for i, d in enumerate(DOCS)]
    index = VectorStoreIndex(nodes, embed_model=emb)
    got = index.as_retriever(similarity_top_k=4).retrieve(QUERY)
    assert [n.node.node_id for n in got] == [f"doc{i}" for i in _expected_ranking(gm)]
    np.testing.assert_allclose(emb.get_query_embedding(QUERY), gm.encode_query(QUERY), atol=1e-7)
    np.testing.assert_allclose(emb.get_text_embedding_batch(DOCS), gm.encode_document(DOCS), atol=1e-7)
    np.testing.assert_allclose(asyncio.run(emb.aget_query_embedding(QUERY)), gm.encode_query(QUERY), atol=1e-7)
    np.testing.assert_allclose(asyncio.run(emb.aget_text_embedding_batch(DOCS)), gm.encode_document(DOCS),
                               atol=1e-7)
    shared = EmbeddingGemmaEmbedding(model=gm, query_instruction="q: ")
    np.testing.assert_allclose(shared.get_query_embedding("x"), gm.encode("x", prompt="q: "), atol=1e-7)


def test_llama_index_refuses_unknown_arguments_and_takes_a_path_as_model(gm):
    pytest.importorskip("llama_index.core", reason="the llama-index extra is not installed")
    from embgemma.integrations.llama_index import EmbeddingGemmaEmbedding

    # a misspelled argument used to be ignored, silently loading google/embeddinggemma-300m instead
    with pytest.raises(TypeError, match=r"'model_nmae' \(did you mean 'model_name'\?\)"):
        EmbeddingGemmaEmbedding(model_nmae=str(GOLDEN_DIR))
    with pytest.raises(TypeError, match="'truncate_dims'"):
        EmbeddingGemmaEmbedding(model_name=str(GOLDEN_DIR), truncate_dims=16)
    by_path = EmbeddingGemmaEmbedding(model=str(GOLDEN_DIR))  # was AttributeError: 'str' ... 'model_path'
    assert by_path.model_name == str(GOLDEN_DIR)
    np.testing.assert_allclose(by_path.get_query_embedding(QUERY), gm.encode_query(QUERY), atol=1e-7)
    assert EmbeddingGemmaEmbedding(model=GOLDEN_DIR, truncate_dim=16).get_text_embedding("x") == pytest.approx(
        gm.encode_document("x", truncate_dim=16).tolist(), abs=1e-6)
    assert EmbeddingGemmaEmbedding(model=gm).model is gm
    with pytest.raises(ValueError, match="not both"):
        EmbeddingGemmaEmbedding(model_name=str(GOLDEN_DIR), model=gm)
    with pytest.raises(TypeError, match="model must be"):
        EmbeddingGemmaEmbedding(model=42)
    # LlamaIndex's own round trip still works with the stricter arguments
    again = EmbeddingGemmaEmbedding.from_dict(by_path.to_dict())
    assert again.model_name == by_path.model_name and again.model is by_path.model  # one shared copy


# ---------------------------------------------------------------- scikit-learn

TEXTS = [f"{w} {i}" for i in range(10) for w in ("apple pie", "stock market")]
Y = np.array([0, 1] * 10)


@pytest.fixture()
def vec():
    pytest.importorskip("sklearn", reason="the sklearn extra is not installed")
    from embgemma.sklearn import EmbeddingGemmaVectorizer

    return EmbeddingGemmaVectorizer(str(GOLDEN_DIR))


def test_sklearn_pipelines(vec, gm):
    from sklearn.base import clone
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    X = vec.fit_transform(TEXTS)
    assert X.dtype == np.float32 and X.shape == (20, gm.get_sentence_embedding_dimension())
    np.testing.assert_array_equal(X, gm.encode(TEXTS, prompt_name="Clustering"))
    assert vec.batch_size is None  # the model's token-budget batching
    # prompt_name=None: the model's own default prompt, as encode picks it
    np.testing.assert_array_equal(clone(vec).set_params(prompt_name=None).fit_transform(TEXTS), gm.encode(TEXTS))
    labels = make_pipeline(clone(vec), KMeans(2, n_init=3, random_state=0)).fit_predict(TEXTS)
    assert labels.shape == (20,)
    clf = make_pipeline(clone(vec).set_params(prompt_name="Classification"), LogisticRegression(max_iter=500))
    scores = cross_val_score(clf, np.array(TEXTS, dtype=object), Y, cv=2)
    assert scores.shape == (2,) and np.all(scores >= 0)
    assert list(clf.fit(TEXTS, Y).predict(TEXTS[:2])) in ([0, 1], [1, 0], [0, 0], [1, 1])


def test_sklearn_feature_names_and_pandas_output(vec):
    pd = pytest.importorskip("pandas")
    vec.set_params(truncate_dim=16).fit(TEXTS)
    names = vec.get_feature_names_out()
    assert list(names[:2]) == ["embeddinggemmavectorizer0", "embeddinggemmavectorizer1"] and len(names) == 16
    df = vec.set_output(transform="pandas").transform(pd.Series(TEXTS))
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(names) and df.shape == (20, 16)


def test_sklearn_estimator_contract(vec):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils import estimator_checks as ec

    name = type(vec).__name__
    for check in ("check_no_attributes_set_in_init", "check_get_params_invariance", "check_set_params",
                  "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
                  "check_estimator_cloneable", "check_estimator_repr", "check_valid_tag_types",
                  "check_estimator_tags_renamed", "check_parameters_default_constructible"):
        fn = getattr(ec, check, None)
        if fn is not None:
            fn(name, clone(vec))
    with pytest.raises(NotFittedError):
        clone(vec).transform(TEXTS)
    fitted = clone(vec)
    assert fitted.fit(TEXTS) is fitted
    a = fitted.transform(TEXTS)
    np.testing.assert_array_equal(fitted.fit(TEXTS).transform(TEXTS), a)  # fit is idempotent
    perm = np.random.default_rng(0).permutation(20)
    np.testing.assert_array_equal(fitted.transform([TEXTS[i] for i in perm]), a[perm])  # order invariance
    np.testing.assert_array_equal(fitted.transform(TEXTS[3:7]), a[3:7])  # subset invariance
    again = pickle.loads(pickle.dumps(fitted))
    assert again.model_ is None  # the C model is not pickled ...
    np.testing.assert_array_equal(again.transform(TEXTS), a)  # ... and reloads on use
    with pytest.raises(ValueError, match="string object received"):
        fitted.transform("one string")
    with pytest.raises(ValueError, match="unknown prompt_name 'nope'; this model's prompts are"):
        clone(vec).set_params(prompt_name="nope").fit(TEXTS)
    tags = vec.__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array
