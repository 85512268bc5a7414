"""Every optimized kernel against its scalar twin (and float64 NumPy) at awkward sizes,
with unaligned and strided rows. Tolerances come from the math: a dot product of length k
in float32 is within ~k * eps * sum|a_i b_i| of the exact value."""

from __future__ import annotations

import numpy as np
import pytest

import embgemma
from embgemma import _core

ISAS = embgemma.build_info()["supported_isas"]
EPS = np.finfo(np.float32).eps


def _bound(x, w):
    return (x.shape[1] + 2) * EPS * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T)


def _strided(rng, rows, cols, pad):
    """A float32 matrix view whose rows start `pad` floats into a wider buffer (unaligned, strided)."""
    buf = rng.standard_normal((rows, cols + pad + 3)).astype(np.float32)
    return buf[:, pad : pad + cols]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 3, 5, 6, 7, 13, 64, 97])
@pytest.mark.parametrize("n,k", [(1, 1), (15, 7), (16, 16), (17, 33), (33, 64), (48, 257), (100, 768)])
def test_gemm_against_float64(isa, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    x = _strided(rng, m, k, pad=1)
    w = rng.standard_normal((n, k)).astype(np.float32)
    y = np.full((m, n + 5), np.nan, dtype=np.float32)[:, 2 : 2 + n]  # strided output
    _core._test_gemm(isa, x, w, y)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.all(np.abs(y - exact) <= _bound(x, w))
    # columns outside the view are untouched
    assert np.isnan(y.base[:, :2]).all() and np.isnan(y.base[:, 2 + n :]).all()


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
def test_gemm_matches_scalar_twin(isa):
    rng = np.random.default_rng(0)
    for m, n, k in [(7, 1280, 768), (5, 2304, 768), (11, 768, 1152), (3, 40, 9)]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        a = np.empty((m, n), np.float32)
        b = np.empty((m, n), np.float32)
        _core._test_gemm("scalar", x, w, a)
        _core._test_gemm(isa, x, w, b)
        assert np.all(np.abs(a - b) <= 2 * _bound(x, w))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 31, 32, 33, 255, 256, 257])
def test_vector_kernels(isa, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n + 1).astype(np.float32)[1:]  # unaligned start
    y = rng.standard_normal(n).astype(np.float32)
    y2 = y.copy()
    _core._test_vec(isa, 1, 0.37, x, y2)
    np.testing.assert_allclose(y2, y + np.float32(0.37) * x, rtol=2e-6, atol=1e-6)
    y3 = y.copy()
    _core._test_vec(isa, 2, -1.5, x, y3)
    np.testing.assert_array_equal(y3, y * np.float32(-1.5))


def test_unknown_isa_is_refused():
    with pytest.raises(ValueError, match="unknown ISA"):
        _core._test_gemm("sse9", np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 1152, 100003])
def test_gelu_gate(isa, n):
    """gelu_tanh(x) * up, against float64 0.5 x (1 + tanh(u)): within 3 eps |x up| everywhere,
    including the tails where 1 + tanh(u) cancels."""
    rng = np.random.default_rng(n)
    x = np.concatenate([np.linspace(-40, 40, n // 2), rng.standard_normal(n - n // 2) * 6]).astype(np.float32)
    up = rng.standard_normal(n).astype(np.float32)
    y = x.copy()
    _core._test_vec(isa, 3, 0.0, up, y)
    x64 = x.astype(np.float64)
    u = np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)
    ref = 0.5 * x64 * (1 + np.tanh(u)) * up
    assert np.all(np.abs(y - ref) <= 3 * EPS * np.abs(x64 * up) + 1e-38)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1000])
def test_exp_sub(isa, n):
    """Softmax numerators: exp(s - m) within 3 eps relative, exactly 0 for masked (-inf) scores."""
    rng = np.random.default_rng(n)
    s = (rng.standard_normal(n) * 20).astype(np.float32)
    s[rng.random(n) < 0.3] = -np.inf
    m = np.float32(np.max(s[np.isfinite(s)], initial=0.0))
    y = s.copy()
    total = _core._test_vec(isa, 4, float(m), np.zeros(n, np.float32), y)
    ref = np.exp((s - m).astype(np.float64))  # of the float32 difference, as the kernel computes it
    assert np.all(y[np.isinf(s)] == 0.0)
    assert np.all(np.abs(y - ref) <= 3 * EPS * ref + 1e-37)
    assert abs(total - ref.sum()) <= (n + 3) * EPS * ref.sum()
