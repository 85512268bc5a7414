"""``embgemma embed``: embed a corpus from files into Parquet or ``.npy``, resumably.

Inputs are JSON Lines, CSV / TSV, Parquet or plain text (one text a line), the text formats optionally
gzip / bz2 / xz compressed; a folder means the files in it. They are read as a stream, so memory
depends on ``--shard-size``, not on the size of the input.

Outputs, by the path after ``-o``:

* ``OUT.parquet``: one Parquet file with ``id``, ``embedding`` (``fixed_size_list<float32 | int8 |
  uint8>[width]``) and the ``--keep-columns``; rows that could not be embedded are left out.
* ``OUT.npy``: one ``(rows, width)`` array, row i = input row i; a row that could not be embedded is
  all zeros (the errors file names it).
* ``OUT/`` (ends in a slash, or is an existing folder): a Parquet dataset, ``part-000000.parquet`` ...
  one file per shard plus ``_manifest.json`` and ``_SUCCESS``; no final copy (the layout for big jobs).

Rows that cannot be embedded (not a string, a lone surrogate, invalid UTF-8 or JSON, empty unless
``--allow-empty``, a refused token) are listed in ``OUT.errors.jsonl`` (``OUT/_errors.jsonl``) with
their row number, id, file and reason; ``--strict`` stops at the first one instead.

Crash safety: the input rows are cut into shards of ``--shard-size`` rows. A shard is written under a
temporary name, fsynced and renamed into place only when complete, so a shard file that exists is a
finished shard. The first run writes a manifest (model fingerprint, weights dtype, the prompt text,
dimension, precision, inputs with size and mtime, columns, shard size); rerunning the same command
checks it (and refuses, naming what differs, when the job is not the same), skips the finished shards
and computes the others. File outputs are then assembled from the shards in ``OUT.parts/``, which is
removed at the end. Embeddings do not depend on batch composition or thread count, and the Parquet
files carry no timestamps, so a resumed run's files are byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import re
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

DEFAULT_SHARD_SIZE = 1000
#: rows per row group of a single-file Parquet output (about 30 MB of float32 768-wide vectors)
FINAL_ROW_GROUP = 10_000
MANIFEST_FORMAT = "embgemma-embed/1"
INPUT_FORMATS = ("text", "jsonl", "csv", "tsv", "parquet")
PRECISION_CHOICES = ("float32", "int8", "uint8", "binary", "ubinary")
_SUFFIX_FORMAT = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                  ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_OPENERS: dict[str, Callable[..., BinaryIO]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_MODEL_SUFFIXES = {".json", ".safetensors", ".gguf", ".model", ".bin", ".txt"}
_FP_BLOCK = 1 << 20  # bytes hashed at each end of a large model file
_PARQUET_READ_BATCH = 4096
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8
_MISSING = object()


class EmbedJobError(ValueError):
    """A job that cannot start or go on as asked; the message says why and what to do."""


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished shards stay, the one in progress is dropped."""


# ---------------------------------------------------------------------------------------------- inputs


@dataclass
class _Source:
    path: Path
    fmt: str
    size: int
    mtime_ns: int
    rows: int = 0

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.fmt, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class _Columns:
    text: str
    id: str | None
    title: str | None
    keep: tuple[str, ...]

    @property
    def named(self) -> list[str]:
        out: list[str] = []
        for c in (self.text, self.id, self.title, *self.keep):
            if c is not None and c not in out:
                out.append(c)
        return out


def _format_of(path: Path, override: str | None) -> str:
    if override and override != "auto":
        return override
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[ext]
    if not ext:
        return "text"
    raise EmbedJobError(f"{path}: cannot tell the format from the suffix {ext!r}; name it with --input-format "
                        f"({', '.join(INPUT_FORMATS)})")


def _expand_inputs(inputs: list[str], fmt: str | None, own: tuple[Path, ...] = ()) -> list[_Source]:
    """The input files, folders expanded; ``own`` (the job's output, shards and errors file) is left out
    of folders, so an output written inside an input folder is not read back as input on a rerun."""
    own = tuple(o.resolve() for o in own)
    out: list[_Source] = []
    for raw in inputs:
        if raw == "-":
            raise EmbedJobError("embed reads files (it rereads them to resume), not stdin; save the texts to a file, "
                                "or use `embgemma encode -` for a few")
        p = Path(raw).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file()
                           and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
                           and not any(f.resolve() == o or o in f.resolve().parents for o in own))
            if not files:
                raise EmbedJobError(f"{raw}: the folder holds no input files")
        elif p.is_file():
            files = [p]
        elif not p.exists():
            raise EmbedJobError(f"{raw}: no such input file or folder")
        else:
            raise EmbedJobError(f"{raw}: not a regular file")
        for f in files:
            kind = _format_of(f, fmt)
            if kind == "parquet" and f.suffix.lower() in _OPENERS:
                raise EmbedJobError(f"{f}: a compressed Parquet file; Parquet compresses inside, decompress it first")
            st = f.stat()
            out.append(_Source(f.resolve(), kind, st.st_size, st.st_mtime_ns))
    return out


def _open_binary(path: Path) -> BinaryIO:
    opener = _OPENERS.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb", buffering=1 << 20)  # noqa: SIM115


def _bad_utf8(text: str) -> str | None:
    if text.isascii():
        return None
    m = _BAD_BYTE.search(text)
    return None if m is None else f"not valid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02X} at character {m.start()})"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# Row parsing shared by the local readers below and the Ray engine's datasource
# (embgemma/integrations/ray.py), so both engines give the same rows, ids and reasons.

def parse_text_line(line: bytes) -> tuple:
    """(text, title, id, extras, reason) of one line of a text file, its newline already removed."""
    text = line.decode("utf-8", "surrogateescape")
    return (text, None, None, (), _bad_utf8(text))


def parse_json_line(line: bytes, cols: _Columns) -> tuple:
    """(text, title, id, extras, reason) of one JSON Lines line; a line that is not a JSON object, or lacks
    the text (or id) field, gets a reason instead of failing the job."""
    reason, text, title, rid, extras = None, None, None, None, tuple(None for _ in cols.keep)
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason, obj = f"not valid JSON ({e})", None
    if reason is None and not isinstance(obj, dict):
        reason = f"not a JSON object ({type(obj).__name__})"
    if reason is None:
        text = obj.get(cols.text, _MISSING)
        if text is _MISSING:
            reason, text = f"no {cols.text!r} field", None
        if cols.id is not None:
            rid = obj.get(cols.id, _MISSING)
            if rid is _MISSING or rid is None:
                reason = reason or (f"no {cols.id!r} field" if rid is _MISSING else f"{cols.id!r} is null")
                rid = None
        if cols.title is not None:
            title = obj.get(cols.title)
        extras = tuple(obj.get(k) for k in cols.keep)
    return (text, title, rid, extras, reason)


class CsvColumns:
    """Where the job's columns sit in a CSV header, and the row of each record: every field a string,
    an empty title no title, a record with the wrong number of fields a bad row."""

    def __init__(self, header: list[str], cols: _Columns, path: Any) -> None:
        self.width, self.id_name = len(header), cols.id
        where = {name: i for i, name in reversed(list(enumerate(header)))}
        missing = [name for name in cols.named if name not in where]
        if missing:
            raise EmbedJobError(f"{path}: no column {', '.join(map(repr, missing))} in the header "
                                f"(columns: {', '.join(header[:20])}); name them with --text-column / --id-column / "
                                "--title-column / --keep-columns (from Python: text_column=, id_column=, title_column=, "
                                "passthrough=)")
        self.ti = where[cols.text]
        self.ii = None if cols.id is None else where[cols.id]
        self.tt = None if cols.title is None else where[cols.title]
        self.ki = [where[k] for k in cols.keep]

    def row(self, rec: list[str]) -> tuple:
        """(text, title, id, extras, reason) of one record."""
        def get(i: int | None) -> str | None:
            return rec[i] if i is not None and i < len(rec) else None

        text, title, rid = get(self.ti), get(self.tt) or None, get(self.ii)
        reason = None
        if len(rec) != self.width:
            reason = f"{len(rec)} fields where the header has {self.width}"
        elif isinstance(text, str):
            reason = _bad_utf8(text)
        if reason is None and self.ii is not None and not rid:
            reason = f"empty {self.id_name!r}"
        return (text, title, rid if rid else None, tuple(get(i) for i in self.ki), reason)


# A row: (text, title, id, extras, reason or None, source index, row within the file); the id is None
# when ids are row numbers (the reader fills in the global row).
Row = tuple


class _TextReader:
    """One text a line (\\n or \\r\\n); the last line needs no newline; a UTF-8 BOM is dropped."""

    def __init__(self, src: _Source, cols: _Columns, index: int) -> None:
        self.f, self.index, self.row, self.first = _open_binary(src.path), index, 0, True

    def _line(self) -> bytes | None:
        line = self.f.readline()
        if not line:
            return None
        if self.first:
            self.first = False
            line = line.removeprefix(b"\xef\xbb\xbf")
        return line

    def skip(self, n: int) -> int:
        k = 0
        while k < n and self._line() is not None:
            k += 1
        self.row += k
        return k

    def read(self, n: int) -> list[Row]:
        out: list[Row] = []
        while len(out) < n:
            line = self._line()
            if line is None:
                break
            if line.endswith(b"\n"):
                line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            out.append((*parse_text_line(line), self.index, self.row))
            self.row += 1
        return out

    def close(self) -> None:
        self.f.close()


class _JsonlReader:
    """One JSON object a line; blank lines are no rows. A line that is not a JSON object, or lacks the
    text (or id) field, is a bad row, not a failed job."""

    def __init__(self, src: _Source, cols: _Columns, index: int) -> None:
        self.f, self.cols, self.index, self.row, self.first = _open_binary(src.path), cols, index, 0, True

    def _line(self) -> bytes | None:
        while True:
            line = self.f.readline()
            if not line:
                return None
            if self.first:
                self.first = False
                line = line.removeprefix(b"\xef\xbb\xbf")
            if line.strip():
                return line

    def skip(self, n: int) -> int:
        k = 0
        while k < n and self._line() is not None:
            k += 1
        self.row += k
        return k

    def read(self, n: int) -> list[Row]:
        c = self.cols
        out: list[Row] = []
        while len(out) < n:
            line = self._line()
            if line is None:
                break
            out.append((*parse_json_line(line, c), self.index, self.row))
            self.row += 1
        return out

    def close(self) -> None:
        self.f.close()


class _CsvReader:
    """CSV / TSV with a header row; every field is a string (CSV has no types); blank lines are no
    rows; an empty title is no title; a record with the wrong number of fields is a bad row."""

    def __init__(self, src: _Source, cols: _Columns, index: int) -> None:
        csv.field_size_limit(2**31 - 1)  # texts can be long; the default is 128 KiB
        self.path, self.index, self.row = src.path, index, 0
        self.f = io.TextIOWrapper(_open_binary(src.path), encoding="utf-8-sig", errors="surrogateescape", newline="")
        self.reader = csv.reader(self.f, delimiter="\t" if src.fmt == "tsv" else ",")
        header = self._next()
        if header is None:
            self.f.close()
            raise EmbedJobError(f"{src.path}: empty; a CSV input needs a header row naming its columns")
        try:
            self.columns = CsvColumns(header, cols, src.path)
        except EmbedJobError:
            self.f.close()
            raise

    def _next(self) -> list[str] | None:
        try:
            while True:
                rec = next(self.reader, None)
                if rec is None or rec:
                    return rec
        except csv.Error as e:
            raise EmbedJobError(f"{self.path}, line {self.reader.line_num}: not readable as CSV ({e})") from None

    def skip(self, n: int) -> int:
        k = 0
        while k < n and self._next() is not None:
            k += 1
        self.row += k
        return k

    def read(self, n: int) -> list[Row]:
        out: list[Row] = []
        while len(out) < n:
            rec = self._next()
            if rec is None:
                break
            out.append((*self.columns.row(rec), self.index, self.row))
            self.row += 1
        return out

    def close(self) -> None:
        self.f.close()


class _ParquetReader:
    """Reads the named columns a batch at a time; skipping seeks by row group."""

    def __init__(self, src: _Source, cols: _Columns, index: int) -> None:
        pq = _pyarrow_parquet()
        self.path, self.cols, self.index = src.path, cols, index
        try:
            self.pf = pq.ParquetFile(src.path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise EmbedJobError(f"{src.path}: not readable as Parquet ({e})") from None
        names = self.pf.schema_arrow.names
        missing = [c for c in cols.named if c not in names]
        if missing:
            raise EmbedJobError(f"{src.path}: no column {', '.join(map(repr, missing))} (columns: "
                                f"{', '.join(names[:20])}); name them with --text-column / --id-column / "
                                "--title-column / --keep-columns")
        md = self.pf.metadata
        self.group_rows = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        self.total = md.num_rows
        self.pos = 0  # rows handed out or skipped
        self.batches = None
        self.buf: dict[str, list[Any]] = {}
        self.buf_len = self.buf_off = 0

    def _seek(self) -> None:
        start = 0
        for g, n in enumerate(self.group_rows):
            if self.pos < start + n:
                break
            start += n
        else:
            self.batches, self.buf_len, self.buf_off = iter(()), 0, 0
            return
        self.batches = self.pf.iter_batches(batch_size=_PARQUET_READ_BATCH, row_groups=range(g, len(self.group_rows)),
                                            columns=self.cols.named, use_threads=False)
        self.buf_len = self.buf_off = 0
        drop = self.pos - start
        while drop > 0 and self._fill():
            k = min(drop, self.buf_len - self.buf_off)
            self.buf_off += k
            drop -= k

    def _fill(self) -> bool:
        if self.buf_off < self.buf_len:
            return True
        batch = next(self.batches, None)
        if batch is None:
            return False
        self.buf = {name: batch.column(name).to_pylist() for name in self.cols.named}
        self.buf_len, self.buf_off = batch.num_rows, 0
        return True

    def skip(self, n: int) -> int:
        k = min(n, self.total - self.pos)
        if self.batches is not None and self.buf_len - self.buf_off >= k:
            self.buf_off += k
        else:
            self.batches = None  # seek again on the next read
        self.pos += k
        return k

    def read(self, n: int) -> list[Row]:
        if self.batches is None:
            self._seek()
        c = self.cols
        out: list[Row] = []
        while len(out) < n and self._fill():
            b, i = self.buf, self.buf_off
            take = min(n - len(out), self.buf_len - i)
            for j in range(i, i + take):
                rid = b[c.id][j] if c.id is not None else None
                reason = f"{c.id!r} is null" if c.id is not None and rid is None else None
                out.append((b[c.text][j], b[c.title][j] if c.title is not None else None, rid,
                            tuple(b[k][j] for k in c.keep), reason, self.index, self.pos + (j - i)))
            self.buf_off += take
            self.pos += take
        return out

    def close(self) -> None:
        self.batches = None


_READERS = {"text": _TextReader, "jsonl": _JsonlReader, "csv": _CsvReader, "tsv": _CsvReader,
            "parquet": _ParquetReader}


def _scan(src: _Source, cols: _Columns, index: int) -> int:
    """Rows in one input (for the progress bar and the shard count); checks its header on the way."""
    if src.fmt == "parquet":
        return _ParquetReader(src, cols, index).total
    if src.fmt == "jsonl":
        with _open_binary(src.path) as f:
            for line in f:
                if line.strip():
                    if line.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                        raise EmbedJobError(f"{src.path}: a JSON array, not JSON Lines (one object a line); convert "
                                            "it, e.g. jq -c '.[]' FILE > FILE.jsonl")
                    break
    reader = _READERS[src.fmt](src, cols, index)
    try:
        n = 0
        while True:
            k = reader.skip(1 << 16)
            n += k
            if k < 1 << 16:
                return n
    finally:
        reader.close()


class _InputReader:
    """The rows of all inputs in order, numbered from 0 across files; ids default to that number."""

    def __init__(self, sources: list[_Source], cols: _Columns) -> None:
        self.sources, self.cols = sources, cols
        self.i, self.cur, self.row = 0, None, 0

    def _reader(self):
        if self.cur is None and self.i < len(self.sources):
            self.cur = _READERS[self.sources[self.i].fmt](self.sources[self.i], self.cols, self.i)
        return self.cur

    def _next_file(self) -> None:
        if self.cur is not None:
            self.cur.close()
        self.cur = None
        self.i += 1

    def skip(self, n: int) -> int:
        done = 0
        while done < n and self._reader() is not None:
            done += self.cur.skip(n - done)
            if done < n:
                self._next_file()
        self.row += done
        return done

    def read(self, n: int) -> list[Row]:
        out: list[Row] = []
        while len(out) < n and self._reader() is not None:
            got = self.cur.read(n - len(out))
            out.extend(got)
            if len(out) < n:
                self._next_file()
        if self.cols.id is None:
            out = [(r[0], r[1], self.row + k, *r[3:]) for k, r in enumerate(out)]
        self.row += len(out)
        return out

    def close(self) -> None:
        if self.cur is not None:
            self.cur.close()
            self.cur = None


# ---------------------------------------------------------------------------------------------- output


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet input and output need pyarrow: pip install 'embgemma[parquet]'") from None
    return pq


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a hidden temporary name beside ``path``, fsync, rename into place, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _remove_temps(folder: Path, *names: str) -> None:
    """Temporary files a killed run left (``_atomic_write``'s names): all in ``folder``, or those of ``names``."""
    if folder.is_dir():
        for pattern in [f".{n}.tmp-*" for n in names] or [".*.tmp-*"]:
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)


@dataclass
class _Layout:
    """Where a job's files go (see the module docstring)."""

    kind: str  # "parquet" | "npy" | "dataset"
    out: Path

    @classmethod
    def from_arg(cls, raw: str) -> _Layout:
        p = Path(raw).expanduser()
        if raw.endswith(("/", os.sep)) or p.is_dir():
            return cls("dataset", p.absolute())
        suffix = p.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return cls("parquet", p.absolute())
        if suffix == ".npy":
            return cls("npy", p.absolute())
        raise EmbedJobError(f"-o {raw}: the output must be a .parquet file, a .npy file, or a folder (end it with /) "
                            "for a Parquet dataset of one file per shard")

    @property
    def work(self) -> Path:
        return self.out if self.kind == "dataset" else self.out.with_name(self.out.name + ".parts")

    @property
    def manifest(self) -> Path:
        return self.work / ("_manifest.json" if self.kind == "dataset" else "manifest.json")

    @property
    def lock(self) -> Path:
        return self.work / ".embgemma-embed.lock"

    @property
    def errors(self) -> Path:
        if self.kind == "dataset":
            return self.out / "_errors.jsonl"
        return self.out.with_name(self.out.name + ".errors.jsonl")

    @property
    def shard_errors_dir(self) -> Path:
        return self.out / "_errors.parts" if self.kind == "dataset" else self.work

    @property
    def success(self) -> Path:
        return self.out / "_SUCCESS"

    def shard(self, k: int) -> Path:
        if self.kind == "dataset":
            return self.out / f"part-{k:06d}.parquet"
        return self.work / f"shard-{k:06d}.{'npy' if self.kind == 'npy' else 'parquet'}"

    def shard_errors(self, k: int) -> Path:
        if self.kind == "dataset":
            return self.shard_errors_dir / f"part-{k:06d}.jsonl"
        return self.work / f"shard-{k:06d}.errors.jsonl"

    def ours(self) -> list[Path]:
        """In a dataset folder: the files a job writes (what --overwrite may delete)."""
        return [*self.out.glob("part-*.parquet"), self.manifest, self.errors, self.success, self.lock,
                self.shard_errors_dir, *self.out.glob(".*.tmp-*")]


# ---------------------------------------------------------------------------------------------- job


def _model_fingerprint(path: Path, extra: list[Path]) -> str:
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


def _prompt_text(model, options) -> str:
    """The prompt the texts get, as BatchEmbedder.embed chooses it (recorded in the manifest)."""
    from .prompts import DOCUMENT_PROMPT_NAMES, resolve_prompt

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


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)


@dataclass
class _Job:
    layout: _Layout
    sources: list[_Source]
    cols: _Columns
    embedder: Any
    shard_size: int
    strict: bool
    quiet: bool
    total: int
    types: dict[str, Any] = field(default_factory=dict)  # Arrow type of id / kept columns (Parquet outputs)
    tokens: int = 0
    truncated: int = 0  # texts over max_seq_length, cut by the engine (one line at the end, not a warning a batch)


def _declared_types(sources: list[_Source], cols: _Columns) -> dict[str, Any]:
    """Output types of id and kept columns where the input says them; None: inferred from the first shard."""
    import pyarrow as pa

    names = (["id"] if cols.id is not None else []) + list(cols.keep)
    first = sources[0].fmt if sources else "text"
    if first in ("csv", "tsv"):
        types = dict.fromkeys(names, pa.string())
    elif first == "parquet":
        schema = _pyarrow_parquet().ParquetFile(sources[0].path).schema_arrow
        types = {n: schema.field(cols.id if n == "id" else n).type for n in names}
    else:
        types = dict.fromkeys(names)
    if cols.id is None:
        types["id"] = pa.int64()
    return types


def _infer_type(values: list[Any]):
    import pyarrow as pa

    try:
        t = pa.array([v for v in values if v is not None]).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return pa.string()
    return pa.string() if pa.types.is_null(t) else t


def _fit(name: str, values: list[Any], typ) -> tuple[Any, dict[int, str]]:
    """An Arrow array of ``typ``; values that do not fit are null and reported by row (a string column
    takes other JSON values as their JSON text)."""
    import pyarrow as pa

    errors = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError, UnicodeError)
    try:
        return pa.array(values, type=typ), {}
    except errors:
        pass
    fixed: list[Any] = []
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        if v is not None and pa.types.is_string(typ) and not isinstance(v, str):
            v = json.dumps(v, ensure_ascii=False)
        try:
            pa.array([v], type=typ)
        except errors as e:
            bad[i] = (f"column {name!r}: {_short(v)} does not fit the column's type {typ} "
                      f"({type(e).__name__}: {str(e)[:80]})")
            v = None
        fixed.append(v)
    return pa.array(fixed, type=typ), bad


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


class _StrictStop(Exception):
    pass


def _error_entry(job: _Job, row: Row, global_row: int, reason: str) -> dict[str, Any]:
    return {"row": global_row, "id": _jsonable(row[2]), "file": str(job.sources[row[5]].path), "file_row": row[6],
            "reason": reason}


def _count_tokens(job: _Job, texts: list[str], titles: list[Any] | None, prompt: str) -> int:
    """Tokens the engine sees (prompt, BOS, EOS; capped at max_seq_length), for the progress bar; counts
    the texts the engine truncated in ``job.truncated`` (the same strings as ``encode`` tokenizes)."""
    from .prompts import document_prompt_with_title

    model = job.embedder.model
    tok = getattr(model, "tokenizer", None)
    if tok is None or not texts:
        return 0
    if titles is not None:
        strings = [(document_prompt_with_title(None if _missing(t) else t) + x).strip()
                   for x, t in zip(texts, titles)]
    else:
        strings = [(prompt + x).strip() for x in texts]
    cap = model.max_seq_length
    lengths = [len(e.ids) for e in tok.encode_batch(strings)]
    job.truncated += sum(n > cap for n in lengths)
    return sum(min(n, cap) for n in lengths)


def _process_shard(job: _Job, k: int, rows: list[Row], start: int, prompt: str, progress) -> None:
    """Embed one shard and write it (errors first, then the data file: the data file's existence marks
    the shard done)."""
    n = len(rows)
    reasons: list[str | None] = [r[4] for r in rows]
    arrays: dict[str, Any] = {}
    parquet = job.layout.kind != "npy"
    if parquet:
        names = ["id", *job.cols.keep]
        for j, name in enumerate(names):
            values = [r[2] for r in rows] if name == "id" else [r[3][j - 1] for r in rows]
            values = [None if reasons[i] is not None and name == "id" else v for i, v in enumerate(values)]
            if job.types.get(name) is None:
                job.types[name] = _infer_type([v for i, v in enumerate(values) if reasons[i] is None])
            arrays[name], bad = _fit(name, values, job.types[name])
            for i, why in bad.items():
                reasons[i] = reasons[i] or why
    emb_opts = job.embedder.options
    cand = [i for i in range(n) if reasons[i] is None]
    if job.strict:
        texts = [rows[i][0] for i in cand]
        titles = [rows[i][1] for i in cand] if emb_opts.title_column is not None else None
        _, why = job.embedder.validate(texts, titles)
        for i, w in zip(cand, why):
            reasons[i] = w
        first = next((i for i in range(n) if reasons[i] is not None), None)
        if first is not None:
            raise _StrictStop(_error_entry(job, rows[first], start + first, reasons[first]))
    width, dtype = job.embedder.output_width, job.embedder.output_dtype
    emb = np.zeros((n, width), dtype=dtype)
    ok = np.zeros(n, dtype=bool)
    step = max(8 * (emb_opts.batch_size or 32), 256)  # engine calls between progress updates
    for s in range(0, len(cand), step):
        idx = cand[s : s + step]
        texts = [rows[i][0] for i in idx]
        titles = [rows[i][1] for i in idx] if emb_opts.title_column is not None else None
        with warnings.catch_warnings():  # counted instead, and said once at the end
            warnings.filterwarnings("ignore", message=r".* longer than max_seq_length=", category=UserWarning)
            res = job.embedder.embed_checked(texts, titles)
        good = np.asarray(idx, dtype=np.int64)[res.ok]
        emb[good] = res.embeddings
        ok[good] = True
        for j in np.flatnonzero(~res.ok):
            reasons[idx[j]] = res.reasons[j]
            if job.strict:
                raise _StrictStop(_error_entry(job, rows[idx[j]], start + idx[j], res.reasons[j]))
        ok_texts = [t for t, g in zip(texts, res.ok) if g]
        ok_titles = None if titles is None else [t for t, g in zip(titles, res.ok) if g]
        tokens = _count_tokens(job, ok_texts, ok_titles, prompt)
        job.tokens += tokens
        progress.update(len(idx), tokens)
    progress.update(n - len(cand), 0)  # rows refused before embedding

    bad_rows = [i for i in range(n) if not ok[i]]
    err_path = job.layout.shard_errors(k)
    if bad_rows:
        err_path.parent.mkdir(exist_ok=True)
        lines = "".join(json.dumps(_error_entry(job, rows[i], start + i, reasons[i] or "not embedded")) + "\n"
                        for i in bad_rows)
        _atomic_write(err_path, lambda f: f.write(lines.encode("utf-8")))
    else:
        err_path.unlink(missing_ok=True)

    if job.layout.kind == "npy":
        _atomic_write(job.layout.shard(k), lambda f: np.save(f, emb, allow_pickle=False))
        return
    import pyarrow as pa

    from ._batch import to_arrow_embeddings

    table = pa.table({"id": arrays["id"], "embedding": to_arrow_embeddings(emb),
                      **{c: arrays[c] for c in job.cols.keep}})
    if not ok.all():
        table = table.filter(pa.array(ok))
    pq = _pyarrow_parquet()
    _atomic_write(job.layout.shard(k), lambda f: pq.write_table(table, f, row_group_size=max(len(table), 1),
                                                                **_parquet_options(job.cols)))


def _parquet_options(cols: _Columns) -> dict[str, Any]:
    # fixed settings, no timestamps: the same rows always give the same bytes. No dictionary pages and
    # statistics for the embedding (floats; neither helps), zstd for all.
    return {"compression": "zstd", "use_dictionary": list(cols.keep), "write_statistics": ["id", *cols.keep]}


def _finalize(job: _Job, n_shards: int) -> int:
    """Assemble the output from the shards and merge the error lists; returns the number of errors."""
    lay = job.layout
    if lay.kind == "npy":
        width, dtype = job.embedder.output_width, np.dtype(job.embedder.output_dtype)

        def write_npy(f: BinaryIO) -> None:
            # the header, then each shard's rows in turn: memory stays at one shard whatever the total
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                     "fortran_order": False, "shape": (job.total, width)})
            for k in range(n_shards):
                part = np.load(lay.shard(k), mmap_mode="r")
                want = (min(job.shard_size, job.total - k * job.shard_size), width)
                if part.shape != want or part.dtype != dtype:
                    raise EmbedJobError(f"{lay.shard(k)}: {part.shape} {part.dtype}, expected {want} {dtype}; pass "
                                        "--overwrite to start over")
                f.write(np.ascontiguousarray(part).tobytes())
                del part

        _atomic_write(lay.out, write_npy)
    elif lay.kind == "parquet":
        pq = _pyarrow_parquet()
        import pyarrow as pa

        schema = pq.read_schema(lay.shard(0))

        def write_parquet(f: BinaryIO) -> None:
            with pq.ParquetWriter(f, schema, **_parquet_options(job.cols)) as w:
                pending: list[Any] = []
                count = 0
                for k in range(n_shards):
                    t = pq.read_table(lay.shard(k))
                    pending.append(t)
                    count += len(t)
                    while count >= FINAL_ROW_GROUP:
                        t = pa.concat_tables(pending)
                        w.write_table(t.slice(0, FINAL_ROW_GROUP), row_group_size=FINAL_ROW_GROUP)
                        pending, count = [t.slice(FINAL_ROW_GROUP)], len(t) - FINAL_ROW_GROUP
                if count:
                    w.write_table(pa.concat_tables(pending), row_group_size=FINAL_ROW_GROUP)

        _atomic_write(lay.out, write_parquet)
    # errors: one list in row order
    errs = [lay.shard_errors(k) for k in range(n_shards) if lay.shard_errors(k).exists()]
    n_err = 0
    if errs:
        def write_errors(f: BinaryIO) -> None:
            nonlocal n_err
            for p in errs:
                data = p.read_bytes()
                n_err += data.count(b"\n")
                f.write(data)

        _atomic_write(lay.errors, write_errors)
    else:
        lay.errors.unlink(missing_ok=True)
    if lay.kind == "dataset":
        shutil.rmtree(lay.shard_errors_dir, ignore_errors=True)
        _atomic_write(lay.success, lambda f: None)
    else:
        shutil.rmtree(lay.work)
        _fsync_dir(lay.out.parent)
    return n_err


class _Progress:
    """tqdm bar (texts, texts/s, tokens/s, ETA) on stderr; a line per shard without tqdm; nothing with --quiet."""

    def __init__(self, total: int, initial: int, quiet: bool) -> None:
        self.total, self.done, self.tokens, self.t0 = total, initial, 0, time.perf_counter()
        self.initial, self.bar, self.quiet = initial, None, quiet
        if quiet:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, unit="text", desc="embed", file=sys.stderr, dynamic_ncols=True,
                        mininterval=0.5 if tty else 30.0, smoothing=0.05)

    def update(self, texts: int, tokens: int) -> None:
        self.done += texts
        self.tokens += tokens
        if self.bar is not None:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / dt:,.0f} tok/s", refresh=False)
            self.bar.update(texts)

    def shard_done(self) -> None:
        if self.bar is None and not self.quiet:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            rate = (self.done - self.initial) / dt
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"embed: {self.done}/{self.total} texts, {rate:.1f} texts/s, {self.tokens / dt:,.0f} tok/s, "
                  f"ETA {_duration(eta)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---------------------------------------------------------------------------------------------- command


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``embed`` on the ``embgemma`` command's subparsers."""
    p = sub.add_parser(
        "embed", help="embed files of texts (JSON Lines, CSV, Parquet, text) into Parquet or .npy; resumable",
        description="Embed a corpus into Parquet or .npy, streaming, in shards that survive a crash: rerun the "
                    "same command to resume. Rows that cannot be embedded go to OUT.errors.jsonl.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files or folders: .jsonl/.ndjson/.json (JSON Lines), .csv, .tsv, .parquet, or text (one "
                        "text a line: .txt or no suffix); .gz/.bz2/.xz compressed text formats too")
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
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="float32",
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
    from ._batch import EmbedOptions

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
    layout = _Layout.from_arg(args.output)
    if args.engine == "ray":
        return _run_ray(args, layout)
    if args.address:
        raise EmbedJobError("--address applies to --engine ray")
    sources = _expand_inputs(args.inputs, args.input_format, (layout.out, layout.work, layout.errors))
    structured = any(s.fmt != "text" for s in sources)
    if structured and any(s.fmt == "text" for s in sources):
        raise EmbedJobError("plain-text inputs cannot be mixed with JSON Lines / CSV / Parquet inputs (they have no "
                            "columns); embed them in separate jobs")
    try:
        options = _options(args, structured)
    except ValueError as e:
        raise EmbedJobError(str(e)) from None
    if layout.kind == "npy" and options.passthrough:
        raise EmbedJobError("--keep-columns needs a Parquet output: a .npy file holds only the embeddings (row i = "
                            "input row i)")
    if any(s.fmt == "parquet" for s in sources) or layout.kind != "npy":
        _pyarrow_parquet()  # the ImportError names the extra before any work
    cols = _Columns(options.text_column, options.id_column, options.title_column, options.passthrough)


    # the job's identity: refuse early, before loading the model, what can be refused without it
    for i, src in enumerate(sources):
        src.rows = _scan(src, cols, i)
    total = sum(s.rows for s in sources)

    from ._batch import BatchEmbedder

    embedder = BatchEmbedder(options)
    model = embedder.model
    prompt = _prompt_text(model, options)
    tokenizer_file = Path(model.tokenizer_source) if model.tokenizer_source not in (None, "gguf metadata") else None
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": {"path": str(model.model_path),
                  "fingerprint": _model_fingerprint(Path(model.model_path),
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
        "shard_size": args.shard_size,
        "output": layout.kind,
    }

    lock = _prepare(layout, manifest, args.overwrite)
    try:
        if layout.kind == "dataset" and layout.success.exists():
            print(f"embgemma embed: {layout.out} is complete (same job); nothing to do", file=sys.stderr)
            return 0
        return _embed_all(layout, sources, cols, embedder, manifest, prompt, total, args)
    finally:
        lock.close()


def _prepare(layout: _Layout, manifest: dict[str, Any], overwrite: bool):
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


def _write_or_check_manifest(lay: _Layout, manifest: dict[str, Any]) -> None:
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
        _atomic_write(lay.manifest, lambda f: f.write(text.encode("utf-8")))


class _Lock:
    """An exclusive flock on a file in the output, removed on release. After locking, the path must
    still name the locked file: one removed by a finishing run in between is taken again."""

    def __init__(self, layout: _Layout) -> None:
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


def _take_lock(layout: _Layout) -> _Lock:
    lock = _Lock(layout)
    _remove_temps(layout.work)
    if layout.kind == "dataset":
        _remove_temps(layout.shard_errors_dir)
    else:
        _remove_temps(layout.out.parent, layout.out.name, layout.errors.name)
    return lock


def _embed_all(layout, sources, cols, embedder, manifest, prompt, total, args) -> int:
    S = args.shard_size
    n_shards = max(1, -(-total // S))
    done = [layout.shard(k).exists() for k in range(n_shards)]
    stray = sorted(layout.work.glob("part-*.parquet" if layout.kind == "dataset" else "shard-*.*"))
    for p in stray:  # shards past the end: cannot be from this job's manifest
        if p.name.endswith((".npy", ".parquet")) and int(re.findall(r"\d+", p.name)[0]) >= n_shards:
            raise EmbedJobError(f"{p}: a shard past the end of the input ({n_shards} shards); pass --overwrite")
    rows_done = sum(min(S, total - k * S) for k in range(n_shards) if done[k])
    job = _Job(layout, sources, cols, embedder, S, args.strict, args.quiet, total, _declared_types(sources, cols)
               if layout.kind != "npy" else {})
    if layout.kind != "npy" and done[0]:  # types inferred by the first shard stay the job's types
        schema = _pyarrow_parquet().read_schema(layout.shard(0))
        for name in job.types:
            job.types[name] = schema.field(name).type
    if any(done) and not args.quiet:
        print(f"embgemma embed: resuming: {sum(done)} of {n_shards} shards are done ({rows_done} of {total} rows)",
              file=sys.stderr)
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Interrupted()

    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    progress = _Progress(total, rows_done, args.quiet)
    t0 = time.perf_counter()
    reader = _InputReader(sources, cols)
    computed = 0
    try:
        for k in range(n_shards):
            expect = min(S, total - k * S)
            if done[k]:
                got = reader.skip(expect)
                if got != expect:
                    raise EmbedJobError(f"the inputs have fewer rows than counted ({k * S + got}); did they change "
                                        "during the run?")
                continue
            rows = reader.read(expect)
            if len(rows) != expect:
                raise EmbedJobError(f"the inputs have fewer rows than counted ({k * S + len(rows)}); did they change "
                                    "during the run?")
            _process_shard(job, k, rows, k * S, prompt, progress)
            computed += len(rows)
            progress.shard_done()
        if reader.read(1):
            raise EmbedJobError(f"the inputs have more rows than counted ({total}); did they change during the run?")
        progress.close()
        n_err = _finalize(job, n_shards)
    except _StrictStop as e:
        progress.close()
        entry = e.args[0]
        print(f"embgemma embed: --strict: row {entry['row']} (id {entry['id']!r}, {entry['file']} row "
              f"{entry['file_row']}): {entry['reason']}. The shards before it are kept; fix the input and pass "
              "--overwrite, or drop --strict to list such rows in the errors file", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        progress.close()
        finished = sum(1 for k in range(n_shards) if layout.shard(k).exists())
        what = "terminated" if isinstance(e, _Interrupted) else "interrupted"
        print(f"embgemma embed: {what}; {finished} of {n_shards} shards are complete in {layout.work}. Rerun the "
              "same command to resume.", file=sys.stderr)
        return 143 if isinstance(e, _Interrupted) else 130
    finally:
        progress.close()
        reader.close()
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
    dt = time.perf_counter() - t0
    if not args.quiet:
        rate = f"{computed / dt:.1f} texts/s, {job.tokens / dt:,.0f} tok/s" if computed and dt > 0 else "no new rows"
        err = f"; {n_err} row(s) not embedded, listed in {layout.errors}" if n_err else ""
        cut = (f"; {job.truncated} text(s) longer than max_seq_length={embedder.model.max_seq_length} tokens were "
               "truncated (their first tokens embedded)" if job.truncated else "")
        print(f"embgemma embed: {total - n_err} of {total} rows -> {layout.out} ({embedder.output_width} x "
              f"{np.dtype(embedder.output_dtype).name}){err}. This run: {computed} rows in {dt:.1f} s ({rate}){cut}",
              file=sys.stderr)
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _run_ray(args, layout) -> int:
    """``--engine ray``: the job on a Ray cluster, by ``embgemma.integrations.ray.run_embed_job`` (one
    Parquet file and the errors file; inputs are paths every node can read, or URIs such as s3://).
    It writes no shards: a failed Ray job starts over, where the local engine resumes."""
    structured = args.input_format not in ("auto", "text")
    for raw in args.inputs if args.input_format == "auto" else ():
        name = Path(raw.split("://")[-1].rstrip("/"))
        if ("://" not in raw and Path(raw).is_dir()) or not name.suffix:
            structured = True  # a folder or a URI prefix: the Ray reader looks at its files
            continue
        try:
            structured = structured or _format_of(name, None) != "text"
        except EmbedJobError:
            structured = True  # an unknown suffix: the Ray reader says so
    try:
        options = _options(args, structured)
    except ValueError as e:
        raise EmbedJobError(str(e)) from None
    if layout.kind != "parquet":
        raise EmbedJobError("--engine ray writes one Parquet file: give -o OUT.parquet (.npy and dataset-folder "
                            "outputs are made by the local engine)")
    if args.shard_size != DEFAULT_SHARD_SIZE:
        raise EmbedJobError("--shard-size applies to the local engine (--engine ray writes no shards)")
    try:
        from .integrations.ray import run_embed_job
    except ImportError as e:
        raise EmbedJobError(f"--engine ray needs Ray Data: pip install 'embgemma[ray]' ({e})") from None
    from ._batch import _replace

    if not args.overwrite and (layout.out.exists() or layout.errors.exists()):
        raise EmbedJobError(f"{layout.out if layout.out.exists() else layout.errors} exists; pass --overwrite to "
                            "compute it again, or choose another -o")
    layout.errors.unlink(missing_ok=True)  # the Ray job writes it only when some rows fail
    result = run_embed_job(list(args.inputs), layout.out, _replace(options, strict=args.strict),
                           address=args.address, errors_output=layout.errors,
                           input_format=None if args.input_format == "auto" else args.input_format)
    if not args.quiet:
        err = f"; {result['errors']} row(s) not embedded, listed in {layout.errors}" if result["errors"] else ""
        print(f"embgemma embed: {result['embedded']} of {result['rows']} rows -> {layout.out} (Ray){err}. "
              f"{result['seconds']:.1f} s", file=sys.stderr)
    return 0
