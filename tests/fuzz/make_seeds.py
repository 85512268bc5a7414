"""Writes the seed corpus of the parser fuzzers (tests/fuzz/corpus/{gguf,safetensors}/).

Small but complete inputs: GGUFs in both EmbeddingGemma layouts with every tensor type the engine
reads (and one it refuses), metadata of every value type, a tokenizer list; safetensors headers of
every dtype. Run once; the outputs are committed. Needs numpy and the gguf package.
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


def main() -> int:
    g = HERE / "corpus" / "gguf"
    s = HERE / "corpus" / "safetensors"
    g.mkdir(parents=True, exist_ok=True)
    s.mkdir(parents=True, exist_ok=True)
    gguf_seed(g / "llama-f32-f16-bf16.gguf", "gemma-embedding", ["F32", "F16", "BF16"], True)
    gguf_seed(g / "llama-q8-q4.gguf", "gemma-embedding", ["Q8_0", "Q4_0", "Q8_0", "Q4_0"], False)
    gguf_seed(g / "ollama-mixed.gguf", "gemma3", ["BF16", "Q4_0", "F32", "Q5_0", "Q8_0"], True)
    safetensors_seed(s / "f32.safetensors", ["F32", "F32"], True)
    safetensors_seed(s / "mixed.safetensors", ["F16", "BF16", "I32", "I8"], False)
    (s / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 768, "layer_types":
                                               ["sliding_attention", "full_attention"], "rope_scaling": None,
                                               "x": [1.5e300, -0.0, "\u00e9\\n"]}))
    for p in sorted(g.iterdir()) + sorted(s.iterdir()):
        print(f"{p.relative_to(HERE)}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
