"""Processes: Ctrl-C during a long encode, and multiprocessing with the fork, spawn and forkserver
start methods (docs/thread_safety.md). Each child runs under a time limit, so a hang fails the test
instead of hanging the run."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import proc_workers
from embgemma import EmbeddingGemma, build_info

ROOT = Path(__file__).resolve().parent.parent
# the child imports this checkout's embgemma (cwd first on sys.path, then PYTHONPATH), whatever is installed
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

INTERRUPT_BOUND_S = 2.0  # Ctrl-C to KeyboardInterrupt: the engine is interrupted between batches

_CTRL_C_CHILD = textwrap.dedent("""
    import json, signal, time
    # Ctrl-C as in a terminal, even when this run inherited SIGINT ignored (a job started in the
    # background by a non-interactive shell does)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from embgemma import EmbeddingGemma
    GOLDEN = {golden!r}
    say = lambda **kw: print(json.dumps(kw), flush=True)
    m = EmbeddingGemma(GOLDEN, threads=1)  # one thread: batch times that a busy machine does not stretch
    probe = ["probe text one", "another probe"]
    before = m.encode(probe)
    texts = [f"text number {{i}} " * 3 for i in range(1000)]
    t = time.perf_counter(); m.encode(texts); per_text = (time.perf_counter() - t) / len(texts)
    n = int(min(max(10.0 / per_text, 20000), 2_000_000))  # about 10 s of work
    texts = [f"text number {{i}} " * 3 for i in range(n)]
    say(ready=n * per_text, n=n)
    t0 = time.perf_counter()
    try:
        m.encode(texts, batch_size=32)
        say(finished=time.perf_counter() - t0)
    except KeyboardInterrupt:
        say(interrupted_at=time.monotonic(), after=time.perf_counter() - t0)
    after = m.encode(probe)
    fresh = EmbeddingGemma(GOLDEN, threads=1).encode(probe)
    say(same=bool((after == before).all()), fresh=bool((after == fresh).all()))
""")


def _read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        pytest.fail(f"no answer from the child within {timeout} s; stderr: {proc.stderr.read()[-2000:]}")
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail(f"child exited ({proc.returncode}); stderr: {proc.stderr.read()[-2000:]}")
    return json.loads(line)


def test_ctrl_c_stops_a_long_encode_and_leaves_the_model_usable():
    """SIGINT a second into a ~10 s encode of many short texts: KeyboardInterrupt within
    INTERRUPT_BOUND_S, then the same model object encodes exactly as before and as a fresh one."""
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_CHILD.format(golden=str(proc_workers.GOLDEN_DIR))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV, cwd=ROOT)
    try:
        ready = _read_json_line(proc, 120)
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        got = _read_json_line(proc, 60)
        assert "interrupted_at" in got, f"the encode ran to the end ({got}) although it was expected to take {ready}"
        latency = got["interrupted_at"] - sent  # CLOCK_MONOTONIC: one clock for both processes
        print(f"Ctrl-C latency {latency * 1000:.1f} ms, {got['after']:.2f} s into a {ready['ready']:.1f} s encode "
              f"of {ready['n']} texts")
        assert latency < INTERRUPT_BOUND_S, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
        assert ready["ready"] > 1.0 + 2 * INTERRUPT_BOUND_S, "too little work to tell a prompt stop from the end"
        assert _read_json_line(proc, 60) == {"same": True, "fresh": True}
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def _run_child(ctx, target, args, timeout: float = 120):
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    try:
        return q.get(timeout=timeout)
    except Exception:  # queue.Empty: the child hung (or died)
        pytest.fail(f"the {ctx.get_start_method()} child gave no result in {timeout} s (hung in OpenMP?)")
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()


def test_fork_after_the_parent_encoded():
    """GNU libgomp's thread pool does not survive fork(): a forked child that starts a team after its
    parent did waits forever. The C core marks such a child (pthread_atfork) and encodes on one thread
    there, warning once; the numbers are the same (thread count is invisible)."""
    model = EmbeddingGemma(proc_workers.GOLDEN_DIR, threads=2)
    expected = model.encode(proc_workers.TEXTS, batch_size=8)  # the parent's OpenMP pool now exists
    out, warned = _run_child(mp.get_context("fork"), proc_workers.encode_with, (model,))
    np.testing.assert_array_equal(out, expected)
    if build_info()["openmp"]:
        assert len(warned) == 1 and "'spawn'" in warned[0] and "one thread" in warned[0], warned
    assert model.encode(proc_workers.TEXTS[:3]).shape == (3, expected.shape[1])  # the parent is unaffected


def _pool_encode(method: str) -> np.ndarray:
    with mp.get_context(method).Pool(2) as pool:
        res = pool.map_async(proc_workers.load_and_encode, [str(proc_workers.GOLDEN_DIR)] * 2)
        outs = res.get(timeout=180)
    np.testing.assert_array_equal(outs[0], outs[1])
    return outs[0]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_load_their_own_model(method, golden_model):
    """The recommended way: each worker process loads the model from its path and encodes with all
    its threads."""
    expected = golden_model.encode(proc_workers.TEXTS, batch_size=8)
    np.testing.assert_array_equal(_pool_encode(method), expected)
