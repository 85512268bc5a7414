"""GGUF files (llama.cpp's gemma-embedding layout and Ollama's gemma3 layout) written at test time
with the `gguf` package from random reference models: every tensor type, both layouts, with and
without Dense; parity with the safetensors path; corrupt files; the tokenizer rebuilt from metadata."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import ggufwrite
from conftest import assert_parity, record_fidelity
from embgemma import EmbeddingGemma, ModelFormatError, UnsupportedModelError, _core

pytest.importorskip("gguf")

RNG = np.random.default_rng(3)
SEQS = [list(RNG.integers(4, 60, size=n)) for n in (1, 2, 7, 33, 40, 130)]  # ids valid in every test vocabulary
SEQS = [[2, *s, 1] for s in SEQS]


def _emb(m: EmbeddingGemma, seqs=SEQS) -> np.ndarray:
    return m.encode_ids(seqs)


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def tiny_f32(tiny_dir) -> np.ndarray:
    return _emb(EmbeddingGemma(tiny_dir))


def _write(tiny_dir, gguf_dir, name, **kw) -> Path:
    out = gguf_dir / name / "model.gguf"
    out.parent.mkdir(exist_ok=True)
    ggufwrite.write(tiny_dir, out, **kw)
    shutil.copy(tiny_dir / "tokenizer.json", out.parent / "tokenizer.json")  # the char tokenizer of the test model
    return out


# ---------------------------------------------------------------- float types: the engine's bar


@pytest.mark.parametrize("layout", ["llama", "ollama"])
def test_f32_gguf_is_the_safetensors_model(tiny_dir, gguf_dir, tiny_f32, layout):
    path = _write(tiny_dir, gguf_dir, f"f32-{layout}", qtype="F32", layout=layout)
    m = EmbeddingGemma(path)
    assert m.format == "gguf" and m.info["format"] == "gguf" and m.info["weight_dtype"] == "F32"
    assert m.dtype == "float32" and m.info["n_dense"] == 2
    out = _emb(m)
    assert_parity(f"gguf F32 {layout}", out, tiny_f32)
    np.testing.assert_array_equal(out, tiny_f32)  # same numbers, same kernels: bit for bit


@pytest.mark.parametrize("qtype", ["F16", "BF16"])
@pytest.mark.parametrize("layout", ["llama", "ollama"])
def test_half_gguf_matches_its_rounded_safetensors_twin(tiny_dir, gguf_dir, tmp_path, qtype, layout):
    path = _write(tiny_dir, gguf_dir, f"{qtype}-{layout}", qtype=qtype, layout=layout)
    twin = EmbeddingGemma(ggufwrite.rounded_copy(tiny_dir, tmp_path / "twin", qtype))
    m = EmbeddingGemma(path)
    assert m.info["weight_dtype"] == qtype
    # float32 (the suite's default, conftest): F16 and BF16 widen exactly to float32 panels
    assert m.dtype == "float32"
    assert_parity(f"gguf {qtype} {layout}", _emb(m), _emb(twin))


def test_dtype_override_on_a_gguf(tiny_dir, gguf_dir, tiny_f32):
    path = _write(tiny_dir, gguf_dir, "f32-override", qtype="F32")
    m = EmbeddingGemma(path, dtype="bfloat16")
    assert m.dtype == "bfloat16"
    record_fidelity("gguf F32 -> bfloat16 (tiny)", _emb(m), tiny_f32, 0.999)


# ---------------------------------------------------------------- ggml blocks: integer kernels


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_quantized_gguf_stays_quantized_and_is_exact(tiny_dir, gguf_dir, qtype):
    """Blocks are used as stored (no float copy): a GGUF whose matrices are Q8_0 / Q4_0 and whose
    embedding is F32 gives exactly what the safetensors model gives under dtype="q8_0" / "q4_0"
    (same ggml quantizer, same kernels)."""
    path = _write(tiny_dir, gguf_dir, f"{qtype}-embf32", qtype=qtype, embed_type="F32")
    m = EmbeddingGemma(path, dtype="auto")  # the default (conftest pins the suite's to float32): as stored
    assert m.dtype == qtype.lower() and m.dtype_note.startswith(f"auto: {qtype.lower()}, as the file stores") and m.info["attn_weights"] == qtype.lower()
    st = EmbeddingGemma(tiny_dir, dtype=qtype.lower())
    assert m.info["weight_bytes"] == st.info["weight_bytes"]
    np.testing.assert_array_equal(_emb(m), _emb(st))
    f32 = EmbeddingGemma(tiny_dir, dtype="float32")
    # packed blocks, not floats: 1 + 4/32 (Q8_0) or 0.5 + 4/32 (Q4_0) bytes per weight; the Dense head is float32
    assert m.info["weight_bytes"] < {"Q8_0": 0.45, "Q4_0": 0.35}[qtype] * f32.info["weight_bytes"]


# Fidelity of ggml's quantized types against the float32 reference, full-shape random model without
# outlier channels, as measured (min cosine over the inputs below): Q8_0 0.9995, Q4_0 0.899. A random
# 24-layer network amplifies weight noise far more than the trained model does; 4-bit weights carry
# ~7% noise per weight. The bars are those measurements, rounded down.
BARS = {"Q8_0": 0.999, "Q4_0": 0.88}
# AVX2 without VNNI quantizes activations against 8-bit weights to 7 bits (its int16 pair sums must not
# saturate; csrc/internal.h): measured on this chaotic random model 0.99782 against float32 and 0.99851
# against the same weights widened (VNNI kernels: 0.99909 and 0.99955)
BARS_AVX2 = {"Q8_0": 0.997, "Q4_0": 0.88}


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_quantized_gguf_fidelity_full_shape(full_plain_dir, tmp_path, qtype):
    path = tmp_path / f"{qtype}.gguf"
    ggufwrite.write(full_plain_dir, path, qtype=qtype)  # token_embd quantized too, as llama.cpp does
    shutil.copy(full_plain_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    rng = np.random.default_rng(5)
    seqs = [[2, *rng.integers(4, 4000, size=n), 1] for n in (1, 5, 18, 40, 126, 300)]
    model = EmbeddingGemma(path, dtype="auto")  # as stored
    assert model.dtype == qtype.lower()
    avx2 = model.info["isa"] == "avx2" and qtype == "Q8_0"
    ours = model.encode_ids(seqs)
    ref = EmbeddingGemma(full_plain_dir).encode_ids(seqs)
    record_fidelity(f"gguf {qtype} vs float32 model", ours, ref, (BARS_AVX2 if avx2 else BARS)[qtype])
    # what the integer kernels themselves cost: the same quantized weights, widened to float32 at load
    widened = EmbeddingGemma(path, dtype="float32").encode_ids(seqs)
    record_fidelity(f"gguf {qtype} int kernels vs its weights in f32", ours, widened, 0.998 if avx2 else 0.9995)


# ---------------------------------------------------------------- Dense


def test_gguf_without_dense_is_refused_with_the_fix(tiny_dir, gguf_dir):
    path = _write(tiny_dir, gguf_dir, "nodense", dense=False)
    with pytest.raises(UnsupportedModelError, match="no Dense tensors.*dense_from="):
        EmbeddingGemma(path)


def test_dense_from_completes_a_gguf(tiny_dir, gguf_dir, tiny_f32):
    path = _write(tiny_dir, gguf_dir, "nodense2", dense=False)
    m = EmbeddingGemma(path, dense_from=tiny_dir)
    assert m.info["n_dense"] == 2
    np.testing.assert_array_equal(_emb(m), tiny_f32)


def test_no_dense_opt_out_warns_and_returns_the_pooled_vector(tiny_dir, gguf_dir, tiny_f32):
    path = _write(tiny_dir, gguf_dir, "nodense3", dense=False)
    with pytest.warns(UserWarning, match="NOT EmbeddingGemma's embedding"):
        m = EmbeddingGemma(path, no_dense=True)
    out = _emb(m)
    assert out.shape == (len(SEQS), m.info["hidden_size"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_dense_from_refused_when_the_gguf_has_dense(tiny_dir, gguf_dir):
    path = _write(tiny_dir, gguf_dir, "withdense", dense=True)
    with pytest.raises(ValueError, match="own Dense tensors"):
        EmbeddingGemma(path, dense_from=tiny_dir)
    with pytest.raises(ValueError, match="GGUF files"):
        EmbeddingGemma(tiny_dir, dense_from=tiny_dir)


@pytest.mark.parametrize("dense_type", ["F16", "Q8_0"])
def test_dense_in_other_types(tiny_dir, gguf_dir, tiny_f32, dense_type):
    path = _write(tiny_dir, gguf_dir, f"dense-{dense_type}", dense_type=dense_type)
    m = EmbeddingGemma(path)
    assert m.info["weight_dtype"] == "F32"  # the head does not change what the model is stored as
    record_fidelity(f"gguf Dense {dense_type} (tiny)", _emb(m), tiny_f32, 0.999)


# ---------------------------------------------------------------- finding models


def test_folder_with_one_gguf_and_ollama_store(tiny_dir, gguf_dir, tiny_f32, tmp_path, monkeypatch):
    src = _write(tiny_dir, gguf_dir, "store-src", layout="ollama")
    folder = tmp_path / "onefile"
    folder.mkdir()
    shutil.copy(src, folder / "embeddinggemma.gguf")
    shutil.copy(tiny_dir / "tokenizer.json", folder / "tokenizer.json")
    np.testing.assert_array_equal(_emb(EmbeddingGemma(folder)), tiny_f32)

    store = tmp_path / "ollama"
    digest = "a" * 64
    (store / "blobs").mkdir(parents=True)
    shutil.copy(src, store / "blobs" / f"sha256-{digest}")
    for tag in ("latest", "300m"):
        man = store / "manifests" / "registry.ollama.ai" / "library" / "embeddinggemma" / tag
        man.parent.mkdir(parents=True, exist_ok=True)
        man.write_text(json.dumps({"schemaVersion": 2, "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 1}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    for name in ("embeddinggemma", "embeddinggemma:300m"):
        # no tokenizer.json beside a blob: the tokenizer comes from the GGUF, which has none here
        with pytest.raises(ModelFormatError, match="carries no tokenizer"):
            EmbeddingGemma(name)
    with pytest.raises(FileNotFoundError, match="ollama pull"):
        EmbeddingGemma("embeddinggemma:9b")
    from embgemma._hub import list_ollama

    names = {e["name"] for e in list_ollama()}
    assert names == {"embeddinggemma:latest", "embeddinggemma:300m"}


def test_models_command_lists_the_stores(tmp_path, monkeypatch, capsys):
    from embgemma.__main__ import main

    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "none-hf"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Ollama store" in out and "Hugging Face cache" in out


# ---------------------------------------------------------------- tokenizer from GGUF metadata

CHECKED = [
    "Hello world", "Hello world something else",
    "task: search result | query: Which planet is known as the Red Planet?",
    "  leading and trailing  ", "tabs\tand\nnewlines\n\n\n", "emoji 🙂👍🏽 and 中文 and العربية",
    "<start_of_turn>user <unused3> [multimodal]", "code: def f(x):\n    return x**2  # comment", "a" * 50,
    "control \x07 chars", "ÀÉÎÕÜ ß ñ", "http://example.com/a?b=c&d=e", "<bos> literal <eos>",
    "1234567890 3.14159 1e-9", "ﬁ ligature", "\u200b zero width \ufeff", "title: none | text: A long document.",
]


@pytest.fixture(scope="module")
def real_vocab_gguf(gemma_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny network with the real 262,144-token vocabulary and the real tokenizer in its metadata."""
    import refmodel
    from tokenizers import Tokenizer

    d = tmp_path_factory.mktemp("realvocab")
    tok = Tokenizer.from_file(str(gemma_tokenizer_dir / "tokenizer.json"))
    st = refmodel.build(d / "st", dict(refmodel.TINY, vocab_size=262144), seed=5, tokenizer=tok)
    out = d / "gguf" / "model.gguf"
    out.parent.mkdir()
    ggufwrite.write(st, out, qtype="F16", tokenizer_json=gemma_tokenizer_dir / "tokenizer.json", add_eos=None)
    return out


def test_tokenizer_from_gguf_metadata_matches_tokenizer_json(real_vocab_gguf, gemma_tokenizer_dir):
    from tokenizers import Tokenizer

    m = EmbeddingGemma(real_vocab_gguf)  # no tokenizer.json beside it; add_eos_token absent, as in Ollama files
    assert m.tokenizer_source == "gguf metadata"
    ref = Tokenizer.from_file(str(gemma_tokenizer_dir / "tokenizer.json"))
    for s in CHECKED:
        assert m.tokenizer.encode(s).ids == ref.encode(s).ids, s
    assert m.tokenizer.encode("Hello world").ids == [2, 9259, 1902, 1]
    q = "task: search result | query: Which planet is known as the Red Planet?"
    assert m.tokenizer.encode(q).ids == [2, 8071, 236787, 3927, 1354, 1109, 7609, 236787, 15311, 13401, 563, 3224,
                                         618, 506, 4855, 38342, 236881, 1]
    emb = m.encode_query(["Which planet is known as the Red Planet?", "Mars"])
    assert emb.shape == (2, m.get_sentence_embedding_dimension())


def test_gguf_read_exposes_metadata(real_vocab_gguf):
    info = _core.gguf_read(str(real_vocab_gguf))
    meta = info["metadata"]
    assert meta["general.architecture"] == "gemma-embedding"
    assert len(meta["tokenizer.ggml.tokens"]) == 262144 and meta["tokenizer.ggml.tokens"][2] == "<bos>"
    assert meta["tokenizer.ggml.scores"].dtype == np.float32
    assert meta["gemma-embedding.pooling_type"] == 1
    names = {t[0]: t for t in info["tensors"]}
    assert names["token_embd.weight"][1:] == ("F16", (262144, 64))


# ---------------------------------------------------------------- corrupt files


def _kv_str(key: str, val: str) -> bytes:
    k, v = key.encode(), val.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v


def _tensor_info(name: str, ne: tuple[int, ...], gtype: int, offset: int) -> bytes:
    n = name.encode()
    return (struct.pack("<Q", len(n)) + n + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
            + struct.pack("<IQ", gtype, offset))


def _gguf(kvs: list[bytes], infos: list[bytes], data: bytes, n_tensors=None, n_kv=None, version=3) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    body += b"\0" * ((-len(body)) % 32)
    return body + data


GOOD = _gguf([_kv_str("general.architecture", "gemma-embedding")], [_tensor_info("a.weight", (32, 2), 0, 0)],
             b"\0" * 256)


@pytest.mark.parametrize("blob,match", [
    (b"GGUX" + GOOD[4:], "not a GGUF file"),
    (GOOD[:4], "truncated"),
    (b"GGUF" + struct.pack("<I", 1) + GOOD[8:], "version 1"),
    (b"GGUF" + struct.pack(">I", 3) + GOOD[8:], "big-endian"),
    (_gguf([], [], b"", n_tensors=2**60), "more than the"),
    (_gguf([], [], b"", n_kv=2**40), "more than the"),
    (_gguf([], [_tensor_info("a", (32,), 0, 64)], b"\0" * 128), "expected 0"),
    (_gguf([], [_tensor_info("a", (32, 2**41), 0, 0)], b"\0" * 64), "absurd"),
    (_gguf([], [_tensor_info("a", (32,), 99, 0)], b"\0" * 128), "unknown ggml type 99"),
    (_gguf([], [_tensor_info("a", (31,), 8, 0)], b"\0" * 128), "multiple of 32"),
    (_gguf([], [_tensor_info("a", (32,), 0, 0), _tensor_info("a", (32,), 0, 128)], b"\0" * 256), "appears twice"),
    (_gguf([_kv_str("k", "v"), _kv_str("k", "w")], [], b""), "appears twice"),
    (_gguf([], [_tensor_info("a", (1024,), 0, 0)], b"\0" * 100), "runs past the end"),
    (_gguf([], [_tensor_info("a", (32,) * 5, 0, 0)], b""), "dimensions"),
    (_gguf([struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 9, 1)], [], b""), "array of arrays"),
    (_gguf([struct.pack("<Q", 1) + b"k" + struct.pack("<I", 13)], [], b""), "unknown value type"),
    (_gguf([struct.pack("<Q", 1) + b"k" + struct.pack("<IB", 7, 5)], [], b""), "bool must be 0 or 1"),
    (_gguf([struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 3)], [], b""), "power of two"),
    (_gguf([struct.pack("<Q", 2**62) + b"k"], [], b""), "truncated"),
])
def test_corrupt_gguf_raises(blob, match):
    with pytest.raises(ModelFormatError if "version 1" not in match and "big-endian" not in match
                       else UnsupportedModelError, match=match):
        _core._test_parse("gguf", blob)


@pytest.mark.parametrize("ints,match", [
    # the same limits and the same error as config.json's (tests/test_loading.py)
    ({"block_count": 5000}, r'"gemma-embedding.block_count" = 5000 is outside the supported range 1..1024'),
    ({"attention.sliding_window_pattern": 1025}, r"sliding_window_pattern\" = 1025 is outside .* 1..1024"),
    # derived values are held to the range of the key they stand in for
    ({"attention.key_length": None, "attention.value_length": None, "attention.head_count": 1000},
     r'"embedding_length / head_count" = 0 is outside the supported range 2..4096'),
])
def test_gguf_integers_out_of_range_are_unsupported(tiny_dir, gguf_dir, ints, match):
    path = _write(tiny_dir, gguf_dir, "range-" + "-".join(f"{k}{v}" for k, v in ints.items()), ints=ints)
    with pytest.raises(UnsupportedModelError, match=match):
        EmbeddingGemma(path)


def test_gguf_vocab_is_token_embd_rows_in_range(tiny_dir, gguf_dir):
    def two_rows(tensors):
        return [(g, a[:2] if g == "token_embd.weight" else a, q) for g, a, q in tensors]
    path = _write(tiny_dir, gguf_dir, "vocab2", tamper=two_rows)
    with pytest.raises(UnsupportedModelError, match=r'"token_embd.weight rows" = 2 is outside .* 3..16777216'):
        EmbeddingGemma(path)


def test_every_truncation_of_a_real_gguf_is_an_error(tiny_dir, gguf_dir):
    blob = _write(tiny_dir, gguf_dir, "trunc", qtype="Q4_0").read_bytes()
    _core._test_parse("gguf", blob)
    cuts = sorted(set(range(0, 4096, 3)) | set(range(4096, len(blob), max(1, len(blob) // 300))))
    for n in cuts:
        with pytest.raises((ModelFormatError, UnsupportedModelError)):
            _core._test_parse("gguf", blob[:n])


def test_corrupt_gguf_files_fail_cleanly_through_the_loader(tiny_dir, gguf_dir, tmp_path):
    good = _write(tiny_dir, gguf_dir, "corrupt-src").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFormatError, match="runs past the end"):
        EmbeddingGemma(bad)
    # an unsupported tensor type is named, with the fix
    def q5(tensors):
        return [(n, a, "Q5_0" if n == "blk.0.ffn_up.weight" else t) for n, a, t in tensors]

    path = _write(tiny_dir, gguf_dir, "q5", tamper=q5)
    with pytest.raises(UnsupportedModelError, match="blk.0.ffn_up.weight.*Q5_0.*llama-quantize"):
        EmbeddingGemma(path)
    # a tensor the architecture does not have
    path = _write(tiny_dir, gguf_dir, "extra", tamper=lambda t: t + [("blk.0.mystery.weight", np.ones(32, np.float32), "F32")])
    with pytest.raises(UnsupportedModelError, match="unexpected tensor \"blk.0.mystery.weight\""):
        EmbeddingGemma(path)
    # a missing one
    path = _write(tiny_dir, gguf_dir, "missing", tamper=lambda t: [x for x in t if x[0] != "blk.2.attn_k.weight"])
    with pytest.raises(ModelFormatError, match="blk.2.attn_k.weight\" is missing"):
        EmbeddingGemma(path)


def test_causal_gemma3_is_refused(tiny_dir, gguf_dir):
    path = _write(tiny_dir, gguf_dir, "causal", layout="ollama", dense=False)
    blob = bytearray(path.read_bytes())
    key = b"gemma3.attention.causal"
    i = blob.index(key) + len(key)
    assert blob[i : i + 5] == struct.pack("<IB", 7, 0)
    blob[i + 4] = 1
    path.write_bytes(bytes(blob))
    with pytest.raises(UnsupportedModelError, match="causal Gemma 3 language model"):
        EmbeddingGemma(path)
