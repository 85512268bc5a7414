"""Bounded fuzzing of the server's request parsing: random JSON bodies (and raw bytes) to every
embedding route, in process. Every answer must be a success or a 4xx in the route's error shape;
never a 5xx, and the server keeps answering good requests correctly afterwards."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from conftest import GOLDEN_DIR  # noqa: E402

from embgemma import EmbeddingGemma  # noqa: E402

CASES = int(os.environ.get("EMBGEMMA_SERVER_FUZZ_CASES", "2000"))
FIELDS = ["input", "inputs", "model", "encoding_format", "dimensions", "prompt_name", "truncate",
          "truncation_direction", "normalize", "user", "prompt", "keep_alive", "options"]


def _value(rng: random.Random, depth: int = 0):
    k = rng.randrange(12 if depth < 2 else 8)
    if k == 0:
        return None
    if k == 1:
        return rng.choice([True, False])
    if k == 2:
        return rng.choice([0, 1, -1, 7, 48, 49, 124, 125, 2**31, -(2**63), 10**30])
    if k == 3:
        return rng.choice([0.5, -1e308, 1e-300, 3.0])
    if k == 4:
        return rng.choice(["", " ", "a", "query", "document", "nope", "float", "base64", "Left", "right", "x" * 400,
                           "\u0000\u0001", "é" * 50, "\U0001F600", "\\ud800"])
    if k in (5, 6, 7):
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF)]))
                       for _ in range(rng.randrange(0, 40)))
    if k in (8, 9):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    if k == 10:
        return [rng.randrange(-2, 130) for _ in range(rng.randrange(0, 300))]
    return {f: _value(rng, depth + 1) for f in rng.sample(FIELDS, rng.randrange(0, 4))}


def _body(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.05:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))  # not JSON
    if r < 0.1:
        return json.dumps(_value(rng)).encode()  # JSON, maybe not an object
    body = {f: _value(rng) for f in rng.sample(FIELDS, rng.randrange(1, 6))}
    if rng.random() < 0.5:  # a mostly valid request with one odd field
        body.setdefault("input", ["Mars is red.", "a"])
        body.setdefault("inputs", body["input"])
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def client():
    from starlette.testclient import TestClient

    from embgemma.server import EmbeddingServer, ServerConfig

    model = EmbeddingGemma(GOLDEN_DIR, threads=1)
    srv = EmbeddingServer(ServerConfig(model=str(GOLDEN_DIR), max_client_batch_size=32, payload_limit=20000), model)
    with TestClient(srv.app, raise_server_exceptions=True) as c:
        yield c, model


def test_random_bodies_never_5xx(client):
    c, model = client
    rng = random.Random(1234)
    routes = ["/v1/embeddings", "/embed", "/api/embed", "/api/embeddings", "/prompts/query/embed"]
    seen = set()
    for i in range(CASES):
        route = rng.choice(routes)
        body = _body(rng)
        r = c.post(route, content=body, headers={"content-type": "application/json"})
        seen.add(r.status_code)
        assert r.status_code < 500, (route, body[:300], r.status_code, r.text[:300])
        if r.status_code >= 400:
            err = r.json()
            if route.endswith("/v1/embeddings"):
                assert set(err["error"]) == {"message", "type", "param", "code"} and err["error"]["message"]
            else:
                assert isinstance(err["error"], str) and err["error"]
    assert {200, 400, 422} <= seen, seen  # the generator reaches success and both refusal kinds
    want = model.encode(["Mars is red."])
    r = c.post("/embed", json={"inputs": ["Mars is red."]})
    np.testing.assert_array_equal(np.array(r.json(), np.float32), want)
