"""Real-weight tier: embgemma on the real google/embeddinggemma-300m against sentence-transformers float32.

Skipped unless EMBGEMMA_REAL_MODEL names the model's sentence-transformers folder (float32 safetensors;
``../shared/tools/get-real-weights`` fetches it and prints the folder; ``.ci/run`` sets the variable).
The texts are the repository's own (tests/data/real_texts/texts.json); queries go through
``encode_query`` and documents through ``encode_document``, as in sentence-transformers. The
computation lives in benchmarks/fidelity.py (``python benchmarks/fidelity.py --model DIR`` prints the
same figures as a table); the reference embeddings are computed once and cached in tests/.cache/.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HAVE_REFERENCE, IN_CI, record_fidelity

# Bars per dtype, set from measurement on the real weights (benchmarks/fidelity.py) and stated with the
# measured figures in docs/fidelity.md; change them together. worst_cos: the lowest cosine of any query or
# document embedding to the reference's; top1: the share of queries whose best document (out of all 66) is
# the reference's; top10: |top-10 ours ∩ top-10 reference| / 10, averaged over the queries; top10_ties: the
# same, counting a document of ours within 0.005 of the reference's 10th score as agreement.
# The issue asked for top10 >= 0.98 for int8 and q8_0. Measured (2026-12-01): int8 0.989 on AVX-512 VNNI
# (0.983 on AVX2, 0.986 on amx) since it keeps its last 3 of 24 layers in bfloat16 (all-int8 gave 0.975 /
# 0.981); q8_0 0.983 (0.981 on AVX2: one swap from the bar; its weights are the file's). Ranks 5-10 of this
# corpus are unrelated documents a few thousandths apart, so the tie-forgiving overlap (measured
# 0.997-1.000) is the one that says more; both are asserted.
BARS: dict[str, dict[str, float]] = {
    "float32": {"worst_cos": 0.99999, "top1": 1.0, "top10": 0.98, "top10_ties": 0.98},
    "bfloat16": {"worst_cos": 0.9999, "top1": 1.0, "top10": 0.98, "top10_ties": 0.98},
    # int16 (12-bit grid, weights and activations): bfloat16-class by auto_dtype's bar. Measured (2026-12-07,
    # avx2): worst 0.999999, top-10 1.000, largest score change 2.8e-4 (bfloat16: 0.999991, 1.000, 6.5e-4)
    "int16": {"worst_cos": 0.9999, "top1": 1.0, "top10": 0.995, "top10_ties": 0.995},
    "int8": {"worst_cos": 0.999, "top1": 1.0, "top10": 0.98, "top10_ties": 0.98},  # 0.99988 / 0.989 / 1.000
    "q8_0": {"worst_cos": 0.999, "top1": 1.0, "top10": 0.98, "top10_ties": 0.98},  # 0.99970 / 0.983 / 1.000
    "q4_0": {"worst_cos": 0.92, "top1": 0.97, "top10": 0.90, "top10_ties": 0.94},  # 0.932, 36/36, 0.933, 0.964
}

# slow as well: the full-size model, minutes on 2 cores (and tests/sanitize/run.sh, which runs -m "not slow"
# with the environment .ci/run exported, must not run it under AddressSanitizer)
pytestmark = [pytest.mark.reference, pytest.mark.slow]

_spec = importlib.util.spec_from_file_location(
    "embgemma_fidelity", Path(__file__).resolve().parent.parent / "benchmarks" / "fidelity.py")
fidelity = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fidelity  # dataclasses look their module up by name
_spec.loader.exec_module(fidelity)

THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.fixture(scope="module")
def real_dir() -> Path:
    d = os.environ.get("EMBGEMMA_REAL_MODEL")
    if not d:
        pytest.skip("real-weight tier: set EMBGEMMA_REAL_MODEL to the real embeddinggemma-300m folder "
                    "(../shared/tools/get-real-weights fetches it and prints the path; .ci/run does this)")
    p = Path(d)
    # set but wrong is a mistake, not a reason to skip
    assert (p / "model.safetensors").is_file() and (p / "modules.json").is_file(), (
        f"EMBGEMMA_REAL_MODEL={d}: not a sentence-transformers folder of embeddinggemma-300m")
    return p


@pytest.fixture(scope="module")
def corpus():
    return fidelity.load_corpus()


@pytest.fixture(scope="module")
def reference(real_dir, corpus):
    if not HAVE_REFERENCE:
        if IN_CI:
            pytest.fail("the reference stack (torch, transformers, sentence-transformers) must be installed in CI")
        pytest.skip("reference stack not installed: pip install -e '.[test]'")
    return fidelity.reference(real_dir, corpus, threads=THREADS)


def test_texts_have_the_intended_lengths(real_dir, corpus):
    """Queries are short, paragraphs 30-350 tokens, long documents 500-2048 (the model's limit), with prompts."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(real_dir / "tokenizer.json"))

    def n(prompt, texts):
        return [len(tok.encode(prompt + t).ids) for t in texts]

    long = corpus.long_slice
    queries = n(fidelity.QUERY_PROMPT, corpus.queries)
    paragraphs = n(fidelity.DOCUMENT_PROMPT, corpus.docs[: long.start])
    longs = n(fidelity.DOCUMENT_PROMPT, corpus.docs[long])
    assert len(corpus.queries) >= 30 and len(paragraphs) >= 60 and len(longs) >= 6
    assert max(queries) <= 32, queries
    assert 30 <= min(paragraphs) and max(paragraphs) <= 360, (min(paragraphs), max(paragraphs))
    assert 500 <= min(longs) and max(longs) <= 2048, longs


def test_reference_retrieves_the_written_document(reference, corpus):
    """The texts make retrieval meaningful: for every query the reference ranks first the document written
    for it, by a clear margin (so top-1 agreement measures the engine, not a coin toss between near ties)."""
    scores = reference.queries.astype(np.float64) @ reference.docs.T.astype(np.float64)
    best = scores.argmax(1)
    wrong = [(q, corpus.doc_ids[b]) for q, b, r in zip(corpus.query_ids, best, corpus.relevant) if b != r]
    assert not wrong, f"the reference's top-1 is not the written document for: {wrong}"
    assert fidelity.reference_margins(reference).min() > 0.05


# The default, dtype="auto" (embgemma/auto_dtype.py), must be bfloat16-class wherever it resolves: its
# own bar (FIDELITY_BAR: worst cosine >= 0.9999, mean top-10 overlap >= 0.995), asserted on every ISA this
# machine can run (the plain-C kernels excepted: float32 there, whose kernels the golden and twin tests
# hold to the vector ones, and minutes of scalar GEMMs on the full model).
from embgemma.auto_dtype import FIDELITY_BAR, resolve  # noqa: E402

BARS["auto"] = {"worst_cos": FIDELITY_BAR["worst_cos"], "top1": 1.0, "top10": FIDELITY_BAR["top10"], "top10_ties": 0.98}

# (dtype, ISA asked for): the automatic choice for each dtype; the opt-in avx512bf16 kernels, whose
# bfloat16 rounds the activations to bfloat16 as well (vdpbf16ps), held to bfloat16's bars; where auto
# picks amx (bfloat16 activations on AMX tiles, also in int8's bfloat16 layers), avx512's float-activation
# bfloat16 and int8 as well; and the default on each vector ISA.
AUTO_ISAS = ("avx2", "avxvnni", "avx512", "avx512bf16", "amx", "neon", "dotprod", "i8mm")
CASES = ([(d, None) for d in BARS if d != "auto"] + [("bfloat16", "avx512bf16"), ("bfloat16", "avx512"), ("int8", "avx512")]
         + [("auto", i) for i in AUTO_ISAS])


@pytest.mark.parametrize("dtype,isa", CASES, ids=[d if i is None else f"{d}-{i}" for d, i in CASES])
def test_dtype_against_sentence_transformers(dtype, isa, real_dir, corpus, reference, monkeypatch):
    bars = BARS[dtype]
    if isa is not None:
        import embgemma

        info = embgemma.build_info()
        if isa not in info["supported_isas"]:
            pytest.skip(f"this CPU cannot run the {isa} kernels")
        if isa == "avx512" and info["chosen_isa"] == "avx512" and dtype != "auto":
            pytest.skip("avx512 is the automatic choice here: the case without an ISA ran it")
        monkeypatch.setenv("EMBGEMMA_ISA", isa)
    monkeypatch.delenv("EMBGEMMA_DTYPE", raising=False)  # "auto" is the default itself, not the suite's float32
    model = fidelity.load_ours(real_dir, None if dtype == "auto" else dtype, THREADS)
    if dtype == "auto":
        assert model.dtype == resolve(isa)[0], model.dtype_note
        print(f"auto on {isa}: {model.dtype_note}")
    else:
        assert model.dtype == dtype
    assert isa is None or model.info["isa"] == isa
    ours = fidelity.encode_ours(model, corpus)
    used_isa = model.info["isa"]
    del model
    r = fidelity.compare(ours, reference, corpus)
    r.setdefault("isa", used_isa)
    summary = (f"{dtype}: worst cos {r['worst_cos']:.6f} ({r['worst_text']}), mean {r['mean_cos']:.6f}, "
               f"long documents worst {r['worst_cos_long']:.6f}; top-1 agreement {r['top1_agreement']:.3f} "
               f"(differs for {r['top1_disagree'] or 'none'}); mean top-10 overlap {r['top10_overlap']:.3f} "
               f"({r['top10_overlap_ties_forgiven']:.3f} with near ties forgiven); isa {r.get('isa', '?')}; "
               f"encode {r['encode_s']:.1f} s")
    print(summary)
    failed = [f"{what} {r[key]:.6f} < {bars[bar]}" for what, key, bar in (
        ("worst cosine", "worst_cos", "worst_cos"), ("top-1 agreement", "top1_agreement", "top1"),
        ("mean top-10 overlap", "top10_overlap", "top10"),
        ("mean top-10 overlap, near ties forgiven", "top10_overlap_ties_forgiven", "top10_ties")) if r[key] < bars[bar]]
    # the session's fidelity report (conftest); its own bar check is the worst-cosine one above
    record_fidelity(f"real weights, {dtype}{f' ({isa})' if isa else ''}, vs sentence-transformers",
                    np.vstack([ours.queries, ours.docs]), np.vstack([reference.queries, reference.docs]),
                    None if failed else bars["worst_cos"])
    assert not failed, f"{'; '.join(failed)} -- {summary}"
