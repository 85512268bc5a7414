"""Shared fixtures: the committed golden model, models generated through the reference stack,
the real Gemma 3 tokenizer, and a parity report printed at the end of the run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
GOLDEN_DIR = HERE / "data" / "golden_model"

try:  # the reference stack (test extra)
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    HAVE_REFERENCE = True
except ImportError:
    HAVE_REFERENCE = False

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The suite's exactness checks compare with float32 references; dtype="auto" (the default) may resolve
# to bfloat16 on some CPUs (embgemma/auto_dtype.py). So every model this process and its children (Ray,
# Spark, servers) load without naming a dtype is float32; the parity tests also name it themselves, and
# the tests of the default itself (test_auto_dtype.py, the real-weight tier) unset this.
os.environ["EMBGEMMA_DTYPE"] = "float32"

# Bar for every parity case (normalized outputs).
COS_BAR = 0.99999
ABS_BAR = 1e-4

_report: dict[str, dict[str, float]] = {}


def assert_parity(group: str, ours: np.ndarray, ref: np.ndarray) -> None:
    """cosine >= 0.99999 and max |diff| <= 1e-4 per row; worst values are kept for the report."""
    ours = np.atleast_2d(np.asarray(ours, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    diff = np.abs(ours - ref).max()
    r = _report.setdefault(group, {"worst_cos": 1.0, "worst_abs": 0.0, "rows": 0})
    r["worst_cos"] = min(r["worst_cos"], float(cos.min()))
    r["worst_abs"] = max(r["worst_abs"], float(diff))
    r["rows"] += len(cos)
    assert cos.min() >= COS_BAR, f"{group}: cosine {cos.min():.8f} < {COS_BAR}"
    assert diff <= ABS_BAR, f"{group}: max abs diff {diff:.3g} > {ABS_BAR}"


_fidelity: dict[str, dict] = {}


def record_fidelity(group: str, ours: np.ndarray, ref: np.ndarray, bar: float | None) -> np.ndarray:
    """Cosine per row of a reduced-precision result against float32; kept for the report; asserts the bar."""
    ours = np.atleast_2d(np.asarray(ours, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    r = _fidelity.setdefault(group, {"min_cos": 1.0, "sum_cos": 0.0, "rows": 0, "bar": bar})
    r["min_cos"] = min(r["min_cos"], float(cos.min()))
    r["sum_cos"] += float(cos.sum())
    r["rows"] += len(cos)
    if bar is not None:
        assert cos.min() >= bar, f"{group}: cosine {cos.min():.6f} < {bar}"
    return cos


def pytest_terminal_summary(terminalreporter):
    if _fidelity:
        terminalreporter.section("reduced precision against float32 (cosine per row)")
        for g, r in sorted(_fidelity.items()):
            bar = f">= {r['bar']}" if r["bar"] is not None else "reported only"
            terminalreporter.write_line(
                f"{g:40s} rows={r['rows']:4d}  min={r['min_cos']:.6f}  mean={r['sum_cos'] / r['rows']:.6f}  ({bar})"
            )
        out = HERE / ".cache"
        out.mkdir(exist_ok=True)
        (out / "fidelity_report.json").write_text(json.dumps(_fidelity, indent=1))
    if not _report:
        return
    terminalreporter.section("parity against the reference stack (worst per case group)")
    for g, r in sorted(_report.items()):
        terminalreporter.write_line(
            f"{g:32s} rows={r['rows']:4d}  worst cosine={r['worst_cos']:.9f}  worst max|diff|={r['worst_abs']:.3e}"
        )
    out = HERE / ".cache"
    out.mkdir(exist_ok=True)
    (out / "parity_report.json").write_text(json.dumps(_report, indent=1))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden_model():
    from embgemma import EmbeddingGemma

    return EmbeddingGemma(GOLDEN_DIR, dtype="float32")


def _need_reference():
    if not HAVE_REFERENCE:
        if IN_CI:
            pytest.fail("the reference stack (torch, transformers, sentence-transformers) must be installed in CI")
        pytest.skip("reference stack not installed: pip install -e '.[test]'")


def _build(factory, name: str, arch_name: str, seed: int, **kw) -> Path:
    _need_reference()
    import refmodel

    return refmodel.build(factory.mktemp(name) / "model", getattr(refmodel, arch_name), seed=seed, **kw)


def _reference(folder: Path):
    import refmodel

    return refmodel.load_reference(folder)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "tiny", "TINY", seed=7)


@pytest.fixture(scope="session")
def tiny_ref(tiny_dir):
    return _reference(tiny_dir)


@pytest.fixture(scope="session")
def full_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "full", "FULL", seed=11)


@pytest.fixture(scope="session")
def full_plain_dir(tmp_path_factory) -> Path:
    """The full shape without the synthetic outlier channels (see tests/test_precision.py)."""
    return _build(tmp_path_factory, "full_plain", "FULL", seed=12, outlier_gain=1.0)


@pytest.fixture(scope="session")
def full_ref(full_dir):
    return _reference(full_dir)


@pytest.fixture(scope="session")
def full_model(full_dir):
    from embgemma import EmbeddingGemma

    return EmbeddingGemma(full_dir, dtype="float32")


@pytest.fixture(scope="session")
def gemma_tokenizer_dir() -> Path:
    d = os.environ.get("EMBGEMMA_TEST_TOKENIZER_DIR")
    if not d:
        if IN_CI:
            pytest.fail("EMBGEMMA_TEST_TOKENIZER_DIR must point at the Gemma 3 tokenizer folder in CI")
        pytest.skip("set EMBGEMMA_TEST_TOKENIZER_DIR to the Gemma 3 tokenizer folder (shared/data/gemma3-tokenizer)")
    p = Path(d)
    assert (p / "tokenizer.json").is_file(), f"{p}/tokenizer.json not found"
    return p
