"""dtype="auto", the default: the rule over the committed measurements (embgemma/auto_dtype.py), what a
model loaded without a dtype resolves to, EMBGEMMA_DTYPE, and where the resolved mode is shown. Its
fidelity on the real weights is asserted by tests/test_real_weights.py (the "auto" cases)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import embgemma
from conftest import GOLDEN_DIR
from embgemma import EmbeddingGemma
from embgemma.auto_dtype import CANDIDATES, FIDELITY_BAR, MEASURED, MIN_SPEEDUP, Measurement, resolve

X86 = ("scalar", "avx2", "avxvnni", "avx512", "avx512bf16", "amx")
ARM = ("scalar", "neon", "dotprod", "i8mm")


@pytest.fixture
def no_env_dtype(monkeypatch):
    monkeypatch.delenv("EMBGEMMA_DTYPE", raising=False)  # conftest pins the suite's default to float32


@pytest.mark.parametrize("isa", sorted(set(X86 + ARM)))
def test_resolution_follows_the_rule(isa):
    """The chosen mode is float32 or a measured, faithful mode at least MIN_SPEEDUP faster on every workload,
    and no other faithful mode beats it; an ISA without measurements gets float32."""
    mode, why = resolve(isa)
    assert mode in CANDIDATES and why.startswith(f"auto: {mode}")
    rows = MEASURED.get(isa, {})
    ok = {m: min(r.speed) for m, r in rows.items() if r.faithful() and min(r.speed) >= MIN_SPEEDUP}
    if not ok:
        assert mode == "float32"
    else:
        assert mode == max(ok, key=ok.get)
        assert rows[mode].worst_cos >= FIDELITY_BAR["worst_cos"] and rows[mode].top10 >= FIDELITY_BAR["top10"]


def test_table_is_well_formed():
    for isa, rows in MEASURED.items():
        assert isa in X86 + ARM, isa
        for mode, r in rows.items():
            assert mode in CANDIDATES and mode != "float32", (isa, mode)  # float32 is the unit
            assert isinstance(r, Measurement) and len(r.speed) == 3 and all(0 < s < 20 for s in r.speed)
            assert 0 < r.worst_cos <= 1 and 0 <= r.top10 <= 1 and r.source


def test_unfaithful_or_slow_modes_are_never_chosen(monkeypatch):
    import embgemma.auto_dtype as ad

    fast_but_wrong = Measurement((5.0, 5.0, 5.0), 0.9998, 1.0, "test")
    faithful_but_slow = Measurement((1.05, 2.0, 2.0), 0.99999, 1.0, "test")
    good = Measurement((1.5, 1.4, 1.3), 0.99999, 0.997, "test")
    monkeypatch.setattr(ad, "MEASURED", {"avx2": {"int8": fast_but_wrong, "bfloat16": faithful_but_slow}})
    assert ad.resolve("avx2")[0] == "float32"
    monkeypatch.setattr(ad, "MEASURED", {"avx2": {"int8": fast_but_wrong, "bfloat16": good}})
    assert ad.resolve("avx2")[0] == "bfloat16"


def test_default_model_takes_the_resolved_mode(no_env_dtype):
    isa = embgemma.build_info()["chosen_isa"]
    m = EmbeddingGemma(GOLDEN_DIR)
    want, why = resolve(isa)
    assert m.info["isa"] == isa
    assert m.dtype == want and m.dtype_note == why
    assert f"dtype={want!r}" in repr(m)
    assert EmbeddingGemma(GOLDEN_DIR, dtype="auto").dtype == want


def test_forced_isa_changes_the_resolution(no_env_dtype, monkeypatch):
    monkeypatch.setenv("EMBGEMMA_ISA", "scalar")
    m = EmbeddingGemma(GOLDEN_DIR)
    assert m.info["isa"] == "scalar" and m.dtype == "float32" and "scalar" in m.dtype_note


def test_named_dtype_wins(no_env_dtype):
    m = EmbeddingGemma(GOLDEN_DIR, dtype="float32")
    assert m.dtype == "float32" and m.dtype_note == "asked for: float32"


def test_env_default(monkeypatch):
    monkeypatch.setenv("EMBGEMMA_DTYPE", "bf16")
    assert EmbeddingGemma(GOLDEN_DIR).dtype == "bfloat16"
    assert EmbeddingGemma(GOLDEN_DIR, dtype="float32").dtype == "float32"  # a named dtype wins over it
    monkeypatch.setenv("EMBGEMMA_DTYPE", "float16")
    with pytest.raises(ValueError, match="EMBGEMMA_DTYPE='float16' is not a weights mode"):
        EmbeddingGemma(GOLDEN_DIR)


def test_info_and_bench_show_the_default(no_env_dtype):
    out = subprocess.run([sys.executable, "-m", "embgemma", "info", "--model", str(GOLDEN_DIR)],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    want, why = resolve(info["build"]["chosen_isa"])
    assert info["auto_dtype"] == {"dtype": want, "note": why}
    assert info["model"]["dtype"] == want and info["model"]["dtype_note"] == why

    from embgemma.machine import machine_info, machine_line

    m = machine_info(1)
    assert m["auto_dtype"] == want and f"default dtype here: {want}" in machine_line(m)
