"""What operators and tools call: ``GET /health`` (also ``/``), ``/info``, ``/metrics`` and
``/openapi.json``; JSON errors in the API's shape for unknown routes and methods; the access log.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import MATRYOSHKA_DIMS
from .core import API_NAME, PROMPT_ROUTES, Endpoint, RequestError, error_response, json_response, route_api
from .openapi import BOOL, INT, STR, arr, nullable, obj

if TYPE_CHECKING:
    from .app import EmbeddingServer

access_logger = logging.getLogger("embgemma.server.access")


async def health(srv: EmbeddingServer, request: Request) -> Response:
    if srv.alive:
        return json_response({"status": "ok", "model": srv.served_model_name})
    status = "failed" if srv.load_error else "loading"
    msg = f"the model failed to load: {srv.load_error}" if srv.load_error else "the model is loading"
    return json_response({"status": status, "error": msg, "error_type": "unhealthy"}, 503,
                         None if srv.load_error else {"Retry-After": "1"})


async def info(srv: EmbeddingServer, request: Request) -> Response:
    """TEI's /info, with embgemma's own version (/api/version reports Ollama's API version instead)."""
    try:
        srv.authorize(request)
    except RequestError as e:
        return error_response("tei", e)
    import embgemma

    c, m = srv.config, srv.model
    body: dict[str, Any] = {
        "model_id": c.model, "served_model_name": srv.served_model_name, "model_type": "embedding",
        "ready": srv.ready.is_set(), "version": embgemma.__version__, "build": embgemma.build_info(),
        "max_batch_tokens": c.max_batch_tokens, "max_client_batch_size": c.max_client_batch_size,
        "max_request_tokens": c.max_request_tokens, "max_concurrent_requests": c.max_concurrent_requests,
        "payload_limit": c.payload_limit, "auto_truncate": c.auto_truncate,
        "routes": srv.embed_routes, "all_routes": srv.routes,
        "prompt_routes": "/prompts/{prompt_name}/(v1/embeddings|embed|api/embed|tokenize)",
    }
    if m is not None:
        body.update({
            "model_path": str(m.model_path), "model_format": m.format, "model_dtype": m.dtype,
            "model_dtype_note": m.dtype_note,
            "embedding_dimension": m.info["output_dim"],
            "matryoshka_dimensions": [d for d in MATRYOSHKA_DIMS if d <= m.info["output_dim"]],
            "max_input_length": m.max_seq_length, "isa": m.info["isa"], "threads": m.threads,
            "prompts": m.prompts,
            "default_prompts": {r: c.route_prompts.get(r, c.default_prompt_name or m.default_prompt_name)
                                for r in PROMPT_ROUTES},
            "load_seconds": srv.load_seconds,
        })
    return json_response(body)


async def metrics(srv: EmbeddingServer, request: Request) -> Response:
    if srv.batcher is not None:
        srv.metrics.queue_depth.set(srv.batcher.pending_inputs)
    data, ctype = srv.metrics.render()
    return Response(data, media_type=ctype)


async def openapi(srv: EmbeddingServer, request: Request) -> Response:
    return json_response(srv.openapi)


async def http_error(srv: EmbeddingServer, request: Request, exc: HTTPException) -> Response:
    """Starlette's own errors (no such route, wrong method) as JSON in the API's error shape."""
    api = route_api(request.url.path)
    routes = ", ".join(srv.routes[api])
    if exc.status_code == 404:
        e = RequestError("not_found", f"no route {request.method} {request.url.path}; the "
                         f"{API_NAME[api]} routes here are {routes} (GET /info lists them all)")
    elif exc.status_code == 405:
        allow = ", ".join(sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()))
        exc.headers = {**(exc.headers or {}), "Allow": allow}
        e = RequestError("method", f"{request.method} is not allowed on {request.url.path}; use {allow}")
    else:
        response = error_response(api, RequestError("malformed", str(exc.detail)))
        response.status_code = exc.status_code
        return response
    request.state.error = e.message
    srv.metrics.requests.labels(api=api, status=str(exc.status_code)).inc()
    return error_response(api, e, dict(exc.headers or {}))


class AccessLog:
    """ASGI middleware: one structured access-log record per request, and an x-request-id header."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        rid = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        rid = (rid or uuid.uuid4().hex[:16])[:64]
        state = scope.setdefault("state", {})
        status = [500]

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            access_logger.info("%s %s %d", scope["method"], scope["path"], status[0], extra={"fields": {
                "event": "request", "method": scope["method"], "path": scope["path"], "status": status[0],
                "duration_ms": round((time.perf_counter() - t0) * 1000, 2), "request_id": rid,
                "client": f"{client[0]}:{client[1]}" if client else None,
                "inputs": state.get("inputs"), "tokens": state.get("tokens"), "error": state.get("error")}})


_HEALTH = obj({"status": {"enum": ["ok"]}, "model": STR}, ("status",))
# raw: these answer for themselves, as before the split (health, metrics and this description need no API key)
ENDPOINTS = [
    Endpoint("GET", "/health", health, "200 once the model is loaded, 503 before", response=_HEALTH, public=True,
             raw=True),
    Endpoint("GET", "/", health, "The same as GET /health", response=_HEALTH, public=True, raw=True),
    Endpoint("GET", "/info", info, "The model, limits, prompts, routes and embgemma's version", response=obj({
        "model_id": STR, "served_model_name": STR, "model_type": STR, "ready": BOOL, "version": STR,
        "max_batch_tokens": INT, "max_client_batch_size": INT, "max_request_tokens": INT,
        "max_concurrent_requests": INT, "payload_limit": INT, "auto_truncate": BOOL, "routes": arr(STR),
        "embedding_dimension": INT, "matryoshka_dimensions": arr(INT), "max_input_length": INT,
        "prompts": {"type": "object", "additionalProperties": STR},
        "default_prompts": {"type": "object", "additionalProperties": nullable(STR)}},
        ("model_id", "served_model_name", "version", "routes", "all_routes")), raw=True),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics (text exposition format)",
             media_type="text/plain", public=True, raw=True),
    Endpoint("GET", "/openapi.json", openapi, "This description of the routes",
             response={"type": "object", "required": ["openapi", "info", "paths"]}, public=True, raw=True),
]
