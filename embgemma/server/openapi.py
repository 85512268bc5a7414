"""The OpenAPI 3.1 description the server serves at ``GET /openapi.json`` (as text-embeddings-inference
does), built from the same ``Endpoint`` entries the routes are built from, and the JSON Schema
shorthands the protocol modules write their request and response shapes with.

tests/test_server.py walks the application's routes against this document (a route added without
an entry fails) and checks real responses against its schemas.
"""

from __future__ import annotations

import re
from typing import Any

from .core import API_NAME, Endpoint, route_api

STR: dict = {"type": "string"}
INT: dict = {"type": "integer"}
NUM: dict = {"type": "number"}
BOOL: dict = {"type": "boolean"}
TOKEN_ID: dict = {"type": "integer", "minimum": 0}


def arr(items: dict, **kw: Any) -> dict:
    return {"type": "array", "items": items, **kw}


def obj(properties: dict, required: tuple = (), **kw: Any) -> dict:
    """An object with these properties (others allowed: every route ignores fields it does not know)."""
    return {"type": "object", "properties": properties, **({"required": list(required)} if required else {}), **kw}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def one_of(*schemas: dict) -> dict:
    return {"anyOf": list(schemas)}


VECTOR = arr(NUM)
#: the body fields every embedding route takes beside its API's own
PROMPT_NAME = {"prompt_name": {**STR, "description": "a prompt of the model (query, document, ...); embgemma's extra"}}

# each API's error body (core.error_response writes them)
ERRORS = {
    "openai": ("OpenAIError", obj({"error": obj({"message": STR, "type": STR, "param": nullable(STR),
                                                  "code": nullable(STR)}, ("message", "type", "param", "code"))},
                                  ("error",))),
    "tei": ("TEIError", obj({"error": STR, "error_type": STR}, ("error", "error_type"))),
    "ollama": ("OllamaError", obj({"error": STR}, ("error",))),
}
PROMPT_PARAM = {"name": "prompt", "in": "path", "required": True, "schema": STR,
                "description": "the prompt the inputs get unless the body names one (query, document, ...)"}


def prompt_path(path: str) -> str:
    """Where a prompt-scoped route is also served."""
    return "/prompts/{prompt}" + path


def document(endpoints: list[Endpoint], title: str, version: str, description: str, secured: bool) -> dict:
    """The OpenAPI document of ``endpoints`` (``secured``: the server checks an API key)."""
    paths: dict[str, dict] = {}
    for e in endpoints:
        api = route_api(e.path)
        for path in (e.path, prompt_path(e.path)) if e.prompt_scoped else (e.path,):
            op: dict[str, Any] = {
                "summary": e.summary, "tags": [API_NAME[api]],
                "operationId": f"{e.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_') or 'root'}",
                "responses": {
                    "200": {"description": "OK", "content": {e.media_type: {"schema": e.response or STR}}},
                    "default": {"description": f"an error, in the {API_NAME[api]} shape", "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{ERRORS[api][0]}"}}}},
                },
            }
            if path != e.path:
                op["parameters"] = [PROMPT_PARAM]
            if e.request is not None:
                content: dict[str, Any] = {"schema": e.request}
                if e.example is not None:
                    content["example"] = e.example
                op["requestBody"] = {"required": True, "content": {"application/json": content}}
            if secured and not e.public:
                op["security"] = [{"bearer": []}]
            paths.setdefault(path, {})[e.method.lower()] = op
    components: dict[str, Any] = {"schemas": dict(ERRORS.values())}
    if secured:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {"openapi": "3.1.0", "info": {"title": title, "version": version, "description": description},
            "paths": paths, "components": components}
