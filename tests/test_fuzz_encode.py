"""Bounded, seeded fuzzing of the encode entry points from Python: the raw core
(``embgemma._core.Model.encode``: the argument checks of csrc/module.c, then eg_encode), ``encode_ids``
and ``encode`` with random arguments. Every call either returns the right numbers or raises a
documented exception type with a message; nothing crashes (tests/sanitize/run.sh runs this file under
AddressSanitizer + UndefinedBehaviorSanitizer). eg_encode alone is fuzzed in C (tests/fuzz, "encode").

Oracle for the raw core: a call that succeeds must have had valid arguments (checked here from the
documented rules), and each row it wrote must equal that sequence encoded alone by a plain valid call
(bitwise: batching is invisible); a valid call must succeed.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from conftest import GOLDEN_DIR
from embgemma import EmbeddingGemma, _core

CLEAN = (ValueError, TypeError, OverflowError)  # ModelFormatError etc. are ValueErrors


@pytest.fixture(scope="module")
def model():
    return EmbeddingGemma(GOLDEN_DIR, threads=1)


@pytest.fixture(scope="module")
def core(model):
    return model._core


def _alone(core, seq, dim, normalize):
    """The reference: one sequence, int32, default everything."""
    return core.encode(np.asarray(seq, np.int32), np.array([0, len(seq)], np.int64), dim=dim, normalize=normalize)[0]


def _random_raw_call(rng: random.Random, vocab: int, out_dim: int, max_pos: int):
    """A valid call, then 0-3 mutations of its arguments. Returns (args, kwargs, mutated)."""
    n = rng.randrange(0, 6)
    lengths = [rng.choice([1, 2, 3, 7, 20, max_pos]) if rng.random() < 0.9 else rng.randrange(1, max_pos + 1)
               for _ in range(n)]
    gap = rng.randrange(3)  # ids before the first sequence
    total = gap + sum(lengths)
    ids = np.array([rng.randrange(vocab) for _ in range(total + rng.randrange(3))], np.int32)
    offsets = np.array([gap] + list(gap + np.cumsum(lengths, dtype=np.int64)), np.int64)
    kw: dict = {"dim": rng.choice([0, 1, out_dim // 2, out_dim]), "normalize": rng.random() < 0.7,
                "threads": rng.choice([1, 2, 3])}
    if rng.random() < 0.4:
        extra = rng.randrange(3)
        dim = kw["dim"] or out_dim
        kw["out"] = np.full((n + extra, dim), np.nan, np.float32)
        if rng.random() < 0.6:
            kw["rows"] = np.array(rng.sample(range(n + extra), n), np.int64)
    mutated = []
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        what = rng.choice(["ids_value", "ids_dtype", "ids_shape", "offsets_value", "offsets_dtype", "offsets_shape",
                           "dim", "threads", "normalize", "out", "rows"])
        mutated.append(what)
        if what == "ids_value" and isinstance(ids, np.ndarray) and ids.ndim == 1 and ids.size and ids.dtype != object:
            ids = ids.copy()
            ids[rng.randrange(ids.size)] = rng.choice([-1, vocab, vocab + 1, 2**31 - 1, -(2**31)])
        elif what == "ids_dtype" and isinstance(ids, np.ndarray):
            ids = rng.choice([ids.astype(np.int64), ids.astype(np.float64), ids.astype(np.uint32), ids.astype(np.int16),
                              ids.astype(object), ids.astype(str), ids.tolist(), ids.astype(np.complex64), ids[::-1][::-1],
                              np.ascontiguousarray(np.repeat(ids, 2)[::2]), np.repeat(ids, 2)[::2], None, "ids"])
        elif what == "ids_shape" and isinstance(ids, np.ndarray) and ids.ndim == 1:
            ids = rng.choice([ids.reshape(1, -1), np.int32(3), ids[:0], ids[: max(0, ids.size - 1)]])
        elif what == "offsets_value" and isinstance(offsets, np.ndarray) and offsets.ndim == 1 and offsets.size:
            offsets = offsets.copy()
            offsets[rng.randrange(offsets.size)] = rng.choice([-1, 0, total + 1, 2**62, -(2**63), 2**63 - 1,
                                                                int(offsets[-1]), int(offsets[0])])
            if rng.random() < 0.3:
                offsets = offsets[::-1].copy()  # unsorted
        elif what == "offsets_dtype" and isinstance(offsets, np.ndarray):
            offsets = rng.choice([offsets.astype(np.int32), offsets.astype(np.float64), offsets.astype(np.uint64),
                                  offsets.tolist(), offsets.astype(object), offsets[::1].reshape(-1, 1)])
        elif what == "offsets_shape" and isinstance(offsets, np.ndarray) and offsets.ndim == 1:
            offsets = rng.choice([offsets[:0], offsets[:1], offsets[:-1], np.concatenate([offsets, offsets[-1:]])])
        elif what == "dim":
            kw["dim"] = rng.choice([-1, out_dim + 1, 2**31, 2**63 - 1, 2**64, 1.5, "48", None])
        elif what == "threads":
            kw["threads"] = rng.choice([0, -1, 4097, 2**31, 2**40, 1.0, "2"])
        elif what == "normalize":
            kw["normalize"] = rng.choice([None, "yes", 0, 2, [], np.bool_(True)])
        elif what == "out":
            dim = kw["dim"] if type(kw.get("dim")) is int and 0 < kw["dim"] <= out_dim else out_dim
            kw["out"] = rng.choice([
                np.zeros((n, dim + 1), np.float32), np.zeros((max(0, n - 1), dim), np.float32),
                np.zeros((n, dim), np.float64), np.zeros((dim, n), np.float32).T, np.zeros((n * dim,), np.float32),
                np.zeros((n, dim), np.float32)[:, ::-1], [[0.0] * dim] * n, np.zeros((0, dim), np.float32),
                np.broadcast_to(np.zeros(dim, np.float32), (n, dim)),  # read-only
            ])
        elif what == "rows":
            kw["rows"] = rng.choice([np.arange(n)[::-1] - 1, np.arange(n) + 1000, np.zeros(n, np.int64),
                                     np.arange(n + 1), np.arange(n).astype(np.float64), [2**70] * n, "rows"])
    return (ids, offsets), kw, mutated


def _as(x, dtype):
    """x as the core converts it (numpy, 'safe' casting; a list of ints is built in dtype), or None."""
    if isinstance(x, list):
        a = np.array(x)
        info = np.iinfo(dtype)
        if a.dtype.kind != "i" or (a.size and (a.min() < info.min or a.max() > info.max)):
            return None
        return a.astype(dtype)
    if isinstance(x, np.ndarray) and np.can_cast(x.dtype, dtype, "safe"):
        return x.astype(dtype)
    return None


def _valid(core, ids, offsets, kw, vocab, out_dim, max_pos) -> bool:
    """The documented rules (docs/python_api.md, csrc/module.c), for arguments as the generator makes them."""
    ids, offsets = _as(ids, np.int32), _as(offsets, np.int64)
    if ids is None or offsets is None or ids.ndim != 1 or offsets.ndim != 1 or offsets.size < 1:
        return False
    o = offsets
    n = o.size - 1
    if o[0] < 0 or o[-1] > ids.size or np.any(np.diff(o) < 1) or np.any(np.diff(o) > max_pos):
        return False
    if n and (ids[o[0]: o[-1]].min() < 0 or ids[o[0]: o[-1]].max() >= vocab):
        return False
    dim, threads = kw.get("dim", 0), kw.get("threads", 1)  # normalize: any object, by its truth value
    if type(dim) is not int or not 0 <= dim <= out_dim or type(threads) is not int or not 1 <= threads <= 4096:
        return False
    dim = dim or out_dim
    out, rows = kw.get("out"), kw.get("rows")
    if out is None:
        return rows is None
    if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.ndim == 2 and out.flags.c_contiguous
            and out.flags.writeable and out.shape[1] == dim):
        return False
    if rows is None:
        return out.shape[0] >= n
    return (isinstance(rows, np.ndarray) and rows.dtype == np.int64 and rows.shape == (n,)
            and (n == 0 or (rows.min() >= 0 and rows.max() < out.shape[0])))


@pytest.mark.parametrize("block", range(4))
def test_raw_core_encode(core, block):
    info = core.info
    vocab, out_dim, max_pos = info["vocab_size"], info["output_dim"], info["max_positions"]
    refs: dict = {}
    for seed in range(block * 150, (block + 1) * 150):
        rng = random.Random(seed)
        (ids, offsets), kw, mutated = _random_raw_call(rng, vocab, out_dim, max_pos)
        valid = _valid(core, ids, offsets, kw, vocab, out_dim, max_pos)
        context = f"seed {seed}, mutated {mutated}"
        try:
            res = core.encode(ids, offsets, **kw)
        except CLEAN as e:
            assert str(e), f"{type(e).__name__} without a message; {context}"
            assert not valid, f"a valid call raised {type(e).__name__}: {e}; {context}"
            continue
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{type(e).__name__}: {e}; {context}")
        assert valid, f"an invalid call succeeded; {context}"
        ids, o = _as(ids, np.int32), _as(offsets, np.int64)
        dim = kw.get("dim") or out_dim
        rows = kw.get("rows")
        assert res.shape[1] == dim and res is (kw["out"] if "out" in kw else res), context
        for s in range(o.size - 1):
            seq = tuple(int(t) for t in ids[o[s]: o[s + 1]])
            key = (seq, dim, bool(kw["normalize"]))
            if key not in refs:
                refs[key] = _alone(core, seq, dim, bool(kw["normalize"]))
            got = res[rows[s] if rows is not None else s]
            np.testing.assert_array_equal(got, refs[key], err_msg=context)


def _random_ids_input(rng: random.Random, vocab: int, max_pos: int):
    seqs = []
    for _ in range(rng.randrange(0, 5)):
        n = rng.choice([1, 2, 5, max_pos, 0, max_pos + 1])
        seq = [rng.randrange(vocab) for _ in range(n)]
        kind = rng.random()
        if kind < 0.1 and seq:
            seq[rng.randrange(n)] = rng.choice([-1, vocab, 2**31, 2**32 + 5, 2**63 - 1, 2**64 - 1, 2**70])
        if kind < 0.5:
            seqs.append(seq)
        else:
            dt = rng.choice([np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64, np.float32, np.bool_, object])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    seqs.append(np.array(seq, dtype=dt))
                except (OverflowError, ValueError):
                    seqs.append(np.array(seq, dtype=object))
    if rng.random() < 0.1:
        seqs.append(rng.choice([[[1, 2]], "ids", None, 3.5, np.zeros((2, 2), np.int32)]))
    return seqs


def test_encode_ids(model):
    vocab, max_pos, dim = model.info["vocab_size"], model.info["max_positions"], model.get_sentence_embedding_dimension()
    for seed in range(300):
        rng = random.Random(seed)
        seqs = _random_ids_input(rng, vocab, max_pos)
        kw = {"batch_size": rng.choice([1, 2, 32])}
        try:
            res = model.encode_ids(seqs, **kw)
        except CLEAN as e:
            assert str(e), f"seed {seed}: {type(e).__name__} without a message"
            continue
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"seed {seed}: {type(e).__name__}: {e}")
        # it succeeded: every sequence was 1..max_pos integers in the vocabulary, and each row is its own
        assert res.shape == (len(seqs), dim)
        for i, s in enumerate(seqs):
            a = np.asarray(s)
            assert a.ndim == 1 and a.dtype.kind in "iu" and 1 <= a.size <= max_pos, f"seed {seed}: accepted {s!r}"
            assert 0 <= a.min() and a.max() < vocab, f"seed {seed}: accepted ids outside the vocabulary"
            np.testing.assert_array_equal(res[i], _alone(model._core, a, dim, True), err_msg=f"seed {seed}")


_ALPHABET = ["a", "b", " ", "\n", "\t", "\x00", "\x07", "\x1b", "\u00e9", "\u2581", "\U0001f600", "\ufeff", "\u200b",
             "<bos>", "<eos>", "<pad>", "\ud800", "\udfff", "\ufffd", "\u0301", "\r\n", "\\", '"', "\u202e"]


def _random_text(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return rng.choice(["", " " * 10, "x" * rng.choice([5_000, 60_000])])  # empty, blank, longer than the model
    return "".join(rng.choice(_ALPHABET) if rng.random() < 0.5 else chr(rng.randrange(0x20, 0x3000))
                   for _ in range(rng.randrange(0, 40)))


def test_encode_random_strings(model):
    dim = model.get_sentence_embedding_dimension()
    for seed in range(300):
        rng = random.Random(seed)
        texts = [_random_text(rng) for _ in range(rng.randrange(1, 6))]
        single = rng.random() < 0.2
        if single:
            texts = texts[:1]
        arg = texts[0] if single else texts
        if not single and rng.random() < 0.1:
            arg = texts + [rng.choice([None, 3, b"bytes", ["nested"]])]
        kw = rng.choice([{}, {"prompt_name": "query"}, {"prompt": "\ud800 "}, {"truncate": False}, {"batch_size": 2},
                         {"truncate_dim": 7}, {"precision": "binary"}])
        lone = any(0xD800 <= ord(c) <= 0xDFFF for t in (texts + [kw.get("prompt", "")]) for c in t)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = model.encode(arg, **kw)
        except CLEAN as e:
            assert str(e), f"seed {seed}: {type(e).__name__} without a message"
            continue
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"seed {seed}: {type(e).__name__}: {e}; texts {texts!r}")
        assert not lone, f"seed {seed}: a lone surrogate was encoded: {texts!r}"
        res = np.atleast_2d(res)
        assert res.shape[0] == (1 if single else len(texts)), f"seed {seed}"
        if kw.get("precision") is None:
            width = kw.get("truncate_dim", dim)
            assert res.shape[1] == width and np.isfinite(res).all(), f"seed {seed}"
            np.testing.assert_allclose(np.linalg.norm(res, axis=1), 1.0, atol=1e-5, err_msg=f"seed {seed}")
