"""GGUF side of loading: the tokenizer rebuilt from a GGUF's own metadata.

llama.cpp stores Gemma's SentencePiece vocabulary in the GGUF (``tokenizer.ggml.*``): the pieces,
their scores and their types, but no merge list. SentencePiece's BPE merges any adjacent pair whose
concatenation is a piece, highest score first; Hugging Face ``tokenizers`` expresses the same thing
as a BPE model whose merges are every split of every piece, ordered by the merged piece's score.
Building that gives the same ids as the model's ``tokenizer.json`` (checked in the tests).
"""

from __future__ import annotations

import warnings
from typing import Any

from . import _core

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _spm_merges(tokens: list[str], scores, types) -> list[tuple[str, str]]:
    """Every (left, right) split of every mergeable piece, best merged-piece score first.

    Within one piece, longer left parts come first (the order transformers' converter writes).
    Control and byte pieces are never the result of a merge.
    """
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    found: list[tuple[float, int, int, str, str]] = []
    for pid, piece in enumerate(tokens):
        if len(piece) < 2 or types[pid] in (CONTROL, BYTE) or vocab[piece] != pid:
            continue
        score = -float(scores[pid])
        for cut in range(len(piece) - 1, 0, -1):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                found.append((score, pid, len(piece) - cut, left, right))
    found.sort(key=lambda m: (m[0], m[1], m[2]))
    return [(m[3], m[4]) for m in found]


def tokenizer_from_gguf(meta: dict[str, Any], path: str):
    """A ``tokenizers.Tokenizer`` equivalent to the model's tokenizer.json, plus (bos_id, eos_id).

    Adds EmbeddingGemma's ``<bos> ... <eos>`` template: the model was trained with both, and a GGUF
    that says otherwise (or says nothing, as some Ollama conversions) would give other embeddings.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in meta:
        raise _core.ModelFormatError(
            f"{path}: the GGUF carries no tokenizer (tokenizer.ggml.model / tokens); put the model's "
            "tokenizer.json (and tokenizer_config.json) beside it"
        )
    if kind != "llama":
        raise _core.UnsupportedModelError(
            f"{path}: tokenizer.ggml.model is {kind!r}; EmbeddingGemma's is a SentencePiece BPE ('llama'). "
            "Put the model's tokenizer.json beside the GGUF to use it instead."
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    n = len(tokens)
    scores = meta.get("tokenizer.ggml.scores")
    types = meta.get("tokenizer.ggml.token_type")
    if scores is None or len(scores) != n or types is None or len(types) != n:
        raise _core.ModelFormatError(
            f"{path}: tokenizer.ggml.scores and token_type must have one entry per token ({n})"
        )
    types = [int(t) for t in types]

    def special_id(key: str, default: int) -> int:
        v = meta.get(f"tokenizer.ggml.{key}", default)
        if not isinstance(v, int) or not 0 <= v < n:
            raise _core.ModelFormatError(f"{path}: tokenizer.ggml.{key} = {v!r} is not a token id")
        return v

    bos_id, eos_id = special_id("bos_token_id", 2), special_id("eos_token_id", 1)
    unk_id = special_id("unknown_token_id", 3)
    for key, want in (("add_bos_token", True), ("add_eos_token", True)):
        if meta.get(f"tokenizer.ggml.{key}", want) is not want:
            warnings.warn(
                f"{path}: tokenizer.ggml.{key} is {meta.get(f'tokenizer.ggml.{key}')!r}; EmbeddingGemma is "
                "trained on <bos> text <eos>, so both are added anyway (as sentence-transformers does)",
                stacklevel=3,
            )

    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    bpe = models.BPE(
        vocab=vocab,
        merges=_spm_merges(tokens, scores, types),
        unk_token=tokens[unk_id],
        fuse_unk=True,
        byte_fallback=True,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Replace(" ", "\u2581")  # no dummy prefix: Gemma 3 adds none
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    # control pieces and user-defined pieces are matched whole in the raw text, as SentencePiece does
    added = [
        AddedToken(tokens[i], special=types[i] == CONTROL, normalized=False)
        for i in range(n)
        if types[i] in (CONTROL, USER_DEFINED) and vocab[tokens[i]] == i
    ]
    tok.add_tokens(added)
    bos, eos = tokens[bos_id], tokens[eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0",
        pair=f"{bos}:0 $A:0 {eos}:0 $B:1 {eos}:1",
        special_tokens=[(bos, bos_id), (eos, eos_id)],
    )
    return tok, bos_id, eos_id
