"""Inputs of a corpus job: the format table, input discovery, and one reader per format.

Formats by suffix: .txt / .text (one text a line) or no suffix, .jsonl / .ndjson / .json (JSON Lines),
.csv, .tsv / .tab, .parquet / .pq; the text formats optionally compressed (.gz, .bz2, .xz, .zst, .lz4).
A path may be a local file or folder, or a URI pyarrow can open (``s3://``, ``gs://``, ``file://``).

Readers stream: a row is ``(text, title, id, extras, reason, source index, row within the file)``,
``reason`` saying why the row cannot be embedded (bad UTF-8 or JSON, a missing field), else None; a
bad row is a row with a reason, never a failed job. Every engine reads through these readers, so all
give the same rows, ids and reasons.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .arrow import pyarrow_parquet
from .reasons import EmbedJobError, bad_utf8

INPUT_FORMATS = ("text", "jsonl", "csv", "tsv", "parquet")
SUFFIX_FORMAT = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                 ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


def _arrow_codec(codec: str) -> Callable[[BinaryIO], Any]:
    def open_(raw: BinaryIO) -> Any:
        try:
            import pyarrow as pa
        except ImportError:
            raise EmbedJobError(f"{codec} inputs need pyarrow: pip install 'embgemma[parquet]'") from None
        return pa.CompressedInputStream(raw if isinstance(raw, pa.NativeFile) else pa.PythonFile(raw, mode="r"), codec)
    return open_


#: compression suffix -> what decompresses a binary stream (zstd and lz4 are not in the standard library: pyarrow's)
COMPRESSION: dict[str, Callable[[BinaryIO], Any]] = {
    ".gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile,
    ".zst": _arrow_codec("zstd"), ".lz4": _arrow_codec("lz4"),
}


class _Decompressed(io.BufferedReader):
    """A decompressing stream that closes the file under it too (the decompressors leave it open)."""

    def __init__(self, raw: BinaryIO, suffix: str) -> None:
        self.raw_file = raw
        super().__init__(COMPRESSION[suffix](raw), 1 << 20)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.raw_file.close()


_PARQUET_READ_BATCH = 4096
_MISSING = object()


def is_uri(path: Any) -> bool:
    return "://" in str(path)


def _suffix(path: Any) -> str:
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    return os.path.splitext(name)[1].lower()


@dataclass
class Source:
    """One input file; ``path`` is a resolved Path, or a URI string."""

    path: Path | str
    fmt: str
    size: int
    mtime_ns: int
    rows: int = 0

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.fmt, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Columns:
    """The job's columns: text, id (None: the row number), title, kept ones."""

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


def format_of(path: Any, override: str | None = None) -> str:
    """The format of one input: ``override`` unless None or "auto", else by its suffix (under a compression one)."""
    if override and override != "auto":
        if override not in INPUT_FORMATS:
            raise EmbedJobError(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {override!r}")
        return override
    name = str(path).rstrip("/").rsplit("/", 1)[-1].lower()
    if _suffix(name) in COMPRESSION:
        name = name[: -len(_suffix(name))]
    ext = _suffix(name)
    if ext in SUFFIX_FORMAT:
        return SUFFIX_FORMAT[ext]
    if not ext:
        return "text"
    raise EmbedJobError(f"{path}: cannot tell the format from the suffix {ext!r}; name it with --input-format "
                        f"({', '.join(INPUT_FORMATS)})")


def _hidden(rel_parts: tuple[str, ...] | list[str]) -> bool:
    return any(part.startswith((".", "_")) for part in rel_parts)


def _uri_files(raw: str) -> list[tuple[str, int, int]]:
    """(URI, size, mtime_ns) of a URI's file, or of the files under a URI prefix (a folder)."""
    from pyarrow import fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(raw)
    scheme = raw.split("://", 1)[0]
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.File:
        infos = [info]
    elif info.type == pafs.FileType.Directory:
        infos = sorted((i for i in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
                        if i.type == pafs.FileType.File
                        and not _hidden(i.path[len(root.rstrip("/")) + 1:].split("/"))), key=lambda i: i.path)
        if not infos:
            raise EmbedJobError(f"{raw}: the folder holds no input files")
    else:
        raise EmbedJobError(f"{raw}: no such input file or folder")
    return [(f"{scheme}://{i.path}", i.size, i.mtime_ns or 0) for i in infos]


def expand_inputs(inputs: list[Any], fmt: str | None, own: tuple[Path, ...] = ()) -> list[Source]:
    """The input files, folders expanded (sorted; hidden and ``_`` files left out); ``own`` (the job's
    output, shards and errors file) is left out of folders, so an output written inside an input folder
    is not read back as input on a rerun."""
    own = tuple(o.resolve() for o in own)
    out: list[Source] = []
    for raw in map(os.fspath, inputs):
        if raw == "-":
            raise EmbedJobError("embed reads files (it rereads them to resume), not stdin; save the texts to a file, "
                                "or use `embgemma encode -` for a few")
        if is_uri(raw):
            found = _uri_files(raw)
        else:
            p = Path(raw).expanduser()
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.is_file() and not _hidden(f.relative_to(p).parts)
                               and not any(f.resolve() == o or o in f.resolve().parents for o in own))
                if not files:
                    raise EmbedJobError(f"{raw}: the folder holds no input files")
            elif p.is_file():
                files = [p]
            elif not p.exists():
                raise EmbedJobError(f"{raw}: no such input file or folder")
            else:
                raise EmbedJobError(f"{raw}: not a regular file")
            found = [(f.resolve(), (st := f.stat()).st_size, st.st_mtime_ns) for f in files]
        for path, size, mtime in found:
            kind = format_of(path, fmt)
            if kind == "parquet" and _suffix(path) in COMPRESSION:
                raise EmbedJobError(f"{path}: a compressed Parquet file; Parquet compresses inside, decompress it "
                                    "first")
            out.append(Source(path, kind, size, mtime))
    return out


def _open_raw(path: Path | str):
    if not is_uri(path):
        return open(path, "rb", buffering=1 << 20)  # noqa: SIM115
    from pyarrow import fs as pafs

    filesystem, p = pafs.FileSystem.from_uri(str(path))
    return io.BufferedReader(filesystem.open_input_stream(p, compression=None), 1 << 20)  # readline: Python's


def open_binary(path: Path | str) -> BinaryIO:
    """A binary stream of an input's bytes, decompressed by its suffix."""
    raw = _open_raw(path)
    if _suffix(path) not in COMPRESSION:
        return raw
    try:
        return _Decompressed(raw, _suffix(path))
    except BaseException:
        raw.close()
        raise


def parse_text_line(line: bytes) -> tuple:
    """(text, title, id, extras, reason) of one line of a text file, its newline already removed."""
    text = line.decode("utf-8", "surrogateescape")
    return (text, None, None, (), bad_utf8(text))


def parse_json_line(line: bytes, cols: Columns) -> tuple:
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

    def __init__(self, header: list[str], cols: Columns, path: Any) -> None:
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
            reason = bad_utf8(text)
        if reason is None and self.ii is not None and not rid:
            reason = f"empty {self.id_name!r}"
        return (text, title, rid if rid else None, tuple(get(i) for i in self.ki), reason)


# A row: (text, title, id, extras, reason or None, source index, row within the file); the id is None
# when ids are row numbers (the reader fills in the global row).
Row = tuple


class _RecordReader:
    """skip / read / close over one file's records: a subclass gives ``_next()`` (the next record, None at
    the end of the file) and ``_parse(record)`` (the row's fields); rows are numbered within the file."""

    f: Any
    index: int
    row: int

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
            out.append((*self._parse(rec), self.index, self.row))
            self.row += 1
        return out

    def close(self) -> None:
        self.f.close()


class _LineReader(_RecordReader):
    """Records are lines (bytes, newline kept); a UTF-8 BOM at the start of the file is dropped."""

    skip_blank = False  # blank lines are no records

    def __init__(self, src: Source, cols: Columns, index: int) -> None:
        self.f, self.cols, self.index, self.row, self.first = open_binary(src.path), cols, index, 0, True

    def _next(self) -> bytes | None:
        while True:
            line = self.f.readline()
            if not line:
                return None
            if self.first:
                self.first = False
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not self.skip_blank or line.strip():
                return line


class _TextReader(_LineReader):
    """One text a line (\\n or \\r\\n); the last line needs no newline; a UTF-8 BOM is dropped."""

    def _parse(self, line: bytes) -> tuple:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        return parse_text_line(line)


class _JsonlReader(_LineReader):
    """One JSON object a line; blank lines are no rows. A line that is not a JSON object, or lacks the
    text (or id) field, is a bad row, not a failed job."""

    skip_blank = True

    def _parse(self, line: bytes) -> tuple:
        return parse_json_line(line, self.cols)


class _CsvReader(_RecordReader):
    """CSV / TSV with a header row; every field is a string (CSV has no types); blank lines are no
    rows; an empty title is no title; a record with the wrong number of fields is a bad row."""

    def __init__(self, src: Source, cols: Columns, index: int) -> None:
        csv.field_size_limit(2**31 - 1)  # texts can be long; the default is 128 KiB
        self.path, self.index, self.row = src.path, index, 0
        self.f = io.TextIOWrapper(open_binary(src.path), encoding="utf-8-sig", errors="surrogateescape", newline="")
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

    def _parse(self, rec: list[str]) -> tuple:
        return self.columns.row(rec)


class _ParquetReader:
    """Reads the named columns a batch at a time; skipping seeks by row group."""

    def __init__(self, src: Source, cols: Columns, index: int) -> None:
        pq = pyarrow_parquet()
        self.path, self.cols, self.index = src.path, cols, index
        try:
            self.pf = pq.ParquetFile(src.path)  # a URI too: pyarrow opens it
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
        self.pf.close()


READERS = {"text": _TextReader, "jsonl": _JsonlReader, "csv": _CsvReader, "tsv": _CsvReader,
            "parquet": _ParquetReader}


def scan(src: Source, cols: Columns, index: int) -> int:
    """Rows in one input (for the progress bar and the shard count); checks its header on the way."""
    if src.fmt == "parquet":
        reader = _ParquetReader(src, cols, index)
        reader.close()
        return reader.total
    if src.fmt == "jsonl":
        with open_binary(src.path) as f:
            for line in f:
                if line.strip():
                    if line.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                        raise EmbedJobError(f"{src.path}: a JSON array, not JSON Lines (one object a line); convert "
                                            "it, e.g. jq -c '.[]' FILE > FILE.jsonl")
                    break
    reader = READERS[src.fmt](src, cols, index)
    try:
        n = 0
        while True:
            k = reader.skip(1 << 16)
            n += k
            if k < 1 << 16:
                return n
    finally:
        reader.close()


class InputReader:
    """The rows of all inputs in order, numbered from 0 across files; ids default to that number."""

    def __init__(self, sources: list[Source], cols: Columns) -> None:
        self.sources, self.cols = sources, cols
        self.i, self.cur, self.row = 0, None, 0

    def _reader(self):
        if self.cur is None and self.i < len(self.sources):
            self.cur = READERS[self.sources[self.i].fmt](self.sources[self.i], self.cols, self.i)
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


