"""``embgemma serve``: EmbeddingGemma over HTTP with OpenAI, text-embeddings-inference and Ollama
routes and cross-request batching. Needs the ``serve`` extra: ``pip install 'embgemma[serve]'``.

    embgemma serve --model google/embeddinggemma-300m --port 8080

See docs/server.md.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import signal
import sys
import threading

try:
    import orjson
    import starlette  # noqa: F401
    import uvicorn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the embgemma server needs the 'serve' extra ({e.name} is missing): pip install 'embgemma[serve]'"
    ) from e

from .app import EmbeddingServer, create_app
from .core import RequestError, ServerConfig

__all__ = ["EmbeddingServer", "RequestError", "ServerConfig", "create_app", "run"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and a record's structured ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
             "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        d.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            d["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(d, default=str).decode()


_IN_MESSAGE = {"event", "method", "path", "status"}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k not in _IN_MESSAGE)
        return line


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGINT / SIGTERM end it with status 0 once drained (uvicorn re-raises the signal)."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def run(config: ServerConfig, host: str = "127.0.0.1", port: int = 8080, *, graceful_timeout: float = 30.0,
        log_format: str = "json", log_level: str = "info") -> int:
    """Serve until SIGINT / SIGTERM (which drain in-flight requests first); 1 if the model failed to load."""
    setup_logging(log_format, log_level)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_error(e: BaseException) -> None:
        failed.append(e)
        if server is not None:
            server.should_exit = True

    srv = EmbeddingServer(config, on_load_error=on_load_error)
    uv_config = uvicorn.Config(srv.app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                               timeout_graceful_shutdown=graceful_timeout, server_header=False)
    server = _Server(uv_config)
    logging.getLogger("embgemma.server").info("listening on http://%s:%d; loading %s", host, port, config.model)
    server.run()
    return 1 if failed or not server.started else 0
