"""Builds random-weight EmbeddingGemma models through the reference stack.

transformers' Gemma3TextModel (bidirectional) + sentence-transformers' Pooling(mean),
Dense, Dense, Normalize, saved as the sentence-transformers folder embgemma loads.
Weights get realistic scale: norm gains spread around 1, post-norms larger with three
outlier channels of gain 100, so the residual stream grows to ~1.5e3 in a few channels, as
Gemma's massive activations do (the real model reaches ~8e5); embeddings that become O(1)
after the sqrt(hidden) scale. (With gain 400, a 2-token input is so ill-conditioned that
float32 PyTorch itself is 1.2e-4 away from a float64 run: past the parity bar for any
float32 engine.) Needs torch, transformers and sentence-transformers.
"""

from __future__ import annotations

import string
from pathlib import Path

from embgemma.prompts import DEFAULT_PROMPTS as PROMPTS  # noqa: E402  (the published table)

FULL = dict(  # google/embeddinggemma-300m, vocabulary reduced (ids are fed directly)
    hidden_size=768, intermediate_size=1152, num_hidden_layers=24, num_attention_heads=3,
    num_key_value_heads=1, head_dim=256, vocab_size=4096, max_position_embeddings=2048,
    sliding_window=512, query_pre_attn_scalar=256,
)
TINY = dict(
    hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=2,
    num_key_value_heads=1, head_dim=32, max_position_embeddings=512, sliding_window=16,
    query_pre_attn_scalar=32,
)


def char_tokenizer():
    """A small character-level tokenizer with the EmbeddingGemma template <bos> ... <eos>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for w in ["▁"] + ["▁" + c for c in string.ascii_lowercase] + list(string.ascii_letters + string.digits + string.punctuation):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    tok.decoder = decoders.Replace("▁", " ")
    tok.add_special_tokens(["<pad>", "<eos>", "<bos>", "<unk>"])
    return tok


def build(out_dir: str | Path, arch: dict, *, seed: int = 0, dtype: str = "float32", tokenizer=None,
          max_seq_length: int | None = None, dense_dims: tuple[int, ...] | None = None, layer_types=None,
          sliding_window_pattern: int | None = None, outlier_gain: float = 100.0) -> Path:
    """Write a sentence-transformers folder with random weights; returns its path."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast

    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    out_dir = Path(out_dir)
    hf_dir = out_dir.parent / (out_dir.name + "_hf")
    tok = tokenizer or char_tokenizer()
    vocab = arch.get("vocab_size") or tok.get_vocab_size()
    kw = dict(arch, vocab_size=vocab, use_bidirectional_attention=True, rope_theta=1e6, rope_local_base_freq=1e4)
    if layer_types is not None:
        kw["layer_types"] = layer_types
    if sliding_window_pattern is not None:
        kw["sliding_window_pattern"] = sliding_window_pattern
    cfg = Gemma3TextConfig(**kw)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Gemma3TextModel(cfg).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=g) * 0.04)
            elif name.endswith("norm.weight"):
                post = "post_" in name
                w = torch.randn(p.shape, generator=g) * 0.3 + (1.0 if post else 0.0)
                if post:  # a few outlier channels with huge gains, as in Gemma's massive activations
                    w[:: max(1, p.shape[0] // 3)][:3] = outlier_gain
                p.copy_(w)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1] ** 0.5))
    model.save_pretrained(hf_dir)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="right", model_max_length=max_seq_length or arch["max_position_embeddings"],
    )
    fast.save_pretrained(hf_dir)

    hidden = arch["hidden_size"]
    dims = dense_dims or (hidden * 4, hidden)
    modules = [Transformer(str(hf_dir), max_seq_length=max_seq_length or arch["max_position_embeddings"]),
               Pooling(hidden, "mean")]
    prev = hidden
    for d in dims:
        dense = Dense(prev, d, bias=False, activation_function=torch.nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(torch.randn(dense.linear.weight.shape, generator=g) / prev**0.5)
        modules.append(dense)
        prev = d
    modules.append(Normalize())
    st = SentenceTransformer(modules=modules, prompts=dict(PROMPTS), device="cpu")
    st.save(str(out_dir))
    if dtype != "float32":
        convert_dtype(out_dir, dtype)
    return out_dir


def convert_dtype(folder: Path, dtype: str) -> None:
    """Rewrite every safetensors file of a model folder in bf16 or f16 (weights then upcast exactly)."""
    import torch
    from safetensors.torch import load_file, save_file

    td = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    for f in Path(folder).rglob("*.safetensors"):
        sd = load_file(str(f))
        save_file({k: v.to(td).contiguous() for k, v in sd.items()}, str(f), metadata={"format": "pt"})


def load_reference(folder: str | Path, max_seq_length: int | None = None):
    """The sentence-transformers model for a folder, computing in float32 on the CPU."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32})
    st.float()
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    return st


def reference_ids(st, seqs):
    """ST pipeline output (sentence_embedding) for token id sequences, one forward per sequence."""
    import numpy as np
    import torch

    outs = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor(np.asarray(s, dtype=np.int64))[None]
            feats = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            outs.append(st.forward(feats)["sentence_embedding"][0].float().numpy())
    return np.stack(outs)
