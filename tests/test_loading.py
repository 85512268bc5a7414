"""Loading is validated: every malformed, inconsistent or unsupported model folder is refused
with an exception that names the file and the problem, and never crashes the interpreter."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDEN_DIR
from embgemma import EmbeddingGemma, ModelFormatError, UnsupportedModelError
from embgemma import _core


def read_safetensors(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_safetensors(path: Path, header: dict, data: bytes) -> None:
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def edit_header(model_dir: Path, mutate) -> None:
    """Rewrite the backbone's safetensors header through mutate(header, data); the data stays as is."""
    p = model_dir / "model.safetensors"
    header, data = read_safetensors(p)
    mutate(header, data)
    write_safetensors(p, header, data)


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(GOLDEN_DIR, d)
    return d


def edit_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    path.write_text(json.dumps(cfg))


def test_copy_loads_and_matches(model_dir, golden_model):
    np.testing.assert_array_equal(EmbeddingGemma(model_dir).encode("abc"), golden_model.encode("abc"))


@pytest.mark.parametrize(
    "changes,exc,pattern",
    [
        ({"use_bidirectional_attention": False}, UnsupportedModelError, "causal Gemma 3 model"),
        ({"use_bidirectional_attention": ...}, UnsupportedModelError, "causal"),
        ({"model_type": "llama"}, UnsupportedModelError, 'model_type is "llama"'),
        ({"architectures": ["Gemma3ForCausalLM"]}, UnsupportedModelError, "Gemma3TextModel"),
        ({"hidden_size": 64}, ModelFormatError, r"shape \[\d+, 48\], expected \[\d+, 64\]"),
        ({"num_hidden_layers": 3, "layer_types": ...}, UnsupportedModelError, "unexpected tensor"),
        ({"num_hidden_layers": 5, "layer_types": ...}, ModelFormatError, "layers.4.* is missing"),
        ({"num_attention_heads": 3}, ModelFormatError, "not a multiple|shape"),
        ({"head_dim": 23}, ModelFormatError, "must be even"),
        ({"hidden_size": ...}, ModelFormatError, 'required key "hidden_size"'),
        ({"hidden_size": "48"}, ModelFormatError, "must be an integer"),
        ({"vocab_size": -5}, UnsupportedModelError, "outside the supported range"),
        ({"sliding_window_pattern": 1025, "layer_types": ...}, UnsupportedModelError,
         r'"sliding_window_pattern" = 1025 is outside the supported range 1..1024'),
        ({"rms_norm_eps": 0}, ModelFormatError, "positive number"),
        ({"attn_logit_softcapping": 50.0}, UnsupportedModelError, "softcapping"),
        ({"hidden_activation": "silu"}, UnsupportedModelError, "gelu_pytorch_tanh"),
        ({"layer_types": ["full_attention"]}, ModelFormatError, "one entry for each"),
        ({"layer_types": ["x", "x", "x", "x"]}, UnsupportedModelError, "sliding_attention"),
        ({"rope_parameters": {"full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8}}},
         UnsupportedModelError, "rope_type"),
    ],
)
def test_bad_config(model_dir, changes, exc, pattern):
    edit_json(model_dir / "config.json", **changes)
    with pytest.raises(exc, match=pattern) as info:
        EmbeddingGemma(model_dir)
    assert "config.json" in str(info.value) or "safetensors" in str(info.value)


def test_config_not_json(model_dir):
    (model_dir / "config.json").write_text('{"hidden_size": 48,, }')
    with pytest.raises(ModelFormatError, match=r"config.json: invalid JSON at byte \d+"):
        EmbeddingGemma(model_dir)


def test_config_duplicate_key(model_dir):
    text = (model_dir / "config.json").read_text().replace("{", '{"hidden_size": 48,', 1)
    (model_dir / "config.json").write_text(text)
    with pytest.raises(ModelFormatError, match='duplicate key "hidden_size"'):
        EmbeddingGemma(model_dir)


def test_legacy_transformers4_config_loads(model_dir, golden_model):
    """config.json as transformers 4.57 writes it (rope_theta + rope_local_base_freq, pattern)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp["full_attention"]["rope_theta"]
    cfg["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
    cfg["rope_scaling"] = None
    cfg.pop("layer_types")
    cfg["sliding_window_pattern"] = 2
    cfg["torch_dtype"] = cfg.pop("dtype")
    (model_dir / "config.json").write_text(json.dumps(cfg))
    np.testing.assert_array_equal(EmbeddingGemma(model_dir).encode("abc"), golden_model.encode("abc"))


def test_truncated_weights(model_dir):
    p = model_dir / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ModelFormatError, match="model.safetensors: tensor .* out of range .* truncated"):
        EmbeddingGemma(model_dir)


@pytest.mark.parametrize("size", [0, 5, 8, 20])
def test_tiny_or_garbage_weights_file(model_dir, size):
    (model_dir / "model.safetensors").write_bytes(b"\xff" * size)
    with pytest.raises(ModelFormatError, match="model.safetensors"):
        EmbeddingGemma(model_dir)


def test_header_length_beyond_file(model_dir):
    p = model_dir / "model.safetensors"
    raw = p.read_bytes()
    p.write_bytes(struct.pack("<Q", 10**12) + raw[8:])
    with pytest.raises(ModelFormatError, match="header length .* does not fit"):
        EmbeddingGemma(model_dir)


def test_wrong_byte_count_for_shape(model_dir):
    edit_header(model_dir, lambda h, d: h["norm.weight"].update(shape=[47]))
    with pytest.raises(ModelFormatError, match='"norm.weight": 192 bytes of data for a F32 tensor of 47 elements'):
        EmbeddingGemma(model_dir)


def test_huge_dims_do_not_overflow(model_dir):
    edit_header(model_dir, lambda h, d: h["norm.weight"].update(shape=[2**40, 2**40, 2**40]))
    with pytest.raises(ModelFormatError, match="norm.weight"):
        EmbeddingGemma(model_dir)


def test_unsupported_dtype(model_dir):
    edit_header(model_dir, lambda h, d: h["norm.weight"].update(dtype="I32", shape=[48]))
    with pytest.raises(UnsupportedModelError, match='"norm.weight" has type I32; embgemma reads F32, F16 and BF16'):
        EmbeddingGemma(model_dir)


def test_unknown_dtype_name(model_dir):
    edit_header(model_dir, lambda h, d: h["norm.weight"].update(dtype="F12"))
    with pytest.raises(ModelFormatError, match='unknown dtype "F12"'):
        EmbeddingGemma(model_dir)


def test_extra_tensor_is_refused(model_dir):
    bias = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    edit_header(model_dir, lambda h, d: h.update({"layers.0.self_attn.o_proj.bias": bias}))
    with pytest.raises(UnsupportedModelError, match='unexpected tensor "layers.0.self_attn.o_proj.bias"'):
        EmbeddingGemma(model_dir)


def test_sharded_checkpoint(model_dir, golden_model):
    p = model_dir / "model.safetensors"
    header, data = read_safetensors(p)
    names = sorted(k for k in header if k != "__metadata__")
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, part in shards.items():
        h, blob = {}, b""
        for n in part:
            b, e = header[n]["data_offsets"]
            h[n] = {"dtype": header[n]["dtype"], "shape": header[n]["shape"], "data_offsets": [len(blob), len(blob) + e - b]}
            blob += data[b:e]
            weight_map[n] = fname
        write_safetensors(model_dir / fname, h, blob)
    p.unlink()
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    np.testing.assert_array_equal(EmbeddingGemma(model_dir).encode("abc"), golden_model.encode("abc"))
    # an index that points a tensor at the wrong shard is refused
    weight_map[names[0]] = "model-00002-of-00002.safetensors"
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ModelFormatError, match="is not in the shard"):
        EmbeddingGemma(model_dir)
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../evil"}}))
    with pytest.raises(ModelFormatError, match="not a file name"):
        EmbeddingGemma(model_dir)


def test_pickle_weights_only(model_dir):
    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")
    with pytest.raises(UnsupportedModelError, match="pytorch_model.bin: PyTorch pickle weights are not read"):
        EmbeddingGemma(model_dir)


def test_no_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="model.safetensors: not found"):
        EmbeddingGemma(model_dir)


def test_dense_listed_but_missing(model_dir):
    (model_dir / "2_Dense" / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="2_Dense/model.safetensors: not found, but modules.json lists"):
        EmbeddingGemma(model_dir)


def test_dense_folder_missing(model_dir):
    shutil.rmtree(model_dir / "3_Dense")
    with pytest.raises(OSError, match="3_Dense/config.json"):
        EmbeddingGemma(model_dir)


def test_dense_shape_mismatch(model_dir):
    edit_json(model_dir / "2_Dense" / "config.json", out_features=95)
    with pytest.raises(ModelFormatError, match="linear.weight"):
        EmbeddingGemma(model_dir)


def test_dense_activation_must_be_identity(model_dir):
    edit_json(model_dir / "3_Dense" / "config.json", activation_function="torch.nn.modules.activation.Tanh")
    with pytest.raises(UnsupportedModelError, match="only Identity"):
        EmbeddingGemma(model_dir)


def test_no_modules_json(model_dir):
    (model_dir / "modules.json").unlink()
    with pytest.raises(UnsupportedModelError, match="modules.json: not found.*Dense head"):
        EmbeddingGemma(model_dir)


@pytest.mark.parametrize(
    "pooling,pattern",
    [
        ({"embedding_dimension": 48, "pooling_mode": "cls"}, "only mean pooling"),
        ({"embedding_dimension": 48, "pooling_mode": ["mean", "max"]}, "only mean pooling"),
        ({"word_embedding_dimension": 48, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
         "only mean pooling"),
        ({"embedding_dimension": 48, "pooling_mode": "mean", "include_prompt": False}, "include_prompt"),
    ],
)
def test_pooling_config(model_dir, pooling, pattern):
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(UnsupportedModelError, match=pattern):
        EmbeddingGemma(model_dir)


def test_sentence_transformers5_pooling_config_loads(model_dir, golden_model):
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 48, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True}))
    np.testing.assert_array_equal(EmbeddingGemma(model_dir).encode("abc"), golden_model.encode("abc"))


def test_unknown_module_type(model_dir):
    mods = json.loads((model_dir / "modules.json").read_text())
    mods.insert(2, {"idx": 9, "name": "9", "path": "", "type": "sentence_transformers.models.LayerNorm"})
    (model_dir / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(UnsupportedModelError, match="LayerNorm.*not supported"):
        EmbeddingGemma(model_dir)


def test_module_path_escape(model_dir):
    mods = json.loads((model_dir / "modules.json").read_text())
    mods[2]["path"] = "../../etc"
    (model_dir / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(ModelFormatError, match="leaves the model folder"):
        EmbeddingGemma(model_dir)


def test_without_normalize_module(model_dir, golden_model):
    mods = [m for m in json.loads((model_dir / "modules.json").read_text()) if not m["type"].endswith("Normalize")]
    (model_dir / "modules.json").write_text(json.dumps(mods))
    m = EmbeddingGemma(model_dir)
    assert m.info["normalize"] is False
    raw = m.encode("abc", normalize_embeddings=False)
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3
    np.testing.assert_allclose(raw / np.linalg.norm(raw), golden_model.encode("abc"), atol=1e-6)


def test_missing_path_and_file_path(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        EmbeddingGemma(tmp_path / "nope")
    with pytest.raises(NotADirectoryError, match="is a file"):
        EmbeddingGemma(model_dir / "config.json")


def test_missing_tokenizer(model_dir):
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json: not found"):
        EmbeddingGemma(model_dir)


def test_hub_id_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="google/embeddinggemma-300m.*accept the licence.*hf download"):
        EmbeddingGemma("google/embeddinggemma-300m")


def test_hub_id_from_local_cache(tmp_path, monkeypatch, golden_model):
    """A hub id resolves from the Hugging Face cache layout (models--org--name/snapshots/REV)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "hf" / "hub" / "models--google--embeddinggemma-300m"
    rev = "0" * 40
    shutil.copytree(GOLDEN_DIR, repo / "snapshots" / rev)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    m = EmbeddingGemma("google/embeddinggemma-300m")
    np.testing.assert_array_equal(m.encode("abc"), golden_model.encode("abc"))


def test_core_model_direct_errors():
    with pytest.raises(ValueError, match="empty model path"):
        _core.Model("")
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.Model(str(GOLDEN_DIR), "sse9")
