"""Other checkpoints than the published one: a fine-tuned sentence-transformers model with its own
prompts, default prompt, max_seq_length and Dense widths; a quantization-aware (QAT) release, whose
weights lie on a 4-bit grid but are stored as bfloat16 safetensors. Each runs with its own settings
and matches sentence-transformers on the same folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_parity, record_fidelity
from embgemma import EmbeddingGemma

pytestmark = pytest.mark.reference

TEXTS = ["Which planet is known as the Red Planet?", "hi", "x",
         ("Saturn, famous for its rings, is sometimes mistaken for the Red Planet. " * 3).strip()]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    import refmodel

    d = refmodel.build(tmp_path_factory.mktemp("ft") / "m", refmodel.TINY, seed=21, max_seq_length=24,
                       dense_dims=(96, 48))
    cfg_path = d / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prompts"] = {"query": "find: ", "doc": "passage: ", "cluster": "group: "}
    cfg["default_prompt_name"] = "cluster"
    cfg_path.write_text(json.dumps(cfg))
    return d


def test_finetuned_checkpoint_uses_its_own_settings(finetuned):
    import refmodel

    m = EmbeddingGemma(finetuned, dtype="float32")
    ref = refmodel.load_reference(finetuned)
    assert m.prompts == {"query": "find: ", "doc": "passage: ", "cluster": "group: "}
    assert m.default_prompt_name == "cluster"
    assert m.max_seq_length == 24 == ref.max_seq_length
    ref_dim = getattr(ref, "get_embedding_dimension", None) or ref.get_sentence_embedding_dimension
    assert m.get_sentence_embedding_dimension() == 48 == m.get_embedding_dimension() == ref_dim()
    with pytest.warns(UserWarning, match="truncated"):
        ours = m.encode(TEXTS)  # the default prompt applies, the long text is cut at 24 tokens
    assert_parity("checkpoints: fine-tuned", ours, ref.encode(TEXTS))
    with pytest.warns(UserWarning, match="truncated"):
        assert_parity("checkpoints: fine-tuned", m.encode_query(TEXTS), ref.encode_query(TEXTS))
    with pytest.warns(UserWarning, match="truncated"):
        assert_parity("checkpoints: fine-tuned", m.encode(TEXTS, prompt_name="doc"), ref.encode(TEXTS, prompt_name="doc"))
    with pytest.raises(ValueError, match="cluster"):
        m.encode("x", prompt_name="STS")  # not one of this model's prompts


def test_qat_release_in_bfloat16(tmp_path, tiny_dir):
    """Weights on ggml's 4-bit grid (what QAT trains for), saved as bfloat16 safetensors."""
    import shutil

    import gguf
    import refmodel
    import torch
    from safetensors.torch import load_file, save_file

    d = tmp_path / "qat"
    shutil.copytree(tiny_dir, d)
    f = d / "model.safetensors"
    sd = load_file(str(f))
    for k, v in sd.items():
        if v.ndim == 2 and k != "embed_tokens.weight":
            a = v.float().numpy()
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_0)
            sd[k] = torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q4_0).reshape(a.shape).copy())
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, str(f), metadata={"format": "pt"})
    m = EmbeddingGemma(d, dtype="float32")
    assert m.info["weight_dtype"] == "BF16" and m.dtype == "float32"  # widened exactly
    ref = refmodel.load_reference(d)
    assert_parity("checkpoints: QAT bf16", m.encode(TEXTS), ref.encode(TEXTS))
    q4 = EmbeddingGemma(d, dtype="q4_0")  # and it runs on 4-bit blocks when asked
    # 4 bits + a float32 scale and an int32 zero-point sum per 32 weights (24 bytes) against bf16's 64
    assert q4.dtype == "q4_0" and q4.info["weight_bytes"] < 0.6 * m.info["weight_bytes"]
    # reported only: the tiny test model's gain-100 outlier channels make 4-bit activations' errors chaotic
    record_fidelity("checkpoints: QAT model as q4_0 (tiny)", q4.encode(TEXTS), m.encode(TEXTS), None)
