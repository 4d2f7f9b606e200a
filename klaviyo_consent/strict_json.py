"""Strict JSON: the one reading of untrusted JSON bodies (API requests and webhook deliveries).

``json.loads`` accepts what a consent record must not hold and what the database cannot store:
``NaN``/``Infinity`` and numbers such as ``1e400`` that only a double's infinity holds (not
JSON, RFC 8259 §6; PostgreSQL's ``jsonb`` refuses them), duplicate
keys (RFC 8259 §4 leaves their meaning open, so which one counts is a guess), lone surrogates
(not Unicode scalar values; no UTF-8 form) and NUL (PostgreSQL text and ``jsonb`` refuse it),
and nesting deep enough to raise ``RecursionError``. :func:`loads` refuses each with an
:class:`UnsafeJSON` that says which rule the document broke.
"""

from __future__ import annotations

import json
import math
from typing import Any

from klaviyo_consent.exceptions import KlaviyoConsentError

#: Deepest nesting of objects and arrays a body may have; the app's deepest body is 4 levels.
MAX_DEPTH = 32
#: Largest body read, in bytes (2.5 MiB, Django's DATA_UPLOAD_MAX_MEMORY_SIZE default).
MAX_BYTES = 2_621_440


class UnsafeJSON(KlaviyoConsentError, ValueError):
    """A body that strict JSON refuses; the message names the rule it broke."""


def _refuse_constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not a JSON number; send a finite number or null.")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise UnsafeJSON(f"The number {text[:40]} is too large for a double; send a smaller one.")
    return number


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise UnsafeJSON(f"The key {key!r} appears twice in one object.")
        document[key] = value
    return document


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise UnsafeJSON("Text may not contain the NUL character (\\u0000).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeJSON(
            "Text may not contain a lone surrogate (\\ud800-\\udfff without its pair)."
        ) from None


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one JSON document (UTF-8 bytes or text) by the rules above.

    Raises :class:`UnsafeJSON` (a ``ValueError``) for a body over ``max_bytes`` bytes, nested
    deeper than ``max_depth``, with a duplicate key, ``NaN``/``Infinity``, a lone surrogate, a
    NUL, or anything that is not JSON (RFC 8259).
    """
    if len(data) > max_bytes:
        raise UnsafeJSON(f"The body is larger than {max_bytes} bytes.")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnsafeJSON(f"The body is not UTF-8: {exc.reason} at byte {exc.start}.") from None
    try:
        document = json.loads(
            data, object_pairs_hook=_object, parse_constant=_refuse_constant, parse_float=_finite
        )
    except RecursionError:
        raise UnsafeJSON(f"The body is nested deeper than {max_depth} levels.") from None
    except UnsafeJSON:
        raise
    except ValueError as exc:  # JSONDecodeError, and an integer past Python's 4300 digits
        raise UnsafeJSON(f"The body is not JSON: {exc}.") from None
    _check_tree(document, max_depth)
    return document


def _check_tree(document: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= max_depth:
            raise UnsafeJSON(f"The body is nested deeper than {max_depth} levels.")
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        else:
            stack.extend((value, depth + 1) for value in node)
