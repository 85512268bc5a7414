"""``embgemma bench``: the self-benchmark runs end to end on the golden model, writes one JSON row per
requested dtype, skips a dtype the model cannot be loaded in, and refuses bad arguments with a clear
message. Run as a child process (``python -m embgemma``), as a user runs it; no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GOLDEN_DIR

ROOT = Path(__file__).resolve().parent.parent
# the child imports this checkout's embgemma, whatever is installed
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embgemma", "bench", *args], capture_output=True, text=True,
                          env=CHILD_ENV, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    """One short run over three usable dtypes and one the golden model cannot take (its 48-wide
    matrices are no multiple of the 32-weight Q4_0 blocks); "bf16" is an alias of bfloat16."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = _bench("--model", str(GOLDEN_DIR), "--dtypes", "float32,bf16,int8,q4_0", "--threads", "1",
                  "--seconds", "0.4", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text(encoding="utf-8"))


def test_json_has_a_row_per_requested_dtype(golden_run):
    _, data = golden_run
    assert [r["dtype"] for r in data["results"]] == ["float32", "bfloat16", "int8", "q4_0"]
    for row in data["results"][:3]:
        assert row["status"] == "ok", row
        assert row["loaded_as"] == row["dtype"]
        assert row["threads"] == 1
        assert row["load_s"] >= 0
        assert row["tokens"] > 0 and row["calls"] >= 1
        assert row["tok_per_s"] > 0
        assert row["queries"] >= 5
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        assert row["peak_rss_increase_mib"] is None or row["peak_rss_increase_mib"] >= 0


def test_unusable_dtype_is_skipped_with_a_note(golden_run):
    proc, data = golden_run
    q4 = data["results"][3]
    assert q4["status"] == "skipped"
    assert "multiple of 32" in q4["note"]
    assert "tok_per_s" not in q4
    assert "q4_0" in proc.stdout and "skipped" in proc.stdout


def test_report_names_machine_model_and_workload(golden_run):
    proc, data = golden_run
    m = data["machine"]
    assert m["threads"] == 1 and m["cores"] >= 1
    assert m["isa"] in m["supported_isas"]
    assert m["cpu"]
    assert data["model"]["path"] == str(GOLDEN_DIR)
    w = data["workload"]
    # token counts include prompt, BOS and EOS, and stay within the golden model's 256 tokens
    assert max(w["doc_lengths"]) == 256
    assert all(t > sum(w["doc_lengths"]) * 0.8 for t in w["tokens_per_batch"])
    assert w["query_tokens"] > 0
    # the table on stdout: a header, a line per dtype, the machine line
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["dtype", "load", "s"]
    assert any(line.startswith("machine: ") and "threads" in line for line in lines)
    for dtype in ("float32", "bfloat16", "int8"):
        assert any(line.split()[:1] == [dtype] for line in lines), dtype


def test_texts_are_deterministic():
    from embgemma import EmbeddingGemma
    from embgemma.bench import make_workload

    model = EmbeddingGemma(GOLDEN_DIR, threads=1)
    a, b = make_workload(model), make_workload(model)
    assert a["batches"] == b["batches"] and a["queries"] == b["queries"]
    assert a["batch_tokens"] == b["batch_tokens"]
    # the counts are what the model sees: its own tokenizer, with the document prompt, BOS and EOS
    first = a["batches"][0]
    mask = model.tokenize([a["doc_prompt"] + t for t in first])["attention_mask"]
    assert a["batch_tokens"][0] == int(mask.sum())
    # one text per length, each within a word of its length and none over it (nor max_seq_length), but
    # for lengths the prompt alone fills (the golden tokenizer spells words out letter by letter)
    prompt_only = int(model.tokenize([a["doc_prompt"]])["attention_mask"].sum())
    for count, length in zip(sorted(mask.sum(axis=1).tolist()), sorted(a["doc_lengths"])):
        if length > prompt_only + 16:
            assert length - 16 < count <= length <= model.max_seq_length
        else:
            assert prompt_only < count <= prompt_only + 16


@pytest.mark.parametrize("spec", ["float16", "float32,nope", ",", ""])
def test_bad_dtypes_exit_2_with_a_clear_message(spec):
    proc = _bench("--model", str(GOLDEN_DIR), "--dtypes", spec, "--seconds", "0.1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("embgemma bench: --dtypes")
    assert "Traceback" not in proc.stderr
    if spec not in (",", ""):
        assert "unknown dtype" in proc.stderr and "float32, bfloat16, int16, int8, q8_0, q4_0" in proc.stderr


@pytest.mark.parametrize("args", [("--seconds", "0"), ("--seconds", "-1"), ("--threads", "0")])
def test_bad_numbers_exit_2(args):
    proc = _bench("--model", str(GOLDEN_DIR), *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"embgemma bench: {args[0]} must be")


def test_missing_model_exits_1(tmp_path):
    proc = _bench("--model", str(tmp_path / "no-such-model"), "--seconds", "0.1", "--quiet")
    assert proc.returncode == 1
    assert proc.stderr.startswith("embgemma bench: FileNotFoundError:")
    assert "Traceback" not in proc.stderr


def test_model_required():
    proc = _bench("--seconds", "0.1")
    assert proc.returncode == 2
    assert "--model" in proc.stderr


def test_no_usable_dtype_exits_1(tmp_path):
    out = tmp_path / "b.json"
    proc = _bench("--model", str(GOLDEN_DIR), "--dtypes", "q8_0,q4_0", "--seconds", "0.1", "--json", str(out))
    assert proc.returncode == 1
    assert "could not be loaded in any of the requested dtypes" in proc.stderr
    rows = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
