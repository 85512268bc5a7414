"""The fuzzers' corpus (seeds, and every input that once crashed a parser) replayed through the
parsers as the extension builds them: each input is either accepted or a clean exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from embgemma import EmbGemmaError, _core

CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
CASES = sorted(p for p in CORPUS.rglob("*") if p.is_file())


def test_corpus_is_present():
    assert {p.parent.name for p in CASES} >= {"gguf", "safetensors"}


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_input_is_handled(path):
    try:
        _core._test_parse(path.parent.name, path.read_bytes())
    except (EmbGemmaError, MemoryError):
        pass
