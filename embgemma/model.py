"""EmbeddingGemma: the user-facing model, shaped like sentence-transformers' SentenceTransformer.

This module is the API: arguments, prompts, and the order of the steps. Reading a model's files is
``loading``'s job, text to token ids ``tokenization``'s, engine calls ``batching``'s; the numbers are
computed by the C engine in ``embgemma._core``, which writes each embedding straight into the NumPy
array this module returns.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _core, auto_dtype
from ._hub import resolve_model_path
from .batching import CHUNK_CHARS, EncodeRun, check_batch_size
from .loading import (MAX_THREADS, default_threads, read_json, read_prompt_config, resolve_dtype, stored_quantized,
                      transformer_dir)
from .prompts import DOCUMENT_PROMPT_NAMES, document_prompt_with_title, resolve_prompt
from .quantization import PRECISIONS
from .tokenization import load_tokenizer, prepare_text, truncate_ids

logger = logging.getLogger("embgemma")

#: Matryoshka widths EmbeddingGemma was trained for (any prefix 1..768 is accepted).
MATRYOSHKA_DIMS = (768, 512, 256, 128)

class EmbeddingGemma:
    """An EmbeddingGemma model (google/embeddinggemma-300m or a fine-tune) running on embgemma's C engine.

    Args:
        model_name_or_path: a sentence-transformers model folder; a GGUF file (llama.cpp's
            ``gemma-embedding`` or Ollama's ``gemma3`` layout); an Ollama model name
            (``"embeddinggemma"``, ``"embeddinggemma:300m"``) in the local Ollama store; or a Hugging
            Face hub id (``"google/embeddinggemma-300m"``) found in the local Hugging Face cache.
        truncate_dim: default Matryoshka width of the output (768, 512, 256 or 128 for EmbeddingGemma).
        threads: worker threads per call (default: ``OMP_NUM_THREADS`` when set, else every core this
            process may use).
        max_seq_length: longest input in tokens, BOS and EOS included (default: the model's, 2048).
        cache_folder: Hugging Face cache to look hub ids up in (default: HF_HUB_CACHE / HF_HOME).
        dtype: how the transformer layers' weights are held and multiplied: ``None`` / ``"auto"`` (the
            default: the fastest mode whose fidelity on the real weights was measured bfloat16-class on
            this CPU's kernels, from the table in ``embgemma.auto_dtype``: bfloat16 on AMX CPUs, float32
            elsewhere today; a GGUF stored as Q8_0 / Q4_0 loads as stored; ``model.dtype`` says what it
            resolved to and ``model.dtype_note`` why), ``"float32"`` (exact: sentence-transformers'
            numbers, ask for it when you compare with them), ``"bfloat16"`` (half the weight memory;
            worst cosine >= 0.9999 to float32), ``"int16"`` (half; weights and activations as 16-bit
            integers on a 12-bit grid per block of 32, exact integer sums: more faithful than bfloat16, worst
            cosine 0.999999 on the real weights, and faster than float32 on AVX2), ``"int8"`` (a quarter; int8 weights and 8-bit
            activations per block of 32, the last 3 layers in the ISA's fastest float type; worst cosine >= 0.999), or
            ggml's ``"q8_0"`` / ``"q4_0"`` (a scale per 32 weights). Norms, attention, pooling and the
            Dense head stay float32 in every mode (docs/fidelity.md).
        dense_from: GGUF files only. A sentence-transformers folder of the model whose Dense modules
            complete a GGUF converted without them (such a GGUF cannot reproduce the model's
            embeddings and is refused otherwise). Its prompts are used when it has any.
        no_dense: GGUF files only. Accept a GGUF without Dense tensors and return the un-projected,
            normalized mean of its last hidden states (not EmbeddingGemma's embedding; warns).
        strip_whitespace: strip outer whitespace from ``prompt + text`` before tokenizing, as
            sentence-transformers 5 did. Default False: the text is tokenized as given, as
            sentence-transformers 6 does (a trailing newline or space changes the embedding).
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        truncate_dim: int | None = None,
        threads: int | None = None,
        max_seq_length: int | None = None,
        cache_folder: str | None = None,
        dtype: str | None = None,
        dense_from: str | os.PathLike[str] | None = None,
        no_dense: bool = False,
        strip_whitespace: bool = False,
    ) -> None:
        want = resolve_dtype(dtype)
        self.strip_whitespace = strip_whitespace  # validated by the setter
        path = resolve_model_path(model_name_or_path, cache_folder)
        self.model_path = path
        self.format = "gguf" if path.is_file() else "sentence-transformers"
        dense_dir = None
        if dense_from is not None:
            if self.format != "gguf":
                raise ValueError(f"dense_from applies to GGUF files; {path} is a sentence-transformers folder")
            dense_dir = resolve_model_path(dense_from, cache_folder)
            if not dense_dir.is_dir():
                raise ValueError(f"dense_from must be a sentence-transformers folder, got the file {dense_dir}")
        if no_dense and self.format != "gguf":
            raise ValueError(f"no_dense applies to GGUF files; {path} is a sentence-transformers folder")
        extra: dict[str, Any] = {"no_dense": bool(no_dense)}
        if dense_dir is not None:
            extra["dense_from"] = str(dense_dir)
        # "auto" on a GGUF reads its header (the tensor types decide); kept for its tokenizer metadata
        gguf = _core.gguf_read(str(path)) if self.format == "gguf" and want == "auto" else None
        note = f"asked for: {want}"
        if want == "auto" and not stored_quantized(gguf):
            want, note = auto_dtype.resolve(_core.build_info()["chosen_isa"])
        self._core = _core.Model(str(path), mlp_weights=want, attn_weights=want, **extra)
        self._info = self._core.info
        self.dtype: str = self._info["mlp_weights"]
        #: how dtype was chosen: "asked for: ...", or the auto rule's reason
        self.dtype_note: str = note if want != "auto" else (
            f"auto: {self.dtype}, as the file stores its layers ({self._info['weight_dtype']})")
        if no_dense and self._info["n_dense"] == 0:
            warnings.warn(
                f"{path}: no Dense tensors; returning the normalized mean of the last hidden states, which is NOT "
                "EmbeddingGemma's embedding (cosine to the real one is far from 1). Pass dense_from= the model's "
                "sentence-transformers folder to get the real embeddings.",
                stacklevel=2,
            )
        self.threads = threads  # validated by the setter

        if self.format == "gguf":
            self._init_gguf(path, gguf, dense_dir, max_seq_length, truncate_dim)
            return
        self._read_st_config(path / "config_sentence_transformers.json", empty_means_default=False)

        self.transformer_dir = transformer_dir(path)
        self._tokenizer_dir = path if (path / "tokenizer.json").is_file() else self.transformer_dir
        self._set_tokenizer(*load_tokenizer(self._tokenizer_dir))
        self.tokenizer_source = str(self._tokenizer_dir / "tokenizer.json")

        # sentence-transformers' max_seq_length, else the tokenizer's (10**7 and more: transformers' "no limit")
        default_len = self._info["max_positions"]
        for file, key in ((self.transformer_dir / "sentence_bert_config.json", "max_seq_length"),
                          (self._tokenizer_dir / "tokenizer_config.json", "model_max_length")):
            value = (read_json(file) or {}).get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value >= 10**7:
                continue
            if value <= self._n_special:
                raise _core.ModelFormatError(
                    f"{file}: {key} = {value} leaves no room for text (the model adds {self._n_special} special "
                    f"tokens); set it to at most {self._info['max_positions']}"
                )
            default_len = value
            break
        self._max_seq_length = 0
        self.max_seq_length = min(default_len, self._info["max_positions"]) if max_seq_length is None else max_seq_length
        self.truncate_dim = truncate_dim

    # ------------------------------------------------------------------ loading helpers

    def _init_gguf(self, path: Path, gguf: dict[str, Any] | None, dense_dir: Path | None, max_seq_length: int | None,
                   truncate_dim) -> None:
        """Prompts, tokenizer and length for a GGUF: a tokenizer.json beside the file (or in dense_from)
        wins; else the tokenizer is rebuilt from the GGUF's own metadata."""
        from ._gguf import tokenizer_from_gguf

        self._read_st_config(dense_dir / "config_sentence_transformers.json" if dense_dir else None,
                             empty_means_default=True)
        beside = [d for d in (path.parent, dense_dir) if d is not None and (d / "tokenizer.json").is_file()]
        self.transformer_dir = None
        if beside:
            self._tokenizer_dir = beside[0]
            self._set_tokenizer(*load_tokenizer(beside[0]))
            self.tokenizer_source = str(beside[0] / "tokenizer.json")
        else:
            meta = (gguf or _core.gguf_read(str(path)))["metadata"]
            tok, bos_id, eos_id = tokenizer_from_gguf(meta, str(path))
            tok.no_padding()
            tok.no_truncation()
            self._set_tokenizer(tok, bos_id, eos_id)
            self._tokenizer_dir = None
            self.tokenizer_source = "gguf metadata"
        self._max_seq_length = 0
        self.max_seq_length = self._info["max_positions"] if max_seq_length is None else max_seq_length
        self.truncate_dim = truncate_dim

    def _read_st_config(self, file: Path | None, empty_means_default: bool) -> None:
        cfg = read_prompt_config(file, empty_means_default)
        self.prompts: dict[str, str] = cfg.prompts
        self.default_prompt_name: str | None = cfg.default_prompt_name
        self.similarity_fn_name: str = cfg.similarity_fn_name

    def _set_tokenizer(self, tok, bos_id: int, eos_id: int) -> None:
        self.tokenizer = tok
        self.bos_token_id, self.eos_token_id = bos_id, eos_id
        self._n_special = len(tok.encode("").ids)  # tokens the template adds to every text

    # ------------------------------------------------------------------ properties

    @property
    def info(self) -> dict[str, Any]:
        """Architecture and pipeline of the loaded model, as the C engine read them."""
        return dict(self._info)

    @property
    def max_seq_length(self) -> int:
        """Longest input in tokens (BOS and EOS included); longer texts are truncated or refused."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        limit = self._info["max_positions"]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not self._n_special < value <= limit:
            raise ValueError(f"max_seq_length must be an integer in {self._n_special + 1}..{limit}, got {value!r}")
        self._max_seq_length = int(value)

    @property
    def threads(self) -> int:
        """Worker threads per call; None sets the default (OMP_NUM_THREADS, else the usable cores)."""
        return self._threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        if value is None:
            value = default_threads()
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= MAX_THREADS:
            raise ValueError(f"threads must be a positive integer (at most {MAX_THREADS}), got {value!r}")
        self._threads = int(value)

    @property
    def strip_whitespace(self) -> bool:
        """Strip outer whitespace of ``prompt + text`` (sentence-transformers 5); False: as given (6)."""
        return self._strip_whitespace

    @strip_whitespace.setter
    def strip_whitespace(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"strip_whitespace must be True or False, got {value!r}")
        self._strip_whitespace = bool(value)

    @property
    def truncate_dim(self) -> int | None:
        return self._truncate_dim

    @truncate_dim.setter
    def truncate_dim(self, value: int | None) -> None:
        self._truncate_dim = None if value is None else self.check_dim(value)

    def check_dim(self, dim: int) -> int:
        """``dim`` as an int when it is a valid output width (Matryoshka prefix) of this model, else ValueError."""
        full = self._info["output_dim"]
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or not 1 <= dim <= full:
            raise ValueError(
                f"truncate_dim must be an integer in 1..{full} (EmbeddingGemma was trained for "
                f"{', '.join(map(str, MATRYOSHKA_DIMS))}), got {dim!r}"
            )
        return int(dim)

    def get_sentence_embedding_dimension(self) -> int:
        """Width of the vectors ``encode`` returns by default."""
        return self._truncate_dim or self._info["output_dim"]

    def get_embedding_dimension(self) -> int:
        """The same as ``get_sentence_embedding_dimension`` (sentence-transformers 5.4+ spelling)."""
        return self.get_sentence_embedding_dimension()

    def __repr__(self) -> str:
        i = self._info
        return (
            f"EmbeddingGemma({str(self.model_path)!r}, layers={i['num_hidden_layers']}, hidden={i['hidden_size']}, "
            f"dim={self.get_sentence_embedding_dimension()}, max_seq_length={self.max_seq_length}, "
            f"threads={self.threads}, isa={i['isa']!r}, dtype={self.dtype!r}"
            + (", strip_whitespace=True)" if self._strip_whitespace else ")")
        )

    # ------------------------------------------------------------------ tokenization

    def _token_ids(self, texts: Sequence[str], truncate: bool, first: int = 0,
                   too_long: list[int] | None = None) -> list[list[int]]:
        """Token ids of each text with BOS/EOS; over-long texts keep BOS and EOS around their head.

        Texts are numbered from ``first`` in messages; indices of truncated texts go to ``too_long``
        when given (the caller warns), else one warning is given here."""
        encodings = self.tokenizer.encode_batch(list(texts))
        limit = self.max_seq_length
        out: list[list[int]] = []
        warn = too_long is None
        too_long = [] if too_long is None else too_long
        vocab = self._info["vocab_size"]
        for i, enc in enumerate(encodings, first):
            ids = enc.ids
            if ids and max(ids) >= vocab:
                bad = next(t for t in ids if t >= vocab)
                raise ValueError(
                    f"text {i} contains the token {self.tokenizer.id_to_token(bad)!r} (id {bad}), which has no "
                    f"embedding in this model (vocab_size={vocab}); remove it from the text"
                )
            if len(ids) > limit:
                if not truncate:
                    raise ValueError(
                        f"text {i} has {len(ids)} tokens, more than max_seq_length={limit}; "
                        "pass truncate=True to keep its first tokens (BOS and EOS are kept)"
                    )
                too_long.append(i)
                ids = self.truncate_ids(ids, limit)
            out.append(ids)
        if warn and too_long:
            self._warn_truncated(too_long, stacklevel=4)
        return out

    def _warn_truncated(self, too_long: list[int], stacklevel: int) -> None:
        warnings.warn(
            f"{len(too_long)} text(s) longer than max_seq_length={self.max_seq_length} tokens were truncated "
            f"(first: index {too_long[0]})",
            stacklevel=stacklevel,
        )


    def tokenize(self, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids as the model sees them: ``input_ids`` and ``attention_mask``, right-padded with 0."""
        if isinstance(texts, str):
            texts = [texts]
        ids = self._token_ids([prepare_text(t, i, "", self._strip_whitespace) for i, t in enumerate(texts)], truncate=True)
        width = max((len(x) for x in ids), default=0)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for r, x in enumerate(ids):
            input_ids[r, : len(x)] = x
            mask[r, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    # ------------------------------------------------------------------ encoding

    def encode(
        self,
        sentences: str | Sequence[str] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = True,
        truncate_dim: int | None = None,
        convert_to_numpy: bool = True,
        *,
        convert_to_tensor: bool = False,
        device: Any = None,
        output_value: str | None = "sentence_embedding",
        truncate: bool = True,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
        inputs: str | Sequence[str] | None = None,
    ) -> Any:
        """Embed text(s). A str gives a 1-D float32 array; a list gives a 2-D array in input order.

        Args:
            prompt_name: key of ``self.prompts`` (e.g. ``"query"``, ``"document"``, ``"Clustering"``).
            prompt: a literal prompt; wins over ``prompt_name``.
            batch_size: texts per engine call (length-sorted, packed without padding, at most 8192
                tokens a call). Default None: calls filled up to a token budget (4096 tokens), which
                sends short texts to the engine by the hundred.
            normalize_embeddings: L2-normalize the returned (possibly truncated) vectors. The model's own
                Normalize module already makes full-width vectors unit length; this re-normalizes a
                Matryoshka prefix, as the model card recommends.
            truncate_dim: Matryoshka width for this call (default: the model's ``truncate_dim``).
            convert_to_numpy: False returns a list of 1-D arrays.
            convert_to_tensor: return a ``torch.Tensor`` sharing the result's memory (needs PyTorch).
            device: sentence-transformers' argument: None or ``"cpu"`` (embgemma runs on the CPU;
                other devices raise ``ValueError``).
            output_value: ``"sentence_embedding"`` (the only output embgemma computes).
            truncate: cut texts longer than ``max_seq_length`` (keeping BOS and EOS, with a warning);
                False raises ``ValueError`` naming the first such text.
            precision: ``"float32"``, ``"int8"``, ``"uint8"``, ``"binary"`` or ``"ubinary"``: the result of
                the call passed through :func:`embgemma.quantize_embeddings` (sentence-transformers'
                semantics: int8 / uint8 buckets come from this call's embeddings unless ``ranges`` is given).
            ranges: ``(2, dim)`` minimum and maximum per dimension for int8 / uint8 buckets.
            inputs: sentence-transformers 6's name for ``sentences``.
        """
        sentences = _pick_inputs(sentences, inputs)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        _check_device(device)
        _check_output_value(output_value)
        if isinstance(normalize_embeddings, str):  # sentence-transformers' positional output_value landed here
            raise TypeError(
                f"normalize_embeddings must be True or False, got {normalize_embeddings!r}; after show_progress_bar, "
                "encode's positional arguments are normalize_embeddings, truncate_dim, convert_to_numpy: pass "
                "sentence-transformers' output_value / precision by keyword"
            )
        torch = _import_torch() if convert_to_tensor else None  # before any work
        if prompt is not None and prompt_name is not None:
            logger.warning("encode: both prompt and prompt_name given; using prompt, ignoring prompt_name")
        text_prompt = resolve_prompt(self.prompts, prompt_name, prompt, self.default_prompt_name)
        single = isinstance(sentences, str)
        texts = [sentences] if single else _as_text_list(sentences)
        out = self._encode_texts(
            texts, text_prompt, batch_size, show_progress_bar, normalize_embeddings, truncate_dim, truncate
        )
        if precision != "float32":
            from .quantization import quantize_embeddings

            out = quantize_embeddings(out, precision, ranges=ranges)
        if single:
            out = out[0]
        if torch is not None:
            return torch.from_numpy(out)  # shares the array's memory
        if single:
            return out
        return out if convert_to_numpy else list(out)

    def encode_query(
        self, sentences: str | Sequence[str] | None = None, **kwargs: Any
    ) -> Any:
        """``encode`` with the model's ``query`` prompt (``task: search result | query: ``)."""
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None and "query" in self.prompts:
            kwargs["prompt_name"] = "query"
        return self.encode(sentences, **kwargs)

    def encode_document(
        self,
        sentences: str | Sequence[str] | None = None,
        titles: str | Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``encode`` with the model's document prompt (``title: none | text: ``).

        ``titles`` (one per text, or a single str for a single text) gives the model card's
        ``title: {title} | text: `` prompt instead; a None title stays ``none``.
        """
        if titles is None:
            if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None:
                name = next((n for n in DOCUMENT_PROMPT_NAMES if n in self.prompts), None)
                if name is not None:
                    kwargs["prompt_name"] = name
            return self.encode(sentences, **kwargs)
        sentences = _pick_inputs(sentences, kwargs.pop("inputs", None))
        if kwargs.get("prompt") is not None or kwargs.get("prompt_name") is not None:
            raise ValueError("encode_document: give titles or a prompt/prompt_name, not both")
        single = isinstance(sentences, str)
        texts = [sentences] if single else _as_text_list(sentences)
        if isinstance(titles, str):
            titles = [titles]
        titles = list(titles)
        if len(titles) != len(texts):
            raise ValueError(f"encode_document: {len(titles)} titles for {len(texts)} texts")
        for i, t in enumerate(titles):
            if t is not None and not isinstance(t, str):
                raise TypeError(f"titles[{i}] must be a str or None, got {type(t).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, not str")
        # each text carries its own prompt; encode then tokenizes (and strips, if asked) as usual
        titled = [document_prompt_with_title(ti) + t for t, ti in zip(texts, titles)]
        return self.encode(titled[0] if single else titled, prompt="", **kwargs)

    def encode_ids(
        self,
        token_ids: Sequence[Sequence[int]] | Sequence[np.ndarray],
        *,
        batch_size: int | None = None,
        normalize_embeddings: bool = True,
        truncate_dim: int | None = None,
    ) -> np.ndarray:
        """Embed already-tokenized inputs (each a full sequence, BOS and EOS included)."""
        seqs = [np.asarray(s) for s in token_ids]
        vocab = self._info["vocab_size"]
        for i, s in enumerate(seqs):
            if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
                raise TypeError(f"token_ids[{i}] must be a 1-D sequence of integers")
            if not 1 <= s.size <= self._info["max_positions"]:
                raise ValueError(f"token_ids[{i}] has {s.size} tokens; must be 1..{self._info['max_positions']}")
            # before any cast: int64 / uint64 ids beyond int32 would wrap around to valid-looking ones
            bad = np.flatnonzero((s < 0) | (s >= vocab))
            if bad.size:
                raise ValueError(
                    f"token_ids[{i}][{bad[0]}] = {s[bad[0]]} is outside the vocabulary 0..{vocab - 1} of this model"
                )
        return self._run([s.astype(np.int32) for s in seqs], batch_size, None, normalize_embeddings, truncate_dim)

    def _encode_texts(self, texts, prompt, batch_size, show_progress_bar, normalize, truncate_dim, truncate):
        """Streams the texts through tokenizer and engine a chunk at a time (see batching.CHUNK_TEXTS)."""
        for i, t in enumerate(texts):  # every type error before any work
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, not str")
        run = self._new_run(len(texts), batch_size, show_progress_bar, normalize, truncate_dim)
        too_long: list[int] = []
        n, start = len(texts), 0
        with run:
            while start < n:
                stop, chars = start, 0
                while stop < n and stop - start < run.chunk and chars < CHUNK_CHARS:
                    chars += len(texts[stop])
                    stop += 1
                bs = run.batch_size
                if bs is not None and stop < n and stop - start > bs:  # whole batches, as one pass would make them
                    stop = start + (stop - start) // bs * bs
                part = [prepare_text(texts[i], i, prompt, self._strip_whitespace) for i in range(start, stop)]
                run.add(self._token_ids(part, truncate, first=start, too_long=too_long), start)
                start = stop
        if too_long:
            self._warn_truncated(too_long, stacklevel=4)
        return run.out

    def _run(self, seqs, batch_size, show_progress_bar, normalize, truncate_dim) -> np.ndarray:
        with self._new_run(len(seqs), batch_size, show_progress_bar, normalize, truncate_dim) as run:
            run.add(seqs, 0)
        return run.out

    def _new_run(self, n: int, batch_size, show_progress_bar, normalize, truncate_dim) -> EncodeRun:
        batch_size = check_batch_size(batch_size)  # before the width: the order of checks users see
        dim = self.check_dim(truncate_dim) if truncate_dim is not None else self.get_sentence_embedding_dimension()
        return EncodeRun(self._core, self._threads, n, dim, batch_size, show_progress_bar, normalize)

    # ------------------------------------------------------------------ similarity

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix between the rows of ``a`` and ``b`` (1-D inputs count as one row)."""
        return cos_sim(a, b)

    # ------------------------------------------------------------------ for callers that tokenize and batch themselves

    def prompted_text(self, text: str, prompt: str = "", index: int = 0) -> str:
        """The string the tokenizer gets for ``text`` under the prompt text ``prompt``, as ``encode`` forms
        it (outer whitespace stripped when ``strip_whitespace``); ``index`` numbers the text in errors."""
        return prepare_text(text, index, prompt, self._strip_whitespace)

    def truncate_ids(self, ids: list[int], limit: int | None = None, direction: str = "right") -> list[int]:
        """``ids`` cut to ``limit`` tokens (default: max_seq_length) as ``encode`` cuts them: ``<bos>`` and
        ``<eos>`` kept, with the first (``"right"``) or the last (``"left"``) content tokens."""
        limit = self.max_seq_length if limit is None else limit
        return truncate_ids(ids, limit, self.bos_token_id, self.eos_token_id, direction)

    def encode_packed(self, ids: np.ndarray, offsets: np.ndarray, *, dim: int, normalize: bool = True,
                      out: np.ndarray | None = None) -> np.ndarray:
        """One engine call on token-id sequences packed end to end (int32 ``ids``; ``offsets``: the n + 1
        boundaries), on the model's threads, into ``out`` (n, dim) float32 when given. No batching and no
        checks beyond the engine's: for callers that validate and batch themselves (the server's
        cross-request batcher); ``encode_ids`` is the checked way."""
        return self._core.encode(ids, offsets, dim=dim, normalize=normalize, threads=self._threads, out=out)

    def describe_files(self) -> dict[str, Any]:
        """The model's files as listings describe them (Ollama's /api/tags): ``files`` (the GGUF, or every
        file under the folder, sorted), ``format`` (``"gguf"`` / ``"safetensors"``), ``family`` (the
        architecture they name: GGUF ``general.architecture``, else config.json's ``model_type`` less
        ``_text``) and ``parameter_count`` (values in all their tensors, Dense modules included), read
        from the files' headers, not their data."""
        import json
        import math

        root = Path(self.model_path)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        if self.format == "gguf":
            info = _core.gguf_read(str(root))
            family = str(info["metadata"].get("general.architecture", "gemma3"))
            return {"files": files, "format": "gguf", "family": family,
                    "parameter_count": sum(math.prod(t[2]) for t in info["tensors"])}
        params = 0
        for p in files:
            if p.suffix == ".safetensors":  # a little-endian u64 length, then a JSON header of tensor shapes
                with open(p, "rb") as f:
                    header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
                params += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        config = read_json(transformer_dir(root) / "config.json") or {}
        family = str(config.get("model_type", "gemma3")).removesuffix("_text")
        return {"files": files, "format": "safetensors", "family": family, "parameter_count": params}


def cos_sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``, as a float32 matrix."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float32))
    b = np.atleast_2d(np.asarray(b, dtype=np.float32))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"similarity: vectors of width {a.shape[1]} and {b.shape[1]}")
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T


def _pick_inputs(sentences: Any, inputs: Any) -> Any:
    """The texts of a call: ``sentences`` or sentence-transformers 6's ``inputs``, exactly one of them."""
    if inputs is None:
        if sentences is None:
            raise TypeError("encode() needs the texts to embed: encode(texts) (or inputs=texts)")
        return sentences
    if sentences is not None:
        raise TypeError("encode() got both sentences and inputs; pass the texts once")
    return inputs


def _check_device(device: Any) -> None:
    """sentence-transformers' ``device``: the CPU (any spelling of it, or a list of them) is accepted."""
    if device is None:
        return
    devices = device if isinstance(device, (list, tuple)) else [device]
    for d in devices:
        kind = d.split(":", 1)[0].strip().lower() if isinstance(d, str) else getattr(d, "type", None)
        if kind != "cpu":
            raise ValueError(
                f"device={d!r}: embgemma runs on the CPU only (its own C kernels; no CUDA, MPS or other "
                "accelerator); pass device=None or 'cpu', and threads= on the model for CPU cores"
            )


def _check_output_value(output_value: Any) -> None:
    if output_value == "sentence_embedding":
        return
    if output_value in ("token_embeddings", None):
        raise NotImplementedError(
            f"output_value={output_value!r}: embgemma returns pooled sentence embeddings only "
            "(output_value='sentence_embedding'); the per-token hidden states are not exposed"
        )
    raise ValueError(f"output_value must be 'sentence_embedding', got {output_value!r}")


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "convert_to_tensor=True needs PyTorch (pip install torch); without it, use the NumPy array encode "
            "returns by default"
        ) from None
    return torch


def _as_text_list(sentences: Any) -> list[Any]:
    if isinstance(sentences, (bytes, bytearray)):
        raise TypeError("encode expects str or a list of str, got bytes; decode it first (e.g. b.decode('utf-8'))")
    if isinstance(sentences, np.ndarray):
        return sentences.tolist()
    try:
        return list(sentences)
    except TypeError:
        raise TypeError(f"encode expects str or a list of str, got {type(sentences).__name__}") from None
