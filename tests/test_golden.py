"""The committed golden model against the embeddings sentence-transformers computed for it
(tests/data/make_golden.py). Runs without the reference stack, on every ISA this CPU has."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import embgemma
from conftest import GOLDEN_DIR, assert_parity

DATA = Path(__file__).parent / "data"
CASES = json.loads((DATA / "golden_cases.json").read_text())
EXPECTED = np.load(DATA / "golden_expected.npz")


@pytest.mark.parametrize("isa", embgemma.build_info()["supported_isas"])
@pytest.mark.parametrize("case", [c[0] for c in CASES["cases"]])
def test_golden(isa, case, monkeypatch):
    monkeypatch.setenv("EMBGEMMA_ISA", isa)
    model = embgemma.EmbeddingGemma(GOLDEN_DIR, dtype="float32")
    assert model.info["isa"] == isa
    kwargs = dict(CASES["cases"])[case]
    ours = model.encode(CASES["texts"], batch_size=3, **kwargs)
    assert ours.dtype == np.float32
    assert_parity(f"golden: {case}", ours, EXPECTED[case])


def test_golden_model_shape(golden_model):
    info = golden_model.info
    assert info["hidden_size"] == 48 and info["num_hidden_layers"] == 4 and info["output_dim"] == 48
    assert info["n_dense"] == 2 and info["normalize"] is True
    assert info["sliding_window"] == 12 and info["window_radius"] == 6
    assert golden_model.max_seq_length == 256
    assert len(golden_model.prompts) == 14
