"""Apache Spark on a real local session (``local[2]``, one for the module) and the golden model:
20,000 generated texts through ``embed_udf`` (predict_batch_udf) and ``embed_frames`` (mapInPandas).
Every id comes back exactly once, the embeddings are bitwise those of one
``EmbeddingGemma.encode_document`` call, bad rows get a null embedding and their reason. No timing is
asserted. Needs a Java runtime (.ci/run installs Debian's openjdk-17-jre-headless when missing)."""

from __future__ import annotations

import os
import random
import shutil
import sys

import numpy as np
import pytest

from conftest import GOLDEN_DIR

pytest.importorskip("pyspark", reason="the spark extra is not installed")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from embgemma.jobs.embedder import BatchEmbedder, EmbedOptions  # noqa: E402
from embgemma.integrations.spark import embed_frames, embed_udf  # noqa: E402

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
                       reason="no Java runtime (apt-get install openjdk-17-jre-headless)"),
    pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                       reason="the JVM would inherit the preloaded ASan runtime (tests/sanitize/run.sh)"),
]

WORDS = ("river mountain city light house night garden window letter market school music history planet ocean "
         "winter summer forest road paper village station country family question reason system evening").split()
N = 20_000
BAD = {17: None, 4321: "", 9876: "   "}
MODEL = str(GOLDEN_DIR)


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 16))) for _ in range(n)]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this interpreter (embgemma installed)
    session = (SparkSession.builder.master("local[2]").appName("embgemma-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def corpus(spark):
    texts = _texts(N)
    for i, t in BAD.items():
        texts[i] = t
    pdf = pd.DataFrame({"id": np.arange(N, dtype=np.int64), "text": pd.Series(texts, dtype=object)})
    return texts, spark.createDataFrame(pdf, "id long, text string").repartition(4)


@pytest.fixture(scope="module")
def reference():
    from embgemma import EmbeddingGemma

    texts = _texts(N)
    valid = [i for i in range(N) if i not in BAD]
    emb = EmbeddingGemma(GOLDEN_DIR, threads=1).encode_document([texts[i] for i in valid])  # one call
    return dict(zip(valid, emb))


def _check(rows, reference, emb_field: str, err_field: str | None) -> None:
    ids = [r["id"] for r in rows]
    assert len(ids) == N and sorted(ids) == list(range(N)), "ids lost or duplicated"
    for r in rows:
        if r["id"] in BAD:
            assert r[emb_field] is None
            if err_field:
                want = {17: "missing text (null)", 4321: "empty text", 9876: "whitespace-only text"}[r["id"]]
                assert r[err_field] == want
            continue
        got = np.asarray(r[emb_field], dtype=np.float32)
        assert np.array_equal(got, reference[r["id"]]), f"row {r['id']}: not bitwise equal to encode_document"
        if err_field:
            assert r[err_field] is None


def test_embed_udf_20000_texts(spark, corpus, reference):
    from pyspark.sql.functions import col

    _, df = corpus
    out = df.withColumn("embedding", embed_udf(model=MODEL)(col("text")))
    assert out.schema["embedding"].dataType.simpleString() == "array<float>"
    _check(out.collect(), reference, "embedding", None)


def test_embed_frames_20000_texts(spark, corpus, reference):
    _, df = corpus
    out = embed_frames(df, model=MODEL)
    assert out.columns == ["id", "embedding", "embedding_error"]
    _check(out.collect(), reference, "embedding", "embedding_error")


def test_titles_errors_and_precision(spark):
    from pyspark.sql.functions import col

    rows = [(0, "a river at night", "Rivers"), (1, "", "Empty"), (2, "the planet", None), (3, None, "x")]
    df = spark.createDataFrame(rows, "id long, body string, heading string").coalesce(1)
    out = df.select("id", embed_udf(model=MODEL, title_column="heading", with_errors=True)(
        col("body"), col("heading")).alias("r")).orderBy("id").collect()
    ref = BatchEmbedder(EmbedOptions(model=MODEL, title_column="heading", threads=1))
    want = ref.embed(["a river at night", "the planet"], ["Rivers", None])
    assert np.array_equal(np.asarray(out[0].r.embedding, np.float32), want[0])
    assert np.array_equal(np.asarray(out[2].r.embedding, np.float32), want[1])
    assert [r.r.error for r in out] == [None, "empty text", None, "missing text (null)"]

    frames = embed_frames(df, model=MODEL, text_column="body", title_column="heading", passthrough=("heading",),
                          precision="ubinary").orderBy("id").collect()
    assert [r.embedding_error for r in frames] == [None, "empty text", None, "missing text (null)"]
    packed = BatchEmbedder(EmbedOptions(model=MODEL, title_column="heading", precision="ubinary", threads=1))
    want = packed.embed(["a river at night", "the planet"], ["Rivers", None])
    assert frames[0].embedding == want[0].tolist() and frames[2].embedding == want[1].tolist()  # 0..255, smallint
    assert frames[1].embedding is None and [r.heading for r in frames] == ["Rivers", "Empty", None, "x"]


def test_strict_fails_the_job(spark):
    from pyspark.sql.functions import col

    df = spark.createDataFrame([(0, "fine"), (1, "   ")], "id long, text string").coalesce(1)
    with pytest.raises(Exception, match=r"row 1: whitespace-only text \(strict mode"):
        df.select(embed_udf(model=MODEL, strict=True)(col("text"))).collect()
    with pytest.raises(ValueError, match="needs id_column"):
        embed_frames(df, model=MODEL, id_column=None)
    with pytest.raises(TypeError, match="call with the text column"):
        embed_udf(model=MODEL)(col("text"), col("id"))
