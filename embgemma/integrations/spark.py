"""Apache Spark: embed a text column with a pandas UDF (one model per Python worker).

    >>> from pyspark.sql.functions import col
    >>> from embgemma.integrations.spark import embed_udf, embed_frames
    >>> embed = embed_udf(model="/models/embeddinggemma-300m")
    >>> df = df.withColumn("embedding", embed(col("text")))                # array<float>
    >>> out = embed_frames(df, model="/models/embeddinggemma-300m", id_column="doc_id")  # mapInPandas

``embed_udf`` is built on ``pyspark.ml.functions.predict_batch_udf``, which loads the model once per
Python worker (Spark reuses workers across tasks) and feeds it NumPy batches. A row that cannot be
embedded (missing / non-string text, a lone surrogate, empty text) gets a null embedding;
``with_errors=True`` returns ``struct<embedding, error>`` with the reason, and ``strict=True`` fails
the job instead. ``embed_frames`` (``mapInPandas``) returns id, passthrough columns, embedding and
``embedding_error``.

Engine threads default to ``spark.task.cpus`` (1 unless configured): with N cores per executor, Spark
runs N tasks (N Python workers, N model copies) of one thread each. On many-core executors, set
``spark.task.cpus`` to 2-8 so that fewer workers, each multithreaded, share the cores.

Types: float32 gives ``array<float>``; int8 / binary ``array<tinyint>``; uint8 / ubinary
``array<smallint>`` holding 0..255 (Spark has no unsigned byte).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from typing import Any

try:
    import pandas as pd
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import Column, DataFrame
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, ByteType, FloatType, ShortType, StringType, StructField, StructType
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"embgemma.integrations.spark needs PySpark, pandas and pyarrow ({e}): pip install \"embgemma[spark]\"") from e

import numpy as np

from ..jobs.embedder import BatchEmbedder, EmbedOptions, make_options

__all__ = ["embed_udf", "embed_frames", "embedding_type", "DEFAULT_UDF_BATCH_SIZE"]

#: Rows per ``predict`` call (predict_batch_udf's ``batch_size``) by default.
DEFAULT_UDF_BATCH_SIZE = 512


def embedding_type(precision: str = "float32") -> ArrayType:
    """Spark type of the embedding column for a precision."""
    element = {"float32": FloatType(), "int8": ByteType(), "binary": ByteType(),
               "uint8": ShortType(), "ubinary": ShortType()}[precision]
    return ArrayType(element, containsNull=False)


def _task_threads(options: EmbedOptions) -> int | None:
    if options.threads is not None:
        return options.threads
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.cpus()) if ctx is not None else None
    except Exception:  # older Spark, or not in a task
        return None


def _spark_values(emb: np.ndarray) -> np.ndarray:
    # Spark has no unsigned byte: uint8 goes out as smallint
    return emb.astype(np.int16) if emb.dtype == np.uint8 else emb


def _check_udf_batch(udf_batch_size: int | None) -> int:
    size = DEFAULT_UDF_BATCH_SIZE if udf_batch_size is None else udf_batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"udf_batch_size must be a positive integer, got {udf_batch_size!r}")
    return size


class EmbedUDF:
    """What ``embed_udf`` returns: call it on the text column (and the title column when
    ``title_column`` is set) to get the embedding column. ``.udf`` is the underlying
    ``predict_batch_udf`` (``struct<embedding, error>``)."""

    def __init__(self, udf, with_errors: bool, options: EmbedOptions) -> None:
        self.udf, self.with_errors, self.options = udf, with_errors, options

    def __call__(self, *cols: Column | str) -> Column:
        want = 2 if self.options.title_column else 1
        if len(cols) != want:
            raise TypeError(f"call with {'the text and the title column' if want == 2 else 'the text column'} "
                            f"({want} column{'s' if want > 1 else ''}), got {len(cols)}")
        r = self.udf(*cols)
        if self.with_errors:
            return r
        # one evaluation of the UDF: Spark extracts semantically equal Python UDF calls once
        return F.when(r["error"].isNull(), r["embedding"])

    def __repr__(self) -> str:
        return f"EmbedUDF({self.options!r}, with_errors={self.with_errors})"


def embed_udf(
    model: str | os.PathLike[str] | None = None,
    *,
    options: EmbedOptions | None = None,
    udf_batch_size: int | None = None,
    with_errors: bool = False,
    **option_kwargs: Any,
) -> EmbedUDF:
    """A column function embedding texts: ``df.withColumn("embedding", embed_udf(model=path)(col("text")))``.

    Args:
        model / **option_kwargs: as ``EmbedOptions`` (``prompt_name``, ``dim``, ``dtype``, ``precision``,
            ``ranges``, ``batch_size`` (texts per engine call), ``title_column`` (then call it with the
            text and the title column), ``allow_empty``, ``strict``, ``threads``), or ``options=``.
            The column names in the options are not used: the columns are the ones you pass.
        udf_batch_size: rows per predict call (default 512).
        with_errors: return ``struct<embedding, error>`` (error: why the row was not embedded, else
            null) instead of the embedding (null for such rows).
    """
    opts = make_options(model, options, option_kwargs)
    size = _check_udf_batch(udf_batch_size)
    emb_type = embedding_type(opts.precision)
    return_type = StructType([StructField("embedding", emb_type), StructField("error", StringType())])

    def make_predict_fn():
        embedder = BatchEmbedder(opts, threads=_task_threads(opts))
        embedder.model  # load once per Python worker (predict_batch_udf caches this function)

        def run(texts: np.ndarray, titles: np.ndarray | None) -> dict[str, np.ndarray]:
            res = embedder.embed_checked(texts, titles)
            return {"embedding": _spark_values(res.full()), "error": np.array(res.reasons, dtype=object)}

        if opts.title_column:
            def predict(texts: np.ndarray, titles: np.ndarray) -> dict[str, np.ndarray]:
                return run(texts, titles)
        else:
            def predict(texts: np.ndarray) -> dict[str, np.ndarray]:
                return run(texts, None)
        return predict

    udf = predict_batch_udf(make_predict_fn, return_type=return_type, batch_size=size)
    return EmbedUDF(udf, bool(with_errors), opts)


# ---------------------------------------------------------------------- mapInPandas

_CACHE: OrderedDict[str, BatchEmbedder] = OrderedDict()  # per Python worker: job key -> loaded embedder
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2  # a model is large; keep the last two jobs' models


def _cached_embedder(key: str, options: EmbedOptions) -> BatchEmbedder:
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is not None:
            _CACHE.move_to_end(key)
            return emb
    emb = BatchEmbedder(options, threads=_task_threads(options))
    emb.model
    with _CACHE_LOCK:
        _CACHE[key] = emb
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return emb


def embed_frames(
    df: DataFrame,
    model: str | os.PathLike[str] | None = None,
    *,
    options: EmbedOptions | None = None,
    output_column: str = "embedding",
    error_column: str = "embedding_error",
    **option_kwargs: Any,
) -> DataFrame:
    """``df.mapInPandas``: id, passthrough columns, ``embedding`` (null where invalid) and
    ``embedding_error`` (the reason, else null). Needs ``id_column`` (default ``"id"``); reads
    ``text_column`` / ``title_column``. The model is loaded once per Python worker and job.
    """
    if options is None and "id_column" not in option_kwargs:
        option_kwargs["id_column"] = "id"
    opts = make_options(model, options, option_kwargs)
    if opts.id_column is None:
        raise ValueError("embed_frames needs id_column (the column identifying each row); or add one with "
                         "pyspark.sql.functions.monotonically_increasing_id()")
    needed = list(dict.fromkeys([opts.id_column, opts.text_column] + ([opts.title_column] if opts.title_column else [])
                                + list(opts.passthrough)))
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the DataFrame (columns: {df.columns})")
    out_cols = list(dict.fromkeys([opts.id_column] + list(opts.passthrough)))
    schema = StructType(
        [df.schema[c] for c in out_cols]
        + [StructField(output_column, embedding_type(opts.precision)), StructField(error_column, StringType())]
    )
    key = uuid.uuid4().hex  # a new model cache entry per call, as predict_batch_udf does

    def embed_partition(frames):
        embedder = None
        for pdf in frames:
            if embedder is None:
                embedder = _cached_embedder(key, opts)
            titles = pdf[opts.title_column] if opts.title_column else None
            res = embedder.embed_checked(pdf[opts.text_column], titles)
            values = _spark_values(res.embeddings)
            col = np.full(len(pdf), None, dtype=object)
            for j, i in enumerate(np.flatnonzero(res.ok)):
                col[i] = values[j]
            out = pdf[out_cols].copy()
            out[output_column] = col
            out[error_column] = pd.Series(res.reasons, index=pdf.index, dtype=object)
            yield out

    return df.select(*needed).mapInPandas(embed_partition, schema)
