"""What every route shares: the configuration, the request error and each API's shape for it, body
field parsing, and the table entry a route is declared by (``Endpoint``).

Each API renders the same ``RequestError`` its own way (OpenAI ``{"error": {...}}``, TEI
``{"error", "error_type"}``, Ollama ``{"error"}``), so a check is written once and every route
that makes it answers in its client's shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from starlette.responses import Response

#: Keys of ``ServerConfig.route_prompts`` (aliases share their API's default prompt).
PROMPT_ROUTES = ("/v1/embeddings", "/embed", "/api/embed")
#: The API's embedding route, whose default prompt a request of that API gets.
API_ROUTE = {"openai": "/v1/embeddings", "tei": "/embed", "ollama": "/api/embed"}
API_NAME = {"openai": "OpenAI", "tei": "text-embeddings-inference", "ollama": "Ollama"}
APIS = ("openai", "tei", "ollama")


@dataclass
class ServerConfig:
    """What ``embgemma serve`` was asked for. Limits follow TEI's and OpenAI's defaults."""

    model: str
    dtype: str | None = None
    threads: int | None = None
    max_seq_length: int | None = None
    cache_folder: str | None = None
    served_model_name: str | None = None      # default: the model argument
    max_batch_tokens: int = 8192              # tokens per engine call (across requests)
    max_client_batch_size: int = 2048         # inputs per request (OpenAI's limit)
    max_request_tokens: int = 300_000         # tokens per request, summed (OpenAI's limit)
    max_concurrent_requests: int = 512        # admitted at once; more get 429
    payload_limit: int = 8_000_000            # request body bytes; more get 413
    auto_truncate: bool = True                # default for requests that do not say
    default_prompt_name: str | None = None    # every route (None: the model's default)
    route_prompts: dict[str, str] = field(default_factory=dict)  # route -> prompt name
    api_key: str | None = None                # Bearer token for all but health and metrics
    tokenizer_threads: int = 2

    def check(self) -> None:
        for name in ("max_batch_tokens", "max_client_batch_size", "max_request_tokens", "max_concurrent_requests",
                     "payload_limit", "tokenizer_threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for route in self.route_prompts:
            if route not in PROMPT_ROUTES:
                raise ValueError(f"route_prompts: unknown route {route!r}; the routes are {', '.join(PROMPT_ROUTES)}")


@dataclass(frozen=True)
class Endpoint:
    """One route as a protocol module declares it: the app serves it and /openapi.json describes it
    from this one entry. ``handler(server, request)``; schemas are JSON Schema (OpenAPI 3.1)."""

    method: str                           # GET (HEAD follows) or POST
    path: str
    handler: Callable
    summary: str
    request: dict | None = None           # the JSON body's schema (POST)
    response: dict | None = None          # the 200 body's schema (JSON), or None with media_type
    example: Any = None                   # a request body that succeeds
    media_type: str = "application/json"
    prompt_scoped: bool = False           # also served under /prompts/{prompt}
    public: bool = False                  # no API key needed
    raw: bool = False                     # answers for itself: no shared auth, error shapes or request metrics


class RequestError(Exception):
    """A request that cannot be served; each API renders it in its own error shape.

    kind: malformed | validation | empty | payload | overloaded | unhealthy | auth | backend | not_found | method
    """

    def __init__(self, kind: str, message: str, param: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.param, self.retry_after = kind, message, param, retry_after


STATUS = {  # kind -> (OpenAI, TEI, Ollama) status
    "malformed": (400, 400, 400),
    "validation": (400, 422, 400),
    "empty": (400, 400, 400),
    "payload": (413, 413, 413),
    "overloaded": (429, 429, 429),
    "unhealthy": (503, 503, 503),
    "auth": (401, 401, 401),
    "backend": (500, 424, 500),
    "not_found": (404, 404, 404),
    "method": (405, 405, 405),
}
OPENAI_TYPE = {"overloaded": "rate_limit_error", "unhealthy": "server_error", "backend": "server_error",
               "auth": "invalid_request_error"}
OPENAI_CODE = {"auth": "invalid_api_key", "overloaded": "overloaded", "unhealthy": "model_not_ready",
               "payload": "payload_too_large"}
TEI_TYPE = {"malformed": "validation", "payload": "validation", "auth": "validation", "not_found": "validation",
            "method": "validation"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    headers=headers, media_type="application/json")


def error_response(api: str, e: RequestError, headers: dict[str, str] | None = None) -> Response:
    status = STATUS[e.kind][APIS.index(api)]
    if e.retry_after:
        headers = {**(headers or {}), "Retry-After": str(e.retry_after)}
    if api == "openai":
        body = {"error": {"message": e.message, "type": OPENAI_TYPE.get(e.kind, "invalid_request_error"),
                          "param": e.param, "code": OPENAI_CODE.get(e.kind)}}
    elif api == "tei":
        body = {"error": e.message, "error_type": TEI_TYPE.get(e.kind, e.kind)}
    else:
        body = {"error": e.message}
    return json_response(body, status, headers)


def route_api(path: str) -> str:
    """The API family a path belongs to, for the shape of its errors: /v1/... OpenAI, /api/... Ollama,
    anything else TEI (whose routes sit at the root). A /prompts/{name} prefix is looked through."""
    m = re.match(r"/prompts/[^/]+(/.*)?$", path)
    path = (m.group(1) or "/") if m else path
    if path == "/v1" or path.startswith("/v1/") or path == "/embeddings":
        return "openai"
    if path == "/api" or path.startswith("/api/"):
        return "ollama"
    return "tei"


# ---------------------------------------------------------------------------------------------- body fields


def type_name(v: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def opt(body: dict, key: str, kind: type | tuple, default: Any = None, what: str = "") -> Any:
    """An optional field of ``kind`` (a bool is not an int), ``default`` when absent or null."""
    v = body.get(key)
    if v is None:
        return default
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if not ok:
        raise RequestError("validation", f"`{key}` must be {what or type_name(kind())}, got {type_name(v)}", key)
    return v


def parse_inputs(value: Any, name: str, tokens_ok: bool, max_batch: int) -> list:
    """A str, a list of str, or (tokens_ok) a list of ints or a list mixing str and lists of ints."""
    what = "a string or an array of strings" + (" or token-id arrays" if tokens_ok else "")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise RequestError("validation", f"`{name}` must be {what}, got {type_name(value)}", name)
    if tokens_ok and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return [value]  # one token-id array
    for i, x in enumerate(value):
        if isinstance(x, str):
            continue
        if tokens_ok and isinstance(x, list):
            bad = next((t for t in x if not isinstance(t, int) or isinstance(t, bool)), None)
            if bad is None and x:
                continue
            if not x:
                raise RequestError("validation", f"`{name}[{i}]` is an empty token-id array", f"{name}[{i}]")
            raise RequestError("validation", f"`{name}[{i}]` must hold only integer token ids, found "
                                             f"{type_name(bad)}", f"{name}[{i}]")
        raise RequestError("validation", f"`{name}[{i}]` must be a string{' or a token-id array' if tokens_ok else ''}"
                                         f", got {type_name(x)}", f"{name}[{i}]")
    if len(value) > max_batch:
        raise RequestError("validation", f"batch size {len(value)} > maximum allowed batch size {max_batch}; split "
                                         "the request", name)
    return value


def required_inputs(body: dict, name: str, empty_message: str, max_batch: int) -> list:
    if name not in body:
        raise RequestError("validation", f"`{name}` is required: a string, an array of strings, or token-id "
                                         "arrays", name)
    items = parse_inputs(body[name], name, True, max_batch)
    if not items:
        raise RequestError("empty", empty_message, name)
    return items


def parse_dim(body: dict, key: str, full: int) -> int | None:
    """A Matryoshka width in 1..full, or None."""
    d = opt(body, key, int, what="an integer")
    if d is None:
        return None
    if not 1 <= d <= full:
        raise RequestError("validation", f"`{key}` must be in 1..{full}, got {d} (EmbeddingGemma was trained for "
                                         "768, 512, 256 and 128)", key)
    return d


@dataclass
class Parsed:
    """A request, whatever its API: the inputs and how to embed them."""

    items: list                       # str or list[int] (token ids) per input
    field: str                        # the field name, for messages ("input", "inputs")
    prompt_name: str | None = None    # explicit, from the body
    truncate: bool | None = None      # None: the server's auto_truncate
    direction: str = "right"
    dim: int | None = None
    normalize: bool = True
