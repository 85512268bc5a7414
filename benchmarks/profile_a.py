"""Workload a (32 texts x 128 tokens, document prompt) in a loop, for a profiler.

    perf record -F 499 -o perf.data -- python benchmarks/profile_a.py --model DIR --dtype int8 --seconds 30
    perf report -i perf.data --no-children --sort symbol

The model is loaded and warmed up before the loop; prints tokens/s of the loop alone.
"""

from __future__ import annotations

import argparse
import random
import time

from embgemma import EmbeddingGemma
from embgemma.bench import _text_of_length, document_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", default=None, help="weights mode (default: auto)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    m = EmbeddingGemma(a.model, dtype=a.dtype, threads=a.threads)
    prompt, rng = document_prompt(m), random.Random(0)
    texts = [_text_of_length(m, prompt, rng, 128) for _ in range(32)]
    m.encode(texts, prompt=prompt)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < a.seconds:
        m.encode(texts, prompt=prompt)
        n += 1
    print(f"{m.dtype} on {m.info['isa']}: {n * 32 * 128 / (time.perf_counter() - t0):.0f} tok/s ({n} calls)")


if __name__ == "__main__":
    main()
