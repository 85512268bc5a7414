"""Shared cores: N embedding processes of T threads each at once, against one alone.

Ray actors, Spark executors and servers often share a machine's cores with other work. This starts
``--procs`` worker processes (spawned, each loading the model with ``threads=--threads``), lets them
all load, then releases them together; each encodes the same fixed batches (``embgemma.bench``'s seeded
document mix) for ``--seconds`` and reports tokens/s. Printed: each process's tokens/s and the sum,
which on a machine of C cores is to be compared with one process alone (``--procs 1``).

    python benchmarks/contention.py --model DIR --procs 1 --threads 2
    python benchmarks/contention.py --model DIR --procs 2 --threads 2        # oversubscribed 2x on 2 cores
    OMP_WAIT_POLICY=passive python benchmarks/contention.py ...              # any environment applies to all
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time


def _worker(model_dir: str, dtype: str, threads: int, seconds: float, ready, go, out) -> None:
    from embgemma import EmbeddingGemma
    from embgemma.bench import make_workload

    model = EmbeddingGemma(model_dir, dtype=dtype, threads=threads)
    work = make_workload(model)
    prompt = work["doc_prompt"]
    model.encode(work["batches"][0], prompt=prompt, batch_size=len(work["batches"][0]))  # warm-up
    ready.put(os.getpid())
    go.wait()
    tokens, calls, t0, cpu0 = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        batch = work["batches"][calls % len(work["batches"])]
        model.encode(batch, prompt=prompt, batch_size=len(batch))
        tokens += work["batch_tokens"][calls % len(work["batches"])]
        calls += 1
    wall = time.perf_counter() - t0
    out.put({"pid": os.getpid(), "tokens": tokens, "calls": calls, "wall_s": wall,
             "cpu_s": time.process_time() - cpu0, "tok_s": tokens / wall, "dtype": model.dtype})


def run(model_dir: str, procs: int, threads: int, seconds: float, dtype: str | None) -> dict:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=_worker, args=(model_dir, dtype, threads, seconds, ready, go, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=600)
    go.set()
    rows = [out.get(timeout=seconds * 10 + 600) for _ in ps]
    for p in ps:
        p.join()
    return {"procs": procs, "threads": threads, "seconds": seconds,
            "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "EMBGEMMA_"))},
            "workers": rows, "total_tok_s": sum(r["tok_s"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder or file")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--dtype", default=None, help="weights mode (default: auto)")
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    a = ap.parse_args(argv)
    r = run(a.model, a.procs, a.threads, a.seconds, a.dtype)
    each = ", ".join(f"{w['tok_s']:.0f}" for w in r["workers"])
    print(f"{a.procs} x {a.threads} threads {r['env'] or ''}: total {r['total_tok_s']:.0f} tok/s (each: {each}; "
          f"dtype {r['workers'][0]['dtype']})")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
