"""Memory: encode streams (peak RSS does not grow with the number of texts beyond the output array),
and RSS stays flat over many encode calls and over repeated load / free of a model.

Each measurement runs in a fresh interpreter (no reference stack imported) on the golden model, one
thread. Peak RSS is the kernel's VmHWM, reset with /proc/self/clear_refs just before the measured call.
The figures are printed (pytest -s) and quoted in docs/reliability.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "data" / "golden_model"
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status"),
    pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                       reason="RSS under AddressSanitizer is its shadow memory and quarantine, not ours"),
]

STREAM_SLACK_KB = 8 * 1024  # peak growth, 200k texts minus 20k, beyond the larger output array
FLAT_KB = 2 * 1024  # RSS growth over the second half of the repeated calls / loads

_PRELUDE = textwrap.dedent("""
    import gc, json, sys
    import numpy as np
    from embgemma import EmbeddingGemma, _core
    GOLDEN = {golden!r}
    def kb(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])
""")

_STREAM = _PRELUDE + textwrap.dedent("""
    n = int(sys.argv[1])
    m = EmbeddingGemma(GOLDEN, threads=1)
    m.encode([str(i) for i in range(5000)], batch_size=256)  # allocator and tokenizer warm
    texts = [str(i) for i in range(n)]  # short texts, 3-8 tokens each
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    base = kb("VmRSS:")
    out = m.encode(texts, batch_size=256)
    print(json.dumps({{"peak_growth_kb": kb("VmHWM:") - base, "out_kb": out.nbytes // 1024}}))
""")

_FLAT = _PRELUDE + textwrap.dedent("""
    what, count = sys.argv[1], int(sys.argv[2])
    texts = ["a short text", "another one, a little longer than the first"]
    m = EmbeddingGemma(GOLDEN, threads=1)
    def step():
        if what == "encode":
            m.encode(texts)
        elif what == "load":
            EmbeddingGemma(GOLDEN, threads=1).encode(texts[:1])
        else:  # the C core alone
            _core.Model(GOLDEN)
    for _ in range(count // 10):  # warm: caches, allocator arenas
        step()
    rss = []
    for i in range(count):
        step()
        if i + 1 in (count // 2, count):
            gc.collect()
            rss.append(kb("VmRSS:"))
    print(json.dumps({{"half_kb": rss[0], "end_kb": rss[1]}}))
""")


def _child(script: str, *args) -> dict:
    r = subprocess.run([sys.executable, "-c", script.format(golden=str(GOLDEN_DIR)), *map(str, args)],
                       capture_output=True, text=True, env=CHILD_ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_encode_streams_texts():
    """200,000 short texts: the peak RSS of the encode call grows by the output array and at most
    STREAM_SLACK_KB more than for 20,000 (holding every text's tokenizer output at once, as encode did
    before it streamed, cost 1.5 KB per text here: 263 MB)."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs /proc/self/clear_refs to reset the peak RSS")
    small, large = _child(_STREAM, 20_000), _child(_STREAM, 200_000)
    extra = (large["peak_growth_kb"] - small["peak_growth_kb"]) - (large["out_kb"] - small["out_kb"])
    print(f"peak growth: 20k texts {small['peak_growth_kb']} KB, 200k texts {large['peak_growth_kb']} KB; "
          f"output arrays {small['out_kb']} / {large['out_kb']} KB; beyond the output: {extra} KB")
    assert extra <= STREAM_SLACK_KB, f"encode held {extra} KB more for 180k more texts than their output"


@pytest.mark.parametrize("what,count", [("encode", 10_000), ("load", 200), ("core_load", 200)])
def test_rss_is_flat(what, count):
    """RSS over the second half of `count` encode calls on one model, loads of a model (with its
    tokenizer) or loads of the C model alone, each freed: grows by less than FLAT_KB."""
    r = _child(_FLAT, what, count)
    growth = r["end_kb"] - r["half_kb"]
    print(f"{what} x {count}: RSS {r['half_kb']} KB at half, {r['end_kb']} KB at the end ({growth:+d} KB)")
    assert growth < FLAT_KB, f"RSS grew {growth} KB over the last {count // 2} {what} calls"
