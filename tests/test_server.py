"""The HTTP server, started as a real process on loopback: the official openai client, plain HTTP
clients of the TEI and Ollama routes, concurrent clients, limits and bad input, operations
(health while loading, SIGTERM drain, access logs, API key), and a bounded load test.

Expected embeddings come from the library itself (``EmbeddingGemma.encode``), which the parity
suite ties to sentence-transformers; the server must give the same numbers, bit for bit.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from conftest import GOLDEN_DIR  # noqa: E402

import embgemma  # noqa: E402
from embgemma import EmbeddingGemma  # noqa: E402
from embgemma.server.ollama_api import OLLAMA_VERSION  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Which planet is known as the Red Planet?", "Mars is red.", "Venus is Earth's twin.", "a"]
LONG = "x y " * 200  # 400+ tokens with the golden model's character tokenizer (max 256)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m embgemma serve`` in a subprocess; its log lines are kept."""

    def __init__(self, *args: str, model: Path = GOLDEN_DIR, wait: bool = True) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "embgemma", "serve", "--model", str(model), "--port", str(self.port),
             "--threads", "2", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            self.wait_healthy()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_healthy(self, timeout: float = 60.0) -> None:
        t_end = time.time() + timeout
        while time.time() < t_end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n" + "\n".join(self.lines))
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server not healthy in time:\n" + "\n".join(self.lines))

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def log_records(self) -> list[dict]:
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


@pytest.fixture(scope="module")
def server():
    s = Server("--max-client-batch-size", "64", "--max-request-tokens", "4000", "--payload-limit", "100000",
               "--route-prompt", "/api/embed=query")
    yield s
    assert s.stop() == 0, "\n".join(s.lines[-30:])


@pytest.fixture(scope="module")
def model():
    return EmbeddingGemma(GOLDEN_DIR, threads=2)


def post(server, path: str, body, **kw) -> httpx.Response:
    kw.setdefault("timeout", 300)  # generous: the suite also runs under AddressSanitizer
    if isinstance(body, (bytes, str)):
        return httpx.post(server.url + path, content=body, **kw)
    return httpx.post(server.url + path, json=body, **kw)


# ---------------------------------------------------------------------------------------------- OpenAI


def test_openai_client_base64_default_matches_library(server, model):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    r = client.embeddings.create(model="embeddinggemma", input=TEXTS)  # the SDK asks for base64 by default
    got = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert [d.index for d in r.data] == list(range(len(TEXTS)))
    np.testing.assert_array_equal(got, model.encode(TEXTS))
    assert r.usage.prompt_tokens == r.usage.total_tokens
    assert r.usage.prompt_tokens == int(model.tokenize(TEXTS)["attention_mask"].sum())
    assert r.model == "golden_model"


def test_openai_client_float_single_string_dimensions_and_prompt(server, model):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    r = client.embeddings.create(model="m", input="Mars is red.", encoding_format="float", dimensions=16)
    got = np.array(r.data[0].embedding, dtype=np.float32)
    np.testing.assert_array_equal(got, model.encode("Mars is red.", truncate_dim=16))
    assert abs(np.linalg.norm(got) - 1) < 1e-5
    r = client.embeddings.create(model="m", input=TEXTS, extra_body={"prompt_name": "query"})
    np.testing.assert_array_equal(np.array([d.embedding for d in r.data], np.float32),
                                  model.encode(TEXTS, prompt_name="query"))
    # a prompt-scoped base URL gives the same without extra_body
    scoped = openai.OpenAI(base_url=server.url + "/prompts/query/v1", api_key="unused", max_retries=0)
    r2 = scoped.embeddings.create(model="m", input=TEXTS)
    np.testing.assert_array_equal(np.array([d.embedding for d in r2.data], np.float32),
                                  model.encode(TEXTS, prompt_name="query"))


def test_openai_token_arrays(server, model):
    ids = model.tokenize(["Mars is red."])["input_ids"][0].tolist()  # <bos> ... <eos>
    inner = ids[1:-1]
    want = model.encode(["Mars is red."])
    for body_input in (inner, [inner], ids, [ids, "Mars is red."]):
        r = post(server, "/v1/embeddings", {"model": "m", "input": body_input})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        for d in data:
            np.testing.assert_array_equal(np.array(d["embedding"], np.float32), want[0])
    r = post(server, "/v1/embeddings", {"model": "m", "input": [inner], "prompt_name": "query"})
    assert r.status_code == 400 and "token-id inputs" in r.json()["error"]["message"]


def test_openai_base64_wire_format(server, model):
    r = post(server, "/v1/embeddings", {"model": "m", "input": "a", "encoding_format": "base64"})
    s = r.json()["data"][0]["embedding"]
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(s), dtype="<f4"), model.encode("a"))


def test_openai_models(server):
    r = httpx.get(server.url + "/v1/models")
    assert r.json()["data"][0]["id"] == "golden_model"


# ---------------------------------------------------------------------------------------------- TEI


def test_tei_embed(server, model):
    r = post(server, "/embed", {"inputs": TEXTS})
    assert r.status_code == 200
    np.testing.assert_array_equal(np.array(r.json(), np.float32), model.encode(TEXTS))
    for h in ("x-compute-tokens", "x-total-time", "x-queue-time", "x-inference-time", "x-tokenization-time"):
        assert h in r.headers
    r = post(server, "/embed", {"inputs": "Mars is red.", "prompt_name": "document", "dimensions": 8,
                                "normalize": False})
    want = model.encode(["Mars is red."], prompt_name="document", truncate_dim=8, normalize_embeddings=False)
    np.testing.assert_array_equal(np.array(r.json(), np.float32), want)
    assert abs(np.linalg.norm(want) - 1) > 1e-3  # not re-normalized


@pytest.mark.filterwarnings("ignore:1 text")
def test_tei_truncation_directions(server, model):
    ids = model.tokenize([LONG.strip() + " end"])  # truncated right by the library
    r = post(server, "/embed", {"inputs": LONG + " end", "truncate": True})
    np.testing.assert_array_equal(np.array(r.json(), np.float32), model.encode([LONG + " end"]))
    full = model.tokenizer.encode((LONG + " end").strip()).ids
    left = [full[0], *full[len(full) - 1 - 254 : len(full) - 1], full[-1]]
    assert len(left) == 256 and ids["input_ids"].shape[1] == 256
    for direction in ("Left", "left"):
        r = post(server, "/embed", {"inputs": [LONG + " end"], "truncate": True, "truncation_direction": direction})
        np.testing.assert_array_equal(np.array(r.json(), np.float32), model.encode_ids([left]))
    r = post(server, "/embed", {"inputs": ["ok", LONG], "truncate": False})
    assert r.status_code == 422
    assert "`inputs[1]`" in r.json()["error"] and r.json()["error_type"] == "validation"


# ---------------------------------------------------------------------------------------------- Ollama


def test_ollama_embed_and_route_default_prompt(server, model):
    r = post(server, "/api/embed", {"model": "embeddinggemma", "input": TEXTS})
    body = r.json()
    assert r.status_code == 200 and body["model"] == "embeddinggemma"
    # this server sets the query prompt as /api/embed's default (--route-prompt /api/embed=query)
    np.testing.assert_array_equal(np.array(body["embeddings"], np.float32), model.encode(TEXTS, prompt_name="query"))
    assert body["prompt_eval_count"] > 0 and body["total_duration"] > 0
    r = post(server, "/api/embed", {"model": "m", "input": "Mars is red.", "prompt_name": "document", "dimensions": 8})
    np.testing.assert_array_equal(np.array(r.json()["embeddings"], np.float32),
                                  model.encode(["Mars is red."], prompt_name="document", truncate_dim=8))
    assert post(server, "/api/embed", {"model": "m", "input": []}).json()["embeddings"] == []
    assert post(server, "/api/embed", {"model": "m", "input": ""}).json()["embeddings"] == []
    r = post(server, "/api/embed", {"model": "m", "input": [[1, 2, 3]]})
    assert r.status_code == 400 and "invalid input type" in r.json()["error"]
    r = post(server, "/api/embed", {"model": "m", "input": LONG, "truncate": False})
    assert r.status_code == 400 and "input[0]" in r.json()["error"]
    r = post(server, "/api/embeddings", {"model": "m", "prompt": "Mars is red."})
    np.testing.assert_array_equal(np.array(r.json()["embedding"], np.float32),
                                  model.encode("Mars is red.", prompt_name="query"))


def test_ollama_model_discovery(server):
    """What Ollama clients (Open WebUI, ...) call to find models: /api/tags, /api/version, /api/show."""
    from safetensors import safe_open

    files = sorted(p for p in GOLDEN_DIR.rglob("*") if p.is_file())
    params = 0
    for f in GOLDEN_DIR.rglob("*.safetensors"):
        with safe_open(f, "np") as t:
            params += sum(int(np.prod(t.get_slice(k).get_shape())) for k in t.keys())
    tags = httpx.get(server.url + "/api/tags")
    assert tags.status_code == 200, tags.text
    (entry,) = tags.json()["models"]
    assert entry["name"] == entry["model"] == "golden_model"
    assert entry["size"] == sum(f.stat().st_size for f in files)
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    modified = datetime.datetime.fromisoformat(entry["modified_at"])
    assert modified.timestamp() == pytest.approx(max(f.stat().st_mtime for f in files), abs=1e-3)
    assert entry["details"] == {"parent_model": "", "format": "safetensors", "family": "gemma3",
                                "families": ["gemma3"], "parameter_size": f"{params / 1000:.0f}K",
                                "quantization_level": "F32"}
    assert httpx.head(server.url + "/api/tags").status_code == 200
    assert httpx.get(server.url + "/api/version").json() == {"version": OLLAMA_VERSION}

    for body in ({"model": "golden_model"}, {"model": "golden_model:latest"}, {"name": "golden_model"}):
        show = post(server, "/api/show", body)
        assert show.status_code == 200, show.text
        d = show.json()
        assert d["capabilities"] == ["embedding"] and d["details"] == entry["details"]
        assert d["modified_at"] == entry["modified_at"] and "FROM " in d["modelfile"]
        info = d["model_info"]
        assert info["general.architecture"] == "gemma3" and info["general.parameter_count"] == params
        assert info["gemma3.context_length"] == 256 and info["gemma3.embedding_length"] == 48
        assert info["gemma3.block_count"] == 4 and info["embgemma.output_dimension"] == 48
        assert set(d) >= {"modelfile", "parameters", "template", "details", "model_info", "capabilities"}
    r = post(server, "/api/show", {"model": "llama3"})
    assert r.status_code == 404 and r.json() == {"error": "model 'llama3' not found; this server serves 'golden_model'"}
    r = post(server, "/api/show", {})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}


def test_api_version_is_an_ollama_version(server):
    """Ollama clients compare /api/version with their own minimums ("0.5.0", ...): it reports the Ollama
    API version the routes implement, and GET /info keeps embgemma's own version."""
    r = httpx.get(server.url + "/api/version")
    assert r.status_code == 200 and r.json() == {"version": OLLAMA_VERSION}
    assert re.fullmatch(r"\d+\.\d+\.\d+", OLLAMA_VERSION)
    assert tuple(map(int, OLLAMA_VERSION.split("."))) >= (0, 5, 0)  # /api/embed with truncate: Ollama 0.3+
    assert httpx.head(server.url + "/api/version").status_code == 200
    assert httpx.get(server.url + "/info").json()["version"] == embgemma.__version__


def test_tei_tokenize_and_decode(server, model):
    """TEI's /tokenize gives the tokens /embed embeds (prompt included: sending them back as ids gives
    the same vector), with TEI's byte offsets; /decode turns ids back into text."""
    text = "Mars is réd 🪐"
    r = post(server, "/tokenize", {"inputs": [text, "a"], "prompt_name": "query"})
    assert r.status_code == 200, r.text
    toks, short = r.json()
    assert [t["id"] for t in short] == model.tokenizer.encode(model.prompts["query"] + "a").ids
    assert toks[0] == {"id": model.bos_token_id, "text": "<bos>", "special": True, "start": None, "stop": None}
    assert toks[-1]["special"] and [t["special"] for t in toks[1:-1]] == [False] * (len(toks) - 2)
    prompted = (model.prompts["query"] + text).encode()
    for t in toks[1:-1]:  # start / stop: UTF-8 byte offsets in the prompted text, as TEI's
        assert prompted[t["start"]:t["stop"]].decode() == t["text"]
    ids = [t["id"] for t in toks]
    by_ids = post(server, "/embed", {"inputs": [ids]}).json()
    by_text = post(server, "/embed", {"inputs": [text], "prompt_name": "query"}).json()
    assert by_ids == by_text
    # the URL prompt and the server's defaults apply as on /embed; add_special_tokens=false drops <bos> / <eos>
    scoped = post(server, "/prompts/query/tokenize", {"inputs": text}).json()
    assert [t["id"] for t in scoped[0]] == ids
    bare = post(server, "/tokenize", {"inputs": "a b", "add_special_tokens": False}).json()
    assert [t["id"] for t in bare[0]] == model.tokenizer.encode("a b", add_special_tokens=False).ids

    r = post(server, "/decode", {"ids": ids})
    assert r.status_code == 200 and r.json() == [model.tokenizer.decode(ids)]
    r = post(server, "/decode", {"ids": [ids, [t["id"] for t in short]], "skip_special_tokens": False})
    assert r.json() == model.tokenizer.decode_batch([ids, [t["id"] for t in short]], skip_special_tokens=False)
    assert r.json()[1].startswith("<bos>")
    for route, body, status, needle in [
        ("/tokenize", {"inputs": []}, 400, "cannot be empty"),
        ("/tokenize", {"inputs": [[1, 2]]}, 422, "`inputs[0]` must be a string"),
        ("/tokenize", {"inputs": ["a"] * 65}, 422, "batch size 65 > maximum allowed batch size 64"),
        ("/tokenize", {"inputs": "a", "prompt_name": "nope"}, 422, "unknown prompt_name"),
        ("/tokenize", {}, 422, "`inputs` is required"),
        ("/decode", {"ids": []}, 400, "`ids` cannot be empty"),
        ("/decode", {"ids": [[1], []]}, 400, "`ids[1]` cannot be empty"),
        ("/decode", {"ids": [2, 100000]}, 422, "`ids` holds 100000, not a token id of this tokenizer (0..124)"),
        ("/decode", {"ids": [[2, True]]}, 422, "`ids[0]` holds true"),
        ("/decode", {"ids": "abc"}, 422, "`ids` must be an array of token ids"),
        ("/decode", {"ids": [[1]] * 65}, 422, "batch size 65 > maximum allowed batch size 64"),
    ]:
        r = post(server, route, body)
        assert r.status_code == status and needle in r.json()["error"], (route, body, r.text)
        assert r.json()["error_type"] in ("validation", "empty")


def test_unknown_routes_and_methods_answer_json_in_the_apis_shape(server):
    """404 and 405 bodies follow the API the path belongs to (OpenAI under /v1, Ollama under /api,
    TEI at the root); the official openai client reads them as its own errors."""
    r = httpx.get(server.url + "/v1/completions")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert "no route GET /v1/completions" in err["message"] and "POST /v1/embeddings" in err["message"]
    r = httpx.get(server.url + "/v1/embeddings")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["message"] == "GET is not allowed on /v1/embeddings; use POST"
    r = httpx.get(server.url + "/prompts/query/v1/nothing")
    assert r.status_code == 404 and "message" in r.json()["error"]
    r = post(server, "/api/generate", {"model": "m", "prompt": "hi"})
    assert r.status_code == 404 and set(r.json()) == {"error"} and "GET /api/tags" in r.json()["error"]
    r = httpx.delete(server.url + "/api/tags")
    assert r.status_code == 405 and r.json() == {"error": "DELETE is not allowed on /api/tags; use GET, HEAD"}
    assert r.headers["allow"] == "GET, HEAD"
    r = post(server, "/rerank", {"query": "q", "texts": ["a"]})
    assert r.status_code == 404 and r.json()["error_type"] == "validation" and "POST /tokenize" in r.json()["error"]
    r = httpx.put(server.url + "/embed")
    assert r.status_code == 405 and set(r.json()) == {"error", "error_type"}
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="no route POST /v1/completions"):
        client.completions.create(model="m", prompt="hi")
    info = httpx.get(server.url + "/info").json()
    assert "POST /tokenize" in info["all_routes"]["tei"] and "GET /api/tags" in info["all_routes"]["ollama"]


# ---------------------------------------------------------------------------------------------- limits, bad input

BAD = [
    # (route, body, status, text expected in the message)
    ("/v1/embeddings", {"model": "m"}, 400, "`input` is required"),
    ("/v1/embeddings", {"model": "m", "input": []}, 400, "cannot be an empty array"),
    ("/v1/embeddings", {"model": "m", "input": ""}, 400, "empty string"),
    ("/v1/embeddings", {"model": "m", "input": 5}, 400, "must be a string"),
    ("/v1/embeddings", {"model": "m", "input": ["a", None]}, 400, "`input[1]` must be a string"),
    ("/v1/embeddings", {"model": "m", "input": ["a", 1.5]}, 400, "`input[1]`"),
    ("/v1/embeddings", {"model": "m", "input": [[1, "x"]]}, 400, "only integer token ids"),
    ("/v1/embeddings", {"model": "m", "input": [[1, 100000]]}, 400, "outside this model's vocabulary"),
    ("/v1/embeddings", {"model": "m", "input": [[-1]]}, 400, "outside this model's vocabulary"),
    ("/v1/embeddings", {"model": "m", "input": ["a"] * 65}, 400, "batch size 65 > maximum allowed batch size 64"),
    ("/v1/embeddings", {"model": "m", "input": ["x" * 200] * 30}, 400, "more than the limit of 4000"),
    ("/v1/embeddings", {"model": "m", "input": "a", "dimensions": 0}, 400, "`dimensions` must be in 1..48"),
    ("/v1/embeddings", {"model": "m", "input": "a", "dimensions": 4096}, 400, "`dimensions` must be in 1..48"),
    ("/v1/embeddings", {"model": "m", "input": "a", "dimensions": "8"}, 400, "must be an integer"),
    ("/v1/embeddings", {"model": "m", "input": "a", "dimensions": True}, 400, "must be an integer"),
    ("/v1/embeddings", {"model": "m", "input": "a", "encoding_format": "int8"}, 400, "'float' or 'base64'"),
    ("/v1/embeddings", {"model": "m", "input": "a", "prompt_name": "nope"}, 400, "'query'"),
    ("/v1/embeddings", {"model": 3, "input": "a"}, 400, "`model` must be a string"),
    ("/v1/embeddings", {"model": "m", "input": "a\ud800b"}, 400, "surrogate"),
    ("/v1/embeddings", b"{not json", 400, "not valid JSON"),
    ("/v1/embeddings", b"[1, 2]", 400, "must be a JSON object"),
    ("/embed", {"inputs": []}, 400, "cannot be empty"),
    ("/embed", {"inputs": "a", "prompt_name": "nope"}, 422, "'document'"),
    ("/embed", {"inputs": "a", "truncation_direction": "middle"}, 422, "'Right' or 'Left'"),
    ("/embed", {"inputs": "a", "normalize": "yes"}, 422, "`normalize` must be a boolean"),
    ("/embed", {"inputs": "a", "dimensions": -1}, 422, "`dimensions` must be in 1..48"),
    ("/embed", {"inputs": [{"text": "a"}]}, 422, "`inputs[0]` must be a string"),
    ("/embed", {"text": "a"}, 422, "`inputs` is required"),
    ("/api/embed", {"model": "m", "input": 5}, 400, "must be a string"),
    ("/api/embed", {"model": "m", "input": "a", "prompt_name": "nope"}, 400, "'query'"),
]


@pytest.mark.parametrize("route,body,status,needle", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests(server, route, body, status, needle):
    if isinstance(body, dict) and any(isinstance(v, str) and "\ud800" in v for v in body.values()):
        body = json.dumps(body).encode()  # json.dumps escapes the lone surrogate as \ud800
    r = post(server, route, body)
    assert r.status_code == status, r.text
    err = r.json()
    msg = err["error"]["message"] if route.startswith("/v1") else err["error"]
    assert needle in msg, msg
    if route.startswith("/v1"):
        assert set(err["error"]) == {"message", "type", "param", "code"}
        assert err["error"]["type"] == "invalid_request_error"


def test_body_too_large(server):
    big = {"model": "m", "input": ["y" * 1800] * 60}  # > 100,000 bytes
    for route, key in (("/v1/embeddings", "input"), ("/embed", "inputs"), ("/api/embed", "input")):
        body = dict(big)
        if key != "input":
            body[key] = body.pop("input")
        r = post(server, route, body)
        assert r.status_code == 413, r.text
        assert "payload limit of 100000 bytes" in r.text
    # without a Content-Length (chunked), the limit still holds
    def chunks():
        for _ in range(200):
            yield b" " * 1000
    r = httpx.post(server.url + "/embed", content=chunks(), timeout=30)
    assert r.status_code == 413


def test_bad_requests_do_not_fail_others(server, model):
    """Good and bad requests interleaved from 16 threads: every good one is right, every bad one refused."""
    want = model.encode(TEXTS)

    def one(k: int):
        if k % 3 == 0:
            return post(server, "/v1/embeddings", {"model": "m", "input": ["a", None]}).status_code == 400
        if k % 3 == 1:
            return post(server, "/embed", {"inputs": ["ok", LONG], "truncate": False}).status_code == 422
        r = post(server, "/v1/embeddings", {"model": "m", "input": TEXTS, "encoding_format": "float"})
        got = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
        return r.status_code == 200 and np.array_equal(got, want)

    with ThreadPoolExecutor(16) as ex:
        assert all(ex.map(one, range(96)))
    assert httpx.get(server.url + "/health").status_code == 200


def test_concurrent_clients_are_batched_together(server, model):
    """Concurrent single-input requests share engine batches, and each gets its own exact result."""
    texts = [f"text number {i} " * 8 for i in range(48)]
    want = model.encode(texts)

    def metric(name: str) -> float:
        for line in httpx.get(server.url + "/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    batches0, inputs0 = metric("embgemma_batch_inputs_count"), metric("embgemma_batch_inputs_sum")

    def one(i: int):
        r = post(server, "/embed", {"inputs": texts[i]})
        return np.array_equal(np.array(r.json(), np.float32)[0], want[i])

    with ThreadPoolExecutor(16) as ex:
        assert all(ex.map(one, range(len(texts))))
    batches = metric("embgemma_batch_inputs_count") - batches0
    assert metric("embgemma_batch_inputs_sum") - inputs0 == len(texts)
    assert batches < len(texts), "no two requests were batched together"


# ---------------------------------------------------------------------------------------------- operations


def test_health_info_metrics_and_access_log(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    info = httpx.get(server.url + "/info").json()
    assert info["embedding_dimension"] == 48 and info["max_input_length"] == 256
    assert info["max_client_batch_size"] == 64 and info["isa"] in embgemma.build_info()["supported_isas"]
    assert info["default_prompts"]["/api/embed"] == "query" and info["default_prompts"]["/v1/embeddings"] is None
    text = httpx.get(server.url + "/metrics").text
    for name in ("embgemma_requests_total", "embgemma_request_duration_seconds_bucket", "embgemma_batch_inputs_bucket",
                 "embgemma_batch_tokens_bucket", "embgemma_queue_depth", "embgemma_tokens_total",
                 "embgemma_request_queue_duration_seconds_bucket"):
        assert name in text, name
    r = post(server, "/embed", {"inputs": "a"}, headers={"x-request-id": "test-123"})
    assert r.headers["x-request-id"] == "test-123"
    time.sleep(0.2)
    recs = [x for x in server.log_records() if x.get("event") == "request" and x.get("request_id") == "test-123"]
    assert recs and recs[0]["status"] == 200 and recs[0]["path"] == "/embed" and recs[0]["tokens"] > 0
    assert recs[0]["duration_ms"] >= 0 and recs[0]["level"] == "info"


def test_unhealthy_until_loaded():
    """Without a loaded model (the lifespan has not run) health is 503 and embeddings 503 + Retry-After."""
    from starlette.testclient import TestClient

    from embgemma.server import EmbeddingServer, ServerConfig

    srv = EmbeddingServer(ServerConfig(model=str(GOLDEN_DIR)))
    client = TestClient(srv.app)  # not entered: no lifespan, no model
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    r = client.post("/v1/embeddings", json={"model": "m", "input": "a"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "still loading" in r.json()["error"]["message"]
    with TestClient(srv.app) as live:  # the lifespan loads the model
        t_end = time.time() + 30
        while live.get("/health").status_code != 200 and time.time() < t_end:
            time.sleep(0.05)
        assert live.post("/embed", json={"inputs": "a"}).status_code == 200


def test_model_that_cannot_load_exits_with_a_message(tmp_path):
    s = Server(model=tmp_path / "missing", wait=False)
    rc = s.proc.wait(60)
    s._reader.join(5)
    assert rc == 1
    assert any("cannot serve" in line and "missing" in line for line in s.lines), s.lines


def test_api_key_overload_and_sigterm_drain():
    s = Server("--api-key", "sekret", "--max-concurrent-requests", "2", "--max-batch-tokens", "256",
               "--graceful-timeout", "240")
    try:
        auth = {"Authorization": "Bearer sekret"}
        assert httpx.get(s.url + "/health").status_code == 200  # health is public
        r = post(s, "/v1/embeddings", {"model": "m", "input": "a"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert post(s, "/embed", {"inputs": "a"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert post(s, "/embed", {"inputs": "a"}, headers=auth).status_code == 200

        # more concurrent requests than admitted: some get 429 with Retry-After, none fails otherwise
        heavy = {"inputs": ["z " * 120] * 16}
        with ThreadPoolExecutor(12) as ex:
            rs = list(ex.map(lambda _: post(s, "/embed", heavy, headers=auth), range(12)))
        codes = sorted(r.status_code for r in rs)
        assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
        r429 = next(r for r in rs if r.status_code == 429)
        assert r429.headers["retry-after"] == "1" and r429.json()["error_type"] == "overloaded"

        # SIGTERM while a long request runs: it completes, then the server exits cleanly
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(r=post(s, "/embed", {"inputs": ["w " * 120] * 150},
                                                                    headers=auth)))
        t.start()
        t_end = time.time() + 30
        while not httpx.get(s.url + "/metrics").text.count("embgemma_requests_in_flight 1.0") and time.time() < t_end:
            time.sleep(0.01)
        # the event loop is not blocked by the engine: health answers at once while the request runs
        t0 = time.perf_counter()
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
        assert time.perf_counter() - t0 < 1.0
        s.proc.send_signal(signal.SIGTERM)
        t.join(300)
        assert result["r"].status_code == 200, (result["r"].text, s.lines[-20:])
        assert len(result["r"].json()) == 150
        assert s.proc.wait(60) == 0
        s._reader.join(5)
        # the request was answered after the shutdown began
        shutdown = next(i for i, x in enumerate(s.lines) if "Shutting down" in x)
        answered = next(i for i, x in enumerate(s.lines) if '"path":"/embed"' in x and '"inputs":150' in x)
        assert shutdown < answered, s.lines[-10:]
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health", timeout=2)
    finally:
        s.stop()


def test_load_bounded(server):
    """A bounded load (loopback, 10 s, 8 clients): zero errors, and memory flat in the second half."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import asyncio

    from serve_load import run_load

    res = asyncio.run(run_load(server.url, seconds=10, concurrency=8, max_inputs=8, pid=server.proc.pid))
    print("\nserver load:", {k: v for k, v in res.items() if k != "rss_samples"})
    assert res["errors"] == 0, res["error_samples"]
    assert res["requests"] > 20
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # ASan's quarantine grows memory on purpose
        assert res["rss_mb_second_half_max"] - res["rss_mb_first_half_max"] < 16, res["rss_samples"]


def test_batcher_isolates_a_failing_request_and_budgets_tokens():
    """An engine failure on one request's inputs fails that request only; batches respect the token budget."""
    import asyncio

    from embgemma.server.batcher import Batcher, EngineError

    calls: list[int] = []

    def encode(ids, offsets, *, dim, normalize, out):
        calls.append(int(offsets[-1]))
        if (ids == 666).any():
            raise RuntimeError("poisoned")
        for r in range(len(offsets) - 1):  # row r = its first id, everywhere
            out[r] = ids[offsets[r]]

    async def main():
        b = Batcher(encode, max_batch_tokens=10, on_batch=None)
        try:
            seqs = lambda *firsts: [np.array([f, 1, 2], np.int32) for f in firsts]  # noqa: E731
            jobs = [b.submit(seqs(1, 2), 4, True), b.submit(seqs(3, 666), 4, True), b.submit(seqs(5, 6, 7), 4, True)]
            results = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        finally:
            b.close()
        return results

    ok1, bad, ok3 = asyncio.run(main())
    assert isinstance(bad, EngineError) and "poisoned" in str(bad)
    np.testing.assert_array_equal(ok1[:, 0], [1, 2])
    np.testing.assert_array_equal(ok3[:, 0], [5, 6, 7])
    assert max(calls) <= 10  # 3 tokens per input, budget 10: at most 3 inputs per engine call


def test_out_of_vocabulary_text_is_refused_before_truncation():
    """A text whose tokenizer ids pass the model's vocabulary is refused even when truncation would cut
    the offending token: the same rule as EmbeddingGemma.encode (checked before truncating)."""
    from starlette.testclient import TestClient

    from embgemma.server import EmbeddingServer, ServerConfig

    model = EmbeddingGemma(GOLDEN_DIR, threads=1)
    model._info = {**model._info, "vocab_size": 100}  # the tokenizer knows '~' (id 124); this "model" does not
    with pytest.raises(ValueError, match="no embedding"):
        model.encode("a" * 300 + "~")
    with TestClient(EmbeddingServer(ServerConfig(model=str(GOLDEN_DIR)), model).app) as c:
        r = c.post("/embed", json={"inputs": ["ok", "a" * 300 + "~"], "truncate": True})
        assert r.status_code == 422 and "`inputs[1]` has the token id 124" in r.json()["error"], r.text
        assert c.post("/embed", json={"inputs": ["ok"]}).status_code == 200


def test_openapi_describes_every_route():
    """GET /openapi.json describes exactly the routes the app serves (a route added without a
    description fails here), and each one answers its documented example with a body its schema
    accepts; a malformed body gets the error shape the document names."""
    jsonschema = pytest.importorskip("jsonschema")
    from starlette.testclient import TestClient

    from embgemma.server import EmbeddingServer, ServerConfig

    srv = EmbeddingServer(ServerConfig(model=str(GOLDEN_DIR), served_model_name="embeddinggemma"),
                          EmbeddingGemma(GOLDEN_DIR, threads=1))
    with TestClient(srv.app) as c:
        doc = c.get("/openapi.json").json()
        assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == embgemma.__version__
        served = {(m, r.path) for r in srv.starlette.routes for m in r.methods - {"HEAD"}}
        described = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
        assert served == described, (served ^ described)
        assert {r.path for r in srv.starlette.routes} >= {"/openapi.json", "/prompts/{prompt}/v1/embeddings"}

        def check(instance, schema):
            jsonschema.validate(instance, {**schema, "components": doc["components"]})

        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                url = path.replace("{prompt}", "query")
                body = None
                if method == "post":
                    content = op["requestBody"]["content"]["application/json"]
                    body = content["example"]
                    check(body, content["schema"])
                r = c.request(method.upper(), url, json=body)
                assert r.status_code == 200, (method, path, r.text)
                (media, ok), = op["responses"]["200"]["content"].items()
                assert r.headers["content-type"].startswith(media), (path, r.headers["content-type"])
                if media == "application/json":
                    check(r.json(), ok["schema"])
                if method == "post":
                    r = c.post(url, content=b"{")
                    assert r.status_code == 400
                    check(r.json(), op["responses"]["default"]["content"]["application/json"]["schema"])
    secured = EmbeddingServer(ServerConfig(model=str(GOLDEN_DIR), api_key="k")).openapi
    assert secured["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" in secured["paths"]["/embed"]["post"] and "security" not in secured["paths"]["/health"]["get"]
