"""Arrow for corpus jobs: the embedding column's type, the id and kept columns' types, and the
Parquet settings every shard and output file is written with."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def pyarrow_parquet():
    """``pyarrow.parquet``, or an ImportError naming the extra to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet input and output need pyarrow: pip install 'embgemma[parquet]'") from None
    return pq


def embedding_arrow_type(width: int, dtype: np.dtype | str):
    """``fixed_size_list<element: T>[width]`` for an embedding column."""
    import pyarrow as pa

    return pa.list_(pa.from_numpy_dtype(np.dtype(dtype)), int(width))


def to_arrow_embeddings(embeddings: np.ndarray, valid: np.ndarray | None = None):
    """A ``pyarrow.FixedSizeListArray`` with one list per row of a 2-D array (no copy of the values).

    ``valid`` (bool per row) makes the other rows null; their values are kept in the buffer but unseen.
    """
    import pyarrow as pa

    arr = np.ascontiguousarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows, width), got shape {arr.shape}")
    n, width = arr.shape
    values = pa.array(arr.reshape(-1))
    typ = embedding_arrow_type(width, arr.dtype)
    if valid is None or bool(np.all(valid)):
        return pa.FixedSizeListArray.from_arrays(values, type=typ)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (n,):
        raise ValueError(f"valid must have one flag per row ({n}), got shape {valid.shape}")
    bitmap = pa.array(valid, type=pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(typ, n, [bitmap], null_count=int(n - valid.sum()), children=[values])


def parquet_options(keep: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Fixed settings, no timestamps: the same rows always give the same bytes. No dictionary pages and
    statistics for the embedding (floats; neither helps), zstd for all."""
    return {"compression": "zstd", "use_dictionary": list(keep), "write_statistics": ["id", *keep]}


def declared_types(fmt: str, path: Any, id_column: str | None, keep: tuple[str, ...]) -> dict[str, Any]:
    """Output types of id and kept columns where the first input (of format ``fmt``) says them; None:
    inferred from the first shard. CSV fields are strings; Parquet columns keep their types."""
    import pyarrow as pa

    names = (["id"] if id_column is not None else []) + list(keep)
    if fmt in ("csv", "tsv"):
        types = dict.fromkeys(names, pa.string())
    elif fmt == "parquet":
        schema = pyarrow_parquet().ParquetFile(path).schema_arrow
        types = {n: schema.field(id_column if n == "id" else n).type for n in names}
    else:
        types = dict.fromkeys(names)
    if id_column is None:
        types["id"] = pa.int64()
    return types


def infer_type(values: list[Any]):
    """The Arrow type of a column's values (string when they have none in common)."""
    import pyarrow as pa

    try:
        t = pa.array([v for v in values if v is not None]).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return pa.string()
    return pa.string() if pa.types.is_null(t) else t


def fit(name: str, values: list[Any], typ) -> tuple[Any, dict[int, str]]:
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


def jsonable(v: Any) -> Any:
    """A value for an errors-file line: JSON's own types as they are, anything else as its str."""
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)
