"""Why a row cannot be embedded: one set of checks for every engine, so that a row gets the same
reason whether the local engine, Ray or Spark meets it; and ``EmbedJobError``, why a whole job cannot."""

from __future__ import annotations

import math
import re
from typing import Any

_BAD_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


def missing(x: Any) -> bool:
    """None, NaN (pandas' spelling of a missing string), pandas.NA / NaT."""
    if x is None:
        return True
    if isinstance(x, float) and math.isnan(x):
        return True
    return type(x).__name__ in ("NAType", "NaTType")  # without importing pandas


def _surrogate(s: str) -> int | None:
    """Index of the first lone surrogate in ``s``, else None."""
    if s.isascii():
        return None
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def text_reason(x: Any, allow_empty: bool) -> str | None:
    """Why ``x`` cannot be embedded as a text, or None."""
    if missing(x):
        return "missing text (null)"
    if isinstance(x, (bytes, bytearray)):
        return "bytes, not str (decode the column as UTF-8 text first)"
    if not isinstance(x, str):
        return f"not a string ({type(x).__name__})"
    pos = _surrogate(x)
    if pos is not None:
        return f"lone surrogate U+{ord(x[pos]):04X} at character {pos} (not valid Unicode text)"
    if not allow_empty and not x.strip():
        return "empty text" if not x else "whitespace-only text"
    return None


def title_reason(t: Any) -> str | None:
    """Why ``t`` cannot be a title, or None (a missing title is fine: it reads 'none')."""
    if missing(t):
        return None
    if not isinstance(t, str):
        return f"title is not a string ({type(t).__name__})"
    pos = _surrogate(t)
    if pos is not None:
        return f"title has a lone surrogate U+{ord(t[pos]):04X} at character {pos} (not valid Unicode text)"
    return None


def bad_utf8(text: str) -> str | None:
    """Why a line decoded with ``surrogateescape`` is not UTF-8 (naming the first bad byte), or None."""
    if text.isascii():
        return None
    m = _BAD_BYTE.search(text)
    return None if m is None else f"not valid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02X} at character {m.start()})"


class EmbedJobError(ValueError):
    """A job that cannot start or go on as asked (not a row: a whole job); the message says why and what to do."""
