"""Klaviyo's query parameters: ``filter=`` (parser and matcher), ``sort=`` and cursor pagination."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from klaviyo_consent.testing.fake.errors import _problem
from klaviyo_consent.testing.fake.records import _aware, _Call, _Profile

_FILTER_TOKEN = re.compile(
    r"""\s*(?:("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([(),\[\]])|([^\s(),\[\]"']+))"""
)


class _FilterError(ValueError):
    pass


class _Bare(str):
    """An unquoted filter value (datetimes, numbers)."""


def _tokenise(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _FILTER_TOKEN.match(text, position)
        if not match or match.end() == position:
            raise _FilterError(f"unexpected character at position {position}")
        quoted, punct, word = match.groups()
        if quoted is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", quoted[1:-1])))
        elif punct is not None:
            tokens.append(("punct", punct))
        else:
            tokens.append(("word", word))
        position = match.end()
    return tokens


def parse_filter(text: str) -> list[tuple[str, str, Any]]:
    """Parse Klaviyo's ``filter=`` syntax into a flat AND of (operator, field, value)."""
    tokens = _tokenise(text)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take(kind: str, value: str | None = None) -> str:
        nonlocal position
        token = peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            raise _FilterError(f"expected {value or kind}")
        position += 1
        return token[1]

    def value() -> Any:
        nonlocal position
        token = peek()
        if token is None:
            raise _FilterError("missing value")
        if token == ("punct", "["):
            position += 1
            items: list[Any] = []
            if peek() != ("punct", "]"):
                items.append(value())
                while peek() == ("punct", ","):
                    position += 1
                    items.append(value())
            take("punct", "]")
            return items
        if token[0] == "str":
            position += 1
            return token[1]
        return _Bare(take("word"))

    def expression() -> list[tuple[str, str, Any]]:
        operator = take("word")
        take("punct", "(")
        if operator == "and":
            conditions = expression()
            while peek() == ("punct", ","):
                take("punct", ",")
                conditions += expression()
            take("punct", ")")
            return conditions
        field_name = take("word")
        take("punct", ",")
        operand = value()
        take("punct", ")")
        return [(operator, field_name, operand)]

    conditions = expression()
    while peek() == ("punct", ","):
        take("punct", ",")
        conditions += expression()
    if peek() is not None:
        raise _FilterError("unexpected trailing input")
    return conditions


def _filter_datetime(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise _FilterError("expected a datetime")
    try:
        return _aware(datetime.fromisoformat(raw))
    except ValueError as exc:
        raise _FilterError(f"invalid datetime {raw!r}") from exc


_PROFILE_FILTERS = {
    "id": {"equals", "any"},
    "email": {"equals", "any"},
    "phone_number": {"equals", "any"},
    "external_id": {"equals", "any"},
    "created": {"greater-than", "less-than"},
    "updated": {"greater-than", "less-than"},
}
_LIST_FILTERS = {
    "id": {"equals", "any"},
    "name": {"equals", "any"},
    "created": {"greater-than"},
    "updated": {"greater-than"},
}


def _compile_filter(
    text: str | None, allowed: Mapping[str, set[str]], normalise: Callable[[str, str], str]
) -> list[tuple[str, str, Any]]:
    """Check a filter against the endpoint's allowed fields/operators and normalise its values."""
    if not text:
        return []
    try:
        conditions = parse_filter(text)
        compiled = []
        for operator, field_name, operand in conditions:
            if operator not in allowed.get(field_name, ()):
                raise _FilterError(f"operator {operator!r} is not allowed for field {field_name!r}")
            if operator == "equals":
                if not isinstance(operand, str):
                    raise _FilterError(f"equals({field_name}) takes one value")
                compiled.append((operator, field_name, normalise(field_name, operand)))
            elif operator == "any":
                if not isinstance(operand, list) or not all(
                    isinstance(item, str) for item in operand
                ):
                    raise _FilterError(f"any({field_name}) takes a list of values")
                compiled.append(
                    (operator, field_name, {normalise(field_name, item) for item in operand})
                )
            else:
                compiled.append((operator, field_name, _filter_datetime(operand)))
        return compiled
    except _FilterError as exc:
        raise _problem(400, f"Invalid filter provided: {exc}.", parameter="filter") from exc


def _matches(conditions: list[tuple[str, str, Any]], values: Callable[[str], Any]) -> bool:
    for operator, field_name, operand in conditions:
        actual = values(field_name)
        if operator == "equals":
            if actual != operand:
                return False
        elif operator == "any":
            if actual not in operand:
                return False
        elif actual is None:
            return False
        elif operator == "greater-than" and not actual > operand:
            return False
        elif operator == "less-than" and not actual < operand:
            return False
    return True


def _field_of(profile: _Profile, name: str) -> Any:
    """A profile field as filters compare it (emails case-insensitively)."""
    value = getattr(profile, name)
    return value.lower() if name == "email" and value else value


def _sort(items: list[Any], sort: str | None, allowed: set[str]) -> list[Any]:
    if not sort:
        return items
    name = sort.lstrip("-")
    if name not in allowed:
        raise _problem(400, f"Sorting by {sort!r} is not supported.", parameter="sort")
    return sorted(
        items,
        key=lambda item: (getattr(item, name) is None, getattr(item, name) or ""),
        reverse=sort.startswith("-"),
    )


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"next::offset::{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, offset = decoded.rpartition("::")
        if prefix != "next::offset" or not offset.isdigit():
            raise ValueError(cursor)
        return int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise _problem(400, "Invalid page cursor.", parameter="page[cursor]") from exc


def _page_url(call: _Call, offset: int) -> str:
    params = [(key, value) for key, value in call.query if key != "page[cursor]"]
    params.append(("page[cursor]", _encode_cursor(offset)))
    return f"{call.base}{call.path}/?{urlencode(params, quote_via=quote)}"


def _paginate(
    call: _Call, items: list[Any], *, default_size: int, max_size: int
) -> tuple[list[Any], dict]:
    """Slice one page and build ``links`` whose ``next``/``prev`` carry an opaque cursor."""
    raw_size = call.params.get("page[size]")
    size = default_size
    if raw_size is not None:
        try:
            size = int(raw_size)
        except ValueError:
            size = 0
        if not 1 <= size <= max_size:
            raise _problem(
                400,
                f"Page size must be an integer between 1 and {max_size}.",
                parameter="page[size]",
            )
    offset = 0
    cursor = call.params.get("page[cursor]")
    if cursor:
        offset = _decode_cursor(cursor)
    page = items[offset : offset + size]
    links: dict[str, Any] = {"self": call.url, "next": None, "prev": None}
    if offset + size < len(items):
        links["next"] = _page_url(call, offset + size)
    if offset > 0:
        links["prev"] = _page_url(call, max(0, offset - size))
    return page, links
