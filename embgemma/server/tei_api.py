"""text-embeddings-inference's routes: ``POST /embed``, ``/tokenize`` and ``/decode``.

Errors are TEI's ``{"error", "error_type"}`` with its v1.9 statuses (422 for validation).
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from .core import (Endpoint, Parsed, RequestError, json_response, opt, parse_dim, parse_inputs, required_inputs,
                   type_name)
from .openapi import BOOL, INT, PROMPT_NAME, STR, TOKEN_ID, VECTOR, arr, nullable, obj, one_of

if TYPE_CHECKING:
    from .app import EmbeddingServer


async def embed(srv: EmbeddingServer, request: Request) -> Response:
    body = await srv.read_body(request)
    srv.check_ready()
    items = required_inputs(body, "inputs", "`inputs` cannot be empty", srv.config.max_client_batch_size)
    direction = opt(body, "truncation_direction", str, "right").lower()
    if direction not in ("right", "left"):
        raise RequestError("validation", f"`truncation_direction` must be 'Right' or 'Left', got "
                                         f"{body['truncation_direction']!r}", "truncation_direction")
    parsed = Parsed(items, "inputs", prompt_name=opt(body, "prompt_name", str), truncate=opt(body, "truncate", bool),
                    direction=direction, dim=parse_dim(body, "dimensions", srv.model.info["output_dim"]),
                    normalize=opt(body, "normalize", bool, True))
    emb, _, headers = await srv.embed(request, parsed, "tei")
    return await srv.respond(list(emb), headers, emb.size)


async def tokenize(srv: EmbeddingServer, request: Request) -> Response:
    """The tokens of each input as /embed sees them (same prompt, same text cleaning), not truncated;
    ``start`` / ``stop`` are UTF-8 byte offsets in the prompted text."""
    body = await srv.read_body(request)
    srv.check_ready()
    if "inputs" not in body:
        raise RequestError("validation", "`inputs` is required: a string or an array of strings", "inputs")
    items = parse_inputs(body["inputs"], "inputs", False, srv.config.max_client_batch_size)
    if not items:
        raise RequestError("empty", "`inputs` cannot be empty", "inputs")
    special = opt(body, "add_special_tokens", bool, True)
    prompt, _ = srv.prompt(Parsed(items, "inputs", prompt_name=opt(body, "prompt_name", str)), request, "tei")
    tokens = await srv.in_pool(_tokens, srv.model, items, prompt, special)
    request.state.inputs, request.state.tokens = len(items), sum(len(t) for t in tokens)
    return await srv.respond(tokens, {}, request.state.tokens)


def _tokens(model: Any, items: list[str], prompt: str, special: bool) -> list[list[dict[str, Any]]]:
    texts = [model.prompted_text(x, prompt, i) for i, x in enumerate(items)]
    out = []
    for text, enc in zip(texts, model.tokenizer.encode_batch(texts, add_special_tokens=special)):
        # the tokenizer's offsets count characters; TEI's count UTF-8 bytes
        at = range(len(text) + 1) if text.isascii() else [0, *itertools.accumulate(len(c.encode()) for c in text)]
        out.append([{"id": i, "text": tok, "special": True, "start": None, "stop": None} if sp else
                    {"id": i, "text": text[a:b], "special": False, "start": at[a], "stop": at[b]}
                    for i, tok, (a, b), sp in zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask)])
    return out


async def decode(srv: EmbeddingServer, request: Request) -> Response:
    """Token ids (one array, or an array of arrays) back to text, one string each."""
    body = await srv.read_body(request)
    srv.check_ready()
    ids = body.get("ids")
    what = "`ids` must be an array of token ids, or an array of such arrays"
    if not isinstance(ids, list):
        raise RequestError("validation", f"{what}, got {type_name(ids)}" if "ids" in body else
                           "`ids` is required: an array of token ids, or an array of such arrays", "ids")
    if not ids:
        raise RequestError("empty", "`ids` cannot be empty", "ids")
    seqs = [ids] if not isinstance(ids[0], list) else ids
    limit = srv.config.max_client_batch_size
    if len(seqs) > limit:
        raise RequestError("validation", f"batch size {len(seqs)} > maximum allowed batch size {limit}; split the "
                                         "request", "ids")
    tok = srv.model.tokenizer
    vocab = tok.get_vocab_size(with_added_tokens=True)
    for i, seq in enumerate(seqs):
        name = f"ids[{i}]" if seqs is ids else "ids"
        if not isinstance(seq, list):
            raise RequestError("validation", f"{what}; `{name}` is {type_name(seq)}", name)
        if not seq:
            raise RequestError("empty", f"`{name}` cannot be empty", name)
        bad = [t for t in seq if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab][:1]
        if bad:
            raise RequestError("validation", f"`{name}` holds {json.dumps(bad[0])}, not a token id of this "
                                             f"tokenizer (0..{vocab - 1})", name)
    skip = opt(body, "skip_special_tokens", bool, True)
    texts = await srv.in_pool(tok.decode_batch, seqs, skip)
    request.state.inputs, request.state.tokens = len(seqs), sum(map(len, seqs))
    return json_response(texts)


_TOKENS = arr(TOKEN_ID, minItems=1)
_TEXTS = one_of(STR, arr(STR))
ENDPOINTS = [
    Endpoint("POST", "/embed", embed, "Embed texts or token ids (TEI's EmbedRequest)", obj({
        "inputs": one_of(STR, _TOKENS, arr(one_of(STR, _TOKENS))), "normalize": BOOL,
        "truncate": nullable(BOOL), "truncation_direction": {"enum": ["Right", "Left", "right", "left"]},
        "dimensions": nullable({**INT, "minimum": 1}), **PROMPT_NAME}, ("inputs",)),
        arr(VECTOR), {"inputs": ["Mars is red."], "normalize": True}, prompt_scoped=True),
    Endpoint("POST", "/tokenize", tokenize, "The tokens /embed embeds for the same inputs and prompt", obj({
        "inputs": _TEXTS, "add_special_tokens": BOOL, **PROMPT_NAME}, ("inputs",)),
        arr(arr(obj({"id": INT, "text": STR, "special": BOOL, "start": nullable(INT), "stop": nullable(INT)},
                    ("id", "text", "special", "start", "stop")))),
        {"inputs": "Mars is red."}, prompt_scoped=True),
    Endpoint("POST", "/decode", decode, "Token ids back to text", obj({
        "ids": one_of(_TOKENS, arr(_TOKENS)), "skip_special_tokens": BOOL}, ("ids",)),
        arr(STR), {"ids": [2, 10, 11, 1]}),
]
