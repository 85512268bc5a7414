"""Command line: ``python -m embgemma encode|embed|info|models|serve|bench`` (also installed as ``embgemma``)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    import embgemma
    from embgemma.auto_dtype import resolve
    from embgemma.machine import platform_info

    # the machine first: the same wheel chooses different kernels on different CPUs
    out = {"platform": platform_info(), "build": embgemma.build_info()}
    dtype, why = resolve(out["build"]["chosen_isa"])
    out["auto_dtype"] = {"dtype": dtype, "note": why}  # what dtype="auto" (the default) gives a float file here
    if args.model:
        m = embgemma.EmbeddingGemma(args.model, threads=args.threads, dtype=args.dtype)
        out["model"] = {
            "path": str(m.model_path),
            "dtype": m.dtype,
            "dtype_note": m.dtype_note,
            **m.info,
            "max_seq_length": m.max_seq_length,
            "prompts": m.prompts,
            "default_prompt_name": m.default_prompt_name,
        }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    import embgemma

    texts, lines = args.text, None
    if texts == ["-"]:
        # one text per line; blank (or all-whitespace) lines are skipped, not embedded as empty texts,
        # and said on stderr; JSON lines carry each text's line number
        texts, lines, blank = [], [], []
        for number, line in enumerate(sys.stdin, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                texts.append(line)
                lines.append(number)
            else:
                blank.append(number)
        if blank:
            shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
            print(f"embgemma encode: skipped {len(blank)} blank line(s) of stdin (line {shown}); output row i is the "
                  "i-th non-blank line", file=sys.stderr)
    if not texts:
        print("embgemma encode: no text given (pass TEXT arguments, or - to read non-blank lines from stdin)",
              file=sys.stderr)
        return 2
    model = embgemma.EmbeddingGemma(args.model, threads=args.threads, dtype=args.dtype)
    emb = model.encode(
        texts,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
        batch_size=args.batch_size,
        truncate_dim=args.dim,
        normalize_embeddings=not args.no_normalize,
        truncate=not args.no_truncate,
    )
    if args.output:
        if not args.output.endswith(".npy"):
            print("embgemma encode: --output must name a .npy file", file=sys.stderr)
            return 2
        np.save(args.output, emb)
        print(f"wrote {emb.shape[0]} x {emb.shape[1]} float32 to {args.output}", file=sys.stderr)
        return 0
    w = sys.stdout
    for i, (t, v) in enumerate(zip(texts, emb)):
        line = {"line": lines[i]} if lines is not None else {}
        w.write(json.dumps({"index": i, **line, "text": t, "embedding": [float(x) for x in v]}))
        w.write("\n")
    return 0


def _describe_gguf(path: str) -> str:
    """'gemma-embedding Q8_0, 316 tensors' for an EmbeddingGemma GGUF, else why it is not one."""
    from collections import Counter

    from embgemma import _core

    try:
        info = _core.gguf_read(path)
    except Exception as e:  # noqa: BLE001 - a listing reports every problem and goes on
        return f"unreadable: {e}"
    meta, tensors = info["metadata"], info["tensors"]
    arch = meta.get("general.architecture", "?")
    names = {t[0] for t in tensors}
    kinds = Counter(t[1] for t in tensors if len(t[2]) == 2)
    dense = bool(names & {"dense_2.weight", "dense.0.weight"})
    embedding = arch == "gemma-embedding" or (arch == "gemma3" and (meta.get("gemma3.attention.causal") is False or dense))
    what = "EmbeddingGemma" if embedding else f"not EmbeddingGemma ({arch})"
    return f"{what}, {'/'.join(k for k, _ in kinds.most_common())}, {'with' if dense else 'WITHOUT'} Dense"


def _cmd_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from embgemma._hub import hf_cache_dir, list_hf_cache, list_ollama, ollama_models_dir

    print(f"Ollama store: {ollama_models_dir()}")
    found = list_ollama()
    for e in found:
        desc = e.get("problem") or _describe_gguf(e["path"])
        print(f"  {e['name']:32s} {desc}\n  {'':32s} {e['path']}")
    if not found:
        print("  (no models)")
    print(f"Hugging Face cache: {args.cache_folder or hf_cache_dir()}")
    found = list_hf_cache(args.cache_folder)
    for e in found:
        snap = Path(e["path"])
        kind = "sentence-transformers" if (snap / "modules.json").is_file() else (
            "GGUF: " + ", ".join(p.name for p in sorted(snap.glob("*.gguf"))) if any(snap.glob("*.gguf")) else "other files")
        print(f"  {e['name']:32s} {kind}\n  {'':32s} {e['path']}")
    if not found:
        print("  (no models)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        from embgemma.server import ServerConfig, run
    except ImportError as e:
        print(f"embgemma serve: {e}", file=sys.stderr)
        return 2
    route_prompts = {}
    for spec in args.route_prompt or []:
        route, sep, name = spec.partition("=")
        if not sep or not name:
            print(f"embgemma serve: --route-prompt takes ROUTE=PROMPT_NAME (e.g. /embed=document), got {spec!r}",
                  file=sys.stderr)
            return 2
        route_prompts[route] = name
    config = ServerConfig(
        model=args.model, dtype=args.dtype, threads=args.threads, max_seq_length=args.max_seq_length,
        cache_folder=args.cache_folder, served_model_name=args.served_model_name,
        max_batch_tokens=args.max_batch_tokens, max_client_batch_size=args.max_client_batch_size,
        max_request_tokens=args.max_request_tokens, max_concurrent_requests=args.max_concurrent_requests,
        payload_limit=args.payload_limit, auto_truncate=not args.no_auto_truncate,
        default_prompt_name=args.default_prompt_name, route_prompts=route_prompts,
        api_key=args.api_key or os.environ.get("EMBGEMMA_API_KEY") or None,
    )
    config.check()
    return run(config, args.host, args.port, graceful_timeout=args.graceful_timeout, log_format=args.log_format,
               log_level=args.log_level)


def _cmd_bench(args: argparse.Namespace) -> int:
    from embgemma.bench import DEFAULT_DTYPES, format_table, parse_dtypes, run_bench

    try:
        dtypes = parse_dtypes(args.dtypes) if args.dtypes is not None else list(DEFAULT_DTYPES)
    except ValueError as e:
        print(f"embgemma bench: {e}", file=sys.stderr)
        return 2
    if not args.seconds > 0 or args.seconds == float("inf"):
        print(f"embgemma bench: --seconds must be a positive number, got {args.seconds}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"embgemma bench: --threads must be a positive integer, got {args.threads}", file=sys.stderr)
        return 2
    try:
        result = run_bench(args.model, dtypes, threads=args.threads, seconds=args.seconds,
                           progress=not args.quiet, cache_folder=args.cache_folder)
    except KeyboardInterrupt:
        print("embgemma bench: interrupted", file=sys.stderr)
        return 130
    table = format_table(result)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text)
    if not any(r["status"] == "ok" for r in result["results"]):
        print("embgemma bench: the model could not be loaded in any of the requested dtypes", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embgemma", description="EmbeddingGemma embeddings on the CPU.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("encode", help="embed texts; JSON lines on stdout, or a .npy file")
    e.add_argument("--model", required=True,
                   help="model folder, GGUF file, Ollama name (embeddinggemma:300m) or Hugging Face id")
    e.add_argument("--prompt-name", help="task prompt, e.g. query, document, Clustering, STS")
    e.add_argument("--prompt", help="a literal prompt string (wins over --prompt-name)")
    e.add_argument("--dim", type=int, help="Matryoshka width: 768, 512, 256 or 128")
    e.add_argument("--batch-size", type=int, default=None, help="texts per engine call (default: calls filled up to 4096 tokens)")
    e.add_argument("--threads", type=int, help="worker threads (default: OMP_NUM_THREADS, else all cores)")
    e.add_argument("--dtype", help="weights mode: auto, float32, bfloat16, int8, q8_0, q4_0 (default: auto, the fastest mode measured bfloat16-class on this CPU; float32 is exact)")
    e.add_argument("--no-normalize", action="store_true", help="do not re-normalize truncated vectors")
    e.add_argument("--no-truncate", action="store_true", help="fail on texts over max_seq_length instead of cutting")
    e.add_argument("--output", "-o", help="write a .npy file instead of JSON lines")
    e.add_argument("text", nargs="+",
                   help="texts to embed, or - to read one per line from stdin (blank lines are skipped)")
    e.set_defaults(func=_cmd_encode)

    i = sub.add_parser("info", help="build facts (ISAs, OpenMP, threads) and, with --model, the model's")
    i.add_argument("--model", help="also describe this model")
    i.add_argument("--threads", type=int)
    i.add_argument("--dtype", help="weights mode: auto, float32, bfloat16, int8, q8_0, q4_0 (default: auto, the fastest mode measured bfloat16-class on this CPU; float32 is exact)")
    i.set_defaults(func=_cmd_info)

    m = sub.add_parser("models", help="list the models in the local Ollama store and Hugging Face cache")
    m.add_argument("--cache-folder", help="Hugging Face cache to list (default: HF_HUB_CACHE / HF_HOME)")
    m.set_defaults(func=_cmd_models)

    s = sub.add_parser("serve", help="serve embeddings over HTTP (OpenAI, TEI and Ollama routes); needs embgemma[serve]")
    s.add_argument("--model", required=True,
                   help="model folder, GGUF file, Ollama name (embeddinggemma:300m) or Hugging Face id")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--dtype", help="weights mode: auto, float32, bfloat16, int8, q8_0, q4_0 (default: auto, the fastest mode measured bfloat16-class on this CPU; float32 is exact)")
    s.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    s.add_argument("--max-seq-length", type=int, help="longest input in tokens (default: the model's)")
    s.add_argument("--cache-folder", help="Hugging Face cache to find hub ids in")
    s.add_argument("--served-model-name",
                   help="model name in responses and model lists (default: the last path component of --model, "
                        "e.g. embeddinggemma-300m for google/embeddinggemma-300m)")
    s.add_argument("--max-batch-tokens", type=int, default=8192, help="tokens per engine batch, across requests")
    s.add_argument("--max-client-batch-size", type=int, default=2048, help="inputs per request")
    s.add_argument("--max-request-tokens", type=int, default=300_000, help="tokens per request")
    s.add_argument("--max-concurrent-requests", type=int, default=512, help="admitted at once; more get 429")
    s.add_argument("--payload-limit", type=int, default=8_000_000, help="request body bytes; more get 413")
    s.add_argument("--no-auto-truncate", action="store_true",
                   help="refuse (422 / 400) inputs over the maximum length unless the request says truncate")
    s.add_argument("--default-prompt-name", help="prompt for requests that name none, on every route")
    s.add_argument("--route-prompt", action="append", metavar="ROUTE=NAME",
                   help="prompt for requests that name none on one route (/v1/embeddings, /embed, /api/embed); "
                        "repeatable, wins over --default-prompt-name")
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (or set EMBGEMMA_API_KEY)")
    s.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds SIGTERM waits for in-flight requests")
    s.add_argument("--log-format", choices=("json", "text"), default="json")
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=_cmd_serve)

    b = sub.add_parser("bench", help="time this machine: load, tokens/s and query latency for each dtype (~1 min)")
    b.add_argument("--model", required=True,
                   help="model folder, GGUF file, Ollama name (embeddinggemma:300m) or Hugging Face id")
    b.add_argument("--dtypes", metavar="LIST",
                   help="comma-separated weights modes to time: float32, bfloat16, int8, q8_0, q4_0, auto "
                        "(default: float32,bfloat16,int8,q8_0,q4_0)")
    b.add_argument("--threads", type=int, help="worker threads (default: OMP_NUM_THREADS, else all cores)")
    b.add_argument("--seconds", type=float, default=60.0,
                   help="total time to spend, split evenly between the dtypes (default 60)")
    b.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE (- for stdout)")
    b.add_argument("--cache-folder", help="Hugging Face cache to find hub ids in")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress output on stderr")
    b.set_defaults(func=_cmd_bench)

    from embgemma.embed import add_parser as add_embed_parser

    add_embed_parser(sub)  # embgemma embed: its options and code live in embgemma/embed.py
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`embgemma info | head`): quiet, as Unix tools are
        # point stdout at devnull so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError, TypeError) as e:
        print(f"embgemma {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
