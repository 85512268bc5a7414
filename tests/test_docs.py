"""The documentation's examples run: every ```python block of the pages below, in order, in one
namespace per page, with "google/embeddinggemma-300m" resolved from a Hugging Face cache that holds a
small random model with EmbeddingGemma's 768-wide output (so the examples run unmodified, offline).
Every other ```python block in README.md and docs/ must say why it only compiles (an HTML comment
``<!-- docs test: compile only (reason) -->`` on the line before it), and compiles. README's
``embgemma info`` sample is checked for shape against what this build prints."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMPILE_ONLY = "<!-- docs test: compile only"
PAGES = ["../README.md", "python_api.md", "thread_safety.md", "quickstart.md", "switching.md", "retrieval.md", "integrations/langchain.md",
         "integrations/llama_index.md", "integrations/sklearn.md", "integrations/haystack.md",
         "integrations/txtai.md", "integrations/chroma.md"]
NEEDS = {"integrations/langchain.md": "langchain_core", "integrations/llama_index.md": "llama_index.core",
         "integrations/sklearn.md": "sklearn", "retrieval.md": "matplotlib",
         "integrations/haystack.md": "haystack", "integrations/txtai.md": "txtai",
         "integrations/chroma.md": "chromadb"}


def _all_blocks(path: Path) -> list[tuple[str, bool]]:
    """(code, compile only?) of each ```python block of a page (indented blocks in lists included)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^([ \t]*)```python\n(.*?)^[ \t]*```", text, flags=re.S | re.M):
        indent = m.group(1)
        code = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in m.group(2).splitlines(keepends=True))
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1]
        out.append((code, before.strip().startswith(COMPILE_ONLY)))
    return out


def _blocks(page: str) -> list[str]:
    return [code for code, only in _all_blocks(DOCS / page) if not only]


def test_every_python_block_runs_or_says_why_not():
    run = {(DOCS / p).resolve() for p in PAGES}
    problems = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for i, (code, only) in enumerate(_all_blocks(path)):
            where = f"{path.relative_to(ROOT)}, python block {i}"
            try:
                compile(code, where, "exec")
            except SyntaxError as e:
                problems.append(f"{where}: does not compile: {e}")
            if not only and path.resolve() not in run:
                problems.append(f"{where}: neither run by tests/test_docs.py (PAGES) nor marked {COMPILE_ONLY} (why) -->")
    assert not problems, "\n".join(problems)


def _shape(value):
    """A JSON value's shape: dicts by their keys, lists by their items' types, scalars by type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sorted({type(v).__name__ for v in value})]
    return type(value).__name__


def test_readme_info_sample_matches_this_build():
    """README's `embgemma info` sample has the keys and types `embgemma info` prints, and is consistent
    as a build's output: its levels are the ones a build for its architecture compiles, the chosen one
    is supported and self-checked, and auto_dtype is what the committed table gives for it."""
    import json
    import subprocess
    import sys

    from embgemma.auto_dtype import resolve

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"\*\*Check what you got:\*\*.*?```json\n(.*?)```", text, flags=re.S)
    assert block, "README.md: no ```json sample after **Check what you got:**"
    sample = json.loads(block.group(1))
    here = json.loads(subprocess.run([sys.executable, "-m", "embgemma", "info"], capture_output=True, text=True,
                                     check=True, cwd=ROOT).stdout)
    assert _shape(sample) == _shape(here)
    b = sample["build"]
    if sample["platform"]["machine"] == here["platform"]["machine"]:
        assert b["compiled_isas"] == here["build"]["compiled_isas"], "the sample's levels are not this build's"
    assert b["supported_isas"][0] == "scalar" and set(b["supported_isas"]) <= set(b["compiled_isas"])
    assert b["chosen_isa"] in b["supported_isas"] and list(b["selfcheck"]) == b["supported_isas"]
    assert b["isa_note"].startswith(b["chosen_isa"])
    dtype, note = resolve(b["chosen_isa"])
    assert sample["auto_dtype"] == {"dtype": dtype, "note": note}


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
