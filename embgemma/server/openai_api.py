"""OpenAI's routes: ``POST /v1/embeddings`` (also ``/embeddings``, as TEI serves it) and ``GET /v1/models``.

Errors are OpenAI's ``{"error": {message, type, param, code}}``, which the official client raises as
its own exceptions. The client asks for base64 unless told otherwise: little-endian float32 bytes.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from .core import Endpoint, Parsed, RequestError, json_response, opt, parse_dim, required_inputs
from .openapi import BOOL, INT, PROMPT_NAME, STR, TOKEN_ID, VECTOR, arr, obj, one_of

if TYPE_CHECKING:
    from .app import EmbeddingServer


async def embeddings(srv: EmbeddingServer, request: Request) -> Response:
    body = await srv.read_body(request)
    srv.check_ready()
    items = required_inputs(body, "input", "`input` cannot be an empty array", srv.config.max_client_batch_size)
    for i, x in enumerate(items):
        if x == "":
            raise RequestError("validation", f"`input[{i}]` is an empty string, which the OpenAI API does not "
                                             "accept (the /embed route does)", f"input[{i}]")
    opt(body, "model", str)
    opt(body, "user", str)
    fmt = opt(body, "encoding_format", str, "float")
    if fmt not in ("float", "base64"):
        raise RequestError("validation", f"`encoding_format` must be 'float' or 'base64', got {fmt!r}",
                           "encoding_format")
    parsed = Parsed(items, "input", prompt_name=opt(body, "prompt_name", str), truncate=opt(body, "truncate", bool),
                    dim=parse_dim(body, "dimensions", srv.model.info["output_dim"]))
    emb, tokens, headers = await srv.embed(request, parsed, "openai")
    if fmt == "base64":
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")} for i, v in enumerate(emb)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(emb)]
    out = {"object": "list", "data": data, "model": srv.served_model_name,
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return await srv.respond(out, headers, emb.size)


async def models(srv: EmbeddingServer, request: Request) -> Response:
    return json_response({"object": "list", "data": [{"id": srv.served_model_name, "object": "model", "created": 0,
                                                      "owned_by": "embgemma"}]})


_TOKENS = arr(TOKEN_ID, minItems=1)
EMBEDDINGS_REQUEST = obj({
    "input": one_of(STR, arr(STR), _TOKENS, arr(one_of(STR, _TOKENS))),
    "model": STR, "encoding_format": {"enum": ["float", "base64"]}, "dimensions": {**INT, "minimum": 1},
    "user": STR, "truncate": {**BOOL, "description": "embgemma's extra (default: the server's --auto-truncate)"},
    **PROMPT_NAME}, ("input",))
EMBEDDINGS_RESPONSE = obj({
    "object": {"const": "list"},
    "data": arr(obj({"object": {"const": "embedding"}, "index": INT, "embedding": one_of(VECTOR, STR)},
                    ("object", "index", "embedding"))),
    "model": STR, "usage": obj({"prompt_tokens": INT, "total_tokens": INT}, ("prompt_tokens", "total_tokens"))},
    ("object", "data", "model", "usage"))
_EXAMPLE = {"model": "embeddinggemma", "input": ["Mars is red."], "encoding_format": "float"}

ENDPOINTS = [
    Endpoint("POST", "/v1/embeddings", embeddings, "Embed texts or token ids (OpenAI's CreateEmbedding)",
             EMBEDDINGS_REQUEST, EMBEDDINGS_RESPONSE, _EXAMPLE, prompt_scoped=True),
    Endpoint("POST", "/embeddings", embeddings, "The same as POST /v1/embeddings (TEI serves both)",
             EMBEDDINGS_REQUEST, EMBEDDINGS_RESPONSE, _EXAMPLE),
    Endpoint("GET", "/v1/models", models, "The served model (OpenAI's model list)",
             response=obj({"object": {"const": "list"}, "data": arr(obj({
                 "id": STR, "object": {"const": "model"}, "created": INT, "owned_by": STR}, ("id", "object")))},
                 ("object", "data"))),
]
