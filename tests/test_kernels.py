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


# ---------------------------------------------------------------- bfloat16 and int8 weight panels


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) -> float32, as the loader packs weights."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def _pairs16(isa: str) -> int:
    """1 where the ISA sums u8 x s8 pairs in int16 (AVX2's vpmaddubsw): narrower value ranges.
    As _test_gemm's `pack` it also asks for the float x bfloat16 GEMM on every ISA (not vdpbf16ps)."""
    return 1 if isa == "avx2" else 0


def _int8_blocks(w: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """The int8 weights mode (int16's with qmax 2047): per row and block of 32 k, symmetric, |q| <= qmax,
    a float32 scale per block; q [n, kb], d [n, kb/32] with k padded to whole blocks."""
    f32 = np.float32
    n, k = w.shape
    kb = -(-k // 32) * 32
    wp = np.zeros((n, kb), f32)
    wp[:, :k] = w
    wb = wp.reshape(n, kb // 32, 32)
    wq = f32(qmax)
    amax = np.abs(wb).max(2).astype(f32)
    inv = np.where(amax > 0, wq / np.where(amax > 0, amax, f32(1)), f32(0)).astype(f32)
    q = np.clip(np.rint((wb * inv[:, :, None]).astype(f32)), -wq, wq).astype(np.int64)
    return q.reshape(n, kb), (amax / wq).astype(f32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 5, 6, 7, 13, 97])
@pytest.mark.parametrize("n,k", [(1, 1), (15, 7), (17, 33), (48, 257), (100, 768), (33, 1153)])
def test_bf16_gemm_is_float_gemm_on_rounded_weights(isa, m, n, k):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    x = _strided(rng, m, k, pad=3)
    w = rng.standard_normal((n, k)).astype(np.float32)
    y = np.full((m, n + 4), np.nan, dtype=np.float32)[:, 1 : 1 + n]
    _core._test_gemm(isa, x, w, y, "bfloat16", _pairs16(isa))  # float activations (avx512bf16: see below)
    wr = _bf16(w)
    exact = x.astype(np.float64) @ wr.astype(np.float64).T
    assert np.all(np.abs(y - exact) <= _bound(x, wr))
    assert np.isnan(y.base[:, :1]).all() and np.isnan(y.base[:, 1 + n :]).all()


@pytest.mark.parametrize("mode", ["int8", "int16"])
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 2, 5, 6, 7, 13, 97])
@pytest.mark.parametrize("n,k", [(1, 1), (15, 7), (16, 16), (17, 33), (48, 257), (100, 768), (33, 1153)])
def test_integer_gemm_matches_its_specification(isa, m, n, k, mode):
    """int8: 8-bit weights, 8-bit activations (7 on AVX2); int16: both on the 12-bit grid (|q| <= 2047)."""
    rng = np.random.default_rng(m * 11 + n * 5 + k)
    x = _strided(rng, m, k, pad=1)
    x[0, 0] = 40.0  # an outlier channel, as Gemma's activations have: it costs only its block
    w = rng.standard_normal((n, k)).astype(np.float32)
    if n > 2:
        w[2] = 0.0  # an all-zero row gets scale 0
    y = np.full((m, n + 4), np.nan, dtype=np.float32)[:, 2 : 2 + n]
    _core._test_gemm(isa, x, w, y, mode)
    wq = 2047 if mode == "int16" else 127
    q, d = _int8_blocks(w, wq)
    kb = q.shape[1]
    xp = np.zeros((m, kb), np.float32)
    xp[:, :k] = x
    ref = _block_reference(xp, q, d, wq if mode == "int16" else 63 if _pairs16(isa) else 127)  # AVX2 int8: 7 bits
    tol = (kb // 32 + 2) * EPS * np.abs(ref).max(initial=0) + 1e-30
    assert np.all(np.abs(y - ref) <= tol)
    assert np.isnan(y.base[:, :2]).all() and np.isnan(y.base[:, 2 + n :]).all()
    # and it is a close approximation of the float product (int16's grid is 16x finer on both sides)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    scale = np.abs(x).max(1, keepdims=True) * np.abs(w).max(1)[None, :] * np.sqrt(k)
    assert np.all(np.abs(y - exact) <= (0.002 if mode == "int16" else 0.02) * scale + 1e-30)


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
def test_int16_twins_agree_bitwise(isa):
    rng = np.random.default_rng(6)
    for m, n, k in ((29, 45, 771), (6, 16, 32), (1, 1, 1), (97, 33, 1153)):
        x = _strided(rng, m, k, pad=5)
        x[0, min(7, k - 1)] = -50.0
        x[m // 2, : min(40, k)] = 0.0  # an all-zero block: scale 0
        w = rng.standard_normal((n, k)).astype(np.float32)
        out = {}
        for i in ("scalar", isa):
            out[i] = np.zeros((m, n), dtype=np.float32)
            _core._test_gemm(i, x, w, out[i], "int16")
        np.testing.assert_array_equal(out[isa], out["scalar"])


@pytest.mark.parametrize("isa", ISAS)
def test_int16_sums_never_overflow_at_the_bound(isa):
    """Every product at 2047 x 2047 with one sign: a block's int32 sum is 32 x 2047^2 < 2^31."""
    k = 5001
    for sign in (1.0, -1.0):
        x = np.full((7, k), sign, dtype=np.float32)
        w = np.ones((17, k), dtype=np.float32)
        y = np.zeros((7, 17), dtype=np.float32)
        _core._test_gemm(isa, x, w, y, "int16")
        np.testing.assert_allclose(y, sign * k, rtol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_int8_sums_never_overflow_at_the_bound(isa):
    """Worst case for the int16 pair sums of vpmaddubsw (AVX2) and the int32 accumulators:
    every product at its maximum with one sign."""
    k = 5001  # odd and long
    for sign in (1.0, -1.0):
        x = np.full((3, k), sign, dtype=np.float32)
        w = np.ones((17, k), dtype=np.float32)
        y = np.zeros((3, 17), dtype=np.float32)
        _core._test_gemm(isa, x, w, y, "int8")
        np.testing.assert_allclose(y, sign * k, rtol=1e-6)
        for qt in ("q8_0", "q4_0"):
            xb, wb = x[:, :4992], w[:, :4992]
            y = np.zeros((3, 17), dtype=np.float32)
            _core._test_gemm(isa, xb, np.ascontiguousarray(wb), y, qt)
            np.testing.assert_allclose(y, sign * 4992, rtol=1e-4)  # Q8_0's float16 scale: 1/127 to 6e-5


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
def test_int8_and_bf16_twins_agree(isa):
    """Each ISA against scalar on the same packed panels: int8 bit for bit, bf16 within float rounding."""
    rng = np.random.default_rng(5)
    x = _strided(rng, 29, 771, pad=5)
    x[3, 7] = -50.0  # a negative outlier: the zero point moves up
    w = rng.standard_normal((45, 771)).astype(np.float32)
    out = {}
    for i in ("scalar", isa):
        for wt in ("bfloat16", "int8"):
            out[i, wt] = np.zeros((29, 45), dtype=np.float32)
            _core._test_gemm(i, x, w, out[i, wt], wt, _pairs16(isa))  # the scalar twin on isa's data
    np.testing.assert_array_equal(out[isa, "int8"], out["scalar", "int8"])
    wr = _bf16(w)
    assert np.all(np.abs(out[isa, "bfloat16"] - out["scalar", "bfloat16"]) <= 2 * _bound(x, wr))


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
def test_float_gemm_isas_agree_bitwise(isa):
    """Every vector ISA runs the same FMA chain per output: AVX-512 equals AVX2 bit for bit, and the
    ARM64 levels NEON (whose chain is AVX2's too)."""
    ref = "avx2" if "avx2" in ISAS else "neon"
    if isa == ref:
        pytest.skip("the reference itself")
    rng = np.random.default_rng(8)
    x = _strided(rng, 37, 300, pad=2)
    w = rng.standard_normal((53, 300)).astype(np.float32)
    for wt in ("float32", "bfloat16"):
        a, b = np.zeros((37, 53), np.float32), np.zeros((37, 53), np.float32)
        _core._test_gemm(ref, x, w, a, wt)
        _core._test_gemm(isa, x, w, b, wt, _pairs16(isa))  # avx512bf16: its float x bfloat16 GEMM
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bfloat16 x bfloat16 (vdpbf16ps)

BF16DOT = 2  # _test_gemm's pack: activations rounded to bfloat16, k-pairs summed as vdpbf16ps does
BF16AMX = 4  # _test_gemm's pack: the same products summed as AMX's tdpbf16ps does
DOT_ISAS = [i for i in ISAS if i in ("avx512bf16", "amx")]  # the ISAs with such a kernel (run on this CPU)


def _dot_pack(isa: str) -> int:
    """The pack asking the scalar ISA for isa's bfloat16 x bfloat16 arithmetic (its twin)."""
    return BF16AMX if isa == "amx" else BF16DOT


def _bf16_act(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 as vcvtneps2bf16 rounds activations (nearest even; subnormals to a signed
    zero; NaN kept, made quiet), back to float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    exp0 = (u & 0x7F800000) == 0
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    r = np.where(nan, ((u >> 16) | 0x40) << 16, r)
    r = np.where((u & 0x7FFFFFFF) == 0x7F800000, u, r)
    r = np.where(exp0, u & 0x80000000, r)
    return (r & 0xFFFFFFFF).astype(np.uint32).view(np.float32)


def _dot_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The bf16dot GEMM written independently of the C twin, for normal-range data: per output one
    float32 accumulator over the k-pairs in order, odd element's product first, each step the exact
    float64 sum rounded once to float32 (bfloat16 products are exact in float64, and so are these sums
    while exponents stay close, as they do for N(0, 1) data)."""
    xr, wr = _bf16_act(x).astype(np.float64), _bf16(w).astype(np.float64)
    m, k = xr.shape
    if k % 2:
        xr, wr = np.pad(xr, ((0, 0), (0, 1))), np.pad(wr, ((0, 0), (0, 1)))
    acc = np.zeros((m, w.shape[0]), np.float32)
    for t in range(0, xr.shape[1], 2):
        for e in (1, 0):
            acc = (acc.astype(np.float64) + np.outer(xr[:, t + e], wr[:, t + e])).astype(np.float32)
    return acc


def _amx_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AMX's tdpbf16ps written independently of the C twin, for normal-range data, as measured on the
    instruction: per block of 32 k (zero-padded), the even-k products summed in order from 0 in
    float32, the odd-k ones likewise, then acc = (even + odd) + acc (bfloat16 products are exact in
    float32)."""
    xr, wr = _bf16_act(x), _bf16(w)
    m, k = xr.shape
    kp = -(-k // 32) * 32
    xr, wr = np.pad(xr, ((0, 0), (0, kp - k))), np.pad(wr, ((0, 0), (0, kp - k)))
    acc = np.zeros((m, w.shape[0]), np.float32)
    for b in range(0, kp, 32):
        even = np.zeros_like(acc)
        odd = np.zeros_like(acc)
        for t in range(b, b + 32, 2):
            even = even + np.outer(xr[:, t], wr[:, t])
            odd = odd + np.outer(xr[:, t + 1], wr[:, t + 1])
        acc = (even + odd) + acc
    return acc


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, any NaN equal to any NaN (payloads are not part of the specification)."""
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a.view(np.uint32)[~nan], b.view(np.uint32)[~nan]))


@pytest.mark.parametrize("arith", ["vdpbf16ps", "amx"])
@pytest.mark.parametrize("m", [1, 2, 5, 11, 12, 13, 15, 16, 17, 25, 33, 40])
@pytest.mark.parametrize("n,k", [(1, 1), (15, 7), (16, 2), (17, 33), (33, 64), (48, 257), (100, 768), (33, 1153)])
def test_bf16dot_twin_matches_its_specification(arith, m, n, k):
    """The scalar twin of each bfloat16 x bfloat16 arithmetic (vdpbf16ps, AMX's tdpbf16ps) against an
    independent model of it, and within float rounding of float64."""
    pack, reference = (BF16AMX, _amx_reference) if arith == "amx" else (BF16DOT, _dot_reference)
    rng = np.random.default_rng(m * 17 + n * 3 + k)
    x = _strided(rng, m, k, pad=3)
    w = rng.standard_normal((n, k)).astype(np.float32)
    y = np.full((m, n + 4), np.nan, dtype=np.float32)[:, 1 : 1 + n]
    _core._test_gemm("scalar", x, w, y, "bfloat16", pack)
    assert _same_bits(y, reference(x, w))
    xr, wr = _bf16_act(x), _bf16(w)
    exact = xr.astype(np.float64) @ wr.astype(np.float64).T
    assert np.all(np.abs(y - exact) <= _bound(xr, wr))
    assert np.isnan(y.base[:, :1]).all() and np.isnan(y.base[:, 1 + n :]).all()


@pytest.mark.parametrize("isa", DOT_ISAS)
@pytest.mark.parametrize("m", [1, 2, 5, 11, 12, 13, 15, 16, 17, 25, 31, 33, 97])
@pytest.mark.parametrize("n,k", [(1, 1), (15, 7), (16, 2), (17, 33), (33, 64), (48, 257), (100, 768), (33, 1153)])
def test_bf16dot_kernel_matches_its_twin_bitwise(isa, m, n, k):
    rng = np.random.default_rng(m * 19 + n * 7 + k)
    x = _strided(rng, m, k, pad=5)
    x[0, 0] = 3e4  # an outlier channel, as Gemma's activations have
    w = rng.standard_normal((n, k)).astype(np.float32)
    out = {}
    for i, pack in (("scalar", _dot_pack(isa)), (isa, -1)):  # the kernel as the loader packs for it
        out[i] = np.full((m, n + 4), np.nan, dtype=np.float32)[:, 2 : 2 + n]
        _core._test_gemm(i, x, w, out[i], "bfloat16", pack)
    assert _same_bits(out[isa], out["scalar"])
    assert np.isnan(out[isa].base[:, :2]).all() and np.isnan(out[isa].base[:, 2 + n :]).all()


def _bf16_patterns(rng, shape, kind):
    """float32 values that are bfloat16 numbers (so weight rounding keeps them): ordinary, tiny
    (subnormal and near the normal range's edge), huge (overflow, infinities), NaN, signed zeros."""
    h = rng.integers(0, 1 << 16, size=shape, dtype=np.uint32)
    sign, mant = h & 0x8000, h & 0x7F
    if kind == "ordinary":
        e = rng.integers(120, 136, size=shape)
    elif kind == "tiny":  # products and sums around 2^-126
        e = rng.choice([0, 0, 1, 2, 40, 50, 60, 63, 64, 65, 70], size=shape)
    elif kind == "huge":  # products past float32's range
        e = rng.choice([200, 230, 250, 254, 255], size=shape)
    else:  # any exponent
        e = rng.integers(0, 256, size=shape)
    bits = (sign | (e.astype(np.uint32) << 7) | mant) << 16
    f = bits.view(np.float32)
    f[rng.random(shape) < 0.05] = 0.0
    f[rng.random(shape) < 0.05] = -0.0
    return f


@pytest.mark.parametrize("isa", DOT_ISAS)
@pytest.mark.parametrize("kind", ["ordinary", "tiny", "huge", "any"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 9])
def test_bf16dot_special_values_bitwise(isa, kind, k):
    """Subnormals (read as zero), results flushed below the normal range, overflow to infinity,
    inf - inf, NaN, signed zeros, and cancellation (rows of w that are minus, or nearly minus, other
    rows): the kernel and its twin agree bit for bit."""
    rng = np.random.default_rng(k * 31 + len(kind))
    m, n = 29, 70
    x = _bf16_patterns(rng, (m, k), kind)
    w = _bf16_patterns(rng, (n, k), kind)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and infinity stay what they are
        w[n // 2 :] = -w[: n // 2] * rng.choice([1.0, 1.0078125, 0.9921875], size=(n // 2, 1)).astype(np.float32)
    x[1::7] = 1.5e-38  # float32 activations that round to subnormal bfloat16: they become 0
    out = {}
    for i, pack in (("scalar", _dot_pack(isa)), (isa, -1)):
        out[i] = np.zeros((m, n), np.float32)
        _core._test_gemm(i, x, w, out[i], "bfloat16", pack)
    assert _same_bits(out[isa], out["scalar"])


@pytest.mark.parametrize("x2,w2,expect", [
    (-(2.0**-75), 2.0**-75, 0x00000000),  # FLT_MIN - 2^-150: tiny, flushed (an IEEE FMA gives FLT_MIN)
    (-(2.0**-75), 2.0**-76, 0x00800000),  # FLT_MIN - 2^-151: rounds to FLT_MIN at 24 bits: kept
    (-1.5 * 2.0**-75, 2.0**-76, 0x00000000),  # FLT_MIN - 1.5 * 2^-151: rounds below FLT_MIN: flushed
    (-(2.0**-75), 2.0**-77, 0x00800000),
    (-(2.0**-63), 2.0**-63, 0x00000000),  # FLT_MIN - 2^-126 = +0 exactly
])
def test_bf16dot_flushes_tiny_results_as_the_instruction_does(x2, w2, expect):
    """Tininess is judged on the result rounded to 24 bits with unbounded exponent, then flushed to a
    zero of its sign (measured on Sapphire Rapids). k = 3: the first pair builds acc = 1 * FLT_MIN,
    the second adds x2 * w2 (its other half is the zero padding)."""
    x = np.array([[1.0, 0.0, x2]], np.float32)
    w = np.array([[2.0**-126, 0.0, w2]], np.float32)
    for isa, pack in [("scalar", BF16DOT)] + [(i, -1) for i in DOT_ISAS if i == "avx512bf16"]:
        y = np.zeros((1, 1), np.float32)
        _core._test_gemm(isa, x, w, y, "bfloat16", pack)
        assert y.view(np.uint32)[0, 0] == expect, (isa, hex(y.view(np.uint32)[0, 0]))


@pytest.mark.parametrize("x2,w2,expect", [
    (-(2.0**-75), 2.0**-75, 0x00000000),  # FLT_MIN - 2^-150: tiny at 24 bits, flushed (as vdpbf16ps)
    (-(2.0**-75), 2.0**-76, 0x00800000),  # FLT_MIN - 2^-151: rounds to FLT_MIN at 24 bits: kept
    (-1.5 * 2.0**-75, 2.0**-76, 0x00000000),
    (2.0**-75, 2.0**-75, 0x00800000),  # FLT_MIN + 2^-150: the subnormal product is not flushed first...
    (1.5 * 2.0**-75, 2.0**-75, 0x00800001),  # ...it counts: FLT_MIN + 1.5 * 2^-150 rounds up
    (-(2.0**-63), 1.0078125 * 2.0**-63, 0x00000000),  # a sum below the normal range: flushed
])
def test_amx_flushes_tiny_sums_as_the_instruction_does(x2, w2, expect):
    """AMX's even and odd sums step as vdpbf16ps does (fused, tininess judged at 24 bits, flushed to a
    zero of its sign; measured on Sapphire Rapids): k = 3, the even products 1 * FLT_MIN, then x2 * w2."""
    x = np.array([[1.0, 0.0, x2]], np.float32)
    w = np.array([[2.0**-126, 0.0, w2]], np.float32)
    for isa, pack in [("scalar", BF16AMX)] + [(i, -1) for i in DOT_ISAS if i == "amx"]:
        y = np.zeros((1, 1), np.float32)
        _core._test_gemm(isa, x, w, y, "bfloat16", pack)
        assert y.view(np.uint32)[0, 0] == expect, (isa, hex(y.view(np.uint32)[0, 0]))


def test_bf16_activation_rounding_matches_the_instruction():
    """Activations to bfloat16 by vcvtne2ps2bf16 (32 at a time) and by the twin (a row's tail), as
    _bf16_act specifies: a GEMM against one-hot weights returns each rounded activation. Rows of finite
    values (ties, subnormals, the edge of overflow), then rows with one infinity or NaN each (whose
    column shows it; the others see it times 0)."""
    rng = np.random.default_rng(12)
    k = 37  # a full 32 and a tail, odd
    edge = np.array([0, 0x80000000, 1, 0x807FFFFF, 0x007FFFFF, 0x00800000, 0x7F7F7FFF, 0x7F7F8000, 0xFF7F7FFF,
                     0x3F808000, 0x3F818000, 0x3F807FFF, 0xBF808000, 0x00008000, 0x00018000], np.uint32)
    bits = rng.integers(0, 1 << 32, 40 * k, dtype=np.uint64).astype(np.uint32)
    bits[: edge.size] = edge
    x = bits.view(np.float32).reshape(-1, k)
    x[~np.isfinite(_bf16_act(x))] = 1.0  # finite rows: no infinity or NaN, before or after rounding
    specials = np.array([0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFFFF0000, 0x7F7FFFFF, 0xFF7F8000],
                        np.uint32).view(np.float32)
    xs = np.ones((specials.size, k), np.float32)
    cols = np.arange(specials.size) * 5 % k
    xs[np.arange(specials.size), cols] = specials
    w = np.eye(k, dtype=np.float32)
    for isa, pack in [("scalar", BF16DOT)] + [(i, -1) for i in DOT_ISAS]:
        y = np.zeros(x.shape, np.float32)
        _core._test_gemm(isa, x, w, y, "bfloat16", pack)
        assert _same_bits(y, _bf16_act(x) + np.float32(0)), isa  # + 0: the sum of -0 and +0 products is +0
        ys = np.zeros(xs.shape, np.float32)
        _core._test_gemm(isa, xs, w, ys, "bfloat16", pack)
        assert _same_bits(ys[np.arange(specials.size), cols], _bf16_act(specials)), isa


def test_bf16dot_is_refused_where_the_isa_has_none():
    x = np.zeros((2, 4), np.float32)
    for isa in [i for i in ISAS if i in ("avx2", "avxvnni", "avx512", "amx")]:
        with pytest.raises(ValueError, match="no bfloat16 pair-dot"):
            _core._test_gemm(isa, x, x, np.zeros((2, 2), np.float32), "bfloat16", BF16DOT | _pairs16(isa))
    for isa in [i for i in ISAS if i in ("avx2", "avxvnni", "avx512", "avx512bf16")]:
        with pytest.raises(ValueError, match="no AMX bfloat16 GEMM"):
            _core._test_gemm(isa, x, x, np.zeros((2, 2), np.float32), "bfloat16", BF16AMX | _pairs16(isa))


# ---------------------------------------------------------------- ggml Q8_0 / Q4_0 blocks


def _ggml_blocks(w: np.ndarray, qtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Weights through the llama.cpp project's own quantizer (the gguf package): q [n, k] int, d [n, k/32]."""
    gguf = pytest.importorskip("gguf")
    t = getattr(gguf.GGMLQuantizationType, qtype)
    raw = gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), t).reshape(-1)
    n, k = w.shape
    if qtype == "Q8_0":
        blk = raw.reshape(n * k // 32, 34)
        d = blk[:, :2].copy().view(np.float16).astype(np.float32).reshape(n, k // 32)
        q = blk[:, 2:].copy().view(np.int8).astype(np.int64).reshape(n, k)
    else:
        blk = raw.reshape(n * k // 32, 18)
        d = blk[:, :2].copy().view(np.float16).astype(np.float32).reshape(n, k // 32)
        nib = blk[:, 2:]
        q = (np.concatenate([nib & 0x0F, nib >> 4], axis=1).astype(np.int64) - 8).reshape(n, k)
    # and the gguf package's own dequantization agrees with this reading
    deq = gguf.quants.dequantize(raw, t).reshape(n, k)
    np.testing.assert_array_equal(deq, (q.reshape(n, -1, 32) * d[:, :, None]).reshape(n, k).astype(np.float32))
    return q, d


def _block_reference(x: np.ndarray, q: np.ndarray, d: np.ndarray, qmax: int) -> np.ndarray:
    """The integer kernels' specification: activations per 32, symmetric, |q| <= qmax (127, or
    63 against Q8_0 weights on AVX2, whose int16 pair sums must not saturate), exact int32 block sums,
    each block folded in as float32 (isum * (sx * d)), accumulated in float64 here."""
    f32 = np.float32
    m, k = x.shape
    xb = x.reshape(m, k // 32, 32)
    amax = np.abs(xb).max(2).astype(f32)
    inv = np.where(amax > 0, f32(qmax) / np.where(amax > 0, amax, f32(1)), f32(0)).astype(f32)
    qx = np.clip(np.rint((xb * inv[:, :, None]).astype(f32)), -qmax, qmax).astype(np.int64)
    sx = (amax / f32(qmax)).astype(f32)
    isum = np.einsum("mbk,nbk->mnb", qx, q.reshape(q.shape[0], k // 32, 32))
    assert np.abs(isum).max(initial=0) < 2**28
    scale = (sx[:, None, :] * d[None, :, :]).astype(f32)
    return (isum.astype(f32).astype(np.float64) * scale.astype(np.float64)).sum(2)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 13])
@pytest.mark.parametrize("n,k", [(1, 32), (15, 64), (17, 96), (48, 256), (33, 1152)])
def test_block_gemm_matches_ggml_blocks(isa, qtype, m, n, k):
    rng = np.random.default_rng(m * 13 + n * 7 + k)
    x = _strided(rng, m, k, pad=1)
    x[0, 3] = 300.0  # an outlier: it only costs precision inside its own block
    w = rng.standard_normal((n, k)).astype(np.float32)
    if n > 2:
        w[2] = 0.0
    y = np.full((m, n + 4), np.nan, dtype=np.float32)[:, 2 : 2 + n]
    _core._test_gemm(isa, x, w, y, qtype.lower())
    q, d = _ggml_blocks(w, qtype)
    aq = 63 if qtype == "Q8_0" and _pairs16(isa) else 127  # AVX2: 7-bit activations against 8-bit weights
    ref = _block_reference(np.ascontiguousarray(x), q, d, aq)
    nb = k // 32
    tol = (nb + 2) * EPS * np.abs(ref).max(initial=0) + 1e-30
    assert np.all(np.abs(y - ref) <= tol)
    assert np.isnan(y.base[:, :2]).all() and np.isnan(y.base[:, 2 + n :]).all()
    # the weights are ggml's blocks exactly, so the result is that of the dequantized matrix
    wq = (q.reshape(n, nb, 32) * d[:, :, None]).reshape(n, k)
    exact = x.astype(np.float64) @ wq.T
    # per block, the activation step is amax / qmax: at most half of it lost per element
    xb = np.abs(np.ascontiguousarray(x)).reshape(m, -1, 32).max(2)
    step = xb / aq
    bound = 0.5 * np.einsum("mb,nb->mn", step, np.abs(wq).reshape(n, -1, 32).sum(2))
    assert np.all(np.abs(y - exact) <= bound + 1e-4 * np.abs(exact) + 1e-30)


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
def test_block_twins_agree_bitwise(isa):
    rng = np.random.default_rng(9)
    x = _strided(rng, 31, 800, pad=3)
    w = rng.standard_normal((45, 800)).astype(np.float32)
    for wt in ("int8", "q8_0", "q4_0"):
        out = {}
        for i in ("scalar", isa):
            out[i] = np.zeros((31, 45), dtype=np.float32)
            _core._test_gemm(i, x, w, out[i], wt, _pairs16(isa))
        np.testing.assert_array_equal(out[isa], out["scalar"])


def test_block_types_need_whole_blocks():
    x = np.zeros((1, 40), np.float32)
    with pytest.raises(Exception, match="multiple of 32"):
        _core._test_gemm("scalar", x, x, np.zeros((1, 1), np.float32), "q8_0")


def test_unknown_weights_mode_is_refused():
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="unknown weights"):
        _core._test_gemm("scalar", x, x, np.zeros((1, 1), np.float32), "float16")


def test_fma_peak_is_measured():
    g = _core.fma_peak(1, 0.05)
    assert g > 0.1  # GFLOP/s; any real CPU does far more
    with pytest.raises(ValueError):
        _core.fma_peak(-1)
