"""Ray Data: embed a ``Dataset`` with a pool of actors, each loading the model once.

    >>> import ray
    >>> from embgemma.integrations.ray import embed_dataset
    >>> ds = ray.data.read_parquet("s3://bucket/docs/")
    >>> ds = embed_dataset(ds, model="/models/embeddinggemma-300m", text_column="body")
    >>> ds.write_parquet("s3://bucket/embeddings/")

or, with Ray's own API::

    ds.map_batches(RayEmbedder, fn_constructor_kwargs={"model": path, "threads": 4}, num_cpus=4,
                   batch_size=512, batch_format="pyarrow",
                   compute=ray.data.ActorPoolStrategy(min_size=1, max_size=8))

Each output batch gains ``embedding`` (an Arrow ``fixed_size_list<float>[dim]``, or int8 / uint8 per
``precision``; null for a row that cannot be embedded) and ``embedding_error`` (null, or why the
row was not embedded: missing / non-string text, lone surrogate, empty text). ``strict=True``
fails the job on such a row instead.

``run_embed_job`` is the whole ``embgemma embed --engine ray`` job: read files, embed, write one
Parquet file and an errors file, rows in input order.

Faults: Ray Data restarts an actor that dies and re-runs the batch it held (its defaults for actor
pools, ``max_restarts=-1`` / ``max_task_retries=-1``, which this module keeps); a batch's rows are
returned once, by the call that completes, so nothing is lost or duplicated.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import pyarrow as pa
    import ray
    import ray.data
    from ray.data.datasource import FileBasedDatasource
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"embgemma.integrations.ray needs Ray Data and pyarrow ({e}): pip install \"embgemma[ray]\"") from e

import numpy as np

from .._batch import BatchEmbedder, EmbedOptions, make_options, _text_reason, _title_reason, to_arrow_embeddings
from ..embed import CsvColumns, _Columns, _jsonable, parse_json_line, parse_text_line
from ..embed import _fit as _fit_typed

__all__ = ["EmbedOptions", "RayEmbedder", "embed_dataset", "iter_embedded_batches", "read_inputs", "run_embed_job", "default_sizing"]

#: Rows per ``map_batches`` call by default: large enough that the engine's length sorting has
#: material to work with and Ray's per-call overhead vanishes, small enough that a retried batch
#: costs seconds, not minutes.
DEFAULT_MAP_BATCH_SIZE = 512



def _assigned_cpus() -> int | None:
    """CPUs Ray reserved for this actor / task (None outside a Ray worker or when none were)."""
    try:
        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # the driver (an AssertionError), or not connected
        return None
    return max(1, int(math.floor(cpus + 1e-9))) if cpus else None


class RayEmbedder:
    """Callable class for ``Dataset.map_batches``: one model per actor, loaded in the constructor.

    Args:
        model / **options: as ``EmbedOptions`` (``text_column``, ``title_column``, ``prompt_name``, ``dim``,
            ``dtype``, ``precision``, ``ranges``, ``batch_size`` (texts per engine call), ``strict``, ...);
            or ``options=`` an ``EmbedOptions``.
        threads: engine threads; default ``options.threads``, else the ``num_cpus`` Ray reserved for the
            actor (Ray does not pin actors to cores, so every core of the node would be used otherwise).
        output_column / error_column: names of the added columns.

    A batch may be a ``pyarrow.Table``, a ``pandas.DataFrame`` or a dict of NumPy arrays; the same
    kind comes back with the two columns added (Arrow arrays in a dict, an Arrow-backed column in
    pandas, so null rows and the fixed-size list type survive).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        options: EmbedOptions | None = None,
        threads: int | None = None,
        output_column: str = "embedding",
        error_column: str = "embedding_error",
        **option_kwargs: Any,
    ) -> None:
        self.options = make_options(model, options, option_kwargs)
        if threads is None:
            threads = self.options.threads or _assigned_cpus()
        self.embedder = BatchEmbedder(self.options, threads=threads)
        self.output_column, self.error_column = output_column, error_column
        self.embedder.model  # load now: a bad model path fails the actor's start, not its first batch

    # the columns of a batch, whatever its kind
    def _column(self, batch: Any, name: str) -> list[Any]:
        cols = batch.column_names if isinstance(batch, pa.Table) else list(batch.keys() if isinstance(batch, Mapping) else batch.columns)
        if name not in cols:
            raise KeyError(f"column {name!r} is not in the batch (columns: {cols}); pass text_column= / title_column=")
        col = batch[name]
        if isinstance(batch, pa.Table):
            return col.to_pylist()
        if isinstance(batch, Mapping):
            return col.tolist() if isinstance(col, np.ndarray) and col.dtype != object else list(col)
        return list(col.to_numpy(dtype=object))

    def _compute(self, batch: Any, prior: list[str | None] | None = None):
        """Embeddings (Arrow, nulls where invalid) and reasons for one batch."""
        o = self.options
        texts = self._column(batch, o.text_column)
        titles = self._column(batch, o.title_column) if o.title_column else None
        n = len(texts)
        reasons: list[str | None] = [None] * n
        keep = np.ones(n, dtype=bool)
        if prior is not None:  # rows a reader already refused keep that reason
            keep = np.fromiter((r is None for r in prior), dtype=bool, count=n)
            reasons = list(prior)
        if o.strict and not keep.all():
            i = int(np.flatnonzero(~keep)[0])
            raise ValueError(f"row {i}: {reasons[i]} (strict mode; drop strict to report such rows instead)")
        idx = np.flatnonzero(keep)
        res = self.embedder.embed_checked([texts[i] for i in idx], None if titles is None else [titles[i] for i in idx])
        for j, i in enumerate(idx):
            reasons[i] = res.reasons[j]
        full = np.zeros((n, self.embedder.output_width), dtype=self.embedder.output_dtype)
        ok = np.zeros(n, dtype=bool)
        ok[idx[res.ok]] = True
        full[ok] = res.embeddings
        return to_arrow_embeddings(full, ok), pa.array(reasons, type=pa.string())

    def __call__(self, batch: Any) -> Any:
        emb, err = self._compute(batch)
        return _with_columns(batch, {self.output_column: emb, self.error_column: err})


def _with_columns(batch: Any, new: dict[str, pa.Array]) -> Any:
    if isinstance(batch, pa.Table):
        for name, arr in new.items():
            i = batch.schema.get_field_index(name)
            batch = batch.set_column(i, name, arr) if i >= 0 else batch.append_column(name, arr)
        return batch
    if isinstance(batch, Mapping):
        out = dict(batch)
        out.update(new)
        return out
    import pandas as pd

    batch = batch.copy(deep=False)
    for name, arr in new.items():
        batch[name] = pd.Series(pd.arrays.ArrowExtensionArray(arr), index=batch.index)
    return batch


def default_sizing(total_cpus: float, cpus_per_actor: int | None = None, num_actors: int | None = None) -> tuple[int, int]:
    """``(cpus_per_actor, max_actors)`` for a cluster with ``total_cpus``.

    An actor gets 4 cores (fewer on small machines: half of them, at least 1): the engine's threads
    scale well within a batch up to a few cores, while each actor holds its own copy of the weights
    (1.2 GB float32, 0.3 GB int8), so one actor per core would multiply memory for little gain.
    """
    total = max(1, int(total_cpus))
    if cpus_per_actor is None:
        cpus_per_actor = max(1, min(4, total // 2))
    if num_actors is None:
        num_actors = max(1, total // cpus_per_actor)
    return int(cpus_per_actor), int(num_actors)


def _cluster_cpus() -> float:
    if not ray.is_initialized():
        ray.init()
    return float(ray.cluster_resources().get("CPU", 1))


def embed_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str] | None = None,
    *,
    options: EmbedOptions | None = None,
    num_actors: int | None = None,
    cpus_per_actor: int | None = None,
    map_batch_size: int | None = None,
    output_column: str = "embedding",
    error_column: str = "embedding_error",
    actor_class: type[RayEmbedder] | None = None,
    **option_kwargs: Any,
) -> ray.data.Dataset:
    """``ds`` with ``embedding`` and ``embedding_error`` columns added (lazily, as Ray Data does).

    Args:
        model / **option_kwargs: as ``EmbedOptions`` (``text_column="text"``, ``title_column``,
            ``prompt_name``, ``dim``, ``precision``, ``strict``, ...), or ``options=``.
        num_actors: a fixed pool of this many actors; default an autoscaling pool of 1 to
            ``cluster CPUs // cpus_per_actor``.
        cpus_per_actor: ``num_cpus`` of each actor and its engine threads (default: ``options.threads``,
            else 4, or half the CPUs on machines with fewer than 8).
        map_batch_size: rows per ``map_batches`` call (default 512).
        actor_class: a ``RayEmbedder`` subclass to run instead.
    """
    opts = make_options(model, options, option_kwargs)
    cpus, actors = default_sizing(_cluster_cpus(), cpus_per_actor or opts.threads, num_actors)
    compute = (ray.data.ActorPoolStrategy(size=actors) if num_actors is not None
               else ray.data.ActorPoolStrategy(min_size=1, max_size=actors))
    batch = DEFAULT_MAP_BATCH_SIZE if map_batch_size is None else map_batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"map_batch_size must be a positive integer, got {map_batch_size!r}")
    extra = {}
    if "udf_modifying_row_count" in inspect.signature(ds.map_batches).parameters:  # Ray >= 2.5x: one row out per row in
        extra["udf_modifying_row_count"] = False
    return ds.map_batches(
        actor_class or RayEmbedder,
        fn_constructor_kwargs={"options": opts, "threads": cpus, "output_column": output_column,
                               "error_column": error_column},
        compute=compute,
        num_cpus=cpus,
        batch_size=batch,
        batch_format="pyarrow",
        **extra,
    )


# ---------------------------------------------------------------------- files -> rows
#
# The job reads its inputs as ``embgemma embed`` (the local engine) does, so both engines give the same
# rows, ids and reasons: text files are one row a line (blank lines too); JSON Lines one object a
# non-blank line; CSV / TSV have a header and string fields; Parquet is read by column. A row that
# cannot be read (bad UTF-8, bad JSON, a missing field) is a row with a reason, not a failed job.

_SUFFIX_FORMAT = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                  ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")
INPUT_FORMATS = ("text", "jsonl", "csv", "tsv", "parquet")
_READ_BLOCK_ROWS = 8192
# internal column names of the job's rows (the kept columns keep their own names)
_T, _TI, _ID, _WHY, _FILE = "__text", "__title", "__id", "__reason", "__file"


def _format_of(path: str, override: str | None = None) -> str:
    if override and override != "auto":
        if override not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {override!r}")
        return override
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    for c in _COMPRESSED:
        name = name.removesuffix(c)
    ext = os.path.splitext(name)[1]
    if ext in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[ext]
    if not ext:
        return "text"
    raise ValueError(f"{path}: cannot tell the format from the suffix {ext!r}; pass input_format= "
                     f"({', '.join(INPUT_FORMATS)})")


class _RowsDatasource(FileBasedDatasource):
    """The job's rows from files of one format: the text, title, id (None: the row number, filled in
    by the driver), kept columns, the reason a row cannot be embedded (or None), file and row in file."""

    def __init__(self, paths, *, input_format: str | None, options: EmbedOptions, block_rows: int = _READ_BLOCK_ROWS,
                 **kw):
        super().__init__(paths, **kw)
        o = options
        self._block_rows = block_rows
        self._input_format, self._allow_empty = input_format, o.allow_empty
        self._text, self._title, self._id, self._keep = o.text_column, o.title_column, o.id_column, list(o.passthrough)
        self._cols = _Columns(text=o.text_column, id=o.id_column, title=o.title_column, keep=tuple(o.passthrough))

    def _open_input_source(self, filesystem, path: str, **open_args):
        if _format_of(path, self._input_format) == "parquet":  # random access: read by row group
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        fmt = self._fmt = _format_of(path, self._input_format)
        rows: list[tuple] = []
        for row in getattr(self, f"_rows_{'csv' if fmt == 'tsv' else fmt}")(f, path):
            rows.append(row)
            if len(rows) >= self._block_rows:
                yield self._table(rows, path)
                rows = []
        if rows:
            yield self._table(rows, path)

    @staticmethod
    def _lines(f) -> Iterator[bytes]:
        data = f.readall()
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the newline ending the last line starts no row
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line

    def _rows_text(self, f, path):
        for line in self._lines(f):
            yield parse_text_line(line)

    def _rows_jsonl(self, f, path):
        for line in self._lines(f):
            if line.strip():
                yield parse_json_line(line, self._cols)

    def _rows_csv(self, f, path):
        import csv
        import io

        csv.field_size_limit(2**31 - 1)
        stream = io.TextIOWrapper(io.BytesIO(f.readall()), encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(stream, delimiter="\t" if self._fmt == "tsv" else ",")

        def records():
            try:
                for rec in reader:
                    if rec:
                        yield rec
            except csv.Error as e:
                raise ValueError(f"{path}, line {reader.line_num}: not readable as CSV ({e})") from None

        recs = records()
        header = next(recs, None)
        if header is None:
            raise ValueError(f"{path}: empty; a CSV input needs a header row naming its columns")
        columns = CsvColumns(header, self._cols, path)
        for rec in recs:
            yield columns.row(rec)

    def _rows_parquet(self, f, path):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(f)
        named = [c for c in dict.fromkeys([self._text, self._id, self._title, *self._keep]) if c is not None]
        missing = [c for c in named if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(map(repr, missing))} (columns: "
                             f"{', '.join(pf.schema_arrow.names[:20])})")
        self._parquet_types = {c: pf.schema_arrow.field(c).type for c in named}
        for batch in pf.iter_batches(batch_size=_READ_BLOCK_ROWS, columns=named, use_threads=False):
            cols = {c: batch.column(c).to_pylist() for c in named}
            for j in range(batch.num_rows):
                rid = cols[self._id][j] if self._id is not None else None
                reason = f"{self._id!r} is null" if self._id is not None and rid is None else None
                yield (cols[self._text][j], cols[self._title][j] if self._title else None, rid,
                       tuple(cols[k][j] for k in self._keep), reason)

    def _table(self, rows: list[tuple], path: str) -> pa.Table:
        """Arrow columns; a value Arrow cannot hold (a non-string text, a lone surrogate) is null with the
        reason the embedder would give."""
        n = len(rows)
        reasons = [r[4] for r in rows]
        texts: list[str | None] = []
        titles: list[str | None] = []
        for i, (text, title, _, _, _) in enumerate(rows):
            if reasons[i] is None:
                # values Arrow cannot carry as text get here the reason the embedder's own check would give
                if not isinstance(text, str) or _text_reason(text, True) is not None:
                    reasons[i] = _text_reason(text, self._allow_empty)
                elif self._title and _title_reason(title) is not None:
                    reasons[i] = _text_reason(text, self._allow_empty) or _title_reason(title)
            ok = reasons[i] is None
            texts.append(text if ok else None)
            titles.append(title if ok and isinstance(title, str) else None)
        cols: dict[str, Any] = {_T: pa.array(texts, type=pa.string())}
        if self._title:
            cols[_TI] = pa.array(titles, type=pa.string())
        fixed_types = getattr(self, "_parquet_types", {}) if self._fmt == "parquet" else {}
        string_cols = self._fmt in ("csv", "tsv")
        for name, values in ([(_ID, [r[2] for r in rows])] if self._id else []) + [
                (k, [r[3][j] for r in rows]) for j, k in enumerate(self._keep)]:
            src_name = self._id if name == _ID else name
            typ = fixed_types.get(src_name, pa.string() if string_cols else None)
            cols[name] = self._fit(src_name, values, typ, reasons)
        cols[_WHY] = pa.array(reasons, type=pa.string())
        cols[_FILE] = pa.array([path] * n, type=pa.string())
        return pa.table(cols)

    @staticmethod
    def _fit(name: str, values: list[Any], typ, reasons: list[str | None]) -> pa.Array:
        """The local engine's column fitting; with no type (JSON values), Arrow's inference, else a string
        column holding other values as their JSON text. A value that does not fit is null, with a reason."""
        if typ is None:
            try:
                return pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError, UnicodeError):
                typ = pa.string()
        arr, bad = _fit_typed(name, values, typ)
        for i, why in bad.items():
            if reasons[i] is None:
                reasons[i] = why
        return arr


def _expand(inputs: Sequence[str | os.PathLike[str]], input_format: str | None) -> list[tuple[str, str]]:
    """(path, format) per input file, folders expanded (sorted, hidden and ``_`` files left out, as the
    local engine does); URIs (``s3://...``) are passed to Ray as they are."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[tuple[str, str]] = []
    for raw in map(os.fspath, inputs):
        if "://" in raw:
            out.append((raw, _format_of(raw, input_format)))
            continue
        p = Path(raw).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file()
                           and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts))
            if not files:
                raise ValueError(f"{raw}: the folder holds no input files")
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"{raw}: no such input file or folder")
        for f in files:
            fmt = _format_of(str(f), input_format)
            if fmt == "parquet" and f.suffix.lower() in _COMPRESSED:
                raise ValueError(f"{f}: a compressed Parquet file; Parquet compresses inside, decompress it first")
            if fmt == "jsonl":
                _check_not_json_array(f)
            out.append((str(f.resolve()), fmt))
    if not out:
        raise ValueError("no inputs given")
    return out


def _check_not_json_array(path: Path) -> None:
    if path.suffix.lower() in _COMPRESSED:
        return
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                if line.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                    raise ValueError(f"{path}: a JSON array, not JSON Lines (one object a line); convert it, "
                                     "e.g. jq -c '.[]' FILE > FILE.jsonl")
                return


def read_inputs(inputs: Sequence[str | os.PathLike[str]], options: EmbedOptions,
                input_format: str | None = None, block_rows: int = _READ_BLOCK_ROWS) -> ray.data.Dataset:
    """The job's rows from files or folders, in the order given (see the module's notes on formats):
    columns ``__text``, ``__title``, ``__id``, the kept columns, ``__reason``, ``__file``.

    Formats by suffix, optionally compressed (.gz, .bz2, .xz, ...): .txt (one text a line), .jsonl /
    .ndjson / .json (JSON Lines), .csv / .tsv, .parquet; no suffix is text. ``input_format`` forces one.
    Paths must be readable by every Ray node (a shared file system), or be URIs such as ``s3://``.
    ``block_rows``: rows per block; a block goes to one actor at a time, so small blocks spread even a
    small input over the pool.
    """
    files = _expand(inputs, input_format)
    o = options
    if any(fmt == "text" for _, fmt in files):
        given = [n for n in ("id_column", "title_column") if getattr(o, n)] + (["passthrough"] if o.passthrough else [])
        if given or o.text_column != "text":
            raise ValueError(f"{', '.join(given) or 'text_column'}: plain-text inputs have no columns (one text a line)")
        if any(fmt != "text" for _, fmt in files):
            raise ValueError("plain-text inputs cannot be mixed with JSON Lines / CSV / Parquet inputs (they have no "
                             "columns); embed them in separate jobs")
    # one datasource over all files: its read tasks keep the files' order (a union of datasets would
    # interleave them), and each file is read by the reader its suffix names
    return ray.data.read_datasource(_RowsDatasource([p for p, _ in files], input_format=input_format, options=o,
                                                    block_rows=block_rows))


class _JobEmbedder(RayEmbedder):
    """RayEmbedder for the job's rows: honours the readers' reasons, drops the texts."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        emb, err = self._compute(batch, batch.column(_WHY).to_pylist())
        keep = [c for c in batch.column_names if c not in (_T, _TI, _WHY)]
        cols = {c: batch.column(c) for c in keep}
        cols["embedding"], cols[_WHY] = emb, err
        return pa.table(cols)


def _job_options(options: EmbedOptions) -> EmbedOptions:
    from .._batch import _replace

    return _replace(options, text_column=_T, title_column=_TI if options.title_column else None, id_column=None,
                    passthrough=(), strict=False)


def iter_embedded_batches(
    inputs: Sequence[str | os.PathLike[str]],
    options: EmbedOptions,
    *,
    address: str | None = None,
    input_format: str | None = None,
    num_actors: int | None = None,
    cpus_per_actor: int | None = None,
    map_batch_size: int | None = None,
    actor_class: type[RayEmbedder] | None = None,
) -> Iterator[tuple[pa.Table, list[dict[str, Any]]]]:
    """The job's results in input order, a batch at a time: ``(table, errors)``.

    ``table``: ``id`` (the id column, or the row number across all inputs from 0), ``embedding`` and the
    passthrough columns, valid rows only. ``errors``: ``{"row", "id", "file", "file_row", "reason"}`` per
    row not embedded (as ``embgemma embed`` writes them). Connects to ``address`` unless Ray is running.
    With ``options.strict`` the first such row raises ``ValueError`` naming it.
    """
    if not ray.is_initialized():
        ray.init(address=address)
    ctx = ray.data.DataContext.get_current()
    was = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # rows come back in input order: row numbers are positions
    try:
        # read everything first (Ray spills to disk when the object store fills): reading takes a few
        # percent of the time embedding does, and a fixed actor pool then gets every CPU without starving
        # the read tasks of the CPUs they need (they would wait forever behind actors holding them all)
        ds = read_inputs(inputs, options, input_format, block_rows=map_batch_size or DEFAULT_MAP_BATCH_SIZE).materialize()
        ds = embed_dataset(ds, options=_job_options(options), num_actors=num_actors, cpus_per_actor=cpus_per_actor,
                           map_batch_size=map_batch_size, actor_class=actor_class or _JobEmbedder)
        row = 0
        file_rows: dict[str, int] = {}
        for t in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            n = t.num_rows
            ids = pa.array(np.arange(row, row + n, dtype=np.int64)) if options.id_column is None else t.column(_ID)
            reasons = t.column(_WHY)
            files = t.column(_FILE).to_pylist()
            in_file = []
            for p in files:
                k = file_rows.get(p, 0)
                in_file.append(k)
                file_rows[p] = k + 1
            errors: list[dict[str, Any]] = []
            if reasons.null_count < n:
                id_list = ids.to_pylist()
                for i, why in enumerate(reasons.to_pylist()):
                    if why is not None:
                        errors.append({"row": row + i, "id": _jsonable(id_list[i]), "file": files[i],
                                       "file_row": in_file[i], "reason": why})
                if options.strict:
                    e = errors[0]
                    raise ValueError(f"row {e['row']} (id {e['id']!r}, {e['file']} row {e['file_row']}): {e['reason']} "
                                     "(strict mode; without it such rows go to the errors file)")
            out = pa.table({"id": ids, "embedding": t.column("embedding"),
                            **{c: t.column(c) for c in options.passthrough}})
            if errors:
                out = out.filter(reasons.is_null())
            row += n
            yield out, errors
    finally:
        ctx.execution_options.preserve_order = was


#: rows per row group of the output (about 30 MB of float32 768-wide vectors), as the local engine writes
_ROW_GROUP = 10_000


def run_embed_job(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: EmbedOptions,
    *,
    address: str | None = None,
    errors_output: str | os.PathLike[str] | None = None,
    input_format: str | None = None,
    num_actors: int | None = None,
    cpus_per_actor: int | None = None,
    map_batch_size: int | None = None,
    actor_class: type[RayEmbedder] | None = None,
) -> dict[str, Any]:
    """``embgemma embed --engine ray``: embed files on a Ray cluster into one Parquet file.

    Args:
        inputs: files or folders (see ``read_inputs``); every Ray node must be able to read them (a
            shared file system), or URIs such as ``s3://bucket/docs/``.
        output: the Parquet file to write on this machine: ``id`` (the id column, else the row number
            across all inputs from 0), ``embedding`` (``fixed_size_list<float32 | int8 | uint8>[width]``)
            and the ``options.passthrough`` columns; valid rows only, in input order. Written to a
            temporary name and renamed when complete.
        options: the job's ``EmbedOptions``; ``strict`` stops at the first row that cannot be embedded
            (``ValueError`` naming its row, id and file).
        address: the Ray cluster (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``); None: the running
            Ray, else ``RAY_ADDRESS``, else a local Ray started for the job and shut down after it.
        errors_output: JSON Lines ``{"row", "id", "file", "file_row", "reason"}``, one per row not embedded
            (default ``OUTPUT.errors.jsonl``); written only when there are such rows.
        input_format, num_actors, cpus_per_actor, map_batch_size, actor_class: see ``read_inputs`` and
            ``embed_dataset``.

    Returns ``{"rows", "embedded", "errors", "seconds", "output", "errors_output"}``.
    """
    import pyarrow.parquet as pq

    output = os.fspath(output)
    if output.endswith(".npy"):
        raise ValueError("the Ray engine writes one Parquet file; give an output ending in .parquet")
    errors_output = os.fspath(errors_output) if errors_output is not None else output + ".errors.jsonl"
    started_here = not ray.is_initialized()
    t0 = time.perf_counter()
    tmp, err_tmp = output + ".tmp", errors_output + ".tmp"
    writer = errors_file = None
    pending: list[pa.Table] = []
    rows = embedded = errors = 0
    pq_opts = {"compression": "zstd", "use_dictionary": list(options.passthrough),
               "write_statistics": ["id", *options.passthrough]}

    def flush(final: bool) -> None:
        nonlocal pending, writer
        t = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        while t.num_rows >= _ROW_GROUP or (final and t.num_rows):
            part = t.slice(0, _ROW_GROUP)
            if writer is None:
                writer = pq.ParquetWriter(tmp, part.schema, **pq_opts)
            writer.write_table(part.cast(writer.schema), row_group_size=_ROW_GROUP)
            t = t.slice(part.num_rows)
        pending = [t]

    try:
        for out, errs in iter_embedded_batches(inputs, options, address=address, input_format=input_format,
                                               num_actors=num_actors, cpus_per_actor=cpus_per_actor,
                                               map_batch_size=map_batch_size, actor_class=actor_class):
            rows += out.num_rows + len(errs)
            embedded += out.num_rows
            if errs:
                if errors_file is None:
                    errors_file = open(err_tmp, "w", encoding="utf-8")  # noqa: SIM115
                errors_file.writelines(json.dumps(e) + "\n" for e in errs)
                errors += len(errs)
            if pending and out.schema != pending[0].schema:
                try:
                    out = out.cast(pending[0].schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
                    raise ValueError(f"a column's type changed between batches ({e}); give the id and kept columns "
                                     "one type in every input") from e
            pending.append(out)
            if sum(p.num_rows for p in pending) >= _ROW_GROUP:
                flush(final=False)
        if pending:
            flush(final=True)
        if writer is None:  # no valid rows: still a readable, empty file
            schema = pending[0].schema if pending else pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32()))])
            writer = pq.ParquetWriter(tmp, schema, **pq_opts)
        writer.close()
        writer = None
        os.replace(tmp, output)
        if errors_file is not None:
            errors_file.close()
            errors_file = None
            os.replace(err_tmp, errors_output)
    finally:
        if writer is not None:
            writer.close()
        if errors_file is not None:
            errors_file.close()
        for leftover in (tmp, err_tmp):
            if os.path.exists(leftover):
                os.remove(leftover)
        if started_here and ray.is_initialized():
            ray.shutdown()
    return {"rows": rows, "embedded": embedded, "errors": errors, "seconds": time.perf_counter() - t0,
            "output": output, "errors_output": errors_output if errors else None}
