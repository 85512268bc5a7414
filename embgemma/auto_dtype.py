"""``dtype="auto"``, the default: which weights mode a model gets when none is asked for.

The rule: the fastest mode, on the kernel level (ISA) the model runs on, whose **measured** fidelity on
the real google/embeddinggemma-300m is bfloat16-class (``FIDELITY_BAR``, on the real-weight tier's texts,
against sentence-transformers float32), and which beats float32 by ``MIN_SPEEDUP`` on every harness
workload; else float32, the exact mode. The figures are measurements committed here with where they came
from (docs/performance.md, docs/fidelity.md): an ISA or a mode that has not been measured is never
chosen, so a CPU nobody has timed gets float32. ``tests/test_real_weights.py`` asserts the resolved
default's fidelity on every vector ISA the test machine can run.

Files whose layer matrices are stored quantized (GGUF Q8_0 / Q4_0) load as stored: expanding them
cannot bring back what quantizing took away.
"""

from __future__ import annotations

from dataclasses import dataclass

#: bfloat16-class fidelity (bfloat16 itself measures worst cosine 0.999986-0.999991, top-10 1.000):
#: the worst cosine of any of the tier's 102 embeddings, and the mean top-10 overlap of its 36 searches.
FIDELITY_BAR = {"worst_cos": 0.9999, "top10": 0.995}

#: exactness is worth this much: a mode replaces float32 only when it is at least this much faster on
#: each of the workloads a, b and d (a 5% gain is within the machines' run-to-run noise).
MIN_SPEEDUP = 1.10


@dataclass(frozen=True)
class Measurement:
    """One weights mode on one ISA, measured on the real weights."""

    speed: tuple[float, float, float]  # tok/s ÷ float32's on workloads a, b, d of benchmarks/run.py, same run
    worst_cos: float                   # tests/test_real_weights.py / benchmarks/fidelity.py
    top10: float                       # mean top-10 overlap (not forgiving near ties)
    source: str                        # where the figures come from

    def faithful(self) -> bool:
        return self.worst_cos >= FIDELITY_BAR["worst_cos"] and self.top10 >= FIDELITY_BAR["top10"]


_SPR_1130 = ("2-core Intel Xeon (Sapphire Rapids), avx512 kernels, benchmarks/results/real.json (2026-11-30); "
             "fidelity: docs/fidelity.md")
_SPR_1201 = ("2-core Intel Xeon (Sapphire Rapids), amx, benchmarks/results/real-amx.json (2026-12-01); "
             "fidelity: docs/fidelity.md")
_ZEN3_1207 = ("2-core AMD EPYC (Zen 3), avx2 kernels, benchmarks/results/real-avx2.json (2026-12-07); "
              "fidelity: docs/fidelity.md")
_ZEN3_1208 = ("2-core AMD EPYC (Zen 3), avx2 kernels, benchmarks/results/real-avx2-1208.json (2026-12-08, "
              "float32 in the same run, 3 repetitions); fidelity: docs/fidelity.md")

#: ISA -> mode -> measurement. float32 is the reference (speed 1) and needs no row.
MEASURED: dict[str, dict[str, Measurement]] = {
    "avx2": {
        "bfloat16": Measurement((563 / 551, 503 / 490, 418 / 406), 0.999991, 1.000, _ZEN3_1207),
        "int8": Measurement((796 / 524, 604 / 484, 507 / 402), 0.999681, 0.983, _ZEN3_1208),
        # faithful, ~1.2x on most workloads but one of a, b, d under 1.10x in each run: 1.04x on b here
        # (1.19 / 1.09 / 1.09 per repetition); the 2026-12-07 run had 1.20 / 1.19 / 1.04 (d). The int16
        # GEMM runs at its instruction ceiling, ~1.5x float32's (benchmarks/gemm_ceiling.c)
        "int16": Measurement((622 / 524, 505 / 484, 480 / 402), 0.999999, 1.000, _ZEN3_1208),
    },
    "avx512": {
        "bfloat16": Measurement((1108 / 1192, 993 / 1052, 834 / 871), 0.999991, 1.000, _SPR_1130),
        "int8": Measurement((2363 / 1192, 1876 / 1052, 1320 / 871), 0.999881, 0.989, _SPR_1130),
    },
    "amx": {
        "bfloat16": Measurement((3328 / 1063, 2338 / 971, 1532 / 816), 0.999986, 1.000, _SPR_1201),
        "int8": Measurement((2263 / 1063, 1867 / 971, 1320 / 816), 0.999880, 0.986, _SPR_1201),
    },
}

#: the modes "auto" may pick, for files stored in floating point (F32, F16, BF16)
CANDIDATES = ("float32", "bfloat16", "int16", "int8")


def resolve(isa: str) -> tuple[str, str]:
    """The mode ``dtype="auto"`` takes on ``isa`` for a floating-point file, and a sentence saying why."""
    rows = MEASURED.get(isa, {})
    if not rows:
        return "float32", f"auto: float32 (no mode has been measured faster and faithful on {isa}; float32 is exact)"
    best, best_speed = "float32", 1.0
    for mode in CANDIDATES:
        m = rows.get(mode)
        if m is None or not m.faithful() or min(m.speed) < MIN_SPEEDUP:
            continue
        if min(m.speed) > best_speed:
            best, best_speed = mode, min(m.speed)
    others = ", ".join(
        f"{mode} {min(m.speed):.2f}x" + ("" if m.faithful() else f" but worst cosine {m.worst_cos:.6f} / top-10 {m.top10:.3f}")
        for mode, m in rows.items() if mode != best)
    if best == "float32":
        return "float32", f"auto: float32 (on {isa} no mode is both bfloat16-class and {MIN_SPEEDUP:.2f}x faster: {others})"
    return best, (f"auto: {best} ({min(rows[best].speed):.2f}x float32 or more on {isa}, worst cosine "
                  f"{rows[best].worst_cos:.6f}; others: {others}; dtype='float32' is exact)")
