"""Ray Data on a real local cluster (``ray.init(num_cpus=2)``, one for the module) and the golden model:
20,000 generated texts through a pool of two actors, one of which dies mid-job and is restarted by
Ray; the ``embed --engine ray`` job on files. Every id comes back exactly once, the embeddings are
bitwise those of one ``EmbeddingGemma.encode_document`` call, bad rows carry their reason. No timing
is asserted. The batch-format handling of the actor class is tested in-process, without Ray."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from conftest import GOLDEN_DIR

pytest.importorskip("ray", reason="the ray extra is not installed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

from embgemma.jobs.embedder import EmbedOptions  # noqa: E402
from embgemma.integrations.ray import RayEmbedder, default_sizing, embed_dataset, run_embed_job  # noqa: E402

pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="Ray's raylet would inherit the preloaded ASan runtime (tests/sanitize/run.sh)")

WORDS = ("river mountain city light house night garden window letter market school music history planet ocean "
         "winter summer forest road paper village station country family question reason system evening").split()
N = 20_000


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 16))) for _ in range(n)]


@pytest.fixture(scope="module")
def model():
    from embgemma import EmbeddingGemma

    return EmbeddingGemma(GOLDEN_DIR, threads=1)


@pytest.fixture(scope="module")
def cluster():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _vectors(column) -> np.ndarray:
    return np.stack(column.to_numpy(zero_copy_only=False))


# ------------------------------------------------------------------ the actor class, in-process


def test_embedder_takes_arrow_pandas_and_numpy_batches(model):
    texts = ["a river at night", None, "", "garden\ud800", "   ", "the planet"]
    ok = [0, 5]
    emb = RayEmbedder(model=str(GOLDEN_DIR), threads=1)
    ref = model.encode_document([texts[i] for i in ok])
    want_reasons = [None, "missing text (null)", "empty text",
                    "lone surrogate U+D800 at character 6 (not valid Unicode text)", "whitespace-only text", None]

    arrow_texts = [t if t is None or "\ud800" not in t else None for t in texts]  # Arrow holds no surrogates
    batches = {
        "arrow": pa.table({"id": list(range(6)), "text": arrow_texts}),
        "pandas": pd.DataFrame({"id": range(6), "text": pd.Series(texts, dtype=object)}),
        "numpy": {"id": np.arange(6), "text": np.array(texts, dtype=object)},
    }
    for kind, batch in batches.items():
        out = emb(batch)
        assert type(out) is type(batch) or kind == "numpy" and isinstance(out, dict), kind
        col, why = _arrow(out["embedding"]), _arrow(out["embedding_error"])
        assert col.type == pa.list_(pa.float32(), 48), kind
        assert col.null_count == 4, kind
        np.testing.assert_array_equal(_vectors(col.filter(col.is_valid())), ref, err_msg=kind)
        expected = list(want_reasons)
        if kind == "arrow":
            expected[3] = "missing text (null)"  # Arrow cannot hold the surrogate: it came in as null
        assert why.to_pylist() == expected, kind
        assert _arrow(out["id"]).to_pylist() == list(range(6)), kind  # the input columns stay


def _arrow(col):
    """An Arrow array from what a batch holds: an Arrow (chunked) array or an Arrow-backed pandas Series."""
    arr = col if isinstance(col, (pa.Array, pa.ChunkedArray)) else pa.array(col)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def test_embedder_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="row 1: empty text"):
        RayEmbedder(model=str(GOLDEN_DIR), threads=1, strict=True)(pa.table({"text": ["a", ""]}))
    with pytest.raises(KeyError, match="column 'body' is not in the batch"):
        RayEmbedder(model=str(GOLDEN_DIR), threads=1, text_column="body")(pa.table({"text": ["a"]}))
    with pytest.raises(ValueError, match="options= or model="):
        RayEmbedder(model=str(GOLDEN_DIR), options=EmbedOptions(model=str(GOLDEN_DIR)))
    with pytest.raises(ValueError, match="needs ranges"):
        RayEmbedder(model=str(GOLDEN_DIR), precision="int8")
    with pytest.raises(FileNotFoundError):
        RayEmbedder(model=str(tmp_path / "missing"))  # loaded in the constructor: the actor fails to start


def test_default_sizing():
    assert default_sizing(2) == (1, 2)
    assert default_sizing(8) == (4, 2)
    assert default_sizing(64) == (4, 16)
    assert default_sizing(64, cpus_per_actor=8) == (8, 8)
    assert default_sizing(1) == (1, 1)


# ------------------------------------------------------------------ on the cluster


def test_20000_texts_two_actors_one_killed(cluster, model, tmp_path):
    texts = _texts(N)
    bad = {17: None, 4321: "", 9876: "   "}
    for i, t in bad.items():
        texts[i] = t
    table = pa.table({"id": np.arange(N), "text": pa.array(texts, type=pa.string())})
    # 40 blocks, as 40 input files would give: a block goes to one actor at a time
    ds = cluster.data.from_arrow([table.slice(k, 500) for k in range(0, N, 500)])
    marker = str(tmp_path / "crashed")

    class CrashOnce(RayEmbedder):  # defined here, so Ray pickles it by value
        crash_marker = marker

        def __call__(self, batch):
            ids = batch.column("id").to_numpy()
            if 7777 in ids:
                try:
                    fd = os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass  # the retried batch, on the restarted actor
                else:
                    os.close(fd)
                    os._exit(1)  # the actor dies holding this batch
            out = super().__call__(batch)
            return out.append_column("pid", pa.array([os.getpid()] * batch.num_rows))

    out = embed_dataset(ds, model=str(GOLDEN_DIR), num_actors=2, map_batch_size=500, actor_class=CrashOnce)
    table = pa.concat_tables(cluster.get(out.to_arrow_refs()))

    assert os.path.exists(marker), "the actor never crashed: the test tested nothing"
    ids = table.column("id").to_numpy()
    assert len(ids) == N and np.array_equal(np.sort(ids), np.arange(N)), "ids lost or duplicated"
    assert len(set(table.column("pid").to_pylist())) >= 2  # two actors (three pids with the restarted one)
    order = np.argsort(ids)
    emb, err = table.column("embedding").take(order), table.column("embedding_error").take(order).to_pylist()
    assert [i for i, e in enumerate(err) if e is not None] == sorted(bad)
    assert err[17] == "missing text (null)" and err[4321] == "empty text" and err[9876] == "whitespace-only text"
    valid = [i for i in range(N) if i not in bad]
    ref = model.encode_document([texts[i] for i in valid])  # one call: its own batching
    got = _vectors(emb.filter(emb.is_valid()))
    assert got.dtype == np.float32 and np.array_equal(got, ref), "not bitwise equal to EmbeddingGemma.encode"


def _write_inputs(folder):
    texts = _texts(300, seed=5)
    pq.write_table(pa.table({"doc": [f"p{i}" for i in range(100)], "text": texts[:100],
                             "lang": ["en"] * 100}), folder / "a.parquet", row_group_size=37)
    lines = [json.dumps({"doc": f"j{i}", "text": texts[100 + i], "lang": "de"}) for i in range(100)]
    lines[10] = json.dumps({"doc": "j10", "text": 5, "lang": "de"})
    lines[20] = "{not json"
    lines[30] = json.dumps({"doc": "j30", "lang": "de"})
    lines[40] = json.dumps({"doc": "j40", "text": "bad \ud800 text", "lang": "de"})
    lines.insert(50, "")  # a blank line is no row
    (folder / "b.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["doc,text,lang"] + [f"c{i},{texts[200 + i]},fr" for i in range(100)]
    rows[5] = "c4,,fr"
    rows[7] = "c6,x,fr,extra"
    (folder / "c.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return texts


def test_embed_job_on_files(cluster, model, tmp_path):
    texts = _write_inputs(tmp_path)
    out = tmp_path / "out.parquet"
    opts = EmbedOptions(model=str(GOLDEN_DIR), id_column="doc", passthrough=("lang",), threads=1)
    stats = run_embed_job([tmp_path / "a.parquet", tmp_path / "b.jsonl", tmp_path / "c.csv"], out, opts,
                          num_actors=2, map_batch_size=64)
    assert cluster.is_initialized()  # a running Ray is used, not shut down
    errors = [json.loads(line) for line in (tmp_path / "out.parquet.errors.jsonl").read_text().splitlines()]
    bad = {"j10": "not a string (int)", "j30": "no 'text' field",
           "j40": "lone surrogate U+D800 at character 4 (not valid Unicode text)",
           "c4": "empty text", "c6": "4 fields where the header has 3"}
    assert [(e["id"], e["reason"]) for e in errors if e["id"] is not None] == list(bad.items())
    nojson = [e for e in errors if e["id"] is None]
    assert len(nojson) == 1 and nojson[0]["reason"].startswith("not valid JSON") and nojson[0]["row"] == 120
    assert nojson[0]["file"] == str((tmp_path / "b.jsonl").resolve()) and nojson[0]["file_row"] == 20
    assert stats["rows"] == 300 and stats["errors"] == 6 and stats["embedded"] == 294

    t = pq.read_table(out)
    assert t.column_names == ["id", "embedding", "lang"]
    ids = [f"p{i}" for i in range(100)] + [f"j{i}" for i in range(100)] + [f"c{i}" for i in range(100)]
    keep = [k for k, i in enumerate(ids) if i not in bad and k != 120]
    assert t.column("id").to_pylist() == [ids[k] for k in keep]  # input order
    assert t.column("lang").to_pylist() == [("en", "de", "fr")[k // 100] for k in keep]
    assert np.array_equal(_vectors(t.column("embedding")), model.encode_document([texts[k] for k in keep]))


def test_embed_job_text_file_strict(cluster, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"first line\n\nthird \xff line\nfourth\n")
    opts = EmbedOptions(model=str(GOLDEN_DIR), threads=1, strict=True, allow_empty=True)
    with pytest.raises(ValueError, match=r"row 2 \(id 2, .*in\.txt row 2\): not valid UTF-8 \(byte 0xFF at character 6\)"):
        run_embed_job([src], tmp_path / "out.parquet", opts, num_actors=1)
    assert not list(tmp_path.glob("out.parquet*")), "a failed job leaves no output behind"
