"""The public Python surface: shapes, dtypes, prompt resolution, options and their errors, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

import embgemma
from conftest import GOLDEN_DIR
from embgemma import DEFAULT_PROMPTS, EmbeddingGemma, cos_sim

DOCS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]


def test_shapes_and_dtypes(golden_model):
    one = golden_model.encode("hello")
    assert one.shape == (48,) and one.dtype == np.float32
    many = golden_model.encode(["hello", "world"])
    assert many.shape == (2, 48) and many.dtype == np.float32 and many.flags.c_contiguous
    np.testing.assert_array_equal(many[0], one)
    assert golden_model.encode([]).shape == (0, 48)
    assert golden_model.encode(("a", "b")).shape == (2, 48)
    assert golden_model.encode(np.array(["a", "b"])).shape == (2, 48)
    lst = golden_model.encode(["a", "b"], convert_to_numpy=False)
    assert isinstance(lst, list) and len(lst) == 2 and lst[0].shape == (48,)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-6)


def test_order_is_kept_across_batches(golden_model):
    texts = [("x" * (i * 7 % 23 + 1)) for i in range(50)]
    a = golden_model.encode(texts, batch_size=50)
    b = golden_model.encode(texts, batch_size=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[3], golden_model.encode(texts[3]))


def test_prompt_resolution(golden_model):
    t = "Which planet is known as the Red Planet?"
    q = golden_model.encode(t, prompt_name="query")
    np.testing.assert_array_equal(q, golden_model.encode(t, prompt=DEFAULT_PROMPTS["query"]))
    np.testing.assert_array_equal(q, golden_model.encode_query(t))
    np.testing.assert_array_equal(golden_model.encode(DEFAULT_PROMPTS["query"] + t), q)
    d = golden_model.encode_document(t)
    np.testing.assert_array_equal(d, golden_model.encode(t, prompt_name="document"))
    # explicit prompt wins over prompt_name, and over the wrappers' defaults
    np.testing.assert_array_equal(golden_model.encode(t, prompt_name="query", prompt="zz: "), golden_model.encode("zz: " + t))
    np.testing.assert_array_equal(golden_model.encode_query(t, prompt_name="STS"), golden_model.encode(t, prompt_name="STS"))
    assert not np.array_equal(golden_model.encode(t), q)  # default: no prompt


def test_unknown_prompt_name_lists_valid(golden_model):
    with pytest.raises(ValueError, match="unknown prompt_name 'Bogus'; this model's prompts are: .*'Clustering'.*'query'"):
        golden_model.encode("x", prompt_name="Bogus")


def test_document_titles(golden_model):
    t = DOCS[1]
    with_title = golden_model.encode_document([t], titles=["Mars"])
    np.testing.assert_array_equal(with_title, golden_model.encode([t], prompt="title: Mars | text: "))
    np.testing.assert_array_equal(golden_model.encode_document(t, titles="Mars"), with_title[0])
    np.testing.assert_array_equal(golden_model.encode_document([t], titles=[None]), golden_model.encode_document([t]))
    with pytest.raises(ValueError, match="2 titles for 1 texts"):
        golden_model.encode_document([t], titles=["a", "b"])
    with pytest.raises(ValueError, match="not both"):
        golden_model.encode_document([t], titles=["a"], prompt_name="query")
    with pytest.raises(TypeError, match="titles\\[0\\]"):
        golden_model.encode_document([t], titles=[3])


def test_prompts_table(golden_model):
    assert len(DEFAULT_PROMPTS) == 14
    assert golden_model.prompts == DEFAULT_PROMPTS
    assert golden_model.prompts["document"] == "title: none | text: "
    assert golden_model.prompts["query"] == "task: search result | query: "
    assert golden_model.prompts["Clustering"] == "task: clustering | query: "
    assert golden_model.prompts["InstructionRetrieval"] == "task: code retrieval | query: "
    assert golden_model.prompts["STS"] == "task: sentence similarity | query: "
    assert golden_model.default_prompt_name is None
    assert golden_model.similarity_fn_name == "cosine"


def test_prompts_from_the_model_folder(tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(GOLDEN_DIR, d)
    cfg = json.loads((d / "config_sentence_transformers.json").read_text())
    cfg["prompts"] = {"query": "q: ", "passage": "p: "}
    cfg["default_prompt_name"] = "query"
    (d / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    m = EmbeddingGemma(d)
    assert m.prompts == {"query": "q: ", "passage": "p: "}
    np.testing.assert_array_equal(m.encode("x"), m.encode("q: x", prompt=""))  # default prompt applies
    np.testing.assert_array_equal(m.encode_document("x"), m.encode("p: x", prompt=""))
    (d / "config_sentence_transformers.json").unlink()
    assert EmbeddingGemma(d).prompts == DEFAULT_PROMPTS  # built-in fallback


def test_truncate_dim(golden_dir, golden_model):
    m = EmbeddingGemma(golden_dir, truncate_dim=16)
    assert m.get_sentence_embedding_dimension() == 16
    v = m.encode("hello")
    assert v.shape == (16,)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, atol=1e-6)
    full = golden_model.encode("hello")
    np.testing.assert_allclose(v, full[:16] / np.linalg.norm(full[:16]), atol=1e-6)
    np.testing.assert_allclose(m.encode("hello", normalize_embeddings=False), full[:16], atol=1e-7)
    assert golden_model.encode("hello", truncate_dim=8).shape == (8,)
    for bad in (0, 49, -1, 2.5, True):
        with pytest.raises(ValueError, match="truncate_dim"):
            golden_model.encode("x", truncate_dim=bad)
        with pytest.raises(ValueError, match="truncate_dim"):
            EmbeddingGemma(golden_dir, truncate_dim=bad)


def test_bad_arguments(golden_model, golden_dir):
    with pytest.raises(ValueError, match="batch_size"):
        golden_model.encode(["x"], batch_size=0)
    with pytest.raises(TypeError, match="text 1 is int"):
        golden_model.encode(["x", 3])
    with pytest.raises(TypeError, match="bytes"):
        golden_model.encode(b"abc")
    with pytest.raises(TypeError, match="not str"):
        golden_model.encode([None])
    with pytest.raises(ValueError, match="threads"):
        EmbeddingGemma(golden_dir, threads=0)
    with pytest.raises(ValueError, match="max_seq_length"):
        EmbeddingGemma(golden_dir, max_seq_length=100000)
    with pytest.raises(ValueError, match="max_seq_length"):
        golden_model.max_seq_length = 1


def test_truncation_and_the_raise_option(golden_dir):
    m = EmbeddingGemma(golden_dir, max_seq_length=20)
    long = "abcdefghij" * 5
    with pytest.warns(UserWarning, match="1 text\\(s\\) longer than max_seq_length=20"):
        v = m.encode(["short", long])
    ids = m.tokenize(long)["input_ids"][0]
    assert len(ids) == 20 and ids[0] == m.bos_token_id and ids[-1] == m.eos_token_id
    with pytest.raises(ValueError, match="text 1 has 52 tokens, more than max_seq_length=20"):
        m.encode(["short", long], truncate=False)
    np.testing.assert_array_equal(v[1], m.encode_ids([ids])[0])


def test_encode_ids(golden_model):
    ids = golden_model.tokenize(["hello world"])["input_ids"][0]
    np.testing.assert_array_equal(golden_model.encode_ids([ids])[0], golden_model.encode("hello world"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        golden_model.encode_ids([[2, 10**6, 1]])
    with pytest.raises(ValueError, match="token_ids\\[0\\] has 0 tokens"):
        golden_model.encode_ids([[]])


def test_tokenize(golden_model):
    t = golden_model.tokenize(["ab", "abcd"])
    assert t["input_ids"].shape == (2, 6) and t["attention_mask"].sum() == 10
    assert t["input_ids"][0, 0] == 2 and t["input_ids"][0, 3] == 1 and t["input_ids"][0, 4] == 0


def test_similarity(golden_model):
    q = golden_model.encode_query("Which planet is known as the Red Planet?")
    d = golden_model.encode_document(DOCS)
    s = golden_model.similarity(q, d)
    assert s.shape == (1, 4)
    np.testing.assert_allclose(s[0], d @ q, atol=1e-6)
    np.testing.assert_allclose(cos_sim(d, d).diagonal(), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        cos_sim(np.ones(3), np.ones(4))


def test_repr_and_info(golden_model):
    r = repr(golden_model)
    assert "EmbeddingGemma(" in r and "dim=48" in r
    assert golden_model.info["isa"] in embgemma.build_info()["supported_isas"]


def test_build_info_and_version():
    info = embgemma.build_info()
    assert set(info) == {"version", "compiled_isas", "supported_isas", "chosen_isa", "isa_note", "selfcheck",
                         "cpu_features", "openmp", "default_threads"}
    assert "scalar" in info["compiled_isas"] and "scalar" in info["supported_isas"]
    assert info["chosen_isa"] in info["supported_isas"]
    assert info["default_threads"] >= 1
    assert embgemma.__version__ == info["version"] == metadata.version("embgemma")


def test_isa_override_env(golden_dir, monkeypatch):
    monkeypatch.setenv("EMBGEMMA_ISA", "scalar")
    assert EmbeddingGemma(golden_dir).info["isa"] == "scalar"
    assert embgemma.build_info()["chosen_isa"] == "scalar"
    monkeypatch.setenv("EMBGEMMA_ISA", "avx9000")
    with pytest.raises(ValueError, match="unknown ISA"):
        EmbeddingGemma(golden_dir)


def test_output_array_is_written_in_place(golden_model):
    """The engine writes into the array it returns: no copy between C and NumPy."""
    from embgemma import _core

    ids = np.array([2, 10, 11, 1, 2, 12, 1], dtype=np.int32)
    offsets = np.array([0, 4, 7], dtype=np.int64)
    out = np.zeros((5, 48), dtype=np.float32)
    res = golden_model._core.encode(ids, offsets, out=out, rows=np.array([4, 1]), threads=1)
    assert res is out
    assert not out[0].any() and out[4].any() and out[1].any()
    fresh = golden_model._core.encode(ids, offsets)
    assert fresh.flags.owndata and fresh.shape == (2, 48)
    np.testing.assert_array_equal(fresh, out[[4, 1]])
    with pytest.raises(ValueError, match="rows\\[0\\] = 9"):
        golden_model._core.encode(ids, offsets, out=out, rows=np.array([9, 1]))
    with pytest.raises(ValueError, match="out must be"):
        golden_model._core.encode(ids, offsets, out=np.zeros((2, 48), np.float64))
    with pytest.raises(ValueError, match="non-decreasing"):
        golden_model._core.encode(ids, np.array([0, 5, 4]))
    with pytest.raises(ValueError, match="sequence 0 is empty"):
        golden_model._core.encode(ids, np.array([0, 0, 4]))
    with pytest.raises(ValueError, match="offsets must lie within"):
        golden_model._core.encode(ids, np.array([0, 4, 9]))
    with pytest.raises(_core.ModelFormatError.__mro__[1]):  # EmbGemmaError is the base
        raise _core.ModelFormatError("x")


def _cli(*args, stdin=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "embgemma", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_info():
    r = _cli("info", "--model", str(GOLDEN_DIR))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["build"]["version"] == embgemma.__version__
    assert out["model"]["output_dim"] == 48 and out["model"]["max_seq_length"] == 256


def test_cli_encode_json_lines(golden_model):
    r = _cli("encode", "--model", str(GOLDEN_DIR), "--prompt-name", "query", "--dim", "16", "hello", "red planet")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["index"] for x in rows] == [0, 1] and rows[1]["text"] == "red planet"
    want = golden_model.encode(["hello", "red planet"], prompt_name="query", truncate_dim=16)
    np.testing.assert_allclose(np.array([x["embedding"] for x in rows]), want, atol=1e-7)


def test_cli_encode_stdin_to_npy(tmp_path, golden_model):
    out = tmp_path / "e.npy"
    r = _cli("encode", "--model", str(GOLDEN_DIR), "-o", str(out), "-", stdin="first line\nsecond line\n")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), golden_model.encode(["first line", "second line"]))


def test_cli_errors(tmp_path):
    r = _cli("encode", "--model", str(tmp_path / "missing"), "x")
    assert r.returncode == 1 and "no such file or folder" in r.stderr
    r = _cli("encode", "--model", str(GOLDEN_DIR), "--prompt-name", "nope", "x")
    assert r.returncode == 1 and "unknown prompt_name" in r.stderr


def test_progress_bar_follows_sentence_transformers(golden_model, capsys):
    """tqdm bar: shown when asked, or by default when the logger is at INFO (as sentence-transformers
    decides), silent otherwise. It counts texts, so its total is exact from the start whatever the
    batching (a token budget cannot know its batches before tokenizing)."""
    import logging

    pytest.importorskip("tqdm")
    texts = [f"text {i}" for i in range(10)]
    golden_model.encode(texts, batch_size=3, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "Encoding" in err and "10/10" in err
    golden_model.encode(texts * 300, show_progress_bar=True)  # several chunks and token-budget batches
    assert "3000/3000" in capsys.readouterr().err
    golden_model.encode(texts, batch_size=3)
    assert "Encoding" not in capsys.readouterr().err
    log = logging.getLogger("embgemma")
    old = log.level
    log.setLevel(logging.INFO)
    try:
        golden_model.encode(texts, batch_size=3)
    finally:
        log.setLevel(old)
    assert "Encoding" in capsys.readouterr().err
    golden_model.encode(texts, batch_size=3, show_progress_bar=False)
    assert "Encoding" not in capsys.readouterr().err


class _CountingCore:
    """Stands in for model._core: records (texts, tokens) of every engine call."""

    def __init__(self, core):
        self.core, self.calls = core, []

    def __getattr__(self, name):
        return getattr(self.core, name)

    def encode(self, ids, offsets, **kw):
        self.calls.append((len(offsets) - 1, int(offsets[-1] - offsets[0])))
        return self.core.encode(ids, offsets, **kw)


def test_default_batches_by_token_budget(golden_dir, monkeypatch):
    """batch_size=None (the default) fills each engine call up to a token budget, so short texts go
    by the hundred; a given batch_size is honoured (and still capped in tokens); the numbers are the
    same bit for bit either way."""
    from embgemma import batching

    m = EmbeddingGemma(golden_dir)
    counting = m._core = _CountingCore(m._core)
    texts = [f"short text {i}" for i in range(600)] + ["a longer text " * 8 for _ in range(5)]
    default = m.encode(texts)
    budget = batching.TOKEN_BUDGET
    assert all(tokens <= budget for _, tokens in counting.calls)
    assert sum(n for n, _ in counting.calls) == len(texts)
    longest = int(m.tokenize(texts)["attention_mask"].sum(1).max())
    assert all(tokens > budget - longest for _, tokens in counting.calls[:-1]), counting.calls  # each one full
    counting.calls.clear()
    np.testing.assert_array_equal(m.encode(texts, batch_size=32), default)
    assert [n for n, _ in counting.calls] == [32] * 18 + [29]
    counting.calls.clear()
    monkeypatch.setattr(batching, "MAX_BATCH_TOKENS", 100)
    np.testing.assert_array_equal(m.encode(texts[-5:], batch_size=4), default[-5:])
    assert [n for n, _ in counting.calls] == [1] * 5  # 100+ tokens each: the token cap splits the batch
    counting.calls.clear()
    np.testing.assert_array_equal(m.encode_ids(m.tokenize(texts[:50])["input_ids"][:, :6]), m.encode_ids(
        m.tokenize(texts[:50])["input_ids"][:, :6], batch_size=1))
    for bad in (0, -1, 2.5, True, "32"):
        with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
            m.encode(["x"], batch_size=bad)


def test_sentence_transformers_encode_arguments(golden_model):
    """convert_to_tensor, device, output_value and inputs= as sentence-transformers takes them."""
    torch = pytest.importorskip("torch")
    texts = ["hello", "red planet"]
    want = golden_model.encode(texts)
    t = golden_model.encode(texts, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and tuple(t.shape) == (2, 48)
    np.testing.assert_array_equal(t.numpy(), want)
    one = golden_model.encode("hello", convert_to_tensor=True, convert_to_numpy=False)
    assert isinstance(one, torch.Tensor) and tuple(one.shape) == (48,)
    q = golden_model.encode(texts, convert_to_tensor=True, precision="int8")
    assert q.dtype == torch.int8 and tuple(q.shape) == (2, 48)
    for wrapper in (golden_model.encode_query, golden_model.encode_document):
        np.testing.assert_array_equal(wrapper(texts, convert_to_tensor=True, device="cpu").numpy(), wrapper(texts))
    np.testing.assert_array_equal(
        golden_model.encode_document(texts, titles=["a", None], convert_to_tensor=True).numpy(),
        golden_model.encode_document(texts, titles=["a", None]))
    for dev in (None, "cpu", "CPU", "cpu:0", torch.device("cpu"), ["cpu", "cpu"]):
        np.testing.assert_array_equal(golden_model.encode(texts, device=dev), want)
    for dev in ("cuda", "cuda:0", "mps", torch.device("meta"), ["cpu", "cuda:1"], "npu"):
        with pytest.raises(ValueError, match="embgemma runs on the CPU only"):
            golden_model.encode(texts, device=dev)
    np.testing.assert_array_equal(golden_model.encode(texts, output_value="sentence_embedding"), want)
    for value in ("token_embeddings", None):
        with pytest.raises(NotImplementedError, match="pooled sentence embeddings only"):
            golden_model.encode(texts, output_value=value)
    with pytest.raises(ValueError, match="output_value must be 'sentence_embedding'"):
        golden_model.encode(texts, output_value="embedding")
    np.testing.assert_array_equal(golden_model.encode(inputs=texts), want)
    np.testing.assert_array_equal(golden_model.encode_query(inputs=texts), golden_model.encode_query(texts))
    np.testing.assert_array_equal(golden_model.encode_document(inputs=texts, titles=["a", "b"]),
                                  golden_model.encode_document(texts, titles=["a", "b"]))
    with pytest.raises(TypeError, match="both sentences and inputs"):
        golden_model.encode(texts, inputs=texts)
    with pytest.raises(TypeError, match="needs the texts"):
        golden_model.encode()


def test_convert_to_tensor_without_torch(golden_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(ImportError, match="convert_to_tensor=True needs PyTorch"):
        golden_model.encode(["x"], convert_to_tensor=True)
    assert golden_model.encode(["x"]).shape == (1, 48)


def test_strip_whitespace_option(golden_dir, golden_model):
    """Default: outer whitespace is part of the text (sentence-transformers 6); strip_whitespace=True
    strips prompt + text first (sentence-transformers 5)."""
    assert golden_model.strip_whitespace is False
    padded, plain = " Mars is red.\n", "Mars is red."
    assert not np.array_equal(golden_model.encode(padded), golden_model.encode(plain))
    st5 = EmbeddingGemma(golden_dir, strip_whitespace=True)
    assert "strip_whitespace=True" in repr(st5)
    np.testing.assert_array_equal(st5.encode(padded), golden_model.encode(plain))
    np.testing.assert_array_equal(st5.encode_query(padded), golden_model.encode(" " + plain, prompt_name="query"))
    np.testing.assert_array_equal(st5.encode_query(plain + " \n"), golden_model.encode_query(plain))
    np.testing.assert_array_equal(st5.tokenize(padded)["input_ids"], golden_model.tokenize(plain)["input_ids"])
    st5.strip_whitespace = False
    np.testing.assert_array_equal(st5.encode(padded), golden_model.encode(padded))
    with pytest.raises(TypeError, match="strip_whitespace must be True or False"):
        EmbeddingGemma(golden_dir, strip_whitespace="yes")
