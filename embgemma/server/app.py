"""The HTTP application: OpenAI, text-embeddings-inference and Ollama embedding routes on Starlette.

Wire formats follow each API (errors included); every route also takes EmbeddingGemma's
``prompt_name``, and each route may carry a server-side default prompt. Beside the embedding
routes: the model listings clients discover models with (OpenAI's ``/v1/models``, Ollama's
``/api/tags``, ``/api/show``, ``/api/version``), TEI's ``/tokenize`` and ``/decode``, and JSON
errors in the API's shape for unknown routes and methods. Work never runs on the event loop:
tokenization goes to a small thread pool, the engine to the batcher's thread.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import itertools
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..model import MATRYOSHKA_DIMS
from .batcher import Batcher, EngineError
from .metrics import Metrics

logger = logging.getLogger("embgemma.server")
access_logger = logging.getLogger("embgemma.server.access")

#: Keys of ``ServerConfig.route_prompts`` (aliases share their API's default prompt).
PROMPT_ROUTES = ("/v1/embeddings", "/embed", "/api/embed")
_API_ROUTE = {"openai": "/v1/embeddings", "tei": "/embed", "ollama": "/api/embed"}


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


class RequestError(Exception):
    """A request that cannot be served; each API renders it in its own error shape.

    kind: malformed | validation | empty | payload | overloaded | unhealthy | auth | backend | not_found | method
    """

    def __init__(self, kind: str, message: str, param: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.param, self.retry_after = kind, message, param, retry_after


_STATUS = {  # kind -> (OpenAI, TEI, Ollama) status
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
_OPENAI_TYPE = {"overloaded": "rate_limit_error", "unhealthy": "server_error", "backend": "server_error",
                "auth": "invalid_request_error"}
_TEI_TYPE = {"malformed": "validation", "payload": "validation", "auth": "validation", "not_found": "validation",
             "method": "validation"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    headers=headers, media_type="application/json")


def error_response(api: str, e: RequestError, headers: dict[str, str] | None = None) -> Response:
    status = _STATUS[e.kind][("openai", "tei", "ollama").index(api)]
    if e.retry_after:
        headers = {**(headers or {}), "Retry-After": str(e.retry_after)}
    if api == "openai":
        code = {"auth": "invalid_api_key", "overloaded": "overloaded", "unhealthy": "model_not_ready",
                "payload": "payload_too_large"}.get(e.kind)
        body = {"error": {"message": e.message, "type": _OPENAI_TYPE.get(e.kind, "invalid_request_error"),
                          "param": e.param, "code": code}}
    elif api == "tei":
        body = {"error": e.message, "error_type": _TEI_TYPE.get(e.kind, e.kind)}
    else:
        body = {"error": e.message}
    return _json(body, status, headers)


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


def _type_name(v: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def _opt(body: dict, key: str, kind: type | tuple, default: Any = None, what: str = "") -> Any:
    v = body.get(key)
    if v is None:
        return default
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if not ok:
        raise RequestError("validation", f"`{key}` must be {what or _type_name(kind())}, got {_type_name(v)}", key)
    return v


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


class EmbeddingServer:
    """The model, the batcher, the metrics and the routes; ``app`` is the ASGI application."""

    def __init__(self, config: ServerConfig, model: Any = None,
                 on_load_error: Callable[[BaseException], None] | None = None) -> None:
        config.check()
        self.config = config
        self.model = model
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.ready = threading.Event()
        self.in_flight = 0
        self.metrics = Metrics()
        self._on_load_error = on_load_error
        self._tok_pool = ThreadPoolExecutor(config.tokenizer_threads, thread_name_prefix="embgemma-tok")
        self.served_model_name = config.served_model_name or os.path.basename(str(config.model).rstrip("/")) or config.model
        embed = {"/v1/embeddings": self.openai_embeddings, "/embeddings": self.openai_embeddings,
                 "/embed": self.tei_embed, "/api/embed": self.ollama_embed,
                 "/api/embeddings": self.ollama_embeddings_legacy}
        self.embed_routes = sorted(embed)
        routes = [Route(path, handler, methods=["POST"]) for path, handler in embed.items()]
        # the same routes under a prompt: /prompts/query/v1/embeddings, ...
        routes += [Route("/prompts/{prompt}" + path, embed[path], methods=["POST"]) for path in PROMPT_ROUTES]
        routes += [Route(path, handler, methods=["GET"]) for path, handler in (
            ("/v1/models", self.openai_models), ("/health", self.health), ("/", self.health), ("/info", self.info),
            ("/metrics", self.metrics_route), ("/api/tags", self.ollama_tags), ("/api/version", self.ollama_version))]
        routes += [Route(path, handler, methods=["POST"]) for path, handler in (
            ("/api/show", self.ollama_show), ("/tokenize", self.tei_tokenize), ("/prompts/{prompt}/tokenize",
                                                                                self.tei_tokenize),
            ("/decode", self.tei_decode))]
        self.routes = {api: [f"{'/'.join(sorted(r.methods - {'HEAD'}))} {r.path}" for r in routes
                             if route_api(r.path) == api and not r.path.startswith("/prompts/")]
                       for api in ("openai", "tei", "ollama")}
        self._description: dict[str, Any] | None = None
        self.app = AccessLog(Starlette(routes=routes, lifespan=self._lifespan,
                                       exception_handlers={HTTPException: self._http_error}))

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def _lifespan(self, app):
        if self.model is None:
            threading.Thread(target=self._load, name="embgemma-load", daemon=True).start()
        else:
            self._start()
        try:
            yield
        finally:
            self.close()

    def _load(self) -> None:
        from embgemma import EmbeddingGemma

        t0 = time.perf_counter()
        c = self.config
        try:
            self.model = EmbeddingGemma(c.model, dtype=c.dtype, threads=c.threads, max_seq_length=c.max_seq_length,
                                        cache_folder=c.cache_folder)
            self.load_seconds = time.perf_counter() - t0
            self._start()
        except BaseException as e:  # noqa: BLE001 - reported, and the server stops
            self.load_error = f"{type(e).__name__}: {e}"
            logger.error("cannot serve %s: %s", c.model, self.load_error)
            if self._on_load_error is not None:
                self._on_load_error(e)

    def _start(self) -> None:
        m, c = self.model, self.config
        for route, name in {**{r: c.default_prompt_name for r in PROMPT_ROUTES}, **c.route_prompts}.items():
            if name is not None and name not in m.prompts:
                raise ValueError(f"prompt for {route}: unknown prompt_name {name!r}; this model's prompts are: "
                                 f"{', '.join(m.prompts)}")
        if c.max_batch_tokens < m.max_seq_length:
            raise ValueError(f"max_batch_tokens ({c.max_batch_tokens}) must be at least max_seq_length "
                             f"({m.max_seq_length}): one input is never split")
        core, threads = m._core, m.threads

        def encode(ids, offsets, *, dim, normalize, out):
            core.encode(ids, offsets, dim=dim, normalize=normalize, threads=threads, out=out)

        self.batcher = Batcher(encode, c.max_batch_tokens, self.metrics.observe_batch)
        self.metrics.set_info(self)
        self.ready.set()
        logger.info("ready: %s (%s, %s, %d threads, isa %s) as %r%s", m.model_path, m.format, m.dtype, m.threads,
                    m.info["isa"], self.served_model_name,
                    f", loaded in {self.load_seconds:.2f} s" if self.load_seconds is not None else "")

    def close(self) -> None:
        self.ready.clear()
        if self.batcher is not None:
            self.batcher.close()
        self._tok_pool.shutdown(wait=False)

    # ------------------------------------------------------------------ shared request path

    def _auth(self, request: Request) -> None:
        key = self.config.api_key
        if key is not None and request.headers.get("authorization", "") != f"Bearer {key}":
            raise RequestError("auth", "missing or wrong API key: send the header 'Authorization: Bearer <key>'")

    def _check_ready(self) -> None:
        if self.ready.is_set() and self.batcher is not None and self.batcher.alive:
            return
        if self.load_error:
            raise RequestError("unhealthy", f"the model failed to load: {self.load_error}")
        raise RequestError("unhealthy", "the model is still loading; retry shortly", retry_after=1)

    async def _body(self, request: Request) -> dict:
        limit = self.config.payload_limit
        cl = request.headers.get("content-length")
        too_big = RequestError("payload", f"the request body is larger than the server's payload limit of {limit} "
                                          "bytes; send fewer or shorter inputs per request")
        if cl is not None and cl.isdigit() and int(cl) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        try:
            body = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as e:
            raise RequestError("malformed", f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError("malformed", f"the request body must be a JSON object, got {_type_name(body)}")
        return body

    def _inputs(self, value: Any, name: str, tokens_ok: bool) -> list:
        """A str, a list of str, or (tokens_ok) a list of ints or a list mixing str and lists of ints."""
        what = "a string or an array of strings" + (" or token-id arrays" if tokens_ok else "")
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise RequestError("validation", f"`{name}` must be {what}, got {_type_name(value)}", name)
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
                                                 f"{_type_name(bad)}", f"{name}[{i}]")
            raise RequestError("validation", f"`{name}[{i}]` must be a string{' or a token-id array' if tokens_ok else ''}"
                                             f", got {_type_name(x)}", f"{name}[{i}]")
        if len(value) > self.config.max_client_batch_size:
            raise RequestError("validation", f"batch size {len(value)} > maximum allowed batch size "
                                             f"{self.config.max_client_batch_size}; split the request", name)
        return value

    def _required_inputs(self, body: dict, name: str, empty_message: str) -> list:
        if name not in body:
            raise RequestError("validation", f"`{name}` is required: a string, an array of strings, or token-id "
                                             "arrays", name)
        items = self._inputs(body[name], name, tokens_ok=True)
        if not items:
            raise RequestError("empty", empty_message, name)
        return items

    def _dim(self, body: dict, key: str) -> int | None:
        d = _opt(body, key, int, what="an integer")
        if d is None:
            return None
        full = self.model.info["output_dim"]
        if not 1 <= d <= full:
            raise RequestError("validation", f"`{key}` must be in 1..{full}, got {d} (EmbeddingGemma was trained for "
                                             "768, 512, 256 and 128)", key)
        return d

    def _prompt(self, parsed: Parsed, request: Request, api: str) -> tuple[str, bool]:
        """The prompt text for a request, and whether the client chose it (explicitly or by URL)."""
        m = self.model
        name, explicit = parsed.prompt_name, parsed.prompt_name is not None
        if name is None and "prompt" in request.path_params:
            name, explicit = request.path_params["prompt"], True
        if name is None:
            name = self.config.route_prompts.get(_API_ROUTE[api], self.config.default_prompt_name)
        if name is None:
            name = m.default_prompt_name
        if name is None:
            return "", explicit
        if name not in m.prompts:
            raise RequestError("validation", f"unknown prompt_name {name!r}; this model's prompts are: "
                                             f"{', '.join(map(repr, m.prompts))}", "prompt_name")
        return m.prompts[name], explicit

    def _tokenize(self, items: list, prompt: str, truncate: bool, direction: str, name: str) -> list[np.ndarray]:
        """Token ids per input (BOS/EOS included), truncated or refused past max_seq_length. Runs in a worker."""
        from embgemma.model import _clean

        m = self.model
        limit, vocab = m.max_seq_length, m.info["vocab_size"]
        texts = [(i, x) for i, x in enumerate(items) if isinstance(x, str)]
        # no lone surrogates reach here (orjson refuses them), so _clean only forms prompt + text
        encs = m.tokenizer.encode_batch([_clean(x, i, prompt, m.strip_whitespace) for i, x in texts]) if texts else []
        ids_of: dict[int, list[int]] = {i: e.ids for (i, _), e in zip(texts, encs)}
        out: list[np.ndarray] = []
        for i, x in enumerate(items):
            ids = ids_of[i] if isinstance(x, str) else x
            # before truncation, which could cut the offending token out of sight
            if ids and (min(ids) < 0 or max(ids) >= vocab):
                bad = next(t for t in ids if not 0 <= t < vocab)
                raise RequestError("validation", f"`{name}[{i}]` has the token id {bad}, outside this model's "
                                                 f"vocabulary 0..{vocab - 1}", f"{name}[{i}]")
            if not isinstance(x, str) and not (len(ids) > 1 and ids[0] == m.bos_token_id and ids[-1] == m.eos_token_id):
                ids = [m.bos_token_id, *ids, m.eos_token_id]
            if len(ids) > limit:
                if not truncate:
                    raise RequestError("validation", f"`{name}[{i}]` has {len(ids)} tokens, more than the model's "
                                                     f"maximum of {limit}; shorten it or send truncate=true",
                                       f"{name}[{i}]")
                ids = m._truncate_ids(ids, limit, direction)
            out.append(np.asarray(ids, dtype=np.int32))
        return out

    async def _embed(self, request: Request, parsed: Parsed, api: str) -> tuple[np.ndarray, int, dict[str, str]]:
        """Embeddings (n, dim) for a parsed request, its token count, and TEI's timing headers."""
        t0 = time.perf_counter()
        self._check_ready()
        if self.in_flight >= self.config.max_concurrent_requests:
            raise RequestError("overloaded", f"the server is at its limit of {self.config.max_concurrent_requests} "
                                             "concurrent requests; retry after a second", retry_after=1)
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            prompt, explicit = self._prompt(parsed, request, api)
            if explicit and prompt and any(not isinstance(x, str) for x in parsed.items):
                raise RequestError("validation", "prompt_name cannot apply to token-id inputs: send text, or put the "
                                                 "prompt's tokens in the ids yourself", "prompt_name")
            truncate = self.config.auto_truncate if parsed.truncate is None else parsed.truncate
            loop = asyncio.get_running_loop()
            seqs = await loop.run_in_executor(self._tok_pool, self._tokenize, parsed.items, prompt, truncate,
                                              parsed.direction, parsed.field)
            t_tok = time.perf_counter()
            tokens = sum(len(s) for s in seqs)
            if tokens > self.config.max_request_tokens:
                raise RequestError("validation", f"the request holds {tokens} tokens, more than the limit of "
                                                 f"{self.config.max_request_tokens} per request; split it", parsed.field)
            try:
                job = self.batcher.submit(seqs, parsed.dim or self.model.info["output_dim"], parsed.normalize)
            except RuntimeError:
                raise RequestError("unhealthy", "the server is shutting down; retry on another instance",
                                   retry_after=1) from None
            self.metrics.queue_depth.set(self.batcher.pending_inputs)
            try:
                emb = await job.future
            except asyncio.CancelledError:
                self.batcher.cancel(job)
                raise
            except EngineError as e:
                raise RequestError("backend", str(e)) from None
            t_end = time.perf_counter()
            self.metrics.observe_request(api, len(seqs), tokens, t_tok - t0, job.queue_s, job.inference_s)
            request.state.inputs, request.state.tokens = len(seqs), tokens
            headers = {
                "x-compute-type": "cpu",
                "x-compute-tokens": str(tokens),
                "x-compute-characters": str(sum(len(x) for x in parsed.items if isinstance(x, str))),
                "x-tokenization-time": str(round((t_tok - t0) * 1000)),
                "x-queue-time": str(round(job.queue_s * 1000)),
                "x-inference-time": str(round(job.inference_s * 1000)),
                "x-total-time": str(round((t_end - t0) * 1000)),
            }
            return emb, tokens, headers
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)

    async def _serve(self, request: Request, api: str, handler) -> Response:
        t0 = time.perf_counter()
        try:
            self._auth(request)
            response = await handler(request)
        except RequestError as e:
            self.metrics.errors.labels(api=api, kind=e.kind).inc()
            request.state.error = e.message
            response = error_response(api, e)
        except Exception as e:  # noqa: BLE001 - a bug must cost one request, in the API's error shape
            logger.exception("internal error on %s", request.url.path)
            self.metrics.errors.labels(api=api, kind="backend").inc()
            request.state.error = f"{type(e).__name__}: {e}"
            response = error_response(api, RequestError("backend", f"internal error: {type(e).__name__}: {e}"))
        self.metrics.requests.labels(api=api, status=str(response.status_code)).inc()
        self.metrics.request_duration.labels(api=api).observe(time.perf_counter() - t0)
        return response

    # ------------------------------------------------------------------ OpenAI

    async def openai_embeddings(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            body = await self._body(request)
            self._check_ready()
            items = self._required_inputs(body, "input", "`input` cannot be an empty array")
            for i, x in enumerate(items):
                if x == "":
                    raise RequestError("validation", f"`input[{i}]` is an empty string, which the OpenAI API does not "
                                                     "accept (the /embed route does)", f"input[{i}]")
            _opt(body, "model", str)
            _opt(body, "user", str)
            fmt = _opt(body, "encoding_format", str, "float")
            if fmt not in ("float", "base64"):
                raise RequestError("validation", f"`encoding_format` must be 'float' or 'base64', got {fmt!r}",
                                   "encoding_format")
            parsed = Parsed(items, "input", prompt_name=_opt(body, "prompt_name", str),
                            truncate=_opt(body, "truncate", bool), dim=self._dim(body, "dimensions"))
            emb, tokens, headers = await self._embed(request, parsed, "openai")
            if fmt == "base64":
                data = [{"object": "embedding", "index": i,
                         "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")}
                        for i, v in enumerate(emb)]
            else:
                data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(emb)]
            out = {"object": "list", "data": data, "model": self.served_model_name,
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
            return await self._respond(out, headers, emb.size)

        return await self._serve(request, "openai", handle)

    async def openai_models(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            return _json({"object": "list", "data": [{"id": self.served_model_name, "object": "model",
                                                      "created": 0, "owned_by": "embgemma"}]})

        return await self._serve(request, "openai", handle)

    # ------------------------------------------------------------------ text-embeddings-inference

    async def tei_embed(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            body = await self._body(request)
            self._check_ready()
            items = self._required_inputs(body, "inputs", "`inputs` cannot be empty")
            direction = _opt(body, "truncation_direction", str, "right").lower()
            if direction not in ("right", "left"):
                raise RequestError("validation", f"`truncation_direction` must be 'Right' or 'Left', got "
                                                 f"{body['truncation_direction']!r}", "truncation_direction")
            parsed = Parsed(items, "inputs", prompt_name=_opt(body, "prompt_name", str),
                            truncate=_opt(body, "truncate", bool), direction=direction,
                            dim=self._dim(body, "dimensions"), normalize=_opt(body, "normalize", bool, True))
            emb, _, headers = await self._embed(request, parsed, "tei")
            return await self._respond(list(emb), headers, emb.size)

        return await self._serve(request, "tei", handle)

    async def tei_tokenize(self, request: Request) -> Response:
        """TEI's /tokenize: the tokens of each input as /embed sees them (same prompt, same text
        cleaning), not truncated; ``start`` / ``stop`` are UTF-8 byte offsets in the prompted text."""
        async def handle(request: Request) -> Response:
            body = await self._body(request)
            self._check_ready()
            if "inputs" not in body:
                raise RequestError("validation", "`inputs` is required: a string or an array of strings", "inputs")
            items = self._inputs(body["inputs"], "inputs", tokens_ok=False)
            if not items:
                raise RequestError("empty", "`inputs` cannot be empty", "inputs")
            special = _opt(body, "add_special_tokens", bool, True)
            parsed = Parsed(items, "inputs", prompt_name=_opt(body, "prompt_name", str))
            prompt, _ = self._prompt(parsed, request, "tei")
            tokens = await asyncio.get_running_loop().run_in_executor(self._tok_pool, self._tokens, items, prompt,
                                                                      special)
            request.state.inputs, request.state.tokens = len(items), sum(len(t) for t in tokens)
            return await self._respond(tokens, {}, request.state.tokens)

        return await self._serve(request, "tei", handle)

    def _tokens(self, items: list[str], prompt: str, special: bool) -> list[list[dict[str, Any]]]:
        from embgemma.model import _clean

        texts = [_clean(x, i, prompt, self.model.strip_whitespace) for i, x in enumerate(items)]
        out = []
        for text, enc in zip(texts, self.model.tokenizer.encode_batch(texts, add_special_tokens=special)):
            # the tokenizer's offsets count characters; TEI's count UTF-8 bytes
            at = range(len(text) + 1) if text.isascii() else [0, *itertools.accumulate(len(c.encode()) for c in text)]
            out.append([{"id": i, "text": tok, "special": True, "start": None, "stop": None} if sp else
                        {"id": i, "text": text[a:b], "special": False, "start": at[a], "stop": at[b]}
                        for i, tok, (a, b), sp in zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask)])
        return out

    async def tei_decode(self, request: Request) -> Response:
        """TEI's /decode: token ids (one array, or an array of arrays) back to text, one string each."""
        async def handle(request: Request) -> Response:
            body = await self._body(request)
            self._check_ready()
            ids = body.get("ids")
            what = "`ids` must be an array of token ids, or an array of such arrays"
            if not isinstance(ids, list):
                raise RequestError("validation", f"{what}, got {_type_name(ids)}" if "ids" in body else
                                   "`ids` is required: an array of token ids, or an array of such arrays", "ids")
            if not ids:
                raise RequestError("empty", "`ids` cannot be empty", "ids")
            seqs = [ids] if not isinstance(ids[0], list) else ids
            if len(seqs) > self.config.max_client_batch_size:
                raise RequestError("validation", f"batch size {len(seqs)} > maximum allowed batch size "
                                                 f"{self.config.max_client_batch_size}; split the request", "ids")
            tok = self.model.tokenizer
            vocab = tok.get_vocab_size(with_added_tokens=True)
            for i, seq in enumerate(seqs):
                name = f"ids[{i}]" if seqs is ids else "ids"
                if not isinstance(seq, list):
                    raise RequestError("validation", f"{what}; `{name}` is {_type_name(seq)}", name)
                if not seq:
                    raise RequestError("empty", f"`{name}` cannot be empty", name)
                bad = [t for t in seq if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab][:1]
                if bad:
                    raise RequestError("validation", f"`{name}` holds {json.dumps(bad[0])}, not a token id of this "
                                                     f"tokenizer (0..{vocab - 1})", name)
            skip = _opt(body, "skip_special_tokens", bool, True)
            texts = await asyncio.get_running_loop().run_in_executor(self._tok_pool, tok.decode_batch, seqs, skip)
            request.state.inputs, request.state.tokens = len(seqs), sum(map(len, seqs))
            return _json(texts)

        return await self._serve(request, "tei", handle)

    # ------------------------------------------------------------------ Ollama

    async def ollama_embed(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            t0 = time.perf_counter_ns()
            body = await self._body(request)
            self._check_ready()
            model = _opt(body, "model", str, self.served_model_name)
            raw = body.get("input")
            if raw is None or raw == "":  # Ollama answers an empty input with no embeddings
                items = []
            else:
                if isinstance(raw, list) and any(isinstance(x, list) for x in raw):
                    raise RequestError("validation", "invalid input type: `input` must be a string or an array of "
                                                     "strings (token ids go to /v1/embeddings or /embed)", "input")
                items = self._inputs(raw, "input", tokens_ok=False)
            parsed = Parsed(items, "input", prompt_name=_opt(body, "prompt_name", str),
                            truncate=_opt(body, "truncate", bool, True), dim=self._dim(body, "dimensions"))
            if items:
                emb, tokens, headers = await self._embed(request, parsed, "ollama")
            else:
                emb, tokens, headers = np.empty((0, 0), np.float32), 0, {}
            out = {"model": model, "embeddings": list(emb), "total_duration": time.perf_counter_ns() - t0,
                   "load_duration": 0, "prompt_eval_count": tokens}
            return await self._respond(out, headers, emb.size)

        return await self._serve(request, "ollama", handle)

    async def ollama_embeddings_legacy(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            body = await self._body(request)
            self._check_ready()
            text = _opt(body, "prompt", str, "")
            if not text:
                return _json({"embedding": []})
            parsed = Parsed([text], "prompt", prompt_name=_opt(body, "prompt_name", str))
            emb, _, headers = await self._embed(request, parsed, "ollama")
            return await self._respond({"embedding": emb[0]}, headers, emb.size)

        return await self._serve(request, "ollama", handle)

    async def ollama_version(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            import embgemma

            return _json({"version": embgemma.__version__})

        return await self._serve(request, "ollama", handle)

    async def ollama_tags(self, request: Request) -> Response:
        """Ollama's model list (what Open WebUI and other clients call to discover models): the one model."""
        async def handle(request: Request) -> Response:
            self._check_ready()
            d = await self._describe()
            name = self.served_model_name
            return _json({"models": [{"name": name, "model": name, "modified_at": d["modified_at"], "size": d["size"],
                                      "digest": d["digest"], "details": d["details"]}]})

        return await self._serve(request, "ollama", handle)

    async def ollama_show(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            body = await self._body(request)
            name = _opt(body, "model", str) or _opt(body, "name", str)  # `name`: Ollama's older spelling
            if not name:
                raise RequestError("validation", "model is required", "model")
            _opt(body, "verbose", bool)
            self._check_ready()
            served = self.served_model_name
            if name not in (served, served if ":" in served else f"{served}:latest"):
                raise RequestError("not_found", f"model '{name}' not found; this server serves '{served}'", "model")
            d = await self._describe()
            parameters = f"{'num_ctx':<30} {self.model.max_seq_length}"
            return _json({
                "modelfile": f'# Modelfile generated by "embgemma serve"\nFROM {self.model.model_path}\n'
                             f"PARAMETER num_ctx {self.model.max_seq_length}\n",
                "parameters": parameters,
                "template": "{{ .Prompt }}",
                "details": d["details"],
                "model_info": d["model_info"],
                "capabilities": ["embedding"],
                "modified_at": d["modified_at"],
            })

        return await self._serve(request, "ollama", handle)

    async def _describe(self) -> dict[str, Any]:
        if self._description is None:
            self._description = await asyncio.get_running_loop().run_in_executor(self._tok_pool, self._describe_files)
        return self._description

    def _describe_files(self) -> dict[str, Any]:
        """What Ollama's listings say of a model, for the files served: size on disk, newest
        modification, a digest (sha256 of the files' names, sizes and modification times: it changes
        when they do; not a hash of their bytes), parameter count and family from the tensors."""
        from embgemma import _core

        m = self.model
        root = Path(m.model_path)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        stats = [(p, p.stat()) for p in files]
        digest = hashlib.sha256()
        for p, st in stats:
            digest.update(f"{p.relative_to(root) if p != root else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if m.format == "gguf":
            info = _core.gguf_read(str(root))
            family = str(info["metadata"].get("general.architecture", "gemma3"))
            params = sum(math.prod(t[2]) for t in info["tensors"])
            file_format = "gguf"
        else:
            params = sum(_safetensors_numel(p) for p, _ in stats if p.suffix == ".safetensors")
            config = json.loads((m._transformer_dir() / "config.json").read_text(encoding="utf-8"))
            family = re.sub(r"_text$", "", str(config.get("model_type", "gemma3")))
            file_format = "safetensors"
        i = m.info
        weights = "/".join(dict.fromkeys(_QUANT_LEVEL.get(w, w.upper()) for w in (i["mlp_weights"], i["attn_weights"])))
        modified = max(st.st_mtime for _, st in stats)
        return {
            "size": sum(st.st_size for _, st in stats),
            "modified_at": datetime.datetime.fromtimestamp(modified, datetime.timezone.utc).isoformat(),
            "digest": digest.hexdigest(),
            "details": {"parent_model": "", "format": file_format, "family": family, "families": [family],
                        "parameter_size": _human_number(params), "quantization_level": weights},
            "model_info": {
                "general.architecture": family, "general.basename": self.served_model_name,
                "general.parameter_count": params, f"{family}.context_length": m.max_seq_length,
                f"{family}.embedding_length": i["hidden_size"], f"{family}.block_count": i["num_hidden_layers"],
                f"{family}.attention.head_count": i["num_attention_heads"],
                f"{family}.attention.head_count_kv": i["num_key_value_heads"], f"{family}.vocab_size": i["vocab_size"],
                "embgemma.output_dimension": i["output_dim"],
                "embgemma.matryoshka_dimensions": [d for d in MATRYOSHKA_DIMS if d <= i["output_dim"]],
                "embgemma.prompts": m.prompts,
            },
        }

    async def _respond(self, body: Any, headers: dict[str, str], n_floats: int) -> Response:
        if n_floats > 65536:  # a big JSON body: serialize off the event loop
            data = await asyncio.get_running_loop().run_in_executor(
                self._tok_pool, lambda: orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
            return Response(data, headers=headers, media_type="application/json")
        return _json(body, headers=headers)

    # ------------------------------------------------------------------ operations

    async def health(self, request: Request) -> Response:
        if self.ready.is_set() and self.batcher is not None and self.batcher.alive:
            return _json({"status": "ok", "model": self.served_model_name})
        status = "failed" if self.load_error else "loading"
        msg = f"the model failed to load: {self.load_error}" if self.load_error else "the model is loading"
        return _json({"status": status, "error": msg, "error_type": "unhealthy"}, 503,
                     None if self.load_error else {"Retry-After": "1"})

    async def info(self, request: Request) -> Response:
        try:
            self._auth(request)
        except RequestError as e:
            return error_response("tei", e)
        import embgemma

        c, m = self.config, self.model
        body: dict[str, Any] = {
            "model_id": c.model, "served_model_name": self.served_model_name, "model_type": "embedding",
            "ready": self.ready.is_set(), "version": embgemma.__version__, "build": embgemma.build_info(),
            "max_batch_tokens": c.max_batch_tokens, "max_client_batch_size": c.max_client_batch_size,
            "max_request_tokens": c.max_request_tokens, "max_concurrent_requests": c.max_concurrent_requests,
            "payload_limit": c.payload_limit, "auto_truncate": c.auto_truncate,
            "routes": self.embed_routes, "all_routes": self.routes,
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
                "load_seconds": self.load_seconds,
            })
        return _json(body)

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        """Starlette's own errors (no such route, wrong method) as JSON in the API's error shape."""
        api = route_api(request.url.path)
        routes = ", ".join(self.routes[api])
        if exc.status_code == 404:
            e = RequestError("not_found", f"no route {request.method} {request.url.path}; the "
                             f"{_API_NAME[api]} routes here are {routes} (GET /info lists them all)")
        elif exc.status_code == 405:
            allow = ", ".join(sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()))
            exc.headers = {**(exc.headers or {}), "Allow": allow}
            e = RequestError("method", f"{request.method} is not allowed on {request.url.path}; use {allow}")
        else:
            response = error_response(api, RequestError("malformed", str(exc.detail)))
            response.status_code = exc.status_code
            return response
        request.state.error = e.message
        self.metrics.requests.labels(api=api, status=str(exc.status_code)).inc()
        return error_response(api, e, dict(exc.headers or {}))

    async def metrics_route(self, request: Request) -> Response:
        if self.batcher is not None:
            self.metrics.queue_depth.set(self.batcher.pending_inputs)
        data, ctype = self.metrics.render()
        return Response(data, media_type=ctype)


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


_API_NAME = {"openai": "OpenAI", "tei": "text-embeddings-inference", "ollama": "Ollama"}
_QUANT_LEVEL = {"float32": "F32", "bfloat16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0", "int8": "INT8"}  # Ollama's names


def _human_number(n: int) -> str:
    """A count as Ollama writes parameter sizes (format.HumanNumber): 307.58M, 4.3B, 12K."""
    for unit, scale, digits in (("B", 10**9, 1), ("M", 10**6, 2)):
        if n >= scale:
            x = n / scale
            return f"{x:.0f}{unit}" if x == int(x) else f"{x:.{digits}f}{unit}"
    return f"{n / 1000:.0f}K" if n >= 1000 else str(n)


def _safetensors_numel(path: Path) -> int:
    """Number of values in a safetensors file, from its JSON header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def create_app(config: ServerConfig, model: Any = None) -> Any:
    """The ASGI application for ``config`` (pass ``model`` to serve an already-loaded EmbeddingGemma)."""
    return EmbeddingServer(config, model).app
