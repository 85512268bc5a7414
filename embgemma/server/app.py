"""The HTTP application on Starlette: the model's lifecycle and the request path every API shares
(auth, body, prompt, tokenization, batching, error shapes, metrics), with each API's routes in a
module of its own (openai_api, tei_api, ollama_api, operations) declared as ``Endpoint`` entries
that the routes and ``GET /openapi.json`` are both built from.

Work never runs on the event loop: tokenization goes to a small thread pool, the engine to the
batcher's thread. Only the model's public API is used.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Callable

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import ollama_api, openai_api, operations, tei_api
from .batcher import Batcher, EngineError
from .core import (API_ROUTE, APIS, PROMPT_ROUTES, Endpoint, Parsed, RequestError, ServerConfig, error_response,
                   json_response, route_api, type_name)
from .metrics import Metrics
from .openapi import document, prompt_path

logger = logging.getLogger("embgemma.server")

#: every route, in the order /info and the 404 messages list them
ENDPOINTS: list[Endpoint] = [*openai_api.ENDPOINTS, *tei_api.ENDPOINTS, *ollama_api.ENDPOINTS, *operations.ENDPOINTS]


class EmbeddingServer:
    """The model, the batcher, the metrics and the routes; ``app`` is the ASGI application."""

    def __init__(self, config: ServerConfig, model: Any = None,
                 on_load_error: Callable[[BaseException], None] | None = None) -> None:
        import embgemma

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
        self._cache: dict[str, Any] = {}
        self._tok_pool = ThreadPoolExecutor(config.tokenizer_threads, thread_name_prefix="embgemma-tok")
        self.served_model_name = config.served_model_name or os.path.basename(str(config.model).rstrip("/")) or config.model
        routes = []
        for e in ENDPOINTS:
            handler = functools.partial(e.handler, self) if e.raw else functools.partial(self._serve, e)
            routes += [Route(path, handler, methods=[e.method])
                       for path in ((e.path, prompt_path(e.path)) if e.prompt_scoped else (e.path,))]
        self.embed_routes = sorted(e.path for e in ENDPOINTS if e.handler in (
            openai_api.embeddings, tei_api.embed, ollama_api.embed, ollama_api.embeddings_legacy))
        self.routes = {api: [f"{'/'.join(sorted(r.methods - {'HEAD'}))} {r.path}" for r in routes
                             if route_api(r.path) == api and not r.path.startswith("/prompts/")] for api in APIS}
        self.openapi = document(ENDPOINTS, "embgemma", embgemma.__version__, f"EmbeddingGemma ({config.model}) "
                                "over OpenAI, text-embeddings-inference and Ollama routes; see docs/server.md",
                                secured=config.api_key is not None)
        self.starlette = Starlette(routes=routes, lifespan=self._lifespan,
                                   exception_handlers={HTTPException: functools.partial(operations.http_error, self)})
        self.app = operations.AccessLog(self.starlette)

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
        self.batcher = Batcher(m.encode_packed, c.max_batch_tokens, self.metrics.observe_batch)
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

    @property
    def alive(self) -> bool:
        """The model is loaded and the engine thread runs."""
        return self.ready.is_set() and self.batcher is not None and self.batcher.alive

    # ------------------------------------------------------------------ the shared request path

    async def _serve(self, endpoint: Endpoint, request: Request) -> Response:
        """Auth, then the route's handler; a RequestError (or a bug) becomes an error in the API's shape."""
        api = route_api(endpoint.path)
        t0 = time.perf_counter()
        try:
            self.authorize(request)
            response = await endpoint.handler(self, request)
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

    def authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is not None and request.headers.get("authorization", "") != f"Bearer {key}":
            raise RequestError("auth", "missing or wrong API key: send the header 'Authorization: Bearer <key>'")

    def check_ready(self) -> None:
        if self.alive:
            return
        if self.load_error:
            raise RequestError("unhealthy", f"the model failed to load: {self.load_error}")
        raise RequestError("unhealthy", "the model is still loading; retry shortly", retry_after=1)

    async def read_body(self, request: Request) -> dict:
        """The JSON object of the body, refused past the payload limit before it is all read."""
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
            raise RequestError("malformed", f"the request body must be a JSON object, got {type_name(body)}")
        return body

    def prompt(self, parsed: Parsed, request: Request, api: str) -> tuple[str, bool]:
        """The prompt text for a request, and whether the client chose it (explicitly or by URL)."""
        m = self.model
        name, explicit = parsed.prompt_name, parsed.prompt_name is not None
        if name is None and "prompt" in request.path_params:
            name, explicit = request.path_params["prompt"], True
        if name is None:
            name = self.config.route_prompts.get(API_ROUTE[api], self.config.default_prompt_name)
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
        m = self.model
        limit, vocab = m.max_seq_length, m.info["vocab_size"]
        texts = [(i, x) for i, x in enumerate(items) if isinstance(x, str)]
        # no lone surrogates reach here (orjson refuses them), so prompted_text only forms prompt + text
        encs = m.tokenizer.encode_batch([m.prompted_text(x, prompt, i) for i, x in texts]) if texts else []
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
                ids = m.truncate_ids(ids, limit, direction)
            out.append(np.asarray(ids, dtype=np.int32))
        return out

    async def embed(self, request: Request, parsed: Parsed, api: str) -> tuple[np.ndarray, int, dict[str, str]]:
        """Embeddings (n, dim) for a parsed request, its token count, and TEI's timing headers."""
        t0 = time.perf_counter()
        self.check_ready()
        if self.in_flight >= self.config.max_concurrent_requests:
            raise RequestError("overloaded", f"the server is at its limit of {self.config.max_concurrent_requests} "
                                             "concurrent requests; retry after a second", retry_after=1)
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            prompt, explicit = self.prompt(parsed, request, api)
            if explicit and prompt and any(not isinstance(x, str) for x in parsed.items):
                raise RequestError("validation", "prompt_name cannot apply to token-id inputs: send text, or put the "
                                                 "prompt's tokens in the ids yourself", "prompt_name")
            truncate = self.config.auto_truncate if parsed.truncate is None else parsed.truncate
            seqs = await self.in_pool(self._tokenize, parsed.items, prompt, truncate, parsed.direction, parsed.field)
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

    async def in_pool(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` in the tokenizer thread pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._tok_pool, fn, *args)

    async def once(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed in the pool the first time ``key`` is asked for, then remembered."""
        if key not in self._cache:
            self._cache[key] = await self.in_pool(fn)
        return self._cache[key]

    async def respond(self, body: Any, headers: dict[str, str], n_floats: int) -> Response:
        if n_floats > 65536:  # a big JSON body: serialize off the event loop
            data = await self.in_pool(lambda: orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
            return Response(data, headers=headers, media_type="application/json")
        return json_response(body, headers=headers)


def create_app(config: ServerConfig, model: Any = None) -> Any:
    """The ASGI application for ``config`` (pass ``model`` to serve an already-loaded EmbeddingGemma)."""
    return EmbeddingServer(config, model).app
