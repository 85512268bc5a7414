"""Run llama.cpp's own convert_hf_to_gguf.py on the benchmark model, with one vocabulary shim.

Usage (with llama.cpp's converter dir and its gguf-py on PYTHONPATH):
    python gguf_convert.py MODEL_DIR --outtype f32 --outfile X.gguf --sentence-transformers-dense-modules

Why a shim: for a Gemma 3 folder without the SentencePiece ``tokenizer.model`` (ours carries only
``tokenizer.json``, as the shared Gemma 3 tokenizer does), the converter falls back to its GPT-2
byte-level BPE vocabulary path, which (a) asserts on the added token id 262144 that lies beyond
the 262,144-row embedding table and (b) would describe the wrong kind of tokenizer. The shim writes
the SentencePiece-style ("llama") vocabulary that a converted google/embeddinggemma-300m GGUF has,
from tokenizer.json: the first vocab_size tokens, BPE merge ranks as SentencePiece scores, byte
tokens typed BYTE, special tokens CONTROL, no space prefix, add BOS and EOS. Everything else
(weights, Dense modules, hyperparameters) is the converter's unchanged code.
The benchmark still feeds every system the real tokenizer's ids; see systems.py.
"""

from __future__ import annotations

import json
import re
import sys


def _set_vocab_from_tokenizer_json(self) -> None:
    import gguf

    tj = json.loads((self.dir_model / "tokenizer.json").read_text(encoding="utf-8"))
    model = tj["model"]
    n = int(self.hparams["vocab_size"])
    id2tok = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    rank: dict[str, int] = {}
    for i, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, i)
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(n):
        t = id2tok.get(i)
        if t is None:
            t = added[i]["content"] if i in added else f"[PAD{i}]"
        tokens.append(t)
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
        scores.append(-float(rank[t]) if t in rank else (0.0 if len(t) == 1 else -1e9))
    unk = model.get("unk_token")
    if unk is not None and unk in model["vocab"] and model["vocab"][unk] < n:
        types[model["vocab"][unk]] = gguf.TokenType.UNKNOWN
    w = self.gguf_writer
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    special = gguf.SpecialVocab(self.dir_model, n_vocab=n)
    special.add_to_gguf(w)
    w.add_add_space_prefix(False)


def main() -> None:
    import convert_hf_to_gguf  # noqa: F401  (llama.cpp's converter, imported as a module)
    from conversion import gemma

    model_dir = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    from pathlib import Path

    if model_dir and not (Path(model_dir) / "tokenizer.model").is_file():
        gemma.EmbeddingGemma.set_vocab = _set_vocab_from_tokenizer_json
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
