"""Prometheus metrics of the server (``GET /metrics``), in a registry of its own per server."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds: 100 us .. ~60 s, x2 per bucket
_DURATION = tuple(1e-4 * 2**k for k in range(20))
_POW2 = tuple(float(2**k) for k in range(16))  # 1 .. 32768


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("embgemma_requests", "HTTP requests to the embedding routes, by API and status",
                                ["api", "status"], registry=r)
        self.errors = Counter("embgemma_request_errors", "Refused or failed requests, by API and kind",
                              ["api", "kind"], registry=r)
        self.request_duration = Histogram("embgemma_request_duration_seconds", "Time to answer a request",
                                          ["api"], buckets=_DURATION, registry=r)
        self.tokenization_duration = Histogram("embgemma_request_tokenization_duration_seconds",
                                               "Tokenization time per request", buckets=_DURATION, registry=r)
        self.queue_duration = Histogram("embgemma_request_queue_duration_seconds",
                                        "Wait from submission to the first engine batch", buckets=_DURATION, registry=r)
        self.inference_duration = Histogram("embgemma_request_inference_duration_seconds",
                                            "Engine time of the batches a request was part of", buckets=_DURATION,
                                            registry=r)
        self.request_inputs = Histogram("embgemma_request_inputs", "Inputs per request", buckets=_POW2, registry=r)
        self.request_tokens = Histogram("embgemma_request_tokens", "Tokens per request", buckets=_POW2, registry=r)
        self.batch_inputs = Histogram("embgemma_batch_inputs", "Inputs per engine batch (across requests)",
                                      buckets=_POW2, registry=r)
        self.batch_tokens = Histogram("embgemma_batch_tokens", "Tokens per engine batch", buckets=_POW2, registry=r)
        self.batch_duration = Histogram("embgemma_batch_duration_seconds", "Engine time per batch",
                                        buckets=_DURATION, registry=r)
        self.tokens = Counter("embgemma_tokens", "Tokens embedded", registry=r)
        self.inputs = Counter("embgemma_inputs", "Inputs embedded", registry=r)
        self.queue_depth = Gauge("embgemma_queue_depth", "Inputs waiting for the engine", registry=r)
        self.in_flight = Gauge("embgemma_requests_in_flight", "Requests admitted and not yet answered", registry=r)
        self.info = Info("embgemma_model", "The served model", registry=r)

    def set_info(self, server: Any) -> None:
        m = server.model
        self.info.info({"model": str(server.config.model), "served_model_name": server.served_model_name,
                        "dtype": m.dtype, "isa": m.info["isa"], "threads": str(m.threads),
                        "dimension": str(m.info["output_dim"]), "max_input_length": str(m.max_seq_length)})

    def observe_batch(self, inputs: int, tokens: int, seconds: float) -> None:
        self.batch_inputs.observe(inputs)
        self.batch_tokens.observe(tokens)
        self.batch_duration.observe(seconds)

    def observe_request(self, api: str, inputs: int, tokens: int, tok_s: float, queue_s: float, infer_s: float) -> None:
        self.request_inputs.observe(inputs)
        self.request_tokens.observe(tokens)
        self.tokenization_duration.observe(tok_s)
        self.queue_duration.observe(queue_s)
        self.inference_duration.observe(infer_s)
        self.tokens.inc(tokens)
        self.inputs.inc(inputs)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
