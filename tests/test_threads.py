"""Determinism across thread counts and batch composition; several Python threads on one model."""

from __future__ import annotations

import threading

import numpy as np

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
