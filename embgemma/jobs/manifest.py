"""A corpus job's identity and its claim on the output: the manifest (model fingerprint, weights dtype,
prompt text, dimension, precision, inputs with size and mtime, columns, shard size), written by the
first run and checked by every rerun, which refuses, naming what differs, when the job is not the
same; and the lock that keeps two runs from writing one output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .inputs import Columns, Source
from .output import Layout, atomic_write, remove_temps
from .reasons import EmbedJobError

MANIFEST_FORMAT = "embgemma-embed/1"
_MODEL_SUFFIXES = {".json", ".safetensors", ".gguf", ".model", ".bin", ".txt"}
_FP_BLOCK = 1 << 20  # bytes hashed at each end of a large model file


def model_fingerprint(path: Path, extra: list[Path]) -> str:
    """sha256 over the model's files: name, size and content (head and tail of a large file). Cheap on a
    1.2 GB model, independent of where the folder lives and of mtimes (copies to other nodes match)."""
    h = hashlib.sha256()
    if path.is_file():
        files = [(path.name, path)] + [(f"+{p.name}", p) for p in extra if p.is_file()]
    else:
        files = [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*"))
                 if p.is_file() and p.suffix.lower() in _MODEL_SUFFIXES
                 and not any(x.startswith(".") for x in p.relative_to(path).parts)]
    for rel, p in files:
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= 2 * _FP_BLOCK:
                h.update(f.read())
            else:
                h.update(f.read(_FP_BLOCK))
                f.seek(-_FP_BLOCK, os.SEEK_END)
                h.update(f.read(_FP_BLOCK))
    return h.hexdigest()


def prompt_text(model, options) -> str:
    """The prompt the texts get, as BatchEmbedder.embed chooses it (recorded in the manifest)."""
    from ..prompts import DOCUMENT_PROMPT_NAMES, resolve_prompt

    if options.prompt is not None:
        return options.prompt
    if options.title_column is not None:
        return "title: {title} | text: "
    if options.prompt_name is not None:
        return model.prompts[options.prompt_name]
    name = next((n for n in DOCUMENT_PROMPT_NAMES if n in model.prompts), None)
    return model.prompts[name] if name is not None else resolve_prompt(model.prompts, None, None,
                                                                       model.default_prompt_name)


def _describe_diff(key: str, old: Any, new: Any) -> str:
    if key == "model":
        return (f"model (the manifest's is {old.get('path')} with fingerprint {str(old.get('fingerprint'))[:12]}, this "
                f"run's is {new.get('path')} with fingerprint {str(new.get('fingerprint'))[:12]})")
    if key == "inputs" and isinstance(old, list) and isinstance(new, list):
        if [o.get("path") for o in old] != [n.get("path") for n in new]:
            return (f"inputs (the manifest lists {', '.join(o.get('path', '?') for o in old[:5])}"
                    f"{' ...' if len(old) > 5 else ''}; this run {', '.join(n['path'] for n in new[:5])}"
                    f"{' ...' if len(new) > 5 else ''})")
        changed = [f"{n['path']} ({', '.join(f'{k} {o.get(k)} -> {n[k]}' for k in n if o.get(k) != n[k])})"
                   for o, n in zip(old, new) if o != n]
        return f"inputs changed since the job started: {'; '.join(changed)}"
    return f"{key} ({old!r} in the manifest, {new!r} now)"


def _compare_manifest(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for key in new:
        o, n = old.get(key), new[key]
        if key == "model":
            if not isinstance(o, dict) or o.get("fingerprint") != n["fingerprint"]:
                diffs.append(_describe_diff(key, o if isinstance(o, dict) else {}, n))
        elif o != n:
            diffs.append(_describe_diff(key, o, n))
    return diffs


def build_manifest(embedder: Any, sources: list[Source], cols: Columns, structured: bool, shard_size: int,
                   kind: str) -> dict[str, Any]:
    """The job's identity: what a rerun must match to resume it (``--batch-size``, ``--threads`` and the
    engine are not part of it: they do not change the output's bytes)."""
    options, model = embedder.options, embedder.model
    prompt = prompt_text(model, options)
    tokenizer_file = Path(model.tokenizer_source) if model.tokenizer_source not in (None, "gguf metadata") else None
    return {
        "format": MANIFEST_FORMAT,
        "model": {"path": str(model.model_path),
                  "fingerprint": model_fingerprint(Path(model.model_path),
                                                   [tokenizer_file] if tokenizer_file else [])},
        "dtype": model.dtype,
        "prompt": prompt,
        "dim": embedder.dim,
        "precision": options.precision,
        "ranges": None if options.ranges is None else hashlib.sha256(options.ranges.tobytes()).hexdigest(),
        "normalize": options.normalize,
        "allow_empty": options.allow_empty,
        "max_seq_length": model.max_seq_length,
        "inputs": [s.record() for s in sources],
        "text_column": cols.text if structured else None,
        "id_column": cols.id,
        "title_column": cols.title,
        "keep_columns": list(cols.keep),
        "shard_size": shard_size,
        "output": kind,
    }


def prepare(layout: Layout, manifest: dict[str, Any], overwrite: bool):
    """Lock the output (the lock is returned), then start it (manifest) or check the earlier run's."""
    lay = layout
    if lay.kind == "dataset":
        if lay.out.exists() and not lay.out.is_dir():
            raise EmbedJobError(f"{lay.out} is a file; a dataset output is a folder")
        if lay.out.is_dir() and not lay.manifest.exists() and any(
                p.name != lay.lock.name and not p.name.startswith(".") for p in lay.out.iterdir()):
            raise EmbedJobError(f"{lay.out} is a folder that holds files but no _manifest.json (it is not an "
                                "`embgemma embed` output); choose an empty or new folder")
    else:
        if lay.out.is_dir():
            raise EmbedJobError(f"{lay.out} is a folder; name a file, or end the path with / for a dataset")
        if not overwrite and lay.out.exists() and not lay.manifest.exists():
            raise EmbedJobError(f"{lay.out} exists (a finished run?); pass --overwrite to compute it again, or "
                                "choose another -o")
    lay.work.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(lay)
    try:
        if overwrite:
            if lay.kind == "dataset":
                for p in lay.ours():
                    if p != lay.lock:
                        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            else:
                for p in lay.work.iterdir():
                    if p != lay.lock:
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                lay.out.unlink(missing_ok=True)
                lay.errors.unlink(missing_ok=True)
        _write_or_check_manifest(lay, manifest)
    except BaseException:
        lock.close()
        raise
    return lock


def _write_or_check_manifest(lay: Layout, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    if lay.manifest.exists():
        try:
            old = json.loads(lay.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EmbedJobError(f"{lay.manifest}: unreadable ({e}); pass --overwrite to start over") from None
        if not isinstance(old, dict) or old.get("format") != MANIFEST_FORMAT:
            raise EmbedJobError(f"{lay.manifest}: not a manifest this version of embgemma writes; pass --overwrite to "
                                "start over")
        diffs = _compare_manifest(old, manifest)
        if diffs:
            raise EmbedJobError(
                f"{lay.out}: an earlier job with other settings wrote there; this run differs in "
                + "; ".join(diffs)
                + ". Rerun with the earlier settings to resume it, pass --overwrite to start over, or choose another -o"
            )
    else:
        atomic_write(lay.manifest, lambda f: f.write(text.encode("utf-8")))


class _Lock:
    """An exclusive flock on a file in the output, removed on release. After locking, the path must
    still name the locked file: one removed by a finishing run in between is taken again."""

    def __init__(self, layout: Layout) -> None:
        import fcntl

        self.path = layout.lock
        while True:
            f = open(self.path, "a+b")  # noqa: SIM115 - held for the whole job
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise EmbedJobError(f"another `embgemma embed` is writing {layout.out} now; wait for it or stop "
                                    "it") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.f = f
                return
            f.close()

    def close(self) -> None:
        if self.f is not None:
            try:
                if os.stat(self.path).st_ino == os.fstat(self.f.fileno()).st_ino:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self.f.close()
            self.f = None


def _take_lock(layout: Layout) -> _Lock:
    lock = _Lock(layout)
    remove_temps(layout.work)
    if layout.kind == "dataset":
        remove_temps(layout.shard_errors_dir)
    else:
        remove_temps(layout.out.parent, layout.out.name, layout.errors.name)
    if layout.errors.parent != layout.out.parent:
        remove_temps(layout.errors.parent, layout.errors.name)
    return lock
