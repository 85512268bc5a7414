"""The documentation points at things that exist: every relative link (and its #anchor) in docs/ and
README.md names a file inside the repository; paths written in the text (``../x``, ``tests/...``,
``embgemma/...``) exist; and every Python name the pages use (``from embgemma... import X``,
``embgemma.x.Y`` and ``EmbeddingGemma.method`` in code) is importable, with its attribute."""

from __future__ import annotations

import ast
import glob
import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the docs name files all over the checkout (benchmarks/, .ci/, ...): partial copies of it (the
# sanitizer run copies csrc, embgemma, tests and docs only) cannot check them
pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the whole git checkout")


def _git_ignored(ref: str) -> bool:
    """A path git ignores is made at run time (tests/.cache/, benchmarks/.venv-bench/): it may be absent."""
    try:
        return subprocess.run(["git", "check-ignore", "-q", ref], cwd=ROOT).returncode == 0
    except OSError:
        return False
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("docs/**/*.md"), ROOT / "README.md"])
FENCE = re.compile(r"^(`{3,}|~{3,})([^\n]*)\n(.*?)^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML_REF = re.compile(r"<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
REPO_DIRS = ("docs", "tests", "csrc", "embgemma", "benchmarks", ".ci")
REPO_PATH = re.compile(rf"(?<![\w/.~$@-])((?:\.\./)+[\w.*/-]*[\w*]|(?:{'|'.join(map(re.escape, REPO_DIRS))})/[\w.*/-]*[\w*/])")
DOTTED = re.compile(r"(?<![\w.])((?:embgemma|EmbeddingGemma)(?:\.[A-Za-z_]\w*)+)")
FILE_SUFFIXES = {"h", "c", "py", "pyi", "so", "md", "json", "txt"}  # embgemma.h is a file, not a name


def _text(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def _prose(page: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", _text(page))


def _slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    text = re.sub(r"`|\*\*|__|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    base = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    out = {_slug(m.group(1), seen) for m in re.finditer(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", text, re.M)}
    return out | set(re.findall(r"<a\s+(?:name|id)=[\"']([^\"']+)[\"']", text))


def _inside_repo(target: Path) -> bool:
    return target == ROOT or ROOT in target.parents


def _links(page: str) -> list[str]:
    prose = INLINE_CODE.sub("", _prose(page))
    return [m.group(1) for rx in (LINK, REF_DEF, HTML_REF) for m in rx.finditer(prose)]


def test_pages_found():
    assert "README.md" in PAGES and "docs/server.md" in PAGES and "docs/integrations/langchain.md" in PAGES


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve_inside_the_repo(page):
    problems = []
    for link in _links(page):
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", link):  # http:, https:, mailto: ...
            continue
        path, _, anchor = link.partition("#")
        target = (ROOT / page).parent.joinpath(path).resolve() if path else ROOT / page
        if not _inside_repo(target):
            problems.append(f"{link}: outside the repository")
        elif not target.exists():
            problems.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            problems.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not problems, f"{page}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_paths_in_the_text_exist(page):
    """A path written in the text (not only as a link) must exist, inside the repository: no
    ``../shared/...`` that only the authors' machine has. Globs must match something."""
    problems = []
    for m in REPO_PATH.finditer(_prose(page)):
        ref = m.group(1).rstrip(".")
        base = (ROOT / page).parent if ref.startswith("../") else ROOT
        target = (base / ref).resolve() if "*" not in ref else base / ref
        if not _inside_repo(Path(target).resolve() if "*" not in ref else base.resolve()):
            problems.append(f"{ref}: outside the repository")
        elif "*" in ref:
            if not glob.glob(str(target)):
                problems.append(f"{ref}: matches nothing")
        elif not target.exists() and not _git_ignored(ref):
            problems.append(f"{ref}: no such file or folder")
    assert not problems, f"{page}: " + "; ".join(problems)


def _python_names(page: str) -> set[str]:
    """Dotted names the page uses: imports in its python blocks, embgemma.x.Y / EmbeddingGemma.m in code."""
    text, names = _text(page), set()
    for m in FENCE.finditer(text):
        if m.group(2).strip().lower() not in ("python", "py", "pycon"):
            continue
        code = m.group(3)
        for node in ast.walk(ast.parse(code, f"{page} python block")):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "embgemma":
                names.update(f"{node.module}.{a.name}" for a in node.names if a.name != "*")
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.split(".")[0] == "embgemma")
        names.update(DOTTED.findall(code))
    for code in INLINE_CODE.findall(_prose(page)):
        names.update(DOTTED.findall(code))
    return {n for n in names if n.rsplit(".", 1)[-1] not in FILE_SUFFIXES}


def _resolve(name: str) -> None:
    """Import the longest module prefix of ``name`` and get the rest as attributes."""
    parts = name.split(".")
    if parts[0] == "EmbeddingGemma":
        parts = ["embgemma", *parts]
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and not module.startswith(e.name) and e.name.split(".")[0] != "embgemma":
                pytest.skip(f"{name} needs {e.name}, not installed")
            continue
        except ImportError as e:  # an integration says which extra it needs
            if "pip install" in str(e):
                pytest.skip(f"{name}: {e}")
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return
    raise ModuleNotFoundError(name)


NAMES = sorted({(page, name) for page in PAGES for name in _python_names(page)})


@pytest.mark.parametrize("page,name", NAMES, ids=[f"{p}:{n}" for p, n in NAMES])
def test_python_names_exist(page, name):
    try:
        _resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{page} names {name}, which does not exist: {type(e).__name__}: {e}")


def test_the_checks_catch_what_issue_14_found(tmp_path):
    """The defects the issue reported are what these checks refuse."""
    with pytest.raises(pytest.fail.Exception, match="EmbgemmaEmbeddings"):
        test_python_names_exist("docs/server.md", "embgemma.integrations.langchain.EmbgemmaEmbeddings")
    assert REPO_PATH.search("layouts (../shared/docs/model-spec.md, section 7)").group(1) == "../shared/docs/model-spec.md"
    assert not _inside_repo((ROOT / "docs" / "../../shared/docs/model-spec.md").resolve())
    assert _slug("Limits and errors", {}) == "limits-and-errors"
    assert _slug("`dimensions` and Matryoshka (v2)", {}) == "dimensions-and-matryoshka-v2"
    assert [m.group(1) for m in LINK.finditer("see [a](x.md#y), ![p](p.png \"t\") and [b [c]](<d.md>)")] == [
        "x.md#y", "p.png", "d.md"]
