"""Processes: Ctrl-C during a long encode (between batches, and inside one long engine call), and
multiprocessing with the fork, spawn and forkserver start methods (docs/thread_safety.md). Each
child runs under a time limit, so a hang fails the test instead of hanging the run."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import struct
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

INTERRUPT_BOUND_S = 2.0  # Ctrl-C to KeyboardInterrupt, between batches or inside one engine call

_CTRL_C_CHILD = textwrap.dedent("""
    import json, signal, time
    # Ctrl-C as in a terminal, even when this run inherited SIGINT ignored (a job started in the
    # background by a non-interactive shell does)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # and deliverable: a run may also inherit SIGINT blocked (the mask passes through fork and exec)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
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


def _signal_state(pid: int) -> str:
    """The kernel's view of a process's signals (Linux): blocked, ignored, caught and pending masks,
    for a failure message that says whether the SIGINT was held back or never arrived."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")))
    except OSError as e:
        return f"unknown ({e})"


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
        signals = _signal_state(proc.pid)
        got = _read_json_line(proc, 60)
        assert "interrupted_at" in got, (f"the encode ran to the end ({got}) although it was expected to take {ready}; "
                                         f"the child's signal state after the SIGINT: {signals}")
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


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.fixture(scope="module")
def attention_heavy_dir(tmp_path_factory) -> Path:
    """The golden model's files with 24 global-attention layers of EmbeddingGemma's attention width
    (3 query heads of 256) on a 64-wide residual stream, random weights written with NumPy (no
    reference stack): a 2048-token sequence costs tens of seconds of attention in one engine call,
    with little scratch memory and 15 MB of weights."""
    out = tmp_path_factory.mktemp("heavy") / "model"
    shutil.copytree(proc_workers.GOLDEN_DIR, out)
    D, H, Hd, inter, layers = 64, 3, 256, 128, 24
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(hidden_size=D, num_attention_heads=H, num_key_value_heads=1, head_dim=Hd, intermediate_size=inter,
               num_hidden_layers=layers, layer_types=["full_attention"] * layers, max_position_embeddings=2048,
               query_pre_attn_scalar=Hd)
    (out / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1]))

    t = {"embed_tokens.weight": w(cfg["vocab_size"], D), "norm.weight": np.zeros(D)}
    for i in range(layers):
        p = f"layers.{i}."
        t.update({p + n: np.zeros(D) for n in ("input_layernorm.weight", "post_attention_layernorm.weight",
                                                "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight")})
        t.update({p + "self_attn.q_norm.weight": np.zeros(Hd), p + "self_attn.k_norm.weight": np.zeros(Hd),
                  p + "self_attn.q_proj.weight": w(H * Hd, D), p + "self_attn.k_proj.weight": w(Hd, D),
                  p + "self_attn.v_proj.weight": w(Hd, D), p + "self_attn.o_proj.weight": w(D, H * Hd),
                  p + "mlp.gate_proj.weight": w(inter, D), p + "mlp.up_proj.weight": w(inter, D),
                  p + "mlp.down_proj.weight": w(D, inter)})
    _write_safetensors(out / "model.safetensors", t)
    prev = D
    for name, width in (("2_Dense", 2 * D), ("3_Dense", D)):
        c = json.loads((out / name / "config.json").read_text())
        c.update(in_features=prev, out_features=width)
        (out / name / "config.json").write_text(json.dumps(c))
        _write_safetensors(out / name / "model.safetensors", {"linear.weight": w(width, prev)})
        prev = width
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    pooling["embedding_dimension"] = D
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return out


_LONG_CALL_CHILD = textwrap.dedent("""
    import json, signal, time
    import numpy as np
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (see _CTRL_C_CHILD)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
    from embgemma import EmbeddingGemma
    say = lambda **kw: print(json.dumps(kw), flush=True)
    m = EmbeddingGemma({folder!r}, threads=1)  # one thread: slice times that a busy machine does not stretch
    rng = np.random.default_rng(1)
    def seq(n):
        ids = rng.integers(3, m.info["vocab_size"], n).astype(np.int32)
        ids[0], ids[-1] = m.bos_token_id, m.eos_token_id
        return ids
    probe = [seq(40), seq(7)]
    before = m.encode_ids(probe)
    t = time.perf_counter(); m.encode_ids([seq(512)]); t512 = time.perf_counter() - t
    per_seq = 16 * t512  # a 2048-token sequence: its attention is quadratic in the length
    n = int(min(max(np.ceil(30.0 / per_seq), 2), 8))  # about 30 s of work in one call
    ids = np.concatenate([seq(2048) for _ in range(n)])
    offsets = np.arange(n + 1, dtype=np.int64) * 2048
    say(ready=n * per_seq, n=n)
    t0 = time.perf_counter()
    try:
        m._core.encode(ids, offsets, threads=1)  # one engine call
        say(finished=time.perf_counter() - t0)
    except KeyboardInterrupt:
        say(interrupted_at=time.monotonic(), after=time.perf_counter() - t0)
    say(same=bool((m.encode_ids(probe) == before).all()))
""")


def test_ctrl_c_stops_one_long_engine_call(attention_heavy_dir):
    """SIGINT a second into a single ~30 s engine call (n x 2048 tokens of global attention): the C
    core polls for signals between layers and attention slices, so KeyboardInterrupt comes within
    INTERRUPT_BOUND_S, and the model encodes exactly as before."""
    proc = subprocess.Popen([sys.executable, "-c", _LONG_CALL_CHILD.format(folder=str(attention_heavy_dir))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV, cwd=ROOT)
    try:
        ready = _read_json_line(proc, 180)
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        signals = _signal_state(proc.pid)
        got = _read_json_line(proc, 300)
        assert "interrupted_at" in got, (f"the call ran to the end ({got}) although it was expected to take {ready}; "
                                         f"the child's signal state after the SIGINT: {signals}")
        latency = got["interrupted_at"] - sent
        print(f"Ctrl-C latency {latency * 1000:.1f} ms, {got['after']:.2f} s into one engine call of "
              f"{ready['n']} x 2048 tokens (estimated {ready['ready']:.1f} s)")
        assert latency < INTERRUPT_BOUND_S, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
        assert ready["ready"] > 1.0 + 2 * INTERRUPT_BOUND_S, "too little work to tell a prompt stop from the end"
        assert _read_json_line(proc, 60) == {"same": True}
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def test_any_signal_handler_exception_stops_a_call(attention_heavy_dir):
    """Not only Ctrl-C: whatever a Python signal handler raises during a call (here a SIGALRM
    timeout) stops the engine call and comes out of encode; calls on other threads are left alone
    (Python runs handlers on the main thread only)."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs signal.setitimer")
    m = EmbeddingGemma(attention_heavy_dir, threads=2)
    ids = np.random.default_rng(2).integers(3, m.info["vocab_size"], 4096).astype(np.int32)
    offsets = np.array([0, 2048, 4096], dtype=np.int64)
    probe = m.encode_ids([ids[:40]])

    def on_alarm(signum, frame):
        raise TimeoutError("took too long")

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="took too long"):
            m._core.encode(ids, offsets, threads=2)
        took = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert took < 0.5 + INTERRUPT_BOUND_S, f"the call stopped {took - 0.5:.2f} s after the signal"
    np.testing.assert_array_equal(m.encode_ids([ids[:40]]), probe)


def test_cancel_poll_keeps_the_c_contract(golden_model):
    """The C side of cancellation through eg_test_encode's oracle (csrc/testing.c): a cancel poll that
    says stop at its k-th call ends the call with EG_ERR_CANCELLED on exactly that poll, with no
    output row written and its scratch freed (tests/sanitize/run.sh runs this under ASan); one that
    says stop at the first poll always stops a valid call before any output."""
    def call(lengths, stop_at, threads, rows=None):
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype("<i2").tobytes()
        flags = 1 | (2 if rows is not None else 0)
        flags2 = (threads + 1) << 5 | stop_at << 2 | 1
        head = struct.pack("<bbBB", len(lengths), 48, flags, flags2) + offsets
        if rows is not None:
            head += struct.pack(f"<{len(rows)}b", *rows)
        ids = b"".join(bytes([2] + [3 + (5 * i + n) % 120 for i in range(n - 2)] + [1]) for n in lengths)
        return head + ids

    core = golden_model._core
    for lengths in ([5], [40, 3, 17], [200, 200, 100]):
        for stop_at in range(8):  # 0: no poll
            for threads in (1, 2):
                core._test_encode(call(lengths, stop_at, threads))
                core._test_encode(call(lengths, stop_at, threads, rows=list(range(len(lengths)))[::-1]))


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
