"""Bounded load test of an OpenAI-compatible embeddings server (loopback only).

Concurrent clients post ``/v1/embeddings`` requests (1..max_inputs texts each, drawn from a fixed
pool) for a fixed time and the run reports requests/s, inputs/s, latency percentiles, errors, and
the server's resident memory sampled once a second (to show it stays flat). Used by the test suite
(tests/test_server.py, against embgemma) and by the benchmark harness (embgemma against
llama-cpp-python's server on the same model).

    python benchmarks/serve_load.py --url http://127.0.0.1:8080 --pid 1234 --seconds 30 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

WORDS = ("the planet mars red jupiter storm venus twin orbit moon ocean tide river mountain forest city "
         "library book science history music garden winter summer engine model vector search query document "
         "language coffee bridge window light shadow market number letter signal network").split()


def make_texts(n: int, seed: int = 0, min_words: int = 4, max_words: int = 48) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"serve_load only targets loopback servers, not {host!r}")


async def run_load(url: str, *, seconds: float = 20.0, concurrency: int = 8, max_inputs: int = 8,
                   pid: int | None = None, model: str = "model", seed: int = 0, pool: int = 512,
                   extra: dict | None = None) -> dict:
    """Run the load; returns the figures as a dict (latencies in milliseconds, memory in MB)."""
    _check_loopback(url)
    seconds = min(float(seconds), 60.0)  # bounded on purpose
    texts = make_texts(pool, seed)
    latencies: list[float] = []
    errors: list[str] = []
    inputs = 0
    rss: list[tuple[float, float]] = []
    t_start = time.perf_counter()
    deadline = t_start + seconds

    async def client(k: int) -> None:
        nonlocal inputs
        rng = random.Random(seed * 1000 + k)
        async with httpx.AsyncClient(base_url=url, timeout=120.0) as http:
            while time.perf_counter() < deadline:
                batch = [rng.choice(texts) for _ in range(rng.randint(1, max_inputs))]
                body = {"model": model, "input": batch, "encoding_format": "float", **(extra or {})}
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/embeddings", json=body)
                    ok = r.status_code == 200 and len(r.json()["data"]) == len(batch)
                    if not ok:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                except (httpx.HTTPError, ValueError, KeyError) as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    inputs += len(batch)

    async def sample_memory() -> None:
        while time.perf_counter() < deadline:
            if pid is not None:
                m = rss_mb(pid)
                if m is not None:
                    rss.append((time.perf_counter() - t_start, m))
            await asyncio.sleep(1.0)

    await asyncio.gather(sample_memory(), *(client(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - t_start
    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 2) if lat else None

    half = [m for t, m in rss if t >= elapsed / 2]
    first = [m for t, m in rss if t < elapsed / 2]
    return {
        "seconds": round(elapsed, 2), "concurrency": concurrency, "max_inputs": max_inputs,
        "requests": len(lat), "errors": len(errors), "error_samples": errors[:5],
        "requests_per_s": round(len(lat) / elapsed, 2), "inputs_per_s": round(inputs / elapsed, 2),
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
        "rss_mb_first_half_max": round(max(first), 1) if first else None,
        "rss_mb_second_half_max": round(max(half), 1) if half else None,
        "rss_mb_end": round(rss[-1][1], 1) if rss else None,
        "rss_samples": [(round(t, 1), round(m, 1)) for t, m in rss],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, help="server process id, to sample its memory")
    p.add_argument("--seconds", type=float, default=20.0, help="at most 60")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-inputs", type=int, default=8)
    p.add_argument("--model", default="model")
    args = p.parse_args()
    res = asyncio.run(run_load(args.url, seconds=args.seconds, concurrency=args.concurrency,
                               max_inputs=args.max_inputs, pid=args.pid, model=args.model))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
