"""Parity with the reference stack: transformers' Gemma3TextModel + sentence-transformers,
random weights with realistic scale, float32 on the CPU. Bar: cosine >= 0.99999 and
max |diff| <= 1e-4 on normalized outputs, for every case."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import ABS_BAR, assert_parity
from embgemma import EmbeddingGemma

pytestmark = pytest.mark.reference

TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "hi",
    "x",
    ("Jupiter, the largest planet in our solar system, has a prominent red spot. " * 4).strip(),
    ("Saturn, famous for its rings, is sometimes mistaken for the Red Planet. " * 9).strip(),
]


def _ids(rng, n, vocab):
    ids = rng.integers(3, vocab, n)
    ids[0] = 2
    if n > 1:
        ids[-1] = 1
    return ids


# ---------------------------------------------------------------- tiny model, through text


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return EmbeddingGemma(tiny_dir, dtype="float32")


@pytest.mark.parametrize("prompt_name", [
    None, "query", "document", "BitextMining", "Clustering", "Classification", "InstructionRetrieval",
    "MultilabelClassification", "PairClassification", "Reranking", "Retrieval", "Retrieval-query",
    "Retrieval-document", "STS", "Summarization",
])
def test_every_prompt_name(tiny, tiny_ref, prompt_name):
    ref = tiny_ref.encode(TEXTS, prompt_name=prompt_name, batch_size=4)
    ours = tiny.encode(TEXTS, prompt_name=prompt_name, batch_size=4)
    assert_parity("tiny: prompts", ours, ref)


def test_query_and_document_wrappers(tiny, tiny_ref):
    assert_parity("tiny: encode_query/document", tiny.encode_query(TEXTS), tiny_ref.encode_query(TEXTS))
    assert_parity("tiny: encode_query/document", tiny.encode_document(TEXTS), tiny_ref.encode_document(TEXTS))
    titles = ["Mars", None, "x", "Planets", "Jupiter", "Saturn"]
    for t, title in zip(TEXTS, titles):
        prompt = f"title: {'none' if title is None else title} | text: "
        ref = tiny_ref.encode([t], prompt=prompt)
        assert_parity("tiny: document titles", tiny.encode_document([t], titles=[title]), ref)


# Outer whitespace: sentence-transformers 6 tokenizes prompt + text as given (5 stripped it)
WS_TEXTS = ["Mars is red.\n", "  padded text ", "\tTabbed\t", "line one\nline two\n\n", "   ", "", " x", "hi"]


@pytest.mark.parametrize("prompt_name", [None, "query", "document"])
def test_outer_whitespace_is_kept_as_sentence_transformers_6(tiny, tiny_ref, prompt_name):
    ref = tiny_ref.encode(WS_TEXTS, prompt_name=prompt_name)
    assert_parity("tiny: outer whitespace", tiny.encode(WS_TEXTS, prompt_name=prompt_name), ref)
    # and the whitespace matters: the stripped texts are other inputs, far outside the parity bar
    stripped = tiny.encode([t.strip() for t in WS_TEXTS[:4]], prompt_name=prompt_name)
    assert (np.abs(stripped - ref[:4]).max(axis=1) > 10 * ABS_BAR).all()


def test_outer_whitespace_in_the_wrappers(tiny, tiny_ref):
    assert_parity("tiny: outer whitespace", tiny.encode_query(WS_TEXTS), tiny_ref.encode_query(WS_TEXTS))
    assert_parity("tiny: outer whitespace", tiny.encode_document(WS_TEXTS), tiny_ref.encode_document(WS_TEXTS))
    titles = [" Mars ", None, "x\n", "", "  ", None, "t", "T"]
    for t, title in zip(WS_TEXTS, titles):
        ref = tiny_ref.encode([t], prompt=f"title: {'none' if title is None else title} | text: ")
        assert_parity("tiny: outer whitespace", tiny.encode_document([t], titles=[title]), ref)
    tokens = tiny_ref.tokenize(WS_TEXTS)
    ours = tiny.tokenize(WS_TEXTS)
    np.testing.assert_array_equal(ours["input_ids"], tokens["input_ids"].numpy())
    np.testing.assert_array_equal(ours["attention_mask"], tokens["attention_mask"].numpy())


def test_strip_whitespace_option_is_sentence_transformers_5(tiny_dir, tiny_ref):
    """strip_whitespace=True: (prompt + text).strip() is tokenized, as sentence-transformers 5 did."""
    st5 = EmbeddingGemma(tiny_dir, strip_whitespace=True, dtype="float32")
    prompt = st5.prompts["query"]
    ref = tiny_ref.encode([(prompt + t).strip() for t in WS_TEXTS])
    assert_parity("tiny: strip_whitespace=True", st5.encode_query(WS_TEXTS), ref)
    ref = tiny_ref.encode([t.strip() for t in WS_TEXTS])
    assert_parity("tiny: strip_whitespace=True", st5.encode(WS_TEXTS), ref)
    titled = tiny_ref.encode([f"title: {ti} | text: {t}".strip() for t, ti in zip(WS_TEXTS, ["a "] * len(WS_TEXTS))])
    assert_parity("tiny: strip_whitespace=True", st5.encode_document(WS_TEXTS, titles=["a "] * len(WS_TEXTS)), titled)
    assert st5.tokenize(" x\n")["input_ids"].tolist() == st5.tokenize("x")["input_ids"].tolist()


def test_explicit_prompt(tiny, tiny_ref):
    ref = tiny_ref.encode(TEXTS, prompt="task: fact checking | query: ")
    assert_parity("tiny: prompts", tiny.encode(TEXTS, prompt="task: fact checking | query: "), ref)


@pytest.mark.parametrize("dim", [32, 16, 8])
@pytest.mark.parametrize("normalize", [True, False])
def test_matryoshka_and_normalize(tiny, tiny_ref, dim, normalize):
    ref = tiny_ref.encode(TEXTS, truncate_dim=dim, normalize_embeddings=normalize, prompt_name="query")
    ours = tiny.encode(TEXTS, truncate_dim=dim, normalize_embeddings=normalize, prompt_name="query")
    assert ours.shape == (len(TEXTS), dim)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    else:  # a prefix of the unit vector: shorter than 1
        assert (np.linalg.norm(ours, axis=1) < 1.0).all()
    assert_parity(f"tiny: matryoshka normalize={normalize}", ours, ref)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 32])
def test_mixed_length_batches(tiny, tiny_ref, batch_size):
    texts = TEXTS * 3
    ref = tiny_ref.encode(texts, batch_size=7)
    assert_parity("tiny: mixed batches", tiny.encode(texts, batch_size=batch_size), ref)


def test_truncation_matches(tiny_dir, tiny_ref):
    model = EmbeddingGemma(tiny_dir, max_seq_length=40, dtype="float32")
    tiny_ref.max_seq_length = 40
    try:
        with pytest.warns(UserWarning, match="truncated"):
            ours = model.encode(TEXTS)
        ref = tiny_ref.encode(TEXTS)
    finally:
        tiny_ref.max_seq_length = 512
    assert_parity("tiny: truncation", ours, ref)
    toks = model.tokenize(TEXTS[-1])["input_ids"][0]
    assert len(toks) == 40 and toks[0] == 2 and toks[-1] == 1


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_stored_weights(tmp_path, tiny_dir, dtype):
    import refmodel

    folder = tmp_path / dtype
    shutil.copytree(tiny_dir, folder)
    refmodel.convert_dtype(folder, dtype)
    model = EmbeddingGemma(folder, dtype="float32")
    assert model.info["weight_dtype"] == {"bfloat16": "BF16", "float16": "F16"}[dtype]
    ref = refmodel.load_reference(folder).encode(TEXTS)
    assert_parity(f"tiny: {dtype} weights", model.encode(TEXTS), ref)


def test_scalar_kernels_match_reference(tiny_dir, tiny_ref, monkeypatch):
    monkeypatch.setenv("EMBGEMMA_ISA", "scalar")
    model = EmbeddingGemma(tiny_dir, dtype="float32")
    assert model.info["isa"] == "scalar"
    assert_parity("tiny: scalar ISA", model.encode(TEXTS), tiny_ref.encode(TEXTS))


def test_window_matters(tiny_dir, tiny):
    """The sliding window changes the result for long inputs, so the parity cases above would catch a
    wrong window: the same model with a window wider than any input gives a clearly different
    embedding for a long text, and bitwise the same one for a text inside the window."""
    folder = tiny_dir.parent / "wide_window"
    if not folder.exists():
        shutil.copytree(tiny_dir, folder)
        cfg = json.loads((folder / "config.json").read_text())
        cfg["sliding_window"] = 100000
        (folder / "config.json").write_text(json.dumps(cfg))
    wide = EmbeddingGemma(folder, dtype="float32")
    a, b = tiny.encode(TEXTS[-2]), wide.encode(TEXTS[-2])
    assert float(a @ b) < 0.9999, "window had no effect: the test models would not detect a mask bug"
    short = "hi"  # 4 tokens, inside the radius-8 window
    np.testing.assert_array_equal(tiny.encode(short), wide.encode(short))


def test_grouped_heads_odd_widths(tmp_path_factory, tiny_dir):
    """Attention's packing and tiling at shapes EmbeddingGemma does not have: 2 kv heads of 2 query heads
    each, a head width (20) that is no whole number of 16-column panels, a window radius (11) off every
    tile boundary, a global layer, and a batch whose sequences straddle tiles and packing blocks."""
    import refmodel

    arch = dict(refmodel.TINY, num_attention_heads=4, num_key_value_heads=2, head_dim=20, sliding_window=22,
                query_pre_attn_scalar=20, num_hidden_layers=3)
    folder = refmodel.build(tmp_path_factory.mktemp("gqa") / "model", arch, seed=5,
                            layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    texts = TEXTS + [("Neptune is the farthest planet from the Sun, a cold blue giant. " * 3).strip()]
    ref = refmodel.load_reference(folder).encode(texts, batch_size=8)
    for threads in (1, 2):
        model = EmbeddingGemma(folder, dtype="float32", threads=threads)
        assert_parity("grouped heads, odd widths", model.encode(texts, batch_size=8), ref)


# ---------------------------------------------------------------- full EmbeddingGemma shape, through ids


FULL_LENGTHS = [1, 2, 19, 257, 258, 600, 2048]


@pytest.mark.slow
@pytest.mark.parametrize("length", FULL_LENGTHS)
def test_full_shape_lengths(full_model, full_ref, length):
    ids = _ids(np.random.default_rng(length), length, 4096)
    ref = _ref_cached(full_ref, [ids])
    assert_parity(f"full: {length} tokens", full_model.encode_ids([ids]), ref)


@pytest.mark.slow
def test_full_shape_mixed_batch(full_model, full_ref):
    rng = np.random.default_rng(3)
    seqs = [_ids(rng, n, 4096) for n in [5, 257, 258, 100, 600, 33, 1, 300]]
    ref = _ref_cached(full_ref, seqs)
    ours = full_model.encode_ids(seqs, batch_size=8)
    assert_parity("full: mixed batch", ours, ref)
    # the same texts one by one give bitwise the same vectors: nothing leaks between packed sequences
    for s, row in zip(seqs, ours):
        np.testing.assert_array_equal(full_model.encode_ids([s])[0], row)


@pytest.mark.slow
@pytest.mark.parametrize("dim", [512, 256, 128])
def test_full_shape_matryoshka(full_model, full_ref, dim):
    rng = np.random.default_rng(5)
    seqs = [_ids(rng, n, 4096) for n in [12, 300]]
    ref = _ref_cached(full_ref, seqs)
    prefix = ref[:, :dim]
    ref_norm = prefix / np.linalg.norm(prefix, axis=1, keepdims=True)  # sentence-transformers: truncate, normalize
    assert_parity("full: matryoshka", full_model.encode_ids(seqs, truncate_dim=dim), ref_norm)
    raw = full_model.encode_ids(seqs, truncate_dim=dim, normalize_embeddings=False)
    np.testing.assert_allclose(raw, prefix, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_full_shape_half_precision_weights(tmp_path_factory, full_dir, dtype):
    import refmodel

    folder = tmp_path_factory.mktemp(dtype) / "model"
    shutil.copytree(full_dir, folder)
    refmodel.convert_dtype(folder, dtype)
    rng = np.random.default_rng(9)
    seqs = [_ids(rng, n, 4096) for n in [40, 300]]
    ref = refmodel.reference_ids(refmodel.load_reference(folder), seqs)
    assert_parity(f"full: {dtype} weights", EmbeddingGemma(folder, dtype="float32").encode_ids(seqs), ref)


@pytest.mark.slow
def test_full_shape_thread_counts_bitwise(full_model):
    rng = np.random.default_rng(4)
    seqs = [_ids(rng, n, 4096) for n in [7, 130, 290]]
    outs = []
    for t in (1, 2, 3):
        full_model.threads = t
        outs.append(full_model.encode_ids(seqs))
    full_model.threads = None
    for o in outs[1:]:
        np.testing.assert_array_equal(outs[0], o)


_REF_CACHE: dict[bytes, np.ndarray] = {}


def _ref_cached(st, seqs):
    import refmodel

    rows = []
    for s in seqs:
        key = np.asarray(s, dtype=np.int64).tobytes()
        if key not in _REF_CACHE:
            _REF_CACHE[key] = refmodel.reference_ids(st, [s])[0]
        rows.append(_REF_CACHE[key])
    return np.stack(rows)
