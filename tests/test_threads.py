"""Determinism across thread counts and batch composition; several Python threads on one model;
the default thread count (OMP_NUM_THREADS, else the usable cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import embgemma
from conftest import GOLDEN_DIR
from embgemma import EmbeddingGemma

TEXTS = [f"text number {i} " + "lorem ipsum dolor sit amet " * (i % 9) for i in range(40)]
TEXTS = [t.strip() for t in TEXTS]


def test_thread_count_is_bitwise_invisible():
    outs = []
    for threads in (1, 2, 3, 8):
        m = EmbeddingGemma(GOLDEN_DIR, threads=threads)
        outs.append(m.encode(TEXTS, batch_size=7))
    for o in outs[1:]:
        np.testing.assert_array_equal(outs[0], o)


def test_batch_composition_is_bitwise_invisible(golden_model):
    together = golden_model.encode(TEXTS, batch_size=40)
    alone = np.stack([golden_model.encode(t) for t in TEXTS])
    np.testing.assert_array_equal(together, alone)
    shuffled = golden_model.encode(TEXTS[::-1], batch_size=3)[::-1]
    np.testing.assert_array_equal(together, shuffled)
    np.testing.assert_array_equal(together, golden_model.encode(TEXTS))  # the default: a token budget


def test_concurrent_python_threads_share_one_model(golden_model):
    expected = golden_model.encode(TEXTS, batch_size=5)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                results[i] = golden_model.encode(TEXTS, batch_size=5 + i % 3)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        np.testing.assert_array_equal(results[i], expected)


def test_streaming_in_chunks_is_invisible(golden_model):
    """encode tokenizes and encodes 2048 texts at a time (embgemma.batching.CHUNK_TEXTS): across chunk
    boundaries every row is the text's own embedding, in input order, and the truncation warning is
    given once, with the index in the whole input."""
    import warnings

    from embgemma import batching

    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(2 * batching.CHUNK_TEXTS + 5)]
    long_at = batching.CHUNK_TEXTS + 3  # in the second chunk
    texts[long_at] = "word " * 2000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        streamed = golden_model.encode(texts, batch_size=7)
    assert [str(w.message) for w in caught if "truncated" in str(w.message)] == [
        f"1 text(s) longer than max_seq_length={golden_model.max_seq_length} tokens were truncated "
        f"(first: index {long_at})"
    ]
    picks = [0, 1, batching.CHUNK_TEXTS - 1, batching.CHUNK_TEXTS, long_at, len(texts) - 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = golden_model.encode([texts[i] for i in picks], batch_size=1)
    np.testing.assert_array_equal(streamed[picks], alone)


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.mark.parametrize("value,expected", [("3", 3), (" 5 ", 5), ("3,2", 3), ("7,1,1", 7), ("64", 64)])
def test_omp_num_threads_sets_the_default(monkeypatch, value, expected):
    """OMP_NUM_THREADS is honoured as by any OpenMP program (the first value of its list; above the
    core count too); threads= wins over it."""
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert EmbeddingGemma(GOLDEN_DIR).threads == expected
        assert embgemma.build_info()["default_threads"] == expected
        assert EmbeddingGemma(GOLDEN_DIR, threads=1).threads == 1
        m = EmbeddingGemma(GOLDEN_DIR, threads=2)
        m.threads = None  # back to the default
        assert m.threads == expected


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5", "", " ", ",4"])
def test_invalid_omp_num_threads_warns_and_is_ignored(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = EmbeddingGemma(GOLDEN_DIR).threads
    assert threads == _affinity()
    if value.strip():  # set but wrong: said; empty: as if unset (libgomp does the same)
        assert [str(w.message) for w in caught if "OMP_NUM_THREADS" in str(w.message)] == [
            f"OMP_NUM_THREADS={value!r} is not a positive integer (OpenMP takes one, or a comma-separated list of "
            "them); ignored: using every core this process may use"]
    else:
        assert not [w for w in caught if "OMP_NUM_THREADS" in str(w.message)]


def test_omp_num_threads_above_the_engine_limit(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "100000")
    with pytest.warns(RuntimeWarning, match="above embgemma's limit of 4096 threads; using 4096"):
        assert EmbeddingGemma(GOLDEN_DIR).threads == 4096


def test_cli_info_reports_omp_num_threads():
    env = {**os.environ, "OMP_NUM_THREADS": "3", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "embgemma", "info"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["build"]["default_threads"] == 3
    env.pop("OMP_NUM_THREADS")
    r = subprocess.run([sys.executable, "-m", "embgemma", "info"], capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(r.stdout)["build"]["default_threads"] == _affinity()


@pytest.mark.parametrize("env,expected", [
    ({}, "10000"),                                   # embgemma's default: idle workers sleep sooner
    ({"GOMP_SPINCOUNT": "300k"}, "300k"),            # the user's choice is left alone
    ({"OMP_WAIT_POLICY": "active"}, None),           # so is a wait policy (libgomp derives the count)
])
def test_openmp_spin_count_default(env, expected):
    """Shared cores (docs/performance.md, "Shared cores"): importing embgemma shortens GNU OpenMP's
    spinning before libgomp loads, unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY; the embeddings
    do not depend on it."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = ("import os, embgemma, json; m = embgemma.EmbeddingGemma(%r, threads=2, dtype='float32'); "
            "print(json.dumps([os.environ.get('GOMP_SPINCOUNT'), m.encode(['spin'])[0][:4].tolist()]))" % str(GOLDEN_DIR))
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    spin, emb = json.loads(out.stdout)
    assert spin == expected
    ref = EmbeddingGemma(GOLDEN_DIR, threads=2, dtype="float32").encode(["spin"])[0][:4]
    np.testing.assert_array_equal(np.array(emb, dtype=np.float32), ref)
