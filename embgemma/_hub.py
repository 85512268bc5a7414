"""Finding a model's folder: a local path, or a Hugging Face hub id in the local cache."""

from __future__ import annotations

import os
from pathlib import Path

_HELP = (
    "To get EmbeddingGemma: accept the licence at https://huggingface.co/google/embeddinggemma-300m "
    "(the repository is gated), log in with `hf auth login` (or set HF_TOKEN), then run "
    "`hf download google/embeddinggemma-300m` (or `huggingface-cli download google/embeddinggemma-300m`), "
    "or pass the path of a folder that holds the model."
)

# Files the engine reads; a download fetches only these.
_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*/config.json", "*/*.safetensors"]


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME, XDG)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def resolve_model_path(name_or_path: str | os.PathLike[str], cache_folder: str | None = None) -> Path:
    """The folder of a model: an existing path, else a hub id resolved from the Hugging Face cache.

    When the id is not cached and the hub is reachable (HF_HUB_OFFLINE unset), the model is
    downloaded as ``huggingface_hub`` would; otherwise the error says how to get it.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"model_name_or_path must be a str or path, got {type(name_or_path).__name__}")
    raw = os.fspath(name_or_path)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if not raw:
        raise ValueError("model_name_or_path is empty")
    path = Path(raw).expanduser()
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(f"{path}: model folder is not readable")
        return path
    if path.exists():
        hint = " (a GGUF file is not supported yet)" if path.suffix == ".gguf" else ""
        raise NotADirectoryError(f"{path}: is a file; pass the model folder that holds config.json and modules.json{hint}")
    if not _looks_like_hub_id(raw):
        raise FileNotFoundError(f"{raw}: no such model folder. {_HELP}")

    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with tokenizers
        raise FileNotFoundError(f"{raw}: not a folder, and huggingface_hub is not installed to look it up. {_HELP}")
    cache = cache_folder or hf_cache_dir()
    try:
        return Path(snapshot_download(raw, local_files_only=True, allow_patterns=_PATTERNS, cache_dir=cache))
    except Exception as cached_error:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise FileNotFoundError(
                f"{raw}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set. {_HELP}"
            ) from cached_error
    try:
        return Path(snapshot_download(raw, allow_patterns=_PATTERNS, cache_dir=cache))
    except Exception as e:
        raise FileNotFoundError(
            f"{raw}: not in the local Hugging Face cache, and downloading it failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). {_HELP}"
        ) from e
