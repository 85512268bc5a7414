"""Markdown table and PNG plot from a results dict (see bench.py for its layout)."""

from __future__ import annotations

from pathlib import Path

WL_LABEL = {"fixed": "a", "corpus": "b", "query": "c", "long": "d"}


def _ok(results: dict) -> list[dict]:
    return [s for s in results["systems"].values() if s.get("status") == "ok"]


def _tps(s: dict, w: str):
    return s.get("workloads", {}).get(w, {}).get("tok_s")


def _p(s: dict, w: str, key: str):
    return s.get("workloads", {}).get(w, {}).get(key)


FIDELITY_BAR = 0.99  # a competitor configuration counts for "best competitor" ratios only at or above it
BELOW_MARK = "†"
UNKNOWN_MARK = "?"
PRECISION_BY_SUFFIX = {"fp32": "fp32", "f32": "fp32", "bf16": "bf16", "int16": "int16", "int8": "int8", "q8_0": "q8_0",
                       "q4_0": "q4_0"}


def _precision(s: dict) -> str:
    declared = s.get("precision") or PRECISION_BY_SUFFIX.get(s["name"].rsplit("-", 1)[-1], "?")
    hint = str(((s.get("info") or {}).get("openvino_compiled") or {}).get("INFERENCE_PRECISION_HINT", ""))
    if declared in ("fp32", "bf16", "?") and ("bfloat16" in hint or "bf16" in hint):
        return "bf16"  # OpenVINO computes a float32 IR in bf16 on AMX / AVX512_BF16 CPUs (int8 IRs stay int8)
    return declared


def worst_cosine(s: dict):
    fid = s.get("fidelity") or {}
    return min((f["min"] for f in fid.values()), default=None)


def eligible(s: dict) -> bool:
    """At or above the fidelity bar (worst cosine to sentence-transformers float32 on the same model)."""
    w = worst_cosine(s)
    return w is not None and w >= FIDELITY_BAR


def _mark(s: dict) -> str:
    if s["family"] != "competitor" or eligible(s):
        return ""
    return BELOW_MARK if worst_cosine(s) is not None else UNKNOWN_MARK


def _best(comp: list[dict], w: str, key: str, lower_is_better: bool):
    have = [(s, _p(s, w, key)) for s in comp if eligible(s) and _p(s, w, key)]
    if not have:
        return None, None
    s, v = (min if lower_is_better else max)(have, key=lambda x: x[1])
    return s, v


def _fmt(x, nd=0, suffix=""):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}{suffix}"


def _ratio(a, b, invert=False):
    if a is None or b is None or a == 0 or b == 0:
        return "–"
    r = (b / a) if invert else (a / b)
    return f"{r:.2f}×"


def _r(a, b):
    return round(a / b, 3) if a and b else None


def targets(results: dict) -> dict:
    """The ratios the issue's targets are stated in, from a results dict (also stored in the JSON).

    Competitor configurations below the fidelity bar (or without a fidelity value) are never used.
    Throughput ratios: embgemma ÷ other (above 1 = embgemma faster). Query latency: other p50 ÷
    embgemma p50 (above 1 = embgemma faster), with both p50 values. RSS: embgemma ÷ other (below 1 =
    embgemma smaller).
    """
    ok = _ok(results)
    by = {s["name"]: s for s in ok}
    comp = [s for s in ok if s["family"] == "competitor"]
    ours = [s for s in ok if s["family"] == "embgemma"]
    out: dict = {"fidelity_bar": FIDELITY_BAR, "eligible_competitors": [s["name"] for s in comp if eligible(s)],
                 "excluded_competitors": {s["name"]: worst_cosine(s) for s in comp if not eligible(s)}}
    best = {}
    for w, key, low in (("fixed", "tok_s", False), ("corpus", "tok_s", False), ("long", "tok_s", False),
                        ("query", "p50_ms", True)):
        b, v = _best(comp, w, key, low)
        if b is not None:
            best[w] = {"system": b["name"], key: v}
    out["best_competitor"] = best
    vs = {}
    for o in ours:
        row = {}
        for w in ("fixed", "corpus", "long"):
            if w in best:
                row[w] = _r(_tps(o, w), best[w]["tok_s"])
        if "query" in best and _p(o, "query", "p50_ms"):
            row["query_p50_speedup"] = _r(best["query"]["p50_ms"], _p(o, "query", "p50_ms"))
            row["query_p50_ms"] = _p(o, "query", "p50_ms")
        vs[o["name"]] = row
    out["embgemma_vs_best_competitor"] = vs
    fp32 = by.get("embgemma-fp32")
    a_fp32 = _tps(fp32, "fixed") if fp32 else None
    out["vs_embgemma_fp32_on_a"] = {n: _r(_tps(by[n], "fixed"), a_fp32) for n in
                                    ("embgemma-int8", "embgemma-bf16", "embgemma-q8_0", "embgemma-q4_0") if n in by}
    f32c = [s for s in comp if _precision(s) == "fp32"]
    f = {}
    for w in ("corpus", "long"):
        b, v = _best(f32c, w, "tok_s", False)
        if b is not None and fp32:
            f[w] = {"ratio": _r(_tps(fp32, w), v), "competitor": b["name"], "competitor_tok_s": v,
                    "embgemma_fp32_tok_s": _tps(fp32, w)}
    out["fp32_vs_fastest_fp32_competitor"] = f
    i8 = by.get("embgemma-int8")
    c8 = [s for s in comp if _precision(s) in ("int8", "q8_0") and eligible(s)
          and (s.get("rss") or {}).get("peak_mb")]
    if i8 and (i8.get("rss") or {}).get("peak_mb") and c8:
        small = min(c8, key=lambda s: s["rss"]["peak_mb"])
        out["int8_peak_rss_vs_smallest_competitor_int8"] = {
            "ratio": _r(i8["rss"]["peak_mb"], small["rss"]["peak_mb"]), "embgemma_int8_mb": i8["rss"]["peak_mb"],
            "competitor": small["name"], "competitor_mb": small["rss"]["peak_mb"]}
    elif i8:
        out["int8_peak_rss_vs_smallest_competitor_int8"] = {
            "ratio": None, "note": "no 8-bit competitor configuration passes the fidelity bar",
            "below_bar_mb": {s["name"]: (s.get("rss") or {}).get("peak_mb") for s in comp
                             if _precision(s) in ("int8", "q8_0")}}
    return out


def _x(v) -> str:
    return "–" if v is None else f"{v:.2f}×"


def render_targets(results: dict) -> list[str]:
    t = targets(results)
    by = {s["name"]: s for s in _ok(results)}
    L = ["", "## Targets", "",
         f"Ratios for the issue's targets. \"Best competitor\" = the fastest competitor configuration on that "
         f"workload whose worst cosine to sentence-transformers float32 (same model) is ≥ {t['fidelity_bar']}"
         + (f"; not eligible: {', '.join(f'{k} ({v:.4f})' if v is not None else f'{k} (no fidelity)' for k, v in t['excluded_competitors'].items())}"
            if t["excluded_competitors"] else "") + ". Throughput ratios are embgemma ÷ competitor; the query "
         "ratio is competitor p50 ÷ embgemma p50; above 1× embgemma is faster in both.", ""]
    bc = t["best_competitor"]
    lab = {"fixed": "a", "corpus": "b", "long": "d"}
    if t["embgemma_vs_best_competitor"] and bc:
        head = [f"{lab[w]} vs {bc[w]['system']} ({_fmt(bc[w]['tok_s'])} tok/s)" for w in ("fixed", "corpus", "long")
                if w in bc]
        if "query" in bc:
            head.append(f"c p50 vs {bc['query']['system']} ({bc['query']['p50_ms']:.1f} ms)")
        L.append("| embgemma config ÷ best competitor | " + " | ".join(head) + " |")
        L.append("|---|" + "---:|" * len(head))
        for n, row in t["embgemma_vs_best_competitor"].items():
            cells = [_x(row.get(w)) for w in ("fixed", "corpus", "long") if w in bc]
            if "query" in bc:
                cells.append(f"{_x(row.get('query_p50_speedup'))} ({_fmt(row.get('query_p50_ms'), 1)} ms)")
            L.append(f"| {n} | " + " | ".join(cells) + " |")
        L.append("")
    fp = t["vs_embgemma_fp32_on_a"]
    a32 = _tps(by["embgemma-fp32"], "fixed") if "embgemma-fp32" in by else None
    for n in ("embgemma-int8", "embgemma-q8_0", "embgemma-q4_0", "embgemma-bf16"):
        if n in fp:
            L.append(f"- {n} ÷ embgemma-fp32 on **a**: **{_x(fp[n])}** ({_fmt(_tps(by[n], 'fixed'))} vs "
                     f"{_fmt(a32)} tok/s)")
    for w, label in (("corpus", "b"), ("long", "d")):
        f = t["fp32_vs_fastest_fp32_competitor"].get(w)
        if f:
            L.append(f"- embgemma-fp32 ÷ fastest float32 competitor on **{label}**: **{_x(f['ratio'])}** "
                     f"({_fmt(f['embgemma_fp32_tok_s'])} vs {f['competitor']} {_fmt(f['competitor_tok_s'])} tok/s)")
    r = t.get("int8_peak_rss_vs_smallest_competitor_int8")
    if r and r.get("ratio") is None:
        L.append(f"- peak RSS embgemma-int8 ÷ smallest 8-bit competitor: – ({r['note']}; for information: "
                 + ", ".join(f"{k}{BELOW_MARK} {_fmt(v)} MB" for k, v in r["below_bar_mb"].items())
                 + f"; embgemma-int8 {_fmt(by['embgemma-int8']['rss'].get('peak_mb'))} MB)")
    elif r:
        L.append(f"- peak RSS embgemma-int8 ÷ smallest 8-bit competitor: **{_x(r['ratio'])}** "
                 f"({_fmt(r['embgemma_int8_mb'])} MB vs {r['competitor']} {_fmt(r['competitor_mb'])} MB; below 1× = "
                 "embgemma smaller)")
    if L[-1] == "":
        L.pop()
    return L


def render_markdown(results: dict, plot_name: str | None = "performance.png") -> str:
    m = results["meta"]
    wls = results["workloads"]
    mach = m.get("machine", {})
    ok = _ok(results)
    comp = [s for s in ok if s["family"] == "competitor"]
    ours = [s for s in ok if s["family"] == "embgemma"]
    run = m.get("workloads_run", [])
    L = []
    L.append(f"# embgemma vs. other CPU runtimes: EmbeddingGemma-300m, {m['threads']} threads")
    L.append("")
    L.append(f"Generated by `python {m['command']}` on {m['date']}"
             + (" (**--quick smoke run: small corpus, 1 repetition; not for quoting**)" if m.get("quick") else "") + ".")
    L.append("")
    L.append(f"- Machine: {mach.get('cpu_model', '?')}, {mach.get('logical_cpus', '?')} logical CPUs, "
             f"{mach.get('mem_total_gib', '?')} GiB; ISA: {', '.join(mach.get('isa_flags', []))}.")
    mi = m.get("model") or {}
    kind = mi.get("kind", "random")
    if kind == "random":
        L.append("- Model: **random weights** — the full EmbeddingGemma-300m architecture (24 layers, hidden 768, "
                 "Dense 768→3072→768, Normalize) with random weights (fixed seed) and the full 262,144-token "
                 "vocabulary; the real Gemma 3 tokenizer"
                 + (f" (`{mi['path']}`)" if mi.get("path") else "") + ". Every system gets the same strings, "
                 "EmbeddingGemma prompts already prepended.")
        if mi.get("warning") or "fallback" in str(mi.get("source", "")):
            L.append(f"- **Warning: {mi.get('warning') or 'no real weights were available.'}**")
    else:
        what = "the real google/embeddinggemma-300m weights" if kind == "real" else "a sentence-transformers folder"
        L.append(f"- Model: **{what}**, `{mi.get('path')}` ({_fmt((mi.get('bytes') or 0) / 1e6)} MB in "
                 f"{mi.get('n_files', '?')} files; every competitor format exported from it, cache key "
                 f"`{m.get('cache_model_key')}`). Every system gets the same strings, EmbeddingGemma prompts "
                 "already prepended; token counts from its own tokenizer.")
    has_llama = any(1 in (s.get("calibration") or {}).get("candidates", []) for s in ok)
    L.append(f"- Every system at {m['threads']} threads, in its own worker process, at its best batch size from a "
             f"calibration over {m.get('batch_size_candidates')} texts per call"
             + (" (llama.cpp also 1, 2 and 4, and flash_attn off / on)" if has_llama else "")
             + f"; systems {'alternate within each repetition' if m.get('mode') != 'sequential' else 'run one after another'}"
             f"; medians over {m['reps']} repetition(s).")
    desc = {k: v.get("description", "") for k, v in wls.items()}
    tot = {k: v.get("total_tokens") for k, v in wls.items()}
    L.append(f"- Workloads (token counts include `<bos>`, `<eos>` and the prompt): **a** {desc.get('fixed')}; "
             f"**b** {desc.get('corpus')}, {_fmt(tot.get('corpus'))} tokens in all; **c** {desc.get('query')}, "
             f"{m.get('query_calls')} calls per repetition; **d** {desc.get('long')}; **load** = import + model "
             f"construction in a fresh process; **peak RSS** = VmHWM of the worker over the whole run.")
    L.append("")
    L.append("| system | a tok/s | b tok/s | d tok/s | c p50 ms | c p99 ms | load s (import + construct) | "
             "peak RSS MB | worst cosine to fp32 ref | batch |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in ok:
        ld = s.get("load", {})
        fid = s.get("fidelity", {})
        worst = min((f["min"] for f in fid.values()), default=None)
        opts = s.get("options") or {}
        bs = str(s.get("batch_size")) + ("" if not opts else " " + ",".join(f"{k}={v}" for k, v in opts.items()))
        name = f"**{s['name']}**" if s["family"] == "embgemma" else s["name"] + _mark(s)
        L.append(f"| {name} | {_fmt(_tps(s, 'fixed'))} | {_fmt(_tps(s, 'corpus'))} | {_fmt(_tps(s, 'long'))} | "
                 f"{_fmt(_p(s, 'query', 'p50_ms'), 1)} | {_fmt(_p(s, 'query', 'p99_ms'), 1)} | "
                 f"{_fmt(ld.get('total_s'), 2)} ({_fmt(ld.get('import_s'), 2)} + {_fmt(ld.get('construct_s'), 2)}) | "
                 f"{_fmt(s.get('rss', {}).get('peak_mb'))} | {_fmt(worst, 5)} | {bs} |")
    below = [s for s in comp if not eligible(s)]
    L.append("")
    L.append(f"Fidelity bar: a competitor configuration takes part in the ratios below (\"best competitor\", "
             f"Targets) only when its worst cosine to sentence-transformers float32 on the same model is ≥ "
             f"{FIDELITY_BAR}. "
             + ("; ".join(f"{BELOW_MARK if worst_cosine(x) is not None else UNKNOWN_MARK} `{x['name']}`: "
                          + (f"worst cosine {worst_cosine(x):.5f}, below the {FIDELITY_BAR} fidelity bar"
                             if worst_cosine(x) is not None else "fidelity unknown (no reference)")
                          + ": shown, never used for ratios" for x in below) + "." if below
                else "Every competitor configuration here passes it."))
    bad = [s for s in results["systems"].values() if s.get("status") != "ok"]
    if bad:
        L.append("")
        for s in bad:
            L.append(f"- `{s['name']}`: {s['status']}")
    # fidelity detail
    L.append("")
    L.append("## Fidelity: cosine to the float32 reference (sentence-transformers on PyTorch), min / mean")
    L.append("")
    L.append("| system | " + " | ".join(WL_LABEL[w] for w in ("fixed", "corpus", "query", "long") if w in run) + " |")
    L.append("|---|" + "---:|" * len([w for w in ("fixed", "corpus", "query", "long") if w in run]))
    for s in ok:
        cells = []
        for w in ("fixed", "corpus", "query", "long"):
            if w not in run:
                continue
            f = s.get("fidelity", {}).get(w)
            cells.append("–" if not f else f"{f['min']:.5f} / {f['mean']:.5f}")
        L.append(f"| {s['name']}{_mark(s)} | " + " | ".join(cells) + " |")
    # ratios
    comp_all = comp
    comp = [s for s in comp_all if eligible(s)]
    L.extend(render_targets(results))
    if ours and comp:
        L.append("")
        L.append("## embgemma relative to each competitor")
        L.append("")
        L.append("Throughput ratio embgemma ÷ competitor (a, b, d), latency ratio competitor p50 ÷ embgemma p50 "
                 "(c); above 1× means embgemma is faster. \"best\" is the fastest competitor on that workload. "
                 f"Only competitor configurations at or above the {FIDELITY_BAR} fidelity bar are compared"
                 + (f" (left out: {', '.join(x['name'] for x in comp_all if not eligible(x))})."
                    if len(comp) < len(comp_all) else "."))
        for w, key, inv, label in (("fixed", "tok_s", False, "a: 32 × 128 tokens"),
                                   ("corpus", "tok_s", False, "b: mixed corpus"),
                                   ("long", "tok_s", False, "d: 2048-token document"),
                                   ("query", "p50_ms", True, "c: query latency p50")):
            if w not in run:
                continue
            vals = {s["name"]: _p(s, w, key) for s in comp}
            have = {k: v for k, v in vals.items() if v}
            best_name = (min(have, key=have.get) if inv else max(have, key=have.get)) if have else None
            L.append("")
            L.append(f"**{label}**")
            L.append("")
            L.append("| | " + " | ".join(s["name"] for s in comp) + " | best (" + (best_name or "–") + ") |")
            L.append("|---|" + "---:|" * (len(comp) + 1))
            for o in ours:
                mine = _p(o, w, key)
                cells = [_ratio(mine, vals[s["name"]], invert=inv) for s in comp]
                cells.append(_ratio(mine, have.get(best_name), invert=inv) if best_name else "–")
                L.append(f"| {o['name']} | " + " | ".join(cells) + " |")
    # GEMM ceiling
    fma = m.get("fma_peak_gflops")
    L.append("")
    L.append("## Fraction of the machine's GEMM ceiling")
    L.append("")
    L.append(f"Achieved linear-layer FLOP/s (202.9 MFLOP per token for the 24 layers' linear layers) ÷ the measured "
             f"{m['threads']}-thread float32 FMA peak "
             + (f"of **{fma:.1f} GFLOP/s** (`embgemma._core.fma_peak`)." if fma else "(unavailable: null).")
             + " In brackets: with attention (3,072·L FLOP per token per layer) added. int8 and bf16 systems "
             "multiply with other instructions than float32 FMA, so they can pass 100%.")
    L.append("")
    cols = [w for w in ("fixed", "corpus", "long", "query") if w in run]
    L.append("| system | " + " | ".join(WL_LABEL[w] for w in cols) + " |")
    L.append("|---|" + "---:|" * len(cols))
    for s in ours + comp_all:
        cells = []
        for w in cols:
            g = s.get("gemm", {}).get(w)
            if not g:
                cells.append("–")
            elif g.get("fraction_of_fma_peak_linear") is None:
                cells.append(f"{g['linear_gflops']:.1f} GFLOP/s")
            else:
                cells.append(f"{100 * g['fraction_of_fma_peak_linear']:.0f}% "
                             f"({100 * g['fraction_of_fma_peak_total']:.0f}%)")
        L.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    # notes
    L.append("")
    L.append("## Notes")
    L.append("")
    for s in ok:
        info = s.get("info") or {}
        notes = list(info.get("notes") or [])
        if "openvino_compiled" in info:
            oc = info["openvino_compiled"]
            notes.append(f"OpenVINO compiled INFERENCE_PRECISION_HINT={oc.get('INFERENCE_PRECISION_HINT')}, "
                         f"INFERENCE_NUM_THREADS={oc.get('INFERENCE_NUM_THREADS')}, NUM_STREAMS={oc.get('NUM_STREAMS')}"
                         + (f", DYNAMIC_QUANTIZATION_GROUP_SIZE={oc['DYNAMIC_QUANTIZATION_GROUP_SIZE']}"
                            if "DYNAMIC_QUANTIZATION_GROUP_SIZE" in oc else ""))
        if isinstance(info.get("openvino_runtime_ops"), dict):
            notes.append("compiled graph: " + ", ".join(f"{k} ×{v}" for k, v in sorted(info["openvino_runtime_ops"].items())))
        if "fastembed_pipeline" in info:
            fp = info["fastembed_pipeline"]
            notes.append(f"fastembed custom model: {fp.get('model_file')}, output {fp.get('output_name') or 'first'}, "
                         f"pooling {fp.get('pooling')}, normalization {fp.get('normalization')}; ORT intra/inter op "
                         f"threads {info.get('ort_intra_op_threads')}/{info.get('ort_inter_op_threads')}")
        for fv in (s.get("calibration") or {}).get("failed_variants", []):
            notes.append(f"calibration variant {fv['options']} failed ({fv['error']}), not used")
        if "tokenizer_check" in s and s["tokenizer_check"]:
            tc = s["tokenizer_check"]
            notes.append(f"llama.cpp's own tokenizer agreed with the real one on {tc['texts'] - tc['disagree']}/"
                         f"{tc['texts']} texts; tokens from {info.get('tokenizer', '?')}")
        if notes:
            L.append(f"- `{s['name']}`: " + "; ".join(notes) + ".")
    qx = m.get("exports", {}).get("openvino_qint8")
    if qx:
        qc = m.get("quant_calibration") or qx.get("calibration") or {}
        L.append(f"- `st-openvino-qint8` IR: {qx.get('method')}; calibrated on {qx.get('effective_num_samples')} of "
                 f"{qc.get('description', '?')} (the function's Hub dataset, glue/sst2, replaced: no Hub here); "
                 f"{(qx.get('ir') or {}).get('FakeQuantize')} FakeQuantize nodes.")
    wx = m.get("exports", {}).get("openvino_wc8")
    if wx:
        L.append(f"- `st-openvino-wc8` IR: {wx.get('method')}, mode {wx.get('mode')}.")
    gg = m.get("exports", {}).get("gguf")
    if gg:
        L.append("- GGUF files made by llama.cpp's `convert_hf_to_gguf.py --sentence-transformers-dense-modules`: "
                 + ", ".join(f"{k} ({v['bytes'] / 1e6:.0f} MB, Dense: {', '.join(v['dense_tensors'])})"
                             for k, v in gg.items()) + ".")
    walls = [(s["name"], s["wall_s"]) for s in results["systems"].values() if s.get("wall_s")]
    if walls:
        L.append("- Harness time per system (calibration + measurement, load included): "
                 + ", ".join(f"{n} {w.get('calibration', 0):.0f} + {w.get('measurement', 0):.0f} s" for n, w in walls)
                 + (f"; whole run {m['wall_s'] / 60:.1f} min" if m.get("wall_s") else "") + ".")
    if m.get("mode_reason"):
        L.append(f"- Mode: {m.get('mode')} ({m['mode_reason']}; {m.get('memory_check')}).")
    v = m.get("versions", {})
    L.append("- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".")
    if plot_name:
        L.append("")
        L.append(f"![throughput and latency]({plot_name})")
    L.append("")
    return "\n".join(L)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(results)
    run = results["meta"].get("workloads_run", [])
    panels = [(w, k, t) for w, k, t in (("fixed", "tok_s", "a: 32 × 128 tokens (tok/s, higher is better)"),
                                         ("corpus", "tok_s", "b: mixed corpus (tok/s)"),
                                         ("long", "tok_s", "d: one 2048-token document (tok/s)"),
                                         ("query", "p50_ms", "c: 20-token query p50 (ms, lower is better)"))
              if w in run]
    if not ok or not panels:
        return
    n = len(panels)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 0.38 * len(ok) * rows + 1.6 * rows), squeeze=False)
    names = [s["name"] + _mark(s) for s in ok]
    colors = ["#d62728" if s["family"] == "embgemma" else "#1f77b4" for s in ok]
    for ax, (w, key, title) in zip(axes.flat, panels):
        vals = [_p(s, w, key) or 0 for s in ok]
        y = range(len(ok))
        ax.barh(list(y), vals, color=colors)
        ax.set_yticks(list(y))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        top = max(vals) if vals else 0
        for i, v in enumerate(vals):
            if v:
                ax.text(v + top * 0.01, i, f"{v:,.1f}" if key == "p50_ms" else f"{v:,.0f}", va="center", fontsize=7)
        ax.set_xlim(0, top * 1.18 if top else 1)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    m = results["meta"]
    fig.suptitle(f"EmbeddingGemma-300m on {m.get('machine', {}).get('cpu_model', 'CPU')}, {m['threads']} threads"
                 + (" (quick smoke run)" if m.get("quick") else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_all(results: dict, stem: Path, docs_dir: Path | None) -> str:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = stem.parent / (stem.name + ".png")
    plot(results, png)
    md = render_markdown(results, plot_name=png.name)
    (stem.parent / (stem.name + ".md")).write_text(md)
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        plot(results, docs_dir / "performance.png")
        (docs_dir / "performance_table.md").write_text(render_markdown(results, plot_name="performance.png"))
    return md
