"""Kernel choice at load: CPU features, the self-check of every non-scalar ISA against its scalar
twins, and the fallback to the next ISA (with a warning) when an ISA disagrees."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import embgemma
from embgemma import EmbeddingGemma

INFO = embgemma.build_info()
# each ISA falls back to the one before it (of those this CPU supports, opt-in ones skipped); x86-64,
# then ARM64, then x86-64's avx512bf16 (opt-in) and amx (both fall back to avx512)
ORDER = ["scalar", "avx2", "avxvnni", "avx512", "neon", "dotprod", "i8mm", "avx512bf16", "amx"]
OPT_IN = {"avx512bf16"}  # never chosen automatically, only by name
BEST = [i for i in INFO["supported_isas"] if i not in OPT_IN][-1]  # what auto picks


def test_isas_are_named_in_order_and_known():
    assert INFO["compiled_isas"][0] == "scalar"
    assert set(INFO["compiled_isas"]) <= set(ORDER)
    assert set(INFO["supported_isas"]) <= set(INFO["compiled_isas"])
    assert INFO["chosen_isa"] in INFO["supported_isas"]


def test_every_supported_isa_passes_its_self_check_here():
    """On every machine this suite runs on, the kernels it can execute agree with their twins."""
    assert set(INFO["selfcheck"]) == set(INFO["supported_isas"])
    assert all(v == "passed" for v in INFO["selfcheck"].values()), INFO["selfcheck"]
    assert "self-check against the scalar kernels passed" in INFO["isa_note"] or INFO["chosen_isa"] == "scalar"


def test_cpu_features_agree_with_supported_isas():
    f = INFO["cpu_features"].split()
    sup = INFO["supported_isas"]
    assert ("avx2" in sup) == ("avx2" in f and "fma" in f)
    assert ("avxvnni" in sup) == ("avx2" in f and "fma" in f and "avx_vnni" in f)
    assert ("avx512" in sup) == ("avx512f/bw/dq/vl" in f and "avx512_vnni" in f and "avx2" in f)
    assert ("neon" in sup) == ("asimd" in f)
    assert ("dotprod" in sup) == ("asimd" in f and "asimddp" in f)
    assert ("i8mm" in sup) == ("asimd" in f and "asimddp" in f and "i8mm" in f)
    assert ("avx512bf16" in sup) == ("avx512" in sup and "avx512_bf16" in f)
    assert ("amx" in sup) == ("avx512bf16" in sup and "amx_bf16" in f)


def test_isas_of_one_architecture_are_compiled_in():
    arm = {"neon", "dotprod", "i8mm"}
    compiled = set(INFO["compiled_isas"]) - {"scalar"}
    assert compiled <= arm or not compiled & arm, compiled


@pytest.mark.parametrize("isa", [i for i in INFO["supported_isas"] if i != "scalar"])
def test_a_failing_self_check_falls_back_with_a_warning(isa, golden_dir, monkeypatch):
    """Each ISA asked for (the best one is also what auto picks) gives way to the next one below."""
    monkeypatch.setenv("EMBGEMMA_ISA", isa)
    monkeypatch.setenv("EMBGEMMA_SELFCHECK_FAIL", isa)
    below = [i for i in ORDER[: ORDER.index(isa)] if i in INFO["supported_isas"] and i not in OPT_IN][-1]
    with pytest.warns(RuntimeWarning, match=f"{isa} \\(asked for\\); {isa} self-check failed.*fell back to {below}"):
        m = EmbeddingGemma(golden_dir)
    assert m.info["isa"] == below
    assert embgemma.build_info()["selfcheck"][isa].startswith("failed")
    # and the model computes what a healthy model of that ISA computes
    monkeypatch.delenv("EMBGEMMA_SELFCHECK_FAIL")
    monkeypatch.setenv("EMBGEMMA_ISA", below)
    healthy = EmbeddingGemma(golden_dir)
    texts = ["a short text", "another, somewhat longer text about planets"]
    np.testing.assert_array_equal(m.encode(texts), healthy.encode(texts))


def test_auto_falls_back_from_the_best_isa(golden_dir, monkeypatch):
    best = BEST
    if best == "scalar":
        pytest.skip("only the scalar kernels here")
    monkeypatch.setenv("EMBGEMMA_SELFCHECK_FAIL", best)
    with pytest.warns(RuntimeWarning, match="best for this CPU"):
        m = EmbeddingGemma(golden_dir)
    assert m.info["isa"] != best and "fell back" in m.info["isa_note"]
    assert embgemma.build_info()["chosen_isa"] == m.info["isa"]


def test_a_passing_check_warns_nothing(golden_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = EmbeddingGemma(golden_dir)
    assert m.info["isa"] == INFO["chosen_isa"]
    assert m.info["isa_note"].startswith(m.info["isa"])


def _choices() -> str:
    names = INFO["compiled_isas"]
    return "auto, " + ", ".join(names[:-1]) + " or " + names[-1]


def test_unknown_isa_names_the_choices(golden_dir, monkeypatch):
    monkeypatch.setenv("EMBGEMMA_ISA", "sse9")
    with pytest.raises(ValueError, match=f"unknown ISA \"sse9\": use {_choices()}$"):
        EmbeddingGemma(golden_dir)


def test_an_isa_of_the_other_architecture_says_so(golden_dir, monkeypatch):
    other = "avx2" if "neon" in INFO["compiled_isas"] else "neon"
    arch = "ARM64" if other == "neon" else "x86-64"
    monkeypatch.setenv("EMBGEMMA_ISA", other)
    with pytest.raises(ValueError, match=f"{other}\" is for {arch} CPUs, not compiled into this build: use {_choices()}"):
        EmbeddingGemma(golden_dir)


def test_opt_in_isas_are_chosen_only_by_name(golden_dir, monkeypatch):
    """auto takes the best ISA that is not opt-in (avx512bf16 changes bfloat16's arithmetic and is
    slower than avx512 on the CPU measured); asked for by name, an opt-in ISA is used."""
    for name in (None, "auto"):
        if name:
            monkeypatch.setenv("EMBGEMMA_ISA", name)
        else:
            monkeypatch.delenv("EMBGEMMA_ISA", raising=False)
        m = EmbeddingGemma(golden_dir)
        assert m.info["isa"] == BEST and m.info["isa_note"].startswith(f"{BEST} (best for this CPU)")
    texts = ["a short text", "another, somewhat longer text about planets and their moons"]
    monkeypatch.setenv("EMBGEMMA_ISA", "avx512" if "avx512" in INFO["supported_isas"] else BEST)
    widened = EmbeddingGemma(golden_dir, dtype="bfloat16").encode(texts)
    for isa in OPT_IN & set(INFO["supported_isas"]):
        monkeypatch.setenv("EMBGEMMA_ISA", isa)
        m = EmbeddingGemma(golden_dir, dtype="bfloat16")
        assert m.info["isa"] == isa and m.info["isa_note"].startswith(f"{isa} (asked for)")
        # avx512bf16's bfloat16 rounds the activations too: close to, not equal to, the widening kernels
        # (measured 0.99946 on this random model)
        assert ((m.encode(texts) * widened).sum(1) > 0.999).all()


def test_an_opt_in_isa_the_cpu_lacks_is_refused(golden_dir, monkeypatch):
    missing = [i for i in OPT_IN if i not in INFO["supported_isas"]]
    if not missing:
        pytest.skip("this CPU has every opt-in ISA")
    monkeypatch.setenv("EMBGEMMA_ISA", missing[0])
    with pytest.raises(Exception, match="not supported by the CPU|not compiled in"):
        EmbeddingGemma(golden_dir)
