"""The documentation's examples run: every ```python block of the pages below, in order, in one
namespace per page, with "google/embeddinggemma-300m" resolved from a Hugging Face cache that holds a
small random model with EmbeddingGemma's 768-wide output (so the examples run unmodified, offline)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest


DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["quickstart.md", "switching.md", "retrieval.md", "integrations/langchain.md",
         "integrations/llama_index.md", "integrations/sklearn.md", "integrations/haystack.md",
         "integrations/txtai.md", "integrations/chroma.md"]
NEEDS = {"integrations/langchain.md": "langchain_core", "integrations/llama_index.md": "llama_index.core",
         "integrations/sklearn.md": "sklearn", "retrieval.md": "matplotlib",
         "integrations/haystack.md": "haystack", "integrations/txtai.md": "txtai",
         "integrations/chroma.md": "chromadb"}


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="session")
def docs_model(tmp_path_factory):
    """A small network (the TINY test shape) with EmbeddingGemma's Dense widths: 768-wide output."""
    from conftest import _build

    return _build(tmp_path_factory, "docs", "TINY", seed=31, dense_dims=(3072, 768))


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, docs_model):
    snap = tmp_path / "hub" / "models--google--embeddinggemma-300m" / "snapshots" / ("0" * 40)
    shutil.copytree(docs_model, snap)
    (tmp_path / "hub" / "models--google--embeddinggemma-300m" / "refs").mkdir()
    (tmp_path / "hub" / "models--google--embeddinggemma-300m" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, hub_cache):
    if page in NEEDS:
        pytest.importorskip(NEEDS[page])
    blocks = _blocks(page)
    assert blocks, f"{page} has no python examples"
    ns: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page}[{i}]", "exec"), ns)
        except Exception as e:  # pragma: no cover - the message names the block
            raise AssertionError(f"{page}, python block {i} failed: {type(e).__name__}: {e}") from e
    if page == "retrieval.md":
        assert (hub_cache / "retrieval.png").stat().st_size > 10_000


def test_every_public_name_is_documented():
    import embgemma

    api = (DOCS / "python_api.md").read_text(encoding="utf-8")
    names = [n for n in embgemma.__all__ if n != "__version__"]
    names += ["EmbeddingGemmaEmbeddings", "EmbeddingGemmaEmbedding", "EmbeddingGemmaVectorizer", "encode_ids",
              "similarity", "tokenize", "get_sentence_embedding_dimension", "gguf_read"]
    missing = [n for n in names if not re.search(rf"`[^`\n]*\b{re.escape(n)}\b", api)]
    assert not missing, f"docs/python_api.md does not document {missing}"
