"""Loading a model's files: the weights mode, the thread count, sentence-transformers' JSON configs.

Everything here reads or checks what a user or a model folder supplies, and raises
``ModelFormatError`` / ``ValueError`` with the file and the fix; ``EmbeddingGemma.__init__`` calls it
top to bottom. The tokenizer's own loading lives in ``tokenization``, the weights in the C engine.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _core
from .machine import usable_cores
from .prompts import DEFAULT_PROMPTS

#: the engine's limit on threads per call
MAX_THREADS = 4096

#: every accepted spelling of a weights mode -> the engine's name for it
DTYPES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "int8": "int8", "i8": "int8", "q8": "int8",
    "int16": "int16", "i16": "int16",
    "q8_0": "q8_0", "q4_0": "q4_0",
    "auto": "auto",
}


def default_threads() -> int:
    """OMP_NUM_THREADS when set (as every OpenMP program honours it, even above the core count),
    else every core this process may use (its affinity mask)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        first = env.split(",")[0].strip()  # OpenMP: a list, one value per nesting level
        if first.isdecimal() and int(first) >= 1:
            if int(first) > MAX_THREADS:
                warnings.warn(f"OMP_NUM_THREADS={env} is above embgemma's limit of {MAX_THREADS} threads; "
                              f"using {MAX_THREADS}", RuntimeWarning, stacklevel=3)
                return MAX_THREADS
            return int(first)
        warnings.warn(f"OMP_NUM_THREADS={env!r} is not a positive integer (OpenMP takes one, or a comma-separated "
                      "list of them); ignored: using every core this process may use", RuntimeWarning, stacklevel=3)
    return usable_cores()


def resolve_dtype(dtype) -> str:
    """The weights mode for a dtype given as a name ("bf16") or a NumPy / PyTorch dtype-like object.
    None: $EMBGEMMA_DTYPE when set (a process-wide default, e.g. for a server or a test suite), else
    "auto" (resolved at load from the measurements in auto_dtype.py)."""
    if dtype is None:
        env = os.environ.get("EMBGEMMA_DTYPE", "").strip()
        if not env:
            return "auto"
        if env.lower() not in DTYPES:
            raise ValueError(f"EMBGEMMA_DTYPE={env!r} is not a weights mode: use auto, float32, bfloat16, int16, "
                             "int8, q8_0 or q4_0, or unset it")
        return DTYPES[env.lower()]
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"dtype={dtype!r} is not supported: use 'float32' (exact), 'bfloat16' (half the weight memory, "
            "cosine >= 0.9999 to float32), 'int16' (half, integer kernels, more faithful than bfloat16), "
            "'int8' (a quarter, cosine >= 0.999), ggml's 'q8_0' or 'q4_0', or "
            "None / 'auto' (the default: the fastest mode measured bfloat16-class on this CPU). float16 is refused "
            "on purpose: EmbeddingGemma's activations overflow it."
        ) from None


def stored_quantized(gguf: dict[str, Any] | None) -> bool:
    """A GGUF (``_core.gguf_read``'s result; None for a safetensors folder, whose files hold F32 / F16 /
    BF16) whose layer matrices are ggml blocks (Q8_0 / Q4_0): "auto" keeps them as stored."""
    return gguf is not None and any(name.startswith("blk.") and kind in ("Q8_0", "Q4_0")
                                    for name, kind, _ in gguf["tensors"])


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file; None when the file is absent; ModelFormatError when it is not one."""
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nesting deeper than json can follow
        raise _core.ModelFormatError(f"{path}: cannot read JSON: {e}") from e
    if not isinstance(data, dict):
        raise _core.ModelFormatError(f"{path}: expected a JSON object")
    return data


def is_unicode(s: str) -> bool:
    """False for a str holding a lone surrogate (json decodes the escape "\\ud800" into one)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def transformer_dir(model_path: Path) -> Path:
    """The folder of a sentence-transformers model's Transformer module (modules.json), else the model's."""
    try:
        with open(model_path / "modules.json", encoding="utf-8") as f:
            modules = json.load(f)
    except (OSError, ValueError, RecursionError):
        modules = []
    for m in modules if isinstance(modules, list) else []:
        if isinstance(m, dict) and str(m.get("type", "")).rsplit(".", 1)[-1] == "Transformer":
            return model_path / m.get("path", "")
    return model_path


@dataclass(frozen=True)
class PromptConfig:
    """What config_sentence_transformers.json says about prompts and similarity."""

    prompts: dict[str, str]
    default_prompt_name: str | None
    similarity_fn_name: str


def read_prompt_config(file: Path | None, empty_means_default: bool) -> PromptConfig:
    """prompts, default_prompt_name and similarity_fn_name from config_sentence_transformers.json, checked;
    no file (or, with empty_means_default, no prompts in it) gives EmbeddingGemma's own prompt table."""
    st_cfg = (read_json(file) if file is not None else None) or {}
    prompts = st_cfg.get("prompts")
    if prompts is None or (empty_means_default and not prompts):
        prompts = dict(DEFAULT_PROMPTS)
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise _core.ModelFormatError(f"{file}: prompts must map str to str")
    for k, v in prompts.items():
        if not (is_unicode(k) and is_unicode(v)):
            raise _core.ModelFormatError(
                f"{file}: prompt {k!r} contains a lone surrogate (an escape such as \\ud800), which is not "
                "Unicode text; fix the file"
            )
    default = st_cfg.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in prompts):
        raise _core.ModelFormatError(f"{file}: default_prompt_name {default!r} is not one of the prompts")
    similarity = st_cfg.get("similarity_fn_name")
    if similarity is not None and not isinstance(similarity, str):
        raise _core.ModelFormatError(f"{file}: similarity_fn_name must be a str, got {similarity!r}")
    return PromptConfig(dict(prompts), default, similarity or "cosine")
