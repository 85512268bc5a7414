"""The C test driver's input (tests/c/driver.c, run by tests/c/run.sh natively and under QEMU for
ARM64): tests/data/golden_tokens.json must hold exactly the token ids the Python layer feeds the
engine for the golden cases, so the driver's comparison with golden_expected.npz is the same test
as tests/test_golden.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from conftest import assert_parity

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("golden_tokens", HERE / "c" / "golden_tokens.py")
golden_tokens = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden_tokens)


def test_golden_tokens_file_is_current():
    committed = (HERE / "data" / "golden_tokens.json").read_text()
    assert committed == golden_tokens.render(golden_tokens.golden_tokens()), (
        "tests/data/golden_tokens.json is stale: run python tests/c/golden_tokens.py"
    )


def test_the_token_ids_give_the_golden_embeddings(golden_model):
    """Encoding the file's ids as the driver does (one batch, the case's width and normalization)
    gives what encode gives for the texts, bit for bit, and so the expected embeddings."""
    tokens = json.loads((HERE / "data" / "golden_tokens.json").read_text())["cases"]
    spec = json.loads((HERE / "data" / "golden_cases.json").read_text())
    expected = np.load(HERE / "data" / "golden_expected.npz")
    assert list(tokens) == [name for name, _ in spec["cases"]] == list(expected.keys())
    for name, kwargs in spec["cases"]:
        c = tokens[name]
        ours = golden_model.encode_ids(c["ids"], batch_size=len(c["ids"]), truncate_dim=c["dim"],
                                       normalize_embeddings=c["normalize"])
        np.testing.assert_array_equal(ours, golden_model.encode(spec["texts"], **kwargs))
        assert_parity(f"golden tokens: {name}", ours, expected[name])
