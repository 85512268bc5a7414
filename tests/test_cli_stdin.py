"""``embgemma encode -`` reads one text per stdin line: blank lines are skipped (not embedded as
empty texts) and said on stderr; the JSON lines name each text's line number."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from conftest import GOLDEN_DIR


def _encode(*args: str, stdin: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "embgemma", "encode", "--model", str(GOLDEN_DIR), *args, "-"],
                          input=stdin, capture_output=True, text=True, env=env, timeout=120)


def test_blank_stdin_lines_are_skipped_and_said(golden_model):
    r = _encode(stdin="Mars is red.\n\n   \nVenus is Earth's twin.\r\n\t\n")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["index"], x["line"], x["text"]) for x in rows] == [(0, 1, "Mars is red."),
                                                                   (1, 4, "Venus is Earth's twin.")]
    want = golden_model.encode(["Mars is red.", "Venus is Earth's twin."])
    np.testing.assert_allclose(np.array([x["embedding"] for x in rows]), want, atol=1e-7)
    assert "skipped 3 blank line(s) of stdin (line 2, 3, 5)" in r.stderr


def test_npy_rows_are_the_non_blank_lines(tmp_path, golden_model):
    out = tmp_path / "e.npy"
    r = _encode("-o", str(out), stdin="\n".join(["a", ""] * 12) + "\n")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), golden_model.encode(["a"] * 12))
    assert "skipped 12 blank line(s) of stdin (line 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, ...)" in r.stderr


def test_only_blank_lines_is_an_error():
    r = _encode(stdin="\n \n\n")
    assert r.returncode == 2 and r.stdout == ""
    assert "skipped 3 blank line(s)" in r.stderr and "no text given" in r.stderr


def test_no_blank_lines_no_message():
    r = _encode(stdin="one\ntwo")  # no final newline
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["text"] for line in r.stdout.splitlines()] == ["one", "two"]
    assert "skipped" not in r.stderr
