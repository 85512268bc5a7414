"""Command line: ``python -m embgemma encode|info`` (also installed as ``embgemma``)."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    import embgemma

    out = {"build": embgemma.build_info()}
    if args.model:
        m = embgemma.EmbeddingGemma(args.model, threads=args.threads)
        out["model"] = {
            "path": str(m.model_path),
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

    texts = args.text
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin]
    if not texts:
        print("embgemma encode: no text given (pass TEXT arguments, or - to read lines from stdin)", file=sys.stderr)
        return 2
    model = embgemma.EmbeddingGemma(args.model, threads=args.threads)
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
        w.write(json.dumps({"index": i, "text": t, "embedding": [float(x) for x in v]}))
        w.write("\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embgemma", description="EmbeddingGemma embeddings on the CPU.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("encode", help="embed texts; JSON lines on stdout, or a .npy file")
    e.add_argument("--model", required=True, help="model folder or Hugging Face id in the local cache")
    e.add_argument("--prompt-name", help="task prompt, e.g. query, document, Clustering, STS")
    e.add_argument("--prompt", help="a literal prompt string (wins over --prompt-name)")
    e.add_argument("--dim", type=int, help="Matryoshka width: 768, 512, 256 or 128")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--threads", type=int, help="worker threads (default: all cores)")
    e.add_argument("--no-normalize", action="store_true", help="do not re-normalize truncated vectors")
    e.add_argument("--no-truncate", action="store_true", help="fail on texts over max_seq_length instead of cutting")
    e.add_argument("--output", "-o", help="write a .npy file instead of JSON lines")
    e.add_argument("text", nargs="+", help="texts to embed, or - to read one per line from stdin")
    e.set_defaults(func=_cmd_encode)

    i = sub.add_parser("info", help="build facts (ISAs, OpenMP, threads) and, with --model, the model's")
    i.add_argument("--model", help="also describe this model")
    i.add_argument("--threads", type=int)
    i.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, TypeError) as e:
        print(f"embgemma {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
