"""JSON:API error objects shaped like Klaviyo's live answers, and the refusal that carries them."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any

_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    429: "throttled",
    500: "error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    404: "Not found.",
    405: "Method not allowed.",
    429: "Request was throttled.",
    500: "A server error occurred.",
    503: "Service unavailable.",
}


class _Problem(Exception):
    """A request the fake refuses; carries the status and JSON:API error objects."""

    def __init__(
        self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None
    ):
        super().__init__(status)
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def error_object(
    status: int,
    detail: str | None = None,
    *,
    code: str | None = None,
    title: str | None = None,
    pointer: str | None = None,
    parameter: str | None = None,
) -> dict[str, Any]:
    """One JSON:API error object in the shape Klaviyo's live answers have."""
    title = title or _TITLES.get(status) or _phrase(status)
    source: dict[str, str] = {}
    if pointer is not None:
        source["pointer"] = pointer
    if parameter is not None:
        source["parameter"] = parameter
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code or _CODES.get(status, "error"),
        "title": title,
        "detail": detail or title,
        "source": source,
        "links": {},
        "meta": {},
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem(status: int, detail: str | None = None, **kwargs: Any) -> _Problem:
    return _Problem(status, [error_object(status, detail, **kwargs)])
