"""Deterministic benchmark inputs with exact token counts under the real Gemma 3 tokenizer.

Every text is the final string every system receives: the EmbeddingGemma prompt is already
prepended here (llama.cpp has no prompt concept), and systems are called with no prompt of their
own. Token counts include <bos>, <eos> and the prompt.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

DOC_PROMPT = "title: none | text: "
QUERY_PROMPT = "task: search result | query: "

# Plain English words (no proper nouns); sentences are drawn from them with a seeded RNG.
WORDS = """
the of and to in is was for on that with as by at from it an be this which or are were has have had
not but all can its one their more also been other new first time some would about into than only
two these may after most over such where when many between both under each during through however
while system data water power light city river market school family story music field energy model
method study group change process result value number level point state order form part line place
world people country company service health research science history language computer network
program project design image sound color weather garden forest ocean mountain island village road
bridge train plane ship engine machine tool paper book letter table chair window door house room
kitchen bread coffee tea milk fruit apple orange cheese dinner morning evening night summer winter
spring autumn small large early late quick slow bright dark warm cold simple complex public private
local global strong weak open closed common rare modern ancient careful quiet heavy light clean
build grow move carry write read speak listen measure compare improve reduce increase explain
describe follow create protect support develop produce provide include require report remain
consider suggest allow begin continue return travel teach learn share save spend offer accept
because although therefore meanwhile usually often rarely nearly almost quickly slowly carefully
""".split()

FILLERS = [" a", " I", " x", ".", ",", " the", " of", " and", " to", " it", " on", " is"]


def tokenizer(tokenizer_dir: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))


def n_tokens(tok, text: str) -> int:
    return len(tok.encode(text).ids)


def _sentence_words(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    start = True
    for _ in range(n):
        w = rng.choice(WORDS)
        if start:
            w = w.capitalize()
            start = False
        if rng.random() < 0.09:
            w += "."
            start = True
        elif rng.random() < 0.05:
            w += ","
        out.append(w)
    return out


def exact_text(tok, rng: random.Random, prefix: str, target: int) -> str:
    """A text `prefix + words` of exactly `target` tokens (BOS/EOS included)."""
    base = n_tokens(tok, prefix + "Text")
    if target < base:
        raise ValueError(f"target {target} is below the minimum of {base} tokens for this prompt")
    words = _sentence_words(rng, int(target * 1.2) + 8)

    def count(n: int) -> int:
        return n_tokens(tok, prefix + " ".join(words[:n]))

    # largest word count whose text stays within the target (counts grow with n, nearly monotonic)
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    n = lo
    while n > 1 and count(n) > target:
        n -= 1
    text = prefix + " ".join(words[:n])
    c = n_tokens(tok, text)
    # top up with fillers that add exactly one token each
    while c < target:
        for f in FILLERS:
            if n_tokens(tok, text + f) == c + 1:
                text += f
                c += 1
                break
        else:  # no single-token filler fits here: drop a word and top up again
            n -= 1
            text = prefix + " ".join(words[:n])
            c = n_tokens(tok, text)
    assert n_tokens(tok, text) == target, (n_tokens(tok, text), target)
    return text


def build(tokenizer_dir: str | Path, *, corpus_size: int = 1000, corpus_min: int = 10, corpus_max: int = 500,
          fixed_n: int = 32, fixed_len: int = 128, query_len: int = 20, long_len: int = 2048,
          calib_n: int = 64, seed: int = 1234) -> dict:
    """All workloads as {name: {"texts": [...], "tokens": [...], ...}}."""
    tok = tokenizer(tokenizer_dir)
    rng = random.Random(seed)
    fixed = [exact_text(tok, rng, DOC_PROMPT, fixed_len) for _ in range(fixed_n)]
    lens_rng = random.Random(seed + 1)
    lens = [lens_rng.randint(corpus_min, corpus_max) for _ in range(corpus_size)]
    corpus = [exact_text(tok, rng, DOC_PROMPT, n) for n in lens]
    query = exact_text(tok, rng, QUERY_PROMPT, query_len)
    long_doc = exact_text(tok, rng, DOC_PROMPT, long_len)
    calib_rng = random.Random(seed + 2)
    calib_lens = [calib_rng.randint(corpus_min, corpus_max) for _ in range(calib_n)]
    calib = [exact_text(tok, rng, DOC_PROMPT, n) for n in calib_lens]

    def wl(texts: list[str], desc: str) -> dict:
        t = [n_tokens(tok, s) for s in texts]
        return {"texts": texts, "tokens": t, "total_tokens": sum(t), "n": len(texts), "description": desc}

    return {
        "fixed": wl(fixed, f"{fixed_n} texts x {fixed_len} tokens (document prompt)"),
        "corpus": wl(corpus, f"{corpus_size} texts, uniform {corpus_min}..{corpus_max} tokens (document prompt)"),
        "query": wl([query], f"one {query_len}-token query (query prompt), batch 1, latency"),
        "long": wl([long_doc], f"one {long_len}-token document (document prompt)"),
        "calib": wl(calib, f"{calib_n} texts, uniform {corpus_min}..{corpus_max} tokens (batch-size calibration)"),
    }


def load_or_build(cache_dir: Path, tokenizer_dir: str | Path, **params) -> dict:
    tok_sha = hashlib.sha256((Path(tokenizer_dir) / "tokenizer.json").read_bytes()).hexdigest()[:16]
    src_sha = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    key = hashlib.sha256(json.dumps([params, tok_sha, src_sha], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"workloads-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    data = build(tokenizer_dir, **params)
    data["_key"] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return data


QUANT_CALIB_SEED = 20261207  # its own seed: a separate sample, never the measured texts


def quant_calibration(cache_dir: Path, tokenizer_dir: str | Path, n: int, *, seed: int = QUANT_CALIB_SEED,
                      corpus_min: int = 10, corpus_max: int = 500, exclude: set[str] | None = None) -> dict:
    """Texts that calibrate the static int8 quantization of a competitor (st-openvino-qint8).

    Made by the same generator as workload b (corpus-like texts, uniform corpus_min..corpus_max tokens,
    the document prompt prepended as for every system), from a separate seeded RNG, so they are never
    the measured texts themselves; `exclude` (the measured texts) is checked all the same and any
    collision is regenerated. Cached by its parameters, the tokenizer and this file's source.
    Returns {"texts", "tokens", "seed", "key", ...}; "key" hashes the texts (an export's cache key).
    """
    tok_sha = hashlib.sha256((Path(tokenizer_dir) / "tokenizer.json").read_bytes()).hexdigest()[:16]
    src_sha = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    params = {"n": n, "seed": seed, "min": corpus_min, "max": corpus_max, "prompt": DOC_PROMPT}
    key = hashlib.sha256(json.dumps([params, tok_sha, src_sha], sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"quant-calib-{key}.json"
    if path.exists():
        data = json.loads(path.read_text())
    else:
        tok = tokenizer(tokenizer_dir)
        rng = random.Random(seed)
        lens_rng = random.Random(seed + 1)
        texts = [exact_text(tok, rng, DOC_PROMPT, lens_rng.randint(corpus_min, corpus_max)) for _ in range(n)]
        data = {"texts": texts, "tokens": [n_tokens(tok, s) for s in texts], **params,
                "description": f"{n} harness-generated corpus-like texts, uniform {corpus_min}..{corpus_max} tokens, "
                               f"document prompt, seed {seed} (separate from the workloads' seed)"}
        data["key"] = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    if exclude:
        clash = [s for s in data["texts"] if s in exclude]
        if clash:  # practically impossible (different seed), but the guarantee is cheap
            raise RuntimeError(f"{len(clash)} quantization calibration texts equal measured texts; change the seed")
    data["total_tokens"] = sum(data["tokens"])
    return data
