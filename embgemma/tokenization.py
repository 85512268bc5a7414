"""Text to token ids: the string the tokenizer gets, the Gemma 3 tokenizer with EmbeddingGemma's
``<bos> ... <eos>`` template (Hugging Face ``tokenizers``), and truncation that keeps both ends.

The model's ``tokenize`` / ``token_ids`` and the server's token counting all go through here, so a
text gets the same ids whichever door it comes in by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _core
from .loading import is_unicode, read_json


def prepare_text(text: Any, index: int, prompt: str = "", strip: bool = False) -> str:
    """The string the tokenizer gets: ``prompt + text`` as sentence-transformers 6 forms it, or with
    outer whitespace stripped (``strip``, as sentence-transformers 5 did); lone surrogates refused."""
    if not isinstance(text, str):
        raise TypeError(f"text {index} is {type(text).__name__}, not str")
    out = prompt + text
    if strip:
        out = out.strip()
    if not out.isascii():
        try:
            out.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: not Unicode text, the tokenizer cannot take it
            raise ValueError(
                f"text {index} contains a lone surrogate (U+{ord(out[e.start]):04X}) at character {e.start}, which is "
                "not valid Unicode text; fix it with text.encode('utf-8', 'replace').decode('utf-8')"
            ) from None
    return out


def load_tokenizer(folder: Path):
    """(tokenizer, bos_id, eos_id) from a folder's tokenizer.json and tokenizer_config.json, with the
    post-processor rebuilt from add_bos_token / add_eos_token as transformers does; no padding, no
    truncation (the caller truncates, keeping BOS and EOS)."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(
            f"{tok_path}: not found. A sentence-transformers folder of EmbeddingGemma ships tokenizer.json; "
            "copy it from the original model folder."
        )
    try:
        tok = Tokenizer.from_file(str(tok_path))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise _core.ModelFormatError(f"{tok_path}: cannot load: {e}") from e
    cfg_path = folder / "tokenizer_config.json"
    cfg = read_json(cfg_path) or {}

    def token_id(key: str, default: str) -> int:
        tok_str = cfg.get(key, default)
        if isinstance(tok_str, dict):  # AddedToken serialised as a dict
            tok_str = tok_str.get("content", default)
        if not isinstance(tok_str, str) or not is_unicode(tok_str):
            raise _core.ModelFormatError(f"{cfg_path}: {key} must be a token string, got {tok_str!r}")
        tid = tok.token_to_id(tok_str)
        if tid is None:
            raise _core.ModelFormatError(f"{tok_path}: has no token {tok_str!r} ({key} in {cfg_path.name})")
        return tid

    bos_id = token_id("bos_token", "<bos>")
    eos_id = token_id("eos_token", "<eos>")
    add_bos = cfg.get("add_bos_token", True)
    add_eos = cfg.get("add_eos_token", True)
    for key, value in (("add_bos_token", add_bos), ("add_eos_token", add_eos)):
        if not isinstance(value, bool):
            raise _core.ModelFormatError(f"{cfg_path}: {key} must be true or false, got {value!r}")
    # transformers rebuilds the post-processor from add_bos/add_eos; do the same when the file disagrees
    probe = tok.encode("a").ids
    has_bos = bool(probe) and probe[0] == bos_id
    has_eos = bool(probe) and probe[-1] == eos_id
    if has_bos != add_bos or has_eos != add_eos:
        bos = tok.id_to_token(bos_id)
        eos = tok.id_to_token(eos_id)
        single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
        pair = single + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
        specials = ([(bos, bos_id)] if add_bos else []) + ([(eos, eos_id)] if add_eos else [])
        tok.post_processor = TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    tok.no_padding()
    tok.no_truncation()
    return tok, bos_id, eos_id


def truncate_ids(ids: list[int], limit: int, bos_id: int, eos_id: int, direction: str = "right") -> list[int]:
    """``ids`` cut to ``limit`` tokens, keeping the special tokens the template adds (<bos> ... <eos>) and
    the first (right truncation) or the last (left) content tokens."""
    head = 1 if ids and ids[0] == bos_id else 0
    tail = 1 if ids and ids[-1] == eos_id else 0
    keep = limit - head - tail
    body = ids[head : head + keep] if direction == "right" else ids[len(ids) - tail - keep : len(ids) - tail]
    return ids[:head] + body + ids[len(ids) - tail :]
