"""Quick side-by-side: embgemma against sentence-transformers on CPU PyTorch (float32), same random
full-size EmbeddingGemma model, same inputs, same thread count, alternated runs, medians.

    python benchmarks/quick_vs_torch.py [--threads 2] [--texts 32] [--tokens 128] [--reps 5]

Needs the test extra. The full competitor harness (ONNX Runtime, OpenVINO, llama.cpp) is separate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()

    import refmodel
    import torch

    from embgemma import EmbeddingGemma

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        path = refmodel.build(Path(d) / "model", refmodel.FULL, seed=11)
        st = refmodel.load_reference(path)
        eg = EmbeddingGemma(path, threads=a.threads)
        rng = np.random.default_rng(0)
        ids = np.c_[np.full(a.texts, 2), rng.integers(3, 4096, (a.texts, a.tokens - 2)), np.ones(a.texts, int)]
        feats = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(ids.shape, dtype=torch.long)}
        times: dict[str, list[float]] = {"sentence-transformers (torch fp32)": [], "embgemma (fp32)": []}
        for _ in range(a.reps):
            for name in times:
                t0 = time.perf_counter()
                if name.startswith("sentence"):
                    with torch.no_grad():
                        ref = st.forward(dict(feats))["sentence_embedding"].numpy()
                else:
                    out = eg.encode_ids(list(ids), batch_size=a.texts)
                times[name].append(time.perf_counter() - t0)
        n_tok = ids.size
        base = np.median(times["sentence-transformers (torch fp32)"])
        print(f"{a.texts} texts x {a.tokens} tokens, {a.threads} threads, median of {a.reps}")
        for name, ts in times.items():
            m = np.median(ts)
            print(f"  {name:36s} {m:7.2f} s  {n_tok / m:8.0f} tok/s  {base / m:5.2f}x")
        cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
        print(f"  worst cosine embgemma vs reference: {cos.min():.9f}")


if __name__ == "__main__":
    main()
