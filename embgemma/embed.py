"""``embgemma embed``: embed a corpus from files into Parquet or ``.npy``, resumably.

The command's arguments and messages; the job itself is the ``embgemma.jobs`` package (inputs and
readers, output layout, manifest, the shard loop), run in this process (``--engine local``) or on a
Ray cluster (``--engine ray``, embgemma.integrations.ray), both writing the same shards and manifest,
so either resumes the other's job. docs/scale-out.md describes formats, outputs and resuming.
"""

from __future__ import annotations

import argparse
import sys

from .jobs.embedder import EmbedOptions
from .jobs.inputs import INPUT_FORMATS, expand_inputs
from .jobs.output import Layout
from .jobs.reasons import EmbedJobError
from .jobs.shards import DEFAULT_SHARD_SIZE, Interrupted, StrictStop, check_mix, run_job
from .quantization import PRECISIONS


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``embed`` on the ``embgemma`` command's subparsers."""
    p = sub.add_parser(
        "embed", help="embed files of texts (JSON Lines, CSV, Parquet, text) into Parquet or .npy; resumable",
        description="Embed a corpus into Parquet or .npy, streaming, in shards that survive a crash: rerun the "
                    "same command to resume. Rows that cannot be embedded go to OUT.errors.jsonl.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files or folders (or URIs: s3://...): .jsonl/.ndjson/.json (JSON Lines), .csv, .tsv, "
                        ".parquet, or text (one text a line: .txt or no suffix); .gz/.bz2/.xz/.zst/.lz4 compressed "
                        "text formats too")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="OUT.parquet (one file), OUT.npy (one array, row i = input row i) or OUT/ (a Parquet "
                        "dataset: one file per shard, for big jobs)")
    p.add_argument("--model", required=True,
                   help="model folder, GGUF file, Ollama name (embeddinggemma:300m) or Hugging Face id")
    p.add_argument("--input-format", choices=("auto", *INPUT_FORMATS), default="auto",
                   help="format of every input (default: from each file's suffix)")
    p.add_argument("--text-column", help="column (field) holding the texts (default: text)")
    p.add_argument("--id-column", help="column of row ids for the output and the errors file (default: the row "
                                       "number, counted from 0 across the inputs)")
    p.add_argument("--title-column", help="column of document titles: each text gets the prompt "
                                          "'title: {title} | text: ' (a missing title is 'none')")
    p.add_argument("--keep-columns", action="append", metavar="COLS",
                   help="comma-separated input columns copied to a Parquet output beside id and embedding")
    p.add_argument("--prompt-name", help="task prompt, e.g. query, Clustering, STS (default: document, for a corpus)")
    p.add_argument("--prompt", help="a literal prompt string ('' for none)")
    p.add_argument("--dim", type=int, help="Matryoshka width: 768, 512, 256 or 128 (default: the model's)")
    p.add_argument("--dtype", help="weights mode: auto, float32, bfloat16, int8, q8_0, q4_0 (default: auto, the fastest mode measured bfloat16-class on this CPU; float32 is exact)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="output type; int8 / uint8 need --ranges, binary / ubinary pack 8 dimensions a byte")
    p.add_argument("--ranges", metavar="FILE.npy",
                   help="int8 / uint8: (2, dim) minimum and maximum per dimension, from a sample's embeddings "
                        "(docs/scale-out.md shows how)")
    p.add_argument("--no-normalize", action="store_true", help="do not re-normalize Matryoshka-truncated vectors")
    p.add_argument("--allow-empty", action="store_true", help="embed empty texts (as the bare prompt) instead of "
                                                              "listing them as errors")
    p.add_argument("--batch-size", type=int, help="texts per engine call (default 32)")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"input rows per shard: the work a crash can lose (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--strict", action="store_true", help="stop at the first row that cannot be embedded")
    p.add_argument("--overwrite", action="store_true", help="start over: delete an earlier run's output and shards")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process) or ray (the same job on a Ray cluster; needs embgemma[ray])")
    p.add_argument("--address", help="--engine ray: the cluster's address (default: auto, or RAY_ADDRESS)")
    p.set_defaults(func=main)
    return p


def _options(args: argparse.Namespace, structured: bool):
    keep: list[str] = []
    for spec in args.keep_columns or []:
        keep += [c.strip() for c in spec.split(",") if c.strip()]
    if not structured:
        given = [f"--{n.replace('_', '-')}" for n in ("text_column", "id_column", "title_column", "keep_columns")
                 if getattr(args, n)]
        if given:
            raise EmbedJobError(f"{', '.join(given)}: plain-text inputs have no columns (one text a line)")
    if len(set(keep)) != len(keep):
        raise EmbedJobError(f"--keep-columns names a column twice: {', '.join(keep)}")
    return EmbedOptions(
        model=args.model, text_column=args.text_column or "text", id_column=args.id_column,
        title_column=args.title_column, prompt_name=args.prompt_name, prompt=args.prompt, dim=args.dim,
        dtype=args.dtype, precision=args.precision, ranges=args.ranges, batch_size=args.batch_size,
        threads=args.threads, normalize=not args.no_normalize, allow_empty=args.allow_empty,
        passthrough=tuple(keep), strict=False,  # strict is handled here, with global row numbers
    )


def main(args: argparse.Namespace) -> int:
    """``embgemma embed``: 0 done, 1 failed (or --strict met a bad row), 2 refused, 130 interrupted."""
    try:
        return _run(args)
    except EmbedJobError as e:
        print(f"embgemma embed: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.shard_size is None or args.shard_size < 1:
        raise EmbedJobError(f"--shard-size must be a positive integer, got {args.shard_size}")
    layout = Layout.from_arg(args.output)
    if args.address and args.engine != "ray":
        raise EmbedJobError("--address applies to --engine ray")
    compute = None
    if args.engine == "ray":
        try:
            from .integrations.ray import ActorCompute
        except ImportError as e:
            raise EmbedJobError(f"--engine ray needs Ray Data: pip install 'embgemma[ray]' ({e})") from None
    sources = expand_inputs(args.inputs, args.input_format, (layout.out, layout.work, layout.errors))
    structured = check_mix(sources)
    try:
        options = _options(args, structured)
    except ValueError as e:
        raise EmbedJobError(str(e)) from None
    if args.engine == "ray":
        compute = ActorCompute(options, address=args.address)
    try:
        run_job(layout, sources, options, structured=structured, shard_size=args.shard_size, strict=args.strict,
                quiet=args.quiet, overwrite=args.overwrite, compute=compute)
    except StrictStop as e:
        entry = e.args[0]
        print(f"embgemma embed: --strict: row {entry['row']} (id {entry['id']!r}, {entry['file']} row "
              f"{entry['file_row']}): {entry['reason']}. The shards before it are kept; fix the input and pass "
              "--overwrite, or drop --strict to list such rows in the errors file", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # run_job said how far the job got
        return 143 if isinstance(e, Interrupted) else 130
    return 0
