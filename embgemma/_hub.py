"""Finding a model: a local folder or GGUF file, an Ollama model name in the local Ollama store,
or a Hugging Face hub id in the local Hugging Face cache."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_HELP = (
    "To get EmbeddingGemma: accept the licence at https://huggingface.co/google/embeddinggemma-300m "
    "(the repository is gated), log in with `hf auth login` (or set HF_TOKEN), then run "
    "`hf download google/embeddinggemma-300m` (or `huggingface-cli download google/embeddinggemma-300m`), "
    "or pass the path of a folder that holds the model."
)

# Files the engine reads; a download fetches only these.
_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*/config.json", "*/*.safetensors"]


_OLLAMA_HELP = (
    "With Ollama installed, `ollama pull embeddinggemma` puts it in the Ollama store "
    "(OLLAMA_MODELS, default ~/.ollama/models)."
)
_OLLAMA_NAME = re.compile(r"^(?:(?P<ns>[a-z0-9][a-z0-9._-]*)/)?(?P<model>[a-z0-9][a-z0-9._-]*)(?::(?P<tag>[A-Za-z0-9._-]+))?$")
_DIGEST = re.compile(r"^sha256[:-][0-9a-f]{64}$")
_MODEL_LAYER = "application/vnd.ollama.image.model"


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def ollama_models_dir() -> Path:
    """The Ollama store: OLLAMA_MODELS, else ~/.ollama/models (read at call time)."""
    return Path(os.path.expanduser(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models"))


def _ollama_blob(store: Path, manifest: Path) -> Path:
    """The model layer's blob named by an Ollama manifest."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        layers = data["layers"]
        digest = next(l["digest"] for l in layers if l.get("mediaType") == _MODEL_LAYER)
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        raise FileNotFoundError(f"{manifest}: not an Ollama manifest with a model layer ({type(e).__name__})") from e
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise FileNotFoundError(f"{manifest}: model layer digest {digest!r} is not sha256:<64 hex>")
    blob = store / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise FileNotFoundError(f"{manifest}: its model blob {blob} is missing (re-run `ollama pull`)")
    return blob


def resolve_ollama(name: str) -> Path | None:
    """The GGUF blob of an Ollama model name ("embeddinggemma", "embeddinggemma:300m",
    "user/model:tag") in the local store, or None when the store has no such manifest."""
    m = _OLLAMA_NAME.match(name)
    if not m:
        return None
    store = ollama_models_dir()
    ns, model, tag = m.group("ns") or "library", m.group("model"), m.group("tag") or "latest"
    for host in ("registry.ollama.ai",):
        manifest = store / "manifests" / host / ns / model / tag
        if manifest.is_file():
            return _ollama_blob(store, manifest)
    return None


def list_ollama() -> list[dict[str, str]]:
    """Every model in the local Ollama store: name, GGUF blob path (or the problem)."""
    root = ollama_models_dir() / "manifests"
    out = []
    if not root.is_dir():
        return out
    for manifest in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = manifest.relative_to(root).parts
        if len(parts) != 4:
            continue
        host, ns, model, tag = parts
        name = f"{model}:{tag}" if ns == "library" else f"{ns}/{model}:{tag}"
        try:
            out.append({"name": name, "source": "ollama", "path": str(_ollama_blob(ollama_models_dir(), manifest))})
        except FileNotFoundError as e:
            out.append({"name": name, "source": "ollama", "path": "", "problem": str(e)})
    return out


def list_hf_cache(cache_folder: str | None = None) -> list[dict[str, str]]:
    """Model snapshots in the local Hugging Face cache: id and folder."""
    root = Path(cache_folder or hf_cache_dir())
    out = []
    if not root.is_dir():
        return out
    for repo in sorted(root.glob("models--*")):
        repo_id = repo.name[len("models--") :].replace("--", "/")
        ref = repo / "refs" / "main"
        snaps = sorted((repo / "snapshots").glob("*"))
        try:
            snap = repo / "snapshots" / ref.read_text().strip() if ref.is_file() else (snaps[-1] if snaps else None)
        except OSError:
            snap = None
        if snap is not None and snap.is_dir():
            out.append({"name": repo_id, "source": "huggingface", "path": str(snap)})
    return out


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


def _folder_or_gguf(path: Path) -> Path:
    """A folder without modules.json / config.json but with exactly one .gguf means that file."""
    if (path / "modules.json").is_file() or (path / "config.json").is_file():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) > 1:
        raise FileNotFoundError(f"{path}: holds {len(ggufs)} GGUF files ({', '.join(g.name for g in ggufs[:4])}); pass one")
    return ggufs[0] if ggufs else path


def resolve_model_path(name_or_path: str | os.PathLike[str], cache_folder: str | None = None) -> Path:
    """Where a model is: a sentence-transformers folder or a GGUF file.

    In order: an existing folder (one that holds only a single .gguf means that file) or GGUF file;
    an Ollama name ("embeddinggemma", "embeddinggemma:300m") in the local Ollama store; a hub id
    ("google/embeddinggemma-300m") in the local Hugging Face cache, downloaded when the hub is
    reachable and HF_HUB_OFFLINE is unset. Otherwise the error says where it looked and how to get it.
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
        return _folder_or_gguf(path)
    if path.exists():
        if not os.access(path, os.R_OK):
            raise PermissionError(f"{path}: model file is not readable")
        if is_gguf(path):
            return path
        raise NotADirectoryError(
            f"{path}: is a file but not a GGUF; pass a GGUF file, or the sentence-transformers folder that holds "
            "config.json and modules.json"
        )
    looks_ollama = ":" in raw or "/" not in raw
    if looks_ollama:
        blob = resolve_ollama(raw)
        if blob is not None:
            return blob
    if not _looks_like_hub_id(raw):
        where = f"no such file or folder, and no Ollama model {raw!r} in {ollama_models_dir()}" if looks_ollama else "no such file or folder"
        raise FileNotFoundError(f"{raw}: {where}. {_OLLAMA_HELP} {_HELP}")

    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with tokenizers
        raise FileNotFoundError(f"{raw}: not a folder, and huggingface_hub is not installed to look it up. {_HELP}")
    cache = cache_folder or hf_cache_dir()
    try:
        return _folder_or_gguf(Path(snapshot_download(raw, local_files_only=True, allow_patterns=_PATTERNS, cache_dir=cache)))
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
