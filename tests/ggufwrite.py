"""Writes GGUF files from a sentence-transformers folder with the llama.cpp project's own writer
(the `gguf` package), the way llama.cpp's convert_hf_to_gguf.py (layout "llama", architecture
gemma-embedding) or Ollama (layout "ollama", architecture gemma3) lay EmbeddingGemma out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LLAMA_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "self_attn.o_proj": "attn_output", "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "post_feedforward_layernorm": "post_ffw_norm",
}


def gguf_name(hf: str) -> str:
    if hf == "embed_tokens.weight":
        return "token_embd.weight"
    if hf == "norm.weight":
        return "output_norm.weight"
    _, layer, rest = hf.split(".", 2)
    part = rest.rsplit(".", 1)[0]
    return f"blk.{layer}.{LLAMA_NAMES[part]}.weight"


def tokenizer_metadata(tokenizer_json: Path) -> dict:
    """tokenizer.ggml.* for a Hugging Face BPE tokenizer.json: pieces by id, a score per piece that
    orders merges as the file does (SentencePiece's meaning of scores), and llama.cpp's token types."""
    d = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    vocab = d["model"]["vocab"]
    tokens = [""] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    rank: dict[str, int] = {}
    for i, m in enumerate(d["model"].get("merges", [])):
        left, right = m if isinstance(m, list) else m.split(" ", 1)
        rank.setdefault(left + right, i)
    added = {a["content"]: a for a in d.get("added_tokens", []) if a["id"] < len(tokens)}
    types, scores = [], []
    for t in tokens:
        if t in added:
            types.append(3 if added[t]["special"] else 4)
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(6)
        else:
            types.append(1)
        scores.append(-float(rank[t]) if t in rank else 0.0)
    unk = vocab.get(d["model"].get("unk_token") or "<unk>", 3)
    types[unk] = 2
    return {"tokens": tokens, "scores": scores, "types": types, "unk": unk,
            "bos": vocab.get("<bos>", 2), "eos": vocab.get("<eos>", 1), "pad": vocab.get("<pad>", 0)}


def _data(arr: np.ndarray, qtype: str):
    """(data, raw_dtype) as the converter hands them to GGUFWriter.add_tensor."""
    import gguf

    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == "F32" or arr.ndim == 1:
        return arr, None
    if qtype == "F16":
        return arr.astype(np.float16), None
    t = getattr(gguf.GGMLQuantizationType, qtype)
    return gguf.quants.quantize(arr, t), t


def write(st_dir: Path, out: Path, *, qtype: str = "F32", layout: str = "llama", dense: bool = True,
          embed_type: str | None = None, dense_type: str = "F32", tokenizer_json: Path | None = None,
          add_eos: bool | None = True, tamper=None, ints: dict | None = None) -> Path:
    """One GGUF from a sentence-transformers folder (config.json + model.safetensors at its root and
    2_Dense / 3_Dense). Matrices in `qtype` (the token embedding in `embed_type`, default the same),
    norms as float32 1 + w, as convert_hf_to_gguf.py writes them. ``ints``: metadata integers
    (key after "<architecture>.") set or replaced as uint32 (None: dropped), to test the reader."""
    import gguf
    from safetensors.numpy import load_file

    st_dir, out = Path(st_dir), Path(out)
    cfg = json.loads((st_dir / "config.json").read_text())
    sd = load_file(str(st_dir / "model.safetensors"))
    arch = "gemma-embedding" if layout == "llama" else "gemma3"
    w = gguf.GGUFWriter(str(out), arch)
    n_layers = cfg["num_hidden_layers"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    w.add_sliding_window(cfg["sliding_window"])
    w.add_pooling_type(gguf.PoolingType.MEAN)
    types = cfg.get("layer_types") or [
        "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layers)
    ]
    if layout == "llama":
        w.add_rope_freq_base(cfg.get("rope_theta", 1e6))
        w.add_float32(f"{arch}.rope.freq_base_swa", cfg.get("rope_local_base_freq", 1e4))
    else:  # Ollama's gemma3 keys: causal flag, local/global bases, a bool per layer (true = sliding)
        w.add_bool(f"{arch}.attention.causal", False)
        w.add_float32(f"{arch}.rope.global.freq_base", cfg.get("rope_theta", 1e6))
        w.add_float32(f"{arch}.rope.local.freq_base", cfg.get("rope_local_base_freq", 1e4))
        w.add_array(f"{arch}.attention.sliding_window_pattern", [t == "sliding_attention" for t in types])
    if tokenizer_json is not None:
        tm = tokenizer_metadata(tokenizer_json)
        w.add_tokenizer_model("llama")
        w.add_token_list(tm["tokens"])
        w.add_token_scores(tm["scores"])
        w.add_token_types(tm["types"])
        w.add_bos_token_id(tm["bos"])
        w.add_eos_token_id(tm["eos"])
        w.add_unk_token_id(tm["unk"])
        w.add_pad_token_id(tm["pad"])
        w.add_add_bos_token(True)
        if add_eos is not None:
            w.add_add_eos_token(add_eos)

    for key, val in (ints or {}).items():
        kv = w.kv_data[0]
        kv.pop(f"{arch}.{key}", None)
        if val is not None:
            w.add_uint32(f"{arch}.{key}", val)

    tensors: list[tuple[str, np.ndarray, str]] = []
    for name, arr in sd.items():
        name = name.removeprefix("model.")
        g = gguf_name(name)
        if g == "output_norm.weight" and layout == "ollama":
            g = "norm.weight"
        if name.endswith("norm.weight"):
            arr = arr.astype(np.float32) + np.float32(1.0)  # Gemma3Model.norm_shift
        tensors.append((g, arr, (embed_type or qtype) if g == "token_embd.weight" else qtype))
    if dense:
        for i, sub in enumerate(("2_Dense", "3_Dense")):
            dw = load_file(str(st_dir / sub / "model.safetensors"))["linear.weight"]
            tensors.append((f"dense_{i + 2}.weight" if layout == "llama" else f"dense.{i}.weight", dw, dense_type))
    if tamper is not None:
        tensors = tamper(tensors)
    for g, arr, qt in tensors:
        data, raw = _data(arr, qt)
        if raw is None:
            w.add_tensor(g, data)
        else:
            w.add_tensor(g, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def rounded_copy(st_dir: Path, out_dir: Path, qtype: str) -> Path:
    """A copy of a sentence-transformers folder whose backbone matrices (2-D tensors) went through
    F16 or BF16 and back, stored as float32: the float32 twin of a GGUF in that type."""
    import shutil

    import gguf
    from safetensors.numpy import load_file, save_file

    shutil.copytree(st_dir, out_dir)
    f = out_dir / "model.safetensors"
    sd = load_file(str(f))
    for k, v in sd.items():
        if v.ndim == 2:
            if qtype == "F16":
                sd[k] = v.astype(np.float16).astype(np.float32)
            else:
                q = gguf.quants.quantize(np.ascontiguousarray(v, dtype=np.float32), gguf.GGMLQuantizationType.BF16)
                sd[k] = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.BF16).reshape(v.shape).astype(np.float32)
    save_file(sd, str(f), metadata={"format": "pt"})
    return out_dir
