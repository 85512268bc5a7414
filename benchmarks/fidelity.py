"""Fidelity of each embgemma weight type on the real EmbeddingGemma-300m, against sentence-transformers float32.

    python benchmarks/fidelity.py --model DIR [--dtypes float32,bfloat16,int16,int8,q8_0,q4_0] [--threads 2] [--json out.json]

DIR is the real model's sentence-transformers folder (``../shared/tools/get-real-weights`` prints it).
The texts are the repository's own (tests/data/real_texts/texts.json: 36 search queries, 60 paragraphs,
6 long documents of 650-1820 tokens). Queries go through ``encode_query`` and documents through
``encode_document``, with the model's prompts ("task: search result | query: ", "title: none | text: "),
in sentence-transformers on PyTorch float32 (the reference) and in embgemma for each dtype. Per dtype:

- worst / mean cosine of each embedding to the reference's (all 102 texts, and the 6 long documents alone);
- top-1 agreement: the share of queries whose best document (searched over all 66) is the reference's;
- mean top-10 overlap: |top-10 ours ∩ top-10 reference| / 10, averaged over the queries; and the same
  forgiving near ties: a document of our top 10 also counts when the reference scores it within TIE_EPS
  (0.005) of its own 10th best (its ranks 10 and 11 are often closer than that; the header prints how often);
- max |Δ score|: the largest change of any query-document cosine score;
- hits: queries whose best document is the one written for them (the reference's figure is the ceiling);
- the encode time of the 102 texts (model load not included).

The reference embeddings are cached in tests/.cache/ (git-ignored), keyed by the model's safetensors
(size, mtime), the texts, the prompts, the method and the torch / transformers / sentence-transformers versions.

The same functions serve tests/test_real_weights.py (it imports this file); keep them free of printing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TEXTS_FILE = REPO / "tests" / "data" / "real_texts" / "texts.json"
CACHE_DIR = REPO / "tests" / ".cache"
DTYPES = ("float32", "bfloat16", "int16", "int8", "q8_0", "q4_0")
QUERY_PROMPT = "task: search result | query: "
DOCUMENT_PROMPT = "title: none | text: "
TOP_K = 10
# For the tie-forgiving top-10 overlap: a document of our top 10 counts when the reference scores it within
# this much of its own 10th best score. The reference's ranks 10 and 11 are often closer than that (unrelated
# documents, scores about 0.15), where any reduced precision reorders them.
TIE_EPS = 0.005
# One text per forward pass: no padding, so each reference embedding is that text's alone (and the long
# documents are not padded into a batch with 31 others, which made the reference 5x slower).
REFERENCE_METHOD = "encode_query / encode_document, batch_size=1, float32, cpu"


@dataclass(frozen=True)
class Corpus:
    """The shipped texts: queries, then every document (paragraphs first, the long documents last)."""

    query_ids: tuple[str, ...]
    queries: tuple[str, ...]
    relevant: tuple[int, ...]  # per query: the index in docs of the document written to answer it
    doc_ids: tuple[str, ...]
    docs: tuple[str, ...]
    n_long: int  # the last n_long docs are the long documents

    @property
    def long_slice(self) -> slice:
        return slice(len(self.docs) - self.n_long, len(self.docs))


def load_corpus(path: str | os.PathLike[str] = TEXTS_FILE) -> Corpus:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    docs = list(data["documents"]) + list(data["long_documents"])
    doc_ids = [d["id"] for d in docs]
    index = {d: i for i, d in enumerate(doc_ids)}
    assert len(index) == len(doc_ids), f"{path}: duplicate document ids"
    return Corpus(
        query_ids=tuple(q["id"] for q in data["queries"]),
        queries=tuple(q["text"] for q in data["queries"]),
        relevant=tuple(index[q["relevant"]] for q in data["queries"]),
        doc_ids=tuple(doc_ids),
        docs=tuple(d["text"] for d in docs),
        n_long=len(data["long_documents"]),
    )


@dataclass(repr=False)
class Embeddings:
    queries: np.ndarray  # (n_queries, 768) float32, L2-normalized
    docs: np.ndarray  # (n_docs, 768)
    seconds: float  # encode time of all texts (load excluded)
    cached: bool = False
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # short: pytest prints fixtures' values in failure reports
        return (f"Embeddings(queries={self.queries.shape}, docs={self.docs.shape}, seconds={self.seconds:.1f}, "
                f"cached={self.cached})")


# ---------------------------------------------------------------------------- the reference


def _reference_key(model_dir: Path, corpus: Corpus) -> str:
    import sentence_transformers
    import torch
    import transformers

    weights = sorted(
        (str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns) for p in model_dir.rglob("*.safetensors")
    )
    if not weights:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors; is this the model's sentence-transformers folder?")
    blob = json.dumps({
        "weights": weights,
        "texts": [corpus.queries, corpus.docs],
        "prompts": [QUERY_PROMPT, DOCUMENT_PROMPT],
        "method": REFERENCE_METHOD,
        "versions": [sentence_transformers.__version__, transformers.__version__, torch.__version__],
    })
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def reference(model_dir: str | os.PathLike[str], corpus: Corpus, threads: int = 2, *, use_cache: bool = True) -> Embeddings:
    """sentence-transformers float32 on the CPU (torch.set_num_threads(threads)); cached in tests/.cache/."""
    import torch

    model_dir = Path(model_dir).resolve()
    key = _reference_key(model_dir, corpus)
    cache = CACHE_DIR / f"real_reference_{key}.npz"
    if use_cache and cache.is_file():
        with np.load(cache) as z:
            meta = json.loads(str(z["meta"]))
            return Embeddings(z["queries"], z["docs"], float(meta["seconds"]), cached=True, meta=meta)

    from sentence_transformers import SentenceTransformer

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        st = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.float32})
        st.float()
        assert st.prompts.get("query") == QUERY_PROMPT and st.prompts.get("document") == DOCUMENT_PROMPT, st.prompts
        t0 = time.perf_counter()
        q = st.encode_query(list(corpus.queries), batch_size=1, convert_to_numpy=True)
        d = st.encode_document(list(corpus.docs), batch_size=1, convert_to_numpy=True)
        seconds = time.perf_counter() - t0
        del st
    finally:
        torch.set_num_threads(before)  # the test session shares torch's global thread count
    meta = {"seconds": seconds, "threads": threads, "key": key, "model": str(model_dir)}
    out = Embeddings(np.asarray(q, np.float32), np.asarray(d, np.float32), seconds, meta=meta)
    if use_cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, queries=out.queries, docs=out.docs, meta=np.array(json.dumps(meta)))
        os.replace(tmp, cache)  # atomic: concurrent runs never read half a file
    return out


# ---------------------------------------------------------------------------- embgemma


def load_ours(model_dir: str | os.PathLike[str], dtype: str, threads: int = 2):
    from embgemma import EmbeddingGemma

    return EmbeddingGemma(model_dir, dtype=dtype, threads=threads)


def encode_ours(model, corpus: Corpus) -> Embeddings:
    """encode_query / encode_document with the model's default prompts."""
    t0 = time.perf_counter()
    q = model.encode_query(list(corpus.queries))
    d = model.encode_document(list(corpus.docs))
    return Embeddings(np.asarray(q, np.float32), np.asarray(d, np.float32), time.perf_counter() - t0)


# ---------------------------------------------------------------------------- comparison


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _scores(e: Embeddings) -> np.ndarray:
    q = np.asarray(e.queries, np.float64)
    d = np.asarray(e.docs, np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return q @ d.T


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def compare(ours: Embeddings, ref: Embeddings, corpus: Corpus) -> dict:
    """The figures of one dtype against the reference (plain floats and lists: JSON-ready)."""
    cos_q = _cos_rows(ours.queries, ref.queries)
    cos_d = _cos_rows(ours.docs, ref.docs)
    cos_all = np.concatenate([cos_q, cos_d])
    cos_long = cos_d[corpus.long_slice]
    s_ours, s_ref = _scores(ours), _scores(ref)
    top_ours, top_ref = _top(s_ours, TOP_K), _top(s_ref, TOP_K)
    top1_same = top_ours[:, 0] == top_ref[:, 0]
    overlap = [len(set(a) & set(b)) / TOP_K for a, b in zip(top_ours, top_ref)]
    tenth = s_ref[np.arange(len(top_ref)), top_ref[:, -1]]
    overlap_ties = (s_ref[np.arange(len(top_ours))[:, None], top_ours] >= tenth[:, None] - TIE_EPS).mean(1)
    relevant = np.asarray(corpus.relevant)
    worst = int(np.argmin(cos_all))
    worst_name = corpus.query_ids[worst] if worst < len(cos_q) else corpus.doc_ids[worst - len(cos_q)]
    return {
        "rows": int(cos_all.size),
        "worst_cos": float(cos_all.min()),
        "worst_text": worst_name,
        "mean_cos": float(cos_all.mean()),
        "worst_cos_long": float(cos_long.min()) if cos_long.size else None,
        "mean_cos_long": float(cos_long.mean()) if cos_long.size else None,
        "top1_agreement": float(top1_same.mean()),
        "top1_disagree": [corpus.query_ids[i] for i in np.flatnonzero(~top1_same)],
        "top10_overlap": float(np.mean(overlap)),
        "top10_overlap_min": float(np.min(overlap)),
        "top10_overlap_ties_forgiven": float(overlap_ties.mean()),
        "max_abs_score_diff": float(np.abs(s_ours - s_ref).max()),
        "hits": int((top_ours[:, 0] == relevant).sum()),
        "ref_hits": int((top_ref[:, 0] == relevant).sum()),
        "queries": len(corpus.queries),
        "encode_s": float(ours.seconds),
    }


def reference_margins(ref: Embeddings, rank: int = 1) -> np.ndarray:
    """Per query: the reference's score at `rank` minus the score at rank + 1 (rank 1: best minus second best)."""
    s = -np.sort(-_scores(ref), axis=1)
    return s[:, rank - 1] - s[:, rank]


# ---------------------------------------------------------------------------- report

TABLE_HEAD = (
    "| dtype | worst cos | mean cos | worst cos, long docs | mean cos, long docs | top-1 agreement "
    f"| mean top-10 overlap | same, ties ≤ {TIE_EPS} forgiven | max \\|Δ score\\| | hits | encode s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(dtype: str, r: dict) -> str:
    def f(x, digits):  # a cosine; within 1e-6 of 1 it is shown as 1 − (its distance to 1)
        if x is None:
            return "n/a"
        return f"1 − {1 - x:.0e}" if 1 - x < 1e-6 else f"{x:.{digits}f}"

    top1 = f"{round(r['top1_agreement'] * r['queries'])}/{r['queries']}"
    return (
        f"| {dtype} | {f(r['worst_cos'], 6)} | {f(r['mean_cos'], 6)} | {f(r['worst_cos_long'], 6)} "
        f"| {f(r['mean_cos_long'], 6)} | {top1} | {r['top10_overlap']:.3f} | {r['top10_overlap_ties_forgiven']:.3f} "
        f"| {r['max_abs_score_diff']:.4f} "
        f"| {r['hits']}/{r['queries']} | {r['encode_s']:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("EMBGEMMA_REAL_MODEL"),
                    help="the real model's sentence-transformers folder (default: $EMBGEMMA_REAL_MODEL)")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--no-cache", action="store_true", help="recompute the reference embeddings")
    a = ap.parse_args(argv)
    if not a.model:
        ap.error("--model DIR is required (or set EMBGEMMA_REAL_MODEL)")
    dtypes = [d.strip() for d in a.dtypes.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        ap.error(f"unknown dtypes {unknown}; choose from {','.join(DTYPES)}")

    corpus = load_corpus()
    ref = reference(a.model, corpus, a.threads, use_cache=not a.no_cache)
    margins = reference_margins(ref)
    n_tok = None
    print(f"model: {a.model}")
    print(f"texts: {len(corpus.queries)} queries, {len(corpus.docs) - corpus.n_long} paragraphs, "
          f"{corpus.n_long} long documents; threads: {a.threads}")
    print(f"reference: sentence-transformers float32, {ref.seconds:.1f} s"
          + (" (when it was computed; read from the cache now)" if ref.cached else ""))
    gaps = reference_margins(ref, TOP_K)
    print(f"reference top-1 margin (best minus second-best score): min {margins.min():.4f}, "
          f"median {np.median(margins):.4f}")
    print(f"reference gap between ranks {TOP_K} and {TOP_K + 1}: median {np.median(gaps):.4f}, "
          f"under 0.002 for {(gaps < 0.002).sum()} of {len(gaps)} queries (near ties: top-10 overlap counts swaps "
          f"among unrelated documents there)\n")
    print(TABLE_HEAD, flush=True)
    results = {}
    for dtype in dtypes:
        t0 = time.perf_counter()
        model = load_ours(a.model, dtype, a.threads)
        load_s = time.perf_counter() - t0
        if n_tok is None:
            n_tok = sum(len(model.tokenizer.encode(QUERY_PROMPT + t).ids) for t in corpus.queries) + sum(
                len(model.tokenizer.encode(DOCUMENT_PROMPT + t).ids) for t in corpus.docs)
        r = compare(encode_ours(model, corpus), ref, corpus)
        del model
        r["load_s"] = load_s
        results[dtype] = r
        print(table_row(dtype, r), flush=True)
    print()
    for dtype, r in results.items():
        if r["top1_disagree"]:
            print(f"{dtype}: top-1 differs from the reference for {', '.join(r['top1_disagree'])}")
    print(f"hits: queries whose top-1 is the document written for them (reference: {ref_hits(ref, corpus)}/"
          f"{len(corpus.queries)}); {n_tok} tokens in all, prompts and special tokens included")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "model": str(a.model), "threads": a.threads, "tokens": n_tok,
            "reference": {"seconds": ref.seconds, "cached": ref.cached, "hits": ref_hits(ref, corpus),
                          "min_top1_margin": float(margins.min()),
                          "rank10_gaps": [float(g) for g in gaps]},
            "dtypes": results,
        }, indent=1))
    return 0


def ref_hits(ref: Embeddings, corpus: Corpus) -> int:
    return int((_top(_scores(ref), 1)[:, 0] == np.asarray(corpus.relevant)).sum())


if __name__ == "__main__":
    sys.exit(main())
