"""Writes the seed corpus of the parser fuzzers (tests/fuzz/corpus/{gguf,safetensors,config}/).

Small but complete inputs: GGUFs in both EmbeddingGemma layouts with every tensor type the engine
reads (and one it refuses), metadata of every value type, a tokenizer list; safetensors headers of
every dtype; every JSON file of a model folder the C core reads (config.json in the transformers 4
and 5 spellings, modules.json, Pooling configs of sentence-transformers 5 and 6, a Dense config, a
shard index); eg_encode calls in the byte layout of eg_test_encode (csrc/testing.c) for the golden
model. Run once; the outputs are committed. Needs numpy and the gguf package.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def gguf_seed(path: Path, arch: str, types: list[str], extra_meta: bool) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_block_count(1)
    w.add_feed_forward_length(32)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_key_length(32)
    w.add_value_length(32)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(16)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    if arch == "gemma3":
        w.add_bool("gemma3.attention.causal", False)
        w.add_array("gemma3.attention.sliding_window_pattern", [True])
    else:
        w.add_rope_freq_base(1e6)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1e4)
    if extra_meta:
        w.add_tokenizer_model("llama")
        w.add_token_list(["<pad>", "<eos>", "<bos>", "<unk>", "\u2581a", "a", "<0x41>"])
        w.add_token_scores([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, 0.0])
        w.add_token_types([3, 3, 3, 2, 1, 1, 6])
        w.add_uint64("test.u64", 7)
        w.add_int64("test.i64", -7)
        w.add_float64("test.f64", 0.5)
        w.add_int8("test.i8", -1)
        w.add_uint16("test.u16", 3)
        w.add_array("test.ints", [1, 2, 3])
    rng = np.random.default_rng(0)
    for i, t in enumerate(types):
        a = rng.standard_normal((2, 32)).astype(np.float32)
        name = ["token_embd.weight", "blk.0.attn_q.weight", "dense_2.weight", "blk.0.ffn_up.weight", "x.weight"][i % 5]
        if t == "F32":
            w.add_tensor(name, a)
        elif t == "F16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            q = getattr(gguf.GGMLQuantizationType, t)
            w.add_tensor(name, gguf.quants.quantize(a, q), raw_dtype=q)
    w.add_tensor("output_norm.weight", np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def safetensors_seed(path: Path, dtypes: list[str], meta: bool) -> None:
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I8": 1}
    header, data = {}, b""
    for i, dt in enumerate(dtypes):
        n = 6 * sizes[dt]
        header[f"layers.0.t{i}.weight"] = {"dtype": dt, "shape": [2, 3], "data_offsets": [len(data), len(data) + n]}
        data += bytes(range(n))
    if meta:
        header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def config_seeds(d: Path) -> None:
    """The JSON files of a model folder that csrc/config.c reads, as EmbeddingGemma ships them."""
    base = {"architectures": ["Gemma3TextModel"], "model_type": "gemma3_text", "hidden_size": 768,
            "intermediate_size": 1152, "num_hidden_layers": 6, "num_attention_heads": 3, "num_key_value_heads": 1,
            "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 2048, "rms_norm_eps": 1e-06,
            "sliding_window": 512, "query_pre_attn_scalar": 256, "attn_logit_softcapping": None,
            "hidden_activation": "gelu_pytorch_tanh", "use_bidirectional_attention": True, "attention_bias": False}
    layer_types = ["sliding_attention"] * 5 + ["full_attention"]
    v4 = dict(base, rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling=None, _sliding_window_pattern=6,
              layer_types=layer_types)
    v5 = dict(base, layer_types=layer_types, rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    v5_flat = dict(base, sliding_window_pattern=6, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                   rope_local_base_freq=1e4)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
               {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
               {"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"}]
    seeds = {
        "config-transformers4.json": v4,
        "config-transformers5.json": v5,
        "config-rope-flat.json": v5_flat,
        "modules.json": modules,
        "pooling-st6.json": {"embedding_dimension": 768, "pooling_mode": "mean", "include_prompt": True},
        "pooling-st5.json": {"word_embedding_dimension": 768, "pooling_mode_cls_token": False,
                             "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                             "include_prompt": True},
        "pooling-list.json": {"pooling_mode": ["mean"]},
        "dense.json": {"in_features": 768, "out_features": 3072, "bias": False,
                       "activation_function": "torch.nn.modules.linear.Identity"},
        "index.json": {"metadata": {"total_size": 1}, "weight_map": {"embed_tokens.weight": "model-00001-of-00002.safetensors",
                                                                     "norm.weight": "model-00002-of-00002.safetensors"}},
    }
    for name, obj in seeds.items():
        (d / name).write_text(json.dumps(obj, indent=1))


def encode_seed(lengths: list[int], dim: int = 48, normalize: bool = True, threads: int = 1, rows=None,
                stride_extra: int = 0, ids: bytes | None = None) -> bytes:
    """One eg_encode call as eg_test_encode decodes it: n, dim, flags, flags2, offsets (int16), rows
    (int8), then one byte per token id (below 0xF0: the id; the golden model's vocabulary is 125)."""
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    flags = int(normalize) | (2 if rows is not None else 0)
    flags2 = ((threads + 1) << 5) | (stride_extra + 1)
    out = struct.pack("<bbBB", len(lengths), dim, flags, flags2) + struct.pack(f"<{len(offsets)}h", *offsets)
    if rows is not None:
        out += struct.pack(f"<{len(rows)}b", *rows)
    if ids is None:  # <bos> text <eos> per sequence, ids 3..124
        ids = b"".join(bytes([2] + [3 + (7 * i + n) % 122 for i in range(n - 2)] + [1]) if n >= 2 else b"\x02"
                       for n in lengths)
    return out + ids


def main() -> int:
    g = HERE / "corpus" / "gguf"
    s = HERE / "corpus" / "safetensors"
    c = HERE / "corpus" / "config"
    for d in (g, s, c):
        d.mkdir(parents=True, exist_ok=True)
    gguf_seed(g / "llama-f32-f16-bf16.gguf", "gemma-embedding", ["F32", "F16", "BF16"], True)
    gguf_seed(g / "llama-q8-q4.gguf", "gemma-embedding", ["Q8_0", "Q4_0", "Q8_0", "Q4_0"], False)
    gguf_seed(g / "ollama-mixed.gguf", "gemma3", ["BF16", "Q4_0", "F32", "Q5_0", "Q8_0"], True)
    safetensors_seed(s / "f32.safetensors", ["F32", "F32"], True)
    safetensors_seed(s / "mixed.safetensors", ["F16", "BF16", "I32", "I8"], False)
    (s / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 768, "layer_types":
                                               ["sliding_attention", "full_attention"], "rope_scaling": None,
                                               "x": [1.5e300, -0.0, "\u00e9\\n"]}))
    config_seeds(c)
    e = HERE / "corpus" / "encode"
    e.mkdir(parents=True, exist_ok=True)
    (e / "one.bin").write_bytes(encode_seed([5]))
    (e / "rows-stride.bin").write_bytes(encode_seed([3, 9, 1], dim=32, threads=2, rows=[2, 0, 5], stride_extra=2))
    (e / "many.bin").write_bytes(encode_seed([2 + 15 * i for i in range(16)], normalize=False, threads=3))
    (e / "longest.bin").write_bytes(encode_seed([256, 7], dim=1, threads=6))
    (e / "too-long.bin").write_bytes(encode_seed([257]))
    (e / "bad-ids.bin").write_bytes(encode_seed([4], ids=bytes([2, 0xF0, 0xF3, 1])))
    (e / "empty-call.bin").write_bytes(encode_seed([]))
    for p in sorted(g.iterdir()) + sorted(s.iterdir()) + sorted(c.iterdir()) + sorted(e.iterdir()):
        print(f"{p.relative_to(HERE)}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
