"""``embgemma embed`` on the golden model: every input format gives the engine's own embeddings, ids,
titles and kept columns land in the output, bad rows go to the errors file (or stop the run with
--strict), a job with other settings is refused naming what differs, and a run killed with SIGKILL,
interrupted with Ctrl-C or terminated with SIGTERM, then rerun, leaves files byte-identical to an
uninterrupted run's, on the local engine and on Ray (``--engine ray``, which writes the same files).
Most runs are in-process (``embgemma.__main__.main``); the signal tests run the command as a child
process (``python -m embgemma embed``), as a user does. No timing is asserted."""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDEN_DIR

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
# one engine thread: results do not depend on it, and the test machines are small and shared
BASE = ["--model", str(GOLDEN_DIR), "--threads", "1", "--quiet"]
WORDS = ("river mountain city light house night garden window letter market school music history planet ocean "
         "winter summer forest road paper village station country family question reason system evening").split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 24))) for _ in range(n)]


def _embed(*args: str, quiet: bool = True) -> int:
    from embgemma.__main__ import main

    return main(["embed", *map(str, args), *(BASE if quiet else BASE[:-1])])


@pytest.fixture(scope="module")
def model():
    from embgemma import EmbeddingGemma

    return EmbeddingGemma(GOLDEN_DIR, threads=1)


def _write(path: Path, fmt: str, rows: list[dict]) -> Path:
    if fmt in ("jsonl", "jsonl.gz"):
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path.write_bytes(gzip.compress(data, mtime=0) if fmt.endswith(".gz") else data)
    elif fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="," if fmt == "csv" else "\t")
            w.writeheader()
            w.writerows(rows)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=37)
    else:
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _errors(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "tsv", "parquet", "txt"])
def test_every_input_format_gives_the_engines_embeddings(fmt, tmp_path, model, capsys):
    texts = _texts(120, seed=1)
    src = _write(tmp_path / f"in.{fmt}", fmt, [{"text": t} for t in texts])
    progress = [] if fmt != "jsonl" else ["--input-format", "jsonl"]  # one run with its progress bar shown
    from embgemma.__main__ import main

    args = ["embed", str(src), "-o", str(tmp_path / "out.npy"), "--shard-size", "50", "--model", str(GOLDEN_DIR),
            "--threads", "1", *progress]
    assert main(args if progress else [*args, "--quiet"]) == 0
    out = np.load(tmp_path / "out.npy")
    np.testing.assert_array_equal(out, model.encode_document(texts))
    assert not (tmp_path / "out.npy.parts").exists() and not (tmp_path / "out.npy.errors.jsonl").exists()
    err = capsys.readouterr().err
    if progress:
        assert "text/s" in err and "tok/s" in err and "120 of 120 rows" in err


def test_zstd_lz4_and_uri_inputs(tmp_path, model):
    """One format table for every engine: .zst and .lz4 too (pyarrow's codecs), and URIs pyarrow opens."""
    texts = _texts(30, seed=12)
    data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    for codec, suffix in (("zstd", "zst"), ("lz4", "lz4")):
        with pa.CompressedOutputStream(str(tmp_path / f"in.jsonl.{suffix}"), codec) as f:
            f.write(data)
        assert _embed(tmp_path / f"in.jsonl.{suffix}", "-o", tmp_path / f"{suffix}.npy") == 0
        np.testing.assert_array_equal(np.load(tmp_path / f"{suffix}.npy"), model.encode_document(texts))
    (tmp_path / "in.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    assert _embed((tmp_path / "in.txt").as_uri(), "-o", tmp_path / "uri.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "uri.npy"), model.encode_document(texts))


def test_parquet_output_ids_titles_and_kept_columns(tmp_path, model):
    texts = _texts(90, seed=2)
    titles = [None if i % 4 == 0 else f"Title {i}" for i in range(90)]
    rows = [{"doc": f"d{i}", "text": t, "title": ti, "n": i, "tags": ["a", str(i)]}
            for i, (t, ti) in enumerate(zip(texts, titles))]
    for r in rows[::4]:
        del r["title"]  # a missing title is 'none', like None
    src = _write(tmp_path / "in.jsonl", "jsonl", rows)
    assert _embed(src, "-o", tmp_path / "out.parquet", "--id-column", "doc", "--title-column", "title",
                  "--keep-columns", "n,tags", "--keep-columns", "title", "--shard-size", "40") == 0
    t = pq.read_table(tmp_path / "out.parquet")
    assert t.column_names == ["id", "embedding", "n", "tags", "title"]
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 48)
    assert t.schema.field("n").type == pa.int64() and t.schema.field("tags").type == pa.list_(pa.string())
    assert t["id"].to_pylist() == [f"d{i}" for i in range(90)]
    assert t["title"].to_pylist() == titles and t["tags"].to_pylist()[5] == ["a", "5"]
    emb = np.asarray(t["embedding"].combine_chunks().flatten()).reshape(90, 48)
    np.testing.assert_array_equal(emb, model.encode_document(texts, titles=titles))

    # a Parquet input keeps its column types; a folder output is a dataset readable as one table
    src2 = tmp_path / "in.parquet"
    when = pa.array(np.arange(90).astype("datetime64[ms]"))
    pq.write_table(pa.table({"key": pa.array(range(1000, 1090), pa.int32()), "body": texts, "when": when}), src2,
                   row_group_size=25)
    assert _embed(src2, "-o", f"{tmp_path / 'ds'}/", "--text-column", "body", "--id-column", "key",
                  "--keep-columns", "when", "--shard-size", "40", "--prompt-name", "query") == 0
    names = sorted(p.name for p in (tmp_path / "ds").iterdir())
    assert names == ["_SUCCESS", "_manifest.json", "part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    d = pq.read_table(tmp_path / "ds")
    assert d.schema.field("id").type == pa.int32() and d.schema.field("when").type == when.type
    assert d["id"].to_pylist() == list(range(1000, 1090)) and d["when"].equals(pa.chunked_array([when]))
    emb = np.asarray(d["embedding"].combine_chunks().flatten()).reshape(90, 48)
    np.testing.assert_array_equal(emb, model.encode_query(texts))


def test_truncation_is_said_once_not_warned_per_batch(tmp_path, model, capsys):
    import warnings

    texts = _texts(40, seed=11)
    texts[5] = " ".join(WORDS * 20)  # far over the golden model's 256 tokens
    src = _write(tmp_path / "in.txt", "txt", [{"text": t} for t in texts])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _embed(src, "-o", tmp_path / "out.npy", "--batch-size", "4", quiet=False) == 0
    assert not [w for w in caught if "max_seq_length" in str(w.message)]
    assert "1 text(s) longer than max_seq_length=256 tokens were truncated" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model.encode_document(texts))


def test_dim_precision_and_dtype(tmp_path, model):
    from embgemma import EmbeddingGemma, quantize_embeddings

    texts = _texts(60, seed=3)
    src = _write(tmp_path / "in.txt", "txt", [{"text": t} for t in texts])
    assert _embed(src, "-o", tmp_path / "b.npy", "--dim", "32", "--precision", "binary", "--prompt-name", "STS") == 0
    want = model.encode(texts, prompt_name="STS", truncate_dim=32, precision="binary")
    got = np.load(tmp_path / "b.npy")
    assert got.dtype == np.int8 and got.shape == (60, 4)
    np.testing.assert_array_equal(got, want)

    ranges = np.vstack([np.full(48, -0.5), np.full(48, 0.5)]).astype(np.float32)
    np.save(tmp_path / "ranges.npy", ranges)
    assert _embed(src, "-o", tmp_path / "q.parquet", "--precision", "int8", "--ranges", tmp_path / "ranges.npy",
                  "--prompt", "") == 0
    t = pq.read_table(tmp_path / "q.parquet")
    assert t.schema.field("embedding").type == pa.list_(pa.int8(), 48)
    want = quantize_embeddings(model.encode(texts, prompt=""), "int8", ranges=ranges)
    np.testing.assert_array_equal(np.asarray(t["embedding"].combine_chunks().flatten()).reshape(60, 48), want)

    assert _embed(src, "-o", tmp_path / "bf.npy", "--dtype", "bfloat16") == 0
    bf = EmbeddingGemma(GOLDEN_DIR, threads=1, dtype="bfloat16")
    np.testing.assert_array_equal(np.load(tmp_path / "bf.npy"), bf.encode_document(texts))


# ------------------------------------------------------------------------------------------- bad rows


def _bad_jsonl(path: Path, texts: list[str]) -> tuple[Path, dict[int, str]]:
    """texts as JSON Lines with bad rows mixed in; returns the file and {row: part of the reason}."""
    lines = [json.dumps({"id": f"r{i}", "text": t}).encode() for i, t in enumerate(texts)]
    bad = {
        3: (b'{"id": "r3", "text": ""}', "empty text"),
        7: (b'{"id": "r7", "text": "   "}', "whitespace-only"),
        11: (b'{"id": "r11", "text": 42}', "not a string (int)"),
        12: (b'{"id": "r12", "text": null}', "missing text"),
        20: (b'{"id": "r20", "text": "a \\ud800 b"}', "lone surrogate U+D800"),
        21: (b'{"id": "r21", "text": "caf\xe9"}', "not valid JSON"),  # Latin-1 byte, not UTF-8
        30: (b'{"id": "r30", "text": "oops', "not valid JSON"),
        31: (b'{"id": "r31", "body": "no text field"}', "no 'text' field"),
        32: (b'[1, 2]', "not a JSON object"),
    }
    for i, (line, _) in bad.items():
        lines[i] = line
    path.write_bytes(b"\n".join(lines[:40]) + b"\n\n" + b"\n".join(lines[40:]) + b"\n")  # a blank line is no row
    return path, {i: why for i, (_, why) in bad.items()}


def test_bad_rows_go_to_the_errors_file(tmp_path, model):
    texts = _texts(70, seed=4)
    src, bad = _bad_jsonl(tmp_path / "in.jsonl", texts)
    assert _embed(src, "-o", tmp_path / "out.parquet", "--id-column", "id", "--shard-size", "16") == 0
    errs = _errors(tmp_path / "out.parquet.errors.jsonl")
    assert [e["row"] for e in errs] == sorted(bad)
    for e in errs:
        assert bad[e["row"]] in e["reason"], e
        assert e["file"] == str(src.resolve()) and e["file_row"] == e["row"]
        assert e["id"] == (None if e["row"] in (21, 30, 32) else f"r{e['row']}")
    good = [i for i in range(70) if i not in bad]
    t = pq.read_table(tmp_path / "out.parquet")
    assert t["id"].to_pylist() == [f"r{i}" for i in good]
    emb = np.asarray(t["embedding"].combine_chunks().flatten()).reshape(len(good), 48)
    np.testing.assert_array_equal(emb, model.encode_document([texts[i] for i in good]))

    # .npy keeps one row per input row: a bad row is zeros; --allow-empty embeds the empty texts
    assert _embed(src, "-o", tmp_path / "out.npy", "--id-column", "id", "--allow-empty") == 0
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (70, 48)
    errs = _errors(tmp_path / "out.npy.errors.jsonl")
    assert {e["row"] for e in errs} == set(bad) - {3, 7}
    assert not out[sorted(set(bad) - {3, 7})].any()
    np.testing.assert_array_equal(out[good], model.encode_document([texts[i] for i in good]))
    np.testing.assert_array_equal(out[[3, 7]], model.encode_document(["", "   "]))

    # invalid UTF-8 in a text file is a bad row too
    (tmp_path / "in.txt").write_bytes(b"first line\nbad \xff byte\n\nlast line")
    assert _embed(tmp_path / "in.txt", "-o", tmp_path / "t.npy") == 0
    assert [(e["row"], e["reason"]) for e in _errors(tmp_path / "t.npy.errors.jsonl")] == [
        (1, "not valid UTF-8 (byte 0xFF at character 4)"), (2, "empty text")]


def test_strict_stops_at_the_first_bad_row(tmp_path, capsys):
    src, _ = _bad_jsonl(tmp_path / "in.jsonl", _texts(70, seed=5))
    assert _embed(src, "-o", tmp_path / "out.parquet", "--id-column", "id", "--shard-size", "2", "--strict") == 1
    err = capsys.readouterr().err
    assert "--strict: row 3 (id 'r3'" in err and "empty text" in err
    assert not (tmp_path / "out.parquet").exists()
    assert (tmp_path / "out.parquet.parts" / "shard-000000.parquet").exists()  # rows 0-1: kept
    assert not (tmp_path / "out.parquet.parts" / "shard-000001.parquet").exists()


# ------------------------------------------------------------------------------------------- refusals


def test_refusals_name_the_problem(tmp_path, capsys):
    src = _write(tmp_path / "in.csv", "csv", [{"doc": str(i), "text": t} for i, t in enumerate(_texts(30, 6))])
    cases = [
        ((src, "-o", tmp_path / "o.csv"), "must be a .parquet file, a .npy file, or a folder"),
        ((src, "-o", tmp_path / "o.npy", "--text-column", "body"), "no column 'body' in the header"),
        ((src, "-o", tmp_path / "o.npy", "--keep-columns", "doc"), "--keep-columns needs a Parquet output"),
        ((tmp_path / "missing.jsonl", "-o", tmp_path / "o.npy"), "no such input file"),
        (("-", "-o", tmp_path / "o.npy"), "not stdin"),
        ((src, "-o", tmp_path / "o.npy", "--precision", "int8"), "needs ranges"),
        ((src, "-o", tmp_path / "o.npy", "--prompt-name", "query", "--title-column", "doc"), "title_column"),
    ]
    (tmp_path / "arr.json").write_text('[{"text": "a"}]')
    (tmp_path / "in.txt").write_text("a\n")
    cases += [((tmp_path / "arr.json", "-o", tmp_path / "o.npy"), "a JSON array, not JSON Lines"),
              ((tmp_path / "in.txt", "-o", tmp_path / "o.npy", "--id-column", "x"),
               "plain-text inputs have no columns")]
    for args, message in cases:
        assert _embed(*args) == 2, args
        assert message in capsys.readouterr().err, args
    assert not list(tmp_path.glob("o.*"))

    assert _embed(src, "-o", tmp_path / "o.npy") == 0
    assert _embed(src, "-o", tmp_path / "o.npy") == 2
    assert "exists (a finished run?); pass --overwrite" in capsys.readouterr().err
    assert _embed(src, "-o", tmp_path / "o.npy", "--overwrite") == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert _embed(src, "-o", f"{tmp_path / 'other'}/") == 2
    assert "not an `embgemma embed` output" in capsys.readouterr().err


def test_a_finished_dataset_is_not_redone_and_other_settings_are_refused(tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", "jsonl", [{"text": t} for t in _texts(40, 7)])
    out = f"{tmp_path / 'ds'}/"
    assert _embed(src, "-o", out, "--shard-size", "16") == 0
    before = _files(tmp_path / "ds")
    capsys.readouterr()
    assert _embed(src, "-o", out, "--shard-size", "16", "--batch-size", "3") == 0  # batch size is not the job's
    assert "complete (same job); nothing to do" in capsys.readouterr().err
    assert _embed(src, "-o", out, "--shard-size", "16", "--dim", "32", "--prompt-name", "query") == 2
    err = capsys.readouterr().err
    assert "differs in prompt ('title: none | text: ' in the manifest, 'task: search result | query: ' now)" in err
    assert "dim (48 in the manifest, 32 now)" in err and "--overwrite" in err
    assert _files(tmp_path / "ds") == before


def test_an_output_inside_an_input_folder_is_not_read_as_input(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _write(corpus / "a.jsonl", "jsonl", [{"text": t} for t in _texts(30, 10)])
    out = f"{corpus / 'emb'}/"
    assert _embed(corpus, "-o", out, "--shard-size", "8") == 0
    assert len(pq.read_table(corpus / "emb")) == 30
    assert _embed(corpus, "-o", out, "--shard-size", "8") == 0
    assert "complete (same job); nothing to do" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- crashes

N_CRASH, SHARD = 600, 20


@pytest.fixture(scope="module")
def crash_input(tmp_path_factory):
    """Texts with bad rows (so the errors file is part of what must come out identical)."""
    folder = tmp_path_factory.mktemp("crash")
    src, _ = _bad_jsonl(folder / "in.jsonl", _texts(N_CRASH, seed=8))
    return src


def _job(src: Path, out: str) -> list[str]:
    return [str(src), "-o", out, "--id-column", "id", "--shard-size", str(SHARD)]


@pytest.fixture(scope="module")
def reference(crash_input, tmp_path_factory):
    """Uninterrupted runs, one per output kind: {kind: folder holding exactly its files}."""
    refs = {}
    for kind, name in (("parquet", "out.parquet"), ("npy", "out.npy"), ("dataset", "out/")):
        folder = tmp_path_factory.mktemp(f"ref-{kind}")
        assert _embed(*_job(crash_input, str(folder / name) + ("/" if kind == "dataset" else ""))) == 0
        refs[kind] = folder
    return refs


def _child(args: list[str]) -> subprocess.Popen:
    def default_sigint():  # a CI job started in the background inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "embgemma", "embed", *args, *BASE], env=CHILD_ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def _stop_after_first_shard(proc: subprocess.Popen, shard: Path, sig: int) -> str:
    deadline = time.monotonic() + 120
    while not shard.exists():
        assert proc.poll() is None, f"the run ended before its first shard: {proc.communicate()}"
        assert time.monotonic() < deadline, "no shard after 120 s"
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return err


@pytest.mark.parametrize("kind,name", [("parquet", "out.parquet"), ("npy", "out.npy")])
def test_sigkill_mid_run_then_rerun_is_byte_identical(kind, name, crash_input, reference, tmp_path, capsys):
    out = tmp_path / name
    proc = _child(_job(crash_input, str(out)))
    _stop_after_first_shard(proc, out.with_name(name + ".parts") / f"shard-000000.{kind}", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    parts = out.with_name(name + ".parts")
    assert not out.exists() and (parts / "manifest.json").exists(), "killed after the end: nothing was tested"
    done = len(list(parts.glob(f"shard-*.{kind}")))
    assert 1 <= done < N_CRASH // SHARD

    # the same output with other settings is refused, naming them, and leaves the shards alone
    assert _embed(*_job(crash_input, str(out)), "--dtype", "bfloat16", "--prompt-name", "query") == 2
    err = capsys.readouterr().err
    assert "dtype ('float32' in the manifest, 'bfloat16' now)" in err and "prompt (" in err
    assert len(list(parts.glob(f"shard-*.{kind}"))) == done

    assert _embed(*_job(crash_input, str(out)), quiet=False) == 0
    assert f"resuming: {done} of {N_CRASH // SHARD} shards are done" in capsys.readouterr().err
    assert _files(tmp_path) == _files(reference[kind])


@pytest.mark.parametrize("sig,rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_leave_a_resumable_dataset(sig, rc, crash_input, reference, tmp_path):
    out = tmp_path / "out"
    proc = _child(_job(crash_input, f"{out}/"))
    err = _stop_after_first_shard(proc, out / "part-000000.parquet", sig)
    assert proc.returncode == rc, err
    assert "Rerun the same command to resume" in err
    assert not list(out.rglob(".*.tmp-*")) and not (out / "_SUCCESS").exists()
    proc = _child(_job(crash_input, f"{out}/"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _files(out) == _files(reference["dataset"] / "out")


# ------------------------------------------------------------------------------------------- Ray


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="Ray's raylet would inherit the preloaded ASan runtime (see tests/sanitize/run.sh)")
def test_engine_ray_gives_the_local_engines_rows(tmp_path, capsys):
    pytest.importorskip("ray")
    texts = _texts(50, seed=9)
    src, bad = _bad_jsonl(tmp_path / "in.jsonl", texts)
    job = [src, "--id-column", "id"]
    assert _embed(*job, "-o", tmp_path / "local.parquet") == 0
    assert _embed(*job, "-o", tmp_path / "ray.parquet", "--engine", "ray") == 0
    local, ray_ = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert ray_.column_names == local.column_names == ["id", "embedding"]
    for name in ray_.column_names:
        assert ray_[name].equals(local[name]), name
    ids = sorted(str(e["id"]) for e in _errors(tmp_path / "ray.parquet.errors.jsonl"))
    assert ids == sorted(str(e["id"]) for e in _errors(tmp_path / "local.parquet.errors.jsonl"))
    assert len(ids) == len(bad)
    # the same job, so the same bytes, in every output kind the local engine writes
    assert (tmp_path / "ray.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()
    assert _embed(*job, "-o", tmp_path / "local.npy") == 0
    assert _embed(*job, "-o", tmp_path / "ray.npy", "--engine", "ray", "--shard-size", "16") == 0
    assert (tmp_path / "ray.npy").read_bytes() == (tmp_path / "local.npy").read_bytes()
    assert _errors(tmp_path / "ray.npy.errors.jsonl") == _errors(tmp_path / "local.npy.errors.jsonl")


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="Ray's raylet would inherit the preloaded ASan runtime (see tests/sanitize/run.sh)")
def test_engine_ray_sigkill_mid_run_then_rerun_is_byte_identical(crash_input, reference, tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    proc = _child([*_job(crash_input, str(out)), "--engine", "ray"])
    _stop_after_first_shard(proc, parts / "shard-000000.parquet", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and (parts / "manifest.json").exists(), "killed after the end: nothing was tested"
    done = len(list(parts.glob("shard-*.parquet")))
    assert 1 <= done < N_CRASH // SHARD

    # the same output with other settings is refused, naming them, and leaves the shards alone
    assert _embed(*_job(crash_input, str(out)), "--engine", "ray", "--dtype", "bfloat16", "--prompt-name", "query") == 2
    err = capsys.readouterr().err
    assert "dtype ('float32' in the manifest, 'bfloat16' now)" in err and "prompt (" in err
    assert len(list(parts.glob("shard-*.parquet"))) == done

    # resumed on Ray, the files are byte-identical to the local engine's uninterrupted run
    assert _embed(*_job(crash_input, str(out)), "--engine", "ray", quiet=False) == 0
    assert f"resuming: {done} of {N_CRASH // SHARD} shards are done" in capsys.readouterr().err
    assert _files(tmp_path) == _files(reference["parquet"])
