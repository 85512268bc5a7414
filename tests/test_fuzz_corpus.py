"""The fuzzers' corpus (seeds, and every input that once crashed a target) replayed through the
extension as it is built: each parser input is either accepted or a clean exception; each encode input
(one eg_encode call, see eg_test_encode in csrc/testing.c) keeps the C API contract on the golden model."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import GOLDEN_DIR
from embgemma import EmbGemmaError, _core

CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
CASES = sorted(p for p in CORPUS.rglob("*") if p.is_file())
PARSERS = ("gguf", "safetensors", "config")


@pytest.fixture(scope="module")
def core_model():
    return _core.Model(str(GOLDEN_DIR))


def test_corpus_is_present():
    assert {p.parent.name for p in CASES} >= {*PARSERS, "encode"}


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_input_is_handled(path, core_model):
    kind = path.parent.name
    if kind == "encode":
        try:
            core_model._test_encode(path.read_bytes())
        except (ValueError, MemoryError) as e:
            # EG_ERR_INTERNAL (a plain EmbGemmaError) is the contract oracle's verdict: a bug
            assert not (type(e) is EmbGemmaError), str(e)
        return
    assert kind in PARSERS
    try:
        _core._test_parse(kind, path.read_bytes())
    except (EmbGemmaError, MemoryError):
        pass


@pytest.mark.parametrize("path", sorted((CORPUS / "config").glob("*.json")), ids=lambda p: p.name)
def test_config_seeds_are_accepted(path):
    """The seeds are real model-folder files: each is accepted by its reader, so the hook runs them."""
    _core._test_parse("config", path.read_bytes())


def test_config_hook_refuses():
    with pytest.raises(_core.UnsupportedModelError, match="model_type"):
        _core._test_parse("config", b'{"hidden_size": 8}')
    with pytest.raises(_core.ModelFormatError, match="invalid JSON"):
        _core._test_parse("config", b'{"weight_map": ')


def test_encode_hook_checks_the_call(core_model):
    """A valid seed encodes; the fixed overflow (offsets INT64_MIN) is refused as a ValueError."""
    core_model._test_encode((CORPUS / "encode" / "many.bin").read_bytes())
    with pytest.raises(ValueError, match="negative offset"):
        core_model._test_encode((CORPUS / "encode" / "crash-offset-int64-min.bin").read_bytes())
