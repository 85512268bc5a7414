"""Ray Data: embed a ``Dataset`` with a pool of actors, each loading the model once; and the
``embgemma embed --engine ray`` job.

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

``run_embed_job`` is the whole ``embgemma embed --engine ray`` job: the local engine's job (same
inputs, outputs, shards, manifest: embgemma.jobs) with each shard's texts embedded by a pool of
actors, several shards in flight. The driver reads the inputs and writes the shards, so a killed
driver's job resumes where it stopped, as the local engine's does.

Faults: an actor that dies is restarted by Ray and the batch it held is run again (Ray Data's
defaults for actor pools, ``max_restarts=-1`` / ``max_task_retries=-1``, which this module keeps
and gives the job's actors too); a batch's rows are returned once, by the call that completes, so
nothing is lost or duplicated.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import pyarrow as pa
    import ray
    import ray.data
    from ray.util import ActorPool
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"embgemma.integrations.ray needs Ray Data and pyarrow ({e}): pip install \"embgemma[ray]\"") from e

import numpy as np

from ..jobs.arrow import to_arrow_embeddings
from ..jobs.embedder import BatchEmbedder, BatchResult, EmbedOptions, make_options, replace_options
from ..jobs.inputs import expand_inputs
from ..jobs.output import Layout
from ..jobs.reasons import EmbedJobError
from ..jobs.shards import DEFAULT_SHARD_SIZE, StrictStop, check_mix, run_job, take_results

__all__ = ["EmbedOptions", "RayEmbedder", "embed_dataset", "run_embed_job", "default_sizing", "ActorCompute"]

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

    def _compute(self, batch: Any):
        """Embeddings (Arrow, nulls where invalid) and reasons for one batch."""
        o = self.options
        res = self.embedder.embed_checked(self._column(batch, o.text_column),
                                          self._column(batch, o.title_column) if o.title_column else None)
        return to_arrow_embeddings(res.full(), res.ok), pa.array(res.reasons, type=pa.string())

    def embed_checked(self, texts: list[Any], titles: list[Any] | None = None) -> BatchResult:
        """``BatchEmbedder.embed_checked`` on this actor's model (what the ``embed --engine ray`` job calls)."""
        return self.embedder.embed_checked(texts, titles)

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


def _map_batch_size(value: Any) -> int:
    size = DEFAULT_MAP_BATCH_SIZE if value is None else value
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"map_batch_size must be a positive integer, got {value!r}")
    return size


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
    batch = _map_batch_size(map_batch_size)
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


# ---------------------------------------------------------------------- the embed job


class ActorCompute:
    """The ``embed --engine ray`` job's compute (see embgemma.jobs.shards): each shard's texts go in
    batches of ``map_batch_size`` rows to a pool of actors (``actor_class``, a ``RayEmbedder``) and come
    back in order. Ray starts, and the actors load the model, at the first shard to compute: a finished
    job's rerun needs no cluster."""

    def __init__(self, options: EmbedOptions, *, address: str | None = None, num_actors: int | None = None,
                 cpus_per_actor: int | None = None, map_batch_size: int | None = None,
                 actor_class: type[RayEmbedder] | None = None) -> None:
        batch = _map_batch_size(map_batch_size)
        self.options = replace_options(options, strict=False)  # strict: the job's, with global row numbers
        self.address, self.num_actors, self.cpus_per_actor = address, num_actors, cpus_per_actor
        self.batch, self.actor_class = batch, actor_class or RayEmbedder
        self.pool: ActorPool | None = None
        self.actors: list[Any] = []
        self.started_ray = False
        self.window = 1
        self.queue: deque[tuple[Any, list[list[int]]]] = deque()

    def _start(self, shard_size: int) -> None:
        if not ray.is_initialized():
            ray.init(address=self.address)
            self.started_ray = True
        cpus, n = default_sizing(_cluster_cpus(), self.cpus_per_actor or self.options.threads, self.num_actors)
        actor = ray.remote(self.actor_class).options(num_cpus=cpus, max_restarts=-1, max_task_retries=-1)
        self.actors = [actor.remote(options=self.options, threads=cpus) for _ in range(n)]
        self.pool = ActorPool(self.actors)
        # shards in flight: enough batches to keep every actor busy with one more queued
        self.window = max(2, -(-2 * n // -(-shard_size // self.batch)))

    def submit(self, job: Any, shard: Any) -> None:
        if self.pool is None:
            self._start(job.shard_size)
        chunks = [shard.cand[s : s + self.batch] for s in range(0, len(shard.cand), self.batch)]
        for idx in chunks:
            self.pool.submit(lambda a, v: a.embed_checked.remote(*v), (shard.texts(idx), shard.titles(job, idx)))
        self.queue.append((shard, chunks))

    def pending(self) -> int:
        return len(self.queue)

    def next(self, job: Any, progress: Any) -> Any:
        shard, chunks = self.queue.popleft()
        for idx in chunks:
            take_results(job, shard, idx, self.pool.get_next(), progress)
        return shard

    def close(self) -> None:
        """Stop the actors (and the Ray this started); results still in flight are dropped."""
        self.queue.clear()
        for a in self.actors:
            ray.kill(a)
        self.actors, self.pool = [], None
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
        self.started_ray = False


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
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """``embgemma embed --engine ray``: embed files on a Ray cluster, resumably.

    Args:
        inputs: files or folders, or URIs such as ``s3://bucket/docs/`` (see docs/scale-out.md for the
            formats); read by this process (the driver), which sends the texts to the actors.
        output: ``OUT.parquet`` (``id``, ``embedding``, the ``options.passthrough`` columns; valid rows
            only, in input order), ``OUT.npy`` (row i = input row i) or ``OUT/`` (a Parquet dataset, one
            file per shard), as ``embgemma embed -o`` takes it.
        options: the job's ``EmbedOptions``; ``strict`` stops at the first row that cannot be embedded
            (``ValueError`` naming its row, id and file; a job stopped before its first shard leaves no
            files).
        address: the Ray cluster (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``); None: the running
            Ray, else ``RAY_ADDRESS``, else a local Ray started for the job and shut down after it.
        errors_output: JSON Lines ``{"row", "id", "file", "file_row", "reason"}``, one per row not embedded
            (default ``OUTPUT.errors.jsonl``); written only when there are such rows.
        shard_size: rows per shard (the work a killed driver can lose); part of the job: a rerun with the
            same arguments resumes it (``overwrite=True`` starts over).
        input_format, num_actors, cpus_per_actor, map_batch_size, actor_class: the format of every input
            (default: by suffix) and the actor pool, as for ``embed_dataset``.

    Returns ``{"rows", "embedded", "errors", "computed", "seconds", "output", "errors_output"}``.
    """
    layout = Layout.from_arg(os.fspath(output))
    if errors_output is not None:
        layout.errors_file = Path(errors_output).expanduser().absolute()
    sources = expand_inputs(list(inputs) if not isinstance(inputs, (str, os.PathLike)) else [inputs],
                            input_format, (layout.out, layout.work, layout.errors))
    structured = check_mix(sources)
    if not structured:
        given = [n for n in ("id_column", "title_column") if getattr(options, n)] + (
            ["passthrough"] if options.passthrough else [])
        if given or options.text_column != "text":
            raise EmbedJobError(f"{', '.join(given) or 'text_column'}: plain-text inputs have no columns (one text a "
                                "line)")
    compute = ActorCompute(options, address=address, num_actors=num_actors, cpus_per_actor=cpus_per_actor,
                           map_batch_size=map_batch_size, actor_class=actor_class)
    try:
        stats = run_job(layout, sources, replace_options(options, strict=False), structured=structured,
                        shard_size=shard_size, strict=options.strict, quiet=quiet, overwrite=overwrite,
                        compute=compute)
    except StrictStop as e:
        if layout.kind != "dataset" and not any(layout.work.glob("shard-*.*")):
            shutil.rmtree(layout.work, ignore_errors=True)  # nothing finished: leave nothing behind
        x = e.args[0]
        raise ValueError(f"row {x['row']} (id {x['id']!r}, {x['file']} row {x['file_row']}): {x['reason']} "
                         "(strict mode; without it such rows go to the errors file)") from None
    return {**stats, "output": str(layout.out), "errors_output": str(layout.errors) if stats["errors"] else None}
