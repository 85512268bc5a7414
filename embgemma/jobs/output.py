"""Outputs of a corpus job: where its files go, how each is written (atomically), one shard's files,
and the final output assembled from the shards.

Outputs, by the path after ``-o``:

* ``OUT.parquet``: one Parquet file with ``id``, ``embedding`` (``fixed_size_list<float32 | int8 |
  uint8>[width]``) and the kept columns; rows that could not be embedded are left out.
* ``OUT.npy``: one ``(rows, width)`` array, row i = input row i; a row that could not be embedded is
  all zeros (the errors file names it).
* ``OUT/`` (ends in a slash, or is an existing folder): a Parquet dataset, ``part-000000.parquet`` ...
  one file per shard plus ``_manifest.json`` and ``_SUCCESS``; no final copy (the layout for big jobs).

A shard is written under a temporary name, fsynced and renamed into place only when complete, so a
shard file that exists is a finished shard. File outputs are assembled from the shards in
``OUT.parts/``, which is removed at the end. The Parquet files carry no timestamps, so the same rows
always give the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from .arrow import parquet_options, pyarrow_parquet, to_arrow_embeddings
from .reasons import EmbedJobError

#: rows per row group of a single-file Parquet output (about 30 MB of float32 768-wide vectors)
FINAL_ROW_GROUP = 10_000


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
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
    fsync_dir(path.parent)


def remove_temps(folder: Path, *names: str) -> None:
    """Temporary files a killed run left (``atomic_write``'s names): all in ``folder``, or those of ``names``."""
    if folder.is_dir():
        for pattern in [f".{n}.tmp-*" for n in names] or [".*.tmp-*"]:
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)


@dataclass
class Layout:
    """Where a job's files go (see the module docstring)."""

    kind: str  # "parquet" | "npy" | "dataset"
    out: Path
    errors_file: Path | None = None  # the errors list, where not the default beside the output

    @classmethod
    def from_arg(cls, raw: str) -> Layout:
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
        if self.errors_file is not None:
            return self.errors_file
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


def write_shard(lay: Layout, k: int, emb: np.ndarray, ok: np.ndarray, columns: dict[str, Any],
                errors: list[dict[str, Any]]) -> None:
    """One finished shard: its errors first, then its data file (whose existence marks the shard done).
    ``columns``: the id and kept columns (Arrow arrays, Parquet outputs); ``ok``: the rows embedded."""
    err_path = lay.shard_errors(k)
    if errors:
        err_path.parent.mkdir(exist_ok=True)
        lines = "".join(json.dumps(e) + "\n" for e in errors)
        atomic_write(err_path, lambda f: f.write(lines.encode("utf-8")))
    else:
        err_path.unlink(missing_ok=True)
    if lay.kind == "npy":
        atomic_write(lay.shard(k), lambda f: np.save(f, emb, allow_pickle=False))
        return
    import pyarrow as pa

    keep = tuple(c for c in columns if c != "id")
    table = pa.table({"id": columns["id"], "embedding": to_arrow_embeddings(emb), **{c: columns[c] for c in keep}})
    if not ok.all():
        table = table.filter(pa.array(ok))
    pq = pyarrow_parquet()
    atomic_write(lay.shard(k), lambda f: pq.write_table(table, f, row_group_size=max(len(table), 1),
                                                        **parquet_options(keep)))


def finalize(lay: Layout, n_shards: int, total: int, shard_size: int, width: int, dtype: Any,
             keep: tuple[str, ...]) -> int:
    """Assemble the output from the shards and merge the error lists; returns the number of errors."""
    if lay.kind == "npy":
        dtype = np.dtype(dtype)

        def write_npy(f: BinaryIO) -> None:
            # the header, then each shard's rows in turn: memory stays at one shard whatever the total
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                     "fortran_order": False, "shape": (total, width)})
            for k in range(n_shards):
                part = np.load(lay.shard(k), mmap_mode="r")
                want = (min(shard_size, total - k * shard_size), width)
                if part.shape != want or part.dtype != dtype:
                    raise EmbedJobError(f"{lay.shard(k)}: {part.shape} {part.dtype}, expected {want} {dtype}; pass "
                                        "--overwrite to start over")
                f.write(np.ascontiguousarray(part).tobytes())
                del part

        atomic_write(lay.out, write_npy)
    elif lay.kind == "parquet":
        pq = pyarrow_parquet()
        import pyarrow as pa

        schema = pq.read_schema(lay.shard(0))

        def write_parquet(f: BinaryIO) -> None:
            with pq.ParquetWriter(f, schema, **parquet_options(keep)) as w:
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

        atomic_write(lay.out, write_parquet)
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

        atomic_write(lay.errors, write_errors)
    else:
        lay.errors.unlink(missing_ok=True)
    if lay.kind == "dataset":
        shutil.rmtree(lay.shard_errors_dir, ignore_errors=True)
        atomic_write(lay.success, lambda f: None)
    else:
        shutil.rmtree(lay.work)
        fsync_dir(lay.out.parent)
    return n_err
