"""Batch embedding shared by ``embgemma embed`` and the Ray / Spark integrations.

One ``EmbedOptions`` says what to compute; a ``BatchEmbedder`` holds those options and loads the
model on first use, so it can be pickled to a Ray actor or a Spark worker before the (large) model
is loaded. Prompts and batching stay in ``EmbeddingGemma.encode`` / ``encode_document``; this module
only sorts out the rows that cannot be embedded, so that one bad row costs one error line, not the job.

Results do not depend on how rows are grouped into batches: the engine computes every row on its
own (no padding, no cross-row arithmetic), binary quantization is per value, and int8 / uint8 are
refused unless fixed ``ranges`` are given, since buckets computed from each batch would make a row's
bytes depend on its neighbours.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..prompts import DOCUMENT_PROMPT_NAMES
from ..quantization import PRECISIONS
from .reasons import missing, text_reason, title_reason

__all__ = ["BatchEmbedder", "BatchResult", "EmbedOptions", "make_options", "replace_options"]


def _positive_int(name: str, value: Any, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")
    return int(value)


@dataclass
class EmbedOptions:
    """What a batch job computes and from which columns.

    Args:
        model: model folder, GGUF file, Ollama name or Hugging Face id (as for ``EmbeddingGemma``).
        text_column: column holding the texts.
        id_column: column holding row ids (None: the row number, for the callers that number rows).
        title_column: column of document titles: the model card's ``title: {title} | text: `` prompt
            (``encode_document(texts, titles=...)``); a missing title is ``none``.
        prompt_name: a key of the model's prompt table (``"query"``, ``"Clustering"``, ...). None: the
            document prompt (what a corpus is embedded with for retrieval).
        prompt: a literal prompt instead of a named one ("" for none at all).
        dim: Matryoshka width (768, 512, 256, 128 for EmbeddingGemma); None: the full width.
        dtype: weights mode of the engine (``EmbeddingGemma(dtype=...)``): None, float32, bfloat16,
            int8, q8_0, q4_0.
        precision: output type: float32, int8 / uint8 (need ``ranges``), binary / ubinary (one bit per
            dimension, packed 8 per byte).
        ranges: int8 / uint8 only: a ``(2, dim)`` array (minimum, maximum per dimension) or the path of
            a ``.npy`` file holding one; see ``BatchEmbedder.calibrate``.
        batch_size: texts per engine call (None: the engine's default).
        threads: engine threads (None: the caller decides: a Ray actor's ``num_cpus``, a Spark task's
            ``spark.task.cpus``, else every core this process may use).
        normalize: L2-normalize the (possibly truncated) vectors.
        allow_empty: embed empty / whitespace-only texts (as the bare prompt) instead of reporting them.
        passthrough: input columns copied to the output beside id and embedding.
        strict: raise on the first invalid row instead of reporting it.
    """

    model: str
    text_column: str = "text"
    id_column: str | None = None
    title_column: str | None = None
    prompt_name: str | None = None
    prompt: str | None = None
    dim: int | None = None
    dtype: str | None = None
    precision: str = "float32"
    ranges: Any = None
    batch_size: int | None = None
    threads: int | None = None
    normalize: bool = True
    allow_empty: bool = False
    passthrough: tuple[str, ...] = field(default_factory=tuple)
    strict: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a model folder, GGUF file or model name (a non-empty str), got {self.model!r}")
        for name in ("text_column", "id_column", "title_column"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                raise ValueError(f"{name} must be a column name (non-empty str), got {v!r}")
        if not self.text_column:
            raise ValueError("text_column must be given")
        if isinstance(self.passthrough, str):
            self.passthrough = (self.passthrough,)
        self.passthrough = tuple(self.passthrough or ())
        for c in self.passthrough:
            if not isinstance(c, str) or not c:
                raise ValueError(f"passthrough must be column names, got {c!r}")
        reserved = {"id", "embedding", "embedding_error"} & set(self.passthrough)
        if reserved:
            raise ValueError(f"passthrough column(s) {sorted(reserved)} would collide with the output columns id / "
                             "embedding / embedding_error; rename them first")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a str, got {type(self.prompt).__name__}")
        if self.prompt_name is not None and (not isinstance(self.prompt_name, str) or not self.prompt_name):
            raise ValueError(f"prompt_name must be a prompt name (non-empty str), got {self.prompt_name!r}")
        if self.prompt is not None and self.prompt_name is not None:
            raise ValueError("give prompt_name or prompt, not both")
        if self.title_column is not None and (
            self.prompt is not None or (self.prompt_name is not None and self.prompt_name not in DOCUMENT_PROMPT_NAMES)
        ):
            raise ValueError(
                "title_column gives each text the document prompt with its title ('title: {title} | text: '); "
                f"it cannot be combined with prompt_name={self.prompt_name!r} / prompt={self.prompt!r}"
            )
        self.dim = _positive_int("dim", self.dim)
        self.batch_size = _positive_int("batch_size", self.batch_size)
        self.threads = _positive_int("threads", self.threads)
        if self.dtype is not None:
            from ..loading import resolve_dtype

            resolve_dtype(self.dtype)  # raises ValueError naming the valid modes
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("normalize", "allow_empty", "strict"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.precision in ("int8", "uint8"):
            if self.ranges is None:
                raise ValueError(
                    f"precision={self.precision!r} needs ranges: a (2, dim) minimum / maximum per dimension, or a .npy "
                    "file holding one (BatchEmbedder.calibrate(sample_texts) computes it from a sample). Buckets "
                    "taken from each batch would make a row's bytes depend on the rows batched with it. "
                    "binary / ubinary need no ranges."
                )
            self.ranges = _load_ranges(self.ranges, self.dim)
        elif self.ranges is not None:
            raise ValueError(f"ranges apply to precision int8 / uint8, not {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["ranges"], np.ndarray):
            d["ranges"] = d["ranges"].tolist()
        d["passthrough"] = list(d["passthrough"])
        return d


def _load_ranges(ranges: Any, dim: int | None) -> np.ndarray:
    if isinstance(ranges, (str, os.PathLike)):
        try:
            arr = np.load(ranges, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"ranges: cannot read {os.fspath(ranges)!r} as a .npy array: {e}") from e
    else:
        arr = np.asarray(ranges)
    if arr.ndim != 2 or arr.shape[0] != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"ranges must be a numeric array of shape (2, dim) (minimum row, maximum row), got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or (arr[0] > arr[1]).any():
        raise ValueError("ranges must be finite with minimum <= maximum in every dimension")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"ranges cover {arr.shape[1]} dimensions but dim={dim}")
    return arr


class BatchResult(NamedTuple):
    """``embeddings`` holds one row per valid input (in input order); ``ok`` marks those inputs and
    ``reasons[i]`` says why input ``i`` was not embedded (None where it was)."""

    embeddings: np.ndarray
    ok: np.ndarray
    reasons: list[str | None]

    def full(self, fill: int | float = 0) -> np.ndarray:
        """One row per input; rows of invalid inputs hold ``fill``."""
        out = np.full((len(self.ok),) + self.embeddings.shape[1:], fill, dtype=self.embeddings.dtype)
        out[self.ok] = self.embeddings
        return out


def _as_list(values: Any) -> list[Any]:
    """A Python list from a list, NumPy array, pandas Series or Arrow array / chunked array."""
    if isinstance(values, list):
        return values
    if isinstance(values, str):
        raise TypeError("expected a column of texts, got a single str; wrap it in a list")
    if hasattr(values, "to_pylist"):  # pyarrow
        return values.to_pylist()
    if isinstance(values, np.ndarray):
        return values.tolist() if values.dtype != object else list(values)
    if hasattr(values, "to_numpy"):  # pandas Series: keeps None / NaN / NA as they are
        return list(values.to_numpy(dtype=object))
    return list(values)



def make_options(model: Any, options: EmbedOptions | None, kwargs: dict[str, Any]) -> EmbedOptions:
    """The integrations' two spellings, ``options=EmbedOptions(...)`` or ``model=`` plus keyword options."""
    if options is not None:
        if not isinstance(options, EmbedOptions):
            raise TypeError(f"options must be an embgemma EmbedOptions, got {type(options).__name__}")
        if model is not None or kwargs:
            raise ValueError("give options= or model= with keyword options, not both")
        return options
    if model is None:
        raise ValueError("model is required: a model folder, GGUF file or model name")
    return EmbedOptions(model=model, **kwargs)

class BatchEmbedder:
    """Embeds columns of texts with ``EmbedOptions``; the model loads on first use (once).

    Picklable until loaded and after (the model is dropped and reloaded on the other side), so it can
    be shipped to Ray actors and Spark workers. ``threads`` overrides ``options.threads`` (a Ray actor
    passes its ``num_cpus``).
    """

    def __init__(self, options: EmbedOptions, threads: int | None = None) -> None:
        if not isinstance(options, EmbedOptions):
            raise TypeError(f"options must be an EmbedOptions, got {type(options).__name__}")
        self.options = options
        self.threads = _positive_int("threads", threads) if threads is not None else options.threads
        self._model = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]
        self.threads = state["threads"]
        self._model = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BatchEmbedder({self.options!r}, threads={self.threads}, loaded={self._model is not None})"

    # ------------------------------------------------------------------ model

    @property
    def model(self):
        """The ``EmbeddingGemma``, loaded (and checked against the options) on first access."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):
        from ..model import EmbeddingGemma

        o = self.options
        m = EmbeddingGemma(o.model, threads=self.threads, dtype=o.dtype)
        full = m.get_sentence_embedding_dimension()
        if o.dim is not None and o.dim > full:
            raise ValueError(f"dim={o.dim} is wider than the model's {full} dimensions")
        if o.prompt_name is not None and o.prompt_name not in m.prompts:
            raise ValueError(
                f"unknown prompt_name {o.prompt_name!r}; this model's prompts are: {', '.join(map(repr, m.prompts))}"
            )
        if o.ranges is not None and o.ranges.shape[1] != (o.dim or full):
            raise ValueError(f"ranges cover {o.ranges.shape[1]} dimensions but the output has {o.dim or full}")
        return m

    @property
    def dim(self) -> int:
        """Width of the float vectors (the Matryoshka width)."""
        return self.options.dim or self.model.get_sentence_embedding_dimension()

    @property
    def output_width(self) -> int:
        """Values per output row: ``dim``, or ``ceil(dim / 8)`` bytes for binary / ubinary."""
        return -(-self.dim // 8) if self.options.precision.endswith("binary") else self.dim

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype({"float32": np.float32, "int8": np.int8, "uint8": np.uint8,
                         "binary": np.int8, "ubinary": np.uint8}[self.options.precision])

    # ------------------------------------------------------------------ rows

    def validate(self, texts: Any, titles: Any = None) -> tuple[np.ndarray, list[str | None]]:
        """``(ok, reasons)``: which rows can be embedded and why the others cannot (None where ok).

        Invalid: not a str (None, NaN, numbers, bytes), a lone surrogate, empty or whitespace-only
        unless ``allow_empty``; a title that is neither a str nor missing, or has a lone surrogate.
        """
        texts = _as_list(texts)
        reasons = [text_reason(t, self.options.allow_empty) for t in texts]
        if titles is not None:
            titles = _as_list(titles)
            if len(titles) != len(texts):
                raise ValueError(f"{len(titles)} titles for {len(texts)} texts")
            reasons = [r if r is not None else title_reason(t) for r, t in zip(reasons, titles)]
        ok = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
        return ok, reasons

    def embed(self, texts: Any, titles: Any = None) -> np.ndarray:
        """Embeddings of valid texts as ``(n, output_width)`` of ``output_dtype``; raises on an invalid one."""
        o = self.options
        texts = _as_list(texts)
        m = self.model
        kw: dict[str, Any] = {
            "normalize_embeddings": o.normalize,
            "truncate_dim": o.dim,
            "precision": o.precision,
            "ranges": o.ranges,
            "show_progress_bar": False,
        }
        if o.batch_size is not None:
            kw["batch_size"] = o.batch_size
        if not texts:
            return np.zeros((0, self.output_width), dtype=self.output_dtype)
        if o.prompt is not None:
            out = m.encode(texts, prompt=o.prompt, **kw)
        elif o.prompt_name is not None and o.title_column is None:
            out = m.encode(texts, prompt_name=o.prompt_name, **kw)
        else:
            if titles is not None:
                titles = [None if missing(t) else t for t in _as_list(titles)]
            out = m.encode_document(texts, titles=titles, **kw)
        return out

    def embed_checked(self, texts: Any, titles: Any = None) -> BatchResult:
        """Validate, then embed the valid rows. With ``strict`` the first invalid row raises ``ValueError``.

        A row the engine itself refuses (e.g. a token the model has no embedding for) is found by
        splitting the batch and reported like any other invalid row."""
        texts = _as_list(texts)
        if titles is not None:
            titles = _as_list(titles)
        ok, reasons = self.validate(texts, titles)
        if self.options.strict and not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"row {i}: {reasons[i]} (strict mode; drop strict to report such rows instead)")
        idx = np.flatnonzero(ok)
        emb = np.zeros((len(texts), self.output_width), dtype=self.output_dtype)
        self._embed_into(emb, idx, texts, titles, ok, reasons)
        return BatchResult(emb[ok], ok, reasons)

    def _embed_into(self, emb, idx, texts, titles, ok, reasons) -> None:
        if idx.size == 0:
            return
        sub_t = [texts[i] for i in idx]
        sub_ti = None if titles is None else [titles[i] for i in idx]
        try:
            emb[idx] = self.embed(sub_t, sub_ti)
        except ValueError as e:
            if self.options.strict:
                raise
            if idx.size == 1:
                ok[idx[0]] = False
                reasons[idx[0]] = f"refused by the model: {_strip_index(str(e))}"
                return
            half = idx.size // 2
            self._embed_into(emb, idx[:half], texts, titles, ok, reasons)
            self._embed_into(emb, idx[half:], texts, titles, ok, reasons)

    def calibrate(self, sample_texts: Any, titles: Any = None) -> np.ndarray:
        """int8 / uint8 ``ranges`` from a sample: the per-dimension minimum and maximum of its float32
        embeddings under these options (save with ``np.save`` and pass as ``ranges``)."""
        texts = _as_list(sample_texts)
        probe = BatchEmbedder(replace_options(self.options, precision="float32", ranges=None), threads=self.threads)
        probe._model = self._model
        res = probe.embed_checked(texts, titles)
        if res.embeddings.shape[0] < 2:
            raise ValueError("calibrate needs at least 2 valid texts (a few thousand representative ones is better)")
        return np.vstack((res.embeddings.min(axis=0), res.embeddings.max(axis=0))).astype(np.float32)


def replace_options(options: EmbedOptions, **changes: Any) -> EmbedOptions:
    """A copy of ``options`` with ``changes``, checked again."""
    return dataclasses.replace(options, **changes)


def _strip_index(msg: str) -> str:
    # encode numbers texts within its call ("text 0 contains ..."); that index means nothing to the caller
    return msg[7:] if msg.startswith("text 0 ") else msg
